//! Sync cost: a new device's first sync of a vault with many entries, and
//! a sync when nothing changed, measured in time, requests and bytes the
//! relay sent (from its own metrics).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_client::{Client, Home, InitOptions, KdfCost, Passphrase, Silent};
use cairn_relay::RelayConfig;

const PASSPHRASE: &str = "bench";

fn options(name: &str) -> anyhow::Result<InitOptions> {
    Ok(InitOptions {
        device_name: name.into(),
        // Key files are opened once here; their cost is not what is measured.
        cost: KdfCost::new(10)?,
        transport: cairn_client::relay::Transport::Secure,
    })
}

/// Requests answered and body bytes (blobs and heads) sent so far by the
/// relay at `url`.
async fn relay_counters(url: &str) -> anyhow::Result<(u64, u64)> {
    let text = cairn_testkit::http()
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut requests = 0;
    let mut bytes = 0;
    for line in text.lines() {
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok());
        if line.starts_with("cairn_http_requests_total{") && !line.contains("route=\"/metrics\"") {
            requests += value().unwrap_or(0);
        } else if line.starts_with("cairn_bytes_sent_total")
            || line.starts_with("cairn_head_bytes_sent_total")
        {
            bytes += value().unwrap_or(0);
        }
    }
    Ok((requests, bytes))
}

async fn measured(
    url: &str,
    client: &mut Client,
) -> anyhow::Result<(Duration, u64, u64, cairn_client::SyncReport)> {
    let (r0, b0) = relay_counters(url).await?;
    let started = Instant::now();
    let report = client.sync().await?;
    let elapsed = started.elapsed();
    let (r1, b1) = relay_counters(url).await?;
    Ok((elapsed, r1 - r0, b1 - b0, report))
}

/// What syncing a vault of some entries cost.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyncFigures {
    pub(crate) first_secs: f64,
    pub(crate) first_bytes: u64,
    pub(crate) unchanged_requests: u64,
    pub(crate) unchanged_bytes: u64,
}

pub(crate) async fn sync_bench(entries: usize) -> anyhow::Result<()> {
    measure_sync(entries, true).await.map(drop)
}

/// Stores `entries` files from one device, joins a second, and measures
/// its first sync and then a sync with nothing new; prints as it goes when
/// `verbose`.
pub(crate) async fn measure_sync(entries: usize, verbose: bool) -> anyhow::Result<SyncFigures> {
    let dir = tempfile::tempdir()?;
    let mut config = RelayConfig::new(dir.path().join("relay"));
    config.listen = "127.0.0.1:0".parse()?;
    config.limits.key_requests_per_min = 0;
    config.limits.addr_requests_per_min = 0;
    let relay = cairn_relay::start(config).await?;
    let url = relay.url();

    let passphrase = Passphrase::new(PASSPHRASE);
    let (mut first, _) = Client::init(
        Home::at(dir.path().join("first")),
        &passphrase,
        &options("first")?,
    )?;
    first.add_relay(&url, false).await?;
    first.set_replicas(1)?;

    if verbose {
        println!("storing {entries} files from the first device…");
    }
    let started = Instant::now();
    let files_dir = dir.path().join("files");
    std::fs::create_dir_all(&files_dir)?;
    let mut batch = Vec::new();
    for i in 0..entries {
        let path = files_dir.join(format!("file-{i:05}"));
        std::fs::write(&path, format!("file {i}"))?;
        batch.push((path, format!("dir/file-{i:05}")));
        // `cairn put` of many files at once: one sync, one state save.
        if batch.len() == 500 || i + 1 == entries {
            first.put_many(&batch, Arc::new(Silent)).await?;
            batch.clear();
        }
    }
    let storing = started.elapsed();
    if verbose {
        println!(
            "  {entries} files in {:.1} s ({:.0} files/s, each: seal, upload, one operation)",
            storing.as_secs_f64(),
            entries as f64 / storing.as_secs_f64()
        );
    }

    // A second device joins, then syncs for the first time.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let home = Home::at(dir.path().join("second"));
    let join_url = url.clone();
    let join = tokio::spawn(async move {
        Client::join(
            home,
            &Passphrase::new(PASSPHRASE),
            &options("second")?,
            &join_url,
            Duration::from_secs(60),
            move |code| {
                let _ = tx.send(code.clone());
            },
        )
        .await
        .map_err(anyhow::Error::from)
    });
    let code = rx.await.context("the joining device stopped")?;
    first.approve(&code, Duration::from_secs(60)).await?;
    let mut second = join.await??;

    let (first_time, first_requests, first_bytes, first_report) =
        measured(&url, &mut second).await?;
    // The new device claims the first device's copies a few hundred per
    // sync; the syncs that follow finish that before nothing is left to do.
    let (mut claiming_syncs, mut claiming_time, mut claiming_requests) = (0, 0.0, 0);
    let mut claims = (first_report.claimed, first_report.claims_pending);
    while claims.1 > 0 {
        let (time, requests, _, report) = measured(&url, &mut second).await?;
        anyhow::ensure!(
            report.claims_pending < claims.1,
            "claims stopped making progress: {} left",
            report.claims_pending
        );
        claiming_syncs += 1;
        claiming_time += time.as_secs_f64();
        claiming_requests += requests;
        claims = (claims.0 + report.claimed, report.claims_pending);
    }
    let (time, requests, bytes, report) = measured(&url, &mut second).await?;
    if verbose {
        println!("\nnew device, first sync of a {entries}-entry vault (1 relay, loopback):");
        println!(
            "  {:.3} s, {first_requests} requests, {:.2} MB sent by the relay; snapshot applied: {}, \
             operations merged after it: {}, files: {}, copies claimed: {}",
            first_time.as_secs_f64(),
            first_bytes as f64 / 1e6,
            first_report.snapshot_applied,
            first_report.merged,
            first_report.files,
            first_report.claimed
        );
        println!(
            "then {claiming_syncs} more sync(s) to claim the rest: {:.2} s, {claiming_requests} \
             requests; {} copies claimed in all",
            claiming_time, claims.0
        );
        println!("no-change sync:");
        println!(
            "  {:.1} ms, {requests} request(s), {} bytes sent by the relay; merged: {}",
            time.as_secs_f64() * 1e3,
            bytes,
            report.merged
        );
    }
    relay.shutdown().await;
    Ok(SyncFigures {
        first_secs: first_time.as_secs_f64(),
        first_bytes,
        unchanged_requests: requests,
        unchanged_bytes: bytes,
    })
}
