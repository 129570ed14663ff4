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

use cairn_proto::{BlobId, VerifyingKey};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

/// A transaction on a pooled connection, whose statements are prepared
/// once per connection and cached: each later use is one round trip and no
/// planning (half the round trips of an unprepared statement).
pub(crate) type Txn<'a> = deadpool_postgres::Transaction<'a>;

mod blobs;
mod export;
mod heads;

use crate::config::{PostgresConfig, redact_password};
use crate::store::error::StoreError;
use crate::store::model::{SourceKey, SpentToken};

/// The migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../../../migrations/0001_index.sql")),
    (
        2,
        include_str!("../../../../migrations/0002_spent_tokens.sql"),
    ),
    (3, include_str!("../../../../migrations/0003_co_owners.sql")),
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

fn source_from_db(bytes: &[u8]) -> Result<SourceKey, StoreError> {
    let row: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Failed("a stored source has the wrong length".into()))?;
    Ok(SourceKey::from_row(row))
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

    /// Records `token` as spent in `txn`; false if it was spent already
    /// (then nothing in `txn` may be committed). The row is written first
    /// and undone with `txn` if the request ends without effect; a
    /// concurrent transaction spending the same token waits on it, so of
    /// two uses across processes at most one commits.
    pub(crate) async fn spend(
        txn: &Txn<'_>,
        token: Option<SpentToken>,
    ) -> Result<bool, StoreError> {
        let Some(token) = token else {
            return Ok(true);
        };
        let recorded = exec(
            txn,
            "INSERT INTO spent_tokens (nonce, expires_at) VALUES ($1, $2) \
             ON CONFLICT (nonce) DO NOTHING",
            &[&token.nonce.as_slice(), &int(token.expires_at)],
            "record spent token",
        )
        .await?;
        Ok(recorded == 1)
    }

    /// Forgets spent tokens that expired before `before`; how many.
    pub(crate) async fn forget_spent_tokens(&self, before: u64) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = exec(
            &client,
            "DELETE FROM spent_tokens WHERE expires_at < $1",
            &[&int(before)],
            "forget spent tokens",
        )
        .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
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
