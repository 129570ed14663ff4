//! The client's error type: every failure says what went wrong, where, and,
//! when the user can do something about it, what to do next.
//!
//! Each message is whole: a variant that wraps another error says that
//! error's words in its own message and does not also return it from
//! `source()`, so a printer that walks the chain never says a cause twice
//! ("/x: No such file or directory (os error 2): No such file or
//! directory (os error 2)"). A relay that could not be reached is said in
//! plain words ("relay 127.0.0.1:7070 is unreachable (connection
//! refused)"); what the HTTP library said is kept apart, in
//! [`Error::details`], for those who ask for it.

use std::io;
use std::path::PathBuf;

use cairn_proto::{BlobId, LogError, VerifyingKey};

use crate::failures::{Failure, Failures};
use crate::text::count;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The home directory has no cairn identity.
    #[error("no cairn identity in {path}: run `cairn init` first, or pass --home / CAIRN_HOME")]
    NoHome {
        /// The home that was looked at.
        path: PathBuf,
    },
    /// `init` was asked to overwrite an existing identity.
    #[error("{path} already holds a cairn identity; pick another --home to create a new one")]
    HomeExists {
        /// The home that was looked at.
        path: PathBuf,
    },
    /// A key file did not open with the passphrase given.
    #[error("wrong passphrase for {path}")]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// A file in the home is not what cairn wrote there.
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error on a local file.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (said in this one's message, so not its
        /// `source()`).
        error: io::Error,
    },
    /// The recovery phrase does not decode.
    #[error("the recovery phrase is not valid: {0}")]
    BadMnemonic(String),
    /// A command needs the root key, which this device does not hold.
    #[error(
        "this device does not hold the root key; pass the exported root key file with --root-key, \
         or run this on a device that holds it"
    )]
    NoRootKey,
    /// A user-supplied value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A relay failed or misbehaved.
    #[error("{}", Failure::at(url, error))]
    Relay {
        /// The relay's URL.
        url: String,
        /// What happened (said in this one's message, so not its
        /// `source()`).
        error: RelayError,
    },
    /// A relay now presents another key than the one pinned for its URL.
    #[error(
        "relay {url} now presents key {presented}, but {pinned} is pinned for it; this may be an \
         impostor. If its operator really changed keys, run `cairn relay add {url} \
         --accept-new-key`"
    )]
    KeyChanged {
        /// The relay's URL.
        url: String,
        /// The pinned key.
        pinned: VerifyingKey,
        /// The key it presented.
        presented: VerifyingKey,
    },
    /// A relay URL is plain http to a host that is not this machine, and
    /// the user did not accept that (`--insecure`).
    #[error(
        "{url} is plain http to another machine: upload tokens, keys, pairing messages and the \
         identity log would cross the network readable and alterable by anyone on the path, and \
         the relay's key would be pinned over a channel that authenticates nothing. Use an \
         https:// URL, or pass --insecure to accept that (only where the network path itself \
         is trusted)"
    )]
    InsecureRelay {
        /// The URL given.
        url: String,
    },
    /// The URL is not in the relay set.
    #[error("{url} is not in your relay set (see `cairn relay list`)")]
    UnknownRelay {
        /// The URL asked for.
        url: String,
    },
    /// The relay set is empty.
    #[error("no relays are configured: add one with `cairn relay add URL`")]
    NoRelays,
    /// Fewer copies than required were stored.
    #[error(
        "stored {stored} of the {} required, so nothing was recorded: {failures}",
        count(*.wanted as u64, "copy", "copies")
    )]
    NotEnoughCopies {
        /// Copies acknowledged (and removed again).
        stored: usize,
        /// Copies required.
        wanted: usize,
        /// What each failing relay said.
        failures: Failures,
    },
    /// A put of a chunked file stopped part-way. The chunks the relays
    /// acknowledged stay, so the same put run again sends only the rest.
    #[error(
        "stored {} ({}) before stopping; nothing was recorded. Run the same `cairn put` \
         again to send only the rest. Why it stopped: {why}",
        count(*.chunks as u64, "chunk", "chunks"),
        count(*.bytes, "byte", "bytes")
    )]
    Interrupted {
        /// Chunks acknowledged by every relay still taking the file.
        chunks: usize,
        /// Bytes of data they hold.
        bytes: u64,
        /// What stopped it.
        why: Box<Error>,
    },
    /// No relay could deliver a blob with the right bytes.
    #[error("no relay delivered blob {id}: {failures}")]
    Unavailable {
        /// The blob.
        id: BlobId,
        /// What each relay did.
        failures: Failures,
    },
    /// No relay of the set answered (each one's failure).
    #[error(
        "no relay answered: {0}; check this machine's network, then `cairn relay check` \
         to see each relay"
    )]
    Offline(Failures),
    /// Nothing by that name is stored.
    #[error("no such file: {0} (`cairn ls` lists what is stored)")]
    NoSuchName(String),
    /// No synced folder of that name exists in the vault or here.
    #[error("no synced folder named {0:?} (`cairn folder ls` lists them)")]
    NoSuchFolder(String),
    /// A folder's root is not there as it was attached: not synced, so
    /// that an unmounted disk does not read as every file deleted.
    #[error(
        "folder {name:?} is paused: {why}. Nothing was synced. Mount the disk or put the \
         directory back; to sync this directory as the folder anyway, attach it again with \
         `cairn folder add {root:?} --name {name:?}` (that deletes nothing)"
    )]
    FolderPaused {
        /// The folder.
        name: String,
        /// Its root.
        root: PathBuf,
        /// What is wrong with the root.
        why: String,
    },
    /// A blob's content did not decrypt or is not what cairn stores.
    #[error("blob {id} does not open: {reason}")]
    Unsealable {
        /// The blob.
        id: BlobId,
        /// Why.
        reason: String,
    },
    /// The identity log did not verify.
    #[error("the identity log does not verify: {0}")]
    Log(LogError),
    /// The identity could not be found on any relay.
    #[error("{0}")]
    IdentityNotFound(String),
}

