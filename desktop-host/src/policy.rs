//! The executor's policy: every tool call is `allow`, `ask` or `deny`, decided here in code —
//! never by the agent.
//!
//! Order of judgement:
//! 1. paths are resolved (`~`, relative paths, `..`, symlinks) before anything is judged;
//! 2. a secret location ([`secrets`]: `~/.ssh`, `~/.gnupg`, cloud CLIs, browser profiles,
//!    keyrings, `.env` files, `*.pem`, … and, by identity, hard links and mounts of what they
//!    hold), the host's own data and config directories, or anything outside the configured
//!    roots is denied — no rule and no approval can change that;
//! 3. what the call *carries* is judged too: a move or trash of a folder is judged by every path
//!    inside it (and a move by where each would land), walked whole within bounds
//!    ([`CARRY_BOUNDS`]; a folder too large to check is denied);
//! 4. the config's `deny` rules, then `ask`, then `allow`: a deny or ask rule applies when it
//!    governs any path the call touches or carries; allow applies when allow rules cover all
//!    of them; `run(…)` rules match the parsed command, never its text ([`crate::run_rules`]);
//! 5. the default for the tool: reads inside the roots allow, everything that changes the machine
//!    (writes, moves, trash, shell, keyboard and mouse, opening things) asks.
//!
//! **Rules name capabilities or tools.** Each tool declares, in the tool registry
//! ([`crate::registry`], the one table), what it does with each path argument:
//!
//! | rule word | governs | tools today |
//! |---|---|---|
//! | `read(…)` | reading a file's content, or carrying it elsewhere | `read`, `search`, `summarize` (previews), `copy` and `move` (source), `open` (a path), connector tools (their path arguments) |
//! | `list(…)` | seeing names, sizes and dates | `list`, `find`, `search`, `summarize` |
//! | `write(…)` | creating or replacing what is at a path | `write`, `mkdir`, `copy` and `move` (destination), connector tools not marked read-only |
//! | `delete(…)` | removing something from where it is | `trash`, `move` (source) |
//! | a tool's name (`find`, `search`, `summarize`, `mkdir`, `copy`, `move`, `trash`, `open`, `run`, `type`, `key`, `click`, `screenshot`) | every path (or the text) of that tool | that tool |
//! | `mcp__<server>__<glob>` | every path (or the arguments) of the connector tools it names; `*` and `?` match only in the tool part, so a rule never names a built-in tool or another server's | connector tools |
//!
//! `read`, `list` and `write` are both capability and tool names: as rules they are capabilities (which
//! cover the tools of the same name). In walks (`find`, `summarize`, `list`) entries a deny or
//! ask rule governs are left out, since a walk cannot stop to ask.

use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::registry::{self, Default, Registry, ToolSpec};
use crate::run_rules::{ParsedCommand, RunPattern};
use crate::tools::files::{self, Bounds, ContentsError};
use crate::tools::safe_fs::{Fence, FileId};

mod persistence;
pub mod secrets;

pub use persistence::{PERSISTENCE, anywhere as persistence_anywhere, fixed as persistence_fixed};
pub use secrets::{IdSnapshot, SECRET_HOME_LOCATIONS, SECRET_NAMES, SecretIds};

/// What the policy says about a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Allow,
    /// Ask the phones and wait for a signed decision.
    Ask,
    /// Refuse it, with the reason shown to the phone.
    Deny(String),
}

/// What a tool does with a path. Rules name these (`read(…)`, `list(…)`, `write(…)`,
/// `delete(…)`) to govern every tool that does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Reads a file's content, or carries it where it can be read.
    Read,
    /// Sees names, sizes and dates.
    List,
    /// Creates or replaces what is at a path.
    Write,
    /// Removes something from where it is.
    Delete,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 4] = [
        Capability::Read,
        Capability::List,
        Capability::Write,
        Capability::Delete,
    ];

    /// The word rules use for it.
    pub fn word(self) -> &'static str {
        match self {
            Capability::Read => "read",
            Capability::List => "list",
            Capability::Write => "write",
            Capability::Delete => "delete",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.word() == word)
    }
}

/// How far a path argument reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The path itself: a file read, a folder listed.
    Path,
    /// The path and, for a folder, everything inside it, walked whole before the call
    /// (what a move or trash carries).
    Contents,
    /// Where the named argument's contents land (a move's destination receives its source's
    /// tree).
    ContentsOf(&'static str),
    /// A folder walked when the call runs (find, summarize): entries the policy hides are left
    /// out as the walk goes.
    Walk,
}

/// One path argument of a tool.
#[derive(Clone, Copy, Debug)]
pub struct PathArg {
    /// The argument's name.
    pub arg: &'static str,
    /// What the tool does with it.
    pub caps: &'static [Capability],
    /// How far it reaches.
    pub reach: Reach,
}

/// How much of a folder a move or trash walks to judge what it carries. Past either bound the
/// call is denied: a folder that cannot be checked whole is not moved.
pub const CARRY_BOUNDS: Bounds = Bounds {
    max_entries: 100_000,
    max_time: Duration::from_secs(3),
};

/// One permission rule: `word` or `word(pattern)`, where the word is a capability (`read`,
/// `list`, `write`, `delete`) or a tool's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    tool: String,
    pattern: Option<String>,
    /// For `run(…)`: the pattern as a command line ([`crate::run_rules`]).
    run: Option<RunPattern>,
}

/// How a rule's pattern must match: `allow` rules match a whole `run` command, `deny` and `ask`
/// rules any part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    Whole,
    AnyPart,
}

impl Rule {
    /// Parses `word` or `word(pattern)`; the word must be a capability or a tool.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (tool, pattern) = match text.split_once('(') {
            Some((tool, rest)) => {
                let Some(pattern) = rest.strip_suffix(')') else {
                    return Err(format!(
                        "rule {text:?} opens a parenthesis it does not close"
                    ));
                };
                (tool.trim(), Some(pattern.trim().to_owned()))
            }
            None => (text, None),
        };
        if let Some(rest) = tool.strip_prefix("mcp__") {
            connector_rule_word(text, rest)?;
        } else if registry::builtin(tool).is_none() && Capability::from_word(tool).is_none() {
            let mut known: Vec<&str> = Capability::ALL.iter().map(|c| c.word()).collect();
            known.extend(
                registry::BUILTINS
                    .iter()
                    .map(|t| t.name)
                    .filter(|t| Capability::from_word(t).is_none()),
            );
            return Err(format!(
                "rule {text:?} names an unknown capability or tool {tool:?} (known: {}, and \
                 connector tools as mcp__<server>__<tool>, where the tool may hold * and ?)",
                known.join(", ")
            ));
        }
        let run = match (tool, &pattern) {
            ("run", Some(p)) => Some(RunPattern::parse(p)?),
            _ => None,
        };
        Ok(Self {
            tool: tool.to_owned(),
            pattern,
            run,
        })
    }

    fn matches(
        &self,
        tool: &str,
        subjects: &[String],
        home: &Path,
        command: Option<&ParsedCommand>,
        how: Match,
    ) -> bool {
        if !self.names(tool) {
            return false;
        }
        let Some(pattern) = &self.pattern else {
            return true;
        };
        if let Some(run) = &self.run {
            return command.is_some_and(|c| match how {
                Match::Whole => run.allows(c),
                Match::AnyPart => run.catches(c),
            });
        }
        let pattern = expand_tilde(pattern, home);
        // Every subject must match, so `move(~/a/**)` does not cover a move out of `~/a`.
        !subjects.is_empty() && subjects.iter().all(|s| glob(&pattern, s))
    }

    /// The capability this rule names, if its word is one.
    fn capability(&self) -> Option<Capability> {
        Capability::from_word(&self.tool)
    }

    /// Whether this rule's word names `tool`: its name, or for a connector rule
    /// (`mcp__files__read_*`) a glob over connector tool names.
    fn names(&self, tool: &str) -> bool {
        if self.tool.starts_with("mcp__") {
            glob(&self.tool, tool)
        } else {
            self.tool == tool
        }
    }

    /// Whether this rule governs `tool` using a path with `caps`.
    fn governs(&self, tool: &str, caps: &[Capability]) -> bool {
        match self.capability() {
            Some(c) => caps.contains(&c),
            None => self.names(tool),
        }
    }

    fn path_matches(&self, path: &str, home: &Path) -> bool {
        match &self.pattern {
            None => true,
            Some(p) => glob(&expand_tilde(p, home), path),
        }
    }
}

