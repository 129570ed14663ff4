//! The sending half of a pass: conflicts set aside, then every change
//! here written to the folder, content uploaded first (a few files at a
//! time) and listed after, in as few operations as fit.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;

use cairn_proto::MAX_OPERATION_BODY;

use super::pass::{FolderPass, Pass};
use crate::client::Client;
use crate::client::storage::{Candidates, MAX_SEALED_CHUNK};
use crate::client::sync::SyncState;
use crate::crdt::Change;
use crate::crdt::folder::{FileItem, Item, Seen, Tree, Write};
use crate::error::{Error, Result};
use crate::files::FileEntry;
use crate::folder::conflict_name;
use crate::folder::disk::{Placed, Root, now_nanos};
use crate::folder::index::{FolderIndex, Known};
use crate::folder::plan::{Conflict, Publish, Synced};
use crate::folder::scan::{Meta, is_racy};
use crate::progress::{Progress, Silent};
use crate::relay::RelayClient;

/// Files read and uploaded at once by a pass.
const UPLOADS_IN_FLIGHT: usize = 8;
/// Files at most this large are read whole and sent in batches
/// (PROTOCOL.md §7.3): below the chunker's smallest chunk, each is one blob.
const BATCHED_FILE: u64 = 256 * 1024;
/// Small files read, sealed and sent together, and the bytes they may add
/// up to: what bounds the memory a pass of many small files holds.
const BATCH_FILES: usize = 1024;
const BATCH_BYTES: u64 = 16 << 20;
/// Room left in an operation's body for what surrounds the writes.
const BODY_SLACK: usize = 1024;

/// A file to upload: its path and what the scan read.
pub(super) struct Upload {
    path: String,
    meta: Meta,
}

/// A file uploaded by this pass, not yet listed.
struct Uploaded {
    path: String,
    meta: Meta,
    entry: FileEntry,
    holders: Vec<RelayClient>,
    /// The hash of the content uploaded.
    hash: String,
    /// Bytes sent to relays.
    uploaded: u64,
    /// Whether the file was modified shortly before it was read
    /// (`scan::is_racy`).
    racy: bool,
}

/// Hashes what passes through it: the hash of exactly the bytes uploaded.
struct Hashing {
    inner: std::fs::File,
    hasher: Arc<std::sync::Mutex<blake3::Hasher>>,
}

impl std::io::Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut hasher) = self.hasher.lock() {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A path this pass wrote to the folder, to record in the index.
struct Recorded {
    path: String,
    /// What is on disk; `None` for a deletion.
    meta: Option<Meta>,
    /// A file's stored content.
    entry: Option<FileEntry>,
    /// The hash of the content synced, kept when the file is racy.
    digest: Option<String>,
}

impl Client {
    /// Moves this device's side of each of `conflicts` to a conflict copy
    /// beside it: the copy is published (added to `publish`) and the path
    /// then takes the register's file (added to `fetch`).
    pub(super) fn set_conflicts_aside(
        &self,
        state: &SyncState,
        index: &mut FolderIndex,
        pass: &mut Pass,
        conflicts: Vec<Conflict>,
        publish: &mut Vec<Publish>,
        fetch: &mut Vec<String>,
    ) {
        for conflict in conflicts {
            let tree = Self::table_of(state).folder(&pass.name);
            match self.set_aside(tree, &pass.root, &pass.disk, publish, &conflict) {
                Ok(Some(aside)) => {
                    pass.report.conflicts.push(aside.path.clone());
                    index.note_conflict(aside.path.clone());
                    index.paths.remove(&conflict.path);
                    pass.emptied.insert(conflict.path.clone());
                    fetch.push(conflict.path);
                    publish.push(aside);
                }
                Ok(None) => pass.report.problems.push(format!(
                    "{}: changed while in conflict; retried by the next pass",
                    conflict.path
                )),
                Err(err) => pass
                    .report
                    .problems
                    .push(format!("{}: cannot set it aside: {err}", conflict.path)),
            }
        }
    }

