//! The durable blob store. Two backends behind one interface:
//!
//! - **Embedded** (the default, one process): bodies as files ([`files`]),
//!   metadata in an embedded database ([`index`]), all writes through one
//!   batching writer thread ([`writer`]). Described below.
//! - **Scale-out** (many processes): metadata in PostgreSQL ([`postgres`]),
//!   bodies in an S3-compatible bucket ([`objects`]); see [`scaleout`] for
//!   its commit protocol.
//!
//! Both give the same answers: an upload is acknowledged only once it is
//! durable in the backend, only hash-verified bytes are ever stored, and a
//! blob is served only while the index names it.
//!
//! # Commit protocol (an upload)
//!
//! 1. Stream the body to `tmp/<random>.part`, hashing as it arrives.
//! 2. Compare the hash with the claimed id; on mismatch delete the temp file.
//! 3. Blobs over 1 MiB: `fdatasync` the temp file in the upload's own task,
//!    so big flushes run in parallel and never hold up a batch.
//! 4. Writer thread, in one batch with other requests: rename each temp file
//!    to `blobs/ab/<id>`, then one `syncfs` of the store's filesystem
//!    (making every file's contents and every rename of the batch durable),
//!    then commit the index transaction (itself fsynced). Two device flushes
//!    per batch, not two per blob: group commit.
//! 5. Only then is the upload acknowledged (201).
//!
//! Blobs of at most [`INLINE_MAX`] bytes skip steps 1–4: their bytes go into
//! the index's `inline` table in the same transaction as their entry, so the
//! one commit makes them durable.
//!
//! # What a crash leaves behind
//!
//! - Before 4: a temp file. Removed at next start; nothing was acknowledged.
//! - Between 4's rename and its commit: a complete, verified file under
//!   `blobs/` that the index does not list. Never acknowledged; `fsck` reports
//!   it as an orphan and `--repair` indexes it (its bytes are valid).
//! - After 4: the blob is durable and indexed.
//! - A deletion commits the index change (and a `pending_unlink` row) before
//!   removing the file; a crash in between leaves a file that the next start
//!   removes.
//!
//! # Invariants
//!
//! - Every file under `blobs/` hashes to its name.
//! - Every blob in the index has its file (once pending unlinks are done).
//! - `stats.bytes` is the sum of indexed sizes, `owners` the per-owner sums.
//! - `stats.heads` is the number of heads; `heads_by_access_v1` has exactly
//!   one row per head, at its stored last access.
//!
//! # Heads
//!
//! Mailbox heads (docs/PROTOCOL.md §7.7) live only in the index, in
//! `heads_v1` with their last-access order in `heads_by_access_v1`. A PUT is
//! one writer operation: the `seq` comparison and the write happen in the
//! same transaction, and the answer follows the commit, so an acknowledged
//! head survives any crash and two concurrent PUTs cannot both win. Reads
//! are coalesced into access times like blob reads; a crash loses at most
//! the access times not yet flushed, never a head. Heads do not count
//! against blob capacity (each is a few hundred bytes); their number is
//! bounded by the `max_heads` setting and [`MAX_SLOTS_PER_MAILBOX`].
//!
//! Filesystem assumptions: `tmp/` and `blobs/` are on one filesystem; rename
//! within it is atomic; `syncfs` makes all of its written data and metadata
//! durable and reports write-back errors (Linux 5.8 and later); `fsync` of a
//! directory makes its entries durable.

mod body;
pub(crate) mod cache;
pub(crate) mod export;
pub(crate) mod files;
pub(crate) mod fsck;
pub(crate) mod index;
pub(crate) mod model;
pub(crate) mod objects;
pub(crate) mod postgres;
pub(crate) mod scaleout;
mod writer;

pub(crate) use body::{BlobBody, BodyStream, clamped_slice};

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cairn_proto::{BlobId, HeadRecord, OwnedHead, RecordKind, Slot, Verified, VerifyingKey};
use tokio::sync::{mpsc, oneshot};

use self::files::BlobFiles;
use self::index::{
    BLOB_SOURCES, BLOBS, BY_ACCESS, CO_OWNERS, FORWARDS, FORWARDS_BY_ACCESS, HEADS,
    HEADS_BY_ACCESS, INLINE, IndexReader, Location, OWNERS, PENDING_UNLINK, SOURCES, SPENT_TOKENS,
    STATS,
};
use self::model::{Forward, HeadKey};
use self::scaleout::ScaleOut;
use crate::config::StorageConfig;

/// Blobs of at most this many bytes are stored inside the index rather than
/// as files.
pub(crate) const INLINE_MAX: usize = 16 * 1024;
/// Most slots one mailbox may have; a head for a further slot is refused.
/// Bounds the mailbox listing (`GET /v1/heads/{mailbox}`).
pub(crate) const MAX_SLOTS_PER_MAILBOX: usize = 1024;
use self::writer::{QUEUE_DEPTH, WriteOp, Writer};

