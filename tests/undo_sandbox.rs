//! Checkpoints and undo against the real daemon in a sandbox (dir backend,
//! real Nix profiles): a module update undone brings back the earlier system
//! and files, the undo itself can be undone, nothing of it reaches another
//! owner or the next holder of the name, and a daemon killed in the middle
//! loses no checkpoint.

mod common;

use common::daemon::Appliance;
use serde_json::Value;
use voxnix::api::client::{ManagerProxy, error_parts};

const ALICE: &str = "telegram:7";
const BOB: &str = "telegram:8";

async fn status(m: &ManagerProxy<'_>, name: &str) -> Value {
    serde_json::from_str(&m.status(name, "").await.expect("status")).expect("json")
}

async fn history(m: &ManagerProxy<'_>, name: &str, owner: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&m.history(name, owner).await.expect("history")).expect("json");
    v.as_array().cloned().unwrap_or_default()
}

/// What the container's profile points at now, read in the appliance.
async fn profile_system(app: &Appliance, name: &str) -> String {
    app.sh(&format!(
        "readlink -f /nix/var/nix/profiles/per-container/{name}/system"
    ))
    .await
    .trim()
    .to_string()
}

async fn cat(app: &Appliance, name: &str, path: &str) -> String {
    app.run_in(
        name,
        ALICE,
        &format!("cat {path} 2>/dev/null || echo MISSING"),
    )
    .await
}

