//! The fetching half of a pass: what changed elsewhere brought onto the
//! disk, parents before children, removals after, children first; a file
//! that holds the same content elsewhere in the folder is renamed or
//! copied instead of downloaded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::StreamExt as _;

use super::pass::{FolderPass, Pass};
use crate::client::Client;
use crate::client::storage::Output;
use crate::client::sync::SyncState;
use crate::crdt::folder::{FileItem, Item, Tree};
use crate::files::FileEntry;
use crate::folder::disk::{Placed, Root, finish_file, now_nanos};
use crate::folder::index::{FolderIndex, Known};
use crate::folder::scan::{Meta, digest_file, is_racy};
use crate::progress::{Progress, Silent};

/// Files downloaded at once by a pass (each one request).
const FETCHES_IN_FLIGHT: usize = 16;

impl Client {
    /// Brings the register's state of each of `fetch` onto the disk, and
    /// records it in `index`.
    pub(super) async fn fetch(
        &mut self,
        state: &mut SyncState,
        index: &mut FolderIndex,
        pass: &mut Pass,
        mut fetch: Vec<String>,
        progress: &Arc<dyn Progress>,
    ) {
        let tree = Self::table_of(state)
            .folder(&pass.name)
            .cloned()
            .unwrap_or_default();
        fetch.sort();
        fetch.dedup();
        let (removals, writes_here): (Vec<String>, Vec<String>) =
            fetch.into_iter().partition(|path| tree.get(path).is_none());
        let removing: BTreeSet<&str> = removals.iter().map(String::as_str).collect();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let size_of = |path: &String| {
            tree.get(path)
                .and_then(Item::file)
                .map_or(0, |f| f.entry.size)
        };
        progress.begin("fetching", writes_here.iter().map(size_of).sum());
        let mut prefetched = self
            .prefetch(state, index, pass, &removing, &tree, &writes_here)
            .await;
        for path in &writes_here {
            let expected = if pass.emptied.contains(path) {
                None
            } else {
                pass.disk.get(path)
            };
            let Some(slot) = tree.slot(path) else {
                continue;
            };
            let mut digest = None;
            // The version this device holds, unchanged since it synced it:
            // the chunks an edit elsewhere left as they were come from it.
            let previous = index
                .paths
                .get(path)
                .filter(|known| expected.is_some_and(|now| now.same(&known.meta)))
                .and_then(|known| slot.file_by(&known.stamp))
                .map(|old| old.entry.clone());
            let outcome = match &slot.item {
                Some(Item::File(file)) => self
                    .fetch_file(
                        state,
                        &pass.root,
                        index,
                        &pass.disk,
                        &removing,
                        &mut taken,
                        path,
                        file,
                        expected,
                        prefetched.remove(path),
                        previous.as_ref(),
                        &mut pass.report,
                    )
                    .await
                    .map(|(placed, hashed)| {
                        digest = hashed;
                        placed
                    }),
                Some(Item::Dir) => pass
                    .root
                    .make_dir(path, expected)
                    .map_err(|e| e.to_string()),
                Some(Item::Link { target }) => pass
                    .root
                    .make_link(path, target, expected)
                    .map_err(|e| e.to_string()),
                None => continue,
            };
            progress.advance(size_of(path));
            match outcome {
                Ok(Placed::Done) => {
                    if !matches!(slot.item, Some(Item::File(_))) {
                        pass.report.made += 1;
                    }
                    match Meta::read(&pass.root.join(path)) {
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
                        _ => pass
                            .report
                            .problems
                            .push(format!("{path}: not there after it was written")),
                    }
                }
                // Left for the next pass, which sees a change on both sides.
                Ok(Placed::Changed) => pass.report.problems.push(format!(
                    "{path}: changed here while being fetched; kept, and the next pass \
                     settles it"
                )),
                Err(err) => pass.report.problems.push(format!("{path}: {err}")),
            }
        }
        progress.end();
        for path in removals.iter().rev() {
            if taken.contains(path) {
                continue;
            }
            let Some(expected) = pass.disk.get(path).filter(|_| !pass.emptied.contains(path))
            else {
                index.paths.remove(path);
                continue;
            };
            match pass.root.remove(path, expected) {
                Ok(Placed::Done) => {
                    pass.report.deleted_here += 1;
                    index.paths.remove(path);
                }
                // Edited here since, or a directory holding something new:
                // kept; the next pass publishes it.
                Ok(Placed::Changed) => {}
                Err(err) => pass
                    .report
                    .problems
                    .push(format!("{path}: cannot remove: {err}")),
            }
        }
    }

