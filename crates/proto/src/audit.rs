//! Storage audits: proofs that a relay holds a blob's bytes, checked against
//! nothing but the blob's id and size.
//!
//! A blob id is the BLAKE3 hash of the blob, and BLAKE3 is a Merkle tree over
//! 1 KiB chunks, so the id is already the root of a tree the relay can prove
//! paths in. The client picks a few chunks at random ([`ChunkRequest`]); the
//! relay answers with those chunks' bytes plus the chaining values of every
//! subtree that holds none of them ([`prove`]); the client recomputes the root
//! from that and compares it with the id ([`verify`]). docs/PROTOCOL.md §7.9
//! is the normative description.
//!
//! # Proof layout
//!
//! Walk the BLAKE3 tree of a blob of `size` bytes depth-first, left to right,
//! splitting a subtree of `len > 1024` bytes into a left part of
//! `left_subtree_len(len)` bytes (the largest power-of-two number of chunks
//! below `len`) and the rest. At each subtree:
//!
//! - if it holds no requested chunk, emit its 32-byte chaining value and do
//!   not descend;
//! - else, if it is a single chunk, emit the chunk's bytes (1024, or fewer for
//!   the last chunk);
//! - else descend into its left part, then its right part.
//!
//! Nothing else is sent: no node ids, no lengths. Both sides derive the shape
//! from the size and the request, so the proof's length is known before it
//! arrives ([`proof_len`]) and a requested chunk's place can only ever hold
//! its bytes, never a chaining value. A blob of at most 1024 bytes is a
//! single chunk: its proof is the blob itself.
//!
//! # What an audit shows
//!
//! A passing proof shows that whoever produced it had the requested chunks'
//! exact bytes at that moment (anything else would be a BLAKE3 collision).
//! The proof for a fixed request never changes, so the client must pick fresh
//! random chunks on every audit: a relay that kept the tree's chaining values
//! (1/32 of the blob) but only part of the bytes passes only when every
//! requested chunk happens to be one it kept. Missing a fraction `f` of the
//! chunks, it passes a request of `k` random chunks with probability at most
//! `(1 - f)^k`:
//!
//! | missing | 16 chunks | 64 chunks |
//! |---|---|---|
//! | 10% | 18.5% | 0.12% |
//! | 25% | 1.0% | 1.0 × 10⁻⁸ |
//! | 50% | 1.5 × 10⁻⁵ | 5.4 × 10⁻²⁰ |
//!
//! and repeated audits multiply these odds. An audit does not show *where*
//! the bytes are: a relay could fetch them from elsewhere to answer.
//!
//! # Cost
//!
//! The relay hashes the whole blob once per proof (every byte not sent
//! in the proof), reading untouched subtrees in pieces of up to 1 MiB; the
//! client hashes only the chunks it receives. A proof is the chunks plus at
//! most one chaining value per tree level for each of them (20 levels for
//! 1 GiB), so it grows with the logarithm of the blob's size. Measured in a release build on one core
//! (`measure_gib_audit` in the tests), 16 random chunks of a 1 GiB blob:
//!
//! | | |
//! |---|---|
//! | proof | 23,968 bytes: 16 KiB of chunks and 237 chaining values |
//! | prove | 0.36–0.40 s, the same as a plain BLAKE3 hash of the bytes |
//! | verify | 0.07–0.15 ms |
//!
//! # Example
//!
//! ```
//! use cairn_proto::BlobId;
//! use cairn_proto::audit::{ChunkRequest, prove, proof_len, verify};
//!
//! let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
//! // The client keeps nothing but these two.
//! let (id, size) = (BlobId::of(&blob), blob.len() as u64);
//!
//! // Client: fresh random chunks (use a real random source).
//! let mut state = 7u64;
//! let mut random = || { state = state.wrapping_mul(6364136223846793005).wrapping_add(1); state };
//! let request = ChunkRequest::random(size, 4, &mut random)?;
//! let query = request.to_query(); // GET /v1/blobs/{id}/proof?chunks=<query>
//!
//! // Relay: parse the query for the blob it holds, prove by reading it.
//! let asked = ChunkRequest::parse(&query, size)?;
//! let proof = prove(&asked, |offset, buf| {
//!     let start = usize::try_from(offset).map_err(|_| "offset")?;
//!     buf.copy_from_slice(blob.get(start..start + buf.len()).ok_or("range")?);
//!     Ok::<_, &str>(())
//! })?;
//!
//! // Client: check the answer against the id alone.
//! assert_eq!(proof.len() as u64, proof_len(&request));
//! let chunks = verify(&id, &request, &proof)?;
//! assert_eq!(chunks.len(), 4);
//! for (offset, bytes) in chunks {
//!     assert_eq!(&blob[offset as usize..][..bytes.len()], &bytes[..]);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::convert::Infallible;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::BlobId;

