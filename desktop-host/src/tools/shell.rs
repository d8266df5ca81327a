//! Shell commands: run one `sh -c` command in the OS sandbox ([`super::sandbox`]) with bounded
//! time and output, and stop it and everything it started when the time is up or the task is
//! cancelled.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::ToolError;
use super::sandbox::Sandbox;

/// How much a command may take.
#[derive(Debug, Clone, Copy)]
pub struct ShellLimits {
    /// Wall-clock limit; the command and its children are stopped when it passes.
    pub timeout: Duration,
    /// Bytes kept from stdout, and separately from stderr; the rest is read and dropped.
    pub max_output: usize,
}

impl Default for ShellLimits {
    fn default() -> Self {
        ShellLimits {
            timeout: Duration::from_secs(60),
            max_output: 64 * 1024,
        }
    }
}

/// What a command did.
#[derive(Serialize, Debug, Clone)]
pub struct ShellOutput {
    /// The shell's exit code; `None` when it was ended by a signal (including ours).
    pub exit_code: Option<i32>,
    /// Standard output (lossy UTF-8), at most `max_output` bytes.
    pub stdout: String,
    /// Standard error (lossy UTF-8), at most `max_output` bytes.
    pub stderr: String,
    /// True when either stream was cut at `max_output`.
    pub truncated: bool,
    /// True when the time limit stopped it.
    pub timed_out: bool,
    /// True when the cancellation token stopped it.
    pub cancelled: bool,
    /// Wall-clock time from start until everything it started was gone.
    pub duration_ms: u64,
    /// What the sandbox did not cover for this command, when something (the search for
    /// secret names stopped at its limit).
    pub sandbox_note: Option<String>,
}

impl ShellOutput {
    /// One line saying how it ended, e.g. "exited with code 0" or
    /// "the command was stopped after 60 s (time limit)".
    pub fn outcome(&self) -> String {
        let secs = (self.duration_ms as f64 / 1000.0).round();
        if self.cancelled {
            format!("the command was stopped after {secs} s (cancelled)")
        } else if self.timed_out {
            format!("the command was stopped after {secs} s (time limit)")
        } else {
            match self.exit_code {
                Some(code) => format!("exited with code {code}"),
                None => "ended by a signal".to_string(),
            }
        }
    }
}

/// Variables a command inherits from the host, by name: what programs need to run and to
/// format their output. Everything else (credentials above all) is left out.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "PWD",
    "DISPLAY",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
];

/// The host's variables a command may see ([`INHERITED_ENV`] and `LC_*`), from `vars`.
pub fn command_env(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vars.filter(|(k, _)| {
        k.to_str()
            .is_some_and(|k| INHERITED_ENV.contains(&k) || k.starts_with("LC_"))
    })
    .collect()
}

/// How long the command's processes get between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(1500);
/// How long we keep reading after SIGKILL. Only a process that left our process group (setsid)
/// can still hold the pipes then, and we do not wait for it.
const KILL_GRACE: Duration = Duration::from_millis(500);