/// The subject of a call, as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Paths the call reads or changes, by argument name (as the tool's
    /// [`ToolSpec::paths`] names them; one argument may give several), already resolved by
    /// [`Policy::resolve`].
    Paths(Vec<(String, PathBuf)>),
    /// Free text: a shell command, text to type, a key combo, a URL, coordinates.
    Text(String),
}

/// The policy of one host.
#[derive(Clone, Debug)]
pub struct Policy {
    home: PathBuf,
    roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
    registry: Arc<Registry>,
    secret_ids: Arc<SecretIds>,
    carry: Bounds,
    deny: Vec<Rule>,
    ask: Vec<Rule>,
    allow: Vec<Rule>,
}

/// Why a path may never be touched.
enum Why {
    Secret(String),
    Protected(PathBuf),
    SameAs(PathBuf),
    Outside,
}

impl Policy {
    /// Builds the policy for `home`, from the config; `own_dirs` (the data and config
    /// directories of this host) are protected like secrets. Walks the secret locations to learn
    /// the identities of what they hold (bounded: [`secrets::MAX_ID_ENTRIES`]).
    pub fn new(config: &Config, home: &Path, own_dirs: &[&Path]) -> Result<Self, String> {
        let home = canonical_or_self(home);
        let mut roots = Vec::new();
        for r in &config.roots {
            let p = resolve_path(&home, r);
            if !p.is_dir() {
                return Err(format!(
                    "root {r:?} ({}) is not an existing folder",
                    p.display()
                ));
            }
            roots.push(p);
        }
        let protected: Vec<PathBuf> = own_dirs
            .iter()
            .map(|d| resolve_path(&home, &d.to_string_lossy()))
            .collect();
        let parse = |rules: &[String]| -> Result<Vec<Rule>, String> {
            rules.iter().map(|r| Rule::parse(r)).collect()
        };
        Ok(Self {
            deny: parse(&config.permissions.deny)?,
            ask: parse(&config.permissions.ask)?,
            allow: parse(&config.permissions.allow)?,
            secret_ids: Arc::new(SecretIds::new(&home, &protected)),
            registry: Arc::new(Registry::new()),
            carry: CARRY_BOUNDS,
            home,
            roots,
            protected,
        })
    }

    /// The tool registry this policy judges by: the built-in tools and the connectors' tools
    /// of the moment (shared: a connector registering its tools here is judged at once).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The subject of a call of connector tool `spec`: its path arguments
    /// ([`registry::connector_path_args`]) resolved like a person's (and, where it differs, as
    /// `..` folded by the text before links are followed: a server may do either), or, with none, the
    /// arguments as canonical JSON text (so name-only rules and the default decide). Errors
    /// when an argument that must be a path is not one the desktop can check (the call is
    /// then refused).
    pub fn connector_subject(&self, args: &serde_json::Value) -> Result<Subject, String> {
        let found = registry::connector_path_args(args)?;
        if found.is_empty() {
            return Ok(Subject::Text(
                serde_json::to_string(args).unwrap_or_default(),
            ));
        }
        // A server may fold `..` by the text before it follows links (Node's `path.resolve`
        // does), where the desktop follows links first: where the two differ, both are judged.
        let mut paths = Vec::new();
        for (arg, text) in found {
            let linked = self.resolve(&text);
            let folded = resolve_path(&self.home, &fold_dot_dot(&self.home, &text));
            let differ = folded != linked;
            paths.push((arg.to_owned(), linked));
            if differ {
                paths.push((arg.to_owned(), folded));
            }
        }
        Ok(Subject::Paths(paths))
    }

    /// The home directory (canonical).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The roots (canonical).
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Resolves a path as a person typed it: `~`, relative to home, `..`, symlinks.
    pub fn resolve(&self, text: &str) -> PathBuf {
        resolve_path(&self.home, text)
    }

    /// The identities of the secret files, looked at again (rebuilt if a secret folder
    /// changed): the [`Fence`] every file operation of a call checks against.
    pub fn fence(&self) -> Arc<IdSnapshot> {
        self.secret_ids.refresh()
    }

    /// Why `path` (resolved) may never be touched, if it may not.
    pub fn forbidden(&self, path: &Path) -> Option<String> {
        self.why(path).map(|w| self.sentence(path, &w))
    }

    fn why(&self, path: &Path) -> Option<Why> {
        if let Some(w) = self.secret(path) {
            return Some(w);
        }
        if !self.roots.iter().any(|r| path.starts_with(r)) {
            return Some(Why::Outside);
        }
        None
    }

    /// A secret or protected location, by name and path (identity is checked by the caller).
    fn secret(&self, path: &Path) -> Option<Why> {
        if let Some((_, pattern)) = secrets::secret_component(path) {
            return Some(Why::Secret(pattern.to_owned()));
        }
        if let Ok(rel) = path.strip_prefix(&self.home)
            && let Some(l) = secrets::LOCATIONS.containing(rel)
        {
            return Some(Why::Secret(l.to_owned()));
        }
        if let Some(t) = self.secret_ids.snapshot().target_containing(path) {
            return Some(Why::Secret(self.show(t)));
        }
        self.protected
            .iter()
            .find(|p| path.starts_with(p))
            .map(|p| Why::Protected(p.clone()))
    }

    fn sentence(&self, path: &Path, why: &Why) -> String {
        let shown = self.show(path);
        match why {
            Why::Secret(what) => {
                format!("{shown} is a secret location ({what}); Deskhand never touches it")
            }
            Why::Protected(p) => format!(
                "{shown} is a protected location ({}); Deskhand never touches it",
                self.show(p)
            ),
            Why::SameAs(secret) => format!(
                "{shown} is the same file as {} (a hard link or a mount of it), a secret location; Deskhand never touches it",
                self.show(secret)
            ),
            Why::Outside => {
                let roots: Vec<String> = self.roots.iter().map(|r| self.show(r)).collect();
                format!(
                    "{shown} is outside the folders this desktop shares ({})",
                    roots.join(", ")
                )
            }
        }
    }

    /// The same, for something a folder holds: "~/x holds ~/x/.ssh, a secret location …".
    fn held(&self, root: &Path, path: &Path, why: &Why) -> String {
        format!("{} holds {}", self.show(root), self.sentence(path, why))
    }

    /// What a sandboxed shell command must neither read, write nor execute, whatever its text:
    /// the host's own directories, the secret locations under home and the secret folder names
    /// directly under home (resolved). Secret names deeper in the roots (`.env` files, a
    /// project's `.ssh`) are found by walking the roots with [`Policy::skip`].
    pub fn sandbox_hidden(&self) -> Vec<PathBuf> {
        let mut hidden = self.protected.clone();
        hidden.extend(
            SECRET_HOME_LOCATIONS
                .iter()
                .map(|d| resolve_path(&self.home, &self.home.join(d).to_string_lossy())),
        );
        // Secret names right under home (`~/.ssh`, `~/.aws`, `~/.netrc`, …), present or not:
        // the sandbox must also keep a command from creating one.
        hidden.extend(
            SECRET_NAMES
                .iter()
                .filter(|n| !n.contains('*'))
                .map(|n| resolve_path(&self.home, &self.home.join(n).to_string_lossy())),
        );
        if let Ok(entries) = std::fs::read_dir(&self.home) {
            hidden.extend(
                entries
                    .flatten()
                    .filter(|e| secrets::secret_name(&e.file_name()).is_some())
                    .map(|e| e.path()),
            );
        }
        hidden.sort();
        hidden.dedup();
        hidden
    }

