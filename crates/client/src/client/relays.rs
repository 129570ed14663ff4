//! Choosing relays: adding (and pinning), removing, checking.

use std::collections::BTreeMap;
use std::time::Instant;

use futures_util::StreamExt as _;
use futures_util::future::join_all;
use serde::Serialize;

use cairn_api::Clock;
use cairn_proto::{BlobId, RelayInfo, Verified, VerifyingKey};

use super::Client;
use crate::crdt::Table;
use crate::error::{Error, Result};
use crate::relay::{Held, RelayClient, RelayEntry, check_transport, fetch_info, normalize_url};
use crate::scores::RelayScore;

/// Copies `relay check` asks each relay about: the newest ones, so a large
/// file table costs a bounded number of requests.
const MAX_PROBED_COPIES: usize = 32;
/// Copy probes in flight at once per relay (relays limit request rates).
const PROBES_IN_FLIGHT: usize = 4;

/// What adding a relay did.
#[derive(Clone, Debug, Serialize)]
pub struct RelayAdded {
    /// The entry now in the set.
    pub relay: RelayEntry,
    /// Whether the URL was already in the set (its pin was checked or
    /// replaced).
    pub already_present: bool,
    /// The key pinned before, when it was replaced.
    #[serde(serialize_with = "serialize_opt_key")]
    pub replaced_key: Option<VerifyingKey>,
    /// Retention the relay discloses, in seconds.
    pub retention_secs: u64,
    /// Free capacity it advertises, in bytes.
    pub capacity_free: u64,
    /// Problems storing the identity on it.
    pub warnings: Vec<String>,
}

/// A relay's health, as `relay check` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RelayCheck {
    /// Its URL.
    pub url: String,
    /// Its pinned key.
    #[serde(with = "crate::text_serde")]
    pub key: VerifyingKey,
    /// Whether it answered with a valid info document signed by the pinned
    /// key.
    pub ok: bool,
    /// Round trip of the info request, in milliseconds.
    pub latency_ms: u64,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// When it could not be reached: what the HTTP library said (the
    /// detail `--verbose` shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What its signed info document says, when it answered.
    pub info: Option<InfoSummary>,
    /// The copies the file table places on it, as far as checked (none when
    /// the local file table could not be read).
    pub copies: Option<CopiesCheck>,
    /// How it has behaved for this device (audits, downloads, repairs).
    pub record: Option<RelayScore>,
    /// Whether it misbehaved recently: placement puts it last and repair
    /// copies nothing onto it.
    pub flagged: bool,
}

/// The copies the file table (as of the last sync) says were made on a
/// relay, and what became of them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopiesCheck {
    /// Blobs with a copy made on the relay (a chunked file's manifest and
    /// each of its chunks count one each).
    pub listed: usize,
    /// How many of them the relay was asked about (the newest, at most 32;
    /// none when the relay failed the check).
    pub probed: usize,
    /// Asked about and held by the relay itself.
    pub held: usize,
    /// Asked about, neither held nor known to be transferred (expired, lost,
    /// or deleted by another device).
    pub missing: usize,
    /// Asked about and answered with an error.
    pub failed: Vec<String>,
    /// Copies the relay transferred to peers, recorded or found now.
    pub transfers: Vec<TransferCheck>,
}

/// A copy a relay transferred to a peer, as `relay check` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TransferCheck {
    /// The blob.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// The names that hold it.
    pub names: Vec<String>,
    /// The URL of the peer holding it now.
    pub to: String,
    /// The peer's key.
    #[serde(with = "crate::text_serde")]
    pub to_key: VerifyingKey,
    /// Whether the file table records the transfer (`cairn get NAME`
    /// records one it finds).
    pub recorded: bool,
    /// Whether this check followed the relay's redirect to the peer, whose
    /// signed info document showed the key (false: known from the file
    /// table only).
    pub seen: bool,
}

/// The figures of an info document a user cares about.
#[derive(Clone, Debug, Serialize)]
pub struct InfoSummary {
    /// Software and version.
    pub software: String,
    /// Bytes given to storage.
    pub capacity_total: u64,
    /// Bytes free.
    pub capacity_free: u64,
    /// Largest blob accepted.
    pub max_blob_size: u64,
    /// Minimum seconds kept after last access.
    pub retention_secs: u64,
    /// Load, 0–1000.
    pub load_permille: u16,
    /// Proof-of-work bits uploads need now.
    pub pow_bits: u8,
    /// Bytes one upload key may own (0: no limit).
    pub key_quota_bytes: u64,
    /// When the relay signed the document, by its clock (Unix seconds).
    pub issued_at: u64,
}

