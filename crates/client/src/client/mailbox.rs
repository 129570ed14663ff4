//! The identity's mailbox on its relays: the identity log (slot `identity`)
//! and the manifest (slot `manifest`), each a head pointing at a blob.
//!
//! The mailbox key is derived from the current vault key, so it moves to a
//! new mailbox when the vault key rotates. A rotation leaves a last head in
//! the old mailbox, at the highest sequence number there is, pointing at
//! the log that announces the new generation: devices still reading the old
//! mailbox find their way, and nobody (a revoked device included) can write
//! there again.

use bytes::Bytes;
use futures_util::future::join_all;

use cairn_proto::{
    BlobId, HeadRecord, IdentityLogEntry, SignedRecord, SigningKey, Slot, Timestamp, Verified,
};

use super::Client;
use crate::error::{Error, RelayError, Result};
use crate::identity::IdentityLog;
use crate::keys::VaultKey;
use crate::manifest::Manifest;
use crate::relay::{HeadWrite, RelayClient, RelaySet, unix_now};
use crate::seal;

/// Most identity-log entries fetched in one refresh: a lying relay cannot
/// keep a client walking forever.
const MAX_LOG_WALK: usize = 65_536;
/// Largest manifest blob accepted.
const MAX_MANIFEST: usize = 64 << 20;
/// Attempts at a manifest change when other devices keep winning the race.
const MANIFEST_RETRIES: usize = 8;

pub(super) fn identity_slot() -> Slot {
    #[allow(clippy::expect_used, reason = "a constant valid slot name")]
    Slot::new("identity").expect("valid slot")
}

pub(super) fn manifest_slot() -> Slot {
    #[allow(clippy::expect_used, reason = "a constant valid slot name")]
    Slot::new("manifest").expect("valid slot")
}

/// A signed head for `slot` of `mailbox`.
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

/// The highest valid head in `slot` of `mailbox` on any relay, with the
/// relays' failures.
async fn best_heads(
    relays: &[RelayClient],
    mailbox: &SigningKey,
    slot: &Slot,
) -> Vec<Verified<HeadRecord>> {
    let key = mailbox.verifying_key();
    let answers = join_all(relays.iter().map(|r| r.get_head(&key, slot))).await;
    let mut heads: Vec<_> = answers
        .into_iter()
        .filter_map(|a| a.ok().flatten())
        .collect();
    heads.sort_by_key(|h| std::cmp::Reverse(h.seq));
    heads
}

/// Fetches a small blob from the first relay that delivers it intact.
pub(super) async fn fetch_small(
    relays: &[RelayClient],
    id: &BlobId,
    max: usize,
) -> Result<Vec<u8>> {
    let mut failures = Vec::new();
    for relay in relays {
        match relay.fetch_bytes(id, max).await {
            Ok(bytes) => return Ok(bytes),
            Err(err) => failures.push(format!("{}: {err}", relay.url())),
        }
    }
    Err(Error::Unavailable {
        id: *id,
        failures: failures.join("; "),
    })
}

