//! The scale-out index: the embedded index's facts in PostgreSQL, shared by
//! every relay process of one identity.
//!
//! Each operation is one transaction that the database commits durably
//! before the relay answers. Where the embedded store relies on its single
//! writer thread, this module relies on the database:
//!
//! - Operations on one blob id take a transaction-scoped advisory lock on
//!   the id, so an upload's body write, index insert and a deletion's
//!   object removal of the same id never interleave ([`Index::lock_blob`]).
//! - Garbage collection claims rows with `FOR UPDATE SKIP LOCKED`: two
//!   processes sweeping at once each delete different blobs, and every
//!   expired blob exactly once.
//! - Totals, and each owner's usage, are kept in 256 rows chosen by the
//!   id's first byte, so that concurrent commits do not queue on a single
//!   row (with one row, one key's uploads ran at one commit per fsync).
//!   Capacity and quotas are checked against the sums, without locks:
//!   uploads committing in the same instant can overshoot them by at most
//!   what they commit together.
//! - Locks are always taken in one order: blob row, then stats row, then
//!   owner row, so concurrent transactions cannot deadlock.

use std::time::Duration;

use cairn_proto::{BlobId, Slot, VerifyingKey};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

/// A transaction on a pooled connection, whose statements are prepared
/// once per connection and cached: each later use is one round trip and no
/// planning (half the round trips of an unprepared statement).
pub(crate) type Txn<'a> = deadpool_postgres::Transaction<'a>;

use super::model::{BlobMeta, BlobRecord, CLIENT_SOURCE, Forward, ForwardRow, HeadKey, HeadRow};
use super::{ClaimOutcome, HeadOutcome, MAX_OWNERS, MAX_SLOTS_PER_MAILBOX, NewHead, StoreError};
use crate::config::{PostgresConfig, redact_password};

/// The migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_index.sql")),
    (2, include_str!("../../migrations/0002_spent_tokens.sql")),
    (3, include_str!("../../migrations/0003_co_owners.sql")),
];

/// Advisory lock taken while migrating, so that processes starting together
/// migrate once.
const MIGRATION_LOCK: i64 = 0x6361_6972_6e5f_6d67; // "cairn_mg"

/// A blob row as the index keeps it.
#[derive(Clone, Debug)]
pub(crate) struct BlobRow {
    pub(crate) size: u64,
    pub(crate) owner: Option<VerifyingKey>,
    /// True when the body is in the object store rather than in the row.
    pub(crate) external: bool,
}

/// A connection pool to the index database.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    pool: Pool,
}

/// Maps a database error: lost connections, refused logins and the errors
/// a server reports while it cannot serve right now (shutting down or
/// starting, too many connections, a deadlock or serialization failure that
/// aborted the transaction) are "unavailable": nothing was changed and the
/// request may be retried. Anything else the server reported is a fault.
pub(crate) fn db_err(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        let retryable = e.as_db_error().is_none_or(|db| {
            let code = db.code().code();
            code.starts_with("08")
                || code.starts_with("40")
                || code.starts_with("57P")
                || code == "53300"
        });
        if retryable {
            StoreError::Unavailable {
                backend: "PostgreSQL",
                detail: format!("{context}: {e}"),
            }
        } else {
            StoreError::Backend {
                backend: "PostgreSQL",
                detail: format!("{context}: {e}"),
            }
        }
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable {
        backend: "PostgreSQL",
        detail: format!("no connection: {e}"),
    }
}

/// `sql`, prepared once per connection and cached with it.
async fn prepared(
    client: &impl GenericClient,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(db_err("prepare"))
}

/// Runs a prepared `sql`; the rows it changed. `context` names the step in
/// errors.
pub(crate) async fn exec(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<u64, StoreError> {
    let statement = prepared(client, sql).await?;
    client
        .execute(&statement, params)
        .await
        .map_err(db_err(context))
}

/// Runs a prepared query; its rows.
pub(crate) async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let statement = prepared(client, sql).await?;
    client
        .query(&statement, params)
        .await
        .map_err(db_err(context))
}

