//! Daemon benchmark (prints numbers; not a test). Needs root: it boots one
//! sandbox appliance with the daemon and measures, with 1, 10 and 50 running
//! containers, the latency of listing containers three ways:
//!   (a) voxnix's API (`Manager.List`),
//!   (b) the floor: a bare zbus client doing ListMachines plus
//!       GetMachineAddresses per machine,
//!   (c) the earlier project's way: `machinectl list --output=json` plus one
//!       `machinectl show` per container, as subprocesses;
//! how long an address added inside a container takes to show in `List`;
//! the start latency of voxnix (`Manager.Start`) against a bare StartUnit
//! waited for through JobRemoved; and the daemon's RSS idle and with 50
//! containers.
//!
//! Run: `cargo bench --bench daemon` (as root, after ./scripts/host-setup.sh).

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use voxnix::api::client::ManagerProxy;
use voxnix::sandbox::Sandbox;
use zbus_systemd::{machine1, systemd1};

const LIST_ROUNDS: usize = 30;
const START_ROUNDS: usize = 5;

const READY_ROUNDS: usize = 10;

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    (
        common::percentile(&samples, 0.5),
        common::percentile(&samples, 0.95),
        common::percentile(&samples, 0.0),
    )
}

async fn daemon_rss_kib(sb: &Sandbox, bus: &zbus::Connection) -> u64 {
    common::rss_kib(sb, common::daemon_pid(bus).await)
}

