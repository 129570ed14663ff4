//! Storage-audit proofs.
//!
//! Feeds untrusted bytes to the audit verifier as a relay's proof, for a
//! size and chunk request taken from the input's first bytes, and to the
//! chunk-list parser as query text. Neither may panic; what parses must
//! print back as exactly the input, and a proof that verifies must have
//! returned exactly the requested chunks.

use cairn_proto::BlobId;
use cairn_proto::audit::{AuditError, CHUNK_LEN, ChunkRequest, chunk_count, proof_len, verify};

/// Takes `N` bytes from the front of `data`, zero-padded.
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0; N];
    let n = data.len().min(N);
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

/// A proof for a size and chunk request from the input's first bytes,
/// then the same bytes as `?chunks=` text.
pub fn audit_proof(input: &[u8]) {
    let mut data = input;
    // Sizes: mostly small trees the fuzzer can fill with a whole proof, and
    // now and then anything up to u64::MAX.
    let [shape] = take::<1>(&mut data);
    let raw = u64::from_le_bytes(take::<8>(&mut data));
    let size = if shape & 0x80 == 0 {
        raw % (64 * CHUNK_LEN + 1)
    } else {
        raw
    };
    let picks = usize::from(shape & 0x07) + 1;
    let chunks: Vec<u64> = (0..picks)
        .map(|_| u64::from(u16::from_le_bytes(take::<2>(&mut data))) % chunk_count(size))
        .collect();
    let request = ChunkRequest::new(size, chunks).expect("chunks within the blob");
    let proof = data;

    // The fixed id of no particular blob: every proof should be refused,
    // and none may panic the verifier.
    let id = BlobId::of(b"cairn audit fuzz");
    match verify(&id, &request, proof) {
        Ok(chunks) => {
            // Only a BLAKE3 preimage gets here; if one does, the answer
            // must still have the requested shape.
            assert_eq!(chunks.len(), request.chunks().len());
        }
        Err(AuditError::WrongLength { expected, got }) => {
            assert_eq!(expected, proof_len(&request));
            assert_eq!(got, proof.len() as u64);
            assert_ne!(expected, got);
        }
        Err(_) => {}
    }

    // The same bytes as query text, for the size above and for the largest
    // blob (where every index below 2^54 is in range).
    if let Ok(text) = std::str::from_utf8(input) {
        for size in [size, u64::MAX] {
            if let Ok(parsed) = ChunkRequest::parse(text, size) {
                assert_eq!(parsed.to_query(), text, "non-canonical chunk list accepted");
                assert_eq!(parsed.size(), size);
            }
        }
    }
}