    /// The locations the shell sandbox keeps read-only: the persistence locations at fixed
    /// places, resolved, present or not. See [`Policy::sandbox_read_only_inside`] for the rest.
    pub fn sandbox_read_only(&self) -> Vec<PathBuf> {
        persistence::fixed(&self.home)
            .iter()
            .map(|p| resolve_path(&self.home, &p.to_string_lossy()))
            .collect()
    }

    /// The persistence locations found anywhere, `(folder name, name inside it)`: in every
    /// `.git` folder of the roots, `hooks` and `config` are read-only in the shell sandbox.
    pub fn sandbox_read_only_inside(&self) -> Vec<(&'static str, &'static str)> {
        persistence::anywhere()
    }

    /// For directory walks: true for what a walk must neither report nor enter.
    pub fn skip(&self, path: &Path) -> bool {
        self.forbidden(path).is_some()
    }

    /// For walks and listings: whether `tool` must leave `path` out of what it shows when
    /// using it with `cap` — a forbidden location, or a path a deny or ask rule governs (a walk
    /// cannot stop to ask).
    pub fn hidden(&self, tool: &str, cap: Capability, path: &Path) -> bool {
        if self.why(path).is_some() {
            return true;
        }
        let s = path.to_string_lossy();
        self.deny
            .iter()
            .chain(&self.ask)
            .any(|r| r.governs(tool, &[cap]) && r.path_matches(&s, &self.home))
    }

    /// The persistence location `path` would put something into, if any, as "LOCATION (WHAT)".
    /// With `folder`, a persistence location inside `path` counts too (a folder moved there
    /// lands in it).
    pub fn persistence(&self, path: &Path, folder: bool) -> Option<String> {
        let hit = persistence::location_of(&self.home, path).or_else(|| {
            folder
                .then(|| persistence::location_inside(&self.home, path))
                .flatten()
        });
        hit.map(|(l, what)| {
            let shown = if l.starts_with('/') || l.starts_with("**/") {
                l.to_owned()
            } else {
                format!("~/{l}")
            };
            format!("{shown}: {what}")
        })
    }

    /// Judges a call. Paths must come from [`Policy::resolve`]. A call that moves or trashes a
    /// folder walks it (bounded, see [`CARRY_BOUNDS`]): run it off the async threads.
    pub fn judge(&self, tool: &str, subject: &Subject) -> Verdict {
        let Some(spec) = self.registry.get(tool) else {
            return Verdict::Deny(format!("{tool:?} is not a tool this desktop has"));
        };
        match subject {
            // No path given: nothing for path rules to govern, so the name rules and the
            // default decide (never an allow for want of a rule).
            Subject::Paths(paths) if paths.is_empty() => self.judge_text(&spec, ""),
            Subject::Paths(paths) => self.judge_paths(&spec, paths),
            Subject::Text(t) => self.judge_text(&spec, t),
        }
    }

    fn judge_text(&self, spec: &ToolSpec, text: &str) -> Verdict {
        let tool = &*spec.name;
        let subjects = vec![text.to_owned()];
        // A shell command is parsed once, and `run` rules match the parse, not the text.
        let command = (tool == "run").then(|| ParsedCommand::parse(text));
        let command = command.as_ref();
        let hit = |r: &Rule, how| r.matches(tool, &subjects, &self.home, command, how);
        if let Some(r) = self.deny.iter().find(|r| hit(r, Match::AnyPart)) {
            return Verdict::Deny(format!("the desktop's rules deny this ({})", r.show()));
        }
        if self.ask.iter().any(|r| hit(r, Match::AnyPart)) {
            return Verdict::Ask;
        }
        if self.allow.iter().any(|r| hit(r, Match::Whole)) {
            return Verdict::Allow;
        }
        default_verdict(spec)
    }

    fn judge_paths(&self, spec: &ToolSpec, paths: &[(String, PathBuf)]) -> Verdict {
        let fence = self.fence();
        let mut scan = RuleScan::new(self, &spec.name);
        let mut given: Vec<(&PathArg, &Path)> = Vec::new();
        for (arg, path) in paths {
            let Some(use_) = spec.paths.iter().find(|u| u.arg == arg) else {
                return Verdict::Deny(format!("`{}` takes no path argument `{arg}`", spec.name));
            };
            if let Some(why) = self.forbidden(path) {
                return Verdict::Deny(why);
            }
            if let Ok(meta) = std::fs::symlink_metadata(path)
                && let Some(secret) = fence.secret(FileId::of_metadata(&meta))
            {
                return Verdict::Deny(self.sentence(path, &Why::SameAs(secret.to_path_buf())));
            }
            if let ControlFlow::Break(why) = scan.touch(use_.caps, path) {
                return Verdict::Deny(why);
            }
            given.push((use_, path));
        }
        let connector = matches!(spec.source, registry::Source::Connector { .. });
        for &(use_, root) in &given {
            if use_.reach != Reach::Contents
                || !std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir())
            {
                continue;
            }
            let landing: Vec<(&PathArg, &Path)> = given
                .iter()
                .filter(|(u, _)| u.reach == Reach::ContentsOf(use_.arg))
                .copied()
                .collect();
            let mut visit = |rel: &Path, path: &Path, meta: &crate::tools::safe_fs::Meta| {
                if let Some(why) = self.secret(path) {
                    return ControlFlow::Break(self.held(root, path, &why));
                }
                if let Some(secret) = fence.secret(meta.id) {
                    return ControlFlow::Break(self.held(
                        root,
                        path,
                        &Why::SameAs(secret.to_path_buf()),
                    ));
                }
                // A connector follows the links in a folder it is given: one is judged by
                // where it leads (a secret, out of the roots, a hard link to a secret).
                if connector && meta.file_type == rustix::fs::FileType::Symlink {
                    let to = canonical_or_self(path);
                    if let Some(why) = self.why(&to) {
                        return ControlFlow::Break(self.held(root, path, &why));
                    }
                    if let Ok(m) = std::fs::metadata(&to)
                        && let Some(secret) = fence.secret(FileId::of_metadata(&m))
                    {
                        return ControlFlow::Break(self.held(
                            root,
                            path,
                            &Why::SameAs(secret.to_path_buf()),
                        ));
                    }
                    scan.touch(use_.caps, &to)?;
                }
                scan.touch(use_.caps, path)?;
                for (u, dest) in &landing {
                    let q = dest.join(rel);
                    if let Some(why) = self.secret(&q) {
                        return ControlFlow::Break(format!(
                            "{} {} would put {} there: {}",
                            if spec.name == "copy" {
                                "copying"
                            } else {
                                "moving"
                            },
                            self.show(root),
                            self.show(path),
                            self.sentence(&q, &why)
                        ));
                    }
                    scan.touch(u.caps, &q)?;
                }
                ControlFlow::Continue(())
            };
            match files::visit_contents(root, self.carry, &*fence, &mut visit) {
                Ok(_) => {}
                Err(ContentsError::Stopped(why)) => return Verdict::Deny(why),
                Err(e @ (ContentsError::TooMany { .. } | ContentsError::TooSlow { .. })) => {
                    return Verdict::Deny(format!(
                        "{} is too large to check ({e}); Deskhand moves, copies or trashes a \
                         folder, or gives one to a connector, only when it can check everything \
                         inside",
                        self.show(root)
                    ));
                }
                Err(ContentsError::Tool(e)) => {
                    return Verdict::Deny(format!(
                        "could not check everything inside {}: {}",
                        self.show(root),
                        e.map_paths(|p| PathBuf::from(self.show(p)))
                    ));
                }
            }
        }
        scan.verdict(spec)
    }

    /// A path as a person reads it: `~/…` inside home.
    pub fn show(&self, path: &Path) -> String {
        match path.strip_prefix(&self.home) {
            Ok(rest) if rest.as_os_str().is_empty() => "~".into(),
            Ok(rest) => format!("~/{}", rest.display()),
            Err(_) => path.display().to_string(),
        }
    }
}

