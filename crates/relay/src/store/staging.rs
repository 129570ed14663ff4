//! An upload on its way into the store: written to a temp file under the
//! data directory as it arrives, hashed on the way, and made as durable as
//! the backend needs before it is handed over. The embedded store keeps
//! the file itself, so a large upload is flushed while it is still
//! arriving and once more at its end; the scale-out store copies the file
//! to the object store, which makes it durable, so nothing is flushed.

use std::path::PathBuf;

use cairn_proto::BlobId;
use tokio::io::AsyncWriteExt as _;

use super::Store;
use super::error::StoreError;
use super::model::Staged;

/// Uploads larger than this flush their own data before the batch commit;
/// smaller ones ride the writer's one filesystem sync per batch.
const SYNC_IN_UPLOAD: u64 = 1 << 20;
/// Uploads reach their temp file in writes of this size. tokio's `File`
/// copies each write into a buffer of its own, so an upload in flight
/// holds about twice this: small enough that many uploads at once stay
/// within the relay's memory budget, large enough that each write is one
/// efficient syscall.
const WRITE_BUFFER: usize = 256 * 1024;

/// What an upload turned out to be once all of it arrived.
#[derive(Debug)]
pub(crate) enum Received {
    /// It hashes to the id it was sent as: ready for [`Store::insert`].
    Verified { staged: Staged, size: u64 },
    /// It hashes to `actual`; its file is gone.
    Mismatch { actual: BlobId, size: u64 },
}

/// An upload being written. Its temp file is removed unless the upload
/// reaches the store.
pub(crate) struct StagedUpload {
    temp: TempFile,
    writer: tokio::io::BufWriter<tokio::fs::File>,
    early: Option<EarlySync>,
    hasher: blake3::Hasher,
    size: u64,
}

impl Store {
    /// Starts staging an upload.
    pub(crate) async fn stage_upload(&self) -> Result<StagedUpload, StoreError> {
        let io = |e| StoreError::io("write upload", e);
        let path = self.temp_path()?;
        let temp = TempFile(Some(path.clone()));
        let file = tokio::fs::File::create(&path).await.map_err(io)?;
        let early = if self.keeps_staged_files() {
            let handle = file.try_clone().await.map_err(io)?.into_std().await;
            Some(EarlySync::new(handle))
        } else {
            None
        };
        Ok(StagedUpload {
            temp,
            writer: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file),
            early,
            hasher: blake3::Hasher::new(),
            size: 0,
        })
    }
}

impl StagedUpload {
    /// Bytes received so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends the next piece.
    pub(crate) async fn write(&mut self, piece: &[u8]) -> Result<(), StoreError> {
        let io = |e| StoreError::io("write upload", e);
        self.size += piece.len() as u64;
        self.hasher.update(piece);
        self.writer.write_all(piece).await.map_err(io)?;
        if let Some(early) = &mut self.early
            && early.due(self.size)
        {
            self.writer.flush().await.map_err(io)?;
            early.start(self.size).await.map_err(io)?;
        }
        Ok(())
    }

    /// Ends the upload: checks that it hashes to `id` and makes it as
    /// durable as the backend needs before [`Store::insert`].
    pub(crate) async fn finish(mut self, id: BlobId) -> Result<Received, StoreError> {
        let io = |e| StoreError::io("write upload", e);
        let actual = BlobId::from(self.hasher.finalize());
        if actual != id {
            return Ok(Received::Mismatch {
                actual,
                size: self.size,
            });
        }
        self.writer.flush().await.map_err(io)?;
        if let Some(mut early) = self.early {
            early.finish().await.map_err(io)?;
            if self.size > SYNC_IN_UPLOAD {
                // Big blobs flush here, in parallel with other uploads.
                self.writer.get_ref().sync_data().await.map_err(io)?;
            }
        }
        Ok(Received::Verified {
            staged: Staged::File(self.temp.keep()),
            size: self.size,
        })
    }
}

/// A temp file, removed on drop unless kept.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Best effort; leftovers are removed at the next start.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Flushes a large upload's temp file to disk while the rest of it is
/// still arriving, so the final sync before the acknowledgement only has
/// the last few megabytes left to write (instead of the whole blob, which
/// would leave the disk idle while receiving and the network idle while
/// syncing). One flush at a time, on a blocking thread.
struct EarlySync {
    file: std::fs::File,
    started_at: u64,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl EarlySync {
    /// Bytes received between the starts of two flushes.
    const EVERY: u64 = 16 << 20;

    /// `file`: a handle of the temp file being written.
    fn new(file: std::fs::File) -> Self {
        Self {
            file,
            started_at: 0,
            running: None,
        }
    }

    /// True when `size` bytes are in and the last flush is done.
    fn due(&self, size: u64) -> bool {
        size - self.started_at >= Self::EVERY
            && self
                .running
                .as_ref()
                .is_none_or(tokio::task::JoinHandle::is_finished)
    }

    /// Collects the last flush's outcome and starts one of everything
    /// written so far.
    async fn start(&mut self, size: u64) -> std::io::Result<()> {
        self.finish().await?;
        let file = self.file.try_clone()?;
        self.running = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        self.started_at = size;
        Ok(())
    }

    /// Waits for the flush in progress, if any.
    async fn finish(&mut self) -> std::io::Result<()> {
        match self.running.take() {
            None => Ok(()),
            Some(flush) => flush.await.map_err(std::io::Error::other)?,
        }
    }
}
