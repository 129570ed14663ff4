//! Audit cost: proving that a relay holds a blob with a slice proof of
//! random chunks, against the reference of reading the whole blob back and
//! hashing it (what a client without proofs must do).

use std::time::Instant;

use anyhow::Context as _;
use cairn_proto::BlobId;
use cairn_proto::audit::{ChunkRequest, proof_len, verify};
use cairn_relay::RelayConfig;

pub(crate) async fn audit_bench(size: usize, chunks: usize, rounds: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = RelayConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.capacity_bytes = (size as u64) * 2 + (1 << 30);
    config.max_blob_size = size as u64 + 1;
    let relay = cairn_relay::start(config).await?;
    let data = crate::blob("audit bench", 0, size);
    let id = BlobId::of(&data);
    relay.seed_blobs(vec![data], None).await?;
    let http = cairn_testkit::http();
    let url = format!("{}/v1/blobs/{id}", relay.url());
    println!("audit of one {size}-byte blob on a relay on loopback ({rounds} rounds each):");

    let mut proof_secs = 0.0;
    let mut proof_bytes = 0;
    for round in 0..rounds {
        let mut n = round as u64;
        let request = ChunkRequest::random(size as u64, chunks, || {
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            n
        })?;
        let started = Instant::now();
        let proof = http
            .get(format!("{url}/proof?chunks={}", request.to_query()))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        verify(&id, &request, &proof).context("the proof must verify")?;
        proof_secs += started.elapsed().as_secs_f64();
        proof_bytes = proof.len();
        anyhow::ensure!(proof.len() as u64 == proof_len(&request));
    }
    println!(
        "  audit, {chunks} random chunks  {proof_bytes:>12} bytes  {:>8.3} s per audit (relay hashes the blob; client verifies in < 1 ms)",
        proof_secs / rounds as f64
    );

    let mut read_secs = 0.0;
    let mut read_bytes = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let mut response = http.get(&url).send().await?.error_for_status()?;
        let mut hasher = blake3::Hasher::new();
        let mut got = 0;
        while let Some(chunk) = response.chunk().await? {
            hasher.update(&chunk);
            got += chunk.len();
        }
        anyhow::ensure!(
            BlobId::from(hasher.finalize()) == id,
            "full read must verify"
        );
        read_secs += started.elapsed().as_secs_f64();
        read_bytes = got;
    }
    println!(
        "  full read + hash            {read_bytes:>12} bytes  {:>8.3} s per read",
        read_secs / rounds as f64
    );
    println!(
        "  -> an audit moves {:.4}% of the bytes of a full read",
        proof_bytes as f64 * 100.0 / read_bytes as f64
    );
    relay.shutdown().await;
    Ok(())
}
