//! Reading a relay's answers through [`cairn_api`]: statuses become
//! [`RelayError::Refused`], bodies are read within a bound, and answers
//! are the typed [`cairn_proto::wire`] forms.

use cairn_api::CallError;
use serde::de::DeserializeOwned;

use crate::error::RelayError;

/// Largest head record or info document accepted.
pub(super) const MAX_SMALL_BODY: usize = 256 * 1024;

impl From<CallError> for RelayError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::Unreachable(detail) => Self::Unreachable(detail),
            CallError::Refused(refusal) => {
                let cairn_api::Refusal {
                    status,
                    code,
                    message,
                    retry_after,
                    ..
                } = *refusal;
                Self::Refused {
                    status,
                    code,
                    message,
                    retry_after,
                }
            }
            err @ (CallError::TooLarge { .. } | CallError::Malformed { .. }) => {
                Self::Protocol(err.to_string())
            }
        }
    }
}

/// Sends a request; non-success statuses become [`RelayError::Refused`].
pub(super) async fn send(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, RelayError> {
    Ok(cairn_api::send(request).await?)
}

pub(super) async fn check_status(
    response: reqwest::Response,
) -> Result<reqwest::Response, RelayError> {
    Ok(cairn_api::check_status(response).await?)
}

pub(super) async fn small_body(response: reqwest::Response) -> Result<bytes::Bytes, RelayError> {
    bounded_body(response, MAX_SMALL_BODY).await
}

/// Reads a body, refusing to buffer more than `max` bytes.
pub(super) async fn bounded_body(
    response: reqwest::Response,
    max: usize,
) -> Result<bytes::Bytes, RelayError> {
    Ok(cairn_api::read_bounded(response, max).await?)
}

/// Reads a JSON answer within `max` bytes.
pub(super) async fn json_answer<T: DeserializeOwned>(
    response: reqwest::Response,
    max: usize,
    what: &'static str,
) -> Result<T, RelayError> {
    Ok(cairn_api::read_json(response, max, what).await?)
}

pub(super) use cairn_api::describe;
