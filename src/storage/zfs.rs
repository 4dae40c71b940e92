//! The ZFS backend: one dataset tree per owner, driven through the `zfs`
//! command (libzfs has no stable API), always with parsable output.
//!
//! ```text
//! <pool>/<parent>                         mountpoint=<mount_root> (set once, explicitly)
//!   users/<owner>                         quota=<user_quota>
//!     containers/<name>                   quota=<container_quota> (optional)
//!       workspace                         bind-mounted at /workspace; snapshots @voxnix-<id>
//!       history/<stamp>                   earlier states, left by restores (clones)
//!     kept/<name>.<stamp>                 a destroyed container's tree, org.voxnix:expires=<secs>
//! ```
//!
//! Every dataset below `<pool>/<parent>` inherits its mountpoint, so it is
//! mounted at the same relative path under `mount_root`, and a rename (retire,
//! restore) moves the mount with the dataset in one step. See
//! `docs/storage.md`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::model::Owner;

use super::names::{
    encode_owner, format_stamp, kept_name, parse_kept_name, parse_snapshot_id, snapshot_id,
};
use super::retention::{self, Candidate};
use super::zfs_parse::{
    self, DatasetType, EXPIRES_PROPERTY, Entry, Failure, LIST_COLUMNS, parse_get, parse_list,
};
use super::{Inventory, Kept, Snapshot, StorageConfig, StorageError, Usage};

/// What one run of `zfs` returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZfsOutput {
    /// The exit code; `None` when it was killed by a signal (libzfs aborts on
    /// internal errors).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ZfsOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `zfs` with the given arguments (without the program name). The real
/// one is [`SystemZfs`]; tests supply recorded outputs and check the argument
/// vectors.
pub trait ZfsRunner: Send + Sync + 'static {
    fn run(&self, args: Vec<String>) -> BoxFuture<'_, std::io::Result<ZfsOutput>>;
}

/// Runs the real `zfs` binary, with `LC_ALL=C` (so errors are untranslated),
/// no stdin, and a time limit after which it is killed.
pub struct SystemZfs {
    pub bin: PathBuf,
    pub timeout: Duration,
}

impl SystemZfs {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

    pub fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl ZfsRunner for SystemZfs {
    fn run(&self, args: Vec<String>) -> BoxFuture<'_, std::io::Result<ZfsOutput>> {
        Box::pin(async move {
            let child = tokio::process::Command::new(&self.bin)
                .args(&args)
                .env("LC_ALL", "C")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = match tokio::time::timeout(self.timeout, child).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("did not finish within {}s", self.timeout.as_secs()),
                    ));
                }
            };
            Ok(ZfsOutput {
                status: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        })
    }
}

/// A failed command, classified.
#[derive(Debug)]
struct CmdFailure {
    failure: Failure,
    cmd: String,
    stderr: String,
}

#[derive(Debug)]
enum RunError {
    /// Could not run it at all (spawn error, time-out): already a StorageError.
    Run(StorageError),
    Failed(CmdFailure),
}

impl RunError {
    fn failure(&self) -> Option<&Failure> {
        match self {
            RunError::Failed(f) => Some(&f.failure),
            RunError::Run(_) => None,
        }
    }
}

/// The dataset names of one container.
struct Names {
    user: String,
    containers: String,
    cdir: String,
    ws: String,
    history: String,
    restoring: String,
    kept: String,
    /// Where the workspace is mounted.
    ws_path: PathBuf,
}

const SNAP_PREFIX: &str = "voxnix-";
/// How many times a name collision (same second) is retried with the next second.
const NAME_TRIES: u64 = 16;

#[derive(Clone)]
pub struct ZfsBackend {
    cfg: Arc<StorageConfig>,
    runner: Arc<dyn ZfsRunner>,
}

impl ZfsBackend {
    pub fn new(cfg: Arc<StorageConfig>, runner: Arc<dyn ZfsRunner>) -> Self {
        Self { cfg, runner }
    }

    fn root(&self) -> String {
        format!("{}/{}", self.cfg.zfs_pool, self.cfg.zfs_parent)
    }

    fn users(&self) -> String {
        format!("{}/users", self.root())
    }

    fn names(&self, owner: &Owner, name: &str) -> Result<Names, StorageError> {
        let enc = encode_owner(owner);
        let user = format!("{}/{enc}", self.users());
        let cdir = format!("{user}/containers/{name}");
        let n = Names {
            containers: format!("{user}/containers"),
            ws: format!("{cdir}/workspace"),
            history: format!("{cdir}/history"),
            restoring: format!("{cdir}/restoring"),
            kept: format!("{user}/kept"),
            ws_path: self
                .cfg
                .mount_root
                .components()
                .collect::<PathBuf>()
                .join("users")
                .join(&enc)
                .join("containers")
                .join(name)
                .join("workspace"),
            user,
            cdir,
        };
        // The longest name this container will use: a snapshot of a history
        // dataset, or a kept tree's workspace snapshot.
        let longest = format!(
            "{}/{}/workspace@{SNAP_PREFIX}{}",
            n.kept,
            kept_name(name, 0),
            snapshot_id(0, "pre-destroy-0123456789012345678")
        );
        if longest.len() >= 256 {
            return Err(StorageError::InvalidArgument(format!(
                "the owner '{owner}' is too long for a ZFS dataset name under '{}' \
                 (ZFS names are limited to 255 characters)",
                self.root()
            )));
        }
        Ok(n)
    }

    pub fn workspace_path(&self, owner: &Owner, name: &str) -> Result<PathBuf, StorageError> {
        Ok(self.names(owner, name)?.ws_path)
    }

    // ---- running and listing -------------------------------------------------

