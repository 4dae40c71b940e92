//! Checks that this machine can host a sandbox appliance, before anything is
//! created, so a missing package is a one-line fix instead of a failed boot.

use std::path::Path;

use super::SandboxError;

/// A program the appliance needs, and the Debian package that brings it.
struct Requirement {
    path: &'static str,
    package: &'static str,
    what: &'static str,
}

const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        path: "/lib/systemd/systemd",
        package: "systemd",
        what: "systemd (the appliance's PID 1)",
    },
    Requirement {
        path: "/usr/bin/systemd-nspawn",
        package: "systemd-container",
        what: "systemd-nspawn",
    },
    Requirement {
        path: "/lib/systemd/systemd-machined",
        package: "systemd-container",
        what: "systemd-machined",
    },
    Requirement {
        path: "/usr/bin/dbus-daemon",
        package: "dbus",
        what: "dbus-daemon (the appliance's system bus)",
    },
    Requirement {
        path: "/usr/sbin/dnsmasq",
        package: "dnsmasq-base",
        what: "dnsmasq (DHCP on br-vox)",
    },
    Requirement {
        path: "/sbin/ip",
        package: "iproute2",
        what: "ip (the container bridge)",
    },
    Requirement {
        path: "/usr/bin/unshare",
        package: "util-linux",
        what: "unshare (namespaces)",
    },
    Requirement {
        path: "/usr/bin/nsenter",
        package: "util-linux",
        what: "nsenter (running commands inside)",
    },
];

/// Runs every check and reports the first failure with the fix.
pub fn check() -> Result<(), SandboxError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::NotRoot);
    }
    let missing: Vec<String> = REQUIREMENTS
        .iter()
        .filter(|r| !Path::new(r.path).exists())
        .map(|r| format!("{} ({}: apt-get install {})", r.what, r.path, r.package))
        .collect();
    if !missing.is_empty() {
        return Err(SandboxError::MissingTools(missing.join("; ")));
    }
    for ns in ["pid", "mnt", "net", "uts", "ipc", "cgroup"] {
        if !Path::new(&format!("/proc/self/ns/{ns}")).exists() {
            return Err(SandboxError::NoNamespaces(format!(
                "this kernel has no {ns} namespaces (/proc/self/ns/{ns} is missing)"
            )));
        }
    }
    if !Path::new("/proc/filesystems").exists()
        || !std::fs::read_to_string("/proc/filesystems")
            .map(|s| s.contains("overlay"))
            .unwrap_or(false)
    {
        return Err(SandboxError::NoNamespaces(
            "the kernel has no overlay file system (modprobe overlay)".into(),
        ));
    }
    if let Some(n) = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        && n < 1024
    {
        tracing::warn!(
            "fs.inotify.max_user_instances is {n}: about 20 containers will exhaust it \
             (sysctl -w fs.inotify.max_user_instances=8192)"
        );
    }
    Ok(())
}
