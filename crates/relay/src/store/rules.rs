//! The store's rules, decided in one place for both backends: admission of
//! a new blob (capacity, then quota), a claim of ownership, a release, and
//! the compare-and-set of a head. Each is a pure function of the facts a
//! backend read inside its transaction; the backend reads them, asks here,
//! and writes what the answer says. So the embedded writer and the
//! PostgreSQL transactions cannot drift apart on what the relay promises.

use std::num::NonZeroU64;

use super::model::{
    ClaimOutcome, DeleteOutcome, HeadOutcome, InsertOutcome, Limits, MAX_OWNERS,
    MAX_SLOTS_PER_MAILBOX, NewHead, Source,
};

/// An upper bound that an operator may leave unset. Settings spell "no
/// limit" as 0; this is the one place that spelling is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit(Option<NonZeroU64>);

impl Limit {
    /// No limit at all.
    pub(crate) const NONE: Self = Self(None);

    /// From a setting where 0 means "no limit".
    pub(crate) fn from_setting(value: u64) -> Self {
        Self(NonZeroU64::new(value))
    }

    /// Whether there is a limit (and so a usage worth reading).
    pub(crate) fn is_set(self) -> bool {
        self.0.is_some()
    }

    /// Whether `used` plus `more` stays within the limit.
    pub(crate) fn allows(self, used: u64, more: u64) -> bool {
        self.0
            .is_none_or(|limit| used.saturating_add(more) <= limit.get())
    }
}

/// The limits a store enforces, and the decisions that follow from them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    capacity: u64,
    key_quota: Limit,
    max_heads: Limit,
}

/// What a head PUT does with the head stored in its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadStep {
    /// The slot is empty: create it, if [`Rules::room_for_head`] allows.
    Create,
    /// Newer than the stored head: replace it.
    Replace,
    /// Not newer: refuse, showing the stored head (an access to it).
    Stale,
}

