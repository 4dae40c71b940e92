//! Checkpoints taken around voxnix's changes, the history that lists them,
//! and `undo`, which puts a container back to one: its modules and system
//! (the profile switched to the system it had, as `update` switches), and its
//! workspace (the checkpoint's snapshot restored). An undo first takes a
//! checkpoint of its own, so it can itself be undone.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::checkpoints::{Checkpoint, History, Kind, SNAPSHOT_REASON};
use super::records::{Record, now_secs};
use super::{Engine, EngineError, Scope, container_unit, fault, io};
use crate::host::systemd::JobKind;

/// Who acted, as a checkpoint names them.
pub fn actor(scope: &Scope) -> String {
    match scope {
        Scope::All => "admin".into(),
        Scope::Owner(o) => o.to_string(),
    }
}

/// The modules of a spec in words, for a checkpoint's why.
pub fn modules_words(modules: &[String]) -> String {
    if modules.is_empty() {
        "no modules".into()
    } else {
        modules.join(", ")
    }
}

/// What `undo` would do (shown before the person confirms) or did.
#[derive(Debug, Clone, Serialize)]
pub struct UndoPlan {
    pub name: String,
    /// The checkpoint it goes back to.
    pub target: Value,
    pub modules_now: Vec<String>,
    pub modules_then: Vec<String>,
    /// The workspace goes back to the checkpoint's snapshot.
    pub workspace: bool,
    /// The container is stopped for it and started again.
    pub restarts: bool,
}

/// What `undo` did.
#[derive(Debug, Clone, Serialize)]
pub struct Undone {
    #[serde(flatten)]
    pub plan: UndoPlan,
    /// The checkpoint taken first: `undo NAME <this>` undoes the undo.
    pub safety: u64,
}

impl Engine {
    fn history_of(&self, record: &Record) -> Result<History, EngineError> {
        self.checkpoints
            .load(&record.name, &record.owner, record.created_at)
            .map_err(io("reading the checkpoints"))
    }

