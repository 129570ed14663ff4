//! The identity's mailbox on its relays: the identity log, with each
//! device's own `id` head pointing at the newest entry it knows. (Each
//! device's operation log and snapshots live in the same mailbox:
//! `client/sync.rs`.)
//!
//! The mailbox key is derived from the current vault key, so it moves to a
//! new mailbox when the vault key rotates. Heads are owned (PROTOCOL.md
//! §4.9): a device writes only its own slots, so no other device, a stolen
//! one included, can move or freeze them. A rotating device leaves its own
//! `id` head in the old mailbox pointing at the log that announces the new
//! generation: devices still reading the old mailbox find their way.

use bytes::Bytes;
use futures_util::future::join_all;

use cairn_proto::{
    BlobId, HeadRecord, IdentityLogEntry, SignedRecord, SigningKey, Slot, Timestamp,
};

use super::Client;
use crate::error::{Error, RelayError, Result};
use crate::fork::Choice;
use crate::identity::IdentityLog;
use crate::keys::VaultKey;
use crate::relay::{Head, HeadWrite, RelayClient, RelaySet, Role, sign_owned, unix_now};

/// Most identity-log entries fetched in one refresh: a lying relay cannot
/// keep a client walking forever.
const MAX_LOG_WALK: usize = 65_536;

/// A legacy head for `slot` of `mailbox`, signed by the mailbox key: only
/// for a pairing rendezvous, whose mailbox key both sides derive from the
/// code (PROTOCOL.md §10.5).
pub(super) fn sign_head(
    mailbox: &SigningKey,
    slot: Slot,
    seq: u64,
    target: BlobId,
) -> Result<SignedRecord> {
    let head = HeadRecord {
        mailbox: mailbox.verifying_key(),
        slot,
        seq,
        target,
        timestamp: Timestamp(unix_now()),
    };
    SignedRecord::sign(&head, mailbox).map_err(|err| Error::Invalid(format!("head: {err}")))
}

pub(super) fn clients(http: &reqwest::Client, set: &RelaySet) -> Vec<RelayClient> {
    set.entries()
        .iter()
        .map(|r| RelayClient::new(http.clone(), &r.url, r.key))
        .collect()
}

/// Every identity head in `mailbox` on any relay, highest first.
async fn identity_heads(relays: &[RelayClient], mailbox: &SigningKey) -> Vec<Head> {
    let key = mailbox.verifying_key();
    let answers = join_all(relays.iter().map(|r| r.list_heads(&key))).await;
    let mut heads: Vec<Head> = answers
        .into_iter()
        .filter_map(|a| a.ok())
        .flat_map(|(heads, _)| heads)
        .filter(|h| h.role() == Role::Identity)
        .collect();
    heads.sort_by_key(|h| std::cmp::Reverse(h.seq));
    heads
}

