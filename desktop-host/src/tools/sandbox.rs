//! The OS sandbox every shell command runs in, whatever its text.
//!
//! A [`Confinement`] names what the command may not touch and where it may write:
//! - **hidden** paths (the secret locations and the host's own directories) are neither
//!   readable, writable nor executable, and nothing can be created inside them;
//! - **read-only** paths (the persistence locations: shell start-up files, autostart, systemd
//!   user units, `~/.local/bin`, git configuration, a repository's `.git/hooks` and
//!   `.git/config`, …) can be read and executed but not changed, and are not created when
//!   missing: what a command left there would run later, outside the sandbox;
//! - writes are allowed only inside the **writable** folders (the roots, minus the hidden and
//!   read-only paths), `/dev/null`-like devices and a private temporary folder made for the
//!   command (`TMPDIR` points at it);
//! - reads and execution are allowed everywhere else.
//!
//! It is enforced by the kernel on the command and everything it starts:
//! - **Linux**: Landlock (ABI 3 or later, Linux 6.2+, required, never best effort). Landlock
//!   only grants, so the grant set is the complement of the hidden and read-only sets: every
//!   ancestor of a hidden or read-only path gets "list" only, each of its other entries gets
//!   read (and write inside the roots), a read-only path read. Consequences: directly inside a
//!   folder that holds a hidden or read-only path, present or not (`~` holds `~/.ssh` and
//!   `~/.bashrc`, a repository's `.git` holds `hooks`), nothing can be created, removed or
//!   renamed (Landlock cannot grant creation per name), entries created there after the
//!   command started cannot be read by it, and the *names* inside a hidden folder can be
//!   listed (not read). The rules are applied on a thread made for this one spawn (Landlock and
//!   `no_new_privs` belong to the calling thread and are inherited by the processes it
//!   starts), so no `unsafe` `pre_exec` hook is needed; the thread ends right after.
//! - **macOS**: `/usr/bin/sandbox-exec` with a generated profile ([`macos_profile`]).
//! - Elsewhere, or without Landlock, a command is refused unless `shell_sandbox = "off"`.
//!
//! Signals to processes outside the sandbox, and connections to abstract Unix sockets made
//! outside it, are refused where the kernel has Landlock ABI 6.
//!
//! Not covered: the network; metadata calls Landlock does not mediate (`chmod`, `stat`,
//! timestamps); connecting to Unix sockets that have a path (Landlock ABI 9); signals and
//! abstract sockets before ABI 6; a hard link or bind mount of a secret placed elsewhere in
//! advance.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ToolError;

/// Whether and how shell commands are confined.
#[derive(Clone, Debug)]
pub enum Sandbox {
    /// No sandbox: the command can do whatever the user can. Only by explicit configuration
    /// (`shell_sandbox = "off"`).
    Off,
    /// The OS sandbox, as described by the confinement.
    Confined(Confinement),
}

/// How far the search for secret names in the roots may go before a command starts.
#[derive(Clone, Copy, Debug)]
pub struct WalkLimits {
    /// Directory entries looked at, at most.
    pub max_entries: usize,
    /// Time spent, at most.
    pub max_time: Duration,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_entries: 200_000,
            max_time: Duration::from_secs(2),
        }
    }
}

/// What a sandboxed command may not touch and where it may write.
#[derive(Clone, Debug)]
pub struct Confinement {
    hidden: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    writable: Vec<PathBuf>,
    note: Option<String>,
}