/// A store failure. Every variant is a local fault, never the client's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{context}: {cause}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The OS error.
        cause: io::Error,
    },
    /// The index database failed.
    #[error("index database: {0}")]
    Db(redb::Error),
    /// An earlier write failed; the store refuses work until restarted.
    #[error("store stopped after an earlier failure ({0}); restart the relay")]
    Failed(String),
    /// The store is shutting down.
    #[error("store is shut down")]
    Closed,
    /// A shared backend (PostgreSQL, the object store) cannot be reached
    /// right now; the request may be retried.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        detail: String,
    },
    /// A shared backend refused an operation.
    #[error("{backend}: {detail}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn io(context: &'static str, cause: io::Error) -> Self {
        Self::Io { context, cause }
    }

    /// True when the disk is full (so the request can be refused with 507
    /// rather than treated as a fault).
    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { cause, .. } if cause.kind() == io::ErrorKind::StorageFull)
    }
}

impl From<redb::Error> for StoreError {
    fn from(err: redb::Error) -> Self {
        Self::Db(err)
    }
}

/// Who handed the relay a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A client, whose upload key owns the blob and pays from its quota.
    /// The relay replicates these blobs to its peers.
    Client(VerifyingKey),
    /// A peer relay that replicated or transferred it. Peers are exempt from
    /// per-key quotas (the operator chose them) but not from capacity.
    Peer(VerifyingKey),
}

impl Source {
    /// The key recorded as the blob's owner.
    pub(crate) fn owner(self) -> VerifyingKey {
        match self {
            Self::Client(key) | Self::Peer(key) => key,
        }
    }

    /// The first part of the blob's row in the sources table.
    pub(crate) fn row_key(self) -> [u8; 32] {
        match self {
            Self::Client(_) => model::CLIENT_SOURCE,
            Self::Peer(key) => key.to_bytes(),
        }
    }
}

/// A verified upload on its way into the store.
#[derive(Debug)]
pub(crate) enum Staged {
    /// A temp file holding the bytes (large uploads stream to disk).
    File(PathBuf),
    /// The bytes themselves (small uploads): the writer stages and renames
    /// them in one go, sparing the upload several trips to the blocking
    /// thread pool.
    Bytes(bytes::Bytes),
}

/// What became of an upload handed to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InsertOutcome {
    /// Newly stored and durable.
    Stored,
    /// The store already held it; recorded as an access.
    AlreadyHeld,
    /// Refused: capacity exhausted.
    RelayFull,
    /// Refused: the owner's quota is exhausted.
    QuotaExceeded,
}

/// A verified head on its way to the store: what the store needs of a
/// legacy head (signed by its mailbox key, docs/PROTOCOL.md §4.4) or of an
/// owned head (signed by the writer whose slot it is, §4.9).
#[derive(Clone, Debug)]
pub(crate) struct NewHead {
    pub(crate) key: HeadKey,
    pub(crate) seq: u64,
    pub(crate) envelope: Vec<u8>,
    owned: bool,
}

impl NewHead {
    fn new<R: cairn_proto::Record>(
        head: &Verified<R>,
        mailbox: VerifyingKey,
        slot: &Slot,
        seq: u64,
        owned: bool,
    ) -> Self {
        Self {
            key: HeadKey {
                mailbox,
                slot: slot.clone(),
            },
            seq,
            envelope: head.envelope().to_bytes(),
            owned,
        }
    }
}

impl From<Verified<HeadRecord>> for NewHead {
    fn from(head: Verified<HeadRecord>) -> Self {
        Self::new(&head, head.mailbox, &head.slot, head.seq, false)
    }
}

impl From<Verified<OwnedHead>> for NewHead {
    fn from(head: Verified<OwnedHead>) -> Self {
        Self::new(&head, head.mailbox, &head.slot, head.seq, true)
    }
}

impl NewHead {
    /// Whether this head replaces the stored one (`seq`, `envelope`): it is
    /// newer, or it is an owned head and the stored one is not. The second
    /// case is a legacy head put in an owned slot's name before this relay
    /// refused that; it proves nothing about the slot's writer, so its
    /// `seq` must not lock the writer out. The one rule both backends apply.
    pub(crate) fn replaces(&self, seq: u64, envelope: &[u8]) -> bool {
        let stored_owned = envelope.get(1) == Some(&RecordKind::OwnedHead.code());
        self.seq > seq || (self.owned && !stored_owned)
    }
}

