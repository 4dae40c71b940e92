//! A running container's addresses, from its own kernel: a netlink route
//! socket made inside the container's network namespace (a socket stays
//! bound to the namespace it was made in), subscribed to address changes.
//! One dump fills the table, then each change the kernel announces (a DHCP
//! lease, `tailscale0` coming up, an `ip addr add` inside) updates it. No
//! question to machined per request (it enters the namespace every time).
//!
//! Only messages from the kernel (port id 0) count: the container's root
//! may send this socket messages of its own. What the kernel says is parsed
//! by netlink-packet-route and bounded here (at most [`MAX_ADDRESSES`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use netlink_packet_core::{
    NLM_F_MATCH, NLM_F_REQUEST, NLM_F_ROOT, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_ROUTE;
use tokio::io::unix::AsyncFd;

/// rtnetlink multicast groups (linux/rtnetlink.h).
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;

/// More addresses than any container needs; a container adding thousands
/// cannot grow the daemon without bound.
pub const MAX_ADDRESSES: usize = 64;

/// Opens the network namespace of `leader` (machined's `Leader`), refusing
/// the host's own (a reused PID would otherwise make the host "the
/// container").
pub fn open_netns(proc_root: &Path, leader: u32) -> io::Result<File> {
    super::namespaces::open_not_hosts(proc_root, leader, "net", "network")
}

/// The addresses of one network namespace, kept current.
pub struct AddressWatch {
    socket: AsyncFd<Socket>,
    /// (interface index, address) → whether it counts (not host-scoped,
    /// not deprecated).
    table: BTreeMap<(u32, IpAddr), bool>,
    dumped: bool,
}

impl AddressWatch {
    /// Makes the socket inside `netns` (from a thread that joins it and
    /// ends: the daemon's own threads stay where they are), subscribes, and
    /// asks for a dump.
    pub fn open(netns: File) -> io::Result<Self> {
        let socket = std::thread::scope(|s| {
            s.spawn(move || -> io::Result<Socket> {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                let mut socket = Socket::new(NETLINK_ROUTE)?;
                socket.bind_auto()?;
                socket.add_membership(RTNLGRP_IPV4_IFADDR)?;
                socket.add_membership(RTNLGRP_IPV6_IFADDR)?;
                socket.set_non_blocking(true)?;
                Ok(socket)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the netlink thread panicked")))
        })?;
        // SAFETY: the netlink socket owns its descriptor, closes it only when
        // dropped (with the AsyncFd) and always returns the same one.
        let socket =
            unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }?;
        let watch = Self {
            socket,
            table: BTreeMap::new(),
            dumped: false,
        };
        watch.request_dump()?;
        Ok(watch)
    }

    fn request_dump(&self) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ROOT | NLM_F_MATCH;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            ),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.get_ref().send(&buf, 0)?;
        Ok(())
    }

    /// Waits for the next change and returns the addresses after it (once
    /// the first dump is complete). An overrun (changes lost) asks for a
    /// new dump.
    pub async fn next(&mut self) -> io::Result<Vec<IpAddr>> {
        loop {
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|s| s.get_ref().recv_from(&mut buf, 0)) {
                // Only the kernel speaks for the kernel: the container's root
                // (CAP_NET_ADMIN over its own namespace) can send this socket
                // messages of its own making.
                Ok(Ok((_, from))) if from.port_number() != 0 => continue,
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The kernel dropped messages: start over.
                    self.table.clear();
                    self.dumped = false;
                    self.request_dump()?;
                    continue;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
            if self.apply(&buf) && self.dumped {
                return Ok(self.addresses());
            }
        }
    }

    /// Applies every message in `buf`; whether anything changed or a dump
    /// ended.
    fn apply(&mut self, mut buf: &[u8]) -> bool {
        let mut changed = false;
        while !buf.is_empty() {
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf) else {
                break;
            };
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
                    if let Some((key, counts)) = entry(&m)
                        && (self.table.len() < MAX_ADDRESSES || self.table.contains_key(&key))
                    {
                        changed |= self.table.insert(key, counts) != Some(counts);
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                    if let Some((key, _)) = entry(&m) {
                        changed |= self.table.remove(&key).is_some();
                    }
                }
                NetlinkPayload::Done(_) => {
                    self.dumped = true;
                    changed = true;
                }
                _ => {}
            }
            if len == 0 || len > buf.len() {
                break;
            }
            // Messages are 4-byte aligned.
            buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        }
        changed
    }

    /// IPv4 first, then IPv6; each in address order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .table
            .iter()
            .filter(|(_, counts)| **counts)
            .map(|((_, a), _)| *a)
            .collect();
        out.sort_by_key(|a| (a.is_ipv6(), *a));
        out.dedup();
        out
    }
}

/// The table key of an address message, and whether it counts as the
/// container's address: not loopback (host scope), not deprecated.
fn entry(m: &AddressMessage) -> Option<((u32, IpAddr), bool)> {
    let addr = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = addr.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    let counts = !matches!(m.header.scope, AddressScope::Host | AddressScope::Nowhere)
        && !m.header.flags.contains(AddressHeaderFlags::Deprecated);
    Some(((m.header.index, addr), counts))
}
