//! The directory backend: plain directories under `dir_root`, for hosts
//! without ZFS and for the sandbox.
//!
//! ```text
//! <dir_root>/users/<owner>/                          (mode 0700)
//!   containers/<name>/workspace/                     bind-mounted at /workspace
//!   containers/<name>/snapshots/<id>/data/           a copy (reflinks where possible)
//!   containers/<name>/snapshots/<id>/snapshot.json   id, created, reason, size
//!   containers/<name>/restore.json                   only while a restore runs
//!   kept/<name>.<stamp>/                             a destroyed container's directory,
//!   kept/<name>.<stamp>/kept.json                    with its expiry
//!   .trash/                                          purges in progress
//! ```
//!
//! Every change is a rename of a complete directory, so a crash leaves either
//! the old or the new state; the few two-step changes (restore) keep a journal
//! that the next operation on the container uses to finish or undo them.
//! All functions here block; the facade runs them on tokio's blocking pool.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::model::Owner;

use super::fsutil::{MEASURE_BUDGET, copy_tree, free_space, measure, remove_tree, sync_dir_quiet};
use super::names::{
    check_container_name, decode_owner, encode_owner, kept_name, parse_kept_name,
    parse_snapshot_id, snapshot_id,
};
use super::path_restore;
use super::retention::{self, Candidate};
use super::{Inventory, Kept, PathRestored, Snapshot, StorageConfig, StorageError, Usage};

const META: &str = "snapshot.json";
const KEPT_META: &str = "kept.json";
const JOURNAL: &str = "restore.json";
const STAGING: &str = ".restore-staging";
/// Where a single path brought back from a snapshot is copied first.
const PATH_STAGING: &str = ".path-restore-staging";
const TMP_PREFIX: &str = ".tmp-";
const NAME_TRIES: u64 = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotMeta {
    id: String,
    created: u64,
    reason: String,
    /// Bytes the copy takes, measured when it was made.
    size: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptMeta {
    owner: String,
    container: String,
    id: String,
    retired: u64,
    expires: u64,
    /// Bytes the workspace took when it was retired.
    size: Option<u64>,
}

/// Written before a restore's swap; names the pre-restore snapshot that
/// receives the old workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    pre_id: String,
    created: u64,
    restored: String,
}

#[derive(Clone)]
pub struct DirBackend {
    cfg: Arc<StorageConfig>,
    /// Test hook: the name of one point where the next operation fails.
    fail_at: Arc<Mutex<Option<String>>>,
}

struct Paths {
    owner_dir: PathBuf,
    cdir: PathBuf,
    ws: PathBuf,
    snaps: PathBuf,
    kept: PathBuf,
    trash: PathBuf,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::Io { context, source }
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn is_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false)
}

impl DirBackend {
    pub fn new(cfg: Arc<StorageConfig>) -> Self {
        Self {
            cfg,
            fail_at: Arc::new(Mutex::new(None)),
        }
    }

    pub fn inject_failure(&self, point: &str) {
        *self.fail_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(point.to_string());
    }

    fn fail_point(&self, point: &str) -> Result<(), StorageError> {
        let mut g = self.fail_at.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_deref() == Some(point) {
            *g = None;
            return Err(StorageError::Io {
                context: format!("injected failure at {point}"),
                source: io::Error::other("injected"),
            });
        }
        Ok(())
    }

    fn paths(&self, owner: &Owner, name: &str) -> Paths {
        let owner_dir = self.cfg.dir_root.join("users").join(encode_owner(owner));
        let cdir = owner_dir.join("containers").join(name);
        Paths {
            ws: cdir.join("workspace"),
            snaps: cdir.join("snapshots"),
            kept: owner_dir.join("kept"),
            trash: owner_dir.join(".trash").join(name),
            cdir,
            owner_dir,
        }
    }

    pub fn workspace_path(&self, owner: &Owner, name: &str) -> PathBuf {
        self.paths(owner, name).ws
    }

    fn size_of(&self, p: &Path) -> Result<u64, StorageError> {
        measure(p, MEASURE_BUDGET)
            .map(|m| m.bytes)
            .map_err(io_err(format!("measuring {}", p.display())))
    }

