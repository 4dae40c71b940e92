//! Host access: everything that talks to systemd, machined, the journal and the
//! containers themselves. Over D-Bus (zbus), never through systemctl,
//! machinectl, nixos-container or systemd-run.

pub mod addresses;
pub mod conf;
pub mod container_root;
pub mod exec;
pub mod expose_filter;
pub mod journal;
pub mod journal_in_container;
pub mod leftovers;
pub mod machined;
pub mod namespaces;
pub mod ns_socket;
pub mod nspawn_mac;
pub mod slices;
pub mod systemd;
pub mod tailscale_api;

use thiserror::Error;

/// A failure talking to the host's services.
#[derive(Debug, Error)]
pub enum HostError {
    #[error("D-Bus call {call} failed: {source}")]
    Bus {
        call: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd job for {unit} ended with '{result}'")]
    JobFailed { unit: String, result: String },
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl HostError {
    pub(crate) fn bus(call: &'static str) -> impl FnOnce(zbus::Error) -> HostError {
        move |source| HostError::Bus { call, source }
    }

    /// The D-Bus error name behind this failure, if it was one (e.g.
    /// `org.freedesktop.machine1.NoSuchMachine`).
    pub fn dbus_name(&self) -> Option<String> {
        match self {
            HostError::Bus {
                source: zbus::Error::MethodError(name, _, _),
                ..
            } => Some(name.to_string()),
            _ => None,
        }
    }
}

/// The unit NixOS runs a container as.
pub fn container_unit(name: &str) -> String {
    format!("container@{name}.service")
}
