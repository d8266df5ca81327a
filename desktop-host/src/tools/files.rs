//! Files and folders: list, find, read the head of a text file, summarize a folder, move, and a
//! trash that never deletes anything for real.
//!
//! Every operation goes through [`safe_fs`]: paths are walked from `/` without following
//! symlinks and acted on relative to folder handles, so a symlink swapped in after the policy's
//! check fails the operation instead of redirecting it; every file and folder opened is checked
//! against the [`Fence`] of secret identities. Only regular files are ever opened for reading.
//!
//! Walks are breadth-first, bounded, and never follow symlinked directories (a link to `/` must
//! not turn a find in `~/Downloads` into a find of the whole disk); the caller's `skip` predicate
//! keeps folders out of them entirely, and walks never open anything but folders.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::FileType;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::ToolError;
use super::safe_fs::{self, DirTree, Fence, Meta, NoFence};

/// At most this many directory entries are looked at by one [`find`] or [`summarize`]: enough for
/// a large home folder, small enough to answer in seconds.
pub const MAX_VISITED: usize = 200_000;

/// What a directory entry is. Symlinks are reported as such, never followed.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (to anything).
    Symlink,
    /// A socket, pipe, device, …
    Other,
}

impl EntryKind {
    fn of(file_type: FileType) -> Self {
        match file_type {
            FileType::Symlink => EntryKind::Symlink,
            FileType::Directory => EntryKind::Dir,
            FileType::RegularFile => EntryKind::File,
            _ => EntryKind::Other,
        }
    }
}

/// One entry of a [`Listing`].
#[derive(Serialize, Debug, Clone)]
pub struct Entry {
    /// The file name (lossy UTF-8).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Last modification, unix milliseconds, if the filesystem knows it.
    pub modified: Option<u64>,
}

/// The entries of one directory: folders first, then files, each by name.
#[derive(Serialize, Debug, Clone)]
pub struct Listing {
    /// The directory listed.
    pub path: PathBuf,
    /// At most `limit` entries.
    pub entries: Vec<Entry>,
    /// How many entries the directory has in all.
    pub total: usize,
    /// True when `entries` stops short of `total`.
    pub truncated: bool,
}

/// Lists `dir`: folders first, then everything else, each group by name (case-insensitively).
/// Nothing in it is opened; sizes and times come from `statat` without following links.
pub fn list(dir: &Path, limit: usize, fence: &dyn Fence) -> Result<Listing, ToolError> {
    let fd = safe_fs::open_dir(dir, fence)?;
    let mut found: Vec<(EntryKind, String, OsString)> = safe_fs::read_dir_at(fd.as_fd(), dir)?
        .into_iter()
        .map(|i| {
            (
                EntryKind::of(i.file_type),
                i.name.to_string_lossy().into_owned(),
                i.name,
            )
        })
        .collect();
    found.sort_by(|(ka, a, _), (kb, b, _)| {
        (*kb == EntryKind::Dir)
            .cmp(&(*ka == EntryKind::Dir))
            .then_with(|| a.to_lowercase().cmp(&b.to_lowercase()))
            .then_with(|| a.cmp(b))
    });
    let total = found.len();
    let entries = found
        .into_iter()
        .take(limit)
        .map(|(kind, name, raw)| {
            let meta = safe_fs::stat_at(fd.as_fd(), &raw, &dir.join(&raw)).ok();
            Entry {
                size: meta.map_or(0, |m| m.size),
                modified: meta.and_then(|m| m.modified).map(unix_ms),
                name,
                kind,
            }
        })
        .collect();
    Ok(Listing {
        path: dir.to_path_buf(),
        entries,
        total,
        truncated: total > limit,
    })
}

/// One match of a [`find`].
#[derive(Serialize, Debug, Clone)]
pub struct Found {
    /// Full path (the root joined with the path below it).
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, unix milliseconds.
    pub modified: Option<u64>,
}

/// What a [`find`] found.
#[derive(Serialize, Debug, Clone)]
pub struct FindResult {
    /// Matches, shallowest first.
    pub matches: Vec<Found>,
    /// Directory entries looked at.
    pub visited: usize,
    /// Subfolders that could not be read (permissions, races, secrets by identity) and were
    /// left out.
    pub unreadable_dirs: usize,
    /// True when the search stopped early (result limit or [`MAX_VISITED`]), so there may be more.
    pub truncated: bool,
}

/// Finds entries under `root` whose name matches `pattern`, case-insensitively: `*` is any run of
/// characters and `?` one character; a pattern without either matches names containing it.
/// Breadth-first, so the shallowest matches come first; paths for which `skip` is true are
/// neither reported nor entered.
pub fn find(
    pattern: &str,
    root: &Path,
    limit: usize,
    skip: &dyn Fn(&Path) -> bool,
    fence: &dyn Fence,
) -> Result<FindResult, ToolError> {
    find_bounded(pattern, root, limit, MAX_VISITED, skip, fence)
}

fn find_bounded(
    pattern: &str,
    root: &Path,
    limit: usize,
    max_visited: usize,
    skip: &dyn Fn(&Path) -> bool,
    fence: &dyn Fence,
) -> Result<FindResult, ToolError> {
    let pattern = NamePattern::new(pattern);
    let mut result = FindResult {
        matches: Vec::new(),
        visited: 0,
        unreadable_dirs: 0,
        truncated: false,
    };
    let mut walk = Walk::new(root, max_visited, skip, fence)?;
    while let Some(item) = walk.next_entry() {
        if !pattern.matches(&item.name) {
            continue;
        }
        if result.matches.len() == limit {
            result.truncated = true;
            break;
        }
        let meta = walk.stat(&item);
        result.matches.push(Found {
            size: meta.map_or(0, |m| m.size),
            modified: meta.and_then(|m| m.modified).map(unix_ms),
            path: item.path,
            kind: item.kind,
        });
    }
    result.visited = walk.visited;
    result.unreadable_dirs = walk.unreadable_dirs;
    result.truncated |= walk.hit_bound;
    Ok(result)
}

/// A case-insensitive file-name glob: `*` any run of characters, `?` one character.
struct NamePattern {
    chars: Vec<char>,
    substring: bool,
}

impl NamePattern {
    /// A glob; without `*` or `?` it matches names that hold it (what `find` wants).
    fn new(pattern: &str) -> Self {
        let lower = pattern.to_lowercase();
        NamePattern {
            substring: !lower.contains(['*', '?']),
            chars: lower.chars().collect(),
        }
    }

    /// Whether `name` matches, ignoring case.
    fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.to_lowercase().chars().collect();
        if self.substring {
            return self.chars.is_empty()
                || name.windows(self.chars.len()).any(|w| w == self.chars);
        }
        glob_match(&self.chars, &name)
    }
}

/// Iterative wildcard match with single-star backtracking: linear in practice, never exponential.
fn glob_match(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// One entry met by a [`Walk`].
struct WalkItem {
    path: PathBuf,
    /// Path relative to the walk's root.
    rel: PathBuf,
    /// The folder it is in, relative to the root.
    parent: PathBuf,
    raw_name: OsString,
    name: String,
    kind: EntryKind,
    depth: usize,
}

/// A breadth-first, bounded walk that never follows symlinks, never enters skipped paths and
/// opens nothing but folders (each through [`DirTree`], so a symlink swapped in is not entered).
/// Entries of each folder come in name order, so results are stable from run to run.
struct Walk<'a> {
    tree: DirTree<'a>,
    queue: VecDeque<(PathBuf, usize)>,
    current: std::vec::IntoIter<WalkItem>,
    skip: &'a dyn Fn(&Path) -> bool,
    max_visited: usize,
    visited: usize,
    unreadable_dirs: usize,
    hit_bound: bool,
}

impl<'a> Walk<'a> {
    fn new(
        root: &Path,
        max_visited: usize,
        skip: &'a dyn Fn(&Path) -> bool,
        fence: &'a dyn Fence,
    ) -> Result<Self, ToolError> {
        let mut tree = DirTree::open(root, fence)?;
        // The root itself must be readable; unreadable subfolders are only counted.
        let items = Self::read(&mut tree, Path::new(""), 1)?;
        Ok(Walk {
            tree,
            queue: VecDeque::new(),
            current: items.into_iter(),
            skip,
            max_visited,
            visited: 0,
            unreadable_dirs: 0,
            hit_bound: false,
        })
    }

    fn read(tree: &mut DirTree<'_>, rel: &Path, depth: usize) -> Result<Vec<WalkItem>, ToolError> {
        let root = tree.root().to_path_buf();
        let dir_path = root.join(rel);
        let fd = tree.dir(rel)?;
        let mut items: Vec<WalkItem> = safe_fs::read_dir_at(fd, &dir_path)?
            .into_iter()
            .map(|i| WalkItem {
                path: dir_path.join(&i.name),
                rel: rel.join(&i.name),
                parent: rel.to_path_buf(),
                name: i.name.to_string_lossy().into_owned(),
                raw_name: i.name,
                kind: EntryKind::of(i.file_type),
                depth,
            })
            .collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }

    fn next_entry(&mut self) -> Option<WalkItem> {
        loop {
            if let Some(item) = self.current.next() {
                if self.visited >= self.max_visited {
                    self.hit_bound = true;
                    return None;
                }
                self.visited += 1;
                if (self.skip)(&item.path) {
                    continue;
                }
                if item.kind == EntryKind::Dir {
                    self.queue.push_back((item.rel.clone(), item.depth + 1));
                }
                return Some(item);
            }
            let (dir, depth) = self.queue.pop_front()?;
            match Self::read(&mut self.tree, &dir, depth) {
                Ok(items) => self.current = items.into_iter(),
                Err(_) => self.unreadable_dirs += 1,
            }
        }
    }

    /// `statat` of an item relative to its folder's handle (never following a link).
    fn stat(&mut self, item: &WalkItem) -> Option<Meta> {
        let fd = self.tree.dir(&item.parent).ok()?;
        safe_fs::stat_at(fd, &item.raw_name, &item.path).ok()
    }
}

/// The head of a text file.
#[derive(Serialize, Debug, Clone)]
pub struct TextHead {
    /// The file.
    pub path: PathBuf,
    /// The first lines, at most `max_bytes` and `max_lines`.
    pub text: String,
    /// Size of the whole file in bytes.
    pub total_size: u64,
    /// True when `text` is not the whole file.
    pub truncated: bool,
}

