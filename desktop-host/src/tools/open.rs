//! Opening a document, folder or web link with the desktop's default application.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ToolError;

/// What [`open_target`] was asked to open, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// An `http`, `https` or `file` URL, as given.
    Url(String),
    /// An existing path, made absolute so it can never be read as an option of the opener.
    Path(PathBuf),
}

/// Opens `target` (an existing path, or an `http`, `https` or `file` URL) with the platform's
/// default application: `xdg-open` on Linux and BSDs, `open` on macOS, `cmd /c start` on Windows.
///
/// The opener is started directly, never through a shell on Unix, with the target as a single
/// argument, and is not waited for. Other URL schemes (`javascript:`, `smb:`, …) are refused:
/// each hands the target to some other program with its own powers.
pub fn open_target(target: &str) -> Result<(), ToolError> {
    let target = classify(target)?;
    let (program, args, hint) = opener();
    let arg = match &target {
        Target::Url(u) => u.clone().into(),
        Target::Path(p) => p.clone().into_os_string(),
    };
    #[cfg(windows)]
    refuse_cmd_metacharacters(&arg)?;
    launch(program, args, &arg, hint)
}

fn classify(target: &str) -> Result<Target, ToolError> {
    let refuse = |reason: &str| ToolError::UnsupportedTarget {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    if target.trim().is_empty() {
        return Err(refuse("it is empty"));
    }
    if target.chars().any(char::is_control) {
        return Err(refuse("it contains control characters"));
    }
    if let Some(scheme) = url_scheme(target) {
        return match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" | "file" => {
                if target[scheme.len() + 1..].starts_with("//") {
                    Ok(Target::Url(target.to_string()))
                } else {
                    Err(refuse("a URL must look like scheme://…"))
                }
            }
            _ => Err(ToolError::UnsupportedTarget {
                target: target.to_string(),
                reason: format!(
                    "`{scheme}:` links are not opened; only http, https and file URLs or paths are"
                ),
            }),
        };
    }
    let path = std::path::absolute(Path::new(target))
        .map_err(|e| ToolError::io("open", Path::new(target), e))?;
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(ToolError::NotFound { path });
    }
    Ok(Target::Path(path))
}

/// The scheme of `s` if it starts like a URL (`letters:`); one letter is a Windows drive.
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && scheme.len() > 1).then_some(scheme)
}

#[cfg(target_os = "macos")]
fn opener() -> (&'static str, &'static [&'static str], &'static str) {
    ("open", &[], "it is part of macOS")
}

#[cfg(windows)]
fn opener() -> (&'static str, &'static [&'static str], &'static str) {
    // The empty string is `start`'s window title, so a quoted target is not taken for one.
    ("cmd", &["/c", "start", ""], "it is part of Windows")
}

#[cfg(not(any(target_os = "macos", windows)))]
fn opener() -> (&'static str, &'static [&'static str], &'static str) {
    ("xdg-open", &[], "install xdg-utils")
}

/// `cmd` parses its command line even through `start`; refuse what it would interpret.
#[cfg(windows)]
fn refuse_cmd_metacharacters(arg: &std::ffi::OsStr) -> Result<(), ToolError> {
    let s = arg.to_string_lossy();
    if s.contains(['&', '|', '<', '>', '^', '%', '"']) {
        return Err(ToolError::UnsupportedTarget {
            target: s.into_owned(),
            reason: "it contains characters that Windows' `start` would interpret (& | < > ^ % \")"
                .to_string(),
        });
    }
    Ok(())
}

/// Starts `program args… target` detached from our stdio and, on Unix, from our process group
/// (a Ctrl-C to the host must not close the user's document). A thread reaps it when it exits.
fn launch(
    program: &'static str,
    args: &[&str],
    target: &std::ffi::OsStr,
    hint: &'static str,
) -> Result<(), ToolError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ToolError::OpenerMissing { program, hint }
        } else {
            ToolError::Spawn {
                program: program.to_string(),
                source,
            }
        }
    })?;
    // Openers usually exit at once, but some wait for the application; reap whenever that is.
    let reaper = std::thread::Builder::new()
        .name("deskhand-open-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = reaper {
        tracing::warn!("no thread to reap the opener; it stays a zombie until exit: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn accepts_web_and_file_urls_and_existing_paths() {
        assert_eq!(
            classify("https://example.org/a?b=c&d").unwrap(),
            Target::Url("https://example.org/a?b=c&d".into())
        );
        assert!(matches!(classify("HTTP://x").unwrap(), Target::Url(_)));
        assert!(matches!(
            classify("file:///etc/hosts").unwrap(),
            Target::Url(_)
        ));
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("doc.txt");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(
            classify(f.to_str().unwrap()).unwrap(),
            Target::Path(f.clone())
        );
    }

    #[test]
    fn refuses_other_schemes_and_junk() {
        for bad in [
            "javascript:alert(1)",
            "smb://server/share",
            "ssh://host",
            "mailto:a@b.c",
            "data:text/html,<b>x</b>",
            "vbscript:x",
        ] {
            let e = classify(bad).unwrap_err();
            assert!(
                matches!(e, ToolError::UnsupportedTarget { .. }),
                "{bad}: {e}"
            );
        }
        let e = classify("javascript:alert(1)").unwrap_err().to_string();
        assert_eq!(
            e,
            "refusing to open `javascript:alert(1)`: `javascript:` links are not opened; only http, https and file URLs or paths are"
        );
        assert!(matches!(
            classify("http:evil"),
            Err(ToolError::UnsupportedTarget { .. })
        ));
        assert!(matches!(
            classify(""),
            Err(ToolError::UnsupportedTarget { .. })
        ));
        assert!(matches!(
            classify("https://x\n--help"),
            Err(ToolError::UnsupportedTarget { .. })
        ));
        assert!(matches!(
            classify("/no/such/file.pdf"),
            Err(ToolError::NotFound { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn launches_without_a_shell_and_reports_a_missing_opener() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("args");
        let fake = t.path().join("fake-opener");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$#\" \"$1\" > '{}'\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program: &'static str = Box::leak(fake.to_str().unwrap().to_string().into_boxed_str());
        let nasty = "https://example.org/$(touch pwned);`id`&x=1 y";
        launch(program, &[], nasty.as_ref(), "test").unwrap();
        let mut got = String::new();
        for _ in 0..100 {
            got = std::fs::read_to_string(&out).unwrap_or_default();
            if got.lines().count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(got, format!("1\n{nasty}\n"));

        let e = launch("deskhand-no-such-opener", &[], "x".as_ref(), "install it").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot open it: `deskhand-no-such-opener` is not installed (install it)"
        );
    }
}
