//! Sealing: padding plus age encryption (in memory, a chunk at most), and opening (streamed).
//!
//! A sealed blob is an ordinary age file (X25519 recipient: the vault key)
//! whose plaintext is
//!
//! ```text
//! data || zero bytes || u64 big-endian length of data
//! ```
//!
//! padded so the whole plaintext is `padme(len(data) + 8)` bytes. Padmé
//! rounds a length up to a value whose low bits are zero, leaking only
//! O(log log n) bits of the size, at most 12% overhead and much less for
//! large files. The length goes last so sealing can stream input of unknown
//! length; anyone holding the vault key can still recover a file with the
//! standard tool: `age -d -i vault.key BLOB | head -c SIZE`.

use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use cairn_proto::{BlobId, X25519PublicKey};

use crate::keys::{X25519Secret, age_recipient};

/// Bytes of the length trailer.
const TRAILER_LEN: u64 = 8;
/// Buffer between age and the file: large writes keep hashing and syscalls
/// efficient.
const IO_BUFFER: usize = 1 << 20;

/// Padmé: the smallest length ≥ `len` whose binary form keeps only the top
/// `floor(log2(floor(log2 len))) + 1` bits.
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let exponent = 63 - u64::from(len.leading_zeros()); // floor(log2 len)
    let significant = 64 - u64::from(exponent.leading_zeros()); // floor(log2 E) + 1
    let low_bits = exponent - significant;
    let mask = (1u64 << low_bits) - 1;
    len.saturating_add(mask) & !mask
}

/// The plaintext length a sealed blob of `data_len` bytes of data carries.
pub fn padded_len(data_len: u64) -> u64 {
    padme(data_len.saturating_add(TRAILER_LEN))
}

/// Why a blob did not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// None of the keys given can open it.
    #[error("none of this identity's vault keys opens it")]
    NoKey,
    /// It is not a sealed cairn blob, or it was tampered with.
    #[error("not a sealed cairn blob: {0}")]
    Malformed(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The caller refused the data's length (a range outside it).
    #[error("{0}")]
    Refused(String),
}

/// An age writer to `recipient` over `out`.
fn encrypting<W: Write>(
    recipient: &X25519PublicKey,
    out: W,
) -> io::Result<age::stream::StreamWriter<W>> {
    let recipient = age_recipient(recipient);
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
        .map_err(io::Error::other)?;
    encryptor.wrap_output(out)
}

/// Writes the padding and the length trailer after `data_len` bytes of
/// data, and ends the age stream: the data length and `out` back.
fn finish<W: Write>(
    mut writer: age::stream::StreamWriter<W>,
    data_len: u64,
) -> io::Result<(u64, W)> {
    let zeros = [0u8; 64 * 1024];
    let mut padding = padded_len(data_len) - data_len - TRAILER_LEN;
    while padding > 0 {
        let n = usize::try_from(padding.min(zeros.len() as u64)).unwrap_or(zeros.len());
        writer.write_all(&zeros[..n])?;
        padding -= n as u64;
    }
    writer.write_all(&data_len.to_be_bytes())?;
    let mut out = writer.finish()?;
    out.flush()?;
    Ok((data_len, out))
}

/// Starts decrypting `input` with whichever of `keys` opens it.
fn decrypting<R: Read>(
    input: R,
    keys: &[X25519Secret],
) -> Result<age::stream::StreamReader<BufReader<R>>, OpenError> {
    let identities: Vec<_> = keys.iter().map(X25519Secret::identity).collect();
    let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(IO_BUFFER, input))
        .map_err(|err| OpenError::Malformed(err.to_string()))?;
    decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|err| match err {
            age::DecryptError::NoMatchingKeys => OpenError::NoKey,
            other => OpenError::Malformed(other.to_string()),
        })
}

