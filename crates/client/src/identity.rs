//! This device's copy of the identity log: loading, verifying, appending,
//! and recovering the vault keys it grants this device.

use std::collections::BTreeMap;

use cairn_proto::{
    BlobId, DeviceCertificate, DeviceName, IdentityLogEntry, IdentityState, LogAction,
    SignedRecord, SigningKey, Timestamp, VerifyingKey, WrappedSecret, verify_identity_log,
};

use crate::error::{Error, Result, io_at};
use crate::home::{Home, write_private};
use crate::keys::{DeviceKeys, VaultKey};

/// Longest entry accepted from disk (an envelope's limit).
const MAX_ENTRY: usize = cairn_proto::MAX_ENVELOPE_LEN;

/// What a sealed identity log starts with, once opened.
const SEALED_LOG_MAGIC: &[u8] = b"cairn/v3 identity log\0";

/// The largest opened identity log (about 20,000 entries).
pub(crate) const MAX_SEALED_LOG: usize = 8 << 20;

/// Why a sealed identity log was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealedLogError {
    /// None of this device's vault keys opens it.
    #[error("it does not open with the keys of any vault generation this device holds")]
    Closed,
    /// It opens, and is not a list of entries.
    #[error("it opens, and is not an identity log")]
    Malformed,
    /// Its entries are not a valid log of this identity.
    #[error("its entries are not a valid log of this identity: {0}")]
    Invalid(String),
}

fn len_u32(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::Invalid("identity log too large".into()))
}

/// The plaintext of a log copy: the magic, the entry count, and each
/// entry with its length.
fn join_sealed_log(entries: &[Vec<u8>]) -> Result<Vec<u8>> {
    let mut plain = Vec::with_capacity(
        SEALED_LOG_MAGIC.len() + 4 + entries.iter().map(|e| e.len() + 4).sum::<usize>(),
    );
    plain.extend_from_slice(SEALED_LOG_MAGIC);
    plain.extend_from_slice(&len_u32(entries.len())?.to_be_bytes());
    for entry in entries {
        plain.extend_from_slice(&len_u32(entry.len())?.to_be_bytes());
        plain.extend_from_slice(entry);
    }
    Ok(plain)
}

/// The entries of an opened sealed log, or `None` if it is not one.
fn split_sealed_log(plain: &[u8]) -> Option<Vec<Vec<u8>>> {
    let rest = plain.strip_prefix(SEALED_LOG_MAGIC)?;
    let (count, mut rest) = rest.split_first_chunk::<4>()?;
    let count = u32::from_be_bytes(*count);
    let mut entries = Vec::new();
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len > MAX_ENTRY {
            return None;
        }
        let (entry, tail) = tail.split_at_checked(len)?;
        entries.push(entry.to_vec());
        rest = tail;
    }
    rest.is_empty().then_some(entries)
}

/// Fuzzing entry (`fuzz/`): `data` as the plaintext inside an identity-log
/// copy a relay serves. Parsing and verifying it never panics, a log that
/// opens seals back to a copy that opens to the same entries, and the same
/// bytes as a copy do not open without the key.
#[doc(hidden)]
pub fn fuzz_log_copy(data: &[u8]) {
    let root = SigningKey::from_seed(&[1; 32]).verifying_key();
    let key = zeroize::Zeroizing::new([7u8; 32]);
    let keys = std::slice::from_ref(&key);
    assert!(
        IdentityLog::open_copy(&root, data, keys).is_err(),
        "bytes nobody sealed opened"
    );
    let nonce = [0u8; 12];
    let mut copy = nonce.to_vec();
    copy.extend_from_slice(&crate::seal::seal_small(&key, &nonce, data));
    if let Ok(log) = IdentityLog::open_copy(&root, &copy, keys) {
        let (_, again) = log.seal_copy(&key).expect("a log that opened seals");
        let reopened = IdentityLog::open_copy(&root, &again, keys).expect("own copy opens");
        assert_eq!(
            reopened.entries(),
            log.entries(),
            "round trip changed the log"
        );
    }
}

