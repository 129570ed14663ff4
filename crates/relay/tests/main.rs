//! Relay integration tests: real relays on loopback ports, real files,
//! real HTTP. Linked as one test binary.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod api;
mod batch;
mod common;
mod config;
mod crash;
mod federation;
mod full_disk;
mod gc;
mod heads;
mod hostile;
mod scaleout;
mod soak;
mod status_page;
mod streaming;
mod tls;
