//! The simulation itself: a queue of client sessions in time order, with
//! relay states (up, down, gone) drawn in advance and copies expiring
//! lazily, when a client next looks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cairn_policy::choice::{Offer, copies_wanted, repair_interval_secs};
use cairn_policy::repair::{self, Audited, Decision, Found};

use crate::rng::Rng;
use crate::scenario::Scenario;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const YEAR: f64 = 365.0 * DAY as f64;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Counts at the end of one simulated day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Day {
    /// The day, from 1.
    pub day: u32,
    /// Files put so far.
    pub files: u64,
    /// Files found lost so far: no copy left on a relay that still has it.
    pub lost: u64,
    /// Copies made by repairs so far.
    pub repaired: u64,
    /// Relays gone for good so far.
    pub relays_gone: u64,
    /// Sessions so far.
    pub sessions: u64,
}

/// What a run found.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// One row per day.
    pub days: Vec<Day>,
    /// File-years observed: each file counts from its put to the end.
    pub file_years: f64,
}

impl Report {
    /// The last day's counts.
    #[must_use]
    pub fn last(&self) -> Day {
        self.days.last().copied().unwrap_or_default()
    }

    /// Files lost per file-year: the annual loss probability of a file,
    /// for the small rates this is meant for.
    #[must_use]
    pub fn annual_loss(&self) -> f64 {
        if self.file_years > 0.0 {
            self.last().lost as f64 / self.file_years
        } else {
            0.0
        }
    }

    /// The rows as CSV, with a header.
    #[must_use]
    pub fn csv(&self) -> String {
        let mut out = String::from("day,files,lost,repaired,relays_gone,sessions\n");
        for d in &self.days {
            out.push_str(&format!(
                "{},{},{},{},{},{}\n",
                d.day, d.files, d.lost, d.repaired, d.relays_gone, d.sessions
            ));
        }
        out
    }
}

/// Where a relay is at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up,
    Down,
    Gone,
}

struct Relay {
    retention: u64,
    capacity: u64,
    used: u64,
    gone_at: u64,
    /// (start, end) of each outage, in order.
    outages: Vec<(u64, u64)>,
}

impl Relay {
    fn state(&self, t: u64) -> State {
        if t >= self.gone_at {
            return State::Gone;
        }
        // Outages are in order and apart: only the last one starting at or
        // before `t` can hold it.
        let started = self.outages.partition_point(|&(from, _)| from <= t);
        match started.checked_sub(1).map(|i| self.outages[i]) {
            Some((_, to)) if t < to => State::Down,
            _ => State::Up,
        }
    }

    /// Whether the relay has deleted `copy` for want of access by `t`.
    fn expired(&self, copy: Copy, t: u64) -> bool {
        t > copy.last_access.saturating_add(self.retention)
    }

    fn offer(&self) -> Offer {
        let free = self.capacity.saturating_sub(self.used);
        Offer {
            capacity_free: free,
            max_blob_size: u64::MAX,
            retention_secs: self.retention,
            load_permille: u16::try_from(self.used.saturating_mul(1000) / self.capacity.max(1))
                .unwrap_or(1000)
                .min(1000),
            flagged: false,
        }
    }
}

#[derive(Clone, Copy)]
struct Copy {
    relay: usize,
    last_access: u64,
}

struct File {
    copies: Vec<Copy>,
    lost: bool,
}

struct Client {
    set: Vec<usize>,
    files: Vec<File>,
    put: bool,
    next_repair: u64,
    rng: Rng,
}

