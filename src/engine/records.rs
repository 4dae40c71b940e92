//! Records: who owns which container, its spec, and the operation in flight.
//! One JSON file per container under `<state_dir>/containers/`, replaced
//! atomically, so a crash at any instant leaves either the old or the new
//! record. At start-up they are what reconcile compares the host against.
//! The store keeps a copy of every record in memory, written through: reads
//! (`get`, `all`) never touch the disk, so `List` costs no file reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::spec::ContainerSpec;
use crate::atomic_file;
use crate::model::Owner;

pub const RECORD_VERSION: u32 = 1;

/// Where a container is in its life. A record in `Creating` or `Destroying`
/// after a crash tells reconcile what to roll back or finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Creating,
    Ready,
    Destroying,
}

/// The last operation asked of a container, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastOperation {
    pub kind: String,
    pub started_at: u64,
    /// None while it runs (or when a crash interrupted it).
    pub finished_at: Option<u64>,
    /// "ok", or the error kind and message.
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub name: String,
    pub owner: Owner,
    pub spec: ContainerSpec,
    /// Seconds since the epoch.
    pub created_at: u64,
    pub phase: Phase,
    /// The built NixOS system, when there is one.
    pub system_path: Option<String>,
    /// The system's derivation (`.drv`), for introspection.
    pub drv_path: Option<String>,
    pub last_operation: Option<LastOperation>,
    /// Set (and written) before a create makes the workspace, so that a
    /// rollback, also one after a crash, removes what the create made and
    /// nothing older.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workspace_made_by_create: bool,
    /// Ports shared on purpose (`voxnix expose`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed: Vec<Exposure>,
    /// Host ports unexposed while the container ran: nspawn forwards them
    /// until that run ends, so no container may take one before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_host_ports: Vec<ReleasedPort>,
    /// The container's own snapshot schedule (`hourly=24,...`, or `off`);
    /// none: the administrator's (storage.snapshot_schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<String>,
}

/// Where an exposed port is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExposeTo {
    /// A host port from the administrator's range, forwarded by nspawn
    /// (NixOS's `HOST_PORT`) to the container's port.
    Host,
    /// The container's tailnet address only, through Tailscale Serve.
    Tailnet,
}

impl ExposeTo {
    pub fn as_str(self) -> &'static str {
        match self {
            ExposeTo::Host => "host",
            ExposeTo::Tailnet => "tailnet",
        }
    }
}

/// One exposed TCP port of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// The container's port.
    pub port: u16,
    pub to: ExposeTo,
    /// The host's port (`to = host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    pub added_at: u64,
    /// The same in microseconds: compared with the machine's start (a
    /// restart within the same second as the expose is common).
    #[serde(default)]
    pub added_at_usec: u64,
}

/// A host port no longer exposed whose forwarding the container's run at
/// `released_at_usec` still holds (nspawn sets it up at start and removes it
/// at exit; nothing changes it in between).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedPort {
    pub host_port: u16,
    /// The container's port it forwarded to.
    pub port: u16,
    pub released_at_usec: u64,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Record {
    pub fn new(name: &str, owner: Owner, spec: ContainerSpec) -> Self {
        let now = now_secs();
        Record {
            version: RECORD_VERSION,
            name: name.to_string(),
            owner,
            spec,
            created_at: now,
            phase: Phase::Creating,
            system_path: None,
            drv_path: None,
            last_operation: Some(LastOperation {
                kind: "create".into(),
                started_at: now,
                finished_at: None,
                outcome: None,
            }),
            workspace_made_by_create: false,
            exposed: Vec::new(),
            released_host_ports: Vec::new(),
            snapshot_schedule: None,
        }
    }

    pub fn begin(&mut self, kind: &str) {
        self.last_operation = Some(LastOperation {
            kind: kind.to_string(),
            started_at: now_secs(),
            finished_at: None,
            outcome: None,
        });
    }

    pub fn finish(&mut self, outcome: &str) {
        if let Some(op) = self.last_operation.as_mut() {
            op.finished_at = Some(now_secs());
            op.outcome = Some(outcome.to_string());
        }
    }
}

/// The records directory, and its records in memory.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
    memory: Arc<Mutex<Memory>>,
    /// Held across a write to disk (whose temporary file is named after
    /// the process): readers take only `memory`, never waiting on an fsync.
    writing: Arc<Mutex<()>>,
}

#[derive(Debug, Default)]
struct Memory {
    records: BTreeMap<String, Record>,
    /// Names whose file could not be read at open: `get` says so (as a
    /// read of the file did), so a create cannot overwrite one unseen.
    unreadable: std::collections::BTreeSet<String>,
}

