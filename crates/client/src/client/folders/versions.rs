//! A folder file's earlier versions: listing them, and bringing one back
//! (into the folder, as a new write every device syncs, or to a file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use cairn_proto::BlobId;

use super::FolderPass;
use crate::client::Client;
use crate::client::storage::Output;
use crate::crdt::Change;
use crate::crdt::clock_millis;
use crate::crdt::folder::{FileItem, Item, Stamp, Write};
use crate::error::{Error, Result};
use crate::folder::index::FolderIndex;
use crate::progress::Progress;

/// One version of a folder's file.
#[derive(Clone, Debug, Serialize)]
pub struct FolderVersion {
    /// When it was written (Unix seconds).
    pub written_at: u64,
    /// Until when it was the file's content (Unix seconds); `None` for the
    /// content the path holds now.
    pub replaced_at: Option<u64>,
    /// The device that wrote it, by name.
    pub device: String,
    /// Bytes of data.
    pub size: u64,
    /// Its modification time (nanoseconds since the epoch).
    pub mtime: i64,
    /// Its stored content.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Whether the path holds it now.
    pub current: bool,
    #[serde(skip)]
    file: FileItem,
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// The path in the folder.
    pub path: String,
    /// The version brought back.
    pub version: FolderVersion,
    /// Where it was written: a file given, or its place in the folder.
    pub to: PathBuf,
    /// The pass that brought it into the folder (a restore in place).
    pub pass: Option<FolderPass>,
}

fn seconds(clock: u64) -> u64 {
    clock_millis(clock) / 1000
}

impl Client {
    /// Every path folder `folder` ever held, deleted ones included (their
    /// versions are kept for the version window).
    pub async fn folder_paths(&mut self, folder: &str) -> Result<Vec<String>> {
        let state = match self.synced().await {
            Ok(state) => state,
            Err(Error::Offline(_)) => self.load_sync()?,
            Err(err) => return Err(err),
        };
        let tree = Self::table_of(&state)
            .folder(folder)
            .ok_or_else(|| Error::NoSuchFolder(folder.into()))?;
        Ok(tree
            .slots()
            .keys()
            .filter(|path| !path.is_empty())
            .cloned()
            .collect())
    }

    /// Every version of `path` in folder `folder` the vault keeps, oldest
    /// first, the current content (when the path holds a file) last.
    pub async fn folder_versions(
        &mut self,
        folder: &str,
        path: &str,
    ) -> Result<Vec<FolderVersion>> {
        let state = match self.synced().await {
            Ok(state) => state,
            Err(Error::Offline(_)) => self.load_sync()?,
            Err(err) => return Err(err),
        };
        let tree = Self::table_of(&state)
            .folder(folder)
            .ok_or_else(|| Error::NoSuchFolder(folder.into()))?;
        let slot = tree.slot(path).ok_or_else(|| {
            Error::Invalid(format!(
                "folder {folder:?} never held {path:?} (paths are relative to the folder's root, \
                 `/`-separated)"
            ))
        })?;
        let version = |stamp: Stamp, file: &FileItem, until: Option<u64>| FolderVersion {
            written_at: seconds(stamp.clock),
            replaced_at: until.map(seconds),
            device: self.device_label(&stamp.device),
            size: file.entry.size,
            mtime: file.mtime,
            blob: file.entry.blob,
            current: until.is_none(),
            file: file.clone(),
        };
        let mut out: Vec<FolderVersion> = slot
            .versions()
            .map(|(v, until)| version(v.stamp, &v.file, Some(until)))
            .collect();
        if let Some(Item::File(file)) = &slot.item {
            out.push(version(slot.stamp, file, None));
        }
        Ok(out)
    }

    /// Brings back a version of `path` in `folder`: the one it held at
    /// `at` (Unix seconds), else the newest that is not its content now
    /// (for a deleted file, its last). Written to `output` when given;
    /// else written in the folder for every device (this one's copy of
    /// the folder gets it by a pass: a local edit not yet synced is kept as
    /// a conflict copy, never overwritten).
    pub async fn folder_restore(
        &mut self,
        folder: &str,
        path: &str,
        at: Option<u64>,
        output: Option<&Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<Restored> {
        self.require_active()?;
        let versions = self.folder_versions(folder, path).await?;
        let chosen = match at {
            Some(at) => versions
                .iter()
                .rev()
                .find(|v| v.written_at <= at)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{path} had no content at that time (its oldest version kept is from \
                         Unix time {})",
                        versions.first().map_or(0, |v| v.written_at)
                    ))
                })?,
            None => versions.iter().rev().find(|v| !v.current).ok_or_else(|| {
                Error::Invalid(format!(
                    "{path} has no earlier version kept (`cairn folder versions` lists them)"
                ))
            })?,
        }
        .clone();
        let mut state = self.synced().await?;
        if let Some(output) = output {
            self.fetch_resolved(
                &mut state,
                chosen.blob,
                Some(&chosen.file.entry),
                Output::File(output.to_owned()),
                None,
                progress,
            )
            .await?;
            self.finish_change(&mut state).await?;
            return Ok(Restored {
                path: path.to_owned(),
                version: chosen,
                to: output.to_owned(),
                pass: None,
            });
        }
        let mut index = FolderIndex::load(&self.home, folder)?.ok_or_else(|| {
            Error::Invalid(format!(
                "folder {folder:?} is not attached on this device: pass -o FILE to write the \
                 version there"
            ))
        })?;
        if chosen.current {
            return Ok(Restored {
                path: path.to_owned(),
                to: index.root.join(path),
                version: chosen,
                pass: None,
            });
        }
        let seen = Self::table_of(&state)
            .folder(folder)
            .and_then(|t| t.slot(path))
            .map(|s| s.seen.clone())
            .unwrap_or_default();
        self.append(
            &mut state,
            Change::Folder {
                folder: folder.to_owned(),
                writes: vec![Write {
                    path: path.to_owned(),
                    seen,
                    item: Some(Item::File(chosen.file.clone())),
                }],
            },
        )
        .await?;
        let pass = self
            .folder_pass(&mut state, &mut index, false, progress)
            .await;
        self.finish_change(&mut state).await?;
        index.save(&self.home)?;
        Ok(Restored {
            path: path.to_owned(),
            to: index.root.join(path),
            version: chosen,
            pass: Some(pass?),
        })
    }
}
