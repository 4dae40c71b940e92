//! The engine: what the daemon does, independent of how it is asked (the D-Bus
//! API) and of how the host is reached (the host module).
//!
//! Concurrency: operations on different containers run in parallel; each
//! container has a lock that serializes operations on it; name reservation is
//! serialized by one short lock so two creates of one name cannot both win.

pub mod admission;
pub mod builder;
pub mod checkpoints;
pub mod connect;
pub mod error;
pub mod expose;
pub mod fault;
pub mod operations;
pub mod owner_keys;
pub mod personal;
mod queries;
pub mod reconcile;
pub mod records;
pub mod schedules;
pub mod spec;
pub mod system_cache;
mod systems;
pub mod tailscale_keys;
pub mod undo;
pub mod view;
pub mod watch;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::{BuilderKind, Config};
use crate::host::conf::{ConfDir, ConfState, ContainerConf};
use crate::host::leftovers::{self, Leftovers};
use crate::host::machined::Machined;
use crate::host::systemd::{JobKind, Systemd};
use crate::host::{container_unit, exec, journal, slices};
use crate::storage::{Kept, Snapshot, Storage};

pub use crate::model::Owner;
pub use builder::Builder;
pub use error::EngineError;
pub use operations::{Event, OperationSnapshot, Operations};
use records::{Phase, Record, RecordStore};
use spec::ContainerSpec;

/// The module whose root logins take the owner's registered keys.
const SSH_MODULE: &str = "ssh";

/// The personal file's key for what the host tells the container (not a
/// module's settings; a module file cannot be named so).
const HOST_WORD: &str = "_voxnix";

/// The container ports forwarded from host ports, sorted, each once.
fn host_exposed_ports(record: &Record) -> Vec<u16> {
    let mut ports: Vec<u16> = record
        .exposed
        .iter()
        .filter(|e| e.host_port.is_some())
        .map(|e| e.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Which containers a caller may see and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The admin looking at everything.
    All,
    /// One owner's containers only.
    Owner(Owner),
}

impl Scope {
    pub fn allows(&self, owner: &Owner) -> bool {
        match self {
            Scope::All => true,
            Scope::Owner(o) => o == owner,
        }
    }
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContainerSummary {
    pub name: String,
    pub owner: String,
    pub state: String,
    pub unit_state: String,
    pub addresses: Vec<String>,
    pub modules: Vec<String>,
    pub created_at: u64,
    /// Its conf file against what voxnix writes: anything but `ok` and
    /// `outdated` means it was removed or replaced outside voxnix, and the
    /// container is not started until it is repaired.
    pub conf: ConfState,
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    #[serde(flatten)]
    pub summary: ContainerSummary,
    pub unit: String,
    /// Where `addresses` come from: `kernel` (the live view, netlink inside
    /// the container), `machined` (no watcher: asked now), `none` (stopped).
    pub addresses_from: &'static str,
    pub sub_state: String,
    pub leader: Option<u32>,
    pub machine_id: Option<String>,
    pub uptime_secs: Option<u64>,
    pub os_release: std::collections::BTreeMap<String, String>,
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    pub system_path: Option<String>,
    pub workspace: bool,
    pub last_operation: Option<records::LastOperation>,
    /// The system's derivation and what it says (modules, main packages).
    pub drv_path: Option<String>,
    pub system: Option<crate::nix::SystemInfo>,
    /// Ports shared on purpose (`voxnix expose`).
    pub exposed: Vec<expose::ExposedPort>,
    /// Host ports unexposed while this run went on: nspawn still forwards
    /// them, until the container's next restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwarded_until_restart: Vec<records::ReleasedPort>,
}

/// What create reports when done.
#[derive(Debug, Clone, Serialize)]
pub struct CreateResult {
    pub name: String,
    pub owner: String,
    pub state: String,
    pub addresses: Vec<String>,
}

pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) systemd: Systemd,
    pub(crate) machined: Machined,
    pub(crate) confs: ConfDir,
    /// Containers' roots and per-container GC roots, removed on destroy.
    leftovers: Leftovers,
    pub(crate) records: RecordStore,
    pub(crate) storage: Storage,
    builder: Builder,
    known_modules: Vec<String>,
    catalog: Vec<crate::nix::ModuleInfo>,
    personal: personal::PersonalFiles,
    /// Each owner's SSH public keys, handed to their `ssh` containers.
    pub(crate) owner_keys: owner_keys::OwnerKeys,
    tailscale_keys: tailscale_keys::TailscaleKeys,
    /// Each container's checkpoints (engine/undo.rs).
    checkpoints: checkpoints::CheckpointStore,
    /// Owners' snapshot schedules for all their containers (schedules.rs).
    owner_schedules: schedules::OwnerSchedules,
    /// Built systems by what they are built from (system_cache.rs).
    system_cache: system_cache::SystemCache,
    /// The module library's and voxnix's Nix files' content hash, part of
    /// every cache key; None when they could not be read (nothing cached).
    library_hash: Option<String>,
    owner_slices: slices::OwnerSlices,
    pub(crate) view: view::LiveView,
    /// Coalesced reads that still ask the host (see view/coalesce.rs): a
    /// unit's resource use (kept 1 s), a journal's lines (shared while
    /// being read), a system's derivation (never changes).
    unit_reads: view::coalesce::Coalesced<String, crate::host::systemd::UnitStatus>,
    log_reads: view::coalesce::Coalesced<(String, u64, u32), Arc<Vec<journal::LogLine>>>,
    drv_reads: view::coalesce::Coalesced<String, Option<crate::nix::SystemInfo>>,
    names: tokio::sync::Mutex<()>,
    /// Held while a host port is chosen and recorded (engine/expose.rs).
    ports: Mutex<()>,
    /// Held while the expose filter is rendered and loaded (expose.rs):
    /// the last load is of the latest records.
    expose_filter: tokio::sync::Mutex<()>,
    /// Why the schedule's last snapshot of a container was not taken (a
    /// full quota, ...), until one is: shown to its owner with their
    /// storage use, since the owner never sees the log.
    schedule_failures: Mutex<std::collections::HashMap<String, String>>,
    /// Bounds concurrent read requests (list, status, logs, exec). Each fans
    /// out into several calls to systemd and machined, and the bus daemon
    /// allows a connection only so many pending replies (128 on the system
    /// bus): past that, calls fail with LimitsExceeded. Requests wait here
    /// instead, so load shows as latency, never as errors.
    /// Fair admission of reads and commands, per owner (see admission.rs).
    admission: admission::Admission,
    locks: crate::keyed_locks::KeyedLocks,
    /// Containers voxnix is stopping on purpose, and since when.
    expected_stops: Mutex<HashMap<String, Instant>>,
    pub(crate) ops: Operations,
    events: broadcast::Sender<Event>,
}

/// An update may not take the tailscale module from a container that
/// shares ports on its tailnet: Tailscale Serve keeps those settings in the
/// container's tailscaled, so nothing could drop them without the module,
/// and they would come back with it.
fn refuse_dropping_a_served_tailnet(
    record: &Record,
    new_spec: &ContainerSpec,
) -> Result<(), EngineError> {
    let served: Vec<String> = record
        .exposed
        .iter()
        .filter(|e| e.to == records::ExposeTo::Tailnet)
        .map(|e| e.port.to_string())
        .collect();
    if served.is_empty() || new_spec.modules.iter().any(|m| m == "tailscale") {
        return Ok(());
    }
    Err(EngineError::InvalidArgument(format!(
        "'{}' shares port(s) {} on its tailnet; `voxnix unexpose {} PORT --to tailnet` \
         (/unexpose) each while it runs, then drop the tailscale module",
        record.name,
        served.join(", "),
        record.name
    )))
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::HostError(format!("{context}: {e}"))
}

