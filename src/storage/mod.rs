//! Storage: each container's persistent `/workspace`, kept on the host
//! outside the container, with quotas, snapshots, retention, and destroy that
//! never loses data by surprise. Two backends, chosen by configuration:
//!
//! - [`Backend::Zfs`]: one dataset per workspace, driven through the `zfs`
//!   command ([`zfs`]); quotas enforced by ZFS, snapshots are ZFS snapshots.
//! - [`Backend::Dir`]: plain directories ([`dir`]); quotas accounted by the
//!   daemon when it creates, snapshots and restores; snapshots are copies
//!   (reflinks where the file system can).
//!
//! [`Storage`] is the interface the engine uses. Operations on one container
//! are serialized by a lock per (owner, container). See `docs/storage.md`.

pub mod dir;
mod fsutil;
pub mod names;
pub mod path_restore;
pub mod retention;
pub mod tiers;
pub mod zfs;
pub mod zfs_parse;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::Owner;

pub use names::{decode_owner, encode_owner, human_bytes, parse_size};
pub use zfs::{SystemZfs, ZfsOutput, ZfsRunner};

/// Which backend holds the workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Plain directories under `dir_root`.
    #[default]
    Dir,
    /// ZFS datasets under `<zfs_pool>/<zfs_parent>`.
    Zfs,
}

/// The `[storage]` part of the daemon's configuration. Every key has a
/// default; unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    /// dir backend: where the owners' directories are.
    pub dir_root: PathBuf,
    /// zfs backend: the pool.
    pub zfs_pool: String,
    /// zfs backend: the dataset under the pool that holds everything
    /// (`tank/voxnix/users/...`); may have several parts (`a/b`).
    pub zfs_parent: String,
    /// zfs backend: where `<zfs_pool>/<zfs_parent>` is mounted; every dataset
    /// below inherits its place under it.
    pub mount_root: PathBuf,
    /// Each owner's limit for everything they have (workspaces, snapshots,
    /// kept workspaces), as a size (`10G`) or `none`.
    pub user_quota: String,
    /// An optional limit per container (its workspace and snapshots).
    pub container_quota: Option<String>,
    /// Retention: snapshots kept per container, newest first (0: no limit).
    pub keep_snapshots: u32,
    /// Retention: days a snapshot is kept (0: no limit); also how long a
    /// destroyed container's workspace is kept (0: until purged).
    pub keep_days: u32,
    /// Scheduled snapshots and their tiered retention, e.g.
    /// `hourly=24,daily=7,weekly=4,monthly=6`; empty: no schedule. The
    /// schedule's snapshots are kept by these tiers, not by `keep_snapshots`
    /// and `keep_days` (storage/tiers.rs).
    pub snapshot_schedule: String,
    /// The most a container's own schedule may keep of each tier (what an
    /// owner may ask for with `voxnix schedule`).
    pub snapshot_schedule_max: String,
    /// Checkpoints kept per container (engine/undo.rs), newest first; the
    /// oldest go with their snapshots past this (0: no limit). Retention
    /// and the schedule never prune a checkpoint's snapshot.
    pub checkpoints_keep: u32,
    /// The `zfs` program.
    pub zfs_bin: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Dir,
            dir_root: PathBuf::from("/var/lib/voxnix/storage"),
            zfs_pool: "tank".into(),
            zfs_parent: "voxnix".into(),
            mount_root: PathBuf::from("/var/lib/voxnix/workspaces"),
            user_quota: "10G".into(),
            container_quota: None,
            keep_snapshots: 10,
            keep_days: 7,
            snapshot_schedule: String::new(),
            snapshot_schedule_max: "hourly=48,daily=31,weekly=12,monthly=24".into(),
            checkpoints_keep: 20,
            zfs_bin: PathBuf::from("zfs"),
        }
    }
}

