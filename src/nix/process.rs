//! Running one Nix command: its own process group, stderr streamed line by
//! line as it arrives, a timeout and a cancellation, and on either the whole
//! process tree is stopped and the child reaped.
//!
//! Stopping is two-step. Nix's builders run in sessions of their own (Nix
//! calls `setsid()` for each), so a signal to the command's process group
//! does not reach them. First the group gets SIGTERM, which Nix handles by
//! killing its builders and exiting; after a grace period everything still
//! alive (the group and every descendant found through `/proc`, remembered
//! before the first signal) gets SIGKILL. The command itself is always
//! waited for, so it never stays a zombie.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ::nix::sys::signal::{Signal, kill, killpg};
use ::nix::unistd::{Pid, getpgrp};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// How long Nix gets to stop its builders after SIGTERM.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// Lines of stderr kept for error messages.
const STDERR_KEEP_LINES: usize = 400;
/// Longest stderr line kept; longer ones are cut.
const MAX_LINE_BYTES: usize = 4096;
/// Stdout kept: Nix prints store paths and small JSON documents; of a
/// longer output (a build log) the last 16 to 32 MiB are kept.
const MAX_STDOUT_BYTES: usize = 16 * 1024 * 1024;

/// The side that cancels: [`Canceller::cancel`] stops every command run with
/// one of its tokens.
#[derive(Debug)]
pub struct Canceller {
    tx: watch::Sender<bool>,
}

/// The side that is cancelled. Cloning is cheap; a token whose [`Canceller`]
/// was dropped without cancelling is never cancelled.
#[derive(Debug, Clone)]
pub struct CancelToken {
    rx: watch::Receiver<bool>,
}

/// A new canceller and its token.
pub fn cancel_pair() -> (Canceller, CancelToken) {
    let (tx, rx) = watch::channel(false);
    (Canceller { tx }, CancelToken { rx })
}

impl Canceller {
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub fn token(&self) -> CancelToken {
        CancelToken {
            rx: self.tx.subscribe(),
        }
    }
}

impl CancelToken {
    /// A token that is never cancelled.
    pub fn never() -> Self {
        cancel_pair().1
    }

    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when the token is cancelled; pending forever otherwise.
    pub async fn cancelled(&self) {
        let mut rx = self.rx.clone();
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            if rx.changed().await.is_err() {
                // The canceller is gone without cancelling.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A command to run: the program, its arguments and extra environment.
#[derive(Debug, Clone)]
pub struct NixCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

impl NixCommand {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The program's file name, for messages.
    pub fn display_name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }
}

/// What a finished command left.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The last lines of stderr (ANSI escapes removed).
    pub stderr_tail: Vec<String>,
    pub elapsed: Duration,
}

impl CommandOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Why a command did not finish by itself.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} ran longer than {after:?} and was stopped")]
    Timeout {
        program: String,
        after: Duration,
        stderr_tail: Vec<String>,
    },
    #[error("{program} was cancelled")]
    Cancelled {
        program: String,
        stderr_tail: Vec<String>,
    },
    #[error("reading the output of {program}: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `cmd` in a new process group, calling `on_line` for each stderr line
/// as it arrives. On timeout or cancellation the process tree is stopped (see
/// the module docs) before this returns.
pub async fn run(
    cmd: &NixCommand,
    timeout: Duration,
    cancel: &CancelToken,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<CommandOutput, RunError> {
    let started = Instant::now();
    let program = cmd.display_name();
    if cancel.is_cancelled() {
        return Err(RunError::Cancelled {
            program,
            stderr_tail: Vec::new(),
        });
    }
    let mut command = tokio::process::Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        program: cmd.program.clone(),
        source,
    })?;
    let Some(raw_pid) = child.id() else {
        // Only when the child was already reaped, which cannot happen here.
        let status = child.wait().await.map_err(|source| RunError::Io {
            program: program.clone(),
            source,
        })?;
        return Ok(CommandOutput {
            status,
            stdout: Vec::new(),
            stderr_tail: Vec::new(),
            elapsed: started.elapsed(),
        });
    };
    let Ok(pid) = i32::try_from(raw_pid) else {
        return Err(RunError::Io {
            program,
            source: std::io::Error::other("process id out of range"),
        });
    };
    // process_group(0): the child leads a group whose id is its pid.
    let mut guard = TreeGuard::new(pid);
    tracing::debug!(program = %program, pid, "nix command started");

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut stdout_buf = Vec::new();
    let mut ring: VecDeque<String> = VecDeque::new();

    enum Outcome {
        Done(
            std::io::Result<ExitStatus>,
            std::io::Result<()>,
            std::io::Result<()>,
        ),
        Timeout,
        Cancelled,
    }

    let outcome = {
        let work = async {
            let (status, out, err) = tokio::join!(
                child.wait(),
                read_capped(stdout, &mut stdout_buf),
                read_lines(stderr, &mut ring, on_line),
            );
            Outcome::Done(status, out, err)
        };
        tokio::select! {
            o = work => o,
            _ = tokio::time::sleep(timeout) => Outcome::Timeout,
            _ = cancel.cancelled() => Outcome::Cancelled,
        }
    };

    match outcome {
        Outcome::Done(status, out, err) => {
            guard.disarm();
            let io = |source| RunError::Io {
                program: program.clone(),
                source,
            };
            let status = status.map_err(io)?;
            out.map_err(io)?;
            err.map_err(io)?;
            // Anything the command left running in its group (normally
            // nothing; the group's id is free once the leader is reaped).
            if group_members(pid).iter().any(|(_, st)| st.state != 'Z') {
                kill_group(pid, Signal::SIGKILL);
            }
            tracing::debug!(program = %program, %status, elapsed = ?started.elapsed(), "nix command finished");
            Ok(CommandOutput {
                status,
                stdout: stdout_buf,
                stderr_tail: ring.into(),
                elapsed: started.elapsed(),
            })
        }
        Outcome::Timeout | Outcome::Cancelled => {
            let timed_out = matches!(outcome, Outcome::Timeout);
            tracing::warn!(
                program = %program,
                pid,
                reason = if timed_out { "timeout" } else { "cancelled" },
                "stopping nix command and its process tree"
            );
            terminate(&mut child, pid).await;
            guard.disarm();
            let stderr_tail = ring.into();
            if timed_out {
                Err(RunError::Timeout {
                    program,
                    after: timeout,
                    stderr_tail,
                })
            } else {
                Err(RunError::Cancelled {
                    program,
                    stderr_tail,
                })
            }
        }
    }
}

