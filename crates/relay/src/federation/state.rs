//! The federation's state: peers, the ledger of what they hold for each
//! other, the peer client, counters, and the queue of blobs to replicate.
//! The relay's node holds it; the work that uses it (`replicate`,
//! `reconcile`, `transfer`) stands above the node.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cairn_policy::capacity::{PeerRoom, transfer_order};
use cairn_proto::{BlobId, RelayRef, VerifyingKey};
use tokio::sync::{Notify, mpsc};

use super::client::PeerClient;
use super::ledger::{self, Account, Ledger};
use super::peers::{Peer, PeerSet};

/// How many new blobs may wait for replication; beyond that, new blobs are
/// left to the next reconciliation round instead of queueing memory.
const REPLICATION_QUEUE: usize = 16_384;

/// A blob a client just stored here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewBlob {
    pub(crate) id: BlobId,
    pub(crate) accepted: Instant,
}

/// Seconds a peer's info document stays good enough to pick it for a
/// transfer or list it as having room.
pub(crate) const INFO_MAX_AGE_SECS: u64 = 600;

/// Federation state shared by handlers and background tasks.
#[derive(Debug)]
pub(crate) struct Federation {
    pub(crate) peers: PeerSet,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) client: PeerClient,
    pub(crate) metrics: FederationMetrics,
    queue: mpsc::Sender<NewBlob>,
    /// Woken when an upload takes the relay past its high-water mark.
    pub(crate) full: Notify,
    /// Held by the relieving pass in progress: two at once would push the
    /// same blobs twice.
    pub(crate) relieving: tokio::sync::Mutex<()>,
}

/// Counters behind the federation metrics.
#[derive(Debug, Default)]
pub(crate) struct FederationMetrics {
    pub(crate) replicas_pushed: AtomicU64,
    pub(crate) replica_push_failures: AtomicU64,
    pub(crate) replicas_dropped_from_queue: AtomicU64,
    pub(crate) replication_queued: AtomicU64,
    /// Seconds from acceptance to the last designated peer's receipt, for
    /// the most recently replicated blob.
    pub(crate) replication_lag_ms: AtomicU64,
    pub(crate) reconcile_rounds: AtomicU64,
    pub(crate) reconcile_bytes_sent: AtomicU64,
    pub(crate) reconcile_bytes_received: AtomicU64,
    pub(crate) reconcile_repairs: AtomicU64,
    pub(crate) transfers_out: AtomicU64,
    /// When the last blob was handed to a peer (Unix seconds; 0: never).
    pub(crate) transfer_last_at: AtomicU64,
    pub(crate) transfer_bytes_out: AtomicU64,
    pub(crate) transfers_in: AtomicU64,
    pub(crate) transfer_bytes_in: AtomicU64,
    pub(crate) transfer_check_failures: AtomicU64,
}