impl From<LogError> for Error {
    fn from(err: LogError) -> Self {
        Self::Log(err)
    }
}

impl Error {
    /// The lower-level account behind this error's plain words, one line
    /// per relay and cause: what the HTTP library said of each relay that
    /// could not be reached (`127.0.0.1:7070: error sending request for
    /// url (…): … Connection refused (os error 111)`). Empty when the
    /// message is all there is. `cairn --verbose` prints these.
    pub fn details(&self) -> Vec<String> {
        match self {
            Self::Relay { url, error } => {
                let mut failures = Failures::new();
                failures.at(url, error);
                failures.details()
            }
            Self::NotEnoughCopies { failures, .. }
            | Self::Unavailable { failures, .. }
            | Self::Offline(failures) => failures.details(),
            Self::Interrupted { why, .. } => why.details(),
            _ => Vec::new(),
        }
    }
}

pub use crate::relay_error::{NetFailure, RelayError};

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |error| Error::Io { path, error }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Issue "Messages a person reads": no variant both says its cause and
    /// returns it from `source()` (which printed "(os error 2): … (os
    /// error 2)").
    #[test]
    fn no_cause_is_said_twice() {
        let relay = || RelayError::Unreachable {
            why: NetFailure::ConnectionRefused,
            detail: "tcp connect error".into(),
        };
        let errors = [
            Error::Io {
                path: "/nonexistent".into(),
                error: io::Error::from(io::ErrorKind::NotFound),
            },
            Error::Relay {
                url: "http://127.0.0.1:9".into(),
                error: relay(),
            },
            Error::Relay {
                url: "http://127.0.0.1:9".into(),
                error: RelayError::from(io::Error::from(io::ErrorKind::NotFound)),
            },
            Error::Log(LogError {
                index: 0,
                kind: cairn_proto::LogErrorKind::Empty,
            }),
        ];
        for err in errors {
            let text = err.to_string();
            if let Some(cause) = err.source() {
                assert!(!text.contains(&cause.to_string()), "{text}");
            }
        }
        let local = RelayError::from(io::Error::from(io::ErrorKind::NotFound));
        assert!(local.source().is_none(), "{local}");
    }

    #[test]
    fn an_unreachable_relay_is_said_in_words_with_the_detail_apart() {
        let err = Error::Relay {
            url: "http://127.0.0.1:40325".into(),
            error: RelayError::Unreachable {
                why: NetFailure::ConnectionRefused,
                detail: "error sending request for url (http://127.0.0.1:40325/v1/blobs/x)".into(),
            },
        };
        assert_eq!(
            err.to_string(),
            "relay 127.0.0.1:40325 is unreachable (connection refused)"
        );
        assert_eq!(
            err.details(),
            ["127.0.0.1:40325: error sending request for url (http://127.0.0.1:40325/v1/blobs/x)"]
        );
    }

    #[test]
    fn counts_in_errors_agree() {
        let short = |wanted| Error::NotEnoughCopies {
            stored: 0,
            wanted,
            failures: Failures::new().or_else("not enough relays have room for it"),
        };
        assert!(short(1).to_string().contains("of the 1 copy required"));
        assert!(short(3).to_string().contains("of the 3 copies required"));
        let cut = Error::Interrupted {
            chunks: 1,
            bytes: 1,
            why: Box::new(Error::NoRelays),
        };
        assert!(
            cut.to_string()
                .starts_with("stored 1 chunk (1 byte) before")
        );
    }
}
