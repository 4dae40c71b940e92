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
        loop {
            let (name, appeared) = tokio::select! {
                Some(sig) = new.next() => match sig.args() { Ok(a) => (a.machine, true), Err(_) => continue },
                Some(sig) = removed.next() => match sig.args() { Ok(a) => (a.machine, false), Err(_) => continue },
                else => break,
            };
            let Ok(Some(record)) = self.records.get(&name) else {
                continue;
            };
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
}