impl From<&RelayInfo> for InfoSummary {
    fn from(info: &RelayInfo) -> Self {
        Self {
            software: info.software.as_str().to_owned(),
            capacity_total: info.capacity_total,
            capacity_free: info.capacity_free,
            max_blob_size: info.max_blob_size,
            retention_secs: info.retention_secs,
            load_permille: info.load_permille,
            pow_bits: info.limits.pow_bits,
            key_quota_bytes: info.limits.key_quota_bytes,
            issued_at: info.issued_at.0,
        }
    }
}

fn serialize_opt_key<S: serde::Serializer>(
    key: &Option<VerifyingKey>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match key {
        Some(key) => s.collect_str(key),
        None => s.serialize_none(),
    }
}

/// Fetches `url`'s info document and checks it against `existing`'s pin;
/// a new entry is added at `clock`'s now.
pub(super) async fn pin(
    http: &reqwest::Client,
    clock: &Clock,
    url: &str,
    existing: Option<&RelayEntry>,
    accept_new_key: bool,
) -> Result<(RelayEntry, Verified<RelayInfo>)> {
    let url = normalize_url(url)?;
    let info = fetch_info(http, &url, clock)
        .await
        .map_err(|error| Error::Relay {
            url: url.clone(),
            error,
        })?;
    let presented = *info.signer();
    if let Some(existing) = existing
        && existing.key != presented
        && !accept_new_key
    {
        return Err(Error::KeyChanged {
            url,
            pinned: existing.key,
            presented,
        });
    }
    let entry = RelayEntry {
        url,
        key: presented,
        added_at: existing.map_or_else(|| clock.now().0, |e| e.added_at),
    };
    Ok((entry, info))
}

impl Client {
    /// Adds the relay at `url` to the set, pinning the key its signed info
    /// document presents, and stores the identity there. A URL already in
    /// the set whose relay now presents another key is refused unless
    /// `accept_new_key`. Plain http to another machine is refused, before
    /// any request, unless the client's transport is
    /// [`Transport::Insecure`](crate::relay::Transport::Insecure).
    pub async fn add_relay(&mut self, url: &str, accept_new_key: bool) -> Result<RelayAdded> {
        let normalized = normalize_url(url)?;
        check_transport(&normalized, self.transport())?;
        let existing = self.relays.get(&normalized).cloned();
        let (entry, info) = pin(
            &self.http,
            &self.clock,
            &normalized,
            existing.as_ref(),
            accept_new_key,
        )
        .await?;
        if self
            .relays
            .entries()
            .iter()
            .any(|r| r.key == entry.key && r.url != entry.url)
        {
            return Err(Error::Invalid(format!(
                "the relay at {} has the same key as one already in your set: it is the same \
                 relay under another URL, and would not add redundancy",
                entry.url
            )));
        }
        // The pin was checked against the old one above (or the user
        // accepted the new key): replace it.
        self.relays.replace(entry.clone());
        self.relays.save(&self.home)?;
        let _ = self.refresh_identity().await;
        let relay = self.relay_client(&entry.url, entry.key);
        let mut warnings = Vec::new();
        if let Err(err) = self.publish_log_to(&relay, &self.current_vault()?).await {
            warnings.push(format!(
                "could not store the identity log there: {err}; other devices will not find it \
                 on this relay until it is"
            ));
        }
        Ok(RelayAdded {
            relay: entry.clone(),
            already_present: existing.is_some(),
            replaced_key: existing.map(|e| e.key).filter(|k| *k != entry.key),
            retention_secs: info.retention_secs,
            capacity_free: info.capacity_free,
            warnings,
        })
    }

    /// Removes a relay from the set. Copies stored there stay until its
    /// retention runs out.
    pub fn remove_relay(&mut self, url: &str) -> Result<RelayEntry> {
        let normalized = normalize_url(url)?;
        let removed = self.relays.remove(&normalized)?;
        self.relays.save(&self.home)?;
        Ok(removed)
    }

