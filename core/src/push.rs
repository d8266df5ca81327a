//! A phone's Web Push subscription, as it stands in its own device entry
//! (`devices/<phone>/push`), and the rules it must meet.
//!
//! A phone that can be woken (UnifiedPush on Android) writes where its push service takes
//! messages for it (the endpoint URL) and the keys the desktop encrypts to (RFC 8291 §2–§3:
//! `p256dh`, the phone's P-256 public key, and `auth`, a 16-byte secret). The desktop then
//! sends it content-free "sync now" pushes while it is not connected. The phone owns the entry:
//! only it writes or clears it ([`crate::PhoneWriteRules`]), and the desktop never edits it.
//!
//! The endpoint URL is a capability: whoever knows it can push to the phone. It is logged only
//! by its host ([`PushSubscription::endpoint_host`]).

use autosurgeon::{Hydrate, Reconcile};
use base64ct::{Base64UrlUnpadded, Encoding as _};

/// The longest endpoint URL a phone may write, in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 1024;
/// Length of a decoded `p256dh` key: an uncompressed SEC1 P-256 point (RFC 8291 §3.1).
pub const P256DH_BYTES: usize = 65;
/// Length of a decoded `auth` secret (RFC 8291 §3.2).
pub const AUTH_BYTES: usize = 16;

/// A phone's Web Push subscription (RFC 8030 endpoint, RFC 8291 keys), all three fields as the
/// push library of the phone hands them over.
#[derive(Clone, PartialEq, Eq, Reconcile, Hydrate)]
pub struct PushSubscription {
    /// Where the push service takes messages for the phone: an absolute `https://` URL of at
    /// most [`MAX_ENDPOINT_BYTES`] bytes (`http://` only to a loopback host, see
    /// [`PushSubscription::check`]).
    pub endpoint: String,
    /// The phone's P-256 public key for RFC 8291 (`ua_public`): the 65-byte uncompressed point,
    /// base64url (padding optional).
    pub p256dh: String,
    /// The phone's RFC 8291 authentication secret: 16 bytes, base64url (padding optional).
    pub auth: String,
}

// Keys and the endpoint's path are secrets: never printed, even in debug output.
impl std::fmt::Debug for PushSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSubscription")
            .field("endpoint_host", &self.endpoint_host())
            .finish_non_exhaustive()
    }
}

/// Why a push subscription is refused (by the phone API before writing it, and by the
/// desktop's [`crate::PhoneWriteRules`] if it arrives anyway). The text names the rule, never
/// the secret values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushSubscriptionError {
    /// The endpoint is longer than [`MAX_ENDPOINT_BYTES`].
    #[error("the push endpoint is {0} bytes long (the limit is {MAX_ENDPOINT_BYTES})")]
    EndpointTooLong(usize),
    /// The endpoint is not an absolute URL.
    #[error("the push endpoint is not an absolute URL")]
    EndpointNotUrl,
    /// The endpoint's scheme is not `https` (or `http` to a loopback host).
    #[error(
        "the push endpoint must be an https:// URL (http:// only to 127.0.0.0/8 or [::1]), not {0}"
    )]
    EndpointNotHttps(String),
    /// The endpoint carries a user name, a password or a fragment.
    #[error("the push endpoint must not carry a user name, password or #fragment")]
    EndpointExtras,
    /// A key is not base64url.
    #[error("the push key {0} is not base64url")]
    KeyNotBase64(&'static str),
    /// A key decodes to the wrong number of bytes.
    #[error("the push key {name} decodes to {got} bytes (it must be {want})")]
    KeyLength {
        /// `p256dh` or `auth`.
        name: &'static str,
        /// Bytes decoded.
        got: usize,
        /// Bytes required.
        want: usize,
    },
    /// `p256dh` is 65 bytes but not an uncompressed point on P-256.
    #[error("the push key p256dh is not an uncompressed point on the P-256 curve")]
    KeyNotOnCurve,
}

