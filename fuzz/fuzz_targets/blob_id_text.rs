//! Parses untrusted text as a blob id; what parses must print back as exactly
//! the input.
#![no_main]

use cairn_proto::BlobId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = text.parse::<BlobId>() {
        assert_eq!(id.to_string(), text, "non-canonical blob id accepted");
    }
});
