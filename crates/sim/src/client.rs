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
//!
//! A device is a few cache lines with no pointers (its set and copies
//! are arrays inside it, times are seconds in 32 bits): a million of them
//! are stepped every simulated day, and memory is what that waits on.

use std::ops::{Deref, DerefMut};

use cairn_policy::choice::{
    Offer, believed_retention, copies_wanted, kept_short, repair_interval_secs,
};
use cairn_policy::repair::{self, Audited, Decision, FLAG_SECS, Found, Unanswered};
use cairn_proto::audit::{ChunkRequest, chunk_count};

use crate::relay::{Relay, State, View};
use crate::rng::Rng;
use crate::scenario::{Clients, MAX_SET};
use crate::time::MIB;
use crate::trace::{Event, Happened};

/// A moment, in seconds from the start, as a device stores it; the
/// scenario's length is checked to fit.
type Secs = u32;

/// "Never", for a [`Secs`].
const NEVER: Secs = Secs::MAX;

fn secs(t: u64) -> Secs {
    Secs::try_from(t).unwrap_or(NEVER - 1)
}

/// One relay of a device's set, with the device's record of it.
#[derive(Clone, Copy, Default)]
struct Member {
    relay: u32,
    /// When it first failed to answer in the current run of failures;
    /// [`NEVER`] while it answers.
    unanswered_since: Secs,
    /// Until when it is flagged for misbehaviour.
    flagged_until: Secs,
    /// The shortest time it was seen to keep a copy it had promised to
    /// keep longer (`choice::kept_short`); [`NEVER`] when not seen.
    kept_at_most: Secs,
}

impl Member {
    fn new(relay: u32) -> Self {
        Self {
            relay,
            unanswered_since: NEVER,
            flagged_until: 0,
            kept_at_most: NEVER,
        }
    }

    /// Notes that its copy was missing at `t`, the files having been put
    /// at `put_at`, as the client does: the relay is flagged, and if it
    /// promised (`disclosed`) to keep the copy longer than it did, the
    /// device counts on what it kept from now on.
    fn missing(&mut self, put_at: Secs, disclosed: u64, t: u64) {
        self.flagged_until = secs(t + FLAG_SECS);
        if let Some(kept) = kept_short(u64::from(put_at), t, disclosed) {
            self.kept_at_most = self.kept_at_most.min(secs(kept));
        }
    }

    /// What its info document offers, as this device believes it.
    fn offer(&self, relay: &crate::relay::Relay, t: u64) -> Offer {
        let mut offer = relay.offer(u64::from(self.flagged_until) > t);
        let kept = (self.kept_at_most != NEVER).then_some(u64::from(self.kept_at_most));
        offer.retention_secs = believed_retention(offer.retention_secs, kept);
        offer
    }

    /// Notes whether the relay answered at `t` (the client's scores).
    fn answered(&mut self, state: State, t: u64) {
        self.unanswered_since = match state {
            State::Up => NEVER,
            State::Down | State::Gone if self.unanswered_since == NEVER => secs(t),
            State::Down | State::Gone => self.unanswered_since,
        };
    }

    /// How long it has gone unanswered at `t`.
    fn unanswered_for(&self, t: u64) -> u64 {
        if self.unanswered_since == NEVER {
            0
        } else {
            t.saturating_sub(u64::from(self.unanswered_since))
        }
    }
}

/// A copy of the device's files on a relay.
#[derive(Clone, Copy, Default)]
struct Copy {
    relay: u32,
    last_access: Secs,
}

/// Up to [`MAX_SET`] items kept in place.
#[derive(Clone, Copy)]
struct Inline<T> {
    len: u8,
    items: [T; MAX_SET],
}

impl<T: Default + std::marker::Copy> Inline<T> {
    fn new() -> Self {
        Self {
            len: 0,
            items: [T::default(); MAX_SET],
        }
    }

    fn push(&mut self, item: T) {
        // The scenario's set size is checked against MAX_SET, and copies
        // are never more than the set.
        if let Some(slot) = self.items.get_mut(usize::from(self.len)) {
            *slot = item;
            self.len += 1;
        }
    }
}

