//! Owners: who a container belongs to, as `<kind>:<id>` (e.g. `telegram:123`,
//! `unix:1000`). The daemon decides the owner from the caller, never from a
//! spec.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A string that is not an owner; the message says what is wrong and what an
/// owner looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OwnerError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner(String);

impl Owner {
    pub const MAX_LEN: usize = 80;

    /// Parses `<kind>:<id>`: kind in [a-z]{1,16}, id in [A-Za-z0-9._@-]{1,63}.
    pub fn parse(s: &str) -> Result<Self, OwnerError> {
        let invalid = |why: &str| {
            OwnerError(format!(
                "owner: '{}' is not an owner ({why}); owners look like 'telegram:123' or 'unix:1000'",
                s.escape_default()
            ))
        };
        let Some((kind, id)) = s.split_once(':') else {
            return Err(invalid("no ':'"));
        };
        if kind.is_empty() || kind.len() > 16 || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(invalid(
                "the part before ':' must be 1-16 lowercase letters",
            ));
        }
        if id.is_empty()
            || id.len() > 63
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
        {
            return Err(invalid(
                "the part after ':' must be 1-63 letters, digits or . _ @ -",
            ));
        }
        Ok(Owner(s.to_string()))
    }

    pub fn unix(uid: u32) -> Self {
        Owner(format!("unix:{uid}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> &str {
        self.0.split_once(':').map(|(k, _)| k).unwrap_or("")
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Owner {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Owner::parse(&s).map_err(|e| e.to_string())
    }
}

impl From<Owner> for String {
    fn from(o: Owner) -> String {
        o.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in [
            "telegram:123",
            "telegram:-100200",
            "unix:0",
            "chat:a.b_c@d-e",
        ] {
            assert!(Owner::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "telegram",
            ":1",
            "Telegram:1",
            "telegram:",
            "telegram:1 2",
            "telegram:1\n",
            "a:b/c",
            "x:ü",
        ] {
            assert!(Owner::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Owner::parse("telegram:7").unwrap().kind(), "telegram");
    }
}
