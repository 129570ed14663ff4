//! The index's tables inside one write transaction, and the operations the
//! writer ([`super::writer`]) applies to them. Each keeps the tables'
//! invariants (every blob row has its last-access row, owner usage sums
//! the sizes each owner pays for, the totals match the rows); what is
//! allowed is for [`crate::store::rules`] to say.

use cairn_proto::{BlobId, VerifyingKey};
use redb::ReadableTable as _;

use super::index::{
    self, BLOBS, BY_ACCESS, CO_OWNERS, FORWARD_SOURCES, FORWARDS, FORWARDS_BY_ACCESS, ForwardValue,
    HEADS, HEADS_BY_ACCESS, HeadsKey, HeadsValue, OWNERS, PENDING_UNLINK, SOURCES, SPENT_TOKENS,
    STAT_BLOBS, STAT_BYTES, STAT_HEADS, STATS, mailbox_range,
};
use super::record::{self, BlobRow};
use crate::store::error::StoreError;
use crate::store::model::{
    BlobMeta, Forward, HeadKey, HeadOutcome, HeadRow, MAX_SLOTS_PER_MAILBOX, NewHead, Source,
    SourceKey, SpentToken,
};
use crate::store::rules::{HeadStep, Rules};

/// The first `max` rows of a last-access-ordered table that are older than
/// `cutoff`: what a GC pass deletes.
pub(super) fn expired_prefix(
    table: &redb::Table<'_, (u64, [u8; 32]), ()>,
    cutoff: u64,
    max: usize,
) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
    table
        .range(..(cutoff, [0u8; 32]))
        .map_err(redb::Error::from)?
        .take(max)
        .map(|row| row.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .map_err(|e| redb::Error::from(e).into())
}

/// A blob the caller found in this transaction has no row: only a damaged
/// index does that.
fn vanished(id: &BlobId) -> StoreError {
    StoreError::Failed(format!(
        "blob {id} vanished from the index; run `cairn-relay fsck`"
    ))
}