impl Confinement {
    /// The confinement for one command.
    ///
    /// `hidden` are locations that must stay unreadable, `read_only` locations a command may
    /// read but neither change nor create (the persistence locations: what runs later, outside
    /// the sandbox), `writable` the folders writes are confined to (all are resolved here:
    /// symlinks in the existing part are followed). Each of `walk` (a folder and how many
    /// levels deep to look) is searched for entries `secret` says must be hidden (`.env` files,
    /// a project's `.ssh`), without following symlinks and without entering what it reports,
    /// within `limits`; in every folder the search meets named `a` of a pair `(a, b)` of
    /// `read_only_inside` (`(".git", "hooks")`), `a/b` is read-only, present or not. When a
    /// limit stops the search, [`Confinement::note`] says so, so the result can tell the user
    /// what was not searched. Read-only locations neither inside nor above a writable folder are
    /// dropped: nothing can write them anyway.
    pub fn new(
        hidden: &[PathBuf],
        read_only: &[PathBuf],
        writable: &[PathBuf],
        walk: &[(PathBuf, usize)],
        secret: &dyn Fn(&Path) -> bool,
        read_only_inside: &[(&str, &str)],
        limits: WalkLimits,
    ) -> Self {
        let mut all: Vec<PathBuf> = hidden.iter().map(|p| resolved(p)).collect();
        let found = search(walk, secret, read_only_inside, limits);
        all.extend(found.paths);
        let hidden = outermost(all);
        let writable: Vec<PathBuf> = writable.iter().map(|p| resolved(p)).collect();
        let mut ro: Vec<PathBuf> = read_only.iter().map(|p| resolved(p)).collect();
        ro.extend(found.read_only);
        ro.retain(|p| {
            !hidden.iter().any(|h| p.starts_with(h))
                && writable
                    .iter()
                    .any(|w| p.starts_with(w) || w.starts_with(p))
        });
        Confinement {
            hidden,
            read_only: outermost(ro),
            writable,
            note: found.stopped,
        }
    }

    /// The hidden locations (resolved, outermost only).
    pub fn hidden(&self) -> &[PathBuf] {
        &self.hidden
    }

    /// The read-only locations (resolved, outermost only, only those a root could reach).
    pub fn read_only(&self) -> &[PathBuf] {
        &self.read_only
    }

    /// The folders writes are confined to (resolved).
    pub fn writable(&self) -> &[PathBuf] {
        &self.writable
    }

    /// Set when the search for secret names stopped at a limit: what was not searched.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    fn is_hidden(&self, p: &Path) -> bool {
        self.hidden.iter().any(|h| p.starts_with(h))
    }

    #[cfg(target_os = "linux")]
    fn is_read_only(&self, p: &Path) -> bool {
        self.read_only.iter().any(|r| p.starts_with(r))
    }

    /// Builds the command that runs `program` with `args` inside the sandbox, with `tmp` as
    /// its private temporary folder. Spawn it with [`Confinement::spawn`].
    pub(crate) fn command(
        &self,
        program: &str,
        args: &[&str],
        tmp: &Path,
    ) -> Result<tokio::process::Command, ToolError> {
        #[cfg(target_os = "macos")]
        {
            let exec = Path::new(macos::SANDBOX_EXEC);
            if !exec.exists() {
                return Err(ToolError::SandboxUnavailable {
                    reason: format!("{} is missing", exec.display()),
                });
            }
            // Profiles match real paths (`/private/var/…`, not `/var/…`).
            let profile = macos_profile(
                &self.hidden,
                &self.read_only,
                &self.writable,
                &resolved(tmp),
            )?;
            let mut cmd = tokio::process::Command::new(exec);
            cmd.arg("-p").arg(profile).arg(program).args(args);
            cmd.env("TMPDIR", tmp);
            Ok(cmd)
        }
        #[cfg(not(target_os = "macos"))]
        {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args).env("TMPDIR", tmp);
            Ok(cmd)
        }
    }

    /// Spawns `cmd` (from [`Confinement::command`]) confined. On Linux the Landlock rules are
    /// built and applied on a thread made for this spawn, which ends right after.
    pub(crate) async fn spawn(
        &self,
        cmd: tokio::process::Command,
        tmp: &Path,
    ) -> Result<tokio::process::Child, ToolError> {
        #[cfg(target_os = "linux")]
        {
            let handle = tokio::runtime::Handle::current();
            let this = self.clone();
            let tmp = tmp.to_path_buf();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut cmd = cmd;
            std::thread::Builder::new()
                .name("sandboxed-spawn".into())
                .spawn(move || {
                    let _runtime = handle.enter();
                    let r =
                        linux::restrict_this_thread(&this, &tmp, linux::REQUIRED).and_then(|()| {
                            cmd.spawn().map_err(|source| ToolError::Spawn {
                                program: "sh".into(),
                                source,
                            })
                        });
                    let _ = tx.send(r);
                })
                .map_err(|e| ToolError::Sandbox {
                    reason: format!("no thread to set it up on: {e}"),
                })?;
            rx.await.map_err(|_| ToolError::Sandbox {
                reason: "the thread setting it up stopped".into(),
            })?
        }
        #[cfg(target_os = "macos")]
        {
            let _ = tmp;
            let mut cmd = cmd;
            cmd.spawn().map_err(|source| ToolError::Spawn {
                program: macos::SANDBOX_EXEC.into(),
                source,
            })
        }
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        {
            let _ = (cmd, tmp);
            Err(ToolError::SandboxUnavailable {
                reason: format!("there is no shell sandbox for {}", std::env::consts::OS),
            })
        }
    }
}

