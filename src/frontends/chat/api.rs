//! What the chat front ends ask of the daemon, scoped to one owner.
//!
//! [`Daemon`] is the daemon's API as the chat needs it; [`DbusDaemon`] is the
//! real one (the D-Bus client). Every method takes the [`Owner`] the front end
//! decided (`telegram:<chat id>`, `unix:<uid>`); the agent's tools never see or
//! choose it, and the daemon checks it against the caller anyway.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::client::{ManagerProxy, error_parts};

use super::secret::redact;

/// Whom a chat acts for. Built only by the front end, from who is talking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(String);

impl Owner {
    /// A Telegram chat: `telegram:<chat id>`.
    pub fn telegram(chat_id: i64) -> Owner {
        Owner(format!("telegram:{chat_id}"))
    }

    /// A local user: `unix:<uid>`.
    pub fn unix(uid: u32) -> Owner {
        Owner(format!("unix:{uid}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of a failure: the daemon's typed errors, plus the two ways the
/// daemon can be out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    Conflict,
    AccessDenied,
    BuildFailed,
    QuotaExceeded,
    Busy,
    Timeout,
    HostError,
    /// The bus or the daemon cannot be reached.
    Unreachable,
    /// The daemon answered something this front end does not understand.
    Protocol,
    /// The daemon does not offer this method (an older daemon).
    Unsupported,
}

impl ErrorKind {
    /// From the short name of a D-Bus error (`NotFound`, ...).
    pub fn from_name(name: &str) -> ErrorKind {
        match name {
            "InvalidArgument" => ErrorKind::InvalidArgument,
            "NotFound" => ErrorKind::NotFound,
            "Conflict" => ErrorKind::Conflict,
            "AccessDenied" => ErrorKind::AccessDenied,
            "BuildFailed" => ErrorKind::BuildFailed,
            "QuotaExceeded" => ErrorKind::QuotaExceeded,
            "Busy" => ErrorKind::Busy,
            "Timeout" => ErrorKind::Timeout,
            "HostError" => ErrorKind::HostError,
            "UnknownMethod" | "UnknownInterface" | "UnknownObject" => ErrorKind::Unsupported,
            _ => ErrorKind::Unreachable,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::AccessDenied => "AccessDenied",
            ErrorKind::BuildFailed => "BuildFailed",
            ErrorKind::QuotaExceeded => "QuotaExceeded",
            ErrorKind::Busy => "Busy",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::HostError => "HostError",
            ErrorKind::Unreachable => "Unreachable",
            ErrorKind::Protocol => "Protocol",
            ErrorKind::Unsupported => "Unsupported",
        }
    }

    /// What a person can do about it.
    pub fn advice(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "Fix the request and try again.",
            ErrorKind::NotFound => "You have no container of that name; /list shows yours.",
            ErrorKind::Conflict => {
                "Something is in the way (a name taken, a file voxnix did not write); /status says more."
            }
            ErrorKind::AccessDenied => "This is not allowed for you here.",
            ErrorKind::BuildFailed => {
                "Check the module names (/modules); the administrator can see the build log."
            }
            ErrorKind::QuotaExceeded => "Destroy a container you no longer need, then try again.",
            ErrorKind::Busy => {
                "The container is being created or destroyed, or is not running; wait a moment or start it first."
            }
            ErrorKind::Timeout => {
                "It took too long. Try again; if it keeps happening, tell the administrator."
            }
            ErrorKind::HostError => {
                "The server had a problem. Try again later; the administrator can see the details in the log."
            }
            ErrorKind::Unreachable => {
                "The voxnix service is not reachable right now. Try again in a minute."
            }
            ErrorKind::Protocol => {
                "The voxnix service answered something unexpected; the administrator can see the details in the log."
            }
            ErrorKind::Unsupported => "This server does not offer that yet.",
        }
    }

    /// Whether the daemon's own message helps a person (it names the field and
    /// the rule, or the limit). Other kinds' messages are for the log.
    fn message_is_for_people(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidArgument
                | ErrorKind::QuotaExceeded
                | ErrorKind::Conflict
                | ErrorKind::Busy
                | ErrorKind::NotFound
        )
    }
}

/// A failed call: its kind and the daemon's message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct ApiFailure {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiFailure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiFailure {
            kind,
            message: message.into(),
        }
    }

    /// From a D-Bus error, by its name (`org.voxnix.Voxnix1.Error.NotFound`).
    pub fn from_bus(e: &zbus::Error) -> Self {
        let (name, message) = error_parts(e);
        let kind = if name == "AccessDenied" && message.contains("Rejected send message") {
            // The bus itself refused: this process is not in the front-end group.
            ErrorKind::Unreachable
        } else {
            ErrorKind::from_name(&name)
        };
        ApiFailure::new(kind, redact(&message))
    }

    /// A plain summary for a person: what failed (`action`, e.g. "start dev")
    /// and what they can do. The details go to the log.
    pub fn summary(&self, action: &str) -> String {
        tracing::warn!(action, kind = self.kind.as_str(), message = %redact(&self.message), "request failed");
        let mut s = format!("Could not {action}");
        let said = self.kind.message_is_for_people() && !self.message.is_empty();
        if said {
            s.push_str(": ");
            s.push_str(self.message.trim_end_matches('.'));
            s.push('.');
        } else {
            s.push('.');
        }
        // A conflict's message already says what to do (choose another
        // name, repair, remove what is in the way): not said twice.
        if !(said && self.kind == ErrorKind::Conflict) {
            s.push(' ');
            s.push_str(self.kind.advice());
        }
        s
    }

    /// As `summary`, for requests whose daemon messages say what to do
    /// themselves (keys, ports): the kind's advice, written for containers
    /// ("no container of that name"), is left out when the message is shown.
    pub fn summary_as_told(&self, action: &str) -> String {
        if self.kind.message_is_for_people() && !self.message.is_empty() {
            tracing::warn!(action, kind = self.kind.as_str(), message = %redact(&self.message), "request failed");
            format!(
                "Could not {action}: {}.",
                self.message.trim_end_matches('.')
            )
        } else {
            self.summary(action)
        }
    }

    /// What the model is told: the kind, the daemon's message when it helps,
    /// and what to tell the person.
    pub fn for_model(&self) -> Value {
        tracing::info!(kind = self.kind.as_str(), message = %redact(&self.message), "tool call failed");
        let mut v = serde_json::json!({
            "ok": false,
            "error": self.kind.as_str(),
            "what_to_do": self.kind.advice(),
        });
        if self.kind.message_is_for_people() {
            v["message"] = Value::String(self.message.clone());
        }
        v
    }
}