    /// Downloads, a few at a time, the files of `paths` stored as one blob
    /// that no file here holds already, into the staging directory:
    /// what makes a pass over many small files quick.
    async fn prefetch(
        &self,
        state: &SyncState,
        index: &FolderIndex,
        pass: &Pass,
        removing: &BTreeSet<&str>,
        tree: &Tree,
        paths: &[String],
    ) -> BTreeMap<String, tempfile::TempPath> {
        let table = Self::table_of(state);
        let none = BTreeSet::new();
        let wanted: Vec<(&String, &FileItem)> = paths
            .iter()
            .filter_map(|path| {
                let file = tree.get(path)?.file()?;
                let local = local_source(index, &pass.disk, removing, &none, path, file);
                (!file.entry.is_chunked() && local.is_none()).then_some((path, file))
            })
            .collect();
        futures_util::stream::iter(wanted)
            .map(|(path, file)| async move {
                let data = self.fetch_small(table, &file.entry).await.ok()?;
                let staged = staged_file(&pass.root).ok()?;
                std::fs::write(&staged, data).ok()?;
                Some((path.clone(), staged))
            })
            .buffer_unordered(FETCHES_IN_FLIGHT)
            .filter_map(std::future::ready)
            .collect()
            .await
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
        prefetched: Option<tempfile::TempPath>,
        previous: Option<&FileEntry>,
        report: &mut FolderPass,
    ) -> Result<(Placed, Option<String>), String> {
        let local = local_source(index, disk, removing, taken, path, file);
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
        let (staged, fetched) = match prefetched {
            Some(staged) => (staged, true),
            None => (staged_file(root).map_err(|e| e.to_string())?, false),
        };
        let from_disk = match &local {
            Some((source, _)) if !fetched => std::fs::copy(root.join(source), &staged).is_ok(),
            _ => false,
        };
        if from_disk {
            report.moved_here += 1;
        } else if fetched {
            report.fetched += 1;
            report.fetched_bytes += file.entry.size;
        } else {
            let here = root.join(path);
            let got = self
                .fetch_over(
                    state,
                    file.entry.blob,
                    Some(&file.entry),
                    previous.map(|old| (here.as_path(), old)),
                    Output::File(staged.to_path_buf()),
                    None,
                    Arc::new(Silent),
                )
                .await
                .map_err(|e| e.to_string())?;
            report.fetched += 1;
            report.fetched_bytes += file.entry.size.saturating_sub(got.from_disk);
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

/// A synced file of the folder, unchanged since, that holds `file`'s
/// content (not `path` itself, nor one already taken): one about to be
/// removed first, which can be renamed (a move made on another device).
fn local_source(
    index: &FolderIndex,
    disk: &BTreeMap<String, Meta>,
    removing: &BTreeSet<&str>,
    taken: &BTreeSet<String>,
    path: &str,
    file: &FileItem,
) -> Option<(String, Meta)> {
    index
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
        .max_by_key(|(other, _)| removing.contains(other.as_str()))
}

/// A new file in the folder's staging directory, removed when dropped.
fn staged_file(root: &Root) -> std::io::Result<tempfile::TempPath> {
    Ok(tempfile::Builder::new()
        .prefix("fetch-")
        .tempfile_in(root.staging()?)?
        .into_temp_path())
}
