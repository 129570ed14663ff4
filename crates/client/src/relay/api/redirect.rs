//! Transfer redirects (PROTOCOL.md §7.3): a relay that handed a blob to a
//! peer answers `307`, and the client follows only to a relay it may reach
//! and whose signed info document shows the key the redirect claims.

use std::sync::Arc;

use cairn_proto::wire;
use cairn_proto::{BlobId, VerifyingKey};
use reqwest::header::LOCATION;
use reqwest::{Method as HttpMethod, StatusCode};

use super::answer::{check_status, unreachable};
use super::{RelayClient, fetch_info};
use crate::error::RelayError;
use crate::relay::set::RelaySet;
use crate::relay::transport::Transport;

/// Most transfer redirects followed for one blob: a relay hands a blob on
/// once, and a chain longer than this is a loop or a stalling relay.
const MAX_REDIRECTS: usize = 3;

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

impl RelayClient {
    /// Sends `method` for blob `id`, following transfer redirects. Returns
    /// the successful answer and, when it came from another relay, that
    /// relay.
    pub(super) async fn open_blob(
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
                .map_err(|err| relay.after_transfer(self, unreachable(&err)))?;
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
            .strip_suffix(&wire::blob_path(id))
            .and_then(|base| crate::relay::set::normalize_url(base).ok())
            .filter(|base| !base.contains(['?', '#']))
            .ok_or_else(|| {
                RelayError::Redirect(format!(
                    "redirected to {location:?}, which is not a relay's URL for blob {id}; not \
                     followed"
                ))
            })?;
        let claimed: VerifyingKey = header(wire::header::RELAY_KEY)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                RelayError::Redirect(format!(
                    "the redirect to {base} names no valid `{}`; not followed",
                    wire::header::RELAY_KEY
                ))
            })?;
        self.allow_redirect(id, &base, &claimed).await?;
        let info = fetch_info(&self.http, &base, &self.clock)
            .await
            .map_err(|err| {
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
            .with_redirects(self.redirects.clone())
            .with_clock(self.clock.clone()))
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
                && crate::relay::set::normalize_url(peer.url.as_str()).is_ok_and(|url| url == base)
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
    pub(super) fn after_transfer(&self, asked: &RelayClient, err: RelayError) -> RelayError {
        if self.url == asked.url && self.key == asked.key {
            return err;
        }
        if err.is_absent() {
            // Kept as is: the peer no longer holds it, an absent blob.
            return err;
        }
        RelayError::Redirect(format!("transferred to {}: {err}", self.url))
    }
}
