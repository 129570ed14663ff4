//! Wall-clock time, replaceable in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_proto::Timestamp;

/// The relay's source of "now", in Unix seconds.
///
/// Retention, token expiry and info documents all read the clock through
/// this type, so tests can move time forward instead of sleeping.
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
}
