//! Run a command inside a running container, without a subprocess on the host
//! (no `machinectl`, `systemd-run` or `nsenter`).
//!
//! How: the container runs its own systemd and D-Bus. We connect to its system
//! bus socket, `/run/dbus/system_bus_socket`, from inside the container's user
//! and mount namespaces ([`super::ns_socket`], as systemd's `machine:`
//! transport does), so the path, and any symlink the container put on it,
//! resolves inside the container and never against the host's root; and we
//! connect as the container's root. Over that socket we ask the
//! container's systemd for a transient service `voxnix-exec-<random>.service`
//! (`StartTransientUnit`), exactly what `systemd-run --machine --wait --pipe`
//! does, with:
//! - `ExecStartEx` = the argv with the `no-env-expand` flag, so that `$VAR` in an
//!   argument reaches the command verbatim (systemd < 243 has no `ExecStartEx`:
//!   then `ExecStart` with every `$` doubled); `Type=exec`;
//! - `StandardOutputFileDescriptor` / `StandardErrorFileDescriptor` = the write
//!   ends of two pipes whose read ends we drain concurrently, each bounded to
//!   [`ExecRequest::max_output`] bytes (the rest is read and dropped, and flagged);
//!   stdin is systemd's default for services, `/dev/null`;
//! - `AddRef=true` (the unit stays loaded until we drop our reference, so its
//!   `ExecMainCode`/`ExecMainStatus` can be read after it exited) and
//!   `CollectMode=inactive-or-failed` (then it is garbage-collected even when it
//!   failed, leaving nothing behind);
//! - `RuntimeMaxUSec` = timeout + 5 s: should this process die mid-exec, the
//!   container's systemd still kills the command.
//!
//! We then wait for the start job (`JobRemoved`) and for the unit to become
//! `inactive` or `failed` (`PropertiesChanged` on the unit, with a 100 ms polling
//! fallback), read the exit status, and drop our reference. On timeout the unit
//! is killed with `KillUnit(name, "all", SIGKILL)` (its whole cgroup) and
//! [`ExecError::Timeout`] is returned. If the future is dropped before the end,
//! a background task kills the unit as well.
//!
//! Command lookup, before anything is started: an absolute `argv[0]` must be an
//! executable file in the container; a bare name is looked up in
//! [`SEARCH_PATH`], which puts NixOS's directories before the FHS ones that
//! systemd itself would search (systemd's built-in search path has no
//! `/run/current-system/sw/bin`). Paths are resolved with
//! `openat2(RESOLVE_IN_ROOT)` against the container's root, so absolute
//! symlinks such as NixOS's `/run/current-system/sw/bin/*` resolve inside the
//! container, not on the host. The path found (inside the container) is what
//! systemd executes; a command found nowhere is [`ExecError::CommandNotFound`];
//! a relative path with a `/` is rejected. The command runs as root, in `/`,
//! with the environment systemd gives services and `PATH` set to
//! [`SEARCH_PATH`], so what it runs in turn (a shell's commands) is found
//! the same way.
//!
//! Containers with and without a user namespace of their own work alike (the
//! connecting child joins the user namespace only when it differs).

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use thiserror::Error;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedVariant, Variant};
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

