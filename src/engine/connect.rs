//! Getting into a container: each owner's SSH keys (registered once, handed
//! to their `ssh` containers at start and refreshed in the running ones) and
//! `connect`, the ssh_config block and pinned host key for one container.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::owner_keys::{self, AddError, OwnerKey};
use super::records::Record;
use super::{Engine, EngineError, Owner, SSH_MODULE, Scope, io};
use crate::host::exec;

/// What a key change did.
#[derive(Debug, Clone, Serialize)]
pub struct KeyChange {
    /// The keys added or removed.
    pub keys: Vec<OwnerKey>,
    /// False when the key was already registered (nothing changed).
    pub changed: bool,
    /// Running containers whose root logins took the change at once.
    pub applied_to: Vec<String>,
    /// Running containers that take it at their next start (the refresh
    /// inside them failed; the log says why).
    pub at_next_start: Vec<String>,
}

/// How to reach one container with ssh.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectInfo {
    pub name: String,
    /// `tailnet` (its Tailscale address) or `host` (its bridge address,
    /// through the host with ProxyJump).
    pub via: &'static str,
    /// The `Host` name of the block, also the known_hosts name.
    pub alias: String,
    pub host_name: String,
    pub port: u16,
    pub user: &'static str,
    pub proxy_jump: Option<String>,
    /// `ALGORITHM BASE64`, read from the container.
    pub host_key: String,
    /// The line for `~/.ssh/known_hosts`.
    pub known_hosts: String,
    /// The block for `~/.ssh/config`.
    pub ssh_config: String,
    /// Said when logging in cannot work yet (no key registered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The directory root's key file lives in (modules/ssh.nix's `keysDir`;
/// sshd's `AuthorizedKeysFile` is `<dir>/%u`).
const KEYS_DIR: &str = "/run/voxnix/authorized_keys";

/// Run inside a container as its root: writes root's authorized keys (the
/// arguments, one per line) the way modules/ssh.nix does at boot. Exits 3
/// when the module's directory is not there (sshd not set up yet).
const REFRESH_SCRIPT: &str = r#"set -eu
d="$1"; shift
[ -d "$d" ] || exit 3
umask 022
: > "$d/.root.new"
for k in "$@"; do printf '%s\n' "$k" >> "$d/.root.new"; done
mv -f "$d/.root.new" "$d/root"
"#;

