//! Deciding a pass, path by path, from three states: what the disk holds
//! now, what this device last synced (the index), and what the folder's
//! register holds (every device's writes, merged). Pure: no I/O.
//!
//! | here      | elsewhere | outcome                                        |
//! |-----------|-----------|------------------------------------------------|
//! | unchanged | unchanged | nothing                                        |
//! | changed   | unchanged | publish the disk's state                       |
//! | unchanged | changed   | fetch the register; but when the write this    |
//! |           |           | device held was replaced by one that had not   |
//! |           |           | seen it: a file keeps a conflict copy, and an  |
//! |           |           | edit removed that way is written again         |
//! | changed   | changed   | the same result: record it; a local deletion:  |
//! |           |           | fetch (the edit stays); a removal elsewhere:   |
//! |           |           | publish (the edit stays); else a conflict      |
//!
//! A conflict keeps both: the register's file keeps the name, this
//! device's moves to `NAME.conflict-DEVICE-DATE.EXT` and is published
//! there, so every device ends with both.

use std::collections::{BTreeMap, BTreeSet};

use super::index::Known;
use super::scan::Meta;
use crate::crdt::folder::{Item, Stamp, Tree};

/// Deletions made here in one pass that read as a mass deletion: more
/// than this many, and more than [`MASS_DELETE_SHARE`] of the folder.
pub const MASS_DELETE_MIN: usize = 10;
/// See [`MASS_DELETE_MIN`]: a quarter of the paths last synced.
pub const MASS_DELETE_SHARE: f64 = 0.25;

/// Content this device already stored: a path's write it synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// The path it was synced at.
    pub path: String,
    /// The write.
    pub stamp: Stamp,
}

/// A path whose state here is to be written to the folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// The path.
    pub path: String,
    /// What is on disk; `None`: it was deleted here.
    pub local: Option<Meta>,
    /// Content already stored that the disk holds (a renamed file, or an
    /// edit written again): listed again rather than uploaded.
    pub reuse: Option<Synced>,
    /// For a deletion that is the old name of a rename: the new name.
    pub moved_to: Option<String>,
}

/// A path changed here and elsewhere to different results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The path: it takes the register's state.
    pub path: String,
    /// What is on disk here; it moves to a conflict copy.
    pub local: Meta,
    /// When the disk still holds a write this device synced (replaced
    /// elsewhere by one that had not seen it), that write: its content is
    /// stored already.
    pub synced: Option<Synced>,
}

/// What one pass does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// States here to publish.
    pub publish: Vec<Publish>,
    /// Paths whose register to bring onto the disk.
    pub fetch: Vec<String>,
    /// Paths in conflict.
    pub conflicts: Vec<Conflict>,
    /// Paths the disk and the register agree on: recorded, nothing moves.
    pub adopt: Vec<String>,
    /// Paths no longer carried (newly ignored): forgotten by the index,
    /// left alone on disk and in the folder.
    pub forget: Vec<String>,
    /// Deletions held back as a mass deletion.
    pub held: Vec<String>,
}

impl Plan {
    /// Whether the pass has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty()
            && self.fetch.is_empty()
            && self.conflicts.is_empty()
            && self.adopt.is_empty()
            && self.forget.is_empty()
    }

    /// Deletions made here, renames left out.
    pub fn deletions(&self) -> usize {
        self.publish
            .iter()
            .filter(|p| p.local.is_none() && p.moved_to.is_none())
            .count()
    }
}

