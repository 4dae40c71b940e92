//! systemd's manager (`org.freedesktop.systemd1`): jobs waited for through
//! `JobRemoved`, daemon reload, unit properties and their drop-ins.

use std::time::Duration;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};
use zbus_systemd::systemd1::ManagerProxy;

use super::HostError;

/// The kinds of jobs voxnix queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Start,
    Stop,
    Restart,
    /// `ReloadUnit`: for a NixOS container, switch-to-configuration inside.
    Reload,
}

impl JobKind {
    fn call(self) -> &'static str {
        match self {
            JobKind::Start => "StartUnit",
            JobKind::Stop => "StopUnit",
            JobKind::Restart => "RestartUnit",
            JobKind::Reload => "ReloadUnit",
        }
    }
}

/// What systemd says of a unit, read in one place.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnitStatus {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// Microseconds since the epoch when the unit last became active (0 if never).
    pub active_enter_usec: u64,
    pub main_pid: u32,
    /// Microseconds since the epoch when the service's main process (for a
    /// container, nspawn) was last spawned (0 if never).
    pub exec_main_start_usec: u64,
    /// Bytes; None when memory accounting is unavailable.
    pub memory_bytes: Option<u64>,
    /// Nanoseconds of CPU time; None when CPU accounting is unavailable.
    pub cpu_nsec: Option<u64>,
    /// The service's last result (`success`, `exit-code`, `timeout` ...).
    pub result: String,
}

/// A change of a container's unit announced by systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitChange {
    /// The container (`NAME` of `container@NAME.service`).
    pub name: String,
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
}

/// The container whose unit has the object path `path`
/// (`/org/freedesktop/systemd1/unit/container_40NAME_2eservice`), if any.
/// systemd escapes every byte but ASCII letters and digits as `_xx`.
pub fn container_of_unit_path(path: &str) -> Option<String> {
    let label = path.strip_prefix("/org/freedesktop/systemd1/unit/")?;
    let mut bytes = Vec::with_capacity(label.len());
    let mut rest = label.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let unit = String::from_utf8(bytes).ok()?;
    let name = unit.strip_prefix("container@")?.strip_suffix(".service")?;
    (!name.is_empty()).then(|| name.to_string())
}

/// A handle on the host's systemd, subscribed to its signals.
#[derive(Debug, Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

