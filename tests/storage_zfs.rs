//! The zfs storage backend, without ZFS: every test scripts the exact `zfs`
//! command lines the backend must run and answers them with recorded output
//! from `tests/fixtures/zfs/` (see its README for where each format comes
//! from). Nothing here runs `zfs`.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use voxnix::engine::Owner;
use voxnix::storage::zfs::BoxFuture;
use voxnix::storage::zfs_parse::{self, DatasetType, Failure, Source};
use voxnix::storage::{
    Backend, Storage, StorageConfig, StorageError, SystemZfs, ZfsOutput, ZfsRunner, decode_owner,
    encode_owner,
};

const COLS: &str = "name,type,creation,used,available,referenced,quota,mountpoint,mounted,origin,org.voxnix:expires";
const P: &str = "tank/voxnix/users/telegram-123";
const C: &str = "tank/voxnix/users/telegram-123/containers/dev";
const WS: &str = "tank/voxnix/users/telegram-123/containers/dev/workspace";
const WS_PATH: &str = "/var/lib/voxnix/workspaces/users/telegram-123/containers/dev/workspace";
/// 2026-11-27T10:00:00Z
const NOW: u64 = 1_795_773_600;
const DAY: u64 = 86_400;
const S1: &str = "2026-11-20T08-00-00Z-manual";
const S2: &str = "2026-11-24T18-30-00Z-manual";
const S3: &str = "2026-11-26T06-00-00Z-pre-update";

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/zfs")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ok(stdout: &str) -> io::Result<ZfsOutput> {
    Ok(ZfsOutput {
        status: Some(0),
        stdout: stdout.to_string(),
        stderr: String::new(),
    })
}

fn fail(stderr: &str) -> io::Result<ZfsOutput> {
    fail_with(1, "", stderr)
}

fn fail_with(code: i32, stdout: &str, stderr: &str) -> io::Result<ZfsOutput> {
    Ok(ZfsOutput {
        status: Some(code),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
    })
}

/// `zfs list -H -p -o <COLS> [depth...] -t <types> <targets...>`
fn list(depth: &[&str], types: &str, targets: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["list", "-H", "-p", "-o", COLS]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(depth.iter().map(|s| s.to_string()));
    v.push("-t".into());
    v.push(types.into());
    v.extend(targets.iter().map(|s| s.to_string()));
    v
}

fn tree(ds: &str) -> Vec<String> {
    list(&["-r"], "filesystem,snapshot", &[ds])
}

fn cmd(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn chain(name: &str) -> Vec<String> {
    let c = format!("{P}/containers/{name}");
    let w = format!("{c}/workspace");
    list(
        &[],
        "filesystem",
        &[
            "tank/voxnix",
            "tank/voxnix/users",
            P,
            &format!("{P}/containers"),
            &c,
            &w,
        ],
    )
}

/// A `zfs` that answers from a script and checks every command line.
struct Script {
    steps: Mutex<VecDeque<(Vec<String>, io::Result<ZfsOutput>)>>,
}

impl Script {
    fn new(steps: Vec<(Vec<String>, io::Result<ZfsOutput>)>) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into()),
        })
    }

    fn assert_done(&self) {
        let left = self.steps.lock().unwrap();
        assert!(
            left.is_empty(),
            "commands expected but never run: {:#?}",
            left.iter().map(|(a, _)| a.join(" ")).collect::<Vec<_>>()
        );
    }
}

impl ZfsRunner for Script {
    fn run(&self, args: Vec<String>) -> BoxFuture<'_, io::Result<ZfsOutput>> {
        let step = self.steps.lock().unwrap().pop_front();
        Box::pin(async move {
            let Some((want, out)) = step else {
                panic!("unexpected command: zfs {}", args.join(" "));
            };
            assert_eq!(
                args.join(" "),
                want.join(" "),
                "the backend ran another command than expected"
            );
            assert_eq!(args, want);
            out
        })
    }
}

fn cfg() -> StorageConfig {
    StorageConfig {
        backend: Backend::Zfs,
        ..StorageConfig::default()
    }
}

fn storage(cfg: StorageConfig, script: &Arc<Script>, now: u64) -> Storage {
    Storage::with_zfs_runner(cfg, script.clone()).with_clock(Arc::new(move || now))
}

fn owner() -> Owner {
    Owner::parse("telegram:123").unwrap()
}

// ---- create ------------------------------------------------------------------

#[tokio::test]
async fn ensure_workspace_creates_every_level_with_explicit_root_mountpoint_and_quota() {
    let s = Script::new(vec![
        (tree(C), fail(&fixture("err-cdir-missing.err"))),
        (chain("dev"), fail(&fixture("list-chain-fresh.err"))),
        (
            cmd(&[
                "create",
                "-o",
                "mountpoint=/var/lib/voxnix/workspaces",
                "tank/voxnix",
            ]),
            ok(""),
        ),
        (cmd(&["create", "tank/voxnix/users"]), ok("")),
        (cmd(&["create", "-o", "quota=10737418240", P]), ok("")),
        // Someone else created it meanwhile: fine.
        (
            cmd(&["create", &format!("{P}/containers")]),
            fail(&fixture("err-exists.err")),
        ),
        (cmd(&["create", C]), ok("")),
        // Created, but the mount failed: the backend mounts it afterwards.
        (
            cmd(&["create", WS]),
            fail(&fixture("err-created-not-mounted.err")),
        ),
        (
            list(&[], "filesystem", &[WS]),
            ok(&fixture("list-workspace-unmounted.out")),
        ),
        (cmd(&["mount", WS]), ok("")),
    ]);
    let st = storage(cfg(), &s, NOW);
    let path = st.ensure_workspace(&owner(), "dev").await.unwrap();
    assert_eq!(path, PathBuf::from(WS_PATH));
    assert_eq!(st.workspace_path(&owner(), "dev").unwrap(), path);
    s.assert_done();
}

