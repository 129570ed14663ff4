//! Multi-device sync, the pure part: operations, registers and the merge.
//!
//! Every device writes its own log of operations; the file table is a CRDT
//! over all of them: one last-writer-wins register per name, ordered by
//! (hybrid logical clock, device key), with tombstones for removals.
//! Applying the same operations in any order, any number of times, gives
//! the same table, so devices that have seen the same operations agree,
//! whatever order relays delivered them in. The network part (fetching,
//! publishing, detecting lying relays) is in `client/sync.rs`.

mod change;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, VerifyingKey};

pub use change::Change;

use crate::files::FileEntry;

/// A device's place in its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Sequence number of the operation.
    pub seq: u64,
    /// Its blob id.
    #[serde(with = "crate::text_serde")]
    pub op: BlobId,
}

/// The newest write to one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// When it was written (hybrid logical clock).
    pub clock: u64,
    /// Which device wrote it.
    #[serde(with = "crate::text_serde::repeated_key")]
    pub device: VerifyingKey,
    /// What the name holds; `None` is a tombstone.
    pub entry: Option<FileEntry>,
}

impl Register {
    /// Whether this write wins over `other`: later clock, then greater
    /// device key, then (only reachable through equivocation, which is
    /// reported separately) the greater content, so the result never
    /// depends on arrival order.
    fn beats(&self, other: &Self) -> bool {
        (self.clock, self.device)
            .cmp(&(other.clock, other.device))
            .then_with(|| content_key(&self.entry).cmp(&content_key(&other.entry)))
            .is_gt()
    }
}

fn content_key(entry: &Option<FileEntry>) -> Vec<u8> {
    serde_json::to_vec(entry).unwrap_or_default()
}

/// The file table: one register per name ever written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    registers: BTreeMap<String, Register>,
}

impl Table {
    /// Applies one write; keeps whichever wins.
    pub fn write(&mut self, name: &str, register: Register) {
        match self.registers.get(name) {
            Some(current) if !register.beats(current) => {}
            _ => {
                self.registers.insert(name.to_owned(), register);
            }
        }
    }

    /// Applies a change made by `device` at `clock`.
    pub fn apply(&mut self, device: VerifyingKey, clock: u64, change: &Change) {
        let at = |entry: Option<FileEntry>| Register {
            clock,
            device,
            entry,
        };
        match change {
            Change::Put { name, entry } => self.write(name, at(Some(entry.clone()))),
            Change::Remove { name } => self.write(name, at(None)),
            Change::Rename { from, to, entry } => {
                self.write(from, at(None));
                self.write(to, at(Some(entry.clone())));
            }
            Change::Identity { .. } | Change::Snapshot { .. } => {}
        }
    }

    /// Merges another table in (a snapshot's).
    pub fn merge(&mut self, other: &Table) {
        for (name, register) in &other.registers {
            self.write(name, register.clone());
        }
    }

    /// The names that hold something, with what.
    pub fn files(&self) -> impl Iterator<Item = (&str, &FileEntry)> {
        self.registers
            .iter()
            .filter_map(|(name, r)| r.entry.as_ref().map(|e| (name.as_str(), e)))
    }

    /// What `name` holds.
    pub fn get(&self, name: &str) -> Option<&FileEntry> {
        self.registers.get(name).and_then(|r| r.entry.as_ref())
    }

    /// Every register, tombstones included.
    pub fn registers(&self) -> &BTreeMap<String, Register> {
        &self.registers
    }

    /// Drops registers `keep` refuses (writes by devices whose writes no
    /// longer count).
    pub fn retain(&mut self, mut keep: impl FnMut(&Register) -> bool) {
        self.registers.retain(|_, r| keep(r));
    }

    /// Blob ids the table references.
    pub fn referenced(&self) -> std::collections::BTreeSet<BlobId> {
        self.files().map(|(_, e)| e.blob).collect()
    }
}

/// A compaction of the state, stored sealed and named by a `Snapshot`
/// operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The file table.
    pub table: Table,
    /// The highest clock seen.
    pub clock: u64,
}

