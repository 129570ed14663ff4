//! `/v1/blobs/{id}`: upload, download, delete (docs/PROTOCOL.md §7.3).

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cairn_proto::wire::{self, BlobClaimed, BlobStored, BlobTransferred, PeerRef};
use cairn_proto::{BlobId, SignedRecord, Timestamp, TransferReceipt, VerifyingKey};

use super::AppState;
use super::auth::Authorized;
use super::auth::CLOCK_SKEW_SECS;
use super::body::{BodyChunks, declared_length};
use super::error::ApiError;
use super::extract::{Accepting, BlobCaller, parse_id};
use super::range::{self, ByteRange};
use crate::federation::NewBlob;
use crate::store::{
    ClaimOutcome, DeleteOutcome, InsertOutcome, ReadBody, Received, Source, SpentToken, Staged,
    StoreError, Want,
};

/// Uploads that declare at most this length are received in memory.
const SMALL_UPLOAD: u64 = 256 * 1024;
/// Capacity is reserved for uploads of unknown length in steps this big.
const RESERVE_STEP: u64 = 8 << 20;

fn etag(id: &BlobId) -> HeaderValue {
    // A blob id is hex, always a valid header value.
    HeaderValue::from_str(&format!("\"{id}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// `GET` and `HEAD`.
pub(crate) async fn get_blob(
    State(app): State<AppState>,
    Path(id): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let id = parse_id(&id)?;
    let head = method == axum::http::Method::HEAD;
    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    if let Some(bytes) = app.store.cache.get(&id) {
        let size = bytes.len() as u64;
        let range =
            range::parse(range_header.as_deref(), size).map_err(|()| ApiError::bad_range(size))?;
        let body = match range {
            _ if head => Bytes::new(),
            // Bounds were checked against `size` by the parser.
            Some(r) => bytes
                .slice(usize::try_from(r.start).unwrap_or(0)..=usize::try_from(r.end).unwrap_or(0)),
            None => bytes,
        };
        return Ok(blob_response(
            &app,
            id,
            size,
            range,
            head,
            started,
            Body::from(body),
        ));
    }

    let generation = app.store.cache.generation();
    // What to read is decided once the size is known, from the range asked
    // for; the same parse below then builds the answer.
    let header = range_header.clone();
    let want = move |size| match range::parse(header.as_deref(), size) {
        Ok(_) if head => Want::Size,
        Ok(Some(r)) => Want::Bytes {
            start: r.start,
            len: r.len(),
        },
        Ok(None) => Want::Bytes {
            start: 0,
            len: size,
        },
        Err(()) => Want::Size,
    };
    let Some(read) = app.store.read(id, want).await? else {
        return forwarded(&app, id, "").await;
    };
    let size = read.size;
    let range =
        range::parse(range_header.as_deref(), size).map_err(|()| ApiError::bad_range(size))?;
    let body = match read.body {
        ReadBody::Nothing => Body::empty(),
        ReadBody::Bytes(bytes) => {
            if range.is_none() {
                app.store.cache.insert(id, generation, bytes.clone());
            }
            Body::from(bytes)
        }
        ReadBody::Stream(stream) => Body::from_stream(stream),
    };
    Ok(blob_response(&app, id, size, range, head, started, body))
}

/// The answer for a blob this relay does not hold: a redirect to the peer
/// it was transferred to (to the same resource there: the blob, or with
/// `suffix` a sub-resource such as its proof), or 404.
pub(super) async fn forwarded(
    app: &AppState,
    id: BlobId,
    suffix: &str,
) -> Result<Response, ApiError> {
    let Some(forward) = app.store.forward_of(&id).await? else {
        return Err(ApiError::not_found(format!(
            "this relay does not hold blob {id}"
        )));
    };
    // Keeps the forwarding record alive as long as it is used.
    app.store.record_access(id, app.now());
    let location = format!(
        "{}/v1/blobs/{id}{suffix}",
        forward.url.trim_end_matches('/')
    );
    let location = HeaderValue::from_str(&location).map_err(|_| ApiError::internal())?;
    let key = forward.peer;
    let body = BlobTransferred {
        id,
        transferred_to: PeerRef {
            url: forward.url,
            key,
        },
    };
    let mut response = (StatusCode::TEMPORARY_REDIRECT, axum::Json(body)).into_response();
    response.headers_mut().insert(header::LOCATION, location);
    if let Ok(key) = HeaderValue::from_str(&key.to_string()) {
        response.headers_mut().insert(wire::header::RELAY_KEY, key);
    }
    Ok(response)
}

/// Headers and status for a blob (or a range of it); records the access.
fn blob_response(
    app: &AppState,
    id: BlobId,
    size: u64,
    range: Option<ByteRange>,
    head: bool,
    started: Instant,
    body: Body,
) -> Response {
    app.store.record_access(id, app.now());
    let (status, len) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.len()),
        None => (StatusCode::OK, size),
    };
    if !head {
        app.metrics.bytes_sent.fetch_add(len, Ordering::Relaxed);
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, etag(&id));
    if let Some(r) = range
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    app.metrics.download_latency.observe(started.elapsed());
    response
}

/// Capacity held for an upload in progress, returned on drop.
struct Reservation<'a> {
    app: &'a AppState,
    bytes: u64,
}

