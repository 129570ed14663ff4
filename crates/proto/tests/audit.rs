//! Storage audits: proofs round-trip for every shape of tree, a relay that
//! lacks or altered any requested chunk is caught (and one that lacks only
//! chunks nobody asked for is not, which is what bounds its odds), every
//! single-byte change to a proof is refused, and chunk lists have one
//! spelling.

// Test blobs are a few MiB at most: offsets and lengths fit any usize.
#![allow(clippy::cast_possible_truncation)]

use std::convert::Infallible;
use std::ops::Range;

use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use cairn_proto::BlobId;
use cairn_proto::audit::{
    AuditError, CHUNK_LEN, ChunkRequest, MAX_AUDIT_CHUNKS, MAX_QUERY_LEN, chunk_count, proof_len,
    prove, verify,
};
use proptest::prelude::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A small deterministic generator (SplitMix64), so that the statistical
/// tests below run the same trials every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn blob(len: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len as usize + 8);
    while (out.len() as u64) < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

fn range(offset: u64, len: usize) -> Range<usize> {
    offset as usize..offset as usize + len
}

/// The byte range of chunk `c` in a blob of `size` bytes.
fn chunk_range(size: u64, c: u64) -> Range<usize> {
    (c * CHUNK_LEN) as usize..((c + 1) * CHUNK_LEN).min(size) as usize
}

/// An honest relay holding `data`.
fn honest(data: &[u8], request: &ChunkRequest) -> Vec<u8> {
    prove(request, |offset, buf| {
        buf.copy_from_slice(&data[range(offset, buf.len())]);
        Ok::<_, Infallible>(())
    })
    .unwrap()
}

/// A relay holding `copy` instead of the blob, and nothing else.
fn serving_copy(copy: &[u8], request: &ChunkRequest) -> Result<Vec<u8>, ()> {
    prove(request, |offset, buf| {
        let piece = copy.get(range(offset, buf.len())).ok_or(())?;
        buf.copy_from_slice(piece);
        Ok(())
    })
}

/// The strongest cheat: a relay that kept the whole tree's chaining values
/// (here: reads the true bytes for everything it hashes) but holds only
/// `copy` for the chunks it must send, padding what it lacks with zeros.
fn kept_the_tree(data: &[u8], copy: &[u8], request: &ChunkRequest) -> Vec<u8> {
    prove(request, |offset, buf| {
        // An untouched subtree never starts at a requested chunk, so a read
        // there is the chunk itself.
        if request.chunks().contains(&(offset / CHUNK_LEN)) && offset % CHUNK_LEN == 0 {
            buf.fill(0);
            if let Some(held) = copy.get(offset as usize..) {
                let have = held.len().min(buf.len());
                buf[..have].copy_from_slice(&held[..have]);
            }
        } else {
            buf.copy_from_slice(&data[range(offset, buf.len())]);
        }
        Ok::<_, Infallible>(())
    })
    .unwrap()
}

/// Chunks where `copy` (zero-padded) differs from `data`.
fn damaged_chunks(data: &[u8], copy: &[u8]) -> Vec<u64> {
    let size = data.len() as u64;
    (0..chunk_count(size))
        .filter(|&c| {
            let r = chunk_range(size, c);
            r.clone()
                .any(|i| copy.get(i).copied().unwrap_or(0) != data[i])
        })
        .collect()
}

/// Checks an honest proof end to end: exact length, and `verify` returns
/// exactly the requested chunks' bytes.
fn check_round_trip(data: &[u8], request: &ChunkRequest) {
    let size = data.len() as u64;
    let proof = honest(data, request);
    assert_eq!(proof.len() as u64, proof_len(request), "size {size}");
    let chunks = verify(&BlobId::of(data), request, &proof).unwrap();
    let expected: Vec<(u64, Vec<u8>)> = request
        .chunks()
        .iter()
        .map(|&c| (c * CHUNK_LEN, data[chunk_range(size, c)].to_vec()))
        .collect();
    assert_eq!(
        chunks,
        expected,
        "size {size}, chunks {:?}",
        request.chunks()
    );
}

// ---- round trips --------------------------------------------------------

#[test]
fn chunk_count_rounds_up_and_counts_the_empty_chunk() {
    for (size, count) in [
        (0, 1),
        (1, 1),
        (1023, 1),
        (1024, 1),
        (1025, 2),
        (2048, 2),
        (4097, 5),
        (u64::MAX, u64::MAX / 1024 + 1),
    ] {
        assert_eq!(chunk_count(size), count, "size {size}");
    }
}

