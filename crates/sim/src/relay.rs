//! The simulated relays: their states over time, drawn in advance from
//! each relay's own random stream, and what their info documents offer.

use cairn_policy::choice::Offer;

use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::time::{DAY, GIB, HOUR, YEAR};

/// Where a relay is at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Up,
    Down,
    Gone,
}

/// One relay.
pub(crate) struct Relay {
    pub(crate) retention: u64,
    pub(crate) capacity: u64,
    /// Bytes of copies counted on it; changed only between hours, so
    /// every client of an hour sees the same figure (as the info document
    /// a client caches for up to an hour).
    pub(crate) used: u64,
    pub(crate) gone_at: u64,
    /// Whether it acknowledges copies and then keeps none of them.
    pub(crate) dropper: bool,
    /// (start, end) of each outage, in order.
    outages: Vec<(u64, u64)>,
}

impl Relay {
    pub(crate) fn state(&self, t: u64) -> State {
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

    /// Whether the relay has deleted a copy last accessed at
    /// `last_access` for want of access by `t`.
    pub(crate) fn expired(&self, last_access: u64, t: u64) -> bool {
        t > last_access.saturating_add(self.retention)
    }

    /// Whether a copy last accessed at `last_access` is still held at `t`.
    pub(crate) fn holds(&self, last_access: u64, t: u64) -> bool {
        !self.dropper && t < self.gone_at && !self.expired(last_access, t)
    }

    /// What its info document says, as the client reads it.
    pub(crate) fn offer(&self, flagged: bool) -> Offer {
        let free = self.capacity.saturating_sub(self.used);
        Offer {
            capacity_free: free,
            max_blob_size: u64::MAX,
            retention_secs: self.retention,
            load_permille: u16::try_from(self.used.saturating_mul(1000) / self.capacity.max(1))
                .unwrap_or(1000)
                .min(1000),
            flagged,
        }
    }
}

/// The relays of `scenario`, with their fates to `horizon`.
pub(crate) fn make_relays(scenario: &Scenario, horizon: u64) -> Vec<Relay> {
    let r = &scenario.relays;
    let a = &scenario.adversaries;
    (0..r.count)
        .map(|i| {
            let mut rng = Rng::stream(scenario.seed, 1 << 32 | i as u64);
            // A constant hazard with the given chance over a year.
            let mut gone_at = if r.vanish_per_year > 0.0 {
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
            // Drawn after the relay's own fate, so adding adversaries to a
            // scenario leaves every honest relay's fate as it was.
            let dropper = rng.unit() < a.droppers;
            if rng.unit() < a.vanish_together {
                gone_at = gone_at.min(u64::from(a.vanish_together_day) * DAY);
            }
            Relay {
                retention: u64::from(r.retention_days) * DAY,
                capacity: r.capacity_gib.saturating_mul(GIB),
                used: 0,
                gone_at,
                dropper,
                outages,
            }
        })
        .collect()
}
