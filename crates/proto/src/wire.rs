//! The relay's HTTP API as both ends see it (docs/PROTOCOL.md §7): route
//! paths, header names and the JSON answers, typed. The relay's handlers
//! build these answers, and the client's relay API and the relays' peer
//! client read them, so a field renamed on one side fails to compile on
//! the other instead of failing in the field.
//!
//! Error codes are [`crate::ErrorCode`]. Ids and keys travel as their text
//! forms; a field that does not parse makes the whole answer unreadable,
//! as a lying relay's answer should be.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{BlobId, Slot, VerifyingKey};

/// Route patterns, as the relay's router declares them.
pub mod route {
    /// The signed info document.
    pub const INFO: &str = "/.well-known/cairn-relay";
    /// Many small blobs stored in one request (`POST`).
    pub const BLOBS: &str = "/v1/blobs";
    /// One blob: `PUT` stores, `GET`/`HEAD` read, `POST` claims, `DELETE`
    /// releases.
    pub const BLOB: &str = "/v1/blobs/{id}";
    /// A proof that the relay holds a blob's bytes.
    pub const BLOB_PROOF: &str = "/v1/blobs/{id}/proof";
    /// One mailbox slot's head.
    pub const HEAD: &str = "/v1/heads/{mailbox}/{slot}";
    /// Every head of a mailbox.
    pub const HEADS: &str = "/v1/heads/{mailbox}";
    /// Set reconciliation between peer relays.
    pub const RECONCILE: &str = "/v1/federation/reconcile";
}

/// The path of blob `id`.
pub fn blob_path(id: &BlobId) -> String {
    format!("/v1/blobs/{id}")
}

/// The path of blob `id`'s proof of storage.
pub fn blob_proof_path(id: &BlobId) -> String {
    format!("/v1/blobs/{id}/proof")
}

/// The path of the head in `slot` of `mailbox`.
pub fn head_path(mailbox: &VerifyingKey, slot: &Slot) -> String {
    format!("/v1/heads/{mailbox}/{}", slot.as_str())
}

/// The path of `mailbox`'s head listing.
pub fn heads_path(mailbox: &VerifyingKey) -> String {
    format!("/v1/heads/{mailbox}")
}

/// Header names of the API beyond HTTP's own.
pub mod header {
    /// On a redirect for a transferred blob: the key of the relay that
    /// holds it now.
    pub const RELAY_KEY: &str = "cairn-relay-key";
    /// On a delete's 204: how many other owners still keep the blob (0: it
    /// is gone).
    pub const OWNERS_LEFT: &str = "cairn-owners-left";
}

/// `GET /.well-known/cairn-relay`: the signed record is what counts; the
/// document's other fields are the relay's unsigned view of itself and its
/// peers, for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoDocument {
    /// The signed [`crate::RelayInfo`] envelope, in base64url.
    pub record: String,
}

/// The answer to a blob upload (`201`, or `200` if it was held already).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStored {
    /// The blob uploaded.
    #[serde(with = "as_text")]
    pub id: BlobId,
    /// Whether the relay holds the blob now.
    pub stored: bool,
    /// For a peer's upload: the relay's signed transfer receipt, in
    /// base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// The answer to a batch upload (`POST /v1/blobs`): one result per blob,
/// in the order of the request's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStored {
    /// The blobs' results.
    pub results: Vec<BatchResult>,
}

