//! Synced folders, the pure part: what each path of a folder holds, and
//! how writes from several devices merge (PROTOCOL.md §10.9).
//!
//! Each path is a last-writer-wins register, as a stored name is, with two
//! additions a folder needs:
//!
//! - every write carries what it had seen of the path (per device, the
//!   newest clock), so a device can tell whether a write it made was
//!   replaced by one that knew of it or by a concurrent one that did not:
//!   the second is a conflict, and the file that lost is kept beside the
//!   winner instead of vanishing;
//! - the files a path held before are kept as versions, for the vault's
//!   version window, so an overwritten or deleted file can be brought
//!   back.
//!
//! The versions of a path are every file ever written there but the one it
//! holds now, so they too are the same whatever order writes arrive in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use cairn_proto::VerifyingKey;

use crate::files::FileEntry;

/// Longest path accepted inside a folder, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest folder name, in bytes.
pub const MAX_FOLDER_NAME_LEN: usize = 255;

/// What one path of a folder holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Item {
    /// A regular file.
    File(FileItem),
    /// A directory (listed so that empty ones carry over too).
    Dir,
    /// A symbolic link, stored as its target text and never followed.
    Link {
        /// Where the link points, as written.
        target: String,
    },
}

/// A regular file in a folder: its stored content and what of its
/// metadata carries over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileItem {
    /// The stored content.
    pub entry: FileEntry,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime: i64,
    /// Whether the file is executable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
    /// BLAKE3 of the content (hex): how a device that finds a file of the
    /// same size at the path tells whether it already holds this content
    /// (metadata alone can agree by chance). Seen only by devices: it
    /// travels inside sealed operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Item {
    /// The file, when this is one.
    pub fn file(&self) -> Option<&FileItem> {
        match self {
            Item::File(file) => Some(file),
            Item::Dir | Item::Link { .. } => None,
        }
    }
}

/// What a write had seen of its path: per device (key text), the newest
/// clock of that device's writes there.
pub type Seen = BTreeMap<String, u64>;

/// Which write a register holds: its clock and device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// When it was written (hybrid logical clock).
    pub clock: u64,
    /// Which device wrote it.
    #[serde(with = "crate::text_serde::repeated_key")]
    pub device: VerifyingKey,
}

impl Stamp {
    /// Whether a write that had seen `seen` knew of the write this stamp
    /// names.
    pub fn seen_by(&self, seen: &Seen) -> bool {
        seen.get(&self.device.to_string())
            .is_some_and(|clock| *clock >= self.clock)
    }
}

/// One write to a path, as an operation carries it (its clock and device
/// are the operation's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// The path, relative to the folder's root, `/`-separated.
    pub path: String,
    /// What the writer had seen of the path before this write.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seen: Seen,
    /// What the path holds now; `None` removes it.
    pub item: Option<Item>,
}

/// A file a path held before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The write that stored it.
    #[serde(flatten)]
    pub stamp: Stamp,
    /// The file.
    pub file: FileItem,
}

/// The newest write to one path, and the files it held before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The write it holds.
    #[serde(flatten)]
    pub stamp: Stamp,
    /// What that write had seen of the path, itself included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seen: Seen,
    /// What the path holds; `None` is a removal.
    pub item: Option<Item>,
    /// Every other file written to the path, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Version>,
}

impl Slot {
    fn new(stamp: Stamp, mut seen: Seen, item: Option<Item>) -> Self {
        let newest = seen.entry(stamp.device.to_string()).or_insert(stamp.clock);
        *newest = (*newest).max(stamp.clock);
        Self {
            stamp,
            seen,
            item,
            earlier: Vec::new(),
        }
    }

    /// Whether `self`'s write wins over `other`'s: later clock, then
    /// greater device key, then (two writes at one stamp: equivocation,
    /// reported apart) the greater content, so the result never depends
    /// on arrival order.
    fn beats(&self, other: &Self) -> bool {
        self.stamp
            .cmp(&other.stamp)
            .then_with(|| self.content_key().cmp(&other.content_key()))
            .is_gt()
    }

    fn content_key(&self) -> Vec<u8> {
        serde_json::to_vec(&(&self.item, &self.seen)).unwrap_or_default()
    }

    /// Keeps `file` as a version, once.
    fn keep(&mut self, version: Version) {
        if self.earlier.contains(&version) {
            return;
        }
        let at = self.earlier.partition_point(|v| {
            (v.stamp, content_key_of(&v.file)) < (version.stamp, content_key_of(&version.file))
        });
        self.earlier.insert(at, version);
    }

