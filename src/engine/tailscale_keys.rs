//! A container's own Tailscale auth key, handed over for one start.
//!
//! With an OAuth client configured (see [`crate::host::tailscale_api`]) the
//! conf of a container with the `tailscale` module names a per-container file,
//! `<state_dir>/tailscale/NAME.key` (root-only), as the credential
//! `tailscale-auth-key`. Before a create's start voxnix writes a freshly
//! minted, single-use key there; nspawn reads it as the container starts, and
//! voxnix empties the file as soon as the start is over, so no key waits on
//! the host. Every later start (by voxnix, at boot, by hand) finds it empty,
//! and the module's `tailscale up` relies on the node's saved login. An
//! update that adds the module marks the container (`NAME.pending`): its next
//! start, which the update makes at once when it is running, enrols it.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct TailscaleKeys {
    dir: PathBuf,
}

impl TailscaleKeys {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("tailscale"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Writes the key for the coming start (root-only).
    pub fn hand_over(&self, name: &str, key: &str) -> io::Result<()> {
        crate::atomic_file::write_root_only(&self.path(name), key.as_bytes())
    }

    /// Leaves the file empty (it must exist: the conf names it, and nspawn
    /// refuses to start without it).
    pub fn clear(&self, name: &str) -> io::Result<()> {
        self.hand_over(name, "")
    }

    fn pending_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pending"))
    }

    /// An update added the `tailscale` module: the next start enrols it
    /// (as a create's does), then the mark goes.
    pub fn mark_pending(&self, name: &str) -> io::Result<()> {
        crate::atomic_file::write_root_only(&self.pending_path(name), b"")
    }

    pub fn is_pending(&self, name: &str) -> bool {
        self.pending_path(name).exists()
    }

    pub fn clear_pending(&self, name: &str) -> io::Result<()> {
        crate::atomic_file::remove(&self.pending_path(name))
    }

    /// The key file and the mark, at destroy.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        crate::atomic_file::remove(&self.path(name))?;
        crate::atomic_file::remove(&self.pending_path(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_root_only_and_cleared_after_its_start() {
        let state = tempfile::tempdir().unwrap();
        let keys = TailscaleKeys::new(state.path());
        keys.hand_over("dev", "tskey-auth-x").unwrap();
        let path = keys.path("dev");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "tskey-auth-x");
        keys.clear("dev").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        keys.mark_pending("dev").unwrap();
        assert!(keys.is_pending("dev"));
        keys.clear_pending("dev").unwrap();
        assert!(!keys.is_pending("dev"));
        keys.mark_pending("dev").unwrap();
        keys.remove("dev").unwrap();
        assert!(!path.exists() && !keys.is_pending("dev"));
    }
}
