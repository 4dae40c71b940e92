//! Fault-injection points for the crash-recovery tests.
//!
//! Compiled in only with the `fault-injection` feature. A point fires when the
//! file `<state_dir>/fault-injection` holds its name: the file is removed (so
//! the restarted daemon runs normally) and the daemon kills itself with
//! SIGKILL, exactly like an OOM kill or `kill -9` at that instant.

#[cfg(feature = "fault-injection")]
static STATE_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Tells the fault points where the trigger file lives.
pub fn init(_state_dir: &std::path::Path) {
    #[cfg(feature = "fault-injection")]
    let _ = STATE_DIR.set(_state_dir.to_path_buf());
}

/// Every point name, so tests can iterate over all of them.
pub const POINTS: &[&str] = &[
    "create:reserved",
    "create:built",
    "create:conf-written",
    "create:properties-set",
    "create:started",
    "destroy:marked",
    "destroy:stopped",
    "destroy:reverted",
    "destroy:conf-removed",
    "start:begun",
    "start:started",
    "stop:begun",
    "stop:stopped",
    "checkpoint:snapshot-taken",
    "update:checkpointed",
];

/// Conditions (not kills) a test can switch on: true while the trigger
/// file holds `name` (left in place; the test removes it).
pub const CONDITIONS: &[&str] = &["view:deaf"];

pub fn active(_name: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        let Some(dir) = STATE_DIR.get() else {
            return false;
        };
        std::fs::read_to_string(dir.join("fault-injection")).is_ok_and(|w| w.trim() == _name)
    }
    #[cfg(not(feature = "fault-injection"))]
    false
}

/// A place where the daemon may be killed in tests.
pub fn point(_name: &str) {
    #[cfg(feature = "fault-injection")]
    {
        let Some(dir) = STATE_DIR.get() else { return };
        let trigger = dir.join("fault-injection");
        let Ok(wanted) = std::fs::read_to_string(&trigger) else {
            return;
        };
        if wanted.trim() == _name {
            let _ = std::fs::remove_file(&trigger);
            let _ = crate::atomic_file::sync_dir(dir);
            tracing::warn!(point = _name, "fault injection: killing the daemon");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}
