//! Content-defined chunking of a file's plaintext (PROTOCOL.md §10.8), so
//! that an edit changes the chunks around it and no others, and a file
//! stored again shares every unchanged chunk with its earlier version.
//!
//! The cut points come from FastCDC: a gear hash rolled over the bytes,
//! cut where its top bits are zero, with a stricter test before the
//! average size and a looser one after it (normalized chunking), between a
//! minimum and a maximum size. The gear table is derived from a secret of
//! the vault generation, so the sizes of a file's chunks, which relays see,
//! do not tell which known file it is (restic and borg key their chunkers
//! for the same reason).

use zeroize::Zeroizing;

/// Chunks are at least this long (but a file's last chunk may be shorter).
pub const MIN_CHUNK: usize = 512 * 1024;
/// The average chunk length aimed at.
pub const AVERAGE_CHUNK: usize = 2 * 1024 * 1024;
/// Chunks are at most this long.
pub const MAX_CHUNK: usize = 8 * 1024 * 1024;

/// log2 of [`AVERAGE_CHUNK`].
const AVERAGE_BITS: u32 = AVERAGE_CHUNK.trailing_zeros();
/// Before the average length, a cut needs two more zero bits than the
/// average would: short chunks are rarer.
const MASK_SMALL: u64 = top_bits(AVERAGE_BITS + 2);
/// After it, two fewer: long chunks are rarer.
const MASK_LARGE: u64 = top_bits(AVERAGE_BITS - 2);

/// A mask of the top `n` bits. The top bits of the gear hash depend on the
/// most recent 64 bytes; lower bits on fewer.
const fn top_bits(n: u32) -> u64 {
    !0u64 << (64 - n)
}

/// A keyed chunker: the same key cuts the same bytes at the same places on
/// every device.
pub struct Chunker {
    gear: Box<[u64; 256]>,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chunker(..)")
    }
}

impl Chunker {
    /// The chunker of a vault generation, keyed by `key` (the generation's
    /// chunking key, §10.1).
    pub fn new(key: &[u8; 32]) -> Self {
        let mut table = Zeroizing::new([0u8; 256 * 8]);
        blake3::Hasher::new_keyed(key)
            .update(b"cairn/v1 gear table")
            .finalize_xof()
            .fill(&mut *table);
        let mut gear = Box::new([0u64; 256]);
        for (entry, bytes) in gear.iter_mut().zip(table.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            *entry = u64::from_le_bytes(word);
        }
        Self { gear }
    }

    /// The length of the first chunk of `data`, or `None` when more bytes
    /// are needed to decide. `last` says that `data` runs to the end of
    /// the file. A cut found in `data` is final: it depends only on the
    /// bytes before it, so a stream can offer bytes as they come. `None`
    /// never comes when `last`, nor when `data` holds [`MAX_CHUNK`] bytes.
    pub fn cut(&self, data: &[u8], last: bool) -> Option<usize> {
        self.boundary(data)
            .or_else(|| (last || data.len() >= MAX_CHUNK).then(|| data.len().min(MAX_CHUNK)))
    }

    /// The length of the first chunk of `data`, which holds all the bytes
    /// the decision needs.
    fn first_chunk(&self, data: &[u8]) -> usize {
        self.boundary(data)
            .unwrap_or_else(|| data.len().min(MAX_CHUNK))
    }

    /// The first content-defined cut within `data`, if there is one before
    /// its end (or before [`MAX_CHUNK`]).
    fn boundary(&self, data: &[u8]) -> Option<usize> {
        let len = data.len().min(MAX_CHUNK);
        if len <= MIN_CHUNK {
            return None;
        }
        let normal = len.min(AVERAGE_CHUNK);
        let mut hash = 0u64;
        // The hash at position i only depends on the 64 bytes before it,
        // so rolling from MIN_CHUNK - 64 makes a cut independent of where
        // the scan started.
        let gear = &*self.gear;
        for &byte in &data[MIN_CHUNK - 64..MIN_CHUNK] {
            hash = (hash << 1).wrapping_add(gear[usize::from(byte)]);
        }
        let mut at = MIN_CHUNK;
        for &byte in &data[MIN_CHUNK..normal] {
            hash = (hash << 1).wrapping_add(gear[usize::from(byte)]);
            at += 1;
            if hash & MASK_SMALL == 0 {
                return Some(at);
            }
        }
        for &byte in &data[normal..len] {
            hash = (hash << 1).wrapping_add(gear[usize::from(byte)]);
            at += 1;
            if hash & MASK_LARGE == 0 {
                return Some(at);
            }
        }
        None
    }

