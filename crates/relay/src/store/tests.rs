//! The store against a plain model, on both backends: random uploads (by
//! clients and peers), claims, deletes (fresh and replayed tokens),
//! collections and head PUTs, with every answer, every owner's usage, the
//! totals and every mailbox's listing compared with what a few maps say
//! they must be. The scale-out run needs the test servers `.ci/run` starts
//! (`scripts/backends.sh`) and says so when they are absent.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::{HeadRecord, SignedRecord, SigningKey, Timestamp};

use cairn_testkit::Rng;

use super::*;
use crate::config::{PostgresConfig, S3Config, ScaleOutConfig};

const CAPACITY: u64 = 96 * 1024;
const KEY_QUOTA: u64 = 40 * 1024;
const MAX_HEADS: u64 = 5;

fn limits() -> Limits {
    Limits {
        capacity: CAPACITY,
        key_quota: KEY_QUOTA,
        max_heads: MAX_HEADS,
        cache_bytes: 0,
        index_cache_bytes: 1 << 20,
        disk_reserve: 0,
    }
}

/// One held blob as the model sees it.
#[derive(Debug)]
struct Held {
    size: u64,
    owners: BTreeSet<[u8; 32]>,
    last_access: u64,
}

/// What the store must hold.
#[derive(Debug, Default)]
struct Model {
    blobs: BTreeMap<BlobId, Held>,
    heads: BTreeMap<([u8; 32], String), (u64, Vec<u8>)>,
}

impl Model {
    fn usage(&self, key: &VerifyingKey) -> u64 {
        self.blobs
            .values()
            .filter(|b| b.owners.contains(&key.to_bytes()))
            .map(|b| b.size)
            .sum()
    }

    fn bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.size).sum()
    }

    fn insert(&mut self, id: BlobId, size: u64, source: Source, now: u64) -> InsertOutcome {
        let owner = source.owner();
        if self.blobs.contains_key(&id) {
            return match source {
                Source::Peer(_) => {
                    self.touch(id, now);
                    InsertOutcome::AlreadyHeld
                }
                Source::Client(key) => match self.claim(id, key, now) {
                    ClaimOutcome::QuotaExceeded => InsertOutcome::QuotaExceeded,
                    _ => InsertOutcome::AlreadyHeld,
                },
            };
        }
        if self.bytes() + size > CAPACITY {
            return InsertOutcome::RelayFull;
        }
        if matches!(source, Source::Client(_)) && self.usage(&owner) + size > KEY_QUOTA {
            return InsertOutcome::QuotaExceeded;
        }
        let held = Held {
            size,
            owners: BTreeSet::from([owner.to_bytes()]),
            last_access: now,
        };
        self.blobs.insert(id, held);
        InsertOutcome::Stored
    }

    fn touch(&mut self, id: BlobId, now: u64) {
        if let Some(b) = self.blobs.get_mut(&id) {
            b.last_access = b.last_access.max(now);
        }
    }

    fn claim(&mut self, id: BlobId, key: VerifyingKey, now: u64) -> ClaimOutcome {
        let usage = self.usage(&key);
        let Some(b) = self.blobs.get_mut(&id) else {
            return ClaimOutcome::NotFound;
        };
        let outcome = if b.owners.contains(&key.to_bytes()) {
            ClaimOutcome::AlreadyOwner
        } else if usage + b.size > KEY_QUOTA {
            return ClaimOutcome::QuotaExceeded;
        } else {
            b.owners.insert(key.to_bytes());
            ClaimOutcome::Claimed
        };
        b.last_access = b.last_access.max(now);
        outcome
    }

    fn delete(&mut self, id: BlobId, key: VerifyingKey) -> DeleteOutcome {
        let Some(b) = self.blobs.get_mut(&id) else {
            return DeleteOutcome::NotFound;
        };
        if !b.owners.remove(&key.to_bytes()) {
            return DeleteOutcome::NotOwner;
        }
        if b.owners.is_empty() {
            self.blobs.remove(&id);
            return DeleteOutcome::Deleted;
        }
        DeleteOutcome::Released {
            owners_left: b.owners.len() as u64,
        }
    }

    fn collect(&mut self, cutoff: u64) -> BTreeSet<BlobId> {
        let due: BTreeSet<BlobId> = self
            .blobs
            .iter()
            .filter(|(_, b)| b.last_access < cutoff)
            .map(|(id, _)| *id)
            .collect();
        self.blobs.retain(|id, _| !due.contains(id));
        due
    }

    fn put_head(&mut self, head: &NewHead) -> HeadOutcome {
        let row = (
            head.key.mailbox.to_bytes(),
            head.key.slot.as_str().to_owned(),
        );
        let count = self.heads.len() as u64;
        match self.heads.get_mut(&row) {
            Some((seq, current)) if head.seq <= *seq => HeadOutcome::Stale {
                seq: *seq,
                current: current.clone(),
            },
            Some(stored) => {
                *stored = (head.seq, head.envelope.clone());
                HeadOutcome::Replaced
            }
            None if count >= MAX_HEADS => HeadOutcome::RelayFull,
            None => {
                self.heads.insert(row, (head.seq, head.envelope.clone()));
                HeadOutcome::Created
            }
        }
    }
}

