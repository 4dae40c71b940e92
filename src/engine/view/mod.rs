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

/// `(unit, active, sub)` of `container@NAME.service` units (systemd's
/// `ListUnitsByPatterns`) by container name.
pub fn by_container(units: Vec<(String, String, String)>) -> HashMap<String, UnitState> {
    units
        .into_iter()
        .filter_map(|(unit, active, sub)| {
            let name = unit.strip_prefix("container@")?.strip_suffix(".service")?;
            Some((name.to_string(), UnitState { active, sub }))
        })
        .collect()
}

#[derive(Default)]
struct Entry {
    unit: UnitState,
    machine: Option<MachineInfo>,
    /// `os-release` of this machine (its leader), once asked for.
    os_release: Option<(u32, BTreeMap<String, String>)>,
    /// Bumped by forgetting the os-release: a read begun before cannot
    /// put the old one back.
    os_release_gen: u64,
    /// Changed by every change of `unit` / `machine`; see [`Token`].
    unit_seq: u64,
    machine_seq: u64,
}

/// Taken before a direct read of a container's state; each part of the
/// read's result (unit, machine) applies only if that part's number is
/// still current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(u64, u64);

#[derive(Default)]
struct Inner {
    /// Whether the start-up fill is in: before it, readers ask the host.
    filled: bool,
    counter: u64,
    entries: HashMap<String, Entry>,
}

fn leader(m: &Option<MachineInfo>) -> Option<u32> {
    m.as_ref().map(|m| m.leader)
}

impl Inner {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn token(&self, name: &str) -> Token {
        self.entries
            .get(name)
            .map_or(Token(0, 0), |e| Token(e.unit_seq, e.machine_seq))
    }

    /// Sets the unit part if `seq` is current (None: unconditionally);
    /// true if it changed.
    fn set_unit(&mut self, name: &str, seq: Option<u64>, unit: UnitState) -> bool {
        let n = self.next();
        let e = self.entries.entry(name.to_string()).or_default();
        if seq.is_some_and(|s| s != e.unit_seq) {
            return false;
        }
        // The number moves even when the state does not: a direct read
        // begun before a signal must not land after it.
        let changed = e.unit != unit;
        e.unit = unit;
        e.unit_seq = n;
        changed
    }

    /// Sets the machine part if `seq` is current (None: unconditionally);
    /// true if it changed (appeared, went, or a new leader).
    fn set_machine(&mut self, name: &str, seq: Option<u64>, machine: Option<MachineInfo>) -> bool {
        let n = self.next();
        let e = self.entries.entry(name.to_string()).or_default();
        if seq.is_some_and(|s| s != e.machine_seq) {
            return false;
        }
        let changed = leader(&e.machine) != leader(&machine);
        if changed {
            e.os_release = None;
        }
        e.machine = machine;
        e.machine_seq = n;
        changed
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

    /// The names of the running machines the view holds, with leaders.
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
        let mut unit = inner
            .entries
            .get(name)
            .map(|e| e.unit.clone())
            .unwrap_or_default();
        if let Some(a) = active {
            unit.active = a;
        }
        if let Some(s) = sub {
            unit.sub = s;
        }
        inner.set_unit(name, None, unit);
    }

    /// The machine part's number now: taken when `MachineNew` comes, before
    /// the machine is read.
    pub fn machine_seq(&self, name: &str) -> u64 {
        self.lock().token(name).1
    }

    /// machined registered the machine (`info` read after `MachineNew`,
    /// which came when the machine part's number was `seq`); true if it is
    /// news (not applied when anything about the machine came meanwhile).
    pub fn machine_new(&self, seq: u64, info: MachineInfo) -> bool {
        let name = info.name.clone();
        self.lock().set_machine(&name, Some(seq), Some(info))
    }

    /// machined dropped the machine; true if the view had it.
    pub fn machine_removed(&self, name: &str) -> bool {
        self.lock().set_machine(name, None, None)
    }

    // ----- direct reads ---------------------------------------------------

    pub fn token(&self, name: &str) -> Token {
        self.lock().token(name)
    }

    pub fn tokens(&self) -> HashMap<String, Token> {
        let inner = self.lock();
        inner
            .entries
            .keys()
            .map(|n| (n.clone(), inner.token(n)))
            .collect()
    }

    /// A direct read of one container: each part applies unless something
    /// about it came in meanwhile. Returns whether the machine part applied
    /// and whether that changed the machine (appeared, went, new leader).
    pub fn refresh(
        &self,
        name: &str,
        token: Token,
        unit: UnitState,
        machine: Option<MachineInfo>,
    ) -> (bool, bool) {
        let mut inner = self.lock();
        let current = inner.token(name);
        if current.0 == token.0 {
            inner.set_unit(name, Some(token.0), unit);
        }
        if current.1 != token.1 {
            return (false, false);
        }
        (true, inner.set_machine(name, Some(token.1), machine))
    }