/// Directories searched (inside the container) for an `argv[0]` without `/`:
/// NixOS's first, then the FHS ones systemd itself searches.
pub const SEARCH_PATH: &[&str] = &[
    "/run/wrappers/bin",
    "/run/current-system/sw/bin",
    "/nix/var/nix/profiles/default/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The longest command line (sum of argument bytes) accepted.
const MAX_ARGV_BYTES: usize = 128 * 1024;
/// How long D-Bus calls to the container may take before we give up on them.
const METHOD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long we wait for a killed unit to go down before returning anyway.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// Fallback polling interval for the unit's state.
const POLL: Duration = Duration::from_millis(100);
/// `RuntimeMaxSec` margin over the caller's timeout.
const RUNTIME_MAX_MARGIN: Duration = Duration::from_secs(5);

const SYSTEMD: &str = "org.freedesktop.systemd1";

/// What to run in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The command and its arguments; `argv[0]` is an absolute path or a name
    /// looked up in [`SEARCH_PATH`] inside the container.
    pub argv: Vec<String>,
    /// Wall-clock limit, from the call to the command's exit.
    pub timeout: Duration,
    /// Bytes kept per stream; the excess is read, dropped and flagged.
    pub max_output: usize,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResult {
    /// The exit status, or 128 + the signal number if it was killed.
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// More than `max_output` bytes were written to stdout.
    pub stdout_truncated: bool,
    /// More than `max_output` bytes were written to stderr.
    pub stderr_truncated: bool,
}

/// Why a command could not be run (a command that ran and failed is an
/// [`ExecResult`] with a non-zero `exit_code`, not an error).
#[derive(Debug, Error)]
pub enum ExecError {
    /// The container (or its D-Bus) is not running.
    #[error("the container is not running: {0}")]
    NotRunning(String),
    /// The command did not finish in time; it was killed.
    #[error("the command did not finish within {0:?} and was killed")]
    Timeout(Duration),
    /// A D-Bus call to the container's systemd failed.
    #[error("D-Bus call {call} to the container failed: {source}")]
    Bus {
        call: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The request itself is invalid (empty argv, NUL bytes, relative path ...).
    #[error("invalid exec request: {0}")]
    InvalidArgument(String),
    /// `argv[0]` was found in none of the [`SEARCH_PATH`] directories.
    #[error("command not found in the container: {0}")]
    CommandNotFound(String),
    /// systemd could not start the command (e.g. `execve` failed).
    #[error("the container's systemd could not start {command}: {detail}")]
    SpawnFailed { command: String, detail: String },
}

impl ExecError {
    fn bus(call: &'static str) -> impl FnOnce(zbus::Error) -> ExecError {
        move |source| ExecError::Bus { call, source }
    }

    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
        let context = context.into();
        move |source| ExecError::Io { context, source }
    }
}

/// The container's root directory as the caller sees it.
pub fn container_root(proc_root: &Path, leader: u32) -> PathBuf {
    proc_root.join(leader.to_string()).join("root")
}

/// The path of the container's system bus socket as the caller sees it.
pub fn container_bus_socket(proc_root: &Path, leader: u32) -> PathBuf {
    container_root(proc_root, leader).join("run/dbus/system_bus_socket")
}

/// The container's root directory, opened, after checking that `leader` really
/// is in a container: a root that is the same directory as PID 1's (in the same
/// `proc_root`) means the PID is not a container's (e.g. a leader PID that was
/// reused after the container stopped), and exec there would run on the host.
fn open_container_root(proc_root: &Path, leader: u32) -> Result<File, ExecError> {
    if leader <= 1 {
        return Err(ExecError::InvalidArgument(format!(
            "{leader} is not a container leader PID"
        )));
    }
    let root = container_root(proc_root, leader);
    let dir = File::open(&root).map_err(|e| {
        if is_gone(&e) {
            ExecError::NotRunning(format!("no process {leader} ({e})"))
        } else {
            ExecError::io(format!("opening {}", root.display()))(e)
        }
    })?;
    let ours = dir
        .metadata()
        .map_err(ExecError::io(format!("stat {}", root.display())))?;
    let init_root = proc_root.join("1/root");
    let init = std::fs::metadata(&init_root)
        .map_err(ExecError::io(format!("stat {}", init_root.display())))?;
    if (ours.dev(), ours.ino()) == (init.dev(), init.ino()) {
        return Err(ExecError::NotRunning(format!(
            "process {leader} is not in a container (it shares the host's root)"
        )));
    }
    Ok(dir)
}

/// Connects to the container's own system bus.
///
/// `proc_root` is the `/proc` in which `leader` (machined's `Leader`) is valid:
/// `/proc` for the daemon, `<sandbox root>/proc` in tests.
pub async fn container_bus(proc_root: &Path, leader: u32) -> Result<Connection, ExecError> {
    open_container_root(proc_root, leader)?;
    bus_inside(proc_root, leader).await
}

/// The container's system bus, connected from inside its namespaces.
pub const CONTAINER_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// Connects to the container's [`CONTAINER_BUS_SOCKET`] from inside it.
async fn bus_inside(proc_root: &Path, leader: u32) -> Result<Connection, ExecError> {
    let proc_root = proc_root.to_path_buf();
    let stream = tokio::task::spawn_blocking(move || {
        super::ns_socket::connect_in_container(&proc_root, leader, CONTAINER_BUS_SOCKET).map_err(
            |e| {
                if is_gone(&e) {
                    ExecError::NotRunning(format!("the container's bus is not up: {e}"))
                } else {
                    ExecError::io("connecting to the container's bus")(e)
                }
            },
        )
    })
    .await
    .map_err(|e| ExecError::Io {
        context: "connecting to the container's bus".into(),
        source: std::io::Error::other(e),
    })??;
    zbus::connection::Builder::unix_stream(stream)
        .method_timeout(METHOD_TIMEOUT)
        .build()
        .await
        .map_err(|e| match e {
            zbus::Error::InputOutput(ref io) if is_gone(io) => {
                ExecError::NotRunning(format!("the container's bus went away: {e}"))
            }
            e => ExecError::Bus {
                call: "Hello",
                source: e,
            },
        })
}

fn is_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        NotFound | ConnectionRefused | ConnectionReset | BrokenPipe | UnexpectedEof
    ) || e.raw_os_error() == Some(nix::libc::ESRCH)
}