/// Runs `command` with `sh -c` in `cwd`, stdin empty, in a process group of its own, inside
/// `sandbox` (with `TMPDIR` pointing at a private temporary folder made for it and removed
/// after it).
///
/// Stdout and stderr are read concurrently, each kept up to `limits.max_output` bytes and drained
/// beyond that, so a chatty command never blocks on a full pipe. When `limits.timeout` passes or
/// `cancel` fires, the whole group gets SIGTERM, then SIGKILL after a short grace, and is reaped
/// before this returns. A command whose shell exits while something it started in the
/// background still holds its output open counts as running until the time limit.
pub async fn run(
    command: &str,
    cwd: &Path,
    limits: ShellLimits,
    sandbox: &Sandbox,
    cancel: CancellationToken,
) -> Result<ShellOutput, ToolError> {
    if !cwd.is_dir() {
        return Err(if cwd.exists() {
            ToolError::NotADirectory {
                path: cwd.to_path_buf(),
            }
        } else {
            ToolError::NotFound {
                path: cwd.to_path_buf(),
            }
        });
    }
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let (program, flag) = shell();
    let tmp = match sandbox {
        Sandbox::Off => None,
        Sandbox::Confined(_) => Some(
            tempfile::Builder::new()
                .prefix("deskhand-run-")
                .tempdir()
                .map_err(|e| ToolError::Sandbox {
                    reason: format!("no private temporary folder: {e}"),
                })?,
        ),
    };
    let mut cmd = match (sandbox, &tmp) {
        (Sandbox::Confined(c), Some(tmp)) => c.command(program, &[flag, command], tmp.path())?,
        _ => {
            let mut cmd = Command::new(program);
            cmd.arg(flag).arg(command);
            cmd
        }
    };
    // The host's environment stays with the host: API keys and tokens it was started with
    // (`ANTHROPIC_API_KEY`, `GITHUB_TOKEN`, `SSH_AUTH_SOCK`, …) never reach a command.
    cmd.env_clear().envs(command_env(std::env::vars_os()));
    if let Some(tmp) = &tmp {
        cmd.env("TMPDIR", tmp.path());
    }
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match (sandbox, &tmp) {
        (Sandbox::Confined(c), Some(tmp)) => c.spawn(cmd, tmp.path()).await?,
        _ => cmd.spawn().map_err(|source| ToolError::Spawn {
            program: program.to_string(),
            source,
        })?,
    };
    let group = GroupGuard::new(child.id());
    let (Some(mut out_pipe), Some(mut err_pipe)) = (child.stdout.take(), child.stderr.take())
    else {
        return Err(ToolError::Spawn {
            program: program.to_string(),
            source: std::io::Error::other("the output pipes were not set up"),
        });
    };
    let mut out = Capture::new(limits.max_output);
    let mut err = Capture::new(limits.max_output);

    let mut status: Option<ExitStatus> = None;
    let mut timed_out = false;
    let mut cancelled = false;
    {
        let everything = async {
            let (_, _, st) = tokio::join!(
                out.fill(&mut out_pipe),
                err.fill(&mut err_pipe),
                child.wait()
            );
            st
        };
        tokio::select! {
            st = everything => status = st.ok(),
            _ = tokio::time::sleep_until(deadline) => timed_out = true,
            _ = cancel.cancelled() => cancelled = true,
        }
    }

    if timed_out || cancelled {
        group.signal("TERM").await;
        let drained = tokio::time::timeout(TERM_GRACE, async {
            tokio::join!(out.fill(&mut out_pipe), err.fill(&mut err_pipe));
        })
        .await;
        // Sent even when the pipes closed: a process that closed its output and ignores SIGTERM
        // is still running.
        group.signal("KILL").await;
        if drained.is_err() {
            let _ = tokio::time::timeout(KILL_GRACE, async {
                tokio::join!(out.fill(&mut out_pipe), err.fill(&mut err_pipe));
            })
            .await;
        }
        let _ = child.start_kill();
        if status.is_none() {
            // A process in uninterruptible sleep (a hung network mount) outlives SIGKILL until
            // the system call returns: not waited for past the grace (tokio reaps it later).
            status = tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .ok()
                .and_then(Result::ok);
        }
    }
    group.disarm();

    Ok(ShellOutput {
        exit_code: status.and_then(|s| s.code()),
        truncated: out.truncated || err.truncated,
        stdout: String::from_utf8_lossy(&out.kept).into_owned(),
        stderr: String::from_utf8_lossy(&err.kept).into_owned(),
        timed_out,
        cancelled,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        sandbox_note: match sandbox {
            Sandbox::Confined(c) => c.note().map(str::to_owned),
            Sandbox::Off => None,
        },
    })
}

#[cfg(unix)]
fn shell() -> (&'static str, &'static str) {
    ("sh", "-c")
}

#[cfg(not(unix))]
fn shell() -> (&'static str, &'static str) {
    ("cmd", "/C")
}

/// One output stream, capped.
struct Capture {
    kept: Vec<u8>,
    cap: usize,
    truncated: bool,
    eof: bool,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Capture {
            kept: Vec::new(),
            cap,
            truncated: false,
            eof: false,
        }
    }

    /// Reads until end of stream, keeping up to the cap. Cancel-safe: it can be dropped and
    /// called again without losing bytes, which is how reading continues after a timeout.
    async fn fill(&mut self, pipe: &mut (impl AsyncRead + Unpin)) {
        let mut buf = [0u8; 8192];
        while !self.eof {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => self.eof = true,
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        self.truncated = true;
                    }
                }
            }
        }
    }
}

