//! Checkpoints: a container's state just before voxnix changed it (an update
//! of its modules, a restore, a command the person confirmed for the agent,
//! an undo), and just after it was created. Each holds the workspace snapshot
//! taken then, the system its profile pointed at, and who and why. `undo`
//! goes back to one (engine/undo.rs).
//!
//! One root-only file per container under `<state_dir>/checkpoints/`,
//! replaced atomically on every change, so a crash leaves the list as it was
//! before or after a checkpoint, never torn. The file names the container's
//! incarnation (owner and creation time): a later container of the same name
//! never reads an earlier one's history.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::Owner;

/// The snapshot reason of checkpoints' snapshots: retention and the schedule
/// never prune these; the checkpoint limit does, with their checkpoint.
pub const SNAPSHOT_REASON: &str = crate::storage::retention::CHECKPOINT;

/// What a checkpoint was taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Just after the container was created.
    Create,
    /// Before an update of its modules.
    Update,
    /// Before a snapshot, kept workspace or single path was brought back.
    Restore,
    /// Before a command the person confirmed for the agent.
    Command,
    /// Before an undo (so that the undo can be undone).
    Undo,
    /// Asked for by name (`voxnix checkpoint`).
    Manual,
    /// Its snapshot was taken, but the daemon stopped before it was written
    /// down; found and written down at the next start.
    Recovered,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Update => "update",
            Kind::Restore => "restore",
            Kind::Command => "command",
            Kind::Undo => "undo",
            Kind::Manual => "manual",
            Kind::Recovered => "recovered",
        }
    }
}

/// One checkpoint, as kept in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// 1, 2, 3, ... per container, never reused.
    pub id: u64,
    /// Seconds since the epoch.
    pub at: u64,
    /// The owner who acted, or `admin`.
    pub by: String,
    pub kind: Kind,
    /// What happened or was about to, in words.
    pub why: String,
    /// The workspace snapshot (none: no workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The store path the container's profile pointed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_system: Option<String>,
    /// The record's system path and derivation then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drv_path: Option<String>,
    /// Its modules and settings then: what an undo puts back.
    pub modules: Vec<String>,
    #[serde(default)]
    pub settings: BTreeMap<String, Map<String, Value>>,
    /// For an undo's checkpoint: the checkpoint it went back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<u64>,
}

impl Checkpoint {
    /// What the API and the front ends see (no settings: they may hold
    /// personal values, and the person has them already).
    pub fn public(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "at": self.at,
            "by": self.by,
            "kind": self.kind.as_str(),
            "why": self.why,
            "snapshot": self.snapshot,
            "system": self.profile_system,
            "modules": self.modules,
            "undoes": self.undoes,
        })
    }
}

/// The file of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub version: u32,
    pub owner: Owner,
    /// The record's `created_at`: which container of this name it is.
    pub created_at: u64,
    pub next_id: u64,
    pub checkpoints: Vec<Checkpoint>,
    /// Set (and written) just before a checkpoint's snapshot is taken, and
    /// cleared with the checkpoint written: after a crash in between, the
    /// next start adopts that snapshot (taken at or after this time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}

impl History {
    pub fn new(owner: Owner, created_at: u64) -> Self {
        Self {
            version: 1,
            owner,
            created_at,
            next_id: 1,
            checkpoints: Vec::new(),
            pending: None,
        }
    }

    pub fn get(&self, id: u64) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.id == id)
    }

    /// Adds `c` with the next id, which it returns.
    pub fn push(&mut self, mut c: Checkpoint) -> u64 {
        c.id = self.next_id;
        self.next_id += 1;
        let id = c.id;
        self.checkpoints.push(c);
        id
    }

    /// Removes the oldest checkpoints beyond `keep` (0 keeps all), never
    /// one in `protect`; returns them (their snapshots are the caller's to
    /// delete).
    pub fn prune(&mut self, keep: u32, protect: &[u64]) -> Vec<Checkpoint> {
        let mut excess = self.checkpoints.len().saturating_sub(if keep == 0 {
            usize::MAX
        } else {
            keep as usize
        });
        let mut dropped = Vec::new();
        self.checkpoints.retain(|c| {
            if excess > 0 && !protect.contains(&c.id) {
                excess -= 1;
                dropped.push(c.clone());
                false
            } else {
                true
            }
        });
        dropped
    }

    /// Takes checkpoint `id` out (a change that failed and changed nothing).
    pub fn remove(&mut self, id: u64) -> Option<Checkpoint> {
        let i = self.checkpoints.iter().position(|c| c.id == id)?;
        Some(self.checkpoints.remove(i))
    }

    /// Where `undo` without a checkpoint goes: the newest checkpoint, i.e.
    /// the state before the last change. After an undo (whose own
    /// checkpoint is the newest), further back: the one before the
    /// checkpoint that undo went to, so undo after undo keeps going back
    /// (the undo's own checkpoint, named, goes forward again).
    pub fn default_target(&self) -> Option<&Checkpoint> {
        let newest = self.checkpoints.last()?;
        if newest.kind != Kind::Undo {
            return Some(newest);
        }
        let went_to = newest.undoes?;
        let pos = self.checkpoints.iter().position(|c| c.id == went_to)?;
        pos.checked_sub(1).map(|p| &self.checkpoints[p])
    }
}

