//! A running container's own journal, read from inside its namespaces.
//!
//! The journal library finds journal files by listing a directory and then
//! opens each by name. In a running container's directory the container can
//! rename another file over that name in between: a link, which opened from
//! the host resolves with the host's root (the appliance's own journal read
//! as the container's lines), or a FIFO, whose open blocks for ever. So the
//! daemon never reads it by a host path. It starts a reader: its own binary
//! again (`voxnix journal-in-container`, hidden), handed the container's
//! namespaces as descriptors 3 (mount) and 4 (user, when it has its own).
//! The reader joins them before reading anything, becoming the container's
//! root with the container's root directory (as systemd's `machine:`
//! transport does), so every link resolves inside the container and it can
//! read nothing the container's root could not. It prints the lines as
//! JSON; the daemon bounds the output and the time (a reader stuck on a
//! FIFO is killed) and checks every line.
//!
//! The reader is started before it joins (its program and libraries are the
//! host's, never the container's), and by `exec`, not a bare `fork`: reading
//! a journal allocates, which a child forked from the multi-threaded daemon
//! must not do.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::journal::{
    JournalError, LogLine, LogSource, MAX_LINES, MAX_MESSAGE_BYTES, MAX_NAME_BYTES,
};
use super::namespaces::{JOIN_STEPS, Namespaces, join};

/// The hidden subcommand the reader runs as.
pub const SUBCOMMAND: &str = "journal-in-container";
/// How long a reader may take before it is killed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the reader finds the namespaces.
const MNT_FD: RawFd = 3;
const USER_FD: RawFd = 4;
/// What a reader may print per line at most: a message of
/// [`MAX_MESSAGE_BYTES`], each byte escaped (`\u0000`), plus the other fields.
const MAX_JSON_PER_LINE: usize = (MAX_MESSAGE_BYTES + 2 * MAX_NAME_BYTES) * 6 + 1024;

/// What the daemon reads of a reader's answer at most (12 reads at once
/// stay within a few hundred MiB whatever the container logs).
const MAX_OUTPUT: usize = 24 * 1024 * 1024;