/// Runs `scenario` to its end.
#[must_use]
pub fn simulate(scenario: &Scenario) -> Report {
    let horizon = u64::from(scenario.days) * DAY;
    let mut relays = make_relays(scenario, horizon);
    let mut clients = make_clients(scenario, relays.len());
    let mean_session = scenario.clients.online_every_hours * HOUR as f64;
    let mut queue: BinaryHeap<Reverse<(u64, usize)>> = clients
        .iter_mut()
        .enumerate()
        .map(|(i, c)| Reverse((c.rng.exp_secs(mean_session), i)))
        .collect();
    let mut totals = Day::default();
    let mut days = Vec::with_capacity(scenario.days as usize);
    let mut put_at = Vec::new();
    let mut next_day = DAY;
    while let Some(Reverse((t, i))) = queue.pop() {
        while t >= next_day && next_day <= horizon {
            days.push(close_day(&mut totals, next_day, &relays));
            next_day += DAY;
        }
        if t >= horizon {
            break;
        }
        totals.sessions += 1;
        let client = &mut clients[i];
        session(scenario, client, &mut relays, t, &mut totals, &mut put_at);
        let next = t.saturating_add(client.rng.exp_secs(mean_session).max(1));
        queue.push(Reverse((next, i)));
    }
    while next_day <= horizon {
        days.push(close_day(&mut totals, next_day, &relays));
        next_day += DAY;
    }
    // Files whose last copy went after their device's last session are
    // lost too: counted at the end.
    for client in &mut clients {
        for file in &mut client.files {
            if !file.lost && !file.copies.iter().any(|c| live(&relays, *c, horizon)) {
                file.lost = true;
                totals.lost += 1;
            }
        }
    }
    if let Some(last) = days.last_mut() {
        last.lost = totals.lost;
    }
    let file_years = put_at
        .iter()
        .map(|&at| horizon.saturating_sub(at) as f64 / YEAR)
        .sum();
    Report { days, file_years }
}

fn close_day(totals: &mut Day, end: u64, relays: &[Relay]) -> Day {
    totals.day = u32::try_from(end / DAY).unwrap_or(u32::MAX);
    totals.relays_gone = relays.iter().filter(|r| r.gone_at <= end).count() as u64;
    *totals
}

fn make_relays(scenario: &Scenario, horizon: u64) -> Vec<Relay> {
    let r = &scenario.relays;
    (0..r.count)
        .map(|i| {
            let mut rng = Rng::stream(scenario.seed, 1 << 32 | i as u64);
            // A constant hazard with the given chance over a year.
            let gone_at = if r.vanish_per_year > 0.0 {
                let rate = -(1.0 - r.vanish_per_year).max(f64::MIN_POSITIVE).ln() / YEAR;
                rng.exp_secs(1.0 / rate)
            } else {
                u64::MAX
            };
            let mut outages = Vec::new();
            if r.outages_per_year > 0.0 {
                let mut t = 0u64;
                loop {
                    t = t.saturating_add(rng.exp_secs(YEAR / r.outages_per_year));
                    if t >= horizon.min(gone_at) {
                        break;
                    }
                    let end = t.saturating_add(rng.exp_secs(r.outage_hours * HOUR as f64).max(1));
                    outages.push((t, end));
                    t = end;
                }
            }
            Relay {
                retention: u64::from(r.retention_days) * DAY,
                capacity: r.capacity_gib.saturating_mul(GIB),
                used: 0,
                gone_at,
                outages,
            }
        })
        .collect()
}

fn make_clients(scenario: &Scenario, relay_count: usize) -> Vec<Client> {
    (0..scenario.clients.count)
        .map(|i| {
            let mut rng = Rng::stream(scenario.seed, 2 << 32 | i as u64);
            // Distinct relays drawn at random; a set is small against the
            // relays (the scenario checks it is no larger), so redraws are
            // few.
            let mut set = Vec::with_capacity(scenario.clients.set_size);
            while set.len() < scenario.clients.set_size {
                let pick = rng.below(relay_count);
                if !set.contains(&pick) {
                    set.push(pick);
                }
            }
            Client {
                set,
                files: Vec::new(),
                put: false,
                next_repair: 0,
                rng,
            }
        })
        .collect()
}

/// Whether a copy is still held: its relay has not vanished and has not
/// deleted it for want of access.
fn live(relays: &[Relay], copy: Copy, t: u64) -> bool {
    let relay = &relays[copy.relay];
    relay.state(t) != State::Gone && !relay.expired(copy, t)
}

/// The relays of `set` that are up and can take `size` bytes, best first,
/// as the client ranks them; those in `avoid` left out.
fn candidates(relays: &[Relay], set: &[usize], size: u64, t: u64, avoid: &[usize]) -> Vec<usize> {
    let mut usable: Vec<(usize, Offer)> = set
        .iter()
        .copied()
        .filter(|&r| !avoid.contains(&r) && relays[r].state(t) == State::Up)
        .map(|r| (r, relays[r].offer()))
        .filter(|(_, offer)| offer.fits(size, size).is_ok())
        .collect();
    usable.sort_by_key(|(_, offer)| offer.rank());
    usable.into_iter().map(|(r, _)| r).collect()
}

