//! Coalescing of reads that must still ask the host (a unit's resource use,
//! a container's journal): requests for one key wait for one fetch and share
//! its answer, so a hundred clients polling one container cost the host one
//! question, not a hundred, and never queue behind each other's questions.
//!
//! An answer is shared with every request that arrived before it was
//! complete, and for `fresh_for` after; a request arriving later asks again.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One key's last answer, with when its fetch ended.
type Slot<V> = Arc<tokio::sync::Mutex<Option<(Instant, V)>>>;

pub struct Coalesced<K, V> {
    fresh_for: Duration,
    slots: Mutex<HashMap<K, Slot<V>>>,
}

/// Keys kept at most; beyond it, slots nobody waits on are dropped.
const MAX_KEYS: usize = 1024;

impl<K: Eq + Hash + Clone, V: Clone> Coalesced<K, V> {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &K) -> Slot<V> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= MAX_KEYS && !slots.contains_key(key) {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// The answer for `key`: a shared one if it ended after this request
    /// arrived (or within `fresh_for` before), else `fetch`'s. Errors are
    /// not kept: the next request asks again.
    pub async fn get<E, F, Fut>(&self, key: K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let arrived = Instant::now();
        let slot = self.slot(&key);
        let mut held = slot.lock().await;
        let answer = match held.as_ref() {
            Some((ended, v)) if *ended + self.fresh_for >= arrived => Ok(v.clone()),
            _ => {
                let v = fetch().await;
                if let Ok(v) = &v {
                    *held = Some((Instant::now(), v.clone()));
                }
                v
            }
        };
        drop(held);
        if self.fresh_for.is_zero() {
            // Kept only for requests already waiting: when none is, the
            // answer goes (a journal read can be megabytes).
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&slot) == 2 {
                slots.remove(&key);
            }
        }
        answer
    }

    /// Forgets `key`'s answer (what it describes changed).
    pub fn forget(&self, key: &K) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Forgets every key `drop` is true of.
    pub fn forget_where(&self, mut drop: impl FnMut(&K) -> bool) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !drop(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch_and_later_ones_ask_again() {
        let c: Arc<Coalesced<&str, usize>> = Arc::new(Coalesced::new(Duration::ZERO));
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, fetches, gate) = (c.clone(), fetches.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                c.get("a", || async {
                    let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                    gate.notified().await;
                    Ok::<_, ()>(n)
                })
                .await
            }));
        }
        // Everyone is waiting on the first fetch.
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(1));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Nothing is kept once nobody waits (fresh_for is zero), and a
        // request after the answer asks again.
        assert!(c.slots.lock().unwrap().is_empty());
        let again = c.get("a", || async { Ok::<_, ()>(2) }).await;
        assert_eq!(again, Ok(2));
        // Another key is not held up by this one's fetch.
        assert_eq!(c.get("b", || async { Ok::<_, ()>(7) }).await, Ok(7));
    }

    #[tokio::test]
    async fn answers_are_kept_for_their_freshness_and_errors_not_at_all() {
        let c: Coalesced<u8, u32> = Coalesced::new(Duration::from_secs(3600));
        assert_eq!(
            c.get(1, || async { Err::<u32, _>("down") }).await,
            Err("down")
        );
        assert_eq!(c.get(1, || async { Ok::<_, &str>(5) }).await, Ok(5));
        assert_eq!(c.get(1, || async { Ok::<_, &str>(6) }).await, Ok(5));
        c.forget(&1);
        assert_eq!(c.get(1, || async { Ok::<_, &str>(6) }).await, Ok(6));
        c.forget_where(|k| *k == 1);
        assert_eq!(c.get(1, || async { Ok::<_, &str>(8) }).await, Ok(8));
    }
}
