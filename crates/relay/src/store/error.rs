//! What can go wrong in a store: always a local fault, never the client's.

use std::io;

/// A store failure. Every variant is a local fault, never the client's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{context}: {cause}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The OS error.
        cause: io::Error,
    },
    /// The index database failed.
    #[error("index database: {0}")]
    Db(redb::Error),
    /// An earlier write failed; the store refuses work until restarted.
    #[error("store stopped after an earlier failure ({0}); restart the relay")]
    Failed(String),
    /// The store is shutting down.
    #[error("store is shut down")]
    Closed,
    /// A shared backend (PostgreSQL, the object store) cannot be reached
    /// right now; the request may be retried.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        detail: String,
    },
    /// A shared backend refused an operation.
    #[error("{backend}: {detail}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn io(context: &'static str, cause: io::Error) -> Self {
        Self::Io { context, cause }
    }

    /// True when the disk is full (so the request can be refused with 507
    /// rather than treated as a fault).
    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { cause, .. } if cause.kind() == io::ErrorKind::StorageFull)
    }
}

impl From<redb::Error> for StoreError {
    fn from(err: redb::Error) -> Self {
        Self::Db(err)
    }
}
