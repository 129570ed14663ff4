use crate::blob_id::BlobId;
use crate::codec::{Reader, Writer};
use crate::envelope::impl_record;
use crate::error::{DecodeError, VerifyError};
use crate::fields::{Slot, Timestamp};
use crate::keys::{Signature, SigningKey, VerifyingKey};
use crate::kind::RecordKind;
use crate::text::encode_base64url;

/// Domain of a mailbox key's grant to a writer (docs/PROTOCOL.md §4.9).
const GRANT_DOMAIN: &[u8] = b"cairn/v1/head-grant";
/// Key-derivation context of a writer's slot tag.
const SLOT_TAG_CONTEXT: &str = "cairn/v1 owned head slot";
/// Every owned slot starts with this; legacy heads may not use it.
const OWNED_SLOT_PREFIX: &str = "o-";
/// Bytes of the derived tag (20 characters of base64url).
const TAG_BYTES: usize = 15;
/// Characters before the label: prefix, tag, and a `-`.
const LABEL_START: usize = OWNED_SLOT_PREFIX.len() + 20 + 1;
/// The longest label: what a slot name (64 characters) leaves.
const MAX_LABEL_LEN: usize = 64 - LABEL_START;

/// The newest state of one writer, kept by relays in a slot that belongs
/// to that writer alone.
///
/// Signed by the **writer** (the envelope's signer), whose key the slot
/// name is derived from, and carrying the mailbox key's **grant** to that
/// writer. So a relay can check, without learning whose mailbox it is, that
/// the writer may write in the mailbox at all (strangers cannot fill it)
/// and that the slot is the writer's own (no holder of the mailbox key can
/// move another writer's head). This replaces [`crate::HeadRecord`], which
/// any holder of the mailbox key could write in any slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedHead {
    /// The mailbox, named by its public key.
    pub mailbox: VerifyingKey,
    /// `o-<tag>-<label>`, where the tag is derived from the mailbox and the
    /// writer ([`owned_slot`]).
    pub slot: Slot,
    /// Strictly increasing per slot.
    pub seq: u64,
    /// The blob the head points at.
    pub target: BlobId,
    /// When the writer made this head.
    pub timestamp: Timestamp,
    /// The mailbox key's signature over (mailbox, writer): [`grant`].
    pub grant: Signature,
}

/// The 20-character tag of `writer`'s slots in `mailbox`.
fn tag(mailbox: &VerifyingKey, writer: &VerifyingKey) -> String {
    let mut input = [0u8; 64];
    input[..32].copy_from_slice(&mailbox.to_bytes());
    input[32..].copy_from_slice(&writer.to_bytes());
    let derived = blake3::derive_key(SLOT_TAG_CONTEXT, &input);
    encode_base64url(&derived[..TAG_BYTES])
}

/// The slot of `mailbox` that belongs to `writer`, with `label` (1 to
/// [`MAX_LABEL_LEN`] characters from `A-Z a-z 0-9 _ -`) telling a writer's
/// slots apart.
///
/// # Errors
///
/// [`DecodeError`] if `label` is empty, too long, or has other characters.
pub fn owned_slot(
    mailbox: &VerifyingKey,
    writer: &VerifyingKey,
    label: &str,
) -> Result<Slot, DecodeError> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(DecodeError::Invalid {
            field: "slot label",
            reason: "not 1 to 41 characters",
        });
    }
    Slot::new(format!(
        "{OWNED_SLOT_PREFIX}{}-{label}",
        tag(mailbox, writer)
    ))
}

/// The label of `slot` if it is `writer`'s slot in `mailbox`.
pub fn owned_label<'s>(
    slot: &'s Slot,
    mailbox: &VerifyingKey,
    writer: &VerifyingKey,
) -> Option<&'s str> {
    let text = slot.as_str();
    let rest = text.strip_prefix(OWNED_SLOT_PREFIX)?;
    let (tag_text, label) = (rest.get(..20)?, rest.get(20..)?.strip_prefix('-')?);
    (!label.is_empty() && tag_text == tag(mailbox, writer)).then_some(label)
}

/// Whether `slot` has the shape of an owned slot, whoever it belongs to.
/// Legacy heads ([`crate::HeadRecord`]) are refused in such slots.
pub fn is_owned_slot(slot: &Slot) -> bool {
    slot.as_str().starts_with(OWNED_SLOT_PREFIX)
}

fn grant_input(mailbox: &VerifyingKey, writer: &VerifyingKey) -> Vec<u8> {
    let mut input = Vec::with_capacity(GRANT_DOMAIN.len() + 1 + 64);
    input.extend_from_slice(GRANT_DOMAIN);
    input.push(0);
    input.extend_from_slice(&mailbox.to_bytes());
    input.extend_from_slice(&writer.to_bytes());
    input
}