    /// Merges in `other`, a write to the same path (with the versions it
    /// carries).
    fn absorb(&mut self, mut other: Slot) {
        for version in std::mem::take(&mut other.earlier) {
            self.keep(version);
        }
        let loser = if other.beats(self) {
            let earlier = std::mem::take(&mut self.earlier);
            let old = std::mem::replace(self, other);
            self.earlier = earlier;
            old
        } else {
            other
        };
        if let Some(Item::File(file)) = loser.item
            && !(loser.stamp == self.stamp
                && self.item.as_ref().and_then(Item::file) == Some(&file))
        {
            self.keep(Version {
                stamp: loser.stamp,
                file,
            });
        }
    }

    /// The versions, each with when it stopped being the newest (the
    /// clock of the write after it), oldest first.
    pub fn versions(&self) -> impl Iterator<Item = (&Version, u64)> {
        self.earlier.iter().enumerate().map(|(i, version)| {
            let until = self
                .earlier
                .get(i + 1)
                .map_or(self.stamp.clock, |next| next.stamp.clock);
            (version, until)
        })
    }

    /// The file the write `stamp` stored here, whether the path still
    /// holds it or keeps it as a version.
    pub fn file_by(&self, stamp: &Stamp) -> Option<&FileItem> {
        if self.stamp == *stamp {
            return self.item.as_ref().and_then(Item::file);
        }
        self.earlier
            .iter()
            .rev()
            .find(|v| v.stamp == *stamp)
            .map(|v| &v.file)
    }

    /// Drops the versions replaced before `clock`.
    fn prune(&mut self, clock: u64) {
        let ends: Vec<u64> = self.versions().map(|(_, until)| until).collect();
        let mut ends = ends.into_iter();
        self.earlier
            .retain(|_| ends.next().is_none_or(|until| until >= clock));
    }
}

fn content_key_of(file: &FileItem) -> Vec<u8> {
    serde_json::to_vec(file).unwrap_or_default()
}

/// One folder: a register per path ever written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    paths: BTreeMap<String, Slot>,
}

impl Tree {
    /// Applies `write`, made by `device` at `clock`; keeps whichever wins
    /// and the file that lost as a version. A path that is not a valid
    /// one (an operation from a device with a bug, or a stolen one) is
    /// ignored: it could name a place outside the folder.
    pub fn apply(&mut self, device: VerifyingKey, clock: u64, write: &Write) {
        if check_path(&write.path).is_err() {
            return;
        }
        let slot = Slot::new(
            Stamp { clock, device },
            write.seen.clone(),
            write.item.clone(),
        );
        self.absorb(&write.path, slot);
    }

    fn absorb(&mut self, path: &str, slot: Slot) {
        match self.paths.get_mut(path) {
            Some(current) => current.absorb(slot),
            None => {
                self.paths.insert(path.to_owned(), slot);
            }
        }
    }

    /// Merges another copy of the folder in (a snapshot's).
    pub fn merge(&mut self, other: &Tree) {
        for (path, slot) in &other.paths {
            self.absorb(path, slot.clone());
        }
    }

    /// Every path ever written, removals included.
    pub fn slots(&self) -> &BTreeMap<String, Slot> {
        &self.paths
    }

    /// What `path` holds now.
    pub fn get(&self, path: &str) -> Option<&Item> {
        self.paths.get(path).and_then(|s| s.item.as_ref())
    }

    /// The register of `path`.
    pub fn slot(&self, path: &str) -> Option<&Slot> {
        self.paths.get(path)
    }

    /// Every file the folder holds now or keeps as a version.
    pub fn stored(&self) -> impl Iterator<Item = (&str, &FileItem)> {
        self.paths.iter().flat_map(|(path, slot)| {
            slot.item
                .iter()
                .filter_map(Item::file)
                .chain(slot.earlier.iter().map(|v| &v.file))
                .map(move |file| (path.as_str(), file))
        })
    }

    /// Drops the versions replaced before `clock`.
    pub fn prune(&mut self, clock: u64) {
        for slot in self.paths.values_mut() {
            slot.prune(clock);
        }
    }

