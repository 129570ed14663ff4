//! Relay-to-relay cooperation (docs/PROTOCOL.md §7.8): peering, replication
//! of client uploads to peers, set reconciliation, and transfer of
//! responsibility when the relay fills up.
//!
//! Every relay-to-relay request carries an auth token signed by the sending
//! relay's identity key; the receiver acts on it only if that key is on its
//! peer list. Blob bytes are verified by hash wherever they land, and a
//! relay drops a body only after the peer's signed receipt verified and the
//! peer answered a read of random slices of it correctly.

mod client;
mod error;
mod ledger;
mod peers;
mod reconcile;
mod replicate;
pub(crate) mod state;
mod transfer;

pub(crate) use self::error::FederationError;
pub(crate) use self::ledger::Ledger;
pub(crate) use self::peers::Peer;
pub use self::reconcile::ReconcileCounts;
pub(crate) use self::reconcile::reconcile_all;
pub(crate) use self::replicate::run_replication;
pub(crate) use self::state::{Federation, NewBlob};
pub use self::transfer::{AuditReport, TransferReport};
pub(crate) use self::transfer::{audit_transfers, relieve};
use crate::node::Node;
use std::sync::Arc;

/// Transferred blobs checked at each reconciliation round: a small random
/// sample, so that over time every peer is held to every receipt. Not at
/// each peer refresh: an audit may download up to 64 MiB per blob, too
/// much to repeat every minute.
const AUDIT_SAMPLE: usize = 4;

/// Runs the periodic federation work until `cancel`: refreshing peers,
/// reconciling, and moving blobs off a full relay.
pub(crate) async fn background(app: Arc<Node>, cancel: tokio_util::sync::CancellationToken) {
    let mut refresh = tokio::time::interval(app.config.federation.peer_refresh_interval);
    let mut reconcile = tokio::time::interval(app.config.federation.reconcile_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first reconciliation waits a full interval: peers need a moment
    // to start too, and the first refresh tells which have room.
    reconcile.reset();
    loop {
        let round = tokio::select! {
            () = cancel.cancelled() => return,
            _ = refresh.tick() => Round::Refresh,
            _ = reconcile.tick() => Round::Reconcile,
            () = app.federation.full.notified() => Round::Relieve,
        };
        // A round can take minutes on a large store (reconciling, pushing
        // what peers lack); shutdown does not wait for it. What it did not
        // finish is found again by the next round, as after a crash.
        let work = run_round(&app, round);
        if cancel.run_until_cancelled(work).await.is_none() {
            return;
        }
    }
}

/// What woke the federation loop.
enum Round {
    /// Time to refresh peers' info documents, then relieve if full.
    Refresh,
    /// Time to reconcile with peers and audit transfers.
    Reconcile,
    /// The relay filled up: relieve it now.
    Relieve,
}

/// Runs one round. Several processes of a scale-out relay share one index:
/// reconciling and relieving run in whichever holds the lease (renewed at
/// every tick, taken over by another process if the holder stops), so that
/// no blob is pushed twice.
async fn run_round(app: &Node, round: Round) {
    let federation = &app.config.federation;
    match round {
        Round::Refresh | Round::Relieve => {
            if matches!(round, Round::Refresh) {
                app.federation.refresh_peers().await;
            }
            let lease = lease_secs(federation.peer_refresh_interval);
            if app.store.try_lease("relieve", app.now(), lease).await {
                log_transfer(relieve(app).await);
            }
        }
        Round::Reconcile => {
            let lease = lease_secs(federation.reconcile_interval);
            if !app.store.try_lease("reconcile", app.now(), lease).await {
                return;
            }
            for report in reconcile_all(app).await {
                if let Err(e) = report.outcome {
                    tracing::warn!(peer = %report.peer, error = %e, "reconciliation failed");
                }
            }
            let audit = audit_transfers(app, AUDIT_SAMPLE).await;
            if audit.failed > 0 {
                tracing::warn!(
                    failed = audit.failed,
                    checked = audit.checked,
                    "peers lost transferred blobs"
                );
            }
        }
    }
}

/// A lease for work repeated every `interval`: outlives one missed tick.
fn lease_secs(interval: std::time::Duration) -> u64 {
    interval.as_secs().saturating_mul(3) / 2 + 1
}

fn log_transfer(report: TransferReport) {
    if report.moved > 0 || report.failed > 0 {
        tracing::info!(
            moved = report.moved,
            bytes = report.bytes,
            failed = report.failed,
            "transfers of responsibility"
        );
    }
}
