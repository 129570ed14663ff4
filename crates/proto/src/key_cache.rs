//! Ed25519 keys recently validated and decompressed, by their bytes.
//!
//! Decompressing a point costs about a square root in the field, a large
//! share of verifying a signature. Without this, one auth token costs four
//! decompressions (the signer and the audience as they are decoded, the
//! signer again to verify, and the signature's `R`); a relay sees the same
//! few signers and its own key over and over, and so does a client reading
//! its own devices' records. The outcome depends on the bytes alone, so a
//! cached answer is the answer.

use std::sync::{Mutex, OnceLock};

/// Slots in the table: direct-mapped by the key's first bytes. A key that
/// collides with another only costs a decompression, as without the cache.
const SLOTS: usize = 1024;

type Slot = Mutex<Option<([u8; 32], ed25519_dalek::VerifyingKey)>>;

fn table() -> &'static [Slot] {
    static TABLE: OnceLock<Box<[Slot]>> = OnceLock::new();
    TABLE.get_or_init(|| (0..SLOTS).map(|_| Mutex::new(None)).collect())
}

/// `bytes` decompressed, if they are a point; from the table when they were
/// decompressed recently.
pub(crate) fn decompress(bytes: &[u8; 32]) -> Option<ed25519_dalek::VerifyingKey> {
    // Keys are points of a hash-like encoding: their low bytes spread well.
    let index = usize::from(u16::from_le_bytes([bytes[0], bytes[1]])) % SLOTS;
    let slot = &table()[index];
    if let Ok(held) = slot.lock()
        && let Some((key, point)) = held.as_ref()
        && key == bytes
    {
        return Some(*point);
    }
    let point = ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()?;
    if let Ok(mut held) = slot.lock() {
        *held = Some((*bytes, point));
    }
    Some(point)
}

#[cfg(test)]
mod tests {
    use super::decompress;

    #[test]
    fn a_cached_key_is_the_key_and_a_non_point_stays_refused() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let bytes = key.to_bytes();
        assert_eq!(decompress(&bytes), Some(key));
        assert_eq!(decompress(&bytes), Some(key), "from the table");
        // A y with no x on the curve: refused, and not remembered as a key.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(ed25519_dalek::VerifyingKey::from_bytes(&not_a_point).is_err());
        assert_eq!(decompress(&not_a_point), None);
        assert_eq!(decompress(&not_a_point), None);
    }
}
