//! systemd's manager (`org.freedesktop.systemd1`): jobs waited for through
//! `JobRemoved`, daemon reload, unit properties and their drop-ins.

use std::time::Duration;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

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
    /// Bytes; None when memory accounting is unavailable.
    pub memory_bytes: Option<u64>,
    /// Nanoseconds of CPU time; None when CPU accounting is unavailable.
    pub cpu_nsec: Option<u64>,
    /// The service's last result (`success`, `exit-code`, `timeout` ...).
    pub result: String,
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

    /// Reads a unit's state and resource use (loads the unit if needed).
    pub async fn unit_status(&self, unit: &str) -> Result<UnitStatus, HostError> {
        let path = self
            .manager
            .load_unit(unit.to_string())
            .await
            .map_err(HostError::bus("LoadUnit"))?;
        let u = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(HostError::bus("Unit proxy"))?;
        let s = ServiceProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(HostError::bus("Service proxy"))?;
        let (load, active, sub, since) = tokio::join!(
            u.load_state(),
            u.active_state(),
            u.sub_state(),
            u.active_enter_timestamp()
        );
        let (pid, mem, cpu, result) = tokio::join!(
            s.main_pid(),
            s.memory_current(),
            s.cpu_usage_n_sec(),
            s.result()
        );
        // systemd reports "unknown" accounting as u64::MAX.
        let known = |v: Result<u64, zbus::Error>| v.ok().filter(|&x| x != u64::MAX);
        Ok(UnitStatus {
            load_state: load.map_err(HostError::bus("LoadState"))?,
            active_state: active.map_err(HostError::bus("ActiveState"))?,
            sub_state: sub.map_err(HostError::bus("SubState"))?,
            active_enter_usec: since.unwrap_or(0),
            main_pid: pid.unwrap_or(0),
            memory_bytes: known(mem),
            cpu_nsec: known(cpu),
            result: result.unwrap_or_default(),
        })
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
