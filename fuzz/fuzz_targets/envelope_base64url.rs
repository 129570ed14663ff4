//! Parses untrusted text as the base64url header form of an envelope; what
//! parses must print back as exactly the input.
#![no_main]

use cairn_proto::SignedRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(envelope) = SignedRecord::from_base64url(text) {
        assert_eq!(envelope.to_base64url(), text, "non-canonical text accepted");
    }
});
