//! Getting into a container and sharing its ports (issue 18), in a real
//! appliance with the real daemon, nspawn containers and nspawn's own port
//! forwarding.

mod common;

use common::daemon::Appliance;
use serde_json::Value;

fn kind(e: &zbus::Error) -> String {
    voxnix::api::client::error_parts(e).0
}

/// A web server in `name` on port 8080 whose page says `who`.
async fn serve(app: &Appliance, name: &str, owner: &str, who: &str) {
    let out = app.run_in(
        name,
        owner,
        &format!(
            "mkdir -p /srv/www && echo {who} > /srv/www/index.html && \
             systemd-run --unit=web-$$ python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/www && \
             for i in $(seq 50); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8080), 1)\" 2>/dev/null && break; sleep 0.1; done; echo up"
        ),
    )
    .await;
    assert!(out.contains("up"), "{out}");
}

/// An HTTP GET of the host's bridge address at `port`, from the appliance.
fn fetch(port: u16) -> String {
    format!(
        "python3 -c \"import urllib.request\ntry:\n    print(urllib.request.urlopen('http://10.100.0.1:{port}/index.html', timeout=3).read().decode())\nexcept Exception as e:\n    print('failed', e)\" 2>&1"
    )
}

/// A port of the range is forwarded, by nspawn, to the container it was
/// exposed for and to no other; the limits, the range and other owners'
/// containers are enforced, and a destroy gives the port back.
#[tokio::test]
async fn an_exposed_host_port_reaches_its_container_and_only_it() {
    let app =
        Appliance::boot("expose_host_ports = \"20000-20002\"\nexpose_max_per_owner = 2\n").await;
    for (name, owner) in [("alice", "telegram:1"), ("bob", "telegram:2")] {
        assert_eq!(
            app.create(&format!(r#"{{"name":"{name}"}}"#), owner).await["ok"],
            true
        );
    }
    let m = app.manager().await;
    let r: Value = serde_json::from_str(
        &m.expose("alice", "telegram:1", 8080, "host", 0)
            .await
            .expect("expose"),
    )
    .expect("json");
    assert_eq!(r["exposure"]["host_port"], 20000, "{r}");
    assert_eq!(r["pending_restart"], true, "alice runs: {r}");
    let status: Value =
        serde_json::from_str(&m.status("alice", "telegram:1").await.expect("status"))
            .expect("json");
    assert_eq!(status["exposed"][0]["pending_restart"], true, "{status}");
    let conf = app.sh("cat /etc/nixos-containers/alice.conf").await;
    assert!(conf.contains("HOST_PORT=tcp:20000:8080"), "{conf}");

    // Another owner: not their container, not a taken port, not outside the range.
    let e = m
        .expose("alice", "telegram:2", 8081, "host", 0)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "NotFound", "{e}");
    let e = m
        .expose("bob", "telegram:2", 8080, "host", 20000)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "Conflict", "{e}");
    let e = m
        .expose("bob", "telegram:2", 8080, "host", 30000)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "InvalidArgument", "{e}");
    // The per-owner limit (2).
    m.expose("alice", "telegram:1", 9000, "host", 0)
        .await
        .expect("second");
    let e = m
        .expose("alice", "telegram:1", 9001, "host", 0)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "QuotaExceeded", "{e}");
    m.unexpose("alice", "telegram:1", 9000, "")
        .await
        .expect("unexpose");

    // From its next start, nspawn forwards the port.
    m.restart("alice", "telegram:1").await.expect("restart");
    let status: Value =
        serde_json::from_str(&m.status("alice", "telegram:1").await.expect("status"))
            .expect("json");
    assert_eq!(status["exposed"][0]["pending_restart"], false, "{status}");
    serve(&app, "alice", "telegram:1", "alice-page").await;
    serve(&app, "bob", "telegram:2", "bob-page").await;
    let mut page = String::new();
    for _ in 0..50 {
        page = app.sh(&fetch(20000)).await;
        if page.contains("-page") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        page.contains("alice-page"),
        "through host port 20000: {page:?}"
    );
    // Bob's 8080 is not on the host: no other host port of the range answers.
    for p in [20001, 20002] {
        let other = app.sh(&fetch(p)).await;
        assert!(!other.contains("bob-page"), "port {p}: {other}");
    }

    // A destroy takes the exposure with it: Bob may then have the port.
    m.destroy("alice", "telegram:1").await.expect("destroy");
    let r: Value = serde_json::from_str(
        &m.expose("bob", "telegram:2", 8080, "host", 20000)
            .await
            .expect("the port is free again"),
    )
    .expect("json");
    assert_eq!(r["exposure"]["host_port"], 20000, "{r}");
    // A tailnet exposure needs the tailscale module.
    let e = m
        .expose("bob", "telegram:2", 3000, "tailnet", 0)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "InvalidArgument", "{e}");
}

