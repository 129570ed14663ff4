//! Synced folders over the relays: attaching a directory, passes that
//! make it and the vault's folder the same, status, versions and restore.
//! What is decided is in `crate::folder`; this module does the I/O.
//!
//! - `pass`: one two-way pass over one attached folder;
//! - `versions`: listing and bringing back earlier files.

mod fetch;
mod pass;
mod send;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use pass::FolderPass;
pub use versions::{FolderVersion, Restored as FolderRestored};

use super::Client;
use crate::crdt::folder::{Item, check_folder_name};
use crate::error::{Error, Result, io_at};
use crate::folder::index::FolderIndex;
use crate::folder::scan::MARKER;
use crate::progress::Progress;

/// A folder of the vault, and whether and where it is attached here.
#[derive(Clone, Debug, Serialize)]
pub struct FolderInfo {
    /// Its name.
    pub name: String,
    /// Files it holds now.
    pub files: usize,
    /// Bytes of data those files hold.
    pub bytes: u64,
    /// Where it is attached on this device, if it is.
    pub root: Option<PathBuf>,
}

/// Where one attached folder stands, from this device's index alone.
#[derive(Clone, Debug, Serialize)]
pub struct FolderStatus {
    /// Its name.
    pub name: String,
    /// Where it is attached.
    pub root: PathBuf,
    /// Why it is paused, when it is (its root is not there as attached).
    pub paused: Option<String>,
    /// Paths changed here and not yet sent (found by reading the disk's
    /// metadata now).
    pub pending_here: usize,
    /// Paths changed in the vault and not yet brought here (as of this
    /// device's last sync).
    pub pending_there: usize,
    /// Deletions made here held back as a mass deletion.
    pub held_deletes: usize,
    /// Conflict copies passes here made, newest last.
    pub conflicts: Vec<String>,
    /// When a pass last left nothing to do (Unix seconds).
    pub converged_at: Option<u64>,
    /// When a pass last ran to its end (Unix seconds).
    pub passed_at: Option<u64>,
    /// What the last pass could not do.
    pub problems: Vec<String>,
}

