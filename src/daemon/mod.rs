//! `voxnix daemon`: connects to the system bus, reconciles, serves the API,
//! and tells systemd how it is doing (sd-notify readiness, status, watchdog).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use thiserror::Error;
use zbus::fdo::RequestNameFlags;

use crate::api::caller::Access;
use crate::api::container::Container;
use crate::api::manager::Manager;
use crate::api::{BUS_NAME, MANAGER_PATH, container_path};
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineError, Event};

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub config: PathBuf,
    /// Allows the sandbox's host-image builder.
    pub sandbox: bool,
    /// Talk to this bus instead of the system bus (tests).
    pub bus_address: Option<String>,
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to the system bus: {0}")]
    Bus(zbus::Error),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("another process already owns {BUS_NAME}; is a voxnix daemon already running?")]
    NameTaken,
    #[error("cannot own {BUS_NAME} on the bus: {0} (is the D-Bus policy file installed?)")]
    Name(zbus::Error),
}

fn notify(states: &[NotifyState<'_>]) {
    // Not under systemd: nothing to tell, not an error.
    let _ = sd_notify::notify(false, states);
}

fn access_from(cfg: &Config) -> Access {
    let frontend_gid = match nix::unistd::Group::from_name(&cfg.frontend_group) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            tracing::info!(group = %cfg.frontend_group, "front-end group does not exist (yet): looked up again when a call comes");
            None
        }
    };
    Access {
        frontend_group: cfg.frontend_group.clone(),
        frontend_gid,
        frontend_owner_kinds: cfg.frontend_owner_kinds.clone(),
        // Checked when the configuration loaded.
        admin_owners: cfg.admins().unwrap_or_default(),
    }
}

pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    let cfg = Config::load(&opts.config)?;
    // The Tailscale API client's TLS (ring, as the front ends use).
    let _ = rustls::crypto::ring::default_provider().install_default();
    notify(&[NotifyState::Status("connecting to the bus")]);
    let builder = match &opts.bus_address {
        Some(a) => zbus::connection::Builder::address(a.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let conn = builder.build().await.map_err(DaemonError::Bus)?;
    let access = access_from(&cfg);
    let engine = Engine::new(cfg, &conn, opts.sandbox).await?;

    notify(&[NotifyState::Status("reconciling records with the host")]);
    let report = engine.reconcile().await;
    tracing::info!(?report, "reconcile done");
    // The host ports' filter as the records say (the boot loaded the last
    // one written; the records may have moved on since).
    if let Err(e) = engine.sync_expose_filter().await {
        tracing::warn!("the expose filter: {e}");
    }
    let recovered = engine.recover_checkpoints().await;
    if recovered > 0 {
        tracing::info!(recovered, "checkpoints written down after a restart");
    }
    // The configured module sets into the system cache, in the background:
    // the daemon serves meanwhile.
    {
        let engine = engine.clone();
        tokio::spawn(async move {
            let built = engine.prewarm().await;
            tracing::info!(built, "prewarm done");
        });
    }

    let server = conn.object_server();
    let manager = Manager {
        engine: engine.clone(),
        access: access.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    server
        .at(MANAGER_PATH, manager)
        .await
        .map_err(DaemonError::Bus)?;
    for name in engine.names() {
        let obj = Container {
            name: name.clone(),
            engine: engine.clone(),
            access: access.clone(),
        };
        server
            .at(container_path(&name), obj)
            .await
            .map_err(DaemonError::Bus)?;
    }
    tokio::spawn(forward_events(engine.clone(), conn.clone(), access));
    tokio::spawn(engine.clone().watch());
    // The snapshot schedule, every five minutes from the start (a slot
    // missed while the daemon was down runs at once; `due` keeps it to one
    // an hour, whenever in the hour the run falls), and retention (count
    // and age, the schedule's tiers) after the first run and then hourly.
    let retention = engine.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        let mut retained: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let took = match retention.run_snapshot_schedule().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("snapshot schedule: {e}");
                    0
                }
            };
            if took == 0 && retained.is_some_and(|t| t.elapsed() < Duration::from_secs(3600)) {
                continue;
            }
            retained = Some(tokio::time::Instant::now());
            match retention.apply_retention().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("retention removed {n} old snapshots and kept workspaces"),
                Err(e) => tracing::warn!("snapshot retention: {e}"),
            }
        }
    });

    match conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
    {
        Ok(zbus::fdo::RequestNameReply::PrimaryOwner)
        | Ok(zbus::fdo::RequestNameReply::AlreadyOwner) => {}
        Ok(_) => return Err(DaemonError::NameTaken),
        Err(zbus::Error::NameTaken) => return Err(DaemonError::NameTaken),
        Err(e) => return Err(DaemonError::Name(e)),
    }
    let status = format!(
        "serving {BUS_NAME}; {} containers; {} rolled back, {} destroys finished, {} unmanaged",
        engine.names().len(),
        report.rolled_back.len(),
        report.finished_destroys.len(),
        report.unmanaged.len()
    );
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!("{status}");

    let mut watchdog_usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0 {
        let period = Duration::from_micros(watchdog_usec / 2);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        });
    }

    let (Ok(mut term), Ok(mut int)) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
    ) else {
        return Err(DaemonError::Engine(EngineError::HostError(
            "cannot install signal handlers".into(),
        )));
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        e = connection_lost(&conn) => {
            // Without its bus the daemon can serve nobody: fail, and let
            // systemd's Restart=on-failure bring it back on a fresh connection.
            notify(&[NotifyState::Status("lost the bus connection; exiting for a restart")]);
            return Err(DaemonError::Bus(e));
        }
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    tracing::info!("stopping");
    Ok(())
}