/// `p` with the symlinks of its existing part resolved; the rest kept as written.
fn resolved(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// The outermost of `paths` (a path inside another is dropped), sorted, without duplicates.
fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    let mut outer: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !outer.iter().any(|o| p.starts_with(o)) {
            outer.push(p);
        }
    }
    outer
}

struct Found {
    paths: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    stopped: Option<String>,
}

/// Breadth-first search of the `walk` folders for what `secret` reports, and for the
/// `read_only_inside` pairs; symlinks are neither reported nor followed (a link's target is
/// governed where it lives).
fn search(
    walk: &[(PathBuf, usize)],
    secret: &dyn Fn(&Path) -> bool,
    read_only_inside: &[(&str, &str)],
    limits: WalkLimits,
) -> Found {
    let started = Instant::now();
    let mut seen = 0usize;
    let mut paths = Vec::new();
    let mut read_only = Vec::new();
    let mut queue: std::collections::VecDeque<(PathBuf, usize)> =
        walk.iter().map(|(p, d)| (resolved(p), *d)).collect();
    while let Some((dir, depth)) = queue.pop_front() {
        if depth == 0 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > limits.max_entries || started.elapsed() > limits.max_time {
                return Found {
                    paths,
                    read_only,
                    stopped: Some(format!(
                        "the sandbox searched the shared folders for secret files (.env and the \
                         like) for {:.1} s and {} entries and stopped there: such files it did \
                         not reach are not hidden from this command",
                        started.elapsed().as_secs_f64(),
                        seen - 1
                    )),
                };
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                continue;
            }
            let path = entry.path();
            if secret(&path) {
                paths.push(path);
            } else if kind.is_dir() {
                let name = entry.file_name();
                read_only.extend(
                    read_only_inside
                        .iter()
                        .filter(|(a, _)| name.as_os_str() == std::ffi::OsStr::new(a))
                        .map(|(_, b)| path.join(b)),
                );
                queue.push_back((path, depth - 1));
            }
        }
    }
    Found {
        paths,
        read_only,
        stopped: None,
    }
}

/// The sandbox profile (SBPL) for `/usr/bin/sandbox-exec -p`: everything allowed, then writes
/// denied except in `writable`, the private `tmp` and the terminal devices, then writes to
/// `read_only` denied, then reads, writes and execution of `hidden` denied (later rules win).
/// Errors when a path is not UTF-8, which a profile cannot name.
pub fn macos_profile(
    hidden: &[PathBuf],
    read_only: &[PathBuf],
    writable: &[PathBuf],
    tmp: &Path,
) -> Result<String, ToolError> {
    fn quoted(p: &Path) -> Result<String, ToolError> {
        let s = p.to_str().ok_or_else(|| ToolError::Sandbox {
            reason: format!(
                "{} is not UTF-8, which a sandbox profile cannot name",
                p.display()
            ),
        })?;
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        Ok(out)
    }
    let mut profile = String::from("(version 1)\n(allow default)\n(deny file-write*)\n");
    profile.push_str("(allow file-write*\n");
    for w in writable.iter().map(PathBuf::as_path).chain([tmp]) {
        profile.push_str(&format!("  (subpath {})\n", quoted(w)?));
    }
    for dev in ["/dev/null", "/dev/zero", "/dev/tty", "/dev/dtracehelper"] {
        profile.push_str(&format!("  (literal \"{dev}\")\n"));
    }
    profile.push_str("  (regex #\"^/dev/fd/\"))\n");
    if !read_only.is_empty() {
        // `subpath` covers the location and everything under it, and a name not there yet.
        profile.push_str("(deny file-write*\n");
        for r in read_only {
            profile.push_str(&format!("  (subpath {})\n", quoted(r)?));
        }
        profile.push_str(")\n");
    }
    if !hidden.is_empty() {
        profile.push_str("(deny file-read* file-write* process-exec*\n");
        for h in hidden {
            profile.push_str(&format!("  (subpath {})\n", quoted(h)?));
        }
        profile.push_str(")\n");
    }
    Ok(profile)
}

