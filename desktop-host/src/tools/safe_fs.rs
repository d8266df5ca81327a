//! File operations that cannot be redirected between the policy's check and their use.
//!
//! The policy judges canonical paths (every symlink resolved). Between that check and the
//! operation another local process may swap a folder on the way for a symlink (to `~/.ssh`, to
//! `/`). So nothing here hands a path string to the kernel: every operation walks the path from
//! `/` one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC)` and then acts
//! relative to the parent's handle (`openat` with `O_NOFOLLOW`, `renameat`, `statat` without
//! following). A symlink anywhere on the way fails the operation with [`ToolError::Symlink`].
//!
//! Every directory and file opened (and every item renamed) is identified by its
//! `(device, inode)` and checked against a [`Fence`], the identities of the secret files, so a
//! hard link or a bind mount of a secret under another name is refused with
//! [`ToolError::SameAsSecret`].
//!
//! Plain `openat` walks, no `openat2`: the same code runs on Linux and macOS. Paths given here
//! must be absolute and canonical (no `.` or `..`), as [`crate::policy::Policy::resolve`] makes them.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use super::ToolError;

/// A file's identity: the device it lives on and its inode number. Two names with the same
/// identity are the same file (hard links, bind mounts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The identity std's metadata reports (`symlink_metadata` for the link itself).
    pub fn of_metadata(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The identities a file operation must refuse: the secret files and folders.
pub trait Fence: Sync {
    /// The secret location `id` belongs to, if it is one.
    fn secret(&self, id: FileId) -> Option<&Path>;
}

/// A fence that refuses nothing (symlinks are still never followed). For the host's own
/// bookkeeping (`deskhand trash restore`), not for tasks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFence;

impl Fence for NoFence {
    fn secret(&self, _id: FileId) -> Option<&Path> {
        None
    }
}

/// What `statat`/`fstat` said about an inode, in portable types.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    /// Device and inode.
    pub id: FileId,
    /// File, directory, symlink, FIFO, …
    pub file_type: FileType,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, if after the epoch.
    pub modified: Option<SystemTime>,
}

impl Meta {
    // The field types of `struct stat` differ between targets (u64 here, i32 there): the casts
    // are what makes this one function portable.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(st: &Stat) -> Self {
        let secs = st.st_mtime as i64;
        let nanos = st.st_mtime_nsec as u64;
        let modified = u64::try_from(secs).ok().map(|s| {
            UNIX_EPOCH + Duration::from_secs(s) + Duration::from_nanos(nanos % 1_000_000_000)
        });
        Meta {
            id: FileId {
                dev: st.st_dev as u64,
                ino: st.st_ino as u64,
            },
            file_type: FileType::from_raw_mode(st.st_mode),
            mode: (st.st_mode as u32) & 0o7777,
            size: u64::try_from(st.st_size as i64).unwrap_or(0),
            modified,
        }
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type == FileType::RegularFile
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }
}

/// Words for a kind of inode, for error messages.
pub fn describe(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a folder",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a named pipe (FIFO)",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "a special file",
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Flags for the folders passed through on the way: on Linux `O_PATH`, which needs only search
/// permission (a `0711` folder on the way works as it does for a path string); elsewhere a read
/// open.
fn pass_flags() -> OFlags {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        dir_flags()
    }
}

fn io_err(action: &'static str, path: &Path, e: Errno) -> ToolError {
    ToolError::io(action, path, std::io::Error::from(e))
}

/// The normal components of an absolute, canonical path.
fn components(path: &Path) -> Result<Vec<&OsStr>, ToolError> {
    let mut out = Vec::new();
    let mut comps = path.components();
    if comps.next() != Some(Component::RootDir) {
        return Err(ToolError::Refused {
            path: path.to_path_buf(),
            reason: "is not an absolute path".into(),
        });
    }
    for c in comps {
        match c {
            Component::Normal(name) => out.push(name),
            _ => {
                return Err(ToolError::Refused {
                    path: path.to_path_buf(),
                    reason: "is not a resolved path (it holds `.` or `..`)".into(),
                });
            }
        }
    }
    Ok(out)
}

/// `statat` of `name` in `dir`, not following a symlink.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<Meta, ToolError> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| Meta::from_stat(&st))
        .map_err(|e| io_err("look at", path, e))
}