/// Keys registered once reach the owner's running ssh containers at once
/// (root's authorized keys, written inside the container), and a removed
/// one leaves; another owner's container never gets them. `connect` pins
/// the host key the container has, parsed: what its root writes around it
/// (a forged ssh_config line) never reaches the block.
#[tokio::test]
async fn keys_reach_the_owners_containers_and_connect_pins_the_host_key() {
    let app = Appliance::boot("").await;
    for (name, owner) in [("alice", "telegram:1"), ("bob", "telegram:2")] {
        let spec = format!(r#"{{"name":"{name}","modules":["ssh"]}}"#);
        assert_eq!(app.create(&spec, owner).await["ok"], true);
        // What modules/ssh.nix's unit makes at boot (the sandbox boots
        // Debian's /usr, not the module).
        app.run_in(name, owner, "mkdir -p -m 0755 /run/voxnix/authorized_keys")
            .await;
    }
    let key = app
        .sh("rm -f /root/id && ssh-keygen -q -t ed25519 -N '' -C alice@laptop -f /root/id && cat /root/id.pub")
        .await;
    let key = key.trim();
    let out = app
        .cli(&["--as", "telegram:1", "keys", "add", "/root/id.pub"])
        .await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("updated now: alice"), "{said}");
    let inside = app
        .run_in(
            "alice",
            "telegram:1",
            "cat /run/voxnix/authorized_keys/root",
        )
        .await;
    assert_eq!(inside.trim(), key, "alice's root keys");
    let bobs = app
        .run_in(
            "bob",
            "telegram:2",
            "cat /run/voxnix/authorized_keys/root 2>&1; true",
        )
        .await;
    assert!(!bobs.contains(key), "bob got alice's key: {bobs}");
    // The private half is refused.
    let out = app
        .cli(&["--as", "telegram:1", "keys", "add", "/root/id"])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("private key"));
    let listed = app
        .cli(&["--as", "telegram:1", "--json", "keys", "list"])
        .await;
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // connect: no host key yet, then the one the container has.
    let m = app.manager().await;
    let e = m.connect("alice", "telegram:1").await.unwrap_err();
    assert_eq!(kind(&e), "Busy", "{e}");
    let host_key = app.run_in(
        "alice",
        "telegram:1",
        "mkdir -p /etc/ssh && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && \
         cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub && \
         printf 'Host *\\n  ProxyCommand touch /tmp/pwned\\n' >> /etc/ssh/ssh_host_ed25519_key.pub",
    )
    .await;
    let c: Value = serde_json::from_str(&m.connect("alice", "telegram:1").await.expect("connect"))
        .expect("json");
    assert_eq!(c["host_key"], host_key.trim(), "{c}");
    assert_eq!(
        c["known_hosts"],
        format!("alice.voxnix {}", host_key.trim())
    );
    assert_eq!(c["via"], "host");
    let block = c["ssh_config"].as_str().unwrap_or("");
    assert!(block.contains("ProxyJump "), "{block}");
    assert!(block.contains("HostName 10.100.0."), "{block}");
    assert!(!block.contains("ProxyCommand"), "{block}");
    let e = m.connect("alice", "telegram:2").await.unwrap_err();
    assert_eq!(kind(&e), "NotFound", "{e}");

    // Removed: gone from the running container at once.
    let out = app
        .cli(&["--as", "telegram:1", "keys", "remove", "alice@laptop"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inside = app
        .run_in(
            "alice",
            "telegram:1",
            "cat /run/voxnix/authorized_keys/root",
        )
        .await;
    assert!(!inside.contains(key), "{inside}");
    let e = m
        .remove_key("alice@laptop", "telegram:1")
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "NotFound", "{e}");
}