    /// Writes `publish` to the folder: uploads what must be, lists the
    /// rest as it is, and records every path written in `index`.
    pub(super) async fn send(
        &self,
        state: &mut SyncState,
        index: &mut FolderIndex,
        pass: &mut Pass,
        publish: Vec<Publish>,
        progress: &Arc<dyn Progress>,
    ) -> Result<()> {
        let tree = Self::table_of(state).folder(&pass.name);
        let mut writes: Vec<Write> = Vec::new();
        let mut listed: Vec<Recorded> = Vec::new();
        let mut uploads = Vec::new();
        if tree.is_none() {
            // A new folder: its root, so that it exists even while empty.
            writes.push(Write {
                path: String::new(),
                seen: Default::default(),
                item: Some(Item::Dir),
            });
        }
        for p in publish {
            let seen = tree
                .and_then(|t| t.slot(&p.path))
                .map(|s| s.seen.clone())
                .unwrap_or_default();
            let item = match &p.local {
                None => None,
                Some(Meta::Dir) => Some(Item::Dir),
                Some(Meta::Link { target }) => Some(Item::Link {
                    target: target.clone(),
                }),
                Some(meta @ Meta::File { mtime, exec, .. }) => {
                    let stored = p
                        .reuse
                        .as_ref()
                        .and_then(|Synced { path, stamp }| tree?.slot(path)?.file_by(stamp));
                    match stored {
                        Some(file) => Some(Item::File(FileItem {
                            entry: file.entry.clone(),
                            mtime: *mtime,
                            exec: *exec,
                            hash: file.hash.clone(),
                        })),
                        None => {
                            uploads.push((
                                Upload {
                                    path: p.path.clone(),
                                    meta: meta.clone(),
                                },
                                seen,
                            ));
                            continue;
                        }
                    }
                }
            };
            match &item {
                Some(Item::File(file)) => {
                    pass.report.relisted += 1;
                    listed.push(Recorded {
                        path: p.path.clone(),
                        meta: p.local.clone(),
                        entry: Some(file.entry.clone()),
                        digest: file.hash.clone(),
                    });
                }
                _ => {
                    pass.report.published += 1;
                    if item.is_none() && p.moved_to.is_none() {
                        pass.report.deleted_elsewhere += 1;
                    }
                    listed.push(Recorded {
                        path: p.path.clone(),
                        meta: p.local.clone(),
                        entry: None,
                        digest: None,
                    });
                }
            }
            writes.push(Write {
                path: p.path,
                seen,
                item,
            });
        }
        let uploaded = self
            .upload_all(state, &pass.root, uploads, &mut pass.report, progress)
            .await;
        for (done, seen) in &uploaded {
            let Meta::File { mtime, exec, .. } = done.meta else {
                continue;
            };
            writes.push(Write {
                path: done.path.clone(),
                seen: seen.clone(),
                item: Some(Item::File(FileItem {
                    entry: done.entry.clone(),
                    mtime,
                    exec,
                    hash: Some(done.hash.clone()),
                })),
            });
        }
        if !writes.is_empty() {
            let changes = folder_changes(&pass.name, writes);
            match self.append_all(state, changes).await {
                Ok(failures) => {
                    pass.report.problems.extend(
                        failures
                            .into_iter()
                            .map(|f| format!("folder list not updated on {f}")),
                    );
                    for (done, _) in &uploaded {
                        Self::record_stored(state, &done.entry, &done.holders);
                    }
                }
                Err(err) => {
                    for (done, _) in &uploaded {
                        self.forget_stored(&done.entry, &done.holders).await;
                    }
                    return Err(err);
                }
            }
        }
        let tree = Self::table_of(state).folder(&pass.name);
        let stamp_of = |path: &str| tree.and_then(|t| t.slot(path)).map(|s| s.stamp);
        let read_at = now_nanos();
        let relisted = listed.into_iter().map(|mut r| {
            // The content synced, kept for a file whose time cannot vouch
            // for it later.
            if !r.meta.as_ref().is_some_and(|m| is_racy(m, read_at)) {
                r.digest = None;
            }
            r
        });
        let sent = uploaded.into_iter().map(|(u, _)| Recorded {
            digest: Some(u.hash).filter(|_| u.racy),
            path: u.path,
            meta: Some(u.meta),
            entry: Some(u.entry),
        });
        for Recorded {
            path,
            meta,
            entry,
            digest,
        } in relisted.chain(sent)
        {
            match (meta, stamp_of(&path)) {
                (Some(meta), Some(stamp)) => {
                    index.paths.insert(
                        path,
                        Known {
                            meta,
                            stamp,
                            blob: entry.map(|e| e.blob),
                            digest,
                        },
                    );
                }
                _ => {
                    index.paths.remove(&path);
                }
            }
        }

        Ok(())
    }

