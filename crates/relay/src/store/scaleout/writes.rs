//! The scale-out backend's writes of blobs: each one transaction under the
//! blob id's advisory lock, deciding by [`crate::store::rules`] (see the
//! commit protocol in [`super`]).

use bytes::Bytes;
use cairn_proto::BlobId;

use super::ScaleOut;
use super::postgres::{self, BlobRow, Index, db_err, exec, int};
use crate::store::error::StoreError;
use crate::store::model::{
    BatchItem, BlobRecord, ClaimOutcome, DeleteOutcome, Forward, INLINE_MAX, InsertOutcome, Source,
    SpentToken, Staged,
};
use crate::store::rules::{Limit, Rules};

/// Pending object removals finished per pass.
const UNLINK_BATCH: usize = 1024;

impl ScaleOut {
    pub(super) async fn insert_blob(
        &self,
        staged: Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<InsertOutcome, StoreError> {
        let outcome = self
            .insert_staged(&staged, id, size, source, now, token)
            .await;
        if let Staged::File(temp) = staged {
            let _ = tokio::fs::remove_file(temp).await;
        }
        outcome
    }

    async fn insert_staged(
        &self,
        staged: &Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<InsertOutcome, StoreError> {
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        // Spent first, undone with the transaction by any refusal below.
        if !Index::spend(&txn, token).await? {
            return Ok(InsertOutcome::Replayed);
        }
        let outcome = self.insert_in(&txn, staged, id, size, source, now).await?;
        if outcome.took_effect() {
            txn.commit().await.map_err(db_err("commit upload"))?;
            if outcome == InsertOutcome::Stored {
                self.added(int(size), 1);
            }
        }
        Ok(outcome)
    }

    /// See [`crate::store::Backend::insert_batch`]: one transaction, the
    /// blobs locked in ascending id order (as every transaction that locks
    /// several takes them), so concurrent batches cannot deadlock.
    pub(super) async fn insert_many(
        &self,
        mut items: Vec<BatchItem>,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_unstable_by_key(|&i| items[i].id);
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        if !Index::spend(&txn, token).await? {
            return Ok(vec![InsertOutcome::Replayed; items.len()]);
        }
        let mut outcomes = vec![InsertOutcome::Replayed; items.len()];
        let mut stored = (0, 0);
        for i in order {
            let item = &mut items[i];
            let size = item.data.len() as u64;
            let staged = Staged::Bytes(std::mem::take(&mut item.data));
            let outcome = self
                .insert_in(&txn, &staged, item.id, size, source, now)
                .await?;
            if outcome == InsertOutcome::Stored {
                stored = (stored.0 + int(size), stored.1 + 1);
            }
            outcomes[i] = outcome;
        }
        if outcomes.iter().any(|o| o.took_effect()) {
            txn.commit().await.map_err(db_err("commit batch"))?;
            self.added(stored.0, stored.1);
        }
        Ok(outcomes)
    }

    /// An upload inside `txn`, which the caller commits if it took effect:
    /// an access (and perhaps a claim) if the blob is held, else the body
    /// and its rows if the rules admit it. A refusal writes nothing.
    async fn insert_in(
        &self,
        txn: &postgres::Txn<'_>,
        staged: &Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
    ) -> Result<InsertOutcome, StoreError> {
        let owner = source.owner();
        Index::lock_blob(txn, &id).await?;
        if let Some(row) = Index::blob_for_update(txn, &id).await? {
            return Ok(
                match self.acknowledge_row(txn, &id, &row, source, now).await? {
                    ClaimOutcome::QuotaExceeded => InsertOutcome::QuotaExceeded,
                    _ => InsertOutcome::AlreadyHeld,
                },
            );
        }
        // Checked before the body travels, against the shared sums (see
        // `postgres` on how far concurrent commits can overshoot them).
        let (bytes, _, _) = Index::stats_in(txn).await?;
        let quota = self.rules.quota_for(source);
        let usage = if quota.is_set() {
            Index::owner_usage_in(txn, &owner).await?
        } else {
            0
        };
        if let Err(refused) = self.rules.admit(bytes, size, quota, usage) {
            return Ok(refused);
        }
        let body = self.place_body(staged, &id, size).await?;
        Index::insert_blob(txn, &id, size, Some(&owner), now, now, body.as_deref()).await?;
        Index::add_source(txn, &id, source.key()).await?;
        Index::add_totals(txn, id.as_bytes()[0], int(size), 1, 0).await?;
        Index::add_owner_usage(txn, &owner, id.as_bytes()[0], int(size)).await?;
        Ok(InsertOutcome::Stored)
    }

    /// Stores verified bytes with `record`'s index facts (a migration).
    pub(super) async fn import_record(
        &self,
        staged: Staged,
        record: &BlobRecord,
    ) -> Result<InsertOutcome, StoreError> {
        let outcome = self.import_staged(&staged, record).await;
        if let Staged::File(temp) = staged {
            let _ = tokio::fs::remove_file(temp).await;
        }
        outcome
    }

    async fn import_staged(
        &self,
        staged: &Staged,
        record: &BlobRecord,
    ) -> Result<InsertOutcome, StoreError> {
        let (id, meta) = (record.id, &record.meta);
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        Index::lock_blob(&txn, &id).await?;
        if Index::blob_for_update(&txn, &id).await?.is_some() {
            return Ok(InsertOutcome::AlreadyHeld);
        }
        let (bytes, _, _) = Index::stats_in(&txn).await?;
        if let Err(refused) = self.rules.admit(bytes, meta.size, Limit::NONE, 0) {
            return Ok(refused);
        }
        let body = self.place_body(staged, &id, meta.size).await?;
        Index::insert_blob(
            &txn,
            &id,
            meta.size,
            meta.owner.as_ref(),
            meta.created,
            meta.last_access,
            body.as_deref(),
        )
        .await?;
        for source in &record.sources {
            Index::add_source(&txn, &id, *source).await?;
        }
        Index::add_totals(&txn, id.as_bytes()[0], int(meta.size), 1, 0).await?;
        if let Some(owner) = &meta.owner {
            Index::add_owner_usage(&txn, owner, id.as_bytes()[0], int(meta.size)).await?;
        }
        let row = BlobRow {
            size: meta.size,
            owner: meta.owner,
            external: body.is_none(),
        };
        // Held to the rules of a claim, as in the embedded store.
        for owner in &record.co_owners {
            let (owns, owners) = Index::ownership(&txn, &id, &row, owner).await?;
            if Rules::claim(owns, owners).is_ok() {
                Index::add_co_owner(&txn, &id, &row, owner).await?;
            }
        }
        txn.commit().await.map_err(db_err("commit import"))?;
        self.added(int(meta.size), 1);
        Ok(InsertOutcome::Stored)
    }

    /// Puts a verified body where it belongs: returned for the index row
    /// if small, else written to the object store.
    async fn place_body(
        &self,
        staged: &Staged,
        id: &BlobId,
        size: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let inline = size <= INLINE_MAX as u64;
        Ok(match staged {
            Staged::Bytes(data) if inline => Some(data.clone()),
            Staged::File(temp) if inline => Some(
                tokio::fs::read(temp)
                    .await
                    .map_err(|e| StoreError::io("read small upload", e))?
                    .into(),
            ),
            Staged::Bytes(data) => {
                self.objects.put_bytes(id, data.clone()).await?;
                None
            }
            Staged::File(temp) => {
                self.objects.put_file(id, temp).await?;
                None
            }
        })
    }

    /// See [`Backend::acknowledge_held`].
    pub(super) async fn acknowledge(
        &self,
        id: BlobId,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Option<(u64, ClaimOutcome)>, StoreError> {
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        Index::lock_blob(&txn, &id).await?;
        let Some(row) = Index::blob_for_update(&txn, &id).await? else {
            return Ok(None);
        };
        if !Index::spend(&txn, token).await? {
            return Ok(Some((row.size, ClaimOutcome::Replayed)));
        }
        let claim = self.acknowledge_row(&txn, &id, &row, source, now).await?;
        if claim != ClaimOutcome::QuotaExceeded {
            txn.commit().await.map_err(db_err("commit"))?;
        }
        Ok(Some((row.size, claim)))
    }

    /// A claim of ownership by `owner` on the held, locked blob `row`, as
    /// the rules decide it; the caller commits.
    async fn claim_row(
        &self,
        txn: &postgres::Txn<'_>,
        id: &BlobId,
        row: &BlobRow,
        owner: &cairn_proto::VerifyingKey,
    ) -> Result<ClaimOutcome, StoreError> {
        let (owns, owners) = Index::ownership(txn, id, row, owner).await?;
        if let Err(decided) = Rules::claim(owns, owners) {
            return Ok(decided);
        }
        let quota = self.rules.key_quota();
        let usage = if quota.is_set() {
            Index::owner_usage_in(txn, owner).await?
        } else {
            0
        };
        let outcome = self.rules.charge(usage, row.size);
        if outcome == ClaimOutcome::Claimed {
            Index::add_co_owner(txn, id, row, owner).await?;
        }
        Ok(outcome)
    }

    /// Records an upload of the held, locked blob `row` by `source`: an
    /// access, the source and, for a client, a claim of ownership within
    /// the quota. A claim over quota is refused and nothing is recorded;
    /// the caller commits otherwise.
    async fn acknowledge_row(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        id: &BlobId,
        row: &BlobRow,
        source: Source,
        now: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        let claim = match source {
            Source::Client(key) => self.claim_row(txn, id, row, &key).await?,
            Source::Peer(_) => ClaimOutcome::AlreadyOwner,
        };
        if claim != ClaimOutcome::QuotaExceeded {
            Index::touch(txn, id, now).await?;
            Index::add_source(txn, id, source.key()).await?;
        }
        Ok(claim)
    }

    /// Makes `owner` an owner of blob `id`, charging its quota.
    pub(super) async fn claim(
        &self,
        id: BlobId,
        owner: cairn_proto::VerifyingKey,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        Index::lock_blob(&txn, &id).await?;
        let Some(row) = Index::blob_for_update(&txn, &id).await? else {
            return Ok(ClaimOutcome::NotFound);
        };
        if !Index::spend(&txn, token).await? {
            return Ok(ClaimOutcome::Replayed);
        }
        let outcome = self.claim_row(&txn, &id, &row, &owner).await?;
        if outcome != ClaimOutcome::QuotaExceeded {
            Index::touch(&txn, &id, now).await?;
            txn.commit().await.map_err(db_err("commit claim"))?;
        }
        Ok(outcome)
    }

    pub(super) async fn release(
        &self,
        id: BlobId,
        owner: cairn_proto::VerifyingKey,
        token: SpentToken,
        forget_before: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        exec(
            &txn,
            "DELETE FROM spent_tokens WHERE expires_at < $1",
            &[&int(forget_before)],
            "forget spent tokens",
        )
        .await?;
        if !Index::spend(&txn, Some(token)).await? {
            return Ok(DeleteOutcome::Replayed);
        }
        let mut removed = None;
        let outcome = match Index::blob_for_update(&txn, &id).await? {
            None => DeleteOutcome::NotFound,
            // Decided before anything changes: the last claim goes with
            // the blob.
            Some(row) => {
                let (owns, owners) = Index::ownership(&txn, &id, &row, &owner).await?;
                let outcome = Rules::release(owns, owners);
                match outcome {
                    // The blob's removal updates the totals before the
                    // owners' usage, in the order every transaction takes
                    // those rows.
                    DeleteOutcome::Deleted => {
                        Index::remove_blob(&txn, &id, &row, false).await?;
                        removed = Some(row);
                    }
                    DeleteOutcome::Released { .. } => {
                        Index::release(&txn, &id, &row, &owner).await?;
                    }
                    _ => {}
                }
                outcome
            }
        };
        // The token is spent whatever became of the blob.
        txn.commit().await.map_err(db_err("commit delete"))?;
        // Back to the pool before the removal takes another.
        drop(client);
        if let Some(row) = removed {
            self.added(-int(row.size), -1);
            if row.external {
                self.unlink_or_leave(&id).await;
            }
        }
        Ok(outcome)
    }

    pub(super) async fn forward_blob(
        &self,
        id: BlobId,
        size: u64,
        forward: Forward,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        let Some(row) = Index::blob_for_update(&txn, &id).await? else {
            return Ok(false);
        };
        if row.size != size {
            return Ok(false);
        }
        // Peers that replicated the blob here still count it as held (the
        // relay answers for it through the redirect).
        Index::remove_blob(&txn, &id, &row, true).await?;
        Index::put_forward(&txn, &id, &forward, now).await?;
        txn.commit().await.map_err(db_err("commit transfer"))?;
        drop(client);
        self.added(-int(row.size), -1);
        if row.external {
            self.unlink_or_leave(&id).await;
        }
        Ok(true)
    }

    /// Deletes up to `max` blobs last accessed before `cutoff`. Rows other
    /// processes are deleting are skipped, so concurrent passes never
    /// delete a blob twice.
    pub(super) async fn collect_expired(
        &self,
        cutoff: u64,
        max: usize,
    ) -> Result<Vec<(BlobId, u64)>, StoreError> {
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        let expired = Index::expired_blobs(&txn, cutoff, max).await?;
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        // Totals and owners are updated once each, in ascending order, so
        // that concurrent passes and uploads take row locks in one order.
        let mut shards = std::collections::BTreeMap::<u8, (i64, i64)>::new();
        let mut owners = std::collections::BTreeMap::<([u8; 32], u8), i64>::new();
        let mut ids: Vec<&[u8]> = Vec::with_capacity(expired.len());
        let mut external: Vec<&[u8]> = Vec::new();
        for (id, row) in &expired {
            ids.push(id.as_bytes().as_slice());
            if row.external {
                external.push(id.as_bytes().as_slice());
            }
            let first = id.as_bytes()[0];
            let shard = shards.entry(first).or_default();
            shard.0 += int(row.size);
            shard.1 += 1;
            if let Some(owner) = &row.owner {
                *owners.entry((owner.to_bytes(), first)).or_default() += int(row.size);
            }
        }
        postgres::exec(
            &txn,
            "DELETE FROM blobs WHERE id = ANY($1)",
            &[&ids],
            "collect blobs",
        )
        .await?;
        postgres::exec(
            &txn,
            "DELETE FROM sources WHERE id = ANY($1)",
            &[&ids],
            "collect blobs",
        )
        .await?;
        let sizes: std::collections::HashMap<BlobId, u64> =
            expired.iter().map(|(id, row)| (*id, row.size)).collect();
        for (id, owner) in Index::drop_co_owners(&txn, &ids).await? {
            let size = sizes.get(&id).copied().unwrap_or(0);
            *owners
                .entry((owner.to_bytes(), id.as_bytes()[0]))
                .or_default() += int(size);
        }
        postgres::exec(
            &txn,
            "INSERT INTO pending_unlink (id) SELECT unnest($1::bytea[]) ON CONFLICT DO NOTHING",
            &[&external],
            "collect blobs",
        )
        .await?;
        for (shard, (bytes, blobs)) in &shards {
            Index::add_totals(&txn, *shard, -bytes, -blobs, 0).await?;
        }
        for ((owner, shard), bytes) in &owners {
            let owner = cairn_proto::VerifyingKey::from_bytes(owner)
                .map_err(|e| StoreError::Failed(format!("a stored owner key is invalid: {e}")))?;
            Index::add_owner_usage(&txn, &owner, *shard, -bytes).await?;
        }
        txn.commit().await.map_err(db_err("commit collection"))?;
        drop(client);
        let freed: i64 = shards.values().map(|(bytes, _)| bytes).sum();
        let count = i64::try_from(expired.len()).unwrap_or(i64::MAX);
        self.added(-freed, -count);
        for (id, row) in &expired {
            if row.external {
                self.unlink_or_leave(id).await;
            }
        }
        Ok(expired
            .into_iter()
            .map(|(id, row)| (id, row.size))
            .collect())
    }

    /// Stores many small blobs in a few transactions (a test hook for
    /// building large indexes quickly); how many were new.
    pub(super) async fn seed_small(
        &self,
        blobs: &[(BlobId, Bytes)],
        source: Source,
        now: u64,
    ) -> Result<usize, StoreError> {
        let owner = source.owner().to_bytes();
        let mut stored = 0;
        for chunk in blobs.chunks(10_000) {
            let mut client = self.index.client().await?;
            let txn = client.transaction().await.map_err(db_err("begin"))?;
            let ids: Vec<&[u8]> = chunk
                .iter()
                .map(|(id, _)| id.as_bytes().as_slice())
                .collect();
            let sizes: Vec<i64> = chunk.iter().map(|(_, b)| int(b.len() as u64)).collect();
            let bodies: Vec<&[u8]> = chunk.iter().map(|(_, b)| b.as_ref()).collect();
            let rows = postgres::query(
                &txn,
                "INSERT INTO blobs (id, size, created, last_access, owner, body)
                     SELECT id, size, $3, $3, $4, body
                     FROM unnest($1::bytea[], $2::int8[], $5::bytea[]) AS v(id, size, body)
                     ON CONFLICT DO NOTHING RETURNING id, size",
                &[&ids, &sizes, &int(now), &owner.as_slice(), &bodies],
                "seed blobs",
            )
            .await?;
            postgres::exec(
                &txn,
                "INSERT INTO sources (source, id) SELECT $1, unnest($2::bytea[])
                 ON CONFLICT DO NOTHING",
                &[&source.key().to_row().as_slice(), &ids],
                "seed blobs",
            )
            .await?;
            // Booked in each id's own shard, where its deletion will
            // subtract it.
            let mut shards = std::collections::BTreeMap::<u8, (i64, i64)>::new();
            for row in &rows {
                let first = row.get::<_, &[u8]>(0).first().copied().unwrap_or(0);
                let shard = shards.entry(first).or_default();
                shard.0 += row.get::<_, i64>(1);
                shard.1 += 1;
            }
            for (shard, (bytes, count)) in &shards {
                Index::add_totals(&txn, *shard, *bytes, *count, 0).await?;
                Index::add_owner_usage(&txn, &source.owner(), *shard, *bytes).await?;
            }
            txn.commit().await.map_err(db_err("commit seed"))?;
            let bytes: i64 = shards.values().map(|(b, _)| b).sum();
            let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
            self.added(bytes, count);
            stored += rows.len();
        }
        Ok(stored)
    }

    /// [`ScaleOut::unlink`] after a committed deletion: the deletion stands
    /// whatever happens to the object now, and a removal that fails stays
    /// queued in `pending_unlink` for the next GC pass or start.
    async fn unlink_or_leave(&self, id: &BlobId) {
        if let Err(e) = self.unlink(id).await {
            tracing::warn!(blob = %id, error = %e, "object removal left for the next GC pass");
        }
    }

    /// Removes blob `id`'s object unless the index names the id again, and
    /// drops its pending-removal entry; under the id's lock.
    async fn unlink(&self, id: &BlobId) -> Result<(), StoreError> {
        let mut client = self.index.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        Index::lock_blob(&txn, id).await?;
        if Index::blob_for_update(&txn, id).await?.is_none() {
            self.objects.delete(id).await?;
        }
        postgres::exec(
            &txn,
            "DELETE FROM pending_unlink WHERE id = $1",
            &[&id.as_bytes().as_slice()],
            "finish object removal",
        )
        .await?;
        txn.commit()
            .await
            .map_err(db_err("commit object removal"))?;
        Ok(())
    }

    /// Finishes object removals left by any process; how many.
    pub(super) async fn finish_unlinks(&self) -> Result<usize, StoreError> {
        let mut done = 0;
        loop {
            let ids = self.index.pending_unlinks(UNLINK_BATCH).await?;
            if ids.is_empty() {
                return Ok(done);
            }
            for id in &ids {
                self.unlink(id).await?;
            }
            done += ids.len();
            if ids.len() < UNLINK_BATCH {
                return Ok(done);
            }
        }
    }
}
