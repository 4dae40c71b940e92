//! The sandbox's stand-in `container@.service` reads a conf file key for key
//! as NixOS's does. Each case writes a conf, starts the real unit in a
//! sandbox appliance with `systemd-nspawn` replaced by a recorder, and
//! compares the arguments the stand-in passed with what NixOS's start script
//! passes for the same file.
//!
//! NixOS's side is [`nixos_args`]: the start script's handling of each key,
//! as read in nixpkgs 00ef614eae7658e8c2d4ea0abbd476fa9d8065fc,
//! `nixos/modules/virtualisation/nixos-containers.nix` (`startScript`,
//! `serviceDirectives`). The stand-in's documented differences (it boots the
//! appliance's `/usr` instead of `SYSTEM_PATH`, binds `/nix` paths only when
//! the appliance has them and without `:idmap` on its overlay, and cannot
//! build `FLAKE` containers) are named in [`STAND_IN_ONLY`] and checked, not
//! ignored. Needs root.

use std::collections::BTreeMap;
use std::path::Path;

use voxnix::host::conf::ContainerConf;
use voxnix::sandbox::Sandbox;

/// Every key NixOS's start script reads from a conf file (the whole set:
/// a key outside it does nothing on NixOS).
const NIXOS_KEYS: &[&str] = &[
    "COPY_RESOLV_CONF",
    "FLAKE",
    "PRIVATE_NETWORK",
    "PRIVATE_USERS",
    "HOST_ADDRESS",
    "LOCAL_ADDRESS",
    "HOST_ADDRESS6",
    "LOCAL_ADDRESS6",
    "LOCAL_MAC_ADDRESS",
    "HOST_PORT",
    "HOST_BRIDGE",
    "NETWORK_NAMESPACE_PATH",
    "INTERFACES",
    "MACVLANS",
    "SYSTEM_PATH",
    "EXTRA_NSPAWN_FLAGS",
];

/// The keys NixOS passes into the container's environment (`--setenv`).
const SETENV_KEYS: &[&str] = &[
    "PRIVATE_NETWORK",
    "PRIVATE_USERS",
    "HOST_BRIDGE",
    "HOST_ADDRESS",
    "LOCAL_ADDRESS",
    "HOST_ADDRESS6",
    "LOCAL_ADDRESS6",
    "LOCAL_MAC_ADDRESS",
    "HOST_PORT",
];

/// What the stand-in passes and NixOS does not: its boot of the appliance's
/// `/usr` in place of `SYSTEM_PATH`'s init, and the DHCP client id NixOS
/// containers set in their own configuration.
const STAND_IN_ONLY: &[&str] = &[
    "--boot",
    "--bind-ro=/usr",
    "--bind-ro=/usr/lib/os-release:/etc/os-release",
    "--bind-ro=/usr/lib/voxnix-sandbox/dhcp-client-id.conf:/etc/systemd/network/80-container-host0.network.d/voxnix.conf",
];

/// NixOS's binds: the store, the Nix database and daemon socket, the
/// per-container profiles and GC roots (`:idmap` appended when the
/// container has a user namespace of its own).
fn nixos_binds(instance: &str) -> Vec<(String, String)> {
    vec![
        (
            "--bind-ro=/nix/store:/nix/store".into(),
            "/nix/store".into(),
        ),
        (
            "--bind-ro=/nix/var/nix/db:/nix/var/nix/db".into(),
            "/nix/var/nix/db".into(),
        ),
        (
            "--bind-ro=/nix/var/nix/daemon-socket:/nix/var/nix/daemon-socket".into(),
            "/nix/var/nix/daemon-socket".into(),
        ),
        (
            format!("--bind=/nix/var/nix/profiles/per-container/{instance}:/nix/var/nix/profiles"),
            format!("/nix/var/nix/profiles/per-container/{instance}"),
        ),
        (
            format!("--bind=/nix/var/nix/gcroots/per-container/{instance}:/nix/var/nix/gcroots"),
            format!("/nix/var/nix/gcroots/per-container/{instance}"),
        ),
    ]
}

