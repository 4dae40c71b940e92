//! Helpers shared by the integration tests. Every test here boots real
//! appliances (see docs/testing.md), so it needs root.
#![allow(dead_code)]

pub mod daemon;
pub mod tailscale_fake;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `voxnix` binary built for this test run.
pub fn voxnix_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_voxnix"))
}

/// Everything a sandbox could leave behind on the host, for one sandbox.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub processes: Vec<i32>,
    pub mounts: Vec<String>,
    pub state_dir: bool,
    pub cgroup: bool,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.mounts.is_empty() && !self.state_dir && !self.cgroup
    }
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 2..].chars().next(), Some('Z') | Some('X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// Looks for what a sandbox with this id and init PID may have left.
pub fn leftovers(state_dir: &Path, init_pid: i32, cgroup_name: &str) -> Leftovers {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains(state_dir.to_str().unwrap_or("\u{0}")) || l.contains("voxnix-sandbox")
        })
        .map(str::to_string)
        .collect();
    let processes = if alive(init_pid) {
        vec![init_pid]
    } else {
        vec![]
    };
    let cgroup = find_cgroup(cgroup_name);
    Leftovers {
        processes,
        mounts,
        state_dir: state_dir.exists(),
        cgroup,
    }
}

fn find_cgroup(name: &str) -> bool {
    for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(base).join(name).exists() {
            return true;
        }
    }
    false
}

/// Polls `f` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn sandbox_root() -> PathBuf {
    std::env::var_os("VOXNIX_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/voxnix-sandbox"))
}
