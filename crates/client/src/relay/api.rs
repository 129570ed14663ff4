//! One relay's HTTP API (PROTOCOL.md §7), from the client's side.
//!
//! Everything a relay says is checked: its info document's signature and
//! key, every downloaded byte against the blob id, every head's signature.
//! A relay that breaks the protocol gets a [`RelayError`] naming how.

use std::path::Path;
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_proto::audit::ChunkRequest;
use cairn_proto::{
    AuthToken, BlobId, ErrorCode, Method, Nonce, RelayInfo, SignedRecord, SigningKey, Slot,
    Timestamp, TokenTarget, Verified, VerifyingKey,
};
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method as HttpMethod, StatusCode};

use super::head::Head;
use super::set::RelaySet;
use super::transport::Transport;
use crate::error::RelayError;

/// How long upload and delete tokens stay valid (relays accept up to 600 s).
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Largest head record or info document accepted.
const MAX_SMALL_BODY: usize = 256 * 1024;
/// Times an upload is tried again after `429 rate_limited`.
const RATE_LIMIT_RETRIES: u32 = 3;
/// Longest wait a relay's `Retry-After` may ask for before giving up.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Largest head listing accepted (1024 slots of a few hundred bytes).
const MAX_HEAD_LISTING: usize = 2 << 20;
/// Oldest (or most future-dated) info document believed.
const MAX_INFO_AGE: Duration = Duration::from_secs(3600);
/// Most proof-of-work attempts before giving up (2^28 hashes, seconds).
const MAX_STAMP_ATTEMPTS: u64 = 1 << 28;
/// Most transfer redirects followed for one blob: a relay hands a blob on
/// once, and a chain longer than this is a loop or a stalling relay.
const MAX_REDIRECTS: usize = 3;
/// The header naming the key of the relay a redirect points at.
const RELAY_KEY_HEADER: &str = "cairn-relay-key";

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
pub(crate) fn http_client() -> Result<reqwest::Client, RelayError> {
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
        .map_err(|err| RelayError::Unreachable(format!("cannot set up HTTP: {err}")))
}

/// Fetches and verifies the signed info document at `url`.
pub async fn fetch_info(
    http: &reqwest::Client,
    url: &str,
) -> Result<Verified<RelayInfo>, RelayError> {
    let response = send(http.get(format!("{url}/.well-known/cairn-relay"))).await?;
    let body = small_body(response).await?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|err| RelayError::Protocol(format!("info document is not JSON: {err}")))?;
    let text = json["record"]
        .as_str()
        .ok_or_else(|| RelayError::Protocol("info document has no `record`".into()))?;
    let record = SignedRecord::from_base64url(text)
        .map_err(|err| RelayError::Protocol(format!("info record: {err}")))?;
    let info = record
        .verify::<RelayInfo>()
        .map_err(|err| RelayError::Protocol(format!("info record: {err}")))?;
    // Relays re-sign at least every minute; an old document is a replay.
    let now = unix_now();
    let issued = info.issued_at.0;
    if issued + MAX_INFO_AGE.as_secs() < now || issued > now + MAX_INFO_AGE.as_secs() {
        return Err(RelayError::Protocol(format!(
            "info document issued at {issued}, but it is now {now}: a replay, or a clock far off"
        )));
    }
    Ok(info)
}

/// What an audit of one copy found.
#[derive(Debug)]
pub enum AuditOutcome {
    /// The relay proved it holds the requested chunks.
    Passed {
        /// Bytes of proof received.
        proof_bytes: u64,
        /// The relay that answered, when the blob was transferred there.
        at: Option<RelayClient>,
    },
    /// The relay (or the peer it transferred the blob to) does not have it.
    Missing,
    /// The relay answered with a proof that does not lead to the blob id:
    /// it does not hold these bytes (or holds other ones).
    Failed(String),
}

/// What a head write came to.
#[derive(Debug)]
pub enum HeadWrite {
    /// The relay now holds the head.
    Stored,
    /// The relay holds a head with a sequence number at least as high (or,
    /// for an owned slot, the writer's own head at least as high).
    Stale(Option<Box<Head>>),
}

/// A blob a relay answered for.
#[derive(Clone, Debug)]
pub struct Held {
    /// Its size in bytes.
    pub size: u64,
    /// The relay holding it, when that is not the relay asked: the one asked
    /// transferred it to a peer (PROTOCOL.md §7.3). Its key is the one the
    /// redirect claimed, checked against the peer's signed info document.
    pub at: Option<RelayClient>,
}

/// Where a relay may send a blob request on with a transfer redirect
/// (PROTOCOL.md §7.3): to a relay of the user's set, or to one the
/// redirecting relay lists as its peer in its signed info document, with
/// the same URL and key either way; and over https, or plain http to
/// loopback, unless the transport is [`Transport::Insecure`].
///
/// The default (no set, [`Transport::Secure`]) follows redirects to listed
/// peers only.
#[derive(Clone, Debug, Default)]
pub struct RedirectPolicy {
    /// The user's relays, as (URL, key).
    set: Arc<[(String, VerifyingKey)]>,
    transport: Transport,
}

