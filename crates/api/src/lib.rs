//! Calling a cairn relay's HTTP API: what the client library and the
//! relays' peer client share. A call ends in one of three ways: an answer
//! (read within a bound the caller sets), a refusal (the relay's status,
//! [`cairn_proto::ErrorCode`] and message, typed), or a failure to reach
//! the relay at all. The answers themselves are the types of
//! [`cairn_proto::wire`].
//!
//! Everything here reads untrusted bytes: no answer is buffered past its
//! bound, and a refusal's body is read within a small one too.
//!
//! Both sides also read the time here: [`Clock`] (the system clock, or a
//! manual one tests move forward), which token expiry, info documents and
//! retention depend on.

mod clock;
mod net;
pub use clock::Clock;
pub use net::{NetFailure, net_failure};

use bytes::{Bytes, BytesMut};
use cairn_proto::ErrorCode;
use cairn_proto::wire::{ErrorAnswer, ErrorDetail};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

/// The most of a refusal's body that is read: enough for any message a
/// relay writes, a stale head's `current` and its `peers` list. A longer
/// body is cut here, and its code read from what is left if it can be.
pub const MAX_REFUSAL: usize = 256 * 1024;

/// Why a call to a relay did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The relay could not be reached, or the connection failed midway:
    /// said in words (`why`); what the HTTP library said is kept apart, for
    /// logs and `--verbose`, never in the message.
    #[error("unreachable ({why})")]
    Unreachable {
        /// How, in plain words.
        why: NetFailure,
        /// The HTTP library's account, with the URL asked for.
        detail: String,
    },
    /// The relay refused (boxed: a refusal carries its whole answer).
    #[error(transparent)]
    Refused(Box<Refusal>),
    /// The answer was longer than the caller accepts.
    #[error("answer is larger than the {max} bytes expected")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// The answer was not the JSON it should be.
    #[error("{what} is not valid: {detail}")]
    Malformed {
        /// Which answer.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// A relay's refusal: a non-success status with its typed body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay answered {status} {code}: {message}")]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The error code as sent (see [`Refusal::code`]); `unexpected_status`
    /// when the body carries none.
    pub code: String,
    /// The relay's message, or the start of whatever body it sent.
    pub message: String,
    /// `Retry-After`, in seconds, when the relay sent one.
    pub retry_after: Option<u64>,
    /// The whole refusal, when its body was one.
    pub answer: Option<ErrorAnswer>,
}

impl Refusal {
    /// The error code, if it is one this build knows.
    pub fn code(&self) -> Option<ErrorCode> {
        self.code.parse().ok()
    }
}

/// A refusal's body read for its code and message alone.
#[derive(serde::Deserialize)]
struct CodeOnly {
    error: ErrorDetail,
}

impl CallError {
    /// A request that got no answer, or whose answer broke off.
    pub fn unreachable(err: &reqwest::Error) -> Self {
        Self::Unreachable {
            why: net_failure(err),
            detail: describe(err),
        }
    }
}

/// Sends `request`; a non-success status becomes [`CallError::Refused`].
///
/// # Errors
///
/// [`CallError::Unreachable`] or [`CallError::Refused`].
pub async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
    let response = request
        .send()
        .await
        .map_err(|err| CallError::unreachable(&err))?;
    check_status(response).await
}

/// Passes a success through; turns anything else into a [`Refusal`].
///
/// # Errors
///
/// [`CallError::Refused`] for a non-success status.
pub async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, CallError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(CallError::Refused(Box::new(refusal(response).await)))
}

/// Reads a refusal's status, `Retry-After` and body.
pub async fn refusal(response: reqwest::Response) -> Refusal {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = read_slice(response, 0, MAX_REFUSAL)
        .await
        .unwrap_or_default();
    let answer = serde_json::from_slice::<ErrorAnswer>(&body).ok();
    // The code and message stand on their own: an extra field this build
    // cannot read does not hide them.
    let detail = match &answer {
        Some(answer) => Some(answer.error.clone()),
        None => serde_json::from_slice::<CodeOnly>(&body)
            .ok()
            .map(|only| only.error),
    };
    let (code, message) = match detail {
        Some(detail) => (detail.code, detail.message),
        None => (
            "unexpected_status".to_owned(),
            String::from_utf8_lossy(&body).chars().take(200).collect(),
        ),
    };
    Refusal {
        status,
        code,
        message,
        retry_after,
        answer,
    }
}

