//! Reading a relay's answers: statuses become errors, bodies are read
//! within a bound, and transport errors keep their causes.

use cairn_proto::ErrorCode;
use futures_util::StreamExt as _;

use crate::error::RelayError;

/// Largest head record or info document accepted.
pub(super) const MAX_SMALL_BODY: usize = 256 * 1024;

/// Sends a request; non-success statuses become [`RelayError::Refused`].
pub(super) async fn send(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, RelayError> {
    let response = request
        .send()
        .await
        .map_err(|err| RelayError::Unreachable(describe(&err)))?;
    check_status(response).await
}

pub(super) async fn check_status(
    response: reqwest::Response,
) -> Result<reqwest::Response, RelayError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = small_body(response).await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = json["error"]["code"]
        .as_str()
        .unwrap_or("unexpected_status")
        .to_owned();
    let message = json["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    Err(RelayError::Refused {
        status: status.as_u16(),
        code,
        message,
        retry_after,
    })
}

pub(super) async fn small_body(response: reqwest::Response) -> Result<Vec<u8>, RelayError> {
    bounded_body(response, MAX_SMALL_BODY).await
}

/// Reads a body, refusing to buffer more than `max` bytes.
pub(super) async fn bounded_body(
    response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, RelayError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(RelayError::Protocol(format!(
            "answer is larger than the {max} bytes expected"
        )));
    }
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| RelayError::Unreachable(describe(&err)))?;
        if out.len() + chunk.len() > max {
            return Err(RelayError::Protocol(format!(
                "answer is larger than the {max} bytes expected"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A reqwest error with its causes, which reqwest's Display leaves out.
pub(super) fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether a relay answered that it does not hold what was asked (a HEAD
/// answer has no body to carry the `not_found` code).
pub(super) fn is_absent(err: &RelayError) -> bool {
    matches!(err, RelayError::Refused { status: 404, .. })
        || err.code() == Some(ErrorCode::NotFound)
}
