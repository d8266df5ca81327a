//! The host's config file (TOML), in the platform's config directory unless given.
//!
//! ```toml
//! roots = ["~"]                    # what tasks may touch (default: the home directory)
//! max_concurrent_tasks = 1
//! max_tasks_per_phone = 16         # queued + running; more are failed at once
//! max_approvals_per_phone = 4      # requests waiting at once; its other tasks wait
//! approval_timeout_secs = 300      # an unanswered request is denied after this
//! shell_timeout_secs = 60
//! tool_timeout_secs = 120          # any other tool call (files, screenshot, open, input)
//! shell_max_output_bytes = 1048576
//! shell_sandbox = "on"             # "off" runs commands without the OS sandbox
//! heartbeat_secs = 30
//! push_min_interval_ms = 10000     # least time between two wake-up pushes to one phone
//! push_to_loopback = false         # wake-up pushes may go to a push server on this machine
//! relay = "default"                # n0's public relays when away from home; "off"; or a URL
//! mdns = true                      # phones find this desktop on the local network
//!
//! [approvals]                      # how several phones' decisions combine (a deny always wins)
//! rule = "settle"                  # "settle" | "unanimous" | "n-of-m"
//! settle_ms = 2000                 # settle: how long a deny can still stop the first approve
//! approvals_needed = 2             # n-of-m: how many phones must approve
//!
//! [model]                          # optional: an LLM agent instead of the command language
//! provider = "anthropic"           # or "openai" for any OpenAI-compatible server
//! name = "claude-sonnet-4-5"
//! base_url = "https://api.anthropic.com"  # openai: including /v1, e.g. http://127.0.0.1:11434/v1
//! api_key_env = "ANTHROPIC_API_KEY"       # the variable holding the key; none for local servers
//! max_steps = 40                   # model requests per task
//! max_task_secs = 1800             # wall time per task
//! max_task_tokens = 1000000        # input + output tokens per task
//! max_output_tokens = 4096         # per request
//!
//! [permissions]                    # tool + pattern, like Claude Code's rules
//! allow = ["run(git status*)"]
//! ask = ["read(~/Private/**)"]
//! deny = ["trash(~/Projects/**)"]
//!
//! [mcp_servers.files]              # a connector: an MCP server run as a child process (stdio)
//! command = "npx"
//! args = ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/Documents"]
//! env = {}                         # literal values added to its environment
//! trusted = false                  # true: its read-only tools run without asking
//!
//! [mcp_servers.tracker]            # an MCP server over streamable HTTP
//! url = "http://127.0.0.1:3001/mcp"
//! headers_env = { Authorization = "TRACKER_TOKEN" }   # header ← the variable holding its value
//! ```
//!
//! Secret locations and anything outside `roots` are denied whatever the rules say.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deskhand_core::approval::DecisionRule;
use serde::{Deserialize, Serialize};

/// Rules by verdict; each entry is `tool` or `tool(pattern)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Calls that run without asking.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Calls that need a phone's signed approval.
    #[serde(default)]
    pub ask: Vec<String>,
    /// Calls that are refused.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Which decision rule combines several phones' answers (see [`DecisionRule`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleName {
    /// The first approve acts after a settle window in which any deny wins (the default).
    #[default]
    Settle,
    /// Every paired phone approves.
    Unanimous,
    /// `approvals_needed` phones approve.
    NOfM,
}

/// `[approvals]`: how the desktop combines the decisions of several phones. With one phone
/// paired, its first approve acts at once under `settle`; in every rule a valid deny that arrives
/// before the desktop resolves wins, and a request unanswered at its expiry is denied.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Approvals {
    /// The rule.
    pub rule: RuleName,
    /// `settle`: milliseconds after the desktop first sees an approve during which a deny still
    /// wins (0 to 60,000).
    pub settle_ms: u64,
    /// `n-of-m`: approvals from different paired phones needed (at least 1; every paired phone
    /// when fewer are paired).
    pub approvals_needed: u32,
}

