//! Multi-device sync, the pure part: operations, registers and the merge.
//!
//! Every device writes its own log of operations; the file table is a CRDT
//! over all of them: one last-writer-wins register per name, ordered by
//! (hybrid logical clock, device key), with tombstones for removals.
//! Applying the same operations in any order, any number of times, gives
//! the same table, so devices that have seen the same operations agree,
//! whatever order relays delivered them in. Copies that relays transferred
//! to peers are recorded beside the names, one last-writer-wins register per
//! (blob, relay the copy was made on), so learning where a copy went never
//! competes with a write of the name. The network part (fetching,
//! publishing, detecting lying relays) is in `client/sync.rs`.

mod change;
pub mod folder;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, VerifyingKey};

pub use change::Change;

use crate::files::{Copy, FileEntry, Place};

/// Most recorded transfers followed from one copy: a copy handed on from
/// peer to peer is found through them; a longer chain is a loop.
const MAX_MOVE_CHAIN: usize = 8;

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

/// The newest record of where one copy went ([`Change::Moved`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRegister {
    /// When it was recorded (hybrid logical clock).
    pub clock: u64,
    /// Which device recorded it.
    #[serde(with = "crate::text_serde::repeated_key")]
    pub device: VerifyingKey,
    /// Where the copy is held now.
    pub to: Place,
}

impl MoveRegister {
    /// Whether this record wins over `other`: as [`Register::beats`], the
    /// place breaking a tie of clock and device.
    fn beats(&self, other: &Self) -> bool {
        (self.clock, self.device, &self.to)
            .cmp(&(other.clock, other.device, &other.to))
            .is_gt()
    }
}

