//! The secret locations: one list, kept here, and the identities of what they hold.
//!
//! A path is a secret when
//! - any of its components matches one of [`SECRET_NAMES`] (wherever it is, any case), or
//! - it is, or is inside, one of [`SECRET_HOME_LOCATIONS`] (relative to the home folder, any
//!   case), or the real folder such a location links to, or
//! - its file is one of the files those locations hold, by `(device, inode)` ([`SecretIds`]): a
//!   hard link or a bind mount of `~/.ssh/id_ed25519` under any name is the key still.
//!
//! Limits, on purpose: the identities cover what the home locations hold (and the host's own
//! files), walked at most [`MAX_ID_ENTRIES`] entries / [`MAX_ID_TIME`] (browser profiles can be
//! large: past the bound the rest is protected by path and name only, and a warning is logged);
//! a secret matched only by name elsewhere (a `prod.env` in a project) is protected by its name,
//! not by identity. The set is rebuilt when a folder it walked, or a location, changes
//! (mtime, inode), which the policy checks before every call.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::tools::safe_fs::{Fence, FileId};

/// Names that are secret wherever they appear, as any component of a path (a folder or a file).
/// `*` at the start or the end is a wildcard; matching ignores case.
pub const SECRET_NAMES: &[&str] = &[
    // Keys and key stores.
    ".ssh",
    ".gnupg",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    // Password stores.
    ".password-store",
    "*.kdbx",
    // Cloud and cluster credentials.
    ".aws",
    ".azure",
    ".kube",
    ".terraform.d",
    // Environment files.
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    // Credential files of tools.
    ".git-credentials",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".my.cnf",
    ".npmrc",
    ".pypirc",
    ".vault-token",
    ".s3cfg",
    ".boto",
];

/// Locations relative to the home folder that hold secrets (a folder and everything in it, or
/// one file). Matching ignores case (macOS homes usually are case-insensitive).
pub const SECRET_HOME_LOCATIONS: &[&str] = &[
    // Docker, cargo, git, GitHub, gems.
    ".docker",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".config/git/credentials",
    ".config/gh",
    ".gem/credentials",
    // Cloud CLIs.
    ".config/gcloud",
    ".oci",
    ".config/doctl",
    ".config/rclone",
    ".config/op",
    // Browser profiles (cookies, saved passwords).
    ".mozilla",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    "Library/Application Support/Google/Chrome",
    "Library/Application Support/Firefox",
    "Library/Safari",
    "Library/Cookies",
    // Keyrings and keychains.
    ".local/share/keyrings",
    ".local/share/kwalletd",
    "Library/Keychains",
];

/// How recent a folder's change may be, relative to its read, before its mtime is trusted.
pub const RACY: Duration = Duration::from_secs(2);

/// Entries the identity walk looks at, at most.
pub const MAX_ID_ENTRIES: usize = 50_000;
/// Time the identity walk may take, at most.
pub const MAX_ID_TIME: Duration = Duration::from_secs(2);

/// A wildcard name pattern: `*suffix` or `prefix*`, lower-cased.
enum NamePattern {
    Suffix(String),
    Prefix(String),
}

struct Names {
    exact: HashMap<String, &'static str>,
    other: Vec<(NamePattern, &'static str)>,
}

static NAMES: LazyLock<Names> = LazyLock::new(|| {
    let mut exact = HashMap::new();
    let mut other = Vec::new();
    for &p in SECRET_NAMES {
        let lower = p.to_ascii_lowercase();
        if let Some(s) = lower.strip_prefix('*') {
            other.push((NamePattern::Suffix(s.to_owned()), p));
        } else if let Some(s) = lower.strip_suffix('*') {
            other.push((NamePattern::Prefix(s.to_owned()), p));
        } else {
            exact.insert(lower, p);
        }
    }
    Names { exact, other }
});

/// The pattern of [`SECRET_NAMES`] that `name` matches, if any.
pub fn secret_name(name: &OsStr) -> Option<&'static str> {
    let lower = name.to_string_lossy().to_lowercase();
    if let Some(p) = NAMES.exact.get(&lower) {
        return Some(p);
    }
    NAMES.other.iter().find_map(|(k, p)| {
        let hit = match k {
            NamePattern::Suffix(s) => lower.ends_with(s.as_str()),
            NamePattern::Prefix(s) => lower.starts_with(s.as_str()),
        };
        hit.then_some(*p)
    })
}

