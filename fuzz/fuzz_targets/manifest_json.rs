//! Parses untrusted bytes as a decrypted manifest: no panic, and whatever
//! parses survives a round trip unchanged.
#![no_main]

use cairn_client::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::from_json(data) {
        let again = Manifest::from_json(&manifest.to_json()).expect("own output parses");
        assert_eq!(again, manifest);
    }
});
