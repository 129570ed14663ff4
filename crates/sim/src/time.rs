//! Units of simulated time and size.

pub(crate) const HOUR: u64 = 3600;
pub(crate) const DAY: u64 = 24 * HOUR;
pub(crate) const YEAR: f64 = 365.0 * DAY as f64;
pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;
