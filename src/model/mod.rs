//! The vocabulary every layer shares, below all of them: who owns a container
//! ([`Owner`]) and what a container may be called ([`container_name`]). It
//! imports nothing of voxnix, so storage, configuration, the engine and the
//! front ends can all use it without depending on each other.

pub mod container_name;
pub mod owner;

pub use container_name::{NAME_MAX_LEN, NameError};
pub use owner::{Owner, OwnerError};
