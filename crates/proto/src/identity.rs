//! Verifying an identity log and computing the state it leads to.
//!
//! The rules (normative text in docs/PROTOCOL.md, "Identity log"):
//!
//! 1. Entries are numbered from 0 without gaps; entry 0 has no `prev`, and
//!    every later entry's `prev` is the [`BlobId`] of the previous entry's
//!    envelope bytes.
//! 2. Entry 0 is signed by the root key and enrolls the first device.
//! 3. Every later entry is signed by the root key or by a device that is
//!    enrolled and not revoked at that point of the log.
//! 4. Enrolling needs a certificate signed by the root key, for a device
//!    never enrolled before, and, once a vault key exists, the current vault
//!    key wrapped to the new device.
//! 5. Revoking needs a revocation signed by the root key, for a device that
//!    is enrolled and not yet revoked.
//! 6. A vault rotation is generation `current + 1` and wraps the new key to
//!    exactly the set of active devices.

use std::collections::{BTreeMap, BTreeSet};

use crate::blob_id::BlobId;
use crate::envelope::SignedRecord;
use crate::error::{DecodeError, VerifyError};
use crate::fields::{DeviceName, Timestamp};
use crate::keys::{VerifyingKey, X25519PublicKey};
use crate::kind::RecordKind;
use crate::records::{
    DeviceCertificate, IdentityLogEntry, LogAction, MAX_ACTIVE_DEVICES, RelayRef, Revocation,
};

/// An enrolled device as the log describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The device's Ed25519 key.
    pub key: VerifyingKey,
    /// The device's X25519 key.
    pub x25519: X25519PublicKey,
    /// Its name.
    pub name: DeviceName,
    /// When its certificate was made.
    pub created: Timestamp,
    /// The log entry that enrolled it.
    pub enrolled_at: u64,
}

/// The current vault key, as far as public information goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaultKeyInfo {
    /// Its generation, from 1.
    pub generation: u32,
    /// Its public half, the recipient new data is sealed to.
    pub recipient: X25519PublicKey,
}

/// The state a valid identity log leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityState {
    root: VerifyingKey,
    active: BTreeMap<VerifyingKey, Device>,
    revoked: BTreeSet<VerifyingKey>,
    vault: Option<VaultKeyInfo>,
    vault_needs_rotation: bool,
    preferred_relays: Vec<RelayRef>,
    last_seq: u64,
    head: BlobId,
}

/// Why an identity log was rejected, and at which entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("identity log entry {index}: {kind}")]
pub struct LogError {
    /// Position of the first bad entry in the sequence given (which is also
    /// its `seq` when the chain is intact up to it).
    pub index: u64,
    /// What is wrong with it.
    pub kind: LogErrorKind,
}

/// What is wrong with an identity-log entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogErrorKind {
    /// The log has no entries.
    #[error("the log is empty")]
    Empty,
    /// The bytes are not a canonical envelope or entry.
    #[error("malformed: {0}")]
    Malformed(DecodeError),
    /// The entry's action is one this version of the protocol does not define.
    #[error("unknown action kind {tag}")]
    UnknownKind {
        /// The action tag found.
        tag: u8,
    },
    /// The envelope holds another kind of record.
    #[error("not an identity log entry but a {found} record")]
    NotALogEntry {
        /// The kind found.
        found: RecordKind,
    },
    /// The entry's signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The entry's number is not the next one.
    #[error("sequence gap: expected {expected}, found {found}")]
    SequenceGap {
        /// The number the entry should have.
        expected: u64,
        /// The number it has.
        found: u64,
    },
    /// The entry's `prev` is not the id of the previous entry.
    #[error("broken chain: prev does not match the previous entry")]
    BrokenChain,
    /// Signed by a key that is neither the root nor an enrolled device.
    #[error("signed by {0}, which is neither the root nor an enrolled device")]
    UnknownSigner(VerifyingKey),
    /// Signed by a device that an earlier entry revoked.
    #[error("signed by revoked device {0}")]
    RevokedSigner(VerifyingKey),
    /// Entry 0 must be signed by the root and enroll a device.
    #[error("entry 0 must be signed by the root key and enroll a device")]
    BadGenesis,
    /// A nested certificate or revocation does not verify.
    #[error("nested {what} does not verify: {error}")]
    BadNestedRecord {
        /// Which nested record.
        what: &'static str,
        /// Why.
        error: VerifyError,
    },
    /// A nested certificate or revocation is signed by a key other than root.
    #[error("nested {what} is not signed by the root key")]
    NotSignedByRoot {
        /// Which nested record.
        what: &'static str,
    },
    /// The certificate is for the root key itself.
    #[error("the root key cannot be enrolled as a device")]
    RootAsDevice,
    /// The device is already enrolled.
    #[error("device {0} is already enrolled")]
    AlreadyEnrolled(VerifyingKey),
    /// The device was revoked and cannot come back.
    #[error("device {0} was revoked and cannot be enrolled again")]
    WasRevoked(VerifyingKey),
    /// The revocation names a device that is not enrolled.
    #[error("device {0} is not enrolled")]
    NotEnrolled(VerifyingKey),
    /// Enrolling would exceed the device limit.
    #[error("more than {MAX_ACTIVE_DEVICES} active devices")]
    TooManyDevices,
    /// A vault key has the wrong generation.
    #[error("vault generation {found}, expected {expected}")]
    VaultGeneration {
        /// The generation the entry should carry.
        expected: u32,
        /// The generation it carries.
        found: u32,
    },
    /// An enrollment lacks the current vault key, or carries one when the
    /// identity has none yet.
    #[error("enrollment must carry the current vault key exactly when one exists")]
    VaultKeyPresence,
    /// A rotation does not wrap the new key to exactly the active devices.
    #[error("rotation must wrap the new vault key to exactly the active devices")]
    WrappedKeysMismatch,
    /// A vault-key rotation signed by a device rather than the root key
    /// (revision 2): a device could otherwise hand every other device
    /// wrapped keys that do not open, or a vault key it chose.
    #[error("a vault-key rotation must be signed by the root key")]
    RotationNotByRoot,
}

