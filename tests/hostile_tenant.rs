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

/// Attack 6 of issue 13: a container's root (NixOS keeps it at
/// `/var/lib/nixos-containers/NAME` across boots) and its GC roots outlived
/// destroy, so the next container of that name, of any owner, booted the old
/// tree: its `authorized_keys`, its users, its host keys. Planted in the
/// persistent root, as a hostile root would leave it: the old owner's key,
/// an immutable directory (as NixOS's `/var/empty`), a link to the host's
/// `/`, a FIFO.
#[tokio::test]
async fn a_destroyed_container_leaves_nothing_the_next_holder_of_its_name_inherits() {
    let app = Appliance::boot("").await;
    let plant = |name: &str| {
        format!(
            "set -e; r=/var/lib/nixos-containers/{name}; mkdir -p $r/root/.ssh $r/var/empty \
             /nix/var/nix/gcroots/per-container/{name}; \
             echo 'ssh-ed25519 AAAA the-old-owner' > $r/root/.ssh/authorized_keys; \
             ln -s / $r/host-root; mkfifo $r/fifo; chattr +i $r/var/empty; echo planted"
        )
    };
    let gone = |name: &str| {
        format!(
            "for p in /var/lib/nixos-containers/{name} /nix/var/nix/gcroots/per-container/{name}; do \
             test -e $p -o -L $p && echo \"left $p\"; done; \
             for l in /var/log/journal/*; do [ -L $l ] && readlink $l | grep -q /var/lib/nixos-containers/{name}/ \
             && echo \"left journal link $l\"; done; test -e /etc/hostname && echo host-intact"
        )
    };

    // Destroy removes the root and the GC roots, without following the link.
    assert_eq!(app.create(r#"{"name":"box"}"#, "").await["ok"], true);
    assert_eq!(app.sh(&plant("box")).await.trim(), "planted");
    let out = app.cli(&["destroy", "--yes", "box"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(app.sh(&gone("box")).await.trim(), "host-intact");

    // A create whose name has leftovers (a crash, a hand-made container)
    // starts from a fresh root: none of the planted tree is in it.
    assert_eq!(app.sh(&plant("again")).await.trim(), "planted");
    assert_eq!(app.create(r#"{"name":"again"}"#, "").await["ok"], true);
    let fresh = "r=/var/lib/nixos-containers/again; \
                 for p in $r/root/.ssh/authorized_keys $r/host-root $r/fifo $r/var/empty; do \
                 test -e $p -o -L $p && echo \"inherited $p\"; done; echo checked";
    assert_eq!(app.sh(fresh).await.trim(), "checked");

    // Leftovers that cannot be removed (something mounted in them) make the
    // create refuse the name, leaving nothing half-created.
    let busy = "set -e; mkdir -p /var/lib/nixos-containers/stuck/mnt; \
                mount -t tmpfs tmpfs /var/lib/nixos-containers/stuck/mnt; echo mounted";
    assert_eq!(app.sh(busy).await.trim(), "mounted");
    let v = app.create(r#"{"name":"stuck"}"#, "").await;
    assert_eq!(v["ok"], false, "{v}");
    let message = v.to_string();
    assert!(
        message.contains("cannot be removed") && message.contains("stuck"),
        "{message}"
    );
    let list = app.cli(&["list", "--json"]).await;
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("stuck"),
        "{list:?}"
    );
    app.sandbox.shutdown().expect("shutdown");
}

/// Attack 5 of issue 13 (one half): the dir backend measures a workspace by
/// its allocated blocks (as `du`), so a sparse file of any size passes the
/// quota check, and the snapshot copy used to write it out in full: a
/// container could fill the host's disk through its own snapshot. The copy
/// is now bounded by what the quotas leave.
#[tokio::test]
async fn a_sparse_file_cannot_make_a_snapshot_fill_the_disk() {
    let app = Appliance::boot("[storage]\nuser_quota = \"200M\"").await;
    assert_eq!(app.create(r#"{"name":"box"}"#, "").await["ok"], true);
    let out = exec_sh(
        &app,
        "box",
        "truncate -s 2G /workspace/sparse && du -k /workspace/sparse",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let before = app
        .sh("df -k --output=used /var/lib/voxnix/storage | tail -n 1")
        .await;

    let snap = app.cli(&["snapshot", "box"]).await;
    assert!(
        !snap.status.success(),
        "the snapshot copied a 2 GiB file: {snap:?}"
    );
    let stderr = String::from_utf8_lossy(&snap.stderr);
    assert!(
        stderr.contains("exceed"),
        "a message a person can act on: {stderr}"
    );

    // Nothing was written, nothing is left half-made, the daemon serves.
    let after = app
        .sh("df -k --output=used /var/lib/voxnix/storage | tail -n 1")
        .await;
    let grew = after.trim().parse::<i64>().expect("df prints a number")
        - before.trim().parse::<i64>().expect("df prints a number");
    assert!(grew < 100 * 1024, "the disk use grew by {grew} KiB");
    // Only the create's checkpoint (taken before the sparse file).
    let snaps = app.cli(&["snapshots", "box", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&snaps.stdout).expect("snapshots JSON");
    let reasons: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["checkpoint"], "{snaps:?}");
    let out = exec_sh(&app, "box", "rm /workspace/sparse && echo ok").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let snap = app.cli(&["snapshot", "box"]).await;
    assert!(snap.status.success(), "{snap:?}");
    app.sandbox.shutdown().expect("shutdown");
}

/// Attack 5 (the other half): while a snapshot copies a running container's
/// workspace, the container keeps swapping a directory for a link to the
/// host's `/etc`. The copy used to look at an entry (`lstat`: a directory)
/// and read it by path later (after the rest of its parent, here a large
/// file): by then the link was there, and the appliance's `/etc` landed in
/// the snapshot (and back in `/workspace` on a restore). The copy now opens
/// each entry by descriptor right away, with O_NOFOLLOW, and checks it is
/// what it looked at.
#[tokio::test]
async fn entries_swapped_for_links_during_a_snapshot_are_never_followed() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"box"}"#, "").await["ok"], true);
    // The files first; then the swapping loop as a unit of its own in the
    // container (an exec's processes end with it).
    let setup = "cd /workspace && mkdir a && echo mine > a/f && \
                 dd if=/dev/zero of=b bs=1M count=150 status=none && echo ready";
    let out = exec_sh(&app, "box", setup).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ready",
        "{out:?}"
    );
    // A directory half the time, a link the other half, in 50 ms turns: the
    // old copy's look-then-read window (the 150 MB of `b`) spans a turn.
    let swapper = "systemd-run --unit=swapper --no-block sh -c 'cd /workspace; \
                   end=$(($(date +%s) + 60)); while [ $(date +%s) -lt $end ]; do \
                   sleep 0.05; mv a z && ln -s /etc a; sleep 0.05; rm a && mv z a; done' && echo started";
    let out = exec_sh(&app, "box", swapper).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("started"),
        "{out:?}"
    );
    let running = exec_sh(&app, "box", "sleep 1; systemctl is-active swapper").await;
    assert_eq!(
        String::from_utf8_lossy(&running.stdout).trim(),
        "active",
        "{running:?}"
    );
    let mut taken = 0;
    for _ in 0..12 {
        let snap = app.cli(&["snapshot", "box"]).await;
        if snap.status.success() {
            taken += 1;
        }
    }
    // Whatever was taken holds nothing of the appliance's /etc.
    let leaked = app
        .sh("find /var/lib/voxnix/storage -path '*snapshots*' \\( -name passwd -o -name machine-id \\) | head -n 3")
        .await;
    assert_eq!(
        leaked.trim(),
        "",
        "the appliance's files reached a snapshot ({taken} of 12 taken)"
    );
    let list = app.cli(&["list", "--json"]).await;
    assert!(list.status.success(), "{list:?}");
    app.sandbox.shutdown().expect("shutdown");
}

/// Attack 3 of issue 13: before every boot NixOS's start script runs, as the
/// host's root, `mkdir -p`/`chmod 0700 "$root/root"` and `touch
/// "$root/etc/machine-id"`, following links. A container that turns its
/// `/root` into a link to `/` and its machine-id into a dangling link to a
/// host path, then restarts, got the host's `/` set to 0700 and a file made
/// on the host. `voxnix container-pre-start` (an ExecStartPre of the
/// template) removes such links first.
#[tokio::test]
async fn links_in_the_containers_root_do_not_turn_the_start_script_against_the_host() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"box"}"#, "").await["ok"], true);
    let mode_before = app.sh("stat -c %a /").await;
    let plant = "rm -rf /root && ln -s / /root && \
                 rm -f /etc/machine-id && ln -s /etc/voxnix-touched-by-a-container /etc/machine-id && echo planted";
    let out = exec_sh(&app, "box", plant).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "planted",
        "{out:?}"
    );

    // NixOS's script also runs `mkdir -p "$root/usr/bin"`: a container whose
    // `/usr` is a link gets a `bin` made wherever it points. A NixOS
    // container's `/usr` is its own directory; the sandbox binds the
    // appliance's over it (read-only), so the link is planted from the
    // appliance's side, in the stopped container's root.
    let stop = app.cli(&["stop", "box"]).await;
    assert!(stop.status.success(), "{stop:?}");
    app.sh(
        "mkdir /etc/voxnix-usr-target; r=/var/lib/nixos-containers/box; \
         rm -rf $r/usr && ln -s /etc/voxnix-usr-target $r/usr",
    )
    .await;
    let start = app.cli(&["start", "box"]).await;
    assert_eq!(
        app.sh("stat -c %a /").await,
        mode_before,
        "the appliance's / changed mode"
    );
    assert_eq!(
        app.sh("test -e /etc/voxnix-usr-target/bin && echo made || echo untouched")
            .await
            .trim(),
        "untouched",
        "a directory was made in the appliance"
    );
    assert!(start.status.success(), "{start:?}");
    assert_eq!(
        app.sh("test -e /etc/voxnix-touched-by-a-container && echo touched || echo untouched")
            .await
            .trim(),
        "untouched"
    );
    // The container came back with plain ones, and says what was removed.
    let out = exec_sh(&app, "box", "test -d /root -a ! -L /root && echo plain").await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "plain",
        "{out:?}"
    );
    let log = app
        .sh("journalctl -u container@box.service --no-pager")
        .await;
    assert!(
        log.contains("removed /var/lib/nixos-containers/box/root"),
        "{log}"
    );
    app.sandbox.shutdown().expect("shutdown");
}

/// Attack 2 of issue 13: without a user namespace a container's root was the
/// host's uid 0 (trusted by the host's Nix daemon through the socket NixOS
/// binds in, `--option post-build-hook ...` running as host root). voxnix's
/// containers now have a user namespace of their own: root inside, an
/// unprivileged uid range outside, and the workspace still theirs.
#[tokio::test]
async fn a_containers_root_is_not_the_hosts_root() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"box"}"#, "").await["ok"], true);
    let out = exec_sh(&app, "box", "id -u; cat /proc/self/uid_map").await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("0"), "root inside: {stdout}");
    let map: Vec<u64> = lines[1]
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(map.len(), 3, "{stdout}");
    assert_eq!(map[0], 0);
    assert!(map[1] >= 65536, "container root is host uid {}", map[1]);
    assert!(map[2] <= 65536, "a range of {} uids", map[2]);
    // Seen from the appliance, the container's processes are that uid.
    let leader = app.sh("machinectl show box -p Leader --value").await;
    let host_uid = app
        .sh(&format!(
            "awk '/^Uid:/ {{print $2}}' /proc/{}/status",
            leader.trim()
        ))
        .await;
    assert_eq!(
        host_uid.trim().parse::<u64>().ok(),
        Some(map[1]),
        "{host_uid}"
    );
    // The workspace is its root's to use (idmapped), and lands as uid 0 on disk.
    let out = exec_sh(
        &app,
        "box",
        "echo mine > /workspace/f && stat -c %u /workspace/f",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");
    let on_disk = app
        .sh("stat -c %u /var/lib/voxnix/storage/users/unix-0/containers/box/workspace/f")
        .await;
    assert_eq!(on_disk.trim(), "0");
    app.sandbox.shutdown().expect("shutdown");
}

