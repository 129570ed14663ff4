//! The copies the table lists: claiming them, letting go of removed ones,
//! and moving claims to a new owner after a rotation.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt as _;

use cairn_proto::{BlobId, ErrorCode, VerifyingKey};

use super::state::{Releasing, SyncState};
use super::{CLAIMS_IN_FLIGHT, CLAIMS_PER_RELAY_PER_SYNC};
use crate::client::Client;
use crate::layout::{Layout, Mailbox};
use crate::relay::{Claimed, Deleted, RelayClient};

/// How long a chunk listed by no file is held before this device lets go of
/// it: a day, or `CAIRN_CHUNK_HOLD_SECS` (0 lets go at once; tests, or a
/// device that stores alone).
fn chunk_hold() -> u64 {
    std::env::var("CAIRN_CHUNK_HOLD_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(86_400)
}

impl Client {
    /// Drops this device's claims on copies the table no longer lists (a
    /// removed or replaced file, a copy repaired elsewhere). A relay
    /// deletes a blob once its last owner lets go, so a removal takes
    /// effect when every device that claimed the copies has synced it.
    /// Returns what each delete did.
    pub(super) async fn collect_garbage(
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
        // Chunks are the blobs two files can share (PROTOCOL.md §10.8):
        // remembered as such while listed, so that once unlisted they are
        // held before being let go of.
        for entry in state.table.stored_entries() {
            state
                .chunks
                .extend(entry.chunks.iter().map(ToString::to_string));
        }
        let (now, hold) = (self.now(), chunk_hold());
        let mut done = Vec::new();
        for (id, holders) in std::mem::take(&mut state.owned) {
            let here = listed.get(&id);
            let unlisted_somewhere = holders
                .iter()
                .any(|holder| !here.is_some_and(|relays| relays.contains(holder)));
            if !unlisted_somewhere {
                state.unlisted_since.remove(&id);
            } else if state.chunks.contains(&id) {
                // Another device may have claimed this chunk, on this
                // relay, for a file it is storing now, whose operation this
                // device has not seen: letting go at once would delete the
                // chunk under it. Held until unlisted for longer than any
                // put takes; by then its operation is merged (and lists the
                // chunk there again) or there is none.
                let since = *state.unlisted_since.entry(id.clone()).or_insert(now);
                if now.saturating_sub(since) < hold {
                    state.owned.insert(id, holders);
                    continue;
                }
            }
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
                    Err(err) if err.code() == Some(ErrorCode::NotOwner) => {
                        done.push((blob, relay_key, Deleted::Absent));
                    }
                    Err(_) => {
                        kept.insert(holder);
                    }
                }
            }
            if kept.is_empty() {
                state.chunks.remove(&id);
                state.unlisted_since.remove(&id);
            } else {
                state.owned.insert(id, kept);
            }
        }
        // What is neither owned nor listed is nothing to hold.
        let owned = &state.owned;
        state.chunks.retain(|id| owned.contains_key(id));
        state.unlisted_since.retain(|id, _| owned.contains_key(id));
        done
    }

    /// Claims, on the relays of this device's set, every copy the table
    /// lists that this device does not own yet (PROTOCOL.md §7.3), so that
    /// no other device, stolen or revoked, can delete it alone. Copies that
    /// moved to a peer are the peer's. Returns how many were claimed and
    /// how many are left for the next sync (failed, or over the limit per
    /// sync).
    pub(super) async fn claim_copies(
        &self,
        state: &mut SyncState,
        relays: &[RelayClient],
    ) -> (usize, usize) {
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
            state.note(self.finding(
                "claim_refused",
                Some(url),
                None,
                format!(
                    "refused {} of copies your other devices stored ({first}); those copies can \
                     still be deleted by the device that stored them alone",
                    crate::text::count(count as u64, "claim", "claims")
                ),
            ));
        }
        (claimed, pending)
    }

    /// Moves `state` to vault generation `generation` ([`SyncState::enter`]).
    /// Leaving the shared layout for the per-relay one, this device also
    /// lets go of the plain identity-log entries it stored on each relay:
    /// they name every device, and the sealed copies replace them.
    pub(super) fn enter_generation(&self, state: &mut SyncState, generation: u32) {
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
    pub(in crate::client) async fn move_claims(&self, state: &mut SyncState) {
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
    pub(super) async fn release_old_claims(&self, state: &mut SyncState, relays: &[RelayClient]) {
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
                        Err(err) if err.code() == Some(ErrorCode::NotOwner) => {}
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
    pub(in crate::client) fn record_owned(
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
}
