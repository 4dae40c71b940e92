//! The NixOS side evaluated with nixpkgs' **real** lib (`nix/tests/eval/`):
//! `services.voxnix` with its defaults, with every option set, and with each
//! assertion made to fire; `nix/mkContainer.nix` with each module of
//! `modules/` alone, all together and with every setting; the flake's
//! outputs with a stand-in nixpkgs input. Every evaluation is forced whole
//! (`--strict`) and read-only (`--readonly-mode`: nothing is written to the
//! store). Mutation tests put known bugs back into a copy of the tree and
//! check that the suite catches them.
//!
//! The lib is found by `nix/tests/eval/nixpkgs-lib.nix`: `VOXNIX_NIXPKGS_LIB`,
//! `<nixpkgs>` on `NIX_PATH`, `../shared/nixpkgs-lib`, else the pinned
//! revision fetched by hash. Without one, these tests fail and say so.
//!
//! Run alone: `cargo nextest run --test nixos_eval` (or `cargo test --test nixos_eval`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use voxnix::config::Config;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const HOW_TO_GET_A_LIB: &str = "\
the evaluation suite needs nixpkgs' real lib. Provide one of:
  - VOXNIX_NIXPKGS_LIB=/path/to/nixpkgs/lib (or a nixpkgs or nixpkgs.lib checkout)
  - NIX_PATH=nixpkgs=/path/to/nixpkgs
  - ../shared/nixpkgs-lib beside the repository (nixpkgs.lib at de42d44212d207476489bce163375d8306a26d59)
  - network access to fetch that revision by its hash";

/// `nix-instantiate --eval --strict --json --readonly-mode ARGS` in the
/// repository: the JSON, or Nix's error text.
fn try_eval(args: &[&str]) -> Result<Json, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--readonly-mode"])
        // Debian's nix-bin names a build group its package does not create.
        .args(["--option", "build-users-group", ""])
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run nix-instantiate ({e}): install Debian's nix-bin (scripts/host-setup.sh does)")
        });
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))
}

fn eval(args: &[&str]) -> Json {
    try_eval(args).unwrap_or_else(|e| {
        if e.contains("voxnix eval:") || e.contains("fetchTarball") || e.contains("nixpkgs.lib") {
            panic!("{HOW_TO_GET_A_LIB}\n\nNix said:\n{e}");
        }
        panic!("nix-instantiate {} failed:\n{e}", args.join(" "))
    })
}

fn host(attr: &str) -> Json {
    eval(&["nix/tests/eval/host.nix", "-A", attr])
}

fn container(attr: &str) -> Json {
    eval(&["nix/tests/eval/container.nix", "-A", attr])
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

fn service<'a>(case: &'a Json, unit: &str) -> &'a Json {
    let s = &case["config"]["systemd"]["services"][unit];
    assert!(s.is_object(), "no systemd.services.{unit}");
    s
}

/// A unit setting as a list (NixOS unit settings are a value or a list).
fn setting_list(v: &Json) -> Vec<String> {
    match v {
        Json::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_string())
            .collect(),
        Json::Null => Vec::new(),
        other => vec![
            other
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| other.to_string()),
        ],
    }
}

fn config_toml(case: &Json) -> (Config, toml::Value) {
    let value = toml::Value::try_from(&case["configToml"]).unwrap_or_else(|e| {
        panic!(
            "config.toml's value is not TOML ({e}): {}",
            case["configToml"]
        )
    });
    let text = toml::to_string(&value).unwrap();
    let config = Config::parse_alone(&text).unwrap_or_else(|e| {
        panic!("the daemon refuses the config.toml the module renders: {e}\n{text}")
    });
    (config, value)
}

fn is_store_path(s: &str) -> bool {
    s.strip_prefix("/nix/store/")
        .is_some_and(|rest| rest.len() > 33 && rest.as_bytes()[32] == b'-')
}

// ---- the lib ----------------------------------------------------------------

#[test]
fn a_real_nixpkgs_lib_is_found_and_works_on_this_nix() {
    let v = eval(&[
        "-E",
        "let l = import ./nix/tests/eval/nixpkgs-lib.nix { }; in { inherit (l) source dir fallbacks; \
         version = l.lib.version; hasEvalModules = l.lib ? evalModules; \
         hasReadFileType = builtins ? readFileType; \
         fileset = map toString (l.lib.fileset.toList (l.lib.fileset.unions [ ./nix/module.nix ./modules ])); }",
    ]);
    eprintln!("nixpkgs lib: {} ({})", v["source"], v["dir"]);
    assert_eq!(v["hasEvalModules"], true, "not a nixpkgs lib: {v}");
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()));
    // lib.fileset uses builtins.readFileType, which Debian's Nix 2.8 lacks:
    // the harness supplies it then, and only then.
    let fallbacks = strings(&v["fallbacks"]);
    assert_eq!(
        fallbacks.contains(&"readFileType".to_string()),
        v["hasReadFileType"] == false,
        "{v}"
    );
    let files = strings(&v["fileset"]);
    assert!(
        files.iter().any(|f| f.ends_with("/nix/module.nix")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("/modules/git.nix")),
        "{files:?}"
    );
}

#[test]
fn a_lib_that_is_not_one_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("nix-instantiate")
        .args([
            "--eval",
            "--strict",
            "--readonly-mode",
            "--option",
            "build-users-group",
            "",
        ])
        .args(["-E", "(import ./nix/tests/eval/nixpkgs-lib.nix { }).source"])
        .env("VOXNIX_NIXPKGS_LIB", dir.path())
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("VOXNIX_NIXPKGS_LIB") && err.contains("holds no nixpkgs lib"),
        "{err}"
    );
}

// ---- services.voxnix --------------------------------------------------------