    /// Drops the writes `keep` refuses (writes by devices whose writes no
    /// longer count): a path whose newest write goes holds its newest
    /// version that stays, or is forgotten.
    pub fn retain(&mut self, mut keep: impl FnMut(&VerifyingKey, u64) -> bool) {
        self.paths.retain(|_, slot| {
            slot.earlier
                .retain(|v| keep(&v.stamp.device, v.stamp.clock));
            if keep(&slot.stamp.device, slot.stamp.clock) {
                return true;
            }
            let Some(newest) = slot.earlier.pop() else {
                return false;
            };
            let mut seen = slot.seen.clone();
            seen.retain(|device, _| *device != slot.stamp.device.to_string());
            slot.stamp = newest.stamp;
            slot.seen = Slot::new(newest.stamp, seen, None).seen;
            slot.item = Some(Item::File(newest.file));
            true
        });
    }
}

/// Checks a folder's name.
pub fn check_folder_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FOLDER_NAME_LEN {
        return Err(format!(
            "a folder name must be 1–{MAX_FOLDER_NAME_LEN} bytes long"
        ));
    }
    if name == "." || name == ".." || name.chars().any(|c| c.is_control() || c == '/') {
        return Err("a folder name must not contain `/` or control characters".into());
    }
    Ok(())
}

