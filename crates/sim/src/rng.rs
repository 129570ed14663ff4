//! A small, fixed random number generator: results must not change when a
//! dependency is upgraded, and every relay and client draws from a stream
//! of its own, so adding one does not shift the others.

/// SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state, passes
/// BigCrush, and seeds well from consecutive numbers.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The stream numbered `stream` of the simulation seeded with `seed`.
    #[must_use]
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut mixer = Self(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        Self(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        // The bias of a modulo on 64 bits is far below anything measured;
        // the remainder is below `n`, so it fits.
        usize::try_from(self.next_u64() % n as u64).unwrap_or(0)
    }

    /// An exponentially distributed wait with the given mean, in seconds.
    pub fn exp_secs(&mut self, mean: f64) -> u64 {
        let wait = -mean * self.unit().ln();
        // Far beyond any horizon when the mean is huge; never negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = if wait >= u64::MAX as f64 {
            u64::MAX
        } else {
            wait.max(0.0) as u64
        };
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_fixed_distinct_and_unbiased() {
        let mut a = Rng::stream(7, 1);
        let mut b = Rng::stream(7, 2);
        let first = a.next_u64();
        assert_ne!(first, b.next_u64());
        assert_eq!(Rng::stream(7, 1).next_u64(), first);
        let mut r = Rng::stream(1, 0);
        let mean = (0..100_000).map(|_| r.unit()).sum::<f64>() / 100_000.0;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let waits = (0..100_000).map(|_| r.exp_secs(100.0)).sum::<u64>() / 100_000;
        assert!((95..=105).contains(&waits), "{waits}");
    }
}
