//! The one error type handlers return, and the only place errors become
//! HTTP statuses and JSON bodies. Codes are the stable ones of
//! docs/PROTOCOL.md §7.1.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_proto::ErrorCode;
use cairn_proto::wire::{ErrorAnswer, PeerWithRoom};

use crate::store::StoreError;

/// An API error: status, stable code, message for people, and the extra
/// fields of the refusal's [`ErrorAnswer`] (`peers` for `relay_full`,
/// `current` for `stale_head`).
#[derive(Debug)]
pub(crate) struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    answer: ErrorAnswer,
    retry_after: Option<u64>,
    /// For 416: the blob's size, sent as `Content-Range: bytes */size`.
    unsatisfied_size: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            status,
            answer: ErrorAnswer::new(code, message),
            retry_after: None,
            unsatisfied_size: None,
        }))
    }

    fn with_answer(mut self, fill: impl FnOnce(&mut ErrorAnswer)) -> Self {
        fill(&mut self.0.answer);
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
    pub(crate) fn bad_blob_id(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadBlobId, message)
    }
    pub(crate) fn bad_record(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRecord, message)
    }
    pub(crate) fn bad_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::BadToken, message)
    }
    pub(crate) fn token_expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired, message)
    }
    pub(crate) fn token_lifetime(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenLifetime, message)
    }
    pub(crate) fn token_replayed() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::TokenReplayed,
            "this token's nonce was already used; sign a fresh token",
        )
    }
    pub(crate) fn wrong_audience() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::WrongAudience,
            "the token is for another relay",
        )
    }
    pub(crate) fn wrong_method(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::WrongMethod, message)
    }
    pub(crate) fn wrong_target(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::WrongTarget, message)
    }
    pub(crate) fn pow_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::PowRequired, message)
    }
    pub(crate) fn not_owner() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::NotOwner,
            "only the blob's owners (keys that uploaded or claimed it) may delete it",
        )
    }
    pub(crate) fn too_many_owners() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorCode::TooManyOwners,
            format!(
                "this blob has {} owners already, the most a blob may have",
                crate::store::MAX_OWNERS
            ),
        )
    }
    pub(crate) fn not_a_peer(key: &cairn_proto::VerifyingKey) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::NotAPeer,
            format!(
                "{key} is not on this relay's peer list; federation requests come from peers only"
            ),
        )
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "method not supported on this path",
        )
    }
    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::Timeout, message)
    }
    pub(crate) fn head_too_large(max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("a head record's envelope is at most {max} bytes"),
        )
    }
    /// `current` is the stored head's envelope in base64url.
    pub(crate) fn stale_head(seq: u64, current: String) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorCode::StaleHead,
            format!(
                "the stored head has seq {seq}; a new head needs a higher one (the stored record is in `current`)"
            ),
        )
        .with_answer(|answer| answer.current = Some(current))
    }
    pub(crate) fn too_large(max: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("blob exceeds this relay's max_blob_size of {max} bytes"),
        )
    }
    pub(crate) fn bad_range(size: u64) -> Self {
        let mut e = Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BadRange,
            format!("range not satisfiable for a blob of {size} bytes (one range only)"),
        );
        e.0.unsatisfied_size = Some(size);
        e
    }
    pub(crate) fn hash_mismatch(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::HashMismatch,
            message,
        )
    }
    pub(crate) fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            message,
        );
        e.0.retry_after = Some(retry_after_secs);
        e
    }
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.0.retry_after = Some(secs);
        self
    }
    pub(crate) fn relay_full(peers: Vec<PeerWithRoom>) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::RelayFull,
            "this relay has no room for the blob; try a peer listed in `peers`",
        )
        .with_answer(|answer| answer.peers = Some(peers))
    }
    /// No room for a head in a new slot; heads of existing slots can
    /// always be updated.
    pub(crate) fn heads_full(peers: Vec<PeerWithRoom>, max: u64) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::RelayFull,
            format!(
                "this relay keeps at most {max} heads and has no room for a new slot; try a peer listed in `peers`"
            ),
        )
        .with_answer(|answer| answer.peers = Some(peers))
    }
    pub(crate) fn mailbox_full(max: usize) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::QuotaExceeded,
            format!("this mailbox already has {max} slots, the most a relay keeps per mailbox"),
        )
    }
    pub(crate) fn quota_exceeded(quota: u64) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::QuotaExceeded,
            format!("this key's storage quota of {quota} bytes (key_quota_bytes) is used up"),
        )
    }
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "the relay hit an internal error; its operator's log has the details",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        // Logged once here; the client gets no internal detail.
        tracing::error!(error = %err, "store error");
        match err {
            // A scale-out backend is away: nothing was stored or changed,
            // and the same request succeeds once it is back.
            StoreError::Unavailable { backend, .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::BackendUnavailable,
                format!(
                    "this relay's storage ({backend}) cannot be reached right now; nothing was \
                     changed; retry shortly or use another relay"
                ),
            )
            .retry_after(5),
            _ => Self::internal(),
        }
    }
}

impl ApiError {
    /// The status and the body this error answers with.
    pub(super) fn status_and_answer(self) -> (StatusCode, ErrorAnswer) {
        let this = *self.0;
        (this.status, this.answer)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = *self.0;
        let mut response = (this.status, axum::Json(this.answer)).into_response();
        if let Some(secs) = this.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(size) = this.unsatisfied_size
            && let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}
