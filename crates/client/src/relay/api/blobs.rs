//! Blob calls (PROTOCOL.md §7.3): upload, download, probe, audit, delete
//! and claim, each following a transfer where the relay answers with one.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use cairn_proto::audit::ChunkRequest;
use cairn_proto::wire::{BatchStored, BlobClaimed, BlobStored, header};
use cairn_proto::{
    BatchHeader, BlobId, ErrorCode, MAX_BATCH_BLOBS, Method, SigningKey, TokenTarget,
};
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method as HttpMethod, StatusCode};

use super::RelayClient;
use super::answer::{MAX_SMALL_BODY, bounded_body, json_answer, send, unreachable};
use crate::error::RelayError;

/// Times an upload is tried again after `429 rate_limited`: a large file
/// is one upload per chunk, and a relay's per-key rate paces them (a
/// refill takes about a second), so a put waits many times rather than
/// fail part-way.
const RATE_LIMIT_RETRIES: u32 = 30;
/// Longest wait a relay's `Retry-After` may ask for before giving up.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// What an audit of one copy found.
#[derive(Debug)]
pub enum AuditOutcome {
    /// The relay proved it holds the requested chunks.
    Passed {
        /// Bytes of proof received.
        proof_bytes: u64,
        /// The relay that answered, when the blob was transferred there.
        at: Option<RelayClient>,
    },
    /// The relay (or the peer it transferred the blob to) does not have it.
    Missing,
    /// The relay answered with a proof that does not lead to the blob id:
    /// it does not hold these bytes (or holds other ones).
    Failed(String),
}

/// A blob a relay answered for.
#[derive(Clone, Debug)]
pub struct Held {
    /// Its size in bytes.
    pub size: u64,
    /// The relay holding it, when that is not the relay asked: the one asked
    /// transferred it to a peer (PROTOCOL.md §7.3). Its key is the one the
    /// redirect claimed, checked against the peer's signed info document.
    pub at: Option<RelayClient>,
}

/// What a delete did at one relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The blob is gone.
    Gone,
    /// This key's claim is dropped; that many other owners keep the blob.
    KeptByOthers(u64),
    /// The relay did not hold it.
    Absent,
}

/// What a claim did at one relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The key owns the copy now.
    New,
    /// The key owned it already.
    Already,
    /// The relay does not hold the blob.
    Absent,
}

/// Most bytes of blobs in one batch: the relay's 4 MiB, less the largest
/// header.
const MAX_BATCH_BODY: usize = (4 << 20) - cairn_proto::MAX_BATCH_HEADER_LEN;

/// Longest batch answer read: a result of about 200 bytes a blob, and room.
const MAX_BATCH_ANSWER: usize = MAX_BATCH_BLOBS * 1024;

/// Single uploads at once to a relay without batch uploads.
const SINGLES_IN_FLIGHT: usize = 8;

