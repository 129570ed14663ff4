//! Test helpers for cairn. A dev-dependency only; never shipped.
//!
//! - [`key`]: deterministic keys from a label, so fixtures and vectors are
//!   reproducible.
//! - [`IdentityBuilder`]: writes valid identity logs (and, by editing what it
//!   produces, invalid ones) without going through a client.
//! - [`auth_header`]: a signed `Authorization` header for a relay request.
//! - [`RelayProcess`]: a relay as a child process, to kill with SIGKILL.
//! - [`Rng`]: a deterministic generator for randomized tests.
//! - [`faulty::FaultyRelay`]: a proxy in front of a real relay that
//!   corrupts, drops, forgets, delays, serves stale heads or lies, on demand.

mod cert;
pub mod faulty;
mod process;
mod rng;
mod small_disk;

use std::sync::atomic::{AtomicU64, Ordering};

pub use cert::self_signed_cert;
pub use process::{RelayProcess, arg, rss_bytes, run};
pub use rng::Rng;
pub use small_disk::SmallDisk;

use cairn_proto::{
    AuthToken, BlobId, DeviceCertificate, DeviceName, DeviceWrappedKey, IdentityLogEntry,
    LogAction, Method, Nonce, RelayRef, Revocation, RevocationReason, SignedRecord, SigningKey,
    Timestamp, TokenTarget, VerifyingKey, WrappedKey, WrappedSecret, X25519PublicKey,
};

