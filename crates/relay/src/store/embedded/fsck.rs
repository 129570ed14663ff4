//! Offline consistency check: every blob file against its id, the index
//! against the files. Runs while the relay is stopped (the index database
//! is locked by a running relay, and opening it then fails).

use std::path::{Path, PathBuf};

use cairn_proto::BlobId;
use redb::ReadableTable as _;

use super::index::{
    BLOB_SOURCES, BLOBS, BY_ACCESS, CO_OWNERS, INLINE, OWNERS, PENDING_UNLINK, SOURCES, STAT_BLOBS,
    STAT_BYTES, STATS,
};
use super::open_db;
use crate::store::error::StoreError;
use crate::store::files::{BlobFiles, fsync_dir, hash_file};
use crate::store::model::{BlobMeta, SourceKey};

/// What fsck found (and, with repair, fixed).
#[derive(Debug, Default, serde::Serialize)]
pub struct FsckReport {
    /// Blob files and inline blobs checked.
    pub files_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Blobs the index lists.
    pub indexed: u64,
    /// Files whose bytes do not hash to their name.
    pub corrupt: Vec<String>,
    /// Files under `blobs/` whose name or place is not a blob id's.
    pub stray: Vec<String>,
    /// Valid blob files the index does not list (uploads that stopped
    /// between rename and commit, or an index that was lost).
    pub orphans: Vec<String>,
    /// Index entries without a file.
    pub missing: Vec<String>,
    /// Index entries whose size differs from the file's.
    pub wrong_size: Vec<String>,
    /// Upload temp files present (removed at the next start anyway).
    pub temp_files: u64,
    /// Files of blobs whose deletion was committed but whose file was not
    /// yet removed when the relay stopped (removed at the next start, or by
    /// `--repair`; never indexed again).
    pub pending_deletions: u64,
    /// Whether problems were repaired.
    pub repaired: bool,
}

impl FsckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.stray.is_empty()
            && self.orphans.is_empty()
            && self.missing.is_empty()
            && self.wrong_size.is_empty()
    }
}

