//! Storing files: sealing, choosing relays, uploading the copies.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::join_all;

use cairn_proto::{ErrorCode, RelayInfo, Verified};

use super::{INFO_TIMEOUT, PutReport};

use crate::client::Client;
use crate::crdt::Change;
use crate::error::{Error, RelayError, Result, io_at};
use crate::files::{Copy, FileEntry, check_name};
use crate::progress::Progress;
use crate::relay::{RelayClient, unix_now};
use crate::scores::Misbehaviour;
use crate::seal;

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
    pub(in crate::client) async fn candidates(
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
                    unix_now(),
                    format!(
                        "refused {size} bytes as full while its signed info document claims \
                         {free} bytes free"
                    ),
                );
            });
        }
    }
}
