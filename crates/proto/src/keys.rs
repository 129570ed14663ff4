//! Keys and signatures.
//!
//! Ed25519 signs everything in cairn; X25519 public keys are the recipients
//! that vault keys are wrapped to. Each kind of key has its own type and its
//! own text prefix, so a device's encryption key can never be passed where a
//! signing key is expected, in code or on the command line.

use std::fmt;
use std::str::FromStr;

use crate::codec::{Reader, Writer};
use crate::error::{DecodeError, ParseError};
use crate::key_cache;
use crate::text::{encode_base64url, parse_prefixed};

/// Text prefix of an Ed25519 public key.
pub const VERIFYING_KEY_PREFIX: &str = "ed25519:";
/// Text prefix of an Ed25519 secret key.
pub const SIGNING_KEY_PREFIX: &str = "ed25519-secret:";
/// Text prefix of an X25519 public key.
pub const X25519_PREFIX: &str = "x25519:";

/// An Ed25519 public key that is a canonical encoding of a point outside the
/// small-order subgroup, i.e. one under which strict verification can succeed.
///
/// Held as its 32 validated bytes rather than as a decompressed point: keys
/// are compared, hashed and stored far more often than they verify, and the
/// decompressed form is six times larger.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VerifyingKey([u8; 32]);

impl VerifyingKey {
    /// Length of the binary form in bytes.
    pub const LEN: usize = 32;

    /// Parses the 32-byte compressed form.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Invalid`] if the bytes are not a point, are a
    /// non-canonical encoding of one, or are a small-order ("weak") key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, DecodeError> {
        const FIELD: &str = "ed25519 public key";
        let key = key_cache::decompress(bytes).ok_or(DecodeError::Invalid {
            field: FIELD,
            reason: "not a point on the curve",
        })?;
        // Decompression tolerates some non-canonical spellings of a point;
        // refusing them keeps one encoding per key, so keys can be compared
        // and hashed as bytes.
        if !is_canonical_y(bytes) {
            return Err(DecodeError::Invalid {
                field: FIELD,
                reason: "non-canonical point encoding",
            });
        }
        if key.is_weak() {
            return Err(DecodeError::Invalid {
                field: FIELD,
                reason: "small-order key",
            });
        }
        Ok(Self(*bytes))
    }

    /// The 32-byte compressed form.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// A short form for logs: the prefix and the first 8 characters.
    pub fn short(&self) -> String {
        let text = self.to_string();
        text.chars().take(VERIFYING_KEY_PREFIX.len() + 8).collect()
    }

    /// Checks `signature` over `message` with strict Ed25519 rules (canonical
    /// `S`, no small-order components), so one message has one valid
    /// signature per key.
    pub(crate) fn verify_strict(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        // Cannot fail: the bytes were validated when this key was made.
        key_cache::decompress(&self.0).is_some_and(|key| key.verify_strict(message, &sig).is_ok())
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.fixed(&self.0);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::from_bytes(&r.array()?)
    }
}

/// Whether the y coordinate encoded in `bytes` (all but the top bit, little
/// endian) is below p = 2^255 - 19, i.e. reduced.
///
/// That is all a point encoding needs to be canonical here: the other
/// non-canonical spelling, x = 0 with the sign bit set, only occurs for
/// y = ±1, points of small order that [`VerifyingKey::from_bytes`] refuses
/// anyway. Comparing bytes is much cheaper than re-compressing the point.
fn is_canonical_y(bytes: &[u8; 32]) -> bool {
    // p in little endian: ed ff … ff 7f. y >= p exactly when the top byte
    // (sign bit cleared) is 0x7f, the middle bytes are all 0xff and the
    // lowest byte is at least 0xed.
    let top = bytes[31] & 0x7f;
    !(top == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff) && bytes[0] >= 0xed)
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VERIFYING_KEY_PREFIX}{}", encode_base64url(&self.0))
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({self})")
    }
}

impl FromStr for VerifyingKey {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bytes = parse_prefixed::<32>(s, VERIFYING_KEY_PREFIX)?;
        Ok(Self::from_bytes(&bytes)?)
    }
}