/// The checkpoint files.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("checkpoints"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The history of the container `name` owned by `owner` and created at
    /// `created_at`: empty when there is none, or when the file is an
    /// earlier container's of this name.
    pub fn load(&self, name: &str, owner: &Owner, created_at: u64) -> io::Result<History> {
        let fresh = History::new(owner.clone(), created_at);
        let text = match std::fs::read(self.path(name)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(fresh),
            Err(e) => return Err(e),
        };
        let h: History = match serde_json::from_slice(&text) {
            Ok(h) => h,
            Err(e) => {
                // Set aside, not in the way of every later change.
                let aside = self.dir.join(format!("{name}.json.unreadable"));
                tracing::warn!(
                    container = name,
                    "the checkpoint file cannot be read ({e}); moved to {}",
                    aside.display()
                );
                std::fs::rename(self.path(name), &aside)?;
                return Ok(fresh);
            }
        };
        if &h.owner != owner || h.created_at != created_at {
            return Ok(fresh);
        }
        Ok(h)
    }

    pub fn save(&self, name: &str, h: &History) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(h).map_err(io::Error::other)?;
        crate::atomic_file::write_root_only(&self.path(name), &text)
    }

    /// Forgets `name`'s history (destroy).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        crate::atomic_file::remove(&self.dir.join(format!("{name}.json.unreadable")))?;
        crate::atomic_file::remove(&self.path(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(kind: Kind, undoes: Option<u64>) -> Checkpoint {
        Checkpoint {
            id: 0,
            at: 1,
            by: "unix:1".into(),
            kind,
            why: String::new(),
            snapshot: None,
            profile_system: None,
            system_path: None,
            drv_path: None,
            modules: vec![],
            settings: BTreeMap::new(),
            undoes,
        }
    }

    fn owner(s: &str) -> Owner {
        Owner::parse(s).unwrap()
    }

    #[test]
    fn ids_grow_and_the_oldest_go_past_the_limit_but_never_a_protected_one() {
        let mut h = History::new(owner("unix:1"), 5);
        for _ in 0..3 {
            h.push(cp(Kind::Update, None));
            assert!(h.prune(3, &[]).is_empty());
        }
        assert_eq!(h.push(cp(Kind::Update, None)), 4);
        let ids = |v: &[Checkpoint]| v.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(&h.prune(3, &[])), vec![1]);
        assert_eq!(ids(&h.checkpoints), vec![2, 3, 4]);
        h.push(cp(Kind::Undo, Some(2)));
        // 2 is what an undo went to: 3 goes instead.
        assert_eq!(ids(&h.prune(3, &[2])), vec![3]);
        assert_eq!(ids(&h.checkpoints), vec![2, 4, 5]);
        assert!(h.prune(0, &[]).is_empty(), "0 keeps all");
        assert_eq!(h.remove(4).map(|c| c.id), Some(4));
        assert_eq!(ids(&h.checkpoints), vec![2, 5]);
        assert_eq!(h.push(cp(Kind::Manual, None)), 6, "ids are never reused");
    }

    #[test]
    fn undo_after_undo_keeps_going_back() {
        let mut h = History::new(owner("unix:1"), 5);
        h.push(cp(Kind::Create, None)); // 1
        h.push(cp(Kind::Update, None)); // 2
        h.push(cp(Kind::Command, None)); // 3
        assert_eq!(h.default_target().map(|c| c.id), Some(3));
        h.push(cp(Kind::Undo, Some(3))); // 4: went back to 3
        assert_eq!(h.default_target().map(|c| c.id), Some(2));
        h.push(cp(Kind::Undo, Some(2))); // 5: went back to 2
        assert_eq!(h.default_target().map(|c| c.id), Some(1));
        h.push(cp(Kind::Undo, Some(1))); // 6: went back to 1
        assert_eq!(h.default_target(), None, "nothing before the create");
    }

    #[test]
    fn an_earlier_container_of_the_name_has_no_history_here() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        let mut h = History::new(owner("unix:1"), 5);
        h.push(cp(Kind::Create, None));
        store.save("dev", &h).unwrap();
        assert_eq!(store.load("dev", &owner("unix:1"), 5).unwrap(), h);
        let other = store.load("dev", &owner("unix:2"), 5).unwrap();
        assert!(other.checkpoints.is_empty(), "another owner's");
        let later = store.load("dev", &owner("unix:1"), 6).unwrap();
        assert!(later.checkpoints.is_empty(), "a later container's");
        store.remove("dev").unwrap();
        assert!(
            store
                .load("dev", &owner("unix:1"), 5)
                .unwrap()
                .checkpoints
                .is_empty()
        );
    }
}
