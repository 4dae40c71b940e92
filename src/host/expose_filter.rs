//! The host-side guard on exposed host ports. nspawn forwards a container's
//! `HOST_PORT` (DNAT) to the first address it finds in that container's own
//! network namespace, and follows every change there: the container's root
//! can add a neighbour's address (or a LAN host's, or the host's own) and
//! drop its own, and its host port leads there. This ruleset makes the
//! forwarding land only where it was meant to:
//!
//! - `inet voxnix_expose`: a connection DNAT'd from one of the host ports
//!   (the range, and any port an exposure holds) never reaches the host
//!   itself (input) and never leaves by anything but the container bridge
//!   (postrouting). On its way out to the bridge, each packet is marked
//!   with its host port.
//! - `bridge voxnix_expose`: a marked packet leaves the bridge only by the
//!   veth (`vb-NAME`) of the container that holds that host port.
//!
//! The packet mark carries the host port from the IP layer to the bridge
//! port (conntrack is not asked in the bridge family: that needs
//! `nf_conntrack_bridge`, which also changes how every bridged frame is
//! tracked). It is set after source NAT (priority 300), when routing is done
//! and nothing else on the host reads it, and is cleared when the packet
//! crosses into the container's namespace.
//!
//! The same file binds each container's bridge port to the one MAC nspawn
//! gives that container ([`super::nspawn_mac`]), in `bridge voxnix_ports`:
//! the bridge learns which port a MAC is behind from every frame that comes
//! in, before the input and forward hooks (where `data/nftables/
//! bridge-filter.nft` checks addresses) see it, so a container sending from a
//! neighbour's MAC had the host's frames for the neighbour sent its way.
//! Now a frame from a container port with another source MAC is dropped in
//! prerouting, before the bridge learns anything from it, and the host's
//! unicast frames leave by a container port only for that port's MAC (none
//! is flooded to the others).
//!
//! The daemon renders the ruleset from its records into a root-only file and
//! has systemd load it (`voxnix-expose-filter.service`, `nft -f`: one
//! transaction, each table replaced whole); it needs no network capability
//! of its own.

use std::fmt::Write as _;

use super::nspawn_mac;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// The oneshot unit that loads [`file`] (NixOS module and sandbox alike).
pub const UNIT: &str = "voxnix-expose-filter.service";

/// The high half of every mark this filter sets ("vn"); the low half is the
/// host port. Marks with another high half are not this filter's.
pub const MARK_TAG: u32 = 0x766e_0000;

/// Where the daemon writes the ruleset.
pub fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("expose-filter.nft")
}

/// The host side of the veth pair nspawn makes for machine `name` on a
/// bridge. Container names are at most 11 characters, so nspawn never has
/// to shorten it (15 at most).
pub fn veth(name: &str) -> String {
    format!("vb-{name}")
}

/// One host port and the machine whose veth its traffic may leave by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allowed {
    pub machine: String,
    pub host_port: u16,
}

/// A container's bridge port and the MAC nspawn gives the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    pub machine: String,
    pub mac: [u8; 6],
}

/// The host ports to guard, each an nft port or interval (one rule each):
/// the range, and each allowed port outside it.
fn guarded_ports(range: Option<&RangeInclusive<u16>>, allowed: &[Allowed]) -> Vec<String> {
    let mut ports: Vec<String> = Vec::new();
    if let Some(r) = range {
        ports.push(format!("{}-{}", r.start(), r.end()));
    }
    let mut outside: Vec<u16> = allowed
        .iter()
        .map(|a| a.host_port)
        .filter(|p| range.is_none_or(|r| !r.contains(p)))
        .collect();
    outside.sort_unstable();
    outside.dedup();
    ports.extend(outside.iter().map(u16::to_string));
    ports
}