impl PushSubscription {
    /// Checks every rule: the endpoint is an absolute URL of at most [`MAX_ENDPOINT_BYTES`]
    /// bytes, with scheme `https` — or `http` when its host is a loopback address
    /// (127.0.0.0/8 or `[::1]`), for tests and for a self-hosted push distributor on the same
    /// machine; plain HTTP anywhere else would show the encrypted pushes and the endpoint (a
    /// capability) to the network — and without user info or fragment; `p256dh` decodes
    /// (base64url, RFC 8291 §3.1, padding optional) to 65 bytes that are an uncompressed P-256
    /// point, `auth` to 16 bytes (RFC 8291 §3.2).
    pub fn check(&self) -> Result<(), PushSubscriptionError> {
        self.endpoint_url()?;
        self.ua_public()?;
        self.auth_secret()?;
        Ok(())
    }

    /// The endpoint, parsed and checked (see [`Self::check`]).
    pub fn endpoint_url(&self) -> Result<url::Url, PushSubscriptionError> {
        use PushSubscriptionError as E;
        if self.endpoint.len() > MAX_ENDPOINT_BYTES {
            return Err(E::EndpointTooLong(self.endpoint.len()));
        }
        let url = url::Url::parse(&self.endpoint).map_err(|_| E::EndpointNotUrl)?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        };
        match url.scheme() {
            "https" if url.host().is_some() => {}
            "http" if loopback => {}
            other => {
                let shown = if other == "http" {
                    "http:// to a host that is not loopback".to_owned()
                } else {
                    format!("{}:", crate::schema::clip(other, 16))
                };
                return Err(E::EndpointNotHttps(shown));
            }
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err(E::EndpointExtras);
        }
        Ok(url)
    }

    /// The phone's public key (`p256dh`) as SEC1 uncompressed bytes, checked to be on P-256.
    pub fn ua_public(&self) -> Result<[u8; P256DH_BYTES], PushSubscriptionError> {
        let bytes = decode_key("p256dh", &self.p256dh, P256DH_BYTES)?;
        if bytes[0] != 0x04 || p256::PublicKey::from_sec1_bytes(&bytes).is_err() {
            return Err(PushSubscriptionError::KeyNotOnCurve);
        }
        let mut out = [0u8; P256DH_BYTES];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    /// The phone's authentication secret (`auth`), 16 bytes.
    pub fn auth_secret(&self) -> Result<[u8; AUTH_BYTES], PushSubscriptionError> {
        let bytes = decode_key("auth", &self.auth, AUTH_BYTES)?;
        let mut out = [0u8; AUTH_BYTES];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    /// The endpoint's host (what a log may show: the path and query are the capability), or
    /// `"?"` when the endpoint is not a URL.
    pub fn endpoint_host(&self) -> String {
        url::Url::parse(&self.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .map(|h| crate::schema::clip(&h, 64))
            .unwrap_or_else(|| "?".to_owned())
    }
}

fn decode_key(
    name: &'static str,
    text: &str,
    want: usize,
) -> Result<Vec<u8>, PushSubscriptionError> {
    // Longer than any valid key by far: refused before decoding.
    if text.len() > 4 * want {
        return Err(PushSubscriptionError::KeyLength {
            name,
            got: text.len() * 3 / 4,
            want,
        });
    }
    let bytes = Base64UrlUnpadded::decode_vec(text.trim_end_matches('='))
        .map_err(|_| PushSubscriptionError::KeyNotBase64(name))?;
    if bytes.len() != want {
        return Err(PushSubscriptionError::KeyLength {
            name,
            got: bytes.len(),
            want,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8291 Appendix A: the user agent's public key and authentication secret.
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn sub(endpoint: &str) -> PushSubscription {
        PushSubscription {
            endpoint: endpoint.into(),
            p256dh: UA_PUBLIC.into(),
            auth: AUTH.into(),
        }
    }

    #[test]
    fn a_good_subscription_passes() {
        sub("https://push.example.net/wpush/v2/abc?x=1")
            .check()
            .unwrap();
        sub("http://127.0.0.1:8080/up/abc").check().unwrap();
        sub("http://127.7.0.3/up").check().unwrap();
        sub("http://[::1]:9/up").check().unwrap();
        // Padding is tolerated.
        PushSubscription {
            auth: format!("{AUTH}=="),
            ..sub("https://p.example/")
        }
        .check()
        .unwrap();
    }

    #[test]
    fn bad_endpoints_are_refused_with_their_reason() {
        use PushSubscriptionError as E;
        let e = |u: &str| sub(u).check().unwrap_err();
        assert!(matches!(
            e("http://push.example.net/x"),
            E::EndpointNotHttps(_)
        ));
        assert!(matches!(e("http://10.0.0.1/x"), E::EndpointNotHttps(_)));
        assert!(matches!(e("http://[::2]/x"), E::EndpointNotHttps(_)));
        assert!(matches!(e("ftp://127.0.0.1/x"), E::EndpointNotHttps(_)));
        assert!(matches!(e("file:///etc/passwd"), E::EndpointNotHttps(_)));
        assert!(matches!(e("/relative/path"), E::EndpointNotUrl));
        assert!(matches!(e("https://u:p@push.example/"), E::EndpointExtras));
        assert!(matches!(e("https://push.example/#x"), E::EndpointExtras));
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT_BYTES));
        assert!(matches!(e(&long), E::EndpointTooLong(_)));
        assert!(
            e("http://push.example.net/x")
                .to_string()
                .contains("https://")
        );
    }

    #[test]
    fn bad_keys_are_refused_with_their_reason() {
        use PushSubscriptionError as E;
        let ok = sub("https://push.example/");
        let short = PushSubscription {
            p256dh: UA_PUBLIC[..40].into(),
            ..ok.clone()
        };
        assert!(matches!(
            short.check().unwrap_err(),
            E::KeyLength {
                name: "p256dh",
                want: 65,
                ..
            }
        ));
        let auth = PushSubscription {
            auth: "AAAA".into(),
            ..ok.clone()
        };
        assert_eq!(
            auth.check().unwrap_err(),
            E::KeyLength {
                name: "auth",
                got: 3,
                want: 16
            }
        );
        let not_b64 = PushSubscription {
            auth: "!!!!!!!!!!!!!!!!!!!!!!".into(),
            ..ok.clone()
        };
        assert_eq!(not_b64.check().unwrap_err(), E::KeyNotBase64("auth"));
        // 65 bytes that are not a point of the curve.
        let mut bytes = [0u8; 65];
        bytes[0] = 4;
        bytes[1] = 1;
        let off_curve = PushSubscription {
            p256dh: Base64UrlUnpadded::encode_string(&bytes),
            ..ok.clone()
        };
        assert_eq!(off_curve.check().unwrap_err(), E::KeyNotOnCurve);
        // A compressed point of the right length does not exist; a 0x02 prefix is refused.
        let mut raw = ok.ua_public().unwrap();
        raw[0] = 2;
        let compressed_tag = PushSubscription {
            p256dh: Base64UrlUnpadded::encode_string(&raw),
            ..ok.clone()
        };
        assert_eq!(compressed_tag.check().unwrap_err(), E::KeyNotOnCurve);
        let huge = PushSubscription {
            p256dh: "A".repeat(100_000),
            ..ok
        };
        assert!(matches!(huge.check().unwrap_err(), E::KeyLength { .. }));
    }

    #[test]
    fn debug_output_shows_only_the_host() {
        let s = format!(
            "{:?}",
            sub("https://push.example.net/secret-path?token=xyz")
        );
        assert!(s.contains("push.example.net"), "{s}");
        assert!(!s.contains("secret-path") && !s.contains("xyz") && !s.contains(AUTH));
    }
}
