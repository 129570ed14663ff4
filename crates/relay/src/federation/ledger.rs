//! The reciprocity ledger: what this relay and each peer have done for one
//! another, and the standing that follows from it.
//!
//! Kept as a small JSON file beside the index (`ledger.json`), rewritten
//! atomically on each access-flush tick and at shutdown. Losing the last
//! few seconds of counts in a crash costs a little accuracy, never data.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use cairn_proto::VerifyingKey;
use serde::{Deserialize, Serialize};

pub(crate) use cairn_policy::standing::Account;

/// Every peer's account, by key.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    accounts: BTreeMap<VerifyingKey, Account>,
    path: Option<PathBuf>,
    dirty: bool,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    accounts: BTreeMap<String, Account>,
}

impl Ledger {
    /// Loads the ledger kept in `data_dir`, or starts an empty one. A
    /// damaged file is set aside (renamed `.damaged`) rather than trusted
    /// or fatal: standing is advisory.
    pub(crate) fn load(data_dir: &Path) -> Self {
        let path = data_dir.join("ledger.json");
        let mut ledger = Self {
            path: Some(path.clone()),
            ..Self::default()
        };
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ledger,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot read the peer ledger; starting afresh");
                return ledger;
            }
        };
        match serde_json::from_slice::<Stored>(&text) {
            Ok(stored) if stored.version == 1 => {
                for (key, account) in stored.accounts {
                    if let Ok(key) = key.parse::<VerifyingKey>() {
                        ledger.accounts.insert(key, account);
                    }
                }
            }
            _ => {
                tracing::warn!(path = %path.display(), "the peer ledger is damaged; set aside, starting afresh");
                let _ = std::fs::rename(&path, path.with_extension("json.damaged"));
            }
        }
        ledger
    }

    /// Changes `peer`'s account.
    pub(crate) fn update(&mut self, peer: &VerifyingKey, change: impl FnOnce(&mut Account)) {
        change(self.accounts.entry(*peer).or_default());
        self.dirty = true;
    }

    /// Makes the next [`Ledger::take_snapshot`] save, after a failed save.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// `peer`'s account (zeros for a peer never dealt with).
    pub(crate) fn account(&self, peer: &VerifyingKey) -> Account {
        self.accounts.get(peer).copied().unwrap_or_default()
    }

    /// Every account, by key.
    pub(crate) fn accounts(&self) -> impl Iterator<Item = (&VerifyingKey, &Account)> {
        self.accounts.iter()
    }

    /// The file's new contents if anything changed since the last save;
    /// the caller writes them with [`write_atomically`] outside the lock.
    pub(crate) fn take_snapshot(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !self.dirty {
            return None;
        }
        let path = self.path.clone()?;
        let stored = Stored {
            version: 1,
            accounts: self
                .accounts
                .iter()
                .map(|(k, a)| (k.to_string(), *a))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&stored).ok()?;
        self.dirty = false;
        Some((path, bytes))
    }
}

/// Writes `bytes` to `path` through a temp file, fsync and rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        crate::store::files::fsync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_survives_a_round_trip_and_sets_aside_damage() {
        let dir = tempfile::tempdir().unwrap();
        let key = cairn_proto::SigningKey::from_seed(&[3; 32]).verifying_key();
        let mut ledger = Ledger::load(dir.path());
        ledger.update(&key, |a| a.stored_by_peer += 5);
        let (path, bytes) = ledger.take_snapshot().unwrap();
        write_atomically(&path, &bytes).unwrap();
        assert!(ledger.take_snapshot().is_none(), "nothing new to save");
        let again = Ledger::load(dir.path());
        assert_eq!(again.account(&key).stored_by_peer, 5);

        std::fs::write(&path, b"{not json").unwrap();
        let fresh = Ledger::load(dir.path());
        assert_eq!(fresh.account(&key), Account::default());
        assert!(path.with_extension("json.damaged").exists());
    }
}
