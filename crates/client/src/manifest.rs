//! A chunked file's manifest (PROTOCOL.md §10.8): which blobs hold its
//! chunks, in order, how long each chunk's plaintext is, and each chunk's
//! keyed plaintext hash (what deduplication compares; a plain hash would
//! let anyone who can read the manifest confirm a guessed file). A
//! manifest is sealed like any blob (§10.3); this module is its plaintext.

use cairn_proto::BlobId;

use crate::chunking::MAX_CHUNK;
use crate::text;

/// The first bytes of every manifest.
pub const MAGIC: &[u8; 18] = b"cairn/v1 manifest\0";
/// Most chunks one manifest lists: 8 TiB of 8 MiB chunks.
pub const MAX_CHUNKS: usize = 1 << 20;
/// Bytes of the header: magic, file size (u64), chunk count (u32).
const HEADER_LEN: usize = MAGIC.len() + 8 + 4;
/// Bytes of one entry: blob id, plaintext length (u32), keyed hash.
const ENTRY_LEN: usize = 32 + 4 + 32;

/// One chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// The sealed blob that holds it.
    pub blob: BlobId,
    /// Bytes of its plaintext.
    pub len: u32,
    /// Its plaintext's keyed hash (§10.8): equal for equal chunks of one
    /// vault generation, unrelated to anything outside it.
    pub key_hash: [u8; 32],
}

/// A file as its chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    chunks: Vec<ChunkRef>,
    size: u64,
}

/// Why bytes are not a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// It does not start with [`MAGIC`].
    #[error("not a manifest (wrong magic)")]
    Magic,
    /// Bytes are missing or left over.
    #[error(
        "a manifest of {} for {} is truncated or has trailing bytes",
        text::count(*.len as u64, "byte", "bytes"),
        text::count(*.count, "chunk", "chunks")
    )]
    Length {
        /// Bytes given.
        len: usize,
        /// Chunks the header announces (0 if the header is cut short).
        count: u64,
    },
    /// No chunks, or more than [`MAX_CHUNKS`].
    #[error("a manifest lists {0} chunks; at least 1 and at most {MAX_CHUNKS}")]
    Count(u64),
    /// A chunk of length 0, or over [`MAX_CHUNK`].
    #[error("chunk {index} is {len} bytes; a chunk is 1 to {MAX_CHUNK} bytes")]
    ChunkLength {
        /// Its place in the list.
        index: usize,
        /// Its length.
        len: u32,
    },
    /// The lengths do not add up to the file's size.
    #[error(
        "the chunks add up to {}, but the manifest says the file has {size}",
        text::count(*.sum, "byte", "bytes")
    )]
    Size {
        /// What the lengths add up to.
        sum: u64,
        /// What the header says.
        size: u64,
    },
}

impl Manifest {
    /// A manifest of `chunks`, in file order.
    ///
    /// # Errors
    ///
    /// [`ManifestError::Count`] or [`ManifestError::ChunkLength`] if the
    /// chunks could not be read back.
    pub fn new(chunks: Vec<ChunkRef>) -> Result<Self, ManifestError> {
        let size = check_chunks(&chunks)?;
        Ok(Self { chunks, size })
    }

    /// The chunks, in file order.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// Bytes of the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunks holding bytes `start..end` of the file, each with the
    /// offset in the file where it begins (none for an empty range).
    pub fn covering(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, &ChunkRef)> {
        self.chunks
            .iter()
            .scan(0u64, |at, chunk| {
                let begins = *at;
                *at += u64::from(chunk.len);
                Some((begins, chunk))
            })
            .skip_while(move |(begins, chunk)| begins + u64::from(chunk.len) <= start)
            .take_while(move |(begins, _)| *begins < end && start < end)
    }

    /// The plaintext to seal.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.chunks.len() * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.size.to_be_bytes());
        // `new` and `decode` hold the count to MAX_CHUNKS, well within u32.
        let count = u32::try_from(self.chunks.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for chunk in &self.chunks {
            out.extend_from_slice(chunk.blob.as_bytes());
            out.extend_from_slice(&chunk.len.to_be_bytes());
            out.extend_from_slice(&chunk.key_hash);
        }
        out
    }

    /// Reads a manifest's plaintext, refusing anything but the one
    /// encoding of a valid manifest.
    ///
    /// # Errors
    ///
    /// A [`ManifestError`] saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(ManifestError::Magic)?;
        let (size, rest) = split::<8>(rest).ok_or(ManifestError::Length {
            len: bytes.len(),
            count: 0,
        })?;
        let (count, rest) = split::<4>(rest).ok_or(ManifestError::Length {
            len: bytes.len(),
            count: 0,
        })?;
        let size = u64::from_be_bytes(size);
        let count = u32::from_be_bytes(count);
        let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
        if count == 0 || count_usize > MAX_CHUNKS {
            return Err(ManifestError::Count(u64::from(count)));
        }
        if rest.len() != count_usize * ENTRY_LEN {
            return Err(ManifestError::Length {
                len: bytes.len(),
                count: u64::from(count),
            });
        }
        let chunks: Vec<ChunkRef> = rest
            .chunks_exact(ENTRY_LEN)
            .map(|entry| {
                let mut blob = [0u8; 32];
                blob.copy_from_slice(&entry[..32]);
                let mut len = [0u8; 4];
                len.copy_from_slice(&entry[32..36]);
                let mut key_hash = [0u8; 32];
                key_hash.copy_from_slice(&entry[36..]);
                ChunkRef {
                    blob: BlobId::from_bytes(blob),
                    len: u32::from_be_bytes(len),
                    key_hash,
                }
            })
            .collect();
        let sum = check_chunks(&chunks)?;
        if sum != size {
            return Err(ManifestError::Size { sum, size });
        }
        Ok(Self { chunks, size })
    }
}

