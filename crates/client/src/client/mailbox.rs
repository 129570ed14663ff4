//! The identity's mailbox on its relays: the identity log, with each
//! device's own `id` head pointing at the newest entry it knows. (Each
//! device's operation log and snapshots live in the same mailbox:
//! `client/sync.rs`.)
//!
//! The mailbox key is derived from the current vault key (and, in the
//! per-relay layout, the relay's key: `crate::layout`), so it moves to a
//! new mailbox when the vault key rotates. Heads are owned (PROTOCOL.md
//! §4.9): a device writes only its own slots, so no other device, a stolen
//! one included, can move or freeze them. In the per-relay layout the log
//! is one blob sealed to the generation's vault key, sealed afresh for
//! each relay (§10.7). A rotating device leaves its own `id` head in the
//! old mailbox pointing at the log that announces the new generation:
//! devices still reading the old mailbox find their way.

use bytes::Bytes;
use futures_util::future::join_all;

use cairn_api::Clock;
use cairn_proto::{
    BlobId, HeadRecord, IdentityLogEntry, SignedRecord, SigningKey, Slot, Timestamp, VerifyingKey,
};

use super::Client;
use crate::error::{Error, RelayError, Result};
use crate::fork::Choice;
use crate::identity::{IdentityLog, MAX_SEALED_LOG, SealedLogError};
use crate::keys::VaultKey;
use crate::layout::{Layout, Layouts, Mailbox};
use crate::relay::{Head, HeadWrite, RelayClient, RelaySet, Role};

/// Most identity-log entries fetched in one refresh: a lying relay cannot
/// keep a client walking forever.
const MAX_LOG_WALK: usize = 65_536;

/// A legacy head for `slot` of `mailbox`, signed by the mailbox key: only
/// for a pairing rendezvous, whose mailbox key both sides derive from the
/// code (PROTOCOL.md §10.5). Stamped `now`.
pub(super) fn sign_head(
    mailbox: &SigningKey,
    slot: Slot,
    seq: u64,
    target: BlobId,
    now: Timestamp,
) -> Result<SignedRecord> {
    let head = HeadRecord {
        mailbox: mailbox.verifying_key(),
        slot,
        seq,
        target,
        timestamp: now,
    };
    SignedRecord::sign(&head, mailbox).map_err(|err| Error::Invalid(format!("head: {err}")))
}

/// Clients for the relays of `set`, reading the time from `clock`.
pub(super) fn clients(http: &reqwest::Client, clock: &Clock, set: &RelaySet) -> Vec<RelayClient> {
    set.entries()
        .iter()
        .map(|r| RelayClient::new(http.clone(), &r.url, r.key).with_clock(clock.clone()))
        .collect()
}

/// Every identity head in the mailboxes `mailbox_of` names on `relays`,
/// with the index of the relay that listed it, highest first.
async fn identity_heads(
    relays: &[RelayClient],
    mailbox_of: impl Fn(&RelayClient) -> VerifyingKey,
) -> Vec<(usize, Head)> {
    let answers = join_all(relays.iter().map(|r| {
        let key = mailbox_of(r);
        async move { r.list_heads(&key).await }
    }))
    .await;
    let mut heads: Vec<(usize, Head)> = answers
        .into_iter()
        .enumerate()
        .filter_map(|(i, a)| a.ok().map(|(heads, _)| (i, heads)))
        .flat_map(|(i, heads)| heads.into_iter().map(move |h| (i, h)))
        .filter(|(_, h)| h.role() == Role::Identity)
        .collect();
    heads.sort_by_key(|(_, h)| std::cmp::Reverse(h.seq));
    heads
}

/// `relays` with the one at `first` first: where a per-relay copy is.
pub(super) fn starting_with(relays: &[RelayClient], first: usize) -> Vec<RelayClient> {
    let mut ordered = Vec::with_capacity(relays.len());
    ordered.extend(relays.get(first).cloned());
    ordered.extend(
        relays
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, r)| r.clone()),
    );
    ordered
}

