//! `deskhand`: the desktop host, its control commands, and the terminal phone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use deskhand_core::terminal;
use deskhand_sync::RelaySetting;
use serde_json::json;

mod check;
mod control;
mod demo;
use deskhand_desktop_host::paths;
mod phone;
mod qr;
mod serve;
mod service;

#[derive(Parser)]
#[command(
    name = "deskhand",
    version,
    about = "Run an agent on your desktop from your phone"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the desktop host in the foreground.
    Serve {
        /// Data directory (default: the platform's data directory).
        #[arg(long, value_parser = absolute_path)]
        data: Option<PathBuf>,
        /// Address to listen on (default: all interfaces, on the port this desktop used last
        /// time, or a new one the first time or when that one is taken).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Relay for phones away from home: default (n0's public relays), off, or a URL
        /// (default: `relay` in the config file, else default).
        #[arg(long)]
        relay: Option<RelaySetting>,
        /// Local-network discovery (mDNS) of this desktop by its phones (default: `mdns` in the
        /// config file, else on).
        #[arg(long, value_enum)]
        mdns: Option<Switch>,
        /// Name shown on phones (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// Config file (default: config.toml in the platform's config directory).
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
    },
    /// Is the host running, and what is it doing?
    Status {
        /// Data directory of the host.
        #[arg(long, value_parser = absolute_path)]
        data: Option<PathBuf>,
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// What tasks moved to the Deskhand trash, and putting it back.
    Trash {
        /// Data directory of the host.
        #[arg(long, global = true, value_parser = absolute_path)]
        data: Option<PathBuf>,
        #[command(subcommand)]
        action: TrashAction,
    },
    /// Run the host in the background at login (systemd user unit / launchd agent).
    Service {
        #[command(subcommand)]
        action: service::ServiceAction,
    },
    /// Ask the running host for a fresh one-time pairing code.
    Pair {
        /// Data directory of the running host.
        #[arg(long, value_parser = absolute_path)]
        data: Option<PathBuf>,
        /// Where to write the QR code PNG (default: pairing-qr.png in the data directory).
        #[arg(long, value_parser = absolute_path)]
        png: Option<PathBuf>,
        /// How long the code stays valid (e.g. 90s, 5m, 1h).
        #[arg(long, default_value = "5m", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// List, rename or revoke paired devices of the running host.
    Devices {
        /// Data directory of the running host.
        #[arg(long, global = true, value_parser = absolute_path)]
        data: Option<PathBuf>,
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<DevicesAction>,
    },
    /// The terminal phone: pair, send, task, cancel, approve, deny, watch, fetch, sync, show,
    /// forget — through the same phone API as the mobile apps.
    Phone {
        /// The phone's data directory.
        #[arg(long, value_parser = absolute_path)]
        data: Option<PathBuf>,
        /// Address the phone's endpoint binds.
        #[arg(long, default_value = "0.0.0.0:0")]
        listen: SocketAddr,
        /// Find the desktop on the local network (mDNS).
        #[arg(long, value_enum, default_value = "on")]
        mdns: Switch,
        #[command(subcommand)]
        command: phone::PhoneCommand,
    },
    /// The agent's set-up: `deskhand agent check` makes one small request to the model of
    /// `[model]` and says in plain words what is wrong.
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// A desktop and two phones in a temporary directory, syncing over real iroh connections on
    /// loopback: shows the document converging, offline catch-up and presence.
    Demo,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

impl Switch {
    pub(crate) fn on(self) -> bool {
        self == Self::On
    }
}

#[derive(Subcommand)]
enum AgentAction {
    /// One small request to the model (and each connector): `model: ok (…)` or what is wrong.
    Check {
        /// Config file (default: config.toml in the platform's config directory).
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TrashAction {
    /// List what is in the trash, newest first.
    List,
    /// Put an item back where it was (by trash id or original path).
    Restore {
        /// Trash id or original path.
        item: String,
    },
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Give a device a new name.
    Rename {
        /// Device id (or an unambiguous prefix).
        id: String,
        /// New name.
        name: String,
    },
    /// Revoke a device: its live connection closes at once and it cannot reconnect.
    Revoke {
        /// Device id (or an unambiguous prefix).
        id: String,
    },
}

/// A path argument made absolute against the current directory, once, here: the host protects
/// its data and config directories by absolute path, and a relative one would later be read
/// against the home folder or a task's folder instead.
pub(crate) fn absolute_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the path is empty".into());
    }
    std::path::absolute(s).map_err(|e| format!("cannot make {s:?} an absolute path: {e}"))
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?} is not a duration like 90s, 5m or 1h")),
    };
    if secs == 0 {
        return Err("the duration must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

fn main() {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo
        | Command::Phone { .. }
        | Command::Pair { .. }
        | Command::Devices { .. }
        | Command::Status { .. }
        | Command::Trash { .. }
        | Command::Service { .. }
        | Command::Agent { .. } => "error",
        Command::Serve { .. } => "warn,iroh=error,deskhand_sync=info,deskhand=info",
    };
    // iroh 1.4 logs `ERROR relay_recv_channel closed` (socket/transports/relay.rs) whenever an
    // endpoint with a relay transport closes, an ordinary shutdown; what fails to connect is
    // reported by Deskhand itself, naming what it tried. A `DESKHAND_LOG` that names the relay
    // transport shows it again.
    const RELAY_NOISE: &str = "iroh::socket::transports::relay";
    let from_env = std::env::var("DESKHAND_LOG").ok();
    let mut filter = from_env
        .as_deref()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_log));
    if !from_env.as_deref().is_some_and(|v| v.contains(RELAY_NOISE))
        && let Ok(off) = format!("{RELAY_NOISE}=off").parse()
    {
        filter = filter.add_directive(off);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Plain lines, each record escaped whole: logs echo peer text (names, ids, reasons).
        .with_ansi(false)
        .with_writer(|| SafeLog(std::io::stderr()))
        .init();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            let r = rt.block_on(run(cli.command));
            // Everything that must outlive the command was awaited (stores flushed, tasks
            // ended). Dropping the runtime now would wait for every blocking thread (a tool
            // call abandoned in a system call that never returns, on a hung network mount,
            // would keep the process alive for good) and drop, midway, the close of an endpoint
            // still draining a handshake it gave up (iroh then aborts it with an error).
            // Whatever still runs ends with the process instead.
            std::mem::forget(rt);
            r
        });
    if let Err(e) = result {
        // Errors carry peer text too (a desktop's refusal, a device name).
        eprintln!("error: {}", terminal::block(&format!("{e:#}"), "  "));
        std::process::exit(1);
    }
}

