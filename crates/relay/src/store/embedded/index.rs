//! The metadata index: an embedded redb database.
//!
//! Tables carry a version suffix; a schema change means a new table and a
//! migration, never a silent reinterpretation of old bytes.

use cairn_proto::{BlobId, Slot, VerifyingKey};
use redb::{
    ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
};

use super::record::{self, BlobRow};
use crate::store::error::StoreError;
use crate::store::model::{BlobRecord, Forward, ForwardRow, HeadKey, HeadRow, SourceKey};

/// Blob id → its row ([`BlobRow`]): the [`BlobMeta`](crate::store::model::BlobMeta), whom the relay holds
/// it from, and the body of a blob of at most
/// [`crate::store::model::INLINE_MAX`] bytes. Small blobs live in the index
/// itself: one transaction makes them durable, with no file to create,
/// rename and sync.
pub(crate) const BLOBS: TableDefinition<'_, [u8; 32], &[u8]> = TableDefinition::new("blobs_v2");
/// (last access, blob id) → (): blobs ordered by last access, so GC reads
/// exactly the expired prefix.
pub(crate) const BY_ACCESS: TableDefinition<'_, (u64, [u8; 32]), ()> =
    TableDefinition::new("by_access_v1");
/// (blob id, key) → (): the blob's owners besides the one in its
/// [`BlobMeta`](crate::store::model::BlobMeta) (its uploader, until that key drops its claim). A key that
/// uploads or claims a blob the relay holds already is added here; each
/// owner's quota pays for the blob, and the blob goes when the last owner
/// deletes it (docs/PROTOCOL.md §7.3).
pub(crate) const CO_OWNERS: TableDefinition<'_, ([u8; 32], [u8; 32]), ()> =
    TableDefinition::new("co_owners_v1");
/// Owner key → bytes stored, for per-key quotas.
pub(crate) const OWNERS: TableDefinition<'_, [u8; 32], u64> = TableDefinition::new("owners_v1");
/// Blob ids whose index entry is gone but whose file may still exist,
/// because the relay stopped between commit and unlink. Finished at start.
pub(crate) const PENDING_UNLINK: TableDefinition<'_, [u8; 32], ()> =
    TableDefinition::new("pending_unlink_v1");
/// Totals: `bytes`, `blobs`, `heads`.
pub(crate) const STATS: TableDefinition<'_, &str, u64> = TableDefinition::new("stats_v1");
/// (mailbox key, slot) → (seq, last access, envelope bytes): the newest
/// head of each mailbox slot (docs/PROTOCOL.md §7.7). Keys sort by mailbox,
/// then slot bytes, so one mailbox's heads are one contiguous range. `seq`
/// is the envelope's own, kept beside it so the compare-and-set needs no
/// decoding.
pub(crate) const HEADS: TableDefinition<'_, HeadsKey, HeadsValue> =
    TableDefinition::new("heads_v1");