/// Sends this device's own `head` to `relay`. A relay that already holds
/// that very head stored it (a retry after a lost answer); one holding a
/// higher head in this device's own slot is an error, since only this
/// device's key can write there.
pub(super) async fn put_own_head(
    relay: &RelayClient,
    head: &SignedRecord,
    role: &'static str,
) -> Result<(), RelayError> {
    let sent = Head::from_record(head.clone()).map_err(RelayError::Protocol)?;
    match relay.put_head(head).await? {
        HeadWrite::Stored => Ok(()),
        HeadWrite::Stale(Some(current))
            if current.seq == sent.seq && current.target == sent.target =>
        {
            Ok(())
        }
        // Only a head that verifies as this device's own proves its key
        // signed elsewhere; anything else is this relay's word alone.
        HeadWrite::Stale(Some(current))
            if current.writer == sent.writer && current.seq >= sent.seq =>
        {
            Err(RelayError::OwnSlotAhead {
                role,
                stored: current.seq,
                sent: sent.seq,
            })
        }
        HeadWrite::Stale(_) => Err(RelayError::Protocol(
            "refused the head as stale without showing a newer one signed by this device (a \
             faulty or lying relay: `cairn relay check` shows its record)"
                .into(),
        )),
    }
}

/// Fetches a small blob from the first relay that delivers it intact.
pub(super) async fn fetch_small(
    relays: &[RelayClient],
    id: &BlobId,
    max: usize,
) -> Result<Vec<u8>> {
    fetch_small_noting(relays, id, max, |_| {}).await
}

/// [`fetch_small`], telling `lied` about each relay that served bytes
/// that do not hash to the id.
pub(super) async fn fetch_small_noting(
    relays: &[RelayClient],
    id: &BlobId,
    max: usize,
    lied: impl Fn(&RelayClient),
) -> Result<Vec<u8>> {
    let mut failures = crate::Failures::new();
    for relay in relays {
        match relay.fetch_bytes(id, max).await {
            Ok(bytes) => return Ok(bytes),
            Err(err) => {
                if matches!(err, crate::RelayError::WrongBytes(_)) {
                    lied(relay);
                }
                failures.at(relay.url(), &err);
            }
        }
    }
    Err(Error::Unavailable {
        id: *id,
        failures: failures.or_else("no relay to ask"),
    })
}

/// Why a log could not be fetched from an identity head.
#[derive(Debug)]
pub(super) enum FetchLogError {
    /// No relay delivered an entry: an outage, proving nothing.
    Unavailable(Error),
    /// The entries are there and are not a valid log of this identity.
    Invalid(String),
}

impl From<FetchLogError> for Error {
    fn from(err: FetchLogError) -> Self {
        match err {
            FetchLogError::Unavailable(err) => err,
            FetchLogError::Invalid(why) => Error::IdentityNotFound(why),
        }
    }
}

/// The most bytes an identity-log copy may have: the largest log, padded,
/// with its nonce and tag.
fn max_log_copy() -> usize {
    let padded = crate::seal::padded_len(MAX_SEALED_LOG as u64);
    usize::try_from(padded + 12 + 16).unwrap_or(usize::MAX)
}

/// The log that `target` leads to, verified against `root`: a copy of
/// the whole log sealed for the first of `relays` (the one that listed the
/// head) with one of `vaults`, or an entry of a log stored as plain entries
/// (the shared layout), walked back to the first entry `known` holds (or
/// to entry 0). The result extends `known`, is a part of it, or forks from
/// it ([`crate::fork::choose`] tells which).
pub(super) async fn fetch_log(
    relays: &[RelayClient],
    root: &VerifyingKey,
    known: Option<&IdentityLog>,
    target: BlobId,
    vaults: &[VaultKey],
) -> Result<IdentityLog, FetchLogError> {
    let first = fetch_small(relays, &target, max_log_copy())
        .await
        .map_err(FetchLogError::Unavailable)?;
    let copy_keys: Vec<_> = relays
        .first()
        .map(|relay| vaults.iter().map(|v| v.log_copy_key(relay.key())).collect())
        .unwrap_or_default();
    match entry_of(&first) {
        Some(entry) => walk_log(relays, root, known, target, first, entry).await,
        None => IdentityLog::open_copy(root, &first, &copy_keys).map_err(|err| match err {
            SealedLogError::Closed | SealedLogError::Malformed => FetchLogError::Invalid(format!(
                "identity head target {target} is neither a log entry nor a log sealed to a                  vault key of this identity ({err})"
            )),
            SealedLogError::Invalid(why) => FetchLogError::Invalid(why),
        }),
    }
}

