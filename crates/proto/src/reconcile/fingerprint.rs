//! Range fingerprints: an additive summary of a set of ids.
//!
//! The sum is kept incrementally (one 256-bit addition per id) so that one
//! pass over a range yields the fingerprints of all its sub-ranges, and the
//! range's own fingerprint is the sum of theirs. Only the final step hashes.

use crate::BlobId;

/// The longest fingerprint any version sends.
pub(super) const FINGERPRINT_MAX: usize = 16;

/// A fingerprint as sent in a `Fingerprint` range: the version's length of
/// bytes, then zeros up to [`FINGERPRINT_MAX`].
pub(super) type Fingerprint = [u8; FINGERPRINT_MAX];

/// The running sum (mod 2^256) and count of a set of ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Accumulator {
    /// Little-endian 64-bit limbs of the sum, least significant first.
    sum: [u64; 4],
    count: u64,
}

impl Accumulator {
    /// The accumulator of `ids`.
    pub(super) fn of(ids: &[BlobId]) -> Self {
        let mut acc = Self::default();
        for id in ids {
            acc.add(id.as_bytes());
        }
        acc
    }

    /// Adds one id, read as a 256-bit little-endian integer.
    pub(super) fn add(&mut self, id: &[u8; 32]) {
        let (limbs, _) = id.as_chunks::<8>();
        let mut carry = false;
        for (acc, limb) in self.sum.iter_mut().zip(limbs) {
            let (s, c1) = acc.overflowing_add(u64::from_le_bytes(*limb));
            let (s, c2) = s.overflowing_add(u64::from(carry));
            *acc = s;
            carry = c1 | c2;
        }
        self.count += 1;
    }

    /// Adds every id of `other` (the union of two disjoint sets).
    pub(super) fn merge(&mut self, other: &Self) {
        let mut carry = false;
        for (acc, limb) in self.sum.iter_mut().zip(other.sum) {
            let (s, c1) = acc.overflowing_add(limb);
            let (s, c2) = s.overflowing_add(u64::from(carry));
            *acc = s;
            carry = c1 | c2;
        }
        self.count += other.count;
    }

    /// The first `len` bytes of BLAKE3(sum as 32 little-endian bytes ‖
    /// count as a little-endian u64), zero after them.
    ///
    /// The count goes in because sums alone cannot tell sets apart whose
    /// extra ids add up to zero (such as {} and {0}). Hashing the pair makes
    /// two different sets of honest (random) ids collide only by chance,
    /// about 2^-(8·len) after truncation.
    pub(super) fn fingerprint(&self, len: usize) -> Fingerprint {
        let mut input = [0u8; 40];
        for (chunk, limb) in input.chunks_exact_mut(8).zip(self.sum) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        input[32..].copy_from_slice(&self.count.to_le_bytes());
        let hash = blake3::hash(&input);
        let len = len.min(FINGERPRINT_MAX);
        let mut fp = [0u8; FINGERPRINT_MAX];
        fp[..len].copy_from_slice(&hash.as_bytes()[..len]);
        fp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(low: u8, high: u8) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0] = low;
        b[31] = high;
        b
    }

    #[test]
    fn sum_carries_across_limbs_and_wraps() {
        let mut acc = Accumulator::default();
        acc.add(&[0xff; 32]);
        acc.add(&id(1, 0));
        // 2^256 - 1 + 1 wraps to zero.
        assert_eq!(acc.sum, [0; 4]);
        assert_eq!(acc.count, 2);

        let mut acc = Accumulator::default();
        let mut a = [0u8; 32];
        a[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        acc.add(&a);
        acc.add(&id(1, 0));
        assert_eq!(acc.sum, [0, 1, 0, 0]);
    }

    #[test]
    fn merge_equals_adding_one_by_one() {
        let ids: Vec<[u8; 32]> = (0u8..20).map(|i| *blake3::hash(&[i]).as_bytes()).collect();
        let mut whole = Accumulator::default();
        ids.iter().for_each(|i| whole.add(i));
        let mut left = Accumulator::default();
        let mut right = Accumulator::default();
        ids[..7].iter().for_each(|i| left.add(i));
        ids[7..].iter().for_each(|i| right.add(i));
        left.merge(&right);
        assert_eq!(left, whole);
        assert_eq!(
            left.fingerprint(FINGERPRINT_MAX),
            whole.fingerprint(FINGERPRINT_MAX)
        );
    }

    #[test]
    fn count_is_part_of_the_fingerprint() {
        // {x} and {x, 0}: same sum, different count.
        let mut one = Accumulator::default();
        one.add(&id(5, 0));
        let mut two = one;
        two.add(&[0; 32]);
        assert_eq!(one.sum, two.sum);
        assert_ne!(
            one.fingerprint(FINGERPRINT_MAX),
            two.fingerprint(FINGERPRINT_MAX)
        );
    }
}