/// Runs a prepared query of at most one row.
pub(crate) async fn query_opt(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<Option<tokio_postgres::Row>, StoreError> {
    let statement = prepared(client, sql).await?;
    client
        .query_opt(&statement, params)
        .await
        .map_err(db_err(context))
}

/// Runs a prepared query of exactly one row.
pub(crate) async fn query_one(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<tokio_postgres::Row, StoreError> {
    let statement = prepared(client, sql).await?;
    client
        .query_one(&statement, params)
        .await
        .map_err(db_err(context))
}

/// u64 → bigint for sizes, times and counts, which stay below 2^63.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// bigint → u64; negative values (never written) read as 0.
pub(crate) fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A head's `seq`, stored bit for bit (it may use all 64 bits).
fn seq_to_db(seq: u64) -> i64 {
    i64::from_ne_bytes(seq.to_ne_bytes())
}

fn seq_from_db(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// The stats shard of a blob or a mailbox.
fn shard(first_byte: u8) -> i16 {
    i16::from(first_byte)
}

/// The advisory-lock key of a blob id.
fn lock_key(id: &BlobId) -> i64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&id.as_bytes()[..8]);
    i64::from_be_bytes(head)
}

fn key_from_db(bytes: &[u8], what: &str) -> Result<VerifyingKey, StoreError> {
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Failed(format!("a stored {what} key has the wrong length")))?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|e| StoreError::Failed(format!("a stored {what} key is invalid: {e}")))
}

fn id_from_db(bytes: &[u8]) -> Result<BlobId, StoreError> {
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Failed("a stored blob id has the wrong length".into()))?;
    Ok(BlobId::from_bytes(raw))
}

