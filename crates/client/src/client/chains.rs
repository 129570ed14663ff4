//! Each relay's own chain of a device's operations (per-relay layout,
//! PROTOCOL.md §10.7 "Metadata copies").
//!
//! Operations are merged, cached and named by their *core* (the sealed,
//! signed operation), whose id is the same wherever it is. What a relay
//! stores is its own copy of the core ([`crate::relay_copy`]), which links
//! to the previous operation's copy *on that relay*: a device's head there
//! names the newest copy, and a reader walks back through the links,
//! checking each step against the core id the signed operation names. A
//! relay that lost a step, or serves another one, fails that walk, and the
//! reader walks another relay's chain instead.
//!
//! Cores stored as they are (the shared layout, and releases before
//! copies) are read the same way: their links are their own core ids.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use cairn_proto::{BlobId, VerifyingKey};

use super::Client;
use super::mailbox::put_own_head;
use super::sync::relay_error;
use crate::crdt::Position;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::relay::{RelayClient, Role};
use crate::relay_copy::{self, Links, Opened};

/// Where one relay's chain of one device's operations ends: the copy the
/// device's head there names, and the operation in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Link {
    /// The operation's position.
    pub seq: u64,
    /// The blob that holds it on that relay.
    #[serde(with = "crate::text_serde")]
    pub at: BlobId,
    /// The operation's core id.
    #[serde(with = "crate::text_serde")]
    pub op: BlobId,
}

/// A metadata blob fetched from a relay, opened down to its core.
pub(super) struct Fetched {
    /// The core's id: the operation's (or the table's) identity.
    pub core_id: BlobId,
    /// The core's bytes.
    pub core: Vec<u8>,
    /// Its links on that relay: `None` for a core stored as it is.
    pub links: Option<Links>,
}

impl Fetched {
    /// Where the previous operation is on the relay it came from, given the
    /// core id the signed operation names.
    pub(super) fn prev_at(&self, prev: BlobId) -> BlobId {
        self.links.as_ref().and_then(|l| l.prev).unwrap_or(prev)
    }
}

/// The relays to read one relay's chains from, that relay first, and its
/// copy keys (derived once per reader).
pub(super) struct ChainReader {
    order: Vec<RelayClient>,
    keys: Vec<Zeroizing<[u8; 32]>>,
}

impl ChainReader {
    /// The relay whose chains these are.
    pub(super) fn relay(&self) -> Option<&RelayClient> {
        self.order.first()
    }

    /// The same relay alone: for its own copies, which no other relay has.
    pub(super) fn alone(&self) -> Self {
        Self {
            order: self.order.iter().take(1).cloned().collect(),
            keys: self.keys.clone(),
        }
    }

    /// The relays to ask, in order.
    pub(super) fn relays(&self) -> &[RelayClient] {
        &self.order
    }

    /// Its copy keys.
    pub(super) fn keys(&self) -> &[Zeroizing<[u8; 32]>] {
        &self.keys
    }
}

/// What [`Client::fetch_core`] keeps in the cache besides the core.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// The core alone.
    Core,
    /// The copy too.
    Copy,
}

/// A copy bigger than the core it holds by at most this many bytes plus
/// its padding (nonce, tag, magic, links of a snapshot's covers).
pub(super) fn copy_bound(core_max: usize) -> usize {
    // Padmé rounds up by less than 1/8 beyond a few bytes.
    core_max + core_max / 8 + (64 << 10)
}

impl Client {
    /// Whether what this device writes now is stored as a copy per relay
    /// (the per-relay layout) rather than as it is.
    pub(super) fn writes_copies(&self) -> bool {
        self.current_layout().unwrap_or(Layout::PerRelay) == Layout::PerRelay
    }

