//! Attacks from inside a real container, as its root (which every owner is,
//! through `voxnix exec` and the agent's `run_command`), against the
//! appliance the container runs on: each test performs one, through the real
//! daemon and CLI in a sandbox appliance, and checks that the appliance was
//! not reached and that the daemon still serves.

mod common;

use common::daemon::Appliance;

/// The appliance's machine id: what a command that ran on the appliance,
/// not in the container, would print.
async fn appliance_machine_id(app: &Appliance) -> String {
    app.sh("cat /etc/machine-id").await.trim().to_string()
}

/// `voxnix exec NAME -- sh -c SCRIPT` inside the appliance, as root.
async fn exec_sh(app: &Appliance, name: &str, script: &str) -> std::process::Output {
    app.cli(&["exec", name, "--", "sh", "-c", script]).await
}

/// Attack 1 of issue 13: exec used to connect to the container's bus socket
/// through `/proc/<leader>/root/run/dbus/system_bus_socket` from the host,
/// so an absolute symlink planted there resolved against the *appliance's*
/// root: the next exec ran on the appliance's systemd, as its root. The
/// daemon now connects from inside the container's namespaces, where the
/// link can only point into the container.
#[tokio::test]
async fn a_bus_socket_symlink_does_not_lead_exec_to_the_host() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"box"}"#, "").await["ok"], true);
    let host_id = appliance_machine_id(&app).await;

    // Before: exec runs in the container (another machine id).
    let out = exec_sh(&app, "box", "cat /etc/machine-id").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let box_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(
        box_id, host_id,
        "exec ran on the appliance before the attack"
    );

    // The attack: the bus socket becomes a link to "the" bus socket, which
    // from the host's side is the appliance's own. The container's dbus keeps
    // running (its listening socket is already open), so the container looks
    // healthy.
    let plant = exec_sh(
        &app,
        "box",
        "rm /run/dbus/system_bus_socket && ln -s /run/dbus/system_bus_socket /run/dbus/system_bus_socket && echo planted",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&plant.stdout).trim(),
        "planted",
        "{plant:?}"
    );

    // Every later exec must fail in the container, never run on the appliance.
    let marker = "/etc/voxnix-hostile-tenant-marker";
    let out = exec_sh(&app, "box", &format!("touch {marker}; cat /etc/machine-id")).await;
    assert!(!out.status.success(), "exec still ran somewhere: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(&host_id),
        "exec ran on the appliance: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not running") || stderr.contains("bus"),
        "a failure a person can read: {stderr}"
    );
    assert_eq!(
        app.sh(&format!(
            "test -e {marker} && echo reached || echo untouched"
        ))
        .await
        .trim(),
        "untouched",
        "a file was created on the appliance"
    );
    // Straight over the D-Bus API (the path the front ends and the agent's
    // run_command take): the same refusal.
    let m = app.manager().await;
    match m.exec("box", "", &["cat", "/etc/shadow"], 10).await {
        Ok((code, out, _, _)) => {
            panic!("exec ran (exit {code}): {}", String::from_utf8_lossy(&out))
        }
        Err(e) => assert!(!e.to_string().contains("root:"), "{e}"),
    }

    // The daemon still serves, and restarting the container repairs it.
    let list = app.cli(&["list", "--json"]).await;
    assert!(list.status.success(), "{list:?}");
    let restart = app.cli(&["restart", "box"]).await;
    assert!(restart.status.success(), "{restart:?}");
    let out = exec_sh(&app, "box", "cat /etc/machine-id").await;
    assert!(out.status.success(), "{out:?}");
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), host_id);
    app.sandbox.shutdown().expect("shutdown");
}
