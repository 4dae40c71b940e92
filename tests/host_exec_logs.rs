//! `voxnix::host::exec` and `voxnix::host::journal` against real containers in
//! the sandbox appliance: commands run through the container's own systemd
//! over its own bus, logs read from the journal files. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use voxnix::host::exec::{ExecError, ExecRequest, exec_in_container};
use voxnix::host::journal::{ContainerJournal, LogLine, LogSource, container_logs};
use voxnix::sandbox::Sandbox;
use zbus_systemd::{machine1, systemd1};

use common::eventually;

/// A running container in `sandbox`.
struct Container {
    name: String,
    /// machined's `Leader`, a PID in the appliance's PID namespace.
    leader: u32,
    /// machined's `Id`, as hex.
    machine_id: String,
    /// The appliance's `/proc`, where `leader` is valid.
    proc_root: PathBuf,
}

async fn start_container(sandbox: &Sandbox, name: &str) -> Container {
    std::fs::write(
        sandbox
            .root()
            .join(format!("etc/nixos-containers/{name}.conf")),
        // User-namespaced, as voxnix's containers are (their journal is
        // read from inside that namespace).
        "PRIVATE_NETWORK=1\nHOST_BRIDGE=br-vox\nCOPY_RESOLV_CONF=0\nPRIVATE_USERS=pick\n",
    )
    .expect("write conf");
    let out = sandbox
        .exec(["systemctl", "start", &format!("container@{name}.service")])
        .await
        .expect("systemctl start");
    assert!(
        out.status.success(),
        "container@{name} failed to start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bus = sandbox.system_bus().await.expect("bus");
    let machined = machine1::ManagerProxy::new(&bus).await.expect("machine1");
    let path = machined
        .get_machine(name.to_string())
        .await
        .expect("GetMachine");
    let machine = machine1::MachineProxy::builder(&bus)
        .path(path)
        .build()
        .await
        .expect("Machine proxy");
    let leader = machine.leader().await.expect("Leader");
    let machine_id: String = machine
        .id()
        .await
        .expect("Id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let proc_root = sandbox.root().join("proc");
    // Ready (Type=notify, --notify-ready=yes) means the container's systemd
    // finished booting; still, wait for its bus socket to be sure.
    let socket = voxnix::host::exec::container_bus_socket(&proc_root, leader);
    eventually(Duration::from_secs(20), || async {
        socket.exists().then_some(())
    })
    .await
    .expect("the container's bus socket appears");
    Container {
        name: name.to_string(),
        leader,
        machine_id,
        proc_root,
    }
}

/// The running container's journal, read by the voxnix binary inside it.
fn running(c: &Container) -> ContainerJournal<'_> {
    ContainerJournal::Running {
        proc_root: &c.proc_root,
        leader: c.leader,
        reader: Path::new(env!("CARGO_BIN_EXE_voxnix")),
    }
}

fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_secs(30),
        max_output: 1 << 20,
    }
}

async fn exec(c: &Container, r: &ExecRequest) -> Result<voxnix::host::exec::ExecResult, ExecError> {
    exec_in_container(&c.proc_root, c.leader, r).await
}

/// The `voxnix-exec-*` units the container's systemd still knows.
async fn exec_units(c: &Container) -> Vec<String> {
    let bus = voxnix::host::exec::container_bus(&c.proc_root, c.leader)
        .await
        .expect("container bus");
    let mgr = systemd1::ManagerProxy::new(&bus).await.expect("systemd1");
    mgr.list_units_by_patterns(vec![], vec!["voxnix-exec-*".into()])
        .await
        .expect("ListUnitsByPatterns")
        .into_iter()
        .map(|u| format!("{} {} {}", u.0, u.3, u.4))
        .collect()
}

