//! The Nix files of the repository, checked with real Nix (no nixpkgs):
//! every `.nix` file parses, and the builtins-only parts (the module index,
//! spec checking, the sandbox's system, the module mkContainer returns)
//! evaluate to the expected values.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn nix_tool(tool: &str) -> PathBuf {
    for dir in [
        "/usr/bin",
        "/run/current-system/sw/bin",
        "/nix/var/nix/profiles/default/bin",
    ] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("Nix is not installed: run scripts/host-setup.sh (Debian package nix-bin)");
}

/// `nix-instantiate --eval --strict --json --readonly-mode ARGS`: the JSON
/// value, or Nix's stderr.
fn eval(args: &[&str]) -> Result<Value, String> {
    let out = Command::new(nix_tool("nix-instantiate"))
        .current_dir(repo())
        .args(["--eval", "--strict", "--json", "--readonly-mode"])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {stderr}"))
}

/// Evaluates a Nix expression (the repository is `repo` in it).
fn eval_expr(expr: &str) -> Result<Value, String> {
    let full = format!("let repo = {}; in {expr}", repo().display());
    eval(&["-E", &full])
}

fn spec_file(dir: &Path, spec: &Value) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!("spec-{n}.json"));
    std::fs::write(&p, serde_json::to_vec(spec).unwrap()).unwrap();
    p
}

fn check_spec(spec: &Value) -> Result<Value, String> {
    let tmp = tempfile::tempdir().unwrap();
    let f = spec_file(tmp.path(), spec);
    eval(&[
        "nix/checkSpec.nix",
        "--argstr",
        "specFile",
        f.to_str().unwrap(),
    ])
}

/// Module names from the files in modules/, sorted.
fn module_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("modules"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".nix")
                .map(String::from)
        })
        .collect();
    names.sort();
    names
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => nix_files(&path, out),
            Ok(t) if t.is_file() && name.ends_with(".nix") => out.push(path),
            _ => {}
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(&repo(), &mut files);
    files.sort();
    for required in [
        "nix/library.nix",
        "nix/spec.nix",
        "nix/checkSpec.nix",
        "nix/mkContainer.nix",
        "nix/buildContainer.nix",
        "nix/sandbox/system.nix",
    ] {
        assert!(files.contains(&repo().join(required)), "{required} missing");
    }
    for m in module_files() {
        assert!(files.contains(&repo().join(format!("modules/{m}.nix"))));
    }
    let mut failures = Vec::new();
    for f in &files {
        let out = Command::new(nix_tool("nix-instantiate"))
            .arg("--parse")
            .arg(f)
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    eprintln!("{} .nix files parse", files.len());
}

#[test]
fn the_catalog_lists_every_module_file_with_its_description() {
    let catalog = eval(&["nix/library.nix", "-A", "catalog"]).unwrap();
    let list = catalog.as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, module_files());
    for m in list {
        let d = m["description"].as_str().unwrap();
        assert!(!d.is_empty(), "{m}");
        assert!(m["settings"].is_object());
        assert!(m["credentials"].is_object());
        for (k, s) in m["settings"].as_object().unwrap() {
            assert!(
                ["string", "int", "bool", "list of string"].contains(&s["type"].as_str().unwrap()),
                "{k}: {s}"
            );
            assert!(!s["description"].as_str().unwrap().is_empty());
        }
    }
    // The expected values for a few modules.
    let by = |n: &str| list.iter().find(|m| m["name"] == n).unwrap().clone();
    assert_eq!(by("ssh")["settings"]["port"]["default"], 22);
    assert_eq!(
        by("ssh")["settings"]["authorized_keys"]["type"],
        "list of string"
    );
    assert_eq!(by("code-server")["settings"]["port"]["default"], 8080);
    assert!(
        by("tailscale")["credentials"]["tailscale-auth-key"]
            .as_str()
            .is_some()
    );
    assert_eq!(by("fish")["settings"], json!({}));
    // names agrees.
    assert_eq!(
        eval(&["nix/library.nix", "-A", "names"]).unwrap(),
        json!(module_files())
    );
}

