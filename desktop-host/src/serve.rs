//! `deskhand serve`: the desktop host in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deskhand_core::terminal;
use deskhand_desktop_host::agent::Builtin;
use deskhand_desktop_host::config::{Config, default_config_path};
use deskhand_desktop_host::console::{ConversationFeed, message_line};
use deskhand_desktop_host::executor::Executor;
use deskhand_desktop_host::policy::Policy;
use deskhand_sync::{NetConfig, Node, NodeConfig, NodeRole, RelaySetting};
use tokio_util::sync::CancellationToken;

use crate::control;

pub async fn run(
    data: PathBuf,
    listen: SocketAddr,
    relay: RelaySetting,
    name: Option<String>,
    config_path: Option<PathBuf>,
) -> Result<()> {
    let name = name.unwrap_or_else(crate::paths::host_name);
    let config_path = config_path.unwrap_or_else(default_config_path);
    let config = Config::load(&config_path)?;
    let home = crate::paths::home_dir();
    // Tasks never touch the host's own data, its config file, or the default config folder
    // (a `--config` elsewhere protects that file only, not the folder it sits in).
    let default_dir = default_config_path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let policy = Policy::new(&config, &home, &[&data, &config_path, &default_dir])
        .map_err(|e| anyhow::anyhow!("the config file {}: {e}", config_path.display()))?;
    let roots: Vec<String> = policy
        .roots()
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    let node = Node::open(
        NodeConfig::new(&data, NodeRole::Desktop { name: name.clone() })
            .with_net(NetConfig { listen, relay }),
    )
    .await
    .with_context(|| format!("starting the desktop host in {}", data.display()))?;
    let node = Arc::new(node);
    let cancel = CancellationToken::new();
    let executor = Executor::new(
        node.clone(),
        config,
        policy.clone(),
        Arc::new(Builtin::with_policy(policy)),
        data.join("trash"),
    );
    let status: control::StatusFn = {
        let ex = executor.clone();
        Arc::new(move || serde_json::to_value(ex.status()).unwrap_or_default())
    };
    let control = tokio::spawn(control::serve(
        node.clone(),
        data.clone(),
        status,
        cancel.clone(),
    ));
    let executor_task = tokio::spawn(executor.run(cancel.clone()));

    println!("Deskhand desktop host \"{}\"", terminal::line(&name));
    println!("  device id : {}", node.id());
    println!(
        "  workspace : {}",
        node.doc_id().map(|d| d.to_string()).unwrap_or_default()
    );
    println!("  data      : {}", node.db_path_of().display());
    println!("  listening : {}", addrs(&node));
    println!("  config    : {}", config_path.display());
    println!("  roots     : {}", roots.join(", "));
    let devices = node.peers();
    println!("  paired devices: {}", devices.len());
    for p in &devices {
        let revoked = if p.record.revoked_at.is_some() {
            " (revoked)"
        } else {
            ""
        };
        println!(
            "    {} {:<16} {}{revoked}",
            p.id.short(),
            terminal::line(&p.record.name),
            p.presence
        );
    }
    let png = data.join("pairing-qr.png");
    let code = control::pairing_answer(&node, Duration::from_secs(300), &png)?;
    println!("\nScan to pair a phone (valid 5 minutes, once; `deskhand pair` makes another):");
    println!("{}", code["qr"].as_str().unwrap_or_default());
    println!(
        "pairing payload: {}",
        code["uri"].as_str().unwrap_or_default()
    );
    println!("pairing QR PNG : {}", png.display());
    println!("Press Ctrl-C to stop.");

    // Printed by message id as it arrives, wherever it lands in the list; peer text escaped.
    let mut feed = node.read(ConversationFeed::new);
    let mut changes = node.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            r = changes.changed() => {
                if r.is_err() { break; }
                for m in node.read(|d| feed.new_messages(d)) {
                    println!("{}", message_line(&m));
                }
            }
        }
    }
    println!("stopping…");
    cancel.cancel();
    let stop = async {
        match executor_task.await {
            Ok(Err(e)) => tracing::warn!("executor: {e:#}"),
            Err(e) => tracing::warn!("executor: {e}"),
            Ok(Ok(())) => {}
        }
        if let Ok(Err(e)) = control.await {
            tracing::warn!("control socket: {e:#}");
        }
        match Arc::try_unwrap(node) {
            Ok(node) => node.shutdown().await,
            Err(_) => tracing::warn!("the node was still in use at shutdown"),
        }
    };
    // Whatever a tool is doing, the host is gone within STOP_LIMIT (or at a second signal).
    // Every write it acknowledged is already on disk; a task it could not end is marked
    // `interrupted` at the next start.
    tokio::select! {
        _ = stop => {}
        _ = tokio::time::sleep(STOP_LIMIT) => tracing::warn!(
            "the host did not stop within {STOP_LIMIT:?}; exiting anyway (tasks still running \
             show as interrupted after a restart)"
        ),
        _ = tokio::signal::ctrl_c() => tracing::warn!("stopping now (second signal)"),
        _ = term.recv() => tracing::warn!("stopping now (second signal)"),
    }
    Ok(())
}

/// How long stopping may take before the process exits anyway.
const STOP_LIMIT: Duration = Duration::from_secs(8);

fn addrs(node: &Node) -> String {
    node.direct_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
