//! `deskhand service install|uninstall|status`: run the host at login, in the background.
//!
//! Linux: a systemd user unit (`~/.config/systemd/user/deskhand.service`), enabled and started
//! with `systemctl --user`. macOS: a launchd agent (`~/Library/LaunchAgents/dev.deskhand.host.plist`)
//! loaded with `launchctl`. Elsewhere: a message saying what to do instead.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

/// What to do with the background service.
#[derive(Subcommand)]
pub enum ServiceAction {
    /// Install and start the service (runs `deskhand serve` at login).
    Install {
        /// Data directory the service uses (default: the platform's).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Config file the service uses.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Stop and remove the service.
    Uninstall,
    /// Is it installed, and is it running?
    Status,
}

const UNIT: &str = "deskhand.service";
const LABEL: &str = "dev.deskhand.host";

fn unit_path() -> PathBuf {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => crate::paths::home_dir().join(".config"),
    };
    base.join("systemd/user").join(UNIT)
}

fn plist_path() -> PathBuf {
    crate::paths::home_dir()
        .join("Library/LaunchAgents")
        .join(format!("{LABEL}.plist"))
}

/// The arguments the service runs `deskhand` with. No `--listen`: `serve` then keeps the port
/// it bound the first time across restarts (a fixed address would be pinned here for good, and
/// a random one would move at every restart and lose the paired phones). Relay and discovery
/// come from the config file.
fn serve_args(data: Option<PathBuf>, config: Option<PathBuf>) -> Result<Vec<String>> {
    let mut args = vec!["serve".to_owned()];
    if let Some(d) = data {
        args.push("--data".into());
        args.push(std::path::absolute(d)?.to_string_lossy().into_owned());
    }
    if let Some(c) = config {
        args.push("--config".into());
        args.push(std::path::absolute(c)?.to_string_lossy().into_owned());
    }
    Ok(args)
}

/// The systemd unit text for `exe serve …`.
fn systemd_unit(exe: &str, args: &[String]) -> String {
    let quoted: Vec<String> = std::iter::once(exe.to_owned())
        .chain(args.iter().cloned())
        .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!(
        "[Unit]\nDescription=Deskhand desktop host (runs tasks from your paired phones)\n\
         After=network-online.target\n\n[Service]\nExecStart={}\nRestart=on-failure\nRestartSec=5\n\n\
         [Install]\nWantedBy=default.target\n",
        quoted.join(" ")
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The launchd agent for `exe serve …`.
fn launchd_plist(exe: &str, args: &[String]) -> String {
    let items: String = std::iter::once(exe.to_owned())
        .chain(args.iter().cloned())
        .map(|a| format!("    <string>{}</string>\n", xml_escape(&a)))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
<plist version=\"1.0\">\n<dict>\n  <key>Label</key><string>{LABEL}</string>\n  <key>ProgramArguments</key>\n  <array>\n{items}  </array>\n\
  <key>RunAtLoad</key><true/>\n  <key>KeepAlive</key><true/>\n</dict>\n</plist>\n"
    )
}

fn run_tool(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One line for `deskhand status`.
pub fn describe() -> String {
    if cfg!(target_os = "linux") {
        if !unit_path().exists() {
            return "not installed (deskhand service install)".into();
        }
        match run_tool("systemctl", &["--user", "is-active", UNIT]) {
            Ok(s) => format!("installed, {s}"),
            Err(_) => format!(
                "installed at {} (systemd user session not reachable)",
                unit_path().display()
            ),
        }
    } else if cfg!(target_os = "macos") {
        if plist_path().exists() {
            "installed (launchd agent)".into()
        } else {
            "not installed (deskhand service install)".into()
        }
    } else {
        "not available on this platform".into()
    }
}

/// Carries out a `deskhand service` command.
pub fn run(action: ServiceAction) -> Result<()> {
    let supported = cfg!(target_os = "linux") || cfg!(target_os = "macos");
    if !supported {
        bail!(
            "`deskhand service` supports Linux (systemd) and macOS (launchd). On this system, \
             start `deskhand serve` with your platform's own startup mechanism."
        );
    }
    match action {
        ServiceAction::Install { data, config } => {
            let exe = std::env::current_exe().context("finding the deskhand executable")?;
            let exe = exe.to_string_lossy().into_owned();
            let args = serve_args(data, config)?;
            let (path, text) = if cfg!(target_os = "linux") {
                (unit_path(), systemd_unit(&exe, &args))
            } else {
                (plist_path(), launchd_plist(&exe, &args))
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
            let started = if cfg!(target_os = "linux") {
                run_tool("systemctl", &["--user", "daemon-reload"])
                    .and_then(|_| run_tool("systemctl", &["--user", "enable", "--now", UNIT]))
            } else {
                run_tool("launchctl", &["load", "-w", &path.to_string_lossy()])
            };
            match started {
                Ok(_) => {
                    println!("the service is enabled and started; it will start at every login")
                }
                Err(e) => {
                    println!(
                        "the service file is installed, but it could not be started now: {e:#}"
                    );
                    if cfg!(target_os = "linux") {
                        println!(
                            "start it from a login session with: systemctl --user enable --now {UNIT}"
                        );
                    }
                }
            }
            Ok(())
        }
        ServiceAction::Uninstall => {
            let path = if cfg!(target_os = "linux") {
                let _ = run_tool("systemctl", &["--user", "disable", "--now", UNIT]);
                unit_path()
            } else {
                let p = plist_path();
                let _ = run_tool("launchctl", &["unload", "-w", &p.to_string_lossy()]);
                p
            };
            match std::fs::remove_file(&path) {
                Ok(()) => println!("removed {}", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!(
                        "the service was not installed ({} does not exist)",
                        path.display()
                    )
                }
                Err(e) => bail!("removing {}: {e}", path.display()),
            }
            if cfg!(target_os = "linux") {
                let _ = run_tool("systemctl", &["--user", "daemon-reload"]);
            }
            Ok(())
        }
        ServiceAction::Status => {
            println!("{}", describe());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_pins_no_port() {
        let args = serve_args(Some("/srv/desk".into()), Some("/etc/dh.toml".into())).unwrap();
        assert_eq!(
            args,
            ["serve", "--data", "/srv/desk", "--config", "/etc/dh.toml"]
        );
        let unit = systemd_unit("/opt/deskhand", &args);
        assert!(!unit.contains("--listen"), "{unit}");
        assert!(!unit.contains("--relay"), "{unit}");
        assert!(!launchd_plist("/opt/deskhand", &args).contains("--listen"));
    }

    #[test]
    fn unit_and_plist_quote_their_arguments() {
        let unit = systemd_unit(
            "/opt/deskhand",
            &["serve".into(), "--data".into(), "/a b/\"c\"".into()],
        );
        assert!(
            unit.contains("ExecStart=\"/opt/deskhand\" \"serve\" \"--data\" \"/a b/\\\"c\\\"\"")
        );
        assert!(unit.contains("WantedBy=default.target"));
        let plist = launchd_plist("/opt/deskhand", &["serve".into(), "<x>&".into()]);
        assert!(plist.contains("<string>&lt;x&gt;&amp;</string>"));
        assert!(plist.contains(LABEL));
    }
}
