//! The durable blob store. Two backends implement one list of operations
//! ([`backend::Backend`]):
//!
//! - **Embedded** (the default, one process): bodies as files, metadata in
//!   an embedded database, all writes through one batching writer thread.
//!   Its commit protocol and crash behaviour: [`embedded`].
//! - **Scale-out** (many processes): metadata in PostgreSQL, bodies in an
//!   S3-compatible bucket. Its commit protocol: [`scaleout`].
//!
//! What both keep is described once, in [`model`]; what both allow is
//! decided once, in [`rules`]. [`Store`] holds one backend and adds what
//! does not depend on it: capacity held for uploads in progress, access
//! times coalesced in memory, the small-blob cache, the staging of uploads.

mod backend;
mod body;
pub(crate) mod cache;
mod embedded;
mod error;
pub(crate) mod files;
pub(crate) mod model;
mod rules;
mod scaleout;
mod staging;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use cairn_proto::{BlobId, Slot, VerifyingKey};

use self::backend::Backend;
pub(crate) use self::body::{BlobBody, BlobRead, ReadBody, Want};
use self::embedded::Embedded;
pub use self::embedded::{FsckReport, fsck};
pub use self::error::StoreError;
use self::files::BlobFiles;
pub(crate) use self::model::{
    BatchItem, ClaimOutcome, DeleteOutcome, Forward, HeadKey, HeadOutcome, InsertOutcome, Limits,
    MAX_OWNERS, MAX_SLOTS_PER_MAILBOX, NewHead, OpenReport, Source, SourceKey, SpentToken, Staged,
};
use self::model::{BlobRecord, ForwardRow, HeadRow};
use self::rules::Rules;
use self::scaleout::ScaleOut;
pub(crate) use self::staging::Received;
use crate::config::StorageConfig;

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
    backend: Backends,
    stats: Arc<StoreStats>,
    capacity: u64,
    /// For checks before an upload's bytes travel (the backend applies
    /// the same rules again as it commits).
    rules: Rules,
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

/// The backend a store runs on.
#[derive(Debug)]
enum Backends {
    Embedded(Embedded),
    ScaleOut(ScaleOut),
}