/// What became of a head handed to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeadOutcome {
    /// The first head in its slot; durable.
    Created,
    /// Newer than the stored head, which it replaced; durable.
    Replaced,
    /// Refused: its `seq` is not above `seq`, the stored head's, whose
    /// envelope bytes are `current`.
    Stale { seq: u64, current: Vec<u8> },
    /// Refused: the mailbox has [`MAX_SLOTS_PER_MAILBOX`] slots already.
    MailboxFull,
    /// Refused: the relay keeps `max_heads` heads already.
    RelayFull,
}

/// What became of a delete request: the signer's claim on the blob is
/// dropped, and the blob goes with its last owner's claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeleteOutcome {
    /// That was the last claim: the blob is gone.
    Deleted,
    /// The signer no longer owns the blob; other owners keep it.
    Released {
        owners_left: u64,
    },
    NotFound,
    NotOwner,
    /// Its token was used before; nothing changed.
    Replayed,
}

/// What became of a claim of ownership (`POST /v1/blobs/{id}`, or a
/// `PUT` of a blob the relay holds already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimOutcome {
    /// The key owns the blob now, and its quota pays for it.
    Claimed,
    /// The key owned it already; recorded as an access.
    AlreadyOwner,
    /// The relay does not hold the blob.
    NotFound,
    /// Refused: the key's quota cannot pay for it.
    QuotaExceeded,
    /// Refused: the blob has [`MAX_OWNERS`] owners already.
    TooManyOwners,
}

/// Most owners one blob may have. An identity's devices need one each;
/// the cap keeps keys, which are free, from piling rows onto one blob that
/// every delete and expiry would then have to walk.
pub(crate) const MAX_OWNERS: u64 = 64;

/// The token a delete request carried. It is recorded in the same
/// transaction as the deletion, so that neither a restart nor another
/// process sharing the index accepts it again while it is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpentToken {
    pub(crate) nonce: [u8; 16],
    pub(crate) expires_at: u64,
}

/// Live totals, updated after each commit.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    pub(crate) bytes: AtomicU64,
    pub(crate) blobs: AtomicU64,
    pub(crate) heads: AtomicU64,
    /// Bytes of uploads in progress, held against capacity.
    pub(crate) reserved: AtomicU64,
}

/// The blob store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Store {
    backend: Backend,
    stats: Arc<StoreStats>,
    capacity: u64,
    /// Uploads in progress are staged here.
    files: BlobFiles,
    /// Access times not yet written to the index, coalesced per blob.
    accesses: Mutex<HashMap<BlobId, u64>>,
    /// The same for heads.
    head_accesses: Mutex<HashMap<HeadKey, u64>>,
    /// Small blob bodies kept in memory (embedded backend only: with
    /// several processes, another one may delete a cached blob).
    pub(crate) cache: Arc<cache::BlobCache>,
    /// The data directory and the free space to leave on its filesystem.
    disk: DiskGuard,
}

/// Refuses reservations that would leave the data directory's filesystem
/// with less than `reserve` bytes free. The room left keeps the index able
/// to commit (a failed commit stops the embedded writer until a restart),
/// and deletions, which free space, possible, whatever else fills the disk.
#[derive(Debug)]
struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
}

impl DiskGuard {
    /// True if `n` more bytes, on top of `held` reserved by uploads in
    /// progress (some of it perhaps already written), leave the reserve.
    fn has_room(&self, n: u64, held: u64) -> bool {
        if self.reserve == 0 {
            return true;
        }
        match rustix::fs::statvfs(&self.dir) {
            Ok(fs) => {
                let free = fs.f_bavail.saturating_mul(fs.f_frsize);
                free >= self.reserve.saturating_add(held).saturating_add(n)
            }
            // Cannot tell: the write itself will report a full disk.
            Err(_) => true,
        }
    }
}

#[derive(Debug)]
enum Backend {
    Embedded {
        reader: IndexReader,
        tx: mpsc::Sender<WriteOp>,
    },
    ScaleOut(ScaleOut),
}

/// Where the index lives under the data directory.
pub(crate) fn index_path(data_dir: &Path) -> PathBuf {
    data_dir.join("index.redb")
}

