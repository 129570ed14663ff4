//! What a repair does with one blob's copies once it has audited them
//! (docs/PROTOCOL.md §10.6, "Repair"): which copies are replaced, from
//! where, and how many new ones are made.

/// What an audit found of one copy, with the words for why it is not good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found<R> {
    /// The relay proved it holds the bytes.
    Good,
    /// The relay does not hold them, or answered falsely.
    Bad(R),
    /// The relay could not be asked.
    Unreachable {
        /// Why (the failure of this attempt).
        why: R,
        /// How long the relay has gone unanswered, in seconds: from the
        /// first failed request in a row to this one (0 when it answered
        /// the request before).
        for_secs: u64,
    },
}

/// What a repair does with copies on relays that do not answer.
///
/// A client cannot tell a relay that is down for an hour from one that is
/// gone for good: neither answers. Replacing at once moves copies at every
/// outage; never replacing loses a file once its last relay vanishes.
/// docs/DURABILITY.md weighs the two with the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// Keep counting on them (they are reported, not replaced).
    Keep,
    /// Replace copies on a relay that has gone unanswered for at least
    /// this many seconds; `ReplaceAfter(0)` replaces at once.
    ReplaceAfter(u64),
}

/// Chunks an audit asks for per copy: a relay missing a tenth of a blob
/// passes 16 random chunks with probability 0.9^16 ≈ 18%, and repeated
/// audits (fresh chunks each time) shrink that geometrically.
pub const AUDIT_CHUNKS: usize = 16;

/// How long a misbehaviour (a failed audit, a lost copy, a lie in its
/// info) keeps a relay flagged on a device: its copies move off it, and
/// placement and repair pass it over.
pub const FLAG_SECS: u64 = 30 * 86_400;

/// How long a relay may go unanswered before a device that keeps watch
/// (`cairn sync --watch`) replaces the copies it holds: three days. An
/// outage that long is rare (1 in 400 at the simulated 12-hour mean),
/// while a relay that vanished costs its copies at most three days of
/// exposure; docs/DURABILITY.md, "How long to wait for a relay", has the
/// sweep this comes from.
pub const UNANSWERED_WAIT_SECS: u64 = 3 * 86_400;

/// How long a relay of the set may go unanswered before the person is told
/// to replace it (`cairn status`): a week. Its copies have been replaced
/// elsewhere by then (after [`UNANSWERED_WAIT_SECS`]), but a set whose
/// relays all vanish loses its files, and a client cannot add relays by
/// itself; docs/DURABILITY.md, "Tending the set", has the sweep.
pub const SWAP_RELAY_AFTER_SECS: u64 = 7 * 86_400;

impl Unanswered {
    /// Whether a copy on a relay unanswered for `for_secs` is replaced.
    #[must_use]
    pub fn replaces(self, for_secs: u64) -> bool {
        match self {
            Self::Keep => false,
            Self::ReplaceAfter(wait) => for_secs >= wait,
        }
    }
}

/// One audited copy: where it is (`K`), what was found, and, if its relay
/// recently misbehaved, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audited<K, R> {
    /// The relay holding the copy.
    pub at: K,
    /// What the audit found.
    pub found: Found<R>,
    /// Set when the relay is flagged for misbehaviour: its copies move off
    /// it even when they pass, though they remain sources of last resort
    /// (the bytes are checked by their hash on the way).
    pub flagged: Option<R>,
}

/// What to do with a blob's copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<K, R> {
    /// Nothing to replace, and enough good copies.
    Healthy,
    /// Nothing to replace, but fewer good copies than wanted (the relays
    /// to hold more are not in its places; the caller says so).
    Short {
        /// Good copies on trusted relays.
        good: usize,
    },
    /// Copies to replace and no good copy to replace them from.
    NoSource {
        /// Copies that would have been replaced.
        bad: usize,
    },
    /// Copies to replace, and where from.
    Repair(Plan<K, R>),
}

/// A repair of one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan<K, R> {
    /// Good copies on trusted relays, which stay.
    pub good: usize,
    /// Where the bytes may be copied from, best first: good copies on
    /// trusted relays, then good copies on flagged ones.
    pub sources: Vec<K>,
    /// The copies to replace, each with why, in the order new copies go
    /// to them.
    pub replace: Vec<(K, R)>,
    /// New copies to make: enough to reach the wanted number, and never
    /// more than the copies replaced.
    pub needed: usize,
}

