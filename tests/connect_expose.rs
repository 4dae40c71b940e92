//! Getting into a container and sharing its ports (issue 18), in a real
//! appliance with the real daemon, nspawn containers and nspawn's own port
//! forwarding.

mod common;

use common::daemon::Appliance;
use serde_json::Value;

fn kind(e: &zbus::Error) -> String {
    voxnix::api::client::error_parts(e).0
}

/// `first` for `telegram:1` and `bob` for `telegram:2`, plain containers.
async fn create_two(app: &Appliance, first: &str) {
    for (name, owner) in [(first, "telegram:1"), ("bob", "telegram:2")] {
        assert_eq!(
            app.create(&format!(r#"{{"name":"{name}"}}"#), owner).await["ok"],
            true
        );
    }
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
    fetch_at("10.100.0.1", port)
}

/// An HTTP GET of `ip:port`, from the appliance.
fn fetch_at(ip: &str, port: u16) -> String {
    format!(
        "python3 -c \"import urllib.request\ntry:\n    print(urllib.request.urlopen('http://{ip}:{port}/index.html', timeout=3).read().decode())\nexcept Exception as e:\n    print('failed', e)\" 2>&1"
    )
}

/// A port of the range is forwarded, by nspawn, to the container it was
/// exposed for and to no other; the limits, the range and other owners'
/// containers are enforced, and a destroy gives the port back.
#[tokio::test]
async fn an_exposed_host_port_reaches_its_container_and_only_it() {
    let app =
        Appliance::boot("expose_host_ports = \"20000-20002\"\nexpose_max_per_owner = 2\n").await;
    create_two(&app, "alice").await;
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
    // Each container's own firewall (NixOS's, which nspawn's DNAT goes
    // through): Alice's exposed port is open in hers, Bob's unexposed one is
    // refused by his, even from the host.
    let alice_ip = app.ipv4_of("alice", "telegram:1").await;
    let bob_ip = app.ipv4_of("bob", "telegram:2").await;
    let direct = app.sh(&fetch_at(&alice_ip, 8080)).await;
    assert!(direct.contains("alice-page"), "{direct}");
    let direct = app.sh(&fetch_at(&bob_ip, 8080)).await;
    assert!(
        direct.contains("failed") && !direct.contains("bob-page"),
        "bob's firewall let it in: {direct}"
    );
    let rules = app
        .run_in(
            "alice",
            "telegram:1",
            "/usr/sbin/iptables-nft -w -S nixos-fw",
        )
        .await;
    assert!(
        rules.contains("--dport 8080 -j nixos-fw-accept") && !rules.contains("--dport 9000"),
        "{rules}"
    );

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

/// systemd loads the expose filter, and would start a container whatever
/// became of it; the daemon never lets a host port be forwarded without it.
/// With the filter's unit failing (as a broken nft or ruleset would), an
/// expose is refused and leaves nothing, and a container that already has
/// a host port is not started; once the filter loads again, both work.
/// Reloaded often, it keeps loading.
#[tokio::test]
async fn a_host_port_is_never_forwarded_without_its_filter() {
    let app = Appliance::boot("expose_host_ports = \"20000-20001\"\n").await;
    assert_eq!(
        app.create(r#"{"name":"alice"}"#, "telegram:1").await["ok"],
        true
    );
    let m = app.manager().await;
    // The daemon restarts the filter's unit at every change: never refused
    // for coming often (systemd's default start limit is 5 in 10 s).
    m.stop("alice", "telegram:1").await.expect("stop");
    for round in 0..4 {
        m.expose("alice", "telegram:1", 8080, "host", 0)
            .await
            .unwrap_or_else(|e| panic!("expose, round {round}: {e}"));
        m.unexpose("alice", "telegram:1", 8080, "")
            .await
            .unwrap_or_else(|e| panic!("unexpose, round {round}: {e}"));
    }
    m.start("alice", "telegram:1").await.expect("start");
    let dropin = "/run/systemd/system/voxnix-expose-filter.service.d";
    let break_filter = format!(
        "mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > {dropin}/broken.conf && systemctl daemon-reload && echo broken"
    );
    let mend_filter = format!("rm -r {dropin} && systemctl daemon-reload && echo mended");
    assert!(app.sh(&break_filter).await.contains("broken"));
    let e = m
        .expose("alice", "telegram:1", 8080, "host", 0)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "HostError", "{e}");
    assert!(e.to_string().contains("filter"), "{e}");
    let status: Value =
        serde_json::from_str(&m.status("alice", "telegram:1").await.expect("status"))
            .expect("json");
    assert_eq!(status["exposed"], serde_json::json!([]), "{status}");
    let conf = app.sh("cat /etc/nixos-containers/alice.conf").await;
    assert!(!conf.contains("HOST_PORT=tcp:"), "{conf}");

    assert!(app.sh(&mend_filter).await.contains("mended"));
    m.expose("alice", "telegram:1", 8080, "host", 0)
        .await
        .expect("expose");
    m.stop("alice", "telegram:1").await.expect("stop");
    assert!(app.sh(&break_filter).await.contains("broken"));
    let e = m.start("alice", "telegram:1").await.unwrap_err();
    assert_eq!(kind(&e), "HostError", "{e}");
    assert!(e.to_string().contains("not started"), "{e}");
    let state = app
        .sh("systemctl is-active container@alice.service; true")
        .await;
    assert_eq!(state.trim(), "inactive", "{state}");

    assert!(app.sh(&mend_filter).await.contains("mended"));
    m.start("alice", "telegram:1").await.expect("start");
    serve(&app, "alice", "telegram:1", "alice-page").await;
    let page = fetch_when_up(&app, 20000).await;
    assert!(page.contains("alice-page"), "{page:?}");
}

/// The per-owner limit counts over all of an owner's containers, each
/// exposed under its own lock: two exposes at once, in two containers,
/// must not both see room for one more.
#[tokio::test]
async fn two_exposes_at_once_stay_within_the_owners_limit() {
    let app =
        Appliance::boot("expose_host_ports = \"20000-20003\"\nexpose_max_per_owner = 1\n").await;
    for name in ["one", "two"] {
        assert_eq!(
            app.create(&format!(r#"{{"name":"{name}"}}"#), "telegram:1")
                .await["ok"],
            true
        );
    }
    let m = app.manager().await;
    for round in 0..3 {
        let (a, b) = tokio::join!(
            m.expose("one", "telegram:1", 8080, "host", 0),
            m.expose("two", "telegram:1", 8080, "host", 0)
        );
        let kinds: Vec<String> = [&a, &b]
            .iter()
            .map(|r| match r {
                Ok(_) => "Ok".to_string(),
                Err(e) => kind(e),
            })
            .collect();
        assert!(
            kinds.contains(&"Ok".to_string()) && kinds.contains(&"QuotaExceeded".to_string()),
            "round {round}: {kinds:?} ({a:?}, {b:?})"
        );
        let mut exposed = 0;
        for name in ["one", "two"] {
            let status: Value =
                serde_json::from_str(&m.status(name, "telegram:1").await.expect("status"))
                    .expect("json");
            exposed += status["exposed"].as_array().map_or(0, Vec::len);
        }
        assert_eq!(exposed, 1, "round {round}: both recorded");
        let held = if a.is_ok() { "one" } else { "two" };
        m.unexpose(held, "telegram:1", 8080, "")
            .await
            .expect("unexpose");
    }
}

/// Fetches `port` until a page answers (the forwarding and the server take
/// a moment after a start), or gives the last failure.
async fn fetch_when_up(app: &Appliance, port: u16) -> String {
    fetch_when_up_at(app, "10.100.0.1", port).await
}

/// [`fetch_when_up`] of `ip:port`.
async fn fetch_when_up_at(app: &Appliance, ip: &str, port: u16) -> String {
    let mut page = String::new();
    for _ in 0..50 {
        page = app.sh(&fetch_at(ip, port)).await;
        if page.contains("-page") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    page
}

/// nspawn keeps forwarding a host port unexposed from a running container
/// until that run ends. Until then the port is held: another owner asking
/// for it is refused and never handed it (their traffic would reach the
/// first container), and it comes free with the first container's restart.
#[tokio::test]
async fn an_unexposed_host_port_is_held_while_its_container_still_forwards_it() {
    let app =
        Appliance::boot("expose_host_ports = \"20000-20001\"\nexpose_max_per_owner = 2\n").await;
    create_two(&app, "alice").await;
    let m = app.manager().await;
    m.expose("alice", "telegram:1", 8080, "host", 20000)
        .await
        .expect("expose");
    m.restart("alice", "telegram:1").await.expect("restart");
    serve(&app, "alice", "telegram:1", "alice-page").await;
    let page = fetch_when_up(&app, 20000).await;
    assert!(page.contains("alice-page"), "{page:?}");

    let r: Value = serde_json::from_str(
        &m.unexpose("alice", "telegram:1", 8080, "")
            .await
            .expect("unexpose"),
    )
    .expect("json");
    assert_eq!(r["pending_restart"], true, "{r}");
    // What the hold is for: the run still forwards the port.
    let page = app.sh(&fetch(20000)).await;
    assert!(page.contains("alice-page"), "{page:?}");
    let status: Value =
        serde_json::from_str(&m.status("alice", "telegram:1").await.expect("status"))
            .expect("json");
    assert_eq!(status["exposed"], serde_json::json!([]), "{status}");
    assert_eq!(
        status["forwarded_until_restart"][0]["host_port"], 20000,
        "{status}"
    );
    let cli = app.cli(&["status", "alice"]).await;
    let cli = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.contains(
            "host port 20000 no longer exposed (forwarded to 8080 until the next restart)"
        ),
        "{cli}"
    );

    // Bob: refused the held port, and handed the other one.
    let e = m
        .expose("bob", "telegram:2", 8080, "host", 20000)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "Conflict", "{e}");
    assert!(e.to_string().contains("next restart"), "{e}");
    let r: Value = serde_json::from_str(
        &m.expose("bob", "telegram:2", 8080, "host", 0)
            .await
            .expect("bob's expose"),
    )
    .expect("json");
    assert_eq!(r["exposure"]["host_port"], 20001, "{r}");
    m.restart("bob", "telegram:2").await.expect("restart bob");
    serve(&app, "bob", "telegram:2", "bob-page").await;
    let page = fetch_when_up(&app, 20001).await;
    assert!(page.contains("bob-page"), "{page:?}");
    let page = app.sh(&fetch(20000)).await;
    assert!(
        page.contains("alice-page"),
        "alice's run still forwards 20000: {page:?}"
    );

    // Alice's restart ends the forwarding and the hold: Bob may have 20000.
    m.restart("alice", "telegram:1")
        .await
        .expect("restart alice");
    let status: Value =
        serde_json::from_str(&m.status("alice", "telegram:1").await.expect("status"))
            .expect("json");
    assert!(status.get("forwarded_until_restart").is_none(), "{status}");
    serve(&app, "alice", "telegram:1", "alice-page").await;
    let page = app.sh(&fetch(20000)).await;
    assert!(
        page.contains("failed") && !page.contains("alice-page"),
        "no longer forwarded: {page:?}"
    );
    m.unexpose("bob", "telegram:2", 8080, "")
        .await
        .expect("bob's unexpose");
    let r: Value = serde_json::from_str(
        &m.expose("bob", "telegram:2", 8080, "host", 20000)
            .await
            .expect("20000 is free"),
    )
    .expect("json");
    assert_eq!(r["exposure"]["host_port"], 20000, "{r}");
}

/// The NAT table nspawn keeps, once it names `needle` (nspawn follows the
/// container's addresses a moment after they change), or as it is then.
async fn nat_when(app: &Appliance, needle: &str) -> String {
    let mut nat = String::new();
    for _ in 0..50 {
        nat = app.sh("nft list table ip io.systemd.nat 2>&1").await;
        if nat.contains(needle) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    nat
}

/// nspawn forwards a host port to the first address in the container's own
/// network namespace, and follows changes there. Mallory's root gives her
/// container Bob's address (and then the host's) and drops her own: nspawn
/// points her host port there. The expose filter lets that traffic reach
/// neither Bob's container nor the host; Bob's own port still works.
#[tokio::test]
async fn a_container_cannot_point_its_host_port_at_a_neighbour_or_the_host() {
    let app =
        Appliance::boot("expose_host_ports = \"20000-20001\"\nexpose_max_per_owner = 2\n").await;
    create_two(&app, "mallory").await;
    let m = app.manager().await;
    m.expose("mallory", "telegram:1", 8080, "host", 20000)
        .await
        .expect("mallory's expose");
    m.expose("bob", "telegram:2", 8080, "host", 20001)
        .await
        .expect("bob's expose");
    let filter = app.sh("nft list table bridge voxnix_expose 2>&1").await;
    assert!(
        filter.contains("\"vb-mallory\" . 0x766e4e20")
            && filter.contains("\"vb-bob\" . 0x766e4e21"),
        "{filter}"
    );
    for (name, owner, who) in [
        ("mallory", "telegram:1", "mallory-page"),
        ("bob", "telegram:2", "bob-page"),
    ] {
        m.restart(name, owner).await.expect("restart");
        serve(&app, name, owner, who).await;
    }
    let page = fetch_when_up(&app, 20000).await;
    assert!(page.contains("mallory-page"), "{page:?}");
    let page = fetch_when_up(&app, 20001).await;
    assert!(page.contains("bob-page"), "{page:?}");
    // And the host serves a page of its own on the same port.
    let up = app
        .sh("mkdir -p /srv/hostwww && echo host-page > /srv/hostwww/index.html && \
             systemd-run --unit=hostweb python3 -m http.server 8080 --bind 10.100.0.1 --directory /srv/hostwww >/dev/null 2>&1; \
             sleep 1; echo started")
        .await;
    assert!(up.contains("started"), "{up}");
    let page = fetch_when_up_at(&app, "10.100.0.1", 8080).await;
    assert!(page.contains("host-page"), "{page:?}");

    let mine = app.ipv4_of("mallory", "telegram:1").await;
    let bob = app.ipv4_of("bob", "telegram:2").await;
    let out = app
        .run_in(
            "mallory",
            "telegram:1",
            &format!(
                "ip addr add {bob}/32 dev lo && ip addr del {mine}/24 dev host0 && echo moved"
            ),
        )
        .await;
    assert!(out.contains("moved"), "{out}");
    // nspawn followed: Mallory's host port is DNAT'd to Bob's address.
    let nat = nat_when(&app, &format!("{bob} . 8080")).await;
    assert!(nat.contains(&format!("{bob} . 8080")), "{nat}");
    for _ in 0..15 {
        let page = app.sh(&fetch(20000)).await;
        assert!(
            !page.contains("bob-page"),
            "Mallory's host port reached Bob's container: {page:?}"
        );
    }
    // Bob's own exposure is untouched.
    let page = app.sh(&fetch(20001)).await;
    assert!(page.contains("bob-page"), "{page:?}");

    // Now at the host's own address.
    let out = app
        .run_in(
            "mallory",
            "telegram:1",
            &format!(
                "ip addr add 10.100.0.1/32 dev lo && ip addr del {bob}/32 dev lo && echo moved"
            ),
        )
        .await;
    assert!(out.contains("moved"), "{out}");
    let nat = nat_when(&app, "10.100.0.1 . 8080").await;
    assert!(nat.contains("10.100.0.1 . 8080"), "{nat}");
    // From the host itself (its own connections go out through
    // postrouting) and from a container (DNAT'd on the way in, they would
    // go straight to the host's input).
    for _ in 0..8 {
        let page = app.sh(&fetch(20000)).await;
        assert!(
            !page.contains("host-page"),
            "Mallory's host port reached the host's own service: {page:?}"
        );
        let page = app.run_in("bob", "telegram:2", &fetch(20000)).await;
        assert!(
            !page.contains("host-page"),
            "from Bob's container, Mallory's host port reached the host's own service: {page:?}"
        );
    }
    let page = app.sh(&fetch(20001)).await;
    assert!(page.contains("bob-page"), "{page:?}");
}

/// `connect` until the container's sshd has made its host key (Busy until then).
async fn connect_when_ready(app: &Appliance, name: &str, owner: &str) -> Value {
    let m = app.manager().await;
    for _ in 0..120 {
        match m.connect(name, owner).await {
            Ok(text) => return serde_json::from_str(&text).expect("connect JSON"),
            Err(e) if kind(&e) == "Busy" => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await
            }
            Err(e) => panic!("connect {name}: {e}"),
        }
    }
    panic!("{name} never got an SSH host key");
}

/// A real `ssh` from the appliance (the person's laptop) with the block and
/// known_hosts line `connect` gave, and the private key `identity`:
/// (success, stdout, stderr). The block's ProxyJump is the appliance itself,
/// where the test already is, so it is turned off on the command line.
async fn ssh(app: &Appliance, c: &Value, identity: &str, command: &str) -> (bool, String, String) {
    let dir = format!("/root/ssh-{}", c["name"].as_str().unwrap_or("x"));
    let script = format!(
        "mkdir -p {dir} && cat > {dir}/config <<'EOF'\n{}EOF\n\
         printf '%s\\n' '{}' > {dir}/known_hosts && \
         ssh -F {dir}/config -o ProxyJump=none -o UserKnownHostsFile={dir}/known_hosts \
             -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes \
             -o ConnectTimeout=10 -i {identity} {} '{command}' > {dir}/out 2> {dir}/err; \
         echo \"rc=$?\"; cat {dir}/out; echo '--stderr--'; cat {dir}/err",
        c["ssh_config"].as_str().unwrap_or(""),
        c["known_hosts"].as_str().unwrap_or(""),
        c["alias"].as_str().unwrap_or(""),
    );
    let out = app.sh(&script).await;
    let (head, rest) = out.split_once('\n').unwrap_or((&out, ""));
    let (stdout, stderr) = rest.split_once("--stderr--\n").unwrap_or((rest, ""));
    (head == "rc=0", stdout.to_string(), stderr.to_string())
}

/// The appliance as the person's jump host: Debian's sshd (the one the
/// sandbox's containers run) on 127.0.0.1:2222, letting in root with the key
/// `identity`.pub and forwarding connections, logging to /root/jump/log.
/// Its `known_hosts` line ("[127.0.0.1]:2222 KEY").
async fn start_jump_host(app: &Appliance, identity: &str) -> String {
    let out = app
        .sh(&format!(
            "set -e; mkdir -p -m 0700 /root/jump; cd /root/jump; \
             ssh-keygen -q -t ed25519 -N '' -f host_key; cp {identity}.pub authorized_keys; \
             printf '%s\\n' 'Port 2222' 'ListenAddress 127.0.0.1' 'HostKey /root/jump/host_key' \
               'AuthorizedKeysFile /root/jump/authorized_keys' 'PermitRootLogin prohibit-password' \
               'PasswordAuthentication no' 'KbdInteractiveAuthentication no' 'UsePAM no' \
               'AllowTcpForwarding yes' 'PidFile none' > sshd_config; \
             systemd-sysusers --inline 'u sshd - \"sshd privilege separation\" /run/sshd'; \
             systemd-run --unit=jump-sshd -p RuntimeDirectory=sshd \
               /usr/local/lib/voxnix-sandbox/sshd -D -f /root/jump/sshd_config -E /root/jump/log; \
             for i in $(seq 50); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 2222), 1)\" 2>/dev/null && break; sleep 0.1; done; \
             echo \"[127.0.0.1]:2222 $(cut -d' ' -f1,2 host_key.pub)\""
        ))
        .await;
    let line = out.lines().last().unwrap_or("").to_string();
    assert!(line.starts_with("[127.0.0.1]:2222 ssh-ed25519 "), "{out}");
    line
}

/// `ssh NAME.voxnix` as the person runs it: the block `connect` gave,
/// untouched (its ProxyJump too), in the config file, and after it only
/// where this person's own key and known hosts are. (success, stdout,
/// stderr).
async fn ssh_as_given(
    app: &Appliance,
    c: &Value,
    jump_known: &str,
    identity: &str,
    command: &str,
) -> (bool, String, String) {
    let dir = format!("/root/ssh-given-{}", c["name"].as_str().unwrap_or("x"));
    let script = format!(
        "mkdir -p {dir} && cat > {dir}/config <<'EOF'\n{}\nHost *\n    UserKnownHostsFile {dir}/known_hosts\n    \
         GlobalKnownHostsFile /dev/null\n    BatchMode yes\n    IdentitiesOnly yes\n    IdentityFile {identity}\n    \
         ConnectTimeout 10\nEOF\n\
         printf '%s\\n' '{}' '{jump_known}' > {dir}/known_hosts && \
         ssh -F {dir}/config {} '{command}' > {dir}/out 2> {dir}/err; \
         echo \"rc=$?\"; cat {dir}/out; echo '--stderr--'; cat {dir}/err",
        c["ssh_config"].as_str().unwrap_or(""),
        c["known_hosts"].as_str().unwrap_or(""),
        c["alias"].as_str().unwrap_or(""),
    );
    let out = app.sh(&script).await;
    let (head, rest) = out.split_once('\n').unwrap_or((&out, ""));
    let (stdout, stderr) = rest.split_once("--stderr--\n").unwrap_or((rest, ""));
    (head == "rc=0", stdout.to_string(), stderr.to_string())
}

/// The whole way in, with real sshd inside real containers: a key
/// registered once lets its owner in as root over ssh with the host key
/// `connect` pinned (StrictHostKeyChecking), reaches the owner's running
/// containers at once and never another owner's; a wrong pinned key is
/// refused by ssh; what the container's root writes around its host key (a
/// forged ssh_config line) never reaches the block; a removed key no longer
/// gets in.
#[tokio::test]
async fn a_registered_key_logs_in_over_ssh_with_the_pinned_host_key() {
    let app = Appliance::boot("connect_jump_host = \"root@127.0.0.1:2222\"\n").await;
    for (name, owner) in [("alice", "telegram:1"), ("bob", "telegram:2")] {
        let spec = format!(r#"{{"name":"{name}","modules":["ssh"]}}"#);
        assert_eq!(app.create(&spec, owner).await["ok"], true);
    }
    // The people's laptops: a key pair each.
    let key = app
        .sh("rm -f /root/id /root/bob-id && ssh-keygen -q -t ed25519 -N '' -C alice@laptop -f /root/id && \
             ssh-keygen -q -t ed25519 -N '' -C bob@laptop -f /root/bob-id && cat /root/id.pub")
        .await;
    let key = key.trim();
    let m = app.manager().await;

    // Before any key: the block comes with a warning that root will not let her in.
    let c = connect_when_ready(&app, "alice", "telegram:1").await;
    assert!(
        c["warning"]
            .as_str()
            .is_some_and(|w| w.contains("keys add")),
        "{c}"
    );
    let (ok, _, err) = ssh(&app, &c, "/root/id", "true").await;
    assert!(
        !ok && err.contains("Permission denied"),
        "in with no key: {err}"
    );

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
    let bob_key = app.sh("cat /root/bob-id.pub").await;
    m.add_key(bob_key.trim(), "telegram:2")
        .await
        .expect("bob's key");
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

    // The host key connect pins is the one alice's sshd made.
    let c = connect_when_ready(&app, "alice", "telegram:1").await;
    assert!(c["warning"].is_null(), "{c}");
    let made = app
        .run_in(
            "alice",
            "telegram:1",
            "cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub",
        )
        .await;
    assert_eq!(c["host_key"], made.trim(), "{c}");
    assert_eq!(c["known_hosts"], format!("alice.voxnix {}", made.trim()));
    assert_eq!(c["via"], "host");
    let block = c["ssh_config"].as_str().unwrap_or("");
    assert!(block.contains("ProxyJump root@127.0.0.1:2222\n"), "{block}");
    assert!(block.contains("HostName 10.100.0."), "{block}");
    assert!(block.contains("StrictHostKeyChecking yes"), "{block}");

    // In, as root, in alice (and ssh checked the pinned key to get there).
    let (ok, out, err) = ssh(&app, &c, "/root/id", "echo in:$(hostname):$(id -u)").await;
    assert!(ok, "alice's ssh: {out} {err}");
    assert_eq!(out.trim(), "in:alice:0", "{err}");
    // The block as given, its ProxyJump through the appliance's own sshd
    // (the administrator's connect_jump_host): the one step from connect
    // to inside.
    let jump_known = start_jump_host(&app, "/root/id").await;
    let (ok, out, err) = ssh_as_given(&app, &c, &jump_known, "/root/id", "hostname").await;
    assert!(
        ok && out.trim() == "alice",
        "through the jump host: {out} {err}"
    );
    let log = app.sh("cat /root/jump/log").await;
    assert!(
        log.contains("Accepted publickey for root from 127.0.0.1"),
        "the jump host was not used: {log}"
    );
    // Bob's key does not open alice; alice's key does not open bob.
    let (ok, _, err) = ssh(&app, &c, "/root/bob-id", "true").await;
    assert!(
        !ok && err.contains("Permission denied"),
        "bob into alice: {err}"
    );
    let bobs = connect_when_ready(&app, "bob", "telegram:2").await;
    let (ok, _, err) = ssh(&app, &bobs, "/root/id", "true").await;
    assert!(
        !ok && err.contains("Permission denied"),
        "alice into bob: {err}"
    );
    let (ok, out, err) = ssh(&app, &bobs, "/root/bob-id", "hostname").await;
    assert!(ok && out.trim() == "bob", "bob's ssh: {out} {err}");
    let inside = app
        .run_in("bob", "telegram:2", "cat /run/voxnix/authorized_keys/root")
        .await;
    assert!(!inside.contains(key), "bob got alice's key: {inside}");
    // A pinned key that is not alice's (bob's, under alice's name): ssh refuses.
    let mut wrong = c.clone();
    wrong["known_hosts"] = Value::String(format!(
        "alice.voxnix {}",
        bobs["host_key"].as_str().unwrap_or("")
    ));
    let (ok, _, err) = ssh(&app, &wrong, "/root/id", "true").await;
    assert!(
        !ok && err.contains("Host key verification failed"),
        "a wrong pinned key: {err}"
    );
    let e = m.connect("alice", "telegram:2").await.unwrap_err();
    assert_eq!(kind(&e), "NotFound", "{e}");

    // Alice's root rewrites her host key files: without a key, connect is
    // Busy; around the key, a forged ssh_config line is not taken.
    app.run_in(
        "alice",
        "telegram:1",
        "mkdir -p /root/keep && mv /etc/ssh/ssh_host_*_key.pub /root/keep/",
    )
    .await;
    let e = m.connect("alice", "telegram:1").await.unwrap_err();
    assert_eq!(kind(&e), "Busy", "{e}");
    app.run_in(
        "alice",
        "telegram:1",
        "mv /root/keep/* /etc/ssh/ && \
         printf 'Host *\\n  ProxyCommand touch /tmp/pwned\\n' >> /etc/ssh/ssh_host_ed25519_key.pub",
    )
    .await;
    let forged = connect_when_ready(&app, "alice", "telegram:1").await;
    assert_eq!(forged["host_key"], c["host_key"], "{forged}");
    let block = forged["ssh_config"].as_str().unwrap_or("");
    assert!(!block.contains("ProxyCommand"), "{block}");

    // With a Tailscale address (given by hand: the sandbox has no
    // tailscaled), the block goes straight there, no jump. The same pinned
    // key: the address never decides which key is trusted.
    let added = app
        .run_in(
            "alice",
            "telegram:1",
            "ip addr add 100.101.102.103/32 dev lo && echo added",
        )
        .await;
    assert!(added.contains("added"), "{added}");
    let ts = connect_when_ready(&app, "alice", "telegram:1").await;
    assert_eq!(ts["via"], "tailnet", "{ts}");
    assert_eq!(ts["host_name"], "100.101.102.103", "{ts}");
    assert!(ts["proxy_jump"].is_null(), "{ts}");
    let block = ts["ssh_config"].as_str().unwrap_or("");
    assert!(
        block.contains("HostName 100.101.102.103\n")
            && block.contains("HostKeyAlias alice.voxnix\n")
            && !block.contains("ProxyJump"),
        "{block}"
    );
    assert_eq!(ts["known_hosts"], c["known_hosts"], "{ts}");
    app.run_in(
        "alice",
        "telegram:1",
        "ip addr del 100.101.102.103/32 dev lo",
    )
    .await;

    // Removed: gone from the running container at once, and ssh no longer gets in.
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
    let (ok, _, err) = ssh(&app, &c, "/root/id", "true").await;
    assert!(
        !ok && err.contains("Permission denied"),
        "in after removal: {err}"
    );
    let e = m
        .remove_key("alice@laptop", "telegram:1")
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "NotFound", "{e}");
}

/// nix/open-exposed-ports.sh, which a container's firewall runs at start
/// (NixOS's extraCommands, the nftables unit, the sandbox's stand-in), with
/// the real iptables and nft, in a network namespace of its own: it opens
/// the listed ports in NixOS's chains, and nothing that is not a whole port
/// number reaches a command.
#[test]
fn the_firewall_script_opens_only_port_numbers() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let marker = dir.path().join("pwned");
    let cred = dir.path().join("voxnix-personal");
    std::fs::write(
        &cred,
        serde_json::json!({
            "git": {"user_name": "Ada"},
            "_voxnix": {"open_tcp_ports": [
                8080, 443, format!("22; touch {}", marker.display()), 70000, 1.5, 0, -1
            ]}
        })
        .to_string(),
    )
    .expect("credential");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/nix/open-exposed-ports.sh");
    let run = format!(
        "set -e
         for t in iptables ip6tables; do $t -w -N nixos-fw-accept; $t -w -N nixos-fw; done
         sh {script} {cred} iptables /usr/bin/jq
         nft add table inet nixos-fw
         nft add chain inet nixos-fw input-allow
         sh {script} {cred} nft /usr/bin/jq
         sh {script} {dir}/absent iptables /usr/bin/jq
         echo '--rules--'
         iptables -w -S nixos-fw; ip6tables -w -S nixos-fw; nft list chain inet nixos-fw input-allow",
        cred = cred.display(),
        dir = dir.path().display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", &run])
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = text.split("--rules--").nth(1).unwrap_or("");
    for port in ["8080", "443"] {
        // IPv4, IPv6, nft: each once.
        assert_eq!(
            rules
                .matches(&format!("--dport {port} -j nixos-fw-accept"))
                .count(),
            2,
            "{rules}"
        );
        assert!(
            rules.contains(&format!("tcp dport {port} accept")),
            "{rules}"
        );
    }
    for not_a_port in ["dport 22", "70000", "dport 0", "dport 1 "] {
        assert!(!rules.contains(not_a_port), "{not_a_port}: {rules}");
    }
    assert!(!marker.exists(), "a string ran as a command");

    // It never fails (a failure would stop NixOS's firewall script before
    // it hooks its chain in): not a list, bad JSON, no IPv6 chain.
    let odd = dir.path().join("odd");
    let run = format!(
        "iptables -w -N nixos-fw-accept; iptables -w -N nixos-fw
         echo '{{\"_voxnix\": \"x\"}}' > {odd}; sh {script} {odd} iptables /usr/bin/jq || echo failed
         echo 'not json' > {odd}; sh {script} {odd} iptables /usr/bin/jq || echo failed
         echo '{{\"_voxnix\": {{\"open_tcp_ports\": [8080]}}}}' > {odd}
         sh {script} {odd} iptables /usr/bin/jq || echo failed
         echo '--rules--'; iptables -w -S nixos-fw",
        odd = odd.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", &run])
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("failed"), "{text}");
    let rules = text.split("--rules--").nth(1).unwrap_or("");
    assert_eq!(
        rules.matches("--dport 8080 -j nixos-fw-accept").count(),
        1,
        "{text}"
    );
}

/// `--to tailnet`: Tailscale Serve runs inside the owner's running
/// container, and only there. The sandbox's containers have a stand-in
/// `tailscale` CLI (no tailscaled in Debian 12) that keeps the serve
/// settings it is given, so this proves voxnix's side: the command and its
/// arguments, the container it runs in, `off` at unexpose, a refusal that
/// records nothing, and no unexpose of a stopped container (tailscaled would
/// keep serving the port at its next start).
#[tokio::test]
async fn a_tailnet_port_is_served_inside_its_container_only() {
    let app = Appliance::boot("tailscale_auth_key_file = \"/etc/voxnix/ts-key\"").await;
    std::fs::write(
        app.sandbox.root().join("etc/voxnix/ts-key"),
        "tskey-auth-test",
    )
    .expect("key file");
    for (name, owner) in [("ts", "telegram:1"), ("other", "telegram:2")] {
        let spec = format!(r#"{{"name":"{name}","modules":["tailscale"]}}"#);
        assert_eq!(app.create(&spec, owner).await["ok"], true);
    }
    let m = app.manager().await;
    let served = |name: &'static str, owner: &'static str| {
        let app = &app;
        async move {
            app.run_in(
                name,
                owner,
                "cat /run/voxnix-sandbox/tailscale-serve 2>/dev/null; true",
            )
            .await
        }
    };
    let r: Value = serde_json::from_str(
        &m.expose("ts", "telegram:1", 3000, "tailnet", 0)
            .await
            .expect("expose"),
    )
    .expect("json");
    assert_eq!(r["exposure"]["to"], "tailnet", "{r}");
    assert_eq!(r["pending_restart"], false, "at once: {r}");
    // Its tailscale module cannot be taken away while it serves a port
    // (nothing could drop the setting after, and it would come back).
    let e = m.update("ts", "telegram:1", &["git"]).await.unwrap_err();
    assert_eq!(kind(&e), "InvalidArgument", "{e}");
    assert!(e.to_string().contains("unexpose ts"), "{e}");
    assert_eq!(
        served("ts", "telegram:1").await.trim(),
        "3000 tcp://127.0.0.1:3000"
    );
    assert_eq!(
        served("other", "telegram:2").await.trim(),
        "",
        "not in bob's"
    );
    let status: Value =
        serde_json::from_str(&m.status("ts", "telegram:1").await.expect("status")).expect("json");
    assert_eq!(status["exposed"][0]["to"], "tailnet", "{status}");
    // Another owner cannot reach it.
    let e = m
        .expose("ts", "telegram:2", 4000, "tailnet", 0)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "NotFound", "{e}");

    // Not logged in: refused, with the CLI's reason, and nothing recorded.
    app.run_in(
        "ts",
        "telegram:1",
        "touch /run/voxnix-sandbox/tailscale-down",
    )
    .await;
    let e = m
        .expose("ts", "telegram:1", 4000, "tailnet", 0)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "Conflict", "{e}");
    assert!(e.to_string().contains("not logged in"), "{e}");
    let status: Value =
        serde_json::from_str(&m.status("ts", "telegram:1").await.expect("status")).expect("json");
    assert_eq!(
        status["exposed"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    app.run_in("ts", "telegram:1", "rm /run/voxnix-sandbox/tailscale-down")
        .await;

    // Unexpose: `off` inside it.
    m.unexpose("ts", "telegram:1", 3000, "tailnet")
        .await
        .expect("unexpose");
    assert_eq!(served("ts", "telegram:1").await.trim(), "");
    // A stopped container's tailnet port stays until it runs again.
    m.expose("ts", "telegram:1", 3001, "tailnet", 0)
        .await
        .expect("expose again");
    m.stop("ts", "telegram:1").await.expect("stop");
    let e = m
        .unexpose("ts", "telegram:1", 3001, "tailnet")
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "Busy", "{e}");
}
