//! The files that turn an overlay of this machine's root into the appliance:
//! the bridge and DHCP units, the `container@.service` stand-in, a fresh
//! machine id, and whatever the caller adds (e.g. the voxnix daemon's unit).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{SandboxError, SandboxOptions, io_err};

/// A file to place in the appliance's root before it boots.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Path inside the appliance, absolute (e.g. `/etc/voxnix/config.toml`).
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

const UNITS: &[(&str, &str)] = &[
    (
        "container@.service",
        include_str!("assets/container@.service"),
    ),
    (
        "voxnix-sandbox-net.service",
        include_str!("assets/voxnix-sandbox-net.service"),
    ),
    (
        "voxnix-sandbox-dhcp.service",
        include_str!("assets/voxnix-sandbox-dhcp.service"),
    ),
    (
        "voxnix-expose-filter.service",
        include_str!("assets/voxnix-expose-filter.service"),
    ),
];

/// Units every container of the sandbox boots with (they live in the
/// appliance's /usr, which containers boot): stand-ins for what a voxnix NixOS
/// container's system holds, each skipping itself where the original would
/// not exist (the appliance, a container without the module).
const CONTAINER_UNITS: &[(&str, &str, &str)] = &[
    (
        "voxnix-sandbox-firewall.service",
        include_str!("assets/voxnix-sandbox-firewall.service"),
        "sysinit.target",
    ),
    (
        "voxnix-sandbox-personal.service",
        include_str!("assets/voxnix-sandbox-personal.service"),
        "multi-user.target",
    ),
    (
        "voxnix-sandbox-ssh-keys.service",
        include_str!("assets/voxnix-sandbox-ssh-keys.service"),
        "multi-user.target",
    ),
    (
        "voxnix-sandbox-sshd.service",
        include_str!("assets/voxnix-sandbox-sshd.service"),
        "multi-user.target",
    ),
];

fn put(seed: &Path, path: &str, contents: &[u8], mode: u32) -> Result<(), SandboxError> {
    let rel = path.trim_start_matches('/');
    let target = seed.join(rel);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    }
    fs::write(&target, contents).map_err(io_err(format!("writing {}", target.display())))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", target.display())))
}

fn enable(seed: &Path, unit: &str) -> Result<(), SandboxError> {
    let wants = seed.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).map_err(io_err("creating multi-user.target.wants"))?;
    let link = wants.join(unit);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)
        .map_err(io_err(format!("enabling {unit}")))
}

/// Masks `unit` in the appliance (a link to /dev/null).
fn mask(seed: &Path, unit: &str) -> Result<(), SandboxError> {
    let dir = seed.join("etc/systemd/system");
    fs::create_dir_all(&dir).map_err(io_err("creating etc/systemd/system"))?;
    let link = dir.join(unit);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("/dev/null", &link).map_err(io_err(format!("masking {unit}")))
}

fn random_machine_id() -> Result<String, SandboxError> {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map_err(io_err("reading a random UUID"))?;
    Ok(uuid.trim().replace('-', ""))
}

/// The bridge filter (`data/nftables/bridge-filter.nft`, also loaded by the
/// NixOS module) for the gateway `gateway` on the bridge `bridge`.
pub fn bridge_filter(gateway: &str, bridge: &str) -> String {
    include_str!("../../data/nftables/bridge-filter.nft")
        .replace("@GATEWAY@", gateway)
        .replace("@BRIDGE@", bridge)
}

/// The DHCP server's lease script (`data/nftables/lease-hook.sh`, also the
/// NixOS module's) with `nft` at `nft`.
pub fn lease_hook(nft: &str) -> String {
    include_str!("../../data/nftables/lease-hook.sh")
        .replace("@NFT@", nft)
        .replace("@PATH@", "/usr/bin:/bin")
}