/// The newest `n` lines of the journal of machine `machine_id` (canonical)
/// in the running container whose leader is `leader` (in `proc_root`),
/// read by `reader` (the voxnix binary) inside the container's namespaces.
/// A container that is gone has no lines (`Ok(empty)`).
pub fn read(
    reader: &Path,
    proc_root: &Path,
    leader: u32,
    machine_id: &str,
    n: usize,
    since_usec: Option<u64>,
) -> Result<Vec<LogLine>, JournalError> {
    let n = n.min(MAX_LINES);
    let ns = match Namespaces::open(proc_root, leader) {
        Ok(ns) => ns,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(leader, "no container journal to read: {e}");
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(JournalError::Container(format!(
                "cannot open the container's namespaces: {e}"
            )));
        }
    };
    // A leader in the host's user namespace is a container without one of
    // its own (made before voxnix used them), or a host process that got a
    // reused PID: read as host root, neither may be trusted.
    if ns.user.is_none() {
        return Err(JournalError::Container(
            "the container runs without a user namespace of its own (it was started before \
             voxnix used them); restart it to read its journal"
                .into(),
        ));
    }
    let mnt = ns.mnt.as_raw_fd();
    let user = ns.user.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let mut cmd = Command::new(reader);
    cmd.arg(SUBCOMMAND)
        .arg(machine_id)
        .arg(n.to_string())
        .arg(since_usec.unwrap_or(0).to_string())
        .arg(if user >= 0 { "user" } else { "no-user" })
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only fcntl and dup2 (async-signal-safe) between fork and exec.
    // The descriptors are moved out of the way first, so that placing one
    // on 3 or 4 never overwrites the other.
    unsafe {
        cmd.pre_exec(move || {
            let high = |fd: RawFd| {
                let r = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            };
            let m = high(mnt)?;
            let u = if user >= 0 { high(user)? } else { -1 };
            // dup2 clears close-on-exec on the copy.
            if libc::dup2(m, MNT_FD) < 0 || (u >= 0 && libc::dup2(u, USER_FD) < 0) {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        JournalError::Container(format!("cannot start the reader {}: {e}", reader.display()))
    })?;
    drop(ns);

    let limit = (n * MAX_JSON_PER_LINE + 2).min(MAX_OUTPUT);
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(JournalError::Container("the reader has no output".into()));
    };
    let (tx, rx) = mpsc::channel();
    let out_thread = std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = stdout.take(limit as u64 + 1).read_to_end(&mut out);
        let _ = tx.send(r.map(|_| out));
    });
    let err_thread = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut err);
        // Drain the rest, so the reader never blocks on a full pipe.
        let _ = io::copy(&mut stderr, &mut io::sink());
        err
    });
    let out = match rx.recv_timeout(READ_TIMEOUT) {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = out_thread.join();
            let _ = err_thread.join();
            return Err(JournalError::Container(format!(
                "it did not finish in {} s (a file in its journal directory blocks reading; \
                 remove what is not a journal file there)",
                READ_TIMEOUT.as_secs()
            )));
        }
    };
    if matches!(&out, Ok(o) if o.len() > limit) {
        let _ = child.kill();
    }
    let status = child.wait();
    let _ = out_thread.join();
    let err = err_thread.join().unwrap_or_default();
    let out =
        out.map_err(|e| JournalError::Container(format!("reading the reader's output: {e}")))?;
    if !status.as_ref().is_ok_and(|s| s.success()) {
        let err = String::from_utf8_lossy(&err);
        return Err(JournalError::Container(
            err.trim()
                .strip_prefix("voxnix: ")
                .unwrap_or(err.trim())
                .to_string(),
        ));
    }
    if out.len() > limit {
        return Err(JournalError::Container(
            "the reader printed too much".into(),
        ));
    }
    let lines: Vec<LogLine> = serde_json::from_slice(&out)
        .map_err(|e| JournalError::Container(format!("the reader's output: {e}")))?;
    // The reader read files the container controls; hold its answer to what
    // was asked.
    let since = since_usec.unwrap_or(0);
    let bad = lines.len() > n
        || lines.iter().any(|l| {
            l.source != LogSource::Container
                || l.timestamp_usec < since
                || l.message.len() > MAX_MESSAGE_BYTES + '…'.len_utf8()
                || [&l.unit, &l.identifier].iter().any(|f| {
                    f.as_ref()
                        .is_some_and(|f| f.len() > MAX_NAME_BYTES + '…'.len_utf8())
                })
        });
    if bad {
        return Err(JournalError::Container(
            "the reader's answer is not what was asked".into(),
        ));
    }
    Ok(lines)
}

/// The reader (`voxnix journal-in-container ID N SINCE user|no-user`, with
/// the namespaces on descriptors 3 and 4). Must run before the process
/// starts any thread: joining a user namespace requires a single thread.
pub fn reader_main(args: &[String]) -> ExitCode {
    match reader(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voxnix: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reader(args: &[String]) -> Result<(), String> {
    let [id, n, since, user] = args else {
        return Err(format!(
            "usage: voxnix {SUBCOMMAND} MACHINE-ID LINES SINCE-USEC user|no-user"
        ));
    };
    let n: usize = n.parse().map_err(|_| format!("not a line count: {n:?}"))?;
    let since: u64 = since
        .parse()
        .map_err(|_| format!("not a time: {since:?}"))?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{id:?} is not a machine id"));
    }
    let user_fd = match user.as_str() {
        "user" => USER_FD,
        "no-user" => -1,
        other => return Err(format!("expected user or no-user, not {other:?}")),
    };
    // SAFETY: plain system calls; PR_SET_DUMPABLE 0 keeps the container's
    // root (whose user namespace this process joins) from ptracing it or
    // opening its /proc files.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        if let Err((step, errno)) = join(user_fd, MNT_FD) {
            let what = JOIN_STEPS.get(step as usize).copied().unwrap_or("joining");
            return Err(format!("{what}: {}", io::Error::from_raw_os_error(errno)));
        }
        libc::close(MNT_FD);
        if user_fd >= 0 {
            libc::close(USER_FD);
        }
    }
    let since = (since > 0).then_some(since);

    // Plain paths: our root is now the container's, so links resolve in it.
    // (Not `/proc/self/fd/N` views: this process is not in the container's
    // PID namespace, so its `/proc/self` does not exist there.)
    let lines = super::journal::own_journal(None, &id.to_ascii_lowercase(), n, since)
        .map_err(|e| e.to_string())?;
    let stdout = io::stdout().lock();
    serde_json::to_writer(stdout, &lines).map_err(|e| format!("writing the lines: {e}"))
}
