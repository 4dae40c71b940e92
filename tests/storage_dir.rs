//! The directory storage backend, for real: workspaces, snapshots, restores,
//! retire/kept/purge and retention on real directories in a temporary
//! directory.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use voxnix::engine::Owner;
use voxnix::storage::{Backend, Storage, StorageConfig, StorageError};

/// 2026-11-27T10:00:00Z
const T0: u64 = 1_795_773_600;
const DAY: u64 = 86_400;

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    clock: Arc<AtomicU64>,
    st: Storage,
}

impl Env {
    fn new(tweak: impl FnOnce(&mut StorageConfig)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("storage");
        let mut cfg = StorageConfig {
            backend: Backend::Dir,
            dir_root: root.clone(),
            ..StorageConfig::default()
        };
        tweak(&mut cfg);
        cfg.validate().unwrap();
        let clock = Arc::new(AtomicU64::new(T0));
        let c = clock.clone();
        let st = Storage::new(cfg).with_clock(Arc::new(move || c.load(Ordering::SeqCst)));
        Self {
            _tmp: tmp,
            root,
            clock,
            st,
        }
    }

    fn advance(&self, secs: u64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    fn user_dir(&self) -> PathBuf {
        self.root.join("users/telegram-123")
    }
}

fn owner() -> Owner {
    Owner::parse("telegram:123").unwrap()
}

/// Every path below `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn ensure_workspace_is_idempotent_and_private() {
    let env = Env::new(|_| {});
    let p1 = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(p1.join("keep.txt"), "mine").unwrap();
    let p2 = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    assert_eq!(p1, p2);
    assert_eq!(p1, env.user_dir().join("containers/dev/workspace"));
    assert_eq!(env.st.workspace_path(&owner(), "dev").unwrap(), p1);
    assert_eq!(fs::read_to_string(p1.join("keep.txt")).unwrap(), "mine");
    let mode = fs::metadata(env.user_dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "an owner's directory is theirs alone");
    assert!(p1.is_dir());
}