/// One container as the list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub modules: Vec<String>,
}

/// A module of the library.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a create asks for (the owner is never part of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<String>,
}

/// A step of a running create.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub phase: String,
    pub message: String,
}

/// A finished create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The end of a command run in a container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

type R<T> = Result<T, ApiFailure>;

/// The daemon's API as the chat front ends use it.
pub trait Daemon: Send + Sync + 'static {
    fn list(&self, owner: &Owner) -> impl Future<Output = R<Vec<ContainerInfo>>> + Send;
    /// Creates and waits for the end, sending each step to `progress`.
    fn create(
        &self,
        owner: &Owner,
        request: &CreateRequest,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> impl Future<Output = R<Created>> + Send;
    fn start(&self, owner: &Owner, name: &str) -> impl Future<Output = R<()>> + Send;
    fn stop(&self, owner: &Owner, name: &str) -> impl Future<Output = R<()>> + Send;
    fn restart(&self, owner: &Owner, name: &str) -> impl Future<Output = R<()>> + Send;
    fn destroy(&self, owner: &Owner, name: &str) -> impl Future<Output = R<()>> + Send;
    /// Writes a container's conf again from its record (`Repair`).
    fn repair(&self, owner: &Owner, name: &str) -> impl Future<Output = R<()>> + Send;
    /// Puts the kept workspace of an earlier container of this name into
    /// the container (`RestoreKept`).
    fn restore_kept(
        &self,
        owner: &Owner,
        name: &str,
        from: &str,
    ) -> impl Future<Output = R<()>> + Send;
    /// The daemon's status JSON.
    fn status(&self, owner: &Owner, name: &str) -> impl Future<Output = R<Value>> + Send;
    /// The daemon's log lines JSON (an array).
    fn logs(&self, owner: &Owner, name: &str, lines: u32) -> impl Future<Output = R<Value>> + Send;
    fn exec(
        &self,
        owner: &Owner,
        name: &str,
        argv: &[String],
        timeout_secs: u32,
    ) -> impl Future<Output = R<ExecOutput>> + Send;
    fn modules(&self) -> impl Future<Output = R<Vec<ModuleInfo>>> + Send;
    /// The owner's storage use (the daemon's JSON).
    fn storage_usage(&self, owner: &Owner) -> impl Future<Output = R<Value>> + Send;
    /// Snapshots a container's workspace now (the daemon's JSON).
    fn snapshot(&self, owner: &Owner, name: &str) -> impl Future<Output = R<Value>> + Send;
    /// A container's workspace snapshots (the daemon's JSON array).
    fn snapshots(&self, owner: &Owner, name: &str) -> impl Future<Output = R<Value>> + Send;
    /// Registers an SSH public key of the owner (`AddKey`; the daemon's JSON).
    fn add_key(&self, owner: &Owner, key: &str) -> impl Future<Output = R<Value>> + Send;
    /// The owner's SSH keys (`Keys`; a JSON array).
    fn keys(&self, owner: &Owner) -> impl Future<Output = R<Value>> + Send;
    /// Removes keys by number, fingerprint or comment (`RemoveKey`).
    fn remove_key(&self, owner: &Owner, which: &str) -> impl Future<Output = R<Value>> + Send;
    /// How to get into a container with ssh (`Connect`; the daemon's JSON).
    fn connect(&self, owner: &Owner, name: &str) -> impl Future<Output = R<Value>> + Send;
    /// Shares a port of a container (`Expose`; `to` is `host` or `tailnet`,
    /// `host_port` 0 to let the daemon choose).
    fn expose(
        &self,
        owner: &Owner,
        name: &str,
        port: u16,
        to: &str,
        host_port: u16,
    ) -> impl Future<Output = R<Value>> + Send;
    /// Stops sharing it (`Unexpose`; `to` empty for whichever it is).
    fn unexpose(
        &self,
        owner: &Owner,
        name: &str,
        port: u16,
        to: &str,
    ) -> impl Future<Output = R<Value>> + Send;
    /// Sets a container's own snapshot schedule (`SetSchedule`).
    fn set_schedule(
        &self,
        owner: &Owner,
        name: &str,
        schedule: &str,
    ) -> impl Future<Output = R<Value>> + Send;
    /// Sets the owner's schedule for all their containers (`SetOwnerSchedule`).
    fn set_owner_schedule(
        &self,
        owner: &Owner,
        schedule: &str,
    ) -> impl Future<Output = R<Value>> + Send;
    /// Takes a checkpoint (`Checkpoint`): `kind` `command` before a command
    /// the person confirmed, with the command as `why`.
    fn checkpoint(
        &self,
        owner: &Owner,
        name: &str,
        kind: &str,
        why: &str,
    ) -> impl Future<Output = R<Value>> + Send;
    /// The container's checkpoints (`History`), oldest first.
    fn history(&self, owner: &Owner, name: &str) -> impl Future<Output = R<Value>> + Send;
    /// What an undo to checkpoint `to` (0: the default) would do (`PlanUndo`).
    fn plan_undo(
        &self,
        owner: &Owner,
        name: &str,
        to: u64,
    ) -> impl Future<Output = R<Value>> + Send;
    /// Goes back to checkpoint `to` (`Undo`).
    fn undo(&self, owner: &Owner, name: &str, to: u64) -> impl Future<Output = R<Value>> + Send;
    /// Administrators only: the daemon answers root, or a front end acting
    /// for an owner it lists as an admin (`admin_owners`, the Telegram admins).
    fn host_health(&self, owner: &Owner) -> impl Future<Output = R<Value>> + Send;
}

