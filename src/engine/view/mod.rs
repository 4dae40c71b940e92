//! The live view: what voxnix knows of its containers' running state, kept
//! in memory and fed by events, so reads (`List`, `Status`) are answered
//! without asking systemd or machined.
//!
//! - units: each `container@NAME.service`'s active and sub state, from
//!   systemd's `PropertiesChanged` signals;
//! - machines: each running container's machined entry (leader, machine
//!   id), from `MachineNew` / `MachineRemoved`;
//! - addresses: from each container's own kernel ([`addresses`]).
//!
//! Signals are applied in the order they come. Beside them, two kinds of
//! direct reads fill the view: after an operation of voxnix's own (so its
//! caller's next read sees the outcome even if the signal is still queued),
//! and the periodic reconcile (`watch.rs`, repairing a missed signal). A
//! direct read applies only if no signal about that container was applied
//! while it ran: the signal may be newer than what the read saw, and the
//! signal stream, applied in order, ends at the latest state anyway.

pub mod addresses;
pub mod coalesce;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

pub use addresses::AddressView;

use crate::host::machined::MachineInfo;

/// A unit's state as systemd last told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub active: String,
    pub sub: String,
}

impl Default for UnitState {
    /// What an unloaded unit is.
    fn default() -> Self {
        UnitState {
            active: "inactive".into(),
            sub: "dead".into(),
        }
    }
}

#[derive(Default)]
struct Entry {
    unit: UnitState,
    machine: Option<MachineInfo>,
    /// `os-release` of this machine (its leader), once asked for.
    os_release: Option<(u32, BTreeMap<String, String>)>,
    /// Changed by every signal applied; see [`Token`].
    seq: u64,
}

/// Taken before a direct read of a container's state; the read's result
/// applies only if the token is still current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(u64);

#[derive(Default)]
struct Inner {
    /// Whether the start-up fill is in: before it, readers ask the host.
    filled: bool,
    counter: u64,
    entries: HashMap<String, Entry>,
}

impl Inner {
    fn bump(&mut self, name: &str) -> &mut Entry {
        self.counter += 1;
        let seq = self.counter;
        let e = self.entries.entry(name.to_string()).or_default();
        e.seq = seq;
        e
    }

    fn token(&self, name: &str) -> Token {
        Token(self.entries.get(name).map_or(0, |e| e.seq))
    }
}

pub struct LiveView {
    inner: Mutex<Inner>,
    pub addresses: AddressView,
}

