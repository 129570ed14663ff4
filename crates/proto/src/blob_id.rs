//! Content addresses of stored blobs.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// The id of a blob: the BLAKE3-256 hash of its stored (encrypted) bytes.
///
/// Its text form is exactly 64 lowercase hexadecimal characters; any other
/// spelling is refused, so each blob has one name in URLs and logs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId([u8; 32]);

impl BlobId {
    /// Length of the binary form in bytes.
    pub const LEN: usize = 32;
    /// Length of the text form in characters.
    pub const TEXT_LEN: usize = 64;

    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps a digest computed elsewhere (for example by a streaming hasher).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<blake3::Hash> for BlobId {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl FromStr for BlobId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.len() != Self::TEXT_LEN {
            return Err(ParseError::WrongLength {
                expected: Self::TEXT_LEN,
                found: s.len(),
            });
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Ok(Self(out))
    }
}

fn hex_digit(c: u8) -> Result<u8, ParseError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(ParseError::NotLowercaseHex),
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_of_empty_input_is_the_blake3_empty_hash() {
        assert_eq!(
            BlobId::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn text_form_round_trips() {
        let id = BlobId::of(b"cairn");
        assert_eq!(id.to_string().parse::<BlobId>(), Ok(id));
    }

    #[test]
    fn uppercase_is_refused() {
        let text = BlobId::of(b"x").to_string().to_uppercase();
        assert_eq!(text.parse::<BlobId>(), Err(ParseError::NotLowercaseHex));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let text = BlobId::of(b"x").to_string();
        assert!(matches!(
            text[..63].parse::<BlobId>(),
            Err(ParseError::WrongLength { .. })
        ));
        assert!(matches!(
            format!("{text}0").parse::<BlobId>(),
            Err(ParseError::WrongLength { .. })
        ));
    }

    #[test]
    fn multibyte_characters_are_refused_without_panicking() {
        // 64 bytes, but not ASCII: must not slice inside a character.
        let text = "é".repeat(32);
        assert_eq!(text.parse::<BlobId>(), Err(ParseError::NotLowercaseHex));
    }
}
