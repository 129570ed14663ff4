//! The engine: simulated time advances an hour at a time. Within an hour
//! every device runs its sessions against the relays as they stood when
//! the hour began (their usage, as a client's cached info document shows
//! it), and what the sessions changed is added to the relays when the
//! hour ends. A device's sessions depend only on its own state, its own
//! random stream and that snapshot, so the devices of an hour can run on
//! any number of threads and the result is the same, byte for byte.

use crate::client::{Client, Habits, Outcome};
use crate::federation::Federation;
use crate::relay::{Quiet, Relay, View, make_relays};
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::time::{DAY, HOUR, YEAR};
use crate::trace::{End, Trace};

/// Counts at the end of one simulated day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Day {
    /// The day, from 1.
    pub day: u32,
    /// Files put so far.
    pub files: u64,
    /// Files found lost so far: no copy left on a relay that still has it.
    pub lost: u64,
    /// Copies of files made by repairs so far.
    pub repaired: u64,
    /// Relays gone for good so far.
    pub relays_gone: u64,
    /// Sessions so far.
    pub sessions: u64,
    /// Puts refused so far (too few relays of the set up with room; the
    /// device tries again at its next session).
    pub refused_puts: u64,
    /// Bytes relays transferred to peers so far.
    pub transferred: u64,
    /// Hours a relay spent over its high-water mark with no peer to take
    /// anything, so far.
    pub stuck_hours: u64,
    /// Utilization of the relays still there, in thousandths of their
    /// capacity, at the end of the day: the median, the 90th percentile
    /// and the fullest.
    pub utilization: [u16; 3],
    /// Mean utilization (thousandths) of relays that take transfers in,
    /// and of free riders.
    pub by_class: [u16; 2],
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
        self.per_file_year(self.last().lost)
    }

    /// Copies made by repairs per file-year.
    #[must_use]
    pub fn repairs_per_file_year(&self) -> f64 {
        self.per_file_year(self.last().repaired)
    }

    /// `count` per file-year observed (0 when no file was).
    fn per_file_year(&self, count: u64) -> f64 {
        if self.file_years > 0.0 {
            count as f64 / self.file_years
        } else {
            0.0
        }
    }

    /// The rows as CSV, with a header.
    #[must_use]
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "day,files,lost,repaired,relays_gone,sessions,refused_puts,transferred_bytes,\
             stuck_hours,utilization_p50,utilization_p90,utilization_max,contributors,free_riders\n",
        );
        for d in &self.days {
            let [p50, p90, max] = d.utilization;
            let [contributors, free_riders] = d.by_class;
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{p50},{p90},{max},{contributors},{free_riders}\n",
                d.day,
                d.files,
                d.lost,
                d.repaired,
                d.relays_gone,
                d.sessions,
                d.refused_puts,
                d.transferred,
                d.stuck_hours
            ));
        }
        out
    }
}

/// The devices one thread steps: a contiguous run of them, with their
/// sessions filed by the hour they fall in.
struct Shard<'a> {
    /// The index of its first device.
    first: usize,
    clients: &'a mut [Client],
    /// For each hour, the devices (indexes into `clients`) with a session
    /// starting in it.
    due: Vec<Vec<u32>>,
}

impl Shard<'_> {
    fn file(&mut self, i: usize, horizon: u64) {
        let t = self.clients[i].next_session;
        if t < horizon {
            let hour = usize::try_from(t / HOUR).unwrap_or(usize::MAX);
            self.due[hour].push(u32::try_from(i).unwrap_or(u32::MAX));
        }
    }

    /// Runs every session of `hour`, and files each device's next one.
    fn run_hour(
        &mut self,
        hour: usize,
        habits: &Habits,
        relays: &View<'_>,
        horizon: u64,
    ) -> Outcome {
        let mut out = Outcome::default();
        let end = (hour as u64 + 1) * HOUR;
        let mut due = std::mem::take(&mut self.due[hour]);
        // In memory order: the order of devices within an hour changes
        // nothing, and memory read in order is read faster.
        due.sort_unstable();
        for i in due {
            let i = i as usize;
            let client = &mut self.clients[i];
            let noted = out.events.len();
            while client.next_session < end.min(horizon) {
                client.session(habits, relays, &mut out);
            }
            let id = u32::try_from(self.first + i).unwrap_or(u32::MAX);
            for event in &mut out.events[noted..] {
                event.client = id;
            }
            self.file(i, horizon);
        }
        out
    }
}

/// How a run uses threads. The result does not depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Engine {
    /// Threads the devices are shared among.
    pub threads: usize,
    /// Hours with fewer sessions than this run on one thread: starting a
    /// thread costs tens of microseconds, a session well under one.
    pub parallel_from: usize,
}

impl Engine {
    /// `threads` threads, for hours with at least 4,096 sessions.
    #[must_use]
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            parallel_from: 4096,
        }
    }
}

/// Runs `scenario` to its end on one thread.
#[must_use]
pub fn simulate(scenario: &Scenario) -> Report {
    simulate_with(scenario, Engine::new(1))
}

/// Runs `scenario` to its end, its devices shared among `threads`
/// threads; the result does not depend on `threads`.
#[must_use]
pub fn simulate_on(scenario: &Scenario, threads: usize) -> Report {
    simulate_with(scenario, Engine::new(threads))
}

/// Runs `scenario` to its end as `engine` says.
#[must_use]
pub fn simulate_with(scenario: &Scenario, engine: Engine) -> Report {
    run(scenario, engine, false).0
}

/// Runs `scenario` to its end, recording what every session did.
#[must_use]
pub fn simulate_traced(scenario: &Scenario) -> (Report, Trace) {
    let (report, trace) = run(scenario, Engine::new(1), true);
    (report, trace.unwrap_or_default())
}

