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

/// Bytes either side may be "owed" before the imbalance counts: new peers
/// start on equal terms, and small differences mean nothing.
const GRACE_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

/// One peer's account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Account {
    /// Bytes this relay accepted from the peer (replicas and transfers).
    pub(crate) stored_for_peer: u64,
    /// Bytes the peer acknowledged with signed receipts.
    pub(crate) stored_by_peer: u64,
    /// Blob bytes this relay sent to the peer.
    pub(crate) bytes_sent: u64,
    /// Blob bytes this relay received from the peer.
    pub(crate) bytes_received: u64,
    /// Transfers of responsibility to the peer, receipted and verified.
    pub(crate) transfers_out: u64,
    /// Transfers of responsibility from the peer.
    pub(crate) transfers_in: u64,
    /// Receipts the peer signed for bytes it could not then produce.
    pub(crate) failed_checks: u64,
}

impl Account {
    /// How much this relay should favour the peer, around 1.0 for a peer
    /// that gives as much as it takes: above for one that stores more for
    /// us than we for it, below for one that takes more, and halved for
    /// every receipt it failed to honour.
    pub(crate) fn standing(&self) -> f64 {
        let given = self.stored_by_peer as f64 + GRACE_BYTES;
        let taken = self.stored_for_peer as f64 + GRACE_BYTES;
        let ratio = (given / taken).clamp(0.25, 4.0);
        let failures = i32::try_from(self.failed_checks.min(30)).unwrap_or(30);
        ratio * 0.5f64.powi(failures)
    }
}

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
    fn standing_rewards_giving_and_punishes_broken_receipts() {
        let fair = Account::default();
        assert!((fair.standing() - 1.0).abs() < 1e-9);
        let giver = Account {
            stored_by_peer: 10 << 30,
            ..Account::default()
        };
        let taker = Account {
            stored_for_peer: 10 << 30,
            ..Account::default()
        };
        assert!(giver.standing() > fair.standing());
        assert!(taker.standing() < fair.standing());
        let cheat = Account {
            failed_checks: 1,
            ..giver
        };
        assert!(cheat.standing() < giver.standing() / 1.9);
    }

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