fn default_verdict(spec: &ToolSpec) -> Verdict {
    match spec.default {
        Default::Allow => Verdict::Allow,
        Default::Ask => Verdict::Ask,
    }
}

/// The rules applied to every path a call touches or carries, one path at a time.
struct RuleScan<'p> {
    policy: &'p Policy,
    tool: &'p str,
    ask: bool,
    allowed: bool,
}

impl<'p> RuleScan<'p> {
    fn new(policy: &'p Policy, tool: &'p str) -> Self {
        RuleScan {
            policy,
            tool,
            ask: false,
            allowed: true,
        }
    }

    /// Judges one path; breaks with the reason when a deny rule governs it.
    fn touch(&mut self, caps: &[Capability], path: &Path) -> ControlFlow<String> {
        let (p, tool) = (self.policy, self.tool);
        let s = path.to_string_lossy();
        let hit = |r: &Rule| r.governs(tool, caps) && r.path_matches(&s, &p.home);
        if let Some(r) = p.deny.iter().find(|r| hit(r)) {
            return ControlFlow::Break(format!(
                "the desktop's rules deny this ({}: {})",
                r.show(),
                p.show(path)
            ));
        }
        if !self.ask && p.ask.iter().any(hit) {
            self.ask = true;
        }
        // Something written into a persistence location runs later, unasked: always asked,
        // whatever the allow rules say.
        if !self.ask && caps.contains(&Capability::Write) && p.persistence(path, false).is_some() {
            self.ask = true;
        }
        if self.allowed {
            let by_tool = p
                .allow
                .iter()
                .any(|r| r.capability().is_none() && r.names(tool) && r.path_matches(&s, &p.home));
            let by_caps = !caps.is_empty()
                && caps.iter().all(|c| {
                    p.allow
                        .iter()
                        .any(|r| r.capability() == Some(*c) && r.path_matches(&s, &p.home))
                });
            self.allowed = by_tool || by_caps;
        }
        ControlFlow::Continue(())
    }

    fn verdict(self, spec: &ToolSpec) -> Verdict {
        if self.ask {
            Verdict::Ask
        } else if self.allowed {
            Verdict::Allow
        } else {
            default_verdict(spec)
        }
    }
}

impl Rule {
    fn show(&self) -> String {
        match &self.pattern {
            Some(p) => format!("{}({p})", self.tool),
            None => self.tool.clone(),
        }
    }
}

/// Checks the word of a connector rule, `mcp__<server>__<tool glob>` (`rest` is what follows
/// `mcp__`): the server named exactly, the tool part letters, digits, `-`, `_`, `*` and `?`.
fn connector_rule_word(text: &str, rest: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "rule {text:?}: {why} (a connector rule names mcp__<server>__<tool>, where the tool \
             may hold * and ?, e.g. mcp__files__read_*)"
        ))
    };
    let Some((server, tool)) = rest.split_once("__") else {
        return bad("it names no server");
    };
    if !registry::valid_server(server) {
        return bad("the server's name must be letters, digits, - and _ (no * or ?)");
    }
    if tool.is_empty()
        || !tool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '?'))
    {
        return bad("the tool must be letters, digits, -, _, * and ?");
    }
    Ok(())
}

/// `text` as a path with `~` expanded, made absolute against `home`, and `.`/`..` folded by
/// the text alone (no link followed), as Node's `path.resolve` and Python's `normpath` do.
fn fold_dot_dot(home: &Path, text: &str) -> String {
    let expanded = PathBuf::from(expand_tilde(text.trim(), home));
    let start = if expanded.is_absolute() {
        expanded
    } else {
        home.join(expanded)
    };
    let mut out = PathBuf::new();
    for c in start.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}

fn canonical_or_self(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

fn expand_tilde(text: &str, home: &Path) -> String {
    if text == "~" {
        home.to_string_lossy().into_owned()
    } else if let Some(rest) = text.strip_prefix("~/") {
        home.join(rest).to_string_lossy().into_owned()
    } else {
        text.to_owned()
    }
}

/// Resolves `text` against `home`: `~`, relative paths, `.`/`..`, and every symlink along the
/// way that exists. The part that does not exist yet is kept as written (it cannot be a link).
pub fn resolve_path(home: &Path, text: &str) -> PathBuf {
    let text = text.trim();
    let expanded = PathBuf::from(expand_tilde(text, home));
    let start = if expanded.is_absolute() {
        expanded
    } else {
        home.join(expanded)
    };
    let mut cur = PathBuf::new();
    let mut exists = true;
    for c in start.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => cur.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(name) => {
                cur.push(name);
                if exists {
                    match std::fs::symlink_metadata(&cur) {
                        Ok(_) => {
                            // Follows links (and links to links); a dangling one stays as is.
                            if let Ok(real) = std::fs::canonicalize(&cur) {
                                cur = real;
                            }
                        }
                        Err(_) => exists = false,
                    }
                }
            }
        }
    }
    cur
}