/// Standard error for log records: one record per `write`, as `tracing-subscriber` writes them,
/// printed as one line with every character a peer could use to fake output escaped
/// ([`terminal::line`]); only the record's final newline stays.
struct SafeLog<W>(W);

impl<W: std::io::Write> std::io::Write for SafeLog<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        self.0
            .write_all(format!("{}{end}", terminal::line(body)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve {
            data,
            listen,
            relay,
            mdns,
            name,
            config,
        } => {
            serve::run(serve::Options {
                data: data.unwrap_or_else(paths::default_data_dir),
                listen,
                relay,
                mdns: mdns.map(Switch::on),
                name,
                config_path: config,
            })
            .await
        }
        Command::Status { data, json } => {
            status(data.unwrap_or_else(paths::default_data_dir), json).await
        }
        Command::Trash { data, action } => {
            let data = data.unwrap_or_else(paths::default_data_dir);
            let trash = deskhand_desktop_host::tools::files::Trash::new(data.join("trash"));
            match action {
                TrashAction::List => {
                    let items = trash.list()?;
                    if items.is_empty() {
                        println!("The Deskhand trash is empty ({}).", trash.dir().display());
                    }
                    for e in items {
                        println!(
                            "{}  {}  {}{}",
                            terminal::line(&e.id),
                            ago(e.trashed_at as i64),
                            terminal::line(&e.original_path.display().to_string()),
                            e.task_id
                                .map(|t| format!("  (task {})", terminal::line(&t)))
                                .unwrap_or_default()
                        );
                    }
                }
                TrashAction::Restore { item } => {
                    let e = trash.restore(&item)?;
                    println!(
                        "restored {}",
                        terminal::line(&e.original_path.display().to_string())
                    );
                }
            }
            Ok(())
        }
        Command::Service { action } => service::run(action),
        Command::Pair { data, png, ttl } => {
            let data = data.unwrap_or_else(paths::default_data_dir);
            let mut req = json!({"cmd": "pair", "ttl_secs": ttl.as_secs()});
            if let Some(p) = png {
                req["png"] = json!(p);
            }
            let v = control::request(&data, req).await?;
            println!("Scan to pair a phone (valid {}s, once):", ttl.as_secs());
            println!("{}", v["qr"].as_str().unwrap_or_default());
            println!("pairing payload: {}", v["uri"].as_str().unwrap_or_default());
            println!("pairing QR PNG : {}", v["png"].as_str().unwrap_or_default());
            Ok(())
        }
        Command::Devices { data, json, action } => {
            let data = data.unwrap_or_else(paths::default_data_dir);
            match action {
                Some(DevicesAction::Rename { id, name }) => {
                    let v =
                        control::request(&data, json!({"cmd": "rename", "id": id, "name": name}))
                            .await?;
                    if v["ok"] != true {
                        bail!("no such device");
                    }
                    println!("renamed");
                }
                Some(DevicesAction::Revoke { id }) => {
                    let v = control::request(&data, json!({"cmd": "revoke", "id": id})).await?;
                    if v["ok"] != true {
                        bail!("no such device");
                    }
                    println!(
                        "revoked {}; its connection was closed",
                        terminal::line(v["id"].as_str().unwrap_or_default())
                    );
                }
                None => {
                    let v = control::request(&data, json!({"cmd": "devices"})).await?;
                    if json {
                        println!(
                            "{}",
                            terminal::json(&serde_json::to_string_pretty(
                                &json!({"devices": v["devices"], "refusals": v["refusals"]})
                            )?)
                        );
                    } else {
                        print_devices(&v);
                    }
                }
            }
            Ok(())
        }
        Command::Phone {
            data,
            listen,
            mdns,
            command,
        } => {
            let data = data.unwrap_or_else(|| paths::default_data_dir().join("phone"));
            phone::run(data, listen, mdns.on(), command).await
        }
        Command::Demo => demo::run().await,
        Command::Agent {
            action: AgentAction::Check { config },
        } => {
            let path = config.unwrap_or_else(deskhand_desktop_host::config::default_config_path);
            check::run(&path).await
        }
    }
}

