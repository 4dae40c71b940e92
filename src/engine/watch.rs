//! Feeding the live view (`view/`): systemd's unit signals and machined's
//! MachineNew/MachineRemoved, applied as they come; a direct read after each
//! of voxnix's own operations; and a reconcile every `view_reconcile_secs`
//! that repairs a missed signal. A container that goes away while voxnix
//! did not ask is announced (the bot tells its owner).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;

use super::records::Phase;
use super::view::UnitState;
use super::{Engine, Event, derive_state};
use crate::host::container_unit;

/// What the signal pump hands the machine worker.
enum MachineSignal {
    /// `MachineNew`, with the view's machine number when it came.
    New(String, u64),
    /// `MachineRemoved`, already applied to the view (it had the machine).
    Removed(String),
}

impl Engine {
    /// Follows the signals until the bus connection ends.
    ///
    /// The pump below never waits on the bus: zbus stops reading the
    /// connection (replies included) while a signal stream's queue is
    /// full, so a pump awaiting a reply while signals pile up would stop
    /// the daemon. Unit changes are applied at once; what needs a call
    /// (reading a new machine, announcing) goes to a worker; the periodic
    /// reconcile runs in a task of its own.
    pub async fn watch(self: Arc<Self>) {
        let (new, removed, units) = tokio::join!(
            self.machined.manager().receive_machine_new(),
            self.machined.manager().receive_machine_removed(),
            self.systemd.container_unit_changes(),
        );
        let (Ok(mut new), Ok(mut removed), Ok(units)) = (new, removed, units) else {
            tracing::error!(
                "cannot subscribe to systemd's and machined's signals; reads ask them instead, \
                 and unexpected stops are not announced"
            );
            return;
        };
        let mut units = std::pin::pin!(units);
        let (to_worker, mut work) = tokio::sync::mpsc::unbounded_channel();
        let worker = self.clone();
        tokio::spawn(async move {
            while let Some(signal) = work.recv().await {
                worker.machine_signal(signal).await;
            }
        });
        // Subscribed first, then the start-up fill: no change falls between.
        let reconciler = self.clone();
        tokio::spawn(async move {
            let period = std::time::Duration::from_secs(reconciler.cfg.view_reconcile_secs);
            let mut repair = tokio::time::interval(period);
            repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                repair.tick().await;
                if !deaf() || !reconciler.view.is_filled() {
                    reconciler.reconcile_view().await;
                }
            }
        });
        loop {
            tokio::select! {
                Some(change) = units.next() => {
                    if deaf() { continue }
                    self.unit_reads.forget(&change.name);
                    self.view.unit_changed(&change.name, change.active_state, change.sub_state);
                }
                Some(sig) = new.next() => {
                    let Ok(a) = sig.args() else { continue };
                    if deaf() { continue }
                    let name = a.machine.to_string();
                    let seq = self.view.machine_seq(&name);
                    let _ = to_worker.send(MachineSignal::New(name, seq));
                }
                Some(sig) = removed.next() => {
                    let Ok(a) = sig.args() else { continue };
                    if deaf() { continue }
                    let name = a.machine.to_string();
                    self.unit_reads.forget(&name);
                    if self.view.machine_removed(&name) {
                        self.view.addresses.forget(&name);
                        let _ = to_worker.send(MachineSignal::Removed(name));
                    }
                }
                else => break,
            }
        }
        tracing::warn!("systemd's or machined's signal streams ended");
    }

    async fn machine_signal(&self, signal: MachineSignal) {
        match signal {
            MachineSignal::New(name, seq) => {
                let Ok(Some(m)) = self.machined.info(&name).await else {
                    return;
                };
                let leader = m.leader;
                // Not news when a direct read or the reconcile had it
                // already (then they watched and announced).
                if self.view.machine_new(seq, m) {
                    if self.records.contains(&name) {
                        self.view.addresses.watch(&name, leader);
                    }
                    self.announce(&name, true).await;
                }
            }
            MachineSignal::Removed(name) => self.announce(&name, false).await,
        }
    }

    /// Tells the front ends that a ready container started or stopped,
    /// saying whether voxnix asked for it.
    async fn announce(&self, name: &str, appeared: bool) {
        let Ok(Some(record)) = self.records.get(name) else {
            return;
        };
        if record.phase != Phase::Ready {
            return;
        }
        let state = if appeared {
            "running".to_string()
        } else {
            let unit = self
                .systemd
                .unit_status(&container_unit(name))
                .await
                .unwrap_or_default();
            let s = derive_state(Phase::Ready, &unit.active_state, false);
            if s == "failed" {
                s
            } else {
                "stopped".to_string()
            }
        };
        let expected = appeared || self.take_expected_stop(name);
        if !expected {
            tracing::warn!(container = %name, owner = %record.owner, "container {state} without being asked");
        }
        self.emit(Event::ContainerChanged {
            name: name.to_string(),
            owner: record.owner,
            state,
            expected,
        });
    }

    /// After an operation of voxnix's own on `name`: its outcome into the
    /// view at once (the signals saying so may still be queued).
    pub(super) async fn refresh_view(&self, name: &str) {
        let token = self.view.token(name);
        let unit_name = container_unit(name);
        let (unit, machine) = tokio::join!(
            self.systemd.unit_status(&unit_name),
            self.machined.info(name)
        );
        let (Ok(unit), Ok(machine)) = (unit, machine) else {
            return;
        };
        self.unit_reads.forget(&name.to_string());
        let leader = machine.as_ref().map(|m| m.leader);
        let state = UnitState {
            active: unit.active_state,
            sub: unit.sub_state,
        };
        let (applied, changed) = self.view.refresh(name, token, state, machine);
        if applied {
            match leader {
                Some(l) if self.records.contains(name) => self.view.addresses.watch(name, l),
                _ => self.view.addresses.forget(name),
            }
        }
        if changed {
            // The signal that comes after finds the view up to date and
            // says nothing: the announcement is made here.
            self.announce(name, leader.is_some()).await;
        }
    }

    /// Makes the view match systemd and machined: one ListUnitsByPatterns,
    /// one ListMachines, and one GetMachine (with one GetAll) per running
    /// container of voxnix's (its leader: a new one is a new start). What
    /// it corrects, a missed signal, is logged and announced.
    pub(super) async fn reconcile_view(&self) {
        let tokens = self.view.tokens();
        let (units, machines) = tokio::join!(self.systemd.container_units(), self.machined.list());
        let (Ok(units), Ok(machines)) = (units, machines) else {
            tracing::warn!("cannot read the units or machines; the view is checked again later");
            return;
        };
        let units = super::view::by_container(units);
        let mut running = HashMap::new();
        for (name, _) in machines {
            if !self.records.contains(&name) {
                continue;
            }
            if let Ok(Some(m)) = self.machined.info(&name).await {
                running.insert(name, m);
            }
        }
        let was_running: HashMap<String, u32> = self.view.running().into_iter().collect();
        let corrected = self.view.fill(&tokens, units, running);
        for (name, _) in &corrected {
            tracing::warn!(container = %name, "the live view had missed a change; corrected");
            self.unit_reads.forget(name);
        }
        // The address watchers follow the machines.
        let now_running: HashMap<String, u32> = self.view.running().into_iter().collect();
        let watched: HashMap<String, u32> = self.view.addresses.watched().into_iter().collect();
        for name in watched.keys().filter(|n| !now_running.contains_key(*n)) {
            self.view.addresses.forget(name);
        }
        for (name, leader) in &now_running {
            if watched.get(name) != Some(leader) && self.records.contains(name) {
                self.view.addresses.watch(name, *leader);
            }
        }
        for (name, machine) in corrected {
            // Only where the machine appeared or went: the signal that
            // would have said so was missed.
            if let Some(running) = machine
                && was_running.contains_key(&name) != running
            {
                self.announce(&name, running).await;
            }
        }
    }
}

/// The `view:deaf` fault (fault-injection builds only): signals are
/// dropped as if lost and the periodic reconcile waits, for the test of
/// the reconcile's repair.
fn deaf() -> bool {
    super::fault::active("view:deaf")
}
