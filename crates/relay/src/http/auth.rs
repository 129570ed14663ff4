//! Checking `Authorization: Cairn <token>` (docs/PROTOCOL.md §7.2).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, header};
use cairn_proto::{AuthToken, Method, Nonce, SignedRecord, TokenTarget, VerifyingKey};

use super::error::ApiError;
use crate::store::SpentToken;

/// Longest token lifetime accepted: `expires_at` at most this far ahead.
pub(crate) const MAX_TOKEN_LIFETIME_SECS: u64 = 600;
/// Clock skew tolerated between client and relay, each way.
pub(crate) const CLOCK_SKEW_SECS: u64 = 60;

/// Nonces of tokens that have not yet expired. A nonce can only be replayed
/// while its token is valid, so entries are dropped once it expires; the
/// lifetime bound keeps the set finite.
#[derive(Debug, Default)]
pub(crate) struct NonceCache {
    seen: Mutex<HashMap<Nonce, u64>>,
}

impl NonceCache {
    /// Records `nonce` as used until `expires_at`; false if already used.
    fn insert(&self, nonce: Nonce, expires_at: u64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        match seen.entry(nonce) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(expires_at);
                true
            }
        }
    }

    /// Forgets nonces whose tokens expired before `now - skew`.
    pub(crate) fn prune(&self, now: u64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|_, expires| expires.saturating_add(CLOCK_SKEW_SECS) >= now);
        }
    }
}

/// What a request must be authorized for.
pub(crate) struct Required<'a> {
    pub(crate) relay: &'a VerifyingKey,
    pub(crate) method: Method,
    pub(crate) target: TokenTarget,
    pub(crate) now: u64,
    pub(crate) pow_bits: u8,
    /// Signers excused from proof of work (peer relays).
    pub(crate) pow_exempt: &'a dyn Fn(&VerifyingKey) -> bool,
}

/// A request whose token checked out.
pub(crate) struct Authorized {
    /// The key acting (and, for uploads, the owner).
    pub(crate) signer: VerifyingKey,
    /// The token, for requests that must record it durably.
    pub(crate) token: SpentToken,
}

/// Checks the request's token.
pub(crate) fn authorize(
    headers: &HeaderMap,
    required: &Required<'_>,
    nonces: &NonceCache,
) -> Result<Authorized, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::bad_token("missing Authorization header; sign an auth-token (PROTOCOL.md §7.2)")
    })?;
    let text = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Cairn "))
        .ok_or_else(|| ApiError::bad_token("Authorization must be `Cairn <base64url token>`"))?;
    let envelope = SignedRecord::from_base64url(text.trim())
        .map_err(|e| ApiError::bad_token(format!("token does not decode: {e}")))?;
    let verified = envelope
        .verify::<AuthToken>()
        .map_err(|e| ApiError::bad_token(format!("token does not verify: {e}")))?;
    let token = verified.record();
    let signer = *verified.signer();

    if &token.audience != required.relay {
        return Err(ApiError::wrong_audience());
    }
    if token.method != required.method {
        return Err(ApiError::wrong_method(format!(
            "token authorizes {}, request is {}",
            token.method, required.method
        )));
    }
    if token.target != required.target {
        return Err(ApiError::wrong_target(
            "token authorizes another blob or path",
        ));
    }
    let expires = token.expires_at.0;
    if expires.saturating_add(CLOCK_SKEW_SECS) < required.now {
        return Err(ApiError::token_expired(format!(
            "token expired at {expires} (relay time {})",
            required.now
        )));
    }
    let latest = required
        .now
        .saturating_add(MAX_TOKEN_LIFETIME_SECS + CLOCK_SKEW_SECS);
    if expires > latest {
        return Err(ApiError::token_lifetime(format!(
            "token expires at {expires}; this relay accepts at most {MAX_TOKEN_LIFETIME_SECS} s ahead"
        )));
    }
    if required.pow_bits > 0 && !(required.pow_exempt)(&signer) {
        let bits = AuthToken::payload_stamp_bits(&signer, envelope.payload());
        if bits < u32::from(required.pow_bits) {
            return Err(ApiError::pow_required(format!(
                "token stamp carries {bits} bits of work; this relay requires {} (pow_bits)",
                required.pow_bits
            )));
        }
    }
    if !nonces.insert(token.nonce, expires) {
        return Err(ApiError::token_replayed());
    }
    Ok(Authorized {
        signer,
        token: SpentToken {
            nonce: token.nonce.0,
            expires_at: expires,
        },
    })
}
