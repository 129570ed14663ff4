//! A deterministic simulation of files kept on cairn relays.
//!
//! Relays disclose a retention, fail for a while (outages) or for good
//! (they vanish); devices come online now and then, put their files, and,
//! when they keep watch, audit and repair them. Which relays take a copy,
//! how many copies are wanted, how often a watching device repairs and
//! what a repair replaces are decided by [`cairn_policy`], the same code
//! the client runs. Storage and network are not simulated: a copy is a
//! relay index and a last access time, and an audit finds what a client
//! would: the copy, its loss to retention or to a relay that drops what
//! it acknowledged, a failed proof from one that kept only part of it
//! (drawn with the real `ChunkRequest::random`), or no answer (a relay that is down and one that
//! vanished look the same).
//!
//! Time advances an hour at a time; within an hour devices run in
//! parallel against the relays as the hour began (`run`), so a run gives
//! the same result on any number of threads. A device's files share
//! their copies (`client` says what that aggregates).
//!
//! Relays over their high-water mark hand bytes on to peers in the
//! relay's own order (`federation`), booking it in their reciprocity
//! ledgers; a run can be traced and replayed against real relays
//! (`trace`, and `tests/validate.rs`).
//!
//! What this version leaves out (docs/DURABILITY.md says the same):
//! replicas between relays, fair-share limits, relays that lie in their
//! info, request rates, bandwidth, and chunked files (a file is one
//! blob).

pub mod chart;
mod client;
mod federation;
mod relay;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod sweep;
mod time;
pub mod trace;

pub use run::{Day, Engine, Report, simulate, simulate_on, simulate_traced, simulate_with};
pub use scenario::{Scenario, ScenarioError};