/// The file table: one register per name ever written, and where copies
/// went when relays transferred them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    registers: BTreeMap<String, Register>,
    /// (blob, key of the relay the copy was made on) → where it went.
    /// Absent from tables written before transfers existed, and left out
    /// when empty so such tables keep their exact form.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "move_list"
    )]
    moves: BTreeMap<(BlobId, VerifyingKey), MoveRegister>,
    /// Synced folders, by name (PROTOCOL.md §10.9). Left out when empty,
    /// so tables without folders keep their exact form.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    folders: BTreeMap<String, folder::Tree>,
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
            Change::Moved { blob, from, to } => self.record_move(
                *blob,
                *from,
                MoveRegister {
                    clock,
                    device,
                    to: to.clone(),
                },
            ),
            Change::Folder { folder, writes } => {
                if folder::check_folder_name(folder).is_err() {
                    return;
                }
                let tree = self.folders.entry(folder.clone()).or_default();
                for write in writes {
                    tree.apply(device, clock, write);
                }
            }
            Change::Identity { .. } | Change::Snapshot { .. } => {}
        }
    }

    /// Applies one record of where the copy of `blob` on relay `from` went;
    /// keeps whichever wins.
    pub fn record_move(&mut self, blob: BlobId, from: VerifyingKey, record: MoveRegister) {
        match self.moves.get(&(blob, from)) {
            Some(current) if !record.beats(current) => {}
            _ => {
                self.moves.insert((blob, from), record);
            }
        }
    }

    /// Merges another table in (a snapshot's).
    pub fn merge(&mut self, other: &Table) {
        for (name, register) in &other.registers {
            self.write(name, register.clone());
        }
        for ((blob, from), record) in &other.moves {
            self.record_move(*blob, *from, record.clone());
        }
        for (name, tree) in &other.folders {
            self.folders.entry(name.clone()).or_default().merge(tree);
        }
    }

    /// Where the copy of `blob` made on relay `from` is held now, when a
    /// transfer of it was recorded: the end of the chain of recorded
    /// transfers (a copy may be handed on more than once).
    pub fn moved_to(&self, blob: &BlobId, from: &VerifyingKey) -> Option<&Place> {
        let mut seen = vec![*from];
        let mut place = None;
        let mut at = *from;
        while let Some(record) = self.moves.get(&(*blob, at)) {
            if seen.contains(&record.to.relay) || seen.len() > MAX_MOVE_CHAIN {
                // A loop (or a chain no transfer makes): the copy is
                // somewhere on it, and the last place reached is as good
                // as any.
                break;
            }
            seen.push(record.to.relay);
            at = record.to.relay;
            place = Some(&record.to);
        }
        place
    }

    /// `entry`'s copies, each with where it went when it was transferred.
    pub fn located<'a>(
        &'a self,
        entry: &'a FileEntry,
    ) -> impl Iterator<Item = (&'a Copy, Option<&'a Place>)> + 'a {
        self.located_blob(entry, &entry.blob)
    }

    /// The copies of `blob`, one of `entry`'s blobs, each with where it
    /// went when it was transferred. Relays transfer blobs one by one, so
    /// a chunk of a file can have moved where its manifest did not.
    pub fn located_blob<'a>(
        &'a self,
        entry: &'a FileEntry,
        blob: &'a BlobId,
    ) -> impl Iterator<Item = (&'a Copy, Option<&'a Place>)> + 'a {
        entry
            .copies
            .iter()
            .map(move |copy| (copy, self.moved_to(blob, &copy.relay)))
    }

    /// Where `entry`'s copies are now, each relay once: where each was
    /// stored, or where a transfer or a repair moved it. Two copies can end
    /// on one relay (a peer transfers its copy to a relay that had one; a
    /// rotation leaves for a relay that had one), which holds the blob once.
    /// For a chunked file these are the places of its manifest.
    pub fn places(&self, entry: &FileEntry) -> Vec<Place> {
        self.places_of(entry, &entry.blob)
    }

    /// Where the copies of `blob`, one of `entry`'s blobs, are now, each
    /// relay once.
    pub fn places_of(&self, entry: &FileEntry, blob: &BlobId) -> Vec<Place> {
        let mut places: Vec<Place> = Vec::with_capacity(entry.copies.len());
        for (copy, moved) in self.located_blob(entry, blob) {
            let place = moved.cloned().unwrap_or_else(|| Place {
                url: copy.url.clone(),
                relay: copy.relay,
            });
            if !places.iter().any(|p| p.relay == place.relay) {
                places.push(place);
            }
        }
        places
    }

    /// Every recorded transfer: blob, relay it left, and the record.
    pub fn moves(&self) -> impl Iterator<Item = (&BlobId, &VerifyingKey, &MoveRegister)> {
        self.moves
            .iter()
            .map(|((blob, from), record)| (blob, from, record))
    }

    /// The names that hold something, with what.
    pub fn files(&self) -> impl Iterator<Item = (&str, &FileEntry)> {
        self.registers
            .iter()
            .filter_map(|(name, r)| r.entry.as_ref().map(|e| (name.as_str(), e)))
    }

    /// The synced folders, by name.
    pub fn folders(&self) -> &BTreeMap<String, folder::Tree> {
        &self.folders
    }

    /// The folder `name`.
    pub fn folder(&self, name: &str) -> Option<&folder::Tree> {
        self.folders.get(name)
    }

    /// Drops the versions of folder files replaced before `clock`.
    pub fn prune_versions(&mut self, clock: u64) {
        for tree in self.folders.values_mut() {
            tree.prune(clock);
        }
    }

    /// Every stored file whose copies are kept: the named files, and each
    /// folder's files and their versions.
    pub fn stored_entries(&self) -> impl Iterator<Item = &FileEntry> {
        self.files().map(|(_, entry)| entry).chain(
            self.folders
                .values()
                .flat_map(|tree| tree.stored().map(|(_, file)| &file.entry)),
        )
    }

    /// [`Table::stored_entries`], each with how reports name it: its name,
    /// or `FOLDER:PATH` for a folder's file (a version is named as the file
    /// it was).
    pub fn stored(&self) -> impl Iterator<Item = (String, &FileEntry)> {
        self.files()
            .map(|(name, entry)| (name.to_owned(), entry))
            .chain(self.folders.iter().flat_map(|(folder, tree)| {
                tree.stored()
                    .map(move |(path, file)| (format!("{folder}:{path}"), &file.entry))
            }))
    }

    /// What `name` holds.
    pub fn get(&self, name: &str) -> Option<&FileEntry> {
        self.registers.get(name).and_then(|r| r.entry.as_ref())
    }

    /// Every register, tombstones included.
    pub fn registers(&self) -> &BTreeMap<String, Register> {
        &self.registers
    }

    /// Drops the writes (names and transfer records) that `keep` refuses,
    /// given their device and clock: writes by devices whose writes no
    /// longer count.
    pub fn retain(&mut self, mut keep: impl FnMut(&VerifyingKey, u64) -> bool) {
        self.registers.retain(|_, r| keep(&r.device, r.clock));
        self.moves.retain(|_, r| keep(&r.device, r.clock));
        for tree in self.folders.values_mut() {
            tree.retain(&mut keep);
        }
    }

    /// The copies stored, and not moved since, by an upload sealed to vault
    /// generation `generation`: in the per-relay layout, its owner key owns
    /// them already.
    pub fn copies_stored_in(
        &self,
        generation: u32,
    ) -> std::collections::BTreeSet<(BlobId, VerifyingKey)> {
        self.stored_entries()
            .filter(|entry| entry.generation == generation)
            .flat_map(|entry| {
                entry.blobs().flat_map(move |blob| {
                    self.located_blob(entry, blob)
                        .filter(|(_, moved)| moved.is_none())
                        .map(move |(copy, _)| (*blob, copy.relay))
                })
            })
            .collect()
    }

    /// Every (blob, relay) where a file's copy is now: where it was stored,
    /// or where a transfer or a repair moved it.
    pub fn copy_locations(&self) -> std::collections::BTreeSet<(BlobId, VerifyingKey)> {
        self.stored_entries()
            .flat_map(|entry| {
                entry.blobs().flat_map(move |blob| {
                    self.located_blob(entry, blob).map(move |(copy, moved)| {
                        (*blob, moved.map_or(copy.relay, |place| place.relay))
                    })
                })
            })
            .collect()
    }
}