/// An Ed25519 secret key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// The key whose 32-byte secret seed is `seed` (RFC 8032 §5.1.5).
    ///
    /// Callers generate seeds from the operating system's random source; this
    /// crate does no I/O and so cannot.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed. Handle with care: it *is* the key.
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        // A key derived from a secret scalar is never small-order and always
        // canonically encoded, so the checks in `from_bytes` cannot fail.
        VerifyingKey(self.0.verifying_key().to_bytes())
    }

    /// The secret in text form (`ed25519-secret:` + base64url), for key
    /// files. Deliberately not `Display`, so it cannot end up in a log line
    /// through a format string.
    pub fn to_secret_text(&self) -> String {
        format!(
            "{SIGNING_KEY_PREFIX}{}",
            encode_base64url(self.0.as_bytes())
        )
    }

    /// Parses the text form produced by [`SigningKey::to_secret_text`].
    ///
    /// # Errors
    ///
    /// [`ParseError`] if the prefix, length or base64url is wrong.
    pub fn from_secret_text(text: &str) -> Result<Self, ParseError> {
        let seed = parse_prefixed::<32>(text.trim_end(), SIGNING_KEY_PREFIX)?;
        Ok(Self::from_seed(&seed))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, secret redacted)", self.verifying_key())
    }
}

/// Something that signs records: a [`SigningKey`] or a
/// [`BlindedSigningKey`]. Sealed: the raw signing operation stays inside
/// this crate, where every signature is domain-separated by record kind.
pub trait Signer: sealed::Sign {
    /// The public key its signatures verify under.
    fn verifying_key(&self) -> VerifyingKey;
}

pub(crate) mod sealed {
    /// The raw signature, reachable only from this crate.
    #[allow(unreachable_pub, reason = "the sealed-trait pattern")]
    pub trait Sign {
        fn sign_message(&self, message: &[u8]) -> super::Signature;
    }
}

impl Signer for SigningKey {
    fn verifying_key(&self) -> VerifyingKey {
        SigningKey::verifying_key(self)
    }
}

impl sealed::Sign for SigningKey {
    fn sign_message(&self, message: &[u8]) -> Signature {
        self.sign(message)
    }
}

impl<K: Signer + ?Sized> Signer for std::sync::Arc<K> {
    fn verifying_key(&self) -> VerifyingKey {
        (**self).verifying_key()
    }
}

impl<K: sealed::Sign + ?Sized> sealed::Sign for std::sync::Arc<K> {
    fn sign_message(&self, message: &[u8]) -> Signature {
        (**self).sign_message(message)
    }
}

/// Key-derivation context of a blinded key's nonce prefix.
const BLINDED_PREFIX_CONTEXT: &str = "cairn/v1 blinded signing nonce prefix";

/// A nonzero scalar that blinds a key pair (PROTOCOL.md §10.7): the
/// blinded public key is `factor · A`, the blinded secret `factor · a`.
///
/// Whoever knows the factor and a public key can compute the blinded
/// public key; only the holder of the secret key can sign under it; and
/// without the factor, blinded keys of one key under different factors
/// look unrelated (the same construction as Tor's v3 onion-service keys).
#[derive(Clone)]
pub struct BlindingFactor(curve25519_dalek::Scalar);

impl BlindingFactor {
    /// The factor for 64 bytes of key-derivation output, reduced modulo
    /// the group order. `None` for the (negligibly likely) zero scalar,
    /// which would blind every key to the identity point.
    pub fn from_wide(bytes: &[u8; 64]) -> Option<Self> {
        let scalar = curve25519_dalek::Scalar::from_bytes_mod_order_wide(bytes);
        (scalar != curve25519_dalek::Scalar::ZERO).then_some(Self(scalar))
    }
}

impl fmt::Debug for BlindingFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindingFactor(redacted)")
    }
}

