//! Faults the daemon must survive: kill -9 at the fault points of start and
//! stop, a start job that fails or times out, machined going away and coming
//! back, the daemon's bus connection dropping. Each ends with a clear error to
//! the caller and a daemon that serves.

mod common;

use common::daemon::Appliance;
use serde_json::Value;

async fn names(app: &Appliance) -> Vec<String> {
    let list: Value =
        serde_json::from_str(&app.manager().await.list("").await.expect("list")).expect("json");
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

async fn state(app: &Appliance, name: &str) -> String {
    let st: Value =
        serde_json::from_str(&app.manager().await.status(name, "").await.expect("status"))
            .expect("json");
    st["state"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn kill_9_during_start_and_stop_loses_nothing() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"sv"}"#, "").await["ok"], true);
    for point in ["stop:begun", "stop:stopped", "start:begun", "start:started"] {
        let m = app.manager().await;
        // Put the container in the state the operation starts from.
        if point.starts_with("stop") {
            let _ = m.start("sv", "").await;
        } else {
            let _ = m.stop("sv", "").await;
        }
        app.set_fault(point);
        let r = if point.starts_with("stop") {
            m.stop("sv", "").await
        } else {
            m.start("sv", "").await
        };
        assert!(r.is_err(), "the caller sees the daemon die at {point}");
        app.wait_daemon_active().await;
        assert_eq!(
            names(&app).await,
            vec!["sv"],
            "the record survives a crash at {point}"
        );
        let st: Value =
            serde_json::from_str(&app.manager().await.status("sv", "").await.expect("status"))
                .expect("json");
        assert_eq!(
            st["last_operation"]["outcome"], "interrupted by a daemon restart",
            "{point}: {st}"
        );
        // The container is operable again right away.
        let m = app.manager().await;
        m.stop("sv", "").await.expect("stop after recovery");
        assert_eq!(state(&app, "sv").await, "stopped");
        m.start("sv", "").await.expect("start after recovery");
        assert_eq!(state(&app, "sv").await, "running");
    }
}

#[tokio::test]
async fn a_failing_or_hanging_start_job_is_a_clear_error_and_rolled_back() {
    let app = Appliance::boot("start_timeout_secs = 3").await;
    // An administrator's drop-in that breaks the start of one container, and
    // one that makes another hang.
    app.sh(
        "mkdir -p /etc/systemd/system/container@jobfail.service.d /etc/systemd/system/container@jobhang.service.d && \
         printf '[Service]\\nExecStartPre=/bin/false\\n' > /etc/systemd/system/container@jobfail.service.d/x.conf && \
         printf '[Service]\\nExecStartPre=/bin/sleep 60\\n' > /etc/systemd/system/container@jobhang.service.d/x.conf && \
         systemctl daemon-reload",
    )
    .await;
    let v = app.create(r#"{"name":"jobfail"}"#, "").await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["error_kind"], "HostError", "{v}");
    assert!(
        v["error_message"].as_str().unwrap_or("").contains("failed"),
        "{v}"
    );
    assert!(
        app.traces_of("jobfail").await.is_empty(),
        "{:?}",
        app.traces_of("jobfail").await
    );

    let v = app.create(r#"{"name":"jobhang"}"#, "").await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["error_kind"], "Timeout", "{v}");
    assert!(
        app.traces_of("jobhang").await.is_empty(),
        "{:?}",
        app.traces_of("jobhang").await
    );
    assert!(
        app.sh("pgrep -x sleep || true").await.trim().is_empty(),
        "the hanging start was stopped"
    );

    // The daemon keeps serving.
    assert_eq!(app.create(r#"{"name":"fine"}"#, "").await["ok"], true);
    assert_eq!(names(&app).await, vec!["fine"]);
}

#[tokio::test]
async fn machined_going_away_and_coming_back() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"m1"}"#, "").await["ok"], true);
    app.sh("systemctl kill -s KILL systemd-machined; sleep 0.2")
        .await;
    // machined is bus-activated: the next call brings it back, and it finds
    // its running machines again.
    assert_eq!(state(&app, "m1").await, "running");
    assert_eq!(app.create(r#"{"name":"m2"}"#, "").await["ok"], true);
    app.sh("systemctl stop systemd-machined").await;
    let m = app.manager().await;
    m.stop("m2", "")
        .await
        .expect("stop with machined restarted by activation");
    assert_eq!(state(&app, "m2").await, "stopped");
    assert_eq!(names(&app).await, vec!["m1", "m2"]);
}

#[tokio::test]
async fn the_bus_connection_dropping_is_survived() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"bc"}"#, "").await["ok"], true);
    let restarts = |out: String| out.trim().parse::<u32>().expect("NRestarts");
    let before = restarts(app.sh("systemctl show -p NRestarts --value voxnix").await);
    let old_pid = app.host_pid_of("voxnix.service").await;

    // A call in flight when the connection drops: the CLI, inside the appliance.
    let mut cmd =
        tokio::process::Command::from(app.sandbox.command(voxnix::sandbox::daemon::ON_PATH));
    cmd.args(["exec", "--timeout", "60", "bc", "--", "sleep", "30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let call = cmd.spawn().expect("start the CLI");
    for _ in 0..100 {
        if !app.sh("pgrep -x sleep || true").await.trim().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.cut_daemon_bus_connection().await,
        1,
        "one bus connection"
    );

    // The caller is told at once that the daemon went away, and what to do.
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), call.wait_with_output())
        .await
        .expect("the call ends well before its 30 s")
        .expect("CLI output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(err.contains("went away before answering"), "{err}");

    // systemd restarts the daemon, which finds its container and serves again.
    app.wait_daemon_active().await;
    assert_eq!(
        restarts(app.sh("systemctl show -p NRestarts --value voxnix").await),
        before + 1,
        "restarted once, by systemd"
    );
    assert_ne!(app.host_pid_of("voxnix.service").await, old_pid);
    let log = app.sh("journalctl -u voxnix --no-pager").await;
    assert!(log.contains("bus connection lost"), "{log}");
    assert_eq!(names(&app).await, vec!["bc"]);
    assert_eq!(state(&app, "bc").await, "running");
    let m = app.manager().await;
    let (code, stdout, _, _) = m
        .exec("bc", "", &["echo", "back"], 10)
        .await
        .expect("exec after the restart");
    assert_eq!((code, String::from_utf8_lossy(&stdout).trim()), (0, "back"));
    assert_eq!(app.create(r#"{"name":"bc2"}"#, "").await["ok"], true);
}

/// The live view missing signals (the `view:deaf` fault drops them and
/// holds the periodic reconcile): a stop and a start from outside voxnix go
/// unseen, and the next reconcile (`view_reconcile_secs`) puts both right.
#[tokio::test]
async fn a_missed_signal_is_repaired_by_the_view_reconcile() {
    let app = Appliance::boot("view_reconcile_secs = 2").await;
    assert_eq!(
        app.create(r#"{"name":"deaf"}"#, "telegram:1").await["ok"],
        true
    );
    assert_eq!(state(&app, "deaf").await, "running");
    app.set_fault("view:deaf");
    app.sh("systemctl stop container@deaf.service").await;
    assert_eq!(
        app.sh("systemctl is-active container@deaf.service")
            .await
            .trim(),
        "inactive"
    );
    // Well past a reconcile period: the view still has it running, so the
    // signals were indeed missed.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        listed(&app).await.0,
        "running",
        "the stop was not missed: {}",
        app.sh("journalctl -u voxnix --no-pager | tail -20").await
    );
    std::fs::remove_file(app.sandbox.root().join("var/lib/voxnix/fault-injection"))
        .expect("clear the fault");
    let repaired = common::eventually(std::time::Duration::from_secs(10), || async {
        (listed(&app).await.0 == "stopped").then_some(())
    })
    .await;
    assert!(repaired.is_some(), "the reconcile did not repair the view");
    assert_eq!(state(&app, "deaf").await, "stopped");
    // And a start missed the same way.
    app.set_fault("view:deaf");
    app.sh("systemctl start container@deaf.service").await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(listed(&app).await.0, "stopped", "the start was not missed");
    std::fs::remove_file(app.sandbox.root().join("var/lib/voxnix/fault-injection"))
        .expect("clear the fault");
    let repaired = common::eventually(std::time::Duration::from_secs(20), || async {
        let (s, a) = listed(&app).await;
        (s == "running" && a.to_string().contains("10.100.0.")).then_some(())
    })
    .await;
    assert!(
        repaired.is_some(),
        "the reconcile did not repair the view: {:?}",
        listed(&app).await
    );
}

/// The first listed container's state and addresses.
async fn listed(app: &Appliance) -> (String, Value) {
    let v: Value =
        serde_json::from_str(&app.manager().await.list("").await.expect("list")).expect("json");
    (
        v[0]["state"].as_str().unwrap_or("").to_string(),
        v[0]["addresses"].clone(),
    )
}