impl Default for Approvals {
    fn default() -> Self {
        Self {
            rule: RuleName::Settle,
            settle_ms: 2_000,
            approvals_needed: 2,
        }
    }
}

impl Approvals {
    /// The rule the executor applies.
    pub fn rule(&self) -> DecisionRule {
        match self.rule {
            RuleName::Settle => DecisionRule::Settle {
                settle_ms: self.settle_ms as i64,
            },
            RuleName::Unanimous => DecisionRule::Unanimous,
            RuleName::NOfM => DecisionRule::NOfM {
                n: self.approvals_needed,
            },
        }
    }
}

/// Whether shell commands run in the OS sandbox (`tools::sandbox`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShellSandbox {
    /// Always; a machine without a sandbox refuses to run commands (the default).
    #[default]
    On,
    /// Never: commands can read and write whatever the user can. Only by explicit choice.
    Off,
}

/// `[mcp_servers.NAME]`: one connector, an MCP server whose tools join the registry as
/// `mcp__NAME__TOOL`. Either `command` (a child process spoken to over stdio) or `url` (streamable
/// HTTP), never both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// stdio: the program to run (looked up in `PATH` when it has no `/`).
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: variables added to its environment, as literal values.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdio: its working directory (`~` is home); the host's own when absent.
    pub cwd: Option<String>,
    /// Streamable HTTP: the endpoint (`http://` or `https://`).
    pub url: Option<String>,
    /// Streamable HTTP: header name → the environment variable that holds its value (a token is
    /// never written in this file, and its value is never logged).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Whether its `readOnlyHint` tools may run without asking. Annotations come from a process
    /// Deskhand does not control: untrusted (the default), every tool of it asks.
    #[serde(default)]
    pub trusted: bool,
    /// Seconds one call (and the start) may take; `tool_timeout_secs` when absent.
    pub timeout_secs: Option<u64>,
}

/// How a connector is reached, from [`McpServer::transport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McpTransport<'a> {
    /// A child process over stdio.
    Stdio {
        /// The program.
        command: &'a str,
    },
    /// Streamable HTTP.
    Http {
        /// The endpoint.
        url: &'a str,
    },
}

impl McpServer {
    /// How it is reached; `Err` says what is wrong (both `command` and `url`, or neither, or
    /// settings of one kind given to the other).
    pub fn transport(&self) -> Result<McpTransport<'_>, String> {
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => Err("has both `command` and `url`: give `command` (with \
                                      `args`) for a server run as a child process, or `url` \
                                      for one reached over HTTP"
                .into()),
            (None, None) => Err(
                "needs `command` (a server run as a child process) or `url` \
                                 (a server reached over HTTP)"
                    .into(),
            ),
            (Some(c), None) => {
                if c.trim().is_empty() {
                    return Err("`command` is empty".into());
                }
                if !self.headers_env.is_empty() {
                    return Err("`headers_env` is for a server with `url`, not `command`".into());
                }
                Ok(McpTransport::Stdio { command: c })
            }
            (None, Some(u)) => {
                if !self.args.is_empty() || !self.env.is_empty() || self.cwd.is_some() {
                    return Err(
                        "`args`, `env` and `cwd` are for a server with `command`, not `url`".into(),
                    );
                }
                let l = u.to_ascii_lowercase();
                if !(l.starts_with("http://") || l.starts_with("https://")) {
                    return Err(format!("`url` {u:?} must start with http:// or https://"));
                }
                Ok(McpTransport::Http { url: u })
            }
        }
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        let ok_name = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            && !name.contains("__");
        if !ok_name {
            return Err(format!(
                "`mcp_servers.{name}`: a connector's name is 1 to 32 of a-z, 0-9, `_` and `-`, \
                 without `__` (its tools are named mcp__NAME__TOOL)"
            ));
        }
        let at = |e: String| format!("`mcp_servers.{name}` {e}");
        self.transport().map_err(at)?;
        if self.timeout_secs == Some(0) {
            return Err(at("`timeout_secs` must be at least 1".into()));
        }
        for (header, var) in &self.headers_env {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(at(format!(
                    "`headers_env`: {header:?} is not a header name"
                )));
            }
            if var.is_empty() || var.contains(['=', '\0']) {
                return Err(at(format!(
                    "`headers_env.{header}`: {var:?} is not an environment variable name"
                )));
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(at(format!("`env`: {key:?} is not a variable name")));
            }
        }
        Ok(())
    }
}

