//! Blob bodies in an S3-compatible bucket, for scale-out relays.
//!
//! One object per blob, at `blobs/<id in hex>` under the configured prefix.
//! An object only ever holds bytes that were hash-verified before it was
//! written, and the index names a blob only after its object's PUT (or
//! multipart upload) completed: an object without an index row is at worst
//! an orphan, never served. Bodies of at most [`super::INLINE_MAX`] bytes
//! stay in the index instead.

use std::io;
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use cairn_proto::BlobId;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use tokio::io::AsyncReadExt as _;

use super::StoreError;
use crate::config::S3Config;

/// Parts of a multipart upload: large enough for S3's 10,000-part limit
/// at the 4 GiB largest blob, small enough to keep memory per upload low.
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once per upload.
const PARTS_IN_FLIGHT: usize = 4;

/// The bucket holding blob bodies.
#[derive(Clone, Debug)]
pub(crate) struct Objects {
    ops: std::sync::Arc<Operators>,
}

#[derive(Debug)]
struct Operators {
    /// With retries of transient failures.
    retrying: opendal::Operator,
    /// The same bucket without retries, for deletions: a deletion runs
    /// under a database lock that ends with its session, and a retried
    /// request still on its way after that could remove an object stored
    /// again meanwhile. One attempt keeps that window to one request.
    once: opendal::Operator,
}

fn object_err(context: &'static str) -> impl Fn(opendal::Error) -> StoreError {
    move |e| match e.kind() {
        opendal::ErrorKind::PermissionDenied
        | opendal::ErrorKind::ConfigInvalid
        | opendal::ErrorKind::Unsupported => StoreError::Backend {
            backend: "object store",
            detail: format!("{context}: {e}"),
        },
        _ => StoreError::Unavailable {
            backend: "object store",
            detail: format!("{context}: {e}"),
        },
    }
}

/// The object key of a blob.
fn key(id: &BlobId) -> String {
    format!("blobs/{id}")
}

impl Objects {
    /// Opens the bucket; requests go through `http` (rustls on ring).
    pub(crate) fn open(config: &S3Config, http: reqwest::Client) -> Result<Self, StoreError> {
        // First installed wins: every bucket in this process shares the
        // relay's HTTP client.
        opendal::HttpTransporter::install_default(
            opendal_http_transport_reqwest::ReqwestTransport::new(http),
        );
        let root = format!("/{}", config.prefix.trim_matches('/'));
        let builder = opendal::services::S3::default()
            .endpoint(&config.endpoint)
            .bucket(&config.bucket)
            .region(&config.region)
            .root(&root)
            .access_key_id(&config.access_key_id)
            .secret_access_key(&config.secret_access_key)
            // Credentials come from the configuration only: never from the
            // environment, profile files or an instance metadata service.
            .disable_config_load()
            .disable_ec2_metadata();
        // Transient failures (a pooled connection the server closed, a 503
        // SlowDown) are retried with backoff, up to about 10 s in all;
        // past that the request fails as "unavailable".
        let once = opendal::Operator::new(builder).map_err(object_err("configure S3"))?;
        let op = once.clone().layer(
            opendal::layers::RetryLayer::new()
                .with_max_times(5)
                .with_min_delay(std::time::Duration::from_millis(50))
                .with_max_delay(std::time::Duration::from_secs(4))
                .with_jitter(),
        );
        Ok(Self {
            ops: std::sync::Arc::new(Operators { retrying: op, once }),
        })
    }

    /// Checks that the bucket answers to our credentials.
    pub(crate) async fn check(&self) -> Result<(), StoreError> {
        self.ops
            .retrying
            .check()
            .await
            .map_err(object_err("reach the bucket"))
    }

    /// Uploads a verified local file as blob `id`; multipart above one part.
    /// Returns once the object is complete and durable in the store.
    pub(crate) async fn put_file(&self, id: &BlobId, path: &Path) -> Result<(), StoreError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::io("open upload", e))?;
        let mut writer = self
            .ops
            .retrying
            .writer_with(&key(id))
            .chunk(PART_SIZE)
            .concurrent(PARTS_IN_FLIGHT)
            .await
            .map_err(object_err("start object upload"))?;
        loop {
            let mut buf = Vec::with_capacity(PART_SIZE);
            let read = (&mut file)
                .take(PART_SIZE as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| StoreError::io("read upload", e));
            match read {
                Ok(0) => break,
                Ok(_) => {
                    if let Err(e) = writer.write(buf).await {
                        let _ = writer.abort().await;
                        return Err(object_err("upload object")(e));
                    }
                }
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            }
        }
        writer
            .close()
            .await
            .map_err(object_err("complete object upload"))?;
        Ok(())
    }

    /// Writes `data` as blob `id` in one request.
    pub(crate) async fn put_bytes(&self, id: &BlobId, data: Bytes) -> Result<(), StoreError> {
        self.ops
            .retrying
            .write(&key(id), data)
            .await
            .map_err(object_err("upload object"))?;
        Ok(())
    }

    /// `range` of blob `id`'s bytes.
    pub(crate) async fn read(&self, id: &BlobId, range: Range<u64>) -> Result<Bytes, StoreError> {
        let buffer = self
            .ops
            .retrying
            .read_with(&key(id))
            .range(range)
            .await
            .map_err(object_err("read object"))?;
        Ok(buffer.to_bytes())
    }

    /// `range` of blob `id`'s bytes as a stream of pieces.
    pub(crate) async fn stream(
        &self,
        id: &BlobId,
        range: Range<u64>,
    ) -> Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static, StoreError> {
        let reader = self
            .ops
            .retrying
            .reader_with(&key(id))
            .chunk(PART_SIZE)
            .concurrent(2)
            .await
            .map_err(object_err("open object"))?;
        let stream = reader
            .into_bytes_stream(range)
            .await
            .map_err(object_err("read object"))?;
        Ok(stream.map_err(io::Error::other).boxed())
    }

    /// Removes blob `id`'s object (a no-op if there is none).
    pub(crate) async fn delete(&self, id: &BlobId) -> Result<(), StoreError> {
        self.ops
            .once
            .delete(&key(id))
            .await
            .map_err(object_err("delete object"))
    }
}
