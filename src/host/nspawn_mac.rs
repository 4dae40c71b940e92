//! The MAC address systemd-nspawn gives a container's `host0`: not read from
//! the container (its root can change it), but computed the way nspawn
//! computes it, from the host's machine ID and the machine's name
//! (nspawn-network.c, `generate_mac` with its container hash key). The
//! bridge lets each container port speak only as that MAC
//! ([`super::expose_filter`]), so no container can take a neighbour's MAC
//! and have the bridge send the neighbour's frames its way.

use std::hash::Hasher as _;
use std::io;
use std::path::Path;

/// nspawn's fixed key for the container side of a veth pair
/// (`CONTAINER_HASH_KEY`, c3c4f919-b557-b21c-e6cf-1427039ceea2).
const CONTAINER_HASH_KEY: [u8; 16] = [
    0xc3, 0xc4, 0xf9, 0x19, 0xb5, 0x57, 0xb2, 0x1c, 0xe6, 0xcf, 0x14, 0x27, 0x03, 0x9c, 0xee, 0xa2,
];

/// The host's machine ID from `path` (`/etc/machine-id`: 32 hex digits).
pub fn read_machine_id(path: &Path) -> io::Result<[u8; 16]> {
    let text = std::fs::read_to_string(path)?;
    parse_machine_id(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not hold a machine ID", path.display()),
        )
    })
}

fn parse_machine_id(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// The MAC nspawn gives `host0` of machine `name` on the host `machine_id`:
/// SipHash-2-4 (nspawn's key) of the ID's bytes followed by the name, the
/// first six bytes of the little-endian result, marked unicast and locally
/// administered.
pub fn container_mac(machine_id: &[u8; 16], name: &str) -> [u8; 6] {
    let (k0, k1) = CONTAINER_HASH_KEY.split_at(8);
    let key = |half: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(half);
        u64::from_le_bytes(b)
    };
    let mut h = siphasher::sip::SipHasher24::new_with_keys(key(k0), key(k1));
    h.write(machine_id);
    h.write(name.as_bytes());
    let bytes = h.finish().to_le_bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// `aa:bb:cc:dd:ee:ff`, as nft and ip print it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_id_is_32_hex_digits() {
        let id = parse_machine_id("0123456789abcdef0123456789ABCDEF").expect("id");
        assert_eq!(id[0], 0x01);
        assert_eq!(id[15], 0xef);
        assert!(parse_machine_id("0123").is_none());
        assert!(parse_machine_id("g123456789abcdef0123456789abcdef").is_none());
    }

    #[test]
    fn the_mac_is_unicast_local_and_differs_by_name_and_host() {
        let id = [7u8; 16];
        let a = container_mac(&id, "alice");
        assert_eq!(a[0] & 0x03, 0x02, "{}", format_mac(&a));
        assert_eq!(a, container_mac(&id, "alice"));
        assert_ne!(a, container_mac(&id, "bob"));
        assert_ne!(a, container_mac(&[8u8; 16], "alice"));
        assert_eq!(format_mac(&[0x02, 0, 0xab, 1, 2, 3]), "02:00:ab:01:02:03");
    }
}
