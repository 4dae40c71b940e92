//! Read container and unit logs straight from the journal files, with the
//! pure-Rust `sdjournal` reader (no `journalctl`, no libsystemd).
//!
//! A container's log is the merge of two journals:
//! - the container's own journal (its systemd, services ...), in a directory
//!   named after its machine id (machined's `Id`). Where it is depends on how
//!   nspawn was told to link it:
//!   - `<journal_root>/var/log/journal/<id>`: a symlink into the container's
//!     tree (`--link-journal=try-guest`, NixOS's default), never followed from
//!     the host's side (the container controls what lies behind it), or a real
//!     directory (`--link-journal=host`); also `<journal_root>/run/log/journal/<id>`;
//!   - inside the container's root, `<container_root>/var/log/journal/<id>` or
//!     `<container_root>/run/log/journal/<id>`: the running container's
//!     `/proc/<leader>/root`, or its directory when it is stopped.
//!
//!   Symlinks are resolved inside the root they were found in
//!   (`openat2(RESOLVE_IN_ROOT)`), so this also works when `journal_root` or
//!   `container_root` is a `/proc/<pid>/root` view.
//! - the host journal's lines about the container's unit
//!   (`_SYSTEMD_UNIT`, `UNIT` or `OBJECT_SYSTEMD_UNIT` = `container@NAME.service`):
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
    #[error("reading the {which} journal: {source}")]
    Read {
        which: &'static str,
        #[source]
        source: SdJournalError,
    },
}

/// The last `n` lines (at most [`MAX_LINES`]) of a container's log, oldest
/// first: its own journal (when `machine_id_hex` is given and its journal is
/// found) merged by time with the host journal's lines of `unit`
/// (`container@NAME.service`).
///
/// - `journal_root`: the host's root, normally `/` (the sandbox's root in tests).
/// - `machine_id_hex`: machined's `Id` of the container, 32 hex digits.
/// - `container_root`: the container's root as the caller sees it: the
///   running container's (`/proc/<leader>/root`, see
///   [`crate::host::exec::container_root`]) or, stopped, its directory
///   (`/var/lib/nixos-containers/NAME`). Its journal is read only through it.
/// - `since_usec`: lines older than this (the container's creation) are left
///   out: the host journal keeps the lines of an earlier container of the
///   same name, which are not this one's (nor, maybe, its owner's).
pub fn container_logs(
    journal_root: &Path,
    machine_id_hex: Option<&str>,
    container_root: Option<&Path>,
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
        let mut dirs = Vec::new();
        for base in ["var/log/journal", "run/log/journal"] {
            let rel = format!("{base}/{id}");
            // On the host's side only a real directory (--link-journal=host):
            // a link leads into the container's tree, where the container
            // may have put links of its own, which resolved from here would
            // point into the host (its journal). The container's journal is
            // read through its own root instead, where they stay inside.
            dirs.extend(JournalDir::open_without_links(journal_root, &rel));
            if let Some(croot) = container_root {
                dirs.extend(JournalDir::open(croot, &rel));
            }
        }
        read_tail(&dirs, None, n, since_usec, LogSource::Container, &mut lines).map_err(
            |source| JournalError::Read {
                which: "container",
                source,
            },
        )?;
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

/// A machine id in canonical form (32 lowercase hex digits), if `s` is one.
fn parse_machine_id(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// A journal directory, opened with its symlinks resolved inside its root and
/// kept open (as a descriptor) while the journal files are discovered.
struct JournalDir {
    /// Keeps the `/proc/self/fd/N` path valid.
    _fd: Option<File>,
    path: PathBuf,
}

impl JournalDir {
    /// `root/rel`, if it exists and is a directory, links in `rel` resolved
    /// inside `root`.
    fn open(root: &Path, rel: &str) -> Option<JournalDir> {
        Self::open_with(root, rel, nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT)
    }

    /// `root/rel`, if it exists and is a directory reached without any link.
    fn open_without_links(root: &Path, rel: &str) -> Option<JournalDir> {
        Self::open_with(root, rel, nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS)
    }

    fn open_with(root: &Path, rel: &str, resolve: nix::fcntl::ResolveFlag) -> Option<JournalDir> {
        use nix::fcntl::{OFlag, OpenHow, openat2};
        let root_dir = File::open(root).ok()?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(resolve);
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
            // No openat2 (kernel < 5.6): the plain path, symlinks resolved by
            // the kernel against our own root.
            Err(nix::errno::Errno::ENOSYS) => {
                let path = root.join(rel);
                let dir = if resolve.contains(nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS) {
                    path.symlink_metadata().is_ok_and(|m| m.is_dir())
                } else {
                    path.is_dir()
                };
                dir.then_some(JournalDir { _fd: None, path })
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
    let mut q = journal.query();
    if let Some(unit) = unit {
        q.match_unit(unit);
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
    let mut message = if raw.len() > MAX_MESSAGE_BYTES {
        let mut m = String::from_utf8_lossy(&raw[..MAX_MESSAGE_BYTES]).into_owned();
        m.push('…');
        m
    } else {
        String::from_utf8_lossy(raw).into_owned()
    };
    while message.ends_with('\n') {
        message.pop();
    }
    LogLine {
        timestamp_usec: entry.realtime_usec(),
        source,
        unit: field(entry, "UNIT").or_else(|| field(entry, "_SYSTEMD_UNIT")),
        identifier: field(entry, "SYSLOG_IDENTIFIER").or_else(|| field(entry, "_COMM")),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(dir.path()),
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
                None,
                "container@x.service",
                5,
                None
            ),
            Err(JournalError::InvalidArgument(_))
        ));
        assert!(matches!(
            container_logs(dir.path(), None, None, "", 5, None),
            Err(JournalError::InvalidArgument(_))
        ));
    }

    #[test]
    fn zero_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = container_logs(dir.path(), None, None, "u.service", 0, None).expect("ok");
        assert!(lines.is_empty());
    }
}
