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
use super::blobs::{forwarded, parse_id};
use super::error::ApiError;
use crate::store::index::Location;

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

/// Where a held blob's bytes are, for the prover.
enum Held {
    Inline(Vec<u8>),
    File(std::fs::File),
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
    let reader = app.store.reader().clone();
    let path = app.store.path(&id);
    let proved = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, ApiError> {
        let held = match reader.locate(&id)? {
            None => return Ok(None),
            Some(Location::Inline(bytes)) => Held::Inline(bytes),
            Some(Location::File) => match std::fs::File::open(&path) {
                Ok(file) => Held::File(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(crate::store::StoreError::io("open blob", e).into()),
            },
        };
        let size = match &held {
            Held::Inline(bytes) => bytes.len() as u64,
            Held::File(file) => file
                .metadata()
                .map_err(|e| crate::store::StoreError::io("read blob size", e))?
                .len(),
        };
        let request = ChunkRequest::parse(&list, size)
            .map_err(|e| ApiError::bad_request(format!("chunks={list}: {e}")))?;
        let proof = match &held {
            Held::Inline(bytes) => prove(&request, |offset, buf| {
                let start = usize::try_from(offset).map_err(|_| ())?;
                let piece = bytes.get(start..start + buf.len()).ok_or(())?;
                buf.copy_from_slice(piece);
                Ok::<_, ()>(())
            })
            .map_err(|()| ApiError::internal())?,
            Held::File(file) => prove(&request, |offset, buf| {
                use std::os::unix::fs::FileExt as _;
                file.read_exact_at(buf, offset)
            })
            .map_err(|e| ApiError::from(crate::store::StoreError::io("read blob", e)))?,
        };
        Ok(Some(proof))
    })
    .await
    .map_err(|_| ApiError::internal())??;
    let Some(proof) = proved else {
        return forwarded(
            &app,
            id,
            &format!("/proof?chunks={}", chunk_list(query.as_deref())?),
        )
        .await;
    };
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
