//! Shared utilities of Deskhand's multi-process tests: spawn a `deskhand-node` process, talk to
//! it with JSON lines, kill it.

#[allow(clippy::unwrap_used)] // test harness: a poisoned lock is a broken test
pub mod model_server;
pub mod netem;
pub mod netns;
#[allow(clippy::unwrap_used)] // test harness: a missing pipe is a broken test machine
pub mod x11;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

/// A node process.
pub struct NodeProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Its device id.
    pub id: String,
    /// Its direct addresses.
    pub addrs: Vec<SocketAddr>,
    /// Its data directory.
    pub data: PathBuf,
}

/// A free UDP port on loopback (for a desktop that must come back on the same address).
pub fn free_udp_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    s.local_addr().expect("local addr")
}

impl NodeProc {
    /// Starts `bin` (the `deskhand-node` binary) and waits for it to be ready.
    pub fn spawn(bin: &Path, data: &Path, role: &str, listen: Option<SocketAddr>) -> Result<Self> {
        Self::spawn_in(&[], bin, data, role, listen, &[])
    }

    /// Like [`Self::spawn`], run under `prefix` (e.g. `ip netns exec NAME` to start it in a
    /// network namespace), with `extra` arguments (e.g. `--mdns on` for the `app` role).
    pub fn spawn_in(
        prefix: &[&str],
        bin: &Path,
        data: &Path,
        role: &str,
        listen: Option<SocketAddr>,
        extra: &[&str],
    ) -> Result<Self> {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--data")
            .arg(data)
            .arg("--role")
            .arg(role)
            .args(extra);
        if let Some(l) = listen {
            cmd.arg("--listen").arg(l.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.is_empty() {
            let status = child.wait()?;
            bail!("node exited before it was ready ({status})");
        }
        let ready: Value =
            serde_json::from_str(&line).with_context(|| format!("ready line {line:?}"))?;
        let id = ready["id"].as_str().context("id")?.to_owned();
        let addrs = serde_json::from_value(ready["addrs"].clone())?;
        Ok(Self {
            child,
            stdin,
            stdout,
            id,
            addrs,
            data: data.to_owned(),
        })
    }

    /// Sends one command and returns its answer.
    pub fn call(&mut self, cmd: Value) -> Result<Value> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            bail!("node closed its output (it died?) answering {cmd}");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Sends a command without waiting for its answer (read it later with [`Self::answer`]).
    pub fn send_only(&mut self, cmd: Value) -> Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Reads the answer to a command sent with [`Self::send_only`].
    pub fn answer(&mut self) -> Result<Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            bail!("node closed its output (it died?)");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Process id (for RSS readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Like [`Self::call`] but fails unless the answer says ok.
    pub fn ok(&mut self, cmd: Value) -> Result<Value> {
        let v = self.call(cmd.clone())?;
        if v["ok"] != true {
            bail!("{cmd} failed: {v}");
        }
        Ok(v)
    }

    /// Registers `other` as allowed (desktop) or as home (phone).
    pub fn allow(&mut self, other: &NodeProc) -> Result<()> {
        self.ok(json!({"cmd": "allow", "id": other.id, "name": "phone"}))?;
        Ok(())
    }

    /// Sets `desktop` as this phone's home.
    pub fn home(&mut self, desktop: &NodeProc) -> Result<()> {
        self.ok(json!({"cmd": "home", "id": desktop.id, "addrs": desktop.addrs, "name": "desk"}))?;
        Ok(())
    }

    /// Waits until this phone has received the workspace document.
    pub fn wait_doc(&mut self) -> Result<()> {
        self.ok(json!({"cmd": "wait_doc", "timeout_ms": 20_000}))?;
        Ok(())
    }

    /// Writes a message; returns its id once the node reports it committed.
    pub fn send(&mut self, text: &str) -> Result<String> {
        let v = self.ok(json!({"cmd": "send", "text": text}))?;
        Ok(v["id"].as_str().context("id")?.to_owned())
    }

    /// The node's state (heads, messages, peers).
    pub fn state(&mut self) -> Result<Value> {
        self.ok(json!({"cmd": "state"}))
    }

    /// Waits until the node holds at least `count` messages; returns its state.
    pub fn wait_messages(&mut self, count: usize, timeout_ms: u64) -> Result<Value> {
        let v =
            self.call(json!({"cmd": "wait_messages", "count": count, "timeout_ms": timeout_ms}))?;
        if v["ok"] != true {
            bail!(
                "node {} did not reach {count} messages in {timeout_ms} ms: has {}",
                &self.id[..10],
                v["state"]["messages"].as_array().map_or(0, |a| a.len())
            );
        }
        Ok(v)
    }

    /// Graceful stop.
    pub fn quit(mut self) -> Result<()> {
        let _ = self.call(json!({"cmd": "quit"}));
        self.child.wait()?;
        Ok(())
    }

    /// SIGKILL: no goodbye, no flush.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Message ids in a state answer.
pub fn message_ids(state: &Value) -> Vec<String> {
    state["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `deskhand` binary of this workspace, built on demand (it lives in another package, so
/// cargo does not hand its path to this crate's tests).
pub fn deskhand_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/deskhand; a binary of this package
    // (the benchmark) lives in target/<profile>/ itself.
    let mut profile_dir = exe.parent().expect("target dir").to_owned();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    let bin = profile_dir.join("deskhand");
    // A release harness (the benchmark) runs the release binary built beside it.
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build --release -p deskhand-desktop-host`",
            bin.display()
        );
        return bin;
    }
    // Build once per test process so a stale binary is never tested (a no-op when fresh).
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        // The variables cargo and nextest set for a test process would change fingerprints
        // (and rebuild half the graph): hand the inner cargo the user's environment only.
        let env = std::env::vars().filter(|(k, _)| {
            k == "CARGO_HOME"
                || k == "CARGO_TARGET_DIR"
                // The user's choice, like the two above: dropping it rebuilds everything.
                || k == "CARGO_INCREMENTAL"
                || !(k.starts_with("CARGO")
                    || k.starts_with("NEXTEST")
                    || k.starts_with("RUST_")
                    || k == "OUT_DIR")
        });
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .env_clear()
            .envs(env)
            // The same selection as the test build, so features unify alike and this is a no-op
            // after `scripts/test` (or any `cargo test --workspace`) has built everything.
            .args(["build", "--workspace", "--all-targets", "--quiet"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building deskhand failed");
    });
    bin
}

/// Output of one `deskhand` command.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `deskhand ARGS…` to completion.
pub fn deskhand(args: &[&str]) -> Result<Run> {
    deskhand_env(args, &[])
}

/// `deskhand ARGS…` with extra environment (e.g. `DESKHAND_TEST_CLOCK_SKEW_MS`), not started:
/// spawn it to run several at once, or use [`deskhand_env`]. Tests stay off the network: a
/// terminal phone's local-network discovery is off unless the test asks for it.
pub fn deskhand_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut args = args.to_vec();
    if args.first() == Some(&"phone") && !args.contains(&"--mdns") {
        args.splice(1..1, ["--mdns", "off"]);
    }
    let mut cmd = Command::new(deskhand_bin());
    cmd.args(&args)
        .env("DESKHAND_LOG", "error")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Runs `deskhand ARGS…` with extra environment to completion.
pub fn deskhand_env(args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
    Ok(Run::of(deskhand_command(args, env).output()?))
}

impl Run {
    /// The outcome of a finished process.
    pub fn of(out: std::process::Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A `deskhand serve` process whose output is collected in the background.
pub struct Serve {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Its data directory.
    pub data: PathBuf,
    /// The pairing payload it printed at start.
    pub payload: String,
    /// The PNG it wrote.
    pub png: PathBuf,
}

impl Serve {
    /// Starts the host and waits for its pairing code.
    pub fn start(data: &Path, listen: SocketAddr) -> Result<Self> {
        Self::start_with(data, listen, &[], &[])
    }

    /// The HOME a host gets unless the test gives one: a folder beside its data directory, so
    /// tasks never touch the real home.
    fn default_home(data: &Path) -> Result<PathBuf> {
        let home = data.with_extension("home");
        std::fs::create_dir_all(&home)?;
        Ok(home)
    }

    /// Starts the host with extra environment (e.g. `HOME`, `DISPLAY`) and arguments.
    pub fn start_with(
        data: &Path,
        listen: SocketAddr,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_in(None, data, listen, env, extra)
    }

    /// Like [`Self::start_with`], run in the folder `cwd` (a relative `data` is then relative
    /// to it; the default HOME stays beside `data` as the test sees it).
    pub fn start_in(
        cwd: Option<&Path>,
        data: &Path,
        listen: SocketAddr,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Result<Self> {
        let listen = listen.to_string();
        let mut net = vec!["--listen", &listen];
        net.extend(extra);
        Self::spawn(&[], cwd, data, &net, env)
    }

    /// Starts `PREFIX… deskhand serve --data DATA --name test-desktop ARGS…` (a prefix like
    /// `ip netns exec NAME` runs it elsewhere). Relays and local-network discovery are off
    /// unless `args` name `--relay` or `--mdns`.
    pub fn spawn(
        prefix: &[&str],
        cwd: Option<&Path>,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let home = Self::default_home(&cwd.map_or_else(|| data.to_owned(), |c| c.join(data)))?;
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(deskhand_bin());
                c
            }
            None => Command::new(deskhand_bin()),
        };
        if let Some(c) = cwd {
            cmd.current_dir(c);
        }
        let mut defaults = Vec::new();
        if !args.contains(&"--relay") {
            defaults.extend(["--relay", "off"]);
        }
        if !args.contains(&"--mdns") {
            defaults.extend(["--mdns", "off"]);
        }
        let mut child = cmd
            .args(["serve", "--data"])
            .arg(data)
            .args(["--name", "test-desktop"])
            .args(defaults)
            .args(args)
            .env("HOME", home)
            .envs(env.iter().copied())
            .env_remove("WAYLAND_DISPLAY")
            .env("DESKHAND_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("pairing payload: ") {
                    let _ = tx.send(("payload", p.to_owned()));
                }
                if let Some(p) = line.strip_prefix("pairing QR PNG : ") {
                    let _ = tx.send(("png", p.to_owned()));
                }
                sink.lock().map(|mut l| l.push(line)).ok();
            }
            // Its output closed: it exited (a crash test's host may die while starting).
            let _ = tx.send(("exit", String::new()));
        });
        let (mut payload, mut png) = (None, None);
        while payload.is_none() || png.is_none() {
            match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(("payload", p)) => payload = Some(p),
                Ok(("exit", _)) => {
                    let status = child.wait()?;
                    bail!("deskhand serve exited ({status}) before it printed its pairing code")
                }
                Ok((_, p)) => png = Some(PathBuf::from(p)),
                Err(_) => bail!("deskhand serve printed no pairing code within 30 s"),
            }
        }
        Ok(Self {
            child,
            lines,
            data: data.to_owned(),
            payload: payload.unwrap_or_default(),
            png: png.unwrap_or_default(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Sends SIGTERM (as `systemctl stop` or `kill` does) and waits up to `limit` for the
    /// process to exit; returns how long it took, or `None` if it was still running (it is
    /// then killed).
    pub fn terminate(mut self, limit: std::time::Duration) -> Result<Option<std::time::Duration>> {
        let started = std::time::Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(sent.success(), "kill -TERM failed");
        while started.elapsed() < limit {
            if self.child.try_wait()?.is_some() {
                return Ok(Some(started.elapsed()));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(None)
    }

    /// Waits up to `limit` for the process to exit by itself; its status if it did.
    pub fn exited(
        &mut self,
        limit: std::time::Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if started.elapsed() >= limit {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