/// What became of one blob of a batch: `status` is what a single `PUT` of
/// it would have answered (201, 200, 422, 507); `error` is set for a
/// refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The blob.
    #[serde(with = "as_text")]
    pub id: BlobId,
    /// The HTTP status a single upload of it would have had.
    pub status: u16,
    /// Whether this request stored its bytes (201).
    pub stored: bool,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The answer to a claim of ownership (`POST /v1/blobs/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobClaimed {
    /// The blob claimed.
    #[serde(with = "as_text")]
    pub id: BlobId,
    /// True if the key became an owner, false if it was one already.
    pub claimed: bool,
}

/// The body of a `307` for a blob the relay transferred to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobTransferred {
    /// The blob asked for.
    #[serde(with = "as_text")]
    pub id: BlobId,
    /// The relay that holds it now.
    pub transferred_to: PeerRef,
}

/// A peer relay, as an answer names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRef {
    /// Its base URL.
    pub url: String,
    /// Its key.
    #[serde(with = "as_text")]
    pub key: VerifyingKey,
}

/// A peer with room, offered with a `relay_full` refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerWithRoom {
    /// Its base URL.
    pub url: String,
    /// Its key.
    #[serde(with = "as_text")]
    pub key: VerifyingKey,
    /// Free bytes, as the peer last said (absent if unknown).
    pub capacity_free: Option<u64>,
}

/// The answer to a stored head (`201` new slot, `200` replaced).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadStored {
    /// The head's mailbox.
    #[serde(with = "as_text")]
    pub mailbox: VerifyingKey,
    /// Its slot.
    #[serde(with = "as_text")]
    pub slot: Slot,
    /// The `seq` the slot holds now.
    pub seq: u64,
}

/// `GET /v1/heads/{mailbox}`: every head, each a signed envelope in
/// base64url, sorted by slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadListing {
    /// The envelopes.
    pub heads: Vec<String>,
}

/// Every refusal's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// The code and the message.
    pub error: ErrorDetail,
    /// With `stale_head`: the stored head's envelope, in base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// With `relay_full`: peers that have room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerWithRoom>>,
}

/// What went wrong. The code is kept as text: a newer relay may send one
/// this build does not know, which [`crate::ErrorCode`] then refuses to
/// parse, and the caller decides what an unknown code means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// An [`crate::ErrorCode`], as text.
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
}

impl ErrorAnswer {
    /// A refusal with `code` and `message`, and nothing else.
    pub fn new(code: crate::ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.into(),
            },
            current: None,
            peers: None,
        }
    }
}

/// Serializes a field as its `Display` text and reads it with `FromStr`.
mod as_text {
    use super::{Deserialize, FromStr, fmt};

    pub(super) fn serialize<T: fmt::Display, S: serde::Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: serde::Deserializer<'de>,
    {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, SigningKey};

    #[test]
    fn answers_read_back_as_written_and_keep_their_field_names() {
        let key = SigningKey::from_seed(&[3; 32]).verifying_key();
        let id = BlobId::of(b"x");
        let stored = BlobStored {
            id,
            stored: true,
            receipt: None,
        };
        let text = serde_json::to_string(&stored).unwrap();
        assert_eq!(text, format!(r#"{{"id":"{id}","stored":true}}"#));
        assert_eq!(serde_json::from_str::<BlobStored>(&text).unwrap(), stored);
        let head = HeadStored {
            mailbox: key,
            slot: Slot::new("laptop").unwrap(),
            seq: 7,
        };
        let text = serde_json::to_string(&head).unwrap();
        assert_eq!(
            text,
            format!(r#"{{"mailbox":"{key}","slot":"laptop","seq":7}}"#)
        );
        assert_eq!(serde_json::from_str::<HeadStored>(&text).unwrap(), head);
        let refusal = ErrorAnswer::new(ErrorCode::NotFound, "gone");
        let text = serde_json::to_string(&refusal).unwrap();
        assert_eq!(text, r#"{"error":{"code":"not_found","message":"gone"}}"#);
    }

    #[test]
    fn an_answer_with_a_field_that_does_not_parse_is_refused() {
        let text = r#"{"id":"not-an-id","stored":true}"#;
        assert!(serde_json::from_str::<BlobStored>(text).is_err());
        let text = r#"{"mailbox":"nope","slot":"a","seq":1}"#;
        assert!(serde_json::from_str::<HeadStored>(text).is_err());
    }

    #[test]
    fn paths_match_their_routes() {
        let id = BlobId::of(b"x");
        let key = SigningKey::from_seed(&[3; 32]).verifying_key();
        let slot = Slot::new("s").unwrap();
        assert_eq!(blob_path(&id), route::BLOB.replace("{id}", &id.to_string()));
        assert_eq!(
            blob_proof_path(&id),
            route::BLOB_PROOF.replace("{id}", &id.to_string())
        );
        assert_eq!(
            head_path(&key, &slot),
            route::HEAD
                .replace("{mailbox}", &key.to_string())
                .replace("{slot}", "s")
        );
        assert_eq!(
            heads_path(&key),
            route::HEADS.replace("{mailbox}", &key.to_string())
        );
    }
}
