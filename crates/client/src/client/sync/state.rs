//! What a device knows of the sync, kept in `HOME/sync.json`, and the
//! cache of operation cores and relays' copies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, VerifyingKey};

use super::{Finding, MAX_FINDINGS};
use crate::client::Client;
use crate::client::chains::Link;
use crate::crdt::{Position, Table};
use crate::error::{Error, Result, io_at};
use crate::home::write_private;
use crate::relay::Head;

/// This device's knowledge, kept in `HOME/sync.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SyncState {
    /// The vault generation whose mailbox this device publishes in.
    pub(in crate::client) generation: u32,
    /// The highest clock seen or issued.
    pub(in crate::client) clock: u64,
    /// Per device (key text): the newest operation merged.
    pub(in crate::client) devices: BTreeMap<String, Position>,
    /// The merged file table.
    pub(in crate::client) table: Table,
    /// The clock of the newest snapshot applied or written.
    pub(in crate::client) snapshot: u64,
    /// Operations merged since this device last wrote a snapshot.
    pub(in crate::client) since_snapshot: u64,
    /// The sealed snapshot blob this device last wrote (deleted when
    /// superseded).
    pub(in crate::client) my_snapshot: Option<String>,
    /// Blob (id text) → relays (key text) holding a copy this device
    /// uploaded or claimed and has not deleted.
    pub(in crate::client) owned: BTreeMap<String, BTreeSet<String>>,
    /// Recent findings, newest last.
    pub(in crate::client) findings: Vec<Finding>,
    /// Findings recorded ever (the list above keeps the newest).
    #[serde(default)]
    pub(in crate::client) noted: u64,
    /// Relay (key text) → the highest position of this device's own log
    /// whose head it acknowledged storing, in the current mailbox. A relay
    /// that later serves a lower one rolled back what it acknowledged: a
    /// lie, not a missed update.
    #[serde(default)]
    pub(in crate::client) acked: BTreeMap<String, u64>,
    /// Identity-log targets (blob id text) that proved not to be a valid
    /// log of this identity, newest last: not fetched again.
    #[serde(default)]
    pub(in crate::client) refused_targets: Vec<String>,
    /// Sealed identity-log copies (blob id text) already read, with the
    /// position of the log each holds, newest last: a copy is fetched once.
    #[serde(default)]
    pub(in crate::client) log_copies: Vec<(String, u64)>,
    /// Claims of earlier generations' owners to let go of, once the
    /// current owner has claimed the same copies (a rotation moved the
    /// owner key: `crate::layout`).
    #[serde(default)]
    pub(in crate::client) releasing: Vec<Releasing>,
    /// Relay (key text) → device (key text) → where that relay's chain of
    /// the device's operations ends, as checked (per-relay layout): a head
    /// seen before is not fetched again.
    #[serde(default)]
    pub(in crate::client) chains: BTreeMap<String, BTreeMap<String, Link>>,
    /// The copies of the snapshot table this device last wrote, per relay
    /// (key text → id text; per-relay layout), deleted when superseded.
    #[serde(default)]
    pub(in crate::client) my_snapshot_at: BTreeMap<String, String>,
    /// When a relay last answered a sync (Unix seconds; 0: never): how old
    /// the table is when no relay answers.
    #[serde(default)]
    pub(in crate::client) synced_at: u64,
    /// Chunk blobs (id text) of chunked files this device has seen listed
    /// and still owns: released only after being unlisted for a while
    /// (`upkeep::chunk_hold`), because another device's put may be reusing
    /// them.
    #[serde(default)]
    pub(in crate::client) chunks: BTreeSet<String>,
    /// Chunk blob (id text) → when this device first found it listed by no
    /// file (Unix seconds).
    #[serde(default)]
    pub(in crate::client) unlisted_since: BTreeMap<String, u64>,
}