#[tokio::test]
async fn a_module_update_undone_brings_back_the_earlier_system_and_files() {
    let app = Appliance::boot("").await;
    let m = app.manager().await;
    assert_eq!(
        app.create(r#"{"name":"nx","modules":["git"]}"#, ALICE)
            .await["ok"],
        true
    );
    let h = history(&m, "nx", ALICE).await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["kind"], "create");
    assert_eq!(h[0]["by"], ALICE);
    let system_git = profile_system(&app, "nx").await;
    assert_eq!(h[0]["system"], system_git.as_str(), "{h:?}");
    let drv_git = status(&m, "nx").await["drv_path"].clone();

    app.run_in(
        "nx",
        ALICE,
        "echo v1 > /workspace/notes && echo old > /workspace/old",
    )
    .await;
    let op = m
        .update("nx", ALICE, &["git", "fish"])
        .await
        .expect("update");
    assert_eq!(app.wait_op(&m, &op, ALICE).await["ok"], true);
    let system_fish = profile_system(&app, "nx").await;
    assert_ne!(system_fish, system_git, "the update built another system");
    let h = history(&m, "nx", ALICE).await;
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1]["kind"], "update");
    assert_eq!(h[1]["why"], "before update: git → git, fish");
    assert_eq!(h[1]["modules"], serde_json::json!(["git"]));
    assert_eq!(h[1]["system"], system_git.as_str());
    let snap = h[1]["snapshot"].as_str().expect("a workspace snapshot");
    let snaps = m.snapshots("nx", ALICE).await.expect("snapshots");
    assert!(snaps.contains(snap), "{snaps}");

    // The change the person regrets: files changed after the update.
    app.run_in(
        "nx",
        ALICE,
        "echo v2 > /workspace/notes && rm /workspace/old && echo new > /workspace/new",
    )
    .await;

    // The plan says what will change, and changes nothing.
    let plan: Value =
        serde_json::from_str(&m.plan_undo("nx", ALICE, 0).await.expect("plan")).expect("json");
    assert_eq!(plan["target"]["id"], 2, "{plan}");
    assert_eq!(plan["modules_now"], serde_json::json!(["git", "fish"]));
    assert_eq!(plan["modules_then"], serde_json::json!(["git"]));
    assert_eq!(plan["workspace"], true);
    assert_eq!(cat(&app, "nx", "/workspace/notes").await, "v2\n");

    let undone: Value =
        serde_json::from_str(&m.undo("nx", ALICE, 0).await.expect("undo")).expect("json");
    assert_eq!(undone["safety"], 3, "{undone}");
    let st = status(&m, "nx").await;
    assert_eq!(st["modules"], serde_json::json!(["git"]), "{st}");
    assert_eq!(
        st["system"]["modules"],
        serde_json::json!(["git", "workspace"]),
        "the system read back from the derivation is the earlier one: {st}"
    );
    assert_eq!(st["drv_path"], drv_git);
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(profile_system(&app, "nx").await, system_git);
    assert_eq!(cat(&app, "nx", "/workspace/notes").await, "v1\n");
    assert_eq!(cat(&app, "nx", "/workspace/old").await, "old\n");
    assert_eq!(cat(&app, "nx", "/workspace/new").await, "MISSING\n");
    let h = history(&m, "nx", ALICE).await;
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[2]["kind"], "undo");
    assert_eq!(h[2]["undoes"], 2);
    assert_eq!(h[2]["modules"], serde_json::json!(["git", "fish"]));

    // The undo undone: back to what it was before it.
    m.undo("nx", ALICE, 3).await.expect("undo the undo");
    assert_eq!(
        status(&m, "nx").await["modules"],
        serde_json::json!(["git", "fish"])
    );
    assert_eq!(profile_system(&app, "nx").await, system_fish);
    assert_eq!(cat(&app, "nx", "/workspace/notes").await, "v2\n");
    assert_eq!(cat(&app, "nx", "/workspace/new").await, "new\n");

    // A checkpoint that is not there, and bad input, are refused as such.
    let e = m.undo("nx", ALICE, 99).await.expect_err("no checkpoint 99");
    assert_eq!(error_parts(&e).0, "NotFound");
    let e = m
        .checkpoint("nx", ALICE, "sudo", "x")
        .await
        .expect_err("bad kind");
    assert_eq!(error_parts(&e).0, "InvalidArgument");

    // Another owner sees none of it and can undo nothing.
    for e in [
        m.history("nx", BOB).await.expect_err("bob's history"),
        m.undo("nx", BOB, 2).await.expect_err("bob's undo"),
        m.plan_undo("nx", BOB, 0).await.expect_err("bob's plan"),
        m.checkpoint("nx", BOB, "manual", "")
            .await
            .expect_err("bob's checkpoint"),
    ] {
        assert_eq!(error_parts(&e).0, "NotFound", "{e}");
    }

    // The next holder of the name inherits no history.
    m.destroy("nx", ALICE).await.expect("destroy");
    assert_eq!(
        app.create(r#"{"name":"nx","modules":["git"]}"#, BOB).await["ok"],
        true
    );
    let h = history(&m, "nx", BOB).await;
    assert_eq!(h.len(), 1, "only its own create: {h:?}");
    assert_eq!(h[0]["by"], BOB);
    let e = m
        .undo("nx", BOB, 2)
        .await
        .expect_err("alice's checkpoint 2");
    assert_eq!(error_parts(&e).0, "NotFound");

    // The CLI lists them.
    let out = app.cli(&["--as", BOB, "history", "nx"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("created with git"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon is killed (SIGKILL) between a checkpoint's snapshot and its
/// being written down, and again after an update's checkpoint before the
/// build: after each restart, the checkpoint is there and can be undone to.
#[tokio::test]
async fn a_restart_in_the_middle_loses_no_checkpoint() {
    let app = Appliance::boot("").await;
    let m = app.manager().await;
    assert_eq!(
        app.create(r#"{"name":"cp","modules":["git"]}"#, ALICE)
            .await["ok"],
        true
    );
    app.run_in("cp", ALICE, "echo v1 > /workspace/notes").await;

    // Killed after the update's checkpoint, before anything was built.
    let pid = app.host_pid_of("voxnix.service").await;
    app.set_fault("update:checkpointed");
    let _ = m.update("cp", ALICE, &["git", "fish"]).await;
    wait_restarted(&app, pid).await;
    let m = app.manager().await;
    let h = history(&m, "cp", ALICE).await;
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1]["kind"], "update");
    let snap = h[1]["snapshot"].as_str().expect("snapshot").to_string();
    assert!(
        m.snapshots("cp", ALICE)
            .await
            .expect("snapshots")
            .contains(&snap)
    );

    // Killed after the snapshot of a checkpoint, before it was written.
    app.run_in("cp", ALICE, "echo v2 > /workspace/notes").await;
    let pid = app.host_pid_of("voxnix.service").await;
    app.set_fault("checkpoint:snapshot-taken");
    let _ = m.checkpoint("cp", ALICE, "manual", "by hand").await;
    wait_restarted(&app, pid).await;
    let m = app.manager().await;
    let h = history(&m, "cp", ALICE).await;
    assert_eq!(h.len(), 3, "the snapshot became a checkpoint: {h:?}");
    assert_eq!(h[2]["kind"], "recovered", "{h:?}");
    let recovered = h[2]["id"].as_u64().expect("id");

    // Both can be gone back to.
    app.run_in("cp", ALICE, "echo v3 > /workspace/notes").await;
    m.undo("cp", ALICE, recovered)
        .await
        .expect("undo to the recovered one");
    assert_eq!(cat(&app, "cp", "/workspace/notes").await, "v2\n");
    m.undo("cp", ALICE, 2).await.expect("undo to the update's");
    assert_eq!(cat(&app, "cp", "/workspace/notes").await, "v1\n");
    // And a restart with nothing cut short adds nothing.
    let pid = app.host_pid_of("voxnix.service").await;
    app.sh("systemctl restart voxnix.service").await;
    wait_restarted(&app, pid).await;
    let m = app.manager().await;
    assert_eq!(history(&m, "cp", ALICE).await.len(), 5);
}

async fn wait_restarted(app: &Appliance, old: i32) {
    for _ in 0..300 {
        if !common::alive(old) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!common::alive(old), "the daemon was not killed");
    app.wait_daemon_active().await;
}

/// `checkpoints_keep` prunes the oldest, but never the checkpoint an undo
/// goes back to; a change refused (bad input) or failed leaves no
/// checkpoint behind.
#[tokio::test]
async fn the_checkpoint_limit_spares_what_is_restored_and_failures_leave_none() {
    let app = Appliance::boot("[storage]\ncheckpoints_keep = 2").await;
    let m = app.manager().await;
    assert_eq!(app.create(r#"{"name":"lim"}"#, ALICE).await["ok"], true);
    app.run_in("lim", ALICE, "echo one > /workspace/f").await;
    m.checkpoint("lim", ALICE, "manual", "one")
        .await
        .expect("cp 2");
    let first_snap = history(&m, "lim", ALICE).await[0]["snapshot"]
        .as_str()
        .expect("snapshot")
        .to_string();
    app.run_in("lim", ALICE, "echo two > /workspace/f").await;
    m.checkpoint("lim", ALICE, "manual", "two")
        .await
        .expect("cp 3");
    let ids = |h: &[Value]| {
        h.iter()
            .filter_map(|c| c["id"].as_u64())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&history(&m, "lim", ALICE).await), [2, 3]);
    let snaps = m.snapshots("lim", ALICE).await.expect("snapshots");
    assert!(
        !snaps.contains(&first_snap),
        "the pruned checkpoint's snapshot went: {snaps}"
    );

    // An undo to the oldest: its own checkpoint would push it out; it stays.
    app.run_in("lim", ALICE, "echo three > /workspace/f").await;
    m.undo("lim", ALICE, 2).await.expect("undo to the oldest");
    assert_eq!(cat(&app, "lim", "/workspace/f").await, "one\n");
    assert_eq!(ids(&history(&m, "lim", ALICE).await), [2, 4]);

    // Refused or failed: no checkpoint, no snapshot.
    let h = history(&m, "lim", ALICE).await;
    let snap2 = h[0]["snapshot"].as_str().expect("snapshot").to_string();
    let count = |t: String| t.matches("\"checkpoint\"").count();
    let before = count(m.snapshots("lim", ALICE).await.expect("snapshots"));
    let e = m
        .restore_path("lim", ALICE, &snap2, "/etc/passwd", "")
        .await
        .expect_err("absolute");
    assert_eq!(error_parts(&e).0, "InvalidArgument");
    let e = m
        .restore_path("lim", ALICE, &snap2, "not-there", "")
        .await
        .expect_err("missing in the snapshot");
    assert_eq!(error_parts(&e).0, "NotFound");
    assert_eq!(history(&m, "lim", ALICE).await, h, "no checkpoint was left");
    assert_eq!(
        count(m.snapshots("lim", ALICE).await.expect("snapshots")),
        before,
        "no checkpoint snapshot was left"
    );
    // And one that works is checkpointed first.
    app.run_in("lim", ALICE, "rm /workspace/f").await;
    m.restore_path("lim", ALICE, &snap2, "f", "")
        .await
        .expect("one file back");
    assert_eq!(cat(&app, "lim", "/workspace/f").await, "one\n");
    let h = history(&m, "lim", ALICE).await;
    assert_eq!(
        h.last().map(|c| c["kind"].clone()),
        Some("restore".into()),
        "{h:?}"
    );
}
