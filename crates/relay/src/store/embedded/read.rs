//! The read path of the embedded store: locate, open, size and (for a
//! short read) read a blob in one blocking call, so a GET of a small blob
//! costs one trip to the blocking pool.

use std::io::{Read as _, Seek as _};
use std::path::Path;

use bytes::Bytes;
use cairn_proto::BlobId;
use futures_util::StreamExt as _;

use super::index::{IndexReader, Location};
use crate::store::body::{BlobRead, ReadBody, SMALL_READ, Want, clamped_slice};
use crate::store::error::StoreError;

/// Pieces a long read streams in.
const STREAM_PIECE: usize = 256 * 1024;

/// Reads what `want` asks of blob `id`, whose file (if it has one) is
/// `path`; `None` if the index does not name it. Runs on the blocking pool.
pub(super) fn read(
    reader: &IndexReader,
    path: &Path,
    id: &BlobId,
    want: impl FnOnce(u64) -> Want,
) -> Result<Option<BlobRead>, StoreError> {
    let io = |e| StoreError::io("read blob", e);
    // Only indexed blobs are served: a file renamed into place but not yet
    // committed (or left so by a crash) is not acknowledged. Small blobs
    // live in the index; everything else in a file.
    let location = match reader.locate(id)? {
        None => return Ok(None),
        Some(location) => location,
    };
    if let Location::Inline(body) = location {
        let body = Bytes::from(body);
        let size = body.len() as u64;
        let body = match want(size) {
            Want::Size => ReadBody::Nothing,
            Want::Bytes { start, len } => ReadBody::Bytes(clamped_slice(&body, start, len)),
        };
        return Ok(Some(BlobRead { size, body }));
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let size = file.metadata().map_err(io)?.len();
    let (start, len) = match want(size) {
        Want::Size => {
            return Ok(Some(BlobRead {
                size,
                body: ReadBody::Nothing,
            }));
        }
        Want::Bytes { start, len } => (start, len),
    };
    file.seek(std::io::SeekFrom::Start(start)).map_err(io)?;
    let body = if len <= SMALL_READ {
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(len).read_to_end(&mut buf).map_err(io)?;
        ReadBody::Bytes(buf.into())
    } else {
        use tokio::io::AsyncReadExt as _;
        let file = tokio::fs::File::from_std(file).take(len);
        ReadBody::Stream(tokio_util::io::ReaderStream::with_capacity(file, STREAM_PIECE).boxed())
    };
    Ok(Some(BlobRead { size, body }))
}
