//! Fair share without accounts: token-bucket rate limits per upload key and
//! per source address range. Every limit is disclosed in the info document;
//! nothing about content is ever considered.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// A token bucket per key: `per_min` requests a minute on average, bursts
/// of up to `per_min`.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    per_min: u32,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `per_min` of 0 disables the limit.
    pub(crate) fn new(per_min: u32) -> Self {
        Self {
            per_min,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`. On refusal returns the seconds until a
    /// token will be available (for `Retry-After`).
    pub(crate) fn check(&self, key: K, now: Instant) -> Result<(), u64> {
        if self.per_min == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_min);
        let per_sec = capacity / 60.0;
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / per_sec).ceil().clamp(1.0, 3600.0);
            Err(std::time::Duration::from_secs_f64(wait).as_secs())
        }
    }

    /// Forgets buckets that have refilled completely: they hold no state a
    /// fresh bucket would not.
    pub(crate) fn prune(&self, now: Instant) {
        let capacity = f64::from(self.per_min);
        let per_sec = capacity / 60.0;
        if let Ok(mut buckets) = self.buckets.lock() {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_sec < capacity
            });
        }
    }
}

/// The address range a request is limited as: the /24 of an IPv4 address,
/// the /48 of an IPv6 address (what one site usually holds), so that a
/// flooder cannot escape the limit by rotating addresses within its range.
pub(crate) fn address_range(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => address_range(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(limiter.check("k", t0).is_ok());
        }
        assert_eq!(limiter.check("k", t0), Err(1));
        // One token a second.
        assert!(limiter.check("k", t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.check("k", t0 + Duration::from_secs(1)).is_err());
        // Other keys are unaffected.
        assert!(limiter.check("other", t0).is_ok());
    }

    #[test]
    fn zero_disables() {
        let limiter = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert!(limiter.check(1, Instant::now()).is_ok());
        }
    }

    #[test]
    fn prune_keeps_only_partial_buckets() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        limiter.check("used", t0).unwrap();
        limiter.prune(t0);
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
        limiter.prune(t0 + Duration::from_secs(2));
        assert_eq!(limiter.buckets.lock().unwrap().len(), 0);
    }

    #[test]
    fn ranges() {
        let r = |s: &str| address_range(s.parse().unwrap()).to_string();
        assert_eq!(r("192.0.2.77"), "192.0.2.0");
        assert_eq!(r("2001:db8:1:2:3:4:5:6"), "2001:db8:1::");
        assert_eq!(r("::ffff:192.0.2.9"), "192.0.2.0");
    }
}
