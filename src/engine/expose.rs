//! Ports shared on purpose: `expose` puts a container's TCP port on a host
//! port from the administrator's range (NixOS's `HOST_PORT`, forwarded by
//! nspawn from the container's next start) or on its tailnet address only
//! (Tailscale Serve, inside the container, at once). Each is in the record,
//! counted against the owner's limit, and goes with the container.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::records::{ExposeTo, Exposure, Record, ReleasedPort, now_secs};
use super::{Engine, EngineError, Scope, io};
use crate::host::systemd::{JobKind, UnitStatus};
use crate::host::{container_unit, exec, expose_filter, nspawn_mac};

/// The host's machine ID, which nspawn derives the containers' MACs from.
const MACHINE_ID: &str = "/etc/machine-id";

fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// systemd stamps a service's main process start in the parent, just
/// after the fork, and the child reads the conf (`EnvironmentFile`) after
/// that; this much slack keeps a run that may have read the conf from
/// before a release from counting as one started after it.
const RUN_START_SLACK_USEC: u64 = 1_000_000;

/// Whether the container's run `unit` still forwards `released`: nspawn
/// sets its forwarding up at start and removes it at exit, so a run that
/// began before the release (or too close to it to tell) holds it until
/// the unit is down.
pub fn still_forwarded(released: &ReleasedPort, unit: &UnitStatus) -> bool {
    let down = matches!(unit.active_state.as_str(), "inactive" | "failed" | "");
    !down
        && unit.exec_main_start_usec
            <= released
                .released_at_usec
                .saturating_add(RUN_START_SLACK_USEC)
}

/// What `expose`/`unexpose` did.
#[derive(Debug, Clone, Serialize)]
pub struct ExposeResult {
    pub name: String,
    pub exposure: Exposure,
    /// A host port changes nspawn's forwarding, which it sets up at start:
    /// true while the running container was started before the change.
    pub pending_restart: bool,
}

/// One exposed port as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ExposedPort {
    #[serde(flatten)]
    pub exposure: Exposure,
    /// A host port added after the running container started: forwarded
    /// from its next start.
    pub pending_restart: bool,
}

/// `record`'s exposures, each marked pending when the running machine
/// (registered at `since_usec`) started before it was added.
pub fn exposed_ports(record: &Record, since_usec: Option<u64>) -> Vec<ExposedPort> {
    record
        .exposed
        .iter()
        .map(|e| ExposedPort {
            exposure: e.clone(),
            pending_restart: e.to == ExposeTo::Host
                && since_usec.is_some_and(|s| s < e.added_at_usec),
        })
        .collect()
}

/// Host ports some socket of the host listens on (TCP, IPv4 and IPv6), from
/// the kernel's tables of the daemon's own network namespace.
fn listening_ports(proc_root: &std::path::Path) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc_root.join(table)) else {
            continue;
        };
        ports.extend(parse_listening(&text));
    }
    ports
}

/// The local ports of the LISTEN (state 0A) lines of /proc/net/tcp{,6}.
fn parse_listening(text: &str) -> impl Iterator<Item = u16> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1)?;
        let state = f.nth(1)?;
        if state != "0A" {
            return None;
        }
        let port = local.rsplit(':').next()?;
        u16::from_str_radix(port, 16).ok()
    })
}

