//! One simulated device and what it does in a session: put its files
//! once, then, when it keeps watch and a repair is due, audit every copy
//! and repair as [`cairn_policy::repair::plan`] says.
//!
//! A device's files are put together and, in the simulator, move
//! together: they are one group of `files` files sharing their copies.
//! The client puts every file of a put on the same relays, as here; its
//! repairs, file by file, can send two files' replacements to different
//! relays when the candidates' figures are close, which the simulator
//! does not do. Each file's fate is the group's, so the loss per file is
//! the same; losses come in groups of `files`.

use cairn_policy::choice::{copies_wanted, repair_interval_secs};
use cairn_policy::repair::{self, Audited, Decision, Found, Unanswered};

use crate::relay::{Relay, State};
use crate::rng::Rng;
use crate::scenario::Clients;
use crate::time::{DAY, MIB};

/// How long a relay caught misbehaving stays flagged on a device: the
/// client's `scores::FLAG_SECS`.
const FLAG_SECS: u64 = 30 * DAY;

/// One relay of a device's set, with the device's record of it.
#[derive(Clone, Copy)]
struct Member {
    relay: u32,
    /// When it first failed to answer in the current run of failures.
    unanswered_since: Option<u64>,
    /// Until when it is flagged for misbehaviour.
    flagged_until: u64,
}

/// A copy of the device's files on a relay.
#[derive(Clone, Copy)]
struct Copy {
    relay: u32,
    last_access: u64,
}

/// One device and its files.
pub(crate) struct Client {
    set: Vec<Member>,
    copies: Vec<Copy>,
    /// When the files were put; `None` until a put succeeds.
    put_at: Option<u64>,
    lost: bool,
    /// The shortest retention its relays disclose (they never change it).
    shortest_retention: u64,
    next_repair: u64,
    /// The start of its next session.
    pub(crate) next_session: u64,
    rng: Rng,
}

/// What sessions did, to be added to the relays and the counts once the
/// hour is over.
#[derive(Default)]
pub(crate) struct Outcome {
    /// Bytes to add to (or take from) a relay's usage.
    pub(crate) usage: Vec<(u32, i64)>,
    pub(crate) files: u64,
    pub(crate) lost: u64,
    pub(crate) repaired: u64,
    pub(crate) sessions: u64,
}

impl Outcome {
    pub(crate) fn add(&mut self, other: Self) {
        self.usage.extend(other.usage);
        self.files += other.files;
        self.lost += other.lost;
        self.repaired += other.repaired;
        self.sessions += other.sessions;
    }

    fn charge(&mut self, relay: u32, bytes: u64) {
        self.usage
            .push((relay, i64::try_from(bytes).unwrap_or(i64::MAX)));
    }

    fn release(&mut self, relay: u32, bytes: u64) {
        self.usage
            .push((relay, -i64::try_from(bytes).unwrap_or(i64::MAX)));
    }
}

/// The rules every device follows, from the scenario.
pub(crate) struct Habits {
    pub(crate) files: u64,
    /// Bytes of the device's files together.
    pub(crate) bytes: u64,
    pub(crate) copies: usize,
    pub(crate) mean_gap: f64,
    pub(crate) watch: bool,
    pub(crate) unanswered: Unanswered,
    /// After how long unanswered the person swaps a relay of the set for
    /// another one; `None` when nobody tends the set.
    pub(crate) swap_after: Option<u64>,
}

impl Habits {
    pub(crate) fn of(c: &Clients) -> Self {
        Self {
            files: c.files as u64,
            bytes: c
                .file_mib
                .saturating_mul(MIB)
                .saturating_mul(c.files as u64),
            copies: c.copies,
            mean_gap: c.online_every_hours * 3600.0,
            watch: c.watch,
            unanswered: c.unanswered(),
            swap_after: c.swap_after_secs(),
        }
    }
}

