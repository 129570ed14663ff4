//! Repair: every file keeps its wanted number of good copies.
//!
//! Each copy is audited where it is now (following recorded and live
//! transfers); the audit's first request is a HEAD, which is also an access,
//! so a repair run renews every good copy's retention. A copy that is
//! missing or fails its proof is replaced: the ciphertext comes from a copy
//! that passed (verified by hash on the way), goes to a relay of the set
//! that holds no copy and did not misbehave, and the replacement is recorded
//! as a move of the bad copy (one register per copy, never a rewrite of the
//! name, so a concurrent change of the file on another device cannot be
//! undone by a repair). Plaintext is never needed.
//!
//! A copy whose relay does not answer is kept while the relay may only be
//! down, and replaced like a bad one once the relay has gone unanswered
//! for as long as the caller's [`Unanswered`] says: this device's record
//! of the relay (`scores.rs`) says since when. A client cannot tell a
//! relay that is gone for good from one that is down; only the length of
//! the silence tells them apart (docs/DURABILITY.md, "How long to wait
//! for a relay").
//!
//! A repair also keeps the metadata (`metadata.rs`): the blobs a device
//! that joins later needs are renewed, claimed and restored likewise.

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;

use cairn_policy::repair::{self as policy, Audited, Decision, Found, Unanswered};
use cairn_proto::audit::ChunkRequest;
use cairn_proto::{BlobId, VerifyingKey};

use super::Client;
use super::audit::{AUDIT_TIMEOUT, DEFAULT_CHUNKS, random_u64, record};
use super::metadata::MetadataReport;
use crate::crdt::Change;
use crate::error::{Error, RelayError, Result};
use crate::failures::Failure;
use crate::files::{FileEntry, Place};
use crate::relay::{AuditOutcome, RelayClient};
use crate::text::{count, lasting};

/// What a repair run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Files looked at.
    pub files: usize,
    /// Copies audited (each audit also renewed the copy's retention).
    pub copies_checked: usize,
    /// Files that had all their wanted good copies already.
    pub healthy: usize,
    /// Copies replaced.
    pub restored: Vec<Restored>,
    /// Files still short of good copies, with why.
    pub short: Vec<String>,
    /// Copies whose relay did not answer. Unavailability is not
    /// misbehaviour: they are kept, and a later run checks again, until
    /// the relay has gone unanswered long enough to replace them (those
    /// are in `restored` too).
    pub unreachable: Vec<String>,
    /// The relays behind `unreachable`, each with how it failed and how
    /// many of its copies went unchecked: a relay that is down is said to
    /// be once, not once per copy.
    pub unreachable_relays: Vec<Unchecked>,
    /// The metadata a new device or a recovery needs (identity log,
    /// snapshot, operations), renewed and restored on every relay.
    pub metadata: MetadataReport,
    /// How long the run took, in milliseconds.
    pub elapsed_ms: u64,
}

/// A relay whose copies a repair could not check.
#[derive(Clone, Debug, Serialize)]
pub struct Unchecked {
    /// The relay, and how it failed.
    pub failure: Failure,
    /// Its copies left unchecked.
    pub copies: usize,
}

/// Adds `unchecked` to `relays`, counting it with the same relay failing
/// the same way.
fn note_unchecked(relays: &mut Vec<Unchecked>, unchecked: Unchecked) {
    match relays
        .iter_mut()
        .find(|u| u.failure.same_as(&unchecked.failure))
    {
        Some(known) => known.copies += unchecked.copies,
        None => relays.push(unchecked),
    }
}

/// Why a copy on a relay that did not answer would be replaced: how it
/// failed this time and, when it had failed before, for how long it has
/// not answered (the usual reason the copy is replaced).
fn unanswered_why(failure: &Failure, for_secs: u64) -> String {
    if for_secs == 0 {
        return failure.what().to_owned();
    }
    format!("{}; not answered for {}", failure.what(), lasting(for_secs))
}

/// One replaced copy.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// The file.
    pub name: String,
    /// The relay whose copy was bad.
    pub from: String,
    /// What was wrong with it; for a relay that did not answer, also how
    /// long it has not answered this device.
    pub why: String,
    /// The relay that holds the new copy.
    pub to: String,
}

/// A copy, where it is now, and what its audit said.
struct Checked {
    /// The relay it is at (after transfers), whose key keys its move.
    at: Place,
    verdict: Verdict,
}

/// What repairing one blob of a file did.
#[derive(Default)]
struct BlobRepair {
    checked: usize,
    healthy: bool,
    restored: Vec<Restored>,
    short: Vec<String>,
    unreachable: Vec<String>,
    unreachable_relays: Vec<Unchecked>,
    changes: Vec<Change>,
}