impl Client {
    /// Attaches directory `dir` as folder `name` (the directory's own name
    /// when `None`): a folder of that name in the vault is attached here,
    /// else a new one is made from the directory. Then runs a pass.
    ///
    /// Attaching a directory again (its `.cairn-folder` marker gone, say a
    /// disk replaced) starts its index anew: files that match the vault
    /// by size and modification time are taken as they are, the rest
    /// are sent or fetched, and nothing is deleted anywhere.
    pub async fn folder_add(
        &mut self,
        dir: &Path,
        name: Option<&str>,
        progress: Arc<dyn Progress>,
    ) -> Result<FolderPass> {
        self.require_active()?;
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let root = std::fs::canonicalize(dir).map_err(io_at(dir))?;
        let name = match name {
            Some(name) => name.to_owned(),
            None => root
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{} has no name to give the folder; pass --name NAME",
                        root.display()
                    ))
                })?
                .to_owned(),
        };
        check_folder_name(&name).map_err(Error::Invalid)?;
        for other in FolderIndex::all(&self.home)? {
            let same = other.name == name;
            if same && other.root != root {
                return Err(Error::Invalid(format!(
                    "folder {name:?} is attached here already, at {}; `cairn folder detach \
                     {name:?}` first to move it",
                    other.root.display()
                )));
            }
            if !same && (other.root.starts_with(&root) || root.starts_with(&other.root)) {
                return Err(Error::Invalid(format!(
                    "{} overlaps folder {:?} at {}: folders cannot nest",
                    root.display(),
                    other.name,
                    other.root.display()
                )));
            }
            if same && root.join(MARKER).is_file() {
                return Err(Error::Invalid(format!(
                    "folder {name:?} is attached here already, at {}; `cairn folder sync` syncs it",
                    root.display()
                )));
            }
        }
        let home = self.home.path();
        if root.starts_with(home) || home.starts_with(&root) {
            return Err(Error::Invalid(format!(
                "{} overlaps this device's cairn home {}: a folder cannot hold it",
                root.display(),
                home.display()
            )));
        }
        let marker = root.join(MARKER);
        std::fs::write(
            &marker,
            format!("cairn synced folder {name:?}: do not remove (its absence pauses syncing)\n"),
        )
        .map_err(io_at(&marker))?;
        let mut index = FolderIndex::new(&name, &root);
        index.save(&self.home)?;
        let mut state = self.synced().await?;
        let pass = self
            .folder_pass(&mut state, &mut index, false, progress)
            .await;
        self.finish_change(&mut state).await?;
        let pass = pass?;
        index.save(&self.home)?;
        Ok(pass)
    }

    /// Detaches folder `name` here: its files stay on disk and in the
    /// vault; other devices go on syncing it.
    pub fn folder_detach(&self, name: &str) -> Result<PathBuf> {
        let index =
            FolderIndex::load(&self.home, name)?.ok_or_else(|| Error::NoSuchFolder(name.into()))?;
        FolderIndex::remove(&self.home, name)?;
        let _ = std::fs::remove_file(index.root.join(MARKER));
        Ok(index.root)
    }

    /// Runs one pass over folder `name`, or every attached folder: sends
    /// what changed here, fetches what changed elsewhere. A mass deletion
    /// made here is held back unless `allow_deletes`.
    pub async fn folder_sync(
        &mut self,
        name: Option<&str>,
        allow_deletes: bool,
        progress: Arc<dyn Progress>,
    ) -> Result<Vec<Result<FolderPass>>> {
        self.require_active()?;
        let mut indexes = FolderIndex::all(&self.home)?;
        if let Some(name) = name {
            indexes.retain(|i| i.name == name);
            if indexes.is_empty() {
                return Err(Error::NoSuchFolder(name.into()));
            }
        }
        let mut state = self.synced().await?;
        let mut passes = Vec::with_capacity(indexes.len());
        for index in &mut indexes {
            let pass = self
                .folder_pass(&mut state, index, allow_deletes, progress.clone())
                .await;
            passes.push(pass);
        }
        // The file table first: an index saved ahead of it would name
        // writes this device then forgot.
        self.finish_change(&mut state).await?;
        for index in &indexes {
            index.save(&self.home)?;
        }
        Ok(passes)
    }

    /// The vault's folders, and where each is attached here.
    pub async fn folder_list(&mut self) -> Result<Vec<FolderInfo>> {
        let state = match self.synced().await {
            Ok(state) => state,
            Err(Error::Offline(_)) => self.load_sync()?,
            Err(err) => return Err(err),
        };
        let attached = FolderIndex::all(&self.home)?;
        let mut out: Vec<FolderInfo> = Self::table_of(&state)
            .folders()
            .iter()
            .map(|(name, tree)| {
                let files = tree
                    .slots()
                    .values()
                    .filter_map(|s| s.item.as_ref().and_then(Item::file));
                let (count, bytes) = files.fold((0, 0), |(n, b), f| (n + 1, b + f.entry.size));
                FolderInfo {
                    name: name.clone(),
                    files: count,
                    bytes,
                    root: attached
                        .iter()
                        .find(|i| i.name == *name)
                        .map(|i| i.root.clone()),
                }
            })
            .collect();
        for index in attached {
            if !out.iter().any(|f| f.name == index.name) {
                out.push(FolderInfo {
                    name: index.name,
                    files: 0,
                    bytes: 0,
                    root: Some(index.root),
                });
            }
        }
        Ok(out)
    }

    /// Which attached folder `path` (a path on disk, that may no longer
    /// exist) is in, and its path there.
    pub fn folder_locate(&self, path: &Path) -> Result<(String, String)> {
        let absolute = std::path::absolute(path).map_err(io_at(path))?;
        // The nearest ancestor that exists, resolved; the rest as given (a
        // deleted file's versions are what one asks for).
        let mut existing = absolute.as_path();
        let mut rest = Vec::new();
        let resolved = loop {
            match std::fs::canonicalize(existing) {
                Ok(resolved) => break resolved,
                Err(_) => {
                    let (Some(parent), Some(name)) = (existing.parent(), existing.file_name())
                    else {
                        return Err(Error::Invalid(format!(
                            "{} cannot be resolved",
                            path.display()
                        )));
                    };
                    rest.push(name.to_owned());
                    existing = parent;
                }
            }
        };
        let full = rest.iter().rev().fold(resolved, |at, name| at.join(name));
        for index in FolderIndex::all(&self.home)? {
            if let Ok(inside) = full.strip_prefix(&index.root) {
                let rel = inside
                    .to_str()
                    .ok_or_else(|| Error::Invalid(format!("{} is not UTF-8", full.display())))?;
                return Ok((index.name, rel.to_owned()));
            }
        }
        Err(Error::Invalid(format!(
            "{} is in no folder attached here (`cairn folder ls`); name one with --folder NAME \
             and give the path inside it",
            path.display()
        )))
    }

    /// Where each attached folder stands (or only `name`), without asking
    /// the relays: changes here are found by reading the disk's metadata,
    /// changes elsewhere as of this device's last sync.
    pub fn folder_status(&self, name: Option<&str>) -> Result<Vec<FolderStatus>> {
        let state = self.load_sync()?;
        let mut indexes = FolderIndex::all(&self.home)?;
        if let Some(name) = name {
            indexes.retain(|i| i.name == name);
            if indexes.is_empty() {
                return Err(Error::NoSuchFolder(name.into()));
            }
        }
        indexes
            .into_iter()
            .map(|index| {
                let tree = Self::table_of(&state).folder(&index.name);
                let (paused, pending_here, pending_there) = match pass::look(&index, tree) {
                    Ok(plan) => (
                        None,
                        plan.publish.len() + plan.conflicts.len(),
                        plan.fetch.len() + plan.conflicts.len(),
                    ),
                    Err(Error::FolderPaused { why, .. }) => (Some(why), 0, 0),
                    Err(err) => return Err(err),
                };
                Ok(FolderStatus {
                    name: index.name.clone(),
                    root: index.root.clone(),
                    paused,
                    pending_here,
                    pending_there,
                    held_deletes: index.held_deletes,
                    conflicts: index.conflicts.clone(),
                    converged_at: index.converged_at,
                    passed_at: index.passed_at,
                    problems: index.problems.clone(),
                })
            })
            .collect()
    }
}