#[tokio::test]
async fn snapshot_change_restore_gives_the_old_content_back_and_keeps_the_new_as_a_snapshot() {
    let env = Env::new(|_| {});
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("notes.txt"), "version 1").unwrap();
    fs::create_dir(ws.join("sub")).unwrap();
    fs::write(ws.join("sub/a"), "a1").unwrap();
    let snap = env.st.snapshot(&owner(), "dev", "manual").await.unwrap();
    assert_eq!(snap.id, "2026-11-27T10-00-00Z-manual");
    assert_eq!(snap.reason, "manual");
    assert_eq!(snap.created, T0);
    assert!(snap.used.is_some());

    env.advance(60);
    fs::write(ws.join("notes.txt"), "version 2").unwrap();
    fs::remove_file(ws.join("sub/a")).unwrap();
    fs::write(ws.join("new.txt"), "new").unwrap();

    env.advance(60);
    env.st.restore(&owner(), "dev", &snap.id).await.unwrap();
    assert_eq!(
        fs::read_to_string(ws.join("notes.txt")).unwrap(),
        "version 1"
    );
    assert_eq!(fs::read_to_string(ws.join("sub/a")).unwrap(), "a1");
    assert!(!ws.join("new.txt").exists());

    // Nothing was lost: the state before the restore is a snapshot now.
    let snaps = env.st.snapshots(&owner(), "dev").await.unwrap();
    let ids: Vec<&str> = snaps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "2026-11-27T10-00-00Z-manual",
            "2026-11-27T10-02-00Z-pre-restore"
        ]
    );
    // ...so the restore can be undone.
    env.st.restore(&owner(), "dev", &snaps[1].id).await.unwrap();
    assert_eq!(
        fs::read_to_string(ws.join("notes.txt")).unwrap(),
        "version 2"
    );
    assert!(ws.join("new.txt").exists());
    // No staging, journal or temporary directory is left behind.
    let left: Vec<String> = listing(&env.user_dir().join("containers/dev"))
        .into_iter()
        .filter(|p| p.contains(".tmp-") || p.contains("restore") && !p.contains("pre-restore"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn snapshots_preserve_modes_owners_links_and_times() {
    let env = Env::new(|_| {});
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("script.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(ws.join("script.sh"), fs::Permissions::from_mode(0o4751)).unwrap();
    fs::write(ws.join("data"), vec![7u8; 100_000]).unwrap();
    fs::hard_link(ws.join("data"), ws.join("data-link")).unwrap();
    symlink("data", ws.join("rel-link")).unwrap();
    symlink("/nonexistent/target", ws.join("dangling")).unwrap();
    fs::create_dir(ws.join("ro")).unwrap();
    fs::write(ws.join("ro/inside"), "x").unwrap();
    fs::set_permissions(ws.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::create_dir(ws.join("empty")).unwrap();
    nix::unistd::mkfifo(
        &ws.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let is_root = nix::unistd::geteuid().is_root();
    if is_root {
        std::os::unix::fs::lchown(ws.join("data"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(ws.join("rel-link"), Some(4321), Some(8765)).unwrap();
    }
    // A fixed old mtime, to see it survive.
    let old = nix::sys::time::TimeSpec::new(1_000_000_000, 123_456_789);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &ws.join("data"),
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let before = fs::symlink_metadata(ws.join("data")).unwrap();

    let snap = env.st.snapshot(&owner(), "dev", "manual").await.unwrap();
    // Wreck everything, then restore.
    fs::set_permissions(ws.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    for e in fs::read_dir(&ws).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    env.st.restore(&owner(), "dev", &snap.id).await.unwrap();

    let m = fs::symlink_metadata(ws.join("script.sh")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4751, "set-uid bit and mode kept");
    let d = fs::symlink_metadata(ws.join("data")).unwrap();
    assert_eq!(d.mtime(), 1_000_000_000);
    assert_eq!(d.mtime_nsec(), 123_456_789);
    assert_eq!((d.uid(), d.gid()), (before.uid(), before.gid()));
    let l = fs::symlink_metadata(ws.join("data-link")).unwrap();
    assert_eq!(l.ino(), d.ino(), "hard links stay hard links");
    assert_eq!(d.nlink(), 2);
    assert_eq!(
        fs::read_link(ws.join("rel-link")).unwrap(),
        PathBuf::from("data")
    );
    assert_eq!(
        fs::read_link(ws.join("dangling")).unwrap(),
        PathBuf::from("/nonexistent/target")
    );
    if is_root {
        let s = fs::symlink_metadata(ws.join("rel-link")).unwrap();
        assert_eq!((s.uid(), s.gid()), (4321, 8765), "a symlink's own owner");
        assert_eq!((d.uid(), d.gid()), (1234, 5678));
    }
    assert_eq!(
        fs::metadata(ws.join("ro")).unwrap().permissions().mode() & 0o777,
        0o555
    );
    assert_eq!(fs::read_to_string(ws.join("ro/inside")).unwrap(), "x");
    assert!(ws.join("empty").is_dir());
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(ws.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(fs::read(ws.join("data")).unwrap(), vec![7u8; 100_000]);

    // A read-only directory inside snapshots does not block removing them.
    env.st.purge(&owner(), "dev").await.unwrap();
    assert!(!env.user_dir().join("containers/dev").exists());
}

#[tokio::test]
async fn a_new_workspace_over_quota_is_refused_with_numbers() {
    let env = Env::new(|c| c.user_quota = "1M".into());
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("big"), vec![1u8; 2 << 20]).unwrap();
    let e = env.st.ensure_workspace(&owner(), "web").await.unwrap_err();
    let StorageError::QuotaExceeded { used, quota, .. } = &e else {
        panic!("{e:?}");
    };
    assert!(*used >= 2 << 20, "{used}");
    assert_eq!(*quota, 1 << 20);
    let m = e.to_string();
    assert!(m.contains("owner telegram:123"), "{m}");
    assert!(m.contains("used of 1.0 MiB"), "{m}");
    // The existing workspace keeps working (accounting happens at create).
    env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    // Usage shows it.
    let u = env.st.owner_usage(&owner()).await.unwrap();
    assert!(u.used >= 2 << 20);
    assert_eq!(u.quota, Some(1 << 20));
    assert_eq!(u.available, Some(0));
    assert!(u.human().contains("used of 1.0 MiB"), "{}", u.human());
}

#[tokio::test]
async fn snapshots_and_restores_that_do_not_fit_are_refused() {
    let env = Env::new(|c| c.user_quota = "3M".into());
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("big"), vec![1u8; 1 << 20]).unwrap();
    let snap = env.st.snapshot(&owner(), "dev", "manual").await.unwrap();
    fs::write(ws.join("big2"), vec![2u8; 1 << 20]).unwrap();
    // 2 MiB live + 1 MiB snapshot + 2 MiB more for a copy > 3 MiB.
    let e = env
        .st
        .snapshot(&owner(), "dev", "manual")
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, StorageError::QuotaExceeded { .. }), "{m}");
    assert!(m.contains("this needs 2.0 MiB more"), "{m}");
    assert_eq!(env.st.snapshots(&owner(), "dev").await.unwrap().len(), 1);
    // A restore needs room for its copy too; refused, nothing changes.
    fs::write(ws.join("big3"), vec![3u8; 1 << 20]).unwrap();
    let e = env.st.restore(&owner(), "dev", &snap.id).await.unwrap_err();
    assert!(matches!(e, StorageError::QuotaExceeded { .. }), "{e:?}");
    assert!(ws.join("big3").exists());
}

#[tokio::test]
async fn a_container_quota_limits_its_snapshots() {
    let env = Env::new(|c| c.container_quota = Some("1536K".into()));
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("big"), vec![1u8; 1 << 20]).unwrap();
    let e = env
        .st
        .snapshot(&owner(), "dev", "manual")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StorageError::QuotaExceeded { what, .. } if what == "container 'dev'"),
        "{e:?}"
    );
    let u = env.st.container_usage(&owner(), "dev").await.unwrap();
    assert_eq!(u.quota, Some(1536 << 10));
    assert!(u.used >= 1 << 20);
}

#[tokio::test]
async fn retire_keeps_everything_restore_kept_brings_it_back_purge_removes_it() {
    let env = Env::new(|_| {});
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("pet.txt"), "precious").unwrap();
    let snap = env.st.snapshot(&owner(), "dev", "manual").await.unwrap();
    fs::write(ws.join("pet.txt"), "precious v2").unwrap();

    env.advance(3600);
    let kept = env
        .st
        .retire_workspace(&owner(), "dev")
        .await
        .unwrap()
        .expect("a workspace was there");
    assert_eq!(kept.container, "dev");
    assert_eq!(kept.owner, owner());
    assert_eq!(kept.id, "dev.2026-11-27T11-00-00Z");
    assert_eq!(kept.expires, T0 + 3600 + 7 * DAY);
    assert_eq!(kept.snapshot.reason, "pre-destroy");
    assert!(!ws.exists(), "the live workspace is gone");
    assert_eq!(env.st.kept(&owner()).await.unwrap(), vec![kept.clone()]);
    // Retiring what is not there is nothing.
    assert_eq!(
        env.st.retire_workspace(&owner(), "dev").await.unwrap(),
        None
    );

    // Recreate, and the person accepts the offer to restore.
    env.advance(60);
    env.st.restore_kept(&owner(), "dev").await.unwrap();
    let ws2 = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    assert_eq!(ws2, ws);
    assert_eq!(
        fs::read_to_string(ws.join("pet.txt")).unwrap(),
        "precious v2"
    );
    let snaps = env.st.snapshots(&owner(), "dev").await.unwrap();
    assert_eq!(snaps.iter().map(|s| &s.id).collect::<Vec<_>>(), [&snap.id]);
    assert!(env.st.kept(&owner()).await.unwrap().is_empty());

    // Purge: everything of that name goes.
    env.advance(60);
    env.st.retire_workspace(&owner(), "dev").await.unwrap();
    env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    env.st.purge(&owner(), "dev").await.unwrap();
    assert!(!env.user_dir().join("containers/dev").exists());
    assert!(env.st.kept(&owner()).await.unwrap().is_empty());
    let left: Vec<String> = listing(&env.user_dir())
        .into_iter()
        .filter(|p| p.contains("dev"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Purging nothing is fine.
    env.st.purge(&owner(), "dev").await.unwrap();
    let e = env.st.restore_kept(&owner(), "dev").await.unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn restore_kept_never_overwrites_a_live_workspace() {
    let env = Env::new(|_| {});
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("f"), "old life").unwrap();
    env.st.retire_workspace(&owner(), "dev").await.unwrap();
    env.advance(10);
    // Recreated without restoring, and used.
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("f"), "new life").unwrap();
    env.advance(10);
    env.st.restore_kept(&owner(), "dev").await.unwrap();
    assert_eq!(fs::read_to_string(ws.join("f")).unwrap(), "old life");
    // The new life is kept in turn.
    let kept = env.st.kept(&owner()).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].id, "dev.2026-11-27T10-00-20Z");
    env.st.restore_kept(&owner(), "dev").await.unwrap();
    assert_eq!(fs::read_to_string(ws.join("f")).unwrap(), "new life");
    // purge_kept leaves the live workspace alone.
    assert_eq!(env.st.purge_kept(&owner(), "dev").await.unwrap(), 1);
    assert_eq!(fs::read_to_string(ws.join("f")).unwrap(), "new life");
    assert!(env.st.kept(&owner()).await.unwrap().is_empty());
}

