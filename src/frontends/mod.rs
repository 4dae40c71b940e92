//! Front ends: everything a person talks to. Each is a client of the daemon's
//! D-Bus API; none touches systemd, machined or the host directly.

pub mod chat;
pub mod cli;
pub mod format;
pub mod health;
pub mod telegram;