/// NixOS's start script for `conf` (keys as systemd's EnvironmentFile= read
/// them): the options it passes to systemd-nspawn, as tokens (an option and
/// its separate value joined by a space), split into the options and the
/// trailing `EXTRA_NSPAWN_FLAGS` words. The bind sources are returned apart
/// (with whether `:idmap` goes on them), for the caller to hold against
/// what the appliance has.
struct NixosStart {
    options: Vec<String>,
    binds: Vec<(String, String)>,
    idmap: bool,
    extra: Vec<String>,
}

fn nixos_args(conf: &BTreeMap<String, String>, instance: &str) -> NixosStart {
    let get = |k: &str| conf.get(k).map(String::as_str).unwrap_or("");
    let mut o: Vec<String> = vec![
        "--keep-unit".into(),
        format!("-M {instance}"),
        format!("-D /var/lib/nixos-containers/{instance}"),
    ];
    // `[[ "${PRIVATE_NETWORK-}" = 1 ]]`
    if get("PRIVATE_NETWORK") == "1" {
        o.push("--private-network".into());
    }
    // `[[ -n "${PRIVATE_USERS-}" ]]`; `:idmap` for "pick" or a number > 0
    // (`=~ ^[[:digit:]]+$`).
    let users = get("PRIVATE_USERS");
    let mut idmap = false;
    if !users.is_empty() {
        o.push(format!("--private-users={users}"));
        idmap = users == "pick"
            || (users.bytes().all(|b| b.is_ascii_digit())
                && users.trim_start_matches('0').chars().next().is_some());
    }
    // Any address key set: a veth pair (not for HOST_BRIDGE alone).
    if [
        "HOST_ADDRESS",
        "LOCAL_ADDRESS",
        "HOST_ADDRESS6",
        "LOCAL_ADDRESS6",
        "LOCAL_MAC_ADDRESS",
    ]
    .iter()
    .any(|k| !get(k).is_empty())
    {
        o.push("--network-veth".into());
    }
    // `IFS=","; for i in $HOST_PORT`: one --port per comma-separated field.
    let ports = get("HOST_PORT");
    if !ports.is_empty() {
        let fields: Vec<&str> = ports
            .strip_suffix(',')
            .unwrap_or(ports)
            .split(',')
            .collect();
        o.extend(fields.iter().map(|p| format!("--port={p}")));
    }
    if !get("HOST_BRIDGE").is_empty() {
        o.push(format!("--network-bridge={}", get("HOST_BRIDGE")));
    }
    if !get("NETWORK_NAMESPACE_PATH").is_empty() {
        o.push(format!(
            "--network-namespace-path={}",
            get("NETWORK_NAMESPACE_PATH")
        ));
    }
    // Unquoted `for iface in ${INTERFACES-}`: split on white space.
    for i in get("INTERFACES").split_whitespace() {
        o.push(format!("--network-interface={i}"));
    }
    for i in get("MACVLANS").split_whitespace() {
        o.push(format!("--network-macvlan={i}"));
    }
    o.push("--notify-ready=yes".into());
    o.push("--kill-signal=SIGRTMIN+3".into());
    o.push("--link-journal=try-guest".into());
    for k in SETENV_KEYS {
        o.push(format!("--setenv {k}={}", get(k)));
    }
    o.push("--setenv PATH=*".into());
    NixosStart {
        options: o,
        binds: nixos_binds(instance),
        idmap,
        // Unquoted `${EXTRA_NSPAWN_FLAGS-}`, after every other option.
        extra: get("EXTRA_NSPAWN_FLAGS")
            .split_whitespace()
            .map(String::from)
            .collect(),
    }
}

