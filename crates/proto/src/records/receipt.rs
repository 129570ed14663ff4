use crate::blob_id::BlobId;
use crate::codec::{Reader, Writer};
use crate::envelope::impl_record;
use crate::error::DecodeError;
use crate::fields::Timestamp;
use crate::keys::VerifyingKey;
use crate::kind::RecordKind;

/// A relay's signed statement that it took over a blob from another relay:
/// it holds the whole blob, verified, and answers for it from now on. Only
/// with a valid receipt may the sender drop its copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReceipt {
    /// The relay that received the blob; must be the signer.
    pub receiver: VerifyingKey,
    /// The relay that sent it, so the receipt cannot be presented by another.
    pub sender: VerifyingKey,
    /// The blob received.
    pub blob: BlobId,
    /// Its size in bytes.
    pub size: u64,
    /// When the receiver committed it to stable storage.
    pub received_at: Timestamp,
}

impl TransferReceipt {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.receiver.encode(w);
        self.sender.encode(w);
        w.fixed(self.blob.as_bytes());
        w.u64(self.size);
        self.received_at.encode(w);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let receipt = Self {
            receiver: VerifyingKey::decode(r)?,
            sender: VerifyingKey::decode(r)?,
            blob: BlobId::from_bytes(r.array()?),
            size: r.u64()?,
            received_at: Timestamp::decode(r)?,
        };
        if receipt.receiver == receipt.sender {
            return Err(DecodeError::Invalid {
                field: "sender",
                reason: "a relay cannot transfer a blob to itself",
            });
        }
        Ok(receipt)
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        Some(&self.receiver)
    }
}

impl_record!(TransferReceipt, RecordKind::TransferReceipt);
