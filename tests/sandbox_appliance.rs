//! The sandbox appliance against the real thing: systemd as PID 1, machined,
//! nspawn containers on br-vox with DHCP from dnsmasq, all reached from the
//! host over the appliance's real system bus.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use voxnix::sandbox::Sandbox;
use zbus_systemd::{machine1, systemd1};

use common::{eventually, leftovers, voxnix_bin};

/// The stand-in reads the conf file as current NixOS does (nounset, and
/// COPY_RESOLV_CONF without a default): a file without that key stops the
/// container from starting, here as on NixOS.
#[tokio::test]
async fn a_conf_file_without_copy_resolv_conf_fails_as_on_nixos() {
    let sandbox = Sandbox::boot().await.expect("boot");
    std::fs::write(
        sandbox.root().join("etc/nixos-containers/t2.conf"),
        "PRIVATE_NETWORK=1\nHOST_BRIDGE=br-vox\n",
    )
    .expect("write conf");
    let out = sandbox
        .exec(["systemctl", "start", "container@t2.service"])
        .await
        .expect("systemctl start");
    assert!(
        !out.status.success(),
        "container@t2 started without COPY_RESOLV_CONF"
    );
    let log = sandbox
        .exec(["journalctl", "-u", "container@t2.service", "--no-pager"])
        .await
        .expect("journalctl");
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("COPY_RESOLV_CONF: unbound variable"), "{log}");
    sandbox.shutdown().expect("shutdown");
}

#[tokio::test]
async fn container_lifecycle_over_the_real_bus() {
    let sandbox = Sandbox::boot().await.expect("boot");
    std::fs::write(
        sandbox.root().join("etc/nixos-containers/t1.conf"),
        "PRIVATE_NETWORK=1\nHOST_BRIDGE=br-vox\nCOPY_RESOLV_CONF=0\n",
    )
    .expect("write conf");

    let bus = sandbox.system_bus().await.expect("bus");
    let systemd = systemd1::ManagerProxy::new(&bus).await.expect("systemd1");
    let machined = machine1::ManagerProxy::new(&bus).await.expect("machine1");
    // Subscribe before acting, so no signal can be missed.
    systemd.subscribe().await.expect("Subscribe");
    let mut jobs = systemd
        .receive_job_removed()
        .await
        .expect("JobRemoved stream");
    let mut removed = machined
        .receive_machine_removed()
        .await
        .expect("MachineRemoved stream");

    let job = systemd
        .start_unit("container@t1.service".into(), "replace".into())
        .await
        .expect("StartUnit");
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(sig) = jobs.next().await {
            let args = sig.args().expect("JobRemoved args");
            if args.job == job {
                return args.result;
            }
        }
        "stream ended".to_string()
    })
    .await
    .expect("JobRemoved in time");
    assert_eq!(result, "done", "the start job of container@t1 must succeed");

    let machines = machined.list_machines().await.expect("ListMachines");
    let t1 = machines
        .iter()
        .find(|m| m.0 == "t1")
        .expect("t1 is registered with machined");
    assert_eq!(t1.1, "container");

    let ipv4 = eventually(Duration::from_secs(30), || async {
        let addrs = machined.get_machine_addresses("t1".into()).await.ok()?;
        addrs.into_iter().find_map(|(family, bytes)| {
            (family == 2 && bytes.len() == 4)
                .then(|| Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        })
    })
    .await
    .expect("t1 gets an IPv4 address by DHCP");
    let octets = ipv4.octets();
    assert_eq!(
        &octets[..3],
        &[10, 100, 0],
        "address from br-vox's subnet, got {ipv4}"
    );
    assert!(
        (100..=200).contains(&octets[3]),
        "address from dnsmasq's range, got {ipv4}"
    );

    machined
        .terminate_machine("t1".into())
        .await
        .expect("TerminateMachine");
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(sig) = removed.next().await {
            if sig.args().expect("MachineRemoved args").machine == "t1" {
                return true;
            }
        }
        false
    })
    .await
    .expect("MachineRemoved in time");
    assert!(gone);
    let machines = machined.list_machines().await.expect("ListMachines");
    assert!(
        machines.iter().all(|m| m.0 != "t1"),
        "t1 is gone from machined"
    );
}

