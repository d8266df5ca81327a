//! Connectors against real MCP servers from npm (installed by `scripts/mcp-servers`): the
//! reference filesystem server over stdio and the "everything" server over streamable HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::{Config, McpServer};
use crate::policy::{Policy, Verdict};
use crate::registry::{Default, Source};
use deskhand_core::approval::Risk;

/// Where `scripts/mcp-servers` installed the servers.
fn npm() -> PathBuf {
    let dir = std::env::var_os("DESKHAND_NPM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/npm"));
    assert!(
        dir.join("node_modules/.bin/mcp-server-filesystem").exists(),
        "the MCP servers are not installed in {}: run scripts/mcp-servers first",
        dir.display()
    );
    dir
}

fn filesystem_server(root: &Path, trusted: bool) -> McpServer {
    McpServer {
        command: Some(
            npm()
                .join("node_modules/.bin/mcp-server-filesystem")
                .display()
                .to_string(),
        ),
        args: vec![root.display().to_string()],
        trusted,
        ..McpServer::default()
    }
}

fn everything_stdio() -> McpServer {
    McpServer {
        command: Some("node".into()),
        args: vec![
            npm()
                .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
                .display()
                .to_string(),
            "stdio".into(),
        ],
        ..McpServer::default()
    }
}

fn config(servers: &[(&str, McpServer)], home: &Path) -> Config {
    Config {
        roots: vec![home.display().to_string()],
        tool_timeout_secs: 30,
        mcp_servers: servers
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
        ..Config::default()
    }
}

/// A home with a document, a secret key and a folder outside it.
fn home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let home = std::fs::canonicalize(dir.path()).unwrap().join("home");
    std::fs::create_dir_all(home.join("docs")).unwrap();
    std::fs::write(home.join("docs/notes.txt"), "first line\nsecond line\n").unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY").unwrap();
    (dir, home)
}

fn policy(config: &Config, home: &Path) -> Policy {
    Policy::new(config, home, &[]).unwrap()
}

fn args(v: serde_json::Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn names_split_at_the_first_double_underscore_after_the_prefix() {
    assert_eq!(
        split_name("mcp__files__read_text_file"),
        Some(("files", "read_text_file"))
    );
    assert_eq!(split_name("mcp__a-b__x__y"), Some(("a-b", "x__y")));
    assert_eq!(split_name("mcp__files"), None);
    assert_eq!(split_name("mcp____x"), None);
    assert_eq!(split_name("read"), None);
}

#[tokio::test]
async fn the_filesystem_server_lists_its_tools_into_the_registry_and_reads_a_file() {
    let (_d, home) = home();
    let c = config(&[("files", filesystem_server(&home, false))], &home);
    let p = policy(&c, &home);
    let connectors = Connectors::new(&c, p.registry().clone());
    let cancel = CancellationToken::new();
    assert!(p.registry().get("mcp__files__read_text_file").is_none());
    let n = connectors.ensure("files", &cancel).await.unwrap();
    assert!(n >= 10, "{n} tools");
    let read = p.registry().get("mcp__files__read_text_file").unwrap();
    assert_eq!(read.default, Default::Ask, "untrusted: every tool asks");
    assert_eq!(read.input_schema["type"], "object");
    assert!(
        matches!(&read.source, Source::Connector { server, tool, read_only: true }
            if server == "files" && tool == "read_text_file")
    );
    let write = p.registry().get("mcp__files__write_file").unwrap();
    assert_eq!(write.risk, Risk::High, "destructive");
    let listed = p
        .registry()
        .all()
        .iter()
        .filter(|t| t.name.starts_with("mcp__files__"))
        .count();
    assert_eq!(listed, n);
    assert!(
        p.registry()
            .defs()
            .iter()
            .any(|d| d.name == "mcp__files__write_file")
    );

    let text = connectors
        .call(
            "files",
            "read_text_file",
            args(json!({ "path": home.join("docs/notes.txt") })),
            &cancel,
        )
        .await
        .unwrap();
    assert!(text.contains("first line\nsecond line"), "{text}");
    let e = connectors.ensure("nobody", &cancel).await.unwrap_err();
    assert!(matches!(e, ConnectorError::UnknownServer(_)), "{e}");
    // The server's own refusal (outside its root) is the call's error, in its words.
    let e = connectors
        .call(
            "files",
            "read_text_file",
            args(json!({ "path": "/etc/hostname" })),
            &cancel,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Tool(_)), "{e:?}");
    // Stopped: its tools leave the registry.
    connectors.shutdown().await;
    assert!(p.registry().get("mcp__files__read_text_file").is_none());
}

