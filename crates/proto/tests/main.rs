//! Integration tests of the protocol core, linked as one test binary.

// Helpers outside #[test] functions unwrap too: in a test, a panic is the
// failure report.
#![allow(clippy::unwrap_used)]

mod audit;
mod common;
mod identity_log;
mod properties;
mod reconcile;
mod vectors;
