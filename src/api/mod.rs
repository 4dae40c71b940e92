//! voxnix's own D-Bus API, `org.voxnix.Voxnix1` on the system bus: a
//! `Manager` object plus one object per container, typed errors, and signals
//! for progress and state changes. Documented in `docs/dbus-api.md`.

pub mod caller;
pub mod client;
pub mod container;
pub mod error;
pub mod manager;

pub use error::ApiError;

pub const BUS_NAME: &str = "org.voxnix.Voxnix1";
pub const MANAGER_PATH: &str = "/org/voxnix/Voxnix1";
pub const MANAGER_INTERFACE: &str = "org.voxnix.Voxnix1.Manager";
pub const CONTAINER_INTERFACE: &str = "org.voxnix.Voxnix1.Container";
pub const CONTAINER_PATH_PREFIX: &str = "/org/voxnix/Voxnix1/container/";
pub const ERROR_PREFIX: &str = "org.voxnix.Voxnix1.Error";

/// Object path of a container. Path elements allow only `[A-Za-z0-9_]`, so
/// every other byte becomes `_xx` (hex), like systemd's bus label escaping.
pub fn container_path(name: &str) -> String {
    let mut out = String::from(CONTAINER_PATH_PREFIX);
    if name.is_empty() {
        out.push('_');
    }
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_valid_object_paths() {
        assert_eq!(
            container_path("dev-1"),
            "/org/voxnix/Voxnix1/container/dev_2d1"
        );
        assert_eq!(container_path("abc"), "/org/voxnix/Voxnix1/container/abc");
        for n in ["a-b", "0", "x_y", ""] {
            assert!(zbus::ObjectPath::try_from(container_path(n)).is_ok(), "{n}");
        }
        assert_ne!(container_path("a-b"), container_path("a_2db"));
    }
}
