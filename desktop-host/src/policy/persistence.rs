//! Persistence locations: places whose files the system or a shell runs later (at login, in
//! every new shell, on a schedule, on `git commit`). Moving something *into* one of them is how a
//! one-off action becomes a standing one, so such a move is shown with risk high and says why.
//!
//! Each entry is `(location, what it does)`. A location is relative to the home folder, absolute
//! (`/…`), or `**/…` for a pair of names anywhere (git hooks of any repository). Matching
//! ignores case.

use std::path::{Component, Path};
use std::sync::LazyLock;

use super::secrets::HomeLocations;

/// The persistence locations.
pub const PERSISTENCE: &[(&str, &str)] = &[
    (
        ".config/autostart",
        "XDG autostart: starts programs at login",
    ),
    (".config/systemd/user", "systemd user units: start programs"),
    (
        ".local/share/systemd/user",
        "systemd user units: start programs",
    ),
    (".config/environment.d", "the login session's environment"),
    (".config/plasma-workspace", "KDE start-up scripts"),
    (".pam_environment", "the login session's environment"),
    (".profile", "a shell start-up file"),
    (".bashrc", "a shell start-up file"),
    (".bash_profile", "a shell start-up file"),
    (".bash_login", "a shell start-up file"),
    (".bash_logout", "a shell start-up file"),
    (".zshrc", "a shell start-up file"),
    (".zshenv", "a shell start-up file"),
    (".zprofile", "a shell start-up file"),
    (".zlogin", "a shell start-up file"),
    (".config/fish", "a shell start-up folder"),
    (".xprofile", "an X session start-up file"),
    (".xinitrc", "an X session start-up file"),
    (".xsession", "an X session start-up file"),
    (".xsessionrc", "an X session start-up file"),
    (".gitconfig", "git's configuration: can run programs"),
    (
        ".config/git/config",
        "git's configuration: can run programs",
    ),
    (
        ".local/bin",
        "a folder on the PATH: replaces commands you run",
    ),
    ("bin", "a folder on the PATH: replaces commands you run"),
    (".local/share/applications", "desktop launchers"),
    (
        "Library/LaunchAgents",
        "macOS LaunchAgents: start programs at login",
    ),
    ("**/.git/hooks", "git hooks: run on git commands"),
    (
        "**/.git/config",
        "a repository's git configuration: can run programs",
    ),
    ("/etc/cron.d", "cron: runs programs on a schedule"),
    ("/etc/crontab", "cron: runs programs on a schedule"),
    ("/var/spool/cron", "crontabs: run programs on a schedule"),
    ("/etc/profile.d", "a shell start-up folder"),
    ("/etc/systemd", "systemd units: start programs"),
    (
        "/Library/LaunchAgents",
        "macOS LaunchAgents: start programs at login",
    ),
    (
        "/Library/LaunchDaemons",
        "macOS LaunchDaemons: start programs at boot",
    ),
];

struct Index {
    home: HomeLocations,
    absolute: Vec<(&'static str, &'static str)>,
    anywhere: Vec<([String; 2], &'static str, &'static str)>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let home_list: Vec<&'static str> = PERSISTENCE
        .iter()
        .map(|(l, _)| *l)
        .filter(|l| !l.starts_with('/') && !l.starts_with("**/"))
        .collect();
    let absolute = PERSISTENCE
        .iter()
        .filter(|(l, _)| l.starts_with('/'))
        .copied()
        .collect();
    let anywhere = PERSISTENCE
        .iter()
        .filter_map(|(l, what)| {
            let rest = l.strip_prefix("**/")?;
            let (a, b) = rest.split_once('/')?;
            Some(([a.to_lowercase(), b.to_lowercase()], *l, *what))
        })
        .collect();
    Index {
        home: HomeLocations::new(&home_list),
        absolute,
        anywhere,
    }
});

fn what_of(location: &str) -> &'static str {
    PERSISTENCE
        .iter()
        .find(|(l, _)| *l == location)
        .map_or("", |(_, w)| w)
}

/// The persistence location `path` (resolved) is or is inside: `(location, what it does)`.
pub fn location_of(home: &Path, path: &Path) -> Option<(&'static str, &'static str)> {
    let index = &*INDEX;
    if let Ok(rel) = path.strip_prefix(home)
        && let Some(l) = index.home.containing(rel)
    {
        return Some((l, what_of(l)));
    }
    if let Some(&(l, w)) = index
        .absolute
        .iter()
        .find(|(l, _)| path.starts_with(Path::new(l)))
    {
        return Some((l, w));
    }
    let names: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().to_lowercase()),
            _ => None,
        })
        .collect();
    index.anywhere.iter().find_map(|(pair, l, w)| {
        names
            .windows(2)
            .any(|win| win[0] == pair[0] && win[1] == pair[1])
            .then_some((*l, *w))
    })
}

/// A persistence location (home or absolute) inside the folder `dir`, if any: what a folder
/// moved to `dir` could land in.
pub fn location_inside(home: &Path, dir: &Path) -> Option<(&'static str, &'static str)> {
    PERSISTENCE.iter().copied().find(|(l, _)| {
        if l.starts_with("**/") {
            return false;
        }
        let full = if l.starts_with('/') {
            Path::new(l).to_path_buf()
        } else {
            home.join(l)
        };
        full.starts_with(dir) && full != dir
    })
}

/// The persistence locations at fixed places (home-relative ones joined to `home`), present or
/// not: the shell sandbox keeps them read-only.
pub fn fixed(home: &Path) -> Vec<std::path::PathBuf> {
    PERSISTENCE
        .iter()
        .filter(|(l, _)| !l.starts_with("**/"))
        .map(|(l, _)| {
            if l.starts_with('/') {
                Path::new(l).to_path_buf()
            } else {
                home.join(l)
            }
        })
        .collect()
}

/// The persistence locations found anywhere, as `(folder name, name inside it)`:
/// `(".git", "hooks")`.
pub fn anywhere() -> Vec<(&'static str, &'static str)> {
    PERSISTENCE
        .iter()
        .filter_map(|(l, _)| l.strip_prefix("**/")?.split_once('/'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_locations_are_found_in_and_below() {
        let home = Path::new("/home/u");
        let at = |p: &str| location_of(home, Path::new(p)).map(|(l, _)| l);
        assert_eq!(
            at("/home/u/.config/autostart/evil.desktop"),
            Some(".config/autostart")
        );
        assert_eq!(at("/home/u/.bashrc"), Some(".bashrc"));
        assert_eq!(at("/home/u/.BASHRC"), Some(".bashrc"));
        assert_eq!(
            at("/home/u/Projects/app/.git/hooks/pre-commit"),
            Some("**/.git/hooks")
        );
        assert_eq!(at("/etc/cron.d/job"), Some("/etc/cron.d"));
        assert_eq!(at("/home/u/Projects/bashrc"), None);
        assert_eq!(at("/home/u/.config/autostartx"), None);
        assert_eq!(
            location_inside(home, Path::new("/home/u/.config")).map(|(l, _)| l),
            Some(".config/autostart")
        );
        assert_eq!(location_inside(home, Path::new("/home/u/Documents")), None);
        assert!(fixed(home).contains(&home.join(".bashrc")));
        assert!(fixed(home).contains(&Path::new("/etc/cron.d").to_path_buf()));
        assert_eq!(anywhere(), vec![(".git", "hooks"), (".git", "config")]);
    }
}