#[test]
fn adding_a_file_adds_a_module_and_a_broken_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("hello.nix"),
        r#"{ description = "Says hello."; settings.greeting = { type = "string"; default = "hi"; description = "What to say."; }; module = { }; }"#,
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "not a module").unwrap();
    let expr = |d: &Path| {
        format!(
            "(import (repo + \"/nix/library.nix\") {{ modulesDir = {}; }}).catalog",
            d.display()
        )
    };
    let v = eval_expr(&expr(dir)).unwrap();
    assert_eq!(v[0]["name"], "hello");
    assert_eq!(v[0]["settings"]["greeting"]["default"], "hi");
    assert_eq!(v.as_array().unwrap().len(), 1);

    std::fs::write(
        dir.join("typo.nix"),
        r#"{ descripton = "oops"; module = { }; }"#,
    )
    .unwrap();
    let err = eval_expr(&expr(dir)).unwrap_err();
    assert!(err.contains("modules/typo.nix"), "{err}");
    assert!(err.contains("descripton"), "{err}");
    std::fs::remove_file(dir.join("typo.nix")).unwrap();

    std::fs::write(
        dir.join("badtype.nix"),
        r#"{ description = "x"; settings.n = { type = "float"; default = 1.0; description = "n"; }; module = { }; }"#,
    )
    .unwrap();
    let err = eval_expr(&expr(dir)).unwrap_err();
    assert!(
        err.contains("setting 'n'") && err.contains("type must be one of"),
        "{err}"
    );
}

