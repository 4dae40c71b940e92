//! Read container and unit logs straight from the journal files, with the
//! pure-Rust `sdjournal` reader (no `journalctl`, no libsystemd).
//!
//! A container's log is the merge of two journals:
//! - the container's own journal (its systemd, services ...), in a directory
//!   named after its machine id (machined's `Id`), `var/log/journal/<id>` or
//!   `run/log/journal/<id>` in the container's tree. It is read only from the
//!   container's side, never by a path from the host (the host's
//!   `/var/log/journal/<id>` is nspawn's link into the container's tree, and
//!   whatever the container puts behind it, or swaps in while it is read,
//!   would be resolved with the host's root):
//!   - running: by a reader process inside the container's namespaces
//!     ([`super::journal_in_container`]), where every link resolves in the
//!     container and a file that blocks is the reader's problem, killed
//!     after a bound;
//!   - stopped: through its directory (`/var/lib/nixos-containers/NAME`),
//!     links resolved inside it (`openat2(RESOLVE_IN_ROOT)`); nothing of the
//!     container runs then to swap files under the reader.
//! - the host journal's lines about the container's unit
//!   (`_SYSTEMD_UNIT` = `container@NAME.service`, or `UNIT` from PID 1, or
//!   `OBJECT_SYSTEMD_UNIT` from root: never a field any sender may set):
//!   nspawn's console output and systemd's start/stop messages. Only the host's
//!   own journal directories are read (those of `<journal_root>/etc/machine-id`).
//!
//! Both are read newest-first with a limit, so the work and memory are bounded
//! by `n`, not by the journal's size. Files being written are read with `pread`
//! (no mmap), rotated (archived) and `*.journal~` files are included, and an
//! entry that cannot be read (a file truncated or growing under us) is skipped.
//!
//! The functions here do blocking file I/O: call them from `spawn_blocking`.

use std::fs::File;
use std::path::{Path, PathBuf};

use sdjournal::{EntryRef, Journal, JournalConfig, SdJournalError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The most lines one call returns.
pub const MAX_LINES: usize = 1000;
/// Longer messages are cut to this many bytes (and end with `…`).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Unreadable entries tolerated per journal before giving up on it.
const MAX_ENTRY_ERRORS: usize = 100;

/// Which journal a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The container's own journal.
    Container,
    /// The host journal (the container's unit).
    Host,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Wall-clock time, microseconds since the Unix epoch.
    pub timestamp_usec: u64,
    pub source: LogSource,
    /// The unit the entry is about (`UNIT`, for systemd's own messages) or
    /// from (`_SYSTEMD_UNIT`).
    pub unit: Option<String>,
    /// `SYSLOG_IDENTIFIER`, else `_COMM`.
    pub identifier: Option<String>,
    /// `MESSAGE`, lossily decoded as UTF-8, without a trailing newline.
    pub message: String,
}

/// Why logs could not be read. A missing journal is not an error.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error("invalid log request: {0}")]
    InvalidArgument(String),
    #[error("reading the container's own journal: {0}")]
    Container(String),
    #[error("reading the {which} journal: {source}")]
    Read {
        which: &'static str,
        #[source]
        source: SdJournalError,
    },
}

/// Where a container's own journal is read from.
#[derive(Debug, Clone, Copy)]
pub enum ContainerJournal<'a> {
    /// Not read (no machine id, or nothing to read it from).
    None,
    /// A running container, read from inside its namespaces by `reader`
    /// (the voxnix binary; the daemon's own is `/proc/self/exe`): `leader`
    /// is machined's `Leader`, valid in `proc_root`. A container gone by
    /// then has no lines, not an error.
    Running {
        proc_root: &'a Path,
        leader: u32,
        reader: &'a Path,
    },
    /// A stopped container's directory (`/var/lib/nixos-containers/NAME`).
    Stopped(&'a Path),
}

