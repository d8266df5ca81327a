//! Platform directories. Every path returned here is absolute: the host protects its data and
//! config directories by absolute path, and a relative `HOME` would otherwise be read against
//! whatever folder a task runs in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `path` made absolute against the current directory (left as it is if there is none).
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// An XDG base directory variable: unset, empty or relative values are ignored, as the XDG
/// Base Directory specification says.
fn xdg_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Where the host keeps its data: `$XDG_DATA_HOME/deskhand` (Linux), `~/Library/Application
/// Support/deskhand` (macOS), `%APPDATA%\deskhand` (Windows). Absolute.
pub fn default_data_dir() -> PathBuf {
    let home = home_dir();
    if cfg!(target_os = "macos") {
        return home.join("Library/Application Support/deskhand");
    }
    if cfg!(windows)
        && let Some(appdata) = std::env::var_os("APPDATA")
    {
        return absolute(PathBuf::from(appdata).join("deskhand"));
    }
    match xdg_dir("XDG_DATA_HOME") {
        Some(x) => x.join("deskhand"),
        None => home.join(".local/share/deskhand"),
    }
}

/// `$XDG_CONFIG_HOME` when it is set to an absolute path.
pub fn xdg_config_home() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME")
}

/// The machine's host name, as a default desktop name.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "desktop".to_owned())
}

/// The user's home directory (`$HOME`, `%USERPROFILE%` on Windows), absolute: a relative value
/// is taken against the current directory once, here.
pub fn home_dir() -> PathBuf {
    home_from(std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")))
}

fn home_from(var: Option<OsString>) -> PathBuf {
    absolute(
        var.filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(".").to_path_buf()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_is_absolute_whatever_the_variable_holds() {
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(
            home_from(Some("/home/ann".into())),
            PathBuf::from("/home/ann")
        );
        assert_eq!(home_from(Some("rel/home".into())), cwd.join("rel/home"));
        assert!(home_from(Some("".into())).is_absolute());
        assert!(home_from(None).is_absolute());
        assert!(default_data_dir().is_absolute());
    }
}