impl Client {
    /// A device with a set of `set_size` distinct relays drawn at random.
    pub(crate) fn new(mut rng: Rng, set_size: usize, relays: &[Relay], mean_gap: f64) -> Self {
        // A set is small against the relays (the scenario checks it is no
        // larger), so redraws are few.
        let mut set: Vec<Member> = Vec::with_capacity(set_size);
        while set.len() < set_size {
            let pick = u32::try_from(rng.below(relays.len())).unwrap_or(u32::MAX);
            if !set.iter().any(|m| m.relay == pick) {
                set.push(Member {
                    relay: pick,
                    unanswered_since: None,
                    flagged_until: 0,
                });
            }
        }
        let next_session = rng.exp_secs(mean_gap);
        let shortest_retention = set
            .iter()
            .map(|m| relays[m.relay as usize].retention)
            .min()
            .unwrap_or(u64::MAX);
        Self {
            shortest_retention,
            set,
            copies: Vec::new(),
            put_at: None,
            lost: false,
            next_repair: 0,
            next_session,
            rng,
        }
    }

    /// Runs the session due now and draws the next one.
    pub(crate) fn session(&mut self, habits: &Habits, relays: &[Relay], out: &mut Outcome) {
        let t = self.next_session;
        out.sessions += 1;
        if self.put_at.is_none() {
            self.put(habits, relays, t, out);
        } else if habits.watch && t >= self.next_repair && !self.lost {
            self.repair(habits, relays, t, out);
        }
        self.next_session = t.saturating_add(self.rng.exp_secs(habits.mean_gap).max(1));
    }

    /// File-seconds observed to `horizon`, and whether the files are
    /// lost by then (the last copy may go after the last session).
    pub(crate) fn finish(&self, habits: &Habits, relays: &[Relay], horizon: u64) -> (u128, bool) {
        let Some(at) = self.put_at else {
            return (0, false);
        };
        let observed = u128::from(horizon.saturating_sub(at)) * u128::from(habits.files);
        let lost = !self.lost && !self.any_held(relays, horizon);
        (observed, lost)
    }

    fn any_held(&self, relays: &[Relay], t: u64) -> bool {
        self.copies
            .iter()
            .any(|c| relays[c.relay as usize].holds(c.last_access, t))
    }

    fn flagged(&self, relay: u32, t: u64) -> bool {
        self.set
            .iter()
            .any(|m| m.relay == relay && m.flagged_until > t)
    }

    /// The relays of the set that are up and can take the files, best
    /// first, as the client ranks them; those in `avoid` left out.
    fn candidates(&self, relays: &[Relay], bytes: u64, t: u64, avoid: &[Copy]) -> Vec<u32> {
        let mut usable: Vec<_> = self
            .set
            .iter()
            .filter(|m| !avoid.iter().any(|c| c.relay == m.relay))
            .filter(|m| relays[m.relay as usize].state(t) == State::Up)
            .map(|m| (m.relay, relays[m.relay as usize].offer(m.flagged_until > t)))
            .filter(|(_, offer)| offer.fits(bytes, bytes).is_ok())
            .collect();
        usable.sort_by_key(|(_, offer)| offer.rank());
        usable.into_iter().map(|(r, _)| r).collect()
    }

    /// A put needs every wanted copy, or it stores nothing and is tried
    /// again at the next session.
    fn put(&mut self, habits: &Habits, relays: &[Relay], t: u64, out: &mut Outcome) {
        let wanted = copies_wanted(habits.copies, self.set.len());
        let targets = self.candidates(relays, habits.bytes, t, &[]);
        if targets.len() < wanted {
            return;
        }
        for &relay in &targets[..wanted] {
            out.charge(relay, habits.bytes);
            self.copies.push(Copy {
                relay,
                last_access: t,
            });
        }
        out.files += habits.files;
        self.put_at = Some(t);
        self.next_repair = self.repair_after(t);
    }

    /// When a device that repairs at `t` repairs next: the client's
    /// cadence for the shortest retention in its set.
    fn repair_after(&self, t: u64) -> u64 {
        t + repair_interval_secs(Some(self.shortest_retention))
    }

