//! The system cache: a container's NixOS system depends only on its module
//! set, its non-personal settings, the module library, nixpkgs and voxnix's
//! own Nix files (never on its name or owner: nix/mkContainer.nix), so one
//! built system serves every container that asks for the same. Each is kept
//! under a key, a SHA-256 of exactly those inputs; a create or update whose
//! key is known skips evaluation and build and only points its profile at
//! the system.
//!
//! The index is `<state_dir>/system-cache.json` (root-only, replaced
//! atomically). Each cached system has GC roots of its own,
//! `<gcroots_dir>/cache/<key>` (the system) and `<key>.drv` (its
//! derivation, for introspection), kept while a container uses it and then
//! for `[nix] cache_keep_days`, at most `cache_max_entries` unused ones.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

/// The user that stands for the configuration's pre-warmed module sets
/// (not a container name: those have no parentheses).
pub const PREWARM: &str = "(prewarm)";

/// One cached system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The store path the profiles point at.
    pub system: String,
    /// What a record keeps as its system path (None: the sandbox's
    /// host-image builder, whose containers boot the appliance's /usr).
    #[serde(default)]
    pub system_path: Option<String>,
    #[serde(default)]
    pub drv_path: Option<String>,
    /// Seconds since the epoch.
    pub built_at: u64,
    /// When the last container stopped using it (or it was built).
    pub last_used: u64,
    /// The containers that use it now.
    #[serde(default)]
    pub users: BTreeSet<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Entry>,
}

/// What `voxnix health` shows of the cache.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub in_use: usize,
    pub keep_days: u32,
    pub max_entries: u32,
}

/// The cache's index and roots.
#[derive(Debug)]
pub struct SystemCache {
    file: PathBuf,
    roots: PathBuf,
    index: Mutex<Index>,
}

impl SystemCache {
    pub fn open(state_dir: &Path, gcroots_dir: &Path) -> io::Result<Self> {
        let file = state_dir.join("system-cache.json");
        let index = match std::fs::read(&file) {
            Ok(t) => serde_json::from_slice(&t).unwrap_or_else(|e| {
                tracing::warn!("the system cache's index cannot be read ({e}); starting it afresh");
                Index::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            file,
            roots: gcroots_dir.join("cache"),
            index: Mutex::new(index),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, index: &Index) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(index).map_err(io::Error::other)?;
        crate::atomic_file::write_root_only(&self.file, &text)
    }

    /// The system cached under `key`, if it is still in the store.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let e = self.lock().entries.get(key).cloned()?;
        std::fs::symlink_metadata(&e.system).is_ok().then_some(e)
    }

    /// Caches `entry` under `key` (its roots first) with `user` using it
    /// (and no other system), or, for a pre-warmed one, [`PREWARM`].
    pub fn insert(&self, key: &str, mut entry: Entry, user: &str) -> io::Result<()> {
        std::fs::create_dir_all(&self.roots)?;
        replace_link(&self.roots.join(key), Path::new(&entry.system))?;
        if let Some(drv) = &entry.drv_path {
            replace_link(&self.roots.join(format!("{key}.drv")), Path::new(drv))?;
        }
        let mut index = self.lock();
        if user != PREWARM {
            for e in index.entries.values_mut() {
                e.users.remove(user);
            }
        }
        entry.users.insert(user.to_string());
        index.entries.insert(key.to_string(), entry);
        self.save(&index)
    }

    /// Marks the system under `key` as one the configuration pre-warms:
    /// kept, as if a container used it.
    pub fn pin(&self, key: &str) -> io::Result<()> {
        let mut index = self.lock();
        if let Some(e) = index.entries.get_mut(key) {
            e.users.insert(PREWARM.to_string());
        }
        self.save(&index)
    }

    /// Forgets every pre-warm mark (before the configured ones are set
    /// again, so a set taken out of the configuration ages out).
    pub fn unpin_all(&self, now: u64) -> io::Result<()> {
        self.release(PREWARM, now)
    }

    /// `user` now uses the system under `key` (and no other).
    pub fn use_key(&self, key: &str, user: &str, now: u64) -> io::Result<()> {
        let mut index = self.lock();
        for (k, e) in index.entries.iter_mut() {
            if k != key && e.users.remove(user) {
                e.last_used = now;
            }
        }
        if let Some(e) = index.entries.get_mut(key) {
            e.users.insert(user.to_string());
            e.last_used = now;
        }
        self.save(&index)
    }

    /// `user` (a destroyed container) uses none any more.
    pub fn release(&self, user: &str, now: u64) -> io::Result<()> {
        let mut index = self.lock();
        let mut changed = false;
        for e in index.entries.values_mut() {
            if e.users.remove(user) {
                e.last_used = now;
                changed = true;
            }
        }
        if changed { self.save(&index) } else { Ok(()) }
    }

    /// Removes unused systems unused for more than `keep_days` days (0: at
    /// once), and the oldest unused ones past `max_entries` (0: no limit),
    /// with their roots. Returns the keys removed.
    pub fn prune(&self, now: u64, keep_days: u32, max_entries: u32) -> io::Result<Vec<String>> {
        let mut index = self.lock();
        let max_age = u64::from(keep_days) * 86_400;
        let mut unused: Vec<(String, u64)> = index
            .entries
            .iter()
            .filter(|(_, e)| e.users.is_empty())
            .map(|(k, e)| (k.clone(), e.last_used))
            .collect();
        unused.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        let mut gone = Vec::new();
        for (i, (k, last)) in unused.iter().enumerate() {
            let old = now.saturating_sub(*last) > max_age || keep_days == 0;
            let over = max_entries > 0 && i >= max_entries as usize;
            if old || over {
                gone.push(k.clone());
            }
        }
        if gone.is_empty() {
            return Ok(gone);
        }
        for k in &gone {
            index.entries.remove(k);
        }
        self.save(&index)?;
        for k in &gone {
            for root in [self.roots.join(k), self.roots.join(format!("{k}.drv"))] {
                crate::atomic_file::remove(&root)?;
            }
            tracing::info!(key = %k, "system cache: an unused system's roots removed");
        }
        Ok(gone)
    }

    pub fn stats(&self, keep_days: u32, max_entries: u32) -> CacheStats {
        let index = self.lock();
        CacheStats {
            entries: index.entries.len(),
            in_use: index
                .entries
                .values()
                .filter(|e| !e.users.is_empty())
                .count(),
            keep_days,
            max_entries,
        }
    }

    /// The roots directory (for tests and health).
    pub fn roots_dir(&self) -> &Path {
        &self.roots
    }
}

/// Points the link `at` at `target` (replacing what was there), atomically.
fn replace_link(at: &Path, target: &Path) -> io::Result<()> {
    let tmp = at.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, at)
}