/// `blobs` in groups a batch takes: at most [`MAX_BATCH_BLOBS`] and
/// [`MAX_BATCH_BODY`] bytes each (a blob larger than that alone is a group
/// of its own, and refused by the relay as too large).
pub(super) fn batch_groups(blobs: &[(BlobId, Bytes)]) -> Vec<&[(BlobId, Bytes)]> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, blob)) in blobs.iter().enumerate() {
        if i > start && (i - start == MAX_BATCH_BLOBS || bytes + blob.len() > MAX_BATCH_BODY) {
            groups.push(&blobs[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += blob.len();
    }
    if start < blobs.len() {
        groups.push(&blobs[start..]);
    }
    groups
}

/// Longest answer to a claim read: `{"id": "<64 hex>", "claimed": false}`
/// with room to spare.
const MAX_CLAIM_ANSWER: usize = 1024;

impl RelayClient {
    /// Uploads the file at `path` (`size` bytes, sealed, hashing to `id`),
    /// owned by `key`. Returns whether this upload stored the bytes (false:
    /// the relay already held them). `progress` gets byte counts as they go.
    pub async fn put_file(
        &self,
        id: &BlobId,
        path: &Path,
        size: u64,
        key: &SigningKey,
        pow_bits: u8,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<bool, RelayError> {
        let progress = std::sync::Arc::new(progress);
        let body = || -> std::io::Result<reqwest::Body> {
            let file = tokio::fs::File::from_std(std::fs::File::open(path)?);
            let progress = progress.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(
                move |chunk: std::io::Result<Bytes>| {
                    if let Ok(bytes) = &chunk {
                        progress(bytes.len() as u64);
                    }
                    chunk
                },
            );
            Ok(reqwest::Body::wrap_stream(stream))
        };
        self.put(id, body, size, key, pow_bits).await
    }

    /// Uploads a small blob held in memory.
    pub async fn put_bytes(
        &self,
        id: &BlobId,
        bytes: Bytes,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<bool, RelayError> {
        let size = bytes.len() as u64;
        let body = || Ok(reqwest::Body::from(bytes.clone()));
        self.put(id, body, size, key, pow_bits).await
    }

    /// Uploads many small blobs held in memory: through the relay's batch
    /// upload (PROTOCOL.md §7.3), up to 1,024 blobs and 4 MiB a request,
    /// or one `PUT` each from a relay that has none (it answers `404`).
    /// Each blob's result is whether this upload stored its bytes, or why
    /// the relay refused it; an error for the whole call means the relay
    /// failed the request, and any blob of it may or may not be stored.
    pub async fn put_many(
        &self,
        blobs: &[(BlobId, Bytes)],
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<Vec<Result<bool, RelayError>>, RelayError> {
        let mut results = Vec::with_capacity(blobs.len());
        let mut batched = true;
        for group in batch_groups(blobs) {
            if batched {
                match self.put_batch(group, key, pow_bits).await {
                    Ok(answers) => {
                        results.extend(answers);
                        continue;
                    }
                    // A relay of a release before batch uploads.
                    Err(RelayError::Refused { status: 404, .. }) => batched = false,
                    Err(err) => return Err(err),
                }
            }
            let singles = futures_util::stream::iter(group)
                .map(|(id, bytes)| self.put_bytes(id, bytes.clone(), key, pow_bits))
                .buffered(SINGLES_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await;
            results.extend(singles);
        }
        Ok(results)
    }

    /// One batch, retried as [`RelayClient::put`] retries an upload.
    async fn put_batch(
        &self,
        blobs: &[(BlobId, Bytes)],
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<Vec<Result<bool, RelayError>>, RelayError> {
        let header = BatchHeader::new(
            blobs
                .iter()
                .map(|(id, b)| (*id, u32::try_from(b.len()).unwrap_or(u32::MAX)))
                .collect(),
        )
        .map_err(|e| RelayError::Protocol(format!("cannot frame a batch: {e}")))?;
        // The bytes go in the header's order: by id.
        let mut ordered: Vec<&(BlobId, Bytes)> = blobs.iter().collect();
        ordered.sort_unstable_by_key(|(id, _)| *id);
        let mut body = header.encode();
        for (_, bytes) in ordered {
            body.extend_from_slice(bytes);
        }
        let body = Bytes::from(body);
        let mut attempt = 0;
        let mut pow_bits = pow_bits;
        let mut pow_checked = false;
        let stored = loop {
            attempt += 1;
            match self
                .put_batch_once(&header, body.clone(), key, pow_bits)
                .await
            {
                Err(err) if self.waited_out(&err, attempt).await => {}
                Err(err) if err.code() == Some(ErrorCode::PowRequired) && !pow_checked => {
                    pow_checked = true;
                    pow_bits = self.info().await?.limits.pow_bits;
                }
                other => break other?,
            }
        };
        if stored.results.len() != blobs.len() {
            return Err(RelayError::Protocol(format!(
                "a batch of {} blobs was answered with {} results",
                blobs.len(),
                stored.results.len()
            )));
        }
        // Answered in the header's order; given back in the caller's.
        let by_id: std::collections::HashMap<BlobId, &cairn_proto::wire::BatchResult> =
            stored.results.iter().map(|r| (r.id, r)).collect();
        blobs
            .iter()
            .map(|(id, _)| {
                let result = by_id
                    .get(id)
                    .ok_or_else(|| RelayError::Protocol(format!("no result for blob {id}")))?;
                Ok(match &result.error {
                    None => Ok(result.status == 201 || result.stored),
                    Some(error) => Err(RelayError::Refused {
                        status: result.status,
                        code: error.code.clone(),
                        message: error.message.clone(),
                        retry_after: None,
                    }),
                })
            })
            .collect()
    }

    async fn put_batch_once(
        &self,
        header: &BatchHeader,
        body: Bytes,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<BatchStored, RelayError> {
        let target = TokenTarget::Batch(header.digest());
        let token = self.token_for(Method::Post, target, key, pow_bits).await?;
        let response = send(
            self.http
                .post(format!("{}{}", self.url, cairn_proto::wire::route::BLOBS))
                .header(AUTHORIZATION, token)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, body.len())
                .body(body),
        )
        .await?;
        json_answer(response, MAX_BATCH_ANSWER, "batch upload answer").await
    }

    /// Uploads the body `body` makes, waiting as the relay asks when it
    /// answers `429 rate_limited` (a fair-share limit, PROTOCOL.md §7.6a)
    /// and trying again, a few times. `pow_bits` is the work the caller
    /// expects the relay to require (0 when it has no info document at
    /// hand); a `pow_required` refusal reads the current figure and retries.
    async fn put(
        &self,
        id: &BlobId,
        body: impl Fn() -> std::io::Result<reqwest::Body>,
        size: u64,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<bool, RelayError> {
        let mut attempt = 0;
        let mut pow_bits = pow_bits;
        let mut pow_checked = false;
        loop {
            attempt += 1;
            match self.put_once(id, body()?, size, key, pow_bits).await {
                Err(err) if self.waited_out(&err, attempt).await => {}
                // The relay raised its proof of work (it may, under
                // pressure): read what it asks now and try once more.
                Err(err) if err.code() == Some(ErrorCode::PowRequired) && !pow_checked => {
                    pow_checked = true;
                    pow_bits = self.info().await?.limits.pow_bits;
                }
                other => return other,
            }
        }
    }

    async fn put_once(
        &self,
        id: &BlobId,
        body: reqwest::Body,
        size: u64,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<bool, RelayError> {
        let token = self.token(Method::Put, id, key, pow_bits).await?;
        let response = send(
            self.http
                .put(self.blob_url(id))
                .header(AUTHORIZATION, token)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body),
        )
        .await?;
        let status = response.status();
        let answer: BlobStored = json_answer(response, MAX_SMALL_BODY, "upload answer").await?;
        if answer.id != *id {
            return Err(RelayError::Protocol(format!(
                "upload of {id} answered for blob {}",
                answer.id
            )));
        }
        Ok(status == StatusCode::CREATED || answer.stored)
    }

    /// Downloads blob `id`, handing each piece to `each` as it arrives, and
    /// fails with [`RelayError::WrongBytes`] at the end unless every byte
    /// hashed to the id: whatever `each` did with the pieces must be
    /// discarded then. A transferred blob is fetched from the peer holding
    /// it (see [`RelayClient::probe`]).
    pub async fn fetch_each<F, Fut>(&self, id: &BlobId, mut each: F) -> Result<u64, RelayError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>>,
    {
        let (_, response) = self.open_blob(HttpMethod::GET, id).await?;
        let mut hasher = blake3::Hasher::new();
        let mut received = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| unreachable(&err))?;
            hasher.update(&chunk);
            received += chunk.len() as u64;
            each(chunk).await?;
        }
        if hasher.finalize().as_bytes() != id.as_bytes() {
            return Err(RelayError::WrongBytes(*id));
        }
        Ok(received)
    }

    /// Downloads a small blob (at most `max` bytes) into memory, verified,
    /// following a transfer like [`RelayClient::fetch_each`].
    pub async fn fetch_bytes(&self, id: &BlobId, max: usize) -> Result<Vec<u8>, RelayError> {
        let (_, response) = self.open_blob(HttpMethod::GET, id).await?;
        let bytes = bounded_body(response, max).await?;
        if BlobId::of(&bytes) != *id {
            return Err(RelayError::WrongBytes(*id));
        }
        Ok(bytes.into())
    }

    /// Asks whether the relay holds `id` (a HEAD, which also counts as an
    /// access). Returns its size and, when the relay transferred it to a
    /// peer, the peer: redirects are followed (at most three), each only
    /// after the relay it points at proved, by its signed info document, to
    /// hold the key the redirect claims.
    pub async fn probe(&self, id: &BlobId) -> Result<Option<Held>, RelayError> {
        match self.open_blob(HttpMethod::HEAD, id).await {
            Ok((at, response)) => {
                // The header, not the body's length: a HEAD answer has none.
                let size = response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .or_else(|| response.content_length());
                Ok(size.map(|size| Held { size, at }))
            }
            Err(err) if err.is_absent() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Audits blob `id` (`size` bytes, as the manifest records): asks the
    /// relay holding it (following a transfer) for the chunks in `request`
    /// with a slice proof, and checks the proof against the id. The answer
    /// says whether the relay holds those bytes; it costs the proof's
    /// length, a few hundred bytes per chunk, not the blob's.
    pub async fn audit(
        &self,
        id: &BlobId,
        request: &ChunkRequest,
    ) -> Result<AuditOutcome, RelayError> {
        let Some(held) = self.probe(id).await? else {
            return Ok(AuditOutcome::Missing);
        };
        let relay = held.at.as_ref().unwrap_or(self);
        let url = format!("{}/proof?chunks={}", relay.blob_url(id), request.to_query());
        // A relay proves a few blobs at a time and asks the rest to come
        // back shortly: auditing a chunked file asks for many at once.
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            match send(self.http.get(&url)).await {
                Ok(response) => break response,
                Err(err) if err.is_absent() => return Ok(AuditOutcome::Missing),
                Err(err) if relay.waited_out(&err, attempt).await => {}
                Err(err) => return Err(relay.after_transfer(self, err)),
            }
        };
        let expected = cairn_proto::audit::proof_len(request);
        let max = usize::try_from(expected).unwrap_or(usize::MAX);
        let proof = match bounded_body(response, max).await {
            Ok(proof) => proof,
            Err(RelayError::Protocol(reason)) => {
                return Ok(AuditOutcome::Failed(format!(
                    "the proof is too long: {reason}"
                )));
            }
            Err(err) => return Err(err),
        };
        Ok(match cairn_proto::audit::verify(id, request, &proof) {
            Ok(_) => AuditOutcome::Passed {
                proof_bytes: proof.len() as u64,
                at: held.at,
            },
            Err(err) => AuditOutcome::Failed(err.to_string()),
        })
    }

    /// Drops `key`'s claim on blob `id`; the relay deletes the blob when no
    /// other owner is left (PROTOCOL.md §7.3).
    pub async fn delete(&self, id: &BlobId, key: &SigningKey) -> Result<Deleted, RelayError> {
        let token = self.token(Method::Delete, id, key, 0).await?;
        match send(
            self.http
                .delete(self.blob_url(id))
                .header(AUTHORIZATION, token),
        )
        .await
        {
            Ok(response) => {
                // A relay from before owner sets sends no count: its
                // delete removed the blob.
                let left = match response.headers().get(header::OWNERS_LEFT) {
                    None => 0,
                    Some(value) => value
                        .to_str()
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| {
                            RelayError::Protocol(format!(
                                "`{}` is not a number",
                                header::OWNERS_LEFT
                            ))
                        })?,
                };
                Ok(if left == 0 {
                    Deleted::Gone
                } else {
                    Deleted::KeptByOthers(left)
                })
            }
            Err(err) if err.code() == Some(ErrorCode::NotFound) => Ok(Deleted::Absent),
            Err(err) => Err(err),
        }
    }

    /// Makes `key` one of blob `id`'s owners, so that the copy stays until
    /// `key` deletes it too, whoever else does (PROTOCOL.md §7.3). Waits
    /// out `429 rate_limited` as uploads do: a put that reuses many chunks
    /// claims each one.
    pub async fn claim(&self, id: &BlobId, key: &SigningKey) -> Result<Claimed, RelayError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.claim_once(id, key).await {
                Err(err) if self.waited_out(&err, attempt).await => {}
                other => return other,
            }
        }
    }

    /// Waits as the relay asked when `err` is a `429 rate_limited` or a
    /// `503` (busy: too many uploads or audits at once) with a reasonable
    /// `Retry-After` and `attempt` is within the retries: true when the
    /// request is to be sent again.
    async fn waited_out(&self, err: &RelayError, attempt: u32) -> bool {
        let RelayError::Refused {
            status: 429 | 503,
            retry_after: Some(wait),
            ..
        } = *err
        else {
            return false;
        };
        if attempt > RATE_LIMIT_RETRIES || wait > MAX_RATE_LIMIT_WAIT.as_secs() {
            return false;
        }
        tracing::info!(relay = %self.url, wait, "rate limited; waiting as asked");
        tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
        true
    }

    async fn claim_once(&self, id: &BlobId, key: &SigningKey) -> Result<Claimed, RelayError> {
        let token = self.token(Method::Post, id, key, 0).await?;
        match send(
            self.http
                .post(self.blob_url(id))
                .header(AUTHORIZATION, token),
        )
        .await
        {
            Ok(response) => {
                let answer: BlobClaimed =
                    json_answer(response, MAX_CLAIM_ANSWER, "claim answer").await?;
                Ok(if answer.claimed {
                    Claimed::New
                } else {
                    Claimed::Already
                })
            }
            Err(err) if err.code() == Some(ErrorCode::NotFound) => Ok(Claimed::Absent),
            Err(err) => Err(err),
        }
    }
}
