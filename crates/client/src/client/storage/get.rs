//! Fetching files: the fastest holder, every byte verified, fallback to
//! the next, transfers followed and recorded.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;

use cairn_proto::BlobId;

use super::assemble::{ChunkKeys, ChunkSources, LocalChunks, put_in_place, temp_beside};
use super::{ByteRange, GetReport, INFO_TIMEOUT, Output, RangeSpec, Transfer};

use crate::client::Client;
use crate::crdt::Change;
use crate::crdt::Table;
use crate::error::{Error, RelayError, Result, io_at};
use crate::failures::{Failure, Failures};
use crate::files::{FileEntry, Place};
use crate::progress::Progress;
use crate::relay::RelayClient;
use crate::scores::Misbehaviour;
use crate::seal;

impl Client {
    /// Fetches `what` (a stored name, or a blob id) from the fastest relay
    /// that has it, verifies every byte, falls back to the next relay on any
    /// failure, then opens it into `output`.
    pub async fn get(
        &mut self,
        what: &str,
        output: Output,
        progress: Arc<dyn Progress>,
    ) -> Result<GetReport> {
        self.get_range(what, output, None, progress).await
    }

    /// [`Client::get`] of only the bytes `range` asks for (all of them
    /// when `None`). A chunked file's range costs only the chunks it
    /// meets.
    pub async fn get_range(
        &mut self,
        what: &str,
        output: Output,
        range: Option<RangeSpec>,
        progress: Arc<dyn Progress>,
    ) -> Result<GetReport> {
        let mut state = match self.synced().await {
            Ok(state) => state,
            // Nothing to fetch from; but a name this device never knew is
            // simply not stored, whatever the relays' state.
            Err(Error::Offline(why)) => {
                let known = Self::table_of(&self.load_sync()?).get(what).is_some();
                if !known && what.parse::<BlobId>().is_err() {
                    return Err(Error::NoSuchName(what.to_owned()));
                }
                return Err(Error::Offline(why));
            }
            Err(err) => return Err(err),
        };
        let (id, entry) = match Self::table_of(&state).get(what) {
            Some(entry) => (entry.blob, Some(entry.clone())),
            None => match what.parse::<BlobId>() {
                Ok(id) => (id, None),
                Err(_) => return Err(Error::NoSuchName(what.to_owned())),
            },
        };
        self.fetch_resolved(&mut state, id, entry.as_ref(), output, range, progress)
            .await
    }

    /// [`Client::get`] of blob `id`, the blob of `entry` when it is a
    /// stored file, with the file table of `state`.
    pub(in crate::client) async fn fetch_resolved(
        &mut self,
        state: &mut crate::client::sync::SyncState,
        id: BlobId,
        entry: Option<&FileEntry>,
        output: Output,
        range: Option<RangeSpec>,
        progress: Arc<dyn Progress>,
    ) -> Result<GetReport> {
        self.fetch_over(state, id, entry, None, output, range, progress)
            .await
    }