impl Engine {
    /// Shares `port` of `name`, on a host port (`host_port`, or the first
    /// free one of the range: the same number when it is in it) or on its
    /// tailnet address.
    pub async fn expose(
        &self,
        scope: &Scope,
        name: &str,
        port: u16,
        to: ExposeTo,
        host_port: Option<u16>,
    ) -> Result<ExposeResult, EngineError> {
        if port == 0 {
            return Err(EngineError::InvalidArgument(
                "port: give the container's TCP port, 1 to 65535".into(),
            ));
        }
        if host_port.is_some() && to != ExposeTo::Host {
            return Err(EngineError::InvalidArgument(
                "host_port: only for --to host".into(),
            ));
        }
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        // One owner's exposes one at a time: the limit counts over all
        // their containers, each under its own lock. (Keys with a space
        // are never container names.)
        let owner_lock = self.locks.get(&format!("exposes of {}", record.owner));
        let _owner_guard = owner_lock.lock().await;
        if let Some(e) = record.exposed.iter().find(|e| e.port == port && e.to == to) {
            return Err(EngineError::Conflict(format!(
                "port {port} of '{name}' is already exposed{}",
                e.host_port
                    .map(|h| format!(" on host port {h}"))
                    .unwrap_or_else(|| " on the tailnet".into())
            )));
        }
        let all = self.records.all();
        let owners: usize = all
            .values()
            .filter(|r| r.owner == record.owner)
            .map(|r| r.exposed.len())
            .sum();
        let max = self.cfg.expose_max_per_owner as usize;
        if owners >= max {
            return Err(EngineError::QuotaExceeded(format!(
                "you have {owners} exposed ports, the most allowed ({max}); `voxnix unexpose` (/unexpose) one first"
            )));
        }
        let exposure = match to {
            ExposeTo::Host => {
                // Asked before the choice; a port released after this
                // counts as held (conservative: it may still be forwarded).
                let ended = self.ended_holds(&all).await;
                record
                    .released_host_ports
                    .retain(|r| !ended.contains(&(name.to_string(), r.host_port)));
                // The choice and the record together: two exposes of
                // different containers never pick the same host port.
                let _ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
                let all = self.records.all();
                let e = Exposure {
                    port,
                    to,
                    host_port: Some(self.choose_host_port(&all, &ended, port, host_port)?),
                    added_at: now_secs(),
                    added_at_usec: now_usec(),
                };
                record.exposed.push(e.clone());
                self.save_exposures(&record)?;
                e
            }
            ExposeTo::Tailnet => {
                if !record.spec.modules.iter().any(|m| m == "tailscale") {
                    return Err(EngineError::InvalidArgument(format!(
                        "'{name}' has no tailscale module, so it has no tailnet address; add it \
                         (`voxnix update {name} {} tailscale`) or use --to host",
                        record.spec.modules.join(" ")
                    )));
                }
                self.tailscale_serve(
                    name,
                    &[&format!("--tcp={port}"), &format!("tcp://127.0.0.1:{port}")],
                )
                .await?;
                let e = Exposure {
                    port,
                    to,
                    host_port: None,
                    added_at: now_secs(),
                    added_at_usec: now_usec(),
                };
                record.exposed.push(e.clone());
                if let Err(err) = self.save_exposures(&record) {
                    // Not recorded: not served either.
                    if let Err(undo) = self
                        .tailscale_serve(name, &[&format!("--tcp={port}"), "off"])
                        .await
                    {
                        tracing::error!(container = name, port, "undoing a tailnet serve: {undo}");
                    }
                    return Err(err);
                }
                e
            }
        };
        if to == ExposeTo::Host {
            // Never forwarded unguarded: the filter first, or no exposure.
            if let Err(e) = self.sync_expose_filter().await {
                record
                    .exposed
                    .retain(|x| !(x.port == port && x.to == ExposeTo::Host));
                if let Err(undo) = self.save_exposures(&record) {
                    tracing::error!(container = name, port, "undoing an exposure: {undo}");
                }
                if let Err(again) = self.sync_expose_filter().await {
                    tracing::error!("reloading the expose filter after an undo: {again}");
                }
                return Err(e);
            }
        }
        tracing::info!(container = name, port, to = to.as_str(), host_port = ?exposure.host_port, "port exposed");
        let pending_restart = to == ExposeTo::Host && self.machined.info(name).await?.is_some();
        Ok(ExposeResult {
            name: name.to_string(),
            exposure,
            pending_restart,
        })
    }

