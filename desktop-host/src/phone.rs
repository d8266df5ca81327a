//! `deskhand phone …`: the terminal phone. It drives the desktop through the same Rust node a
//! phone app uses, so a laptop or an SSH session can act as a phone, and tests act as a user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use deskhand_core::schema::{Message, Role, Workspace};
use deskhand_core::{MessageId, PairingPayload};
use deskhand_sync::node::{PeerView, random_id_bytes};
use deskhand_sync::presence::now_unix_ms;
use deskhand_sync::{NetConfig, Node, NodeConfig, NodeRole, RelaySetting};
use serde_json::json;

#[derive(Subcommand)]
pub enum PhoneCommand {
    /// Pair with a desktop from its pairing code (text or QR image).
    Pair {
        /// The `deskhand://pair?…` payload.
        payload: Option<String>,
        /// Read the payload from a QR code PNG instead.
        #[arg(long)]
        qr_png: Option<PathBuf>,
        /// This phone's name, shown on the desktop.
        #[arg(long)]
        name: Option<String>,
    },
    /// Write a message (committed here first; queued if the desktop is unreachable).
    Send {
        /// The text.
        text: String,
        /// How long to try to deliver it now.
        #[arg(long, default_value = "5")]
        wait: u64,
    },
    /// Sync with the desktop now.
    Sync {
        /// Give up after this many seconds.
        #[arg(long, default_value = "10")]
        timeout: u64,
    },
    /// Show the conversation, tasks, approvals and the desktop's presence.
    Show {
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Forget the desktop and its workspace (to pair with another one).
    Forget,
}

async fn open(data: &Path, listen: SocketAddr) -> Result<Node> {
    let cfg = NodeConfig::new(data, NodeRole::Phone).with_net(NetConfig {
        listen,
        relay: RelaySetting::Off,
    });
    Node::open(cfg)
        .await
        .with_context(|| format!("opening the phone in {}", data.display()))
}

fn home_view(node: &Node) -> Option<PeerView> {
    let (id, _) = node.home()?;
    node.peers().into_iter().find(|p| p.id == id)
}

/// Waits until the home desktop holds what we hold and we hold what it holds.
async fn wait_in_sync(node: &Node, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut changes = node.subscribe();
    node.sync_now();
    loop {
        let Some(home) = home_view(node) else {
            return Err("not paired".into());
        };
        if home.in_sync {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(home
                .last_error
                .unwrap_or_else(|| "the desktop did not answer in time".into()));
        }
        if let Some(e) = &home.last_error
            && (e.contains("revoked") || e.contains("not paired") || e.contains("refused"))
        {
            return Err(e.clone());
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(25)), changes.changed()).await;
    }
}

fn require_paired(node: &Node) -> Result<()> {
    if node.home().is_none() {
        bail!("this phone is not paired: run `deskhand phone --data DIR pair <code>` first");
    }
    Ok(())
}

pub async fn run(data: PathBuf, listen: SocketAddr, cmd: PhoneCommand) -> Result<()> {
    let node = open(&data, listen).await?;
    let result = run_on(&node, cmd).await;
    node.shutdown().await;
    result
}

