//! Audits: asking relays to prove, with BLAKE3 slice proofs of fresh random
//! chunks, that they still hold the copies the file table says they hold
//! (docs/PROTOCOL.md §7.9). The client needs nothing but each blob's id and
//! size, and a relay cannot pass by keeping precomputed answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde::Serialize;

use cairn_proto::BlobId;
use cairn_proto::audit::ChunkRequest;

use super::Client;
use crate::error::{Error, Result};
use crate::files::FileEntry;
use crate::relay::{AuditOutcome, RelayClient};
use crate::scores::{Misbehaviour, Scores};

/// Chunks asked for per copy ([`cairn_policy::repair::AUDIT_CHUNKS`]).
pub const DEFAULT_CHUNKS: usize = cairn_policy::repair::AUDIT_CHUNKS;
/// Audits in flight at once.
const IN_FLIGHT: usize = 4;
/// Longest wait for one audit (a relay proves by hashing the whole blob).
pub(super) const AUDIT_TIMEOUT: Duration = Duration::from_secs(120);

/// What an audit run found, per relay.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditReport {
    /// Files whose copies were audited.
    pub files: usize,
    /// Copies audited.
    pub copies: usize,
    /// Per relay (by URL of the relay holding the copy now).
    pub relays: Vec<RelayAudit>,
    /// Proof bytes received in all.
    pub proof_bytes: u64,
    /// How long the run took, in milliseconds.
    pub elapsed_ms: u64,
}

impl AuditReport {
    /// Whether any relay failed to produce a copy it should hold.
    pub fn found_misbehaviour(&self) -> bool {
        self.relays.iter().any(|r| r.missing > 0 || r.failed > 0)
    }
}

/// One relay's results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RelayAudit {
    /// The relay's URL.
    pub url: String,
    /// Copies that passed.
    pub passed: usize,
    /// Copies the relay (or the peer it transferred them to) does not have.
    pub missing: usize,
    /// Copies whose proof did not lead to the blob id: other or partial bytes.
    pub failed: usize,
    /// Copies that could not be audited (the relay did not answer).
    pub unreachable: usize,
    /// What went wrong: one line per copy, but a relay that could not be
    /// reached is one line per way it failed (the count is in
    /// `unreachable`).
    pub problems: Vec<String>,
}

/// A blob of a file whose copies are audited.
struct Audited {
    /// The file, and for a chunked file which of its blobs.
    name: String,
    blob: BlobId,
    /// The sealed blob's size, when the file table records it (a one-blob
    /// file); otherwise each relay's HEAD answer gives it.
    size: Option<u64>,
    /// (URL, key) of each relay holding a copy now.
    copies: Vec<(String, cairn_proto::VerifyingKey)>,
    /// When the file was stored: every copy was placed since.
    stored_at: u64,
}