impl Engine {
    /// Builds an engine over a connection to the host's system bus.
    /// `sandbox` allows the host-image builder.
    pub async fn new(
        cfg: Config,
        bus: &zbus::Connection,
        sandbox: bool,
    ) -> Result<Arc<Self>, EngineError> {
        let nix = crate::nix::NixBuilder::new(cfg.nix.clone());
        let builder = match cfg.builder {
            BuilderKind::HostImage if !sandbox => {
                return Err(EngineError::InvalidArgument(
                    "builder = \"host-image\" boots the host's /usr instead of NixOS and is only allowed with `voxnix daemon --sandbox`".into(),
                ));
            }
            BuilderKind::HostImage => Builder::HostImage(nix),
            BuilderKind::Nix => Builder::Nix(nix),
        };
        let records =
            RecordStore::open(&cfg.state_dir).map_err(io("opening the state directory"))?;
        fault::init(&cfg.state_dir);
        let (events, _) = broadcast::channel(1024);
        // The module library is the source of truth: adding a file to
        // modules/ adds a module. The configured list is the fallback when
        // the library cannot be read (and the log says so).
        let catalog = match crate::nix::catalog::catalog_with_cancel(
            builder.nix().config(),
            &crate::nix::cancel_pair().1,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "cannot read the module library ({e}); using the configured module list"
                );
                Vec::new()
            }
        };
        let mut known_modules: Vec<String> = if catalog.is_empty() {
            cfg.modules.clone()
        } else {
            catalog.iter().map(|m| m.name.clone()).collect()
        };
        known_modules.sort();
        known_modules.dedup();
        let library_hash = match system_cache::library_hash(&cfg.nix.library_dir) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("cannot hash the module library ({e}); the system cache is off");
                None
            }
        };
        Ok(Arc::new(Engine {
            systemd: Systemd::new(bus).await?,
            machined: Machined::new(bus).await?,
            confs: ConfDir::new(cfg.conf_dir.clone()),
            leftovers: Leftovers::new(
                cfg.containers_dir.clone(),
                leftovers::NIXOS_GCROOTS_PER_CONTAINER,
                cfg.journal_root.join("var/log/journal"),
            ),
            records,
            storage: Storage::new(cfg.storage.clone()),
            personal: personal::PersonalFiles::new(&cfg.state_dir),
            owner_keys: owner_keys::OwnerKeys::new(&cfg.state_dir),
            tailscale_keys: tailscale_keys::TailscaleKeys::new(&cfg.state_dir),
            checkpoints: checkpoints::CheckpointStore::new(&cfg.state_dir),
            owner_schedules: schedules::OwnerSchedules::open(&cfg.state_dir)
                .map_err(io("reading the owners' snapshot schedules"))?,
            system_cache: system_cache::SystemCache::open(&cfg.state_dir, &cfg.nix.gcroots_dir)
                .map_err(io("reading the system cache"))?,
            library_hash,
            owner_slices: slices::OwnerSlices::open(&cfg.state_dir)
                .map_err(io("reading the owner-slice key"))?,
            view: view::LiveView::new(cfg.proc_root.clone()),
            unit_reads: view::coalesce::Coalesced::new(Duration::from_secs(1)),
            log_reads: view::coalesce::Coalesced::new(Duration::ZERO),
            drv_reads: view::coalesce::Coalesced::new(Duration::from_secs(3600)),
            builder,
            known_modules,
            catalog,
            names: tokio::sync::Mutex::new(()),
            ports: Mutex::new(()),
            expose_filter: tokio::sync::Mutex::new(()),
            schedule_failures: Mutex::new(std::collections::HashMap::new()),
            admission: admission::Admission::new(),
            locks: crate::keyed_locks::KeyedLocks::new(),
            expected_stops: Mutex::new(HashMap::new()),
            ops: Operations::new(events.clone()),
            events,
            cfg,
        }))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub fn known_modules(&self) -> &[String] {
        &self.known_modules
    }

    /// The module library (name, description, settings); just names when
    /// the library could not be read.
    pub fn modules(&self) -> serde_json::Value {
        if self.catalog.is_empty() {
            serde_json::Value::Array(
                self.known_modules
                    .iter()
                    .map(|n| serde_json::json!({ "name": n }))
                    .collect(),
            )
        } else {
            serde_json::to_value(&self.catalog).unwrap_or_default()
        }
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.get(name)
    }

    /// Notes that voxnix is about to stop a running machine: its next
    /// MachineRemoved is voxnix's doing.
    fn expect_stop(&self, name: &str) {
        let mut m = self
            .expected_stops
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| t.elapsed() < Duration::from_secs(120));
        m.insert(name.to_string(), Instant::now());
    }

    /// Consumes the expectation for one MachineRemoved of `name`, so a later
    /// removal that nobody asked for is reported as unexpected.
    pub(crate) fn take_expected_stop(&self, name: &str) -> bool {
        let mut m = self
            .expected_stops
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.remove(name)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(120))
    }

    fn clear_expected(&self, name: &str) {
        self.expected_stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The record of `name` if the scope may see it; otherwise `NotFound`,
    /// the same error as for a name that does not exist.
    fn visible(&self, scope: &Scope, name: &str) -> Result<Record, EngineError> {
        if spec::validate_name(name).is_err() {
            return Err(EngineError::not_found(name));
        }
        match self.records.get(name).map_err(io("reading a record"))? {
            Some(r) if scope.allows(&r.owner) => Ok(r),
            _ => Err(EngineError::not_found(name)),
        }
    }

    /// What Nix builds `spec` from: without the owner and without the
    /// settings the module library calls personal. (Nix's side leaves them
    /// out too, nix/spec.nix `impersonal`; without a catalog this side
    /// relies on that.)
    fn build_json(&self, spec: &ContainerSpec) -> serde_json::Value {
        spec.to_build_json(|m, k| self.setting_is_personal(m, k).unwrap_or(false))
    }

    /// What the container is handed at start: its personal settings, or,
    /// when the library's catalog could not be read, every setting of its
    /// modules (more than needed, never less; the file is root-only).
    fn personal_settings(
        &self,
        spec: &ContainerSpec,
    ) -> serde_json::Map<String, serde_json::Value> {
        spec.personal_settings(|m, k| self.setting_is_personal(m, k).unwrap_or(true))
    }

    /// Whether the container is handed a personal file at all: it has
    /// personal settings, the `ssh` module (whose root keys are the owner's
    /// registered keys, which change without the conf changing), or host
    /// ports forwarded to it (which its firewall opens from the file).
    fn has_personal(&self, record: &Record) -> bool {
        record.spec.modules.iter().any(|m| m == SSH_MODULE)
            || !host_exposed_ports(record).is_empty()
            || !self.personal_settings(&record.spec).is_empty()
    }

    /// The personal file's contents for `record`: its personal settings;
    /// with the `ssh` module, its owner's registered keys added to root's;
    /// and under `_voxnix` (not a module: the host's word to the container)
    /// the container ports the host forwards to it, which
    /// nix/open-exposed-ports.sh opens in its firewall at start.
    fn personal_for(
        &self,
        record: &Record,
    ) -> Result<serde_json::Map<String, serde_json::Value>, EngineError> {
        let mut map = self.personal_settings(&record.spec);
        let forwarded = host_exposed_ports(record);
        if !forwarded.is_empty() {
            map.insert(
                HOST_WORD.into(),
                serde_json::json!({ "open_tcp_ports": forwarded }),
            );
        }
        if record.spec.modules.iter().any(|m| m == SSH_MODULE) {
            let registered = self
                .owner_keys
                .list(&record.owner)
                .map_err(io("reading the owner's SSH keys"))?;
            let ssh = map
                .entry(SSH_MODULE)
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let serde_json::Value::Object(ssh) = ssh {
                let mut lines: Vec<serde_json::Value> = match ssh.get("authorized_keys") {
                    Some(serde_json::Value::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                for k in registered {
                    let line = serde_json::Value::String(k.line);
                    if !lines.contains(&line) {
                        lines.push(line);
                    }
                }
                ssh.insert("authorized_keys".into(), serde_json::Value::Array(lines));
            }
        }
        Ok(map)
    }

    /// Whether the library declares `module.setting` personal; `None` when
    /// the catalog does not know it.
    fn setting_is_personal(&self, module: &str, setting: &str) -> Option<bool> {
        self.catalog
            .iter()
            .find(|m| m.name == module)
            .and_then(|m| m.settings.get(setting))
            .map(|s| s.personal)
    }

    /// The administrator's per-container defaults (for what a spec leaves
    /// out) and, when `cap`, the caps (a spec above one is refused, saying
    /// the cap).
    fn apply_limits(&self, r: &mut spec::Resources, cap: bool) -> Result<(), EngineError> {
        let l = self
            .cfg
            .container_limits()
            .map_err(EngineError::InvalidArgument)?;
        if cap {
            if let (Some(asked), Some(max)) = (r.memory_max, l.max_memory_max)
                && asked > max
            {
                return Err(EngineError::InvalidArgument(format!(
                    "memory_max: {} is above this server's limit of {} per container; ask for at most {}",
                    spec::format_size(asked),
                    spec::format_size(max),
                    spec::format_size(max)
                )));
            }
            if let (Some(asked), Some(max)) = (r.tasks_max, l.max_tasks_max)
                && asked > max
            {
                return Err(EngineError::InvalidArgument(format!(
                    "tasks_max: {asked} is above this server's limit of {max} per container"
                )));
            }
            if let Some(asked) = r.cpu_weight
                && asked > l.max_cpu_weight
            {
                return Err(EngineError::InvalidArgument(format!(
                    "cpu_weight: {asked} is above this server's limit of {}",
                    l.max_cpu_weight
                )));
            }
        }
        if cap
            && let (Some(asked), Ok(totals)) = (r.memory_max, self.cfg.owner_totals())
            && let Some(slices::MemoryTotal::Bytes(total)) = totals.memory_max
            && asked > total
        {
            return Err(EngineError::InvalidArgument(format!(
                "memory_max: {} is above this server's limit of {} for all of one owner's containers \
                 together; ask for at most {}",
                spec::format_size(asked),
                spec::format_size(total),
                spec::format_size(total)
            )));
        }
        if r.memory_max.is_none() {
            r.memory_max = l.default_memory_max;
        }
        if r.tasks_max.is_none() {
            r.tasks_max = l.default_tasks_max;
        }
        Ok(())
    }

    async fn read_permit(&self, scope: &Scope) -> Result<admission::Permit, EngineError> {
        self.admission.read(scope).await
    }

    fn timeout(&self, secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    // ----- create -----------------------------------------------------------

    /// Validates `spec_json`, reserves the name, and starts the create in the
    /// background. Returns the operation id.
    pub async fn create(
        self: &Arc<Self>,
        owner: Owner,
        spec_json: &str,
    ) -> Result<String, EngineError> {
        let mut spec = spec::parse_spec(spec_json, &self.known_modules)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        self.apply_limits(&mut spec.resources, true)?;
        let name = spec.name.clone();
        {
            let _names = self.names.lock().await;
            self.ensure_name_free(&name).await?;
            self.ensure_under_limit(&owner)?;
            let record = Record::new(&name, owner.clone(), spec);
            self.records
                .put(&record)
                .map_err(io("writing the record"))?;
        }
        let op = self.ops.begin("create", &name, &owner);
        let engine = self.clone();
        let op_id = op.clone();
        tokio::spawn(async move {
            let result = engine.run_create(&op_id, &name).await;
            engine.ops.finish(
                &op_id,
                result.map(|r| serde_json::to_value(r).unwrap_or_default()),
            );
        });
        Ok(op)
    }

    /// A name is taken if anything on the host uses it, whoever owns it. The
    /// message never says who.
    async fn ensure_name_free(&self, name: &str) -> Result<(), EngineError> {
        let taken = self
            .records
            .get(name)
            .map_err(io("reading a record"))?
            .is_some()
            || self.confs.exists(name)
            || self.machined.info(name).await?.is_some();
        if taken {
            return Err(EngineError::Conflict(format!(
                "a container named '{name}' already exists; choose another name"
            )));
        }
        Ok(())
    }

    fn ensure_under_limit(&self, owner: &Owner) -> Result<(), EngineError> {
        let limit = self.cfg.max_containers_per_owner as usize;
        let have = self
            .records
            .load_all()
            .0
            .values()
            .filter(|r| &r.owner == owner)
            .count();
        if have >= limit {
            return Err(EngineError::QuotaExceeded(format!(
                "{owner} already has {have} containers, the limit is {limit}; destroy one first"
            )));
        }
        Ok(())
    }

    async fn run_create(
        self: &Arc<Self>,
        op: &str,
        name: &str,
    ) -> Result<CreateResult, EngineError> {
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        fault::point("create:reserved");
        match self.create_steps(op, name).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.ops.progress(
                    op,
                    "rolling-back",
                    &format!("create failed ({}); undoing it", e.kind()),
                );
                if let Err(rb) = self.rollback_create(name).await {
                    tracing::error!(container = name, "rollback after a failed create: {rb}");
                }
                Err(e)
            }
        }
    }

    async fn create_steps(
        self: &Arc<Self>,
        op: &str,
        name: &str,
    ) -> Result<CreateResult, EngineError> {
        let mut record = self
            .records
            .get(name)
            .map_err(io("reading the record"))?
            .ok_or_else(|| {
                EngineError::HostError(format!("the record of '{name}' vanished during create"))
            })?;
        self.clear_leftovers(op, name)?;
        if record.spec.workspace {
            self.ops
                .progress(op, "storage", "preparing the persistent /workspace");
            let path = self.storage.workspace_path(&record.owner, name)?;
            if path
                .symlink_metadata()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            {
                // Recorded first: a rollback (after a failure or a crash)
                // removes the workspace this create makes.
                record.workspace_made_by_create = true;
                self.records
                    .put(&record)
                    .map_err(io("writing the record"))?;
            }
            self.storage.ensure_workspace(&record.owner, name).await?;
            let kept = self.storage.kept(&record.owner).await?;
            if let Some(k) = kept.into_iter().find(|k| k.container == name) {
                self.ops.progress(
                    op,
                    "storage",
                    &format!(
                        "the workspace of an earlier '{name}' is kept ({}); restore it with \
                         `voxnix storage restore-kept {name}`",
                        k.id
                    ),
                );
            }
        }
        self.create_system(op, name, &mut record).await
    }

    /// Removes a workspace this create made, unless the owner has kept data of
    /// an earlier container of the same name (never touched by a failed create).
    async fn drop_fresh_workspace(&self, owner: &Owner, name: &str) {
        let kept = self
            .storage
            .kept(owner)
            .await
            .map(|k| k.iter().any(|k| k.container == name));
        if matches!(kept, Ok(false))
            && let Err(e) = self.storage.purge(owner, name).await
        {
            tracing::warn!(
                container = name,
                "removing the workspace of a failed create: {e}"
            );
        }
    }

    async fn create_system(
        self: &Arc<Self>,
        op: &str,
        name: &str,
        record: &mut Record,
    ) -> Result<CreateResult, EngineError> {
        self.ops
            .progress(op, "building", &format!("building the system of {name}"));
        let progress = {
            let engine = self.clone();
            let op = op.to_string();
            move |line: &str| engine.ops.progress(&op, "building", line)
        };
        let built = self.build_or_reuse(name, &record.spec, &progress).await?;
        record.system_path = built.system_path.clone();
        record.drv_path = built.drv_path.clone();
        self.records.put(record).map_err(io("writing the record"))?;
        fault::point("create:built");

        self.ops.progress(
            op,
            "configuring",
            "writing the container's conf and unit settings",
        );
        self.install(record).await?;
        fault::point("create:properties-set");

        self.ops.progress(
            op,
            "starting",
            &format!("starting {}", container_unit(name)),
        );
        self.start_unit(name).await?;
        fault::point("create:started");

        record.phase = Phase::Ready;
        record.finish("ok");
        self.records.put(record).map_err(io("writing the record"))?;
        self.emit(Event::ContainerAdded {
            name: name.to_string(),
        });
        // The first checkpoint: the container as created. It runs now; a
        // checkpoint that cannot be taken (a full quota) is said, not fatal.
        let why = format!("created with {}", undo::modules_words(&record.spec.modules));
        match self
            .take_checkpoint(
                record,
                checkpoints::Kind::Create,
                record.owner.as_str(),
                &why,
                None,
            )
            .await
        {
            Ok(c) => self.settle_checkpoint(record, c.id, true, &[]).await,
            Err(e) => {
                tracing::warn!(container = name, "no checkpoint of the new container: {e}");
                self.ops.progress(
                    op,
                    "storage",
                    &format!("no checkpoint of the new container: {}", e.message()),
                );
            }
        }

        self.ops.progress(
            op,
            "waiting-for-address",
            "waiting for the container's DHCP address",
        );
        let addresses = self
            .wait_for_ipv4(name, self.timeout(self.cfg.address_wait_secs))
            .await;
        let state = self.state_of(record).await;
        self.ops
            .progress(op, "ready", &format!("{name} is {state}"));
        Ok(CreateResult {
            name: name.to_string(),
            owner: record.owner.to_string(),
            state,
            addresses: addresses.iter().map(IpAddr::to_string).collect(),
        })
    }

    /// Writes the conf file and the unit's persistent properties (devices and
    /// resource limits), then reloads systemd.
    async fn install(&self, record: &Record) -> Result<(), EngineError> {
        self.write_personal(record)?;
        if record.spec.modules.iter().any(|m| m == "tailscale")
            && matches!(self.cfg.tailscale_oauth(), Ok(Some(_)))
            && !self.tailscale_keys.path(&record.name).exists()
        {
            // The conf names it; a start outside voxnix must find it.
            self.tailscale_keys
                .clear(&record.name)
                .map_err(io("writing the container's Tailscale key file"))?;
        }
        let text = self.render_conf(record)?;
        self.confs
            .write(&record.name, &text)
            .map_err(io("writing the conf file"))?;
        fault::point("create:conf-written");
        let props = unit_properties(&record.spec);
        self.systemd
            .set_properties(&container_unit(&record.name), false, props)
            .await?;
        self.place_in_owner_slice(record).await?;
        self.systemd.reload().await?;
        Ok(())
    }

    /// Sets the owner's totals on their slice and puts the container's unit
    /// in it (from its next start). Returns whether the unit's drop-in
    /// changed, which needs a reload.
    async fn place_in_owner_slice(&self, record: &Record) -> Result<bool, EngineError> {
        let slice = self.owner_slices.slice_of(record.owner.as_str());
        self.set_owner_totals(&slice).await?;
        slices::place(
            Path::new(slices::CONTROL_DIR),
            &container_unit(&record.name),
            &slice,
        )
        .map_err(io("writing the container's slice drop-in"))
    }

    /// The configuration's owner totals, on one owner's slice (persistent,
    /// and live for a slice that is running).
    pub(super) async fn set_owner_totals(&self, slice: &str) -> Result<(), EngineError> {
        let totals = self
            .cfg
            .owner_totals()
            .map_err(EngineError::InvalidArgument)?;
        self.systemd
            .set_properties(slice, false, totals.properties())
            .await?;
        Ok(())
    }

    /// The container's personal settings, where its conf says they are.
    fn write_personal(&self, record: &Record) -> Result<(), EngineError> {
        self.personal
            .write(&record.name, &self.personal_for(record)?)
            .map_err(io("writing the container's personal settings"))?;
        Ok(())
    }

    /// The conf file NixOS's `container@.service` reads for `record`.
    fn render_conf(&self, record: &Record) -> Result<String, EngineError> {
        let mut flags = Vec::new();
        if self.has_personal(record) {
            // Read by nspawn from the host's file at each start; in the
            // container only as a credential, never in the store.
            flags.push(format!(
                "--load-credential={}:{}",
                personal::CREDENTIAL,
                self.personal.path(&record.name).display()
            ));
        }
        if record.spec.modules.iter().any(|m| m == "tailscale") {
            // The key reaches the container as a systemd credential loaded
            // from a host file by nspawn: never an environment variable,
            // never in the Nix store. With an OAuth client, the file is the
            // container's own, holding a key minted for its enrolment
            // (tailscale_keys.rs); else the administrator's shared key. And
            // a TUN device for tailscaled.
            let oauth = self
                .cfg
                .tailscale_oauth()
                .map_err(EngineError::InvalidArgument)?;
            let key = match (oauth, self.cfg.tailscale_auth_key_file.as_ref()) {
                (Some(_), _) => self.tailscale_keys.path(&record.name),
                (None, Some(shared)) => shared.clone(),
                (None, None) => {
                    return Err(EngineError::InvalidArgument(
                        "modules: 'tailscale' needs a way to join the tailnet; the administrator sets \
                         tailscale_oauth_client_id and tailscale_oauth_client_secret_file \
                         (NixOS: services.voxnix.tailscale.oauthClientId and oauthClientSecretFile), \
                         or a shared tailscale_auth_key_file"
                            .into(),
                    ));
                }
            };
            flags.push(format!(
                "--load-credential=tailscale-auth-key:{}",
                key.display()
            ));
            flags.push("--bind=/dev/net/tun".into());
        }
        if record.spec.workspace {
            let path = self.storage.workspace_path(&record.owner, &record.name)?;
            // Idmapped: the container's root (an unprivileged uid range on
            // the host) owns what host root owns in the workspace, and what
            // it writes is stored as owned by uid 0, 1000 ... on disk.
            flags.push(format!("--bind={}:/workspace:idmap", path.display()));
        }
        let conf = ContainerConf {
            system_path: record.system_path.clone(),
            private_network: true,
            host_bridge: Some(self.cfg.bridge.clone()),
            host_ports: record
                .exposed
                .iter()
                .filter_map(|e| e.host_port.map(|h| (h, e.port)))
                .collect(),
            extra_nspawn_flags: flags,
        };
        conf.render().ok_or_else(|| {
            EngineError::InvalidArgument("a path in the container's conf is not safe".into())
        })
    }

    /// The record's conf file against what voxnix writes for it.
    pub(crate) fn conf_state(&self, record: &Record) -> ConfState {
        match self.render_conf(record) {
            Ok(wanted) => self.confs.state(&record.name, &wanted),
            // Nothing to compare with (ensure_conf says why): voxnix's or not.
            Err(_) => self.confs.state(&record.name, ""),
        }
    }

    /// `Conflict` (saying what to do) unless the record's conf is voxnix's
    /// (current or from an older voxnix).
    fn refuse_unless_conf_is_ours(&self, record: &Record) -> Result<(), EngineError> {
        match self.conf_state(record) {
            ConfState::Ok | ConfState::Outdated => Ok(()),
            state => Err(EngineError::Conflict(conf_problem(
                &record.name,
                state,
                &self.confs.path(&record.name),
            ))),
        }
    }

    /// Before anything starts a container: its conf must be voxnix's. An
    /// older voxnix's is brought up to date; a missing or foreign one stops
    /// the start (started without it, NixOS's template would boot the
    /// container without its private network and workspace).
    async fn ensure_conf(&self, record: &Record) -> Result<(), EngineError> {
        let wanted = self.render_conf(record)?;
        match self.confs.state(&record.name, &wanted) {
            ConfState::Ok => {
                // The conf names the personal file: it must be there (and
                // say what the record says) or nspawn refuses to start.
                self.write_personal(record)?;
                // A container from before owners' slices, or whose drop-in
                // was removed: back into its owner's slice before it starts.
                if self.place_in_owner_slice(record).await? {
                    self.systemd.reload().await?;
                }
                Ok(())
            }
            ConfState::Outdated => {
                tracing::info!(container = %record.name, "conf brought up to date before the start");
                self.install(record).await
            }
            state => Err(EngineError::Conflict(conf_problem(
                &record.name,
                state,
                &self.confs.path(&record.name),
            ))),
        }
    }

    /// Writes a container's conf again from its record, after it was removed
    /// (or replaced and then removed) outside voxnix. A conf voxnix did not
    /// write is never overwritten: whoever wrote it must remove it first.
    pub async fn repair(&self, scope: &Scope, name: &str) -> Result<(), EngineError> {
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        if self.conf_state(&record) == ConfState::Foreign {
            return Err(EngineError::Conflict(conf_problem(
                name,
                ConfState::Foreign,
                &self.confs.path(name),
            )));
        }
        if let Some(system) = &record.system_path
            && std::fs::symlink_metadata(system).is_err()
        {
            return Err(EngineError::Conflict(format!(
                "'{name}'s system ({system}) is no longer in the Nix store (removed with its \
                 conf outside voxnix); update it to build it again, or destroy it"
            )));
        }
        record.begin("repair");
        self.records
            .put(&record)
            .map_err(io("writing the record"))?;
        let result = self.install(&record).await;
        if result.is_ok() {
            tracing::info!(container = name, "conf written again from the record");
        }
        self.finish_record(record, &result)?;
        result
    }

    async fn start_unit(&self, name: &str) -> Result<(), EngineError> {
        let unit = container_unit(name);
        // Never started unguarded: the filter that binds its bridge port
        // to its MAC and its host ports to it is loaded first (systemd
        // would start the container whatever became of the filter).
        self.sync_expose_filter().await.map_err(|e| {
            EngineError::HostError(format!(
                "'{name}' was not started, since the host's filter for its network could not be loaded: {e}"
            ))
        })?;
        self.systemd.reset_failed(&unit).await?;
        let key_handed_over = self.hand_over_tailscale_key(name).await?;
        let started = self
            .systemd
            .run_job(
                JobKind::Start,
                &unit,
                self.timeout(self.cfg.start_timeout_secs),
            )
            .await;
        if key_handed_over && let Err(e) = self.tailscale_keys.clear(name) {
            // nspawn has read it (or the start failed): no key may wait here.
            tracing::error!(container = name, "clearing its Tailscale key file: {e}");
            started?;
            return Err(EngineError::HostError(format!(
                "{name} started, but its Tailscale key file could not be emptied: {e}"
            )));
        }
        started?;
        if key_handed_over {
            self.tailscale_keys
                .clear_pending(name)
                .map_err(io("clearing the container's Tailscale enrolment mark"))?;
        }
        self.machined
            .wait_registered(name, Duration::from_secs(30))
            .await?;
        self.refresh_view(name).await;
        Ok(())
    }

    /// With an OAuth client, mints `name`'s own key for its enrolment, once:
    /// at its create's start (single use, pre-authorized, short-lived,
    /// tagged with its owner). Later starts hand over nothing and the node
    /// uses its saved login: a key at every start would let an owner enrol
    /// a device of their own with each restart. A create fails when no key
    /// can be had (nothing is left half-made). Returns whether a key was
    /// handed over.
    async fn hand_over_tailscale_key(&self, name: &str) -> Result<bool, EngineError> {
        let Some(record) = self.records.get(name).map_err(io("reading a record"))? else {
            return Ok(false);
        };
        let enrolling = record.phase == Phase::Creating || self.tailscale_keys.is_pending(name);
        if !record.spec.modules.iter().any(|m| m == "tailscale") || !enrolling {
            return Ok(false);
        }
        let Some(client) = self
            .cfg
            .tailscale_oauth()
            .map_err(EngineError::InvalidArgument)?
        else {
            return Ok(false);
        };
        let tag = crate::host::tailscale_api::owner_tag(
            &self.cfg.tailscale_tag_prefix,
            record.owner.as_str(),
        );
        let minted = client
            .mint_key(
                std::slice::from_ref(&tag),
                &format!("voxnix container {name}"),
            )
            .await;
        match minted {
            Ok(key) => {
                tracing::info!(container = name, key_id = %key.id, %tag, "minted a single-use Tailscale key for its enrolment");
                self.tailscale_keys
                    .hand_over(name, key.secret())
                    .map_err(io("writing the container's Tailscale key"))?;
                Ok(true)
            }
            Err(e) => Err(EngineError::HostError(format!(
                "cannot get {name} a Tailscale key of its own: {e}; the administrator checks the \
                 OAuth client (scope auth_keys, allowed to tag {tag})"
            ))),
        }
    }

    async fn stop_unit(&self, name: &str) -> Result<(), EngineError> {
        let unit = container_unit(name);
        self.expect_stop(name);
        self.systemd
            .run_job(
                JobKind::Stop,
                &unit,
                self.timeout(self.cfg.stop_timeout_secs),
            )
            .await?;
        // nspawn's machine can outlive the unit briefly; make sure it is gone.
        if self.machined.info(name).await?.is_some() {
            self.machined.terminate(name).await?;
            self.machined
                .wait_removed(name, Duration::from_secs(30))
                .await?;
        }
        self.refresh_view(name).await;
        Ok(())
    }

    async fn wait_for_ipv4(&self, name: &str, timeout: Duration) -> Vec<IpAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            let addrs = self.machined.addresses(name).await.unwrap_or_default();
            if addrs.iter().any(IpAddr::is_ipv4) || Instant::now() >= deadline {
                return addrs;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Undoes everything a create may have done, in reverse, each step
    /// idempotent (reconcile calls it after a crash at any point).
    pub(crate) async fn rollback_create(&self, name: &str) -> Result<(), EngineError> {
        let made = self
            .records
            .get(name)
            .map_err(io("reading the record"))?
            .filter(|r| r.workspace_made_by_create);
        self.remove_from_host(name).await?;
        if let Some(r) = made {
            self.drop_fresh_workspace(&r.owner, name).await;
        }
        // Leftovers that could not be removed (maybe why the create failed)
        // stay, and the next create of the name refuses it again.
        if let Err(e) = self.remove_leftovers(name) {
            tracing::warn!(container = name, "after a failed create: {e}");
        }
        self.records
            .remove(name)
            .map_err(io("removing the record"))?;
        if let Err(e) = self.checkpoints.remove(name) {
            tracing::warn!(container = name, "removing the checkpoints: {e}");
        }
        self.release_system(name);
        self.clear_expected(name);
        Ok(())
    }

    /// Stops the container and removes its conf, unit settings and build.
    async fn remove_from_host(&self, name: &str) -> Result<(), EngineError> {
        let unit = container_unit(name);
        let status = self.systemd.unit_status(&unit).await?;
        if !matches!(status.active_state.as_str(), "inactive" | "failed")
            || self.machined.info(name).await?.is_some()
        {
            self.stop_unit(name).await?;
        }
        fault::point("destroy:stopped");
        self.systemd.revert(&unit).await?;
        fault::point("destroy:reverted");
        // Never another tool's conf (e.g. a NixOS declarative container's,
        // a link into /etc/static): only voxnix's, or nothing.
        let foreign = self.confs.state(name, "") == ConfState::Foreign;
        if foreign {
            tracing::warn!(
                container = name,
                "its conf file was not written by voxnix; left in place"
            );
        } else {
            self.confs
                .remove(name)
                .map_err(io("removing the conf file"))?;
        }
        fault::point("destroy:conf-removed");
        self.personal
            .remove(name)
            .map_err(io("removing the container's personal settings"))?;
        self.tailscale_keys
            .remove(name)
            .map_err(io("removing the container's Tailscale key file"))?;
        self.systemd.reload().await?;
        self.systemd.reset_failed(&unit).await?;
        self.builder.remove(name).await?;
        Ok(())
    }

    /// Removes the container's root and GC roots: the next container of this
    /// name, whoever owns it, must start from a fresh root.
    fn remove_leftovers(&self, name: &str) -> Result<(), EngineError> {
        self.leftovers.remove(name).map_err(|e| {
            EngineError::HostError(format!("cannot remove what '{name}' left on the host: {e}"))
        })
    }

    /// Clears what an earlier container of this name left (a crash before
    /// its destroy finished, a hand-made container): a create starts from a
    /// fresh root, or refuses the name.
    fn clear_leftovers(&self, op: &str, name: &str) -> Result<(), EngineError> {
        let found = self.leftovers.of(name);
        if found.is_empty() {
            return Ok(());
        }
        self.ops.progress(
            op,
            "cleaning",
            &format!("removing what an earlier '{name}' left on the host"),
        );
        self.leftovers.remove(name).map_err(|e| {
            EngineError::Conflict(format!(
                "an earlier container named '{name}' left files on the host that cannot be \
                 removed ({e}); an administrator must remove them before the name can be used \
                 again, or choose another name"
            ))
        })
    }

    // ----- other lifecycle operations ----------------------------------------

    pub async fn start(&self, scope: &Scope, name: &str) -> Result<(), EngineError> {
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        self.ensure_conf(&record).await?;
        record.begin("start");
        self.records
            .put(&record)
            .map_err(io("writing the record"))?;
        fault::point("start:begun");
        let result = self.start_unit(name).await;
        fault::point("start:started");
        self.finish_record(record, &result)?;
        result
    }

    pub async fn stop(&self, scope: &Scope, name: &str) -> Result<(), EngineError> {
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        record.begin("stop");
        self.records
            .put(&record)
            .map_err(io("writing the record"))?;
        fault::point("stop:begun");
        let result = self.stop_unit(name).await;
        if result.is_ok() {
            // nspawn's forwarding went with the run.
            record.released_host_ports.clear();
        }
        fault::point("stop:stopped");
        self.finish_record(record, &result)?;
        result
    }

    /// Stop, then start: more robust than RestartUnit for nspawn containers,
    /// whose machine can linger past the unit's stop (nixpkgs#43652).
    pub async fn restart(&self, scope: &Scope, name: &str) -> Result<(), EngineError> {
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        self.ensure_conf(&record).await?;
        record.begin("restart");
        self.records
            .put(&record)
            .map_err(io("writing the record"))?;
        let result = match self.stop_unit(name).await {
            Ok(()) => {
                // nspawn's forwarding went with the run; the next one
                // forwards what the conf says now.
                record.released_host_ports.clear();
                self.start_unit(name).await
            }
            Err(e) => Err(e),
        };
        self.finish_record(record, &result)?;
        result
    }

    pub async fn destroy(&self, scope: &Scope, name: &str) -> Result<(), EngineError> {
        self.visible(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut record = self.visible(scope, name)?;
        if record.phase == Phase::Creating {
            return Err(EngineError::Busy(format!(
                "'{name}' is still being created; try again when it is done"
            )));
        }
        record.phase = Phase::Destroying;
        record.begin("destroy");
        self.records
            .put(&record)
            .map_err(io("writing the record"))?;
        fault::point("destroy:marked");
        self.finish_destroy(&record).await
    }

    /// The rest of a destroy, also used by reconcile to finish an interrupted one.
    pub(crate) async fn finish_destroy(&self, record: &Record) -> Result<(), EngineError> {
        if record.spec.modules.iter().any(|m| m == "tailscale") {
            self.tailscale_logout(&record.name).await;
        }
        if self.confs.state(&record.name, "") == ConfState::Foreign {
            // Another tool's container has the name now (its conf, unit,
            // root and profile): voxnix forgets its own and touches none.
            tracing::warn!(
                container = %record.name,
                "its conf is another tool's: only voxnix's record and workspace are removed"
            );
        } else {
            self.remove_from_host(&record.name).await?;
            self.remove_leftovers(&record.name)?;
        }
        if record.spec.workspace {
            // Nothing is lost by surprise: the workspace is kept (with its
            // snapshots) for the retention period unless purged explicitly.
            self.storage
                .retire_workspace(&record.owner, &record.name)
                .await?;
        }
        self.records
            .remove(&record.name)
            .map_err(io("removing the record"))?;
        let had_host_ports = record.exposed.iter().any(|e| e.host_port.is_some())
            || !record.released_host_ports.is_empty();
        if had_host_ports && let Err(e) = self.sync_expose_filter().await {
            // The machine is gone, so is its veth: the old filter's
            // elements for it match nothing until a container of that name.
            tracing::warn!(container = %record.name, "reloading the expose filter: {e}");
        }
        // The next container of this name starts with no history (the file
        // names its container too, so a leftover one would not be read).
        if let Err(e) = self.checkpoints.remove(&record.name) {
            tracing::warn!(container = %record.name, "removing the checkpoints: {e}");
        }
        self.release_system(&record.name);
        self.view.forget(&record.name);
        self.clear_expected(&record.name);
        self.emit(Event::ContainerRemoved {
            name: record.name.clone(),
        });
        self.emit(Event::ContainerChanged {
            name: record.name.clone(),
            owner: record.owner.clone(),
            state: "destroyed".into(),
            expected: true,
        });
        Ok(())
    }

    /// Removes the node from the tailnet before its container goes, so no
    /// stale machine is left there. Best effort: a stopped container or an
    /// unreachable control server is logged, never fatal.
    async fn tailscale_logout(&self, name: &str) {
        let Ok(Some(machine)) = self.machined.info(name).await else {
            tracing::info!(
                container = name,
                "not running: no tailscale logout before destroy"
            );
            return;
        };
        let req = exec::ExecRequest {
            argv: vec!["tailscale".into(), "logout".into()],
            timeout: Duration::from_secs(15),
            max_output: 4096,
        };
        match exec::exec_in_container(&self.cfg.proc_root, machine.leader, &req).await {
            Ok(r) if r.exit_code == 0 => {
                tracing::info!(container = name, "logged out of the tailnet")
            }
            Ok(r) => tracing::info!(
                container = name,
                code = r.exit_code,
                "tailscale logout failed; destroying anyway"
            ),
            Err(e) => tracing::info!(
                container = name,
                "tailscale logout not possible ({e}); destroying anyway"
            ),
        }
    }

    fn ensure_ready(&self, record: &Record) -> Result<(), EngineError> {
        match record.phase {
            Phase::Ready => Ok(()),
            Phase::Creating => Err(EngineError::Busy(format!(
                "'{}' is still being created",
                record.name
            ))),
            Phase::Destroying => Err(EngineError::Busy(format!(
                "'{}' is being destroyed",
                record.name
            ))),
        }
    }

    fn finish_record(
        &self,
        mut record: Record,
        result: &Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        match result {
            Ok(()) => record.finish("ok"),
            Err(e) => record.finish(&format!("{}: {}", e.kind(), e.message())),
        }
        self.records.put(&record).map_err(io("writing the record"))
    }

    pub async fn exec(
        &self,
        scope: &Scope,
        name: &str,
        argv: Vec<String>,
        timeout_secs: u32,
    ) -> Result<exec::ExecResult, EngineError> {
        // Commands run for minutes: never on a read permit (see admission.rs).
        let _permit = self.admission.exec(scope)?;
        self.visible(scope, name)?;
        if argv.is_empty() {
            return Err(EngineError::InvalidArgument(
                "argv: give the command to run".into(),
            ));
        }
        if timeout_secs == 0 || u64::from(timeout_secs) > self.cfg.exec_max_timeout_secs {
            return Err(EngineError::InvalidArgument(format!(
                "timeout: {timeout_secs} s is out of range; use 1 to {} seconds",
                self.cfg.exec_max_timeout_secs
            )));
        }
        let Some(machine) = self.machined.info(name).await? else {
            return Err(EngineError::Busy(format!(
                "'{name}' is not running; start it first"
            )));
        };
        let req = exec::ExecRequest {
            argv,
            timeout: Duration::from_secs(u64::from(timeout_secs)),
            max_output: usize::try_from(self.cfg.exec_max_output_bytes).unwrap_or(usize::MAX),
        };
        exec::exec_in_container(&self.cfg.proc_root, machine.leader, &req)
            .await
            .map_err(|e| match e {
                exec::ExecError::Timeout(d) => EngineError::Timeout(format!(
                    "the command did not finish within {} s and was killed",
                    d.as_secs()
                )),
                exec::ExecError::InvalidArgument(m) => EngineError::InvalidArgument(m),
                exec::ExecError::NotRunning(m) => EngineError::Busy(m),
                exec::ExecError::CommandNotFound(m) => {
                    EngineError::InvalidArgument(format!("argv: {m}"))
                }
                other => EngineError::HostError(other.to_string()),
            })
    }

    pub fn operation(&self, scope: &Scope, id: &str) -> Result<OperationSnapshot, EngineError> {
        match self.ops.get(id) {
            Some(s) if scope.allows(&s.owner) => Ok(s),
            _ => Err(EngineError::NotFound(format!(
                "no operation with id '{id}'"
            ))),
        }
    }

    /// Owner of `name`, for the API's per-container objects.
    pub fn owner_of(&self, name: &str) -> Option<Owner> {
        self.records.get(name).ok().flatten().map(|r| r.owner)
    }

    /// Names of every container with a record.
    pub fn names(&self) -> Vec<String> {
        self.records.all().into_keys().collect()
    }

    // ----- update ------------------------------------------------------------

    /// Rebuilds a container with a new module list and switches it in place
    /// (NixOS containers switch with switch-to-configuration on reload),
    /// keeping its workspace (snapshotted first). Returns the operation id.
    pub async fn update(
        self: &Arc<Self>,
        scope: &Scope,
        name: &str,
        modules: Vec<String>,
    ) -> Result<String, EngineError> {
        let record = self.visible(scope, name)?;
        self.ensure_ready(&record)?;
        // An update writes the conf: never over another tool's, and not
        // one removed outside voxnix (repair brings that back first).
        self.refuse_unless_conf_is_ours(&record)?;
        // Back to the client form of the spec, with the new modules, and
        // through the same validation as a create.
        let mut client = record.spec.to_client_json();
        client["modules"] = serde_json::json!(modules);
        let mut new_spec = spec::parse_spec(&client.to_string(), &self.known_modules)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        // The limits it was created with stay; only missing ones get the
        // defaults (a container from before they existed).
        self.apply_limits(&mut new_spec.resources, false)?;
        refuse_dropping_a_served_tailnet(&record, &new_spec)?;
        let op = self.ops.begin("update", name, &record.owner);
        let engine = self.clone();
        let (op_id, name) = (op.clone(), name.to_string());
        let asked = (record.owner.clone(), record.created_at);
        let by = undo::actor(scope);
        tokio::spawn(async move {
            let result = engine.run_update(&op_id, &name, asked, &by, new_spec).await;
            engine.ops.finish(
                &op_id,
                result.map(|s| serde_json::json!({ "name": name, "state": s })),
            );
        });
        Ok(op)
    }

    async fn run_update(
        self: &Arc<Self>,
        op: &str,
        name: &str,
        (owner, created_at): (Owner, u64),
        by: &str,
        new_spec: ContainerSpec,
    ) -> Result<String, EngineError> {
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        // Checked again under the lock: while this update waited, the
        // container may have been destroyed and its name taken by another
        // owner, or be mid-destroy.
        let mut record = self
            .records
            .get(name)
            .map_err(io("reading the record"))?
            .filter(|r| r.owner == owner && r.created_at == created_at)
            .ok_or_else(|| EngineError::not_found(name))?;
        self.ensure_ready(&record)?;
        self.refuse_unless_conf_is_ours(&record)?;
        refuse_dropping_a_served_tailnet(&record, &new_spec)?;
        let previous = record.clone();
        record.begin("update");
        self.records
            .put(&record)
            .map_err(io("writing the record"))?;
        // The checkpoint `voxnix undo` goes back to.
        self.ops.progress(
            op,
            "checkpoint",
            "taking a checkpoint (workspace and system) before the update",
        );
        let why = format!(
            "before update: {} → {}",
            undo::modules_words(&record.spec.modules),
            undo::modules_words(&new_spec.modules)
        );
        let checkpoint = match self
            .take_checkpoint(&record, checkpoints::Kind::Update, by, &why, None)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let mut restored = previous;
                restored.finish(&format!("update refused: {}", e.message()));
                self.records
                    .put(&restored)
                    .map_err(io("writing the record"))?;
                return Err(e);
            }
        };
        fault::point("update:checkpointed");
        let progress = {
            let engine = self.clone();
            let op = op.to_string();
            move |line: &str| engine.ops.progress(&op, "building", line)
        };
        let result = async {
            let built = self.build_or_reuse(name, &new_spec, &progress).await?;
            let has_tailscale = |s: &ContainerSpec| s.modules.iter().any(|m| m == "tailscale");
            if has_tailscale(&new_spec) && !has_tailscale(&previous.spec) {
                // Its next start enrols it (below, at once when it runs).
                self.tailscale_keys
                    .mark_pending(name)
                    .map_err(io("marking the container for its Tailscale enrolment"))?;
            }
            record.spec = new_spec;
            record.system_path = built.system_path;
            record.drv_path = built.drv_path;
            let start_settings_changed =
                self.render_conf(&previous).ok() != self.render_conf(&record).ok();
            self.ops.progress(
                op,
                "configuring",
                "writing the container's conf and unit settings",
            );
            self.install(&record).await?;
            let running = self.machined.info(name).await?.is_some();
            if running && start_settings_changed {
                // Credentials, binds and devices are nspawn's start
                // arguments: switching in place would leave the running
                // container without them (e.g. an added git or ssh module
                // without its personal settings).
                self.ops.progress(
                    op,
                    "restarting",
                    "restarting the container: what it is started with changed",
                );
                self.stop_unit(name).await?;
                // The start reads the record (its modules) from the store.
                self.records
                    .put(&record)
                    .map_err(io("writing the record"))?;
                self.start_unit(name).await?;
            } else if running {
                self.ops.progress(
                    op,
                    "switching",
                    "switching the running container to the new system",
                );
                self.systemd
                    .run_job(
                        JobKind::Reload,
                        &container_unit(name),
                        self.timeout(self.cfg.start_timeout_secs),
                    )
                    .await?;
                // The system switched: another os-release, perhaps.
                self.view.forget_os_release(name);
            }
            Ok::<(), EngineError>(())
        }
        .await;
        // Kept when the update was made; gone when it was rolled back.
        self.settle_checkpoint(&record, checkpoint.id, result.is_ok(), &[])
            .await;
        match result {
            Ok(()) => {
                record.finish("ok");
                self.records
                    .put(&record)
                    .map_err(io("writing the record"))?;
                Ok(self.state_of(&record).await)
            }
            Err(e) => {
                // Back to what ran before: the previous generation and conf.
                self.ops.progress(
                    op,
                    "rolling-back",
                    &format!("update failed ({}); going back", e.kind()),
                );
                let mut restored = previous;
                restored.finish(&format!("update failed: {}: {}", e.kind(), e.message()));
                if let Err(rb) = self.install(&restored).await {
                    tracing::error!(
                        container = name,
                        "restoring the conf after a failed update: {rb}"
                    );
                }
                self.note_system_user(name, &restored.spec);
                self.records
                    .put(&restored)
                    .map_err(io("writing the record"))?;
                Err(e)
            }
        }
    }

    // ----- storage -----------------------------------------------------------

    /// Usage of the acting owner's storage, in total and per container.
    pub async fn storage_usage(
        &self,
        scope: &Scope,
        owner: &Owner,
    ) -> Result<serde_json::Value, EngineError> {
        let total = self.storage.owner_usage(owner).await?;
        let mut containers = Vec::new();
        for (name, r) in self.records.all() {
            if &r.owner == owner && scope.allows(&r.owner) && r.spec.workspace {
                let u = self.storage.container_usage(owner, &name).await.ok();
                let failed = self.schedule_failure(&name);
                let schedule = self.schedule_json(&r)?;
                containers.push(serde_json::json!({
                    "name": name, "usage": u, "human": u.map(|u| u.human()),
                    "schedule": schedule["schedule"], "own_schedule": schedule["own"],
                    "whose_schedule": schedule["whose"],
                    "schedule_failed": failed,
                }));
            }
        }
        // Workspaces of destroyed containers, each until it expires
        // (`u64::MAX`: until purged), and for how long a destroy keeps one.
        let kept: Vec<serde_json::Value> = if scope.allows(owner) {
            self.storage
                .kept(owner)
                .await?
                .into_iter()
                .map(|k| serde_json::json!({ "container": k.container, "id": k.id, "expires": k.expires }))
                .collect()
        } else {
            Vec::new()
        };
        Ok(serde_json::json!({
            "owner": owner.as_str(),
            "usage": total,
            "human": total.human(),
            "containers": containers,
            "kept": kept,
            "keep_days": self.storage.config().keep_days,
            "snapshot_schedule": self
                .storage
                .config()
                .tiers()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            "owner_schedule": self.owner_schedule_json(owner)?,
        }))
    }

    /// The checkpoint before a restore from snapshot `id` (which must exist:
    /// a mistyped id costs no checkpoint). The name's lock is held.
    async fn restore_checkpoint(
        &self,
        scope: &Scope,
        r: &Record,
        id: &str,
        why: &str,
    ) -> Result<checkpoints::Checkpoint, EngineError> {
        self.snapshot_exists(r, id).await?;
        self.take_checkpoint(
            r,
            checkpoints::Kind::Restore,
            &undo::actor(scope),
            why,
            None,
        )
        .await
    }

    /// Checked before a checkpoint is taken for a restore of `id`, so that a
    /// mistyped id costs no snapshot.
    async fn snapshot_exists(&self, r: &Record, id: &str) -> Result<(), EngineError> {
        crate::storage::names::check_snapshot_id(id)?;
        if self
            .storage
            .snapshots(&r.owner, &r.name)
            .await?
            .iter()
            .any(|s| s.id == id)
        {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!(
                "'{}' has no snapshot '{id}' (`voxnix snapshots {}` lists them)",
                r.name, r.name
            )))
        }
    }

    fn with_workspace(&self, scope: &Scope, name: &str) -> Result<Record, EngineError> {
        let r = self.visible(scope, name)?;
        if !r.spec.workspace {
            return Err(EngineError::InvalidArgument(format!(
                "'{name}' was created without a workspace"
            )));
        }
        Ok(r)
    }

    pub async fn snapshot(&self, scope: &Scope, name: &str) -> Result<Snapshot, EngineError> {
        // Visible first, so that another owner's busy container of the name
        // answers NotFound at once, not after its lock (no timing oracle);
        // checked again once the lock is held.
        self.with_workspace(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let r = self.with_workspace(scope, name)?;
        Ok(self.storage.snapshot(&r.owner, name, "manual").await?)
    }

    pub async fn snapshots(&self, scope: &Scope, name: &str) -> Result<Vec<Snapshot>, EngineError> {
        let r = self.with_workspace(scope, name)?;
        Ok(self.storage.snapshots(&r.owner, name).await?)
    }

    /// Brings a snapshot back; the container is stopped for it and started
    /// again if it was running. The state before is saved as a snapshot.
    pub async fn restore_snapshot(
        &self,
        scope: &Scope,
        name: &str,
        id: &str,
    ) -> Result<(), EngineError> {
        self.with_workspace(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let r = self.with_workspace(scope, name)?;
        self.ensure_ready(&r)?;
        let c = self
            .restore_checkpoint(scope, &r, id, &format!("before restoring snapshot {id}"))
            .await?;
        let done = self
            .while_stopped(&r, || self.storage.restore(&r.owner, name, id))
            .await;
        self.settle_checkpoint(&r, c.id, done.is_ok(), &[]).await;
        done
    }

    /// Brings one file or folder back from a snapshot into the workspace
    /// (`to`: where, default the same path), leaving the rest and the
    /// running container alone.
    pub async fn restore_path(
        &self,
        scope: &Scope,
        name: &str,
        id: &str,
        path: &str,
        to: &str,
    ) -> Result<crate::storage::PathRestored, EngineError> {
        self.with_workspace(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let r = self.with_workspace(scope, name)?;
        self.ensure_ready(&r)?;
        let to = if to.is_empty() { path } else { to };
        // Bad input costs no checkpoint.
        for (p, what) in [(path, "path"), (to, "to")] {
            crate::storage::path_restore::components(p, what)
                .map_err(|e| EngineError::InvalidArgument(e.0))?;
        }
        let why = format!("before bringing back {path} from snapshot {id}");
        let c = self.restore_checkpoint(scope, &r, id, &why).await?;
        let done = self
            .storage
            .restore_path(&r.owner, name, id, path, to)
            .await;
        self.settle_checkpoint(&r, c.id, done.is_ok(), &[]).await;
        Ok(done?)
    }

    /// What destroyed containers of `owner` left (kept workspaces).
    pub async fn kept(&self, owner: &Owner) -> Result<Vec<Kept>, EngineError> {
        Ok(self.storage.kept(owner).await?)
    }

    /// Removes the kept workspace of a destroyed container, explicitly.
    pub async fn purge(&self, owner: &Owner, name: &str) -> Result<u32, EngineError> {
        // Kept data is the owner's own (by owner and name): the name's lock
        // is needed only against this owner's own container of the name,
        // never another's (whose busy lock would tell its existence).
        let ours = self
            .records
            .get(name)
            .ok()
            .flatten()
            .is_some_and(|r| &r.owner == owner);
        let lock = self.lock_for(name);
        let _guard = if ours { Some(lock.lock().await) } else { None };
        let n = self.storage.purge_kept(owner, name).await?;
        if n == 0 {
            return Err(EngineError::NotFound(format!(
                "nothing is kept of a container named '{name}'"
            )));
        }
        Ok(n)
    }

    /// Puts the kept workspace of an earlier container of this name back into
    /// the (re-created) container; its current workspace is kept in turn.
    pub async fn restore_kept(&self, scope: &Scope, name: &str) -> Result<(), EngineError> {
        self.restore_kept_from(scope, name, name).await
    }

    /// Puts the kept workspace of the owner's destroyed container `from`
    /// into the container `name` (its current workspace is kept in turn).
    pub async fn restore_kept_from(
        &self,
        scope: &Scope,
        name: &str,
        from: &str,
    ) -> Result<(), EngineError> {
        spec::validate_name(from)
            .map_err(|e| EngineError::InvalidArgument(format!("from: {}", e.rule)))?;
        self.with_workspace(scope, name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let r = self.with_workspace(scope, name)?;
        self.ensure_ready(&r)?;
        if !self
            .storage
            .kept(&r.owner)
            .await?
            .iter()
            .any(|k| k.container == from)
        {
            return Err(EngineError::NotFound(format!(
                "nothing is kept of a container named '{from}'"
            )));
        }
        // No checkpoint: the workspace it replaces is kept in turn, with its
        // snapshots (`voxnix storage kept`), and comes back the same way.
        self.while_stopped(&r, || self.storage.restore_kept_from(&r.owner, name, from))
            .await
    }

    /// Runs `act` with the container stopped if it was running, and starts it
    /// again afterwards, also when `act` failed (its error is returned then).
    async fn while_stopped<T, E, F, Fut>(&self, record: &Record, act: F) -> Result<T, EngineError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        EngineError: From<E>,
    {
        let name = record.name.as_str();
        let was_running = self.machined.info(name).await?.is_some();
        if was_running {
            // Checked before it is stopped: it must be able to start again.
            self.ensure_conf(record).await?;
            self.stop_unit(name).await?;
        }
        let done = act().await;
        if was_running {
            self.start_unit(name).await?;
        }
        Ok(done?)
    }

    /// Takes the schedule's snapshot of each running container's workspace
    /// whose slot is due (storage.snapshot_schedule; the daemon calls this
    /// at start and every few minutes, so a slot missed while it was down
    /// runs once, and `due` keeps it to one an hour). A stopped container's
    /// workspace does not change, so it gets none (and its tiers keep what
    /// they have). A container in the middle of an operation is left for the
    /// next run. A full quota is a warning in the log, naming the owner and
    /// the container. Returns how many snapshots were taken.
    pub async fn run_snapshot_schedule(&self) -> Result<u32, EngineError> {
        let default = self.storage.config().tiers()?;
        let mut taken = 0;
        let mut seen = 0;
        for (name, _) in self.records.all() {
            let lock = self.lock_for(&name);
            let Ok(_guard) = lock.try_lock() else {
                tracing::debug!(container = %name, "schedule: busy, left for the next run");
                continue;
            };
            // Read again under the lock: it may have changed meanwhile.
            let Ok(Some(record)) = self.records.get(&name) else {
                continue;
            };
            if !record.spec.workspace || record.phase != Phase::Ready {
                continue;
            }
            let tiers = self.tiers_for(&record, default);
            if !tiers.any() || self.machined.info(&name).await?.is_none() {
                continue;
            }
            seen += 1;
            match self
                .storage
                .take_scheduled(&record.owner, &name, &tiers)
                .await
            {
                Ok(Some(s)) => {
                    tracing::info!(container = %name, snapshot = %s.id, "schedule: snapshot taken");
                    self.set_schedule_failure(&name, None);
                    taken += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        owner = %record.owner, container = %name,
                        "schedule: no snapshot this hour: {e}"
                    );
                    self.set_schedule_failure(&name, Some(e.to_string()));
                }
            }
        }
        tracing::info!(running = seen, taken, "schedule: run done");
        Ok(taken)
    }

    fn schedule_failure(&self, name: &str) -> Option<String> {
        self.schedule_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn set_schedule_failure(&self, name: &str, why: Option<String>) {
        let mut m = self
            .schedule_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match why {
            Some(w) => {
                m.insert(name.to_string(), w);
            }
            None => {
                m.remove(name);
            }
        }
    }

    /// Applies snapshot retention (count and age, the schedule's tiers);
    /// the daemon calls it hourly.
    pub async fn apply_retention(&self) -> Result<u32, EngineError> {
        let default = self.storage.config().tiers()?;
        // Every live container's tiers (its own, its owner's or the host's).
        let own: std::collections::HashMap<(Owner, String), crate::storage::tiers::Tiers> = self
            .records
            .all()
            .into_iter()
            .map(|(name, r)| {
                let t = self.tiers_for(&r, default);
                ((r.owner.clone(), name), t)
            })
            .collect();
        self.prune_system_cache();
        Ok(self
            .storage
            .apply_retention_with(records::now_secs(), &own)
            .await?)
    }
}

/// The user-facing state from the record's phase and systemd's view.
pub fn derive_state(phase: Phase, active_state: &str, machine_running: bool) -> String {
    match phase {
        Phase::Creating => "creating".into(),
        Phase::Destroying => "destroying".into(),
        Phase::Ready => match active_state {
            "active" | "reloading" if machine_running => "running".into(),
            "active" | "reloading" | "activating" => "starting".into(),
            "deactivating" => "stopping".into(),
            "failed" => "failed".into(),
            _ => "stopped".into(),
        },
    }
}

fn summary(
    r: &Record,
    active: &str,
    running: bool,
    addresses: &[IpAddr],
    conf: ConfState,
) -> ContainerSummary {
    ContainerSummary {
        name: r.name.clone(),
        owner: r.owner.to_string(),
        state: derive_state(r.phase, active, running),
        unit_state: active.to_string(),
        addresses: addresses.iter().map(IpAddr::to_string).collect(),
        modules: r.spec.modules.clone(),
        created_at: r.created_at,
        conf,
    }
}

/// What a person reads when a container's conf is not voxnix's, with what
/// to do about it.
pub fn conf_problem(name: &str, state: ConfState, path: &std::path::Path) -> String {
    match state {
        ConfState::Missing => format!(
            "'{name}' has no conf file ({}): it was removed outside voxnix (e.g. by \
             nixos-container destroy), and voxnix does not start a container without one; \
             destroy it, or repair it to write its conf again from voxnix's record",
            path.display()
        ),
        _ => format!(
            "'{name}'s conf file ({}) was not written by voxnix (another tool's, e.g. a NixOS \
             declarative container of the same name), and voxnix does not start it; remove \
             that file or that container, then repair '{name}', or destroy '{name}'",
            path.display()
        ),
    }
}

/// The unit properties voxnix sets on `container@NAME.service`: the TUN device
/// (tailscale and VPNs inside need it; NixOS's template closes devices) and the
/// spec's resource limits.
pub fn unit_properties(spec: &ContainerSpec) -> Vec<(String, zbus::OwnedVariant)> {
    use zbus::OwnedVariant as V;
    let mut props: Vec<(String, V)> = Vec::new();
    let devices: Vec<(String, String)> = vec![("/dev/net/tun".into(), "rwm".into())];
    if let Ok(v) = V::try_from(zbus::Variant::from(devices)) {
        props.push(("DeviceAllow".into(), v));
    }
    let r = &spec.resources;
    if let Some(m) = r.memory_max {
        props.push(("MemoryMax".into(), V::from(m)));
    }
    if let Some(w) = r.cpu_weight {
        props.push(("CPUWeight".into(), V::from(w)));
    }
    if let Some(q) = spec.cpu_quota_per_sec_usec() {
        props.push(("CPUQuotaPerSecUSec".into(), V::from(q)));
    }
    if let Some(t) = r.tasks_max {
        props.push(("TasksMax".into(), V::from(t)));
    }
    props
}
