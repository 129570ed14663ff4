//! Reading what other devices wrote: snapshots, each device's chain of
//! operations on a relay (walked back and verified), and the merge.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt as _;
use futures_util::future::join_all;

use cairn_proto::{BlobId, Operation, SignedRecord, Verified, VerifyingKey};

use super::state::SyncState;
use super::{HEADS_IN_FLIGHT, Listing, MAX_OP_BLOB, MAX_SNAPSHOT_BLOB, MAX_WALK, RelaySync};
use crate::client::Client;
use crate::client::chains::{ChainReader, Keep, Link, copy_bound};
use crate::crdt::{Change, Position, Snapshot, clock_millis};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::relay::{Head, RelayClient, Role};
use crate::seal;

pub(super) enum WalkError {
    Equivocation(String),
    Other(Error),
}

impl Client {
    /// Opens and verifies a sealed operation.
    pub(in crate::client) fn open_op(
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

    /// [`crate::client::mailbox::fetch_small`], noting in the relays' records any
    /// that served wrong bytes (a lie, not an outage).
    pub(in crate::client) async fn fetch_small_scored(
        &self,
        relays: &[RelayClient],
        id: &BlobId,
        max: usize,
    ) -> Result<Vec<u8>> {
        crate::client::mailbox::fetch_small_noting(relays, id, max, |relay| {
            self.record_scores(|s| {
                s.misbehaved(
                    relay.key(),
                    relay.url(),
                    crate::scores::Misbehaviour::Corrupt,
                    self.now(),
                    format!("served blob {id} with wrong bytes"),
                );
            });
        })
        .await
    }

    /// Applies the snapshot `head` (listed by `relays[index]`) names if it
    /// covers operations this device has not merged. Returns whether it
    /// did.
    pub(super) async fn apply_snapshot(
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
        let alone = reader.alone();
        let op = self.open_op(&fetched.core, &keys)?;
        if !self.may_write(&op.device, op.clock) {
            return Err(Error::Invalid("written by a device that may not".into()));
        }
        if head.writer.is_some_and(|writer| writer != op.device) {
            return Err(Error::Invalid(
                "a device's snapshot head names another device's operation".into(),
            ));
        }
        if op.clock > self.clock_limit() || head.seq != op.clock {
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
            // Where the covered operation is: a core stored as it is names
            // itself on any relay; a copy names this relay's copy of it.
            let (at, from) = match &fetched.links {
                None => (position.op, &reader),
                Some(links) => match links.covers.iter().find(|(d, _)| *d == key) {
                    Some((_, at)) => (*at, &alone),
                    None => continue,
                },
            };
            let copy = self.fetch_core(from, &at, MAX_OP_BLOB, Keep::Core).await?;
            if copy.core_id != position.op {
                return Err(Error::Invalid(format!(
                    "the snapshot's copy links position {} of device {key} to another operation",
                    position.seq
                )));
            }
            let covered = self.open_op(&copy.core, &keys)?;
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
        let limit = self.clock_limit();
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

    /// Merges every device's new operations; flags and repairs relays that
    /// are behind. Returns the number of operations merged, and the
    /// identity-log entries they announced beyond this device's log.
    pub(super) async fn merge_devices(
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
                        state.note(self.unknown_writer(relays[index].url(), &device));
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
                state.note(self.finding(
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
                state.note(self.finding(
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
                    let limit = self.clock_limit();
                    for (position, op) in ops {
                        if op.clock > limit {
                            // Held, not merged: the position stays before
                            // it, so a later sync takes it up once its time
                            // has come.
                            state.note(self.finding(
                                "future_clock",
                                None,
                                Some(device.to_string()),
                                format!(
                                    "operation {} is stamped {} ms ahead of this device's \
                                     clock; held until then",
                                    position.seq,
                                    clock_millis(op.clock).saturating_sub(self.clock.now_millis())
                                ),
                            ));
                            break;
                        }
                        if !self.may_write(device, op.clock) {
                            state.note(self.finding(
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
                            Err(err) => state.note(self.finding(
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
                    state.note(self.finding(
                        "equivocation",
                        None,
                        Some(device.to_string()),
                        detail,
                    ));
                }
                Err(WalkError::Other(err)) => {
                    state.note(self.finding(
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
                    state.note(self.finding(
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
                                self.now(),
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

    /// Walks `device`'s log back to `known` from the first of the heads
    /// `ahead` (relay index, blob, position; highest first) whose chain
    /// leads there. Returns the operations, oldest first, and where that
    /// relay's chain ends.
    pub(super) async fn walk(
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
}
