//! One two-way pass over one attached folder: read the disk by metadata,
//! plan against the index and the folder's registers, send, then fetch.
//!
//! Order matters for what a crash leaves: files are uploaded, then listed
//! in operations (nothing listed is half uploaded), then fetched; the
//! index is saved by the caller after the file table. A pass cut short
//! anywhere is finished by the next one: a path whose disk state and
//! register agree is taken as synced (`adopt`), whichever step wrote it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt as _;
use serde::Serialize;

use cairn_proto::MAX_OPERATION_BODY;

use crate::client::Client;
use crate::client::storage::{Candidates, MAX_SEALED_CHUNK, Output};
use crate::client::sync::SyncState;
use crate::crdt::Change;
use crate::crdt::folder::{FileItem, Item, Tree, Write};
use crate::error::{Error, Result};
use crate::files::FileEntry;
use crate::folder::conflict_name;
use crate::folder::disk::{Placed, Root, finish_file, now_nanos};
use crate::folder::index::{FolderIndex, Known};
use crate::folder::plan::{Conflict, Plan, Publish, Synced, plan, to_compare};
use crate::folder::scan::{Ignores, MARKER, Meta, Scan, digest_file, is_racy, scan};
use crate::progress::{Progress, Silent};
use crate::relay::{RelayClient, unix_now};

/// Files read and uploaded at once by a pass.
const UPLOADS_IN_FLIGHT: usize = 4;
/// Room left in an operation's body for what surrounds the writes.
const BODY_SLACK: usize = 1024;

/// What one pass over a folder did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FolderPass {
    /// The folder.
    pub name: String,
    /// Files uploaded.
    pub sent: usize,
    /// Bytes of those files.
    pub sent_bytes: u64,
    /// Files listed under a new name without an upload (renames, and
    /// content written again).
    pub relisted: usize,
    /// Directories, links and deletions made here that were published.
    pub published: usize,
    /// Deletions among those.
    pub deleted_elsewhere: usize,
    /// Files fetched from the relays.
    pub fetched: usize,
    /// Bytes of those files.
    pub fetched_bytes: u64,
    /// Files taken from elsewhere in the folder instead (renames and copies
    /// made on another device).
    pub moved_here: usize,
    /// Paths removed here because another device deleted them.
    pub deleted_here: usize,
    /// Directories and links made here.
    pub made: usize,
    /// Conflict copies made (each a path that now holds the other
    /// device's file, the copy beside it this device's).
    pub conflicts: Vec<String>,
    /// Deletions made here held back as a mass deletion.
    pub held_deletes: usize,
    /// Paths left out (other kinds of files, unreadable directories).
    pub skipped: Vec<String>,
    /// What could not be done; retried by the next pass.
    pub problems: Vec<String>,
    /// Whether the pass left nothing to do.
    pub converged: bool,
}

/// Fails when `index`'s root is not there as attached: a missing
/// directory, or one without its marker (a mount point whose disk is not
/// mounted is an empty directory).
pub(super) fn check_root(index: &FolderIndex) -> Result<()> {
    let paused = |why: String| Error::FolderPaused {
        name: index.name.clone(),
        root: index.root.clone(),
        why,
    };
    match std::fs::symlink_metadata(&index.root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(paused(format!(
                "{} is not a directory",
                index.root.display()
            )));
        }
        Err(err) => return Err(paused(format!("{}: {err}", index.root.display()))),
    }
    if !index.root.join(MARKER).is_file() {
        return Err(paused(format!(
            "{} has no {MARKER} marker (a disk not mounted, or the directory replaced)",
            index.root.display()
        )));
    }
    Ok(())
}

/// Reads the folder and plans a pass, without changing anything.
pub(super) fn look(index: &FolderIndex, tree: Option<&Tree>) -> Result<Plan> {
    check_root(index)?;
    let ignores = Ignores::load(&index.root).map_err(Error::Invalid)?;
    let found = scan(&index.root, &ignores).map_err(crate::error::io_at(&index.root))?;
    Ok(plan(
        tree,
        &index.paths,
        &found.items,
        &|path, dir| ignores.ignored(path, dir),
        // Contents are not compared here: a path whose size agrees with
        // the register's counts as pending until a pass hashes it.
        &|_| false,
        false,
    ))
}

