//! The chunked-file formats of PROTOCOL.md §10.8, measured before files
//! are stored as chunks: how fast the keyed chunker cuts (against BLAKE3
//! on one core, which every byte of a put passes through anyway), and how
//! much of a file a 1-byte edit in its middle changes (against the whole
//! file, which a put sends today).

use std::collections::HashSet;
use std::time::Instant;

use cairn_client::chunking::Chunker;

use super::stats::Row;
use super::{Plan, blake3_single_core, pairwise, row};

/// Pseudo-random bytes: chunk boundaries on them fall as on compressed
/// or encrypted data, the worst case for finding shared chunks.
fn noise(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"cairn-bench chunking")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The chunks of `data`, by content hash, with their lengths.
fn chunks(chunker: &Chunker, data: &[u8]) -> Vec<(blake3::Hash, usize)> {
    let mut at = 0;
    chunker
        .lengths(data)
        .into_iter()
        .map(|n| {
            at += n;
            (blake3::hash(&data[at - n..at]), n)
        })
        .collect()
}

pub(crate) fn chunking(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let size = plan.client_size;
    let mut data = noise(size);
    let chunker = Chunker::new(&[7; 32]);
    let mib = size >> 20;
    let (cut, hashed) = pairwise(
        plan.pairs,
        || {
            let started = Instant::now();
            std::hint::black_box(chunker.lengths(&data));
            Ok(size as f64 / started.elapsed().as_secs_f64() / 1e6)
        },
        || Ok(blake3_single_core(&data)),
    )?;
    let before = chunks(&chunker, &data);
    let known: HashSet<blake3::Hash> = before.iter().map(|(h, _)| *h).collect();
    data[size / 2] ^= 1;
    let after = chunks(&chunker, &data);
    let resent: usize = after
        .iter()
        .filter(|(h, _)| !known.contains(h))
        .map(|(_, n)| n)
        .sum();
    let mean = size as f64 / before.len() as f64 / f64::from(1 << 20);
    Ok(vec![
        row(
            &format!("keyed chunking of {mib} MiB"),
            "MB/s",
            "BLAKE3, one core",
            true,
            cut,
            hashed,
        ),
        row(
            &format!("chunks changed by a 1-byte edit, {mib} MiB ({mean:.1} MiB mean)"),
            "bytes",
            "whole file (put today)",
            false,
            vec![resent as f64],
            vec![size as f64],
        ),
    ])
}
