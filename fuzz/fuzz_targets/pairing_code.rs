//! Parses untrusted text as a pairing code: whatever parses prints back to
//! a form that parses to the same code.
#![no_main]

use cairn_client::PairingCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(code) = PairingCode::parse(text)
    {
        let again = PairingCode::parse(&code.to_string()).expect("printed code parses");
        assert!(again == code);
    }
});
