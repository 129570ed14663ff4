//! Blob rows: ownership, usage, sources, forwarding records, reads.

use cairn_proto::{BlobId, VerifyingKey};
use deadpool_postgres::GenericClient;

use super::{
    BlobRow, Index, Txn, db_err, exec, id_from_db, int, key_from_db, query, query_one, query_opt,
    shard, source_from_db, uint,
};
use crate::store::error::StoreError;
use crate::store::model::{Forward, SourceKey};

impl Index {
    /// The blob's row, locked for update until `txn` ends.
    pub(crate) async fn blob_for_update(
        txn: &Txn<'_>,
        id: &BlobId,
    ) -> Result<Option<BlobRow>, StoreError> {
        let row = query_opt(
            txn,
            "SELECT size, owner, body IS NULL FROM blobs WHERE id = $1 FOR UPDATE",
            &[&id.as_bytes().as_slice()],
            "read blob",
        )
        .await?;
        row.map(|row| {
            let owner: Option<&[u8]> = row.get(1);
            Ok(BlobRow {
                size: uint(row.get(0)),
                owner: owner.map(|o| key_from_db(o, "owner")).transpose()?,
                external: row.get(2),
            })
        })
        .transpose()
    }

    /// Moves a blob's last access forward to `at` (never back).
    pub(crate) async fn touch(
        txn: &Txn<'_>,
        id: &BlobId,
        at: u64,
    ) -> Result<Option<u64>, StoreError> {
        let row = query_opt(
            txn,
            "UPDATE blobs SET last_access = GREATEST(last_access, $2)
                 WHERE id = $1 RETURNING size",
            &[&id.as_bytes().as_slice(), &int(at)],
            "touch blob",
        )
        .await?;
        Ok(row.map(|row| uint(row.get(0))))
    }

    /// Records that `source` handed the relay `id` (a no-op if it had).
    pub(crate) async fn add_source(
        txn: &Txn<'_>,
        id: &BlobId,
        source: SourceKey,
    ) -> Result<(), StoreError> {
        exec(
            txn,
            "INSERT INTO sources (source, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&source.to_row().as_slice(), &id.as_bytes().as_slice()],
            "add source",
        )
        .await?;
        Ok(())
    }

    /// Adds `bytes` and `blobs` to the totals (negative to subtract).
    pub(crate) async fn add_totals(
        txn: &Txn<'_>,
        shard_byte: u8,
        bytes: i64,
        blobs: i64,
        heads: i64,
    ) -> Result<(), StoreError> {
        exec(
            txn,
            "UPDATE stats SET bytes = bytes + $2, blobs = blobs + $3, heads = heads + $4
             WHERE shard = $1",
            &[&shard(shard_byte), &bytes, &blobs, &heads],
            "update totals",
        )
        .await?;
        Ok(())
    }

    /// Adds `bytes` to an owner's usage (negative to subtract) in the
    /// shard of `shard_byte` (a blob id's first byte), removing the row at
    /// zero. Quotas are checked before, against the sum
    /// ([`Index::owner_usage_in`]).
    pub(crate) async fn add_owner_usage(
        txn: &Txn<'_>,
        owner: &VerifyingKey,
        shard_byte: u8,
        bytes: i64,
    ) -> Result<(), StoreError> {
        let owner = owner.to_bytes();
        let shard = shard(shard_byte);
        let row = query_one(
            txn,
            "INSERT INTO owners (owner, shard, bytes) VALUES ($1, $2, GREATEST($3::int8, 0))
                 ON CONFLICT (owner, shard) DO UPDATE SET bytes = GREATEST(owners.bytes + $3, 0)
                 RETURNING bytes",
            &[&owner.as_slice(), &shard, &bytes],
            "update owner usage",
        )
        .await?;
        if uint(row.get(0)) == 0 {
            exec(
                txn,
                "DELETE FROM owners WHERE owner = $1 AND shard = $2 AND bytes = 0",
                &[&owner.as_slice(), &shard],
                "update owner usage",
            )
            .await?;
        }
        Ok(())
    }

