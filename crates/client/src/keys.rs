//! The client's keys and everything derived from them.
//!
//! - The **root key** (Ed25519) is the identity. It certifies and revokes
//!   devices, and every vault key is derived from it, so the 24-word
//!   recovery phrase that encodes it brings back all data even when every
//!   device is lost.
//! - A **device** has an Ed25519 signing key and an X25519 key that vault
//!   keys are wrapped to.
//! - A **vault key** (generation 1, 2, …) is an X25519 age identity shared
//!   by the active devices; blobs are sealed to the current one.
//! - A **mailbox key** per vault generation and relay names the mailbox
//!   where the identity's heads live on that relay. Only holders of the
//!   vault key can derive it, so relays can check head writes without
//!   learning whose they are, no two relays see the same mailbox, and a
//!   revoked device, which never learns the next generation, cannot write
//!   to the next mailbox.
//! - A device signs its heads there with its key **blinded** for that
//!   mailbox: holders of the vault key can tell which device wrote, the
//!   relay cannot.
//! - An **owner key** per vault generation and relay owns everything the
//!   identity stores on that relay, whichever device stored it.
//! - Identities of earlier releases (the shared layout, `crate::layout`)
//!   use one mailbox key per generation on every relay, and an **upload
//!   key** per (device, relay) as the owner.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::str::FromStr as _;

use bech32::{FromBase32 as _, ToBase32 as _, Variant};
use cairn_proto::{BlindingFactor, SigningKey, VerifyingKey, WrappedSecret, X25519PublicKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

const AGE_SECRET_HRP: &str = "age-secret-key-";
const AGE_PUBLIC_HRP: &str = "age";

/// An X25519 secret usable as an age identity.
#[derive(Clone)]
pub struct X25519Secret(Zeroizing<[u8; 32]>);

impl X25519Secret {
    /// Fresh random key.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *bytes)
            .map_err(|err| Error::Invalid(format!("no randomness from the OS: {err}")))?;
        Ok(Self(bytes))
    }

    /// The key with these 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in age's text form, `AGE-SECRET-KEY-1…`, which the `age` tool
    /// reads as an identity file line.
    pub fn to_age_string(&self) -> Zeroizing<String> {
        let encoded = bech32::encode(AGE_SECRET_HRP, self.0.to_base32(), Variant::Bech32)
            .map(|text| text.to_uppercase())
            .unwrap_or_default();
        Zeroizing::new(encoded)
    }

    /// Parses `AGE-SECRET-KEY-1…`.
    pub fn from_age_string(text: &str) -> Result<Self> {
        let bad = || Error::Invalid("not an age X25519 secret key".into());
        let (hrp, data, variant) = bech32::decode(text.trim()).map_err(|_| bad())?;
        if hrp != AGE_SECRET_HRP || variant != Variant::Bech32 {
            return Err(bad());
        }
        let bytes = Zeroizing::new(Vec::<u8>::from_base32(&data).map_err(|_| bad())?);
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
        Ok(Self::from_bytes(array))
    }

    /// The age identity, for decrypting.
    pub(crate) fn identity(&self) -> age::x25519::Identity {
        // Text is the only constructor age offers for a given secret.
        #[allow(
            clippy::expect_used,
            reason = "we produced the text from 32 valid bytes"
        )]
        age::x25519::Identity::from_str(&self.to_age_string())
            .expect("a bech32 encoding of 32 bytes is an age identity")
    }

    /// The public half.
    pub fn public(&self) -> X25519PublicKey {
        recipient_bytes(&self.identity().to_public())
    }
}

impl fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X25519Secret({})", self.public())
    }
}

/// The raw bytes of an age X25519 recipient.
fn recipient_bytes(recipient: &age::x25519::Recipient) -> X25519PublicKey {
    let text = recipient.to_string();
    let bytes = bech32::decode(&text)
        .ok()
        .and_then(|(_, data, _)| Vec::<u8>::from_base32(&data).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .unwrap_or([0; 32]);
    X25519PublicKey::from_bytes(bytes)
}

/// The age recipient for raw X25519 public-key bytes.
pub fn age_recipient(key: &X25519PublicKey) -> age::x25519::Recipient {
    let text = bech32::encode(AGE_PUBLIC_HRP, key.to_bytes().to_base32(), Variant::Bech32)
        .unwrap_or_default();
    #[allow(clippy::expect_used, reason = "any 32 bytes are an X25519 public key")]
    age::x25519::Recipient::from_str(&text).expect("a bech32 encoding of 32 bytes is a recipient")
}

/// The age text form of a recipient, `age1…`, as `age -r` takes it.
pub fn age_recipient_string(key: &X25519PublicKey) -> String {
    age_recipient(key).to_string()
}

/// This device's secret keys.
#[derive(Clone)]
pub struct DeviceKeys {
    /// Signs identity-log entries and, through derived keys, uploads.
    pub signing: SigningKey,
    /// Vault keys are wrapped to its public half.
    pub x25519: X25519Secret,
}

impl DeviceKeys {
    /// Fresh random device keys.
    pub fn generate() -> Result<Self> {
        let seed = X25519Secret::generate()?;
        Ok(Self {
            signing: SigningKey::from_seed(seed.as_bytes()),
            x25519: X25519Secret::generate()?,
        })
    }

    /// The key that owns what this device stores on the relay with key
    /// `relay`.
    pub fn upload_key(&self, relay: &VerifyingKey) -> SigningKey {
        let mut input = Zeroizing::new(Vec::with_capacity(64));
        input.extend_from_slice(&self.signing.to_seed());
        input.extend_from_slice(&relay.to_bytes());
        SigningKey::from_seed(&blake3::derive_key("cairn/v1 upload key", &input))
    }
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKeys({})", self.signing.verifying_key())
    }
}