#[cfg(target_os = "macos")]
mod macos {
    pub(super) const SANDBOX_EXEC: &str = "/usr/bin/sandbox-exec";
}

#[cfg(target_os = "linux")]
pub(crate) mod linux {
    use std::collections::BTreeSet;
    use std::os::fd::OwnedFd;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use landlock::{
        ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset,
        RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
    };
    use rustix::fs::{Dir, FileType, Mode, OFlags};

    use super::{Confinement, ToolError};

    /// The Landlock ABI the sandbox needs: 3 (Linux 6.2) handles truncation; before it, a
    /// sandboxed command could truncate a secret file.
    pub(crate) const REQUIRED: ABI = ABI::V3;

    /// Devices a shell needs to write to.
    const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"];

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Grant {
        /// List the entries of a folder that holds a hidden path (and nothing else).
        List,
        /// Read and execute.
        Read,
        /// Read, execute, write, create, remove, rename.
        ReadWrite,
    }

    /// One Landlock rule: a handle on a path (opened `O_PATH`, never through a final symlink)
    /// and what it grants beneath it.
    pub(crate) struct Rule {
        pub(crate) path: PathBuf,
        fd: OwnedFd,
        pub(crate) is_dir: bool,
        pub(crate) grant: Grant,
    }

    fn open_path(path: &Path) -> rustix::io::Result<OwnedFd> {
        rustix::fs::open(
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    fn is_dir(fd: &OwnedFd) -> Option<bool> {
        let st = rustix::fs::fstat(fd).ok()?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => None,
            t => Some(t == FileType::Directory),
        }
    }

    /// The rules for `c`: the complement of its hidden paths, writable inside its roots except
    /// at and under its read-only paths. The ancestors of both get "list" only, so a read-only
    /// path that does not exist cannot be created (nor can anything else directly in its parent).
    pub(crate) fn rules(c: &Confinement, tmp: &Path) -> Vec<Rule> {
        let ancestors: BTreeSet<PathBuf> = c
            .hidden
            .iter()
            .chain(&c.read_only)
            .flat_map(|h| h.ancestors().skip(1).map(Path::to_path_buf))
            .collect();
        let in_writable = |p: &Path| {
            c.writable.iter().any(|w| p.starts_with(w)) && !c.is_hidden(p) && !c.is_read_only(p)
        };
        let mut out = Vec::new();
        let push = |path: PathBuf, fd: OwnedFd, grant: Grant, out: &mut Vec<Rule>| {
            if let Some(is_dir) = is_dir(&fd) {
                out.push(Rule {
                    path,
                    fd,
                    is_dir,
                    grant,
                });
            }
        };
        if ancestors.is_empty()
            && let Ok(fd) = open_path(Path::new("/"))
        {
            push("/".into(), fd, Grant::Read, &mut out);
        }
        for a in &ancestors {
            // A folder that cannot be opened or listed grants nothing inside it.
            let Ok(dir_fd) = rustix::fs::open(
                a,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            let Ok(dir) = Dir::read_from(&dir_fd) else {
                continue;
            };
            for entry in dir.flatten() {
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let child = a.join(std::ffi::OsStr::from_bytes(name));
                if ancestors.contains(&child) || c.is_hidden(&child) {
                    continue;
                }
                let Ok(fd) = rustix::fs::openat(
                    &dir_fd,
                    entry.file_name(),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) else {
                    continue;
                };
                let grant = if in_writable(&child) {
                    Grant::ReadWrite
                } else {
                    Grant::Read
                };
                push(child, fd, grant, &mut out);
            }
            if let Ok(fd) = open_path(a) {
                push(a.clone(), fd, Grant::List, &mut out);
            }
        }
        let writable = c
            .writable
            .iter()
            .map(PathBuf::as_path)
            .chain(DEVICES.iter().map(Path::new))
            .chain([tmp]);
        for w in writable {
            // One under a read-only path has its read rule from there.
            if ancestors.contains(w) || c.is_hidden(w) || c.is_read_only(w) {
                continue;
            }
            if let Ok(fd) = open_path(w) {
                push(w.to_path_buf(), fd, Grant::ReadWrite, &mut out);
            }
        }
        out
    }

    fn access(rule: &Rule, abi: ABI) -> BitFlags<AccessFs> {
        let file = AccessFs::from_file(abi);
        let all = match rule.grant {
            Grant::List => return AccessFs::ReadDir.into(),
            Grant::Read => AccessFs::from_read(abi),
            Grant::ReadWrite => AccessFs::from_all(abi),
        };
        if rule.is_dir { all } else { all & file }
    }

    /// Restricts the calling thread (and every process it starts afterwards) to `c`, with
    /// `tmp` writable. Requires Landlock `abi` fully: a kernel without it is
    /// [`ToolError::SandboxUnavailable`], never a weaker sandbox.
    pub(crate) fn restrict_this_thread(
        c: &Confinement,
        tmp: &Path,
        abi: ABI,
    ) -> Result<(), ToolError> {
        let unavailable = |e: RulesetError| ToolError::SandboxUnavailable {
            reason: format!(
                "this Linux kernel does not offer Landlock ABI {} (Linux 6.2 or later, with \
                 Landlock enabled in its `lsm=` list): {e}",
                abi as i32
            ),
        };
        let setup = |e: RulesetError| ToolError::Sandbox {
            reason: e.to_string(),
        };
        let rule_failed = |path: &Path, e: RulesetError| ToolError::Sandbox {
            reason: format!("the rule for {}: {e}", path.display()),
        };
        let fs_only = || {
            Ruleset::default()
                .set_compatibility(CompatLevel::HardRequirement)
                .handle_access(AccessFs::from_all(abi))
                .map_err(unavailable)
        };
        // Signals to processes outside the sandbox (the host itself, the user's programs), and
        // connections to abstract Unix sockets they listen on (an X server's `@/tmp/.X11-unix/X0`,
        // a D-Bus bus, any unconfined helper), are refused where the kernel can (ABI 6, Linux
        // 6.12); before that they are not, as the README says, and the log says so once.
        let ruleset = match fs_only()?.scope(Scope::Signal | Scope::AbstractUnixSocket) {
            Ok(r) => r,
            Err(RulesetError::Scope(e)) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    tracing::warn!(
                        "shell sandbox: this kernel cannot keep commands from signalling \
                         other processes or reaching their abstract Unix sockets ({e}); files \
                         are still confined"
                    )
                });
                fs_only()?
            }
            Err(e) => return Err(unavailable(e)),
        };
        let mut ruleset = ruleset.create().map_err(unavailable)?;
        for rule in rules(c, tmp) {
            let access = access(&rule, abi);
            let path = rule.path;
            ruleset = ruleset
                .add_rule(PathBeneath::new(rule.fd, access))
                .map_err(|e| rule_failed(&path, e))?;
        }
        let status = ruleset.restrict_self().map_err(setup)?;
        if status.ruleset != RulesetStatus::FullyEnforced || !status.no_new_privs {
            return Err(ToolError::SandboxUnavailable {
                reason: format!(
                    "Landlock ABI {} could not be fully enforced on this kernel",
                    abi as i32
                ),
            });
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_profile_denies_hidden_paths_and_writes_outside_the_roots() {
        let p = macos_profile(
            &[
                PathBuf::from("/Users/me/.ssh"),
                PathBuf::from("/Users/me/Projects/app/.env"),
            ],
            &[
                PathBuf::from("/Users/me/.zshrc"),
                PathBuf::from("/Users/me/Library/LaunchAgents"),
                PathBuf::from("/Users/me/Projects/app/.git/hooks"),
            ],
            &[PathBuf::from("/Users/me")],
            Path::new("/private/tmp/deskhand-run-1/tmp"),
        )
        .unwrap();
        assert_eq!(
            p,
            "(version 1)\n(allow default)\n(deny file-write*)\n(allow file-write*\n  \
             (subpath \"/Users/me\")\n  (subpath \"/private/tmp/deskhand-run-1/tmp\")\n  \
             (literal \"/dev/null\")\n  (literal \"/dev/zero\")\n  (literal \"/dev/tty\")\n  \
             (literal \"/dev/dtracehelper\")\n  (regex #\"^/dev/fd/\"))\n\
             (deny file-write*\n  (subpath \"/Users/me/.zshrc\")\n  \
             (subpath \"/Users/me/Library/LaunchAgents\")\n  \
             (subpath \"/Users/me/Projects/app/.git/hooks\")\n)\n\
             (deny file-read* file-write* process-exec*\n  (subpath \"/Users/me/.ssh\")\n  \
             (subpath \"/Users/me/Projects/app/.env\")\n)\n"
        );
        // The read-only paths come after the allowed roots, the hidden ones last: in a profile,
        // the last matching rule wins.
        let ro = p.rfind("(deny file-write*\n").unwrap();
        assert!(ro > p.rfind("(allow file-write*").unwrap());
        assert!(p.rfind("(deny file-read*").unwrap() > ro);
        // Without read-only paths there is no such rule.
        let p = macos_profile(&[], &[], &[], Path::new("/t")).unwrap();
        assert!(!p.contains("(deny file-write*\n"), "{p}");
        // Quotes and backslashes in a path cannot end the string early.
        let p = macos_profile(
            &[PathBuf::from("/Users/me/we\"ird\\")],
            &[],
            &[],
            Path::new("/t"),
        )
        .unwrap();
        assert!(p.contains(r#"(subpath "/Users/me/we\"ird\\")"#), "{p}");
    }

    #[test]
    fn the_search_finds_secret_names_without_following_links_and_says_when_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/.env"), "K=V").unwrap();
        std::fs::write(root.join("a/b/c/.env.local"), "K=V").unwrap();
        std::fs::create_dir_all(root.join("a/.env.d/inner")).unwrap();
        std::fs::write(root.join("a/.env.d/inner/.env"), "K=V").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let secret = |p: &Path| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".env"))
        };
        let c = Confinement::new(
            &[],
            &[],
            &[],
            &[(root.to_path_buf(), usize::MAX)],
            &secret,
            &[],
            WalkLimits::default(),
        );
        let real = resolved(root);
        assert_eq!(
            c.hidden(),
            &[
                real.join("a/.env"),
                real.join("a/.env.d"),
                real.join("a/b/c/.env.local")
            ]
        );
        assert!(c.note().is_none());
        let c = Confinement::new(
            &[],
            &[],
            &[],
            &[(root.to_path_buf(), usize::MAX)],
            &secret,
            &[],
            WalkLimits {
                max_entries: 2,
                max_time: Duration::from_secs(10),
            },
        );
        let note = c.note().unwrap();
        assert!(
            note.contains("2 entries") && note.contains("not hidden"),
            "{note}"
        );
    }

    /// What `rules` grant on exactly `p`.
    #[cfg(target_os = "linux")]
    fn grants(rules: &[linux::Rule], p: &Path) -> Vec<linux::Grant> {
        rules
            .iter()
            .filter(|r| r.path == p)
            .map(|r| r.grant)
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn landlock_rules_are_the_complement_of_the_hidden_paths() {
        let dir = tempfile::tempdir().unwrap();
        let home = resolved(dir.path()).join("home");
        for d in [".ssh", "docs/sub", "work/app"] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::write(home.join("notes.txt"), "n").unwrap();
        std::fs::write(home.join("work/app/.env"), "K=V").unwrap();
        std::fs::write(home.join("work/app/main.rs"), "fn main() {}").unwrap();
        std::os::unix::fs::symlink(home.join(".ssh"), home.join("keys")).unwrap();
        let c = Confinement::new(
            &[home.join(".ssh"), home.join("work/app/.env")],
            &[],
            std::slice::from_ref(&home),
            &[],
            &|_| false,
            &[],
            WalkLimits::default(),
        );
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let rules = linux::rules(&c, &tmp);
        let grant = |p: &Path| grants(&rules, p);
        use linux::Grant::*;
        assert_eq!(grant(Path::new("/")), vec![List]);
        assert_eq!(grant(&home), vec![List]);
        assert_eq!(grant(&home.join("work/app")), vec![List]);
        assert_eq!(grant(&home.join("docs")), vec![ReadWrite]);
        assert_eq!(grant(&home.join("notes.txt")), vec![ReadWrite]);
        assert_eq!(grant(&home.join("work/app/main.rs")), vec![ReadWrite]);
        assert_eq!(grant(Path::new("/usr")), vec![Read]);
        assert!(grant(&tmp).contains(&ReadWrite));
        assert_eq!(grant(Path::new("/dev/null")), vec![ReadWrite]);
        // Nothing at or under a hidden path, and no link is followed.
        for r in &rules {
            assert!(
                !r.path.starts_with(home.join(".ssh")) && r.path != home.join("work/app/.env"),
                "{:?} grants {:?}",
                r.path,
                r.grant
            );
        }
        assert!(grant(&home.join("keys")).is_empty());
        // Only list rights on the ancestors of hidden paths.
        for a in [Path::new("/"), &home, &home.join("work")] {
            assert!(grant(a).iter().all(|g| *g == List), "{a:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn read_only_paths_get_read_and_their_folders_list() {
        let dir = tempfile::tempdir().unwrap();
        let home = resolved(dir.path()).join("home");
        for d in [".config/fish", "p/.git/hooks", "p/src", "other"] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::write(home.join(".bashrc"), "").unwrap();
        std::fs::write(home.join("p/.git/HEAD"), "").unwrap();
        let c = Confinement::new(
            &[],
            &[
                home.join(".bashrc"),
                home.join(".config/fish"),
                home.join(".config/systemd/user"),
                PathBuf::from("/etc/cron.d"),
            ],
            std::slice::from_ref(&home),
            &[(home.clone(), usize::MAX)],
            &|_| false,
            &[(".git", "hooks"), (".git", "config")],
            WalkLimits::default(),
        );
        // Outside every root a read-only path is dropped: nothing can write it anyway.
        assert!(!c.read_only().contains(&PathBuf::from("/etc/cron.d")));
        assert!(c.read_only().contains(&home.join("p/.git/config")));
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let rules = linux::rules(&c, &tmp);
        let grant = |p: &Path| grants(&rules, p);
        use linux::Grant::*;
        for (p, g) in [
            (".bashrc", Read),
            (".config/fish", Read),
            ("p/.git/hooks", Read),
            ("p/.git/HEAD", ReadWrite),
            ("p/src", ReadWrite),
            ("other", ReadWrite),
            ("", List),
            (".config", List),
            ("p", List),
            ("p/.git", List),
        ] {
            assert_eq!(grant(&home.join(p)), vec![g], "{p}");
        }
        // Not there yet: no rule, and its folders list only, so it cannot be created.
        assert!(grant(&home.join("p/.git/config")).is_empty());
        assert!(grant(&home.join(".config/systemd")).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_kernel_without_the_required_landlock_abi_refuses_to_run_weaker() {
        // This kernel offers ABI 7 (checked); ABI 10 stands for a kernel that lacks what we need.
        let dir = tempfile::tempdir().unwrap();
        let c = Confinement::new(&[], &[], &[], &[], &|_| false, &[], WalkLimits::default());
        let tmp = dir.path().to_path_buf();
        let e =
            std::thread::spawn(move || linux::restrict_this_thread(&c, &tmp, landlock::ABI::V10))
                .join()
                .unwrap()
                .unwrap_err();
        assert!(matches!(e, ToolError::SandboxUnavailable { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("Landlock ABI 10") && text.contains("shell_sandbox = \"off\""),
            "{text}"
        );
    }
}
