//! One owner against another on a shared appliance (issue 15): each test
//! acts as the attacking owner from inside a real container.

mod common;

use common::daemon::Appliance;
use serde_json::Value;

async fn ipv4_of(app: &Appliance, name: &str, owner: &str) -> String {
    let m = app.manager().await;
    let v: Value =
        serde_json::from_str(&m.status(name, owner).await.expect("status")).expect("json");
    v["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|a| a.starts_with("10.100.0."))
        .unwrap_or_else(|| panic!("{name} has an address: {v}"))
        .to_string()
}

/// `sh -c SCRIPT` in a container, as its owner; stdout.
async fn run(app: &Appliance, name: &str, owner: &str, script: &str) -> String {
    let m = app.manager().await;
    let (_, out, err, _) = m
        .exec(name, owner, &["sh", "-c", script], 30)
        .await
        .expect("exec");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    )
}

/// A TCP connect from inside a container, in Python (no tools assumed).
fn connect(ip: &str, port: u16) -> String {
    format!(
        "python3 -c \"import socket; s = socket.socket(); s.settimeout(3)\ntry:\n    s.connect(('{ip}', {port})); print('connected')\nexcept Exception as e:\n    print('refused', e)\""
    )
}

/// All containers share one bridge; nothing stood between them: one owner's
/// root reached another's services directly, and the names containers
/// send were published in DNS. Now the bridge drops container-to-container
/// frames (data/nftables/bridge-filter.nft, loaded as the NixOS module
/// does), and dnsmasq publishes no names; the way out (the gateway, DHCP,
/// DNS) still works.
#[tokio::test]
async fn one_owners_container_cannot_reach_anothers() {
    let app = Appliance::boot("").await;
    for (name, owner) in [("alice", "telegram:1"), ("bob", "telegram:2")] {
        assert_eq!(
            app.create(&format!(r#"{{"name":"{name}"}}"#), owner).await["ok"],
            true
        );
    }
    let bob = ipv4_of(&app, "bob", "telegram:2").await;
    // Bob serves something on all addresses, as code-server does.
    let serving = run(
        &app,
        "bob",
        "telegram:2",
        "systemd-run --unit=web python3 -m http.server 8080 --bind 0.0.0.0 && sleep 1 && echo up",
    )
    .await;
    assert!(serving.contains("up"), "{serving}");
    // The host reaches it (the way an exposed port would)...
    let from_host = app
        .sh(&format!(
            "python3 -c \"import socket; s = socket.create_connection(('{bob}', 8080), 3); print('connected')\" 2>&1"
        ))
        .await;
    assert!(from_host.contains("connected"), "{from_host}");
    // ... Alice's container does not.
    let from_alice = run(&app, "alice", "telegram:1", &connect(&bob, 8080)).await;
    assert!(
        from_alice.contains("refused") && !from_alice.contains("connected"),
        "Alice reached Bob's port: {from_alice}"
    );
    // The way out still works: the gateway's DNS answers over TCP.
    let gateway = run(&app, "alice", "telegram:1", &connect("10.100.0.1", 53)).await;
    assert!(gateway.contains("connected"), "{gateway}");
    // No owner's container name is published by the DHCP server.
    let leases = app.sh("cat /run/voxnix-sandbox-dnsmasq.leases").await;
    assert!(!leases.is_empty(), "leases were handed out");
    for name in ["alice", "bob"] {
        assert!(
            !leases.split_whitespace().any(|w| w == name),
            "{name} is published: {leases}"
        );
    }
    // The filter is the module's ruleset, loaded in the appliance.
    let rules = app.sh("nft list table bridge voxnix").await;
    assert!(
        rules.contains("iifname \"vb-*\" oifname \"vb-*\" drop"),
        "{rules}"
    );
}