/// A container made before user namespaces were the default has a conf
/// without `PRIVATE_USERS` (and a workspace bind without `:idmap`): its root
/// is the host's root. The daemon brings such a conf up to date when it
/// starts; from the container's next start its root is an unprivileged
/// host uid, and what the old root wrote (its tree, its workspace) is still
/// its own.
#[tokio::test]
async fn a_container_from_before_user_namespaces_gets_one_at_its_next_start() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"old"}"#, "").await["ok"], true);
    let conf = "/etc/nixos-containers/old.conf";
    // The conf an older voxnix wrote; the container runs on it, as host root.
    let made_old = app
        .sh(&format!(
            "systemctl stop container@old && sed -i -e '/^PRIVATE_USERS=/d' -e 's/:idmap//' {conf} && \
             systemctl start container@old && grep -c PRIVATE_USERS {conf}; true"
        ))
        .await;
    assert_eq!(made_old.trim(), "0", "{made_old}");
    let out = exec_sh(
        &app,
        "old",
        "cat /proc/self/uid_map; echo old > /root/old-file; echo old > /workspace/old-file; echo done",
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("done"), "{out:?}");
    let identity: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        identity,
        ["0", "0", "4294967295"],
        "the old container is host root"
    );

    // The daemon restarts (an upgrade): the conf is brought up to date...
    app.sh("systemctl restart voxnix").await;
    app.wait_daemon_active().await;
    let conf_now = app.sh(&format!("cat {conf}")).await;
    assert!(conf_now.contains("PRIVATE_USERS=pick"), "{conf_now}");
    assert!(conf_now.contains(":/workspace:idmap"), "{conf_now}");
    let logged = app
        .sh("journalctl -u voxnix --no-pager -o cat | grep -c 'conf brought up to date'; true")
        .await;
    assert_ne!(logged.trim(), "0", "said in the daemon's log");
    // ... and at the container's next start its root is not the host's.
    let restart = app.cli(&["restart", "old"]).await;
    assert!(restart.status.success(), "{restart:?}");
    let out = exec_sh(
        &app,
        "old",
        "cat /proc/self/uid_map; cat /root/old-file /workspace/old-file; \
         echo new >> /root/old-file && echo new >> /workspace/old-file && echo writable",
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let map: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(map.len(), 3, "{text}");
    assert!(map[1] >= 65536, "container root is host uid {}", map[1]);
    assert_eq!(
        text.lines().skip(1).collect::<Vec<_>>(),
        ["old", "old", "writable"],
        "{out:?}"
    );
    app.sandbox.shutdown().expect("shutdown");
}

