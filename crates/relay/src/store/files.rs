//! Blob bodies as files: one file per blob, named by its id, sharded into
//! two levels of directories so no directory grows past a few thousand
//! entries (ext4 slows down sharply on large, churned directories).
//!
//! ```text
//! DATA/blobs/ab/cd/abcd…(64 hex)   committed blob bodies
//! DATA/tmp/<random>.part           uploads in progress
//! ```
//!
//! A file under `blobs/` is always complete and hash-verified: it only gets
//! there by an atomic rename after its bytes were verified and fsynced. That
//! makes the store self-verifying: `fsck` can check any file against its name
//! and rebuild the index from the files alone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cairn_proto::BlobId;

/// The on-disk locations of blob bodies.
#[derive(Clone, Debug)]
pub(crate) struct BlobFiles {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobFiles {
    /// Opens (creating if needed) the blob directories under `data_dir` and
    /// removes temp files left by uploads that were in progress when the
    /// relay last stopped. None of those was acknowledged.
    pub(crate) fn at(blobs: PathBuf, tmp: PathBuf) -> Self {
        Self { blobs, tmp }
    }

    pub(crate) fn open(data_dir: &Path) -> io::Result<(Self, usize)> {
        let files = Self::at(data_dir.join("blobs"), data_dir.join("tmp"));
        fs::create_dir_all(&files.blobs)?;
        fs::create_dir_all(&files.tmp)?;
        let mut cleaned = 0;
        for entry in fs::read_dir(&files.tmp)? {
            fs::remove_file(entry?.path())?;
            cleaned += 1;
        }
        fsync_dir(&files.tmp)?;
        fsync_dir(data_dir)?;
        Ok((files, cleaned))
    }

    /// Where the blob `id` lives once committed.
    pub(crate) fn path(&self, id: &BlobId) -> PathBuf {
        let hex = id.to_string();
        self.blobs.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// A fresh, unique path for an upload in progress.
    pub(crate) fn temp_path(&self) -> io::Result<PathBuf> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let name: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        Ok(self.tmp.join(format!("{name}.part")))
    }

    /// Moves a verified, fsynced temp file into place as blob `id`. Returns
    /// the directory that must be fsynced for the rename to be durable.
    pub(crate) fn install(&self, temp: &Path, id: &BlobId) -> io::Result<PathBuf> {
        let path = self.path(id);
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        if !dir.exists() {
            fs::create_dir_all(&dir)?;
            // New shard directories must themselves survive a crash.
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
                if let Some(grandparent) = parent.parent() {
                    fsync_dir(grandparent)?;
                }
            }
        }
        fs::rename(temp, &path)?;
        Ok(dir)
    }

    /// Removes blob `id`'s file if present. Returns its directory, which must
    /// be fsynced for the removal to be durable.
    pub(crate) fn remove(&self, id: &BlobId) -> io::Result<Option<PathBuf>> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(path.parent().map(Path::to_path_buf)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every file under `blobs/`, with the id its name claims (or `None`
    /// for a file whose name is not a blob id).
    pub(crate) fn walk(&self) -> io::Result<Vec<(PathBuf, Option<BlobId>)>> {
        let mut out = Vec::new();
        for level1 in fs::read_dir(&self.blobs)? {
            let level1 = level1?.path();
            if !level1.is_dir() {
                out.push((level1, None));
                continue;
            }
            for level2 in fs::read_dir(&level1)? {
                let level2 = level2?.path();
                if !level2.is_dir() {
                    out.push((level2, None));
                    continue;
                }
                for file in fs::read_dir(&level2)? {
                    let path = file?.path();
                    let id = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse::<BlobId>().ok())
                        .filter(|id| self.path(id) == path);
                    out.push((path, id));
                }
            }
        }
        Ok(out)
    }
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Hashes a whole file, returning its blob id and size.
pub(crate) fn hash_file(path: &Path) -> io::Result<(BlobId, u64)> {
    let mut hasher = blake3::Hasher::new();
    let file = fs::File::open(path)?;
    let size = io::copy(
        &mut io::BufReader::with_capacity(1 << 20, file),
        &mut hasher,
    )?;
    Ok((BlobId::from(hasher.finalize()), size))
}
