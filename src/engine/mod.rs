//! The engine: what the daemon does, independent of how it is asked (D-Bus API)
//! and of how the host is reached (host module).

pub mod spec;