/// Checks the store in `data_dir`; with `repair`, makes the index agree with
/// the verified files: corrupt and stray files are removed, orphans are
/// indexed (without an owner; their last access is now), entries without a
/// file are dropped, and totals are recomputed.
///
/// # Errors
///
/// [`StoreError`] if the store cannot be read, or if the relay is running.
pub fn fsck(data_dir: &Path, repair: bool, now: u64) -> Result<FsckReport, StoreError> {
    let files = BlobFiles::open_readonly(data_dir);
    // One pass over every table: a large page cache would not be reused.
    let db = open_db(data_dir, 16 << 20)?;
    let mut report = FsckReport {
        temp_files: std::fs::read_dir(data_dir.join("tmp"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        ..FsckReport::default()
    };

    let mut on_disk: Vec<(BlobId, u64, PathBuf)> = Vec::new();
    let mut to_remove: Vec<PathBuf> = Vec::new();
    let mut corrupt: std::collections::HashSet<BlobId> = Default::default();
    for (path, claimed) in files
        .walk()
        .map_err(|e| StoreError::io("list blob files", e))?
    {
        report.files_checked += 1;
        let Some(claimed) = claimed else {
            report.stray.push(path.display().to_string());
            to_remove.push(path);
            continue;
        };
        let (actual, size) = hash_file(&path).map_err(|e| StoreError::io("hash blob file", e))?;
        report.bytes_checked += size;
        if actual == claimed {
            on_disk.push((claimed, size, path));
        } else {
            report.corrupt.push(claimed.to_string());
            corrupt.insert(claimed);
            to_remove.push(path);
        }
    }

    let txn = db.begin_write().map_err(redb::Error::from)?;
    {
        let mut blobs = txn.open_table(BLOBS).map_err(redb::Error::from)?;
        let mut by_access = txn.open_table(BY_ACCESS).map_err(redb::Error::from)?;
        let mut owners = txn.open_table(OWNERS).map_err(redb::Error::from)?;
        let mut stats = txn.open_table(STATS).map_err(redb::Error::from)?;
        let mut inline = txn.open_table(INLINE).map_err(redb::Error::from)?;
        let mut pending = txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?;
        let mut sources = txn.open_table(SOURCES).map_err(redb::Error::from)?;
        let mut blob_sources = txn.open_table(BLOB_SOURCES).map_err(redb::Error::from)?;
        let pending_ids: std::collections::HashSet<BlobId> = pending
            .iter()
            .map_err(redb::Error::from)?
            .map(|row| row.map(|(k, _)| BlobId::from_bytes(k.value())))
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        // Inline blobs are checked like files: their bytes against their id.
        let rows: Vec<([u8; 32], Vec<u8>)> = inline
            .iter()
            .map_err(redb::Error::from)?
            .map(|row| row.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        for (raw, body) in rows {
            let claimed = BlobId::from_bytes(raw);
            report.files_checked += 1;
            report.bytes_checked += body.len() as u64;
            if BlobId::of(&body) == claimed {
                on_disk.push((claimed, body.len() as u64, PathBuf::new()));
            } else {
                report.corrupt.push(claimed.to_string());
                corrupt.insert(claimed);
                if repair {
                    inline.remove(raw).map_err(redb::Error::from)?;
                }
            }
        }
        let indexed: Vec<(BlobId, BlobMeta)> = blobs
            .iter()
            .map_err(redb::Error::from)?
            .map(|row| {
                row.map(|(k, v)| (BlobId::from_bytes(k.value()), BlobMeta::decode(&v.value())))
            })
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        report.indexed = indexed.len() as u64;
        let disk: std::collections::HashMap<BlobId, u64> =
            on_disk.iter().map(|(id, size, _)| (*id, *size)).collect();
        let index: std::collections::HashMap<BlobId, BlobMeta> = indexed.iter().copied().collect();

        for (id, meta) in &indexed {
            match disk.get(id) {
                None => {
                    // A corrupt file is reported as corrupt, not also missing;
                    // either way its entry goes.
                    if !corrupt.contains(id) {
                        report.missing.push(id.to_string());
                    }
                    if repair {
                        blobs.remove(id.as_bytes()).map_err(redb::Error::from)?;
                        by_access
                            .remove((meta.last_access, *id.as_bytes()))
                            .map_err(redb::Error::from)?;
                        // Its sources go too: reconciliation must not count
                        // a replica the relay no longer has.
                        let raw = *id.as_bytes();
                        let held_from: Vec<[u8; 32]> = blob_sources
                            .range((raw, [0u8; 32])..=(raw, [0xff; 32]))
                            .map_err(redb::Error::from)?
                            .map(|row| row.map(|(k, _)| k.value().1))
                            .collect::<Result<_, _>>()
                            .map_err(redb::Error::from)?;
                        for source in held_from {
                            blob_sources
                                .remove((raw, source))
                                .map_err(redb::Error::from)?;
                            sources.remove((source, raw)).map_err(redb::Error::from)?;
                        }
                    }
                }
                Some(size) if *size != meta.size => {
                    report.wrong_size.push(id.to_string());
                    if repair {
                        let fixed = BlobMeta {
                            size: *size,
                            ..*meta
                        };
                        blobs
                            .insert(id.as_bytes(), fixed.encode())
                            .map_err(redb::Error::from)?;
                    }
                }
                Some(_) => {}
            }
        }
        for (id, size, path) in &on_disk {
            if !index.contains_key(id) && pending_ids.contains(id) {
                // Deleted, not yet unlinked: finish the deletion.
                report.pending_deletions += 1;
                if repair {
                    to_remove.push(path.clone());
                    pending.remove(id.as_bytes()).map_err(redb::Error::from)?;
                }
                continue;
            }
            if !index.contains_key(id) {
                report.orphans.push(id.to_string());
                if repair {
                    let meta = BlobMeta {
                        size: *size,
                        created: now,
                        last_access: now,
                        owner: None,
                    };
                    blobs
                        .insert(id.as_bytes(), meta.encode())
                        .map_err(redb::Error::from)?;
                    // Who gave it is lost; counted as the relay's own, so
                    // it is replicated like any client upload.
                    sources
                        .insert((SourceKey::Clients.to_row(), *id.as_bytes()), ())
                        .map_err(redb::Error::from)?;
                    blob_sources
                        .insert((*id.as_bytes(), SourceKey::Clients.to_row()), ())
                        .map_err(redb::Error::from)?;
                    by_access
                        .insert((now, *id.as_bytes()), ())
                        .map_err(redb::Error::from)?;
                }
            }
        }
        if repair {
            // Recompute totals and per-owner usage from the repaired index.
            let mut bytes = 0u64;
            let mut count = 0u64;
            let mut per_owner: std::collections::HashMap<[u8; 32], u64> = Default::default();
            let mut sizes: std::collections::HashMap<[u8; 32], u64> = Default::default();
            for row in blobs.iter().map_err(redb::Error::from)? {
                let (k, v) = row.map_err(redb::Error::from)?;
                let meta = BlobMeta::decode(&v.value());
                bytes += meta.size;
                count += 1;
                sizes.insert(k.value(), meta.size);
                if let Some(owner) = meta.owner {
                    *per_owner.entry(owner.to_bytes()).or_default() += meta.size;
                }
            }
            // Co-owners of blobs no longer indexed go; the others count.
            let mut co_owners = txn.open_table(CO_OWNERS).map_err(redb::Error::from)?;
            co_owners
                .retain(|(id, owner), ()| match sizes.get(&id) {
                    Some(size) => {
                        *per_owner.entry(owner).or_default() += size;
                        true
                    }
                    None => false,
                })
                .map_err(redb::Error::from)?;
            owners.retain(|_, _| false).map_err(redb::Error::from)?;
            for (owner, used) in per_owner {
                owners.insert(owner, used).map_err(redb::Error::from)?;
            }
            stats.insert(STAT_BYTES, bytes).map_err(redb::Error::from)?;
            stats.insert(STAT_BLOBS, count).map_err(redb::Error::from)?;
        }
    }
    if repair {
        txn.commit().map_err(redb::Error::from)?;
        for path in &to_remove {
            std::fs::remove_file(path).map_err(|e| StoreError::io("remove bad blob file", e))?;
            if let Some(dir) = path.parent() {
                fsync_dir(dir).map_err(|e| StoreError::io("fsync blob directory", e))?;
            }
        }
        report.repaired = true;
    } else {
        txn.abort().map_err(redb::Error::from)?;
    }
    Ok(report)
}

impl BlobFiles {
    /// The blob directories under `data_dir`, without creating or cleaning
    /// anything.
    pub(crate) fn open_readonly(data_dir: &Path) -> Self {
        Self::at(data_dir.join("blobs"), data_dir.join("tmp"))
    }
}