/// Bytes in a chunk: a leaf of the BLAKE3 tree, the unit an audit asks for.
pub const CHUNK_LEN: u64 = 1024;

/// The most chunks one request may name.
pub const MAX_AUDIT_CHUNKS: usize = 64;

/// The longest text form [`ChunkRequest::parse`] reads: 64 indices of up to
/// 20 digits and the commas between them.
pub const MAX_QUERY_LEN: usize = MAX_AUDIT_CHUNKS * 21 - 1;

/// Length of a chaining value in a proof.
const CV_LEN: u64 = 32;

/// Largest read the prover makes when hashing an untouched subtree.
const PIECE_LEN: usize = 1 << 20;

// The tree this module walks is BLAKE3's own.
const _: () = assert!(blake3::CHUNK_LEN as u64 == CHUNK_LEN);

/// Chunks in a blob of `size` bytes: `ceil(size / 1024)`, and at least 1 (an
/// empty blob has one empty chunk).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_LEN).max(1)
}

/// A request or proof that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The chunk list is malformed or breaks a limit (the asker's fault).
    #[error("bad chunk request: {0}")]
    BadRequest(&'static str),
    /// The proof does not have the length the request implies (the prover's
    /// fault). Checked before any of it is read.
    #[error("the proof is {got} bytes, expected {expected}")]
    WrongLength {
        /// The length the request implies ([`proof_len`]).
        expected: u64,
        /// The length received.
        got: u64,
    },
    /// The proof does not lead to the blob id: the prover does not hold these
    /// bytes (or holds other ones).
    #[error("the proof does not lead to the blob id: the relay does not hold these bytes")]
    RootMismatch,
}

/// Which chunks of a blob an audit asks for: sorted, unique, each below
/// [`chunk_count`] of the size, and between 1 and [`MAX_AUDIT_CHUNKS`] of
/// them. Holding one means these rules were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRequest {
    size: u64,
    chunks: Vec<u64>,
}

impl ChunkRequest {
    /// A request for `chunks` of a blob of `size` bytes, in any order and
    /// with repeats allowed (they are sorted and merged first).
    ///
    /// # Errors
    ///
    /// [`AuditError::BadRequest`] if no chunk is named, more than
    /// [`MAX_AUDIT_CHUNKS`] distinct ones are, or one is beyond the blob.
    pub fn new(size: u64, mut chunks: Vec<u64>) -> Result<Self, AuditError> {
        chunks.sort_unstable();
        chunks.dedup();
        if chunks.is_empty() {
            return Err(AuditError::BadRequest("no chunks"));
        }
        if chunks.len() > MAX_AUDIT_CHUNKS {
            return Err(AuditError::BadRequest("more than 64 chunks"));
        }
        if chunks.iter().any(|&c| c >= chunk_count(size)) {
            return Err(AuditError::BadRequest(
                "chunk index beyond the end of the blob",
            ));
        }
        Ok(Self { size, chunks })
    }

