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
    /// The system random source failed.
    #[error("generating a relay key: {0}")]
    Random(String),
}

/// Loads the key from `path`, or creates it (mode 0600, written durably)
/// if the file does not exist. Returns the key and whether it was created.
pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
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