    /// What a person who tends the set does (`cairn relay rm`, then
    /// `cairn relay add`): a relay of the set that has not answered for
    /// `after` seconds is swapped for one that answers, drawn at random.
    fn tend_set(&mut self, relays: &[Relay], t: u64, after: u64) {
        for i in 0..self.set.len() {
            let member = &mut self.set[i];
            member.unanswered_since = match relays[member.relay as usize].state(t) {
                State::Up => None,
                State::Down | State::Gone => Some(member.unanswered_since.unwrap_or(t)),
            };
            if member
                .unanswered_since
                .is_none_or(|since| t - since < after)
            {
                continue;
            }
            // A handful of draws finds a relay that answers unless most
            // are gone; then the person keeps looking next time.
            for _ in 0..32 {
                let pick = u32::try_from(self.rng.below(relays.len())).unwrap_or(u32::MAX);
                let relay = &relays[pick as usize];
                if relay.state(t) == State::Up && !self.set.iter().any(|m| m.relay == pick) {
                    self.set[i] = Member {
                        relay: pick,
                        unanswered_since: None,
                        flagged_until: 0,
                    };
                    self.shortest_retention = self
                        .set
                        .iter()
                        .map(|m| relays[m.relay as usize].retention)
                        .min()
                        .unwrap_or(u64::MAX);
                    break;
                }
            }
        }
    }

    /// Audits the copies (renewing the ones that answer) and replaces what
    /// the policy says to.
    fn repair(&mut self, habits: &Habits, relays: &[Relay], t: u64, out: &mut Outcome) {
        self.next_repair = self.repair_after(t);
        if !self.any_held(relays, t) {
            self.lost = true;
            out.lost += habits.files;
            return;
        }
        if let Some(after) = habits.swap_after {
            self.tend_set(relays, t, after);
        }
        // Most repairs find every copy where it was: renew them all, and
        // no plan is needed (nor the allocations that go with it).
        let all_good = self.copies.iter().all(|c| {
            let relay = &relays[c.relay as usize];
            relay.state(t) == State::Up && relay.holds(c.last_access, t)
        });
        if all_good && !self.copies.iter().any(|c| self.flagged(c.relay, t)) {
            for copy in &mut self.copies {
                copy.last_access = t;
                if let Some(m) = self.set.iter_mut().find(|m| m.relay == copy.relay) {
                    m.unanswered_since = None;
                }
            }
            return;
        }
        let mut audited = Vec::with_capacity(self.copies.len());
        for (i, copy) in self.copies.iter_mut().enumerate() {
            let relay = &relays[copy.relay as usize];
            let mut member = self.set.iter_mut().find(|m| m.relay == copy.relay);
            // What the device learns of the relay it asks (its scores).
            if let Some(m) = member.as_deref_mut() {
                m.unanswered_since = match relay.state(t) {
                    State::Up => None,
                    State::Down | State::Gone => Some(m.unanswered_since.unwrap_or(t)),
                };
            }
            let found = match relay.state(t) {
                // A client cannot tell a relay that is gone from one that
                // is down: neither answers.
                State::Gone | State::Down => Found::Unreachable {
                    why: "no answer",
                    // A relay the person took out of the set has been
                    // given up on.
                    for_secs: member.map_or(u64::MAX, |m| {
                        m.unanswered_since.map_or(0, |since| t - since)
                    }),
                },
                State::Up if relay.dropper => {
                    // It acknowledged the copy and kept nothing: the audit
                    // catches it, and the device flags it.
                    if let Some(m) = member {
                        m.flagged_until = t + FLAG_SECS;
                    }
                    Found::Bad("missing")
                }
                State::Up if relay.expired(copy.last_access, t) => Found::Bad("expired"),
                State::Up => {
                    // An audit reads the copy: an access, which renews it.
                    copy.last_access = t;
                    Found::Good
                }
            };
            audited.push((i, found));
        }
        let audited: Vec<Audited<usize, &str>> = audited
            .into_iter()
            .map(|(at, found)| Audited {
                at,
                found,
                flagged: self.flagged(self.copies[at].relay, t).then_some("flagged"),
            })
            .collect();
        let wanted = copies_wanted(habits.copies, self.set.len());
        let Decision::Repair(plan) = repair::plan(&audited, wanted, habits.unanswered) else {
            return;
        };
        let new = self.candidates(relays, habits.bytes, t, &self.copies);
        for (&(at, _), &to) in plan.replace.iter().zip(new.iter().take(plan.needed)) {
            let old = self.copies[at].relay;
            if relays[old as usize].state(t) != State::Gone {
                out.release(old, habits.bytes);
            }
            out.charge(to, habits.bytes);
            self.copies[at] = Copy {
                relay: to,
                last_access: t,
            };
            out.repaired += habits.files;
        }
    }
}
