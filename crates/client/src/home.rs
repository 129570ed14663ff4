//! The cairn home: the directory holding one device's keys, identity log,
//! relay set and settings.
//!
//! ```text
//! HOME/config.json        settings and the identity's root public key
//! HOME/relays.json        the relay set, with each relay's pinned key
//! HOME/identity.log       the identity log, as length-prefixed envelopes
//! HOME/keys/device.age    this device's secret keys (passphrase-sealed)
//! HOME/keys/root.age      the root key, when this device holds it
//! HOME/sync.json          what this device knows of every device's log, and
//!                         the merged file table
//! HOME/ops/               sealed operations seen (to re-publish to relays
//!                         that lost them)
//! HOME/tmp/               sealed files on their way to relays
//! ```
//!
//! Every file is written whole to a temporary name, synced and renamed, so a
//! crash leaves either the old or the new version, never a mix. Files are
//! created with mode 0600 and directories with 0700: the home holds secrets
//! (encrypted, but still nobody else's business).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, io_at};

/// Paths inside one cairn home.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root` (nothing is read or created yet).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The home directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    pub(crate) fn relays(&self) -> PathBuf {
        self.root.join("relays.json")
    }

    pub(crate) fn identity_log(&self) -> PathBuf {
        self.root.join("identity.log")
    }

    pub(crate) fn device_key(&self) -> PathBuf {
        self.root.join("keys").join("device.age")
    }

    pub(crate) fn root_key(&self) -> PathBuf {
        self.root.join("keys").join("root.age")
    }

    pub(crate) fn sync_state(&self) -> PathBuf {
        self.root.join("sync.json")
    }

    pub(crate) fn scores(&self) -> PathBuf {
        self.root.join("scores.json")
    }

    pub(crate) fn op_cache(&self) -> PathBuf {
        self.root.join("ops")
    }

    /// Where the chunk index (`crate::chunk_index`) lives.
    pub(crate) fn chunk_index(&self) -> PathBuf {
        self.root.join("chunks")
    }

    /// Where each attached folder's index lives (`crate::folder::index`).
    pub(crate) fn folders(&self) -> PathBuf {
        self.root.join("folders")
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Takes this home for one command, waiting while another process
    /// holds it. cairn processes on one home take turns: two that wrote
    /// the file table at once would each append their own operation at the
    /// same position of this device's log, which every other device reads
    /// as the device's key signing two histories (equivocation).
    pub fn lock(&self) -> Result<HomeLock> {
        let file = self.lock_file()?;
        file.lock().map_err(io_at(self.root.join("lock")))?;
        Ok(HomeLock { _file: file })
    }

    /// [`Home::lock`] without waiting: `None` while another process holds
    /// the home.
    pub fn try_lock(&self) -> Result<Option<HomeLock>> {
        let file = self.lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(HomeLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(err)) => Err(io_at(self.root.join("lock"))(err)),
        }
    }

    fn lock_file(&self) -> Result<File> {
        let path = self.root.join("lock");
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))
    }

    /// Whether an identity lives here.
    pub fn exists(&self) -> bool {
        self.config().is_file()
    }

    /// Fails with [`Error::NoHome`] unless an identity lives here.
    pub(crate) fn require(&self) -> Result<()> {
        if self.exists() {
            Ok(())
        } else {
            Err(Error::NoHome {
                path: self.root.clone(),
            })
        }
    }

    /// Creates the directory tree with private permissions.
    pub(crate) fn create_dirs(&self) -> Result<()> {
        for dir in [
            self.root.clone(),
            self.root.join("keys"),
            self.tmp(),
            self.op_cache(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_at(&dir))?;
            // An existing directory keeps its mode; tighten it.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_at(&dir))?;
        }
        // Made with the home, so that a command that fails leaves the home
        // as it found it (a home of an earlier release gets it from its
        // first command).
        self.lock_file().map(drop)
    }

    /// A new private temporary file for sealing, removed when dropped.
    pub(crate) fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let dir = self.tmp();
        tempfile::Builder::new()
            .prefix("sealing-")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&dir)
            .map_err(io_at(&dir))
    }
}

/// A home taken by this process ([`Home::lock`]); let go when dropped.
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

/// Writes `bytes` to `path` atomically and durably, readable only by the
/// owner.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp"));
    let result = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(io_at(path))
}

/// Writes `bytes` to `path` (mode 0600) without waiting for the disk: for
/// caches, whose readers check what they read (by hash) and can do without
/// it after a crash.
pub(crate) fn write_cache(path: &Path, bytes: &[u8]) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(io_at(path))
}

/// Reads a whole file, mapping "not found" to [`Error::NoHome`] for files
/// every home must have.
pub(crate) fn read_required(home: &Home, path: &Path) -> Result<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(Error::NoHome {
            path: home.path().to_path_buf(),
        }),
        Err(err) => Err(io_at(path)(err)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn private_files_are_0600_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        home.create_dirs().unwrap();
        let path = home.config();
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(home.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(!path.with_file_name(".config.json.tmp").exists());
    }
}