    /// [`Client::fetch_resolved`], taking the chunks that the local file
    /// `base` holds (its path, and the entry it was synced from: an earlier
    /// version of the same file, say) from it rather than from relays.
    #[allow(clippy::too_many_arguments)] // fetch_resolved's, and the base
    pub(in crate::client) async fn fetch_over(
        &mut self,
        state: &mut crate::client::sync::SyncState,
        id: BlobId,
        entry: Option<&FileEntry>,
        base: Option<(&Path, &FileEntry)>,
        output: Output,
        range: Option<RangeSpec>,
        progress: Arc<dyn Progress>,
    ) -> Result<GetReport> {
        let table = Self::table_of(state);
        // Where the listed copies are now, transfers recorded by any device
        // applied.
        let places = entry.map(|entry| table.places(entry)).unwrap_or_default();
        // Peers that recorded transfers lead to are asked too, in the set or
        // not: the bytes are verified whoever serves them.
        let peers: Vec<Place> = entry
            .map(|entry| recorded_transfers(table, entry))
            .unwrap_or_default()
            .into_iter()
            .map(|t| Place {
                url: t.to,
                relay: t.to_key,
            })
            .collect();

        let (order, mut skipped) = self.fastest_holders(&id, &places, &peers).await;
        let keys: Vec<_> = self.vault_keys()?.into_iter().map(|k| k.secret).collect();
        if let Some(entry) = entry.filter(|e| e.is_chunked()) {
            let relays: Vec<RelayClient> = order.iter().map(|h| h.relay.clone()).collect();
            let id_key = self
                .vault_keys()?
                .into_iter()
                .find(|k| k.generation == entry.generation)
                .map(|k| k.chunk_id_key())
                .ok_or_else(|| Error::Unsealable {
                    id,
                    reason: format!(
                        "this device holds no vault key of generation {}",
                        entry.generation
                    ),
                })?;
            let opened = self
                .open_manifest(entry, &relays, &keys, &mut skipped)
                .await?;
            // The local version's chunks, by its manifest (keyed hashes
            // match within one generation only).
            let local =
                match base.filter(|(_, b)| b.is_chunked() && b.generation == entry.generation) {
                    Some((path, base_entry)) => {
                        let mut ignored = Failures::new();
                        self.open_manifest(base_entry, &relays, &keys, &mut ignored)
                            .await
                            .ok()
                            .map(|old| LocalChunks::of(path, &old.manifest))
                    }
                    None => None,
                };
            let whole = ByteRange::whole(opened.manifest.size());
            let bytes = match range {
                Some(spec) => spec.within(whole.end)?,
                None => whole,
            };
            progress.begin("downloading", bytes.len());
            let started = Instant::now();
            let chunk_keys = ChunkKeys {
                keys: keys.clone(),
                id_key,
            };
            // Chunks move one by one (transfers, repairs, rotations): after
            // the manifest's holders, every relay of the set and every
            // place the table records for a chunk is asked.
            let mut chunk_relays = relays.clone();
            let recorded = entry
                .chunks
                .iter()
                .flat_map(|chunk| Self::table_of(state).places_of(entry, chunk))
                .map(|p| self.contained(self.relay_client(&p.url, p.relay)));
            for relay in self.blob_clients().into_iter().chain(recorded) {
                if !chunk_relays.iter().any(|r| r.key() == relay.key()) {
                    chunk_relays.push(relay);
                }
            }
            let assembled = self
                .assemble(
                    &opened.manifest,
                    bytes,
                    &ChunkSources {
                        relays: chunk_relays,
                        spread: relays.len(),
                        local,
                    },
                    &chunk_keys,
                    &output,
                    &progress,
                )
                .await;
            progress.end();
            let assembled = assembled?;
            let (size, chunks) = (assembled.written, assembled.chunks);
            skipped.extend(assembled.skipped);
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let relay = &opened.relay;
            self.record_scores(|s| s.success(relay.key(), relay.url(), took));
            let (moved, warnings) = self.record_transfers(state, &id, &places, &order).await;
            return Ok(GetReport {
                blob: id,
                size,
                relay: relay.url().to_owned(),
                skipped,
                moved,
                warnings,
                chunks,
                from_disk: assembled.from_disk,
                range: range.map(|_| bytes),
            });
        }
        for holder in &order {
            let relay = &holder.relay;
            progress.begin("downloading", holder.size);
            let started = Instant::now();
            let attempt = match (&output, range) {
                (Output::File(path), None) => {
                    self.fetch_to_file(relay, &id, &keys, path, &progress).await
                }
                (output, range) => {
                    self.fetch_then_open(relay, &id, &keys, output, range, &progress)
                        .await
                }
            };
            progress.end();
            match attempt {
                Ok((size, written)) => {
                    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.record_scores(|s| s.success(relay.key(), relay.url(), took));
                    let (moved, warnings) =
                        self.record_transfers(state, &id, &places, &order).await;
                    return Ok(GetReport {
                        blob: id,
                        size: written.map_or(size, |w| w.len()),
                        relay: relay.url().to_owned(),
                        skipped,
                        moved,
                        warnings,
                        chunks: 0,
                        from_disk: 0,
                        range: written,
                    });
                }
                Err(Attempt::Relay(err)) => {
                    self.note_failed_fetch(relay, &id, &err);
                    skipped.at(relay.url(), &err);
                }
                // The bytes were the right ones: no other relay can do better.
                Err(Attempt::Fatal(err)) => return Err(err),
            }
        }
        Err(Error::Unavailable {
            id,
            failures: skipped.or_else("no relay in your set holds it"),
        })
    }