#[tokio::test]
async fn ensure_workspace_is_idempotent() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (chain("dev"), ok(&fixture("list-chain-existing.out"))),
        (
            list(&[], "filesystem", &[WS]),
            ok(&fixture("list-workspace-new.out")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    assert_eq!(
        st.ensure_workspace(&owner(), "dev").await.unwrap(),
        PathBuf::from(WS_PATH)
    );
    s.assert_done();
}

#[tokio::test]
async fn an_already_mounted_workspace_is_fine() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (chain("dev"), ok(&fixture("list-chain-existing.out"))),
        (
            list(&[], "filesystem", &[WS]),
            ok(&fixture("list-workspace-unmounted.out")),
        ),
        (
            cmd(&["mount", WS]),
            fail(&fixture("err-already-mounted.err")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    st.ensure_workspace(&owner(), "dev").await.unwrap();
    s.assert_done();
}

#[tokio::test]
async fn quotas_follow_the_configuration() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (chain("dev"), ok(&fixture("list-chain-existing.out"))),
        (cmd(&["set", "quota=21474836480", P]), ok("")),
        // A quota below what is used: ZFS refuses, the old one stays, logged only.
        (
            cmd(&["set", "quota=2147483648", C]),
            fail(&fixture("err-quota-below-used.err")),
        ),
        (
            list(&[], "filesystem", &[WS]),
            ok(&fixture("list-workspace-new.out")),
        ),
    ]);
    let c = StorageConfig {
        user_quota: "20G".into(),
        container_quota: Some("2G".into()),
        ..cfg()
    };
    let st = storage(c, &s, NOW);
    st.ensure_workspace(&owner(), "dev").await.unwrap();
    s.assert_done();
}