/// Calls one [`Backend`] operation on whichever backend the store has.
macro_rules! on_backend {
    ($store:expr, $b:ident => $call:expr) => {
        match &$store.backend {
            Backends::Embedded($b) => $call,
            Backends::ScaleOut($b) => $call,
        }
    };
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
        let disk = DiskGuard {
            dir: data_dir.to_path_buf(),
            reserve: limits.disk_reserve,
        };
        let (backend, stats, writer, files, cache, report) = match storage {
            StorageConfig::Embedded => {
                let cache = Arc::new(cache::BlobCache::new(limits.cache_bytes));
                let opened = Embedded::open(data_dir, &limits, Arc::clone(&cache))?;
                (
                    Backends::Embedded(opened.backend),
                    opened.stats,
                    Some(opened.writer),
                    opened.files,
                    cache,
                    opened.report,
                )
            }
            StorageConfig::ScaleOut(config) => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| StoreError::io("create data directory", e))?;
                let (files, temp_files_removed) = BlobFiles::open_staging(data_dir)
                    .map_err(|e| StoreError::io("open upload directory", e))?;
                let stats = Arc::new(StoreStats::default());
                let (backend, mut report) =
                    ScaleOut::open(config, http, Arc::clone(&stats), &limits).await?;
                report.temp_files_removed = temp_files_removed;
                // With several processes, another one may delete a cached
                // blob: no cache.
                let cache = Arc::new(cache::BlobCache::new(0));
                (
                    Backends::ScaleOut(backend),
                    stats,
                    None,
                    files,
                    cache,
                    report,
                )
            }
        };
        let store = Self {
            backend,
            stats,
            capacity: limits.capacity,
            rules: Rules::new(&limits),
            files,
            accesses: Mutex::new(HashMap::new()),
            head_accesses: Mutex::new(HashMap::new()),
            cache,
            disk,
        };
        Ok((store, writer, report))
    }

    /// True when uploads must be flushed to local disk before they are
    /// handed to the store (the embedded backend keeps the staged file
    /// itself; the scale-out backend copies it to the object store).
    pub(crate) fn keeps_staged_files(&self) -> bool {
        on_backend!(self, b => b.keeps_staged_files())
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

    /// See [`Backend::insert`].
    pub(crate) async fn insert(
        &self,
        staged: Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<InsertOutcome, StoreError> {
        on_backend!(self, b => b.insert(staged, id, size, source, now, token).await)
    }

    /// See [`Backend::insert_batch`].
    pub(crate) async fn insert_batch(
        &self,
        items: Vec<BatchItem>,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        on_backend!(self, b => b.insert_batch(items, source, now, token).await)
    }

    /// See [`Backend::seed`]; ids are computed here, as an upload verifies
    /// them.
    pub(crate) async fn seed(
        &self,
        blobs: Vec<Vec<u8>>,
        source: Source,
        now: u64,
    ) -> Result<usize, StoreError> {
        let blobs = blobs
            .into_iter()
            .map(|data| (BlobId::of(&data), Bytes::from(data)))
            .collect();
        on_backend!(self, b => b.seed(blobs, source, now).await)
    }

    /// See [`Backend::forward`]. Called only with a verified transfer
    /// receipt.
    pub(crate) async fn forward(
        &self,
        id: BlobId,
        size: u64,
        forward: Forward,
        now: u64,
    ) -> Result<bool, StoreError> {
        on_backend!(self, b => b.forward(id, size, forward, now).await)
    }

    /// See [`Backend::collect_forwards`].
    pub(crate) async fn collect_forwards(
        &self,
        cutoff: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        on_backend!(self, b => b.collect_forwards(cutoff, max).await)
    }

    /// See [`Backend::add_owner`].
    pub(crate) async fn add_owner(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<ClaimOutcome, StoreError> {
        on_backend!(self, b => b.add_owner(id, owner, now, token).await)
    }

    /// See [`Backend::forget_spent_tokens`].
    pub(crate) async fn forget_spent_tokens(&self, before: u64) -> Result<usize, StoreError> {
        on_backend!(self, b => b.forget_spent_tokens(before).await)
    }

    /// See [`Backend::delete`].
    pub(crate) async fn delete(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        token: SpentToken,
        forget_before: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        on_backend!(self, b => b.delete(id, owner, token, forget_before).await)
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
        on_backend!(self, b => b.close().await);
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
        if let Err(e) = on_backend!(self, b => b.write_accesses(&accesses, &heads).await) {
            // Keep them for the next flush rather than lose them while the
            // backend is away.
            for (id, at) in accesses {
                self.record_access(id, at);
            }
            for (key, at) in heads {
                self.record_head_access(key, at);
            }
            return Err(e);
        }
        Ok(count)
    }

    /// See [`Backend::put_head`]: answers once the outcome is durable.
    pub(crate) async fn put_head(
        &self,
        head: NewHead,
        now: u64,
    ) -> Result<HeadOutcome, StoreError> {
        on_backend!(self, b => b.put_head(head, now).await)
    }

    /// See [`Backend::collect_heads`]. Flushes pending access times first,
    /// like [`Store::collect`].
    pub(crate) async fn collect_heads(&self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        self.flush_accesses().await?;
        on_backend!(self, b => b.collect_heads(cutoff, max).await)
    }

    /// See [`Backend::acknowledge_held`]. Used where an uploader is told
    /// "already stored": that answer must not be undone by a GC pass that
    /// ran on an older access time.
    pub(crate) async fn acknowledge_held(
        &self,
        id: BlobId,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Option<(u64, ClaimOutcome)>, StoreError> {
        on_backend!(self, b => b.acknowledge_held(id, source, now, token).await)
    }

    /// See [`Backend::collect`]. Flushes pending access times first, so a
    /// blob read a moment ago is never collected on a stale time.
    pub(crate) async fn collect(
        &self,
        cutoff: u64,
        max: usize,
    ) -> Result<Vec<(BlobId, u64)>, StoreError> {
        self.flush_accesses().await?;
        on_backend!(self, b => b.collect(cutoff, max).await)
    }

    /// See [`Backend::open_body`].
    pub(crate) async fn open_body(&self, id: &BlobId) -> Result<Option<BlobBody>, StoreError> {
        on_backend!(self, b => b.open_body(id).await)
    }

    /// See [`Backend::read`].
    pub(crate) async fn read(
        &self,
        id: BlobId,
        want: impl FnOnce(u64) -> Want + Send + 'static,
    ) -> Result<Option<BlobRead>, StoreError> {
        on_backend!(self, b => b.read(id, want).await)
    }

    /// Whether the quota that pays for what `source` hands over can pay
    /// for `size` more bytes: checked before an upload's bytes travel.
    pub(crate) async fn quota_allows(&self, source: Source, size: u64) -> Result<bool, StoreError> {
        let quota = self.rules.quota_for(source);
        if !quota.is_set() {
            return Ok(true);
        }
        let usage = self.owner_usage(&source.owner()).await?;
        Ok(quota.allows(usage, size))
    }

    /// See [`Backend::owner_usage`].
    pub(crate) async fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError> {
        on_backend!(self, b => b.owner_usage(owner).await)
    }

    /// See [`Backend::ids_from`].
    pub(crate) async fn ids_from(&self, source: SourceKey) -> Result<Vec<BlobId>, StoreError> {
        on_backend!(self, b => b.ids_from(source).await)
    }

    /// See [`Backend::sources_of`].
    pub(crate) async fn sources_of(&self, id: &BlobId) -> Result<Vec<SourceKey>, StoreError> {
        on_backend!(self, b => b.sources_of(id).await)
    }

    /// See [`Backend::least_recently_used`].
    pub(crate) async fn least_recently_used(
        &self,
        max: usize,
    ) -> Result<Vec<(BlobId, u64)>, StoreError> {
        on_backend!(self, b => b.least_recently_used(max).await)
    }

    /// See [`Backend::forward_of`].
    pub(crate) async fn forward_of(&self, id: &BlobId) -> Result<Option<Forward>, StoreError> {
        on_backend!(self, b => b.forward_of(id).await)
    }

    /// See [`Backend::forwards_from`]: a random `start` gives a random
    /// sample.
    pub(crate) async fn forwards_from(
        &self,
        start: [u8; 32],
        max: usize,
    ) -> Result<Vec<(BlobId, Forward)>, StoreError> {
        on_backend!(self, b => b.forwards_from(start, max).await)
    }

    /// See [`Backend::forward_count`].
    pub(crate) async fn forward_count(&self) -> Result<u64, StoreError> {
        on_backend!(self, b => b.forward_count().await)
    }

    /// See [`Backend::head`].
    pub(crate) async fn head(&self, key: &HeadKey) -> Result<Option<Vec<u8>>, StoreError> {
        on_backend!(self, b => b.head(key).await)
    }

    /// See [`Backend::heads`].
    pub(crate) async fn heads(
        &self,
        mailbox: &VerifyingKey,
    ) -> Result<Vec<(Slot, Vec<u8>)>, StoreError> {
        on_backend!(self, b => b.heads(mailbox).await)
    }

    /// See [`Backend::try_lease`]. Always true for the embedded backend,
    /// which has one process.
    pub(crate) async fn try_lease(&self, name: &str, now: u64, ttl: u64) -> bool {
        on_backend!(self, b => b.try_lease(name, now, ttl).await)
    }

    /// See [`Backend::export_blobs`]: a page of `cairn-relay migrate`.
    pub(crate) async fn export_blobs(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<BlobRecord>, StoreError> {
        on_backend!(self, b => b.export_blobs(after, max).await)
    }

    /// See [`Backend::export_heads`].
    pub(crate) async fn export_heads(
        &self,
        after: Option<HeadKey>,
        max: usize,
    ) -> Result<Vec<HeadRow>, StoreError> {
        on_backend!(self, b => b.export_heads(after, max).await)
    }

    /// See [`Backend::export_forwards`].
    pub(crate) async fn export_forwards(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<ForwardRow>, StoreError> {
        on_backend!(self, b => b.export_forwards(after, max).await)
    }

    /// See [`Backend::import_blob`].
    pub(crate) async fn import_blob(
        &self,
        staged: Staged,
        record: BlobRecord,
    ) -> Result<InsertOutcome, StoreError> {
        on_backend!(self, b => b.import_blob(staged, record).await)
    }

    /// See [`Backend::import_head`].
    pub(crate) async fn import_head(&self, row: HeadRow) -> Result<bool, StoreError> {
        on_backend!(self, b => b.import_head(row).await)
    }

    /// See [`Backend::import_forward`].
    pub(crate) async fn import_forward(&self, row: ForwardRow) -> Result<bool, StoreError> {
        on_backend!(self, b => b.import_forward(row).await)
    }
}

#[cfg(test)]
mod tests;