impl RedirectPolicy {
    /// Redirects into `set` or a redirecting relay's peer list, over what
    /// `transport` allows.
    pub fn new(set: &RelaySet, transport: Transport) -> Self {
        Self {
            set: set
                .entries()
                .iter()
                .map(|e| (e.url.clone(), e.key))
                .collect(),
            transport,
        }
    }

    fn in_set(&self, url: &str, key: &VerifyingKey) -> bool {
        self.set.iter().any(|(u, k)| u == url && k == key)
    }
}

/// A relay at a known URL with a pinned key.
#[derive(Clone, Debug)]
pub struct RelayClient {
    http: reqwest::Client,
    url: String,
    key: VerifyingKey,
    redirects: RedirectPolicy,
}

impl RelayClient {
    /// A client for the relay at `url` whose key is `key`. It follows
    /// transfer redirects to the relay's listed peers only, over https or
    /// loopback; [`RelayClient::with_redirects`] widens that to the user's
    /// set.
    pub fn new(http: reqwest::Client, url: &str, key: VerifyingKey) -> Self {
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            key,
            redirects: RedirectPolicy::default(),
        }
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
        let info = fetch_info(&self.http, &self.url).await?;
        if info.signer() != &self.key {
            return Err(RelayError::KeyMismatch {
                pinned: self.key,
                presented: *info.signer(),
            });
        }
        Ok(info)
    }

    fn blob_url(&self, id: &BlobId) -> String {
        format!("{}/v1/blobs/{id}", self.url)
    }

    async fn token(
        &self,
        method: Method,
        id: &BlobId,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<String, RelayError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)
            .map_err(|err| RelayError::Local(std::io::Error::other(err.to_string())))?;
        let mut token = AuthToken {
            audience: self.key,
            method,
            target: TokenTarget::Blob(*id),
            expires_at: Timestamp(unix_now() + TOKEN_LIFETIME.as_secs()),
            nonce: Nonce(nonce),
            stamp: 0,
        };
        if pow_bits > 0 && method == Method::Put {
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

    /// Uploads the file at `path` (`size` bytes, sealed, hashing to `id`),
    /// owned by `key`. Returns whether this upload stored the bytes (false:
    /// the relay already held them). `progress` gets byte counts as they go.
    pub async fn put_file(
        &self,
        id: &BlobId,
        path: &Path,
        size: u64,
        key: &SigningKey,
        pow_bits: u8,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<bool, RelayError> {
        let progress = std::sync::Arc::new(progress);
        let body = || -> std::io::Result<reqwest::Body> {
            let file = tokio::fs::File::from_std(std::fs::File::open(path)?);
            let progress = progress.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(
                move |chunk: std::io::Result<Bytes>| {
                    if let Ok(bytes) = &chunk {
                        progress(bytes.len() as u64);
                    }
                    chunk
                },
            );
            Ok(reqwest::Body::wrap_stream(stream))
        };
        self.put(id, body, size, key, pow_bits).await
    }

    /// Uploads a small blob held in memory.
    pub async fn put_bytes(
        &self,
        id: &BlobId,
        bytes: Bytes,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<bool, RelayError> {
        let size = bytes.len() as u64;
        let body = || Ok(reqwest::Body::from(bytes.clone()));
        self.put(id, body, size, key, pow_bits).await
    }

    /// Uploads the body `body` makes, waiting as the relay asks when it
    /// answers `429 rate_limited` (a fair-share limit, PROTOCOL.md §7.6a)
    /// and trying again, a few times. `pow_bits` is the work the caller
    /// expects the relay to require (0 when it has no info document at
    /// hand); a `pow_required` refusal reads the current figure and retries.
    async fn put(
        &self,
        id: &BlobId,
        body: impl Fn() -> std::io::Result<reqwest::Body>,
        size: u64,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<bool, RelayError> {
        let mut attempt = 0;
        let mut pow_bits = pow_bits;
        let mut pow_checked = false;
        loop {
            attempt += 1;
            match self.put_once(id, body()?, size, key, pow_bits).await {
                Err(RelayError::Refused {
                    status: 429,
                    retry_after: Some(wait),
                    ..
                }) if attempt <= RATE_LIMIT_RETRIES && wait <= MAX_RATE_LIMIT_WAIT.as_secs() => {
                    tracing::info!(relay = %self.url, wait, "rate limited; waiting as asked");
                    tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
                }
                // The relay raised its proof of work (it may, under
                // pressure): read what it asks now and try once more.
                Err(err) if err.code() == Some(ErrorCode::PowRequired) && !pow_checked => {
                    pow_checked = true;
                    pow_bits = self.info().await?.limits.pow_bits;
                }
                other => return other,
            }
        }
    }

    async fn put_once(
        &self,
        id: &BlobId,
        body: reqwest::Body,
        size: u64,
        key: &SigningKey,
        pow_bits: u8,
    ) -> Result<bool, RelayError> {
        let token = self.token(Method::Put, id, key, pow_bits).await?;
        let response = send(
            self.http
                .put(self.blob_url(id))
                .header(AUTHORIZATION, token)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body),
        )
        .await?;
        let status = response.status();
        let body = small_body(response).await?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|err| RelayError::Protocol(format!("upload answer is not JSON: {err}")))?;
        if json["id"].as_str() != Some(&id.to_string()) {
            return Err(RelayError::Protocol(format!(
                "upload of {id} answered for another blob: {json}"
            )));
        }
        match status {
            StatusCode::CREATED => Ok(true),
            _ => Ok(json["stored"].as_bool().unwrap_or(false)),
        }
    }

    /// Downloads blob `id`, handing each piece to `each` as it arrives, and
    /// fails with [`RelayError::WrongBytes`] at the end unless every byte
    /// hashed to the id: whatever `each` did with the pieces must be
    /// discarded then. A transferred blob is fetched from the peer holding
    /// it (see [`RelayClient::probe`]).
    pub async fn fetch_each<F, Fut>(&self, id: &BlobId, mut each: F) -> Result<u64, RelayError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>>,
    {
        let (_, response) = self.open_blob(HttpMethod::GET, id).await?;
        let mut hasher = blake3::Hasher::new();
        let mut received = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| RelayError::Unreachable(describe(&err)))?;
            hasher.update(&chunk);
            received += chunk.len() as u64;
            each(chunk).await?;
        }
        if hasher.finalize().as_bytes() != id.as_bytes() {
            return Err(RelayError::WrongBytes(*id));
        }
        Ok(received)
    }

    /// Downloads a small blob (at most `max` bytes) into memory, verified,
    /// following a transfer like [`RelayClient::fetch_each`].
    pub async fn fetch_bytes(&self, id: &BlobId, max: usize) -> Result<Vec<u8>, RelayError> {
        let (_, response) = self.open_blob(HttpMethod::GET, id).await?;
        let bytes = bounded_body(response, max).await?;
        if BlobId::of(&bytes) != *id {
            return Err(RelayError::WrongBytes(*id));
        }
        Ok(bytes)
    }

    /// Asks whether the relay holds `id` (a HEAD, which also counts as an
    /// access). Returns its size and, when the relay transferred it to a
    /// peer, the peer: redirects are followed (at most three), each only
    /// after the relay it points at proved, by its signed info document, to
    /// hold the key the redirect claims.
    pub async fn probe(&self, id: &BlobId) -> Result<Option<Held>, RelayError> {
        match self.open_blob(HttpMethod::HEAD, id).await {
            Ok((at, response)) => {
                // The header, not the body's length: a HEAD answer has none.
                let size = response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .or_else(|| response.content_length());
                Ok(size.map(|size| Held { size, at }))
            }
            Err(err) if is_absent(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Audits blob `id` (`size` bytes, as the manifest records): asks the
    /// relay holding it (following a transfer) for the chunks in `request`
    /// with a slice proof, and checks the proof against the id. The answer
    /// says whether the relay holds those bytes; it costs the proof's
    /// length, a few hundred bytes per chunk, not the blob's.
    pub async fn audit(
        &self,
        id: &BlobId,
        request: &ChunkRequest,
    ) -> Result<AuditOutcome, RelayError> {
        let Some(held) = self.probe(id).await? else {
            return Ok(AuditOutcome::Missing);
        };
        let relay = held.at.as_ref().unwrap_or(self);
        let url = format!("{}/proof?chunks={}", relay.blob_url(id), request.to_query());
        let response = match send(self.http.get(url)).await {
            Ok(response) => response,
            Err(err) if is_absent(&err) => return Ok(AuditOutcome::Missing),
            Err(err) => return Err(relay.after_transfer(self, err)),
        };
        let expected = cairn_proto::audit::proof_len(request);
        let max = usize::try_from(expected).unwrap_or(usize::MAX);
        let proof = match bounded_body(response, max).await {
            Ok(proof) => proof,
            Err(RelayError::Protocol(reason)) => {
                return Ok(AuditOutcome::Failed(format!(
                    "the proof is too long: {reason}"
                )));
            }
            Err(err) => return Err(err),
        };
        Ok(match cairn_proto::audit::verify(id, request, &proof) {
            Ok(_) => AuditOutcome::Passed {
                proof_bytes: proof.len() as u64,
                at: held.at,
            },
            Err(err) => AuditOutcome::Failed(err.to_string()),
        })
    }

    /// Sends `method` for blob `id`, following transfer redirects. Returns
    /// the successful answer and, when it came from another relay, that
    /// relay.
    async fn open_blob(
        &self,
        method: HttpMethod,
        id: &BlobId,
    ) -> Result<(Option<RelayClient>, reqwest::Response), RelayError> {
        let mut at: Option<RelayClient> = None;
        for _ in 0..=MAX_REDIRECTS {
            let relay = at.as_ref().unwrap_or(self);
            let response = self
                .http
                .request(method.clone(), relay.blob_url(id))
                .send()
                .await
                .map_err(|err| {
                    relay.after_transfer(self, RelayError::Unreachable(describe(&err)))
                })?;
            if response.status() != StatusCode::TEMPORARY_REDIRECT {
                let response = check_status(response)
                    .await
                    .map_err(|err| relay.after_transfer(self, err))?;
                // A chain that came back here is no transfer.
                return Ok((at.filter(|r| r.key != self.key), response));
            }
            let next = relay.follow(id, &response).await?;
            tracing::debug!(relay = %relay.url, to = %next.url, %id, "blob transferred");
            at = Some(next);
        }
        Err(RelayError::Redirect(format!(
            "blob {id}: more than {MAX_REDIRECTS} transfer redirects"
        )))
    }

    /// The relay a `307` for blob `id` points at, once (1) it is allowed
    /// ([`RelayClient::allow_redirect`]), checked before it is contacted at
    /// all, and (2) its signed info document shows the key the redirect
    /// claims: a relay that lies about its peer cannot make the client
    /// trust a key the peer does not hold.
    async fn follow(
        &self,
        id: &BlobId,
        response: &reqwest::Response,
    ) -> Result<RelayClient, RelayError> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let location = header(LOCATION.as_str()).ok_or_else(|| {
            RelayError::Redirect("a redirect without `Location`, not followed".into())
        })?;
        let base = location
            .strip_suffix(&format!("/v1/blobs/{id}"))
            .and_then(|base| crate::relay::normalize_url(base).ok())
            .filter(|base| !base.contains(['?', '#']))
            .ok_or_else(|| {
                RelayError::Redirect(format!(
                    "redirected to {location:?}, which is not a relay's URL for blob {id}; not \
                     followed"
                ))
            })?;
        let claimed: VerifyingKey = header(RELAY_KEY_HEADER)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                RelayError::Redirect(format!(
                    "the redirect to {base} names no valid `{RELAY_KEY_HEADER}`; not followed"
                ))
            })?;
        self.allow_redirect(id, &base, &claimed).await?;
        let info = fetch_info(&self.http, &base).await.map_err(|err| {
            RelayError::Redirect(format!(
                "transferred to {base}, which cannot be checked: {err}"
            ))
        })?;
        if info.signer() != &claimed {
            return Err(RelayError::Redirect(format!(
                "transferred to {base} with key {claimed}, but that relay presents {}; not \
                 followed",
                info.signer()
            )));
        }
        Ok(RelayClient::new(self.http.clone(), &base, claimed)
            .with_redirects(self.redirects.clone()))
    }

    /// Refuses a redirect to (`base`, `claimed`) unless the policy allows
    /// it: otherwise any relay could send the client, its address and its
    /// timing to a host of its choosing (or into the user's own network),
    /// and have that host recorded as holding the user's copy. The refusal
    /// does not name the target, so nothing about it is kept.
    async fn allow_redirect(
        &self,
        id: &BlobId,
        base: &str,
        claimed: &VerifyingKey,
    ) -> Result<(), RelayError> {
        if !self.redirects.transport.allows(base) {
            return Err(RelayError::RedirectRefused(format!(
                "redirected blob {id} to a relay reached by plain http off this machine, where \
                 requests cross the network readable and alterable; not followed (--insecure \
                 allows it)"
            )));
        }
        if self.redirects.in_set(base, claimed) {
            return Ok(());
        }
        // The redirecting relay's own signed word on who its peers are.
        let info = self.info().await.map_err(|err| {
            RelayError::Redirect(format!(
                "redirected blob {id}, but its info document (for its peer list) cannot be \
                 checked: {err}"
            ))
        })?;
        let listed = info.peers.iter().any(|peer| {
            &peer.key == claimed
                && super::set::normalize_url(peer.url.as_str()).is_ok_and(|url| url == base)
        });
        if listed {
            return Ok(());
        }
        Err(RelayError::RedirectRefused(format!(
            "redirected blob {id} to a relay that is neither in your relay set nor in its own \
             signed peer list; not followed"
        )))
    }

    /// Names the peer in a failure there, so the error reported against the
    /// relay asked says where the request went.
    fn after_transfer(&self, asked: &RelayClient, err: RelayError) -> RelayError {
        if self.url == asked.url && self.key == asked.key {
            return err;
        }
        if is_absent(&err) {
            // Kept as is: the peer no longer holds it, an absent blob.
            return err;
        }
        RelayError::Redirect(format!("transferred to {}: {err}", self.url))
    }

    /// Drops `key`'s claim on blob `id`; the relay deletes the blob when no
    /// other owner is left (PROTOCOL.md §7.3).
    pub async fn delete(&self, id: &BlobId, key: &SigningKey) -> Result<Deleted, RelayError> {
        let token = self.token(Method::Delete, id, key, 0).await?;
        match send(
            self.http
                .delete(self.blob_url(id))
                .header(AUTHORIZATION, token),
        )
        .await
        {
            Ok(response) => {
                // A relay from before owner sets sends no count: its
                // delete removed the blob.
                let left = match response.headers().get(OWNERS_LEFT_HEADER) {
                    None => 0,
                    Some(value) => value
                        .to_str()
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| {
                            RelayError::Protocol(format!("`{OWNERS_LEFT_HEADER}` is not a number"))
                        })?,
                };
                Ok(if left == 0 {
                    Deleted::Gone
                } else {
                    Deleted::KeptByOthers(left)
                })
            }
            Err(err) if err.code() == Some(ErrorCode::NotFound) => Ok(Deleted::Absent),
            Err(err) => Err(err),
        }
    }

    /// Makes `key` one of blob `id`'s owners, so that the copy stays until
    /// `key` deletes it too, whoever else does (PROTOCOL.md §7.3).
    pub async fn claim(&self, id: &BlobId, key: &SigningKey) -> Result<Claimed, RelayError> {
        let token = self.token(Method::Post, id, key, 0).await?;
        match send(
            self.http
                .post(self.blob_url(id))
                .header(AUTHORIZATION, token),
        )
        .await
        {
            Ok(response) => {
                #[derive(serde::Deserialize)]
                struct Answer {
                    claimed: bool,
                }
                let body = bounded_body(response, MAX_CLAIM_ANSWER).await?;
                let answer: Answer = serde_json::from_slice(&body).map_err(|err| {
                    RelayError::Protocol(format!("the answer to a claim does not parse: {err}"))
                })?;
                Ok(if answer.claimed {
                    Claimed::New
                } else {
                    Claimed::Already
                })
            }
            Err(err) if err.code() == Some(ErrorCode::NotFound) => Ok(Claimed::Absent),
            Err(err) => Err(err),
        }
    }

    fn head_url(&self, mailbox: &VerifyingKey, slot: &Slot) -> String {
        format!("{}/v1/heads/{mailbox}/{}", self.url, slot.as_str())
    }

    /// The head in `slot` of `mailbox`, verified; `None` if there is none.
    pub async fn get_head(
        &self,
        mailbox: &VerifyingKey,
        slot: &Slot,
    ) -> Result<Option<Head>, RelayError> {
        let response = match send(self.http.get(self.head_url(mailbox, slot))).await {
            Ok(response) => response,
            Err(err) if err.code() == Some(ErrorCode::NotFound) => return Ok(None),
            Err(err) => return Err(err),
        };
        let bytes = small_body(response).await?;
        let head = verify_head(&bytes, mailbox, slot)?;
        Ok(Some(head))
    }

    /// Every head in `mailbox`, each verified (one request, whatever the
    /// number of slots). Heads that do not verify are dropped and counted.
    pub async fn list_heads(
        &self,
        mailbox: &VerifyingKey,
    ) -> Result<(Vec<Head>, usize), RelayError> {
        let response = send(self.http.get(format!("{}/v1/heads/{mailbox}", self.url))).await?;
        let body = bounded_body(response, MAX_HEAD_LISTING).await?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|err| RelayError::Protocol(format!("head listing is not JSON: {err}")))?;
        let texts = json["heads"]
            .as_array()
            .ok_or_else(|| RelayError::Protocol("head listing has no `heads`".into()))?;
        let mut heads = Vec::with_capacity(texts.len());
        let mut bad = 0;
        for text in texts {
            let head = text
                .as_str()
                .and_then(|t| cairn_proto::decode_base64url(t, MAX_SMALL_BODY).ok())
                .and_then(|bytes| Head::from_bytes(&bytes).ok())
                .filter(|head| &head.mailbox == mailbox);
            match head {
                Some(head) => heads.push(head),
                None => bad += 1,
            }
        }
        Ok((heads, bad))
    }

    /// Stores a head: an owned head signed by its writer, or (for pairing
    /// rendezvous) a legacy head signed by its mailbox key.
    pub async fn put_head(&self, record: &SignedRecord) -> Result<HeadWrite, RelayError> {
        let head = Head::from_record(record.clone())
            .map_err(|err| RelayError::Protocol(format!("refusing to send a bad head: {err}")))?;
        let url = self.head_url(&head.mailbox, &head.slot);
        let request = self
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(record.to_bytes());
        let response = request
            .send()
            .await
            .map_err(|err| RelayError::Unreachable(describe(&err)))?;
        if response.status() == StatusCode::CONFLICT {
            let body = small_body(response).await?;
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let current = json["current"]
                .as_str()
                .and_then(|text| cairn_proto::decode_base64url(text, MAX_SMALL_BODY).ok())
                .and_then(|bytes| verify_head(&bytes, &head.mailbox, &head.slot).ok())
                .map(Box::new);
            return Ok(HeadWrite::Stale(current));
        }
        check_status(response).await?;
        Ok(HeadWrite::Stored)
    }
}