impl VerifyingKey {
    /// This key blinded by `factor`: the public half of
    /// [`SigningKey::blind`] with the same factor.
    pub fn blind(&self, factor: &BlindingFactor) -> VerifyingKey {
        // The bytes were validated as a point when this key was made.
        let point = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map(|key| key.to_edwards())
            .unwrap_or_default();
        // A prime-order point times a nonzero scalar is a prime-order
        // point, so the result passes every check `from_bytes` makes.
        VerifyingKey((point * factor.0).compress().to_bytes())
    }
}

impl SigningKey {
    /// This key blinded by `factor`.
    pub fn blind(&self, factor: &BlindingFactor) -> BlindedSigningKey {
        let expanded = ed25519_dalek::hazmat::ExpandedSecretKey::from(&self.0.to_bytes());
        let mut prefix_input = zeroize::Zeroizing::new([0u8; 64]);
        prefix_input[..32].copy_from_slice(&expanded.hash_prefix);
        prefix_input[32..].copy_from_slice(factor.0.as_bytes());
        // A fresh nonce prefix: the blinded key never reuses the original
        // key's nonces for a different scalar.
        let secret = ed25519_dalek::hazmat::ExpandedSecretKey {
            scalar: expanded.scalar * factor.0,
            hash_prefix: blake3::derive_key(BLINDED_PREFIX_CONTEXT, &*prefix_input),
        };
        let public = ed25519_dalek::VerifyingKey::from(&secret);
        BlindedSigningKey { secret, public }
    }
}

/// A [`SigningKey`] blinded by a [`BlindingFactor`]. Signatures under it
/// are ordinary Ed25519 signatures under [`VerifyingKey::blind`] of the
/// original public key.
pub struct BlindedSigningKey {
    secret: ed25519_dalek::hazmat::ExpandedSecretKey,
    public: ed25519_dalek::VerifyingKey,
}

impl Signer for BlindedSigningKey {
    fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.public.to_bytes())
    }
}

impl sealed::Sign for BlindedSigningKey {
    fn sign_message(&self, message: &[u8]) -> Signature {
        let signature = ed25519_dalek::hazmat::raw_sign::<ed25519_dalek::Sha512>(
            &self.secret,
            message,
            &self.public,
        );
        Signature(signature.to_bytes())
    }
}

impl fmt::Debug for BlindedSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BlindedSigningKey({}, secret redacted)",
            Signer::verifying_key(self)
        )
    }
}

/// An Ed25519 signature: 64 bytes, carried as-is. Its validity is only ever
/// judged together with a key and a message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub(crate) [u8; 64]);

impl Signature {
    /// Length of the binary form in bytes.
    pub const LEN: usize = 64;

    /// Wraps 64 signature bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The 64 signature bytes.
    pub const fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.fixed(&self.0);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self(r.array()?))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", encode_base64url(&self.0))
    }
}

/// An X25519 public key: a recipient that secrets (vault keys) are wrapped to.
///
/// Any 32 bytes are a usable X25519 public key (RFC 7748 §5), so there is
/// nothing to validate beyond the length.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct X25519PublicKey([u8; 32]);

impl X25519PublicKey {
    /// Length of the binary form in bytes.
    pub const LEN: usize = 32;

    /// Wraps 32 public-key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 public-key bytes.
    pub const fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.fixed(&self.0);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self(r.array()?))
    }
}

impl fmt::Display for X25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{X25519_PREFIX}{}", encode_base64url(&self.0))
    }
}

impl fmt::Debug for X25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X25519PublicKey({self})")
    }
}

