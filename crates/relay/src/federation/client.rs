//! Outgoing relay-to-relay requests, each signed with this relay's key.

use std::time::Duration;

use bytes::Bytes;
use cairn_api::CallError;
use cairn_proto::wire::{self, BlobStored, InfoDocument};
use cairn_proto::{
    AuthToken, BlobId, Method, Nonce, RelayRef, RequestPath, SignedRecord, SigningKey, Timestamp,
    TokenTarget, TransferReceipt, VerifyingKey,
};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RANGE};

use super::error::FederationError;
use super::peers::{PeerInfo, verify_info};
use crate::store::BlobBody;

/// Lifetime of the tokens this relay signs for its peers.
const TOKEN_LIFETIME_SECS: u64 = 300;
/// Longest answer accepted for an info document.
const MAX_INFO_BYTES: usize = 64 * 1024;

/// Longest JSON answer to an upload: an id and a receipt.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// An HTTP client for peers: never follows redirects (a peer answers for
/// itself), times out idle connections.
#[derive(Clone, Debug)]
pub(crate) struct PeerClient {
    http: reqwest::Client,
}

impl PeerClient {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        // Peers may serve HTTPS; rustls needs a process-wide provider.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http })
    }

    /// A token for `method` on `target` at `audience`, signed by `key`.
    pub(crate) fn token(
        key: &SigningKey,
        audience: VerifyingKey,
        method: Method,
        target: TokenTarget,
        now: u64,
    ) -> Result<String, FederationError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| FederationError::Local(e.to_string()))?;
        let token = AuthToken {
            audience,
            method,
            target,
            expires_at: Timestamp(now + TOKEN_LIFETIME_SECS),
            nonce: Nonce(nonce),
            stamp: 0,
        };
        let envelope = SignedRecord::sign(&token, key)
            .map_err(|e| FederationError::Local(format!("cannot sign a token: {e}")))?;
        Ok(format!("Cairn {}", envelope.to_base64url()))
    }

    /// Fetches and verifies `peer`'s info document.
    pub(crate) async fn info(&self, peer: &RelayRef) -> Result<PeerInfo, String> {
        let request = self
            .http
            .get(peer_url(peer, wire::route::INFO))
            .timeout(Duration::from_secs(15));
        let describe = |e: CallError| match e {
            unreachable @ CallError::Unreachable { .. } => unreachable.to_string(),
            CallError::Refused(refusal) => format!("info document answered {}", refusal.status),
            other => format!("info document: {other}"),
        };
        let response = cairn_api::send(request).await.map_err(describe)?;
        let document: InfoDocument =
            cairn_api::read_json(response, MAX_INFO_BYTES, "info document")
                .await
                .map_err(describe)?;
        let record = &document.record;
        verify_info(&peer.key, record)
    }

    /// Uploads blob `id` (`size` bytes) to `peer` and returns the receipt,
    /// checked: signed by the peer, for this blob and size, naming `me` as
    /// the sender.
    pub(crate) async fn push(
        &self,
        key: &SigningKey,
        peer: &RelayRef,
        id: BlobId,
        size: u64,
        body: BlobBody,
        now: u64,
    ) -> Result<TransferReceipt, FederationError> {
        let auth = Self::token(key, peer.key, Method::Put, TokenTarget::Blob(id), now)?;
        let body = match body {
            BlobBody::Inline(bytes) => reqwest::Body::from(bytes),
            other => reqwest::Body::wrap_stream(other.into_stream(0, size).await?),
        };
        let request = self
            .http
            .put(peer_url(peer, &wire::blob_path(&id)))
            .header(AUTHORIZATION, auth)
            .header(CONTENT_LENGTH, size)
            .body(body);
        let response = cairn_api::send(request).await?;
        let answer: BlobStored =
            cairn_api::read_json(response, MAX_ANSWER_BYTES, "upload answer").await?;
        let record = answer
            .receipt
            .ok_or_else(|| FederationError::BadReceipt("the answer carries no receipt".into()))?;
        check_receipt(&record, &peer.key, &key.verifying_key(), id, size)
    }

    /// Reads `start..start+len` of blob `id` from `peer`, without following
    /// redirects: the peer must hold the bytes itself.
    pub(crate) async fn read_range(
        &self,
        peer: &RelayRef,
        id: BlobId,
        start: u64,
        len: u64,
    ) -> Result<Bytes, FederationError> {
        let end = start + len.max(1) - 1;
        let response = self
            .http
            .get(peer_url(peer, &wire::blob_path(&id)))
            .header(RANGE, format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status != StatusCode::PARTIAL_CONTENT && status != StatusCode::OK {
            return Err(FederationError::CheckFailed(format!(
                "asked for bytes {start}-{end}, the peer answered {status}"
            )));
        }
        let to = usize::try_from(end + 1).unwrap_or(usize::MAX);
        if status == StatusCode::OK {
            // A peer that ignores Range sends everything: the bytes before
            // the range are passed over, and nothing after it is read. (A
            // short slice is for the caller's comparison to catch.)
            let from = usize::try_from(start).unwrap_or(usize::MAX);
            let bytes = cairn_api::read_slice(response, from, to - from).await?;
            if bytes.is_empty() {
                return Err(FederationError::CheckFailed(
                    "the peer's copy is shorter than receipted".into(),
                ));
            }
            return Ok(bytes);
        }
        let len = usize::try_from(len.max(1)).unwrap_or(usize::MAX);
        Ok(cairn_api::read_bounded(response, len).await?)
    }

    /// Checks that `peer` holds blob `id`: downloads it and verifies the
    /// hash if it is at most `full_read` bytes, else checks its size answer
    /// to a HEAD. A redirect means the peer passed the blob on under its
    /// own receipt, which is its own answerability: accepted.
    pub(crate) async fn verify_held(
        &self,
        peer: &RelayRef,
        id: BlobId,
        full_read: u64,
    ) -> Result<(), FederationError> {
        let url = peer_url(peer, &wire::blob_path(&id));
        let head = self.http.head(&url).send().await.map_err(unreachable)?;
        let status = head.status();
        if status == StatusCode::TEMPORARY_REDIRECT {
            return Ok(());
        }
        if status != StatusCode::OK {
            return Err(FederationError::CheckFailed(format!(
                "asked for blob {id}, the peer answered {status}"
            )));
        }
        let size = head
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if size > full_read {
            return Ok(());
        }
        let mut response = self.http.get(&url).send().await.map_err(unreachable)?;
        let mut hasher = blake3::Hasher::new();
        let mut read: u64 = 0;
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            // Only the size it announced is read: the hash of more cannot
            // match anyway.
            read += chunk.len() as u64;
            if read > size {
                break;
            }
            hasher.update(&chunk);
        }
        if BlobId::from(hasher.finalize()) != id {
            return Err(FederationError::CheckFailed(format!(
                "the peer's copy of blob {id} has other bytes"
            )));
        }
        Ok(())
    }

    /// Sends one reconciliation message to `peer` and returns its answer.
    pub(crate) async fn reconcile(
        &self,
        key: &SigningKey,
        peer: &RelayRef,
        message: Vec<u8>,
        now: u64,
    ) -> Result<Bytes, FederationError> {
        let path = RequestPath::new(wire::route::RECONCILE)
            .map_err(|e| FederationError::Local(e.to_string()))?;
        let auth = Self::token(key, peer.key, Method::Post, TokenTarget::Path(path), now)?;
        let request = self
            .http
            .post(peer_url(peer, wire::route::RECONCILE))
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(message);
        let response = cairn_api::send(request).await?;
        let bytes = cairn_api::read_bounded(response, cairn_proto::reconcile::MAX_MESSAGE_LEN)
            .await
            .map_err(|e| match e {
                CallError::TooLarge { .. } => {
                    FederationError::Reconcile("the peer's message is too long".into())
                }
                other => other.into(),
            })?;
        Ok(bytes)
    }
}