#[test]
fn round_trip_for_every_shape_of_tree() {
    let sizes = [
        0,
        1,
        1023,
        1024,
        1025,
        2047,
        2048,
        2049,
        3 * KIB,
        4096,
        4097,
        7 * KIB + 1,
        64 * KIB,
        64 * KIB + 1,
        MIB - 1,
        MIB + 5,
        3 * MIB + 17,
    ];
    let mut rng = Rng(1);
    for size in sizes {
        let data = blob(size, size);
        let last = chunk_count(size) - 1;
        let mut requests = vec![vec![0], vec![last], vec![0, last], vec![last / 2]];
        if last < 64 {
            requests.push((0..=last).collect());
        }
        for request in requests {
            check_round_trip(&data, &ChunkRequest::new(size, request).unwrap());
        }
        for n in [1, 2, 16, MAX_AUDIT_CHUNKS] {
            let request = ChunkRequest::random(size, n, || rng.next()).unwrap();
            check_round_trip(&data, &request);
        }
    }
}

#[test]
fn round_trip_for_random_sizes() {
    let mut rng = Rng(2);
    for _ in 0..24 {
        let size = rng.below(4 * MIB);
        let data = blob(size, rng.next());
        let n = 1 + rng.below(MAX_AUDIT_CHUNKS as u64) as usize;
        let request = ChunkRequest::random(size, n, || rng.next()).unwrap();
        check_round_trip(&data, &request);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn proofs_verify_and_have_the_announced_length(
        size in 0u64..300_000,
        seed: u64,
        n in 1usize..=MAX_AUDIT_CHUNKS,
    ) {
        let data = blob(size, seed);
        let mut rng = Rng(seed);
        let request = ChunkRequest::random(size, n, || rng.next()).unwrap();
        check_round_trip(&data, &request);
    }
}

#[test]
fn a_small_blob_is_its_own_proof() {
    for size in [0, 1, 1000, 1024] {
        let data = blob(size, 3);
        let request = ChunkRequest::new(size, vec![0]).unwrap();
        assert_eq!(honest(&data, &request), data);
        assert_eq!(proof_len(&request), size);
    }
}

#[test]
fn the_proof_layout_is_chaining_values_and_chunks_depth_first() {
    // 3000 bytes: the root's left child is chunks 0–1, its right child is
    // chunk 2 (952 bytes). Asking for chunk 1 sends CV(0), chunk 1, CV(2).
    let data = blob(3000, 4);
    let cv = |c: u64| {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(c * CHUNK_LEN);
        hasher.update(&data[chunk_range(3000, c)]);
        hasher.finalize_non_root()
    };
    let request = ChunkRequest::new(3000, vec![1]).unwrap();
    let proof = honest(&data, &request);
    let mut expected = cv(0).to_vec();
    expected.extend_from_slice(&data[1024..2048]);
    expected.extend_from_slice(&cv(2));
    assert_eq!(proof, expected);
    // And that tree is BLAKE3's.
    let left = merge_subtrees_non_root(&cv(0), &cv(1), Mode::Hash);
    assert_eq!(
        merge_subtrees_root(&left, &cv(2), Mode::Hash),
        blake3::hash(&data)
    );
}

#[test]
fn proof_length_is_bounded() {
    // The worst case: 64 chunks spread over the largest possible tree.
    let size = u64::MAX;
    let step = chunk_count(size) / 64;
    let request = ChunkRequest::new(size, (0..64).map(|i| i * step).collect()).unwrap();
    let len = proof_len(&request);
    assert!(len <= 64 * 1024 + 64 * 54 * 32, "{len}");
}

#[test]
fn the_prover_reads_every_byte_once_in_large_pieces() {
    let size = 3 * MIB + 100;
    let data = blob(size, 5);
    let mut rng = Rng(5);
    let request = ChunkRequest::random(size, 16, || rng.next()).unwrap();
    let mut reads: Vec<(u64, usize)> = Vec::new();
    let proof = prove(&request, |offset, buf| {
        reads.push((offset, buf.len()));
        buf.copy_from_slice(&data[range(offset, buf.len())]);
        Ok::<_, Infallible>(())
    })
    .unwrap();
    verify(&BlobId::of(&data), &request, &proof).unwrap();
    let mut at = 0;
    for &(offset, len) in &reads {
        assert_eq!(offset, at, "reads are in order and do not overlap");
        assert!(len > 0 && len <= 1 << 20);
        at += len as u64;
    }
    assert_eq!(at, size, "every byte is read");
    // A few reads around each requested chunk, plus one per MiB.
    assert!(reads.len() <= 16 * 2 * 22 + 4, "{} reads", reads.len());
}

#[test]
fn a_read_error_stops_the_prover() {
    let request = ChunkRequest::new(10 * KIB, vec![3]).unwrap();
    let mut calls = 0;
    let result = prove(&request, |_, _| {
        calls += 1;
        Err("disk on fire")
    });
    assert_eq!(result, Err("disk on fire"));
    assert_eq!(calls, 1);
}

// ---- a relay without the bytes ------------------------------------------

/// Damaged copies of `data`: a random truncation, random byte changes, and
/// another blob of the same size.
fn damaged_copies(data: &[u8], rng: &mut Rng) -> Vec<(&'static str, Vec<u8>)> {
    let size = data.len() as u64;
    let truncated = data[..rng.below(size) as usize].to_vec();
    let mut corrupted = data.to_vec();
    for _ in 0..1 + rng.below(8) {
        let i = rng.below(size) as usize;
        corrupted[i] ^= 1 + rng.below(255) as u8;
    }
    let other = blob(size, rng.next());
    vec![
        ("truncated", truncated),
        ("corrupted", corrupted),
        ("other blob", other),
    ]
}

#[test]
fn a_relay_without_the_bytes_fails_exactly_when_asked_for_them() {
    let mut rng = Rng(6);
    let mut touched_trials = 0;
    let mut untouched_trials = 0;
    for _ in 0..12 {
        let size = 2 * KIB + rng.below(600 * KIB);
        let data = blob(size, rng.next());
        let id = BlobId::of(&data);
        for (kind, copy) in damaged_copies(&data, &mut rng) {
            let damaged = damaged_chunks(&data, &copy);
            assert!(!damaged.is_empty());
            for _ in 0..16 {
                let n = 1 + rng.below(MAX_AUDIT_CHUNKS as u64) as usize;
                let request = ChunkRequest::random(size, n, || rng.next()).unwrap();
                let touched = request.chunks().iter().any(|c| damaged.contains(c));

                // A relay serving only its copy fails every audit: its
                // chaining values are wrong too.
                if let Ok(proof) = serving_copy(&copy, &request) {
                    assert_eq!(
                        verify(&id, &request, &proof),
                        Err(AuditError::RootMismatch),
                        "{kind}, size {size}"
                    );
                }

                // One that kept every chaining value fails exactly when a
                // requested chunk is one it lacks.
                let proof = kept_the_tree(&data, &copy, &request);
                let result = verify(&id, &request, &proof);
                if touched {
                    touched_trials += 1;
                    assert_eq!(result, Err(AuditError::RootMismatch), "{kind}, size {size}");
                } else {
                    untouched_trials += 1;
                    assert!(result.is_ok(), "{kind}, size {size}");
                }
            }
        }
    }
    // Both outcomes were exercised.
    assert!(touched_trials > 100 && untouched_trials > 10);
}

/// Odds that `k` chunks drawn without replacement from `n` miss all `m`
/// damaged ones: C(n - m, k) / C(n, k).
fn pass_odds(n: u64, m: u64, k: u64) -> f64 {
    (0..k)
        .map(|i| (n - m - i) as f64 / (n - i) as f64)
        .product()
}

#[test]
fn sixteen_random_chunks_catch_a_missing_tenth_at_the_hypergeometric_rate() {
    // 512 chunks, the last 52 (10.2%) missing: the relay cut the blob short
    // but kept the tree, the best it can do.
    let size = 512 * KIB - 300;
    let data = blob(size, 7);
    let id = BlobId::of(&data);
    let held = (512 - 52) * CHUNK_LEN as usize;
    let copy = &data[..held];
    let damaged = damaged_chunks(&data, copy);
    assert_eq!(damaged.len(), 52);

    let p_pass = pass_odds(512, 52, 16);
    assert!(p_pass < 0.9f64.powi(16)); // without replacement is harsher
    let trials = 400;
    let mut rng = Rng(8);
    let mut failures = 0;
    for _ in 0..trials {
        let request = ChunkRequest::random(size, 16, || rng.next()).unwrap();
        assert_eq!(request.chunks().len(), 16);
        let touched = request.chunks().iter().any(|c| damaged.contains(c));
        let passed = verify(&id, &request, &kept_the_tree(&data, copy, &request)).is_ok();
        assert_eq!(passed, !touched);
        failures += u32::from(!passed);
    }
    // Expected 400 × (1 − 0.178) ≈ 329 failures, standard deviation ≈ 7.7;
    // the seeds are fixed, and the bound is five deviations down.
    let expected = f64::from(trials) * (1.0 - p_pass);
    let sd = (f64::from(trials) * p_pass * (1.0 - p_pass)).sqrt();
    assert!(
        f64::from(failures) >= expected - 5.0 * sd,
        "{failures} failures of {trials}, expected {expected:.0}"
    );
    // Four such audits in a row leave a cheat ≈ 0.1% odds.
    assert!(p_pass.powi(4) < 0.0011);
}

// ---- tampering ------------------------------------------------------------

#[test]
fn every_single_byte_change_to_a_proof_is_refused() {
    let mut rng = Rng(9);
    for (size, n) in [
        (1, 1),
        (1000, 1),
        (1024, 1),
        (1025, 2),
        (5000, 2),
        (70_000, 4),
        (300_000, 3),
    ] {
        let data = blob(size, size);
        let id = BlobId::of(&data);
        let request = ChunkRequest::random(size, n, || rng.next()).unwrap();
        let proof = honest(&data, &request);
        for i in 0..proof.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = proof.clone();
                bad[i] ^= flip;
                assert_eq!(
                    verify(&id, &request, &bad),
                    Err(AuditError::RootMismatch),
                    "size {size}, byte {i}"
                );
            }
        }
    }
}