/// Runs `req.argv` in the container whose leader is `leader` (see
/// [`container_bus`] for `proc_root`) and collects its exit status and output.
pub async fn exec_in_container(
    proc_root: &Path,
    leader: u32,
    req: &ExecRequest,
) -> Result<ExecResult, ExecError> {
    let deadline = Instant::now() + req.timeout;
    validate(req)?;
    let root = open_container_root(proc_root, leader)?;
    let path = resolve_command(&root, &req.argv[0])?;
    drop(root);
    let conn = match tokio::time::timeout_at(deadline.into(), bus_inside(proc_root, leader)).await {
        Ok(conn) => conn?,
        Err(_) => return Err(ExecError::Timeout(req.timeout)),
    };
    let started = Instant::now();
    let result = run_unit(&conn, &path, req, deadline).await;
    tracing::debug!(
        argv0 = %req.argv[0],
        elapsed_ms = started.elapsed().as_millis() as u64,
        ok = result.is_ok(),
        "exec in container"
    );
    result
}

fn validate(req: &ExecRequest) -> Result<(), ExecError> {
    let Some(argv0) = req.argv.first() else {
        return Err(ExecError::InvalidArgument("argv is empty".into()));
    };
    if argv0.is_empty() {
        return Err(ExecError::InvalidArgument("argv[0] is empty".into()));
    }
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err(ExecError::InvalidArgument(
            "arguments must not contain NUL bytes".into(),
        ));
    }
    let total: usize = req.argv.iter().map(|a| a.len() + 1).sum();
    if total > MAX_ARGV_BYTES {
        return Err(ExecError::InvalidArgument(format!(
            "the command line is {total} bytes, more than {MAX_ARGV_BYTES}"
        )));
    }
    if argv0.contains('/') && !argv0.starts_with('/') {
        return Err(ExecError::InvalidArgument(format!(
            "{argv0}: a path must be absolute"
        )));
    }
    if req.timeout.is_zero() {
        return Err(ExecError::InvalidArgument("the timeout is zero".into()));
    }
    Ok(())
}

