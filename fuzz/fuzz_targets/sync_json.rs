//! Parses untrusted bytes as a decrypted operation body and as a decrypted
//! snapshot: no panic, and whatever parses survives a round trip unchanged.
#![no_main]

use cairn_client::sync::{Change, Snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(change) = Change::from_body(data) {
        assert_eq!(Change::from_body(&change.to_body()).expect("own output parses"), change);
    }
    if let Ok(snapshot) = serde_json::from_slice::<Snapshot>(data) {
        let text = serde_json::to_vec(&snapshot).expect("serializes");
        let again: Snapshot = serde_json::from_slice(&text).expect("own output parses");
        assert_eq!(again, snapshot);
    }
});