/// Decides what a repair does with the audited copies of one blob when
/// `wanted` copies are the aim. Copies on relays that do not answer are
/// replaced as `unanswered` says: a relay may be down for an hour.
#[must_use]
pub fn plan<K: Clone, R: Clone>(
    audited: &[Audited<K, R>],
    wanted: usize,
    unanswered: Unanswered,
) -> Decision<K, R> {
    let mut sources = Vec::new();
    let mut last_resort = Vec::new();
    let mut replace = Vec::new();
    for copy in audited {
        match (&copy.found, &copy.flagged) {
            (Found::Good, None) => sources.push(copy.at.clone()),
            (Found::Good, Some(why)) => {
                last_resort.push(copy.at.clone());
                replace.push((copy.at.clone(), why.clone()));
            }
            (Found::Bad(why), _) => replace.push((copy.at.clone(), why.clone())),
            (Found::Unreachable { why, for_secs }, _) if unanswered.replaces(*for_secs) => {
                replace.push((copy.at.clone(), why.clone()));
            }
            (Found::Unreachable { .. }, _) => {}
        }
    }
    let good = sources.len();
    if replace.is_empty() {
        return if good >= wanted {
            Decision::Healthy
        } else {
            Decision::Short { good }
        };
    }
    sources.extend(last_resort);
    if sources.is_empty() {
        return Decision::NoSource { bad: replace.len() };
    }
    let needed = wanted.saturating_sub(good).min(replace.len());
    Decision::Repair(Plan {
        good,
        sources,
        replace,
        needed,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn copy(at: u8, found: Found<&'static str>, flagged: bool) -> Audited<u8, &'static str> {
        Audited {
            at,
            found,
            flagged: flagged.then_some("flagged"),
        }
    }

    #[test]
    fn good_copies_stay_and_bad_ones_are_replaced_from_them() {
        let audited = [
            copy(1, Found::Good, false),
            copy(2, Found::Bad("missing"), false),
            copy(3, Found::Good, false),
        ];
        assert_eq!(
            plan(&audited, 3, Unanswered::Keep),
            Decision::Repair(Plan {
                good: 2,
                sources: vec![1, 3],
                replace: vec![(2, "missing")],
                needed: 1,
            })
        );
        assert_eq!(plan(&audited[..1], 1, Unanswered::Keep), Decision::Healthy);
        assert_eq!(
            plan(&audited[..1], 3, Unanswered::Keep),
            Decision::Short { good: 1 }
        );
    }

    #[test]
    fn a_flagged_relay_loses_its_copies_but_can_still_be_copied_from() {
        let audited = [
            copy(1, Found::Good, true),
            copy(2, Found::Bad("altered"), false),
        ];
        assert_eq!(
            plan(&audited, 2, Unanswered::Keep),
            Decision::Repair(Plan {
                good: 0,
                sources: vec![1],
                replace: vec![(1, "flagged"), (2, "altered")],
                needed: 2,
            })
        );
    }

    #[test]
    fn unreachable_copies_wait_as_told_and_no_source_is_said() {
        let unanswered_for = |for_secs| {
            [
                copy(1, Found::Good, false),
                copy(
                    2,
                    Found::Unreachable {
                        why: "refused",
                        for_secs,
                    },
                    false,
                ),
            ]
        };
        let (fresh, long) = (unanswered_for(0), unanswered_for(UNANSWERED_WAIT_SECS));
        let wait = Unanswered::ReplaceAfter(UNANSWERED_WAIT_SECS);
        let replaced = |d: &Decision<u8, &str>| matches!(d, Decision::Repair(p) if p.needed == 1);
        assert_eq!(
            plan(&long, 2, Unanswered::Keep),
            Decision::Short { good: 1 }
        );
        assert_eq!(plan(&fresh, 2, wait), Decision::Short { good: 1 });
        assert!(replaced(&plan(&long, 2, wait)));
        assert!(replaced(&plan(&fresh, 2, Unanswered::ReplaceAfter(0))));
        let lost = [copy(2, Found::Bad("missing"), false)];
        assert_eq!(
            plan(&lost, 2, Unanswered::Keep),
            Decision::NoSource { bad: 1 }
        );
    }

    fn found() -> impl Strategy<Value = Found<u8>> {
        prop_oneof![
            Just(Found::Good),
            any::<u8>().prop_map(Found::Bad),
            (any::<u8>(), any::<u64>())
                .prop_map(|(why, for_secs)| Found::Unreachable { why, for_secs }),
        ]
    }

    proptest! {
        /// A repair never makes more copies than it replaces or than bring
        /// the good ones to the wanted number, and copies only from copies
        /// that passed.
        #[test]
        fn a_repair_is_bounded_and_copies_only_from_good_copies(
            copies in proptest::collection::vec((found(), any::<bool>()), 0..8),
            wanted in 0usize..6,
            wait in proptest::option::of(any::<u64>()),
        ) {
            let audited: Vec<Audited<usize, u8>> = copies
                .iter()
                .enumerate()
                .map(|(at, (found, flagged))| Audited {
                    at,
                    found: found.clone(),
                    flagged: flagged.then_some(0),
                })
                .collect();
            let unanswered = wait.map_or(Unanswered::Keep, Unanswered::ReplaceAfter);
            if let Decision::Repair(p) = plan(&audited, wanted, unanswered) {
                prop_assert!(p.needed <= p.replace.len());
                prop_assert!(p.good + p.needed <= wanted.max(p.good));
                for source in &p.sources {
                    prop_assert_eq!(&audited[*source].found, &Found::Good);
                }
                // A copy on a relay that answered recently enough stays.
                for (at, _) in &p.replace {
                    if let Found::Unreachable { for_secs, .. } = audited[*at].found {
                        prop_assert!(unanswered.replaces(for_secs));
                    }
                }
            }
        }
    }
}
