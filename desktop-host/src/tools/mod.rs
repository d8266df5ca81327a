//! The local tools: the mechanisms a task uses to act on this computer.
//!
//! Files ([`files`], on top of [`safe_fs`]), shell commands ([`shell`], confined by
//! [`sandbox`]), screenshots
//! ([`screen`]), keyboard and mouse ([`input`]) and opening documents or links ([`open`]). These
//! functions do what they are asked; deciding *whether* a call is allowed, and resolving the
//! paths it may touch, is the policy layer's job and happens before any of them is called. What
//! the policy hands the file tools: the `skip` predicates of the directory walks, so secret and
//! rule-governed folders never appear in a [`files::find`] or [`files::summarize`], and a
//! [`safe_fs::Fence`] of secret identities that every file and folder opened is checked against.
//! The file tools never follow a symlink, so a path swapped after the check cannot redirect them.

use std::path::{Path, PathBuf};

pub mod files;
pub mod input;
pub mod open;
pub mod safe_fs;
pub mod sandbox;
pub mod screen;
pub mod shell;

/// Why a tool call failed. Every message names what failed and why, in words a phone can show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The path does not exist.
    #[error("`{}` does not exist", .path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A directory was needed.
    #[error("`{}` is not a directory", .path.display())]
    NotADirectory {
        /// The path that is something else.
        path: PathBuf,
    },
    /// A regular file was needed.
    #[error("`{}` is not a regular file", .path.display())]
    NotAFile {
        /// The path that is something else.
        path: PathBuf,
    },
    /// A FIFO, socket or device where a regular file was needed: never opened for reading.
    #[error("`{}` is {kind}, not a regular file; Deskhand reads only regular files", .path.display())]
    SpecialFile {
        /// The path.
        path: PathBuf,
        /// What it is, e.g. "a named pipe (FIFO)".
        kind: &'static str,
    },
    /// A symbolic link where the checked path had none: file operations never follow links, so
    /// a link swapped in after the policy's check cannot redirect them.
    #[error(
        "`{}` is a symbolic link; file operations never follow links (it may have been swapped in after the path was checked)",
        .path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The file is a secret under another name: a hard link or a mount of it.
    #[error(
        "`{}` is the same file as `{}` (a hard link or a mount of it), a secret location; Deskhand never touches it",
        .path.display(), .secret.display()
    )]
    SameAsSecret {
        /// The name it was reached by.
        path: PathBuf,
        /// The secret location it is.
        secret: PathBuf,
    },
    /// The file was replaced between being looked at and being opened.
    #[error("`{}` changed while it was being opened; try again", .path.display())]
    Changed {
        /// The path.
        path: PathBuf,
    },
    /// The file's content is not text.
    #[error("`{}` is not a text file ({reason})", .path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// What gave it away, e.g. "binary content".
        reason: &'static str,
    },
    /// Moving would overwrite something.
    #[error("`{}` already exists; refusing to overwrite it", .path.display())]
    DestinationExists {
        /// The occupied destination.
        path: PathBuf,
    },
    /// The arguments make no sense for this operation.
    #[error("{reason}")]
    Invalid {
        /// What is wrong, in full.
        reason: String,
    },
    /// The operation makes no sense for this path (moving a folder into itself, trashing the
    /// trash, copying a device to another disk, …).
    #[error("`{}` {reason}", .path.display())]
    Refused {
        /// The path.
        path: PathBuf,
        /// Why, as the end of a sentence that starts with the path.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("could not {action} `{}`: {source}", .path.display())]
    Io {
        /// What was being done ("read", "move", "list", …).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Nothing in the trash matches what restore was asked for.
    #[error("nothing in the trash matches `{query}` (give a trash id or the original path)")]
    NotInTrash {
        /// The id or path that was asked for.
        query: String,
    },
    /// The trash holds a record for this id, but the item never arrived in it.
    #[error(
        "trash entry `{id}` was never completed: `{}` was not moved to the trash",
        .original_path.display()
    )]
    TrashIncomplete {
        /// The trash id.
        id: String,
        /// Where the item was (and, if it exists, still is).
        original_path: PathBuf,
    },
    /// Restoring would overwrite whatever now lives at the original path.
    #[error(
        "cannot restore `{id}`: something now exists at `{}`; move it away first",
        .original_path.display()
    )]
    RestoreBlocked {
        /// The trash id.
        id: String,
        /// The occupied original path.
        original_path: PathBuf,
    },
    /// A trash metadata file could not be read or written.
    #[error("trash record `{}` is unusable: {reason}", .path.display())]
    TrashRecord {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A program could not be started.
    #[error("could not start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The program that opens documents and links is not installed.
    #[error("cannot open it: `{program}` is not installed ({hint})")]
    OpenerMissing {
        /// The missing program.
        program: &'static str,
        /// Where to get it.
        hint: &'static str,
    },
    /// The target to open is neither a path nor an http(s)/file URL.
    #[error("refusing to open `{target}`: {reason}")]
    UnsupportedTarget {
        /// What was asked for.
        target: String,
        /// Why it is refused.
        reason: String,
    },
    /// No X or Wayland session to capture or type into.
    #[error("no graphical session: DISPLAY is not set")]
    NoDisplay,
    /// The screen could not be captured.
    #[error("screen capture failed: {reason}")]
    Capture {
        /// Why, including what to change when the cause is known.
        reason: String,
    },
    /// Keyboard or mouse input could not be set up or sent.
    #[error("input failed: {reason}")]
    Input {
        /// Why.
        reason: String,
    },
    /// The OS sandbox shell commands run in is not available on this machine.
    #[error(
        "the shell sandbox is not available: {reason}. Commands are not run without it; to run \
         them unsandboxed anyway, set shell_sandbox = \"off\" in the desktop's config.toml"
    )]
    SandboxUnavailable {
        /// What is missing.
        reason: String,
    },
    /// The sandbox could not be set up for this command.
    #[error("could not set up the shell sandbox: {reason}")]
    Sandbox {
        /// Why.
        reason: String,
    },
    /// A key combination could not be understood.
    #[error("`{combo}` is not a key combination I can press: {reason}")]
    KeyCombo {
        /// The combination as given.
        combo: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

impl ToolError {
    /// The same error with every path in it passed through `show` (the executor shows `~/…`
    /// to phones, as in its successful replies).
    pub fn map_paths(self, show: impl Fn(&Path) -> PathBuf) -> Self {
        use ToolError::*;
        match self {
            NotFound { path } => NotFound { path: show(&path) },
            NotADirectory { path } => NotADirectory { path: show(&path) },
            NotAFile { path } => NotAFile { path: show(&path) },
            SpecialFile { path, kind } => SpecialFile {
                path: show(&path),
                kind,
            },
            Symlink { path } => Symlink { path: show(&path) },
            SameAsSecret { path, secret } => SameAsSecret {
                path: show(&path),
                secret: show(&secret),
            },
            Changed { path } => Changed { path: show(&path) },
            Refused { path, reason } => Refused {
                path: show(&path),
                reason,
            },
            NotText { path, reason } => NotText {
                path: show(&path),
                reason,
            },
            DestinationExists { path } => DestinationExists { path: show(&path) },
            Io {
                action,
                path,
                source,
            } => Io {
                action,
                path: show(&path),
                source,
            },
            TrashIncomplete { id, original_path } => TrashIncomplete {
                id,
                original_path: show(&original_path),
            },
            RestoreBlocked { id, original_path } => RestoreBlocked {
                id,
                original_path: show(&original_path),
            },
            TrashRecord { path, reason } => TrashRecord {
                path: show(&path),
                reason,
            },
            // A path to open (a URL stays as it is).
            UnsupportedTarget { target, reason } if Path::new(&target).is_absolute() => {
                UnsupportedTarget {
                    target: show(Path::new(&target)).display().to_string(),
                    reason,
                }
            }
            other => other,
        }
    }

    /// An [`ToolError::Io`] that turns "not found" into the clearer [`ToolError::NotFound`].
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            ToolError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ToolError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Whether the X/Wayland variables point at a graphical session, and which one the capture and
/// input libraries will use.
#[cfg(all(unix, not(target_os = "macos")))]
pub(crate) mod session {
    use super::ToolError;

    /// The `DISPLAY` value, or [`ToolError::NoDisplay`].
    pub(crate) fn x_display() -> Result<String, ToolError> {
        match std::env::var("DISPLAY") {
            Ok(d) if !d.is_empty() => Ok(d),
            _ => Err(ToolError::NoDisplay),
        }
    }

    /// The variables that make xcap take its Wayland path even when `DISPLAY` works (xcap
    /// checks exactly these two), described for an error message; `None` if neither is set.
    pub(crate) fn wayland_hint() -> Option<String> {
        let session = std::env::var("XDG_SESSION_TYPE").unwrap_or_default();
        let wayland = std::env::var("WAYLAND_DISPLAY").unwrap_or_default();
        let mut set = Vec::new();
        if session == "wayland" {
            set.push("XDG_SESSION_TYPE=wayland".to_string());
        }
        if wayland.to_lowercase().contains("wayland") {
            set.push(format!("WAYLAND_DISPLAY={wayland}"));
        }
        (!set.is_empty()).then(|| set.join(" and "))
    }
}