impl<T> Deref for Inline<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..usize::from(self.len)]
    }
}

impl<T> DerefMut for Inline<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items[..usize::from(self.len)]
    }
}

/// One device and its files.
pub(crate) struct Client {
    /// The start of its next session.
    pub(crate) next_session: u64,
    next_repair: u64,
    /// When the files were put; [`NEVER`] until a put succeeds.
    put_at: Secs,
    /// The shortest retention its relays disclose (they never change it).
    shortest_retention: u64,
    lost: bool,
    /// Bit `i` set: copy `i` is on an audit liar that lacks a chunk of one
    /// of the files, so it cannot be decrypted whatever audits it passes.
    partial: u16,
    rng: Rng,
    copies: Inline<Copy>,
    set: Inline<Member>,
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
    pub(crate) refused_puts: u64,
    /// What each session did, when the run is traced.
    pub(crate) events: Vec<Event>,
}

impl Outcome {
    pub(crate) fn add(&mut self, other: Self) {
        self.usage.extend(other.usage);
        self.files += other.files;
        self.lost += other.lost;
        self.repaired += other.repaired;
        self.sessions += other.sessions;
        self.refused_puts += other.refused_puts;
        self.events.extend(other.events);
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
    /// another; `None` when nobody tends the set.
    pub(crate) swap_after: Option<u64>,
    /// The longest retention that ranks a relay higher, in seconds.
    pub(crate) ranked_retention: u64,
    /// Chunks an audit asks for per file.
    pub(crate) audit_chunks: usize,
    /// Whether sessions note what they did in [`Outcome::events`].
    pub(crate) trace: bool,
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
            // Devices of an identity act as one, online whenever any is.
            mean_gap: c.online_every_hours * 3600.0 / c.devices as f64,
            watch: c.watch,
            unanswered: c.unanswered(),
            swap_after: c.swap_after_secs(),
            ranked_retention: c.ranked_retention_secs(),
            audit_chunks: c.audit_chunks,
            trace: false,
        }
    }
}

impl Client {
    /// A device with a set of `set_size` distinct relays drawn at random.
    pub(crate) fn new(mut rng: Rng, set_size: usize, relays: &[Relay], mean_gap: f64) -> Self {
        // A set is small against the relays (the scenario checks it is no
        // larger), so redraws are few.
        let mut set = Inline::new();
        while set.len() < set_size.min(MAX_SET) {
            let pick = u32::try_from(rng.below(relays.len())).unwrap_or(u32::MAX);
            if !set.iter().any(|m: &Member| m.relay == pick) {
                set.push(Member::new(pick));
            }
        }
        let next_session = rng.exp_secs(mean_gap);
        let mut client = Self {
            next_session,
            next_repair: 0,
            put_at: NEVER,
            shortest_retention: u64::MAX,
            lost: false,
            partial: 0,
            rng,
            copies: Inline::new(),
            set,
        };
        client.shortest_retention =
            client.shortest_retention(|r| relays[r as usize].disclosed_retention);
        client
    }