/// Attack 4 of issue 13, the race: the journal reader discovers a
/// container's journal files by listing its journal directory, then opens
/// each by name. A container that keeps renaming a real journal file and a
/// link to the appliance's journal over the same name got, whenever the
/// link won, the link opened from the daemon's side: the appliance's journal
/// as the container's lines. A FIFO won the same way blocks the open. The
/// container's journal is now read by a reader inside its namespaces (links
/// resolve in the container; a stuck open is killed after a bound), so no
/// turn of the race reaches the appliance, and logs always answer.
#[tokio::test]
async fn journal_files_swapped_for_links_and_fifos_never_reach_the_hosts_journal() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"box"}"#, "").await["ok"], true);
    let host_id = appliance_machine_id(&app).await;
    // A line only the appliance's journal has, flushed to its file.
    let secret = "appliance-secret-journal-line";
    app.sh(&format!(
        "logger -t appliance {secret}; journalctl --flush; journalctl --sync"
    ))
    .await;
    // In the container: a real journal file (a hard link of its own, so
    // renaming it is cheap), a link to the appliance's journal and a FIFO,
    // renamed in turn over one journal name, as a unit of its own.
    let racer = format!(
        "command -v python3 >/dev/null || exit 1; cat > /root/racer.py <<'PY'
import os, sys, time
d = '/var/log/journal/' + open('/etc/machine-id').read().strip()
os.chdir(d)
# Many entries listed before the journal files widen the reader's window
# between listing a name and opening it.
for i in range(20000):
    open('junk%05d' % i, 'w').close()
os.link('system.journal', 'keep.journal~')
os.symlink('/var/log/journal/{host_id}/system.journal', 'evil')
os.mkfifo('fifo')
end = time.time() + 90
while time.time() < end:
    os.link('keep.journal~', 't1'); os.rename('t1', 'zz.journal')
    os.symlink('/var/log/journal/{host_id}/system.journal', 't2'); os.rename('t2', 'zz.journal')
    os.link('keep.journal~', 't1'); os.rename('t1', 'zz.journal')
    os.mkfifo('t3'); os.rename('t3', 'zz.journal')
PY
systemd-run --unit=racer --no-block python3 /root/racer.py && echo started"
    );
    let out = exec_sh(&app, "box", &racer).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("started"),
        "{out:?}"
    );
    let running = exec_sh(&app, "box", "sleep 1; systemctl is-active racer").await;
    assert_eq!(
        String::from_utf8_lossy(&running.stdout).trim(),
        "active",
        "{running:?}"
    );
    let m = app.manager().await;
    let mut answered = 0;
    for _ in 0..30 {
        // Every call answers (lines or an error), never hangs a permit.
        let logs = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            app.cli(&["logs", "box", "-n", "1000", "--json"]),
        )
        .await
        .expect("logs answered");
        let text = String::from_utf8_lossy(&logs.stdout);
        assert!(
            !text.contains(secret),
            "the appliance's journal read as the container's after {answered} calls"
        );
        if logs.status.success() {
            answered += 1;
        } else {
            // A turn the FIFO won: a bounded failure, said plainly.
            let err = String::from_utf8_lossy(&logs.stderr);
            assert!(err.contains("journal"), "{err}");
            eprintln!("logs failed: {}", err.trim());
        }
    }
    eprintln!("{answered} of 30 logs calls answered with lines");
    assert!(answered > 0, "logs never answered");
    let probe = exec_sh(
        &app,
        "box",
        "systemctl is-active racer; ls -la /var/log/journal/$(cat /etc/machine-id)",
    )
    .await;
    eprintln!("PROBE {}", String::from_utf8_lossy(&probe.stdout));
    let logs = app.cli(&["logs", "box", "-n", "5", "--json"]).await;
    eprintln!("LOGS {:?}", logs);
    // The daemon still serves everyone.
    let list = tokio::time::timeout(std::time::Duration::from_secs(60), m.list(""))
        .await
        .expect("list answered");
    assert!(list.is_ok(), "{list:?}");
    app.sandbox.shutdown().expect("shutdown");
}

