//! The executor's policy: every tool call is `allow`, `ask` or `deny`, decided here in code —
//! never by the agent.
//!
//! Order of judgement:
//! 1. paths are resolved (`~`, relative paths, `..`, symlinks) before anything is judged;
//! 2. a secret location (`~/.ssh`, `~/.gnupg`, `~/.aws`, `~/.config/gcloud`, keychains and
//!    keyrings, `.env*` files, the host's own data and config directories) or anything outside
//!    the configured roots is denied — no rule and no approval can change that;
//! 3. the config's `deny` rules, then `ask`, then `allow` (first match wins in that order);
//!    `run(…)` rules match the parsed command, never its text ([`crate::run_rules`]);
//! 4. the default for the tool: reads inside the roots allow, everything that changes the machine
//!    (writes, moves, trash, shell, keyboard and mouse, opening things) asks.

use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::run_rules::{ParsedCommand, RunPattern};

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

/// Every tool the executor knows, with its default verdict.
pub const TOOLS: &[(&str, Default)] = &[
    ("list", Default::Allow),
    ("find", Default::Allow),
    ("read", Default::Allow),
    ("summarize", Default::Allow),
    ("screenshot", Default::Allow),
    ("write", Default::Ask),
    ("move", Default::Ask),
    ("trash", Default::Ask),
    ("run", Default::Ask),
    ("type", Default::Ask),
    ("key", Default::Ask),
    ("click", Default::Ask),
    ("open", Default::Ask),
];

/// A tool's verdict when no rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// Runs without asking.
    Allow,
    /// Needs approval.
    Ask,
}

