//! State directories of sandboxes on the host, and the reaping of ones whose
//! launcher died without cleaning up (e.g. killed with SIGKILL).
//!
//! A state directory holds only small files (init script, seed, console log)
//! and an empty mount point: the appliance's whole file system lives in a tmpfs
//! inside its private mount namespace.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use super::{SandboxError, cgroup, io_err};

/// Root of all sandbox state directories (`$VOXNIX_SANDBOX_DIR` or
/// `/var/lib/voxnix-sandbox`).
pub fn root() -> PathBuf {
    std::env::var_os("VOXNIX_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/voxnix-sandbox"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `/proc/<pid>/stat` field 22: start time in clock ticks since boot. With the
/// PID it identifies a process even after PID reuse.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The first process whose parent is `pid`.
pub fn child_of(pid: i32) -> Option<i32> {
    let entries = fs::read_dir("/proc").ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&p| parent_of(p) == Some(pid))
}

/// Creates a fresh state directory owned by this process.
pub fn create(root: &Path) -> Result<(String, PathBuf), SandboxError> {
    fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
    let me = std::process::id() as i32;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{me}-{n}");
    let dir = root.join(&id);
    if dir.exists() {
        // Left by an earlier process with our PID: it is dead (we are alive).
        let _ = fs::remove_dir_all(&dir);
    }
    fs::create_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let owner = format!("{me} {}\n", start_time(me).unwrap_or(0));
    // Atomically: a concurrent reaper must never read a half-written owner.
    crate::atomic_file::write(&dir.join("owner"), owner.as_bytes(), 0o644)
        .map_err(io_err("writing owner"))?;
    Ok((id, dir))
}

pub fn record_cgroup(dir: &Path, cgroup: &Path) -> Result<(), SandboxError> {
    fs::write(dir.join("cgroup"), cgroup.as_os_str().as_encoded_bytes())
        .map_err(io_err("writing cgroup"))
}

pub fn record_init(dir: &Path, pid: i32) -> Result<(), SandboxError> {
    fs::write(dir.join("init-pid"), pid.to_string()).map_err(io_err("writing init-pid"))
}

fn owner_alive(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("owner")) else {
        // Being created right now, or garbage: keep young ones.
        let young = fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < Duration::from_secs(60));
        return young;
    };
    let mut it = text.split_whitespace();
    let (Some(pid), Some(start)) = (it.next(), it.next()) else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<i32>(), start.parse::<u64>()) else {
        return false;
    };
    start_time(pid) == Some(start)
}

/// Removes state directories (and cgroups) of sandboxes whose launcher is gone.
/// Returns how many were reaped.
pub fn reap_stale(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(root) else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() || owner_alive(&dir) {
            continue;
        }
        // A dead launcher's appliance is already dead (PDEATHSIG chain); the
        // cgroup kill is a second line of defence.
        if let Ok(cg) = fs::read_to_string(dir.join("cgroup"))
            && let Err(e) = cgroup::destroy(Path::new(cg.trim()))
        {
            tracing::warn!("cannot remove stale sandbox cgroup {cg}: {e}");
            continue;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!("removed stale sandbox state {}", dir.display());
                reaped += 1;
            }
            Err(e) => tracing::warn!("cannot remove stale sandbox state {}: {e}", dir.display()),
        }
    }
    reaped
}
