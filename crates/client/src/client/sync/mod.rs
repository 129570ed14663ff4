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
//!
//! - `state`: what the device knows (`HOME/sync.json`) and its cache;
//! - `identity`: following the identity log, and who may write when;
//! - `pull`: snapshots, walking each device's chain, the merge;
//! - `publish`: this device's operations and snapshots, and what a relay
//!   lacks;
//! - `upkeep`: claims on the copies the table lists, and letting go.

mod identity;
mod publish;
mod pull;
mod state;
mod upkeep;

pub(crate) use state::SyncState;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, VerifyingKey};

use super::Client;
use crate::error::{Error, Result};
use crate::failures::Failures;
use crate::layout::{Layout, Mailbox};
use crate::relay::{Deleted, Head, RelayClient, Role};

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

/// How long a synced folder keeps a replaced or deleted file: 30 days, or
/// `CAIRN_VERSION_WINDOW_SECS`.
pub(super) fn version_window_secs() -> u64 {
    std::env::var("CAIRN_VERSION_WINDOW_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(30 * 86_400)
}

impl Client {
    /// The highest hybrid-logical clock this device accepts now.
    pub(super) fn clock_limit(&self) -> u64 {
        self.clock
            .now_millis()
            .saturating_add(MAX_CLOCK_SKEW_MS)
            .saturating_mul(1 << 16)
            .saturating_add(0xffff)
    }

    /// A finding of `kind`, noted now.
    fn finding(
        &self,
        kind: &str,
        relay: Option<&str>,
        device: Option<String>,
        detail: String,
    ) -> Finding {
        Finding {
            kind: kind.to_owned(),
            relay: relay.map(str::to_owned),
            device,
            detail,
            at: self.now(),
        }
    }

    /// An owned head by a key the identity never enrolled: someone holding
    /// the mailbox key (a device, stolen or not) granted it a slot.
    fn unknown_writer(&self, relay: &str, writer: &VerifyingKey) -> Finding {
        self.finding(
            "unknown_writer",
            Some(relay),
            Some(writer.to_string()),
            "a key this identity never enrolled keeps a head in the mailbox: a device holding \
             the mailbox key (a stolen one?) granted it a slot; its operations and snapshots \
             are ignored"
                .into(),
        )
    }
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

/// An answer from this device's own state, because no relay answered.
#[derive(Clone, Debug, Serialize)]
pub struct Offline {
    /// When a relay last answered a sync (Unix seconds), if one ever did:
    /// the answer is as of then. Kept to within an hour (the state is not
    /// rewritten for the time alone more often), so the answer may be a
    /// little newer than this says, never older.
    pub synced_at: Option<u64>,
    /// Why each relay did not answer.
    pub why: Failures,
}

impl Offline {
    /// This device's state `state`, read because of `why`.
    pub(in crate::client) fn of(state: &SyncState, why: Failures) -> Self {
        Self {
            synced_at: (state.synced_at > 0).then_some(state.synced_at),
            why,
        }
    }
}

/// Where this device stands: what a sync found, or, when no relay
/// answered, what this device knew at its last sync.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// The sync's report; without relays, this device's last view (every
    /// relay down, nothing merged).
    pub sync: SyncReport,
    /// Set when no relay answered.
    pub offline: Option<Offline>,
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
/// burst of 3000 requests per key (and inside the 600 of earlier relays).
const CLAIMS_PER_RELAY_PER_SYNC: usize = 256;

impl Client {
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
        let stale = report.is_ok() && note_answered(&mut state, self.now());
        if state.fingerprint() != before || stale {
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
        let (listings, mut relay_reports, down) = loop {
            let answers = self.list_current(&relays).await?;
            let mut listings = Vec::new();
            let mut reports = Vec::new();
            let mut down = Failures::new();
            for (relay, (mailbox, answer)) in relays.iter().zip(answers) {
                match answer {
                    Ok((heads, bad)) => {
                        if bad > 0 {
                            state.note(self.finding(
                                "bad_head",
                                Some(relay.url()),
                                None,
                                format!(
                                    "listed {} that {} not verify",
                                    crate::text::count(bad as u64, "head", "heads"),
                                    if bad == 1 { "does" } else { "do" }
                                ),
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
                        down.at(relay.url(), &err);
                        listings.push(None);
                    }
                }
            }
            let before = self.newest_vault()?.generation;
            self.advance_identity(state, &relays, &mut listings).await?;
            if self.newest_vault()?.generation == before {
                break (listings, reports, down);
            }
            // A rotation moved the mailbox: list the new one.
        };
        if reports_all_down(&relay_reports) {
            return Err(Error::Offline(down));
        }

        let generation = self.newest_vault()?.generation;
        let moved = state.generation != generation;
        let mut snapshot_applied = false;
        // The newest snapshot that opens, not merely the highest head: a
        // stolen device can name anything in its own snapshot slot.
        for (index, head) in snapshot_candidates(&listings, self.clock_limit()) {
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
                    state.note(self.finding(
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

        // Folder files replaced longer ago than the version window are let
        // go of (by the garbage collection below, like a removed file).
        let cutoff = self
            .clock
            .now_millis()
            .saturating_sub(version_window_secs().saturating_mul(1000));
        state.table.prune_versions(cutoff << 16);
        let (claimed, claims_pending) = self.claim_copies(state, &relays).await;
        self.release_old_claims(state, &relays).await;
        self.collect_garbage(state, &relays).await;
        let mut snapshot_written = false;
        if state.since_snapshot >= SNAPSHOT_EVERY && self.require_active().is_ok() {
            self.write_snapshot(state, &relays).await?;
            snapshot_written = true;
        }

        let devices = self.device_reports(state);
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

    /// Each device's position in `state`, named from the identity log.
    fn device_reports(&self, state: &SyncState) -> Vec<DeviceSync> {
        let me = self.device_key();
        state
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
            .collect()
    }

    /// Where this device stands: [`Client::sync`], or, when no relay
    /// answers, this device's state as of its last sync, saying so (a
    /// person asks `status` most when something is down).
    pub async fn status(&mut self) -> Result<StatusReport> {
        match self.sync().await {
            Ok(sync) => Ok(StatusReport {
                sync,
                offline: None,
            }),
            Err(Error::Offline(why)) => {
                let state = self.load_sync()?;
                Ok(StatusReport {
                    sync: self.local_report(&state, &why),
                    offline: Some(Offline::of(&state, why)),
                })
            }
            Err(err) => Err(err),
        }
    }

    /// A sync report of `state` alone: every relay down (for the reason
    /// `why` gives it), nothing merged or written.
    fn local_report(&self, state: &SyncState, why: &Failures) -> SyncReport {
        let relays = self
            .relays
            .entries()
            .iter()
            .map(|entry| RelaySync {
                url: entry.url.clone(),
                reachable: false,
                heads: 0,
                republished: 0,
                error: why
                    .iter()
                    .find(|f| f.relay() == Some(entry.url.as_str()))
                    .map(|f| f.what().to_owned()),
            })
            .collect();
        SyncReport {
            revoked: Vec::new(),
            vault_generation: self.log.state().vault().map_or(0, |v| v.generation),
            relays,
            devices: self.device_reports(state),
            merged: 0,
            snapshot_applied: false,
            snapshot_written: false,
            claimed: 0,
            claims_pending: 0,
            files: Self::table_of(state).files().count(),
            findings: Vec::new(),
        }
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

    /// Pulls, then gives the table and the state to `f`, which may append.
    pub(super) async fn synced(&mut self) -> Result<SyncState> {
        if self.relays.entries().is_empty() {
            return Err(Error::NoRelays);
        }
        let mut state = self.load_sync()?;
        let before = state.fingerprint();
        self.sync_with(&mut state).await?;
        let stale = note_answered(&mut state, self.now());
        if state.fingerprint() != before || stale {
            self.save_sync(&state)?;
        }
        self.require_active()?;
        Ok(state)
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
}

/// Notes that a relay answered a sync `now`; true when the time saved
/// is over an hour old, so that the state is saved for it. Saved with what
/// changed, or once an hour: enough to say how old the table is when no
/// relay answers, without a write per command.
fn note_answered(state: &mut SyncState, now: u64) -> bool {
    let stale = now.saturating_sub(state.synced_at) >= 3600;
    state.synced_at = now;
    stale
}

pub(super) fn relay_error(relay: &RelayClient, error: crate::error::RelayError) -> Error {
    Error::Relay {
        url: relay.url().to_owned(),
        error,
    }
}

fn reports_all_down(reports: &[RelaySync]) -> bool {
    !reports.is_empty() && reports.iter().all(|r| !r.reachable)
}

/// Every snapshot head any relay lists whose clock is plausible, newest
/// first (a writer's claim, tried in turn until one opens).
/// (Each with the index of a relay that listed it.)
/// `limit` is the highest clock accepted ([`Client::clock_limit`]).
pub(super) fn snapshot_candidates(listings: &[Option<Listing>], limit: u64) -> Vec<(usize, &Head)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The time a relay last answered is kept current, and the state is
    /// saved for it only when the saved time is an hour old.
    #[test]
    fn an_answer_is_noted_and_saved_hourly() {
        let mut state = SyncState::default();
        let first = 1_700_000_000;
        assert!(note_answered(&mut state, first), "never noted: save");
        assert_eq!(state.synced_at, first);
        assert!(
            !note_answered(&mut state, first + 10),
            "noted just now: no save"
        );
        assert_eq!(state.synced_at, first + 10);
        assert!(
            !note_answered(&mut state, first + 3609),
            "noted 59 min ago: no save"
        );
        assert!(
            note_answered(&mut state, first + 3609 + 3600),
            "an hour old: save"
        );
        assert_eq!(state.synced_at, first + 7209);
    }
}