/// Whether a relay answered that it does not hold what was asked (a HEAD
/// answer has no body to carry the `not_found` code).
fn is_absent(err: &RelayError) -> bool {
    matches!(err, RelayError::Refused { status: 404, .. })
        || err.code() == Some(ErrorCode::NotFound)
}

fn verify_head(bytes: &[u8], mailbox: &VerifyingKey, slot: &Slot) -> Result<Head, RelayError> {
    let head = Head::from_bytes(bytes).map_err(RelayError::Protocol)?;
    if &head.mailbox != mailbox || &head.slot != slot {
        return Err(RelayError::Protocol(
            "served a head from another mailbox or slot".into(),
        ));
    }
    Ok(head)
}

/// The response header in which a relay says how many owners still keep a
/// blob after a delete.
const OWNERS_LEFT_HEADER: &str = "cairn-owners-left";

/// What a delete did at one relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The blob is gone.
    Gone,
    /// This key's claim is dropped; that many other owners keep the blob.
    KeptByOthers(u64),
    /// The relay did not hold it.
    Absent,
}

/// What a claim did at one relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The key owns the copy now.
    New,
    /// The key owned it already.
    Already,
    /// The relay does not hold the blob.
    Absent,
}

/// Longest answer to a claim read: `{"id": "<64 hex>", "claimed": false}`
/// with room to spare.
const MAX_CLAIM_ANSWER: usize = 1024;

