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
use std::os::unix::fs::DirBuilderExt;

use super::{PathRestored, StorageError};

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

/// Where the copy is made before it is moved in.
#[derive(Debug, Clone)]
pub enum Staging {
    /// A directory of voxnix's own next to the workspace on the same
    /// filesystem, out of the container's reach (the dir backend's
    /// container directory).
    Beside(std::path::PathBuf),
    /// Inside the workspace's own root (the workspace is a filesystem of
    /// its own: a ZFS dataset), in a directory made there and then owned by
    /// [`STAGING_ID`] with mode 0700, which the container's root cannot
    /// enter or change (it may only rename it; the copy is written through
    /// the directory's descriptor, `/proc/self/fd/N/...`, so that changes
    /// nothing).
    InTree,
}

/// The name of the in-tree staging directory (one per restore: the pid and
/// a counter make it unique; a leftover one is the host root's and empty or
/// partial, never the container's).
fn in_tree_name() -> OsString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    OsString::from(format!(
        ".voxnix-restore-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The owner (uid and gid, on disk) of the in-tree staging directory. The
/// workspace is bound into the container idmapped (`--bind=...:idmap`): on
/// disk, ids 0-65535 are the container's own ids, so the container's root
/// acts as the owner of anything on-disk root owns. This id is far outside
/// that range, so the container sees it unmapped: its root has no
/// capability over such a directory (the kernel grants those only over
/// inodes whose owner is mapped), cannot enter one with mode 0700, and
/// cannot make one (it cannot chown to an id it does not map).
pub const STAGING_ID: u32 = 0x7fff_fffe;

/// Whether the directory `dir` holds nothing.
fn is_empty(dir: &OwnedFd) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    Ok(std::fs::read_dir(path)?.next().is_none())
}

/// Errors of the snapshot's side, as storage reports them.
fn in_snapshot(id: &str, from_shown: &str) -> impl Fn(WalkError) -> StorageError + use<> {
    let (id, from_shown) = (id.to_string(), from_shown.to_string());
    move |e: WalkError| match e {
        WalkError::Missing(_) | WalkError::NotADirectory(_) => StorageError::NotFound {
            what: format!("'{from_shown}' in snapshot {id}"),
        },
        WalkError::Exists(_) | WalkError::Vanished(_) => StorageError::Conflict(e.to_string()),
        WalkError::Io(at, source) => StorageError::Io {
            context: format!("reading '{at}' in snapshot {id}"),
            source,
        },
    }
}

/// Errors of the workspace's side.
fn in_workspace(to_shown: &str) -> impl Fn(WalkError) -> StorageError + use<> {
    let to_shown = to_shown.to_string();
    move |e: WalkError| match e {
        WalkError::Missing(_) => StorageError::NotFound {
            what: format!("'{to_shown}' in the workspace"),
        },
        WalkError::NotADirectory(at) => StorageError::Conflict(format!(
            "to: '{at}' in the workspace is a link or not a directory, so nothing is put under it; give --to another path"
        )),
        WalkError::Exists(at) => StorageError::Conflict(format!(
            "to: '{at}' is already in the workspace; give --to another path, or move it away first (nothing is replaced)"
        )),
        WalkError::Vanished(at) => StorageError::Conflict(format!(
            "to: a folder on the way to '{at}' went away during the restore (moved inside \
             the container); try again"
        )),
        WalkError::Io(at, source) => StorageError::Io {
            context: format!("'{at}' in the workspace"),
            source,
        },
    }
}

/// Brings `from` of the snapshot tree `src_root` back into the workspace
/// tree `ws_root` at `to` (both components already checked). `limit`
/// looks at what is to be copied (its directory, name and stat) and says
/// how many bytes it may take, or refuses (a quota). Nothing is made in the
/// workspace until the copy is whole; then one rename, never replacing
/// anything.
pub fn bring_back(
    src_root: &OwnedFd,
    ws_root: &OwnedFd,
    id: &str,
    from: &[OsString],
    to: &[OsString],
    limit: &dyn Fn(&OwnedFd, &OsStr, &nix::sys::stat::FileStat) -> Result<u64, StorageError>,
    staging: &Staging,
) -> Result<PathRestored, StorageError> {
    let (from_shown, to_shown) = (shown(from), shown(to));
    let in_snapshot = in_snapshot(id, &from_shown);
    let in_workspace = in_workspace(&to_shown);
    let (from_name, from_parents) = from.split_last().ok_or_else(|| {
        StorageError::InvalidArgument("path: give a path inside the workspace".into())
    })?;
    let (to_name, to_parents) = to.split_last().ok_or_else(|| {
        StorageError::InvalidArgument("to: give a path inside the workspace".into())
    })?;
    let src_dir = walk(src_root, from_parents, false).map_err(&in_snapshot)?;
    let looked = match fstatat(
        &src_dir,
        from_name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Err(in_snapshot(WalkError::Missing(from_shown.clone()))),
        Err(e) => {
            return Err(in_snapshot(WalkError::Io(from_shown.clone(), e.into())));
        }
    };
    let max_bytes = limit(&src_dir, from_name, &looked)?;
    // Where it goes, looked at first without making anything, so that a
    // refusal leaves the workspace as it was.
    match walk(ws_root, to_parents, false) {
        Ok(dir) => {
            if present(&dir, to_name).map_err(&in_workspace)? {
                return Err(in_workspace(WalkError::Exists(to_shown.clone())));
            }
        }
        Err(WalkError::Missing(_)) => {}
        Err(e) => return Err(in_workspace(e)),
    }
    let quota = |e: io::Error| {
        let full = e.raw_os_error() == Some(libc::EDQUOT) || e.raw_os_error() == Some(libc::ENOSPC);
        StorageError::Io {
            context: if full {
                format!(
                    "copying '{from_shown}' out of snapshot {id}: the workspace's quota or the pool is full (nothing was put in the workspace)"
                )
            } else {
                format!("copying '{from_shown}' out of snapshot {id}")
            },
            source: e,
        }
    };
    let item = OsStr::new("item");
    let (stage_fd, cleanup): (OwnedFd, Box<dyn Fn()>) = match staging {
        Staging::Beside(dir) => {
            if std::fs::symlink_metadata(dir).is_ok() {
                super::fsutil::remove_tree(dir)?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| StorageError::Io {
                    context: format!("creating {}", dir.display()),
                    source: e,
                })?;
            let fd = open_root(dir).map_err(|e| StorageError::Io {
                context: "opening the staging directory".into(),
                source: io::Error::other(e.to_string()),
            })?;
            let dir = dir.clone();
            (
                fd,
                Box::new(move || {
                    let _ = super::fsutil::remove_tree(&dir);
                }),
            )
        }
        Staging::InTree => {
            remove_stale_in_tree(ws_root);
            let name = in_tree_name();
            let shown_name = name.to_string_lossy().into_owned();
            mkdirat(ws_root, name.as_os_str(), Mode::from_bits_truncate(0o700))
                .map_err(|e| in_workspace(WalkError::Io(shown_name.clone(), e.into())))?;
            let fd = openat(ws_root, name.as_os_str(), DIR_FLAGS, Mode::empty())
                .map_err(|e| in_workspace(walk_error(e, shown_name.clone())))?;
            // Out of the container's reach from here on: owned by an id its
            // idmapped view of the workspace does not map (see STAGING_ID).
            // Until this chown it was on-disk root's, i.e. the container
            // root's: so it must still be empty afterwards, or the container
            // put something in it in between.
            let staging_io = |e: nix::errno::Errno| StorageError::Io {
                context: "preparing the staging directory in the workspace".into(),
                source: e.into(),
            };
            nix::unistd::fchown(
                &fd,
                Some(Uid::from_raw(STAGING_ID)),
                Some(Gid::from_raw(STAGING_ID)),
            )
            .map_err(staging_io)?;
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o700)).map_err(staging_io)?;
            if !is_empty(&fd).map_err(|e| StorageError::Io {
                context: "reading the staging directory".into(),
                source: e,
            })? {
                return Err(StorageError::Conflict(
                    "something was put into the staging directory in the workspace while it was made; nothing was restored, try again"
                        .into(),
                ));
            }
            let root = ws_root.try_clone().map_err(|e| StorageError::Io {
                context: "the workspace".into(),
                source: e,
            })?;
            let held = fd.try_clone().map_err(|e| StorageError::Io {
                context: "the staging directory".into(),
                source: e,
            })?;
            (
                fd,
                Box::new(move || {
                    // Whatever is left in it (a failed copy) first, through
                    // its descriptor (no one else can change it); then the
                    // directory, if the entry of that name is still it.
                    let _ = remove_entries_at(&held);
                    let ours = |st: nix::sys::stat::FileStat| (st.st_dev, st.st_ino);
                    let same = openat(&root, name.as_os_str(), DIR_FLAGS, Mode::empty())
                        .ok()
                        .and_then(|there| fstat(&there).ok())
                        .map(ours)
                        == fstat(&held).ok().map(ours);
                    if same {
                        let _ = nix::unistd::unlinkat(
                            &root,
                            name.as_os_str(),
                            nix::unistd::UnlinkatFlags::RemoveDir,
                        );
                    }
                }),
            )
        }
    };
    let dst = std::path::PathBuf::from(format!("/proc/self/fd/{}/item", {
        use std::os::fd::AsRawFd;
        stage_fd.as_raw_fd()
    }));
    let moved = super::fsutil::copy_entry_at(&src_dir, from_name, &dst, max_bytes)
        .map_err(quota)
        .and_then(|stats| {
            // Only now the missing folders on the way are made.
            let to_dir = walk(ws_root, to_parents, true).map_err(&in_workspace)?;
            move_in(&stage_fd, item, &to_dir, to_name, &to_shown).map_err(&in_workspace)?;
            Ok(stats)
        });
    cleanup();
    let stats = moved?;
    tracing::info!(snapshot = id, path = %from_shown, to = %to_shown, "restored a path");
    Ok(PathRestored {
        snapshot: id.to_string(),
        path: from_shown,
        to: to_shown,
        files: stats.files,
        bytes: stats.bytes,
    })
}

