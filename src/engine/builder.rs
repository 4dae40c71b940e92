//! Builders turn a validated spec into a bootable system for
//! `container@NAME.service`. The engine only sees this interface; both kinds
//! run real Nix (`src/nix/`).

use super::EngineError;
use super::spec::ContainerSpec;
use crate::nix::process::cancel_pair;
use crate::nix::{NixBuilder, NixError};

/// What a build produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOutput {
    /// The NixOS system path for the conf's `SYSTEM_PATH`; None when the
    /// container boots something else (the sandbox's host image).
    pub system_path: Option<String>,
    /// The system's derivation, for introspection.
    pub drv_path: Option<String>,
}

/// The builders voxnix has.
#[derive(Debug, Clone)]
pub enum Builder {
    /// Sandbox only: Nix builds a real (builtins-only) derivation recording
    /// the modules, but the container boots the appliance's own /usr.
    HostImage(NixBuilder),
    /// Nix: spec → `nix/buildContainer.nix` → a NixOS system path.
    Nix(NixBuilder),
}

impl From<NixError> for EngineError {
    fn from(e: NixError) -> Self {
        match e {
            NixError::Eval { .. } | NixError::Build { .. } => {
                EngineError::BuildFailed(e.to_string())
            }
            NixError::Timeout { .. } => EngineError::Timeout(e.to_string()),
            NixError::Cancelled => EngineError::BuildFailed("the build was cancelled".into()),
            other => EngineError::HostError(other.to_string()),
        }
    }
}

impl Builder {
    pub fn nix(&self) -> &NixBuilder {
        match self {
            Builder::HostImage(n) | Builder::Nix(n) => n,
        }
    }

    /// Builds (or rebuilds, for an update) the system for `spec`, reporting
    /// progress lines through `progress`, and installs it as the container's
    /// profile.
    /// `build_json` is [`ContainerSpec::to_build_json`]: never the owner or
    /// personal settings.
    pub async fn build(
        &self,
        spec: &ContainerSpec,
        build_json: &serde_json::Value,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<BuildOutput, EngineError> {
        // Dropping the canceller (when the create's task ends) is not a
        // cancellation; the build's own timeout bounds it.
        let (_canceller, token) = cancel_pair();
        let built = self
            .nix()
            .build(&spec.name, build_json, progress, &token)
            .await?;
        let drv_path = Some(built.drv_path.display().to_string());
        Ok(match self {
            Builder::HostImage(_) => {
                progress(&format!(
                    "sandbox: {} boots the appliance's own /usr (the derivation records its modules)",
                    spec.name
                ));
                BuildOutput {
                    system_path: None,
                    drv_path,
                }
            }
            Builder::Nix(_) => BuildOutput {
                system_path: Some(built.system_path.display().to_string()),
                drv_path,
            },
        })
    }

    /// Removes what a build installed for `name` (profile, GC roots).
    pub async fn remove(&self, name: &str) -> Result<(), EngineError> {
        Ok(self.nix().remove(name).await?)
    }
}
