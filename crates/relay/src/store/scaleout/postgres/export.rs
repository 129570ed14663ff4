//! The index as records, page by page, for `cairn-relay migrate`.

use cairn_proto::{BlobId, Slot};

use super::{Index, exec, id_from_db, int, key_from_db, query, seq_from_db, source_from_db, uint};
use crate::store::error::StoreError;
use crate::store::model::{BlobMeta, BlobRecord, Forward, ForwardRow, HeadKey, HeadRow};

impl Index {
    /// Up to `max` blobs with ids above `after`, in id order, with sources.
    pub(crate) async fn blobs_after(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<BlobRecord>, StoreError> {
        let client = self.client().await?;
        let after = after.map_or([0u8; 0].to_vec(), |a| a.as_bytes().to_vec());
        let rows = query(
            &client,
            "SELECT b.id, b.size, b.created, b.last_access, b.owner,
                        COALESCE(array_agg(s.source) FILTER (WHERE s.source IS NOT NULL), '{}'),
                        COALESCE((SELECT array_agg(c.owner) FROM co_owners c WHERE c.id = b.id),
                                 '{}')
                 FROM blobs b LEFT JOIN sources s ON s.id = b.id
                 WHERE b.id > $1 GROUP BY b.id ORDER BY b.id LIMIT $2",
            &[&after, &int(max as u64)],
            "export blobs",
        )
        .await?;
        rows.iter()
            .map(|row| {
                let owner: Option<&[u8]> = row.get(4);
                let sources: Vec<Vec<u8>> = row.get(5);
                let co_owners: Vec<Vec<u8>> = row.get(6);
                Ok(BlobRecord {
                    id: id_from_db(row.get(0))?,
                    meta: BlobMeta {
                        size: uint(row.get(1)),
                        created: uint(row.get(2)),
                        last_access: uint(row.get(3)),
                        owner: owner.map(|o| key_from_db(o, "owner")).transpose()?,
                    },
                    sources: sources
                        .iter()
                        .map(|s| source_from_db(s))
                        .collect::<Result<_, _>>()?,
                    co_owners: co_owners
                        .iter()
                        .map(|o| key_from_db(o, "co-owner"))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect()
    }

    /// Up to `max` heads after `after` in (mailbox, slot) order.
    pub(crate) async fn heads_after(
        &self,
        after: Option<&HeadKey>,
        max: usize,
    ) -> Result<Vec<HeadRow>, StoreError> {
        let client = self.client().await?;
        let (mailbox, slot) = after.map_or((Vec::new(), String::new()), |k| {
            (k.mailbox_bytes().to_vec(), k.slot.as_str().to_owned())
        });
        let rows = query(
            &client,
            "SELECT mailbox, slot, seq, last_access, envelope FROM heads
                 WHERE (mailbox, slot) > ($1, $2) ORDER BY mailbox, slot LIMIT $3",
            &[&mailbox, &slot, &int(max as u64)],
            "export heads",
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(HeadRow {
                    key: HeadKey {
                        mailbox: key_from_db(row.get(0), "mailbox")?,
                        slot: Slot::new(row.get::<_, &str>(1)).map_err(|e| {
                            StoreError::Failed(format!("a stored head's slot is invalid: {e}"))
                        })?,
                    },
                    seq: seq_from_db(row.get(2)),
                    last_access: uint(row.get(3)),
                    envelope: row.get(4),
                })
            })
            .collect()
    }

    /// Up to `max` forwarding records with ids above `after`.
    pub(crate) async fn forwards_after(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<ForwardRow>, StoreError> {
        let client = self.client().await?;
        let after = after.map_or(Vec::new(), |a| a.as_bytes().to_vec());
        let rows = query(
            &client,
            "SELECT id, peer, url, last_access FROM forwards WHERE id > $1
                 ORDER BY id LIMIT $2",
            &[&after, &int(max as u64)],
            "export forwarding records",
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ForwardRow {
                    id: id_from_db(row.get(0))?,
                    forward: Forward {
                        peer: key_from_db(row.get(1), "forwarding record's")?,
                        url: row.get(2),
                    },
                    last_access: uint(row.get(3)),
                })
            })
            .collect()
    }

    /// Keeps a forwarding record unless the blob is held.
    pub(crate) async fn import_forward(&self, row: &ForwardRow) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let kept = exec(
            &client,
            "INSERT INTO forwards (id, peer, last_access, url)
                 SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE id = $1)
                 ON CONFLICT (id) DO UPDATE SET peer = excluded.peer,
                     last_access = excluded.last_access, url = excluded.url",
            &[
                &row.id.as_bytes().as_slice(),
                &row.forward.peer.to_bytes().as_slice(),
                &int(row.last_access),
                &row.forward.url,
            ],
            "import forwarding record",
        )
        .await?;
        Ok(kept == 1)
    }
}