    /// Reports the transfers the probes found and records, in the file
    /// table, those of copies the table places on the relay that redirected
    /// (so other devices and later gets go straight to the copy). Each peer
    /// proved its key by its signed info document and said it holds the
    /// blob, which is what a placement rests on when a copy is first stored.
    /// A failure to record leaves the download good: it is a warning.
    async fn record_transfers(
        &self,
        state: &mut crate::client::sync::SyncState,
        id: &BlobId,
        places: &[Place],
        holders: &[Holder],
    ) -> (Vec<Transfer>, Vec<String>) {
        let mut moved = Vec::new();
        let mut warnings = Vec::new();
        let mut changed = false;
        let found = holders
            .iter()
            .flat_map(|holder| holder.via.iter().map(move |from| (from, holder)));
        for (from, holder) in found {
            let mut transfer = Transfer {
                from: from.url().to_owned(),
                from_key: *from.key(),
                to: holder.relay.url().to_owned(),
                to_key: *holder.relay.key(),
                recorded: false,
            };
            let already = Self::table_of(state)
                .moved_to(id, from.key())
                .is_some_and(|to| &to.relay == holder.relay.key());
            // Recorded only for a copy the table places on the relay that
            // redirected (not for a relay that holds the blob for another
            // reason, nor for a blob fetched by id).
            let listed = places.iter().any(|p| &p.relay == from.key());
            if already {
                transfer.recorded = true;
            } else if listed {
                let change = Change::Moved {
                    blob: *id,
                    from: *from.key(),
                    to: Place {
                        url: holder.relay.url().to_owned(),
                        relay: *holder.relay.key(),
                    },
                };
                match self.append(state, change).await {
                    Ok(failures) => {
                        transfer.recorded = true;
                        changed = true;
                        warnings.extend(
                            failures
                                .into_iter()
                                .map(|f| format!("file list not updated on {f}")),
                        );
                    }
                    Err(err) => warnings.push(format!(
                        "the transfer from {} to {} was not recorded: {err}",
                        from.url(),
                        holder.relay.url()
                    )),
                }
            }
            moved.push(transfer);
        }
        if changed && let Err(err) = self.store_sync(state) {
            // The change is on the relays: the next sync merges it back.
            warnings.push(format!("the local file list was not saved: {err}"));
        }
        (moved, warnings)
    }

    /// Downloads and opens at once: the bytes go to the hash and to the
    /// decryption as they arrive, and the data to a temp file beside `path`
    /// that is renamed into place only once the hash matched.
    async fn fetch_to_file(
        &self,
        relay: &RelayClient,
        id: &BlobId,
        keys: &[crate::keys::X25519Secret],
        path: &Path,
        progress: &Arc<dyn Progress>,
    ) -> Result<(u64, Option<ByteRange>), Attempt> {
        let temp = temp_beside(path).map_err(Attempt::Fatal)?;
        let out = temp
            .reopen()
            .map_err(|err| Attempt::Fatal(io_at(temp.path())(err)))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let opener_keys = keys.to_vec();
        let opener = tokio::task::spawn_blocking(move || {
            seal::open_to_file(ChannelReader::new(rx), &opener_keys, &out)
        });
        // If decryption stops early (the bytes do not authenticate), the
        // download still runs to the end: only the hash can say whether the
        // relay sent wrong bytes (try the next one) or the blob itself does
        // not open (no relay can help).
        let fetched = relay
            .fetch_each(id, |chunk| {
                progress.advance(chunk.len() as u64);
                let tx = tx.clone();
                async move {
                    let _ = tx.send(chunk).await;
                    Ok(())
                }
            })
            .await;
        drop(tx);
        let opened = opener
            .await
            .map_err(|err| Attempt::Fatal(Error::Invalid(format!("opening stopped: {err}"))))?;
        // A relay's failure (wrong bytes, cut off) explains a failed opening.
        fetched.map_err(Attempt::Relay)?;
        let size = opened.map_err(|err| {
            Attempt::Fatal(Error::Unsealable {
                id: *id,
                reason: err.to_string(),
            })
        })?;
        put_in_place(temp, path).map_err(Attempt::Fatal)?;
        Ok((size, None))
    }