/// One generation of the vault key.
#[derive(Clone, Debug)]
pub struct VaultKey {
    /// Its generation, from 1.
    pub generation: u32,
    /// The secret.
    pub secret: X25519Secret,
}

impl VaultKey {
    /// Generation `generation` of the vault key of `root`.
    pub fn derive(root: &SigningKey, generation: u32) -> Self {
        let mut input = Zeroizing::new(Vec::with_capacity(36));
        input.extend_from_slice(&root.to_seed());
        input.extend_from_slice(&generation.to_be_bytes());
        Self {
            generation,
            secret: X25519Secret::from_bytes(blake3::derive_key("cairn/v1 vault key", &input)),
        }
    }

    /// The secret this generation shares with the relay whose key is
    /// `relay` alone: everything the identity names on that relay is
    /// derived from it, so no two relays see a common name.
    fn relay_secret(&self, relay: &VerifyingKey) -> Zeroizing<[u8; 32]> {
        let mut input = Zeroizing::new([0u8; 64]);
        input[..32].copy_from_slice(self.secret.as_bytes());
        input[32..].copy_from_slice(&relay.to_bytes());
        Zeroizing::new(blake3::derive_key("cairn/v3 relay secret", &*input))
    }

    /// This generation's mailbox key on the relay with key `relay`
    /// (per-relay layout, PROTOCOL.md §10.7).
    pub fn mailbox_at(&self, relay: &VerifyingKey) -> SigningKey {
        SigningKey::from_seed(&blake3::derive_key(
            "cairn/v3 mailbox",
            &*self.relay_secret(relay),
        ))
    }

    /// The key the identity log's copy on the relay with key `relay` is
    /// sealed with (per-relay layout): only holders of this vault key open
    /// it, and each relay's copy differs.
    pub fn log_copy_key(&self, relay: &VerifyingKey) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(
            "cairn/v3 identity log copy",
            &*self.relay_secret(relay),
        ))
    }

    /// The key this generation's metadata copies on the relay with key
    /// `relay` are sealed with (per-relay layout, `crate::relay_copy`):
    /// operations and snapshots get another id on every relay.
    pub fn metadata_copy_key(&self, relay: &VerifyingKey) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(
            "cairn/v3 metadata copy",
            &*self.relay_secret(relay),
        ))
    }

    /// The key of this generation's chunker (`crate::chunking`): the same
    /// on every device, so a file chunked anywhere is cut the same way,
    /// and unknown outside the identity, so chunk sizes fingerprint
    /// nothing (PROTOCOL.md §10.8).
    pub fn chunking_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(
            "cairn/v1 chunking",
            self.secret.as_bytes(),
        ))
    }

    /// The key of this generation's keyed chunk hashes
    /// (`crate::manifest::chunk_key_hash`), which deduplication compares.
    pub fn chunk_id_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(
            "cairn/v1 chunk id",
            self.secret.as_bytes(),
        ))
    }

    /// The key that owns, on the relay with key `relay`, every copy the
    /// identity's devices store there in this generation: one pseudonymous
    /// owner per identity, relay and generation (per-relay layout).
    pub fn owner_at(&self, relay: &VerifyingKey) -> SigningKey {
        SigningKey::from_seed(&blake3::derive_key(
            "cairn/v3 owner",
            &*self.relay_secret(relay),
        ))
    }

    /// The factor that blinds `device`'s key into its writer key in
    /// `mailbox` (per-relay layout): holders of this vault key can tell
    /// which device wrote a head; the relay cannot, and only the device
    /// can sign as that writer.
    pub fn writer_factor(&self, mailbox: &VerifyingKey, device: &VerifyingKey) -> BlindingFactor {
        let mut input = Zeroizing::new([0u8; 96]);
        input[..32].copy_from_slice(self.secret.as_bytes());
        input[32..64].copy_from_slice(&mailbox.to_bytes());
        input[64..].copy_from_slice(&device.to_bytes());
        let mut wide = Zeroizing::new([0u8; 64]);
        let mut counter = 0u8;
        loop {
            let mut hasher = blake3::Hasher::new_derive_key("cairn/v3 head writer");
            hasher.update(&*input);
            hasher.update(&[counter]);
            hasher.finalize_xof().fill(&mut *wide);
            // Zero has probability 2^-252; the loop is for correctness.
            if let Some(factor) = BlindingFactor::from_wide(&wide) {
                return factor;
            }
            counter = counter.wrapping_add(1);
        }
    }

    /// The mailbox key of this generation shared by every relay (the
    /// layout before PROTOCOL revision 3).
    pub fn mailbox(&self) -> SigningKey {
        SigningKey::from_seed(&blake3::derive_key(
            "cairn/v1 mailbox",
            self.secret.as_bytes(),
        ))
    }

    /// This key's secret sealed to `recipient` (an age file holding the
    /// `AGE-SECRET-KEY-1…` line), as identity-log entries carry it.
    pub fn wrap_to(&self, recipient: &X25519PublicKey) -> Result<WrappedSecret> {
        wrap_secret(&self.secret, recipient)
    }

    /// Opens a wrapped vault key of generation `generation`.
    pub fn unwrap(generation: u32, wrapped: &WrappedSecret, with: &X25519Secret) -> Result<Self> {
        let identity = with.identity();
        let bad = |why: String| {
            Error::Invalid(format!(
                "vault key generation {generation} does not unwrap: {why}"
            ))
        };
        let decryptor =
            age::Decryptor::new_buffered(wrapped.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as _))
            .map_err(|e| bad(e.to_string()))?;
        let mut text = Zeroizing::new(String::new());
        reader
            .read_to_string(&mut text)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            generation,
            secret: X25519Secret::from_age_string(&text)?,
        })
    }
}