/// Sends a request; non-success statuses become [`RelayError::Refused`].
async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, RelayError> {
    let response = request
        .send()
        .await
        .map_err(|err| RelayError::Unreachable(describe(&err)))?;
    check_status(response).await
}

async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, RelayError> {
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

async fn small_body(response: reqwest::Response) -> Result<Vec<u8>, RelayError> {
    bounded_body(response, MAX_SMALL_BODY).await
}

/// Reads a body, refusing to buffer more than `max` bytes.
async fn bounded_body(response: reqwest::Response, max: usize) -> Result<Vec<u8>, RelayError> {
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
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use std::sync::{Arc, Mutex};

    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, HeaderValue, StatusCode as AxumStatus, header};
    use axum::response::{IntoResponse, Response};
    use cairn_proto::{FairShareLimits, SoftwareVersion};

    /// What a fake relay answers for blob requests.
    #[derive(Clone)]
    enum Blobs {
        /// Serves these bytes for their id.
        Hold(Vec<u8>),
        /// `307` with these `Location` and `cairn-relay-key` values.
        Redirect(String, Option<String>),
    }

    #[derive(Clone)]
    struct Fake {
        key: Arc<SigningKey>,
        blobs: Arc<Mutex<Blobs>>,
        peers: Arc<Vec<cairn_proto::RelayRef>>,
    }

    /// A relay on loopback signing with the key from `seed`, listing no
    /// peers.
    async fn fake(seed: u8, blobs: Blobs) -> (String, SigningKey, Arc<Mutex<Blobs>>) {
        fake_peered(seed, blobs, &[]).await
    }

    /// [`fake`], listing `peers` (URL, key) in its signed info document.
    async fn fake_peered(
        seed: u8,
        blobs: Blobs,
        peers: &[(&str, VerifyingKey)],
    ) -> (String, SigningKey, Arc<Mutex<Blobs>>) {
        let key = SigningKey::from_seed(&[seed; 32]);
        let peers = peers
            .iter()
            .map(|(url, key)| cairn_proto::RelayRef {
                url: cairn_proto::RelayUrl::new(*url).unwrap(),
                key: *key,
            })
            .collect();
        let state = Fake {
            key: Arc::new(key.clone()),
            blobs: Arc::new(Mutex::new(blobs)),
            peers: Arc::new(peers),
        };
        let shared = state.blobs.clone();
        let app = axum::Router::new()
            .route("/.well-known/cairn-relay", axum::routing::get(info))
            .route("/v1/blobs/{id}", axum::routing::get(blob))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, key, shared)
    }

    async fn info(State(fake): State<Fake>) -> Response {
        let info = RelayInfo {
            relay: fake.key.verifying_key(),
            software: SoftwareVersion::new("fake 0").unwrap(),
            issued_at: Timestamp(unix_now()),
            capacity_total: 1 << 30,
            capacity_used: 0,
            capacity_free: 1 << 30,
            max_blob_size: 1 << 20,
            retention_secs: 86_400,
            limits: FairShareLimits::default(),
            peers: fake.peers.to_vec(),
            load_permille: 0,
            uptime_secs: 1,
        };
        let record = SignedRecord::sign(&info, &*fake.key).unwrap();
        axum::Json(serde_json::json!({ "record": record.to_base64url() })).into_response()
    }

    async fn blob(State(fake): State<Fake>, UrlPath(id): UrlPath<String>) -> Response {
        let blobs = fake.blobs.lock().unwrap().clone();
        match blobs {
            Blobs::Hold(bytes) if BlobId::of(&bytes).to_string() == id => {
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                (headers, bytes).into_response()
            }
            Blobs::Hold(_) => (
                AxumStatus::NOT_FOUND,
                axum::Json(serde_json::json!({
                    "error": { "code": cairn_proto::ErrorCode::NotFound.as_str(), "message": "no such blob" }
                })),
            )
                .into_response(),
            Blobs::Redirect(location, key) => {
                let mut headers = HeaderMap::new();
                headers.insert(header::LOCATION, location.parse().unwrap());
                if let Some(key) = key {
                    headers.insert("cairn-relay-key", key.parse().unwrap());
                }
                (AxumStatus::TEMPORARY_REDIRECT, headers, "{}").into_response()
            }
        }
    }

    fn client(url: &str, key: &SigningKey) -> RelayClient {
        RelayClient::new(http_client().unwrap(), url, key.verifying_key())
    }

    const DATA: &[u8] = b"sealed bytes, as far as a relay can tell";

    #[tokio::test]
    async fn a_transfer_is_followed_to_a_listed_peer_holding_the_key_it_claims() {
        let id = BlobId::of(DATA);
        let (peer_url, peer_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
        let (url, key, _) = fake_peered(
            2,
            Blobs::Redirect(
                format!("{peer_url}/v1/blobs/{id}"),
                Some(peer_key.verifying_key().to_string()),
            ),
            &[(&peer_url, peer_key.verifying_key())],
        )
        .await;
        let origin = client(&url, &key);
        let held = origin.probe(&id).await.unwrap().unwrap();
        assert_eq!(held.size, DATA.len() as u64);
        let at = held.at.unwrap();
        assert_eq!(at.url(), peer_url);
        assert_eq!(at.key(), &peer_key.verifying_key());
        // Fetching without a probe first follows it too, every byte checked.
        assert_eq!(origin.fetch_bytes(&id, 1024).await.unwrap(), DATA);
        let mut got = Vec::new();
        let n = origin
            .fetch_each(&id, |chunk| {
                got.extend_from_slice(&chunk);
                async { Ok(()) }
            })
            .await
            .unwrap();
        assert_eq!((n, got.as_slice()), (DATA.len() as u64, DATA));
        // The relay holding it itself says so with no peer.
        assert!(
            client(&peer_url, &peer_key)
                .probe(&id)
                .await
                .unwrap()
                .unwrap()
                .at
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_redirect_claiming_a_key_the_peer_does_not_hold_is_refused() {
        let id = BlobId::of(DATA);
        let (peer_url, _, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
        let liar = SigningKey::from_seed(&[9; 32]).verifying_key();
        // Listed with the key it does not hold, so that the redirect gets
        // as far as asking the peer.
        let (url, key, _) = fake_peered(
            2,
            Blobs::Redirect(format!("{peer_url}/v1/blobs/{id}"), Some(liar.to_string())),
            &[(&peer_url, liar)],
        )
        .await;
        let origin = client(&url, &key);
        let err = origin.probe(&id).await.unwrap_err();
        assert!(matches!(err, RelayError::Redirect(_)), "{err}");
        assert!(err.to_string().contains("presents"), "{err}");
        let err = origin.fetch_bytes(&id, 1024).await.unwrap_err();
        assert!(err.to_string().contains("presents"), "{err}");
    }

    #[tokio::test]
    async fn malformed_redirects_and_loops_are_refused() {
        let id = BlobId::of(DATA);
        let (peer_url, peer_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
        let peer_key = peer_key.verifying_key().to_string();
        let other = BlobId::of(b"another blob");
        let (url, key, blobs) = fake(2, Blobs::Hold(Vec::new())).await;
        let origin = client(&url, &key);
        let cases = [
            (
                format!("{peer_url}/v1/blobs/{other}"),
                Some(peer_key.clone()),
            ),
            (format!("{peer_url}/elsewhere"), Some(peer_key.clone())),
            (format!("/v1/blobs/{id}"), Some(peer_key.clone())),
            (format!("{peer_url}/v1/blobs/{id}"), None),
            (
                format!("{peer_url}/v1/blobs/{id}"),
                Some("not a key".into()),
            ),
        ];
        for (location, claimed) in cases {
            *blobs.lock().unwrap() = Blobs::Redirect(location.clone(), claimed.clone());
            let err = origin.probe(&id).await.unwrap_err();
            assert!(
                matches!(err, RelayError::Redirect(_)),
                "{location} {claimed:?}: {err}"
            );
        }
        // A relay redirecting to itself (in the user's set, so allowed):
        // followed a few times, then refused.
        *blobs.lock().unwrap() = Blobs::Redirect(
            format!("{url}/v1/blobs/{id}"),
            Some(key.verifying_key().to_string()),
        );
        let origin = origin.with_redirects(policy(&[(&url, &key)], Transport::Secure));
        let err = origin.probe(&id).await.unwrap_err();
        assert!(err.to_string().contains("more than 3"), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_no_longer_holds_it_reads_as_absent() {
        let id = BlobId::of(DATA);
        let (peer_url, peer_key, _) = fake(1, Blobs::Hold(Vec::new())).await;
        let (url, key, _) = fake_peered(
            2,
            Blobs::Redirect(
                format!("{peer_url}/v1/blobs/{id}"),
                Some(peer_key.verifying_key().to_string()),
            ),
            &[(&peer_url, peer_key.verifying_key())],
        )
        .await;
        assert!(client(&url, &key).probe(&id).await.unwrap().is_none());
    }

    /// A policy whose relay set is `set` (URL, key).
    fn policy(set: &[(&str, &SigningKey)], transport: Transport) -> RedirectPolicy {
        let mut relays = RelaySet::default();
        for (url, key) in set {
            relays.upsert(crate::relay::RelayEntry {
                url: (*url).to_owned(),
                key: key.verifying_key(),
                added_at: 0,
            });
        }
        RedirectPolicy::new(&relays, transport)
    }

    #[tokio::test]
    async fn a_redirect_outside_the_set_and_the_peer_list_is_refused_without_contacting_it() {
        let id = BlobId::of(DATA);
        // The outside relay holds the blob and its key, and would pass
        // every other check.
        let (outside_url, outside_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
        let (listed_url, listed_key, _) = fake(3, Blobs::Hold(DATA.to_vec())).await;
        let (url, key, _) = fake_peered(
            2,
            Blobs::Redirect(
                format!("{outside_url}/v1/blobs/{id}"),
                Some(outside_key.verifying_key().to_string()),
            ),
            &[(&listed_url, listed_key.verifying_key())],
        )
        .await;
        let origin = client(&url, &key).with_redirects(policy(
            &[(&url, &key), (&listed_url, &listed_key)],
            Transport::Secure,
        ));
        let err = origin.probe(&id).await.unwrap_err();
        assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("neither in your relay set nor"), "{text}");
        // Nothing in the refusal names the target, so nothing about it is
        // kept wherever the error goes.
        assert!(!text.contains(&outside_url), "{text}");
        let err = origin.fetch_bytes(&id, 1024).await.unwrap_err();
        assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");
        let err = origin
            .audit(
                &id,
                &ChunkRequest::random(DATA.len() as u64, 1, || 0).unwrap(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");

        // Checked before the target is asked anything: a target where
        // nothing listens gives the same refusal, not "unreachable".
        let nowhere = "http://127.0.0.1:9";
        let (url, key, _) = fake(
            4,
            Blobs::Redirect(
                format!("{nowhere}/v1/blobs/{id}"),
                Some(outside_key.verifying_key().to_string()),
            ),
        )
        .await;
        let err = client(&url, &key).probe(&id).await.unwrap_err();
        assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");
    }

    #[tokio::test]
    async fn a_redirect_into_the_users_set_is_followed_without_a_peer_list() {
        let id = BlobId::of(DATA);
        let (peer_url, peer_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
        let (url, key, blobs) = fake(
            2,
            Blobs::Redirect(
                format!("{peer_url}/v1/blobs/{id}"),
                Some(peer_key.verifying_key().to_string()),
            ),
        )
        .await;
        let origin = client(&url, &key);
        // Not listed as the relay's peer, and not in the (empty) set.
        assert!(matches!(
            origin.probe(&id).await.unwrap_err(),
            RelayError::RedirectRefused(_)
        ));
        let origin = origin.with_redirects(policy(
            &[(&url, &key), (&peer_url, &peer_key)],
            Transport::Secure,
        ));
        let held = origin.probe(&id).await.unwrap().unwrap();
        assert_eq!(held.at.unwrap().url(), peer_url);
        assert_eq!(origin.fetch_bytes(&id, 1024).await.unwrap(), DATA);
        // The set entry is a URL and a key together: the same key at
        // another URL is not the relay the user chose.
        let renamed = peer_url.replace("127.0.0.1", "localhost");
        *blobs.lock().unwrap() = Blobs::Redirect(
            format!("{renamed}/v1/blobs/{id}"),
            Some(peer_key.verifying_key().to_string()),
        );
        assert!(matches!(
            origin.probe(&id).await.unwrap_err(),
            RelayError::RedirectRefused(_)
        ));
    }

    #[tokio::test]
    async fn a_redirect_to_plain_http_off_this_machine_is_refused_unless_insecure() {
        let id = BlobId::of(DATA);
        let peer_key = SigningKey::from_seed(&[1; 32]);
        // Listed as a peer and in the set: only the transport is wrong.
        let target = "http://relay.invalid";
        let (url, key, _) = fake_peered(
            2,
            Blobs::Redirect(
                format!("{target}/v1/blobs/{id}"),
                Some(peer_key.verifying_key().to_string()),
            ),
            &[(target, peer_key.verifying_key())],
        )
        .await;
        let origin = client(&url, &key).with_redirects(policy(
            &[(&url, &key), (target, &peer_key)],
            Transport::Secure,
        ));
        let err = origin.probe(&id).await.unwrap_err();
        assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");
        assert!(err.to_string().contains("plain http"), "{err}");
        assert!(!err.to_string().contains("relay.invalid"), "{err}");
        // With --insecure it passes this check and goes on to the target,
        // which (`.invalid` never resolves) cannot be checked.
        let origin = origin.with_redirects(policy(&[(&url, &key)], Transport::Insecure));
        let err = origin.probe(&id).await.unwrap_err();
        assert!(matches!(err, RelayError::Redirect(_)), "{err}");
        assert!(err.to_string().contains("cannot be checked"), "{err}");
    }
}
