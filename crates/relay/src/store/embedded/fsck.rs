//! Offline consistency check: every blob file against its id, the index
//! against the files. Runs while the relay is stopped (the index database
//! is locked by a running relay, and opening it then fails).

use std::path::{Path, PathBuf};

use cairn_proto::BlobId;
use redb::ReadableTable as _;

use super::index::{
    BLOBS, BY_ACCESS, CO_OWNERS, OWNERS, PENDING_UNLINK, SOURCES, STAT_BLOBS, STAT_BYTES, STATS,
};
use super::open_db;
use super::record::{self, BlobRow};
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
        let mut pending = txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?;
        let mut sources = txn.open_table(SOURCES).map_err(redb::Error::from)?;
        let pending_ids: std::collections::HashSet<BlobId> = pending
            .iter()
            .map_err(redb::Error::from)?
            .map(|row| row.map(|(k, _)| BlobId::from_bytes(k.value())))
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        // One pass over the rows; inline bodies are checked like files,
        // their bytes against their id, and not kept.
        let mut indexed: Vec<(BlobId, BlobMeta, Vec<SourceKey>)> = Vec::new();
        for row in blobs.iter().map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            let id = BlobId::from_bytes(k.value());
            let BlobRow {
                meta,
                sources: held_from,
                body,
            } = BlobRow::decode(v.value())?;
            if let Some(body) = body {
                report.files_checked += 1;
                report.bytes_checked += body.len() as u64;
                if BlobId::of(&body) == id {
                    on_disk.push((id, body.len() as u64, PathBuf::new()));
                } else {
                    report.corrupt.push(id.to_string());
                    corrupt.insert(id);
                }
            }
            indexed.push((id, meta, held_from));
        }
        report.indexed = indexed.len() as u64;
        let disk: std::collections::HashMap<BlobId, u64> =
            on_disk.iter().map(|(id, size, _)| (*id, *size)).collect();
        let index: std::collections::HashSet<BlobId> = indexed.iter().map(|(id, ..)| *id).collect();

        for (id, meta, held_from) in &indexed {
            match disk.get(id) {
                None => {
                    // A corrupt body is reported as corrupt, not also
                    // missing; either way its entry goes.
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
                        for source in held_from {
                            sources
                                .remove((source.to_row(), *id.as_bytes()))
                                .map_err(redb::Error::from)?;
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
                        let row = blobs
                            .get(id.as_bytes())
                            .map_err(redb::Error::from)?
                            .map(|row| record::with_meta(row.value(), &fixed))
                            .transpose()?;
                        if let Some(row) = row {
                            blobs
                                .insert(id.as_bytes(), row.as_slice())
                                .map_err(redb::Error::from)?;
                        }
                    }
                }
                Some(_) => {}
            }
        }
        for (id, size, path) in &on_disk {
            if !index.contains(id) && pending_ids.contains(id) {
                // Deleted, not yet unlinked: finish the deletion.
                report.pending_deletions += 1;
                if repair {
                    to_remove.push(path.clone());
                    pending.remove(id.as_bytes()).map_err(redb::Error::from)?;
                }
                continue;
            }
            if !index.contains(id) {
                report.orphans.push(id.to_string());
                if repair {
                    // Who gave it is lost; counted as the relay's own, so
                    // it is replicated like any client upload.
                    let row = BlobRow {
                        meta: BlobMeta {
                            size: *size,
                            created: now,
                            last_access: now,
                            owner: None,
                        },
                        sources: vec![SourceKey::Clients],
                        body: None,
                    };
                    blobs
                        .insert(id.as_bytes(), row.encode()?.as_slice())
                        .map_err(redb::Error::from)?;
                    sources
                        .insert((SourceKey::Clients.to_row(), *id.as_bytes()), ())
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
                let meta = record::meta_of(v.value())?;
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
