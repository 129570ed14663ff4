//! The relay set: the relays a user has chosen, each pinned to the key it
//! presented when added.

use serde::{Deserialize, Serialize};

use cairn_proto::{RelayUrl, VerifyingKey};

use crate::error::{Error, Result};
use crate::home::{Home, write_private};

/// One chosen relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEntry {
    /// Where it is reached, without a trailing slash.
    pub url: String,
    /// Its identity key, pinned when it was added.
    #[serde(with = "crate::text_serde")]
    pub key: VerifyingKey,
    /// When it was added (Unix seconds).
    pub added_at: u64,
}

/// The relay set, as stored in `HOME/relays.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RelaySet {
    relays: Vec<RelayEntry>,
}

impl RelaySet {
    pub(crate) fn load(home: &Home) -> Result<Self> {
        let path = home.relays();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| Error::Damaged {
                path,
                reason: err.to_string(),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(Error::Io { path, error }),
        }
    }

    pub(crate) fn save(&self, home: &Home) -> Result<()> {
        let json =
            serde_json::to_vec_pretty(self).map_err(|err| Error::Invalid(err.to_string()))?;
        write_private(&home.relays(), &json)
    }

    /// The relays, in the order they were added.
    pub fn entries(&self) -> &[RelayEntry] {
        &self.relays
    }

    /// The entry for `url`, if any.
    pub fn get(&self, url: &str) -> Option<&RelayEntry> {
        self.relays.iter().find(|r| r.url == url)
    }

    /// Adds the entry unless its URL is in the set already; returns
    /// whether it was added. A pin already held wins over a later one: at
    /// `device join`, the keys the authenticated pairing welcome names are
    /// stored first, and the key the relay joined through presented on
    /// first use must not replace one of them. Replacing a pin on purpose
    /// is [`RelaySet::replace`].
    pub(crate) fn upsert(&mut self, entry: RelayEntry) -> bool {
        if self.get(&entry.url).is_some() {
            return false;
        }
        self.relays.push(entry);
        true
    }

    /// Adds the entry, or replaces the one for its URL (its pin included).
    pub(crate) fn replace(&mut self, entry: RelayEntry) {
        match self.relays.iter_mut().find(|r| r.url == entry.url) {
            Some(existing) => *existing = entry,
            None => self.relays.push(entry),
        }
    }

    /// Removes the entry for `url`.
    pub(crate) fn remove(&mut self, url: &str) -> Result<RelayEntry> {
        let index = self
            .relays
            .iter()
            .position(|r| r.url == url)
            .ok_or_else(|| Error::UnknownRelay { url: url.into() })?;
        Ok(self.relays.remove(index))
    }
}

/// Checks a relay URL and puts it in the one form the set uses.
pub fn normalize_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    RelayUrl::new(trimmed).map_err(|_| {
        Error::Invalid(format!(
            "{url:?} is not a relay URL: expected http://HOST[:PORT] or https://HOST[:PORT]"
        ))
    })?;
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_normalized_or_refused() {
        assert_eq!(
            normalize_url(" https://relay.example/ ").unwrap(),
            "https://relay.example"
        );
        assert!(normalize_url("relay.example").is_err());
        assert!(normalize_url("ftp://relay.example").is_err());
        assert!(normalize_url("http://").is_err());
    }

    fn entry(url: &str, seed: u8) -> RelayEntry {
        RelayEntry {
            url: url.into(),
            key: cairn_proto::SigningKey::from_seed(&[seed; 32]).verifying_key(),
            added_at: 0,
        }
    }

    /// Part of issue 1/7: at `device join` the welcome's relays go in
    /// first, then the relay joined through; the key it presented on first
    /// use must not replace the one the authenticated welcome named.
    #[test]
    fn a_first_use_pin_does_not_replace_a_pin_already_held() {
        let mut set = RelaySet::default();
        let welcome = entry("https://a.example", 1);
        assert!(set.upsert(welcome.clone()));
        let impostor = entry("https://a.example", 2);
        assert!(!set.upsert(impostor.clone()));
        assert_eq!(set.entries(), [welcome]);
        // Replacing on purpose (`relay add --accept-new-key`) still works.
        set.replace(impostor.clone());
        assert_eq!(set.entries(), [impostor]);
    }
}
