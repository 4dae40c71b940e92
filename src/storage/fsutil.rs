//! File-tree helpers for the directory backend: measuring a tree the way `du`
//! does, and copying one (reflinks where the file system can) with modes,
//! ownership, symlinks, hard links and timestamps preserved.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags, fstatat, futimens, mknod, utimensat};
use nix::sys::time::TimeSpec;

/// How long one measurement may walk before it gives up with a lower bound.
pub const MEASURE_BUDGET: Duration = Duration::from_secs(20);

/// The space a tree takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// Bytes allocated (512-byte blocks, as `du` counts them).
    pub bytes: u64,
    /// False when the time budget ran out: `bytes` is then a lower bound.
    pub complete: bool,
}

/// Measures the allocated size of `root` like `du -s -x`: blocks actually
/// allocated, each hard-linked file counted once, symlinks not followed, other
/// file systems mounted inside not entered. A missing root measures 0.
/// Entries that vanish or cannot be read during the walk are skipped.
///
/// The tree may be a running container's workspace, so it is walked by
/// descriptor like [`copy_tree`]: a directory swapped for a link meanwhile is
/// never entered (its `openat(O_NOFOLLOW)` fails, or opens something else,
/// which is skipped).
pub fn measure(root: &Path, budget: Duration) -> io::Result<Measure> {
    let deadline = Instant::now() + budget;
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Measure {
                bytes: 0,
                complete: true,
            });
        }
        Err(e) => return Err(e),
    };
    let dev = meta.dev();
    let mut total = meta.blocks().saturating_mul(512);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack: Vec<OwnedFd> = Vec::new();
    if meta.is_dir() {
        match open_dir_at(None, root.as_os_str()) {
            Ok(fd) => stack.push(fd),
            Err(e) => tracing::debug!(path = %root.display(), "measure: cannot open: {e}"),
        }
    }
    let mut visited: u64 = 0;
    while let Some(dir) = stack.pop() {
        let names = match entry_names(&dir) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(path = %root.display(), "measure: skipping unreadable directory: {e}");
                continue;
            }
        };
        for name in names {
            visited += 1;
            if visited.is_multiple_of(1024) && Instant::now() > deadline {
                tracing::warn!(
                    path = %root.display(),
                    "measuring took longer than {}s; reporting a lower bound",
                    budget.as_secs()
                );
                return Ok(Measure {
                    bytes: total,
                    complete: false,
                });
            }
            let Ok(st) = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let is_dir = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
            // Do not descend into another file system mounted here. Only
            // directories are compared: on overlayfs, files report the device
            // of the layer they live on, not the overlay's.
            if is_dir && st.st_dev != dev {
                continue;
            }
            if !is_dir && st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
                continue;
            }
            total =
                total.saturating_add(u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512));
            if is_dir
                && let Ok(sub) = open_dir_at(Some(&dir), name.as_os_str())
                && same_as_looked_at(&sub, &st, root).is_ok()
            {
                stack.push(sub);
            }
        }
    }
    Ok(Measure {
        bytes: total,
        complete: true,
    })
}

/// How a copy went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    /// Files whose data was shared with the source (FICLONE) instead of copied.
    pub reflinked: u64,
    pub skipped_sockets: u64,
    /// Bytes of file data written (or shared).
    pub bytes: u64,
}

