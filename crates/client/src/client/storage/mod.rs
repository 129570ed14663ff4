//! Storing and fetching files: `put` (`put`), `get` (`get`), `export`
//! (`export`), and here `ls`, `rm` and `mv`.

mod assemble;
mod chunked;
mod export;
mod get;
mod pieces;
mod put;
mod range;
mod stored;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use cairn_proto::{BlobId, VerifyingKey};

pub use self::export::{ExportFailure, ExportReport, Exported};
pub use self::range::{ByteRange, RangeSpec};
use super::{Client, Offline};
use crate::crdt::Change;
use crate::error::{Error, Result};
use crate::files::{Copy, Place, check_name};
use crate::relay::Deleted;
pub(in crate::client) use chunked::MAX_SEALED_CHUNK;
pub(in crate::client) use put::Candidates;

/// Where `get` writes the data.
#[derive(Clone, Debug)]
pub enum Output {
    /// A file, replaced atomically once the data is complete and verified.
    File(PathBuf),
    /// Standard output, streamed.
    Stdout,
}

/// What `put` did.
#[derive(Clone, Debug, Serialize)]
pub struct PutReport {
    /// The name stored.
    pub name: String,
    /// The sealed blob.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Bytes of data.
    pub size: u64,
    /// Bytes stored per copy.
    pub sealed_size: u64,
    /// Chunks the file was stored as (0: one blob; PROTOCOL.md §10.8).
    pub chunks: usize,
    /// Chunks already stored (by an earlier put, this one interrupted, or
    /// another file) and claimed rather than sent again.
    pub reused: usize,
    /// Bytes sent to relays, all of them together.
    pub sent: u64,
    /// Relays holding an acknowledged copy.
    pub copies: Vec<String>,
    /// The blob the name pointed at before, if it was replaced.
    pub replaced: Option<String>,
    /// Things the user should know (redundancy below target, relays that
    /// failed and were replaced).
    pub warnings: Vec<String>,
}

/// What `get` did.
#[derive(Clone, Debug, Serialize)]
pub struct GetReport {
    /// The blob read.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Bytes of data written.
    pub size: u64,
    /// The relay whose copy was used.
    pub relay: String,
    /// Relays tried first and skipped, with why (each relay and reason
    /// once; in JSON, strings that start with the relay's URL).
    pub skipped: crate::Failures,
    /// Copies found transferred while looking for the blob: relays that
    /// handed their copy on to a peer (PROTOCOL.md §7.3), and whether the
    /// file table now records where it went. When `relay` is one of the
    /// peers, the data was served through the transfer.
    pub moved: Vec<Transfer>,
    /// Problems that did not stop the download (a new placement that could
    /// not be recorded).
    pub warnings: Vec<String>,
    /// Chunks fetched (0 for a file stored as one blob).
    pub chunks: usize,
    /// Bytes taken from a local earlier version instead of fetched (a
    /// synced folder's file after an edit elsewhere).
    #[serde(skip_serializing_if = "is_zero")]
    pub from_disk: u64,
    /// The bytes written, when only part of the file was asked for: the
    /// first, and the one after the last.
    pub range: Option<ByteRange>,
}

/// A copy one relay transferred to another (PROTOCOL.md §7.3): the
/// first still redirects to the second, and the second holds the bytes.
#[derive(Clone, Debug, Serialize)]
pub struct Transfer {
    /// The URL of the relay the copy was on.
    pub from: String,
    /// Its key.
    #[serde(with = "crate::text_serde")]
    pub from_key: VerifyingKey,
    /// The URL of the relay holding it now.
    pub to: String,
    /// Its key (checked against its signed info document when the
    /// transfer was found).
    #[serde(with = "crate::text_serde")]
    pub to_key: VerifyingKey,
    /// Whether the file table records the transfer, so every device finds
    /// the copy where it is.
    pub recorded: bool,
}

/// One stored file, as `ls` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FileInfo {
    /// Its name.
    pub name: String,
    /// The sealed blob.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Bytes of data.
    pub size: u64,
    /// Chunk blobs it is stored as (0: one blob; then `blob` is its
    /// manifest, PROTOCOL.md §10.8).
    pub chunks: usize,
    /// When it was stored (Unix seconds).
    pub stored_at: u64,
    /// Relays holding copies (where transferred copies went, not where they
    /// were made).
    pub copies: Vec<String>,
    /// Copies relays transferred to peers, as recorded.
    pub transferred: Vec<Transfer>,
}