/// The whole ruleset for `bridge`, with `range` the administrator's host
/// ports (None: none), `allowed` each held host port's machine and
/// `containers` every container's port and MAC.
/// Replacing the file's tables is one transaction: "table X" makes it exist,
/// "delete table X" empties the way, the body makes it anew.
pub fn render(
    bridge: &str,
    range: Option<&RangeInclusive<u16>>,
    allowed: &[Allowed],
    containers: &[Port],
) -> String {
    let mut allowed = allowed.to_vec();
    allowed.sort();
    allowed.dedup();
    let ports = guarded_ports(range, &allowed);
    // Matches the first packet of a connection (and the rest of its
    // original direction) that nspawn's DNAT took from guarded host ports
    // `p` (one port or an interval: Debian's nft 1.0.6 types
    // `ct original proto-dst` in a relation but not in an anonymous set,
    // so each interval has its rule).
    let dnat = |p: &str| {
        format!("ct direction original ct status dnat meta l4proto tcp ct original proto-dst {p}")
    };
    let mut s = String::new();
    s.push_str(
        "# voxnix: exposed host ports reach only the container that holds them.\n\
         # Written by the daemon (src/host/expose_filter.rs); loaded by voxnix-expose-filter.service.\n",
    );
    s.push_str("table inet voxnix_expose\ndelete table inet voxnix_expose\n");
    s.push_str("table inet voxnix_expose {\n");
    if !ports.is_empty() {
        s.push_str(
            "    chain input {\n        type filter hook input priority 0; policy accept;\n\
             \x20       # Forwarded to an address of the host itself: never.\n",
        );
        for p in &ports {
            let _ = writeln!(s, "        {} drop", dnat(p));
        }
        s.push_str(
            "    }\n    chain postrouting {\n        type filter hook postrouting priority 300; policy accept;\n\
             \x20       # To anywhere but a container on the bridge: never.\n",
        );
        for p in &ports {
            let _ = writeln!(s, "        {} oifname != \"{bridge}\" drop", dnat(p));
        }
        s.push_str(
            "        # Its host port, for the bridge table below (the last mark set wins).\n",
        );
        for p in &ports {
            let _ = writeln!(s, "        {} meta mark set {MARK_TAG:#010x}", dnat(p));
        }
        let mut ports_held: Vec<u16> = allowed.iter().map(|a| a.host_port).collect();
        ports_held.sort_unstable();
        ports_held.dedup();
        for p in ports_held {
            let _ = writeln!(
                s,
                "        {} meta mark set {:#010x}",
                dnat(&p.to_string()),
                MARK_TAG | u32::from(p)
            );
        }
        s.push_str("    }\n");
    }
    s.push_str("}\n");
    s.push_str("table bridge voxnix_expose\ndelete table bridge voxnix_expose\n");
    s.push_str("table bridge voxnix_expose {\n");
    if !ports.is_empty() {
        s.push_str(
            "    # veth . mark of each host port and the container holding it.\n\
             \x20   set allowed {\n        type ifname . mark\n",
        );
        if !allowed.is_empty() {
            let elements: Vec<String> = allowed
                .iter()
                .map(|a| {
                    format!(
                        "\"{}\" . {:#010x}",
                        veth(&a.machine),
                        MARK_TAG | u32::from(a.host_port)
                    )
                })
                .collect();
            let _ = writeln!(s, "        elements = {{ {} }}", elements.join(", "));
        }
        s.push_str("    }\n");
        let _ = write!(
            s,
            "    chain output {{\n        type filter hook output priority 0; policy accept;\n\
             \x20       # Forwarded from a host port: only to the container holding it.\n\
             \x20       meta mark and 0xffff0000 == {MARK_TAG:#010x} oifname . meta mark != @allowed drop\n    }}\n"
        );
    }
    s.push_str("}\n");
    render_ports(&mut s, containers);
    s
}

