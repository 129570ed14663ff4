//! `POST /v1/blobs`: many small blobs in one request, under one token that
//! signs the digest of their ids (docs/PROTOCOL.md §7.3, "Batch upload").
//!
//! What a batch saves is per-request work, not per-byte work: one token to
//! verify, one upload slot, one trip through the store's writer (one
//! commit) for up to [`cairn_proto::MAX_BATCH_BLOBS`] blobs. Each blob is
//! answered as a single `PUT` of it would have been.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use cairn_proto::wire::{BatchResult, BatchStored, ErrorDetail};
use cairn_proto::{BatchHeader, BlobId, MAX_BATCH_HEADER_LEN, Method, TokenTarget};

use super::AppState;
use super::auth::Expected;
use super::body::{BodyChunks, declared_length};
use super::error::ApiError;
use super::extract::{Accepting, authorize_client};
use crate::federation::NewBlob;
use crate::store::{BatchItem, InsertOutcome, Source};

/// Most bytes in one batch body, header included. Batches are received in
/// memory (each holds an upload slot), so this bounds what a slot costs.
pub(crate) const MAX_BATCH_BYTES: u64 = 4 << 20;

pub(crate) async fn put_batch(
    State(app): State<AppState>,
    _: Accepting,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let declared = declared_length(&headers)?;
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES) {
        return Err(ApiError::too_large(MAX_BATCH_BYTES));
    }
    let authorized = authorize_client(&app, &headers, Method::Post, Expected::AnyBatch)?;
    let TokenTarget::Batch(signed) = authorized.target else {
        // `AnyBatch` admits batch targets only.
        return Err(ApiError::internal());
    };
    let _permit = app.upload_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable("too many uploads in progress on this relay; retry shortly")
            .retry_after(1)
    })?;

    let mut reader = BatchReader::new(BodyChunks::new(&app, body));
    let header = reader.header().await?;
    if header.digest() != signed {
        return Err(ApiError::wrong_target(
            "the token signs another list of blob ids than this batch's header",
        ));
    }
    let total = header.encoded_len() as u64 + header.body_len();
    if total > MAX_BATCH_BYTES {
        return Err(ApiError::too_large(MAX_BATCH_BYTES));
    }
    if let Some(declared) = declared
        && declared != total
    {
        return Err(ApiError::bad_request(format!(
            "Content-Length is {declared}, but the batch header describes {total} bytes"
        )));
    }
    if !app.store.try_reserve(header.body_len()) {
        return Err(ApiError::relay_full(app.peers_with_room()));
    }
    let reserved = Reserved(&app, header.body_len());
    let data = reader.rest(header.body_len()).await?;
    app.metrics
        .bytes_received
        .fetch_add(total, Ordering::Relaxed);

    let signer = authorized.signer;
    let source = if app.federation.peers.contains(&signer) {
        Source::Peer(signer)
    } else {
        Source::Client(signer)
    };
    let (items, mut results) = split(&app, &header, &data);
    let slots: Vec<usize> = items.iter().map(|(slot, _)| *slot).collect();
    let outcomes = app
        .store
        .insert_batch(
            items.into_iter().map(|(_, item)| item).collect(),
            source,
            app.now(),
            Some(authorized.token),
        )
        .await?;
    drop(reserved);
    if outcomes.contains(&InsertOutcome::Replayed) {
        return Err(ApiError::token_replayed());
    }
    let quota = app.config.limits.key_quota_bytes;
    let mut any_stored = false;
    for (slot, outcome) in slots.into_iter().zip(outcomes) {
        let result = &mut results[slot];
        let refusal = match outcome {
            InsertOutcome::Stored => {
                result.status = StatusCode::CREATED.as_u16();
                result.stored = true;
                any_stored = true;
                if let Source::Client(_) = source {
                    app.federation.enqueue(NewBlob {
                        id: result.id,
                        accepted: started,
                    });
                }
                None
            }
            InsertOutcome::AlreadyHeld => {
                result.status = StatusCode::OK.as_u16();
                None
            }
            InsertOutcome::RelayFull => Some(ApiError::relay_full(app.peers_with_room())),
            InsertOutcome::QuotaExceeded => Some(ApiError::quota_exceeded(quota)),
            InsertOutcome::Replayed => Some(ApiError::token_replayed()),
        };
        if let Some(refusal) = refusal {
            (result.status, result.error) = refusal.into_parts();
        }
    }
    if results.iter().any(|r| r.error.is_none()) {
        authorized.nonce.keep();
    }
    if any_stored && app.above_high_water() {
        app.federation.full.notify_one();
    }
    app.metrics.upload_latency.observe(started.elapsed());
    Ok(axum::Json(BatchStored { results }).into_response())
}