    /// Moves this device's side of `conflict` to a conflict copy beside
    /// it, returning what to publish there; `None` when the path changed
    /// again meanwhile.
    fn set_aside(
        &self,
        tree: Option<&Tree>,
        root: &Root,
        disk: &BTreeMap<String, Meta>,
        publish: &[Publish],
        conflict: &Conflict,
    ) -> Result<Option<Publish>> {
        let device = match &conflict.synced {
            Some(synced) => self.device_label(&synced.stamp.device),
            None => self.device_name().to_owned(),
        };
        let mtime = match conflict.local {
            Meta::File { mtime, .. } => mtime,
            Meta::Dir | Meta::Link { .. } => crate::folder::disk::now_nanos(),
        };
        let aside = conflict_name(&conflict.path, &device, mtime, &|candidate| {
            disk.contains_key(candidate)
                || tree.is_some_and(|t| t.slot(candidate).is_some())
                || publish.iter().any(|p| p.path == candidate)
                || root.join(candidate).exists()
        });
        match root.rename(&conflict.path, &conflict.local, &aside) {
            Ok(Placed::Done) => Ok(Some(Publish {
                path: aside,
                local: Some(conflict.local.clone()),
                reuse: conflict.synced.clone(),
                moved_to: None,
            })),
            Ok(Placed::Changed) => Ok(None),
            Err(err) => Err(crate::error::io_at(root.join(&conflict.path))(err)),
        }
    }

    /// The name device `key` has in the identity log (its short key when
    /// it has none any more).
    pub(super) fn device_label(&self, key: &cairn_proto::VerifyingKey) -> String {
        self.log
            .state()
            .devices()
            .get(key)
            .map_or_else(|| key.short(), |d| d.name.as_str().to_owned())
    }

    /// Uploads `uploads` a few at a time, each on the same relays; a file
    /// that cannot be read, or changed while it was, is reported and left
    /// for the next pass.
    async fn upload_all(
        &self,
        state: &SyncState,
        root: &Root,
        uploads: Vec<(Upload, Seen)>,
        report: &mut FolderPass,
        progress: &Arc<dyn Progress>,
    ) -> Vec<(Uploaded, Seen)> {
        if uploads.is_empty() {
            return Vec::new();
        }
        let size_of = |m: &Meta| match m {
            Meta::File { size, .. } => *size,
            _ => 0,
        };
        let total: u64 = uploads.iter().map(|(u, _)| size_of(&u.meta)).sum();
        let largest = uploads
            .iter()
            .map(|(u, _)| size_of(&u.meta))
            .max()
            .unwrap_or(0);
        let (candidates, _) = self
            .candidates(total, largest.min(MAX_SEALED_CHUNK as u64))
            .await;
        let candidates: &Candidates = &candidates;
        progress.begin("sending", total);
        let (small, large): (Vec<_>, Vec<_>) = uploads
            .into_iter()
            .partition(|(u, _)| size_of(&u.meta) <= BATCHED_FILE);
        let mut results = self.upload_small(root, small, candidates, progress).await;
        let large: Vec<_> = futures_util::stream::iter(large)
            .map(|(upload, seen)| async move {
                let result = self.upload_one(state, root, &upload, candidates).await;
                progress.advance(size_of(&upload.meta));
                (upload, seen, result)
            })
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .collect()
            .await;
        results.extend(large);
        progress.end();
        let mut done = Vec::new();
        for (upload, seen, result) in results {
            match result {
                Ok(Some(uploaded)) => {
                    report.sent += 1;
                    report.sent_bytes += size_of(&upload.meta);
                    report.uploaded_bytes += uploaded.uploaded;
                    done.push((uploaded, seen));
                }
                Ok(None) => report.problems.push(format!(
                    "{}: changed while being sent; sent by the next pass",
                    upload.path
                )),
                Err(err) => report
                    .problems
                    .push(format!("{}: not sent: {err}", upload.path)),
            }
        }
        done
    }

