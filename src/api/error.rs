//! Typed D-Bus errors: `org.voxnix.Voxnix1.Error.<Kind>`, one per engine
//! error kind, each with a message a person can act on.

use crate::engine::EngineError;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.voxnix.Voxnix1.Error")]
pub enum ApiError {
    #[zbus(error)]
    ZBus(zbus::Error),
    InvalidArgument(String),
    NotFound(String),
    Conflict(String),
    AccessDenied(String),
    BuildFailed(String),
    QuotaExceeded(String),
    Busy(String),
    Timeout(String),
    HostError(String),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidArgument(m) => ApiError::InvalidArgument(m),
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::AccessDenied(m) => ApiError::AccessDenied(m),
            EngineError::BuildFailed(m) => ApiError::BuildFailed(m),
            EngineError::QuotaExceeded(m) => ApiError::QuotaExceeded(m),
            EngineError::Busy(m) => ApiError::Busy(m),
            EngineError::Timeout(m) => ApiError::Timeout(m),
            EngineError::HostError(m) => ApiError::HostError(m),
        }
    }
}

/// Serializes a reply to JSON; failure is a host error, never a panic.
pub fn to_json<T: serde::Serialize>(v: &T) -> Result<String, ApiError> {
    serde_json::to_string(v)
        .map_err(|e| ApiError::HostError(format!("cannot encode the reply: {e}")))
}
