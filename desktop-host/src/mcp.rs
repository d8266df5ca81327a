//! Connectors: MCP servers whose tools join the desktop's tools as `mcp__<server>__<tool>`.
//!
//! Each `[mcp_servers.NAME]` of the config is one [`Server`], reached through the official SDK
//! (`rmcp`, client only) over stdio (a child process) or streamable HTTP. The [`Connectors`]
//! handle starts a server on first use (or in the background when the host starts), lists its
//! tools, and calls them with a time limit and the task's cancellation. A server that exits or
//! stops answering is stopped and started again on its next use, after a backoff (1 s, 2 s, 4 s, …
//! 60 s; back to 1 s once a start stayed healthy for a minute); its failure is the call's error,
//! in plain words, and the host keeps running.
//!
//! A server's tools, once listed, are handed to the tool [`Registry`] (replacing what it had of
//! that server); a server that stops has its tools removed until it starts again. What a
//! connector may do is decided by the policy and the executor, never here: this only starts,
//! lists and calls.
//!
//! A child process gets a small environment (`PATH`, `HOME`, locale, temp folder, …) plus its
//! `env` table, never the host's whole environment (a model's API key stays with the host). It is
//! the leader of its own process group, and the group is killed when the connection is dropped;
//! if the host dies, the server sees its stdin close and exits.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, ResourceContents};
use rmcp::service::RunningService;
use rmcp::{Peer, RoleClient, ServiceError, ServiceExt};
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, McpServer, McpTransport};
use crate::registry::{ConnectorTool, Registry};

/// What every connector tool's name starts with.
pub const PREFIX: &str = "mcp__";
/// The most text kept from one call's result, in bytes; the rest is cut with a note.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
/// Bytes of a child's stderr kept to explain its failure.
const STDERR_TAIL: usize = 2048;
/// How long a connection must stay up for its start to count as healthy (backoff reset).
const HEALTHY: Duration = Duration::from_secs(60);
/// The longest wait between two starts of a failing server.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Variables of the host's environment a child server gets (plus its own `env`).
const CHILD_ENV: [&str; 14] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "TZ",
    "XDG_RUNTIME_DIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// `(server, tool)` of a connector tool's name, or `None` for a name that is not one. A
/// server's name never holds `__`, so the first `__` after the prefix ends it.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (server, tool) = rest.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// A tool as the registry takes it, from what its server listed. Annotations are hints:
/// `destructiveHint` counts as true when absent on a tool not marked read-only, as the MCP
/// specification says; the registry decides what they are worth (trust, risk).
fn registry_tool(t: &rmcp::model::Tool) -> ConnectorTool {
    let a = t.annotations.as_ref();
    let read_only = a.and_then(|a| a.read_only_hint).unwrap_or(false);
    let destructive = !read_only && a.and_then(|a| a.destructive_hint).unwrap_or(true);
    ConnectorTool {
        name: t.name.to_string(),
        description: t.description.as_deref().unwrap_or_default().to_owned(),
        input_schema: Value::Object((*t.input_schema).clone()),
        read_only,
        destructive,
    }
}

/// Why a connector call did not give a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// No `[mcp_servers.NAME]` of that name.
    #[error("there is no connector `{0}` (see [mcp_servers] in the config file)")]
    UnknownServer(String),
    /// The server could not be started or reached, or it failed during the call: what happened,
    /// in plain words ("server `files` exited (status 1): …").
    #[error("{0}")]
    Unavailable(String),
    /// The server did not answer in time; it was stopped and is started again on next use.
    #[error(
        "connector `{server}` did not answer within {secs} s; it was stopped and is started again on next use"
    )]
    TimedOut {
        /// The server.
        server: String,
        /// The limit, in seconds.
        secs: u64,
    },
    /// The tool ran and reported an error (`isError`), or the server refused the call.
    #[error("{0}")]
    Tool(String),
    /// The task was cancelled (or the host is stopping).
    #[error("cancelled")]
    Cancelled,
}

/// What one connector's check found: `mcp files: ok (14 tools)` or what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckLine {
    /// The server's name.
    pub name: String,
    /// Whether it started and listed its tools.
    pub ok: bool,
    /// The line to print, without the name: `ok (14 tools)` or the reason.
    pub text: String,
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mcp {}: {}", self.name, self.text)
    }
}