/// What `rm` did.
#[derive(Clone, Debug, Serialize)]
pub struct RemoveReport {
    /// The name removed.
    pub name: String,
    /// Its blob.
    #[serde(with = "crate::text_serde")]
    pub blob: BlobId,
    /// Relays the copies were deleted from.
    pub deleted: Vec<String>,
    /// Copies left in place, with why (they expire with the relay's
    /// retention).
    pub left: Vec<String>,
}

/// How long a relay gets to answer its info request when choosing where to
/// store.
const INFO_TIMEOUT: Duration = Duration::from_secs(10);

/// The stored files, and how current the list is.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    /// The files, by name.
    pub files: Vec<FileInfo>,
    /// Set when no relay answered: the list is this device's own, as of
    /// its last sync.
    pub offline: Option<Offline>,
}

impl Client {
    /// The stored files, by name: as the relays have them, or, when none
    /// answers, as this device last knew them (saying so).
    pub async fn list(&mut self) -> Result<Listing> {
        let (state, offline) = match self.synced().await {
            Ok(state) => (state, None),
            Err(Error::Offline(why)) => {
                self.require_active()?;
                let state = self.load_sync()?;
                let offline = Offline::of(&state, why);
                (state, Some(offline))
            }
            Err(err) => return Err(err),
        };
        let table = Self::table_of(&state);
        let files = table
            .files()
            .map(|(name, entry)| FileInfo {
                name: name.to_owned(),
                blob: entry.blob,
                size: entry.size,
                chunks: entry.chunks.len(),
                stored_at: entry.stored_at,
                copies: table.places(entry).into_iter().map(|p| p.url).collect(),
                transferred: get::recorded_transfers(table, entry),
            })
            .collect();
        Ok(Listing { files, offline })
    }

    /// Removes `name` from the file table and drops this device's claims
    /// on its copies. A relay deletes a copy with its last owner's claim:
    /// the other devices drop theirs when they next sync.
    pub async fn remove(&mut self, name: &str) -> Result<RemoveReport> {
        let mut state = self.synced().await?;
        self.require_active()?;
        let entry = Self::table_of(&state)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchName(name.to_owned()))?;
        let located: Vec<(Copy, Option<Place>)> = Self::table_of(&state)
            .located(&entry)
            .map(|(copy, to)| (copy.clone(), to.cloned()))
            .collect();
        self.append(
            &mut state,
            Change::Remove {
                name: name.to_owned(),
            },
        )
        .await?;
        let released = self.finish_change(&mut state).await?;
        let still_owned = Self::owned_relays(&state, &entry.blob);
        let mut deleted = Vec::new();
        let mut left = Vec::new();
        // Each copy is reported where it is now, and each relay once: a copy
        // moved onto a relay that had one is that one.
        let mut reported = BTreeSet::new();
        for (copy, moved) in &located {
            let (url, relay) = moved
                .as_ref()
                .map_or((&copy.url, copy.relay), |to| (&to.url, to.relay));
            if !reported.insert(relay) {
                continue;
            }
            let done = released
                .iter()
                .find(|(blob, at, _)| *blob == entry.blob && *at == relay)
                .map(|(_, _, done)| *done);
            match (done, moved) {
                (Some(Deleted::Gone | Deleted::Absent), _) => deleted.push(url.clone()),
                (Some(Deleted::KeptByOthers(n)), _) => left.push(format!(
                    "{url}: this device let go of it; {n} other owner{} keep{} it (your other \
                     devices let go when they sync the removal)",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "s" } else { "" }
                )),
                (None, _) if still_owned.contains(&relay) => left.push(format!(
                    "{url}: could not be deleted now; retried on the next sync"
                )),
                (None, Some(_)) => {
                    // This device never claimed the copy where it went: it
                    // belongs to whoever moved it there (a relay that handed
                    // it on, or another device's repair).
                    left.push(format!(
                        "{url}: moved there from {}; kept until its owners let go of it or its \
                         retention runs out",
                        copy.url
                    ));
                }
                (None, None) => left.push(format!(
                    "{url}: stored by device {}, which deletes it when it next syncs",
                    copy.owner.short()
                )),
            }
        }
        Ok(RemoveReport {
            name: name.to_owned(),
            blob: entry.blob,
            deleted,
            left,
        })
    }

    /// Renames `from` to `to` (replacing what `to` held).
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        check_name(to)?;
        let mut state = self.synced().await?;
        self.require_active()?;
        let entry = Self::table_of(&state)
            .get(from)
            .cloned()
            .ok_or_else(|| Error::NoSuchName(from.to_owned()))?;
        if from == to {
            return Ok(());
        }
        self.append(
            &mut state,
            Change::Rename {
                from: from.to_owned(),
                to: to.to_owned(),
                entry,
            },
        )
        .await?;
        self.finish_change(&mut state).await?;
        Ok(())
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
