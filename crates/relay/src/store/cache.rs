//! A bounded in-memory cache of small blob bodies.
//!
//! Blobs are immutable, so a cached body can only ever be *stale* in one way:
//! the blob was deleted. Deletions are rare (GC passes, owner deletes), so
//! each one simply empties the cache and bumps a generation number. A read
//! that started before a deletion carries the old generation and is not
//! cached, so a deleted blob is never served from memory once its deletion
//! has been acknowledged.
//!
//! Hot small blobs (heads' targets, identity logs, manifests) are then served
//! without a trip to the blocking thread pool.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use cairn_proto::BlobId;

/// Blobs larger than this are never cached.
pub(crate) const MAX_CACHED_BLOB: u64 = 64 * 1024;

#[derive(Debug)]
pub(crate) struct BlobCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    bytes: usize,
    map: HashMap<BlobId, Bytes>,
}

impl BlobCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The current generation; pass it to [`BlobCache::insert`] after
    /// reading a blob from disk.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.lock().map_or(u64::MAX, |i| i.generation)
    }

    pub(crate) fn get(&self, id: &BlobId) -> Option<Bytes> {
        self.inner.lock().ok()?.map.get(id).cloned()
    }

    /// Caches `data` read from disk for `id`, unless a deletion happened
    /// since `generation` was taken (the read may be of a deleted blob).
    pub(crate) fn insert(&self, id: BlobId, generation: u64, data: Bytes) {
        if data.len() as u64 > MAX_CACHED_BLOB || data.len() > self.max_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.generation != generation || inner.map.contains_key(&id) {
            return;
        }
        while inner.bytes + data.len() > self.max_bytes {
            // Evict an arbitrary entry: cheap, and good enough for a cache
            // whose job is to keep the very hot few in memory.
            let Some(victim) = inner.map.keys().next().copied() else {
                break;
            };
            if let Some(old) = inner.map.remove(&victim) {
                inner.bytes -= old.len();
            }
        }
        inner.bytes += data.len();
        inner.map.insert(id, data);
    }

    /// Forgets everything; called after every committed deletion.
    pub(crate) fn invalidate(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.generation += 1;
            inner.map.clear();
            inner.bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_deletion_is_not_cached() {
        let cache = BlobCache::new(1 << 20);
        let id = BlobId::of(b"x");
        let before = cache.generation();
        cache.invalidate();
        cache.insert(id, before, Bytes::from_static(b"x"));
        assert!(cache.get(&id).is_none());
        cache.insert(id, cache.generation(), Bytes::from_static(b"x"));
        assert_eq!(cache.get(&id).unwrap(), Bytes::from_static(b"x"));
        cache.invalidate();
        assert!(cache.get(&id).is_none());
    }

    #[test]
    fn stays_within_its_budget() {
        let cache = BlobCache::new(10_000);
        for i in 0..100u32 {
            let data = Bytes::from(vec![0u8; 1000]);
            cache.insert(BlobId::of(&i.to_be_bytes()), cache.generation(), data);
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.bytes <= 10_000);
        assert_eq!(
            inner.bytes,
            inner.map.values().map(Bytes::len).sum::<usize>()
        );
    }
}
