//! System cache benchmark (prints numbers; not a test). Needs root: it boots
//! one sandbox appliance with the daemon and measures the create of a
//! container whose module set is new (a miss: Nix evaluates and builds its
//! system, here the sandbox's builtins-only system derivation) against one
//! whose module set was built before (a hit: no Nix evaluation or build,
//! only its profile pointed at the cached system), with the Nix evaluations
//! and builds each create ran, and a plain start of a stopped container
//! (the floor a hit can reach).
//!
//! Run: `cargo bench --bench cache` (as root, after ./scripts/host-setup.sh).

mod common;

use std::time::{Duration, Instant};

use voxnix::api::client::ManagerProxy;

const ROUNDS: usize = 5;

async fn nix_work(m: &ManagerProxy<'_>) -> (u64, u64) {
    let h: serde_json::Value =
        serde_json::from_str(&m.host_health("").await.expect("health")).expect("json");
    (
        h["systems"]["evaluations"].as_u64().unwrap_or(0),
        h["systems"]["builds"].as_u64().unwrap_or(0),
    )
}

async fn timed_create(m: &ManagerProxy<'_>, spec: &str) -> (Duration, (u64, u64)) {
    let before = nix_work(m).await;
    let t = Instant::now();
    let v = common::create_wait(m, spec).await;
    let took = t.elapsed();
    assert_eq!(v["ok"], true, "create failed: {v}");
    let after = nix_work(m).await;
    (took, (after.0 - before.0, after.1 - before.1))
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    common::percentile(&v, 0.5)
}

async fn run() {
    let sb = common::appliance("").await;
    let bus = sb.system_bus().await.expect("bus");
    let m = ManagerProxy::new(&bus).await.expect("manager");
    // Module sets that are new each round: a miss every time.
    let sets = ["git", "fish", "dev", "ssh", "workspace", "code-server"];
    let mut miss = Vec::new();
    let mut miss_work = Vec::new();
    let mut hit = Vec::new();
    let mut hit_work = Vec::new();
    for i in 0..ROUNDS {
        let modules = format!(r#"["{}"]"#, sets[i % sets.len()]);
        let (t, w) = timed_create(&m, &format!(r#"{{"name":"m{i}","modules":{modules}}}"#)).await;
        miss.push(t);
        miss_work.push(w);
        let (t, w) = timed_create(&m, &format!(r#"{{"name":"h{i}","modules":{modules}}}"#)).await;
        hit.push(t);
        hit_work.push(w);
    }
    let mut start = Vec::new();
    for i in 0..ROUNDS {
        let name = format!("h{i}");
        m.stop(&name, "").await.expect("stop");
        let t = Instant::now();
        m.start(&name, "").await.expect("start");
        start.push(t.elapsed());
    }
    let avg = |w: &[(u64, u64)]| {
        let n = w.len() as f64;
        (
            w.iter().map(|x| x.0).sum::<u64>() as f64 / n,
            w.iter().map(|x| x.1).sum::<u64>() as f64 / n,
        )
    };
    let (me, mb) = avg(&miss_work);
    let (he, hb) = avg(&hit_work);
    println!("system cache, {ROUNDS} rounds, median:");
    println!(
        "  create, cache miss: {:7.1} ms   Nix evaluations {me:.1}, builds {mb:.1} per create",
        median(miss)
    );
    println!(
        "  create, cache hit:  {:7.1} ms   Nix evaluations {he:.1}, builds {hb:.1} per create",
        median(hit)
    );
    println!(
        "  start of a stopped container (the floor): {:7.1} ms",
        median(start)
    );
    sb.shutdown().expect("shutdown");
}

fn main() {
    common::block_on(run());
}
