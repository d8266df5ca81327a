//! `deskhand`: the desktop host.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use deskhand_sync::RelaySetting;

mod demo;
mod paths;
mod serve;

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
        #[arg(long)]
        data: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:0")]
        listen: SocketAddr,
        /// Relay: off, default, or a URL.
        #[arg(long, default_value = "off")]
        relay: RelaySetting,
        /// Name shown on phones.
        #[arg(long)]
        name: Option<String>,
    },
    /// A desktop and two phones in a temporary directory, syncing over real iroh connections on
    /// loopback: shows the document converging, offline catch-up and presence.
    Demo,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo => "error",
        Command::Serve { .. } => "warn,deskhand_sync=info,deskhand=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DESKHAND_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve {
                data,
                listen,
                relay,
                name,
            } => {
                let data = data.unwrap_or_else(paths::default_data_dir);
                serve::run(data, listen, relay, name).await
            }
            Command::Demo => demo::run().await,
        }
    })
}
