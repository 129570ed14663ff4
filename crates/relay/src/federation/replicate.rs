//! Replication: every blob a client hands this relay is pushed, in the
//! background, to `replicas` peers chosen per blob.
//!
//! The choice is weighted rendezvous hashing over the configured peers:
//! each peer's weight is its standing in the ledger, so peers that
//! reciprocate get more, and the choice for a blob stays put while the peer
//! set does. Pushes retry with backoff; whatever still fails is found again
//! by the next reconciliation round, so the queue may drop work under
//! pressure without losing any.

use cairn_api::CallError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_proto::{BlobId, TransferReceipt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::state::NewBlob;
use super::{FederationError, Peer};
use crate::node::Node;

/// Delays before the second, third and fourth attempt at a push.
const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];
/// Blobs replicated at once.
const CONCURRENT_PUSHES: usize = 4;

/// The configured peers that should hold a replica of `id`, at most
/// `replicas` of them.
pub(crate) fn designated(app: &Node, id: &BlobId) -> Vec<Peer> {
    let candidates = Candidates::now(app);
    candidates
        .for_blob(id)
        .into_iter()
        .map(|i| candidates.peers[i].0.clone())
        .collect()
}

/// The configured peers with their weights, fixed for a run of choices.
pub(crate) struct Candidates {
    pub(crate) peers: Vec<(Peer, f64)>,
    replicas: usize,
}

impl Candidates {
    pub(crate) fn now(app: &Node) -> Self {
        let peers = app
            .federation
            .peers
            .snapshot()
            .into_iter()
            .filter(|p| !p.learned)
            .map(|p| {
                let weight = app.federation.standing(&p.relay.key);
                (p, weight)
            })
            .collect();
        Self {
            peers,
            replicas: app.config.federation.replicas,
        }
    }

    /// Indexes into `peers` of those chosen for `id`, best first.
    pub(crate) fn for_blob(&self, id: &BlobId) -> Vec<usize> {
        let weighted: Vec<([u8; 32], f64)> = self
            .peers
            .iter()
            .map(|(p, weight)| (p.relay.key.to_bytes(), *weight))
            .collect();
        cairn_policy::placement::designate(id.as_bytes(), &weighted, self.replicas)
    }
}

/// Pushes blob `id` to `peer` once, updating the ledger; the receipt is
/// checked. `Ok(None)` if this relay no longer holds the blob.
pub(crate) async fn push(
    app: &Node,
    peer: &Peer,
    id: BlobId,
) -> Result<Option<TransferReceipt>, FederationError> {
    let Some(body) = app.store.open_body(&id).await? else {
        return Ok(None);
    };
    let size = body.size();
    let receipt = app
        .federation
        .client
        .push(&app.key, &peer.relay, id, size, body, app.now())
        .await?;
    app.federation.account(&peer.relay.key, |a| {
        a.bytes_sent += size;
        a.stored_by_peer += size;
    });
    Ok(Some(receipt))
}

/// Pushes with retries and backoff; gives up (leaving it to
/// reconciliation) after the last attempt.
async fn push_with_retries(
    app: &Node,
    peer: &Peer,
    id: BlobId,
    cancel: &CancellationToken,
) -> bool {
    for attempt in 0..=BACKOFF.len() {
        match push(app, peer, id).await {
            Ok(_) => {
                app.federation
                    .metrics
                    .replicas_pushed
                    .fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                app.federation
                    .metrics
                    .replica_push_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %peer.relay.key, blob = %id, attempt, error = %e, "replication push failed");
                // A refusal by policy (full, not a peer) will not change
                // in seconds; reconciliation tries again later.
                if matches!(&e, FederationError::Call(CallError::Refused(r)) if r.status != 429 && r.status != 503)
                {
                    return false;
                }
            }
        }
        let Some(delay) = BACKOFF.get(attempt) else {
            break;
        };
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep(*delay) => {}
        }
    }
    false
}

/// Replicates queued blobs until `cancel`.
pub(crate) async fn run_replication(
    app: Arc<Node>,
    mut rx: mpsc::Receiver<NewBlob>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_PUSHES));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let blob = tokio::select! {
            () = cancel.cancelled() => break,
            blob = rx.recv() => match blob {
                Some(blob) => blob,
                None => break,
            },
        };
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (app, cancel) = (app.clone(), cancel.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let peers = designated(&app, &blob.id);
            // At once: a peer that is down and being retried must not hold
            // up the others.
            let pushes = peers
                .iter()
                .map(|peer| push_with_retries(&app, peer, blob.id, &cancel));
            let all = futures_util::future::join_all(pushes)
                .await
                .into_iter()
                .all(|ok| ok);
            if all && !peers.is_empty() {
                let lag = u64::try_from(blob.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
                app.federation
                    .metrics
                    .replication_lag_ms
                    .store(lag, Ordering::Relaxed);
            }
            app.federation
                .metrics
                .replication_queued
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
    tasks.close();
    tasks.wait().await;
}