    /// Downloads to a private temp file, then (bytes verified) opens it
    /// onto `output`: nothing unverified is ever written there. With a
    /// range, only its bytes are written. Returns the file's size and the
    /// bytes written, when a range was asked for.
    async fn fetch_then_open(
        &self,
        relay: &RelayClient,
        id: &BlobId,
        keys: &[crate::keys::X25519Secret],
        output: &Output,
        range: Option<RangeSpec>,
        progress: &Arc<dyn Progress>,
    ) -> Result<(u64, Option<ByteRange>), Attempt> {
        let temp = self.home.temp_file().map_err(Attempt::Fatal)?;
        let file = temp
            .reopen()
            .map_err(|err| Attempt::Fatal(io_at(temp.path())(err)))?;
        let file = std::sync::Arc::new(tokio::sync::Mutex::new(
            tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file)),
        ));
        relay
            .fetch_each(id, |chunk| {
                progress.advance(chunk.len() as u64);
                let file = file.clone();
                async move {
                    use tokio::io::AsyncWriteExt as _;
                    file.lock().await.write_all(&chunk).await
                }
            })
            .await
            .map_err(Attempt::Relay)?;
        {
            use tokio::io::AsyncWriteExt as _;
            file.lock()
                .await
                .flush()
                .await
                .map_err(|err| Attempt::Fatal(io_at(temp.path())(err)))?;
        }
        let input = temp
            .reopen()
            .map_err(|err| Attempt::Fatal(io_at(temp.path())(err)))?;
        let keys = keys.to_vec();
        let id = *id;
        let destination = match output {
            Output::File(path) => Some(temp_beside(path).map_err(Attempt::Fatal)?),
            Output::Stdout => None,
        };
        let (size, written, destination) = tokio::task::spawn_blocking(move || {
            let mut window = None;
            let pick = |size: u64| {
                let chosen = match range {
                    Some(spec) => spec.within(size).map_err(|err| err.to_string())?,
                    None => ByteRange::whole(size),
                };
                window = Some(chosen);
                Ok((chosen.start, chosen.end))
            };
            let opened = match &destination {
                Some(temp) => {
                    seal::open_part(input, &keys, pick, std::io::BufWriter::new(temp.as_file()))
                }
                None => seal::open_part(
                    input,
                    &keys,
                    pick,
                    std::io::BufWriter::new(std::io::stdout().lock()),
                ),
            };
            let size = opened.map_err(|err| match err {
                seal::OpenError::Refused(why) => Error::Invalid(why),
                err => Error::Unsealable {
                    id,
                    reason: err.to_string(),
                },
            })?;
            Ok::<_, Error>((size, range.and(window), destination))
        })
        .await
        .map_err(|err| Attempt::Fatal(Error::Invalid(format!("opening stopped: {err}"))))?
        .map_err(Attempt::Fatal)?;
        if let (Some(temp), Output::File(path)) = (destination, output) {
            put_in_place(temp, path).map_err(Attempt::Fatal)?;
        }
        Ok((size, written))
    }

    /// Relays holding `id`, fastest to answer first (relays among `places`,
    /// where the file table puts the copies, before others that answer as
    /// fast), with the ones that do not hold it or fail noted. The relays in
    /// the set are asked, and `peers` outside it; a relay that redirects to
    /// a peer makes the peer a holder.
    async fn fastest_holders(
        &self,
        id: &BlobId,
        places: &[Place],
        peers: &[Place],
    ) -> (Vec<Holder>, Failures) {
        let mut relays = self.blob_clients();
        for place in peers {
            if !relays.iter().any(|r| r.key() == &place.relay) {
                relays.push(self.contained(self.relay_client(&place.url, place.relay)));
            }
        }
        let probes = join_all(relays.iter().map(|relay| async move {
            let started = Instant::now();
            let answer = tokio::time::timeout(INFO_TIMEOUT, relay.probe(id)).await;
            (answer, started.elapsed())
        }))
        .await;
        let mut holders: Vec<(Duration, Holder)> = Vec::new();
        let mut skipped = Failures::new();
        for (asked, (answer, elapsed)) in relays.into_iter().zip(probes) {
            match answer {
                Ok(Ok(Some(held))) => {
                    let (relay, via) = match held.at {
                        Some(peer) => (peer, Some(asked)),
                        None => (asked, None),
                    };
                    // One holder reached from several relays is one holder.
                    match holders
                        .iter_mut()
                        .find(|(_, h)| h.relay.key() == relay.key())
                    {
                        Some((fastest, holder)) => {
                            *fastest = (*fastest).min(elapsed);
                            holder.via.extend(via);
                        }
                        None => holders.push((
                            elapsed,
                            Holder {
                                relay,
                                size: held.size,
                                via: via.into_iter().collect(),
                            },
                        )),
                    }
                }
                Ok(Ok(None)) => skipped.push(Failure::note(asked.url(), "does not hold it")),
                Ok(Err(err)) => {
                    if matches!(err, RelayError::RedirectRefused(_)) {
                        self.record_bad_redirect(&asked, &err);
                    }
                    skipped.at(asked.url(), &err);
                }
                Err(_) => skipped.at(asked.url(), &RelayError::silent_for(INFO_TIMEOUT.as_secs())),
            }
        }
        // A copy the table places on a relay that handed it on is still
        // the file's copy: its peer counts as listed.
        let listed = |relay: &RelayClient| places.iter().any(|p| &p.relay == relay.key());
        holders.sort_by_key(|(elapsed, holder)| {
            let unlisted = !listed(&holder.relay) && !holder.via.iter().any(listed);
            (unlisted, *elapsed)
        });
        (
            holders.into_iter().map(|(_, holder)| holder).collect(),
            skipped,
        )
    }
}