impl Index {
    /// Connects and applies any migrations not yet applied.
    pub(crate) async fn open(config: &PostgresConfig) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config =
            config.url.parse().map_err(|e| StoreError::Backend {
                backend: "PostgreSQL",
                detail: format!("bad URL {}: {e}", redact_password(&config.url)),
            })?;
        pg.connect_timeout(Duration::from_secs(5));
        if let Some(schema) = &config.schema {
            if !schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(StoreError::Backend {
                    backend: "PostgreSQL",
                    detail: format!("schema name {schema:?}: use letters, digits and _ only"),
                });
            }
            pg.options(format!("-c search_path={schema}"));
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Backend {
                backend: "PostgreSQL",
                detail: format!("connection pool: {e}"),
            })?;
        let index = Self { pool };
        index.migrate(config.schema.as_deref()).await?;
        Ok(index)
    }

    async fn migrate(&self, schema: Option<&str>) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let txn = client
            .transaction()
            .await
            .map_err(db_err("begin migration"))?;
        exec(
            &txn,
            "SELECT pg_advisory_xact_lock($1)",
            &[&MIGRATION_LOCK],
            "lock for migration",
        )
        .await?;
        if let Some(schema) = schema {
            txn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(db_err("create schema"))?;
        }
        txn.batch_execute(
            "CREATE TABLE IF NOT EXISTS cairn_migrations (
                 version integer PRIMARY KEY,
                 applied timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db_err("create migrations table"))?;
        let applied: Vec<i32> = query(
            &txn,
            "SELECT version FROM cairn_migrations",
            &[],
            "read migrations",
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            txn.batch_execute(sql)
                .await
                .map_err(db_err("apply migration"))?;
            exec(
                &txn,
                "INSERT INTO cairn_migrations (version) VALUES ($1)",
                &[version],
                "record migration",
            )
            .await?;
            tracing::info!(version, "applied index migration");
        }
        txn.commit().await.map_err(db_err("commit migration"))?;
        Ok(())
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Serializes, until `txn` ends, every operation on blob `id` that
    /// takes the same lock: inserting its body, deleting its body.
    pub(crate) async fn lock_blob(txn: &Txn<'_>, id: &BlobId) -> Result<(), StoreError> {
        exec(
            txn,
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key(id)],
            "lock blob",
        )
        .await?;
        Ok(())
    }

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
        source: [u8; 32],
    ) -> Result<(), StoreError> {
        exec(
            txn,
            "INSERT INTO sources (source, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&source.as_slice(), &id.as_bytes().as_slice()],
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

    /// Makes `owner` an owner of the held, locked blob `row`, charging its
    /// usage, unless that would take it over `quota` (`None`: no quota) or
    /// the blob over [`MAX_OWNERS`].
    pub(crate) async fn add_owner(
        txn: &Txn<'_>,
        id: &BlobId,
        row: &BlobRow,
        owner: &VerifyingKey,
        quota: Option<u64>,
    ) -> Result<ClaimOutcome, StoreError> {
        let (owns, owners) = Self::ownership(txn, id, row, owner).await?;
        if owns {
            return Ok(ClaimOutcome::AlreadyOwner);
        }
        if owners >= MAX_OWNERS {
            return Ok(ClaimOutcome::TooManyOwners);
        }
        if let Some(quota) = quota
            && Self::owner_usage_in(txn, owner)
                .await?
                .saturating_add(row.size)
                > quota
        {
            return Ok(ClaimOutcome::QuotaExceeded);
        }
        exec(
            txn,
            "INSERT INTO co_owners (id, owner) VALUES ($1, $2)",
            &[&id.as_bytes().as_slice(), &owner.to_bytes().as_slice()],
            "add co-owner",
        )
        .await?;
        Self::add_owner_usage(txn, owner, id.as_bytes()[0], int(row.size)).await?;
        Ok(ClaimOutcome::Claimed)
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
                &[&raw, &CLIENT_SOURCE.as_slice()],
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

    /// The compare-and-set of a head PUT (see the embedded writer's): the
    /// row lock makes concurrent PUTs of one slot take turns.
    pub(crate) async fn put_head(
        &self,
        head: &NewHead,
        now: u64,
        max_heads: u64,
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
                let outcome = if !head.replaces(seq, &stored) {
                    // The refusal shows the stored head: an access.
                    HeadOutcome::Stale {
                        seq,
                        current: stored,
                    }
                } else {
                    HeadOutcome::Replaced
                };
                if matches!(outcome, HeadOutcome::Replaced) {
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
            if max_heads > 0 {
                let row = query_one(
                    &txn,
                    "SELECT COALESCE(SUM(heads), 0)::int8 FROM stats",
                    &[],
                    "count heads",
                )
                .await?;
                if uint(row.get(0)) >= max_heads {
                    return Ok(HeadOutcome::RelayFull);
                }
            }
            let slots = query_one(
                &txn,
                "SELECT COUNT(*) FROM heads WHERE mailbox = $1",
                &[&mailbox.as_slice()],
                "count slots",
            )
            .await?;
            if uint(slots.get(0)) >= MAX_SLOTS_PER_MAILBOX as u64 {
                return Ok(HeadOutcome::MailboxFull);
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

    /// Takes or renews the lease `name` for `holder` until `now + ttl`;
    /// false if another holder's lease has not expired.
    pub(crate) async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let taken = exec(
            &client,
            "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $4)
                 ON CONFLICT (name) DO UPDATE SET holder = $2, until = $4
                 WHERE leases.holder = $2 OR leases.until < $3",
            &[&name, &holder, &int(now), &int(now.saturating_add(ttl))],
            "take lease",
        )
        .await?;
        Ok(taken == 1)
    }

    // Reads. Each is one statement, so it sees one consistent snapshot.

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

    /// Bytes of blobs, blobs, and heads stored, over all processes.
    pub(crate) async fn stats(&self) -> Result<(u64, u64, u64), StoreError> {
        let client = self.client().await?;
        Self::stats_in(&client).await
    }

    /// The totals, read through `client`.
    pub(crate) async fn stats_in(
        client: &impl GenericClient,
    ) -> Result<(u64, u64, u64), StoreError> {
        let row = query_one(
            client,
            "SELECT COALESCE(SUM(bytes), 0)::int8, COALESCE(SUM(blobs), 0)::int8,
                        COALESCE(SUM(heads), 0)::int8 FROM stats",
            &[],
            "read totals",
        )
        .await?;
        Ok((uint(row.get(0)), uint(row.get(1)), uint(row.get(2))))
    }

    /// The ids held from `source`, sorted.
    pub(crate) async fn ids_from(&self, source: [u8; 32]) -> Result<Vec<BlobId>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT id FROM sources WHERE source = $1 ORDER BY id",
            &[&source.as_slice()],
            "list ids by source",
        )
        .await?;
        rows.iter().map(|row| id_from_db(row.get(0))).collect()
    }

    pub(crate) async fn sources_of(&self, id: &BlobId) -> Result<Vec<[u8; 32]>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT source FROM sources WHERE id = $1 ORDER BY source",
            &[&id.as_bytes().as_slice()],
            "list sources",
        )
        .await?;
        rows.iter()
            .map(|row| {
                let raw: &[u8] = row.get(0);
                raw.try_into()
                    .map_err(|_| StoreError::Failed("a stored source has the wrong length".into()))
            })
            .collect()
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
                        .map(|s| {
                            s.as_slice().try_into().map_err(|_| {
                                StoreError::Failed("a stored source has the wrong length".into())
                            })
                        })
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
        let newer = stored
            .as_ref()
            .is_none_or(|r| seq_from_db(r.get(0)) < row.seq);
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

    /// Ids queued for object removal by earlier deletions.
    pub(crate) async fn pending_unlinks(&self, max: usize) -> Result<Vec<BlobId>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT id FROM pending_unlink ORDER BY id LIMIT $1",
            &[&int(max as u64)],
            "list pending removals",
        )
        .await?;
        rows.iter().map(|row| id_from_db(row.get(0))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index in a fresh schema of the test server, or `None` when
    /// CAIRN_TEST_PG_URL is not set (`scripts/backends.sh`).
    async fn fresh_index() -> Option<Index> {
        let Ok(url) = std::env::var("CAIRN_TEST_PG_URL") else {
            #[allow(clippy::print_stderr, reason = "the skip reason is the test's report")]
            {
                eprintln!("skipped: CAIRN_TEST_PG_URL is not set (scripts/backends.sh)");
            }
            return None;
        };
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).ok()?;
        let schema: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        Some(
            Index::open(&PostgresConfig {
                url,
                schema: Some(format!("u{schema}")),
                pool_size: 4,
            })
            .await
            .expect("the test database answers"),
        )
    }

    /// Periodic work on shared data runs in one process at a time: a lease
    /// goes to one holder, who keeps it by renewing, and passes to another
    /// only once it has expired.
    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires() {
        let Some(index) = fresh_index().await else {
            return;
        };
        let take = |holder: &'static str, now: u64| {
            let index = index.clone();
            async move { index.try_lease("reconcile", holder, now, 10).await.unwrap() }
        };
        assert!(take("a", 100).await);
        assert!(!take("b", 105).await, "held by a until 110");
        assert!(take("a", 108).await, "a renews, now until 118");
        assert!(!take("b", 115).await);
        assert!(take("b", 119).await, "expired: b takes over");
        assert!(!take("a", 120).await, "and a no longer has it");
        // Other names are other leases.
        assert!(index.try_lease("relieve", "a", 120, 10).await.unwrap());
        // Migrating again (a second process starting) changes nothing.
        index.migrate(None).await.unwrap();
    }
}
