//! Storing and fetching files: `put`, `get`, `ls`, `rm`.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use serde::Serialize;

use cairn_proto::{BlobId, ErrorCode, RelayInfo, Verified, VerifyingKey};

use super::Client;
use crate::crdt::Change;
use crate::crdt::Table;
use crate::error::{Error, RelayError, Result, io_at};
use crate::files::{Copy, FileEntry, Place, check_name};
use crate::progress::Progress;
use crate::relay::{Deleted, RelayClient, unix_now};
use crate::scores::Misbehaviour;
use crate::seal;

/// Where `get` writes the data.
#[derive(Clone, Debug)]
pub enum Output {
    /// A file, replaced atomically once the data is complete and verified.
    File(PathBuf),
    /// Standard output, streamed.
    Stdout,
}

/// What `put` did.
#[derive(Clone, Debug, Serialize)]
pub struct PutReport {
    /// The name stored.
    pub name: String,
    /// The sealed blob.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Bytes of data.
    pub size: u64,
    /// Bytes stored per copy.
    pub sealed_size: u64,
    /// Relays holding an acknowledged copy.
    pub copies: Vec<String>,
    /// The blob the name pointed at before, if it was replaced.
    pub replaced: Option<String>,
    /// Things the user should know (redundancy below target, relays that
    /// failed and were replaced).
    pub warnings: Vec<String>,
}

/// What `get` did.
#[derive(Clone, Debug, Serialize)]
pub struct GetReport {
    /// The blob read.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Bytes of data written.
    pub size: u64,
    /// The relay whose copy was used.
    pub relay: String,
    /// Relays tried first and skipped, with why.
    pub skipped: Vec<String>,
    /// Copies found transferred while looking for the blob: relays that
    /// handed their copy on to a peer (PROTOCOL.md §7.3), and whether the
    /// file table now records where it went. When `relay` is one of the
    /// peers, the data was served through the transfer.
    pub moved: Vec<Transfer>,
    /// Problems that did not stop the download (a new placement that could
    /// not be recorded).
    pub warnings: Vec<String>,
}

/// A copy one relay transferred to another (PROTOCOL.md §7.3): the
/// first still redirects to the second, and the second holds the bytes.
#[derive(Clone, Debug, Serialize)]
pub struct Transfer {
    /// The URL of the relay the copy was on.
    pub from: String,
    /// Its key.
    #[serde(with = "crate::text_serde")]
    pub from_key: VerifyingKey,
    /// The URL of the relay holding it now.
    pub to: String,
    /// Its key (checked against its signed info document when the
    /// transfer was found).
    #[serde(with = "crate::text_serde")]
    pub to_key: VerifyingKey,
    /// Whether the file table records the transfer, so every device finds
    /// the copy where it is.
    pub recorded: bool,
}

/// One stored file, as `ls` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FileInfo {
    /// Its name.
    pub name: String,
    /// The sealed blob.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Bytes of data.
    pub size: u64,
    /// When it was stored (Unix seconds).
    pub stored_at: u64,
    /// Relays holding copies (where transferred copies went, not where they
    /// were made).
    pub copies: Vec<String>,
    /// Copies relays transferred to peers, as recorded.
    pub transferred: Vec<Transfer>,
}

/// What `rm` did.
#[derive(Clone, Debug, Serialize)]
pub struct RemoveReport {
    /// The name removed.
    pub name: String,
    /// Its blob.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Relays the copies were deleted from.
    pub deleted: Vec<String>,
    /// Copies left in place, with why (they expire with the relay's
    /// retention).
    pub left: Vec<String>,
}

