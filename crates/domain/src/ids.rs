use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifier of a stored message: a UUIDv7 rendered in its canonical
/// hyphenated form. UUIDv7 sorts by creation time, which gives listings a
/// stable, ingest-ordered key for cursor pagination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a message id (expected a UUID such as 0192f0c4-8a3e-7c41-9d2b-3f5e6a7b8c9d)")]
pub struct InvalidId(pub String);

impl MessageId {
    /// Parses an id received from outside (a URL, a cursor, a CLI argument).
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        uuid::Uuid::parse_str(raw)
            .map(|u| Self(u.hyphenated().to_string()))
            .map_err(|_| InvalidId(raw.chars().take(64).collect()))
    }

    /// Wraps a freshly generated UUID.
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id.hyphenated().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_and_rejects_garbage() {
        let id = MessageId::parse("0192F0C4-8A3E-7C41-9D2B-3F5E6A7B8C9D").expect("valid");
        assert_eq!(id.as_str(), "0192f0c4-8a3e-7c41-9d2b-3f5e6a7b8c9d");
        assert!(MessageId::parse("../../etc/passwd").is_err());
        assert!(MessageId::parse("").is_err());
    }
}
