//! A held blob's bytes, wherever the backend keeps them.

use std::io;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use cairn_proto::BlobId;
use futures_util::{Stream, StreamExt as _};

use super::error::StoreError;
use super::scaleout::objects::Objects;

/// Bytes on their way out, piece by piece.
pub(crate) type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Pieces read from a local file at a time.
const FILE_PIECE: usize = 256 * 1024;

/// Reads of at most this many bytes are done in one blocking call and
/// sent from memory; longer ones stream.
pub(crate) const SMALL_READ: u64 = 64 * 1024;

/// What a reader wants of a blob, decided once its size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Only the size (a `HEAD`, or a range the blob cannot satisfy).
    Size,
    /// `len` bytes from `start`, within the blob.
    Bytes { start: u64, len: u64 },
}

/// A blob opened for one read: its size and what was asked of it.
pub(crate) struct BlobRead {
    pub(crate) size: u64,
    pub(crate) body: ReadBody,
}

/// The bytes a [`Want`] asked for.
pub(crate) enum ReadBody {
    /// Nothing was asked ([`Want::Size`]).
    Nothing,
    /// A short read, in memory.
    Bytes(Bytes),
    /// A longer read, streamed.
    Stream(BodyStream),
}

impl BlobRead {
    /// Reads what `want` asks of an opened body (the path of backends that
    /// cannot do better than open, then read).
    pub(crate) async fn from_body(
        body: BlobBody,
        want: impl FnOnce(u64) -> Want,
    ) -> Result<Self, StoreError> {
        let size = body.size();
        let body = match (want(size), body) {
            (Want::Size, _) => ReadBody::Nothing,
            (Want::Bytes { start, len }, BlobBody::Inline(bytes)) => {
                ReadBody::Bytes(clamped_slice(&bytes, start, len))
            }
            (Want::Bytes { start, len }, body) => {
                ReadBody::Stream(body.into_stream(start, len).await?)
            }
        };
        Ok(Self { size, body })
    }
}

/// An open blob body.
#[derive(Debug)]
pub(crate) enum BlobBody {
    /// Small blobs, kept in the index.
    Inline(Bytes),
    /// A file of the embedded store.
    File { file: std::fs::File, size: u64 },
    /// An object in the scale-out store's bucket.
    Object {
        objects: Objects,
        id: BlobId,
        size: u64,
    },
}

impl BlobBody {
    /// Opens a committed file; `None` if it is missing.
    pub(crate) fn open_file(path: &Path) -> Result<Option<Self>, StoreError> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open blob", e)),
        };
        let size = file
            .metadata()
            .map_err(|e| StoreError::io("read blob size", e))?
            .len();
        Ok(Some(Self::File { file, size }))
    }

    pub(crate) fn size(&self) -> u64 {
        match self {
            Self::Inline(bytes) => bytes.len() as u64,
            Self::File { size, .. } | Self::Object { size, .. } => *size,
        }
    }

    /// `len` bytes from `offset`, which must lie within the blob.
    pub(crate) async fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= self.size())
            .ok_or_else(|| StoreError::io("read blob", io::ErrorKind::UnexpectedEof.into()))?;
        match self {
            Self::Inline(bytes) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = usize::try_from(end).unwrap_or(usize::MAX);
                Ok(bytes.slice(start..end))
            }
            Self::File { file, .. } => {
                let file = file
                    .try_clone()
                    .map_err(|e| StoreError::io("open blob", e))?;
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt as _;
                    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
                    file.read_exact_at(&mut buf, offset)
                        .map_err(|e| StoreError::io("read blob", e))?;
                    Ok(Bytes::from(buf))
                })
                .await
                .map_err(|e| StoreError::Failed(format!("read task: {e}")))?
            }
            Self::Object { objects, id, .. } => objects.read(id, offset..end).await,
        }
    }

    /// This body readable at any offset without network round trips: an
    /// object is downloaded to `temp` first (removed once opened; the open
    /// file keeps its bytes until dropped).
    pub(crate) async fn localize(self, temp: std::path::PathBuf) -> Result<Self, StoreError> {
        let Self::Object { objects, id, size } = self else {
            return Ok(self);
        };
        let mut pieces = objects.stream(&id, 0..size).await?;
        let written = async {
            use tokio::io::AsyncWriteExt as _;
            let mut file = tokio::fs::File::create(&temp).await?;
            while let Some(piece) = pieces.next().await {
                file.write_all(&piece?).await?;
            }
            file.flush().await?;
            Ok::<_, io::Error>(())
        }
        .await;
        let opened = written.and_then(|()| std::fs::File::open(&temp));
        let _ = std::fs::remove_file(&temp);
        let file = opened.map_err(|e| StoreError::io("download blob", e))?;
        Ok(Self::File { file, size })
    }

    /// `len` bytes from `start` as a stream.
    pub(crate) async fn into_stream(self, start: u64, len: u64) -> Result<BodyStream, StoreError> {
        match self {
            Self::Inline(bytes) => {
                let piece = clamped_slice(&bytes, start, len);
                Ok(futures_util::stream::once(async move { Ok(piece) }).boxed())
            }
            Self::File { file, .. } => {
                use std::io::Seek as _;
                use tokio::io::AsyncReadExt as _;
                let mut file = file;
                file.seek(io::SeekFrom::Start(start))
                    .map_err(|e| StoreError::io("read blob", e))?;
                let file = tokio::fs::File::from_std(file).take(len);
                Ok(tokio_util::io::ReaderStream::with_capacity(file, FILE_PIECE).boxed())
            }
            Self::Object { objects, id, .. } => {
                let end = start.saturating_add(len);
                let mut pieces = objects.stream(&id, start..end).await?;
                // The first piece is fetched before anything is answered,
                // so that an object store that cannot be reached is a 503,
                // not a 200 with a body cut short.
                let first = match pieces.next().await {
                    None => return Ok(futures_util::stream::empty().boxed()),
                    Some(Ok(piece)) => piece,
                    Some(Err(e)) => {
                        return Err(StoreError::Unavailable {
                            backend: "object store",
                            detail: format!("read object: {e}"),
                        });
                    }
                };
                Ok(futures_util::stream::once(async move { Ok(first) })
                    .chain(pieces)
                    .boxed())
            }
        }
    }
}

/// `len` bytes of `bytes` from `start`, clamped to its end.
pub(crate) fn clamped_slice(bytes: &Bytes, start: u64, len: u64) -> Bytes {
    let size = bytes.len();
    let start = usize::try_from(start).unwrap_or(size).min(size);
    let end = start
        .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
        .min(size);
    bytes.slice(start..end)
}
