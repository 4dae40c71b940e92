//! The sandbox appliance: a real systemd booted as PID 1 in private PID, mount,
//! network, UTS, IPC and cgroup namespaces, on an in-memory overlay of this
//! machine's root, with machined, a container bridge `br-vox` with DHCP, and a
//! stand-in for NixOS's `container@.service`.
//!
//! It is how people try voxnix without a NixOS host and how every integration
//! test runs: the daemon inside talks to the appliance's real systemd1 and
//! machine1, exactly as it would on NixOS.
//!
//! Teardown on every path:
//! - normal end or `Drop` (including a test panic): poweroff, wait, kill the
//!   cgroup, remove the cgroup and the state directory;
//! - the launcher killed with SIGKILL: `unshare` dies by PDEATHSIG, its
//!   `--kill-child` kills the appliance's PID 1, the kernel kills the rest of the
//!   PID namespace and drops the mount namespace (the overlay and its tmpfs upper
//!   layer live only there); the state directory and cgroup left behind are
//!   removed by the next boot ([`statedir::reap_stale`]).

mod cgroup;
pub mod daemon;
mod preflight;
mod seed;
mod statedir;

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use thiserror::Error;

pub use seed::ExtraFile;

/// Why a sandbox could not be booted or used.
#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("the sandbox needs root (it creates namespaces, mounts and cgroups); run it with sudo")]
    NotRoot,
    #[error("missing on this machine: {0}")]
    MissingTools(String),
    #[error("namespaces unavailable: {0}")]
    NoNamespaces(String),
    #[error("cgroup setup failed: {0}")]
    Cgroup(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the appliance did not reach 'running' within {timeout:?} (state: {state})\n--- failed units ---\n{failed}\n--- journal tail ---\n{journal}"
    )]
    BootTimeout {
        timeout: Duration,
        state: String,
        failed: String,
        journal: String,
    },
    #[error(
        "the appliance booted 'degraded'\n--- failed units ---\n{failed}\n--- journal tail ---\n{journal}"
    )]
    Degraded { failed: String, journal: String },
    #[error("the appliance's launcher exited early ({status}); console output:\n{console}")]
    LauncherDied { status: String, console: String },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

/// How to boot an appliance.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Host name of the appliance (also the `container=` value systemd sees).
    pub hostname: String,
    /// How long to wait for `running`.
    pub boot_timeout: Duration,
    /// Copy the appliance's journal and console here before power-off.
    pub keep_logs: Option<PathBuf>,
    /// Files to place in the appliance's root before boot (units, config ...).
    pub extra_files: Vec<ExtraFile>,
    /// Units to enable (wanted by multi-user.target) before boot.
    pub enable_units: Vec<String>,
    /// Host files to bind-mount read-only into the appliance: (host path, path inside).
    pub bind_files: Vec<(PathBuf, String)>,
    /// Units that must be active before the appliance counts as booted.
    pub require_active: Vec<String>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            hostname: "voxnix-sandbox".into(),
            boot_timeout: Duration::from_secs(90),
            keep_logs: None,
            extra_files: Vec::new(),
            enable_units: Vec::new(),
            bind_files: Vec::new(),
            require_active: Vec::new(),
        }
    }
}

/// A running appliance. Dropping it powers it off and removes every trace.
#[derive(Debug)]
pub struct Sandbox {
    id: String,
    state_dir: PathBuf,
    cgroup: PathBuf,
    launcher: Option<Child>,
    init_pid: i32,
    keep_logs: Option<PathBuf>,
}

impl Sandbox {
    /// Boots an appliance with default options.
    pub async fn boot() -> Result<Self, SandboxError> {
        Self::boot_with(SandboxOptions::default()).await
    }