/// The transfer records as a JSON list (a map keyed by pairs has no JSON
/// form), each `{"blob", "from", "clock", "device", "to"}`.
mod move_list {
    use std::collections::BTreeMap;

    use cairn_proto::{BlobId, VerifyingKey};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::MoveRegister;
    use crate::files::Place;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        #[serde(with = "crate::text_serde")]
        blob: BlobId,
        #[serde(with = "crate::text_serde::repeated_key")]
        from: VerifyingKey,
        clock: u64,
        #[serde(with = "crate::text_serde::repeated_key")]
        device: VerifyingKey,
        to: Place,
    }

    pub(super) fn serialize<S: Serializer>(
        moves: &BTreeMap<(BlobId, VerifyingKey), MoveRegister>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(moves.iter().map(|((blob, from), record)| Entry {
            blob: *blob,
            from: *from,
            clock: record.clock,
            device: record.device,
            to: record.to.clone(),
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(BlobId, VerifyingKey), MoveRegister>, D::Error> {
        // Merged like any writes, so a list naming one copy twice (which no
        // writer makes) still reads the same whatever its order.
        let mut table = super::Table::default();
        for entry in Vec::<Entry>::deserialize(d)? {
            table.record_move(
                entry.blob,
                entry.from,
                MoveRegister {
                    clock: entry.clock,
                    device: entry.device,
                    to: entry.to,
                },
            );
        }
        Ok(table.moves)
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
            chunks: Vec::new(),
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

    fn relay(i: u8) -> VerifyingKey {
        SigningKey::from_seed(&[i + 200; 32]).verifying_key()
    }

    fn moved(tag: u8, from: u8, to: u8) -> Change {
        Change::Moved {
            blob: entry(tag).blob,
            from: relay(from),
            to: Place {
                url: format!("http://peer-{to}"),
                relay: relay(to),
            },
        }
    }

    /// Where devices claim copies, and where they let go of them, follows
    /// transfers and repairs; a removed file's copies are nowhere.
    #[test]
    fn copy_locations_follow_moves_and_forget_removed_files() {
        let mut stored = entry(1);
        stored.copies = [relay(0), relay(1)]
            .into_iter()
            .map(|relay| Copy {
                url: "http://r".into(),
                relay,
                owner: device(0),
            })
            .collect();
        let mut table = Table::default();
        let put = Change::Put {
            name: "a".into(),
            entry: stored.clone(),
        };
        table.apply(device(0), 1, &put);
        table.apply(device(1), 2, &moved(1, 1, 2));
        let expected: std::collections::BTreeSet<_> =
            [(stored.blob, relay(0)), (stored.blob, relay(2))].into();
        assert_eq!(table.copy_locations(), expected);
        table.apply(device(0), 3, &Change::Remove { name: "a".into() });
        assert!(table.copy_locations().is_empty());
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        let name = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned);
        prop_oneof![
            (0u8..5, 0u8..3, 0u8..3).prop_map(|(t, from, to)| moved(t, from, to)),
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
            // And a table survives its serialized form (snapshots, sync.json).
            let json = serde_json::to_vec(&forward).unwrap();
            prop_assert_eq!(&serde_json::from_slice::<Table>(&json).unwrap(), &forward);
        }
    }

    #[test]
    fn moves_converge_in_any_order_and_survive_a_snapshot() {
        let (low, high) = if device(0) < device(1) {
            (device(0), device(1))
        } else {
            (device(1), device(0))
        };
        let writes = [
            (low, 5, moved(1, 0, 1)),
            (high, 5, moved(1, 0, 2)),
            (low, 3, moved(1, 0, 0)),
            (low, 4, moved(2, 1, 2)),
        ];
        let mut forward = Table::default();
        for (device, clock, change) in &writes {
            forward.apply(*device, *clock, change);
        }
        let mut backward = Table::default();
        for (device, clock, change) in writes.iter().rev() {
            backward.apply(*device, *clock, change);
        }
        assert_eq!(forward, backward);
        let blob = entry(1).blob;
        assert_eq!(
            forward.moved_to(&blob, &relay(0)).unwrap().relay,
            relay(2),
            "a tie of clocks goes to the greater device key"
        );
        assert_eq!(forward.moves().count(), 2);

        let snapshot = Snapshot {
            table: forward.clone(),
            clock: 9,
        };
        let json = serde_json::to_vec(&snapshot).unwrap();
        let back: Snapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, snapshot);
        let mut merged = Table::default();
        merged.merge(&back.table);
        assert_eq!(merged, forward);
    }

    #[test]
    fn a_move_never_changes_what_a_name_holds() {
        let mut table = Table::default();
        let put = Change::Put {
            name: "x".into(),
            entry: entry(1),
        };
        let copy = &entry(1).copies[0];
        let moved = Change::Moved {
            blob: entry(1).blob,
            from: copy.relay,
            to: Place {
                url: "http://peer".into(),
                relay: relay(2),
            },
        };
        // A move recorded later than a put (of an older version of the name,
        // say) leaves the put alone, and the other way around.
        table.apply(device(0), 7, &put);
        table.apply(device(1), 9, &moved);
        assert_eq!(table.get("x"), Some(&entry(1)));
        let mut table = Table::default();
        table.apply(device(1), 9, &moved);
        table.apply(device(0), 7, &put);
        assert_eq!(table.get("x"), Some(&entry(1)));
        let (listed, to) = table.located(table.get("x").unwrap()).next().unwrap();
        assert_eq!(listed, copy);
        assert_eq!(
            to.unwrap().relay,
            relay(2),
            "the copy is shown where it went"
        );
    }

    #[test]
    fn chains_of_moves_are_followed_and_loops_end() {
        let mut table = Table::default();
        let blob = entry(1).blob;
        table.apply(device(0), 1, &moved(1, 0, 1));
        table.apply(device(0), 2, &moved(1, 1, 2));
        assert_eq!(table.moved_to(&blob, &relay(0)).unwrap().relay, relay(2));
        assert_eq!(table.moved_to(&blob, &relay(1)).unwrap().relay, relay(2));
        assert!(table.moved_to(&blob, &relay(2)).is_none());
        table.apply(device(0), 3, &moved(1, 2, 0));
        assert!(table.moved_to(&blob, &relay(0)).is_some(), "a loop ends");
        assert!(table.moved_to(&entry(2).blob, &relay(0)).is_none());
    }

    #[test]
    fn copies_folded_onto_one_relay_are_one_place() {
        let mut table = Table::default();
        let mut file = entry(1);
        file.copies = (0..3)
            .map(|i| Copy {
                url: format!("http://r{i}"),
                relay: relay(i),
                owner: device(0),
            })
            .collect();
        table.apply(
            device(0),
            1,
            &Change::Put {
                name: "x".into(),
                entry: file.clone(),
            },
        );
        let relays = |table: &Table| -> Vec<VerifyingKey> {
            table.places(&file).iter().map(|p| p.relay).collect()
        };
        assert_eq!(relays(&table), [relay(0), relay(1), relay(2)]);
        // The copy on relay 1 moves onto relay 0, which has one already.
        table.apply(device(0), 2, &moved(1, 1, 0));
        assert_eq!(relays(&table), [relay(0), relay(2)]);
        assert_eq!(
            table.located(&file).count(),
            3,
            "every copy is still listed"
        );
    }

    #[test]
    fn old_tables_without_moves_parse_and_keep_their_form() {
        let mut table = Table::default();
        table.apply(
            device(0),
            1,
            &Change::Put {
                name: "x".into(),
                entry: entry(1),
            },
        );
        let json = serde_json::to_string(&Snapshot { table, clock: 1 }).unwrap();
        assert!(!json.contains("moves"), "no moves, no new field: {json}");
        let old = serde_json::from_str::<Snapshot>(&json).unwrap();
        assert_eq!(old.table.get("x"), Some(&entry(1)));
        assert_eq!(old.table.moves().count(), 0);
        // As written before transfers existed (no `moves` at all).
        let old: Snapshot =
            serde_json::from_str(r#"{"table":{"registers":{}},"clock":3}"#).unwrap();
        assert_eq!(old.clock, 3);
    }

    #[test]
    fn retain_drops_moves_of_devices_that_may_not_write() {
        let mut table = Table::default();
        table.apply(device(0), 1, &moved(1, 0, 1));
        table.apply(device(1), 1, &moved(2, 0, 1));
        table.retain(|d, _| *d == device(0));
        assert_eq!(table.moves().count(), 1);
        assert!(table.moved_to(&entry(2).blob, &relay(0)).is_none());
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
        let change = moved(1, 0, 1);
        let body = change.to_body();
        assert_eq!(Change::from_body(&body).unwrap(), change);
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(r#"{"op":"moved","blob":""#), "{text}");
        let extra = text.replacen(r#""to":{"#, r#""to":{"extra":1,"#, 1);
        assert!(Change::from_body(extra.as_bytes()).is_err(), "{extra}");
        let extra = text.replacen(r#"{"op":"moved","#, r#"{"op":"moved","extra":1,"#, 1);
        assert!(Change::from_body(extra.as_bytes()).is_err(), "{extra}");
    }
}
