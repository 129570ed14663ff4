//! The client's error type: every failure says what went wrong, where, and,
//! when the user can do something about it, what to do next.

use std::io;
use std::path::PathBuf;

use cairn_proto::{BlobId, LogError, VerifyingKey};

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
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
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
    #[error("relay {url}: {source}")]
    Relay {
        /// The relay's URL.
        url: String,
        /// What happened.
        #[source]
        source: RelayError,
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
        "stored {stored} of the {wanted} copies required; nothing was recorded. Failures: {failures}"
    )]
    NotEnoughCopies {
        /// Copies acknowledged (and removed again).
        stored: usize,
        /// Copies required.
        wanted: usize,
        /// What each failing relay said.
        failures: String,
    },
    /// A put of a chunked file stopped part-way. The chunks the relays
    /// acknowledged stay, so the same put run again sends only the rest.
    #[error(
        "stored {chunks} chunk{} ({bytes} bytes) before stopping; nothing was recorded. Run \
         the same `cairn put` again to send only the rest. Why it stopped: {why}",
        if *.chunks == 1 { "" } else { "s" }
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
        failures: String,
    },
    /// No relay of the set answered (each one's failure, joined).
    #[error(
        "no relay answered: {0}; check this machine's network, then `cairn relay check` \
         to see each relay"
    )]
    Offline(String),
    /// Nothing by that name is stored.
    #[error("nothing named {0:?} is stored (`cairn ls` lists what is)")]
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
    Log(#[from] LogError),
    /// The identity could not be found on any relay.
    #[error("{0}")]
    IdentityNotFound(String),
}

/// How one relay failed a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The request did not complete (connection refused, reset, timeout…).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The relay refused the request.
    #[error("{status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The machine-readable reason (PROTOCOL.md §7.1).
        code: String,
        /// The relay's explanation.
        message: String,
        /// Seconds the relay asked to wait before trying again.
        retry_after: Option<u64>,
    },
    /// The relay answered with something that breaks the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The relay signed with another key than the one pinned for it.
    #[error("presents key {presented}, but {pinned} is pinned for it")]
    KeyMismatch {
        /// The pinned key.
        pinned: VerifyingKey,
        /// The key it presented.
        presented: VerifyingKey,
    },
    /// The relay answered that it transferred the blob to a peer (PROTOCOL.md
    /// §7.3), and the redirect could not be followed: malformed, pointing
    /// at a relay that does not hold the key it names, too long a chain, or
    /// the peer failed.
    #[error("{0}")]
    Redirect(String),
    /// The relay holds a newer head in this device's own slot than the one
    /// sent. Only this device's key can write there (PROTOCOL.md §4.9), so
    /// the key signed elsewhere: a restored backup, or a stolen key.
    #[error(
        "holds a head at position {stored} in this device's own `{role}` slot, above the \
         {sent} it was sent: only this device's key can write there, so it is in use \
         elsewhere (a restored backup or a stolen key); if this device was not restored, \
         revoke it from another device"
    )]
    OwnSlotAhead {
        /// What the slot is for.
        role: &'static str,
        /// The position stored.
        stored: u64,
        /// The position sent.
        sent: u64,
    },
    /// The relay redirected a blob request to a relay the client may not be
    /// sent to (PROTOCOL.md §7.3): one neither in the user's relay set nor
    /// in the redirecting relay's signed peer list, or one reached by plain
    /// http off this machine without `--insecure`. Misbehaviour of the
    /// relay that redirected; the target is not contacted, and the message
    /// does not name it, so that nothing about it is kept.
    #[error("{0}")]
    RedirectRefused(String),
    /// The relay served bytes that do not hash to the blob id asked for.
    #[error("served bytes that do not match blob {0} (corrupt or lying relay)")]
    WrongBytes(BlobId),
    /// A local file error while sending or receiving.
    #[error("local I/O: {0}")]
    Local(#[from] io::Error),
}

impl RelayError {
    /// The relay's machine-readable refusal code, if it refused with one
    /// this version knows.
    pub fn code(&self) -> Option<cairn_proto::ErrorCode> {
        match self {
            Self::Refused { code, .. } => code.parse().ok(),
            _ => None,
        }
    }

    /// Whether the relay answered that it does not hold what was asked (a
    /// HEAD answer has no body to carry the `not_found` code).
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Refused { status: 404, .. })
            || self.code() == Some(cairn_proto::ErrorCode::NotFound)
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
