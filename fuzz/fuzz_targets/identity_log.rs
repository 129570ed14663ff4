//! Verifies an untrusted identity log. The input is the root public key (32
//! bytes) followed by entries, each prefixed by a 16-bit big-endian length.
//! Verification must return a state or an error, never panic.
#![no_main]

use cairn_proto::{VerifyingKey, verify_identity_log};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((root, mut rest)) = data.split_first_chunk::<32>() else {
        return;
    };
    let Ok(root) = VerifyingKey::from_bytes(root) else {
        return;
    };
    let mut entries = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        entries.push(&tail[..len]);
        rest = &tail[len..];
    }
    if let Ok(state) = verify_identity_log(&root, &entries) {
        assert_eq!(state.last_seq() + 1, entries.len() as u64);
    }
});
