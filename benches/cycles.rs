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

/// No workspace by default: a destroyed container's workspace is kept on
/// purpose (for the retention period), which grows by design with every
/// cycle; this benchmark looks for what the daemon leaks, not for what it
/// keeps. VOXNIX_CYCLES_WORKSPACE=1 cycles with a workspace, to see what the
/// kept workspaces cost.
const SPEC: &str = r#"{"name":"cyc","workspace":false}"#;
const SPEC_WORKSPACE: &str = r#"{"name":"cyc"}"#;

fn main() {
    common::block_on(run());
}

fn count_dir(sb: &Sandbox, dir: &str) -> usize {
    std::fs::read_dir(sb.root().join(dir))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn lines(sb: &Sandbox, file: &str) -> usize {
    std::fs::read_to_string(sb.root().join(file))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Bytes under `dir` in the appliance (regular files only).
fn du_kib(sb: &Sandbox, dir: &str) -> usize {
    fn walk(p: &std::path::Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
    (walk(&sb.root().join(dir)) / 1024) as usize
}

async fn counts(sb: &Sandbox, bus: &zbus::Connection, pid: u32) -> Vec<(&'static str, usize)> {
    let systemd = systemd1::ManagerProxy::new(bus).await.expect("systemd1");
    let machined = machine1::ManagerProxy::new(bus).await.expect("machine1");
    let units = systemd
        .list_units_by_patterns(vec![], vec!["container@*".into()])
        .await
        .expect("units")
        .len();
    let all_units = systemd.list_units().await.expect("all units").len();
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
    let threads = count_dir(sb, &format!("proc/{pid}/task"));
    vec![
        ("container units loaded", units),
        ("all units loaded", all_units),
        ("machines", machines),
        ("conf files", count_dir(sb, "etc/nixos-containers")),
        (
            "unit drop-in dirs",
            count_dir(sb, "etc/systemd/system.control"),
        ),
        ("transient units", count_dir(sb, "run/systemd/transient")),
        ("records", count_dir(sb, "var/lib/voxnix/containers")),
        (
            "per-container profiles",
            count_dir(sb, "nix/var/nix/profiles/per-container"),
        ),
        ("GC roots (auto)", count_dir(sb, "nix/var/nix/gcroots/auto")),
        ("store paths", count_dir(sb, "nix/store")),
        ("container roots", count_dir(sb, "var/lib/nixos-containers")),
        (
            "journal KiB",
            du_kib(sb, "var/log/journal") + du_kib(sb, "run/log/journal"),
        ),
        (
            "DHCP leases",
            lines(sb, "run/voxnix-sandbox-dnsmasq.leases"),
        ),
        ("mounts (daemon's view)", mounts),
        (
            "kept workspaces",
            count_dir(sb, "var/lib/voxnix/storage/users/unix-0/kept"),
        ),
        ("daemon open fds", common::open_fds(sb, pid)),
        ("daemon threads", threads),
        ("daemon RSS KiB", common::rss_kib(sb, pid) as usize),
    ]
}

fn print_table(columns: &[(String, Vec<(&'static str, usize)>)]) {
    let head: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    println!("| what | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for (row, (what, _)) in columns[0].1.iter().enumerate() {
        let cells: Vec<String> = columns.iter().map(|c| c.1[row].1.to_string()).collect();
        println!("| {what} | {} |", cells.join(" | "));
    }
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
    let spec = if std::env::var("VOXNIX_CYCLES_WORKSPACE").is_ok_and(|v| v == "1") {
        SPEC_WORKSPACE
    } else {
        SPEC
    };
    println!("spec: {spec}");
    assert_eq!(common::create_wait(&m, spec).await["ok"], true);
    m.destroy("cyc", "").await.expect("destroy");
    let mut columns = vec![("before".to_string(), counts(&sb, &bus, pid).await)];
    // Counts along the way too, so a trend shows (and a run stopped early
    // still says something).
    let every = (cycles / 5).max(1);
    let t = Instant::now();
    let (mut create_ms, mut destroy_ms) = (0.0, 0.0);
    for i in 0..cycles {
        let c = Instant::now();
        let v = common::create_wait(&m, spec).await;
        assert_eq!(v["ok"], true, "cycle {i}: {v}");
        let d = Instant::now();
        m.destroy("cyc", "")
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: destroy: {e}"));
        create_ms += (d - c).as_secs_f64() * 1000.0;
        destroy_ms += d.elapsed().as_secs_f64() * 1000.0;
        if (i + 1) % 10 == 0 {
            eprintln!(
                "cycles {}-{}: create {:.0} ms, destroy {:.0} ms on average",
                i - 8,
                i + 1,
                create_ms / 10.0,
                destroy_ms / 10.0
            );
            (create_ms, destroy_ms) = (0.0, 0.0);
        }
        if (i + 1) % every == 0 && i + 1 < cycles {
            let now = counts(&sb, &bus, pid).await;
            columns.push((format!("after {}", i + 1), now));
        }
    }
    let elapsed = t.elapsed();
    columns.push((format!("after {cycles}"), counts(&sb, &bus, pid).await));
    println!(
        "{cycles} create/destroy cycles in {:.1} s ({:.0} ms a cycle)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / cycles as f64
    );
    print_table(&columns);
    sb.shutdown().expect("shutdown");
}
