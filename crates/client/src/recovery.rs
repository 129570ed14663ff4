//! The recovery phrase: the root key's 32-byte seed as 24 BIP39 words.

use bip39::{Language, Mnemonic};
use cairn_proto::SigningKey;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The 24 words that bring back `root`.
pub fn phrase_for(root: &SigningKey) -> Zeroizing<String> {
    let seed = Zeroizing::new(root.to_seed());
    // 32 bytes is a valid BIP39 entropy length, so this cannot fail.
    Mnemonic::from_entropy_in(Language::English, &*seed)
        .map(|m| Zeroizing::new(m.to_string()))
        .unwrap_or_default()
}

/// The root key a phrase encodes. Case and spacing do not matter.
pub fn root_from_phrase(phrase: &str) -> Result<SigningKey> {
    let normalized = Zeroizing::new(
        phrase
            .split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let words = normalized.split(' ').count();
    if words != 24 {
        return Err(Error::BadMnemonic(format!(
            "expected 24 words, got {words}"
        )));
    }
    let mnemonic = Mnemonic::parse_in_normalized(Language::English, &normalized)
        .map_err(|err| Error::BadMnemonic(err.to_string()))?;
    let (entropy, len) = mnemonic.to_entropy_array();
    let seed: [u8; 32] = entropy[..len]
        .try_into()
        .map_err(|_| Error::BadMnemonic("not a 24-word phrase".into()))?;
    Ok(SigningKey::from_seed(&seed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn phrase_round_trip() {
        let root = SigningKey::from_seed(&[0xab; 32]);
        let phrase = phrase_for(&root);
        assert_eq!(phrase.split(' ').count(), 24);
        let back = root_from_phrase(&format!("  {}  ", phrase.to_uppercase())).unwrap();
        assert_eq!(back.verifying_key(), root.verifying_key());
    }

    #[test]
    fn bad_phrases() {
        let root = SigningKey::from_seed(&[1; 32]);
        let phrase = phrase_for(&root);
        let mut words: Vec<&str> = phrase.split(' ').collect();
        assert!(matches!(
            root_from_phrase(&words[..23].join(" ")),
            Err(Error::BadMnemonic(_))
        ));
        // A swapped word breaks the checksum (or is not in the list).
        words.swap(0, 1);
        if words[0] != words[1] {
            assert!(root_from_phrase(&words.join(" ")).is_err());
        }
        assert!(root_from_phrase(&"zzzz ".repeat(24)).is_err());
    }
}
