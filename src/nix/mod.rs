//! The Nix side of voxnix: building container systems with real Nix
//! (`nix-instantiate`, `nix-store --realise`, `nix-env` profiles), reading
//! the module catalog, and reading system derivations back.
//!
//! - [`builder`]: [`NixBuilder`], spec to installed system.
//! - [`catalog`]: the module library from `nix/library.nix`.
//! - [`config`]: [`NixConfig`] (the `[nix]` table) and names in paths.
//! - [`run`]: one Nix command, its failure as Nix's own message.
//! - [`drv`]: `.drv` files and [`drv::system_info`] (modules, packages).
//! - [`process`]: one Nix command with a timeout and a cancellation that
//!   stop its whole process tree.
//! - [`output`]: Nix's stderr turned into progress lines and short errors.
//!
//! One way down: `process` and `output` at the bottom, `config` and `run`
//! on them, `builder`, `catalog` and `drv` on top, none of those three
//! importing another.

pub mod builder;
pub mod catalog;
pub mod config;
pub mod drv;
pub mod output;
pub mod process;
pub mod run;

use std::path::PathBuf;
use std::time::Duration;

pub use builder::{Built, NixBuilder};
pub use catalog::{ModuleInfo, SettingInfo, catalog};
pub use config::NixConfig;
pub use drv::{DrvError, Package, SystemInfo, system_info};
pub use process::{CancelToken, Canceller, cancel_pair};

/// Everything that can go wrong on the Nix side. The messages are short:
/// an evaluation error carries only Nix's `error:` block, a build failure
/// the last lines of the failed builder's log.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// `nix-instantiate` failed: the spec, a module or the library is wrong.
    #[error("Nix evaluation failed: {message}")]
    Eval { message: String },
    /// `nix-store --realise` failed; `drv` is the derivation that failed.
    #[error("building {drv} failed: {message}{}", log_suffix(log_tail))]
    Build {
        drv: String,
        message: String,
        log_tail: String,
    },
    #[error("{what} took longer than {}s and was stopped", after.as_secs())]
    Timeout { what: String, after: Duration },
    #[error("cancelled")]
    Cancelled,
    #[error(
        "{what} not found: install Nix (Debian and Ubuntu: apt install nix-bin; on NixOS it is part of the system) or set nix_bin_dir in the [nix] configuration"
    )]
    NotInstalled { what: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Another Nix command failed (for example `nix-env --set`).
    #[error("{command} failed: {message}")]
    Command { command: String, message: String },
    /// A Nix command printed something unexpected.
    #[error("unexpected output from {command}: {message}")]
    Output { command: String, message: String },
    #[error("invalid container name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{name} has no system profile at {}", profile.display())]
    NoProfile { name: String, profile: PathBuf },
    #[error(transparent)]
    Drv(#[from] DrvError),
}

fn log_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\nlast lines of its log:\n{tail}")
    }
}

impl NixError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NixError::Io {
            context: context.into(),
            source,
        }
    }
}