/// Reads the length trailer of a `total`-byte plaintext with `read_at`
/// (which reads 8 bytes at an offset) and checks it against the padding.
fn data_len(
    total: u64,
    read_at: impl FnOnce(u64, &mut [u8; 8]) -> io::Result<()>,
) -> Result<u64, OpenError> {
    if total < TRAILER_LEN {
        return Err(OpenError::Malformed(
            "shorter than its length trailer".into(),
        ));
    }
    let mut trailer = [0u8; 8];
    read_at(total - TRAILER_LEN, &mut trailer)
        .map_err(|err| OpenError::Malformed(err.to_string()))?;
    let data_len = u64::from_be_bytes(trailer);
    if data_len > total - TRAILER_LEN || padded_len(data_len) != total {
        return Err(OpenError::Malformed(format!(
            "length trailer says {} in a {total}-byte plaintext",
            crate::text::count(data_len, "byte", "bytes")
        )));
    }
    Ok(data_len)
}

/// Opens a sealed blob read from `input`, writing the data to `out`.
/// Returns the number of data bytes.
pub fn open_stream(
    input: impl Read + Seek,
    keys: &[X25519Secret],
    out: impl Write,
) -> Result<u64, OpenError> {
    open_part(input, keys, |len| Ok((0, len)), out)
}

/// Opens part of a sealed blob read from `input`: `pick`, given the data's
/// length, names bytes `start..end` of it (or refuses, with why), and only
/// those are decrypted (age's chunks before `start` are skipped, not read)
/// and written to `out`. Returns the data's length.
pub fn open_part(
    input: impl Read + Seek,
    keys: &[X25519Secret],
    pick: impl FnOnce(u64) -> Result<(u64, u64), String>,
    mut out: impl Write,
) -> Result<u64, OpenError> {
    let mut reader = decrypting(input, keys)?;
    let malformed = |err: io::Error| OpenError::Malformed(err.to_string());
    // Seeking to the end authenticates the last chunk, so the trailer read
    // next is the writer's, not an attacker's.
    let total = reader.seek(SeekFrom::End(0)).map_err(malformed)?;
    let data_len = data_len(total, |at, trailer| {
        reader.seek(SeekFrom::Start(at))?;
        reader.read_exact(trailer)
    })?;
    let (start, end) = pick(data_len).map_err(OpenError::Refused)?;
    let end = end.min(data_len);
    let start = start.min(end);
    reader.seek(SeekFrom::Start(start)).map_err(malformed)?;
    let copied = io::copy(&mut reader.take(end - start), &mut out)?;
    if copied != end - start {
        return Err(OpenError::Malformed("ended early".into()));
    }
    out.flush()?;
    Ok(data_len)
}

/// Opens a sealed blob streamed from `input` (which need not seek) into the
/// file `out`, in one pass: writes the whole plaintext, then reads the
/// length trailer back from the file and truncates it to the data. Returns
/// the number of data bytes.
pub fn open_to_file(
    input: impl Read,
    keys: &[X25519Secret],
    out: &std::fs::File,
) -> Result<u64, OpenError> {
    use std::os::unix::fs::FileExt as _;
    let mut reader = decrypting(input, keys)?;
    let mut writer = BufWriter::with_capacity(IO_BUFFER, out);
    let total = io::copy(&mut reader, &mut writer).map_err(|err| {
        // age reports a chunk that fails authentication as invalid data.
        if err.kind() == io::ErrorKind::InvalidData || err.kind() == io::ErrorKind::UnexpectedEof {
            OpenError::Malformed(err.to_string())
        } else {
            OpenError::Io(err)
        }
    })?;
    writer.flush()?;
    drop(writer);
    let data_len = data_len(total, |at, trailer| out.read_exact_at(trailer, at))?;
    out.set_len(data_len)?;
    Ok(data_len)
}

/// Seals `data` in memory (chunks, operations, snapshots), on
/// the calling thread.
pub fn seal_bytes(data: &[u8], recipient: &X25519PublicKey) -> io::Result<(BlobId, Vec<u8>)> {
    seal_bytes_into(
        data,
        recipient,
        Vec::with_capacity(sealed_capacity(data.len())),
    )
}

/// Room for the sealed form of `len` bytes of data: the padded plaintext,
/// age's 16-byte tag per 64 KiB and its header, so that sealing never
/// copies into a doubled buffer.
pub fn sealed_capacity(len: usize) -> usize {
    let padded = usize::try_from(padded_len(len as u64)).unwrap_or(usize::MAX);
    padded.saturating_add(padded / 4096 + 1024)
}

