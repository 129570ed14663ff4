//! Head rows: the compare-and-set of a PUT, access times, collection.

use cairn_proto::{Slot, VerifyingKey};

use super::{Index, db_err, exec, int, query, query_one, query_opt, seq_from_db, seq_to_db, uint};
use crate::store::error::StoreError;
use crate::store::model::{HeadKey, HeadOutcome, HeadRow, NewHead};
use crate::store::rules::{HeadStep, Rules};

impl Index {
    /// The compare-and-set of a head PUT, as [`Rules::head_step`] decides: the
    /// row lock makes concurrent PUTs of one slot take turns.
    pub(crate) async fn put_head(
        &self,
        head: &NewHead,
        now: u64,
        rules: &Rules,
    ) -> Result<HeadOutcome, StoreError> {
        let mailbox = head.key.mailbox.to_bytes();
        let slot = head.key.slot.as_str();
        let envelope = &head.envelope;
        // A new slot is inserted without a lock to wait on; if another
        // process inserted it meanwhile, start over and compare with it.
        for _attempt in 0..3 {
            let mut client = self.client().await?;
            let txn = client.transaction().await.map_err(db_err("begin"))?;
            let stored = query_opt(
                &txn,
                "SELECT seq, last_access, envelope FROM heads
                     WHERE mailbox = $1 AND slot = $2 FOR UPDATE",
                &[&mailbox.as_slice(), &slot],
                "read head",
            )
            .await?;
            if let Some(row) = stored {
                let seq = seq_from_db(row.get(0));
                let stored: Vec<u8> = row.get(2);
                let replace = Rules::head_step(head, Some((seq, &stored))) == HeadStep::Replace;
                let outcome = if replace {
                    HeadOutcome::Replaced
                } else {
                    // The refusal shows the stored head: an access.
                    HeadOutcome::Stale {
                        seq,
                        current: stored,
                    }
                };
                if replace {
                    exec(
                        &txn,
                        "UPDATE heads SET seq = $3, envelope = $4,
                             last_access = GREATEST(last_access, $5)
                         WHERE mailbox = $1 AND slot = $2",
                        &[
                            &mailbox.as_slice(),
                            &slot,
                            &seq_to_db(head.seq),
                            envelope,
                            &int(now),
                        ],
                        "write head",
                    )
                    .await?;
                } else {
                    exec(
                        &txn,
                        "UPDATE heads SET last_access = GREATEST(last_access, $3)
                         WHERE mailbox = $1 AND slot = $2",
                        &[&mailbox.as_slice(), &slot, &int(now)],
                        "write head",
                    )
                    .await?;
                }
                txn.commit().await.map_err(db_err("commit head"))?;
                return Ok(outcome);
            }
            // The relay's head count is read only where it is bounded.
            let heads = if rules.counts_heads() {
                let row = query_one(
                    &txn,
                    "SELECT COALESCE(SUM(heads), 0)::int8 FROM stats",
                    &[],
                    "count heads",
                )
                .await?;
                uint(row.get(0))
            } else {
                0
            };
            let slots = query_one(
                &txn,
                "SELECT COUNT(*) FROM heads WHERE mailbox = $1",
                &[&mailbox.as_slice()],
                "count slots",
            )
            .await?;
            let slots = usize::try_from(uint(slots.get(0))).unwrap_or(usize::MAX);
            if let Err(refused) = rules.room_for_head(heads, slots) {
                return Ok(refused);
            }
            let inserted = exec(
                &txn,
                "INSERT INTO heads (mailbox, slot, seq, last_access, envelope)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &mailbox.as_slice(),
                    &slot,
                    &seq_to_db(head.seq),
                    &int(now),
                    envelope,
                ],
                "write head",
            )
            .await?;
            if inserted == 0 {
                continue;
            }
            Self::add_totals(&txn, mailbox[0], 0, 0, 1).await?;
            txn.commit().await.map_err(db_err("commit head"))?;
            return Ok(HeadOutcome::Created);
        }
        Err(StoreError::Backend {
            backend: "PostgreSQL",
            detail: "a head slot kept changing under a PUT; retry".into(),
        })
    }

    /// Writes coalesced head access times; how many heads were held.
    pub(crate) async fn touch_heads(
        &self,
        accesses: &[(HeadKey, u64)],
    ) -> Result<usize, StoreError> {
        let mut sorted: Vec<&(HeadKey, u64)> = accesses.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mailboxes: Vec<[u8; 32]> = sorted.iter().map(|(k, _)| k.mailbox_bytes()).collect();
        let mailboxes: Vec<&[u8]> = mailboxes.iter().map(<[u8; 32]>::as_slice).collect();
        let slots: Vec<&str> = sorted.iter().map(|(k, _)| k.slot.as_str()).collect();
        let ats: Vec<i64> = sorted.iter().map(|(_, at)| int(*at)).collect();
        let client = self.client().await?;
        let held = exec(
            &client,
            "UPDATE heads h SET last_access = v.at
                 FROM unnest($1::bytea[], $2::text[], $3::int8[]) AS v(mailbox, slot, at)
                 WHERE h.mailbox = v.mailbox AND h.slot = v.slot AND h.last_access < v.at",
            &[&mailboxes, &slots, &ats],
            "write head access times",
        )
        .await?;
        Ok(usize::try_from(held).unwrap_or(usize::MAX))
    }

    /// Deletes up to `max` heads last accessed before `cutoff`.
    pub(crate) async fn collect_heads(&self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        let rows = query(
            &txn,
            "DELETE FROM heads WHERE (mailbox, slot) IN (
                     SELECT mailbox, slot FROM heads WHERE last_access < $1
                     ORDER BY last_access LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING mailbox",
            &[&int(cutoff), &int(max as u64)],
            "collect heads",
        )
        .await?;
        let mut per_shard = [0i64; 256];
        for row in &rows {
            let mailbox: &[u8] = row.get(0);
            let first = mailbox.first().copied().unwrap_or(0);
            per_shard[usize::from(first)] += 1;
        }
        for (shard_index, count) in (0..=u8::MAX).zip(per_shard) {
            if count > 0 {
                Self::add_totals(&txn, shard_index, 0, 0, -count).await?;
            }
        }
        txn.commit().await.map_err(db_err("commit"))?;
        Ok(rows.len())
    }

    pub(crate) async fn head(&self, key: &HeadKey) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT envelope FROM heads WHERE mailbox = $1 AND slot = $2",
            &[&key.mailbox_bytes().as_slice(), &key.slot.as_str()],
            "read head",
        )
        .await?;
        Ok(row.map(|row| row.get(0)))
    }

    pub(crate) async fn heads(
        &self,
        mailbox: &VerifyingKey,
    ) -> Result<Vec<(Slot, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT slot, envelope FROM heads WHERE mailbox = $1 ORDER BY slot",
            &[&mailbox.to_bytes().as_slice()],
            "list heads",
        )
        .await?;
        rows.iter()
            .map(|row| {
                let slot = Slot::new(row.get::<_, &str>(0)).map_err(|e| {
                    StoreError::Failed(format!("a stored head's slot is invalid: {e}"))
                })?;
                Ok((slot, row.get(1)))
            })
            .collect()
    }

    /// Stores a head unless the slot holds one at least as new.
    pub(crate) async fn import_head(&self, row: &HeadRow) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db_err("begin"))?;
        let mailbox = row.key.mailbox_bytes();
        let stored = query_opt(
            &txn,
            "SELECT seq FROM heads WHERE mailbox = $1 AND slot = $2 FOR UPDATE",
            &[&mailbox.as_slice(), &row.key.slot.as_str()],
            "import head",
        )
        .await?;
        let newer = Rules::imports_head(stored.as_ref().map(|r| seq_from_db(r.get(0))), row.seq);
        if newer {
            exec(
                &txn,
                "INSERT INTO heads (mailbox, slot, seq, last_access, envelope)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (mailbox, slot) DO UPDATE SET seq = excluded.seq,
                     last_access = excluded.last_access, envelope = excluded.envelope",
                &[
                    &mailbox.as_slice(),
                    &row.key.slot.as_str(),
                    &seq_to_db(row.seq),
                    &int(row.last_access),
                    &row.envelope,
                ],
                "import head",
            )
            .await?;
            if stored.is_none() {
                Self::add_totals(&txn, mailbox[0], 0, 0, 1).await?;
            }
        }
        txn.commit().await.map_err(db_err("commit head"))?;
        Ok(newer)
    }
}
