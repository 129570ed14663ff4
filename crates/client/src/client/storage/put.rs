//! Storing files: sealing, choosing relays, uploading the copies.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::{StreamExt as _, TryStreamExt as _};

use cairn_policy::choice::{Offer, Unfit, copies_wanted};
use cairn_proto::{BlobId, ErrorCode, RelayInfo, Verified};

use super::chunked::{MAX_SEALED_CHUNK, Target, copy_blobs, seal_on_worker};
use super::pieces::{self, Piece};
use super::stored::Stored;
use super::{INFO_TIMEOUT, PutReport};

use crate::chunk_index::ChunkIndex;
use crate::chunking::Chunker;
use crate::client::Client;
use crate::crdt::Change;
use crate::error::{Error, RelayError, Result, io_at};
use crate::failures::{Failure, Failures};
use crate::files::{Copy, FileEntry, check_name};
use crate::progress::Progress;
use crate::relay::RelayClient;
use crate::scores::Misbehaviour;
use crate::text::count;

/// Pieces read ahead of sealing: with [`super::chunked`]'s chunks in flight,
/// what bounds the memory a put holds.
const READ_AHEAD: usize = 1;

/// Small files sealed at once (each on a blocking thread).
const SEALS_IN_FLIGHT: usize = 4;

/// Relays that can take a put, best first, with their signed info.
pub(in crate::client) type Candidates = Vec<(RelayClient, Verified<RelayInfo>)>;

/// A file's data, stored and not yet listed.
pub(in crate::client) struct Content {
    /// The entry that lists it.
    pub entry: FileEntry,
    /// What storing it did.
    pub stored: Stored,
    /// What the caller should tell the person.
    pub warnings: Vec<String>,
}

impl Client {
    /// Seals the file at `source` and stores it under `name` on
    /// `replicas()` relays (every relay when the set is smaller). Succeeds
    /// only when that many copies are acknowledged; otherwise removes the
    /// copies it made and records nothing.
    pub async fn put(
        &mut self,
        source: &Path,
        name: &str,
        progress: Arc<dyn Progress>,
    ) -> Result<PutReport> {
        let file = std::fs::File::open(source).map_err(io_at(source))?;
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.put_reader(Box::new(file), total, name, progress).await
    }

    /// [`Client::put`] from any reader (`size_hint` only sizes the progress
    /// bar).
    pub async fn put_reader(
        &mut self,
        input: Box<dyn std::io::Read + Send>,
        size_hint: u64,
        name: &str,
        progress: Arc<dyn Progress>,
    ) -> Result<PutReport> {
        check_name(name)?;
        let mut state = self.synced().await?;
        let report = self
            .store_one(&mut state, input, size_hint, name, progress)
            .await;
        // The replaced blob's copies that this device made go now.
        self.finish_change(&mut state).await?;
        report
    }