/// Opens the index database with a page cache of `cache_bytes`, creating
/// its tables.
pub(crate) fn open_db(data_dir: &Path, cache_bytes: usize) -> Result<redb::Database, StoreError> {
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(index_path(data_dir))
        .map_err(redb::Error::from)?;
    let txn = db.begin_write().map_err(redb::Error::from)?;
    txn.open_table(BLOBS).map_err(redb::Error::from)?;
    txn.open_table(BY_ACCESS).map_err(redb::Error::from)?;
    txn.open_table(OWNERS).map_err(redb::Error::from)?;
    txn.open_table(CO_OWNERS).map_err(redb::Error::from)?;
    txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?;
    txn.open_table(STATS).map_err(redb::Error::from)?;
    txn.open_table(INLINE).map_err(redb::Error::from)?;
    txn.open_table(HEADS).map_err(redb::Error::from)?;
    txn.open_table(HEADS_BY_ACCESS).map_err(redb::Error::from)?;
    txn.open_table(SOURCES).map_err(redb::Error::from)?;
    txn.open_table(BLOB_SOURCES).map_err(redb::Error::from)?;
    txn.open_table(FORWARDS).map_err(redb::Error::from)?;
    txn.open_table(FORWARDS_BY_ACCESS)
        .map_err(redb::Error::from)?;
    txn.open_table(SPENT_TOKENS).map_err(redb::Error::from)?;
    txn.commit().map_err(redb::Error::from)?;
    Ok(db)
}

/// What opening the store found to clean up.
#[derive(Debug, Default)]
pub(crate) struct OpenReport {
    pub(crate) temp_files_removed: usize,
    pub(crate) pending_unlinks_finished: usize,
}

/// The limits a store enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) capacity: u64,
    pub(crate) key_quota: u64,
    pub(crate) max_heads: u64,
    pub(crate) cache_bytes: usize,
    /// Page cache of the embedded index.
    pub(crate) index_cache_bytes: usize,
    /// Free space to leave on the data directory's filesystem.
    pub(crate) disk_reserve: u64,
}