#[tokio::test]
async fn exec_runs_commands_and_reports_status_and_output() {
    let sandbox = Sandbox::boot().await.expect("boot");
    let c = start_container(&sandbox, "ex1").await;

    // A name looked up inside the container, and timed.
    let t = Instant::now();
    let r = exec(&c, &req(&["cat", "/usr/lib/os-release"]))
        .await
        .expect("cat");
    let first = t.elapsed();
    assert_eq!(
        r.exit_code,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("ID="), "os-release: {text}");
    assert!(!r.stdout_truncated && !r.stderr_truncated);

    // It runs in the container, not in the appliance: its own hostname.
    let r = exec(&c, &req(&["/bin/cat", "/proc/sys/kernel/hostname"]))
        .await
        .expect("hostname");
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), c.name);

    // Exit status and both streams.
    let t = Instant::now();
    let r = exec(&c, &req(&["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await
        .expect("sh");
    let second = t.elapsed();
    eprintln!("exec latency: first {first:?}, then {second:?}");
    assert_eq!(r.exit_code, 3);
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");

    // Arguments reach the command verbatim: systemd expands no `$VAR`.
    let r = exec(&c, &req(&["printf", "%s", "$HOME ${PATH} $$ \\ ' \""]))
        .await
        .expect("printf");
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "$HOME ${PATH} $$ \\ ' \""
    );

    // What the command runs in turn is looked up where argv[0] was: its
    // PATH is the search path, NixOS's directories first (systemd's own
    // default on NixOS holds none of them).
    let r = exec(&c, &req(&["sh", "-c", "printf %s \"$PATH\""]))
        .await
        .expect("PATH");
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        voxnix::host::exec::SEARCH_PATH.join(":")
    );

    // Killed by a signal: 128 + signal.
    let r = exec(&c, &req(&["sh", "-c", "kill -TERM $$"]))
        .await
        .expect("kill self");
    assert_eq!(r.exit_code, 128 + 15, "{r:?}");

    // Output beyond max_output is dropped and flagged; the command is not
    // blocked by it (1 MiB through a 64 KiB pipe).
    let mut big = req(&["sh", "-c", "head -c 1048576 /dev/zero; echo e >&2"]);
    big.max_output = 1000;
    let r = exec(&c, &big).await.expect("big output");
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout_truncated);
    assert_eq!(r.stderr, b"e\n");
    assert!(!r.stderr_truncated);

    // Exactly max_output bytes is not truncation.
    let mut exact = req(&["printf", "12345"]);
    exact.max_output = 5;
    let r = exec(&c, &exact).await.expect("exact output");
    assert_eq!(r.stdout, b"12345");
    assert!(!r.stdout_truncated);

    // Several at once.
    let t = Instant::now();
    let runs = futures_util::future::join_all((0..8).map(|i| {
        let c = &c;
        async move {
            let n = i.to_string();
            exec(c, &req(&["sh", "-c", "echo $0", &n])).await
        }
    }))
    .await;
    eprintln!("8 concurrent execs took {:?}", t.elapsed());
    for (i, r) in runs.into_iter().enumerate() {
        let r = r.expect("concurrent exec");
        assert_eq!(r.stdout, format!("{i}\n").into_bytes());
    }

    // Bad requests.
    let err = exec(&c, &req(&[])).await.expect_err("empty argv");
    assert!(matches!(err, ExecError::InvalidArgument(_)), "{err}");
    let err = exec(&c, &req(&["no-such-command-here"]))
        .await
        .expect_err("unknown command");
    assert!(matches!(err, ExecError::CommandNotFound(_)), "{err}");
    let err = exec(&c, &req(&["/no/such/binary"]))
        .await
        .expect_err("missing absolute path");
    assert!(matches!(err, ExecError::CommandNotFound(_)), "{err}");
    // Found, but execve fails (ENOEXEC): systemd's status 203.
    let r = exec(
        &c,
        &req(&[
            "sh",
            "-c",
            "printf '\\001\\002' > /tmp/bad && chmod 755 /tmp/bad",
        ]),
    )
    .await
    .expect("make /tmp/bad");
    assert_eq!(r.exit_code, 0, "{r:?}");
    let err = exec(&c, &req(&["/tmp/bad"])).await.expect_err("ENOEXEC");
    assert!(matches!(err, ExecError::SpawnFailed { .. }), "{err}");
    let err = exec(&c, &req(&["/etc"])).await.expect_err("a directory");
    assert!(matches!(err, ExecError::CommandNotFound(_)), "{err}");

    // Nothing is left behind by all of that.
    let units = eventually(Duration::from_secs(5), || async {
        let u = exec_units(&c).await;
        u.is_empty().then_some(())
    })
    .await;
    assert!(units.is_some(), "left: {:?}", exec_units(&c).await);
}

