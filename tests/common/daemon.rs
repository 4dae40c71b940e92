//! A sandbox appliance with the voxnix daemon running inside, and helpers to
//! drive it through the real D-Bus API and the real CLI.
#![allow(dead_code)]

use std::time::Duration;

use voxnix::api::client::ManagerProxy;
use voxnix::sandbox::{Sandbox, SandboxOptions, daemon};

pub struct Appliance {
    pub sandbox: Sandbox,
}

impl Appliance {
    /// Boots an appliance whose voxnix daemon runs with the sandbox config
    /// plus `extra_config` (TOML lines).
    pub async fn boot(extra_config: &str) -> Self {
        Self::boot_with_nix(extra_config, "").await
    }

    /// [`boot`](Self::boot) with keys for the `[nix]` table too.
    pub async fn boot_with_nix(extra_config: &str, nix_config: &str) -> Self {
        let mut opts = SandboxOptions::default();
        daemon::install(
            &mut opts,
            &super::voxnix_bin(),
            &daemon::sandbox_config_with(extra_config, nix_config),
        );
        let sandbox = Sandbox::boot_with(opts)
            .await
            .expect("boot an appliance with the daemon");
        Appliance { sandbox }
    }

    /// A client of the daemon's API, connected from the host as root.
    pub async fn manager(&self) -> ManagerProxy<'static> {
        let bus = self.sandbox.system_bus().await.expect("appliance bus");
        ManagerProxy::new(&bus).await.expect("manager proxy")
    }

    /// Runs the voxnix CLI inside the appliance.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut argv = vec![daemon::ON_PATH.to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.sandbox.exec(argv).await.expect("run the CLI")
    }

    pub async fn sh(&self, script: &str) -> String {
        let out = self.sandbox.exec(["sh", "-c", script]).await.expect("sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `name`'s IPv4 address on the bridge, from Status, as `owner`.
    pub async fn ipv4_of(&self, name: &str, owner: &str) -> String {
        let m = self.manager().await;
        let v: serde_json::Value =
            serde_json::from_str(&m.status(name, owner).await.expect("status")).expect("json");
        v["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .find(|a| a.starts_with("10.100.0."))
            .unwrap_or_else(|| panic!("{name} has no bridge address: {v}"))
            .to_string()
    }

    /// `sh -c SCRIPT` in container `name` through the API's Exec, as
    /// `owner`; its stdout and stderr together.
    pub async fn run_in(&self, name: &str, owner: &str, script: &str) -> String {
        let m = self.manager().await;
        let (_, out, err, _) = m
            .exec(name, owner, &["sh", "-c", script], 30)
            .await
            .expect("exec");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        )
    }

    /// Waits for an operation to end; returns its snapshot JSON.
    pub async fn wait_op(&self, m: &ManagerProxy<'_>, op: &str, owner: &str) -> serde_json::Value {
        for _ in 0..1200 {
            if let Ok(text) = m.get_operation(op, owner).await {
                let v: serde_json::Value = serde_json::from_str(&text).expect("operation JSON");
                if v["done"] == serde_json::Value::Bool(true) {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operation {op} did not finish in 120 s");
    }

    /// Creates through the API and waits; returns the final snapshot.
    pub async fn create(&self, spec: &str, owner: &str) -> serde_json::Value {
        let m = self.manager().await;
        let op = m.create(spec, owner).await.expect("Create accepted");
        self.wait_op(&m, &op, owner).await
    }

    /// Everything of `name` the daemon could leave on the host.
    pub async fn traces_of(&self, name: &str) -> Vec<String> {
        let root = self.sandbox.root();
        let mut traces = Vec::new();
        let conf = root.join(format!("etc/nixos-containers/{name}.conf"));
        if conf.exists() {
            traces.push(format!("conf {}", conf.display()));
        }
        let dropins = root.join(format!(
            "etc/systemd/system.control/container@{name}.service.d"
        ));
        if dropins.exists() {
            traces.push("unit drop-ins".into());
        }
        for (what, dir) in [
            ("container root", format!("var/lib/nixos-containers/{name}")),
            (
                "per-container GC roots",
                format!("nix/var/nix/gcroots/per-container/{name}"),
            ),
            (
                "per-container profile",
                format!("nix/var/nix/profiles/per-container/{name}"),
            ),
            (
                "personal settings",
                format!("var/lib/voxnix/personal/{name}.json"),
            ),
            (
                "Tailscale key file",
                format!("var/lib/voxnix/tailscale/{name}.key"),
            ),
        ] {
            if root.join(dir).symlink_metadata().is_ok() {
                traces.push(what.into());
            }
        }
        // A workspace (of any owner) under the name: only a live container
        // has one (a destroy moves it to the owner's kept workspaces).
        if let Ok(users) = std::fs::read_dir(root.join("var/lib/voxnix/storage/users")) {
            for u in users.flatten() {
                if u.path()
                    .join("containers")
                    .join(name)
                    .symlink_metadata()
                    .is_ok()
                {
                    traces.push(format!("workspace of {}", u.file_name().to_string_lossy()));
                }
            }
        }
        let record = root.join(format!("var/lib/voxnix/containers/{name}.json"));
        if record.exists() {
            traces.push("record".into());
        }
        let machines = self.sh("machinectl list --no-legend").await;
        if machines.split_whitespace().any(|w| w == name) {
            traces.push("machine".into());
        }
        let unit = self
            .sh(&format!("systemctl is-active container@{name}.service"))
            .await;
        if unit.trim() == "active" || unit.trim() == "activating" {
            traces.push(format!("unit {}", unit.trim()));
        }
        traces
    }

    /// Waits until the daemon is active again (after a crash, systemd restarts it).
    pub async fn wait_daemon_active(&self) {
        for _ in 0..300 {
            let s = self.sh("systemctl is-active voxnix.service").await;
            if s.trim() == "active" {
                // And serving.
                if self.manager().await.list("").await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the daemon did not come back: {}",
            self.sh("journalctl -u voxnix --no-pager | tail -30").await
        );
    }

    pub fn set_fault(&self, point: &str) {
        std::fs::write(
            self.sandbox.root().join("var/lib/voxnix/fault-injection"),
            point,
        )
        .expect("fault trigger");
    }

    /// The host PID of a unit's main process in the appliance.
    pub async fn host_pid_of(&self, unit: &str) -> i32 {
        let ns_pid: i32 = self
            .sh(&format!("systemctl show -p MainPID --value {unit}"))
            .await
            .trim()
            .parse()
            .expect("MainPID");
        assert!(ns_pid > 0, "{unit} is running");
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.sandbox.init_pid()))
            .expect("the appliance's pid namespace");
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .ok()
                .as_ref()
                != Some(&ns)
            {
                continue;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let inner = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last()?.parse::<i32>().ok());
            if inner == Some(ns_pid) {
                return pid;
            }
        }
        panic!("no host process for {unit}'s PID {ns_pid}");
    }

    /// Cuts the daemon's connection to the system bus from outside, as a bus
    /// hanging up on it would: the socket connected to the appliance's
    /// dbus-daemon is shut down through a duplicate (pidfd_getfd). Returns how
    /// many sockets were cut (1 when the daemon holds one bus connection).
    pub async fn cut_daemon_bus_connection(&self) -> usize {
        let daemon = self.host_pid_of("voxnix.service").await;
        // Whoever called listen() on the appliance's bus socket (systemd when
        // dbus.socket activates the bus): a container's bus has the same path
        // inside the container, but another listener.
        let listeners = [
            self.host_pid_of("dbus.service").await,
            self.sandbox.init_pid(),
        ];
        // SAFETY: plain syscalls on descriptors this function owns and closes.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, daemon, 0) as i32;
            assert!(
                pidfd >= 0,
                "pidfd_open: {}",
                std::io::Error::last_os_error()
            );
            let mut cut = 0;
            for entry in std::fs::read_dir(format!("/proc/{daemon}/fd"))
                .expect("fds")
                .flatten()
            {
                let link = std::fs::read_link(entry.path()).unwrap_or_default();
                if !link.to_string_lossy().starts_with("socket:") {
                    continue;
                }
                let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
                if dup < 0 {
                    continue;
                }
                // The bus connection: its peer is bound to the bus socket's
                // path (the journal's stdout streams are not).
                let mut addr: libc::sockaddr_un = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                let ok =
                    libc::getpeername(dup, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len)
                        == 0;
                let path: Vec<u8> = addr
                    .sun_path
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                let mut cred: libc::ucred = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
                let peer_ok = libc::getsockopt(
                    dup,
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    (&mut cred as *mut libc::ucred).cast(),
                    &mut len,
                ) == 0;
                if ok
                    && path == b"/run/dbus/system_bus_socket"
                    && peer_ok
                    && listeners.contains(&cred.pid)
                {
                    assert_eq!(libc::shutdown(dup, libc::SHUT_RDWR), 0, "shutdown");
                    cut += 1;
                }
                libc::close(dup);
            }
            libc::close(pidfd);
            cut
        }
    }
}