    /// `n` distinct chunks of a blob of `size` bytes, every set of `n` equally
    /// likely, chosen with `random`, which must return independent uniform
    /// `u64`s (a cryptographic source: the prover must not guess them).
    /// `n` is clamped to the blob's [`chunk_count`].
    ///
    /// Takes exactly `n` values from `random`. A value is reduced to a range
    /// of `m` chunks by taking the high half of its product with `m`, which
    /// skews the odds of a chunk by at most `m / 2^64` (2^-34 for 1 TiB).
    ///
    /// # Errors
    ///
    /// [`AuditError::BadRequest`] if `n` is 0 or above [`MAX_AUDIT_CHUNKS`]
    /// (after clamping).
    pub fn random(
        size: u64,
        n: usize,
        mut random: impl FnMut() -> u64,
    ) -> Result<Self, AuditError> {
        let count = chunk_count(size);
        let n = u64::try_from(n).unwrap_or(u64::MAX).min(count);
        if n == 0 {
            return Err(AuditError::BadRequest("no chunks"));
        }
        if n > MAX_AUDIT_CHUNKS as u64 {
            return Err(AuditError::BadRequest("more than 64 chunks"));
        }
        // Floyd's sampling: n draws, each set of n equally likely.
        let mut chunks = Vec::with_capacity(MAX_AUDIT_CHUNKS);
        for top in count - n..count {
            let pick = below(top + 1, random());
            chunks.push(if chunks.contains(&pick) { top } else { pick });
        }
        Self::new(size, chunks)
    }

    /// The requested chunk indices, ascending.
    pub fn chunks(&self) -> &[u64] {
        &self.chunks
    }

    /// The size of the blob, in bytes, that the request is for.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The query text form: the chunk indices in decimal, ascending,
    /// separated by commas (`0,17,4095`). [`ChunkRequest::parse`] reads it.
    pub fn to_query(&self) -> String {
        let mut text = String::with_capacity(self.chunks.len() * 8);
        for (i, chunk) in self.chunks.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&chunk.to_string());
        }
        text
    }

    /// Reads the query text form for a blob of `size` bytes. Only the
    /// canonical spelling is accepted: indices in decimal without leading
    /// zeros (except `0` itself), strictly ascending, separated by single
    /// commas, nothing else.
    ///
    /// # Errors
    ///
    /// [`AuditError::BadRequest`] for text longer than [`MAX_QUERY_LEN`],
    /// an empty list or item, any character other than digits and commas, a
    /// leading zero, a number above `u64::MAX`, indices not strictly
    /// ascending, more than [`MAX_AUDIT_CHUNKS`] of them, or one beyond the
    /// blob.
    pub fn parse(text: &str, size: u64) -> Result<Self, AuditError> {
        if text.len() > MAX_QUERY_LEN {
            return Err(AuditError::BadRequest("chunk list too long"));
        }
        if text.is_empty() {
            return Err(AuditError::BadRequest("no chunks"));
        }
        let count = chunk_count(size);
        let mut chunks: Vec<u64> = Vec::new();
        for item in text.split(',') {
            if chunks.len() == MAX_AUDIT_CHUNKS {
                return Err(AuditError::BadRequest("more than 64 chunks"));
            }
            let chunk = parse_index(item)?;
            if chunks.last().is_some_and(|&last| chunk <= last) {
                return Err(AuditError::BadRequest(
                    "chunk indices not strictly ascending",
                ));
            }
            if chunk >= count {
                return Err(AuditError::BadRequest(
                    "chunk index beyond the end of the blob",
                ));
            }
            chunks.push(chunk);
        }
        Ok(Self { size, chunks })
    }
}

