//! The NixOS module and the flake, checked as far as Debian's Nix allows.
//!
//! What needs no NixOS evaluation is checked here:
//! - every `.nix` file in the repository parses (`nix-instantiate --parse`);
//! - `nix/default-settings.nix` (builtins only), from which the module renders
//!   the daemon's configuration, agrees key for key and default for default
//!   with `voxnix::config::Config`;
//! - `nix/example-config.toml` is what the module renders by default, and the
//!   daemon's own loader accepts it;
//! - with every typed option of `services.voxnix` set, the rendered
//!   configuration still loads (no key the daemon does not know);
//! - the module's option tree (from nixpkgs' real module system) has the
//!   options issue 8 asks for, and `docs/nixos.md` documents every option and
//!   every daemon key;
//! - the VM tests' Python scripts compile.
//!
//! The module itself, mkContainer and the flake's outputs are evaluated with
//! nixpkgs' real lib in tests/nixos_eval.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use voxnix::config::Config;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `nix-instantiate ARGS` in the repository and returns its stdout.
fn nix_instantiate(args: &[&str]) -> String {
    let out = Command::new("nix-instantiate")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run nix-instantiate ({e}): install Debian's nix-bin (scripts/host-setup.sh does)"
            )
        });
    assert!(
        out.status.success(),
        "nix-instantiate {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("nix-instantiate printed UTF-8")
}