impl Store {
    /// Opens the store `storage` names (under `data_dir` for the embedded
    /// backend; uploads in progress are staged there for both) and, for the
    /// embedded backend, starts its writer thread.
    pub(crate) async fn open(
        data_dir: &Path,
        storage: &StorageConfig,
        limits: Limits,
        http: reqwest::Client,
    ) -> Result<(Self, Option<JoinHandle<()>>, OpenReport), StoreError> {
        match storage {
            StorageConfig::Embedded => {
                let (store, writer, report) = Self::open_embedded(data_dir, limits)?;
                Ok((store, Some(writer), report))
            }
            StorageConfig::ScaleOut(config) => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| StoreError::io("create data directory", e))?;
                let (files, temp_files_removed) = BlobFiles::open_staging(data_dir)
                    .map_err(|e| StoreError::io("open upload directory", e))?;
                let stats = Arc::new(StoreStats::default());
                let (backend, mut report) = ScaleOut::open(
                    config,
                    http,
                    Arc::clone(&stats),
                    limits.capacity,
                    limits.key_quota,
                    limits.max_heads,
                )
                .await?;
                report.temp_files_removed = temp_files_removed;
                let store = Self {
                    backend: Backend::ScaleOut(backend),
                    stats,
                    capacity: limits.capacity,
                    files,
                    accesses: Mutex::new(HashMap::new()),
                    head_accesses: Mutex::new(HashMap::new()),
                    cache: Arc::new(cache::BlobCache::new(0)),
                    disk: DiskGuard {
                        dir: data_dir.to_path_buf(),
                        reserve: limits.disk_reserve,
                    },
                };
                Ok((store, None, report))
            }
        }
    }

    /// Opens the embedded store under `data_dir` and starts its writer
    /// thread.
    pub(crate) fn open_embedded(
        data_dir: &Path,
        limits: Limits,
    ) -> Result<(Self, JoinHandle<()>, OpenReport), StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io("create data directory", e))?;
        let (files, temp_files_removed) =
            BlobFiles::open(data_dir).map_err(|e| StoreError::io("open blob directories", e))?;
        let db = Arc::new(open_db(data_dir, limits.index_cache_bytes)?);
        let pending_unlinks_finished = finish_pending_unlinks(&db, &files)?;
        let reader = IndexReader::new(Arc::clone(&db));
        let (bytes, blobs, heads) = reader.stats()?;
        let stats = Arc::new(StoreStats {
            bytes: AtomicU64::new(bytes),
            blobs: AtomicU64::new(blobs),
            heads: AtomicU64::new(heads),
            reserved: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let cache = Arc::new(cache::BlobCache::new(limits.cache_bytes));
        let writer = Writer {
            db,
            files: files.clone(),
            stats: Arc::clone(&stats),
            capacity: limits.capacity,
            key_quota: limits.key_quota,
            max_heads: limits.max_heads,
            unlinked: Vec::new(),
            cache: Arc::clone(&cache),
        };
        let thread = std::thread::Builder::new()
            .name("cairn-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io("spawn store writer", e))?;
        let store = Self {
            backend: Backend::Embedded { reader, tx },
            stats,
            capacity: limits.capacity,
            files,
            accesses: Mutex::new(HashMap::new()),
            head_accesses: Mutex::new(HashMap::new()),
            cache,
            disk: DiskGuard {
                dir: data_dir.to_path_buf(),
                reserve: limits.disk_reserve,
            },
        };
        let report = OpenReport {
            temp_files_removed,
            pending_unlinks_finished,
        };
        Ok((store, thread, report))
    }

    /// True when uploads must be flushed to local disk before they are
    /// handed to the store (the embedded backend keeps the staged file
    /// itself; the scale-out backend copies it to the object store).
    pub(crate) fn keeps_staged_files(&self) -> bool {
        matches!(self.backend, Backend::Embedded { .. })
    }

    /// The scale-out backend, if this is one.
    pub(crate) fn scale_out(&self) -> Option<&ScaleOut> {
        match &self.backend {
            Backend::ScaleOut(backend) => Some(backend),
            Backend::Embedded { .. } => None,
        }
    }

    /// A fresh temp path for an upload.
    pub(crate) fn temp_path(&self) -> Result<PathBuf, StoreError> {
        self.files
            .temp_path()
            .map_err(|e| StoreError::io("choose temp file name", e))
    }

    /// Bytes stored and blobs stored.
    pub(crate) fn usage(&self) -> (u64, u64) {
        (
            self.stats.bytes.load(Ordering::SeqCst),
            self.stats.blobs.load(Ordering::SeqCst),
        )
    }

    /// Heads stored (they do not count against capacity).
    pub(crate) fn heads_stored(&self) -> u64 {
        self.stats.heads.load(Ordering::SeqCst)
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes neither stored nor reserved by uploads in progress.
    pub(crate) fn free(&self) -> u64 {
        let used = self.stats.bytes.load(Ordering::SeqCst);
        let reserved = self.stats.reserved.load(Ordering::SeqCst);
        self.capacity.saturating_sub(used.saturating_add(reserved))
    }

    /// Holds `n` bytes of capacity for an upload in progress; false if the
    /// relay does not have them.
    pub(crate) fn try_reserve(&self, n: u64) -> bool {
        let reserved = &self.stats.reserved;
        let mut current = reserved.load(Ordering::SeqCst);
        if !self.disk.has_room(n, current) {
            return false;
        }
        loop {
            let used = self.stats.bytes.load(Ordering::SeqCst);
            if used.saturating_add(current).saturating_add(n) > self.capacity {
                return false;
            }
            match reserved.compare_exchange(
                current,
                current + n,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Returns capacity held by [`Store::try_reserve`].
    pub(crate) fn release(&self, n: u64) {
        let _ = self
            .stats
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                Some(r.saturating_sub(n))
            });
    }

    /// Sends an operation to the embedded writer.
    async fn send<T>(
        tx: &mpsc::Sender<WriteOp>,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        tx.send(op(reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read of the embedded index on the blocking pool.
    async fn read_embedded<T: Send + 'static>(
        reader: &IndexReader,
        read: impl FnOnce(&IndexReader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = reader.clone();
        tokio::task::spawn_blocking(move || read(&reader))
            .await
            .map_err(|e| StoreError::Failed(format!("index read task: {e}")))?
    }

    /// Commits verified bytes (a temp file, or in memory) as blob `id`.
    ///
    /// Cancel safety: once called, the commit happens (or fails) whether or
    /// not the future is polled to completion.
    pub(crate) async fn insert(
        &self,
        staged: Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
    ) -> Result<InsertOutcome, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::Insert {
                    staged,
                    id,
                    size,
                    source,
                    now,
                    reply,
                })
                .await
            }
            Backend::ScaleOut(backend) => backend.insert(staged, id, size, source, now).await,
        }
    }

    /// Drops the body of `id` (if it still has `size` bytes) and records
    /// that `peer` at `url` answers for it now; false if the blob is gone or
    /// changed meanwhile. Called only with a verified transfer receipt.
    pub(crate) async fn forward(
        &self,
        id: BlobId,
        size: u64,
        forward: Forward,
        now: u64,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::Forward {
                    id,
                    size,
                    forward,
                    now,
                    reply,
                })
                .await
            }
            Backend::ScaleOut(backend) => backend.forward(id, size, forward, now).await,
        }
    }

    /// Deletes up to `max` forwarding records last used before `cutoff`,
    /// returning how many.
    pub(crate) async fn collect_forwards(
        &self,
        cutoff: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::CollectForwards { cutoff, max, reply }).await
            }
            Backend::ScaleOut(backend) => backend.index.collect_forwards(cutoff, max).await,
        }
    }

    /// Makes `owner` one of blob `id`'s owners, charging its quota, and
    /// records an access.
    pub(crate) async fn add_owner(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        now: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::AddOwner {
                    id,
                    owner,
                    now,
                    reply,
                })
                .await
            }
            Backend::ScaleOut(backend) => backend.add_owner(id, owner, now).await,
        }
    }

    /// Drops `owner`'s claim on blob `id`, deleting the blob if no other
    /// owner is left, provided `token` was never used before; records
    /// `token` as used either way. Tokens that expired before
    /// `forget_before` are forgotten.
    pub(crate) async fn delete(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        token: SpentToken,
        forget_before: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::Delete {
                    id,
                    owner,
                    token,
                    forget_before,
                    reply,
                })
                .await
            }
            Backend::ScaleOut(backend) => backend.delete(id, owner, token, forget_before).await,
        }
    }

    /// Notes an access in memory; written to the index by
    /// [`Store::flush_accesses`].
    pub(crate) fn record_access(&self, id: BlobId, now: u64) {
        if let Ok(mut map) = self.accesses.lock() {
            let at = map.entry(id).or_insert(now);
            *at = (*at).max(now);
        }
    }

    /// Notes an access to a head in memory, like [`Store::record_access`].
    pub(crate) fn record_head_access(&self, key: HeadKey, now: u64) {
        if let Ok(mut map) = self.head_accesses.lock() {
            let at = map.entry(key).or_insert(now);
            *at = (*at).max(now);
        }
    }

    /// Stops the embedded writer once it has written what is already
    /// queued; later writes fail with [`StoreError::Closed`]. Shutdown
    /// needs this: requests that outlive its grace period still hold the
    /// store, and would keep the writer (and so the process) alive.
    pub(crate) async fn close(&self) {
        if let Backend::Embedded { tx, .. } = &self.backend {
            // A writer that is gone already has nothing left to stop.
            let _ = tx.send(WriteOp::Stop).await;
        }
    }

    /// Writes coalesced access times (of blobs and of heads) to the index;
    /// for the scale-out backend also reloads the totals, which other
    /// processes change.
    pub(crate) async fn flush_accesses(&self) -> Result<usize, StoreError> {
        let accesses: Vec<(BlobId, u64)> = match self.accesses.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => return Err(StoreError::Failed("access map poisoned".into())),
        };
        let heads: Vec<(HeadKey, u64)> = match self.head_accesses.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => return Err(StoreError::Failed("head access map poisoned".into())),
        };
        let count = accesses.len() + heads.len();
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                if !accesses.is_empty() {
                    Self::send(tx, |reply| WriteOp::Touch { accesses, reply }).await?;
                }
                if !heads.is_empty() {
                    Self::send(tx, |reply| WriteOp::TouchHeads {
                        accesses: heads,
                        reply,
                    })
                    .await?;
                }
            }
            Backend::ScaleOut(backend) => {
                let written = async {
                    if !accesses.is_empty() {
                        backend.index.touch_many(&accesses).await?;
                    }
                    if !heads.is_empty() {
                        backend.index.touch_heads(&heads).await?;
                    }
                    Ok::<_, StoreError>(())
                }
                .await;
                if let Err(e) = written {
                    // Keep them for the next flush rather than lose them
                    // while the database is away.
                    for (id, at) in accesses {
                        self.record_access(id, at);
                    }
                    for (key, at) in heads {
                        self.record_head_access(key, at);
                    }
                    return Err(e);
                }
                backend.refresh_stats().await?;
            }
        }
        Ok(count)
    }

    /// Stores `head` in its slot if its `seq` is above the stored head's;
    /// answers once the outcome is durable.
    ///
    /// Cancel safety: once called, the write happens (or fails) whether or
    /// not the future is polled to completion.
    pub(crate) async fn put_head(
        &self,
        head: NewHead,
        now: u64,
    ) -> Result<HeadOutcome, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::PutHead { head, now, reply }).await
            }
            Backend::ScaleOut(backend) => {
                let outcome = backend
                    .index
                    .put_head(&head, now, backend.max_heads)
                    .await?;
                if outcome == HeadOutcome::Created {
                    self.stats.heads.fetch_add(1, Ordering::SeqCst);
                }
                Ok(outcome)
            }
        }
    }

    /// Deletes up to `max` heads last accessed before `cutoff`, returning
    /// how many. Flushes pending access times first, like
    /// [`Store::collect`].
    pub(crate) async fn collect_heads(&self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        self.flush_accesses().await?;
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::CollectHeads { cutoff, max, reply }).await
            }
            Backend::ScaleOut(backend) => {
                let deleted = backend.index.collect_heads(cutoff, max).await?;
                let _ = self
                    .stats
                    .heads
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                        Some(v.saturating_sub(deleted as u64))
                    });
                Ok(deleted)
            }
        }
    }

    /// Records durably, now, an access to `id`, that `source` handed it
    /// over, and (for a client) that the client owns it; `None` if the
    /// store does not hold it, else its size and what became of the
    /// client's claim (`QuotaExceeded`: refused, nothing recorded). Used
    /// where an uploader is told "already stored": that answer must not be
    /// undone by a GC pass that ran on an older access time.
    pub(crate) async fn acknowledge_held(
        &self,
        id: BlobId,
        source: Source,
        now: u64,
    ) -> Result<Option<(u64, ClaimOutcome)>, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::AcknowledgeHeld {
                    id,
                    source,
                    now,
                    reply,
                })
                .await
            }
            Backend::ScaleOut(backend) => backend.acknowledge_held(id, source, now).await,
        }
    }

    /// Deletes up to `max` blobs last accessed before `cutoff`, returning
    /// their ids and sizes. Flushes pending access times first, so a blob
    /// read a moment ago is never collected on a stale time.
    pub(crate) async fn collect(
        &self,
        cutoff: u64,
        max: usize,
    ) -> Result<Vec<(BlobId, u64)>, StoreError> {
        self.flush_accesses().await?;
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::Collect { cutoff, max, reply }).await
            }
            Backend::ScaleOut(backend) => {
                backend.finish_unlinks().await?;
                backend.collect(cutoff, max).await
            }
        }
    }

    /// Opens blob `id`'s body, or `None` if the index does not name it.
    pub(crate) async fn open_body(&self, id: &BlobId) -> Result<Option<BlobBody>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                let path = self.files.path(id);
                let id = *id;
                Self::read_embedded(reader, move |reader| {
                    // Only indexed blobs are served: a file renamed into
                    // place but not yet committed is not acknowledged.
                    match reader.locate(&id)? {
                        None => Ok(None),
                        Some(Location::Inline(bytes)) => Ok(Some(BlobBody::Inline(bytes.into()))),
                        Some(Location::File) => BlobBody::open_file(&path),
                    }
                })
                .await
            }
            Backend::ScaleOut(backend) => Ok(match backend.index.locate(id).await? {
                None => None,
                Some((_, Some(bytes))) => Some(BlobBody::Inline(bytes.into())),
                Some((size, None)) => Some(BlobBody::Object {
                    objects: backend.objects.clone(),
                    id: *id,
                    size,
                }),
            }),
        }
    }

    /// The embedded index and the path of `id`'s file, for the read path
    /// that opens, sizes and reads a small blob in one blocking call.
    pub(crate) fn embedded_reader(&self, id: &BlobId) -> Option<(IndexReader, PathBuf)> {
        match &self.backend {
            Backend::Embedded { reader, .. } => Some((reader.clone(), self.files.path(id))),
            Backend::ScaleOut(_) => None,
        }
    }

    pub(crate) async fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                let owner = *owner;
                Self::read_embedded(reader, move |r| r.owner_usage(&owner)).await
            }
            Backend::ScaleOut(backend) => backend.index.owner_usage(owner).await,
        }
    }

    /// The ids held from `source`, sorted ([`model::CLIENT_SOURCE`] for the
    /// relay's own).
    pub(crate) async fn ids_from(&self, source: [u8; 32]) -> Result<Vec<BlobId>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                Self::read_embedded(reader, move |r| r.ids_from(source)).await
            }
            Backend::ScaleOut(backend) => backend.index.ids_from(source).await,
        }
    }

    /// The sources of `id`.
    pub(crate) async fn sources_of(&self, id: &BlobId) -> Result<Vec<[u8; 32]>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                let id = *id;
                Self::read_embedded(reader, move |r| r.sources_of(&id)).await
            }
            Backend::ScaleOut(backend) => backend.index.sources_of(id).await,
        }
    }

    /// Up to `max` blobs in order of last access, oldest first, with sizes.
    pub(crate) async fn least_recently_used(
        &self,
        max: usize,
    ) -> Result<Vec<(BlobId, u64)>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                Self::read_embedded(reader, move |r| r.least_recently_used(max)).await
            }
            Backend::ScaleOut(backend) => backend.index.least_recently_used(max).await,
        }
    }

    /// Where `id` was transferred, if it was.
    pub(crate) async fn forward_of(&self, id: &BlobId) -> Result<Option<Forward>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                let id = *id;
                Self::read_embedded(reader, move |r| r.forward(&id)).await
            }
            Backend::ScaleOut(backend) => backend.index.forward(id).await,
        }
    }

    /// Up to `max` forwarding records from `start` on in id order, wrapping
    /// around: a random `start` gives a random sample.
    pub(crate) async fn forwards_from(
        &self,
        start: [u8; 32],
        max: usize,
    ) -> Result<Vec<(BlobId, Forward)>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                Self::read_embedded(reader, move |r| r.forwards_from(start, max)).await
            }
            Backend::ScaleOut(backend) => backend.index.forwards_from(start, max).await,
        }
    }

    /// How many forwarding records the relay keeps.
    pub(crate) async fn forward_count(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                Self::read_embedded(reader, IndexReader::forwards).await
            }
            Backend::ScaleOut(backend) => backend.index.forwards().await,
        }
    }

    /// The stored envelope of the head in `key`'s slot, if any.
    pub(crate) async fn head(&self, key: &HeadKey) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                let key = key.clone();
                Self::read_embedded(reader, move |r| r.head(&key)).await
            }
            Backend::ScaleOut(backend) => backend.index.head(key).await,
        }
    }

    /// Every head of `mailbox`, as (slot, envelope), sorted by slot.
    pub(crate) async fn heads(
        &self,
        mailbox: &VerifyingKey,
    ) -> Result<Vec<(Slot, Vec<u8>)>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                let mailbox = *mailbox;
                Self::read_embedded(reader, move |r| r.heads(&mailbox)).await
            }
            Backend::ScaleOut(backend) => backend.index.heads(mailbox).await,
        }
    }

    /// Takes or renews the lease `name` for `ttl` seconds: periodic work
    /// on shared data runs only in the process that holds it. Always true
    /// for the embedded backend, which has one process.
    pub(crate) async fn try_lease(&self, name: &str, now: u64, ttl: u64) -> bool {
        match &self.backend {
            Backend::Embedded { .. } => true,
            Backend::ScaleOut(backend) => {
                match backend
                    .index
                    .try_lease(name, &backend.holder, now, ttl)
                    .await
                {
                    Ok(taken) => taken,
                    Err(e) => {
                        tracing::warn!(error = %e, lease = name, "cannot take a lease");
                        false
                    }
                }
            }
        }
    }
}