/// The index tables inside one write transaction, with running totals.
pub(super) struct Tables<'txn> {
    pub(super) blobs: redb::Table<'txn, [u8; 32], &'static [u8]>,
    pub(super) by_access: redb::Table<'txn, (u64, [u8; 32]), ()>,
    pub(super) owners: redb::Table<'txn, [u8; 32], u64>,
    pub(super) co_owners: redb::Table<'txn, ([u8; 32], [u8; 32]), ()>,
    pub(super) pending: redb::Table<'txn, [u8; 32], ()>,
    pub(super) stats: redb::Table<'txn, &'static str, u64>,
    pub(super) heads: redb::Table<'txn, HeadsKey, HeadsValue>,
    pub(super) heads_by_access: redb::Table<'txn, (u64, [u8; 32], &'static str), ()>,
    pub(super) sources: redb::Table<'txn, ([u8; 32], [u8; 32]), ()>,
    pub(super) forward_sources: redb::Table<'txn, ([u8; 32], [u8; 32]), ()>,
    pub(super) forwards: redb::Table<'txn, [u8; 32], ForwardValue>,
    pub(super) forwards_by_access: redb::Table<'txn, (u64, [u8; 32]), ()>,
    pub(super) spent: redb::Table<'txn, (u64, [u8; 16]), ()>,
    pub(super) bytes: u64,
    pub(super) count: u64,
    pub(super) head_count: u64,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, StoreError> {
        let stats = txn.open_table(STATS).map_err(redb::Error::from)?;
        let stat = |k| -> Result<u64, StoreError> {
            Ok(stats
                .get(k)
                .map_err(redb::Error::from)?
                .map_or(0, |v| v.value()))
        };
        let (bytes, count, head_count) = (stat(STAT_BYTES)?, stat(STAT_BLOBS)?, stat(STAT_HEADS)?);
        Ok(Self {
            blobs: txn.open_table(BLOBS).map_err(redb::Error::from)?,
            by_access: txn.open_table(BY_ACCESS).map_err(redb::Error::from)?,
            owners: txn.open_table(OWNERS).map_err(redb::Error::from)?,
            co_owners: txn.open_table(CO_OWNERS).map_err(redb::Error::from)?,
            pending: txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?,
            stats,
            heads: txn.open_table(HEADS).map_err(redb::Error::from)?,
            heads_by_access: txn.open_table(HEADS_BY_ACCESS).map_err(redb::Error::from)?,
            sources: txn.open_table(SOURCES).map_err(redb::Error::from)?,
            forward_sources: txn.open_table(FORWARD_SOURCES).map_err(redb::Error::from)?,
            forwards: txn.open_table(FORWARDS).map_err(redb::Error::from)?,
            forwards_by_access: txn
                .open_table(FORWARDS_BY_ACCESS)
                .map_err(redb::Error::from)?,
            spent: txn.open_table(SPENT_TOKENS).map_err(redb::Error::from)?,
            bytes,
            count,
            head_count,
        })
    }

    /// Writes the running totals back to the stats table.
    pub(super) fn save_totals(&mut self) -> Result<(), StoreError> {
        for (key, value) in [
            (STAT_BYTES, self.bytes),
            (STAT_BLOBS, self.count),
            (STAT_HEADS, self.head_count),
        ] {
            self.stats.insert(key, value).map_err(redb::Error::from)?;
        }
        Ok(())
    }

    pub(super) fn meta(&self, id: &BlobId) -> Result<Option<BlobMeta>, StoreError> {
        match self.blobs.get(id.as_bytes()).map_err(redb::Error::from)? {
            Some(row) => Ok(Some(record::meta_of(row.value())?)),
            None => Ok(None),
        }
    }

    /// The whole row of `id`, body included.
    pub(super) fn row(&self, id: &BlobId) -> Result<Option<BlobRow>, StoreError> {
        match self.blobs.get(id.as_bytes()).map_err(redb::Error::from)? {
            Some(row) => Ok(Some(BlobRow::decode(row.value())?)),
            None => Ok(None),
        }
    }

    /// Rewrites the meta in the row of the held blob `id`, keeping the rest.
    fn set_meta(&mut self, id: &BlobId, meta: &BlobMeta) -> Result<(), StoreError> {
        let row = self
            .blobs
            .get(id.as_bytes())
            .map_err(redb::Error::from)?
            .map(|row| record::with_meta(row.value(), meta))
            .transpose()?
            .ok_or_else(|| vanished(id))?;
        self.blobs
            .insert(id.as_bytes(), row.as_slice())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    pub(super) fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError> {
        Ok(self
            .owners
            .get(owner.to_bytes())
            .map_err(redb::Error::from)?
            .map_or(0, |v| v.value()))
    }

    /// Adds the row of a blob the index did not hold, with its source rows,
    /// access order and charges.
    pub(super) fn insert(&mut self, id: &BlobId, row: &BlobRow) -> Result<(), StoreError> {
        self.blobs
            .insert(id.as_bytes(), row.encode()?.as_slice())
            .map_err(redb::Error::from)?;
        for source in &row.sources {
            self.sources
                .insert((source.to_row(), *id.as_bytes()), ())
                .map_err(redb::Error::from)?;
        }
        let meta = &row.meta;
        self.by_access
            .insert((meta.last_access, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        if let Some(owner) = &meta.owner {
            self.charge(owner, meta.size)?;
        }
        self.bytes += meta.size;
        self.count += 1;
        Ok(())
    }

    /// Adds `size` to `owner`'s usage.
    pub(super) fn charge(&mut self, owner: &VerifyingKey, size: u64) -> Result<(), StoreError> {
        let used = self.owner_usage(owner)?;
        self.owners
            .insert(owner.to_bytes(), used.saturating_add(size))
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Takes `size` off `owner`'s usage, dropping its row at zero.
    pub(super) fn refund(&mut self, owner: &VerifyingKey, size: u64) -> Result<(), StoreError> {
        let left = self.owner_usage(owner)?.saturating_sub(size);
        if left == 0 {
            self.owners
                .remove(owner.to_bytes())
                .map_err(redb::Error::from)?;
        } else {
            self.owners
                .insert(owner.to_bytes(), left)
                .map_err(redb::Error::from)?;
        }
        Ok(())
    }

    pub(super) fn is_co_owner(&self, id: &BlobId, key: &VerifyingKey) -> Result<bool, StoreError> {
        Ok(self
            .co_owners
            .get((*id.as_bytes(), key.to_bytes()))
            .map_err(redb::Error::from)?
            .is_some())
    }

    /// Makes `owner` a co-owner of the held blob `id`, charging its usage.
    /// Whether it may is for [`Rules::claim`] to say.
    pub(super) fn add_co_owner(
        &mut self,
        id: &BlobId,
        meta: &BlobMeta,
        owner: &VerifyingKey,
    ) -> Result<(), StoreError> {
        self.co_owners
            .insert((*id.as_bytes(), owner.to_bytes()), ())
            .map_err(redb::Error::from)?;
        self.charge(owner, meta.size)
    }

    /// Drops the claim of `owner`, one of several owners of the held blob
    /// `id`, and refunds its usage. (The last owner's claim goes with the
    /// blob: [`Tables::remove`].)
    pub(super) fn release(
        &mut self,
        id: &BlobId,
        meta: &mut BlobMeta,
        owner: &VerifyingKey,
    ) -> Result<(), StoreError> {
        if meta.owner.as_ref() == Some(owner) {
            meta.owner = None;
            self.set_meta(id, meta)?;
        } else {
            self.co_owners
                .remove((*id.as_bytes(), owner.to_bytes()))
                .map_err(redb::Error::from)?;
        }
        self.refund(owner, meta.size)
    }

    /// How many owners the held blob `id` has.
    pub(super) fn owner_count(&self, id: &BlobId, meta: &BlobMeta) -> Result<u64, StoreError> {
        let id = *id.as_bytes();
        let co_owners = self
            .co_owners
            .range((id, [0u8; 32])..=(id, [0xff; 32]))
            .map_err(redb::Error::from)?
            .count() as u64;
        Ok(co_owners + u64::from(meta.owner.is_some()))
    }

    /// Records an access at `at`, moving the blob in the last-access order.
    pub(super) fn touch(
        &mut self,
        id: &BlobId,
        meta: &mut BlobMeta,
        at: u64,
    ) -> Result<(), StoreError> {
        if at <= meta.last_access {
            return Ok(());
        }
        self.by_access
            .remove((meta.last_access, *id.as_bytes()))
            .map_err(redb::Error::from)?;
        meta.last_access = at;
        self.by_access
            .insert((at, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        self.set_meta(id, meta)
    }

    /// Drops a blob from the index. Returns true when it has a file to
    /// unlink (after the commit), false when it was stored inline.
    pub(super) fn remove(&mut self, id: &BlobId, meta: &BlobMeta) -> Result<bool, StoreError> {
        let row = self
            .blobs
            .remove(id.as_bytes())
            .map_err(redb::Error::from)?
            .map(|row| BlobRow::decode(row.value()))
            .transpose()?
            .ok_or_else(|| vanished(id))?;
        self.by_access
            .remove((meta.last_access, *id.as_bytes()))
            .map_err(redb::Error::from)?;
        if let Some(owner) = &meta.owner {
            self.refund(owner, meta.size)?;
        }
        for owner in index::keys_of(&self.co_owners, *id.as_bytes())? {
            self.co_owners
                .remove((*id.as_bytes(), owner))
                .map_err(redb::Error::from)?;
            if let Ok(owner) = VerifyingKey::from_bytes(&owner) {
                self.refund(&owner, meta.size)?;
            }
        }
        self.bytes = self.bytes.saturating_sub(meta.size);
        self.count = self.count.saturating_sub(1);
        for source in &row.sources {
            self.sources
                .remove((source.to_row(), *id.as_bytes()))
                .map_err(redb::Error::from)?;
        }
        if row.body.is_some() {
            return Ok(false);
        }
        self.pending
            .insert(id.as_bytes(), ())
            .map_err(redb::Error::from)?;
        Ok(true)
    }

    /// Notes that `source` handed the relay the held blob `id` (a no-op if
    /// it had).
    pub(super) fn add_source(&mut self, id: &BlobId, source: Source) -> Result<(), StoreError> {
        let mut row = self.row(id)?.ok_or_else(|| vanished(id))?;
        if row.add_source(source.key()) {
            self.blobs
                .insert(id.as_bytes(), row.encode()?.as_slice())
                .map_err(redb::Error::from)?;
            self.sources
                .insert((source.key().to_row(), *id.as_bytes()), ())
                .map_err(redb::Error::from)?;
        }
        Ok(())
    }

    /// The peers (not clients) that handed the relay the held blob `id`.
    pub(super) fn peer_sources(&self, id: &BlobId) -> Result<Vec<SourceKey>, StoreError> {
        Ok(self.row(id)?.map_or_else(Vec::new, |row| {
            row.sources
                .into_iter()
                .filter(|s| *s != SourceKey::Clients)
                .collect()
        }))
    }

    /// Keeps `peer` as a source of `id`, which the relay no longer holds but
    /// answers for through a forwarding record.
    pub(super) fn add_forward_source(
        &mut self,
        id: &BlobId,
        peer: SourceKey,
    ) -> Result<(), StoreError> {
        let (id, peer) = (*id.as_bytes(), peer.to_row());
        self.sources
            .insert((peer, id), ())
            .map_err(redb::Error::from)?;
        self.forward_sources
            .insert((id, peer), ())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Takes the sources kept for the forwarded blob `id` out of
    /// [`FORWARD_SOURCES`], leaving their rows in [`SOURCES`]: the blob is
    /// held again, and they become its row's.
    pub(super) fn take_forward_sources(
        &mut self,
        id: &BlobId,
    ) -> Result<Vec<SourceKey>, StoreError> {
        let id = *id.as_bytes();
        let peers = index::keys_of(&self.forward_sources, id)?;
        for peer in &peers {
            self.forward_sources
                .remove((id, *peer))
                .map_err(redb::Error::from)?;
        }
        Ok(peers.into_iter().map(SourceKey::from_row).collect())
    }

    /// Records that `forward` answers for `id` from `now` on.
    pub(super) fn put_forward(
        &mut self,
        id: &BlobId,
        forward: &Forward,
        now: u64,
    ) -> Result<(), StoreError> {
        self.drop_forward(id)?;
        self.forwards
            .insert(
                id.as_bytes(),
                (forward.peer.to_bytes(), now, forward.url.as_str()),
            )
            .map_err(redb::Error::from)?;
        self.forwards_by_access
            .insert((now, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Removes the forwarding record of `id`, if any (the relay holds the
    /// blob again, or the record expired).
    pub(super) fn drop_forward(&mut self, id: &BlobId) -> Result<(), StoreError> {
        let old = self
            .forwards
            .remove(id.as_bytes())
            .map_err(redb::Error::from)?
            .map(|row| row.value().1);
        if let Some(at) = old {
            self.forwards_by_access
                .remove((at, *id.as_bytes()))
                .map_err(redb::Error::from)?;
        }
        Ok(())
    }

    /// Moves the forwarding record of `id` (if any) to last access `at`.
    pub(super) fn touch_forward(&mut self, id: &BlobId, at: u64) -> Result<(), StoreError> {
        let old = self
            .forwards
            .get(id.as_bytes())
            .map_err(redb::Error::from)?
            .map(|row| {
                let (peer, last, url) = row.value();
                (peer, last, url.to_owned())
            });
        let Some((peer, last, url)) = old else {
            return Ok(());
        };
        if at <= last {
            return Ok(());
        }
        self.forwards_by_access
            .remove((last, *id.as_bytes()))
            .map_err(redb::Error::from)?;
        self.forwards
            .insert(id.as_bytes(), (peer, at, url.as_str()))
            .map_err(redb::Error::from)?;
        self.forwards_by_access
            .insert((at, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Deletes up to `max` forwarding records last used before `cutoff`.
    pub(super) fn collect_forwards(
        &mut self,
        cutoff: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let expired = expired_prefix(&self.forwards_by_access, cutoff, max)?;
        for (at, id) in &expired {
            self.forwards_by_access
                .remove((*at, *id))
                .map_err(redb::Error::from)?;
            self.forwards.remove(id).map_err(redb::Error::from)?;
            // No longer answered for: peers' reconciliation may see it go.
            for peer in self.take_forward_sources(&BlobId::from_bytes(*id))? {
                self.sources
                    .remove((peer.to_row(), *id))
                    .map_err(redb::Error::from)?;
            }
        }
        Ok(expired.len())
    }

    /// (seq, last access, envelope) of the head in a slot.
    pub(super) fn head(
        &self,
        mailbox: [u8; 32],
        slot: &str,
    ) -> Result<Option<StoredHead>, StoreError> {
        Ok(self
            .heads
            .get((mailbox, slot))
            .map_err(redb::Error::from)?
            .map(|row| {
                let (seq, last_access, envelope) = row.value();
                StoredHead {
                    seq,
                    last_access,
                    envelope: envelope.to_vec(),
                }
            }))
    }

    /// Writes a head row and its place in the last-access order, replacing
    /// `old` (the row's previous state) if there was one.
    pub(super) fn write_head(
        &mut self,
        mailbox: [u8; 32],
        slot: &str,
        old: Option<&StoredHead>,
        new: &StoredHead,
    ) -> Result<(), StoreError> {
        if let Some(old) = old {
            self.heads_by_access
                .remove((old.last_access, mailbox, slot))
                .map_err(redb::Error::from)?;
        }
        self.heads
            .insert(
                (mailbox, slot),
                (new.seq, new.last_access, new.envelope.as_slice()),
            )
            .map_err(redb::Error::from)?;
        self.heads_by_access
            .insert((new.last_access, mailbox, slot), ())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// The compare-and-set of a head PUT, as [`Rules::head_step`] decides
    /// it. Either way the slot was accessed at `now`.
    pub(super) fn put_head(
        &mut self,
        head: &NewHead,
        now: u64,
        rules: &Rules,
    ) -> Result<HeadOutcome, StoreError> {
        let mailbox = head.key.mailbox.to_bytes();
        let slot = head.key.slot.as_str();
        let stored = self.head(mailbox, slot)?;
        let step = Rules::head_step(
            head,
            stored.as_ref().map(|s| (s.seq, s.envelope.as_slice())),
        );
        let outcome = match (step, &stored) {
            (HeadStep::Stale, Some(current)) => {
                // The refusal shows the client the stored head: a read, and
                // so an access.
                if now > current.last_access {
                    let touched = StoredHead {
                        last_access: now,
                        ..current.clone()
                    };
                    self.write_head(mailbox, slot, Some(current), &touched)?;
                }
                return Ok(HeadOutcome::Stale {
                    seq: current.seq,
                    current: current.envelope.clone(),
                });
            }
            (HeadStep::Create, _) => {
                if let Err(refused) = rules.room_for_head(self.head_count, self.slots_in(mailbox)?)
                {
                    return Ok(refused);
                }
                self.head_count += 1;
                HeadOutcome::Created
            }
            _ => HeadOutcome::Replaced,
        };
        let new = StoredHead {
            seq: head.seq,
            last_access: stored.as_ref().map_or(now, |old| old.last_access.max(now)),
            envelope: head.envelope.clone(),
        };
        self.write_head(mailbox, slot, stored.as_ref(), &new)?;
        Ok(outcome)
    }

    /// A head copied from another store, kept unless the slot holds one at
    /// least as new; true if it was.
    pub(super) fn import_head(&mut self, row: HeadRow) -> Result<bool, StoreError> {
        let (mailbox, slot) = (row.key.mailbox_bytes(), row.key.slot.as_str());
        let stored = self.head(mailbox, slot)?;
        let newer = Rules::imports_head(stored.as_ref().map(|s| s.seq), row.seq);
        if newer {
            if stored.is_none() {
                self.head_count += 1;
            }
            let new = StoredHead {
                seq: row.seq,
                last_access: row.last_access,
                envelope: row.envelope,
            };
            self.write_head(mailbox, slot, stored.as_ref(), &new)?;
        }
        Ok(newer)
    }

    /// Whether `token` was spent (and has not expired since).
    pub(super) fn is_spent(&self, token: Option<SpentToken>) -> Result<bool, StoreError> {
        let Some(token) = token else {
            return Ok(false);
        };
        Ok(self
            .spent
            .get((token.expires_at, token.nonce))
            .map_err(redb::Error::from)?
            .is_some())
    }

    /// Records `token` as spent.
    pub(super) fn spend(&mut self, token: Option<SpentToken>) -> Result<(), StoreError> {
        if let Some(token) = token {
            self.spent
                .insert((token.expires_at, token.nonce), ())
                .map_err(redb::Error::from)?;
        }
        Ok(())
    }

    /// Forgets up to `max` tokens that expired before `before`; how many.
    /// Keyed by expiry first, they are a prefix of the table.
    pub(super) fn forget_spent_tokens(
        &mut self,
        before: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let expired: Vec<(u64, [u8; 16])> = self
            .spent
            .range(..(before, [0u8; 16]))
            .map_err(redb::Error::from)?
            .take(max)
            .map(|row| row.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        for key in &expired {
            self.spent.remove(key).map_err(redb::Error::from)?;
        }
        Ok(expired.len())
    }

    /// How many slots `mailbox` has, counting up to the per-mailbox limit.
    pub(super) fn slots_in(&self, mailbox: [u8; 32]) -> Result<usize, StoreError> {
        let mut count = 0;
        for row in mailbox_range(&self.heads, mailbox)?.take(MAX_SLOTS_PER_MAILBOX) {
            row.map_err(redb::Error::from)?;
            count += 1;
        }
        Ok(count)
    }

    /// Records an access to a head at `at`; false if there is no such head.
    pub(super) fn touch_head(&mut self, key: &HeadKey, at: u64) -> Result<bool, StoreError> {
        let (mailbox, slot) = (key.mailbox_bytes(), key.slot.as_str());
        let Some(current) = self.head(mailbox, slot)? else {
            return Ok(false);
        };
        if at > current.last_access {
            let touched = StoredHead {
                last_access: at,
                ..current.clone()
            };
            self.write_head(mailbox, slot, Some(&current), &touched)?;
        }
        Ok(true)
    }

    /// Deletes up to `max` heads last accessed before `cutoff`.
    pub(super) fn collect_heads(&mut self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        let expired: Vec<(u64, [u8; 32], String)> = self
            .heads_by_access
            .range(..(cutoff, [0u8; 32], ""))
            .map_err(redb::Error::from)?
            .take(max)
            .map(|row| {
                row.map(|(k, _)| {
                    let (at, mailbox, slot) = k.value();
                    (at, mailbox, slot.to_owned())
                })
            })
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        let mut deleted = 0;
        for (at, mailbox, slot) in expired {
            self.heads_by_access
                .remove((at, mailbox, slot.as_str()))
                .map_err(redb::Error::from)?;
            if self
                .heads
                .remove((mailbox, slot.as_str()))
                .map_err(redb::Error::from)?
                .is_some()
            {
                self.head_count = self.head_count.saturating_sub(1);
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// One row of the heads table.
#[derive(Clone, Debug)]
pub(super) struct StoredHead {
    seq: u64,
    last_access: u64,
    envelope: Vec<u8>,
}

#[cfg(test)]
mod tests;
