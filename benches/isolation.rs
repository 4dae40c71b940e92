//! What isolating owners from each other costs (prints numbers; not a test).
//! Needs root: one sandbox appliance with the daemon and 10 running
//! containers. It measures, each with the bridge filter
//! (data/nftables/bridge-filter.nft, with its set of leases) loaded and then
//! removed:
//!   (a) UDP round trips from a container to an echo server on the gateway
//!       (every frame from the container crosses the filter's rules and the
//!       lease lookup),
//!   (b) `Manager.List` and `Manager.Start` (stop, then start);
//! and the per-start cost of setting the owner's totals on their slice (one
//! `SetUnitProperties` on `machine-voxnix-<owner>.slice`).
//!
//! Run: `cargo bench --bench isolation` (as root, after ./scripts/host-setup.sh).

mod common;

use std::time::{Duration, Instant};

use voxnix::api::client::ManagerProxy;
use voxnix::sandbox::Sandbox;
use zbus_systemd::systemd1;

const ROUNDS: usize = 20;
const START_ROUNDS: usize = 5;

fn median_p95(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "{:.2} / {:.2}",
        common::percentile(&samples, 0.5),
        common::percentile(&samples, 0.95)
    )
}

async fn sh(sb: &Sandbox, script: &str) -> String {
    let out = sb.exec(["sh", "-c", script]).await.expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Microseconds per UDP round trip to an echo server on the gateway, from
/// inside `name` (median of 1000).
async fn round_trip_us(m: &ManagerProxy<'_>, name: &str) -> String {
    let script = "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(2)\nrtt = []\nfor _ in range(1000):\n    t = time.perf_counter()\n    s.sendto(b'x', ('10.100.0.1', 9997))\n    s.recvfrom(10)\n    rtt.append(time.perf_counter() - t)\nrtt.sort()\nprint('%.0f' % (rtt[500] * 1e6))";
    let (_, out, err, _) = m
        .exec(name, "", &["python3", "-c", script], 60)
        .await
        .expect("exec");
    let text = String::from_utf8_lossy(&out).trim().to_string();
    if text.is_empty() {
        String::from_utf8_lossy(&err).trim().to_string()
    } else {
        text
    }
}

async fn measure(sb: &Sandbox, m: &ManagerProxy<'_>, label: &str) {
    let connect = round_trip_us(m, "i0").await;
    let mut list = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        m.list("").await.expect("List");
        list.push(t.elapsed());
    }
    let mut start = Vec::new();
    for _ in 0..START_ROUNDS {
        m.stop("i1", "").await.expect("stop");
        let t = Instant::now();
        m.start("i1", "").await.expect("start");
        start.push(t.elapsed());
    }
    let rules = sh(sb, "nft list ruleset bridge | grep -c drop || true").await;
    println!(
        "| {label} ({} drop rules) | {connect} | {} | {} |",
        rules.trim(),
        median_p95(list),
        median_p95(start)
    );
}

fn main() {
    common::block_on(run());
}

async fn run() {
    let sb = common::appliance("").await;
    let bus = sb.system_bus().await.expect("bus");
    let m = ManagerProxy::new(&bus).await.expect("manager");
    for i in 0..10 {
        let v = common::create_wait(&m, &format!(r#"{{"name":"i{i}"}}"#)).await;
        assert_eq!(v["ok"], true, "{v}");
    }
    println!(
        "voxnix isolation benchmark (one sandbox appliance, 10 containers, {} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    // A UDP echo server on the gateway, for the round trips.
    sh(
        &sb,
        "systemd-run --unit=echo python3 -c \"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('10.100.0.1', 9997))\nwhile True:\n    d, p = s.recvfrom(10)\n    s.sendto(d, p)\"",
    )
    .await;
    println!(
        "| bridge filter | UDP round trip to the gateway, µs (median of 1000) | List, ms (median / p95) | Start, ms (median / p95) |"
    );
    println!("|---|---:|---:|---:|");
    measure(&sb, &m, "loaded").await;
    sh(&sb, "nft delete table bridge voxnix").await;
    measure(&sb, &m, "removed").await;
    sh(
        &sb,
        "nft -f /usr/lib/voxnix-sandbox/bridge-filter.nft && /usr/lib/voxnix-sandbox/lease-hook.sh reload /run/voxnix-sandbox-dnsmasq.leases",
    )
    .await;

    let systemd = systemd1::ManagerProxy::new(&bus).await.expect("systemd1");
    let mut totals = Vec::new();
    for _ in 0..ROUNDS {
        let props: Vec<(String, zbus::OwnedVariant)> = vec![
            ("CPUWeight".into(), zbus::OwnedVariant::from(100u64)),
            ("TasksMax".into(), zbus::OwnedVariant::from(16384u64)),
        ];
        let t = Instant::now();
        systemd
            .set_unit_properties("machine-voxnix-unix:0.slice".into(), false, props)
            .await
            .expect("SetUnitProperties");
        totals.push(t.elapsed());
    }
    println!();
    println!(
        "owner's totals on their slice, per start (SetUnitProperties, persistent): {} ms (median / p95 over {ROUNDS})",
        median_p95(totals)
    );
    drop(m);
    sb.shutdown().expect("shutdown");
}
