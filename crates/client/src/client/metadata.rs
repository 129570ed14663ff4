//! Keeping the metadata: what a device that joins later, or a recovery from
//! the phrase, needs to rebuild the file table stays on every relay of the
//! set. That is the identity log, the newest snapshot (its operation and its
//! sealed table), and every device's operations after what the snapshot
//! covers (all of them while there is no snapshot).
//!
//! In the normal course nobody reads those blobs (a device fetches only the
//! operations it has not merged), so relays would expire them with their
//! retention, and a recovery months later would find the file table gone.
//! A repair therefore claims each of them on every relay (PROTOCOL.md
//! §7.3): the claim is an access, which renews the blob, and makes this
//! device one of its owners, so that no other device alone can delete it.
//! A relay that lacks one gets it again, from this device's own copy or
//! from another relay, verified by hash on the way.
//!
//! Blobs no longer needed (operations a newer snapshot covers, a replaced
//! snapshot) are simply not renewed, and expire.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Serialize;

use cairn_proto::{BlobId, VerifyingKey};

use super::Client;
use super::chains::Keep;
use super::sync::{
    Listing, MAX_OP_BLOB, MAX_SNAPSHOT_BLOB, MAX_WALK, SyncState, relay_error, snapshot_candidates,
};
use crate::crdt::Change;
use crate::error::Error;
use crate::error::Result;
use crate::layout::Layout;
use crate::relay::{Claimed, RelayClient};

/// Claims sent at once while keeping the metadata.
const IN_FLIGHT: usize = 16;

/// What keeping the metadata did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MetadataReport {
    /// Copies of metadata a new device or a recovery needs, counted per
    /// relay that should hold one ((blob, relay) pairs: in the per-relay
    /// layout each relay holds copies of its own).
    pub blobs: usize,
    /// (blob, relay) pairs found held, and renewed.
    pub renewed: usize,
    /// (blob, relay) pairs a relay lacked and was given again.
    pub restored: usize,
    /// Per relay, what could not be checked or restored, with the first
    /// error (a later repair tries again).
    pub failed: Vec<String>,
}

/// Where the bytes of a needed blob come from, should a relay lack it.
enum Origin {
    /// This device holds them.
    Local(Bytes),
    /// Another relay of the set, up to this many bytes.
    Remote(usize),
    /// Nowhere: a relay's own copy this device never held.
    Nowhere,
}

/// A blob a new device or a recovery needs.
struct Needed {
    /// The relay (index in the set) whose copy it is, or `None` for a blob
    /// every relay holds under the same id.
    on: Option<usize>,
    id: BlobId,
    source: Origin,
}

impl Client {
    /// Renews every metadata blob on every relay of the set, and restores
    /// those a relay lacks.
    pub(super) async fn keep_metadata(&self, state: &SyncState) -> MetadataReport {
        let relays = self.blob_clients();
        let mut report = MetadataReport::default();
        let mut failures: BTreeMap<String, (usize, String)> = BTreeMap::new();
        let needed = match self
            .metadata_blobs(state, &relays, &mut report.failed)
            .await
        {
            Ok(needed) => needed,
            Err(err) => {
                report
                    .failed
                    .push(format!("the metadata could not be listed: {err}"));
                return report;
            }
        };
        report.blobs = needed
            .iter()
            .map(|n| if n.on.is_some() { 1 } else { relays.len() })
            .sum();
        if !self.in_shared_layout() {
            // The log's copy on each relay counts as one blob: published
            // again, which renews it, or restores it where it is missing.
            report.blobs += relays.len();
            match self.publish_identity_counting().await {
                Ok(answers) => {
                    for (url, answer) in answers {
                        match answer {
                            Ok(true) => report.restored += 1,
                            Ok(false) => report.renewed += 1,
                            Err(err) => report
                                .failed
                                .push(format!("{url}: the identity log not kept: {err}")),
                        }
                    }
                }
                Err(err) => report
                    .failed
                    .push(format!("the identity log not kept: {err}")),
            }
        }
        let relays = &relays;
        let checks = needed.iter().flat_map(|needed| {
            relays
                .iter()
                .enumerate()
                .filter(|(index, _)| needed.on.is_none_or(|on| on == *index))
                .map(move |(_, relay)| async move {
                    let outcome = self
                        .keep_one(relays, relay, &needed.id, &needed.source)
                        .await;
                    (relay, outcome)
                })
        });
        let outcomes: Vec<_> = futures_util::stream::iter(checks)
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for (relay, outcome) in outcomes {
            match outcome {
                Ok(false) => report.renewed += 1,
                Ok(true) => report.restored += 1,
                Err(err) => {
                    let entry = failures
                        .entry(relay.url().to_owned())
                        .or_insert((0, err.to_string()));
                    entry.0 += 1;
                }
            }
        }
        report
            .failed
            .extend(failures.into_iter().map(|(url, (count, first))| {
                format!(
                    "{url}: {} not kept: {first}",
                    crate::text::count(count as u64, "metadata blob", "metadata blobs")
                )
            }));
        report
    }

