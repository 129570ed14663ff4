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
use crate::files::FileEntry;
use crate::keys::X25519Secret;
use crate::manifest::{ChunkRef, Manifest};
use crate::progress::Progress;
use crate::relay::RelayClient;
use crate::seal;

/// Chunks fetched at once.
const PARALLEL: usize = 2;

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
        skipped: &mut Vec<String>,
    ) -> Result<Opened> {
        for relay in order {
            let sealed = match relay.fetch_bytes(&entry.blob, MAX_SEALED_MANIFEST).await {
                Ok(sealed) => sealed,
                Err(err) => {
                    self.note_failed_fetch(relay, &entry.blob, &err);
                    skipped.push(format!("{}: {err}", relay.url()));
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
            failures: if skipped.is_empty() {
                "no relay in your set holds it".into()
            } else {
                skipped.join("; ")
            },
        })
    }

    /// Writes bytes `range` of the file `manifest` describes to `output`,
    /// fetching each chunk needed from `order` (chunk *i* first from relay
    /// *i* mod *n*, then the others). Returns the bytes written, the
    /// chunks fetched, and the relays that failed a chunk, with why.
    pub(super) async fn assemble(
        &self,
        manifest: &Manifest,
        range: ByteRange,
        order: &[RelayClient],
        keys: &[X25519Secret],
        output: &Output,
        progress: &Arc<dyn Progress>,
    ) -> Result<(u64, usize, Vec<String>)> {
        let (start, end) = (range.start, range.end);
        let needed: Vec<(u64, ChunkRef)> = manifest
            .covering(start, end)
            .map(|(at, chunk)| (at, *chunk))
            .collect();
        let count = needed.len();
        let fetched = futures_util::stream::iter(needed.into_iter().enumerate())
            .map(|(i, (at, chunk))| async move {
                let (plain, failures) = self.fetch_chunk(&chunk, i, order, keys).await?;
                // The part of this chunk inside the range.
                let from = usize::try_from(start.saturating_sub(at)).unwrap_or(usize::MAX);
                let to =
                    usize::try_from((end - at).min(u64::from(chunk.len))).unwrap_or(usize::MAX);
                Ok::<_, Error>((plain.slice(from.min(to)..to), failures))
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
        let mut skipped = Vec::new();
        while let Some(part) = fetched.next().await {
            let (part, failures) = part?;
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
            temp.as_file().sync_all().map_err(io_at(temp.path()))?;
            temp.persist(path).map_err(|err| Error::Io {
                path: path.clone(),
                source: err.error,
            })?;
        }
        Ok((written, count, skipped))
    }

    /// One chunk's plaintext, from the first relay that serves it intact,
    /// starting at relay `i` mod the number of relays, and the relays that
    /// failed it first.
    async fn fetch_chunk(
        &self,
        chunk: &ChunkRef,
        i: usize,
        order: &[RelayClient],
        keys: &[X25519Secret],
    ) -> Result<(Bytes, Vec<String>)> {
        let mut failures = Vec::new();
        let n = order.len().max(1);
        for relay in order.iter().cycle().skip(i % n).take(order.len()) {
            let sealed = match relay.fetch_bytes(&chunk.blob, MAX_SEALED_CHUNK).await {
                Ok(sealed) => sealed,
                Err(err) => {
                    self.note_failed_fetch(relay, &chunk.blob, &err);
                    failures.push(format!("{}: chunk {}: {err}", relay.url(), chunk.blob));
                    continue;
                }
            };
            // The bytes hash to the id the manifest names: if they do not
            // open to the chunk, no other relay holds better ones.
            let keys = keys.to_vec();
            let plain = tokio::task::spawn_blocking(move || seal::open_bytes(&sealed, &keys))
                .await
                .map_err(|err| Error::Invalid(format!("opening stopped: {err}")))?
                .map_err(|err| Error::Unsealable {
                    id: chunk.blob,
                    reason: err.to_string(),
                })?;
            if plain.len() != chunk.len as usize {
                return Err(Error::Unsealable {
                    id: chunk.blob,
                    reason: format!(
                        "holds {} bytes where the manifest says {}",
                        plain.len(),
                        chunk.len
                    ),
                });
            }
            return Ok((Bytes::from(plain), failures));
        }
        Err(Error::Unavailable {
            id: chunk.blob,
            failures: if failures.is_empty() {
                "no relay to ask".into()
            } else {
                failures.join("; ")
            },
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
                crate::relay::unix_now(),
                err.to_string(),
            ),
            RelayError::WrongBytes(_) => s.misbehaved(
                relay.key(),
                relay.url(),
                crate::scores::Misbehaviour::Corrupt,
                crate::relay::unix_now(),
                format!("served blob {id} with wrong bytes"),
            ),
            _ => s.unavailable(relay.key(), relay.url()),
        });
    }
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
