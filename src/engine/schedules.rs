//! Which snapshot schedule applies to a container: its own (`voxnix schedule
//! NAME TIERS`), else its owner's for all their containers (`voxnix schedule
//! --all TIERS`), else the administrator's (`storage.snapshot_schedule`).
//! Each is capped by `storage.snapshot_schedule_max`. An owner's choice is
//! kept in `<state_dir>/owner-schedules.json` (root-only, atomic).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::records::Record;
use super::{Engine, EngineError, Scope, io as io_err};
use crate::model::Owner;
use crate::storage::tiers::Tiers;

/// Owners' own schedules (`off`, or tiers), in memory and on disk.
#[derive(Debug)]
pub struct OwnerSchedules {
    path: PathBuf,
    map: Mutex<BTreeMap<String, String>>,
}

impl OwnerSchedules {
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join("owner-schedules.json");
        let map = match std::fs::read(&path) {
            Ok(t) => serde_json::from_slice(&t).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} cannot be read: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            map: Mutex::new(map),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, owner: &Owner) -> Option<String> {
        self.lock().get(owner.as_str()).cloned()
    }

    /// Sets (`Some`) or removes (`None`) the owner's schedule, on disk first.
    pub fn set(&self, owner: &Owner, schedule: Option<String>) -> io::Result<()> {
        let mut m = self.lock();
        let mut next = m.clone();
        match schedule {
            Some(s) => next.insert(owner.to_string(), s),
            None => next.remove(owner.as_str()),
        };
        let text = serde_json::to_vec_pretty(&next).map_err(io::Error::other)?;
        crate::atomic_file::write_root_only(&self.path, &text)?;
        *m = next;
        Ok(())
    }
}

/// `off`, `default` (None) or capped tiers, from what a person typed.
fn parse_choice(text: &str, max: &Tiers) -> Result<Option<String>, EngineError> {
    match text.trim() {
        "" | "default" => Ok(None),
        "off" => Ok(Some("off".to_string())),
        t => {
            let tiers = Tiers::parse(t)
                .map_err(|e| EngineError::InvalidArgument(format!("schedule: {e}")))?;
            tiers
                .capped_by(max)
                .map_err(|e| EngineError::InvalidArgument(format!("schedule: {e}")))?;
            Ok(Some(tiers.to_string()))
        }
    }
}

fn parsed(text: Option<&str>) -> Option<Tiers> {
    text.and_then(|t| Tiers::parse(t).ok())
}

impl Engine {
    /// The tiers in force for `record`: its own, its owner's, or `host`.
    pub(crate) fn tiers_for(&self, record: &Record, host: Tiers) -> Tiers {
        parsed(record.snapshot_schedule.as_deref())
            .or_else(|| parsed(self.owner_schedules.get(&record.owner).as_deref()))
            .unwrap_or(host)
    }

    /// Gives a container a snapshot schedule of its own: tiers such as
    /// `hourly=24,daily=7` (each at most storage.snapshot_schedule_max),
    /// `off`, or `default` (its owner's, else the administrator's).
    /// Returns the schedule it now has.
    pub async fn set_schedule(
        &self,
        scope: &Scope,
        name: &str,
        text: &str,
    ) -> Result<Value, EngineError> {
        self.with_workspace(scope, name)?;
        let own = parse_choice(text, &self.storage.config().tiers_max()?)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut record = self.with_workspace(scope, name)?;
        self.ensure_ready(&record)?;
        record.snapshot_schedule = own;
        self.records
            .put(&record)
            .map_err(io_err("writing the record"))?;
        tracing::info!(container = name, schedule = ?record.snapshot_schedule, "snapshot schedule set");
        self.schedule_json(&record)
    }

    /// Sets the acting owner's schedule for all their containers that have
    /// none of their own (`default`: back to the administrator's).
    pub fn set_owner_schedule(&self, owner: &Owner, text: &str) -> Result<Value, EngineError> {
        let choice = parse_choice(text, &self.storage.config().tiers_max()?)?;
        self.owner_schedules
            .set(owner, choice)
            .map_err(io_err("writing the owners' snapshot schedules"))?;
        tracing::info!(%owner, schedule = ?self.owner_schedules.get(owner), "owner's snapshot schedule set");
        self.owner_schedule_json(owner)
    }

    /// `{owner, schedule, own}`: what an owner's containers without one of
    /// their own follow.
    pub(crate) fn owner_schedule_json(&self, owner: &Owner) -> Result<Value, EngineError> {
        let host = self.storage.config().tiers()?;
        let own = self.owner_schedules.get(owner);
        let schedule = parsed(own.as_deref()).unwrap_or(host);
        Ok(json!({
            "owner": owner.as_str(),
            "schedule": schedule.to_string(),
            "own": own.is_some(),
        }))
    }

    /// `{name, schedule, own, whose}`: the tiers in force, whether they are
    /// the container's own, and whose they are (`container`, `owner`,
    /// `host`).
    pub(crate) fn schedule_json(&self, record: &Record) -> Result<Value, EngineError> {
        let host = self.storage.config().tiers()?;
        let whose = if record.snapshot_schedule.is_some() {
            "container"
        } else if self.owner_schedules.get(&record.owner).is_some() {
            "owner"
        } else {
            "host"
        };
        Ok(json!({
            "name": record.name,
            "schedule": self.tiers_for(record, host).to_string(),
            "own": record.snapshot_schedule.is_some(),
            "whose": whose,
        }))
    }
}