/// The recorded argv, as tokens: options with a separate value joined to
/// it, `PATH=...` masked.
fn tokens(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if matches!(a.as_str(), "-M" | "-D" | "--setenv") {
            let v = it.next().cloned().unwrap_or_default();
            let v = if v.starts_with("PATH=") {
                "PATH=*".to_string()
            } else {
                v
            };
            out.push(format!("{a} {v}"));
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// Records systemd-nspawn's argv per instance, then fails (no container).
const RECORDER: &str =
    "#!/bin/sh\nprintf '%s\\0' \"$@\" > \"/run/nspawn-argv.$INSTANCE\"\nexit 1\n";

struct Bench {
    sandbox: Sandbox,
    n: usize,
}

impl Bench {
    async fn new() -> Bench {
        let sandbox = Sandbox::boot().await.expect("boot");
        let rec = sandbox.root().join("usr/local/lib/record-nspawn");
        std::fs::create_dir_all(rec.parent().expect("parent")).expect("dir");
        std::fs::write(&rec, RECORDER).expect("recorder");
        let out = sandbox
            .exec([
                "sh",
                "-c",
                "chmod 755 /usr/local/lib/record-nspawn && \
                 mount --bind /usr/local/lib/record-nspawn /usr/bin/systemd-nspawn",
            ])
            .await
            .expect("mount");
        assert!(out.status.success(), "{out:?}");
        Bench { sandbox, n: 0 }
    }

    /// Starts a container with `conf`; its recorded argv, or None when the
    /// start failed before nspawn, with the unit's log.
    async fn start(&mut self, conf: &str) -> (String, Option<Vec<String>>, String) {
        self.n += 1;
        let name = format!("k{}", self.n);
        let root = self.sandbox.root();
        std::fs::write(root.join(format!("etc/nixos-containers/{name}.conf")), conf).expect("conf");
        let _ = self
            .sandbox
            .exec(["systemctl", "start", &format!("container@{name}.service")])
            .await
            .expect("systemctl");
        let argv = std::fs::read(root.join(format!("run/nspawn-argv.{name}")))
            .ok()
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            });
        let log = self
            .sandbox
            .exec([
                "journalctl",
                "-u",
                &format!("container@{name}.service"),
                "--no-pager",
                "-o",
                "cat",
            ])
            .await
            .expect("journalctl");
        (
            name,
            argv,
            String::from_utf8_lossy(&log.stdout).into_owned(),
        )
    }

    /// The appliance's file system type at `path`, if it exists.
    async fn fs_type(&self, path: &str) -> Option<String> {
        let out = self
            .sandbox
            .exec(["stat", "-f", "-c", "%T", path])
            .await
            .expect("stat");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts `conf` and checks the stand-in passed what NixOS would.
    async fn check(&mut self, conf: &str) {
        let parsed = voxnix::host::conf::parse(conf);
        for k in parsed.keys() {
            assert!(NIXOS_KEYS.contains(&k.as_str()), "{k} is not a NixOS key");
        }
        let (name, argv, log) = self.start(conf).await;
        let argv = argv.unwrap_or_else(|| panic!("nspawn was not run for:\n{conf}\n{log}"));
        let want = nixos_args(&parsed, &name);
        let mut got = tokens(&argv);
        // The stand-in's init in place of SYSTEM_PATH's: the last argument.
        assert_eq!(
            got.pop().as_deref(),
            Some("systemd.firstboot=off"),
            "{argv:?}"
        );
        // EXTRA_NSPAWN_FLAGS last, in order, as on NixOS.
        let split = got.len().checked_sub(want.extra.len()).expect("short argv");
        assert_eq!(
            got[split..],
            want.extra[..],
            "EXTRA_NSPAWN_FLAGS for:\n{conf}"
        );
        got.truncate(split);
        for only in STAND_IN_ONLY {
            let i = got
                .iter()
                .position(|t| t == only)
                .unwrap_or_else(|| panic!("{only} missing: {got:?}"));
            got.remove(i);
        }
        let mut expected = want.options.clone();
        for (flag, src) in &want.binds {
            // Present on the appliance (NixOS always has them) and idmapped
            // unless on the appliance's overlay, which cannot be.
            match self.fs_type(src).await {
                None => continue,
                Some(fs) => {
                    let idmap = want.idmap && fs != "overlayfs";
                    expected.push(format!("{flag}{}", if idmap { ":idmap" } else { "" }));
                }
            }
        }
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "for the conf:\n{conf}");
    }
}

