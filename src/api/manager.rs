//! `org.voxnix.Voxnix1.Manager` at `/org/voxnix/Voxnix1`: every operation, with
//! the acting owner as an argument that the caller's identity bounds.

use std::sync::Arc;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use super::caller::{Access, Caller};
use super::error::{ApiError, to_json};
use crate::engine::records::ExposeTo;
use crate::engine::{Engine, EngineError, Owner, Scope};

fn tcp_port(what: &str, p: u32) -> Result<u16, EngineError> {
    u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
        EngineError::InvalidArgument(format!("{what}: {p} is not a TCP port; use 1 to 65535"))
    })
}

fn expose_to(to: &str) -> Result<Option<ExposeTo>, EngineError> {
    match to {
        "" => Ok(None),
        "host" => Ok(Some(ExposeTo::Host)),
        "tailnet" => Ok(Some(ExposeTo::Tailnet)),
        other => Err(EngineError::InvalidArgument(format!(
            "to: '{}' is not a place to expose to; use 'host' or 'tailnet'",
            other.chars().take(40).collect::<String>().escape_default()
        ))),
    }
}

pub struct Manager {
    pub engine: Arc<Engine>,
    pub access: Access,
    pub version: String,
}

impl Manager {
    async fn caller(&self, conn: &zbus::Connection, hdr: &Header<'_>) -> Result<Caller, ApiError> {
        Ok(Caller::identify(conn, hdr, &self.access).await?)
    }

    async fn scope(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        owner: &str,
    ) -> Result<(Scope, Owner), ApiError> {
        let caller = self.caller(conn, hdr).await?;
        Ok(caller.scope(owner, &self.access)?)
    }
}