/// Reads the beginning of the text file at `path`: at most `max_bytes` bytes and `max_lines`
/// lines. Only a regular file is opened (a FIFO, socket or device is refused up front, so a read
/// never blocks), never through a symlink, and never one whose identity is behind the fence.
/// Refuses files that are not text (a NUL byte or invalid UTF-8 in what was read); a multi-byte
/// character cut by the byte limit is dropped, not counted as binary.
pub fn read_head(
    path: &Path,
    max_bytes: usize,
    max_lines: usize,
    fence: &dyn Fence,
) -> Result<TextHead, ToolError> {
    let (file, meta) = safe_fs::open_file(path, fence)?;
    head_of(file, meta, path, max_bytes, max_lines)
}

fn head_of(
    file: File,
    meta: Meta,
    path: &Path,
    max_bytes: usize,
    max_lines: usize,
) -> Result<TextHead, ToolError> {
    let mut buf = Vec::with_capacity(max_bytes.min(1 << 20) + 1);
    // One byte more than asked tells "exactly max_bytes long" from "longer".
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ToolError::io("read", path, e))?;
    let mut truncated = buf.len() > max_bytes;
    buf.truncate(max_bytes);
    let not_text = |reason| ToolError::NotText {
        path: path.to_path_buf(),
        reason,
    };
    if buf.contains(&0) {
        return Err(not_text("binary content"));
    }
    let text = match std::str::from_utf8(&buf) {
        Ok(t) => t,
        // Only a character cut off at the very end of a truncated read is forgiven.
        Err(e) if e.error_len().is_none() && truncated => {
            std::str::from_utf8(&buf[..e.valid_up_to()]).map_err(|_| not_text("not UTF-8"))?
        }
        Err(_) => return Err(not_text("not valid UTF-8")),
    };
    let end = match max_lines.checked_sub(1) {
        None => 0,
        Some(n) => text
            .match_indices('\n')
            .nth(n)
            .map_or(text.len(), |(i, _)| i + 1),
    };
    truncated |= end < text.len();
    Ok(TextHead {
        path: path.to_path_buf(),
        text: text[..end].to_string(),
        total_size: meta.size,
        truncated,
    })
}

/// How many files of one type a folder holds.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TypeCount {
    /// The extension, lower-cased, without the dot; `""` for files without one.
    pub ext: String,
    /// Number of files.
    pub count: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// A file singled out by a [`Summary`].
#[derive(Serialize, Debug, Clone)]
pub struct FileStat {
    /// Path relative to the summarized folder.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, unix milliseconds.
    pub modified: Option<u64>,
}

/// The first lines of a text file at the top of a summarized folder.
#[derive(Serialize, Debug, Clone)]
pub struct Preview {
    /// The file name.
    pub name: String,
    /// Its first lines, cut to [`PREVIEW_CHARS`] characters in all.
    pub lines: Vec<String>,
}

/// Files of each type listed in a [`Summary`].
pub const TOP_TYPES: usize = 8;
/// Largest and newest files listed in a [`Summary`].
pub const TOP_FILES: usize = 5;
/// Text files previewed in a [`Summary`].
pub const PREVIEW_FILES: usize = 5;
/// Lines per preview.
pub const PREVIEW_LINES: usize = 3;
/// Characters per preview.
pub const PREVIEW_CHARS: usize = 200;

/// What a folder holds, in a few numbers and names.
#[derive(Serialize, Debug, Clone)]
pub struct Summary {
    /// The folder.
    pub path: PathBuf,
    /// Regular files, at every depth.
    pub files: u64,
    /// Folders below it.
    pub dirs: u64,
    /// Symbolic links (not followed).
    pub symlinks: u64,
    /// Total size of the regular files in bytes.
    pub total_bytes: u64,
    /// Most common file types, most files first, at most [`TOP_TYPES`].
    pub by_type: Vec<TypeCount>,
    /// Largest files, largest first.
    pub largest: Vec<FileStat>,
    /// Most recently modified files, newest first.
    pub newest: Vec<FileStat>,
    /// The first lines of a few text files at the top level.
    pub previews: Vec<Preview>,
    /// Subfolders that could not be read.
    pub unreadable_dirs: usize,
    /// True when the walk stopped at [`MAX_VISITED`] entries: the numbers are lower bounds.
    pub truncated: bool,
}

/// Summarizes `dir` recursively (bounded by [`MAX_VISITED`] entries, never following symlinks,
/// never entering what `skip` names). `skip_content` names the files whose first lines must not
/// be previewed (on top of `skip`); previews open regular files only, checked against `fence`.
pub fn summarize(
    dir: &Path,
    skip: &dyn Fn(&Path) -> bool,
    skip_content: &dyn Fn(&Path) -> bool,
    fence: &dyn Fence,
) -> Result<Summary, ToolError> {
    summarize_bounded(dir, MAX_VISITED, skip, skip_content, fence)
}

fn summarize_bounded(
    dir: &Path,
    max_visited: usize,
    skip: &dyn Fn(&Path) -> bool,
    skip_content: &dyn Fn(&Path) -> bool,
    fence: &dyn Fence,
) -> Result<Summary, ToolError> {
    let mut s = Summary {
        path: dir.to_path_buf(),
        files: 0,
        dirs: 0,
        symlinks: 0,
        total_bytes: 0,
        by_type: Vec::new(),
        largest: Vec::new(),
        newest: Vec::new(),
        previews: Vec::new(),
        unreadable_dirs: 0,
        truncated: false,
    };
    let mut types: HashMap<String, (u64, u64)> = HashMap::new();
    let mut top_level_files = Vec::new();
    let mut walk = Walk::new(dir, max_visited, skip, fence)?;
    while let Some(item) = walk.next_entry() {
        match item.kind {
            EntryKind::Dir => s.dirs += 1,
            EntryKind::Symlink => s.symlinks += 1,
            EntryKind::Other => {}
            EntryKind::File => {
                let meta = walk.stat(&item);
                let size = meta.map_or(0, |m| m.size);
                let stat = FileStat {
                    path: item.rel,
                    size,
                    modified: meta.and_then(|m| m.modified).map(unix_ms),
                };
                s.files += 1;
                s.total_bytes += size;
                let ext = Path::new(&item.name)
                    .extension()
                    .map(|e| e.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                let t = types.entry(ext).or_default();
                t.0 += 1;
                t.1 += size;
                keep_top(&mut s.largest, stat.clone(), |f| (f.size, f.modified));
                keep_top(&mut s.newest, stat, |f| (f.modified.unwrap_or(0), f.size));
                if item.depth == 1 && !skip_content(&item.path) {
                    top_level_files.push((item.raw_name, item.path));
                }
            }
        }
    }
    s.unreadable_dirs = walk.unreadable_dirs;
    s.truncated = walk.hit_bound;
    let mut by_type: Vec<TypeCount> = types
        .into_iter()
        .map(|(ext, (count, bytes))| TypeCount { ext, count, bytes })
        .collect();
    by_type.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.ext.cmp(&b.ext)));
    by_type.truncate(TOP_TYPES);
    s.by_type = by_type;
    let fence = walk.tree.fence();
    let root = walk.tree.dir(Path::new(""))?;
    // Trying a bounded number keeps a folder of 10,000 images from costing 10,000 opens.
    for (name, path) in top_level_files.iter().take(PREVIEW_FILES * 4) {
        if s.previews.len() == PREVIEW_FILES {
            break;
        }
        let Ok((file, meta)) = safe_fs::open_file_at(root, name, path, fence) else {
            continue;
        };
        let Ok(head) = head_of(file, meta, path, 4096, PREVIEW_LINES) else {
            continue;
        };
        let mut budget = PREVIEW_CHARS;
        let mut lines = Vec::new();
        for line in head.text.lines() {
            if budget == 0 {
                break;
            }
            let cut: String = line.chars().take(budget).collect();
            budget -= cut.chars().count();
            lines.push(cut);
        }
        if lines.iter().all(|l| l.trim().is_empty()) {
            continue;
        }
        s.previews.push(Preview {
            name: name.to_string_lossy().into_owned(),
            lines,
        });
    }
    Ok(s)
}

/// Inserts `item` into `top` (sorted by `key`, greatest first), keeping at most [`TOP_FILES`].
fn keep_top<K: Ord>(top: &mut Vec<FileStat>, item: FileStat, key: impl Fn(&FileStat) -> K) {
    let k = key(&item);
    let at = top.iter().position(|t| key(t) < k).unwrap_or(top.len());
    if at < TOP_FILES {
        top.insert(at, item);
        top.truncate(TOP_FILES);
    }
}