impl StorageConfig {
    /// Checks the values (the daemon calls this at start-up, so a mistake is
    /// reported once and clearly rather than at the first create).
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |m: String| Err(StorageError::InvalidArgument(format!("storage: {m}")));
        self.user_quota_bytes()?;
        self.container_quota_bytes()?;
        for (key, p) in [
            ("dir_root", &self.dir_root),
            ("mount_root", &self.mount_root),
        ] {
            let s = p.to_string_lossy();
            if !p.is_absolute() || p.parent().is_none() {
                return bad(format!(
                    "{key} must be an absolute path below '/', not '{s}'"
                ));
            }
            // The workspace path goes into `systemd-nspawn --bind=SRC:DST`.
            if s.contains(':') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(format!(
                    "{key} '{}' must not contain ':', spaces or control characters",
                    s.escape_default()
                ));
            }
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        };
        if !component_ok(&self.zfs_pool) || !self.zfs_pool.as_bytes()[0].is_ascii_alphabetic() {
            return bad(format!(
                "zfs_pool '{}' is not a pool name (a letter, then letters, digits, - _ . :)",
                self.zfs_pool.escape_default()
            ));
        }
        if !self.zfs_parent.split('/').all(component_ok) {
            return bad(format!(
                "zfs_parent '{}' is not a dataset path (parts of letters, digits, - _ . : \
                 separated by '/')",
                self.zfs_parent.escape_default()
            ));
        }
        if self.zfs_bin.as_os_str().is_empty() {
            return bad("zfs_bin must not be empty".into());
        }
        self.tiers()?;
        self.tiers_max()?;
        Ok(())
    }

    /// The caps of containers' own schedules.
    pub fn tiers_max(&self) -> Result<tiers::Tiers, StorageError> {
        tiers::Tiers::parse(&self.snapshot_schedule_max).map_err(|e| {
            StorageError::InvalidArgument(format!("storage: snapshot_schedule_max: {e}"))
        })
    }

    /// The schedule's tiers (none on: no schedule).
    pub fn tiers(&self) -> Result<tiers::Tiers, StorageError> {
        tiers::Tiers::parse(&self.snapshot_schedule)
            .map_err(|e| StorageError::InvalidArgument(format!("storage: snapshot_schedule: {e}")))
    }

    pub fn user_quota_bytes(&self) -> Result<Option<u64>, StorageError> {
        parse_size(&self.user_quota).map_err(|e| prefix_err("user_quota", e))
    }

    pub fn container_quota_bytes(&self) -> Result<Option<u64>, StorageError> {
        match &self.container_quota {
            None => Ok(None),
            Some(s) => parse_size(s).map_err(|e| prefix_err("container_quota", e)),
        }
    }
}

fn prefix_err(key: &str, e: StorageError) -> StorageError {
    StorageError::InvalidArgument(format!("storage.{key}: {e}"))
}

/// Space used and left, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Everything counted against the quota (snapshots included).
    pub used: u64,
    /// What can still be written, when known (the smaller of what the quota
    /// and the file system or pool leave).
    pub available: Option<u64>,
    /// `None`: no quota.
    pub quota: Option<u64>,
}

impl Usage {
    pub fn used_human(&self) -> String {
        human_bytes(self.used)
    }

    /// `10.0 GiB`, or `none`.
    pub fn quota_human(&self) -> String {
        self.quota.map(human_bytes).unwrap_or_else(|| "none".into())
    }

    /// `8.8 GiB`, or `unknown`.
    pub fn available_human(&self) -> String {
        self.available
            .map(human_bytes)
            .unwrap_or_else(|| "unknown".into())
    }

    /// `1.2 GiB used of 10.0 GiB (8.8 GiB available)`, or
    /// `1.2 GiB used, no quota (40.0 GiB available)`.
    pub fn human(&self) -> String {
        let mut s = match self.quota {
            Some(q) => format!("{} used of {}", self.used_human(), human_bytes(q)),
            None => format!("{} used, no quota", self.used_human()),
        };
        if let Some(a) = self.available {
            s.push_str(&format!(" ({} available)", human_bytes(a)));
        }
        s
    }
}

/// A restore point of one container's workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `<UTC time>-<reason>`, e.g. `2026-11-27T10-00-00Z-manual`.
    pub id: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// `manual`, `scheduled`, `checkpoint`, `pre-destroy`, `pre-restore`, ...
    pub reason: String,
    /// Bytes the snapshot holds on its own, when known (zfs: its `used`;
    /// dir: the size of the copy).
    pub used: Option<u64>,
}

/// What `restore_path` brought back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathRestored {
    pub snapshot: String,
    pub path: String,
    pub to: String,
    pub files: u64,
    pub bytes: u64,
}