impl Federation {
    /// Appends the federation metrics, Prometheus text, to `out`.
    pub(crate) fn render_metrics(&self, out: &mut String, forwards: u64) {
        use std::fmt::Write as _;
        let m = &self.metrics;
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let counters = [
            (
                "cairn_replicas_pushed_total",
                "Replicas pushed to peers and receipted.",
                load(&m.replicas_pushed),
            ),
            (
                "cairn_replica_push_failures_total",
                "Replica pushes that failed (each retry counts).",
                load(&m.replica_push_failures),
            ),
            (
                "cairn_replication_queue_dropped_total",
                "New blobs left to reconciliation because the replication queue was full.",
                load(&m.replicas_dropped_from_queue),
            ),
            (
                "cairn_reconcile_rounds_total",
                "Reconciliation rounds this relay started.",
                load(&m.reconcile_rounds),
            ),
            (
                "cairn_reconcile_bytes_sent_total",
                "Reconciliation message bytes sent (both roles).",
                load(&m.reconcile_bytes_sent),
            ),
            (
                "cairn_reconcile_bytes_received_total",
                "Reconciliation message bytes received (both roles).",
                load(&m.reconcile_bytes_received),
            ),
            (
                "cairn_reconcile_repairs_total",
                "Blobs pushed because reconciliation found a peer lacking them.",
                load(&m.reconcile_repairs),
            ),
            (
                "cairn_transfers_out_total",
                "Blobs handed to peers with a verified receipt.",
                load(&m.transfers_out),
            ),
            (
                "cairn_transfer_bytes_out_total",
                "Bytes of blobs handed to peers.",
                load(&m.transfer_bytes_out),
            ),
            (
                "cairn_peer_blobs_in_total",
                "Blobs stored for peers (replicas and transfers).",
                load(&m.transfers_in),
            ),
            (
                "cairn_peer_bytes_in_total",
                "Bytes of blobs stored for peers.",
                load(&m.transfer_bytes_in),
            ),
            (
                "cairn_transfer_check_failures_total",
                "Receipted blobs a peer could not produce when read back.",
                load(&m.transfer_check_failures),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let gauges = [
            (
                "cairn_replication_queue",
                "New blobs waiting to be replicated.",
                load(&m.replication_queued),
            ),
            (
                "cairn_replication_lag_seconds",
                "Time from acceptance to the last replica's receipt, for the latest replicated blob.",
                load(&m.replication_lag_ms) / 1000,
            ),
            (
                "cairn_forwarding_records",
                "Transferred blobs whose requests are redirected to a peer.",
                forwards,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP cairn_peer_ledger_bytes Reciprocity ledger: bytes stored for and by each peer.\n\
             # TYPE cairn_peer_ledger_bytes gauge"
        );
        let Ok(ledger) = self.ledger.lock() else {
            return;
        };
        for (peer, account) in ledger.accounts() {
            let _ = writeln!(
                out,
                "cairn_peer_ledger_bytes{{peer=\"{peer}\",direction=\"stored_for_peer\"}} {}\n\
                 cairn_peer_ledger_bytes{{peer=\"{peer}\",direction=\"stored_by_peer\"}} {}",
                account.stored_for_peer, account.stored_by_peer
            );
        }
        let _ = writeln!(
            out,
            "# HELP cairn_peer_standing How much this relay favours each peer (1 = even).\n\
             # TYPE cairn_peer_standing gauge"
        );
        for (peer, account) in ledger.accounts() {
            let _ = writeln!(
                out,
                "cairn_peer_standing{{peer=\"{peer}\"}} {}",
                account.standing()
            );
        }
    }

    /// Sets up federation state; the receiver feeds [`run_replication`].
    pub(crate) fn new(
        me: VerifyingKey,
        configured: &[RelayRef],
        max_learned: usize,
        ledger: Ledger,
    ) -> Result<(Self, mpsc::Receiver<NewBlob>), reqwest::Error> {
        let (queue, rx) = mpsc::channel(REPLICATION_QUEUE);
        Ok((
            Self {
                peers: PeerSet::new(me, configured, max_learned),
                ledger: Mutex::new(ledger),
                client: PeerClient::new()?,
                metrics: FederationMetrics::default(),
                queue,
                full: Notify::new(),
                relieving: tokio::sync::Mutex::new(()),
            },
            rx,
        ))
    }

    /// Hands a newly accepted client blob to the replication worker. Never
    /// waits: when the queue is full the blob is left to reconciliation.
    pub(crate) fn enqueue(&self, blob: NewBlob) {
        if self.queue.try_send(blob).is_err() {
            self.metrics
                .replicas_dropped_from_queue
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics
                .replication_queued
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Changes `peer`'s ledger account.
    pub(crate) fn account(&self, peer: &VerifyingKey, change: impl FnOnce(&mut Account)) {
        if let Ok(mut ledger) = self.ledger.lock() {
            ledger.update(peer, change);
        }
    }

    /// `peer`'s standing (1.0 for a peer never dealt with).
    pub(crate) fn standing(&self, peer: &VerifyingKey) -> f64 {
        self.ledger
            .lock()
            .map_or(1.0, |l| l.account(peer).standing())
    }

    /// Writes the ledger to disk if it changed.
    pub(crate) async fn save_ledger(&self) {
        let snapshot = self.ledger.lock().ok().and_then(|mut l| l.take_snapshot());
        if let Some((path, bytes)) = snapshot {
            let result =
                tokio::task::spawn_blocking(move || ledger::write_atomically(&path, &bytes)).await;
            if !matches!(result, Ok(Ok(()))) {
                tracing::warn!("saving the peer ledger failed; it will be retried");
                if let Ok(mut l) = self.ledger.lock() {
                    l.mark_dirty();
                }
            }
        }
    }

    /// Peers whose fresh info documents show room for `bytes` within
    /// `ceiling_permille` of their capacity, in the order
    /// [`transfer_order`] tries them (best standing, then most room).
    pub(crate) fn peers_with_room(&self, bytes: u64, ceiling_permille: u16) -> Vec<Peer> {
        let peers = self.peers.snapshot();
        let rooms: Vec<PeerRoom> = peers
            .iter()
            .map(|p| PeerRoom {
                standing: self.standing(&p.relay.key),
                free: p.free(INFO_MAX_AGE_SECS),
                total: p.info.as_ref().map_or(0, |i| i.capacity_total),
                max_blob_size: p.info.as_ref().map_or(0, |i| i.max_blob_size),
            })
            .collect();
        transfer_order(&rooms, bytes, ceiling_permille)
            .into_iter()
            .map(|i| peers[i].clone())
            .collect()
    }

    /// Fetches every peer's info document, learning peers as allowed.
    pub(crate) async fn refresh_peers(&self) -> usize {
        let mut learned = 0;
        // Twice at most: peers learned in the first pass are fetched in the
        // second, so their capacity is known at once.
        for pass in 0..2 {
            let peers = self.peers.snapshot();
            let mut new = 0;
            for peer in peers.iter().filter(|p| pass == 0 || p.info.is_none()) {
                let outcome = self.client.info(&peer.relay).await;
                if let Err(reason) = &outcome {
                    tracing::debug!(peer = %peer.relay.key, %reason, "peer info unavailable");
                }
                new += self.peers.record(&peer.relay.key, outcome);
            }
            learned += new;
            if new == 0 {
                break;
            }
        }
        learned
    }
}