/// How long a relay gets to answer its info request when choosing where to
/// store.
const INFO_TIMEOUT: Duration = Duration::from_secs(10);

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
        state: &mut super::sync::SyncState,
        input: Box<dyn std::io::Read + Send>,
        size_hint: u64,
        name: &str,
        progress: Arc<dyn Progress>,
    ) -> Result<PutReport> {
        self.require_active()?;
        let vault = self.current_vault()?;

        let temp = self.home.temp_file()?;
        let sealed = {
            let out = temp.reopen().map_err(io_at(temp.path()))?;
            let recipient = vault.secret.public();
            let progress = progress.clone();
            progress.begin("sealing", size_hint);
            let path = temp.path().to_path_buf();
            let sealed = tokio::task::spawn_blocking(move || {
                let mut done = 0;
                let result = seal::seal_stream(input, &recipient, out, &mut |n| {
                    progress.advance(n - done);
                    done = n;
                });
                progress.end();
                result.map_err(io_at(path))
            })
            .await
            .map_err(|err| Error::Invalid(format!("sealing stopped: {err}")))??;
            // No fsync: the temp file only stages the upload, and the relays
            // make their copies durable before acknowledging them.
            sealed
        };

        let (candidates, mut warnings) = self.candidates(sealed.size).await;
        let wanted = self.replicas().min(self.relays.entries().len());
        if wanted < self.replicas() {
            warnings.push(format!(
                "your relay set has {} relay(s), fewer than the {} copies wanted: redundancy is \
                 below target (add relays with `cairn relay add URL`)",
                wanted,
                self.replicas()
            ));
        }
        progress.begin("uploading", sealed.size * wanted as u64);
        let (stored, failures) = self
            .upload_copies(&candidates, wanted, &sealed, temp.path(), &progress)
            .await;
        progress.end();
        if stored.len() < wanted {
            // Leave no orphans: remove the copies this upload created.
            let ours: Vec<_> = stored
                .iter()
                .filter(|(_, new)| *new)
                .map(|(r, _)| r.clone())
                .collect();
            self.delete_own_everywhere(&ours, &sealed.id).await;
            let mut all = warnings;
            all.extend(failures);
            return Err(Error::NotEnoughCopies {
                stored: stored.len(),
                wanted,
                failures: if all.is_empty() {
                    "not enough relays have room for it".into()
                } else {
                    all.join("; ")
                },
            });
        }
        warnings.extend(
            failures
                .into_iter()
                .map(|f| format!("replaced a failing relay: {f}")),
        );

        let me = self.device_key();
        let entry = FileEntry {
            blob: sealed.id,
            size: sealed.data_len,
            sealed_size: sealed.size,
            generation: vault.generation,
            stored_at: unix_now(),
            copies: stored
                .iter()
                .map(|(relay, _)| Copy {
                    url: relay.url().to_owned(),
                    relay: *relay.key(),
                    owner: me,
                })
                .collect(),
        };
        let replaced = Self::table_of(state).get(name).cloned();
        Self::record_owned(state, &sealed.id, stored.iter().map(|(r, _)| *r.key()));
        let change = Change::Put {
            name: name.to_owned(),
            entry: entry.clone(),
        };
        match self.append(state, change).await {
            Ok(failures) => warnings.extend(
                failures
                    .into_iter()
                    .map(|f| format!("file list not updated on {f}")),
            ),
            Err(err) => {
                let relays: Vec<_> = stored.iter().map(|(r, _)| r.clone()).collect();
                self.delete_own_everywhere(&relays, &sealed.id).await;
                return Err(err);
            }
        }
        Ok(PutReport {
            name: name.to_owned(),
            blob: sealed.id,
            size: sealed.data_len,
            sealed_size: sealed.size,
            copies: entry.copies.iter().map(|c| c.url.clone()).collect(),
            replaced: replaced.map(|old| old.blob.to_string()),
            warnings,
        })
    }

    /// Relays that can take a blob of `size` bytes, best first: longest
    /// retention, then least loaded, then most free space.
    pub(super) async fn candidates(
        &self,
        size: u64,
    ) -> (Vec<(RelayClient, Verified<RelayInfo>)>, Vec<String>) {
        let relays = self.blob_clients();
        let infos = join_all(relays.iter().map(|relay| async {
            match tokio::time::timeout(INFO_TIMEOUT, relay.info()).await {
                Ok(answer) => answer,
                Err(_) => Err(RelayError::Unreachable("no answer within 10 s".into())),
            }
        }))
        .await;
        let mut problems = Vec::new();
        let mut usable = Vec::new();
        for (relay, info) in relays.into_iter().zip(infos) {
            match info {
                Ok(info) if info.capacity_free < size => problems.push(format!(
                    "{}: only {} bytes free",
                    relay.url(),
                    info.capacity_free
                )),
                Ok(info) if info.max_blob_size < size => problems.push(format!(
                    "{}: takes blobs up to {} bytes",
                    relay.url(),
                    info.max_blob_size
                )),
                Ok(info) => usable.push((relay, info)),
                Err(err) => problems.push(format!("{}: {err}", relay.url())),
            }
        }
        // Relays that recently misbehaved go last, whatever they offer.
        let (scores, now) = (self.scores(), unix_now());
        usable.sort_by_key(|(relay, info)| {
            (
                scores.flagged(relay.key(), now),
                Reverse(info.retention_secs),
                info.load_permille / 100,
                Reverse(info.capacity_free),
            )
        });
        (usable, problems)
    }

    /// Uploads to the first `wanted` candidates at once, replacing each
    /// failure with the next candidate. Returns the relays that
    /// acknowledged (with whether the upload stored new bytes) and what the
    /// failing ones said.
    async fn upload_copies(
        &self,
        candidates: &[(RelayClient, Verified<RelayInfo>)],
        wanted: usize,
        sealed: &seal::Sealed,
        path: &Path,
        progress: &Arc<dyn Progress>,
    ) -> (Vec<(RelayClient, bool)>, Vec<String>) {
        let mut stored = Vec::new();
        let mut failures = Vec::new();
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
                    relay
                        .put_file(
                            &sealed.id,
                            path,
                            sealed.size,
                            &key,
                            info.limits.pow_bits,
                            move |n| progress.advance(n),
                        )
                        .await
                }
            }))
            .await;
            for ((relay, _), result) in batch.iter().zip(results) {
                match result {
                    Ok(new) => stored.push((relay.clone(), new)),
                    Err(err) => {
                        self.check_refusal(relay, &err, sealed.size).await;
                        failures.push(format!("{}: {err}", relay.url()));
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
    pub(super) async fn check_refusal(&self, relay: &RelayClient, err: &RelayError, size: u64) {
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
                    unix_now(),
                    format!(
                        "refused {size} bytes as full while its signed info document claims \
                         {free} bytes free"
                    ),
                );
            });
        }
    }

    /// The stored files, by name.
    pub async fn list(&mut self) -> Result<Vec<FileInfo>> {
        let state = self.synced().await?;
        let table = Self::table_of(&state);
        Ok(table
            .files()
            .map(|(name, entry)| FileInfo {
                name: name.to_owned(),
                blob: entry.blob,
                size: entry.size,
                stored_at: entry.stored_at,
                copies: table.places(entry).into_iter().map(|p| p.url).collect(),
                transferred: recorded_transfers(table, entry),
            })
            .collect())
    }

    /// Removes `name` from the file table and drops this device's claims
    /// on its copies. A relay deletes a copy with its last owner's claim:
    /// the other devices drop theirs when they next sync.
    pub async fn remove(&mut self, name: &str) -> Result<RemoveReport> {
        let mut state = self.synced().await?;
        self.require_active()?;
        let entry = Self::table_of(&state)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchName(name.to_owned()))?;
        let located: Vec<(Copy, Option<Place>)> = Self::table_of(&state)
            .located(&entry)
            .map(|(copy, to)| (copy.clone(), to.cloned()))
            .collect();
        self.append(
            &mut state,
            Change::Remove {
                name: name.to_owned(),
            },
        )
        .await?;
        let released = self.finish_change(&mut state).await?;
        let still_owned = Self::owned_relays(&state, &entry.blob);
        let mut deleted = Vec::new();
        let mut left = Vec::new();
        // Each copy is reported where it is now, and each relay once: a copy
        // moved onto a relay that had one is that one.
        let mut reported = BTreeSet::new();
        for (copy, moved) in &located {
            let (url, relay) = moved
                .as_ref()
                .map_or((&copy.url, copy.relay), |to| (&to.url, to.relay));
            if !reported.insert(relay) {
                continue;
            }
            let done = released
                .iter()
                .find(|(blob, at, _)| *blob == entry.blob && *at == relay)
                .map(|(_, _, done)| *done);
            match (done, moved) {
                (Some(Deleted::Gone | Deleted::Absent), _) => deleted.push(url.clone()),
                (Some(Deleted::KeptByOthers(n)), _) => left.push(format!(
                    "{url}: this device let go of it; {n} other owner{} keep{} it (your other \
                     devices let go when they sync the removal)",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "s" } else { "" }
                )),
                (None, _) if still_owned.contains(&relay) => left.push(format!(
                    "{url}: could not be deleted now; retried on the next sync"
                )),
                (None, Some(_)) => {
                    // This device never claimed the copy where it went: it
                    // belongs to whoever moved it there (a relay that handed
                    // it on, or another device's repair).
                    left.push(format!(
                        "{url}: moved there from {}; kept until its owners let go of it or its \
                         retention runs out",
                        copy.url
                    ));
                }
                (None, None) => left.push(format!(
                    "{url}: stored by device {}, which deletes it when it next syncs",
                    copy.owner.short()
                )),
            }
        }
        Ok(RemoveReport {
            name: name.to_owned(),
            blob: entry.blob,
            deleted,
            left,
        })
    }

    /// Renames `from` to `to` (replacing what `to` held).
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        check_name(to)?;
        let mut state = self.synced().await?;
        self.require_active()?;
        let entry = Self::table_of(&state)
            .get(from)
            .cloned()
            .ok_or_else(|| Error::NoSuchName(from.to_owned()))?;
        if from == to {
            return Ok(());
        }
        self.append(
            &mut state,
            Change::Rename {
                from: from.to_owned(),
                to: to.to_owned(),
                entry,
            },
        )
        .await?;
        self.finish_change(&mut state).await?;
        Ok(())
    }

    /// Fetches `what` (a stored name, or a blob id) from the fastest relay
    /// that has it, verifies every byte, falls back to the next relay on any
    /// failure, then opens it into `output`.
    pub async fn get(
        &mut self,
        what: &str,
        output: Output,
        progress: Arc<dyn Progress>,
    ) -> Result<GetReport> {
        let mut state = self.synced().await?;
        let table = Self::table_of(&state);
        let (id, entry) = match table.get(what) {
            Some(entry) => (entry.blob, Some(entry.clone())),
            None => match what.parse::<BlobId>() {
                Ok(id) => (id, None),
                Err(_) => return Err(Error::NoSuchName(what.to_owned())),
            },
        };
        // Where the listed copies are now, transfers recorded by any device
        // applied.
        let places = entry
            .as_ref()
            .map(|entry| table.places(entry))
            .unwrap_or_default();
        // Peers that recorded transfers lead to are asked too, in the set or
        // not: the bytes are verified whoever serves them.
        let peers: Vec<Place> = entry
            .as_ref()
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
        for holder in &order {
            let relay = &holder.relay;
            progress.begin("downloading", holder.size);
            let started = Instant::now();
            let attempt = match &output {
                Output::File(path) => self.fetch_to_file(relay, &id, &keys, path, &progress).await,
                Output::Stdout => self.fetch_to_stdout(relay, &id, &keys, &progress).await,
            };
            progress.end();
            match attempt {
                Ok(size) => {
                    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.record_scores(|s| s.success(relay.key(), relay.url(), took));
                    let (moved, warnings) = self
                        .record_transfers(&mut state, &id, &places, &order)
                        .await;
                    return Ok(GetReport {
                        blob: id,
                        size,
                        relay: relay.url().to_owned(),
                        skipped,
                        moved,
                        warnings,
                    });
                }
                Err(Attempt::Relay(err)) => {
                    // Wrong bytes and a refused redirect are misbehaviour;
                    // anything else is being down.
                    self.record_scores(|s| match &err {
                        RelayError::RedirectRefused(_) => s.misbehaved(
                            relay.key(),
                            relay.url(),
                            Misbehaviour::BadRedirect,
                            unix_now(),
                            err.to_string(),
                        ),
                        RelayError::WrongBytes(_) => s.misbehaved(
                            relay.key(),
                            relay.url(),
                            Misbehaviour::Corrupt,
                            unix_now(),
                            format!("served blob {id} with wrong bytes"),
                        ),
                        _ => s.unavailable(relay.key(), relay.url()),
                    });
                    skipped.push(format!("{}: {err}", relay.url()));
                }
                // The bytes were the right ones: no other relay can do better.
                Err(Attempt::Fatal(err)) => return Err(err),
            }
        }
        Err(Error::Unavailable {
            id,
            failures: if skipped.is_empty() {
                "no relay in your set holds it".into()
            } else {
                skipped.join("; ")
            },
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
        state: &mut super::sync::SyncState,
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
    ) -> Result<u64, Attempt> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".cairn-get-")
            .tempfile_in(dir)
            .map_err(|err| Attempt::Fatal(io_at(dir)(err)))?;
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
        temp.as_file()
            .sync_all()
            .map_err(|err| Attempt::Fatal(io_at(temp.path())(err)))?;
        temp.persist(path).map_err(|err| {
            Attempt::Fatal(Error::Io {
                path: path.to_path_buf(),
                source: err.error,
            })
        })?;
        Ok(size)
    }

    /// Downloads to a private temp file, then (bytes verified) opens it
    /// onto standard output: nothing unverified is ever written there.
    async fn fetch_to_stdout(
        &self,
        relay: &RelayClient,
        id: &BlobId,
        keys: &[crate::keys::X25519Secret],
        progress: &Arc<dyn Progress>,
    ) -> Result<u64, Attempt> {
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
        tokio::task::spawn_blocking(move || {
            let stdout = std::io::stdout().lock();
            seal::open_stream(input, &keys, std::io::BufWriter::new(stdout)).map_err(|err| {
                Error::Unsealable {
                    id,
                    reason: err.to_string(),
                }
            })
        })
        .await
        .map_err(|err| Attempt::Fatal(Error::Invalid(format!("opening stopped: {err}"))))?
        .map_err(Attempt::Fatal)
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
    ) -> (Vec<Holder>, Vec<String>) {
        let mut relays = self.blob_clients();
        for place in peers {
            if !relays.iter().any(|r| r.key() == &place.relay) {
                relays.push(self.contained(RelayClient::new(
                    self.http.clone(),
                    &place.url,
                    place.relay,
                )));
            }
        }
        let probes = join_all(relays.iter().map(|relay| async move {
            let started = Instant::now();
            let answer = tokio::time::timeout(INFO_TIMEOUT, relay.probe(id)).await;
            (answer, started.elapsed())
        }))
        .await;
        let mut holders: Vec<(Duration, Holder)> = Vec::new();
        let mut skipped = Vec::new();
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
                Ok(Ok(None)) => skipped.push(format!("{}: does not hold it", asked.url())),
                Ok(Err(err)) => {
                    if matches!(err, RelayError::RedirectRefused(_)) {
                        self.record_bad_redirect(&asked, &err);
                    }
                    skipped.push(format!("{}: {err}", asked.url()));
                }
                Err(_) => skipped.push(format!("{}: no answer within 10 s", asked.url())),
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
    /// Notes that `relay` redirected a blob request where it may not. The
    /// error does not name the target, and only it is kept: nothing about
    /// the target goes into the home.
    fn record_bad_redirect(&self, relay: &RelayClient, err: &RelayError) {
        self.record_scores(|s| {
            s.misbehaved(
                relay.key(),
                relay.url(),
                Misbehaviour::BadRedirect,
                unix_now(),
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
fn recorded_transfers(table: &Table, entry: &FileEntry) -> Vec<Transfer> {
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
