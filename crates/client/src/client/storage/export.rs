//! `export`: every stored file, verified and decrypted, into a directory of
//! plain files: the way out that needs nothing of cairn afterwards.
//!
//! Names come from the file table, which any device of the identity can
//! write; a name is never trusted as a path. A name whose parts are all
//! ordinary file names becomes that relative path; any other (`..`, an
//! empty part, a part too long for a file system, or one that collides
//! with an earlier file) is written at the top of the directory under an
//! escaped form of the whole name, and the report says so.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::Output;
use crate::client::Client;
use crate::error::{Error, Result, io_at};
use crate::progress::Progress;

/// Longest file name part written, in bytes (most file systems allow 255).
const MAX_PART: usize = 200;

/// What `export` did.
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    /// The directory written.
    pub dir: PathBuf,
    /// The files written, in name order.
    pub files: Vec<Exported>,
    /// Bytes written.
    pub bytes: u64,
    /// Files that could not be fetched, with why; nothing was written for
    /// them.
    pub failed: Vec<ExportFailure>,
}

/// One file written.
#[derive(Clone, Debug, Serialize)]
pub struct Exported {
    /// Its stored name.
    pub name: String,
    /// Where it was written, relative to the directory.
    pub path: PathBuf,
    /// Bytes of data.
    pub size: u64,
    /// True when the name could not be used as a path and was escaped.
    pub escaped: bool,
}

/// One file not written.
#[derive(Clone, Debug, Serialize)]
pub struct ExportFailure {
    /// Its stored name.
    pub name: String,
    /// Why.
    pub error: String,
}

impl Client {
    /// Writes every stored file, verified and decrypted, into `dir`, which
    /// must not exist yet or be empty (so that nothing is replaced). A file
    /// no relay can serve is reported, and the others are still written.
    pub async fn export(
        &mut self,
        dir: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<ExportReport> {
        prepare(dir)?;
        let mut state = self.synced().await?;
        let files: Vec<_> = Self::table_of(&state)
            .files()
            .map(|(name, entry)| (name.to_owned(), entry.clone()))
            .collect();
        let mut report = ExportReport {
            dir: dir.to_path_buf(),
            files: Vec::with_capacity(files.len()),
            bytes: 0,
            failed: Vec::new(),
        };
        let mut taken = BTreeSet::new();
        for (name, entry) in files {
            let Some((path, escaped)) = place(dir, &name, &mut taken) else {
                report.failed.push(ExportFailure {
                    name,
                    error: "no path in the directory is free for it".into(),
                });
                continue;
            };
            let target = Output::File(dir.join(&path));
            match self
                .fetch_resolved(
                    &mut state,
                    entry.blob,
                    Some(&entry),
                    target,
                    None,
                    progress.clone(),
                )
                .await
            {
                Ok(got) => {
                    report.bytes += got.size;
                    report.files.push(Exported {
                        name,
                        path,
                        size: got.size,
                        escaped,
                    });
                }
                Err(err) => report.failed.push(ExportFailure {
                    name,
                    error: err.to_string(),
                }),
            }
        }
        Ok(report)
    }
}

/// Makes `dir` if it does not exist; refuses one that holds anything.
fn prepare(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Invalid(format!(
                    "{} is not empty: export writes into a new or empty directory, so that it \
                     replaces nothing",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_at(dir))
        }
        Err(err) => Err(io_at(dir)(err)),
    }
}

/// Where `name` goes under `dir`, its parent directories made: the name as
/// a relative path when it is a safe one and free, else its escaped form at
/// the top; `None` when neither is free. True when escaped.
fn place(dir: &Path, name: &str, taken: &mut BTreeSet<PathBuf>) -> Option<(PathBuf, bool)> {
    if let Some(path) = as_path(name)
        && is_free(&path, taken)
        && path
            .parent()
            .is_none_or(|parent| std::fs::create_dir_all(dir.join(parent)).is_ok())
        && !dir.join(&path).exists()
    {
        taken.insert(path.clone());
        return Some((path, false));
    }
    let path = PathBuf::from(escape(name));
    if is_free(&path, taken) && !dir.join(&path).exists() {
        taken.insert(path.clone());
        return Some((path, true));
    }
    None
}

/// `name` as a relative path, if every part of it is an ordinary file name.
fn as_path(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(name);
    let ordinary = name
        .split('/')
        .all(|part| !part.is_empty() && part != "." && part != ".." && part.len() <= MAX_PART)
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    ordinary.then_some(path)
}

/// Whether `path` neither is nor lies below nor above a path written before
/// (a file cannot also be a directory).
fn is_free(path: &Path, taken: &BTreeSet<PathBuf>) -> bool {
    !taken
        .iter()
        .any(|t| t == path || path.starts_with(t) || t.starts_with(path))
}

/// `name` as one file name: `%`, `/` and a leading `.` percent-encoded; a
/// name too long for a file system is cut and given a hash of the whole,
/// so distinct names stay distinct.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    if out.len() <= MAX_PART {
        return out;
    }
    let mut cut = MAX_PART - 20;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = blake3::hash(name.as_bytes()).to_hex();
    format!("{}~{}", &out[..cut], &hash[..16])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_ordinary_relative_names_become_paths() {
        for good in ["a", "a/b", "notes/2026/june.txt", "..a", "a.."] {
            assert_eq!(as_path(good), Some(PathBuf::from(good)), "{good}");
        }
        let long = "x".repeat(MAX_PART + 1);
        for bad in [
            "../a",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "a/",
            ".",
            "./a",
            long.as_str(),
        ] {
            assert_eq!(as_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn escaped_names_are_one_part_and_stay_distinct() {
        assert_eq!(escape("../x"), "%2E./x".replace('/', "%2F"));
        assert_eq!(escape("/etc/passwd"), "%2Fetc%2Fpasswd");
        assert_eq!(escape("50%"), "50%25");
        let (a, b) = ("y".repeat(900) + "a", "y".repeat(900) + "b");
        let (ea, eb) = (escape(&a), escape(&b));
        assert!(ea.len() <= MAX_PART && eb.len() <= MAX_PART);
        assert_ne!(ea, eb);
        for e in [&ea, &eb, &escape("../../../x")] {
            assert_eq!(Path::new(e).components().count(), 1, "{e}");
            assert!(matches!(
                Path::new(e).components().next(),
                Some(Component::Normal(_))
            ));
        }
    }

    #[test]
    fn a_file_and_a_directory_of_one_name_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let mut taken = BTreeSet::new();
        let first = place(dir.path(), "a", &mut taken).unwrap();
        assert_eq!(first, (PathBuf::from("a"), false));
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        let second = place(dir.path(), "a/b", &mut taken).unwrap();
        assert_eq!(second, (PathBuf::from("a%2Fb"), true));
        let third = place(dir.path(), "../up", &mut taken).unwrap();
        assert_eq!(third, (PathBuf::from("%2E.%2Fup"), true));
    }
}