/// SIGTERM to the group, a grace period, then SIGKILL to whatever of the
/// tree is left; the leader is reaped in every case.
async fn terminate(child: &mut tokio::process::Child, pgid: i32) {
    let before = descendants(pgid);
    kill_group(pgid, Signal::SIGTERM);
    let exited = tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok();
    if !exited {
        tracing::warn!(
            pgid,
            "nix did not stop within the grace period; killing its process tree"
        );
    }
    // Descendants found now (the leader may still be alive) and before the
    // first signal (orphans whose parent already exited).
    let mut all = before;
    if !exited {
        all.extend(descendants(pgid));
    }
    kill_tree(pgid, &all);
    if let Err(e) = child.wait().await {
        tracing::warn!(pgid, error = %e, "waiting for the stopped nix command");
    }
}

/// Kills the process tree when a run is abandoned (its future dropped).
struct TreeGuard {
    pgid: i32,
    armed: bool,
}

impl TreeGuard {
    fn new(pgid: i32) -> Self {
        Self { pgid, armed: true }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            let all = descendants(self.pgid);
            kill_tree(self.pgid, &all);
            // tokio's kill_on_drop and its orphan reaper collect the leader.
        }
    }
}

fn kill_group(pgid: i32, signal: Signal) {
    if !safe_group(pgid) {
        return;
    }
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Never signal ourselves, init, or a nonsense id.
fn safe_group(pgid: i32) -> bool {
    pgid > 1 && pgid != getpgrp().as_raw() && pgid != std::process::id() as i32
}

/// SIGKILL to the group and to each remembered process that is still the
/// same process (same start time); a remembered process that leads its own
/// group (Nix's builders) gets its group killed too.
fn kill_tree(pgid: i32, procs: &BTreeMap<i32, ProcStat>) {
    // Stop the command first so it starts nothing new.
    kill_group(pgid, Signal::SIGKILL);
    for (pid, remembered) in procs {
        let Some(now) = proc_stat(*pid) else { continue };
        if now.start_time != remembered.start_time {
            continue; // the pid was reused
        }
        if now.pgid == *pid {
            kill_group(*pid, Signal::SIGKILL);
        }
        if *pid > 1 {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

/// One line of `/proc/PID/stat`, the parts that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: i32,
    pub pgid: i32,
    pub state: char,
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`; None when the process is gone.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may itself contain ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5); start time is field 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Every live process under `root` (not `root` itself), by parent links.
pub fn descendants(root: i32) -> BTreeMap<i32, ProcStat> {
    let mut children: BTreeMap<i32, Vec<(i32, ProcStat)>> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(st) = proc_stat(pid) {
                children.entry(st.ppid).or_default().push((pid, st));
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        if let Some(kids) = children.get(&p) {
            for (pid, st) in kids {
                if out.insert(*pid, *st).is_none() {
                    queue.push(*pid);
                }
            }
        }
    }
    out
}

/// Processes (zombies included) whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<(i32, ProcStat)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(st) = proc_stat(pid)
                && st.pgid == pgid
            {
                out.push((pid, st));
            }
        }
    }
    out
}

/// Reads all of stdout, keeping its end when it is very long.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let Some(mut reader) = reader else {
        return Ok(());
    };
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        // Keep the end (a build log's tail matters); trim in large steps.
        if buf.len() > 2 * MAX_STDOUT_BYTES {
            let excess = buf.len() - MAX_STDOUT_BYTES;
            buf.drain(..excess);
        }
    }
}

/// Reads stderr in chunks, splitting lines itself so that a line without an
/// end (or a huge one) cannot grow a buffer without bound.
async fn read_lines<R: AsyncRead + Unpin>(
    reader: Option<R>,
    ring: &mut VecDeque<String>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> std::io::Result<()> {
    let Some(mut reader) = reader else {
        return Ok(());
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut emit = |bytes: &[u8], ring: &mut VecDeque<String>| {
        let line = clean_line(bytes);
        on_line(&line);
        if ring.len() == STDERR_KEEP_LINES {
            ring.pop_front();
        }
        ring.push_back(line);
    };
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            if !pending.is_empty() {
                emit(&pending, ring);
            }
            return Ok(());
        }
        for &b in &chunk[..n] {
            if b == b'\n' {
                emit(&pending, ring);
                pending.clear();
            } else if pending.len() < MAX_LINE_BYTES {
                pending.push(b);
            }
            // Bytes past MAX_LINE_BYTES are dropped until the line ends.
        }
    }
}

/// Lossy UTF-8, without ANSI escape sequences, carriage returns or trailing
/// whitespace.
pub fn clean_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: drop ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_parentheses_in_the_name() {
        let text = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100 18446744073709551615";
        let st = parse_stat(text).unwrap();
        assert_eq!(st.ppid, 1);
        assert_eq!(st.pgid, 1234);
        assert_eq!(st.state, 'S');
        assert_eq!(st.start_time, 98765);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }

    #[test]
    fn lines_are_cleaned() {
        assert_eq!(
            clean_line(b"\x1b[31;1merror:\x1b[0m boom\r  "),
            "error: boom"
        );
        assert_eq!(clean_line(b"plain"), "plain");
        assert_eq!(clean_line(b"\xff\xfe ok"), "\u{fffd}\u{fffd} ok");
    }

    #[tokio::test]
    async fn streams_lines_and_returns_stdout() {
        let cmd = NixCommand::new("/bin/sh").args([
            "-c",
            "echo one >&2; echo out; printf 'two\\nthree' >&2; exit 3",
        ]);
        let mut seen = Vec::new();
        let out = run(
            &cmd,
            Duration::from_secs(10),
            &CancelToken::never(),
            &mut |l: &str| seen.push(l.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(seen, ["one", "two", "three"]);
        assert_eq!(out.stdout_text(), "out\n");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stderr_tail, ["one", "two", "three"]);
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let cmd = NixCommand::new("/nonexistent/nix-store");
        let err = run(
            &cmd,
            Duration::from_secs(1),
            &CancelToken::never(),
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }), "{err:?}");
    }

    /// A tree like Nix's: the command, a child in its own session (like a
    /// builder) and one in the command's group, each with a grandchild. The
    /// marker is a number: the grandchildren sleep that many seconds, so it
    /// shows in every process's command line.
    fn tree_script(marker: &str) -> NixCommand {
        NixCommand::new("/bin/sh").args([
            "-c".to_string(),
            format!(
                "setsid /bin/sh -c '/bin/sleep {marker}; :' & \
                 /bin/sh -c '/bin/sleep {marker}; :' & \
                 /bin/sleep 0.2; echo $$ >&2; wait"
            ),
        ])
    }

    fn marker_processes(marker: &str) -> Vec<i32> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                out.push(pid);
            }
        }
        out
    }

    async fn assert_tree_gone(pgid: i32, marker: &str) {
        // Killed orphans are reaped by init; give it a moment.
        for _ in 0..50 {
            if group_members(pgid).is_empty() && marker_processes(marker).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "left behind: group {:?}, marked {:?}",
            group_members(pgid),
            marker_processes(marker)
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_tree() {
        let marker = format!("9{}1", std::process::id());
        let cmd = tree_script(&marker);
        let started = Instant::now();
        let pgid = std::sync::Mutex::new(None::<i32>);
        // The first line, once the tree is up, is the group's id.
        let mut on_line = |l: &str| {
            *pgid.lock().unwrap() = l.parse().ok();
        };
        let err = run(
            &cmd,
            Duration::from_millis(700),
            &CancelToken::never(),
            &mut on_line,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pgid = pgid.lock().unwrap().expect("saw the tree");
        assert_tree_gone(pgid, &marker).await;
    }

    #[tokio::test]
    async fn cancellation_kills_the_whole_tree() {
        let marker = format!("9{}2", std::process::id());
        let cmd = tree_script(&marker);
        let (canceller, token) = cancel_pair();
        let pgid = std::sync::Mutex::new(None::<i32>);
        let mut on_line = |l: &str| {
            *pgid.lock().unwrap() = l.parse().ok();
            canceller.cancel();
        };
        let err = run(&cmd, Duration::from_secs(60), &token, &mut on_line)
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled { .. }), "{err:?}");
        let pgid = pgid.lock().unwrap().expect("saw the tree");
        assert_tree_gone(pgid, &marker).await;
    }

    #[tokio::test]
    async fn a_cancelled_token_runs_nothing() {
        let (canceller, token) = cancel_pair();
        canceller.cancel();
        let err = run(
            &NixCommand::new("/bin/true"),
            Duration::from_secs(1),
            &token,
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RunError::Cancelled { .. }));
        assert!(!CancelToken::never().is_cancelled());
    }
}