impl BlobRepair {
    /// Records that the copy of `blob` (of the file `label` names) at
    /// `from` is replaced by the one at `to`, for `why`: the move for the
    /// file table, and the line for the report.
    fn moved(&mut self, blob: &BlobId, label: &str, from: &Place, to: &Place, why: String) {
        self.changes.push(Change::Moved {
            blob: *blob,
            from: from.relay,
            to: to.clone(),
        });
        self.restored.push(Restored {
            name: label.to_owned(),
            from: from.url.clone(),
            why,
            to: to.url.clone(),
        });
    }
}

enum Verdict {
    Good,
    Bad(String),
    Unreachable(Failure),
}

impl Client {
    /// The shortest retention any reachable relay of the set discloses, in
    /// seconds: a repair (whose audits renew every copy) must come sooner.
    pub async fn shortest_retention(&self) -> Option<u64> {
        let infos = futures_util::future::join_all(
            self.relay_clients()
                .into_iter()
                .map(|relay| async move { relay.info().await.ok().map(|i| i.retention_secs) }),
        )
        .await;
        infos.into_iter().flatten().min()
    }

    /// Audits every copy of every file and replaces the bad ones. Copies on
    /// relays that do not answer are reported, and replaced too as
    /// `unanswered` says: `ReplaceAfter(secs)` once this device has had no
    /// answer from the relay for `secs` (an outage ends, a vanished relay's
    /// silence does not; `cairn sync --watch` and `cairn repair` wait
    /// [`cairn_policy::repair::UNANSWERED_WAIT_SECS`]), `ReplaceAfter(0)`
    /// at once (the person says the relay is gone), `Keep` never.
    pub async fn repair(&mut self, unanswered: Unanswered) -> Result<RepairReport> {
        let started = Instant::now();
        self.require_active()?;
        let mut state = self.synced().await?;
        let wanted =
            cairn_policy::choice::copies_wanted(self.replicas(), self.relays.entries().len());
        let files: Vec<(String, FileEntry)> = Self::table_of(&state)
            .stored()
            .map(|(name, entry)| (name, entry.clone()))
            .collect();
        let mut report = RepairReport {
            files: files.len(),
            ..RepairReport::default()
        };
        let mut changes = Vec::new();
        for (name, entry) in files {
            // Each blob of the file (a chunked file's manifest and every
            // chunk) keeps its own copies: relays transfer blobs one by
            // one, and a lost chunk is replaced alone.
            let mut healthy = true;
            for (i, blob) in entry.blobs().enumerate() {
                let places = Self::table_of(&state).places_of(&entry, blob);
                let label = entry.blob_label(&name, i);
                let outcome = self
                    .repair_blob(&label, &entry, blob, places, wanted, unanswered)
                    .await;
                report.copies_checked += outcome.checked;
                healthy &= outcome.healthy;
                report.restored.extend(outcome.restored);
                report.short.extend(outcome.short);
                report.unreachable.extend(outcome.unreachable);
                for unchecked in outcome.unreachable_relays {
                    note_unchecked(&mut report.unreachable_relays, unchecked);
                }
                changes.extend(outcome.changes);
            }
            report.healthy += usize::from(healthy);
        }
        if !changes.is_empty() {
            for change in changes {
                self.append(&mut state, change).await?;
            }
            self.finish_change(&mut state).await?;
        }
        report.metadata = self.keep_metadata(&state).await;
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(report)
    }

