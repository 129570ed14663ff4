//! Decodes untrusted bytes as an `Operation` payload. Whatever decodes must
//! re-encode to exactly the input: the encoding is canonical.
#![no_main]

use cairn_proto::{Operation, Record as _};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Operation::from_payload(data) {
        assert_eq!(record.to_payload(), data, "non-canonical Operation accepted");
    }
});