/// Removes files of blobs whose deletion committed before the last stop.
fn finish_pending_unlinks(db: &redb::Database, files: &BlobFiles) -> Result<usize, StoreError> {
    use redb::ReadableTable as _;
    let txn = db.begin_write().map_err(redb::Error::from)?;
    let mut done = 0;
    {
        let mut pending = txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?;
        let blobs = txn.open_table(BLOBS).map_err(redb::Error::from)?;
        let ids: Vec<[u8; 32]> = pending
            .iter()
            .map_err(redb::Error::from)?
            .map(|row| row.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        for raw in ids {
            // Re-uploaded since: the file is the live blob's.
            if blobs.get(raw).map_err(redb::Error::from)?.is_none() {
                let id = BlobId::from_bytes(raw);
                if let Some(dir) = files
                    .remove(&id)
                    .map_err(|e| StoreError::io("remove deleted blob", e))?
                {
                    files::fsync_dir(&dir)
                        .map_err(|e| StoreError::io("fsync blob directory", e))?;
                }
            }
            pending.remove(raw).map_err(redb::Error::from)?;
            done += 1;
        }
    }
    txn.commit().map_err(redb::Error::from)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use cairn_proto::{SignedRecord, SigningKey, Timestamp, head_grant, owned_slot};

    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_seed(&[byte; 32])
    }

    /// A legacy head put under an owned slot's name before relays refused
    /// that (by anyone holding the mailbox key) cannot lock the slot's
    /// writer out, whatever its `seq`; an owned head at a higher `seq` is
    /// a stale write as ever.
    #[test]
    fn an_owned_head_replaces_a_legacy_one_in_its_slot_whatever_the_seq() {
        let (mailbox, writer) = (key(1), key(2));
        let slot = owned_slot(&mailbox.verifying_key(), &writer.verifying_key(), "id").unwrap();
        let owned = OwnedHead {
            mailbox: mailbox.verifying_key(),
            slot: slot.clone(),
            seq: 5,
            target: BlobId::of(b"entry"),
            timestamp: Timestamp(1),
            grant: head_grant(&mailbox, &writer.verifying_key()),
        };
        let new: NewHead = SignedRecord::sign(&owned, &writer)
            .unwrap()
            .verify::<OwnedHead>()
            .unwrap()
            .into();
        let planted = SignedRecord::sign(
            &HeadRecord {
                mailbox: mailbox.verifying_key(),
                slot,
                seq: u64::MAX,
                target: BlobId::of(b"x"),
                timestamp: Timestamp(1),
            },
            &mailbox,
        )
        .unwrap()
        .to_bytes();
        assert!(new.replaces(u64::MAX, &planted));
        let higher = SignedRecord::sign(&OwnedHead { seq: 9, ..owned }, &writer)
            .unwrap()
            .to_bytes();
        assert!(!new.replaces(9, &higher));
        assert!(new.replaces(4, &higher));
    }
}