#[tokio::test]
async fn the_stand_in_reads_each_conf_key_as_nixos_does() {
    let mut bench = Bench::new().await;

    // The file voxnix writes, as it writes it.
    let voxnix = ContainerConf {
        system_path: Some("/nix/store/00000000000000000000000000000000-nixos-system-box".into()),
        private_network: true,
        host_bridge: Some("br-vox".into()),
        host_ports: vec![(20000, 8080), (20001, 22)],
        extra_nspawn_flags: vec![
            "--bind=/var/lib/voxnix/storage/x:/workspace:idmap".into(),
            "--load-credential=tailscale-auth-key:/run/keys/ts".into(),
        ],
    }
    .render()
    .expect("render");
    bench.check(&voxnix).await;

    let base = "COPY_RESOLV_CONF=0\n";
    let cases = [
        // Nothing but the required key.
        String::new(),
        // PRIVATE_NETWORK only when exactly 1.
        "PRIVATE_NETWORK=1\n".into(),
        "PRIVATE_NETWORK=0\n".into(),
        "PRIVATE_NETWORK=yes\n".into(),
        // PRIVATE_USERS: passed as given; :idmap for pick or a number > 0.
        "PRIVATE_USERS=pick\n".into(),
        "PRIVATE_USERS=no\n".into(),
        "PRIVATE_USERS=identity\n".into(),
        "PRIVATE_USERS=0\n".into(),
        "PRIVATE_USERS=00\n".into(),
        "PRIVATE_USERS=65536\n".into(),
        "PRIVATE_USERS=+65536\n".into(),
        "PRIVATE_USERS=\"\"\n".into(),
        // Each address key alone makes a veth pair; a bridge alone does not.
        "HOST_ADDRESS=10.1.0.1\n".into(),
        "LOCAL_ADDRESS=10.1.0.2/24\n".into(),
        "HOST_ADDRESS6=fc00::1\n".into(),
        "LOCAL_ADDRESS6=fc00::2/7\n".into(),
        "LOCAL_MAC_ADDRESS=02:00:00:00:00:01\n".into(),
        "HOST_BRIDGE=br-vox\n".into(),
        // Ports: one --port per comma-separated field.
        "HOST_PORT=tcp:2222:22,8080,udp:53:5353\n".into(),
        "HOST_PORT=8080,\n".into(),
        "NETWORK_NAMESPACE_PATH=/run/netns/x\n".into(),
        // Word lists.
        "INTERFACES=\"eth1 eth2\"\nMACVLANS=\"mv1\"\n".into(),
        "INTERFACES=\"\"\nMACVLANS=\"\"\n".into(),
        "EXTRA_NSPAWN_FLAGS=\"--bind=/a:/b  --capability=CAP_NET_ADMIN\"\n".into(),
        "EXTRA_NSPAWN_FLAGS=\"\"\n".into(),
        // Read, and here without effect on the arguments in either: NixOS
        // boots it (and adds --personality=x86 when it is an i686 system,
        // which this path is not); the stand-in cannot boot it.
        "SYSTEM_PATH=/nix/store/x-system\n".into(),
        // All at once.
        "PRIVATE_NETWORK=1\nPRIVATE_USERS=pick\nHOST_BRIDGE=br-vox\nHOST_PORT=80\n\
         INTERFACES=\"i1\"\nMACVLANS=\"m1 m2\"\nEXTRA_NSPAWN_FLAGS=\"--x=1 --y\"\n"
            .into(),
    ];
    for case in &cases {
        bench.check(&format!("{base}{case}")).await;
    }

    // COPY_RESOLV_CONF=1 copies the appliance's resolv.conf into the root.
    let (name, argv, log) = bench.start("COPY_RESOLV_CONF=1\n").await;
    assert!(argv.is_some(), "{log}");
    let root = bench.sandbox.root();
    assert_eq!(
        std::fs::read(root.join(format!("var/lib/nixos-containers/{name}/etc/resolv.conf"))).ok(),
        std::fs::read(root.join("etc/resolv.conf")).ok(),
        "resolv.conf copied"
    );
    let (name, _, _) = bench.start("COPY_RESOLV_CONF=0\n").await;
    assert!(
        !root
            .join(format!("var/lib/nixos-containers/{name}/etc/resolv.conf"))
            .exists(),
        "not copied with 0"
    );
    // Without COPY_RESOLV_CONF the start fails before nspawn (nounset), as
    // on NixOS.
    let (_, argv, log) = bench.start("PRIVATE_NETWORK=1\n").await;
    assert!(argv.is_none(), "started without COPY_RESOLV_CONF");
    assert!(log.contains("COPY_RESOLV_CONF: unbound variable"), "{log}");
    // FLAKE: NixOS builds the system first (nixos-container update); the
    // stand-in refuses, saying why, never boots something else.
    let (_, argv, log) = bench.start("COPY_RESOLV_CONF=0\nFLAKE=github:x/y\n").await;
    assert!(argv.is_none(), "a FLAKE container was booted");
    assert!(log.contains("FLAKE containers cannot be built"), "{log}");

    bench.sandbox.shutdown().expect("shutdown");
}

