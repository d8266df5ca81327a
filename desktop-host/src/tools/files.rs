//! Files and folders: list, find, read the head of a text file, summarize a folder, move, and a
//! trash that never deletes anything for real.
//!
//! Walks are breadth-first, bounded, and never follow symlinked directories (a link to `/` must
//! not turn a find in `~/Downloads` into a find of the whole disk); the caller's `skip` predicate
//! keeps folders out of them entirely.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, Metadata};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::ToolError;

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
    fn of(file_type: fs::FileType) -> Self {
        if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
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
pub fn list(dir: &Path, limit: usize) -> Result<Listing, ToolError> {
    let mut found = Vec::new();
    for item in read_dir(dir)? {
        let item = item.map_err(|e| ToolError::io("list", dir, e))?;
        // d_type comes with the directory read: sorting needs no stat per entry.
        let kind = item
            .file_type()
            .map(EntryKind::of)
            .unwrap_or(EntryKind::Other);
        found.push((kind, item.file_name().to_string_lossy().into_owned()));
    }
    found.sort_by(|(ka, a), (kb, b)| {
        (*kb == EntryKind::Dir)
            .cmp(&(*ka == EntryKind::Dir))
            .then_with(|| a.to_lowercase().cmp(&b.to_lowercase()))
            .then_with(|| a.cmp(b))
    });
    let total = found.len();
    let entries = found
        .into_iter()
        .take(limit)
        .map(|(kind, name)| {
            let meta = fs::symlink_metadata(dir.join(&name)).ok();
            Entry {
                size: meta.as_ref().map_or(0, Metadata::len),
                modified: meta.as_ref().and_then(modified_ms),
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
    /// Subfolders that could not be read (permissions, races) and were left out.
    pub unreadable_dirs: usize,
    /// True when the search stopped early (result limit or [`MAX_VISITED`]), so there may be more.
    pub truncated: bool,
}

/// Finds entries under `root` whose name matches `pattern`, case-insensitively: `*` is any run of
/// characters and `?` one character; a pattern without either matches names containing it.
/// Breadth-first, so the shallowest matches come first; folders for which `skip` is true are
/// neither reported nor entered.
pub fn find(
    pattern: &str,
    root: &Path,
    limit: usize,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<FindResult, ToolError> {
    find_bounded(pattern, root, limit, MAX_VISITED, skip)
}

fn find_bounded(
    pattern: &str,
    root: &Path,
    limit: usize,
    max_visited: usize,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<FindResult, ToolError> {
    let pattern = NamePattern::new(pattern);
    let mut result = FindResult {
        matches: Vec::new(),
        visited: 0,
        unreadable_dirs: 0,
        truncated: false,
    };
    let mut walk = Walk::new(root, max_visited, skip)?;
    while let Some(item) = walk.next_entry() {
        if !pattern.matches(&item.name) {
            continue;
        }
        if result.matches.len() == limit {
            result.truncated = true;
            break;
        }
        let meta = fs::symlink_metadata(&item.path).ok();
        result.matches.push(Found {
            size: meta.as_ref().map_or(0, Metadata::len),
            modified: meta.as_ref().and_then(modified_ms),
            path: item.path,
            kind: item.kind,
        });
    }
    result.visited = walk.visited;
    result.unreadable_dirs = walk.unreadable_dirs;
    result.truncated |= walk.hit_bound;
    Ok(result)
}

/// A case-insensitive file-name glob.
struct NamePattern {
    chars: Vec<char>,
    substring: bool,
}

impl NamePattern {
    fn new(pattern: &str) -> Self {
        let lower = pattern.to_lowercase();
        NamePattern {
            substring: !lower.contains(['*', '?']),
            chars: lower.chars().collect(),
        }
    }

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
    name: String,
    kind: EntryKind,
    depth: usize,
}

/// A breadth-first, bounded walk that never follows symlinks and never enters skipped paths.
/// Entries of each folder come in name order, so results are stable from run to run.
struct Walk<'a> {
    root: PathBuf,
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
    ) -> Result<Self, ToolError> {
        // The root itself must be readable; unreadable subfolders are only counted.
        let items = Self::read(root, root, 1)?;
        Ok(Walk {
            root: root.to_path_buf(),
            queue: VecDeque::new(),
            current: items.into_iter(),
            skip,
            max_visited,
            visited: 0,
            unreadable_dirs: 0,
            hit_bound: false,
        })
    }

    fn read(root: &Path, dir: &Path, depth: usize) -> Result<Vec<WalkItem>, ToolError> {
        let mut items = Vec::new();
        for item in read_dir(dir)? {
            let Ok(item) = item else { continue };
            let name = item.file_name().to_string_lossy().into_owned();
            let path = item.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            // DirEntry::file_type does not follow symlinks: a link to a folder stays a Symlink.
            let kind = item
                .file_type()
                .map(EntryKind::of)
                .unwrap_or(EntryKind::Other);
            items.push(WalkItem {
                path,
                rel,
                name,
                kind,
                depth,
            });
        }
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
                    self.queue.push_back((item.path.clone(), item.depth + 1));
                }
                return Some(item);
            }
            let (dir, depth) = self.queue.pop_front()?;
            match Self::read(&self.root, &dir, depth) {
                Ok(items) => self.current = items.into_iter(),
                Err(_) => self.unreadable_dirs += 1,
            }
        }
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
/// lines. Refuses files that are not text (a NUL byte or invalid UTF-8 in what was read); a
/// multi-byte character cut by the byte limit is dropped, not counted as binary.
pub fn read_head(path: &Path, max_bytes: usize, max_lines: usize) -> Result<TextHead, ToolError> {
    let file = File::open(path).map_err(|e| ToolError::io("read", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| ToolError::io("read", path, e))?;
    if !meta.is_file() {
        return Err(ToolError::NotAFile {
            path: path.to_path_buf(),
        });
    }
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
        total_size: meta.len(),
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
/// never entering what `skip` names).
pub fn summarize(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<Summary, ToolError> {
    summarize_bounded(dir, MAX_VISITED, skip)
}

fn summarize_bounded(
    dir: &Path,
    max_visited: usize,
    skip: &dyn Fn(&Path) -> bool,
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
    let mut walk = Walk::new(dir, max_visited, skip)?;
    while let Some(item) = walk.next_entry() {
        match item.kind {
            EntryKind::Dir => s.dirs += 1,
            EntryKind::Symlink => s.symlinks += 1,
            EntryKind::Other => {}
            EntryKind::File => {
                let meta = fs::symlink_metadata(&item.path).ok();
                let size = meta.as_ref().map_or(0, Metadata::len);
                let stat = FileStat {
                    path: item.rel,
                    size,
                    modified: meta.as_ref().and_then(modified_ms),
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
                if item.depth == 1 {
                    top_level_files.push(item.path);
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
    // Trying a bounded number keeps a folder of 10,000 images from costing 10,000 opens.
    for path in top_level_files.iter().take(PREVIEW_FILES * 4) {
        if s.previews.len() == PREVIEW_FILES {
            break;
        }
        let Ok(head) = read_head(path, 4096, PREVIEW_LINES) else {
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
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
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

/// Moves `from` to `to`, or into `to` when `to` is an existing directory. Never overwrites: an
/// existing destination is an error. Across filesystems it copies, then removes the original;
/// the copy appears at the destination only once complete.
pub fn move_path(from: &Path, to: &Path) -> Result<(), ToolError> {
    fs::symlink_metadata(from).map_err(|e| ToolError::io("move", from, e))?;
    let dest = if to.is_dir() {
        let name = from.file_name().ok_or_else(|| ToolError::Invalid {
            reason: format!("`{}` has no file name to move", from.display()),
        })?;
        to.join(name)
    } else {
        to.to_path_buf()
    };
    move_exact(from, &dest)
}

/// Moves `from` to exactly `dest`, refusing to overwrite.
fn move_exact(from: &Path, dest: &Path) -> Result<(), ToolError> {
    if dest == from {
        return Err(ToolError::Invalid {
            reason: format!("`{}` is already there", from.display()),
        });
    }
    if dest.starts_with(from) {
        return Err(ToolError::Invalid {
            reason: format!(
                "cannot move `{}` into itself (`{}`)",
                from.display(),
                dest.display()
            ),
        });
    }
    // Check-then-rename leaves a tiny window in which a file created at `dest` by someone else
    // would be replaced; std has no portable no-replace rename.
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ToolError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    match fs::rename(from, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => copy_then_remove(from, dest),
        Err(e) => Err(ToolError::io("move", from, e)),
    }
}

/// The cross-filesystem move: copy to a hidden name next to `dest`, rename it into place, then
/// remove the original. A crash leaves the original intact (and at worst a hidden partial copy),
/// never a half-copied file under the real name.
fn copy_then_remove(from: &Path, dest: &Path) -> Result<(), ToolError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = parent.join(format!(".{name}.deskhand-partial-{}", hex_id()));
    if let Err(e) = copy_tree(from, &partial) {
        let _ = remove_tree(&partial);
        return Err(e);
    }
    if fs::symlink_metadata(dest).is_ok() {
        let _ = remove_tree(&partial);
        return Err(ToolError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    if let Err(e) = fs::rename(&partial, dest) {
        let _ = remove_tree(&partial);
        return Err(ToolError::io("move", dest, e));
    }
    remove_tree(from)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), ToolError> {
    let meta = fs::symlink_metadata(from).map_err(|e| ToolError::io("copy", from, e))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(from).map_err(|e| ToolError::io("copy", from, e))?;
        make_symlink(&target, to)
    } else if ft.is_dir() {
        fs::create_dir(to).map_err(|e| ToolError::io("copy", to, e))?;
        for item in read_dir(from)? {
            let item = item.map_err(|e| ToolError::io("copy", from, e))?;
            copy_tree(&item.path(), &to.join(item.file_name()))?;
        }
        fs::set_permissions(to, meta.permissions()).map_err(|e| ToolError::io("copy", to, e))
    } else if ft.is_file() {
        fs::copy(from, to).map_err(|e| ToolError::io("copy", from, e))?;
        // Keep the modification time: "newest files" must not change because a file moved.
        if let Ok(mtime) = meta.modified() {
            let _ = File::options()
                .write(true)
                .open(to)
                .and_then(|f| f.set_modified(mtime));
        }
        Ok(())
    } else {
        Err(ToolError::Invalid {
            reason: format!(
                "`{}` is a special file (socket, pipe or device) and cannot be copied to another disk",
                from.display()
            ),
        })
    }
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> Result<(), ToolError> {
    std::os::unix::fs::symlink(target, link).map_err(|e| ToolError::io("copy", link, e))
}

#[cfg(not(unix))]
fn make_symlink(_target: &Path, link: &Path) -> Result<(), ToolError> {
    Err(ToolError::Invalid {
        reason: format!(
            "`{}`: cannot copy a symlink on this platform",
            link.display()
        ),
    })
}

/// Removes the original after a completed cross-filesystem copy (the data lives on at the
/// destination), or a partial copy of ours.
fn remove_tree(path: &Path) -> Result<(), ToolError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ToolError::io("remove", path, e)),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(|e| ToolError::io("remove", path, e))
}

fn read_dir(dir: &Path) -> Result<fs::ReadDir, ToolError> {
    fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotADirectory => ToolError::NotADirectory {
            path: dir.to_path_buf(),
        },
        _ => ToolError::io("list", dir, e),
    })
}

fn modified_ms(meta: &Metadata) -> Option<u64> {
    meta.modified().ok().map(unix_ms)
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
    /// A trash kept in `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Self {
        Trash { dir }
    }

    /// The folder the trash lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the file or folder at `path` into the trash.
    ///
    /// The record of where it came from is written and synced *before* the move, so a crash can
    /// never leave an item in the trash with no way back. A record whose item never arrived is
    /// ignored by [`Trash::list`] and explained by [`Trash::restore`].
    pub fn trash(&self, path: &Path, task: Option<&str>) -> Result<TrashEntry, ToolError> {
        fs::symlink_metadata(path).map_err(|e| ToolError::io("move to the trash", path, e))?;
        let name = path.file_name().ok_or_else(|| ToolError::Invalid {
            reason: format!("`{}` has no file name to keep in the trash", path.display()),
        })?;
        if self.dir.starts_with(path) || path.starts_with(&self.dir) {
            return Err(ToolError::Invalid {
                reason: format!(
                    "`{}` is the trash or inside it; it cannot be trashed",
                    path.display()
                ),
            });
        }
        fs::create_dir_all(&self.dir).map_err(|e| ToolError::io("create", &self.dir, e))?;
        let entry = TrashEntry {
            id: hex_id(),
            original_path: path.to_path_buf(),
            trashed_at: unix_ms(SystemTime::now()),
            task_id: task.map(str::to_string),
        };
        self.write_record(&entry)?;
        let slot = self.dir.join(&entry.id);
        let moved = fs::create_dir(&slot)
            .map_err(|e| ToolError::io("create", &slot, e))
            .and_then(|()| move_exact(path, &slot.join(name)));
        if let Err(e) = moved {
            // Nothing moved: the record would only describe a trash item that does not exist.
            let _ = fs::remove_dir(&slot);
            let _ = fs::remove_file(self.record_path(&entry.id));
            return Err(e);
        }
        sync_dir(&slot);
        sync_dir(&self.dir);
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
    /// recreates the original's parent folder if it has gone.
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
        if fs::symlink_metadata(&entry.original_path).is_ok() {
            return Err(ToolError::RestoreBlocked {
                id: entry.id,
                original_path: entry.original_path,
            });
        }
        if let Some(parent) = entry.original_path.parent() {
            fs::create_dir_all(parent).map_err(|e| ToolError::io("create", parent, e))?;
        }
        move_exact(&payload, &entry.original_path)?;
        // Only our bookkeeping goes: the item itself is back in place.
        let _ = fs::remove_dir(self.dir.join(&entry.id));
        let _ = fs::remove_file(self.record_path(&entry.id));
        sync_dir(&self.dir);
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

/// Makes a rename in `dir` durable. Best effort: some platforms cannot open folders.
fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn no_skip(_: &Path) -> bool {
        false
    }

    fn write(path: &Path, content: &[u8]) {
        if let Some(p) = path.parent() {
            fs::create_dir_all(p).unwrap();
        }
        fs::write(path, content).unwrap();
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
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("b.txt"), b"hello");
        write(&t.path().join("A.txt"), b"");
        fs::create_dir(t.path().join("zdir")).unwrap();
        fs::create_dir(t.path().join("adir")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(t.path().join("zdir"), t.path().join("link")).unwrap();

        let l = list(t.path(), 100).unwrap();
        let names: Vec<_> = l.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["adir", "zdir", "A.txt", "b.txt", "link"]);
        assert_eq!(l.entries[3].size, 5);
        assert_eq!(l.entries[3].kind, EntryKind::File);
        assert_eq!(l.entries[4].kind, EntryKind::Symlink);
        assert!(l.entries[3].modified.unwrap() > 1_600_000_000_000);
        assert!(!l.truncated);

        let l = list(t.path(), 2).unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.total, 5);
        assert!(l.truncated);

        assert!(matches!(
            list(&t.path().join("b.txt"), 10),
            Err(ToolError::NotADirectory { .. })
        ));
        assert!(matches!(
            list(&t.path().join("nope"), 10),
            Err(ToolError::NotFound { .. })
        ));
    }

    #[test]
    fn find_is_breadth_first_skips_and_never_follows_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        write(&root.join("deep/deeper/notes.md"), b"x");
        write(&root.join("notes.md"), b"x");
        write(&root.join("secret/notes.md"), b"x");
        write(&root.join("other.txt"), b"x");
        let outside = t.path().join("outside");
        write(&outside.join("notes.md"), b"x");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();

        let secret = root.join("secret");
        let skip = |p: &Path| p == secret;
        let r = find("NOTES", &root, 10, &skip).unwrap();
        let paths: Vec<_> = r.matches.iter().map(|m| m.path.clone()).collect();
        assert_eq!(
            paths,
            [root.join("notes.md"), root.join("deep/deeper/notes.md")]
        );
        assert!(!r.truncated);

        let r = find("*.md", &root, 1, &no_skip).unwrap();
        assert_eq!(r.matches.len(), 1);
        assert!(r.truncated);

        // Folders match by name too.
        let r = find("deep*", &root, 10, &no_skip).unwrap();
        assert_eq!(r.matches.len(), 2);
        assert_eq!(r.matches[0].kind, EntryKind::Dir);

        // The visit bound stops the walk and says so.
        let r = find_bounded("*.md", &root, 10, 3, &no_skip).unwrap();
        assert!(r.truncated);
        assert_eq!(r.visited, 3);
    }

    #[test]
    fn read_head_limits_and_refuses_binary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.txt");
        write(&p, b"one\ntwo\nthree\nfour\n");
        let h = read_head(&p, 1000, 2).unwrap();
        assert_eq!(h.text, "one\ntwo\n");
        assert!(h.truncated);
        assert_eq!(h.total_size, 19);
        let h = read_head(&p, 1000, 4).unwrap();
        assert_eq!(h.text, "one\ntwo\nthree\nfour\n");
        assert!(!h.truncated);
        let h = read_head(&p, 5, 100).unwrap();
        assert_eq!(h.text, "one\nt");
        assert!(h.truncated);
        let h = read_head(&p, 19, 100).unwrap();
        assert!(!h.truncated);

        // A multi-byte character cut by the byte limit is not "binary".
        let u = t.path().join("u.txt");
        write(&u, "héllo".as_bytes());
        let h = read_head(&u, 2, 10).unwrap();
        assert_eq!(h.text, "h");
        assert!(h.truncated);

        let b = t.path().join("b.bin");
        write(&b, b"PK\x03\x04\0\0abc");
        let e = read_head(&b, 100, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("`{}` is not a text file (binary content)", b.display())
        );
        let l = t.path().join("latin1.txt");
        write(&l, b"caf\xe9 au lait");
        assert!(matches!(
            read_head(&l, 100, 10),
            Err(ToolError::NotText { .. })
        ));
        assert!(matches!(
            read_head(t.path(), 100, 10),
            Err(ToolError::NotAFile { .. })
        ));
    }

    #[test]
    fn summarize_counts_and_previews() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("proj");
        write(&root.join("README.md"), b"# Proj\nA thing.\n\nMore\n");
        write(&root.join("src/main.rs"), &[b'x'; 3000]);
        write(&root.join("src/lib.rs"), b"fn x() {}\n");
        write(&root.join("img.PNG"), b"\x89PNG\0\0");
        write(&root.join("Makefile"), b"all:\n\ttrue\n");
        write(&root.join(".secret/key.pem"), b"KEY");
        let secret = root.join(".secret");
        let skip = |p: &Path| p == secret;
        let s = summarize(&root, &skip).unwrap();
        assert_eq!(s.files, 5);
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
            text.starts_with("proj: 5 files in 1 folder, 3.0 KB"),
            "{text}"
        );
        assert!(text.contains("Types: rs 2"), "{text}");
        assert!(text.contains("Largest: src/main.rs (2.9 KB)"), "{text}");
        assert!(text.contains("README.md: # Proj / A thing."), "{text}");
        assert!(!text.contains("key.pem"), "{text}");

        let s = summarize_bounded(&root, 2, &no_skip).unwrap();
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
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a.txt");
        let b = t.path().join("b.txt");
        write(&a, b"A");
        write(&b, b"B");
        let e = move_path(&a, &b).unwrap_err();
        assert!(matches!(e, ToolError::DestinationExists { .. }));
        assert!(e.to_string().contains("refusing to overwrite"));
        assert_eq!(fs::read(&b).unwrap(), b"B");

        let dir = t.path().join("dir");
        fs::create_dir(&dir).unwrap();
        move_path(&a, &dir).unwrap();
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"A");
        assert!(!a.exists());

        move_path(&dir.join("a.txt"), &t.path().join("c.txt")).unwrap();
        assert_eq!(fs::read(t.path().join("c.txt")).unwrap(), b"A");

        assert!(matches!(
            move_path(&t.path().join("nope"), &dir),
            Err(ToolError::NotFound { .. })
        ));
        assert!(matches!(
            move_path(&dir, &dir.join("sub")),
            Err(ToolError::Invalid { .. })
        ));
    }

    #[test]
    fn copy_fallback_moves_trees_with_links() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        write(&src.join("a/b.txt"), b"B");
        write(&src.join("c.txt"), b"C");
        #[cfg(unix)]
        std::os::unix::fs::symlink("c.txt", src.join("link")).unwrap();
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(src.join("c.txt"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let dest = t.path().join("dest");
        copy_then_remove(&src, &dest).unwrap();
        assert!(!src.exists());
        assert_eq!(fs::read(dest.join("a/b.txt")).unwrap(), b"B");
        assert_eq!(
            fs::metadata(dest.join("c.txt"))
                .unwrap()
                .modified()
                .unwrap(),
            old
        );
        #[cfg(unix)]
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("c.txt")
        );
        // No hidden partial copy is left behind.
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    /// A real EXDEV, when the machine has a tmpfs on another device than the temp dir.
    #[cfg(target_os = "linux")]
    #[test]
    fn move_across_filesystems() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        if fs::metadata(t.path()).unwrap().dev() == fs::metadata(shm.path()).unwrap().dev() {
            return;
        }
        let src = t.path().join("d");
        write(&src.join("x.txt"), b"X");
        move_path(&src, shm.path()).unwrap();
        assert_eq!(fs::read(shm.path().join("d/x.txt")).unwrap(), b"X");
        assert!(!src.exists());
    }

    #[test]
    fn trash_list_restore_roundtrip() {
        let t = tempfile::tempdir().unwrap();
        let trash = Trash::new(t.path().join("trash"));
        assert!(trash.list().unwrap().is_empty());
        let f = t.path().join("work/report.txt");
        let d = t.path().join("work/photos");
        write(&f, b"report");
        write(&d.join("1.jpg"), b"jpg");

        let ef = trash.trash(&f, Some("task-1")).unwrap();
        let ed = trash.trash(&d, None).unwrap();
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

        // Restore recreates a vanished parent.
        fs::remove_dir_all(t.path().join("work")).unwrap();
        trash.restore(&ed.id).unwrap();
        assert_eq!(fs::read(d.join("1.jpg")).unwrap(), b"jpg");
        assert!(trash.list().unwrap().is_empty());

        assert!(matches!(
            trash.restore("0123456789abcdef"),
            Err(ToolError::NotInTrash { .. })
        ));
        assert!(matches!(
            trash.trash(&t.path().join("missing"), None),
            Err(ToolError::NotFound { .. })
        ));
        assert!(matches!(
            trash.trash(trash.dir(), None),
            Err(ToolError::Invalid { .. })
        ));
    }

    #[test]
    fn a_record_without_its_item_is_hidden_and_explained() {
        let t = tempfile::tempdir().unwrap();
        let trash = Trash::new(t.path().join("trash"));
        let f = t.path().join("keep.txt");
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
        let real = trash.trash(&f, None).unwrap();
        let r = trash.restore(&f.display().to_string()).unwrap();
        assert_eq!(r.id, real.id);
        assert_eq!(fs::read(&f).unwrap(), b"still here");
    }
}