fn run(scenario: &Scenario, engine: Engine, trace: bool) -> (Report, Option<Trace>) {
    let threads = engine.threads.max(1);
    let horizon = u64::from(scenario.days) * DAY;
    let hours = usize::try_from(horizon / HOUR).unwrap_or(usize::MAX);
    let mut relays = make_relays(scenario, horizon);
    let mut habits = Habits::of(&scenario.clients);
    habits.trace = trace;
    let mut clients: Vec<Client> = (0..scenario.clients.count)
        .map(|i| {
            let rng = Rng::stream(scenario.seed, 2 << 32 | i as u64);
            Client::new(rng, scenario.clients.set_size, &relays, habits.mean_gap)
        })
        .collect();
    let per_shard = clients.len().div_ceil(threads.max(1)).max(1);
    let mut shards: Vec<Shard<'_>> = clients
        .chunks_mut(per_shard)
        .enumerate()
        .map(|(n, clients)| {
            let mut shard = Shard {
                first: n * per_shard,
                clients,
                due: vec![Vec::new(); hours],
            };
            for i in 0..shard.clients.len() {
                shard.file(i, horizon);
            }
            shard
        })
        .collect();
    let mut totals = Day::default();
    let mut days = Vec::with_capacity(scenario.days as usize);
    let mut quiet = Quiet::new(&relays);
    let mut events = Vec::new();
    let mut federation = Federation::new(scenario);
    for hour in 0..hours {
        let from = hour as u64 * HOUR;
        let view = quiet.hour(&relays, from, from + HOUR);
        let outcome = run_hour(&mut shards, hour, &habits, &view, horizon, engine);
        for &(relay, bytes) in &outcome.usage {
            let used = &mut relays[relay as usize].used;
            *used = used.saturating_add_signed(bytes);
        }
        totals.files += outcome.files;
        totals.lost += outcome.lost;
        totals.repaired += outcome.repaired;
        totals.sessions += outcome.sessions;
        totals.refused_puts += outcome.refused_puts;
        events.extend(outcome.events);
        if let Some(federation) = &mut federation {
            let relieved = federation.relieve(&mut relays, from + HOUR, habits.bytes);
            totals.transferred += relieved.bytes;
            totals.stuck_hours += relieved.stuck;
        }
        let end = (hour as u64 + 1) * HOUR;
        if end.is_multiple_of(DAY) {
            totals.day = u32::try_from(end / DAY).unwrap_or(u32::MAX);
            totals.relays_gone = relays.iter().filter(|r| r.gone_at <= end).count() as u64;
            (totals.utilization, totals.by_class) = utilization(&relays, end);
            days.push(totals);
        }
    }
    drop(shards);
    // Files whose last copy went after their device's last session are
    // lost too: counted at the end.
    let mut file_secs = 0u128;
    let view = View::exact(&relays);
    for client in &clients {
        let (observed, lost) = client.finish(&habits, &view, horizon);
        file_secs += observed;
        totals.lost += if lost { habits.files } else { 0 };
    }
    if let Some(last) = days.last_mut() {
        last.lost = totals.lost;
    }
    let report = Report {
        days,
        file_years: file_secs as f64 / YEAR,
    };
    let trace = trace.then(|| {
        events.sort_by_key(|e| (e.t, e.client));
        Trace {
            relays: relays.iter().map(|r| r.fate(horizon)).collect(),
            sets: clients.iter().map(Client::set).collect(),
            events,
            ends: clients
                .iter()
                .map(|c| {
                    let (copies, lost) = c.copies();
                    let (_, lost_at_end) = c.finish(&habits, &view, horizon);
                    End {
                        copies,
                        lost: lost || lost_at_end,
                    }
                })
                .collect(),
        }
    });
    (report, trace)
}

/// The utilization of the relays still there at `t`, in thousandths:
/// median, 90th percentile and fullest; and the mean of those that take
/// transfers in and of free riders.
fn utilization(relays: &[Relay], t: u64) -> ([u16; 3], [u16; 2]) {
    let permille = |r: &Relay| {
        u16::try_from(r.used.saturating_mul(1000) / r.capacity.max(1)).unwrap_or(u16::MAX)
    };
    let mut all: Vec<u16> = relays
        .iter()
        .filter(|r| r.gone_at > t)
        .map(permille)
        .collect();
    if all.is_empty() {
        return ([0; 3], [0; 2]);
    }
    all.sort_unstable();
    let at = |q: usize| all[(all.len() - 1) * q / 100];
    let mean = |free_rider: bool| {
        let class: Vec<u64> = relays
            .iter()
            .filter(|r| r.gone_at > t && r.free_rider == free_rider)
            .map(|r| u64::from(permille(r)))
            .collect();
        let n = class.len().max(1) as u64;
        u16::try_from(class.iter().sum::<u64>() / n).unwrap_or(u16::MAX)
    };
    ([at(50), at(90), at(100)], [mean(false), mean(true)])
}

/// Runs one hour of every shard, each on a thread of its own when there
/// are several.
fn run_hour(
    shards: &mut [Shard<'_>],
    hour: usize,
    habits: &Habits,
    relays: &View<'_>,
    horizon: u64,
    engine: Engine,
) -> Outcome {
    let mut total = Outcome::default();
    let due: usize = shards.iter().map(|s| s.due[hour].len()).sum();
    if shards.len() == 1 || due < engine.parallel_from {
        for shard in shards {
            total.add(shard.run_hour(hour, habits, relays, horizon));
        }
        return total;
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = shards
            .iter_mut()
            .map(|shard| scope.spawn(move || shard.run_hour(hour, habits, relays, horizon)))
            .collect();
        for thread in running {
            match thread.join() {
                Ok(outcome) => total.add(outcome),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    total
}
