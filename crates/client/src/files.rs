//! What a stored name holds: the blob, its size, and where its copies are.
//! The table of names is built by sync (`crate::crdt`) from every
//! device's operations.

use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, VerifyingKey};

use crate::error::{Error, Result};

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// One stored file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The sealed blob.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Bytes of data (before sealing).
    pub size: u64,
    /// Bytes of the sealed blob.
    pub sealed_size: u64,
    /// The vault key generation it is sealed to.
    pub generation: u32,
    /// When it was stored (Unix seconds).
    pub stored_at: u64,
    /// Where copies were acknowledged.
    pub copies: Vec<Copy>,
}

/// One acknowledged copy of a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// The relay's URL when the copy was made.
    pub url: String,
    /// The relay's key.
    #[serde(with = "crate::text_serde::repeated_key")]
    pub relay: VerifyingKey,
    /// The device whose upload key owns the copy (only it can delete it).
    #[serde(with = "crate::text_serde::repeated_key")]
    pub owner: VerifyingKey,
}

/// A relay a copy is held on, by URL and key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    /// The relay's URL.
    pub url: String,
    /// The relay's key.
    #[serde(with = "crate::text_serde::repeated_key")]
    pub relay: VerifyingKey,
}

/// Checks a name a file is stored under.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::Invalid(format!(
            "a name must be 1–{MAX_NAME_LEN} bytes long"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "a name must not contain control characters".into(),
        ));
    }
    if name.parse::<BlobId>().is_ok() {
        return Err(Error::Invalid(
            "a name must not look like a blob id (64 hex digits): `cairn get` would read it as one"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("a/b c.txt").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name(&BlobId::of(b"").to_string()).is_err());
    }
}