/// One permission rule: `tool` or `tool(pattern)`.
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
    /// Parses `tool` or `tool(pattern)`; the tool must exist.
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
        if !TOOLS.iter().any(|(t, _)| *t == tool) {
            let known: Vec<&str> = TOOLS.iter().map(|(t, _)| *t).collect();
            return Err(format!(
                "rule {text:?} names an unknown tool {tool:?} (known: {})",
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
        if self.tool != tool {
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
}

/// The subject of a call, as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Paths the call reads or changes (already resolved by [`Policy::resolve`]).
    Paths(Vec<PathBuf>),
    /// Free text: a shell command, text to type, a key combo, a URL, coordinates.
    Text(String),
}

/// The policy of one host.
#[derive(Clone, Debug)]
pub struct Policy {
    home: PathBuf,
    roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
    deny: Vec<Rule>,
    ask: Vec<Rule>,
    allow: Vec<Rule>,
}

/// Directory names that hold secrets wherever they are.
const SECRET_DIRS: &[&str] = &[".ssh", ".gnupg", ".aws", ".password-store", ".kube"];
/// Secret locations relative to the home directory.
const SECRET_HOME_PATHS: &[&str] = &[
    ".config/gcloud",
    ".local/share/keyrings",
    "Library/Keychains",
    ".docker/config.json",
    ".netrc",
];

impl Policy {
    /// Builds the policy for `home`, from the config; `own_dirs` (the data and config
    /// directories of this host) are protected like secrets.
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
        let mut protected: Vec<PathBuf> = own_dirs
            .iter()
            .map(|d| resolve_path(&home, &d.to_string_lossy()))
            .collect();
        protected.extend(SECRET_HOME_PATHS.iter().map(|p| home.join(p)));
        let parse = |rules: &[String]| -> Result<Vec<Rule>, String> {
            rules.iter().map(|r| Rule::parse(r)).collect()
        };
        Ok(Self {
            deny: parse(&config.permissions.deny)?,
            ask: parse(&config.permissions.ask)?,
            allow: parse(&config.permissions.allow)?,
            home,
            roots,
            protected,
        })
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

    /// Why `path` (resolved) may never be touched, if it may not.
    pub fn forbidden(&self, path: &Path) -> Option<String> {
        if let Some(why) = self.secret(path) {
            return Some(why);
        }
        if !self.roots.iter().any(|r| path.starts_with(r)) {
            let roots: Vec<String> = self.roots.iter().map(|r| self.show(r)).collect();
            return Some(format!(
                "{} is outside the folders this desktop shares ({})",
                self.show(path),
                roots.join(", ")
            ));
        }
        None
    }

    fn secret(&self, path: &Path) -> Option<String> {
        for c in path.components() {
            if let Component::Normal(name) = c {
                let name = name.to_string_lossy();
                if SECRET_DIRS.contains(&name.as_ref()) || name.starts_with(".env") {
                    return Some(format!(
                        "{} is a secret location ({name}); Deskhand never touches it",
                        self.show(path)
                    ));
                }
            }
        }
        for p in &self.protected {
            if path.starts_with(p) {
                return Some(format!(
                    "{} is a protected location ({}); Deskhand never touches it",
                    self.show(path),
                    self.show(p)
                ));
            }
        }
        None
    }

    /// What a sandboxed shell command must neither read, write nor execute, whatever its text:
    /// the host's own directories, the secret locations under home and the secret folder names
    /// directly under home (resolved). Secret names deeper in the roots (`.env` files, a
    /// project's `.ssh`) are found by walking the roots with [`Policy::skip`].
    pub fn sandbox_hidden(&self) -> Vec<PathBuf> {
        let mut hidden = self.protected.clone();
        hidden.extend(
            SECRET_DIRS
                .iter()
                .map(|d| resolve_path(&self.home, &self.home.join(d).to_string_lossy())),
        );
        hidden
    }

    /// For directory walks: true for what a walk must neither report nor enter.
    pub fn skip(&self, path: &Path) -> bool {
        self.forbidden(path).is_some()
    }

    /// Judges a call. Paths must come from [`Policy::resolve`].
    pub fn judge(&self, tool: &str, subject: &Subject) -> Verdict {
        let Some((_, default)) = TOOLS.iter().find(|(t, _)| *t == tool) else {
            return Verdict::Deny(format!("{tool:?} is not a tool this desktop has"));
        };
        let subjects: Vec<String> = match subject {
            Subject::Paths(paths) => {
                for p in paths {
                    if let Some(why) = self.forbidden(p) {
                        return Verdict::Deny(why);
                    }
                }
                paths
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect()
            }
            Subject::Text(t) => vec![t.clone()],
        };
        // A shell command is parsed once, and `run` rules match the parse, not the text.
        let command = match (tool, subject) {
            ("run", Subject::Text(t)) => Some(ParsedCommand::parse(t)),
            _ => None,
        };
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
        match default {
            Default::Allow => Verdict::Allow,
            Default::Ask => Verdict::Ask,
        }
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

impl Rule {
    fn show(&self) -> String {
        match &self.pattern {
            Some(p) => format!("{}({p})", self.tool),
            None => self.tool.clone(),
        }
    }
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

    fn setup() -> (tempfile::TempDir, Policy) {
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
                ask: vec!["read(~/docs/private/**)".into()],
                deny: vec!["trash(~/docs/keep/**)".into()],
            },
            ..Config::default()
        };
        let data = home.join(".local/share/deskhand");
        let policy = Policy::new(&config, &home, &[&data]).unwrap();
        (dir, policy)
    }

    fn judge(p: &Policy, tool: &str, path: &str) -> Verdict {
        p.judge(tool, &Subject::Paths(vec![p.resolve(path)]))
    }

    #[test]
    fn defaults() {
        let (_d, p) = setup();
        assert_eq!(judge(&p, "read", "~/docs/a.txt"), Verdict::Allow);
        assert_eq!(judge(&p, "list", "docs"), Verdict::Allow);
        assert_eq!(judge(&p, "trash", "~/docs/a.txt"), Verdict::Ask);
        assert_eq!(judge(&p, "move", "~/docs/a.txt"), Verdict::Ask);
        assert_eq!(p.judge("run", &Subject::Text("ls".into())), Verdict::Ask);
        assert_eq!(p.judge("type", &Subject::Text("hi".into())), Verdict::Ask);
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
        let Verdict::Deny(why) = judge(&p, "read", "~/docs/keys/id_ed25519") else {
            unreachable!()
        };
        assert!(why.contains(".ssh"), "{why}");
        assert!(p.skip(&p.resolve("~/.ssh")));
        assert!(!p.skip(&p.resolve("~/docs")));
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