impl Systemd {
    /// Connects and calls `Subscribe()`, without which systemd sends no job or
    /// unit signals.
    pub async fn new(conn: &Connection) -> Result<Self, HostError> {
        let manager = ManagerProxy::new(conn)
            .await
            .map_err(HostError::bus("systemd1 Manager"))?;
        manager
            .subscribe()
            .await
            .map_err(HostError::bus("Subscribe"))?;
        Ok(Self {
            conn: conn.clone(),
            manager,
        })
    }

    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// Queues a job and waits for its `JobRemoved`. The signal stream is opened
    /// before the call, so the end of a fast job cannot be missed.
    pub async fn run_job(
        &self,
        kind: JobKind,
        unit: &str,
        timeout: Duration,
    ) -> Result<(), HostError> {
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(HostError::bus("JobRemoved match"))?;
        let (u, mode) = (unit.to_string(), "replace".to_string());
        let job: OwnedObjectPath = match kind {
            JobKind::Start => self.manager.start_unit(u, mode).await,
            JobKind::Stop => self.manager.stop_unit(u, mode).await,
            JobKind::Restart => self.manager.restart_unit(u, mode).await,
            JobKind::Reload => self.manager.reload_unit(u, mode).await,
        }
        .map_err(HostError::bus(kind.call()))?;
        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return Some(args.result);
                }
            }
            None
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(result)) if result == "done" => Ok(()),
            Ok(Some(result)) => Err(HostError::JobFailed {
                unit: unit.to_string(),
                result,
            }),
            Ok(None) => Err(HostError::JobFailed {
                unit: unit.to_string(),
                result: "bus connection lost".into(),
            }),
            Err(_) => Err(HostError::Timeout {
                what: format!("the {} job of {unit}", kind.call()),
                seconds: timeout.as_secs(),
            }),
        }
    }

    /// `daemon-reload`; systemd answers once the reload is complete.
    pub async fn reload(&self) -> Result<(), HostError> {
        self.manager
            .reload()
            .await
            .map_err(HostError::bus("Reload"))
    }

    /// Sets unit properties; with `runtime = false` systemd persists them as
    /// drop-ins under /etc/systemd/system.control, which survive reboots and
    /// [`Self::revert`] removes.
    pub async fn set_properties(
        &self,
        unit: &str,
        runtime: bool,
        properties: Vec<(String, zbus::OwnedVariant)>,
    ) -> Result<(), HostError> {
        self.manager
            .set_unit_properties(unit.to_string(), runtime, properties)
            .await
            .map_err(HostError::bus("SetUnitProperties"))
    }

    /// Removes every drop-in of `unit` (what `systemctl revert` does).
    pub async fn revert(&self, unit: &str) -> Result<(), HostError> {
        self.manager
            .revert_unit_files(vec![unit.to_string()])
            .await
            .map(|_| ())
            .map_err(HostError::bus("RevertUnitFiles"))
    }

    /// Clears a unit's failed state so a new start is clean.
    pub async fn reset_failed(&self, unit: &str) -> Result<(), HostError> {
        match self.manager.reset_failed_unit(unit.to_string()).await {
            Ok(()) => Ok(()),
            // Not loaded: nothing to reset.
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(())
            }
            Err(e) => Err(HostError::Bus {
                call: "ResetFailedUnit",
                source: e,
            }),
        }
    }

    /// Reads a unit's state and resource use (loads the unit if needed):
    /// one `GetAll` per interface, not a call per property.
    pub async fn unit_status(&self, unit: &str) -> Result<UnitStatus, HostError> {
        let path = self
            .manager
            .load_unit(unit.to_string())
            .await
            .map_err(HostError::bus("LoadUnit"))?;
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(HostError::bus("Properties proxy"))?;
        let unit_iface =
            zbus::names::InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");
        let service_iface = zbus::names::InterfaceName::from_static_str_unchecked(
            "org.freedesktop.systemd1.Service",
        );
        let (u, s) = tokio::join!(props.get_all(unit_iface), props.get_all(service_iface));
        let mut u = u.map_err(|e| HostError::bus("GetAll Unit")(e.into()))?;
        // A unit that is not a service (or not loaded) has no Service part.
        let mut s = s.unwrap_or_default();
        let text = |m: &mut std::collections::HashMap<String, zbus::OwnedVariant>, k: &str| {
            m.remove(k)
                .and_then(|v| String::try_from(v).ok())
                .unwrap_or_default()
        };
        let number = |m: &mut std::collections::HashMap<String, zbus::OwnedVariant>, k: &str| {
            m.remove(k).and_then(|v| u64::try_from(v).ok())
        };
        // systemd reports "unknown" accounting as u64::MAX.
        let known = |v: Option<u64>| v.filter(|&x| x != u64::MAX);
        Ok(UnitStatus {
            load_state: text(&mut u, "LoadState"),
            active_state: text(&mut u, "ActiveState"),
            sub_state: text(&mut u, "SubState"),
            active_enter_usec: number(&mut u, "ActiveEnterTimestamp").unwrap_or(0),
            main_pid: s
                .remove("MainPID")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            exec_main_start_usec: number(&mut s, "ExecMainStartTimestamp").unwrap_or(0),
            memory_bytes: known(number(&mut s, "MemoryCurrent")),
            cpu_nsec: known(number(&mut s, "CPUUsageNSec")),
            result: text(&mut s, "Result"),
        })
    }

    /// Changes of every `container@NAME.service`'s state, as systemd
    /// announces them (`PropertiesChanged` on its Unit interface; sent
    /// because `new` subscribed): `(NAME, ActiveState, SubState)`, either
    /// missing when that property did not change.
    pub async fn container_unit_changes(
        &self,
    ) -> Result<impl futures_util::Stream<Item = UnitChange> + use<>, HostError> {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.systemd1")
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace("/org/freedesktop/systemd1/unit")
            .arg(0, "org.freedesktop.systemd1.Unit")
            .build()
            .map_err(HostError::bus("match rule"))?;
        let stream = zbus::MessageStream::for_match_rule(rule, &self.conn, None)
            .await
            .map_err(HostError::bus("AddMatch"))?;
        Ok(stream.filter_map(|msg| async move {
            let msg = msg.ok()?;
            let name = container_of_unit_path(msg.header().path()?.as_str())?;
            type Body = (
                String,
                std::collections::HashMap<String, zbus::OwnedVariant>,
                Vec<String>,
            );
            let (_, mut changed, _): Body = msg.body().deserialize().ok()?;
            let mut take = |k: &str| changed.remove(k).and_then(|v| String::try_from(v).ok());
            Some(UnitChange {
                name,
                active_state: take("ActiveState"),
                sub_state: take("SubState"),
            })
        }))
    }

    /// `(name, active_state, sub_state)` of every loaded `container@*.service`.
    pub async fn container_units(&self) -> Result<Vec<(String, String, String)>, HostError> {
        let units = self
            .manager
            .list_units_by_patterns(vec![], vec!["container@*.service".to_string()])
            .await
            .map_err(HostError::bus("ListUnitsByPatterns"))?;
        Ok(units.into_iter().map(|u| (u.0, u.3, u.4)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_unit_paths_are_unescaped_and_others_ignored() {
        let p = "/org/freedesktop/systemd1/unit/container_40dev_2d1_2eservice";
        assert_eq!(container_of_unit_path(p).as_deref(), Some("dev-1"));
        for other in [
            "/org/freedesktop/systemd1/unit/dbus_2eservice",
            "/org/freedesktop/systemd1/unit/container_40_2eservice",
            "/org/freedesktop/systemd1/unit/container_40dev_2",
            "/org/freedesktop/systemd1/unit/container_40dev_zz_2eservice",
            "/org/freedesktop/systemd1/job/12",
        ] {
            assert_eq!(container_of_unit_path(other), None, "{other}");
        }
    }
}