async fn ensure_containers(m: &ManagerProxy<'_>, have: usize, want: usize) {
    for chunk in (have..want).collect::<Vec<_>>().chunks(10) {
        let specs: Vec<String> = chunk
            .iter()
            .map(|i| format!(r#"{{"name":"b{i}"}}"#))
            .collect();
        let done =
            futures_util::future::join_all(specs.iter().map(|s| common::create_wait(m, s))).await;
        for v in done {
            assert_eq!(v["ok"], true, "create failed: {v}");
        }
    }
}

async fn bare_list(machined: &machine1::ManagerProxy<'_>) -> usize {
    let machines = machined.list_machines().await.expect("ListMachines");
    let addrs = futures_util::future::join_all(
        machines
            .iter()
            .filter(|m| m.1 == "container")
            .map(|m| machined.get_machine_addresses(m.0.clone())),
    )
    .await;
    addrs.len()
}

async fn machinectl_list(sb: &Sandbox) {
    let out = sb
        .exec([
            "sh",
            "-c",
            "machinectl list --output=json >/dev/null && for m in $(machinectl list --no-legend | awk '{print $1}'); do machinectl show \"$m\" >/dev/null; done",
        ])
        .await
        .expect("machinectl");
    assert!(out.status.success());
}

async fn bare_start(systemd: &systemd1::ManagerProxy<'_>, unit: &str) -> Duration {
    let mut removed = systemd.receive_job_removed().await.expect("JobRemoved");
    let t = Instant::now();
    let job = systemd
        .start_unit(unit.into(), "replace".into())
        .await
        .expect("StartUnit");
    while let Some(sig) = removed.next().await {
        let a = sig.args().expect("args");
        if a.job == job {
            assert_eq!(a.result, "done");
            break;
        }
    }
    t.elapsed()
}

async fn bare_stop(systemd: &systemd1::ManagerProxy<'_>, unit: &str) {
    let mut removed = systemd.receive_job_removed().await.expect("JobRemoved");
    let job = systemd
        .stop_unit(unit.into(), "replace".into())
        .await
        .expect("StopUnit");
    while let Some(sig) = removed.next().await {
        if sig.args().expect("args").job == job {
            break;
        }
    }
}

fn main() {
    common::block_on(run());
}

async fn run() {
    let sb = common::appliance("max_containers_per_owner = 1000").await;
    let bus = sb.system_bus().await.expect("bus");
    let m = ManagerProxy::new(&bus).await.expect("manager");
    let machined = machine1::ManagerProxy::new(&bus).await.expect("machine1");
    let systemd = systemd1::ManagerProxy::new(&bus).await.expect("systemd1");
    systemd.subscribe().await.expect("Subscribe");

    let rss_idle = daemon_rss_kib(&sb, &bus).await;
    println!(
        "voxnix daemon benchmark (one sandbox appliance, {} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let pid = common::daemon_pid(&bus).await;
    println!("daemon memory idle: {}", common::memory_parts(&sb, pid));
    println!();
    println!("list latency, ms (median / p95 / min over {LIST_ROUNDS} rounds)");
    println!("| running | voxnix API | bare zbus floor | machinectl subprocesses |");
    println!("|--------:|-----------:|----------------:|------------------------:|");
    let mut have = 0;
    for n in [1usize, 10, 50] {
        ensure_containers(&m, have, n).await;
        have = n;
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut c = Vec::new();
        for _ in 0..LIST_ROUNDS {
            let t = Instant::now();
            let text = m.list("").await.expect("List");
            a.push(t.elapsed());
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&text)
                    .expect("json")
                    .as_array()
                    .map(Vec::len),
                Some(n)
            );
            let t = Instant::now();
            assert_eq!(bare_list(&machined).await, n);
            b.push(t.elapsed());
            let t = Instant::now();
            machinectl_list(&sb).await;
            c.push(t.elapsed());
        }
        let f = |s: (f64, f64, f64)| format!("{:.1} / {:.1} / {:.1}", s.0, s.1, s.2);
        println!(
            "| {n:>7} | {} | {} | {} |",
            f(stats(a)),
            f(stats(b)),
            f(stats(c))
        );
    }
    let rss_50 = daemon_rss_kib(&sb, &bus).await;

    // What the view's periodic reconcile asks the host, made by a client
    // the same way (voxnix's own adapters): one ListUnitsByPatterns, one
    // ListMachines, one GetMachine + GetAll per running container.
    // Its own connection: Subscribe() once per connection.
    let own = sb.system_bus().await.expect("bus");
    let host_systemd = voxnix::host::systemd::Systemd::new(&own)
        .await
        .expect("systemd");
    let host_machined = voxnix::host::machined::Machined::new(&own)
        .await
        .expect("machined");
    let mut reconcile = Vec::new();
    for _ in 0..LIST_ROUNDS {
        let t = Instant::now();
        let (units, machines) = tokio::join!(host_systemd.container_units(), host_machined.list());
        assert_eq!(units.expect("units").len(), 50);
        for (name, _) in machines.expect("machines") {
            host_machined.info(&name).await.expect("GetMachine");
        }
        reconcile.push(t.elapsed());
    }
    let (cs, cp, _) = stats(reconcile);
    println!();
    println!(
        "the view's reconcile (every view_reconcile_secs, default 30 s), its host calls with 50 running, ms (median / p95): {cs:.1} / {cp:.1}"
    );

    // An address added inside a container, until List shows it (timed
    // from the end of the exec that added it; List polled back to back).
    let mut seen = Vec::new();
    for i in 0..10u8 {
        let ip = format!("192.0.2.{}", 10 + i);
        m.exec(
            "b0",
            "",
            &["ip", "addr", "add", &format!("{ip}/32"), "dev", "host0"],
            10,
        )
        .await
        .expect("exec");
        let t = Instant::now();
        loop {
            if m.list("").await.expect("List").contains(&ip) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{ip} never listed");
        }
        seen.push(t.elapsed());
        m.exec(
            "b0",
            "",
            &["ip", "addr", "del", &format!("{ip}/32"), "dev", "host0"],
            10,
        )
        .await
        .expect("exec");
    }
    let (ss, sp, _) = stats(seen);
    println!();
    println!(
        "address added inside a container → seen in List, ms (median / p95 over 10): {ss:.1} / {sp:.1}"
    );

    let mut voxnix_start = Vec::new();
    let mut raw_start = Vec::new();
    for _ in 0..START_ROUNDS {
        m.stop("b0", "").await.expect("stop");
        let t = Instant::now();
        m.start("b0", "").await.expect("start");
        voxnix_start.push(t.elapsed());
        bare_stop(&systemd, "container@b0.service").await;
        // Wait until machined has let go before timing the next start.
        while machined.get_machine("b0".into()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        raw_start.push(bare_start(&systemd, "container@b0.service").await);
    }
    let (vs, vp, _) = stats(voxnix_start);
    let (rs, rp, _) = stats(raw_start);
    println!();
    println!("start latency, ms (median / p95 over {START_ROUNDS} rounds, 50 containers running)");
    println!(
        "| voxnix Manager.Start (job + machined registration) | bare StartUnit + JobRemoved |"
    );
    println!("|---:|---:|");
    println!("| {vs:.1} / {vp:.1} | {rs:.1} / {rp:.1} |");
    println!();
    println!(
        "daemon RSS: idle {:.1} MiB, with 50 containers {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss_50 as f64 / 1024.0
    );
    let pid = common::daemon_pid(&bus).await;
    println!(
        "daemon memory with 50 containers: {}",
        common::memory_parts(&sb, pid)
    );

    // Readiness: the daemon restarted with 50 containers to reconcile, from
    // the exec to its READY=1 (systemd's own timestamps: a Type=notify unit
    // turns active on READY), and to its first served List.
    let mut ready = Vec::new();
    let mut first_list = Vec::new();
    for _ in 0..READY_ROUNDS {
        // Restarted back to back, the unit would hit its start limit.
        systemd
            .reset_failed_unit("voxnix.service".into())
            .await
            .expect("reset-failed voxnix");
        let t = Instant::now();
        systemd
            .restart_unit("voxnix.service".into(), "replace".into())
            .await
            .expect("restart voxnix");
        loop {
            let fresh = ManagerProxy::new(&bus).await.expect("manager");
            if fresh.list("").await.is_ok_and(|l| l.contains("b49")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first_list.push(t.elapsed());
        ready.push(common::ready_after_exec(&bus, "voxnix.service").await);
    }
    let (rs, rp, _) = stats(ready);
    let (ls, lp, _) = stats(first_list);
    println!();
    println!(
        "daemon ready with 50 containers, ms (median / p95 over {READY_ROUNDS} restarts): \
         exec → READY=1 {rs:.1} / {rp:.1}; restart asked → first List served {ls:.1} / {lp:.1}"
    );
    drop(m);
    sb.shutdown().expect("shutdown");
}
