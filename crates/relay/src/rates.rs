//! The last hour of traffic, for the status page's chart: the request and
//! byte counters sampled once a minute, so that rates over each minute can
//! be drawn without keeping anything per request.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// How often a sample is kept.
pub(crate) const STEP: Duration = Duration::from_secs(60);
/// How far back the history reaches.
pub(crate) const SPAN: Duration = Duration::from_secs(3600);

/// The traffic counters at one moment (all only ever grow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

/// Counters as they were `at` (time since the relay started).
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    counters: Counters,
}

/// The average rates over one interval, placed by how long ago it began
/// and ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rate {
    pub(crate) from_ago: Duration,
    pub(crate) to_ago: Duration,
    pub(crate) requests: f64,
    pub(crate) bytes_in: f64,
    pub(crate) bytes_out: f64,
}

/// Samples at least [`STEP`] apart, covering at most [`SPAN`].
#[derive(Debug)]
pub(crate) struct RateHistory {
    samples: Mutex<VecDeque<Sample>>,
}

/// Made with the counters and the relay's start: both are zero then.
impl Default for RateHistory {
    fn default() -> Self {
        Self {
            samples: Mutex::new(VecDeque::from([Sample {
                at: Duration::ZERO,
                counters: Counters::default(),
            }])),
        }
    }
}

impl RateHistory {
    /// Keeps `counters` as a sample if the newest one is a [`STEP`] old (or
    /// there is none), and drops samples older than the [`SPAN`] needs.
    pub(crate) fn observe(&self, at: Duration, counters: Counters) {
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        if samples.back().is_some_and(|last| at < last.at + STEP) {
            return;
        }
        samples.push_back(Sample { at, counters });
        // One sample just past the span bounds the oldest interval.
        while samples.len() > 2 && samples[1].at + SPAN <= at {
            samples.pop_front();
        }
    }

    /// The rates between consecutive samples, oldest first, and from the
    /// newest sample to `now` (the minute in progress), which the caller
    /// observes first so that there is always a sample to start from.
    pub(crate) fn rates(&self, now: Duration, current: Counters) -> Vec<Rate> {
        self.observe(now, current);
        let Ok(samples) = self.samples.lock() else {
            return Vec::new();
        };
        let ends = samples
            .iter()
            .copied()
            .chain(std::iter::once(Sample {
                at: now,
                counters: current,
            }))
            .collect::<Vec<_>>();
        ends.windows(2)
            .filter_map(|pair| {
                let (a, b) = (pair[0], pair[1]);
                let secs = b.at.checked_sub(a.at)?.as_secs_f64();
                if secs <= 0.0 {
                    return None;
                }
                let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
                Some(Rate {
                    from_ago: now.saturating_sub(a.at).min(SPAN),
                    to_ago: now.saturating_sub(b.at).min(SPAN),
                    requests: per(a.counters.requests, b.counters.requests),
                    bytes_in: per(a.counters.bytes_in, b.counters.bytes_in),
                    bytes_out: per(a.counters.bytes_out, b.counters.bytes_out),
                })
            })
            .filter(|r| r.from_ago > r.to_ago)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn counters(requests: u64) -> Counters {
        Counters {
            requests,
            bytes_in: requests * 10,
            bytes_out: requests * 100,
        }
    }

    #[test]
    fn rates_are_per_second_over_each_minute_and_the_minute_in_progress() {
        let history = RateHistory::default();
        // Within the step: not kept.
        history.observe(at(30), counters(1_000));
        history.observe(at(60), counters(600));
        let rates = history.rates(at(90), counters(900));
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[0].requests, 10.0);
        assert_eq!(rates[0].bytes_out, 1_000.0);
        assert_eq!((rates[0].from_ago, rates[0].to_ago), (at(90), at(30)));
        assert_eq!(rates[1].requests, 10.0);
        assert_eq!((rates[1].from_ago, rates[1].to_ago), (at(30), at(0)));
    }

    #[test]
    fn only_the_last_hour_is_kept() {
        let history = RateHistory::default();
        for minute in 0..=180 {
            history.observe(at(minute * 60), counters(minute));
        }
        let rates = history.rates(at(180 * 60 + 1), counters(180));
        assert!(rates.len() <= 62, "{} intervals", rates.len());
        assert!(rates.iter().all(|r| r.from_ago <= SPAN));
        assert_eq!(rates.first().map(|r| r.from_ago), Some(SPAN));
    }

    #[test]
    fn a_fresh_relay_has_the_interval_since_it_started() {
        let history = RateHistory::default();
        let rates = history.rates(at(5), counters(50));
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].requests, 10.0);
    }
}
