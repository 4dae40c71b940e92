//! One async lock per key (a container's name, an owner's workspace), made on
//! first use and forgotten once nobody holds or waits for it: the map stays
//! as small as the set of keys in use, however many names come and go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Lock = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Lock>>,
}

impl KeyedLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// The lock of `key`; hold its guard for as long as the work on `key` runs.
    pub fn get(&self, key: &str) -> Lock {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // An entry only the map refers to is neither held nor awaited: drop
        // it. Whoever cloned a lock keeps it alive (and in the map) until done.
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(key.to_string()).or_default().clone()
    }

    /// How many keys have a lock now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_lock_per_key_and_unused_ones_are_forgotten() {
        let locks = KeyedLocks::new();
        let a = locks.get("a");
        let guard = a.lock().await;
        // The same key gives the same lock while it is in use.
        assert!(Arc::ptr_eq(&a, &locks.get("a")));
        assert!(locks.get("a").try_lock().is_err(), "held");
        assert!(locks.get("b").try_lock().is_ok(), "another key is free");
        // "b" was dropped by the next look-up; "a" stays while referenced.
        for i in 0..100 {
            drop(locks.get(&format!("n{i}")));
        }
        assert_eq!(locks.len(), 2, "a, and the last one looked up");
        drop(guard);
        drop(a);
        drop(locks.get("z"));
        assert_eq!(locks.len(), 1);
    }
}