    /// Inserts a blob's row and its source; drops any forwarding record.
    pub(crate) async fn insert_blob(
        txn: &Txn<'_>,
        id: &BlobId,
        size: u64,
        owner: Option<&VerifyingKey>,
        created: u64,
        last_access: u64,
        body: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let owner = owner.map(VerifyingKey::to_bytes);
        exec(
            txn,
            "INSERT INTO blobs (id, size, created, last_access, owner, body)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id.as_bytes().as_slice(),
                &int(size),
                &int(created),
                &int(last_access),
                &owner.as_ref().map(<[u8; 32]>::as_slice),
                &body,
            ],
            "insert blob",
        )
        .await?;
        exec(
            txn,
            "DELETE FROM forwards WHERE id = $1",
            &[&id.as_bytes().as_slice()],
            "drop forwarding record",
        )
        .await?;
        Ok(())
    }

    /// The co-owners of the held, locked blob `id`.
    async fn co_owners(txn: &Txn<'_>, id: &BlobId) -> Result<Vec<VerifyingKey>, StoreError> {
        let rows = query(
            txn,
            "SELECT owner FROM co_owners WHERE id = $1",
            &[&id.as_bytes().as_slice()],
            "read co-owners",
        )
        .await?;
        rows.iter()
            .map(|row| key_from_db(row.get(0), "co-owner"))
            .collect()
    }

    /// Whether `owner` owns the held, locked blob `row`, and how many
    /// owners it has.
    pub(crate) async fn ownership(
        txn: &Txn<'_>,
        id: &BlobId,
        row: &BlobRow,
        owner: &VerifyingKey,
    ) -> Result<(bool, u64), StoreError> {
        let co_owners = Self::co_owners(txn, id).await?;
        let owns = row.owner.as_ref() == Some(owner) || co_owners.contains(owner);
        Ok((
            owns,
            co_owners.len() as u64 + u64::from(row.owner.is_some()),
        ))
    }

    /// Makes `owner` a co-owner of the held, locked blob `row`, charging
    /// its usage. Whether it may is for the rules to say.
    pub(crate) async fn add_co_owner(
        txn: &Txn<'_>,
        id: &BlobId,
        row: &BlobRow,
        owner: &VerifyingKey,
    ) -> Result<(), StoreError> {
        exec(
            txn,
            "INSERT INTO co_owners (id, owner) VALUES ($1, $2)",
            &[&id.as_bytes().as_slice(), &owner.to_bytes().as_slice()],
            "add co-owner",
        )
        .await?;
        Self::add_owner_usage(txn, owner, id.as_bytes()[0], int(row.size)).await
    }

    /// Drops the claim of `owner`, one of several owners of the held,
    /// locked blob `row`, and refunds its usage. (The last owner's claim
    /// goes with the blob: [`Index::remove_blob`].)
    pub(crate) async fn release(
        txn: &Txn<'_>,
        id: &BlobId,
        row: &BlobRow,
        owner: &VerifyingKey,
    ) -> Result<(), StoreError> {
        let raw = id.as_bytes().as_slice();
        if row.owner.as_ref() == Some(owner) {
            exec(
                txn,
                "UPDATE blobs SET owner = NULL WHERE id = $1",
                &[&raw],
                "drop owner",
            )
            .await?;
        } else {
            exec(
                txn,
                "DELETE FROM co_owners WHERE id = $1 AND owner = $2",
                &[&raw, &owner.to_bytes().as_slice()],
                "drop co-owner",
            )
            .await?;
        }
        Self::add_owner_usage(txn, owner, id.as_bytes()[0], -int(row.size)).await
    }

    /// Deletes the co-owner rows of the blobs `ids` (locked by the caller),
    /// returning (blob id, owner) for each.
    pub(crate) async fn drop_co_owners(
        txn: &Txn<'_>,
        ids: &[&[u8]],
    ) -> Result<Vec<(BlobId, VerifyingKey)>, StoreError> {
        let rows = query(
            txn,
            "DELETE FROM co_owners WHERE id = ANY($1) RETURNING id, owner",
            &[&ids],
            "drop co-owners",
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    id_from_db(row.get(0))?,
                    key_from_db(row.get(1), "co-owner")?,
                ))
            })
            .collect()
    }

    /// Deletes a blob's row (already locked by the caller) with its totals,
    /// owner usage and, unless `keep_peer_sources`, all its sources. An
    /// external body is queued in `pending_unlink` for the caller to remove
    /// after the commit.
    pub(crate) async fn remove_blob(
        txn: &Txn<'_>,
        id: &BlobId,
        row: &BlobRow,
        keep_peer_sources: bool,
    ) -> Result<(), StoreError> {
        let raw = id.as_bytes().as_slice();
        exec(
            txn,
            "DELETE FROM blobs WHERE id = $1",
            &[&raw],
            "delete blob",
        )
        .await?;
        Self::add_totals(txn, id.as_bytes()[0], -int(row.size), -1, 0).await?;
        if let Some(owner) = &row.owner {
            Self::add_owner_usage(txn, owner, id.as_bytes()[0], -int(row.size)).await?;
        }
        for (_, owner) in Self::drop_co_owners(txn, &[raw]).await? {
            Self::add_owner_usage(txn, &owner, id.as_bytes()[0], -int(row.size)).await?;
        }
        if keep_peer_sources {
            exec(
                txn,
                "DELETE FROM sources WHERE id = $1 AND source = $2",
                &[&raw, &SourceKey::Clients.to_row().as_slice()],
                "delete sources",
            )
            .await?;
        } else {
            exec(
                txn,
                "DELETE FROM sources WHERE id = $1",
                &[&raw],
                "delete sources",
            )
            .await?;
        }
        if row.external {
            exec(
                txn,
                "INSERT INTO pending_unlink (id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&raw],
                "queue object removal",
            )
            .await?;
        }
        Ok(())
    }

    /// Records that `forward` answers for `id` from now on.
    pub(crate) async fn put_forward(
        txn: &Txn<'_>,
        id: &BlobId,
        forward: &Forward,
        now: u64,
    ) -> Result<(), StoreError> {
        exec(
            txn,
            "INSERT INTO forwards (id, peer, last_access, url) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE
             SET peer = excluded.peer, last_access = excluded.last_access, url = excluded.url",
            &[
                &id.as_bytes().as_slice(),
                &forward.peer.to_bytes().as_slice(),
                &int(now),
                &forward.url,
            ],
            "write forwarding record",
        )
        .await?;
        Ok(())
    }

    /// Claims up to `max` blobs last accessed before `cutoff` for deletion
    /// by `txn`, skipping rows other transactions hold.
    pub(crate) async fn expired_blobs(
        txn: &Txn<'_>,
        cutoff: u64,
        max: usize,
    ) -> Result<Vec<(BlobId, BlobRow)>, StoreError> {
        let rows = query(
            txn,
            "SELECT id, size, owner, body IS NULL FROM blobs
                 WHERE last_access < $1 ORDER BY last_access, id LIMIT $2
                 FOR UPDATE SKIP LOCKED",
            &[&int(cutoff), &int(max as u64)],
            "find expired blobs",
        )
        .await?;
        rows.iter()
            .map(|row| {
                let owner: Option<&[u8]> = row.get(2);
                Ok((
                    id_from_db(row.get(0))?,
                    BlobRow {
                        size: uint(row.get(1)),
                        owner: owner.map(|o| key_from_db(o, "owner")).transpose()?,
                        external: row.get(3),
                    },
                ))
            })
            .collect()
    }

    /// Deletes up to `max` forwarding records last used before `cutoff`
    /// and the source rows that kept them counted; how many.
    pub(crate) async fn collect_forwards(
        &self,
        cutoff: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        let rows = query(
            &txn,
            "DELETE FROM forwards WHERE id IN (
                     SELECT id FROM forwards WHERE last_access < $1
                     ORDER BY last_access, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING id",
            &[&int(cutoff), &int(max as u64)],
            "collect forwarding records",
        )
        .await?;
        let ids: Vec<&[u8]> = rows.iter().map(|row| row.get(0)).collect();
        exec(
            &txn,
            "DELETE FROM sources WHERE id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM blobs WHERE blobs.id = sources.id)",
            &[&ids],
            "collect forwarding records",
        )
        .await?;
        txn.commit().await.map_err(db_err("commit"))?;
        Ok(rows.len())
    }

    /// Writes coalesced access times: blobs held, and otherwise their
    /// forwarding records. Returns how many blobs were held.
    pub(crate) async fn touch_many(&self, accesses: &[(BlobId, u64)]) -> Result<usize, StoreError> {
        let mut sorted: Vec<&(BlobId, u64)> = accesses.iter().collect();
        // One lock order for every process: ids ascending.
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let ids: Vec<&[u8]> = sorted
            .iter()
            .map(|(id, _)| id.as_bytes().as_slice())
            .collect();
        let ats: Vec<i64> = sorted.iter().map(|(_, at)| int(*at)).collect();
        let client = self.client().await?;
        let held = exec(
            &client,
            "UPDATE blobs b SET last_access = v.at
                 FROM unnest($1::bytea[], $2::int8[]) AS v(id, at)
                 WHERE b.id = v.id AND b.last_access < v.at",
            &[&ids, &ats],
            "write access times",
        )
        .await?;
        exec(
            &client,
            "UPDATE forwards f SET last_access = v.at
                 FROM unnest($1::bytea[], $2::int8[]) AS v(id, at)
                 WHERE f.id = v.id AND f.last_access < v.at",
            &[&ids, &ats],
            "write access times",
        )
        .await?;
        Ok(usize::try_from(held).unwrap_or(usize::MAX))
    }

    /// A held blob's size and, for small blobs, its body.
    pub(crate) async fn locate(
        &self,
        id: &BlobId,
    ) -> Result<Option<(u64, Option<Vec<u8>>)>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT size, body FROM blobs WHERE id = $1",
            &[&id.as_bytes().as_slice()],
            "locate blob",
        )
        .await?;
        Ok(row.map(|row| (uint(row.get(0)), row.get(1))))
    }

    pub(crate) async fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Self::owner_usage_in(&client, owner).await
    }

    /// An owner's bytes stored, read through `client` (a transaction, so
    /// that an upload needs no second connection).
    pub(crate) async fn owner_usage_in(
        client: &impl GenericClient,
        owner: &VerifyingKey,
    ) -> Result<u64, StoreError> {
        let row = query_opt(
            client,
            "SELECT COALESCE(SUM(bytes), 0)::int8 FROM owners WHERE owner = $1",
            &[&owner.to_bytes().as_slice()],
            "read owner usage",
        )
        .await?;
        Ok(row.map_or(0, |row| uint(row.get(0))))
    }

    /// The ids held from `source`, sorted.
    pub(crate) async fn ids_from(&self, source: SourceKey) -> Result<Vec<BlobId>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT id FROM sources WHERE source = $1 ORDER BY id",
            &[&source.to_row().as_slice()],
            "list ids by source",
        )
        .await?;
        rows.iter().map(|row| id_from_db(row.get(0))).collect()
    }

    pub(crate) async fn sources_of(&self, id: &BlobId) -> Result<Vec<SourceKey>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT source FROM sources WHERE id = $1 ORDER BY source",
            &[&id.as_bytes().as_slice()],
            "list sources",
        )
        .await?;
        rows.iter().map(|row| source_from_db(row.get(0))).collect()
    }

    pub(crate) async fn least_recently_used(
        &self,
        max: usize,
    ) -> Result<Vec<(BlobId, u64)>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT id, size FROM blobs ORDER BY last_access, id LIMIT $1",
            &[&int(max as u64)],
            "list least recently used",
        )
        .await?;
        rows.iter()
            .map(|row| Ok((id_from_db(row.get(0))?, uint(row.get(1)))))
            .collect()
    }

    pub(crate) async fn forward(&self, id: &BlobId) -> Result<Option<Forward>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT peer, url FROM forwards WHERE id = $1",
            &[&id.as_bytes().as_slice()],
            "read forwarding record",
        )
        .await?;
        row.map(|row| {
            Ok(Forward {
                peer: key_from_db(row.get(0), "forwarding record's")?,
                url: row.get(1),
            })
        })
        .transpose()
    }

    /// Up to `max` forwarding records from `start` on in id order, wrapping
    /// around.
    pub(crate) async fn forwards_from(
        &self,
        start: [u8; 32],
        max: usize,
    ) -> Result<Vec<(BlobId, Forward)>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "(SELECT id, peer, url FROM forwards WHERE id >= $1 ORDER BY id LIMIT $2)
                 UNION ALL
                 (SELECT id, peer, url FROM forwards WHERE id < $1 ORDER BY id LIMIT $2)",
            &[&start.as_slice(), &int(max as u64)],
            "sample forwarding records",
        )
        .await?;
        rows.iter()
            .take(max)
            .map(|row| {
                Ok((
                    id_from_db(row.get(0))?,
                    Forward {
                        peer: key_from_db(row.get(1), "forwarding record's")?,
                        url: row.get(2),
                    },
                ))
            })
            .collect()
    }

    pub(crate) async fn forwards(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = query_one(
            &client,
            "SELECT COUNT(*) FROM forwards",
            &[],
            "count forwarding records",
        )
        .await?;
        Ok(uint(row.get(0)))
    }
}