    /// Claims `id` on `relay`, uploading it there if the relay lacks it.
    /// Returns whether it had to be restored.
    async fn keep_one(
        &self,
        relays: &[RelayClient],
        relay: &RelayClient,
        id: &BlobId,
        source: &Origin,
    ) -> Result<bool> {
        let relay_error = |source| relay_error(relay, source);
        let key = self.owner_key(relay.key())?;
        match relay.claim(id, &key).await.map_err(relay_error)? {
            Claimed::New | Claimed::Already => Ok(false),
            Claimed::Absent => {
                let bytes = match source {
                    Origin::Nowhere => {
                        return Err(Error::Invalid(format!(
                            "lacks its copy {id}, which no other relay or this device holds; \
                             the device that wrote it gives it back at its next `cairn repair`"
                        )));
                    }
                    Origin::Local(bytes) => bytes.clone(),
                    Origin::Remote(max) => {
                        let others: Vec<RelayClient> = relays
                            .iter()
                            .filter(|r| r.key() != relay.key())
                            .cloned()
                            .collect();
                        Bytes::from(self.fetch_small_scored(&others, id, *max).await?)
                    }
                };
                relay
                    .put_bytes(id, bytes, &key, 0)
                    .await
                    .map_err(relay_error)?;
                Ok(true)
            }
        }
    }