/// [`seal_bytes`] into `out` (cleared first), for a caller that chooses
/// where the buffer is allocated.
pub fn seal_bytes_into(
    data: &[u8],
    recipient: &X25519PublicKey,
    mut out: Vec<u8>,
) -> io::Result<(BlobId, Vec<u8>)> {
    out.clear();
    // Written straight from the slice: no copy through a read buffer.
    let mut writer = encrypting(recipient, out)?;
    writer.write_all(data)?;
    let (_, out) = finish(writer, data.len() as u64)?;
    Ok((BlobId::of(&out), out))
}

/// [`open_stream`] for small in-memory values.
pub fn open_bytes(sealed: &[u8], keys: &[X25519Secret]) -> Result<Vec<u8>, OpenError> {
    // The data is shorter than what seals it: one allocation holds it.
    open_bytes_into(sealed, keys, Vec::with_capacity(sealed.len()))
}

/// [`open_bytes`] into `out` (cleared first), for a caller that chooses
/// where the buffer is allocated.
pub fn open_bytes_into(
    sealed: &[u8],
    keys: &[X25519Secret],
    mut out: Vec<u8>,
) -> Result<Vec<u8>, OpenError> {
    out.clear();
    open_stream(io::Cursor::new(sealed), keys, &mut out)?;
    Ok(out)
}

/// Why a small sealed value did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenSmallError {
    /// The key does not open it, or it was altered.
    #[error("does not authenticate")]
    Unauthentic,
    /// It opens, and its padding is not what sealing writes.
    #[error("is badly padded")]
    BadPadding,
}

/// Pads `data` like a sealed blob (Padmé, length last) and encrypts it with
/// ChaCha20-Poly1305 under `key` and `nonce`: for small values sealed to a
/// symmetric key (pairing messages, per-relay identity-log copies). A
/// `(key, nonce)` pair must never seal two different values.
pub(crate) fn seal_small(key: &[u8; 32], nonce: &[u8; 12], data: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead as _, KeyInit as _};
    let len = data.len() as u64;
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(
        usize::try_from(padded_len(len)).unwrap_or(data.len()),
    ));
    plain.extend_from_slice(data);
    plain.resize(
        usize::try_from(padded_len(len) - TRAILER_LEN).unwrap_or(data.len()),
        0,
    );
    plain.extend_from_slice(&len.to_be_bytes());
    chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key))
        .encrypt(chacha20poly1305::Nonce::from_slice(nonce), plain.as_slice())
        // Encryption fails only beyond 2^38 bytes.
        .unwrap_or_default()
}

/// A value sealed with [`seal_small`] under a nonce of its own:
/// `nonce[12] ‖ sealed`, the nonce being the first 12 bytes of
/// `keyed_blake3(key, "nonce" ‖ names)`. `names` must name the value (a
/// hash of it, or of what it is made of), so that one key never seals two
/// values under one nonce and the same value seals to the same bytes: the
/// per-relay copies of PROTOCOL.md §10.7.
pub(crate) fn seal_named(key: &[u8; 32], names: &[u8; 32], data: &[u8]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(b"nonce");
    hasher.update(names);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&hasher.finalize().as_bytes()[..12]);
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&seal_small(key, &nonce, data));
    sealed
}

/// Opens what [`seal_named`] sealed with whichever of `keys` it was
/// sealed with; `None` when none opens it.
pub(crate) fn open_named(
    keys: &[zeroize::Zeroizing<[u8; 32]>],
    sealed: &[u8],
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let (nonce, sealed) = sealed.split_first_chunk::<12>()?;
    keys.iter()
        .find_map(|key| open_small(key, nonce, sealed).ok())
}

