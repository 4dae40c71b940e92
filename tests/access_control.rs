//! Who may do what, with real uids against the real bus policy and daemon.

mod common;

use common::daemon::Appliance;
use serde_json::Value;

async fn as_user(app: &Appliance, user: &str, args: &str) -> (Option<i32>, String, String) {
    let bin = voxnix::sandbox::daemon::ON_PATH;
    let cmd = format!(
        "setpriv --reuid=$(id -u {user}) --regid=$(id -g {user}) --init-groups {} {args}",
        bin
    );
    let out = app.sandbox.exec(["sh", "-c", &cmd]).await.expect("setpriv");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn owners_are_isolated_and_strangers_refused() {
    let app = Appliance::boot(
        "frontend_owner_kinds = [\"telegram\"]\nadmin_owners = [\"telegram:9\"]\n[telegram]\nadmin_chat_ids = [8]",
    )
    .await;
    // A front-end service user in the voxnix group, and a stranger.
    let setup = app
        .sh("groupadd -g 4990 voxnix && useradd -u 4990 -g voxnix -M vxbot && useradd -u 1500 -M stranger && systemctl reload dbus && systemctl restart voxnix && echo ok")
        .await;
    assert_eq!(setup.trim(), "ok");
    app.wait_daemon_active().await;
    // Root creates one container for each of two chats.
    for (owner, name) in [("telegram:1", "one"), ("telegram:2", "two")] {
        assert_eq!(
            app.create(&format!(r#"{{"name":"{name}"}}"#), owner).await["ok"],
            true
        );
    }

    // The stranger is refused by the bus itself.
    let (code, _, err) = as_user(&app, "stranger", "list").await;
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("AccessDenied"), "{err}");

    // The front end acting for telegram:1 sees only its own.
    let (code, out, err) = as_user(&app, "vxbot", "--as telegram:1 list --json").await;
    assert_eq!(code, Some(0), "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    let names: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, vec!["one"]);

    // Everything on telegram:2's container is NotFound, exactly like a missing one.
    let (_, _, missing) = as_user(&app, "vxbot", "--as telegram:1 status nosuch").await;
    for verb in [
        "status two",
        "start two",
        "stop two",
        "restart two",
        "logs two",
        "destroy --yes two",
        "exec two -- true",
    ] {
        let (code, _, err) = as_user(&app, "vxbot", &format!("--as telegram:1 {verb}")).await;
        assert_eq!(code, Some(4), "{verb}: {err}");
        assert_eq!(
            err.replace("two", "X"),
            missing.replace("nosuch", "X"),
            "{verb}: same message as a missing container"
        );
    }
    assert!(
        app.sh("machinectl list --no-legend").await.contains("two"),
        "telegram:2's container still runs"
    );

    // It cannot act for an owner kind it is not allowed, nor without an owner.
    let (code, _, err) = as_user(&app, "vxbot", "--as unix:0 list").await;
    assert_eq!(code, Some(6), "{err}");
    let (code, _, err) = as_user(&app, "vxbot", "list").await;
    assert_eq!(code, Some(2), "{err}");
    // Admin-only methods are refused to it, for an owner that is not an admin
    // (over the CLI and over the bare bus)...
    let (code, _, err) = as_user(&app, "vxbot", "--as telegram:1 health").await;
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("telegram:1 is not"), "{err}");
    let out = app
        .sh("setpriv --reuid=4990 --regid=4990 --init-groups busctl call org.voxnix.Voxnix1 /org/voxnix/Voxnix1 org.voxnix.Voxnix1.Manager HostHealth s telegram:1 2>&1")
        .await;
    assert!(out.contains("administrators"), "{out}");
    // ...and to a local user, who is not listed.
    let (code, _, err) = as_user(&app, "stranger", "health").await;
    assert_eq!(code, Some(6), "{err}");
    // ...but answered for an owner listed in admin_owners or as a Telegram admin.
    for admin in ["telegram:9", "telegram:8"] {
        let (code, out, err) = as_user(&app, "vxbot", &format!("--as {admin} health --json")).await;
        assert_eq!(code, Some(0), "{admin}: {err}");
        let health: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(health["containers"], 2, "{admin}: {health}");
    }
    let (code, out, err) = as_user(&app, "vxbot", "--as telegram:9 health").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("Host health: all fine."), "{out}");
    assert!(out.contains("✅ systemd-machined answers"), "{out}");
    assert!(!out.contains("Not voxnix's"), "nothing unmanaged: {out}");
    // And the per-container objects are root's only.
    let out = app
        .sh("setpriv --reuid=4990 --regid=4990 --init-groups busctl get-property org.voxnix.Voxnix1 /org/voxnix/Voxnix1/container/two org.voxnix.Voxnix1.Container Owner 2>&1")
        .await;
    assert!(out.contains("Access denied"), "{out}");
}

/// The front-end group made after the daemon started (a host set up by
/// hand, not by the NixOS module): `health` says it is missing until then,
/// and once it exists (and the bus reloaded its policy) its members act
/// for their owners without a daemon restart.
#[tokio::test]
async fn a_front_end_group_made_after_the_daemon_started_counts_at_once() {
    let app = Appliance::boot("frontend_owner_kinds = [\"telegram\"]").await;
    let health = app.cli(&["health"]).await;
    let report = String::from_utf8_lossy(&health.stdout);
    assert!(
        report.contains("the front-end group 'voxnix' does not exist")
            && report.contains("systemctl reload dbus"),
        "{report}"
    );
    let setup = app
        .sh("groupadd -g 4990 voxnix && useradd -u 4990 -g voxnix -M vxbot && systemctl reload dbus && echo ok")
        .await;
    assert_eq!(setup.trim(), "ok");
    let (code, out, err) = as_user(&app, "vxbot", "--as telegram:1 list --json").await;
    assert_eq!(code, Some(0), "a member of the new group: {err}");
    assert_eq!(out.trim(), "[]");
    let health = app.cli(&["health"]).await;
    let report = String::from_utf8_lossy(&health.stdout);
    assert!(
        report.contains("✅ front-end group 'voxnix' exists"),
        "{report}"
    );
}

/// No timing oracle on another owner's containers: while one owner's
/// container is mid-operation (its name locked), another owner asking to
/// snapshot, restore or purge that name gets NotFound at once, as for a
/// name nobody has, not after the operation lets the lock go.
#[tokio::test]
async fn another_owners_busy_container_answers_not_found_at_once() {
    let app = Appliance::boot("").await;
    let m = app.manager().await;
    let op = m
        .create(r#"{"name":"busy"}"#, "telegram:1")
        .await
        .expect("create accepted");
    // The create holds the name's lock from here to its end.
    let snap = m.snapshot("busy", "telegram:2").await;
    let restore = m.restore_snapshot("busy", "telegram:2", "x").await;
    let purge = m.purge("busy", "telegram:2").await;
    let still_running: Value =
        serde_json::from_str(&m.get_operation(&op, "telegram:1").await.expect("op")).expect("json");
    assert_eq!(
        still_running["done"], false,
        "answered while the create still ran: {still_running}"
    );
    for (what, r) in [
        ("snapshot", snap.map(|_| ())),
        ("restore", restore.map(|_| ())),
        ("purge", purge.map(|_| ())),
    ] {
        let err = r.expect_err(what).to_string();
        assert!(err.contains("NotFound"), "{what}: {err}");
    }
    assert_eq!(app.wait_op(&m, &op, "telegram:1").await["ok"], true);
}