/// Copies the tree at `src` to `dst` (which must not exist). Regular files are
/// reflinked where the file system supports it (btrfs, XFS, bcachefs, ...)
/// and byte-copied otherwise; directories, symlinks, FIFOs and device nodes
/// are recreated; modes, ownership and access/modification times are
/// preserved; hard links inside the tree stay hard links. Sockets are skipped
/// (they cannot be copied). Extended attributes and ACLs are not copied.
/// On error the partial copy is left for the caller to remove.
///
/// The source may belong to a running, hostile container (a workspace), so
/// it is walked by descriptor, never by path: every entry is looked at with
/// `fstatat(AT_SYMLINK_NOFOLLOW)` and opened relative to its directory's
/// descriptor with `O_NOFOLLOW` (files also `O_NONBLOCK`), and what was
/// opened must be what was looked at (same kind, device and inode), so a
/// directory or file swapped for a link, a FIFO or a device meanwhile is an
/// error, never followed, opened or read. A file is copied up to the size it
/// had when looked at, and the whole copy up to `max_bytes` of data: a tree
/// that grows while it is copied cannot fill the disk.
pub fn copy_tree(src: &Path, dst: &Path, max_bytes: u64) -> io::Result<CopyStats> {
    let root = open_dir_at(None, src.as_os_str())?;
    let root_stat = nix::sys::stat::fstat(&root).map_err(io::Error::from)?;
    copy_tree_from(root, &root_stat, dst, max_bytes)
}

/// Copies the entry `name` of the directory `dir` to `dst` (which must not
/// exist), with the same rules as `copy_tree`: a directory with all it
/// holds, a regular file, a symlink as a symlink (never followed), a FIFO
/// or device recreated; a socket is refused.
pub fn copy_entry_at(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    dst: &Path,
    max_bytes: u64,
) -> io::Result<CopyStats> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io::Error::from)?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let attrs = Attrs::of(&st);
    let mut stats = CopyStats::default();
    if kind == SFlag::S_IFDIR {
        let sub = open_dir_at(Some(dir), name)?;
        same_as_looked_at(&sub, &st, dst)?;
        return copy_tree_from(sub, &st, dst, max_bytes);
    }
    if kind == SFlag::S_IFREG {
        let mut reflink_works = true;
        let n = copy_file_at(
            dir,
            &name.to_os_string(),
            &st,
            dst,
            max_bytes,
            &mut reflink_works,
            &mut stats,
        )?;
        stats.bytes = n;
        stats.files = 1;
    } else if kind == SFlag::S_IFLNK {
        let target = readlinkat(dir, name).map_err(io::Error::from)?;
        symlink(&target, dst)?;
        chown_nofollow(dst, &attrs)?;
        set_times_nofollow(dst, &attrs)?;
    } else if kind == SFlag::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is a socket, which cannot be copied", dst.display()),
        ));
    } else {
        mknod(dst, kind, Mode::from_bits_truncate(attrs.mode), st.st_rdev)
            .map_err(io::Error::from)?;
        chown_nofollow(dst, &attrs)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(attrs.mode))?;
        set_times_nofollow(dst, &attrs)?;
    }
    Ok(stats)
}