/// Checks the count and every chunk's length; returns the file's size.
fn check_chunks(chunks: &[ChunkRef]) -> Result<u64, ManifestError> {
    if chunks.is_empty() || chunks.len() > MAX_CHUNKS {
        return Err(ManifestError::Count(chunks.len() as u64));
    }
    let mut sum = 0u64;
    for (index, chunk) in chunks.iter().enumerate() {
        if chunk.len == 0 || chunk.len as usize > MAX_CHUNK {
            return Err(ManifestError::ChunkLength {
                index,
                len: chunk.len,
            });
        }
        sum += u64::from(chunk.len);
    }
    Ok(sum)
}

/// The first `N` bytes of `bytes` and the rest.
fn split<const N: usize>(bytes: &[u8]) -> Option<([u8; N], &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<N>()?;
    Some((*head, rest))
}

/// The keyed hash of a chunk's plaintext under `key` (a generation's chunk
/// id key, §10.1).
pub fn chunk_key_hash(key: &[u8; 32], plaintext: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, plaintext).as_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn chunk(n: u8, len: u32) -> ChunkRef {
        ChunkRef {
            blob: BlobId::of(&[n]),
            len,
            key_hash: [n; 32],
        }
    }

    /// The test vector of PROTOCOL.md §10.8, read from the document.
    #[test]
    fn the_protocol_test_vector_encodes_as_written() {
        let protocol = include_str!("../../../docs/PROTOCOL.md");
        let section = &protocol[protocol.find("### 10.8").unwrap()..];
        let vector = &section[section.find("Test vector").unwrap()..];
        let block = vector.split("```").nth(1).unwrap();
        let hex: String = block.split_whitespace().collect();
        let manifest = Manifest::new(vec![
            ChunkRef {
                blob: BlobId::from_bytes([0x11; 32]),
                len: 3_000_000,
                key_hash: [0xaa; 32],
            },
            ChunkRef {
                blob: BlobId::from_bytes([0x22; 32]),
                len: 1_000,
                key_hash: [0xbb; 32],
            },
        ])
        .unwrap();
        let bytes = manifest.encode();
        assert_eq!(bytes.len(), 166);
        let encoded: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(encoded, hex);
        assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
        assert_eq!(manifest.size(), 3_001_000);
    }

    #[test]
    fn malformed_manifests_are_refused() {
        let good = Manifest::new(vec![chunk(1, 10), chunk(2, 20)])
            .unwrap()
            .encode();
        assert_eq!(Manifest::decode(&good[1..]), Err(ManifestError::Magic));
        let short = &good[..good.len() - 1];
        assert!(matches!(
            Manifest::decode(short),
            Err(ManifestError::Length { .. })
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            Manifest::decode(&long),
            Err(ManifestError::Length { .. })
        ));
        let mut wrong_size = good.clone();
        wrong_size[18..26].copy_from_slice(&31u64.to_be_bytes());
        assert_eq!(
            Manifest::decode(&wrong_size),
            Err(ManifestError::Size { sum: 30, size: 31 })
        );
        let mut zero_len = good.clone();
        zero_len[30 + 32..30 + 36].copy_from_slice(&0u32.to_be_bytes());
        assert!(matches!(
            Manifest::decode(&zero_len),
            Err(ManifestError::ChunkLength { index: 0, len: 0 })
        ));
        let mut none = good[..30].to_vec();
        none[26..30].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(Manifest::decode(&none), Err(ManifestError::Count(0)));
        let mut huge = good[..30].to_vec();
        huge[26..30].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Manifest::decode(&huge),
            Err(ManifestError::Count(u64::from(u32::MAX)))
        );
    }

    #[test]
    fn a_range_is_covered_by_exactly_the_chunks_it_touches() {
        let m = Manifest::new(vec![chunk(1, 10), chunk(2, 10), chunk(3, 10)]).unwrap();
        let starts = |a, b| m.covering(a, b).map(|(at, _)| at).collect::<Vec<_>>();
        assert_eq!(starts(0, 30), [0, 10, 20]);
        assert_eq!(starts(0, 10), [0]);
        assert_eq!(starts(9, 11), [0, 10]);
        assert_eq!(starts(10, 20), [10]);
        assert_eq!(starts(25, 26), [20]);
        assert!(starts(30, 40).is_empty());
        assert!(starts(5, 5).is_empty());
    }

    proptest! {
        #[test]
        fn manifests_read_back_as_written(lens in prop::collection::vec(1u32..=8 << 20, 1..40)) {
            let chunks: Vec<_> = lens.iter().enumerate()
                .map(|(i, &len)| chunk(u8::try_from(i).unwrap(), len))
                .collect();
            let manifest = Manifest::new(chunks).unwrap();
            prop_assert_eq!(Manifest::decode(&manifest.encode()).unwrap(), manifest);
        }

        #[test]
        fn any_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            for input in [&bytes[..], &with_magic[..]] {
                if let Ok(manifest) = Manifest::decode(input) {
                    prop_assert_eq!(manifest.encode(), input);
                }
            }
        }
    }
}
