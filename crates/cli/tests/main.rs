//! End-to-end tests of the `cairn` binary against real relays on loopback.
//!
//! Each test starts its relays in-process (each with its own data
//! directory, on its own port) and runs `cairn` as a child process with its
//! own home, exactly as a user would.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod audit;
mod chunks;
mod common;
mod demo;
mod devices;
mod errors;
mod faults;
mod folders;
mod folders_random;
mod interop;
mod manuals;
mod messages;
mod readme;
mod relay_view;
mod stolen;
mod storage;
mod sync;
mod transfers;
mod upgrade;