/// An HTTP client builder for tests and benchmarks.
///
/// Builds in the workspace link reqwest with rustls but no crypto provider
/// (the client crate installs ring itself, MEASURED.md says why); a plain
/// `reqwest::Client::new()` in a process that never installed one panics.
/// This installs ring first.
pub fn http_builder() -> reqwest::ClientBuilder {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// [`http_builder`] with the defaults.
///
/// # Panics
///
/// If the client cannot be built (a test failure).
pub fn http() -> reqwest::Client {
    http_builder().build().expect("building an HTTP client")
}

/// The Ed25519 key whose seed is BLAKE3 in key-derivation mode with the
/// context `"cairn-testkit key"` over `label` (docs/PROTOCOL.md §3.3).
pub fn key(label: &str) -> SigningKey {
    SigningKey::from_seed(&seed(label))
}

/// 32 bytes derived from `label`, for X25519 keys and other fixtures.
pub fn seed(label: &str) -> [u8; 32] {
    blake3::derive_key("cairn-testkit key", label.as_bytes())
}

/// Builds an identity log entry by entry, signing each with the key the
/// caller names. Produces envelope bytes exactly as a client would store
/// them.
#[derive(Debug)]
pub struct IdentityBuilder {
    root: SigningKey,
    entries: Vec<Vec<u8>>,
    generation: u32,
    clock: u64,
}

impl IdentityBuilder {
    /// Starts a log for `root`. Nothing is written until a device is added.
    pub fn new(root: SigningKey) -> Self {
        Self {
            root,
            entries: Vec::new(),
            generation: 0,
            clock: 1_790_000_000,
        }
    }

    /// The root key.
    pub fn root(&self) -> &SigningKey {
        &self.root
    }

    /// Envelope bytes of every entry so far.
    pub fn entries(&self) -> &[Vec<u8>] {
        &self.entries
    }

    /// The vault generation the log has reached.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// A root-signed certificate for `device`, named `name`.
    pub fn certificate(&mut self, device: &SigningKey, name: &str) -> SignedRecord {
        let cert = DeviceCertificate {
            device: device.verifying_key(),
            x25519: x25519_for(device),
            name: DeviceName::new(name).expect("fixture names are valid"),
            created: self.tick(),
        };
        SignedRecord::sign(&cert, &self.root).expect("fixture certificates are valid")
    }

    /// A root-signed revocation of `device`.
    pub fn revocation(&mut self, device: &SigningKey) -> SignedRecord {
        let revocation = Revocation {
            device: device.verifying_key(),
            revoked_at: self.tick(),
            reason: RevocationReason::Retired,
        };
        SignedRecord::sign(&revocation, &self.root).expect("fixture revocations are valid")
    }

    /// Appends an entry enrolling `device`, signed by `signer`, carrying the
    /// current vault key when there is one.
    pub fn add_device(
        &mut self,
        signer: &SigningKey,
        device: &SigningKey,
        name: &str,
    ) -> &mut Self {
        let certificate = self.certificate(device, name);
        let vault_key = (self.generation > 0).then(|| WrappedKey {
            generation: self.generation,
            secret: fake_wrap(device, self.generation),
        });
        self.push(
            signer,
            LogAction::AddDevice {
                certificate,
                vault_key,
            },
        )
    }

    /// Appends an entry revoking `device`, signed by `signer`.
    pub fn revoke(&mut self, signer: &SigningKey, device: &SigningKey) -> &mut Self {
        let revocation = self.revocation(device);
        self.push(signer, LogAction::RevokeDevice { revocation })
    }

    /// Appends a vault rotation to the next generation, wrapped to `devices`
    /// (the caller passes the active set, or deliberately another one).
    pub fn rotate(&mut self, signer: &SigningKey, devices: &[&SigningKey]) -> &mut Self {
        let generation = self.generation + 1;
        let mut wrapped: Vec<_> = devices
            .iter()
            .map(|d| DeviceWrappedKey {
                device: d.verifying_key(),
                secret: fake_wrap(d, generation),
            })
            .collect();
        wrapped.sort_by_key(|w| w.device);
        let previous = (generation > 1).then(|| {
            WrappedSecret::new(
                format!("generation {} for {generation}", generation - 1).into_bytes(),
            )
            .expect("fixture ciphertext is small")
        });
        let recipient = X25519PublicKey::from_bytes(seed(&format!("vault {generation}")));
        self.generation = generation;
        self.push(
            signer,
            LogAction::RotateVaultKey {
                generation,
                recipient,
                wrapped,
                previous,
            },
        )
    }

    /// Appends a preferred-relays entry.
    pub fn set_relays(&mut self, signer: &SigningKey, relays: Vec<RelayRef>) -> &mut Self {
        self.push(signer, LogAction::SetPreferredRelays { relays })
    }

    /// Appends an entry with the given action, correctly numbered and chained.
    pub fn push(&mut self, signer: &SigningKey, action: LogAction) -> &mut Self {
        let entry = IdentityLogEntry {
            seq: self.next_seq(),
            prev: self.next_prev(),
            action,
        };
        self.entries.push(
            SignedRecord::sign(&entry, signer)
                .expect("builder entries encode validly; use push_raw for invalid bytes")
                .to_bytes(),
        );
        self
    }

    /// Appends envelope bytes as they are, valid or not.
    pub fn push_raw(&mut self, bytes: Vec<u8>) -> &mut Self {
        self.entries.push(bytes);
        self
    }

    /// The `seq` the next entry should carry.
    pub fn next_seq(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The `prev` the next entry should carry.
    pub fn next_prev(&self) -> Option<BlobId> {
        self.entries.last().map(|e| BlobId::of(e))
    }

    fn tick(&mut self) -> Timestamp {
        self.clock += 60;
        Timestamp(self.clock)
    }
}

/// The X25519 public key fixtures give `device`.
pub fn x25519_for(device: &SigningKey) -> X25519PublicKey {
    X25519PublicKey::from_bytes(seed(&format!("x25519 {}", device.verifying_key())))
}

/// Stand-in ciphertext: the protocol core treats wrapped keys as opaque, so
/// fixtures only need distinct, valid-length bytes.
fn fake_wrap(device: &SigningKey, generation: u32) -> WrappedSecret {
    WrappedSecret::new(format!("vault {generation} for {}", device.verifying_key()).into_bytes())
        .expect("fixture ciphertext is small")
}

/// A fresh nonce: unique within this process (a counter) and across
/// processes (the process id), which is all a test needs.
pub fn fresh_nonce() -> Nonce {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut input = n.to_be_bytes().to_vec();
    input.extend_from_slice(&std::process::id().to_be_bytes());
    let hash = blake3::hash(&input);
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&hash.as_bytes()[..16]);
    Nonce(nonce)
}

/// An auth token for `relay`, with a fresh nonce, expiring at `expires_at`.
pub fn token(
    relay: &VerifyingKey,
    method: Method,
    target: TokenTarget,
    expires_at: u64,
) -> AuthToken {
    AuthToken {
        audience: *relay,
        method,
        target,
        expires_at: Timestamp(expires_at),
        nonce: fresh_nonce(),
        stamp: 0,
    }
}

/// The `Authorization` header value carrying `token` signed by `signer`.
pub fn auth_header(token: &AuthToken, signer: &SigningKey) -> String {
    let envelope = SignedRecord::sign(token, signer).expect("test tokens are valid");
    format!("Cairn {}", envelope.to_base64url())
}

/// Seconds since the Unix epoch, for token expiries against a real relay.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