#[tokio::test]
async fn retention_by_count_never_the_newest() {
    let env = Env::new(|c| {
        c.keep_snapshots = 2;
        c.keep_days = 0;
    });
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        fs::write(ws.join("n"), format!("{i}")).unwrap();
        ids.push(env.st.snapshot(&owner(), "dev", "manual").await.unwrap().id);
        env.advance(60);
    }
    let removed = env.st.apply_retention(T0 + 3600).await.unwrap();
    assert_eq!(removed, 2);
    let left: Vec<String> = env
        .st
        .snapshots(&owner(), "dev")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, ids[2..]);
    // Idempotent.
    assert_eq!(env.st.apply_retention(T0 + 3600).await.unwrap(), 0);
}

#[tokio::test]
async fn retention_by_age_keeps_the_latest_and_expires_kept_workspaces() {
    let env = Env::new(|c| {
        c.keep_snapshots = 0;
        c.keep_days = 7;
    });
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("n"), "x").unwrap();
    env.st.snapshot(&owner(), "dev", "manual").await.unwrap();
    env.advance(2 * DAY);
    let second = env
        .st
        .snapshot(&owner(), "dev", "pre-update")
        .await
        .unwrap();
    // Another container, destroyed now: kept for 7 days.
    env.st.ensure_workspace(&owner(), "web").await.unwrap();
    let kept = env
        .st
        .retire_workspace(&owner(), "web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.expires, T0 + 2 * DAY + 7 * DAY);

    // 8 days after the first: it goes, the second stays (younger).
    assert_eq!(env.st.apply_retention(T0 + 8 * DAY).await.unwrap(), 1);
    let left = env.st.snapshots(&owner(), "dev").await.unwrap();
    assert_eq!(left, vec![second.clone()]);
    assert_eq!(env.st.kept(&owner()).await.unwrap().len(), 1);

    // A year later: the latest snapshot of a live workspace still stays;
    // the kept workspace has expired.
    assert_eq!(env.st.apply_retention(T0 + 365 * DAY).await.unwrap(), 1);
    assert_eq!(
        env.st.snapshots(&owner(), "dev").await.unwrap(),
        vec![second]
    );
    assert!(env.st.kept(&owner()).await.unwrap().is_empty());
    assert!(!env.user_dir().join("kept").join(&kept.id).exists());
}