impl Reservation<'_> {
    fn grow_to(&mut self, needed: u64) -> Result<(), ApiError> {
        if needed <= self.bytes {
            return Ok(());
        }
        let step = (needed - self.bytes).max(RESERVE_STEP);
        if self.app.store.try_reserve(step) {
            self.bytes += step;
            Ok(())
        } else if self.app.store.try_reserve(needed - self.bytes) {
            self.bytes = needed;
            Ok(())
        } else {
            Err(relay_full(self.app))
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.app.store.release(self.bytes);
    }
}

fn relay_full(app: &AppState) -> ApiError {
    ApiError::relay_full(app.peers_with_room())
}

/// Counts an upload in flight for the info document's load figure.
struct InFlight<'a>(&'a AppState);

impl<'a> InFlight<'a> {
    fn new(app: &'a AppState) -> Self {
        app.uploads_in_flight.fetch_add(1, Ordering::Relaxed);
        Self(app)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.uploads_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `PUT`: streams the body to a temp file while hashing it; commits only a
/// verified, fsynced blob; answers only once it is durable. The token is
/// spent with the commit; a refusal leaves it for a retry.
pub(crate) async fn put_blob(
    State(app): State<AppState>,
    BlobCaller { id, authorized }: BlobCaller,
    _: Accepting,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Authorized {
        signer,
        token,
        nonce,
        ..
    } = authorized;
    let response = upload(&app, id, signer, token, &headers, body).await?;
    nonce.keep();
    Ok(response)
}

async fn upload(
    app: &AppState,
    id: BlobId,
    signer: VerifyingKey,
    token: SpentToken,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let app = app.clone();
    let token = Some(token);
    let started = Instant::now();
    let source = if app.federation.peers.contains(&signer) {
        Source::Peer(signer)
    } else {
        Source::Client(signer)
    };
    let max = app.config.max_blob_size;
    let declared = declared_length(headers)?;
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::too_large(max));
    }
    let _permit = app.upload_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable("too many uploads in progress on this relay; retry shortly")
            .retry_after(1)
    })?;
    let _in_flight = InFlight::new(&app);

    let quota = app.config.limits.key_quota_bytes;
    let mut reservation = Reservation {
        app: &app,
        bytes: 0,
    };
    let outcome = match declared {
        // Small uploads: received in memory and handed to the writer whole;
        // the writer's own checks cover "already held" and the quota.
        Some(len) if len <= SMALL_UPLOAD => {
            if let Err(full) = reservation.grow_to(len) {
                // A full relay still acknowledges a blob it already holds.
                if let Some(held) = app
                    .store
                    .acknowledge_held(id, source, app.now(), token)
                    .await?
                {
                    return held_response(&app, id, held, source);
                }
                return Err(full);
            }
            let data = receive_small(&app, body, id, len).await?;
            let size = data.len() as u64;
            let outcome = app
                .store
                .insert(Staged::Bytes(data), id, size, source, app.now(), token)
                .await?;
            (outcome, size)
        }
        _ => {
            // Already held: no need to receive the bytes again. The access
            // is committed before the answer, so no GC pass can take the
            // blob away after the client was told it is stored.
            if let Some(held) = app
                .store
                .acknowledge_held(id, source, app.now(), token)
                .await?
            {
                return held_response(&app, id, held, source);
            }
            // Refused before the bytes travel; the store checks again as
            // it commits.
            if !app
                .store
                .quota_allows(source, declared.unwrap_or(0))
                .await?
            {
                return Err(ApiError::quota_exceeded(quota));
            }
            reservation.grow_to(declared.unwrap_or(0))?;
            let (staged, size) = receive(&app, body, id, max, &mut reservation).await?;
            let outcome = app
                .store
                .insert(staged, id, size, source, app.now(), token)
                .await?;
            (outcome, size)
        }
    };
    drop(reservation);
    app.metrics.upload_latency.observe(started.elapsed());
    let (outcome, size) = outcome;
    let stored = match outcome {
        InsertOutcome::Stored => true,
        InsertOutcome::AlreadyHeld => false,
        InsertOutcome::RelayFull => return Err(relay_full(&app)),
        InsertOutcome::QuotaExceeded => return Err(ApiError::quota_exceeded(quota)),
        InsertOutcome::Replayed => return Err(ApiError::token_replayed()),
    };
    if stored {
        match source {
            Source::Client(_) => app.federation.enqueue(NewBlob {
                id,
                accepted: started,
            }),
            Source::Peer(peer) => {
                let fed = &app.federation;
                fed.metrics.transfers_in.fetch_add(1, Ordering::Relaxed);
                fed.metrics
                    .transfer_bytes_in
                    .fetch_add(size, Ordering::Relaxed);
                fed.account(&peer, |a| {
                    a.stored_for_peer += size;
                    a.bytes_received += size;
                    a.transfers_in += 1;
                });
            }
        }
        if app.above_high_water() {
            app.federation.full.notify_one();
        }
    }
    stored_response(&app, id, size, source, stored)
}

