//! What an operation says (the `body` of a proto `Operation`), as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, VerifyingKey};

use crate::error::{Error, Result};
use crate::files::{FileEntry, Place};

/// One change to the file table, or a marker in a device's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// `name` now holds `entry`.
    Put {
        /// The name.
        name: String,
        /// What it holds.
        entry: FileEntry,
    },
    /// `name` is removed (a tombstone).
    Remove {
        /// The name.
        name: String,
    },
    /// `from` is removed and `to` holds `entry`, at one instant.
    Rename {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
        /// What `from` held.
        entry: FileEntry,
    },
    /// The copy of `blob` on relay `from` is now held by `to`: `from`
    /// transferred it to a peer (PROTOCOL.md §7.3), as a download found by
    /// following its redirect. Recorded apart from the entries naming the
    /// blob, so it never overrides a newer write of a name.
    Moved {
        /// The blob.
        #[serde(with = "crate::text_serde")]
        blob: BlobId,
        /// The key of the relay the copy was made on.
        #[serde(with = "crate::text_serde")]
        from: VerifyingKey,
        /// Where it is now.
        to: Place,
    },
    /// Writes to paths of the synced folder `folder`, all at this
    /// operation's clock (PROTOCOL.md §10.9). A device older than folders
    /// refuses the operation as one it does not know.
    Folder {
        /// The folder's name.
        folder: String,
        /// The writes, each to a distinct path.
        writes: Vec<super::folder::Write>,
    },
    /// The device appended to the identity log, up to `seq` (entry `head`).
    Identity {
        /// The log's last sequence number.
        seq: u64,
        /// The newest entry.
        #[serde(with = "crate::text_serde")]
        head: BlobId,
    },
    /// A compaction of the whole state: the sealed blob `state` holds a
    /// [`super::Snapshot`] covering, for each device, its operations up to
    /// the given ones.
    Snapshot {
        /// The sealed snapshot blob.
        #[serde(with = "crate::text_serde")]
        state: BlobId,
        /// Its size in bytes.
        size: u64,
        /// Device key (text) → the last operation of it included.
        covers: BTreeMap<String, super::Position>,
    },
}

impl Change {
    /// The JSON body of an operation.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an operation's body.
    pub fn from_body(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body)
            .map_err(|err| Error::Invalid(format!("an operation does not parse: {err}")))
    }
}
