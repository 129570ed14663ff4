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
    /// How long it keeps a copy nobody accessed.
    pub(crate) retention: u64,
    /// The retention its info document discloses: `retention`, unless it
    /// lies.
    pub(crate) disclosed_retention: u64,
    pub(crate) capacity: u64,
    /// Bytes of copies counted on it; changed only between hours, so
    /// every client of an hour sees the same figure (as the info document
    /// a client caches for up to an hour).
    pub(crate) used: u64,
    pub(crate) gone_at: u64,
    /// Whether it acknowledges copies and then keeps none of them.
    pub(crate) dropper: bool,
    /// Whether it transfers out but takes nothing in.
    pub(crate) free_rider: bool,
    /// The share of each copy's chunks it keeps: 1 for an honest relay,
    /// less for an audit liar.
    pub(crate) keeps: f64,
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

    /// Whether a copy last accessed at `last_access` is still held at `t`
    /// (whether an audit liar kept it whole is the device's to know:
    /// which chunks it kept depends on the files).
    pub(crate) fn holds(&self, last_access: u64, t: u64) -> bool {
        !self.dropper && t < self.gone_at && !self.expired(last_access, t)
    }

    /// Its fate, for a trace.
    pub(crate) fn fate(&self, horizon: u64) -> crate::trace::Fate {
        crate::trace::Fate {
            retention_secs: self.retention,
            outages: self.outages.clone(),
            gone_at: (self.gone_at < horizon).then_some(self.gone_at),
        }
    }

    /// What its info document says, as the client reads it.
    pub(crate) fn offer(&self, flagged: bool) -> Offer {
        let free = self.capacity.saturating_sub(self.used);
        Offer {
            capacity_free: free,
            max_blob_size: u64::MAX,
            retention_secs: self.disclosed_retention,
            load_permille: u16::try_from(self.used.saturating_mul(1000) / self.capacity.max(1))
                .unwrap_or(1000)
                .min(1000),
            flagged,
        }
    }
}

/// The relays as every device of one hour sees them: the relays
/// themselves, and which of them are up for the whole hour, so that most
/// lookups of a relay's state need not search its outages.
pub(crate) struct View<'a> {
    relays: &'a [Relay],
    quiet: &'a [bool],
}

impl<'a> View<'a> {
    /// A view that searches every relay's outages (at the end of a run).
    pub(crate) fn exact(relays: &'a [Relay]) -> Self {
        Self { relays, quiet: &[] }
    }

    pub(crate) fn relay(&self, relay: u32) -> &Relay {
        &self.relays[relay as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.relays.len()
    }

    /// Where `relay` is at `t`, a moment of the view's hour.
    pub(crate) fn state(&self, relay: u32, t: u64) -> State {
        if self.quiet.get(relay as usize).copied().unwrap_or(false) {
            State::Up
        } else {
            self.relays[relay as usize].state(t)
        }
    }
}

/// Which relays are up for a whole hour, kept as the hours go by.
pub(crate) struct Quiet {
    /// Per relay, its first outage that had not ended when the hour began.
    next: Vec<usize>,
    quiet: Vec<bool>,
}

impl Quiet {
    pub(crate) fn new(relays: &[Relay]) -> Self {
        Self {
            next: vec![0; relays.len()],
            quiet: vec![false; relays.len()],
        }
    }

    /// The view of the hour `[from, to)`; hours must come in order.
    pub(crate) fn hour<'a>(&'a mut self, relays: &'a [Relay], from: u64, to: u64) -> View<'a> {
        for (i, relay) in relays.iter().enumerate() {
            let next = &mut self.next[i];
            while relay
                .outages
                .get(*next)
                .is_some_and(|&(_, end)| end <= from)
            {
                *next += 1;
            }
            let outage = relay
                .outages
                .get(*next)
                .is_some_and(|&(start, _)| start < to);
            self.quiet[i] = relay.gone_at >= to && !outage;
        }
        View {
            relays,
            quiet: &self.quiet,
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
            let capacity_gib = if rng.unit() < r.small_share {
                r.small_capacity_gib
            } else {
                r.capacity_gib
            };
            let free_rider = rng.unit() < scenario.federation.free_riders;
            let keeps = if rng.unit() < a.audit_liars {
                a.liars_keep
            } else {
                1.0
            };
            let retention_days =
                u64::from(r.retention_days) + i as u64 * u64::from(r.retention_step_days);
            let (retention_days, disclosed_days) = if rng.unit() < a.retention_liars {
                (
                    u64::from(a.retention_liars_keep_days),
                    u64::from(a.retention_liars_disclose_days),
                )
            } else {
                (retention_days, retention_days)
            };
            Relay {
                retention: retention_days * DAY,
                disclosed_retention: disclosed_days * DAY,
                capacity: capacity_gib.saturating_mul(GIB),
                used: 0,
                gone_at,
                dropper,
                free_rider,
                keeps,
                outages,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HOUR;

    #[test]
    fn a_quiet_hour_is_one_in_which_the_relay_is_up_throughout() {
        let scenario: Scenario = toml::from_str(
            r#"
            seed = 3
            days = 15
            [relays]
            count = 30
            capacity_gib = 1
            retention_days = 30
            vanish_per_year = 0.99
            outages_per_year = 800
            outage_hours = 3
            [clients]
            count = 1
            set_size = 1
            files = 1
            file_mib = 1
            copies = 1
            online_every_hours = 24
            watch = true
            replace_unanswered_after_hours = inf
            "#,
        )
        .expect("a valid scenario");
        let horizon = 15 * DAY;
        let relays = make_relays(&scenario, horizon);
        let mut quiet = Quiet::new(&relays);
        let mut rng = Rng::stream(9, 9);
        let (mut quiet_hours, mut busy_hours) = (0, 0);
        for hour in 0..horizon / HOUR {
            let from = hour * HOUR;
            let view = quiet.hour(&relays, from, from + HOUR);
            for (i, relay) in relays.iter().enumerate() {
                let i = u32::try_from(i).expect("few relays");
                let every_second_up = (from..from + HOUR).all(|t| relay.state(t) == State::Up);
                assert_eq!(
                    view.quiet[i as usize], every_second_up,
                    "relay {i}, hour {hour}"
                );
                if every_second_up {
                    quiet_hours += 1;
                } else {
                    busy_hours += 1;
                }
                let t = from + rng.below(3600) as u64;
                assert_eq!(view.state(i, t), relay.state(t));
            }
        }
        assert!(
            quiet_hours > 0 && busy_hours > 0,
            "{quiet_hours} {busy_hours}"
        );
    }
}
