//! Passphrase-sealed key files.
//!
//! A key file is an age file encrypted to an scrypt passphrase recipient, so
//! `age -d` opens it too: nothing about a user's keys is locked into cairn.

use std::io::{Read as _, Write as _};
use std::path::Path;

use age::secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{Error, Result, io_at};

/// A passphrase that unlocks key files.
pub struct Passphrase(SecretString);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(text: impl Into<String>) -> Self {
        Self(SecretString::from(text.into()))
    }

    fn secret(&self) -> SecretString {
        self.0.clone()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

/// How hard scrypt works when sealing a key file: `N = 2^log_n`.
///
/// The default, 18, takes about a second here and 256 MiB of memory, which
/// is what makes a stolen key file expensive to guess at. Lower values exist
/// for tests only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost(u8);

impl KdfCost {
    /// The cost every real key file uses.
    pub const DEFAULT: Self = Self(18);
    /// The most a file may demand when opened: refuses files crafted to make
    /// opening them take minutes.
    const MAX_LOG_N: u8 = 22;

    /// A custom cost; `log_n` must be 1–22.
    pub fn new(log_n: u8) -> Result<Self> {
        if (1..=Self::MAX_LOG_N).contains(&log_n) {
            Ok(Self(log_n))
        } else {
            Err(Error::Invalid(format!(
                "key-file cost must be 1–{}, not {log_n}",
                Self::MAX_LOG_N
            )))
        }
    }
}

impl Default for KdfCost {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Encrypts `plain` under `passphrase`.
pub(crate) fn seal(plain: &[u8], passphrase: &Passphrase, cost: KdfCost) -> Result<Vec<u8>> {
    let mut recipient = age::scrypt::Recipient::new(passphrase.secret());
    recipient.set_work_factor(cost.0);
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
        .map_err(|err| Error::Invalid(format!("cannot seal key file: {err}")))?;
    let mut out = Vec::with_capacity(plain.len() + 256);
    let write = |out: &mut Vec<u8>| -> std::io::Result<()> {
        let mut writer = encryptor.wrap_output(out)?;
        writer.write_all(plain)?;
        writer.finish()?;
        Ok(())
    };
    write(&mut out).map_err(|err| Error::Invalid(format!("cannot seal key file: {err}")))?;
    Ok(out)
}

/// Decrypts the key file at `path`.
pub(crate) fn open(path: &Path, passphrase: &Passphrase) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = std::fs::read(path).map_err(io_at(path))?;
    let damaged = |reason: String| Error::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let decryptor = age::Decryptor::new_buffered(&bytes[..])
        .map_err(|err| damaged(format!("not an age file: {err}")))?;
    if !decryptor.is_scrypt() {
        return Err(damaged("not sealed with a passphrase".into()));
    }
    let mut identity = age::scrypt::Identity::new(passphrase.secret());
    identity.set_max_work_factor(KdfCost::MAX_LOG_N);
    let mut reader =
        decryptor
            .decrypt(std::iter::once(&identity as _))
            .map_err(|err| match err {
                age::DecryptError::DecryptionFailed
                | age::DecryptError::NoMatchingKeys
                | age::DecryptError::KeyDecryptionFailed => Error::WrongPassphrase {
                    path: path.to_path_buf(),
                },
                other => damaged(other.to_string()),
            })?;
    let mut plain = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut plain)
        .map_err(|err| damaged(err.to_string()))?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.age");
        let sealed = seal(
            b"secret",
            &Passphrase::new("right"),
            KdfCost::new(4).unwrap(),
        )
        .unwrap();
        std::fs::write(&path, sealed).unwrap();
        assert_eq!(
            &**open(&path, &Passphrase::new("right")).unwrap(),
            b"secret"
        );
        assert!(matches!(
            open(&path, &Passphrase::new("wrong")),
            Err(Error::WrongPassphrase { .. })
        ));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            open(&path, &Passphrase::new("right")),
            Err(Error::Damaged { .. })
        ));
    }

    #[test]
    fn cost_bounds() {
        assert!(KdfCost::new(0).is_err());
        assert!(KdfCost::new(23).is_err());
        assert!(KdfCost::new(22).is_ok());
    }
}
