//! Brings an index written by an earlier release up to the current layout,
//! inside the transaction that opens it: a relay stopped mid-upgrade finds
//! its old tables untouched and upgrades again.
//!
//! Version 1 → 2: a blob's meta (`blobs_v1`), small body (`inline_v1`) and
//! sources (`blob_sources_v1`) become one row of `blobs_v2`
//! ([`super::record`]); the sources of blobs the relay transferred, which
//! have no row, move to `forward_sources_v1`.

use redb::{ReadableTable as _, TableDefinition, TableHandle as _};

use super::index::{BLOBS, FORWARD_SOURCES, FORWARDS, SOURCES, keys_of};
use super::record::BlobRow;
use crate::store::error::StoreError;
use crate::store::model::{BlobMeta, SourceKey};

/// Blob id → [`BlobMeta`] in its 56-byte encoding (version 1).
pub(super) const BLOBS_V1: TableDefinition<'_, [u8; 32], [u8; 56]> =
    TableDefinition::new("blobs_v1");
/// Blob id → body of a small blob (version 1).
pub(super) const INLINE_V1: TableDefinition<'_, [u8; 32], &[u8]> =
    TableDefinition::new("inline_v1");
/// (blob id, source) → (): the source rows by blob (version 1).
pub(super) const BLOB_SOURCES_V1: TableDefinition<'_, ([u8; 32], [u8; 32]), ()> =
    TableDefinition::new("blob_sources_v1");

/// What an upgrade moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Upgraded {
    /// Blob rows written.
    pub(super) blobs: u64,
    /// Of them, rows that took a small blob's body.
    pub(super) inline: u64,
    /// Source rows kept for transferred blobs.
    pub(super) forwarded_sources: u64,
}

