//! Host access: everything that talks to systemd, machined, the journal and the
//! containers themselves. Over D-Bus (zbus), never through systemctl,
//! machinectl, nixos-container or systemd-run.

pub mod exec;
pub mod journal;