#[tokio::test]
async fn exec_timeout_kills_the_command() {
    let sandbox = Sandbox::boot().await.expect("boot");
    let c = start_container(&sandbox, "ex2").await;
    let mut r = req(&["sh", "-c", "sleep 60 & exec sleep 61"]);
    r.timeout = Duration::from_secs(2);
    let t = Instant::now();
    let err = exec(&c, &r).await.expect_err("must time out");
    let took = t.elapsed();
    assert!(
        matches!(err, ExecError::Timeout(d) if d == Duration::from_secs(2)),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "returned after {took:?}");

    let r = exec(&c, &req(&["pgrep", "-x", "sleep"]))
        .await
        .expect("pgrep");
    assert_eq!(
        r.exit_code,
        1,
        "no sleep left in the container: {}",
        String::from_utf8_lossy(&r.stdout)
    );
    let units = eventually(Duration::from_secs(5), || async {
        exec_units(&c).await.is_empty().then_some(())
    })
    .await;
    assert!(units.is_some(), "left: {:?}", exec_units(&c).await);

    // A caller that gives up (drops the future) does not leave it running
    // either.
    let mut r = req(&["sleep", "62"]);
    r.timeout = Duration::from_secs(60);
    let dropped = tokio::time::timeout(Duration::from_secs(1), exec(&c, &r)).await;
    assert!(dropped.is_err(), "still running after 1 s");
    let gone = eventually(Duration::from_secs(10), || async {
        let r = exec(&c, &req(&["pgrep", "-x", "sleep"])).await.ok()?;
        (r.exit_code == 1 && exec_units(&c).await.is_empty()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "left: {:?}", exec_units(&c).await);
}

#[tokio::test]
async fn exec_into_a_missing_or_stopped_container_says_not_running() {
    let sandbox = Sandbox::boot().await.expect("boot");
    let c = start_container(&sandbox, "ex3").await;
    assert_eq!(exec(&c, &req(&["true"])).await.expect("true").exit_code, 0);

    // A PID that does not exist.
    let err = exec_in_container(&c.proc_root, 4_000_000, &req(&["/bin/true"]))
        .await
        .expect_err("no such leader");
    assert!(matches!(err, ExecError::NotRunning(_)), "{err}");
    let err = exec_in_container(&c.proc_root, 4_000_000, &req(&["true"]))
        .await
        .expect_err("no such leader");
    assert!(matches!(err, ExecError::NotRunning(_)), "{err}");

    // A PID of the appliance itself (its dbus-daemon): not a container, and
    // nothing may run on the "host".
    let out = sandbox
        .exec([
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "dbus.service",
        ])
        .await
        .expect("MainPID");
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a PID");
    assert!(pid > 1);
    let err = exec_in_container(&c.proc_root, pid, &req(&["/bin/true"]))
        .await
        .expect_err("not a container");
    assert!(matches!(err, ExecError::NotRunning(_)), "{err}");
    let err = exec_in_container(&c.proc_root, 1, &req(&["/bin/true"]))
        .await
        .expect_err("PID 1");
    assert!(matches!(err, ExecError::InvalidArgument(_)), "{err}");

    // The container stops: its old leader is gone.
    let out = sandbox
        .exec(["systemctl", "stop", "container@ex3.service"])
        .await
        .expect("systemctl stop");
    assert!(out.status.success());
    let err = exec(&c, &req(&["/bin/true"]))
        .await
        .expect_err("stopped container");
    assert!(matches!(err, ExecError::NotRunning(_)), "{err}");
}

#[tokio::test]
async fn logs_merge_the_containers_journal_and_the_host_unit() {
    let sandbox = Sandbox::boot().await.expect("boot");
    let c = start_container(&sandbox, "lg1").await;
    let root = sandbox.root();
    let unit = "container@lg1.service";

    // Mark the container's journal with a line of our own.
    let r = exec(&c, &req(&["logger", "-t", "voxnix-test", "hello from lg1"]))
        .await
        .expect("logger");
    assert_eq!(r.exit_code, 0);

    let found = eventually(Duration::from_secs(10), || async {
        let lines = container_logs(&root, Some(&c.machine_id), running(&c), unit, 1000, None)
            .inspect_err(|e| eprintln!("not yet: {e}"))
            .ok()?;
        lines
            .iter()
            .any(|l| l.source == LogSource::Container && l.message == "hello from lg1")
            .then_some(lines)
    })
    .await;
    let all = found.expect("the container's own journal is read");
    assert!(all.len() <= 1000);
    assert!(
        all.windows(2)
            .all(|w| w[0].timestamp_usec <= w[1].timestamp_usec),
        "merged by time"
    );
    assert!(
        all.iter().any(|l| l.source == LogSource::Container
            && (l.message.contains("Startup finished") || l.message.contains("Reached target"))),
        "the container's systemd boot messages"
    );
    assert!(
        all.iter().any(|l| l.source == LogSource::Host
            && l.unit.as_deref() == Some(unit)
            && l.message.contains("lg1")),
        "host-side lines of the unit: {:?}",
        all.iter()
            .filter(|l| l.source == LogSource::Host)
            .collect::<Vec<_>>()
    );
    assert!(
        all.iter()
            .filter(|l| l.source == LogSource::Host)
            .all(|l| l.unit.as_deref() == Some(unit) || l.message.contains("lg1")),
        "only the unit's lines from the host"
    );
    let line = all
        .iter()
        .find(|l| l.message == "hello from lg1")
        .expect("our line");
    assert_eq!(line.identifier.as_deref(), Some("voxnix-test"));

    // n bounds the result and keeps the newest lines.
    let t = Instant::now();
    let last20 =
        container_logs(&root, Some(&c.machine_id), running(&c), unit, 20, None).expect("20");
    eprintln!("container_logs(n = 20) took {:?}", t.elapsed());
    assert_eq!(last20.len(), 20);
    let newest = all.last().expect("some").timestamp_usec;
    assert!(last20.last().expect("some").timestamp_usec >= newest);

    // A machine id with no journal anywhere: only the host's lines.
    let host_only = container_logs(
        &root,
        Some("0123456789abcdef0123456789abcdef"),
        running(&c),
        unit,
        1000,
        None,
    )
    .expect("host only");
    assert!(!host_only.is_empty());
    assert!(host_only.iter().all(|l| l.source == LogSource::Host));

    // Any local user can log a line with `UNIT=` (and `OBJECT_SYSTEMD_UNIT=`)
    // set to the container's unit: it is in the journal, but not in the
    // container's logs (only fields the journal sets itself count).
    let out = sandbox
        .exec([
            "sh",
            "-c",
            "useradd -u 1700 -M mallory && printf 'MESSAGE=forged-for-lg1\nUNIT=container@lg1.service\n\
             OBJECT_SYSTEMD_UNIT=container@lg1.service\n' | setpriv --reuid=1700 --regid=1700 \
             --clear-groups logger --journald && journalctl --flush && echo ok",
        ])
        .await
        .expect("forge");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{out:?}");
    let logged = eventually(Duration::from_secs(10), || async {
        let o = sandbox
            .exec([
                "journalctl",
                "-o",
                "cat",
                "--no-pager",
                "MESSAGE=forged-for-lg1",
            ])
            .await
            .ok()?;
        String::from_utf8_lossy(&o.stdout)
            .contains("forged-for-lg1")
            .then_some(())
    })
    .await;
    assert!(logged.is_some(), "the forged line is in the host's journal");
    let after =
        container_logs(&root, Some(&c.machine_id), running(&c), unit, 1000, None).expect("logs");
    assert!(
        !after.iter().any(|l| l.message.contains("forged-for-lg1")),
        "a line forged by a local user shows in the container's logs"
    );
    assert!(after.iter().any(|l| l.source == LogSource::Host));

    // A unit nobody ran and no machine: nothing, and no error.
    // Lines from before a given time (an earlier container of the name) are
    // left out, of both journals.
    let oldest = all.first().expect("some").timestamp_usec;
    let since = container_logs(
        &root,
        Some(&c.machine_id),
        running(&c),
        unit,
        1000,
        Some(newest),
    )
    .expect("since");
    assert!(
        !since.is_empty() && since.len() < all.len(),
        "{} of {}",
        since.len(),
        all.len()
    );
    assert!(
        since
            .iter()
            .all(|l| l.timestamp_usec >= newest && l.timestamp_usec > oldest)
    );
    let none = container_logs(
        &root,
        None,
        ContainerJournal::None,
        "container@nobody.service",
        10,
        None,
    )
    .expect("none");
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn logs_of_a_stopped_container() {
    let sandbox = Sandbox::boot().await.expect("boot");
    let c = start_container(&sandbox, "lg2").await;
    let root = sandbox.root();
    let unit = "container@lg2.service";
    // Its journal persists in its root, /var/lib/nixos-containers/lg2, as a
    // NixOS container's does (the stand-in keeps a persistent root).
    let kept = format!(
        "/var/lib/nixos-containers/lg2/var/log/journal/{}",
        c.machine_id
    );
    assert!(root.join(kept.trim_start_matches('/')).is_dir(), "{kept}");
    let out = sandbox
        .exec(["systemctl", "stop", unit])
        .await
        .expect("systemctl stop");
    assert!(out.status.success());

    // Through the running container's root (gone now) and the host's side
    // only, the container's own journal is not read; the host still has the
    // unit's lines, including the stop.
    let lines =
        container_logs(&root, Some(&c.machine_id), running(&c), unit, 50, None).expect("logs");
    assert!(!lines.is_empty());
    assert!(lines.len() <= 50);
    assert!(lines.iter().all(|l| l.source == LogSource::Host));
    assert!(
        lines
            .iter()
            .any(|l| l.message.contains("Stopped") || l.message.contains("Deactivated")),
        "{lines:?}"
    );

    // NixOS's layout: /var/log/journal/<id> is an absolute symlink into the
    // container's tree (nspawn --link-journal=try-guest). The link is not
    // followed from the host's side; the journal is read through the
    // stopped container's own directory, links resolved inside it.
    let link = root.join(format!("var/log/journal/{}", c.machine_id));
    assert_eq!(
        std::fs::read_link(&link).expect("nspawn linked the journal"),
        Path::new(&kept)
    );
    let stopped_root = root.join("var/lib/nixos-containers/lg2");
    let lines = container_logs(
        &root,
        Some(&c.machine_id),
        ContainerJournal::Stopped(&stopped_root),
        unit,
        1000,
        None,
    )
    .expect("logs");
    assert!(
        lines
            .iter()
            .any(|l| l.source == LogSource::Container && l.message.contains("Startup finished")),
        "the linked journal is read"
    );
    assert!(lines.iter().any(|l| l.source == LogSource::Host));
}

/// Attack 4 of issue 13: with NixOS's layout the host's
/// `/var/log/journal/<id>` is a link into the container's tree, and the
/// container may replace its journal directory there with a link of its own
/// (here to the host's `/var/log/journal`). Followed from the host's side,
/// `voxnix logs` showed the host's journal as the container's lines. The
/// container's journal is now read only through its own root, where its
/// links resolve inside it.
#[tokio::test]
async fn a_journal_link_planted_in_the_containers_tree_does_not_reach_the_hosts_journal() {
    let sandbox = Sandbox::boot().await.expect("boot");
    let root = sandbox.root();
    let id = "0123456789abcdef0123456789abcdef";
    let box_root = root.join("var/lib/nixos-containers/evil");
    let guest_dir = box_root.join(format!("var/log/journal/{id}"));
    std::fs::create_dir_all(guest_dir.parent().unwrap()).expect("guest tree");
    // The container's "journal" is a link to the host's journal directory...
    std::os::unix::fs::symlink("/var/log/journal", &guest_dir).expect("guest link");
    // ... and the host links to it, as nspawn --link-journal=try-guest does.
    std::os::unix::fs::symlink(
        format!("/var/lib/nixos-containers/evil/var/log/journal/{id}"),
        root.join(format!("var/log/journal/{id}")),
    )
    .expect("host link");
    // The appliance has a journal of its own with plenty in it.
    let out = sandbox
        .exec(["journalctl", "--flush"])
        .await
        .expect("flush");
    assert!(out.status.success());
    for container in [ContainerJournal::None, ContainerJournal::Stopped(&box_root)] {
        let lines = container_logs(
            &root,
            Some(id),
            container,
            "container@evil.service",
            1000,
            None,
        )
        .expect("logs");
        let from_host: Vec<&LogLine> = lines
            .iter()
            .filter(|l| l.source == LogSource::Container)
            .collect();
        assert!(
            from_host.is_empty(),
            "the host's journal read as the container's: {} lines, e.g. {:?}",
            from_host.len(),
            from_host.first()
        );
    }
    sandbox.shutdown().expect("shutdown");
}
