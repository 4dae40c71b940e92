//! File-tree helpers for the directory backend: measuring a tree the way `du`
//! does, and copying one (reflinks where the file system can) with modes,
//! ownership, symlinks, hard links and timestamps preserved.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{
    DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, futimens, mknod, utimensat};
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
    let mut stack: Vec<PathBuf> = Vec::new();
    if meta.is_dir() {
        stack.push(root.to_path_buf());
    }
    let mut visited: u64 = 0;
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(path = %dir.display(), "measure: skipping unreadable directory: {e}");
                continue;
            }
        };
        for entry in entries {
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
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            // Do not descend into another file system mounted here. Only
            // directories are compared: on overlayfs, files report the device
            // of the layer they live on, not the overlay's.
            if m.is_dir() && m.dev() != dev {
                continue;
            }
            if !m.is_dir() && m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total = total.saturating_add(m.blocks().saturating_mul(512));
            if m.is_dir() {
                stack.push(path);
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
}

/// Copies the tree at `src` to `dst` (which must not exist). Regular files are
/// reflinked where the file system supports it (btrfs, XFS, bcachefs, ...)
/// and byte-copied otherwise; directories, symlinks, FIFOs and device nodes
/// are recreated; modes, ownership and access/modification times are
/// preserved; hard links inside the tree stay hard links. Sockets are skipped
/// (they cannot be copied). Extended attributes and ACLs are not copied.
/// On error the partial copy is left for the caller to remove.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let root_meta = fs::symlink_metadata(src)?;
    if !root_meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", src.display()),
        ));
    }
    let mut stats = CopyStats::default();
    let mut reflink_works = true;
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Directories get their final mode, owner and times after their content.
    let mut finish_dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();

    make_dir(dst)?;
    finish_dirs.push((dst.to_path_buf(), root_meta));
    let mut stack: Vec<(PathBuf, PathBuf)> = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((from_dir, to_dir)) = stack.pop() {
        let mut names: Vec<OsString> = fs::read_dir(&from_dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let from = from_dir.join(&name);
            let to = to_dir.join(&name);
            let m = match fs::symlink_metadata(&from) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // vanished
                Err(e) => return Err(e),
            };
            let ft = m.file_type();
            if ft.is_dir() {
                make_dir(&to)?;
                finish_dirs.push((to.clone(), m));
                stack.push((from, to));
                continue;
            }
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    fs::hard_link(first, &to)?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), to.clone());
            }
            if ft.is_file() {
                copy_file(&from, &to, &m, &mut reflink_works, &mut stats)?;
                stats.files += 1;
            } else if ft.is_symlink() {
                let target = fs::read_link(&from)?;
                symlink(&target, &to)?;
                chown_nofollow(&to, &m)?;
                set_times_nofollow(&to, &m)?;
            } else if ft.is_socket() {
                stats.skipped_sockets += 1;
                links.remove(&(m.dev(), m.ino()));
                tracing::debug!(path = %from.display(), "copy: skipping a socket");
            } else {
                let kind = if ft.is_fifo() {
                    SFlag::S_IFIFO
                } else if ft.is_char_device() {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                mknod(
                    &to,
                    kind,
                    Mode::from_bits_truncate(m.mode() & 0o7777),
                    m.rdev(),
                )
                .map_err(io::Error::from)?;
                chown_nofollow(&to, &m)?;
                fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))?;
                set_times_nofollow(&to, &m)?;
            }
        }
    }
    // Deepest first, so setting a parent's times is not undone by its children.
    for (dir, m) in finish_dirs.iter().rev() {
        chown_nofollow(dir, m)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        set_times_nofollow(dir, m)?;
    }
    Ok(stats)
}

fn make_dir(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(p)
}

fn copy_file(
    from: &Path,
    to: &Path,
    m: &fs::Metadata,
    reflink_works: &mut bool,
    stats: &mut CopyStats,
) -> io::Result<()> {
    let mut src = File::open(from)?;
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
        io::copy(&mut src, &mut dst)?;
    }
    // Owner before mode: chown clears set-uid/set-gid bits.
    std::os::unix::fs::fchown(&dst, Some(m.uid()), Some(m.gid())).or_else(ignore_eperm)?;
    dst.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
    futimens(
        &dst,
        &TimeSpec::new(m.atime(), m.atime_nsec()),
        &TimeSpec::new(m.mtime(), m.mtime_nsec()),
    )
    .map_err(io::Error::from)?;
    Ok(())
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

fn chown_nofollow(p: &Path, m: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(m.uid()), Some(m.gid())).or_else(ignore_eperm)
}

fn set_times_nofollow(p: &Path, m: &fs::Metadata) -> io::Result<()> {
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &TimeSpec::new(m.atime(), m.atime_nsec()),
        &TimeSpec::new(m.mtime(), m.mtime_nsec()),
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
