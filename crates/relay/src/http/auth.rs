//! Checking `Authorization: Cairn <token>` (docs/PROTOCOL.md §7.2).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, header};
use cairn_proto::{AuthToken, Method, Nonce, SignedRecord, TokenTarget, VerifyingKey};

use super::error::ApiError;
use crate::store::SpentToken;

/// Longest token lifetime accepted: `expires_at` at most this far ahead.
pub(crate) const MAX_TOKEN_LIFETIME_SECS: u64 = 600;
/// Clock skew tolerated between client and relay, each way.
pub(crate) const CLOCK_SKEW_SECS: u64 = 60;

/// Nonces this process holds: those of requests in progress, and of
/// requests that took effect, until their tokens expire (the lifetime bound
/// keeps the set finite). The durable record of spent tokens is the
/// store's, written with each change; this is what refuses a second use
/// while the first is still running, and a replay before it reaches the
/// store.
#[derive(Clone, Debug, Default)]
pub(crate) struct NonceCache {
    seen: Arc<Mutex<HashMap<Nonce, u64>>>,
}

impl NonceCache {
    /// Holds `nonce` for a request until `expires_at`; `None` if it is
    /// held already.
    fn hold(&self, nonce: Nonce, expires_at: u64) -> Option<NonceHold> {
        let mut seen = self.seen.lock().ok()?;
        match seen.entry(nonce) {
            Entry::Occupied(_) => None,
            Entry::Vacant(slot) => {
                slot.insert(expires_at);
                Some(NonceHold {
                    cache: self.clone(),
                    nonce,
                    kept: false,
                })
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

/// A request's nonce, held while it runs. Dropped without [`Self::keep`]
/// (the request was refused without effect), the nonce is released, so the
/// client may retry with the same token (docs/PROTOCOL.md §7.2).
#[derive(Debug)]
pub(crate) struct NonceHold {
    cache: NonceCache,
    nonce: Nonce,
    kept: bool,
}

impl NonceHold {
    /// The request took effect: the nonce stays refused until its token
    /// expires.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for NonceHold {
    fn drop(&mut self) {
        if !self.kept
            && let Ok(mut seen) = self.cache.seen.lock()
        {
            seen.remove(&self.nonce);
        }
    }
}

/// What a request must be authorized for.
pub(crate) struct Required<'a> {
    pub(crate) relay: &'a VerifyingKey,
    pub(crate) method: Method,
    pub(crate) target: Expected,
    pub(crate) now: u64,
    pub(crate) pow_bits: u8,
    /// Signers excused from proof of work (peer relays).
    pub(crate) pow_exempt: &'a dyn Fn(&VerifyingKey) -> bool,
}

/// The target a request's token must name.
pub(crate) enum Expected {
    /// Exactly this one.
    Target(TokenTarget),
    /// Some batch: the handler compares the digest with the batch's header
    /// once it has read it ([`Authorized::target`]).
    AnyBatch,
}

impl Expected {
    fn admits(&self, target: &TokenTarget) -> bool {
        match self {
            Self::Target(expected) => expected == target,
            Self::AnyBatch => matches!(target, TokenTarget::Batch(_)),
        }
    }
}

/// A request whose token checked out.
pub(crate) struct Authorized {
    /// The key acting (and, for uploads, the owner).
    pub(crate) signer: VerifyingKey,
    /// The token, for the store to record as spent with the change.
    pub(crate) token: SpentToken,
    /// The nonce, held while the request runs.
    pub(crate) nonce: NonceHold,
    /// What the token names.
    pub(crate) target: TokenTarget,
}

/// The token in an `Authorization` value: the scheme is matched without
/// regard to case and may be followed by any run of spaces and tabs (RFC
/// 9110 §11.1, §11.4).
fn token_text(value: &str) -> Option<&str> {
    const WHITESPACE: [char; 2] = [' ', '\t'];
    let (scheme, token) = value.trim_matches(WHITESPACE).split_once(WHITESPACE)?;
    let token = token.trim_start_matches(WHITESPACE);
    (scheme.eq_ignore_ascii_case("Cairn") && !token.is_empty()).then_some(token)
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
    let text =
        value.to_str().ok().and_then(token_text).ok_or_else(|| {
            ApiError::bad_token("Authorization must be `Cairn <base64url token>`")
        })?;
    let envelope = SignedRecord::from_base64url(text)
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
    if !required.target.admits(&token.target) {
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
    let nonce = nonces
        .hold(token.nonce, expires)
        .ok_or_else(ApiError::token_replayed)?;
    Ok(Authorized {
        signer,
        token: SpentToken {
            nonce: token.nonce.0,
            expires_at: expires,
        },
        nonce,
        target: token.target.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::{NonceCache, token_text};
    use cairn_proto::Nonce;

    #[test]
    fn a_nonce_is_held_while_its_request_runs_and_kept_only_if_it_took_effect() {
        let cache = NonceCache::default();
        let (refused, taken) = (Nonce([1; 16]), Nonce([2; 16]));
        let hold = cache.hold(refused, 100).expect("a fresh nonce");
        assert!(
            cache.hold(refused, 100).is_none(),
            "a second use while the first runs"
        );
        drop(hold);
        let hold = cache.hold(refused, 100).expect("released by a refusal");
        drop(hold);

        cache.hold(taken, 100).expect("a fresh nonce").keep();
        assert!(cache.hold(taken, 100).is_none(), "kept after taking effect");
        // Forgotten once its token can no longer be accepted.
        cache.prune(100 + super::CLOCK_SKEW_SECS + 1);
        assert!(cache.hold(taken, 100).is_some());
    }

    #[test]
    fn the_scheme_is_matched_without_case_and_with_any_spacing() {
        for value in [
            "Cairn abc",
            "cairn abc",
            "CAIRN\tabc",
            "  Cairn   abc  ",
            "cAiRn \t abc",
        ] {
            assert_eq!(token_text(value), Some("abc"), "{value:?}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_refused() {
        for value in [
            "Bearer abc",
            "Cairnabc",
            "Cairn",
            "Cairn   ",
            "",
            "Cairn_ abc",
        ] {
            assert_eq!(token_text(value), None, "{value:?}");
        }
    }
}
