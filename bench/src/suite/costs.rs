//! Figures measured against a fixed reference rather than another program:
//! the naive alternative (a full id list), a goal (one request per relay,
//! an idle footprint), or cairn itself at another scale (GC among few and
//! among many stored blobs).

use std::time::{Duration, Instant};

use anyhow::bail;

use super::Plan;
use super::stats::Row;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn one(figure: String, unit: &'static str, reference: &str, cairn: f64, against: f64) -> Row {
    Row {
        figure,
        unit,
        reference: reference.into(),
        higher_is_better: false,
        cairn: vec![cairn],
        against: vec![against],
    }
}

/// Reconciliation bytes against sending a full id list.
pub(crate) fn reconciliation(plan: &Plan) -> anyhow::Result<Row> {
    let ids = plan.reconcile_ids;
    let diff = ids / 1000;
    let f = runtime()?.block_on(crate::federation_bench::measure_reconcile(ids, diff))?;
    Ok(one(
        format!("reconcile {ids} vs {ids} ids, {diff} differ"),
        "bytes",
        "full id list (32 B an id)",
        f.exchanged as f64,
        f.id_list as f64,
    ))
}

/// A new device's first sync and a sync with nothing new.
pub(crate) fn sync(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let entries = plan.sync_entries;
    let f = runtime()?.block_on(crate::sync_bench::measure_sync(entries, false))?;
    Ok(vec![
        one(
            format!("no-change sync, {entries} entries, 1 relay"),
            "requests",
            "goal: one per relay",
            f.unchanged_requests as f64,
            1.0,
        ),
        one(
            format!("no-change sync, {entries} entries, bytes"),
            "bytes",
            "first sync's bytes",
            f.unchanged_bytes as f64,
            f.first_bytes as f64,
        ),
        one(
            format!("new device's first sync, {entries} entries"),
            "s",
            "no reference yet",
            f.first_secs,
            f64::NAN,
        ),
    ])
}

/// A relay process's resident memory a moment after it starts.
pub(crate) fn idle_rss(work: &std::path::Path) -> anyhow::Result<Row> {
    let relay = super::servers::relay(work, "idle")?;
    std::thread::sleep(Duration::from_secs(1));
    let Some(rss) = relay.rss_bytes() else {
        bail!("cannot read the relay's memory from /proc");
    };
    relay.terminate();
    Ok(one(
        "relay idle RSS".into(),
        "MiB",
        "goal: 16 MiB",
        rss as f64 / f64::from(1u32 << 20),
        16.0,
    ))
}

/// One GC pass deleting `expired` blobs among `stored`: its duration.
pub(crate) async fn gc_pass(stored: usize, expired: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let mut config = cairn_relay::RelayConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.retention = Duration::from_secs(1000);
    config.capacity_bytes = u64::MAX / 2;
    config.gc_interval = Duration::from_secs(86_400);
    let clock = cairn_relay::Clock::manual(cairn_testkit::unix_now());
    let relay = cairn_relay::start_with_clock(config, clock.clone()).await?;
    let batch = |from: usize, to: usize| -> Vec<Vec<u8>> {
        (from..to)
            .map(|i| format!("gc suite {stored} {i}").into_bytes())
            .collect()
    };
    const CHUNK: usize = 20_000;
    let seed = |from: usize, to: usize| -> Vec<Vec<Vec<u8>>> {
        (from..to)
            .step_by(CHUNK)
            .map(|start| batch(start, (start + CHUNK).min(to)))
            .collect()
    };
    for blobs in seed(0, expired) {
        relay.seed_blobs(blobs, None).await?;
    }
    clock.advance(500);
    for blobs in seed(expired, stored) {
        relay.seed_blobs(blobs, None).await?;
    }
    clock.advance(600);
    let started = Instant::now();
    let report = relay.run_gc().await?;
    let elapsed = started.elapsed();
    relay.shutdown().await;
    if report.deleted_blobs != expired as u64 {
        bail!(
            "expected {expired} deletions, GC made {}",
            report.deleted_blobs
        );
    }
    Ok(elapsed)
}

/// GC of the same number of expired blobs among few and among many stored.
pub(crate) fn gc(plan: &Plan) -> anyhow::Result<Row> {
    let expired = 10_000;
    let runtime = runtime()?;
    let (mut few, mut many) = (Vec::new(), Vec::new());
    for _ in 0..plan.pairs.min(3) {
        many.push(
            runtime
                .block_on(gc_pass(plan.gc_stored, expired))?
                .as_secs_f64()
                * 1e3,
        );
        few.push(runtime.block_on(gc_pass(expired, expired))?.as_secs_f64() * 1e3);
    }
    Ok(Row {
        figure: format!("GC of {expired} expired among {}", plan.gc_stored),
        unit: "ms",
        reference: format!("among {expired} (goal ≤ 3x)"),
        higher_is_better: false,
        cairn: many,
        against: few,
    })
}