impl RecordStore {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("containers");
        std::fs::create_dir_all(&dir)?;
        let store = Self {
            dir,
            memory: Arc::default(),
            writing: Arc::default(),
        };
        // Memory is filled from the disk only here; afterwards only `put`
        // and `remove` change it (a later scan racing a write could bring
        // back the record the write replaced).
        let (records, bad) = store.load_all();
        let unreadable = bad
            .iter()
            .filter_map(|(p, _)| {
                p.file_name()?
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        *store.memory() = Memory {
            records,
            unreadable,
        };
        Ok(store)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn put(&self, record: &Record) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(&record.name);
        let written = atomic_file::write(&path, &json, 0o600);
        // Memory follows what the disk holds: also when the rename went
        // through and only the directory's fsync failed.
        if written.is_ok() || std::fs::read(&path).is_ok_and(|b| b == json) {
            let mut memory = self.memory();
            memory.records.insert(record.name.clone(), record.clone());
            memory.unreadable.remove(&record.name);
        }
        written
    }

    /// The record of `name` (from memory); an error if its file could not
    /// be read at start-up.
    pub fn get(&self, name: &str) -> std::io::Result<Option<Record>> {
        let memory = self.memory();
        if memory.unreadable.contains(name) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the record of '{name}' could not be read (see the daemon's log)"),
            ));
        }
        Ok(memory.records.get(name).cloned())
    }

    /// Every readable record, by name (from memory).
    pub fn all(&self) -> BTreeMap<String, Record> {
        self.memory().records.clone()
    }

    /// Whether `name` has a readable record.
    pub fn contains(&self, name: &str) -> bool {
        self.memory().records.contains_key(name)
    }

    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(name);
        let removed = atomic_file::remove(&path);
        if removed.is_ok() || !path.exists() {
            let mut memory = self.memory();
            memory.records.remove(name);
            memory.unreadable.remove(name);
        }
        removed
    }

    /// Every readable record on disk, by name; unreadable files are
    /// returned apart so they are reported, never silently dropped or
    /// overwritten.
    pub fn load_all(&self) -> (BTreeMap<String, Record>, Vec<(PathBuf, String)>) {
        let mut ok = BTreeMap::new();
        let mut bad = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (ok, bad);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some((_, pid)) = file.strip_prefix('.').and_then(|f| f.rsplit_once(".tmp-")) {
                // The temporary file of a write (atomic_file names it after
                // the writing process). Ours: a write in progress in another
                // task, never touched (removing it made that write fail).
                // Another process's: a crash interrupted it; the record itself
                // is intact (old or new), this is garbage.
                if pid != std::process::id().to_string() {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            let Some(name) = file.strip_suffix(".json") else {
                continue;
            };
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) if r.name == name => {
                    ok.insert(r.name.clone(), r);
                }
                Ok(r) => bad.push((
                    path,
                    format!("file name does not match record name '{}'", r.name),
                )),
                Err(e) => bad.push((path, e)),
            }
        }
        (ok, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ContainerSpec {
        crate::engine::spec::parse_spec(&format!(r#"{{"name":"{name}"}}"#), &[]).unwrap()
    }

    #[test]
    fn records_round_trip_and_garbage_is_reported_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let mut r = Record::new("a1", Owner::parse("telegram:1").unwrap(), spec("a1"));
        store.put(&r).unwrap();
        r.phase = Phase::Ready;
        r.finish("ok");
        store.put(&r).unwrap();
        assert_eq!(store.get("a1").unwrap(), Some(r.clone()));
        // A torn temporary file from a crash, and a corrupt record.
        std::fs::write(dir.path().join("containers/.a1.json.tmp-42"), b"{").unwrap();
        std::fs::write(dir.path().join("containers/b2.json"), b"not json").unwrap();
        let (ok, bad) = store.load_all();
        assert_eq!(ok.len(), 1);
        assert_eq!(bad.len(), 1, "the corrupt record is reported");
        // And a store opened on it says so for that name.
        let again = RecordStore::open(dir.path()).unwrap();
        assert!(
            again.get("b2").is_err(),
            "an unreadable record reads as missing"
        );
        assert!(!again.contains("b2"));
        assert!(
            dir.path().join("containers/b2.json").exists(),
            "and left alone"
        );
        assert!(
            !dir.path().join("containers/.a1.json.tmp-42").exists(),
            "temporary garbage is removed"
        );
        store.remove("a1").unwrap();
        assert_eq!(store.get("a1").unwrap(), None);
    }

    #[test]
    fn memory_follows_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let r = Record::new("a1", Owner::parse("telegram:1").unwrap(), spec("a1"));
        store.put(&r).unwrap();
        // A second store opened on the directory (a restarted daemon)
        // starts with what the first wrote.
        let again = RecordStore::open(dir.path()).unwrap();
        assert_eq!(again.get("a1").unwrap(), Some(r.clone()));
        assert_eq!(again.all().len(), 1);
        // A write that fails leaves memory as it was.
        let mut changed = r.clone();
        changed.phase = Phase::Ready;
        std::fs::remove_dir_all(dir.path().join("containers")).unwrap();
        assert!(store.put(&changed).is_err());
        assert_eq!(store.get("a1").unwrap(), Some(r));
        store.remove("a1").unwrap();
        assert!(!store.contains("a1"));
    }

    #[test]
    fn a_write_in_progress_is_never_taken_for_a_crashed_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let recs = dir.path().join("containers");
        let ours = recs.join(format!(".a.json.tmp-{}", std::process::id()));
        let crashed = recs.join(".b.json.tmp-999999999");
        std::fs::write(&ours, "in progress").unwrap();
        std::fs::write(&crashed, "left by a crash").unwrap();
        let (ok, bad) = store.load_all();
        assert!(ok.is_empty() && bad.is_empty(), "{bad:?}");
        assert!(ours.exists(), "a concurrent write's file was removed");
        assert!(!crashed.exists(), "a crashed write's file stays");
    }
}