/// One decimal index in canonical form.
fn parse_index(item: &str) -> Result<u64, AuditError> {
    if item.is_empty() {
        return Err(AuditError::BadRequest("empty chunk index"));
    }
    if !item.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuditError::BadRequest(
            "chunk index is not a decimal number",
        ));
    }
    if item.len() > 1 && item.starts_with('0') {
        return Err(AuditError::BadRequest("chunk index with a leading zero"));
    }
    item.parse()
        .map_err(|_| AuditError::BadRequest("chunk index too large"))
}

/// Maps a uniform `u64` into `0..bound` (`bound > 0`).
fn below(bound: u64, value: u64) -> u64 {
    let wide = u128::from(value) * u128::from(bound);
    // The high half of a product of two u64s is below `bound`, so it fits.
    #[allow(clippy::cast_possible_truncation)]
    let high = (wide >> 64) as u64;
    high
}

/// The length in bytes of the proof for `request`: what [`prove`] returns
/// and [`verify`] accepts, so a client can bound the download. At most
/// 64 KiB of chunks plus 32 bytes per tree level for each of them: under
/// 180,000 bytes for any size.
pub fn proof_len(request: &ChunkRequest) -> u64 {
    let Ok(len) = walk(&mut Length, 0, request.size, &request.chunks);
    len
}

/// Builds the proof for `request` over a blob of `request.size()` bytes,
/// reading it through `read(offset, buf)`, which must fill `buf` with the
/// blob's bytes from `offset` on (or fail).
///
/// Reads every byte of the blob once, in order, and hashes every byte it
/// does not send: the cost of one full hash. Untouched subtrees are read in
/// pieces of up to 1 MiB; requested chunks are read straight into the proof.
/// The result is [`proof_len`] bytes long. The prover does not check its own
/// answer: bytes other than the blob's give a proof that [`verify`] refuses.
///
/// # Errors
///
/// The first error `read` returns.
pub fn prove<E>(
    request: &ChunkRequest,
    read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let capacity = usize::try_from(proof_len(request)).unwrap_or(0);
    let mut prover = Prover {
        read,
        out: Vec::with_capacity(capacity),
        buf: Vec::new(),
    };
    walk(&mut prover, 0, request.size, &request.chunks)?;
    Ok(prover.out)
}

/// Checks `proof` against `id` for `request`, and returns the requested
/// chunks as (byte offset in the blob, bytes), ascending.
///
/// The proof's length is checked first; then the requested chunks are hashed
/// at their positions, combined with the chaining values sent for the rest
/// of the tree, and the root compared with `id`. A blob of at most 1024
/// bytes is its own proof and is compared with `blake3::hash`.
///
/// # Errors
///
/// [`AuditError::WrongLength`] if the proof is not exactly
/// [`proof_len`] bytes; [`AuditError::RootMismatch`] if it does not lead to
/// `id`.
pub fn verify(
    id: &BlobId,
    request: &ChunkRequest,
    proof: &[u8],
) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
    let expected = proof_len(request);
    let got = u64::try_from(proof.len()).unwrap_or(u64::MAX);
    if got != expected {
        return Err(AuditError::WrongLength { expected, got });
    }
    let id = blake3::Hash::from_bytes(*id.as_bytes());
    if request.size <= CHUNK_LEN {
        // A single chunk is the root itself.
        if blake3::hash(proof) != id {
            return Err(AuditError::RootMismatch);
        }
        return Ok(vec![(0, proof.to_vec())]);
    }
    let mut verifier = Verifier {
        rest: proof,
        expected,
        chunks: Vec::with_capacity(request.chunks.len()),
    };
    let (left, right) = split(0, request.size, &request.chunks);
    let left = walk(&mut verifier, left.offset, left.len, left.chunks)?;
    let right = walk(&mut verifier, right.offset, right.len, right.chunks)?;
    if !verifier.rest.is_empty() {
        return Err(AuditError::WrongLength { expected, got });
    }
    if merge_subtrees_root(&left, &right, Mode::Hash) != id {
        return Err(AuditError::RootMismatch);
    }
    Ok(verifier.chunks)
}

// ---- the tree walk shared by the length, the prover and the verifier ----

