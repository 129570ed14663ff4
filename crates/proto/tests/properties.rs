//! Property tests: every record round-trips through its payload, envelope
//! and text forms; every single-bit change to a signed envelope is refused;
//! no input, however malformed, panics a decoder.

use cairn_proto::{BlobId, Record, SignedRecord, SigningKey, VerifyingKey, X25519PublicKey};
use proptest::prelude::*;

use crate::common::*;

/// Decodes an envelope and verifies it as an `R`; `Err` if either fails.
fn open<R: Record>(bytes: &[u8]) -> Result<R, String> {
    let envelope = SignedRecord::from_bytes(bytes).map_err(|e| e.to_string())?;
    envelope
        .verify::<R>()
        .map(|v| v.into_record())
        .map_err(|e| e.to_string())
}

/// Flips bit `bit` (counting from the first byte's most significant bit).
fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 0x80 >> (bit % 8);
    out
}

/// Generates the same battery of properties for one record type.
///
/// `$bind` adjusts a generated record so that `key` is allowed to sign it
/// (records that name their own signer must name `key`).
macro_rules! record_properties {
    ($name:ident, $ty:ty, $strategy:expr, $bind:expr) => {
        mod $name {
            use super::*;

            fn signed(record: $ty, key: &SigningKey) -> ($ty, Vec<u8>) {
                let bind: fn($ty, VerifyingKey) -> $ty = $bind;
                let record = bind(record, key.verifying_key());
                let bytes = SignedRecord::sign(&record, key).unwrap().to_bytes();
                (record, bytes)
            }

            proptest! {
                #[test]
                fn payload_round_trips(record in $strategy) {
                    let bytes = record.to_payload();
                    let decoded = <$ty>::from_payload(&bytes).unwrap();
                    prop_assert_eq!(&decoded, &record);
                    prop_assert_eq!(decoded.to_payload(), bytes);
                }

                #[test]
                fn envelope_and_text_round_trip(record in $strategy, key in arb_signing_key()) {
                    let (record, bytes) = signed(record, &key);
                    let envelope = SignedRecord::from_bytes(&bytes).unwrap();
                    prop_assert_eq!(envelope.to_bytes(), bytes.clone());
                    let text = envelope.to_base64url();
                    let from_text = SignedRecord::from_base64url(&text).unwrap();
                    prop_assert_eq!(from_text.to_bytes(), bytes.clone());
                    prop_assert_eq!(open::<$ty>(&bytes).unwrap(), record);
                }

                #[test]
                fn payload_with_trailing_bytes_is_refused(record in $strategy, extra in 1u8..) {
                    let mut bytes = record.to_payload();
                    bytes.push(extra);
                    prop_assert!(<$ty>::from_payload(&bytes).is_err());
                }

                #[test]
                fn random_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                    let _ = <$ty>::from_payload(&bytes);
                }

                #[test]
                fn mutated_payloads_never_panic(
                    record in $strategy,
                    edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                ) {
                    let mut bytes = record.to_payload();
                    for (index, value) in edits {
                        let i = index.index(bytes.len());
                        bytes[i] = value;
                    }
                    if let Ok(decoded) = <$ty>::from_payload(&bytes) {
                        // Whatever decodes must be canonical.
                        prop_assert_eq!(decoded.to_payload(), bytes);
                    }
                }
            }

            proptest! {
                // Each case checks every bit of a whole envelope; a few cases
                // cover thousands of flips.
                #![proptest_config(ProptestConfig::with_cases(6))]

                #[test]
                fn every_single_bit_flip_is_refused(record in $strategy, key in arb_signing_key()) {
                    let (_, bytes) = signed(record, &key);
                    for bit in 0..bytes.len() * 8 {
                        let flipped = flip(&bytes, bit);
                        prop_assert!(
                            open::<$ty>(&flipped).is_err(),
                            "flipping bit {} of {} was accepted", bit, bytes.len() * 8
                        );
                    }
                }

                #[test]
                fn every_truncation_is_refused(record in $strategy, key in arb_signing_key()) {
                    let (_, bytes) = signed(record, &key);
                    for len in 0..bytes.len() {
                        prop_assert!(SignedRecord::from_bytes(&bytes[..len]).is_err());
                    }
                }
            }
        }
    };
}

