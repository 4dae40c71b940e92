//! One owner against another on a shared appliance (issue 15): each test
//! acts as the attacking owner from inside a real container.

mod common;

use common::daemon::Appliance;

/// A TCP connect from inside a container, in Python (no tools assumed).
fn connect(ip: &str, port: u16) -> String {
    format!(
        "python3 -c \"import socket; s = socket.socket(); s.settimeout(3)\ntry:\n    s.connect(('{ip}', {port})); print('connected')\nexcept Exception as e:\n    print('refused', e)\""
    )
}

/// Mallory (`telegram:1`) and Bob (`telegram:2`), one container each.
async fn mallory_and_bob(app: &Appliance) {
    for (name, owner) in [("mallory", "telegram:1"), ("bob", "telegram:2")] {
        assert_eq!(
            app.create(&format!(r#"{{"name":"{name}"}}"#), owner).await["ok"],
            true
        );
    }
}

/// What a UDP listener on the gateway's `port` hears ("IP PORT TEXT" a
/// line) while `script` runs in `name` (started once the listener is up);
/// and the script's output.
async fn heard_at_gateway(
    app: &Appliance,
    port: u16,
    name: &str,
    owner: &str,
    script: &str,
) -> (String, String) {
    let listener = format!(
        "timeout 8 python3 -c \"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('10.100.0.1', {port}))\nwhile True:\n    data, peer = s.recvfrom(100)\n    print(peer[0], peer[1], data.decode(), flush=True)\""
    );
    let listen = app.sh(&listener);
    let send = async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        app.run_in(name, owner, script).await
    };
    tokio::join!(listen, send)
}

/// Ten ARP replies from `name`'s interface, with its own MAC as the sender's
/// hardware address: to `dst_mac` (hex, no colons), saying `sender_ip` is
/// at that MAC, addressed to `target_ip` at `dst_mac`. Prints "forged MAC".
fn forged_arp_replies(dst_mac: &str, sender_ip: &str, target_ip: &str) -> String {
    format!(
        "python3 -c \"import socket, time\n\
         mac = bytes.fromhex(open('/sys/class/net/host0/address').read().strip().replace(':', ''))\n\
         dst = bytes.fromhex('{dst_mac}')\n\
         frame = dst + mac + b'\\x08\\x06' + b'\\x00\\x01\\x08\\x00\\x06\\x04\\x00\\x02' + mac + socket.inet_aton('{sender_ip}') + dst + socket.inet_aton('{target_ip}')\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind(('host0', 0))\n\
         for _ in range(10):\n    s.send(frame); time.sleep(0.3)\n\
         print('forged', mac.hex())\""
    )
}

/// The MAC in an `ip neigh show` line.
fn lladdr(neigh: &str) -> String {
    neigh
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no lladdr in: {neigh}"))
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
    let bob = app.ipv4_of("bob", "telegram:2").await;
    // Bob serves something on all addresses, and opens it in his
    // container's own firewall, as code-server with open_firewall does (and
    // as any root of a container may): only the bridge stands between his
    // port and Alice.
    let serving = app
        .run_in(
            "bob",
            "telegram:2",
            "/usr/sbin/iptables-nft -w -I nixos-fw 1 -p tcp --dport 8080 -j nixos-fw-accept && \
         systemd-run --unit=web python3 -m http.server 8080 --bind 0.0.0.0 && \
         for i in $(seq 100); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8080), 1)\" 2>/dev/null && echo up && break; sleep 0.1; done",
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
    let from_alice = app
        .run_in("alice", "telegram:1", &connect(&bob, 8080))
        .await;
    assert!(
        from_alice.contains("refused") && !from_alice.contains("connected"),
        "Alice reached Bob's port: {from_alice}"
    );
    // The way out still works: the gateway's DNS answers over TCP.
    let gateway = app
        .run_in("alice", "telegram:1", &connect("10.100.0.1", 53))
        .await;
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

/// A container's root can send any frame it likes (CAP_NET_RAW in its own
/// user namespace). Sent as a neighbour's attacker would: a DHCP server's
/// reply (source port 67) and an ARP reply naming the gateway's address with
/// the attacker's MAC. Neither gets through: the host never hears the "DHCP
/// server" while it hears the same datagram from another port, and the
/// neighbour keeps the real gateway's MAC.
#[tokio::test]
async fn a_container_cannot_pose_as_the_dhcp_server_or_the_gateway() {
    let app = Appliance::boot("").await;
    mallory_and_bob(&app).await;
    // The host listens on the gateway's address; Mallory sends one datagram
    // from port 67 (as a DHCP server would answer) and one from port 40000.
    let (heard, sent) = heard_at_gateway(
        &app,
        9999,
        "mallory",
        "telegram:1",
        "python3 -c \"import socket\nfor port, what in ((67, 'offer'), (40000, 'plain')):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.bind(('0.0.0.0', port))\n    s.sendto(what.encode(), ('10.100.0.1', 9999))\n    s.close()\"; echo sent",
    )
    .await;
    assert!(sent.contains("sent"), "{sent}");
    assert!(heard.contains(" 40000 plain"), "the way out works: {heard}");
    assert!(
        !heard.contains("offer"),
        "the host heard a DHCP server reply from a container: {heard}"
    );

    // Bob learns the gateway's MAC; Mallory then sends Bob ARP replies
    // saying the gateway's address is at Mallory's MAC (arpspoof's way).
    let bob_ip = app.ipv4_of("bob", "telegram:2").await;
    let bob_mac = app
        .run_in("bob", "telegram:2", "cat /sys/class/net/host0/address")
        .await;
    let before = app
        .run_in(
            "bob",
            "telegram:2",
            &format!(
                "{} >/dev/null; sleep 2; ip neigh show 10.100.0.1",
                connect("10.100.0.1", 53)
            ),
        )
        .await;
    let gateway_mac = lladdr(&before);
    let forged = app
        .run_in(
            "mallory",
            "telegram:1",
            &forged_arp_replies(&bob_mac.trim().replace(':', ""), "10.100.0.1", &bob_ip),
        )
        .await;
    assert!(forged.contains("forged"), "{forged}");
    let after = app
        .run_in("bob", "telegram:2", "ip neigh show 10.100.0.1")
        .await;
    assert_eq!(
        lladdr(&after),
        gateway_mac,
        "Bob's gateway is now Mallory's MAC ({forged})"
    );
    // Towards the host, ARP naming the gateway's address is dropped too.
    let rules = app.sh("nft list chain bridge voxnix input").await;
    assert!(rules.contains("arp saddr ip 10.100.0.1 drop"), "{rules}");
}

/// A container's root adds a neighbour's address to its own interface and
/// speaks to the host as it, and tells the host by ARP that the address is
/// at its MAC: either would have the host send the neighbour's traffic to
/// it. The bridge lets a container speak IPv4 and ARP to the host only as
/// the address its MAC leased (the DHCP server keeps the filter's set of
/// leases), so neither gets through, while its own address still works.
#[tokio::test]
async fn a_container_cannot_claim_a_neighbours_address() {
    let app = Appliance::boot("").await;
    mallory_and_bob(&app).await;
    let bob_ip = app.ipv4_of("bob", "telegram:2").await;
    let mallory_ip = app.ipv4_of("mallory", "telegram:1").await;
    let bob_mac = app
        .run_in("bob", "telegram:2", "cat /sys/class/net/host0/address")
        .await
        .trim()
        .to_string();
    let leases = app.sh("nft list set bridge voxnix leases").await;
    assert!(
        leases.contains(&format!("{bob_mac} . {bob_ip}")),
        "the DHCP server put Bob's lease in the filter: {leases}"
    );
    // Mallory speaks from Bob's address and from her own.
    let (heard, sent) = heard_at_gateway(
        &app,
        9998,
        "mallory",
        "telegram:1",
        &format!(
            "ip addr add {bob_ip}/32 dev host0 && python3 -c \"import socket\n\
             for src, what in (('{bob_ip}', 'claimed'), ('{mallory_ip}', 'own')):\n    \
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.bind((src, 0))\n    \
             s.sendto(what.encode(), ('10.100.0.1', 9998))\n    s.close()\"; ip addr del {bob_ip}/32 dev host0; echo sent"
        ),
    )
    .await;
    assert!(sent.contains("sent"), "{sent}");
    assert!(
        heard
            .lines()
            .any(|l| l.starts_with(&format!("{mallory_ip} ")) && l.ends_with(" own")),
        "her own address works: {heard}"
    );
    assert!(
        !heard.contains("claimed"),
        "the host heard Mallory as Bob: {heard}"
    );

    // The host knows Bob's MAC; Mallory tells it Bob's address is at hers.
    let host_neigh = format!(
        "python3 -c \"import socket\ntry:\n    socket.create_connection(('{bob_ip}', 1), 2)\nexcept Exception:\n    pass\"; \
         sleep 2; ip neigh show {bob_ip} dev br-vox"
    );
    let before = app.sh(&host_neigh).await;
    assert!(
        before.contains(&bob_mac),
        "the host has Bob's MAC for his address, Mallory's packets did not change it: {before} (Bob {bob_mac})"
    );
    let gateway = app
        .run_in(
            "mallory",
            "telegram:1",
            &format!(
                "{} >/dev/null; ip neigh show 10.100.0.1",
                connect("10.100.0.1", 53)
            ),
        )
        .await;
    let gateway_mac = lladdr(&gateway).replace(':', "");
    let forged = app
        .run_in(
            "mallory",
            "telegram:1",
            &forged_arp_replies(&gateway_mac, &bob_ip, "10.100.0.1"),
        )
        .await;
    assert!(forged.contains("forged"), "{forged}");
    let after = app.sh(&format!("ip neigh show {bob_ip} dev br-vox")).await;
    assert!(
        after.contains(&bob_mac),
        "the host sends Bob's traffic to Mallory: {after} (Bob {bob_mac}, {forged})"
    );
    // Both still reach the way out.
    for (name, owner) in [("mallory", "telegram:1"), ("bob", "telegram:2")] {
        let out = app.run_in(name, owner, &connect("10.100.0.1", 53)).await;
        assert!(out.contains("connected"), "{name}: {out}");
    }
}

/// The lease script keeps one element per address, ending with its lease: a
/// lease that moves to another MAC (dnsmasq says "old", never "del") drops
/// the former MAC's element, so a container cannot collect elements for
/// addresses it no longer holds and use them once a neighbour gets them.
#[tokio::test]
async fn the_set_of_leases_holds_one_mac_per_address_for_as_long_as_its_lease() {
    let app = Appliance::boot("").await;
    assert_eq!(
        app.create(r#"{"name":"bob"}"#, "telegram:2").await["ok"],
        true
    );
    let bob_ip = app.ipv4_of("bob", "telegram:2").await;
    let set = || app.sh("nft list set bridge voxnix leases");
    let before = set().await;
    assert!(
        before.contains(&format!(". {bob_ip} ")) && before.contains("expires"),
        "{before}"
    );
    // The address moves to another MAC, as dnsmasq reports it.
    let moved = app
        .sh(&format!(
            "DNSMASQ_LEASE_EXPIRES=$(( $(date +%s) + 300 )) /usr/lib/voxnix-sandbox/lease-hook.sh old 02:00:00:00:00:99 {bob_ip}; nft list set bridge voxnix leases"
        ))
        .await;
    let holders: Vec<&str> = moved
        .split([',', '{', '}', '\n'])
        .filter(|e| {
            e.contains(&format!(" . {bob_ip} ")) || e.trim().ends_with(&format!(" . {bob_ip}"))
        })
        .collect();
    assert_eq!(holders.len(), 1, "{moved}");
    assert!(holders[0].contains("02:00:00:00:00:99"), "{moved}");
    // A lease already over binds nothing; "del" removes its element.
    let gone = app
        .sh(&format!(
            "DNSMASQ_LEASE_EXPIRES=1 /usr/lib/voxnix-sandbox/lease-hook.sh add 02:00:00:00:00:98 10.100.0.250; \
             /usr/lib/voxnix-sandbox/lease-hook.sh del 02:00:00:00:00:99 {bob_ip}; nft list set bridge voxnix leases"
        ))
        .await;
    assert!(
        !gone.contains("02:00:00:00:00:98") && !gone.contains("02:00:00:00:00:99"),
        "{gone}"
    );
    // Input that is not a MAC or an address never reaches nft.
    let odd = app
        .sh("/usr/lib/voxnix-sandbox/lease-hook.sh add '02:00:00:00:00:97 . 1.2.3.4 }; flush ruleset; {' 10.100.0.251; nft list tables | grep -cx 'table bridge voxnix'")
        .await;
    assert_eq!(odd.trim(), "1", "the filter is still there: {odd}");
}

/// The bridge drops frames between containers, but a container's root can
/// route to a neighbour through the gateway instead: the frames go to the
/// host, which forwards IPv4 (it NATs the containers' way out) and would
/// send them back onto the bridge. A TCP handshake would still fail (Bob
/// answers on the link, which the bridge drops), but one-way traffic gets
/// there: datagrams to any UDP service of Bob's, forged or not. Mallory adds
/// that route and sends; Bob hears nothing, while the gateway still answers.
#[tokio::test]
async fn a_container_cannot_reach_another_through_the_gateway() {
    let app = Appliance::boot("").await;
    mallory_and_bob(&app).await;
    let bob = app.ipv4_of("bob", "telegram:2").await;
    // The host forwards, as it must for the containers' way out.
    let forwarding = app.sh("cat /proc/sys/net/ipv4/ip_forward").await;
    assert_eq!(forwarding.trim(), "1", "the appliance forwards IPv4");
    // Bob listens on UDP 9999, open in his own firewall.
    let listener = "/usr/sbin/iptables-nft -w -I nixos-fw 1 -p udp --dport 9999 -j nixos-fw-accept && \
         timeout 8 python3 -c \"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', 9999))\nwhile True:\n    data, peer = s.recvfrom(100)\n    print('heard', peer[0], data.decode(), flush=True)\"";
    let listen = app.run_in("bob", "telegram:2", listener);
    let send = async {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        app.run_in(
            "mallory",
            "telegram:1",
            &format!(
                "ip route replace {bob}/32 via 10.100.0.1 dev host0 && ip route get {bob} && \
                 python3 -c \"import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 for _ in range(5):\n    s.sendto(b'routed', ('{bob}', 9999)); time.sleep(0.3)\nprint('sent')\""
            ),
        )
        .await
    };
    let (heard, sent) = tokio::join!(listen, send);
    assert!(
        sent.contains("via 10.100.0.1") && sent.contains("sent"),
        "{sent}"
    );
    assert!(
        !heard.contains("routed"),
        "Bob heard Mallory through the gateway: {heard}"
    );
    let gateway = app
        .run_in("mallory", "telegram:1", &connect("10.100.0.1", 53))
        .await;
    assert!(gateway.contains("connected"), "{gateway}");
    let rules = app.sh("nft list table inet voxnix").await;
    assert!(
        rules.contains("iifname \"br-vox\" oifname \"br-vox\" ct status != dnat drop"),
        "{rules}"
    );
}

/// The bridge learns which port a MAC is behind from every frame that comes
/// in, before any filter of the input or forward hook sees it. Mallory sends
/// frames from Bob's MAC (not IPv4: this kernel's br_netfilter would drop a
/// bad IPv4 header before learning, NixOS does not load it): the host must
/// still send Bob's traffic to Bob, none of it to Mallory.
#[tokio::test]
async fn a_container_cannot_take_a_neighbours_mac_on_the_bridge() {
    let app = Appliance::boot("").await;
    mallory_and_bob(&app).await;
    let bob_ip = app.ipv4_of("bob", "telegram:2").await;
    let bob_mac = app
        .run_in("bob", "telegram:2", "cat /sys/class/net/host0/address")
        .await
        .trim()
        .to_string();
    // The daemon binds Bob's port to the MAC nspawn gave him, computed
    // from the host's machine ID and his name, never read from him.
    let machine_id = app.sh("cat /etc/machine-id").await;
    let id: [u8; 16] = (0..16)
        .map(|i| u8::from_str_radix(&machine_id.trim()[2 * i..2 * i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>()
        .try_into()
        .expect("16 bytes");
    let computed =
        voxnix::host::nspawn_mac::format_mac(&voxnix::host::nspawn_mac::container_mac(&id, "bob"));
    assert_eq!(computed, bob_mac, "nspawn's MAC for bob");
    let ports = app.sh("nft list set bridge voxnix_ports ports").await;
    assert!(
        ports.contains(&format!("\"vb-bob\" . {bob_mac}")),
        "{ports}"
    );
    let gateway = app
        .run_in(
            "mallory",
            "telegram:1",
            &format!(
                "{} >/dev/null; ip neigh show 10.100.0.1",
                connect("10.100.0.1", 53)
            ),
        )
        .await;
    let gateway_mac = lladdr(&gateway).replace(':', "");
    let bob_hex = bob_mac.replace(':', "");
    // Mallory forges frames from Bob's MAC all along, and listens for any
    // frame addressed to it; meanwhile the host sends Bob datagrams.
    let forge = format!(
        "python3 -c \"import socket, time\n\
             bob = bytes.fromhex('{bob_hex}')\n\
             frame = bytes.fromhex('{gateway_mac}') + bob + b'\\x88\\xb5' + bytes(46)\n\
             s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))\n\
             s.bind(('host0', 0))\n\
             s.settimeout(0.2)\n\
             heard = 0\n\
             end = time.time() + 6\n\
             while time.time() < end:\n    s.send(frame)\n    try:\n        data = s.recv(2000)\n        heard += data[:6] == bob\n    except socket.timeout:\n        pass\n\
             print('heard', heard)\""
    );
    let listen = app.run_in("mallory", "telegram:1", &forge);
    let send = async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let fdb = app
            .sh(&format!("bridge fdb show br br-vox | grep -i '{bob_mac}'"))
            .await;
        let sent = app
            .sh(&format!(
                "python3 -c \"import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 for _ in range(20):\n    s.sendto(b'for-bob', ('{bob_ip}', 9)); time.sleep(0.1)\nprint('sent')\""
            ))
            .await;
        (fdb, sent)
    };
    let (heard, (fdb, sent)) = tokio::join!(listen, send);
    assert!(sent.contains("sent"), "{sent}");
    assert!(
        !fdb.contains("vb-mallory"),
        "the bridge put Bob's MAC behind Mallory's port: {fdb}"
    );
    assert_eq!(
        heard.trim(),
        "heard 0",
        "Mallory got frames for Bob's MAC ({fdb})"
    );

    // When the bridge has forgotten where Bob is (an entry ages out after
    // five idle minutes; here it is deleted), it floods the host's frames
    // for him to every port: none may reach Mallory's.
    let listen = format!(
        "python3 -c \"import socket, time\n\
         bob = bytes.fromhex('{bob_hex}')\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))\n\
         s.bind(('host0', 0))\n\
         s.settimeout(0.2)\n\
         heard = 0\n\
         end = time.time() + 5\n\
         while time.time() < end:\n    try:\n        heard += s.recv(2000)[:6] == bob\n    except socket.timeout:\n        pass\n\
         print('heard', heard)\""
    );
    let flood = async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        app.sh(&format!(
            "for i in 1 2 3 4 5; do bridge fdb del {bob_mac} dev vb-bob master 2>/dev/null; \
             python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'for-bob', ('{bob_ip}', 9))\"; \
             sleep 0.2; done; echo flooded"
        ))
        .await
    };
    let (heard, flooded) = tokio::join!(app.run_in("mallory", "telegram:1", &listen), flood);
    assert!(flooded.contains("flooded"), "{flooded}");
    assert_eq!(
        heard.trim(),
        "heard 0",
        "the bridge flooded Bob's frames to Mallory"
    );
}
