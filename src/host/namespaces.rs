//! A running container's namespaces, and joining them: the one way voxnix
//! touches anything inside a running container (its bus socket, its
//! journal), so that every path is resolved by the kernel against the
//! container's own root and mounts, never the host's.
//!
//! Users: [`super::ns_socket`] (a forked child that connects a socket) and
//! [`super::journal_in_container`] (a reader process).

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The steps of [`join`], named for error messages (index = step).
pub const JOIN_STEPS: [&str; 5] = [
    "joining the container's user namespace",
    "joining the container's mount namespace",
    "dropping supplementary groups",
    "becoming the container's root (gid)",
    "becoming the container's root (uid)",
];

/// Opens namespace `kind` (`mnt`, `net`) of `leader`, refusing it when it
/// is the caller's own or that of PID 1 of `proc_root`: the leader's PID may
/// have been reused by a host process since machined named it, and "inside
/// the container" would then be the host. `what` names the namespace in the
/// error ("mounts", "network").
pub fn open_not_hosts(proc_root: &Path, leader: u32, kind: &str, what: &str) -> io::Result<File> {
    let ns = File::open(proc_root.join(leader.to_string()).join("ns").join(kind))?;
    let theirs = ns.metadata()?;
    for host in [
        Path::new("/proc/self/ns").join(kind),
        proc_root.join("1/ns").join(kind),
    ] {
        // Unreadable (e.g. PID 1 of another PID namespace) cannot match.
        if let Ok(m) = std::fs::metadata(&host)
            && (m.dev(), m.ino()) == (theirs.dev(), theirs.ino())
        {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {leader} is not in a container (it shares the host's {what})"),
            ));
        }
    }
    Ok(ns)
}

/// A container's namespaces, opened through `proc_root` (where its leader
/// is a valid PID).
pub struct Namespaces {
    /// Its user namespace, when it has one of its own (user-namespaced
    /// containers, the default); `None` when it shares the host's.
    pub user: Option<File>,
    pub mnt: File,
}

impl Namespaces {
    /// Opens the namespaces of `leader` (machined's `Leader`).
    ///
    /// Refuses a mount namespace that is the caller's own or that of PID 1
    /// of `proc_root`: the leader's PID may have been reused by a host
    /// process since machined named it, and "inside the container" would
    /// then be the host.
    pub fn open(proc_root: &Path, leader: u32) -> io::Result<Namespaces> {
        let dir = proc_root.join(leader.to_string()).join("ns");
        let mnt = open_not_hosts(proc_root, leader, "mnt", "mounts")?;
        let user = File::open(dir.join("user"))?;
        // Join the user namespace only when it is not ours already (joining
        // one's own user namespace is EINVAL).
        let ours = std::fs::metadata("/proc/self/ns/user")?;
        let theirs = user.metadata()?;
        let user = ((theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino())).then_some(user);
        Ok(Namespaces { user, mnt })
    }
}

/// Joins the user namespace `user_fd` (when not -1) and the mount namespace
/// `mnt_fd`, and becomes uid/gid 0 there: the container's root, with the
/// container's root directory. On failure: the index into [`JOIN_STEPS`]
/// and the errno.
///
/// Only system calls on the stack: safe in a child forked from a
/// multi-threaded process. The calling process must be single-threaded
/// (`setns` into a user namespace requires it).
///
/// # Safety
/// `user_fd` is -1 or an open user-namespace descriptor; `mnt_fd` an open
/// mount-namespace descriptor.
pub unsafe fn join(user_fd: RawFd, mnt_fd: RawFd) -> Result<(), (u32, i32)> {
    unsafe {
        let errno = || *libc::__errno_location();
        if user_fd >= 0 && libc::setns(user_fd, libc::CLONE_NEWUSER) != 0 {
            return Err((0, errno()));
        }
        // Also sets the root and working directory to the container's root.
        if libc::setns(mnt_fd, libc::CLONE_NEWNS) != 0 {
            return Err((1, errno()));
        }
        if user_fd >= 0 {
            // uid/gid 0 of the container's user namespace. setgroups may be
            // refused ("deny" in /proc/<pid>/setgroups); the groups are then
            // the unmapped ones, which grant nothing inside.
            if libc::setgroups(0, std::ptr::null()) != 0 && errno() != libc::EPERM {
                return Err((2, errno()));
            }
            if libc::setresgid(0, 0, 0) != 0 {
                return Err((3, errno()));
            }
            if libc::setresuid(0, 0, 0) != 0 {
                return Err((4, errno()));
            }
        }
        Ok(())
    }
}
