//! The client side of the API, used by every front end.

use zbus::proxy;

#[proxy(
    interface = "org.voxnix.Voxnix1.Manager",
    default_service = "org.voxnix.Voxnix1",
    default_path = "/org/voxnix/Voxnix1"
)]
pub trait Manager {
    fn create(&self, spec_json: &str, owner: &str) -> zbus::Result<String>;
    fn get_operation(&self, id: &str, owner: &str) -> zbus::Result<String>;
    fn list(&self, owner: &str) -> zbus::Result<String>;
    fn status(&self, name: &str, owner: &str) -> zbus::Result<String>;
    fn start(&self, name: &str, owner: &str) -> zbus::Result<()>;
    fn repair(&self, name: &str, owner: &str) -> zbus::Result<()>;
    fn stop(&self, name: &str, owner: &str) -> zbus::Result<()>;
    fn restart(&self, name: &str, owner: &str) -> zbus::Result<()>;
    fn destroy(&self, name: &str, owner: &str) -> zbus::Result<()>;
    fn update(&self, name: &str, owner: &str, modules: &[&str]) -> zbus::Result<String>;
    fn logs(&self, name: &str, owner: &str, lines: u32) -> zbus::Result<String>;
    fn exec(
        &self,
        name: &str,
        owner: &str,
        argv: &[&str],
        timeout_secs: u32,
    ) -> zbus::Result<(i32, Vec<u8>, Vec<u8>, bool)>;
    fn storage_usage(&self, owner: &str) -> zbus::Result<String>;
    fn snapshot(&self, name: &str, owner: &str) -> zbus::Result<String>;
    fn snapshots(&self, name: &str, owner: &str) -> zbus::Result<String>;
    fn restore_snapshot(&self, name: &str, owner: &str, id: &str) -> zbus::Result<()>;
    fn set_schedule(&self, name: &str, owner: &str, schedule: &str) -> zbus::Result<String>;
    fn restore_path(
        &self,
        name: &str,
        owner: &str,
        id: &str,
        path: &str,
        to: &str,
    ) -> zbus::Result<String>;
    fn checkpoint(&self, name: &str, owner: &str, kind: &str, why: &str) -> zbus::Result<String>;
    fn history(&self, name: &str, owner: &str) -> zbus::Result<String>;
    fn plan_undo(&self, name: &str, owner: &str, checkpoint: u64) -> zbus::Result<String>;
    fn undo(&self, name: &str, owner: &str, checkpoint: u64) -> zbus::Result<String>;
    fn set_owner_schedule(&self, owner: &str, schedule: &str) -> zbus::Result<String>;
    fn kept(&self, owner: &str) -> zbus::Result<String>;
    fn purge(&self, name: &str, owner: &str) -> zbus::Result<u32>;
    fn restore_kept(&self, name: &str, owner: &str) -> zbus::Result<()>;
    fn restore_kept_from(&self, name: &str, from: &str, owner: &str) -> zbus::Result<()>;
    fn add_key(&self, key: &str, owner: &str) -> zbus::Result<String>;
    fn keys(&self, owner: &str) -> zbus::Result<String>;
    fn remove_key(&self, which: &str, owner: &str) -> zbus::Result<String>;
    fn connect(&self, name: &str, owner: &str) -> zbus::Result<String>;
    fn expose(
        &self,
        name: &str,
        owner: &str,
        port: u32,
        to: &str,
        host_port: u32,
    ) -> zbus::Result<String>;
    fn unexpose(&self, name: &str, owner: &str, port: u32, to: &str) -> zbus::Result<String>;
    fn modules(&self) -> zbus::Result<String>;
    fn host_health(&self, owner: &str) -> zbus::Result<String>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn operation_progress(
        &self,
        id: &str,
        container: &str,
        phase: &str,
        message: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    fn operation_finished(
        &self,
        id: &str,
        container: &str,
        ok: bool,
        error_kind: &str,
        error_message: &str,
        result: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    fn container_state_changed(
        &self,
        name: &str,
        owner: &str,
        state: &str,
        expected: bool,
    ) -> zbus::Result<()>;
}

/// The short name of a voxnix D-Bus error (`NotFound` for
/// `org.voxnix.Voxnix1.Error.NotFound`), and its message.
pub fn error_parts(e: &zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            let short = name
                .as_str()
                .rsplit('.')
                .next()
                .unwrap_or(name.as_str())
                .to_string();
            (short, msg.clone().unwrap_or_default())
        }
        zbus::Error::FDO(fdo) => {
            let name = zbus::DBusError::name(fdo.as_ref()).to_string();
            let short = name.rsplit('.').next().unwrap_or(&name).to_string();
            (
                short,
                zbus::DBusError::description(fdo.as_ref())
                    .unwrap_or_default()
                    .to_string(),
            )
        }
        other => ("BusError".into(), other.to_string()),
    }
}