/// Evaluates a Nix expression (paths relative to the repository) to JSON.
fn eval(expr: &str) -> Json {
    let text = nix_instantiate(&["--eval", "--strict", "--json", "-E", expr]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn default_settings(attr: &str) -> Json {
    eval(&format!("(import ./nix/default-settings.nix {{ }}).{attr}"))
}

fn json_to_toml(v: &Json) -> toml::Value {
    toml::Value::try_from(v).unwrap_or_else(|e| panic!("not representable in TOML ({e}): {v}"))
}

/// Leaf keys of a TOML table, as dotted paths, with their values. A table
/// that is empty is a leaf of its own (a map the daemon allows to be empty).
fn leaves(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn leaf_map(v: &toml::Value) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    leaves("", v, &mut out);
    out
}

/// The daemon's configuration keys and defaults, from its own type.
fn daemon_defaults() -> BTreeMap<String, toml::Value> {
    let text = toml::to_string(&Config::default()).expect("the default configuration serializes");
    leaf_map(&toml::from_str::<toml::Value>(&text).expect("and parses back"))
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

/// nix/default-settings.nix's `mapping`: typed option -> the keys it sets.
fn mapping_keys() -> BTreeMap<String, Vec<String>> {
    default_settings("mapping")
        .as_object()
        .expect("mapping is an attribute set")
        .iter()
        .map(|(option, keys)| (option.clone(), strings(keys)))
        .collect()
}

fn library_names() -> Vec<String> {
    strings(&eval("(import ./nix/library.nix { }).names"))
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let skip = name.starts_with('.')
                || matches!(name.as_str(), "target" | "result" | "corpus" | "artifacts");
            if !skip {
                nix_files(&path, out);
            }
        } else if kind.is_file() && name.ends_with(".nix") {
            out.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(repo(), &mut files);
    files.sort();
    for expected in [
        "flake.nix",
        "nix/module.nix",
        "nix/package.nix",
        "nix/default-settings.nix",
        "nix/devshell.nix",
        "nix/tests/default.nix",
        "nix/mkContainer.nix",
        "nix/library.nix",
    ] {
        assert!(
            files.contains(&repo().join(expected)),
            "{expected} is missing"
        );
    }
    let mut failures = Vec::new();
    for file in &files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .output()
            .expect("nix-instantiate runs (install nix-bin)");
        if !out.status.success() {
            failures.push(format!(
                "{}:\n{}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} .nix files do not parse:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn default_settings_mirror_the_daemon_defaults() {
    let defaults = default_settings("defaults");
    // Same keys and same defaults: the module's `settings.<key>` options have
    // the daemon's defaults.
    let config: Config = serde_json::from_value(defaults.clone())
        .unwrap_or_else(|e| panic!("nix/default-settings.nix `defaults` is no daemon config: {e}"));
    assert_eq!(
        config,
        Config::default(),
        "nix/default-settings.nix's defaults differ from src/config.rs's"
    );

    let ours = leaf_map(&json_to_toml(&defaults));
    let daemon = daemon_defaults();
    let missing: Vec<&String> = daemon.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "daemon keys nix/default-settings.nix does not declare (so services.voxnix.settings has no typed option for them): {missing:?}"
    );
    for (key, value) in &daemon {
        assert_eq!(
            &ours[key], value,
            "the default of `{key}` differs between nix/default-settings.nix and src/config.rs"
        );
    }
    // No key the daemon does not know: its loader refuses unknown keys.
    let text = toml::to_string(&json_to_toml(&defaults)).unwrap();
    Config::parse(&text).unwrap_or_else(|e| {
        panic!("the daemon refuses nix/default-settings.nix's keys: {e}\n{text}")
    });
}

#[test]
fn example_config_is_what_the_module_renders_by_default() {
    let example_text = std::fs::read_to_string(repo().join("nix/example-config.toml"))
        .expect("nix/example-config.toml exists");
    let example: toml::Value = toml::from_str(&example_text).expect("the example is TOML");
    let rendered = default_settings("settings");
    assert_eq!(
        example,
        json_to_toml(&rendered),
        "nix/example-config.toml differs from what the module renders by default \
         (nix-instantiate --eval --strict --json nix/default-settings.nix -A settings)"
    );

    // The daemon's own loader takes it, and reads the same values.
    let loaded = Config::parse(&example_text)
        .unwrap_or_else(|e| panic!("the daemon refuses nix/example-config.toml: {e}"));
    let from_module: Config = serde_json::from_value(rendered).expect("a daemon config");
    assert_eq!(loaded, from_module);
    assert_eq!(
        loaded.modules,
        library_names(),
        "the module offers the whole library"
    );

    // It changes a daemon default only where a typed option sets the key.
    let computed = default_settings("computed");
    let mapped: BTreeSet<String> = mapping_keys()
        .into_values()
        .flatten()
        .chain(computed.as_object().unwrap().keys().cloned())
        .collect();
    let daemon = daemon_defaults();
    for (key, value) in leaf_map(&example) {
        if daemon.get(&key) != Some(&value) {
            assert!(
                mapped.contains(&key),
                "nix/example-config.toml sets `{key}` = {value} against the daemon's default, \
                 but no typed option maps to it"
            );
        }
    }
}

/// Every typed option of services.voxnix at a value other than its default.
const ALL_TYPED_OPTIONS_SET: &str = r#"{
  network = { bridge = "br-test"; address = "10.1.2.1/24"; dhcpRange = "10.1.2.10,10.1.2.20,1h"; externalInterface = "eth9"; nat = false; };
  storage = { backend = "zfs"; root = "/srv/voxnix"; userQuota = "25G"; zfs = { pool = "rpool"; parent = "vox/ws"; importPool = false; }; };
  telegram = { enable = true; tokenFile = "/run/agenix/telegram"; allowedChatIds = [ 1 2 ]; adminChatIds = [ 3 ]; };
  llm = { baseUrl = "http://127.0.0.1:11434/v1"; model = "some-model"; apiKeyFile = "/run/agenix/llm"; };
  tailscale = { authKeyFile = "/run/agenix/tailscale"; oauthClientId = "k123CNTRL"; oauthClientSecretFile = "/run/agenix/tailscale-oauth"; };
  accessFile = "/run/agenix/access";
  expose = { hostPorts = { from = 20000; to = 20099; }; openFirewall = false; };
  extraModules = { my-tools = ./modules/git.nix; };
}"#;

#[test]
fn typed_options_render_keys_the_daemon_accepts() {
    let rendered = eval(&format!(
        "(import ./nix/default-settings.nix {{ }}).render {{ cfg = {ALL_TYPED_OPTIONS_SET}; }}"
    ));
    let text = toml::to_string(&json_to_toml(&rendered)).unwrap();
    let cfg = Config::parse_alone(&text).unwrap_or_else(|e| {
        panic!(
            "with every typed option set, the module renders a key the daemon refuses: {e}\n\
             (a table listed in nix/default-settings.nix must use the daemon's key names)\n{text}"
        )
    });
    assert_eq!(cfg.bridge, "br-test");
    assert_eq!(cfg.expose_host_ports, "20000-20099");
    assert!(cfg.modules.contains(&"my-tools".to_string()));
    assert!(cfg.modules.contains(&"git".to_string()));

    // Every mapping whose table the daemon has is honoured.
    let pending: BTreeSet<String> = strings(&default_settings("pendingTables"))
        .into_iter()
        .collect();
    let keys = leaf_map(&json_to_toml(&rendered));
    for (option, option_keys) in mapping_keys() {
        for key in option_keys {
            let table = key.split('.').next().unwrap();
            if key.contains('.') && pending.contains(table) {
                continue;
            }
            assert!(
                keys.contains_key(&key),
                "services.voxnix.{option} should set `{key}`, but the rendered configuration has no such key"
            );
        }
    }

    // The typed defaults agree with the daemon where they meet.
    let typed = default_settings("typedDefaults");
    assert_eq!(
        typed["network"]["bridge"],
        Config::default().bridge.as_str()
    );
}

/// The option paths of services.voxnix, from nix/module.nix evaluated by
/// nixpkgs' real module system (nix/tests/eval/host.nix; tests/nixos_eval.rs
/// says how the lib is found).
fn module_option_paths() -> BTreeSet<String> {
    let text = nix_instantiate(&[
        "--eval",
        "--strict",
        "--json",
        "--readonly-mode",
        "nix/tests/eval/host.nix",
        "-A",
        "optionPaths",
    ]);
    let v: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    strings(&v).into_iter().collect()
}

#[test]
fn module_options_are_the_issue_s_and_all_documented() {
    let options = module_option_paths();
    for wanted in [
        "enable",
        "package",
        "settings",
        "telegram.enable",
        "telegram.tokenFile",
        "telegram.allowedChatIds",
        "telegram.adminChatIds",
        "llm.baseUrl",
        "llm.model",
        "llm.apiKeyFile",
        "network.bridge",
        "network.address",
        "network.dhcpRange",
        "network.externalInterface",
        "network.nat",
        "storage.backend",
        "storage.zfs.pool",
        "storage.userQuota",
        "tailscale.authKeyFile",
        "extraModules",
    ] {
        assert!(
            options.contains(wanted),
            "services.voxnix.{wanted} is missing from nix/module.nix (options: {options:?})"
        );
    }
    // Every typed option the mapping names exists.
    let credentials = default_settings("credentials");
    let mapped = mapping_keys().into_keys();
    for option in mapped.chain(credentials.as_object().unwrap().keys().cloned()) {
        assert!(
            options.contains(&option),
            "nix/default-settings.nix maps services.voxnix.{option}, which nix/module.nix does not declare"
        );
    }

    let docs = std::fs::read_to_string(repo().join("docs/nixos.md")).expect("docs/nixos.md exists");
    let undocumented: Vec<&String> = options
        .iter()
        .filter(|o| !docs.contains(&format!("`services.voxnix.{o}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/nixos.md does not document: {undocumented:?}"
    );
    let keys: Vec<String> = daemon_defaults().into_keys().collect();
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| !docs.contains(&format!("`settings.{k}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/nixos.md does not document the daemon keys: {undocumented:?}"
    );
}

/// nix/tests/*.nix except the shared parts: one VM test (feature) each.
fn vm_test_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("nix/tests"))
        .expect("nix/tests exists")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".nix")?.to_string();
            (stem != "default" && stem != "common").then_some(stem)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn vm_test_scripts_compile() {
    let tests = vm_test_files();
    for feature in ["services", "dbus-api", "lifecycle", "access"] {
        assert!(
            tests.contains(&feature.to_string()),
            "nix/tests/{feature}.nix (a VM test issue 8 asks for) is missing"
        );
    }
    let python = Command::new("python3").arg("--version").output();
    for test in tests {
        // The test's arguments as the flake passes them, with stand-ins: only
        // the test script is evaluated (the machine is not).
        let script = eval(&format!(
            "(import ./nix/tests/{test}.nix {{ pkgs = {{ testers.runNixOSTest = t: t; }}; package = {{ version = \"0.0.0\"; }}; }}).testScript"
        ));
        let script = script.as_str().expect("testScript is a string");
        assert!(
            script.contains("machine."),
            "nix/tests/{test}.nix drives no machine"
        );
        if python.is_err() {
            eprintln!(
                "python3 is not installed: the script of nix/tests/{test}.nix is not compiled"
            );
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{test}.py"));
        std::fs::write(&file, script).unwrap();
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the test script of nix/tests/{test}.nix is not valid Python:\n{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn package_installs_the_dbus_policy() {
    let package = std::fs::read_to_string(repo().join("nix/package.nix")).unwrap();
    let policy = "data/dbus/org.voxnix.Voxnix1.conf";
    assert!(repo().join(policy).is_file());
    assert!(
        package.contains(policy),
        "nix/package.nix installs {policy}"
    );
    assert!(
        package.contains("share/dbus-1/system.d/org.voxnix.Voxnix1.conf"),
        "under share/dbus-1/system.d, where services.dbus.packages looks"
    );
    assert!(package.contains("cargoLock.lockFile = ../Cargo.lock"));
}
