//! Decodes untrusted bytes as a signed-record envelope, re-encodes it, and
//! runs verification as every record kind (which must fail cleanly, never
//! panic).
#![no_main]

use cairn_proto::{
    AuthToken, DeviceCertificate, HeadRecord, IdentityLogEntry, RelayInfo, Revocation,
    SignedRecord, TransferReceipt,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = SignedRecord::from_bytes(data) else {
        return;
    };
    assert_eq!(envelope.to_bytes(), data, "non-canonical envelope accepted");
    let _ = envelope.verify::<DeviceCertificate>();
    let _ = envelope.verify::<Revocation>();
    let _ = envelope.verify::<IdentityLogEntry>();
    let _ = envelope.verify::<HeadRecord>();
    let _ = envelope.verify::<RelayInfo>();
    let _ = envelope.verify::<AuthToken>();
    let _ = envelope.verify::<TransferReceipt>();
});