    /// The reconcile's reads of every unit and machine: containers missing
    /// from `units` / `machines` are unloaded / not running. `tokens` were
    /// taken before the reads. Marks the view filled. Returns the names it
    /// corrected (a signal had been missed), each with whether its machine
    /// appeared or went (`Some(running)`).
    pub fn fill(
        &self,
        tokens: &HashMap<String, Token>,
        units: HashMap<String, UnitState>,
        machines: HashMap<String, MachineInfo>,
    ) -> Vec<(String, Option<bool>)> {
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
            let token = tokens.get(&name).copied().unwrap_or(Token(0, 0));
            let unit = units.get(&name).cloned().unwrap_or_default();
            let machine = machines.get(&name).cloned();
            let running = machine.is_some();
            let unit_changed = inner.set_unit(&name, Some(token.0), unit);
            let machine_changed = inner.set_machine(&name, Some(token.1), machine);
            if unit_changed || machine_changed {
                corrected.push((name, machine_changed.then_some(running)));
            }
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

    /// The machine's os-release if read before for its current leader;
    /// else the number `set_os_release` wants with the one read now.
    pub fn os_release(&self, name: &str) -> Result<BTreeMap<String, String>, u64> {
        let inner = self.lock();
        let Some(e) = inner.entries.get(name) else {
            return Err(0);
        };
        match (&e.os_release, leader(&e.machine)) {
            (Some((l, r)), Some(now)) if *l == now => Ok(r.clone()),
            _ => Err(e.os_release_gen),
        }
    }

    /// Keeps an os-release read while `gen` (from `os_release`) is current.
    pub fn set_os_release(
        &self,
        name: &str,
        gen_before: u64,
        leader: u32,
        release: BTreeMap<String, String>,
    ) {
        if let Some(e) = self.lock().entries.get_mut(name)
            && e.os_release_gen == gen_before
            && e.machine.as_ref().is_some_and(|m| m.leader == leader)
        {
            e.os_release = Some((leader, release));
        }
    }

    /// Forgets the os-release read (an update switched the system), also
    /// one being read now.
    pub fn forget_os_release(&self, name: &str) {
        if let Some(e) = self.lock().entries.get_mut(name) {
            e.os_release = None;
            e.os_release_gen += 1;
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
        assert!(!v.machine_removed("a"), "it was not running in the view");
        assert_eq!(
            v.refresh("a", t, active(), Some(machine("a", 7))),
            (false, false)
        );
        assert_eq!(v.get("a"), Some((UnitState::default(), None)));
        // A read with a current token applies.
        let t = v.token("a");
        assert_eq!(
            v.refresh("a", t, active(), Some(machine("a", 7))),
            (true, true)
        );
        assert_eq!(v.get("a").unwrap().1.unwrap().leader, 7);
        // And a reconcile whose reads began before that direct read leaves
        // it alone.
        let corrected = v.fill(
            &HashMap::from([("a".to_string(), t)]),
            HashMap::new(),
            HashMap::new(),
        );
        assert!(corrected.is_empty(), "{corrected:?}");
        assert_eq!(v.get("a").unwrap().1.unwrap().leader, 7);
        // A MachineNew read after a MachineRemoved came: not applied.
        let seq = v.machine_seq("a");
        assert!(v.machine_removed("a"));
        assert!(!v.machine_new(seq, machine("a", 8)));
        assert_eq!(v.get("a").unwrap().1, None);
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
        let gen_before = v.os_release("a").unwrap_err();
        v.set_os_release(
            "a",
            gen_before,
            7,
            BTreeMap::from([("ID".into(), "nixos".into())]),
        );
        assert!(v.os_release("a").is_ok());
        // One read before an update forgot it does not bring it back.
        v.forget_os_release("a");
        v.set_os_release("a", gen_before, 7, BTreeMap::new());
        assert!(v.os_release("a").is_err());
        // "a" stopped and its signals were lost; "b" started, a signal came
        // during the reconcile's reads (it is kept).
        let tokens = v.tokens();
        v.unit_changed("b", Some("active".into()), None);
        let corrected = v.fill(
            &tokens,
            HashMap::from([("b".to_string(), UnitState::default())]),
            HashMap::new(),
        );
        assert_eq!(corrected, vec![("a".to_string(), Some(false))]);
        assert_eq!(v.get("a"), Some((UnitState::default(), None)));
        assert!(v.os_release("a").is_err());
        assert_eq!(v.get("b").unwrap().0.active, "active");
        assert_eq!(v.running(), vec![]);
    }
}
