//! Where a client puts its copies, and how often it repairs them
//! (docs/PROTOCOL.md §10.6; docs/ARCHITECTURE.md, cairn-client).

use std::cmp::Reverse;

/// What a client knows of a relay when it chooses where copies go: the
/// figures of its signed info document, and whether the relay recently
/// misbehaved (a failed audit, a lie in its info).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Bytes the relay says it has free.
    pub capacity_free: u64,
    /// The largest blob it takes.
    pub max_blob_size: u64,
    /// How long it keeps a blob nobody accessed.
    pub retention_secs: u64,
    /// How busy it says it is, in thousandths.
    pub load_permille: u16,
    /// Whether it misbehaved recently (the client's own record).
    pub flagged: bool,
}

/// Why a relay cannot take a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// It has fewer bytes free than the put needs.
    NoRoom {
        /// The bytes it has free.
        free: u64,
    },
    /// Its largest blob is smaller than the put's largest.
    BlobTooLarge {
        /// The largest blob it takes.
        max: u64,
    },
}

impl Offer {
    /// Whether the relay can take a put of `size` bytes whose largest blob
    /// has `largest`.
    ///
    /// # Errors
    ///
    /// [`Unfit`] says what the relay lacks.
    pub fn fits(&self, size: u64, largest: u64) -> Result<(), Unfit> {
        if self.capacity_free < size {
            Err(Unfit::NoRoom {
                free: self.capacity_free,
            })
        } else if self.max_blob_size < largest {
            Err(Unfit::BlobTooLarge {
                max: self.max_blob_size,
            })
        } else {
            Ok(())
        }
    }

    /// The order relays are tried in, lowest first: relays that recently
    /// misbehaved go last whatever they offer; then the longest retention
    /// (copies renewed least often) up to [`RANKED_RETENTION_SECS`], the
    /// least load (in tenths, so small differences do not reorder), and
    /// the most room.
    #[must_use]
    pub fn rank(&self) -> impl Ord + use<> {
        self.rank_up_to(RANKED_RETENTION_SECS)
    }

    /// [`Offer::rank`] with retentions ranked up to `ranked_retention`
    /// seconds instead (the durability simulator weighs the cap with it;
    /// `u64::MAX` is the order before there was one).
    #[must_use]
    pub fn rank_up_to(&self, ranked_retention: u64) -> impl Ord + use<> {
        (
            self.flagged,
            Reverse(self.retention_secs.min(ranked_retention)),
            self.load_permille / 100,
            Reverse(self.capacity_free),
        )
    }
}

/// The longest retention that ranks a relay higher: a relay's default
/// (90 days). A longer one is a promise the client cannot check until it
/// has cost a copy; ranked above all others it would draw every copy of
/// every file to whoever claims the most, and a relay that claims a year
/// and keeps a week then loses files whole (docs/DURABILITY.md,
/// "Adversaries": 3.6 × 10⁻² a year with three relays in ten lying so,
/// against 2.1 × 10⁻² with the cap).
pub const RANKED_RETENTION_SECS: u64 = 90 * 86_400;

/// How much sooner than its disclosed retention a relay may be found
/// without a copy before that counts as a lie: devices' and relays' clocks
/// differ by minutes, not hours.
pub const RETENTION_LEEWAY_SECS: u64 = 3600;

/// What a copy found missing at `now` says of the relay that held it,
/// when the copy's file was stored at `stored_at`: every copy of a file is
/// placed at or after that (a put or a repair, each an access), so the
/// relay kept it at most `now - stored_at` seconds unaccessed. `Some` of
/// that when it falls short of the `disclosed` retention (by more than
/// [`RETENTION_LEEWAY_SECS`]): the relay deleted a copy it promised to
/// keep. `None` when nobody may have accessed the copy for as long as the
/// relay keeps one (it may simply have lapsed) or the clocks disagree.
#[must_use]
pub fn kept_short(stored_at: u64, now: u64, disclosed: u64) -> Option<u64> {
    let kept = now.checked_sub(stored_at)?;
    (kept.saturating_add(RETENTION_LEEWAY_SECS) < disclosed).then_some(kept)
}

