//! voxnix: a NixOS-native container orchestrator.
//!
//! The parts, from the outside in (see `docs/architecture.md`):
//! - [`frontends`]: the CLI, the terminal chat and the Telegram bot; clients of the daemon's D-Bus API.
//! - [`api`]: the daemon's D-Bus API (`org.voxnix.Voxnix1`), its caller identification and client proxy.
//! - [`daemon`]: `voxnix daemon`: bus name, reconcile, sd-notify, events to signals.
//! - [`engine`]: container lifecycle, records, operations, reconcile.
//! - [`host`]: systemd, machined, conf files, exec and journal on the host.
//! - [`nix`]: building containers' systems with Nix, and reading derivations.
//! - [`storage`]: per-owner workspaces, quotas and snapshots (ZFS or a directory).
//! - [`sandbox`]: a throwaway appliance with a real systemd, machined and container bridge.
//! - [`model`]: what every layer shares: owners and container names.

pub mod access_file;
pub mod api;
pub mod atomic_file;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod frontends;
pub mod host;
pub mod keyed_locks;
pub mod model;
pub mod nix;
pub mod sandbox;
pub mod storage;