    /// Stores several files in one go (one sync, one save of the local
    /// state), each as [`Client::put`] would. Stops at the first failure,
    /// keeping what was stored before it.
    pub async fn put_many(
        &mut self,
        files: &[(PathBuf, String)],
        progress: Arc<dyn Progress>,
    ) -> Result<Vec<PutReport>> {
        for (_, name) in files {
            check_name(name)?;
        }
        let mut state = self.synced().await?;
        let mut reports = Vec::with_capacity(files.len());
        let mut failure = None;
        for (path, name) in files {
            let opened = std::fs::File::open(path).map_err(io_at(path));
            let stored = match opened {
                Ok(file) => {
                    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    self.store_one(&mut state, Box::new(file), size, name, progress.clone())
                        .await
                }
                Err(err) => Err(err),
            };
            match stored {
                Ok(report) => reports.push(report),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        self.finish_change(&mut state).await?;
        match failure {
            Some(err) => Err(err),
            None => Ok(reports),
        }
    }

    /// Seals, places and uploads one file and appends its `put` operation
    /// to `state` (not saved).
    async fn store_one(
        &mut self,
        state: &mut crate::client::sync::SyncState,
        input: Box<dyn std::io::Read + Send>,
        size_hint: u64,
        name: &str,
        progress: Arc<dyn Progress>,
    ) -> Result<PutReport> {
        self.require_active()?;
        let Content {
            entry,
            stored,
            mut warnings,
        } = self
            .store_content(state, input, size_hint, None, progress)
            .await?;
        let replaced = Self::table_of(state).get(name).cloned();
        let change = Change::Put {
            name: name.to_owned(),
            entry: entry.clone(),
        };
        match self.append(state, change).await {
            Ok(failures) => {
                // Owned only once listed: a copy owned and not listed is
                // let go of, and the chunks of a put that failed here are
                // to stay for the put run again.
                Self::record_stored(state, &entry, &stored.holders);
                warnings.extend(
                    failures
                        .into_iter()
                        .map(|f| format!("file list not updated on {f}")),
                );
            }
            Err(err) => {
                self.forget_stored(&entry, &stored.holders).await;
                return Err(err);
            }
        }
        Ok(PutReport {
            name: name.to_owned(),
            blob: stored.blob,
            size: stored.size,
            sealed_size: stored.sealed_size,
            chunks: stored.count,
            reused: stored.reused,
            sent: stored.sent,
            copies: entry.copies.iter().map(|c| c.url.clone()).collect(),
            replaced: replaced.map(|old| old.blob.to_string()),
            warnings,
        })
    }

    /// Records this device's copies of `entry`'s blobs, now that an
    /// operation lists them.
    pub(in crate::client) fn record_stored(
        state: &mut crate::client::sync::SyncState,
        entry: &FileEntry,
        holders: &[RelayClient],
    ) {
        for blob in entry.blobs() {
            Self::record_owned(state, blob, holders.iter().map(|r| *r.key()));
        }
    }

    /// Undoes what [`Client::store_content`] stored when no operation came
    /// to list it: a one-blob file's copies go; a chunked file's chunks
    /// stay for the put run again (only its manifest goes).
    pub(in crate::client) async fn forget_stored(
        &self,
        entry: &FileEntry,
        holders: &[RelayClient],
    ) {
        self.delete_own_everywhere(holders, &entry.blob).await;
    }

    /// Seals and uploads the data `input` gives on `replicas()` relays,
    /// chosen among `candidates` (asked of the relays now when `None`),
    /// and returns the entry that lists them; nothing is recorded.
    /// `&self`: a folder pass stores several files at once.
    pub(in crate::client) async fn store_content(
        &self,
        state: &crate::client::sync::SyncState,
        input: Box<dyn std::io::Read + Send>,
        size_hint: u64,
        candidates: Option<&Candidates>,
        progress: Arc<dyn Progress>,
    ) -> Result<Content> {
        let vault = self.current_vault()?;
        let mut pieces = pieces::read(
            input,
            Chunker::new(&vault.chunking_key()),
            vault.chunk_id_key(),
            READ_AHEAD,
        );
        let first = pieces
            .recv()
            .await
            .ok_or_else(|| Error::Invalid("reading stopped before the first byte".into()))?
            .map_err(|err| Error::Invalid(format!("reading failed: {err}")))?;

        let wanted = copies_wanted(self.replicas(), self.relays.entries().len());
        // A chunked file's largest blob is a chunk (or, for a file of more
        // than a few GiB, its manifest), whatever the file's size.
        let total = size_hint.max(first.plain.len() as u64);
        let largest = if first.whole {
            total
        } else {
            total.min(MAX_SEALED_CHUNK as u64)
        };
        let asked;
        // Relays that could not take it, and why: said with the put's
        // warnings, or with its failure.
        let (candidates, mut problems) = match candidates {
            Some(given) => (given.as_slice(), Failures::new()),
            None => {
                asked = self.candidates(total, largest).await;
                (asked.0.as_slice(), asked.1.clone())
            }
        };
        if wanted < self.replicas() {
            problems.push(Failure::general(format!(
                "your relay set has {}, fewer than the {} wanted: redundancy is below target \
                 (add relays with `cairn relay add URL`)",
                count(wanted as u64, "relay", "relays"),
                count(self.replicas() as u64, "copy", "copies"),
            )));
        }
        let stored = if first.whole {
            self.store_whole(first, candidates, wanted, &progress).await
        } else {
            self.store_chunks(
                state, first, pieces, candidates, wanted, size_hint, &progress,
            )
            .await
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(Error::NotEnoughCopies {
                stored,
                wanted,
                failures,
            }) => {
                // The relays that could not take it at all come first;
                // only when none failed is the shortage itself the reason.
                problems.extend(failures);
                return Err(Error::NotEnoughCopies {
                    stored,
                    wanted,
                    failures: problems.or_else("not enough relays have room for it"),
                });
            }
            Err(err) => return Err(err),
        };
        let mut warnings: Vec<String> = problems.iter().map(ToString::to_string).collect();
        warnings.extend(
            stored
                .failures
                .iter()
                .map(|f| format!("replaced a failing relay: {f}")),
        );

        Ok(Content {
            entry: self.entry_of(&stored, vault.generation),
            stored,
            warnings,
        })
    }

    /// The entry that lists `stored`, sealed in vault `generation`.
    fn entry_of(&self, stored: &Stored, generation: u32) -> FileEntry {
        let me = self.device_key();
        FileEntry {
            blob: stored.blob,
            chunks: stored.chunks.clone(),
            size: stored.size,
            sealed_size: stored.sealed_size,
            generation,
            stored_at: self.now(),
            copies: stored
                .holders
                .iter()
                .map(|relay| Copy {
                    url: relay.url().to_owned(),
                    relay: *relay.key(),
                    owner: me,
                })
                .collect(),
        }
    }

    /// Stores many small files, each as one sealed blob as
    /// [`Client::store_content`] stores a file of one piece, on
    /// `replicas()` of `candidates`: each relay gets them in batches
    /// (PROTOCOL.md §7.3), and a blob a relay refuses goes on to the next
    /// candidate. One result per file, in order; nothing is recorded.
    pub(in crate::client) async fn store_small_files(
        &self,
        files: Vec<Bytes>,
        candidates: &Candidates,
    ) -> Result<Vec<Result<Content>>> {
        let vault = self.current_vault()?;
        let recipient = vault.secret.public();
        let sealed: Vec<(BlobId, Bytes)> = futures_util::stream::iter(files.iter().cloned())
            .map(|plain| seal_on_worker(plain, recipient))
            .buffered(SEALS_IN_FLIGHT)
            .try_collect()
            .await?;
        // Two files of the same bytes seal to one blob: sent once.
        let mut unique = sealed.clone();
        unique.sort_unstable_by_key(|(id, _)| *id);
        unique.dedup_by_key(|(id, _)| *id);
        let wanted = copies_wanted(self.replicas(), self.relays.entries().len());
        let mut holders: HashMap<BlobId, Vec<(RelayClient, bool)>> = HashMap::new();
        let mut failures: HashMap<BlobId, Failures> = HashMap::new();
        for (relay, info) in candidates {
            let pending: Vec<(BlobId, Bytes)> = unique
                .iter()
                .filter(|(id, _)| holders.get(id).map_or(0, Vec::len) < wanted)
                .cloned()
                .collect();
            if pending.is_empty() {
                break;
            }
            let sent = match self.owner_key(relay.key()) {
                Ok(key) => relay.put_many(&pending, &key, info.limits.pow_bits).await,
                Err(err) => Err(RelayError::Protocol(err.to_string())),
            };
            match sent {
                Ok(results) => {
                    for ((id, bytes), result) in pending.iter().zip(results) {
                        match result {
                            Ok(new) => holders.entry(*id).or_default().push((relay.clone(), new)),
                            Err(err) => {
                                self.check_refusal(relay, &err, bytes.len() as u64).await;
                                failures.entry(*id).or_default().at(relay.url(), &err);
                            }
                        }
                    }
                }
                Err(err) => {
                    for (id, _) in &pending {
                        failures.entry(*id).or_default().at(relay.url(), &err);
                    }
                }
            }
        }
        let mut short = HashSet::new();
        let mut results = Vec::with_capacity(files.len());
        for (plain, (id, blob)) in files.iter().zip(&sealed) {
            let held = holders.get(id).map_or(&[][..], Vec::as_slice);
            let failed = failures.get(id).cloned().unwrap_or_default();
            if held.len() < wanted {
                if short.insert(*id) {
                    self.undo_new_copies(held, id).await;
                }
                results.push(Err(Error::NotEnoughCopies {
                    stored: held.len(),
                    wanted,
                    failures: failed.or_else("not enough relays have room for it"),
                }));
                continue;
            }
            let stored = Stored {
                blob: *id,
                chunks: Vec::new(),
                count: 0,
                size: plain.len() as u64,
                sealed_size: blob.len() as u64,
                // A batch sends every blob's bytes, held already or not.
                sent: blob.len() as u64 * held.len() as u64,
                reused: 0,
                holders: held.iter().map(|(relay, _)| relay.clone()).collect(),
                failures: failed.clone(),
            };
            let warnings = failed
                .iter()
                .map(|f| format!("replaced a failing relay: {f}"))
                .collect();
            results.push(Ok(Content {
                entry: self.entry_of(&stored, vault.generation),
                stored,
                warnings,
            }));
        }
        Ok(results)
    }

    /// Stores a file that is one piece as one sealed blob on `wanted` of
    /// `candidates`, replacing each failing relay with the next.
    async fn store_whole(
        &self,
        piece: Piece,
        candidates: &[(RelayClient, Verified<RelayInfo>)],
        wanted: usize,
        progress: &Arc<dyn Progress>,
    ) -> Result<Stored> {
        let size = piece.plain.len() as u64;
        let (id, sealed) =
            seal_on_worker(piece.plain, self.current_vault()?.secret.public()).await?;
        progress.begin("uploading", sealed.len() as u64 * wanted as u64);
        let (stored, failures) = self
            .upload_copies(candidates, wanted, &id, &sealed, progress)
            .await;
        progress.end();
        if stored.len() < wanted {
            self.undo_new_copies(&stored, &id).await;
            // Said with the relays that could not be asked, by the caller.
            return Err(Error::NotEnoughCopies {
                stored: stored.len(),
                wanted,
                failures,
            });
        }
        Ok(Stored {
            blob: id,
            chunks: Vec::new(),
            count: 0,
            size,
            sealed_size: sealed.len() as u64,
            sent: sealed.len() as u64 * stored.len() as u64,
            reused: 0,
            holders: stored.into_iter().map(|(relay, _)| relay).collect(),
            failures,
        })
    }

    /// Stores a file of several pieces as chunks and a manifest on the
    /// first `wanted` of `candidates`; a relay that fails part-way is
    /// replaced by the next candidate, which gets copies of the blobs from
    /// one that holds them all.
    #[allow(clippy::too_many_arguments)] // one call site, each argument distinct
    async fn store_chunks(
        &self,
        state: &crate::client::sync::SyncState,
        first: Piece,
        rest: tokio::sync::mpsc::Receiver<std::io::Result<Piece>>,
        candidates: &[(RelayClient, Verified<RelayInfo>)],
        wanted: usize,
        size_hint: u64,
        progress: &Arc<dyn Progress>,
    ) -> Result<Stored> {
        let vault = self.current_vault()?;
        let target = |(relay, info): &(RelayClient, Verified<RelayInfo>)| -> Result<Target> {
            Ok(Target {
                relay: relay.clone(),
                key: self.owner_key(relay.key())?,
                pow_bits: info.limits.pow_bits,
            })
        };
        if candidates.len() < wanted {
            // Better now than after sending the file to the others.
            return Err(Error::NotEnoughCopies {
                stored: 0,
                wanted,
                failures: Failures::new().or_else(&format!(
                    "only {} of the set's relays can take it now",
                    candidates.len()
                )),
            });
        }
        let split = wanted;
        let targets = candidates[..split]
            .iter()
            .map(target)
            .collect::<Result<Vec<_>>>()?;
        if targets.is_empty() {
            return Err(Error::NotEnoughCopies {
                stored: 0,
                wanted,
                failures: Failures::new().or_else("not enough relays have room for it"),
            });
        }
        let mut index = ChunkIndex::open(&self.home.chunk_index(), vault.generation)?;
        self.learn_manifests(Self::table_of(state), &vault, &mut index)
            .await;
        let index = std::sync::Mutex::new(index);

        progress.begin("storing", size_hint);
        let upload = self
            .upload_chunked(
                first,
                rest,
                &targets,
                &index,
                vault.secret.public(),
                progress,
            )
            .await;
        progress.end();
        let mut upload = upload?;

        let blobs: Vec<BlobId> = std::iter::once(upload.blob)
            .chain(upload.chunks.iter().copied())
            .collect();
        for spare in &candidates[split..] {
            if upload.holders.len() >= wanted {
                break;
            }
            let Some(source) = upload.holders.first().cloned() else {
                break;
            };
            let spare = target(spare)?;
            match copy_blobs(&source, &spare, &blobs).await {
                Ok(sent) => {
                    upload.sent += sent;
                    upload.holders.push(spare.relay);
                }
                Err(err) => upload.failures.at(spare.relay.url(), &err),
            }
        }
        if upload.holders.len() < wanted {
            return Err(Error::Interrupted {
                chunks: upload.count,
                bytes: upload.size,
                why: Box::new(Error::NotEnoughCopies {
                    stored: upload.holders.len(),
                    wanted,
                    failures: upload.failures,
                }),
            });
        }
        Ok(upload)
    }

    /// Relays with room for `size` bytes whose largest blob is `largest`
    /// bytes, best first: longest retention (as far as the relay is
    /// believed, [`crate::scores::Scores::believed_retention`]), then least
    /// loaded, then most free space.
    pub(in crate::client) async fn candidates(
        &self,
        size: u64,
        largest: u64,
    ) -> (Candidates, Failures) {
        let relays = self.blob_clients();
        let infos = join_all(relays.iter().map(|relay| async {
            match tokio::time::timeout(INFO_TIMEOUT, relay.info()).await {
                Ok(answer) => answer,
                Err(_) => Err(RelayError::silent_for(INFO_TIMEOUT.as_secs())),
            }
        }))
        .await;
        let mut problems = Failures::new();
        let mut usable = Vec::new();
        let (scores, now) = (self.scores(), self.now());
        let offer = |relay: &RelayClient, info: &Verified<RelayInfo>| Offer {
            capacity_free: info.capacity_free,
            max_blob_size: info.max_blob_size,
            // What it has been seen to keep, if it lost a copy sooner
            // than it promised: a long claimed retention attracts copies.
            retention_secs: scores.believed_retention(relay.key(), info.retention_secs),
            load_permille: info.load_permille,
            flagged: scores.flagged(relay.key(), now),
        };
        for (relay, info) in relays.into_iter().zip(infos) {
            let info = match info {
                Ok(info) => info,
                Err(err) => {
                    problems.at(relay.url(), &err);
                    continue;
                }
            };
            match offer(&relay, &info).fits(size, largest) {
                Ok(()) => usable.push((relay, info)),
                Err(Unfit::NoRoom { free }) => problems.push(Failure::note(
                    relay.url(),
                    format!("only {} free", count(free, "byte is", "bytes are")),
                )),
                Err(Unfit::BlobTooLarge { max }) => problems.push(Failure::note(
                    relay.url(),
                    format!("takes blobs up to {} only", count(max, "byte", "bytes")),
                )),
            }
        }
        usable.sort_by_key(|(relay, info)| offer(relay, info).rank());
        (usable, problems)
    }

    /// Leaves no orphans after a put that fell short: deletes the copies
    /// of `id` this put created (`true` in `held`), not those the relays
    /// held already.
    async fn undo_new_copies(&self, held: &[(RelayClient, bool)], id: &BlobId) {
        let ours: Vec<RelayClient> = held
            .iter()
            .filter(|(_, new)| *new)
            .map(|(relay, _)| relay.clone())
            .collect();
        self.delete_own_everywhere(&ours, id).await;
    }

    /// Uploads to the first `wanted` candidates at once, replacing each
    /// failure with the next candidate. Returns the relays that
    /// acknowledged (with whether the upload stored new bytes) and what the
    /// failing ones said.
    async fn upload_copies(
        &self,
        candidates: &[(RelayClient, Verified<RelayInfo>)],
        wanted: usize,
        id: &BlobId,
        sealed: &Bytes,
        progress: &Arc<dyn Progress>,
    ) -> (Vec<(RelayClient, bool)>, Failures) {
        let mut stored = Vec::new();
        let mut failures = Failures::new();
        let mut next = 0;
        while stored.len() < wanted && next < candidates.len() {
            let batch = &candidates[next..(next + wanted - stored.len()).min(candidates.len())];
            next += batch.len();
            let results = join_all(batch.iter().map(|(relay, info)| {
                let key = self.owner_key(relay.key());
                let progress = progress.clone();
                async move {
                    let key =
                        key.map_err(|err| crate::error::RelayError::Protocol(err.to_string()))?;
                    let stored = relay
                        .put_bytes(id, sealed.clone(), &key, info.limits.pow_bits)
                        .await;
                    progress.advance(sealed.len() as u64);
                    stored
                }
            }))
            .await;
            for ((relay, _), result) in batch.iter().zip(results) {
                match result {
                    Ok(new) => stored.push((relay.clone(), new)),
                    Err(err) => {
                        self.check_refusal(relay, &err, sealed.len() as u64).await;
                        failures.at(relay.url(), &err);
                    }
                }
            }
        }
        (stored, failures)
    }

    /// After a relay refused a blob of `size` bytes as full: if its signed
    /// info document, asked again now, still claims room for it, the relay
    /// contradicts itself, and that is recorded. (A document fetched
    /// before the upload could have been overtaken by other uploads; one
    /// fetched after the refusal cannot.)
    pub(in crate::client) async fn check_refusal(
        &self,
        relay: &RelayClient,
        err: &RelayError,
        size: u64,
    ) {
        if err.code() != Some(ErrorCode::RelayFull) {
            return;
        }
        let Ok(Ok(info)) = tokio::time::timeout(INFO_TIMEOUT, relay.info()).await else {
            return;
        };
        if info.capacity_free >= size {
            let free = info.capacity_free;
            self.record_scores(|s| {
                s.misbehaved(
                    relay.key(),
                    relay.url(),
                    Misbehaviour::LyingInfo,
                    self.now(),
                    format!(
                        "refused {} as full while its signed info document claims {} free",
                        count(size, "byte", "bytes"),
                        count(free, "byte", "bytes")
                    ),
                );
            });
        }
    }
}
