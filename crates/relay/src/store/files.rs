//! Blob bodies as files: one file per blob, named by its id, sharded over
//! 256 directories by the first two hex digits, so a million blobs make
//! about 4,000 entries per directory (ext4 slows down sharply on huge,
//! churned directories).
//!
//! ```text
//! DATA/blobs/ab/abcd…(64 hex)      committed blob bodies
//! DATA/tmp/<random>.part           uploads in progress
//! ```
//!
//! All shard directories are created (and made durable) when the store is
//! first opened. Creating them lazily would add three directory fsyncs to
//! the first upload into each shard, serialized in the writer.
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
        let marker = files.blobs.join(".shards-v1");
        if !marker.exists() {
            for shard in 0..SHARDS {
                fs::create_dir_all(files.blobs.join(format!("{shard:02x}")))?;
            }
            fs::File::create(&marker)?.sync_all()?;
            fsync_dir(&files.blobs)?;
        }
        let mut cleaned = 0;
        for entry in fs::read_dir(&files.tmp)? {
            fs::remove_file(entry?.path())?;
            cleaned += 1;
        }
        fsync_dir(&files.tmp)?;
        fsync_dir(data_dir)?;
        Ok((files, cleaned))
    }

    /// Opens (creating if needed) only the upload staging directory under
    /// `data_dir`, for a store whose bodies live elsewhere, and empties it.
    pub(crate) fn open_staging(data_dir: &Path) -> io::Result<(Self, usize)> {
        let files = Self::at(data_dir.join("blobs"), data_dir.join("tmp"));
        fs::create_dir_all(&files.tmp)?;
        let mut cleaned = 0;
        for entry in fs::read_dir(&files.tmp)? {
            fs::remove_file(entry?.path())?;
            cleaned += 1;
        }
        Ok((files, cleaned))
    }

    /// Where the blob `id` lives once committed.
    pub(crate) fn path(&self, id: &BlobId) -> PathBuf {
        let hex = id.to_string();
        self.blobs.join(&hex[0..2]).join(hex)
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
        fs::rename(temp, &path)?;
        Ok(dir)
    }

    /// Writes `data` to a temp file and moves it into place as blob `id`;
    /// like [`BlobFiles::install`], durable only after the next
    /// [`BlobFiles::sync_filesystem`].
    pub(crate) fn install_bytes(&self, id: &BlobId, data: &[u8]) -> io::Result<PathBuf> {
        let temp = self.temp_path()?;
        if let Err(e) = fs::write(&temp, data) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        self.install(&temp, id)
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
        for shard in fs::read_dir(&self.blobs)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                if shard.file_name().is_some_and(|n| n == ".shards-v1") {
                    continue;
                }
                out.push((shard, None));
                continue;
            }
            for file in fs::read_dir(&shard)? {
                let path = file?.path();
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<BlobId>().ok())
                    .filter(|id| self.path(id) == path);
                out.push((path, id));
            }
        }
        Ok(out)
    }
}

/// Number of shard directories: the first two hex digits of an id.
const SHARDS: u32 = 256;

impl BlobFiles {
    /// Makes every write to the filesystem holding the store durable: file
    /// contents, renames, removals. One call covers a whole batch of
    /// uploads, where per-file and per-directory fsyncs would cost two
    /// device flushes per blob.
    pub(crate) fn sync_filesystem(&self) -> io::Result<()> {
        let dir = fs::File::open(&self.blobs)?;
        rustix::fs::syncfs(&dir).map_err(io::Error::from)
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