/// The key type of [`HEADS`]: (mailbox key, slot).
pub(crate) type HeadsKey = ([u8; 32], &'static str);
/// The value type of [`HEADS`]: (seq, last access, envelope bytes).
pub(crate) type HeadsValue = (u64, u64, &'static [u8]);
/// (last access, mailbox key, slot) → (): heads ordered by last access, so
/// GC reads exactly the expired prefix, as for blobs.
pub(crate) const HEADS_BY_ACCESS: TableDefinition<'_, (u64, [u8; 32], &str), ()> =
    TableDefinition::new("heads_by_access_v1");

/// (source, blob id) → (): why the relay holds each blob. The source is
/// [`SourceKey::Clients`] for a blob a client uploaded (the relay's own, which it
/// replicates) or the key of the peer relay that pushed or transferred it.
/// Rows sort by source, so each source's ids are one contiguous, sorted
/// range: exactly the set that reconciliation with that peer compares.
pub(crate) const SOURCES: TableDefinition<'_, ([u8; 32], [u8; 32]), ()> =
    TableDefinition::new("sources_v1");
/// (blob id, peer key) → (): the peers that had handed the relay a blob it
/// has since transferred. It answers for such a blob through its redirect,
/// so their rows in [`SOURCES`] stay (or reconciliation would push the blob
/// straight back) until the forwarding record goes; a held blob keeps its
/// sources in its [`BlobRow`].
pub(crate) const FORWARD_SOURCES: TableDefinition<'_, ([u8; 32], [u8; 32]), ()> =
    TableDefinition::new("forward_sources_v1");
/// Blob id → (peer key, last access, peer URL): blobs whose responsibility
/// passed to a peer with a verified receipt; requests for them are
/// redirected there.
pub(crate) const FORWARDS: TableDefinition<'_, [u8; 32], ForwardValue> =
    TableDefinition::new("forwards_v1");
/// The value type of [`FORWARDS`].
pub(crate) type ForwardValue = ([u8; 32], u64, &'static str);
/// (last access, blob id) → (): forwarding records by last access, for GC.
pub(crate) const FORWARDS_BY_ACCESS: TableDefinition<'_, (u64, [u8; 32]), ()> =
    TableDefinition::new("forwards_by_access_v1");

/// (expiry, nonce) → (): tokens spent by requests that took effect (uploads,
/// claims, deletes), until they expire.
/// Keyed by expiry first so that expired ones are a prefix; a token names
/// both, so a lookup is exact.
pub(crate) const SPENT_TOKENS: TableDefinition<'_, (u64, [u8; 16]), ()> =
    TableDefinition::new("spent_tokens_v1");

pub(crate) const STAT_BYTES: &str = "bytes";
pub(crate) const STAT_BLOBS: &str = "blobs";
pub(crate) const STAT_HEADS: &str = "heads";

/// Where an indexed blob's bytes live.
#[derive(Debug)]
pub(crate) enum Location {
    /// In the index itself (small blobs).
    Inline(Vec<u8>),
    /// In its file under `blobs/`.
    File,
}

/// Read-side access to the index, usable from any thread.
#[derive(Clone, Debug)]
pub(crate) struct IndexReader {
    db: std::sync::Arc<redb::Database>,
}

impl IndexReader {
    pub(crate) fn new(db: std::sync::Arc<redb::Database>) -> Self {
        Self { db }
    }

    /// Where an indexed blob's bytes are, in one read transaction; `None`
    /// if the index does not list it (whatever files may exist).
    pub(crate) fn locate(&self, id: &BlobId) -> Result<Option<Location>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let blobs = txn.open_table(BLOBS).map_err(redb::Error::from)?;
        let Some(row) = blobs.get(id.as_bytes()).map_err(redb::Error::from)? else {
            return Ok(None);
        };
        Ok(Some(match BlobRow::decode(row.value())?.body {
            Some(body) => Location::Inline(body),
            None => Location::File,
        }))
    }

    pub(crate) fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(OWNERS).map_err(redb::Error::from)?;
        let used = table.get(owner.to_bytes()).map_err(redb::Error::from)?;
        Ok(used.map_or(0, |v| v.value()))
    }

    /// Bytes of blobs, blobs, and heads stored.
    pub(crate) fn stats(&self) -> Result<(u64, u64, u64), StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(STATS).map_err(redb::Error::from)?;
        let get = |k| -> Result<u64, StoreError> {
            Ok(table
                .get(k)
                .map_err(redb::Error::from)?
                .map_or(0, |v| v.value()))
        };
        Ok((get(STAT_BYTES)?, get(STAT_BLOBS)?, get(STAT_HEADS)?))
    }

    /// The ids held from `source`, sorted.
    pub(crate) fn ids_from(&self, source: SourceKey) -> Result<Vec<BlobId>, StoreError> {
        let source = source.to_row();
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(SOURCES).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        for row in table
            .range((source, [0u8; 32])..=(source, [0xff; 32]))
            .map_err(redb::Error::from)?
        {
            let (k, _) = row.map_err(redb::Error::from)?;
            out.push(BlobId::from_bytes(k.value().1));
        }
        Ok(out)
    }

    /// Whom the relay holds `id` from (or, for a blob it transferred, which
    /// peers had handed it over).
    pub(crate) fn sources_of(&self, id: &BlobId) -> Result<Vec<SourceKey>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let blobs = txn.open_table(BLOBS).map_err(redb::Error::from)?;
        if let Some(row) = blobs.get(id.as_bytes()).map_err(redb::Error::from)? {
            return Ok(BlobRow::decode(row.value())?.sources);
        }
        let forwarded = txn.open_table(FORWARD_SOURCES).map_err(redb::Error::from)?;
        Ok(keys_of(&forwarded, *id.as_bytes())?
            .into_iter()
            .map(SourceKey::from_row)
            .collect())
    }

    /// Up to `max` blobs in order of last access, oldest first, with their
    /// sizes: the candidates for transfer when the relay is full.
    pub(crate) fn least_recently_used(&self, max: usize) -> Result<Vec<(BlobId, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let by_access = txn.open_table(BY_ACCESS).map_err(redb::Error::from)?;
        let blobs = txn.open_table(BLOBS).map_err(redb::Error::from)?;
        let mut out = Vec::with_capacity(max);
        for row in by_access.iter().map_err(redb::Error::from)?.take(max) {
            let (k, _) = row.map_err(redb::Error::from)?;
            let raw = k.value().1;
            if let Some(row) = blobs.get(raw).map_err(redb::Error::from)? {
                out.push((BlobId::from_bytes(raw), record::meta_of(row.value())?.size));
            }
        }
        Ok(out)
    }

    /// Where `id` was transferred, if it was.
    pub(crate) fn forward(&self, id: &BlobId) -> Result<Option<Forward>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(FORWARDS).map_err(redb::Error::from)?;
        let Some(row) = table.get(id.as_bytes()).map_err(redb::Error::from)? else {
            return Ok(None);
        };
        let (peer, _, url) = row.value();
        let peer = VerifyingKey::from_bytes(&peer).map_err(|e| {
            StoreError::Failed(format!("a forwarding record's key is invalid: {e}"))
        })?;
        Ok(Some(Forward {
            peer,
            url: url.to_owned(),
        }))
    }

    /// Up to `max` forwarding records from `start` on in id order, wrapping
    /// around to the first: a random `start` gives a random sample.
    pub(crate) fn forwards_from(
        &self,
        start: [u8; 32],
        max: usize,
    ) -> Result<Vec<(BlobId, Forward)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(FORWARDS).map_err(redb::Error::from)?;
        let mut out = Vec::with_capacity(max);
        let tail = table.range(start..).map_err(redb::Error::from)?;
        let head = table.range(..start).map_err(redb::Error::from)?;
        for row in tail.chain(head).take(max) {
            let (k, v) = row.map_err(redb::Error::from)?;
            let (peer, _, url) = v.value();
            let peer = VerifyingKey::from_bytes(&peer).map_err(|e| {
                StoreError::Failed(format!("a forwarding record's key is invalid: {e}"))
            })?;
            out.push((
                BlobId::from_bytes(k.value()),
                Forward {
                    peer,
                    url: url.to_owned(),
                },
            ));
        }
        Ok(out)
    }

    /// How many forwarding records the relay keeps.
    pub(crate) fn forwards(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(FORWARDS).map_err(redb::Error::from)?;
        Ok(table.len().map_err(redb::Error::from)?)
    }

    /// The stored envelope of the head in `key`'s slot, if any.
    pub(crate) fn head(&self, key: &HeadKey) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let heads = txn.open_table(HEADS).map_err(redb::Error::from)?;
        let row = heads
            .get((key.mailbox_bytes(), key.slot.as_str()))
            .map_err(redb::Error::from)?;
        Ok(row.map(|row| row.value().2.to_vec()))
    }

    /// Every head of `mailbox`, as (slot, envelope), sorted by slot.
    pub(crate) fn heads(&self, mailbox: &VerifyingKey) -> Result<Vec<(Slot, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let heads = txn.open_table(HEADS).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        for row in mailbox_range(&heads, mailbox.to_bytes())? {
            let (k, v) = row.map_err(redb::Error::from)?;
            // Only validated slots are ever written; anything else means
            // the database was damaged.
            let slot = Slot::new(k.value().1)
                .map_err(|e| StoreError::Failed(format!("a stored head's slot is invalid: {e}")))?;
            out.push((slot, v.value().2.to_vec()));
        }
        Ok(out)
    }
}