impl IdentityState {
    /// The root key.
    pub fn root(&self) -> &VerifyingKey {
        &self.root
    }

    /// Enrolled, unrevoked devices by key.
    pub fn devices(&self) -> &BTreeMap<VerifyingKey, Device> {
        &self.active
    }

    /// Whether `key` is an enrolled, unrevoked device.
    pub fn is_active(&self, key: &VerifyingKey) -> bool {
        self.active.contains_key(key)
    }

    /// Every revoked device key.
    pub fn revoked(&self) -> &BTreeSet<VerifyingKey> {
        &self.revoked
    }

    /// Whether `key` was revoked.
    pub fn is_revoked(&self, key: &VerifyingKey) -> bool {
        self.revoked.contains(key)
    }

    /// The current vault key, if one was created.
    pub fn vault(&self) -> Option<&VaultKeyInfo> {
        self.vault.as_ref()
    }

    /// True when a device was revoked after the last vault rotation: the
    /// revoked device still holds the current vault key, so nothing new may be
    /// sealed to it until a rotation is appended.
    pub fn vault_needs_rotation(&self) -> bool {
        self.vault_needs_rotation
    }

    /// The relays the identity's devices should use, in order of preference.
    pub fn preferred_relays(&self) -> &[RelayRef] {
        &self.preferred_relays
    }

    /// `seq` of the newest entry.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Id of the newest entry's envelope: the `prev` of the next entry.
    pub fn head(&self) -> BlobId {
        self.head
    }

    /// Verifies the entry whose envelope is `bytes` as the next entry of this
    /// log and applies it. On error the state is unchanged.
    ///
    /// # Errors
    ///
    /// [`LogErrorKind`] naming the first rule the entry breaks.
    pub fn apply(&mut self, bytes: &[u8]) -> Result<(), LogErrorKind> {
        let (entry, signer) = open_entry(bytes)?;
        let expected = self.last_seq + 1;
        if entry.seq != expected {
            return Err(LogErrorKind::SequenceGap {
                expected,
                found: entry.seq,
            });
        }
        if entry.prev != Some(self.head) {
            return Err(LogErrorKind::BrokenChain);
        }
        if signer != self.root && !self.active.contains_key(&signer) {
            return Err(if self.revoked.contains(&signer) {
                LogErrorKind::RevokedSigner(signer)
            } else {
                LogErrorKind::UnknownSigner(signer)
            });
        }
        if matches!(entry.action, LogAction::RotateVaultKey { .. }) && signer != self.root {
            return Err(LogErrorKind::RotationNotByRoot);
        }
        let mut next = self.clone();
        next.act(entry.seq, entry.action)?;
        next.last_seq = entry.seq;
        next.head = BlobId::of(bytes);
        *self = next;
        Ok(())
    }

    fn genesis(root: &VerifyingKey, bytes: &[u8]) -> Result<Self, LogErrorKind> {
        let (entry, signer) = open_entry(bytes)?;
        if entry.seq != 0 {
            return Err(LogErrorKind::SequenceGap {
                expected: 0,
                found: entry.seq,
            });
        }
        if signer != *root || !matches!(entry.action, LogAction::AddDevice { .. }) {
            return Err(LogErrorKind::BadGenesis);
        }
        let mut state = Self {
            root: *root,
            active: BTreeMap::new(),
            revoked: BTreeSet::new(),
            vault: None,
            vault_needs_rotation: false,
            preferred_relays: Vec::new(),
            last_seq: 0,
            head: BlobId::of(bytes),
        };
        state.act(0, entry.action)?;
        Ok(state)
    }

