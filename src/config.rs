//! The daemon's configuration file (TOML, `/etc/voxnix/config.toml` by default).
//! Every key has a default, so an empty file is a valid configuration; unknown
//! keys are errors, so a typo never silently falls back to a default. The NixOS
//! module renders this file from `services.voxnix.settings`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const DEFAULT_PATH: &str = "/etc/voxnix/config.toml";

/// How containers' systems are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuilderKind {
    /// Nix: spec → nix/buildContainer.nix → system path (a real NixOS host).
    Nix,
    /// The sandbox's stand-in: containers boot the appliance's own /usr. Only
    /// accepted when the daemon runs with `--sandbox`.
    HostImage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where records of containers and operations live.
    pub state_dir: PathBuf,
    /// NixOS's container conf directory.
    pub conf_dir: PathBuf,
    /// NixOS's container state directory: containers' roots are
    /// `<containers_dir>/NAME`, removed on destroy.
    pub containers_dir: PathBuf,
    /// The bridge containers join (`HOST_BRIDGE`).
    pub bridge: String,
    pub builder: BuilderKind,
    /// Module names the daemon accepts until it reads the Nix module library.
    pub modules: Vec<String>,
    /// Seconds to wait for a container's start job.
    pub start_timeout_secs: u64,
    /// Seconds to wait for a stop job.
    pub stop_timeout_secs: u64,
    /// Seconds a create waits for the container's first IPv4 address.
    pub address_wait_secs: u64,
    /// How often the live view (engine/view.rs) is checked against systemd
    /// and machined, repairing a missed signal (seconds, 1 to 3600).
    pub view_reconcile_secs: u64,
    /// Where `/proc` of the host is (containers' buses are reached through it).
    pub proc_root: PathBuf,
    /// Root under which the journal directories are (`/` on a host).
    pub journal_root: PathBuf,
    /// The longest an exec may run, in seconds.
    pub exec_max_timeout_secs: u64,
    /// Bytes of stdout and of stderr an exec returns at most.
    pub exec_max_output_bytes: u64,
    /// The group whose members (the front ends' service users) may call the
    /// API on behalf of owners they name.
    pub frontend_group: String,
    /// Owner kinds front ends may act for (`telegram` → `telegram:<chat id>`).
    pub frontend_owner_kinds: Vec<String>,
    /// Containers one owner may have at once.
    pub max_containers_per_owner: u32,
    /// Host ports `voxnix expose --to host` may hand out, `LOW-HIGH`
    /// (e.g. `20000-20099`); empty: no container port is put on the host.
    pub expose_host_ports: String,
    /// Ports one owner may have exposed at once, over all their containers.
    pub expose_max_per_owner: u32,
    /// What `voxnix connect` names as the `ProxyJump` to reach a container
    /// through the host (e.g. `me@myserver.example`); empty: the host's name.
    pub connect_jump_host: String,
    /// A container's memory limit when its spec gives none (`4G`; `none`:
    /// no limit unless the spec gives one).
    pub default_memory_max: String,
    /// The most memory a spec may ask for (`none`: no cap).
    pub max_memory_max: String,
    /// A container's task (process and thread) limit when its spec gives
    /// none (0: systemd's default).
    pub default_tasks_max: u64,
    /// The most tasks a spec may ask for (0: no cap).
    pub max_tasks_max: u64,
    /// The highest CPU weight a spec may ask for (systemd's default is 100).
    pub max_cpu_weight: u64,
    /// The memory all of one owner's containers may use together: a size
    /// (`16G`), a share of the host's memory (`50%`), or `none`.
    pub owner_memory_max: String,
    /// The tasks all of one owner's containers may run together (0: no
    /// total).
    pub owner_tasks_max: u64,
    /// The CPU weight of each owner's slice: under contention, owners share
    /// the CPU by these weights, however many containers each runs.
    pub owner_cpu_weight: u64,
    /// A file holding the lists that name people (`admin_owners`, the
    /// Telegram allowlists), kept out of the world-readable Nix store and
    /// readable by root and the front ends' group only; its lists are added
    /// to this file's (see [`crate::access_file`]).
    pub access_file: Option<PathBuf>,
    /// Owners (e.g. `telegram:123`) a front end may act for on the
    /// administrator's methods (HostHealth). The Telegram admins
    /// (`[telegram] admin_chat_ids`) are included without being listed here.
    pub admin_owners: Vec<String>,
    /// Persistent workspaces (`[storage]`, see docs/storage.md).
    pub storage: crate::storage::StorageConfig,
    /// The Nix builder (`[nix]`: binaries, the module library, nixpkgs).
    pub nix: crate::nix::NixConfig,
    /// A file holding the Tailscale auth key (agenix/sops path). Containers
    /// with the `tailscale` module get it as the systemd credential
    /// `tailscale-auth-key` through nspawn; the key itself is never read by
    /// voxnix, stored, logged or put in the Nix store.
    pub tailscale_auth_key_file: Option<PathBuf>,
    /// An administrator's Tailscale OAuth client (scope `auth_keys`): with
    /// it, each start of a container with the `tailscale` module gets a key
    /// of its own, single-use, pre-authorized and tagged with its owner
    /// (see [`crate::host::tailscale_api`]); the shared key is then unused.
    pub tailscale_oauth_client_id: Option<String>,
    /// The file holding that client's secret (root-only).
    pub tailscale_oauth_client_secret_file: Option<PathBuf>,
    /// The Tailscale API's base URL.
    pub tailscale_api_url: String,
    /// The tailnet keys are minted for (`-`: the OAuth client's own).
    pub tailscale_tailnet: String,
    /// Prefix of each owner's tag (`tag:voxnix-` gives
    /// `tag:voxnix-telegram-123`); the tailnet policy must let the OAuth
    /// client apply these tags.
    pub tailscale_tag_prefix: String,
    /// The Telegram front end's table; the daemon keeps it opaque and the bot
    /// (`voxnix telegram`) validates it (`src/frontends/chat/config.rs`).
    pub telegram: Option<toml::Table>,
    /// The LLM agent's table, likewise read by the front ends.
    pub llm: Option<toml::Table>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/voxnix"),
            conf_dir: PathBuf::from("/etc/nixos-containers"),
            containers_dir: PathBuf::from("/var/lib/nixos-containers"),
            bridge: "br-vox".into(),
            builder: BuilderKind::Nix,
            modules: vec![],
            start_timeout_secs: 120,
            stop_timeout_secs: 60,
            address_wait_secs: 20,
            view_reconcile_secs: 30,
            proc_root: PathBuf::from("/proc"),
            journal_root: PathBuf::from("/"),
            exec_max_timeout_secs: 300,
            exec_max_output_bytes: 1024 * 1024,
            frontend_group: "voxnix".into(),
            frontend_owner_kinds: vec!["telegram".into()],
            max_containers_per_owner: 10,
            expose_host_ports: String::new(),
            expose_max_per_owner: 4,
            connect_jump_host: String::new(),
            default_memory_max: "4G".into(),
            max_memory_max: "32G".into(),
            default_tasks_max: 4096,
            max_tasks_max: 32768,
            max_cpu_weight: 1000,
            owner_memory_max: "50%".into(),
            owner_tasks_max: 16384,
            owner_cpu_weight: 100,
            access_file: None,
            admin_owners: vec![],
            storage: crate::storage::StorageConfig::default(),
            nix: crate::nix::NixConfig::default(),
            tailscale_auth_key_file: None,
            tailscale_oauth_client_id: None,
            tailscale_oauth_client_secret_file: None,
            tailscale_api_url: "https://api.tailscale.com".into(),
            tailscale_tailnet: "-".into(),
            tailscale_tag_prefix: "tag:voxnix-".into(),
            telegram: None,
            llm: None,
        }
    }
}