impl LiveView {
    pub fn new(proc_root: std::path::PathBuf) -> Self {
        LiveView {
            inner: Mutex::default(),
            addresses: AddressView::new(proc_root),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_filled(&self) -> bool {
        self.lock().filled
    }

    /// The unit's state and the machine, if the view is filled.
    pub fn get(&self, name: &str) -> Option<(UnitState, Option<MachineInfo>)> {
        let inner = self.lock();
        if !inner.filled {
            return None;
        }
        Some(match inner.entries.get(name) {
            Some(e) => (e.unit.clone(), e.machine.clone()),
            None => (UnitState::default(), None),
        })
    }

    /// The names of the running machines the view holds.
    pub fn running(&self) -> Vec<(String, u32)> {
        self.lock()
            .entries
            .iter()
            .filter_map(|(n, e)| e.machine.as_ref().map(|m| (n.clone(), m.leader)))
            .collect()
    }

    // ----- signals --------------------------------------------------------

    /// systemd announced a change of `container@NAME.service`.
    pub fn unit_changed(&self, name: &str, active: Option<String>, sub: Option<String>) {
        let mut inner = self.lock();
        let e = inner.bump(name);
        if let Some(a) = active {
            e.unit.active = a;
        }
        if let Some(s) = sub {
            e.unit.sub = s;
        }
    }

    /// machined registered the machine (`info` read after `MachineNew`).
    pub fn machine_new(&self, info: MachineInfo) {
        let mut inner = self.lock();
        let e = inner.bump(&info.name.clone());
        e.machine = Some(info);
    }

    /// machined dropped the machine.
    pub fn machine_removed(&self, name: &str) {
        let mut inner = self.lock();
        let e = inner.bump(name);
        e.machine = None;
        e.os_release = None;
    }

    // ----- direct reads ---------------------------------------------------

    pub fn token(&self, name: &str) -> Token {
        self.lock().token(name)
    }

    pub fn tokens(&self) -> HashMap<String, Token> {
        self.lock()
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), Token(e.seq)))
            .collect()
    }

    /// A direct read of one container; false (not applied) when a signal
    /// about it came in meanwhile.
    pub fn refresh(
        &self,
        name: &str,
        token: Token,
        unit: UnitState,
        machine: Option<MachineInfo>,
    ) -> bool {
        let mut inner = self.lock();
        if inner.token(name) != token {
            return false;
        }
        let e = inner.entries.entry(name.to_string()).or_default();
        if e.machine.as_ref().map(|m| m.leader) != machine.as_ref().map(|m| m.leader) {
            e.os_release = None;
        }
        e.unit = unit;
        e.machine = machine;
        true
    }

    /// The reconcile's reads of every unit and machine: containers missing
    /// from `units` / `machines` are unloaded / not running. `tokens` were
    /// taken before the reads. Marks the view filled. Returns the names it
    /// corrected (a signal had been missed).
    pub fn fill(
        &self,
        tokens: &HashMap<String, Token>,
        units: HashMap<String, UnitState>,
        machines: HashMap<String, MachineInfo>,
    ) -> Vec<String> {
        let mut inner = self.lock();
        let was_filled = inner.filled;
        inner.filled = true;
        let mut names: Vec<String> = inner.entries.keys().cloned().collect();
        names.extend(units.keys().cloned());
        names.extend(machines.keys().cloned());
        names.sort();
        names.dedup();
        let mut corrected = Vec::new();
        for name in names {
            if inner.token(&name) != tokens.get(&name).copied().unwrap_or(Token(0)) {
                continue;
            }
            let unit = units.get(&name).cloned().unwrap_or_default();
            let machine = machines.get(&name).cloned();
            let e = inner.entries.entry(name.clone()).or_default();
            let leader = |m: &Option<MachineInfo>| m.as_ref().map(|m| m.leader);
            if e.unit != unit || leader(&e.machine) != leader(&machine) {
                corrected.push(name.clone());
            }
            if leader(&e.machine) != leader(&machine) {
                e.os_release = None;
            }
            e.unit = unit;
            e.machine = machine;
        }
        // Entries that say nothing any more (unloaded, not running).
        inner
            .entries
            .retain(|_, e| e.machine.is_some() || e.unit != UnitState::default());
        if was_filled { corrected } else { Vec::new() }
    }

    /// Drops what is known of `name` (destroyed).
    pub fn forget(&self, name: &str) {
        self.lock().entries.remove(name);
        self.addresses.forget(name);
    }

    // ----- os-release -----------------------------------------------------

    /// The machine's os-release, if read before for its current leader.
    pub fn os_release(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let inner = self.lock();
        let e = inner.entries.get(name)?;
        let leader = e.machine.as_ref()?.leader;
        match &e.os_release {
            Some((l, r)) if *l == leader => Some(r.clone()),
            _ => None,
        }
    }

    pub fn set_os_release(&self, name: &str, leader: u32, release: BTreeMap<String, String>) {
        if let Some(e) = self.lock().entries.get_mut(name)
            && e.machine.as_ref().is_some_and(|m| m.leader == leader)
        {
            e.os_release = Some((leader, release));
        }
    }

    /// Forgets the os-release read (an update switched the system).
    pub fn forget_os_release(&self, name: &str) {
        if let Some(e) = self.lock().entries.get_mut(name) {
            e.os_release = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(name: &str, leader: u32) -> MachineInfo {
        MachineInfo {
            name: name.into(),
            class: "container".into(),
            unit: format!("container@{name}.service"),
            leader,
            id_hex: String::new(),
            since_usec: 0,
            state: "running".into(),
        }
    }

    fn active() -> UnitState {
        UnitState {
            active: "active".into(),
            sub: "running".into(),
        }
    }

    #[test]
    fn nothing_is_answered_before_the_fill() {
        let v = LiveView::new("/proc".into());
        v.unit_changed("a", Some("active".into()), None);
        assert_eq!(v.get("a"), None);
        v.fill(&HashMap::new(), HashMap::new(), HashMap::new());
        assert_eq!(v.get("b"), Some((UnitState::default(), None)));
    }

    #[test]
    fn a_direct_read_never_overwrites_a_signal_that_came_meanwhile() {
        let v = LiveView::new("/proc".into());
        v.fill(&HashMap::new(), HashMap::new(), HashMap::new());
        let t = v.token("a");
        // The read saw it running; then it stopped (signals), then the read
        // lands.
        v.unit_changed("a", Some("inactive".into()), Some("dead".into()));
        v.machine_removed("a");
        assert!(!v.refresh("a", t, active(), Some(machine("a", 7))));
        assert_eq!(v.get("a"), Some((UnitState::default(), None)));
        // A read with a current token applies.
        let t = v.token("a");
        assert!(v.refresh("a", t, active(), Some(machine("a", 7))));
        assert_eq!(v.get("a").unwrap().1.unwrap().leader, 7);
    }

    #[test]
    fn the_reconcile_corrects_what_a_missed_signal_left_and_says_so() {
        let v = LiveView::new("/proc".into());
        let tokens = v.tokens();
        v.fill(
            &tokens,
            HashMap::from([("a".to_string(), active())]),
            HashMap::from([("a".to_string(), machine("a", 7))]),
        );
        v.set_os_release("a", 7, BTreeMap::from([("ID".into(), "nixos".into())]));
        assert!(v.os_release("a").is_some());
        // "a" stopped and its signals were lost; "b" started, a signal came
        // during the reconcile's reads (it is kept).
        let tokens = v.tokens();
        v.unit_changed("b", Some("active".into()), None);
        let corrected = v.fill(
            &tokens,
            HashMap::from([("b".to_string(), UnitState::default())]),
            HashMap::new(),
        );
        assert_eq!(corrected, vec!["a".to_string()]);
        assert_eq!(v.get("a"), Some((UnitState::default(), None)));
        assert_eq!(v.os_release("a"), None);
        assert_eq!(v.get("b").unwrap().0.active, "active");
        assert_eq!(v.running(), vec![]);
    }
}
