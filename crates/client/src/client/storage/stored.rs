//! What storing one file's data produced, whether as one blob (`put`) or
//! as chunks and a manifest (`chunked`): both build it, and the listing
//! is made from it.

use cairn_proto::BlobId;

use crate::failures::Failures;
use crate::relay::RelayClient;

/// A file's blobs, stored.
pub(in crate::client) struct Stored {
    /// The sealed blob, or the sealed manifest.
    pub blob: BlobId,
    /// A chunked file's chunk blobs, each once, in the order the manifest
    /// first names them.
    pub chunks: Vec<BlobId>,
    /// Chunks the manifest lists (0 for a one-blob file).
    pub count: usize,
    /// Bytes of data.
    pub size: u64,
    /// Bytes of the sealed blob, or of the manifest and every chunk blob.
    pub sealed_size: u64,
    /// Bytes sent to relays, all together.
    pub sent: u64,
    /// Chunks claimed rather than sent.
    pub reused: usize,
    /// Relays holding every blob.
    pub holders: Vec<RelayClient>,
    /// Relays that failed, with what they said.
    pub failures: Failures,
}
