//! Reconciliation rounds this relay starts: for each configured peer, the
//! blobs this relay should have replicated there are compared with the
//! replicas the peer holds from it, and whatever the peer lacks is pushed.
//!
//! The comparison is range-based set reconciliation
//! ([`cairn_proto::reconcile`]): its traffic grows with the difference
//! between the two sets, not with their size, so a round between peers in
//! step costs a few hundred bytes. The peer's side is the HTTP handler in
//! `http::federation`; it keeps no state between messages.

use cairn_api::CallError;
use std::sync::atomic::Ordering;

use cairn_proto::BlobId;
use cairn_proto::reconcile::Reconciler;

use super::replicate::{Candidates, push};
use super::{FederationError, Peer};
use crate::node::Node;
use crate::store::SourceKey;

/// Rounds after which a reconciliation is abandoned: far more than the
/// logarithmic number a well-behaved peer needs.
const MAX_ROUNDS: u64 = 64;

/// What one reconciliation with one peer did.
#[derive(Debug)]
pub(crate) struct ReconcileReport {
    pub(crate) peer: cairn_proto::VerifyingKey,
    pub(crate) outcome: Result<ReconcileCounts, FederationError>,
}

/// Figures of a finished reconciliation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileCounts {
    /// Messages exchanged (request and answer count as one round).
    pub rounds: u64,
    /// Reconciliation bytes sent.
    pub bytes_sent: u64,
    /// Reconciliation bytes received.
    pub bytes_received: u64,
    /// Blobs the peer lacked.
    pub missing: u64,
    /// How many of those were pushed to it.
    pub pushed: u64,
    /// Replicas the peer holds from this relay that this relay no longer
    /// has (they age out under the peer's retention).
    pub extra: u64,
}

/// Reconciles with every configured peer, one after another.
pub(crate) async fn reconcile_all(app: &Node) -> Vec<ReconcileReport> {
    let candidates = Candidates::now(app);
    let mine = match app.store.ids_from(SourceKey::Clients).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "listing blobs for reconciliation failed");
            return Vec::new();
        }
    };
    // One pass over the relay's own blobs sorts each into the sets of the
    // peers chosen to hold it.
    let mut sets: Vec<Vec<BlobId>> = vec![Vec::new(); candidates.peers.len()];
    for id in &mine {
        for i in candidates.for_blob(id) {
            sets[i].push(*id);
        }
    }
    drop(mine);
    let mut reports = Vec::with_capacity(sets.len());
    for ((peer, _), set) in candidates.peers.iter().zip(sets) {
        let outcome = reconcile_with(app, peer, &set).await;
        reports.push(ReconcileReport {
            peer: peer.relay.key,
            outcome,
        });
    }
    reports
}

/// Runs rounds with `peer` over `set` (sorted), then pushes what it lacks.
async fn reconcile_with(
    app: &Node,
    peer: &Peer,
    set: &[BlobId],
) -> Result<ReconcileCounts, FederationError> {
    let metrics = &app.federation.metrics;
    let mut version = app.config.federation.reconcile_version;
    let mut counts = ReconcileCounts::default();
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut reconciler = Reconciler::new(set)
        .and_then(|r| r.with_version(version))
        .map_err(|e| FederationError::Reconcile(e.to_string()))?;
    let mut message = reconciler.initiate();
    loop {
        if counts.rounds >= MAX_ROUNDS {
            return Err(FederationError::Reconcile(format!(
                "no agreement after {MAX_ROUNDS} rounds"
            )));
        }
        counts.rounds += 1;
        counts.bytes_sent += message.len() as u64;
        metrics.reconcile_rounds.fetch_add(1, Ordering::Relaxed);
        metrics
            .reconcile_bytes_sent
            .fetch_add(message.len() as u64, Ordering::Relaxed);
        let answer = match app
            .federation
            .client
            .reconcile(&app.key, &peer.relay, message, app.now())
            .await
        {
            // A peer of an older release refuses a version it does not
            // know (400) before anything else: ask again, one version
            // older, from the start. Version 1 is every relay's.
            Err(FederationError::Call(CallError::Refused(refusal)))
                if refusal.status == 400 && counts.rounds == 1 && version > 1 =>
            {
                version -= 1;
                tracing::debug!(peer = %peer.relay.url, version, "peer refused the reconciliation version; asking in an older one");
                reconciler = reconciler
                    .with_version(version)
                    .map_err(|e| FederationError::Reconcile(e.to_string()))?;
                message = reconciler.initiate();
                counts.rounds = 0;
                continue;
            }
            answer => answer?,
        };
        counts.bytes_received += answer.len() as u64;
        metrics
            .reconcile_bytes_received
            .fetch_add(answer.len() as u64, Ordering::Relaxed);
        match reconciler
            .reconcile(&answer, &mut have, &mut need)
            .map_err(|e| FederationError::Reconcile(e.to_string()))?
        {
            Some(next) => message = next,
            None => break,
        }
    }
    counts.missing = have.len() as u64;
    counts.extra = need.len() as u64;
    for id in have {
        match push(app, peer, id).await {
            Ok(Some(_)) => {
                counts.pushed += 1;
                metrics.reconcile_repairs.fetch_add(1, Ordering::Relaxed);
            }
            // Deleted or collected meanwhile: nothing to replicate.
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(peer = %peer.relay.key, blob = %id, error = %e, "push after reconciliation failed");
                // A full or refusing peer refuses the rest too.
                if matches!(e, FederationError::Call(CallError::Refused(_))) {
                    break;
                }
            }
        }
    }
    Ok(counts)
}