/// What a destroyed container left: its whole workspace (with its snapshots),
/// kept until `expires` unless purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub owner: Owner,
    pub container: String,
    /// `<container>.<UTC time of the destroy>`; unique per owner.
    pub id: String,
    /// The final state (the `pre-destroy` snapshot).
    pub snapshot: Snapshot,
    /// Seconds since the epoch; `u64::MAX` when kept until purged.
    pub expires: u64,
}

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{}", quota_message(what, *used, *quota, *needed))]
    QuotaExceeded {
        what: String,
        used: u64,
        quota: u64,
        needed: u64,
    },
    #[error("ZFS pool '{pool}' is not available: {hint}")]
    PoolMissing { pool: String, hint: String },
    #[error(
        "{what} is busy: something still uses it (is the container running? stop it first), \
         try again"
    )]
    Busy { what: String },
    #[error("no snapshot '{id}' for this container; list its snapshots to see which exist")]
    SnapshotNotFound { id: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("{0}")]
    InvalidArgument(String),
    /// Something is in the way (a path already there).
    #[error("{0}")]
    Conflict(String),
    /// The host's storage does not look like the configuration says.
    #[error("{0}")]
    Misconfigured(String),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn quota_message(what: &str, used: u64, quota: u64, needed: u64) -> String {
    let mut s = format!(
        "quota exceeded for {what}: {} used of {}",
        human_bytes(used),
        human_bytes(quota)
    );
    if needed > 0 {
        s.push_str(&format!(", and this needs {} more", human_bytes(needed)));
    }
    s.push_str(
        "; free space (delete files or snapshots, purge kept workspaces of destroyed \
         containers) or ask the administrator for a larger quota",
    );
    s
}

/// Live containers and kept workspaces, for retention.
#[derive(Debug, Default)]
pub struct Inventory {
    pub containers: Vec<(Owner, String)>,
    /// (owner, container, kept id, expires)
    pub kept: Vec<(Owner, String, String, u64)>,
}

#[derive(Clone)]
enum Imp {
    Dir(dir::DirBackend),
    Zfs(zfs::ZfsBackend),
}

/// Seconds since the epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

type Locks = Arc<crate::keyed_locks::KeyedLocks>;

/// The storage interface. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Storage {
    cfg: Arc<StorageConfig>,
    imp: Imp,
    locks: Locks,
    clock: Clock,
}

impl Storage {
    /// The backend the configuration names; the zfs one runs `cfg.zfs_bin`.
    pub fn new(cfg: StorageConfig) -> Self {
        let runner: Arc<dyn ZfsRunner> = Arc::new(SystemZfs::new(cfg.zfs_bin.clone()));
        Self::build(cfg, runner)
    }

    /// The zfs backend with another way to run `zfs` (tests: recorded outputs).
    /// Uses the zfs backend whatever `cfg.backend` says.
    pub fn with_zfs_runner(mut cfg: StorageConfig, runner: Arc<dyn ZfsRunner>) -> Self {
        cfg.backend = Backend::Zfs;
        Self::build(cfg, runner)
    }

    fn build(cfg: StorageConfig, runner: Arc<dyn ZfsRunner>) -> Self {
        let cfg = Arc::new(cfg);
        let imp = match cfg.backend {
            Backend::Dir => Imp::Dir(dir::DirBackend::new(cfg.clone())),
            Backend::Zfs => Imp::Zfs(zfs::ZfsBackend::new(cfg.clone(), runner)),
        };
        Self {
            cfg,
            imp,
            locks: Arc::new(crate::keyed_locks::KeyedLocks::new()),
            clock: Arc::new(system_clock),
        }
    }