    /// Stops sharing `port` of `name` (the host one, else the tailnet one,
    /// unless `to` says which).
    pub async fn unexpose(
        &self,
        scope: &Scope,
        name: &str,
        port: u16,
        to: Option<ExposeTo>,
    ) -> Result<ExposeResult, EngineError> {
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        let Some(i) = record
            .exposed
            .iter()
            .position(|e| e.port == port && to.is_none_or(|t| t == e.to))
        else {
            return Err(EngineError::NotFound(format!(
                "port {port} of '{name}' is not exposed; `voxnix status {name}` (/status {name}) lists what is"
            )));
        };
        let exposure = record.exposed.remove(i);
        // Asked of the unit, not machined: a run systemd has begun may have
        // read the conf (and forward the port) before machined lists it,
        // as when the container's root reboots it. Unknown counts as up.
        let running = match self.systemd.unit_status(&container_unit(name)).await {
            Ok(u) => !matches!(u.active_state.as_str(), "inactive" | "failed" | ""),
            Err(e) => {
                tracing::warn!(container = name, "reading its unit for an unexpose: {e}");
                true
            }
        };
        if let (Some(host_port), true) = (exposure.host_port, running) {
            // nspawn forwards it until this run ends: held till then, so
            // that no other container (another owner's) gets its traffic.
            let ended = self
                .ended_holds(&BTreeMap::from([(name.to_string(), record.clone())]))
                .await;
            record
                .released_host_ports
                .retain(|r| !ended.contains(&(name.to_string(), r.host_port)));
            record.released_host_ports.push(ReleasedPort {
                host_port,
                port: exposure.port,
                released_at_usec: now_usec(),
            });
        }
        if exposure.to == ExposeTo::Tailnet {
            // The serve setting lives in the container's tailscaled (kept
            // across its restarts): only a running one can drop it, and a
            // stopped one would serve the port again at its next start.
            if self.machined.info(name).await?.is_none() {
                return Err(EngineError::Busy(format!(
                    "'{name}' is not running; start it first (its tailnet port is shared by Tailscale Serve inside it, which keeps the setting)"
                )));
            }
            self.tailscale_serve(name, &[&format!("--tcp={port}"), "off"])
                .await?;
        }
        self.save_exposures(&record)?;
        if exposure.to == ExposeTo::Host
            && let Err(e) = self.sync_expose_filter().await
        {
            // The old filter still binds the port to this container only.
            tracing::warn!(container = name, port, "reloading the expose filter: {e}");
        }
        tracing::info!(
            container = name,
            port,
            to = exposure.to.as_str(),
            "port no longer exposed"
        );
        let pending_restart = exposure.to == ExposeTo::Host && running;
        Ok(ExposeResult {
            name: name.to_string(),
            exposure,
            pending_restart,
        })
    }

    /// The record with its exposures, and the conf that forwards its host
    /// ports from the next start; the record is put back as it was when
    /// the conf cannot be written.
    fn save_exposures(&self, record: &Record) -> Result<(), EngineError> {
        let before = self
            .records
            .get(&record.name)
            .map_err(io("reading a record"))?;
        let text = self.render_conf(record)?;
        // The personal file first: the conf may name it from now on, and it
        // holds the ports the container's firewall opens at its next start.
        self.write_personal(record)?;
        let undo = |before: &Option<Record>| {
            if let Some(before) = before {
                let _ = self.records.put(before);
                let _ = self.write_personal(before);
            }
        };
        if let Err(e) = self.records.put(record) {
            undo(&before);
            return Err(EngineError::HostError(format!("writing the record: {e}")));
        }
        if let Err(e) = self.confs.write(&record.name, &text) {
            undo(&before);
            return Err(EngineError::HostError(format!(
                "writing the conf file: {e}"
            )));
        }
        Ok(())
    }