#[test]
fn a_proof_of_the_wrong_length_is_refused_before_reading() {
    let data = blob(5000, 10);
    let id = BlobId::of(&data);
    let request = ChunkRequest::new(5000, vec![2]).unwrap();
    let proof = honest(&data, &request);
    let expected = proof.len() as u64;
    let mut longer = proof.clone();
    longer.push(0);
    for (bad, got) in [
        (&proof[..proof.len() - 1], expected - 1),
        (&longer[..], expected + 1),
        (&[][..], 0),
    ] {
        assert_eq!(
            verify(&id, &request, bad),
            Err(AuditError::WrongLength { expected, got })
        );
    }
    // The empty blob's proof is empty; anything else is refused.
    let empty = ChunkRequest::new(0, vec![0]).unwrap();
    assert!(verify(&BlobId::of(b""), &empty, b"").is_ok());
    assert_eq!(
        verify(&BlobId::of(b""), &empty, b"x"),
        Err(AuditError::WrongLength {
            expected: 0,
            got: 1
        })
    );
}

#[test]
fn a_chaining_value_never_stands_in_for_a_requested_chunk() {
    // 4 chunks; asking for chunk 2 sends CV(0–1), chunk 2, CV(3). A relay
    // that knows every chaining value but not chunk 2's bytes cannot fit
    // CV(2) into the chunk's place, whatever it pads it with.
    let size = 4 * KIB;
    let data = blob(size, 11);
    let id = BlobId::of(&data);
    let request = ChunkRequest::new(size, vec![2]).unwrap();
    let proof = honest(&data, &request);
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(2 * CHUNK_LEN);
    hasher.update(&data[2048..3072]);
    let cv2 = hasher.finalize_non_root();

    let mut short = proof[..32].to_vec();
    short.extend_from_slice(&cv2);
    short.extend_from_slice(&proof[32 + 1024..]);
    assert!(matches!(
        verify(&id, &request, &short),
        Err(AuditError::WrongLength { .. })
    ));
    for pad in [0u8, 0xff] {
        let mut padded = proof[..32].to_vec();
        padded.extend_from_slice(&cv2);
        padded.resize(32 + 1024, pad);
        padded.extend_from_slice(&proof[32 + 1024..]);
        assert_eq!(
            verify(&id, &request, &padded),
            Err(AuditError::RootMismatch)
        );
    }
}