    /// Audits the copies of `blob`, one of `entry`'s blobs, at `places`
    /// and replaces the bad ones (as many as bring it to `wanted` good
    /// copies), and those on relays unanswered as long as `unanswered`
    /// allows.
    async fn repair_blob(
        &self,
        label: &str,
        entry: &FileEntry,
        blob: &BlobId,
        places: Vec<Place>,
        wanted: usize,
        unanswered: Unanswered,
    ) -> BlobRepair {
        let mut out = BlobRepair::default();
        // A one-blob file's size is in its entry; a chunked file's blobs'
        // sizes are learned from the relays.
        let size = entry.sealed_size_of(blob);
        let mut checked = self.check_copies(blob, size, entry.stored_at, places).await;
        out.checked = checked.len();
        // Copies on relays flagged for misbehaviour move off them too,
        // even when they pass: those relays are not trusted to keep
        // them. They remain sources of last resort (bytes are verified
        // by hash on the way). The record is read after the audits wrote
        // theirs, so a relay failing for the first time is unanswered for
        // 0 s and one that failed before counts from its first failure.
        let (scores, now) = (self.scores(), self.now());
        let flag = |place: &Place| {
            scores
                .get(&place.relay)
                .filter(|s| s.flagged(now))
                .and_then(|s| s.last_misbehaviour.as_ref())
                .map(|(kind, _, _)| format!("{kind:?}").to_lowercase())
        };
        let mut audited = Vec::with_capacity(checked.len());
        for (i, c) in checked.iter().enumerate() {
            let found = match &c.verdict {
                Verdict::Good => Found::Good,
                Verdict::Bad(why) => Found::Bad(why.clone()),
                Verdict::Unreachable(failure) => {
                    out.unreachable
                        .push(format!("{label} on {}: {}", c.at.url, failure.what()));
                    note_unchecked(
                        &mut out.unreachable_relays,
                        Unchecked {
                            failure: failure.clone(),
                            copies: 1,
                        },
                    );
                    let for_secs = scores.get(&c.at.relay).map_or(0, |s| s.unanswered_for(now));
                    Found::Unreachable {
                        why: unanswered_why(failure, for_secs),
                        for_secs,
                    }
                }
            };
            audited.push(Audited {
                at: i,
                found,
                flagged: flag(&c.at).map(|kind| format!("on a relay flagged for {kind}")),
            });
        }
        let mut decision = policy::plan(&audited, wanted, unanswered);
        if matches!(decision, Decision::NoSource { .. })
            && let Some(lost) = audited.iter().position(|a| a.found != Found::Good)
            && let Some(found) = self.unlisted_holder(blob, size, &checked).await
        {
            // Every listed copy is gone, but a relay of the set holds the
            // blob (a replica a listed relay pushed to its peer, §7.8): it
            // takes the lost copy's place, without a byte moved, and the
            // rest is repaired from it.
            let why = match &audited[lost].found {
                Found::Bad(why) | Found::Unreachable { why, .. } => why.clone(),
                Found::Good => String::new(),
            };
            let why = format!(
                "{why}; {} already held the blob, and holds the copy now",
                found.url
            );
            out.moved(blob, label, &checked[audited[lost].at].at, &found, why);
            checked.push(Checked {
                at: found,
                verdict: Verdict::Good,
            });
            audited[lost] = Audited {
                at: checked.len() - 1,
                found: Found::Good,
                flagged: None,
            };
            decision = policy::plan(&audited, wanted, unanswered);
        }
        let plan = match decision {
            Decision::Healthy => {
                out.healthy = true;
                return out;
            }
            Decision::Short { good } => {
                out.short.push(format!(
                    "{label}: {} of {wanted} wanted",
                    count(good as u64, "good copy", "good copies")
                ));
                return out;
            }
            Decision::NoSource { bad } => {
                out.short.push(format!(
                    "{label}: no good copy left to repair from ({bad} bad)"
                ));
                return out;
            }
            Decision::Repair(plan) => plan,
        };
        let sources: Vec<&Place> = plan.sources.iter().map(|&i| &checked[i].at).collect();
        let bad: Vec<(&Place, String)> = plan
            .replace
            .iter()
            .map(|(i, why)| (&checked[*i].at, why.clone()))
            .collect();
        let (good, needed) = (plan.good, plan.needed);
        let avoid: BTreeSet<VerifyingKey> = checked.iter().map(|c| c.at.relay).collect();
        match self
            .copy_from_any(blob, size, &sources, needed, &avoid)
            .await
        {
            Ok(new) => {
                for ((lost, why), to) in bad.iter().zip(&new) {
                    out.moved(blob, label, lost, to, why.clone());
                }
                if good + new.len() < wanted {
                    out.short.push(format!(
                        "{label}: {} of {wanted} wanted; no further relay of the set could \
                         take one (add relays with `cairn relay add URL`)",
                        count((good + new.len()) as u64, "good copy", "good copies")
                    ));
                }
            }
            Err(err) => out.short.push(format!("{label}: {err}")),
        }
        out
    }

    /// A relay of the set, not flagged and holding none of the copies in
    /// `listed`, that proves with an audit it holds `blob` (`size` bytes,
    /// when known): the first to pass. A relay without it has done nothing
    /// wrong, so nothing is recorded.
    async fn unlisted_holder(
        &self,
        blob: &BlobId,
        size: Option<u64>,
        listed: &[Checked],
    ) -> Option<Place> {
        let (scores, now) = (self.scores(), self.now());
        let others: Vec<RelayClient> = self
            .blob_clients()
            .into_iter()
            .filter(|r| !listed.iter().any(|c| &c.at.relay == r.key()))
            .filter(|r| !scores.flagged(r.key(), now))
            .collect();
        let audits = futures_util::future::join_all(
            others
                .iter()
                .map(|r| self.audit_once(r, blob, size, DEFAULT_CHUNKS, None)),
        )
        .await;
        others
            .iter()
            .zip(audits)
            .find(|(_, audit)| matches!(audit.outcome, Ok(Ok(AuditOutcome::Passed { .. }))))
            .map(|(r, _)| Place {
                url: r.url().to_owned(),
                relay: *r.key(),
            })
    }

