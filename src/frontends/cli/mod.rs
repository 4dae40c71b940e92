//! The `voxnix` command line: the daemon itself, the container verbs (clients
//! of the daemon's D-Bus API), and the sandbox appliance.

mod connect;
mod containers;
mod history;
mod sandbox;
mod storage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

pub use containers::exit_code_for;

/// voxnix: personal NixOS containers on your own server.
#[derive(Debug, Parser)]
#[command(name = "voxnix", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: containers::Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List your containers (all of them for root without --as).
    List,
    /// Create and start a container from modules of the library.
    Create(containers::CreateArgs),
    /// Rebuild a container with a new module list and switch it in place
    /// (its workspace is kept, and snapshotted first).
    Update {
        name: String,
        /// The complete new module list.
        modules: Vec<String>,
    },
    /// Start a stopped container.
    Start { name: String },
    /// Write a container's conf file again from voxnix's record, after it
    /// was removed outside voxnix (e.g. by nixos-container destroy).
    Repair { name: String },
    /// Stop a running container.
    Stop { name: String },
    /// Stop and start a container.
    Restart { name: String },
    /// Destroy a container (asks first unless --yes). Its workspace is kept
    /// for the retention period unless --purge.
    Destroy {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Also delete its workspace and snapshots now, for good.
        #[arg(long)]
        purge: bool,
    },
    /// Show a container in detail.
    Status { name: String },
    /// Show the last log lines of a container and its unit.
    Logs {
        name: String,
        /// How many lines (1-1000).
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: u32,
    },
    /// Run a command in a running container: voxnix exec NAME -- CMD [ARGS...]
    Exec {
        name: String,
        /// Kill the command after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u32,
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Your SSH public keys: root logins of your containers with the ssh
    /// module take them (the running ones at once).
    #[command(subcommand)]
    Keys(connect::KeysCommand),
    /// Print the ~/.ssh/config block and known_hosts line that reach a
    /// running container with ssh (its host key pinned).
    Connect {
        name: String,
        /// Only the ~/.ssh/config block (to append to it as is).
        #[arg(long, conflicts_with = "known_hosts")]
        ssh_config: bool,
        /// Only the known_hosts line (to append to ~/.ssh/known_hosts).
        #[arg(long)]
        known_hosts: bool,
    },
    /// Share a container's TCP port: on a host port from the
    /// administrator's range, or on its tailnet address only.
    Expose {
        name: String,
        port: u16,
        #[arg(long, value_enum, default_value = "host")]
        to: connect::ExposeTo,
        /// This host port (from the range) instead of a free one.
        #[arg(long, value_name = "PORT")]
        host_port: Option<u16>,
    },
    /// Stop sharing a container's port.
    Unexpose {
        name: String,
        port: u16,
        /// Which one, when the port is shared both ways.
        #[arg(long, value_enum)]
        to: Option<connect::ExposeTo>,
    },
    /// List the modules a container can be built from.
    Modules,
    /// The host's health: systemd, machined, what voxnix does not manage
    /// (root, or --as an owner listed in admin_owners).
    Health,
    /// Persistent workspaces: usage, what destroyed containers left.
    #[command(subcommand)]
    Storage(storage::StorageCommand),
    /// Snapshot a container's workspace now.
    Snapshot { name: String },
    /// List a container's workspace snapshots.
    Snapshots { name: String },
    /// Show or set a container's snapshot schedule: tiers such as
    /// hourly=24,daily=7,weekly=4,monthly=6, `off`, or `default` (yours,
    /// else the administrator's). With --all: the schedule of all your
    /// containers that have none of their own.
    Schedule {
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        schedule: Option<String>,
        /// For all your containers (TIERS, off or default; none: show it).
        #[arg(long, value_name = "TIERS", num_args = 0..=1, default_missing_value = "", conflicts_with_all = ["name", "schedule"])]
        all: Option<String>,
    },
    /// Restore a container's workspace from a snapshot (stops and restarts
    /// it), or with --path only one file or folder of it (the container
    /// keeps running, the rest stays as it is).
    Restore {
        name: String,
        id: String,
        /// Only this file or folder, relative to the workspace.
        #[arg(long)]
        path: Option<String>,
        /// Put it here instead (relative to the workspace; must not exist).
        #[arg(long, requires = "path")]
        to: Option<String>,
    },
    /// A container's checkpoints: its state before each change voxnix made
    /// (update, restore, a command confirmed for the assistant, undo) and
    /// after its create.
    History { name: String },
    /// Take a checkpoint of a container now (workspace and system).
    Checkpoint {
        name: String,
        /// Why, in a few words (shown in its history).
        #[arg(long)]
        why: Option<String>,
    },
    /// Put a container back to a checkpoint: modules and system switched
    /// back, workspace restored (asks first unless --yes). Without ID: to
    /// before the last change. The state before is kept as a checkpoint,
    /// so an undo can be undone.
    Undo {
        name: String,
        id: Option<u64>,
        #[arg(long)]
        yes: bool,
    },
    /// Run the voxnix daemon (as root, normally from systemd).
    Daemon {
        /// The configuration file.
        #[arg(long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Allow the sandbox's host-image builder (only inside a sandbox appliance).
        #[arg(long)]
        sandbox: bool,
    },
    /// A throwaway appliance (real systemd, machined, bridge, DHCP) to try voxnix in.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Chat with voxnix in the terminal, as your own user (commands, and the
    /// LLM agent when [llm] is configured); reads lines when not a terminal.
    Chat(crate::frontends::chat::terminal::ChatArgs),
    /// Run the Telegram bot (as the front-end group's user, from systemd).
    Telegram(crate::frontends::telegram::TelegramArgs),
    /// Make a stopped container's root safe for NixOS's start script (run
    /// by container@.service before each start; see src/host/container_root.rs).
    #[command(hide = true)]
    ContainerPreStart {
        /// The daemon's configuration (where its records and the conf files are).
        #[arg(long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// The container's root, e.g. /var/lib/nixos-containers/NAME.
        root: PathBuf,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Exit codes shared by all subcommands, so scripts can tell failures apart:
/// 0 ok, 1 other failure, 2 invalid input, 3 host problem, 4 not found,
/// 5 conflict, 6 access denied, 7 build failed, 8 quota exceeded, 9 busy,
/// 10 timeout, 11 daemon unreachable; `exec` exits with the command's status.
pub mod exit {
    /// Bad usage or invalid input.
    pub const USAGE: u8 = 2;
    /// The host cannot do what was asked (missing tools, not root ...).
    pub const HOST: u8 = 3;
    /// The daemon could not be reached.
    pub const UNREACHABLE: u8 = 11;
}

/// Logs go to standard error: the journal for the daemon and the bot (run by
/// systemd). For a person's commands and the chat, nothing unless asked
/// (`-v`, `VOXNIX_LOG`, `RUST_LOG`): what goes wrong is said in the
/// command's own words, never between a person's lines. Colour only on a
/// terminal.
fn init_tracing(service: bool, verbose: u8) {
    use std::io::IsTerminal;
    let default = match (service, verbose) {
        (true, 0) => "info",
        (false, 0) => "off",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOXNIX_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Subcommands whose first argument is a container name.
const NAME_FIRST: &[&str] = &[
    "create",
    "update",
    "start",
    "repair",
    "stop",
    "restart",
    "destroy",
    "status",
    "logs",
    "exec",
    "snapshot",
    "snapshots",
    "restore",
];

/// `voxnix create -a`: the argument parser sees an unknown option where a
/// name goes. Answered by the name rule, as every other name is, with the
/// way to pass such a name anyway (`--`).
fn name_taken_for_an_option(args: &[String], e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let at = args.iter().position(|a| NAME_FIRST.contains(&a.as_str()))?;
    if args.get(at + 1) != Some(arg) {
        return None;
    }
    // Only as the last word: `--bogus dev` or `-z dev` is a mistyped option
    // before a name, not a name.
    if args.len() > at + 2 {
        return None;
    }
    let why = crate::model::container_name::validate(arg).err()?;
    Some(format!(
        "voxnix: InvalidArgument: name: {why} (got {arg:?}; a name that starts with '-' is \
         read as an option: `voxnix {} -- NAME` passes it as a name)",
        args[at]
    ))
}

pub fn main() -> ExitCode {
    // The daemon's journal reader (src/host/journal_in_container.rs): it joins
    // a container's namespaces, which needs a process without threads, so it
    // runs before the argument parser, tracing and the async runtime.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // For the checks below only; clap gets the arguments as they are.
    let args: Vec<String> = raw
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.get(1).map(String::as_str) == Some(crate::host::journal_in_container::SUBCOMMAND) {
        return crate::host::journal_in_container::reader_main(&args[2..]);
    }
    let cli = match Cli::try_parse_from(&raw) {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(msg) = name_taken_for_an_option(&args, &e) {
                eprintln!("{msg}");
                return ExitCode::from(exit::USAGE);
            }
            e.exit()
        }
    };
    init_tracing(
        matches!(cli.command, Command::Daemon { .. } | Command::Telegram(_)),
        cli.global.verbose,
    );
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
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let g = &cli.global;
    match cli.command {
        Command::List => containers::list(g).await,
        Command::Create(a) => containers::create(g, a).await,
        Command::Update { name, modules } => containers::update(g, &name, &modules).await,
        Command::Start { name } => containers::simple(g, containers::Verb::Start, &name).await,
        Command::Stop { name } => containers::simple(g, containers::Verb::Stop, &name).await,
        Command::Restart { name } => containers::simple(g, containers::Verb::Restart, &name).await,
        Command::Repair { name } => containers::simple(g, containers::Verb::Repair, &name).await,
        Command::Destroy { name, yes, purge } => containers::destroy(g, &name, yes, purge).await,
        Command::Status { name } => containers::status(g, &name).await,
        Command::Logs { name, lines } => containers::logs(g, &name, lines).await,
        Command::Exec {
            name,
            timeout,
            command,
        } => containers::exec(g, &name, timeout, &command).await,
        Command::Keys(cmd) => connect::keys(g, cmd).await,
        Command::Connect {
            name,
            ssh_config,
            known_hosts,
        } => {
            let part = if ssh_config {
                connect::ConnectPart::SshConfig
            } else if known_hosts {
                connect::ConnectPart::KnownHosts
            } else {
                connect::ConnectPart::Both
            };
            connect::connect_cmd(g, &name, part).await
        }
        Command::Expose {
            name,
            port,
            to,
            host_port,
        } => connect::expose(g, &name, port, to, host_port).await,
        Command::Unexpose { name, port, to } => connect::unexpose(g, &name, port, to).await,
        Command::Modules => containers::modules(g).await,
        Command::Health => containers::health(g).await,
        Command::Storage(cmd) => storage::storage(g, cmd).await,
        Command::Snapshot { name } => storage::snapshot(g, &name).await,
        Command::Snapshots { name } => storage::snapshots(g, &name).await,
        Command::Schedule {
            name,
            schedule,
            all,
        } => match (all, name) {
            (Some(all), _) => storage::owner_schedule(g, &all).await,
            (None, Some(name)) => storage::schedule(g, &name, schedule.as_deref()).await,
            (None, None) => {
                eprintln!("voxnix: schedule needs a container's NAME, or --all");
                ExitCode::from(exit::USAGE)
            }
        },
        Command::Restore { name, id, path, to } => match path {
            Some(path) => storage::restore_path(g, &name, &id, &path, to.as_deref()).await,
            None => storage::restore(g, &name, &id).await,
        },
        Command::History { name } => history::history(g, &name).await,
        Command::Checkpoint { name, why } => history::checkpoint(g, &name, why.as_deref()).await,
        Command::Undo { name, id, yes } => history::undo(g, &name, id, yes).await,
        Command::Daemon { config, sandbox } => {
            let opts = crate::daemon::DaemonOptions {
                config,
                sandbox,
                bus_address: g.bus.clone(),
            };
            match crate::daemon::run(opts).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("voxnix daemon: {e}");
                    ExitCode::from(exit::HOST)
                }
            }
        }
        Command::Sandbox(cmd) => sandbox::run(cmd).await,
        Command::Chat(a) => crate::frontends::chat::terminal::run(g.bus.clone(), a).await,
        Command::Telegram(a) => crate::frontends::telegram::run(g.bus.clone(), a).await,
        Command::ContainerPreStart { config, root } => {
            // A container of voxnix's starts only with voxnix's conf. The
            // configuration is read without its access file (only where
            // records and confs are matters); one that cannot be read at all
            // falls back to the default places rather than skip the check.
            let cfg = crate::config::Config::load_alone(&config).unwrap_or_else(|e| {
                eprintln!("voxnix: {e}; checking the conf against the default places");
                crate::config::Config::default()
            });
            if let Some(name) = root.file_name().and_then(|n| n.to_str())
                && let Err(why) = crate::host::container_root::check_conf(
                    &cfg.state_dir.join("containers"),
                    &cfg.conf_dir.join(format!("{name}.conf")),
                    name,
                )
            {
                eprintln!("voxnix: refusing to start {name}: {why}");
                return ExitCode::from(exit::HOST);
            }
            pre_start(&root)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "voxnix", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// The root made safe for NixOS's start script (see host/container_root.rs).
fn pre_start(root: &std::path::Path) -> ExitCode {
    match crate::host::container_root::prepare(root) {
        Ok(repairs) => {
            for path in repairs {
                // To the unit's journal: what a container had put there.
                eprintln!(
                    "voxnix: removed {} before the start (not a plain directory or file)",
                    path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("voxnix: refusing to start: {}: {e}", root.display());
            ExitCode::from(exit::HOST)
        }
    }
}