/// The daemon over D-Bus.
#[derive(Clone)]
pub struct DbusDaemon {
    proxy: ManagerProxy<'static>,
    create_timeout: Duration,
}

impl DbusDaemon {
    /// Connects to the system bus, or to `address`.
    pub async fn connect(address: Option<&str>) -> R<Self> {
        let builder = match address {
            Some(a) => zbus::connection::Builder::address(a),
            None => zbus::connection::Builder::system(),
        };
        let conn = builder
            .build()
            .await
            .map_err(|e| ApiFailure::new(ErrorKind::Unreachable, e.to_string()))?;
        Self::new(&conn).await
    }

    /// Uses an existing bus connection.
    pub async fn new(conn: &zbus::Connection) -> R<Self> {
        let proxy = ManagerProxy::new(conn)
            .await
            .map_err(|e| ApiFailure::from_bus(&e))?;
        Ok(DbusDaemon {
            proxy,
            create_timeout: Duration::from_secs(30 * 60),
        })
    }

    /// The raw proxy (for signals such as `ContainerStateChanged`).
    pub fn proxy(&self) -> &ManagerProxy<'static> {
        &self.proxy
    }
}

fn bus<T>(r: zbus::Result<T>) -> R<T> {
    r.map_err(|e| ApiFailure::from_bus(&e))
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> R<T> {
    serde_json::from_str(text).map_err(|e| {
        ApiFailure::new(
            ErrorKind::Protocol,
            format!("the daemon's answer is not the JSON expected: {e}"),
        )
    })
}

/// The module list: names, or objects with a name and a description.
pub fn parse_modules(v: &Value) -> Vec<ModuleInfo> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(n) => Some(ModuleInfo {
                name: n.clone(),
                description: None,
            }),
            Value::Object(o) => Some(ModuleInfo {
                name: o.get("name")?.as_str()?.to_string(),
                description: o
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }),
            _ => None,
        })
        .collect()
}