/// The keys voxnix writes are NixOS keys, and the stand-in reads no other:
/// every `$KEY` the start script uses is one NixOS reads (or its own).
#[test]
fn voxnix_and_the_stand_in_use_only_nixos_keys() {
    let conf = ContainerConf {
        system_path: Some("/nix/store/x".into()),
        private_network: true,
        host_bridge: Some("br".into()),
        host_ports: vec![(20000, 80)],
        extra_nspawn_flags: vec!["--a".into()],
    }
    .render()
    .expect("render");
    for k in voxnix::host::conf::parse(&conf).keys() {
        assert!(NIXOS_KEYS.contains(&k.as_str()), "voxnix writes {k}");
    }
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sandbox/assets/container-start"),
    )
    .expect("script");
    // Upper-case shell variables the script reads (comments aside).
    let script: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut used = std::collections::BTreeSet::new();
    let bytes = script.as_bytes();
    for (i, _) in script.match_indices('$') {
        let rest = &script[i + 1..];
        let rest = rest.strip_prefix('{').unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
            .collect();
        if name.len() > 1 && bytes.get(i + 1) != Some(&b'(') {
            used.insert(name);
        }
    }
    // The stand-in's own: its local, and the environment it passes on.
    let own = ["NIX_BIND_OPT", "PATH", "INSTANCE"];
    for name in &used {
        assert!(
            NIXOS_KEYS.contains(&name.as_str()) || own.contains(&name.as_str()),
            "the stand-in reads {name}, which NixOS does not"
        );
    }
    // The keys it passes on with --setenv, by name (`${!k-}`).
    let setenv = script
        .lines()
        .find_map(|l| l.strip_prefix("for k in "))
        .expect("the --setenv loop");
    let setenv: Vec<&str> = setenv
        .split(';')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(setenv, SETENV_KEYS, "the keys passed with --setenv");
    // And it reads every key NixOS does.
    for k in NIXOS_KEYS {
        assert!(used.contains(*k), "the stand-in ignores {k}");
    }
}