/// Which wire format a model server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The Anthropic Messages API (`POST {base_url}/v1/messages`).
    Anthropic,
    /// OpenAI-compatible chat completions (`POST {base_url}/chat/completions`): OpenAI, Ollama,
    /// llama.cpp's `llama-server`, vLLM, LM Studio.
    Openai,
}

impl Provider {
    /// `anthropic` or `openai`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::Openai => "openai",
        }
    }
}

/// `[model]`: the LLM that carries out requests. Without it the built-in command language does.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The wire format.
    pub provider: Provider,
    /// The model's name, as the server knows it (`claude-sonnet-4-5`, `qwen2.5:7b`).
    pub name: String,
    /// Where the server is. Default: `https://api.anthropic.com` (anthropic),
    /// `https://api.openai.com/v1` (openai; a base URL of this provider includes `/v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key (never the key itself); none for a local
    /// server that wants no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Model requests per task (1 to 1,000).
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Wall time of one task, in seconds.
    #[serde(default = "default_max_task_secs")]
    pub max_task_secs: u64,
    /// Tokens (input + output, as the server counts them) one task may use.
    #[serde(default = "default_max_task_tokens")]
    pub max_task_tokens: u64,
    /// Tokens the model may write per request.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
}

fn default_max_steps() -> u32 {
    40
}
fn default_max_task_secs() -> u64 {
    1800
}
fn default_max_task_tokens() -> u64 {
    1_000_000
}
fn default_max_output_tokens() -> u32 {
    4096
}

