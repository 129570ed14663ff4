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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
