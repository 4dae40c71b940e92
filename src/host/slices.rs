//! Owners' slices: every owner's containers run in a slice of their own,
//! `machine-voxnix-o<hmac>.slice` (under `machine-voxnix.slice`, under
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

/// Names owners' slices. A slice's name is visible to every local user
/// (`systemctl list-units`, `/proc/*/cgroup`), so it must not name the owner:
/// it is `machine-voxnix-o<16 hex digits>.slice`, an HMAC of the owner under
/// a key only root can read (`<state_dir>/owner-slices.key`, made once), so
/// one owner always has the same slice, two owners never share one, and
/// nobody without the key can tell whose a slice is (an unkeyed hash of a
/// Telegram id could be found by trying every id).
#[derive(Clone)]
pub struct OwnerSlices {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for OwnerSlices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerSlices")
    }
}

impl OwnerSlices {
    /// Reads the key, or makes it (32 random bytes, root-only) the first time.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join("owner-slices.key");
        let bytes = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a 32-byte key; remove it to have a new one made (owners' slices then get new names)",
                    path.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut b = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                    .map_err(|_| io::Error::other("no random bytes for the owner-slice key"))?;
                crate::atomic_file::write_root_only(&path, &b)?;
                b
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The slice of `owner`'s containers.
    pub fn slice_of(&self, owner: &str) -> String {
        let tag = ring::hmac::sign(&self.key, owner.as_bytes());
        let hex: String = tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("machine-voxnix-o{hex}.slice")
    }
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
    fn each_owner_has_one_slice_that_does_not_name_them() {
        let state = tempfile::tempdir().unwrap();
        let slices = OwnerSlices::open(state.path()).unwrap();
        let a = slices.slice_of("telegram:123");
        assert_eq!(a, slices.slice_of("telegram:123"));
        assert_ne!(a, slices.slice_of("telegram:124"));
        // No '-' after the prefix: systemd would read it as nesting.
        let rest = a.strip_prefix("machine-voxnix-o").unwrap();
        assert!(
            rest.strip_suffix(".slice")
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
        assert!(!a.contains("telegram"));
        // The same key next time; another appliance's key gives other names.
        assert_eq!(
            OwnerSlices::open(state.path())
                .unwrap()
                .slice_of("telegram:123"),
            a
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            OwnerSlices::open(other.path())
                .unwrap()
                .slice_of("telegram:123"),
            a
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(state.path().join("owner-slices.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
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