/// The mailbox key's grant letting `writer` keep heads in its mailbox.
pub fn grant(mailbox: &SigningKey, writer: &VerifyingKey) -> Signature {
    mailbox.sign(&grant_input(&mailbox.verifying_key(), writer))
}

impl OwnedHead {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.mailbox.encode(w);
        self.slot.encode(w);
        w.u64(self.seq);
        w.fixed(self.target.as_bytes());
        self.timestamp.encode(w);
        self.grant.encode(w);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let head = Self {
            mailbox: VerifyingKey::decode(r)?,
            slot: Slot::decode(r)?,
            seq: r.u64()?,
            target: BlobId::from_bytes(r.array()?),
            timestamp: Timestamp::decode(r)?,
            grant: Signature::decode(r)?,
        };
        if !is_owned_slot(&head.slot) {
            return Err(DecodeError::Invalid {
                field: "slot",
                reason: "not an owned slot (o-<tag>-<label>)",
            });
        }
        Ok(head)
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        None
    }

    /// The rules that need the signer: the mailbox granted it, and the slot
    /// is its own.
    fn check_signer(&self, signer: &VerifyingKey) -> Result<(), VerifyError> {
        if !self
            .mailbox
            .verify_strict(&grant_input(&self.mailbox, signer), &self.grant)
        {
            return Err(VerifyError::BadGrant);
        }
        if owned_label(&self.slot, &self.mailbox, signer).is_none() {
            return Err(VerifyError::NotOwnSlot);
        }
        Ok(())
    }
}

impl_record!(OwnedHead, RecordKind::OwnedHead, check = Self::check_signer);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignedRecord;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_seed(&[byte; 32])
    }

    fn head(mailbox: &SigningKey, writer: &VerifyingKey, label: &str) -> OwnedHead {
        OwnedHead {
            mailbox: mailbox.verifying_key(),
            slot: owned_slot(&mailbox.verifying_key(), writer, label).unwrap(),
            seq: 7,
            target: BlobId::of(b"target"),
            timestamp: Timestamp(1),
            grant: grant(mailbox, writer),
        }
    }

    #[test]
    fn a_writer_signs_its_own_slot() {
        let (mailbox, writer) = (key(1), key(2));
        let record = head(&mailbox, &writer.verifying_key(), "id");
        let signed = SignedRecord::sign(&record, &writer).unwrap();
        let verified = signed.verify::<OwnedHead>().unwrap();
        assert_eq!(
            owned_label(&verified.slot, &mailbox.verifying_key(), signed.signer()),
            Some("id")
        );
    }

    #[test]
    fn another_writer_cannot_sign_a_slot_it_does_not_own() {
        let (mailbox, owner, thief) = (key(1), key(2), key(3));
        // The thief holds the mailbox key too, so it can grant itself.
        let mut record = head(&mailbox, &owner.verifying_key(), "id");
        record.grant = grant(&mailbox, &thief.verifying_key());
        assert!(matches!(
            SignedRecord::sign(&record, &thief),
            Err(VerifyError::NotOwnSlot)
        ));
        let raw =
            SignedRecord::sign_raw(RecordKind::OwnedHead, record_payload(&record), &thief).unwrap();
        assert!(matches!(
            raw.verify::<OwnedHead>(),
            Err(VerifyError::NotOwnSlot)
        ));
    }

    #[test]
    fn a_writer_without_the_mailbox_grant_is_refused() {
        let (mailbox, writer, stranger_box) = (key(1), key(2), key(4));
        let mut record = head(&mailbox, &writer.verifying_key(), "id");
        record.grant = grant(&stranger_box, &writer.verifying_key());
        assert!(matches!(
            SignedRecord::sign(&record, &writer),
            Err(VerifyError::BadGrant)
        ));
    }

    #[test]
    fn slots_of_other_shapes_do_not_decode() {
        let (mailbox, writer) = (key(1), key(2));
        let mut record = head(&mailbox, &writer.verifying_key(), "id");
        record.slot = Slot::new("identity").unwrap();
        assert!(SignedRecord::sign(&record, &writer).is_err());
        assert!(owned_slot(&mailbox.verifying_key(), &writer.verifying_key(), "").is_err());
        let long = "a".repeat(MAX_LABEL_LEN + 1);
        assert!(owned_slot(&mailbox.verifying_key(), &writer.verifying_key(), &long).is_err());
        let longest = "a".repeat(MAX_LABEL_LEN);
        assert!(owned_slot(&mailbox.verifying_key(), &writer.verifying_key(), &longest).is_ok());
    }

    fn record_payload(record: &OwnedHead) -> Vec<u8> {
        use crate::Record as _;
        record.to_payload()
    }
}
