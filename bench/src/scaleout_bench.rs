//! `cairn-bench scaleout`: the embedded backend (one process) against the
//! scale-out backend (PostgreSQL + S3, two processes sharing one identity),
//! the same requests against each, relay processes started from the
//! release binaries next to this one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cairn_proto::BlobId;
use cairn_testkit::RelayProcess;

use crate::suite::{UNLIMITED, sibling};
use crate::{Target, blob, put};

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!(
            "{name} is not set: start the backends with \
             `CAIRN_BACKENDS_DURABLE=1 bash scripts/backends.sh start DIR` and `source DIR/env`"
        )
    })
}

/// The `serve` flags for the scale-out backends in a fresh schema/prefix.
fn scale_out_args(name: &str) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        "--postgres".into(),
        env("CAIRN_TEST_PG_URL")?,
        "--postgres-schema".into(),
        name.into(),
        "--s3-endpoint".into(),
        env("CAIRN_TEST_S3_ENDPOINT")?,
        "--s3-bucket".into(),
        env("CAIRN_TEST_S3_BUCKET")?,
        "--s3-region".into(),
        env("CAIRN_TEST_S3_REGION")?,
        "--s3-prefix".into(),
        name.into(),
        "--s3-access-key".into(),
        env("CAIRN_TEST_S3_ACCESS_KEY")?,
        "--s3-secret-key".into(),
        env("CAIRN_TEST_S3_SECRET_KEY")?,
    ])
}

/// Downloads every id (round robin over `urls`) with `concurrency` in
/// flight, counting bytes without keeping them.
async fn get_all(
    urls: &[String],
    ids: &[BlobId],
    concurrency: usize,
) -> anyhow::Result<(Duration, u64)> {
    let http = cairn_testkit::http_builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let requests: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .enumerate()
            .map(|(i, id)| format!("{}/v1/blobs/{id}", urls[i % urls.len()]))
            .collect(),
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, next, bytes, failures, requests) = (
            http.clone(),
            Arc::clone(&next),
            Arc::clone(&bytes),
            Arc::clone(&failures),
            Arc::clone(&requests),
        );
        workers.push(tokio::spawn(async move {
            while let Some(url) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                let Ok(mut response) = http.get(url).send().await else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if !response.status().is_success() {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                while let Ok(Some(chunk)) = response.chunk().await {
                    bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} downloads failed");
    }
    Ok((started.elapsed(), bytes.load(Ordering::Relaxed)))
}

/// The ids `put` uploads for (`label`, `size`, `count`).
fn ids(label: &str, size: usize, count: usize) -> Vec<BlobId> {
    let shared_large = size > (1 << 20);
    (0..count)
        .map(|i| {
            let mut body = blob(label, if shared_large { 0 } else { i }, size);
            if shared_large {
                body[..8].copy_from_slice(&(i as u64).to_be_bytes());
            }
            BlobId::of(&body)
        })
        .collect()
}

/// One backend's four figures.
struct Figures {
    put_small: f64,
    get_small: f64,
    put_large: f64,
    get_large: f64,
}

async fn measure(
    urls: &[String],
    label: &str,
    small: usize,
    large: usize,
) -> anyhow::Result<Figures> {
    const KIB: usize = 1024;
    const LARGE: usize = 64 << 20;
    let (elapsed, failed, _) = put(urls, Target::Cairn, KIB, small, 64, label).await?;
    if failed > 0 {
        bail!("{failed} uploads of 1 KiB failed");
    }
    let put_small = small as f64 / elapsed.as_secs_f64();
    let (elapsed, _) = get_all(urls, &ids(label, KIB, small), 64).await?;
    let get_small = small as f64 / elapsed.as_secs_f64();
    let large_label = format!("{label}-large");
    let (elapsed, failed, _) = put(urls, Target::Cairn, LARGE, large, 4, &large_label).await?;
    if failed > 0 {
        bail!("{failed} uploads of 64 MiB failed");
    }
    let put_large = (large * LARGE) as f64 / elapsed.as_secs_f64() / 1e6;
    let (elapsed, bytes) = get_all(urls, &ids(&large_label, LARGE, large), 4).await?;
    let get_large = bytes as f64 / elapsed.as_secs_f64() / 1e6;
    Ok(Figures {
        put_small,
        get_small,
        put_large,
        get_large,
    })
}

pub(crate) async fn scaleout_bench(small: usize, large: usize) -> anyhow::Result<()> {
    let bin = sibling("cairn-relay")?;
    let args = scale_out_args(&format!("bench{}", cairn_testkit::unix_now()))?;
    let dir = tempfile::tempdir()?;
    let embedded = RelayProcess::spawn(&bin, &dir.path().join("embedded"), UNLIMITED);
    let mut shared: Vec<&str> = args.iter().map(String::as_str).collect();
    shared.extend_from_slice(UNLIMITED);
    let a = RelayProcess::spawn(&bin, &dir.path().join("a"), &shared);
    std::fs::create_dir_all(dir.path().join("b"))?;
    std::fs::copy(
        dir.path().join("a/relay.key"),
        dir.path().join("b/relay.key"),
    )?;
    let b = RelayProcess::spawn(&bin, &dir.path().join("b"), &shared);

    println!("{small} × 1 KiB (64 in flight) and {large} × 64 MiB (4 in flight), PUT then GET");
    let one = measure(&[embedded.url()], "embedded", small, large).await?;
    let two = measure(&[a.url(), b.url()], "scaleout", small, large).await?;
    println!(
        "{:<34} {:>14} {:>14} {:>14} {:>14}",
        "backend", "PUT 1 KiB/s", "GET 1 KiB/s", "PUT 64M MB/s", "GET 64M MB/s"
    );
    for (name, f) in [
        ("embedded, 1 process", &one),
        ("PostgreSQL + S3, 2 processes", &two),
    ] {
        println!(
            "{name:<34} {:>14.0} {:>14.0} {:>14.1} {:>14.1}",
            f.put_small, f.get_small, f.put_large, f.get_large
        );
    }
    println!(
        "{:<34} {:>14.2} {:>14.2} {:>14.2} {:>14.2}",
        "ratio (scale-out / embedded)",
        two.put_small / one.put_small,
        two.get_small / one.get_small,
        two.put_large / one.put_large,
        two.get_large / one.get_large
    );
    for relay in [embedded, a, b] {
        relay.terminate();
    }
    Ok(())
}