impl ModelConfig {
    /// `base_url`, or the provider's default; without a trailing `/`.
    pub fn base_url(&self) -> String {
        let url = match (&self.base_url, self.provider) {
            (Some(u), _) => u.as_str(),
            (None, Provider::Anthropic) => "https://api.anthropic.com",
            (None, Provider::Openai) => "https://api.openai.com/v1",
        };
        url.trim_end_matches('/').to_owned()
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`model.name` is empty: name the model, e.g. claude-sonnet-4-5".into());
        }
        let url = self.base_url();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || reqwest::Url::parse(&url).is_err()
        {
            return Err(format!(
                "`model.base_url` {url:?} is not an http:// or https:// URL"
            ));
        }
        if let Some(var) = &self.api_key_env
            && (var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            // Its value is not shown: it may be a key put in the wrong place.
            return Err(
                "`model.api_key_env` must be the name of an environment variable \
                        (letters, digits, _); the key itself never goes in this file"
                    .into(),
            );
        }
        if !(1..=1000).contains(&self.max_steps) {
            return Err("`model.max_steps` must be between 1 and 1000".into());
        }
        if self.max_task_secs == 0 || self.max_task_tokens == 0 || self.max_output_tokens == 0 {
            return Err(
                "`model.max_task_secs`, `max_task_tokens` and `max_output_tokens` must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The host's settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folders tasks may touch; `~` is the home directory.
    pub roots: Vec<String>,
    /// Tasks run at the same time (a task waiting for an approval holds no slot).
    pub max_concurrent_tasks: usize,
    /// Queued and running tasks one phone may have; more are failed at once, with the reason.
    pub max_tasks_per_phone: usize,
    /// Approval requests one phone's tasks may have waiting at once; its other tasks wait their
    /// turn, and a call beyond it fails.
    pub max_approvals_per_phone: usize,
    /// Seconds before an unanswered approval request counts as denied.
    pub approval_timeout_secs: u64,
    /// Time limit of a shell command.
    pub shell_timeout_secs: u64,
    /// Time limit, in seconds, of every other tool call (reading, listing, finding, moving,
    /// trashing, opening, a screenshot, typing): a call still blocked after it (a hung network
    /// file system, a display that does not answer) is abandoned and the task told so.
    pub tool_timeout_secs: u64,
    /// Bytes of output kept from a shell command (each of stdout and stderr).
    pub shell_max_output_bytes: usize,
    /// Whether shell commands run in the OS sandbox.
    pub shell_sandbox: ShellSandbox,
    /// Seconds between heartbeats written into the document.
    pub heartbeat_secs: u64,
    /// Least time between two wake-up pushes to one phone, in milliseconds (events in between
    /// are folded into the next push; [`crate::push`]).
    pub push_min_interval_ms: u64,
    /// Wake-up pushes may go to a push server on this machine (a loopback address). Off by
    /// default: the endpoint is chosen by a paired phone, and must not make the desktop POST
    /// to its own local services ([`crate::push::refused_destination`]).
    pub push_to_loopback: bool,
    /// How several phones' decisions combine.
    pub approvals: Approvals,
    /// The relay phones reach this desktop through when no direct path works (away from home):
    /// `default` (n0's public relays: they forward encrypted packets and store nothing), `off`,
    /// or the URL of a self-hosted relay. `deskhand serve --relay` overrides it.
    pub relay: String,
    /// Phones find this desktop on the local network (mDNS). `deskhand serve --mdns` overrides it.
    pub mdns: bool,
    /// Permission rules.
    pub permissions: Permissions,
    /// Connectors (MCP servers), by name.
    pub mcp_servers: BTreeMap<String, McpServer>,
    /// The LLM agent; `None`: the built-in command language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            roots: vec!["~".into()],
            max_concurrent_tasks: 1,
            max_tasks_per_phone: 16,
            max_approvals_per_phone: 4,
            approval_timeout_secs: 300,
            shell_timeout_secs: 60,
            tool_timeout_secs: 120,
            shell_max_output_bytes: 1024 * 1024,
            shell_sandbox: ShellSandbox::On,
            heartbeat_secs: 30,
            push_min_interval_ms: 10_000,
            push_to_loopback: false,
            approvals: Approvals::default(),
            relay: "default".into(),
            mdns: true,
            permissions: Permissions::default(),
            mcp_servers: BTreeMap::new(),
            model: None,
        }
    }
}

/// Why the config file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read the config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// It is not valid for this version.
    #[error("the config file {path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Loads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            reason: e.to_string().trim().to_owned(),
        })?;
        config.validate().map_err(|reason| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    /// The `relay` setting, parsed.
    pub fn relay_setting(&self) -> Result<deskhand_sync::RelaySetting, String> {
        self.relay.parse().map_err(|e| format!("`relay`: {e}"))
    }

    fn validate(&self) -> Result<(), String> {
        if self.roots.is_empty() {
            return Err("`roots` is empty: name at least one folder tasks may use".into());
        }
        if self.max_concurrent_tasks == 0 {
            return Err("`max_concurrent_tasks` must be at least 1".into());
        }
        if self.max_tasks_per_phone == 0 || self.max_approvals_per_phone == 0 {
            return Err(
                "`max_tasks_per_phone` and `max_approvals_per_phone` must be at least 1".into(),
            );
        }
        self.relay_setting()?;
        if self.approval_timeout_secs == 0
            || self.shell_timeout_secs == 0
            || self.tool_timeout_secs == 0
        {
            return Err("timeouts must be at least 1 second".into());
        }
        if self.approvals.settle_ms > 60_000 {
            return Err("`approvals.settle_ms` must be at most 60000 (one minute)".into());
        }
        if self.approvals.approvals_needed == 0 {
            return Err("`approvals.approvals_needed` must be at least 1".into());
        }
        if let Some(model) = &self.model {
            model.validate()?;
        }
        for rule in self
            .permissions
            .allow
            .iter()
            .chain(&self.permissions.ask)
            .chain(&self.permissions.deny)
        {
            crate::policy::Rule::parse(rule)?;
        }
        for (name, server) in &self.mcp_servers {
            server.validate(name)?;
        }
        Ok(())
    }
}