/// Decides a pass over one folder.
///
/// - `tree`: the folder's registers (`None` before any device wrote it);
/// - `known`: the index, each path as last synced;
/// - `disk`: what a scan found;
/// - `ignored`: whether a path (and whether it is a directory) is left out;
/// - `same_content`: whether the file on disk at a path has the content of
///   the file the register holds there (hashed by the caller, for the
///   paths [`to_compare`] names);
/// - `allow_deletes`: apply a mass deletion rather than hold it.
pub fn plan(
    tree: Option<&Tree>,
    known: &BTreeMap<String, Known>,
    disk: &BTreeMap<String, Meta>,
    ignored: &dyn Fn(&str, bool) -> bool,
    same_content: &dyn Fn(&str) -> bool,
    allow_deletes: bool,
) -> Plan {
    let mut out = Plan::default();
    let agrees = |path: &str, now: &Meta, item: &Item| {
        now.matches(item) && (!matches!(item, Item::File(_)) || same_content(path))
    };
    let remote_paths = tree.into_iter().flat_map(|t| t.slots().keys());
    let paths: BTreeSet<&String> = disk
        .keys()
        .chain(known.keys())
        .chain(remote_paths)
        .collect();
    for path in paths {
        if path.is_empty() {
            continue;
        }
        let local = disk.get(path);
        let was = known.get(path);
        let slot = tree.and_then(|t| t.slot(path));
        let is_dir = local.map_or_else(
            || {
                slot.and_then(|s| s.item.as_ref())
                    .is_some_and(|i| *i == Item::Dir)
            },
            Meta::is_dir,
        );
        if ignored(path, is_dir) {
            if was.is_some() {
                out.forget.push(path.clone());
            }
            continue;
        }
        let changed_here = match (local, was) {
            (None, None) => false,
            (Some(now), Some(was)) => !now.same(&was.meta),
            _ => true,
        };
        let changed_there = match (slot, was) {
            (None, _) => false,
            (Some(slot), Some(was)) => slot.stamp != was.stamp,
            (Some(slot), None) => slot.item.is_some(),
        };
        let publish = |reuse: Option<Synced>| Publish {
            path: path.clone(),
            local: local.cloned(),
            reuse,
            moved_to: None,
        };
        let synced = was.map(|was| Synced {
            path: path.clone(),
            stamp: was.stamp,
        });
        match (changed_here, changed_there, slot) {
            (false, false, _) => {}
            (true, false, _) | (true, true, None) | (false, true, None) => {
                out.publish.push(publish(None));
            }
            (false, true, Some(slot)) => {
                // This device's write was replaced by one that had not seen
                // it (when it had one): a concurrent change.
                let lost = was.is_some_and(|was| !was.stamp.seen_by(&slot.seen));
                match (local, &slot.item) {
                    (Some(now), Some(item)) if agrees(path, now, item) => {
                        out.adopt.push(path.clone());
                    }
                    (Some(now @ Meta::File { .. }), Some(Item::File(_))) if lost => {
                        out.conflicts.push(Conflict {
                            path: path.clone(),
                            local: now.clone(),
                            synced,
                        });
                    }
                    // An edit removed by a device that had not seen it
                    // stays: written again.
                    (Some(_), None) if lost => out.publish.push(publish(synced)),
                    _ => out.fetch.push(path.clone()),
                }
            }
            (true, true, Some(slot)) => match (local, &slot.item) {
                (Some(now), Some(item)) if agrees(path, now, item) => out.adopt.push(path.clone()),
                // Deleted here, changed there: the change stays. (Removed
                // on both sides: nothing left to do but record it.)
                (None, _) => out.fetch.push(path.clone()),
                // Changed here, removed there: the change stays.
                (Some(_), None) => out.publish.push(publish(None)),
                // A directory here keeps its contents where they are; what
                // the register held there stays among its versions.
                (Some(Meta::Dir), Some(_)) => out.publish.push(publish(None)),
                (Some(now), Some(_)) => out.conflicts.push(Conflict {
                    path: path.clone(),
                    local: now.clone(),
                    synced: None,
                }),
            },
        }
    }
    pair_renames(&mut out.publish, known);
    let deletions = out.deletions();
    let files = known.len().max(1);
    if !allow_deletes
        && deletions > MASS_DELETE_MIN
        && deletions as f64 > files as f64 * MASS_DELETE_SHARE
    {
        let (held, kept): (Vec<Publish>, Vec<Publish>) = out
            .publish
            .into_iter()
            .partition(|p| p.local.is_none() && p.moved_to.is_none());
        out.held = held.into_iter().map(|p| p.path).collect();
        out.publish = kept;
    }
    out
}

/// The files on disk whose content a pass compares with the register's
/// before planning (path, and the hash the register's file was stored
/// with): where the register holds a file of the same size that this
/// device has not synced there.
pub fn to_compare<'a>(
    tree: Option<&'a Tree>,
    known: &'a BTreeMap<String, Known>,
    disk: &'a BTreeMap<String, Meta>,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    disk.iter().filter_map(move |(path, now)| {
        let slot = tree?.slot(path)?;
        let item = slot.item.as_ref()?;
        let Item::File(file) = item else {
            return None;
        };
        let synced = known.get(path).is_some_and(|k| k.stamp == slot.stamp);
        (!synced && now.matches(item)).then_some((path.as_str(), file.hash.as_deref()?))
    })
}

