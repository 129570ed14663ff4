//! Reading a chunked file (PROTOCOL.md §10.8): its manifest from the
//! fastest holder, then the chunks a range needs, several at once and from
//! different relays, each verified (its id, then its seal and length)
//! before its bytes are written, in order. Standard output gets data as
//! soon as the chunks before it are in; a file is written beside its
//! destination and renamed into place once whole.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;

use cairn_proto::BlobId;

use super::chunked::{MAX_SEALED_CHUNK, MAX_SEALED_MANIFEST};
use super::{ByteRange, Output};
use crate::client::Client;
use crate::error::{Error, RelayError, Result, io_at};
use crate::failures::{Failure, Failures};
use crate::files::FileEntry;
use crate::keys::X25519Secret;
use crate::manifest::{ChunkRef, Manifest, chunk_key_hash};
use crate::progress::Progress;
use crate::relay::RelayClient;
use crate::seal;

/// Chunks fetched at once.
const PARALLEL: usize = 2;

/// What opening a chunked file's chunks takes: the vault keys, and the
/// chunk id key of the file's generation, which checks that each chunk is
/// the one the manifest means (its keyed hash; §10.8), not merely a blob
/// of this identity of the same length.
#[derive(Clone)]
pub(super) struct ChunkKeys {
    pub keys: Vec<X25519Secret>,
    pub id_key: zeroize::Zeroizing<[u8; 32]>,
}

/// Where a chunked file's chunks are asked for: `relays`, of which the
/// first `spread` hold the file (its manifest), so chunks are spread over
/// those first; the others are asked when they fail (a chunk can have moved
/// on its own).
pub(super) struct ChunkSources {
    pub relays: Vec<RelayClient>,
    pub spread: usize,
    /// Chunks a local file already holds, read from it instead of fetched.
    pub local: Option<LocalChunks>,
}

/// The chunks of a file on this device (an earlier version of the one
/// being fetched, say), by keyed hash: where each lies in it. What is read
/// from it is checked against the keyed hash the manifest names, so a file
/// changed since costs a fetch, never a wrong byte.
pub(in crate::client) struct LocalChunks {
    pub path: std::path::PathBuf,
    pub at: std::collections::HashMap<[u8; 32], (u64, u32)>,
}

impl LocalChunks {
    /// The chunks `manifest` lists, in the file at `path` it describes.
    pub(super) fn of(path: &Path, manifest: &Manifest) -> Self {
        let at = manifest
            .covering(0, manifest.size())
            .map(|(offset, chunk)| (chunk.key_hash, (offset, chunk.len)))
            .collect();
        Self {
            path: path.to_owned(),
            at,
        }
    }

    /// Where `chunk` lies in the local file, if it is one of its chunks.
    fn place_of(&self, chunk: &ChunkRef) -> Option<(std::path::PathBuf, u64)> {
        let &(offset, len) = self.at.get(&chunk.key_hash)?;
        (len == chunk.len).then(|| (self.path.clone(), offset))
    }
}

/// `chunk`'s plaintext from `path` at `offset`, if it lies there intact.
fn read_local(path: &Path, offset: u64, chunk: &ChunkRef, id_key: &[u8; 32]) -> Option<Bytes> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::open(path).ok()?;
    let mut data = vec![0u8; usize::try_from(chunk.len).ok()?];
    file.read_exact_at(&mut data, offset).ok()?;
    (chunk_key_hash(id_key, &data) == chunk.key_hash).then(|| Bytes::from(data))
}

/// What [`Client::assemble`] did.
pub(super) struct Assembled {
    /// Bytes written.
    pub written: u64,
    /// Chunks in the range.
    pub chunks: usize,
    /// Bytes of those read from a local file instead of fetched.
    pub from_disk: u64,
    /// Relays that failed a chunk, with why.
    pub skipped: Failures,
}

/// A chunked file's manifest, read and checked against its entry.
pub(super) struct Opened {
    pub manifest: Manifest,
    /// The relay that served it.
    pub relay: RelayClient,
}

impl Client {
    /// Fetches and opens `entry`'s manifest from the first of `order` that
    /// delivers it intact, checking it against the entry (size and chunk
    /// blobs). Relays that fail are noted in `skipped` and scored.
    pub(super) async fn open_manifest(
        &self,
        entry: &FileEntry,
        order: &[RelayClient],
        keys: &[X25519Secret],
        skipped: &mut Failures,
    ) -> Result<Opened> {
        for relay in order {
            let sealed = match relay.fetch_bytes(&entry.blob, MAX_SEALED_MANIFEST).await {
                Ok(sealed) => sealed,
                Err(err) => {
                    self.note_failed_fetch(relay, &entry.blob, &err);
                    skipped.at(relay.url(), &err);
                    continue;
                }
            };
            // The bytes hash to the id the table names: whatever is wrong
            // with them now, no other relay holds better ones.
            let unsealable = |reason: String| Error::Unsealable {
                id: entry.blob,
                reason,
            };
            let plain = seal::open_bytes(&sealed, keys).map_err(|e| unsealable(e.to_string()))?;
            let manifest = Manifest::decode(&plain).map_err(|e| unsealable(e.to_string()))?;
            let listed: std::collections::BTreeSet<&BlobId> =
                manifest.chunks().iter().map(|c| &c.blob).collect();
            let recorded: std::collections::BTreeSet<&BlobId> = entry.chunks.iter().collect();
            if manifest.size() != entry.size || listed != recorded {
                return Err(unsealable(
                    "the manifest does not match the file list's entry (size or chunks)".into(),
                ));
            }
            return Ok(Opened {
                manifest,
                relay: relay.clone(),
            });
        }
        Err(Error::Unavailable {
            id: entry.blob,
            failures: std::mem::take(skipped).or_else("no relay in your set holds it"),
        })
    }