/// A content hash of the module library and voxnix's own Nix files
/// (`modules/` and `nix/` under `library_dir`, without `nix/tests/`): every
/// file's path and bytes, in path order.
pub fn library_hash(library_dir: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    for top in ["modules", "nix"] {
        collect(&library_dir.join(top), Path::new(top), &mut files)?;
    }
    files.sort();
    let mut h = Context::new(&SHA256);
    for rel in files {
        let bytes = std::fs::read(library_dir.join(&rel))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update(&[0]);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex(h.finish().as_ref()))
}

fn collect(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let r = rel.join(&name);
        if r == Path::new("nix/tests") {
            continue;
        }
        let t = e.file_type()?;
        if t.is_dir() {
            collect(&e.path(), &r, out)?;
        } else if t.is_file() {
            out.push(r);
        }
    }
    Ok(())
}

/// The key of a system: every input it is built from, and nothing else.
pub fn key(builder: &str, nixpkgs: &str, library: &str, build_json: &serde_json::Value) -> String {
    let mut spec = build_json.clone();
    if let Some(o) = spec.as_object_mut() {
        // Neither the name nor the resource limits (applied by the host)
        // reach the system (nix/mkContainer.nix, nix/spec.nix's systemSpec).
        o.remove("name");
        o.remove("resources");
    }
    let mut h = Context::new(&SHA256);
    for part in [
        "voxnix-system-cache-v1",
        builder,
        nixpkgs,
        library,
        &spec.to_string(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(h.finish().as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(system: &Path) -> Entry {
        Entry {
            system: system.display().to_string(),
            system_path: None,
            drv_path: None,
            built_at: 0,
            last_used: 0,
            users: BTreeSet::new(),
        }
    }

    #[test]
    fn the_key_ignores_the_name_and_nothing_else() {
        let a = serde_json::json!({"name": "a", "modules": ["git"], "settings": {}});
        let b = serde_json::json!({"name": "b", "modules": ["git"], "settings": {}});
        let c = serde_json::json!({"name": "a", "modules": ["git", "fish"], "settings": {}});
        let k = |j: &serde_json::Value| key("nix", "/nixpkgs", "lib1", j);
        assert_eq!(k(&a), k(&b));
        assert_ne!(k(&a), k(&c));
        assert_ne!(k(&a), key("nix", "/nixpkgs2", "lib1", &a));
        assert_ne!(k(&a), key("nix", "/nixpkgs", "lib2", &a));
        assert_ne!(k(&a), key("host-image", "/nixpkgs", "lib1", &a));
        assert_eq!(k(&a).len(), 64);
    }

    #[test]
    fn users_keep_a_system_and_retention_removes_it_with_its_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let system = tmp.path().join("system");
        std::fs::write(&system, "").unwrap();
        let cache = SystemCache::open(tmp.path(), &tmp.path().join("gcroots")).unwrap();
        cache.insert("k1", entry(&system), "a").unwrap();
        cache.use_key("k1", "b", 10).unwrap();
        assert!(cache.get("k1").is_some());
        let root = cache.roots_dir().join("k1");
        assert_eq!(std::fs::read_link(&root).unwrap(), system);
        cache.release("a", 20).unwrap();
        assert!(cache.prune(20, 0, 0).unwrap().is_empty(), "b still uses it");
        cache.release("b", 30).unwrap();
        assert!(
            cache.prune(30 + 86_400, 1, 0).unwrap().is_empty(),
            "kept a day"
        );
        assert_eq!(cache.prune(30 + 86_401, 1, 0).unwrap(), ["k1"]);
        assert!(cache.get("k1").is_none());
        assert!(std::fs::symlink_metadata(&root).is_err(), "its root went");
        // Read back from disk: the same index.
        cache.insert("k2", entry(&system), "c").unwrap();
        let again = SystemCache::open(tmp.path(), &tmp.path().join("gcroots")).unwrap();
        assert_eq!(again.stats(1, 0).entries, 1);
        assert_eq!(again.stats(1, 0).in_use, 1);
        // Unused beyond the count limit: the oldest go first.
        again.release("c", 40).unwrap();
        again.insert("k3", entry(&system), "d").unwrap();
        again.release("d", 50).unwrap();
        assert_eq!(again.prune(60, 30, 1).unwrap(), ["k2"]);
    }
}