#[test]
fn check_spec_resolves_a_good_spec() {
    let v = check_spec(&json!({
        "name": "dev",
        "owner": "telegram:1",
        "modules": ["git", "ssh"],
        "workspace": true,
        "settings": { "ssh": { "port": 2222, "authorized_keys": ["ssh-ed25519 AAAA me"] } },
        "resources": { "memory_max": 1073741824u64 },
        "api_token": "must not be embedded",
    }))
    .unwrap();
    assert_eq!(v["name"], "dev");
    assert_eq!(v["modules"], json!(["git", "ssh", "workspace"]));
    assert_eq!(v["stateVersion"], "25.05");
    assert_eq!(v["credentials"], json!([]));
    assert_eq!(v["settings"]["ssh"]["port"], 2222);
    assert_eq!(v["settings"]["git"]["user_name"], "");
    assert_eq!(v["settings"]["workspace"], json!({}));
    let paths = v["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3);
    assert!(paths[0].as_str().unwrap().ends_with("modules/git.nix"));
    let embedded: Value = serde_json::from_str(v["specJSON"].as_str().unwrap()).unwrap();
    // A system holds no name, owner or limits of its container.
    for gone in ["name", "owner", "resources"] {
        assert!(embedded.get(gone).is_none(), "{gone}: {embedded}");
    }
    assert!(embedded.get("api_token").is_none(), "{embedded}");

    let v = check_spec(
        &json!({ "name": "ts", "modules": ["tailscale", "code-server"], "state_version": "24.11" }),
    )
    .unwrap();
    assert_eq!(
        v["credentials"],
        json!(["code-server-password", "tailscale-auth-key"])
    );
    assert_eq!(v["stateVersion"], "24.11");
}

#[test]
fn check_spec_refuses_bad_specs_with_named_errors() {
    let available = format!("(available: {})", module_files().join(", "));
    let err = check_spec(&json!({ "name": "x", "modules": ["git", "nope"] })).unwrap_err();
    assert!(err.contains("voxnix: unknown module 'nope'"), "{err}");
    assert!(err.contains(&available), "{err}");

    let err = check_spec(&json!({ "name": "x", "modules": ["git", "fish", "git"] })).unwrap_err();
    assert!(err.contains("duplicate module 'git'"), "{err}");

    let cases = [
        (json!({ "modules": [] }), "spec has no 'name'"),
        (json!({ "name": "" }), "must not be empty"),
        (
            json!({ "name": "bad name" }),
            "is not a valid container name",
        ),
        (
            json!({ "name": "x", "modules": "git" }),
            "must be a list of strings",
        ),
        (
            json!({ "name": "x", "workspace": "yes" }),
            "'workspace' must be a boolean",
        ),
        (
            json!({ "name": "x", "settings": { "ssh": { "port": "22" } } }),
            "setting 'ssh.port' must be an int, got a string",
        ),
        (
            json!({ "name": "x", "settings": { "ssh": { "prot": 22 } } }),
            "unknown setting 'ssh.prot'",
        ),
        (
            json!({ "name": "x", "state_version": "latest" }),
            "state_version",
        ),
        (json!(["not", "an", "object"]), "spec must be a JSON object"),
    ];
    for (spec, want) in cases {
        let err = check_spec(&spec).unwrap_err();
        assert!(err.contains(want), "{spec}: {err}");
    }
}

/// mkContainer's module applied to a stand-in `lib`: enough to see what it
/// sets without nixpkgs (options are not type-checked here).
fn mk_container(spec: &Value) -> Result<Value, String> {
    let tmp = tempfile::tempdir().unwrap();
    let f = spec_file(tmp.path(), spec);
    eval_expr(&format!(
        r#"let
          lib = {{
            mkOption = x: x;
            mkIf = condition: content: {{ _type = "if"; inherit condition content; }};
            types = {{ attrs = "attrs"; str = "str"; listOf = t: t; attrsOf = t: t; }};
          }};
          pkgs = {{ writeText = name: _: "/nix/store/fake-${{name}}"; bash = "/nix/store/fake-bash"; jq = "/nix/store/fake-jq"; }};
          config = {{ networking.nftables.enable = false; }};
          module = (import (repo + "/nix/mkContainer.nix") {{ }}) {f};
          m = module {{ inherit lib pkgs config; }};
        in {{
          inherit (m.config) voxnix boot networking system;
          etc = m.config.environment.etc."voxnix/spec.json".text;
          imports = map (i: i.key) m.imports;
        }}"#,
        f = f.display()
    ))
}

#[test]
fn mk_container_sets_the_container_basics_and_embeds_the_modules() {
    let v = mk_container(&json!({ "name": "web", "modules": ["ssh", "git"], "workspace": true }))
        .unwrap();
    assert_eq!(v["boot"]["isContainer"], true);
    assert_eq!(
        v["networking"]["hostName"], "",
        "the name is nspawn's at start"
    );
    assert_eq!(v["networking"]["firewall"]["enable"], true);
    assert_eq!(v["networking"]["interfaces"]["eth0"]["useDHCP"], true);
    assert_eq!(v["system"]["stateVersion"], "25.05");
    assert_eq!(v["voxnix"]["modules"], json!(["ssh", "git", "workspace"]));
    assert_eq!(
        v["imports"],
        json!([
            "voxnix:module:ssh",
            "voxnix:module:git",
            "voxnix:module:workspace"
        ])
    );
    // What `voxnix status` reads from the toplevel derivation.
    let embedded = v["system"]["systemBuilderArgs"]["voxnixModules"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(embedded).unwrap(),
        json!(["ssh", "git", "workspace"])
    );
    let etc: Value = serde_json::from_str(v["etc"].as_str().unwrap()).unwrap();
    assert!(etc.get("name").is_none(), "no name in the system: {etc}");
    assert_eq!(etc["modules"], json!(["ssh", "git"]));

    let err = mk_container(&json!({ "name": "web", "modules": ["nope"] })).unwrap_err();
    assert!(err.contains("unknown module 'nope'"), "{err}");
}

#[test]
fn the_sandbox_system_evaluates_to_a_system_derivation() {
    let tmp = tempfile::tempdir().unwrap();
    let f = spec_file(
        tmp.path(),
        &json!({ "name": "demo", "owner": "telegram:1", "modules": ["fish", "git"], "workspace": false }),
    );
    let v = eval_expr(&format!(
        r#"let d = import (repo + "/nix/sandbox/system.nix") {{ specFile = {}; }}; in
           {{ inherit (d) name type voxnixModules; drv = builtins.unsafeDiscardStringContext d.drvPath; }}"#,
        f.display()
    ))
    .unwrap();
    assert_eq!(v["type"], "derivation");
    assert_eq!(v["name"], "nixos-system-unnamed-25.05");
    assert_eq!(v["voxnixModules"], r#"["fish","git"]"#);
    assert!(
        v["drv"]
            .as_str()
            .unwrap()
            .ends_with("-nixos-system-unnamed-25.05.drv")
    );

    let bad = spec_file(tmp.path(), &json!({ "name": "demo", "modules": ["nope"] }));
    let err = eval_expr(&format!(
        r#"(import (repo + "/nix/sandbox/system.nix") {{ specFile = {}; }}).drvPath"#,
        bad.display()
    ))
    .unwrap_err();
    assert!(err.contains("unknown module 'nope'"), "{err}");
}

#[test]
fn build_container_parses_and_checks_its_arguments() {
    // Without nixpkgs only the function's shape can be checked.
    let v =
        eval_expr(r#"builtins.functionArgs (import (repo + "/nix/buildContainer.nix"))"#).unwrap();
    assert_eq!(
        v,
        json!({ "nixpkgs": false, "specFile": false, "system": true })
    );
}