    /// Writes bytes `range` of the file `manifest` describes to `output`,
    /// fetching each chunk needed from `sources`: chunk *i* first from
    /// relay *i* mod `spread`, then from the others in order. Returns the
    /// bytes written, the chunks fetched, and the relays that failed a
    /// chunk, with why.
    pub(super) async fn assemble(
        &self,
        manifest: &Manifest,
        range: ByteRange,
        sources: &ChunkSources,
        keys: &ChunkKeys,
        output: &Output,
        progress: &Arc<dyn Progress>,
    ) -> Result<Assembled> {
        let (start, end) = (range.start, range.end);
        let needed: Vec<(u64, ChunkRef)> = manifest
            .covering(start, end)
            .map(|(at, chunk)| (at, *chunk))
            .collect();
        let count = needed.len();
        let fetched = futures_util::stream::iter(needed.into_iter().enumerate())
            .map(|(i, (at, chunk))| async move {
                let local = match sources.local.as_ref().and_then(|l| l.place_of(&chunk)) {
                    Some((path, offset)) => {
                        let id_key = keys.id_key.clone();
                        tokio::task::spawn_blocking(move || {
                            read_local(&path, offset, &chunk, &id_key)
                        })
                        .await
                        .ok()
                        .flatten()
                    }
                    None => None,
                };
                let from_disk = local.is_some();
                let (plain, failures) = match local {
                    Some(plain) => (plain, Failures::new()),
                    None => {
                        let order = &sources.relays;
                        let first = i % sources.spread.clamp(1, order.len().max(1));
                        self.fetch_chunk(&chunk, first, order, keys).await?
                    }
                };
                // The part of this chunk inside the range.
                let from = usize::try_from(start.saturating_sub(at)).unwrap_or(usize::MAX);
                let to =
                    usize::try_from((end - at).min(u64::from(chunk.len))).unwrap_or(usize::MAX);
                Ok::<_, Error>((plain.slice(from.min(to)..to), failures, from_disk))
            })
            .buffered(PARALLEL);
        let mut fetched = std::pin::pin!(fetched);
        let temp = match output {
            Output::File(path) => Some(temp_beside(path)?),
            Output::Stdout => None,
        };
        let file = match &temp {
            Some(temp) => Some(Arc::new(temp.reopen().map_err(io_at(temp.path()))?)),
            None => None,
        };
        let mut written = 0u64;
        let mut from_disk = 0u64;
        let mut skipped = Failures::new();
        while let Some(part) = fetched.next().await {
            let (part, failures, local) = part?;
            if local {
                from_disk += part.len() as u64;
            }
            skipped.extend(failures);
            let len = part.len() as u64;
            // Blocking writes on a worker: a slow disk or reader holds
            // back only this loop, and the chunk is written from where
            // it lies, not copied into another buffer.
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::Write as _;
                match file {
                    Some(file) => (&*file).write_all(&part),
                    None => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&part)?;
                        out.flush()
                    }
                }
            })
            .await
            .map_err(|err| Error::Invalid(format!("writing stopped: {err}")))?
            .map_err(|err| match &temp {
                Some(temp) => io_at(temp.path())(err),
                None => Error::Invalid(format!("writing to standard output: {err}")),
            })?;
            written += len;
            progress.advance(len);
        }
        if let (Some(temp), Output::File(path)) = (temp, output) {
            put_in_place(temp, path)?;
        }
        Ok(Assembled {
            written,
            chunks: count,
            from_disk,
            skipped,
        })
    }

    /// One chunk's plaintext, from the first relay that serves it intact,
    /// starting at relay `first` of `order`, then the others in order, and
    /// the relays that failed it first.
    async fn fetch_chunk(
        &self,
        chunk: &ChunkRef,
        first: usize,
        order: &[RelayClient],
        keys: &ChunkKeys,
    ) -> Result<(Bytes, Failures)> {
        let mut failures = Failures::new();
        let tried = order.get(first).into_iter().chain(
            order
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != first)
                .map(|(_, r)| r),
        );
        for relay in tried {
            let sealed = match relay.fetch_bytes(&chunk.blob, MAX_SEALED_CHUNK).await {
                Ok(sealed) => sealed,
                // Not holding it is no misbehaviour here: relays beyond the
                // file's holders are asked too, and audits tell a lost copy.
                Err(err) if err.is_absent() => {
                    failures.push(Failure::note(
                        relay.url(),
                        format!("does not hold chunk {}", chunk.blob),
                    ));
                    continue;
                }
                // Not named by chunk: a relay that is down fails every
                // chunk the same way, and is said to once.
                Err(err) => {
                    self.note_failed_fetch(relay, &chunk.blob, &err);
                    failures.at(relay.url(), &err);
                    continue;
                }
            };
            // The bytes hash to the id the manifest names: if they do not
            // open to the chunk, no other relay holds better ones.
            let (keys, expected) = (keys.clone(), *chunk);
            // Allocated here, on a runtime thread, like the sealed bytes:
            // chunk buffers then come from few malloc arenas, which keeps
            // what freed ones hold resident small.
            let out = Vec::with_capacity(sealed.len());
            let plain =
                tokio::task::spawn_blocking(move || open_chunk(&sealed, &keys, &expected, out))
                    .await
                    .map_err(|err| Error::Invalid(format!("opening stopped: {err}")))?
                    .map_err(|reason| Error::Unsealable {
                        id: chunk.blob,
                        reason,
                    })?;
            return Ok((Bytes::from(plain), failures));
        }
        Err(Error::Unavailable {
            id: chunk.blob,
            failures: failures.or_else("no relay to ask"),
        })
    }

    /// Records what a failed fetch says about the relay: wrong bytes and a
    /// refused redirect are misbehaviour, anything else being down.
    pub(super) fn note_failed_fetch(&self, relay: &RelayClient, id: &BlobId, err: &RelayError) {
        self.record_scores(|s| match err {
            RelayError::RedirectRefused(_) => s.misbehaved(
                relay.key(),
                relay.url(),
                crate::scores::Misbehaviour::BadRedirect,
                self.now(),
                err.to_string(),
            ),
            RelayError::WrongBytes(_) => s.misbehaved(
                relay.key(),
                relay.url(),
                crate::scores::Misbehaviour::Corrupt,
                self.now(),
                format!("served blob {id} with wrong bytes"),
            ),
            _ => s.unavailable(relay.key(), relay.url(), self.now()),
        });
    }
}