#[test]
fn the_module_with_defaults_evaluates_to_a_whole_host() {
    let d = host("cases.defaults");
    assert_eq!(
        d["failedAssertions"],
        Json::Array(vec![]),
        "assertions fail with defaults"
    );
    assert_eq!(d["warnings"], Json::Array(vec![]), "warnings with defaults");

    // config.toml: what the daemon loads, and what nix/example-config.toml
    // says it is, but for the store paths the module computes.
    let (config, value) = config_toml(&d);
    assert_eq!(config.conf_dir, Path::new("/etc/nixos-containers"));
    let example: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("nix/example-config.toml")).unwrap())
            .unwrap();
    let mut rendered = value.clone();
    for key in ["library_dir", "nix_bin_dir", "nixpkgs"] {
        let got = rendered["nix"].as_table_mut().unwrap().remove(key);
        assert!(got.is_some(), "nix.{key} is rendered");
    }
    let mut expected = example.clone();
    for key in ["library_dir", "nix_bin_dir", "nixpkgs"] {
        expected["nix"].as_table_mut().unwrap().remove(key);
    }
    assert_eq!(
        rendered, expected,
        "config.toml differs from nix/example-config.toml"
    );
    assert!(is_store_path(value["nix"]["library_dir"].as_str().unwrap()));
    assert!(
        value["nix"]["nix_bin_dir"]
            .as_str()
            .unwrap()
            .ends_with("-nix-2.28.3/bin")
    );

    // The daemon's unit.
    let daemon = service(&d, "voxnix");
    let sc = &daemon["serviceConfig"];
    assert_eq!(sc["Type"], "notify");
    assert_eq!(sc["WatchdogSec"], 30);
    assert!(
        sc["ExecStart"]
            .as_str()
            .unwrap()
            .ends_with("-voxnix-0.1.0/bin/voxnix daemon --config /etc/voxnix/config.toml"),
        "{}",
        sc["ExecStart"]
    );
    let writable = setting_list(&sc["ReadWritePaths"]);
    for path in [
        "/var/lib/voxnix",
        "/etc/nixos-containers",
        "/var/lib/nixos-containers",
        "/nix/var/nix/profiles/per-container",
        "/var/lib/voxnix/storage",
    ] {
        assert!(
            writable.contains(&path.to_string()),
            "{path} not writable: {writable:?}"
        );
    }
    assert_eq!(sc["ProtectSystem"], "strict");
    // exec joins containers' user and mount namespaces, nothing else.
    assert_eq!(sc["RestrictNamespaces"], "user mnt net");
    assert!(setting_list(&sc["SystemCallFilter"]).contains(&"~@mount".to_string()));
    assert!(setting_list(&sc["DeviceAllow"]).is_empty(), "{sc}");
    assert_eq!(
        daemon["restartTriggers"][0],
        d["etc"]["voxnix/config.toml"]["source"]
    );

    // dnsmasq on the bridge only.
    let dhcp = service(&d, "voxnix-dnsmasq");
    let exec = dhcp["serviceConfig"]["ExecStart"].as_str().unwrap();
    assert!(
        exec.contains("--interface=br-vox")
            && exec.contains("--dhcp-range=10.100.0.100,10.100.0.200,12h")
            && exec.contains("--dhcp-ignore-names")
            && exec.contains("--dhcp-script=/nix/store/"),
        "{exec}"
    );
    // The bridge filter between containers, the file the sandbox loads too.
    let filter = service(&d, "voxnix-bridge-filter");
    let load = filter["serviceConfig"]["ExecStart"].as_str().unwrap_or("");
    assert!(
        load.contains("nftables")
            && load.contains("/bin/nft -f ")
            && load.contains("voxnix-bridge-filter.nft"),
        "{filter}"
    );
    assert!(
        strings(&filter["partOf"]).contains(&"nftables.service".to_string()),
        "reloaded with the firewall: {filter}"
    );
    assert_eq!(
        filter["unitConfig"]["ReloadPropagatedFrom"],
        serde_json::json!(["nftables.service"]),
        "an nftables reload flushes the ruleset: {filter}"
    );
    let reload = setting_list(&filter["serviceConfig"]["ExecReload"]);
    assert!(
        reload.len() == 4
            && reload[..2].iter().all(|r| r.contains("nft delete table"))
            && reload[2].contains("/bin/nft -f ")
            && reload[3].contains("reload"),
        "{reload:?}"
    );
    // Reloaded, its set of leases is filled again from dnsmasq's lease file.
    let refill = filter["serviceConfig"]["ExecStartPost"]
        .as_str()
        .unwrap_or("");
    assert!(
        refill.contains("voxnix-lease-hook reload /var/lib/voxnix-dnsmasq/leases"),
        "{filter}"
    );
    let hook_script = exec
        .split("--dhcp-script=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
        .trim_matches('\'');
    assert!(
        refill.starts_with(hook_script),
        "one script: {refill} / {hook_script}"
    );
    // The expose filter the daemon writes, loaded by systemd (the daemon
    // has no network capability), again after a firewall flush.
    let expose = service(&d, "voxnix-expose-filter");
    let load = expose["serviceConfig"]["ExecStart"].as_str().unwrap_or("");
    assert!(
        load.contains("nftables")
            && load.ends_with("/bin/nft -f /var/lib/voxnix/expose-filter.nft"),
        "{expose}"
    );
    assert_eq!(
        expose["unitConfig"]["ConditionPathExists"], "/var/lib/voxnix/expose-filter.nft",
        "{expose}"
    );
    assert_eq!(
        expose["unitConfig"]["ReloadPropagatedFrom"],
        serde_json::json!(["nftables.service"]),
        "{expose}"
    );
    assert!(
        strings(&expose["before"]).contains(&"voxnix.service".to_string())
            && strings(&expose["partOf"]).contains(&"nftables.service".to_string()),
        "{expose}"
    );
    assert!(expose["serviceConfig"]["ExecStop"].is_null(), "{expose}");
    assert_eq!(
        expose["unitConfig"]["StartLimitIntervalSec"], 0,
        "restarted at every expose: {expose}"
    );
    assert!(
        d["config"]["systemd"]["services"]["voxnix-telegram"].is_null(),
        "the bot is off by default"
    );

    let rules = strings(&d["config"]["systemd"]["tmpfiles"]["rules"]);
    assert!(
        rules.contains(&"d /nix/var/nix/profiles/per-container 0700 root root -".into()),
        "{rules:?}"
    );
    assert!(
        rules.contains(&"d /var/lib/nixos-containers 0700 root root -".into()),
        "{rules:?}"
    );
    assert!(
        rules.contains(&"d /var/lib/voxnix/storage 0700 root root -".into()),
        "{rules:?}"
    );

    let net = &d["config"]["networking"];
    assert_eq!(net["bridges"]["br-vox"]["interfaces"], Json::Array(vec![]));
    assert_eq!(
        net["interfaces"]["br-vox"]["ipv4"]["addresses"][0]["address"],
        "10.100.0.1"
    );
    assert_eq!(net["nat"]["enable"], true);
    assert_eq!(strings(&net["nat"]["internalInterfaces"]), ["br-vox"]);
    assert_eq!(
        net["firewall"]["interfaces"]["br-vox"]["allowedUDPPorts"],
        serde_json::json!([53, 67])
    );
    assert_eq!(
        d["config"]["systemd"]["network"]["networks"],
        serde_json::json!({})
    );
    assert_eq!(d["config"]["boot"]["enableContainers"], true);
    assert!(d["config"]["users"]["groups"]["voxnix"].is_object());
    assert_eq!(
        d["config"]["services"]["dbus"]["packages"][0],
        d["config"]["services"]["voxnix"]["package"]
    );

    // The package's source went through lib.fileset (readFileType).
    assert!(
        is_store_path(d["package"]["src"].as_str().unwrap()),
        "{}",
        d["package"]
    );
}

