//! The reciprocity ledger's judgement of a peer (docs/PROTOCOL.md §7.8,
//! "Reciprocity"): what each side stored for the other, and the standing
//! that follows. A relay favours peers of higher standing when it chooses
//! where its replicas and transfers go.

use serde::{Deserialize, Serialize};

/// Bytes either side may be "owed" before the imbalance counts: new peers
/// start on equal terms, and small differences mean nothing.
pub const GRACE_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

/// One peer's account, as a relay keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Bytes this relay accepted from the peer (replicas and transfers).
    pub stored_for_peer: u64,
    /// Bytes the peer acknowledged with signed receipts.
    pub stored_by_peer: u64,
    /// Blob bytes this relay sent to the peer.
    pub bytes_sent: u64,
    /// Blob bytes this relay received from the peer.
    pub bytes_received: u64,
    /// Transfers of responsibility to the peer, receipted and verified.
    pub transfers_out: u64,
    /// Transfers of responsibility from the peer.
    pub transfers_in: u64,
    /// Receipts the peer signed for bytes it could not then produce.
    pub failed_checks: u64,
}

impl Account {
    /// How much this relay should favour the peer, around 1.0 for a peer
    /// that gives as much as it takes: above for one that stores more for
    /// us than we for it (at most 4), below for one that takes more (at
    /// least 1/4), and halved for every receipt it failed to honour.
    #[must_use]
    pub fn standing(&self) -> f64 {
        let given = self.stored_by_peer as f64 + GRACE_BYTES;
        let taken = self.stored_for_peer as f64 + GRACE_BYTES;
        let ratio = (given / taken).clamp(0.25, 4.0);
        let failures = i32::try_from(self.failed_checks.min(30)).unwrap_or(30);
        ratio * 0.5f64.powi(failures)
    }

    /// Whether this relay would take `bytes` more from the peer (a replica
    /// or a transfer) under a reciprocity credit: only while what it
    /// stores for the peer stays within what the peer stores for it plus
    /// `credit`. A rule weighed with the simulator and not adopted (it
    /// raises loss and protects no one; docs/DURABILITY.md, "Free
    /// riders"): the relay does not call it, and it stays so that the
    /// sweep can be run again.
    #[must_use]
    pub fn takes(&self, bytes: u64, credit: u64) -> bool {
        self.stored_for_peer.saturating_add(bytes) <= self.stored_by_peer.saturating_add(credit)
    }
}

/// The band a standing falls in: its base-2 logarithm, rounded. Peers of
/// one band count as equals (a relay then prefers the one with more room);
/// a higher band goes first.
#[must_use]
pub fn band(standing: f64) -> i64 {
    // Standing lies within [2^-32, 4]; the cast cannot overflow.
    #[allow(clippy::cast_possible_truncation)]
    let band = standing.max(f64::MIN_POSITIVE).log2().round() as i64;
    band
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_rewards_giving_and_punishes_failed_checks() {
        let fair = Account::default();
        assert!((fair.standing() - 1.0).abs() < 1e-9);
        let giver = Account {
            stored_by_peer: 1 << 30,
            ..Account::default()
        };
        let taker = Account {
            stored_for_peer: 1 << 30,
            ..Account::default()
        };
        assert!(giver.standing() > fair.standing());
        assert!(taker.standing() < fair.standing());
        assert!((giver.standing() - 4.0).abs() < 1e-9, "clamped at 4");
        assert!((taker.standing() - 0.25).abs() < 1e-9, "clamped at 1/4");
        let cheat = Account {
            failed_checks: 1,
            ..giver
        };
        assert!(cheat.standing() < giver.standing() / 1.9);
        let hopeless = Account {
            failed_checks: u64::MAX,
            ..giver
        };
        assert!(hopeless.standing() > 0.0);
    }

    #[test]
    fn a_peer_takes_what_it_gives_plus_the_credit() {
        let taker = Account {
            stored_for_peer: 900,
            ..Account::default()
        };
        assert!(taker.takes(100, 1_000), "at the credit exactly");
        assert!(!taker.takes(101, 1_000), "one byte over");
        let giver = Account {
            stored_by_peer: 5_000,
            ..taker
        };
        assert!(giver.takes(5_100, 1_000), "what it gives, plus the credit");
        assert!(!giver.takes(5_101, 1_000));
        assert!(Account::default().takes(u64::MAX, u64::MAX), "no overflow");
    }

    #[test]
    fn bands_round_the_logarithm() {
        assert_eq!(band(1.0), 0);
        assert_eq!(band(4.0), 2);
        assert_eq!(band(0.25), -2);
        assert_eq!(band(1.3), 0);
        assert_eq!(band(1.5), 1);
        assert_eq!(band(0.0), band(f64::MIN_POSITIVE));
    }
}