/// Opens a sealed chunk and checks it is the one `expected` names: its
/// length, and its keyed hash (a blob of this identity that merely opens
/// is not enough: any device can seal to the vault's public key).
fn open_chunk(
    sealed: &[u8],
    keys: &ChunkKeys,
    expected: &ChunkRef,
    out: Vec<u8>,
) -> std::result::Result<Vec<u8>, String> {
    let plain = seal::open_bytes_into(sealed, &keys.keys, out).map_err(|err| err.to_string())?;
    if plain.len() != expected.len as usize {
        return Err(format!(
            "holds {} where the manifest says {}",
            crate::text::count(plain.len() as u64, "byte", "bytes"),
            expected.len
        ));
    }
    if chunk_key_hash(&keys.id_key, &plain) != expected.key_hash {
        return Err("is not the chunk the manifest names (its keyed hash differs)".to_owned());
    }
    Ok(plain)
}

/// Makes `temp` durable and renames it onto `path`: a get's output
/// appears whole or not at all.
pub(super) fn put_in_place(temp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    temp.as_file().sync_all().map_err(io_at(temp.path()))?;
    temp.persist(path).map_err(|err| Error::Io {
        path: path.to_path_buf(),
        error: err.error,
    })?;
    Ok(())
}

/// A private temporary file beside `path`, renamed onto it once complete.
pub(super) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".cairn-get-")
        .tempfile_in(dir)
        .map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_chunk_is_accepted_only_as_the_one_the_manifest_names() {
        let secret = X25519Secret::from_bytes([7; 32]);
        let keys = ChunkKeys {
            keys: vec![secret.clone()],
            id_key: zeroize::Zeroizing::new([9; 32]),
        };
        let (meant, other) = (vec![1u8; 1000], vec![2u8; 1000]);
        let expected = ChunkRef {
            blob: BlobId::of(b"unused here"),
            len: 1000,
            key_hash: chunk_key_hash(&keys.id_key, &meant),
        };
        let (_, sealed) = seal::seal_bytes(&meant, &secret.public()).unwrap();
        assert_eq!(
            open_chunk(&sealed, &keys, &expected, Vec::new()).unwrap(),
            meant
        );
        // Another chunk of the same length, sealed to the same key, as a
        // device could name it in a manifest of its own: refused.
        let (_, swapped) = seal::seal_bytes(&other, &secret.public()).unwrap();
        let err = open_chunk(&swapped, &keys, &expected, Vec::new()).unwrap_err();
        assert!(err.contains("keyed hash"), "{err}");
        // A shorter one: refused for its length.
        let (_, short) = seal::seal_bytes(&meant[..999], &secret.public()).unwrap();
        assert!(
            open_chunk(&short, &keys, &expected, Vec::new())
                .unwrap_err()
                .contains("999")
        );
    }
}
