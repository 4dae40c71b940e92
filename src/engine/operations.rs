//! Long operations (create) return at once with an id; their progress and end
//! are events, and a finished operation stays queryable for a while so a
//! client that missed the signal can still learn the result.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use super::EngineError;
use crate::model::Owner;

/// What the engine announces; the D-Bus API turns these into signals.
#[derive(Debug, Clone)]
pub enum Event {
    Progress {
        op: String,
        container: String,
        phase: String,
        message: String,
    },
    Finished {
        op: String,
        container: String,
        result: Result<serde_json::Value, EngineError>,
    },
    /// A container's state changed; `expected` is false when nobody asked.
    ContainerChanged {
        name: String,
        owner: Owner,
        state: String,
        expected: bool,
    },
    ContainerAdded {
        name: String,
    },
    ContainerRemoved {
        name: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationSnapshot {
    pub id: String,
    pub kind: String,
    pub container: String,
    #[serde(skip)]
    pub owner: Owner,
    pub phase: String,
    pub message: String,
    pub done: bool,
    pub ok: Option<bool>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<serde_json::Value>,
}

struct Entry {
    snapshot: OperationSnapshot,
    finished: Option<Instant>,
}

/// How long a finished operation stays queryable.
const KEEP_FINISHED: Duration = Duration::from_secs(600);
/// How many finished operations stay queryable at most (the oldest go first),
/// so a burst of operations cannot grow the daemon's memory for ten minutes.
const MAX_FINISHED: usize = 256;

pub struct Operations {
    next: AtomicU64,
    entries: Mutex<HashMap<String, Entry>>,
    events: broadcast::Sender<Event>,
}

impl Operations {
    pub fn new(events: broadcast::Sender<Event>) -> Self {
        Self {
            next: AtomicU64::new(1),
            entries: Mutex::new(HashMap::new()),
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn begin(&self, kind: &str, container: &str, owner: &Owner) -> String {
        let id = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let mut entries = self.lock();
        prune(&mut entries);
        entries.insert(
            id.clone(),
            Entry {
                snapshot: OperationSnapshot {
                    id: id.clone(),
                    kind: kind.into(),
                    container: container.into(),
                    owner: owner.clone(),
                    phase: "queued".into(),
                    message: String::new(),
                    done: false,
                    ok: None,
                    error_kind: None,
                    error_message: None,
                    result: None,
                },
                finished: None,
            },
        );
        id
    }

    pub fn progress(&self, id: &str, phase: &str, message: &str) {
        let container = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(id) else { return };
            e.snapshot.phase = phase.into();
            e.snapshot.message = message.into();
            e.snapshot.container.clone()
        };
        tracing::info!(op = id, container = %container, phase, "{message}");
        let _ = self.events.send(Event::Progress {
            op: id.into(),
            container,
            phase: phase.into(),
            message: message.into(),
        });
    }

    pub fn finish(&self, id: &str, result: Result<serde_json::Value, EngineError>) {
        let container = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(id) else { return };
            e.finished = Some(Instant::now());
            let s = &mut e.snapshot;
            s.done = true;
            s.ok = Some(result.is_ok());
            s.phase = if result.is_ok() {
                "done".into()
            } else {
                "failed".into()
            };
            match &result {
                Ok(v) => s.result = Some(v.clone()),
                Err(err) => {
                    s.error_kind = Some(err.kind().into());
                    s.error_message = Some(err.message().into());
                }
            }
            s.container.clone()
        };
        let _ = self.events.send(Event::Finished {
            op: id.into(),
            container,
            result,
        });
    }

    pub fn get(&self, id: &str) -> Option<OperationSnapshot> {
        self.lock().get(id).map(|e| e.snapshot.clone())
    }
}

/// Forgets finished operations older than KEEP_FINISHED, and the oldest
/// beyond MAX_FINISHED; running ones always stay.
fn prune(entries: &mut HashMap<String, Entry>) {
    entries.retain(|_, e| e.finished.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
    // Ids count up: they order operations that finished in the same instant.
    let mut finished: Vec<(Instant, u64, String)> = entries
        .iter()
        .filter_map(|(id, e)| Some((e.finished?, id.parse().unwrap_or(0), id.clone())))
        .collect();
    if finished.len() > MAX_FINISHED {
        finished.sort();
        for (_, _, id) in &finished[..finished.len() - MAX_FINISHED] {
            entries.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_operations_are_bounded_in_count_and_running_ones_stay() {
        let (tx, _rx) = broadcast::channel(16);
        let ops = Operations::new(tx);
        let owner = Owner::unix(0);
        let running = ops.begin("create", "long", &owner);
        let ids: Vec<String> = (0..MAX_FINISHED + 44)
            .map(|i| {
                let id = ops.begin("create", &format!("c{i}"), &owner);
                ops.finish(&id, Ok(serde_json::json!({})));
                id
            })
            .collect();
        // The next operation prunes.
        let _ = ops.begin("create", "next", &owner);
        assert!(
            ops.get(&running).is_some(),
            "a running operation is never dropped"
        );
        let kept = ids.iter().filter(|id| ops.get(id).is_some()).count();
        assert_eq!(kept, MAX_FINISHED);
        assert!(ops.get(&ids[0]).is_none(), "the oldest went first");
        assert!(ops.get(&ids[ids.len() - 1]).is_some(), "the newest stays");
    }
}
