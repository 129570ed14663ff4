//! Set reconciliation between peer relays.
//!
//! Feeds untrusted bytes to both sides of a set reconciliation over a small
//! fixed set: as a request to the responder and as an answer to the
//! initiator. Neither may panic, and whatever either side sends back must be
//! a message the other side can decode, within the frame limit.

use std::sync::OnceLock;

use cairn_proto::BlobId;
use cairn_proto::reconcile::{MAX_MESSAGE_LEN, MIN_FRAME_LIMIT, ReconcileError, Reconciler};

/// Ids 0..n, sorted; enough to split a range several times over.
fn set(n: u32) -> Vec<BlobId> {
    let mut ids: Vec<BlobId> = (0..n).map(|i| BlobId::of(&i.to_le_bytes())).collect();
    ids.sort();
    ids
}

fn sets() -> &'static (Vec<BlobId>, Vec<BlobId>) {
    static SETS: OnceLock<(Vec<BlobId>, Vec<BlobId>)> = OnceLock::new();
    SETS.get_or_init(|| (set(300), set(250)))
}

/// Errors the peer's own messages must never cause.
fn is_decoding_error(err: &ReconcileError) -> bool {
    matches!(
        err,
        ReconcileError::Malformed { .. }
            | ReconcileError::TooLong { .. }
            | ReconcileError::UnsupportedVersion(_)
    )
}

/// A reconciliation message, to the responder and to the initiator; the
/// first byte picks the frame limit.
pub fn reconcile_message(data: &[u8]) {
    let (ours, theirs) = sets();
    // The first byte picks a frame limit, so that small frames and their
    // truncated answers get exercised too.
    let limit = match data.first() {
        Some(b) if b % 2 == 0 => MIN_FRAME_LIMIT,
        _ => MAX_MESSAGE_LEN,
    };
    let msg = data.get(1..).unwrap_or_default();
    let responder = Reconciler::new(ours)
        .expect("sorted, unique ids")
        .with_frame_limit(limit);
    let initiator = Reconciler::new(theirs)
        .expect("sorted, unique ids")
        .with_frame_limit(limit);

    if let Ok(answer) = responder.respond(msg) {
        assert!(answer.len() <= limit, "answer over the frame limit");
        // An answer to a forged request may contradict the initiator's set,
        // but it must always decode.
        if let Err(err) = initiator.reconcile(&answer, &mut Vec::new(), &mut Vec::new()) {
            assert!(!is_decoding_error(&err), "responder sent garbage: {err}");
        }
    }

    let (mut have, mut need) = (Vec::new(), Vec::new());
    match initiator.reconcile(msg, &mut have, &mut need) {
        Ok(Some(next)) => {
            assert!(next.len() <= limit, "request over the frame limit");
            if let Err(err) = responder.respond(&next) {
                panic!("initiator sent garbage: {err}");
            }
        }
        Ok(None) => {}
        Err(_) => assert!(
            have.is_empty() && need.is_empty(),
            "refused message recorded findings"
        ),
    }
    for found in [&have, &need] {
        assert!(
            found.windows(2).all(|w| w[0] < w[1]),
            "findings not sorted and unique"
        );
    }
}