impl Summary {
    /// A few short lines a phone can show, e.g.
    /// `projects: 120 files in 14 folders, 3.4 MB` then types, largest, newest and previews.
    pub fn to_text(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        let mut out = format!(
            "{name}: {} in {}, {}",
            plural(self.files, "file", "files"),
            plural(self.dirs, "folder", "folders"),
            human_size(self.total_bytes)
        );
        if self.symlinks > 0 {
            out.push_str(&format!(
                ", {} (not followed)",
                plural(self.symlinks, "link", "links")
            ));
        }
        if self.truncated {
            out.push_str(&format!(" (partial: stopped after {MAX_VISITED} entries)"));
        }
        if self.unreadable_dirs > 0 {
            out.push_str(&format!(
                " ({} unreadable)",
                plural(self.unreadable_dirs as u64, "folder", "folders")
            ));
        }
        if !self.by_type.is_empty() {
            let types: Vec<String> = self
                .by_type
                .iter()
                .map(|t| {
                    let ext = if t.ext.is_empty() {
                        "no extension"
                    } else {
                        &t.ext
                    };
                    format!("{ext} {}", t.count)
                })
                .collect();
            out.push_str(&format!("\nTypes: {}", types.join(", ")));
        }
        if !self.largest.is_empty() {
            let largest: Vec<String> = self
                .largest
                .iter()
                .map(|f| format!("{} ({})", f.path.display(), human_size(f.size)))
                .collect();
            out.push_str(&format!("\nLargest: {}", largest.join(", ")));
        }
        if !self.newest.is_empty() {
            let newest: Vec<String> = self
                .newest
                .iter()
                .map(|f| f.path.display().to_string())
                .collect();
            out.push_str(&format!("\nNewest: {}", newest.join(", ")));
        }
        for p in &self.previews {
            out.push_str(&format!("\n{}: {}", p.name, p.lines.join(" / ")));
        }
        out
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `1536` → `1.5 KB`: binary multiples, the way file managers show sizes.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// Bounds of a [`visit_contents`] walk.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Entries looked at, at most.
    pub max_entries: usize,
    /// Time spent, at most.
    pub max_time: Duration,
}

/// Why a [`visit_contents`] walk stopped before it saw everything.
#[derive(Debug, thiserror::Error)]
pub enum ContentsError {
    /// More entries than [`Bounds::max_entries`].
    #[error("it holds more than {limit} entries")]
    TooMany {
        /// The bound.
        limit: usize,
    },
    /// The walk took longer than [`Bounds::max_time`].
    #[error("going through it took longer than {} s", .limit.as_secs_f32())]
    TooSlow {
        /// The bound.
        limit: Duration,
    },
    /// The visitor stopped the walk, with its reason.
    #[error("{0}")]
    Stopped(String),
    /// A folder could not be opened or read (a symlink swapped in, a secret's identity,
    /// permissions): what it holds is unknown.
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// Visits everything inside the folder `root` (not `root` itself), breadth-first, never
/// following symlinks, each entry with its path relative to `root`, its full path and its
/// `statat` (for its identity). A folder that cannot be opened or read stops the walk with an
/// error — what a move carries must be known whole — and so do the bounds.
pub fn visit_contents(
    root: &Path,
    bounds: Bounds,
    fence: &dyn Fence,
    visit: &mut dyn FnMut(&Path, &Path, &Meta) -> ControlFlow<String>,
) -> Result<usize, ContentsError> {
    let started = Instant::now();
    let mut tree = DirTree::open(root, fence)?;
    let mut queue: VecDeque<PathBuf> = VecDeque::from([PathBuf::new()]);
    let mut seen = 0usize;
    while let Some(rel) = queue.pop_front() {
        let dir_path = root.join(&rel);
        let fd = tree.dir(&rel)?;
        let items = safe_fs::read_dir_at(fd, &dir_path)?;
        for item in items {
            seen += 1;
            if seen > bounds.max_entries {
                return Err(ContentsError::TooMany {
                    limit: bounds.max_entries,
                });
            }
            if seen.is_multiple_of(256) && started.elapsed() > bounds.max_time {
                return Err(ContentsError::TooSlow {
                    limit: bounds.max_time,
                });
            }
            let item_rel = rel.join(&item.name);
            let path = root.join(&item_rel);
            let meta = safe_fs::stat_at(fd, &item.name, &path)?;
            if let ControlFlow::Break(why) = visit(&item_rel, &path, &meta) {
                return Err(ContentsError::Stopped(why));
            }
            if meta.is_dir() {
                queue.push_back(item_rel);
            }
        }
    }
    if started.elapsed() > bounds.max_time {
        return Err(ContentsError::TooSlow {
            limit: bounds.max_time,
        });
    }
    Ok(seen)
}

/// Moves `from` to `to`, or into `to` when `to` is an existing folder; returns where it went.
/// See [`move_exact`].
pub fn move_path(from: &Path, to: &Path, fence: &dyn Fence) -> Result<PathBuf, ToolError> {
    let (to_dir, to_name) = safe_fs::open_parent(to, fence)?;
    let dest = match safe_fs::stat_at(to_dir.as_fd(), &to_name, to) {
        Ok(m) if m.is_dir() => {
            let name = from.file_name().ok_or_else(|| ToolError::Refused {
                path: from.to_path_buf(),
                reason: "has no file name to move".into(),
            })?;
            to.join(name)
        }
        _ => to.to_path_buf(),
    };
    move_exact(from, &dest, fence)?;
    Ok(dest)
}

/// Moves `from` to exactly `dest` (both absolute and canonical), never overwriting and never
/// following a symlink on either path: the rename happens relative to the handles of the two
/// parent folders, which were opened component by component from `/`. The item moved must not
/// be a secret by identity. Across filesystems it copies, then removes the original; the copy
/// appears at the destination only once complete.
pub fn move_exact(from: &Path, dest: &Path, fence: &dyn Fence) -> Result<(), ToolError> {
    if dest == from {
        return Err(ToolError::Refused {
            path: from.to_path_buf(),
            reason: "is already there".into(),
        });
    }
    if dest.starts_with(from) {
        return Err(ToolError::Refused {
            path: from.to_path_buf(),
            reason: "cannot be moved into itself".into(),
        });
    }
    let (from_dir, from_name) = safe_fs::open_parent(from, fence)?;
    let (to_dir, to_name) = safe_fs::open_parent(dest, fence)?;
    move_at(
        (from_dir.as_fd(), &from_name, from),
        (to_dir.as_fd(), &to_name, dest),
        fence,
    )
}

/// A name inside an open folder, with its full path for messages.
type At<'a> = (BorrowedFd<'a>, &'a OsStr, &'a Path);

fn move_at(from: At<'_>, to: At<'_>, fence: &dyn Fence) -> Result<(), ToolError> {
    let (from_dir, from_name, from_path) = from;
    let (to_dir, to_name, to_path) = to;
    let meta = safe_fs::stat_at(from_dir, from_name, from_path)?;
    safe_fs::check_id(meta.id, from_path, fence)?;
    match safe_fs::rename_noreplace(from_dir, from_name, to_dir, to_name) {
        Ok(()) => {
            safe_fs::sync_dir(to_dir);
            Ok(())
        }
        Err(Errno::EXIST | Errno::NOTEMPTY) => Err(ToolError::DestinationExists {
            path: to_path.to_path_buf(),
        }),
        Err(Errno::XDEV) => copy_then_remove(from, to, fence),
        Err(e) => Err(ToolError::io("move", from_path, std::io::Error::from(e))),
    }
}

/// The cross-filesystem move: [`copy_into_place`], then remove the original. A crash leaves
/// the original intact (and at worst a hidden partial copy), never a half-copied file under the
/// real name.
fn copy_then_remove(from: At<'_>, to: At<'_>, fence: &dyn Fence) -> Result<(), ToolError> {
    let (from_dir, from_name, from_path) = from;
    copy_into_place(from, to, fence)?;
    safe_fs::remove_tree_at(from_dir, from_name, from_path)
}

/// Copies `from` to a hidden name next to the destination, then renames it into place (never
/// replacing anything): the copy appears under its real name only once complete.
fn copy_into_place(from: At<'_>, to: At<'_>, fence: &dyn Fence) -> Result<(), ToolError> {
    let (from_dir, from_name, from_path) = from;
    let (to_dir, to_name, to_path) = to;
    let partial = partial_name(to_name);
    let partial_path = to_path.with_file_name(&partial);
    let cleanup = || {
        let _ = safe_fs::remove_tree_at(to_dir, &partial, &partial_path);
    };
    if let Err(e) = safe_fs::copy_tree_at(
        from_dir,
        from_name,
        from_path,
        to_dir,
        &partial,
        &partial_path,
        fence,
    ) {
        cleanup();
        return Err(e);
    }
    match safe_fs::rename_noreplace(to_dir, &partial, to_dir, to_name) {
        Ok(()) => {}
        Err(Errno::EXIST | Errno::NOTEMPTY) => {
            cleanup();
            return Err(ToolError::DestinationExists {
                path: to_path.to_path_buf(),
            });
        }
        Err(e) => {
            cleanup();
            return Err(ToolError::io("copy", to_path, std::io::Error::from(e)));
        }
    }
    safe_fs::sync_dir(to_dir);
    Ok(())
}

/// A hidden name next to `name` for something being written: `.<name>.deskhand-partial-<hex>`.
fn partial_name(name: &OsStr) -> OsString {
    OsString::from(format!(
        ".{}.deskhand-partial-{}",
        name.to_string_lossy(),
        hex_id()
    ))
}

/// Copies `from` (a file, a folder with everything in it, or a symlink as a symlink) to exactly
/// `dest` (both absolute and canonical), never overwriting and never following a symlink on
/// either path; every file and folder read is checked against `fence`. The copy appears at
/// `dest` only once complete (it is copied to a hidden name first). How much a folder holds is bounded by
/// the policy, which walks it whole before the call ([`crate::policy::CARRY_BOUNDS`]).
pub fn copy_exact(from: &Path, dest: &Path, fence: &dyn Fence) -> Result<(), ToolError> {
    if dest == from {
        return Err(ToolError::Refused {
            path: from.to_path_buf(),
            reason: "cannot be copied onto itself".into(),
        });
    }
    if dest.starts_with(from) {
        return Err(ToolError::Refused {
            path: from.to_path_buf(),
            reason: "cannot be copied into itself".into(),
        });
    }
    let (from_dir, from_name) = safe_fs::open_parent(from, fence)?;
    let (to_dir, to_name) = safe_fs::open_parent(dest, fence)?;
    match safe_fs::stat_at(to_dir.as_fd(), &to_name, dest) {
        Ok(_) => {
            return Err(ToolError::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        Err(ToolError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    copy_into_place(
        (from_dir.as_fd(), &from_name, from),
        (to_dir.as_fd(), &to_name, dest),
        fence,
    )
}

/// Creates the folder `path` (absolute, canonical) and the missing folders above it, never
/// following a symlink (see [`safe_fs::create_dir_all`]). Returns whether it was created
/// (`false`: it already was a folder). Errors when something else is in the way.
pub fn make_dir(path: &Path, fence: &dyn Fence) -> Result<bool, ToolError> {
    match safe_fs::open_dir(path, fence) {
        Ok(_) => return Ok(false),
        Err(ToolError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    safe_fs::create_dir_all(path, fence)?;
    Ok(true)
}

/// The most one `write` puts in a file: 1 MiB of UTF-8 text.
pub const MAX_WRITE_BYTES: usize = 1024 * 1024;

/// What a [`write_text`] did.
#[derive(Debug, Clone)]
pub struct Written {
    /// Bytes written.
    pub bytes: usize,
    /// The file it replaced, now in the trash (restorable).
    pub replaced: Option<TrashEntry>,
}

/// Writes `content` as the whole of the text file at `path` (absolute, canonical), in a folder
/// that must exist. Atomic: the text goes to a hidden file in the same folder (created with
/// `O_EXCL | O_NOFOLLOW` relative to the folder's handle, synced), which is then renamed into
/// place without replacing anything. With `replace`, an existing regular file is moved to
/// `trash` first (so it can be restored; the new file keeps its permissions); without it, an
/// existing file is an error ([`ToolError::DestinationExists`]). A folder, symlink or special
/// file at `path` is never replaced, and nothing behind the `fence` is touched.
///
/// Errors: content over [`MAX_WRITE_BYTES`] or holding NUL ([`ToolError::Invalid`]), a
/// missing folder, and the usual file system errors. On error nothing is left behind but, if
/// the failure came after it, the old file in the trash.
pub fn write_text(
    path: &Path,
    content: &str,
    replace: bool,
    trash: &Trash,
    task: Option<&str>,
    fence: &dyn Fence,
) -> Result<Written, ToolError> {
    if content.len() > MAX_WRITE_BYTES {
        return Err(ToolError::Invalid {
            reason: format!(
                "the text is {} bytes; `write` writes at most {MAX_WRITE_BYTES} bytes (1 MiB) \
                 into one file",
                content.len()
            ),
        });
    }
    if content.contains('\0') {
        return Err(ToolError::Invalid {
            reason: "the text holds a NUL character; `write` writes text files only".into(),
        });
    }
    let (dir, name) = safe_fs::open_parent(path, fence)?;
    let old = match safe_fs::stat_at(dir.as_fd(), &name, path) {
        Ok(meta) => {
            if !replace {
                return Err(ToolError::DestinationExists {
                    path: path.to_path_buf(),
                });
            }
            match meta.file_type {
                FileType::RegularFile => {}
                FileType::Symlink => {
                    return Err(ToolError::Symlink {
                        path: path.to_path_buf(),
                    });
                }
                FileType::Directory => {
                    return Err(ToolError::NotAFile {
                        path: path.to_path_buf(),
                    });
                }
                other => {
                    return Err(ToolError::SpecialFile {
                        path: path.to_path_buf(),
                        kind: safe_fs::describe(other),
                    });
                }
            }
            safe_fs::check_id(meta.id, path, fence)?;
            Some(meta)
        }
        Err(ToolError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let partial = partial_name(&name);
    let partial_path = path.with_file_name(&partial);
    let flags = rustix::fs::OFlags::WRONLY
        | rustix::fs::OFlags::CREATE
        | rustix::fs::OFlags::EXCL
        | rustix::fs::OFlags::NOFOLLOW
        | rustix::fs::OFlags::CLOEXEC;
    // 0666 less the umask, as a new file gets from any editor.
    let mode = rustix::fs::Mode::from_raw_mode(0o666);
    let fd = rustix::fs::openat(dir.as_fd(), &partial, flags, mode)
        .map_err(|e| ToolError::io("create", &partial_path, std::io::Error::from(e)))?;
    let remove_partial = || {
        let _ = rustix::fs::unlinkat(dir.as_fd(), &partial, rustix::fs::AtFlags::empty());
    };
    let mut file = File::from(fd);
    let written = file
        .write_all(content.as_bytes())
        .and_then(|()| {
            if let Some(meta) = &old {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))?;
            }
            file.sync_all()
        })
        .map_err(|e| ToolError::io("write", path, e));
    if let Err(e) = written {
        remove_partial();
        return Err(e);
    }
    drop(file);
    let replaced = match old {
        Some(_) => match trash.trash(path, task, fence) {
            Ok(entry) => Some(entry),
            Err(e) => {
                remove_partial();
                return Err(e);
            }
        },
        None => None,
    };
    match safe_fs::rename_noreplace(dir.as_fd(), &partial, dir.as_fd(), &name) {
        Ok(()) => {}
        Err(e) => {
            remove_partial();
            return Err(match e {
                Errno::EXIST | Errno::NOTEMPTY => ToolError::DestinationExists {
                    path: path.to_path_buf(),
                },
                e => ToolError::io("write", path, std::io::Error::from(e)),
            });
        }
    }
    safe_fs::sync_dir(dir.as_fd());
    Ok(Written {
        bytes: content.len(),
        replaced,
    })
}

/// One page of a text file's lines.
#[derive(Serialize, Debug, Clone)]
pub struct TextPage {
    /// The lines shown, each with its line break (the last one may have none).
    pub text: String,
    /// The first line shown, counted from 0.
    pub first_line: usize,
    /// How many lines are shown (a page cut by its byte bound ends with a partial line, counted).
    pub lines: usize,
    /// Lines in the whole file; `None` when the file is longer than [`MAX_SCAN_BYTES`] and was
    /// not counted to its end.
    pub total_lines: Option<usize>,
    /// The file's size in bytes.
    pub total_size: u64,
    /// True when the page was cut by its byte bound before `length` lines.
    pub cut: bool,
}

/// How far a [`read_lines`] reads to count a file's lines: 64 MiB.
pub const MAX_SCAN_BYTES: u64 = 64 * 1024 * 1024;

/// Reads lines `offset..offset + length` (counted from 0) of the text file at `path`, at most
/// `max_bytes` bytes of them, and counts the file's lines (up to [`MAX_SCAN_BYTES`]). Opened
/// like [`read_head`]: a regular file only, never through a symlink, never a secret by
/// identity. Errors: a NUL byte anywhere read ([`ToolError::NotText`]), a page that is not
/// UTF-8 (a character cut by the byte bound is dropped, not an error).
pub fn read_lines(
    path: &Path,
    offset: usize,
    length: usize,
    max_bytes: usize,
    fence: &dyn Fence,
) -> Result<TextPage, ToolError> {
    let (file, meta) = safe_fs::open_file(path, fence)?;
    let not_text = |reason| ToolError::NotText {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = file.take(MAX_SCAN_BYTES);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut page = Vec::new();
    let (mut line, mut scanned, mut cut) = (0usize, 0u64, false);
    let mut last = b'\n';
    let end = offset.saturating_add(length);
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ToolError::io("read", path, e)),
        };
        let bytes = &chunk[..n];
        scanned += n as u64;
        if bytes.contains(&0) {
            return Err(not_text("binary content"));
        }
        for &b in bytes {
            if line >= offset && line < end && !cut {
                if page.len() < max_bytes {
                    page.push(b);
                } else {
                    cut = true;
                }
            }
            if b == b'\n' {
                line += 1;
            }
            last = b;
        }
    }
    let counted = scanned >= meta.size || scanned < MAX_SCAN_BYTES;
    let total_lines = counted.then_some(line + usize::from(last != b'\n'));
    let text = match String::from_utf8(page) {
        Ok(t) => t,
        Err(e) if cut && e.utf8_error().error_len().is_none() => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).map_err(|_| not_text("not valid UTF-8"))?
        }
        Err(_) => return Err(not_text("not valid UTF-8")),
    };
    let lines = text.lines().count();
    Ok(TextPage {
        text,
        first_line: offset,
        lines,
        total_lines,
        total_size: meta.size,
        cut,
    })
}

/// The bounds of a [`search`].
#[derive(Clone, Copy, Debug)]
pub struct SearchLimits {
    /// Matching lines returned, at most.
    pub max_results: usize,
    /// Directory entries looked at, at most.
    pub max_entries: usize,
    /// Files larger than this are skipped, in bytes.
    pub max_file_bytes: u64,
    /// Bytes read in all, at most.
    pub max_total_bytes: u64,
    /// Time spent, at most.
    pub max_time: Duration,
}

impl std::default::Default for SearchLimits {
    /// 100 results, 50,000 entries, files up to 4 MiB, 256 MiB in all, 20 s.
    fn default() -> Self {
        SearchLimits {
            max_results: 100,
            max_entries: 50_000,
            max_file_bytes: 4 * 1024 * 1024,
            max_total_bytes: 256 * 1024 * 1024,
            max_time: Duration::from_secs(20),
        }
    }
}

/// One matching line of a [`search`].
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The file.
    pub path: PathBuf,
    /// The line's number, counted from 1.
    pub line: usize,
    /// The line, at most [`HIT_CHARS`] characters of it.
    pub text: String,
}

/// A matching line is shown up to this many characters.
pub const HIT_CHARS: usize = 200;

/// What a [`search`] found.
#[derive(Serialize, Debug, Clone, Default)]
pub struct SearchResult {
    /// Matching lines, files in walk order (shallowest first), lines in file order.
    pub hits: Vec<Hit>,
    /// Files whose content was searched.
    pub files_searched: usize,
    /// Files left out because they are not UTF-8 text (binary) or larger than the bound.
    pub files_skipped: usize,
    /// True when a bound stopped the search (results, entries, bytes or time).
    pub truncated: bool,
}

/// Searches the text files under `root` (a folder, walked like [`find`], or one file) for lines
/// that contain `needle`, ignoring case. `skip_names` keeps paths out of the walk entirely (as
/// for [`find`]); `skip_content` keeps a file's content unread. Files are opened relative to
/// their folder's handle without following symlinks (symlinks are never searched) and checked
/// against `fence`; files with a NUL byte or invalid UTF-8 and files over
/// [`SearchLimits::max_file_bytes`] are skipped. Errors: an empty `needle`, a root that cannot
/// be opened.
pub fn search(
    needle: &str,
    root: &Path,
    limits: SearchLimits,
    skip_names: &dyn Fn(&Path) -> bool,
    skip_content: &dyn Fn(&Path) -> bool,
    fence: &dyn Fence,
) -> Result<SearchResult, ToolError> {
    if needle.is_empty() {
        return Err(ToolError::Invalid {
            reason: "`search` needs a text to look for".into(),
        });
    }
    let started = Instant::now();
    let needle = needle.to_lowercase();
    let mut result = SearchResult::default();
    let mut budget = limits.max_total_bytes;
    let (parent, name) = safe_fs::open_parent(root, fence)?;
    let root_meta = safe_fs::stat_at(parent.as_fd(), &name, root)?;
    if !root_meta.is_dir() {
        if skip_content(root) {
            return Ok(result);
        }
        let (file, meta) = safe_fs::open_file_at(parent.as_fd(), &name, root, fence)?;
        search_file(
            file,
            &meta,
            root,
            &needle,
            &limits,
            &mut budget,
            &mut result,
        )?;
        return Ok(result);
    }
    drop(parent);
    let mut walk = Walk::new(root, limits.max_entries, skip_names, fence)?;
    while let Some(item) = walk.next_entry() {
        if result.truncated {
            break;
        }
        if started.elapsed() > limits.max_time || budget == 0 {
            result.truncated = true;
            break;
        }
        if item.kind != EntryKind::File || skip_content(&item.path) {
            continue;
        }
        let Ok(fd) = walk.tree.dir(&item.parent) else {
            continue;
        };
        // A file that vanished, changed or is a secret by identity is left out, not fatal.
        let Ok((file, meta)) = safe_fs::open_file_at(fd, &item.raw_name, &item.path, fence) else {
            continue;
        };
        search_file(
            file,
            &meta,
            &item.path,
            &needle,
            &limits,
            &mut budget,
            &mut result,
        )?;
    }
    result.truncated |= walk.hit_bound;
    Ok(result)
}

/// Searches one opened file (see [`search`]); `needle` is lower-case.
fn search_file(
    file: File,
    meta: &Meta,
    path: &Path,
    needle: &str,
    limits: &SearchLimits,
    budget: &mut u64,
    result: &mut SearchResult,
) -> Result<(), ToolError> {
    if meta.size > limits.max_file_bytes {
        result.files_skipped += 1;
        return Ok(());
    }
    let mut buf = Vec::new();
    let allowed = limits.max_file_bytes.min(*budget);
    if let Err(e) = file.take(allowed).read_to_end(&mut buf) {
        tracing::debug!(path = %path.display(), "search could not read a file: {e}");
        result.files_skipped += 1;
        return Ok(());
    }
    *budget = budget.saturating_sub(buf.len() as u64);
    let Ok(text) = std::str::from_utf8(&buf) else {
        result.files_skipped += 1;
        return Ok(());
    };
    if buf.contains(&0) {
        result.files_skipped += 1;
        return Ok(());
    }
    result.files_searched += 1;
    for (i, line) in text.lines().enumerate() {
        if !line.to_lowercase().contains(needle) {
            continue;
        }
        if result.hits.len() == limits.max_results {
            result.truncated = true;
            return Ok(());
        }
        let shown: String = line
            .trim_end_matches('\r')
            .chars()
            .take(HIT_CHARS)
            .collect();
        result.hits.push(Hit {
            path: path.to_path_buf(),
            line: i + 1,
            text: shown,
        });
    }
    Ok(())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// 16 hex digits of OS randomness.
fn hex_id() -> String {
    deskhand_sync::node::random_bytes::<8>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A trashed file or folder.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// Short random hex id.
    pub id: String,
    /// Where it was, and where [`Trash::restore`] puts it back.
    pub original_path: PathBuf,
    /// When it was trashed, unix milliseconds.
    pub trashed_at: u64,
    /// The task that trashed it, if any.
    pub task_id: Option<String>,
}

/// A trash folder. `dir/<id>.json` records where each item came from; the item itself lives in
/// `dir/<id>/<original name>`. Nothing in it is ever deleted for real.
#[derive(Debug, Clone)]
pub struct Trash {
    dir: PathBuf,
}

impl Trash {
    /// A trash kept in `dir` (absolute; created on first use).
    pub fn new(dir: PathBuf) -> Self {
        Trash { dir }
    }

    /// The folder the trash lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the file or folder at `path` (absolute, canonical) into the trash, by a rename
    /// relative to folder handles (see [`move_exact`]); the item must not be a secret by
    /// identity (`fence`).
    ///
    /// The record of where it came from is written and synced *before* the move, so a crash can
    /// never leave an item in the trash with no way back. A record whose item never arrived is
    /// ignored by [`Trash::list`] and explained by [`Trash::restore`].
    pub fn trash(
        &self,
        path: &Path,
        task: Option<&str>,
        fence: &dyn Fence,
    ) -> Result<TrashEntry, ToolError> {
        let (src_dir, name) = safe_fs::open_parent(path, fence)?;
        safe_fs::stat_at(src_dir.as_fd(), &name, path)?;
        if self.dir.starts_with(path) || path.starts_with(&self.dir) {
            return Err(ToolError::Refused {
                path: path.to_path_buf(),
                reason: "is the trash or inside it; it cannot be trashed".into(),
            });
        }
        // The trash is the host's own folder: no fence (it is a protected location itself).
        let trash_fd = safe_fs::create_dir_all(&self.dir, &NoFence)?;
        let entry = TrashEntry {
            id: hex_id(),
            original_path: path.to_path_buf(),
            trashed_at: unix_ms(SystemTime::now()),
            task_id: task.map(str::to_string),
        };
        self.write_record(&entry)?;
        let slot = self.dir.join(&entry.id);
        let slot_name = OsString::from(&entry.id);
        let moved = rustix::fs::mkdirat(trash_fd.as_fd(), &slot_name, rustix::fs::Mode::RWXU)
            .map_err(|e| ToolError::io("create", &slot, std::io::Error::from(e)))
            .and_then(|()| safe_fs::open_subdir(trash_fd.as_fd(), &slot_name, &slot, &NoFence))
            .and_then(|slot_fd| {
                move_at(
                    (src_dir.as_fd(), &name, path),
                    (slot_fd.as_fd(), &name, &slot.join(&name)),
                    fence,
                )?;
                safe_fs::sync_dir(slot_fd.as_fd());
                Ok(())
            });
        if let Err(e) = moved {
            // Nothing moved: the record would only describe a trash item that does not exist.
            let _ = fs::remove_dir(&slot);
            let _ = fs::remove_file(self.record_path(&entry.id));
            return Err(e);
        }
        safe_fs::sync_dir(trash_fd.as_fd());
        Ok(entry)
    }

    /// What is in the trash, newest first. Records whose item never arrived (a crash between
    /// writing the record and moving) are left out.
    pub fn list(&self) -> Result<Vec<TrashEntry>, ToolError> {
        let mut entries: Vec<TrashEntry> = self
            .records()?
            .into_iter()
            .filter(|e| {
                self.payload(e)
                    .is_some_and(|p| fs::symlink_metadata(p).is_ok())
            })
            .collect();
        entries.sort_by(|a, b| {
            b.trashed_at
                .cmp(&a.trashed_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(entries)
    }

    /// Puts an item back where it was. `id_or_original_path` is a trash id or the path the item
    /// had (the newest such item wins). Refuses if something now exists at the original path;
    /// recreates the original's parent folder if it has gone. Neither path is followed through a
    /// symlink: a folder on the way swapped for a link fails the restore.
    pub fn restore(&self, id_or_original_path: &str) -> Result<TrashEntry, ToolError> {
        let query = id_or_original_path;
        let mut candidates: Vec<TrashEntry> = self
            .records()?
            .into_iter()
            .filter(|e| e.id == query || e.original_path == Path::new(query))
            .collect();
        if candidates.is_empty() {
            return Err(ToolError::NotInTrash {
                query: query.to_string(),
            });
        }
        // Prefer items that really are in the trash, then the newest.
        candidates.sort_by_key(|e| {
            let present = self
                .payload(e)
                .is_some_and(|p| fs::symlink_metadata(p).is_ok());
            std::cmp::Reverse((present, e.trashed_at))
        });
        let entry = candidates.swap_remove(0);
        let payload = match self.payload(&entry) {
            Some(p) if fs::symlink_metadata(&p).is_ok() => p,
            _ => {
                return Err(ToolError::TrashIncomplete {
                    id: entry.id,
                    original_path: entry.original_path,
                });
            }
        };
        let original = &entry.original_path;
        let blocked = || ToolError::RestoreBlocked {
            id: entry.id.clone(),
            original_path: original.clone(),
        };
        let (Some(parent), Some(name)) = (original.parent(), original.file_name()) else {
            return Err(ToolError::Refused {
                path: original.clone(),
                reason: "is not a path an item can be restored to".into(),
            });
        };
        let slot_fd = safe_fs::open_dir(&self.dir.join(&entry.id), &NoFence)?;
        let parent_fd = safe_fs::create_dir_all(parent, &NoFence)?;
        if safe_fs::stat_at(parent_fd.as_fd(), name, original).is_ok() {
            return Err(blocked());
        }
        match move_at(
            (slot_fd.as_fd(), name, &payload),
            (parent_fd.as_fd(), name, original),
            &NoFence,
        ) {
            Err(ToolError::DestinationExists { .. }) => return Err(blocked()),
            other => other?,
        }
        // Only our bookkeeping goes: the item itself is back in place.
        let _ = fs::remove_dir(self.dir.join(&entry.id));
        let _ = fs::remove_file(self.record_path(&entry.id));
        if let Ok(fd) = safe_fs::open_dir(&self.dir, &NoFence) {
            safe_fs::sync_dir(fd.as_fd());
        }
        Ok(entry)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn payload(&self, entry: &TrashEntry) -> Option<PathBuf> {
        let name = entry.original_path.file_name()?;
        Some(self.dir.join(&entry.id).join(name))
    }

    /// Writes the record via a temporary file and a rename, synced, so it is either whole or
    /// absent after a crash.
    fn write_record(&self, entry: &TrashEntry) -> Result<(), ToolError> {
        let path = self.record_path(&entry.id);
        let tmp = self.dir.join(format!(".{}.json.tmp", entry.id));
        let json = serde_json::to_vec_pretty(entry).map_err(|e| ToolError::TrashRecord {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ToolError::io("write the trash record", &path, e)
        })
    }

    fn records(&self) -> Result<Vec<TrashEntry>, ToolError> {
        let items = match fs::read_dir(&self.dir) {
            Ok(items) => items,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ToolError::io("list", &self.dir, e)),
        };
        let mut out = Vec::new();
        for item in items {
            let item = item.map_err(|e| ToolError::io("list", &self.dir, e))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if id.starts_with('.') {
                continue;
            }
            // A record we cannot read is left alone (it may be restored by hand), not fatal to
            // the whole trash.
            let entry = match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<TrashEntry>(&b).map_err(|e| e.to_string()))
            {
                Ok(entry) if entry.id == id => entry,
                Ok(entry) => {
                    tracing::warn!(path = %path.display(), id = %entry.id, "trash record names another id; ignored");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "unreadable trash record ignored: {e}");
                    continue;
                }
            };
            out.push(entry);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap as Map;

    use super::*;
    use crate::tools::safe_fs::FileId;

    fn no_skip(_: &Path) -> bool {
        false
    }

    fn write(path: &Path, content: &[u8]) {
        if let Some(p) = path.parent() {
            fs::create_dir_all(p).unwrap();
        }
        fs::write(path, content).unwrap();
    }

    /// A temporary folder by its canonical path (what the policy hands the tools).
    fn tmp() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = fs::canonicalize(t.path()).unwrap();
        (t, p)
    }

    struct Ids(Map<FileId, PathBuf>);

    impl Fence for Ids {
        fn secret(&self, id: FileId) -> Option<&Path> {
            self.0.get(&id).map(PathBuf::as_path)
        }
    }

    fn ids(paths: &[&Path]) -> Ids {
        Ids(paths
            .iter()
            .map(|p| {
                (
                    FileId::of_metadata(&fs::symlink_metadata(p).unwrap()),
                    p.to_path_buf(),
                )
            })
            .collect())
    }

    #[test]
    fn glob_and_substring() {
        let m = |p: &str, n: &str| NamePattern::new(p).matches(n);
        assert!(m("*.RS", "main.rs"));
        assert!(m("ma?n.*", "MAIN.rs"));
        assert!(!m("ma?n.*", "man.rs"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("*.tar.gz", "x.tar.gz"));
        assert!(!m("*.tar.gz", "x.tar.gz.part"));
        assert!(m("report", "Q3-REPORT-final.pdf"));
        assert!(!m("report", "rep.pdf"));
        assert!(m("", "anything"));
        // Pathological backtracking stays fast.
        let long = "a".repeat(5000);
        assert!(!m("*a*a*a*a*a*b", &long));
    }

    #[test]
    fn list_sorts_folders_first_and_truncates() {
        let (_t, root) = tmp();
        write(&root.join("b.txt"), b"hello");
        write(&root.join("A.txt"), b"");
        fs::create_dir(root.join("zdir")).unwrap();
        fs::create_dir(root.join("adir")).unwrap();
        std::os::unix::fs::symlink(root.join("zdir"), root.join("link")).unwrap();

        let l = list(&root, 100, &NoFence).unwrap();
        let names: Vec<_> = l.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["adir", "zdir", "A.txt", "b.txt", "link"]);
        assert_eq!(l.entries[3].size, 5);
        assert_eq!(l.entries[3].kind, EntryKind::File);
        assert_eq!(l.entries[4].kind, EntryKind::Symlink);
        assert!(l.entries[3].modified.unwrap() > 1_600_000_000_000);
        assert!(!l.truncated);

        let l = list(&root, 2, &NoFence).unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.total, 5);
        assert!(l.truncated);

        assert!(matches!(
            list(&root.join("b.txt"), 10, &NoFence),
            Err(ToolError::NotADirectory { .. })
        ));
        assert!(matches!(
            list(&root.join("nope"), 10, &NoFence),
            Err(ToolError::NotFound { .. })
        ));
        // A listing through a symlinked folder is refused, not followed.
        assert!(matches!(
            list(&root.join("link"), 10, &NoFence),
            Err(ToolError::Symlink { .. })
        ));
    }

    #[test]
    fn find_is_breadth_first_skips_and_never_follows_symlinks() {
        let (_t, base) = tmp();
        let root = base.join("root");
        write(&root.join("deep/deeper/notes.md"), b"x");
        write(&root.join("notes.md"), b"x");
        write(&root.join("secret/notes.md"), b"x");
        write(&root.join("other.txt"), b"x");
        let outside = base.join("outside");
        write(&outside.join("notes.md"), b"x");
        std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();

        let secret = root.join("secret");
        let skip = |p: &Path| p == secret;
        let r = find("NOTES", &root, 10, &skip, &NoFence).unwrap();
        let paths: Vec<_> = r.matches.iter().map(|m| m.path.clone()).collect();
        assert_eq!(
            paths,
            [root.join("notes.md"), root.join("deep/deeper/notes.md")]
        );
        assert_eq!(r.matches[0].size, 1);
        assert!(!r.truncated);

        let r = find("*.md", &root, 1, &no_skip, &NoFence).unwrap();
        assert_eq!(r.matches.len(), 1);
        assert!(r.truncated);

        // Folders match by name too.
        let r = find("deep*", &root, 10, &no_skip, &NoFence).unwrap();
        assert_eq!(r.matches.len(), 2);
        assert_eq!(r.matches[0].kind, EntryKind::Dir);

        // The visit bound stops the walk and says so.
        let r = find_bounded("*.md", &root, 10, 3, &no_skip, &NoFence).unwrap();
        assert!(r.truncated);
        assert_eq!(r.visited, 3);

        // A folder with a secret's identity (a bind mount, a hard-linked tree) is not entered.
        let r = find("notes", &root, 10, &no_skip, &ids(&[&root.join("deep")])).unwrap();
        assert!(
            r.matches
                .iter()
                .all(|m| !m.path.starts_with(root.join("deep/deeper"))),
            "{:?}",
            r.matches
        );
        assert_eq!(r.unreadable_dirs, 1);
    }

    #[test]
    fn read_head_limits_and_refuses_binary() {
        let (_t, root) = tmp();
        let p = root.join("a.txt");
        write(&p, b"one\ntwo\nthree\nfour\n");
        let h = read_head(&p, 1000, 2, &NoFence).unwrap();
        assert_eq!(h.text, "one\ntwo\n");
        assert!(h.truncated);
        assert_eq!(h.total_size, 19);
        let h = read_head(&p, 1000, 4, &NoFence).unwrap();
        assert_eq!(h.text, "one\ntwo\nthree\nfour\n");
        assert!(!h.truncated);
        let h = read_head(&p, 5, 100, &NoFence).unwrap();
        assert_eq!(h.text, "one\nt");
        assert!(h.truncated);
        let h = read_head(&p, 19, 100, &NoFence).unwrap();
        assert!(!h.truncated);

        // A multi-byte character cut by the byte limit is not "binary".
        let u = root.join("u.txt");
        write(&u, "héllo".as_bytes());
        let h = read_head(&u, 2, 10, &NoFence).unwrap();
        assert_eq!(h.text, "h");
        assert!(h.truncated);

        let b = root.join("b.bin");
        write(&b, b"PK\x03\x04\0\0abc");
        let e = read_head(&b, 100, 10, &NoFence).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("`{}` is not a text file (binary content)", b.display())
        );
        let l = root.join("latin1.txt");
        write(&l, b"caf\xe9 au lait");
        assert!(matches!(
            read_head(&l, 100, 10, &NoFence),
            Err(ToolError::NotText { .. })
        ));
        assert!(matches!(
            read_head(&root, 100, 10, &NoFence),
            Err(ToolError::NotAFile { .. })
        ));
    }

    /// Finding 16: a FIFO must not block the reader for good.
    #[test]
    fn reading_a_fifo_or_a_socket_is_refused_at_once() {
        let (_t, root) = tmp();
        let fifo = root.join("pipe");
        crate::tools::safe_fs::mkfifo(&fifo);
        let sock_path = root.join("sock");
        let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
        let t0 = Instant::now();
        let e = read_head(&fifo, 100, 10, &NoFence).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(matches!(e, ToolError::SpecialFile { .. }), "{e}");
        assert!(e.to_string().contains("named pipe"), "{e}");
        let e = read_head(&sock_path, 100, 10, &NoFence).unwrap_err();
        assert!(e.to_string().contains("a socket"), "{e}");
        // Walks pass them by without opening them.
        write(&root.join("a.txt"), b"text\n");
        let s = summarize(&root, &no_skip, &no_skip, &NoFence).unwrap();
        assert_eq!(s.files, 1);
        assert_eq!(s.previews.len(), 1);
    }

    #[test]
    fn summarize_counts_and_previews() {
        let (_t, base) = tmp();
        let root = base.join("proj");
        write(&root.join("README.md"), b"# Proj\nA thing.\n\nMore\n");
        write(&root.join("src/main.rs"), &[b'x'; 3000]);
        write(&root.join("src/lib.rs"), b"fn x() {}\n");
        write(&root.join("img.PNG"), b"\x89PNG\0\0");
        write(&root.join("Makefile"), b"all:\n\ttrue\n");
        write(&root.join(".secret/key.pem"), b"KEY");
        write(&root.join("diary.txt"), b"dear diary\n");
        let secret = root.join(".secret");
        let diary = root.join("diary.txt");
        let skip = |p: &Path| p == secret;
        let no_content = |p: &Path| p == diary;
        let s = summarize(&root, &skip, &no_content, &NoFence).unwrap();
        assert_eq!(s.files, 6);
        assert_eq!(s.dirs, 1);
        assert_eq!(
            s.by_type[0],
            TypeCount {
                ext: "rs".into(),
                count: 2,
                bytes: 3010
            }
        );
        assert!(s.by_type.iter().any(|t| t.ext == "png"));
        assert!(s.by_type.iter().any(|t| t.ext.is_empty()));
        assert!(!s.by_type.iter().any(|t| t.ext == "pem"));
        assert_eq!(s.largest[0].path, Path::new("src/main.rs"));
        assert_eq!(s.newest.len(), 5);
        let names: Vec<_> = s.previews.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Makefile", "README.md"]);
        assert_eq!(s.previews[1].lines, ["# Proj", "A thing.", ""]);
        let text = s.to_text();
        assert!(
            text.starts_with("proj: 6 files in 1 folder, 3.0 KB"),
            "{text}"
        );
        assert!(text.contains("Types: rs 2"), "{text}");
        assert!(text.contains("Largest: src/main.rs (2.9 KB)"), "{text}");
        assert!(text.contains("README.md: # Proj / A thing."), "{text}");
        assert!(!text.contains("key.pem"), "{text}");
        assert!(!text.contains("dear diary"), "{text}");

        // A hard link to a secret is not previewed.
        let key = base.join("id_ed25519");
        write(&key, b"PRIVATE KEY\n");
        fs::hard_link(&key, root.join("AAA.txt")).unwrap();
        let s = summarize(&root, &skip, &no_content, &ids(&[&key])).unwrap();
        assert!(!s.to_text().contains("PRIVATE KEY"), "{}", s.to_text());

        let s = summarize_bounded(&root, 2, &no_skip, &no_skip, &NoFence).unwrap();
        assert!(s.truncated);
        assert!(s.to_text().contains("partial"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KB");
        assert_eq!(human_size(50 * 1024 * 1024), "50 MB");
    }

    #[test]
    fn move_never_overwrites_and_moves_into_folders() {
        let (_t, root) = tmp();
        let a = root.join("a.txt");
        let b = root.join("b.txt");
        write(&a, b"A");
        write(&b, b"B");
        let e = move_path(&a, &b, &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::DestinationExists { .. }));
        assert!(e.to_string().contains("refusing to overwrite"));
        assert_eq!(fs::read(&b).unwrap(), b"B");

        let dir = root.join("dir");
        fs::create_dir(&dir).unwrap();
        assert_eq!(move_path(&a, &dir, &NoFence).unwrap(), dir.join("a.txt"));
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"A");
        assert!(!a.exists());

        move_path(&dir.join("a.txt"), &root.join("c.txt"), &NoFence).unwrap();
        assert_eq!(fs::read(root.join("c.txt")).unwrap(), b"A");

        assert!(matches!(
            move_path(&root.join("nope"), &dir, &NoFence),
            Err(ToolError::NotFound { .. })
        ));
        assert!(matches!(
            move_path(&dir, &dir.join("sub"), &NoFence),
            Err(ToolError::Refused { .. })
        ));
        // An existing empty folder at the exact destination is not replaced either.
        fs::create_dir(root.join("empty")).unwrap();
        fs::create_dir(root.join("src")).unwrap();
        assert!(matches!(
            move_exact(&root.join("src"), &root.join("empty"), &NoFence),
            Err(ToolError::DestinationExists { .. })
        ));
        // The item moved must not be a secret by identity.
        let key = root.join("key");
        write(&key, b"KEY");
        let link = root.join("innocent.txt");
        fs::hard_link(&key, &link).unwrap();
        assert!(matches!(
            move_exact(&link, &root.join("out.txt"), &ids(&[&key])),
            Err(ToolError::SameAsSecret { .. })
        ));
        assert!(link.exists());
    }

    /// Finding 4: `move ~/Projects/inner/id_ed25519 ~/Public/stolen` approved, then `inner`
    /// swapped for a symlink to `~/.ssh` before the move runs: the real key must not move.
    #[test]
    fn a_folder_swapped_for_a_symlink_after_the_check_does_not_redirect_a_move() {
        let (_t, home) = tmp();
        let ssh = home.join(".ssh");
        write(&ssh.join("id_ed25519"), b"PRIVATE KEY");
        let inner = home.join("Projects/inner");
        write(&inner.join("id_ed25519"), b"decoy");
        fs::create_dir_all(home.join("Public")).unwrap();
        // What the policy checked: the canonical paths before the swap.
        let from = fs::canonicalize(inner.join("id_ed25519")).unwrap();
        let to = home.join("Public/stolen");
        // The other process's swap.
        fs::rename(&inner, home.join("Projects/inner-old")).unwrap();
        std::os::unix::fs::symlink(&ssh, &inner).unwrap();

        let e = move_exact(&from, &to, &NoFence).unwrap_err();
        assert!(
            matches!(&e, ToolError::Symlink { path } if *path == inner),
            "{e}"
        );
        assert_eq!(fs::read(ssh.join("id_ed25519")).unwrap(), b"PRIVATE KEY");
        assert!(!to.exists());
        // The same for the trash and for a destination whose folder was swapped.
        let trash = Trash::new(home.join("trash"));
        assert!(matches!(
            trash.trash(&from, None, &NoFence),
            Err(ToolError::Symlink { .. })
        ));
        assert_eq!(fs::read(ssh.join("id_ed25519")).unwrap(), b"PRIVATE KEY");
        write(&home.join("notes.txt"), b"n");
        let e = move_exact(
            &home.join("notes.txt"),
            &inner.join("authorized_keys"),
            &NoFence,
        )
        .unwrap_err();
        assert!(matches!(e, ToolError::Symlink { .. }), "{e}");
        assert!(!ssh.join("authorized_keys").exists());
    }

    #[test]
    fn copy_fallback_moves_trees_with_links() {
        let (_t, root) = tmp();
        let src = root.join("src");
        write(&src.join("a/b.txt"), b"B");
        write(&src.join("c.txt"), b"C");
        std::os::unix::fs::symlink("c.txt", src.join("link")).unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(src.join("c.txt"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let dest = root.join("dest");
        let dir = safe_fs::open_dir(&root, &NoFence).unwrap();
        copy_then_remove(
            (dir.as_fd(), OsStr::new("src"), &src),
            (dir.as_fd(), OsStr::new("dest"), &dest),
            &NoFence,
        )
        .unwrap();
        assert!(!src.exists());
        assert_eq!(fs::read(dest.join("a/b.txt")).unwrap(), b"B");
        assert_eq!(
            fs::metadata(dest.join("c.txt"))
                .unwrap()
                .modified()
                .unwrap(),
            old
        );
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("c.txt")
        );
        // No hidden partial copy is left behind.
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
        // A secret by identity inside the tree stops the copy; the original stays whole.
        let key = root.join("key");
        write(&key, b"KEY");
        fs::hard_link(&key, dest.join("a/k")).unwrap();
        let e = copy_then_remove(
            (dir.as_fd(), OsStr::new("dest"), &dest),
            (dir.as_fd(), OsStr::new("again"), &root.join("again")),
            &ids(&[&key]),
        )
        .unwrap_err();
        assert!(matches!(e, ToolError::SameAsSecret { .. }), "{e}");
        assert!(dest.join("a/k").exists());
        assert!(!root.join("again").exists());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 2);
    }

    /// A real EXDEV, when the machine has a tmpfs on another device than the temp dir.
    #[cfg(target_os = "linux")]
    #[test]
    fn move_across_filesystems() {
        use std::os::unix::fs::MetadataExt;
        let (_t, root) = tmp();
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let shm_path = fs::canonicalize(shm.path()).unwrap();
        if fs::metadata(&root).unwrap().dev() == fs::metadata(&shm_path).unwrap().dev() {
            return;
        }
        let src = root.join("d");
        write(&src.join("x.txt"), b"X");
        move_path(&src, &shm_path, &NoFence).unwrap();
        assert_eq!(fs::read(shm_path.join("d/x.txt")).unwrap(), b"X");
        assert!(!src.exists());
    }

    #[test]
    fn contents_are_visited_whole_or_not_at_all() {
        let (_t, root) = tmp();
        write(&root.join("a/b/c.txt"), b"c");
        write(&root.join("a/d.txt"), b"d");
        std::os::unix::fs::symlink("/", root.join("a/root")).unwrap();
        let wide = Bounds {
            max_entries: 100,
            max_time: Duration::from_secs(10),
        };
        let mut seen = Vec::new();
        let n = visit_contents(&root.join("a"), wide, &NoFence, &mut |rel, _, _| {
            seen.push(rel.to_path_buf());
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(n, 4);
        seen.sort();
        let want: Vec<PathBuf> = ["b", "b/c.txt", "d.txt", "root"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(seen, want);
        let tight = Bounds {
            max_entries: 2,
            ..wide
        };
        assert!(matches!(
            visit_contents(&root.join("a"), tight, &NoFence, &mut |_, _, _| {
                ControlFlow::Continue(())
            }),
            Err(ContentsError::TooMany { limit: 2 })
        ));
        let e = visit_contents(&root.join("a"), wide, &NoFence, &mut |rel, _, _| {
            if rel.ends_with("c.txt") {
                ControlFlow::Break("found c".into())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "found c");
        assert!(matches!(
            visit_contents(
                &root.join("a"),
                wide,
                &ids(&[&root.join("a/b")]),
                &mut |_, _, _| { ControlFlow::Continue(()) }
            ),
            Err(ContentsError::Tool(ToolError::SameAsSecret { .. }))
        ));
    }

    /// What a folder holds, by name, sorted: no partial files may be left behind.
    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// Issue 14, item 3: `write` creates, replaces through the trash, and refuses what it must.
    #[test]
    fn write_creates_replaces_into_the_trash_and_refuses() {
        let (_t, root) = tmp();
        let trash = Trash::new(root.join("trash"));
        let dir = root.join("docs");
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("note.txt");
        let w = write_text(&f, "first\n", false, &trash, Some("t1"), &NoFence).unwrap();
        assert_eq!((w.bytes, w.replaced.is_none()), (6, true));
        assert_eq!(fs::read_to_string(&f).unwrap(), "first\n");
        // Not told to replace: refused, untouched.
        let e = write_text(&f, "x", false, &trash, None, &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::DestinationExists { .. }), "{e}");
        // Replaced: the old file is in the trash and comes back on restore.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        let w = write_text(&f, "second ü\n", true, &trash, Some("t2"), &NoFence).unwrap();
        let old = w.replaced.expect("replaced");
        assert_eq!(fs::read_to_string(&f).unwrap(), "second ü\n");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names(&dir), vec!["note.txt"]);
        fs::rename(&f, dir.join("new.txt")).unwrap();
        trash.restore(&old.id).unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "first\n");
        // Bounded, text only, and never through a link or into a folder's place.
        let big = "x".repeat(MAX_WRITE_BYTES + 1);
        let e = write_text(&dir.join("big.txt"), &big, false, &trash, None, &NoFence).unwrap_err();
        assert!(e.to_string().contains("at most 1048576 bytes"), "{e}");
        let e =
            write_text(&dir.join("nul.txt"), "a\0b", false, &trash, None, &NoFence).unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
        let outside = root.join("outside");
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        let e =
            write_text(&dir.join("link/x.txt"), "x", false, &trash, None, &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::Symlink { .. }), "{e}");
        std::os::unix::fs::symlink(outside.join("t.txt"), dir.join("l.txt")).unwrap();
        let e = write_text(&dir.join("l.txt"), "x", true, &trash, None, &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::Symlink { .. }), "{e}");
        let e = write_text(&outside, "x", true, &trash, None, &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::NotAFile { .. }), "{e}");
        assert!(names(&outside).is_empty());
        let e =
            write_text(&root.join("nope/x.txt"), "x", false, &trash, None, &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::NotFound { .. }), "{e}");
        // A hard link to a secret is the secret: never replaced.
        let key = root.join("key");
        write(&key, b"PRIVATE");
        fs::hard_link(&key, dir.join("innocent.txt")).unwrap();
        let fence = ids(&[&key]);
        let e = write_text(&dir.join("innocent.txt"), "x", true, &trash, None, &fence).unwrap_err();
        assert!(matches!(e, ToolError::SameAsSecret { .. }), "{e}");
        assert_eq!(fs::read(&key).unwrap(), b"PRIVATE");
        assert_eq!(
            names(&dir),
            vec!["innocent.txt", "l.txt", "link", "new.txt", "note.txt"]
        );
    }

    #[test]
    fn mkdir_creates_parents_and_never_follows_links() {
        let (_t, root) = tmp();
        let d = root.join("a/b/c");
        assert!(make_dir(&d, &NoFence).unwrap());
        assert!(d.is_dir());
        assert!(!make_dir(&d, &NoFence).unwrap());
        write(&root.join("file"), b"x");
        assert!(make_dir(&root.join("file"), &NoFence).is_err());
        let outside = root.join("outside");
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let e = make_dir(&root.join("link/new"), &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::Symlink { .. }), "{e}");
        assert!(names(&outside).is_empty());
    }

