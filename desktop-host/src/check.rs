//! `deskhand agent check`: is the agent's set-up working? One small request to the model (and,
//! from the connectors' side, one to each of them), each answered in plain words.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use deskhand_core::terminal;
use deskhand_desktop_host::config::Config;
use deskhand_desktop_host::model;

/// How long the model may take to answer the check.
const MODEL_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every check of the config at `config_path`, one line each; fails when one failed.
pub async fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    println!("config: {}", config_path.display());
    // Each check prints its own lines and says whether it passed.
    let results = [check_model(&config).await, check_connectors(&config).await];
    let failed = results.iter().filter(|ok| !**ok).count();
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// `model: ok (…)`, or what is wrong with `[model]`. True when it works or none is configured.
pub async fn check_model(config: &Config) -> bool {
    let Some(m) = &config.model else {
        println!(
            "model: none (no [model] in config.toml: the built-in commands answer every message)"
        );
        return true;
    };
    let backend = match model::backend(m, |v| std::env::var(v).ok()) {
        Ok(b) => b,
        Err(e) => {
            println!("model: {}", terminal::line(&e.to_string()));
            return false;
        }
    };
    match model::check(&*backend, MODEL_CHECK_TIMEOUT).await {
        Ok(took) => {
            println!(
                "model: ok ({} answered in {} ms)",
                terminal::line(&backend.describe()),
                took.as_millis()
            );
            true
        }
        Err(e) => {
            // Server text is shown escaped: it comes from a process we do not control.
            println!("model: {}", terminal::line(&e.to_string()));
            false
        }
    }
}

/// `mcp NAME: ok (N tools)` for each connector, or what is wrong with it (all started at once,
/// each within its time limit, then stopped). True when all work or none is configured.
pub async fn check_connectors(config: &Config) -> bool {
    if config.mcp_servers.is_empty() {
        println!("mcp: no connectors ([mcp_servers] in config.toml adds MCP servers)");
        return true;
    }
    let lines = deskhand_desktop_host::mcp::check(config).await;
    for l in &lines {
        // A server's stderr is text from a process we do not control: shown escaped.
        println!("{}", terminal::block(&l.to_string(), "  "));
    }
    lines.iter().all(|l| l.ok)
}