#[tokio::test]
async fn a_failing_restore_leaves_the_workspace_as_it_was() {
    let env = Env::new(|_| {});
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("f"), "snapshotted").unwrap();
    let snap = env.st.snapshot(&owner(), "dev", "manual").await.unwrap();
    fs::write(ws.join("f"), "current").unwrap();
    let cdir = env.user_dir().join("containers/dev");
    let before = listing(&cdir);

    for point in ["restore:copied", "restore:swapping"] {
        env.advance(1);
        env.st.inject_failure(point);
        let e = env.st.restore(&owner(), "dev", &snap.id).await.unwrap_err();
        assert!(e.to_string().contains("injected"), "{point}: {e}");
        assert_eq!(
            fs::read_to_string(ws.join("f")).unwrap(),
            "current",
            "{point}"
        );
        assert_eq!(listing(&cdir), before, "{point}: nothing left behind");
        assert_eq!(
            env.st.snapshots(&owner(), "dev").await.unwrap(),
            vec![snap.clone()]
        );
    }
    // A failing snapshot copy leaves no half snapshot either.
    env.st.inject_failure("snapshot:copied");
    assert!(env.st.snapshot(&owner(), "dev", "manual").await.is_err());
    assert_eq!(listing(&cdir), before);
    // Unknown snapshots are reported as such.
    let e = env
        .st
        .restore(&owner(), "dev", "2020-01-01T00-00-00Z-manual")
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::SnapshotNotFound { .. }), "{e:?}");
    assert_eq!(fs::read_to_string(ws.join("f")).unwrap(), "current");
    // And then the restore works.
    env.st.restore(&owner(), "dev", &snap.id).await.unwrap();
    assert_eq!(fs::read_to_string(ws.join("f")).unwrap(), "snapshotted");
}