/// The URL of `path` at `peer`.
fn peer_url(peer: &RelayRef, path: &str) -> String {
    format!("{}{path}", peer.url.as_str().trim_end_matches('/'))
}

/// A request that got no answer: said in words; the HTTP library's whole
/// account is kept for the log.
fn unreachable(err: reqwest::Error) -> FederationError {
    let err = CallError::unreachable(&err);
    if let CallError::Unreachable { detail, .. } = &err {
        tracing::debug!(error = %detail, "peer request failed");
    }
    FederationError::Call(err)
}

/// Decodes and checks a receipt from `peer` for blob `id` of `size` bytes
/// sent by `me`.
pub(crate) fn check_receipt(
    record: &str,
    peer: &VerifyingKey,
    me: &VerifyingKey,
    id: BlobId,
    size: u64,
) -> Result<TransferReceipt, FederationError> {
    let bad = |reason: String| FederationError::BadReceipt(reason);
    let envelope =
        SignedRecord::from_base64url(record).map_err(|e| bad(format!("does not decode: {e}")))?;
    let verified = envelope
        .verify::<TransferReceipt>()
        .map_err(|e| bad(format!("does not verify: {e}")))?;
    if verified.signer() != peer {
        return Err(bad(format!(
            "signed by {}, not the peer",
            verified.signer()
        )));
    }
    let receipt = verified.record().clone();
    if &receipt.sender != me {
        return Err(bad("names another relay as the sender".into()));
    }
    if receipt.blob != id || receipt.size != size {
        return Err(bad(format!(
            "is for blob {} of {} bytes, not {id} of {size}",
            receipt.blob, receipt.size
        )));
    }
    Ok(receipt)
}