    fn act(&mut self, seq: u64, action: LogAction) -> Result<(), LogErrorKind> {
        match action {
            LogAction::AddDevice {
                certificate,
                vault_key,
            } => {
                let cert: DeviceCertificate = self.root_signed(&certificate, "certificate")?;
                let key = cert.device;
                if key == self.root {
                    return Err(LogErrorKind::RootAsDevice);
                }
                if self.active.contains_key(&key) {
                    return Err(LogErrorKind::AlreadyEnrolled(key));
                }
                if self.revoked.contains(&key) {
                    return Err(LogErrorKind::WasRevoked(key));
                }
                if self.active.len() >= MAX_ACTIVE_DEVICES {
                    return Err(LogErrorKind::TooManyDevices);
                }
                match (&self.vault, &vault_key) {
                    (None, None) => {}
                    (Some(vault), Some(wrapped)) if vault.generation == wrapped.generation => {}
                    (Some(vault), Some(wrapped)) => {
                        return Err(LogErrorKind::VaultGeneration {
                            expected: vault.generation,
                            found: wrapped.generation,
                        });
                    }
                    _ => return Err(LogErrorKind::VaultKeyPresence),
                }
                self.active.insert(
                    key,
                    Device {
                        key,
                        x25519: cert.x25519,
                        name: cert.name,
                        created: cert.created,
                        enrolled_at: seq,
                    },
                );
            }
            LogAction::RevokeDevice { revocation } => {
                let revocation: Revocation = self.root_signed(&revocation, "revocation")?;
                let key = revocation.device;
                if self.active.remove(&key).is_none() {
                    return Err(LogErrorKind::NotEnrolled(key));
                }
                self.revoked.insert(key);
                self.vault_needs_rotation = self.vault.is_some();
            }
            LogAction::RotateVaultKey {
                generation,
                recipient,
                wrapped,
                previous: _,
            } => {
                let expected = self.vault.map_or(1, |v| v.generation.saturating_add(1));
                if generation != expected {
                    return Err(LogErrorKind::VaultGeneration {
                        expected,
                        found: generation,
                    });
                }
                // Both sides are sorted and duplicate-free (the decoder
                // guarantees it for `wrapped`), so comparing in order is
                // comparing the sets.
                if !wrapped.iter().map(|w| &w.device).eq(self.active.keys()) {
                    return Err(LogErrorKind::WrappedKeysMismatch);
                }
                self.vault = Some(VaultKeyInfo {
                    generation,
                    recipient,
                });
                self.vault_needs_rotation = false;
            }
            LogAction::SetPreferredRelays { relays } => {
                self.preferred_relays = relays;
            }
        }
        Ok(())
    }

    fn root_signed<R: crate::envelope::Record>(
        &self,
        record: &SignedRecord,
        what: &'static str,
    ) -> Result<R, LogErrorKind> {
        let verified = record
            .verify::<R>()
            .map_err(|error| LogErrorKind::BadNestedRecord { what, error })?;
        if *verified.signer() != self.root {
            return Err(LogErrorKind::NotSignedByRoot { what });
        }
        Ok(verified.into_record())
    }
}

/// Decodes an entry envelope and checks its signature.
fn open_entry(bytes: &[u8]) -> Result<(IdentityLogEntry, VerifyingKey), LogErrorKind> {
    let envelope = SignedRecord::from_bytes(bytes).map_err(LogErrorKind::Malformed)?;
    match envelope.verify::<IdentityLogEntry>() {
        Ok(verified) => {
            let signer = *verified.signer();
            Ok((verified.into_record(), signer))
        }
        Err(VerifyError::WrongKind { found, .. }) => Err(LogErrorKind::NotALogEntry { found }),
        // A log entry has no signer rules of its own; these only come from
        // an owned head, listed so that a new rule is a compile error here.
        Err(
            VerifyError::BadSignature
            | VerifyError::SignerMismatch
            | VerifyError::BadGrant
            | VerifyError::NotOwnSlot,
        ) => Err(LogErrorKind::BadSignature),
        Err(VerifyError::Payload(DecodeError::UnknownTag {
            field: "identity log action",
            tag,
        })) => Err(LogErrorKind::UnknownKind { tag }),
        Err(VerifyError::Payload(e)) => Err(LogErrorKind::Malformed(e)),
    }
}

/// Verifies a whole identity log against `root` and returns the state it
/// leads to.
///
/// `entries` are the envelope bytes of each entry in order, exactly as
/// stored; the chain is checked over those bytes.
///
/// # Errors
///
/// [`LogError`] naming the first bad entry and what is wrong with it.
pub fn verify_identity_log<I, B>(root: &VerifyingKey, entries: I) -> Result<IdentityState, LogError>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut entries = entries.into_iter();
    let first = entries.next().ok_or(LogError {
        index: 0,
        kind: LogErrorKind::Empty,
    })?;
    let mut state =
        IdentityState::genesis(root, first.as_ref()).map_err(|kind| LogError { index: 0, kind })?;
    for (index, bytes) in (1..).zip(entries) {
        state
            .apply(bytes.as_ref())
            .map_err(|kind| LogError { index, kind })?;
    }
    Ok(state)
}