    /// The metadata copy key of every vault generation this device holds,
    /// for the relay with key `relay`.
    pub(super) fn copy_keys(&self, relay: &VerifyingKey) -> Vec<Zeroizing<[u8; 32]>> {
        self.vault_keys()
            .map(|vaults| {
                vaults
                    .iter()
                    .rev()
                    .map(|v| v.metadata_copy_key(relay))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The copy of `core` with `links` for `relay` in the current
    /// generation.
    pub(super) fn seal_copy(
        &self,
        relay: &VerifyingKey,
        core: &[u8],
        links: &Links,
    ) -> Result<(BlobId, Vec<u8>)> {
        let key = self.current_vault()?.metadata_copy_key(relay);
        Ok(relay_copy::seal(&key, core, links))
    }

    /// A reader of the chains on `relays[index]`: that relay first, the
    /// others only for cores stored as they are.
    pub(super) fn chain_reader(&self, relays: &[RelayClient], index: usize) -> ChainReader {
        let first = relays.get(index);
        let order: Vec<RelayClient> = first
            .into_iter()
            .chain(
                relays
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| *i != index && first.is_none_or(|f| f.url() != r.url()))
                    .map(|(_, r)| r),
            )
            .cloned()
            .collect();
        let keys = order
            .first()
            .map(|relay| self.copy_keys(relay.key()))
            .unwrap_or_default();
        ChainReader { order, keys }
    }

    /// The blob `at`, from the cache or from the reader's relays, opened
    /// down to its core. The core is cached under its own id, so that what
    /// was merged can be sent again; the copy itself only when `keep` says
    /// so (a head, read again by the walk that follows).
    pub(super) async fn fetch_core(
        &self,
        reader: &ChainReader,
        at: &BlobId,
        max: usize,
        keep: Keep,
    ) -> Result<Fetched> {
        let bytes = match self.cached_op(at) {
            Some(bytes) if BlobId::of(&bytes) == *at => bytes,
            _ => {
                self.fetch_small_scored(&reader.order, at, copy_bound(max))
                    .await?
            }
        };
        match relay_copy::open(&reader.keys, &bytes) {
            Opened::Copy { core, links } => {
                let core_id = BlobId::of(&core);
                if core.len() > max {
                    return Err(Error::Invalid(format!(
                        "the copy {at} holds {} bytes, more than {max}",
                        core.len()
                    )));
                }
                self.cache_op(&core_id, &core)?;
                if keep == Keep::Copy {
                    self.cache_copy(at, &bytes)?;
                }
                Ok(Fetched {
                    core_id,
                    core,
                    links: Some(links),
                })
            }
            Opened::Plain if bytes.len() <= max => {
                self.cache_op(at, &bytes)?;
                Ok(Fetched {
                    core_id: *at,
                    core: bytes,
                    links: None,
                })
            }
            Opened::Plain => Err(Error::Invalid(format!(
                "the blob {at} is {} bytes, more than {max}",
                bytes.len()
            ))),
            Opened::Malformed => Err(Error::Invalid(format!(
                "the copy {at} opens and holds no operation: written by a holder of the \
                 vault key"
            ))),
        }
    }

    /// Stores on `relay` this device's operations after `base` (that
    /// relay's chain as it stands: position and blob) up to `to`, each as
    /// that relay's copy linking to the one before, and points this
    /// device's head there at the newest. `top` adds the newest one's
    /// other links (a snapshot's table and covers). Returns where the chain
    /// now ends.
    ///
    /// Operations come from the cache, where a device keeps its own; when
    /// one is missing there, the chain starts after it, linking to the core
    /// id (a reader that needs to go further walks another relay).
    pub(super) async fn place(
        &self,
        relay: &RelayClient,
        base: Option<(u64, BlobId)>,
        to: Position,
        top: Links,
        pow: u8,
    ) -> Result<Link> {
        let keys = self.vault_secrets()?;
        let floor = base.map_or(0, |(seq, _)| seq);
        // Newest first, back to the base.
        let mut cores = Vec::new();
        let mut next = Some((to.seq, to.op));
        while let Some((seq, id)) = next {
            if seq <= floor {
                break;
            }
            let Some(core) = self.cached_op(&id).filter(|c| BlobId::of(c) == id) else {
                break;
            };
            let op = self.open_op(&core, &keys)?;
            next = op.prev.map(|prev| (seq - 1, prev));
            cores.push((seq, op.prev, core));
        }
        if cores.is_empty() {
            return Err(Error::Invalid(format!(
                "operation {} is not in this device's cache",
                to.seq
            )));
        }
        let owner = self.owner_key(relay.key())?;
        let mut prev_at: Option<BlobId> = None;
        let mut top = Some(top);
        let mut newest = None;
        for (index, (seq, prev, core)) in cores.into_iter().rev().enumerate() {
            let mut links = if seq == to.seq {
                top.take().unwrap_or_default()
            } else {
                Links::default()
            };
            // The first copy links to the base where the chain joins it,
            // else to the core id the operation names.
            links.prev = match (index, prev, base) {
                (_, None, _) => None,
                (0, Some(_), Some((base_seq, base_at))) if base_seq + 1 == seq => Some(base_at),
                (0, Some(prev), _) => Some(prev),
                (_, Some(_), _) => prev_at,
            };
            let (at, copy) = self.seal_copy(relay.key(), &core, &links)?;
            self.cache_copy(&at, &copy)?;
            relay
                .put_bytes(&at, Bytes::from(copy), &owner, pow)
                .await
                .map_err(|source| relay_error(relay, source))?;
            prev_at = Some(at);
            newest = Some(at);
        }
        let at = newest.ok_or_else(|| Error::Invalid("nothing to place".into()))?;
        let vault = self.current_vault()?;
        let head = self.own_head_on(
            &vault,
            relay.key(),
            Role::Ops(self.device_key()),
            to.seq,
            at,
        )?;
        put_own_head(relay, &head, "ops")
            .await
            .map_err(|source| relay_error(relay, source))?;
        Ok(Link {
            seq: to.seq,
            at,
            op: to.op,
        })
    }
}
