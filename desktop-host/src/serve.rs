//! `deskhand serve`: the desktop host in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deskhand_core::terminal;
use deskhand_desktop_host::agent::{Agent, Builtin};
use deskhand_desktop_host::config::{Config, default_config_path};
use deskhand_desktop_host::console::{ConversationFeed, message_line};
use deskhand_desktop_host::executor::Executor;
use deskhand_desktop_host::mcp::Connectors;
use deskhand_desktop_host::model::{self, ModelAgent, Routed};
use deskhand_desktop_host::policy::Policy;
use deskhand_sync::{NetConfig, Node, NodeConfig, NodeRole, RelaySetting};
use tokio_util::sync::CancellationToken;

use crate::control;

/// What `deskhand serve` was told on its command line (`None`: the config file decides).
pub struct Options {
    pub data: PathBuf,
    pub listen: Option<SocketAddr>,
    pub relay: Option<RelaySetting>,
    pub mdns: Option<bool>,
    pub name: Option<String>,
    pub config_path: Option<PathBuf>,
}

/// How long a desktop with a relay waits at start for its home relay, so that the first pairing
/// code names the relay it is actually connected to (offline, it goes on after this).
const HOME_RELAY_WAIT: Duration = Duration::from_secs(3);

/// The network settings of `serve`: without `--listen`, every interface on the port kept from
/// last time; relay and mDNS from the command line, else the config file.
pub fn net_config(opts: &Options, config: &Config) -> Result<NetConfig> {
    let relay = match &opts.relay {
        Some(r) => r.clone(),
        None => config.relay_setting().map_err(|e| anyhow::anyhow!(e))?,
    };
    let net = NetConfig::default()
        .with_relay(relay)
        .with_mdns(opts.mdns.unwrap_or(config.mdns));
    Ok(match opts.listen {
        Some(l) => net.with_listen(l),
        None => net
            .with_listen(SocketAddr::from(([0, 0, 0, 0], 0)))
            .with_keep_port(true),
    })
}

pub async fn run(opts: Options) -> Result<()> {
    deskhand_desktop_host::fault::check()?;
    let name = opts.name.clone().unwrap_or_else(crate::paths::host_name);
    let config_path = opts.config_path.clone().unwrap_or_else(default_config_path);
    let data = opts.data.clone();
    let config = Config::load(&config_path)?;
    let net = net_config(&opts, &config)?;
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
    let (agent, agent_line) = agent(&config, &config_path, policy.clone(), &name, &home, &roots)?;
    let node = Node::open(
        NodeConfig::new(&data, NodeRole::Desktop { name: name.clone() }).with_net(net.clone()),
    )
    .await
    .with_context(|| format!("starting the desktop host in {}", data.display()))?;
    let node = Arc::new(node);
    let cancel = CancellationToken::new();
    let connectors = Connectors::new(&config, policy.registry().clone());
    let pusher = deskhand_desktop_host::push::Pusher::new(
        node.clone(),
        Duration::from_millis(config.push_min_interval_ms),
        config.push_to_loopback,
    )?;
    let executor = Executor::new(node.clone(), config, policy, agent, data.join("trash"))
        .with_connectors(connectors.clone())
        .with_pusher(pusher.clone());
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
    // Connectors start in the background (a slow `npx` never holds up serving); a call that
    // needs one before it is up waits for it, within its time limit.
    let connectors_start = {
        let (c, cancel) = (connectors.clone(), cancel.clone());
        tokio::spawn(async move { c.start_all(&cancel).await })
    };

    println!("Deskhand desktop host \"{}\"", terminal::line(&name));
    println!("  device id : {}", node.id());
    println!(
        "  workspace : {}",
        node.doc_id().map(|d| d.to_string()).unwrap_or_default()
    );
    println!("  data      : {}", node.db_path_of().display());
    if net.relay != RelaySetting::Off {
        node.wait_for_home_relay(HOME_RELAY_WAIT).await;
    }
    println!("  listening : {}", addrs(&node));
    if let Some(port) = node.moved_from_port() {
        println!(
            "  note      : port {port}, used before, is taken; paired phones learn the new address from the workspace, the local network or the relay"
        );
    }
    println!(
        "  relay     : {}",
        node.relay_url().unwrap_or_else(|| {
            "off (phones reach this desktop only on a network they share with it)".into()
        })
    );
    println!(
        "  discovery : {}",
        if net.mdns {
            "local network (mDNS)"
        } else {
            "off"
        }
    );
    println!("  config    : {}", config_path.display());
    println!("  roots     : {}", roots.join(", "));
    println!("  agent     : {agent_line}");
    if connectors.is_empty() {
        println!("  connectors: none ([mcp_servers] in the config file adds MCP servers)");
    } else {
        println!("  connectors: {}", connectors.describe().join(", "));
    }
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
    // One feed per conversation document; a document that appears later prints all it holds.
    let mut feeds: std::collections::HashMap<deskhand_sync::store::DocKey, ConversationFeed> = node
        .conversation_docs()
        .into_iter()
        .filter_map(|k| node.read_doc(&k, ConversationFeed::new).map(|f| (k, f)))
        .collect();
    let mut changes = node.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            r = changes.changed() => {
                if r.is_err() { break; }
                for key in node.conversation_docs() {
                    let feed = feeds.entry(key.clone()).or_insert_with(ConversationFeed::from_start);
                    for m in node.read_doc(&key, |d| feed.new_messages(d)).unwrap_or_default() {
                        println!("{}", message_line(&m));
                    }
                }
            }
        }
    }
    println!("stopping…");
    cancel.cancel();
    let stop = async {
        let _ = connectors_start.await;
        match executor_task.await {
            Ok(Err(e)) => tracing::warn!("executor: {e:#}"),
            Err(e) => tracing::warn!("executor: {e}"),
            Ok(Ok(())) => {}
        }
        if let Ok(Err(e)) = control.await {
            tracing::warn!("control socket: {e:#}");
        }
        connectors.shutdown().await;
        pusher.shutdown().await;
        drop(pusher);
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

/// The agent that runs tasks, and the line `serve` prints about it: the model of `[model]`
/// (messages starting with `/` still run the built-in commands), else the built-in commands.
/// A missing API key refuses to start.
fn agent(
    config: &Config,
    config_path: &std::path::Path,
    policy: Policy,
    desktop: &str,
    home: &std::path::Path,
    roots: &[String],
) -> Result<(Arc<dyn Agent>, String)> {
    let builtin = Builtin::with_policy(policy);
    let Some(m) = &config.model else {
        return Ok((
            Arc::new(builtin),
            "built-in commands (no [model] in config.toml)".into(),
        ));
    };
    let backend = model::backend(m, |v| std::env::var(v).ok())
        .map_err(|e| anyhow::anyhow!("the config file {}: {e}", config_path.display()))?;
    let line = format!(
        "{} (a message starting with / runs the built-in commands)",
        backend.describe()
    );
    let system = model::agent::system_prompt(desktop, home, roots);
    let agent = ModelAgent::new(backend, system, model::limits(m));
    Ok((Arc::new(Routed::new(builtin, agent)), line))
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