    /// Refuses when `needed` more bytes would not fit the owner's or the
    /// container's quota (the daemon's own accounting).
    /// Refuses `needed` more bytes over a quota; otherwise returns the most
    /// a copy of that size may then write (what the quotas and the file
    /// system's free space leave): a tree that grows while it is copied is
    /// cut off there, not let fill the disk.
    fn check_quota(
        &self,
        owner: &Owner,
        name: &str,
        p: &Paths,
        needed: u64,
    ) -> Result<u64, StorageError> {
        let mut left = free_space(&p.cdir).unwrap_or(u64::MAX);
        if let Some(q) = self.cfg.container_quota_bytes()? {
            let used = self.size_of(&p.cdir)?;
            left = left.min(q.saturating_sub(used));
            if used.saturating_add(needed) > q {
                return Err(StorageError::QuotaExceeded {
                    what: format!("container '{name}'"),
                    used,
                    quota: q,
                    needed,
                });
            }
        }
        if let Some(q) = self.cfg.user_quota_bytes()? {
            let used = self.size_of(&p.owner_dir)?;
            left = left.min(q.saturating_sub(used));
            if used.saturating_add(needed) > q || (needed == 0 && used >= q) {
                return Err(StorageError::QuotaExceeded {
                    what: format!("owner {owner}"),
                    used,
                    quota: q,
                    needed,
                });
            }
        }
        Ok(left)
    }

