//! Multi-device sync over the relays: each device's operation log, its head
//! in the identity's mailbox, and the merged file table.
//!
//! A sync lists the mailbox on every relay (one request each), and stops
//! there when nothing moved. Otherwise it follows the identity log, applies
//! a newer snapshot if one lets it skip history, walks each device's new
//! operations back from its highest head (verifying every one), merges
//! them, and re-publishes what a relay is missing. Relays that serve an old
//! head and devices that sign two different operations at one position are
//! reported, never merged silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, Operation, SignedRecord, Verified, VerifyingKey};

use super::Client;
use super::chains::{ChainReader, Keep, Link, copy_bound};
use super::mailbox::{FetchLogError, put_own_head, starting_with};
use crate::error::{Error, Result, io_at};
use crate::fork::Choice;
use crate::home::write_private;
use crate::layout::{Layout, Mailbox};
use crate::relay::{Claimed, Deleted, Head, RelayClient, Role, unix_now};
use crate::seal;
use crate::sync::{Change, Position, Snapshot, Table, clock_millis, next_clock};

/// Operations between two snapshots written by one device.
const SNAPSHOT_EVERY: u64 = 500;
/// Largest sealed operation accepted (a 64 KiB body plus sealing).
pub(super) const MAX_OP_BLOB: usize = 256 << 10;
/// Largest sealed snapshot accepted.
pub(super) const MAX_SNAPSHOT_BLOB: usize = 512 << 20;
/// Most operations fetched for one device in one sync: a relay cannot keep
/// a client walking forever.
pub(super) const MAX_WALK: usize = 1 << 20;
/// Findings kept in the state, newest last.
const MAX_FINDINGS: usize = 100;

/// How far ahead of this device's clock an operation's clock may be and
/// still be merged (or a snapshot's be applied). Beyond it the operation
/// is held: a writer could otherwise stamp `u64::MAX` and win every
/// last-writer-wins merge for ever (PROTOCOL.md §10.6, "Bounded clocks").
pub(super) const MAX_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;

/// The highest hybrid-logical clock this device accepts now.
pub(super) fn clock_limit() -> u64 {
    millis_now()
        .saturating_add(MAX_CLOCK_SKEW_MS)
        .saturating_mul(1 << 16)
        .saturating_add(0xffff)
}

fn millis_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What went wrong with a relay or a device, as a sync reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `stale_head`, `equivocation`, `bad_operation`, `ignored_device`,
    /// `unreachable`, `future_clock` (an operation held until its clock is
    /// plausible), `implausible_head` (a device's own head claims a
    /// position its target does not have: a frozen slot) or
    /// `forked_identity` (two identity logs that do not extend each other).
    pub kind: String,
    /// The relay concerned, if one is.
    pub relay: Option<String>,
    /// The device concerned, if one is.
    pub device: Option<String>,
    /// What happened.
    pub detail: String,
    /// When it was seen (Unix seconds).
    pub at: u64,
}

/// This device's knowledge, kept in `HOME/sync.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SyncState {
    /// The vault generation whose mailbox this device publishes in.
    generation: u32,
    /// The highest clock seen or issued.
    clock: u64,
    /// Per device (key text): the newest operation merged.
    devices: BTreeMap<String, Position>,
    /// The merged file table.
    table: Table,
    /// The clock of the newest snapshot applied or written.
    snapshot: u64,
    /// Operations merged since this device last wrote a snapshot.
    since_snapshot: u64,
    /// The sealed snapshot blob this device last wrote (deleted when
    /// superseded).
    my_snapshot: Option<String>,
    /// Blob (id text) → relays (key text) holding a copy this device
    /// uploaded or claimed and has not deleted.
    owned: BTreeMap<String, BTreeSet<String>>,
    /// Recent findings, newest last.
    findings: Vec<Finding>,
    /// Findings recorded ever (the list above keeps the newest).
    #[serde(default)]
    noted: u64,
    /// Relay (key text) → the highest position of this device's own log
    /// whose head it acknowledged storing, in the current mailbox. A relay
    /// that later serves a lower one rolled back what it acknowledged: a
    /// lie, not a missed update.
    #[serde(default)]
    acked: BTreeMap<String, u64>,
    /// Identity-log targets (blob id text) that proved not to be a valid
    /// log of this identity, newest last: not fetched again.
    #[serde(default)]
    refused_targets: Vec<String>,
    /// Sealed identity-log copies (blob id text) already read, with the
    /// position of the log each holds, newest last: a copy is fetched once.
    #[serde(default)]
    log_copies: Vec<(String, u64)>,
    /// Claims of earlier generations' owners to let go of, once the
    /// current owner has claimed the same copies (a rotation moved the
    /// owner key: `crate::layout`).
    #[serde(default)]
    releasing: Vec<Releasing>,
    /// Relay (key text) → device (key text) → where that relay's chain of
    /// the device's operations ends, as checked (per-relay layout): a head
    /// seen before is not fetched again.
    #[serde(default)]
    chains: BTreeMap<String, BTreeMap<String, Link>>,
    /// The copies of the snapshot table this device last wrote, per relay
    /// (key text → id text; per-relay layout), deleted when superseded.
    #[serde(default)]
    my_snapshot_at: BTreeMap<String, String>,
}

/// Copies claimed by the owner of an earlier generation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Releasing {
    /// That generation.
    generation: u32,
    /// Blob (id text) → relays (key text) where it claimed them.
    owned: BTreeMap<String, BTreeSet<String>>,
}

/// What changes whenever a sync changes the state (the table changes only
/// with the positions or the snapshot it came from).
#[derive(PartialEq, Eq)]
struct Fingerprint {
    devices: BTreeMap<String, Position>,
    owned: BTreeMap<String, BTreeSet<String>>,
    acked: BTreeMap<String, u64>,
    chains: BTreeMap<String, BTreeMap<String, Link>>,
    scalars: (u32, u64, u64, u64, u64, Option<String>),
}

impl SyncState {
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            devices: self.devices.clone(),
            owned: self.owned.clone(),
            acked: self.acked.clone(),
            chains: self.chains.clone(),
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
    pub(super) fn snapshot(&self) -> u64 {
        self.snapshot
    }

    /// Every device's newest merged operation.
    pub(super) fn positions(&self) -> Vec<(VerifyingKey, Position)> {
        self.devices
            .iter()
            .filter_map(|(key, position)| Some((key.parse().ok()?, *position)))
            .collect()
    }

    fn position(&self, device: &VerifyingKey) -> Option<Position> {
        self.devices.get(&device.to_string()).copied()
    }

    /// Where `relay`'s chain of `device`'s operations ends, as checked.
    pub(super) fn link(&self, relay: &VerifyingKey, device: &VerifyingKey) -> Option<Link> {
        self.chains
            .get(&relay.to_string())?
            .get(&device.to_string())
            .copied()
    }

    fn set_link(&mut self, relay: &VerifyingKey, device: &VerifyingKey, link: Link) {
        self.chains
            .entry(relay.to_string())
            .or_default()
            .insert(device.to_string(), link);
    }

