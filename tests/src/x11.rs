//! A private Xvfb per test, and the X client programs the tests watch.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Width of the screen every test gets.
pub const WIDTH: u32 = 1280;
/// Height of the screen every test gets.
pub const HEIGHT: u32 = 800;

const INSTALL_HINT: &str = "run `scripts/ensure-deps x11` as root \
     (Debian: apt-get install xvfb xauth xdotool x11-apps x11-xserver-utils x11-utils xterm)";

/// Serializes the tests that touch the process environment. nextest runs each test in a process
/// of its own, but `cargo test` runs them as threads of one process, where the capture library
/// reads `DISPLAY` from the shared environment.
static ENV: Mutex<()> = Mutex::new(());

/// Holds the environment for one test.
pub struct EnvLock(#[allow(dead_code)] MutexGuard<'static, ()>);

impl EnvLock {
    pub fn take() -> Self {
        EnvLock(ENV.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets or removes one variable; the lock proves no other test of this binary reads or
    /// writes the environment meanwhile.
    #[allow(unsafe_code)]
    pub fn set(&self, key: &str, value: Option<&str>) {
        // SAFETY: every test of this binary that reads the environment (directly, or through the
        // capture and input libraries) holds the `ENV` lock, as does this writer.
        unsafe {
            match value {
                Some(v) => std::env::set_var(key, v),
                None => std::env::remove_var(key),
            }
        }
    }
}

/// A child process killed and reaped when dropped, so a failing test leaves nothing running.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| {
            let name = cmd.get_program().to_string_lossy().into_owned();
            panic!("cannot start `{name}` ({e}): the X tests need it; {INSTALL_HINT}")
        });
        Proc { child }
    }

    /// Waits up to `limit` for the process to exit by itself; true if it did.
    pub fn exits_within(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An Xvfb of our own, 1280×800×24, `DISPLAY` pointing at it and the Wayland variables cleared
/// (they would send the capture library down its Wayland path).
pub struct Xvfb {
    pub display: String,
    // Dropped in this order: the server first, then the environment lock.
    server: Proc,
    pub env: EnvLock,
}

impl Xvfb {
    pub fn start() -> Xvfb {
        let env = EnvLock::take();
        let mut cmd = Command::new("Xvfb");
        // -displayfd: the server picks a free display number itself and writes it once it
        // accepts connections, so parallel test processes never race for one.
        // -noreset: without it the server resets when its last client leaves, and captures
        // come back black or fail intermittently.
        cmd.args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            &format!("{WIDTH}x{HEIGHT}x24"),
            "-noreset",
            "-nolisten",
            "tcp",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut server = match cmd.spawn() {
            Ok(child) => Proc { child },
            Err(e) => {
                panic!("Xvfb is not installed ({e}), so the X tests cannot run: {INSTALL_HINT}")
            }
        };
        let stdout = server.child.stdout.take().unwrap();
        let mut stderr = server.child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // Drained so a talkative server never blocks on a full pipe.
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            let _ = err_tx.send(text);
        });
        let number = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| {
                let _ = server.child.kill();
                let log = err_rx
                    .recv_timeout(Duration::from_secs(2))
                    .unwrap_or_default();
                panic!("Xvfb did not start within 20 s:\n{log}")
            });
        let display = format!(":{number}");
        let ready = Instant::now();
        loop {
            let ok = Command::new("xdpyinfo")
                .args(["-display", &display])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("cannot run xdpyinfo ({e}): {INSTALL_HINT}"))
                .success();
            if ok {
                break;
            }
            assert!(
                ready.elapsed() < Duration::from_secs(10),
                "Xvfb on {display} did not answer xdpyinfo within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        env.set("DISPLAY", Some(&display));
        env.set("WAYLAND_DISPLAY", None);
        env.set("XDG_SESSION_TYPE", None);
        Xvfb {
            display,
            server,
            env,
        }
    }

    /// A command that talks to this server.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DISPLAY", &self.display)
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("XDG_SESSION_TYPE")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs an X client to completion and returns its output; panics if it fails.
    pub fn run<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "`{program}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The id of the first window titled `name`, waiting up to 10 s for it to appear.
    pub fn wait_for_window(&self, name: &str) -> String {
        let start = Instant::now();
        loop {
            let out = self
                .command("xdotool")
                .args(["search", "--name", name])
                .output()
                .unwrap_or_else(|e| panic!("cannot run xdotool ({e}): {INSTALL_HINT}"));
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(id) = text.lines().next().filter(|l| !l.trim().is_empty()) {
                return id.trim().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no window named `{name}` appeared within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An xterm running `cat > file`, focused and ready for keys: what the keyboard produces
    /// lands in `file` line by line, capitals and shifted symbols included. Panics if it does
    /// not come up within 10 s.
    pub fn typing_terminal(&self, title: &str, file: &std::path::Path) -> Proc {
        let mut xterm = self.command("xterm");
        xterm.args([
            "-T",
            title,
            "-geometry",
            "80x10+0+0",
            "-e",
            "sh",
            "-c",
            &format!("cat > '{}'", file.display()),
        ]);
        let xterm = Proc::spawn(xterm);
        let window = self.wait_for_window(title);
        self.wait_viewable(&window);
        let start = Instant::now();
        while !file.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "cat did not start in the xterm"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // No window manager: give the xterm the focus explicitly, and the pointer too (with
        // PointerRoot focus, keys go to the window under the pointer).
        self.run("xdotool", ["mousemove", "100", "50"]);
        self.run("xdotool", ["windowfocus", "--sync", &window]);
        xterm
    }

    /// Waits up to 10 s until window `id` is mapped and viewable.
    pub fn wait_viewable(&self, id: &str) {
        let start = Instant::now();
        loop {
            let out = self.command("xwininfo").args(["-id", id]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("IsViewable") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "window {id} did not become viewable within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // Terminate gently so the server removes its socket and lock file; the Proc guard
        // then kills and reaps it if it is still there.
        let _ = Command::new("kill")
            .args(["-TERM", &self.server.child.id().to_string()])
            .status();
        self.server.exits_within(Duration::from_secs(3));
    }
}
