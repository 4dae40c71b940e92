//! systemd-machined (`org.freedesktop.machine1`): which containers run, their
//! leader, machine id, addresses and OS, and the signals that announce them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::Connection;
use zbus::proxy::CacheProperties;
use zbus_systemd::machine1::{self, ManagerProxy};

use super::HostError;

const NO_SUCH_MACHINE: &str = "org.freedesktop.machine1.NoSuchMachine";

fn is_no_such_machine(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _) if name.as_str() == NO_SUCH_MACHINE)
}

/// What machined knows of one running machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MachineInfo {
    pub name: String,
    pub class: String,
    pub unit: String,
    /// PID of the container's init, in machined's PID namespace.
    pub leader: u32,
    /// The machine UUID as 32 hex digits (names its journal directory).
    pub id_hex: String,
    /// Microseconds since the epoch when it registered.
    pub since_usec: u64,
    pub state: String,
}

/// A handle on machined.
#[derive(Debug, Clone)]
pub struct Machined {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

/// Turns machined's `a(iay)` into addresses (AF_INET = 2, AF_INET6 = 10).
pub fn parse_addresses(raw: Vec<(i32, Vec<u8>)>) -> Vec<IpAddr> {
    raw.into_iter()
        .filter_map(|(family, bytes)| match (family, bytes.len()) {
            (2, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            (10, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&bytes);
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        })
        .collect()
}

impl Machined {
    pub async fn new(conn: &Connection) -> Result<Self, HostError> {
        let manager = ManagerProxy::new(conn)
            .await
            .map_err(HostError::bus("machine1 Manager"))?;
        Ok(Self {
            conn: conn.clone(),
            manager,
        })
    }

    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// `(name, class)` of every registered machine.
    pub async fn list(&self) -> Result<Vec<(String, String)>, HostError> {
        let machines = self
            .manager
            .list_machines()
            .await
            .map_err(HostError::bus("ListMachines"))?;
        Ok(machines.into_iter().map(|m| (m.0, m.1)).collect())
    }

    /// Details of one machine; `None` if machined does not know it.
    pub async fn info(&self, name: &str) -> Result<Option<MachineInfo>, HostError> {
        let path = match self.manager.get_machine(name.to_string()).await {
            Ok(p) => p,
            Err(e) if is_no_such_machine(&e) => return Ok(None),
            Err(e) => {
                return Err(HostError::Bus {
                    call: "GetMachine",
                    source: e,
                });
            }
        };
        // One GetAll, not a call per property.
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.machine1")
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(HostError::bus("Properties proxy"))?;
        let iface = zbus::names::InterfaceName::from_static_str_unchecked(
            "org.freedesktop.machine1.Machine",
        );
        // The machine may vanish between GetMachine and GetAll.
        let Ok(mut p) = props.get_all(iface).await else {
            return Ok(None);
        };
        let mut text = |k: &str| {
            p.remove(k)
                .and_then(|v| String::try_from(v).ok())
                .unwrap_or_default()
        };
        let (class, unit, state) = (text("Class"), text("Unit"), text("State"));
        let Some(leader) = p.remove("Leader").and_then(|v| u32::try_from(v).ok()) else {
            return Ok(None);
        };
        let id: Vec<u8> = p
            .remove("Id")
            .and_then(|v| Vec::<u8>::try_from(v).ok())
            .unwrap_or_default();
        Ok(Some(MachineInfo {
            name: name.to_string(),
            class,
            unit,
            leader,
            id_hex: id.iter().map(|x| format!("{x:02x}")).collect(),
            since_usec: p
                .remove("Timestamp")
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
            state,
        }))
    }

    /// The machine's IP addresses; empty when it is not running.
    pub async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, HostError> {
        match self.manager.get_machine_addresses(name.to_string()).await {
            Ok(raw) => Ok(parse_addresses(raw)),
            Err(e) if is_no_such_machine(&e) => Ok(Vec::new()),
            Err(e) => Err(HostError::Bus {
                call: "GetMachineAddresses",
                source: e,
            }),
        }
    }

    /// The container's `/etc/os-release`, as machined reads it.
    pub async fn os_release(&self, name: &str) -> Result<BTreeMap<String, String>, HostError> {
        match self.manager.get_machine_os_release(name.to_string()).await {
            Ok(map) => Ok(map.into_iter().collect()),
            Err(e) if is_no_such_machine(&e) => Ok(BTreeMap::new()),
            Err(e) => Err(HostError::Bus {
                call: "GetMachineOSRelease",
                source: e,
            }),
        }
    }

    /// Terminates a machine; one that is already gone is success.
    pub async fn terminate(&self, name: &str) -> Result<(), HostError> {
        match self.manager.terminate_machine(name.to_string()).await {
            Ok(()) => Ok(()),
            Err(e) if is_no_such_machine(&e) => Ok(()),
            Err(e) => Err(HostError::Bus {
                call: "TerminateMachine",
                source: e,
            }),
        }
    }

    /// Waits until `name` is registered (`MachineNew`, or already there).
    pub async fn wait_registered(&self, name: &str, timeout: Duration) -> Result<(), HostError> {
        // Subscribe before looking, so a registration in between is not missed.
        let new = self
            .manager
            .receive_machine_new()
            .await
            .map_err(HostError::bus("MachineNew match"))?;
        if self.info(name).await?.is_some() {
            return Ok(());
        }
        let is_it = |s: &machine1::MachineNew| s.args().is_ok_and(|a| a.machine == name);
        first_matching(new, is_it, timeout, format!("machined to register {name}")).await
    }

    /// Waits until `name` is gone (`MachineRemoved`, or already gone).
    pub async fn wait_removed(&self, name: &str, timeout: Duration) -> Result<(), HostError> {
        let removed = self
            .manager
            .receive_machine_removed()
            .await
            .map_err(HostError::bus("MachineRemoved match"))?;
        if self.info(name).await?.is_none() {
            return Ok(());
        }
        let is_it = |s: &machine1::MachineRemoved| s.args().is_ok_and(|a| a.machine == name);
        first_matching(
            removed,
            is_it,
            timeout,
            format!("machined to remove {name}"),
        )
        .await
    }
}

/// Waits (at most `timeout`) for the first signal `is_it` accepts; `what` names
/// the awaited event in the timeout error.
async fn first_matching<S>(
    mut signals: S,
    is_it: impl Fn(&S::Item) -> bool,
    timeout: Duration,
    what: String,
) -> Result<(), HostError>
where
    S: futures_util::Stream + Unpin,
{
    let wait = async {
        while let Some(sig) = signals.next().await {
            if is_it(&sig) {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(true) => Ok(()),
        _ => Err(HostError::Timeout {
            what,
            seconds: timeout.as_secs(),
        }),
    }
}