/// Resolves when the bus connection is gone: at once when the bus hangs up
/// (or the socket fails), and within ~5 s when the bus daemon stops answering
/// without closing the socket.
async fn connection_lost(conn: &zbus::Connection) -> zbus::Error {
    tokio::select! {
        _ = conn.closed() => {
            tracing::error!("bus connection lost: the bus closed it");
            zbus::Error::Failure("the bus closed the connection".into())
        }
        e = bus_unresponsive(conn) => e,
    }
}

/// Resolves when the bus daemon stops answering a ping (every 5 s).
async fn bus_unresponsive(conn: &zbus::Connection) -> zbus::Error {
    let Ok(dbus) = zbus::fdo::DBusProxy::new(conn).await else {
        return zbus::Error::Failure("cannot talk to the bus daemon".into());
    };
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Err(e) = dbus.get_id().await {
            tracing::error!("bus connection lost: {e}");
            return e.into();
        }
    }
}

/// Turns engine events into D-Bus signals, and keeps the per-container
/// objects in step with the records.
async fn forward_events(engine: Arc<Engine>, conn: zbus::Connection, access: Access) {
    let mut events = engine.subscribe();
    let server = conn.object_server();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("dropped {n} events: a slow signal consumer");
                continue;
            }
            Err(_) => return,
        };
        let Ok(iface) = server.interface::<_, Manager>(MANAGER_PATH).await else {
            return;
        };
        let emitter = iface.signal_emitter();
        let sent = match event {
            Event::Progress {
                op,
                container,
                phase,
                message,
            } => Manager::operation_progress(emitter, &op, &container, &phase, &message).await,
            Event::Finished {
                op,
                container,
                result,
            } => {
                let (ok, kind, msg, json) = match &result {
                    Ok(v) => (true, String::new(), String::new(), v.to_string()),
                    Err(e) => (
                        false,
                        e.kind().to_string(),
                        e.message().to_string(),
                        String::new(),
                    ),
                };
                Manager::operation_finished(emitter, &op, &container, ok, &kind, &msg, &json).await
            }
            Event::ContainerChanged {
                name,
                owner,
                state,
                expected,
            } => {
                Manager::container_state_changed(emitter, &name, owner.as_str(), &state, expected)
                    .await
            }
            Event::ContainerAdded { name } => {
                let obj = Container {
                    name: name.clone(),
                    engine: engine.clone(),
                    access: access.clone(),
                };
                server.at(container_path(&name), obj).await.map(|_| ())
            }
            Event::ContainerRemoved { name } => server
                .remove::<Container, _>(container_path(&name))
                .await
                .map(|_| ()),
        };
        if let Err(e) = sent {
            tracing::warn!("cannot publish an event: {e}");
        }
    }
}