impl Client {
    /// Audits the copies of up to `sample` files (all when `None`), chosen
    /// at random, asking for `chunks` random chunks of each copy.
    pub async fn audit(&mut self, sample: Option<usize>, chunks: usize) -> Result<AuditReport> {
        let started = Instant::now();
        let state = self.synced().await?;
        let table = Self::table_of(&state);
        let mut files: Vec<(String, &FileEntry)> = table.stored().collect();
        if let Some(sample) = sample {
            shuffle(&mut files)?;
            files.truncate(sample);
        }
        // Every blob of a file is audited: a chunked file's manifest and
        // each chunk, where each is now.
        let audited: Vec<Audited> = files
            .iter()
            .flat_map(|(name, entry)| {
                entry.blobs().enumerate().map(move |(i, blob)| Audited {
                    name: entry.blob_label(name, i),
                    blob: *blob,
                    size: entry.sealed_size_of(blob),
                    stored_at: entry.stored_at,
                    copies: table
                        .places_of(entry, blob)
                        .into_iter()
                        .map(|p| (p.url, p.relay))
                        .collect(),
                })
            })
            .collect();
        let mut jobs = Vec::new();
        for file in &audited {
            for (url, key) in &file.copies {
                jobs.push((file, url.clone(), *key));
            }
        }
        let this = &*self;
        let outcomes: Vec<_> = futures_util::stream::iter(jobs)
            .map(|(file, url, key)| {
                let relay = this.contained(this.relay_client(&url, key));
                async move {
                    let audit = this
                        .audit_once(&relay, &file.blob, file.size, chunks, Some(file.stored_at))
                        .await;
                    (file.name.clone(), url, key, audit)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;

        let mut by_relay: BTreeMap<String, RelayAudit> = BTreeMap::new();
        let mut report = AuditReport {
            files: files.len(),
            copies: outcomes.len(),
            ..AuditReport::default()
        };
        let mut scores = Vec::new();
        for (name, url, key, audit) in outcomes {
            scores.push((key, url.clone(), audit.took, audit.scored(&name)));
            let outcome = audit.outcome;
            let relay = by_relay.entry(url.clone()).or_insert_with(|| RelayAudit {
                url,
                ..RelayAudit::default()
            });
            match outcome {
                Ok(Ok(AuditOutcome::Passed { proof_bytes, .. })) => {
                    relay.passed += 1;
                    report.proof_bytes += proof_bytes;
                }
                Ok(Ok(AuditOutcome::Missing)) => {
                    relay.missing += 1;
                    relay.problems.push(format!("{name}: missing"));
                }
                Ok(Ok(AuditOutcome::Failed(why))) => {
                    relay.failed += 1;
                    relay
                        .problems
                        .push(format!("{name}: failed the audit: {why}"));
                }
                // Down is down for every copy there: said once.
                Ok(Err(err)) if err.net_failure().is_some() => {
                    relay.unreachable += 1;
                    push_once(&mut relay.problems, err.to_string());
                }
                Ok(Err(err)) => {
                    relay.unreachable += 1;
                    relay.problems.push(format!("{name}: {err}"));
                }
                Err(_) => {
                    relay.unreachable += 1;
                    push_once(
                        &mut relay.problems,
                        format!("no answer within {} s", AUDIT_TIMEOUT.as_secs()),
                    );
                }
            }
        }
        let now = self.now();
        self.record_scores(|s| {
            for (key, url, took, score) in scores {
                record(s, &key, &url, took, score, now);
            }
        });
        report.relays = by_relay.into_values().collect();
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(report)
    }
}

/// Adds `line` to `lines` unless it is there already.
fn push_once(lines: &mut Vec<String>, line: String) {
    if !lines.contains(&line) {
        lines.push(line);
    }
}

/// Audits one copy of `blob` for `chunks` random chunks, learning its size
/// from the relay's HEAD answer first when it is not known.
pub(super) async fn audit_copy(
    relay: &RelayClient,
    blob: &BlobId,
    size: Option<u64>,
    chunks: usize,
) -> std::result::Result<AuditOutcome, crate::RelayError> {
    let size = match size {
        Some(size) => size,
        None => match relay.probe(blob).await? {
            Some(held) => held.size,
            None => return Ok(AuditOutcome::Missing),
        },
    };
    Ok(match ChunkRequest::random(size, chunks, random_u64) {
        Ok(request) => relay.audit(blob, &request).await?,
        Err(err) => AuditOutcome::Failed(format!("cannot audit: {err}")),
    })
}

/// One copy's audit, as audits and repairs run it.
pub(super) struct CopyAudit {
    /// What the relay answered, or `Err` when it did not within
    /// [`AUDIT_TIMEOUT`].
    pub(super) outcome: std::result::Result<
        std::result::Result<AuditOutcome, crate::RelayError>,
        tokio::time::error::Elapsed,
    >,
    /// How long it took.
    pub(super) took: Duration,
    /// For a copy found missing sooner after its file was stored than the
    /// relay's disclosed retention: (seconds it was kept at most, the
    /// retention disclosed).
    pub(super) early: Option<(u64, u64)>,
}

impl Client {
    /// Audits the copy of `blob` on `relay` (`size` bytes when known). A
    /// copy the file table lists there, its file stored at `stored_at`,
    /// that is found missing is weighed against the retention the relay's
    /// info document discloses: a relay that lost a copy sooner than it
    /// promised to keep one lied. (`None`: the relay was never given the
    /// copy, and its lack says nothing.)
    pub(super) async fn audit_once(
        &self,
        relay: &RelayClient,
        blob: &BlobId,
        size: Option<u64>,
        chunks: usize,
        stored_at: Option<u64>,
    ) -> CopyAudit {
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(AUDIT_TIMEOUT, audit_copy(relay, blob, size, chunks)).await;
        let took = started.elapsed();
        let early = match (&outcome, stored_at) {
            (Ok(Ok(AuditOutcome::Missing)), Some(stored_at)) => match relay.info().await {
                Ok(info) => {
                    cairn_policy::choice::kept_short(stored_at, self.now(), info.retention_secs)
                        .map(|kept| (kept, info.retention_secs))
                }
                Err(_) => None,
            },
            _ => None,
        };
        CopyAudit {
            outcome,
            took,
            early,
        }
    }
}

/// What an audit outcome means for a relay's record.
pub(super) enum Scored {
    Success,
    Unavailable,
    Misbehaved(Misbehaviour, String),
    /// The copy was missing after at most this many seconds, within the
    /// retention the relay discloses.
    DeletedEarly(u64, String),
}

impl CopyAudit {
    /// Classifies the audit for the relay record; `name` says which copy.
    pub(super) fn scored(&self, name: &str) -> Scored {
        match (&self.outcome, self.early) {
            (Ok(Ok(AuditOutcome::Missing)), Some((kept, disclosed))) => Scored::DeletedEarly(
                kept,
                format!(
                    "{name}: copy missing {} after it was stored, though the relay \
                     discloses a retention of {}",
                    crate::text::lasting(kept),
                    crate::text::lasting(disclosed)
                ),
            ),
            (outcome, _) => score_of(name, outcome),
        }
    }
}

/// Classifies one audit's outcome for the relay record.
fn score_of(
    name: &str,
    outcome: &std::result::Result<
        std::result::Result<AuditOutcome, crate::RelayError>,
        tokio::time::error::Elapsed,
    >,
) -> Scored {
    match outcome {
        Ok(Ok(AuditOutcome::Passed { .. })) => Scored::Success,
        Ok(Ok(AuditOutcome::Missing)) => {
            Scored::Misbehaved(Misbehaviour::Missing, format!("{name}: copy missing"))
        }
        Ok(Ok(AuditOutcome::Failed(why))) => {
            Scored::Misbehaved(Misbehaviour::Corrupt, format!("{name}: {why}"))
        }
        // The relay sent the request somewhere it may not: its own doing.
        Ok(Err(err @ crate::RelayError::RedirectRefused(_))) => {
            Scored::Misbehaved(Misbehaviour::BadRedirect, format!("{name}: {err}"))
        }
        Ok(Err(_)) | Err(_) => Scored::Unavailable,
    }
}

/// Writes one classified outcome, seen `now`, into the record.
pub(super) fn record(
    scores: &mut Scores,
    key: &cairn_proto::VerifyingKey,
    url: &str,
    took: Duration,
    scored: Scored,
    now: u64,
) {
    match scored {
        Scored::Success => scores.success(
            key,
            url,
            u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        ),
        Scored::Unavailable => scores.unavailable(key, url, now),
        Scored::Misbehaved(kind, what) => {
            scores.misbehaved(key, url, kind, now, what);
        }
        Scored::DeletedEarly(kept, what) => scores.deleted_early(key, url, kept, now, what),
    }
}

/// A uniformly random u64 from the operating system. Audits must be
/// unpredictable to the relay, so no seeded generator.
pub(super) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // An OS without randomness cannot run cairn at all (keys need it); a
    // zero here would only make an audit predictable, never wrong.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Fisher–Yates with OS randomness.
fn shuffle<T>(items: &mut [T]) -> Result<()> {
    for i in (1..items.len()).rev() {
        let bound = u64::try_from(i + 1).map_err(|_| Error::Invalid("too many files".into()))?;
        let j = usize::try_from(random_u64() % bound)
            .map_err(|_| Error::Invalid("too many files".into()))?;
        items.swap(i, j);
    }
    Ok(())
}
