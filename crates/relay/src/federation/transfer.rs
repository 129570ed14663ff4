//! Transfer of responsibility: above its high-water mark a relay hands its
//! least recently used blobs to peers with room, until it is below its
//! low-water mark.
//!
//! For each blob: stream it to a peer whose fresh, signed info document
//! shows room; check the peer's signed receipt; read back random slices of
//! the blob from the peer and compare them with the local copy; only then
//! drop the body, in the same transaction that writes the forwarding record
//! behind later 307 redirects. A peer that receipts a blob and cannot
//! produce it loses standing and is not trusted with that blob; the local
//! copy stays.

use cairn_api::CallError;
use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use cairn_proto::BlobId;
use futures_util::StreamExt as _;

use super::{FederationError, Peer};
use crate::node::Node;
use crate::store::{Forward, SourceKey};

/// Blobs looked at per batch.
const BATCH: usize = 64;
/// Blobs in transfer at once.
const CONCURRENT_TRANSFERS: usize = 4;
/// Random slices read back from the peer before the body is dropped.
const CHECK_SLICES: usize = 3;
/// Length of each slice.
const SLICE_LEN: u64 = 1024;

/// What one relieving pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Blobs handed over with a verified receipt.
    pub moved: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Attempts that failed (refusals, bad receipts, failed checks).
    pub failed: u64,
}

/// Moves blobs to peers while usage is above the high-water mark, down to
/// the low-water mark. Does nothing below the high-water mark.
pub(crate) async fn relieve(app: &Node) -> TransferReport {
    let _one_at_a_time = app.federation.relieving.lock().await;
    let mut report = TransferReport::default();
    let capacity = app.store.capacity();
    let fed = &app.config.federation;
    let high = cairn_policy::capacity::water_mark(capacity, fed.high_water_permille);
    let low = cairn_policy::capacity::water_mark(capacity, fed.low_water_permille);
    if used(app) <= high || app.federation.peers.snapshot().is_empty() {
        return report;
    }
    let mut tried: HashSet<BlobId> = HashSet::new();
    while used(app) > low {
        let window = tried.len() + BATCH;
        let Ok(batch) = app.store.least_recently_used(window).await else {
            break;
        };
        let fresh: Vec<(BlobId, u64)> = batch
            .into_iter()
            .filter(|(id, _)| !tried.contains(id))
            .collect();
        if fresh.is_empty() {
            break;
        }
        // A few at once: each blob costs several round trips (push, reads
        // back, commit), which overlap well.
        let outcomes: Vec<Outcome> = futures_util::stream::iter(fresh)
            .map(|(id, size)| {
                tried.insert(id);
                move_one(app, id, size, low)
            })
            .buffer_unordered(CONCURRENT_TRANSFERS)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Outcome::Moved { bytes, failed } => {
                    report.moved += 1;
                    report.bytes += bytes;
                    report.failed += failed;
                }
                Outcome::NotMoved { failed } => report.failed += failed,
                Outcome::NoRoom => {
                    tracing::warn!("above the high-water mark and no peer has room");
                    return report;
                }
            }
        }
    }
    report
}

/// What became of one blob in a relieving pass.
enum Outcome {
    Moved {
        bytes: u64,
        failed: u64,
    },
    /// Not moved: below the low-water mark by now, gone, or every peer
    /// failed.
    NotMoved {
        failed: u64,
    },
    NoRoom,
}

/// Offers one blob to the peers with room, best first, until one takes it.
async fn move_one(app: &Node, id: BlobId, size: u64, low: u64) -> Outcome {
    if used(app) <= low {
        return Outcome::NotMoved { failed: 0 };
    }
    // Configured peers only: they are the ones the signed info document
    // lists, and clients follow a transfer redirect only to a listed peer
    // (or a relay of their own set), so a blob handed to a learned peer
    // would be out of their reach and count against this relay.
    // Only peers that stay under this relay's low-water mark once they
    // hold the blob: pushed over their own high-water mark, they would
    // hand it on in turn.
    let ceiling = app.config.federation.low_water_permille;
    let peers: Vec<_> = app
        .federation
        .peers_with_room(size, ceiling)
        .into_iter()
        .filter(|p| !p.learned)
        .collect();
    if peers.is_empty() {
        return Outcome::NoRoom;
    }
    // A replica does not go back to the peer that sent it: that would
    // quietly take a copy out of the network while the peer still counts
    // it as held here.
    let Ok(sources) = app.store.sources_of(&id).await else {
        return Outcome::NotMoved { failed: 0 };
    };
    let peers = peers
        .into_iter()
        .filter(|p| !sources.contains(&SourceKey::peer(&p.relay.key)));
    let mut failed = 0;
    for peer in peers {
        match transfer(app, &peer, id, size).await {
            Ok(true) => {
                return Outcome::Moved {
                    bytes: size,
                    failed,
                };
            }
            Ok(false) => break,
            Err(e) => {
                failed += 1;
                tracing::warn!(peer = %peer.relay.key, blob = %id, error = %e, "transfer failed");
            }
        }
    }
    Outcome::NotMoved { failed }
}

