//! Text forms: unpadded base64url for bytes that travel in HTTP headers and
//! URLs, with a type prefix for keys so that keys of different kinds can never
//! be mistaken for one another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ParseError;

/// Encodes bytes as unpadded base64url (RFC 4648 §5, no `=`).
pub fn encode_base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url, refusing padding, other alphabets, and
/// non-zero trailing bits, so each byte string has exactly one text form.
///
/// `max_bytes` bounds the decoded size; longer text is refused before any
/// decoding work is done.
///
/// # Errors
///
/// [`ParseError::TooLong`] if the text could decode to more than `max_bytes`,
/// [`ParseError::Base64`] if it is not canonical unpadded base64url.
pub fn decode_base64url(text: &str, max_bytes: usize) -> Result<Vec<u8>, ParseError> {
    let max_chars = max_bytes.saturating_mul(4).div_ceil(3);
    if text.len() > max_chars {
        return Err(ParseError::TooLong {
            len: text.len(),
            max: max_chars,
        });
    }
    URL_SAFE_NO_PAD.decode(text).map_err(|_| ParseError::Base64)
}

/// Parses `<prefix><base64url of N bytes>`.
pub(crate) fn parse_prefixed<const N: usize>(
    text: &str,
    prefix: &'static str,
) -> Result<[u8; N], ParseError> {
    let body = text
        .strip_prefix(prefix)
        .ok_or(ParseError::WrongPrefix { expected: prefix })?;
    let expected = (N * 4).div_ceil(3);
    if body.len() != expected {
        return Err(ParseError::WrongLength {
            expected: prefix.len() + expected,
            found: text.len(),
        });
    }
    let bytes = decode_base64url(body, N)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| ParseError::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_standard_alphabet_are_refused() {
        assert_eq!(decode_base64url("AQ==", 8), Err(ParseError::Base64));
        assert_eq!(decode_base64url("+/8", 8), Err(ParseError::Base64));
        assert_eq!(decode_base64url("-_8", 8), Ok(vec![0xfb, 0xff]));
    }

    #[test]
    fn non_canonical_trailing_bits_are_refused() {
        // "AQ" and "AR" would both decode to [0x01] in a lenient decoder.
        assert_eq!(decode_base64url("AQ", 8), Ok(vec![1]));
        assert_eq!(decode_base64url("AR", 8), Err(ParseError::Base64));
    }

    #[test]
    fn oversized_text_is_refused_before_decoding() {
        let text = "A".repeat(12);
        assert_eq!(
            decode_base64url(&text, 6),
            Err(ParseError::TooLong { len: 12, max: 8 })
        );
        // 4 characters would decode to 3 bytes: more than 2.
        assert!(decode_base64url("AAAA", 2).is_err());
        assert_eq!(decode_base64url("AAA", 2), Ok(vec![0, 0]));
    }
}