/// Copies claimed by the owner of an earlier generation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Releasing {
    /// That generation.
    pub(in crate::client) generation: u32,
    /// Blob (id text) → relays (key text) where it claimed them.
    pub(in crate::client) owned: BTreeMap<String, BTreeSet<String>>,
}

/// What changes whenever a sync changes the state (the table changes only
/// with the positions or the snapshot it came from).
#[derive(PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(in crate::client) devices: BTreeMap<String, Position>,
    pub(in crate::client) owned: BTreeMap<String, BTreeSet<String>>,
    pub(in crate::client) acked: BTreeMap<String, u64>,
    pub(in crate::client) chains: BTreeMap<String, BTreeMap<String, Link>>,
    /// When held chunks were found unlisted: a hold that starts must be
    /// saved, or it would start again at every sync and never end.
    pub(in crate::client) unlisted_since: BTreeMap<String, u64>,
    /// How many chunks are remembered (the set follows `owned` and the
    /// table, which the rest of the fingerprint covers, but not always in
    /// step).
    pub(in crate::client) chunks: usize,
    pub(in crate::client) scalars: (u32, u64, u64, u64, u64, Option<String>),
}

impl SyncState {
    pub(super) fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            devices: self.devices.clone(),
            owned: self.owned.clone(),
            acked: self.acked.clone(),
            chains: self.chains.clone(),
            unlisted_since: self.unlisted_since.clone(),
            chunks: self.chunks.len(),
            scalars: (
                self.generation,
                self.clock,
                self.snapshot,
                self.since_snapshot,
                self.noted,
                self.my_snapshot.clone(),
            ),
        }
    }

    /// The clock of the newest snapshot applied or written.
    pub(in crate::client) fn snapshot(&self) -> u64 {
        self.snapshot
    }

    /// Every device's newest merged operation.
    pub(in crate::client) fn positions(&self) -> Vec<(VerifyingKey, Position)> {
        self.devices
            .iter()
            .filter_map(|(key, position)| Some((key.parse().ok()?, *position)))
            .collect()
    }

    pub(super) fn position(&self, device: &VerifyingKey) -> Option<Position> {
        self.devices.get(&device.to_string()).copied()
    }

    /// Where `relay`'s chain of `device`'s operations ends, as checked.
    pub(in crate::client) fn link(
        &self,
        relay: &VerifyingKey,
        device: &VerifyingKey,
    ) -> Option<Link> {
        self.chains
            .get(&relay.to_string())?
            .get(&device.to_string())
            .copied()
    }

    pub(super) fn set_link(&mut self, relay: &VerifyingKey, device: &VerifyingKey, link: Link) {
        self.chains
            .entry(relay.to_string())
            .or_default()
            .insert(device.to_string(), link);
    }

    /// The operation (core id) `relay`'s head `head` for `device` names,
    /// when known without fetching it: a core stored as it is names
    /// itself, a copy is known once checked.
    pub(super) fn translate(
        &self,
        relay: &VerifyingKey,
        device: &VerifyingKey,
        head: &Head,
    ) -> Option<BlobId> {
        match self.link(relay, device) {
            Some(link) if link.seq == head.seq && link.at == head.target => Some(link.op),
            _ => None,
        }
    }

    /// Moves to vault generation `generation`: what this device's owner
    /// key of the previous one claimed is to be claimed again by the new
    /// owner and then let go of ([`Client::release_old_claims`]).
    pub(super) fn enter(&mut self, generation: u32) {
        if self.generation != 0 && self.generation != generation && !self.owned.is_empty() {
            self.releasing.push(Releasing {
                generation: self.generation,
                owned: std::mem::take(&mut self.owned),
            });
        }
        self.generation = generation;
    }

    /// The position of the log in the sealed copy `target`, if read before.
    pub(super) fn log_copy(&self, target: &BlobId) -> Option<u64> {
        let text = target.to_string();
        self.log_copies
            .iter()
            .find(|(id, _)| *id == text)
            .map(|(_, seq)| *seq)
    }

    /// Remembers that the sealed copy `target` holds a log at `seq`.
    pub(super) fn note_log_copy(&mut self, target: BlobId, seq: u64) {
        const KEPT: usize = 256;
        if self.log_copy(&target).is_none() {
            self.log_copies.push((target.to_string(), seq));
            let excess = self.log_copies.len().saturating_sub(KEPT);
            self.log_copies.drain(..excess);
        }
    }

    /// Remembers that `target` leads to no valid log, keeping the newest.
    pub(super) fn refuse_target(&mut self, target: BlobId) {
        const KEPT: usize = 256;
        self.refused_targets.push(target.to_string());
        let excess = self.refused_targets.len().saturating_sub(KEPT);
        self.refused_targets.drain(..excess);
    }

    pub(super) fn note(&mut self, finding: Finding) {
        let repeat = self.findings.iter().any(|f| {
            f.kind == finding.kind
                && f.relay == finding.relay
                && f.device == finding.device
                && f.detail == finding.detail
        });
        if !repeat {
            self.noted += 1;
            self.findings.push(finding);
            let excess = self.findings.len().saturating_sub(MAX_FINDINGS);
            self.findings.drain(..excess);
        }
    }
}

