//! Reading a folder's tree from disk by metadata alone: a pass that
//! changes nothing hashes nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

use crate::crdt::folder::Item;

/// The file at a folder's root that says the folder is there: a root
/// without it (a disk not mounted, a directory replaced) pauses the
/// folder instead of reading as everything deleted.
pub const MARKER: &str = ".cairn-folder";
/// Where a pass stages downloads, inside the root (the same file system,
/// so a finished download is renamed into place).
pub const STAGING: &str = ".cairn-tmp";
/// The ignore file, gitignore syntax, at the folder's root.
pub const IGNORE_FILE: &str = ".cairnignore";

/// Left out of every folder, before `.cairnignore`: cairn's own files,
/// editor swap and backup files, and what file managers leave behind.
const DEFAULT_IGNORES: &[&str] = &[
    "/.cairn-folder",
    "/.cairn-tmp/",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "desktop.ini",
];

/// How close to when a pass read a file its modification time may be and
/// a later write still go unseen: file systems keep modification times in
/// clock ticks (a few milliseconds on Linux, two seconds on FAT), and a
/// second write within the tick of the first leaves the time as it was.
pub const RACY_NANOS: i64 = 2_000_000_000;

/// Whether `meta`, read at `read_at` (nanoseconds since the epoch), is a
/// file modified so recently that its metadata alone cannot vouch for its
/// content later.
pub fn is_racy(meta: &Meta, read_at: i64) -> bool {
    matches!(meta, Meta::File { mtime, .. } if *mtime >= read_at.saturating_sub(RACY_NANOS))
}

/// The hash a pass keeps of a racy file's content (hex).
pub fn digest_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// What a path is on disk, as far as a pass compares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Meta {
    /// A regular file.
    File {
        /// Bytes.
        size: u64,
        /// Modification time, nanoseconds since the Unix epoch.
        mtime: i64,
        /// Whether any execute bit is set.
        #[serde(default)]
        exec: bool,
        /// Its inode: a file with the inode of one that vanished was
        /// renamed, not written anew.
        #[serde(default)]
        ino: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Link {
        /// Where it points.
        target: String,
    },
}

impl Meta {
    /// Whether `self` is what `other` was: for a file, the same size,
    /// modification time and execute bit (not the inode: a rename keeps
    /// the content, and some file systems number inodes anew on mount).
    pub fn same(&self, other: &Meta) -> bool {
        match (self, other) {
            (
                Meta::File {
                    size, mtime, exec, ..
                },
                Meta::File {
                    size: s,
                    mtime: m,
                    exec: e,
                    ..
                },
            ) => size == s && mtime == m && exec == e,
            (Meta::Dir, Meta::Dir) => true,
            (Meta::Link { target }, Meta::Link { target: t }) => target == t,
            _ => false,
        }
    }

    /// Whether the path may hold what `item` says: a file of the same size
    /// and execute bit (its content is for the caller to compare), the
    /// same link, or a directory.
    pub fn matches(&self, item: &Item) -> bool {
        match (self, item) {
            (Meta::File { size, exec, .. }, Item::File(file)) => {
                *size == file.entry.size && *exec == file.exec
            }
            (Meta::Dir, Item::Dir) => true,
            (Meta::Link { target }, Item::Link { target: t }) => target == t,
            _ => false,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self, Meta::Dir)
    }

    /// Reads what `path` is, without following a link. `None` for a path
    /// that is not there, or is a kind of file a folder does not carry.
    pub fn read(path: &Path) -> std::io::Result<Option<Meta>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let kind = meta.file_type();
        Ok(if kind.is_file() {
            Some(Meta::File {
                size: meta.len(),
                mtime: meta
                    .mtime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(meta.mtime_nsec()),
                exec: meta.permissions().mode() & 0o111 != 0,
                ino: meta.ino(),
            })
        } else if kind.is_dir() {
            Some(Meta::Dir)
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path)?;
            target.to_str().map(|target| Meta::Link {
                target: target.to_owned(),
            })
        } else {
            None
        })
    }
}

/// The ignore rules of one folder: the defaults, then its `.cairnignore`.
#[derive(Debug)]
pub struct Ignores {
    rules: Gitignore,
}

