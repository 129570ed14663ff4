//! Storing a file as chunks (PROTOCOL.md §10.8), in one pass: pieces come
//! from the reading thread (`pieces`), a few are sealed and sent at once,
//! each to every relay of the file concurrently, and memory holds a fixed
//! number of chunks whatever the file's size.
//!
//! A chunk the chunk index (`crate::chunk_index`) knows is not sent again:
//! it is claimed on each relay, which both checks that the relay holds it
//! and makes the identity one of its owners. That deduplicates across the
//! identity's files and devices, and it resumes an interrupted put, whose
//! chunks were recorded as the relays acknowledged them. A relay that
//! lacks a known chunk gets a copy from one that has it (one id for a
//! chunk on every relay is what lets the manifest name it); when none
//! has it, the chunk is sealed and sent afresh.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::join_all;
use tokio::sync::mpsc;

use cairn_proto::{BlobId, SigningKey, X25519PublicKey};

use super::pieces::Piece;
use super::stored::Stored;
use crate::chunk_index::{ChunkIndex, Known};
use crate::client::Client;
use crate::crdt::Table;
use crate::error::{Error, RelayError, Result};
use crate::failures::{Failure, Failures};
use crate::files::Place;
use crate::keys::VaultKey;
use crate::manifest::{ChunkRef, Manifest};
use crate::progress::Progress;
use crate::relay::{Claimed, RelayClient};
use crate::seal;

/// Chunks sealed and sent at once: enough to keep both cores sealing and
/// every relay's connection busy, few enough that memory stays flat.
const IN_FLIGHT: usize = 2;
/// Largest sealed chunk: 8 MiB of data padded (§10.3) and sealed with age's
/// per-64 KiB tags and header, with room to spare.
pub(in crate::client) const MAX_SEALED_CHUNK: usize = 9 << 20;
/// Largest sealed manifest read back (2^20 chunks of 68 bytes, padded and
/// sealed).
pub(super) const MAX_SEALED_MANIFEST: usize = 80 << 20;

/// A relay a file's copies go to, with what uploading there needs.
pub(super) struct Target {
    pub relay: RelayClient,
    pub key: SigningKey,
    pub pow_bits: u8,
}

/// One chunk, stored.
struct StoredPiece {
    index: usize,
    chunk: ChunkRef,
    sealed_size: u64,
    sent: u64,
    reused: bool,
}

/// Which targets failed, and why: a target that fails once gets no more
/// chunks (the file's copy there could not be complete).
#[derive(Default)]
struct Failed(Mutex<BTreeMap<usize, Failure>>);

impl Failed {
    fn mark(&self, target: usize, relay: &RelayClient, err: &RelayError) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target)
            .or_insert_with(|| Failure::at(relay.url(), err));
    }

    fn live(&self, targets: usize) -> Vec<usize> {
        let failed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (0..targets).filter(|t| !failed.contains_key(t)).collect()
    }

    fn failures(&self) -> Failures {
        let mut out = Failures::new();
        for failure in self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            out.push(failure.clone());
        }
        out
    }
}

/// What a chunk upload needs besides the piece.
struct Context<'a> {
    targets: &'a [Target],
    failed: &'a Failed,
    index: &'a Mutex<ChunkIndex>,
    recipient: X25519PublicKey,
}

