//! `/v1/federation/*`: the endpoints only peer relays may use
//! (docs/PROTOCOL.md §7.8).

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cairn_proto::reconcile::{MAX_MESSAGE_LEN, Reconciler};
use cairn_proto::{Method, RequestPath, TokenTarget, VerifyingKey};

use super::AppState;
use super::auth::{Expected, Required, authorize};
use super::body::read_bounded;
use super::error::ApiError;
use cairn_proto::wire;

/// Checks that the request is signed by a peer for `path`, and returns the
/// peer's key.
fn authorize_peer(
    app: &AppState,
    headers: &HeaderMap,
    method: Method,
    path: &str,
) -> Result<VerifyingKey, ApiError> {
    let relay = app.key.verifying_key();
    let target = RequestPath::new(path).map_err(|_| ApiError::internal())?;
    let required = Required {
        relay: &relay,
        method,
        target: Expected::Target(TokenTarget::Path(target)),
        now: app.now(),
        pow_bits: 0,
        pow_exempt: &|_| true,
    };
    let authorized = authorize(headers, &required, &app.nonces)?;
    let signer = authorized.signer;
    if !app.federation.peers.contains(&signer) {
        return Err(ApiError::not_a_peer(&signer));
    }
    // Federation requests change nothing: their nonces are kept in this
    // process's memory only, until their tokens expire.
    authorized.nonce.keep();
    Ok(signer)
}

/// `POST /v1/federation/reconcile`: answers one reconciliation message
/// about the replicas this relay holds from the asking peer.
pub(crate) async fn reconcile(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let peer = authorize_peer(&app, &headers, Method::Post, wire::route::RECONCILE)?;
    let message = read_bounded(&app, &headers, body, MAX_MESSAGE_LEN, || {
        ApiError::bad_request(format!(
            "reconciliation messages are at most {MAX_MESSAGE_LEN} bytes"
        ))
    })
    .await?;
    // A version above this relay's is refused as a relay that does not
    // know it refuses it; the peer then asks again in an older one.
    let newest = app.config.federation.reconcile_version;
    if let Some(&version) = message.first()
        && version > newest
    {
        return Err(ApiError::bad_request(format!(
            "reconciliation message refused: version {version} is not supported (this relay \
             answers up to version {newest})"
        )));
    }
    let metrics = &app.federation.metrics;
    metrics
        .reconcile_bytes_received
        .fetch_add(message.len() as u64, Ordering::Relaxed);
    let held = app
        .store
        .ids_from(crate::store::SourceKey::peer(&peer))
        .await?;
    let answer = tokio::task::spawn_blocking(move || {
        let reconciler = Reconciler::new(&held).map_err(|e| {
            crate::store::StoreError::Failed(format!("the index's source rows are unsorted: {e}"))
        })?;
        Ok::<_, crate::store::StoreError>(reconciler.respond(&message))
    })
    .await
    .map_err(|_| ApiError::internal())??
    .map_err(|e| ApiError::bad_request(format!("reconciliation message refused: {e}")))?;
    metrics
        .reconcile_bytes_sent
        .fetch_add(answer.len() as u64, Ordering::Relaxed);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        answer,
    )
        .into_response())
}