impl Client {
    /// A one-blob file's data, in memory, fetched with one request per
    /// relay tried: from each place the table records a copy, in turn,
    /// verified by id and opened. `&self`, for the many small files of a
    /// folder pass fetched a few at a time; [`Client::get`] probes every
    /// relay for the fastest first, worth it for a large file only.
    pub(in crate::client) async fn fetch_small(
        &self,
        table: &Table,
        entry: &FileEntry,
    ) -> Result<Vec<u8>> {
        if entry.is_chunked() {
            return Err(Error::Invalid("a chunked file is not fetched whole".into()));
        }
        let keys: Vec<_> = self.vault_keys()?.into_iter().map(|k| k.secret).collect();
        let set = self.blob_clients();
        let max = usize::try_from(entry.sealed_size).unwrap_or(usize::MAX);
        let mut failures = Failures::new();
        for place in table.places(entry) {
            let relay = match set.iter().find(|r| *r.key() == place.relay) {
                Some(relay) => relay.clone(),
                None => self.contained(self.relay_client(&place.url, place.relay)),
            };
            match relay.fetch_bytes(&entry.blob, max).await {
                Ok(sealed) => {
                    let plain =
                        seal::open_bytes(&sealed, &keys).map_err(|err| Error::Unsealable {
                            id: entry.blob,
                            reason: err.to_string(),
                        })?;
                    if plain.len() as u64 != entry.size {
                        return Err(Error::Unsealable {
                            id: entry.blob,
                            reason: format!(
                                "it holds {} where its entry says {}",
                                crate::text::count(plain.len() as u64, "byte", "bytes"),
                                entry.size
                            ),
                        });
                    }
                    return Ok(plain);
                }
                Err(err) => {
                    self.note_failed_fetch(&relay, &entry.blob, &err);
                    failures.at(relay.url(), &err);
                }
            }
        }
        Err(Error::Unavailable {
            id: entry.blob,
            failures: failures.or_else("no copy is recorded"),
        })
    }

    /// Notes that `relay` redirected a blob request where it may not. The
    /// error does not name the target, and only it is kept: nothing about
    /// the target goes into the home.
    fn record_bad_redirect(&self, relay: &RelayClient, err: &RelayError) {
        self.record_scores(|s| {
            s.misbehaved(
                relay.key(),
                relay.url(),
                Misbehaviour::BadRedirect,
                self.now(),
                err.to_string(),
            );
        });
    }
}

/// A relay that holds a blob, as a probe found it.
struct Holder {
    /// The relay holding it.
    relay: RelayClient,
    /// Its size, as the relay says.
    size: u64,
    /// Relays that redirected to it, having transferred their copy.
    via: Vec<RelayClient>,
}

/// `entry`'s copies the table records as transferred.
pub(super) fn recorded_transfers(table: &Table, entry: &FileEntry) -> Vec<Transfer> {
    table
        .located(entry)
        .filter_map(|(copy, moved)| {
            moved.map(|to| Transfer {
                from: copy.url.clone(),
                from_key: copy.relay,
                to: to.url.clone(),
                to_key: to.relay,
                recorded: true,
            })
        })
        .collect()
}

/// How one relay's attempt at a download ended.
enum Attempt {
    /// The relay failed; the next one may do better.
    Relay(RelayError),
    /// Nothing another relay could fix.
    Fatal(Error),
}

/// Reads the pieces a download hands over a channel, for the blocking
/// decryption; the end of the channel is the end of the input.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
