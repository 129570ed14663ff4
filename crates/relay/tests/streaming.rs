//! A 2 GiB blob goes up and comes back down while the relay process stays
//! small: bodies stream, they never sit in memory. Measured from /proc, not
//! by timing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use cairn_proto::BlobId;
use cairn_testkit::{RelayProcess, key};
use futures_util::StreamExt as _;
use reqwest::StatusCode;

use crate::common::{relay_key, upload};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-relay");
const SIZE: u64 = 2 << 30;
const CHUNK: usize = 1 << 20;
const RSS_LIMIT: u64 = 64 << 20;

/// Chunk `i` of the test blob: 1 MiB, distinct per index.
fn chunk(i: u64) -> Bytes {
    let mut out = vec![0u8; CHUNK];
    blake3::Hasher::new()
        .update(&i.to_be_bytes())
        .finalize_xof()
        .fill(&mut out[..4096]);
    // The rest repeats the first 4 KiB: cheap to make, still not constant.
    for offset in (4096..CHUNK).step_by(4096) {
        out.copy_within(0..4096, offset);
    }
    Bytes::from(out)
}

fn free_disk_bytes(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_up_and_down_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    if free_disk_bytes(dir.path()).is_some_and(|free| free < SIZE * 3) {
        eprintln!(
            "SKIP two_gib_up_and_down_in_bounded_memory: less than 6 GiB free on the temp disk"
        );
        return;
    }
    let relay = RelayProcess::spawn(
        Path::new(BIN),
        &dir.path().join("data"),
        &[
            "--max-blob-size",
            "3G",
            "--capacity",
            "8G",
            "--key-quota",
            "0",
        ],
    );
    let pid_rss = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&pid_rss), Arc::clone(&done));
        let status = format!("/proc/{}/status", relay.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                }) {
                    peak.fetch_max(kib * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };

    let chunks = SIZE / CHUNK as u64;
    let mut hasher = blake3::Hasher::new();
    for i in 0..chunks {
        hasher.update(&chunk(i));
    }
    let id = BlobId::from(hasher.finalize());

    let http = cairn_testkit::http();
    let url = relay.url();
    let relay_key = relay_key(&http, &url).await;
    let body = futures_util::stream::iter((0..chunks).map(|i| Ok::<_, std::io::Error>(chunk(i))));
    let put = upload(
        &http,
        &url,
        &relay_key,
        &key("alice"),
        id,
        reqwest::Body::wrap_stream(body),
    )
    .await
    .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let after_upload = pid_rss.load(Ordering::Relaxed);

    let get = http
        .get(format!("{url}/v1/blobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let mut stream = get.bytes_stream();
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        received += piece.len() as u64;
        hasher.update(&piece);
    }
    assert_eq!(received, SIZE);
    assert_eq!(BlobId::from(hasher.finalize()), id);

    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = pid_rss.load(Ordering::Relaxed);
    eprintln!(
        "relay peak RSS: {:.1} MiB after the upload, {:.1} MiB overall (limit {} MiB)",
        after_upload as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        RSS_LIMIT >> 20
    );
    assert!(peak > 0, "RSS was sampled");
    assert!(peak < RSS_LIMIT, "relay RSS peaked at {peak} bytes");
    assert!(relay.terminate().success());
}