#[tokio::test]
async fn reads_are_allowed_only_from_a_trusted_server_writes_ask_and_secrets_are_denied() {
    let (_d, home) = home();
    let c = config(
        &[
            ("files", filesystem_server(&home, false)),
            ("trusted", filesystem_server(&home, true)),
        ],
        &home,
    );
    let p = policy(&c, &home);
    let connectors = Connectors::new(&c, p.registry().clone());
    let cancel = CancellationToken::new();
    connectors.ensure("files", &cancel).await.unwrap();
    connectors.ensure("trusted", &cancel).await.unwrap();
    let verdict = |tool: &str, a: serde_json::Value| match p.connector_subject(&a) {
        Ok(subject) => p.judge(tool, &subject),
        Err(e) => Verdict::Deny(e),
    };
    let read = json!({ "path": "~/docs/notes.txt" });
    assert_eq!(
        verdict("mcp__files__read_text_file", read.clone()),
        Verdict::Ask
    );
    assert_eq!(
        verdict("mcp__trusted__read_text_file", read),
        Verdict::Allow
    );

    // A write asks even from a trusted server, shown as high risk.
    assert_eq!(
        verdict(
            "mcp__trusted__write_file",
            json!({ "path": "~/docs/new.txt", "content": "x" })
        ),
        Verdict::Ask
    );
    assert_eq!(
        p.registry().get("mcp__trusted__write_file").unwrap().risk,
        Risk::High
    );

    // The second wall: a secret or a path outside the roots, whatever the server's trust.
    for a in [
        json!({ "path": "~/.ssh/id_ed25519" }),
        json!({ "paths": ["~/docs/notes.txt", "~/.ssh/id_ed25519"] }),
        json!({ "uri": format!("file://{}", home.join(".ssh/id_ed25519").display()) }),
        json!({ "path": "~/docs/../.ssh/id_ed25519" }),
    ] {
        let v = verdict("mcp__trusted__read_text_file", a.clone());
        assert!(
            matches!(&v, Verdict::Deny(why) if why.contains("secret location")),
            "{a}: {v:?}"
        );
    }
    let outside = home.parent().unwrap().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let v = verdict("mcp__trusted__read_text_file", json!({ "path": outside }));
    assert!(
        matches!(&v, Verdict::Deny(why) if why.contains("outside the folders")),
        "{v:?}"
    );
    // A symlink inside the roots to the key is judged where it leads; a hard link by identity.
    std::os::unix::fs::symlink(home.join(".ssh/id_ed25519"), home.join("docs/key")).unwrap();
    std::fs::hard_link(home.join(".ssh/id_ed25519"), home.join("docs/copy")).unwrap();
    for link in ["~/docs/key", "~/docs/copy"] {
        let v = verdict("mcp__trusted__read_text_file", json!({ "path": link }));
        assert!(
            matches!(&v, Verdict::Deny(why) if why.contains("secret")),
            "{link}: {v:?}"
        );
    }
    connectors.shutdown().await;
}

#[tokio::test]
async fn a_killed_server_fails_the_call_with_its_status_and_the_next_call_starts_it_again() {
    let (_d, home) = home();
    let c = config(&[("every", everything_stdio())], &home);
    let connectors = Connectors::new(&c, Arc::new(Registry::new()));
    let cancel = CancellationToken::new();
    let echo = |m: &str| args(json!({ "message": m }));
    let out = connectors
        .call("every", "echo", echo("one"), &cancel)
        .await
        .unwrap();
    assert!(out.contains("one"), "{out}");
    let pid = connectors.pid("every").await.expect("a running child");

    // Killed while a long call runs: that call fails at once, saying so.
    let long = args(json!({ "duration": 20, "steps": 2 }));
    let call = connectors.call("every", "trigger-long-running-operation", long, &cancel);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        kill_group(Some(pid));
    };
    let started = Instant::now();
    let (r, ()) = tokio::join!(call, kill);
    let e = r.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at once"
    );
    let text = e.to_string();
    assert!(
        text.contains("server `every`") && text.contains("signal 9"),
        "{text}"
    );
    // The next call starts it again (after a 1 s backoff) and works.
    let out = connectors
        .call("every", "echo", echo("two"), &cancel)
        .await
        .unwrap();
    assert!(out.contains("two"), "{out}");
    assert_ne!(connectors.pid("every").await, Some(pid));
    connectors.shutdown().await;
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_timed_out_and_a_cancel_stops_waiting() {
    let (_d, home) = home();
    let mut server = everything_stdio();
    server.timeout_secs = Some(2);
    let c = config(&[("every", server)], &home);
    let connectors = Connectors::new(&c, Arc::new(Registry::new()));
    let cancel = CancellationToken::new();
    let long = || args(json!({ "duration": 30, "steps": 1 }));
    connectors.ensure("every", &cancel).await.unwrap();
    let pid = connectors.pid("every").await.unwrap();
    let started = Instant::now();
    let e = connectors
        .call("every", "trigger-long-running-operation", long(), &cancel)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectorError::TimedOut { secs: 2, .. }),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(e.to_string().contains("started again on next use"), "{e}");
    // The hung server was stopped: its process is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );

    let task = CancellationToken::new();
    let stop = task.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.cancel();
    });
    let mut fast = everything_stdio();
    fast.timeout_secs = Some(60);
    let c = config(&[("every", fast)], &home);
    let connectors = Connectors::new(&c, Arc::new(Registry::new()));
    let started = Instant::now();
    let e = connectors
        .call("every", "trigger-long-running-operation", long(), &task)
        .await
        .unwrap_err();
    assert_eq!(e, ConnectorError::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));
    connectors.shutdown().await;
}