/// `bytes` as a verified identity-log entry, if they are one.
fn entry_of(bytes: &[u8]) -> Option<cairn_proto::Verified<IdentityLogEntry>> {
    SignedRecord::from_bytes(bytes)
        .ok()
        .and_then(|r| r.verify::<IdentityLogEntry>().ok())
}

/// Walks a log of plain entries back from `target`, whose bytes and entry
/// are `first`: stops at any entry `known` already holds.
async fn walk_log(
    relays: &[RelayClient],
    root: &VerifyingKey,
    known: Option<&IdentityLog>,
    target: BlobId,
    first: Vec<u8>,
    entry: cairn_proto::Verified<IdentityLogEntry>,
) -> Result<IdentityLog, FetchLogError> {
    let mut fetched = Vec::new();
    let mut next = Some(target);
    let mut attach = None;
    let mut pending = Some((first, entry));
    while let Some(id) = next {
        if let Some(position) = known.and_then(|log| log.position_of(&id)) {
            attach = Some(position);
            break;
        }
        if fetched.len() >= MAX_LOG_WALK {
            return Err(FetchLogError::Invalid(
                "the identity log on the relays is implausibly long".into(),
            ));
        }
        let (bytes, entry) = match pending.take() {
            Some(first) => first,
            None => {
                let bytes = fetch_small(relays, &id, cairn_proto::MAX_ENVELOPE_LEN)
                    .await
                    .map_err(FetchLogError::Unavailable)?;
                let entry = entry_of(&bytes).ok_or_else(|| {
                    FetchLogError::Invalid(format!("log entry {id} is not valid"))
                })?;
                (bytes, entry)
            }
        };
        next = entry.prev;
        fetched.push(bytes);
    }
    fetched.reverse();
    let mut entries = match (known, attach) {
        (Some(log), Some(position)) => {
            let keep = usize::try_from(position).map_or(0, |p| p.saturating_add(1));
            log.entries()[..keep.min(log.entries().len())].to_vec()
        }
        _ => Vec::new(),
    };
    entries.extend(fetched);
    IdentityLog::verify(root, entries).map_err(|err| FetchLogError::Invalid(err.to_string()))
}

/// Finds an identity's log with nothing but its root key: vault generation 1
/// is derived from it, its mailbox holds the log, and each rotation leads to
/// the next mailbox. Returns the log and the layout of each generation it
/// passed through.
pub(super) async fn find_log_with_root(
    http: &reqwest::Client,
    clock: &Clock,
    set: &RelaySet,
    root: &SigningKey,
) -> Result<(IdentityLog, Layouts)> {
    let relays = clients(http, clock, set);
    let root_key = root.verifying_key();
    let mut log: Option<IdentityLog> = None;
    let mut layouts = Layouts::default();
    let mut generation = 1;
    loop {
        let vault = VaultKey::derive(root, generation);
        let vaults: Vec<VaultKey> = (1..=generation)
            .map(|g| VaultKey::derive(root, g))
            .collect();
        // Once a generation is per relay, every later one is; before, the
        // per-relay mailboxes are tried first, then the shared one.
        let candidates: &[Layout] = match layouts.per_relay_from {
            Some(_) => &[Layout::PerRelay],
            None => &[Layout::PerRelay, Layout::Shared],
        };
        for &layout in candidates {
            let heads =
                identity_heads(&relays, |r| Mailbox::new(&vault, r.key(), layout).public()).await;
            if heads.is_empty() {
                continue;
            }
            layouts.learn(generation, layout);
            // Every candidate is tried, not just the highest: a head's
            // `seq` is its writer's claim, and a stolen device can claim
            // any. Forks are decided by the root key's authority
            // (`crate::fork`).
            for (index, head) in heads {
                if log
                    .as_ref()
                    .is_some_and(|l| l.position_of(&head.target).is_some())
                {
                    continue;
                }
                let from = starting_with(&relays, index);
                let fetched =
                    match fetch_log(&from, &root_key, log.as_ref(), head.target, &vaults).await {
                        Ok(fetched) => fetched,
                        Err(err) => {
                            tracing::warn!(?err, "ignoring an identity head");
                            continue;
                        }
                    };
                if head.is_owned() && fetched.state().last_seq() != head.seq {
                    tracing::warn!(
                        seq = head.seq,
                        "ignoring an identity head at a wrong position"
                    );
                    continue;
                }
                log = Some(match log.take() {
                    None => fetched,
                    Some(current) => match crate::fork::choose(&current, fetched) {
                        Choice::Keep | Choice::Fork { adopt: None, .. } => current,
                        Choice::Extend(longer)
                        | Choice::Fork {
                            adopt: Some(longer),
                            ..
                        } => longer,
                    },
                });
            }
            break;
        }
        let Some(found) = log.take() else {
            return Err(Error::IdentityNotFound(
                "no identity log for this recovery phrase on that relay: check the phrase, or \
                 try another of your relays"
                    .into(),
            ));
        };
        match found.state().vault().map(|v| v.generation) {
            Some(current) if current > generation => {
                generation = current;
                log = Some(found);
            }
            _ => return Ok((found, layouts)),
        }
    }
}