    /// Uploads small files in groups, each file read whole and sealed, and
    /// each group sent to every relay in batches. A file that changed since
    /// the scan is not sent (`None`: the next pass sends it).
    async fn upload_small(
        &self,
        root: &Root,
        small: Vec<(Upload, Seen)>,
        candidates: &Candidates,
        progress: &Arc<dyn Progress>,
    ) -> Vec<(Upload, Seen, Result<Option<Uploaded>>)> {
        let size_of = |m: &Meta| match m {
            Meta::File { size, .. } => *size,
            _ => 0,
        };
        let mut out = Vec::with_capacity(small.len());
        let mut rest = small.into_iter().peekable();
        while rest.peek().is_some() {
            let mut group = Vec::new();
            let mut bytes = 0;
            while let Some((upload, _)) = rest.peek() {
                let size = size_of(&upload.meta);
                if !group.is_empty() && (group.len() == BATCH_FILES || bytes + size > BATCH_BYTES) {
                    break;
                }
                bytes += size;
                group.extend(rest.next());
            }
            let mut read = Vec::with_capacity(group.len());
            for (upload, seen) in group {
                let path = root.join(&upload.path);
                let read_at = now_nanos();
                let data = match std::fs::read(&path) {
                    Ok(data) => data,
                    Err(err) => {
                        out.push((upload, seen, Err(crate::error::io_at(&path)(err))));
                        continue;
                    }
                };
                let after = Meta::read(&path).map_err(crate::error::io_at(&path));
                match after {
                    Ok(Some(now))
                        if now.same(&upload.meta) && data.len() as u64 == size_of(&now) =>
                    {
                        read.push((upload, seen, read_at, bytes::Bytes::from(data)));
                    }
                    Ok(_) => {
                        progress.advance(size_of(&upload.meta));
                        out.push((upload, seen, Ok(None)));
                    }
                    Err(err) => out.push((upload, seen, Err(err))),
                }
            }
            let files = read.iter().map(|(.., data)| data.clone()).collect();
            let stored = self.store_small_files(files, candidates).await;
            let stored = match stored {
                Ok(stored) => stored,
                Err(err) => {
                    let why = err.to_string();
                    read.iter()
                        .map(|_| Err(Error::Invalid(why.clone())))
                        .collect()
                }
            };
            for ((upload, seen, read_at, data), result) in read.into_iter().zip(stored) {
                let result = result.map(|content| {
                    Some(Uploaded {
                        path: upload.path.clone(),
                        meta: upload.meta.clone(),
                        hash: blake3::hash(&data).to_hex().to_string(),
                        uploaded: content.stored.sent,
                        holders: content.stored.holders,
                        entry: content.entry,
                        racy: is_racy(&upload.meta, read_at),
                    })
                });
                progress.advance(size_of(&upload.meta));
                out.push((upload, seen, result));
            }
        }
        out
    }

    /// Uploads one file; `None` when it changed while being read (its
    /// upload is undone).
    async fn upload_one(
        &self,
        state: &SyncState,
        root: &Root,
        upload: &Upload,
        candidates: &Candidates,
    ) -> Result<Option<Uploaded>> {
        let path = root.join(&upload.path);
        let read_at = now_nanos();
        let file = std::fs::File::open(&path).map_err(crate::error::io_at(&path))?;
        let hasher = Arc::new(std::sync::Mutex::new(blake3::Hasher::new()));
        let file = Hashing {
            inner: file,
            hasher: hasher.clone(),
        };
        let size = match upload.meta {
            Meta::File { size, .. } => size,
            _ => 0,
        };
        let content = self
            .store_content(
                state,
                Box::new(file),
                size,
                Some(candidates),
                Arc::new(Silent),
            )
            .await?;
        let after = Meta::read(&path).map_err(crate::error::io_at(&path))?;
        if after.as_ref().is_none_or(|now| !now.same(&upload.meta)) || content.entry.size != size {
            self.forget_stored(&content.entry, &content.stored.holders)
                .await;
            return Ok(None);
        }
        let hash = hasher
            .lock()
            .map_err(|_| Error::Invalid("hashing stopped".into()))?
            .finalize()
            .to_hex()
            .to_string();
        Ok(Some(Uploaded {
            path: upload.path.clone(),
            meta: upload.meta.clone(),
            entry: content.entry,
            uploaded: content.stored.sent,
            holders: content.stored.holders,
            hash,
            racy: is_racy(&upload.meta, read_at),
        }))
    }
}

/// `writes` to `folder` as operations, each body within the limit.
fn folder_changes(folder: &str, writes: Vec<Write>) -> Vec<Change> {
    let budget = MAX_OPERATION_BODY - BODY_SLACK - folder.len();
    let mut changes = Vec::new();
    let mut batch = Vec::new();
    let mut used = 0;
    for write in writes {
        let size = serde_json::to_vec(&write).map_or(0, |v| v.len()) + 1;
        if !batch.is_empty() && used + size > budget {
            changes.push(Change::Folder {
                folder: folder.to_owned(),
                writes: std::mem::take(&mut batch),
            });
            used = 0;
        }
        used += size;
        batch.push(write);
    }
    if !batch.is_empty() {
        changes.push(Change::Folder {
            folder: folder.to_owned(),
            writes: batch,
        });
    }
    changes
}
