//! voxnix: a NixOS-native container orchestrator.
//!
//! The parts, from the outside in (see `docs/architecture.md`):
//! - [`frontends`]: the CLI (and later the chat front ends); clients of the daemon's D-Bus API.
//! - [`sandbox`]: a throwaway appliance with a real systemd, machined and container bridge.

pub mod api;
pub mod atomic_file;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod frontends;
pub mod host;
pub mod nix;
pub mod sandbox;
pub mod storage;
