//! `deskhand serve`: the desktop host in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use deskhand_core::schema::Workspace;
use deskhand_sync::{NetConfig, Node, NodeConfig, NodeRole, RelaySetting};

pub async fn run(
    data: PathBuf,
    listen: SocketAddr,
    relay: RelaySetting,
    name: Option<String>,
) -> Result<()> {
    let name = name.unwrap_or_else(crate::paths::host_name);
    let node = Node::open(
        NodeConfig::new(&data, NodeRole::Desktop { name: name.clone() })
            .with_net(NetConfig { listen, relay }),
    )
    .await
    .with_context(|| format!("starting the desktop host in {}", data.display()))?;
    println!("Deskhand desktop host {name:?}");
    println!("  device id : {}", node.id());
    println!(
        "  workspace : {}",
        node.doc_id().map(|d| d.to_string()).unwrap_or_default()
    );
    println!("  data      : {}", node.db_path_of().display());
    println!("  listening : {}", addrs(&node));
    let devices = node.peers();
    println!("  paired devices: {}", devices.len());
    for p in &devices {
        println!("    {} {:<16} {}", p.id.short(), p.record.name, p.presence);
    }
    println!("Press Ctrl-C to stop.");

    let mut seen = node.read(Workspace::message_count);
    let mut changes = node.subscribe();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            r = changes.changed() => {
                if r.is_err() { break; }
                let new = node.read(|d| Workspace::messages_from(d, seen)).unwrap_or_default();
                for m in &new {
                    println!("[{}] {}: {}", m.role, &m.author[..10.min(m.author.len())], m.text);
                }
                seen += new.len();
            }
        }
    }
    println!("stopping…");
    node.shutdown().await;
    Ok(())
}

fn addrs(node: &Node) -> String {
    node.direct_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
