//! `GET /v1/blobs/{id}/proof?chunks=…`: random chunks of a blob with a
//! BLAKE3 slice proof against its id (docs/PROTOCOL.md §7.9), so a client
//! can check that this relay holds the bytes without downloading them.

use std::sync::atomic::Ordering;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cairn_proto::BlobId;
use cairn_proto::audit::{ChunkRequest, prove};

use super::AppState;
use super::blobs::forwarded;
use super::error::ApiError;
use super::extract::parse_id;
use crate::store::BlobBody;

/// The chunk list from `chunks=…` in the query.
fn chunk_list(query: Option<&str>) -> Result<&str, ApiError> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("chunks="))
        .ok_or_else(|| {
            ApiError::bad_request("name the chunks to prove: ?chunks=<i>,<j>,… (PROTOCOL.md §7.9)")
        })
}

pub(crate) async fn get_proof(
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let list = chunk_list(query.as_deref())?.to_owned();
    // Proving hashes the whole blob: at most a few at once, so audits
    // cannot crowd out storing and serving.
    let _permit = app.proof_slots.try_acquire().map_err(|_| {
        ApiError::unavailable("too many audits in progress on this relay; retry shortly")
            .retry_after(1)
    })?;
    let Some(body) = app.store.open_body(&id).await? else {
        return forwarded(
            &app,
            id,
            &format!("/proof?chunks={}", chunk_list(query.as_deref())?),
        )
        .await;
    };
    let body = body.localize(app.store.temp_path()?).await?;
    let proof = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let size = body.size();
        let request = ChunkRequest::parse(&list, size)
            .map_err(|e| ApiError::bad_request(format!("chunks={list}: {e}")))?;
        let proof = match &body {
            BlobBody::Inline(bytes) => prove(&request, |offset, buf| {
                let start = usize::try_from(offset).map_err(|_| ())?;
                let piece = bytes.get(start..start + buf.len()).ok_or(())?;
                buf.copy_from_slice(piece);
                Ok::<_, ()>(())
            })
            .map_err(|()| ApiError::internal())?,
            BlobBody::File { file, .. } => prove(&request, |offset, buf| {
                use std::os::unix::fs::FileExt as _;
                file.read_exact_at(buf, offset)
            })
            .map_err(|e| ApiError::from(crate::store::StoreError::io("read blob", e)))?,
            // `localize` leaves no object behind.
            BlobBody::Object { .. } => return Err(ApiError::internal()),
        };
        Ok(proof)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    answer(&app, id, proof)
}

fn answer(app: &AppState, id: BlobId, proof: Vec<u8>) -> Result<Response, ApiError> {
    // An audit shows the data is wanted: an access, like a read.
    app.store.record_access(id, app.now());
    app.metrics.audit_proofs.fetch_add(1, Ordering::Relaxed);
    app.metrics
        .bytes_sent
        .fetch_add(proof.len() as u64, Ordering::Relaxed);
    let mut response = proof.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}
