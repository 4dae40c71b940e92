//! Connecting to a unix socket *inside* a container, from inside its
//! namespaces, the way systemd's `machine:` bus transport does: a forked
//! child joins the container's user namespace (when it has one of its own)
//! and mount namespace, becomes the container's root, connects to the path
//! there, and hands the connected socket back over a socket pair.
//!
//! Why: the path is then resolved by the kernel against the container's own
//! root and mounts. A path reached from the host instead (through
//! `/proc/<leader>/root/...`) is resolved with the host's root for every
//! absolute symlink the container plants on the way: a container that turns
//! its `/run/dbus/system_bus_socket` into a link to the same path would hand
//! the host's systemd to whoever connects. From inside, such a link can only
//! point into the container itself.
//!
//! And because the socket is connected by the container's root (uid 0 of its
//! user namespace), the container's D-Bus sees the same credentials it would
//! see from `machinectl shell`, not an unmapped host uid.
//!
//! The child runs nothing but system calls (no allocation, no locks: the
//! daemon is multi-threaded), and is killed if it does not answer in time
//! (a container can make `connect` block by never accepting).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::namespaces::{JOIN_STEPS, Namespaces, join};

/// How long the child may take to join and connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The steps of the child after [`join`], reported back when one fails.
const STEPS: [&str; 2] = ["creating a socket", "connecting"];

/// Connects to `path` (absolute, inside the container) as the container's
/// root, from inside its user and mount namespaces. Blocking; run it off the
/// async executor.
pub fn connect_in_container(proc_root: &Path, leader: u32, path: &str) -> io::Result<UnixStream> {
    if !path.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path must be absolute",
        ));
    }
    let ns = Namespaces::open(proc_root, leader)?;
    let addr = unix_addr(path)?;
    let (parent, child) = socket_pair()?;

    let user_fd: RawFd = ns.user.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let mnt_fd = ns.mnt.as_raw_fd();
    let child_fd = child.as_raw_fd();

    // SAFETY: the child only makes system calls on memory prepared before the
    // fork (no allocation, no locks), then _exits; see `child_main`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the forked child; never returns.
        unsafe { child_main(user_fd, mnt_fd, child_fd, &addr) }
    }
    drop(child);
    let result = receive(&parent, pid);
    reap(pid);
    result
}

/// Where the child connects: a `sockaddr_un` for `path`.
fn unix_addr(path: &str) -> io::Result<libc::sockaddr_un> {
    let c = CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path is too long",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(addr)
}

fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The forked child: join, become root, connect, send the socket (or the
/// failed step and errno) back, exit.
///
/// # Safety
/// Only to be called in the child right after `fork`.
unsafe fn child_main(user_fd: RawFd, mnt_fd: RawFd, reply: RawFd, addr: &libc::sockaddr_un) -> ! {
    unsafe {
        let fail = |step: u32| -> ! {
            let errno = *libc::__errno_location();
            send(reply, [step, errno as u32], -1);
            libc::_exit(1)
        };
        if let Err((step, errno)) = join(user_fd, mnt_fd) {
            send(reply, [step, errno as u32], -1);
            libc::_exit(1)
        }
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            fail(JOIN_STEPS.len() as u32);
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::connect(s, (addr as *const libc::sockaddr_un).cast(), len) != 0 {
            fail(JOIN_STEPS.len() as u32 + 1);
        }
        send(reply, [u32::MAX, 0], s);
        libc::_exit(0)
    }
}

/// One message on the reply socket: two words, and `fd` as SCM_RIGHTS when
/// it is not -1. Stack memory only (it runs in the forked child).
///
/// # Safety
/// `reply` is an open socket; `fd` is -1 or an open descriptor.
unsafe fn send(reply: RawFd, words: [u32; 2], fd: RawFd) {
    unsafe {
        let mut data = words;
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: std::mem::size_of_val(&data),
        };
        // Room for one descriptor's control message, aligned.
        let mut control = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if fd >= 0 {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::copy_nonoverlapping(
                (&fd as *const RawFd).cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                std::mem::size_of::<RawFd>(),
            );
        }
        libc::sendmsg(reply, &msg, libc::MSG_NOSIGNAL);
    }
}

/// The child's answer: the connected socket, or what failed. Kills the child
/// when it does not answer within [`CONNECT_TIMEOUT`].
fn receive(parent: &OwnedFd, pid: libc::pid_t) -> io::Result<UnixStream> {
    let mut pfd = libc::pollfd {
        fd: parent.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = CONNECT_TIMEOUT.as_millis() as libc::c_int;
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if ready <= 0 {
        // SAFETY: pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connecting inside the container did not finish in time",
        ));
    }
    let mut data = [0u32; 2];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: std::mem::size_of_val(&data),
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; the buffers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg into the buffers set up above.
    let n = unsafe { libc::recvmsg(parent.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received: Option<OwnedFd> = None;
    // SAFETY: walking the control messages recvmsg filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let mut fd: RawFd = -1;
                std::ptr::copy_nonoverlapping(
                    libc::CMSG_DATA(cmsg),
                    (&mut fd as *mut RawFd).cast::<u8>(),
                    std::mem::size_of::<RawFd>(),
                );
                if fd >= 0 {
                    received = Some(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n as usize != std::mem::size_of_val(&data) {
        return Err(io::Error::other(
            "the connecting child exited without an answer",
        ));
    }
    match (data[0], received) {
        (u32::MAX, Some(fd)) => Ok(UnixStream::from(fd)),
        (step, _) => {
            let what = JOIN_STEPS
                .iter()
                .chain(STEPS.iter())
                .nth(step as usize)
                .copied()
                .unwrap_or("connecting");
            let errno = io::Error::from_raw_os_error(data[1] as i32);
            Err(io::Error::new(errno.kind(), format!("{what}: {errno}")))
        }
    }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}