#[tokio::test]
async fn a_full_owner_gets_no_new_workspace_and_is_told_the_numbers() {
    let web = format!("{P}/containers/web");
    let s = Script::new(vec![
        (
            tree(&web),
            fail(&format!("cannot open '{web}': dataset does not exist\n")),
        ),
        (
            chain("web"),
            fail_with(
                1,
                &fixture("list-chain-full.out"),
                &fixture("list-chain-full.err"),
            ),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.ensure_workspace(&owner(), "web").await.unwrap_err();
    let StorageError::QuotaExceeded { used, quota, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!((*used, *quota), (10_737_418_240, 10_737_418_240));
    let m = e.to_string();
    assert!(m.contains("owner telegram:123"), "{m}");
    assert!(m.contains("10.0 GiB used of 10.0 GiB"), "{m}");
    s.assert_done();
}

#[tokio::test]
async fn a_missing_pool_says_how_to_import_it() {
    let s = Script::new(vec![
        (tree(C), fail(&fixture("err-cdir-missing.err"))),
        (chain("dev"), fail(&fixture("list-chain-fresh.err"))),
        (
            cmd(&[
                "create",
                "-o",
                "mountpoint=/var/lib/voxnix/workspaces",
                "tank/voxnix",
            ]),
            fail(&fixture("err-no-pool.err")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.ensure_workspace(&owner(), "dev").await.unwrap_err();
    assert!(
        matches!(&e, StorageError::PoolMissing { pool, .. } if pool == "tank"),
        "{e:?}"
    );
    assert!(e.to_string().contains("zpool import tank"), "{e}");
    s.assert_done();
}

#[tokio::test]
async fn a_missing_kernel_module_is_reported_as_such() {
    let s = Script::new(vec![(tree(C), fail(&fixture("err-module.err")))]);
    let st = storage(cfg(), &s, NOW);
    let e = st.ensure_workspace(&owner(), "dev").await.unwrap_err();
    assert!(matches!(e, StorageError::PoolMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("modprobe zfs"), "{e}");
    s.assert_done();
}

#[tokio::test]
async fn a_suspended_pool_points_to_zpool_status() {
    let s = Script::new(vec![(tree(C), fail(&fixture("err-suspended.err")))]);
    let st = storage(cfg(), &s, NOW);
    let e = st.ensure_workspace(&owner(), "dev").await.unwrap_err();
    assert!(e.to_string().contains("zpool status tank"), "{e}");
}

#[tokio::test]
async fn a_workspace_mounted_elsewhere_is_a_configuration_error() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (chain("dev"), ok(&fixture("list-chain-existing.out"))),
        (
            list(&[], "filesystem", &[WS]),
            ok(&fixture("list-workspace-elsewhere.out")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.ensure_workspace(&owner(), "dev").await.unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, StorageError::Misconfigured(_)), "{m}");
    assert!(
        m.contains("/tank/voxnix/users/telegram-123/containers/dev/workspace"),
        "{m}"
    );
    assert!(m.contains(WS_PATH), "{m}");
    s.assert_done();
}

#[tokio::test]
async fn bad_names_never_reach_a_command_line() {
    let s = Script::new(vec![]);
    let st = storage(cfg(), &s, NOW);
    for bad in ["", "Dev", "a/b", "a@b", "-x", "../x", "abcdefghijkl"] {
        let e = st.ensure_workspace(&owner(), bad).await.unwrap_err();
        assert!(
            matches!(e, StorageError::InvalidArgument(_)),
            "{bad}: {e:?}"
        );
    }
    let e = st
        .snapshot(&owner(), "dev", "Bad Reason")
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::InvalidArgument(_)), "{e:?}");
    for bad in ["../../etc", "x@y", "2026-11-27T10-00-00Z", ""] {
        let e = st.restore(&owner(), "dev", bad).await.unwrap_err();
        assert!(matches!(e, StorageError::SnapshotNotFound { .. }), "{e:?}");
    }
    s.assert_done();
}

// ---- usage -------------------------------------------------------------------

#[tokio::test]
async fn usage_of_an_owner_and_a_container() {
    let s = Script::new(vec![
        (list(&[], "filesystem", &[P]), ok(&fixture("list-user.out"))),
        (
            list(&[], "filesystem", &[P]),
            ok(&fixture("list-user-noquota.out")),
        ),
        (list(&[], "filesystem", &[C]), ok(&fixture("list-cdir.out"))),
        // An owner without datasets yet, on a pool that is there.
        (
            list(&[], "filesystem", &[P]),
            fail(&fixture("err-user-missing.err")),
        ),
        (
            list(&[], "filesystem", &["tank"]),
            ok(
                "tank\tfilesystem\t1795000000\t5368709120\t102005473280\t98304\t0\t/tank\tyes\t-\t-\n",
            ),
        ),
        // ...and on a pool that is not.
        (
            list(&[], "filesystem", &[P]),
            fail(&fixture("err-user-missing.err")),
        ),
        (
            list(&[], "filesystem", &["tank"]),
            fail(&fixture("err-pool-missing-list.err")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let u = st.owner_usage(&owner()).await.unwrap();
    assert_eq!(u.used, 1_073_840_128);
    assert_eq!(u.quota, Some(10 << 30));
    assert_eq!(u.available, Some(9_663_578_112));
    assert_eq!(u.human(), "1.0 GiB used of 10.0 GiB (9.0 GiB available)");
    let u = st.owner_usage(&owner()).await.unwrap();
    assert_eq!(u.quota, None, "quota 0 means none");
    assert_eq!(u.quota_human(), "none");
    assert!(u.human().contains("no quota"), "{}", u.human());
    let u = st.container_usage(&owner(), "dev").await.unwrap();
    assert_eq!((u.used, u.quota), (1_073_643_520, Some(2_147_287_040)));
    let u = st.owner_usage(&owner()).await.unwrap();
    assert_eq!((u.used, u.quota, u.available), (0, Some(10 << 30), None));
    assert_eq!(u.available_human(), "unknown");
    let e = st.owner_usage(&owner()).await.unwrap_err();
    assert!(matches!(e, StorageError::PoolMissing { .. }), "{e:?}");
    s.assert_done();
}

// ---- snapshots ---------------------------------------------------------------

#[tokio::test]
async fn snapshot_now() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (
            cmd(&[
                "snapshot",
                &format!("{WS}@voxnix-2026-11-27T10-00-00Z-manual"),
            ]),
            ok(""),
        ),
        (
            list(
                &[],
                "snapshot",
                &[&format!("{WS}@voxnix-2026-11-27T10-00-00Z-manual")],
            ),
            ok(&fixture("list-snapshot-new.out")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let snap = st.snapshot(&owner(), "dev", "manual").await.unwrap();
    assert_eq!(snap.id, "2026-11-27T10-00-00Z-manual");
    assert_eq!(snap.created, NOW);
    assert_eq!(snap.reason, "manual");
    assert_eq!(snap.used, Some(0));
    s.assert_done();
}

#[tokio::test]
async fn snapshot_names_never_collide() {
    // 06:00:00 is taken (in the listing); 06:00:01 is taken by a race.
    let now = NOW - DAY - 4 * 3600;
    let a = format!("{WS}@voxnix-2026-11-26T06-00-01Z-pre-update");
    let b = format!("{WS}@voxnix-2026-11-26T06-00-02Z-pre-update");
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (
            cmd(&["snapshot", &a]),
            fail(&fixture("err-snapshot-exists.err")),
        ),
        (cmd(&["snapshot", &b]), ok("")),
        (list(&[], "snapshot", &[&b]), ok("")),
    ]);
    let st = storage(cfg(), &s, now);
    let snap = st.snapshot(&owner(), "dev", "pre-update").await.unwrap();
    assert_eq!(snap.id, "2026-11-26T06-00-02Z-pre-update");
    s.assert_done();
}

#[tokio::test]
async fn out_of_space_names_the_full_limit_with_numbers() {
    let snap = format!("{WS}@voxnix-2026-11-27T10-00-00Z-manual");
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (
            cmd(&["snapshot", &snap]),
            fail(&fixture("err-out-of-space.err")),
        ),
        (
            list(&[], "filesystem", &[P, C, "tank/voxnix"]),
            ok(&(fixture("list-user.out") + &fixture("list-cdir.out"))),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.snapshot(&owner(), "dev", "manual").await.unwrap_err();
    let m = e.to_string();
    assert!(
        matches!(
            e,
            StorageError::QuotaExceeded {
                used: 1_073_643_520,
                quota: 2_147_287_040,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(m.contains("container 'dev'"), "{m}");
    assert!(m.contains("used of 2.0 GiB"), "{m}");
    s.assert_done();
}

#[tokio::test]
async fn snapshots_lists_only_ours_oldest_first_including_history() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (tree(C), ok(&fixture("list-tree-history.out"))),
    ]);
    let st = storage(cfg(), &s, NOW);
    let v = st.snapshots(&owner(), "dev").await.unwrap();
    let ids: Vec<&str> = v.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [S1, S2, S3], "the autosnap_ snapshot is not ours");
    assert_eq!(v[0].used, Some(15_728_640));
    assert_eq!(v[2].reason, "pre-update");
    assert_eq!(v[0].created, 1_795_161_600);
    let v = st.snapshots(&owner(), "dev").await.unwrap();
    let ids: Vec<&str> = v.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [S1, S2, "2026-11-25T09-00-00Z-pre-restore"]);
    s.assert_done();
}

#[tokio::test]
async fn snapshots_of_a_missing_container_is_not_found() {
    let s = Script::new(vec![(tree(C), fail(&fixture("err-cdir-missing.err")))]);
    let st = storage(cfg(), &s, NOW);
    let e = st.snapshots(&owner(), "dev").await.unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e:?}");
}

// ---- restore -----------------------------------------------------------------

fn restore_prelude() -> Vec<(Vec<String>, io::Result<ZfsOutput>)> {
    let pre = format!("{WS}@voxnix-2026-11-27T10-00-00Z-pre-restore");
    vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (cmd(&["snapshot", &pre]), ok("")),
        (
            list(&[], "snapshot", &[&pre]),
            ok(&fixture("list-snapshot-pre-restore.out")),
        ),
        (
            cmd(&[
                "clone",
                &format!("{WS}@voxnix-{S1}"),
                &format!("{C}/restoring"),
            ]),
            ok(""),
        ),
        (cmd(&["create", &format!("{C}/history")]), ok("")),
    ]
}

fn get_origin() -> Vec<String> {
    cmd(&[
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value,source",
        "origin",
        WS,
    ])
}

#[tokio::test]
async fn restore_clones_swaps_and_promotes_keeping_every_snapshot() {
    let hist = format!("{C}/history/2026-11-27T10-00-00Z");
    let mut steps = restore_prelude();
    steps.extend([
        (cmd(&["rename", WS, &hist]), ok("")),
        (cmd(&["rename", &format!("{C}/restoring"), WS]), ok("")),
        (get_origin(), ok(&fixture("get-origin-clone.out"))),
        (cmd(&["promote", WS]), ok("")),
        (get_origin(), ok(&fixture("get-origin-none.out"))),
    ]);
    let s = Script::new(steps);
    let st = storage(cfg(), &s, NOW);
    st.restore(&owner(), "dev", S1).await.unwrap();
    s.assert_done();
}

#[tokio::test]
async fn a_busy_workspace_makes_restore_undo_everything() {
    let mut steps = restore_prelude();
    steps.extend([
        (
            cmd(&["rename", WS, &format!("{C}/history/2026-11-27T10-00-00Z")]),
            fail(&fixture("err-busy-unmount.err")),
        ),
        // Undo: the clone and the pre-restore snapshot go; nothing else changed.
        (cmd(&["destroy", &format!("{C}/restoring")]), ok("")),
        (
            cmd(&[
                "destroy",
                &format!("{WS}@voxnix-2026-11-27T10-00-00Z-pre-restore"),
            ]),
            ok(""),
        ),
    ]);
    let s = Script::new(steps);
    let st = storage(cfg(), &s, NOW);
    let e = st.restore(&owner(), "dev", S1).await.unwrap_err();
    assert!(matches!(e, StorageError::Busy { .. }), "{e:?}");
    assert!(e.to_string().contains("stop it first"), "{e}");
    s.assert_done();
}

#[tokio::test]
async fn a_failed_second_rename_puts_the_old_workspace_back() {
    let hist = format!("{C}/history/2026-11-27T10-00-00Z");
    let mut steps = restore_prelude();
    steps.extend([
        (cmd(&["rename", WS, &hist]), ok("")),
        (
            cmd(&["rename", &format!("{C}/restoring"), WS]),
            fail("cannot rename 'x': I/O error\n"),
        ),
        (cmd(&["rename", &hist, WS]), ok("")),
        (cmd(&["destroy", &format!("{C}/restoring")]), ok("")),
        (
            cmd(&[
                "destroy",
                &format!("{WS}@voxnix-2026-11-27T10-00-00Z-pre-restore"),
            ]),
            ok(""),
        ),
    ]);
    let s = Script::new(steps);
    let st = storage(cfg(), &s, NOW);
    let e = st.restore(&owner(), "dev", S1).await.unwrap_err();
    assert!(matches!(e, StorageError::Command { .. }), "{e:?}");
    s.assert_done();
}

#[tokio::test]
async fn restoring_an_unknown_snapshot_changes_nothing() {
    let s = Script::new(vec![(tree(C), ok(&fixture("list-tree.out")))]);
    let st = storage(cfg(), &s, NOW);
    let e = st
        .restore(&owner(), "dev", "2026-01-01T00-00-00Z-manual")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StorageError::SnapshotNotFound { id } if id == "2026-01-01T00-00-00Z-manual"),
        "{e:?}"
    );
    // A foreign snapshot (not ours) is not restorable either.
    s.assert_done();
}

#[tokio::test]
async fn a_snapshot_vanishing_before_the_clone_is_snapshot_not_found() {
    let pre = format!("{WS}@voxnix-2026-11-27T10-00-00Z-pre-restore");
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (cmd(&["snapshot", &pre]), ok("")),
        (list(&[], "snapshot", &[&pre]), ok("")),
        (
            cmd(&[
                "clone",
                &format!("{WS}@voxnix-{S1}"),
                &format!("{C}/restoring"),
            ]),
            fail(&format!(
                "cannot open '{WS}@voxnix-{S1}': dataset does not exist\n"
            )),
        ),
        (cmd(&["destroy", &pre]), ok("")),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.restore(&owner(), "dev", S1).await.unwrap_err();
    assert!(
        matches!(&e, StorageError::SnapshotNotFound { id } if id == S1),
        "{e:?}"
    );
    s.assert_done();
}

#[tokio::test]
async fn a_restore_cut_off_by_a_crash_is_finished_first() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree-interrupted.out"))),
        (cmd(&["rename", &format!("{C}/restoring"), WS]), ok("")),
        (tree(C), ok(&fixture("list-tree.out"))),
    ]);
    let st = storage(cfg(), &s, NOW);
    let v = st.snapshots(&owner(), "dev").await.unwrap();
    assert_eq!(v.len(), 3);
    s.assert_done();
}

// ---- destroy, kept, recreate, purge ------------------------------------------

#[tokio::test]
async fn retire_takes_a_final_snapshot_and_keeps_the_whole_tree() {
    let pre = format!("{WS}@voxnix-2026-11-27T10-00-00Z-pre-destroy");
    let kept = format!("{P}/kept/dev.2026-11-27T10-00-00Z");
    let expires = NOW + 7 * DAY;
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (cmd(&["snapshot", &pre]), ok("")),
        (
            list(&[], "snapshot", &[&pre]),
            ok(&fixture("list-snapshot-pre-destroy.out")),
        ),
        (
            cmd(&["create", &format!("{P}/kept")]),
            fail(&format!(
                "cannot create '{P}/kept': dataset already exists\n"
            )),
        ),
        (
            list(&["-d", "1"], "filesystem", &[&format!("{P}/kept")]),
            ok(&fixture("list-kept-d1.out")),
        ),
        (cmd(&["rename", C, &kept]), ok("")),
        (
            cmd(&["set", &format!("org.voxnix:expires={expires}"), &kept]),
            ok(""),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let k = st.retire_workspace(&owner(), "dev").await.unwrap().unwrap();
    assert_eq!(k.container, "dev");
    assert_eq!(k.id, "dev.2026-11-27T10-00-00Z");
    assert_eq!(k.owner, owner());
    assert_eq!(k.expires, expires);
    assert_eq!(k.snapshot.id, "2026-11-27T10-00-00Z-pre-destroy");
    assert_eq!(k.snapshot.reason, "pre-destroy");
    s.assert_done();
}

#[tokio::test]
async fn retire_without_a_workspace_is_nothing() {
    let s = Script::new(vec![(tree(C), fail(&fixture("err-cdir-missing.err")))]);
    let st = storage(cfg(), &s, NOW);
    assert_eq!(st.retire_workspace(&owner(), "dev").await.unwrap(), None);
    s.assert_done();
}

#[tokio::test]
async fn a_busy_workspace_is_not_retired() {
    let pre = format!("{WS}@voxnix-2026-11-27T10-00-00Z-pre-destroy");
    let kept = format!("{P}/kept/dev.2026-11-27T10-00-00Z");
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (cmd(&["snapshot", &pre]), ok("")),
        (list(&[], "snapshot", &[&pre]), ok("")),
        (cmd(&["create", &format!("{P}/kept")]), ok("")),
        (
            list(&["-d", "1"], "filesystem", &[&format!("{P}/kept")]),
            ok(""),
        ),
        (
            cmd(&["rename", C, &kept]),
            fail(&fixture("err-busy-unmount.err")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.retire_workspace(&owner(), "dev").await.unwrap_err();
    assert!(matches!(e, StorageError::Busy { .. }), "{e:?}");
    s.assert_done();
}

#[tokio::test]
async fn kept_lists_what_destroyed_containers_left() {
    let s = Script::new(vec![
        (tree(&format!("{P}/kept")), ok(&fixture("list-kept.out"))),
        (
            tree(&format!("{P}/kept")),
            fail(&fixture("err-kept-missing.err")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let k = st.kept(&owner()).await.unwrap();
    assert_eq!(k.len(), 2);
    assert_eq!(k[0].container, "dev");
    assert_eq!(k[0].id, "dev.2026-11-20T12-00-00Z");
    assert_eq!(k[0].expires, 1_795_780_800, "from org.voxnix:expires");
    assert_eq!(k[0].snapshot.id, "2026-11-20T12-00-00Z-pre-destroy");
    assert_eq!(k[1].container, "web");
    // No property: the time in the name plus keep_days.
    assert_eq!(k[1].expires, 1_795_678_200 + 7 * DAY);
    assert_eq!(k[1].snapshot.reason, "pre-destroy");
    assert!(st.kept(&owner()).await.unwrap().is_empty());
    s.assert_done();
}

#[tokio::test]
async fn restore_kept_brings_the_newest_back_under_the_live_name() {
    let s = Script::new(vec![
        (tree(&format!("{P}/kept")), ok(&fixture("list-kept.out"))),
        (tree(C), fail(&fixture("err-cdir-missing.err"))),
        (
            cmd(&["create", &format!("{P}/containers")]),
            fail(&fixture("err-exists.err")),
        ),
        (
            cmd(&["rename", &format!("{P}/kept/dev.2026-11-20T12-00-00Z"), C]),
            ok(""),
        ),
        (cmd(&["inherit", "org.voxnix:expires", C]), ok("")),
    ]);
    let st = storage(cfg(), &s, NOW);
    st.restore_kept(&owner(), "dev").await.unwrap();
    s.assert_done();
}

#[tokio::test]
async fn restore_kept_without_anything_kept_is_not_found() {
    let s = Script::new(vec![(
        tree(&format!("{P}/kept")),
        ok(&fixture("list-kept.out")),
    )]);
    let st = storage(cfg(), &s, NOW);
    let e = st.restore_kept(&owner(), "api").await.unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e:?}");
    s.assert_done();
}

#[tokio::test]
async fn purge_destroys_the_workspace_and_what_was_kept_of_that_name_only() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (cmd(&["destroy", "-r", C]), ok("")),
        (tree(&format!("{P}/kept")), ok(&fixture("list-kept.out"))),
        (
            cmd(&[
                "destroy",
                "-r",
                &format!("{P}/kept/dev.2026-11-20T12-00-00Z"),
            ]),
            ok(""),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    st.purge(&owner(), "dev").await.unwrap();
    s.assert_done();
}

#[tokio::test]
async fn purge_of_a_busy_workspace_fails_and_clones_elsewhere_are_named() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (
            cmd(&["destroy", "-r", C]),
            fail(&fixture("err-busy-destroy.err")),
        ),
        (tree(C), ok(&fixture("list-tree.out"))),
        (
            cmd(&["destroy", "-r", C]),
            fail(&fixture("err-dependent-clones.err")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.purge(&owner(), "dev").await.unwrap_err();
    assert!(matches!(e, StorageError::Busy { .. }), "{e:?}");
    let e = st.purge(&owner(), "dev").await.unwrap_err();
    assert!(e.to_string().contains("tank/scratch/copy-of-dev"), "{e}");
    s.assert_done();
}

#[tokio::test]
async fn a_snapshot_an_earlier_restore_depends_on_cannot_be_deleted() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree-history.out"))),
        (
            cmd(&["destroy", &format!("{WS}@voxnix-{S1}")]),
            fail(&fixture("err-snapshot-cloned.err")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.delete_snapshot(&owner(), "dev", S1).await.unwrap_err();
    assert!(e.to_string().contains("cannot be removed yet"), "{e}");
    s.assert_done();
}

#[tokio::test]
async fn a_crashing_zfs_and_a_missing_binary_are_plain_errors() {
    let s = Script::new(vec![
        (tree(C), ok(&fixture("list-tree.out"))),
        (
            cmd(&["destroy", &format!("{WS}@voxnix-{S2}")]),
            Ok(ZfsOutput {
                status: None,
                stdout: String::new(),
                stderr: fixture("err-internal-abort.err"),
            }),
        ),
        (
            tree(C),
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "No such file or directory",
            )),
        ),
        (tree(C), fail_with(2, "", &fixture("err-usage-exit2.err"))),
    ]);
    let st = storage(cfg(), &s, NOW);
    let e = st.delete_snapshot(&owner(), "dev", S2).await.unwrap_err();
    assert!(
        matches!(&e, StorageError::Command { stderr, .. } if stderr.contains("internal error")),
        "{e:?}"
    );
    let e = st.snapshots(&owner(), "dev").await.unwrap_err();
    assert!(
        matches!(&e, StorageError::Io { context, .. } if context.contains("zfs list")),
        "{e:?}"
    );
    let e = st.snapshots(&owner(), "dev").await.unwrap_err();
    assert!(
        matches!(&e, StorageError::Command { stderr, .. } if stderr.contains("invalid option")),
        "{e:?}"
    );
    s.assert_done();
}

// ---- retention ---------------------------------------------------------------

#[tokio::test]
async fn retention_by_count_and_age_and_expired_kept_trees() {
    // 2026-11-28T00:00:00Z: the kept 'dev' (expires 11-27 12:00) is due,
    // 'web' (retired 11-26, kept 7 days) is not.
    let now = 1_795_824_000;
    let s = Script::new(vec![
        (
            list(&["-d", "3"], "filesystem", &["tank/voxnix/users"]),
            ok(&fixture("list-inventory.out")),
        ),
        (tree(C), ok(&fixture("list-tree.out"))),
        // keep 2: the oldest goes (it is also older than 7 days).
        (cmd(&["destroy", &format!("{WS}@voxnix-{S1}")]), ok("")),
        (tree(C), ok(&fixture("list-tree.out"))),
        (
            cmd(&[
                "destroy",
                "-r",
                &format!("{P}/kept/dev.2026-11-20T12-00-00Z"),
            ]),
            ok(""),
        ),
    ]);
    let c = StorageConfig {
        keep_snapshots: 2,
        ..cfg()
    };
    let st = storage(c, &s, now);
    assert_eq!(st.apply_retention(now).await.unwrap(), 2);
    s.assert_done();
}

#[tokio::test]
async fn retention_skips_pinned_snapshots_and_never_takes_the_newest() {
    let s = Script::new(vec![
        (
            list(&["-d", "3"], "filesystem", &["tank/voxnix/users"]),
            ok(&fixture("list-inventory.out")),
        ),
        (tree(C), ok(&fixture("list-tree-history.out"))),
        // keep 1: the newest (pre-restore) stays, s2 goes, s1 is the origin of
        // the history clone and stays.
        (
            cmd(&[
                "destroy",
                &format!("{C}/history/2026-11-25T09-00-00Z@voxnix-{S2}"),
            ]),
            ok(""),
        ),
        (tree(C), ok(&fixture("list-tree-history.out"))),
    ]);
    let c = StorageConfig {
        keep_snapshots: 1,
        keep_days: 0,
        ..cfg()
    };
    let st = storage(c, &s, NOW);
    assert_eq!(st.apply_retention(NOW).await.unwrap(), 1);
    s.assert_done();
}

#[tokio::test]
async fn retention_on_an_empty_or_missing_pool() {
    let s = Script::new(vec![
        (
            list(&["-d", "3"], "filesystem", &["tank/voxnix/users"]),
            fail(&fixture("err-users-missing.err")),
        ),
        (
            list(&[], "filesystem", &["tank"]),
            ok("tank\tfilesystem\t1795000000\t98304\t102005473280\t98304\t0\t/tank\tyes\t-\t-\n"),
        ),
        (
            list(&["-d", "3"], "filesystem", &["tank/voxnix/users"]),
            fail(&fixture("err-users-missing.err")),
        ),
        (
            list(&[], "filesystem", &["tank"]),
            fail(&fixture("err-pool-missing-list.err")),
        ),
    ]);
    let st = storage(cfg(), &s, NOW);
    assert_eq!(st.apply_retention(NOW).await.unwrap(), 0);
    let e = st.apply_retention(NOW).await.unwrap_err();
    assert!(matches!(e, StorageError::PoolMissing { .. }), "{e:?}");
    s.assert_done();
}

// ---- parsing -----------------------------------------------------------------

#[test]
fn list_rows_parse_with_dashes_zero_quota_and_edge_numbers() {
    let rows = zfs_parse::parse_list(&fixture("list-tree.out")).unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0].kind, DatasetType::Filesystem);
    assert_eq!(rows[0].quota, None, "quota 0 is none");
    assert_eq!(rows[0].mounted, Some(true));
    assert_eq!(rows[2].kind, DatasetType::Snapshot);
    assert_eq!(rows[2].available, None);
    assert_eq!(rows[2].mountpoint, None);
    assert_eq!(rows[2].mounted, None);
    assert_eq!(rows[2].creation, 1_795_161_600);
    assert_eq!(
        rows[2].snapshot_parts(),
        Some((WS, "voxnix-2026-11-20T08-00-00Z-manual"))
    );

    let rows = zfs_parse::parse_list(&fixture("list-huge.out")).unwrap();
    assert_eq!(rows[0].used, u64::MAX);
    assert_eq!(rows[0].available, Some(u64::MAX - 1));
    assert_eq!(rows[0].quota, Some(u64::MAX));
    assert_eq!(rows[0].expires, Some(u64::MAX));
    assert_eq!(rows[1].expires, None, "a user property that is no number");
    assert_eq!(rows[1].creation, 0);
    assert_eq!(rows[2].kind, DatasetType::Volume);
    assert_eq!(rows[2].mountpoint, None);

    let rows = zfs_parse::parse_list(&fixture("list-tree-history.out")).unwrap();
    let hist = rows
        .iter()
        .find(|r| r.name.ends_with("history/2026-11-25T09-00-00Z"))
        .unwrap();
    assert_eq!(
        hist.origin.as_deref(),
        Some(format!("{WS}@voxnix-{S1}").as_str())
    );

    let rows = zfs_parse::parse_list(&fixture("list-kept.out")).unwrap();
    assert_eq!(rows[1].expires, Some(1_795_780_800));
    assert_eq!(rows[5].expires, None);

    assert!(zfs_parse::parse_list(&fixture("list-overflow.out")).is_err());
    let e = zfs_parse::parse_list(&fixture("list-not-parsable.out")).unwrap_err();
    assert!(e.to_string().contains("tab-separated"), "{e}");
    assert!(zfs_parse::parse_list("").unwrap().is_empty());
}

#[test]
fn get_rows_parse_every_source_and_empty_values() {
    let p = zfs_parse::parse_get(&fixture("get-sources.out")).unwrap();
    assert_eq!(p.len(), 9);
    assert_eq!(p[0].source, Source::Local);
    assert_eq!(p[0].value, "10737418240");
    assert_eq!(p[1].source, Source::Inherited("tank".into()));
    assert_eq!(p[2].source, Source::None);
    assert_eq!(p[3].source, Source::Inherited("tank/voxnix".into()));
    assert_eq!(p[4].source, Source::Default);
    assert_eq!(p[5].value, "-");
    assert_eq!(p[6].property, "clones");
    assert_eq!(p[6].value, "", "no clones: an empty value");
    assert_eq!(p[7].source, Source::Temporary);
    assert_eq!(p[8].source, Source::Received);
    let p = zfs_parse::parse_get(&fixture("get-origin-clone.out")).unwrap();
    assert!(p[0].value.contains("@voxnix-"));
    let p = zfs_parse::parse_get(&fixture("get-origin-none.out")).unwrap();
    assert_eq!(p[0].value, "-");
    assert!(zfs_parse::parse_get("a\tb\tc\n").is_err());
    assert!(zfs_parse::parse_get("a\tb\tc\tinherited from \n").is_err());
}

#[test]
fn every_error_sample_is_classified() {
    let cases: &[(&str, Failure)] = &[
        ("err-no-pool.err", Failure::NoPool("tank".into())),
        ("err-module.err", Failure::NoModule),
        ("err-suspended.err", Failure::PoolUnavailable),
        ("err-exists.err", Failure::Exists),
        ("err-snapshot-exists.err", Failure::Exists),
        ("err-busy-unmount.err", Failure::Busy),
        ("err-busy-destroy.err", Failure::Busy),
        ("err-held.err", Failure::Busy),
        ("err-out-of-space.err", Failure::NoSpace),
        ("err-quota-below-used.err", Failure::NoSpace),
        (
            "err-snapshot-missing.err",
            Failure::NoDataset(Some(format!("{WS}@voxnix-2026-01-01T00-00-00Z-manual"))),
        ),
        ("err-cdir-missing.err", Failure::NoDataset(Some(C.into()))),
        (
            "err-pool-missing-list.err",
            Failure::NoDataset(Some("tank".into())),
        ),
        ("err-snapshot-cloned.err", Failure::DependentClones),
        ("err-dependent-clones.err", Failure::DependentClones),
        ("err-permission.err", Failure::PermissionDenied),
        ("err-usage-exit2.err", Failure::Other),
        ("err-internal-abort.err", Failure::Other),
    ];
    for (file, want) in cases {
        assert_eq!(&zfs_parse::classify(&fixture(file)), want, "{file}");
    }
}

// ---- names -------------------------------------------------------------------

fn owner_strategy() -> impl Strategy<Value = Owner> {
    ("[a-z]{1,16}", "[A-Za-z0-9._@-]{1,63}")
        .prop_map(|(k, i)| Owner::parse(&format!("{k}:{i}")).expect("valid by construction"))
}

proptest! {
    #[test]
    fn owner_encoding_is_safe_and_reversible(o in owner_strategy()) {
        let e = encode_owner(&o);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')), "{}", e);
        prop_assert!(e != "." && e != "..");
        prop_assert!(!e.contains(':') && !e.contains('@') && !e.contains('/'));
        // Fits a dataset path with the longest rest of the layout.
        prop_assert!(e.len() <= 16 + 1 + 63 * 3);
        prop_assert_eq!(decode_owner(&e), Some(o));
    }

    #[test]
    fn owner_encoding_is_injective(a in owner_strategy(), b in owner_strategy()) {
        prop_assert_eq!(a == b, encode_owner(&a) == encode_owner(&b));
    }

    #[test]
    fn decoding_never_accepts_a_second_spelling(s in "[a-z]{1,4}-[A-Za-z0-9._-]{0,12}") {
        if let Some(o) = decode_owner(&s) {
            prop_assert_eq!(encode_owner(&o), s);
        }
    }
}

#[test]
fn owner_encoding_examples() {
    let enc = |s: &str| encode_owner(&Owner::parse(s).unwrap());
    assert_eq!(enc("telegram:123"), "telegram-123");
    assert_eq!(enc("telegram:-100200"), "telegram--100200");
    assert_eq!(enc("unix:1000"), "unix-1000");
    assert_eq!(enc("chat:a_b@c"), "chat-a_5fb_40c");
    assert_ne!(enc("chat:a_40"), enc("chat:a@"));
    assert_eq!(decode_owner("scratch"), None);
    assert_eq!(decode_owner("chat-a_41"), None, "'A' is never escaped");
    assert_eq!(decode_owner("chat-a_4"), None);
    assert_eq!(decode_owner("Chat-a"), None);
}

// ---- configuration and the real runner ---------------------------------------

#[test]
fn configuration_defaults_parsing_and_validation() {
    let c: StorageConfig = toml::from_str("").unwrap();
    assert_eq!(c, StorageConfig::default());
    assert_eq!(c.backend, Backend::Dir);
    assert_eq!(c.zfs_pool, "tank");
    assert_eq!(c.zfs_parent, "voxnix");
    assert_eq!(c.user_quota, "10G");
    assert_eq!(c.keep_snapshots, 10);
    assert_eq!(c.keep_days, 7);
    assert_eq!(c.dir_root, PathBuf::from("/var/lib/voxnix/storage"));
    assert_eq!(c.mount_root, PathBuf::from("/var/lib/voxnix/workspaces"));
    c.validate().unwrap();
    let c: StorageConfig = toml::from_str(
        "backend = \"zfs\"\nzfs_pool = \"rpool\"\nzfs_parent = \"services/voxnix\"\n\
         container_quota = \"2G\"\nuser_quota = \"none\"\n",
    )
    .unwrap();
    assert_eq!(c.backend, Backend::Zfs);
    c.validate().unwrap();
    assert_eq!(c.user_quota_bytes().unwrap(), None);
    assert_eq!(c.container_quota_bytes().unwrap(), Some(2 << 30));
    assert!(toml::from_str::<StorageConfig>("user_qouta = \"1G\"").is_err());
    assert!(toml::from_str::<StorageConfig>("backend = \"btrfs\"").is_err());
    for bad in [
        StorageConfig {
            user_quota: "ten gigs".into(),
            ..Default::default()
        },
        StorageConfig {
            container_quota: Some("-1".into()),
            ..Default::default()
        },
        StorageConfig {
            dir_root: "relative".into(),
            ..Default::default()
        },
        StorageConfig {
            mount_root: "/srv/a:b".into(),
            ..Default::default()
        },
        StorageConfig {
            zfs_pool: "tank/x".into(),
            ..Default::default()
        },
        StorageConfig {
            zfs_pool: "1tank".into(),
            ..Default::default()
        },
        StorageConfig {
            zfs_parent: "a//b".into(),
            ..Default::default()
        },
        StorageConfig {
            zfs_parent: "a@b".into(),
            ..Default::default()
        },
        StorageConfig {
            zfs_parent: "..".into(),
            ..Default::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn the_system_runner_captures_output_and_reports_a_missing_program() {
    // Not ZFS: a stand-in program that only echoes its arguments, to check the
    // process handling (arguments, output, status).
    let r = SystemZfs::new("/bin/echo".into());
    let out = r.run(vec!["list".into(), "-H".into()]).await.unwrap();
    assert!(out.success());
    assert_eq!(out.stdout, "list -H\n");
    let r = SystemZfs::new("/nonexistent/zfs".into());
    let e = r.run(vec!["list".into()]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let r = SystemZfs::new("/bin/false".into());
    let out = r.run(vec![]).await.unwrap();
    assert_eq!(out.status, Some(1));
}

// ---- one path back -------------------------------------------------------------

/// `list-tree.out` with the workspaces under `root` instead of the default
/// mount root (the fixture's own paths, moved).
fn tree_under(root: &Path) -> String {
    fixture("list-tree.out").replace("/var/lib/voxnix/workspaces", &root.display().to_string())
}

/// A workspace at `root` with snapshot S1 in its `.zfs/snapshot/`, as ZFS
/// shows it: notes/todo.md and a link out of the tree.
fn zfs_workspace(root: &Path) -> PathBuf {
    let ws = root.join("users/telegram-123/containers/dev/workspace");
    let snap = ws.join(format!(".zfs/snapshot/voxnix-{S1}"));
    std::fs::create_dir_all(snap.join("notes")).unwrap();
    std::fs::write(snap.join("notes/todo.md"), "the old list\n").unwrap();
    std::os::unix::fs::symlink("/etc", snap.join("etc-link")).unwrap();
    std::fs::write(ws.join("kept.txt"), "live\n").unwrap();
    ws
}

/// A scratch mount root with [`zfs_workspace`], the configuration that
/// mounts there, and `list-tree.out` moved under it.
fn zfs_fixture() -> (tempfile::TempDir, PathBuf, StorageConfig, String) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ws = zfs_workspace(tmp.path());
    let cfg = StorageConfig {
        mount_root: tmp.path().to_path_buf(),
        ..cfg()
    };
    let listed = tree_under(tmp.path());
    (tmp, ws, cfg, listed)
}

#[tokio::test]
async fn one_path_comes_back_from_zfs_snapshot_dir_alone_and_links_are_not_followed() {
    let (_tmp, ws, cfg, listed) = zfs_fixture();
    let s = Script::new(vec![
        (tree(C), ok(&listed)),
        (tree(C), ok(&listed)),
        (tree(C), ok(&listed)),
        (tree(C), ok(&listed)),
    ]);
    let st = storage(cfg, &s, NOW);
    let done = st
        .restore_path(&owner(), "dev", S1, "notes/todo.md", "notes/todo.md")
        .await
        .unwrap();
    assert_eq!((done.files, done.bytes), (1, 13), "{done:?}");
    assert_eq!(
        std::fs::read_to_string(ws.join("notes/todo.md")).unwrap(),
        "the old list\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("kept.txt")).unwrap(),
        "live\n"
    );
    let left: Vec<_> = std::fs::read_dir(&ws)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".voxnix-restore-"))
        .collect();
    assert!(left.is_empty(), "the staging directory is gone: {left:?}");

    // Nothing is replaced.
    let e = st
        .restore_path(&owner(), "dev", S1, "notes/todo.md", "notes/todo.md")
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::Conflict(_)), "{e:?}");
    // A link in the snapshot is never followed out of it.
    let e = st
        .restore_path(&owner(), "dev", S1, "etc-link/passwd", "passwd")
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e:?}");
    assert!(!ws.join("passwd").exists());
    // A snapshot ZFS does not list is not looked for on disk.
    let e = st
        .restore_path(&owner(), "dev", "2026-11-20T08-00-01Z-manual", "notes", "x")
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::SnapshotNotFound { .. }), "{e:?}");
    s.assert_done();
}

#[tokio::test]
async fn a_zfs_path_restore_is_refused_when_unmounted_or_too_big() {
    let (_tmp, ws, cfg, listed) = zfs_fixture();
    let ws_line = |f: &dyn Fn(&str) -> String| {
        listed
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{WS}\t")) {
                    f(l)
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let unmounted = ws_line(&|l| l.replace("\tyes\t", "\tno\t"));
    // 10 bytes available (the `available` column of the workspace).
    let full = ws_line(&|l| l.replacen("\t9663578112\t", "\t10\t", 1));
    let s = Script::new(vec![(tree(C), ok(&unmounted)), (tree(C), ok(&full))]);
    let st = storage(cfg, &s, NOW);
    let e = st
        .restore_path(&owner(), "dev", S1, "notes", "notes")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StorageError::Conflict(m) if m.contains("not mounted")),
        "{e:?}"
    );
    let e = st
        .restore_path(&owner(), "dev", S1, "notes", "notes")
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::QuotaExceeded { .. }), "{e:?}");
    assert!(
        !ws.join("notes").exists(),
        "nothing was put in the workspace"
    );
    s.assert_done();
}