/// The second halves of the rows of a (blob id, key) table that start
/// with `id`.
pub(crate) fn keys_of(
    table: &impl redb::ReadableTable<([u8; 32], [u8; 32]), ()>,
    id: [u8; 32],
) -> Result<Vec<[u8; 32]>, StoreError> {
    let mut keys = Vec::new();
    for row in table
        .range((id, [0u8; 32])..=(id, [0xff; 32]))
        .map_err(redb::Error::from)?
    {
        keys.push(row.map_err(redb::Error::from)?.0.value().1);
    }
    Ok(keys)
}

impl IndexReader {
    /// Up to `max` blobs with ids above `after`, in id order, with their
    /// sources: a page of an export.
    pub(crate) fn blobs_after(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<BlobRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let blobs = txn.open_table(BLOBS).map_err(redb::Error::from)?;
        let co_owners = txn.open_table(CO_OWNERS).map_err(redb::Error::from)?;
        let rows = match after {
            Some(after) => blobs.range((*after.as_bytes())..),
            None => blobs.range([0u8; 32]..),
        }
        .map_err(redb::Error::from)?;
        let mut out = Vec::with_capacity(max);
        for row in rows {
            let (k, v) = row.map_err(redb::Error::from)?;
            let raw = k.value();
            if after.is_some_and(|a| *a.as_bytes() == raw) {
                continue;
            }
            let BlobRow { meta, sources, .. } = BlobRow::decode(v.value())?;
            let co_owners = keys_of(&co_owners, raw)?
                .into_iter()
                .filter_map(|key| VerifyingKey::from_bytes(&key).ok())
                .collect();
            out.push(BlobRecord {
                id: BlobId::from_bytes(raw),
                meta,
                sources,
                co_owners,
            });
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `max` heads after `after` in (mailbox, slot) order.
    pub(crate) fn heads_after(
        &self,
        after: Option<&HeadKey>,
        max: usize,
    ) -> Result<Vec<HeadRow>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let heads = txn.open_table(HEADS).map_err(redb::Error::from)?;
        let start = after.map_or(([0u8; 32], ""), |k| (k.mailbox_bytes(), k.slot.as_str()));
        let mut out = Vec::with_capacity(max);
        for row in heads.range(start..).map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            let (mailbox, slot) = k.value();
            if after.is_some_and(|a| a.mailbox_bytes() == mailbox && a.slot.as_str() == slot) {
                continue;
            }
            let (seq, last_access, envelope) = v.value();
            let key = HeadKey {
                mailbox: VerifyingKey::from_bytes(&mailbox).map_err(|e| {
                    StoreError::Failed(format!("a stored head's mailbox is invalid: {e}"))
                })?,
                slot: Slot::new(slot).map_err(|e| {
                    StoreError::Failed(format!("a stored head's slot is invalid: {e}"))
                })?,
            };
            out.push(HeadRow {
                key,
                seq,
                last_access,
                envelope: envelope.to_vec(),
            });
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `max` forwarding records with ids above `after`, in id order.
    pub(crate) fn forwards_after(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<ForwardRow>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(FORWARDS).map_err(redb::Error::from)?;
        let start = after.map_or([0u8; 32], |a| *a.as_bytes());
        let mut out = Vec::with_capacity(max);
        for row in table.range(start..).map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            let raw = k.value();
            if after.is_some_and(|a| *a.as_bytes() == raw) {
                continue;
            }
            let (peer, last_access, url) = v.value();
            let peer = VerifyingKey::from_bytes(&peer).map_err(|e| {
                StoreError::Failed(format!("a forwarding record's key is invalid: {e}"))
            })?;
            out.push(ForwardRow {
                id: BlobId::from_bytes(raw),
                forward: Forward {
                    peer,
                    url: url.to_owned(),
                },
                last_access,
            });
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }
}

/// The rows of `mailbox` in a heads table, in slot order.
pub(crate) fn mailbox_range<T>(
    heads: &T,
    mailbox: [u8; 32],
) -> Result<redb::Range<'_, HeadsKey, HeadsValue>, StoreError>
where
    T: redb::ReadableTable<HeadsKey, HeadsValue>,
{
    // The empty slot sorts first and is never stored; the next mailbox's
    // rows start above every slot, whose bytes are all ASCII (below 0x80).
    let start: ([u8; 32], &str) = (mailbox, "");
    let end: ([u8; 32], &str) = (mailbox, "\u{80}");
    Ok(heads.range(start..end).map_err(redb::Error::from)?)
}