    /// The released host ports (container, host port) of `records` whose
    /// forwarding has ended. One unit read per container that has any; a
    /// read that fails leaves the port held.
    async fn ended_holds(&self, records: &BTreeMap<String, Record>) -> BTreeSet<(String, u16)> {
        let mut ended = BTreeSet::new();
        for r in records
            .values()
            .filter(|r| !r.released_host_ports.is_empty())
        {
            let unit = match self.systemd.unit_status(&container_unit(&r.name)).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(
                        container = r.name,
                        "reading its unit for released ports: {e}"
                    );
                    continue;
                }
            };
            for p in r
                .released_host_ports
                .iter()
                .filter(|p| !still_forwarded(p, &unit))
            {
                ended.insert((r.name.clone(), p.host_port));
            }
        }
        ended
    }

    /// Renders the expose filter (src/host/expose_filter.rs) from the
    /// records, each exposed or still-forwarded host port bound to its
    /// container and each container's bridge port to its MAC, and has
    /// systemd load it.
    pub async fn sync_expose_filter(&self) -> Result<(), EngineError> {
        let _guard = self.expose_filter.lock().await;
        let records = self.records.all();
        let ended = self.ended_holds(&records).await;
        let mut allowed = Vec::new();
        for r in records.values() {
            let held = r
                .released_host_ports
                .iter()
                .filter(|p| !ended.contains(&(r.name.clone(), p.host_port)))
                .map(|p| p.host_port);
            let exposed = r.exposed.iter().filter_map(|e| e.host_port);
            allowed.extend(exposed.chain(held).map(|host_port| expose_filter::Allowed {
                machine: r.name.clone(),
                host_port,
            }));
        }
        // A range that does not parse was refused at start; none guards
        // the exposures' own ports still.
        let range = self.cfg.expose_range().ok().flatten();
        // Every container's port, bound to the MAC nspawn gives it.
        let machine_id = nspawn_mac::read_machine_id(std::path::Path::new(MACHINE_ID))
            .map_err(|e| {
                EngineError::HostError(format!(
                    "reading the host's machine ID ({MACHINE_ID}), which nspawn makes the containers' MACs from: {e}"
                ))
            })?;
        let ports: Vec<expose_filter::Port> = records
            .keys()
            .map(|name| expose_filter::Port {
                machine: name.clone(),
                mac: nspawn_mac::container_mac(&machine_id, name),
            })
            .collect();
        let text = expose_filter::render(&self.cfg.bridge, range.as_ref(), &allowed, &ports);
        let file = expose_filter::file(&self.cfg.state_dir);
        crate::atomic_file::write_root_only(&file, text.as_bytes()).map_err(|e| {
            EngineError::HostError(format!("writing the expose filter {}: {e}", file.display()))
        })?;
        self.systemd
            .run_job(
                JobKind::Restart,
                expose_filter::UNIT,
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| {
                EngineError::HostError(format!(
                    "loading the filter that keeps host ports to their containers: {e}"
                ))
            })?;
        tracing::debug!(ports = allowed.len(), "expose filter loaded");
        Ok(())
    }

    fn choose_host_port(
        &self,
        all: &BTreeMap<String, Record>,
        ended: &BTreeSet<(String, u16)>,
        port: u16,
        asked: Option<u16>,
    ) -> Result<u16, EngineError> {
        let Some(range) = self
            .cfg
            .expose_range()
            .map_err(EngineError::InvalidArgument)?
        else {
            return Err(EngineError::InvalidArgument(
                "this host shares no ports of containers (its administrator has set no range: \
                 expose_host_ports, NixOS: services.voxnix.expose.hostPorts); --to tailnet \
                 shares a port on the tailnet only"
                    .into(),
            ));
        };
        let mut taken_by_containers: BTreeSet<u16> = all
            .values()
            .flat_map(|r| r.exposed.iter().filter_map(|e| e.host_port))
            .collect();
        let held: BTreeSet<u16> = all
            .values()
            .flat_map(|r| {
                r.released_host_ports
                    .iter()
                    .filter(|p| !ended.contains(&(r.name.clone(), p.host_port)))
                    .map(|p| p.host_port)
            })
            .collect();
        taken_by_containers.extend(&held);
        let listening = listening_ports(&self.cfg.proc_root);
        let free = |p: u16| !taken_by_containers.contains(&p) && !listening.contains(&p);
        if let Some(p) = asked {
            if !range.contains(&p) {
                return Err(EngineError::InvalidArgument(format!(
                    "host port {p} is outside this host's range for containers ({}-{})",
                    range.start(),
                    range.end()
                )));
            }
            if held.contains(&p) {
                return Err(EngineError::Conflict(format!(
                    "host port {p} is still forwarded to the container that had it, until that \
                     container's next restart; leave --host-port out to get a free one"
                )));
            }
            if !free(p) {
                return Err(EngineError::Conflict(format!(
                    "host port {p} is taken; leave --host-port out to get a free one"
                )));
            }
            return Ok(p);
        }
        if range.contains(&port) && free(port) {
            return Ok(port);
        }
        range.clone().find(|p| free(*p)).ok_or_else(|| {
            EngineError::QuotaExceeded(format!(
                "every host port of this host's range ({}-{}) is taken",
                range.start(),
                range.end()
            ))
        })
    }

    /// `tailscale serve --bg ARGS` inside the running container.
    async fn tailscale_serve(&self, name: &str, args: &[&str]) -> Result<(), EngineError> {
        let Some(machine) = self.machined.info(name).await? else {
            return Err(EngineError::Busy(format!(
                "'{name}' is not running; start it first (Tailscale Serve runs inside it)"
            )));
        };
        let mut argv = vec!["tailscale".to_string(), "serve".into(), "--bg".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let req = exec::ExecRequest {
            argv,
            timeout: Duration::from_secs(30),
            max_output: 16 * 1024,
        };
        let r = exec::exec_in_container(&self.cfg.proc_root, machine.leader, &req)
            .await
            .map_err(|e| {
                EngineError::HostError(format!("running tailscale serve in '{name}': {e}"))
            })?;
        if r.exit_code != 0 {
            let why: String = String::from_utf8_lossy(&r.stderr)
                .chars()
                .take(300)
                .collect();
            return Err(EngineError::Conflict(format!(
                "tailscale serve in '{name}' failed (is it logged in to the tailnet?): {}",
                why.trim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listening_sockets_take_a_port() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:4E21 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0 0 2 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listening(text).collect::<Vec<_>>(), vec![20000]);
        let v6 = "  sl  local_address remote_address st\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(parse_listening(v6).collect::<Vec<_>>(), vec![8080]);
    }

    fn unit(active: &str, started_usec: u64) -> UnitStatus {
        UnitStatus {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: String::new(),
            active_enter_usec: started_usec,
            main_pid: 0,
            exec_main_start_usec: started_usec,
            memory_bytes: None,
            cpu_nsec: None,
            result: String::new(),
        }
    }

    #[test]
    fn a_released_port_is_held_until_the_run_that_forwarded_it_ends() {
        let released = ReleasedPort {
            host_port: 20000,
            port: 8080,
            released_at_usec: 100_000_000,
        };
        // The run that was up at the release.
        assert!(still_forwarded(&released, &unit("active", 50_000_000)));
        assert!(still_forwarded(
            &released,
            &unit("deactivating", 50_000_000)
        ));
        // Started just after it: it may have read the old conf.
        assert!(still_forwarded(&released, &unit("active", 100_500_000)));
        // Still starting, with the last run's stamp: held.
        assert!(still_forwarded(&released, &unit("activating", 50_000_000)));
        // Down, or a run started well after the release.
        assert!(!still_forwarded(&released, &unit("inactive", 50_000_000)));
        assert!(!still_forwarded(&released, &unit("failed", 50_000_000)));
        assert!(!still_forwarded(&released, &unit("active", 101_500_000)));
    }
}