/// The path (inside the container) systemd is to execute for `argv0`,
/// checked to be an executable file there.
fn resolve_command(root_fd: &File, argv0: &str) -> Result<String, ExecError> {
    let candidates: Vec<String> = if argv0.starts_with('/') {
        vec![argv0.to_string()]
    } else {
        SEARCH_PATH.iter().map(|d| format!("{d}/{argv0}")).collect()
    };
    for candidate in candidates {
        match is_executable_in(root_fd, &candidate) {
            Ok(true) => return Ok(candidate),
            Ok(false) => {}
            // openat2 is missing (kernel < 5.6): let the container's systemd
            // find it (in its default PATH for a bare name) or fail.
            Err(nix::errno::Errno::ENOSYS) => return Ok(argv0.to_string()),
            Err(_) => {}
        }
    }
    Err(ExecError::CommandNotFound(argv0.to_string()))
}

fn is_executable_in(root: &File, path: &str) -> Result<bool, nix::errno::Errno> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use nix::sys::stat::{SFlag, fstat};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(root, path.trim_start_matches('/'), how)?;
    let st = fstat(&fd)?;
    let is_file = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    Ok(is_file && st.st_mode & 0o111 != 0)
}

/// A name no other exec (in this or another voxnix process) uses.
fn unit_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("voxnix-exec-{:016x}.service", h.finish())
}

/// systemd's object path for a unit (`bus_label_escape`).
fn unit_object_path(name: &str) -> String {
    let mut out = String::from("/org/freedesktop/systemd1/unit/");
    if name.is_empty() {
        out.push('_');
    }
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

fn variant<T>(v: T) -> Result<OwnedVariant, ExecError>
where
    T: Into<Variant<'static>> + zbus::wire::DynamicType,
{
    OwnedVariant::try_from(Variant::new(v)).map_err(ExecError::bus("building properties"))
}

fn make_pipe() -> Result<(pipe::Receiver, OwnedFd), ExecError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ExecError::io("creating a pipe")(e.into()))?;
    // Non-blocking is set on the read end's open file description only; the
    // command gets a normal blocking write end.
    let r = pipe::Receiver::from_owned_fd(r).map_err(ExecError::io("registering a pipe"))?;
    Ok((r, w))
}

/// The transient service's properties. With `ex`, the command goes in
/// `ExecStartEx` with the `no-env-expand` flag (systemd >= 243); without, in
/// `ExecStart` with every `$` doubled, so that systemd's `$VAR` expansion
/// gives back the arguments unchanged.
fn unit_properties(
    path: &str,
    req: &ExecRequest,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    ex: bool,
) -> Result<Vec<(String, OwnedVariant)>, ExecError> {
    let description = {
        let joined = req.argv.join(" ");
        let mut d: String = joined.chars().take(200).collect();
        if d.len() < joined.len() {
            d.push('…');
        }
        format!("voxnix exec: {d}")
    };
    let dup = |fd: &OwnedFd| -> Result<OwnedVariant, ExecError> {
        let fd = fd
            .try_clone()
            .map_err(ExecError::io("duplicating a pipe"))?;
        variant(zbus::Fd::from(fd))
    };
    let exec = if ex {
        (
            "ExecStartEx",
            variant(vec![(
                path.to_string(),
                req.argv.clone(),
                vec!["no-env-expand".to_string()],
            )])?,
        )
    } else {
        let argv: Vec<String> = req.argv.iter().map(|a| a.replace('$', "$$")).collect();
        ("ExecStart", variant(vec![(path.to_string(), argv, false)])?)
    };
    let runtime_max = req.timeout.saturating_add(RUNTIME_MAX_MARGIN);
    Ok(vec![
        ("Description".into(), variant(description)?),
        ("Type".into(), variant("exec")?),
        // The command's own lookups (a shell's `cat`) search what argv[0]
        // was searched in: systemd's built-in PATH has no NixOS directory
        // (nixpkgs sets it to systemd's own bin alone).
        (
            "Environment".into(),
            variant(vec![format!("PATH={}", SEARCH_PATH.join(":"))])?,
        ),
        (exec.0.into(), exec.1),
        ("StandardOutputFileDescriptor".into(), dup(stdout)?),
        ("StandardErrorFileDescriptor".into(), dup(stderr)?),
        ("AddRef".into(), variant(true)?),
        ("CollectMode".into(), variant("inactive-or-failed")?),
        (
            "RuntimeMaxUSec".into(),
            variant(u64::try_from(runtime_max.as_micros()).unwrap_or(u64::MAX))?,
        ),
    ])
}

