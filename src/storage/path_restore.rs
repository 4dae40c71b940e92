//! Bringing one file or folder back from a snapshot into a live workspace,
//! whose tree belongs to a running, hostile container: its root may swap any
//! directory for a symlink (to the host's /etc, say), a FIFO or something
//! else at any moment.
//!
//! So no path inside the workspace or the snapshot is ever resolved by name
//! from the host's root. Both are walked one component at a time from a
//! descriptor of their root, each opened with `O_NOFOLLOW | O_DIRECTORY`
//! (a link or a non-directory is refused, never followed). The copy is made
//! in a staging place of voxnix's own next to the workspace, out of the
//! container's reach, and moved in by `renameat2(RENAME_NOREPLACE)`
//! relative to the destination's directory descriptor: the container sees
//! it appear whole, or not at all, and nothing already there is replaced.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, fchownat};

/// Why a relative path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

/// The components of a path relative to a workspace's root: no leading `/`,
/// no `.` or `..`, no NUL, at most 4096 bytes and 255 per component; empty
/// components (`a//b`, a trailing `/`) are dropped. `what` names the
/// argument in the message (`path`, `to`).
pub fn components(rel: &str, what: &str) -> Result<Vec<OsString>, PathError> {
    if rel.is_empty() {
        return Err(PathError(format!(
            "{what}: give a path inside the workspace, e.g. notes/todo.md"
        )));
    }
    if rel.len() > 4096 || rel.contains('\0') {
        return Err(PathError(format!(
            "{what}: at most 4096 bytes, without NUL characters"
        )));
    }
    if rel.starts_with('/') {
        return Err(PathError(format!(
            "{what}: '{}' is absolute; give it relative to the workspace (without the leading /)",
            rel.escape_default()
        )));
    }
    let mut out = Vec::new();
    for c in rel.split('/') {
        match c {
            "" => continue,
            "." | ".." => {
                return Err(PathError(format!(
                    "{what}: '{}' has a '{c}' part; give the path inside the workspace as it is",
                    rel.escape_default()
                )));
            }
            c if c.len() > 255 => {
                return Err(PathError(format!(
                    "{what}: a part of '{}' is longer than 255 bytes",
                    rel.escape_default()
                )));
            }
            c => out.push(OsString::from(c)),
        }
    }
    if out.is_empty() {
        return Err(PathError(format!(
            "{what}: give a path inside the workspace, not its root"
        )));
    }
    Ok(out)
}

/// What went wrong on the way, for the caller to map to its errors.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("'{0}' is not there")]
    Missing(String),
    #[error("'{0}' is a link or not a directory, so it is not followed")]
    NotADirectory(String),
    #[error("'{0}' is already there")]
    Exists(String),
    #[error("'{0}' went away meanwhile")]
    Vanished(String),
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

/// The components as a person wrote them (`a/b`).
pub fn shown(parts: &[OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens a directory by a path of the host's own (the workspace's or the
/// snapshot's root, whose parents voxnix owns), not following a link at its
/// last component either.
pub fn open_root(path: &std::path::Path) -> Result<OwnedFd, WalkError> {
    nix::fcntl::open(path, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => WalkError::Missing(path.display().to_string()),
        Errno::ELOOP | Errno::ENOTDIR => WalkError::NotADirectory(path.display().to_string()),
        e => WalkError::Io(path.display().to_string(), e.into()),
    })
}

/// Walks `parts` down from `root`, each a real directory (never a link);
/// with `create`, a missing one is made, owned as its parent is (so the
/// container's root owns what it finds in its own tree). Returns the last
/// directory's descriptor.
pub fn walk(root: &OwnedFd, parts: &[OsString], create: bool) -> Result<OwnedFd, WalkError> {
    let mut fd = root
        .try_clone()
        .map_err(|e| WalkError::Io("the root".into(), e))?;
    for (i, part) in parts.iter().enumerate() {
        let here = || shown(&parts[..=i]);
        let next = match openat(&fd, part.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOENT) if create => {
                let parent = fstat(&fd).map_err(|e| WalkError::Io(here(), e.into()))?;
                match mkdirat(&fd, part.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(WalkError::Io(here(), e.into())),
                }
                let next = openat(&fd, part.as_os_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| walk_error(e, here()))?;
                fchownat(
                    &next,
                    OsStr::from_bytes(b""),
                    Some(Uid::from_raw(parent.st_uid)),
                    Some(Gid::from_raw(parent.st_gid)),
                    AtFlags::AT_EMPTY_PATH,
                )
                .map_err(|e| WalkError::Io(here(), e.into()))?;
                next
            }
            Err(e) => return Err(walk_error(e, here())),
        };
        fd = next;
    }
    Ok(fd)
}

fn walk_error(e: Errno, at: String) -> WalkError {
    match e {
        Errno::ENOENT => WalkError::Missing(at),
        Errno::ELOOP | Errno::ENOTDIR => WalkError::NotADirectory(at),
        e => WalkError::Io(at, e.into()),
    }
}

