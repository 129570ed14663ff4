//! `cairn-relay migrate`: moves a relay's data from one storage backend to
//! another (embedded ↔ scale-out), verified.
//!
//! Every blob is read from the source, hashed against its id on the way,
//! stored in the destination with the index facts it had (owner, sources,
//! creation and last-access times, so retention carries over), then read
//! back from the destination and hashed again. Heads and forwarding records
//! follow. The identity key goes along, so clients see the same relay. The
//! source is only read: if anything fails, it is still whole, and running
//! the migration again skips what already arrived.

use std::path::Path;

use cairn_proto::BlobId;
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::config::{RelayConfig, StorageConfig};
use crate::store::model::BlobRecord;
use crate::store::{InsertOutcome, Limits, Staged, Store, StoreError};

/// Records read from the source at a time.
const PAGE: usize = 256;

/// What a migration did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrationReport {
    /// Blobs copied and verified on both ends.
    pub blobs_copied: u64,
    /// Their bytes.
    pub bytes_copied: u64,
    /// Blobs the destination held already (an earlier, interrupted run).
    pub blobs_present: u64,
    /// Blobs whose source bytes did not match their id: not copied.
    pub corrupt_in_source: Vec<String>,
    /// Heads copied (newer than any the destination held).
    pub heads: u64,
    /// Forwarding records copied.
    pub forwards: u64,
}

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// Both configurations name the same store.
    #[error("the source and the destination are the same store ({0}); name two different ones")]
    SameStore(String),
    /// The source has no identity key.
    #[error("no relay identity key at {0}: is this the source relay's data directory?")]
    NoIdentity(String),
    /// The destination belongs to another relay.
    #[error(
        "the destination's data directory holds another relay's identity key ({0}); \
         migrate into a new data directory or one with the same key"
    )]
    OtherIdentity(String),
    /// A store failed.
    #[error("{side}: {source}")]
    Store {
        /// "source" or "destination".
        side: &'static str,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// A file operation on the identity key or the ledger failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The destination does not hold what it acknowledged.
    #[error("blob {id} does not read back intact from the destination: {what}")]
    NotVerified {
        /// The blob.
        id: BlobId,
        /// What was wrong.
        what: String,
    },
    /// The destination has no room left.
    #[error(
        "the destination is full after {copied} blobs; give it more capacity (--capacity) \
         and run the migration again (what was copied stays)"
    )]
    DestinationFull {
        /// Blobs copied before it filled up.
        copied: u64,
    },
}

fn src(source: StoreError) -> MigrateError {
    MigrateError::Store {
        side: "source",
        source,
    }
}

fn dst(source: StoreError) -> MigrateError {
    MigrateError::Store {
        side: "destination",
        source,
    }
}

/// A description of where a configuration keeps its data, for telling two
/// apart.
fn location(config: &RelayConfig) -> String {
    match &config.storage {
        StorageConfig::Embedded => {
            let dir =
                std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
            format!("embedded store in {}", dir.display())
        }
        StorageConfig::ScaleOut(s) => format!(
            "PostgreSQL {} schema {}, bucket {}/{}",
            crate::config::redact_password(&s.postgres.url),
            s.postgres.schema.as_deref().unwrap_or("public"),
            s.s3.bucket,
            s.s3.prefix
        ),
    }
}

/// Copies the identity key (and the peer ledger) into the destination's
/// data directory, or checks that the one there is the same.
fn carry_identity(from: &Path, to: &Path) -> Result<(), MigrateError> {
    let io = |context: String| move |source| MigrateError::Io { context, source };
    let key = from.join("relay.key");
    let theirs =
        std::fs::read(&key).map_err(|_| MigrateError::NoIdentity(key.display().to_string()))?;
    std::fs::create_dir_all(to).map_err(io(format!("create {}", to.display())))?;
    let dest = to.join("relay.key");
    match std::fs::read(&dest) {
        Ok(ours) if ours == theirs => {}
        Ok(_) => return Err(MigrateError::OtherIdentity(dest.display().to_string())),
        Err(_) => {
            std::fs::copy(&key, &dest).map_err(io(format!("copy {}", key.display())))?;
        }
    }
    let ledger = from.join("ledger.json");
    if ledger.exists() && !to.join("ledger.json").exists() {
        std::fs::copy(&ledger, to.join("ledger.json"))
            .map_err(io(format!("copy {}", ledger.display())))?;
    }
    Ok(())
}

fn limits(config: &RelayConfig) -> Limits {
    Limits {
        capacity: config.capacity_bytes,
        key_quota: config.limits.key_quota_bytes,
        max_heads: config.max_heads,
        cache_bytes: 0,
        index_cache_bytes: config.index_cache_bytes,
        disk_reserve: config.disk_reserve_bytes,
    }
}

