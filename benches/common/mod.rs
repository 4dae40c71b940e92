//! Shared by the benchmarks: an appliance with the daemon, and readings of it.
#![allow(dead_code)]

use std::time::Duration;

use voxnix::api::client::ManagerProxy;
use voxnix::sandbox::{Sandbox, SandboxOptions, daemon};
use zbus_systemd::systemd1;

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
    let systemd = systemd1::ManagerProxy::new(bus).await.expect("systemd1");
    let unit = systemd
        .get_unit("voxnix.service".into())
        .await
        .expect("voxnix unit");
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