    /// Checks every relay in the set (or just `url`): reachable, signing
    /// with the pinned key, and what it offers; and the copies the file
    /// table (as of the last sync) places on it: held, missing, or
    /// transferred to a peer.
    pub async fn check_relays(&self, url: Option<&str>) -> Result<Vec<RelayCheck>> {
        let wanted = url.map(normalize_url).transpose()?;
        if let Some(url) = &wanted
            && self.relays.get(url).is_none()
        {
            return Err(Error::UnknownRelay { url: url.clone() });
        }
        let relays: Vec<_> = self
            .blob_clients()
            .into_iter()
            .filter(|r| wanted.as_deref().is_none_or(|u| u == r.url()))
            .collect();
        // A damaged state file is for `cairn sync` to report; the relays
        // are still checked.
        let state = self.load_sync().ok();
        let table = state.as_ref().map(Self::table_of);
        let (scores, now) = (self.scores(), self.now());
        let scores = &scores;
        Ok(join_all(relays.iter().map(|relay| async move {
            let mut check = check_one(relay).await;
            if let Some(table) = table {
                check.copies = Some(check_copies(relay, table, check.ok).await);
            }
            check.record = scores.get(relay.key()).cloned();
            check.flagged = scores.flagged(relay.key(), now);
            check
        }))
        .await)
    }
}

/// What became of the copies `table` says were made on `relay`; asks the
/// relay about the newest when `probe`.
async fn check_copies(relay: &RelayClient, table: &Table, probe: bool) -> CopiesCheck {
    // Blob → (names, newest store time).
    let mut listed: BTreeMap<BlobId, (Vec<String>, u64)> = BTreeMap::new();
    for (name, entry) in table.stored() {
        if entry.copies.iter().any(|c| &c.relay == relay.key()) {
            // Every blob of a chunked file has a copy there.
            for blob in entry.blobs() {
                let (names, stored) = listed.entry(*blob).or_default();
                names.push(name.clone());
                *stored = (*stored).max(entry.stored_at);
            }
        }
    }
    let mut check = CopiesCheck {
        listed: listed.len(),
        ..CopiesCheck::default()
    };
    for (blob, (names, _)) in &listed {
        if let Some(to) = table.moved_to(blob, relay.key()) {
            check.transfers.push(TransferCheck {
                blob: *blob,
                names: names.clone(),
                to: to.url.clone(),
                to_key: to.relay,
                recorded: true,
                seen: false,
            });
        }
    }
    if !probe {
        return check;
    }
    let mut newest: Vec<_> = listed.iter().collect();
    newest.sort_by_key(|(blob, (_, stored))| (std::cmp::Reverse(*stored), **blob));
    newest.truncate(MAX_PROBED_COPIES);
    check.probed = newest.len();
    let answers: Vec<_> = futures_util::stream::iter(newest)
        .map(|(blob, (names, _))| async move { (blob, names, relay.probe(blob).await) })
        .buffer_unordered(PROBES_IN_FLIGHT)
        .collect()
        .await;
    for (blob, names, answer) in answers {
        let recorded = table.moved_to(blob, relay.key());
        match answer {
            Ok(Some(Held { at: None, .. })) => check.held += 1,
            Ok(Some(Held { at: Some(peer), .. })) => {
                match check
                    .transfers
                    .iter_mut()
                    .find(|t| t.blob == *blob && &t.to_key == peer.key())
                {
                    Some(known) => known.seen = true,
                    None => check.transfers.push(TransferCheck {
                        blob: *blob,
                        names: names.clone(),
                        to: peer.url().to_owned(),
                        to_key: *peer.key(),
                        recorded: false,
                        seen: true,
                    }),
                }
            }
            // A relay may forget where it sent a copy; the table has not.
            Ok(None) if recorded.is_some() => {}
            Ok(None) => check.missing += 1,
            Err(err) => check.failed.push(format!("{blob}: {err}")),
        }
    }
    check
        .transfers
        .sort_by(|a, b| (&a.names, a.blob).cmp(&(&b.names, b.blob)));
    check
}

pub(super) async fn check_one(relay: &RelayClient) -> RelayCheck {
    let started = Instant::now();
    let answer = relay.info().await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (ok, error, detail, info) = match answer {
        Ok(info) => (true, None, None, Some(InfoSummary::from(&*info))),
        Err(err) => (
            false,
            Some(err.to_string()),
            err.detail().map(str::to_owned),
            None,
        ),
    };
    RelayCheck {
        url: relay.url().to_owned(),
        key: *relay.key(),
        ok,
        latency_ms,
        error,
        detail,
        info,
        copies: None,
        record: None,
        flagged: false,
    }
}