impl Ignores {
    /// The rules for the folder at `root`. A `.cairnignore` that does not
    /// parse is an error: skipping it would send what it was meant to
    /// keep out.
    pub fn load(root: &Path) -> Result<Self, String> {
        let mut builder = GitignoreBuilder::new(root);
        for rule in DEFAULT_IGNORES {
            builder
                .add_line(None, rule)
                .map_err(|err| format!("default ignore rule {rule}: {err}"))?;
        }
        let file = root.join(IGNORE_FILE);
        if file.exists()
            && let Some(err) = builder.add(&file)
        {
            return Err(format!("{}: {err}", file.display()));
        }
        let rules = builder
            .build()
            .map_err(|err| format!("{}: {err}", file.display()))?;
        Ok(Self { rules })
    }

    /// Whether the folder leaves `path` (relative) out, or a directory it
    /// is in.
    pub fn ignored(&self, path: &str, is_dir: bool) -> bool {
        self.rules
            .matched_path_or_any_parents(path, is_dir)
            .is_ignore()
    }
}

/// A folder's tree as read from disk.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every path carried, relative to the root.
    pub items: BTreeMap<String, Meta>,
    /// Paths left out, and why (other kinds of files, names that are not
    /// UTF-8, directories that cannot be read).
    pub skipped: Vec<String>,
}

/// Reads the tree under `root`: metadata only, links never followed,
/// ignored paths left out.
pub fn scan(root: &Path, ignores: &Ignores) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let mut pending: Vec<(PathBuf, String)> = vec![(root.to_owned(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // The root itself must be readable; a subdirectory that is not
            // is reported and left as it is.
            Err(err) if !rel.is_empty() => {
                out.skipped.push(format!("{rel}: cannot be read ({err})"));
                continue;
            }
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                out.skipped
                    .push(format!("{}: the name is not UTF-8", entry.path().display()));
                continue;
            };
            let path = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            if crate::crdt::folder::check_path(&path).is_err() {
                out.skipped
                    .push(format!("{path:?}: not a name a folder carries"));
                continue;
            }
            let meta = match Meta::read(&entry.path()) {
                Ok(Some(meta)) => meta,
                Ok(None) => {
                    if std::fs::symlink_metadata(entry.path()).is_ok() {
                        out.skipped.push(format!(
                            "{path}: not a regular file, directory or symbolic link"
                        ));
                    }
                    continue;
                }
                Err(err) => {
                    out.skipped.push(format!("{path}: {err}"));
                    continue;
                }
            };
            if ignores.ignored(&path, meta.is_dir()) {
                continue;
            }
            if meta.is_dir() {
                pending.push((entry.path(), path.clone()));
            }
            out.items.insert(path, meta);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_scan_carries_files_dirs_and_links_and_leaves_out_what_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/empty")).unwrap();
        std::fs::write(root.join("a/one.txt"), b"1").unwrap();
        std::fs::write(root.join("a/.one.txt.swp"), b"swap").unwrap();
        std::fs::write(root.join(".DS_Store"), b"x").unwrap();
        std::fs::write(root.join("build.log"), b"x").unwrap();
        std::fs::create_dir(root.join("target")).unwrap();
        std::fs::write(root.join("target/out"), b"x").unwrap();
        std::fs::write(root.join(MARKER), b"x").unwrap();
        std::fs::write(root.join(IGNORE_FILE), b"*.log\n/target/\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/outside")).unwrap();
        std::fs::set_permissions(
            root.join("a/one.txt"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let ignores = Ignores::load(root).unwrap();
        let found = scan(root, &ignores).unwrap();
        let paths: Vec<&str> = found.items.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [".cairnignore", "a", "a/empty", "a/one.txt", "a/outside"]
        );
        assert!(matches!(
            found.items["a/one.txt"],
            Meta::File {
                size: 1,
                exec: true,
                ..
            }
        ));
        assert_eq!(
            found.items["a/outside"],
            Meta::Link {
                target: "/etc".into()
            }
        );
    }

    #[test]
    fn a_cairnignore_that_does_not_parse_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IGNORE_FILE), b"ok\n[z-a]\n").unwrap();
        assert!(Ignores::load(dir.path()).is_err());
    }
}