#[test]
fn a_proof_answers_only_its_own_request_and_blob() {
    let size = 20 * KIB;
    let data = blob(size, 12);
    let id = BlobId::of(&data);
    let asked = ChunkRequest::new(size, vec![3]).unwrap();
    let proof = honest(&data, &asked);
    // Chunk 4 sits in the same place in a tree of the same shape, with a
    // proof of the same length; the chunk counter still tells them apart.
    let other = ChunkRequest::new(size, vec![4]).unwrap();
    assert_eq!(proof_len(&other), proof.len() as u64);
    let other_proof = honest(&data, &other);
    assert_eq!(
        verify(&id, &asked, &other_proof),
        Err(AuditError::RootMismatch)
    );
    assert_eq!(
        verify(&BlobId::of(b"another blob"), &asked, &proof),
        Err(AuditError::RootMismatch)
    );
    // The same bytes claimed to be a blob of another size.
    let bigger = ChunkRequest::new(size + 1, vec![3]).unwrap();
    let bigger_proof = honest(&blob(size + 1, 12), &bigger);
    assert!(verify(&id, &bigger, &bigger_proof).is_err());
}

// ---- chunk lists -----------------------------------------------------------

#[test]
fn new_sorts_merges_and_checks() {
    let request = ChunkRequest::new(100 * KIB, vec![7, 3, 7, 0, 99]).unwrap();
    assert_eq!(request.chunks(), &[0, 3, 7, 99]);
    assert_eq!(request.size(), 100 * KIB);
    assert_eq!(request.to_query(), "0,3,7,99");
    for (size, chunks) in [
        (100 * KIB, vec![]),
        (100 * KIB, vec![100]),
        (0, vec![1]),
        (1 << 30, (0..65).collect()),
    ] {
        assert!(matches!(
            ChunkRequest::new(size, chunks),
            Err(AuditError::BadRequest(_))
        ));
    }
    assert!(ChunkRequest::new(1 << 30, (0..64).collect()).is_ok());
    assert!(ChunkRequest::new(1 << 30, [5; 200].to_vec()).is_ok());
}

