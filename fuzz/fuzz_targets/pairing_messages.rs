//! Feeds untrusted bytes to every pairing-message parser, as a relay in the
//! middle could: no panic, and no forged reply, confirm or welcome passes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_client::fuzzing::pairing_messages(data);
});