record_properties!(
    device_certificate,
    cairn_proto::DeviceCertificate,
    arb_certificate(),
    |r, _| r
);
record_properties!(
    revocation,
    cairn_proto::Revocation,
    arb_revocation(),
    |r, _| r
);
record_properties!(
    identity_log_entry,
    cairn_proto::IdentityLogEntry,
    arb_log_entry(),
    |r, _| r
);
record_properties!(head, cairn_proto::HeadRecord, arb_head(), |mut r, key| {
    r.mailbox = key;
    r
});
record_properties!(
    owned_head,
    cairn_proto::OwnedHead,
    arb_owned_head(),
    |mut r, key| {
        // The slot and the grant are the signer's own.
        let mailbox = cairn_testkit::key("property mailbox");
        let label = r.slot.as_str()[23..].to_owned();
        r.slot = cairn_proto::owned_slot(&r.mailbox, &key, &label).unwrap();
        r.grant = cairn_proto::head_grant(&mailbox, &key);
        r
    }
);
record_properties!(
    relay_info,
    cairn_proto::RelayInfo,
    arb_relay_info(),
    |mut r, key| {
        r.peers.retain(|p| p.key != key);
        r.relay = key;
        r
    }
);
record_properties!(
    operation,
    cairn_proto::Operation,
    arb_operation(),
    |mut r, key| {
        r.device = key;
        r
    }
);
record_properties!(auth_token, cairn_proto::AuthToken, arb_token(), |r, _| r);
record_properties!(
    transfer_receipt,
    cairn_proto::TransferReceipt,
    arb_receipt(),
    |mut r, key| {
        if r.sender == key {
            r.sender = r.receiver;
        }
        r.receiver = key;
        r
    }
);

proptest! {
    #[test]
    fn a_record_signed_by_the_wrong_key_is_refused_when_it_names_its_signer(
        record in arb_head(), other in arb_signing_key()
    ) {
        prop_assume!(record.mailbox != other.verifying_key());
        // sign() refuses outright...
        prop_assert_eq!(
            SignedRecord::sign(&record, &other).unwrap_err(),
            cairn_proto::VerifyError::SignerMismatch
        );
        // ...and a record signed anyway (here with sign_raw) is refused by
        // every verifier.
        let bytes = SignedRecord::sign_raw(cairn_proto::RecordKind::Head, record.to_payload(), &other)
            .unwrap()
            .to_bytes();
        prop_assert_eq!(
            SignedRecord::from_bytes(&bytes).unwrap().verify::<cairn_proto::HeadRecord>().unwrap_err(),
            cairn_proto::VerifyError::SignerMismatch
        );
    }

    #[test]
    fn random_envelopes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(envelope) = SignedRecord::from_bytes(&bytes) {
            prop_assert_eq!(envelope.to_bytes(), bytes);
        }
    }

    #[test]
    fn blob_id_text_round_trips(id in arb_blob_id()) {
        prop_assert_eq!(id.to_string().parse::<BlobId>().unwrap(), id);
    }

    #[test]
    fn key_text_forms_round_trip(key in arb_signing_key(), x in arb_x25519()) {
        let vk = key.verifying_key();
        prop_assert_eq!(vk.to_string().parse::<VerifyingKey>().unwrap(), vk);
        prop_assert_eq!(x.to_string().parse::<X25519PublicKey>().unwrap(), x);
        let back = SigningKey::from_secret_text(&key.to_secret_text()).unwrap();
        prop_assert_eq!(back.to_seed(), key.to_seed());
    }

    #[test]
    fn text_parsers_never_panic(text in "\\PC{0,120}") {
        let _ = text.parse::<BlobId>();
        let _ = text.parse::<VerifyingKey>();
        let _ = text.parse::<X25519PublicKey>();
        let _ = SigningKey::from_secret_text(&text);
        let _ = SignedRecord::from_base64url(&text);
    }

    #[test]
    fn prefixed_text_parsers_never_panic(body in "[A-Za-z0-9_=+/-]{0,60}") {
        let _ = format!("ed25519:{body}").parse::<VerifyingKey>();
        let _ = format!("x25519:{body}").parse::<X25519PublicKey>();
        let _ = SigningKey::from_secret_text(&format!("ed25519-secret:{body}"));
    }

    #[test]
    fn arbitrary_32_bytes_either_are_a_canonical_key_or_are_refused(bytes in any::<[u8; 32]>()) {
        if let Ok(key) = VerifyingKey::from_bytes(&bytes) {
            prop_assert_eq!(key.to_bytes(), bytes);
        }
    }
}

#[test]
fn text_form_is_rejected_when_base64_is_padded() {
    let text = SignedRecord::sign(&sample_head(), &cairn_testkit::key("mailbox"))
        .unwrap()
        .to_base64url();
    // Every text form is unpadded; the envelope's length may or may not be a
    // multiple of 3, so append padding unconditionally: it must never parse.
    assert!(SignedRecord::from_base64url(&format!("{text}=")).is_err());
    assert!(SignedRecord::from_base64url(&format!("{text}==")).is_err());
}