impl Client {
    /// Stores the pieces `first` and then `rest` as chunks on every one of
    /// `targets`, then their manifest. Fails when a read fails or when no
    /// target is left; the chunks acknowledged so far stay (recorded in
    /// `index`), so that running the put again sends only the others.
    pub(super) async fn upload_chunked(
        &self,
        first: Piece,
        rest: mpsc::Receiver<io::Result<Piece>>,
        targets: &[Target],
        index: &Mutex<ChunkIndex>,
        recipient: X25519PublicKey,
        progress: &Arc<dyn Progress>,
    ) -> Result<Stored> {
        let failed = Failed::default();
        let context = Context {
            targets,
            failed: &failed,
            index,
            recipient,
        };
        let pieces =
            futures_util::stream::once(async { Ok(first) })
                .chain(futures_util::stream::unfold(rest, |mut rx| async {
                    rx.recv().await.map(|item| (item, rx))
                }));
        let context = &context;
        let stored = pieces
            .map(|piece| async move {
                let piece =
                    piece.map_err(|err| Error::Invalid(format!("reading stopped: {err}")))?;
                self.store_piece(piece, context).await
            })
            .buffer_unordered(IN_FLIGHT);
        let mut stored = std::pin::pin!(stored);

        let mut chunks = BTreeMap::new();
        let mut sizes = BTreeMap::new();
        let (mut sent, mut reused, mut done) = (0u64, 0usize, 0u64);
        while let Some(piece) = stored.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(why) if chunks.is_empty() => return Err(why),
                Err(why) => {
                    return Err(Error::Interrupted {
                        chunks: chunks.len(),
                        bytes: done,
                        why: Box::new(why),
                    });
                }
            };
            done += u64::from(piece.chunk.len);
            progress.advance(u64::from(piece.chunk.len));
            sent += piece.sent;
            reused += usize::from(piece.reused);
            sizes.insert(piece.chunk.blob, piece.sealed_size);
            chunks.insert(piece.index, piece.chunk);
        }

        let manifest = Manifest::new(chunks.into_values().collect())
            .map_err(|err| Error::Invalid(format!("the file cannot be chunked: {err}")))?;
        let (manifest_id, sealed) =
            seal_on_worker(Bytes::from(manifest.encode()), recipient).await?;
        sent += self.send_sealed(&manifest_id, &sealed, context).await?;

        // Each blob once, in the order the manifest first names it (a set
        // to look up: a manifest may list a million chunks).
        let mut seen = std::collections::HashSet::with_capacity(sizes.len());
        let blobs: Vec<BlobId> = manifest
            .chunks()
            .iter()
            .map(|chunk| chunk.blob)
            .filter(|blob| seen.insert(*blob))
            .collect();
        let sealed_size = sealed.len() as u64 + sizes.values().sum::<u64>();
        Ok(Stored {
            blob: manifest_id,
            chunks: blobs,
            count: manifest.chunks().len(),
            size: manifest.size(),
            sealed_size,
            holders: failed
                .live(targets.len())
                .into_iter()
                .map(|t| targets[t].relay.clone())
                .collect(),
            failures: failed.failures(),
            sent,
            reused,
        })
    }

    /// Reads into `index` the manifests of the table's chunked files of
    /// `vault`'s generation that it has not read yet (stored by other
    /// devices, or by this one before its index existed), so that their
    /// chunks are claimed rather than sent again. Best effort: a manifest
    /// no relay delivers only means its chunks may be sent again.
    pub(super) async fn learn_manifests(
        &self,
        table: &Table,
        vault: &VaultKey,
        index: &mut ChunkIndex,
    ) {
        // A map: a manifest can be named by several entries (a folder's
        // renamed file, or its versions).
        let unread: BTreeMap<BlobId, Vec<Place>> = table
            .stored_entries()
            .filter(|entry| {
                entry.is_chunked()
                    && entry.generation == vault.generation
                    && !index.has_manifest(&entry.blob)
            })
            .map(|entry| (entry.blob, table.places(entry)))
            .collect();
        for (manifest, places) in unread {
            for place in places {
                let relay = self.contained(self.relay_client(&place.url, place.relay));
                let Ok(sealed) = relay.fetch_bytes(&manifest, MAX_SEALED_MANIFEST).await else {
                    continue;
                };
                let read = seal::open_bytes(&sealed, std::slice::from_ref(&vault.secret))
                    .map_err(|err| err.to_string())
                    .and_then(|plain| Manifest::decode(&plain).map_err(|err| err.to_string()));
                match read {
                    Ok(read) => {
                        if let Err(err) = index.add_manifest(manifest, &read) {
                            tracing::warn!(%err, "chunk index not updated");
                            return;
                        }
                    }
                    Err(err) => tracing::warn!(%manifest, %err, "a manifest does not read"),
                }
                break;
            }
        }
    }

    /// Stores one piece on every live target: claims it when the index
    /// knows it, seals and sends it otherwise.
    async fn store_piece(&self, piece: Piece, context: &Context<'_>) -> Result<StoredPiece> {
        let len = u32::try_from(piece.plain.len())
            .map_err(|_| Error::Invalid("a chunk longer than 4 GiB".into()))?;
        let known = context
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&piece.key_hash);
        if let Some(known) = known
            && let Some((sealed_size, sent)) = self.reuse(&known, context).await?
        {
            return Ok(StoredPiece {
                index: piece.index,
                chunk: ChunkRef {
                    blob: known.blob,
                    len,
                    key_hash: piece.key_hash,
                },
                sealed_size,
                sent,
                reused: true,
            });
        }
        let (id, sealed) = seal_on_worker(piece.plain, context.recipient).await?;
        let sent = self.send_sealed(&id, &sealed, context).await?;
        let sealed_size = sealed.len() as u64;
        let known = Known {
            blob: id,
            sealed_size: Some(sealed_size),
        };
        context
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(piece.key_hash, known)?;
        Ok(StoredPiece {
            index: piece.index,
            chunk: ChunkRef {
                blob: id,
                len,
                key_hash: piece.key_hash,
            },
            sealed_size,
            sent,
            reused: false,
        })
    }

    /// Claims the known chunk on every live target; a target that lacks
    /// it gets a copy from one that has it. Returns its sealed size and the
    /// bytes sent, or `None` when no target holds it (it is then sent
    /// afresh).
    async fn reuse(&self, known: &Known, context: &Context<'_>) -> Result<Option<(u64, u64)>> {
        let live = context.failed.live(context.targets.len());
        let claims = join_all(live.iter().map(|&t| {
            let target = &context.targets[t];
            async move { (t, target.relay.claim(&known.blob, &target.key).await) }
        }))
        .await;
        let mut holders = Vec::new();
        let mut lacking = Vec::new();
        for (t, claim) in claims {
            match claim {
                Ok(Claimed::New | Claimed::Already) => holders.push(t),
                Ok(Claimed::Absent) => lacking.push(t),
                Err(err) => context.failed.mark(t, &context.targets[t].relay, &err),
            }
        }
        let Some(&source) = holders.first() else {
            return Ok(None);
        };
        let source = &context.targets[source].relay;
        if lacking.is_empty() {
            let size = match known.sealed_size {
                Some(size) => size,
                None => match source.probe(&known.blob).await {
                    Ok(Some(held)) => held.size,
                    Ok(None) => return Ok(None),
                    Err(err) => {
                        return Err(Error::Relay {
                            url: source.url().to_owned(),
                            error: err,
                        });
                    }
                },
            };
            return Ok(Some((size, 0)));
        }
        let bytes = match source.fetch_bytes(&known.blob, MAX_SEALED_CHUNK).await {
            Ok(bytes) => Bytes::from(bytes),
            // The copy the relay claimed to hold did not arrive intact:
            // send the chunk afresh rather than trust it.
            Err(_) => return Ok(None),
        };
        let size = bytes.len() as u64;
        let sent = self.send_to(&lacking, &known.blob, &bytes, context).await?;
        Ok(Some((size, sent)))
    }

    /// Sends a sealed blob to every live target at once; returns the bytes
    /// sent. Fails when no target is left.
    async fn send_sealed(&self, id: &BlobId, sealed: &Bytes, context: &Context<'_>) -> Result<u64> {
        let live = context.failed.live(context.targets.len());
        self.send_to(&live, id, sealed, context).await
    }

    /// Sends a sealed blob to `targets` at once; returns the bytes sent.
    /// Fails when no target of the file is left.
    async fn send_to(
        &self,
        to: &[usize],
        id: &BlobId,
        sealed: &Bytes,
        context: &Context<'_>,
    ) -> Result<u64> {
        let results = join_all(to.iter().map(|&t| {
            let target = &context.targets[t];
            async move {
                let result = target
                    .relay
                    .put_bytes(id, sealed.clone(), &target.key, target.pow_bits)
                    .await;
                (t, result)
            }
        }))
        .await;
        let mut sent = 0;
        for (t, result) in results {
            match result {
                Ok(_) => sent += sealed.len() as u64,
                Err(err) => {
                    let relay = &context.targets[t].relay;
                    self.check_refusal(relay, &err, sealed.len() as u64).await;
                    context.failed.mark(t, relay, &err);
                }
            }
        }
        if context.failed.live(context.targets.len()).is_empty() {
            return Err(Error::NotEnoughCopies {
                stored: 0,
                wanted: context.targets.len(),
                failures: context.failed.failures(),
            });
        }
        Ok(sent)
    }
}