/// `fstat` of an open file or folder.
pub fn stat_fd(fd: BorrowedFd<'_>, path: &Path) -> Result<Meta, ToolError> {
    rustix::fs::fstat(fd)
        .map(|st| Meta::from_stat(&st))
        .map_err(|e| io_err("look at", path, e))
}

/// Refuses `id` if the fence names it a secret.
pub fn check_id(id: FileId, path: &Path, fence: &dyn Fence) -> Result<(), ToolError> {
    match fence.secret(id) {
        Some(secret) => Err(ToolError::SameAsSecret {
            path: path.to_path_buf(),
            secret: secret.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Why opening `name` in `parent` failed, in the clearest words: a symlink in the way, not a
/// folder, or the system's error.
fn explain_open(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    e: Errno,
    want_dir: bool,
) -> ToolError {
    // Linux and macOS say ELOOP for O_NOFOLLOW on a symlink, the BSDs EMLINK; ENOTDIR for
    // O_DIRECTORY on anything else.
    if matches!(e, Errno::LOOP | Errno::MLINK | Errno::NOTDIR)
        && let Ok(meta) = stat_at(parent, name, path)
    {
        if meta.file_type == FileType::Symlink {
            return ToolError::Symlink {
                path: path.to_path_buf(),
            };
        }
        if want_dir && !meta.is_dir() {
            return ToolError::NotADirectory {
                path: path.to_path_buf(),
            };
        }
    }
    io_err("open", path, e)
}

/// Opens the folder `name` inside `parent` without following a symlink, and checks its identity.
pub fn open_subdir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    fence: &dyn Fence,
) -> Result<OwnedFd, ToolError> {
    open_subdir_with(parent, name, path, fence, dir_flags())
}

fn open_subdir_with(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    fence: &dyn Fence,
    flags: OFlags,
) -> Result<OwnedFd, ToolError> {
    // With O_PATH, O_NOFOLLOW alone would open a symlink itself; O_DIRECTORY makes it fail.
    let fd = rustix::fs::openat(parent, name, flags, Mode::empty())
        .map_err(|e| explain_open(parent, name, path, e, true))?;
    check_id(stat_fd(fd.as_fd(), path)?.id, path, fence)?;
    Ok(fd)
}

/// Flags for one step of a walk: the folder arrived at is opened for use, the ones passed
/// through only for lookups.
fn step_flags(last: bool) -> OFlags {
    if last { dir_flags() } else { pass_flags() }
}

/// Makes a FIFO at `path` for tests, with mkfifo(1): portable where `mknodat` is not (macOS).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

fn open_root() -> Result<OwnedFd, ToolError> {
    rustix::fs::open("/", dir_flags(), Mode::empty()).map_err(|e| io_err("open", Path::new("/"), e))
}

/// Opens the folder at `path` (absolute, canonical), walking from `/` one component at a time
/// without following any symlink; every folder on the way is checked against `fence`.
pub fn open_dir(path: &Path, fence: &dyn Fence) -> Result<OwnedFd, ToolError> {
    let names = components(path)?;
    let mut fd = open_root()?;
    let mut sofar = PathBuf::from("/");
    for (i, &name) in names.iter().enumerate() {
        sofar.push(name);
        let flags = step_flags(i + 1 == names.len());
        fd = open_subdir_with(fd.as_fd(), name, &sofar, fence, flags)?;
    }
    Ok(fd)
}

/// Opens the folder that holds `path` and returns it with `path`'s last name.
pub fn open_parent(path: &Path, fence: &dyn Fence) -> Result<(OwnedFd, OsString), ToolError> {
    let refused = |reason: &str| ToolError::Refused {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let parent = path
        .parent()
        .ok_or_else(|| refused("has no parent folder"))?;
    let name = path
        .file_name()
        .ok_or_else(|| refused("has no file name"))?;
    components(path)?;
    Ok((open_dir(parent, fence)?, name.to_os_string()))
}

/// Opens the folder at `path`, creating the missing ones on the way (mode 0777 less the umask),
/// never following a symlink.
pub fn create_dir_all(path: &Path, fence: &dyn Fence) -> Result<OwnedFd, ToolError> {
    let names = components(path)?;
    let mut fd = open_root()?;
    let mut sofar = PathBuf::from("/");
    for (i, &name) in names.iter().enumerate() {
        sofar.push(name);
        let flags = step_flags(i + 1 == names.len());
        let next = match open_subdir_with(fd.as_fd(), name, &sofar, fence, flags) {
            Err(ToolError::NotFound { .. }) => {
                match rustix::fs::mkdirat(fd.as_fd(), name, Mode::RWXU | Mode::RWXG | Mode::RWXO) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_err("create", &sofar, e)),
                }
                open_subdir_with(fd.as_fd(), name, &sofar, fence, flags)?
            }
            other => other?,
        };
        fd = next;
    }
    Ok(fd)
}

/// Refuses what is not a regular file, with words for what it is.
fn require_file(meta: &Meta, path: &Path) -> Result<(), ToolError> {
    match meta.file_type {
        FileType::RegularFile => Ok(()),
        FileType::Symlink => Err(ToolError::Symlink {
            path: path.to_path_buf(),
        }),
        FileType::Directory => Err(ToolError::NotAFile {
            path: path.to_path_buf(),
        }),
        other => Err(ToolError::SpecialFile {
            path: path.to_path_buf(),
            kind: describe(other),
        }),
    }
}

/// Opens the regular file `name` in `dir` for reading. A FIFO, socket or device is refused
/// before it is opened (and opened with `O_NONBLOCK` anyway, so a swap in between cannot
/// block); a symlink is never followed; the file opened must be the one looked at.
pub fn open_file_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    fence: &dyn Fence,
) -> Result<(File, Meta), ToolError> {
    let before = stat_at(dir, name, path)?;
    require_file(&before, path)?;
    check_id(before.id, path, fence)?;
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())
        .map_err(|e| explain_open(dir, name, path, e, false))?;
    let meta = stat_fd(fd.as_fd(), path)?;
    if meta.id != before.id {
        return Err(ToolError::Changed {
            path: path.to_path_buf(),
        });
    }
    require_file(&meta, path)?;
    Ok((File::from(fd), meta))
}