    /// Every chunk length of `data`, a whole file in memory (for tests,
    /// benchmarks and small files; streams use [`Chunker::cut`]).
    pub fn lengths(&self, data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.first_chunk(rest);
            out.push(n);
            rest = &rest[n..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// Deterministic pseudo-random bytes.
    fn noise(seed: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn chunker(key: u8) -> Chunker {
        Chunker::new(&[key; 32])
    }

    #[test]
    fn chunks_stay_within_bounds_and_cover_the_file() {
        let data = noise(1, 32 << 20);
        let lengths = chunker(1).lengths(&data);
        assert_eq!(lengths.iter().sum::<usize>(), data.len());
        let (last, all_but_last) = lengths.split_last().unwrap();
        assert!(
            all_but_last
                .iter()
                .all(|n| (MIN_CHUNK..=MAX_CHUNK).contains(n))
        );
        assert!(*last <= MAX_CHUNK);
        // About the average on random data: 32 MiB in 2 MiB chunks.
        assert!((8..=28).contains(&lengths.len()), "{}", lengths.len());
    }

    /// An edit in the middle changes the chunks around it and no others:
    /// every chunk more than one chunk away is found again.
    #[test]
    fn an_edit_changes_only_the_chunks_around_it() {
        let chunker = chunker(2);
        let data = noise(2, 32 << 20);
        let mut edited = data.clone();
        edited[12 << 20] ^= 1;
        edited.splice(20 << 20..20 << 20, noise(3, 1000));
        let pieces = |bytes: &[u8]| {
            let mut at = 0;
            chunker
                .lengths(bytes)
                .into_iter()
                .map(|n| {
                    at += n;
                    blake3::hash(&bytes[at - n..at])
                })
                .collect::<std::collections::HashSet<_>>()
        };
        let (before, after) = (pieces(&data), pieces(&edited));
        let new = after.difference(&before).count();
        assert!(new <= 4, "{new} new chunks of {}", after.len());
    }

    #[test]
    fn the_key_decides_the_cut_points() {
        let data = noise(4, 16 << 20);
        let (a, b) = (chunker(5).lengths(&data), chunker(6).lengths(&data));
        assert_eq!(a, chunker(5).lengths(&data));
        assert_ne!(a, b);
    }

    #[test]
    fn a_cut_is_final_and_waits_for_bytes_unless_the_file_ends() {
        let chunker = chunker(7);
        let data = noise(8, MAX_CHUNK);
        // A cut found in the bytes offered is final: the same with fewer.
        let n = chunker.cut(&data, false).unwrap();
        assert_eq!(chunker.cut(&data[..n], false), Some(n));
        assert_eq!(chunker.cut(&data[..n - 1], false), None);
        // Bytes with no cut in them wait for more, unless the file ends.
        let flat = vec![0u8; MAX_CHUNK];
        assert_eq!(chunker.cut(&flat[..MAX_CHUNK - 1], false), None);
        assert_eq!(
            chunker.cut(&flat[..MAX_CHUNK - 1], true),
            Some(MAX_CHUNK - 1)
        );
        assert_eq!(chunker.cut(&data[..10], true), Some(10));
        assert_eq!(chunker.cut(&[], true), Some(0));
        // Bytes that never hit a cut are cut at the maximum.
        assert_eq!(
            chunker.cut(&vec![0u8; MAX_CHUNK + 5], false),
            Some(MAX_CHUNK)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        /// Streaming in pieces finds the same cut points as the whole file
        /// at once: a cut depends on the bytes, not on how they arrive.
        #[test]
        fn streaming_cuts_like_the_whole(seed: u8, len in 0usize..(16 << 20)) {
            let chunker = chunker(9);
            let data = noise(seed, len);
            let mut streamed = Vec::new();
            let mut buffer: Vec<u8> = Vec::new();
            let mut fed = 0;
            loop {
                let last = fed == data.len();
                match chunker.cut(&buffer, last) {
                    Some(0) => break,
                    Some(n) => {
                        streamed.push(n);
                        buffer.drain(..n);
                    }
                    None => {
                        let take = (data.len() - fed).min(3 << 20);
                        buffer.extend_from_slice(&data[fed..fed + take]);
                        fed += take;
                    }
                }
            }
            prop_assert_eq!(streamed, chunker.lengths(&data));
        }
    }
}
