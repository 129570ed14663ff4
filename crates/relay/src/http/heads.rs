//! `/v1/heads/...`: mailbox heads (docs/PROTOCOL.md §7.7).
//!
//! No token is needed: a head is signed by its mailbox key, and that
//! signature is the authorization. The relay keeps, per (mailbox, slot), the
//! valid head with the highest `seq`; the store compares and writes in one
//! transaction.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_proto::wire::{HeadListing, HeadStored};
use cairn_proto::{
    HeadRecord, OwnedHead, RecordKind, SignedRecord, encode_base64url, is_owned_slot,
};

use super::AppState;
use super::body::read_bounded;
use super::error::ApiError;
use super::extract::{Accepting, HeadSlot, parse_mailbox};
use crate::store::HeadKey;
use crate::store::{HeadOutcome, MAX_SLOTS_PER_MAILBOX, NewHead};

/// Largest head body accepted. A head envelope is at most 312 bytes today;
/// the margin leaves room for a future record version, not for abuse.
pub(crate) const MAX_HEAD_BODY: usize = 4096;

/// Decodes and verifies a head envelope, an owned head (§4.9) or a legacy
/// one (§4.4), and checks that it is for the slot the path names. Only what
/// passes reaches the store.
fn verify_for(body: &[u8], key: &HeadKey) -> Result<NewHead, ApiError> {
    let envelope = SignedRecord::from_bytes(body)
        .map_err(|e| ApiError::bad_record(format!("the body is not a signed record: {e}")))?;
    let head: NewHead = match envelope.kind() {
        RecordKind::OwnedHead => envelope
            .verify::<OwnedHead>()
            .map_err(|e| ApiError::bad_record(format!("the body is not a valid owned head: {e}")))?
            .into(),
        _ => {
            let head = envelope.verify::<HeadRecord>().map_err(|e| {
                ApiError::bad_record(format!("the body is not a valid head record: {e}"))
            })?;
            // Owned slots are kept for owned heads: otherwise any holder of
            // the mailbox key could write a writer's slot by this older form.
            if is_owned_slot(&head.slot) {
                return Err(ApiError::bad_record(format!(
                    "slot {:?} is an owned slot: only an owned head signed by its writer may \
                     be stored there",
                    head.slot.as_str()
                )));
            }
            head.into()
        }
    };
    if head.key.mailbox != key.mailbox {
        return Err(ApiError::bad_record(format!(
            "the record is for mailbox {}, the path names {}",
            head.key.mailbox, key.mailbox
        )));
    }
    if head.key.slot != key.slot {
        return Err(ApiError::bad_record(format!(
            "the record is for slot {:?}, the path names {:?}",
            head.key.slot.as_str(),
            key.slot.as_str()
        )));
    }
    Ok(head)
}

/// `PUT /v1/heads/{mailbox}/{slot}`: stores a newer head; answers once it
/// is durable.
pub(crate) async fn put_head(
    State(app): State<AppState>,
    HeadSlot(key): HeadSlot,
    _: Accepting,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_bounded(&app, &headers, body, MAX_HEAD_BODY, || {
        ApiError::head_too_large(MAX_HEAD_BODY)
    })
    .await?;
    let head = verify_for(&body, &key)?;
    let seq = head.seq;
    let status = match app.store.put_head(head, app.now()).await? {
        HeadOutcome::Created => StatusCode::CREATED,
        HeadOutcome::Replaced => StatusCode::OK,
        HeadOutcome::Stale { seq, current } => {
            return Err(ApiError::stale_head(seq, encode_base64url(&current)));
        }
        HeadOutcome::MailboxFull => return Err(ApiError::mailbox_full(MAX_SLOTS_PER_MAILBOX)),
        HeadOutcome::RelayFull => {
            return Err(ApiError::heads_full(
                app.peers_with_room(),
                app.config.max_heads,
            ));
        }
    };
    let body = HeadStored {
        mailbox: key.mailbox,
        slot: key.slot,
        seq,
    };
    Ok((status, axum::Json(body)).into_response())
}

/// Heads change under the same URL: nothing in between may cache them.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /v1/heads/{mailbox}/{slot}`: the stored envelope bytes.
pub(crate) async fn get_head(
    State(app): State<AppState>,
    HeadSlot(key): HeadSlot,
) -> Result<Response, ApiError> {
    let Some(envelope) = app.store.head(&key).await? else {
        return Err(ApiError::not_found(format!(
            "this relay holds no head for slot {:?} of mailbox {}",
            key.slot.as_str(),
            key.mailbox
        )));
    };
    app.store.record_head_access(key, app.now());
    app.metrics
        .head_bytes_sent
        .fetch_add(envelope.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        envelope,
    )
        .into_response();
    Ok(no_store(response))
}

/// `GET /v1/heads/{mailbox}`: every slot's head, sorted by slot; an empty
/// list when the relay holds none.
pub(crate) async fn list_heads(
    State(app): State<AppState>,
    Path(mailbox): Path<String>,
) -> Result<Response, ApiError> {
    let mailbox = parse_mailbox(&mailbox)?;
    let rows = app.store.heads(&mailbox).await?;
    let now = app.now();
    let mut heads = Vec::with_capacity(rows.len());
    for (slot, envelope) in rows {
        heads.push(encode_base64url(&envelope));
        app.store.record_head_access(HeadKey { mailbox, slot }, now);
    }
    let body = serde_json::to_string(&HeadListing { heads }).map_err(|_| ApiError::internal())?;
    app.metrics
        .head_bytes_sent
        .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    Ok(no_store(response))
}