impl FromStr for X25519PublicKey {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        Ok(Self(parse_prefixed::<32>(s, X25519_PREFIX)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_seed(&[7; 32])
    }

    fn factor(byte: u8) -> BlindingFactor {
        BlindingFactor::from_wide(&[byte; 64]).unwrap()
    }

    #[test]
    fn a_blinded_key_signs_under_the_blinded_public_key() {
        use sealed::Sign as _;
        let blinded = key().blind(&factor(1));
        let public = key().verifying_key().blind(&factor(1));
        assert_eq!(Signer::verifying_key(&blinded), public);
        assert_eq!(VerifyingKey::from_bytes(&public.to_bytes()), Ok(public));
        let signature = blinded.sign_message(b"message");
        assert!(public.verify_strict(b"message", &signature));
        assert!(!public.verify_strict(b"other", &signature));
        assert!(!key().verifying_key().verify_strict(b"message", &signature));
        // The same message signs the same way (deterministic nonces), and
        // not with the original key's signature.
        assert_eq!(blinded.sign_message(b"message"), signature);
        assert_ne!(key().sign(b"message"), signature);
    }

    #[test]
    fn factors_give_unrelated_keys() {
        let original = key().verifying_key();
        let one = original.blind(&factor(1));
        let two = original.blind(&factor(2));
        assert_ne!(one, original);
        assert_ne!(one, two);
        let other = SigningKey::from_seed(&[8; 32]).verifying_key();
        assert_ne!(other.blind(&factor(1)), one);
        assert!(BlindingFactor::from_wide(&[0; 64]).is_none());
    }

    #[test]
    fn text_forms_round_trip() {
        let vk = key().verifying_key();
        assert_eq!(vk.to_string().parse::<VerifyingKey>(), Ok(vk));
        let x = X25519PublicKey::from_bytes([9; 32]);
        assert_eq!(x.to_string().parse::<X25519PublicKey>(), Ok(x));
        let sk = SigningKey::from_secret_text(&key().to_secret_text()).unwrap();
        assert_eq!(sk.to_seed(), key().to_seed());
    }

    #[test]
    fn kinds_of_keys_cannot_be_confused() {
        let vk = key().verifying_key().to_string();
        let as_x25519 = vk.replacen(VERIFYING_KEY_PREFIX, X25519_PREFIX, 1);
        assert_eq!(
            vk.parse::<X25519PublicKey>(),
            Err(ParseError::WrongPrefix {
                expected: X25519_PREFIX
            })
        );
        assert_eq!(
            as_x25519.parse::<VerifyingKey>(),
            Err(ParseError::WrongPrefix {
                expected: VERIFYING_KEY_PREFIX
            })
        );
        assert!(SigningKey::from_secret_text(&vk).is_err());
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let sk = key();
        let secret = sk.to_secret_text();
        let body = secret.trim_start_matches(SIGNING_KEY_PREFIX);
        let debug = format!("{sk:?}");
        assert!(!debug.contains(body), "{debug}");
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn the_canonical_check_agrees_with_recompression() {
        // Around p, where the two answers could differ.
        for low in 0xe0..=0xffu8 {
            for sign in [0u8, 0x80] {
                let mut bytes = [0xffu8; 32];
                bytes[0] = low;
                bytes[31] = 0x7f | sign;
                let reduced = low < 0xed;
                assert_eq!(is_canonical_y(&bytes), reduced, "{low:#x} {sign:#x}");
                if let Ok(point) = ed25519_dalek::VerifyingKey::from_bytes(&bytes) {
                    let recompressed = point.to_edwards().compress().to_bytes() == bytes;
                    // Recompression also rejects x = 0 with the sign bit,
                    // which only small-order points have.
                    if !point.is_weak() {
                        assert_eq!(recompressed, reduced, "{low:#x} {sign:#x}");
                    }
                }
            }
        }
        // And for ordinary keys.
        for seed in 0..50u8 {
            let bytes = SigningKey::from_seed(&[seed; 32])
                .verifying_key()
                .to_bytes();
            assert!(is_canonical_y(&bytes));
        }
    }

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            VerifyingKey::from_bytes(&identity),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn non_canonical_point_encodings_are_refused() {
        // y = p + 3 (p = 2^255 - 19) is a non-canonical spelling of y = 3,
        // which is on the curve and not of small order: the curve library
        // decompresses it, and only the canonicality check refuses it.
        let mut bytes = [0xffu8; 32];
        bytes[0] = 0xed + 3;
        bytes[31] = 0x7f;
        assert_eq!(
            VerifyingKey::from_bytes(&bytes),
            Err(DecodeError::Invalid {
                field: "ed25519 public key",
                reason: "non-canonical point encoding"
            })
        );
    }
}