    fn make_private_dir(p: &Path) -> Result<(), StorageError> {
        match fs::DirBuilder::new().mode(0o700).create(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err(format!("creating {}", p.display()))(e)),
        }
    }

    /// Finishes or undoes what a crash interrupted in this container's
    /// directory. Runs under the container's lock, so nothing is in flight.
    fn recover(&self, p: &Paths) -> Result<(), StorageError> {
        let journal_path = p.cdir.join(JOURNAL);
        if let Ok(text) = fs::read(&journal_path) {
            match serde_json::from_slice::<Journal>(&text) {
                Ok(j) => self.recover_restore(p, &j)?,
                Err(e) => {
                    // Never guess: the old workspace may be in a .tmp- directory.
                    return Err(StorageError::Misconfigured(format!(
                        "{} is damaged ({e}): a restore was interrupted and cannot be finished \
                         automatically. If {} is missing, the previous workspace is in {}/.tmp-*/data; \
                         move it back by hand, then remove the journal",
                        journal_path.display(),
                        p.ws.display(),
                        p.snaps.display()
                    )));
                }
            }
            atomic_file::remove(&journal_path).map_err(io_err("removing the restore journal"))?;
        }
        // A staging copy without a journal is an unfinished copy (of a
        // whole restore, or of a single path).
        for name in [STAGING, PATH_STAGING] {
            let staging = p.cdir.join(name);
            if exists(&staging) {
                remove_tree(&staging)?;
            }
        }
        // A kept.json in a live directory: a retire that did not happen.
        let stale = p.cdir.join(KEPT_META);
        if exists(&stale) {
            atomic_file::remove(&stale).map_err(io_err("removing a stale kept.json"))?;
        }
        // Unfinished snapshot copies.
        if let Ok(rd) = fs::read_dir(&p.snaps) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    tracing::warn!(path = %e.path().display(), "removing an unfinished snapshot");
                    remove_tree(&e.path())?;
                }
            }
        }
        Ok(())
    }

    fn recover_restore(&self, p: &Paths, j: &Journal) -> Result<(), StorageError> {
        let tmp = p.snaps.join(format!("{TMP_PREFIX}{}", j.pre_id));
        let staging = p.cdir.join(STAGING);
        if !exists(&p.ws) && is_dir(&tmp.join("data")) {
            // Crashed between the two renames: put the old workspace back.
            tracing::warn!(path = %p.ws.display(), "undoing an interrupted restore");
            fs::rename(tmp.join("data"), &p.ws).map_err(io_err("undoing a restore"))?;
        } else if exists(&p.ws) && !exists(&staging) && is_dir(&tmp.join("data")) {
            // Crashed after the swap: keep the old state as the pre-restore snapshot.
            tracing::warn!(path = %p.ws.display(), "finishing an interrupted restore");
            self.finish_snapshot(&tmp, &p.snaps, &j.pre_id, j.created, "pre-restore")?;
        }
        Ok(())
    }

    /// Writes the metadata into a complete `.tmp-<id>` and renames it to `<id>`.
    fn finish_snapshot(
        &self,
        tmp: &Path,
        snaps: &Path,
        id: &str,
        created: u64,
        reason: &str,
    ) -> Result<Snapshot, StorageError> {
        let size = self.size_of(&tmp.join("data"))?;
        let meta = SnapshotMeta {
            id: id.to_string(),
            created,
            reason: reason.to_string(),
            size: Some(size),
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| StorageError::Io {
            context: "encoding snapshot metadata".into(),
            source: io::Error::other(e),
        })?;
        atomic_file::write(&tmp.join(META), &json, 0o600)
            .map_err(io_err("writing snapshot metadata"))?;
        fs::rename(tmp, snaps.join(id)).map_err(io_err(format!("finishing snapshot {id}")))?;
        sync_dir_quiet(snaps);
        Ok(Snapshot {
            id: id.to_string(),
            created,
            reason: reason.to_string(),
            used: Some(size),
        })
    }

    fn unique_snapshot_id(&self, p: &Paths, now: u64, reason: &str) -> Option<String> {
        (0..NAME_TRIES)
            .map(|k| snapshot_id(now + k, reason))
            .find(|id| {
                !exists(&p.snaps.join(id)) && !exists(&p.snaps.join(format!("{TMP_PREFIX}{id}")))
            })
    }

    pub fn ensure_workspace(&self, owner: &Owner, name: &str) -> Result<PathBuf, StorageError> {
        let p = self.paths(owner, name);
        self.recover(&p)?;
        if is_dir(&p.ws) {
            return Ok(p.ws);
        }
        self.check_quota(owner, name, &p, 0)?;
        let users = self.cfg.dir_root.join("users");
        fs::create_dir_all(&users).map_err(io_err(format!("creating {}", users.display())))?;
        Self::make_private_dir(&p.owner_dir)?;
        // An owner's directory is theirs alone (the daemon runs as root).
        fs::set_permissions(&p.owner_dir, fs::Permissions::from_mode(0o700)).map_err(io_err(
            format!("setting the mode of {}", p.owner_dir.display()),
        ))?;
        let containers = p.owner_dir.join("containers");
        Self::make_private_dir(&containers)?;
        Self::make_private_dir(&p.cdir)?;
        Self::make_private_dir(&p.snaps)?;
        match fs::DirBuilder::new().mode(0o755).create(&p.ws) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(format!("creating {}", p.ws.display()))(e)),
        }
        sync_dir_quiet(&p.cdir);
        sync_dir_quiet(&containers);
        tracing::info!(path = %p.ws.display(), "workspace created");
        Ok(p.ws)
    }

    pub fn owner_usage(&self, owner: &Owner) -> Result<Usage, StorageError> {
        let p = self.paths(owner, "x");
        let used = self.size_of(&p.owner_dir)?;
        let quota = self.cfg.user_quota_bytes()?;
        let free = free_space(&self.cfg.dir_root);
        Ok(Usage {
            used,
            quota,
            available: min_opt(quota.map(|q| q.saturating_sub(used)), free),
        })
    }

    pub fn container_usage(&self, owner: &Owner, name: &str) -> Result<Usage, StorageError> {
        let p = self.paths(owner, name);
        if !is_dir(&p.cdir) {
            return Err(StorageError::NotFound {
                what: format!("workspace of container '{name}'"),
            });
        }
        let used = self.size_of(&p.cdir)?;
        let quota = self.cfg.container_quota_bytes()?;
        let owner_avail = self.owner_usage(owner)?.available;
        Ok(Usage {
            used,
            quota,
            available: min_opt(quota.map(|q| q.saturating_sub(used)), owner_avail),
        })
    }

    pub fn snapshot(
        &self,
        owner: &Owner,
        name: &str,
        reason: &str,
        now: u64,
    ) -> Result<Snapshot, StorageError> {
        let p = self.paths(owner, name);
        self.recover(&p)?;
        if !is_dir(&p.ws) {
            return Err(StorageError::NotFound {
                what: format!("workspace of container '{name}'"),
            });
        }
        let needed = self.size_of(&p.ws)?;
        let limit = self.check_quota(owner, name, &p, needed)?;
        Self::make_private_dir(&p.snaps)?;
        let id = self
            .unique_snapshot_id(&p, now, reason)
            .ok_or_else(|| StorageError::Busy {
                what: format!("snapshot names of container '{name}'"),
            })?;
        let tmp = p.snaps.join(format!("{TMP_PREFIX}{id}"));
        Self::make_private_dir(&tmp)?;
        let copied = copy_tree(&p.ws, &tmp.join("data"), limit)
            .map_err(io_err(format!("copying {}", p.ws.display())))
            .and_then(|stats| {
                tracing::debug!(?stats, "workspace copied");
                self.fail_point("snapshot:copied")
            })
            .and_then(|()| self.finish_snapshot(&tmp, &p.snaps, &id, now, reason));
        match copied {
            Ok(s) => {
                tracing::info!(container = name, snapshot = %id, "snapshot taken");
                Ok(s)
            }
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(e)
            }
        }
    }

    fn read_snapshots(&self, p: &Paths) -> Vec<Snapshot> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(&p.snaps) else {
            return out;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some((secs, reason)) = parse_snapshot_id(&id) else {
                continue;
            };
            if !is_dir(&e.path().join("data")) {
                continue;
            }
            let meta = fs::read(e.path().join(META))
                .ok()
                .and_then(|t| serde_json::from_slice::<SnapshotMeta>(&t).ok());
            out.push(match meta {
                Some(m) => Snapshot {
                    id,
                    created: m.created,
                    reason: m.reason,
                    used: m.size,
                },
                None => Snapshot {
                    reason: reason.to_string(),
                    id,
                    created: secs,
                    used: None,
                },
            });
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        out
    }

    pub fn snapshots(&self, owner: &Owner, name: &str) -> Result<Vec<Snapshot>, StorageError> {
        let p = self.paths(owner, name);
        if !is_dir(&p.cdir) {
            return Err(StorageError::NotFound {
                what: format!("workspace of container '{name}'"),
            });
        }
        self.recover(&p)?;
        Ok(self.read_snapshots(&p))
    }

    /// Copies the snapshot next to the workspace, then swaps by two renames
    /// under a journal: the old workspace becomes the `pre-restore` snapshot,
    /// the copy becomes the workspace. Any failure before the swap leaves the
    /// workspace untouched; a failure during it is undone.
    pub fn restore(
        &self,
        owner: &Owner,
        name: &str,
        id: &str,
        now: u64,
    ) -> Result<(), StorageError> {
        let p = self.paths(owner, name);
        self.recover(&p)?;
        let src = p.snaps.join(id).join("data");
        if !is_dir(&src) {
            return Err(StorageError::SnapshotNotFound { id: id.to_string() });
        }
        if !is_dir(&p.ws) {
            return Err(StorageError::NotFound {
                what: format!("workspace of container '{name}'"),
            });
        }
        let snap_size = self
            .read_snapshots(&p)
            .into_iter()
            .find(|s| s.id == id)
            .and_then(|s| s.used);
        let needed = match snap_size {
            Some(s) => s,
            None => self.size_of(&src)?,
        };
        let limit = self.check_quota(owner, name, &p, needed)?;
        let pre_id = self
            .unique_snapshot_id(&p, now, "pre-restore")
            .ok_or_else(|| StorageError::Busy {
                what: format!("snapshot names of container '{name}'"),
            })?;
        let staging = p.cdir.join(STAGING);
        let tmp = p.snaps.join(format!("{TMP_PREFIX}{pre_id}"));
        let journal_path = p.cdir.join(JOURNAL);

        // 1. Copy the snapshot next to the workspace (same file system).
        let prepared = copy_tree(&src, &staging, limit)
            .map_err(io_err(format!("copying snapshot {id}")))
            .and_then(|_| self.fail_point("restore:copied"))
            .and_then(|()| Self::make_private_dir(&tmp))
            .and_then(|()| {
                let j = Journal {
                    pre_id: pre_id.clone(),
                    created: now,
                    restored: id.to_string(),
                };
                let json = serde_json::to_vec(&j).map_err(|e| StorageError::Io {
                    context: "encoding the restore journal".into(),
                    source: io::Error::other(e),
                })?;
                atomic_file::write(&journal_path, &json, 0o600)
                    .map_err(io_err("writing the restore journal"))
            });
        let abandon = || {
            let _ = remove_tree(&staging);
            let _ = remove_tree(&tmp);
            let _ = atomic_file::remove(&journal_path);
        };
        if let Err(e) = prepared {
            abandon();
            return Err(e);
        }
        // 2. The old workspace moves aside...
        if let Err(e) = fs::rename(&p.ws, tmp.join("data")) {
            abandon();
            return Err(io_err(format!("moving {} aside", p.ws.display()))(e));
        }
        // ...and the copy takes its place.
        let swapped = self.fail_point("restore:swapping").and_then(|()| {
            fs::rename(&staging, &p.ws).map_err(io_err("moving the restored copy in"))
        });
        if let Err(e) = swapped {
            if let Err(undo) = fs::rename(tmp.join("data"), &p.ws) {
                // The journal stays: the next operation puts it back.
                tracing::error!(path = %p.ws.display(), "could not undo a failed restore: {undo}");
                return Err(e);
            }
            abandon();
            return Err(e);
        }
        sync_dir_quiet(&p.cdir);
        // 3. The old state is kept as a snapshot. If this fails, the journal
        //    lets the next operation finish it; the restore itself is done.
        match self.finish_snapshot(&tmp, &p.snaps, &pre_id, now, "pre-restore") {
            Ok(_) => {
                let _ = atomic_file::remove(&journal_path);
            }
            Err(e) => tracing::error!(container = name, "saving the pre-restore state: {e}"),
        }
        tracing::info!(container = name, snapshot = id, "restored");
        Ok(())
    }

    /// One file or folder of snapshot `id` (`from`, components already
    /// checked) into the live workspace at `to`. Both trees are walked by
    /// descriptor, never following a link (storage/path_restore.rs); the
    /// copy is made next to the workspace, out of the container's reach, and
    /// moved in whole without replacing anything.
    pub fn restore_path(
        &self,
        owner: &Owner,
        name: &str,
        id: &str,
        from: &[std::ffi::OsString],
        to: &[std::ffi::OsString],
    ) -> Result<PathRestored, StorageError> {
        let p = self.paths(owner, name);
        self.recover(&p)?;
        let data = p.snaps.join(id).join("data");
        if !is_dir(&data) {
            return Err(StorageError::SnapshotNotFound { id: id.to_string() });
        }
        if !is_dir(&p.ws) {
            return Err(StorageError::NotFound {
                what: format!("workspace of container '{name}'"),
            });
        }
        let from_shown = path_restore::shown(from);
        let not_found = |_| StorageError::NotFound {
            what: format!("'{from_shown}' in snapshot {id}"),
        };
        // The source is voxnix's own copy (links in it are the container's).
        let src_root = path_restore::open_root(&data).map_err(not_found)?;
        let ws_root = path_restore::open_root(&p.ws).map_err(|_| StorageError::NotFound {
            what: format!("workspace of container '{name}'"),
        })?;
        // What it takes, against the quotas (the snapshot is voxnix's own,
        // immutable, and the walk found no link on the way).
        let limit = |_: &std::os::fd::OwnedFd,
                     _: &std::ffi::OsStr,
                     looked: &nix::sys::stat::FileStat|
         -> Result<u64, StorageError> {
            let needed = if looked.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let mut at = data.clone();
                at.extend(from.iter());
                self.size_of(&at)?
            } else {
                u64::try_from(looked.st_size).unwrap_or(0)
            };
            self.check_quota(owner, name, &p, needed)
        };
        let done = path_restore::bring_back(
            &src_root,
            &ws_root,
            id,
            from,
            to,
            &limit,
            &path_restore::Staging::Beside(p.cdir.join(PATH_STAGING)),
        )?;
        tracing::info!(container = name, "path restored");
        Ok(done)
    }

    pub fn delete_snapshot(&self, owner: &Owner, name: &str, id: &str) -> Result<(), StorageError> {
        let p = self.paths(owner, name);
        self.recover(&p)?;
        let dir = p.snaps.join(id);
        if !is_dir(&dir) {
            return Err(StorageError::SnapshotNotFound { id: id.to_string() });
        }
        self.trash(&p, &dir)
    }

    /// Moves `victim` into the owner's trash (one rename), then deletes it.
    fn trash(&self, p: &Paths, victim: &Path) -> Result<(), StorageError> {
        Self::make_private_dir(&p.owner_dir.join(".trash"))?;
        Self::make_private_dir(&p.trash)?;
        let base = victim
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut target = p.trash.join(&base);
        let mut k = 0;
        while exists(&target) {
            k += 1;
            target = p.trash.join(format!("{base}.{k}"));
        }
        fs::rename(victim, &target).map_err(io_err(format!("removing {}", victim.display())))?;
        if let Some(parent) = victim.parent() {
            sync_dir_quiet(parent);
        }
        // Everything in this container's trash goes, including what an
        // interrupted purge left (this runs under the container's lock).
        remove_tree(&p.trash)
    }

    pub fn retire_workspace(
        &self,
        owner: &Owner,
        name: &str,
        now: u64,
    ) -> Result<Option<Kept>, StorageError> {
        let p = self.paths(owner, name);
        if !is_dir(&p.cdir) {
            return Ok(None);
        }
        self.recover(&p)?;
        Self::make_private_dir(&p.kept)?;
        let id = (0..NAME_TRIES)
            .map(|k| kept_name(name, now + k))
            .find(|k| !exists(&p.kept.join(k)))
            .ok_or_else(|| StorageError::Busy {
                what: format!("kept names of container '{name}'"),
            })?;
        let size = self.size_of(&p.ws).ok();
        let expires = retention::kept_expiry(now, self.cfg.keep_days);
        let meta = KeptMeta {
            owner: owner.to_string(),
            container: name.to_string(),
            id: id.clone(),
            retired: now,
            expires,
            size,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| StorageError::Io {
            context: "encoding kept metadata".into(),
            source: io::Error::other(e),
        })?;
        atomic_file::write(&p.cdir.join(KEPT_META), &json, 0o600)
            .map_err(io_err("writing kept metadata"))?;
        // The one step that retires: the whole directory moves.
        if let Err(e) = fs::rename(&p.cdir, p.kept.join(&id)) {
            let _ = atomic_file::remove(&p.cdir.join(KEPT_META));
            return Err(io_err(format!("moving {} to kept", p.cdir.display()))(e));
        }
        sync_dir_quiet(&p.kept);
        if let Some(parent) = p.cdir.parent() {
            sync_dir_quiet(parent);
        }
        tracing::info!(container = name, kept = %id, "workspace retired");
        Ok(Some(kept_from_meta(owner, &meta)))
    }

    pub fn kept(&self, owner: &Owner) -> Result<Vec<Kept>, StorageError> {
        let p = self.paths(owner, "x");
        let mut out = Vec::new();
        let rd = match fs::read_dir(&p.kept) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(format!("reading {}", p.kept.display()))(e)),
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some((container, retired)) = parse_kept_name(&id) else {
                continue;
            };
            let meta = fs::read(e.path().join(KEPT_META))
                .ok()
                .and_then(|t| serde_json::from_slice::<KeptMeta>(&t).ok())
                .unwrap_or_else(|| KeptMeta {
                    owner: owner.to_string(),
                    container: container.to_string(),
                    id: id.clone(),
                    retired,
                    expires: retention::kept_expiry(retired, self.cfg.keep_days),
                    size: None,
                });
            out.push(kept_from_meta(owner, &meta));
        }
        out.sort_by(|a, b| a.container.cmp(&b.container).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn restore_kept(
        &self,
        owner: &Owner,
        name: &str,
        from: &str,
        now: u64,
    ) -> Result<(), StorageError> {
        let p = self.paths(owner, name);
        let newest = self
            .kept(owner)?
            .into_iter()
            .filter(|k| k.container == from)
            .max_by(|a, b| a.id.cmp(&b.id))
            .ok_or_else(|| StorageError::NotFound {
                what: format!("kept workspace of container '{from}'"),
            })?;
        // Whatever is there now is kept too, never overwritten.
        if is_dir(&p.cdir) {
            self.retire_workspace(owner, name, now)?;
        }
        let containers = p.owner_dir.join("containers");
        Self::make_private_dir(&containers)?;
        fs::rename(p.kept.join(&newest.id), &p.cdir)
            .map_err(io_err(format!("bringing back {}", newest.id)))?;
        sync_dir_quiet(&containers);
        sync_dir_quiet(&p.kept);
        atomic_file::remove(&p.cdir.join(KEPT_META)).map_err(io_err("removing kept.json"))?;
        if !is_dir(&p.ws) {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&p.ws)
                .map_err(io_err(format!("creating {}", p.ws.display())))?;
        }
        tracing::info!(container = name, kept = %newest.id, "kept workspace restored");
        Ok(())
    }

    pub fn purge(&self, owner: &Owner, name: &str) -> Result<(), StorageError> {
        let p = self.paths(owner, name);
        if is_dir(&p.cdir) {
            self.trash(&p, &p.cdir)?;
        }
        self.purge_kept(owner, name)?;
        Ok(())
    }

    pub fn purge_kept(&self, owner: &Owner, name: &str) -> Result<u32, StorageError> {
        let p = self.paths(owner, name);
        let mut removed = 0;
        for k in self.kept(owner)? {
            if k.container == name {
                self.trash(&p, &p.kept.join(&k.id))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn inventory(&self) -> Result<Inventory, StorageError> {
        let mut inv = Inventory::default();
        let users = self.cfg.dir_root.join("users");
        let rd = match fs::read_dir(&users) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(inv),
            Err(e) => return Err(io_err(format!("reading {}", users.display()))(e)),
        };
        for u in rd.flatten() {
            let Some(owner) = decode_owner(&u.file_name().to_string_lossy()) else {
                continue;
            };
            if let Ok(cs) = fs::read_dir(u.path().join("containers")) {
                for c in cs.flatten() {
                    let name = c.file_name().to_string_lossy().into_owned();
                    if check_container_name(&name).is_ok() {
                        inv.containers.push((owner.clone(), name));
                    }
                }
            }
            for k in self.kept(&owner)? {
                inv.kept.push((owner.clone(), k.container, k.id, k.expires));
            }
        }
        Ok(inv)
    }

    pub fn retain(
        &self,
        owner: &Owner,
        name: &str,
        now: u64,
        tiers: &super::tiers::Tiers,
    ) -> Result<u32, StorageError> {
        let p = self.paths(owner, name);
        // Purges a crash interrupted.
        if exists(&p.trash) {
            remove_tree(&p.trash)?;
        }
        if !is_dir(&p.cdir) {
            return Ok(0);
        }
        self.recover(&p)?;
        let candidates: Vec<Candidate> = self
            .read_snapshots(&p)
            .into_iter()
            .map(|s| Candidate {
                id: s.id,
                created: s.created,
                reason: s.reason,
                pinned: false,
            })
            .collect();
        let mut removed = 0;
        for id in retention::to_remove(
            &candidates,
            self.cfg.keep_snapshots,
            self.cfg.keep_days,
            tiers,
            now,
        ) {
            match self.trash(&p, &p.snaps.join(&id)) {
                Ok(()) => {
                    tracing::info!(container = name, snapshot = %id, "retention: removed");
                    removed += 1;
                }
                Err(e) => tracing::warn!(container = name, snapshot = %id, "retention: {e}"),
            }
        }
        Ok(removed)
    }

    pub fn remove_kept(
        &self,
        owner: &Owner,
        name: &str,
        kept_id: &str,
    ) -> Result<(), StorageError> {
        let p = self.paths(owner, name);
        let dir = p.kept.join(kept_id);
        if is_dir(&dir) {
            self.trash(&p, &dir)?;
        }
        Ok(())
    }
}

fn kept_from_meta(owner: &Owner, m: &KeptMeta) -> Kept {
    Kept {
        owner: owner.clone(),
        container: m.container.clone(),
        id: m.id.clone(),
        snapshot: Snapshot {
            id: snapshot_id(m.retired, "pre-destroy"),
            created: m.retired,
            reason: "pre-destroy".into(),
            used: m.size,
        },
        expires: m.expires,
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