#[tokio::test]
async fn a_restore_cut_off_by_a_crash_is_undone_by_the_next_operation() {
    let env = Env::new(|_| {});
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("f"), "current").unwrap();
    let cdir = env.user_dir().join("containers/dev");
    // The state between the two renames of a restore: the journal written,
    // the old workspace moved into the pre-restore snapshot's place, the
    // restored copy not moved in yet (see src/storage/dir.rs).
    let pre = "2026-11-27T10-00-00Z-pre-restore";
    let tmp = cdir.join("snapshots").join(format!(".tmp-{pre}"));
    fs::create_dir_all(&tmp).unwrap();
    fs::rename(&ws, tmp.join("data")).unwrap();
    fs::create_dir(cdir.join(".restore-staging")).unwrap();
    fs::write(cdir.join(".restore-staging/f"), "restored").unwrap();
    fs::write(
        cdir.join("restore.json"),
        format!(r#"{{"pre_id":"{pre}","created":{T0},"restored":"x"}}"#),
    )
    .unwrap();
    assert!(!ws.exists());

    assert!(env.st.snapshots(&owner(), "dev").await.unwrap().is_empty());
    assert_eq!(fs::read_to_string(ws.join("f")).unwrap(), "current");
    assert_eq!(listing(&cdir), ["snapshots", "workspace", "workspace/f"]);
}

#[tokio::test]
async fn a_restore_crashed_after_the_swap_is_finished_by_the_next_operation() {
    let env = Env::new(|_| {});
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("f"), "restored").unwrap();
    let cdir = env.user_dir().join("containers/dev");
    let pre = "2026-11-27T10-00-00Z-pre-restore";
    let tmp = cdir.join("snapshots").join(format!(".tmp-{pre}"));
    fs::create_dir_all(tmp.join("data")).unwrap();
    fs::write(tmp.join("data/f"), "before the restore").unwrap();
    fs::write(
        cdir.join("restore.json"),
        format!(r#"{{"pre_id":"{pre}","created":{T0},"restored":"x"}}"#),
    )
    .unwrap();
    let snaps = env.st.snapshots(&owner(), "dev").await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].id, pre);
    assert_eq!(fs::read_to_string(ws.join("f")).unwrap(), "restored");
    env.st.restore(&owner(), "dev", pre).await.unwrap();
    assert_eq!(
        fs::read_to_string(ws.join("f")).unwrap(),
        "before the restore"
    );
}

#[tokio::test]
async fn concurrent_snapshots_of_one_container_get_distinct_ids() {
    let env = Env::new(|_| {});
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("f"), "x").unwrap();
    let o = owner();
    let (a, b, c) = tokio::join!(
        env.st.snapshot(&o, "dev", "manual"),
        env.st.snapshot(&o, "dev", "manual"),
        env.st.snapshot(&o, "dev", "manual"),
    );
    let mut ids = vec![a.unwrap().id, b.unwrap().id, c.unwrap().id];
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(env.st.snapshots(&owner(), "dev").await.unwrap().len(), 3);
}