/// A unit setting as systemd reads it (lists space-separated, booleans yes/no).
fn unit_value(v: &Json) -> String {
    match v {
        Json::Array(items) => items.iter().map(unit_value).collect::<Vec<_>>().join(" "),
        Json::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The sandbox's daemon runs with the confinement the module gives the
/// daemon on NixOS (dir backend), key for key, so the sandbox tests meet the
/// same limits (exec's namespace joins among them).
#[test]
fn the_sandbox_daemon_is_confined_as_the_modules() {
    let d = host("cases.defaults");
    let sc = &service(&d, "voxnix")["serviceConfig"];
    let sandbox = voxnix::sandbox::daemon::CONFINEMENT;
    let mut keys = 0;
    for line in sandbox.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').unwrap();
        assert_eq!(
            unit_value(&sc[key]),
            value,
            "{key} differs between nix/module.nix and the sandbox"
        );
        keys += 1;
    }
    assert!(keys >= 10, "{sandbox}");
    // Every hardening key of the module's namespace-free confinement is there.
    for key in [
        "CapabilityBoundingSet",
        "SystemCallFilter",
        "RestrictNamespaces",
        "NoNewPrivileges",
    ] {
        assert!(
            sandbox.contains(&format!("{key}=")),
            "{key} missing from the sandbox's unit"
        );
    }
}

#[test]
fn the_module_with_every_option_set_evaluates() {
    let e = host("cases.everything");
    assert_eq!(e["failedAssertions"], Json::Array(vec![]));
    // Chat ids and admin owners given inline: said to be in the store.
    let warnings = strings(&e["warnings"]);
    assert!(
        warnings.len() == 1
            && warnings[0].contains("world-readable Nix store")
            && warnings[0].contains("accessFile"),
        "{warnings:?}"
    );
    let (config, value) = config_toml(&e);
    assert_eq!(
        config.access_file.as_deref(),
        Some(std::path::Path::new("/run/agenix/access"))
    );
    assert_eq!(config.bridge, "br-test");
    assert_eq!(config.max_containers_per_owner, 3);
    assert!(config.modules.contains(&"my-tools".to_string()));
    assert_eq!(value["storage"]["zfs_pool"].as_str(), Some("rpool"));
    assert_eq!(value["storage"]["mount_root"].as_str(), Some("/srv/voxnix"));
    assert_eq!(
        value["nix"]["extra_options"],
        toml::Value::try_from(serde_json::json!([["sandbox", "false"]])).unwrap()
    );
    assert_eq!(
        value["tailscale_auth_key_file"].as_str(),
        Some("/run/agenix/tailscale")
    );
    assert_eq!(
        (
            value["tailscale_oauth_client_id"].as_str(),
            value["tailscale_oauth_client_secret_file"].as_str()
        ),
        (Some("k123CNTRL"), Some("/run/agenix/tailscale-oauth"))
    );
    assert_eq!(
        value["telegram"]["allowed_chat_ids"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Secrets are paths handed to systemd, never values in the file.
    let text = toml::to_string(&value).unwrap();
    assert!(
        !text.contains("/run/agenix/telegram") && !text.contains("/run/agenix/llm"),
        "{text}"
    );

    let bot = service(&e, "voxnix-telegram");
    assert_eq!(
        setting_list(&bot["serviceConfig"]["LoadCredential"]),
        [
            "telegram-token:/run/agenix/telegram",
            "llm-api-key:/run/agenix/llm"
        ]
    );
    assert_eq!(bot["serviceConfig"]["User"], "voxnix-telegram");
    assert!(
        strings(&e["config"]["users"]["users"]["voxnix-telegram"]["extraGroups"])
            .contains(&"voxnix".into())
    );

    // ZFS: the parent dataset's unit, the daemon without a mount namespace.
    let parent = service(&e, "voxnix-zfs-parent");
    let script = parent["script"].as_str().unwrap();
    assert!(
        script.contains("parent=rpool/vox/ws") && script.contains("root=/srv/voxnix"),
        "{script}"
    );
    assert_eq!(e["config"]["boot"]["supportedFilesystems"]["zfs"], true);
    assert_eq!(
        e["config"]["boot"]["zfs"]["extraPools"],
        Json::Array(vec![]),
        "importPool = false"
    );
    let sc = &service(&e, "voxnix")["serviceConfig"];
    assert!(setting_list(&sc["CapabilityBoundingSet"]).contains(&"CAP_SYS_ADMIN".to_string()));
    assert!(
        sc["ReadWritePaths"].is_null() && sc["ProtectSystem"].is_null(),
        "{sc}"
    );
    assert!(
        sc["ExecStart"]
            .as_str()
            .unwrap()
            .contains("-voxnix-custom-9.9/bin/voxnix daemon")
    );

    let net = &e["config"]["networking"];
    assert_eq!(net["nat"]["enable"], false);
    assert_eq!(
        net["interfaces"]["br-test"]["ipv4"]["addresses"][0]["address"],
        "10.1.2.1"
    );
    let exec = service(&e, "voxnix-dnsmasq")["serviceConfig"]["ExecStart"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        exec.contains("--dhcp-range=10.1.2.10,10.1.2.20,1h"),
        "{exec}"
    );
}

#[test]
fn nixpkgs_is_passed_as_a_path_not_copied_into_the_store() {
    // The stand-in pkgs.path does not exist: copying it would fail the
    // evaluation, and a real nixpkgs would be copied on every rebuild.
    let d = host("cases.defaults");
    assert_eq!(d["configToml"]["nix"]["nixpkgs"], "/nonexistent/nixpkgs");
    let e = host("cases.everything");
    assert_eq!(e["configToml"]["nix"]["nixpkgs"], "/srv/nixpkgs");
}

#[test]
fn each_assertion_fires_with_its_message() {
    let cases = host("assertions");
    let cases = cases.as_object().unwrap();
    for (name, case) in cases {
        let expect = case["expect"].as_str().unwrap();
        let failed = strings(&case["failed"]);
        assert!(
            failed.len() == 1 && failed[0].contains(expect),
            "assertion case {name}: expected one failed assertion saying {expect:?}, got {failed:?}"
        );
    }
    // Every assertion the module makes has a case.
    let count = host("cases.defaults.assertionCount").as_u64().unwrap();
    let distinct: std::collections::BTreeSet<String> = cases
        .values()
        .map(|c| {
            strings(&c["failed"])[0]
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        cases.len() as u64 >= count,
        "{count} assertions but only {} cases ({distinct:?})",
        cases.len()
    );
}

#[test]
fn a_bot_that_lets_nobody_in_is_warned_about() {
    let b = host("cases.botForNobody");
    assert_eq!(b["failedAssertions"], Json::Array(vec![]));
    let warnings = strings(&b["warnings"]);
    assert!(
        warnings.len() == 1 && warnings[0].contains("the bot refuses everyone"),
        "{warnings:?}"
    );
}

#[test]
fn who_may_use_the_bot_can_stay_out_of_the_store() {
    let b = host("cases.botWithAccessFile");
    assert_eq!(b["failedAssertions"], Json::Array(vec![]));
    assert_eq!(b["warnings"], Json::Array(vec![]));
    let (config, value) = config_toml(&b);
    assert_eq!(
        config.access_file.as_deref(),
        Some(std::path::Path::new("/run/agenix/access"))
    );
    assert_eq!(
        value["telegram"]["allowed_chat_ids"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[test]
fn settings_overrides_drive_writable_paths_tmpfiles_and_hardening() {
    // Only settings.storage.backend says zfs: the daemon must get the ZFS
    // hardening (no mount namespace, CAP_SYS_ADMIN, /dev/zfs) and the parent
    // dataset's unit, mounted where settings say.
    let z = host("cases.settingsStorage");
    assert_eq!(z["failedAssertions"], Json::Array(vec![]));
    let sc = &service(&z, "voxnix")["serviceConfig"];
    assert!(
        setting_list(&sc["CapabilityBoundingSet"]).contains(&"CAP_SYS_ADMIN".to_string()),
        "{sc}"
    );
    assert_eq!(setting_list(&sc["DeviceAllow"]), ["/dev/zfs rw"]);
    assert!(sc["ReadWritePaths"].is_null(), "{sc}");
    assert!(
        !setting_list(&sc["SystemCallFilter"]).contains(&"~@mount".to_string()),
        "zfs mounts: {sc}"
    );
    let script = service(&z, "voxnix-zfs-parent")["script"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(script.contains("root=/srv/by-settings-zfs"), "{script}");
    assert!(
        setting_list(&service(&z, "voxnix")["requires"])
            .contains(&"voxnix-zfs-parent.service".to_string())
    );

    // Only settings.storage.dir_root moves the dir backend's root.
    let d = host("cases.settingsDirRoot");
    let writable = setting_list(&service(&d, "voxnix")["serviceConfig"]["ReadWritePaths"]);
    assert!(
        writable.contains(&"/srv/by-settings".to_string()),
        "{writable:?}"
    );
    assert!(
        !writable.contains(&"/var/lib/voxnix/storage".to_string()),
        "{writable:?}"
    );
    let rules = strings(&d["config"]["systemd"]["tmpfiles"]["rules"]);
    assert!(
        rules.contains(&"d /srv/by-settings 0700 root root -".into()),
        "{rules:?}"
    );
    assert_eq!(d["configToml"]["storage"]["dir_root"], "/srv/by-settings");
}

#[test]
fn container_paths_follow_the_hosts_state_version() {
    let old = host("cases.oldStateVersion");
    assert_eq!(old["failedAssertions"], Json::Array(vec![]));
    let (config, _) = config_toml(&old);
    assert_eq!(
        config.conf_dir,
        Path::new("/etc/containers"),
        "the daemon writes where container@.service reads"
    );
    let writable = setting_list(&service(&old, "voxnix")["serviceConfig"]["ReadWritePaths"]);
    assert!(
        writable.contains(&"/etc/containers".to_string())
            && writable.contains(&"/var/lib/containers".to_string()),
        "{writable:?}"
    );
    assert!(
        !writable.iter().any(|p| p.contains("nixos-containers")),
        "{writable:?}"
    );
    let rules = strings(&old["config"]["systemd"]["tmpfiles"]["rules"]);
    assert!(
        rules.contains(&"d /var/lib/containers 0700 root root -".into()),
        "{rules:?}"
    );
}

#[test]
fn the_bridge_under_networkd_needs_no_carrier_and_does_not_hold_up_boot() {
    let n = host("cases.networkd");
    let net = &n["config"]["systemd"]["network"]["networks"]["40-br-vox"];
    assert_eq!(
        net["networkConfig"]["ConfigureWithoutCarrier"], true,
        "{net}"
    );
    assert_eq!(net["linkConfig"]["RequiredForOnline"], "no", "{net}");
    let nm = host("cases.networkManager");
    assert_eq!(
        strings(&nm["config"]["networking"]["networkmanager"]["unmanaged"]),
        ["br-vox"]
    );
}

#[test]
fn extra_modules_are_copied_with_their_directory() {
    let copies = host("extraCopies");
    let e = host("cases.everything");
    let script = e["library"].as_str().unwrap();
    let tools = copies["my-tools"].as_str().unwrap();
    assert!(
        script.contains(&format!("import {tools}/my-tools.nix")),
        "the stub must import the file inside a copy of its directory:\n{script}"
    );
    let dir = host("cases.extraModuleDir");
    let my_dir = copies["my-dir"].as_str().unwrap();
    assert!(
        dir["library"]
            .as_str()
            .unwrap()
            .contains(&format!("import {my_dir}/default.nix")),
        "{}",
        dir["library"]
    );
    assert!(strings(&dir["configToml"]["modules"]).contains(&"my-dir".to_string()));

    // The copy really works: put the directory into the store as the module
    // does (a few bytes) and import the stub's path: its relative import
    // resolves inside the copy.
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--read-write-mode", "--strict", "--json", "--option", "build-users-group", ""])
        .args([
            "-E",
            "let d = builtins.path { path = ./nix/tests/eval/fixtures/extra-modules/my-tools; name = \"voxnix-extra-my-tools\"; }; \
             m = import \"${d}/my-tools.nix\"; \
             in { dir = toString d; text = (m.module { pkgs = { jq = null; }; }).environment.etc.\"my-tools/greeting\".text; }",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dir"], tools, "the store copy is the one the stub names");
    assert_eq!(v["text"], "hello from a relative import");
}

#[test]
fn option_paths_come_from_the_real_module_system() {
    let paths = strings(&host("optionPaths"));
    for wanted in [
        "enable",
        "package",
        "settings",
        "nixpkgs",
        "extraModules",
        "storage.zfs.importPool",
    ] {
        assert!(paths.contains(&wanted.to_string()), "{wanted}: {paths:?}");
    }
}

#[test]
fn host_ports_for_expose_reach_the_daemon_and_the_firewall() {
    let firewall = |case: &Json| case["config"]["networking"]["firewall"].clone();

    let x = host("cases.exposeHostPorts");
    assert_eq!(x["failedAssertions"], Json::Array(vec![]));
    assert_eq!(x["warnings"], Json::Array(vec![]));
    let (config, value) = config_toml(&x);
    assert_eq!(value["expose_host_ports"].as_str(), Some("20000-20099"));
    assert_eq!(config.expose_host_ports, "20000-20099");
    // Nothing opened by default: nspawn's DNAT sends that traffic through
    // the forward path, not the host's input rules.
    assert_eq!(
        firewall(&x)["allowedTCPPortRanges"],
        serde_json::json!([]),
        "{}",
        firewall(&x)
    );

    // openFirewall = true: the range opened too.
    let open = host("cases.exposeOpenFirewall");
    assert_eq!(open["failedAssertions"], Json::Array(vec![]));
    let (config, _) = config_toml(&open);
    assert_eq!(config.expose_host_ports, "20000-20099");
    let fw = firewall(&open);
    assert_eq!(
        fw["allowedTCPPortRanges"],
        serde_json::json!([{ "from": 20000, "to": 20099 }]),
        "{fw}"
    );
    // The range only, on every interface: no single ports, no UDP, and the
    // bridge's own rules unchanged.
    assert_eq!(fw["allowedTCPPorts"], serde_json::json!([]), "{fw}");
    assert_eq!(fw["allowedUDPPortRanges"], serde_json::json!([]), "{fw}");
    assert_eq!(
        fw["interfaces"]["br-vox"]["allowedTCPPortRanges"],
        serde_json::json!([]),
        "{fw}"
    );

    // Off by default: the daemon's empty default, nothing opened.
    let d = host("cases.defaults");
    assert_eq!(d["configToml"]["expose_host_ports"], "");
    assert_eq!(firewall(&d)["allowedTCPPortRanges"], serde_json::json!([]));

    // With every option set (30000-30009, firewall closed).
    let e = host("cases.everything");
    assert_eq!(e["configToml"]["expose_host_ports"], "30000-30009");
    assert_eq!(firewall(&e)["allowedTCPPortRanges"], serde_json::json!([]));
}

#[test]
fn a_bad_host_port_range_is_refused_with_its_message() {
    let a = host("assertions");
    for (case, expect) in [
        (
            "exposeLowPorts",
            "from must be at least 1024 (lower ports are privileged), got 80-2000.",
        ),
        (
            "exposeReversed",
            "from must not be above to, got 20099-20000.",
        ),
    ] {
        let failed = strings(&a[case]["failed"]);
        assert_eq!(
            failed,
            [format!("services.voxnix.expose.hostPorts: {expect}")],
            "{case}"
        );
    }
    // A port past 65535 is no port: the option's type refuses it.
    let err = try_eval(&[
        "nix/tests/eval/host.nix",
        "-A",
        "typeErrors.exposePortTooHigh",
    ])
    .expect_err("hostPorts.to = 70000 evaluated");
    assert!(
        err.contains("services.voxnix.expose.hostPorts.to")
            && err.contains("16 bit unsigned integer"),
        "{err}"
    );
}

// ---- mkContainer ------------------------------------------------------------

fn container_ok(case: &str) -> Json {
    let c = container_evaluated(case);
    assert_eq!(c["warnings"], Json::Array(vec![]), "{case}");
    c
}

/// A case whose spec gives personal settings, as only a spec written by
/// hand can (the daemon never passes them to Nix): it evaluates, warning
/// that they are left out.
fn container_with_personal_settings(case: &str) -> Json {
    let c = container_evaluated(case);
    let warnings = strings(&c["warnings"]);
    assert!(
        warnings.len() == 1 && warnings[0].starts_with("voxnix: the personal settings "),
        "{case}: {warnings:?}"
    );
    c
}

fn container_evaluated(case: &str) -> Json {
    let c = container(&format!("cases.{case}"));
    assert_eq!(c["failedAssertions"], Json::Array(vec![]), "{case}");
    let boot = &c["config"]["boot"];
    assert_eq!(
        boot["isNspawnContainer"], true,
        "{case}: an nspawn container, as declarative containers are"
    );
    assert_eq!(boot["isContainer"], true, "{case}");
    assert_eq!(c["config"]["networking"]["useHostResolvConf"], false);
    assert!(c["etc"]["voxnix/spec.json"].is_string(), "{case}");
    c
}

#[test]
fn every_module_evaluates_alone_and_all_together() {
    let names = strings(&container("names"));
    assert!(names.len() >= 7, "{names:?}");
    for name in &names {
        let c = container_ok(&format!("only-{name}"));
        let modules: Vec<String> = serde_json::from_str(
            c["config"]["system"]["systemBuilderArgs"]["voxnixModules"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(modules, std::slice::from_ref(name));
    }
    let none = container_ok("none");
    assert_eq!(none["packages"], Json::Array(vec![]));
    let all = container_ok("all");
    let packages = strings(&all["packages"]);
    assert!(packages.contains(&"ripgrep-14.1.1".into()), "{packages:?}");
    let c = &all["config"];
    assert_eq!(c["programs"]["git"]["enable"], true);
    assert_eq!(c["programs"]["fish"]["enable"], true);
    assert_eq!(c["services"]["openssh"]["ports"], serde_json::json!([22]));
    assert_eq!(c["services"]["tailscale"]["enable"], true);
    // The tailnet is not trusted by the container's firewall.
    assert_eq!(
        c["networking"]["firewall"]["trustedInterfaces"],
        serde_json::json!([])
    );
    assert!(
        c["systemd"]["services"]["voxnix-code-server"]["serviceConfig"]["ExecStart"].is_string()
    );
    assert_eq!(
        c["networking"]["firewall"]["allowedTCPPorts"],
        serde_json::json!([8080])
    );
    assert!(
        strings(&c["systemd"]["tmpfiles"]["rules"])
            .contains(&"d /workspace 0755 root root -".into())
    );
    assert_eq!(c["networking"]["hostName"], "", "no name in the system");
    // Lean by default: no documentation unless asked for.
    for part in ["man", "info", "doc", "nixos"] {
        assert_eq!(c["documentation"][part]["enable"], false, "{part}");
    }
    assert_eq!(c["documentation"]["enable"], false);
    let every = container_evaluated("everySetting");
    let d = &every["config"]["documentation"];
    assert_eq!(
        (
            &d["enable"],
            &d["man"]["enable"],
            &d["nixos"]["enable"],
            &d["info"]["enable"]
        ),
        (
            &Json::Bool(true),
            &Json::Bool(true),
            &Json::Bool(true),
            &Json::Bool(false)
        ),
        "dev.documentation turns on what it names"
    );
    let ws = container_ok("workspaceFlag");
    let modules: Vec<String> = serde_json::from_str(
        ws["config"]["system"]["systemBuilderArgs"]["voxnixModules"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(modules, ["git", "workspace"]);
}

#[test]
fn every_setting_of_every_module_reaches_the_configuration() {
    let s = container_with_personal_settings("everySetting");
    let c = &s["config"];
    assert_eq!(c["system"]["stateVersion"], "24.11");
    // Personal settings are read at run time, never built in.
    assert_eq!(
        c["programs"]["git"]["config"]["include"]["path"],
        "/run/voxnix/gitconfig"
    );
    assert!(
        c["systemd"]["services"]["voxnix-git-identity"]["serviceConfig"]["ExecStart"].is_string()
    );
    assert_eq!(c["services"]["openssh"]["ports"], serde_json::json!([2222]));
    assert_eq!(
        c["programs"]["nix-ld"]["enable"], false,
        "ssh.editors = false"
    );
    assert_eq!(
        c["services"]["openssh"]["authorizedKeysFiles"],
        serde_json::json!(["/run/voxnix/authorized_keys/%u"])
    );
    assert_eq!(
        c["systemd"]["services"]["voxnix-ssh-keys"]["before"],
        serde_json::json!(["sshd.service"])
    );
    assert_eq!(
        c["systemd"]["services"]["voxnix-personal"]["serviceConfig"]["LoadCredential"],
        "voxnix-personal"
    );
    let warnings = strings(&s["warnings"]).join("\n");
    assert!(
        warnings.contains("git.user_email, git.user_name")
            && warnings.contains("ssh.authorized_keys"),
        "{warnings}"
    );
    assert_eq!(
        c["services"]["tailscale"]["interfaceName"],
        "userspace-networking"
    );
    assert_eq!(
        c["networking"]["firewall"]["allowedTCPPorts"],
        serde_json::json!([]),
        "code-server.open_firewall = false"
    );
    let packages = strings(&s["packages"]);
    assert!(
        packages.contains(&"nodejs-22.15.0".into())
            && packages.contains(&"python3.13-requests-2.32.3".into()),
        "{packages:?}"
    );
    let spec: Json = serde_json::from_str(s["etc"]["voxnix/spec.json"].as_str().unwrap()).unwrap();
    assert_eq!(spec["settings"]["ssh"]["port"], 2222);
}

/// A port the host forwards (expose --to host) arrives on the container's
/// eth0, where its firewall would refuse it: the firewall opens the exposed
/// ports from the credential at start, with NixOS's iptables firewall (the
/// default) in its extraCommands, with an nftables one from a unit after
/// nftables.service. Either way the same script, which the sandbox's
/// stand-in firewall runs too.
#[test]
fn the_container_firewall_opens_the_ports_the_host_forwards() {
    let script = "/run/credentials/@system/voxnix-personal";
    let c = container_ok("none");
    let cfg = &c["config"];
    assert_eq!(cfg["networking"]["firewall"]["enable"], true);
    let extra = cfg["networking"]["firewall"]["extraCommands"]
        .as_str()
        .unwrap_or("");
    assert!(
        extra.contains("voxnix-open-exposed-ports.sh")
            && extra.contains(&format!("{script} iptables"))
            && extra.contains("jq-1.7.1/bin/jq"),
        "{extra}"
    );
    assert!(
        cfg["systemd"]["services"]["voxnix-exposed-ports"].is_null(),
        "no unit with the iptables firewall"
    );

    let nft = container_ok("nftablesFirewall");
    let cfg = &nft["config"];
    assert_eq!(
        cfg["networking"]["firewall"]["extraCommands"], "",
        "nixpkgs refuses extraCommands with the nftables firewall"
    );
    let unit = &cfg["systemd"]["services"]["voxnix-exposed-ports"];
    let start = unit["serviceConfig"]["ExecStart"].as_str().unwrap_or("");
    assert!(start.contains(&format!("{script} nft")), "{unit}");
    assert_eq!(unit["after"], serde_json::json!(["nftables.service"]));
    assert_eq!(unit["partOf"], serde_json::json!(["nftables.service"]));
    assert_eq!(
        unit["unitConfig"]["ReloadPropagatedFrom"], "nftables.service",
        "a reload flushes the ruleset: the ports again"
    );
    assert!(
        unit["serviceConfig"]["ExecReload"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("{script} nft"))),
        "{unit}"
    );
    assert!(
        strings(&unit["path"])
            .iter()
            .any(|p| p.contains("nftables")),
        "nft on the unit's PATH: {unit}"
    );
}

/// VS Code/Cursor Remote-SSH and JetBrains Gateway download servers linked
/// for a usual Linux loader: the ssh module turns nix-ld on for them (and
/// keeps TCP forwarding, which they tunnel through), unless the spec says
/// `ssh.editors = false`.
#[test]
fn ssh_turns_on_nix_ld_for_remote_editors_unless_told_not_to() {
    let on = container_ok("only-ssh");
    let c = &on["config"];
    assert_eq!(c["programs"]["nix-ld"]["enable"], true, "{}", c["programs"]);
    assert_eq!(
        c["services"]["openssh"]["settings"]["AllowTcpForwarding"], true,
        "{}",
        c["services"]["openssh"]
    );
    assert_eq!(
        container_ok("all")["config"]["programs"]["nix-ld"]["enable"],
        true
    );

    let off = container_ok("sshNoEditors");
    let c = &off["config"];
    assert_eq!(
        c["programs"]["nix-ld"]["enable"], false,
        "{}",
        c["programs"]
    );
    // Only nix-ld goes: sshd is the same.
    assert_eq!(c["services"]["openssh"]["enable"], true);
    assert_eq!(
        c["services"]["openssh"]["settings"],
        on["config"]["services"]["openssh"]["settings"]
    );
    let spec: Json =
        serde_json::from_str(off["etc"]["voxnix/spec.json"].as_str().unwrap()).unwrap();
    assert_eq!(spec["settings"]["ssh"]["editors"], false);

    // Without the ssh module, no nix-ld.
    assert_eq!(
        container_ok("none")["config"]["programs"]["nix-ld"]["enable"],
        false
    );
}

/// Nothing of the owner or their personal settings is in a container's
/// configuration (and so in its store paths): two owners' containers that
/// differ only there evaluate to the same configuration, and none of the
/// personal values or owner ids appears anywhere in it.
#[test]
fn owners_and_personal_settings_are_not_in_the_configuration() {
    let a = container_with_personal_settings("personalA");
    let b = container_with_personal_settings("personalB");
    assert!(
        a["config"] == b["config"] && a["etc"] == b["etc"],
        "two containers' configurations differ by name, owner, personal settings or limits"
    );
    assert_eq!(
        a["config"]["networking"]["hostName"], "",
        "the hostname is the machine name nspawn gives at start"
    );
    let text =
        serde_json::to_string(&a["config"]).unwrap() + &serde_json::to_string(&a["etc"]).unwrap();
    for needle in [
        "Ada Lovelace",
        "ada@example.invalid",
        "ada@laptop",
        "unix:1000",
        "AAAAC3NzaC1lZDI1NTE5AAAAIOo5bq0M",
        "alphabox",
    ] {
        assert!(!text.contains(needle), "'{needle}' is in the configuration");
    }
}

#[test]
fn bad_container_specs_are_refused_with_their_message() {
    let refused = container("refused");
    for (name, case) in refused.as_object().unwrap() {
        let failed = strings(&case["failed"]);
        let expect = case["expect"].as_str().unwrap();
        assert!(
            failed.len() == 1 && failed[0].contains(expect),
            "{name}: {failed:?}"
        );
    }
    let failing = container("failing");
    for (name, case) in failing.as_object().unwrap() {
        let err = try_eval(&[
            "-E",
            &format!("(import ./nix/tests/eval/container.nix {{ }}).evalFailing \"{name}\""),
        ])
        .expect_err(name);
        let expect = case["expect"].as_str().unwrap();
        assert!(
            err.contains(expect),
            "{name}: expected {expect:?} in:\n{err}"
        );
    }
}

// ---- the flake ----------------------------------------------------------------

#[test]
fn the_flakes_outputs_evaluate() {
    let f = eval(&["-E", "import ./nix/tests/eval/flake-outputs.nix { }"]);
    assert_eq!(strings(&f["inputs"]), ["nixpkgs"]);
    // Only outputs `nix flake check` knows (lib is a known community one).
    for output in strings(&f["outputs"]) {
        assert!(
            [
                "packages",
                "checks",
                "devShells",
                "nixosModules",
                "overlays",
                "lib"
            ]
            .contains(&output.as_str()),
            "unknown flake output {output}"
        );
    }
    for output in ["packages", "checks", "devShells"] {
        for (system, set) in f[output].as_object().unwrap() {
            for (name, is_drv) in set.as_object().unwrap() {
                assert_eq!(is_drv, true, "{output}.{system}.{name} is not a derivation");
            }
        }
    }
    // build, clippy, fmt and one check per VM test file.
    let checks: Vec<String> = f["checks"]["x86_64-linux"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut expected: Vec<String> = ["build", "clippy", "fmt"].map(String::from).into();
    for entry in std::fs::read_dir(repo().join("nix/tests"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".nix")
            && stem != "default"
            && stem != "common"
        {
            expected.push(format!("vm-{stem}"));
        }
    }
    expected.sort();
    assert_eq!(checks, expected);
    assert_eq!(
        f["checks"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["aarch64-linux", "x86_64-linux"]
    );
    assert_eq!(strings(&f["modules"]), strings(&f["libraryNames"]));
    assert!(strings(&f["modules"]).contains(&"git".to_string()));
    assert!(is_store_path(f["packageSrc"].as_str().unwrap()));
    assert_eq!(
        f["nixosModule"]["isPath"], true,
        "nixosModules.default is the module's file"
    );
    assert!(
        f["nixosModule"]["file"]
            .as_str()
            .unwrap()
            .ends_with("/nix/module.nix")
    );
    assert_eq!(f["nixosModule"]["importedTwice"], "br-vox");
    assert_eq!(f["overlay"]["voxnix"], "voxnix-0.1.0");
    assert_eq!(f["mkContainer"], true);
    assert_eq!(f["catalog"], true);

    // `nix flake check` (older releases) wants the overlay's arguments named
    // final and prev.
    let parsed = Command::new("nix-instantiate")
        .args(["--parse", "flake.nix"])
        .current_dir(repo())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&parsed.stdout);
    assert!(
        text.contains("default = (final: (prev:"),
        "overlay arguments: {text}"
    );
}

// ---- mutations: known bugs put back must be caught ----------------------------

/// A copy of what the Nix code reads (nix/, modules/, the flake, what the
/// package's fileset names), with `edit` applied to one file.
fn mutated_tree(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .args([
            "-r",
            "nix",
            "modules",
            "flake.nix",
            "Cargo.toml",
            "Cargo.lock",
            "src",
            "data",
            "benches",
        ])
        .arg(dir.path())
        .current_dir(repo())
        .status()
        .unwrap();
    assert!(status.success());
    let path: PathBuf = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(from),
        "{file} no longer contains {from:?}: update the mutation"
    );
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    dir
}

#[test]
fn mutation_the_toml_value_type_bug_is_caught() {
    let tree = mutated_tree(
        "nix/module.nix",
        "\"toml value\" = format.type;",
        "\"toml value\" = format.type.nestedTypes.elemType;",
    );
    let root = tree.path().to_str().unwrap();
    let err = try_eval(&[
        "nix/tests/eval/host.nix",
        "--arg",
        "root",
        root,
        "-A",
        "cases.defaults",
    ])
    .expect_err("the module with the TOML bug evaluated");
    assert!(err.contains("elemType"), "{err}");
    // And the unmutated copy evaluates (the failure is the mutation's).
    let clean = mutated_tree(
        "nix/module.nix",
        "\"toml value\" = format.type;",
        "\"toml value\" = format.type;",
    );
    try_eval(&[
        "nix/tests/eval/host.nix",
        "--arg",
        "root",
        clean.path().to_str().unwrap(),
        "-A",
        "cases.defaults",
    ])
    .unwrap();
}

#[test]
fn mutation_an_imported_module_function_is_caught() {
    let tree = mutated_tree(
        "flake.nix",
        "nixosModules.default = ./nix/module.nix;",
        "nixosModules.default = import ./nix/module.nix;",
    );
    let expr = format!(
        "import ./nix/tests/eval/flake-outputs.nix {{ root = {}; }}",
        tree.path().display()
    );
    let err = try_eval(&["-E", &expr]).expect_err("a module function passed");
    assert!(err.contains("already declared"), "{err}");
}

#[test]
fn mutation_a_missing_nspawn_flag_is_caught() {
    let tree = mutated_tree("nix/mkContainer.nix", "boot.isNspawnContainer = true;", "");
    let root = tree.path().to_str().unwrap();
    let v = try_eval(&[
        "nix/tests/eval/container.nix",
        "--arg",
        "root",
        root,
        "-A",
        "cases.all.config.boot.isNspawnContainer",
    ])
    .unwrap();
    assert_eq!(v, false, "the check in container_ok would see it");
}

#[test]
fn config_toml_is_the_same_value_as_the_builtin_only_renderer() {
    // nix/default-settings.nix renders without nixpkgs (for the example
    // file); the module with the real lib must agree with it key for key.
    let d = host("cases.defaults");
    let builtin = eval(&["nix/default-settings.nix", "-A", "settings"]);
    let mut a: BTreeMap<String, Json> = serde_json::from_value(d["configToml"].clone()).unwrap();
    let mut b: BTreeMap<String, Json> = serde_json::from_value(builtin).unwrap();
    a.remove("nix");
    b.remove("nix");
    assert_eq!(a, b);
}
