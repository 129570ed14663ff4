//! Writing this device's operations and snapshots, and sending a relay
//! what it lacks.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::future::join_all;

use cairn_proto::{BlobId, Operation, SignedRecord, VerifyingKey};

use super::relay_error;
use super::state::SyncState;
use crate::client::Client;
use crate::client::chains::Link;
use crate::client::mailbox::put_own_head;
use crate::crdt::{Change, Position, Snapshot, next_clock};
use crate::error::{Error, Result};
use crate::relay::{RelayClient, Role};
use crate::seal;

impl Client {
    /// Sends `relay` the operations after `from` that lead to `known` (from
    /// the local cache), then `head` (a device's own head as it signed it)
    /// or, without one, this device's own head at `known` (shared layout).
    pub(super) async fn republish(
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
    pub(super) async fn republish_copies(
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
    pub(super) async fn pow_bits(&self, relay: &RelayClient) -> Result<u8> {
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
    pub(super) async fn publish_own_head(
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
    pub(super) fn own_targets(
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

    /// Appends `change` to this device's log: signs, seals, stores on every
    /// relay, points this device's head at it, and merges it locally.
    /// Returns the relays that did not take it.
    pub(in crate::client) async fn append(
        &self,
        state: &mut SyncState,
        change: Change,
    ) -> Result<Vec<String>> {
        self.append_linked(state, vec![change], &BTreeMap::new())
            .await
    }

    /// Appends `changes` to this device's log as consecutive operations,
    /// as [`Client::append`] does one, but pointing each relay's head only
    /// at the last: a folder pass of thousands of writes costs one head
    /// write per relay.
    pub(in crate::client) async fn append_all(
        &self,
        state: &mut SyncState,
        changes: Vec<Change>,
    ) -> Result<Vec<String>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        self.append_linked(state, changes, &BTreeMap::new()).await
    }

    /// [`Client::append_all`], with the links each relay's copy of the last
    /// operation carries besides the previous one (per-relay layout: a
    /// snapshot's table and covers there).
    async fn append_linked(
        &self,
        state: &mut SyncState,
        changes: Vec<Change>,
        extra: &BTreeMap<VerifyingKey, crate::relay_copy::Links>,
    ) -> Result<Vec<String>> {
        self.require_active()?;
        let me = self.device_key();
        let previous = state.position(&me);
        let vault = self.current_vault()?;
        // Signed, sealed and cached first: the cache is where the chains to
        // each relay are built from.
        let mut written = Vec::with_capacity(changes.len());
        let mut clock = state.clock;
        let mut last = previous;
        for change in changes {
            clock = next_clock(clock, self.clock.now_millis());
            let op = Operation {
                device: me,
                seq: last.map_or(1, |p| p.seq + 1),
                prev: last.map(|p| p.op),
                clock,
                body: change.to_body(),
            };
            let envelope = SignedRecord::sign(&op, &self.device.signing)
                .map_err(|err| Error::Invalid(format!("operation: {err}")))?;
            let (id, sealed) = seal::seal_bytes(&envelope.to_bytes(), &vault.secret.public())
                .map_err(|err| Error::Invalid(format!("cannot seal an operation: {err}")))?;
            self.cache_op(&id, &sealed)?;
            let position = Position {
                seq: op.seq,
                op: id,
            };
            last = Some(position);
            written.push((position, clock, change, Bytes::from(sealed)));
        }
        let Some(&(position, ..)) = written.last() else {
            return Ok(Vec::new());
        };
        let relays = self.relay_clients();
        let copies = self.writes_copies();
        // Per relay: where its chain of this device's log ends (a relay
        // never checked holds the cores as they are), and what the newest
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
        let written = &written;
        let results = join_all(relays.iter().zip(plans).map(|(relay, (base, top))| {
            let vault = &vault;
            async move {
                if copies {
                    return self.place(relay, base, position, top, 0).await.map(Some);
                }
                let mailbox = self.mailbox_on(vault, relay.key());
                let owner = mailbox.owner(&self.device);
                for (at, _, _, sealed) in written {
                    relay
                        .put_bytes(&at.op, sealed.clone(), &owner, 0)
                        .await
                        .map_err(|source| relay_error(relay, source))?;
                }
                let head = mailbox
                    .sign_head(
                        &self.device,
                        Role::Ops(me),
                        position.seq,
                        position.op,
                        self.clock.now(),
                    )
                    .map_err(Error::Invalid)?;
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
                    *acked = (*acked).max(position.seq);
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
        for (_, clock, change, _) in written {
            state.table.apply(me, *clock, change);
        }
        state.clock = clock;
        state.devices.insert(me.to_string(), position);
        state.since_snapshot += written.len() as u64;
        self.enter_generation(state, vault.generation);
        Ok(failures)
    }

    /// Writes a snapshot of the table and names it in the `snapshot` slot.
    pub(in crate::client) async fn write_snapshot(
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
            vec![Change::Snapshot {
                state: blob,
                size,
                covers,
            }],
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
}