    #[test]
    fn copy_copies_files_and_trees_and_never_overwrites() {
        let (_t, root) = tmp();
        write(&root.join("src/a.txt"), b"a");
        write(&root.join("src/sub/b.txt"), b"b");
        std::os::unix::fs::symlink("a.txt", root.join("src/link")).unwrap();
        copy_exact(&root.join("src/a.txt"), &root.join("a-copy.txt"), &NoFence).unwrap();
        assert_eq!(fs::read(root.join("a-copy.txt")).unwrap(), b"a");
        copy_exact(&root.join("src"), &root.join("dst"), &NoFence).unwrap();
        assert_eq!(fs::read(root.join("dst/sub/b.txt")).unwrap(), b"b");
        assert!(
            fs::symlink_metadata(root.join("dst/link"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(fs::read(root.join("src/a.txt")).unwrap(), b"a");
        let e = copy_exact(&root.join("src"), &root.join("dst"), &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::DestinationExists { .. }), "{e}");
        let e = copy_exact(&root.join("src"), &root.join("src/sub/x"), &NoFence).unwrap_err();
        assert!(e.to_string().contains("into itself"), "{e}");
        // A folder holding a secret by identity is not copied, and nothing is left behind.
        let key = root.join("key");
        write(&key, b"PRIVATE");
        fs::hard_link(&key, root.join("src/sub/notes")).unwrap();
        let e = copy_exact(&root.join("src"), &root.join("dst2"), &ids(&[&key])).unwrap_err();
        assert!(matches!(e, ToolError::SameAsSecret { .. }), "{e}");
        assert!(
            !names(&root).iter().any(|n| n.contains("dst2")),
            "{:?}",
            names(&root)
        );
        // Never through a symlinked folder on either side.
        std::os::unix::fs::symlink(root.join("src"), root.join("srclink")).unwrap();
        let e = copy_exact(&root.join("srclink/a.txt"), &root.join("z"), &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::Symlink { .. }), "{e}");
        let e =
            copy_exact(&root.join("a-copy.txt"), &root.join("srclink/z"), &NoFence).unwrap_err();
        assert!(matches!(e, ToolError::Symlink { .. }), "{e}");
    }

    #[test]
    fn read_lines_pages_and_counts() {
        let (_t, root) = tmp();
        let f = root.join("long.txt");
        let text: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        write(&f, text.as_bytes());
        let p = read_lines(&f, 0, 3, 1000, &NoFence).unwrap();
        assert_eq!(p.text, "line 1\nline 2\nline 3\n");
        assert_eq!(
            (p.first_line, p.lines, p.total_lines, p.cut),
            (0, 3, Some(10), false)
        );
        let p = read_lines(&f, 8, 5, 1000, &NoFence).unwrap();
        assert_eq!(p.text, "line 9\nline 10\n");
        assert_eq!(p.lines, 2);
        let p = read_lines(&f, 20, 5, 1000, &NoFence).unwrap();
        assert_eq!((p.lines, p.total_lines), (0, Some(10)));
        // The byte bound cuts a page (a cut character is dropped, not an error).
        let p = read_lines(&f, 0, 10, 10, &NoFence).unwrap();
        assert_eq!((p.text.as_str(), p.cut, p.lines), ("line 1\nlin", true, 2));
        write(&f, "ééé\nlast".as_bytes());
        let p = read_lines(&f, 0, 10, 3, &NoFence).unwrap();
        assert_eq!((p.text.as_str(), p.cut), ("é", true));
        assert_eq!(read_lines(&f, 1, 1, 100, &NoFence).unwrap().text, "last");
        assert_eq!(
            read_lines(&f, 0, 1, 100, &NoFence).unwrap().total_lines,
            Some(2)
        );
        write(&f, b"text\n\0binary");
        assert!(matches!(
            read_lines(&f, 0, 1, 100, &NoFence),
            Err(ToolError::NotText { .. })
        ));
        std::os::unix::fs::symlink(&f, root.join("link")).unwrap();
        assert!(matches!(
            read_lines(&root.join("link"), 0, 1, 100, &NoFence),
            Err(ToolError::Symlink { .. })
        ));
    }

    #[test]
    fn search_finds_lines_and_skips_hidden_binary_and_links() {
        let (_t, root) = tmp();
        write(
            &root.join("a.txt"),
            b"Total due: 12\nnothing\ntotal DUE: 30\n",
        );
        write(&root.join("sub/b.md"), b"the total due is 5\n");
        write(&root.join("bin.dat"), b"total due\0\x01\x02");
        write(&root.join("latin1.txt"), b"total due \xe9t\xe9\n");
        write(&root.join("hidden/c.txt"), b"total due hidden\n");
        write(&root.join("private.txt"), b"total due private\n");
        let (_t2, outside) = tmp();
        write(&outside.join("o.txt"), b"total due outside\n");
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("alink.txt")).unwrap();
        let names = |p: &Path| p.ends_with("hidden");
        let content = |p: &Path| p.ends_with("private.txt");
        let r = search(
            "total due",
            &root,
            SearchLimits::default(),
            &names,
            &content,
            &NoFence,
        )
        .unwrap();
        let got: Vec<(String, usize)> = r
            .hits
            .iter()
            .map(|h| {
                (
                    h.path.strip_prefix(&root).unwrap().display().to_string(),
                    h.line,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.txt".into(), 1),
                ("a.txt".into(), 3),
                ("sub/b.md".into(), 1)
            ]
        );
        assert_eq!(r.hits[0].text, "Total due: 12");
        assert_eq!(
            (r.files_searched, r.files_skipped, r.truncated),
            (2, 2, false)
        );
        // Bounded in results; one file as the root.
        let limits = SearchLimits {
            max_results: 1,
            ..SearchLimits::default()
        };
        let r = search("total", &root, limits, &no_skip, &no_skip, &NoFence).unwrap();
        assert_eq!((r.hits.len(), r.truncated), (1, true));
        let r = search(
            "due",
            &root.join("sub/b.md"),
            SearchLimits::default(),
            &no_skip,
            &no_skip,
            &NoFence,
        )
        .unwrap();
        assert_eq!(r.hits.len(), 1);
        // A secret by identity is left out.
        let key = root.join("sub/b.md");
        let r = search(
            "due",
            &root,
            SearchLimits::default(),
            &no_skip,
            &no_skip,
            &ids(&[&key]),
        )
        .unwrap();
        assert!(r.hits.iter().all(|h| h.path != key), "{:?}", r.hits);
        assert!(
            search(
                "",
                &root,
                SearchLimits::default(),
                &no_skip,
                &no_skip,
                &NoFence
            )
            .is_err()
        );
    }

    #[test]
    fn trash_list_restore_roundtrip() {
        let (_t, root) = tmp();
        let trash = Trash::new(root.join("trash"));
        assert!(trash.list().unwrap().is_empty());
        let f = root.join("work/report.txt");
        let d = root.join("work/photos");
        write(&f, b"report");
        write(&d.join("1.jpg"), b"jpg");

        let ef = trash.trash(&f, Some("task-1"), &NoFence).unwrap();
        let ed = trash.trash(&d, None, &NoFence).unwrap();
        assert!(!f.exists() && !d.exists());
        assert_eq!(ef.id.len(), 16);
        assert_eq!(ef.task_id.as_deref(), Some("task-1"));
        let rec: serde_json::Value =
            serde_json::from_slice(&fs::read(trash.dir().join(format!("{}.json", ef.id))).unwrap())
                .unwrap();
        assert_eq!(rec["original_path"], f.display().to_string());
        assert_eq!(rec["task_id"], "task-1");
        assert_eq!(
            fs::read(trash.dir().join(&ef.id).join("report.txt")).unwrap(),
            b"report"
        );

        let listed = trash.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].trashed_at >= listed[1].trashed_at);