/// Upgrades a version 1 index to version 2 in `txn`; `None` if the index
/// has no version 1 tables.
pub(super) fn to_v2(txn: &redb::WriteTransaction) -> Result<Option<Upgraded>, StoreError> {
    let has_v1 = txn
        .list_tables()
        .map_err(redb::Error::from)?
        .any(|table| table.name() == BLOBS_V1.name());
    if !has_v1 {
        return Ok(None);
    }
    let mut done = Upgraded::default();
    {
        let old = txn.open_table(BLOBS_V1).map_err(redb::Error::from)?;
        let inline = txn.open_table(INLINE_V1).map_err(redb::Error::from)?;
        let blob_sources = txn.open_table(BLOB_SOURCES_V1).map_err(redb::Error::from)?;
        let forwards = txn.open_table(FORWARDS).map_err(redb::Error::from)?;
        let mut blobs = txn.open_table(BLOBS).map_err(redb::Error::from)?;
        let mut forward_sources = txn.open_table(FORWARD_SOURCES).map_err(redb::Error::from)?;
        let mut sources = txn.open_table(SOURCES).map_err(redb::Error::from)?;
        for entry in old.iter().map_err(redb::Error::from)? {
            let (id, meta) = entry.map_err(redb::Error::from)?;
            let id = id.value();
            let body = inline
                .get(id)
                .map_err(redb::Error::from)?
                .map(|body| body.value().to_vec());
            done.inline += u64::from(body.is_some());
            let row = BlobRow {
                meta: BlobMeta::decode(&meta.value()),
                sources: keys_of(&blob_sources, id)?
                    .into_iter()
                    .map(SourceKey::from_row)
                    .collect(),
                body,
            };
            blobs
                .insert(id, row.encode()?.as_slice())
                .map_err(redb::Error::from)?;
            done.blobs += 1;
        }
        for entry in blob_sources.iter().map_err(redb::Error::from)? {
            let (id, source) = entry.map_err(redb::Error::from)?.0.value();
            if old.get(id).map_err(redb::Error::from)?.is_some() {
                continue;
            }
            if forwards.get(id).map_err(redb::Error::from)?.is_some() {
                forward_sources
                    .insert((id, source), ())
                    .map_err(redb::Error::from)?;
                done.forwarded_sources += 1;
            } else {
                // Neither held nor answered for: a row version 1 should
                // not have left, and reconciliation must not count it.
                sources.remove((source, id)).map_err(redb::Error::from)?;
            }
        }
    }
    txn.delete_table(BLOBS_V1).map_err(redb::Error::from)?;
    txn.delete_table(INLINE_V1).map_err(redb::Error::from)?;
    txn.delete_table(BLOB_SOURCES_V1)
        .map_err(redb::Error::from)?;
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use cairn_proto::{BlobId, SigningKey};
    use redb::ReadableDatabase as _;

    use super::*;
    use crate::store::embedded::index::IndexReader;
    use crate::store::embedded::{index::Location, open_db};

    fn meta(size: u64, owner: u8) -> BlobMeta {
        BlobMeta {
            size,
            created: 10,
            last_access: 20,
            owner: Some(SigningKey::from_seed(&[owner; 32]).verifying_key()),
        }
    }

    /// Writes what a version 1 relay left: a small blob from clients and a
    /// peer, a big one (a file) from clients, a transferred one whose peer
    /// still counts it, and a stale source row.
    fn write_v1(dir: &std::path::Path) -> (BlobId, BlobId, BlobId, [u8; 32]) {
        let small_body = b"small body".to_vec();
        let small = BlobId::of(&small_body);
        let big = BlobId::from_bytes([2; 32]);
        let gone = BlobId::from_bytes([3; 32]);
        let stale = [4; 32];
        let peer = [9; 32];
        let clients = SourceKey::Clients.to_row();
        let db = redb::Database::create(super::super::index_path(dir)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut blobs = txn.open_table(BLOBS_V1).unwrap();
            blobs
                .insert(small.as_bytes(), meta(small_body.len() as u64, 1).encode())
                .unwrap();
            blobs
                .insert(big.as_bytes(), meta(1 << 20, 2).encode())
                .unwrap();
            txn.open_table(INLINE_V1)
                .unwrap()
                .insert(small.as_bytes(), small_body.as_slice())
                .unwrap();
            let mut by_blob = txn.open_table(BLOB_SOURCES_V1).unwrap();
            let mut by_source = txn.open_table(SOURCES).unwrap();
            for (id, source) in [
                (*small.as_bytes(), clients),
                (*small.as_bytes(), peer),
                (*big.as_bytes(), clients),
                (*gone.as_bytes(), peer),
                (stale, peer),
            ] {
                by_blob.insert((id, source), ()).unwrap();
                by_source.insert((source, id), ()).unwrap();
            }
            txn.open_table(FORWARDS)
                .unwrap()
                .insert(gone.as_bytes(), (peer, 5, "https://peer.example"))
                .unwrap();
        }
        txn.commit().unwrap();
        (small, big, gone, peer)
    }

    #[test]
    fn a_version_1_index_is_upgraded_and_reads_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let (small, big, gone, peer) = write_v1(dir.path());
        let db = std::sync::Arc::new(open_db(dir.path(), 1 << 20).unwrap());
        let reader = IndexReader::new(std::sync::Arc::clone(&db));

        match reader.locate(&small).unwrap() {
            Some(Location::Inline(body)) => assert_eq!(body, b"small body"),
            other => panic!("small blob: {other:?}"),
        }
        assert!(matches!(reader.locate(&big).unwrap(), Some(Location::File)));
        assert!(reader.locate(&gone).unwrap().is_none());
        let peer_key = SourceKey::Peer(peer);
        assert_eq!(
            reader.sources_of(&small).unwrap(),
            [SourceKey::Clients, peer_key]
        );
        assert_eq!(reader.sources_of(&gone).unwrap(), [peer_key]);
        let mut expected = vec![small, gone];
        expected.sort();
        assert_eq!(
            reader.ids_from(peer_key).unwrap(),
            expected,
            "the stale row is dropped, the transferred blob's kept"
        );
        let records = reader.blobs_after(None, 10).unwrap();
        assert_eq!(records.len(), 2);
        let record = records.iter().find(|r| r.id == small).unwrap();
        assert_eq!(record.meta, meta(10, 1));

        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        for old in [BLOBS_V1.name(), INLINE_V1.name(), BLOB_SOURCES_V1.name()] {
            assert!(!names.iter().any(|n| n == old), "{old} is still there");
        }
        drop(txn);
        drop(reader);
        drop(db);
        // A second open finds nothing to upgrade and the same rows.
        let db = std::sync::Arc::new(open_db(dir.path(), 1 << 20).unwrap());
        let again = IndexReader::new(db).blobs_after(None, 10).unwrap();
        assert_eq!(again.len(), 2);
    }
}