    /// Boots an appliance and waits until its systemd reports `running`.
    pub async fn boot_with(opts: SandboxOptions) -> Result<Self, SandboxError> {
        preflight::check()?;
        let root = statedir::root();
        statedir::reap_stale(&root);
        let (id, state_dir) = statedir::create(&root)?;
        // From here on, a failure must undo what was made: build a half-made
        // Sandbox whose Drop knows how.
        let mut sandbox = Sandbox {
            id: id.clone(),
            state_dir: state_dir.clone(),
            cgroup: PathBuf::new(),
            launcher: None,
            init_pid: 0,
            keep_logs: opts.keep_logs.clone(),
        };
        sandbox.cgroup = cgroup::create(&id)?;
        statedir::record_cgroup(&state_dir, &sandbox.cgroup)?;
        seed::write(&state_dir.join("seed"), &opts)?;
        seed::write_binds(&state_dir.join("binds"), &opts)?;
        let init = state_dir.join("init.sh");
        std::fs::write(&init, include_str!("assets/init.sh")).map_err(io_err("writing init.sh"))?;
        std::fs::create_dir_all(state_dir.join("mnt")).map_err(io_err("creating mnt"))?;

        let console =
            File::create(state_dir.join("console.log")).map_err(io_err("creating console.log"))?;
        let console_err = console
            .try_clone()
            .map_err(io_err("duplicating console.log"))?;
        let procs = File::options()
            .write(true)
            .open(sandbox.cgroup.join("cgroup.procs"))
            .map_err(io_err("opening the sandbox cgroup"))?;

        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--mount",
            "--net",
            "--uts",
            "--ipc",
            "--cgroup",
            "--kill-child",
            "--",
            "/bin/sh",
        ])
        .arg(&init)
        .arg(&state_dir)
        .arg(&opts.hostname)
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err)
        // Its own process group: a Ctrl-C at the terminal goes to the command
        // run inside, and the launcher then powers the appliance off in order.
        .process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, write) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // Join the sandbox cgroup before unshare creates the cgroup
                // namespace, so the namespace is rooted there.
                nix::unistd::write(procs.as_fd(), b"0")?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_err("starting unshare"))?;
        let launcher_pid = child.id() as i32;
        sandbox.launcher = Some(child);
        sandbox.init_pid = sandbox.wait_for_init(launcher_pid).await?;
        statedir::record_init(&state_dir, sandbox.init_pid)?;
        sandbox.wait_running(opts.boot_timeout).await?;
        sandbox
            .wait_active(&opts.require_active, opts.boot_timeout)
            .await?;
        tracing::info!(id = %sandbox.id, pid = sandbox.init_pid, "sandbox appliance running");
        Ok(sandbox)
    }

    /// Finds the appliance's PID 1 (the launcher's only child) by its host PID.
    async fn wait_for_init(&mut self, launcher_pid: i32) -> Result<i32, SandboxError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = statedir::child_of(launcher_pid) {
                return Ok(pid);
            }
            self.check_launcher()?;
            if Instant::now() > deadline {
                return Err(SandboxError::LauncherDied {
                    status: "no init process after 10 s".into(),
                    console: self.console_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn check_launcher(&mut self) -> Result<(), SandboxError> {
        if let Some(child) = self.launcher.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.launcher = None;
            return Err(SandboxError::LauncherDied {
                status: status.to_string(),
                console: self.console_tail(),
            });
        }
        Ok(())
    }

    async fn wait_running(&mut self, timeout: Duration) -> Result<(), SandboxError> {
        let deadline = Instant::now() + timeout;
        let mut state = String::from("(bus not up yet)");
        let mut conn: Option<zbus::Connection> = None;
        loop {
            self.check_launcher()?;
            if conn.is_none() && Path::new(&self.bus_socket()).exists() {
                conn = self.system_bus().await.ok();
            }
            if let Some(c) = &conn
                && let Ok(mgr) = zbus_systemd::systemd1::ManagerProxy::new(c).await
                && let Ok(s) = mgr.system_state().await
            {
                state = s;
            }
            match state.as_str() {
                "running" => return Ok(()),
                "degraded" => {
                    return Err(SandboxError::Degraded {
                        failed: self.failed_units(),
                        journal: self.journal_tail(40),
                    });
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(SandboxError::BootTimeout {
                    timeout,
                    state,
                    failed: self.failed_units(),
                    journal: self.journal_tail(40),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every unit in `units` is active. A unit that keeps failing
    /// (e.g. restarting in a loop) is an error with its journal.
    async fn wait_active(
        &mut self,
        units: &[String],
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        if units.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let bus = self.system_bus().await.map_err(|e| SandboxError::Io {
            context: "connecting to the appliance's bus".into(),
            source: std::io::Error::other(e),
        })?;
        let systemd = zbus_systemd::systemd1::ManagerProxy::new(&bus)
            .await
            .map_err(|e| SandboxError::Io {
                context: "systemd proxy".into(),
                source: std::io::Error::other(e),
            })?;
        for unit in units {
            loop {
                let state = match systemd.load_unit(unit.clone()).await {
                    Ok(path) => {
                        let proxy = zbus_systemd::systemd1::UnitProxy::builder(&bus)
                            .path(path)
                            .cache_properties(zbus::proxy::CacheProperties::No)
                            .build()
                            .await;
                        match proxy {
                            Ok(u) => u.active_state().await.unwrap_or_default(),
                            Err(_) => String::new(),
                        }
                    }
                    Err(_) => String::new(),
                };
                if state == "active" {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(SandboxError::BootTimeout {
                        timeout,
                        state: format!("{unit} is {state}"),
                        failed: self.failed_units(),
                        journal: self.exec_sync(&[
                            "journalctl",
                            "--no-pager",
                            "-n",
                            "40",
                            "-u",
                            unit,
                        ]),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The sandbox's identifier (unique among running sandboxes).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host PID of the appliance's systemd.
    pub fn init_pid(&self) -> i32 {
        self.init_pid
    }

    /// The appliance's root file system, seen from the host.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.init_pid))
    }

    fn bus_socket(&self) -> String {
        format!("/proc/{}/root/run/dbus/system_bus_socket", self.init_pid)
    }

    /// D-Bus address of the appliance's system bus, reachable from the host.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.bus_socket())
    }

    /// A connection to the appliance's system bus.
    pub async fn system_bus(&self) -> zbus::Result<zbus::Connection> {
        zbus::connection::Builder::address(self.bus_address().as_str())
            .build()
            .await
    }

    /// A command that runs inside the appliance (all its namespaces, its root).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("/usr/bin/nsenter");
        cmd.arg(format!("--target={}", self.init_pid))
            .args(["--all", "--root", "--wd", "--"])
            .arg(program)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        cmd
    }

    /// Runs a command inside and collects its output.
    pub async fn exec<I, S>(&self, argv: I) -> Result<std::process::Output, SandboxError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut argv = argv.into_iter();
        let Some(program) = argv.next() else {
            return Err(SandboxError::Io {
                context: "exec".into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"),
            });
        };
        let mut cmd = tokio::process::Command::from(self.command(program));
        cmd.args(argv).stdin(Stdio::null());
        cmd.output().await.map_err(io_err("running nsenter"))
    }

    fn exec_sync(&self, argv: &[&str]) -> String {
        let Some((program, rest)) = argv.split_first() else {
            return String::new();
        };
        match self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => {
                let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&out.stderr));
                s
            }
            Err(e) => format!("(could not run {program}: {e})"),
        }
    }

    /// Runs on the failure path of a boot only, so blocking briefly is fine.
    fn failed_units(&self) -> String {
        let out = self.exec_sync(&["systemctl", "--failed", "--no-pager", "--no-legend"]);
        if out.trim().is_empty() {
            "(none)".into()
        } else {
            out
        }
    }

    fn journal_tail(&self, lines: u32) -> String {
        self.exec_sync(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-monotonic",
            "-n",
            &lines.to_string(),
        ])
    }

    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.state_dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Powers the appliance off and removes everything it left.
    pub fn shutdown(mut self) -> Result<(), SandboxError> {
        self.teardown()
    }

    fn save_logs(&self, dir: &Path) -> Result<(), SandboxError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let journal = self.exec_sync(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-iso-precise",
            "--merge",
        ]);
        std::fs::write(dir.join("journal.txt"), journal).map_err(io_err("writing journal.txt"))?;
        let _ = std::fs::copy(self.state_dir.join("console.log"), dir.join("console.log"));
        Ok(())
    }

    fn teardown(&mut self) -> Result<(), SandboxError> {
        let mut result = Ok(());
        if let Some(dir) = self.keep_logs.take()
            && self.launcher.is_some()
        {
            result = self.save_logs(&dir);
        }
        if let Some(mut child) = self.launcher.take() {
            // SIGRTMIN+4 asks a container's systemd for an orderly poweroff.
            // SAFETY: kill(2) on the PID 1 of the namespace we created.
            unsafe { nix::libc::kill(self.init_pid, nix::libc::SIGRTMIN() + 4) };
            if wait_timeout(&mut child, Duration::from_secs(20)).is_none() {
                tracing::warn!(id = %self.id, "appliance ignored poweroff; killing it");
                let _ = kill(Pid::from_raw(self.init_pid), Signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !self.cgroup.as_os_str().is_empty()
            && let Err(e) = cgroup::destroy(&self.cgroup)
        {
            result = result.and(Err(SandboxError::Cgroup(format!(
                "cannot remove {}: {e}",
                self.cgroup.display()
            ))));
        }
        if let Err(e) = std::fs::remove_dir_all(&self.state_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            result = result.and(Err(SandboxError::Io {
                context: format!("removing {}", self.state_dir.display()),
                source: e,
            }));
        }
        result
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(id = %self.id, "sandbox teardown: {e}");
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}