/// Starts every configured server once (all at once, each within its time limit), lists its
/// tools and stops it: one line per server, in the config's order (by name).
pub async fn check(config: &Config) -> Vec<CheckLine> {
    let connectors = Connectors::new(config, Arc::new(Registry::new()));
    let cancel = CancellationToken::new();
    let mut checks = tokio::task::JoinSet::new();
    for (i, server) in connectors.inner.servers.values().enumerate() {
        let (server, cancel) = (server.clone(), cancel.clone());
        checks.spawn(async move {
            let line = match server.live(&cancel, server.timeout).await {
                Ok(live) => CheckLine {
                    name: server.name.clone(),
                    ok: true,
                    text: format!(
                        "ok ({} tool{})",
                        live.tools,
                        if live.tools == 1 { "" } else { "s" }
                    ),
                },
                Err(e) => CheckLine {
                    name: server.name.clone(),
                    ok: false,
                    text: e.to_string(),
                },
            };
            (i, line)
        });
    }
    let mut lines = Vec::new();
    while let Some(r) = checks.join_next().await {
        match r {
            Ok(line) => lines.push(line),
            Err(e) => tracing::warn!("a connector check stopped: {e}"),
        }
    }
    lines.sort_by_key(|(i, _)| *i);
    connectors.shutdown().await;
    lines.into_iter().map(|(_, l)| l).collect()
}

/// The connectors of one host: cheap to clone, shared by the executor and `serve`.
#[derive(Clone, Default)]
pub struct Connectors {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    servers: BTreeMap<String, Arc<Server>>,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.inner.servers.keys()).finish()
    }
}

impl Connectors {
    /// The connectors of `config` (none started yet), whose tools go into `registry` as each
    /// server starts (the policy's: [`crate::policy::Policy::registry`]). A server's time limit
    /// is its `timeout_secs`, else the config's `tool_timeout_secs`.
    pub fn new(config: &Config, registry: Arc<Registry>) -> Self {
        let servers = config
            .mcp_servers
            .iter()
            .map(|(name, c)| {
                let secs = c.timeout_secs.unwrap_or(config.tool_timeout_secs).max(1);
                let server = Server {
                    name: name.clone(),
                    config: c.clone(),
                    timeout: Duration::from_secs(secs),
                    slot: tokio::sync::Mutex::new(Slot::default()),
                    registry: registry.clone(),
                };
                (name.clone(), Arc::new(server))
            })
            .collect();
        Self {
            inner: Arc::new(Inner { servers }),
        }
    }

    /// Whether no connector is configured.
    pub fn is_empty(&self) -> bool {
        self.inner.servers.is_empty()
    }

    /// One line per connector for `deskhand serve`: `files (stdio: npx, untrusted)`.
    pub fn describe(&self) -> Vec<String> {
        self.inner
            .servers
            .values()
            .map(|s| {
                let how = match s.config.transport() {
                    Ok(McpTransport::Stdio { command }) => format!("stdio: {command}"),
                    Ok(McpTransport::Http { url }) => format!("http: {url}"),
                    Err(e) => e,
                };
                let trust = if s.config.trusted {
                    "trusted"
                } else {
                    "untrusted"
                };
                format!("{} ({how}, {trust})", s.name)
            })
            .collect()
    }

    /// Starts every server that is not running, at once; failures are logged (and said again
    /// by the first call that needs the server). Ends when `cancel` fires or all have answered.
    pub async fn start_all(&self, cancel: &CancellationToken) {
        let mut starts = tokio::task::JoinSet::new();
        for server in self.inner.servers.values() {
            let (server, cancel) = (server.clone(), cancel.clone());
            starts.spawn(async move {
                match server.live(&cancel, server.timeout).await {
                    Ok(live) => {
                        tracing::info!("connector {}: started, {} tools", server.name, live.tools)
                    }
                    Err(ConnectorError::Cancelled) => {}
                    // Every error names its connector.
                    Err(e) => tracing::warn!("{e}"),
                }
            });
        }
        tokio::select! {
            _ = async { while starts.join_next().await.is_some() {} } => {}
            _ = cancel.cancelled() => starts.shutdown().await,
        }
    }

    /// Makes sure server `server` runs, its tools in the registry: started (after its backoff,
    /// if it failed last time) when it is not running, bounded by its time limit and `cancel`.
    /// Returns how many tools it has.
    pub async fn ensure(
        &self,
        server: &str,
        cancel: &CancellationToken,
    ) -> Result<usize, ConnectorError> {
        let s = self.server(server)?;
        Ok(s.live(cancel, s.timeout).await?.tools)
    }