/// `bridge voxnix_ports`: each container port speaks only as its MAC, and
/// the host's unicast frames leave by it only for that MAC. A port with no
/// element (not a container of the daemon's) sends nothing.
fn render_ports(s: &mut String, ports: &[Port]) {
    let mut ports = ports.to_vec();
    ports.sort();
    ports.dedup();
    s.push_str("table bridge voxnix_ports\ndelete table bridge voxnix_ports\n");
    s.push_str(
        "table bridge voxnix_ports {\n    # veth . MAC of each container, as nspawn makes them.\n\
         \x20   set ports {\n        type ifname . ether_addr\n",
    );
    if !ports.is_empty() {
        let elements: Vec<String> = ports
            .iter()
            .map(|p| {
                format!(
                    "\"{}\" . {}",
                    veth(&p.machine),
                    nspawn_mac::format_mac(&p.mac)
                )
            })
            .collect();
        let _ = writeln!(s, "        elements = {{ {} }}", elements.join(", "));
    }
    s.push_str(
        "    }\n    chain prerouting {\n        type filter hook prerouting priority -300; policy accept;\n\
         \x20       # Before the bridge learns the source MAC's port.\n\
         \x20       iifname \"vb-*\" iifname . ether saddr != @ports drop\n    }\n\
         \x20   chain output {\n        type filter hook output priority 0; policy accept;\n\
         \x20       # The host's unicast frames: only to the MAC behind the port.\n\
         \x20       oifname \"vb-*\" ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 oifname . ether daddr != @ports drop\n    }\n}\n",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(machine: &str, host_port: u16) -> Allowed {
        Allowed {
            machine: machine.into(),
            host_port,
        }
    }

    #[test]
    fn each_held_port_is_bound_to_its_containers_veth() {
        let text = render(
            "br-vox",
            Some(&(20000..=20099)),
            &[allowed("bob", 20001), allowed("alice", 20000)],
            &[],
        );
        assert!(
            text.contains("\"vb-alice\" . 0x766e4e20, \"vb-bob\" . 0x766e4e21"),
            "{text}"
        );
        assert!(
            text.contains("proto-dst 20000 meta mark set 0x766e4e20"),
            "{text}"
        );
        assert!(
            text.contains("proto-dst 20001 meta mark set 0x766e4e21"),
            "{text}"
        );
        assert!(
            text.contains("proto-dst 20000-20099 oifname != \"br-vox\" drop"),
            "{text}"
        );
        // The generic mark comes before the per-port ones (the last set wins).
        let generic = text.find("meta mark set 0x766e0000").expect("generic mark");
        let first = text.find("meta mark set 0x766e4e20").expect("port mark");
        assert!(generic < first, "{text}");
        // Each table is replaced whole.
        for t in ["inet", "bridge"] {
            assert!(
                text.contains(&format!(
                    "table {t} voxnix_expose\ndelete table {t} voxnix_expose\n"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn a_port_held_outside_the_range_is_guarded_too() {
        let text = render(
            "br-vox",
            Some(&(20000..=20009)),
            &[allowed("old", 30000)],
            &[],
        );
        assert!(text.contains("proto-dst 20000-20009 drop"), "{text}");
        assert!(text.contains("proto-dst 30000 drop"), "{text}");
        let none = render("br-vox", None, &[allowed("old", 30000)], &[]);
        assert!(none.contains("proto-dst 30000 drop"), "{none}");
    }

    #[test]
    fn with_nothing_to_guard_the_tables_are_empty() {
        let text = render("br-vox", None, &[], &[]);
        assert!(text.contains("table bridge voxnix_expose {\n}"), "{text}");
        assert!(text.contains("table inet voxnix_expose {\n}"), "{text}");
        // With no container, every container port is silent.
        assert!(text.contains("type ifname . ether_addr\n    }"), "{text}");
        assert!(
            text.contains("iifname . ether saddr != @ports drop"),
            "{text}"
        );
    }

    #[test]
    fn each_container_port_is_bound_to_its_mac() {
        let port = |machine: &str, last: u8| Port {
            machine: machine.into(),
            mac: [0x02, 0, 0, 0, 0, last],
        };
        let text = render("br-vox", None, &[], &[port("bob", 2), port("alice", 1)]);
        assert!(
            text.contains(
                "elements = { \"vb-alice\" . 02:00:00:00:00:01, \"vb-bob\" . 02:00:00:00:00:02 }"
            ),
            "{text}"
        );
        assert!(
            text.contains("table bridge voxnix_ports\ndelete table bridge voxnix_ports\n"),
            "{text}"
        );
        assert!(text.contains("hook prerouting priority -300"), "{text}");
        assert!(
            text.contains("oifname . ether daddr != @ports drop"),
            "{text}"
        );
    }

    #[test]
    fn a_machines_veth_is_its_name_behind_vb() {
        assert_eq!(veth("abcdefghijk"), "vb-abcdefghijk");
        assert!(veth("abcdefghijk").len() <= 15);
    }
}
