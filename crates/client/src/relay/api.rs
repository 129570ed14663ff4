//! One relay's HTTP API (PROTOCOL.md §7), from the client's side.
//!
//! Everything a relay says is checked: its info document's signature and
//! key, every downloaded byte against the blob id, every head's signature.
//! A relay that breaks the protocol gets a [`RelayError`] naming how.
//!
//! [`RelayClient`] and what every call needs (the HTTP client, the info
//! document, tokens) are here; the calls are in `blobs` (upload, download,
//! probe, audit, delete, claim) and `heads` (mailbox heads), transfer
//! redirects are followed in `redirect`, and answers are read in `answer`.

mod answer;
mod blobs;
mod heads;
mod redirect;
#[cfg(test)]
mod tests;

use std::sync::Once;
use std::time::Duration;

use cairn_api::Clock;
use cairn_proto::{
    AuthToken, BlobId, Method, Nonce, RelayInfo, SignedRecord, SigningKey, Timestamp, TokenTarget,
    Verified, VerifyingKey,
};

use crate::error::RelayError;
use answer::{MAX_SMALL_BODY, json_answer, send};
pub use blobs::{AuditOutcome, Claimed, Deleted, Held};
use cairn_proto::wire::{self, InfoDocument};
pub use heads::HeadWrite;
pub use redirect::RedirectPolicy;

/// How long upload and delete tokens stay valid (relays accept up to 600 s).
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Oldest (or most future-dated) info document believed.
const MAX_INFO_AGE: Duration = Duration::from_secs(3600);
/// Most proof-of-work attempts before giving up (2^28 hashes, seconds).
const MAX_STAMP_ATTEMPTS: u64 = 1 << 28;

/// How long a relay may go without sending a byte before it is given up
/// (and the next relay tried): 60 s, or `CAIRN_READ_TIMEOUT_SECS` (1–3600)
/// for very slow links, or tests of stalling relays.
fn read_timeout() -> Duration {
    std::env::var("CAIRN_READ_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|secs| (1..=3600).contains(secs))
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Builds the HTTP client every relay connection shares.
pub(crate) fn http_client() -> crate::Result<reqwest::Client> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Ring, not aws-lc: see MEASURED.md. Another installed default is fine.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // Between bytes, not in total: a multi-GiB transfer takes what it takes.
        .read_timeout(read_timeout())
        .tcp_nodelay(true)
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
        // Redirects are followed by hand, for blobs only, after checking the
        // key of the relay they point at (`RelayClient::open_blob`): an
        // automatic follow would hand the request to any server a relay
        // names.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| crate::Error::Invalid(format!("cannot set up HTTP: {err}")))
}

/// Fetches and verifies the signed info document at `url`, refusing one
/// issued too long before (or after) `clock`'s now.
pub async fn fetch_info(
    http: &reqwest::Client,
    url: &str,
    clock: &Clock,
) -> Result<Verified<RelayInfo>, RelayError> {
    let response = send(http.get(format!("{url}{}", wire::route::INFO))).await?;
    let document: InfoDocument = json_answer(response, MAX_SMALL_BODY, "info document").await?;
    let text = &document.record;
    let record = SignedRecord::from_base64url(text)
        .map_err(|err| RelayError::Protocol(format!("info record: {err}")))?;
    let info = record
        .verify::<RelayInfo>()
        .map_err(|err| RelayError::Protocol(format!("info record: {err}")))?;
    // Relays re-sign at least every minute; an old document is a replay.
    let now = clock.now().0;
    let issued = info.issued_at.0;
    if issued + MAX_INFO_AGE.as_secs() < now || issued > now + MAX_INFO_AGE.as_secs() {
        return Err(RelayError::Protocol(format!(
            "info document issued at {issued}, but it is now {now}: a replay, or a clock far off"
        )));
    }
    Ok(info)
}

/// A relay at a known URL with a pinned key.
#[derive(Clone, Debug)]
pub struct RelayClient {
    http: reqwest::Client,
    url: String,
    key: VerifyingKey,
    redirects: RedirectPolicy,
    clock: Clock,
}

impl RelayClient {
    /// A client for the relay at `url` whose key is `key`. It follows
    /// transfer redirects to the relay's listed peers only, over https or
    /// loopback; [`RelayClient::with_redirects`] widens that to the user's
    /// set. It reads the system clock; [`RelayClient::with_clock`] gives
    /// it another.
    pub fn new(http: reqwest::Client, url: &str, key: VerifyingKey) -> Self {
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            key,
            redirects: RedirectPolicy::default(),
            clock: Clock::system(),
        }
    }

    /// This client, reading the time from `clock`: tokens expire, and info
    /// documents are judged fresh, by its time.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// This client, following transfer redirects as `policy` allows.
    #[must_use]
    pub fn with_redirects(mut self, policy: RedirectPolicy) -> Self {
        self.redirects = policy;
        self
    }

    /// The relay's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The relay's pinned key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The relay's info document, refused unless signed by the pinned key.
    pub async fn info(&self) -> Result<Verified<RelayInfo>, RelayError> {
        let info = fetch_info(&self.http, &self.url, &self.clock).await?;
        if info.signer() != &self.key {
            return Err(RelayError::KeyMismatch {
                pinned: self.key,
                presented: *info.signer(),
            });
        }
        Ok(info)
    }

    fn blob_url(&self, id: &BlobId) -> String {
        format!("{}{}", self.url, wire::blob_path(id))
    }

    async fn token(
        &self,
        method: Method,
        id: &BlobId,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<String, RelayError> {
        self.token_for(method, TokenTarget::Blob(*id), key, pow_bits)
            .await
    }

    /// A token for `method` on `target`; uploads (a `PUT`, or a batch)
    /// carry `pow_bits` of work.
    async fn token_for(
        &self,
        method: Method,
        target: TokenTarget,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<String, RelayError> {
        let upload = method == Method::Put || matches!(target, TokenTarget::Batch(_));
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)
            .map_err(|err| RelayError::Local(std::io::Error::other(err.to_string())))?;
        let mut token = AuthToken {
            audience: self.key,
            method,
            target,
            expires_at: Timestamp(self.clock.now().0 + TOKEN_LIFETIME.as_secs()),
            nonce: Nonce(nonce),
            stamp: 0,
        };
        if pow_bits > 0 && upload {
            let signer = key.verifying_key();
            token = tokio::task::spawn_blocking(move || {
                token
                    .mint_stamp(&signer, pow_bits, MAX_STAMP_ATTEMPTS)
                    .then_some(token)
            })
            .await
            .ok()
            .flatten()
            .ok_or_else(|| {
                RelayError::Protocol(format!("demands {pow_bits} bits of work, too many to mint"))
            })?;
        }
        let envelope = SignedRecord::sign(&token, key)
            .map_err(|err| RelayError::Protocol(format!("cannot sign a token: {err}")))?;
        Ok(format!("Cairn {}", envelope.to_base64url()))
    }
}