/// Seals an X25519 secret to a recipient as an age file.
pub(crate) fn wrap_secret(secret: &X25519Secret, to: &X25519PublicKey) -> Result<WrappedSecret> {
    let recipient = age_recipient(to);
    let fail = |why: String| Error::Invalid(format!("cannot wrap a key: {why}"));
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
        .map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    let text = secret.to_age_string();
    (|| -> std::io::Result<()> {
        let mut writer = encryptor.wrap_output(&mut out)?;
        writer.write_all(text.as_bytes())?;
        writer.write_all(b"\n")?;
        writer.finish()?;
        Ok(())
    })()
    .map_err(|e| fail(e.to_string()))?;
    WrappedSecret::new(out).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn age_text_forms_round_trip() {
        let secret = X25519Secret::from_bytes([7; 32]);
        let text = secret.to_age_string();
        assert!(text.starts_with("AGE-SECRET-KEY-1"));
        let back = X25519Secret::from_age_string(&text).unwrap();
        assert_eq!(back.as_bytes(), secret.as_bytes());
        let public = secret.public();
        assert_eq!(
            age_recipient_string(&public),
            secret.identity().to_public().to_string()
        );
        assert!(X25519Secret::from_age_string("age1qqqq").is_err());
    }

    #[test]
    fn vault_keys_wrap_and_unwrap() {
        let root = SigningKey::from_seed(&[1; 32]);
        let vault = VaultKey::derive(&root, 3);
        assert_eq!(
            vault.secret.as_bytes(),
            VaultKey::derive(&root, 3).secret.as_bytes()
        );
        assert_ne!(
            vault.secret.as_bytes(),
            VaultKey::derive(&root, 4).secret.as_bytes()
        );
        let device = DeviceKeys::generate().unwrap();
        let wrapped = vault.wrap_to(&device.x25519.public()).unwrap();
        let back = VaultKey::unwrap(3, &wrapped, &device.x25519).unwrap();
        assert_eq!(back.secret.as_bytes(), vault.secret.as_bytes());
        let other = DeviceKeys::generate().unwrap();
        assert!(VaultKey::unwrap(3, &wrapped, &other.x25519).is_err());
    }

    #[test]
    fn upload_keys_differ_per_relay_and_device() {
        let a = DeviceKeys::generate().unwrap();
        let b = DeviceKeys::generate().unwrap();
        let r1 = SigningKey::from_seed(&[1; 32]).verifying_key();
        let r2 = SigningKey::from_seed(&[2; 32]).verifying_key();
        let keys = [
            a.upload_key(&r1).verifying_key(),
            a.upload_key(&r2).verifying_key(),
            b.upload_key(&r1).verifying_key(),
        ];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_eq!(keys[0], a.upload_key(&r1).verifying_key());
    }
}
