//! The peer list: who this relay cooperates with, and what each last said
//! about itself.
//!
//! Peers come from the operator (configured) and, within a bound the
//! operator sets, from the info documents of configured peers (learned:
//! peer exchange). There is no registry to ask. Every peer's info document
//! is fetched and its signature checked against the key the relay expects;
//! a document signed by anyone else is ignored.

use std::sync::RwLock;
use std::time::Instant;

use cairn_proto::{RelayInfo, RelayRef, SignedRecord, VerifyingKey};

/// What a peer last said about itself, verified.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    pub(crate) capacity_free: u64,
    pub(crate) capacity_total: u64,
    pub(crate) retention_secs: u64,
    pub(crate) max_blob_size: u64,
    /// The peers it lists (candidates for peer exchange).
    pub(crate) peers: Vec<RelayRef>,
    pub(crate) fetched: Instant,
}

/// One peer and what is known of it.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) relay: RelayRef,
    /// Learned from another peer's list rather than configured.
    pub(crate) learned: bool,
    pub(crate) info: Option<PeerInfo>,
    /// Why the last attempt to reach it failed, if it did.
    pub(crate) last_error: Option<String>,
}

impl Peer {
    /// Free bytes the peer advertised, if its document is fresh enough to
    /// act on (younger than `max_age_secs`).
    pub(crate) fn free(&self, max_age_secs: u64) -> Option<u64> {
        let info = self.info.as_ref()?;
        (info.fetched.elapsed().as_secs() <= max_age_secs).then_some(info.capacity_free)
    }
}

/// The peer list, shared by the HTTP handlers and the background tasks.
#[derive(Debug)]
pub(crate) struct PeerSet {
    me: VerifyingKey,
    peers: RwLock<Vec<Peer>>,
    max_learned: usize,
}

impl PeerSet {
    pub(crate) fn new(me: VerifyingKey, configured: &[RelayRef], max_learned: usize) -> Self {
        let set = Self {
            me,
            peers: RwLock::new(Vec::new()),
            max_learned,
        };
        set.set_configured(configured);
        set
    }

    /// Replaces the configured peers, keeping what is known of those that
    /// stay and every learned peer not now configured.
    pub(crate) fn set_configured(&self, configured: &[RelayRef]) {
        let Ok(mut peers) = self.peers.write() else {
            return;
        };
        let old = std::mem::take(&mut *peers);
        for relay in configured.iter().filter(|r| r.key != self.me) {
            let known = old.iter().find(|p| p.relay.key == relay.key);
            peers.push(Peer {
                relay: relay.clone(),
                learned: false,
                info: known.and_then(|p| p.info.clone()),
                last_error: known.and_then(|p| p.last_error.clone()),
            });
        }
        for peer in old.into_iter().filter(|p| p.learned) {
            if !peers.iter().any(|p| p.relay.key == peer.relay.key) {
                peers.push(peer);
            }
        }
    }