/// Whether `name` is in the directory `dir` (as anything, links too).
pub fn present(dir: &impl AsFd, name: &OsStr) -> Result<bool, WalkError> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(WalkError::Io(name.to_string_lossy().into_owned(), e.into())),
    }
}

/// Moves `from_name` of `from_dir` to `to_name` of `to_dir`, never replacing
/// what is there (RENAME_NOREPLACE).
pub fn move_in(
    from_dir: &OwnedFd,
    from_name: &OsStr,
    to_dir: &OwnedFd,
    to_name: &OsStr,
    shown_as: &str,
) -> Result<(), WalkError> {
    renameat2(
        from_dir,
        from_name,
        to_dir,
        to_name,
        RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| match e {
        Errno::EEXIST | Errno::ENOTEMPTY => WalkError::Exists(shown_as.to_string()),
        // The destination folder was removed since it was opened.
        Errno::ENOENT => WalkError::Vanished(shown_as.to_string()),
        e => WalkError::Io(shown_as.to_string(), e.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_are_relative_and_plain() {
        assert_eq!(
            components("notes//todo.md/", "path").unwrap(),
            vec![OsString::from("notes"), OsString::from("todo.md")]
        );
        for (bad, says) in [
            ("", "give a path"),
            ("/etc/passwd", "is absolute"),
            ("a/../../etc", "has a '..' part"),
            ("./a", "has a '.' part"),
            ("a\0b", "NUL"),
            ("//", "is absolute"),
        ] {
            let e = components(bad, "path").unwrap_err().to_string();
            assert!(e.starts_with("path: ") && e.contains(says), "{bad:?}: {e}");
        }
        // Only separators, no root: nothing to restore.
        assert!(components("./", "path").unwrap_err().0.contains("'.' part"));
        let long = "x".repeat(256);
        assert!(components(&long, "to").unwrap_err().0.contains("255"));
    }

    /// The race the walk leaves open, closed by the rename: the folder was
    /// opened, then swapped for a link to somewhere else before the move.
    /// The move goes by the folder's descriptor, so the copy lands in the
    /// folder (wherever it now is), never where the link points.
    #[test]
    fn a_folder_swapped_for_a_link_after_the_walk_still_gets_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let outside = dir.path().join("outside");
        let staging = dir.path().join("staging");
        for d in [&ws.join("tgt"), &outside, &staging] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(staging.join("item"), "restored").unwrap();
        let root = open_root(&ws).unwrap();
        let to_dir = walk(&root, &components("tgt", "to").unwrap(), false).unwrap();
        // The container's move: the folder aside, a link in its place.
        std::fs::rename(ws.join("tgt"), ws.join("moved")).unwrap();
        symlink(&outside, ws.join("tgt")).unwrap();
        let staging_fd = open_root(&staging).unwrap();
        move_in(
            &staging_fd,
            OsStr::new("item"),
            &to_dir,
            OsStr::new("f"),
            "tgt/f",
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.join("moved/f")).unwrap(),
            "restored"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // And once the folder is gone altogether, the move says so.
        std::fs::write(staging.join("item"), "again").unwrap();
        std::fs::remove_file(ws.join("moved/f")).unwrap();
        std::fs::remove_dir(ws.join("moved")).unwrap();
        assert!(matches!(
            move_in(
                &staging_fd,
                OsStr::new("item"),
                &to_dir,
                OsStr::new("f"),
                "tgt/f"
            ),
            Err(WalkError::Vanished(_))
        ));
        // Nothing is replaced.
        let there = walk(&root, &[], false).unwrap();
        std::fs::write(ws.join("taken"), "mine").unwrap();
        assert!(matches!(
            move_in(
                &staging_fd,
                OsStr::new("item"),
                &there,
                OsStr::new("taken"),
                "taken"
            ),
            Err(WalkError::Exists(_))
        ));
        assert_eq!(std::fs::read_to_string(ws.join("taken")).unwrap(), "mine");
    }

    #[test]
    fn the_walk_never_follows_a_link_and_makes_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("a/b")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        symlink(&outside, ws.join("link")).unwrap();
        std::fs::write(ws.join("file"), "x").unwrap();
        let root = open_root(&ws).unwrap();
        let parts = |s: &str| components(s, "path").unwrap();
        assert!(walk(&root, &parts("a/b"), false).is_ok());
        assert!(matches!(
            walk(&root, &parts("link/x"), true),
            Err(WalkError::NotADirectory(p)) if p == "link"
        ));
        assert!(matches!(
            walk(&root, &parts("file/x"), true),
            Err(WalkError::NotADirectory(_))
        ));
        assert!(matches!(
            walk(&root, &parts("nope/x"), false),
            Err(WalkError::Missing(p)) if p == "nope"
        ));
        // Made when asked, and nothing appeared outside.
        walk(&root, &parts("new/deeper"), true).unwrap();
        assert!(ws.join("new/deeper").is_dir());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // The root itself as a link is refused too.
        symlink(&ws, dir.path().join("wslink")).unwrap();
        assert!(matches!(
            open_root(&dir.path().join("wslink")),
            Err(WalkError::NotADirectory(_))
        ));
    }
}
