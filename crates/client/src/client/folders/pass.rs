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

use serde::Serialize;

use crate::client::Client;
use crate::client::sync::SyncState;
use crate::crdt::folder::{Item, Tree};
use crate::error::{Error, Result};
use crate::folder::disk::Root;
use crate::folder::index::{FolderIndex, Known};
use crate::folder::plan::{Plan, plan, to_compare};
use crate::folder::scan::{Ignores, MARKER, Meta, Scan, digest_file, scan};
use crate::progress::Progress;

/// What one pass over a folder did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FolderPass {
    /// The folder.
    pub name: String,
    /// Files uploaded.
    pub sent: usize,
    /// Bytes of those files.
    pub sent_bytes: u64,
    /// Bytes those uploads sent to relays, every copy counted: chunks
    /// already stored are claimed, not sent, so an edit to a large file
    /// sends little.
    pub uploaded_bytes: u64,
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

/// One pass in progress: what it read and what it did so far.
pub(super) struct Pass {
    /// The folder.
    pub name: String,
    /// Its root on disk.
    pub root: Root,
    /// What the scan found.
    pub disk: BTreeMap<String, Meta>,
    /// Paths whose file this pass moved aside (a conflict): empty now,
    /// whatever the scan found there.
    pub emptied: BTreeSet<String>,
    /// What it did so far.
    pub report: FolderPass,
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
        if let Err(err) = root.clear_staging() {
            tracing::warn!(
                "cannot clear {}: {err}",
                index.root.join(".cairn-tmp").display()
            );
        }
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
        let compare: Vec<(String, String)> = to_compare(
            Self::table_of(state).folder(&name),
            &index.paths,
            &found.items,
        )
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
        report.held_deletes = planned.held.len();
        let Plan {
            mut publish,
            mut fetch,
            conflicts,
            adopt,
            forget,
            held: _,
        } = planned;

        let mut pass = Pass {
            name,
            root,
            disk: found.items,
            emptied: BTreeSet::new(),
            report,
        };
        self.set_conflicts_aside(state, index, &mut pass, conflicts, &mut publish, &mut fetch);
        self.send(state, index, &mut pass, publish, &progress)
            .await?;
        self.fetch(state, index, &mut pass, fetch, &progress).await;
        let tree = Self::table_of(state)
            .folder(&pass.name)
            .cloned()
            .unwrap_or_default();
        for path in adopt {
            let (Some(meta), Some(slot)) = (pass.disk.get(&path), tree.slot(&path)) else {
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

        let now = self.now();
        index.held_deletes = pass.report.held_deletes;
        index.passed_at = Some(now);
        index.problems = pass.report.problems.clone();
        pass.report.converged = pass.report.problems.is_empty() && pass.report.held_deletes == 0;
        if pass.report.converged {
            index.converged_at = Some(now);
        }
        Ok(pass.report)
    }
}

/// The racy files (`scan::is_racy`) among `racy` (path, metadata and hash
/// as synced) whose metadata is unchanged but whose content is not.
fn rewritten_in_a_tick(
    root: &Path,
    found: &Scan,
    racy: Vec<(String, Meta, String)>,
) -> Vec<String> {
    racy.into_iter()
        .filter(|(path, meta, digest)| {
            found.items.get(path).is_some_and(|now| now.same(meta))
                && digest_file(&root.join(path)).is_ok_and(|now| now != *digest)
        })
        .map(|(path, ..)| path)
        .collect()
}
