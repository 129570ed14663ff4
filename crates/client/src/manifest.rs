//! The manifest: which names the user has stored, as which blobs, where.
//!
//! It is JSON, sealed like any blob and stored on every relay of the set,
//! with a head record (slot `manifest`) in the identity's mailbox pointing
//! at the newest version. Relays see only its size.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, VerifyingKey};

use crate::error::{Error, Result};

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// The user's file table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Bumped on every change; equals the head's sequence number.
    pub seq: u64,
    /// Stored files by name.
    pub files: BTreeMap<String, FileEntry>,
}

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
    #[serde(with = "crate::text_serde")]
    pub relay: VerifyingKey,
    /// The device whose upload key owns the copy (only it can delete it).
    #[serde(with = "crate::text_serde")]
    pub owner: VerifyingKey,
}

impl Manifest {
    /// Parses a manifest's JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|err| Error::Invalid(format!("the manifest does not parse: {err}")))
    }

    /// The manifest as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
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
    fn json_round_trip() {
        let key = cairn_proto::SigningKey::from_seed(&[3; 32]).verifying_key();
        let mut manifest = Manifest {
            seq: 4,
            ..Manifest::default()
        };
        manifest.files.insert(
            "notes.txt".into(),
            FileEntry {
                blob: BlobId::of(b"x"),
                size: 1,
                sealed_size: 200,
                generation: 1,
                stored_at: 5,
                copies: vec![Copy {
                    url: "http://127.0.0.1:1".into(),
                    relay: key,
                    owner: key,
                }],
            },
        );
        let back = Manifest::from_json(&manifest.to_json()).unwrap();
        assert_eq!(back, manifest);
        assert!(Manifest::from_json(b"{\"seq\":1}").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("a/b c.txt").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name(&BlobId::of(b"").to_string()).is_err());
    }
}