/// Kills the command's process group if `run` is abandoned midway (its future dropped), so a
/// cancelled task never leaves a process tree behind.
struct GroupGuard {
    pgid: Option<u32>,
}

impl GroupGuard {
    fn new(pgid: Option<u32>) -> Self {
        GroupGuard { pgid }
    }

    /// Sends `SIG<signal>` to every process in the group. Failures (the group is already gone)
    /// are expected and ignored.
    #[cfg(unix)]
    async fn signal(&self, signal: &str) {
        let Some(pgid) = self.pgid else { return };
        let _ = Command::new(kill_program())
            .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    #[cfg(not(unix))]
    async fn signal(&self, _signal: &str) {}

    fn disarm(mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid {
            // Drop cannot await; spawn the kill and let it run on its own (it takes ~1 ms).
            let _ = std::process::Command::new(kill_program())
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `/bin/kill` where it exists (Linux, macOS), so a `kill` earlier in PATH cannot intercept it.
#[cfg(unix)]
fn kill_program() -> &'static str {
    if Path::new("/bin/kill").exists() {
        "/bin/kill"
    } else {
        "kill"
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The sandbox the host uses: the test's temporary folders writable, `~/.ssh` hidden.
    fn confined() -> Sandbox {
        let home = std::path::PathBuf::from(std::env::var_os("HOME").unwrap());
        Sandbox::Confined(super::super::sandbox::Confinement::new(
            &[home.join(".ssh")],
            &[],
            &[std::env::temp_dir()],
            &[],
            &|_| false,
            &[],
            super::super::sandbox::WalkLimits::default(),
        ))
    }

    #[tokio::test]
    async fn the_hosts_environment_does_not_reach_a_command() {
        // Cargo runs tests with CARGO_* variables (and CI with others): none may show up.
        let ours: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| !INHERITED_ENV.contains(&k.as_str()) && !k.starts_with("LC_"))
            .collect();
        assert!(!ours.is_empty(), "the test needs a variable to look for");
        let out = run(
            "env",
            &std::env::temp_dir(),
            limits(10_000, 1 << 20),
            &Sandbox::Off,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let seen: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        for k in &ours {
            assert!(
                !seen.contains(&k.as_str()),
                "{k} reached the command: {seen:?}"
            );
        }
        assert!(seen.contains(&"PATH"), "{seen:?}");
        let filtered = command_env(
            [
                ("ANTHROPIC_API_KEY".into(), "sk".into()),
                ("LC_ALL".into(), "C".into()),
                ("HOME".into(), "/h".into()),
            ]
            .into_iter(),
        );
        assert_eq!(filtered.len(), 2);
    }

    fn limits(timeout_ms: u64, max_output: usize) -> ShellLimits {
        ShellLimits {
            timeout: Duration::from_millis(timeout_ms),
            max_output,
        }
    }

    /// Running, as opposed to gone or a zombie nobody reaped yet (in a container, orphans are
    /// re-parented to a pid 1 that may never reap them).
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.starts_with(" Z"))
        })
    }

