//! The relay's identity key, kept in `DATA/relay.key`.

use std::io::Write as _;
use std::path::Path;

use cairn_proto::SigningKey;

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("relay key file {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exists but does not hold a key.
    #[error("relay key file {path} does not hold an `ed25519-secret:` key: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Others than the relay's user may read the file, so the key must be
    /// taken as exposed (like ssh, the relay will not use it).
    #[error(
        "relay key file {path} is readable by other users (mode {mode:o}); if nobody else could \
         have read it, run `chmod 600 {path}`, otherwise move it away to make a new identity"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The system random source failed.
    #[error("generating a relay key: {0}")]
    Random(String),
}

/// Loads the key from `path`, or creates it (mode 0600, written durably)
/// if the file does not exist. Returns the key and whether it was created.
///
/// The key is kept in the clear: a relay restarts unattended, so a
/// passphrase would have to sit on the same machine. What protects it is
/// the file's mode, which is checked on every load.
pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            refuse_if_exposed(path)?;
            let key = SigningKey::from_secret_text(&text).map_err(|e| KeyFileError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| KeyFileError::Random(e.to_string()))?;
            let key = SigningKey::from_seed(&seed);
            let temp = path.with_extension("key.tmp");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut file = options.open(&temp).map_err(io)?;
            file.write_all(format!("{}\n", key.to_secret_text()).as_bytes())
                .map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&temp, path).map_err(io)?;
            if let Some(dir) = path.parent() {
                crate::store::files::fsync_dir(dir).map_err(io)?;
            }
            Ok((key, true))
        }
        Err(e) => Err(io(e)),
    }
}

/// Fails with [`KeyFileError::Exposed`] when group or others have any
/// access to the key file.
#[cfg(unix)]
fn refuse_if_exposed(path: &Path) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 == 0 {
        Ok(())
    } else {
        Err(KeyFileError::Exposed {
            path: path.display().to_string(),
            mode,
        })
    }
}

#[cfg(not(unix))]
fn refuse_if_exposed(_path: &Path) -> Result<(), KeyFileError> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_key_is_private_durable_and_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        let (key, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(mode(&path), 0o600);
        assert!(!path.with_extension("key.tmp").exists());
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.verifying_key(), key.verifying_key());
    }

    #[test]
    fn a_key_others_can_read_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        load_or_create(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        for loose in [0o640, 0o604, 0o644, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            let err = load_or_create(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Exposed { mode, .. } if mode == loose),
                "{loose:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), before);
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(
            load_or_create(&path).is_ok(),
            "read-only to its owner is fine"
        );
    }

    #[test]
    fn a_file_without_a_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key\n");
    }
}