fn is_tailnet(a: &IpAddr) -> bool {
    match a {
        // Tailscale's CGNAT range 100.64.0.0/10 and its ULA fd7a:115c:a1e0::/48.
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 100 && (o[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0xfd7a && s[1] == 0x115c && s[2] == 0xa1e0
        }
    }
}

fn ssh_port(record: &Record) -> u16 {
    record
        .spec
        .settings
        .get(SSH_MODULE)
        .and_then(|s| s.get("port"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(22)
}

impl Engine {
    pub fn keys(&self, owner: &Owner) -> Result<Vec<OwnerKey>, EngineError> {
        self.owner_keys
            .list(owner)
            .map_err(io("reading the owner's SSH keys"))
    }

    /// Registers a public key for `owner` and hands it to their running
    /// `ssh` containers.
    pub async fn add_key(&self, owner: &Owner, text: &str) -> Result<KeyChange, EngineError> {
        let key =
            owner_keys::parse_public_key(text).map_err(|e| EngineError::InvalidArgument(e.0))?;
        let changed = self
            .owner_keys
            .add(owner, key.clone())
            .map_err(|e| match e {
                AddError::Full => EngineError::QuotaExceeded(e.to_string()),
                AddError::Io(e) => EngineError::HostError(format!("saving the key: {e}")),
            })?;
        tracing::info!(owner = %owner, fingerprint = %key.fingerprint, changed, "SSH key added");
        let (applied_to, at_next_start) = if changed {
            self.hand_keys_to_running(owner).await
        } else {
            Default::default()
        };
        Ok(KeyChange {
            keys: vec![key],
            changed,
            applied_to,
            at_next_start,
        })
    }

    /// Removes the keys `which` names (fingerprint, comment or position)
    /// and takes them out of the owner's running containers.
    pub async fn remove_key(&self, owner: &Owner, which: &str) -> Result<KeyChange, EngineError> {
        let gone = self
            .owner_keys
            .remove(owner, which)
            .map_err(io("saving the keys"))?;
        if gone.is_empty() {
            return Err(EngineError::NotFound(format!(
                "no key of yours matches '{}'; `voxnix keys list` (/keys in the chat) shows them (remove by number, \
                 fingerprint or comment)",
                which.chars().take(80).collect::<String>().escape_default()
            )));
        }
        tracing::info!(owner = %owner, removed = gone.len(), "SSH keys removed");
        let (applied_to, at_next_start) = self.hand_keys_to_running(owner).await;
        Ok(KeyChange {
            keys: gone,
            changed: true,
            applied_to,
            at_next_start,
        })
    }

    /// Writes the personal file of each of the owner's `ssh` containers
    /// again (what the next start hands over) and, in the running ones,
    /// root's authorized keys. Returns (refreshed, refreshed at next start).
    async fn hand_keys_to_running(&self, owner: &Owner) -> (Vec<String>, Vec<String>) {
        let mut applied = Vec::new();
        let mut later = Vec::new();
        let mine: Vec<Record> = self
            .records
            .all()
            .into_values()
            .filter(|r| &r.owner == owner && r.spec.modules.iter().any(|m| m == SSH_MODULE))
            .collect();
        for r in mine {
            let lock = self.lock_for(&r.name);
            let _guard = lock.lock().await;
            // Read again under the lock: destroyed or changed meanwhile.
            let Ok(Some(record)) = self.records.get(&r.name) else {
                continue;
            };
            if record.phase != super::records::Phase::Ready {
                continue;
            }
            if let Err(e) = self.write_personal(&record) {
                tracing::warn!(container = %record.name, "writing its personal file: {e}");
            }
            let Ok(Some(machine)) = self.machined.info(&record.name).await else {
                continue;
            };
            match self.refresh_keys_inside(&record, machine.leader).await {
                Ok(()) => applied.push(record.name.clone()),
                Err(e) => {
                    tracing::warn!(container = %record.name, "refreshing root's SSH keys inside: {e}");
                    later.push(record.name.clone());
                }
            }
        }
        (applied, later)
    }

    /// Root's authorized keys inside a running container, written by a
    /// command run there (through its own systemd, as exec does): nothing on
    /// the host resolves a path in the container's tree.
    async fn refresh_keys_inside(&self, record: &Record, leader: u32) -> Result<(), String> {
        let personal = self.personal_for(record).map_err(|e| e.to_string())?;
        let lines: Vec<String> = personal
            .get(SSH_MODULE)
            .and_then(|s| s.get("authorized_keys"))
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut argv = vec![
            "sh".to_string(),
            "-c".into(),
            REFRESH_SCRIPT.into(),
            "voxnix-keys".into(),
            KEYS_DIR.into(),
        ];
        argv.extend(lines);
        let req = exec::ExecRequest {
            argv,
            timeout: Duration::from_secs(20),
            max_output: 4096,
        };
        let r = exec::exec_in_container(&self.cfg.proc_root, leader, &req)
            .await
            .map_err(|e| e.to_string())?;
        match r.exit_code {
            0 => Ok(()),
            3 => Err(format!("{KEYS_DIR} is not there yet (sshd not set up)")),
            c => Err(format!(
                "exit {c}: {}",
                String::from_utf8_lossy(&r.stderr)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
        }
    }

    /// How to reach `name` with ssh from where its owner is.
    pub async fn connect(&self, scope: &Scope, name: &str) -> Result<ConnectInfo, EngineError> {
        let record = self.visible(scope, name)?;
        if !record.spec.modules.iter().any(|m| m == SSH_MODULE) {
            return Err(EngineError::InvalidArgument(format!(
                "'{name}' has no ssh module, so nothing listens for ssh; add it with \
                 `voxnix update {name} {} ssh` (the same modules plus ssh, as /create lists them)",
                record.spec.modules.join(" ")
            )));
        }
        let Some(machine) = self.machined.info(name).await? else {
            return Err(EngineError::Busy(format!(
                "'{name}' is not running; start it first (its host key is read from it)"
            )));
        };
        let (addresses, _) = self.addresses_of(scope, name).await;
        let host_key = self.read_host_key(name, machine.leader).await?;
        let alias = format!("{name}.voxnix");
        let (via, host_name, proxy_jump) = match addresses.iter().find(|a| is_tailnet(a)) {
            Some(a) => ("tailnet", a.to_string(), None),
            None => {
                let Some(a) = addresses.iter().find(
                    |a| matches!(a, IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local()),
                ) else {
                    return Err(EngineError::Busy(format!(
                        "'{name}' has no address yet; try again in a few seconds"
                    )));
                };
                ("host", a.to_string(), Some(self.jump_host()))
            }
        };
        let port = ssh_port(&record);
        let mut ssh_config = format!(
            "Host {alias}\n    HostName {host_name}\n    User root\n    Port {port}\n    \
             HostKeyAlias {alias}\n    StrictHostKeyChecking yes\n"
        );
        if let Some(j) = &proxy_jump {
            ssh_config.push_str(&format!("    ProxyJump {j}\n"));
        }
        let has_keys = !self
            .personal_for(&record)?
            .get(SSH_MODULE)
            .and_then(|s| s.get("authorized_keys"))
            .and_then(serde_json::Value::as_array)
            .is_none_or(Vec::is_empty);
        Ok(ConnectInfo {
            name: name.to_string(),
            via,
            known_hosts: format!("{alias} {host_key}"),
            alias,
            host_name,
            port,
            user: "root",
            proxy_jump,
            host_key,
            ssh_config,
            warning: (!has_keys).then(|| {
                "no SSH key is registered for you, so root will not let you in: add yours with \
                 `voxnix keys add ~/.ssh/id_ed25519.pub` (or /keys add in the chat)"
                    .to_string()
            }),
        })
    }

    /// The host's side of ProxyJump: the administrator's setting, else
    /// this host's name.
    fn jump_host(&self) -> String {
        if !self.cfg.connect_jump_host.is_empty() {
            return self.cfg.connect_jump_host.clone();
        }
        std::fs::read_to_string(self.cfg.proc_root.join("sys/kernel/hostname"))
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }

    /// The container's sshd host key, read by a command run inside it (its
    /// own files, its own namespaces), and taken only if it parses.
    async fn read_host_key(&self, name: &str, leader: u32) -> Result<String, EngineError> {
        let req = exec::ExecRequest {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "cat /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub \
                 /etc/ssh/ssh_host_rsa_key.pub 2>/dev/null; true"
                    .into(),
            ],
            timeout: Duration::from_secs(10),
            max_output: 64 * 1024,
        };
        let r = exec::exec_in_container(&self.cfg.proc_root, leader, &req)
            .await
            .map_err(|e| EngineError::HostError(format!("reading '{name}'s host key: {e}")))?;
        owner_keys::pick_host_key(&String::from_utf8_lossy(&r.stdout)).ok_or_else(|| {
            EngineError::Busy(format!(
                "'{name}' has no SSH host key yet (sshd makes it when it first starts); try \
                 again in a few seconds, or see `voxnix logs {name}` (/logs {name})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tailnet_addresses_are_told_apart() {
        for (a, t) in [
            ("100.64.0.1", true),
            ("100.127.255.254", true),
            ("100.128.0.1", false),
            ("10.100.0.150", false),
            ("fd7a:115c:a1e0::1", true),
            ("fd7a:115c:a1e1::1", false),
        ] {
            assert_eq!(is_tailnet(&a.parse().unwrap()), t, "{a}");
        }
    }
}