/// The first name in `path` that is a secret, with the pattern it matches.
pub fn secret_component(path: &Path) -> Option<(&OsStr, &'static str)> {
    path.components().find_map(|c| match c {
        Component::Normal(n) => secret_name(n).map(|p| (n, p)),
        _ => None,
    })
}

/// Lower-cased components.
fn lower_components(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().to_lowercase()),
            _ => None,
        })
        .collect()
}

/// Locations relative to home, indexed by their first component.
pub(super) struct HomeLocations {
    by_first: HashMap<String, Vec<(Vec<String>, &'static str)>>,
}

impl HomeLocations {
    pub(super) fn new(list: &[&'static str]) -> Self {
        let mut by_first: HashMap<String, Vec<(Vec<String>, &'static str)>> = HashMap::new();
        for &l in list {
            let comps = lower_components(Path::new(l));
            if let Some(first) = comps.first() {
                by_first.entry(first.clone()).or_default().push((comps, l));
            }
        }
        HomeLocations { by_first }
    }

    /// The location `rel` (a path relative to home) is, or is inside.
    pub(super) fn containing(&self, rel: &Path) -> Option<&'static str> {
        let comps = lower_components(rel);
        let first = comps.first()?;
        self.by_first.get(first)?.iter().find_map(|(loc, name)| {
            (comps.len() >= loc.len() && comps[..loc.len()] == loc[..]).then_some(*name)
        })
    }
}

/// [`SECRET_HOME_LOCATIONS`], indexed.
pub(super) static LOCATIONS: LazyLock<HomeLocations> =
    LazyLock::new(|| HomeLocations::new(SECRET_HOME_LOCATIONS));

/// The places the identity walk starts from: every home location, every literal secret name at
/// the top of home, and the host's own files.
fn id_roots(home: &Path, own: &[PathBuf]) -> Vec<(PathBuf, usize)> {
    let mut roots: Vec<(PathBuf, usize)> = SECRET_HOME_LOCATIONS
        .iter()
        .map(|l| (home.join(l), usize::MAX))
        .collect();
    roots.extend(
        SECRET_NAMES
            .iter()
            .filter(|n| !n.contains('*'))
            .map(|n| (home.join(n), usize::MAX)),
    );
    // The host's own folders: the files in them (database, keys, config), not the copies of
    // user files kept in its trash and blob store.
    roots.extend(own.iter().map(|p| (p.clone(), 1)));
    roots
}

/// A folder's state: it changed when its identity or its modification time did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    id: FileId,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(Stamp {
        id: FileId::of_metadata(&meta),
        modified: meta.modified().ok(),
    })
}

/// A location's state: replaced (another inode, a link made or removed) or not. Its entries
/// are watched as a folder's.
fn root_stamp(path: &Path) -> Option<(FileId, bool)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((FileId::of_metadata(&meta), meta.file_type().is_symlink()))
}

/// The identities of the secret files at one moment.
#[derive(Clone, Debug, Default)]
pub struct IdSnapshot {
    ids: HashMap<FileId, PathBuf>,
    /// Real folders that secret locations link to (`~/.ssh` → `~/dotfiles/ssh`): secret too.
    targets: Vec<PathBuf>,
    /// False when a walk stopped at its bounds: some identities are missing.
    pub complete: bool,
}

impl IdSnapshot {
    /// The secret location a resolved path lies in because a location links there.
    pub fn target_containing(&self, path: &Path) -> Option<&Path> {
        self.targets
            .iter()
            .find(|t| path.starts_with(t))
            .map(PathBuf::as_path)
    }

    /// How many identities it holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Fence for IdSnapshot {
    fn secret(&self, id: FileId) -> Option<&Path> {
        self.ids.get(&id).map(PathBuf::as_path)
    }
}

/// A folder read by the walk: how it looked, when it was read, what it held.
struct DirWatch {
    stamp: Option<Stamp>,
    read_at: SystemTime,
    children: Vec<FileId>,
    /// How many levels below it are still walked (the host's own folders: none).
    depth: usize,
}

struct State {
    snapshot: Arc<IdSnapshot>,
    roots: Vec<Option<(FileId, bool)>>,
    dirs: HashMap<PathBuf, DirWatch>,
}

/// The identities of the files the secret locations hold, kept fresh.
pub struct SecretIds {
    roots: Vec<(PathBuf, usize)>,
    state: Mutex<State>,
}

impl std::fmt::Debug for SecretIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("SecretIds")
            .field("roots", &self.roots.len())
            .field("dirs", &st.dirs.len())
            .field("ids", &st.snapshot.ids.len())
            .field("complete", &st.snapshot.complete)
            .finish()
    }
}

