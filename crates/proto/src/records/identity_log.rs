use crate::blob_id::BlobId;
use crate::codec::{Reader, Writer};
use crate::envelope::{MAX_PAYLOAD_LEN, SignedRecord, impl_record};
use crate::error::DecodeError;
use crate::fields::RelayUrl;
use crate::keys::{VerifyingKey, X25519PublicKey};
use crate::kind::RecordKind;

/// The most devices an identity may have enrolled at once. Bounds the size of
/// a vault-key rotation, which wraps the new key to every one of them.
pub const MAX_ACTIVE_DEVICES: usize = 64;

/// The most relays a [`LogAction::SetPreferredRelays`] may list.
pub const MAX_PREFERRED_RELAYS: usize = 32;

/// One entry of an identity's append-only, hash-chained log.
///
/// Entry `seq` 0 has no `prev`; every later entry names the [`BlobId`] of the
/// previous entry's complete envelope bytes, so the log can be stored as
/// ordinary blobs and any gap or substitution breaks the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityLogEntry {
    /// Position in the log, from 0 without gaps.
    pub seq: u64,
    /// BLAKE3 of the previous entry's envelope; `None` exactly when `seq` is 0.
    pub prev: Option<BlobId>,
    /// What the entry does.
    pub action: LogAction,
}

/// What an identity-log entry does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogAction {
    /// Enrolls a device.
    AddDevice {
        /// A root-signed [`crate::DeviceCertificate`] envelope.
        certificate: SignedRecord,
        /// The current vault key wrapped to the new device; present exactly
        /// when the identity has a vault key. Older generations are reachable
        /// through each rotation's `previous` link.
        vault_key: Option<WrappedKey>,
    },
    /// Removes a device.
    RevokeDevice {
        /// A root-signed [`crate::Revocation`] envelope.
        revocation: SignedRecord,
    },
    /// Replaces the vault key with a new generation.
    RotateVaultKey {
        /// One more than the current generation (the first is 1).
        generation: u32,
        /// The new vault key's public half (an age X25519 recipient).
        recipient: X25519PublicKey,
        /// The new vault secret wrapped to each active device, one entry per
        /// device, sorted by device key.
        wrapped: Vec<DeviceWrappedKey>,
        /// The previous generation's secret wrapped to the new recipient, so a
        /// holder of the newest key can unwrap every older one. Present
        /// exactly when `generation` is above 1.
        previous: Option<WrappedSecret>,
    },
    /// Replaces the list of relays the identity's devices should use.
    SetPreferredRelays {
        /// In order of preference, no key twice.
        relays: Vec<RelayRef>,
    },
}

/// A secret (a vault key) encrypted to an X25519 recipient. The bytes are an
/// age file; this crate does not look inside. 1 to 1024 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedSecret(Vec<u8>);

impl WrappedSecret {
    /// The most bytes a wrapped secret may have.
    pub const MAX_LEN: usize = 1024;

    /// Wraps ciphertext bytes.
    ///
    /// # Errors
    ///
    /// If `bytes` is empty or longer than [`WrappedSecret::MAX_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Invalid {
                field: "wrapped secret",
                reason: "empty",
            });
        }
        if bytes.len() > Self::MAX_LEN {
            return Err(DecodeError::TooLong {
                field: "wrapped secret",
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(Self(bytes))
    }

    /// The ciphertext.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn encode(&self, w: &mut Writer) {
        w.bytes16(&self.0);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::new(r.bytes16("wrapped secret", Self::MAX_LEN)?.to_vec())
    }
}

impl std::fmt::Debug for WrappedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedSecret({} bytes)", self.0.len())
    }
}

/// A vault key of a given generation, wrapped to one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// The vault-key generation.
    pub generation: u32,
    /// Its secret, wrapped to the device's X25519 key.
    pub secret: WrappedSecret,
}

/// A new vault key wrapped to one device, inside a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceWrappedKey {
    /// The device's Ed25519 key.
    pub device: VerifyingKey,
    /// The vault secret wrapped to that device's X25519 key.
    pub secret: WrappedSecret,
}

/// A relay: where to reach it and the key its info document is signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayRef {
    /// Base URL.
    pub url: RelayUrl,
    /// The relay's identity key.
    pub key: VerifyingKey,
}

impl RelayRef {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.url.encode(w);
        self.key.encode(w);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            url: RelayUrl::decode(r)?,
            key: VerifyingKey::decode(r)?,
        })
    }

    /// Refuses a list that names the same relay key twice.
    pub(crate) fn check_unique(field: &'static str, relays: &[Self]) -> Result<(), DecodeError> {
        let mut keys: Vec<_> = relays.iter().map(|r| r.key).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(DecodeError::Invalid {
                field,
                reason: "the same relay key appears twice",
            });
        }
        Ok(())
    }
}

mod tag {
    pub(super) const ADD_DEVICE: u8 = 1;
    pub(super) const REVOKE_DEVICE: u8 = 2;
    pub(super) const ROTATE_VAULT_KEY: u8 = 3;
    pub(super) const SET_PREFERRED_RELAYS: u8 = 4;
}