#[tokio::test]
async fn a_child_gets_a_small_environment_plus_its_own_variables() {
    let (_d, home) = home();
    let mut server = everything_stdio();
    server.env = [("DESKHAND_GREETING".to_owned(), "hello".to_owned())].into();
    let c = config(&[("every", server)], &home);
    let connectors = Connectors::new(&c, Arc::new(Registry::new()));
    let out = connectors
        .call("every", "get-env", Map::new(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        out.contains("DESKHAND_GREETING") && out.contains("hello"),
        "{out}"
    );
    assert!(out.contains("PATH"), "{out}");
    // Set by cargo for this test process, so in the host's environment, never in the child's.
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
    assert!(!out.contains("CARGO_PKG_NAME"), "{out}");
    connectors.shutdown().await;
}

#[tokio::test]
async fn check_says_in_plain_words_what_is_wrong_with_each_server() {
    let (_d, home) = home();
    let crash = McpServer {
        command: Some("node".into()),
        args: vec![
            "-e".into(),
            "console.error('loading config'); console.error('boom: no API key'); process.exit(3)"
                .into(),
        ],
        ..McpServer::default()
    };
    let missing = McpServer {
        command: Some("deskhand-no-such-mcp-server".into()),
        ..McpServer::default()
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = McpServer {
        url: Some(format!("http://127.0.0.1:{port}/mcp")),
        ..McpServer::default()
    };
    let no_token = McpServer {
        url: Some(format!("http://127.0.0.1:{port}/mcp")),
        headers_env: [(
            "Authorization".to_owned(),
            "DESKHAND_TEST_UNSET_TOKEN".to_owned(),
        )]
        .into(),
        ..McpServer::default()
    };
    let c = config(
        &[
            ("crash", crash),
            ("files", filesystem_server(&home, false)),
            ("missing", missing),
            ("no-token", no_token),
            ("unreachable", unreachable),
        ],
        &home,
    );
    let lines: Vec<String> = check(&c).await.iter().map(|l| l.to_string()).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(
        lines[0],
        "mcp crash: server `crash` exited (status 3): loading config\nboom: no API key"
    );
    assert!(
        lines[1].starts_with("mcp files: ok (") && lines[1].ends_with(" tools)"),
        "{lines:?}"
    );
    assert_eq!(
        lines[2],
        "mcp missing: connector `missing`: command `deskhand-no-such-mcp-server` not found (is it installed, and in PATH?)"
    );
    assert_eq!(
        lines[3],
        "mcp no-token: connector `no-token`: header `Authorization` comes from the environment \
         variable DESKHAND_TEST_UNSET_TOKEN, which is not set (or not UTF-8)"
    );
    assert!(
        lines[4].starts_with(&format!(
            "mcp unreachable: connector `unreachable`: could not reach http://127.0.0.1:{port}/mcp"
        )),
        "{lines:?}"
    );
}

/// The "everything" server over streamable HTTP on a free loopback port; killed when dropped.
struct HttpServer {
    child: tokio::process::Child,
    url: String,
}

impl HttpServer {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("node")
            .arg(npm().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Listening once a connection is accepted (it binds every interface; we use loopback).
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the HTTP server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

#[tokio::test]
async fn the_everything_server_over_http_lists_and_calls_and_its_loss_is_a_clear_error() {
    let (_d, home) = home();
    let mut server = HttpServer::start().await;
    let c = config(
        &[(
            "every",
            McpServer {
                url: Some(server.url.clone()),
                trusted: true,
                ..McpServer::default()
            },
        )],
        &home,
    );
    let p = policy(&c, &home);
    let connectors = Connectors::new(&c, p.registry().clone());
    let cancel = CancellationToken::new();
    connectors.ensure("every", &cancel).await.unwrap();
    let echo = p.registry().get("mcp__every__echo").unwrap();
    assert_eq!(echo.default, Default::Allow, "read-only, trusted");
    assert_eq!(echo.risk, Risk::Low);
    let out = connectors
        .call(
            "every",
            "echo",
            args(json!({ "message": "over http" })),
            &cancel,
        )
        .await
        .unwrap();
    assert!(out.contains("over http"), "{out}");
    let sum = connectors
        .call(
            "every",
            "get-sum",
            args(json!({ "a": 2, "b": 40 })),
            &cancel,
        )
        .await
        .unwrap();
    assert!(sum.contains("42"), "{sum}");
    // A tool's own refusal of bad arguments is the call's error.
    let e = connectors
        .call("every", "get-sum", args(json!({ "a": "two" })), &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Tool(_)), "{e:?}");

    server.child.kill().await.unwrap();
    let e = connectors
        .call("every", "echo", args(json!({ "message": "gone" })), &cancel)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("every"), "{text}");
    connectors.shutdown().await;
}
