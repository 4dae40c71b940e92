//! Shared by the benchmarks: an appliance with the daemon, and readings of it.
#![allow(dead_code)]

use std::time::Duration;

use voxnix::api::client::ManagerProxy;
use voxnix::sandbox::{Sandbox, SandboxOptions, daemon};
use zbus_systemd::systemd1;

/// Runs a benchmark's `run` on a multi-threaded runtime (every bench's main).
pub fn block_on(run: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run);
}

pub async fn appliance(extra_config: &str) -> Sandbox {
    let mut opts = SandboxOptions::default();
    daemon::install(
        &mut opts,
        std::path::Path::new(env!("CARGO_BIN_EXE_voxnix")),
        &daemon::sandbox_config(extra_config),
    );
    Sandbox::boot_with(opts)
        .await
        .expect("boot an appliance with the daemon")
}

/// The daemon's PID inside the appliance.
pub async fn daemon_pid(bus: &zbus::Connection) -> u32 {
    main_pid(bus, "voxnix.service").await
}

/// A service's main PID inside the appliance.
pub async fn main_pid(bus: &zbus::Connection, unit: &str) -> u32 {
    let systemd = systemd1::ManagerProxy::new(bus).await.expect("systemd1");
    let unit = systemd.get_unit(unit.into()).await.expect("unit");
    let svc = systemd1::ServiceProxy::builder(bus)
        .path(unit)
        .build()
        .await
        .expect("service");
    svc.main_pid().await.expect("MainPID")
}

pub fn rss_kib(sb: &Sandbox, pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(sb.root().join(format!("proc/{pid}/status"))).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn open_fds(sb: &Sandbox, pid: u32) -> usize {
    std::fs::read_dir(sb.root().join(format!("proc/{pid}/fd")))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub async fn create_wait(m: &ManagerProxy<'_>, spec: &str) -> serde_json::Value {
    let op = m.create(spec, "").await.expect("create accepted");
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&m.get_operation(&op, "").await.expect("op")).expect("json");
        if v["done"] == true {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

/// Where a process's resident memory is: anonymous (heap, stacks) and
/// file-backed (the binary's and libraries' pages), and its threads.
pub fn memory_parts(sb: &Sandbox, pid: u32) -> String {
    let read = |f: &str| std::fs::read_to_string(sb.root().join(format!("proc/{pid}/{f}")));
    let kib = |text: &str, key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    let rollup = read("smaps_rollup").unwrap_or_default();
    let status = read("status").unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    format!(
        "RSS {:.1} MiB = anonymous {:.1} + file {:.1} + shmem {:.1}; {threads} threads",
        kib(&rollup, "Rss:"),
        kib(&rollup, "Anonymous:"),
        kib(&status, "RssFile:"),
        kib(&status, "RssShmem:"),
    )
}

/// How long after its main process was started a `Type=notify` unit said
/// READY=1 (systemd's monotonic timestamps of both).
pub async fn ready_after_exec(bus: &zbus::Connection, unit: &str) -> Duration {
    let systemd = systemd1::ManagerProxy::new(bus).await.expect("systemd1");
    let path = systemd.get_unit(unit.into()).await.expect("unit");
    let u = systemd1::UnitProxy::builder(bus)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("unit");
    let s = systemd1::ServiceProxy::builder(bus)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("service");
    let active = u
        .active_enter_timestamp_monotonic()
        .await
        .expect("ActiveEnterTimestampMonotonic");
    let exec = s
        .exec_main_start_timestamp_monotonic()
        .await
        .expect("ExecMainStartTimestampMonotonic");
    Duration::from_micros(active.saturating_sub(exec))
}

/// CPU time a process has used (user + system), from /proc/PID/stat.
pub fn cpu_time(sb: &Sandbox, pid: u32) -> Duration {
    let stat =
        std::fs::read_to_string(sb.root().join(format!("proc/{pid}/stat"))).unwrap_or_default();
    // Fields after the command (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat (11 and 12 after ')').
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz.max(1))
}
