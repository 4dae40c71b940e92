//! The cgroup each sandbox runs in.
//!
//! Every appliance gets its own child of the launcher's cgroup2 directory. The
//! appliance's systemd is put in a cgroup namespace rooted there, so it sees a
//! hierarchy of its own: two sandboxes never share a cgroup tree, and tearing one
//! down is "kill everything in this directory, then remove it".

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::SandboxError;

/// Where the cgroup2 hierarchy is mounted on this host (e.g. `/sys/fs/cgroup`
/// or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_mount() -> Result<PathBuf, SandboxError> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| SandboxError::Cgroup(format!("cannot read /proc/self/mountinfo: {e}")))?;
    for line in info.lines() {
        // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPEROPTS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(mp) = left.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(mp));
        }
    }
    Err(SandboxError::Cgroup("no cgroup2 file system is mounted on this host (mount -t cgroup2 none /sys/fs/cgroup/unified)".into()))
}

/// This process's own cgroup2 path, from `/proc/self/cgroup` (`0::/path`).
fn own_cgroup() -> Result<String, SandboxError> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| SandboxError::Cgroup(format!("cannot read /proc/self/cgroup: {e}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
        .ok_or_else(|| SandboxError::Cgroup("this process has no cgroup2 membership".into()))
}

/// Creates `<cgroup2>/<own cgroup>/voxnix-sandbox-<id>` and returns its path.
pub fn create(id: &str) -> Result<PathBuf, SandboxError> {
    let base = cgroup2_mount()?;
    let own = own_cgroup()?;
    let own = own.trim_start_matches('/');
    let dir = base.join(own).join(format!("voxnix-sandbox-{id}"));
    fs::create_dir(&dir).map_err(|e| {
        SandboxError::Cgroup(format!("cannot create cgroup {}: {e}", dir.display()))
    })?;
    Ok(dir)
}

/// Kills every process in the cgroup subtree and removes it, deepest first.
/// Idempotent: a cgroup that is already gone is success.
pub fn destroy(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // cgroup.kill (Linux 5.14+) kills the whole subtree atomically.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match remove_tree(dir) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("cgroup {} not removable yet: {e}", dir.display());
                let _ = fs::write(dir.join("cgroup.kill"), "1");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
