//! Heads as the client reads them: an owned head (PROTOCOL.md §4.9), kept
//! in a slot that only its writer can move, or a legacy head (§4.4) from
//! before writer-owned slots, which any holder of the mailbox key could
//! have written and which is therefore only ever a hint.

use cairn_proto::{
    BlobId, HeadRecord, OwnedHead, RecordKind, SignedRecord, Signer, SigningKey, Slot, Timestamp,
    VerifyingKey, head_grant, owned_label, owned_slot,
};

/// What a head is for, by its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The identity log's newest entry (owned label `id`, legacy slot
    /// `identity`).
    Identity,
    /// A device's newest operation (owned label `ops`, whose writer is the
    /// device or its blinded key; legacy slot `d-<device>`).
    Ops(VerifyingKey),
    /// A snapshot operation (owned label `snap`; legacy slot `snapshot`).
    Snapshot,
    /// Anything else (pairing messages, a later version's slots).
    Other,
}

impl Role {
    /// The owned-slot label of this role, for a writer's own heads.
    fn label(self) -> Option<&'static str> {
        match self {
            Self::Identity => Some("id"),
            Self::Ops(_) => Some("ops"),
            Self::Snapshot => Some("snap"),
            Self::Other => None,
        }
    }
}

/// A head a relay holds, verified.
#[derive(Clone, Debug)]
pub struct Head {
    /// The mailbox it is in.
    pub mailbox: VerifyingKey,
    /// Its slot.
    pub slot: Slot,
    /// Its sequence number.
    pub seq: u64,
    /// What it points at.
    pub target: BlobId,
    /// The device whose own slot this is, as far as this client can tell
    /// ([`Head::resolve`]): until resolved, or when no known device's
    /// blinded key matches, the signer itself. `None` for a legacy head.
    pub writer: Option<VerifyingKey>,
    /// The key that signed an owned head (a device key, or a device's
    /// blinded writer key in the per-relay layout); `None` for a legacy
    /// head.
    pub signer: Option<VerifyingKey>,
    /// The signed envelope, which anyone may pass on to a relay unchanged.
    pub envelope: SignedRecord,
}

impl Head {
    /// Verifies `record` as an owned or a legacy head.
    ///
    /// # Errors
    ///
    /// Why it is neither.
    pub fn from_record(record: SignedRecord) -> Result<Self, String> {
        if record.kind() == RecordKind::OwnedHead {
            let head = record
                .verify::<OwnedHead>()
                .map_err(|err| format!("owned head: {err}"))?;
            return Ok(Self {
                mailbox: head.mailbox,
                slot: head.slot.clone(),
                seq: head.seq,
                target: head.target,
                writer: Some(*head.signer()),
                signer: Some(*head.signer()),
                envelope: record,
            });
        }
        let head = record
            .verify::<HeadRecord>()
            .map_err(|err| format!("head record: {err}"))?;
        if cairn_proto::is_owned_slot(&head.slot) {
            return Err("a legacy head in an owned slot".into());
        }
        Ok(Self {
            mailbox: head.mailbox,
            slot: head.slot.clone(),
            seq: head.seq,
            target: head.target,
            writer: None,
            signer: None,
            envelope: record,
        })
    }

    /// Decodes and verifies envelope bytes as [`Head::from_record`] does.
    ///
    /// # Errors
    ///
    /// Why they are not a head.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let record = SignedRecord::from_bytes(bytes).map_err(|err| format!("head: {err}"))?;
        Self::from_record(record)
    }

    /// Names the device behind a blinded signer: `device_of` maps a
    /// signer to the device whose writer key it is, if any.
    pub fn resolve(mut self, device_of: impl Fn(&VerifyingKey) -> Option<VerifyingKey>) -> Self {
        self.writer = self
            .signer
            .map(|signer| device_of(&signer).unwrap_or(signer));
        self
    }

    /// What the head is for.
    pub fn role(&self) -> Role {
        match (&self.signer, &self.writer) {
            (Some(signer), Some(writer)) => match owned_label(&self.slot, &self.mailbox, signer) {
                Some("id") => Role::Identity,
                Some("ops") => Role::Ops(*writer),
                Some("snap") => Role::Snapshot,
                _ => Role::Other,
            },
            _ => match self.slot.as_str() {
                "identity" => Role::Identity,
                "snapshot" => Role::Snapshot,
                other => other
                    .strip_prefix("d-")
                    .and_then(|text| cairn_proto::decode_base64url(text, 32).ok())
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
                    .map_or(Role::Other, Role::Ops),
            },
        }
    }

    /// Whether this is an owned head: one only its writer could have put.
    pub fn is_owned(&self) -> bool {
        self.writer.is_some()
    }
}

/// Signs the own head of `device` for `role` in `mailbox` with `writer`
/// (the device's key, or its blinded key there): an owned head, granted
/// by the mailbox key, stamped `now`.
///
/// # Errors
///
/// When `role` has no owned slot ([`Role::Other`]), or names another
/// device's operations.
pub fn sign_owned(
    mailbox: &SigningKey,
    device: &VerifyingKey,
    writer: &impl Signer,
    role: Role,
    seq: u64,
    target: BlobId,
    now: Timestamp,
) -> Result<SignedRecord, String> {
    if matches!(role, Role::Ops(ops) if ops != *device) {
        return Err("a device can only write the head of its own operations".into());
    }
    let me = writer.verifying_key();
    let label = role
        .label()
        .ok_or_else(|| "this kind of head has no owned slot".to_owned())?;
    let mailbox_key = mailbox.verifying_key();
    let slot = owned_slot(&mailbox_key, &me, label).map_err(|err| err.to_string())?;
    let head = OwnedHead {
        mailbox: mailbox_key,
        slot,
        seq,
        target,
        timestamp: now,
        grant: head_grant(mailbox, &me),
    };
    SignedRecord::sign(&head, writer).map_err(|err| format!("owned head: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_heads_say_whose_they_are() {
        let mailbox = SigningKey::from_seed(&[1; 32]);
        let device = SigningKey::from_seed(&[2; 32]);
        let me = device.verifying_key();
        for role in [Role::Identity, Role::Ops(me), Role::Snapshot] {
            let record = sign_owned(
                &mailbox,
                &me,
                &device,
                role,
                3,
                BlobId::of(b"x"),
                Timestamp(1),
            )
            .unwrap();
            let head = Head::from_record(record).unwrap();
            assert_eq!(head.role(), role);
            assert_eq!(head.writer, Some(me));
        }
        let other = SigningKey::from_seed(&[3; 32]).verifying_key();
        assert!(
            sign_owned(
                &mailbox,
                &me,
                &device,
                Role::Ops(other),
                1,
                BlobId::of(b"x"),
                Timestamp(1)
            )
            .is_err()
        );
    }
}