/// `copy_tree` from an opened directory, `root_stat` being what it is.
fn copy_tree_from(
    root: OwnedFd,
    root_stat: &FileStat,
    dst: &Path,
    max_bytes: u64,
) -> io::Result<CopyStats> {
    let mut stats = CopyStats::default();
    let mut reflink_works = true;
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Directories get their final mode, owner and times after their content.
    let mut finish_dirs: Vec<(PathBuf, Attrs)> = Vec::new();

    make_dir(dst)?;
    finish_dirs.push((dst.to_path_buf(), Attrs::of(root_stat)));
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root, dst.to_path_buf())];
    while let Some((dir, to_dir)) = stack.pop() {
        for name in entry_names(&dir)? {
            let to = to_dir.join(&name);
            let st = match fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(nix::errno::Errno::ENOENT) => continue, // vanished
                Err(e) => return Err(e.into()),
            };
            let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
            let attrs = Attrs::of(&st);
            if kind == SFlag::S_IFDIR {
                let sub = open_dir_at(Some(&dir), name.as_os_str())?;
                same_as_looked_at(&sub, &st, &to_dir.join(&name))?;
                make_dir(&to)?;
                finish_dirs.push((to.clone(), attrs));
                stack.push((sub, to));
                continue;
            }
            if st.st_nlink > 1 {
                if let Some(first) = links.get(&(st.st_dev, st.st_ino)) {
                    fs::hard_link(first, &to)?;
                    continue;
                }
                links.insert((st.st_dev, st.st_ino), to.clone());
            }
            if kind == SFlag::S_IFREG {
                let budget = max_bytes.saturating_sub(stats.bytes);
                let n = copy_file_at(
                    &dir,
                    &name,
                    &st,
                    &to,
                    budget,
                    &mut reflink_works,
                    &mut stats,
                )?;
                stats.bytes = stats.bytes.saturating_add(n);
                stats.files += 1;
            } else if kind == SFlag::S_IFLNK {
                let target = readlinkat(&dir, name.as_os_str()).map_err(io::Error::from)?;
                symlink(&target, &to)?;
                chown_nofollow(&to, &attrs)?;
                set_times_nofollow(&to, &attrs)?;
            } else if kind == SFlag::S_IFSOCK {
                stats.skipped_sockets += 1;
                links.remove(&(st.st_dev, st.st_ino));
                tracing::debug!(path = %to.display(), "copy: skipping a socket");
            } else {
                // FIFOs and devices are recreated, never opened.
                mknod(&to, kind, Mode::from_bits_truncate(attrs.mode), st.st_rdev)
                    .map_err(io::Error::from)?;
                chown_nofollow(&to, &attrs)?;
                fs::set_permissions(&to, fs::Permissions::from_mode(attrs.mode))?;
                set_times_nofollow(&to, &attrs)?;
            }
        }
    }
    // Deepest first, so setting a parent's times is not undone by its children.
    for (dir, a) in finish_dirs.iter().rev() {
        chown_nofollow(dir, a)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(a.mode))?;
        set_times_nofollow(dir, a)?;
    }
    Ok(stats)
}

/// What a copy keeps of an entry.
struct Attrs {
    uid: u32,
    gid: u32,
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
}

impl Attrs {
    fn of(st: &FileStat) -> Attrs {
        Attrs {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
            mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        }
    }
}

/// Opens a directory (relative to `at`, or a path) without following a link.
fn open_dir_at(at: Option<&OwnedFd>, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match at {
        Some(dir) => openat(dir, name, flags, Mode::empty()),
        None => nix::fcntl::open(name, flags, Mode::empty()),
    };
    fd.map_err(|e| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a directory (a link, or changed while it was copied)",
                Path::new(name).display()
            ),
        ),
        e => e.into(),
    })
}

/// The names in a directory (without `.` and `..`), sorted.
fn entry_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let copy = dir.try_clone()?;
    let mut d = nix::dir::Dir::from_fd(copy).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from(std::ffi::OsStr::from_bytes(name)));
        }
    }
    names.sort();
    Ok(names)
}

/// An opened entry must be the one looked at: same kind, device and inode.
fn same_as_looked_at(fd: &impl AsFd, looked: &FileStat, what: &Path) -> io::Result<()> {
    let opened = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    let kind = |m: u32| m & SFlag::S_IFMT.bits();
    if (kind(opened.st_mode), opened.st_dev, opened.st_ino)
        != (kind(looked.st_mode), looked.st_dev, looked.st_ino)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} changed while it was being copied", what.display()),
        ));
    }
    Ok(())
}

fn make_dir(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(p)
}