/// Issue 19's single path back from a snapshot (`voxnix restore NAME ID
/// --path REL [--to REL]`), attacked from inside the running container.
/// The path comes back alone (the rest of the workspace as it is now); what
/// is there is never replaced; the snapshot's own links come back as links
/// and are never read through; a directory of the live workspace that the
/// container's root turned into a link to `/etc` (which the host would
/// resolve as the appliance's own) is refused, also while a loop swaps it
/// back and forth during twenty restores; `..` and absolute paths are
/// refused. The appliance's `/etc` gets nothing.
#[tokio::test]
async fn a_single_path_comes_back_alone_and_links_never_lead_it_out() {
    let app = Appliance::boot("").await;
    assert_eq!(app.create(r#"{"name":"box"}"#, "").await["ok"], true);
    let sh = |script: &'static str| {
        let app = &app;
        async move {
            let out = exec_sh(app, "box", script).await;
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    assert_eq!(
        sh(
            "cd /workspace && mkdir -p notes deep/er && echo v1 > notes/todo.md && \
            echo keep > other.txt && ln -s /etc leak && echo d > deep/er/f && echo ready"
        )
        .await,
        "ready"
    );
    let snap = app.cli(&["--json", "snapshot", "box"]).await;
    assert!(snap.status.success(), "{snap:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&snap.stdout).expect("json")["id"]
        .as_str()
        .expect("an id")
        .to_string();
    assert_eq!(
        sh("cd /workspace && rm notes/todo.md && echo v2 > other.txt && echo ready").await,
        "ready"
    );
    let restore = |args: &[&str]| {
        let mut all = vec!["restore", "box", id.as_str()];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        let app = &app;
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            app.cli(&refs).await
        }
    };

    // The deleted file comes back alone.
    let out = restore(&["--path", "notes/todo.md"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sh("cat /workspace/notes/todo.md /workspace/other.txt").await,
        "v1\nv2"
    );
    // What is there is not replaced.
    let out = restore(&["--path", "notes/todo.md"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already in the workspace"),
        "{out:?}"
    );
    // Elsewhere, with the missing folders made, owned as their parent.
    assert_eq!(
        sh("mkdir /workspace/home && chown 1000:1000 /workspace/home && echo ok").await,
        "ok"
    );
    let out = restore(&["--path", "deep", "--to", "home/back/deep"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sh("cat /workspace/home/back/deep/er/f; stat -c %u:%g /workspace/home/back").await,
        "d\n1000:1000"
    );
    // The snapshot's own link: back as a link, never read through.
    let out = restore(&["--path", "leak", "--to", "leak2"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sh("readlink /workspace/leak2").await, "/etc");
    let out = restore(&["--path", "leak/passwd", "--to", "stolen"]).await;
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(
        sh("test -e /workspace/stolen || echo absent").await,
        "absent"
    );
    // Paths that leave the workspace.
    for (bad, says) in [
        ("../../../../etc/passwd", "has a '..' part"),
        ("/etc/passwd", "is absolute"),
    ] {
        let out = restore(&["--path", bad]).await;
        assert!(!out.status.success(), "{bad}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{bad}: {out:?}"
        );
    }
    // A live directory turned into a link to /etc: refused.
    assert_eq!(
        sh("cd /workspace && rm -rf notes && ln -s /etc notes && echo ok").await,
        "ok"
    );
    let out = restore(&["--path", "deep/er/f", "--to", "notes/f-planted"]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a link or not a directory"),
        "{out:?}"
    );
    // And while a loop swaps it between a directory and that link.
    let swapper = "mkdir -p /workspace/tgt && systemd-run --unit=swapper --no-block sh -c 'cd /workspace; \
                   end=$(($(date +%s) + 60)); while [ $(date +%s) -lt $end ]; do \
                   mv tgt z && ln -s /etc tgt; rm tgt && mv z tgt; done' && echo started";
    assert_eq!(sh(swapper).await, "started");
    let mut landed = 0;
    for i in 0..20 {
        let to = format!("tgt/f-race-{i}");
        let out = restore(&["--path", "deep/er/f", "--to", &to]).await;
        if out.status.success() {
            landed += 1;
        }
    }
    let _ = sh("systemctl stop swapper; echo stopped").await;
    let leaked = app.sh("ls /etc | grep -c '^f-' ; true").await;
    assert_eq!(leaked.trim(), "0", "the appliance's /etc got a file");
    let inside = sh("find /workspace -name 'f-race-*' | wc -l").await;
    assert_eq!(
        inside.trim().parse::<usize>().unwrap_or(usize::MAX),
        landed,
        "each restore that succeeded landed in the workspace"
    );
    let container_etc = sh("ls /etc | grep -c '^f-' ; true").await;
    assert_eq!(container_etc, "0", "nor the container's /etc");
    app.sandbox.shutdown().expect("shutdown");
}
