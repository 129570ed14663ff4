use crate::codec::{Reader, Writer};
use crate::envelope::impl_record;
use crate::error::DecodeError;
use crate::fields::{SoftwareVersion, Timestamp};
use crate::keys::VerifyingKey;
use crate::kind::RecordKind;

use super::identity_log::RelayRef;

/// The most peers a relay info document may list.
pub const MAX_PEERS: usize = 64;

/// A relay's signed description of itself: who it is, how much room it has,
/// what it promises (retention) and what it limits (fair share). Served at
/// `/.well-known/cairn-relay`; clients choose relays by it and hold relays to
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayInfo {
    /// The relay's identity key; must be the signer.
    pub relay: VerifyingKey,
    /// Software name and version.
    pub software: SoftwareVersion,
    /// When this document was made. Clients refuse stale documents.
    pub issued_at: Timestamp,
    /// Bytes the operator gives to blob storage in total.
    pub capacity_total: u64,
    /// Bytes in use.
    pub capacity_used: u64,
    /// Bytes still available for new blobs (may be below
    /// `capacity_total - capacity_used` when the disk itself is fuller).
    pub capacity_free: u64,
    /// Largest blob accepted, in bytes.
    pub max_blob_size: u64,
    /// Minimum time a blob is kept after its last access, in seconds.
    pub retention_secs: u64,
    /// Fair-share limits applied to every client alike.
    pub limits: FairShareLimits,
    /// Relays this one peers with.
    pub peers: Vec<RelayRef>,
    /// Current load in thousandths (0 idle, 1000 saturated).
    pub load_permille: u16,
    /// Seconds since the relay process started.
    pub uptime_secs: u64,
}

/// The limits a relay applies to everyone, disclosed so that clients know
/// them before they are refused. Zero means "no limit" for every field except
/// `pow_bits`, where zero means no stamp is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FairShareLimits {
    /// Most bytes stored per upload key.
    pub key_quota_bytes: u64,
    /// Most requests per minute per upload key.
    pub key_requests_per_min: u32,
    /// Most requests per minute per source address range.
    pub addr_requests_per_min: u32,
    /// Proof-of-work bits an upload token's stamp must carry.
    pub pow_bits: u8,
}

impl FairShareLimits {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.key_quota_bytes);
        w.u32(self.key_requests_per_min);
        w.u32(self.addr_requests_per_min);
        w.u8(self.pow_bits);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let limits = Self {
            key_quota_bytes: r.u64()?,
            key_requests_per_min: r.u32()?,
            addr_requests_per_min: r.u32()?,
            pow_bits: r.u8()?,
        };
        if limits.pow_bits > 64 {
            return Err(DecodeError::Invalid {
                field: "pow bits",
                reason: "more than 64 bits",
            });
        }
        Ok(limits)
    }
}

impl RelayInfo {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.relay.encode(w);
        self.software.encode(w);
        self.issued_at.encode(w);
        w.u64(self.capacity_total);
        w.u64(self.capacity_used);
        w.u64(self.capacity_free);
        w.u64(self.max_blob_size);
        w.u64(self.retention_secs);
        self.limits.encode(w);
        w.count(self.peers.len());
        for peer in &self.peers {
            peer.encode(w);
        }
        w.u16(self.load_permille);
        w.u64(self.uptime_secs);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let relay = VerifyingKey::decode(r)?;
        let software = SoftwareVersion::decode(r)?;
        let issued_at = Timestamp::decode(r)?;
        let capacity_total = r.u64()?;
        let capacity_used = r.u64()?;
        let capacity_free = r.u64()?;
        let max_blob_size = r.u64()?;
        let retention_secs = r.u64()?;
        let limits = FairShareLimits::decode(r)?;
        let count = r.count("peers", MAX_PEERS)?;
        let mut peers = Vec::with_capacity(count);
        for _ in 0..count {
            peers.push(RelayRef::decode(r)?);
        }
        RelayRef::check_unique("peers", &peers)?;
        if peers.iter().any(|p| p.key == relay) {
            return Err(DecodeError::Invalid {
                field: "peers",
                reason: "a relay cannot list itself as a peer",
            });
        }
        let load_permille = r.u16()?;
        let uptime_secs = r.u64()?;
        let info = Self {
            relay,
            software,
            issued_at,
            capacity_total,
            capacity_used,
            capacity_free,
            max_blob_size,
            retention_secs,
            limits,
            peers,
            load_permille,
            uptime_secs,
        };
        info.check_consistent()?;
        Ok(info)
    }

    /// Figures that contradict each other are refused outright; whether
    /// consistent figures are *true* is for clients to find out.
    fn check_consistent(&self) -> Result<(), DecodeError> {
        let invalid = |field, reason| Err(DecodeError::Invalid { field, reason });
        if self.capacity_used > self.capacity_total {
            return invalid("capacity used", "exceeds capacity total");
        }
        if self.capacity_free > self.capacity_total - self.capacity_used {
            return invalid("capacity free", "exceeds capacity total minus used");
        }
        if self.load_permille > 1000 {
            return invalid("load", "above 1000 permille");
        }
        Ok(())
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        Some(&self.relay)
    }
}

impl_record!(RelayInfo, RecordKind::RelayInfo);