/// The retention a client counts on for a relay, when it ranks relays
/// and paces repairs: what the relay discloses, unless the client has
/// caught it keeping a copy for less ([`kept_short`]). A relay that
/// discloses a long retention to attract copies and keeps them for a week
/// so ranks by the week (docs/DURABILITY.md, "Adversaries").
#[must_use]
pub fn believed_retention(disclosed: u64, kept_at_most: Option<u64>) -> u64 {
    kept_at_most.map_or(disclosed, |kept| kept.min(disclosed))
}

/// How many copies a put or a repair aims for: the configured number, or
/// every relay of the set when the set is smaller.
#[must_use]
pub fn copies_wanted(replicas: usize, relays_in_set: usize) -> usize {
    replicas.min(relays_in_set)
}

/// Seconds between repairs of a device that keeps watch: a quarter of the
/// shortest retention its relays disclose (so every copy's retention is
/// renewed three times over before it could lapse), between a minute and
/// six hours; six hours when no relay disclosed one.
#[must_use]
pub fn repair_interval_secs(shortest_retention: Option<u64>) -> u64 {
    const MIN: u64 = 60;
    const MAX: u64 = 6 * 3600;
    shortest_retention.map_or(MAX, |r| r / 4).clamp(MIN, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            capacity_free: 1 << 30,
            max_blob_size: 1 << 20,
            retention_secs: 90 * 86_400,
            load_permille: 100,
            flagged: false,
        }
    }

    #[test]
    fn a_relay_fits_by_room_and_blob_size() {
        assert_eq!(offer().fits(1 << 30, 1 << 20), Ok(()));
        assert_eq!(
            offer().fits((1 << 30) + 1, 1),
            Err(Unfit::NoRoom { free: 1 << 30 })
        );
        assert_eq!(
            offer().fits(1, (1 << 20) + 1),
            Err(Unfit::BlobTooLarge { max: 1 << 20 })
        );
    }

    #[test]
    fn misbehaving_relays_go_last_then_retention_load_and_room_decide() {
        let flagged = Offer {
            flagged: true,
            retention_secs: 365 * 86_400,
            ..offer()
        };
        let short = Offer {
            retention_secs: 86_400,
            ..offer()
        };
        let busy = Offer {
            load_permille: 900,
            ..offer()
        };
        let roomy = Offer {
            capacity_free: 1 << 40,
            load_permille: 150,
            ..offer()
        };
        let mut offers = [flagged, short, busy, offer(), roomy];
        offers.sort_by_key(Offer::rank);
        // 100 and 150 permille are one band of load: room decides.
        assert_eq!(offers, [roomy, offer(), busy, short, flagged]);
        // A year ranks as 90 days: the room decides.
        let claims_a_year = Offer {
            retention_secs: 365 * 86_400,
            ..offer()
        };
        let mut offers = [claims_a_year, roomy];
        offers.sort_by_key(Offer::rank);
        assert_eq!(offers, [roomy, claims_a_year]);
    }

    #[test]
    fn a_copy_missing_before_the_disclosed_retention_is_a_lie() {
        const DAY: u64 = 86_400;
        // Stored 2 days ago on a relay that promises 365: kept 2 days.
        assert_eq!(kept_short(DAY, 3 * DAY, 365 * DAY), Some(2 * DAY));
        // Stored 100 days ago on a relay that promises 90: it may have
        // lapsed; nothing is learnt.
        assert_eq!(kept_short(DAY, 101 * DAY, 90 * DAY), None);
        // Within the leeway of the promise, or with the clocks crossed.
        assert_eq!(kept_short(0, 90 * DAY - 60, 90 * DAY), None);
        assert_eq!(kept_short(5 * DAY, DAY, 90 * DAY), None);
        assert_eq!(believed_retention(365 * DAY, Some(2 * DAY)), 2 * DAY);
        assert_eq!(believed_retention(365 * DAY, None), 365 * DAY);
        assert_eq!(believed_retention(DAY, Some(2 * DAY)), DAY);
    }

    #[test]
    fn copies_and_repair_cadence() {
        assert_eq!(copies_wanted(3, 5), 3);
        assert_eq!(copies_wanted(3, 2), 2);
        assert_eq!(repair_interval_secs(None), 6 * 3600);
        assert_eq!(repair_interval_secs(Some(90 * 86_400)), 6 * 3600);
        assert_eq!(repair_interval_secs(Some(3600)), 900);
        assert_eq!(repair_interval_secs(Some(10)), 60);
    }
}
