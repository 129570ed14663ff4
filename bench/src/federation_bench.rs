//! Federation costs between two relays on loopback: reconciliation traffic
//! for large sets with a small difference (against the size of a full id
//! list, the naive alternative), and transfer-of-responsibility throughput
//! (against a plain upload of the same bytes to the same peer).

use std::time::Instant;

use anyhow::Context as _;
use cairn_proto::RelayRef;
use cairn_relay::{RelayConfig, RelayHandle};
use futures_util::StreamExt as _;

async fn relay(
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut RelayConfig),
) -> anyhow::Result<RelayHandle> {
    let mut config = RelayConfig::new(dir);
    config.listen = "127.0.0.1:0".parse()?;
    // Everything here is measured on demand, not by the periodic tasks.
    config.federation.reconcile_interval = std::time::Duration::from_secs(86_400);
    config.federation.peer_refresh_interval = std::time::Duration::from_secs(86_400);
    config.limits = cairn_proto::FairShareLimits::default();
    adjust(&mut config);
    Ok(cairn_relay::start(config).await?)
}

fn as_peer(relay: &RelayHandle) -> anyhow::Result<RelayRef> {
    Ok(RelayRef {
        url: cairn_proto::RelayUrl::new(relay.url())?,
        key: relay.key(),
    })
}

/// Seeds `count` blobs from `start` in batches (bounded memory).
async fn seed(
    relay: &RelayHandle,
    start: usize,
    count: usize,
    from_peer: Option<cairn_proto::VerifyingKey>,
) -> anyhow::Result<()> {
    const BATCH: usize = 20_000;
    let mut i = start;
    while i < start + count {
        let end = (i + BATCH).min(start + count);
        let blobs = (i..end)
            .map(|n| format!("federation bench {n}").into_bytes())
            .collect();
        relay.seed_blobs(blobs, from_peer).await?;
        i = end;
    }
    Ok(())
}

/// What one reconciliation cost.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReconcileFigures {
    /// Bytes both ways.
    pub(crate) exchanged: u64,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) rounds: u64,
    pub(crate) pushed: u64,
    pub(crate) extra: u64,
    /// Seconds, including pushing what was missing.
    pub(crate) secs: f64,
    /// Bytes of one side's full id list, the naive alternative.
    pub(crate) id_list: u64,
}

/// Reconciliation: two relays with `ids` blob ids each, differing in
/// `diff` (half missing on each side).
pub(crate) async fn reconcile_bench(ids: usize, diff: usize) -> anyhow::Result<()> {
    let f = measure_reconcile(ids, diff).await?;
    println!("reconciliation, {ids} vs {ids} ids differing in {diff}:");
    println!(
        "  cairn    {:>10} bytes in {} rounds ({} sent, {} received); {} missing pushed, {} extra; {:.2} s incl. pushes",
        f.exchanged, f.rounds, f.sent, f.received, f.pushed, f.extra, f.secs
    );
    println!(
        "  id list  {:>10} bytes (one side sending all its ids)  -> cairn is {:.2}% of it",
        f.id_list,
        f.exchanged as f64 * 100.0 / f.id_list as f64
    );
    Ok(())
}

/// Seeds two relays and reconciles them once.
pub(crate) async fn measure_reconcile(ids: usize, diff: usize) -> anyhow::Result<ReconcileFigures> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = relay(dirs.0.path(), |c| c.federation.replicas = 1).await?;
    let b = relay(dirs.1.path(), |c| c.federation.replicas = 1).await?;
    let peers = [as_peer(&a)?, as_peer(&b)?];
    a.set_peers(&peers);
    b.set_peers(&peers);
    let half = diff / 2;
    let started = Instant::now();
    seed(&a, 0, ids, None).await?;
    seed(&b, half, ids, Some(a.key())).await?;
    println!(
        "seeded {ids} + {ids} blob ids ({diff} differ) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let reports = a.reconcile().await;
    let elapsed = started.elapsed();
    let (_, report) = reports.into_iter().next().context("no peer reconciled")?;
    let report = report.map_err(anyhow::Error::msg)?;
    let figures = ReconcileFigures {
        exchanged: report.bytes_sent + report.bytes_received,
        sent: report.bytes_sent,
        received: report.bytes_received,
        rounds: report.rounds,
        pushed: report.pushed,
        extra: report.extra,
        secs: elapsed.as_secs_f64(),
        id_list: (ids * 32) as u64,
    };
    a.shutdown().await;
    b.shutdown().await;
    Ok(figures)
}

/// Transfer throughput: A holds `count` blobs of `size` bytes above its
/// high-water mark and moves them all to B; compared with uploading the
/// same bytes to B with plain PUTs.
pub(crate) async fn transfer_bench(size: usize, count: usize) -> anyhow::Result<()> {
    let total = (size * count) as u64;
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = relay(dirs.0.path(), |c| {
        c.capacity_bytes = total + total / 10;
        c.federation.replicas = 0;
        // Everything goes once a pass starts.
        c.federation.high_water_permille = 1;
        c.federation.low_water_permille = 0;
    })
    .await?;
    let b = relay(dirs.1.path(), |c| {
        c.capacity_bytes = total * 4;
        c.federation.replicas = 0;
    })
    .await?;
    let peers = [as_peer(&a)?, as_peer(&b)?];
    a.set_peers(&peers);
    b.set_peers(&peers);
    let blobs: Vec<Vec<u8>> = (0..count)
        .map(|i| crate::blob("transfer bench", i, size))
        .collect();
    a.seed_blobs(blobs.clone(), None).await?;
    a.refresh_peers().await;
    let started = Instant::now();
    let report = a.relieve().await;
    let elapsed = started.elapsed().as_secs_f64();
    let mb = |bytes: u64, secs: f64| bytes as f64 / 1e6 / secs;
    println!("transfer of responsibility, {count} blobs of {size} bytes, A -> B on loopback:");
    println!(
        "  cairn transfer   {:>8.1} MB/s ({} blobs, {} bytes in {elapsed:.2} s; push + receipt + read-back + forward)",
        mb(report.bytes, elapsed),
        report.moved,
        report.bytes
    );

    // Reference: the same bytes uploaded to a fresh relay with plain PUTs,
    // as many at once as a transfer pass runs (4).
    let c_dir = tempfile::tempdir()?;
    let c = relay(c_dir.path(), |c| c.capacity_bytes = total * 4).await?;
    let http = cairn_testkit::http();
    let key = cairn_testkit::key("transfer bench reference");
    let (c_key, c_url) = (c.key(), c.url());
    let started = Instant::now();
    let uploads = futures_util::stream::iter(blobs)
        .map(|data| {
            let (http, key, c_url) = (&http, &key, &c_url);
            async move {
                let id = cairn_proto::BlobId::of(&data);
                let token = cairn_testkit::token(
                    &c_key,
                    cairn_proto::Method::Put,
                    cairn_proto::TokenTarget::Blob(id),
                    cairn_testkit::unix_now() + 300,
                );
                let response = http
                    .put(format!("{c_url}/v1/blobs/{id}"))
                    .header("authorization", cairn_testkit::auth_header(&token, key))
                    .body(data)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "reference upload: {}",
                    response.status()
                );
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<anyhow::Result<()>>>()
        .await;
    for upload in uploads {
        upload?;
    }
    let reference = started.elapsed().as_secs_f64();
    println!(
        "  plain PUTs       {:>8.1} MB/s (same bytes, 4 uploads at a time to a relay)",
        mb(total, reference)
    );
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
    Ok(())
}
