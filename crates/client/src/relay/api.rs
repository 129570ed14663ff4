//! One relay's HTTP API (PROTOCOL.md §7), from the client's side.
//!
//! Everything a relay says is checked: its info document's signature and
//! key, every downloaded byte against the blob id, every head's signature.
//! A relay that breaks the protocol gets a [`RelayError`] naming how.

use std::path::Path;
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_proto::{
    AuthToken, BlobId, HeadRecord, Method, Nonce, RelayInfo, SignedRecord, SigningKey, Slot,
    Timestamp, TokenTarget, Verified, VerifyingKey,
};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};

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
        .read_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
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

/// What a head write came to.
#[derive(Debug)]
pub enum HeadWrite {
    /// The relay now holds the head.
    Stored,
    /// The relay holds a head with a sequence number at least as high.
    Stale(Option<Box<Verified<HeadRecord>>>),
}

/// A relay at a known URL with a pinned key.
#[derive(Clone, Debug)]
pub struct RelayClient {
    http: reqwest::Client,
    url: String,
    key: VerifyingKey,
}

impl RelayClient {
    /// A client for the relay at `url` whose key is `key`.
    pub fn new(http: reqwest::Client, url: &str, key: VerifyingKey) -> Self {
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            key,
        }
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
                Err(err) if err.code() == Some("pow_required") && !pow_checked => {
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
    /// discarded then.
    pub async fn fetch_each<F, Fut>(&self, id: &BlobId, mut each: F) -> Result<u64, RelayError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>>,
    {
        let response = send(self.http.get(self.blob_url(id))).await?;
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

    /// Downloads a small blob (at most `max` bytes) into memory, verified.
    pub async fn fetch_bytes(&self, id: &BlobId, max: usize) -> Result<Vec<u8>, RelayError> {
        let response = send(self.http.get(self.blob_url(id))).await?;
        let bytes = bounded_body(response, max).await?;
        if BlobId::of(&bytes) != *id {
            return Err(RelayError::WrongBytes(*id));
        }
        Ok(bytes)
    }

    /// Asks whether the relay holds `id` (a HEAD, which also counts as an
    /// access). Returns its size.
    pub async fn probe(&self, id: &BlobId) -> Result<Option<u64>, RelayError> {
        match send(self.http.head(self.blob_url(id))).await {
            Ok(response) => Ok(response.content_length()),
            Err(err) if err.code() == Some("not_found") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Deletes blob `id`, owned by `key`. Returns false if it was not there.
    pub async fn delete(&self, id: &BlobId, key: &SigningKey) -> Result<bool, RelayError> {
        let token = self.token(Method::Delete, id, key, 0).await?;
        match send(
            self.http
                .delete(self.blob_url(id))
                .header(AUTHORIZATION, token),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("not_found") => Ok(false),
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
    ) -> Result<Option<Verified<HeadRecord>>, RelayError> {
        let response = match send(self.http.get(self.head_url(mailbox, slot))).await {
            Ok(response) => response,
            Err(err) if err.code() == Some("not_found") => return Ok(None),
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
    ) -> Result<(Vec<Verified<HeadRecord>>, usize), RelayError> {
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
                .and_then(|bytes| SignedRecord::from_bytes(&bytes).ok())
                .and_then(|record| record.verify::<HeadRecord>().ok())
                .filter(|head| &head.mailbox == mailbox);
            match head {
                Some(head) => heads.push(head),
                None => bad += 1,
            }
        }
        Ok((heads, bad))
    }

    /// Stores a head record (signed by its mailbox key).
    pub async fn put_head(&self, record: &SignedRecord) -> Result<HeadWrite, RelayError> {
        let head = record
            .verify::<HeadRecord>()
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

fn verify_head(
    bytes: &[u8],
    mailbox: &VerifyingKey,
    slot: &Slot,
) -> Result<Verified<HeadRecord>, RelayError> {
    let head = SignedRecord::from_bytes(bytes)
        .map_err(|err| RelayError::Protocol(format!("head record: {err}")))?
        .verify::<HeadRecord>()
        .map_err(|err| RelayError::Protocol(format!("head record: {err}")))?;
    if &head.mailbox != mailbox || &head.slot != slot {
        return Err(RelayError::Protocol(
            "served a head from another mailbox or slot".into(),
        ));
    }
    Ok(head)
}

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
