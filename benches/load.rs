//! Load benchmark (prints numbers; not a test). As root: boots one appliance
//! with the daemon and 20 containers, then runs 200 concurrent clients, each
//! on its own bus connection, doing a mix of List, Status and Logs for a fixed
//! time (VOXNIX_LOAD_SECS, default 60), in rounds (VOXNIX_LOAD_ROUNDS,
//! default 2) with fresh clients each. Prints, per round, throughput, p50/p99
//! latency per method and errors, and the daemon's RSS and open fds before and
//! after: growth in the first round and none after is warm-up (buffers and
//! allocator arenas sized for 200 clients); growth every round is a leak.
//!
//! Run: `cargo bench --bench load`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use voxnix::api::client::ManagerProxy;

const CONTAINERS: usize = 20;
const CLIENTS: usize = 200;

fn main() {
    common::block_on(run());
}

#[derive(Default)]
struct Tally {
    lat: [Vec<Duration>; 3],
    errors: Vec<String>,
}

async fn run() {
    let secs: u64 = std::env::var("VOXNIX_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let sb = common::appliance("max_containers_per_owner = 100").await;
    let bus = sb.system_bus().await.expect("bus");
    let m = ManagerProxy::new(&bus).await.expect("manager");
    for chunk in (0..CONTAINERS).collect::<Vec<_>>().chunks(10) {
        let specs: Vec<String> = chunk
            .iter()
            .map(|i| format!(r#"{{"name":"l{i}"}}"#))
            .collect();
        for v in
            futures_util::future::join_all(specs.iter().map(|s| common::create_wait(&m, s))).await
        {
            assert_eq!(v["ok"], true, "{v}");
        }
    }
    let pid = common::daemon_pid(&bus).await;
    let rounds: usize = std::env::var("VOXNIX_LOAD_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    println!(
        "load: {CLIENTS} clients, {CONTAINERS} running containers, {rounds} rounds of {secs} s"
    );
    let bus_pid = common::main_pid(&bus, "dbus.service").await;
    let mut readings = vec![(common::rss_kib(&sb, pid), common::open_fds(&sb, pid))];
    for round in 1..=rounds {
        let cpu = (common::cpu_time(&sb, pid), common::cpu_time(&sb, bus_pid));
        let t = load_round(&sb, secs).await;
        let used = (
            common::cpu_time(&sb, pid) - cpu.0,
            common::cpu_time(&sb, bus_pid) - cpu.1,
        );
        readings.push((common::rss_kib(&sb, pid), common::open_fds(&sb, pid)));
        let total: usize = t.lat.iter().map(Vec::len).sum();
        print_round(round, secs, t);
        // Where the two CPUs went: the daemon, the bus daemon relaying every
        // call, and (the rest) the 200 clients and the containers.
        println!(
            "CPU: daemon {:.1} s ({:.0} µs a request), dbus-daemon {:.1} s ({:.0} µs a request), of {secs} s × {} CPUs",
            used.0.as_secs_f64(),
            used.0.as_secs_f64() * 1e6 / total.max(1) as f64,
            used.1.as_secs_f64(),
            used.1.as_secs_f64() * 1e6 / total.max(1) as f64,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
    }
    println!();
    println!(
        "| daemon | before | {} |",
        (1..=rounds)
            .map(|r| format!("after round {r}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---:|{}", "---:|".repeat(rounds));
    let rss: Vec<String> = readings
        .iter()
        .map(|r| format!("{:.1}", r.0 as f64 / 1024.0))
        .collect();
    let fds: Vec<String> = readings.iter().map(|r| r.1.to_string()).collect();
    println!("| RSS MiB | {} |", rss.join(" | "));
    println!("| open fds | {} |", fds.join(" | "));
    sb.shutdown().expect("shutdown");
}

/// One round: CLIENTS fresh clients, each on its own connection, for `secs`.
async fn load_round(sb: &voxnix::sandbox::Sandbox, secs: u64) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let addr = sb.bus_address();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let conn = zbus::connection::Builder::address(addr.as_str())
                .build()
                .await
                .expect("client connection");
            let m = ManagerProxy::new(&conn).await.expect("proxy");
            let mut local = Tally::default();
            let mut i = c;
            while Instant::now() < deadline {
                let name = format!("l{}", i % CONTAINERS);
                let kind = i % 3;
                let t = Instant::now();
                let r = match kind {
                    0 => m.list("").await.map(|_| ()),
                    1 => m.status(&name, "").await.map(|_| ()),
                    _ => m.logs(&name, "", 50).await.map(|_| ()),
                };
                local.lat[kind].push(t.elapsed());
                if let Err(e) = r {
                    local.errors.push(e.to_string());
                }
                i += 7;
            }
            let mut t = tally.lock().await;
            for k in 0..3 {
                t.lat[k].append(&mut local.lat[k]);
            }
            t.errors.append(&mut local.errors);
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    Arc::try_unwrap(tally)
        .map(Mutex::into_inner)
        .unwrap_or_default()
}

fn print_round(round: usize, secs: u64, mut t: Tally) {
    let total: usize = t.lat.iter().map(Vec::len).sum();
    println!();
    println!(
        "round {round}: {total} requests ({:.0}/s), errors: {}",
        total as f64 / secs as f64,
        t.errors.len()
    );
    println!("| method | calls | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (k, name) in ["List", "Status", "Logs(50)"].iter().enumerate() {
        t.lat[k].sort();
        let l = &t.lat[k];
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            l.len(),
            common::percentile(l, 0.5),
            common::percentile(l, 0.99),
            common::percentile(l, 1.0)
        );
    }
    if let Some(e) = t.errors.first() {
        println!("first error: {e}");
    }
}
