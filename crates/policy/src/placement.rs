//! Where a relay's replicas of a blob go (docs/PROTOCOL.md §7.8,
//! "Replication"): weighted rendezvous hashing over its peers, so that
//! each blob has a stable set of designated peers, spread evenly, shifted
//! toward peers of higher standing, and moved as little as possible when
//! a peer comes or goes.

/// The rendezvous score of `peer` for blob `id` with `weight` (its
/// standing): the peers with the highest scores hold the replicas.
///
/// `-weight / ln(u)` for `u` uniform in (0, 1) drawn from the blob and the
/// peer: a peer's chance of scoring highest is proportional to its weight.
#[must_use]
pub fn rendezvous_score(id: &[u8; 32], peer: &[u8; 32], weight: f64) -> f64 {
    let mut hasher = blake3::Hasher::new_derive_key("cairn/v1 replica placement");
    hasher.update(id);
    hasher.update(peer);
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    // 53 bits of mantissa, shifted off zero so the logarithm is finite.
    let u = ((u64::from_le_bytes(eight) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

/// The indexes into `peers` (key and weight each) of the `replicas` peers
/// designated for blob `id`, highest score first.
#[must_use]
pub fn designate(id: &[u8; 32], peers: &[([u8; 32], f64)], replicas: usize) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = peers
        .iter()
        .enumerate()
        .map(|(i, (key, weight))| (rendezvous_score(id, key, *weight), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(replicas).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(n: u32) -> [u8; 32] {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn blobs_spread_over_equal_peers_and_lean_to_weight() {
        let peers: Vec<([u8; 32], f64)> = (0..4).map(|p| ([p; 32], 1.0)).collect();
        let mut counts = [0usize; 4];
        for n in 0..4000 {
            counts[designate(&id(n), &peers, 1)[0]] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "uneven spread: {counts:?}");
        }
        let mut weighted = peers.clone();
        weighted[0].1 = 3.0;
        let first = (0..4000)
            .filter(|&n| designate(&id(n), &weighted, 1)[0] == 0)
            .count();
        // 3 / (3 + 1 + 1 + 1) of the blobs, about 2,000.
        assert!((1800..2200).contains(&first), "{first}");
    }

    proptest! {
        /// Removing a peer moves only the blobs it was designated for.
        #[test]
        fn a_peer_leaving_moves_only_its_own_blobs(n in any::<u32>(), gone in 0usize..5) {
            let peers: Vec<([u8; 32], f64)> = (0u8..5).map(|p| ([p; 32], 1.0 + f64::from(p))).collect();
            let before = designate(&id(n), &peers, 2);
            let mut rest = peers.clone();
            rest.remove(gone);
            let after: Vec<[u8; 32]> = designate(&id(n), &rest, 2).into_iter().map(|i| rest[i].0).collect();
            for kept in before.iter().filter(|&&i| i != gone) {
                prop_assert!(after.contains(&peers[*kept].0));
            }
        }
    }
}
