//! What each version of the message format fixes: fingerprint length, and
//! the split factor and list threshold its senders use.

use super::fingerprint::FINGERPRINT_MAX;

/// The parameters of one version of the reconciliation messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Profile {
    /// The version byte that starts its messages.
    pub(super) version: u8,
    /// Bytes of a fingerprint on the wire: the first bytes of the full one.
    pub(super) fingerprint_len: usize,
    /// Sub-ranges a side splits a differing range into.
    pub(super) branches: usize,
    /// A side lists its ids, instead of splitting, when it holds at most
    /// this many in a differing range.
    pub(super) list_threshold: usize,
}

/// Version 1: 16-byte fingerprints, split in 8, lists of up to 4.
pub(super) const V1: Profile = Profile {
    version: 1,
    fingerprint_len: 16,
    branches: 8,
    list_threshold: 4,
};

/// Version 2: 8-byte fingerprints, split in 4, lists of up to 4. About 40%
/// fewer bytes than version 1 for a few differences among many ids, for
/// two more round trips (the module docs list what was measured).
pub(super) const V2: Profile = Profile {
    version: 2,
    fingerprint_len: 8,
    branches: 4,
    list_threshold: 4,
};

/// The most sub-ranges any version splits into.
pub(super) const MAX_BRANCHES: usize = 8;

// Every profile fits the fixed-size tables built for the largest.
const _: () = {
    let all = [V1, V2];
    let mut i = 0;
    while i < all.len() {
        assert!(all[i].branches >= 2 && all[i].branches <= MAX_BRANCHES);
        assert!(all[i].list_threshold >= 1);
        assert!(all[i].fingerprint_len >= 8 && all[i].fingerprint_len <= FINGERPRINT_MAX);
        i += 1;
    }
};

impl Profile {
    /// The profile of messages that start with `version`.
    pub(super) fn of(version: u8) -> Option<Self> {
        [V1, V2].into_iter().find(|p| p.version == version)
    }
}
