//! Secrets (the Telegram bot token, the LLM API key): read from files only,
//! never shown. A [`Secret`] has no `Display`, and its `Debug` prints nothing of
//! it. Every secret read is also remembered so [`redact`] can scrub it from any
//! text that came from outside (an HTTP library's error, a server's answer)
//! before that text reaches a log line or a person.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use thiserror::Error;

/// Longest secret file accepted.
const MAX_SECRET_BYTES: u64 = 16 * 1024;

/// The words a redacted secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// A secret read from a file.
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Why a secret could not be read. Messages name the file, never its content.
#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read the secret file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret file {path} is empty")]
    Empty { path: PathBuf },
    #[error("the secret file {path} is larger than {MAX_SECRET_BYTES} bytes; it cannot be a key")]
    TooLarge { path: PathBuf },
    #[error(
        "the secret file {path} must hold the secret alone on one line (it has spaces or control characters)"
    )]
    Malformed { path: PathBuf },
}

impl Secret {
    /// Reads a secret: the whole file, surrounding white space removed. It must
    /// be one word with no control characters.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let read_err = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        if let Ok(meta) = file.metadata() {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "the secret file is readable by everyone; make it readable only by the service (chmod 0400)"
                );
            }
        }
        let mut text = String::new();
        file.take(MAX_SECRET_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let value = text.trim();
        if value.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_path_buf(),
            });
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SecretError::Malformed {
                path: path.to_path_buf(),
            });
        }
        remember(value);
        Ok(Secret(value.to_string()))
    }

    /// The secret itself, for the one place that must send it (an HTTP client).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Where a credential is: the configured file, or else
/// `$CREDENTIALS_DIRECTORY/<name>` when systemd passed credentials and that
/// file exists.
pub fn credential_path(configured: Option<&Path>, name: &str) -> Option<PathBuf> {
    if let Some(p) = configured {
        return Some(p.to_path_buf());
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let p = Path::new(&dir).join(name);
    p.exists().then_some(p)
}

fn known() -> &'static Mutex<Vec<String>> {
    static KNOWN: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(Vec::new()))
}

fn remember(secret: &str) {
    let mut k = known().lock().unwrap_or_else(|e| e.into_inner());
    if !k.iter().any(|s| s == secret) {
        k.push(secret.to_string());
    }
}

/// `text` with every secret this process has read replaced by `[redacted]`.
/// Use it on any text that came from outside before logging or showing it.
pub fn redact(text: &str) -> String {
    let k = known().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for s in k.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
        // A bot token's secret half may appear alone (after "bot<id>:").
        if let Some((_, half)) = s.split_once(':')
            && half.len() >= 16
            && out.contains(half)
        {
            out = out.replace(half, REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_trims_and_hides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "123456:unit-test-secret-AAAAAAAAAAAAAAAA\n").unwrap();
        let s = Secret::from_file(&p).unwrap();
        assert_eq!(s.expose(), "123456:unit-test-secret-AAAAAAAAAAAAAAAA");
        assert!(!format!("{s:?}").contains("unit-test-secret"));
        let scrubbed =
            redact("GET https://x/bot123456:unit-test-secret-AAAAAAAAAAAAAAAA/getMe failed");
        assert!(!scrubbed.contains("unit-test-secret"), "{scrubbed}");
        assert!(
            !redact("…unit-test-secret-AAAAAAAAAAAAAAAA…").contains("unit-test-secret"),
            "the secret half alone is redacted too"
        );
    }

    #[test]
    fn bad_files_are_named_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "  \n").unwrap();
        assert!(matches!(
            Secret::from_file(&p),
            Err(SecretError::Empty { .. })
        ));
        std::fs::write(&p, "two words-that-are-secret").unwrap();
        let e = Secret::from_file(&p).unwrap_err().to_string();
        assert!(!e.contains("words-that-are-secret"), "{e}");
        assert!(Secret::from_file(&dir.path().join("missing")).is_err());
    }
}