impl IdentityLogEntry {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.seq);
        w.option(self.prev.as_ref(), |w, id| w.fixed(id.as_bytes()));
        self.action.encode(w);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let seq = r.u64()?;
        let prev = r.option("prev", |r| Ok(BlobId::from_bytes(r.array()?)))?;
        if (seq == 0) != prev.is_none() {
            return Err(DecodeError::Invalid {
                field: "prev",
                reason: "must be absent for entry 0 and present for every later entry",
            });
        }
        let action = LogAction::decode(r)?;
        Ok(Self { seq, prev, action })
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        None
    }
}

impl_record!(IdentityLogEntry, RecordKind::IdentityLogEntry);

impl LogAction {
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::AddDevice {
                certificate,
                vault_key,
            } => {
                w.u8(tag::ADD_DEVICE);
                w.bytes32(&certificate.to_bytes());
                w.option(vault_key.as_ref(), |w, k| {
                    w.u32(k.generation);
                    k.secret.encode(w);
                });
            }
            Self::RevokeDevice { revocation } => {
                w.u8(tag::REVOKE_DEVICE);
                w.bytes32(&revocation.to_bytes());
            }
            Self::RotateVaultKey {
                generation,
                recipient,
                wrapped,
                previous,
            } => {
                w.u8(tag::ROTATE_VAULT_KEY);
                w.u32(*generation);
                recipient.encode(w);
                w.count(wrapped.len());
                for key in wrapped {
                    key.device.encode(w);
                    key.secret.encode(w);
                }
                w.option(previous.as_ref(), |w, s| s.encode(w));
            }
            Self::SetPreferredRelays { relays } => {
                w.u8(tag::SET_PREFERRED_RELAYS);
                w.count(relays.len());
                for relay in relays {
                    relay.encode(w);
                }
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            tag::ADD_DEVICE => Ok(Self::AddDevice {
                certificate: nested(r, "certificate", RecordKind::DeviceCertificate)?,
                vault_key: r.option("vault key", |r| {
                    Ok(WrappedKey {
                        generation: r.u32()?,
                        secret: WrappedSecret::decode(r)?,
                    })
                })?,
            }),
            tag::REVOKE_DEVICE => Ok(Self::RevokeDevice {
                revocation: nested(r, "revocation", RecordKind::Revocation)?,
            }),
            tag::ROTATE_VAULT_KEY => {
                let generation = r.u32()?;
                if generation == 0 {
                    return Err(DecodeError::Invalid {
                        field: "generation",
                        reason: "vault generations start at 1",
                    });
                }
                let recipient = X25519PublicKey::decode(r)?;
                let count = r.count("wrapped keys", MAX_ACTIVE_DEVICES)?;
                let mut wrapped = Vec::with_capacity(count);
                for _ in 0..count {
                    wrapped.push(DeviceWrappedKey {
                        device: VerifyingKey::decode(r)?,
                        secret: WrappedSecret::decode(r)?,
                    });
                }
                if wrapped.is_empty() {
                    return Err(DecodeError::Invalid {
                        field: "wrapped keys",
                        reason: "a vault key must be wrapped to at least one device",
                    });
                }
                // Strictly ascending: one canonical order and no device twice.
                if wrapped.windows(2).any(|w| w[0].device >= w[1].device) {
                    return Err(DecodeError::Invalid {
                        field: "wrapped keys",
                        reason: "not sorted by device key, or a device appears twice",
                    });
                }
                let previous = r.option("previous", WrappedSecret::decode)?;
                if (generation == 1) != previous.is_none() {
                    return Err(DecodeError::Invalid {
                        field: "previous",
                        reason: "must be absent for generation 1 and present for every later one",
                    });
                }
                Ok(Self::RotateVaultKey {
                    generation,
                    recipient,
                    wrapped,
                    previous,
                })
            }
            tag::SET_PREFERRED_RELAYS => {
                let count = r.count("preferred relays", MAX_PREFERRED_RELAYS)?;
                let mut relays = Vec::with_capacity(count);
                for _ in 0..count {
                    relays.push(RelayRef::decode(r)?);
                }
                RelayRef::check_unique("preferred relays", &relays)?;
                Ok(Self::SetPreferredRelays { relays })
            }
            tag => Err(DecodeError::UnknownTag {
                field: "identity log action",
                tag,
            }),
        }
    }
}

/// A signed record nested inside another, decoded strictly and required to
/// be of `kind`. Its signature is checked by whoever interprets the entry.
fn nested(
    r: &mut Reader<'_>,
    field: &'static str,
    kind: RecordKind,
) -> Result<SignedRecord, DecodeError> {
    let record = SignedRecord::from_bytes(r.bytes32(field, MAX_PAYLOAD_LEN)?)?;
    if record.kind() != kind {
        return Err(DecodeError::Invalid {
            field,
            reason: "nested record is of the wrong kind",
        });
    }
    Ok(record)
}
