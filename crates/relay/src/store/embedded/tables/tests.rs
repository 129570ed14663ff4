//! The head tables against a plain map.
use std::collections::BTreeMap;

use cairn_proto::{SigningKey, Slot};
use cairn_testkit::Rng;

use super::*;
use crate::store::tests::new_head as head;

/// (mailbox, slot) → (seq, last access, envelope): what the tables
/// should hold.
type Model = BTreeMap<([u8; 32], String), (u64, u64, Vec<u8>)>;

fn assert_tables_match(t: &Tables<'_>, model: &Model) {
    let rows: Model = t
        .heads
        .iter()
        .unwrap()
        .map(|row| {
            let (k, v) = row.unwrap();
            let ((mailbox, slot), (seq, at, envelope)) = (k.value(), v.value());
            ((mailbox, slot.to_owned()), (seq, at, envelope.to_vec()))
        })
        .collect();
    assert_eq!(&rows, model);
    let order: Vec<(u64, [u8; 32], String)> = t
        .heads_by_access
        .iter()
        .unwrap()
        .map(|row| {
            let (k, _) = row.unwrap();
            let (at, mailbox, slot) = k.value();
            (at, mailbox, slot.to_owned())
        })
        .collect();
    let mut expected: Vec<_> = model
        .iter()
        .map(|((mailbox, slot), (_, at, _))| (*at, *mailbox, slot.clone()))
        .collect();
    expected.sort();
    assert_eq!(order, expected);
    assert_eq!(t.head_count, model.len() as u64);
}

/// Random puts, touches, listings and collections against a plain map:
/// the compare-and-set, the access order and the count always agree
/// with it, across many committed transactions.
#[test]
fn heads_match_a_plain_map_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = super::super::open_db(dir.path(), 1 << 20).unwrap();
    let keys: Vec<SigningKey> = (0..3u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let slots = ["a", "A", "0", "_", "-", "zz", "a-"];
    let max_heads = 12;
    let rules = Rules::new(&crate::store::model::Limits {
        capacity: 0,
        key_quota: 0,
        max_heads,
        cache_bytes: 0,
        index_cache_bytes: 0,
        disk_reserve: 0,
    });
    let mut model = Model::new();
    let mut rng = Rng(7);
    let mut now = 1_000;
    let mut seen = std::collections::BTreeSet::new();
    for _round in 0..150 {
        let txn = db.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn).unwrap();
            for _ in 0..=rng.below(8) {
                now += rng.below(3);
                let key = &keys[rng.index(keys.len())];
                let mailbox = key.verifying_key().to_bytes();
                let slot = slots[rng.index(slots.len())];
                let row = (mailbox, slot.to_owned());
                match rng.below(10) {
                    0..=5 => {
                        let h = head(key, slot, rng.below(6));
                        let count = model.len() as u64;
                        let expected = match model.get_mut(&row) {
                            Some(stored) if h.seq <= stored.0 => {
                                stored.1 = stored.1.max(now);
                                HeadOutcome::Stale {
                                    seq: stored.0,
                                    current: stored.2.clone(),
                                }
                            }
                            Some(stored) => {
                                *stored = (h.seq, stored.1.max(now), h.envelope.clone());
                                HeadOutcome::Replaced
                            }
                            None if count >= max_heads => HeadOutcome::RelayFull,
                            None => {
                                model.insert(row, (h.seq, now, h.envelope.clone()));
                                HeadOutcome::Created
                            }
                        };
                        seen.insert(match &expected {
                            HeadOutcome::Created => "created",
                            HeadOutcome::Replaced => "replaced",
                            HeadOutcome::Stale { .. } => "stale",
                            HeadOutcome::RelayFull => "full",
                            HeadOutcome::MailboxFull => "mailbox full",
                        });
                        assert_eq!(t.put_head(&h, now, &rules).unwrap(), expected);
                    }
                    6 | 7 => {
                        let at = now - rng.below(5);
                        let held = model.get_mut(&row).map(|stored| {
                            stored.1 = stored.1.max(at);
                        });
                        let key = HeadKey {
                            mailbox: key.verifying_key(),
                            slot: Slot::new(slot).unwrap(),
                        };
                        assert_eq!(t.touch_head(&key, at).unwrap(), held.is_some());
                    }
                    8 => {
                        let cutoff = now - rng.below(20);
                        let max = rng.index(4);
                        let mut due: Vec<_> = model
                            .iter()
                            .filter(|(_, (_, at, _))| *at < cutoff)
                            .map(|((mailbox, slot), (_, at, _))| (*at, *mailbox, slot.clone()))
                            .collect();
                        due.sort();
                        due.truncate(max);
                        for (_, mailbox, slot) in &due {
                            model.remove(&(*mailbox, slot.clone()));
                        }
                        if !due.is_empty() {
                            seen.insert("collected");
                        }
                        assert_eq!(t.collect_heads(cutoff, max).unwrap(), due.len());
                    }
                    _ => {
                        // One mailbox's range holds its rows and no other's.
                        let listed: Vec<String> = mailbox_range(&t.heads, mailbox)
                            .unwrap()
                            .map(|row| row.unwrap().0.value().1.to_owned())
                            .collect();
                        let expected: Vec<String> = model
                            .keys()
                            .filter(|(m, _)| *m == mailbox)
                            .map(|(_, slot)| slot.clone())
                            .collect();
                        assert_eq!(listed, expected);
                        assert_eq!(t.slots_in(mailbox).unwrap(), expected.len());
                    }
                }
            }
            assert_tables_match(&t, &model);
            t.save_totals().unwrap();
        }
        txn.commit().unwrap();
    }
    // Every outcome but a full mailbox (1024 slots) was exercised.
    let seen: Vec<_> = seen.into_iter().collect();
    assert_eq!(seen, ["collected", "created", "full", "replaced", "stale"]);
}