/// A checkpoint's snapshot (engine/undo.rs) is never retention's: the
/// oldest snapshot here is one, and with `keep_snapshots = 1` every other
/// old one goes, that one stays.
#[tokio::test]
async fn retention_never_takes_a_checkpoint_snapshot() {
    let cp = "2026-11-19T08-00-00Z-checkpoint";
    let listed = format!(
        "{}{WS}@voxnix-{cp}\tsnapshot\t1795075200\t4096\t-\t524288000\t-\t-\t-\t-\t-\n",
        fixture("list-tree.out")
    );
    let s = Script::new(vec![
        (
            list(&["-d", "3"], "filesystem", &["tank/voxnix/users"]),
            ok(&fixture("list-inventory.out")),
        ),
        (tree(C), ok(&listed)),
        (cmd(&["destroy", &format!("{WS}@voxnix-{S2}")]), ok("")),
        (cmd(&["destroy", &format!("{WS}@voxnix-{S1}")]), ok("")),
        (tree(C), ok(&listed)),
    ]);
    let c = StorageConfig {
        keep_snapshots: 1,
        keep_days: 0,
        ..cfg()
    };
    let st = storage(c, &s, NOW);
    assert_eq!(st.apply_retention(NOW).await.unwrap(), 2);
    s.assert_done();
}
