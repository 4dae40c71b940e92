//! The `voxnix` command line.

mod sandbox;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// voxnix: personal NixOS containers on your own server.
#[derive(Debug, Parser)]
#[command(name = "voxnix", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A throwaway appliance (real systemd, machined, bridge, DHCP) to try voxnix in.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
}

/// Exit codes shared by all subcommands, so scripts can tell failures apart.
pub mod exit {
    /// Bad usage or invalid input.
    pub const USAGE: u8 = 2;
    /// The host cannot do what was asked (missing tools, not root ...).
    pub const HOST: u8 = 3;
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOXNIX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voxnix: cannot start the async runtime: {e}");
            return ExitCode::from(exit::HOST);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Sandbox(cmd) => sandbox::run(cmd).await,
        }
    })
}