#[tokio::test]
async fn teardown_leaves_nothing_behind() {
    let sandbox = Sandbox::boot().await.expect("boot");
    let pid = sandbox.init_pid();
    let state_dir = common::sandbox_root().join(sandbox.id());
    let cgroup = format!("voxnix-sandbox-{}", sandbox.id());
    assert!(state_dir.exists(), "state directory exists while running");
    assert!(common::alive(pid), "appliance init is alive while running");
    // Start a container so there is a nested PID namespace and veths to clean.
    // A conf file as NixOS writes one (its start script needs COPY_RESOLV_CONF).
    let out = sandbox
        .exec([
            "sh",
            "-c",
            "echo COPY_RESOLV_CONF=0 > /etc/nixos-containers/c1.conf && systemctl start container@c1",
        ])
        .await
        .expect("exec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sandbox.shutdown().expect("clean shutdown");
    let left = leftovers(&state_dir, pid, &cgroup);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_panicking_test_still_tears_down() {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let sandbox = Sandbox::boot().await.expect("boot");
            tx.send((sandbox.id().to_string(), sandbox.init_pid()))
                .expect("send");
            panic!("deliberate panic with a live sandbox");
        })
    });
    assert!(handle.join().is_err(), "the thread panicked");
    let (id, pid) = rx.recv().expect("sandbox booted before the panic");
    let left = leftovers(
        &common::sandbox_root().join(&id),
        pid,
        &format!("voxnix-sandbox-{id}"),
    );
    assert!(left.is_empty(), "left behind after a panic: {left:?}");
}

#[tokio::test]
async fn two_sandboxes_run_side_by_side() {
    let (a, b) = tokio::join!(Sandbox::boot(), Sandbox::boot());
    let (a, b) = (a.expect("boot a"), b.expect("boot b"));
    assert_ne!(a.id(), b.id());
    // The same container name in both: each appliance has its own machined,
    // bridge and /etc.
    for sb in [&a, &b] {
        let out = sb
            .exec([
                "sh",
                "-c",
                "echo COPY_RESOLV_CONF=0 > /etc/nixos-containers/same.conf && systemctl start container@same && machinectl list --no-legend",
            ])
            .await
            .expect("exec");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("same"));
        // No getty on the host's console (the appliance shares /dev): two
        // appliances' gettys on tty1 hung each other up into a degraded boot.
        let getty = sb
            .exec(["systemctl", "is-active", "getty@tty1.service"])
            .await
            .expect("exec");
        assert_ne!(String::from_utf8_lossy(&getty.stdout).trim(), "active");
    }
    let hostname_a = std::fs::read_to_string(a.root().join("etc/machine-id")).expect("id a");
    let hostname_b = std::fs::read_to_string(b.root().join("etc/machine-id")).expect("id b");
    assert_ne!(
        hostname_a, hostname_b,
        "each appliance has its own machine id"
    );
    a.shutdown().expect("shutdown a");
    // b still works after a is gone.
    let out = b
        .exec(["machinectl", "list", "--no-legend"])
        .await
        .expect("exec b");
    assert!(String::from_utf8_lossy(&out.stdout).contains("same"));
    b.shutdown().expect("shutdown b");
}

fn sandbox_dirs() -> Vec<String> {
    std::fs::read_dir(common::sandbox_root())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cli_run_starts_a_container_and_exits_with_the_commands_status() {
    let out = Command::new(voxnix_bin())
        .args([
            "sandbox",
            "run",
            "--",
            "sh",
            "-c",
            "echo COPY_RESOLV_CONF=0 > /etc/nixos-containers/bar1.conf && systemctl start container@bar1 && machinectl list",
        ])
        .output()
        .expect("run voxnix");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("bar1"),
        "machinectl list shows bar1: {stdout}"
    );

    let out = Command::new(voxnix_bin())
        .args(["sandbox", "run", "--", "sh", "-c", "exit 7"])
        .output()
        .expect("run voxnix");
    assert_eq!(
        out.status.code(),
        Some(7),
        "the command's exit status is passed through"
    );
}