/// The answer to an upload of a blob the relay holds: 200, unless the
/// uploader's quota cannot pay for its claim on it. (A blob that has the
/// most owners it may have is acknowledged without a new claim.)
fn held_response(
    app: &AppState,
    id: BlobId,
    (size, claim): (u64, ClaimOutcome),
    source: Source,
) -> Result<Response, ApiError> {
    match claim {
        ClaimOutcome::QuotaExceeded => {
            return Err(ApiError::quota_exceeded(app.config.limits.key_quota_bytes));
        }
        ClaimOutcome::Replayed => return Err(ApiError::token_replayed()),
        _ => {}
    }
    stored_response(app, id, size, source, false)
}

/// The answer to an accepted upload: 201 if this upload stored the bytes,
/// 200 if they were held already. A peer also gets a signed receipt: the
/// relay holds the blob, verified, and answers for it from now on.
fn stored_response(
    app: &AppState,
    id: BlobId,
    size: u64,
    source: Source,
    stored: bool,
) -> Result<Response, ApiError> {
    let status = if stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = BlobStored {
        id,
        stored,
        receipt: None,
    };
    if let Source::Peer(sender) = source {
        let receipt = TransferReceipt {
            receiver: app.key.verifying_key(),
            sender,
            blob: id,
            size,
            received_at: Timestamp(app.now()),
        };
        let envelope = SignedRecord::sign(&receipt, &app.key).map_err(|e| {
            tracing::error!(error = %e, "a transfer receipt does not encode");
            ApiError::internal()
        })?;
        body.receipt = Some(envelope.to_base64url());
    }
    Ok((status, axum::Json(body)).into_response())
}

/// Receives a small body of `len` declared bytes into memory and checks its
/// hash.
async fn receive_small(
    app: &AppState,
    body: Body,
    id: BlobId,
    len: u64,
) -> Result<Bytes, ApiError> {
    let mut data = bytes::BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut chunks = BodyChunks::new(app, body);
    while let Some(chunk) = chunks.next().await? {
        // HTTP framing already holds the body to its declared length; this
        // only makes sure of it.
        if (data.len() + chunk.len()) as u64 > len {
            return Err(ApiError::bad_request("body longer than its Content-Length"));
        }
        data.extend_from_slice(&chunk);
    }
    let data = data.freeze();
    app.metrics
        .bytes_received
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    let actual = BlobId::of(&data);
    if actual != id {
        return Err(ApiError::hash_mismatch(format!(
            "the {} bytes received hash to {actual}, not {id}",
            data.len()
        )));
    }
    Ok(data)
}