/// Capacity held for a batch until the store has it.
struct Reserved<'a>(&'a AppState, u64);

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.0.store.release(self.1);
    }
}

/// Cuts the blobs out of the bytes after the header, each with its result
/// slot; those that do not hash to their id, or are larger than the relay
/// takes, are answered here and go no further.
fn split(
    app: &AppState,
    header: &BatchHeader,
    data: &Bytes,
) -> (Vec<(usize, BatchItem)>, Vec<BatchResult>) {
    let max = app.config.max_blob_size;
    let mut items = Vec::with_capacity(header.entries().len());
    let mut results = Vec::with_capacity(header.entries().len());
    let mut at = 0usize;
    for (slot, (id, len)) in header.entries().iter().enumerate() {
        let len = *len as usize;
        let bytes = data.slice(at..at + len);
        at += len;
        let refusal = if len as u64 > max {
            Some(ApiError::too_large(max))
        } else {
            let actual = BlobId::of(&bytes);
            (actual != *id).then(|| {
                ApiError::hash_mismatch(format!(
                    "the {len} bytes received hash to {actual}, not {id}"
                ))
            })
        };
        let mut result = BatchResult {
            id: *id,
            status: 0,
            stored: false,
            error: None,
        };
        match refusal {
            Some(refusal) => (result.status, result.error) = refusal.into_parts(),
            None => items.push((
                slot,
                BatchItem {
                    id: *id,
                    data: bytes,
                },
            )),
        }
        results.push(result);
    }
    (items, results)
}

/// A batch body, read as far as it is needed: first the header (so the
/// token is checked against it before any blob's bytes are taken), then the
/// rest.
struct BatchReader {
    chunks: BodyChunks,
    buffer: BytesMut,
}

impl BatchReader {
    fn new(chunks: BodyChunks) -> Self {
        Self {
            chunks,
            buffer: BytesMut::new(),
        }
    }

    /// Reads until the buffer holds at least `n` bytes; false at the end
    /// of the body.
    async fn fill(&mut self, n: usize) -> Result<bool, ApiError> {
        while self.buffer.len() < n {
            let Some(chunk) = self.chunks.next().await? else {
                return Ok(false);
            };
            if (self.buffer.len() + chunk.len()) as u64 > MAX_BATCH_BYTES {
                return Err(ApiError::too_large(MAX_BATCH_BYTES));
            }
            self.buffer.extend_from_slice(&chunk);
        }
        Ok(true)
    }

    async fn header(&mut self) -> Result<BatchHeader, ApiError> {
        let malformed = |e: cairn_proto::DecodeError| {
            ApiError::bad_request(format!("the batch header does not decode: {e}"))
        };
        let truncated = || ApiError::bad_request("the body ends inside the batch header");
        if !self.fill(2).await? {
            return Err(truncated());
        }
        let len = BatchHeader::len_from_prefix(&self.buffer)
            .map_err(malformed)?
            .unwrap_or(2)
            .min(MAX_BATCH_HEADER_LEN);
        if !self.fill(len).await? {
            return Err(truncated());
        }
        let bytes = self.buffer.split_to(len);
        BatchHeader::decode(&bytes).map_err(malformed)
    }

    /// The `len` bytes after the header, and nothing after them.
    async fn rest(mut self, len: u64) -> Result<Bytes, ApiError> {
        let len = usize::try_from(len).map_err(|_| ApiError::too_large(MAX_BATCH_BYTES))?;
        if !self.fill(len).await? {
            return Err(ApiError::bad_request(
                "the body ends before the blobs its header lists",
            ));
        }
        if self.buffer.len() > len || self.fill(len + 1).await? {
            return Err(ApiError::bad_request(
                "the body goes on past the blobs its header lists",
            ));
        }
        Ok(self.buffer.freeze())
    }
}

impl ApiError {
    /// The status and the code and message, for one blob's result in a
    /// batch answer.
    fn into_parts(self) -> (u16, Option<ErrorDetail>) {
        let (status, answer) = self.status_and_answer();
        (status.as_u16(), Some(answer.error))
    }
}
