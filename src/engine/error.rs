//! The engine's errors. Each kind maps to one typed D-Bus error of the API
//! (`org.voxnix.Voxnix1.Error.<Kind>`), and each message is meant for a person.

use thiserror::Error;

use crate::model::OwnerError;
use crate::storage::StorageError;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    BuildFailed(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    HostError(String),
}

impl EngineError {
    /// The short name, as in the D-Bus error name's last part.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::InvalidArgument(_) => "InvalidArgument",
            EngineError::NotFound(_) => "NotFound",
            EngineError::Conflict(_) => "Conflict",
            EngineError::AccessDenied(_) => "AccessDenied",
            EngineError::BuildFailed(_) => "BuildFailed",
            EngineError::QuotaExceeded(_) => "QuotaExceeded",
            EngineError::Busy(_) => "Busy",
            EngineError::Timeout(_) => "Timeout",
            EngineError::HostError(_) => "HostError",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            EngineError::InvalidArgument(m)
            | EngineError::NotFound(m)
            | EngineError::Conflict(m)
            | EngineError::AccessDenied(m)
            | EngineError::BuildFailed(m)
            | EngineError::QuotaExceeded(m)
            | EngineError::Busy(m)
            | EngineError::Timeout(m)
            | EngineError::HostError(m) => m,
        }
    }

    /// The same kind with another message (context added for a person).
    pub fn with_message(&self, m: String) -> Self {
        match self {
            EngineError::InvalidArgument(_) => EngineError::InvalidArgument(m),
            EngineError::NotFound(_) => EngineError::NotFound(m),
            EngineError::Conflict(_) => EngineError::Conflict(m),
            EngineError::AccessDenied(_) => EngineError::AccessDenied(m),
            EngineError::BuildFailed(_) => EngineError::BuildFailed(m),
            EngineError::QuotaExceeded(_) => EngineError::QuotaExceeded(m),
            EngineError::Busy(_) => EngineError::Busy(m),
            EngineError::Timeout(_) => EngineError::Timeout(m),
            EngineError::HostError(_) => EngineError::HostError(m),
        }
    }

    /// The one message for a container the caller may not see, whether or not
    /// it exists: never reveals another owner's container.
    pub fn not_found(name: &str) -> Self {
        EngineError::NotFound(format!("no container named '{name}'"))
    }
}

impl From<crate::host::HostError> for EngineError {
    fn from(e: crate::host::HostError) -> Self {
        match e {
            crate::host::HostError::Timeout { .. } => EngineError::Timeout(e.to_string()),
            other => EngineError::HostError(other.to_string()),
        }
    }
}

/// An owner a caller named that is not one.
impl From<OwnerError> for EngineError {
    fn from(e: OwnerError) -> Self {
        EngineError::InvalidArgument(e.0)
    }
}

/// Storage's errors, each as the kind the API reports it as.
impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        let m = e.to_string();
        match e {
            StorageError::QuotaExceeded { .. } => EngineError::QuotaExceeded(m),
            StorageError::Busy { .. } => EngineError::Busy(m),
            StorageError::SnapshotNotFound { .. } | StorageError::NotFound { .. } => {
                EngineError::NotFound(m)
            }
            StorageError::InvalidArgument(_) => EngineError::InvalidArgument(m),
            StorageError::Conflict(_) => EngineError::Conflict(m),
            StorageError::PoolMissing { .. }
            | StorageError::Misconfigured(_)
            | StorageError::Command { .. }
            | StorageError::Io { .. } => EngineError::HostError(m),
        }
    }
}
