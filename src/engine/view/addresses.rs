//! The live view's addresses: one watcher per running container
//! (`host::addresses`, netlink inside its network namespace), its results
//! kept in memory, so `List` and `Status` read addresses without asking
//! anyone. machined's signals start and stop the watchers (`watch.rs`); a
//! periodic reconcile repairs a missed signal. Where no watcher runs (it
//! could not be opened), readers fall back to machined.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::host::addresses::{AddressWatch, open_netns};

struct Entry {
    leader: u32,
    /// None until the first dump is in.
    addresses: Option<Vec<IpAddr>>,
    task: tokio::task::AbortHandle,
}

#[derive(Clone)]
pub struct AddressView {
    proc_root: PathBuf,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl AddressView {
    pub fn new(proc_root: PathBuf) -> Self {
        Self {
            proc_root,
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container's addresses, if its watcher has them.
    pub fn addresses(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.lock().get(name).and_then(|e| e.addresses.clone())
    }

    /// Watches `name`, whose leader is `leader` (again, if the leader
    /// changed: a new start). Failing to open is logged; readers then ask
    /// machined.
    pub fn watch(&self, name: &str, leader: u32) {
        if self.lock().get(name).is_some_and(|e| e.leader == leader) {
            return;
        }
        let watch = open_netns(&self.proc_root, leader).and_then(AddressWatch::open);
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    container = name,
                    "cannot watch its addresses ({e}); machined is asked instead"
                );
                self.forget(name);
                return;
            }
        };
        let entries = self.entries.clone();
        let key = name.to_string();
        // The map stays locked until the entry is in: the task's first
        // update cannot find it missing.
        let mut map = self.lock();
        let task = tokio::spawn(async move {
            loop {
                match watch.next().await {
                    Ok(addresses) => {
                        let mut map = entries.lock().unwrap_or_else(|p| p.into_inner());
                        match map.get_mut(&key) {
                            Some(e) if e.leader == leader => e.addresses = Some(addresses),
                            _ => return,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(container = %key, "its address watch ended ({e}); machined is asked instead");
                        let mut map = entries.lock().unwrap_or_else(|p| p.into_inner());
                        if map.get(&key).is_some_and(|e| e.leader == leader) {
                            map.remove(&key);
                        }
                        return;
                    }
                }
            }
        });
        let old = map.insert(
            name.to_string(),
            Entry {
                leader,
                addresses: None,
                task: task.abort_handle(),
            },
        );
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// Stops watching `name` (it stopped).
    pub fn forget(&self, name: &str) {
        if let Some(e) = self.lock().remove(name) {
            e.task.abort();
        }
    }

    /// The names watched now, with their leaders.
    pub fn watched(&self) -> Vec<(String, u32)> {
        self.lock()
            .iter()
            .map(|(n, e)| (n.clone(), e.leader))
            .collect()
    }
}