/// What one walk over the proof's shape does at each kind of node.
trait Visit {
    /// What a subtree comes to (a chaining value for the verifier).
    type Value;
    /// Why the walk stops.
    type Error;
    /// A subtree that holds no requested chunk: its chaining value is in
    /// the proof.
    fn untouched(&mut self, offset: u64, len: u64) -> Result<Self::Value, Self::Error>;
    /// A requested chunk: its bytes are in the proof.
    fn chunk(&mut self, offset: u64, len: u64) -> Result<Self::Value, Self::Error>;
    /// A non-root parent of two visited subtrees.
    fn parent(&mut self, left: Self::Value, right: Self::Value) -> Self::Value;
}

/// A subtree: `len` bytes from `offset`, and the requested chunks in it.
struct Subtree<'a> {
    offset: u64,
    len: u64,
    chunks: &'a [u64],
}

/// The two children of a subtree of more than one chunk, as BLAKE3 splits
/// it: the left one holds the largest power-of-two number of whole chunks
/// that leaves the right one non-empty.
fn split(offset: u64, len: u64, chunks: &[u64]) -> (Subtree<'_>, Subtree<'_>) {
    let left_len = left_subtree_len(len);
    debug_assert!(left_len >= CHUNK_LEN && left_len < len);
    let first_right = (offset + left_len) / CHUNK_LEN;
    let (left, right) = chunks.split_at(chunks.partition_point(|&c| c < first_right));
    (
        Subtree {
            offset,
            len: left_len,
            chunks: left,
        },
        Subtree {
            offset: offset + left_len,
            len: len - left_len,
            chunks: right,
        },
    )
}

/// The length of the left child of a subtree of `len > 1024` bytes: half the
/// length rounded up to a power of two. This is
/// `blake3::hazmat::left_subtree_len`, which computes `len + 1` and so
/// overflows for a blob of `u64::MAX` bytes; this form does not.
fn left_subtree_len(len: u64) -> u64 {
    len.div_ceil(2).next_power_of_two()
}

/// Visits the subtree of `len` bytes at `offset` holding `chunks` (sorted,
/// all inside it) in proof order. Depth is at most the tree's, 54 levels.
fn walk<V: Visit>(
    visit: &mut V,
    offset: u64,
    len: u64,
    chunks: &[u64],
) -> Result<V::Value, V::Error> {
    if chunks.is_empty() {
        return visit.untouched(offset, len);
    }
    if len <= CHUNK_LEN {
        return visit.chunk(offset, len);
    }
    let (left, right) = split(offset, len, chunks);
    let left = walk(visit, left.offset, left.len, left.chunks)?;
    let right = walk(visit, right.offset, right.len, right.chunks)?;
    Ok(visit.parent(left, right))
}

/// Adds up the proof's length.
struct Length;

impl Visit for Length {
    type Value = u64;
    type Error = Infallible;

    fn untouched(&mut self, _: u64, _: u64) -> Result<u64, Infallible> {
        Ok(CV_LEN)
    }

    fn chunk(&mut self, _: u64, len: u64) -> Result<u64, Infallible> {
        Ok(len)
    }

    fn parent(&mut self, left: u64, right: u64) -> u64 {
        left + right
    }
}

/// Writes the proof, reading the blob through `read`.
struct Prover<R> {
    read: R,
    out: Vec<u8>,
    /// Reused for hashing untouched subtrees; allocated on first use.
    buf: Vec<u8>,
}

