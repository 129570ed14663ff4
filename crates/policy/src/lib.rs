//! cairn's decisions, apart from the I/O around them.
//!
//! Relays and clients decide where replicas go, whom to favour and when
//! to hand data on from facts they have gathered (peer keys, byte counts,
//! capacities). Those decisions live here as pure functions of those
//! facts, with no clock, network or disk, so that the relay and the
//! durability simulator (issue 7/7, docs/DURABILITY.md) run the same code.
//! Keys and blob ids are their 32 raw bytes; callers keep their own types.

pub mod capacity;
pub mod choice;
pub mod placement;
pub mod repair;
pub mod standing;
