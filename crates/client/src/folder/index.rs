//! What this device last synced of one attached folder
//! (`HOME/folders/NAME.json`): where the folder is on disk, and for each
//! path what was on disk and which write of the folder's register it
//! matched. A pass compares the disk and the register against it: a path
//! whose metadata differs changed here, a path whose register holds
//! another write changed elsewhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cairn_proto::BlobId;

use super::scan::Meta;
use crate::crdt::folder::Stamp;
use crate::error::{Error, Result};
use crate::home::{Home, write_private};

/// One path as last synced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// What was on disk.
    pub meta: Meta,
    /// The write of the path's register it matched.
    pub stamp: Stamp,
    /// A file's stored content (its blob or manifest): what a download
    /// elsewhere in the folder can take from here instead of the relays.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::text_serde::optional"
    )]
    pub blob: Option<BlobId>,
    /// For a file changed shortly before it was read (`scan::is_racy`):
    /// the hash of the content synced, which the next pass compares,
    /// since a second write in the same clock tick leaves size and
    /// modification time as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// One attached folder, as this device last synced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderIndex {
    /// The folder's name in the vault.
    pub name: String,
    /// Where it is on this device.
    pub root: PathBuf,
    /// Each path as last synced.
    #[serde(default)]
    pub paths: BTreeMap<String, Known>,
    /// When a pass last found nothing left to do (Unix seconds).
    #[serde(default)]
    pub converged_at: Option<u64>,
    /// When a pass last ran to its end (Unix seconds).
    #[serde(default)]
    pub passed_at: Option<u64>,
    /// Deletions made here and held back as a mass deletion, until a pass
    /// allows them.
    #[serde(default)]
    pub held_deletes: usize,
    /// Conflict copies made by passes on this device, newest last.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Why the last pass stopped or what it could not do, if anything.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// Conflict copies remembered for `cairn folder status`.
const MAX_CONFLICTS_KEPT: usize = 100;
/// Problems remembered for `cairn folder status`.
const MAX_PROBLEMS_KEPT: usize = 20;

impl FolderIndex {
    /// A folder attached at `root`, nothing synced yet.
    pub fn new(name: &str, root: &Path) -> Self {
        Self {
            name: name.to_owned(),
            root: root.to_owned(),
            paths: BTreeMap::new(),
            converged_at: None,
            passed_at: None,
            held_deletes: 0,
            conflicts: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Where folder `name`'s index lives in `home`.
    pub fn path(home: &Home, name: &str) -> PathBuf {
        home.folders().join(format!("{name}.json"))
    }

    /// The index of folder `name`, if it is attached here.
    pub fn load(home: &Home, name: &str) -> Result<Option<Self>> {
        let path = Self::path(home, name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| Error::Damaged {
                    path,
                    reason: err.to_string(),
                }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(crate::error::io_at(&path)(err)),
        }
    }

    /// Every folder attached here, by name.
    pub fn all(home: &Home) -> Result<Vec<Self>> {
        let dir = home.folders();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(crate::error::io_at(&dir)(err)),
        };
        let mut all = Vec::new();
        for entry in entries {
            let entry = entry.map_err(crate::error::io_at(&dir))?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if let Some(index) = Self::load(home, name)? {
                all.push(index);
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Writes the index, atomically and durably: a pass that wrote files
    /// and lost its index would take them for local changes.
    pub fn save(&self, home: &Home) -> Result<()> {
        let dir = home.folders();
        std::fs::create_dir_all(&dir).map_err(crate::error::io_at(&dir))?;
        let json = serde_json::to_vec(self).map_err(|err| Error::Invalid(err.to_string()))?;
        write_private(&Self::path(home, &self.name), &json)
    }

    /// Detaches the folder here: its files stay on disk and in the vault.
    pub fn remove(home: &Home, name: &str) -> Result<bool> {
        let path = Self::path(home, name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(crate::error::io_at(&path)(err)),
        }
    }

    /// Remembers a conflict copy made.
    pub fn note_conflict(&mut self, path: String) {
        self.conflicts.push(path);
        let excess = self.conflicts.len().saturating_sub(MAX_CONFLICTS_KEPT);
        self.conflicts.drain(..excess);
    }

    /// Remembers a problem of the last pass.
    pub fn note_problem(&mut self, problem: String) {
        self.problems.push(problem);
        let excess = self.problems.len().saturating_sub(MAX_PROBLEMS_KEPT);
        self.problems.drain(..excess);
    }
}