impl<R, E> Visit for Prover<R>
where
    R: FnMut(u64, &mut [u8]) -> Result<(), E>,
{
    type Value = ();
    type Error = E;

    fn untouched(&mut self, offset: u64, len: u64) -> Result<(), E> {
        // An untouched subtree is never the root (the request names at least
        // one chunk), so it starts on a chunk boundary and is not empty: the
        // hazmat calls below cannot panic.
        if self.buf.is_empty() {
            self.buf = vec![0; usize::try_from(len).map_or(PIECE_LEN, |n| n.min(PIECE_LEN))];
        }
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let piece = usize::try_from(end - at).map_or(self.buf.len(), |n| n.min(self.buf.len()));
            let buf = &mut self.buf[..piece];
            (self.read)(at, buf)?;
            hasher.update(buf);
            at += u64::try_from(piece).unwrap_or(u64::MAX);
        }
        self.out.extend_from_slice(&hasher.finalize_non_root());
        Ok(())
    }

    fn chunk(&mut self, offset: u64, len: u64) -> Result<(), E> {
        if len == 0 {
            return Ok(()); // the one chunk of an empty blob
        }
        let start = self.out.len();
        self.out.resize(start + chunk_bytes(len), 0);
        (self.read)(offset, &mut self.out[start..])
    }

    fn parent(&mut self, (): (), (): ()) {}
}

/// Reads the proof back into chaining values, keeping the chunks.
struct Verifier<'a> {
    /// The proof not yet read.
    rest: &'a [u8],
    /// The whole proof's length, for errors.
    expected: u64,
    chunks: Vec<(u64, Vec<u8>)>,
}

impl<'a> Verifier<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AuditError> {
        // The length was checked against the same walk before, so this only
        // fails if that check was wrong; refuse rather than panic.
        if self.rest.len() < n {
            return Err(AuditError::WrongLength {
                expected: self.expected,
                got: self.expected,
            });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
}

impl Visit for Verifier<'_> {
    type Value = ChainingValue;
    type Error = AuditError;

    fn untouched(&mut self, _: u64, _: u64) -> Result<ChainingValue, AuditError> {
        let mut cv: ChainingValue = [0; 32];
        let bytes = self.take(cv.len())?;
        cv.copy_from_slice(bytes);
        Ok(cv)
    }

    fn chunk(&mut self, offset: u64, len: u64) -> Result<ChainingValue, AuditError> {
        // Only reached below the root of a blob of more than one chunk, so
        // `offset` is a chunk boundary and `len` is at least 1.
        let bytes = self.take(chunk_bytes(len))?;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        hasher.update(bytes);
        self.chunks.push((offset, bytes.to_vec()));
        Ok(hasher.finalize_non_root())
    }

    fn parent(&mut self, left: ChainingValue, right: ChainingValue) -> ChainingValue {
        merge_subtrees_non_root(&left, &right, Mode::Hash)
    }
}

/// A chunk's length as a buffer length (it is at most [`CHUNK_LEN`]).
fn chunk_bytes(len: u64) -> usize {
    usize::try_from(len.min(CHUNK_LEN)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range() {
        for bound in [1, 2, 3, 1000, u64::MAX] {
            for value in [0, 1, u64::MAX / 2, u64::MAX] {
                assert!(below(bound, value) < bound);
            }
        }
    }

    #[test]
    fn left_subtree_len_is_blake3s() {
        let mut lens: Vec<u64> = (1025..70_000).collect();
        for shift in 11..64 {
            let p = 1u64 << shift;
            lens.extend([p - 1, p, p + 1, p + CHUNK_LEN]);
        }
        lens.push(u64::MAX - 1);
        for len in lens {
            assert_eq!(
                left_subtree_len(len),
                blake3::hazmat::left_subtree_len(len),
                "{len}"
            );
        }
        assert_eq!(left_subtree_len(u64::MAX), 1 << 63);
    }

    #[test]
    fn split_follows_blake3() {
        // 3000 bytes: chunks 0 and 1 on the left, chunk 2 (952 bytes) right.
        let (left, right) = split(0, 3000, &[0, 2]);
        assert_eq!((left.offset, left.len, left.chunks), (0, 2048, &[0][..]));
        assert_eq!(
            (right.offset, right.len, right.chunks),
            (2048, 952, &[2][..])
        );
    }
}