/// Opens the regular file at `path` for reading (see [`open_file_at`]).
pub fn open_file(path: &Path, fence: &dyn Fence) -> Result<(File, Meta), ToolError> {
    let (dir, name) = open_parent(path, fence)?;
    open_file_at(dir.as_fd(), &name, path, fence)
}

/// One entry of a folder, as the directory read reports it (no `stat`).
#[derive(Clone, Debug)]
pub struct DirItem {
    /// Its name.
    pub name: OsString,
    /// Its type; [`FileType::Unknown`] when the filesystem does not say (see [`read_dir_at`]).
    pub file_type: FileType,
}

/// The entries of an open folder (without `.` and `..`), each with its type: the directory
/// read's when the filesystem gives one, else a `statat` (never following a symlink).
pub fn read_dir_at(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<DirItem>, ToolError> {
    let reader = Dir::read_from(dir).map_err(|e| io_err("list", path, e))?;
    let mut out = Vec::new();
    for entry in reader {
        let entry = entry.map_err(|e| io_err("list", path, e))?;
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let name = OsStr::from_bytes(bytes).to_os_string();
        let mut file_type = entry.file_type();
        if file_type == FileType::Unknown
            && let Ok(meta) = stat_at(dir, &name, &path.join(&name))
        {
            file_type = meta.file_type;
        }
        out.push(DirItem { name, file_type });
    }
    Ok(out)
}

/// The folders of a tree opened from its root without following symlinks, keeping the chain of
/// handles from the root to the folder last opened: a breadth-first walk opens most folders with
/// one `openat` (siblings share their parents' handles) and holds at most depth + 1 handles.
pub struct DirTree<'f> {
    root: PathBuf,
    root_fd: OwnedFd,
    chain: Vec<(OsString, OwnedFd)>,
    fence: &'f dyn Fence,
}

impl<'f> DirTree<'f> {
    /// Opens the tree's root folder (see [`open_dir`]).
    pub fn open(root: &Path, fence: &'f dyn Fence) -> Result<Self, ToolError> {
        Ok(DirTree {
            root: root.to_path_buf(),
            root_fd: open_dir(root, fence)?,
            chain: Vec::new(),
            fence,
        })
    }