impl Client {
    pub(in crate::client) fn load_sync(&self) -> Result<SyncState> {
        let path = self.home.sync_state();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| Error::Damaged {
                path,
                reason: err.to_string(),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(SyncState::default()),
            Err(error) => Err(Error::Io { path, error }),
        }
    }

    pub(super) fn save_sync(&self, state: &SyncState) -> Result<()> {
        let json = serde_json::to_vec(state).map_err(|err| Error::Invalid(err.to_string()))?;
        write_private(&self.home.sync_state(), &json)
    }

    fn cache_path(&self, id: &BlobId) -> PathBuf {
        self.home.op_cache().join(id.to_string())
    }

    /// Where `id` is cached, with the cache directory made.
    fn cache_file(&self, id: &BlobId) -> Result<PathBuf> {
        let dir = self.home.op_cache();
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        Ok(self.cache_path(id))
    }

    pub(in crate::client) fn cache_op(&self, id: &BlobId, sealed: &[u8]) -> Result<()> {
        write_private(&self.cache_file(id)?, sealed)
    }

    /// Caches a relay's copy of a core (`crate::relay_copy`): the core is
    /// what matters, so the copy is not waited for on disk.
    pub(in crate::client) fn cache_copy(&self, id: &BlobId, copy: &[u8]) -> Result<()> {
        crate::home::write_cache(&self.cache_file(id)?, copy)
    }

    pub(in crate::client) fn cached_op(&self, id: &BlobId) -> Option<Vec<u8>> {
        std::fs::read(self.cache_path(id)).ok()
    }

    pub(in crate::client) fn store_sync(&self, state: &SyncState) -> Result<()> {
        self.save_sync(state)
    }

    /// The table as of the last sync (no network).
    pub(in crate::client) fn table_of(state: &SyncState) -> &Table {
        &state.table
    }

    /// Relays holding a copy of `blob` this device made and has not
    /// deleted.
    pub(in crate::client) fn owned_relays(
        state: &SyncState,
        blob: &BlobId,
    ) -> BTreeSet<VerifyingKey> {
        state
            .owned
            .get(&blob.to_string())
            .map(|keys| keys.iter().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The findings recorded so far (no network).
    pub fn findings(&self) -> Result<Vec<Finding>> {
        Ok(self.load_sync()?.findings)
    }

    /// When a relay last answered a sync (Unix seconds; no network), if
    /// one ever did: how old what this device knows is. Kept to within an
    /// hour (see [`crate::Offline::synced_at`]).
    pub fn synced_at(&self) -> Result<Option<u64>> {
        let at = self.load_sync()?.synced_at;
        Ok((at > 0).then_some(at))
    }
}