/// Writes the seed tree that `init.sh` copies over the overlay root.
pub fn write(seed: &Path, opts: &SandboxOptions) -> Result<(), SandboxError> {
    for (name, text) in UNITS {
        put(
            seed,
            &format!("/etc/systemd/system/{name}"),
            text.as_bytes(),
            0o644,
        )?;
    }
    put(
        seed,
        "/usr/lib/voxnix-sandbox/container-start",
        include_bytes!("assets/container-start"),
        0o755,
    )?;
    put(
        seed,
        "/usr/lib/voxnix-sandbox/dhcp-client-id.conf",
        b"[DHCPv4]\nClientIdentifier=mac\n",
        0o644,
    )?;
    // What containers may send on the bridge: the NixOS module's ruleset.
    put(
        seed,
        "/usr/lib/voxnix-sandbox/bridge-filter.nft",
        bridge_filter("10.100.0.1", "br-vox").as_bytes(),
        0o644,
    )?;
    put(
        seed,
        "/usr/lib/voxnix-sandbox/lease-hook.sh",
        lease_hook("/usr/sbin/nft").as_bytes(),
        0o755,
    )?;
    put(
        seed,
        "/usr/lib/voxnix-sandbox/sshd_config",
        include_bytes!("assets/sshd_config"),
        0o644,
    )?;
    put(
        seed,
        "/usr/lib/voxnix-sandbox/pam-sshd",
        include_bytes!("assets/pam-sshd"),
        0o644,
    )?;
    put(
        seed,
        "/usr/lib/voxnix-sandbox/firewall-start",
        include_bytes!("assets/firewall-start"),
        0o755,
    )?;
    // `iptables` as NixOS's firewall has it on its PATH. Debian's is a link
    // through /etc/alternatives, which a container's own /etc lacks.
    let bin = seed.join("usr/lib/voxnix-sandbox/bin");
    fs::create_dir_all(&bin).map_err(io_err("creating the sandbox's bin"))?;
    for tool in ["iptables", "ip6tables"] {
        let link = bin.join(tool);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("/usr/sbin/{tool}-nft"), &link)
            .map_err(io_err(format!("linking {tool}")))?;
    }
    // Tailscale Serve's CLI, stood in (no tailscaled in Debian 12): where
    // the daemon's exec finds `tailscale` in a container.
    put(
        seed,
        "/usr/local/bin/tailscale",
        include_bytes!("assets/tailscale"),
        0o755,
    )?;
    // The script mkContainer's firewall runs, the same file.
    put(
        seed,
        "/usr/lib/voxnix-sandbox/open-exposed-ports.sh",
        include_bytes!("../../nix/open-exposed-ports.sh"),
        0o644,
    )?;
    for (name, text, target) in CONTAINER_UNITS {
        put(
            seed,
            &format!("/usr/lib/systemd/system/{name}"),
            text.as_bytes(),
            0o644,
        )?;
        let vendor_wants = seed.join(format!("usr/lib/systemd/system/{target}.wants"));
        fs::create_dir_all(&vendor_wants).map_err(io_err("creating the vendor wants"))?;
        let link = vendor_wants.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../{name}"), &link)
            .map_err(io_err(format!("enabling {name} for containers")))?;
    }
    // No getty: the appliance shares the host's /dev, so getty@tty1 would
    // open the host's console, and parallel appliances' gettys hang each
    // other up until systemd gives up (a degraded boot, seen in CI).
    for unit in [
        "getty.target",
        "getty@.service",
        "console-getty.service",
        "serial-getty@.service",
    ] {
        mask(seed, unit)?;
    }
    enable(seed, "voxnix-sandbox-net.service")?;
    enable(seed, "voxnix-sandbox-dhcp.service")?;
    enable(seed, "voxnix-expose-filter.service")?;
    fs::create_dir_all(seed.join("etc/nixos-containers"))
        .map_err(io_err("creating etc/nixos-containers"))?;
    // A machine id of its own: nspawn refuses to link a container journal
    // whose id equals the host's, and two appliances must not look alike.
    put(
        seed,
        "/etc/machine-id",
        format!("{}\n", random_machine_id()?).as_bytes(),
        0o444,
    )?;
    put(
        seed,
        "/etc/hostname",
        format!("{}\n", opts.hostname).as_bytes(),
        0o644,
    )?;
    for f in &opts.extra_files {
        put(seed, &f.path, &f.contents, f.mode)?;
    }
    for unit in &opts.enable_units {
        enable(seed, unit)?;
    }
    Ok(())
}

/// Writes the list of host files init.sh bind-mounts (SOURCE<TAB>TARGET lines).
pub fn write_binds(path: &Path, opts: &SandboxOptions) -> Result<(), SandboxError> {
    let mut text = String::new();
    for (src, dst) in &opts.bind_files {
        let src = src.to_str().ok_or_else(|| SandboxError::Io {
            context: format!("bind source {} is not UTF-8", src.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        if [src, dst.as_str()]
            .iter()
            .any(|p| p.contains(['\t', '\n']) || !p.starts_with('/'))
        {
            return Err(SandboxError::Io {
                context: format!(
                    "bind {src} -> {dst}: paths must be absolute, without tabs or newlines"
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        text.push_str(&format!("{src}\t{dst}\n"));
    }
    fs::write(path, text).map_err(io_err("writing binds"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bridge_filter_is_the_modules_with_the_gateway_filled_in() {
        let f = super::bridge_filter("10.100.0.1", "br-vox");
        assert!(!f.contains("@GATEWAY@") && !f.contains("@BRIDGE@"), "{f}");
        assert!(f.contains("iifname \"br-vox\" oifname \"br-vox\" ct status != dnat drop"));
        assert!(f.contains("iifname \"vb-*\" oifname \"vb-*\" drop"));
        assert!(f.contains("arp saddr ip 10.100.0.1 drop"));
        let module = include_str!("../../nix/module.nix");
        assert!(module.contains("../data/nftables/bridge-filter.nft"));
    }

    #[test]
    fn the_lease_hook_is_the_modules_with_nft_filled_in() {
        let h = super::lease_hook("/usr/sbin/nft");
        assert!(
            !h.contains("@NFT@") && h.contains("nft=/usr/sbin/nft"),
            "{h}"
        );
        let module = include_str!("../../nix/module.nix");
        assert!(module.contains("../data/nftables/lease-hook.sh"));
    }
}