/// Kills the unit if the exec future is dropped before it finished.
struct UnitGuard {
    conn: Connection,
    name: String,
    armed: bool,
}

impl Drop for UnitGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let conn = self.conn.clone();
        let name = std::mem::take(&mut self.name);
        handle.spawn(async move {
            if let Ok(mgr) = ManagerProxy::new(&conn).await {
                let _ = mgr.kill_unit(name.clone(), "all".into(), 9).await;
                let _ = mgr.unref_unit(name).await;
            }
        });
    }
}

async fn run_unit(
    conn: &Connection,
    path: &str,
    req: &ExecRequest,
    deadline: Instant,
) -> Result<ExecResult, ExecError> {
    let name = unit_name();
    let object = unit_object_path(&name);
    let mgr = ManagerProxy::new(conn)
        .await
        .map_err(ExecError::bus("systemd1.Manager"))?;
    let unit = UnitProxy::builder(conn)
        .destination(SYSTEMD)
        .path(object.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(ExecError::bus("systemd1.Unit"))?;
    let service = ServiceProxy::builder(conn)
        .destination(SYSTEMD)
        .path(object.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(ExecError::bus("systemd1.Service"))?;
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(SYSTEMD)
        .path(object)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(ExecError::bus("Properties"))?;

    // Subscribe and set up the signal streams before starting, so that nothing
    // is missed however fast the command is.
    mgr.subscribe().await.map_err(ExecError::bus("Subscribe"))?;
    let mut jobs = mgr
        .receive_job_removed()
        .await
        .map_err(ExecError::bus("JobRemoved match"))?;
    let mut changes = props
        .receive_properties_changed()
        .await
        .map_err(ExecError::bus("PropertiesChanged match"))?;

    let (out_rx, out_w) = make_pipe()?;
    let (err_rx, err_w) = make_pipe()?;

    // From here on the unit may exist: make sure it does not outlive us.
    let mut guard = UnitGuard {
        conn: conn.clone(),
        name: name.clone(),
        armed: true,
    };
    let start = async {
        let props = unit_properties(path, req, &out_w, &err_w, true)?;
        match mgr
            .start_transient_unit(name.clone(), "fail".into(), props, Vec::new())
            .await
        {
            Err(zbus::Error::MethodError(ref err, ref msg, _))
                if msg.as_deref().is_some_and(|m| m.contains("ExecStartEx"))
                    || err.as_str() == "org.freedesktop.DBus.Error.PropertyReadOnly" =>
            {
                // systemd < 243: no ExecStartEx; escape `$` for ExecStart.
                let props = unit_properties(path, req, &out_w, &err_w, false)?;
                mgr.start_transient_unit(name.clone(), "fail".into(), props, Vec::new())
                    .await
                    .map_err(ExecError::bus("StartTransientUnit"))
            }
            other => other.map_err(ExecError::bus("StartTransientUnit")),
        }
    };
    let job = match tokio::time::timeout_at(deadline.into(), start).await {
        Ok(job) => job?,
        Err(_) => {
            kill_and_release(&mgr, &unit, &service, &name).await;
            guard.armed = false;
            return Err(ExecError::Timeout(req.timeout));
        }
    };
    // systemd holds its own copies of the write ends now; ours must go, or
    // the pipes would never see EOF.
    drop(out_w);
    drop(err_w);

    let (stop_out, stop_out_rx) = oneshot::channel();
    let (stop_err, stop_err_rx) = oneshot::channel();
    let max = req.max_output;
    let waiter = async {
        let mut job_result: Option<String> = None;
        let (mut jobs_open, mut changes_open) = (true, true);
        let outcome = loop {
            if job_result.is_some() {
                match tokio::time::timeout_at(deadline.into(), unit.active_state()).await {
                    Ok(Ok(s)) if s == "inactive" || s == "failed" => break Ok(()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break Err(ExecError::bus("ActiveState")(e)),
                    Err(_) => break Err(ExecError::Timeout(req.timeout)),
                }
            }
            tokio::select! {
                sig = jobs.next(), if jobs_open => match sig {
                    Some(sig) => {
                        if let Ok(args) = sig.args()
                            && (args.job == job || args.unit == name)
                        {
                            job_result = Some(args.result.clone());
                        }
                    }
                    None => jobs_open = false,
                },
                change = changes.next(), if changes_open => {
                    if change.is_none() {
                        changes_open = false;
                    }
                }
                _ = tokio::time::sleep(POLL) => {
                    // Fallback for a missed JobRemoved: no job pending any more.
                    if job_result.is_none()
                        && let Ok((0, _)) = unit.job().await
                    {
                        job_result = Some("done".into());
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    break Err(ExecError::Timeout(req.timeout));
                }
            }
        };
        let _ = stop_out.send(());
        let _ = stop_err.send(());
        (outcome, job_result)
    };
    let ((outcome, job_result), (stdout, stdout_truncated), (stderr, stderr_truncated)) = tokio::join!(
        waiter,
        read_bounded(out_rx, max, stop_out_rx),
        read_bounded(err_rx, max, stop_err_rx),
    );

    if let Err(e) = outcome {
        kill_and_release(&mgr, &unit, &service, &name).await;
        guard.armed = false;
        return Err(e);
    }
    let code = service.exec_main_code().await;
    let status = service.exec_main_status().await;
    let result = service.result().await.unwrap_or_default();
    release(&mgr, &unit, &name).await;
    guard.armed = false;
    let (code, status) = (
        code.map_err(ExecError::bus("ExecMainCode"))?,
        status.map_err(ExecError::bus("ExecMainStatus"))?,
    );
    if result == "timeout" {
        // RuntimeMaxSec fired (our own deadline should have come first).
        return Err(ExecError::Timeout(req.timeout));
    }
    // A start job that did not end 'done' is not proof of a failed spawn: a
    // command that exits at once can beat the job. A spawn failure is a
    // job failure with one of systemd's own exit statuses (200-243, e.g. 203
    // EXIT_EXEC) or with no process at all.
    let spawn_failed = job_result.as_deref() != Some("done")
        && (code != CLD_EXITED && code != CLD_KILLED && code != CLD_DUMPED
            || code == CLD_EXITED && (200..=243).contains(&status));
    if spawn_failed {
        return Err(ExecError::SpawnFailed {
            command: req.argv[0].clone(),
            detail: format!(
                "start job '{}', result '{result}', {}",
                job_result.unwrap_or_default(),
                describe_status(code, status)
            ),
        });
    }
    Ok(ExecResult {
        exit_code: exit_code(code, status),
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
    })
}

const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

fn exit_code(code: i32, status: i32) -> i32 {
    match code {
        CLD_KILLED | CLD_DUMPED => 128 + status,
        _ => status,
    }
}

fn describe_status(code: i32, status: i32) -> String {
    match code {
        CLD_EXITED => format!("exit status {status}"),
        CLD_KILLED | CLD_DUMPED => format!("killed by signal {status}"),
        _ => "no process was started".into(),
    }
}

/// Drops our reference to the unit so systemd garbage-collects it.
async fn release(mgr: &ManagerProxy<'_>, unit: &UnitProxy<'_>, name: &str) {
    if unit.unref().await.is_err() {
        let _ = mgr.unref_unit(name.to_string()).await;
    }
    // A failed unit is collected anyway (CollectMode), this is belt and braces.
    let _ = mgr.reset_failed_unit(name.to_string()).await;
}

/// Kills everything in the unit, waits (bounded) for it to go down, releases it.
///
/// Down is `inactive`/`failed`, or `deactivating` once the main process is
/// gone: every process of the unit has been sent SIGKILL by then, and a
/// container's systemd can take many seconds to notice that the unit's
/// cgroup emptied (seen in the sandbox: `deactivating (stop-sigterm)` for
/// 12 s with the cgroup already removed); its own stop timeout ends that
/// state, and the unit is collected (CollectMode) without us.
async fn kill_and_release(
    mgr: &ManagerProxy<'_>,
    unit: &UnitProxy<'_>,
    service: &ServiceProxy<'_>,
    name: &str,
) {
    if let Err(e) = mgr.kill_unit(name.to_string(), "all".into(), 9).await {
        tracing::debug!(unit = name, "KillUnit: {e}");
    }
    let until = Instant::now() + KILL_GRACE;
    while Instant::now() < until {
        match unit.active_state().await {
            Ok(s) if s == "inactive" || s == "failed" => break,
            Ok(s) if s == "deactivating" && matches!(service.main_pid().await, Ok(0)) => break,
            Ok(_) => {}
            Err(_) => break,
        }
        tokio::time::sleep(POLL).await;
    }
    release(mgr, unit, name).await;
}

/// Reads a pipe into at most `max` bytes (dropping and flagging the rest) until
/// EOF, or until `stop` fires: then whatever is buffered is drained and the
/// read ends. (systemd keeps its copy of the write end while the unit is loaded,
/// so EOF is not a usable end signal; once the unit is inactive every writer in
/// the container is gone and the pipe holds all there is.)
async fn read_bounded(
    rx: pipe::Receiver,
    max: usize,
    mut stop: oneshot::Receiver<()>,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    let keep = |data: &[u8], out: &mut Vec<u8>, truncated: &mut bool| {
        let room = max.saturating_sub(out.len());
        if data.len() > room {
            *truncated = true;
        }
        out.extend_from_slice(&data[..data.len().min(room)]);
    };
    loop {
        tokio::select! {
            ready = rx.readable() => {
                if ready.is_err() {
                    return (out, truncated);
                }
                match rx.try_read(&mut buf) {
                    Ok(0) => return (out, truncated),
                    Ok(n) => keep(&buf[..n], &mut out, &mut truncated),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return (out, truncated),
                }
            }
            _ = &mut stop => {
                loop {
                    match rx.try_read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => keep(&buf[..n], &mut out, &mut truncated),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                return (out, truncated);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(1),
            max_output: 10,
        }
    }

    #[test]
    fn object_paths_are_escaped_like_systemd() {
        assert_eq!(
            unit_object_path("voxnix-exec-0a.service"),
            "/org/freedesktop/systemd1/unit/voxnix_2dexec_2d0a_2eservice"
        );
        assert_eq!(
            unit_object_path("1x@y.service"),
            "/org/freedesktop/systemd1/unit/_31x_40y_2eservice"
        );
    }

    #[test]
    fn unit_names_are_unique_and_valid() {
        let a = unit_name();
        let b = unit_name();
        assert_ne!(a, b);
        assert!(a.starts_with("voxnix-exec-") && a.ends_with(".service"));
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        );
    }

    #[test]
    fn validation() {
        assert!(matches!(
            validate(&req(&[])),
            Err(ExecError::InvalidArgument(_))
        ));
        assert!(matches!(
            validate(&req(&[""])),
            Err(ExecError::InvalidArgument(_))
        ));
        assert!(matches!(
            validate(&req(&["echo", "a\0b"])),
            Err(ExecError::InvalidArgument(_))
        ));
        assert!(matches!(
            validate(&req(&["bin/echo"])),
            Err(ExecError::InvalidArgument(_))
        ));
        assert!(validate(&req(&["echo", "x"])).is_ok());
        assert!(validate(&req(&["/bin/echo"])).is_ok());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(CLD_EXITED, 3), 3);
        assert_eq!(exit_code(CLD_KILLED, 9), 137);
        assert_eq!(exit_code(CLD_DUMPED, 11), 139);
    }
}
