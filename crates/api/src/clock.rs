//! Wall-clock time, replaceable in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_proto::Timestamp;

/// The source of "now", in Unix seconds, for relays and clients alike.
///
/// Retention, token expiry and info documents all read the clock through
/// this type, so tests can move time forward instead of sleeping. A relay
/// and a client given clones of one manual clock see the same time: a
/// test can run both over days of simulated time on loopback.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: u64) -> Self {
        Self {
            manual: Some(Arc::new(AtomicU64::new(start))),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, secs: u64) {
        if let Some(now) = &self.manual {
            now.fetch_add(secs, Ordering::SeqCst);
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            Some(now) => Timestamp(now.load(Ordering::SeqCst)),
            // A system clock before 1970 is a broken machine; treat it as 0
            // rather than panic.
            None => Timestamp(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
        }
    }

    /// The current time in milliseconds since the Unix epoch: the system
    /// clock's to the millisecond, a manual clock's whole seconds.
    pub fn now_millis(&self) -> u64 {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst).saturating_mul(1000),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_of_a_manual_clock_share_its_time() {
        let clock = Clock::manual(1_000);
        let other = clock.clone();
        other.advance(86_400);
        assert_eq!(clock.now(), Timestamp(87_400));
        assert_eq!(clock.now_millis(), 87_400_000);
    }

    #[test]
    fn the_system_clock_does_not_move_by_hand() {
        let clock = Clock::system();
        let before = clock.now().0;
        clock.advance(1_000_000);
        assert!(clock.now().0 < before + 1_000);
        assert!(clock.now_millis() / 1000 >= before);
    }
}