/// Receives the body into a staged upload: hashed, size-checked, and as
/// durable as the store needs.
async fn receive(
    app: &AppState,
    body: Body,
    id: BlobId,
    max: u64,
    reservation: &mut Reservation<'_>,
) -> Result<(Staged, u64), ApiError> {
    let write_err = |err: StoreError| {
        if err.is_disk_full() {
            relay_full(app)
        } else {
            ApiError::from(err)
        }
    };
    let mut upload = app.store.stage_upload().await.map_err(write_err)?;
    let mut chunks = BodyChunks::new(app, body);
    while let Some(chunk) = chunks.next().await? {
        let size = upload.size() + chunk.len() as u64;
        if size > max {
            return Err(ApiError::too_large(max));
        }
        reservation.grow_to(size)?;
        upload.write(&chunk).await.map_err(write_err)?;
    }
    app.metrics
        .bytes_received
        .fetch_add(upload.size(), Ordering::Relaxed);
    match upload.finish(id).await.map_err(write_err)? {
        Received::Verified { staged, size } => Ok((staged, size)),
        Received::Mismatch { actual, size } => Err(ApiError::hash_mismatch(format!(
            "the {size} bytes received hash to {actual}, not {id}"
        ))),
    }
}

/// `POST /v1/blobs/{id}`: the signer claims a blob the relay holds and
/// becomes one of its owners, paying for it from its quota; the blob then
/// stays until every owner has deleted it (docs/PROTOCOL.md §7.3). Devices
/// claim the copies they learn of through sync, so that no single device,
/// stolen or revoked, can delete what the others keep.
pub(crate) async fn claim_blob(
    State(app): State<AppState>,
    BlobCaller { id, authorized }: BlobCaller,
    _: Accepting,
) -> Result<Response, ApiError> {
    let Authorized {
        signer,
        token,
        nonce,
        ..
    } = authorized;
    let claimed = match app
        .store
        .add_owner(id, signer, app.now(), Some(token))
        .await?
    {
        ClaimOutcome::Claimed => true,
        ClaimOutcome::AlreadyOwner => false,
        ClaimOutcome::NotFound => {
            return Err(ApiError::not_found(format!(
                "this relay does not hold blob {id}; upload it to own a copy here"
            )));
        }
        ClaimOutcome::QuotaExceeded => {
            return Err(ApiError::quota_exceeded(app.config.limits.key_quota_bytes));
        }
        ClaimOutcome::TooManyOwners => return Err(ApiError::too_many_owners()),
        ClaimOutcome::Replayed => return Err(ApiError::token_replayed()),
    };
    nonce.keep();
    Ok(axum::Json(BlobClaimed { id, claimed }).into_response())
}

/// The answer to a delete: 204, with how many other owners still keep the
/// blob (0: it is gone).
fn owners_left(n: u64) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(wire::header::OWNERS_LEFT, HeaderValue::from(n));
    response
}

/// `DELETE`: drops the signer's claim, which only an owner has; the blob goes
/// with the last claim.
pub(crate) async fn delete_blob(
    State(app): State<AppState>,
    BlobCaller { id, authorized }: BlobCaller,
) -> Result<Response, ApiError> {
    let forget_before = app.now().saturating_sub(CLOCK_SKEW_SECS);
    let outcome = app
        .store
        .delete(id, authorized.signer, authorized.token, forget_before)
        .await?;
    // Every outcome but a replay spent the token in the store.
    if outcome != DeleteOutcome::Replayed {
        authorized.nonce.keep();
    }
    match outcome {
        DeleteOutcome::Replayed => Err(ApiError::token_replayed()),
        DeleteOutcome::Deleted => Ok(owners_left(0)),
        DeleteOutcome::Released { owners_left: n } => Ok(owners_left(n)),
        DeleteOutcome::NotFound => Err(ApiError::not_found(format!(
            "this relay does not hold blob {id} (if it was transferred to a peer, the copy \
             there is not the uploader's to delete; it expires with the peer's retention)"
        ))),
        DeleteOutcome::NotOwner => Err(ApiError::not_owner()),
    }
}