/// Copies one regular file, opened relative to its directory; returns the
/// bytes written (at most its size when looked at, and at most `budget`).
fn copy_file_at(
    dir: &OwnedFd,
    name: &OsString,
    looked: &FileStat,
    to: &Path,
    budget: u64,
    reflink_works: &mut bool,
    stats: &mut CopyStats,
) -> io::Result<u64> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let src: File = openat(dir, name.as_os_str(), flags, Mode::empty())
        .map_err(|e| match e {
            nix::errno::Errno::ELOOP => io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} changed into a link while it was being copied",
                    to.display()
                ),
            ),
            e => e.into(),
        })?
        .into();
    same_as_looked_at(&src, looked, to)?;
    let size = u64::try_from(looked.st_size).unwrap_or(0);
    if size > budget {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "copying {} would exceed the space this copy may use",
                to.display()
            ),
        ));
    }
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let mut cloned = false;
    if *reflink_works {
        match reflink(&src, &dst) {
            Ok(()) => cloned = true,
            Err(e) => {
                // Not supported here (or across these file systems): stop
                // trying for the rest of this copy.
                tracing::debug!("reflink unavailable, copying bytes: {e}");
                *reflink_works = false;
            }
        }
    }
    if cloned {
        stats.reflinked += 1;
    } else {
        // Only what it had when looked at: a file that grows meanwhile is
        // cut there.
        io::copy(&mut (&src).take(size), &mut dst)?;
    }
    let a = Attrs::of(looked);
    // Owner before mode: chown clears set-uid/set-gid bits.
    std::os::unix::fs::fchown(&dst, Some(a.uid), Some(a.gid)).or_else(ignore_eperm)?;
    dst.set_permissions(fs::Permissions::from_mode(a.mode))?;
    futimens(&dst, &a.atime, &a.mtime).map_err(io::Error::from)?;
    Ok(size)
}

/// Shares `src`'s data with `dst` (the FICLONE ioctl).
fn reflink(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its integer argument;
    // both descriptors are open for the duration of the call.
    let rc = unsafe { nix::libc::ioctl(dst.as_raw_fd(), nix::libc::FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Without CAP_CHOWN (tests as an ordinary user) ownership cannot be kept;
/// the copy then belongs to the caller, which is all it can be.
fn ignore_eperm(e: io::Error) -> io::Result<()> {
    if e.raw_os_error() == Some(nix::libc::EPERM) {
        Ok(())
    } else {
        Err(e)
    }
}

fn chown_nofollow(p: &Path, a: &Attrs) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(a.uid), Some(a.gid)).or_else(ignore_eperm)
}

fn set_times_nofollow(p: &Path, a: &Attrs) -> io::Result<()> {
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &a.atime,
        &a.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Free bytes for an unprivileged writer on the file system holding `p`
/// (or its nearest existing ancestor).
pub fn free_space(p: &Path) -> Option<u64> {
    let mut cur = Some(p);
    while let Some(c) = cur {
        if let Ok(s) = nix::sys::statvfs::statvfs(c) {
            return Some(s.blocks_available().saturating_mul(s.fragment_size()));
        }
        cur = c.parent();
    }
    None
}

/// fsyncs a directory so renames in it are durable; errors are logged only
/// (durability is best effort once the rename itself succeeded).
pub fn sync_dir_quiet(dir: &Path) {
    if let Err(e) = crate::atomic_file::sync_dir(dir) {
        tracing::debug!(path = %dir.display(), "fsync of directory failed: {e}");
    }
}

/// Removes a tree, making read-only directories writable first (a copied
/// workspace may hold some).
pub fn remove_tree(p: &Path) -> Result<(), super::StorageError> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            make_writable(p);
            fs::remove_dir_all(p).map_err(|_| super::StorageError::Io {
                context: format!("removing {}", p.display()),
                source: first,
            })
        }
    }
}

fn make_writable(p: &Path) {
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(m) = fs::symlink_metadata(&d)
            && m.is_dir()
        {
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_counts_hard_links_once_and_ignores_symlink_targets() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("a"), vec![1u8; 64 * 1024]).unwrap();
        let one = measure(&d, MEASURE_BUDGET).unwrap().bytes;
        fs::hard_link(d.join("a"), d.join("b")).unwrap();
        symlink(t.path(), d.join("loop")).unwrap();
        let two = measure(&d, MEASURE_BUDGET).unwrap();
        assert!(two.complete);
        // The symlink itself may take a block on some file systems, not more.
        assert!(
            two.bytes >= one && two.bytes <= one + 4096,
            "{one} {}",
            two.bytes
        );
        assert_eq!(
            measure(&t.path().join("missing"), MEASURE_BUDGET)
                .unwrap()
                .bytes,
            0
        );
    }
}