/// Moves everything `from` holds into `to`, verified; `progress` hears of
/// each page. Both relays must be stopped (an embedded store refuses a
/// second opener anyway).
///
/// # Errors
///
/// [`MigrateError`]: the source is left as it was, and what reached the
/// destination is complete and verified, so running again resumes.
pub async fn migrate(
    from: &RelayConfig,
    to: &RelayConfig,
    progress: &mut (dyn FnMut(&MigrationReport) + Send),
) -> Result<MigrationReport, MigrateError> {
    let (here, there) = (location(from), location(to));
    if here == there {
        return Err(MigrateError::SameStore(here));
    }
    carry_identity(&from.data_dir, &to.data_dir)?;
    let http = crate::server::backend_http_client().map_err(|e| {
        src(StoreError::Backend {
            backend: "HTTP client",
            detail: e.to_string(),
        })
    })?;
    let (source, source_writer, _) =
        Store::open(&from.data_dir, &from.storage, limits(from), http.clone())
            .await
            .map_err(src)?;
    let (dest, dest_writer, _) = Store::open(&to.data_dir, &to.storage, limits(to), http)
        .await
        .map_err(dst)?;
    let result = copy_all(&source, &dest, progress).await;
    // Closing the stores ends the embedded writers after their last commit.
    drop(source);
    drop(dest);
    for writer in [source_writer, dest_writer].into_iter().flatten() {
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
    result
}

async fn copy_all(
    source: &Store,
    dest: &Store,
    progress: &mut (dyn FnMut(&MigrationReport) + Send),
) -> Result<MigrationReport, MigrateError> {
    let mut report = MigrationReport::default();
    let mut after = None;
    loop {
        let page = source.export_blobs(after, PAGE).await.map_err(src)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for record in page {
            copy_blob(source, dest, record, &mut report).await?;
        }
        progress(&report);
    }
    let mut after = None;
    loop {
        let page = source.export_heads(after, PAGE).await.map_err(src)?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for row in page {
            if dest.import_head(row).await.map_err(dst)? {
                report.heads += 1;
            }
        }
    }
    let mut after = None;
    loop {
        let page = source.export_forwards(after, PAGE).await.map_err(src)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for row in page {
            if dest.import_forward(row).await.map_err(dst)? {
                report.forwards += 1;
            }
        }
    }
    progress(&report);
    Ok(report)
}

/// Copies one blob through a verified temp file, then reads it back.
async fn copy_blob(
    source: &Store,
    dest: &Store,
    record: BlobRecord,
    report: &mut MigrationReport,
) -> Result<(), MigrateError> {
    let id = record.id;
    let Some(body) = source.open_body(&id).await.map_err(src)? else {
        // Deleted since the page was read.
        return Ok(());
    };
    let size = body.size();
    let temp = dest.temp_path().map_err(dst)?;
    let mut pieces = body.into_stream(0, size).await.map_err(src)?;
    let mut hasher = blake3::Hasher::new();
    let written = async {
        let mut file = tokio::fs::File::create(&temp).await?;
        while let Some(piece) = pieces.next().await {
            let piece = piece?;
            hasher.update(&piece);
            file.write_all(&piece).await?;
        }
        file.flush().await?;
        Ok::<_, std::io::Error>(())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(src(StoreError::io("copy blob", e)));
    }
    if BlobId::from(hasher.finalize()) != id || size != record.meta.size {
        let _ = std::fs::remove_file(&temp);
        report.corrupt_in_source.push(id.to_string());
        return Ok(());
    }
    match dest
        .import_blob(Staged::File(temp), record)
        .await
        .map_err(dst)?
    {
        InsertOutcome::Stored => {}
        InsertOutcome::AlreadyHeld => {
            report.blobs_present += 1;
            return Ok(());
        }
        InsertOutcome::RelayFull | InsertOutcome::QuotaExceeded => {
            return Err(MigrateError::DestinationFull {
                copied: report.blobs_copied,
            });
        } // An import carries no token, so nothing can call it a replay.
        InsertOutcome::Replayed => {
            return Err(dst(StoreError::Failed(
                "the destination refused an import as a replayed token".into(),
            )));
        }
    }
    verify(dest, &id, size).await?;
    report.blobs_copied += 1;
    report.bytes_copied += size;
    Ok(())
}

/// Reads blob `id` back from `store` and checks it against its id.
async fn verify(store: &Store, id: &BlobId, size: u64) -> Result<(), MigrateError> {
    let failed = |what: String| MigrateError::NotVerified { id: *id, what };
    let body = store
        .open_body(id)
        .await
        .map_err(dst)?
        .ok_or_else(|| failed("not found after it was stored".into()))?;
    let mut pieces = body.into_stream(0, size).await.map_err(dst)?;
    let mut hasher = blake3::Hasher::new();
    let mut read = 0u64;
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(|e| failed(e.to_string()))?;
        read += piece.len() as u64;
        hasher.update(&piece);
    }
    if read != size || BlobId::from(hasher.finalize()) != *id {
        return Err(failed(format!(
            "{read} bytes read back do not hash to the id"
        )));
    }
    Ok(())
}