/// A file to upload: its path and what the scan read.
struct Upload {
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

impl Client {
    /// Runs one pass over the folder `index` describes, merging into
    /// `state` (saved by the caller, before the index).
    pub(in crate::client) async fn folder_pass(
        &mut self,
        state: &mut SyncState,
        index: &mut FolderIndex,
        allow_deletes: bool,
        progress: Arc<dyn Progress>,
    ) -> Result<FolderPass> {
        check_root(index)?;
        let root = Root::new(&index.root);
        let racy: Vec<(String, Meta, String)> = index
            .paths
            .iter()
            .filter_map(|(path, known)| {
                Some((path.clone(), known.meta.clone(), known.digest.clone()?))
            })
            .collect();
        let (found, ignores, rewritten) = {
            let at = index.root.clone();
            tokio::task::spawn_blocking(move || -> Result<(Scan, Ignores, Vec<String>)> {
                let ignores = Ignores::load(&at).map_err(Error::Invalid)?;
                let found = scan(&at, &ignores).map_err(crate::error::io_at(&at))?;
                let rewritten = rewritten_in_a_tick(&at, &found, racy);
                Ok((found, ignores, rewritten))
            })
            .await
            .map_err(|err| Error::Invalid(format!("reading the folder stopped: {err}")))??
        };
        for path in rewritten {
            // Written again within the clock tick of the content synced:
            // planned as the change it is.
            if let Some(known) = index.paths.get_mut(&path) {
                known.meta = Meta::File {
                    size: u64::MAX,
                    mtime: i64::MIN,
                    exec: false,
                    ino: 0,
                };
                known.digest = None;
            }
        }
        let name = index.name.clone();
        let mut report = FolderPass {
            name: name.clone(),
            skipped: found.skipped.clone(),
            ..FolderPass::default()
        };
        // Files that may already hold the register's content (a folder
        // attached where a copy of it was, or the same change made on two
        // devices) are compared by hash: metadata can agree by chance.
        let compare: Vec<(String, String)> =
            to_compare(Self::table_of(state).folder(&name), &index.paths, &found.items)
                .map(|(path, hash)| (path.to_owned(), hash.to_owned()))
                .collect();
        let same: BTreeSet<String> = {
            let at = index.root.clone();
            tokio::task::spawn_blocking(move || {
                compare
                    .into_iter()
                    .filter(|(path, hash)| digest_file(&at.join(path)).is_ok_and(|h| h == *hash))
                    .map(|(path, _)| path)
                    .collect()
            })
            .await
            .map_err(|err| Error::Invalid(format!("reading the folder stopped: {err}")))?
        };
        let planned = plan(
            Self::table_of(state).folder(&name),
            &index.paths,
            &found.items,
            &|path, dir| ignores.ignored(path, dir),
            &|path| same.contains(path),
            allow_deletes,
        );
        let disk = &found.items;
        report.held_deletes = planned.held.len();
        let Plan {
            mut publish,
            mut fetch,
            conflicts,
            adopt,
            forget,
            held: _,
        } = planned;

        // Conflicts: this device's file moves aside, to be published
        // there; the path then takes the register's file.
        let mut emptied: BTreeSet<String> = BTreeSet::new();
        for conflict in conflicts {
            let tree = Self::table_of(state).folder(&name);
            match self.set_aside(tree, &root, disk, &publish, &conflict) {
                Ok(Some(aside)) => {
                    report.conflicts.push(aside.path.clone());
                    index.note_conflict(aside.path.clone());
                    index.paths.remove(&conflict.path);
                    emptied.insert(conflict.path.clone());
                    fetch.push(conflict.path);
                    publish.push(aside);
                }
                Ok(None) => report.problems.push(format!(
                    "{}: changed while in conflict; retried by the next pass",
                    conflict.path
                )),
                Err(err) => report
                    .problems
                    .push(format!("{}: cannot set it aside: {err}", conflict.path)),
            }
        }

        // Send: what is listed again, what is uploaded, then every write
        // in as few operations as fit.
        let tree = Self::table_of(state).folder(&name);
        let mut writes: Vec<Write> = Vec::new();
        let mut listed: Vec<(String, Option<Meta>, Option<FileEntry>, Option<String>)> = Vec::new();
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
                    report.relisted += 1;
                    listed.push((
                        p.path.clone(),
                        p.local.clone(),
                        Some(file.entry.clone()),
                        file.hash.clone(),
                    ));
                }
                _ => {
                    report.published += 1;
                    if item.is_none() && p.moved_to.is_none() {
                        report.deleted_elsewhere += 1;
                    }
                    listed.push((p.path.clone(), p.local.clone(), None, None));
                }
            }
            writes.push(Write {
                path: p.path,
                seen,
                item,
            });
        }
        let uploaded = self
            .upload_all(state, &root, uploads, &mut report, &progress)
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
            let changes = folder_changes(&name, writes);
            match self.append_all(state, changes).await {
                Ok(failures) => {
                    report.problems.extend(
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
        let tree = Self::table_of(state).folder(&name);
        let stamp_of = |path: &str| tree.and_then(|t| t.slot(path)).map(|s| s.stamp);
        let read_at = now_nanos();
        let relisted = listed.into_iter().map(|(path, meta, entry, hash)| {
            // The content synced, kept for a file whose time cannot vouch
            // for it later.
            let digest = hash.filter(|_| meta.as_ref().is_some_and(|m| is_racy(m, read_at)));
            (path, meta, entry, digest)
        });
        let sent = uploaded.into_iter().map(|(u, _)| {
            let digest = Some(u.hash).filter(|_| u.racy);
            (u.path, Some(u.meta), Some(u.entry), digest)
        });
        for (path, meta, entry, digest) in relisted.chain(sent) {
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

        // Fetch: what changed elsewhere, parents before children, and
        // removals after, children before parents.
        let tree = Self::table_of(state)
            .folder(&name)
            .cloned()
            .unwrap_or_default();
        fetch.sort();
        fetch.dedup();
        let (removals, writes_here): (Vec<String>, Vec<String>) =
            fetch.into_iter().partition(|path| tree.get(path).is_none());
        let removing: BTreeSet<&str> = removals.iter().map(String::as_str).collect();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        for path in &writes_here {
            let expected = if emptied.contains(path) {
                None
            } else {
                disk.get(path)
            };
            let Some(slot) = tree.slot(path) else {
                continue;
            };
            let mut digest = None;
            let outcome = match &slot.item {
                Some(Item::File(file)) => {
                    self.fetch_file(
                        state,
                        &root,
                        index,
                        disk,
                        &removing,
                        &mut taken,
                        path,
                        file,
                        expected,
                        &mut report,
                    )
                    .await
                    .map(|(placed, hashed)| {
                        digest = hashed;
                        placed
                    })
                }
                Some(Item::Dir) => root.make_dir(path, expected).map_err(|e| e.to_string()),
                Some(Item::Link { target }) => root
                    .make_link(path, target, expected)
                    .map_err(|e| e.to_string()),
                None => continue,
            };
            match outcome {
                Ok(Placed::Done) => {
                    if !matches!(slot.item, Some(Item::File(_))) {
                        report.made += 1;
                    }
                    match Meta::read(&root.join(path)) {
                        Ok(Some(meta)) => {
                            index.paths.insert(
                                path.clone(),
                                Known {
                                    meta,
                                    stamp: slot.stamp,
                                    blob: slot
                                        .item
                                        .as_ref()
                                        .and_then(Item::file)
                                        .map(|f| f.entry.blob),
                                    digest,
                                },
                            );
                        }
                        _ => report
                            .problems
                            .push(format!("{path}: not there after it was written")),
                    }
                }
                // Left for the next pass, which sees a change on both sides.
                Ok(Placed::Changed) => report.problems.push(format!(
                    "{path}: changed here while being fetched; kept, and the next pass \
                     settles it"
                )),
                Err(err) => report.problems.push(format!("{path}: {err}")),
            }
        }
        for path in removals.iter().rev() {
            if taken.contains(path) {
                continue;
            }
            let Some(expected) = disk.get(path).filter(|_| !emptied.contains(path)) else {
                index.paths.remove(path);
                continue;
            };
            match root.remove(path, expected) {
                Ok(Placed::Done) => {
                    report.deleted_here += 1;
                    index.paths.remove(path);
                }
                // Edited here since, or a directory holding something new:
                // kept; the next pass publishes it.
                Ok(Placed::Changed) => {}
                Err(err) => report
                    .problems
                    .push(format!("{path}: cannot remove: {err}")),
            }
        }
        for path in adopt {
            let (Some(meta), Some(slot)) = (disk.get(&path), tree.slot(&path)) else {
                continue;
            };
            index.paths.insert(
                path,
                Known {
                    meta: meta.clone(),
                    stamp: slot.stamp,
                    blob: slot
                        .item
                        .as_ref()
                        .and_then(Item::file)
                        .map(|f| f.entry.blob),
                    digest: None,
                },
            );
        }
        for path in forget {
            index.paths.remove(&path);
        }

        let now = unix_now();
        index.held_deletes = report.held_deletes;
        index.passed_at = Some(now);
        index.problems = report.problems.clone();
        report.converged = report.problems.is_empty() && report.held_deletes == 0;
        if report.converged {
            index.converged_at = Some(now);
        }
        Ok(report)
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
        uploads: Vec<(Upload, crate::crdt::folder::Seen)>,
        report: &mut FolderPass,
        progress: &Arc<dyn Progress>,
    ) -> Vec<(Uploaded, crate::crdt::folder::Seen)> {
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
        let results: Vec<_> = futures_util::stream::iter(uploads)
            .map(|(upload, seen)| async move {
                let result = self.upload_one(state, root, &upload, candidates).await;
                progress.advance(size_of(&upload.meta));
                (upload, seen, result)
            })
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .collect()
            .await;
        progress.end();
        let mut done = Vec::new();
        for (upload, seen, result) in results {
            match result {
                Ok(Some(uploaded)) => {
                    report.sent += 1;
                    report.sent_bytes += size_of(&upload.meta);
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
            holders: content.stored.holders,
            hash,
            racy: is_racy(&upload.meta, read_at),
        }))
    }

    /// Brings `file` to `path`: from a file elsewhere in the folder that
    /// holds the same content when there is one (renamed there, on
    /// another device, or copied), else from the relays.
    #[allow(clippy::too_many_arguments)] // one call site; each piece distinct
    async fn fetch_file(
        &mut self,
        state: &mut SyncState,
        root: &Root,
        index: &mut FolderIndex,
        disk: &BTreeMap<String, Meta>,
        removing: &BTreeSet<&str>,
        taken: &mut BTreeSet<String>,
        path: &str,
        file: &FileItem,
        expected: Option<&Meta>,
        report: &mut FolderPass,
    ) -> Result<(Placed, Option<String>), String> {
        // A synced, unchanged file with this content: one about to be
        // removed is renamed (a move made elsewhere), else copied.
        let local = index
            .paths
            .iter()
            .filter(|(other, known)| {
                other.as_str() != path
                    && known.blob == Some(file.entry.blob)
                    && !taken.contains(other.as_str())
                    && disk
                        .get(other.as_str())
                        .is_some_and(|m| m.same(&known.meta))
            })
            .map(|(other, known)| (other.clone(), known.meta.clone()))
            .max_by_key(|(other, _)| removing.contains(other.as_str()));
        if let Some((source, meta)) = &local
            && removing.contains(source.as_str())
            && expected.is_none()
        {
            match root.rename(source, meta, path) {
                Ok(Placed::Done) => {
                    finish_file(&root.join(path), file.mtime, file.exec)
                        .map_err(|e| e.to_string())?;
                    taken.insert(source.clone());
                    let digest = index.paths.remove(source).and_then(|k| k.digest);
                    report.moved_here += 1;
                    return Ok((Placed::Done, digest));
                }
                Ok(Placed::Changed) => {}
                Err(err) => return Err(err.to_string()),
            }
        }
        let staging = root.staging().map_err(|e| e.to_string())?;
        let staged = tempfile::Builder::new()
            .prefix("fetch-")
            .tempfile_in(&staging)
            .map_err(|e| e.to_string())?
            .into_temp_path();
        let from_disk = match &local {
            Some((source, _)) => std::fs::copy(root.join(source), &staged).is_ok(),
            None => false,
        };
        if from_disk {
            report.moved_here += 1;
        } else {
            self.fetch_resolved(
                state,
                file.entry.blob,
                Some(&file.entry),
                Output::File(staged.to_path_buf()),
                None,
                Arc::new(Silent),
            )
            .await
            .map_err(|e| e.to_string())?;
            report.fetched += 1;
            report.fetched_bytes += file.entry.size;
        }
        finish_file(&staged, file.mtime, file.exec).map_err(|e| e.to_string())?;
        let racy = Meta::read(&staged)
            .ok()
            .flatten()
            .is_some_and(|m| is_racy(&m, now_nanos()));
        let digest = racy
            .then(|| digest_file(&staged))
            .transpose()
            .map_err(|e| e.to_string())?;
        // Placed by a hard link or a rename: the temp path's own removal
        // then finds nothing, or the file it still names.
        let placed = root
            .place(&staged, path, expected)
            .map_err(|e| e.to_string())?;
        Ok((placed, digest))
    }
}

/// The racy files (`scan::is_racy`) among `racy` (path, metadata and hash
/// as synced) whose metadata is unchanged but whose content is not.
fn rewritten_in_a_tick(root: &Path, found: &Scan, racy: Vec<(String, Meta, String)>) -> Vec<String> {
    racy.into_iter()
        .filter(|(path, meta, digest)| {
            found.items.get(path).is_some_and(|now| now.same(meta))
                && digest_file(&root.join(path)).is_ok_and(|now| now != *digest)
        })
        .map(|(path, ..)| path)
        .collect()
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
