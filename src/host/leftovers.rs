//! What a NixOS container leaves on the host besides its conf file: its root
//! directory (`/var/lib/nixos-containers/NAME`, persistent across boots), the
//! GC roots directory NixOS's start script makes for it
//! (`/nix/var/nix/gcroots/per-container/NAME`), and the link nspawn's
//! `--link-journal=try-guest` makes in the host's `/var/log/journal` to the
//! journal in its root. A destroyed container must
//! leave neither: the next container of that name, whoever owns it, would
//! boot the old tree (its `authorized_keys`, its users, its host keys, its
//! journal).
//!
//! The tree is the container's, so it is removed without following any link
//! in it (`std::fs::remove_dir_all` works by descriptor and never follows
//! symlinks), and flags its root may have set (immutable, append-only; NixOS
//! itself makes `/var/empty` immutable) are cleared on files and directories
//! opened with `O_NOFOLLOW | O_NONBLOCK`, never on anything else. Only called
//! while the container is stopped, so nothing in it changes meanwhile.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where NixOS's start script makes each container's GC roots directory.
pub const NIXOS_GCROOTS_PER_CONTAINER: &str = "/nix/var/nix/gcroots/per-container";

/// `FS_IMMUTABLE_FL` and `FS_APPEND_FL` (linux/fs.h).
const LOCKED_FLAGS: libc::c_long = 0x10 | 0x20;

/// The host paths of one container's leftovers.
#[derive(Debug, Clone)]
pub struct Leftovers {
    containers_dir: PathBuf,
    gcroots_dir: PathBuf,
    journal_dir: PathBuf,
}

impl Leftovers {
    /// `containers_dir`: NixOS's container state directory
    /// (`/var/lib/nixos-containers`, or `/var/lib/containers` on hosts older
    /// than 22.05); `gcroots_dir`: `/nix/var/nix/gcroots/per-container`.
    /// `journal_dir`: the host's `/var/log/journal`.
    pub fn new(
        containers_dir: impl Into<PathBuf>,
        gcroots_dir: impl Into<PathBuf>,
        journal_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            containers_dir: containers_dir.into(),
            gcroots_dir: gcroots_dir.into(),
            journal_dir: journal_dir.into(),
        }
    }

    /// The leftovers of `name` that exist now.
    pub fn of(&self, name: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = [self.containers_dir.join(name), self.gcroots_dir.join(name)]
            .into_iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        found.extend(self.journal_links(name));
        found
    }

    /// Links in the host's journal directory that lead into `name`'s root
    /// (only read, never followed).
    fn journal_links(&self, name: &str) -> Vec<PathBuf> {
        let root = self.containers_dir.join(name);
        let Ok(entries) = fs::read_dir(&self.journal_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
            .filter(|e| fs::read_link(e.path()).is_ok_and(|target| target.starts_with(&root)))
            .map(|e| e.path())
            .collect()
    }

    /// Removes every leftover of `name`; missing ones are fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        for path in self.of(name) {
            remove_tree(&path).map_err(|e| {
                io::Error::new(e.kind(), format!("removing {}: {e}", path.display()))
            })?;
            tracing::info!(container = name, path = %path.display(), "removed a container leftover");
        }
        Ok(())
    }
}

/// Removes `path` (a directory tree, a file or a link) without following
/// links, clearing immutable and append-only flags where they stop it.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        clear_flags(path, false);
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) if first.kind() == io::ErrorKind::PermissionDenied => {
            clear_flags_below(path);
            fs::remove_dir_all(path).map_err(|_| first)
        }
        Err(e) => Err(e),
    }
}

/// Clears the flags on `dir` and on every directory and regular file below
/// it (links are not followed, other kinds are left alone).
fn clear_flags_below(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        clear_flags(&d, true);
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                clear_flags(&entry.path(), false);
            }
        }
    }
}

/// Clears immutable/append-only on a directory or regular file, opened
/// without following a link and without blocking; anything else is skipped.
fn clear_flags(path: &Path, dir: bool) {
    let mut opts = OpenOptions::new();
    opts.read(true).custom_flags(
        libc::O_NOFOLLOW
            | libc::O_NONBLOCK
            | libc::O_NOCTTY
            | if dir { libc::O_DIRECTORY } else { 0 },
    );
    let Ok(file) = opts.open(path) else {
        return;
    };
    let Ok(meta) = file.metadata() else {
        return;
    };
    if !(meta.is_dir() || meta.is_file()) {
        return;
    }
    set_unlocked(&file);
}

fn set_unlocked(file: &File) {
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return;
    }
    if flags & LOCKED_FLAGS == 0 {
        return;
    }
    flags &= !LOCKED_FLAGS;
    // SAFETY: FS_IOC_SETFLAGS reads one long from `flags`.
    unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_trees_without_following_links() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "host data").unwrap();
        let base = tempfile::tempdir().unwrap();
        let containers = base.path().join("containers");
        let gcroots = base.path().join("gcroots");
        let root = containers.join("box");
        std::fs::create_dir_all(root.join("root/.ssh")).unwrap();
        std::fs::write(
            root.join("root/.ssh/authorized_keys"),
            "ssh-ed25519 AAAA old",
        )
        .unwrap();
        // Links to the outside, a directory and a file.
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("keep"), root.join("escape-file")).unwrap();
        std::fs::create_dir_all(gcroots.join("box")).unwrap();
        // A FIFO is removed without being opened.
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();

        let journal = base.path().join("journal");
        std::fs::create_dir_all(&journal).unwrap();
        std::os::unix::fs::symlink(root.join("var/log/journal/abc"), journal.join("abc")).unwrap();
        // Another container's link stays.
        std::os::unix::fs::symlink(
            containers.join("other/var/log/journal/def"),
            journal.join("def"),
        )
        .unwrap();
        let l = Leftovers::new(&containers, &gcroots, &journal);
        assert_eq!(l.of("box").len(), 3);
        l.remove("box").unwrap();
        assert!(l.of("box").is_empty());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("keep")).unwrap(),
            "host data"
        );
        assert!(
            containers.is_dir(),
            "only the container's own directory goes"
        );
        assert!(
            journal.join("def").symlink_metadata().is_ok(),
            "other containers' links stay"
        );
        assert!(journal.join("abc").symlink_metadata().is_err());
        // Nothing to remove is fine.
        l.remove("box").unwrap();
        l.remove("never").unwrap();
    }
}
