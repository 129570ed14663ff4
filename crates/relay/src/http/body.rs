//! Reading request bodies with the limits that protect the relay from
//! clients that start a request and then stall or trickle.

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::AppState;
use super::error::ApiError;

/// An upload body, chunk by chunk, abandoned with 408 when nothing
/// arrives for the idle timeout, or when, past that long, the average rate
/// is below the relay's minimum (a client sending a byte just before each
/// idle timeout would otherwise hold an upload slot for ever).
pub(super) struct BodyChunks {
    stream: axum::body::BodyDataStream,
    idle: std::time::Duration,
    min_rate: u64,
    started: tokio::time::Instant,
    received: u64,
}

impl BodyChunks {
    pub(super) fn new(app: &AppState, body: Body) -> Self {
        Self {
            stream: body.into_data_stream(),
            idle: app.config.body_idle_timeout,
            min_rate: app.config.body_min_rate,
            started: tokio::time::Instant::now(),
            received: 0,
        }
    }

    /// The next chunk, `None` at the end of the body.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        let next = tokio::time::timeout(self.idle, self.stream.next())
            .await
            .map_err(|_| {
                ApiError::timeout(format!("no upload data for {} s", self.idle.as_secs()))
            })?
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        if let Some(chunk) = &next {
            self.received += chunk.len() as u64;
            self.check_rate()?;
        }
        Ok(next)
    }

    fn check_rate(&self) -> Result<(), ApiError> {
        let elapsed = self.started.elapsed();
        if self.min_rate == 0 || elapsed <= self.idle {
            return Ok(());
        }
        let rate = self.received as f64 / elapsed.as_secs_f64();
        if rate < self.min_rate as f64 {
            return Err(ApiError::timeout(format!(
                "upload too slow: {} bytes in {} s; this relay needs at least {} bytes/s",
                self.received,
                elapsed.as_secs(),
                self.min_rate
            )));
        }
        Ok(())
    }
}

/// The body length a request declares in `Content-Length`, if it declares
/// one (a chunked body does not).
pub(super) fn declared_length(headers: &axum::http::HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))
        })
        .transpose()
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
    if declared_length(headers)?.is_some_and(|declared| declared > max as u64) {
        return Err(too_large());
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