/// The last `n` lines (at most [`MAX_LINES`]) of a container's log, oldest
/// first: its own journal (when `machine_id_hex` is given and its journal is
/// found through `container`) merged by time with the host journal's lines
/// of `unit` (`container@NAME.service`).
///
/// - `journal_root`: the host's root, normally `/` (the sandbox's root in tests).
/// - `machine_id_hex`: machined's `Id` of the container, 32 hex digits.
/// - `since_usec`: lines older than this (the container's creation) are left
///   out: the host journal keeps the lines of an earlier container of the
///   same name, which are not this one's (nor, maybe, its owner's).
pub fn container_logs(
    journal_root: &Path,
    machine_id_hex: Option<&str>,
    container: ContainerJournal<'_>,
    unit: &str,
    n: usize,
    since_usec: Option<u64>,
) -> Result<Vec<LogLine>, JournalError> {
    let n = n.min(MAX_LINES);
    if unit.is_empty() || unit.contains('\0') {
        return Err(JournalError::InvalidArgument(format!(
            "invalid unit name {unit:?}"
        )));
    }
    let machine_id = machine_id_hex
        .map(|id| {
            parse_machine_id(id)
                .ok_or_else(|| JournalError::InvalidArgument(format!("{id:?} is not a machine id")))
        })
        .transpose()?;
    if n == 0 {
        return Ok(Vec::new());
    }

    let mut lines = Vec::with_capacity(2 * n);
    if let Some(id) = &machine_id {
        match container {
            ContainerJournal::None => {}
            ContainerJournal::Running {
                proc_root,
                leader,
                reader,
            } => lines.extend(super::journal_in_container::read(
                reader, proc_root, leader, id, n, since_usec,
            )?),
            ContainerJournal::Stopped(root) => lines.extend(
                own_journal(Some(root), id, n, since_usec).map_err(|source| {
                    JournalError::Read {
                        which: "container",
                        source,
                    }
                })?,
            ),
        }
    }

    let host_id = std::fs::read_to_string(journal_root.join("etc/machine-id"))
        .ok()
        .and_then(|s| parse_machine_id(s.trim()));
    let mut dirs = Vec::new();
    for base in ["var/log/journal", "run/log/journal"] {
        let rel = match &host_id {
            Some(id) => format!("{base}/{id}"),
            // Unknown host id: every real (non-symlink) machine directory;
            // the unit filter keeps out what is not ours.
            None => base.to_string(),
        };
        dirs.extend(JournalDir::open(journal_root, &rel));
    }
    read_tail(
        &dirs,
        Some(unit),
        n,
        since_usec,
        LogSource::Host,
        &mut lines,
    )
    .map_err(|source| JournalError::Read {
        which: "host",
        source,
    })?;

    // Stable: equal timestamps keep container lines before host lines.
    lines.sort_by_key(|l| l.timestamp_usec);
    let excess = lines.len().saturating_sub(n);
    lines.drain(..excess);
    Ok(lines)
}

/// The newest `n` lines (none older than `since_usec`) of the journal of
/// machine `id` (canonical) under `root`: `root/var/log/journal/<id>` and
/// `root/run/log/journal/<id>`, links resolved inside `root` (a stopped
/// container's directory). `None`: our own `/`, by plain paths (inside a
/// running container's namespaces, where `/` is the container's root).
pub(crate) fn own_journal(
    root: Option<&Path>,
    id: &str,
    n: usize,
    since_usec: Option<u64>,
) -> Result<Vec<LogLine>, SdJournalError> {
    let dirs: Vec<JournalDir> = ["var/log/journal", "run/log/journal"]
        .iter()
        .filter_map(|base| {
            let rel = format!("{base}/{id}");
            match root {
                Some(root) => JournalDir::open(root, &rel),
                None => JournalDir::plain(Path::new("/").join(rel)),
            }
        })
        .collect();
    let mut lines = Vec::new();
    read_tail(
        &dirs,
        None,
        n.min(MAX_LINES),
        since_usec,
        LogSource::Container,
        &mut lines,
    )?;
    Ok(lines)
}

/// The machine id a stopped container's root holds (`etc/machine-id`, which
/// names its journal directory), read inside the root: a link resolves in
/// it, only a regular file is read (never blocking on a FIFO), at most a
/// line.
pub fn machine_id_in_root(root: &Path) -> Option<String> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use std::io::Read;
    let dir = File::open(root).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let file = File::from(openat2(&dir, "etc/machine-id", how).ok()?);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(64).read_to_string(&mut text).ok()?;
    parse_machine_id(text.lines().next().unwrap_or(""))
}