    /// Takes a checkpoint of `record` now (the name's lock is held by the
    /// caller): the intent written down, a workspace snapshot, then the
    /// checkpoint. The caller settles it when its change is done
    /// ([`settle_checkpoint`](Self::settle_checkpoint)).
    pub(crate) async fn take_checkpoint(
        &self,
        record: &Record,
        kind: Kind,
        by: &str,
        why: &str,
        undoes: Option<u64>,
    ) -> Result<Checkpoint, EngineError> {
        let name = record.name.as_str();
        let mut history = self.history_of(record)?;
        let snapshot = if record.spec.workspace {
            history.pending = Some(now_secs());
            self.checkpoints
                .save(name, &history)
                .map_err(io("writing the checkpoints"))?;
            let taken = self
                .storage
                .snapshot(&record.owner, name, SNAPSHOT_REASON)
                .await
                .map_err(|e| {
                    let e = EngineError::from(e);
                    e.with_message(format!(
                        "cannot take the checkpoint ({}), so nothing was changed: {}",
                        kind.as_str(),
                        e.message()
                    ))
                });
            match taken {
                Ok(s) => Some(s.id),
                Err(e) => {
                    history.pending = None;
                    let _ = self.checkpoints.save(name, &history);
                    return Err(e);
                }
            }
        } else {
            None
        };
        fault::point("checkpoint:snapshot-taken");
        let profile_system = self
            .builder
            .nix()
            .current_system(name)
            .ok()
            .flatten()
            .map(|p| p.display().to_string());
        let c = Checkpoint {
            id: 0,
            at: now_secs(),
            by: by.to_string(),
            kind,
            why: why.to_string(),
            snapshot: snapshot.clone(),
            profile_system,
            system_path: record.system_path.clone(),
            drv_path: record.drv_path.clone(),
            modules: record.spec.modules.clone(),
            settings: record.spec.settings.clone(),
            undoes,
        };
        let id = history.push(c);
        history.pending = None;
        if let Err(e) = self.checkpoints.save(name, &history) {
            // Not written down: its snapshot would be nobody's.
            if let Some(s) = &snapshot {
                let _ = self.storage.delete_snapshot(&record.owner, name, s).await;
            }
            return Err(io("writing the checkpoints")(e));
        }
        tracing::info!(
            container = name,
            checkpoint = id,
            kind = kind.as_str(),
            by,
            "checkpoint taken"
        );
        history
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::HostError("the checkpoint just written is missing".into()))
    }

    /// After the change checkpoint `id` was taken for: when it was made
    /// (`done`), the oldest checkpoints past `storage.checkpoints_keep` go
    /// with their snapshots, never one in `protect`; when it failed and
    /// changed nothing, the checkpoint itself goes (nothing half-made is
    /// left, and a failed undo does not move where the next undo goes).
    pub(crate) async fn settle_checkpoint(
        &self,
        record: &Record,
        id: u64,
        done: bool,
        protect: &[u64],
    ) {
        let name = record.name.as_str();
        let Ok(mut history) = self.history_of(record) else {
            return;
        };
        let dropped = if done {
            history.prune(self.storage.config().checkpoints_keep, protect)
        } else {
            history.remove(id).into_iter().collect()
        };
        if dropped.is_empty() {
            return;
        }
        if let Err(e) = self.checkpoints.save(name, &history) {
            tracing::warn!(container = name, "writing the checkpoints: {e}");
            return;
        }
        for old in dropped {
            if let Some(s) = old.snapshot
                && let Err(e) = self.storage.delete_snapshot(&record.owner, name, &s).await
            {
                tracing::warn!(container = name, snapshot = %s, "removing a checkpoint's snapshot: {e}");
            }
        }
    }

    /// A checkpoint asked for by a front end: `command` before a command
    /// the person confirmed for the agent, `manual` otherwise.
    pub async fn checkpoint(
        &self,
        scope: &Scope,
        name: &str,
        kind: &str,
        why: &str,
    ) -> Result<Value, EngineError> {
        let kind = match kind {
            "" | "manual" => Kind::Manual,
            "command" => Kind::Command,
            other => {
                return Err(EngineError::InvalidArgument(format!(
                    "a checkpoint's kind is 'manual' or 'command', not '{}'",
                    other.escape_default()
                )));
            }
        };
        let why = why.trim();
        if why.chars().count() > 500 || why.chars().any(char::is_control) {
            return Err(EngineError::InvalidArgument(
                "a checkpoint's reason is one line of at most 500 characters".into(),
            ));
        }
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        let why = if why.is_empty() { "checkpoint" } else { why };
        let c = self
            .take_checkpoint(&record, kind, &actor(scope), why, None)
            .await?;
        self.settle_checkpoint(&record, c.id, true, &[]).await;
        Ok(c.public())
    }

    /// The container's checkpoints, oldest first.
    pub fn history(&self, scope: &Scope, name: &str) -> Result<Vec<Value>, EngineError> {
        let record = self.visible(scope, name)?;
        Ok(self
            .history_of(&record)?
            .checkpoints
            .iter()
            .map(Checkpoint::public)
            .collect())
    }

    fn undo_target(&self, record: &Record, to: u64) -> Result<Checkpoint, EngineError> {
        let name = &record.name;
        let history = self.history_of(record)?;
        let target = if to == 0 {
            history.default_target().cloned().ok_or_else(|| {
                EngineError::InvalidArgument(format!(
                    "'{name}' has no earlier checkpoint to go back to (`voxnix history {name}` lists them)"
                ))
            })?
        } else {
            history.get(to).cloned().ok_or_else(|| {
                EngineError::NotFound(format!(
                    "'{name}' has no checkpoint {to} (`voxnix history {name}` lists them)"
                ))
            })?
        };
        if let Some(system) = &target.profile_system
            && std::fs::symlink_metadata(system).is_err()
        {
            return Err(EngineError::Conflict(format!(
                "the system of checkpoint {} ({system}) is no longer in the Nix store; bring \
                 back its workspace alone with `voxnix restore {name} {}`",
                target.id,
                target.snapshot.as_deref().unwrap_or("SNAPSHOT")
            )));
        }
        Ok(target)
    }

    async fn plan(&self, record: &Record, target: &Checkpoint) -> Result<UndoPlan, EngineError> {
        let workspace = record.spec.workspace && target.snapshot.is_some();
        let running = self.machined.info(&record.name).await?.is_some();
        let then = self.undone_record(record, target);
        let start_changed = self.render_conf(record).ok() != self.render_conf(&then).ok();
        Ok(UndoPlan {
            name: record.name.clone(),
            target: target.public(),
            modules_now: record.spec.modules.clone(),
            modules_then: target.modules.clone(),
            workspace,
            restarts: running && (workspace || start_changed),
        })
    }

    /// The record as the checkpoint had it (modules, settings, system).
    fn undone_record(&self, record: &Record, target: &Checkpoint) -> Record {
        let mut r = record.clone();
        r.spec.modules = target.modules.clone();
        r.spec.settings = target.settings.clone();
        r.system_path = target.system_path.clone();
        r.drv_path = target.drv_path.clone();
        r
    }

    /// What `undo` would do; `to` 0: the default checkpoint.
    pub async fn plan_undo(
        &self,
        scope: &Scope,
        name: &str,
        to: u64,
    ) -> Result<UndoPlan, EngineError> {
        let record = self.visible(scope, name)?;
        let target = self.undo_target(&record, to)?;
        self.plan(&record, &target).await
    }

    /// Puts the container back to checkpoint `to` (0: the state before the
    /// last change; after an undo, the one before that). A checkpoint of
    /// the present is taken first. On a failure, the container is put back
    /// as it was before the undo.
    pub async fn undo(&self, scope: &Scope, name: &str, to: u64) -> Result<Undone, EngineError> {
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        self.refuse_unless_conf_is_ours(&record)?;
        let target = self.undo_target(&record, to)?;
        if record.spec.workspace
            && let Some(s) = &target.snapshot
            && !self
                .storage
                .snapshots(&record.owner, name)
                .await?
                .iter()
                .any(|x| &x.id == s)
        {
            return Err(EngineError::NotFound(format!(
                "the workspace snapshot of checkpoint {} ({s}) is gone (a restore of a kept \
                 workspace puts the one it replaces aside with its snapshots: `voxnix storage kept`)",
                target.id
            )));
        }
        // Today's rules for the modules it goes back to (one may have left
        // the library since), before anything changes.
        let mut client = record.spec.to_client_json();
        client["modules"] = serde_json::json!(target.modules);
        client["settings"] = serde_json::json!(target.settings);
        super::spec::parse_spec(&client.to_string(), &self.known_modules).map_err(|e| {
            EngineError::InvalidArgument(format!(
                "checkpoint {} cannot be gone back to: {e}",
                target.id
            ))
        })?;
        let plan = self.plan(&record, &target).await?;
        let safety = self
            .take_checkpoint(
                &record,
                Kind::Undo,
                &actor(scope),
                &format!("before undo to checkpoint {}", target.id),
                Some(target.id),
            )
            .await?;
        let mut then = self.undone_record(&record, &target);
        then.begin("undo");
        // Stopped only if it runs now, and started again only if stopped here.
        let stopped = plan.restarts && self.machined.info(name).await?.is_some();
        if stopped {
            self.ensure_conf(&record).await?;
            self.stop_unit(name).await?;
        }
        let mut workspace_restored = false;
        let result = self
            .apply_undo(&record, &then, &target, stopped, &mut workspace_restored)
            .await;
        if let Err(e) = &result {
            tracing::warn!(container = name, "undo failed ({e}); putting it back");
            let reverted = self.revert_undo(&record, &safety, workspace_restored).await;
            if stopped && let Err(e) = self.start_unit(name).await {
                tracing::warn!(
                    container = name,
                    "starting it again after a failed undo: {e}"
                );
            }
            // Put back whole: the undo's checkpoint goes, so the next undo
            // goes where this one was to go.
            if reverted {
                self.settle_checkpoint(&record, safety.id, false, &[]).await;
            }
            return Err(result
                .err()
                .unwrap_or_else(|| EngineError::HostError("the undo failed".into())));
        }
        then.finish("ok");
        self.records.put(&then).map_err(io("writing the record"))?;
        self.settle_checkpoint(&record, safety.id, true, &[target.id])
            .await;
        tracing::info!(
            container = name,
            to = target.id,
            safety = safety.id,
            "undo done"
        );
        if stopped && let Err(e) = self.start_unit(name).await {
            return Err(e.with_message(format!(
                "{name} is back at checkpoint {} (`voxnix undo {name} {}` undoes that), but it did not start again: {}; start it with `voxnix start {name}`",
                target.id,
                safety.id,
                e.message()
            )));
        }
        Ok(Undone {
            plan,
            safety: safety.id,
        })
    }

    async fn apply_undo(
        &self,
        record: &Record,
        then: &Record,
        target: &Checkpoint,
        stopped: bool,
        workspace_restored: &mut bool,
    ) -> Result<(), EngineError> {
        let name = record.name.as_str();
        if record.spec.workspace
            && let Some(s) = &target.snapshot
        {
            self.storage.restore(&record.owner, name, s).await?;
            *workspace_restored = true;
        }
        self.switch_profile(name, target.profile_system.as_deref())
            .await?;
        self.note_system_user(name, &then.spec);
        let has_tailscale = |r: &Record| r.spec.modules.iter().any(|m| m == "tailscale");
        if has_tailscale(then) && !has_tailscale(record) {
            self.tailscale_keys
                .mark_pending(name)
                .map_err(io("marking the container for its Tailscale enrolment"))?;
        }
        self.install(then).await?;
        self.records.put(then).map_err(io("writing the record"))?;
        let running = self.machined.info(name).await?.is_some();
        if running && !stopped {
            // Same start settings: switched in place, as update does.
            self.systemd
                .run_job(
                    JobKind::Reload,
                    &container_unit(name),
                    self.timeout(self.cfg.start_timeout_secs),
                )
                .await?;
            self.view.forget_os_release(name);
        }
        Ok(())
    }

    /// Points the profile at `system` (a new generation) unless it does.
    async fn switch_profile(&self, name: &str, system: Option<&str>) -> Result<(), EngineError> {
        let Some(system) = system else {
            return Ok(());
        };
        let nix = self.builder.nix();
        if nix.current_system(name)?.as_deref() == Some(Path::new(system)) {
            return Ok(());
        }
        let (_canceller, token) = crate::nix::process::cancel_pair();
        nix.install(name, Path::new(system), &token).await?;
        Ok(())
    }

    /// After a failed undo: the record, conf, profile and workspace as the
    /// safety checkpoint has them. Best effort, each step logged.
    async fn revert_undo(&self, record: &Record, safety: &Checkpoint, workspace: bool) -> bool {
        let name = record.name.as_str();
        let mut whole = true;
        if let Err(e) = self
            .switch_profile(name, safety.profile_system.as_deref())
            .await
        {
            whole = false;
            tracing::error!(
                container = name,
                "putting the profile back after a failed undo: {e}"
            );
        }
        if let Err(e) = self.install(record).await {
            whole = false;
            tracing::error!(
                container = name,
                "putting the conf back after a failed undo: {e}"
            );
        }
        if let Err(e) = self.records.put(record) {
            whole = false;
            tracing::error!(
                container = name,
                "putting the record back after a failed undo: {e}"
            );
        }
        if workspace
            && let Some(s) = &safety.snapshot
            && let Err(e) = self.storage.restore(&record.owner, name, s).await
        {
            whole = false;
            tracing::error!(
                container = name,
                "putting the workspace back after a failed undo: {e}"
            );
        }
        whole
    }

    /// At start: a checkpoint whose snapshot was being taken when the
    /// daemon stopped (its history says so: `pending`) is written down from
    /// that snapshot as a `recovered` checkpoint (of the container as its
    /// record is, which the interrupted change had not changed yet); with no
    /// such snapshot, the mark goes. Returns how many were recovered.
    pub async fn recover_checkpoints(&self) -> u32 {
        let mut found = 0;
        for (name, record) in self.records.all() {
            let lock = self.lock_for(&name);
            let _guard = lock.lock().await;
            let Ok(mut history) = self.history_of(&record) else {
                continue;
            };
            let Some(since) = history.pending else {
                continue;
            };
            let snaps = if record.spec.workspace {
                match self.storage.snapshots(&record.owner, &name).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(container = %name, "cannot list snapshots to recover a checkpoint: {e}");
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            let known: std::collections::BTreeSet<String> = history
                .checkpoints
                .iter()
                .filter_map(|c| c.snapshot.clone())
                .collect();
            let orphans: Vec<_> = snaps
                .into_iter()
                .filter(|s| {
                    s.reason == SNAPSHOT_REASON && s.created >= since && !known.contains(&s.id)
                })
                .collect();
            let profile_system = self
                .builder
                .nix()
                .current_system(&name)
                .ok()
                .flatten()
                .map(|p| p.display().to_string());
            for s in orphans {
                history.push(Checkpoint {
                    id: 0,
                    at: s.created,
                    by: "voxnix".into(),
                    kind: Kind::Recovered,
                    why:
                        "taken just before the daemon stopped; what it was for was not written down"
                            .into(),
                    snapshot: Some(s.id.clone()),
                    profile_system: profile_system.clone(),
                    system_path: record.system_path.clone(),
                    drv_path: record.drv_path.clone(),
                    modules: record.spec.modules.clone(),
                    settings: record.spec.settings.clone(),
                    undoes: None,
                });
                found += 1;
            }
            history.pending = None;
            match self.checkpoints.save(&name, &history) {
                Ok(()) => {
                    tracing::info!(container = %name, "an interrupted checkpoint was settled after a restart")
                }
                Err(e) => tracing::warn!(container = %name, "writing recovered checkpoints: {e}"),
            }
        }
        found
    }
}
