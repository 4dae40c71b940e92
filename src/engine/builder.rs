//! Builders turn a validated spec into a bootable system for
//! `container@NAME.service`. The engine only sees this interface.

use super::EngineError;
use super::owner::Owner;
use super::spec::ContainerSpec;

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
    /// Sandbox only: containers boot the appliance's own /usr, nothing is built.
    HostImage,
    /// Nix: spec → `nix/buildContainer.nix` → system path. Not in this build yet.
    Nix,
}

impl Builder {
    /// Builds the system for `spec`, reporting progress lines through `progress`.
    pub async fn build(
        &self,
        spec: &ContainerSpec,
        _owner: &Owner,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<BuildOutput, EngineError> {
        match self {
            Builder::HostImage => {
                progress(&format!("sandbox: {} boots the appliance's own /usr (no NixOS closure)", spec.name));
                Ok(BuildOutput::default())
            }
            Builder::Nix => Err(EngineError::BuildFailed(
                "the Nix builder is not available in this build of voxnix yet; use the sandbox's host-image builder"
                    .into(),
            )),
        }
    }

    /// Removes what a build installed for `name` (GC roots, profiles).
    pub async fn remove(&self, _name: &str) -> Result<(), EngineError> {
        Ok(())
    }
}