    fn cmd_string(&self, args: &[String]) -> String {
        let mut s = self.cfg.zfs_bin.display().to_string();
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    async fn run(&self, args: Vec<String>) -> Result<String, RunError> {
        let cmd = self.cmd_string(&args);
        tracing::debug!(%cmd, "running zfs");
        let out = self.runner.run(args).await.map_err(|e| {
            RunError::Run(StorageError::Io {
                context: format!("running `{cmd}`"),
                source: e,
            })
        })?;
        if out.success() {
            return Ok(out.stdout);
        }
        let stderr = out.stderr.trim().to_string();
        let failure = zfs_parse::classify(&stderr);
        let stderr = if stderr.is_empty() {
            match out.status {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            }
        } else {
            stderr
        };
        tracing::debug!(%cmd, ?failure, %stderr, "zfs failed");
        Err(RunError::Failed(CmdFailure {
            failure,
            cmd,
            stderr,
        }))
    }

    /// `zfs list` of the given datasets; returns the rows and the names that
    /// do not exist (zfs lists the others and reports those on stderr).
    async fn list(
        &self,
        depth: Depth,
        types: &str,
        targets: &[&str],
    ) -> Result<(Vec<Entry>, Vec<String>), StorageError> {
        let mut args = vec!["list".to_string(), "-H".into(), "-p".into()];
        args.push("-o".into());
        args.push(LIST_COLUMNS.join(","));
        match depth {
            Depth::Zero => {}
            Depth::All => args.push("-r".into()),
            Depth::Levels(n) => {
                args.push("-d".into());
                args.push(n.to_string());
            }
        }
        args.push("-t".into());
        args.push(types.into());
        args.extend(targets.iter().map(|t| t.to_string()));
        let cmd = self.cmd_string(&args);
        let out = self.runner.run(args).await.map_err(|e| StorageError::Io {
            context: format!("running `{cmd}`"),
            source: e,
        })?;
        let mut missing = Vec::new();
        if !out.success() {
            let stderr = out.stderr.trim();
            // Only "does not exist" lines are acceptable: anything else fails.
            for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
                match zfs_parse::classify(line) {
                    Failure::NoDataset(Some(name)) => missing.push(name),
                    failure => {
                        let f = CmdFailure {
                            failure,
                            cmd: cmd.clone(),
                            stderr: stderr.to_string(),
                        };
                        return Err(self.plain_error(f, "the storage"));
                    }
                }
            }
            if missing.is_empty() {
                return Err(StorageError::Command {
                    cmd,
                    stderr: if stderr.is_empty() {
                        format!("exit status {:?}", out.status)
                    } else {
                        stderr.to_string()
                    },
                });
            }
        }
        let entries = parse_list(&out.stdout).map_err(|e| StorageError::Command {
            cmd: cmd.clone(),
            stderr: e.to_string(),
        })?;
        Ok((entries, missing))
    }

