//! Parses untrusted text as each kind of key; what parses must print back as
//! exactly the input (a secret key's text form ignores trailing whitespace,
//! as key files end in a newline).
#![no_main]

use cairn_proto::{SigningKey, VerifyingKey, X25519PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = text.parse::<VerifyingKey>() {
        assert_eq!(key.to_string(), text);
    }
    if let Ok(key) = text.parse::<X25519PublicKey>() {
        assert_eq!(key.to_string(), text);
    }
    if let Ok(key) = SigningKey::from_secret_text(text) {
        assert_eq!(key.to_secret_text(), text.trim_end());
    }
});
