//! Reads: `List`, `Status` and `Logs`, answered from the live view
//! (`view/`) and the records in memory. What must still ask the host (a
//! unit's resource use, a journal, a machine's os-release once per start)
//! is coalesced per container and holds a read permit of its caller's
//! owner only while it asks (admission.rs): one owner polling hard waits
//! behind its own questions, never another's. Before the view's first fill
//! (the first moments after start-up) reads ask systemd and machined.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use super::records::{self, Record};
use super::view::UnitState;
use super::{ContainerStatus, ContainerSummary, Engine, EngineError, Scope, derive_state, summary};
use crate::host::container_unit;
use crate::host::journal;
use crate::host::machined::MachineInfo;

impl Engine {
    /// A container's unit state and machine: from the view, else asked.
    async fn running_state(
        &self,
        name: &str,
    ) -> Result<(UnitState, Option<MachineInfo>), EngineError> {
        if let Some(s) = self.view.get(name) {
            return Ok(s);
        }
        let unit = container_unit(name);
        let (u, m) = tokio::join!(self.systemd.unit_status(&unit), self.machined.info(name));
        let u = u?;
        Ok((
            UnitState {
                active: u.active_state,
                sub: u.sub_state,
            },
            m?,
        ))
    }

    pub(super) async fn state_of(&self, record: &Record) -> String {
        match self.running_state(&record.name).await {
            Ok((unit, machine)) => derive_state(record.phase, &unit.active, machine.is_some()),
            Err(_) => derive_state(record.phase, "", false),
        }
    }

    /// Every unit's state and the running machines, for `list` before the
    /// view is filled.
    async fn ask_running_states(
        &self,
    ) -> Result<
        (
            HashMap<String, UnitState>,
            std::collections::HashSet<String>,
        ),
        EngineError,
    > {
        let (units, machines) = tokio::join!(self.systemd.container_units(), self.machined.list());
        let units = super::view::by_container(units?);
        let machines = machines?.into_iter().map(|(n, _)| n).collect();
        Ok((units, machines))
    }