#[test]
fn random_requests_are_distinct_clamped_and_spread_out() {
    let mut rng = Rng(13);
    // Clamped to the blob's chunks.
    let request = ChunkRequest::random(3000, 16, || rng.next()).unwrap();
    assert_eq!(request.chunks(), &[0, 1, 2]);
    let request = ChunkRequest::random(0, 16, || rng.next()).unwrap();
    assert_eq!(request.chunks(), &[0]);
    // Refused counts.
    for n in [0, MAX_AUDIT_CHUNKS + 1] {
        assert!(matches!(
            ChunkRequest::random(1 << 30, n, || rng.next()),
            Err(AuditError::BadRequest(_))
        ));
    }
    // Even a broken source gives distinct chunks, without looping.
    for value in [0, u64::MAX] {
        let request = ChunkRequest::random(1 << 20, 64, || value).unwrap();
        assert_eq!(request.chunks().len(), 64);
    }
    // Each of 8 chunks is picked about half the time in requests of 4.
    let mut picked = [0u32; 8];
    for _ in 0..4000 {
        let request = ChunkRequest::random(8 * KIB, 4, || rng.next()).unwrap();
        assert_eq!(request.chunks().len(), 4);
        for &c in request.chunks() {
            picked[c as usize] += 1;
        }
    }
    for count in picked {
        assert!((1850..=2150).contains(&count), "{picked:?}");
    }
}

#[test]
fn chunk_lists_are_refused_unless_canonical() {
    let size = 10 * MIB; // chunks 0..10240
    let sixty_five: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let cases = [
        "",
        ",",
        "1,",
        ",1",
        "1,,2",
        "01",
        "00",
        "1,02",
        "2,1",
        "1,1",
        "10240",
        "0,10240",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1, 2",
        "1;2",
        "0x10",
        "1.5",
        "١",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
        &sixty_five.join(","),
        &"1".repeat(MAX_QUERY_LEN + 1),
    ];
    for text in cases {
        assert!(
            matches!(
                ChunkRequest::parse(text, size),
                Err(AuditError::BadRequest(_))
            ),
            "{text:?} accepted"
        );
    }
    for (text, chunks) in [
        ("0", vec![0]),
        ("10239", vec![10239]),
        ("0,17,4095", vec![0, 17, 4095]),
    ] {
        let request = ChunkRequest::parse(text, size).unwrap();
        assert_eq!(request.chunks(), &chunks[..]);
        assert_eq!(request.to_query(), text);
    }
    assert!(ChunkRequest::parse("0", 0).is_ok());
    assert!(ChunkRequest::parse("1", 1024).is_err());
    assert!(ChunkRequest::parse("1", 1025).is_ok());
    // The longest list there can be still fits the limit.
    let top = u64::MAX / 1024 - 63;
    let longest: Vec<String> = (top..top + 64).map(|i| i.to_string()).collect();
    assert!(longest.join(",").len() <= MAX_QUERY_LEN);
    assert!(ChunkRequest::parse(&longest.join(","), u64::MAX).is_ok());
}