/// Where the config file lives by default: `$XDG_CONFIG_HOME/deskhand/config.toml` (Linux),
/// `~/Library/Application Support/deskhand/config.toml` (macOS), `%APPDATA%\deskhand\config.toml`.
/// Absolute.
pub fn default_config_path() -> PathBuf {
    let home = crate::paths::home_dir();
    if cfg!(target_os = "macos") {
        return home.join("Library/Application Support/deskhand/config.toml");
    }
    if cfg!(windows)
        && let Some(appdata) = std::env::var_os("APPDATA")
    {
        return PathBuf::from(appdata).join("deskhand").join("config.toml");
    }
    match crate::paths::xdg_config_home() {
        Some(x) => x.join("deskhand/config.toml"),
        None => home.join(".config/deskhand/config.toml"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_defaults_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        assert_eq!(Config::load(&p).unwrap(), Config::default());
        std::fs::write(
            &p,
            "roots = [\"/srv\"]\n[permissions]\nallow = [\"run(git *)\"]\n",
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.roots, vec!["/srv".to_string()]);
        assert_eq!(c.permissions.allow, vec!["run(git *)".to_string()]);
        std::fs::write(&p, "shell_sandbox = \"off\"\n").unwrap();
        assert_eq!(Config::load(&p).unwrap().shell_sandbox, ShellSandbox::Off);
        std::fs::write(&p, "shell_sandbox = \"maybe\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("shell_sandbox") || e.contains("maybe"), "{e}");
        std::fs::write(&p, "relay = \"https://relay.example.org\"\nmdns = false\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(
            c.relay_setting(),
            Ok(deskhand_sync::RelaySetting::Url(
                "https://relay.example.org".into()
            ))
        );
        assert!(!c.mdns);
        assert_eq!(
            Config::default().relay_setting(),
            Ok(deskhand_sync::RelaySetting::Default)
        );
        std::fs::write(&p, "relay = \"sometimes\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("relay") && e.contains("sometimes"), "{e}");
        std::fs::write(&p, "rootz = [\"/srv\"]\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("rootz"), "{e}");
        std::fs::write(&p, "[approvals]\nrule = \"n-of-m\"\napprovals_needed = 3\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.approvals.rule(), DecisionRule::NOfM { n: 3 });
        assert_eq!(
            Config::default().approvals.rule(),
            DecisionRule::Settle { settle_ms: 2_000 }
        );
        std::fs::write(&p, "[approvals]\nrule = \"majority\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("majority"), "{e}");
        std::fs::write(&p, "[approvals]\nsettle = 5\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("settle"), "{e}");
        std::fs::write(&p, "[approvals]\napprovals_needed = 0\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("approvals_needed"), "{e}");
        std::fs::write(&p, "[permissions]\nallow = [\"explode(*)\"]\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("explode"), "{e}");
    }

    #[test]
    fn connectors_are_stdio_or_http_with_a_plain_name_and_nothing_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            "[mcp_servers.files]\ncommand = \"npx\"\nargs = [\"-y\", \"server\"]\n\
             env = { A = \"1\" }\ncwd = \"~\"\ntrusted = true\ntimeout_secs = 5\n\
             [mcp_servers.tracker]\nurl = \"http://127.0.0.1:3001/mcp\"\n\
             headers_env = { Authorization = \"TRACKER_TOKEN\" }\n",
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        let files = &c.mcp_servers["files"];
        assert_eq!(
            files.transport(),
            Ok(McpTransport::Stdio { command: "npx" })
        );
        assert!(files.trusted && files.timeout_secs == Some(5) && files.env["A"] == "1");
        let tracker = &c.mcp_servers["tracker"];
        assert!(!tracker.trusted, "untrusted by default");
        assert_eq!(
            tracker.transport(),
            Ok(McpTransport::Http {
                url: "http://127.0.0.1:3001/mcp"
            })
        );
        assert_eq!(tracker.headers_env["Authorization"], "TRACKER_TOKEN");
        for (text, says) in [
            (
                "[mcp_servers.x]\ncommand = \"a\"\nurl = \"http://h/mcp\"\n",
                "has both `command` and `url`",
            ),
            ("[mcp_servers.x]\ntrusted = true\n", "needs `command`"),
            (
                "[mcp_servers.x]\ncommand = \"a\"\ntrustd = true\n",
                "trustd",
            ),
            ("[mcp_servers.my__files]\ncommand = \"a\"\n", "without `__`"),
            ("[mcp_servers.Files]\ncommand = \"a\"\n", "a-z, 0-9"),
            (
                "[mcp_servers.x]\nurl = \"ftp://h/mcp\"\n",
                "http:// or https://",
            ),
            (
                "[mcp_servers.x]\nurl = \"http://h/mcp\"\nargs = [\"a\"]\n",
                "are for a server with `command`",
            ),
            (
                "[mcp_servers.x]\ncommand = \"a\"\nheaders_env = { A = \"B\" }\n",
                "is for a server with `url`",
            ),
            (
                "[mcp_servers.x]\nurl = \"http://h/mcp\"\nheaders_env = { \"Bad Header\" = \"B\" }\n",
                "is not a header name",
            ),
            (
                "[mcp_servers.x]\ncommand = \"a\"\ntimeout_secs = 0\n",
                "at least 1",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(&p).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_model_section() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[model]\nprovider = \"anthropic\"\nname = \"claude-x\"\napi_key_env = \"ANTHROPIC_API_KEY\"\n").unwrap();
        let m = Config::load(&p).unwrap().model.unwrap();
        assert_eq!(m.provider, Provider::Anthropic);
        assert_eq!(m.base_url(), "https://api.anthropic.com");
        assert_eq!((m.max_steps, m.max_task_secs), (40, 1800));
        std::fs::write(&p, "[model]\nprovider = \"openai\"\nname = \"qwen2.5\"\nbase_url = \"http://127.0.0.1:11434/v1/\"\nmax_steps = 5\n").unwrap();
        let m = Config::load(&p).unwrap().model.unwrap();
        assert_eq!(m.base_url(), "http://127.0.0.1:11434/v1");
        assert_eq!((m.max_steps, m.api_key_env), (5, None));
        std::fs::write(&p, "[model]\nprovider = \"openai\"\nname = \"gpt\"\n").unwrap();
        assert_eq!(
            Config::load(&p).unwrap().model.unwrap().base_url(),
            "https://api.openai.com/v1"
        );
        for (body, named) in [
            ("provider = \"gemini\"\nname = \"x\"", "gemini"),
            (
                "provider = \"openai\"\nname = \"x\"\napi_key = \"sk-1\"",
                "api_key",
            ),
            ("provider = \"openai\"\nname = \"\"", "model.name"),
            (
                "provider = \"openai\"\nname = \"x\"\nbase_url = \"ftp://h\"",
                "base_url",
            ),
            (
                "provider = \"openai\"\nname = \"x\"\napi_key_env = \"sk-abc-123\"",
                "api_key_env",
            ),
            (
                "provider = \"openai\"\nname = \"x\"\nmax_steps = 0",
                "max_steps",
            ),
            ("name = \"x\"", "provider"),
        ] {
            std::fs::write(&p, format!("[model]\n{body}\n")).unwrap();
            let e = Config::load(&p).unwrap_err().to_string();
            assert!(e.contains(named), "{body}: {e}");
            // A key put where the variable's name goes is not shown whole.
            assert!(!e.contains("sk-abc-123"), "{e}");
        }
    }
}
