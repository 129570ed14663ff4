//! A run's record, for replaying it against real relays and clients
//! (`crates/sim/tests/validate.rs`): every relay's fate, every device's
//! set, and what each session did, in order.

/// What became of one relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fate {
    /// The retention it discloses, in seconds.
    pub retention_secs: u64,
    /// When it was down, `[start, end)` in seconds from the start, in order.
    pub outages: Vec<(u64, u64)>,
    /// When it vanished for good, if it did within the run.
    pub gone_at: Option<u64>,
}

impl Fate {
    /// Whether it answers at `t`.
    #[must_use]
    pub fn up_at(&self, t: u64) -> bool {
        self.gone_at.is_none_or(|gone| t < gone)
            && !self.outages.iter().any(|&(from, to)| from <= t && t < to)
    }
}

/// One session that did something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The device, by its index.
    pub client: u32,
    /// When, in seconds from the start.
    pub t: u64,
    /// What it did.
    pub what: Happened,
}

/// What a session did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    /// It put its files: the relays that took a copy, best first (none
    /// when too few could, and nothing was stored).
    Put {
        /// The relays, by index.
        stored: Vec<u32>,
    },
    /// It ran a repair, which replaced these copies (from, to).
    Repair {
        /// The copies replaced.
        replaced: Vec<(u32, u32)>,
    },
    /// It found no copy left, and stopped.
    Lost,
}

/// Where a device's files stand at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// The relays holding its copies, in the order of its copies.
    pub copies: Vec<u32>,
    /// Whether its files are lost: no copy left on a relay that still
    /// has it.
    pub lost: bool,
}

/// Everything a replay needs, and what the run ended with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Each relay's fate, by index.
    pub relays: Vec<Fate>,
    /// Each device's set, by index.
    pub sets: Vec<Vec<u32>>,
    /// The sessions that did something, in time order (a device's own
    /// in its order).
    pub events: Vec<Event>,
    /// Each device at the end.
    pub ends: Vec<End>,
}
