//! Ports shared on purpose: `expose` puts a container's TCP port on a host
//! port from the administrator's range (NixOS's `HOST_PORT`, forwarded by
//! nspawn from the container's next start) or on its tailnet address only
//! (Tailscale Serve, inside the container, at once). Each is in the record,
//! counted against the owner's limit, and goes with the container.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::records::{ExposeTo, Exposure, Record, now_secs};

fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
use super::{Engine, EngineError, Scope, io};
use crate::host::exec;

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
                // The choice and the record together: two exposes of
                // different containers never pick the same host port.
                let _ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
                let all = self.records.all();
                let e = Exposure {
                    port,
                    to,
                    host_port: Some(self.choose_host_port(&all, port, host_port)?),
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
        tracing::info!(
            container = name,
            port,
            to = exposure.to.as_str(),
            "port no longer exposed"
        );
        let pending_restart =
            exposure.to == ExposeTo::Host && self.machined.info(name).await?.is_some();
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

    fn choose_host_port(
        &self,
        all: &std::collections::BTreeMap<String, Record>,
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
        let taken_by_containers: BTreeSet<u16> = all
            .values()
            .flat_map(|r| r.exposed.iter().filter_map(|e| e.host_port))
            .collect();
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
}