impl Rules {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            capacity: limits.capacity,
            key_quota: Limit::from_setting(limits.key_quota),
            max_heads: Limit::from_setting(limits.max_heads),
        }
    }

    /// The quota that pays for what `source` hands over: a client's key
    /// pays; peers are exempt (the operator chose them), though not from
    /// capacity.
    pub(crate) fn quota_for(&self, source: Source) -> Limit {
        match source {
            Source::Client(_) => self.key_quota,
            Source::Peer(_) => Limit::NONE,
        }
    }

    /// The quota a claim of ownership is charged against.
    pub(crate) fn key_quota(&self) -> Limit {
        self.key_quota
    }

    /// Admission of a blob of `size` bytes that the relay does not hold,
    /// with `stored` bytes held already and the payer at `usage` bytes of
    /// `quota`: capacity first, then the quota.
    pub(crate) fn admit(
        &self,
        stored: u64,
        size: u64,
        quota: Limit,
        usage: u64,
    ) -> Result<(), InsertOutcome> {
        if stored.saturating_add(size) > self.capacity {
            return Err(InsertOutcome::RelayFull);
        }
        if !quota.allows(usage, size) {
            return Err(InsertOutcome::QuotaExceeded);
        }
        Ok(())
    }

    /// A claim of ownership on a held blob, as far as it is decided by who
    /// owns the blob (`owns`: the claimant does; `owners`: how many do).
    /// `Ok(())` leaves it to the quota ([`Rules::charge`]).
    pub(crate) fn claim(owns: bool, owners: u64) -> Result<(), ClaimOutcome> {
        if owns {
            Err(ClaimOutcome::AlreadyOwner)
        } else if owners >= MAX_OWNERS {
            Err(ClaimOutcome::TooManyOwners)
        } else {
            Ok(())
        }
    }

    /// The end of a claim that [`Rules::claim`] let through: the claimant,
    /// at `usage` bytes, pays `size` more if its quota allows.
    pub(crate) fn charge(&self, usage: u64, size: u64) -> ClaimOutcome {
        if self.key_quota.allows(usage, size) {
            ClaimOutcome::Claimed
        } else {
            ClaimOutcome::QuotaExceeded
        }
    }

    /// A delete by a key that `owns` the blob or not, of `owners` in all:
    /// the key's claim goes, and the blob goes with the last claim.
    pub(crate) fn release(owns: bool, owners: u64) -> DeleteOutcome {
        if !owns {
            DeleteOutcome::NotOwner
        } else if owners <= 1 {
            DeleteOutcome::Deleted
        } else {
            DeleteOutcome::Released {
                owners_left: owners - 1,
            }
        }
    }

    /// The compare half of a head PUT's compare-and-set, against the
    /// stored head's `seq` and envelope bytes.
    pub(crate) fn head_step(head: &NewHead, stored: Option<(u64, &[u8])>) -> HeadStep {
        match stored {
            None => HeadStep::Create,
            Some((seq, envelope)) if head.replaces(seq, envelope) => HeadStep::Replace,
            Some(_) => HeadStep::Stale,
        }
    }

    /// Whether a new slot fits: the relay keeps `heads` heads, the mailbox
    /// has `slots` slots.
    pub(crate) fn room_for_head(&self, heads: u64, slots: usize) -> Result<(), HeadOutcome> {
        if !self.max_heads.allows(heads, 1) {
            return Err(HeadOutcome::RelayFull);
        }
        if slots >= MAX_SLOTS_PER_MAILBOX {
            return Err(HeadOutcome::MailboxFull);
        }
        Ok(())
    }

    /// Whether the relay's head count is bounded (so worth reading).
    pub(crate) fn counts_heads(&self) -> bool {
        self.max_heads.is_set()
    }

    /// A migrated head replaces a stored one (`stored`: its `seq`) only if
    /// it is newer.
    pub(crate) fn imports_head(stored: Option<u64>, seq: u64) -> bool {
        stored.is_none_or(|stored| stored < seq)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rules(capacity: u64, key_quota: u64, max_heads: u64) -> Rules {
        Rules::new(&Limits {
            capacity,
            key_quota,
            max_heads,
            cache_bytes: 0,
            index_cache_bytes: 0,
            disk_reserve: 0,
        })
    }

    proptest! {
        /// A limit of 0 is no limit; any other admits exactly what fits.
        #[test]
        fn a_limit_admits_exactly_what_fits(limit in 0u64..1000, used in 0u64..1000, more in 0u64..1000) {
            let l = Limit::from_setting(limit);
            prop_assert_eq!(l.is_set(), limit > 0);
            prop_assert_eq!(l.allows(used, more), limit == 0 || used + more <= limit);
        }

        /// Capacity is checked before the quota, and a peer never meets one.
        #[test]
        fn admission_checks_capacity_then_quota(
            capacity in 0u64..100, quota in 0u64..100, stored in 0u64..100,
            usage in 0u64..100, size in 0u64..100,
        ) {
            let r = rules(capacity, quota, 0);
            let key = cairn_proto::SigningKey::from_seed(&[1; 32]).verifying_key();
            let client = r.admit(stored, size, r.quota_for(Source::Client(key)), usage);
            let peer = r.admit(stored, size, r.quota_for(Source::Peer(key)), usage);
            let expected = if stored + size > capacity {
                Err(InsertOutcome::RelayFull)
            } else if quota > 0 && usage + size > quota {
                Err(InsertOutcome::QuotaExceeded)
            } else {
                Ok(())
            };
            prop_assert_eq!(client, expected);
            prop_assert_eq!(peer.is_err(), stored + size > capacity);
        }

        /// A delete by an owner leaves one owner fewer; by anyone else, nothing.
        #[test]
        fn a_release_drops_exactly_one_claim(owns: bool, owners in 1u64..100) {
            let outcome = Rules::release(owns, owners);
            let expected = match (owns, owners) {
                (false, _) => DeleteOutcome::NotOwner,
                (true, 1) => DeleteOutcome::Deleted,
                (true, n) => DeleteOutcome::Released { owners_left: n - 1 },
            };
            prop_assert_eq!(outcome, expected);
        }
    }

    #[test]
    fn a_claim_is_refused_to_owners_and_past_the_owner_cap() {
        assert_eq!(Rules::claim(true, 1), Err(ClaimOutcome::AlreadyOwner));
        assert_eq!(
            Rules::claim(false, MAX_OWNERS),
            Err(ClaimOutcome::TooManyOwners)
        );
        assert_eq!(Rules::claim(false, MAX_OWNERS - 1), Ok(()));
        let r = rules(100, 10, 0);
        assert_eq!(r.charge(5, 5), ClaimOutcome::Claimed);
        assert_eq!(r.charge(5, 6), ClaimOutcome::QuotaExceeded);
        assert_eq!(rules(100, 0, 0).charge(u64::MAX, 1), ClaimOutcome::Claimed);
    }

    #[test]
    fn a_new_slot_needs_room_on_the_relay_and_in_the_mailbox() {
        let r = rules(0, 0, 3);
        assert_eq!(r.room_for_head(2, 0), Ok(()));
        assert_eq!(r.room_for_head(3, 0), Err(HeadOutcome::RelayFull));
        assert_eq!(
            r.room_for_head(0, MAX_SLOTS_PER_MAILBOX),
            Err(HeadOutcome::MailboxFull)
        );
        assert_eq!(rules(0, 0, 0).room_for_head(u64::MAX - 1, 0), Ok(()));
        assert!(Rules::imports_head(None, 0));
        assert!(Rules::imports_head(Some(1), 2));
        assert!(!Rules::imports_head(Some(2), 2));
    }
}
