//! Reading request bodies with the idle timeout that protects the relay
//! from clients that start a request and then stall.

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::AppState;
use super::error::ApiError;

/// An upload body, chunk by chunk, with the idle timeout that protects the
/// relay from clients that start an upload and then stall.
pub(super) struct BodyChunks {
    stream: axum::body::BodyDataStream,
    idle: std::time::Duration,
}

impl BodyChunks {
    pub(super) fn new(app: &AppState, body: Body) -> Self {
        Self {
            stream: body.into_data_stream(),
            idle: app.config.body_idle_timeout,
        }
    }

    /// The next chunk, `None` at the end of the body.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        let next = tokio::time::timeout(self.idle, self.stream.next())
            .await
            .map_err(|_| {
                ApiError::timeout(format!("no upload data for {} s", self.idle.as_secs()))
            })?;
        next.transpose()
            .map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))
    }
}

/// Receives a whole body of at most `max` bytes into memory: a declared
/// `Content-Length` above `max` is refused before any byte is read, and
/// reading stops at the first chunk that takes the body past `max`.
pub(super) async fn read_bounded(
    app: &AppState,
    headers: &axum::http::HeaderMap,
    body: Body,
    max: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    if let Some(declared) = headers.get(axum::http::header::CONTENT_LENGTH) {
        let declared = declared
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?;
        if declared > max as u64 {
            return Err(too_large());
        }
    }
    let mut data = bytes::BytesMut::new();
    let mut chunks = BodyChunks::new(app, body);
    while let Some(chunk) = chunks.next().await? {
        if data.len() + chunk.len() > max {
            return Err(too_large());
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data.freeze())
}