/// The voxnix manager: create, list and operate containers. Every method takes
/// `owner`, the owner the caller acts for: root may name any owner or "" for
/// all; front ends must name one; other users act only as unix:UID.
#[zbus::interface(name = "org.voxnix.Voxnix1.Manager")]
impl Manager {
    /// Validates a JSON spec and starts creating the container; returns the
    /// operation id at once. Progress and the end come as OperationProgress and
    /// OperationFinished signals (subscribe before calling), or GetOperation.
    async fn create(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        spec_json: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (_, acting) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.create(acting, spec_json).await?)
    }

    /// The state of an operation, as JSON: id, kind, container, phase, message,
    /// done, ok, error_kind, error_message, result.
    async fn get_operation(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        id: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.operation(&scope, id)?)
    }

    /// The caller's containers as a JSON array of {name, owner, state,
    /// unit_state, addresses, modules, created_at}.
    async fn list(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.list(&scope).await?)
    }

    /// One container in detail, as JSON (see docs/dbus-api.md).
    async fn status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.status(&scope, name).await?)
    }

    /// Starts a stopped container and waits until machined has it.
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<(), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.start(&scope, name).await?)
    }

    /// Writes a container's conf file again from its record, after it was
    /// removed outside voxnix (never over a conf another tool wrote).
    async fn repair(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<(), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.repair(&scope, name).await?)
    }

    /// Stops a container and waits until it is gone from machined.
    async fn stop(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<(), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.stop(&scope, name).await?)
    }

    /// Stops and starts a container.
    async fn restart(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<(), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.restart(&scope, name).await?)
    }

    /// Rebuilds a container with a new module list and switches it in place,
    /// keeping its workspace (snapshotted first); returns an operation id
    /// like Create.
    async fn update(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        modules: Vec<String>,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.update(&scope, name, modules).await?)
    }

    /// Stops a container and removes it: conf, unit settings, build, record.
    async fn destroy(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<(), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.destroy(&scope, name).await?)
    }

    /// The last `lines` (1-1000) log lines of the container's own journal and
    /// its unit's host-side lines, merged by time, as a JSON array.
    async fn logs(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        lines: u32,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.logs(&scope, name, lines).await?)
    }

    /// Runs argv in the running container; returns the exit code (128+N when
    /// killed by signal N), stdout and stderr (bounded), and whether output was
    /// cut. The command is killed after timeout_secs.
    #[zbus(out_args("exit_code", "stdout", "stderr", "truncated"))]
    async fn exec(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        argv: Vec<String>,
        timeout_secs: u32,
    ) -> Result<(i32, Vec<u8>, Vec<u8>, bool), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        let r = self.engine.exec(&scope, name, argv, timeout_secs).await?;
        Ok((
            r.exit_code,
            r.stdout,
            r.stderr,
            r.stdout_truncated || r.stderr_truncated,
        ))
    }

    /// Storage used by the owner, in total and per container, as JSON:
    /// {owner, usage: {used, available, quota}, human, containers: [{name, usage, human}]}.
    async fn storage_usage(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (scope, acting) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.storage_usage(&scope, &acting).await?)
    }

    /// Snapshots the container's workspace now; returns the snapshot as JSON
    /// {id, created, reason, used}.
    async fn snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.snapshot(&scope, name).await?)
    }

    /// The container's workspace snapshots, oldest first, as a JSON array.
    async fn snapshots(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.snapshots(&scope, name).await?)
    }

    /// Restores a snapshot of the workspace (the container is stopped for it
    /// and started again if it ran; the state before is saved as a snapshot).
    async fn restore_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        id: &str,
    ) -> Result<(), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.restore_snapshot(&scope, name, id).await?)
    }

    /// Brings one file or folder (`path`, relative to the workspace) back
    /// from snapshot `id` to `to` (empty: the same path), which must not
    /// exist; the rest of the workspace and the running container are left
    /// alone. JSON {snapshot, path, to, files, bytes}.
    // Two of the eight are zbus's (the header and the connection).
    #[allow(clippy::too_many_arguments)]
    async fn restore_path(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        id: &str,
        path: &str,
        to: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.restore_path(&scope, name, id, path, to).await?)
    }

    /// Gives the container a snapshot schedule of its own (`hourly=24,
    /// daily=7,...`, each tier at most storage.snapshot_schedule_max),
    /// `off`, or `default` (the administrator's). JSON {name, schedule, own}.
    async fn set_schedule(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        schedule: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.set_schedule(&scope, name, schedule).await?)
    }

    /// Takes a checkpoint of the container now (workspace snapshot and
    /// system generation). `kind`: `manual` (or "") or `command` (a front
    /// end, before a command the person confirmed); `why`: one line. JSON
    /// {id, at, by, kind, why, snapshot, system, modules, undoes}.
    async fn checkpoint(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        kind: &str,
        why: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.checkpoint(&scope, name, kind, why).await?)
    }

    /// The container's checkpoints, oldest first, as a JSON array of
    /// {id, at, by, kind, why, snapshot, system, modules, undoes}.
    async fn history(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.history(&scope, name)?)
    }

    /// What Undo would do, changing nothing: JSON {name, target,
    /// modules_now, modules_then, workspace, restarts}. `checkpoint` 0: the
    /// state before the last change.
    async fn plan_undo(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        checkpoint: u64,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.plan_undo(&scope, name, checkpoint).await?)
    }

    /// Puts the container back to a checkpoint (0: the state before the
    /// last change; after an undo, further back): modules and system
    /// switched back, workspace restored. A checkpoint of the present is
    /// taken first (`safety` in the answer; undo to it to undo the undo).
    /// JSON: the plan and {safety}.
    async fn undo(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        checkpoint: u64,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.undo(&scope, name, checkpoint).await?)
    }

    /// The acting owner's snapshot schedule for all their containers that
    /// have none of their own: tiers (each at most
    /// storage.snapshot_schedule_max), `off`, or `default` (the
    /// administrator's). JSON {owner, schedule, own}.
    async fn set_owner_schedule(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        owner: &str,
        schedule: &str,
    ) -> Result<String, ApiError> {
        let (_, acting) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.set_owner_schedule(&acting, schedule)?)
    }

    /// Workspaces kept from destroyed containers of the acting owner, as a
    /// JSON array of {owner, container, id, snapshot, expires}.
    async fn kept(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (_, acting) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.kept(&acting).await?)
    }

    /// Deletes the kept workspace of a destroyed container, for good.
    async fn purge(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<u32, ApiError> {
        let (_, acting) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.purge(&acting, name).await?)
    }

    /// Puts the kept workspace of an earlier container of this name into the
    /// (re-created) container.
    async fn restore_kept(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<(), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.restore_kept(&scope, name).await?)
    }

    /// Puts the kept workspace of the owner's destroyed container `from`
    /// into the container `name` (when someone else took `from`'s name).
    async fn restore_kept_from(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        from: &str,
        owner: &str,
    ) -> Result<(), ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        Ok(self.engine.restore_kept_from(&scope, name, from).await?)
    }

    /// Registers an OpenSSH public key (one line, as in a .pub file) for
    /// the owner: root logins of every container of theirs with the ssh
    /// module take it, the running ones at once. As JSON: {keys, changed,
    /// applied_to, at_next_start}.
    async fn add_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        key: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (_, acting) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.add_key(&acting, key).await?)
    }

    /// The owner's registered keys, as a JSON array of {line, fingerprint,
    /// algorithm, comment, added_at}.
    async fn keys(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (_, acting) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.keys(&acting)?)
    }

    /// Removes the owner's keys that `which` names (a number in Keys'
    /// order from 1, a fingerprint, or a comment), also from the running
    /// containers. JSON as AddKey's.
    async fn remove_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        which: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (_, acting) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.remove_key(&acting, which).await?)
    }

    /// How to reach a running container with ssh, as JSON: {name, via,
    /// alias, host_name, port, user, proxy_jump, host_key, known_hosts,
    /// ssh_config, warning}.
    async fn connect(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        to_json(&self.engine.connect(&scope, name).await?)
    }

    /// Shares a container's TCP port: `to` is "host" (a host port from the
    /// administrator's range, `host_port` or 0 for any free one; forwarded
    /// from the container's next start) or "tailnet" (Tailscale Serve in the
    /// running container). As JSON: {name, exposure, pending_restart}.
    // Two of the eight are zbus's (the header and the connection).
    #[allow(clippy::too_many_arguments)]
    async fn expose(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        port: u32,
        to: &str,
        host_port: u32,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        let to = expose_to(to)?.unwrap_or(ExposeTo::Host);
        let port = tcp_port("port", port)?;
        let host_port = match host_port {
            0 => None,
            p => Some(tcp_port("host_port", p)?),
        };
        to_json(
            &self
                .engine
                .expose(&scope, name, port, to, host_port)
                .await?,
        )
    }

    /// Stops sharing a port (`to`: "host", "tailnet", or "" for whichever
    /// it is). JSON as Expose's.
    async fn unexpose(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: &str,
        owner: &str,
        port: u32,
        to: &str,
    ) -> Result<String, ApiError> {
        let (scope, _) = self.scope(conn, &hdr, owner).await?;
        let to = expose_to(to)?;
        let port = tcp_port("port", port)?;
        to_json(&self.engine.unexpose(&scope, name, port, to).await?)
    }

    /// The module library, as a JSON array of {name, description, settings,
    /// credentials} (just {name} when the library cannot be read).
    async fn modules(&self) -> Result<String, ApiError> {
        to_json(&self.engine.modules())
    }

    /// Administrators only (root, or a front end acting for an owner listed
    /// as an admin): what reconcile finds now (unmanaged conf files and
    /// machines, unreadable records), as JSON.
    async fn host_health(
        &self,
        owner: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<String, ApiError> {
        self.caller(conn, &hdr)
            .await?
            .require_admin(owner, &self.access)?;
        to_json(&self.engine.health().await)
    }

    /// The daemon's version.
    #[zbus(property)]
    async fn version(&self) -> String {
        self.version.clone()
    }

    /// A step of an operation: phase (building, configuring, starting,
    /// waiting-for-address, ready, rolling-back) and a line for people.
    #[zbus(signal)]
    pub async fn operation_progress(
        emitter: &SignalEmitter<'_>,
        id: &str,
        container: &str,
        phase: &str,
        message: &str,
    ) -> zbus::Result<()>;

    /// The end of an operation: ok, or the error's kind and message; on
    /// success result is the JSON result (for create: name, owner, state, addresses).
    #[zbus(signal)]
    pub async fn operation_finished(
        emitter: &SignalEmitter<'_>,
        id: &str,
        container: &str,
        ok: bool,
        error_kind: &str,
        error_message: &str,
        result: &str,
    ) -> zbus::Result<()>;

    /// A container's state changed; expected is false when nobody asked for it
    /// (a crash, an OOM kill, a stop from outside voxnix).
    #[zbus(signal)]
    pub async fn container_state_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        owner: &str,
        state: &str,
        expected: bool,
    ) -> zbus::Result<()>;
}