    /// Calls `tool` of `server` with `args`, within the server's time limit (its start
    /// included), until `cancel`: the result's content as text (at most [`MAX_RESULT_BYTES`]).
    /// A result marked `isError` is [`ConnectorError::Tool`] with its text. The policy is the
    /// caller's: this only runs.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        args: Map<String, Value>,
        cancel: &CancellationToken,
    ) -> Result<String, ConnectorError> {
        let s = self.server(server)?;
        let deadline = Instant::now() + s.timeout;
        let live = s.live(cancel, s.timeout).await?;
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::select! {
            r = tokio::time::timeout(left, live.peer.call_tool(params)) => r,
            _ = cancel.cancelled() => return Err(ConnectorError::Cancelled),
        };
        match r {
            Ok(Ok(result)) => {
                let text = result_text(&result);
                if result.is_error == Some(true) {
                    Err(ConnectorError::Tool(if text.is_empty() {
                        format!("`{tool}` of connector `{server}` failed without saying why")
                    } else {
                        text
                    }))
                } else {
                    Ok(text)
                }
            }
            Ok(Err(ServiceError::McpError(e))) => Err(ConnectorError::Tool(format!(
                "connector `{server}` refused the call: {}",
                e.message
            ))),
            Ok(Err(e)) => {
                let why = live.failure(&s.name, &e.to_string()).await;
                s.forget(&live, why.clone()).await;
                Err(ConnectorError::Unavailable(why))
            }
            Err(_) => {
                s.forget(
                    &live,
                    format!("did not answer within {} s", s.timeout.as_secs()),
                )
                .await;
                Err(ConnectorError::TimedOut {
                    server: server.to_owned(),
                    secs: s.timeout.as_secs(),
                })
            }
        }
    }

    /// The process id of a running stdio server (what `deskhand status` could show; tests
    /// stop a server with it).
    pub async fn pid(&self, server: &str) -> Option<u32> {
        let s = self.inner.servers.get(server)?;
        let slot = s.slot.lock().await;
        slot.live.as_ref().and_then(|l| l.pid)
    }

    /// Stops every running server (their process groups are killed).
    pub async fn shutdown(&self) {
        for s in self.inner.servers.values() {
            let live = s.slot.lock().await.live.take();
            s.registry.remove_connector(&s.name);
            if let Some(live) = live {
                live.stop().await;
            }
        }
    }

    fn server(&self, name: &str) -> Result<&Arc<Server>, ConnectorError> {
        self.inner
            .servers
            .get(name)
            .ok_or_else(|| ConnectorError::UnknownServer(name.to_owned()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One configured server and its connection, if any.
struct Server {
    name: String,
    config: McpServer,
    timeout: Duration,
    /// Held while a connection is looked at or started: one start at a time.
    slot: tokio::sync::Mutex<Slot>,
    /// Where its tools go while it runs.
    registry: Arc<Registry>,
}

#[derive(Default)]
struct Slot {
    live: Option<Arc<Live>>,
    /// Failures in a row (a start that stayed up [`HEALTHY`] resets it).
    failures: u32,
    failed_at: Option<Instant>,
    last_error: Option<String>,
}

impl Slot {
    fn failed(&mut self, why: String, up_since: Option<Instant>) {
        if up_since.is_some_and(|t| t.elapsed() >= HEALTHY) {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.failed_at = Some(Instant::now());
        self.last_error = Some(why);
    }

    /// How long to wait before the next start.
    fn backoff_left(&self) -> Duration {
        let Some(at) = self.failed_at else {
            return Duration::ZERO;
        };
        let exp = self.failures.saturating_sub(1).min(6);
        let wait = Duration::from_secs(1 << exp).min(MAX_BACKOFF);
        wait.saturating_sub(at.elapsed())
    }
}

/// A running connection.
struct Live {
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    peer: Peer<RoleClient>,
    /// How many of its tools are in the registry.
    tools: usize,
    started: Instant,
    /// stdio: the child, its process id (= its process group) and the tail of its stderr.
    child: Option<tokio::sync::Mutex<tokio::process::Child>>,
    pid: Option<u32>,
    stderr: Arc<StderrTail>,
    _stderr_reader: Option<AbortOnDrop>,
    /// Kills the child's process group when the connection is dropped.
    group: Group,
}

/// A child's process group, killed once: by [`Group::kill`] or when this is dropped.
struct Group(Mutex<Option<u32>>);

impl Group {
    fn new(pid: Option<u32>) -> Self {
        Self(Mutex::new(pid))
    }

    fn kill(&self) {
        kill_group(lock(&self.0).take());
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`STDERR_TAIL`] bytes of a child's stderr, filled by a reader task until the pipe
/// closes.
struct StderrTail {
    bytes: Mutex<Vec<u8>>,
    /// `true` once the reader saw the end of the pipe.
    closed: tokio::sync::watch::Sender<bool>,
}

impl StderrTail {
    fn new(closed: bool) -> Self {
        Self {
            bytes: Mutex::new(Vec::new()),
            closed: tokio::sync::watch::Sender::new(closed),
        }
    }

    /// The tail as text, once the pipe has closed (or after at most 500 ms: a grandchild may
    /// hold it open), cut at a line start when it was cut, so it reads whole.
    async fn text(&self) -> String {
        let mut closed = self.closed.subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(500), closed.wait_for(|c| *c)).await;
        let bytes = lock(&self.bytes).clone();
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        match text.find('\n') {
            Some(i) if bytes.len() >= STDERR_TAIL => text[i + 1..].trim().to_owned(),
            _ => text.to_owned(),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        // The server and whatever it started (npx runs node under it).
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

impl Live {
    /// Whether the connection still works as far as can be seen without a request.
    async fn alive(&self) -> bool {
        if self.peer.is_transport_closed() {
            return false;
        }
        match &self.child {
            Some(child) => matches!(child.lock().await.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// What went wrong, in plain words: for a child that exited, its status and stderr tail;
    /// otherwise `what` (the SDK's error).
    async fn failure(&self, server: &str, what: &str) -> String {
        child_failure(server, self.child.as_ref(), &self.stderr, what).await
    }

    async fn stop(&self) {
        if let Some(service) = self.service.lock().await.take() {
            // Closing sends nothing the server must answer; bounded all the same.
            let _ = tokio::time::timeout(Duration::from_secs(2), service.cancel()).await;
        }
        self.group.kill();
    }
}

/// What went wrong with a connection: for a child that exited, its status and stderr tail;
/// otherwise `what`.
async fn child_failure(
    server: &str,
    child: Option<&tokio::sync::Mutex<tokio::process::Child>>,
    stderr: &StderrTail,
    what: &str,
) -> String {
    if let Some(child) = child {
        // The exit may be seen a moment after the pipe closed.
        let status = {
            let mut c = child.lock().await;
            tokio::time::timeout(Duration::from_millis(500), c.wait())
                .await
                .ok()
                .and_then(Result::ok)
        };
        if let Some(status) = status {
            // The pipe may still hold its last lines: read them before saying what it printed.
            return exited(server, status, &stderr.text().await);
        }
    }
    format!("connector `{server}` failed: {what}")
}

fn exited(server: &str, status: std::process::ExitStatus, tail: &str) -> String {
    let how = match status.code() {
        Some(code) => format!("exited (status {code})"),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                match status.signal() {
                    Some(sig) => format!("was stopped by signal {sig}"),
                    None => "exited".to_owned(),
                }
            }
            #[cfg(not(unix))]
            {
                "exited".to_owned()
            }
        }
    };
    if tail.is_empty() {
        format!("server `{server}` {how}")
    } else {
        format!("server `{server}` {how}: {tail}")
    }
}

impl Server {
    /// The running connection, started (after the backoff, if the last one failed) when there
    /// is none or it died; bounded by `limit` and `cancel`.
    async fn live(
        &self,
        cancel: &CancellationToken,
        limit: Duration,
    ) -> Result<Arc<Live>, ConnectorError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut slot = tokio::select! {
            s = tokio::time::timeout_at(deadline, self.slot.lock()) => match s {
                Ok(s) => s,
                Err(_) => return Err(ConnectorError::Unavailable(format!(
                    "connector `{}` is still starting after {} s",
                    self.name,
                    limit.as_secs()
                ))),
            },
            _ = cancel.cancelled() => return Err(ConnectorError::Cancelled),
        };
        if let Some(live) = slot.live.clone() {
            if live.alive().await {
                return Ok(live);
            }
            let why = live.failure(&self.name, "the connection closed").await;
            slot.live = None;
            slot.failed(why, Some(live.started));
            self.registry.remove_connector(&self.name);
            live.stop().await;
        }
        let wait = slot.backoff_left();
        if !wait.is_zero() {
            let last = slot.last_error.clone().unwrap_or_default();
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(ConnectorError::Unavailable(format!(
                    "{last}; it is started again in {} s",
                    wait.as_secs().max(1)
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return Err(ConnectorError::Cancelled),
            }
        }
        let started = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.start()) => r,
            _ = cancel.cancelled() => return Err(ConnectorError::Cancelled),
        };
        let result = match started {
            Ok(r) => r,
            Err(_) => Err(format!(
                "connector `{}` did not start within {} s",
                self.name,
                limit.as_secs()
            )),
        };
        match result {
            Ok((live, tools)) => {
                let refused =
                    self.registry
                        .set_connector_tools(&self.name, self.config.trusted, tools);
                for e in &refused {
                    tracing::warn!("connector {}: a tool left out: {e}", self.name);
                }
                let live = Arc::new(Live {
                    tools: live.tools.saturating_sub(refused.len()),
                    ..live
                });
                slot.live = Some(live.clone());
                Ok(live)
            }
            Err(why) => {
                slot.failed(why.clone(), None);
                Err(ConnectorError::Unavailable(why))
            }
        }
    }

    /// A failed call: the connection is dropped (its process group killed) if it is still the
    /// current one, so the next use starts the server again.
    async fn forget(&self, live: &Arc<Live>, why: String) {
        let mut slot = self.slot.lock().await;
        if slot.live.as_ref().is_some_and(|l| Arc::ptr_eq(l, live)) {
            slot.live = None;
            slot.failed(why, Some(live.started));
            self.registry.remove_connector(&self.name);
        }
        drop(slot);
        live.stop().await;
    }

    /// A new connection and the tools its server listed.
    async fn start(&self) -> Result<(Live, Vec<ConnectorTool>), String> {
        match self.config.transport() {
            Ok(McpTransport::Stdio { command }) => self.start_stdio(command).await,
            Ok(McpTransport::Http { url }) => self.start_http(url).await,
            Err(e) => Err(format!("connector `{}` {e}", self.name)),
        }
    }

    async fn start_stdio(&self, command: &str) -> Result<(Live, Vec<ConnectorTool>), String> {
        let name = &self.name;
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(&self.config.args)
            .env_clear()
            .envs(
                CHILD_ENV
                    .iter()
                    .filter_map(|k| Some((*k, std::env::var_os(k)?))),
            )
            .envs(&self.config.env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        if let Some(cwd) = &self.config.cwd {
            cmd.current_dir(expand_home(cwd));
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "connector `{name}`: command `{command}` not found (is it installed, and in PATH?)"
            ),
            std::io::ErrorKind::PermissionDenied => {
                format!("connector `{name}`: command `{command}` cannot be run: permission denied")
            }
            _ => format!("connector `{name}`: could not start `{command}`: {e}"),
        })?;
        let pid = child.id();
        let group = Group::new(pid);
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(format!("connector `{name}`: its pipes could not be opened"));
        };
        let tail = Arc::new(StderrTail::new(false));
        let keep = tail.clone();
        let reader = AbortOnDrop(tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut t = lock(&keep.bytes);
                t.extend_from_slice(&buf[..n]);
                if t.len() > STDERR_TAIL {
                    let cut = t.len() - STDERR_TAIL;
                    t.drain(..cut);
                }
            }
            keep.closed.send_replace(true);
        }));
        let child = tokio::sync::Mutex::new(child);
        let service = match ().serve((stdout, stdin)).await {
            Ok(s) => s,
            Err(e) => {
                let what = format!("no MCP handshake: {}", chain(&e));
                return Err(child_failure(name, Some(&child), &tail, &what).await);
            }
        };
        let peer = service.peer().clone();
        let tools: Vec<ConnectorTool> = match peer.list_all_tools().await {
            Ok(tools) => tools.iter().map(registry_tool).collect(),
            Err(e) => {
                let what = format!("could not list its tools: {e}");
                return Err(child_failure(name, Some(&child), &tail, &what).await);
            }
        };
        Ok((
            Live {
                service: tokio::sync::Mutex::new(Some(service)),
                peer,
                tools: tools.len(),
                started: Instant::now(),
                child: Some(child),
                pid,
                stderr: tail,
                _stderr_reader: Some(reader),
                group,
            },
            tools,
        ))
    }

    async fn start_http(&self, url: &str) -> Result<(Live, Vec<ConnectorTool>), String> {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let name = &self.name;
        crate::model::sse::install_crypto();
        let mut headers = HashMap::new();
        for (header, var) in &self.config.headers_env {
            let value = std::env::var(var).map_err(|_| {
                format!(
                    "connector `{name}`: header `{header}` comes from the environment variable \
                     {var}, which is not set (or not UTF-8)"
                )
            })?;
            let name_h = http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("connector `{name}`: {header:?} is not a header name"))?;
            let mut value = http::HeaderValue::from_str(&value).map_err(|_| {
                format!(
                    "connector `{name}`: the value of {var} cannot be sent as header `{header}` \
                     (a line break or another character headers cannot hold)"
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name_h, value);
        }
        let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers);
        let transport = StreamableHttpClientTransport::from_config(config);
        let service = ().serve(transport).await.map_err(|e| {
            if e.is_authorization_required() || e.auth_challenge().is_some() {
                format!(
                    "connector `{name}`: {url} refused the credentials (401 unauthorized){}",
                    if self.config.headers_env.is_empty() {
                        "; it needs a token: see `headers_env`".to_owned()
                    } else {
                        "; check the token in the variables of `headers_env`".to_owned()
                    }
                )
            } else {
                format!("connector `{name}`: could not reach {url}: {}", chain(&e))
            }
        })?;
        let peer = service.peer().clone();
        let tools = peer
            .list_all_tools()
            .await
            .map_err(|e| format!("connector `{name}`: could not list its tools: {e}"))?
            .iter()
            .map(registry_tool)
            .collect::<Vec<_>>();
        Ok((
            Live {
                service: tokio::sync::Mutex::new(Some(service)),
                peer,
                tools: tools.len(),
                started: Instant::now(),
                child: None,
                pid: None,
                stderr: Arc::new(StderrTail::new(true)),
                _stderr_reader: None,
                group: Group::new(None),
            },
            tools,
        ))
    }
}

/// An error with its sources, `a: b: c`, each said once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}

fn expand_home(p: &str) -> PathBuf {
    let home = crate::paths::home_dir();
    match p.strip_prefix('~') {
        Some("") => home,
        Some(rest) if rest.starts_with('/') => home.join(&rest[1..]),
        _ => PathBuf::from(p),
    }
}

/// A call's result as text: text blocks as they are, embedded text resources with their URI,
/// other content named by kind and size; the structured result when there is no content.
/// At most [`MAX_RESULT_BYTES`].
pub fn result_text(r: &CallToolResult) -> String {
    let mut parts: Vec<String> = Vec::new();
    for block in &r.content {
        parts.push(match block {
            ContentBlock::Text(t) => t.text.clone(),
            ContentBlock::Image(i) => {
                format!("[image, {}, {} bytes base64]", i.mime_type, i.data.len())
            }
            ContentBlock::Audio(a) => {
                format!("[audio, {}, {} bytes base64]", a.mime_type, a.data.len())
            }
            ContentBlock::Resource(res) => match &res.resource {
                ResourceContents::TextResourceContents { uri, text, .. } => {
                    format!("[{uri}]\n{text}")
                }
                ResourceContents::BlobResourceContents {
                    uri,
                    mime_type,
                    blob,
                    ..
                } => format!(
                    "[{uri}: {}, {} bytes base64]",
                    mime_type.as_deref().unwrap_or("binary"),
                    blob.len()
                ),
                #[allow(unreachable_patterns)]
                _ => "[a resource]".to_owned(),
            },
            ContentBlock::ResourceLink(l) => format!("[link: {}]", l.uri),
            #[allow(unreachable_patterns)]
            _ => "[content of a kind Deskhand does not show]".to_owned(),
        });
    }
    if parts.is_empty()
        && let Some(s) = &r.structured_content
    {
        parts.push(s.to_string());
    }
    bounded_text(parts.join("\n"), MAX_RESULT_BYTES)
}

fn bounded_text(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let total = s.len();
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(&format!("\n… (cut at {max} of {total} bytes)"));
    s
}

#[cfg(test)]
mod tests;