/// Reads a body, refusing to buffer more than `max` bytes: a declared
/// length over the bound is refused before anything is read.
///
/// # Errors
///
/// [`CallError::TooLarge`], or [`CallError::Unreachable`] if the
/// connection fails midway.
pub async fn read_bounded(response: reqwest::Response, max: usize) -> Result<Bytes, CallError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(CallError::TooLarge { max });
    }
    // Sized once from the announced length (within `max`, checked above):
    // a large body is then never copied into a doubled buffer.
    let announced = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    let mut out = BytesMut::with_capacity(announced);
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| CallError::unreachable(&err))?;
        if out.len() + chunk.len() > max {
            return Err(CallError::TooLarge { max });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Reads `n` bytes of a body from offset `skip` (fewer if it ends first),
/// keeping nothing before `skip` and reading nothing after the slice.
///
/// # Errors
///
/// [`CallError::Unreachable`] if the connection fails midway.
pub async fn read_slice(
    response: reqwest::Response,
    skip: usize,
    n: usize,
) -> Result<Bytes, CallError> {
    let mut out = BytesMut::new();
    let mut to_skip = skip;
    let mut stream = response.bytes_stream();
    while out.len() < n {
        let Some(chunk) = stream.next().await else {
            break;
        };
        let chunk = chunk.map_err(|err| CallError::unreachable(&err))?;
        let skipped = chunk.len().min(to_skip);
        to_skip -= skipped;
        let chunk = &chunk[skipped..];
        let room = n - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(out.freeze())
}

/// Reads a JSON answer of type `T` within `max` bytes.
///
/// # Errors
///
/// As [`read_bounded`], and [`CallError::Malformed`] naming `what` if the
/// body is not a `T`.
pub async fn read_json<T: DeserializeOwned>(
    response: reqwest::Response,
    max: usize,
    what: &'static str,
) -> Result<T, CallError> {
    let body = read_bounded(response, max).await?;
    serde_json::from_slice(&body).map_err(|err| CallError::Malformed {
        what,
        detail: err.to_string(),
    })
}

/// A reqwest error with its causes, which reqwest's `Display` leaves out.
pub fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse as _;
    use cairn_proto::wire::BlobClaimed;

    use super::*;

    /// A client (rustls needs a process-wide provider once the workspace
    /// enables it).
    fn http() -> reqwest::Client {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    /// A relay on loopback answering every request with `answer`.
    async fn relay(answer: fn() -> axum::response::Response) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move || async move { answer() });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_refusal_keeps_its_status_code_message_and_wait() {
        let url = relay(|| {
            let body = serde_json::to_vec(&ErrorAnswer::new(ErrorCode::RateLimited, "slow down"));
            let mut response = (StatusCode::TOO_MANY_REQUESTS, body.unwrap()).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(7));
            response
        })
        .await;
        let err = send(http().get(&url)).await.unwrap_err();
        let CallError::Refused(refusal) = err else {
            panic!("{err:?}");
        };
        assert_eq!(refusal.status, 429);
        assert_eq!(refusal.code(), Some(ErrorCode::RateLimited));
        assert_eq!(refusal.message, "slow down");
        assert_eq!(refusal.retry_after, Some(7));
    }

    /// A field this build cannot read (a peer key that does not parse)
    /// does not hide the code and message beside it.
    #[tokio::test]
    async fn a_refusal_keeps_its_code_when_an_extra_field_is_unreadable() {
        let url = relay(|| {
            let body = r#"{"error":{"code":"relay_full","message":"full"},"peers":[{"url":"x","key":"nope","capacity_free":1}]}"#;
            (StatusCode::INSUFFICIENT_STORAGE, body).into_response()
        })
        .await;
        let err = send(http().get(&url)).await.unwrap_err();
        let CallError::Refused(refusal) = err else {
            panic!("{err:?}");
        };
        assert_eq!(refusal.code(), Some(ErrorCode::RelayFull));
        assert_eq!(refusal.message, "full");
        assert!(refusal.answer.is_none());
    }

    #[tokio::test]
    async fn a_refusal_without_a_json_body_is_still_a_refusal() {
        let url = relay(|| (StatusCode::BAD_GATEWAY, "upstream fell over").into_response()).await;
        let err = send(http().get(&url)).await.unwrap_err();
        let CallError::Refused(refusal) = err else {
            panic!("{err:?}");
        };
        assert_eq!((refusal.status, refusal.code()), (502, None));
        assert_eq!(refusal.message, "upstream fell over");
    }

    /// A body over the bound is refused whether or not its length is
    /// declared, and nothing past the bound is kept.
    #[tokio::test]
    async fn an_answer_past_its_bound_is_refused() {
        let declared = relay(|| vec![b'x'; 10_000].into_response()).await;
        let response = send(http().get(&declared)).await.unwrap();
        let err = read_bounded(response, 9_999).await.unwrap_err();
        assert!(matches!(err, CallError::TooLarge { max: 9_999 }), "{err:?}");
        let streamed = relay(|| {
            let pieces = futures_util::stream::iter(
                (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 1_000]))),
            );
            axum::body::Body::from_stream(pieces).into_response()
        })
        .await;
        let response = send(http().get(&streamed)).await.unwrap();
        assert!(response.content_length().is_none());
        let err = read_bounded(response, 9_999).await.unwrap_err();
        assert!(matches!(err, CallError::TooLarge { .. }), "{err:?}");
        let response = send(http().get(&streamed)).await.unwrap();
        assert_eq!(read_bounded(response, 10_000).await.unwrap().len(), 10_000);
        let response = send(http().get(&streamed)).await.unwrap();
        assert_eq!(read_slice(response, 0, 2_500).await.unwrap().len(), 2_500);
        let response = send(http().get(&declared)).await.unwrap();
        assert_eq!(read_slice(response, 0, 20_000).await.unwrap().len(), 10_000);
        // A slice across the stream's pieces: bytes 2,500..4,000.
        let response = send(http().get(&streamed)).await.unwrap();
        let slice = read_slice(response, 2_500, 1_500).await.unwrap();
        assert_eq!(slice.len(), 1_500);
        let response = send(http().get(&declared)).await.unwrap();
        assert!(read_slice(response, 20_000, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_answer_of_the_wrong_shape_is_malformed() {
        let url = relay(|| {
            axum::Json(serde_json::json!({"id": "nope", "claimed": true})).into_response()
        })
        .await;
        let response = send(http().get(&url)).await.unwrap();
        let err = read_json::<BlobClaimed>(response, 1024, "claim answer")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CallError::Malformed {
                    what: "claim answer",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