    /// The operation (core id) `relay`'s head `head` for `device` names,
    /// when known without fetching it: a core stored as it is names
    /// itself, a copy is known once checked.
    fn translate(
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
    fn enter(&mut self, generation: u32) {
        if self.generation != 0 && self.generation != generation && !self.owned.is_empty() {
            self.releasing.push(Releasing {
                generation: self.generation,
                owned: std::mem::take(&mut self.owned),
            });
        }
        self.generation = generation;
    }

    /// The position of the log in the sealed copy `target`, if read before.
    fn log_copy(&self, target: &BlobId) -> Option<u64> {
        let text = target.to_string();
        self.log_copies
            .iter()
            .find(|(id, _)| *id == text)
            .map(|(_, seq)| *seq)
    }

    /// Remembers that the sealed copy `target` holds a log at `seq`.
    fn note_log_copy(&mut self, target: BlobId, seq: u64) {
        const KEPT: usize = 256;
        if self.log_copy(&target).is_none() {
            self.log_copies.push((target.to_string(), seq));
            let excess = self.log_copies.len().saturating_sub(KEPT);
            self.log_copies.drain(..excess);
        }
    }

    /// Remembers that `target` leads to no valid log, keeping the newest.
    fn refuse_target(&mut self, target: BlobId) {
        const KEPT: usize = 256;
        self.refused_targets.push(target.to_string());
        let excess = self.refused_targets.len().saturating_sub(KEPT);
        self.refused_targets.drain(..excess);
    }

    fn note(&mut self, finding: Finding) {
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

/// One relay in a sync report.
#[derive(Clone, Debug, Serialize)]
pub struct RelaySync {
    /// Its URL.
    pub url: String,
    /// Whether it answered the listing.
    pub reachable: bool,
    /// Heads it holds in the mailbox.
    pub heads: usize,
    /// Heads it was behind on and was sent again.
    pub republished: usize,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// One device in a sync report.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceSync {
    /// Its key.
    pub device: String,
    /// Its name in the identity log, when it is enrolled.
    pub name: Option<String>,
    /// The newest of its operations merged.
    pub seq: u64,
    /// Whether it is this device.
    pub this_device: bool,
}

/// A device this sync learned was revoked.
#[derive(Clone, Debug, Serialize)]
pub struct RevokedDevice {
    /// Its key.
    pub device: String,
    /// Its name while it was enrolled.
    pub name: String,
}

/// What a sync did and found.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    /// Devices whose revocation this sync learned of.
    pub revoked: Vec<RevokedDevice>,
    /// The vault generation new data is sealed to, after this sync.
    pub vault_generation: u32,
    /// Per relay.
    pub relays: Vec<RelaySync>,
    /// Per device.
    pub devices: Vec<DeviceSync>,
    /// Operations merged by this sync.
    pub merged: usize,
    /// Whether a snapshot was applied.
    pub snapshot_applied: bool,
    /// Whether this device wrote a snapshot.
    pub snapshot_written: bool,
    /// Copies other devices stored that this device claimed, so that they
    /// stay until this device deletes them too.
    pub claimed: usize,
    /// Copies left to claim at the next sync.
    pub claims_pending: usize,
    /// Files in the table.
    pub files: usize,
    /// Problems found by this sync.
    pub findings: Vec<Finding>,
}

/// Heads a relay listed, and the mailbox they are in.
pub(super) struct Listing {
    pub(super) heads: Vec<Head>,
    pub(super) mailbox: Mailbox,
}

/// What listing the current mailbox on each relay gave.
type Answers = Vec<(
    Mailbox,
    Result<(Vec<Head>, usize), crate::error::RelayError>,
)>;

impl Listing {
    /// The heads that serve `role`.
    fn with_role(&self, role: Role) -> impl Iterator<Item = &Head> {
        self.heads.iter().filter(move |h| h.role() == role)
    }
}

/// Heads fetched at once while learning what relays' heads name.
const HEADS_IN_FLIGHT: usize = 16;
/// Claims sent to relays at once by a sync.
const CLAIMS_IN_FLIGHT: usize = 16;
/// Most claims one sync sends to one relay: well inside a relay's default
/// burst of 600 requests per key.
const CLAIMS_PER_RELAY_PER_SYNC: usize = 256;

impl Client {
    pub(super) fn load_sync(&self) -> Result<SyncState> {
        let path = self.home.sync_state();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| Error::Damaged {
                path,
                reason: err.to_string(),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(SyncState::default()),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    fn save_sync(&self, state: &SyncState) -> Result<()> {
        let json = serde_json::to_vec(state).map_err(|err| Error::Invalid(err.to_string()))?;
        write_private(&self.home.sync_state(), &json)
    }

    fn cache_path(&self, id: &BlobId) -> PathBuf {
        self.home.op_cache().join(id.to_string())
    }

    pub(super) fn cache_op(&self, id: &BlobId, sealed: &[u8]) -> Result<()> {
        let dir = self.home.op_cache();
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        write_private(&self.cache_path(id), sealed)
    }

    /// Caches a relay's copy of a core (`crate::relay_copy`): the core is
    /// what matters, so the copy is not waited for on disk.
    pub(super) fn cache_copy(&self, id: &BlobId, copy: &[u8]) -> Result<()> {
        let dir = self.home.op_cache();
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        crate::home::write_cache(&self.cache_path(id), copy)
    }

    pub(super) fn cached_op(&self, id: &BlobId) -> Option<Vec<u8>> {
        std::fs::read(self.cache_path(id)).ok()
    }

    /// Brings the identity log and the file table up to date from every
    /// relay, and sends each relay what it is missing.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        if self.relays.entries().is_empty() {
            return Err(Error::NoRelays);
        }
        let mut state = self.load_sync()?;
        let before = state.fingerprint();
        let report = self.sync_with(&mut state).await;
        // A sync that changed nothing leaves the state file alone: rewriting
        // a large table is what a no-change sync would otherwise cost.
        if state.fingerprint() != before {
            self.save_sync(&state)?;
        }
        report
    }

    async fn sync_with(&mut self, state: &mut SyncState) -> Result<SyncReport> {
        let enrolled_before: Vec<(VerifyingKey, String)> = self
            .log
            .state()
            .devices()
            .values()
            .map(|d| (d.key, d.name.as_str().to_owned()))
            .collect();
        let relays = self.relay_clients();
        let first_finding = state.findings.len();
        let (listings, mut relay_reports) = loop {
            let answers = self.list_current(&relays).await?;
            let mut listings = Vec::new();
            let mut reports = Vec::new();
            for (relay, (mailbox, answer)) in relays.iter().zip(answers) {
                match answer {
                    Ok((heads, bad)) => {
                        if bad > 0 {
                            state.note(finding(
                                "bad_head",
                                Some(relay.url()),
                                None,
                                format!("listed {bad} heads that do not verify"),
                            ));
                        }
                        reports.push(RelaySync {
                            url: relay.url().to_owned(),
                            reachable: true,
                            heads: heads.len(),
                            republished: 0,
                            error: None,
                        });
                        listings.push(Some(Listing { heads, mailbox }));
                    }
                    Err(err) => {
                        reports.push(RelaySync {
                            url: relay.url().to_owned(),
                            reachable: false,
                            heads: 0,
                            republished: 0,
                            error: Some(err.to_string()),
                        });
                        listings.push(None);
                    }
                }
            }
            let before = self.newest_vault()?.generation;
            self.advance_identity(state, &relays, &mut listings).await?;
            if self.newest_vault()?.generation == before {
                break (listings, reports);
            }
            // A rotation moved the mailbox: list the new one.
        };
        if reports_all_down(&relay_reports) {
            return Err(Error::Invalid(format!(
                "no relay answered: {}",
                relay_reports
                    .iter()
                    .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.url)))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }

        let generation = self.newest_vault()?.generation;
        let moved = state.generation != generation;
        let mut snapshot_applied = false;
        // The newest snapshot that opens, not merely the highest head: a
        // stolen device can name anything in its own snapshot slot.
        for (index, head) in snapshot_candidates(&listings) {
            if head.seq <= state.snapshot {
                break;
            }
            if head.writer.is_some_and(|w| !self.ever_enrolled(&w))
                || state.refused_targets.contains(&head.target.to_string())
            {
                continue;
            }
            match self.apply_snapshot(state, &relays, index, head).await {
                Ok(applied) => {
                    snapshot_applied = applied;
                    break;
                }
                Err(err) => {
                    // Not fetched again at every sync (unless it was only
                    // out of reach).
                    if !matches!(err, Error::Unavailable { .. }) {
                        state.refuse_target(head.target);
                    }
                    state.note(finding(
                        "bad_operation",
                        None,
                        Some(head.target.to_string()),
                        format!("snapshot refused: {err}"),
                    ));
                }
            }
        }

        let (merged, announced) = self
            .merge_devices(state, &relays, &listings, &mut relay_reports)
            .await;
        self.follow_announcements(state, &relays, announced).await?;

        if moved {
            // Announce this device's log in the new mailbox, then (if this
            // device rotated) a snapshot there covers everyone's history.
            self.enter_generation(state, generation);
            // Acknowledgements were for heads in the old mailbox.
            state.acked.clear();
            if let Some(mine) = state.position(&self.device_key()) {
                let targets = self.own_targets(state, &relays, mine);
                self.publish_own_head(&relays, mine.seq, &targets).await;
            }
        }

        let (claimed, claims_pending) = self.claim_copies(state, &relays).await;
        self.release_old_claims(state, &relays).await;
        self.collect_garbage(state, &relays).await;
        let mut snapshot_written = false;
        if state.since_snapshot >= SNAPSHOT_EVERY && self.require_active().is_ok() {
            self.write_snapshot(state, &relays).await?;
            snapshot_written = true;
        }

        let me = self.device_key();
        let devices = state
            .devices
            .iter()
            .map(|(key, position)| {
                let parsed = key.parse::<VerifyingKey>().ok();
                DeviceSync {
                    device: key.clone(),
                    name: parsed.and_then(|k| {
                        self.log
                            .state()
                            .devices()
                            .get(&k)
                            .map(|d| d.name.as_str().to_owned())
                    }),
                    seq: position.seq,
                    this_device: parsed == Some(me),
                }
            })
            .collect();
        let revoked = enrolled_before
            .into_iter()
            .filter(|(key, _)| self.log.state().revoked().contains(key))
            .map(|(key, name)| RevokedDevice {
                device: key.to_string(),
                name,
            })
            .collect();
        Ok(SyncReport {
            revoked,
            vault_generation: self.log.state().vault().map_or(0, |v| v.generation),
            relays: relay_reports,
            devices,
            merged,
            snapshot_applied,
            snapshot_written,
            claimed,
            claims_pending,
            files: state.table.files().count(),
            findings: state.findings[first_finding.min(state.findings.len())..].to_vec(),
        })
    }

    /// Lists the current mailbox on every relay (one request each). The
    /// first time a generation is listed whose layout this device has not
    /// learned, the per-relay mailboxes are tried first and, when they
    /// hold no identity head at all, the shared one (a rotation by a
    /// device of an earlier release).
    pub(super) async fn list_current(&mut self, relays: &[RelayClient]) -> Result<Answers> {
        let vault = self.newest_vault()?;
        let known = self.layouts().of(vault.generation);
        let answers = self
            .list_in(relays, &vault, known.unwrap_or(Layout::PerRelay))
            .await;
        if known.is_some() {
            return Ok(answers);
        }
        let has_identity = |answers: &Answers| {
            answers.iter().any(|(_, answer)| {
                answer
                    .as_ref()
                    .is_ok_and(|(heads, _)| heads.iter().any(|h| h.role() == Role::Identity))
            })
        };
        if has_identity(&answers) {
            self.learn_layout(vault.generation, Layout::PerRelay)?;
            return Ok(answers);
        }
        let shared = self.list_in(relays, &vault, Layout::Shared).await;
        if has_identity(&shared) {
            self.learn_layout(vault.generation, Layout::Shared)?;
            return Ok(shared);
        }
        Ok(answers)
    }

    /// Lists `vault`'s mailbox in `layout` on every relay.
    pub(super) async fn list_in(
        &self,
        relays: &[RelayClient],
        vault: &crate::keys::VaultKey,
        layout: Layout,
    ) -> Answers {
        join_all(relays.iter().map(|relay| async move {
            let mailbox = Mailbox::new(vault, relay.key(), layout);
            let answer = self.list_mailbox(relay, &mailbox).await;
            (mailbox, answer)
        }))
        .await
    }

    /// Follows the identity heads the listings show: each log they lead to
    /// that extends this device's is taken up, and a fork is decided by the
    /// root key's authority (`crate::fork`), naming the devices that signed
    /// the branch that lost. Heads that lie about their position, lead to
    /// entries that are not a valid log, or come from a writer the identity
    /// never enrolled are reported and not fetched again. Returns whether
    /// the log changed.
    async fn advance_identity(
        &mut self,
        state: &mut SyncState,
        relays: &[RelayClient],
        listings: &mut [Option<Listing>],
    ) -> Result<bool> {
        let mut heads: Vec<(usize, Head)> = listings
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
            .flat_map(|(i, l)| l.with_role(Role::Identity).map(move |h| (i, h.clone())))
            .collect();
        heads.sort_by_key(|(_, h)| std::cmp::Reverse(h.seq));
        let start = self.log.state().head();
        let mut tried = BTreeSet::new();
        for (index, head) in heads {
            // A writer this device does not know yet may be a device the
            // log it points at enrolls (a recovered one enrolls itself): it
            // is followed like any other, and only a writer still unknown
            // afterwards is reported (below). A target that proves invalid
            // is not fetched again.
            // This device's own head points at a log it published, and a
            // copy already read need not be fetched again.
            if !tried.insert(head.target)
                || head.writer == Some(self.device_key())
                || self.log.position_of(&head.target).is_some()
                || state.log_copy(&head.target).is_some()
            {
                continue;
            }
            let claim = head.is_owned().then_some(head.seq);
            self.consider_log(state, relays, head.target, claim, Some(index))
                .await?;
        }
        // Only now, with the log settled, can each head's claim be judged,
        // and a head by a device the log just enrolled be named.
        if self.log.state().head() != start {
            for listing in listings.iter_mut().flatten() {
                let heads = std::mem::take(&mut listing.heads);
                listing.heads = self.resolve_heads(&listing.mailbox, heads);
            }
        }
        for (index, listing) in listings.iter().enumerate() {
            let Some(listing) = listing else { continue };
            for head in &listing.heads {
                if let Some(writer) = head.writer
                    && !self.ever_enrolled(&writer)
                {
                    state.note(unknown_writer(relays[index].url(), &writer));
                    continue;
                }
                if let Some(detail) = self.implausible(state, head) {
                    state.note(finding(
                        "implausible_head",
                        Some(relays[index].url()),
                        head.writer.map(|w| w.to_string()),
                        detail,
                    ));
                }
            }
        }
        Ok(self.log.state().head() != start)
    }

    /// Whether `key` is, or was, a device of this identity (or its root).
    fn ever_enrolled(&self, key: &VerifyingKey) -> bool {
        *key == self.config.root
            || self.log.state().devices().contains_key(key)
            || self.log.state().revoked().contains(key)
    }

    /// Fetches the log ending at `target` and takes it up if it extends this
    /// device's or wins a fork against it. `claim` is the position an owned
    /// head said the target is at; a log of another length is refused. A
    /// target that proved invalid is remembered, so a no-change sync does
    /// not fetch it again; an outage proves nothing and is retried.
    async fn consider_log(
        &mut self,
        state: &mut SyncState,
        relays: &[RelayClient],
        target: BlobId,
        claim: Option<u64>,
        index: Option<usize>,
    ) -> Result<()> {
        if state.refused_targets.contains(&target.to_string()) {
            return Ok(());
        }
        let relay = index.and_then(|i| relays.get(i)).map(RelayClient::url);
        let vaults = self.vault_keys()?;
        let fetched = match super::mailbox::fetch_log(
            &starting_with(relays, index.unwrap_or(0)),
            &self.config.root,
            Some(&self.log),
            target,
            &vaults,
        )
        .await
        {
            Ok(fetched) => fetched,
            Err(FetchLogError::Unavailable(err)) => {
                tracing::debug!(%err, %target, "identity entry unavailable for now");
                return Ok(());
            }
            Err(FetchLogError::Invalid(why)) => {
                state.refuse_target(target);
                state.note(finding(
                    "implausible_head",
                    relay,
                    None,
                    format!("names identity entry {target}, which is not a valid log of this identity: {why}"),
                ));
                return Ok(());
            }
        };
        if let Some(seq) = claim
            && fetched.state().last_seq() != seq
        {
            state.refuse_target(target);
            state.note(finding(
                "implausible_head",
                relay,
                None,
                format!(
                    "an identity head claims position {seq} for entry {target}, which is at \
                     position {}: a frozen or forged slot (a stolen device?)",
                    fetched.state().last_seq()
                ),
            ));
            return Ok(());
        }
        if self.log.position_of(&target).is_none() {
            state.note_log_copy(target, fetched.state().last_seq());
        }
        match crate::fork::choose(&self.log, fetched) {
            Choice::Keep => {}
            Choice::Extend(log) => {
                self.log = log;
                self.save_log()?;
            }
            Choice::Fork {
                adopt,
                losers,
                by_authority,
            } => {
                let how = if by_authority {
                    "the other branch revokes its signers"
                } else {
                    "neither branch revokes the other's signers; the same branch is kept on \
                     every device"
                };
                for loser in &losers {
                    state.note(finding(
                        "forked_identity",
                        relay,
                        Some(loser.to_string()),
                        format!("signed identity entries on a branch that lost ({how})"),
                    ));
                }
                if let Some(log) = adopt {
                    self.log = log;
                    self.save_log()?;
                }
            }
        }
        Ok(())
    }

    /// Why `head`, listed in the mailbox this device reads, cannot be true,
    /// if it cannot. No log, operation sequence or clock reaches 2^64-1 (the
    /// previous release wrote that only into a mailbox it left, which is
    /// never the one read); an owned identity head's `seq` must be the
    /// position of its target. Either is a frozen or forged slot: written
    /// by its owner's key, or, for a legacy head, by anyone holding the
    /// mailbox key.
    fn implausible(&self, state: &SyncState, head: &Head) -> Option<String> {
        let by = match head.writer {
            Some(_) => "its own",
            None => "a legacy (mailbox-signed)",
        };
        // The previous release sealed a mailbox it left with a legacy
        // `identity` head at 2^64-1, and a device behind reads exactly that
        // mailbox: no finding.
        let old_seal = head.role() == Role::Identity && !head.is_owned();
        if head.seq == u64::MAX && !old_seal {
            return Some(format!(
                "{by} head in slot {} claims position 2^64-1: a frozen slot (a stolen device?)",
                head.slot
            ));
        }
        if head.is_owned()
            && head.role() == Role::Identity
            && let Some(position) = self
                .log
                .position_of(&head.target)
                .or_else(|| state.log_copy(&head.target))
            && position != head.seq
        {
            return Some(format!(
                "{by} identity head claims position {} for entry {}, which is at position \
                 {position}: a forged slot (a stolen device?)",
                head.seq, head.target
            ));
        }
        None
    }

    /// Whether `device` may have written an operation at `clock`: it is in
    /// the identity log, and if revoked, wrote before its revocation.
    fn may_write(&self, device: &VerifyingKey, clock: u64) -> bool {
        if self.log.state().devices().contains_key(device) {
            return true;
        }
        match self.log.revoked_at(device) {
            Some(revoked_at) => clock_millis(clock) <= revoked_at.0.saturating_mul(1000),
            None => false,
        }
    }

    /// Opens and verifies a sealed operation.
    pub(super) fn open_op(
        &self,
        sealed: &[u8],
        keys: &[crate::keys::X25519Secret],
    ) -> Result<Operation> {
        let plain = seal::open_bytes(sealed, keys)
            .map_err(|err| Error::Invalid(format!("operation does not open: {err}")))?;
        SignedRecord::from_bytes(&plain)
            .map_err(|err| Error::Invalid(format!("operation: {err}")))?
            .verify::<Operation>()
            .map(Verified::into_record)
            .map_err(|err| Error::Invalid(format!("operation: {err}")))
    }

    /// [`super::mailbox::fetch_small`], noting in the relays' records any
    /// that served wrong bytes (a lie, not an outage).
    pub(super) async fn fetch_small_scored(
        &self,
        relays: &[RelayClient],
        id: &BlobId,
        max: usize,
    ) -> Result<Vec<u8>> {
        super::mailbox::fetch_small_noting(relays, id, max, |relay| {
            self.record_scores(|s| {
                s.misbehaved(
                    relay.key(),
                    relay.url(),
                    crate::scores::Misbehaviour::Corrupt,
                    unix_now(),
                    format!("served blob {id} with wrong bytes"),
                );
            });
        })
        .await
    }

    pub(super) async fn fetch_op(
        &self,
        relays: &[RelayClient],
        id: &BlobId,
        keys: &[crate::keys::X25519Secret],
    ) -> Result<Operation> {
        let sealed = match self.cached_op(id) {
            Some(bytes) if BlobId::of(&bytes) == *id => bytes,
            _ => {
                let bytes = self.fetch_small_scored(relays, id, MAX_OP_BLOB).await?;
                self.cache_op(id, &bytes)?;
                bytes
            }
        };
        self.open_op(&sealed, keys)
    }

    /// Applies the snapshot `head` (listed by `relays[index]`) names if it
    /// covers operations this device has not merged. Returns whether it
    /// did.
    async fn apply_snapshot(
        &self,
        state: &mut SyncState,
        relays: &[RelayClient],
        index: usize,
        head: &Head,
    ) -> Result<bool> {
        let keys = self.vault_secrets()?;
        let reader = self.chain_reader(relays, index);
        let fetched = self
            .fetch_core(&reader, &head.target, MAX_OP_BLOB, Keep::Core)
            .await?;
        let op = self.open_op(&fetched.core, &keys)?;
        if !self.may_write(&op.device, op.clock) {
            return Err(Error::Invalid("written by a device that may not".into()));
        }
        if head.writer.is_some_and(|writer| writer != op.device) {
            return Err(Error::Invalid(
                "a device's snapshot head names another device's operation".into(),
            ));
        }
        if op.clock > clock_limit() || head.seq != op.clock {
            return Err(Error::Invalid(format!(
                "its clock {} is not the head's {} or is too far ahead of this device's",
                op.clock, head.seq
            )));
        }
        let Change::Snapshot {
            state: blob,
            covers,
            ..
        } = Change::from_body(&op.body)?
        else {
            return Err(Error::Invalid(
                "the snapshot head names another operation".into(),
            ));
        };
        let ahead = covers.iter().any(|(device, position)| {
            state
                .devices
                .get(device)
                .is_none_or(|known| known.seq < position.seq)
        });
        state.snapshot = state.snapshot.max(head.seq);
        if !ahead {
            return Ok(false);
        }
        // Every position the snapshot would move this device to is checked
        // against the operation it names: a forged `covers` could otherwise
        // skip a device's real operations for ever. This device's own
        // position is never taken from a snapshot. A copy names where each
        // covered operation is on its relay; one it does not name is not
        // taken (that device's operations are walked instead).
        let me = self.device_key().to_string();
        let mut checked = BTreeSet::new();
        for (device, position) in &covers {
            let newer = state
                .devices
                .get(device)
                .is_none_or(|known| known.seq < position.seq);
            if *device == me || !newer {
                continue;
            }
            let key: VerifyingKey = device.parse().map_err(|_| {
                Error::Invalid(format!("the snapshot covers {device:?}, not a key"))
            })?;
            let covered = match &fetched.links {
                None => self.fetch_op(relays, &position.op, &keys).await?,
                Some(links) => {
                    let Some((_, at)) = links.covers.iter().find(|(d, _)| *d == key) else {
                        continue;
                    };
                    let copy = self
                        .fetch_core(&reader.alone(), at, MAX_OP_BLOB, Keep::Core)
                        .await?;
                    if copy.core_id != position.op {
                        return Err(Error::Invalid(format!(
                            "the snapshot's copy links position {} of device {key} to another \
                             operation",
                            position.seq
                        )));
                    }
                    self.open_op(&copy.core, &keys)?
                }
            };
            if covered.device != key || covered.seq != position.seq {
                return Err(Error::Invalid(format!(
                    "the snapshot says position {} of device {key} is operation {}, which is \
                     not",
                    position.seq, position.op
                )));
            }
            checked.insert(device.clone());
        }
        let table_at = fetched.links.as_ref().and_then(|links| links.state);
        let sealed = self.fetch_table(&reader, blob, table_at).await?;
        let plain = seal::open_bytes(&sealed, &keys)
            .map_err(|err| Error::Invalid(format!("snapshot does not open: {err}")))?;
        let mut snapshot: Snapshot = serde_json::from_slice(&plain)
            .map_err(|err| Error::Invalid(format!("snapshot does not parse: {err}")))?;
        // Each entry carries its author and clock: one by a device the log
        // does not allow, or from the future, is dropped as a device's own
        // operation would be.
        let limit = clock_limit();
        snapshot
            .table
            .retain(|device, clock| clock <= limit && self.may_write(device, clock));
        state.table.merge(&snapshot.table);
        state.clock = state.clock.max(snapshot.clock.min(limit));
        for (device, position) in covers {
            if checked.contains(&device) {
                state.devices.insert(device, position);
            }
        }
        Ok(true)
    }

    /// A snapshot's sealed table `blob`: from the relay's copy `at` where
    /// the snapshot's copy names one, else as it is from any relay.
    async fn fetch_table(
        &self,
        reader: &ChainReader,
        blob: BlobId,
        at: Option<BlobId>,
    ) -> Result<Vec<u8>> {
        let Some(at) = at else {
            return self
                .fetch_small_scored(reader.relays(), &blob, MAX_SNAPSHOT_BLOB)
                .await;
        };
        let bytes = self
            .fetch_small_scored(reader.alone().relays(), &at, copy_bound(MAX_SNAPSHOT_BLOB))
            .await?;
        match crate::relay_copy::open(reader.keys(), &bytes) {
            crate::relay_copy::Opened::Copy { core, .. } if BlobId::of(&core) == blob => Ok(core),
            _ => Err(Error::Invalid(format!(
                "the copy {at} does not hold the snapshot's table {blob}"
            ))),
        }
    }

    /// Follows identity-log entries that merged operations announced
    /// beyond this device's log: a device learns of a change (a revocation
    /// above all) from any device it hears from, not only through the
    /// identity heads.
    async fn follow_announcements(
        &mut self,
        state: &mut SyncState,
        relays: &[RelayClient],
        announced: Vec<(VerifyingKey, BlobId)>,
    ) -> Result<()> {
        // An announcement names an entry, and entries are blobs of their
        // own only in the shared layout; in the per-relay one the identity
        // heads lead to the sealed copies.
        let vault = self.newest_vault()?;
        if self.layouts().of(vault.generation) != Some(Layout::Shared) {
            return Ok(());
        }
        for (_, target) in announced {
            if self.log.position_of(&target).is_none() {
                self.consider_log(state, relays, target, None, None).await?;
            }
        }
        Ok(())
    }

    /// Merges every device's new operations; flags and repairs relays that
    /// are behind. Returns the number of operations merged, and the
    /// identity-log entries they announced beyond this device's log.
    async fn merge_devices(
        &self,
        state: &mut SyncState,
        relays: &[RelayClient],
        listings: &[Option<Listing>],
        reports: &mut [RelaySync],
    ) -> (usize, Vec<(VerifyingKey, BlobId)>) {
        // Every device any relay lists, with the heads each relay has. A
        // device's own (owned) head, where it has one, is the only word on
        // its log: a legacy head for it may come from any holder of the
        // mailbox key, a stolen device included.
        let mut owned: BTreeMap<VerifyingKey, Vec<(usize, &Head)>> = BTreeMap::new();
        let mut legacy: BTreeMap<VerifyingKey, Vec<(usize, &Head)>> = BTreeMap::new();
        for (index, listing) in listings.iter().enumerate() {
            let Some(listing) = listing else { continue };
            for head in &listing.heads {
                if let Role::Ops(device) = head.role() {
                    if head.is_owned() && !self.ever_enrolled(&device) {
                        state.note(unknown_writer(relays[index].url(), &device));
                        continue;
                    }
                    let into = if head.is_owned() {
                        &mut owned
                    } else {
                        &mut legacy
                    };
                    // One head per relay and device, the highest: a relay
                    // could list every head it ever stored.
                    let heads = into.entry(device).or_default();
                    match heads.iter_mut().find(|(i, _)| *i == index) {
                        Some(kept) if kept.1.seq < head.seq => kept.1 = head,
                        Some(_) => {}
                        None => heads.push((index, head)),
                    }
                }
            }
        }
        let mut seen = legacy;
        seen.extend(owned);
        for key in state.devices.keys() {
            if let Ok(device) = key.parse::<VerifyingKey>() {
                seen.entry(device).or_default();
            }
        }
        let keys = match self.vault_secrets() {
            Ok(keys) => keys,
            Err(_) => return (0, Vec::new()),
        };
        // In the shared layout a head names an operation's core, the same
        // on every relay; in the per-relay one it names that relay's copy,
        // known once checked.
        let shared = self
            .newest_vault()
            .ok()
            .and_then(|vault| self.layouts().of(vault.generation))
            == Some(Layout::Shared);
        let names = |state: &SyncState, index: usize, device: &VerifyingKey, head: &Head| {
            if shared {
                Some(head.target)
            } else {
                state.translate(relays[index].key(), device, head)
            }
        };

        if !shared {
            self.learn_heads(state, relays, &seen).await;
        }

        let mut walks = Vec::new();
        for (device, heads) in &seen {
            let known = state.position(device);
            // Legacy heads that disagree may all come from a holder of the
            // mailbox key, not from the device: name nobody.
            let blamed = heads
                .iter()
                .any(|(_, h)| h.is_owned())
                .then(|| device.to_string());
            // Two relays holding different operations at one position: the
            // device signed both (or a relay forged a head, which the
            // operation's signature will tell).
            let mut by_seq: BTreeMap<u64, BTreeSet<BlobId>> = BTreeMap::new();
            for (index, head) in heads {
                if let Some(op) = names(state, *index, device, head) {
                    by_seq.entry(head.seq).or_default().insert(op);
                }
            }
            if let Some((seq, _)) = by_seq.iter().find(|(_, ops)| ops.len() > 1) {
                state.note(finding(
                    "equivocation",
                    None,
                    blamed.clone(),
                    format!(
                        "relays hold different operations of device {device} at position {seq}; \
                         not merged"
                    ),
                ));
                continue;
            }
            if let Some(known) = known
                && let Some(different) = by_seq.get(&known.seq).filter(|t| !t.contains(&known.op))
            {
                state.note(finding(
                    "equivocation",
                    None,
                    blamed.clone(),
                    format!(
                        "operation {} at position {} differs from the one merged ({}); not merged",
                        different
                            .iter()
                            .next()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        known.seq,
                        known.op
                    ),
                ));
                continue;
            }
            // Every head beyond what was merged, highest first: the first
            // chain that walks back to it is merged.
            let mut ahead: Vec<(usize, BlobId, u64)> = heads
                .iter()
                .filter(|(_, h)| known.is_none_or(|k| h.seq > k.seq))
                .map(|(index, h)| (*index, h.target, h.seq))
                .collect();
            ahead.sort_by_key(|(_, _, seq)| std::cmp::Reverse(*seq));
            if !ahead.is_empty() {
                walks.push((*device, ahead, known));
            }
        }

        let results = join_all(
            walks
                .iter()
                .map(|(device, ahead, known)| self.walk(relays, &keys, device, ahead, *known)),
        )
        .await;
        let mut merged = 0;
        let mut announced = Vec::new();
        let last_seq = self.log.state().last_seq();
        for ((device, _, _), result) in walks.iter().zip(results) {
            match result {
                Ok((ops, index, link)) => {
                    state.set_link(relays[index].key(), device, link);
                    let limit = clock_limit();
                    for (position, op) in ops {
                        if op.clock > limit {
                            // Held, not merged: the position stays before
                            // it, so a later sync takes it up once its time
                            // has come.
                            state.note(finding(
                                "future_clock",
                                None,
                                Some(device.to_string()),
                                format!(
                                    "operation {} is stamped {} ms ahead of this device's \
                                     clock; held until then",
                                    position.seq,
                                    clock_millis(op.clock).saturating_sub(millis_now())
                                ),
                            ));
                            break;
                        }
                        if !self.may_write(device, op.clock) {
                            state.note(finding(
                                "ignored_device",
                                None,
                                Some(device.to_string()),
                                format!("operation {} signed after its revocation", position.seq),
                            ));
                            break;
                        }
                        match Change::from_body(&op.body) {
                            Ok(change) => {
                                if let Change::Identity { seq, head } = &change
                                    && *seq > last_seq
                                {
                                    announced.push((*device, *head));
                                }
                                state.table.apply(*device, op.clock, &change);
                            }
                            Err(err) => state.note(finding(
                                "bad_operation",
                                None,
                                Some(device.to_string()),
                                err.to_string(),
                            )),
                        }
                        state.clock = state.clock.max(op.clock);
                        state.devices.insert(device.to_string(), position);
                        state.since_snapshot += 1;
                        merged += 1;
                    }
                }
                Err(WalkError::Equivocation(detail)) => {
                    state.note(finding(
                        "equivocation",
                        None,
                        Some(device.to_string()),
                        detail,
                    ));
                }
                Err(WalkError::Other(err)) => {
                    state.note(finding(
                        "bad_operation",
                        None,
                        Some(device.to_string()),
                        err.to_string(),
                    ));
                }
            }
        }

        // Relays behind on a device get the newest head (and the operations
        // they lack, from the cache) again. Another device's head can be
        // passed on only in the shared layout: in the per-relay one it is
        // signed for one relay's mailbox, and would name that mailbox to
        // another relay.
        for (device, heads) in &seen {
            let Some(known) = state.position(device) else {
                continue;
            };
            for (index, listing) in listings.iter().enumerate() {
                if listing.is_none() {
                    continue;
                }
                // This device's own position counts only from its own
                // (owned) heads: a legacy head for it, frozen by anyone
                // holding the mailbox key, must not stop it from writing one.
                let theirs = heads
                    .iter()
                    .filter(|(_, h)| *device != self.device_key() || h.is_owned())
                    .find(|(i, _)| *i == index)
                    .map(|(_, h)| *h);
                if theirs.is_some_and(|h| h.seq >= known.seq) {
                    continue;
                }
                let relay = &relays[index];
                if let Some(seq) = theirs.map(|h| h.seq) {
                    state.note(finding(
                        "stale_head",
                        Some(relay.url()),
                        Some(device.to_string()),
                        format!("served position {seq} of a log merged up to {}", known.seq),
                    ));
                    let acked = state.acked.get(&relay.key().to_string()).copied();
                    if *device == self.device_key()
                        && let Some(acked) = acked.filter(|acked| *acked > seq)
                    {
                        self.record_scores(|s| {
                            s.misbehaved(
                                relay.key(),
                                relay.url(),
                                crate::scores::Misbehaviour::StaleHead,
                                unix_now(),
                                format!(
                                    "served this device's head at position {seq} after \
                                     acknowledging {acked}"
                                ),
                            );
                        });
                    }
                }
                if !shared {
                    if *device == self.device_key() {
                        let base = theirs.map(|h| (h.seq, h.target));
                        if let Ok(link) = self.republish_copies(relay, base, known).await {
                            state.set_link(relay.key(), device, link);
                            reports[index].republished += 1;
                        }
                    }
                    continue;
                }
                // Another device's head can only be passed on as it signed
                // it; this device's own is signed afresh.
                let envelope = heads
                    .iter()
                    .map(|(_, h)| *h)
                    .find(|h| h.seq == known.seq && h.target == known.op && h.is_owned())
                    .map(|h| h.envelope.clone());
                if (envelope.is_some() || *device == self.device_key())
                    && self
                        .republish(relay, known, envelope, theirs.map_or(0, |h| h.seq))
                        .await
                        .is_ok()
                {
                    reports[index].republished += 1;
                }
            }
        }
        (merged, announced)
    }

    /// Learns, once, which operation each head a relay lists names, from
    /// the merged position on (per-relay layout, where a head names that
    /// relay's copy): so two relays holding different operations at one
    /// position are equivocation before anything is merged, as in the
    /// shared layout. A head learnt before costs nothing.
    async fn learn_heads(
        &self,
        state: &mut SyncState,
        relays: &[RelayClient],
        seen: &BTreeMap<VerifyingKey, Vec<(usize, &Head)>>,
    ) {
        let Ok(keys) = self.vault_secrets() else {
            return;
        };
        let mut heads = Vec::new();
        for (device, listed) in seen {
            let known = state.position(device);
            for (index, head) in listed {
                if known.is_none_or(|k| head.seq >= k.seq)
                    && state
                        .translate(relays[*index].key(), device, head)
                        .is_none()
                {
                    heads.push((*device, *index, head.seq, head.target));
                }
            }
        }
        let readers: BTreeMap<usize, ChainReader> = heads
            .iter()
            .map(|(_, index, _, _)| (*index, self.chain_reader(relays, *index).alone()))
            .collect();
        let fetched: Vec<_> = futures_util::stream::iter(heads.iter().map(|(_, index, _, at)| {
            // The copy is kept: the walk that follows starts there.
            self.fetch_core(&readers[index], at, MAX_OP_BLOB, Keep::Copy)
        }))
        .buffered(HEADS_IN_FLIGHT)
        .collect()
        .await;
        for ((device, index, seq, at), fetched) in heads.into_iter().zip(fetched) {
            let relay = &relays[index];
            // What does not open as this device's operation at that
            // position is left to the walk, which reports it.
            match fetched.and_then(|f| Ok((f.core_id, self.open_op(&f.core, &keys)?))) {
                Ok((op, operation)) if operation.device == device && operation.seq == seq => {
                    state.set_link(relay.key(), &device, Link { seq, at, op });
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(relay = relay.url(), %err, "head not learnt"),
            }
        }
    }

    /// Sends `relay` the operations after `from` that lead to `known` (from
    /// the local cache), then `head` (a device's own head as it signed it)
    /// or, without one, this device's own head at `known` (shared layout).
    async fn republish(
        &self,
        relay: &RelayClient,
        known: Position,
        head: Option<SignedRecord>,
        from: u64,
    ) -> Result<()> {
        let keys = self.vault_secrets()?;
        let uploader = self.owner_key(relay.key())?;
        let pow = self.pow_bits(relay).await?;
        let mut next = Some(known.op);
        let mut seq = known.seq;
        while let Some(id) = next {
            if seq <= from {
                break;
            }
            let Some(sealed) = self.cached_op(&id) else {
                break;
            };
            let op = self.open_op(&sealed, &keys)?;
            relay
                .put_bytes(&id, Bytes::from(sealed), &uploader, pow)
                .await
                .map_err(|source| relay_error(relay, source))?;
            next = op.prev;
            seq = seq.saturating_sub(1);
        }
        match head {
            Some(head) => {
                relay
                    .put_head(&head)
                    .await
                    .map_err(|source| relay_error(relay, source))?;
            }
            None => {
                let target = [(relay.key().to_owned(), known.op)].into();
                self.publish_own_head(std::slice::from_ref(relay), known.seq, &target)
                    .await;
            }
        }
        Ok(())
    }

    /// Sends `relay` this device's operations after `base` (its head
    /// there) up to `known`, as that relay's copies, and its head.
    async fn republish_copies(
        &self,
        relay: &RelayClient,
        base: Option<(u64, BlobId)>,
        known: Position,
    ) -> Result<Link> {
        let pow = self.pow_bits(relay).await?;
        self.place(relay, base, known, crate::relay_copy::Links::default(), pow)
            .await
    }

    /// The proof-of-work `relay` asks of uploads now.
    async fn pow_bits(&self, relay: &RelayClient) -> Result<u8> {
        Ok(relay
            .info()
            .await
            .map_err(|source| relay_error(relay, source))?
            .limits
            .pow_bits)
    }

    /// Writes this device's own operations head at `seq` to `relays` in
    /// the current mailbox, naming on each relay the blob `targets` gives
    /// it. Returns how many took it.
    async fn publish_own_head(
        &self,
        relays: &[RelayClient],
        seq: u64,
        targets: &BTreeMap<VerifyingKey, BlobId>,
    ) -> usize {
        let Ok(vault) = self.current_vault() else {
            return 0;
        };
        let me = self.device_key();
        join_all(relays.iter().filter_map(|relay| {
            let target = *targets.get(relay.key())?;
            let vault = &vault;
            Some(async move {
                let head = self
                    .own_head_on(vault, relay.key(), Role::Ops(me), seq, target)
                    .map_err(|err| crate::error::RelayError::Protocol(err.to_string()))?;
                put_own_head(relay, &head, "ops").await
            })
        }))
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count()
    }

    /// Where this device's operation at `position` is on each of `relays`:
    /// the core itself in the shared layout; in the per-relay one the copy
    /// that relay's chain ends in, and nothing for a relay whose chain does
    /// not reach it (the next sync sends it what it lacks: naming the core
    /// there would name one id on several relays).
    fn own_targets(
        &self,
        state: &SyncState,
        relays: &[RelayClient],
        position: Position,
    ) -> BTreeMap<VerifyingKey, BlobId> {
        let me = self.device_key();
        let copies = self.writes_copies();
        relays
            .iter()
            .filter_map(|relay| {
                let at = match state
                    .link(relay.key(), &me)
                    .filter(|l| l.seq == position.seq && l.op == position.op)
                {
                    Some(link) => link.at,
                    None if copies => return None,
                    None => position.op,
                };
                Some((relay.key().to_owned(), at))
            })
            .collect()
    }

    /// Walks `device`'s log back to `known` from the first of the heads
    /// `ahead` (relay index, blob, position; highest first) whose chain
    /// leads there. Returns the operations, oldest first, and where that
    /// relay's chain ends.
    async fn walk(
        &self,
        relays: &[RelayClient],
        keys: &[crate::keys::X25519Secret],
        device: &VerifyingKey,
        ahead: &[(usize, BlobId, u64)],
        known: Option<Position>,
    ) -> Result<(Vec<(Position, Operation)>, usize, Link), WalkError> {
        let mut last = None;
        for (index, target, seq) in ahead {
            let reader = self.chain_reader(relays, *index);
            match self
                .walk_on(&reader, keys, device, *target, *seq, known)
                .await
            {
                Ok(ops) => {
                    let link = ops.last().map(|(position, _)| Link {
                        seq: *seq,
                        at: *target,
                        op: position.op,
                    });
                    if let Some(link) = link {
                        return Ok((ops, *index, link));
                    }
                }
                Err(WalkError::Equivocation(detail)) => {
                    return Err(WalkError::Equivocation(detail));
                }
                Err(other) => last = Some(other),
            }
        }
        Err(last.unwrap_or_else(|| WalkError::Other(Error::Invalid("no head to walk".into()))))
    }

    /// Walks one relay's chain of `device`'s log back from `target` (at
    /// `seq`) to `known`, that relay first for every blob.
    async fn walk_on(
        &self,
        reader: &ChainReader,
        keys: &[crate::keys::X25519Secret],
        device: &VerifyingKey,
        target: BlobId,
        seq: u64,
        known: Option<Position>,
    ) -> Result<Vec<(Position, Operation)>, WalkError> {
        let mut out = Vec::new();
        // (blob on the relay, position, core id the next operation signed)
        let mut next = Some((target, seq, None::<BlobId>));
        while let Some((at, expected, signed)) = next {
            if let Some(known) = known
                && expected <= known.seq
            {
                let id = signed.unwrap_or(at);
                if expected == known.seq && id != known.op {
                    return Err(WalkError::Equivocation(format!(
                        "its log reached position {expected} through operation {id}, not the \
                         {} merged before; not merged",
                        known.op
                    )));
                }
                break;
            }
            if out.len() >= MAX_WALK {
                return Err(WalkError::Other(Error::Invalid("log too long".into())));
            }
            let fetched = self
                .fetch_core(reader, &at, MAX_OP_BLOB, Keep::Core)
                .await
                .map_err(WalkError::Other)?;
            if signed.is_some_and(|signed| signed != fetched.core_id) {
                return Err(WalkError::Other(Error::Invalid(format!(
                    "{} links position {expected} of device {device} to another operation",
                    reader.relay().map_or("a relay", |r| r.url())
                ))));
            }
            let op = self
                .open_op(&fetched.core, keys)
                .map_err(WalkError::Other)?;
            if &op.device != device || op.seq != expected {
                return Err(WalkError::Other(Error::Invalid(format!(
                    "operation {} is not position {expected} of device {device}",
                    fetched.core_id
                ))));
            }
            next = op.prev.map(|prev| {
                (
                    fetched.prev_at(prev),
                    expected.saturating_sub(1),
                    Some(prev),
                )
            });
            out.push((
                Position {
                    seq: expected,
                    op: fetched.core_id,
                },
                op,
            ));
        }
        out.reverse();
        Ok(out)
    }

    /// The newest vault key this device holds (the current one unless it
    /// was revoked): its mailbox is where this device looks.
    pub(super) fn newest_vault(&self) -> Result<crate::keys::VaultKey> {
        self.vault_keys()?
            .pop()
            .ok_or_else(|| Error::Invalid("this device holds no vault key".into()))
    }

    /// Every vault secret this device holds.
    pub(super) fn vault_secrets(&self) -> Result<Vec<crate::keys::X25519Secret>> {
        Ok(self.vault_keys()?.into_iter().map(|k| k.secret).collect())
    }

    /// Appends `change` to this device's log: signs, seals, stores on every
    /// relay, points this device's head at it, and merges it locally.
    /// Returns the relays that did not take it.
    pub(super) async fn append(
        &self,
        state: &mut SyncState,
        change: Change,
    ) -> Result<Vec<String>> {
        self.append_linked(state, change, &BTreeMap::new()).await
    }

    /// [`Client::append`], with the links each relay's copy of the new
    /// operation carries besides the previous one (per-relay layout: a
    /// snapshot's table and covers there).
    async fn append_linked(
        &self,
        state: &mut SyncState,
        change: Change,
        extra: &BTreeMap<VerifyingKey, crate::relay_copy::Links>,
    ) -> Result<Vec<String>> {
        self.require_active()?;
        let me = self.device_key();
        let previous = state.position(&me);
        let clock = next_clock(state.clock, millis_now());
        let op = Operation {
            device: me,
            seq: previous.map_or(1, |p| p.seq + 1),
            prev: previous.map(|p| p.op),
            clock,
            body: change.to_body(),
        };
        let envelope = SignedRecord::sign(&op, &self.device.signing)
            .map_err(|err| Error::Invalid(format!("operation: {err}")))?;
        let vault = self.current_vault()?;
        let (id, sealed) = seal::seal_bytes(&envelope.to_bytes(), &vault.secret.public())
            .map_err(|err| Error::Invalid(format!("cannot seal an operation: {err}")))?;
        self.cache_op(&id, &sealed)?;
        let position = Position {
            seq: op.seq,
            op: id,
        };
        let relays = self.relay_clients();
        let copies = self.writes_copies();
        // Per relay: where its chain of this device's log ends (a relay
        // never checked holds the cores as they are), and what the new
        // copy links to besides.
        let plans: Vec<_> = relays
            .iter()
            .map(|relay| {
                let base = state
                    .link(relay.key(), &me)
                    .filter(|link| previous.is_some_and(|p| link.seq <= p.seq))
                    .map(|link| (link.seq, link.at))
                    .or(previous.map(|p| (p.seq, p.op)));
                (base, extra.get(relay.key()).cloned().unwrap_or_default())
            })
            .collect();
        let sealed = Bytes::from(sealed);
        let results = join_all(relays.iter().zip(plans).map(|(relay, (base, top))| {
            let sealed = sealed.clone();
            let vault = &vault;
            async move {
                if copies {
                    return self.place(relay, base, position, top, 0).await.map(Some);
                }
                let mailbox = self.mailbox_on(vault, relay.key());
                let head = mailbox
                    .sign_head(&self.device, Role::Ops(me), op.seq, id)
                    .map_err(Error::Invalid)?;
                relay
                    .put_bytes(&id, sealed, &mailbox.owner(&self.device), 0)
                    .await
                    .map_err(|source| relay_error(relay, source))?;
                // A relay already holding this very head (a retry after a
                // lost answer, or one relay listed under two URLs) stored it.
                put_own_head(relay, &head, "ops")
                    .await
                    .map_err(|source| relay_error(relay, source))?;
                Ok(None)
            }
        }))
        .await;
        let mut failures = Vec::new();
        for (relay, result) in relays.iter().zip(results) {
            match result {
                Ok(link) => {
                    let acked = state.acked.entry(relay.key().to_string()).or_default();
                    *acked = (*acked).max(op.seq);
                    if let Some(link) = link {
                        state.set_link(relay.key(), &me, link);
                    }
                }
                Err(err) => failures.push(err.to_string()),
            }
        }
        if failures.len() == relays.len() {
            return Err(Error::Invalid(format!(
                "no relay took the change: {}",
                failures.join("; ")
            )));
        }
        state.table.apply(me, clock, &change);
        state.clock = clock;
        state.devices.insert(me.to_string(), position);
        state.since_snapshot += 1;
        self.enter_generation(state, vault.generation);
        Ok(failures)
    }

    /// Writes a snapshot of the table and names it in the `snapshot` slot.
    pub(super) async fn write_snapshot(
        &self,
        state: &mut SyncState,
        relays: &[RelayClient],
    ) -> Result<()> {
        let vault = self.current_vault()?;
        let snapshot = Snapshot {
            table: state.table.clone(),
            clock: state.clock,
        };
        let json = serde_json::to_vec(&snapshot).map_err(|err| Error::Invalid(err.to_string()))?;
        let (blob, sealed) = seal::seal_bytes(&json, &vault.secret.public())
            .map_err(|err| Error::Invalid(format!("cannot seal a snapshot: {err}")))?;
        let size = sealed.len() as u64;
        let copies = self.writes_copies();
        // Per relay, the blob that holds the table there: its own copy in
        // the per-relay layout, else the sealed table itself.
        let placed: Vec<Option<BlobId>> = join_all(relays.iter().map(|relay| {
            let sealed = &sealed;
            let vault = &vault;
            async move {
                let (at, bytes) = if copies {
                    self.seal_copy(relay.key(), sealed, &crate::relay_copy::Links::default())
                        .ok()?
                } else {
                    (blob, sealed.clone())
                };
                let owner = self.mailbox_on(vault, relay.key()).owner(&self.device);
                relay
                    .put_bytes(&at, Bytes::from(bytes), &owner, 0)
                    .await
                    .ok()?;
                Some(at)
            }
        }))
        .await;
        let tables: BTreeMap<VerifyingKey, BlobId> = relays
            .iter()
            .zip(&placed)
            .filter_map(|(relay, at)| Some((relay.key().to_owned(), (*at)?)))
            .collect();
        if tables.is_empty() {
            return Err(Error::Invalid("no relay took the snapshot".into()));
        }
        let covers = state.devices.clone();
        let mut links = BTreeMap::new();
        if copies {
            for relay in relays {
                let Some(table) = tables.get(relay.key()) else {
                    continue;
                };
                let covers = self.cover_links(state, relay, &covers).await;
                links.insert(
                    relay.key().to_owned(),
                    crate::relay_copy::Links {
                        prev: None,
                        state: Some(*table),
                        covers,
                    },
                );
            }
        }
        self.append_linked(
            state,
            Change::Snapshot {
                state: blob,
                size,
                covers,
            },
            &links,
        )
        .await?;
        let me = self.device_key();
        let Some(position) = state.position(&me) else {
            return Ok(());
        };
        let clock = state.clock;
        let targets = self.own_targets(state, relays, position);
        join_all(relays.iter().filter_map(|relay| {
            let vault = &vault;
            // A relay that did not take the table is not pointed at it.
            tables.get(relay.key())?;
            let target = *targets.get(relay.key())?;
            Some(async move {
                let head = self
                    .own_head_on(vault, relay.key(), Role::Snapshot, clock, target)
                    .map_err(|err| crate::error::RelayError::Protocol(err.to_string()))?;
                put_own_head(relay, &head, "snap").await
            })
        }))
        .await;
        state.snapshot = state.clock;
        state.since_snapshot = 0;
        // The table this device wrote before is let go of where a newer
        // one replaced it: a table stored as it is on every relay (shared
        // layout), or each relay's own copy.
        let old_plain = if copies {
            state.my_snapshot.take()
        } else {
            state.my_snapshot.replace(blob.to_string())
        };
        if let Some(old) = old_plain.and_then(|old| old.parse::<BlobId>().ok()) {
            self.delete_own_everywhere(relays, &old).await;
        }
        for relay in relays {
            let Some(at) = tables.get(relay.key()).filter(|_| copies) else {
                continue;
            };
            let old = state
                .my_snapshot_at
                .insert(relay.key().to_string(), at.to_string());
            if let Some(old) = old.and_then(|old| old.parse::<BlobId>().ok()) {
                self.delete_own_everywhere(std::slice::from_ref(relay), &old)
                    .await;
            }
        }
        Ok(())
    }

    /// Where each position `covers` names is on `relay`, for a snapshot's
    /// copy there to link to (a reader takes a covered position only from a
    /// link): the end of that relay's chain where it is the position, else
    /// a copy of the covered operation made for the link (from this
    /// device's cache, which holds what it merged).
    async fn cover_links(
        &self,
        state: &SyncState,
        relay: &RelayClient,
        covers: &BTreeMap<String, Position>,
    ) -> Vec<(VerifyingKey, BlobId)> {
        let Ok(owner) = self.owner_key(relay.key()) else {
            return Vec::new();
        };
        let mut links = Vec::new();
        for (device, position) in covers {
            let Ok(device) = device.parse::<VerifyingKey>() else {
                continue;
            };
            if let Some(link) = state
                .link(relay.key(), &device)
                .filter(|l| l.seq == position.seq && l.op == position.op)
            {
                links.push((device, link.at));
                continue;
            }
            let Some(core) = self
                .cached_op(&position.op)
                .filter(|core| BlobId::of(core) == position.op)
            else {
                continue;
            };
            let Ok((at, copy)) =
                self.seal_copy(relay.key(), &core, &crate::relay_copy::Links::default())
            else {
                continue;
            };
            if relay
                .put_bytes(&at, Bytes::from(copy), &owner, 0)
                .await
                .is_ok()
            {
                links.push((device, at));
            }
        }
        links
    }

    /// Drops this device's claims on copies the table no longer lists (a
    /// removed or replaced file, a copy repaired elsewhere). A relay
    /// deletes a blob once its last owner lets go, so a removal takes
    /// effect when every device that claimed the copies has synced it.
    /// Returns what each delete did.
    async fn collect_garbage(
        &self,
        state: &mut SyncState,
        relays: &[RelayClient],
    ) -> Vec<(BlobId, VerifyingKey, Deleted)> {
        // Compared as text, as `owned` keeps them: parsing every key there
        // (a point decompression each) would dominate a sync that changes
        // nothing.
        let mut listed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (blob, relay) in state.table.copy_locations() {
            listed
                .entry(blob.to_string())
                .or_default()
                .insert(relay.to_string());
        }
        let mut done = Vec::new();
        for (id, holders) in std::mem::take(&mut state.owned) {
            let here = listed.get(&id);
            let (mut kept, gone): (BTreeSet<String>, BTreeSet<String>) = holders
                .into_iter()
                .partition(|holder| here.is_some_and(|relays| relays.contains(holder)));
            let blob = match id.parse::<BlobId>() {
                Ok(blob) if !gone.is_empty() => blob,
                _ => {
                    if !kept.is_empty() {
                        state.owned.insert(id, kept);
                    }
                    continue;
                }
            };
            for holder in gone {
                let Ok(relay_key) = holder.parse::<VerifyingKey>() else {
                    continue;
                };
                // Relays no longer in the set keep their copy until retention.
                let Some(relay) = relays.iter().find(|r| *r.key() == relay_key) else {
                    continue;
                };
                let Ok(key) = self.owner_key(relay.key()) else {
                    kept.insert(holder);
                    continue;
                };
                match relay.delete(&blob, &key).await {
                    Ok(outcome) => done.push((blob, relay_key, outcome)),
                    // This key has no claim there (a copy that came back
                    // through a peer, or a claim refused): nothing to drop.
                    Err(err) if err.code() == Some("not_owner") => {
                        done.push((blob, relay_key, Deleted::Absent));
                    }
                    Err(_) => {
                        kept.insert(holder);
                    }
                }
            }
            if !kept.is_empty() {
                state.owned.insert(id, kept);
            }
        }
        done
    }

    /// Claims, on the relays of this device's set, every copy the table
    /// lists that this device does not own yet (PROTOCOL.md §7.3), so that
    /// no other device, stolen or revoked, can delete it alone. Copies that
    /// moved to a peer are the peer's. Returns how many were claimed and
    /// how many are left for the next sync (failed, or over the limit per
    /// sync).
    async fn claim_copies(&self, state: &mut SyncState, relays: &[RelayClient]) -> (usize, usize) {
        if self.require_active().is_err() {
            return (0, 0);
        }
        // Where each copy is now (after transfers and repairs), on the
        // relays of this device's set.
        let mut wanted: BTreeSet<(BlobId, VerifyingKey)> = state
            .table
            .copy_locations()
            .into_iter()
            .filter(|(blob, relay)| {
                let owned = state
                    .owned
                    .get(&blob.to_string())
                    .is_some_and(|holders| holders.contains(&relay.to_string()));
                !owned && relays.iter().any(|r| r.key() == relay)
            })
            .collect();
        // In the per-relay layout, what was uploaded in this generation is
        // owned by this generation's owner key, which is this device's too:
        // nothing to ask.
        if let Ok(vault) = self.current_vault()
            && self.layouts().of(vault.generation) == Some(Layout::PerRelay)
        {
            let owned_already = state.table.copies_stored_in(vault.generation);
            wanted.retain(|(blob, relay)| {
                let owned = owned_already.contains(&(*blob, *relay));
                if owned {
                    Self::record_owned(state, blob, [*relay]);
                }
                !owned
            });
        }
        // A few hundred per relay at a time: a new device with a large
        // vault would otherwise spend its whole fair share (§7.6a) at once.
        let mut per_relay: BTreeMap<VerifyingKey, usize> = BTreeMap::new();
        let mut pending = 0;
        wanted.retain(|(_, relay)| {
            let count = per_relay.entry(*relay).or_default();
            *count += 1;
            let now = *count <= CLAIMS_PER_RELAY_PER_SYNC;
            pending += usize::from(!now);
            now
        });
        let claims = wanted.into_iter().filter_map(|(blob, relay_key)| {
            let relay = relays.iter().find(|r| *r.key() == relay_key)?;
            let key = self.owner_key(relay.key()).ok()?;
            Some(async move { (blob, relay, relay.claim(&blob, &key).await) })
        });
        let answers: Vec<_> = futures_util::stream::iter(claims)
            .buffer_unordered(CLAIMS_IN_FLIGHT)
            .collect()
            .await;
        let mut claimed = 0;
        let mut refused: BTreeMap<&str, (usize, String)> = BTreeMap::new();
        for (blob, relay, answer) in answers {
            match answer {
                Ok(Claimed::New) => {
                    claimed += 1;
                    Self::record_owned(state, &blob, [*relay.key()]);
                }
                // The upload was this device's, or an earlier claim's
                // answer was lost.
                Ok(Claimed::Already) => Self::record_owned(state, &blob, [*relay.key()]),
                // Nothing to claim: audits report the missing copy, and
                // repair replaces it. Recorded so that every sync does
                // not ask again.
                Ok(Claimed::Absent) => Self::record_owned(state, &blob, [*relay.key()]),
                Err(err) => {
                    pending += 1;
                    // A refusal (quota, too many owners, a relay too old
                    // to know claims) is worth telling; an outage is not.
                    if err.code().is_some() {
                        refused.entry(relay.url()).or_insert((0, err.to_string())).0 += 1;
                    }
                }
            }
        }
        for (url, (count, first)) in refused {
            state.note(finding(
                "claim_refused",
                Some(url),
                None,
                format!(
                    "refused {count} claim(s) of copies your other devices stored ({first}); \
                     those copies can still be deleted by the device that stored them alone"
                ),
            ));
        }
        (claimed, pending)
    }

    /// Moves `state` to vault generation `generation` ([`SyncState::enter`]).
    /// Leaving the shared layout for the per-relay one, this device also
    /// lets go of the plain identity-log entries it stored on each relay:
    /// they name every device, and the sealed copies replace them.
    fn enter_generation(&self, state: &mut SyncState, generation: u32) {
        let from = state.generation;
        state.enter(generation);
        let layouts = self.layouts();
        if from == 0
            || from == generation
            || layouts.of(from) != Some(Layout::Shared)
            || layouts.of(generation) == Some(Layout::Shared)
        {
            return;
        }
        let relays: BTreeSet<String> = self
            .relays
            .entries()
            .iter()
            .map(|r| r.key.to_string())
            .collect();
        let mut releasing = Releasing {
            generation: from,
            owned: BTreeMap::new(),
        };
        for entry in self.log.entries() {
            releasing
                .owned
                .insert(BlobId::of(entry).to_string(), relays.clone());
        }
        state.releasing.push(releasing);
    }

    /// After a rotation: claims the copies under the new generation's
    /// owner key and lets go of the old one's claims.
    pub(super) async fn move_claims(&self, state: &mut SyncState) {
        // Until a copy is claimed by the new owner, the revoked device can
        // delete it: claim in rounds while they make progress (a relay's
        // per-key budget, §7.6a, ends it sooner on a large vault), and
        // leave the rest to the next syncs.
        const MOST_ROUNDS: usize = 40;
        let relays = self.relay_clients();
        let mut pending_before = usize::MAX;
        for _ in 0..MOST_ROUNDS {
            let (_, pending) = self.claim_copies(state, &relays).await;
            if pending == 0 || pending >= pending_before {
                break;
            }
            pending_before = pending;
        }
        self.release_old_claims(state, &relays).await;
    }

    /// Lets go of the claims an earlier generation's owner key holds on
    /// copies the current owner has claimed since (or that the table no
    /// longer lists), so that a device revoked by the rotation, which
    /// knows the old owner key, cannot delete them. Claims whose release
    /// fails for now are kept for the next sync.
    async fn release_old_claims(&self, state: &mut SyncState, relays: &[RelayClient]) {
        if state.releasing.is_empty() || self.require_active().is_err() {
            return;
        }
        let Ok(vaults) = self.vault_keys() else {
            return;
        };
        let listed: BTreeSet<String> = state
            .table
            .copy_locations()
            .into_iter()
            .map(|(blob, _)| blob.to_string())
            .collect();
        for mut releasing in std::mem::take(&mut state.releasing) {
            let Some(vault) = vaults.iter().find(|v| v.generation == releasing.generation) else {
                continue;
            };
            let layout = self
                .layouts()
                .of(vault.generation)
                .unwrap_or(Layout::Shared);
            for (id, holders) in std::mem::take(&mut releasing.owned) {
                let Ok(blob) = id.parse::<BlobId>() else {
                    continue;
                };
                let mut kept = BTreeSet::new();
                for holder in holders {
                    let now_ours = state
                        .owned
                        .get(&id)
                        .is_some_and(|relays| relays.contains(&holder));
                    let relay = relays.iter().find(|r| r.key().to_string() == holder);
                    let Some(relay) = relay.filter(|_| now_ours || !listed.contains(&id)) else {
                        // Not claimed again yet (or on a relay left
                        // behind): released later, or left to retention.
                        if relays.iter().any(|r| r.key().to_string() == holder) {
                            kept.insert(holder);
                        }
                        continue;
                    };
                    let old_owner = Mailbox::new(vault, relay.key(), layout).owner(&self.device);
                    match relay.delete(&blob, &old_owner).await {
                        Ok(_) => {}
                        Err(err) if err.code() == Some("not_owner") => {}
                        Err(_) => {
                            kept.insert(holder);
                        }
                    }
                }
                if !kept.is_empty() {
                    releasing.owned.insert(id, kept);
                }
            }
            if !releasing.owned.is_empty() {
                state.releasing.push(releasing);
            }
        }
    }

    /// Records that this device stored copies of `blob` on `relays`.
    pub(super) fn record_owned(
        state: &mut SyncState,
        blob: &BlobId,
        relays: impl IntoIterator<Item = VerifyingKey>,
    ) {
        state
            .owned
            .entry(blob.to_string())
            .or_default()
            .extend(relays.into_iter().map(|k| k.to_string()));
    }

    /// Pulls, then gives the table and the state to `f`, which may append.
    pub(super) async fn synced(&mut self) -> Result<SyncState> {
        if self.relays.entries().is_empty() {
            return Err(Error::NoRelays);
        }
        let mut state = self.load_sync()?;
        let before = state.fingerprint();
        self.sync_with(&mut state).await?;
        if state.fingerprint() != before {
            self.save_sync(&state)?;
        }
        self.require_active()?;
        Ok(state)
    }

    pub(super) fn store_sync(&self, state: &SyncState) -> Result<()> {
        self.save_sync(state)
    }

    /// Drops claims on copies no longer listed after a change, then saves.
    /// Returns what each delete did.
    pub(super) async fn finish_change(
        &self,
        state: &mut SyncState,
    ) -> Result<Vec<(BlobId, VerifyingKey, Deleted)>> {
        let relays = self.relay_clients();
        let deleted = self.collect_garbage(state, &relays).await;
        self.save_sync(state)?;
        Ok(deleted)
    }

    /// The table as of the last sync (no network).
    pub(super) fn table_of(state: &SyncState) -> &Table {
        &state.table
    }

    /// Relays holding a copy of `blob` this device made and has not
    /// deleted.
    pub(super) fn owned_relays(state: &SyncState, blob: &BlobId) -> BTreeSet<VerifyingKey> {
        state
            .owned
            .get(&blob.to_string())
            .map(|keys| keys.iter().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Brings the identity log up to date from the relays (one listing per
    /// relay), following rotations into the next mailbox.
    pub async fn refresh_identity(&mut self) -> Result<bool> {
        let relays = self.relay_clients();
        let mut changed = false;
        loop {
            let mut listings: Vec<Option<Listing>> = self
                .list_current(&relays)
                .await?
                .into_iter()
                .map(|(mailbox, answer)| answer.ok().map(|(heads, _)| Listing { heads, mailbox }))
                .collect();
            let mut state = self.load_sync()?;
            let noted = state.noted;
            let advanced = self
                .advance_identity(&mut state, &relays, &mut listings)
                .await?;
            if state.noted != noted {
                self.save_sync(&state)?;
            }
            if !advanced {
                return Ok(changed);
            }
            changed = true;
        }
    }

    /// Appends an `identity` operation naming the log's newest entry, so
    /// other devices see the change in this device's log too. Returns
    /// warnings.
    pub(super) async fn announce_identity(&self, state: &mut SyncState) -> Vec<String> {
        let change = Change::Identity {
            seq: self.log.state().last_seq(),
            head: self.log.state().head(),
        };
        match self.append(state, change).await {
            Ok(failures) => failures,
            Err(err) => vec![format!("announcing the identity change: {err}")],
        }
    }

    /// The findings recorded so far (no network).
    pub fn findings(&self) -> Result<Vec<Finding>> {
        Ok(self.load_sync()?.findings)
    }
}

enum WalkError {
    Equivocation(String),
    Other(Error),
}

pub(super) fn relay_error(relay: &RelayClient, source: crate::error::RelayError) -> Error {
    Error::Relay {
        url: relay.url().to_owned(),
        source,
    }
}

fn finding(kind: &str, relay: Option<&str>, device: Option<String>, detail: String) -> Finding {
    Finding {
        kind: kind.to_owned(),
        relay: relay.map(str::to_owned),
        device,
        detail,
        at: unix_now(),
    }
}

/// An owned head by a key the identity never enrolled: someone holding the
/// mailbox key (a device, stolen or not) granted it a slot.
fn unknown_writer(relay: &str, writer: &VerifyingKey) -> Finding {
    finding(
        "unknown_writer",
        Some(relay),
        Some(writer.to_string()),
        "a key this identity never enrolled keeps a head in the mailbox: a device holding \
         the mailbox key (a stolen one?) granted it a slot; its operations and snapshots are \
         ignored"
            .into(),
    )
}

fn reports_all_down(reports: &[RelaySync]) -> bool {
    !reports.is_empty() && reports.iter().all(|r| !r.reachable)
}

/// Every snapshot head any relay lists whose clock is plausible, newest
/// first (a writer's claim, tried in turn until one opens).
/// (Each with the index of a relay that listed it.)
pub(super) fn snapshot_candidates(listings: &[Option<Listing>]) -> Vec<(usize, &Head)> {
    let limit = clock_limit();
    let mut heads: Vec<(usize, &Head)> = listings
        .iter()
        .enumerate()
        .filter_map(|(index, listing)| Some((index, listing.as_ref()?)))
        .flat_map(|(index, l)| l.with_role(Role::Snapshot).map(move |h| (index, h)))
        .filter(|(_, h)| h.seq <= limit)
        .collect();
    heads.sort_by_key(|(_, h)| std::cmp::Reverse(h.seq));
    heads.dedup_by_key(|(_, h)| (h.seq, h.target));
    heads
}