/// What an administrator allows each container (see the keys of the same
/// names); `None`: no default, or no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerLimits {
    pub default_memory_max: Option<u64>,
    pub max_memory_max: Option<u64>,
    pub default_tasks_max: Option<u64>,
    pub max_tasks_max: Option<u64>,
    pub max_cpu_weight: u64,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Loads a file; a missing file at the default path means "all defaults".
    /// [`Self::load`] without reading the `access_file` (for what needs
    /// only the places: the container pre-start check).
    pub fn load_alone(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, Self::parse_alone)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, Self::parse)
    }

    fn load_with(
        path: &Path,
        parse: fn(&str) -> Result<Self, String>,
    ) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })
    }

    /// Parses a configuration, adding the lists of its `access_file`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let table = crate::access_file::merged(text)?;
        Self::from_table(table)
    }

    /// Parses a configuration alone, without reading its `access_file`
    /// (checking a file rendered elsewhere, where the access file is not).
    pub fn parse_alone(text: &str) -> Result<Self, String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Self, String> {
        let cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if !crate::host::conf::flag_is_safe(&self.bridge) || self.bridge.len() > 15 {
            return Err(format!(
                "bridge '{}' is not a valid interface name",
                self.bridge
            ));
        }
        for m in &self.modules {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(format!(
                    "modules: '{m}' is not a module name (lowercase letters, digits, '-')"
                ));
            }
        }
        if !(1..=3600).contains(&self.view_reconcile_secs) {
            return Err(format!(
                "view_reconcile_secs: {} is out of range; use 1 to 3600 seconds",
                self.view_reconcile_secs
            ));
        }
        self.expose_range()?;
        if self.expose_max_per_owner > 1000 {
            return Err(format!(
                "expose_max_per_owner: {} is out of range; use 0 to 1000",
                self.expose_max_per_owner
            ));
        }
        if !self
            .connect_jump_host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_@:[]".contains(&b))
        {
            return Err(
                "connect_jump_host: use a host name or address, optionally user@ and :port \
                 (letters, digits and . - _ @ : [ ] only)"
                    .into(),
            );
        }
        if self.start_timeout_secs == 0 || self.stop_timeout_secs == 0 {
            return Err("start_timeout_secs and stop_timeout_secs must be at least 1".into());
        }
        self.storage.validate().map_err(|e| e.to_string())?;
        let limits = self.container_limits()?;
        if let (Some(d), Some(m)) = (limits.default_memory_max, limits.max_memory_max)
            && d > m
        {
            return Err("default_memory_max must not be above max_memory_max".into());
        }
        if let (Some(d), Some(m)) = (limits.default_tasks_max, limits.max_tasks_max)
            && d > m
        {
            return Err("default_tasks_max must not be above max_tasks_max".into());
        }
        if !(1..=10000).contains(&self.max_cpu_weight) {
            return Err("max_cpu_weight must be 1 to 10000".into());
        }
        let totals = self.owner_totals()?;
        if !(1..=10000).contains(&totals.cpu_weight) {
            return Err("owner_cpu_weight must be 1 to 10000".into());
        }
        if let (Some(d), Some(crate::host::slices::MemoryTotal::Bytes(t))) =
            (limits.default_memory_max, totals.memory_max)
            && d > t
        {
            return Err("default_memory_max must not be above owner_memory_max".into());
        }
        self.admins()?;
        if let Some(p) = &self.tailscale_auth_key_file
            && (!p.is_absolute()
                || !crate::host::conf::flag_is_safe(&p.to_string_lossy())
                || p.to_string_lossy().contains(':'))
        {
            return Err(
                "tailscale_auth_key_file must be an absolute path without spaces or ':'".into(),
            );
        }
        self.tailscale_oauth()?;
        Ok(())
    }

    /// The Tailscale OAuth client, when one is configured.
    pub fn tailscale_oauth(
        &self,
    ) -> Result<Option<crate::host::tailscale_api::OAuthClient>, String> {
        let (id, file) = match (
            &self.tailscale_oauth_client_id,
            &self.tailscale_oauth_client_secret_file,
        ) {
            (None, None) => return Ok(None),
            (Some(id), Some(file)) => (id, file),
            _ => {
                return Err(
                    "tailscale_oauth_client_id and tailscale_oauth_client_secret_file go together: set both, or neither"
                        .into(),
                );
            }
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(
                "tailscale_oauth_client_id must be the client's id (letters and digits)".into(),
            );
        }
        if !file.is_absolute() {
            return Err("tailscale_oauth_client_secret_file must be an absolute path".into());
        }
        let url = &self.tailscale_api_url;
        let loopback = url
            .strip_prefix("http://127.0.0.1")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('/'));
        if !(url.starts_with("https://") || loopback) {
            return Err(format!(
                "tailscale_api_url '{url}' must be an https:// URL (plain http only to 127.0.0.1)"
            ));
        }
        let tailnet = &self.tailscale_tailnet;
        if tailnet.is_empty() || tailnet.contains(['/', '?', '#', ' ']) {
            return Err(format!(
                "tailscale_tailnet '{tailnet}' is not a tailnet name"
            ));
        }
        let prefix = &self.tailscale_tag_prefix;
        let rest = prefix.strip_prefix("tag:").unwrap_or("");
        if rest.is_empty()
            || !rest.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "tailscale_tag_prefix '{prefix}' must be 'tag:' and then a letter, then letters, digits and '-'"
            ));
        }
        Ok(Some(crate::host::tailscale_api::OAuthClient {
            api_url: url.clone(),
            tailnet: tailnet.clone(),
            client_id: id.clone(),
            secret_file: file.clone(),
        }))
    }

    /// The per-container resource defaults and caps, in bytes and counts.
    pub fn container_limits(&self) -> Result<ContainerLimits, String> {
        let size = |key: &str, v: &str| {
            crate::storage::names::parse_size(v).map_err(|e| format!("{key}: {e}"))
        };
        let count = |v: u64| (v > 0).then_some(v);
        Ok(ContainerLimits {
            default_memory_max: size("default_memory_max", &self.default_memory_max)?,
            max_memory_max: size("max_memory_max", &self.max_memory_max)?,
            default_tasks_max: count(self.default_tasks_max),
            max_tasks_max: count(self.max_tasks_max),
            max_cpu_weight: self.max_cpu_weight,
        })
    }

    /// The totals of each owner's slice (see [`crate::host::slices`]).
    /// The host ports `expose --to host` may hand out; None when off.
    pub fn expose_range(&self) -> Result<Option<std::ops::RangeInclusive<u16>>, String> {
        let text = self.expose_host_ports.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || {
            format!(
                "expose_host_ports: '{text}' is not a port range; write LOW-HIGH with ports \
                 1024 to 65535, e.g. 20000-20099 (or leave it empty for none)"
            )
        };
        let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo < 1024 || lo > hi {
            return Err(bad());
        }
        Ok(Some(lo..=hi))
    }

    pub fn owner_totals(&self) -> Result<crate::host::slices::OwnerTotals, String> {
        use crate::host::slices::MemoryTotal;
        let v = self.owner_memory_max.trim();
        let memory_max = if let Some(p) = v.strip_suffix('%') {
            match p.trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Some(MemoryTotal::Percent(p)),
                _ => {
                    return Err(format!(
                        "owner_memory_max: '{v}' is not a share of memory; give 1% to 100%, a size such as 16G, or none"
                    ));
                }
            }
        } else {
            crate::storage::names::parse_size(v)
                .map_err(|e| format!("owner_memory_max: {e}"))?
                .map(MemoryTotal::Bytes)
        };
        Ok(crate::host::slices::OwnerTotals {
            memory_max,
            tasks_max: (self.owner_tasks_max > 0).then_some(self.owner_tasks_max),
            cpu_weight: self.owner_cpu_weight,
        })
    }

    /// Every owner allowed the administrator's methods through a front end:
    /// `admin_owners`, plus `telegram:<id>` for each of the Telegram admins,
    /// so an admin chat is configured once for the bot and the daemon alike.
    pub fn admins(&self) -> Result<Vec<crate::model::Owner>, String> {
        let mut out = Vec::new();
        for o in &self.admin_owners {
            let owner =
                crate::model::Owner::parse(o).map_err(|e| format!("admin_owners: '{o}': {e}"))?;
            out.push(owner);
        }
        let ids = self.telegram.as_ref().and_then(|t| t.get("admin_chat_ids"));
        if let Some(ids) = ids {
            let bad =
                || "[telegram] admin_chat_ids must be a list of chat ids (integers)".to_string();
            for id in ids.as_array().ok_or_else(bad)? {
                let id = id.as_integer().ok_or_else(bad)?;
                out.push(
                    crate::model::Owner::parse(&format!("telegram:{id}"))
                        .map_err(|e| format!("[telegram] admin_chat_ids: {e}"))?,
                );
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("stat_dir = \"/x\"").unwrap_err();
        assert!(err.contains("stat_dir"), "{err}");
    }

    #[test]
    fn admins_come_from_admin_owners_and_telegram_admins() {
        let cfg = Config::parse(
            "admin_owners = [\"unix:1000\", \"telegram:7\"]\n[telegram]\nadmin_chat_ids = [7, -100]\n",
        )
        .unwrap();
        let admins: Vec<String> = cfg
            .admins()
            .unwrap()
            .iter()
            .map(|o| o.as_str().to_string())
            .collect();
        assert_eq!(admins, ["telegram:-100", "telegram:7", "unix:1000"]);
        let err = Config::parse("admin_owners = [\"root\"]").unwrap_err();
        assert!(err.contains("admin_owners: 'root'"), "{err}");
        let err = Config::parse("[telegram]\nadmin_chat_ids = [\"x\"]").unwrap_err();
        assert!(err.contains("admin_chat_ids"), "{err}");
        assert!(Config::default().admins().unwrap().is_empty());
    }

    #[test]
    fn container_limits_are_sizes_and_defaults_stay_under_the_caps() {
        let l = Config::default().container_limits().unwrap();
        assert_eq!(l.default_memory_max, Some(4 << 30));
        assert_eq!(l.max_memory_max, Some(32 << 30));
        assert_eq!(
            (l.default_tasks_max, l.max_tasks_max),
            (Some(4096), Some(32768))
        );
        let none = Config::parse("default_memory_max = \"none\"\nmax_tasks_max = 0").unwrap();
        let l = none.container_limits().unwrap();
        assert_eq!((l.default_memory_max, l.max_tasks_max), (None, None));
        for (text, says) in [
            (
                "default_memory_max = \"64G\"",
                "default_memory_max must not be above",
            ),
            (
                "default_tasks_max = 100000",
                "default_tasks_max must not be above",
            ),
            ("max_memory_max = \"lots\"", "max_memory_max: "),
            (
                "max_cpu_weight = 20000",
                "max_cpu_weight must be 1 to 10000",
            ),
            ("owner_memory_max = \"150%\"", "owner_memory_max: '150%'"),
            (
                "owner_memory_max = \"2G\"",
                "default_memory_max must not be above owner_memory_max",
            ),
            (
                "owner_cpu_weight = 0",
                "owner_cpu_weight must be 1 to 10000",
            ),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::parse("bridge = \"br vox\"").is_err());
        let oauth =
            "tailscale_oauth_client_id = \"k1\"\ntailscale_oauth_client_secret_file = \"/run/s\"\n";
        assert!(
            Config::parse(oauth)
                .unwrap()
                .tailscale_oauth()
                .unwrap()
                .is_some()
        );
        for url in [
            "http://127.0.0.1.evil.example",
            "http://api.tailscale.com",
            "ftp://x",
        ] {
            let e = Config::parse(&format!("{oauth}tailscale_api_url = \"{url}\"")).unwrap_err();
            assert!(e.contains("must be an https:// URL"), "{url}: {e}");
        }
        assert!(
            Config::parse(&format!(
                "{oauth}tailscale_api_url = \"http://127.0.0.1:8\""
            ))
            .is_ok()
        );
        let e = Config::parse("tailscale_oauth_client_id = \"k1\"").unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let e = Config::parse(&format!("{oauth}tailscale_tag_prefix = \"voxnix-\"")).unwrap_err();
        assert!(e.contains("tailscale_tag_prefix"), "{e}");
        assert!(Config::parse("modules = [\"Git\"]").is_err());
        assert!(Config::parse("builder = \"docker\"").is_err());
        assert_eq!(
            Config::parse("builder = \"host-image\"").unwrap().builder,
            BuilderKind::HostImage
        );
    }
}
