//! Start-up reconciliation: compare the records with the host (conf files,
//! units, machined), finish or roll back what a crash interrupted, and report,
//! never delete, what voxnix does not own.

use std::collections::BTreeSet;

use serde::Serialize;

use super::records::Phase;
use super::{Engine, conf_problem};
use crate::host::conf::ConfState;
use crate::host::container_unit;

/// What reconcile did and found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Creates interrupted by a crash, rolled back.
    pub rolled_back: Vec<String>,
    /// Destroys interrupted by a crash, finished.
    pub finished_destroys: Vec<String>,
    /// Start/stop/restart interrupted by a crash (nothing to undo; recorded).
    pub interrupted: Vec<String>,
    /// Ready containers whose conf file was removed or replaced outside
    /// voxnix: left as found, reported (health says what to do).
    pub conf_problems: Vec<String>,
    /// Ready containers whose conf file was not what this voxnix writes
    /// (an older voxnix's, e.g. without user namespaces, or edited by
    /// hand), rewritten: in effect from their next start.
    pub updated_confs: Vec<String>,
    /// Conf files or machines with no voxnix record: left alone, reported.
    pub unmanaged: Vec<String>,
    /// Record files that could not be read: left alone, reported.
    pub unreadable_records: Vec<String>,
    /// Things reconcile could not fix, with the reason.
    pub errors: Vec<String>,
}

impl Engine {
    pub async fn reconcile(&self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let (records, bad) = self.records.load_all();
        for (path, why) in bad {
            tracing::error!("unreadable record {}: {why}", path.display());
            report
                .unreadable_records
                .push(format!("{}: {why}", path.display()));
        }
        for (name, mut record) in records {
            match record.phase {
                Phase::Creating => match self.rollback_create(&name).await {
                    Ok(()) => {
                        tracing::warn!(container = %name, "rolled back a create interrupted by a crash");
                        report.rolled_back.push(name);
                    }
                    Err(e) => report
                        .errors
                        .push(format!("{name}: rolling back its create: {e}")),
                },
                Phase::Destroying => match self.finish_destroy(&record).await {
                    Ok(()) => {
                        tracing::warn!(container = %name, "finished a destroy interrupted by a crash");
                        report.finished_destroys.push(name);
                    }
                    Err(e) => report
                        .errors
                        .push(format!("{name}: finishing its destroy: {e}")),
                },
                Phase::Ready => {
                    match self.conf_state(&record) {
                        ConfState::Ok => {}
                        ConfState::Outdated => match self.install(&record).await {
                            Ok(()) => {
                                tracing::info!(
                                    container = %name,
                                    "conf brought up to date; in effect from its next start"
                                );
                                report.updated_confs.push(name.clone());
                            }
                            Err(e) => report
                                .errors
                                .push(format!("{name}: updating its conf: {e}")),
                        },
                        // Removed or replaced outside voxnix: said, never
                        // silently undone (health shows it until repaired).
                        state => {
                            let problem = conf_problem(&name, state, &self.confs.path(&name));
                            tracing::warn!(container = %name, "{problem}");
                            report.conf_problems.push(problem);
                        }
                    }
                    if record
                        .last_operation
                        .as_ref()
                        .is_some_and(|op| op.finished_at.is_none())
                    {
                        record.finish("interrupted by a daemon restart");
                        if let Err(e) = self.records.put(&record) {
                            report.errors.push(format!("{name}: {e}"));
                        }
                        report.interrupted.push(name);
                    }
                }
            }
        }
        // The configuration's owner totals may have changed since the last
        // start: each owner's slice gets them now, running or not.
        let owners: BTreeSet<String> = self
            .records
            .load_all()
            .0
            .into_values()
            .map(|r| r.owner.to_string())
            .collect();
        for owner in owners {
            let slice = self.owner_slices.slice_of(&owner);
            if let Err(e) = self.set_owner_totals(&slice).await {
                report
                    .errors
                    .push(format!("{slice}: setting its totals: {e}"));
            }
        }
        let owned: BTreeSet<String> = self.records.load_all().0.into_keys().collect();
        report.unmanaged = self.unmanaged(&owned).await.0;
        for u in &report.unmanaged {
            tracing::info!("not managed by voxnix, left alone: {u}");
        }
        report
    }
}

/// What the admin's HostHealth reports.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub systemd_version: Option<String>,
    pub machined_reachable: bool,
    pub containers: usize,
    pub in_flight: Vec<String>,
    pub unmanaged: Vec<String>,
    pub unreadable_records: Vec<String>,
    /// Containers whose conf file was removed or replaced outside voxnix,
    /// each with what to do.
    pub conf_problems: Vec<String>,
    /// The front-end group (the bot's), and whether it exists now.
    pub frontend_group: String,
    pub frontend_group_exists: bool,
    /// The system cache and the Nix evaluations and builds since the
    /// daemon started (engine/systems.rs).
    pub systems: serde_json::Value,
}

impl Engine {
    /// A read-only look at the host: nothing is changed.
    pub async fn health(&self) -> Health {
        let (records, bad) = self.records.load_all();
        let owned: BTreeSet<String> = records.keys().cloned().collect();
        let (unmanaged, machined_reachable) = self.unmanaged(&owned).await;
        Health {
            systemd_version: self.systemd.manager().version().await.ok(),
            machined_reachable,
            containers: records.len(),
            in_flight: records
                .values()
                .filter(|r| r.phase != Phase::Ready)
                .map(|r| format!("{} ({:?})", r.name, r.phase))
                .collect(),
            unmanaged,
            unreadable_records: bad
                .into_iter()
                .map(|(p, why)| format!("{}: {why}", p.display()))
                .collect(),
            conf_problems: records
                .values()
                .filter(|r| r.phase == Phase::Ready)
                .filter_map(|r| match self.conf_state(r) {
                    ConfState::Ok | ConfState::Outdated => None,
                    state => Some(conf_problem(&r.name, state, &self.confs.path(&r.name))),
                })
                .collect(),
            frontend_group: self.cfg.frontend_group.clone(),
            frontend_group_exists: nix::unistd::Group::from_name(&self.cfg.frontend_group)
                .ok()
                .flatten()
                .is_some(),
            systems: self.systems_json(),
        }
    }

    /// Conf files and container machines without a voxnix record (voxnix
    /// leaves them alone and reports them), and whether machined answered.
    async fn unmanaged(&self, owned: &BTreeSet<String>) -> (Vec<String>, bool) {
        let mut found: Vec<String> = self
            .confs
            .names()
            .into_iter()
            .filter(|n| !owned.contains(n))
            .map(|n| format!("conf {}", self.confs.path(&n).display()))
            .collect();
        let machines = self.machined.list().await;
        for (name, class) in machines.as_deref().unwrap_or_default() {
            if class == "container" && !owned.contains(name) {
                found.push(format!("machine {name} ({})", container_unit(name)));
            }
        }
        (found, machines.is_ok())
    }
}