    /// Audits the copies of `blob` (`size` bytes, when known; its file
    /// stored at `stored_at`) at `places`, noting each relay's behaviour in
    /// its record.
    async fn check_copies(
        &self,
        blob: &BlobId,
        size: Option<u64>,
        stored_at: u64,
        places: Vec<Place>,
    ) -> Vec<Checked> {
        let audits = places.into_iter().map(|at| {
            let relay = self.contained(self.relay_client(&at.url, at.relay));
            async move {
                let audit = self
                    .audit_once(&relay, blob, size, DEFAULT_CHUNKS, Some(stored_at))
                    .await;
                (at, audit)
            }
        });
        let results = futures_util::future::join_all(audits).await;
        let mut checked = Vec::with_capacity(results.len());
        let mut scored = Vec::with_capacity(results.len());
        for (at, audit) in results {
            let verdict = match &audit.outcome {
                Ok(Ok(AuditOutcome::Passed { .. })) => Verdict::Good,
                Ok(Ok(AuditOutcome::Missing)) => Verdict::Bad("missing".into()),
                Ok(Ok(AuditOutcome::Failed(why))) => {
                    Verdict::Bad(format!("failed the audit: {why}"))
                }
                Ok(Err(err)) => Verdict::Unreachable(Failure::at(&at.url, err)),
                Err(_) => Verdict::Unreachable(Failure::at(
                    &at.url,
                    &RelayError::silent_for(AUDIT_TIMEOUT.as_secs()),
                )),
            };
            scored.push((at.relay, at.url.clone(), audit.took, audit.scored(&at.url)));
            checked.push(Checked { at, verdict });
        }
        let now = self.now();
        self.record_scores(|s| {
            for (key, url, took, score) in scored {
                record(s, &key, &url, took, score, now);
            }
        });
        checked
    }

    /// [`Client::copy_to_new_relays`] from the first of `sources` that
    /// delivers the ciphertext intact.
    pub(super) async fn copy_from_any(
        &self,
        blob: &BlobId,
        size: Option<u64>,
        sources: &[&Place],
        count: usize,
        avoid: &BTreeSet<VerifyingKey>,
    ) -> Result<Vec<Place>> {
        let mut last = Error::Invalid("no copy to repair from".into());
        for source in sources {
            match self
                .copy_to_new_relays(blob, size, source, count, avoid)
                .await
            {
                Ok(placed) => return Ok(placed),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// Downloads `blob`'s ciphertext from `source` (verified) and uploads
    /// it to `count` relays of the set outside `avoid`, each new copy
    /// checked with an audit (a relay that acknowledges and drops fails it).
    /// Returns where it was stored.
    pub(super) async fn copy_to_new_relays(
        &self,
        blob: &BlobId,
        size: Option<u64>,
        source: &Place,
        count: usize,
        avoid: &BTreeSet<VerifyingKey>,
    ) -> Result<Vec<Place>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let temp = self.home.temp_file()?;
        let path = temp.path().to_path_buf();
        let file = std::sync::Arc::new(tokio::sync::Mutex::new(tokio::fs::File::from_std(
            temp.reopen().map_err(|e| Error::Io {
                path: path.clone(),
                error: e,
            })?,
        )));
        let relay = self.contained(self.relay_client(&source.url, source.relay));
        let fetched = relay
            .fetch_each(blob, |chunk| {
                let file = file.clone();
                async move {
                    use tokio::io::AsyncWriteExt as _;
                    file.lock().await.write_all(&chunk).await
                }
            })
            .await
            .map_err(|error| Error::Relay {
                url: relay.url().to_owned(),
                error,
            })?;
        let size = size.unwrap_or(fetched);
        {
            use tokio::io::AsyncWriteExt as _;
            file.lock().await.flush().await.map_err(|e| Error::Io {
                path: path.clone(),
                error: e,
            })?;
        }
        let (candidates, _) = self.candidates(size, size).await;
        // Never repair onto a relay that recently lied.
        let (scores, now) = (self.scores(), self.now());
        let mut stored = Vec::new();
        for (relay, info) in candidates {
            if stored.len() >= count {
                break;
            }
            if avoid.contains(relay.key()) || scores.flagged(relay.key(), now) {
                continue;
            }
            let key = self.owner_key(relay.key())?;
            let put = relay
                .put_file(blob, &path, size, &key, info.limits.pow_bits, |_| {})
                .await;
            if let Err(err) = put {
                self.check_refusal(&relay, &err, size).await;
                continue;
            }
            let audited = match ChunkRequest::random(size, DEFAULT_CHUNKS, random_u64) {
                Ok(request) => relay.audit(blob, &request).await,
                Err(_) => continue,
            };
            if matches!(audited, Ok(AuditOutcome::Passed { .. })) {
                stored.push(Place {
                    url: relay.url().to_owned(),
                    relay: *relay.key(),
                });
            }
        }
        Ok(stored)
    }
}
