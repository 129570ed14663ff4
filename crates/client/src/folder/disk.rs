//! Writing into a folder without leaving it, and without overwriting what
//! changed under a pass.
//!
//! Every path is checked (`check_path`) and its parents resolved one by
//! one, refusing any that is a link: a link in the folder, made here or
//! received, never sends a write outside the root. A file is written to
//! the staging directory and renamed into place; a path that was empty
//! when the pass planned is filled only if it still is (a hard link, which
//! never replaces), and a path that held something is replaced or removed
//! only if it still holds what the pass read.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::scan::{Meta, STAGING};
use crate::crdt::folder::check_path;

/// What became of a write to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// Done.
    Done,
    /// The path changed since the pass read it: left as it is (the next
    /// pass sees a change on both sides).
    Changed,
}

/// A folder's root on disk.
#[derive(Clone, Debug)]
pub struct Root {
    path: PathBuf,
}

fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

impl Root {
    /// The folder at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    /// The root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `rel` is (not checked: for reading).
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The directory staged downloads go to, made if missing.
    pub fn staging(&self) -> io::Result<PathBuf> {
        let dir = self.path.join(STAGING);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
            Err(err) => Err(err),
        }
    }

    /// Removes what an earlier pass left in the staging directory (one
    /// that was killed mid-way): passes on one home take turns, so nothing
    /// there is in use.
    pub fn clear_staging(&self) -> io::Result<usize> {
        let dir = self.path.join(STAGING);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Where `rel` goes, its parent directories made as needed; refuses a
    /// path that is not valid, or whose parents include a link or a file.
    pub fn prepare(&self, rel: &str) -> io::Result<PathBuf> {
        check_path(rel).map_err(refused)?;
        if rel.is_empty() {
            return Err(refused("the folder's root is not a file".into()));
        }
        let mut at = self.path.clone();
        let parts: Vec<&str> = rel.split('/').collect();
        let (name, parents) = parts.split_last().unwrap_or((&"", &[]));
        for part in parents {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(refused(format!(
                        "{rel}: {} is not a directory (a link is never followed)",
                        at.display()
                    )));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir(&at)?;
                }
                Err(err) => return Err(err),
            }
        }
        at.push(name);
        Ok(at)
    }

    /// Moves the staged file `staged` to `rel`, if `rel` still holds
    /// `expected` (what the pass read; `None`: nothing).
    pub fn place(&self, staged: &Path, rel: &str, expected: Option<&Meta>) -> io::Result<Placed> {
        let target = self.prepare(rel)?;
        if !still(&target, expected)? {
            return Ok(Placed::Changed);
        }
        match expected {
            // Never replaces: something written there since is kept.
            None => match std::fs::hard_link(staged, &target) {
                Ok(()) => {
                    std::fs::remove_file(staged)?;
                    Ok(Placed::Done)
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(Placed::Changed),
                Err(err) => Err(err),
            },
            Some(Meta::Dir) => Ok(Placed::Changed),
            Some(_) => {
                std::fs::rename(staged, &target)?;
                Ok(Placed::Done)
            }
        }
    }

    /// Renames `from` to `to` (both in the folder) if `from` still holds
    /// `expected` and `to` holds nothing.
    pub fn rename(&self, from: &str, expected: &Meta, to: &str) -> io::Result<Placed> {
        let source = self.prepare(from)?;
        let target = self.prepare(to)?;
        if !still(&source, Some(expected))? || !still(&target, None)? {
            return Ok(Placed::Changed);
        }
        std::fs::rename(&source, &target)?;
        Ok(Placed::Done)
    }

    /// Makes directory `rel` unless something is there.
    pub fn make_dir(&self, rel: &str, expected: Option<&Meta>) -> io::Result<Placed> {
        let target = self.prepare(rel)?;
        if !still(&target, expected)? {
            return Ok(Placed::Changed);
        }
        if let Some(old) = expected
            && !old.is_dir()
        {
            std::fs::remove_file(&target)?;
        }
        match std::fs::create_dir(&target) {
            Ok(()) => Ok(Placed::Done),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {
                Ok(Placed::Done)
            }
            Err(err) => Err(err),
        }
    }

    /// Makes `rel` a link to `target` if it still holds `expected`.
    pub fn make_link(&self, rel: &str, link: &str, expected: Option<&Meta>) -> io::Result<Placed> {
        let path = self.prepare(rel)?;
        if !still(&path, expected)? || expected.is_some_and(Meta::is_dir) {
            return Ok(Placed::Changed);
        }
        let staged = self
            .staging()?
            .join(format!("link-{}", u64::from_le_bytes(rand_bytes())));
        std::os::unix::fs::symlink(link, &staged)?;
        let placed = if expected.is_some() {
            std::fs::rename(&staged, &path).map(|()| Placed::Done)
        } else {
            // `rename` would replace what appeared since; a link has no
            // hard link to make, so check again just before.
            if still(&path, None)? {
                std::fs::rename(&staged, &path).map(|()| Placed::Done)
            } else {
                Ok(Placed::Changed)
            }
        };
        let _ = std::fs::remove_file(&staged);
        placed
    }

    /// Removes `rel` if it still holds `expected`: a file or link, or a
    /// directory once empty (one that is not stays: what is in it now is
    /// published by the next pass).
    pub fn remove(&self, rel: &str, expected: &Meta) -> io::Result<Placed> {
        let path = self.prepare(rel)?;
        if !still(&path, Some(expected))? {
            return Ok(Placed::Changed);
        }
        let removed = if expected.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => Ok(Placed::Done),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Placed::Done),
            Err(err) if err.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(Placed::Changed),
            Err(err) => Err(err),
        }
    }
}