proptest! {
    #[test]
    fn chunk_lists_round_trip(
        size: u64,
        picks in proptest::collection::vec(any::<u64>(), 1..=MAX_AUDIT_CHUNKS),
    ) {
        let chunks = picks.iter().map(|p| p % chunk_count(size)).collect();
        let request = ChunkRequest::new(size, chunks).unwrap();
        let text = request.to_query();
        prop_assert!(text.len() <= MAX_QUERY_LEN);
        prop_assert_eq!(ChunkRequest::parse(&text, size).unwrap(), request);
    }

    #[test]
    fn parse_never_panics(text in "[0-9,]{0,40}|\\PC{0,40}", size: u64) {
        if let Ok(request) = ChunkRequest::parse(&text, size) {
            prop_assert_eq!(request.to_query(), text);
        }
    }
}

// ---- measurement -----------------------------------------------------------

/// Bytes of a 1 GiB blob made on the fly from its offset: a pseudo-random
/// pattern repeating every 1 MiB + 7 bytes, so no two chunks are equal and
/// no RAM is needed for the blob.
struct Pattern(Vec<u8>);

impl Pattern {
    fn new() -> Self {
        Self(blob(MIB + 7, 14))
    }

    fn read(&self, mut offset: u64, mut buf: &mut [u8]) {
        let period = self.0.len() as u64;
        while !buf.is_empty() {
            let at = (offset % period) as usize;
            let n = buf.len().min(self.0.len() - at);
            let (head, rest) = buf.split_at_mut(n);
            head.copy_from_slice(&self.0[at..at + n]);
            buf = rest;
            offset += n as u64;
        }
    }
}

/// Proof size and prove / verify times for 16 random chunks of a 1 GiB
/// blob, against a plain hash of the same bytes. Run with
/// `cargo test -p cairn-proto --release -- --ignored measure_gib_audit --nocapture`.
#[test]
#[ignore = "a release-mode measurement"]
// The numbers are the point of this test.
#[allow(clippy::print_stderr)]
fn measure_gib_audit() {
    use std::time::Instant;

    let size = 1 << 30;
    let pattern = Pattern::new();
    let mut buf = vec![0; 1 << 20];

    let started = Instant::now();
    let mut offset = 0;
    while offset < size {
        pattern.read(offset, &mut buf);
        offset += buf.len() as u64;
    }
    let generate = started.elapsed();

    let started = Instant::now();
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0;
    while offset < size {
        pattern.read(offset, &mut buf);
        hasher.update(&buf);
        offset += buf.len() as u64;
    }
    let id = BlobId::from(hasher.finalize());
    let hash = started.elapsed();

    let mut rng = Rng(15);
    let request = ChunkRequest::random(size, 16, || rng.next()).unwrap();
    let mut reads = 0;
    let started = Instant::now();
    let proof = prove(&request, |offset, buf| {
        reads += 1;
        pattern.read(offset, buf);
        Ok::<_, Infallible>(())
    })
    .unwrap();
    let proving = started.elapsed();

    let started = Instant::now();
    let chunks = verify(&id, &request, &proof).unwrap();
    let verifying = started.elapsed();
    assert_eq!(chunks.len(), 16);

    let cvs = (proof.len() - 16 * 1024) / 32;
    eprintln!(
        "1 GiB, 16 random chunks: proof {} bytes (16 KiB of chunks + {cvs} chaining values), \
         {reads} reads",
        proof.len()
    );
    eprintln!(
        "prove {proving:?}, verify {verifying:?}; plain blake3 of the same bytes {hash:?} \
         (of which generating them {generate:?})"
    );
}
