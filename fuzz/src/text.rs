//! Parsers of text forms: blob ids and keys.

use cairn_proto::{BlobId, SigningKey, VerifyingKey, X25519PublicKey};

/// A blob id; what parses prints back as exactly the input.
pub fn blob_id_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = text.parse::<BlobId>() {
        assert_eq!(id.to_string(), text, "non-canonical blob id accepted");
    }
}

/// Each kind of key; what parses prints back as exactly the input (a secret
/// key's text form ignores trailing whitespace, as key files end in a
/// newline).
pub fn key_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = text.parse::<VerifyingKey>() {
        assert_eq!(key.to_string(), text);
    }
    if let Ok(key) = text.parse::<X25519PublicKey>() {
        assert_eq!(key.to_string(), text);
    }
    if let Ok(key) = SigningKey::from_secret_text(text) {
        assert_eq!(key.to_secret_text(), text.trim_end());
    }
}