    pub async fn list(&self, scope: &Scope) -> Result<Vec<ContainerSummary>, EngineError> {
        let visible: Vec<Record> = self
            .records
            .all()
            .into_values()
            .filter(|r| scope.allows(&r.owner))
            .collect();
        if visible.is_empty() {
            return Ok(Vec::new());
        }
        let asked = if self.view.is_filled() {
            None
        } else {
            let _permit = self.read_permit(scope).await?;
            Some(self.ask_running_states().await?)
        };
        let mut rows = Vec::with_capacity(visible.len());
        let mut missing = Vec::new();
        for r in visible {
            let (unit, running) = match &asked {
                Some((units, machines)) => (
                    units.get(&r.name).cloned().unwrap_or_default(),
                    machines.contains(&r.name),
                ),
                None => {
                    let (u, m) = self.view.get(&r.name).unwrap_or_default();
                    (u, m.is_some())
                }
            };
            let addresses = if running {
                match self.view.addresses.addresses(&r.name) {
                    Some(a) => a,
                    None => {
                        missing.push(rows.len());
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            let conf = self.conf_state(&r);
            rows.push(summary(&r, &unit.active, running, &addresses, conf));
        }
        if !missing.is_empty() {
            // Containers without a watcher (it could not be opened): their
            // addresses from machined, at most 8 at once.
            let _permit = self.read_permit(scope).await?;
            let names: Vec<String> = missing.iter().map(|&i| rows[i].name.clone()).collect();
            let asked: Vec<Vec<IpAddr>> =
                futures_util::StreamExt::collect(futures_util::StreamExt::buffered(
                    futures_util::stream::iter(names.into_iter().map(|name| async move {
                        self.machined.addresses(&name).await.unwrap_or_default()
                    })),
                    8,
                ))
                .await;
            for (i, a) in missing.into_iter().zip(asked) {
                rows[i].addresses = a.iter().map(IpAddr::to_string).collect();
            }
        }
        Ok(rows)
    }

    /// A running container's addresses: from the live view, else (no
    /// watcher) from machined. With where they came from.
    pub(super) async fn addresses_of(
        &self,
        scope: &Scope,
        name: &str,
    ) -> (Vec<IpAddr>, &'static str) {
        match self.view.addresses.addresses(name) {
            Some(a) => (a, "kernel"),
            None => {
                let _permit = self.read_permit(scope).await;
                (
                    self.machined.addresses(name).await.unwrap_or_default(),
                    "machined",
                )
            }
        }
    }

    /// The unit's resource use and times: asked of systemd at most once a
    /// second per container, however many ask.
    async fn unit_read(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<crate::host::systemd::UnitStatus, EngineError> {
        self.unit_reads
            .get(name.to_string(), || async {
                let _permit = self.read_permit(scope).await?;
                Ok::<_, EngineError>(self.systemd.unit_status(&container_unit(name)).await?)
            })
            .await
    }

    /// The machine's os-release: asked of machined once per start (a
    /// failure is not kept: the next Status asks again).
    async fn os_release_of(
        &self,
        scope: &Scope,
        machine: &MachineInfo,
    ) -> std::collections::BTreeMap<String, String> {
        let gen_before = match self.view.os_release(&machine.name) {
            Ok(r) => return r,
            Err(g) => g,
        };
        let _permit = self.read_permit(scope).await;
        match self.machined.os_release(&machine.name).await {
            Ok(r) => {
                self.view
                    .set_os_release(&machine.name, gen_before, machine.leader, r.clone());
                r
            }
            Err(e) => {
                tracing::debug!(container = %machine.name, "os-release not read: {e}");
                Default::default()
            }
        }
    }

    /// What the system's derivation says (a store path never changes).
    async fn system_of(&self, drv_path: &str) -> Option<crate::nix::SystemInfo> {
        self.drv_reads
            .get(drv_path.to_string(), || async {
                let p = std::path::PathBuf::from(drv_path);
                // Not kept when unreadable: asked again next time.
                match tokio::task::spawn_blocking(move || crate::nix::drv::system_info(&p).ok())
                    .await
                {
                    Ok(Some(info)) => Ok(Some(info)),
                    _ => Err(()),
                }
            })
            .await
            .unwrap_or_default()
    }

    pub async fn status(&self, scope: &Scope, name: &str) -> Result<ContainerStatus, EngineError> {
        let record = self.visible(scope, name)?;
        let unit = container_unit(name);
        let (running, unit_status) =
            tokio::join!(self.running_state(name), self.unit_read(scope, name));
        let (state, machine) = running?;
        let unit_status = unit_status?;
        let ((addresses, addresses_from), os_release) = match &machine {
            Some(m) => tokio::join!(self.addresses_of(scope, name), self.os_release_of(scope, m)),
            None => ((vec![], "none"), Default::default()),
        };
        let now_usec = records::now_secs().saturating_mul(1_000_000);
        let uptime_secs = (machine.is_some() && unit_status.active_enter_usec > 0)
            .then(|| now_usec.saturating_sub(unit_status.active_enter_usec) / 1_000_000);
        let system = match &record.drv_path {
            Some(p) => self.system_of(p).await,
            None => None,
        };
        Ok(ContainerStatus {
            summary: summary(
                &record,
                &state.active,
                machine.is_some(),
                &addresses,
                self.conf_state(&record),
            ),
            unit,
            addresses_from,
            sub_state: state.sub,
            leader: machine.as_ref().map(|m| m.leader),
            machine_id: machine.as_ref().map(|m| m.id_hex.clone()),
            uptime_secs,
            os_release,
            memory_bytes: unit_status.memory_bytes,
            cpu_nsec: unit_status.cpu_nsec,
            system_path: record.system_path.clone(),
            workspace: record.spec.workspace,
            last_operation: record.last_operation.clone(),
            system,
            drv_path: record.drv_path.clone(),
            exposed: super::expose::exposed_ports(&record, machine.as_ref().map(|m| m.since_usec)),
            forwarded_until_restart: record
                .released_host_ports
                .iter()
                .filter(|p| super::expose::still_forwarded(p, &unit_status))
                .cloned()
                .collect(),
        })
    }

    pub async fn logs(
        &self,
        scope: &Scope,
        name: &str,
        lines: u32,
    ) -> Result<Vec<journal::LogLine>, EngineError> {
        if lines == 0 || lines > 1000 {
            return Err(EngineError::InvalidArgument(format!(
                "lines: {lines} is out of range; ask for 1 to 1000 lines"
            )));
        }
        let record = self.visible(scope, name)?;
        // Requests for the same lines of one container (this one: not an
        // earlier holder of the name) while a read is under way share it.
        let read = self
            .log_reads
            .get((name.to_string(), record.created_at, lines), || async {
                let _permit = self.read_permit(scope).await?;
                self.read_logs(&record, lines).await.map(Arc::new)
            })
            .await?;
        Ok(read.as_ref().clone())
    }

    async fn read_logs(
        &self,
        record: &Record,
        lines: u32,
    ) -> Result<Vec<journal::LogLine>, EngineError> {
        let name = record.name.as_str();
        // Only this container's lines: not those of an earlier one of the name.
        let since_usec = Some(record.created_at.saturating_mul(1_000_000));
        let machine = self.running_state(name).await?.1;
        let root = self.cfg.journal_root.clone();
        let proc_root = self.cfg.proc_root.clone();
        let stopped_root = self.cfg.containers_dir.join(name);
        let unit = container_unit(name);
        tokio::task::spawn_blocking(move || {
            // The container's journal is read only from its side: inside
            // the running container's namespaces (by this binary again), or
            // through its directory when it is stopped.
            let container = match &machine {
                Some(m) => journal::ContainerJournal::Running {
                    proc_root: &proc_root,
                    leader: m.leader,
                    reader: Path::new("/proc/self/exe"),
                },
                None => journal::ContainerJournal::Stopped(&stopped_root),
            };
            // Stopped: the id its root holds names its journal directory.
            let id = match &machine {
                Some(m) => Some(m.id_hex.clone()),
                None => journal::machine_id_in_root(&stopped_root),
            };
            journal::container_logs(
                &root,
                id.as_deref(),
                container,
                &unit,
                lines as usize,
                since_usec,
            )
        })
        .await
        .map_err(|e| EngineError::HostError(format!("log reader failed: {e}")))?
        .map_err(|e| EngineError::HostError(format!("cannot read the journal: {e}")))
    }
}
