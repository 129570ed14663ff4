//! The signed relay info document at `/.well-known/cairn-relay`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cairn_proto::{RelayInfo, SignedRecord, SoftwareVersion, Timestamp};
use serde_json::json;

use super::AppState;
use super::auth::{CLOCK_SKEW_SECS, MAX_TOKEN_LIFETIME_SECS};
use super::batch::MAX_BATCH_BYTES;
use super::error::ApiError;
use super::heads::MAX_HEAD_BODY;
use crate::store::MAX_SLOTS_PER_MAILBOX;

/// The relay's current info, freshly signed.
pub(crate) fn current_info(app: &AppState) -> Result<(RelayInfo, SignedRecord), ApiError> {
    let g = app.gauges();
    let max_uploads = app.config.max_concurrent_uploads.max(1) as u64;
    let load = (g.uploads_in_flight.saturating_mul(1000) / max_uploads).min(1000);
    let info = RelayInfo {
        relay: app.key.verifying_key(),
        software: SoftwareVersion::new(crate::SOFTWARE).map_err(|_| ApiError::internal())?,
        issued_at: Timestamp(app.now()),
        capacity_total: g.capacity,
        capacity_used: g.bytes.min(g.capacity),
        capacity_free: g.free.min(g.capacity - g.bytes.min(g.capacity)),
        max_blob_size: app.config.max_blob_size,
        retention_secs: app.config.retention.as_secs(),
        limits: cairn_proto::FairShareLimits {
            pow_bits: app.pow_bits(),
            ..app.config.limits
        },
        peers: app.federation.peers.configured(),
        load_permille: u16::try_from(load).unwrap_or(1000),
        uptime_secs: app.started.elapsed().as_secs(),
    };
    let record = SignedRecord::sign(&info, &app.key).map_err(|e| {
        tracing::error!(error = %e, "relay info does not encode; check the peer list");
        ApiError::internal()
    })?;
    Ok((info, record))
}

pub(crate) async fn well_known(State(app): State<AppState>) -> Result<Response, ApiError> {
    let (info, record) = current_info(&app)?;
    let peers: Vec<_> = info
        .peers
        .iter()
        .map(|p| json!({"url": p.url.as_str(), "key": p.key.to_string()}))
        .collect();
    let body = json!({
        "record": record.to_base64url(),
        "info": {
            "relay": info.relay.to_string(),
            "software": info.software.as_str(),
            "issued_at": info.issued_at.0,
            "capacity_total": info.capacity_total,
            "capacity_used": info.capacity_used,
            "capacity_free": info.capacity_free,
            "max_blob_size": info.max_blob_size,
            "retention_secs": info.retention_secs,
            "limits": {
                "key_quota_bytes": info.limits.key_quota_bytes,
                "key_requests_per_min": info.limits.key_requests_per_min,
                "addr_requests_per_min": info.limits.addr_requests_per_min,
                "pow_bits": info.limits.pow_bits,
            },
            "peers": peers,
            "load_permille": info.load_permille,
            "uptime_secs": info.uptime_secs,
            "blobs": app.store.usage().1,
            "draining": app.draining.load(Ordering::SeqCst),
        },
        "policy": policy_json(&app),
        "federation": federation_json(&app).await,
    });
    Ok(axum::Json(body).into_response())
}

/// The thresholds behind refusals that the signed record does not carry, so
/// that a client can predict them. Unsigned on purpose: a relay that misstates
/// them can only refuse what it could refuse anyway, and a client trusts
/// nothing else because of them.
fn policy_json(app: &AppState) -> serde_json::Value {
    json!({
        "clock_skew_secs": CLOCK_SKEW_SECS,
        "max_token_lifetime_secs": MAX_TOKEN_LIFETIME_SECS,
        "max_uploads": app.config.max_concurrent_uploads,
        "max_heads": app.config.max_heads,
        "max_slots_per_mailbox": MAX_SLOTS_PER_MAILBOX,
        "max_head_bytes": MAX_HEAD_BODY,
        "max_batch_blobs": cairn_proto::MAX_BATCH_BLOBS,
        "max_batch_bytes": MAX_BATCH_BYTES,
    })
}

/// The federation view of the info document: every peer with what it last
/// said and its ledger account. Unsigned: the signed record vouches for the
/// relay's own figures; these are its opinion of others.
async fn federation_json(app: &AppState) -> serde_json::Value {
    let forwarding_records = app.store.forward_count().await.unwrap_or(0);
    let fed = &app.federation;
    let ledger = fed.ledger.lock().ok();
    let peers: Vec<_> = fed
        .peers
        .snapshot()
        .into_iter()
        .map(|p| {
            let account = ledger
                .as_ref()
                .map(|l| l.account(&p.relay.key))
                .unwrap_or_default();
            json!({
                "url": p.relay.url.as_str(),
                "key": p.relay.key.to_string(),
                "learned": p.learned,
                "reachable": p.info.is_some() && p.last_error.is_none(),
                "capacity_free": p.info.as_ref().map(|i| i.capacity_free),
                "retention_secs": p.info.as_ref().map(|i| i.retention_secs),
                "last_error": p.last_error,
                "standing": account.standing(),
                "ledger": account,
            })
        })
        .collect();
    drop(ledger);
    json!({
        "replicas": app.config.federation.replicas,
        "high_water_permille": app.config.federation.high_water_permille,
        "low_water_permille": app.config.federation.low_water_permille,
        "forwarding_records": forwarding_records,
        "peers": peers,
    })
}
