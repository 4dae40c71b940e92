//! Owners' slices: every owner's containers run in a slice of their own,
//! `machine-voxnix-<owner>.slice` (under `machine-voxnix.slice`, under
//! `machine.slice`), which carries the owner's totals, so ten containers of
//! one owner share one memory and task budget and, under CPU contention, one
//! owner's share of the CPU, however many containers they run.
//!
//! systemd lets `SetUnitProperties` set a slice's limits but not a persistent
//! unit's `Slice=` (only a transient unit's), so the container's unit gets a
//! drop-in in systemd's control directory, where `SetUnitProperties` writes
//! its own and from which `RevertUnitFiles` (destroy) removes them all.

use std::io;
use std::path::{Path, PathBuf};

/// Where systemd keeps persistent drop-ins made over its API.
pub const CONTROL_DIR: &str = "/etc/systemd/system.control";

/// The drop-in's file name within `<unit>.d/`.
const DROP_IN: &str = "50-Slice.conf";

/// The slice of `owner`'s containers. Owners are `<kind>:<id>` with ids of
/// letters, digits and `. _ @ -`; `-` would nest one owner's slice inside
/// another's (`a:b-c` under `a:b`) and `@` is not allowed in a unit name, so
/// both are escaped as systemd escapes them: one owner, one slice, no nesting.
pub fn owner_slice(owner: &str) -> String {
    let mut escaped = String::with_capacity(owner.len() + 8);
    for c in owner.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | ':' | '_' | '.' => escaped.push(c),
            other => escaped.push_str(&format!("\\x{:02x}", u32::from(other))),
        }
    }
    format!("machine-voxnix-{escaped}.slice")
}

fn drop_in_path(control_dir: &Path, unit: &str) -> PathBuf {
    control_dir.join(format!("{unit}.d")).join(DROP_IN)
}

fn drop_in_text(slice: &str) -> String {
    format!(
        "# Written by voxnix: this container runs in its owner's slice, which holds the\n\
         # owner's totals. Removed with the unit's other drop-ins when it is destroyed.\n\
         [Service]\nSlice={slice}\n"
    )
}

/// Puts `unit` into `slice` from its next start. Returns whether the drop-in
/// changed (then systemd must reload before the start).
pub fn place(control_dir: &Path, unit: &str, slice: &str) -> io::Result<bool> {
    let path = drop_in_path(control_dir, unit);
    let text = drop_in_text(slice);
    match std::fs::read_to_string(&path) {
        Ok(old) if old == text => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::atomic_file::write(&path, text.as_bytes(), 0o644)?;
    Ok(true)
}

/// An owner's memory total: bytes, or a share of the host's memory (what
/// systemd's `MemoryMax=50%` means, sent over the bus as `MemoryMaxScale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryTotal {
    Bytes(u64),
    Percent(u32),
}

/// The properties of an owner's slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerTotals {
    pub memory_max: Option<MemoryTotal>,
    pub tasks_max: Option<u64>,
    pub cpu_weight: u64,
}

impl OwnerTotals {
    /// As `SetUnitProperties` takes them. A total that is `None` is set to
    /// "infinity" rather than left out, so lifting a total in the
    /// configuration lifts it on the slice too.
    pub fn properties(&self) -> Vec<(String, zbus::OwnedVariant)> {
        use zbus::OwnedVariant as V;
        let mut props = vec![("CPUWeight".to_string(), V::from(self.cpu_weight))];
        match self.memory_max {
            Some(MemoryTotal::Bytes(b)) => props.push(("MemoryMax".into(), V::from(b))),
            Some(MemoryTotal::Percent(p)) => {
                // systemd's scale: u32::MAX is all of the host's memory.
                let scale = u64::from(u32::MAX) * u64::from(p.min(100)) / 100;
                props.push((
                    "MemoryMaxScale".into(),
                    V::from(u32::try_from(scale).unwrap_or(u32::MAX)),
                ));
            }
            None => props.push(("MemoryMax".into(), V::from(u64::MAX))),
        }
        props.push((
            "TasksMax".into(),
            V::from(self.tasks_max.unwrap_or(u64::MAX)),
        ));
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_has_one_slice_and_none_nests_in_another() {
        assert_eq!(
            owner_slice("telegram:123"),
            "machine-voxnix-telegram:123.slice"
        );
        // systemd reads '-' in a slice name as nesting: escaped, 'a:b-c' is
        // not a child of 'a:b'.
        assert_eq!(owner_slice("a:b-c"), "machine-voxnix-a:b\\x2dc.slice");
        assert_eq!(owner_slice("a:b@c"), "machine-voxnix-a:b\\x40c.slice");
        assert_ne!(owner_slice("a:b-c"), owner_slice("a:b_c"));
    }

    #[test]
    fn the_drop_in_is_written_once_and_rewritten_when_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let unit = "container@dev.service";
        assert!(place(dir.path(), unit, "machine-voxnix-a:1.slice").unwrap());
        assert!(!place(dir.path(), unit, "machine-voxnix-a:1.slice").unwrap());
        assert!(place(dir.path(), unit, "machine-voxnix-a:2.slice").unwrap());
        let text = std::fs::read_to_string(drop_in_path(dir.path(), unit)).unwrap();
        assert!(
            text.contains("[Service]\nSlice=machine-voxnix-a:2.slice\n"),
            "{text}"
        );
    }

    #[test]
    fn a_percent_total_is_systemds_scale() {
        let t = OwnerTotals {
            memory_max: Some(MemoryTotal::Percent(50)),
            tasks_max: None,
            cpu_weight: 100,
        };
        let props = t.properties();
        let scale = props.iter().find(|(k, _)| k == "MemoryMaxScale").unwrap();
        assert_eq!(u32::try_from(&scale.1).unwrap(), u32::MAX / 2);
        let tasks = props.iter().find(|(k, _)| k == "TasksMax").unwrap();
        assert_eq!(u64::try_from(&tasks.1).unwrap(), u64::MAX);
    }
}