async fn status(data: PathBuf, as_json: bool) -> Result<()> {
    let v = match control::request(&data, json!({"cmd": "status"})).await {
        Ok(v) => v,
        Err(e) => {
            if as_json {
                println!(
                    "{}",
                    json!({"running": false, "data": data, "reason": format!("{e:#}")})
                );
            } else {
                println!("Deskhand host: not running ({e:#})");
                println!("service: {}", service::describe());
            }
            std::process::exit(3);
        }
    };
    if as_json {
        println!("{}", terminal::json(&serde_json::to_string_pretty(&v)?));
        return Ok(());
    }
    let ex = &v["executor"];
    // Task and approval ids are keys a phone chose.
    let list = |k: &str| {
        ex[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .map(terminal::line)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!("Deskhand host: running (pid {})", v["pid"]);
    println!("  device id : {}", v["id"].as_str().unwrap_or_default());
    println!(
        "  workspace : {}",
        v["workspace"].as_str().unwrap_or_default()
    );
    println!("  running   : {}", list("running"));
    println!("  queued    : {}", list("queued"));
    println!("  approvals : {}", list("waiting_approvals"));
    println!("  service   : {}", service::describe());
    print_devices(&v);
    Ok(())
}

fn print_devices(v: &serde_json::Value) {
    let devices = v["devices"].as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        println!("No paired devices. Run `deskhand pair` and scan the code with a phone.");
    }
    for d in &devices {
        let presence = match d["presence"]["state"].as_str() {
            Some("connected") => "connected".to_owned(),
            Some("last_seen") => format!(
                "last seen {}",
                ago(d["presence"]["at"].as_i64().unwrap_or(0))
            ),
            _ => "never connected".to_owned(),
        };
        let revoked = if d["revoked_at"].is_null() {
            ""
        } else {
            "  REVOKED"
        };
        println!(
            "{}  {:<20} {:<9} {presence}{revoked}",
            terminal::line(d["id"].as_str().unwrap_or_default()),
            terminal::line(d["name"].as_str().unwrap_or_default()),
            terminal::line(d["platform"].as_str().unwrap_or_default())
        );
    }
    let refusals = v["refusals"].as_array().cloned().unwrap_or_default();
    if !refusals.is_empty() {
        println!("\nRefused ({}):", refusals.len());
        for r in refusals.iter().rev().take(20) {
            let peer: String = r["peer"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(10)
                .collect();
            println!(
                "  {}  {}  {}: {}",
                ago(r["at"].as_i64().unwrap_or(0)),
                terminal::line(&peer),
                terminal::line(r["event"].as_str().unwrap_or_default()),
                terminal::line(r["detail"].as_str().unwrap_or_default())
            );
        }
    }
}

/// "12s ago", "3m ago", … for a unix-ms instant.
pub(crate) fn ago(at_ms: i64) -> String {
    ago_at(at_ms, deskhand_sync::presence::now_unix_ms())
}

/// "12s ago", … for `at_ms` seen from `now_ms` (both in the same clock, e.g. the desktop's).
pub(crate) fn ago_at(at_ms: i64, now_ms: i64) -> String {
    let s = (now_ms - at_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn a_log_record_stays_one_line_whatever_peer_text_it_holds() {
        let mut log = super::SafeLog(Vec::new());
        let record =
            "WARN refused changes from ab: tasks/x\x1b[2J\r\n[agent] fake\u{202e}/status\n";
        let n = log.write(record.as_bytes()).expect("write");
        assert_eq!(n, record.len());
        let out = String::from_utf8(log.0).expect("utf-8");
        assert_eq!(
            out,
            "WARN refused changes from ab: tasks/x\\u{1b}[2J\\r\\n[agent] fake\\u{202e}/status\n"
        );
    }

    #[test]
    fn path_arguments_are_absolute() {
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(super::absolute_path("desk"), Ok(cwd.join("desk")));
        assert_eq!(
            super::absolute_path("/srv/desk"),
            Ok(std::path::PathBuf::from("/srv/desk"))
        );
        assert!(super::absolute_path("").is_err());
    }
}