impl Client {
    pub(super) fn relay_clients(&self) -> Vec<RelayClient> {
        clients(&self.http, &self.clock, &self.relays)
    }

    /// What this device knows of each generation's layout.
    pub(super) fn layouts(&self) -> Layouts {
        self.config.layouts
    }

    /// Records that `generation` uses `layout`, saving the config when
    /// that is news.
    pub(super) fn learn_layout(&mut self, generation: u32, layout: Layout) -> Result<()> {
        let before = self.config.layouts;
        self.config.layouts.learn(generation, layout);
        if self.config.layouts != before {
            self.save_config()?;
        }
        Ok(())
    }

    /// The identity's mailbox of `vault`'s generation on the relay with key
    /// `relay`. A generation whose layout this device has not learned yet
    /// is taken to be per relay: that is what every rotation since
    /// revision 3 makes.
    pub(super) fn mailbox_on(&self, vault: &VaultKey, relay: &VerifyingKey) -> Mailbox {
        let layout = self
            .layouts()
            .of(vault.generation)
            .unwrap_or(Layout::PerRelay);
        Mailbox::new(vault, relay, layout)
    }

    /// This device's own head for `role` in `vault`'s mailbox on the relay
    /// with key `relay`.
    pub(super) fn own_head_on(
        &self,
        vault: &VaultKey,
        relay: &VerifyingKey,
        role: Role,
        seq: u64,
        target: BlobId,
    ) -> Result<SignedRecord> {
        self.mailbox_on(vault, relay)
            .sign_head(&self.device, role, seq, target, self.clock.now())
            .map_err(Error::Invalid)
    }

    /// Every key that may have written a head of this identity: its
    /// devices, enrolled or revoked, and its root.
    fn known_writers(&self) -> Vec<VerifyingKey> {
        let state = self.log.state();
        std::iter::once(self.config.root)
            .chain(state.devices().keys().copied())
            .chain(state.revoked().iter().copied())
            .collect()
    }

    /// Lists `mailbox` on `relay`, naming the device behind each head
    /// ([`Head::resolve`]). Returns the heads and how many did not verify.
    pub(super) async fn list_mailbox(
        &self,
        relay: &RelayClient,
        mailbox: &Mailbox,
    ) -> Result<(Vec<Head>, usize), RelayError> {
        let (heads, bad) = relay.list_heads(&mailbox.public()).await?;
        Ok((self.resolve_heads(mailbox, heads), bad))
    }

    /// Names the device behind each of `heads`, listed in `mailbox`, by
    /// the devices the identity log knows now.
    pub(super) fn resolve_heads(&self, mailbox: &Mailbox, heads: Vec<Head>) -> Vec<Head> {
        if mailbox.layout() == Layout::Shared {
            return heads;
        }
        let writers = mailbox.writers(self.known_writers());
        heads
            .into_iter()
            .map(|head| head.resolve(|signer| writers.get(signer).copied()))
            .collect()
    }

    /// The key that owns this identity's copies on the relay with key
    /// `relay` now: in the per-relay layout, one key shared by every
    /// device; before it, this device's own upload key.
    pub(super) fn owner_key(&self, relay: &VerifyingKey) -> Result<SigningKey> {
        Ok(self
            .mailbox_on(&self.current_vault()?, relay)
            .owner(&self.device))
    }