    /// The root's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The fence this tree checks against.
    pub fn fence(&self) -> &'f dyn Fence {
        self.fence
    }

    /// The handle of the folder `rel` below the root (`""` is the root), opened component by
    /// component without following symlinks, each checked against the fence.
    pub fn dir(&mut self, rel: &Path) -> Result<BorrowedFd<'_>, ToolError> {
        let names: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let common = self
            .chain
            .iter()
            .zip(&names)
            .take_while(|((open, _), want)| open.as_os_str() == **want)
            .count();
        self.chain.truncate(common);
        let mut path = self.root.clone();
        for n in &names[..common] {
            path.push(n);
        }
        for name in &names[common..] {
            path.push(name);
            let parent = self
                .chain
                .last()
                .map_or(self.root_fd.as_fd(), |(_, fd)| fd.as_fd());
            let fd = open_subdir(parent, name, &path, self.fence)?;
            self.chain.push((name.to_os_string(), fd));
        }
        Ok(self
            .chain
            .last()
            .map_or(self.root_fd.as_fd(), |(_, fd)| fd.as_fd()))
    }
}

/// Renames `from_name` in `from_dir` to `to_name` in `to_dir`, never replacing what is there
/// (`renameat2(RENAME_NOREPLACE)` on Linux, `renameatx_np(RENAME_EXCL)` on macOS). On a
/// filesystem without that flag it checks, then renames: the one gap left is a file created at
/// the destination between the two.
pub fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from_name: &OsStr,
    to_dir: BorrowedFd<'_>,
    to_name: &OsStr,
) -> Result<(), Errno> {
    match rustix::fs::renameat_with(from_dir, from_name, to_dir, to_name, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => {
            match rustix::fs::statat(to_dir, to_name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => Err(Errno::EXIST),
                Err(Errno::NOENT) => rustix::fs::renameat(from_dir, from_name, to_dir, to_name),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

/// Copies the file, folder or symlink `src_name` in `src_dir` to the new name `dst_name` in
/// `dst_dir` (which must not exist), keeping permissions and modification times. Symlinks are
/// copied as symlinks, never followed; every file and folder read is checked against `fence`;
/// special files are refused.
pub fn copy_tree_at(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    src_path: &Path,
    dst_dir: BorrowedFd<'_>,
    dst_name: &OsStr,
    dst_path: &Path,
    fence: &dyn Fence,
) -> Result<(), ToolError> {
    let meta = stat_at(src_dir, src_name, src_path)?;
    check_id(meta.id, src_path, fence)?;
    match meta.file_type {
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(src_dir, src_name, Vec::new())
                .map_err(|e| io_err("copy", src_path, e))?;
            rustix::fs::symlinkat(target.as_c_str(), dst_dir, dst_name)
                .map_err(|e| io_err("copy", dst_path, e))
        }
        FileType::Directory => {
            let src = open_subdir(src_dir, src_name, src_path, fence)?;
            rustix::fs::mkdirat(dst_dir, dst_name, Mode::RWXU)
                .map_err(|e| io_err("create", dst_path, e))?;
            let dst = open_subdir(dst_dir, dst_name, dst_path, &NoFence)?;
            for item in read_dir_at(src.as_fd(), src_path)? {
                copy_tree_at(
                    src.as_fd(),
                    &item.name,
                    &src_path.join(&item.name),
                    dst.as_fd(),
                    &item.name,
                    &dst_path.join(&item.name),
                    fence,
                )?;
            }
            rustix::fs::fchmod(&dst, Mode::from_raw_mode(meta.mode as _))
                .map_err(|e| io_err("copy", dst_path, e))
        }
        FileType::RegularFile => {
            let (mut src, _) = open_file_at(src_dir, src_name, src_path, fence)?;
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(dst_dir, dst_name, flags, Mode::RUSR | Mode::WUSR)
                .map_err(|e| io_err("create", dst_path, e))?;
            let mut dst = File::from(fd);
            std::io::copy(&mut src, &mut dst).map_err(|e| ToolError::io("copy", src_path, e))?;
            use std::os::unix::fs::PermissionsExt;
            dst.set_permissions(std::fs::Permissions::from_mode(meta.mode))
                .map_err(|e| ToolError::io("copy", dst_path, e))?;
            // Keep the modification time: "newest files" must not change because a file moved.
            if let Some(mtime) = meta.modified {
                let _ = dst.set_modified(mtime);
            }
            Ok(())
        }
        other => Err(ToolError::Refused {
            path: src_path.to_path_buf(),
            reason: format!(
                "is {} and cannot be copied to another disk",
                describe(other)
            ),
        }),
    }
}

/// Removes `name` in `dir` and, for a folder, everything in it, never following a symlink.
/// Removing what is already gone is not an error.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<(), ToolError> {
    let meta = match stat_at(dir, name, path) {
        Ok(m) => m,
        Err(ToolError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        let sub = open_subdir(dir, name, path, &NoFence)?;
        for item in read_dir_at(sub.as_fd(), path)? {
            remove_tree_at(sub.as_fd(), &item.name, &path.join(&item.name))?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())
    }
    .map_err(|e| io_err("remove", path, e))
}

/// Makes a rename in `dir` durable. Best effort: some filesystems cannot sync folders.
pub fn sync_dir(dir: BorrowedFd<'_>) {
    let _ = rustix::fs::fsync(dir);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::io::Read;

    use super::*;

    struct Ids(HashMap<FileId, PathBuf>);

    impl Fence for Ids {
        fn secret(&self, id: FileId) -> Option<&Path> {
            self.0.get(&id).map(PathBuf::as_path)
        }
    }

    fn id_of(p: &Path) -> FileId {
        FileId::of_metadata(&std::fs::symlink_metadata(p).unwrap())
    }

    fn canonical_tmp() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = std::fs::canonicalize(t.path()).unwrap();
        (t, p)
    }

    #[test]
    fn a_symlink_swapped_in_on_the_way_fails_the_open() {
        let (_t, root) = canonical_tmp();
        let ssh = root.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::write(ssh.join("id_ed25519"), "KEY").unwrap();
        let inner = root.join("Projects/inner");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(inner.join("id_ed25519"), "decoy").unwrap();
        let checked = inner.join("id_ed25519");
        // The swap happens after the check, before the use.
        std::fs::rename(&inner, root.join("Projects/was-inner")).unwrap();
        std::os::unix::fs::symlink(&ssh, &inner).unwrap();
        let e = open_file(&checked, &NoFence).unwrap_err();
        assert!(
            matches!(&e, ToolError::Symlink { path } if *path == inner),
            "{e}"
        );
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // The final component too.
        std::os::unix::fs::symlink(ssh.join("id_ed25519"), root.join("link")).unwrap();
        assert!(matches!(
            open_file(&root.join("link"), &NoFence),
            Err(ToolError::Symlink { .. })
        ));
        assert!(matches!(
            open_dir(&inner, &NoFence),
            Err(ToolError::Symlink { .. })
        ));
        // A folder further up the way, swapped too.
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/f"), "f").unwrap();
        std::fs::rename(root.join("a"), root.join("a-old")).unwrap();
        std::os::unix::fs::symlink(root.join("a-old"), root.join("a")).unwrap();
        let e = open_file(&root.join("a/b/c/f"), &NoFence).unwrap_err();
        assert!(
            matches!(&e, ToolError::Symlink { path } if *path == root.join("a")),
            "{e}"
        );
    }

    /// A folder on the way that may be searched but not read (0711) is passed as a path string
    /// would be.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_search_only_folder_on_the_way_is_passed() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, root) = canonical_tmp();
        std::fs::create_dir_all(root.join("x/y")).unwrap();
        std::fs::write(root.join("x/y/f.txt"), "F").unwrap();
        std::fs::set_permissions(root.join("x"), std::fs::Permissions::from_mode(0o311)).unwrap();
        if std::fs::read_dir(root.join("x")).is_ok() {
            // Privileged (root): permissions do not apply, nothing to show here.
            std::fs::set_permissions(root.join("x"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            return;
        }
        let r = open_file(&root.join("x/y/f.txt"), &NoFence);
        std::fs::set_permissions(root.join("x"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (mut f, _) = r.unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "F");
    }

    #[test]
    fn special_files_are_refused_without_blocking_and_hard_links_by_identity() {
        let (_t, root) = canonical_tmp();
        let fifo = root.join("pipe");
        crate::tools::safe_fs::mkfifo(&fifo);
        let t0 = std::time::Instant::now();
        let e = open_file(&fifo, &NoFence).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(e.to_string().contains("named pipe (FIFO)"), "{e}");

        let key = root.join("id_ed25519");
        std::fs::write(&key, "KEY").unwrap();
        let link = root.join("notes.txt");
        std::fs::hard_link(&key, &link).unwrap();
        let fence = Ids([(id_of(&key), key.clone())].into());
        let e = open_file(&link, &fence).unwrap_err();
        assert!(
            matches!(&e, ToolError::SameAsSecret { secret, .. } if *secret == key),
            "{e}"
        );
        // A folder with a secret's identity is refused on the way through.
        let sub = root.join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("x"), "x").unwrap();
        let fence = Ids([(id_of(&sub), sub.clone())].into());
        assert!(matches!(
            open_file(&sub.join("x"), &fence),
            Err(ToolError::SameAsSecret { .. })
        ));
        let (mut f, meta) = open_file(&sub.join("x"), &NoFence).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), meta.size), ("x", 1));
    }

    #[test]
    fn rename_never_replaces_and_trees_copy_and_remove() {
        let (_t, root) = canonical_tmp();
        std::fs::write(root.join("a"), "A").unwrap();
        std::fs::write(root.join("b"), "B").unwrap();
        let dir = open_dir(&root, &NoFence).unwrap();
        assert_eq!(
            rename_noreplace(dir.as_fd(), OsStr::new("a"), dir.as_fd(), OsStr::new("b")),
            Err(Errno::EXIST)
        );
        assert_eq!(std::fs::read_to_string(root.join("b")).unwrap(), "B");
        rename_noreplace(dir.as_fd(), OsStr::new("a"), dir.as_fd(), OsStr::new("c")).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("c")).unwrap(), "A");

        let src = root.join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f.txt"), "F").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("l")).unwrap();
        copy_tree_at(
            dir.as_fd(),
            OsStr::new("src"),
            &src,
            dir.as_fd(),
            OsStr::new("dst"),
            &root.join("dst"),
            &NoFence,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("dst/d/f.txt")).unwrap(),
            "F"
        );
        assert_eq!(
            std::fs::read_link(root.join("dst/l")).unwrap(),
            Path::new("/etc/passwd")
        );
        remove_tree_at(dir.as_fd(), OsStr::new("src"), &src).unwrap();
        assert!(!src.exists());
        // Created folders on the way, refusing to pass a symlink.
        let deep = root.join("x/y/z");
        create_dir_all(&deep, &NoFence).unwrap();
        assert!(deep.is_dir());
        std::os::unix::fs::symlink(root.join("x"), root.join("lx")).unwrap();
        assert!(matches!(
            create_dir_all(&root.join("lx/new"), &NoFence),
            Err(ToolError::Symlink { .. })
        ));
        assert!(!root.join("x/new").exists());
    }

    #[test]
    fn the_tree_reuses_open_parents_and_refuses_swapped_links() {
        let (_t, root) = canonical_tmp();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("a/d")).unwrap();
        let mut tree = DirTree::open(&root, &NoFence).unwrap();
        tree.dir(Path::new("a/b/c")).unwrap();
        assert_eq!(tree.chain.len(), 3);
        tree.dir(Path::new("a/d")).unwrap();
        assert_eq!(tree.chain.len(), 2);
        let names: Vec<_> = read_dir_at(tree.dir(Path::new("a")).unwrap(), &root.join("a"))
            .unwrap()
            .into_iter()
            .map(|i| (i.name.into_string().unwrap(), i.file_type))
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.iter().all(|(_, t)| *t == FileType::Directory));
        std::fs::rename(root.join("a/d"), root.join("a/d2")).unwrap();
        std::os::unix::fs::symlink("/", root.join("a/d")).unwrap();
        let mut tree = DirTree::open(&root, &NoFence).unwrap();
        assert!(matches!(
            tree.dir(Path::new("a/d")),
            Err(ToolError::Symlink { .. })
        ));
    }

    #[test]
    fn relative_and_dotted_paths_are_refused() {
        assert!(matches!(
            open_dir(Path::new("relative/x"), &NoFence),
            Err(ToolError::Refused { .. })
        ));
        assert!(matches!(
            open_dir(Path::new("/tmp/../etc"), &NoFence),
            Err(ToolError::Refused { .. })
        ));
    }
}
