//! Leak check (prints numbers; not a test). As root: boots one appliance with
//! the daemon and runs create/destroy cycles in a row (VOXNIX_CYCLES, default
//! 500), counting before and after everything a cycle could leak: loaded
//! container units, machines, conf files, unit drop-ins, records, mounts in the
//! appliance, and the daemon's open fds and RSS.
//!
//! Run: `cargo bench --bench cycles`.

mod common;

use std::time::Instant;

use voxnix::api::client::ManagerProxy;
use voxnix::sandbox::Sandbox;
use zbus_systemd::{machine1, systemd1};

/// No workspace: a destroyed container's workspace is kept on purpose (for
/// the retention period), which would grow by design with every cycle; this
/// benchmark looks for what the daemon leaks, not for what it keeps.
const SPEC: &str = r#"{"name":"cyc","workspace":false}"#;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn count_dir(sb: &Sandbox, dir: &str) -> usize {
    std::fs::read_dir(sb.root().join(dir))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn counts(sb: &Sandbox, bus: &zbus::Connection, pid: u32) -> Vec<(&'static str, usize)> {
    let systemd = systemd1::ManagerProxy::new(bus).await.expect("systemd1");
    let machined = machine1::ManagerProxy::new(bus).await.expect("machine1");
    let units = systemd
        .list_units_by_patterns(vec![], vec!["container@*".into()])
        .await
        .expect("units")
        .len();
    let machines = machined
        .list_machines()
        .await
        .expect("machines")
        .iter()
        .filter(|m| m.1 == "container")
        .count();
    let mounts = std::fs::read_to_string(sb.root().join(format!("proc/{pid}/mountinfo")))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    vec![
        ("container units loaded", units),
        ("machines", machines),
        ("conf files", count_dir(sb, "etc/nixos-containers")),
        (
            "unit drop-in dirs",
            count_dir(sb, "etc/systemd/system.control"),
        ),
        ("records", count_dir(sb, "var/lib/voxnix/containers")),
        ("mounts (daemon's view)", mounts),
        ("daemon open fds", common::open_fds(sb, pid)),
        ("daemon RSS KiB", common::rss_kib(sb, pid) as usize),
    ]
}

async fn run() {
    let cycles: usize = std::env::var("VOXNIX_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let sb = common::appliance("").await;
    let bus = sb.system_bus().await.expect("bus");
    let m = ManagerProxy::new(&bus).await.expect("manager");
    let pid = common::daemon_pid(&bus).await;
    // One warm-up cycle so lazily loaded state (unit template, caches) is in both counts.
    assert_eq!(common::create_wait(&m, SPEC).await["ok"], true);
    m.destroy("cyc", "").await.expect("destroy");
    let before = counts(&sb, &bus, pid).await;
    let t = Instant::now();
    for i in 0..cycles {
        let v = common::create_wait(&m, SPEC).await;
        assert_eq!(v["ok"], true, "cycle {i}: {v}");
        m.destroy("cyc", "")
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: destroy: {e}"));
    }
    let elapsed = t.elapsed();
    let after = counts(&sb, &bus, pid).await;
    println!(
        "{cycles} create/destroy cycles in {:.1} s ({:.0} ms a cycle)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / cycles as f64
    );
    println!("| what | before | after |");
    println!("|---|---:|---:|");
    for ((what, b), (_, a)) in before.iter().zip(after.iter()) {
        println!("| {what} | {b} | {a} |");
    }
    sb.shutdown().expect("shutdown");
}