/// Opens what [`seal_small`] sealed.
pub(crate) fn open_small(
    key: &[u8; 32],
    nonce: &[u8; 12],
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, OpenSmallError> {
    use chacha20poly1305::aead::{Aead as _, KeyInit as _};
    let mut plain = zeroize::Zeroizing::new(
        chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key))
            .decrypt(chacha20poly1305::Nonce::from_slice(nonce), sealed)
            .map_err(|_| OpenSmallError::Unauthentic)?,
    );
    let (body, trailer) = plain
        .split_last_chunk::<8>()
        .ok_or(OpenSmallError::BadPadding)?;
    let len = u64::from_be_bytes(*trailer);
    let data_len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= body.len() && padded_len(len) == plain.len() as u64)
        .ok_or(OpenSmallError::BadPadding)?;
    plain.truncate(data_len);
    Ok(plain)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn padme_examples() {
        assert_eq!(padme(0), 0);
        assert_eq!(padme(1), 1);
        assert_eq!(padme(8), 8);
        assert_eq!(padme(9), 10);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(1 << 30), 1 << 30);
        assert_eq!(padme((1 << 30) + 1), (1 << 30) + (1 << 25));
    }

    proptest! {
        #[test]
        fn padme_bounds(len in 2u64..u64::MAX / 2) {
            let padded = padme(len);
            prop_assert!(padded >= len);
            // At most 12% overhead (Padmé's bound), and idempotent.
            prop_assert!((padded - len) as f64 <= len as f64 * 0.12 + 1.0);
            prop_assert_eq!(padme(padded), padded);
        }

        #[test]
        fn mutated_blobs_are_refused_not_panicked_on(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
            cut in any::<Option<usize>>(),
        ) {
            let key = X25519Secret::from_bytes([5; 32]);
            let (_, mut sealed) = seal_bytes(&data, &key.public()).unwrap();
            for (at, bits) in flips {
                let i = at % sealed.len();
                sealed[i] ^= bits;
            }
            if let Some(cut) = cut {
                sealed.truncate(cut % (sealed.len() + 1));
            }
            // Authenticated encryption: any change is an error, never wrong data.
            prop_assert!(open_bytes(&sealed, &[key]).is_err());
        }

        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let key = X25519Secret::from_bytes([9; 32]);
            let (id, sealed) = seal_bytes(&data, &key.public()).unwrap();
            prop_assert_eq!(id, BlobId::of(&sealed));
            prop_assert_eq!(open_bytes(&sealed, &[key]).unwrap(), data);
        }
    }

    #[test]
    fn wrong_key_and_tampering_are_refused() {
        let key = X25519Secret::from_bytes([1; 32]);
        let other = X25519Secret::from_bytes([2; 32]);
        let (_, mut sealed) = seal_bytes(b"hello", &key.public()).unwrap();
        assert!(matches!(
            open_bytes(&sealed, &[other]),
            Err(OpenError::NoKey)
        ));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(
            open_bytes(&sealed, std::slice::from_ref(&key)),
            Err(OpenError::Malformed(_))
        ));
        assert!(matches!(
            open_bytes(b"not age", &[key]),
            Err(OpenError::Malformed(_))
        ));
    }

    #[test]
    fn opening_to_a_file_streams_and_truncates() {
        let key = X25519Secret::from_bytes([4; 32]);
        for len in [0usize, 1, 70_000, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
            let (_, sealed) = seal_bytes(&data, &key.public()).unwrap();
            let out = tempfile::tempfile().unwrap();
            let n = open_to_file(&sealed[..], std::slice::from_ref(&key), &out).unwrap();
            assert_eq!(n, len as u64);
            let mut back = Vec::new();
            use std::io::{Read as _, Seek as _};
            let mut out = out;
            out.rewind().unwrap();
            out.read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
            // A truncated stream is an error, never a short file passed off
            // as whole.
            let cut = tempfile::tempfile().unwrap();
            let key = std::slice::from_ref(&key);
            assert!(open_to_file(&sealed[..sealed.len() - 1], key, &cut).is_err());
        }
    }

    #[test]
    fn sizes_are_padded() {
        // Both fill the same 1024-byte plaintext. (The sealed files still
        // differ in length: age adds a random-length "grease" stanza to
        // every header, which says nothing about the data.)
        assert_eq!(padded_len(1000), 1024);
        assert_eq!(padded_len(1010), 1024);
        let key = X25519Secret::from_bytes([1; 32]);
        let (_, sealed) = seal_bytes(&[0; 1010], &key.public()).unwrap();
        // 1024 bytes of plaintext in one chunk: nonce, chunk, tag, header.
        assert!(sealed.len() > 16 + 1024 + 16);
    }
}