    async fn eventually_dead(pid: &str) -> bool {
        for _ in 0..50 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn exit_codes_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let o = run(
            "echo out; echo err >&2; pwd; exit 3",
            dir.path(),
            limits(10_000, 1000),
            &confined(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(o.exit_code, Some(3));
        let pwd = dir.path().canonicalize().unwrap();
        assert_eq!(o.stdout, format!("out\n{}\n", pwd.display()));
        assert_eq!(o.stderr, "err\n");
        assert!(!o.truncated && !o.timed_out && !o.cancelled);
        assert_eq!(o.outcome(), "exited with code 3");

        // Stdin is empty, not the test's terminal.
        let o = run(
            "cat; echo done",
            dir.path(),
            limits(10_000, 1000),
            &confined(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(o.stdout, "done\n");
        assert_eq!(o.exit_code, Some(0));
    }

    #[tokio::test]
    async fn output_is_capped_but_fully_drained() {
        // 2 MB on each stream: far more than a pipe buffer, so a reader that stopped at the cap
        // would leave the command blocked until the time limit.
        let o = run(
            "head -c 2000000 /dev/zero | tr '\\0' a; head -c 2000000 /dev/zero | tr '\\0' b >&2; echo tail",
            Path::new("/"),
            limits(20_000, 100),
            &confined(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(o.stdout, "a".repeat(100));
        assert_eq!(o.stderr, "b".repeat(100));
        assert!(o.truncated);
        assert!(!o.timed_out);
        assert_eq!(o.exit_code, Some(0));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let o = run(
            "sleep 30 & echo $! > child.pid; echo started; wait",
            dir.path(),
            limits(500, 1000),
            &confined(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(o.timed_out);
        assert_eq!(o.stdout, "started\n");
        assert_eq!(o.exit_code, None);
        assert!(o.duration_ms < 3000, "{}", o.duration_ms);
        assert!(o.outcome().contains("(time limit)"), "{}", o.outcome());
        let pid = std::fs::read_to_string(dir.path().join("child.pid")).unwrap();
        assert!(
            eventually_dead(pid.trim()).await,
            "the background sleep survived"
        );
    }

    #[tokio::test]
    async fn cancel_kills_child_and_grandchild_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let pidfile = dir.path().join("pids");
        let watcher = {
            let pidfile = pidfile.clone();
            tokio::spawn(async move {
                // Cancel once both processes exist.
                while std::fs::read_to_string(&pidfile).map_or(0, |s| s.lines().count()) < 2 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                trigger.cancel();
            })
        };
        // The grandchild ignores SIGTERM, so only the SIGKILL of the whole group stops it.
        let o = run(
            "sh -c 'trap \"\" TERM; echo $$ >> pids; exec sleep 30' & echo $$ >> pids; exec sleep 30",
            dir.path(),
            limits(60_000, 1000),
            &confined(),
            cancel,
        )
        .await
        .unwrap();
        watcher.await.unwrap();
        assert!(o.cancelled && !o.timed_out);
        assert!(o.duration_ms < 5000, "{}", o.duration_ms);
        let pids = std::fs::read_to_string(&pidfile).unwrap();
        for pid in pids.lines() {
            assert!(
                eventually_dead(pid).await,
                "process {pid} survived the cancel"
            );
        }
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let sandbox = confined();
        let fut = run(
            "sleep 30 & echo $! > pid; wait",
            dir.path(),
            limits(60_000, 1000),
            &sandbox,
            CancellationToken::new(),
        );
        let _ = tokio::time::timeout(Duration::from_millis(500), fut).await;
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        // The guard's SIGKILL is delivered asynchronously.
        assert!(
            eventually_dead(pid.trim()).await,
            "the background sleep survived the dropped future"
        );
    }

    #[tokio::test]
    async fn missing_cwd_is_a_clear_error() {
        let e = run(
            "true",
            Path::new("/no/such/dir"),
            ShellLimits::default(),
            &confined(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "`/no/such/dir` does not exist");
    }

    /// A home with a key, a data folder of the host, a root with a `.env` deep inside, and a
    /// folder outside the roots; the sandbox the executor would build for it.
    struct Layout {
        _dir: tempfile::TempDir,
        home: std::path::PathBuf,
        root: std::path::PathBuf,
        outside: std::path::PathBuf,
        key: std::path::PathBuf,
        sandbox: Sandbox,
    }

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY----- 4f7c";

    fn layout() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let home = base.join("home");
        let root = home.join("root");
        let outside = base.join("outside");
        for d in [".ssh", "data", "root/app/src", "root/docs"] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::create_dir_all(&outside).unwrap();
        let key = home.join(".ssh/id_ed25519");
        std::fs::write(&key, KEY).unwrap();
        std::fs::write(home.join("data/deskhand.redb"), "DATABASE").unwrap();
        std::fs::write(root.join("app/.env"), "TOKEN=abc").unwrap();
        std::fs::write(root.join("docs/notes.txt"), "notes\n").unwrap();
        let sandbox = Sandbox::Confined(super::super::sandbox::Confinement::new(
            &[home.join(".ssh"), home.join("data")],
            &[],
            std::slice::from_ref(&root),
            &[(root.clone(), usize::MAX)],
            &|p: &Path| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".env"))
            },
            &[],
            super::super::sandbox::WalkLimits::default(),
        ));
        Layout {
            _dir: dir,
            home,
            root,
            outside,
            key,
            sandbox,
        }
    }

    async fn sh(l: &Layout, command: &str) -> ShellOutput {
        run(
            command,
            &l.root,
            limits(30_000, 100_000),
            &l.sandbox,
            CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    fn python() -> &'static str {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        }
    }

    #[tokio::test]
    async fn an_approved_command_cannot_read_a_secret_nor_can_its_children() {
        let l = layout();
        let key = l.key.display();
        let env = l.root.join("app/.env");
        let env = env.display();
        let py = python();
        for cmd in [
            format!("cat {key}"),
            format!("sh -c 'cat {key}'"),
            format!("bash -c 'cat {key}'"),
            format!("{py} -c \"print(open('{key}').read())\""),
            format!("cd {}/.ssh && cat id_ed25519", l.home.display()),
            format!("cat {env}"),
            format!("cat {}/data/deskhand.redb", l.home.display()),
            format!("sh -c 'sh -c \"cat {key}\"' & wait"),
        ] {
            let o = sh(&l, &cmd).await;
            let all = format!("{}{}", o.stdout, o.stderr);
            assert!(
                !all.contains(KEY) && !all.contains("TOKEN=abc") && !all.contains("DATABASE"),
                "{cmd}: {all}"
            );
            assert!(all.contains("Permission denied"), "{cmd}: {all}");
        }
        // Copies, links and moves of a secret get nothing out either.
        let root = l.root.display();
        for cmd in [
            format!("cp {key} {root}/stolen"),
            format!("ln {key} {root}/linked"),
            format!("ln -s {key} {root}/symlinked && cat {root}/symlinked"),
            format!("mv {key} {root}/moved"),
            format!("mv {env} {root}/moved-env"),
        ] {
            let o = sh(&l, &cmd).await;
            assert_ne!(o.exit_code, Some(0), "{cmd}: {o:?}");
            assert!(!o.stdout.contains(KEY), "{cmd}");
        }
        for name in ["stolen", "linked", "moved", "moved-env"] {
            let copy = std::fs::read_to_string(l.root.join(name)).unwrap_or_default();
            assert!(
                !copy.contains(KEY) && !copy.contains("TOKEN"),
                "{name}: {copy}"
            );
        }
        assert_eq!(std::fs::read_to_string(&l.key).unwrap(), KEY);
        assert_eq!(
            std::fs::read_to_string(l.root.join("app/.env")).unwrap(),
            "TOKEN=abc"
        );
    }

    #[tokio::test]
    async fn writes_are_confined_to_the_roots_and_secrets_cannot_be_changed() {
        let l = layout();
        let (home, root, outside) = (
            l.home.display().to_string(),
            l.root.display().to_string(),
            l.outside.display().to_string(),
        );
        let o = sh(&l, &format!("echo x > {root}/docs/file && mkdir {root}/docs/d && mv {root}/docs/file {root}/docs/d/ && cat {root}/docs/d/file && rm -r {root}/docs/d")).await;
        assert_eq!((o.exit_code, o.stdout.as_str()), (Some(0), "x\n"), "{o:?}");
        for cmd in [
            format!("echo x > {outside}/file"),
            format!(
                "echo x > /tmp/deskhand-outside-roots-{}",
                std::process::id()
            ),
            format!("echo x > {home}/.ssh/authorized_keys"),
            format!("mkdir {home}/.ssh/d"),
            format!(": > {home}/.ssh/id_ed25519"),
            format!("rm {home}/.ssh/id_ed25519"),
            format!("echo x >> {home}/data/deskhand.redb"),
            format!("rm {root}/app/.env"),
            // Directly in a folder that holds a hidden location nothing new can be made.
            format!("echo x > {home}/new-in-home"),
            format!("mkdir {home}/.aws"),
            format!("echo x > {root}/app/new-beside-env"),
        ] {
            let o = sh(&l, &cmd).await;
            assert_ne!(o.exit_code, Some(0), "{cmd} must fail: {o:?}");
        }
        assert!(!l.outside.join("file").exists());
        assert!(
            !Path::new(&format!(
                "/tmp/deskhand-outside-roots-{}",
                std::process::id()
            ))
            .exists()
        );
        assert!(!l.home.join(".ssh/authorized_keys").exists());
        assert!(!l.home.join(".aws").exists() && !l.home.join("new-in-home").exists());
        assert_eq!(std::fs::read_to_string(&l.key).unwrap(), KEY);
        assert_eq!(
            std::fs::read_to_string(l.home.join("data/deskhand.redb")).unwrap(),
            "DATABASE"
        );
        // Existing files in such a folder can still be changed, and TMPDIR is private and writable.
        let o = sh(&l, &format!("echo more >> {root}/app/src/../../docs/notes.txt; echo t > \"$TMPDIR/t\" && cat \"$TMPDIR/t\"; echo \"$TMPDIR\"")).await;
        assert_eq!(o.exit_code, Some(0), "{o:?}");
        let tmpdir = o.stdout.lines().nth(1).unwrap_or_default().to_owned();
        assert!(tmpdir.contains("deskhand-run-"), "{}", o.stdout);
        assert!(
            !Path::new(&tmpdir).exists(),
            "the private temporary folder is removed"
        );
        assert_eq!(
            std::fs::read_to_string(l.root.join("docs/notes.txt")).unwrap(),
            "notes\nmore\n"
        );
    }

    #[tokio::test]
    async fn ordinary_read_commands_work_in_the_sandbox() {
        let l = layout();
        let o = sh(&l, "cat docs/notes.txt; ls /usr/bin > /dev/null && echo listed; head -c 4 /etc/passwd; echo; ls").await;
        assert_eq!(o.exit_code, Some(0), "{o:?}");
        assert!(o.stdout.starts_with("notes\nlisted\n"), "{}", o.stdout);
        assert!(o.stdout.contains("app\ndocs\n"), "{}", o.stdout);
        let git = std::process::Command::new("git").arg("--version").output();
        if git.is_ok_and(|o| o.status.success()) {
            let o = sh(
                &l,
                "git init -q docs/repo && cd docs/repo && echo hi > a && git status --short && git -c user.name=t -c user.email=t@t commit -qam x --allow-empty && git log --oneline | wc -l",
            )
            .await;
            assert_eq!(o.exit_code, Some(0), "{o:?}");
            assert!(o.stdout.starts_with("?? a\n"), "{}", o.stdout);
        }
    }

    /// A home that is itself the root, with start-up files, a repository and the persistence
    /// locations read-only as the executor sets them.
    fn home_root() -> (tempfile::TempDir, std::path::PathBuf, Sandbox) {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().canonicalize().unwrap().join("home");
        for d in [".ssh", ".config", ".local/share", "proj", "work"] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        // A real repository where git is installed (its config is replaced below).
        let _ = std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(home.join("proj"))
            .output();
        std::fs::create_dir_all(home.join("proj/.git/hooks")).unwrap();
        std::fs::write(home.join(".bashrc"), "# rc\n").unwrap();
        std::fs::write(home.join("proj/.git/config"), "[core]\n").unwrap();
        std::fs::create_dir_all(home.join("old/.git")).unwrap();
        let sandbox = Sandbox::Confined(super::super::sandbox::Confinement::new(
            &[home.join(".ssh")],
            &crate::policy::persistence_fixed(&home),
            std::slice::from_ref(&home),
            &[(home.clone(), usize::MAX)],
            &|_| false,
            &crate::policy::persistence_anywhere(),
            super::super::sandbox::WalkLimits::default(),
        ));
        (dir, home, sandbox)
    }

    async fn sh_in(sandbox: &Sandbox, cwd: &Path, command: &str) -> ShellOutput {
        run(
            command,
            cwd,
            limits(30_000, 100_000),
            sandbox,
            CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn persistence_locations_cannot_be_written_but_can_be_read() {
        let (_dir, home, sandbox) = home_root();
        let h = home.display().to_string();
        for cmd in [
            format!("echo pwn >> {h}/.bashrc"),
            format!(": > {h}/.bashrc"),
            format!("rm {h}/.bashrc"),
            format!("mv {h}/.bashrc {h}/work/rc"),
            format!("echo pwn > {h}/.zshrc"),
            format!(
                "mkdir -p {h}/.config/systemd/user && touch {h}/.config/systemd/user/x.service"
            ),
            format!("mkdir -p {h}/.local/bin && touch {h}/.local/bin/x"),
            format!("touch {h}/proj/.git/hooks/pre-commit"),
            format!("echo '[core] hooksPath = /tmp' >> {h}/proj/.git/config"),
            format!("mv {h}/proj/.git/hooks {h}/proj/.git/h2"),
            // A repository without a hooks folder gets none either.
            format!("mkdir {h}/old/.git/hooks"),
        ] {
            let o = sh_in(&sandbox, &home, &cmd).await;
            assert_ne!(o.exit_code, Some(0), "{cmd} must fail: {o:?}");
        }
        assert_eq!(
            std::fs::read_to_string(home.join(".bashrc")).unwrap(),
            "# rc\n"
        );
        for p in [
            ".zshrc",
            ".config/systemd",
            ".local/bin",
            "proj/.git/hooks/pre-commit",
            "old/.git/hooks",
            "work/rc",
        ] {
            assert!(!home.join(p).exists(), "{p}");
        }
        assert_eq!(
            std::fs::read_to_string(home.join("proj/.git/config")).unwrap(),
            "[core]\n"
        );
        let o = sh_in(&sandbox, &home, &format!("cat {h}/.bashrc")).await;
        assert_eq!(
            (o.exit_code, o.stdout.as_str()),
            (Some(0), "# rc\n"),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn a_new_repository_can_be_made_and_committed_to() {
        let git = std::process::Command::new("git").arg("--version").output();
        if !git.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: no git");
            return;
        }
        let (_dir, home, sandbox) = home_root();
        let o = sh_in(
            &sandbox,
            &home.join("work"),
            "git init -q repo && cd repo && echo hi > a && git add a && \
             git -c user.name=t -c user.email=t@t commit -qm x && git log --oneline | wc -l",
        )
        .await;
        assert_eq!((o.exit_code, o.stdout.trim()), (Some(0), "1"), "{o:?}");
        // The price (README): in a repository that existed when the command started, its `.git`
        // and its top folder get no new entries, so git can read it but not add or commit.
        let o = sh_in(
            &sandbox,
            &home.join("proj"),
            "git status --short >/dev/null && echo read; touch .git/index.lock || echo no-lock; \
             touch new || echo no-new",
        )
        .await;
        assert_eq!(o.stdout, "read\nno-lock\nno-new\n", "{o:?}");
    }

    #[tokio::test]
    async fn a_sandboxed_command_cannot_signal_the_host() {
        let l = layout();
        let me = std::process::id();
        let o = sh(
            &l,
            &format!("kill -0 {me} && echo reachable; sleep 0.2 & kill -0 $! && echo own-child"),
        )
        .await;
        assert!(!o.stdout.contains("reachable"), "{o:?}");
        assert!(o.stdout.contains("own-child"), "{o:?}");
        assert!(o.stderr.contains("not permitted"), "{o:?}");
    }

    #[tokio::test]
    async fn a_sandboxed_command_cannot_reach_an_abstract_socket_made_outside() {
        // An X server listens on `@/tmp/.X11-unix/X0`, a D-Bus bus often on an abstract name:
        // reaching either drives programs outside the sandbox.
        use std::os::linux::net::SocketAddrExt;
        if std::process::Command::new("python3")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("skipped: no python3");
            return;
        }
        let name = format!("deskhand-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        let l = layout();
        let o = sh(
            &l,
            &format!(
                "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); \
                 s.connect(\"\\0{name}\"); print(\"reached\")'"
            ),
        )
        .await;
        drop(listener);
        assert!(!o.stdout.contains("reached"), "{o:?}");
        assert!(o.stderr.contains("not permitted"), "{o:?}");
    }
}
