//! Small macros shared by the schema modules.

/// A string-valued enum stored as a scalar in the document.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* #[doc = $text] $variant),+ }

        impl $name {
            /// The value as stored in the document.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($text => Ok(Self::$variant),)+ other => Err(format!("unknown {} {other:?}", stringify!($name))) }
            }
        }
        impl autosurgeon::Reconcile for $name {
            type Key<'a> = autosurgeon::reconcile::NoKey;
            fn reconcile<R: autosurgeon::Reconciler>(&self, reconciler: R) -> Result<(), R::Error> {
                self.as_str().reconcile(reconciler)
            }
        }
        impl autosurgeon::Hydrate for $name {
            fn hydrate_string(s: &'_ str) -> Result<Self, autosurgeon::HydrateError> {
                s.parse().map_err(|_| autosurgeon::HydrateError::unexpected(stringify!($name), s.to_owned()))
            }
        }
    };
}