/// Removes what an earlier restore cut short left in the workspace's root:
/// only directories of that name owned by [`STAGING_ID`] (the container can
/// make one of that name, but not one owned so).
fn remove_stale_in_tree(ws_root: &OwnedFd) {
    let root = {
        use std::os::fd::AsRawFd;
        std::path::PathBuf::from(format!("/proc/self/fd/{}", ws_root.as_raw_fd()))
    };
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.as_bytes().starts_with(b".voxnix-restore-") {
            continue;
        }
        let Ok(fd) = openat(ws_root, name.as_os_str(), DIR_FLAGS, Mode::empty()) else {
            continue;
        };
        if fstat(&fd).is_ok_and(|st| st.st_uid == STAGING_ID && st.st_gid == STAGING_ID) {
            let _ = remove_entries_at(&fd);
            let _ = nix::unistd::unlinkat(
                ws_root,
                name.as_os_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            );
        }
    }
}

/// Removes everything in the directory `dir` (by descriptor, never
/// following a link).
fn remove_entries_at(dir: &OwnedFd) -> io::Result<()> {
    let path = {
        use std::os::fd::AsRawFd;
        std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
    };
    for e in std::fs::read_dir(&path)?.flatten() {
        let p = path.join(e.file_name());
        match e.file_type() {
            Ok(t) if t.is_dir() => super::fsutil::remove_tree(&p).map_err(io::Error::other)?,
            _ => std::fs::remove_file(&p)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// In-tree staging (zfs): a leftover of an earlier restore (owned by
    /// STAGING_ID) goes; a directory of the same name the container made
    /// (owned by an id it maps) stays untouched, with what is in it; the
    /// restored file arrives and no staging directory is left.
    #[test]
    fn in_tree_staging_removes_only_its_own_leftovers() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("snap");
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(snap.join("a")).unwrap();
        std::fs::write(snap.join("a/f"), "old").unwrap();
        std::fs::create_dir_all(&ws).unwrap();
        let stale = ws.join(".voxnix-restore-1-1");
        std::fs::create_dir_all(stale.join("half")).unwrap();
        std::os::unix::fs::chown(&stale, Some(STAGING_ID), Some(STAGING_ID)).unwrap();
        let planted = ws.join(".voxnix-restore-1-2");
        std::fs::create_dir_all(&planted).unwrap();
        std::fs::write(planted.join("mine"), "tenant").unwrap();
        let (src, live) = (open_root(&snap).unwrap(), open_root(&ws).unwrap());
        let from = components("a/f", "path").unwrap();
        let done = bring_back(
            &src,
            &live,
            "s1",
            &from,
            &from,
            &|_, _, _| Ok(u64::MAX),
            &Staging::InTree,
        )
        .unwrap();
        assert_eq!(done.files, 1);
        assert_eq!(std::fs::read_to_string(ws.join("a/f")).unwrap(), "old");
        assert!(!stale.exists(), "its own leftover went");
        assert_eq!(
            std::fs::read_to_string(planted.join("mine")).unwrap(),
            "tenant",
            "the container's directory of that name is left alone"
        );
        let left: Vec<_> = std::fs::read_dir(&ws)
            .unwrap()
            .flatten()
            .filter(|e| e.metadata().is_ok_and(|m| m.uid() == STAGING_ID))
            .collect();
        assert!(left.is_empty(), "no staging directory is left");
    }

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
