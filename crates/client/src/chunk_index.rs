//! What this device knows is stored already, chunk by chunk: the keyed
//! plaintext hash of every chunk it uploaded or read in a manifest, with
//! the blob that holds it (PROTOCOL.md §10.8). `put` looks chunks up here
//! to claim them instead of sending them again: that is deduplication
//! across files and devices of one identity, and resuming a put that was
//! interrupted (its chunks were recorded as they were acknowledged).
//!
//! One file per vault generation (keyed hashes of different generations
//! never match), of fixed 72-byte records `key hash ‖ blob id ‖ sealed
//! size (u64, 0 when not known)`; a later
//! record for a hash replaces an earlier one. Records are appended without
//! waiting for the disk: losing the tail in a crash only means sending
//! those chunks again. A second file lists the manifests already read, so
//! each is fetched once.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use cairn_proto::BlobId;

use crate::error::{Result, io_at};
use crate::manifest::Manifest;

/// Bytes of one chunk record.
const RECORD: usize = 72;

/// A blob known to hold a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Known {
    /// The blob.
    pub blob: BlobId,
    /// Its sealed size, when known (a chunk read from another device's
    /// manifest comes without it).
    pub sealed_size: Option<u64>,
}

/// The chunks known for one vault generation.
#[derive(Debug)]
pub(crate) struct ChunkIndex {
    chunks: HashMap<[u8; 32], Known>,
    manifests: HashSet<BlobId>,
    chunks_path: PathBuf,
    manifests_path: PathBuf,
}

impl ChunkIndex {
    /// Opens (or starts) the index of generation `generation` in `dir`.
    /// A torn last record (a crash mid-append) is ignored.
    pub(crate) fn open(dir: &Path, generation: u32) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_at(dir))?;
        let chunks_path = dir.join(format!("{generation}.chunks"));
        let manifests_path = dir.join(format!("{generation}.manifests"));
        let mut chunks = HashMap::new();
        for record in read_records(&chunks_path, RECORD)?.chunks_exact(RECORD) {
            let (hash, rest) = record.split_at(32);
            let (blob, size) = rest.split_at(32);
            let mut sealed_size = [0u8; 8];
            sealed_size.copy_from_slice(size);
            let sealed_size = u64::from_be_bytes(sealed_size);
            let known = Known {
                blob: BlobId::from_bytes(to_array(blob)),
                sealed_size: (sealed_size > 0).then_some(sealed_size),
            };
            chunks.insert(to_array(hash), known);
        }
        let manifests = read_records(&manifests_path, 32)?
            .chunks_exact(32)
            .map(|id| BlobId::from_bytes(to_array(id)))
            .collect();
        Ok(Self {
            chunks,
            manifests,
            chunks_path,
            manifests_path,
        })
    }

    /// The blob known to hold the chunk with keyed hash `key_hash`.
    pub(crate) fn get(&self, key_hash: &[u8; 32]) -> Option<Known> {
        self.chunks.get(key_hash).copied()
    }

    /// Records that the blob `known` names holds the chunk with keyed
    /// hash `key_hash`.
    pub(crate) fn insert(&mut self, key_hash: [u8; 32], known: Known) -> Result<()> {
        if self.chunks.get(&key_hash) == Some(&known) {
            return Ok(());
        }
        let mut record = [0u8; RECORD];
        record[..32].copy_from_slice(&key_hash);
        record[32..64].copy_from_slice(known.blob.as_bytes());
        record[64..].copy_from_slice(&known.sealed_size.unwrap_or(0).to_be_bytes());
        append(&self.chunks_path, &record)?;
        self.chunks.insert(key_hash, known);
        Ok(())
    }

    /// Whether the manifest `id` was read into the index already.
    pub(crate) fn has_manifest(&self, id: &BlobId) -> bool {
        self.manifests.contains(id)
    }

    /// Records every chunk of `manifest` (stored as blob `id`).
    pub(crate) fn add_manifest(&mut self, id: BlobId, manifest: &Manifest) -> Result<()> {
        for chunk in manifest.chunks() {
            // A hash already recorded keeps its blob: either holds the
            // chunk, and the one recorded first is as good as any.
            if !self.chunks.contains_key(&chunk.key_hash) {
                let known = Known {
                    blob: chunk.blob,
                    sealed_size: None,
                };
                self.insert(chunk.key_hash, known)?;
            }
        }
        if self.manifests.insert(id) {
            append(&self.manifests_path, id.as_bytes())?;
        }
        Ok(())
    }
}

/// The whole records of the file at `path` (none if it does not exist).
fn read_records(path: &Path, size: usize) -> Result<Vec<u8>> {
    match fs::read(path) {
        Ok(mut bytes) => {
            bytes.truncate(bytes.len() - bytes.len() % size);
            Ok(bytes)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(io_at(path)(err)),
    }
}

/// Appends `bytes` to the file at `path` (mode 0600), dropping a torn
/// record a crash may have left so that records stay aligned.
fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))?;
    let len = file.metadata().map_err(io_at(path))?.len();
    let torn = len % bytes.len() as u64;
    if torn != 0 {
        file.set_len(len - torn).map_err(io_at(path))?;
    }
    file.write_all(bytes).map_err(io_at(path))
}

fn to_array(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::manifest::ChunkRef;

    fn known(what: &[u8], sealed_size: Option<u64>) -> Known {
        Known {
            blob: BlobId::of(what),
            sealed_size,
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = ChunkIndex::open(dir.path(), 3).unwrap();
        index.insert([1; 32], known(b"one", Some(9))).unwrap();
        index.insert([1; 32], known(b"again", Some(10))).unwrap();
        let manifest = Manifest::new(vec![ChunkRef {
            blob: BlobId::of(b"two"),
            len: 5,
            key_hash: [2; 32],
        }])
        .unwrap();
        index.add_manifest(BlobId::of(b"m"), &manifest).unwrap();
        // A crash mid-append leaves part of a record.
        let path = dir.path().join("3.chunks");
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[9; 10])
            .unwrap();

        let mut index = ChunkIndex::open(dir.path(), 3).unwrap();
        assert_eq!(index.get(&[1; 32]), Some(known(b"again", Some(10))));
        assert_eq!(index.get(&[2; 32]), Some(known(b"two", None)));
        assert!(index.has_manifest(&BlobId::of(b"m")));
        // The next append drops the torn bytes, so records stay aligned.
        index.insert([4; 32], known(b"four", Some(1))).unwrap();
        let index = ChunkIndex::open(dir.path(), 3).unwrap();
        assert_eq!(index.get(&[4; 32]), Some(known(b"four", Some(1))));
        assert_eq!(index.get(&[2; 32]), Some(known(b"two", None)));
        // Another generation starts empty.
        assert_eq!(ChunkIndex::open(dir.path(), 4).unwrap().get(&[1; 32]), None);
    }
}