    /// Replaces the clock (seconds since the epoch) used for snapshot ids,
    /// kept names and expiries.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &StorageConfig {
        &self.cfg
    }

    /// Testing only (dir backend): the next operation that reaches the named
    /// point fails there (`snapshot:copied`, `restore:copied`,
    /// `restore:swapping`).
    #[doc(hidden)]
    pub fn inject_failure(&self, point: &str) {
        if let Imp::Dir(d) = &self.imp {
            d.inject_failure(point);
        }
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    async fn lock(&self, owner: &Owner, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks
            .get(&format!("{owner}/{name}"))
            .lock_owned()
            .await
    }

    /// Runs a blocking dir-backend call on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(dir::DirBackend) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let Imp::Dir(d) = &self.imp else {
            return Err(StorageError::InvalidArgument("not the dir backend".into()));
        };
        let d = d.clone();
        tokio::task::spawn_blocking(move || f(d))
            .await
            .map_err(|e| StorageError::Io {
                context: "storage task".into(),
                source: std::io::Error::other(e),
            })?
    }

    /// Where the container's workspace is (or will be) on the host: the path
    /// to bind-mount at `/workspace`. No I/O.
    pub fn workspace_path(&self, owner: &Owner, name: &str) -> Result<PathBuf, StorageError> {
        names::check_container_name(name)?;
        match &self.imp {
            Imp::Dir(d) => Ok(d.workspace_path(owner, name)),
            Imp::Zfs(z) => z.workspace_path(owner, name),
        }
    }

    /// Creates the container's workspace if needed (idempotent) and returns
    /// the host path to bind-mount at `/workspace`. A new workspace is refused
    /// when the owner's quota is used up.
    pub async fn ensure_workspace(
        &self,
        owner: &Owner,
        name: &str,
    ) -> Result<PathBuf, StorageError> {
        names::check_container_name(name)?;
        let _g = self.lock(owner, name).await;
        match &self.imp {
            Imp::Zfs(z) => z.ensure_workspace(owner, name).await,
            Imp::Dir(_) => {
                let (o, n) = (owner.clone(), name.to_string());
                self.blocking(move |d| d.ensure_workspace(&o, &n)).await
            }
        }
    }

    /// Everything an owner uses (workspaces, snapshots, kept workspaces).
    pub async fn owner_usage(&self, owner: &Owner) -> Result<Usage, StorageError> {
        match &self.imp {
            Imp::Zfs(z) => z.owner_usage(owner).await,
            Imp::Dir(_) => {
                let o = owner.clone();
                self.blocking(move |d| d.owner_usage(&o)).await
            }
        }
    }

    /// What one container's workspace and its snapshots use.
    pub async fn container_usage(&self, owner: &Owner, name: &str) -> Result<Usage, StorageError> {
        names::check_container_name(name)?;
        match &self.imp {
            Imp::Zfs(z) => z.container_usage(owner, name).await,
            Imp::Dir(_) => {
                let (o, n) = (owner.clone(), name.to_string());
                self.blocking(move |d| d.container_usage(&o, &n)).await
            }
        }
    }

    /// Takes a snapshot now. `reason`: `manual`, `pre-update`, ... (1-32 of
    /// a-z, 0-9, '-', starting with a letter).
    pub async fn snapshot(
        &self,
        owner: &Owner,
        name: &str,
        reason: &str,
    ) -> Result<Snapshot, StorageError> {
        names::check_container_name(name)?;
        names::check_reason(reason)?;
        let _g = self.lock(owner, name).await;
        let now = self.now();
        match &self.imp {
            Imp::Zfs(z) => z.snapshot(owner, name, reason, now).await,
            Imp::Dir(_) => {
                let (o, n, r) = (owner.clone(), name.to_string(), reason.to_string());
                self.blocking(move |d| d.snapshot(&o, &n, &r, now)).await
            }
        }
    }

    /// The schedule's snapshot of this hour, when it is due (none taken in
    /// this hour yet; a schedule is set): `None` when not due. The tiers
    /// prune at the next retention.
    pub async fn take_scheduled(
        &self,
        owner: &Owner,
        name: &str,
        tiers: &tiers::Tiers,
    ) -> Result<Option<Snapshot>, StorageError> {
        if !tiers.any() {
            return Ok(None);
        }
        let now = self.now();
        let taken: Vec<retention::Candidate> = self
            .snapshots(owner, name)
            .await?
            .into_iter()
            .map(|s| retention::Candidate {
                id: s.id,
                created: s.created,
                reason: s.reason,
                pinned: false,
            })
            .collect();
        if !tiers::due(&taken, now) {
            return Ok(None);
        }
        self.snapshot(owner, name, tiers::SCHEDULED).await.map(Some)
    }

    /// Brings one file or folder back from snapshot `id` into the live
    /// workspace (the container may be running): `path` in the snapshot,
    /// to `to` in the workspace (both relative; `to` must not exist). The
    /// rest of the workspace is left as it is.
    pub async fn restore_path(
        &self,
        owner: &Owner,
        name: &str,
        id: &str,
        path: &str,
        to: &str,
    ) -> Result<PathRestored, StorageError> {
        names::check_container_name(name)?;
        names::check_snapshot_id(id)?;
        let from = path_restore::components(path, "path")
            .map_err(|e| StorageError::InvalidArgument(e.0))?;
        let to =
            path_restore::components(to, "to").map_err(|e| StorageError::InvalidArgument(e.0))?;
        let _g = self.lock(owner, name).await;
        match &self.imp {
            Imp::Zfs(z) => z.restore_path(owner, name, id, from, to).await,
            Imp::Dir(_) => {
                let (o, n, i) = (owner.clone(), name.to_string(), id.to_string());
                self.blocking(move |d| d.restore_path(&o, &n, &i, &from, &to))
                    .await
            }
        }
    }

    /// The container's snapshots, oldest first.
    pub async fn snapshots(
        &self,
        owner: &Owner,
        name: &str,
    ) -> Result<Vec<Snapshot>, StorageError> {
        names::check_container_name(name)?;
        let _g = self.lock(owner, name).await;
        match &self.imp {
            Imp::Zfs(z) => z.snapshots(owner, name).await,
            Imp::Dir(_) => {
                let (o, n) = (owner.clone(), name.to_string());
                self.blocking(move |d| d.snapshots(&o, &n)).await
            }
        }
    }

    /// Brings the workspace back to snapshot `id`. The current state first
    /// becomes a `pre-restore` snapshot, and every other snapshot stays, so a
    /// restore can itself be undone. On any failure the workspace is as it
    /// was. The container must be stopped.
    pub async fn restore(&self, owner: &Owner, name: &str, id: &str) -> Result<(), StorageError> {
        names::check_container_name(name)?;
        names::check_snapshot_id(id)?;
        let _g = self.lock(owner, name).await;
        let now = self.now();
        match &self.imp {
            Imp::Zfs(z) => z.restore(owner, name, id, now).await,
            Imp::Dir(_) => {
                let (o, n, i) = (owner.clone(), name.to_string(), id.to_string());
                self.blocking(move |d| d.restore(&o, &n, &i, now)).await
            }
        }
    }

    /// Removes one snapshot.
    pub async fn delete_snapshot(
        &self,
        owner: &Owner,
        name: &str,
        id: &str,
    ) -> Result<(), StorageError> {
        names::check_container_name(name)?;
        names::check_snapshot_id(id)?;
        let _g = self.lock(owner, name).await;
        match &self.imp {
            Imp::Zfs(z) => z.delete_snapshot(owner, name, id).await,
            Imp::Dir(_) => {
                let (o, n, i) = (owner.clone(), name.to_string(), id.to_string());
                self.blocking(move |d| d.delete_snapshot(&o, &n, &i)).await
            }
        }
    }

    /// On destroy: keeps the workspace (with a final `pre-destroy` state and
    /// all its snapshots) for `keep_days`, and frees the container's name.
    /// `None` when the container had no workspace. The container must be
    /// stopped.
    pub async fn retire_workspace(
        &self,
        owner: &Owner,
        name: &str,
    ) -> Result<Option<Kept>, StorageError> {
        names::check_container_name(name)?;
        let _g = self.lock(owner, name).await;
        let now = self.now();
        match &self.imp {
            Imp::Zfs(z) => z.retire_workspace(owner, name, now).await,
            Imp::Dir(_) => {
                let (o, n) = (owner.clone(), name.to_string());
                self.blocking(move |d| d.retire_workspace(&o, &n, now))
                    .await
            }
        }
    }

    /// Explicit and final: removes the container's workspace, its snapshots,
    /// and every kept workspace of that name. Nothing there is success.
    pub async fn purge(&self, owner: &Owner, name: &str) -> Result<(), StorageError> {
        names::check_container_name(name)?;
        let _g = self.lock(owner, name).await;
        match &self.imp {
            Imp::Zfs(z) => z.purge(owner, name).await,
            Imp::Dir(_) => {
                let (o, n) = (owner.clone(), name.to_string());
                self.blocking(move |d| d.purge(&o, &n)).await
            }
        }
    }

    /// Removes only the kept workspaces of destroyed containers of that name
    /// (a live workspace of the same name stays). Returns how many went.
    pub async fn purge_kept(&self, owner: &Owner, name: &str) -> Result<u32, StorageError> {
        names::check_container_name(name)?;
        let _g = self.lock(owner, name).await;
        match &self.imp {
            Imp::Zfs(z) => z.purge_kept(owner, name).await,
            Imp::Dir(_) => {
                let (o, n) = (owner.clone(), name.to_string());
                self.blocking(move |d| d.purge_kept(&o, &n)).await
            }
        }
    }

    /// What the owner's destroyed containers left, by container then time.
    pub async fn kept(&self, owner: &Owner) -> Result<Vec<Kept>, StorageError> {
        match &self.imp {
            Imp::Zfs(z) => z.kept(owner).await,
            Imp::Dir(_) => {
                let o = owner.clone();
                self.blocking(move |d| d.kept(&o)).await
            }
        }
    }

    /// On recreate, when the person accepts: the newest kept workspace of
    /// that name becomes the container's workspace again (with its
    /// snapshots). A workspace already there is retired first, never
    /// overwritten. Call [`Storage::ensure_workspace`] afterwards for the
    /// path. The container must be stopped.
    pub async fn restore_kept(&self, owner: &Owner, name: &str) -> Result<(), StorageError> {
        self.restore_kept_from(owner, name, name).await
    }

    /// Puts the newest kept workspace of the owner's destroyed container
    /// `from` into the workspace of `name` (whose current one is kept in
    /// turn): a kept workspace whose name someone else took meanwhile is
    /// not stranded.
    pub async fn restore_kept_from(
        &self,
        owner: &Owner,
        name: &str,
        from: &str,
    ) -> Result<(), StorageError> {
        names::check_container_name(name)?;
        names::check_container_name(from)?;
        // Both names' locks, always in the same order.
        let (first, second) = if name <= from {
            (name, from)
        } else {
            (from, name)
        };
        let _g1 = self.lock(owner, first).await;
        let _g2 = if second != first {
            Some(self.lock(owner, second).await)
        } else {
            None
        };
        let now = self.now();
        match &self.imp {
            Imp::Zfs(z) => z.restore_kept(owner, name, from, now).await,
            Imp::Dir(_) => {
                let (o, n, f) = (owner.clone(), name.to_string(), from.to_string());
                self.blocking(move |d| d.restore_kept(&o, &n, &f, now))
                    .await
            }
        }
    }

    /// Retention over every owner: snapshots beyond `keep_snapshots` or older
    /// than `keep_days` (never the newest one of a workspace), and kept
    /// workspaces past their expiry. Returns how many snapshots and kept
    /// workspaces went. Failures on single items are logged and skipped.
    pub async fn apply_retention(&self, now: u64) -> Result<u32, StorageError> {
        self.apply_retention_with(now, &std::collections::HashMap::new())
            .await
    }

    /// `apply_retention`, with the tiers of containers whose schedule is
    /// their own (keyed by owner and name); the others have the default.
    pub async fn apply_retention_with(
        &self,
        now: u64,
        schedules: &std::collections::HashMap<(Owner, String), tiers::Tiers>,
    ) -> Result<u32, StorageError> {
        let default = self.cfg.tiers()?;
        let inv = match &self.imp {
            Imp::Zfs(z) => z.inventory().await?,
            Imp::Dir(_) => self.blocking(|d| d.inventory()).await?,
        };
        let mut removed = 0;
        for (owner, name) in inv.containers {
            let _g = self.lock(&owner, &name).await;
            let t = schedules
                .get(&(owner.clone(), name.clone()))
                .copied()
                .unwrap_or(default);
            let r = match &self.imp {
                Imp::Zfs(z) => z.retain(&owner, &name, now, &t).await,
                Imp::Dir(_) => {
                    let (o, n) = (owner.clone(), name.clone());
                    self.blocking(move |d| d.retain(&o, &n, now, &t)).await
                }
            };
            match r {
                Ok(n) => removed += n,
                Err(e) => tracing::warn!(%owner, container = %name, "retention: {e}"),
            }
        }
        for (owner, name, id, expires) in inv.kept {
            if !retention::kept_expired(expires, now) {
                continue;
            }
            let _g = self.lock(&owner, &name).await;
            let r = match &self.imp {
                Imp::Zfs(z) => z.remove_kept(&owner, &id).await,
                Imp::Dir(_) => {
                    let (o, n, i) = (owner.clone(), name.clone(), id.clone());
                    self.blocking(move |d| d.remove_kept(&o, &n, &i)).await
                }
            };
            match r {
                Ok(()) => {
                    tracing::info!(%owner, kept = %id, "retention: kept workspace expired and removed");
                    removed += 1;
                }
                Err(e) => tracing::warn!(%owner, kept = %id, "retention: {e}"),
            }
        }
        Ok(removed)
    }
}
