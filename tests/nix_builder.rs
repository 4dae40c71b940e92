//! The Nix builder against real Nix (Debian's nix-bin is enough): fixture
//! expressions in tests/fixtures/nix stand in for nixpkgs. Builds use the
//! real /nix/store, with profiles and GC roots in temporary directories.
//!
//! Covered: success (the out path comes back and the profile is installed,
//! update adds a generation, rollback, remove), evaluation errors (short,
//! naming the problem), build failures (the log tail), timeout and
//! cancellation (the process group and the builders are gone, no zombie),
//! progress lines, the sandbox's system.nix read back by the .drv reader,
//! and the .drv reader against `nix show-derivation` on real derivations.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use voxnix::nix::drv::{self, Package};
use voxnix::nix::process::{group_members, proc_stat};
use voxnix::nix::{CancelToken, NixBuilder, NixConfig, NixError, cancel_pair};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn nix_bin_dir() -> PathBuf {
    for dir in [
        "/usr/bin",
        "/run/current-system/sw/bin",
        "/nix/var/nix/profiles/default/bin",
    ] {
        if Path::new(dir).join("nix-store").is_file() {
            return dir.into();
        }
    }
    panic!("Nix is not installed: run scripts/host-setup.sh (Debian package nix-bin)");
}

/// A unique number per test run and call.
fn nonce() -> u64 {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (u64::from(std::process::id()) * 1000 + u64::from(N.fetch_add(1, Ordering::Relaxed)))
        * 1_000_000_000
        + u64::from(t)
}

struct Env {
    _tmp: tempfile::TempDir,
    builder: NixBuilder,
}

fn env(entry: &str) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = NixConfig {
        nix_bin_dir: nix_bin_dir(),
        library_dir: repo(),
        entry: entry.into(),
        nixpkgs: None,
        profiles_dir: tmp.path().join("profiles"),
        gcroots_dir: tmp.path().join("gcroots"),
        build_timeout: Duration::from_secs(120),
        eval_timeout: Duration::from_secs(60),
        extra_options: vec![
            ("sandbox".into(), "false".into()),
            ("build-users-group".into(), String::new()),
            ("substituters".into(), String::new()),
        ],
        ..NixConfig::default()
    };
    Env {
        _tmp: tmp,
        builder: NixBuilder::new(cfg),
    }
}

/// A progress callback that records the lines.
struct Progress(Mutex<Vec<String>>);

impl Progress {
    fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn cb(&self) -> impl Fn(&str) + Send + Sync + '_ {
        move |l: &str| self.0.lock().unwrap().push(l.to_string())
    }
}

#[tokio::test]
async fn builds_installs_updates_rolls_back_and_removes() {
    let e = env("tests/fixtures/nix/ok.nix");
    let b = &e.builder;
    let name = "okay";
    let progress = Progress::new();
    let spec = json!({ "name": name, "modules": ["git"], "nonce": nonce() });

    let started = Instant::now();
    let built = b
        .build(name, &spec, &progress.cb(), &CancelToken::never())
        .await
        .unwrap();
    eprintln!("first build: {:?}", started.elapsed());

    let system = built.system_path.to_string_lossy().into_owned();
    assert!(system.starts_with("/nix/store/"), "{system}");
    assert!(system.ends_with("-nixos-system-okay"), "{system}");
    assert!(built.system_path.exists());
    assert!(
        built
            .drv_path
            .to_string_lossy()
            .ends_with("-nixos-system-okay.drv")
    );
    assert!(built.drv_path.is_file());
    assert_eq!(built.previous_system_path, None);
    assert!(built.changed());

    // Installed like NixOS's imperative containers: a profile with generations.
    let profile = b.profile_path(name).unwrap();
    assert_eq!(built.profile, profile);
    assert!(profile.ends_with("profiles/okay/system"));
    assert_eq!(
        std::fs::read_link(&profile).unwrap(),
        PathBuf::from("system-1-link")
    );
    assert_eq!(
        b.current_system(name).unwrap(),
        Some(built.system_path.clone())
    );
    assert_eq!(b.current_drv(name).unwrap(), Some(built.drv_path.clone()));

    // Progress: Nix's announcements, counted.
    let lines = progress.lines();
    eprintln!("{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "3 derivations to build"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("building 1 of 3: ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "building 3 of 3: nixos-system-okay"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("installed nixos-system-okay as "))
    );

    // Update with a changed spec: a new generation, the previous one kept.
    let spec2 = json!({ "name": name, "modules": ["git", "fish"], "nonce": nonce() });
    let updated = b
        .update(name, &spec2, &|_| {}, &CancelToken::never())
        .await
        .unwrap();
    assert!(updated.changed());
    assert_eq!(
        updated.previous_system_path,
        Some(built.system_path.clone())
    );
    assert_ne!(updated.system_path, built.system_path);
    let dir = profile.parent().unwrap();
    assert!(dir.join("system-1-link").exists());
    assert!(dir.join("system-2-link").exists());
    assert_eq!(
        b.current_system(name).unwrap(),
        Some(updated.system_path.clone())
    );

    // The same spec again: nothing new.
    let progress = Progress::new();
    let same = b
        .update(name, &spec2, &progress.cb(), &CancelToken::never())
        .await
        .unwrap();
    assert!(!same.changed());
    assert!(!dir.join("system-3-link").exists());
    assert!(
        progress
            .lines()
            .iter()
            .any(|l| l.starts_with("nothing to build")),
        "{:?}",
        progress.lines()
    );

    // Roll back to the first system.
    let back = b.rollback(name, &CancelToken::never()).await.unwrap();
    assert_eq!(back, built.system_path);

    // Remove: profile and roots gone; update then has nothing to update.
    b.remove(name).await.unwrap();
    assert!(!dir.exists());
    assert_eq!(b.current_system(name).unwrap(), None);
    assert_eq!(b.current_drv(name).unwrap(), None);
    b.remove(name).await.unwrap(); // twice is fine
    let err = b
        .update(name, &spec2, &|_| {}, &CancelToken::never())
        .await
        .unwrap_err();
    assert!(matches!(err, NixError::NoProfile { .. }), "{err}");
}

