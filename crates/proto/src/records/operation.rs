use crate::blob_id::BlobId;
use crate::codec::{Reader, Writer};
use crate::envelope::impl_record;
use crate::error::DecodeError;
use crate::keys::VerifyingKey;
use crate::kind::RecordKind;

/// Largest operation body in bytes.
pub const MAX_OPERATION_BODY: usize = 64 * 1024;

/// One change in a device's operation log (multi-device sync).
///
/// Each device is the only writer of its log: operations are numbered from
/// 1, each names the blob id of the stored previous one, and each is signed
/// by the device itself. What the change is (`body`) is the client's
/// business (PROTOCOL.md §10); relays only ever see operations sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The writing device; must be the signer.
    pub device: VerifyingKey,
    /// Position in the device's log, from 1.
    pub seq: u64,
    /// Blob id of the stored previous operation; absent exactly when `seq`
    /// is 1.
    pub prev: Option<BlobId>,
    /// Hybrid logical clock: milliseconds since the Unix epoch in the high
    /// 48 bits, a counter in the low 16.
    pub clock: u64,
    /// The change, 0–65536 bytes.
    pub body: Vec<u8>,
}

impl Operation {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.device.encode(w);
        w.u64(self.seq);
        w.option(self.prev.as_ref(), |w, id| w.fixed(id.as_bytes()));
        w.u64(self.clock);
        w.bytes32(&self.body);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let device = VerifyingKey::decode(r)?;
        let seq = r.u64()?;
        if seq == 0 {
            return Err(DecodeError::Invalid {
                field: "seq",
                reason: "operations are numbered from 1",
            });
        }
        let prev = r.option("prev", |r| Ok(BlobId::from_bytes(r.array()?)))?;
        if (seq == 1) != prev.is_none() {
            return Err(DecodeError::Invalid {
                field: "prev",
                reason: "must be absent for operation 1 and present for every later one",
            });
        }
        let clock = r.u64()?;
        let body = r.bytes32("body", MAX_OPERATION_BODY)?.to_vec();
        Ok(Self {
            device,
            seq,
            prev,
            clock,
            body,
        })
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        Some(&self.device)
    }
}

impl_record!(Operation, RecordKind::Operation);