/// A machine id in canonical form (32 lowercase hex digits), if `s` is one.
fn parse_machine_id(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// A journal directory, opened with its symlinks resolved inside its root and
/// kept open (as a descriptor) while the journal files are discovered.
struct JournalDir {
    /// Keeps the `/proc/self/fd/N` path valid (`None`: a plain path).
    _fd: Option<File>,
    path: PathBuf,
}

impl JournalDir {
    /// `root/rel`, if it exists and is a directory, links in `rel` resolved
    /// inside `root`.
    /// A directory by its plain path, if it is one (links followed).
    fn plain(path: PathBuf) -> Option<JournalDir> {
        path.is_dir().then_some(JournalDir { _fd: None, path })
    }

    fn open(root: &Path, rel: &str) -> Option<JournalDir> {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
        let root_dir = File::open(root).ok()?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        match openat2(&root_dir, rel, how) {
            Ok(fd) => {
                use std::os::fd::AsRawFd;
                let file = File::from(fd);
                let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
                Some(JournalDir {
                    _fd: Some(file),
                    path,
                })
            }
            // Never a plain path instead (kernel < 5.6 has no openat2): its
            // links would resolve against our own root.
            Err(nix::errno::Errno::ENOSYS) => {
                tracing::warn!("the kernel has no openat2 (Linux >= 5.6 needed): no journal read");
                None
            }
            Err(_) => None,
        }
    }
}

/// Appends the newest `n` entries of the journals in `dirs` (only those of
/// `unit`, if given, and none older than `since_usec`) to `out`.
fn read_tail(
    dirs: &[JournalDir],
    unit: Option<&str>,
    n: usize,
    since_usec: Option<u64>,
    source: LogSource,
    out: &mut Vec<LogLine>,
) -> Result<(), SdJournalError> {
    if dirs.is_empty() {
        return Ok(());
    }
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path.clone()).collect();
    let config = JournalConfig {
        include_journal_tilde: true,
        ..JournalConfig::default()
    };
    let journal = match Journal::open_dirs_with_config(&paths, config) {
        Ok(j) => j,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    match unit {
        None => read_matching(&journal, &[], n, since_usec, source, out),
        // Only fields the journal sets itself (underscore fields) decide
        // whose a line is; `UNIT=` and `OBJECT_SYSTEMD_UNIT=` are the
        // sender's to write (`logger --journald`), so they count only from
        // PID 1 (systemd's messages about the unit) and from root
        // (journald's and coredump's), as journalctl -u does. One query per
        // kind, each newest-first with the limit: forged lines cannot crowd
        // out real ones either.
        Some(unit) => {
            let u = unit.as_bytes();
            let kinds: [&[(&str, &[u8])]; 3] = [
                &[("_SYSTEMD_UNIT", u)],
                &[("UNIT", u), ("_PID", b"1")],
                &[("OBJECT_SYSTEMD_UNIT", u), ("_UID", b"0")],
            ];
            for terms in kinds {
                read_matching(&journal, terms, n, since_usec, source, out)?;
            }
            Ok(())
        }
    }
}

/// Appends the newest `n` entries of `journal` matching all of `terms`.
fn read_matching(
    journal: &Journal,
    terms: &[(&str, &[u8])],
    n: usize,
    since_usec: Option<u64>,
    source: LogSource,
    out: &mut Vec<LogLine>,
) -> Result<(), SdJournalError> {
    let mut q = journal.query();
    for (field, value) in terms {
        q.match_exact(field, value);
    }
    q.seek_tail().limit(n);
    let start = out.len();
    let mut errors = 0;
    for item in q.iter()? {
        match item {
            Ok(entry) if since_usec.is_some_and(|s| entry.realtime_usec() < s) => {}
            Ok(entry) => out.push(to_line(&entry, source)),
            Err(e) => {
                errors += 1;
                tracing::debug!(?source, "skipping an unreadable journal entry: {e}");
                if errors >= MAX_ENTRY_ERRORS {
                    break;
                }
            }
        }
        if out.len() - start >= n {
            break;
        }
    }
    Ok(())
}

/// No journal (yet) or one being created: nothing to read, not an error.
fn is_absent(e: &SdJournalError) -> bool {
    match e {
        SdJournalError::NotFound | SdJournalError::Transient { .. } => true,
        SdJournalError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

fn field(entry: &EntryRef, name: &str) -> Option<String> {
    entry
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn to_line(entry: &EntryRef, source: LogSource) -> LogLine {
    let raw = entry.get("MESSAGE").unwrap_or_default();
    // Decoded first, then cut on a character boundary: an invalid byte
    // becomes a 3-byte U+FFFD, so cutting the raw bytes could still exceed
    // the bound.
    let mut message = cut(
        String::from_utf8_lossy(&raw[..raw.len().min(MAX_MESSAGE_BYTES)]).into_owned(),
        MAX_MESSAGE_BYTES,
        raw.len() > MAX_MESSAGE_BYTES,
    );
    while message.ends_with('\n') {
        message.pop();
    }
    let short = |v: Option<String>| v.map(|v| cut(v, MAX_NAME_BYTES, false));
    LogLine {
        timestamp_usec: entry.realtime_usec(),
        source,
        unit: short(field(entry, "UNIT").or_else(|| field(entry, "_SYSTEMD_UNIT"))),
        identifier: short(field(entry, "SYSLOG_IDENTIFIER").or_else(|| field(entry, "_COMM"))),
        message,
    }
}

/// Unit names and identifiers are cut to this many bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// `s` cut to at most `max` bytes on a character boundary, ending with `…`
/// when anything was cut (or `more` says the source was longer).
fn cut(mut s: String, max: usize, more: bool) -> String {
    let long = s.len() > max;
    if long {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    if long || more {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_roots_machine_id_is_read_inside_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        assert_eq!(machine_id_in_root(r), None);
        std::fs::write(
            r.join("etc/machine-id"),
            "DC8DCA18BCCC4D8E97E92BE1B543A473\n",
        )
        .unwrap();
        assert_eq!(
            machine_id_in_root(r).as_deref(),
            Some("dc8dca18bccc4d8e97e92be1b543a473")
        );
        // A link resolves inside the root (here to nothing), a FIFO is not read.
        std::fs::remove_file(r.join("etc/machine-id")).unwrap();
        std::os::unix::fs::symlink("/etc/machine-id", r.join("etc/machine-id")).unwrap();
        assert_eq!(machine_id_in_root(r), None);
        std::fs::remove_file(r.join("etc/machine-id")).unwrap();
        nix::unistd::mkfifo(&r.join("etc/machine-id"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(machine_id_in_root(r), None);
    }

    #[test]
    fn cuts_stay_within_their_bounds() {
        // Invalid bytes grow threefold when decoded.
        let decoded = String::from_utf8_lossy(&[0xff; 100]).into_owned();
        assert_eq!(decoded.len(), 300);
        let c = cut(decoded, 100, false);
        assert!(
            c.len() <= 100 + '…'.len_utf8() && c.ends_with('…'),
            "{}",
            c.len()
        );
        assert_eq!(cut("abc".into(), 10, false), "abc");
        assert_eq!(cut("abc".into(), 10, true), "abc…");
    }

    #[test]
    fn machine_ids_are_validated() {
        assert_eq!(
            parse_machine_id("DC8DCA18BCCC4D8E97E92BE1B543A473"),
            Some("dc8dca18bccc4d8e97e92be1b543a473".into())
        );
        assert_eq!(parse_machine_id("../../etc"), None);
        assert_eq!(parse_machine_id("dc8dca18bccc4d8e97e92be1b543a47"), None);
    }

    #[test]
    fn no_journal_at_all_is_empty_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = container_logs(
            dir.path(),
            Some("0123456789abcdef0123456789abcdef"),
            ContainerJournal::Stopped(dir.path()),
            "container@x.service",
            20,
            None,
        )
        .expect("no error");
        assert!(lines.is_empty());
    }

    #[test]
    fn bad_arguments_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            container_logs(
                dir.path(),
                Some("../x"),
                ContainerJournal::None,
                "container@x.service",
                5,
                None
            ),
            Err(JournalError::InvalidArgument(_))
        ));
        assert!(matches!(
            container_logs(dir.path(), None, ContainerJournal::None, "", 5, None),
            Err(JournalError::InvalidArgument(_))
        ));
    }

    #[test]
    fn zero_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = container_logs(
            dir.path(),
            None,
            ContainerJournal::None,
            "u.service",
            0,
            None,
        )
        .expect("ok");
        assert!(lines.is_empty());
    }
}