/// Pairs each new file with a file deleted here that had its inode, size
/// and modification time: a rename (or a move), listed under the new name
/// with the content already stored.
fn pair_renames(publish: &mut [Publish], known: &BTreeMap<String, Known>) {
    let mut vanished: BTreeMap<(u64, u64, i64), usize> = BTreeMap::new();
    for (i, p) in publish.iter().enumerate() {
        if p.local.is_some() {
            continue;
        }
        if let Some(Known {
            meta: Meta::File {
                size, mtime, ino, ..
            },
            ..
        }) = known.get(&p.path)
            && *ino != 0
        {
            vanished.insert((*ino, *size, *mtime), i);
        }
    }
    for i in 0..publish.len() {
        let Some(Meta::File {
            size, mtime, ino, ..
        }) = publish[i].local
        else {
            continue;
        };
        if publish[i].reuse.is_some() || known.contains_key(&publish[i].path) {
            continue;
        }
        let Some(from) = vanished.remove(&(ino, size, mtime)) else {
            continue;
        };
        let Some(stamp) = known.get(&publish[from].path).map(|k| k.stamp) else {
            continue;
        };
        publish[i].reuse = Some(Synced {
            path: publish[from].path.clone(),
            stamp,
        });
        publish[from].moved_to = Some(publish[i].path.clone());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crdt::folder::{FileItem, Write};
    use crate::files::{Copy, FileEntry};
    use cairn_proto::{BlobId, SigningKey, VerifyingKey};

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
            exec: false,
            hash: None,
        })
    }

    fn meta(tag: u8, ino: u64) -> Meta {
        Meta::File {
            size: u64::from(tag),
            mtime: i64::from(tag),
            exec: false,
            ino,
        }
    }

    fn stamp(clock: u64, d: u8) -> Stamp {
        Stamp {
            clock,
            device: device(d),
        }
    }

    fn known(tag: u8, clock: u64, d: u8) -> Known {
        Known {
            meta: meta(tag, u64::from(tag) + 1000),
            stamp: stamp(clock, d),
            blob: None,
            digest: None,
        }
    }

    fn never(_: &str, _: bool) -> bool {
        false
    }

    /// A tree where device `d` wrote `item` at `clock` to "f", having seen
    /// `seen`, over device 0's write of file 1 at clock 10.
    fn tree_after(d: u8, clock: u64, item: Option<Item>, seen: &[(u8, u64)]) -> Tree {
        let mut tree = Tree::default();
        tree.apply(
            device(0),
            10,
            &Write {
                path: "f".into(),
                seen: Default::default(),
                item: Some(file(1)),
            },
        );
        tree.apply(
            device(d),
            clock,
            &Write {
                path: "f".into(),
                seen: seen
                    .iter()
                    .map(|(d, c)| (device(*d).to_string(), *c))
                    .collect(),
                item,
            },
        );
        tree
    }

    #[test]
    fn a_change_here_is_published_and_one_elsewhere_fetched() {
        let tree = tree_after(0, 10, Some(file(1)), &[]);
        let index = BTreeMap::from([("f".to_owned(), known(1, 10, 0))]);
        let edited = BTreeMap::from([("f".to_owned(), meta(2, 1001))]);
        let p = plan(Some(&tree), &index, &edited, &never, &|_| false, false);
        assert_eq!(p.publish.len(), 1);
        assert!(p.fetch.is_empty() && p.conflicts.is_empty());

        let tree = tree_after(1, 20, Some(file(2)), &[(0, 10)]);
        let same = BTreeMap::from([("f".to_owned(), meta(1, 1001))]);
        let p = plan(Some(&tree), &index, &same, &never, &|_| false, false);
        assert_eq!(p.fetch, ["f"]);
        assert!(p.publish.is_empty() && p.conflicts.is_empty());
    }

    #[test]
    fn concurrent_edits_keep_both_files() {
        // Edited here (not yet published) and elsewhere.
        let tree = tree_after(1, 20, Some(file(2)), &[(0, 10)]);
        let index = BTreeMap::from([("f".to_owned(), known(1, 10, 0))]);
        let edited = BTreeMap::from([("f".to_owned(), meta(3, 1001))]);
        let p = plan(Some(&tree), &index, &edited, &never, &|_| false, false);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].synced, None, "the local edit is uploaded");

        // Both published at once: this device's write (clock 15) lost to
        // one that had not seen it.
        let mut tree = tree_after(1, 20, Some(file(2)), &[(0, 10)]);
        tree.apply(
            device(2),
            15,
            &Write {
                path: "f".into(),
                seen: [(device(0).to_string(), 10)].into(),
                item: Some(file(3)),
            },
        );
        let index = BTreeMap::from([("f".to_owned(), known(3, 15, 2))]);
        let unchanged = BTreeMap::from([("f".to_owned(), meta(3, 1003))]);
        let p = plan(Some(&tree), &index, &unchanged, &never, &|_| false, false);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(
            p.conflicts[0].synced,
            Some(Synced {
                path: "f".into(),
                stamp: stamp(15, 2)
            }),
            "the lost write is listed again, not uploaded"
        );
    }

    #[test]
    fn a_deletion_never_beats_an_edit() {
        // Deleted elsewhere, edited here: the edit is published.
        let tree = tree_after(1, 20, None, &[(0, 10)]);
        let index = BTreeMap::from([("f".to_owned(), known(1, 10, 0))]);
        let edited = BTreeMap::from([("f".to_owned(), meta(2, 1001))]);
        let p = plan(Some(&tree), &index, &edited, &never, &|_| false, false);
        assert_eq!(p.publish.len(), 1);
        assert!(p.publish[0].local.is_some());

        // Deleted here, edited elsewhere: the edit is fetched.
        let tree = tree_after(1, 20, Some(file(2)), &[(0, 10)]);
        let p = plan(
            Some(&tree),
            &index,
            &BTreeMap::new(),
            &never,
            &|_| false,
            false,
        );
        assert_eq!(p.fetch, ["f"]);
        assert!(p.publish.is_empty());

        // Edited and published here (clock 15), deleted concurrently by a
        // device that had not seen the edit, whose deletion won: the edit
        // is written again.
        let mut tree = tree_after(1, 20, None, &[(0, 10)]);
        tree.apply(
            device(2),
            15,
            &Write {
                path: "f".into(),
                seen: [(device(0).to_string(), 10)].into(),
                item: Some(file(3)),
            },
        );
        let index = BTreeMap::from([("f".to_owned(), known(3, 15, 2))]);
        let unchanged = BTreeMap::from([("f".to_owned(), meta(3, 1003))]);
        let p = plan(Some(&tree), &index, &unchanged, &never, &|_| false, false);
        assert_eq!(p.publish.len(), 1);
        assert_eq!(p.publish[0].reuse.as_ref().unwrap().stamp, stamp(15, 2));
    }

    #[test]
    fn a_rename_is_listed_under_the_new_name_without_upload() {
        let tree = tree_after(0, 10, Some(file(1)), &[]);
        let index = BTreeMap::from([("f".to_owned(), known(1, 10, 0))]);
        let moved = BTreeMap::from([("g".to_owned(), meta(1, 1001))]);
        let p = plan(Some(&tree), &index, &moved, &never, &|_| false, false);
        let new = p.publish.iter().find(|p| p.path == "g").unwrap();
        assert_eq!(new.reuse.as_ref().unwrap().path, "f");
        let old = p.publish.iter().find(|p| p.path == "f").unwrap();
        assert_eq!(old.moved_to.as_deref(), Some("g"));
        assert_eq!(p.deletions(), 0);
    }

    #[test]
    fn a_mass_deletion_is_held_unless_allowed() {
        let index: BTreeMap<String, Known> = (0..40)
            .map(|i| (format!("f{i}"), known(1, 10, 0)))
            .collect();
        let kept: BTreeMap<String, Meta> =
            (0..20).map(|i| (format!("f{i}"), meta(1, 1001))).collect();
        let p = plan(None, &index, &kept, &never, &|_| false, false);
        assert_eq!(p.held.len(), 20);
        assert!(p.publish.is_empty());
        let p = plan(None, &index, &kept, &never, &|_| false, true);
        assert_eq!(p.publish.len(), 20);
        // A few deletions are not a mass deletion.
        let most: BTreeMap<String, Meta> =
            (0..35).map(|i| (format!("f{i}"), meta(1, 1001))).collect();
        let p = plan(None, &index, &most, &never, &|_| false, false);
        assert!(p.held.is_empty());
        assert_eq!(p.deletions(), 5);
    }
}