#[tokio::test]
async fn evaluation_errors_are_short_and_name_the_problem() {
    // The sandbox entry checks the spec with nix/spec.nix.
    let e = env("nix/sandbox/system.nix");
    let spec = json!({ "name": "evl", "modules": ["git", "nope"] });
    let err = e
        .builder
        .build("evl", &spec, &|_| {}, &CancelToken::never())
        .await
        .unwrap_err();
    let NixError::Eval { message } = &err else {
        panic!("expected an evaluation error, got {err:?}");
    };
    assert_eq!(
        message,
        "voxnix: unknown module 'nope' (available: code-server, dev, fish, git, ssh, tailscale, workspace)"
    );
    assert!(e.builder.current_system("evl").unwrap().is_none());

    // A wall of text is cut down.
    let e = env("tests/fixtures/nix/eval-error.nix");
    let err = e
        .builder
        .build(
            "wall",
            &json!({ "name": "wall" }),
            &|_| {},
            &CancelToken::never(),
        )
        .await
        .unwrap_err();
    let NixError::Eval { message } = &err else {
        panic!("expected an evaluation error, got {err:?}");
    };
    assert!(
        message.starts_with("fixture: wall cannot be built"),
        "{message}"
    );
    assert!(message.lines().count() <= 16, "{message}");
    assert!(err.to_string().len() < 2500);

    // The spec's name must be the container's.
    let err = e
        .builder
        .build(
            "other",
            &json!({ "name": "wall" }),
            &|_| {},
            &CancelToken::never(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NixError::InvalidName { .. }), "{err}");
}

#[tokio::test]
async fn build_failures_show_the_log_tail() {
    let e = env("tests/fixtures/nix/fail.nix");
    let spec = json!({ "name": "broken", "nonce": nonce() });
    let err = e
        .builder
        .build("broken", &spec, &|_| {}, &CancelToken::never())
        .await
        .unwrap_err();
    let NixError::Build {
        drv,
        message,
        log_tail,
    } = &err
    else {
        panic!("expected a build failure, got {err:?}");
    };
    assert!(drv.ends_with("-broken-1.0.drv"), "{drv}");
    assert!(message.contains("exit code 3"), "{message}");
    let tail: Vec<&str> = log_tail.lines().collect();
    assert_eq!(tail.len(), 20, "{log_tail}");
    assert_eq!(*tail.last().unwrap(), "giving up");
    assert!(tail.contains(&"log line 40"));
    assert!(!tail.contains(&"log line 5"));
    let text = err.to_string();
    assert!(text.contains("last lines of its log"), "{text}");
    assert!(text.len() < 2000, "{text}");
    assert!(e.builder.current_system("broken").unwrap().is_none());
}

/// Processes whose command line contains `marker` (zombies have none).
fn marked(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// The nix-store realising `name`'s system, once it runs.
fn find_nix_store(name: &str) -> Option<i32> {
    let drv_suffix = format!("-nixos-system-{name}.drv");
    marked(&drv_suffix).into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains("--realise")
    })
}