        // By original path.
        let r = trash.restore(&f.display().to_string()).unwrap();
        assert_eq!(r, ef);
        assert_eq!(fs::read(&f).unwrap(), b"report");

        // Blocked when something took its place; nothing is overwritten.
        write(&d, b"new file here");
        let e = trash.restore(&ed.id).unwrap_err();
        assert!(matches!(e, ToolError::RestoreBlocked { .. }));
        assert!(e.to_string().contains("something now exists"), "{e}");
        assert_eq!(fs::read(&d).unwrap(), b"new file here");
        fs::remove_file(&d).unwrap();

        // Restore recreates a vanished parent, but never through a symlink.
        fs::remove_dir_all(root.join("work")).unwrap();
        let elsewhere = root.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("work")).unwrap();
        assert!(matches!(
            trash.restore(&ed.id),
            Err(ToolError::Symlink { .. })
        ));
        assert!(!elsewhere.join("photos").exists());
        fs::remove_file(root.join("work")).unwrap();
        trash.restore(&ed.id).unwrap();
        assert_eq!(fs::read(d.join("1.jpg")).unwrap(), b"jpg");
        assert!(trash.list().unwrap().is_empty());

        assert!(matches!(
            trash.restore("0123456789abcdef"),
            Err(ToolError::NotInTrash { .. })
        ));
        assert!(matches!(
            trash.trash(&root.join("missing"), None, &NoFence),
            Err(ToolError::NotFound { .. })
        ));
        assert!(matches!(
            trash.trash(trash.dir(), None, &NoFence),
            Err(ToolError::Refused { .. })
        ));
    }

    #[test]
    fn a_record_without_its_item_is_hidden_and_explained() {
        let (_t, root) = tmp();
        let trash = Trash::new(root.join("trash"));
        let f = root.join("keep.txt");
        write(&f, b"still here");
        // The state a crash between "record written" and "moved" leaves behind.
        let entry = TrashEntry {
            id: "00112233aabbccdd".into(),
            original_path: f.clone(),
            trashed_at: 1,
            task_id: None,
        };
        fs::create_dir_all(trash.dir()).unwrap();
        trash.write_record(&entry).unwrap();
        assert!(trash.list().unwrap().is_empty());
        let e = trash.restore(&entry.id).unwrap_err();
        assert!(matches!(e, ToolError::TrashIncomplete { .. }), "{e}");
        assert_eq!(fs::read(&f).unwrap(), b"still here");

        // A later real trashing of the same path is found by path despite the stale record.
        let real = trash.trash(&f, None, &NoFence).unwrap();
        let r = trash.restore(&f.display().to_string()).unwrap();
        assert_eq!(r.id, real.id);
        assert_eq!(fs::read(&f).unwrap(), b"still here");
    }
}