/// A hybrid logical clock value for now, after `last`: wall-clock
/// milliseconds in the high 48 bits, strictly above anything seen.
pub fn next_clock(last: u64, now_ms: u64) -> u64 {
    (now_ms << 16).max(last.saturating_add(1))
}

/// The wall-clock milliseconds of a clock value.
pub fn clock_millis(clock: u64) -> u64 {
    clock >> 16
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::files::Copy;
    use cairn_proto::SigningKey;
    use proptest::prelude::*;

    fn entry(tag: u8) -> FileEntry {
        let key = SigningKey::from_seed(&[tag; 32]).verifying_key();
        FileEntry {
            blob: BlobId::of(&[tag]),
            size: u64::from(tag),
            sealed_size: 200,
            generation: 1,
            stored_at: 0,
            copies: vec![Copy {
                url: "http://r".into(),
                relay: key,
                owner: key,
            }],
        }
    }

    fn device(i: u8) -> VerifyingKey {
        SigningKey::from_seed(&[i + 100; 32]).verifying_key()
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        let name = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned);
        prop_oneof![
            (name.clone(), 0u8..5).prop_map(|(name, t)| Change::Put {
                name,
                entry: entry(t)
            }),
            name.clone().prop_map(|name| Change::Remove { name }),
            (name.clone(), name, 0u8..5).prop_map(|(from, to, t)| Change::Rename {
                from,
                to,
                entry: entry(t)
            }),
        ]
    }

    proptest! {
        /// Any order, with repeats: the same table (a CRDT).
        #[test]
        fn merge_is_order_independent(
            ops in proptest::collection::vec((0u8..3, 0u64..6, arb_change()), 0..30),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..60),
        ) {
            let mut forward = Table::default();
            for (d, clock, change) in &ops {
                forward.apply(device(*d), *clock, change);
            }
            let mut shuffled = Table::default();
            for index in &order {
                if !ops.is_empty() {
                    let (d, clock, change) = &ops[index.index(ops.len())];
                    shuffled.apply(device(*d), *clock, change);
                }
            }
            for (d, clock, change) in ops.iter().rev() {
                shuffled.apply(device(*d), *clock, change);
            }
            prop_assert_eq!(&forward, &shuffled);
            // Merging tables is the same as applying everything.
            let mut merged = Table::default();
            merged.merge(&shuffled);
            merged.merge(&forward);
            prop_assert_eq!(&merged, &forward);
        }
    }

    #[test]
    fn later_clock_wins_then_device_key() {
        let mut table = Table::default();
        let (low, high) = if device(0) < device(1) {
            (0, 1)
        } else {
            (1, 0)
        };
        table.apply(
            device(high),
            5,
            &Change::Put {
                name: "x".into(),
                entry: entry(1),
            },
        );
        table.apply(
            device(low),
            5,
            &Change::Put {
                name: "x".into(),
                entry: entry(2),
            },
        );
        assert_eq!(table.get("x").unwrap().size, 1, "tie broken by device key");
        table.apply(device(low), 6, &Change::Remove { name: "x".into() });
        assert!(table.get("x").is_none());
        table.apply(
            device(high),
            4,
            &Change::Put {
                name: "x".into(),
                entry: entry(3),
            },
        );
        assert!(
            table.get("x").is_none(),
            "an older put loses to the tombstone"
        );
    }

    #[test]
    fn clocks_move_forward() {
        assert_eq!(next_clock(0, 1000), 1000 << 16);
        let last = (2000 << 16) + 5;
        assert_eq!(
            next_clock(last, 1000),
            last + 1,
            "a clock behind never goes back"
        );
        assert_eq!(clock_millis(next_clock(0, 1234)), 1234);
    }

    #[test]
    fn bodies_round_trip_and_unknown_fields_are_refused() {
        let change = Change::Rename {
            from: "a".into(),
            to: "b".into(),
            entry: entry(1),
        };
        assert_eq!(Change::from_body(&change.to_body()).unwrap(), change);
        assert!(Change::from_body(br#"{"op":"put","name":"x"}"#).is_err());
        assert!(Change::from_body(br#"{"op":"remove","name":"x","extra":1}"#).is_err());
        assert!(Change::from_body(br#"{"op":"format_disk"}"#).is_err());
    }
}
