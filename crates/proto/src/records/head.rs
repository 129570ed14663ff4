use crate::blob_id::BlobId;
use crate::codec::{Reader, Writer};
use crate::envelope::impl_record;
use crate::error::DecodeError;
use crate::fields::{Slot, Timestamp};
use crate::keys::VerifyingKey;
use crate::kind::RecordKind;

/// The newest state of one writer, kept by relays in a mailbox.
///
/// Signed by the mailbox key itself: a relay can check that a write is
/// authorized without learning whose mailbox it is. Relays keep the record
/// with the highest `seq` per slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadRecord {
    /// The mailbox, named by its public key; must be the signer.
    pub mailbox: VerifyingKey,
    /// The writer's slot within the mailbox.
    pub slot: Slot,
    /// Strictly increasing per slot.
    pub seq: u64,
    /// The blob the head points at (for sync, the writer's newest operation).
    pub target: BlobId,
    /// When the writer made this head.
    pub timestamp: Timestamp,
}

impl HeadRecord {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.mailbox.encode(w);
        self.slot.encode(w);
        w.u64(self.seq);
        w.fixed(self.target.as_bytes());
        self.timestamp.encode(w);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            mailbox: VerifyingKey::decode(r)?,
            slot: Slot::decode(r)?,
            seq: r.u64()?,
            target: BlobId::from_bytes(r.array()?),
            timestamp: Timestamp::decode(r)?,
        })
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        Some(&self.mailbox)
    }
}

impl_record!(HeadRecord, RecordKind::Head);