#[tokio::test]
async fn usage_counts_allocated_blocks_and_hard_links_once() {
    let env = Env::new(|c| c.user_quota = "none".into());
    let ws = env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    fs::write(ws.join("a"), vec![1u8; 1 << 20]).unwrap();
    let u1 = env.st.container_usage(&owner(), "dev").await.unwrap();
    assert!(
        u1.used >= 1 << 20 && u1.used < (1 << 20) + (64 << 10),
        "{}",
        u1.used
    );
    fs::hard_link(ws.join("a"), ws.join("b")).unwrap();
    symlink("/", ws.join("root-link")).unwrap();
    let u2 = env.st.container_usage(&owner(), "dev").await.unwrap();
    assert!(u2.used < u1.used + 8192, "{} vs {}", u2.used, u1.used);
    let o = env.st.owner_usage(&owner()).await.unwrap();
    assert_eq!(o.quota, None);
    assert!(o.available.is_some(), "free space of the file system");
    assert!(o.human().contains("no quota"), "{}", o.human());
    let e = env.st.container_usage(&owner(), "nope").await.unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn deleting_a_snapshot() {
    let env = Env::new(|_| {});
    env.st.ensure_workspace(&owner(), "dev").await.unwrap();
    let s = env.st.snapshot(&owner(), "dev", "manual").await.unwrap();
    env.st
        .delete_snapshot(&owner(), "dev", &s.id)
        .await
        .unwrap();
    assert!(env.st.snapshots(&owner(), "dev").await.unwrap().is_empty());
    let e = env
        .st
        .delete_snapshot(&owner(), "dev", &s.id)
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::SnapshotNotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn owners_are_kept_apart() {
    let env = Env::new(|_| {});
    let a = Owner::parse("chat:a_b@c").unwrap();
    let b = Owner::parse("chat:a_5fb_40c").unwrap();
    let wa = env.st.ensure_workspace(&a, "dev").await.unwrap();
    let wb = env.st.ensure_workspace(&b, "dev").await.unwrap();
    assert_ne!(wa, wb);
    assert!(
        !wa.to_string_lossy().contains(':'),
        "nspawn --bind= splits on ':'"
    );
    env.st.retire_workspace(&a, "dev").await.unwrap();
    assert_eq!(env.st.kept(&a).await.unwrap().len(), 1);
    assert!(env.st.kept(&b).await.unwrap().is_empty());
}

/// Reflinks: only where the file system can share blocks (btrfs, XFS, ...).
/// Runs when `VOXNIX_TEST_REFLINK_DIR` names a directory on such a file
/// system (e.g. a loop-mounted btrfs image); skipped otherwise.
#[tokio::test]
async fn snapshots_share_blocks_where_the_file_system_can() {
    let Some(dir) = std::env::var_os("VOXNIX_TEST_REFLINK_DIR") else {
        eprintln!("skipped: set VOXNIX_TEST_REFLINK_DIR to a directory on btrfs or XFS");
        return;
    };
    let tmp = tempfile::tempdir_in(dir).unwrap();
    let cfg = StorageConfig {
        backend: Backend::Dir,
        dir_root: tmp.path().join("storage"),
        user_quota: "none".into(),
        ..StorageConfig::default()
    };
    let st = Storage::new(cfg);
    let ws = st.ensure_workspace(&owner(), "dev").await.unwrap();
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(ws.join("big"), &data).unwrap();
    nix::unistd::sync();
    let free = |p: &Path| {
        let s = nix::sys::statvfs::statvfs(p).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    };
    let before = free(&ws);
    let snap = st.snapshot(&owner(), "dev", "manual").await.unwrap();
    nix::unistd::sync();
    let after = free(&ws);
    assert!(
        before.saturating_sub(after) < 16 << 20,
        "a 64 MiB file took {} MiB more: not reflinked",
        (before - after) >> 20
    );
    fs::write(ws.join("big"), b"changed").unwrap();
    st.restore(&owner(), "dev", &snap.id).await.unwrap();
    assert_eq!(fs::read(ws.join("big")).unwrap(), data);
}