/// A legacy head of `key`'s mailbox in `slot` at `seq`, verified.
pub(in crate::store) fn new_head(key: &SigningKey, slot: &str, seq: u64) -> NewHead {
    let record = HeadRecord {
        mailbox: key.verifying_key(),
        slot: Slot::new(slot).unwrap(),
        seq,
        target: BlobId::of(slot.as_bytes()),
        timestamp: Timestamp(seq),
    };
    let envelope = SignedRecord::sign(&record, key).unwrap();
    envelope.verify::<HeadRecord>().unwrap().into()
}

/// Blob bodies: some stored in the index, some as files or objects.
fn bodies() -> Vec<Vec<u8>> {
    let sizes = [900, 3_000, 7_000, 12_000, 15_000, 17_000, 20_000, 26_000];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![u8::try_from(i).unwrap(); n])
        .collect()
}

/// Runs `steps` random operations against `store` and the model, checking
/// every answer and, every few steps, the whole state.
async fn matches_the_model(store: &Store, steps: usize) {
    let keys: Vec<SigningKey> = (1..=3u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let peer = SigningKey::from_seed(&[9; 32]).verifying_key();
    let bodies = bodies();
    let slots = ["a", "b", "c", "d"];
    let mut model = Model::default();
    let mut rng = Rng(11);
    let mut now = 1_000_000;
    let mut tokens: Vec<SpentToken> = Vec::new();
    let mut seen = BTreeSet::new();
    for step in 0..steps {
        now += rng.below(4);
        let key = &keys[usize::try_from(rng.below(3)).unwrap()];
        let owner = key.verifying_key();
        let body = &bodies[usize::try_from(rng.below(bodies.len() as u64)).unwrap()];
        let (id, size) = (BlobId::of(body), body.len() as u64);
        match rng.below(20) {
            0..=6 => {
                let source = if rng.below(5) == 0 {
                    Source::Peer(peer)
                } else {
                    Source::Client(owner)
                };
                let staged = Staged::Bytes(body.clone().into());
                let got = store
                    .insert(staged, id, size, source, now, None)
                    .await
                    .unwrap();
                let expected = model.insert(id, size, source, now);
                assert_eq!(got, expected, "step {step}: insert by {source:?}");
                seen.insert(format!("insert {expected:?}"));
            }
            7..=9 => {
                let got = store.add_owner(id, owner, now, None).await.unwrap();
                let expected = model.claim(id, owner, now);
                assert_eq!(got, expected, "step {step}: claim");
                seen.insert(format!("claim {expected:?}"));
            }
            10..=12 => {
                let replay = !tokens.is_empty() && rng.below(6) == 0;
                let token = if replay {
                    rng.pick(&tokens)
                } else {
                    let mut nonce = [0u8; 16];
                    nonce[..8].copy_from_slice(&(step as u64).to_be_bytes());
                    SpentToken {
                        nonce,
                        expires_at: now + 1_000_000,
                    }
                };
                tokens.push(token);
                let got = store.delete(id, owner, token, now).await.unwrap();
                let expected = if replay {
                    DeleteOutcome::Replayed
                } else {
                    model.delete(id, owner)
                };
                assert_eq!(got, expected, "step {step}: delete");
                seen.insert(format!("delete {expected:?}"));
            }
            13 => {
                let cutoff = now - rng.below(12);
                let mut got: BTreeSet<BlobId> = BTreeSet::new();
                for (id, _) in store.collect(cutoff, 1000).await.unwrap() {
                    got.insert(id);
                }
                let expected = model.collect(cutoff);
                assert_eq!(got, expected, "step {step}: collect before {cutoff}");
                if !expected.is_empty() {
                    seen.insert("collected".to_owned());
                }
            }
            14..=17 => {
                let head = new_head(key, rng.pick(&slots), rng.below(6));
                let expected = model.put_head(&head);
                let got = store.put_head(head, now).await.unwrap();
                assert_eq!(got, expected, "step {step}: head");
                seen.insert(match expected {
                    HeadOutcome::Stale { .. } => "head Stale".to_owned(),
                    other => format!("head {other:?}"),
                });
            }
            _ => {
                let got = store
                    .acknowledge_held(id, Source::Client(owner), now, None)
                    .await;
                let expected = model.blobs.contains_key(&id).then(|| {
                    let claim = model.claim(id, owner, now);
                    (size, claim)
                });
                assert_eq!(got.unwrap(), expected, "step {step}: acknowledge");
            }
        }
        if step % 10 == 9 {
            assert_state(store, &model, &keys, peer).await;
        }
    }
    assert_state(store, &model, &keys, peer).await;
    let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    for outcome in [
        "insert Stored",
        "insert AlreadyHeld",
        "insert RelayFull",
        "insert QuotaExceeded",
        "claim Claimed",
        "claim AlreadyOwner",
        "claim NotFound",
        "claim QuotaExceeded",
        "delete Deleted",
        "delete Replayed",
        "delete NotOwner",
        "delete NotFound",
        "collected",
        "head Created",
        "head Replaced",
        "head Stale",
        "head RelayFull",
    ] {
        assert!(seen.contains(&outcome), "never saw {outcome}: {seen:?}");
    }
    assert!(seen.iter().any(|s| s.starts_with("delete Released")));
}

/// Totals, every key's usage and every mailbox's heads agree with the model.
async fn assert_state(store: &Store, model: &Model, keys: &[SigningKey], peer: VerifyingKey) {
    assert_eq!(store.usage(), (model.bytes(), model.blobs.len() as u64));
    let owners = keys.iter().map(SigningKey::verifying_key).chain([peer]);
    for owner in owners {
        assert_eq!(
            store.owner_usage(&owner).await.unwrap(),
            model.usage(&owner),
            "usage of {owner}"
        );
    }
    for key in keys {
        let mailbox = key.verifying_key();
        let listed: Vec<(String, Vec<u8>)> = store
            .heads(&mailbox)
            .await
            .unwrap()
            .into_iter()
            .map(|(slot, envelope)| (slot.as_str().to_owned(), envelope))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = model
            .heads
            .iter()
            .filter(|((m, _), _)| *m == mailbox.to_bytes())
            .map(|((_, slot), (_, envelope))| (slot.clone(), envelope.clone()))
            .collect();
        assert_eq!(listed, expected, "heads of {mailbox}");
    }
}

/// A client for the object store (rustls needs a process-wide provider).
fn http() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// An embedded store in a fresh directory.
async fn embedded() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer, _) = Store::open(dir.path(), &StorageConfig::Embedded, limits(), http())
        .await
        .unwrap();
    (store, dir)
}

