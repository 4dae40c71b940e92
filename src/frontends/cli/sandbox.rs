//! `voxnix sandbox run|shell`: boot an appliance, run something in it, tear it down.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::sandbox::{Sandbox, SandboxOptions};

use super::exit;

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Boot a fresh appliance, run CMD inside it, power it off, exit with CMD's status.
    Run {
        /// Copy the appliance's journal and console log into DIR before power-off.
        #[arg(long, value_name = "DIR")]
        keep_logs: Option<PathBuf>,
        /// Start the voxnix daemon inside (as a systemd service) before CMD.
        #[arg(long)]
        daemon: bool,
        /// The command and its arguments.
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Boot a fresh appliance and open an interactive shell inside it.
    Shell {
        /// Copy the appliance's journal and console log into DIR before power-off.
        #[arg(long, value_name = "DIR")]
        keep_logs: Option<PathBuf>,
        /// Start the voxnix daemon inside (as a systemd service) first.
        #[arg(long)]
        daemon: bool,
    },
}

pub async fn run(cmd: SandboxCommand) -> ExitCode {
    let (keep_logs, daemon, command) = match cmd {
        SandboxCommand::Run {
            keep_logs,
            daemon,
            command,
        } => (keep_logs, daemon, command),
        SandboxCommand::Shell { keep_logs, daemon } => {
            eprintln!("voxnix: booting a sandbox appliance; leave the shell to power it off.");
            (keep_logs, daemon, vec!["/bin/bash".into(), "-l".into()])
        }
    };
    let mut opts = SandboxOptions {
        keep_logs,
        ..SandboxOptions::default()
    };
    if daemon {
        let exe = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("voxnix: cannot find my own binary to install in the sandbox: {e}");
                return ExitCode::from(exit::HOST);
            }
        };
        crate::sandbox::daemon::install(
            &mut opts,
            &exe,
            &crate::sandbox::daemon::sandbox_config(""),
        );
    }
    run_inside(opts, command).await
}

/// Boots, runs `command` with inherited stdio, powers off. Ctrl-C and SIGTERM
/// reach the command; the appliance is powered off whatever happens.
pub async fn run_inside(opts: SandboxOptions, command: Vec<String>) -> ExitCode {
    // Ignore-and-remember SIGINT/SIGTERM for the whole run, so that Ctrl-C
    // during boot or in the command still ends in an orderly teardown.
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
    ) else {
        eprintln!("voxnix: cannot install signal handlers");
        return ExitCode::from(exit::HOST);
    };
    let sandbox = tokio::select! {
        r = Sandbox::boot_with(opts) => match r {
            Ok(s) => s,
            Err(e) => {
                eprintln!("voxnix: sandbox: {e}");
                return ExitCode::from(exit::HOST);
            }
        },
        // Dropping the boot future drops the half-made sandbox: it cleans up.
        _ = sigint.recv() => return ExitCode::from(130),
        _ = sigterm.recv() => return ExitCode::from(143),
    };
    let Some((program, args)) = command.split_first() else {
        return ExitCode::from(exit::USAGE);
    };
    // With a terminal, the command stays in our process group so it can read
    // the terminal, and Ctrl-C reaches it directly. Without one, it gets its
    // own group and we forward SIGINT/SIGTERM to that group.
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut inner = tokio::process::Command::from(sandbox.command(program));
    inner.args(args);
    if !interactive {
        inner.process_group(0);
    }
    let mut child = match inner.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("voxnix: cannot run {program} in the sandbox: {e}");
            return ExitCode::from(exit::HOST);
        }
    };
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            _ = sigint.recv() => {
                if !interactive {
                    forward(&child, nix::sys::signal::Signal::SIGINT);
                }
            }
            _ = sigterm.recv() => forward(&child, nix::sys::signal::Signal::SIGTERM),
        }
    };
    let code = match status {
        Ok(s) => match s.code() {
            Some(c) => u8::try_from(c).unwrap_or(1),
            None => {
                use std::os::unix::process::ExitStatusExt;
                128u8.saturating_add(u8::try_from(s.signal().unwrap_or(0)).unwrap_or(0))
            }
        },
        Err(e) => {
            eprintln!("voxnix: waiting for the command: {e}");
            exit::HOST
        }
    };
    if let Err(e) = tokio::task::spawn_blocking(move || sandbox.shutdown())
        .await
        .unwrap_or(Ok(()))
    {
        eprintln!("voxnix: sandbox teardown: {e}");
    }
    ExitCode::from(code)
}

fn forward(child: &tokio::process::Child, signal: nix::sys::signal::Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // The command leads its own group when not interactive; otherwise
        // this reaches just the command.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal)
            .or_else(|_| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal));
    }
}