/// Whether `path` holds `expected` (`None`: nothing), by metadata.
fn still(path: &Path, expected: Option<&Meta>) -> io::Result<bool> {
    let now = Meta::read(path)?;
    Ok(match (now, expected) {
        (None, None) => true,
        (Some(now), Some(expected)) => now.same(expected),
        // Something a folder does not carry is there (a socket, say):
        // never replaced.
        (None, Some(_)) => std::fs::symlink_metadata(path).is_err(),
        (Some(_), None) => false,
    })
}

/// Sets a staged file's modification time and execute bit.
pub fn finish_file(path: &Path, mtime: i64, exec: bool) -> io::Result<()> {
    let file = std::fs::File::options().write(true).open(path)?;
    let time = if mtime >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime.unsigned_abs())
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_nanos(mtime.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    };
    file.set_modified(time)?;
    let mut mode = file.metadata()?.permissions().mode();
    if exec {
        // Executable by whoever may read it.
        mode |= (mode & 0o444) >> 2;
    } else {
        mode &= !0o111;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Now, in nanoseconds since the Unix epoch (for a conflict copy's date).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn rand_bytes() -> [u8; 8] {
    let mut bytes = [0; 8];
    // A name clash only fails this one link; no need to stop for it.
    let _ = getrandom::fill(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn file_meta(path: &Path) -> Meta {
        Meta::read(path).unwrap().unwrap()
    }

    #[test]
    fn writes_never_follow_a_link_out_of_the_folder() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let staged = root.staging().unwrap().join("x");
        std::fs::write(&staged, b"data").unwrap();
        assert!(root.place(&staged, "link/escaped", None).is_err());
        assert!(root.make_dir("link/d", None).is_err());
        assert!(root.prepare("../escaped").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn what_a_killed_pass_left_staged_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(root.clear_staging().unwrap(), 0, "no staging directory yet");
        std::fs::write(root.staging().unwrap().join("fetch-1"), b"half").unwrap();
        std::fs::write(dir.path().join("kept"), b"data").unwrap();
        assert_eq!(root.clear_staging().unwrap(), 1);
        assert!(dir.path().join("kept").exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join(STAGING)).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_path_that_changed_since_the_pass_read_it_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let staged = root.staging().unwrap().join("x");
        std::fs::write(&staged, b"remote").unwrap();
        // Planned as empty; a local file appeared since.
        std::fs::write(dir.path().join("a"), b"local").unwrap();
        assert_eq!(root.place(&staged, "a", None).unwrap(), Placed::Changed);
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"local");
        // Planned as what it held; edited since.
        let read = file_meta(&dir.path().join("a"));
        std::fs::write(dir.path().join("a"), b"local, longer").unwrap();
        assert_eq!(
            root.place(&staged, "a", Some(&read)).unwrap(),
            Placed::Changed
        );
        assert_eq!(root.remove("a", &read).unwrap(), Placed::Changed);
        assert_eq!(
            std::fs::read(dir.path().join("a")).unwrap(),
            b"local, longer"
        );
        // Unchanged: replaced.
        let read = file_meta(&dir.path().join("a"));
        assert_eq!(root.place(&staged, "a", Some(&read)).unwrap(), Placed::Done);
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"remote");
        // Parents are made as needed.
        std::fs::write(&staged, b"deep").unwrap();
        assert_eq!(root.place(&staged, "b/c/d", None).unwrap(), Placed::Done);
        assert_eq!(std::fs::read(dir.path().join("b/c/d")).unwrap(), b"deep");
    }
}