/// Checks a path inside a folder: relative, `/`-separated, without empty,
/// `.` or `..` parts, NUL or other control characters, and not too long.
/// The empty path is the folder's root.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("a path is longer than {MAX_PATH_LEN} bytes"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("{path:?} holds a control character"));
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "{path:?} is not a relative path without empty, `.` or `..` parts"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::files::Copy;
    use cairn_proto::{BlobId, SigningKey};
    use proptest::prelude::*;

    fn device(i: u8) -> VerifyingKey {
        SigningKey::from_seed(&[i + 100; 32]).verifying_key()
    }

    fn file(tag: u8) -> Item {
        Item::File(FileItem {
            entry: FileEntry {
                blob: BlobId::of(&[tag]),
                chunks: Vec::new(),
                size: u64::from(tag),
                sealed_size: 200,
                generation: 1,
                stored_at: 0,
                copies: vec![Copy {
                    url: "http://r".into(),
                    relay: device(9),
                    owner: device(9),
                }],
            },
            mtime: i64::from(tag),
            exec: tag.is_multiple_of(2),
            hash: None,
        })
    }

    fn write(path: &str, item: Option<Item>, seen: &[(u8, u64)]) -> Write {
        Write {
            path: path.into(),
            seen: seen
                .iter()
                .map(|(d, c)| (device(*d).to_string(), *c))
                .collect(),
            item,
        }
    }

    #[test]
    fn a_replaced_file_is_kept_as_a_version_until_the_window_passes() {
        let mut tree = Tree::default();
        tree.apply(device(0), 10, &write("a", Some(file(1)), &[]));
        tree.apply(device(1), 20, &write("a", Some(file(2)), &[(0, 10)]));
        tree.apply(device(0), 30, &write("a", None, &[(0, 10), (1, 20)]));
        let slot = tree.slot("a").unwrap();
        assert_eq!(slot.item, None);
        let versions: Vec<_> = slot
            .versions()
            .map(|(v, until)| (v.stamp.clock, until))
            .collect();
        assert_eq!(versions, [(10, 20), (20, 30)]);
        tree.prune(25);
        let versions: Vec<_> = tree
            .slot("a")
            .unwrap()
            .versions()
            .map(|(v, _)| v.stamp.clock)
            .collect();
        assert_eq!(
            versions,
            [20],
            "the version replaced at 20 is older than the cut"
        );
    }

    #[test]
    fn what_a_write_had_seen_tells_a_replacement_from_a_conflict() {
        let mut tree = Tree::default();
        tree.apply(device(0), 10, &write("a", Some(file(1)), &[]));
        // Device 1 edits having seen device 0's write; device 2 did not.
        tree.apply(device(1), 20, &write("a", Some(file(2)), &[(0, 10)]));
        let mine = Stamp {
            clock: 10,
            device: device(0),
        };
        assert!(mine.seen_by(&tree.slot("a").unwrap().seen));
        tree.apply(device(2), 30, &write("a", Some(file(3)), &[]));
        let slot = tree.slot("a").unwrap();
        assert!(
            !mine.seen_by(&slot.seen),
            "device 2's write did not know device 0's"
        );
        assert!(
            Stamp {
                clock: 30,
                device: device(2)
            }
            .seen_by(&slot.seen)
        );
    }

    #[test]
    fn paths_that_could_leave_the_folder_are_ignored() {
        let mut tree = Tree::default();
        for path in [
            "../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a/..",
            "a\0b",
            "a\nb",
        ] {
            tree.apply(device(0), 1, &write(path, Some(file(1)), &[]));
            assert!(check_path(path).is_err(), "{path:?}");
        }
        assert!(tree.slots().is_empty());
        assert!(check_path("a/b c/.hidden").is_ok());
        assert!(check_folder_name("photos").is_ok());
        assert!(check_folder_name("a/b").is_err());
        assert!(check_folder_name("").is_err());
        assert!(check_folder_name("..").is_err());
    }

    #[test]
    fn writes_that_no_longer_count_fall_back_to_the_version_before() {
        let mut tree = Tree::default();
        tree.apply(device(0), 10, &write("a", Some(file(1)), &[]));
        tree.apply(device(1), 20, &write("a", Some(file(2)), &[(0, 10)]));
        tree.apply(device(1), 20, &write("b", Some(file(3)), &[]));
        tree.retain(|device_key, _| *device_key != device(1));
        assert_eq!(tree.get("a"), Some(&file(1)));
        assert!(tree.slot("a").unwrap().earlier.is_empty());
        assert!(tree.slot("b").is_none());
    }

    #[test]
    fn a_folder_operation_reads_from_its_json_and_keeps_only_safe_paths() {
        let key = device(0);
        let blob = BlobId::of(b"x");
        let body = format!(
            r#"{{"op":"folder","folder":"F","writes":[{{"path":"","item":{{"kind":"dir"}}}},{{"path":"a/b.txt","seen":{{"{key}":5}},"item":{{"kind":"file","entry":{{"blob":"{blob}","size":1,"sealed_size":300,"generation":1,"stored_at":7,"copies":[]}},"mtime":-5,"exec":true,"hash":"00"}}}},{{"path":"l","item":{{"kind":"link","target":"/etc"}}}},{{"path":"../x","item":null}}]}}"#
        );
        let change = crate::crdt::Change::from_body(body.as_bytes()).unwrap();
        let mut table = crate::crdt::Table::default();
        table.apply(key, 9, &change);
        let tree = table.folder("F").unwrap();
        let paths: Vec<&str> = tree.slots().keys().map(String::as_str).collect();
        assert_eq!(paths, ["", "a/b.txt", "l"], "`../x` is dropped");
        assert!(matches!(tree.get("a/b.txt"), Some(Item::File(f)) if f.exec && f.mtime == -5));
        // Unknown fields and kinds are refused, not guessed at.
        for bad in [
            r#"{"op":"folder","folder":"F","writes":[{"path":"a","item":{"kind":"socket"}}]}"#,
            r#"{"op":"folder","folder":"F","writes":[{"path":"a","item":null,"x":1}]}"#,
        ] {
            assert!(
                crate::crdt::Change::from_body(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    fn arb_write() -> impl Strategy<Value = (u8, u64, Write)> {
        let path = prop_oneof![Just("a"), Just("b"), Just("d/c")];
        let item = prop_oneof![
            (0u8..4).prop_map(|t| Some(file(t))),
            Just(Some(Item::Dir)),
            Just(Some(Item::Link {
                target: "../x".into()
            })),
            Just(None),
        ];
        (
            0u8..3,
            1u64..6,
            path,
            item,
            proptest::collection::vec((0u8..3, 1u64..6), 0..3),
        )
            .prop_map(|(d, clock, path, item, seen)| (d, clock, write(path, item, &seen)))
    }

    proptest! {
        /// Writes merge to the same folder in any order, any number of
        /// times, and through snapshots: devices that saw the same writes
        /// agree, versions included.
        #[test]
        fn merge_is_order_independent(
            writes in proptest::collection::vec(arb_write(), 0..24),
            split in 0usize..24,
        ) {
            let mut forward = Tree::default();
            for (d, clock, w) in &writes {
                forward.apply(device(*d), *clock, w);
            }
            let mut backward = Tree::default();
            for (d, clock, w) in writes.iter().rev() {
                backward.apply(device(*d), *clock, w);
                backward.apply(device(*d), *clock, w);
            }
            prop_assert_eq!(&forward, &backward);
            let (left, right) = writes.split_at(split.min(writes.len()));
            let (mut one, mut two) = (Tree::default(), Tree::default());
            for (d, clock, w) in left {
                one.apply(device(*d), *clock, w);
            }
            for (d, clock, w) in right {
                two.apply(device(*d), *clock, w);
            }
            one.merge(&two);
            prop_assert_eq!(&one, &forward);
            let text = serde_json::to_string(&forward).unwrap();
            prop_assert_eq!(serde_json::from_str::<Tree>(&text).unwrap(), forward);
        }
    }
}