/// A verified identity log.
#[derive(Debug)]
pub struct IdentityLog {
    entries: Vec<Vec<u8>>,
    state: IdentityState,
    /// The vault keys one device last unwrapped from these entries.
    /// Unwrapping verifies every entry and does an X25519 agreement per
    /// generation, and a folder pass asks for the keys once per upload and
    /// relay: measured at most of its CPU before they were kept.
    unwrapped: std::sync::Mutex<Option<(VerifyingKey, Vec<VaultKey>)>>,
}

impl Clone for IdentityLog {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            state: self.state.clone(),
            unwrapped: std::sync::Mutex::new(None),
        }
    }
}

impl IdentityLog {
    /// Verifies `entries` (envelope bytes, in order) against `root`.
    pub fn verify(root: &VerifyingKey, entries: Vec<Vec<u8>>) -> Result<Self> {
        let state = verify_identity_log(root, entries.iter())?;
        Ok(Self {
            entries,
            state,
            unwrapped: std::sync::Mutex::new(None),
        })
    }

    /// Starts a log: enrolls the first device (its certificate created
    /// `now`) and creates vault generation 1.
    pub(crate) fn genesis(
        root: &SigningKey,
        device: &DeviceKeys,
        name: &DeviceName,
        now: Timestamp,
    ) -> Result<Self> {
        let certificate = certify(root, device, name, now)?;
        let first = sign_entry(
            root,
            IdentityLogEntry {
                seq: 0,
                prev: None,
                action: LogAction::AddDevice {
                    certificate,
                    vault_key: None,
                },
            },
        )?;
        let mut log = Self::verify(&root.verifying_key(), vec![first])?;
        let vault = VaultKey::derive(root, 1);
        log.append(
            root,
            LogAction::RotateVaultKey {
                generation: 1,
                recipient: vault.secret.public(),
                wrapped: vec![cairn_proto::DeviceWrappedKey {
                    device: device.signing.verifying_key(),
                    secret: vault.wrap_to(&device.x25519.public())?,
                }],
                previous: None,
            },
        )?;
        Ok(log)
    }

    /// The state the log leads to.
    pub fn state(&self) -> &IdentityState {
        &self.state
    }

    /// The position of the entry whose envelope is blob `id`, if the log
    /// holds it.
    pub fn position_of(&self, id: &cairn_proto::BlobId) -> Option<u64> {
        self.entries
            .iter()
            .position(|entry| cairn_proto::BlobId::of(entry) == *id)
            .and_then(|i| u64::try_from(i).ok())
    }

    /// The entries' envelope bytes, in order.
    pub fn entries(&self) -> &[Vec<u8>] {
        &self.entries
    }

    /// The copy of the whole log the per-relay layout stores on one relay
    /// (PROTOCOL.md §10.7): padded, and sealed with that relay's
    /// `copy_key` ([`crate::keys::VaultKey::log_copy_key`]). Sealing is
    /// deterministic, so the same log makes the same copy on a relay (an
    /// unchanged log republished is the same blob and head), and every
    /// relay's copy differs.
    pub(crate) fn seal_copy(&self, copy_key: &[u8; 32]) -> Result<(BlobId, Vec<u8>)> {
        let plain = join_sealed_log(&self.entries)?;
        if plain.len() > MAX_SEALED_LOG {
            return Err(Error::Invalid(format!(
                "the identity log is {} bytes, more than the {MAX_SEALED_LOG} a relay copy may be",
                plain.len()
            )));
        }
        // The newest entry names the whole log.
        let copy = crate::seal::seal_named(copy_key, self.state.head().as_bytes(), &plain);
        Ok((BlobId::of(&copy), copy))
    }

    /// Opens a copy made by [`IdentityLog::seal_copy`] with any of
    /// `copy_keys` and verifies it against `root`.
    pub(crate) fn open_copy(
        root: &VerifyingKey,
        copy: &[u8],
        copy_keys: &[zeroize::Zeroizing<[u8; 32]>],
    ) -> std::result::Result<Self, SealedLogError> {
        let plain = crate::seal::open_named(copy_keys, copy).ok_or(SealedLogError::Closed)?;
        let entries = split_sealed_log(&plain).ok_or(SealedLogError::Malformed)?;
        Self::verify(root, entries).map_err(|err| SealedLogError::Invalid(err.to_string()))
    }