/// Copies every blob of `blobs` from `source` to `target` (each verified
/// by its id on the way); returns the bytes sent.
pub(super) async fn copy_blobs(
    source: &RelayClient,
    target: &Target,
    blobs: &[BlobId],
) -> std::result::Result<u64, RelayError> {
    let mut sent = 0;
    for blob in blobs {
        let bytes = Bytes::from(source.fetch_bytes(blob, MAX_SEALED_MANIFEST).await?);
        sent += bytes.len() as u64;
        target
            .relay
            .put_bytes(blob, bytes, &target.key, target.pow_bits)
            .await?;
    }
    Ok(sent)
}

/// Seals `plain` on a blocking worker, so that sealing several chunks uses
/// every core while the runtime keeps the uploads moving.
pub(super) async fn seal_on_worker(
    plain: Bytes,
    recipient: X25519PublicKey,
) -> Result<(BlobId, Bytes)> {
    // Allocated here, on a runtime thread: chunk buffers then come from few
    // malloc arenas, which keeps what freed ones hold resident small.
    let out = Vec::with_capacity(seal::sealed_capacity(plain.len()));
    tokio::task::spawn_blocking(move || seal::seal_bytes_into(&plain, &recipient, out))
        .await
        .map_err(|err| Error::Invalid(format!("sealing stopped: {err}")))?
        .map(|(id, bytes)| (id, Bytes::from(bytes)))
        .map_err(|err| Error::Invalid(format!("sealing failed: {err}")))
}
