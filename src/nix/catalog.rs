//! The module library as `nix/library.nix` describes it (`-A catalog`),
//! read with a builtins-only evaluation (no nixpkgs needed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NixError;
use super::config::NixConfig;
use super::process::CancelToken;
use super::run::run_checked;

/// One library module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub settings: BTreeMap<String, SettingInfo>,
    /// Systemd credential id → description.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
}

/// One setting a module accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingInfo {
    /// `"string"`, `"int"`, `"bool"` or `"list of string"`.
    #[serde(rename = "type")]
    pub type_: String,
    pub default: serde_json::Value,
    pub description: String,
    /// A git identity, SSH keys ...: never built into the system (the store
    /// is world-readable), handed to the container at start instead.
    #[serde(default)]
    pub personal: bool,
}

/// Parses the JSON that `nix-instantiate --eval --strict --json
/// nix/library.nix -A catalog` prints.
pub fn parse_catalog(json: &[u8]) -> Result<Vec<ModuleInfo>, String> {
    serde_json::from_slice(json).map_err(|e| format!("unexpected catalog JSON: {e}"))
}

/// Lists the library's modules (sorted by name, as the index returns them).
pub async fn catalog(cfg: &NixConfig) -> Result<Vec<ModuleInfo>, NixError> {
    catalog_with_cancel(cfg, &CancelToken::never()).await
}

/// [`catalog`] with a cancellation.
pub async fn catalog_with_cancel(
    cfg: &NixConfig,
    cancel: &CancelToken,
) -> Result<Vec<ModuleInfo>, NixError> {
    let library = cfg.library_dir.join("nix/library.nix");
    if !library.is_file() {
        return Err(NixError::NotInstalled {
            what: format!(
                "voxnix's Nix library ({} is missing; set library_dir in the [nix] configuration)",
                library.display()
            ),
        });
    }
    let cmd = cfg
        .command("nix-instantiate")?
        .args(["--eval", "--strict", "--json", "--readonly-mode"])
        .arg(library.as_os_str())
        .args(["-A", "catalog"])
        .args(cfg.option_args());
    let out = run_checked(&cmd, cfg.eval_timeout, cancel, &mut |_| {})
        .await
        .map_err(|e| e.into_eval())?;
    parse_catalog(&out.stdout).map_err(|message| NixError::Output {
        command: "nix-instantiate -A catalog".into(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_json_parses() {
        let json = br#"[{"credentials":{},"description":"Git.","name":"git","settings":{"user_name":{"default":"","description":"user.name","type":"string"}}},
                       {"credentials":{"k":"a key"},"description":"SSH.","name":"ssh","settings":{}}]"#;
        let c = parse_catalog(json).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].settings["user_name"].type_, "string");
        assert_eq!(c[0].settings["user_name"].default, serde_json::json!(""));
        assert_eq!(c[1].credentials["k"], "a key");
        assert!(parse_catalog(b"{}").is_err());
        assert!(parse_catalog(b"").is_err());
    }
}