impl Daemon for DbusDaemon {
    async fn list(&self, owner: &Owner) -> R<Vec<ContainerInfo>> {
        json(&bus(self.proxy.list(owner.as_str()).await)?)
    }

    async fn create(
        &self,
        owner: &Owner,
        request: &CreateRequest,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> R<Created> {
        let spec = serde_json::to_string(request)
            .map_err(|e| ApiFailure::new(ErrorKind::Protocol, e.to_string()))?;
        // Subscribe before calling, so no step and no end can be missed.
        let (p, f) = tokio::join!(
            self.proxy.receive_operation_progress(),
            self.proxy.receive_operation_finished()
        );
        let mut p = bus(p)?;
        let mut f = bus(f)?;
        let op = bus(self.proxy.create(&spec, owner.as_str()).await)?;
        let deadline = tokio::time::Instant::now() + self.create_timeout;
        let mut poll = tokio::time::interval(Duration::from_secs(2));
        let outcome: Value = loop {
            tokio::select! {
                Some(sig) = p.next() => {
                    if let Ok(a) = sig.args()
                        && a.id == op
                    {
                        let _ = progress.send(Progress {
                            phase: a.phase.to_string(),
                            message: a.message.to_string(),
                        });
                    }
                }
                Some(sig) = f.next() => {
                    if let Ok(a) = sig.args()
                        && a.id == op
                    {
                        break serde_json::json!({
                            "ok": a.ok, "error_kind": a.error_kind, "error_message": a.error_message,
                            "result": serde_json::from_str::<Value>(a.result).unwrap_or(Value::Null),
                        });
                    }
                }
                _ = poll.tick() => {
                    // A safety net in case a signal was lost.
                    match self.proxy.get_operation(&op, owner.as_str()).await {
                        Ok(text) => {
                            if let Ok(v) = serde_json::from_str::<Value>(&text)
                                && v["done"] == Value::Bool(true)
                            {
                                break v;
                            }
                        }
                        Err(e) if error_parts(&e).0 == "NotFound" => {
                            return Err(ApiFailure::new(
                                ErrorKind::HostError,
                                "the daemon restarted during the create and rolled it back",
                            ));
                        }
                        Err(_) => {}
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ApiFailure::new(
                        ErrorKind::Timeout,
                        format!("the create of {} is still running; /list shows when it is done", request.name),
                    ));
                }
            }
        };
        if outcome["ok"] != Value::Bool(true) {
            let kind = outcome["error_kind"].as_str().unwrap_or("HostError");
            return Err(ApiFailure::new(
                ErrorKind::from_name(kind),
                outcome["error_message"].as_str().unwrap_or("").to_string(),
            ));
        }
        serde_json::from_value(outcome["result"].clone()).map_err(|e| {
            ApiFailure::new(
                ErrorKind::Protocol,
                format!("the create's result is not what was expected: {e}"),
            )
        })
    }

    async fn start(&self, owner: &Owner, name: &str) -> R<()> {
        bus(self.proxy.start(name, owner.as_str()).await)
    }

    async fn stop(&self, owner: &Owner, name: &str) -> R<()> {
        bus(self.proxy.stop(name, owner.as_str()).await)
    }

    async fn restart(&self, owner: &Owner, name: &str) -> R<()> {
        bus(self.proxy.restart(name, owner.as_str()).await)
    }

    async fn destroy(&self, owner: &Owner, name: &str) -> R<()> {
        bus(self.proxy.destroy(name, owner.as_str()).await)
    }

    async fn repair(&self, owner: &Owner, name: &str) -> R<()> {
        bus(self.proxy.repair(name, owner.as_str()).await)
    }

    async fn restore_kept(&self, owner: &Owner, name: &str, from: &str) -> R<()> {
        if from == name {
            bus(self.proxy.restore_kept(name, owner.as_str()).await)
        } else {
            bus(self
                .proxy
                .restore_kept_from(name, from, owner.as_str())
                .await)
        }
    }

    async fn status(&self, owner: &Owner, name: &str) -> R<Value> {
        json(&bus(self.proxy.status(name, owner.as_str()).await)?)
    }

    async fn logs(&self, owner: &Owner, name: &str, lines: u32) -> R<Value> {
        json(&bus(self.proxy.logs(name, owner.as_str(), lines).await)?)
    }

    async fn exec(
        &self,
        owner: &Owner,
        name: &str,
        argv: &[String],
        timeout_secs: u32,
    ) -> R<ExecOutput> {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (exit_code, out, err, truncated) = bus(self
            .proxy
            .exec(name, owner.as_str(), &args, timeout_secs)
            .await)?;
        Ok(ExecOutput {
            exit_code,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            truncated,
        })
    }

    async fn modules(&self) -> R<Vec<ModuleInfo>> {
        let v: Value = json(&bus(self.proxy.modules().await)?)?;
        Ok(parse_modules(&v))
    }

    async fn host_health(&self, owner: &Owner) -> R<Value> {
        json(&bus(self.proxy.host_health(owner.as_str()).await)?)
    }

    // An older daemon without the storage methods answers UnknownMethod,
    // which becomes "not offered yet" (ErrorKind::Unsupported).
    async fn storage_usage(&self, owner: &Owner) -> R<Value> {
        json(&bus(self.proxy.storage_usage(owner.as_str()).await)?)
    }

    async fn snapshot(&self, owner: &Owner, name: &str) -> R<Value> {
        json(&bus(self.proxy.snapshot(name, owner.as_str()).await)?)
    }

    async fn add_key(&self, owner: &Owner, key: &str) -> R<Value> {
        json(&bus(self.proxy.add_key(key, owner.as_str()).await)?)
    }

    async fn keys(&self, owner: &Owner) -> R<Value> {
        json(&bus(self.proxy.keys(owner.as_str()).await)?)
    }

    async fn remove_key(&self, owner: &Owner, which: &str) -> R<Value> {
        json(&bus(self.proxy.remove_key(which, owner.as_str()).await)?)
    }

    async fn connect(&self, owner: &Owner, name: &str) -> R<Value> {
        json(&bus(self.proxy.connect(name, owner.as_str()).await)?)
    }

    async fn expose(
        &self,
        owner: &Owner,
        name: &str,
        port: u16,
        to: &str,
        host_port: u16,
    ) -> R<Value> {
        let r = self
            .proxy
            .expose(
                name,
                owner.as_str(),
                u32::from(port),
                to,
                u32::from(host_port),
            )
            .await;
        json(&bus(r)?)
    }

    async fn unexpose(&self, owner: &Owner, name: &str, port: u16, to: &str) -> R<Value> {
        let r = self
            .proxy
            .unexpose(name, owner.as_str(), u32::from(port), to)
            .await;
        json(&bus(r)?)
    }

    async fn set_schedule(&self, owner: &Owner, name: &str, schedule: &str) -> R<Value> {
        json(&bus(self
            .proxy
            .set_schedule(name, owner.as_str(), schedule)
            .await)?)
    }

    async fn snapshots(&self, owner: &Owner, name: &str) -> R<Value> {
        json(&bus(self.proxy.snapshots(name, owner.as_str()).await)?)
    }

    async fn set_owner_schedule(&self, owner: &Owner, schedule: &str) -> R<Value> {
        json(&bus(self
            .proxy
            .set_owner_schedule(owner.as_str(), schedule)
            .await)?)
    }

    async fn checkpoint(&self, owner: &Owner, name: &str, kind: &str, why: &str) -> R<Value> {
        json(&bus(self
            .proxy
            .checkpoint(name, owner.as_str(), kind, why)
            .await)?)
    }

    async fn history(&self, owner: &Owner, name: &str) -> R<Value> {
        json(&bus(self.proxy.history(name, owner.as_str()).await)?)
    }

    async fn plan_undo(&self, owner: &Owner, name: &str, to: u64) -> R<Value> {
        json(&bus(self.proxy.plan_undo(name, owner.as_str(), to).await)?)
    }

    async fn undo(&self, owner: &Owner, name: &str, to: u64) -> R<Value> {
        json(&bus(self.proxy.undo(name, owner.as_str(), to).await)?)
    }
}

pub use crate::storage::human_bytes;

/// One line about storage use from the daemon's `StorageUsage` JSON
/// (`{usage: {used, available, quota}, human, containers: [{name, usage}]}`),
/// tolerant of missing parts.
pub fn storage_summary(v: &Value) -> String {
    let mut s = match v["human"].as_str() {
        Some(h) => h.to_string(),
        None => {
            let pick = |k: &str| v["usage"][k].as_u64().map(human_bytes);
            match (pick("used"), pick("quota"), pick("available")) {
                (Some(u), Some(q), Some(a)) => format!("{u} used of {q} ({a} available)"),
                (Some(u), Some(q), None) => format!("{u} used of {q}"),
                (Some(u), None, Some(a)) => format!("{u} used ({a} available)"),
                (Some(u), None, None) => format!("{u} used"),
                _ => return v.to_string(),
            }
        }
    };
    let per: Vec<String> = v["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let used = c["usage"]["used"].as_u64()?;
            Some(format!("{} {}", c["name"].as_str()?, human_bytes(used)))
        })
        .collect();
    if !per.is_empty() {
        s.push_str("; per container: ");
        s.push_str(&per.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_built_not_parsed() {
        assert_eq!(Owner::telegram(-100).as_str(), "telegram:-100");
        assert_eq!(Owner::unix(1000).as_str(), "unix:1000");
    }

    #[test]
    fn summaries_say_what_and_what_to_do() {
        let f = ApiFailure::new(ErrorKind::NotFound, "no container 'x'");
        let s = f.summary("start x");
        assert!(s.starts_with("Could not start x: no container 'x'."), "{s}");
        assert!(s.contains("/list"), "{s}");
        let f = ApiFailure::new(
            ErrorKind::HostError,
            "systemd: job failed at /etc/secret/path",
        );
        let s = f.summary("start x");
        assert!(
            !s.contains("/etc/secret/path"),
            "host details stay in the log: {s}"
        );
        assert!(f.for_model().get("message").is_none());
        // A taken name is said once.
        let f = ApiFailure::new(
            ErrorKind::Conflict,
            "a container named 'dev' already exists; choose another name",
        );
        assert_eq!(
            f.summary("create dev"),
            "Could not create dev: a container named 'dev' already exists; choose another name."
        );
    }

    #[test]
    fn storage_is_summarised_from_whatever_is_there() {
        let v = serde_json::json!({"usage": {"used": 1073741824u64, "available": 9663676416u64, "quota": 10737418240u64},
                                   "containers": [{"name": "dev", "usage": {"used": 1048576u64}}]});
        assert_eq!(
            storage_summary(&v),
            "1.0 GiB used of 10.0 GiB (9.0 GiB available); per container: dev 1.0 MiB"
        );
        let v = serde_json::json!({"human": "1 GiB used, no quota", "containers": [{"name": "a", "usage": null}]});
        assert_eq!(storage_summary(&v), "1 GiB used, no quota");
        assert_eq!(
            ApiFailure::from_bus(&zbus::Error::MethodError(
                zbus::names::OwnedErrorName::try_from("org.freedesktop.DBus.Error.UnknownMethod")
                    .unwrap(),
                Some("no such method".into()),
                zbus::message::Message::method_call("/", "x")
                    .build(&())
                    .unwrap(),
            ))
            .kind,
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn modules_as_names_or_objects() {
        let v = serde_json::json!(["git", {"name": "fish", "description": "the fish shell"}, 3]);
        let m = parse_modules(&v);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].description.as_deref(), Some("the fish shell"));
    }
}