/// A scale-out store in a fresh schema and prefix, or `None` (having said
/// why) when the test servers are not configured.
#[allow(clippy::print_stderr, reason = "the skip reason is the test's report")]
async fn scale_out() -> Option<(Store, tempfile::TempDir)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(url) = var("CAIRN_TEST_PG_URL") else {
        eprintln!(
            "skipped: CAIRN_TEST_PG_URL and CAIRN_TEST_S3_* are not set \
             (run `bash scripts/backends.sh start DIR` and source DIR/env)"
        );
        return None;
    };
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).unwrap();
    let name: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("model{name}");
    let config = ScaleOutConfig {
        postgres: PostgresConfig {
            url,
            schema: Some(name.clone()),
            pool_size: 4,
        },
        s3: S3Config {
            endpoint: var("CAIRN_TEST_S3_ENDPOINT").unwrap_or_default(),
            bucket: var("CAIRN_TEST_S3_BUCKET").unwrap_or_default(),
            region: var("CAIRN_TEST_S3_REGION").unwrap_or_default(),
            prefix: name,
            access_key_id: var("CAIRN_TEST_S3_ACCESS_KEY").unwrap_or_default(),
            secret_access_key: var("CAIRN_TEST_S3_SECRET_KEY").unwrap_or_default(),
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::ScaleOut(config);
    let (store, _, _) = Store::open(dir.path(), &storage, limits(), http())
        .await
        .unwrap();
    Some((store, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_matches_a_plain_model() {
    let (store, _dir) = embedded().await;
    matches_the_model(&store, 400).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_out_store_matches_a_plain_model() {
    if let Some((store, _dir)) = scale_out().await {
        matches_the_model(&store, 400).await;
    }
}

/// A migrated record that lists its main owner among the co-owners, a key
/// twice, and more keys than a blob may have is held to the rules of a
/// claim: every owner pays once, and the cap holds.
async fn an_import_charges_each_owner_once(store: &Store) {
    let keys: Vec<VerifyingKey> = (0..=MAX_OWNERS)
        .map(|i| SigningKey::from_seed(&[u8::try_from(i).unwrap(); 32]).verifying_key())
        .collect();
    let body = vec![7u8; 2_000];
    let id = BlobId::of(&body);
    let mut co_owners = vec![keys[0], keys[1], keys[1]];
    co_owners.extend_from_slice(&keys[2..]);
    let record = BlobRecord {
        id,
        meta: model::BlobMeta {
            size: 2_000,
            created: 5,
            last_access: 5,
            owner: Some(keys[0]),
        },
        sources: vec![SourceKey::Clients],
        co_owners,
    };
    let staged = Staged::Bytes(body.into());
    assert_eq!(
        store.import_blob(staged, record).await.unwrap(),
        InsertOutcome::Stored
    );
    let mut paying = 0;
    for key in &keys {
        let usage = store.owner_usage(key).await.unwrap();
        assert!(usage == 0 || usage == 2_000, "{key} pays {usage}");
        paying += usize::from(usage > 0);
    }
    assert_eq!(paying, usize::try_from(MAX_OWNERS).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_import_charges_each_owner_once() {
    let (store, _dir) = embedded().await;
    an_import_charges_each_owner_once(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_out_import_charges_each_owner_once() {
    if let Some((store, _dir)) = scale_out().await {
        an_import_charges_each_owner_once(&store).await;
    }
}
