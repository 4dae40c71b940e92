//! Personal settings (a git identity, SSH keys: what the module library marks
//! `personal`) never go into a build, whose output is in the world-readable
//! Nix store. They wait in a root-only file per container under
//! `<state_dir>/personal/`, which nspawn hands to the container at each start
//! as the credential `voxnix-personal` (nix/mkContainer.nix copies it where
//! the modules read it). The file goes with the container.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The credential's name inside the container.
pub const CREDENTIAL: &str = "voxnix-personal";

#[derive(Debug, Clone)]
pub struct PersonalFiles {
    dir: PathBuf,
}

impl PersonalFiles {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("personal"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes `name`'s file (root-only), or removes it when there is nothing
    /// personal. Returns the path when there is a file.
    pub fn write(&self, name: &str, settings: &Map<String, Value>) -> io::Result<Option<PathBuf>> {
        let path = self.path(name);
        if settings.is_empty() {
            self.remove(name)?;
            return Ok(None);
        }
        let text = serde_json::to_vec(settings).map_err(io::Error::other)?;
        crate::atomic_file::write_root_only(&path, &text)?;
        Ok(Some(path))
    }

    pub fn remove(&self, name: &str) -> io::Result<()> {
        crate::atomic_file::remove(&self.path(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_root_only_and_goes_when_nothing_is_personal() {
        let state = tempfile::tempdir().unwrap();
        let files = PersonalFiles::new(state.path());
        let mut settings = Map::new();
        settings.insert("git".into(), serde_json::json!({"user_name": "Ada"}));
        let path = files.write("dev", &settings).unwrap().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{"git":{"user_name":"Ada"}}"#
        );
        assert_eq!(files.write("dev", &Map::new()).unwrap(), None);
        assert!(!path.exists());
        files.remove("dev").unwrap();
    }
}