/// Walks back from `target` to the end of `known` (or to the genesis entry)
/// and returns the log extended by what it found, verified.
pub(super) async fn extend_log(
    relays: &[RelayClient],
    root: &cairn_proto::VerifyingKey,
    known: Option<&IdentityLog>,
    target: BlobId,
) -> Result<IdentityLog> {
    let stop = known.map(|log| log.state().head());
    let mut fetched = Vec::new();
    let mut next = Some(target);
    while let Some(id) = next {
        if Some(id) == stop {
            break;
        }
        if fetched.len() >= MAX_LOG_WALK {
            return Err(Error::IdentityNotFound(
                "the identity log on the relays is implausibly long".into(),
            ));
        }
        let bytes = fetch_small(relays, &id, cairn_proto::MAX_ENVELOPE_LEN).await?;
        let entry = SignedRecord::from_bytes(&bytes)
            .ok()
            .and_then(|r| r.verify::<IdentityLogEntry>().ok())
            .ok_or_else(|| Error::IdentityNotFound(format!("log entry {id} is not valid")))?;
        next = entry.prev;
        fetched.push(bytes);
    }
    if next.is_none() && stop.is_some() {
        return Err(Error::IdentityNotFound(
            "the identity log on the relays does not extend this device's (a fork or rollback)"
                .into(),
        ));
    }
    fetched.reverse();
    let mut entries = known.map(|l| l.entries().to_vec()).unwrap_or_default();
    entries.extend(fetched);
    IdentityLog::verify(root, entries)
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
        for head in best_heads(&relays, &mailbox, &identity_slot()).await {
            let is_new = log.as_ref().is_none_or(|known| {
                head.target != known.state().head() && head.seq > known.state().last_seq()
            });
            if !is_new {
                continue;
            }
            match extend_log(&relays, &root_key, log.as_ref(), head.target).await {
                Ok(extended) => {
                    log = Some(extended);
                    break;
                }
                Err(err) => tracing::warn!(%err, "ignoring an identity head"),
            }
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

    /// Brings the identity log up to date from the relays: follows the
    /// highest head in the current mailbox, and after each vault rotation
    /// the next one.
    pub async fn refresh_identity(&mut self) -> Result<bool> {
        let relays = self.relay_clients();
        if relays.is_empty() {
            return Ok(false);
        }
        let mut changed = false;
        loop {
            let Some(vault) = self.vault_keys()?.pop() else {
                return Ok(changed);
            };
            let heads = best_heads(&relays, &vault.mailbox(), &identity_slot()).await;
            let last = self.log.state().last_seq();
            let mut advanced = false;
            for head in heads.iter().filter(|h| h.seq > last || h.seq == u64::MAX) {
                if head.target == self.log.state().head() {
                    continue;
                }
                match extend_log(&relays, &self.config.root, Some(&self.log), head.target).await {
                    Ok(log) if log.state().last_seq() > last => {
                        self.log = log;
                        self.save_log()?;
                        changed = true;
                        advanced = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "ignoring an identity head"),
                }
            }
            if !advanced {
                return Ok(changed);
            }
        }
    }

    /// Stores the identity log on every relay in the set, with a head in the
    /// current mailbox. Returns the relays that refused, with why.
    pub(super) async fn publish_identity(&self) -> Result<Vec<(String, RelayError)>> {
        let vault = self.current_vault()?;
        let head = sign_head(
            &vault.mailbox(),
            identity_slot(),
            self.log.state().last_seq(),
            self.log.state().head(),
        )?;
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
        let pow = relay.info().await?.limits.pow_bits;
        for entry in self.log.entries() {
            let id = BlobId::of(entry);
            relay
                .put_bytes(&id, Bytes::copy_from_slice(entry), &key, pow)
                .await?;
        }
        match relay.put_head(head).await? {
            HeadWrite::Stored => Ok(()),
            // Someone published this log or a longer one already.
            HeadWrite::Stale(_) => Ok(()),
        }
    }

    /// The newest manifest any relay holds (empty when there is none).
    pub(super) async fn read_manifest(&self) -> Result<Manifest> {
        let relays = self.relay_clients();
        let vault = self.current_vault()?;
        let keys: Vec<_> = self.vault_keys()?.into_iter().map(|k| k.secret).collect();
        let heads = best_heads(&relays, &vault.mailbox(), &manifest_slot()).await;
        let mut problems = Vec::new();
        for head in &heads {
            let opened = async {
                let sealed = fetch_small(&relays, &head.target, MAX_MANIFEST).await?;
                let plain = seal::open_bytes(&sealed, &keys).map_err(|err| Error::Unsealable {
                    id: head.target,
                    reason: err.to_string(),
                })?;
                let manifest = Manifest::from_json(&plain)?;
                if manifest.seq != head.seq {
                    return Err(Error::Invalid("manifest and head disagree".into()));
                }
                Ok(manifest)
            }
            .await;
            match opened {
                Ok(manifest) => return Ok(manifest),
                Err(err) => problems.push(err.to_string()),
            }
        }
        if heads.is_empty() || problems.is_empty() {
            Ok(Manifest::default())
        } else {
            Err(Error::Invalid(format!(
                "no relay served a readable manifest: {}",
                problems.join("; ")
            )))
        }
    }

    /// Applies `change` to the newest manifest and publishes the result on
    /// every relay; retries from the newest if another device got there
    /// first. Returns what `change` returned.
    pub(super) async fn update_manifest<T>(
        &self,
        mut change: impl FnMut(&mut Manifest) -> Result<T>,
    ) -> Result<(T, Vec<String>)> {
        let relays = self.relay_clients();
        let vault = self.current_vault()?;
        let mailbox = vault.mailbox();
        for _ in 0..MANIFEST_RETRIES {
            let mut manifest = self.read_manifest().await?;
            let old_blob = self.manifest_blob_seen(&relays, &mailbox).await;
            let result = change(&mut manifest)?;
            manifest.seq += 1;
            let (id, sealed) = seal::seal_bytes(&manifest.to_json(), &vault.secret.public())
                .map_err(|err| Error::Invalid(format!("cannot seal the manifest: {err}")))?;
            let sealed = Bytes::from(sealed);
            let head = sign_head(&mailbox, manifest_slot(), manifest.seq, id)?;
            let outcomes = join_all(relays.iter().map(|relay| async {
                let key = self.device.upload_key(relay.key());
                let pow = relay.info().await?.limits.pow_bits;
                relay.put_bytes(&id, sealed.clone(), &key, pow).await?;
                relay.put_head(&head).await
            }))
            .await;
            let mut stored = 0;
            let mut stale = false;
            let mut failures = Vec::new();
            for (relay, outcome) in relays.iter().zip(outcomes) {
                match outcome {
                    Ok(HeadWrite::Stored) => stored += 1,
                    Ok(HeadWrite::Stale(_)) => stale = true,
                    Err(err) => failures.push(format!("{}: {err}", relay.url())),
                }
            }
            if stale {
                continue;
            }
            if stored == 0 {
                return Err(Error::Invalid(format!(
                    "no relay accepted the updated file list: {}",
                    failures.join("; ")
                )));
            }
            if let Some(old) = old_blob.filter(|old| *old != id) {
                self.delete_own_everywhere(&relays, &old).await;
            }
            return Ok((result, failures));
        }
        Err(Error::Invalid(
            "other devices kept changing the file list at the same time; try again".into(),
        ))
    }

    /// The blob the newest manifest head points at, if any.
    async fn manifest_blob_seen(
        &self,
        relays: &[RelayClient],
        mailbox: &SigningKey,
    ) -> Option<BlobId> {
        best_heads(relays, mailbox, &manifest_slot())
            .await
            .first()
            .map(|h| h.target)
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
