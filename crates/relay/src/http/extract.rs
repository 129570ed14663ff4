//! Extractors: what a handler needs checked before it runs, declared in
//! its signature rather than repeated in its body.

use axum::extract::{FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use cairn_proto::{BlobId, Method, Slot, TokenTarget, VerifyingKey};
use std::sync::atomic::Ordering;

use super::AppState;
use super::auth::{Authorized, Expected, Required, authorize};
use super::error::ApiError;
use crate::store::HeadKey;

/// The blob a request names and the key whose token authorizes this
/// method on it: the token checked (signature, audience, expiry, nonce,
/// proof of work for uploads), and the key's request rate (peers are
/// exempt).
pub(crate) struct BlobCaller {
    pub(crate) id: BlobId,
    pub(crate) authorized: Authorized,
}

impl FromRequestParts<AppState> for BlobCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let id = parse_id(&id)?;
        let method = match parts.method.as_str() {
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            other => {
                return Err(ApiError::bad_request(format!(
                    "{other} on a blob needs no token"
                )));
            }
        };
        let authorized = authorize_client(
            app,
            &parts.headers,
            method,
            Expected::Target(TokenTarget::Blob(id)),
        )?;
        Ok(Self { id, authorized })
    }
}

/// The mailbox slot a head request names, parsed.
pub(crate) struct HeadSlot(pub(crate) HeadKey);

impl FromRequestParts<AppState> for HeadSlot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Path((mailbox, slot)) = Path::<(String, String)>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(Self(HeadKey {
            mailbox: parse_mailbox(&mailbox)?,
            slot: parse_slot(&slot)?,
        }))
    }
}

/// Present when the relay takes new data: a relay shutting down refuses
/// writes (`503`) so that clients go elsewhere at once.
pub(crate) struct Accepting;

impl FromRequestParts<AppState> for Accepting {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if app.draining.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable(
                "relay is shutting down; retry elsewhere or later",
            ));
        }
        Ok(Self)
    }
}

pub(crate) fn parse_id(text: &str) -> Result<BlobId, ApiError> {
    text.parse()
        .map_err(|e| ApiError::bad_blob_id(format!("{text:?} is not a blob id: {e}")))
}

/// Checks a client's (or peer's) token for a blob route or a batch upload,
/// and the key's request rate (peers are exempt).
pub(crate) fn authorize_client(
    app: &AppState,
    headers: &HeaderMap,
    method: Method,
    target: Expected,
) -> Result<Authorized, ApiError> {
    let relay = app.key.verifying_key();
    // Work is asked of uploads only: they are what costs the operator. A
    // claim adds no bytes, and a new device claims every copy it learns
    // of, so it is left free.
    let upload = method == Method::Put || matches!(target, Expected::AnyBatch);
    let required = Required {
        relay: &relay,
        method,
        target,
        now: app.now(),
        pow_bits: if upload { app.pow_bits() } else { 0 },
        pow_exempt: &|key| app.federation.peers.contains(key),
    };
    let authorized = authorize(headers, &required, &app.nonces)?;
    let signer = authorized.signer;
    if app.federation.peers.contains(&signer) {
        // Peers are the operator's choice; their pace is replication's.
        return Ok(authorized);
    }
    app.key_limiter
        .check(signer, std::time::Instant::now())
        .map_err(|wait| {
            ApiError::rate_limited(
                format!(
                    "this key exceeded {} requests a minute (key_requests_per_min)",
                    app.config.limits.key_requests_per_min
                ),
                wait,
            )
        })?;
    Ok(authorized)
}

pub(crate) fn parse_mailbox(text: &str) -> Result<VerifyingKey, ApiError> {
    text.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "{text:?} is not a mailbox: expected an Ed25519 key as `ed25519:<base64url>` ({e})"
        ))
    })
}

fn parse_slot(text: &str) -> Result<Slot, ApiError> {
    Slot::new(text).map_err(|e| {
        ApiError::bad_request(format!(
            "{text:?} is not a slot: expected 1-64 characters from A-Z a-z 0-9 _ - ({e})"
        ))
    })
}