async fn assert_all_gone(nix_store: i32, marker: &str) {
    let pgid = nix_store; // the command leads its own group
    for _ in 0..100 {
        let members = group_members(pgid);
        let builders = marked(marker);
        if members.is_empty() && builders.is_empty() && proc_stat(nix_store).is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "left behind: group {pgid}: {:?}; builders: {:?}; nix-store: {:?}",
        group_members(pgid),
        marked(marker),
        proc_stat(nix_store)
    );
}

/// Builds the never-finishing fixture; `stop` is called once its builder
/// runs, with nix-store's pid found. Returns the error and nix-store's pid.
async fn slow_build(
    name: &str,
    timeout: Duration,
    cancel: &CancelToken,
    on_building: &(dyn Fn() + Send + Sync),
) -> (NixError, Option<i32>, String, Duration) {
    let mut e = env("tests/fixtures/nix/slow.nix");
    let mut cfg = e.builder.config().clone();
    cfg.build_timeout = timeout;
    e.builder = NixBuilder::new(cfg);
    let sleep = 100_000 + nonce() % 800_000;
    let marker = format!("/bin/sleep {sleep}");
    let spec = json!({ "name": name, "nonce": sleep });
    let pid = Mutex::new(None);
    let progress = |line: &str| {
        if line.contains("slow-1.0") {
            // Nix started the builder: wait until it runs, then note nix-store.
            for _ in 0..50 {
                if !marked(&marker).is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            *pid.lock().unwrap() = find_nix_store(name);
            on_building();
        }
    };
    let started = Instant::now();
    let err = e
        .builder
        .build(name, &spec, &progress, cancel)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("{name}: stopped after {elapsed:?}: {err}");
    let pid = *pid.lock().unwrap();
    (err, pid, marker, elapsed)
}

#[tokio::test]
async fn timeout_stops_the_whole_process_tree() {
    let (err, pid, marker, elapsed) = slow_build(
        "slowt",
        Duration::from_secs(3),
        &CancelToken::never(),
        &|| {},
    )
    .await;
    assert!(matches!(err, NixError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains("building the system of slowt"),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    let pid = pid.expect("nix-store was seen running");
    assert_all_gone(pid, &marker).await;
}

#[tokio::test]
async fn cancellation_stops_the_whole_process_tree() {
    let (canceller, token) = cancel_pair();
    let (err, pid, marker, elapsed) =
        slow_build("slowc", Duration::from_secs(120), &token, &|| {
            canceller.cancel()
        })
        .await;
    assert!(matches!(err, NixError::Cancelled), "{err:?}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let pid = pid.expect("nix-store was seen running");
    assert_all_gone(pid, &marker).await;
}

#[tokio::test]
async fn missing_nix_is_reported_with_a_hint() {
    let e = env("nix/sandbox/system.nix");
    let mut cfg = e.builder.config().clone();
    cfg.nix_bin_dir = "/nonexistent/bin".into();
    let b = NixBuilder::new(cfg);
    let err = b
        .build("x", &json!({ "name": "x" }), &|_| {}, &CancelToken::never())
        .await
        .unwrap_err();
    assert!(matches!(err, NixError::NotInstalled { .. }), "{err:?}");
    assert!(err.to_string().contains("nix-bin"), "{err}");
    assert!(b.check().is_err());
    assert!(e.builder.check().is_ok());
}

#[tokio::test]
async fn the_sandbox_system_is_read_back_from_its_derivation() {
    let e = env("nix/sandbox/system.nix");
    // The shape of ContainerSpec::to_build_json.
    let spec = json!({
        "name": "sbx",
        "modules": ["git", "fish"],
        "workspace": true,
        "settings": { "git": { "user_name": "Ada" } },
        "resources": { "memory_max": 1_073_741_824u64 },
    });
    let progress = Progress::new();
    let started = Instant::now();
    let built = e
        .builder
        .build("sbx", &spec, &progress.cb(), &CancelToken::never())
        .await
        .unwrap();
    eprintln!(
        "sandbox system: {:?}: {:?}",
        started.elapsed(),
        progress.lines()
    );
    assert!(
        built
            .system_path
            .to_string_lossy()
            .ends_with("-nixos-system-unnamed-25.05")
    );
    assert!(built.system_path.join("voxnix-modules").is_file());

    let d = drv::read(&built.drv_path).unwrap();
    assert_eq!(d.name, "nixos-system-unnamed-25.05");
    // The profiles' root is root-only, as nixos-container makes it.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(e._tmp.path().join("profiles"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    // Built as current nixpkgs builds a toplevel: structured attributes.
    assert_eq!(d.builder, "/bin/bash");
    assert!(d.structured.is_some(), "{d:?}");
    assert!(!d.env.contains_key("voxnixModules"));
    assert_eq!(
        std::fs::read_to_string(built.system_path.join("voxnix-modules")).unwrap(),
        "[\"git\",\"fish\",\"workspace\"]\n"
    );
    assert_eq!(
        d.outputs["out"].as_deref(),
        Some(built.system_path.to_str().unwrap())
    );
    assert!(d.input_drvs.keys().any(|k| k.ends_with("-system-path.drv")));
    assert_eq!(
        d.parsed_name(),
        Package {
            name: "nixos-system-unnamed".into(),
            version: "25.05".into()
        }
    );

    let info = e.builder.system_info(&built.drv_path).await.unwrap();
    assert_eq!(info.name, "nixos-system-unnamed-25.05");
    assert_eq!(info.modules, ["git", "fish", "workspace"]);
    let pkgs: Vec<(String, String)> = info
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    let want = [
        ("bash", "5.2p37"),
        ("coreutils", "9.7"),
        ("fish", "3.6.0"),
        ("git", "2.39.5"),
        ("less", "668"),
        ("systemd", "257.5"),
    ];
    assert_eq!(
        pkgs,
        want.map(|(n, v)| (n.to_string(), v.to_string())).to_vec(),
        "perl (a builder tool of system-path) must not be listed"
    );
    // The engine keeps drv_path; the GC root keeps the file.
    assert_eq!(
        e.builder.current_drv("sbx").unwrap(),
        Some(built.drv_path.clone())
    );
}

/// The older layout (a variable per attribute, buildEnv's `pkgs`), built by
/// real Nix, reads the same as the structured one.
#[test]
fn both_derivation_layouts_give_the_same_system_info() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.json");
    std::fs::write(&spec, r#"{"name":"lay","modules":["git","fish"]}"#).unwrap();
    let mut infos = Vec::new();
    for structured in ["true", "false"] {
        let out = std::process::Command::new(nix_bin_dir().join("nix-instantiate"))
            .arg(repo().join("nix/sandbox/system.nix"))
            .args(["--argstr", "specFile"])
            .arg(&spec)
            .args(["--arg", "structured", structured])
            .args(["--option", "build-users-group", ""])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let drv_path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let d = drv::read(&drv_path).unwrap();
        assert_eq!(d.structured.is_some(), structured == "true");
        let sp = d
            .input_drvs
            .keys()
            .find(|k| k.ends_with("-system-path.drv"))
            .unwrap();
        let sp = drv::read(Path::new(sp)).unwrap();
        assert_eq!(
            sp.env.contains_key("pkgs"),
            structured == "false",
            "buildEnv's list is `pkgs` only in the older layout"
        );
        assert!(
            drv::installed_paths(&sp).is_some_and(|p| p.len() == 6),
            "{sp:?}"
        );
        infos.push(drv::system_info(&drv_path).unwrap());
    }
    assert_eq!(infos[0], infos[1]);
    assert_eq!(infos[0].modules, ["git", "fish"]);
    let names: Vec<&str> = infos[0].packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["bash", "coreutils", "fish", "git", "less", "systemd"]
    );
}

/// `nix show-derivation`'s JSON for `drv` (Nix 2.8's shape), if available.
fn show_derivation(drv: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new(nix_bin_dir().join("nix"))
        .args([
            "--extra-experimental-features",
            "nix-command",
            "show-derivation",
        ])
        .arg(drv)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(drv.to_str()?).cloned()
}

#[test]
fn the_drv_reader_agrees_with_nix_on_real_derivations() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("odd.drv");
    let out = std::process::Command::new(nix_bin_dir().join("nix-instantiate"))
        .arg(repo().join("tests/fixtures/nix/odd-drv.nix"))
        .args(["--argstr", "nonce", &nonce().to_string(), "--add-root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let top = std::fs::read_link(&root).unwrap();

    let d = drv::read(&top).unwrap();
    assert_eq!(d.name, "odd-thing-2.0-rc1");
    assert_eq!(
        d.parsed_name(),
        Package {
            name: "odd-thing".into(),
            version: "2.0-rc1".into()
        }
    );
    assert_eq!(d.outputs.len(), 3);
    assert!(d.env["quotes"].contains("a \"quoted\" \\ backslash\nnewline\ttab\rcarriage"));
    assert_eq!(d.env["unicode"], "héllo wörld ✓ 🚀");
    assert_eq!(d.env["control"], "\u{1}\u{1f}\u{7f}");
    assert_eq!(d.env["empty"], "");
    assert_eq!(d.args.last().map(String::as_str), Some("second arg"));
    assert_eq!(d.input_srcs.len(), 1);
    assert_eq!(drv::modules_of(&d), ["git", "fish"]);

    // Every derivation here, and each input, agrees with Nix's own reading.
    let mut all = vec![top.clone()];
    all.extend(d.input_drvs.keys().map(PathBuf::from));
    let mut compared = 0;
    for path in &all {
        let mine = drv::read(path).unwrap();
        let Some(theirs) = show_derivation(path) else {
            eprintln!("nix show-derivation unavailable; compared with fixed expectations only");
            continue;
        };
        compared += 1;
        assert_eq!(theirs["system"], mine.system.as_str());
        assert_eq!(theirs["builder"], mine.builder.as_str());
        assert_eq!(theirs["args"], json!(mine.args));
        assert_eq!(theirs["env"], json!(mine.env), "{}", path.display());
        assert_eq!(theirs["inputSrcs"], json!(mine.input_srcs));
        assert_eq!(theirs["inputDrvs"], json!(mine.input_drvs));
        for (out, p) in &mine.outputs {
            assert_eq!(
                theirs["outputs"][out]["path"],
                json!(p),
                "{}",
                path.display()
            );
        }
    }
    eprintln!("compared {compared} derivations with nix show-derivation");

    // The same bytes, damaged, are errors and never panics.
    let bytes = std::fs::read(&top).unwrap();
    for cut in [0, 1, 7, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        assert!(drv::parse(&bytes[..cut], "odd").is_err(), "cut at {cut}");
    }
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(97) {
        flipped[i] ^= 0x55;
        let _ = drv::parse(&flipped, "odd");
    }
    // Not a .drv path, and a missing file.
    assert!(matches!(
        drv::read(Path::new("/etc/hostname")),
        Err(drv::DrvError::NotADrv { .. })
    ));
    assert!(matches!(
        drv::read(Path::new(
            "/nix/store/00000000000000000000000000000000-missing.drv"
        )),
        Err(drv::DrvError::Read { .. })
    ));
}

#[test]
fn drv_names_split_like_builtins_parse_drv_name() {
    let names = [
        "hello-2.12",
        "nixos-system-dev-25.05.20250101.abcdef",
        "openssh-9.9p2",
        "foo-_bar",
        "a-b-c",
        "x-",
        "-1",
        "foo-é1",
        "python3.12-requests-2.32.3",
        "system-path",
        "etc",
        "unit-script-voxnix-tailscale-up-start",
    ];
    let list = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new(nix_bin_dir().join("nix-instantiate"))
        .args([
            "--eval",
            "--strict",
            "--json",
            "-E",
            &format!("map builtins.parseDrvName [ {list} ]"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (n, t) in names.iter().zip(theirs) {
        let mine = drv::parse_drv_name(n);
        assert_eq!(t["name"], mine.name.as_str(), "{n}");
        assert_eq!(t["version"], mine.version.as_str(), "{n}");
    }
}

#[tokio::test]
async fn the_catalog_lists_the_library() {
    let e = env("nix/sandbox/system.nix");
    let started = Instant::now();
    let catalog =
        voxnix::nix::catalog::catalog_with_cancel(e.builder.config(), &CancelToken::never())
            .await
            .unwrap();
    eprintln!("catalog: {:?}", started.elapsed());
    let names: Vec<&str> = catalog.iter().map(|m| m.name.as_str()).collect();
    let mut files: Vec<String> = std::fs::read_dir(repo().join("modules"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".nix")
                .map(String::from)
        })
        .collect();
    files.sort();
    assert_eq!(names, files);
    let ssh = catalog.iter().find(|m| m.name == "ssh").unwrap();
    assert_eq!(ssh.settings["port"].type_, "int");
    assert_eq!(ssh.settings["port"].default, json!(22));
    let ts = catalog.iter().find(|m| m.name == "tailscale").unwrap();
    assert!(ts.credentials.contains_key("tailscale-auth-key"));
    assert!(catalog.iter().all(|m| !m.description.is_empty()));

    // Also as the free function.
    let again = voxnix::nix::catalog(e.builder.config()).await.unwrap();
    assert_eq!(again, catalog);
}