fn used(app: &Node) -> u64 {
    app.store.usage().0
}

/// Transfers one blob to `peer`. `Ok(false)` if the blob went away
/// meanwhile.
async fn transfer(app: &Node, peer: &Peer, id: BlobId, size: u64) -> Result<bool, FederationError> {
    let metrics = &app.federation.metrics;
    if super::replicate::push(app, peer, id).await?.is_none() {
        return Ok(false);
    }
    app.federation.peers.note_stored(&peer.relay.key, size);
    if let Err(e) = check(app, peer, id, size).await {
        metrics
            .transfer_check_failures
            .fetch_add(1, Ordering::Relaxed);
        app.federation.account(&peer.relay.key, |a| {
            a.failed_checks += 1;
            a.stored_by_peer = a.stored_by_peer.saturating_sub(size);
        });
        return Err(e);
    }
    let forward = Forward {
        peer: peer.relay.key,
        url: peer.relay.url.as_str().to_owned(),
    };
    let done = app.store.forward(id, size, forward, app.now()).await?;
    if done {
        metrics.transfers_out.fetch_add(1, Ordering::Relaxed);
        metrics.transfer_last_at.store(app.now(), Ordering::Relaxed);
        metrics
            .transfer_bytes_out
            .fetch_add(size, Ordering::Relaxed);
        app.federation
            .account(&peer.relay.key, |a| a.transfers_out += 1);
    }
    Ok(done)
}

/// Reads random slices of `id` from `peer` and compares them with the
/// local copy.
async fn check(app: &Node, peer: &Peer, id: BlobId, size: u64) -> Result<(), FederationError> {
    let slice = SLICE_LEN.min(size.max(1));
    for _ in 0..CHECK_SLICES {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| FederationError::Local(e.to_string()))?;
        let start = u64::from_le_bytes(random) % (size - slice + 1).max(1);
        let theirs = app
            .federation
            .client
            .read_range(&peer.relay, id, start, slice)
            .await?;
        let ours = read_local(app, &id, start, slice).await?;
        if theirs != ours {
            return Err(FederationError::CheckFailed(format!(
                "bytes {start}..{} differ from the blob's",
                start + slice
            )));
        }
        if size <= slice {
            break;
        }
    }
    Ok(())
}

/// Reads `len` bytes of the local blob `id` from `start`.
async fn read_local(
    app: &Node,
    id: &BlobId,
    start: u64,
    len: u64,
) -> Result<Bytes, FederationError> {
    let gone = || FederationError::Local(format!("blob {id} went away during its transfer"));
    let body = app.store.open_body(id).await?.ok_or_else(gone)?;
    if start.saturating_add(len) > body.size() {
        return Err(gone());
    }
    Ok(body.read_at(start, len).await?)
}

/// What an audit of transferred blobs found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Forwarding records whose peer was asked for the blob.
    pub checked: u64,
    /// Peers that could not produce a blob they had receipted (or sent
    /// other bytes).
    pub failed: u64,
    /// Peers that could not be reached (not held against them).
    pub unreachable: u64,
}

/// Largest blob an audit downloads whole to check its hash; larger ones
/// are checked by their size only.
const AUDIT_FULL_READ: u64 = 64 << 20;

/// Asks peers for up to `max` blobs they took over from this relay (a
/// random sample of forwarding records) and checks each by hash. A peer
/// that lost or altered one loses standing: receipts bind.
pub(crate) async fn audit_transfers(app: &Node, max: usize) -> AuditReport {
    let mut report = AuditReport::default();
    let mut start = [0u8; 32];
    if getrandom::fill(&mut start).is_err() {
        return report;
    }
    let Ok(sample) = app.store.forwards_from(start, max).await else {
        return report;
    };
    for (id, forward) in sample {
        let Some(peer) = app.federation.peers.find(&forward.peer) else {
            continue;
        };
        report.checked += 1;
        match app
            .federation
            .client
            .verify_held(&peer.relay, id, AUDIT_FULL_READ)
            .await
        {
            Ok(()) => {}
            Err(FederationError::Call(e @ CallError::Unreachable { .. })) => {
                tracing::debug!(peer = %forward.peer, error = %e, "audit: peer unreachable");
                report.unreachable += 1;
            }
            Err(e) => {
                tracing::warn!(peer = %forward.peer, blob = %id, error = %e, "audit: a peer lost a blob it had receipted");
                report.failed += 1;
                app.federation
                    .metrics
                    .transfer_check_failures
                    .fetch_add(1, Ordering::Relaxed);
                app.federation
                    .account(&forward.peer, |a| a.failed_checks += 1);
            }
        }
    }
    report
}