/// This device's own head for `role`, signed for `mailbox`.
pub(super) fn sign_own_head(
    mailbox: &SigningKey,
    device: &SigningKey,
    role: Role,
    seq: u64,
    target: BlobId,
) -> Result<SignedRecord> {
    sign_owned(mailbox, device, role, seq, target).map_err(Error::Invalid)
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
    let mut failures = Vec::new();
    for relay in relays {
        match relay.fetch_bytes(id, max).await {
            Ok(bytes) => return Ok(bytes),
            Err(err) => {
                if matches!(err, crate::RelayError::WrongBytes(_)) {
                    lied(relay);
                }
                failures.push(format!("{}: {err}", relay.url()));
            }
        }
    }
    Err(Error::Unavailable {
        id: *id,
        failures: failures.join("; "),
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

/// Walks back from `target` to the first entry `known` holds (or to entry
/// 0) and returns the log that ends at `target`, verified: an extension of
/// `known`, a part of it, or a fork from it ([`crate::fork::choose`] tells
/// which). Stops at any entry already held, so a fork costs only its own
/// entries.
pub(super) async fn fetch_log(
    relays: &[RelayClient],
    root: &cairn_proto::VerifyingKey,
    known: Option<&IdentityLog>,
    target: BlobId,
) -> Result<IdentityLog, FetchLogError> {
    let mut fetched = Vec::new();
    let mut next = Some(target);
    let mut attach = None;
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
        let bytes = fetch_small(relays, &id, cairn_proto::MAX_ENVELOPE_LEN)
            .await
            .map_err(FetchLogError::Unavailable)?;
        let entry = SignedRecord::from_bytes(&bytes)
            .ok()
            .and_then(|r| r.verify::<IdentityLogEntry>().ok())
            .ok_or_else(|| FetchLogError::Invalid(format!("log entry {id} is not valid")))?;
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

/// The log that ends at `target`, fetched whole and verified (for a device
/// that holds none yet).
pub(super) async fn fetch_whole_log(
    relays: &[RelayClient],
    root: &cairn_proto::VerifyingKey,
    target: BlobId,
) -> Result<IdentityLog> {
    Ok(fetch_log(relays, root, None, target).await?)
}

/// Finds an identity's log with nothing but its root key: vault generation 1
/// is derived from it, its mailbox holds the log, and each rotation leads to
/// the next mailbox.
pub(super) async fn find_log_with_root(
    http: &reqwest::Client,
    set: &RelaySet,
    root: &SigningKey,
) -> Result<IdentityLog> {
    let relays = clients(http, set);
    let root_key = root.verifying_key();
    let mut log: Option<IdentityLog> = None;
    let mut generation = 1;
    loop {
        let mailbox = VaultKey::derive(root, generation).mailbox();
        // Every candidate is tried, not just the highest: a head's `seq` is
        // its writer's claim, and a stolen device can claim any. Forks are
        // decided by the root key's authority (`crate::fork`).
        for head in identity_heads(&relays, &mailbox).await {
            if log
                .as_ref()
                .is_some_and(|l| l.position_of(&head.target).is_some())
            {
                continue;
            }
            let fetched = match fetch_log(&relays, &root_key, log.as_ref(), head.target).await {
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
            _ => return Ok(found),
        }
    }
}

impl Client {
    pub(super) fn relay_clients(&self) -> Vec<RelayClient> {
        clients(&self.http, &self.relays)
    }

    /// This device's own `id` head for the log it holds, in `vault`'s
    /// mailbox.
    pub(super) fn identity_head(&self, vault: &VaultKey) -> Result<SignedRecord> {
        sign_own_head(
            &vault.mailbox(),
            &self.device.signing,
            Role::Identity,
            self.log.state().last_seq(),
            self.log.state().head(),
        )
    }

    /// Stores the identity log on every relay in the set, with this
    /// device's `id` head in the current mailbox. Returns the relays that
    /// refused, with why.
    pub(super) async fn publish_identity(&self) -> Result<Vec<(String, RelayError)>> {
        let vault = self.current_vault()?;
        let head = self.identity_head(&vault)?;
        let relays = self.relay_clients();
        let results = join_all(relays.iter().map(|relay| self.publish_log_to(relay, &head))).await;
        Ok(relays
            .iter()
            .zip(results)
            .filter_map(|(relay, result)| result.err().map(|e| (relay.url().to_owned(), e)))
            .collect())
    }

    pub(super) async fn publish_log_to(
        &self,
        relay: &RelayClient,
        head: &SignedRecord,
    ) -> Result<(), RelayError> {
        let key = self.device.upload_key(relay.key());
        for entry in self.log.entries() {
            let id = BlobId::of(entry);
            relay
                .put_bytes(&id, Bytes::copy_from_slice(entry), &key, 0)
                .await?;
        }
        put_own_head(relay, head, "id").await
    }

    /// Deletes this device's copies of `id` wherever it has them; failures
    /// only mean the copy expires by retention instead.
    pub(super) async fn delete_own_everywhere(&self, relays: &[RelayClient], id: &BlobId) {
        join_all(relays.iter().map(|relay| async {
            let key = self.device.upload_key(relay.key());
            if let Err(err) = relay.delete(id, &key).await {
                tracing::debug!(relay = relay.url(), %err, "old copy left to retention");
            }
        }))
        .await;
    }
}