impl SecretIds {
    /// Walks the secret locations of `home` and the host's `own` folders (bounded).
    pub fn new(home: &Path, own: &[PathBuf]) -> Self {
        let roots = id_roots(home, own);
        let state = build(&roots);
        SecretIds {
            roots,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The identities as last built, without looking again.
    pub fn snapshot(&self) -> Arc<IdSnapshot> {
        self.lock().snapshot.clone()
    }

    /// Looks again (one `lstat` per location and per folder walked) and brings the identities
    /// up to date: a location replaced rebuilds them all; a folder whose entries changed is read
    /// again (and new subfolders walked), so a busy browser profile costs the folders it
    /// touched, not a full walk.
    ///
    /// File times are coarse (a few ms on Linux, 1 s on HFS+): a folder changed within
    /// [`RACY`] of its read may change again without a new mtime, so it is read again on
    /// every refresh until it is older than that (what git does with its index).
    pub fn refresh(&self) -> Arc<IdSnapshot> {
        let mut st = self.lock();
        if self
            .roots
            .iter()
            .zip(&st.roots)
            .any(|((p, _), s)| root_stamp(p) != *s)
        {
            *st = build(&self.roots);
            return st.snapshot.clone();
        }
        let changed: Vec<PathBuf> = st
            .dirs
            .iter()
            .filter(|(p, w)| {
                let racy = w.stamp.and_then(|s| s.modified).is_none_or(|m| {
                    w.read_at
                        .checked_sub(RACY)
                        .is_none_or(|racy_after| m >= racy_after)
                });
                racy || stamp(p) != w.stamp
            })
            .map(|(p, _)| p.clone())
            .collect();
        if changed.is_empty() {
            return st.snapshot.clone();
        }
        let State { snapshot, dirs, .. } = &mut *st;
        let snap = Arc::make_mut(snapshot);
        let mut queue = VecDeque::new();
        for dir in changed {
            let Some(w) = dirs.remove(&dir) else { continue };
            for id in w.children {
                if snap.ids.get(&id).is_some_and(|p| p.parent() == Some(&dir)) {
                    snap.ids.remove(&id);
                }
            }
            // A folder that is gone stays out; its subfolders are gone too and leave the same way.
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                queue.push_back((dir, w.depth));
            }
        }
        walk(snap, dirs, queue);
        st.snapshot.clone()
    }
}

/// The bounded first walk. A location that is itself a link is followed once (its real folder
/// is recorded as a secret target); nothing inside is followed.
fn build(roots: &[(PathBuf, usize)]) -> State {
    let mut snap = IdSnapshot {
        complete: true,
        ..IdSnapshot::default()
    };
    let mut dirs = HashMap::new();
    let mut stamps = Vec::new();
    let mut queue = VecDeque::new();
    for (root, depth) in roots {
        stamps.push(root_stamp(root));
        let Ok(lmeta) = std::fs::symlink_metadata(root) else {
            continue;
        };
        snap.ids.insert(FileId::of_metadata(&lmeta), root.clone());
        let mut start = root.clone();
        if lmeta.file_type().is_symlink() {
            let Ok(real) = std::fs::canonicalize(root) else {
                continue;
            };
            if let Ok(m) = std::fs::symlink_metadata(&real) {
                snap.ids.insert(FileId::of_metadata(&m), root.clone());
            }
            snap.targets.push(real.clone());
            start = real;
        }
        if *depth > 0 && std::fs::symlink_metadata(&start).is_ok_and(|m| m.is_dir()) {
            queue.push_back((start, *depth));
        }
    }
    walk(&mut snap, &mut dirs, queue);
    State {
        snapshot: Arc::new(snap),
        roots: stamps,
        dirs,
    }
}

/// Reads the queued folders breadth-first, recording what they hold and walking new
/// subfolders, within [`MAX_ID_ENTRIES`] identities and [`MAX_ID_TIME`].
fn walk(
    snap: &mut IdSnapshot,
    dirs: &mut HashMap<PathBuf, DirWatch>,
    mut queue: VecDeque<(PathBuf, usize)>,
) {
    let started = Instant::now();
    let mut over = false;
    while let Some((dir, depth)) = queue.pop_front() {
        if dirs.contains_key(&dir) {
            continue;
        }
        over |= started.elapsed() > MAX_ID_TIME;
        if over {
            break;
        }
        let watch_stamp = stamp(&dir);
        let read_at = SystemTime::now();
        let mut children = Vec::new();
        if let Ok(items) = std::fs::read_dir(&dir) {
            for item in items.flatten() {
                if snap.ids.len() >= MAX_ID_ENTRIES {
                    over = true;
                    break;
                }
                // DirEntry::metadata does not follow symlinks.
                let Ok(m) = item.metadata() else { continue };
                let id = FileId::of_metadata(&m);
                let path = item.path();
                children.push(id);
                if m.is_dir() && depth > 1 && !dirs.contains_key(&path) {
                    queue.push_back((path.clone(), depth - 1));
                }
                snap.ids.insert(id, path);
            }
        }
        dirs.insert(
            dir,
            DirWatch {
                stamp: watch_stamp,
                read_at,
                children,
                depth,
            },
        );
    }
    if over {
        if snap.complete {
            tracing::warn!(
                "the secret locations hold more than {MAX_ID_ENTRIES} entries (or took over \
                 {MAX_ID_TIME:?} to walk): the rest is protected by path and name only, not by \
                 file identity"
            );
        }
        snap.complete = false;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_match_anywhere_ignoring_case() {
        for (name, want) in [
            (".env", Some(".env")),
            ("prod.env", Some("*.env")),
            (".env.local", Some(".env.*")),
            (".envrc", Some(".envrc")),
            ("server.PEM", Some("*.pem")),
            ("id_ed25519.pub", Some("id_ed25519*")),
            (".git-credentials", Some(".git-credentials")),
            ("vault.kdbx", Some("*.kdbx")),
            (".SSH", Some(".ssh")),
            ("notes.txt", None),
            ("environment", None),
            (".venv", None),
        ] {
            assert_eq!(secret_name(OsStr::new(name)), want, "{name}");
        }
        assert_eq!(
            secret_component(Path::new("/home/u/work/.ssh/config")).map(|(_, p)| p),
            Some(".ssh")
        );
    }

    #[test]
    fn home_locations_match_by_prefix_ignoring_case() {
        let l = &*LOCATIONS;
        assert_eq!(
            l.containing(Path::new(".config/gcloud/credentials.db")),
            Some(".config/gcloud")
        );
        assert_eq!(
            l.containing(Path::new("Library/keychains/login.keychain-db")),
            Some("Library/Keychains")
        );
        assert_eq!(l.containing(Path::new(".docker")), Some(".docker"));
        assert_eq!(l.containing(Path::new(".config")), None);
        assert_eq!(l.containing(Path::new(".config/gcloudx")), None);
    }

    #[test]
    fn identities_follow_changes_in_the_locations() {
        let t = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), "KEY").unwrap();
        let id = |p: &Path| FileId::of_metadata(&std::fs::symlink_metadata(p).unwrap());
        let ids = SecretIds::new(&home, &[]);
        let snap = ids.refresh();
        assert!(snap.complete);
        assert_eq!(
            snap.secret(id(&home.join(".ssh/id_ed25519"))),
            Some(home.join(".ssh/id_ed25519").as_path())
        );
        // A new key, and a location created after the start, are picked up.
        std::fs::write(home.join(".ssh/id_new"), "NEW").unwrap();
        std::fs::create_dir_all(home.join(".aws")).unwrap();
        std::fs::write(home.join(".aws/credentials"), "AWS").unwrap();
        let snap = ids.refresh();
        assert!(snap.secret(id(&home.join(".ssh/id_new"))).is_some());
        assert!(snap.secret(id(&home.join(".aws/credentials"))).is_some());
        // A key replaced by a rename (a new inode): the new one is known, the old one forgotten
        // (its inode number may be given to an unrelated file later).
        let old = id(&home.join(".ssh/id_ed25519"));
        std::fs::write(home.join(".ssh/tmp"), "KEY2").unwrap();
        std::fs::rename(home.join(".ssh/tmp"), home.join(".ssh/id_ed25519")).unwrap();
        let snap = ids.refresh();
        assert!(snap.secret(id(&home.join(".ssh/id_ed25519"))).is_some());
        assert_eq!(snap.secret(old), None);
        // A location that is a link: its real folder is secret too.
        let real = home.join("dotfiles/gnupg");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("secring.gpg"), "GPG").unwrap();
        std::os::unix::fs::symlink(&real, home.join(".gnupg")).unwrap();
        let snap = ids.refresh();
        assert_eq!(
            snap.target_containing(&real.join("x")),
            Some(real.as_path())
        );
        assert!(snap.secret(id(&real.join("secring.gpg"))).is_some());
    }
}