    /// The pool's state, to tell "not created yet" from "no pool".
    async fn check_pool(&self) -> Result<(), StorageError> {
        let pool = self.cfg.zfs_pool.clone();
        let (_, missing) = self.list(Depth::Zero, "filesystem", &[&pool]).await?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(pool_missing(&pool))
        }
    }

    /// Turns a failed command into the error a person can act on. `scope`
    /// (owner, container, bytes needed) lets "out of space" report the numbers.
    async fn error(
        &self,
        e: RunError,
        what: &str,
        scope: Option<(&Owner, Option<&str>, u64)>,
    ) -> StorageError {
        match (e, scope) {
            (RunError::Run(e), _) => e,
            (RunError::Failed(f), Some((owner, name, needed))) if f.failure == Failure::NoSpace => {
                self.quota_error(owner, name, needed).await
            }
            (RunError::Failed(f), _) => self.plain_error(f, what),
        }
    }

    fn plain_error(&self, f: CmdFailure, what: &str) -> StorageError {
        let pool = self.cfg.zfs_pool.clone();
        match f.failure {
            Failure::NoModule => StorageError::PoolMissing {
                pool,
                hint: "the ZFS kernel module is not loaded (run 'modprobe zfs' as root; on NixOS \
                       add \"zfs\" to boot.supportedFilesystems)"
                    .into(),
            },
            Failure::NoPool(p) => pool_missing(&p),
            Failure::PoolUnavailable => StorageError::PoolMissing {
                hint: format!("the pool cannot do I/O right now; see 'zpool status {pool}'"),
                pool,
            },
            Failure::Busy => StorageError::Busy {
                what: what.to_string(),
            },
            Failure::NoDataset(Some(name)) if name.contains('@') => {
                let id = name
                    .split_once('@')
                    .map(|(_, s)| s.strip_prefix(SNAP_PREFIX).unwrap_or(s).to_string())
                    .unwrap_or_default();
                StorageError::SnapshotNotFound { id }
            }
            Failure::NoDataset(_) => StorageError::NotFound {
                what: what.to_string(),
            },
            Failure::DependentClones => {
                let clones: Vec<&str> = f.stderr.lines().skip(2).map(str::trim).collect();
                let why = if clones.is_empty() {
                    "the state saved by a later restore was cloned from it; it can go once \
                     that state's snapshots are gone"
                        .to_string()
                } else {
                    format!("other datasets were cloned from it: {}", clones.join(", "))
                };
                StorageError::InvalidArgument(format!("{what} cannot be removed yet: {why}"))
            }
            Failure::PermissionDenied => StorageError::Command {
                cmd: f.cmd,
                stderr: format!("{} (the daemon must run as root)", f.stderr),
            },
            Failure::NoSpace | Failure::Exists | Failure::NotAClone | Failure::Other => {
                StorageError::Command {
                    cmd: f.cmd,
                    stderr: f.stderr,
                }
            }
        }
    }

    /// Finds which limit is full and says so with numbers.
    async fn quota_error(&self, owner: &Owner, name: Option<&str>, needed: u64) -> StorageError {
        let Ok(n) = self.names(owner, name.unwrap_or("x")) else {
            return StorageError::InvalidArgument("invalid owner".into());
        };
        let mut targets = vec![n.user.as_str()];
        if name.is_some() {
            targets.push(n.cdir.as_str());
        }
        let root = self.root();
        targets.push(root.as_str());
        let entries = match self.list(Depth::Zero, "filesystem", &targets).await {
            Ok((e, _)) => e,
            Err(e) => return e,
        };
        // The container's own limit first, then the owner's, then the pool.
        for (ds, what) in [
            (
                n.cdir.as_str(),
                format!("container '{}'", name.unwrap_or("")),
            ),
            (n.user.as_str(), format!("owner {owner}")),
        ] {
            if let Some(e) = entries.iter().find(|e| e.name == ds)
                && let Some(q) = e.quota
            {
                return StorageError::QuotaExceeded {
                    what,
                    used: e.used,
                    quota: q,
                    needed,
                };
            }
        }
        let (used, avail) = entries
            .iter()
            .find(|e| e.name == root)
            .map(|e| (e.used, e.available.unwrap_or(0)))
            .unwrap_or((0, 0));
        StorageError::QuotaExceeded {
            what: format!("pool '{}'", self.cfg.zfs_pool),
            used,
            quota: used.saturating_add(avail),
            needed,
        }
    }

    async fn create(&self, ds: &str, props: &[(&str, String)]) -> Result<(), RunError> {
        let mut args = vec!["create".to_string()];
        for (k, v) in props {
            args.push("-o".into());
            args.push(format!("{k}={v}"));
        }
        args.push(ds.to_string());
        match self.run(args).await {
            Ok(_) => Ok(()),
            // Someone else created it meanwhile: that is what we wanted.
            Err(e) if e.failure() == Some(&Failure::Exists) => Ok(()),
            Err(RunError::Failed(f)) if f.stderr.contains("successfully created, but") => {
                // Created; mounting is checked (and retried) by the caller.
                tracing::warn!(dataset = ds, "{}", f.stderr);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn set(&self, ds: &str, prop: &str, value: &str) -> Result<(), RunError> {
        self.run(vec![
            "set".into(),
            format!("{prop}={value}"),
            ds.to_string(),
        ])
        .await
        .map(|_| ())
    }

    /// Lists a container's tree (datasets and snapshots).
    async fn tree(&self, n: &Names) -> Result<Option<Tree>, StorageError> {
        let (entries, missing) = self
            .list(Depth::All, "filesystem,snapshot", &[&n.cdir])
            .await?;
        if !missing.is_empty() {
            return Ok(None);
        }
        Ok(Some(Tree::new(&n.cdir, entries)))
    }

    /// Finishes or undoes a restore a crash interrupted (see `restore`).
    async fn recover(&self, n: &Names, tree: Tree) -> Result<Tree, StorageError> {
        if tree.get(&n.restoring).is_none() {
            return Ok(tree);
        }
        if tree.get(&n.ws).is_none() {
            tracing::warn!(dataset = %n.cdir, "finishing a restore interrupted after the swap");
            self.run(vec!["rename".into(), n.restoring.clone(), n.ws.clone()])
                .await
                .map_err(|e| RunError::into_plain(e, "rename"))?;
        } else if tree.snapshots_of(&n.restoring).next().is_none() {
            tracing::warn!(dataset = %n.cdir, "removing the clone of an interrupted restore");
            self.run(vec!["destroy".into(), n.restoring.clone()])
                .await
                .map_err(|e| RunError::into_plain(e, "destroy"))?;
        } else {
            tracing::warn!(dataset = %n.restoring, "left alone: it has snapshots of its own");
            return Ok(tree);
        }
        Ok(self.tree(n).await?.unwrap_or(tree))
    }

    async fn tree_recovered(&self, n: &Names) -> Result<Option<Tree>, StorageError> {
        match self.tree(n).await? {
            Some(t) => Ok(Some(self.recover(n, t).await?)),
            None => Ok(None),
        }
    }

    // ---- operations ------------------------------------------------------------

    pub async fn ensure_workspace(
        &self,
        owner: &Owner,
        name: &str,
    ) -> Result<PathBuf, StorageError> {
        let n = self.names(owner, name)?;
        let user_quota = self.cfg.user_quota_bytes()?;
        let container_quota = self.cfg.container_quota_bytes()?;
        if let Some(tree) = self.tree(&n).await? {
            self.recover(&n, tree).await?;
        }
        let root = self.root();
        let mut chain: Vec<String> = Vec::new();
        // Ancestors of the root inside the pool (zfs_parent may have several parts).
        let mut acc = self.cfg.zfs_pool.clone();
        for part in self.cfg.zfs_parent.split('/') {
            acc = format!("{acc}/{part}");
            chain.push(acc.clone());
        }
        let users = self.users();
        chain.extend([
            users.clone(),
            n.user.clone(),
            n.containers.clone(),
            n.cdir.clone(),
            n.ws.clone(),
        ]);
        let targets: Vec<&str> = chain.iter().map(String::as_str).collect();
        let (entries, _) = self.list(Depth::Zero, "filesystem", &targets).await?;
        let find = |ds: &str| entries.iter().find(|e| e.name == ds);

        if find(&n.ws).is_none() {
            // A new workspace: refuse when the owner has no room left at all.
            if let Some(u) = find(&n.user)
                && let Some(q) = u.quota
                && (u.used >= q || u.available == Some(0))
            {
                return Err(StorageError::QuotaExceeded {
                    what: format!("owner {owner}"),
                    used: u.used,
                    quota: q,
                    needed: container_quota.unwrap_or(0),
                });
            }
            for ds in &chain {
                if find(ds).is_some() {
                    continue;
                }
                let mut props: Vec<(&str, String)> = Vec::new();
                if *ds == root {
                    // Normalized (no trailing '/', no '.'), as ZFS shows it back.
                    let mp: PathBuf = self.cfg.mount_root.components().collect();
                    props.push(("mountpoint", mp.display().to_string()));
                } else if *ds == n.user {
                    if let Some(q) = user_quota {
                        props.push(("quota", q.to_string()));
                    }
                } else if *ds == n.cdir
                    && let Some(q) = container_quota
                {
                    props.push(("quota", q.to_string()));
                }
                tracing::info!(dataset = %ds, "creating dataset");
                if let Err(e) = self.create(ds, &props).await {
                    let err = self
                        .error(e, &format!("dataset '{ds}'"), Some((owner, None, 0)))
                        .await;
                    return Err(match err {
                        StorageError::NotFound { .. } => {
                            self.check_pool().await.err().unwrap_or(err)
                        }
                        other => other,
                    });
                }
            }
        }
        // Quotas follow the configuration.
        if let Some(u) = find(&n.user)
            && u.quota != user_quota
        {
            self.apply_quota(&n.user, user_quota).await;
        }
        if let Some(c) = find(&n.cdir)
            && c.quota != container_quota
        {
            self.apply_quota(&n.cdir, container_quota).await;
        }
        // Mounted where it should be?
        let (ws, _) = self.list(Depth::Zero, "filesystem", &[&n.ws]).await?;
        let Some(ws) = ws.into_iter().next() else {
            return Err(StorageError::NotFound {
                what: format!("dataset '{}'", n.ws),
            });
        };
        let expected = n.ws_path.display().to_string();
        if ws.mountpoint.as_deref() != Some(expected.as_str()) {
            return Err(StorageError::Misconfigured(format!(
                "dataset '{}' is mounted at '{}', not at '{expected}': the workspaces inherit \
                 their mountpoint from '{root}', whose mountpoint must be storage.mount_root \
                 ('{}'). Fix it with 'zfs set mountpoint={} {root}' and 'zfs inherit -r \
                 mountpoint {}', or set storage.mount_root",
                n.ws,
                ws.mountpoint.as_deref().unwrap_or("-"),
                self.cfg.mount_root.display(),
                self.cfg.mount_root.display(),
                n.user,
            )));
        }
        if ws.mounted == Some(false) {
            match self.run(vec!["mount".into(), n.ws.clone()]).await {
                Ok(_) => {}
                Err(RunError::Failed(f)) if f.stderr.contains("already mounted") => {}
                Err(e) => {
                    return Err(self
                        .error(e, &format!("workspace of container '{name}'"), None)
                        .await);
                }
            }
        }
        Ok(n.ws_path)
    }

    async fn apply_quota(&self, ds: &str, quota: Option<u64>) {
        let value = quota
            .map(|q| q.to_string())
            .unwrap_or_else(|| "none".into());
        tracing::info!(dataset = ds, quota = %value, "applying quota");
        if let Err(e) = self.set(ds, "quota", &value).await {
            // E.g. the new quota is below what is used already: ZFS refuses;
            // the old quota stays, which is the safe side.
            tracing::warn!(dataset = ds, "could not apply quota {value}: {e:?}");
        }
    }

    pub async fn owner_usage(&self, owner: &Owner) -> Result<Usage, StorageError> {
        let n = self.names(owner, "x")?;
        let (entries, missing) = self.list(Depth::Zero, "filesystem", &[&n.user]).await?;
        match entries.into_iter().next() {
            Some(e) if missing.is_empty() => Ok(Usage {
                used: e.used,
                available: e.available,
                quota: e.quota,
            }),
            _ => {
                self.check_pool().await?;
                Ok(Usage {
                    used: 0,
                    available: None,
                    quota: self.cfg.user_quota_bytes()?,
                })
            }
        }
    }

    pub async fn container_usage(&self, owner: &Owner, name: &str) -> Result<Usage, StorageError> {
        let n = self.names(owner, name)?;
        let (entries, _) = self.list(Depth::Zero, "filesystem", &[&n.cdir]).await?;
        match entries.into_iter().next() {
            Some(e) => Ok(Usage {
                used: e.used,
                available: e.available,
                quota: e.quota,
            }),
            None => Err(StorageError::NotFound {
                what: format!("workspace of container '{name}'"),
            }),
        }
    }

    pub async fn snapshot(
        &self,
        owner: &Owner,
        name: &str,
        reason: &str,
        now: u64,
    ) -> Result<Snapshot, StorageError> {
        let n = self.names(owner, name)?;
        let not_found = || StorageError::NotFound {
            what: format!("workspace of container '{name}'"),
        };
        let tree = self.tree_recovered(&n).await?.ok_or_else(not_found)?;
        if tree.get(&n.ws).is_none() {
            return Err(not_found());
        }
        self.take_snapshot(owner, name, &n, &tree, reason, now)
            .await
    }

    async fn take_snapshot(
        &self,
        owner: &Owner,
        name: &str,
        n: &Names,
        tree: &Tree,
        reason: &str,
        now: u64,
    ) -> Result<Snapshot, StorageError> {
        let taken: Vec<String> = tree.voxnix_snapshots().map(|(_, id, _)| id).collect();
        for k in 0..NAME_TRIES {
            let id = snapshot_id(now + k, reason);
            if taken.contains(&id) {
                continue;
            }
            let full = format!("{}@{SNAP_PREFIX}{id}", n.ws);
            match self.run(vec!["snapshot".into(), full.clone()]).await {
                Ok(_) => {}
                Err(e) if e.failure() == Some(&Failure::Exists) => continue,
                Err(e) => {
                    return Err(self
                        .error(
                            e,
                            &format!("workspace of container '{name}'"),
                            Some((owner, Some(name), 0)),
                        )
                        .await);
                }
            }
            tracing::info!(snapshot = %full, "snapshot taken");
            // Read back what ZFS recorded (creation time, space).
            let (rows, _) = self.list(Depth::Zero, "snapshot", &[&full]).await?;
            let (created, used) = rows
                .first()
                .map(|e| (e.creation, Some(e.used)))
                .unwrap_or((now, None));
            return Ok(Snapshot {
                id,
                created,
                reason: reason.to_string(),
                used,
            });
        }
        Err(StorageError::Busy {
            what: format!("snapshot names of container '{name}' (too many in one moment)"),
        })
    }

    pub async fn snapshots(
        &self,
        owner: &Owner,
        name: &str,
    ) -> Result<Vec<Snapshot>, StorageError> {
        let n = self.names(owner, name)?;
        let tree = self
            .tree_recovered(&n)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                what: format!("workspace of container '{name}'"),
            })?;
        let mut out: Vec<Snapshot> = tree
            .voxnix_snapshots()
            .map(|(_, id, e)| to_snapshot(&id, e))
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// One file or folder of snapshot `id` back into the live workspace, from
    /// the snapshot's `.zfs/snapshot/voxnix-<id>` (read-only: the container
    /// cannot change it), staged inside the workspace's dataset in a
    /// directory only the host's root may enter (storage/path_restore.rs),
    /// and moved in by one rename. The space is checked against what the
    /// workspace has available first; ZFS enforces the quota as it copies.
    pub async fn restore_path(
        &self,
        owner: &Owner,
        name: &str,
        id: &str,
        from: Vec<std::ffi::OsString>,
        to: Vec<std::ffi::OsString>,
    ) -> Result<super::PathRestored, StorageError> {
        let n = self.names(owner, name)?;
        let what = format!("workspace of container '{name}'");
        let tree = self
            .tree_recovered(&n)
            .await?
            .ok_or_else(|| StorageError::NotFound { what: what.clone() })?;
        let ws = tree
            .get(&n.ws)
            .ok_or_else(|| StorageError::NotFound { what: what.clone() })?;
        let mounted_at = |e: &Entry| -> Option<PathBuf> {
            (e.mounted == Some(true))
                .then(|| e.mountpoint.as_deref().map(PathBuf::from))
                .flatten()
                .filter(|p| p.is_absolute())
        };
        if mounted_at(ws).as_deref() != Some(n.ws_path.as_path()) {
            return Err(StorageError::Conflict(format!(
                "the {what} is not mounted at {}; start the container once (or ask the administrator to mount {}), then try again",
                n.ws_path.display(),
                n.ws
            )));
        }
        let (source_ds, _, _) = tree
            .voxnix_snapshots()
            .find(|(_, sid, _)| sid == id)
            .ok_or_else(|| StorageError::SnapshotNotFound { id: id.to_string() })?;
        let source_root = tree
            .get(source_ds)
            .and_then(mounted_at)
            .ok_or_else(|| {
                StorageError::Conflict(format!(
                    "snapshot {id} belongs to an earlier workspace ({source_ds}) that is not mounted; restore the snapshot whole instead"
                ))
            })?;
        let (available, used, quota) = (ws.available, ws.used, ws.quota);
        let ws_path = n.ws_path.clone();
        let snap_dir = std::ffi::OsString::from(format!("{SNAP_PREFIX}{id}"));
        let (id, container) = (id.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || {
            use super::path_restore as pr;
            let ws_root = pr::open_root(&ws_path).map_err(|e| StorageError::Io {
                context: format!("opening the workspace of container '{container}'"),
                source: std::io::Error::other(e.to_string()),
            })?;
            let gone = |_| StorageError::SnapshotNotFound { id: id.clone() };
            let src_top = pr::open_root(&source_root).map_err(gone)?;
            let src_root = pr::walk(
                &src_top,
                &[".zfs".into(), "snapshot".into(), snap_dir],
                false,
            )
            .map_err(gone)?;
            let limit = |dir: &std::os::fd::OwnedFd,
                         entry: &std::ffi::OsStr,
                         looked: &nix::sys::stat::FileStat|
             -> Result<u64, StorageError> {
                // The snapshot is read-only and the walk found no link on
                // the way: measuring it by name cannot be led elsewhere.
                let needed = if looked.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    use std::os::fd::AsRawFd;
                    let at =
                        PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(entry);
                    super::fsutil::measure(&at, super::fsutil::MEASURE_BUDGET)
                        .map(|m| m.bytes)
                        .map_err(|e| StorageError::Io {
                            context: format!("measuring what snapshot {id} holds"),
                            source: e,
                        })?
                } else {
                    u64::try_from(looked.st_size).unwrap_or(0)
                };
                if let Some(avail) = available
                    && needed > avail
                {
                    return Err(StorageError::QuotaExceeded {
                        what: format!("the workspace of container '{container}'"),
                        used,
                        quota: quota.unwrap_or(used.saturating_add(avail)),
                        needed,
                    });
                }
                Ok(u64::MAX)
            };
            pr::bring_back(
                &src_root,
                &ws_root,
                &id,
                &from,
                &to,
                &limit,
                &pr::Staging::InTree,
            )
        })
        .await
        .map_err(|e| StorageError::Io {
            context: "storage task".into(),
            source: std::io::Error::other(e),
        })?
    }

    /// Restores a snapshot without losing anything: the current state is
    /// snapshotted (`pre-restore`), the chosen snapshot is cloned, the clone
    /// takes the workspace's place by two renames, and is promoted so it no
    /// longer depends on the old workspace. The old workspace (with its
    /// snapshots newer than the restored one) stays as `history/<stamp>`, and
    /// all snapshots remain listed and restorable.
    pub async fn restore(
        &self,
        owner: &Owner,
        name: &str,
        id: &str,
        now: u64,
    ) -> Result<(), StorageError> {
        let n = self.names(owner, name)?;
        let what = format!("workspace of container '{name}'");
        let tree = self
            .tree_recovered(&n)
            .await?
            .ok_or_else(|| StorageError::NotFound { what: what.clone() })?;
        let source = tree
            .voxnix_snapshots()
            .find(|(_, sid, _)| sid == id)
            .map(|(_, _, e)| e.name.clone())
            .ok_or_else(|| StorageError::SnapshotNotFound { id: id.to_string() })?;
        if tree.get(&n.ws).is_none() {
            return Err(StorageError::NotFound { what });
        }
        // 1. The current state becomes a snapshot, so the restore can be undone.
        let pre = self
            .take_snapshot(owner, name, &n, &tree, "pre-restore", now)
            .await?;
        let pre_full = format!("{}@{SNAP_PREFIX}{}", n.ws, pre.id);
        // 2. The restored content, as a clone (costs nothing until written).
        if let Err(e) = self
            .run(vec!["clone".into(), source.clone(), n.restoring.clone()])
            .await
        {
            self.cleanup(&[vec!["destroy".into(), pre_full.clone()]])
                .await;
            return Err(self.error(e, &what, Some((owner, Some(name), 0))).await);
        }
        let undo_clone = vec!["destroy".to_string(), n.restoring.clone()];
        // 3. A place for the old state.
        if let Err(e) = self.create(&n.history, &[]).await {
            self.cleanup(&[undo_clone, vec!["destroy".into(), pre_full]])
                .await;
            return Err(self.error(e, &what, Some((owner, Some(name), 0))).await);
        }
        let existing: Vec<&str> = tree.entries.iter().map(|e| e.name.as_str()).collect();
        let Some(hist) = (0..NAME_TRIES)
            .map(|k| format!("{}/{}", n.history, format_stamp(now + k)))
            .find(|c| !existing.contains(&c.as_str()))
        else {
            self.cleanup(&[undo_clone, vec!["destroy".into(), pre_full]])
                .await;
            return Err(StorageError::Busy { what });
        };
        // 4. Swap: the old workspace moves aside (this unmounts it; it fails,
        //    changing nothing, while something uses it)...
        if let Err(e) = self
            .run(vec!["rename".into(), n.ws.clone(), hist.clone()])
            .await
        {
            self.cleanup(&[undo_clone, vec!["destroy".into(), pre_full]])
                .await;
            return Err(self.error(e, &what, None).await);
        }
        // ...and the clone takes its name (and so its mountpoint).
        if let Err(e) = self
            .run(vec!["rename".into(), n.restoring.clone(), n.ws.clone()])
            .await
        {
            self.cleanup(&[
                vec!["rename".into(), hist.clone(), n.ws.clone()],
                undo_clone,
                vec!["destroy".into(), pre_full],
            ])
            .await;
            return Err(self.error(e, &what, None).await);
        }
        tracing::info!(workspace = %n.ws, snapshot = %source, previous = %hist, "restored");
        // 5. Make the restored workspace independent of the old one.
        self.promote_fully(&n.ws).await;
        Ok(())
    }

    /// Promotes `ds` until it is no clone (a restore from a snapshot that
    /// itself lives in a history dataset needs more than one step). Failure
    /// is not fatal: the data is in place, only the dependency stays.
    async fn promote_fully(&self, ds: &str) {
        for _ in 0..8 {
            let args = vec![
                "get".to_string(),
                "-H".into(),
                "-p".into(),
                "-o".into(),
                "name,property,value,source".into(),
                "origin".into(),
                ds.to_string(),
            ];
            let origin = match self.run(args).await {
                Ok(out) => match parse_get(&out) {
                    Ok(props) => props.into_iter().next().map(|p| p.value),
                    Err(e) => {
                        tracing::warn!(dataset = ds, "cannot read origin: {e}");
                        return;
                    }
                },
                Err(e) => {
                    tracing::warn!(dataset = ds, "cannot read origin: {e:?}");
                    return;
                }
            };
            match origin.as_deref() {
                None | Some("-") | Some("") => return,
                Some(_) => {}
            }
            if let Err(e) = self.run(vec!["promote".into(), ds.to_string()]).await {
                tracing::warn!(
                    dataset = ds,
                    "promote failed; the workspace stays a clone: {e:?}"
                );
                return;
            }
        }
    }

    /// Best-effort undo steps after a failure; each failure is logged.
    async fn cleanup(&self, steps: &[Vec<String>]) {
        for args in steps {
            if let Err(e) = self.run(args.clone()).await {
                tracing::error!("undo step `{}` failed: {e:?}", args.join(" "));
            }
        }
    }

    /// Takes the final snapshot and moves the container's whole tree to
    /// `kept/<name>.<stamp>`, marked with its expiry.
    pub async fn retire_workspace(
        &self,
        owner: &Owner,
        name: &str,
        now: u64,
    ) -> Result<Option<Kept>, StorageError> {
        let n = self.names(owner, name)?;
        let what = format!("workspace of container '{name}'");
        let Some(tree) = self.tree_recovered(&n).await? else {
            return Ok(None);
        };
        let snapshot = if tree.get(&n.ws).is_some() {
            match self
                .take_snapshot(owner, name, &n, &tree, "pre-destroy", now)
                .await
            {
                Ok(s) => Some(s),
                // The whole tree is kept anyway; a missing final snapshot only
                // means its state is the workspace itself.
                Err(e) => {
                    tracing::warn!(container = name, "final snapshot failed: {e}");
                    None
                }
            }
        } else {
            None
        };
        let snapshot = snapshot
            .or_else(|| {
                let mut all: Vec<Snapshot> = tree
                    .voxnix_snapshots()
                    .map(|(_, id, e)| to_snapshot(&id, e))
                    .collect();
                all.sort_by_key(|s| s.created);
                all.pop()
            })
            .unwrap_or_else(|| Snapshot {
                id: snapshot_id(now, "pre-destroy"),
                created: now,
                reason: "pre-destroy".into(),
                used: None,
            });
        if let Err(e) = self.create(&n.kept, &[]).await {
            return Err(self.error(e, &what, Some((owner, None, 0))).await);
        }
        let (kept_entries, _) = self
            .list(Depth::Levels(1), "filesystem", &[&n.kept])
            .await?;
        let mut target = None;
        for k in 0..NAME_TRIES {
            let candidate = format!("{}/{}", n.kept, kept_name(name, now + k));
            if !kept_entries.iter().any(|e| e.name == candidate) {
                target = Some(candidate);
                break;
            }
        }
        let Some(target) = target else {
            return Err(StorageError::Busy { what });
        };
        if let Err(e) = self
            .run(vec!["rename".into(), n.cdir.clone(), target.clone()])
            .await
        {
            return Err(self.error(e, &what, None).await);
        }
        let expires = retention::kept_expiry(now, self.cfg.keep_days);
        if let Err(e) = self
            .set(&target, EXPIRES_PROPERTY, &expires.to_string())
            .await
        {
            // The name holds the time of retirement; the expiry then follows
            // from keep_days.
            tracing::warn!(dataset = %target, "could not record the expiry: {e:?}");
        }
        tracing::info!(container = name, kept = %target, "workspace retired");
        let id = target.rsplit('/').next().unwrap_or_default().to_string();
        Ok(Some(Kept {
            owner: owner.clone(),
            container: name.to_string(),
            id,
            snapshot,
            expires,
        }))
    }

    pub async fn kept(&self, owner: &Owner) -> Result<Vec<Kept>, StorageError> {
        let n = self.names(owner, "x")?;
        let (entries, missing) = self
            .list(Depth::All, "filesystem,snapshot", &[&n.kept])
            .await?;
        if !missing.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = format!("{}/", n.kept);
        // Every entry under the kept tree it belongs to, in one pass (a tree
        // per kept workspace, not a copy of everything per kept workspace).
        let mut trees: std::collections::HashMap<String, Vec<Entry>> =
            std::collections::HashMap::new();
        for e in &entries {
            let ds = e.name.split('@').next().unwrap_or("");
            if let Some(rest) = ds.strip_prefix(&prefix) {
                let kid = rest.split('/').next().unwrap_or(rest);
                trees.entry(kid.to_string()).or_default().push(e.clone());
            }
        }
        let mut out = Vec::new();
        for e in &entries {
            let Some(kid) = e.name.strip_prefix(&prefix) else {
                continue;
            };
            if e.kind != DatasetType::Filesystem || kid.contains('/') {
                continue;
            }
            let Some((container, retired)) = parse_kept_name(kid) else {
                continue;
            };
            let tree = Tree::new(&e.name, trees.remove(kid).unwrap_or_default());
            let mut snaps: Vec<Snapshot> = tree
                .voxnix_snapshots()
                .map(|(_, id, e)| to_snapshot(&id, e))
                .collect();
            snaps.sort_by_key(|s| s.created);
            let snapshot = snaps
                .iter()
                .rev()
                .find(|s| s.reason == "pre-destroy")
                .or(snaps.last())
                .cloned()
                .unwrap_or_else(|| Snapshot {
                    id: snapshot_id(retired, "pre-destroy"),
                    created: retired,
                    reason: "pre-destroy".into(),
                    used: None,
                });
            out.push(Kept {
                owner: owner.clone(),
                container: container.to_string(),
                id: kid.to_string(),
                snapshot,
                expires: e
                    .expires
                    .unwrap_or_else(|| retention::kept_expiry(retired, self.cfg.keep_days)),
            });
        }
        out.sort_by(|a, b| a.container.cmp(&b.container).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    pub async fn restore_kept(
        &self,
        owner: &Owner,
        name: &str,
        from: &str,
        now: u64,
    ) -> Result<(), StorageError> {
        let n = self.names(owner, name)?;
        let newest = self
            .kept(owner)
            .await?
            .into_iter()
            .filter(|k| k.container == from)
            .max_by(|a, b| a.id.cmp(&b.id))
            .ok_or_else(|| StorageError::NotFound {
                what: format!("kept workspace of container '{from}'"),
            })?;
        // Whatever is there now is kept too, never overwritten.
        if self.tree(&n).await?.is_some() {
            self.retire_workspace(owner, name, now).await?;
        }
        let from = format!("{}/{}", n.kept, newest.id);
        let what = format!("kept workspace '{}'", newest.id);
        if let Err(e) = self.create(&n.containers, &[]).await {
            return Err(self.error(e, &what, Some((owner, None, 0))).await);
        }
        if let Err(e) = self
            .run(vec!["rename".into(), from.clone(), n.cdir.clone()])
            .await
        {
            return Err(self.error(e, &what, None).await);
        }
        if let Err(e) = self
            .run(vec![
                "inherit".into(),
                EXPIRES_PROPERTY.into(),
                n.cdir.clone(),
            ])
            .await
        {
            tracing::warn!(dataset = %n.cdir, "could not clear the expiry: {e:?}");
        }
        tracing::info!(container = name, kept = %from, "kept workspace restored");
        Ok(())
    }

    pub async fn purge(&self, owner: &Owner, name: &str) -> Result<(), StorageError> {
        let n = self.names(owner, name)?;
        if self.tree(&n).await?.is_some() {
            self.destroy_tree(&n.cdir, &format!("workspace of container '{name}'"))
                .await?;
        }
        self.purge_kept(owner, name).await?;
        Ok(())
    }

    pub async fn purge_kept(&self, owner: &Owner, name: &str) -> Result<u32, StorageError> {
        let n = self.names(owner, name)?;
        let mut removed = 0;
        for k in self.kept(owner).await? {
            if k.container == name {
                self.destroy_tree(
                    &format!("{}/{}", n.kept, k.id),
                    &format!("kept workspace '{}'", k.id),
                )
                .await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn destroy_tree(&self, ds: &str, what: &str) -> Result<(), StorageError> {
        tracing::info!(dataset = ds, "destroying");
        match self
            .run(vec!["destroy".into(), "-r".into(), ds.to_string()])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.failure(), Some(Failure::NoDataset(_))) => Ok(()),
            Err(e) => Err(self.error(e, what, None).await),
        }
    }

    pub async fn delete_snapshot(
        &self,
        owner: &Owner,
        name: &str,
        id: &str,
    ) -> Result<(), StorageError> {
        let n = self.names(owner, name)?;
        let tree = self
            .tree_recovered(&n)
            .await?
            .ok_or_else(|| StorageError::SnapshotNotFound { id: id.to_string() })?;
        let full = tree
            .voxnix_snapshots()
            .find(|(_, sid, _)| sid == id)
            .map(|(_, _, e)| e.name.clone())
            .ok_or_else(|| StorageError::SnapshotNotFound { id: id.to_string() })?;
        if let Err(e) = self.run(vec!["destroy".into(), full]).await {
            return Err(self.error(e, &format!("snapshot '{id}'"), None).await);
        }
        self.drop_empty_history(&n).await;
        Ok(())
    }

    /// History datasets with no snapshots left hold nothing anyone can
    /// restore: they go.
    async fn drop_empty_history(&self, n: &Names) {
        let Ok(Some(tree)) = self.tree(n).await else {
            return;
        };
        let prefix = format!("{}/", n.history);
        for e in &tree.entries {
            if e.kind == DatasetType::Filesystem
                && e.name.starts_with(&prefix)
                && tree.snapshots_of(&e.name).next().is_none()
            {
                tracing::info!(dataset = %e.name, "removing an empty history dataset");
                if let Err(err) = self.run(vec!["destroy".into(), e.name.clone()]).await {
                    tracing::warn!(dataset = %e.name, "could not remove: {err:?}");
                }
            }
        }
    }

    /// All live containers and kept trees: `(owner, container)` and
    /// `(owner, kept id, expires)`.
    pub async fn inventory(&self) -> Result<Inventory, StorageError> {
        let users = self.users();
        let (entries, missing) = self.list(Depth::Levels(3), "filesystem", &[&users]).await?;
        let mut inv = Inventory::default();
        if !missing.is_empty() {
            self.check_pool().await?;
            return Ok(inv);
        }
        let prefix = format!("{users}/");
        for e in &entries {
            let Some(rest) = e.name.strip_prefix(&prefix) else {
                continue;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            let [enc, kind, item] = parts[..] else {
                continue;
            };
            let Some(owner) = super::names::decode_owner(enc) else {
                continue;
            };
            match kind {
                "containers" if super::names::check_container_name(item).is_ok() => {
                    inv.containers.push((owner, item.to_string()));
                }
                "kept" => {
                    if let Some((container, retired)) = parse_kept_name(item) {
                        let expires = e
                            .expires
                            .unwrap_or_else(|| retention::kept_expiry(retired, self.cfg.keep_days));
                        inv.kept
                            .push((owner, container.to_string(), item.to_string(), expires));
                    }
                }
                _ => {}
            }
        }
        Ok(inv)
    }

    /// Applies retention to one container's snapshots; returns how many went.
    pub async fn retain(
        &self,
        owner: &Owner,
        name: &str,
        now: u64,
        tiers: &super::tiers::Tiers,
    ) -> Result<u32, StorageError> {
        let n = self.names(owner, name)?;
        let Some(tree) = self.tree_recovered(&n).await? else {
            return Ok(0);
        };
        let origins: Vec<&str> = tree
            .entries
            .iter()
            .filter_map(|e| e.origin.as_deref())
            .collect();
        let mut full_names = Vec::new();
        let candidates: Vec<Candidate> = tree
            .voxnix_snapshots()
            .map(|(_, id, e)| {
                full_names.push((id.clone(), e.name.clone()));
                Candidate {
                    reason: parse_snapshot_id(&id)
                        .map(|(_, r)| r.to_string())
                        .unwrap_or_default(),
                    id,
                    created: e.creation,
                    pinned: origins.contains(&e.name.as_str()),
                }
            })
            .collect();
        let expired = retention::to_remove(
            &candidates,
            self.cfg.keep_snapshots,
            self.cfg.keep_days,
            tiers,
            now,
        );
        let mut removed = 0;
        for id in expired {
            let Some((_, full)) = full_names.iter().find(|(i, _)| *i == id) else {
                continue;
            };
            match self.run(vec!["destroy".into(), full.clone()]).await {
                Ok(_) => {
                    tracing::info!(snapshot = %full, "retention: removed");
                    removed += 1;
                }
                Err(e) => tracing::warn!(snapshot = %full, "retention: could not remove: {e:?}"),
            }
        }
        if removed > 0 {
            self.drop_empty_history(&n).await;
        }
        Ok(removed)
    }

    pub async fn remove_kept(&self, owner: &Owner, kept_id: &str) -> Result<(), StorageError> {
        let n = self.names(owner, "x")?;
        self.destroy_tree(
            &format!("{}/{kept_id}", n.kept),
            &format!("kept workspace '{kept_id}'"),
        )
        .await
    }
}

#[derive(Debug, Clone, Copy)]
enum Depth {
    Zero,
    All,
    Levels(u32),
}

fn pool_missing(pool: &str) -> StorageError {
    StorageError::PoolMissing {
        pool: pool.to_string(),
        hint: format!(
            "is the pool imported? 'zpool list' shows the imported pools, 'zpool import' the \
             ones that can be imported; then run 'zpool import {pool}'. Or set storage.zfs_pool"
        ),
    }
}

fn to_snapshot(id: &str, e: &Entry) -> Snapshot {
    let reason = parse_snapshot_id(id)
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    Snapshot {
        id: id.to_string(),
        created: e.creation,
        reason,
        used: Some(e.used),
    }
}

impl RunError {
    fn into_plain(self, what: &str) -> StorageError {
        match self {
            RunError::Run(e) => e,
            RunError::Failed(f) => {
                tracing::debug!("{what} failed");
                StorageError::Command {
                    cmd: f.cmd,
                    stderr: f.stderr,
                }
            }
        }
    }
}

/// A listed dataset tree.
struct Tree {
    root: String,
    entries: Vec<Entry>,
}

impl Tree {
    fn new(root: &str, entries: Vec<Entry>) -> Self {
        let prefix = format!("{root}/");
        let entries = entries
            .into_iter()
            .filter(|e| {
                let ds = e.name.split('@').next().unwrap_or("");
                ds == root || ds.starts_with(&prefix)
            })
            .collect();
        Self {
            root: root.to_string(),
            entries,
        }
    }

    fn get(&self, ds: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.kind == DatasetType::Filesystem && e.name == ds)
    }

    fn snapshots_of<'a>(&'a self, ds: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.snapshot_parts().is_some_and(|(d, _)| d == ds))
    }

    /// voxnix snapshots of the workspace and history datasets (not of a
    /// leftover clone): (dataset, id, entry).
    fn voxnix_snapshots(&self) -> impl Iterator<Item = (&str, String, &Entry)> + '_ {
        let ws = format!("{}/workspace", self.root);
        let hist = format!("{}/history/", self.root);
        self.entries.iter().filter_map(move |e| {
            let (ds, snap) = e.snapshot_parts()?;
            if ds != ws && !ds.starts_with(&hist) {
                return None;
            }
            let id = snap.strip_prefix(SNAP_PREFIX)?;
            parse_snapshot_id(id)?;
            Some((ds, id.to_string(), e))
        })
    }
}
