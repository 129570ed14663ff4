//! When a full relay hands blobs on (docs/PROTOCOL.md §7.8, "Transfers").

/// The number of bytes that is `permille` thousandths of `capacity`: a
/// relay storing more than its high-water mark starts transferring its
/// least used blobs to peers, and stops once it is under its low-water
/// mark.
///
/// Rounded down, computed without overflow for any capacity.
#[must_use]
pub fn water_mark(capacity: u64, permille: u16) -> u64 {
    let permille = u64::from(permille.min(1000));
    // capacity / 1000 * permille loses up to 999 bytes of the remainder
    // times permille; adding the remainder's share keeps it exact.
    capacity / 1000 * permille + capacity % 1000 * permille / 1000
}

/// Whether a relay holding `used` bytes of `capacity` is above its
/// high-water mark (`high_permille`).
#[must_use]
pub fn above_high_water(used: u64, capacity: u64, high_permille: u16) -> bool {
    used > water_mark(capacity, high_permille)
}

/// A peer as a relay over its high-water mark sees it when choosing where
/// a blob goes: its standing in the reciprocity ledger, and the room its
/// fresh info document shows (`None` when it has none fresh enough).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerRoom {
    /// Its standing ([`crate::standing::Account::standing`]).
    pub standing: f64,
    /// Bytes it says it has free.
    pub free: Option<u64>,
    /// Its capacity, in bytes.
    pub total: u64,
    /// The largest blob it takes.
    pub max_blob_size: u64,
}

/// The peers (indexes into `peers`) a blob of `bytes` may be transferred
/// to, in the order they are tried: those with room for it that stay
/// within `ceiling_permille` of their capacity once they hold it, in the
/// best standing first ([`crate::standing::band`]), and among peers of
/// one band the one with most room, so that transfers spread out rather
/// than pile onto whoever was favoured last.
///
/// A relay relieving itself passes its low-water mark as the ceiling: a
/// peer pushed over its own high-water mark would hand the bytes on in
/// turn, and in a sparse mesh they would go back and forth
/// (docs/DURABILITY.md, "Small relays and capacity transfers"). 1000
/// asks only for room.
#[must_use]
pub fn transfer_order(peers: &[PeerRoom], bytes: u64, ceiling_permille: u16) -> Vec<usize> {
    let mut fit: Vec<(i64, u64, usize)> = peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let free = p.free?;
            let used = p.total.saturating_sub(free);
            let under = used.saturating_add(bytes) <= water_mark(p.total, ceiling_permille);
            (free > bytes && under && p.max_blob_size >= bytes)
                .then(|| (crate::standing::band(p.standing), free, i))
        })
        .collect();
    fit.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    fit.into_iter().map(|(_, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn transfers_go_to_the_best_standing_then_the_most_room() {
        let peer = |standing, free| PeerRoom {
            standing,
            free,
            total: 10_000,
            max_blob_size: 100,
        };
        let peers = [
            peer(1.0, Some(500)),
            peer(4.0, Some(50)),
            peer(1.2, Some(900)),
            peer(0.25, Some(10_000)),
            peer(4.0, None),
            peer(1.0, Some(60)),
        ];
        // 1.0 and 1.2 are one band; 60 bytes free is not room for 60.
        assert_eq!(transfer_order(&peers, 60, 1000), [2, 0, 3]);
        assert_eq!(transfer_order(&peers, 40, 1000), [1, 2, 0, 5, 3]);
        assert!(
            transfer_order(&peers, 101, 1000).is_empty(),
            "larger than any takes"
        );
        // Under a ceiling of 95%, only peers that stay at or under 9,500
        // of their 10,000 bytes once they hold the blob qualify: the one
        // with 500 free would be at 9,540.
        assert_eq!(transfer_order(&peers, 40, 950), [2, 3]);
    }

    #[test]
    fn marks_are_thousandths_of_capacity() {
        assert_eq!(water_mark(10_000, 900), 9_000);
        assert_eq!(water_mark(1_999, 500), 999);
        assert_eq!(water_mark(u64::MAX, 1000), u64::MAX);
        assert_eq!(water_mark(12_345, 0), 0);
        assert!(above_high_water(9_001, 10_000, 900));
        assert!(!above_high_water(9_000, 10_000, 900));
    }

    proptest! {
        #[test]
        fn a_mark_is_the_exact_floor(capacity in any::<u64>(), permille in 0u16..=1000) {
            let exact = u128::from(capacity) * u128::from(permille) / 1000;
            prop_assert_eq!(u128::from(water_mark(capacity, permille)), exact);
        }
    }
}