    /// Appends an entry signed by `signer`, refusing (and leaving the log as
    /// it was) anything the identity-log rules refuse.
    pub(crate) fn append(&mut self, signer: &SigningKey, action: LogAction) -> Result<BlobId> {
        let entry = IdentityLogEntry {
            seq: self.state.last_seq() + 1,
            prev: Some(self.state.head()),
            action,
        };
        let bytes = sign_entry(signer, entry)?;
        let mut state = self.state.clone();
        state.apply(&bytes).map_err(|kind| {
            Error::Log(cairn_proto::LogError {
                index: self.entries.len() as u64,
                kind,
            })
        })?;
        let id = BlobId::of(&bytes);
        self.entries.push(bytes);
        self.state = state;
        // A rotation may have added a key.
        self.unwrapped = std::sync::Mutex::new(None);
        Ok(id)
    }

    /// Reads `HOME/identity.log` and verifies it against `root`.
    pub(crate) fn load(home: &Home, root: &VerifyingKey) -> Result<Self> {
        let path = home.identity_log();
        let bytes = std::fs::read(&path).map_err(io_at(&path))?;
        let damaged = |reason: &str| Error::Damaged {
            path: path.clone(),
            reason: reason.into(),
        };
        let mut entries = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| damaged("truncated length"))?;
            let len = u32::from_be_bytes(*len) as usize;
            if len > MAX_ENTRY || len > tail.len() {
                return Err(damaged("truncated entry"));
            }
            entries.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        Self::verify(root, entries)
    }

    /// Writes the log to `HOME/identity.log`.
    pub(crate) fn save(&self, home: &Home) -> Result<()> {
        let mut out = Vec::new();
        for entry in &self.entries {
            let len = u32::try_from(entry.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(entry);
        }
        write_private(&home.identity_log(), &out)
    }

    /// When `device` was revoked, if it was.
    pub fn revoked_at(&self, device: &cairn_proto::VerifyingKey) -> Option<Timestamp> {
        self.entries
            .iter()
            .find_map(|bytes| match decode_entry(bytes).ok()?.action {
                LogAction::RevokeDevice { revocation } => {
                    let revocation = revocation.verify::<cairn_proto::Revocation>().ok()?;
                    (revocation.device == *device).then_some(revocation.revoked_at)
                }
                _ => None,
            })
    }

    /// Every vault key generation this device can reach, oldest first.
    ///
    /// The device unwraps the newest generation wrapped to it (by its
    /// enrollment or a later rotation), then walks back through each
    /// rotation's `previous` link.
    pub fn vault_keys(&self, device: &DeviceKeys) -> Result<Vec<VaultKey>> {
        let me = device.signing.verifying_key();
        if let Ok(kept) = self.unwrapped.lock()
            && let Some((device, keys)) = kept.as_ref()
            && *device == me
        {
            return Ok(keys.clone());
        }
        let keys = self.unwrap_vault_keys(device)?;
        if let Ok(mut kept) = self.unwrapped.lock() {
            *kept = Some((me, keys.clone()));
        }
        Ok(keys)
    }

    /// [`IdentityLog::vault_keys`], from the entries.
    fn unwrap_vault_keys(&self, device: &DeviceKeys) -> Result<Vec<VaultKey>> {
        let me = device.signing.verifying_key();
        let mut newest: Option<VaultKey> = None;
        let mut previous: BTreeMap<u32, WrappedSecret> = BTreeMap::new();
        for bytes in &self.entries {
            let entry = decode_entry(bytes)?;
            match entry.action {
                LogAction::AddDevice {
                    certificate,
                    vault_key: Some(wrapped),
                } => {
                    let cert = certificate.verify::<DeviceCertificate>().ok();
                    if cert.is_some_and(|c| c.device == me) {
                        newest = Some(VaultKey::unwrap(
                            wrapped.generation,
                            &wrapped.secret,
                            &device.x25519,
                        )?);
                    }
                }
                LogAction::RotateVaultKey {
                    generation,
                    wrapped,
                    previous: prev,
                    ..
                } => {
                    if let Some(prev) = prev {
                        previous.insert(generation, prev);
                    }
                    if let Some(mine) = wrapped.iter().find(|w| w.device == me) {
                        newest = Some(VaultKey::unwrap(generation, &mine.secret, &device.x25519)?);
                    }
                }
                _ => {}
            }
        }
        let mut keys = Vec::new();
        let mut current = newest;
        while let Some(key) = current {
            current = match previous.get(&key.generation) {
                Some(wrapped) => Some(VaultKey::unwrap(key.generation - 1, wrapped, &key.secret)?),
                None => None,
            };
            keys.push(key);
        }
        keys.reverse();
        Ok(keys)
    }
}