fn session(
    scenario: &Scenario,
    client: &mut Client,
    relays: &mut [Relay],
    t: u64,
    totals: &mut Day,
    put_at: &mut Vec<u64>,
) {
    let c = &scenario.clients;
    let size = c.file_mib.saturating_mul(MIB);
    let wanted = copies_wanted(c.copies, client.set.len());
    if !client.put {
        // A put needs every wanted copy, or it stores nothing and is tried
        // again at the next session.
        let targets = candidates(relays, &client.set, size * c.files as u64, t, &[]);
        if targets.len() < wanted {
            return;
        }
        for _ in 0..c.files {
            let copies = targets[..wanted]
                .iter()
                .map(|&relay| {
                    relays[relay].used += size;
                    Copy {
                        relay,
                        last_access: t,
                    }
                })
                .collect();
            client.files.push(File {
                copies,
                lost: false,
            });
            put_at.push(t);
        }
        totals.files += c.files as u64;
        client.put = true;
        client.next_repair = next_repair(&client.set, relays, t);
        return;
    }
    if !c.watch || t < client.next_repair {
        return;
    }
    client.next_repair = next_repair(&client.set, relays, t);
    for file in &mut client.files {
        if file.lost {
            continue;
        }
        if !file.copies.iter().any(|&copy| live(relays, copy, t)) {
            file.lost = true;
            totals.lost += 1;
            continue;
        }
        repair_file(
            file,
            relays,
            &client.set,
            size,
            wanted,
            c.replace_unreachable,
            t,
            totals,
        );
    }
}

/// When a device that repairs at `t` repairs next: the client's cadence
/// for the shortest retention in its set.
fn next_repair(set: &[usize], relays: &[Relay], t: u64) -> u64 {
    let shortest = set.iter().map(|&r| relays[r].retention).min();
    t + repair_interval_secs(shortest)
}

/// Audits a file's copies (renewing the ones that answer) and replaces
/// what [`cairn_policy::repair::plan`] says to.
#[allow(clippy::too_many_arguments)] // the session's state, passed apart for the borrow checker
fn repair_file(
    file: &mut File,
    relays: &mut [Relay],
    set: &[usize],
    size: u64,
    wanted: usize,
    replace_unreachable: bool,
    t: u64,
    totals: &mut Day,
) {
    // Most audits find every copy where it was: renew them all, and no
    // plan is needed (nor the allocations that go with it).
    let all_good = file.copies.iter().all(|&copy| {
        let relay = &relays[copy.relay];
        relay.state(t) == State::Up && !relay.expired(copy, t)
    });
    if all_good {
        for copy in &mut file.copies {
            copy.last_access = t;
        }
        return;
    }
    let audited: Vec<Audited<usize, &'static str>> = file
        .copies
        .iter_mut()
        .enumerate()
        .map(|(i, copy)| {
            let relay = &relays[copy.relay];
            let found = match relay.state(t) {
                // A client cannot tell a relay that is gone from one that
                // is down: neither answers.
                State::Gone | State::Down => Found::Unreachable("no answer"),
                State::Up if relay.expired(*copy, t) => Found::Bad("expired"),
                State::Up => {
                    // An audit reads the copy: an access, which renews it.
                    copy.last_access = t;
                    Found::Good
                }
            };
            Audited {
                at: i,
                found,
                flagged: None,
            }
        })
        .collect();
    let Decision::Repair(plan) = repair::plan(&audited, wanted, replace_unreachable) else {
        return;
    };
    let avoid: Vec<usize> = file.copies.iter().map(|c| c.relay).collect();
    let new = candidates(relays, set, size, t, &avoid);
    for (&(at, _), &to) in plan.replace.iter().zip(new.iter().take(plan.needed)) {
        let old = file.copies[at].relay;
        if relays[old].state(t) != State::Gone {
            relays[old].used = relays[old].used.saturating_sub(size);
        }
        relays[to].used += size;
        file.copies[at] = Copy {
            relay: to,
            last_access: t,
        };
        totals.repaired += 1;
    }
}