    /// The metadata blobs a new device needs, with where their bytes are.
    /// What cannot be read (a snapshot, an operation no relay serves) is
    /// noted in `problems`, and the rest is kept all the same.
    async fn metadata_blobs(
        &self,
        state: &SyncState,
        relays: &[RelayClient],
        problems: &mut Vec<String>,
    ) -> Result<Vec<Needed>> {
        let vault = self.newest_vault()?;
        let layout = self
            .layouts()
            .of(vault.generation)
            .unwrap_or(Layout::PerRelay);
        // In the per-relay layout the log is a sealed copy per relay, kept
        // by publishing it again (`keep_metadata`), not entry by entry.
        let mut needed: Vec<Needed> = match layout {
            Layout::Shared => self
                .log
                .entries()
                .iter()
                .map(|entry| Needed {
                    on: None,
                    id: BlobId::of(entry),
                    source: Origin::Local(Bytes::copy_from_slice(entry)),
                })
                .collect(),
            Layout::PerRelay => Vec::new(),
        };
        let listings: Vec<Option<Listing>> = self
            .list_in(relays, &vault, layout)
            .await
            .into_iter()
            .map(|(mailbox, answer)| answer.ok().map(|(heads, _)| Listing { heads, mailbox }))
            .collect();
        match layout {
            Layout::Shared => {
                self.chains_needed(state, relays, &listings, None, &mut needed, problems)
                    .await?;
            }
            // Each relay holds its own copies: each relay's chains are
            // followed on that relay.
            Layout::PerRelay => {
                for index in 0..relays.len() {
                    if listings[index].is_some() {
                        self.chains_needed(
                            state,
                            relays,
                            &listings,
                            Some(index),
                            &mut needed,
                            problems,
                        )
                        .await?;
                    }
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        needed.retain(|n| seen.insert((n.on, n.id)));
        Ok(needed)
    }

    /// Adds to `needed` the newest snapshot (its operation and table) and
    /// every device's operations after what it covers, as the relay `on`
    /// (an index in `relays`) lists and holds them, for that relay; with
    /// `None`, as any relay does, for every relay (the same ids).
    async fn chains_needed(
        &self,
        state: &SyncState,
        relays: &[RelayClient],
        listings: &[Option<Listing>],
        on: Option<usize>,
        needed: &mut Vec<Needed>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let keys = self.vault_secrets()?;
        // One relay's own chains, or (shared layout) any relay's.
        let (reader, listings) = match on {
            Some(index) => (
                self.chain_reader(relays, index).alone(),
                &listings[index..=index],
            ),
            None => (self.chain_reader(relays, 0), listings),
        };
        // A relay's own copy comes back only from this device's cache; a
        // core stored as it is (`plain`) from any relay too.
        let place = |id: BlobId, bytes: Option<Vec<u8>>, max: usize, plain: bool| Needed {
            on,
            id,
            source: match bytes {
                Some(bytes) if BlobId::of(&bytes) == id => Origin::Local(Bytes::from(bytes)),
                _ if plain || on.is_none() => Origin::Remote(max),
                _ => Origin::Nowhere,
            },
        };
        let relay_name = on.map_or(String::new(), |i| format!("{}: ", relays[i].url()));
        // The snapshot sync applied or wrote (its clock is the state's), not
        // merely the highest head: a stolen device can name anything in its
        // own snapshot slot, and a forged one would stop the renewal of the
        // operations it claims to cover.
        let snapshot = snapshot_candidates(listings, self.clock_limit())
            .into_iter()
            .find(|(_, h)| h.seq == state.snapshot())
            .map(|(_, h)| h.target);
        let mut covered: BTreeMap<VerifyingKey, u64> = BTreeMap::new();
        if let Some(target) = snapshot {
            match self
                .fetch_core(&reader, &target, MAX_OP_BLOB, Keep::Core)
                .await
            {
                Ok(fetched) => {
                    let plain = fetched.links.is_none();
                    needed.push(place(target, self.cached_op(&target), MAX_OP_BLOB, plain));
                    if let Ok(op) = self.open_op(&fetched.core, &keys)
                        && let Ok(Change::Snapshot {
                            state: blob,
                            covers,
                            ..
                        }) = Change::from_body(&op.body)
                    {
                        let table = fetched.links.as_ref().and_then(|l| l.state);
                        needed.push(match table {
                            // A table copy is not kept by this device.
                            Some(at) => place(at, None, MAX_SNAPSHOT_BLOB, false),
                            None => place(blob, None, MAX_SNAPSHOT_BLOB, true),
                        });
                        // A copy's covers count where it links them (and the
                        // linked copies are kept); a reader walks the rest.
                        let linked = fetched.links.as_ref().map(|l| &l.covers);
                        for (device, at) in linked.into_iter().flatten() {
                            needed.push(place(*at, self.cached_op(at), MAX_OP_BLOB, false));
                            if let Some(position) = covers.get(&device.to_string()) {
                                covered.insert(*device, position.seq);
                            }
                        }
                        if linked.is_none() {
                            covered.extend(covers.into_iter().filter_map(|(device, position)| {
                                Some((device.parse().ok()?, position.seq))
                            }));
                        }
                    }
                }
                Err(err) => problems.push(format!("{relay_name}snapshot {target}: {err}")),
            }
        }

        // Each device's operations after the snapshot's cover, newest first,
        // from the local cache where they are.
        for (device, position) in state.positions() {
            let floor = covered.get(&device).copied().unwrap_or(0);
            // Where the chain starts: on one relay, where its head was last
            // seen (a relay behind keeps what it has; the device sends it
            // the rest); across relays, the merged position.
            let start = match on {
                Some(index) => match state.link(relays[index].key(), &device) {
                    Some(link) => (link.seq, link.at, link.op),
                    None => continue,
                },
                None => (position.seq, position.op, position.op),
            };
            let mut next = Some(start);
            while let Some((seq, at, core_id)) = next {
                if seq <= floor || needed.len() > MAX_WALK {
                    break;
                }
                let fetched = match self.fetch_core(&reader, &at, MAX_OP_BLOB, Keep::Core).await {
                    Ok(fetched) if fetched.core_id == core_id => fetched,
                    Ok(_) => {
                        problems.push(format!(
                            "{relay_name}operation {seq} of device {}: another operation in its \
                             place",
                            device.short()
                        ));
                        break;
                    }
                    Err(err) => {
                        problems.push(format!(
                            "{relay_name}operation {seq} of device {}: {err}",
                            device.short()
                        ));
                        break;
                    }
                };
                let plain = fetched.links.is_none();
                needed.push(place(at, self.cached_op(&at), MAX_OP_BLOB, plain));
                let op = match self.open_op(&fetched.core, &keys) {
                    Ok(op) => op,
                    Err(err) => {
                        problems.push(format!("{relay_name}{err}"));
                        break;
                    }
                };
                next = op.prev.map(|prev| (seq - 1, fetched.prev_at(prev), prev));
            }
        }
        Ok(())
    }
}