    /// Whether a copy recorded as stored by `device` is one this device
    /// may delete: its own, or, in the per-relay layout, any of the
    /// identity's (they share one owner key per relay).
    pub(super) fn owns_copies_of(&self, device: &VerifyingKey) -> bool {
        *device == self.device_key() || self.current_layout() == Some(Layout::PerRelay)
    }

    /// The layout of the current vault generation, when it is known.
    pub(super) fn current_layout(&self) -> Option<Layout> {
        let current = self.current_vault().ok()?;
        self.layouts().of(current.generation)
    }

    /// Whether the current vault generation still uses the shared layout of
    /// revision 2, in which every relay can read the identity log (device
    /// keys and names) and names the same mailbox. A rotation
    /// (`rotate_vault_key`) leaves it. Once it has, the log is stored as a
    /// sealed copy on every relay, an old shared mailbox included, so no
    /// relay sees plain entries again.
    pub fn in_shared_layout(&self) -> bool {
        self.current_layout() == Some(Layout::Shared)
    }

    /// Stores the identity log on every relay in the set, with this
    /// device's `id` head in the current mailbox. Returns the relays that
    /// refused, with why.
    pub(super) async fn publish_identity(&self) -> Result<Vec<(String, RelayError)>> {
        Ok(self
            .publish_identity_counting()
            .await?
            .into_iter()
            .filter_map(|(url, result)| result.err().map(|e| (url, e)))
            .collect())
    }

    /// [`Client::publish_identity`], with what each relay answered: whether
    /// it lacked the log's copy (or an entry of it) and stored it anew.
    pub(super) async fn publish_identity_counting(
        &self,
    ) -> Result<Vec<(String, Result<bool, RelayError>)>> {
        let vault = self.current_vault()?;
        let relays = self.relay_clients();
        let results = join_all(
            relays
                .iter()
                .map(|relay| self.publish_log_to(relay, &vault)),
        )
        .await;
        Ok(relays
            .iter()
            .map(|relay| relay.url().to_owned())
            .zip(results)
            .collect())
    }

    /// Stores the identity log on `relay` and points this device's own
    /// `id` head in `vault`'s mailbox there at it. Once the identity is in
    /// the per-relay layout, the log is stored as one copy sealed to
    /// `vault` for this relay alone (in an old shared mailbox too, where it
    /// announces a rotation); before, as plain entries. Returns whether the
    /// relay lacked the copy (or an entry) and stored it anew.
    pub(super) async fn publish_log_to(
        &self,
        relay: &RelayClient,
        vault: &VaultKey,
    ) -> Result<bool, RelayError> {
        let mailbox = self.mailbox_on(vault, relay.key());
        let owner = mailbox.owner(&self.device);
        let sealed = !self.in_shared_layout();
        let mut stored_new = false;
        let target = if sealed {
            let (id, copy) = self
                .log
                .seal_copy(&vault.log_copy_key(relay.key()))
                .map_err(|err| RelayError::Protocol(err.to_string()))?;
            stored_new |= relay.put_bytes(&id, Bytes::from(copy), &owner, 0).await?;
            id
        } else {
            for entry in self.log.entries() {
                let id = BlobId::of(entry);
                stored_new |= relay
                    .put_bytes(&id, Bytes::copy_from_slice(entry), &owner, 0)
                    .await?;
            }
            self.log.state().head()
        };
        let head = mailbox
            .sign_head(
                &self.device,
                Role::Identity,
                self.log.state().last_seq(),
                target,
                self.clock.now(),
            )
            .map_err(RelayError::Protocol)?;
        put_own_head(relay, &head, "id").await?;
        Ok(stored_new)
    }

    /// Deletes this identity's copies of `id` wherever this device may;
    /// failures only mean the copy expires by retention instead.
    pub(super) async fn delete_own_everywhere(&self, relays: &[RelayClient], id: &BlobId) {
        join_all(relays.iter().map(|relay| async {
            let Ok(key) = self.owner_key(relay.key()) else {
                return;
            };
            if let Err(err) = relay.delete(id, &key).await {
                tracing::debug!(relay = relay.url(), %err, "old copy left to retention");
            }
        }))
        .await;
    }
}
