//! Persistent workspaces end to end in a sandbox with the dir backend:
//! nothing is lost by accident.

mod common;

use common::daemon::Appliance;
use serde_json::Value;

async fn exec(app: &Appliance, name: &str, script: &str) -> (i32, String) {
    let (code, out, _, _) = app
        .manager()
        .await
        .exec(name, "", &["sh", "-c", script], 30)
        .await
        .expect("exec");
    (code, String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn workspace_survives_and_snapshots_restore_and_destroy_keeps_it() {
    let app = Appliance::boot("").await;
    let m = app.manager().await;
    let v = app.create(r#"{"name":"ws"}"#, "telegram:7").await;
    assert_eq!(v["ok"], true, "{v}");
    let (code, _) = exec(&app, "ws", "echo v1 > /workspace/notes.txt").await;
    assert_eq!(code, 0);

    // Survives stop/start.
    m.stop("ws", "").await.expect("stop");
    m.start("ws", "").await.expect("start");
    assert_eq!(exec(&app, "ws", "cat /workspace/notes.txt").await.1, "v1\n");

    // Snapshot, change, restore.
    let snap: Value =
        serde_json::from_str(&m.snapshot("ws", "").await.expect("snapshot")).expect("json");
    let id = snap["id"].as_str().expect("id").to_string();
    exec(&app, "ws", "echo v2 > /workspace/notes.txt").await;
    assert_eq!(exec(&app, "ws", "cat /workspace/notes.txt").await.1, "v2\n");
    m.restore_snapshot("ws", "", &id).await.expect("restore");
    assert_eq!(
        exec(&app, "ws", "cat /workspace/notes.txt").await.1,
        "v1\n",
        "old content back"
    );
    let snaps: Value =
        serde_json::from_str(&m.snapshots("ws", "").await.expect("snapshots")).expect("json");
    assert!(
        snaps.as_array().map(Vec::len).unwrap_or(0) >= 2,
        "the state before the restore is a snapshot too: {snaps}"
    );

    // Usage is measured.
    exec(&app, "ws", "head -c 65536 /dev/urandom > /workspace/blob").await;
    let usage: Value =
        serde_json::from_str(&m.storage_usage("telegram:7").await.expect("usage")).expect("json");
    assert!(
        usage["usage"]["used"].as_u64().unwrap_or(0) >= 65536,
        "{usage}"
    );

    // Destroy keeps a final snapshot.
    m.destroy("ws", "").await.expect("destroy");
    let kept: Value =
        serde_json::from_str(&m.kept("telegram:7").await.expect("kept")).expect("json");
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
    assert_eq!(kept[0]["container"], "ws");
    // Another owner sees nothing of it.
    let other: Value =
        serde_json::from_str(&m.kept("telegram:8").await.expect("kept")).expect("json");
    assert_eq!(other.as_array().map(Vec::len), Some(0));

    // Recreate: the create offers the kept workspace; restoring brings the file back.
    let m2 = app.manager().await;
    let mut progress =
        futures_util::StreamExt::boxed(m2.receive_operation_progress().await.expect("progress"));
    let v = app.create(r#"{"name":"ws"}"#, "telegram:7").await;
    assert_eq!(v["ok"], true, "{v}");
    let mut offered = false;
    while let Ok(Some(sig)) = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        futures_util::StreamExt::next(&mut progress),
    )
    .await
    {
        if sig
            .args()
            .map(|a| a.message.contains("restore-kept"))
            .unwrap_or(false)
        {
            offered = true;
        }
    }
    assert!(offered, "the create offered to restore the kept workspace");
    assert_eq!(
        exec(
            &app,
            "ws",
            "cat /workspace/notes.txt 2>/dev/null || echo none"
        )
        .await
        .1,
        "none\n",
        "a fresh workspace"
    );
    m.restore_kept("ws", "telegram:7")
        .await
        .expect("restore kept");
    assert_eq!(
        exec(&app, "ws", "cat /workspace/notes.txt").await.1,
        "v1\n",
        "file back"
    );

    // Destroy again and purge: gone for good.
    m.destroy("ws", "").await.expect("destroy");
    let kept: Value =
        serde_json::from_str(&m.kept("telegram:7").await.expect("kept")).expect("json");
    assert!(!kept.as_array().map(Vec::is_empty).unwrap_or(true));
    while m.purge("ws", "telegram:7").await.is_ok() {}
    let kept: Value =
        serde_json::from_str(&m.kept("telegram:7").await.expect("kept")).expect("json");
    assert_eq!(kept.as_array().map(Vec::len), Some(0), "purged: {kept}");
    let root = app.sandbox.root().join("var/lib/voxnix/storage");
    let left = app
        .sh(&format!(
            "find {} -name notes.txt | wc -l",
            "/var/lib/voxnix/storage"
        ))
        .await;
    assert_eq!(
        left.trim(),
        "0",
        "no copy of the file remains under {}",
        root.display()
    );
}

#[tokio::test]
async fn no_workspace_opt_out_and_quota() {
    let app = Appliance::boot("[storage]\nuser_quota = \"1M\"").await;
    let m = app.manager().await;
    assert_eq!(
        app.create(r#"{"name":"bare","workspace":false}"#, "").await["ok"],
        true
    );
    let (code, out, _, _) = m
        .exec(
            "bare",
            "",
            &["sh", "-c", "test -e /workspace && echo yes || echo no"],
            10,
        )
        .await
        .expect("exec");
    assert_eq!(
        (code, String::from_utf8_lossy(&out).trim().to_string()),
        (0, "no".to_string())
    );
    // Fill the owner's 1M quota, then a new workspace is refused with numbers.
    assert_eq!(
        app.create(r#"{"name":"full"}"#, "telegram:3").await["ok"],
        true
    );
    let (code, _, _, _) = m
        .exec(
            "full",
            "",
            &["sh", "-c", "head -c 2000000 /dev/zero > /workspace/big"],
            30,
        )
        .await
        .expect("exec");
    assert_eq!(
        code, 0,
        "the dir backend accounts at create time only (docs/storage.md)"
    );
    let v = app.create(r#"{"name":"more"}"#, "telegram:3").await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["error_kind"], "QuotaExceeded", "{v}");
    assert!(
        v["error_message"].as_str().unwrap_or("").contains("1.0"),
        "the limit is in the message: {v}"
    );
    assert!(app.traces_of("more").await.is_empty());
}

/// `destroy --purge` by root on another owner's container deletes that
/// owner's kept data, never root's own of the same name.
#[tokio::test]
async fn roots_purge_of_another_owners_container_purges_that_owners_kept_data() {
    let app = Appliance::boot("").await;
    let m = app.manager().await;
    // Root's own "pz", destroyed: its workspace is kept.
    assert_eq!(app.create(r#"{"name":"pz"}"#, "").await["ok"], true);
    assert!(app.cli(&["destroy", "--yes", "pz"]).await.status.success());
    // telegram:7's "pz", destroyed by root with --purge.
    assert_eq!(
        app.create(r#"{"name":"pz"}"#, "telegram:7").await["ok"],
        true
    );
    let out = app.cli(&["destroy", "--yes", "--purge", "pz"]).await;
    assert!(out.status.success(), "{out:?}");
    let kept = |owner: &'static str| {
        let m = m.clone();
        async move {
            let v: Value = serde_json::from_str(&m.kept(owner).await.expect("kept")).expect("json");
            v.as_array()
                .into_iter()
                .flatten()
                .filter(|k| k["container"] == "pz")
                .count()
        }
    };
    assert_eq!(
        kept("telegram:7").await,
        0,
        "the owner's kept data is purged"
    );
    assert_eq!(kept("").await, 1, "root's own kept workspace is left");
}

/// A destroyed container's kept workspace is not stranded when someone
/// else takes its name: its owner restores it into a container of another
/// name (`storage restore-kept NEW --from OLD`).
#[tokio::test]
async fn a_kept_workspace_comes_back_under_another_name() {
    let app = Appliance::boot("").await;
    let m = app.manager().await;
    assert_eq!(
        app.create(r#"{"name":"old"}"#, "telegram:7").await["ok"],
        true
    );
    let (code, _, _, _) = m
        .exec(
            "old",
            "telegram:7",
            &["sh", "-c", "echo notes > /workspace/notes"],
            10,
        )
        .await
        .expect("write");
    assert_eq!(code, 0);
    m.destroy("old", "telegram:7").await.expect("destroy");
    // Someone else takes the name.
    assert_eq!(
        app.create(r#"{"name":"old"}"#, "telegram:8").await["ok"],
        true
    );
    // Another owner cannot take it, whatever the name.
    assert_eq!(
        app.create(r#"{"name":"new"}"#, "telegram:9").await["ok"],
        true
    );
    let err = m
        .restore_kept_from("new", "old", "telegram:9")
        .await
        .expect_err("not theirs");
    assert!(err.to_string().contains("NotFound"), "{err}");
    // Its owner brings it back under a new name.
    assert_eq!(
        app.create(r#"{"name":"fresh"}"#, "telegram:7").await["ok"],
        true
    );
    let out = app
        .cli(&[
            "--as",
            "telegram:7",
            "storage",
            "restore-kept",
            "fresh",
            "--from",
            "old",
        ])
        .await;
    assert!(out.status.success(), "{out:?}");
    let (code, out, _, _) = m
        .exec("fresh", "telegram:7", &["cat", "/workspace/notes"], 10)
        .await
        .expect("read");
    assert_eq!((code, String::from_utf8_lossy(&out).trim()), (0, "notes"));
    let kept: Value =
        serde_json::from_str(&m.kept("telegram:7").await.expect("kept")).expect("json");
    assert!(
        kept.as_array()
            .into_iter()
            .flatten()
            .all(|k| k["container"] != "old"),
        "moved, not copied: {kept}"
    );
    // The other owner's container of the old name is untouched.
    let (code, _, _, _) = m
        .exec(
            "old",
            "telegram:8",
            &["test", "!", "-e", "/workspace/notes"],
            10,
        )
        .await
        .expect("exec");
    assert_eq!(code, 0);
}

/// The snapshot schedule (storage.snapshot_schedule) in the real daemon: a
/// workspace gets its hour's snapshot when the daemon starts (the slot it
/// missed while it was down runs once), and a restart in the same hour
/// takes no second one; the daemon's own snapshots and the manual ones are
/// told apart, and a manual one does not fill the slot.
#[tokio::test]
async fn the_schedule_takes_one_snapshot_an_hour_and_survives_a_restart() {
    let app = Appliance::boot("[storage]\nsnapshot_schedule = \"hourly=3,daily=2\"").await;
    let m = app.manager().await;
    assert_eq!(app.create(r#"{"name":"sched"}"#, "").await["ok"], true);
    m.snapshot("sched", "").await.expect("a manual snapshot");
    let scheduled = |text: &str| -> Vec<(String, u64)> {
        let v: Value = serde_json::from_str(text).expect("snapshots JSON");
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["reason"] == "scheduled")
            .map(|s| {
                (
                    s["id"].as_str().unwrap_or("").to_string(),
                    s["created"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    // Created after the daemon's start: its first slot is at the next run.
    assert!(scheduled(&m.snapshots("sched", "").await.expect("list")).is_empty());
    let hour = || {
        let app = &app;
        async move {
            app.sh("date -u +%s")
                .await
                .trim()
                .parse::<u64>()
                .expect("time")
                / 3600
        }
    };
    let runs = || {
        let app = &app;
        async move {
            app.sh("journalctl -u voxnix --no-pager | grep -c 'schedule: run done'; true")
                .await
                .trim()
                .parse::<usize>()
                .unwrap_or(0)
        }
    };
    // The boot's own start ran the schedule once (nothing to take then).
    let mut hours = std::collections::BTreeSet::new();
    for round in 0..2 {
        let done_before = runs().await;
        hours.insert(hour().await);
        let out = app.sh("systemctl restart voxnix && echo ok").await;
        assert!(out.contains("ok"), "{out}");
        app.wait_daemon_active().await;
        // Its start runs the schedule: wait for that run to end.
        let mut done = done_before;
        for _ in 0..200 {
            done = runs().await;
            if done > done_before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            done > done_before,
            "round {round}: the schedule did not run at start"
        );
        hours.insert(hour().await);
        assert!(
            !scheduled(&m.snapshots("sched", "").await.expect("list")).is_empty(),
            "round {round}: no scheduled snapshot after a start"
        );
    }
    let got = scheduled(&m.snapshots("sched", "").await.expect("list"));
    // One per hour the starts fell in (one, unless an hour turned during
    // the test), never one per start in the same hour.
    let got_hours: std::collections::BTreeSet<u64> = got.iter().map(|(_, t)| t / 3600).collect();
    assert_eq!(got.len(), got_hours.len(), "two in one hour: {got:?}");
    assert!(got_hours.is_subset(&hours), "{got:?} {hours:?}");
    let log = app
        .sh("journalctl -u voxnix --no-pager | grep -c 'schedule: snapshot taken'; true")
        .await;
    assert_eq!(log.trim().parse::<usize>().unwrap_or(0), got.len(), "{log}");
}

/// A schedule that cannot take its snapshot (the owner's quota is full)
/// says so to the owner, with their storage use, since they never see the
/// log; and the next snapshot that works clears it.
#[tokio::test]
async fn a_full_quota_stops_the_schedule_and_the_owner_is_told() {
    let app =
        Appliance::boot("[storage]\nsnapshot_schedule = \"hourly=2\"\nuser_quota = \"3M\"").await;
    assert_eq!(app.create(r#"{"name":"full"}"#, "").await["ok"], true);
    let (code, _) = exec(
        &app,
        "full",
        "dd if=/dev/urandom of=/workspace/big bs=1M count=2 status=none",
    )
    .await;
    assert_eq!(code, 0);
    let out = app.sh("systemctl restart voxnix && echo ok").await;
    assert!(out.contains("ok"), "{out}");
    app.wait_daemon_active().await;
    let mut said = String::new();
    for _ in 0..100 {
        let out = app.cli(&["storage", "usage"]).await;
        said = String::from_utf8_lossy(&out.stdout).into_owned();
        if said.contains("scheduled snapshot not taken") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        said.contains("scheduled snapshot not taken: quota exceeded"),
        "{said}"
    );
    assert!(said.contains("Scheduled snapshots: hourly=2"), "{said}");
    let m = app.manager().await;
    let v: Value = serde_json::from_str(&m.storage_usage("").await.expect("usage")).expect("json");
    assert!(
        v["containers"][0]["schedule_failed"]
            .as_str()
            .is_some_and(|w| w.contains("quota exceeded")),
        "{v}"
    );
    let snaps = m.snapshots("full", "").await.expect("snapshots");
    assert!(!snaps.contains("scheduled"), "{snaps}");
}

/// A container's own schedule (`voxnix schedule NAME TIERS|off|default`):
/// `off` keeps the schedule away from it while its neighbour gets the
/// host's; tiers above the administrator's caps and another owner's
/// container are refused; `default` gives the host's back.
#[tokio::test]
async fn a_container_can_have_its_own_schedule_within_the_caps() {
    let app = Appliance::boot(
        "[storage]\nsnapshot_schedule = \"hourly=2\"\nsnapshot_schedule_max = \"hourly=5,daily=3\"",
    )
    .await;
    for name in ["mine", "quiet"] {
        assert_eq!(
            app.create(&format!(r#"{{"name":"{name}"}}"#), "").await["ok"],
            true
        );
    }
    let said = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = app.cli(&["schedule", "quiet", "off"]).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("scheduled snapshots off (its own)"),
        "{}",
        said(&out)
    );
    let out = app.cli(&["schedule", "mine", "daily=3, hourly=4"]).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("hourly=4,daily=3 (its own)"),
        "{}",
        said(&out)
    );
    let out = app.cli(&["schedule", "mine", "monthly=1"]).await;
    assert!(!out.status.success());
    assert!(
        said(&out).contains("monthly=1 is more than this host allows (monthly=0)"),
        "{}",
        said(&out)
    );
    let out = app.cli(&["schedule", "mine", "weekly=x"]).await;
    assert!(!out.status.success());
    assert!(said(&out).contains("whole number"), "{}", said(&out));
    let m = app.manager().await;
    let e = m
        .set_schedule("mine", "telegram:9", "off")
        .await
        .unwrap_err();
    assert_eq!(voxnix::api::client::error_parts(&e).0, "NotFound", "{e}");

    // The next start's run: mine gets one, quiet none.
    let out = app.sh("systemctl restart voxnix && echo ok").await;
    assert!(out.contains("ok"), "{out}");
    app.wait_daemon_active().await;
    let scheduled = |text: String| text.matches("\"scheduled\"").count();
    let mut mine = 0;
    for _ in 0..100 {
        mine = scheduled(m.snapshots("mine", "").await.expect("list"));
        if mine > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(mine, 1, "mine has its own schedule");
    let runs = app
        .sh("journalctl -u voxnix --no-pager | grep -c 'schedule: run done'; true")
        .await;
    assert!(runs.trim().parse::<usize>().unwrap_or(0) >= 2, "{runs}");
    assert_eq!(
        scheduled(m.snapshots("quiet", "").await.expect("list")),
        0,
        "quiet is off"
    );
    let out = app.cli(&["schedule", "quiet"]).await;
    assert!(
        said(&out).contains("quiet: scheduled snapshots off (its own)"),
        "{}",
        said(&out)
    );
    let out = app.cli(&["schedule", "quiet", "default"]).await;
    assert!(
        said(&out).contains("quiet: scheduled snapshots hourly=2 (the host's default)"),
        "{}",
        said(&out)
    );
}

/// An owner's schedule covers all their containers that have none of their
/// own, survives a restart, and reaches no other owner's.
#[tokio::test]
async fn an_owner_schedule_covers_their_containers_without_one_of_their_own() {
    let app = Appliance::boot("[storage]\nsnapshot_schedule_max = \"hourly=5,daily=3\"").await;
    for (name, owner) in [
        ("a1", "telegram:7"),
        ("a2", "telegram:7"),
        ("b1", "telegram:8"),
    ] {
        assert_eq!(
            app.create(&format!(r#"{{"name":"{name}"}}"#), owner).await["ok"],
            true
        );
    }
    let m = app.manager().await;
    m.set_schedule("a2", "telegram:7", "off")
        .await
        .expect("a2 off");
    let set: Value = serde_json::from_str(
        &m.set_owner_schedule("telegram:7", "hourly=3")
            .await
            .expect("owner's schedule"),
    )
    .expect("json");
    assert_eq!(set["schedule"], "hourly=3", "{set}");
    assert_eq!(set["own"], true);
    let e = m
        .set_owner_schedule("telegram:7", "monthly=1")
        .await
        .expect_err("over the caps");
    assert_eq!(voxnix::api::client::error_parts(&e).0, "InvalidArgument");

    let whose = |usage: &Value, name: &str| -> (String, String) {
        let c = usage["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or(Value::Null);
        (
            c["whose_schedule"].as_str().unwrap_or("-").to_string(),
            c["schedule"].as_str().unwrap_or("-").to_string(),
        )
    };
    let usage = |owner: &'static str| {
        let m = m.clone();
        async move {
            serde_json::from_str::<Value>(&m.storage_usage(owner).await.expect("usage"))
                .expect("json")
        }
    };
    let seven = usage("telegram:7").await;
    assert_eq!(
        whose(&seven, "a1"),
        ("owner".into(), "hourly=3".into()),
        "{seven}"
    );
    assert_eq!(whose(&seven, "a2").0, "container", "{seven}");
    assert_eq!(seven["owner_schedule"]["schedule"], "hourly=3");
    let eight = usage("telegram:8").await;
    assert_eq!(whose(&eight, "b1").0, "host", "{eight}");
    assert_eq!(eight["owner_schedule"]["own"], false, "{eight}");

    // The next start's run: a1 gets one; a2 (off) and b1 (no schedule) none.
    let out = app.sh("systemctl restart voxnix && echo ok").await;
    assert!(out.contains("ok"), "{out}");
    app.wait_daemon_active().await;
    let m = app.manager().await;
    let scheduled = |text: String| text.matches("\"scheduled\"").count();
    let mut a1 = 0;
    for _ in 0..100 {
        a1 = scheduled(m.snapshots("a1", "").await.expect("list"));
        if a1 > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(a1, 1, "a1 follows its owner's schedule");
    for name in ["a2", "b1"] {
        assert_eq!(
            scheduled(m.snapshots(name, "").await.expect("list")),
            0,
            "{name}"
        );
    }
    let out = app.cli(&["--as", "telegram:7", "schedule", "--all"]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("hourly=3 (yours)"),
        "kept over the restart: {said}"
    );
    let out = app
        .cli(&["--as", "telegram:7", "schedule", "--all", "default"])
        .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("(the host's default)"),
        "{said}"
    );
    let seven: Value =
        serde_json::from_str(&m.storage_usage("telegram:7").await.expect("usage")).expect("json");
    assert_eq!(whose(&seven, "a1").0, "host", "{seven}");
}
