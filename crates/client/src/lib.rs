//! The cairn client library.
//!
//! Authority in cairn lives with the client: it owns the keys, encrypts and
//! signs everything, picks relays and keeps redundancy. This crate is where
//! that logic lives, so that the `cairn` CLI stays a thin shell and other
//! programs can embed the same client.
//!
//! It is being built up issue by issue; today it re-exports the protocol
//! core it builds on.

pub use cairn_proto as proto;