#[test]
fn cli_run_keeps_logs_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(voxnix_bin())
        .args(["sandbox", "run", "--keep-logs"])
        .arg(dir.path())
        .args([
            "--",
            "sh",
            "-c",
            "echo COPY_RESOLV_CONF=0 > /etc/nixos-containers/logme.conf && systemctl start container@logme",
        ])
        .output()
        .expect("run voxnix");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = std::fs::read_to_string(dir.path().join("journal.txt")).expect("journal.txt");
    assert!(
        journal.contains("logme"),
        "the journal mentions the container"
    );
    assert!(dir.path().join("console.log").exists());
}

#[test]
fn sigint_powers_off_in_order() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let before = sandbox_dirs();
    let mut child = Command::new(voxnix_bin())
        .args([
            "sandbox",
            "run",
            "--",
            "sh",
            "-c",
            "touch /run/test-ready; exec sleep 300",
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn voxnix");
    let pid = child.id() as i32;
    let dir = wait_for_new_dir(&before, pid);
    let init_pid = wait_for_init_pid(&dir);
    // Interrupt while the command runs (not during boot).
    let ready = std::path::PathBuf::from(format!("/proc/{init_pid}/root/run/test-ready"));
    for _ in 0..600 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready.exists(), "the command started inside the appliance");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "interrupted run exits 130");
    let id = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let left = leftovers(&dir, init_pid, &format!("voxnix-sandbox-{id}"));
    assert!(left.is_empty(), "left behind after Ctrl-C: {left:?}");
}

/// Runs in a state root of its own: any other test's boot reaps the stale
/// directories of the shared root, so there the "left for the next run" step
/// raced with the tests running beside it (seen once in CI).
#[tokio::test]
async fn sigkill_of_the_launcher_kills_the_appliance_and_the_next_run_reaps_its_state() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let private = tempfile::Builder::new()
        .prefix("reap-root-")
        .tempdir_in(scratch)
        .expect("private state root");
    let root = private.path().to_path_buf();
    let mut child = Command::new(voxnix_bin())
        .env("VOXNIX_SANDBOX_DIR", &root)
        .args(["sandbox", "run", "--", "sleep", "300"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn voxnix");
    let pid = child.id() as i32;
    let dir = wait_for_new_dir_in(&root, &[], pid);
    let init_pid = wait_for_init_pid(&dir);
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL");
    child.wait().expect("wait");
    let died = eventually(Duration::from_secs(10), || async {
        (!common::alive(init_pid)).then_some(())
    })
    .await;
    assert!(
        died.is_some(),
        "the appliance's init died with its launcher"
    );
    assert!(
        dir.exists(),
        "the state directory is left for the next run to reap"
    );
    // The next boot in the same root removes it.
    let next = Command::new(voxnix_bin())
        .env("VOXNIX_SANDBOX_DIR", &root)
        .args(["sandbox", "run", "--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run voxnix");
    assert!(
        next.status.success(),
        "the next run failed: {}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert!(
        !dir.exists(),
        "the next run reaped the stale state directory"
    );
    let id = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let left = leftovers(&dir, init_pid, &format!("voxnix-sandbox-{id}"));
    assert!(
        left.is_empty(),
        "left behind after SIGKILL and a reaping run: {left:?}"
    );
    let rest: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(rest.is_empty(), "the next run left its own state: {rest:?}");
}

fn wait_for_new_dir(before: &[String], launcher: i32) -> std::path::PathBuf {
    wait_for_new_dir_in(&common::sandbox_root(), before, launcher)
}

fn wait_for_new_dir_in(
    root: &std::path::Path,
    before: &[String],
    launcher: i32,
) -> std::path::PathBuf {
    for _ in 0..600 {
        let names: Vec<String> = std::fs::read_dir(root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for name in names {
            if !before.contains(&name) && name.starts_with(&format!("{launcher}-")) {
                return root.join(name);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no state directory appeared for launcher {launcher}");
}

fn wait_for_init_pid(dir: &std::path::Path) -> i32 {
    for _ in 0..600 {
        if let Some(pid) = std::fs::read_to_string(dir.join("init-pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            // Wait until it has booted (the command runs only after that).
            std::thread::sleep(Duration::from_millis(500));
            return pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("appliance did not start in {}", dir.display());
}