/// Glob: `**` any run of characters, `*` any run without `/`, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p {
            [] => t.is_empty(),
            ['*', '*', rest @ ..] => {
                // `dir/**` also matches `dir` itself.
                let rest = if rest.first() == Some(&'/') && rest.len() == 1 {
                    &rest[1..]
                } else {
                    rest
                };
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            ['*', rest @ ..] => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != '/')
                .any(|i| go(rest, &t[i..])),
            ['?', rest @ ..] => !t.is_empty() && go(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    if let Some(base) = pattern.strip_suffix("/**")
        && t == base.chars().collect::<Vec<_>>()
    {
        return true;
    }
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup_with(ask: &[&str], deny: &[&str]) -> (tempfile::TempDir, Policy) {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("docs")).unwrap();
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::create_dir_all(home.join(".local/share/deskhand")).unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), "secret").unwrap();
        std::fs::write(home.join("docs/a.txt"), "a").unwrap();
        std::fs::write(home.join("docs/.env.local"), "K=V").unwrap();
        std::os::unix::fs::symlink(home.join(".ssh"), home.join("docs/keys")).unwrap();
        std::os::unix::fs::symlink("/etc", home.join("docs/etc")).unwrap();
        let config = Config {
            roots: vec!["~".into()],
            permissions: crate::config::Permissions {
                allow: vec!["run(git status*)".into()],
                ask: ask.iter().map(|s| s.to_string()).collect(),
                deny: deny.iter().map(|s| s.to_string()).collect(),
            },
            ..Config::default()
        };
        let data = home.join(".local/share/deskhand");
        let policy = Policy::new(&config, &home, &[&data]).unwrap();
        (dir, policy)
    }

    fn setup() -> (tempfile::TempDir, Policy) {
        setup_with(&["read(~/docs/private/**)"], &["trash(~/docs/keep/**)"])
    }

    fn one(p: &Policy, tool: &str, path: &str) -> Subject {
        let arg = registry::builtin(tool)
            .and_then(|t| t.paths.first())
            .map_or("path", |a| a.arg);
        Subject::Paths(vec![(arg.into(), p.resolve(path))])
    }

    fn judge(p: &Policy, tool: &str, path: &str) -> Verdict {
        p.judge(tool, &one(p, tool, path))
    }

    fn judge_move(p: &Policy, from: &str, to: &str) -> Verdict {
        p.judge(
            "move",
            &Subject::Paths(vec![
                ("from".into(), p.resolve(from)),
                ("to".into(), p.resolve(to)),
            ]),
        )
    }

    fn denied(v: Verdict) -> String {
        match v {
            Verdict::Deny(why) => why,
            other => panic!("expected a deny, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let (_d, p) = setup();
        assert_eq!(judge(&p, "read", "~/docs/a.txt"), Verdict::Allow);
        assert_eq!(judge(&p, "list", "docs"), Verdict::Allow);
        assert_eq!(judge(&p, "trash", "~/docs/a.txt"), Verdict::Ask);
        assert_eq!(judge_move(&p, "~/docs/a.txt", "~/b.txt"), Verdict::Ask);
        assert_eq!(p.judge("run", &Subject::Text("ls".into())), Verdict::Ask);
        assert_eq!(p.judge("type", &Subject::Text("hi".into())), Verdict::Ask);
        assert!(matches!(
            p.judge("nuke", &Subject::Paths(vec![])),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn secrets_and_escapes_are_denied_whatever_the_rules() {
        let (_d, p) = setup();
        for path in [
            "~/.ssh/id_ed25519",
            "~/docs/keys/id_ed25519", // a symlink into ~/.ssh
            "~/docs/../.ssh",
            "~/docs/.env.local",
            "~/docs/etc/passwd", // a symlink out of the roots
            "~/../../etc/passwd",
            "/etc/passwd",
            "~/.local/share/deskhand/deskhand.redb",
            "~/.ssh/not-yet-there",
        ] {
            assert!(
                matches!(judge(&p, "read", path), Verdict::Deny(_)),
                "{path} must be denied"
            );
        }
        let why = denied(judge(&p, "read", "~/docs/keys/id_ed25519"));
        assert!(why.contains(".ssh"), "{why}");
        assert!(p.skip(&p.resolve("~/.ssh")));
        assert!(!p.skip(&p.resolve("~/docs")));
    }

    /// Finding 9: the wider list of credential names and locations, anywhere they apply.
    #[test]
    fn the_secret_list_covers_credentials_of_every_kind() {
        let (_d, p) = setup();
        for path in [
            "~/.git-credentials",
            "~/.config/git/credentials",
            "~/Projects/app/prod.env",
            "~/Projects/app/.env",
            "~/Projects/app/.envrc",
            "~/Projects/app/.env.production",
            "~/certs/server.pem",
            "~/certs/server.KEY",
            "~/certs/client.p12",
            "~/backup/id_rsa",
            "~/backup/id_ecdsa.pub",
            "~/.docker/config.json",
            "~/.npmrc",
            "~/.pypirc",
            "~/.cargo/credentials.toml",
            "~/.aws/credentials",
            "~/.azure/accessTokens.json",
            "~/.config/gcloud/credentials.db",
            "~/.oci/config",
            "~/.config/doctl/config.yaml",
            "~/.terraform.d/credentials.tfrc.json",
            "~/.kube/config",
            "~/.config/gh/hosts.yml",
            "~/.netrc",
            "~/.pgpass",
            "~/.my.cnf",
            "~/.vault-token",
            "~/.mozilla/firefox/x.default/logins.json",
            "~/.config/google-chrome/Default/Cookies",
            "~/.config/chromium/Default/Login Data",
            "~/.config/BraveSoftware/Brave-Browser/Default/Cookies",
            "~/Library/Application Support/Google/Chrome/Default/Cookies",
            "~/Library/Application Support/Firefox/Profiles/x/key4.db",
            "~/Library/Safari/History.db",
            "~/Library/Cookies/Cookies.binarycookies",
            "~/.password-store/mail.gpg",
            "~/Documents/vault.kdbx",
            "~/.local/share/keyrings/login.keyring",
            "~/Library/Keychains/login.keychain-db",
            "~/.gnupg/private-keys-v1.d/x.key",
            "~/.SSH/config",
        ] {
            let why = denied(judge(&p, "read", path));
            assert!(why.contains("secret location"), "{path}: {why}");
        }
        for path in [
            "~/docs/a.txt",
            "~/.config/deskhand-notes.txt",
            "~/.venv/bin/python",
        ] {
            assert!(
                !matches!(judge(&p, "read", path), Verdict::Deny(_)),
                "{path} is no secret"
            );
        }
    }

    /// Finding 9: a hard link to the key under an innocent name is the key.
    #[test]
    fn a_hard_link_to_a_secret_is_denied_by_identity() {
        let (_d, p) = setup();
        let link = p.home().join("docs/notes.txt");
        std::fs::hard_link(p.home().join(".ssh/id_ed25519"), &link).unwrap();
        let why = denied(judge(&p, "read", "~/docs/notes.txt"));
        assert!(why.contains("same file as ~/.ssh/id_ed25519"), "{why}");
        // A key made after the policy was built is known too.
        std::fs::write(p.home().join(".ssh/id_new"), "new").unwrap();
        std::fs::hard_link(p.home().join(".ssh/id_new"), p.home().join("docs/n2")).unwrap();
        assert!(matches!(judge(&p, "read", "~/docs/n2"), Verdict::Deny(_)));
    }

    /// Finding 3: a folder that holds a secret cannot be moved or trashed.
    #[test]
    fn moving_or_trashing_a_folder_is_judged_by_what_it_holds() {
        let (_d, p) = setup();
        let home = p.home().to_path_buf();
        std::fs::create_dir_all(home.join(".config/gcloud")).unwrap();
        std::fs::write(home.join(".config/gcloud/credentials.db"), "tok").unwrap();
        std::fs::create_dir_all(home.join(".docker")).unwrap();
        std::fs::write(home.join(".docker/config.json"), "{}").unwrap();
        let why = denied(judge_move(&p, "~/.docker", "~/dk"));
        assert!(why.contains("~/.docker is a secret location"), "{why}");
        let why = denied(judge_move(&p, "~/.config", "~/cfg"));
        assert!(why.starts_with("~/.config holds ~/.config/gcloud"), "{why}");
        let why = denied(judge(&p, "trash", "~"));
        assert!(why.starts_with("~ holds ~/."), "{why}");
        // A hard link to the key inside an innocent folder.
        std::fs::create_dir_all(home.join("work/deep")).unwrap();
        std::fs::hard_link(home.join(".ssh/id_ed25519"), home.join("work/deep/x")).unwrap();
        let why = denied(judge(&p, "trash", "~/work"));
        assert!(why.contains("same file as ~/.ssh/id_ed25519"), "{why}");
        let why = denied(judge_move(&p, "~/work", "~/Public"));
        assert!(why.contains("same file as"), "{why}");
        std::fs::remove_file(home.join("work/deep/x")).unwrap();
        assert_eq!(judge(&p, "trash", "~/work"), Verdict::Ask);
        // What lands in a secret place is judged where it lands: a folder moved to ~/.config
        // (absent) with a `gcloud` inside would create ~/.config/gcloud.
        std::fs::remove_dir_all(home.join(".config")).unwrap();
        std::fs::create_dir_all(home.join("stage/gcloud")).unwrap();
        std::fs::write(home.join("stage/gcloud/configurations"), "x").unwrap();
        let why = denied(judge_move(&p, "~/stage", "~/.config"));
        assert!(why.contains("~/.config/gcloud"), "{why}");
    }

    #[test]
    fn a_folder_too_large_to_check_is_denied() {
        let (_d, mut p) = setup();
        p.carry.max_entries = 50;
        let big = p.home().join("big");
        std::fs::create_dir_all(&big).unwrap();
        for i in 0..51 {
            std::fs::write(big.join(i.to_string()), "").unwrap();
        }
        let why = denied(judge(&p, "trash", "~/big"));
        assert!(why.contains("too large to check"), "{why}");
        assert!(why.contains("more than 50 entries"), "{why}");
        p.carry.max_entries = 51;
        assert_eq!(judge(&p, "trash", "~/big"), Verdict::Ask);
    }

    #[test]
    fn rules_deny_then_ask_then_allow() {
        let (_d, p) = setup();
        assert!(matches!(
            judge(&p, "trash", "~/docs/keep/x"),
            Verdict::Deny(_)
        ));
        assert_eq!(judge(&p, "read", "~/docs/private/x"), Verdict::Ask);
        assert_eq!(
            p.judge("run", &Subject::Text("git status --short".into())),
            Verdict::Allow
        );
        assert_eq!(
            p.judge("run", &Subject::Text("git push".into())),
            Verdict::Ask
        );
        assert!(Rule::parse("nuke(*)").is_err());
        assert!(Rule::parse("run(ls").is_err());
        for ok in [
            "write(~/x/**)",
            "delete",
            "list(~/a)",
            "summarize",
            "find(~/**)",
        ] {
            assert!(Rule::parse(ok).is_ok(), "{ok}");
        }
    }

    /// Finding 3: a deny rule on a sub-path applies to a trash of its parent.
    #[test]
    fn rules_on_sub_paths_apply_to_what_a_call_carries() {
        let (_d, p) = setup_with(&[], &["trash(~/all/Projects/**)"]);
        let home = p.home().to_path_buf();
        std::fs::create_dir_all(home.join("all/Projects/app")).unwrap();
        std::fs::write(home.join("all/Projects/app/main.rs"), "x").unwrap();
        std::fs::write(home.join("all/notes.txt"), "x").unwrap();
        let why = denied(judge(&p, "trash", "~/all"));
        assert!(why.contains("trash(~/all/Projects/**)"), "{why}");
        assert!(why.contains("~/all/Projects"), "{why}");
        assert_eq!(judge(&p, "trash", "~/all/notes.txt"), Verdict::Ask);
        // A deny on removing from a folder covers a move whose destination is elsewhere.
        let (_d2, m) = setup_with(&[], &["delete(~/docs/**)"]);
        assert!(matches!(
            judge_move(&m, "~/docs/a.txt", "~/a.txt"),
            Verdict::Deny(_)
        ));
    }

    /// Finding 8: a rule on a capability governs every tool that has it.
    #[test]
    fn rules_govern_capabilities_not_tool_names() {
        let (_d, p) = setup_with(&["read(~/Private/**)"], &["list(~/Hidden/**)"]);
        std::fs::create_dir_all(p.home().join("Private")).unwrap();
        std::fs::write(p.home().join("Private/diary.txt"), "dear diary").unwrap();
        assert_eq!(judge(&p, "summarize", "~/Private"), Verdict::Ask);
        assert_eq!(judge(&p, "read", "~/Private/diary.txt"), Verdict::Ask);
        assert_eq!(judge(&p, "open", "~/Private/diary.txt"), Verdict::Ask);
        // A move carries content out of reach of the rule: it asks even when moves are allowed.
        assert_eq!(
            judge_move(&p, "~/Private/diary.txt", "~/Public.txt"),
            Verdict::Ask
        );
        assert_eq!(judge(&p, "list", "~/Private"), Verdict::Allow);
        assert!(matches!(judge(&p, "find", "~/Hidden"), Verdict::Deny(_)));
        assert!(matches!(
            judge(&p, "summarize", "~/Hidden/x"),
            Verdict::Deny(_)
        ));
        // Walks leave governed entries out.
        assert!(p.hidden(
            "summarize",
            Capability::Read,
            &p.home().join("Private/diary.txt")
        ));
        assert!(!p.hidden(
            "summarize",
            Capability::List,
            &p.home().join("Private/diary.txt")
        ));
        assert!(p.hidden("find", Capability::List, &p.home().join("Hidden")));
        // Allow by capability needs every capability covered.
        let (_d2, a) = setup_with(&[], &[]);
        let mut a = a;
        a.allow = vec![Rule::parse("write(~/In/**)").unwrap()];
        assert_eq!(judge_move(&a, "~/docs/a.txt", "~/In/a.txt"), Verdict::Ask);
        a.allow.push(Rule::parse("read(~/docs/**)").unwrap());
        a.allow.push(Rule::parse("delete(~/docs/**)").unwrap());
        assert_eq!(judge_move(&a, "~/docs/a.txt", "~/In/a.txt"), Verdict::Allow);
        a.allow = vec![Rule::parse("move(~/**)").unwrap()];
        assert_eq!(judge_move(&a, "~/docs/a.txt", "~/In/a.txt"), Verdict::Allow);
    }

    #[test]
    fn persistence_locations_are_named() {
        let (_d, p) = setup();
        let at = |s: &str, folder| p.persistence(&p.resolve(s), folder);
        assert!(
            at("~/.config/autostart/x.desktop", false).is_some_and(|w| w.contains("autostart"))
        );
        assert!(at("~/.bashrc", false).is_some_and(|w| w.contains("shell start-up")));
        assert!(at("~/.config", true).is_some());
        assert_eq!(at("~/.config", false), None);
        assert_eq!(at("~/docs/x", true), None);
    }

    #[test]
    fn run_rules_match_the_parsed_command_not_its_text() {
        let (_d, p) = setup();
        let run = |c: &str| p.judge("run", &Subject::Text(c.into()));
        assert_eq!(run("git status -s"), Verdict::Allow);
        for c in [
            "git status; cd .ssh; cat id_ed25519",
            "git status && rm -rf ~",
            "git status $(cat ~/.ssh/id_ed25519)",
            "git status > ~/.bashrc",
            "git status `cat ~/.ssh/id_ed25519`",
            "git status <(cat ~/.ssh/id_ed25519)",
            "git status ${HOME}",
        ] {
            assert_eq!(run(c), Verdict::Ask, "{c}");
        }
        let config = Config {
            permissions: crate::config::Permissions {
                deny: vec!["run(rm *)".into()],
                ask: vec!["run(git push*)".into()],
                allow: vec!["run(echo *)".into(), "run(git *)".into()],
            },
            ..Config::default()
        };
        let p = Policy::new(&config, p.home(), &[]).unwrap();
        let run = |c: &str| p.judge("run", &Subject::Text(c.into()));
        assert!(matches!(run("echo hi; rm -rf x"), Verdict::Deny(_)));
        assert!(matches!(run("echo $(rm -rf x)"), Verdict::Deny(_)));
        assert_eq!(run("echo hi"), Verdict::Allow);
        assert_eq!(run("git push -f"), Verdict::Ask);
        assert_eq!(run("git pull"), Verdict::Allow);
        let e = Rule::parse("run(git status > x)").unwrap_err();
        assert!(e.contains("redirections"), "{e}");
    }

    #[test]
    fn sandbox_hidden_lists_the_secret_and_own_locations() {
        let (_d, p) = setup();
        let hidden = p.sandbox_hidden();
        assert!(hidden.contains(&p.home().join(".ssh")), "{hidden:?}");
        assert!(hidden.contains(&p.home().join(".local/share/deskhand")));
        assert!(hidden.contains(&p.home().join(".gnupg")));
        let read_only = p.sandbox_read_only();
        for l in [
            ".bashrc",
            ".config/systemd/user",
            ".local/bin",
            "Library/LaunchAgents",
        ] {
            assert!(read_only.contains(&p.home().join(l)), "{l}: {read_only:?}");
        }
    }

    /// Issue 14, item 3: the new tools are judged like the old ones.
    #[test]
    fn write_mkdir_copy_and_search_are_judged() {
        let (_d, p) = setup();
        let home = p.home().to_path_buf();
        let judge_copy = |from: &str, to: &str| {
            p.judge(
                "copy",
                &Subject::Paths(vec![
                    ("from".into(), p.resolve(from)),
                    ("to".into(), p.resolve(to)),
                ]),
            )
        };
        assert_eq!(judge(&p, "write", "~/docs/new.txt"), Verdict::Ask);
        assert_eq!(judge(&p, "mkdir", "~/docs/new/deeper"), Verdict::Ask);
        assert_eq!(judge_copy("~/docs/a.txt", "~/b.txt"), Verdict::Ask);
        assert_eq!(judge(&p, "search", "~/docs"), Verdict::Allow);
        // Into a secret location, or through a link into one: denied whatever the rules.
        for path in [
            "~/.ssh/authorized_keys",
            "~/docs/keys/authorized_keys",
            "~/docs/.env",
            "~/.aws/credentials",
            "/etc/cron.d/x",
        ] {
            assert!(
                matches!(judge(&p, "write", path), Verdict::Deny(_)),
                "{path}"
            );
        }
        assert!(matches!(judge(&p, "mkdir", "~/.ssh/new"), Verdict::Deny(_)));
        assert!(matches!(judge(&p, "search", "~/.ssh"), Verdict::Deny(_)));
        // A replaced file that is a hard link to a secret is the secret.
        std::fs::hard_link(home.join(".ssh/id_ed25519"), home.join("docs/plain.txt")).unwrap();
        let why = denied(judge(&p, "write", "~/docs/plain.txt"));
        assert!(why.contains("same file as ~/.ssh/id_ed25519"), "{why}");
        std::fs::remove_file(home.join("docs/plain.txt")).unwrap();
        // A copy of a folder holding a secret, or landing one in a secret place, is denied.
        std::fs::create_dir_all(home.join("proj/.aws")).unwrap();
        std::fs::write(home.join("proj/.aws/credentials"), "k").unwrap();
        let why = denied(judge_copy("~/proj", "~/Public"));
        assert!(why.starts_with("~/proj holds ~/proj/.aws"), "{why}");
        std::fs::remove_dir_all(home.join("proj/.aws")).unwrap();
        std::fs::create_dir_all(home.join("stage/gcloud")).unwrap();
        std::fs::write(home.join("stage/gcloud/x"), "x").unwrap();
        let why = denied(judge_copy("~/stage", "~/.config"));
        assert!(why.contains("copying ~/stage would put"), "{why}");
        // The source of a copy needs only read: a delete rule does not govern it, a read rule does.
        let (_d2, q) = setup_with(&[], &["delete(~/docs/**)"]);
        let c = q.judge(
            "copy",
            &Subject::Paths(vec![
                ("from".into(), q.resolve("~/docs/a.txt")),
                ("to".into(), q.resolve("~/a.txt")),
            ]),
        );
        assert_eq!(c, Verdict::Ask);
        let (_d3, r) = setup_with(&[], &["read(~/docs/**)"]);
        let c = r.judge(
            "copy",
            &Subject::Paths(vec![
                ("from".into(), r.resolve("~/docs/a.txt")),
                ("to".into(), r.resolve("~/a.txt")),
            ]),
        );
        assert!(matches!(c, Verdict::Deny(_)), "{c:?}");
        // A write rule governs write, mkdir and a copy's destination.
        let (_d4, w) = setup_with(&[], &["write(~/docs/**)"]);
        assert!(matches!(
            judge(&w, "write", "~/docs/n.txt"),
            Verdict::Deny(_)
        ));
        assert!(matches!(judge(&w, "mkdir", "~/docs/n"), Verdict::Deny(_)));
        assert_eq!(judge(&w, "write", "~/n.txt"), Verdict::Ask);
    }

    fn connector_policy(
        allow: &[&str],
        ask: &[&str],
        deny: &[&str],
    ) -> (tempfile::TempDir, Policy) {
        let (d, p) = setup();
        let config = Config {
            roots: vec!["~/docs".into()],
            permissions: crate::config::Permissions {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                ask: ask.iter().map(|s| s.to_string()).collect(),
                deny: deny.iter().map(|s| s.to_string()).collect(),
            },
            ..Config::default()
        };
        let p = Policy::new(&config, p.home(), &[]).unwrap();
        let tool = |name: &str, read_only: bool, destructive: bool| registry::ConnectorTool {
            name: name.into(),
            description: String::new(),
            input_schema: serde_json::json!({"type": "object"}),
            read_only,
            destructive,
        };
        let files = vec![
            tool("read_file", true, false),
            tool("read_secret_notes", true, false),
            tool("write_file", false, false),
        ];
        assert!(
            p.registry()
                .set_connector_tools("files", false, files)
                .is_empty()
        );
        let tracker = vec![
            tool("list_issues", true, false),
            tool("delete_issue", false, true),
        ];
        assert!(
            p.registry()
                .set_connector_tools("tracker", true, tracker)
                .is_empty()
        );
        (d, p)
    }

    fn call(p: &Policy, tool: &str, args: serde_json::Value) -> Verdict {
        match p.connector_subject(&args) {
            Ok(subject) => p.judge(tool, &subject),
            Err(e) => Verdict::Deny(e),
        }
    }

    /// Red team (issue 14): a server may fold `..` by the text before following links (as
    /// Node's `path.resolve` does), the desktop after: a connector's path is judged both ways, so
    /// a link in the roots that leads deeper cannot make `..` land outside them unjudged.
    #[test]
    fn a_connector_path_with_dot_dot_is_judged_as_text_and_as_links_resolve_it() {
        use serde_json::json;
        let (_d, p) = connector_policy(&[], &[], &[]);
        let home = p.home().to_path_buf();
        std::fs::create_dir_all(home.join("docs/a/b")).unwrap();
        std::os::unix::fs::symlink(home.join("docs/a/b"), home.join("docs/l")).unwrap();
        let read = |path: &str| call(&p, "mcp__tracker__list_issues", json!({ "path": path }));
        // Through the link: ~/docs/a/b/../../x.txt = ~/docs/x.txt; by the text: ~/x.txt.
        let v = read("~/docs/l/../../x.txt");
        assert!(matches!(v, Verdict::Deny(_)), "{v:?}");
        assert_eq!(read("~/docs/a/../x.txt"), Verdict::Allow);
    }

    /// Red team (issue 14): a folder given to a connector (a process the desktop does not
    /// sandbox, which may read anything inside and follow links) is judged by what it holds: a
    /// secret by name, a link to a secret or out of the roots, a hard link to a secret.
    #[test]
    fn a_folder_given_to_a_connector_is_judged_by_what_it_holds() {
        use serde_json::json;
        use std::os::unix::fs::symlink;
        let (_d, p) = connector_policy(&[], &[], &[]);
        let home = p.home().to_path_buf();
        std::fs::create_dir_all(home.join("docs/clean/sub")).unwrap();
        std::fs::write(home.join("docs/clean/sub/x.txt"), "x").unwrap();
        symlink(home.join("docs/clean/sub"), home.join("docs/clean/inside")).unwrap();
        std::fs::create_dir_all(home.join("docs/linked")).unwrap();
        symlink(home.join(".ssh/id_ed25519"), home.join("docs/linked/k")).unwrap();
        std::fs::create_dir_all(home.join("docs/out")).unwrap();
        symlink("/etc", home.join("docs/out/etc")).unwrap();
        std::fs::create_dir_all(home.join("docs/hard")).unwrap();
        std::fs::hard_link(home.join(".ssh/id_ed25519"), home.join("docs/hard/k")).unwrap();
        let list = |dir: &str| call(&p, "mcp__tracker__list_issues", json!({ "path": dir }));
        assert_eq!(list("~/docs/clean"), Verdict::Allow);
        for dir in ["~/docs", "~/docs/linked", "~/docs/out", "~/docs/hard"] {
            let v = list(dir);
            assert!(matches!(v, Verdict::Deny(_)), "{dir}: {v:?}");
        }
    }

    /// Red team (issue 14): a trusted read-only connector tool, allowed by default, given a
    /// secret path under another argument name or nested, is denied like one named `path`.
    #[test]
    fn a_connector_path_under_another_name_is_judged() {
        use serde_json::json;
        let (_d, p) = connector_policy(&[], &[], &[]);
        for args in [
            json!({"file": "~/.ssh/id_ed25519"}),
            json!({"filter": {"dir": "~/docs/keys"}}),
            json!({"targets": ["file:///etc/shadow"]}),
        ] {
            let v = call(&p, "mcp__tracker__list_issues", args.clone());
            assert!(matches!(v, Verdict::Deny(_)), "{args}: {v:?}");
        }
        assert_eq!(
            call(
                &p,
                "mcp__tracker__list_issues",
                json!({"file": "~/docs/a.txt"})
            ),
            Verdict::Allow
        );
    }

    /// Red team (issue 14): an allow rule never lets a write into a persistence location (a
    /// shell start-up file, autostart, systemd units, git hooks) skip the ask — by `write`,
    /// `mkdir`, a `copy` of a folder that lands there, or a connector tool that may write.
    #[test]
    fn a_write_into_a_persistence_location_is_asked_whatever_the_allow_rules() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("docs/repo/.git")).unwrap();
        std::fs::create_dir_all(home.join("docs/kit/autostart")).unwrap();
        std::fs::write(home.join("docs/kit/autostart/evil.desktop"), "x").unwrap();
        std::fs::create_dir_all(home.join(".config")).unwrap();
        let config = Config {
            roots: vec!["~".into()],
            permissions: crate::config::Permissions {
                allow: ["write(~/**)", "read(~/**)", "mcp__files__*"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ..std::default::Default::default()
            },
            ..Config::default()
        };
        let p = Policy::new(&config, &home, &[]).unwrap();
        let writer = registry::ConnectorTool {
            name: "write_file".into(),
            description: String::new(),
            input_schema: json!({"type": "object"}),
            read_only: false,
            destructive: false,
        };
        assert!(
            p.registry()
                .set_connector_tools("files", false, vec![writer])
                .is_empty()
        );
        // The rules do allow writing elsewhere without asking.
        assert_eq!(judge(&p, "write", "~/docs/notes.txt"), Verdict::Allow);
        assert_eq!(judge(&p, "mkdir", "~/docs/new"), Verdict::Allow);
        for path in [
            "~/.bashrc",
            "~/.profile",
            "~/.config/autostart/evil.desktop",
            "~/.config/systemd/user/evil.service",
            "~/docs/repo/.git/hooks/pre-commit",
        ] {
            assert_eq!(judge(&p, "write", path), Verdict::Ask, "write {path}");
            assert_eq!(
                call(&p, "mcp__files__write_file", json!({ "path": path })),
                Verdict::Ask,
                "connector write {path}"
            );
        }
        assert_eq!(judge(&p, "mkdir", "~/.config/autostart"), Verdict::Ask);
        let copy = p.judge(
            "copy",
            &Subject::Paths(vec![
                ("from".into(), p.resolve("~/docs/kit")),
                ("to".into(), p.resolve("~/.config")),
            ]),
        );
        assert_eq!(
            copy,
            Verdict::Ask,
            "a folder copied so it lands in autostart"
        );
    }

    /// Issue 14, items 2 and 4: connector tools are judged like built-in ones, rules name them
    /// by glob, a deny beats everything and an ask beats an allow.
    #[test]
    fn connector_tools_are_judged_by_the_same_rules() {
        use serde_json::json;
        let (_d, p) = connector_policy(
            &["mcp__files__read_*", "mcp__tracker__*"],
            &["mcp__files__read_secret*"],
            &["mcp__tracker__delete_*"],
        );
        let a = json!({"path": "~/docs/a.txt"});
        assert_eq!(call(&p, "mcp__files__read_file", a.clone()), Verdict::Allow);
        // Ask beats allow.
        assert_eq!(
            call(&p, "mcp__files__read_secret_notes", a.clone()),
            Verdict::Ask
        );
        // No rule: the default, ask (write_file is not read-only).
        assert_eq!(call(&p, "mcp__files__write_file", a.clone()), Verdict::Ask);
        // Deny beats the allow of the whole server, with paths or without.
        let why = denied(call(&p, "mcp__tracker__delete_issue", json!({"id": 7})));
        assert!(why.contains("mcp__tracker__delete_*"), "{why}");
        assert!(matches!(
            call(&p, "mcp__tracker__delete_issue", a.clone()),
            Verdict::Deny(_)
        ));
        assert_eq!(
            call(&p, "mcp__tracker__list_issues", json!({})),
            Verdict::Allow
        );
        // The second wall: secrets and places outside the roots, whatever the rules.
        for args in [
            json!({"path": "~/.ssh/id_ed25519"}),
            json!({"path": "~/docs/keys/id_ed25519"}),
            json!({"paths": ["~/docs/a.txt", "~/docs/.env.local"]}),
            json!({"uri": "file:///etc/passwd"}),
            json!({"source": "~/docs/a.txt", "destination": "/tmp/x"}),
            json!({"path": "docs/a.txt"}),
            json!({"path": 5}),
        ] {
            assert!(
                matches!(
                    call(&p, "mcp__files__read_file", args.clone()),
                    Verdict::Deny(_)
                ),
                "{args}"
            );
        }
        let uri = format!("file://{}", p.home().join(".ssh/id_ed25519").display());
        let why = denied(call(&p, "mcp__files__read_file", json!({ "uri": uri })));
        assert!(why.contains("secret location"), "{why}");
        // A connector rule never names a built-in tool or another server's.
        let (_d2, q) = connector_policy(&["mcp__files__*"], &[], &["mcp__files__*"]);
        assert_eq!(judge(&q, "read", "~/docs/a.txt"), Verdict::Allow);
        assert_eq!(
            call(&q, "mcp__tracker__list_issues", json!({})),
            Verdict::Allow
        );
        assert!(matches!(
            call(&q, "mcp__files__read_file", a.clone()),
            Verdict::Deny(_)
        ));
        // Unknown connector tools are denied.
        assert!(matches!(
            call(&p, "mcp__files__nope", a.clone()),
            Verdict::Deny(_)
        ));
    }

    /// Issue 14, item 4: the defaults follow the server's trust and the tool's hints, and
    /// capability rules govern connector paths as well.
    #[test]
    fn connector_defaults_and_capability_rules() {
        use serde_json::json;
        let (_d, p) = connector_policy(
            &[],
            &["read(~/docs/private/**)"],
            &["write(~/docs/keep/**)"],
        );
        let a = json!({"path": "~/docs/a.txt"});
        // Untrusted server: even a read-only tool asks.
        assert_eq!(call(&p, "mcp__files__read_file", a.clone()), Verdict::Ask);
        // Trusted and read-only: allowed, unless a rule asks.
        assert_eq!(
            call(&p, "mcp__tracker__list_issues", a.clone()),
            Verdict::Allow
        );
        assert_eq!(
            call(
                &p,
                "mcp__tracker__list_issues",
                json!({"path": "~/docs/private/x"})
            ),
            Verdict::Ask
        );
        // Trusted but not read-only: asks; a write rule governs its paths.
        assert_eq!(
            call(&p, "mcp__tracker__delete_issue", json!({})),
            Verdict::Ask
        );
        assert!(matches!(
            call(
                &p,
                "mcp__tracker__delete_issue",
                json!({"path": "~/docs/keep/a"})
            ),
            Verdict::Deny(_)
        ));
        // A read-only tool's paths are judged as reads only.
        assert_eq!(
            call(
                &p,
                "mcp__tracker__list_issues",
                json!({"path": "~/docs/keep/a"})
            ),
            Verdict::Allow
        );
    }

    #[test]
    fn connector_rule_words() {
        for ok in [
            "mcp__files__read_*",
            "mcp__tracker__delete_*",
            "mcp__files__*(~/docs/**)",
            "mcp__my-server__get?",
            "mcp__a_b__x",
        ] {
            assert!(Rule::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "mcp__*",
            "mcp__files",
            "mcp__files__",
            "mcp__fi*les__x",
            "mcp____x",
            "mcp__files__read/x",
            "mcp__files__a b",
        ] {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.contains("connector rule"), "{bad}: {e}");
        }
    }

    #[test]
    fn globbing() {
        assert!(glob("/a/**", "/a/b/c"));
        assert!(glob("/a/**", "/a"));
        assert!(!glob("/a/*", "/a/b/c"));
        assert!(glob("/a/*.txt", "/a/b.txt"));
        assert!(glob("git status*", "git status -s"));
        assert!(!glob("git status*", "rm -rf / ; git status"));
    }
}
