//! Decoders of signed records and their envelopes.

use cairn_proto::{
    AuthToken, DeviceCertificate, HeadRecord, IdentityLogEntry, Operation, OwnedHead, Record,
    RecordKind, RelayInfo, Revocation, SignedRecord, SigningKey, TransferReceipt, VerifyingKey,
    owned_label, verify_identity_log,
};

/// Whatever decodes as an `R` payload must re-encode to exactly the input:
/// the encoding is canonical.
fn payload<R: Record>(data: &[u8]) {
    if let Ok(record) = R::from_payload(data) {
        assert_eq!(
            record.to_payload(),
            data,
            "non-canonical {} accepted",
            std::any::type_name::<R>()
        );
    }
}

/// A `DeviceCertificate` payload.
pub fn device_certificate(data: &[u8]) {
    payload::<DeviceCertificate>(data);
}

/// A `Revocation` payload.
pub fn revocation(data: &[u8]) {
    payload::<Revocation>(data);
}

/// An `IdentityLogEntry` payload.
pub fn identity_log_entry(data: &[u8]) {
    payload::<IdentityLogEntry>(data);
}

/// A `HeadRecord` payload.
pub fn head(data: &[u8]) {
    payload::<HeadRecord>(data);
}

/// An `OwnedHead` payload, then the same bytes signed by a fixed writer, so
/// that verification reaches the grant and slot rules (random envelopes
/// almost never carry a valid signature): whatever passes must be that
/// writer's own slot.
pub fn owned_head(data: &[u8]) {
    payload::<OwnedHead>(data);
    let writer = SigningKey::from_seed(&[7; 32]);
    let Ok(envelope) = SignedRecord::sign_raw(RecordKind::OwnedHead, data.to_vec(), &writer) else {
        return;
    };
    if let Ok(head) = envelope.verify::<OwnedHead>() {
        assert!(
            owned_label(&head.slot, &head.mailbox, &writer.verifying_key()).is_some(),
            "an owned head verified for a slot that is not its writer's"
        );
    }
}

/// A `RelayInfo` payload.
pub fn relay_info(data: &[u8]) {
    payload::<RelayInfo>(data);
}

/// An `AuthToken` payload.
pub fn auth_token(data: &[u8]) {
    payload::<AuthToken>(data);
}

/// A `TransferReceipt` payload.
pub fn transfer_receipt(data: &[u8]) {
    payload::<TransferReceipt>(data);
}

/// An `Operation` payload.
pub fn operation(data: &[u8]) {
    payload::<Operation>(data);
}

/// A signed-record envelope: re-encodes to the input, and verification as
/// every record kind fails cleanly or succeeds, never panics.
pub fn envelope(data: &[u8]) {
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
    let _ = envelope.verify::<Operation>();
    let _ = envelope.verify::<OwnedHead>();
}

/// The base64url header form of an envelope; what parses prints back as
/// exactly the input.
pub fn envelope_base64url(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(envelope) = SignedRecord::from_base64url(text) {
        assert_eq!(envelope.to_base64url(), text, "non-canonical text accepted");
    }
}

/// An identity log: the root public key (32 bytes), then entries, each
/// prefixed by a 16-bit big-endian length. Verification returns a state or
/// an error, never panics.
pub fn identity_log(data: &[u8]) {
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
}

/// A batch upload's header (PROTOCOL.md §7.3) as a client could send it:
/// whatever decodes re-encodes to the input, its length shows in its first
/// two bytes, and its ids are strictly ascending.
pub fn batch_header(data: &[u8]) {
    let Ok(header) = cairn_proto::BatchHeader::decode(data) else {
        return;
    };
    assert_eq!(header.encode(), data, "non-canonical batch header accepted");
    assert_eq!(
        cairn_proto::BatchHeader::len_from_prefix(data),
        Ok(Some(data.len()))
    );
    assert!(header.entries().windows(2).all(|w| w[0].0 < w[1].0));
    let _ = header.digest();
}