/// A root-signed certificate for `device`, created `now`.
pub(crate) fn certify(
    root: &SigningKey,
    device: &DeviceKeys,
    name: &DeviceName,
    now: Timestamp,
) -> Result<SignedRecord> {
    let cert = DeviceCertificate {
        device: device.signing.verifying_key(),
        x25519: device.x25519.public(),
        name: name.clone(),
        created: now,
    };
    SignedRecord::sign(&cert, root).map_err(|err| Error::Invalid(format!("certificate: {err}")))
}

fn sign_entry(signer: &SigningKey, entry: IdentityLogEntry) -> Result<Vec<u8>> {
    SignedRecord::sign(&entry, signer)
        .map(|record| record.to_bytes())
        .map_err(|err| Error::Invalid(format!("identity log entry: {err}")))
}

fn decode_entry(bytes: &[u8]) -> Result<IdentityLogEntry> {
    SignedRecord::from_bytes(bytes)
        .ok()
        .and_then(|record| record.verify::<IdentityLogEntry>().ok())
        .map(cairn_proto::Verified::into_record)
        .ok_or_else(|| Error::Invalid("identity log entry does not decode".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    fn genesis() -> (SigningKey, IdentityLog) {
        let root = SigningKey::from_seed(&[3; 32]);
        let device = DeviceKeys::generate().unwrap();
        let name = DeviceName::new("laptop").unwrap();
        let log = IdentityLog::genesis(&root, &device, &name, Timestamp(1)).unwrap();
        (root, log)
    }

    #[test]
    fn a_copy_opens_with_its_key_alone_and_is_the_same_each_time() {
        let (root, log) = genesis();
        let key = zeroize::Zeroizing::new([9u8; 32]);
        let (id, copy) = log.seal_copy(&key).unwrap();
        assert_eq!(log.seal_copy(&key).unwrap().0, id, "deterministic per key");
        assert_ne!(log.seal_copy(&[8; 32]).unwrap().0, id, "differs per key");
        let opened =
            IdentityLog::open_copy(&root.verifying_key(), &copy, std::slice::from_ref(&key))
                .unwrap();
        assert_eq!(opened.entries(), log.entries());
        let wrong = zeroize::Zeroizing::new([8u8; 32]);
        assert!(matches!(
            IdentityLog::open_copy(&root.verifying_key(), &copy, &[wrong]),
            Err(SealedLogError::Closed)
        ));
        let mut flipped = copy.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            IdentityLog::open_copy(&root.verifying_key(), &flipped, std::slice::from_ref(&key)),
            Err(SealedLogError::Closed)
        ));
        let other_root = SigningKey::from_seed(&[4; 32]).verifying_key();
        assert!(matches!(
            IdentityLog::open_copy(&other_root, &copy, &[key]),
            Err(SealedLogError::Invalid(_))
        ));
    }

    proptest! {
        #[test]
        fn the_plaintext_splits_back_into_its_entries(
            entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let plain = join_sealed_log(&entries).unwrap();
            prop_assert_eq!(split_sealed_log(&plain), Some(entries.clone()));
            // Every shorter prefix, and anything appended, is refused.
            let cut = cut.index(plain.len());
            prop_assert_eq!(split_sealed_log(&plain[..cut]), None);
            let mut longer = plain.clone();
            longer.extend_from_slice(&tail);
            prop_assert_eq!(split_sealed_log(&longer), None);
        }
    }
}