    /// A copy of the list.
    pub(crate) fn snapshot(&self) -> Vec<Peer> {
        self.peers.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// The peer with `key`, if it is on the list.
    pub(crate) fn find(&self, key: &VerifyingKey) -> Option<Peer> {
        let peers = self.peers.read().ok()?;
        peers.iter().find(|p| &p.relay.key == key).cloned()
    }

    /// Whether `key` is a peer's: only peers may push replicas, ask to
    /// reconcile, or hand over blobs.
    pub(crate) fn contains(&self, key: &VerifyingKey) -> bool {
        self.peers
            .read()
            .is_ok_and(|p| p.iter().any(|p| &p.relay.key == key))
    }

    /// The configured peers, as announced in the info document.
    pub(crate) fn configured(&self) -> Vec<RelayRef> {
        self.peers
            .read()
            .map(|p| {
                p.iter()
                    .filter(|p| !p.learned)
                    .map(|p| p.relay.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes `bytes` off the free space last advertised by `key`, so that
    /// a run of transfers spreads over peers instead of piling onto the one
    /// that looked emptiest at the last refresh.
    pub(crate) fn note_stored(&self, key: &VerifyingKey, bytes: u64) {
        if let Ok(mut peers) = self.peers.write()
            && let Some(info) = peers
                .iter_mut()
                .find(|p| &p.relay.key == key)
                .and_then(|p| p.info.as_mut())
        {
            info.capacity_free = info.capacity_free.saturating_sub(bytes);
        }
    }

    /// Records the outcome of fetching `key`'s info document. A verified
    /// document from a configured peer also offers its own peers as
    /// candidates, learned up to the operator's bound. Returns how many
    /// peers were learned.
    pub(crate) fn record(&self, key: &VerifyingKey, outcome: Result<PeerInfo, String>) -> usize {
        let Ok(mut peers) = self.peers.write() else {
            return 0;
        };
        let Some(peer) = peers.iter_mut().find(|p| &p.relay.key == key) else {
            return 0;
        };
        let candidates = match outcome {
            Ok(info) => {
                let candidates = if peer.learned {
                    // Only the operator's own choices vouch for others, so
                    // exchange cannot snowball through strangers.
                    Vec::new()
                } else {
                    info.peers.clone()
                };
                peer.info = Some(info);
                peer.last_error = None;
                candidates
            }
            Err(reason) => {
                peer.last_error = Some(reason);
                return 0;
            }
        };
        let mut learned = 0;
        for candidate in candidates {
            let count = peers.iter().filter(|p| p.learned).count();
            if count >= self.max_learned {
                break;
            }
            if candidate.key == self.me || peers.iter().any(|p| p.relay.key == candidate.key) {
                continue;
            }
            tracing::info!(peer = %candidate.key, url = candidate.url.as_str(), from = %key, "learned a peer");
            peers.push(Peer {
                relay: candidate,
                learned: true,
                info: None,
                last_error: None,
            });
            learned += 1;
        }
        learned
    }
}

/// Checks a peer's info document: it must decode, verify, and be signed by
/// `expected`.
pub(crate) fn verify_info(expected: &VerifyingKey, record: &str) -> Result<PeerInfo, String> {
    let envelope = SignedRecord::from_base64url(record)
        .map_err(|e| format!("info document does not decode: {e}"))?;
    let verified = envelope
        .verify::<RelayInfo>()
        .map_err(|e| format!("info document does not verify: {e}"))?;
    if verified.signer() != expected {
        return Err(format!(
            "info document is signed by {}, not the configured key {expected}",
            verified.signer()
        ));
    }
    let info = verified.record();
    Ok(PeerInfo {
        capacity_free: info.capacity_free,
        capacity_total: info.capacity_total,
        retention_secs: info.retention_secs,
        max_blob_size: info.max_blob_size,
        peers: info.peers.clone(),
        fetched: Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::{RelayUrl, SigningKey};

    fn relay(n: u8) -> RelayRef {
        RelayRef {
            url: RelayUrl::new(format!("http://127.0.0.{n}:7070")).unwrap(),
            key: SigningKey::from_seed(&[n; 32]).verifying_key(),
        }
    }

    fn info(peers: Vec<RelayRef>) -> PeerInfo {
        PeerInfo {
            capacity_free: 1,
            capacity_total: 2,
            retention_secs: 3,
            max_blob_size: 4,
            peers,
            fetched: Instant::now(),
        }
    }

    #[test]
    fn exchange_learns_from_configured_peers_only_and_within_the_bound() {
        let me = relay(1);
        let set = PeerSet::new(me.key, &[relay(2)], 2);
        // Itself, a known peer and three strangers: two strangers are learned.
        let offered = vec![me.clone(), relay(2), relay(3), relay(4), relay(5)];
        assert_eq!(set.record(&relay(2).key, Ok(info(offered))), 2);
        assert!(set.contains(&relay(3).key) && set.contains(&relay(4).key));
        assert!(!set.contains(&relay(5).key) && !set.contains(&me.key));
        // A learned peer's list teaches nothing.
        let mut bigger = PeerSet::new(me.key, &[relay(2)], 10);
        bigger.record(&relay(2).key, Ok(info(vec![relay(3)])));
        assert_eq!(bigger.record(&relay(3).key, Ok(info(vec![relay(6)]))), 0);
        assert!(!bigger.contains(&relay(6).key));
        // The info document announces configured peers only.
        bigger.set_configured(&[relay(2), relay(7)]);
        let announced: Vec<_> = bigger.configured().into_iter().map(|r| r.key).collect();
        assert_eq!(announced, vec![relay(2).key, relay(7).key]);
        assert!(bigger.contains(&relay(3).key), "learned peers stay");
        bigger = PeerSet::new(me.key, &[], 0);
        assert!(bigger.snapshot().is_empty());
    }
}
