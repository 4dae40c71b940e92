//! The live view: machined's signals tell the engine when a container comes
//! or goes. A container that goes away while voxnix did not ask is announced
//! (the bot tells its owner).

use std::sync::Arc;

use futures_util::StreamExt;

use super::records::Phase;
use super::{Engine, Event, derive_state};
use crate::host::container_unit;

impl Engine {
    /// Follows MachineNew/MachineRemoved until the bus connection ends.
    pub async fn watch(self: Arc<Self>) {
        let (new, removed) = tokio::join!(
            self.machined.manager().receive_machine_new(),
            self.machined.manager().receive_machine_removed()
        );
        let (Ok(mut new), Ok(mut removed)) = (new, removed) else {
            tracing::error!(
                "cannot subscribe to machined's signals; unexpected stops will not be announced"
            );
            return;
        };
        // The view's start-up fill, then a repair every VIEW_RECONCILE (a
        // signal missed, a watcher that ended).
        self.reconcile_view().await;
        let mut repair = tokio::time::interval(VIEW_RECONCILE);
        repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        repair.tick().await;
        loop {
            let (name, appeared) = tokio::select! {
                Some(sig) = new.next() => match sig.args() { Ok(a) => (a.machine, true), Err(_) => continue },
                Some(sig) = removed.next() => match sig.args() { Ok(a) => (a.machine, false), Err(_) => continue },
                _ = repair.tick() => {
                    self.reconcile_view().await;
                    continue;
                }
                else => break,
            };
            let Ok(Some(record)) = self.records.get(&name) else {
                continue;
            };
            if appeared {
                self.watch_addresses(&name).await;
            } else {
                self.view.forget(&name);
            }
            if record.phase != Phase::Ready {
                continue;
            }
            let state = if appeared {
                "running".to_string()
            } else {
                let unit = self
                    .systemd
                    .unit_status(&container_unit(&name))
                    .await
                    .unwrap_or_default();
                let s = derive_state(Phase::Ready, &unit.active_state, false);
                if s == "failed" {
                    s
                } else {
                    "stopped".to_string()
                }
            };
            let expected = appeared || self.take_expected_stop(&name);
            if !expected {
                tracing::warn!(container = %name, owner = %record.owner, "container {state} without being asked");
            }
            self.emit(Event::ContainerChanged {
                name,
                owner: record.owner,
                state,
                expected,
            });
        }
        tracing::warn!("machined signal streams ended");
    }

    async fn watch_addresses(&self, name: &str) {
        if let Ok(Some(m)) = self.machined.info(name).await {
            self.view.watch(name, m.leader);
        }
    }

    /// Makes the view's watchers match machined's running containers of
    /// voxnix: one ListMachines and one GetMachine per running container
    /// (its leader: a new one is a new start).
    pub(super) async fn reconcile_view(&self) {
        let Ok(machines) = self.machined.list().await else {
            return;
        };
        let running: std::collections::HashSet<String> = machines
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| matches!(self.records.get(n), Ok(Some(_))))
            .collect();
        let watched: std::collections::HashMap<String, u32> =
            self.view.watched().into_iter().collect();
        for name in watched.keys().filter(|n| !running.contains(*n)) {
            self.view.forget(name);
        }
        for name in &running {
            match self.machined.info(name).await {
                Ok(Some(m)) if watched.get(name) != Some(&m.leader) => {
                    self.view.watch(name, m.leader)
                }
                Ok(None) => self.view.forget(name),
                _ => {}
            }
        }
    }
}

/// How often the view is checked against machined (a few D-Bus calls).
const VIEW_RECONCILE: std::time::Duration = std::time::Duration::from_secs(30);