async fn run_on(node: &Node, cmd: PhoneCommand) -> Result<()> {
    match cmd {
        PhoneCommand::Pair {
            payload,
            qr_png,
            name,
        } => {
            let text = match (payload, qr_png) {
                (Some(p), None) => p,
                (None, Some(png)) => crate::qr::read_png(&png)?,
                _ => bail!("give the pairing code either as text or with --qr-png FILE"),
            };
            let payload = PairingPayload::parse(&text)?;
            let name = name.unwrap_or_else(|| format!("{}-terminal", crate::paths::host_name()));
            node.pair(&payload, &name, "terminal").await?;
            println!(
                "Paired with {:?} ({}) as {name:?}.",
                payload.name,
                payload.desktop.short()
            );
            match wait_in_sync(node, Duration::from_secs(10)).await {
                Ok(()) => println!("Workspace received."),
                Err(e) => println!(
                    "Paired, but the workspace has not arrived yet ({e}); run `deskhand phone sync`."
                ),
            }
            Ok(())
        }
        PhoneCommand::Send { text, wait } => {
            require_paired(node)?;
            if node.read(|d| Workspace::check_version(d).is_err()) {
                // A phone never creates the workspace itself; wait briefly for it.
                let _ = wait_in_sync(node, Duration::from_secs(wait)).await;
                if node.read(|d| Workspace::check_version(d).is_err()) {
                    bail!(
                        "the workspace has not been received from the desktop yet; run `deskhand phone sync` when the desktop is reachable"
                    );
                }
            }
            let msg = Message {
                id: MessageId::from_random(random_id_bytes()),
                author: node.id().to_string(),
                role: Role::User,
                text,
                created_at: now_unix_ms(),
                task_id: None,
            };
            node.write(|tx| Workspace::append_message(tx, &msg)).await?;
            match wait_in_sync(node, Duration::from_secs(wait)).await {
                Ok(()) => println!("sent {} (the desktop has it)", msg.id),
                Err(e) => println!(
                    "queued {}: the desktop is unreachable ({e}); it is saved on this phone and will be sent on the next sync",
                    msg.id
                ),
            }
            Ok(())
        }
        PhoneCommand::Sync { timeout } => {
            require_paired(node)?;
            let n = wait_in_sync(node, Duration::from_secs(timeout)).await;
            match n {
                Ok(()) => {
                    let count = node.read(Workspace::message_count);
                    println!("in sync with the desktop ({count} messages)");
                    Ok(())
                }
                Err(e) => bail!("could not sync with the desktop: {e}"),
            }
        }
        PhoneCommand::Show { json } => show(node, json),
        PhoneCommand::Forget => {
            let home = node.home();
            node.forget_desktop().await?;
            match home {
                Some((id, r)) => {
                    println!("Forgot {:?} ({}) and its workspace.", r.name, id.short())
                }
                None => println!("This phone was not paired."),
            }
            Ok(())
        }
    }
}

fn show(node: &Node, as_json: bool) -> Result<()> {
    let ws = node.read(|d| Workspace::read(d).ok());
    let home = home_view(node);
    if as_json {
        let desktop = home.as_ref().map(|h| {
            json!({"id": h.id.to_string(), "name": h.record.name, "presence": h.presence, "last_error": h.last_error})
        });
        let (messages, tasks) = match &ws {
            Some(w) => (
                json!(w.messages),
                json!(w.tasks.values().collect::<Vec<_>>()),
            ),
            None => (json!([]), json!([])),
        };
        let out = json!({
            "device": node.id().to_string(),
            "workspace": node.doc_id().map(|d| d.to_string()),
            "desktop": desktop,
            "messages": messages,
            "tasks": tasks,
            "approvals": [],
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match &home {
        Some(h) => {
            println!(
                "Desktop {:?} ({}): {}",
                h.record.name,
                h.id.short(),
                h.presence
            );
            if let Some(e) = &h.last_error {
                println!("  last problem: {e}");
            }
        }
        None => println!("Not paired."),
    }
    let Some(ws) = ws else {
        println!("No workspace yet.");
        return Ok(());
    };
    println!("\nConversation ({} messages):", ws.messages.len());
    for m in &ws.messages {
        let who = if m.author == node.id().to_string() {
            "me".to_owned()
        } else {
            m.author.chars().take(10).collect()
        };
        println!("  [{:<5}] {who:<10} {}", m.role.as_str(), m.text);
    }
    println!("\nTasks ({}):", ws.tasks.len());
    for t in ws.tasks.values() {
        println!("  {} {:<16} {}", t.id, t.status.as_str(), t.prompt);
    }
    println!("\nApprovals: none pending");
    Ok(())
}