    /// The shortest retention of the set's relays.
    fn shortest_retention(&self, retention: impl Fn(u32) -> u64) -> u64 {
        self.set
            .iter()
            .map(|m| retention(m.relay))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The relays of its set, in the order drawn.
    pub(crate) fn set(&self) -> Vec<u32> {
        self.set.iter().map(|m| m.relay).collect()
    }

    /// The relays holding its copies, and whether its files were found
    /// lost (the run's last word on them needs [`Client::finish`] too).
    pub(crate) fn copies(&self) -> (Vec<u32>, bool) {
        (self.copies.iter().map(|c| c.relay).collect(), self.lost)
    }

    /// Runs the session due now and draws the next one.
    pub(crate) fn session(&mut self, habits: &Habits, relays: &View<'_>, out: &mut Outcome) {
        let t = self.next_session;
        out.sessions += 1;
        let happened = if self.put_at == NEVER {
            Some(Happened::Put {
                stored: self.put(habits, relays, t, out),
            })
        } else if habits.watch && t >= self.next_repair && !self.lost {
            Some(self.repair(habits, relays, t, out))
        } else {
            None
        };
        if let Some(what) = happened.filter(|_| habits.trace) {
            // The shard knows which device this is, and says so.
            out.events.push(Event {
                client: u32::MAX,
                t,
                what,
            });
        }
        self.next_session = t.saturating_add(self.rng.exp_secs(habits.mean_gap).max(1));
    }

    /// File-seconds observed to `horizon`, and whether the files are
    /// lost by then (the last copy may go after the last session).
    pub(crate) fn finish(&self, habits: &Habits, relays: &View<'_>, horizon: u64) -> (u128, bool) {
        if self.put_at == NEVER {
            return (0, false);
        }
        let observed = u128::from(horizon.saturating_sub(u64::from(self.put_at)));
        let lost = !self.lost && !(0..self.copies.len()).any(|at| self.held(at, relays, horizon));
        (observed * u128::from(habits.files), lost)
    }

    fn member(&mut self, relay: u32) -> Option<&mut Member> {
        self.set.iter_mut().find(|m| m.relay == relay)
    }

    fn flagged(&self, relay: u32, t: u64) -> bool {
        self.set
            .iter()
            .any(|m| m.relay == relay && u64::from(m.flagged_until) > t)
    }

    /// The relays of the set that are up and can take the files, best
    /// first, as the client ranks them; those holding a copy left out.
    fn candidates(&self, relays: &View<'_>, habits: &Habits, t: u64) -> Vec<u32> {
        let bytes = habits.bytes;
        let mut usable: Vec<_> = self
            .set
            .iter()
            .filter(|m| !self.copies.iter().any(|c| c.relay == m.relay))
            .filter(|m| relays.state(m.relay, t) == State::Up)
            .map(|m| (m.relay, m.offer(relays.relay(m.relay), t)))
            .filter(|(_, offer)| offer.fits(bytes, bytes).is_ok())
            .collect();
        usable.sort_by_key(|(_, offer)| offer.rank_up_to(habits.ranked_retention));
        usable.into_iter().map(|(r, _)| r).collect()
    }

    /// A put needs every wanted copy, or it stores nothing and is tried
    /// again at the next session. Returns the relays that took a copy.
    fn put(&mut self, habits: &Habits, relays: &View<'_>, t: u64, out: &mut Outcome) -> Vec<u32> {
        let wanted = copies_wanted(habits.copies, self.set.len());
        let mut targets = self.candidates(relays, habits, t);
        if targets.len() < wanted {
            out.refused_puts += 1;
            return Vec::new();
        }
        targets.truncate(wanted);
        for &relay in &targets {
            out.charge(relay, habits.bytes);
            self.copies.push(Copy {
                relay,
                last_access: secs(t),
            });
        }
        out.files += habits.files;
        self.put_at = secs(t);
        for at in 0..self.copies.len() {
            self.note_chunks(at, relays, habits);
        }
        self.next_repair = self.repair_after(t);
        targets
    }

    /// When a device that repairs at `t` repairs next: the client's
    /// cadence for the shortest retention in its set.
    fn repair_after(&self, t: u64) -> u64 {
        t + repair_interval_secs(Some(self.shortest_retention))
    }

    /// What a person who tends the set does (`cairn relay rm`, then
    /// `cairn relay add`) with the relays `cairn status` names: one that
    /// has not answered for `after` seconds, or was seen losing a copy
    /// sooner than it promised, is swapped for one that answers, drawn at
    /// random.
    fn tend_set(&mut self, relays: &View<'_>, t: u64, after: u64) {
        for i in 0..self.set.len() {
            let member = &mut self.set[i];
            member.answered(relays.state(member.relay, t), t);
            let silent = member.unanswered_since != NEVER && member.unanswered_for(t) >= after;
            if !silent && member.kept_at_most == NEVER {
                continue;
            }
            // A handful of draws finds a relay that answers unless most
            // are gone; then the person keeps looking next time.
            for _ in 0..32 {
                let pick = u32::try_from(self.rng.below(relays.len())).unwrap_or(u32::MAX);
                if relays.state(pick, t) == State::Up && !self.set.iter().any(|m| m.relay == pick) {
                    self.set[i] = Member::new(pick);
                    self.shortest_retention =
                        self.shortest_retention(|r| relays.relay(r).disclosed_retention);
                    break;
                }
            }
        }
    }

    /// Audits the copies (renewing the ones that answer) and replaces what
    /// the policy says to.
    fn repair(
        &mut self,
        habits: &Habits,
        relays: &View<'_>,
        t: u64,
        out: &mut Outcome,
    ) -> Happened {
        self.next_repair = self.repair_after(t);
        if !(0..self.copies.len()).any(|at| self.held(at, relays, t)) {
            self.lost = true;
            out.lost += habits.files;
            return Happened::Lost;
        }
        let mut replaced = Vec::new();
        if let Some(after) = habits.swap_after {
            self.tend_set(relays, t, after);
        }
        // Most repairs find every copy where it was: renew them all, and
        // no plan is needed (nor the allocations that go with it).
        let all_good = self
            .copies
            .iter()
            .enumerate()
            .all(|(at, c)| relays.state(c.relay, t) == State::Up && self.held(at, relays, t));
        if all_good && !self.copies.iter().any(|c| self.flagged(c.relay, t)) {
            for i in 0..self.copies.len() {
                self.copies[i].last_access = secs(t);
                let relay = self.copies[i].relay;
                if let Some(m) = self.member(relay) {
                    m.answered(State::Up, t);
                }
            }
            return Happened::Repair { replaced };
        }
        // A repair syncs first; when no relay of the set answers, the
        // client stops there (offline), auditing nothing.
        if !self
            .set
            .iter()
            .any(|m| relays.state(m.relay, t) == State::Up)
        {
            return Happened::Repair { replaced };
        }
        let found: Vec<Found<&str>> = (0..self.copies.len())
            .map(|at| self.audit(at, relays, t, habits))
            .collect();
        let audited: Vec<Audited<usize, &str>> = found
            .into_iter()
            .enumerate()
            .map(|(at, found)| Audited {
                at,
                found,
                flagged: self.flagged(self.copies[at].relay, t).then_some("flagged"),
            })
            .collect();
        let wanted = copies_wanted(habits.copies, self.set.len());
        let Decision::Repair(plan) = repair::plan(&audited, wanted, habits.unanswered) else {
            return Happened::Repair { replaced };
        };
        // The client copies from a source whose bytes hash to the blob
        // id: a liar's partial copy, though it passed its audit, fails
        // that, and without a whole copy nothing can be copied.
        if !plan.sources.iter().any(|&at| self.held(at, relays, t)) {
            return Happened::Repair { replaced };
        }
        // As the client, a repair never copies onto a flagged relay.
        let new: Vec<u32> = self
            .candidates(relays, habits, t)
            .into_iter()
            .filter(|&r| !self.flagged(r, t))
            .collect();
        for (&(at, _), &to) in plan.replace.iter().zip(new.iter().take(plan.needed)) {
            let old = self.copies[at].relay;
            if relays.state(old, t) != State::Gone {
                out.release(old, habits.bytes);
            }
            out.charge(to, habits.bytes);
            self.copies[at] = Copy {
                relay: to,
                last_access: secs(t),
            };
            self.note_chunks(at, relays, habits);
            out.repaired += habits.files;
            replaced.push((old, to));
        }
        Happened::Repair { replaced }
    }

    /// Whether copy `at` is still held at `t`: on its relay, not expired,
    /// and whole.
    fn held(&self, at: usize, relays: &View<'_>, t: u64) -> bool {
        let copy = self.copies[at];
        self.partial & (1 << at) == 0
            && relays
                .relay(copy.relay)
                .holds(u64::from(copy.last_access), t)
    }

    /// Notes whether the copy just placed at `at` lacks a chunk of any of
    /// the files: which chunks an audit liar keeps is fixed per relay,
    /// file and chunk (the draws its audits meet in [`Client::proves`]), so
    /// a copy it kept whole by chance is as good as any.
    fn note_chunks(&mut self, at: usize, relays: &View<'_>, habits: &Habits) {
        let relay = self.copies[at].relay;
        let keeps = relays.relay(relay).keeps;
        let file_bytes = habits.bytes / habits.files.max(1);
        let salt = u64::from(relay) << 32 | u64::from(self.put_at);
        let partial = keeps < 1.0
            && (0..habits.files).any(|file| {
                (0..chunk_count(file_bytes))
                    .any(|chunk| Rng::stream(salt, file << 40 | chunk).unit() >= keeps)
            });
        if partial {
            self.partial |= 1 << at;
        } else {
            self.partial &= !(1 << at);
        }
    }

    /// Whether a relay that keeps `keeps` of each copy's chunks answers
    /// the audit of every one of the device's files (the client audits
    /// each blob): each asks for the habit's chunks (`repair::AUDIT_CHUNKS`
    /// unless the scenario says) drawn by the
    /// real `ChunkRequest::random`, and all must be ones it kept. Which
    /// chunks a liar kept is fixed per relay, file and chunk.
    fn proves(&mut self, relay: u32, keeps: f64, habits: &Habits) -> bool {
        let file_bytes = habits.bytes / habits.files.max(1);
        let salt = u64::from(relay) << 32 | u64::from(self.put_at);
        (0..habits.files).all(|file| {
            let rng = &mut self.rng;
            let Ok(request) =
                ChunkRequest::random(file_bytes, habits.audit_chunks, || rng.next_u64())
            else {
                return false;
            };
            request
                .chunks()
                .iter()
                .all(|&chunk| Rng::stream(salt, file << 40 | chunk).unit() < keeps)
        })
    }

    /// What an audit of copy `at` finds, and what the device learns from
    /// it: an answer or its absence, a relay caught dropping, a renewal.
    fn audit(
        &mut self,
        at: usize,
        relays: &View<'_>,
        t: u64,
        habits: &Habits,
    ) -> Found<&'static str> {
        let (copy, put_at) = (self.copies[at], self.put_at);
        let relay = relays.relay(copy.relay);
        let state = relays.state(copy.relay, t);
        let member = self.member(copy.relay);
        match state {
            // A client cannot tell a relay that is gone from one that is
            // down: neither answers.
            State::Gone | State::Down => Found::Unreachable {
                why: "no answer",
                // A relay the person took out of the set has been given
                // up on.
                for_secs: member.map_or(u64::MAX, |m| {
                    m.answered(state, t);
                    m.unanswered_for(t)
                }),
            },
            State::Up if relay.dropper => {
                // It acknowledged the copy and kept nothing: the audit
                // catches it, and the device flags it.
                if let Some(m) = member {
                    m.answered(state, t);
                    m.missing(put_at, relay.disclosed_retention, t);
                }
                Found::Bad("missing")
            }
            State::Up => {
                if let Some(m) = member {
                    m.answered(state, t);
                }
                if relay.expired(u64::from(copy.last_access), t) {
                    // The relay answers 404, as a dropper does: the client
                    // cannot tell a copy that lapsed from one that was
                    // thrown away early (a relay lying about its
                    // retention), and flags the relay either way.
                    if let Some(m) = self.member(copy.relay) {
                        m.missing(put_at, relay.disclosed_retention, t);
                    }
                    Found::Bad("missing")
                } else if relay.keeps < 1.0 && !self.proves(copy.relay, relay.keeps, habits) {
                    // Caught: the device flags it, as for a lost copy.
                    if let Some(m) = self.member(copy.relay) {
                        m.flagged_until = secs(t + FLAG_SECS);
                    }
                    Found::Bad("failed proof")
                } else {
                    // An audit reads the copy: an access, which renews it.
                    self.copies[at].last_access = secs(t);
                    Found::Good
                }
            }
        }
    }
}
