//! Installing the voxnix daemon in an appliance, as NixOS's module would on a
//! real host: a `Type=notify` unit with a watchdog, the D-Bus policy, and a
//! configuration using the sandbox's host-image builder.

use std::path::Path;

use super::{ExtraFile, SandboxOptions};

/// The D-Bus policy file shipped with voxnix.
pub const DBUS_POLICY: &str = include_str!("../../data/dbus/org.voxnix.Voxnix1.conf");

/// Modules the sandbox daemon accepts (the sandbox boots no NixOS closure, so
/// these only exercise the spec and records).
pub const SANDBOX_MODULES: &[&str] = &[
    "code-server",
    "dev",
    "fish",
    "git",
    "ssh",
    "tailscale",
    "workspace",
];

/// Where the module library (the repo's `nix/` and `modules/`) appears inside
/// the appliance.
pub const LIBRARY: &str = "/usr/local/share/voxnix";

/// The voxnix tree whose `nix/` and `modules/` the sandbox daemon builds
/// from: `$VOXNIX_LIBRARY_DIR`, else the source tree this binary was built
/// from (the sandbox is a development and trial tool).
pub fn library_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("VOXNIX_LIBRARY_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.join("nix/library.nix").exists().then_some(dir)
}

/// The configuration the sandbox daemon runs with; `extra` is appended (it
/// may add keys and tables, but not repeat `[nix]`).
pub fn sandbox_config(extra: &str) -> String {
    sandbox_config_with(extra, "")
}

/// [`sandbox_config`] with `nix_extra`'s keys added to its `[nix]` table.
pub fn sandbox_config_with(extra: &str, nix_extra: &str) -> String {
    let modules: Vec<String> = SANDBOX_MODULES.iter().map(|m| format!("\"{m}\"")).collect();
    // The [nix] table comes last so that `extra`'s top-level keys stay top-level.
    format!(
        "# voxnix daemon configuration for the sandbox appliance\nbuilder = \"host-image\"\n# Used only if the module library cannot be read.\nmodules = [{}]\n{extra}\n\n\
         [nix]\n# Debian's Nix builds a real derivation per container (nix/sandbox/system.nix);\n\
         # the container boots the appliance's /usr. /nix is the appliance's overlay.\n\
         nix_bin_dir = \"/usr/bin\"\nlibrary_dir = \"{LIBRARY}\"\nentry = \"nix/sandbox/system.nix\"\n\
         extra_options = [[\"sandbox\", \"false\"], [\"build-users-group\", \"\"], [\"substituters\", \"\"]]\n{nix_extra}\n",
        modules.join(", ")
    )
}

/// Where the voxnix binary appears inside the appliance (bind-mounted from the
/// host, read-only), and the wrapper on the appliance's PATH.
pub const BINARY: &str = "/usr/local/lib/voxnix/voxnix";
pub const ON_PATH: &str = "/usr/local/bin/voxnix";

/// The confinement NixOS's `voxnix.service` has without a mount namespace
/// of its own (nix/module.nix, `daemonConfinement`, dir backend), so that the
/// sandbox's daemon meets the same limits: the capabilities, the system call
/// filter and the namespaces it may join (exec connects from inside a
/// container's user and mount namespaces). `tests/nixos_eval.rs` checks the
/// two agree.
pub const CONFINEMENT: &str = "\
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_LINUX_IMMUTABLE CAP_SYS_PTRACE CAP_SYS_ADMIN CAP_SYS_CHROOT
SystemCallArchitectures=native
SystemCallFilter=~@clock ~@cpu-emulation ~@debug ~@module ~@obsolete ~@raw-io ~@reboot ~@swap ~@mount
SystemCallErrorNumber=EPERM
RestrictAddressFamilies=AF_UNIX AF_NETLINK
RestrictNamespaces=user mnt net
RestrictRealtime=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
DevicePolicy=closed
";

/// Adds the daemon (binary `voxnix`, config `config_toml`) to the appliance's
/// boot: it is running, ready and owning its bus name when boot completes.
pub fn install(opts: &mut SandboxOptions, voxnix: &Path, config_toml: &str) {
    opts.bind_files.push((voxnix.to_path_buf(), BINARY.into()));
    if let Some(lib) = library_dir() {
        opts.bind_files.push((lib, LIBRARY.into()));
    }
    let voxnix = Path::new(BINARY);
    // As the module: network sockets only for the Tailscale API's client.
    let inet = crate::config::Config::parse_alone(config_toml)
        .is_ok_and(|c| c.tailscale_oauth_client_id.is_some());
    let inet = if inet {
        "RestrictAddressFamilies=AF_INET AF_INET6\n"
    } else {
        ""
    };
    let unit = format!(
        "[Unit]\nDescription=voxnix daemon (sandbox)\nAfter=dbus.service systemd-machined.service voxnix-sandbox-net.service\nWants=systemd-machined.service\n\n[Service]\nType=notify\nExecStart={} daemon --sandbox --config /etc/voxnix/config.toml\nRestart=on-failure\nRestartSec=1\nWatchdogSec=30\nEnvironment=VOXNIX_LOG=info\n{CONFINEMENT}{inet}\n[Install]\nWantedBy=multi-user.target\n",
        voxnix.display()
    );
    opts.extra_files.push(ExtraFile {
        path: "/etc/systemd/system/voxnix.service".into(),
        contents: unit.into_bytes(),
        mode: 0o644,
    });
    opts.extra_files.push(ExtraFile {
        path: "/etc/voxnix/config.toml".into(),
        contents: config_toml.as_bytes().to_vec(),
        mode: 0o644,
    });
    opts.extra_files.push(ExtraFile {
        path: "/etc/dbus-1/system.d/org.voxnix.Voxnix1.conf".into(),
        contents: DBUS_POLICY.as_bytes().to_vec(),
        mode: 0o644,
    });
    // `voxnix` on the appliance's PATH, for people trying it in `sandbox shell`.
    opts.extra_files.push(ExtraFile {
        path: ON_PATH.into(),
        contents: format!("#!/bin/sh\nexec '{}' \"$@\"\n", voxnix.display()).into_bytes(),
        mode: 0o755,
    });
    opts.enable_units.push("voxnix.service".into());
    opts.require_active.push("voxnix.service".into());
}
