//! `cairn-bench`: the project's own load tool.
//!
//! wrk cannot sign cairn's upload tokens, so uploads are driven from here,
//! for cairn and for the reference (nginx WebDAV) alike, with the same
//! request pattern. Requests and tokens are prepared before the clock
//! starts, so the figures measure the server, not the client's signing.
//! Downloads are measured with wrk. `cairn-bench suite` (run through
//! bench/run) puts every figure side by side with its reference.

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

mod audit_bench;
mod federation_bench;
mod repair_bench;
mod scaleout_bench;
mod suite;
mod sync_bench;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cairn_proto::{BlobId, Method, RelayInfo, SignedRecord, TokenTarget, VerifyingKey};
use cairn_testkit::{auth_header, key, token, unix_now};
use clap::{Parser, Subcommand, ValueEnum};

/// Benchmarks for cairn; see docs/BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "cairn-bench", about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Target {
    /// A cairn relay: `PUT /v1/blobs/{id}` with a signed token.
    Cairn,
    /// A cairn relay's batch upload: `POST /v1/blobs`, [`BATCH`] blobs a
    /// request, one token each.
    CairnBatch,
    /// A WebDAV server (nginx): `PUT /dav/{id}`.
    Webdav,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload `count` distinct blobs of `size` bytes with `concurrency`
    /// requests in flight; print requests/s and MB/s.
    Put {
        /// Base URL of the server.
        #[arg(long)]
        url: String,
        /// What kind of server it is.
        #[arg(long, value_enum)]
        target: Target,
        /// Bytes per blob.
        #[arg(long)]
        size: usize,
        /// Blobs to upload.
        #[arg(long)]
        count: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Distinguishes runs, so repeated runs upload new blobs.
        #[arg(long, default_value = "run")]
        label: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Upload one blob and print its id (to GET it with wrk afterwards).
    Seed {
        /// Base URL of the relay.
        #[arg(long)]
        url: String,
        /// Bytes.
        #[arg(long)]
        size: usize,
        /// Also write the bytes to this file (for the reference server).
        #[arg(long)]
        write_to: Option<std::path::PathBuf>,
    },
    /// Sync cost: a new device's first sync of a vault of `entries` files,
    /// and a sync with nothing new (time, requests, bytes).
    Sync {
        /// Files in the vault.
        #[arg(long, default_value_t = 10_000)]
        entries: usize,
    },
    /// Reconciliation traffic between two relays holding `ids` blob ids
    /// each that differ in `diff`, against the size of a full id list.
    Reconcile {
        /// Blob ids on each relay.
        #[arg(long, default_value_t = 1_000_000)]
        ids: usize,
        /// Ids that differ (half missing on each side).
        #[arg(long, default_value_t = 1_000)]
        diff: usize,
    },
    /// Transfer-of-responsibility throughput between two relays, against
    /// plain uploads of the same bytes.
    Transfer {
        /// Bytes per blob.
        #[arg(long, default_value_t = 4 << 20)]
        size: usize,
        /// Blobs moved.
        #[arg(long, default_value_t = 64)]
        count: usize,
    },
    /// Audit cost: a slice proof of random chunks of one blob, against
    /// reading the whole blob back and hashing it.
    Audit {
        /// Bytes in the blob.
        #[arg(long, default_value_t = 1 << 30)]
        size: usize,
        /// Random 1 KiB chunks per audit.
        #[arg(long, default_value_t = 16)]
        chunks: usize,
        /// Audits (and full reads) timed.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Repair throughput: one of three relays loses every copy; a fresh
    /// relay joins and `repair` restores them, against the first put.
    Repair {
        /// Bytes per file.
        #[arg(long, default_value_t = 4 << 20)]
        size: usize,
        /// Files.
        #[arg(long, default_value_t = 32)]
        count: usize,
    },
    /// PUT and GET throughput of 1 KiB and 64 MiB blobs: one embedded relay
    /// process against two scale-out processes over PostgreSQL and S3
    /// (the servers of `scripts/backends.sh`, from its CAIRN_TEST_*
    /// variables; start it with CAIRN_BACKENDS_DURABLE=1 for durable
    /// commits).
    Scaleout {
        /// 1 KiB blobs uploaded, then downloaded.
        #[arg(long, default_value_t = 20_000)]
        small: usize,
        /// 64 MiB blobs uploaded, then downloaded.
        #[arg(long, default_value_t = 16)]
        large: usize,
    },
    /// The side-by-side suite: each figure measured in pairs against its
    /// reference (nginx, dd, BLAKE3), printed as a table. Run it through
    /// `bench/run`, which builds and installs what it needs.
    Suite {
        /// A short run: 3 pairs of short measurements.
        #[arg(long)]
        quick: bool,
        /// Run only these sections (get, put, client, stream, gc,
        /// reconcile, sync, idle); repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Shows what a GC pass costs as the store grows: runs GC over stores
    /// of the given sizes (filled directly, not over HTTP), each with the
    /// same number of expired blobs.
    Gc {
        /// Store sizes in blobs; separate with commas.
        #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
        stored: Vec<usize>,
        /// Expired blobs per pass.
        #[arg(long, default_value_t = 10_000)]
        expired: usize,
    },
}

pub(crate) fn blob(label: &str, i: usize, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    let seed = blake3::hash(format!("{label}/{i}").as_bytes());
    let head = size.min(4096);
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out[..head]);
    for offset in (head..size).step_by(4096) {
        let n = (size - offset).min(4096);
        out.copy_within(0..n, offset);
    }
    out
}

pub(crate) async fn relay_key(http: &reqwest::Client, url: &str) -> anyhow::Result<VerifyingKey> {
    let body: serde_json::Value = http
        .get(format!("{url}/.well-known/cairn-relay"))
        .send()
        .await?
        .json()
        .await?;
    let text = body["record"]
        .as_str()
        .context("no record in info document")?;
    let record = SignedRecord::from_base64url(text)?;
    Ok(*record.verify::<RelayInfo>()?.signer())
}

struct Prepared {
    url: String,
    auth: Option<String>,
    body: Vec<u8>,
}

/// Blobs per request of [`Target::CairnBatch`].
pub(crate) const BATCH: usize = 256;

/// `bodies` as batch uploads of [`BATCH`] blobs to `url`, each with its
/// token.
fn batches(
    url: &str,
    relay: &cairn_proto::VerifyingKey,
    signer: &cairn_proto::SigningKey,
    bodies: Vec<Vec<u8>>,
) -> anyhow::Result<Vec<Prepared>> {
    let mut out = Vec::new();
    let mut bodies = bodies.into_iter().peekable();
    while bodies.peek().is_some() {
        let mut group: Vec<(BlobId, Vec<u8>)> = bodies
            .by_ref()
            .take(BATCH)
            .map(|b| (BlobId::of(&b), b))
            .collect();
        group.sort_unstable_by_key(|(id, _)| *id);
        let header = cairn_proto::BatchHeader::new(
            group
                .iter()
                .map(|(id, b)| Ok((*id, u32::try_from(b.len())?)))
                .collect::<anyhow::Result<_>>()?,
        )?;
        let mut body = header.encode();
        for (_, b) in &group {
            body.extend_from_slice(b);
        }
        let t = token(
            relay,
            Method::Post,
            TokenTarget::Batch(header.digest()),
            unix_now() + 600,
        );
        out.push(Prepared {
            url: format!("{url}/v1/blobs"),
            auth: Some(auth_header(&t, signer)),
            body,
        });
    }
    Ok(out)
}

/// Uploads `count` distinct blobs round robin over `urls`: the time taken,
/// the failures, and the 99th percentile of the successful requests.
pub(crate) async fn put(
    urls: &[String],
    target: Target,
    size: usize,
    count: usize,
    concurrency: usize,
    label: &str,
) -> anyhow::Result<(Duration, usize, Duration)> {
    let http = client_for(urls.first().map_or("", String::as_str))
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let signer = key("bench");
    let first = urls.first().context("no server to upload to")?;
    let relay = match target {
        Target::Cairn | Target::CairnBatch => Some(relay_key(&http, first).await?),
        Target::Webdav => None,
    };
    // Large blobs share one body (cloned per request) to bound memory;
    // distinct ids come from distinct bytes, so only small runs can do that.
    let shared_large = size > (1 << 20);
    let prepared: Vec<Prepared> = if let (Target::CairnBatch, Some(relay)) = (target, relay) {
        let bodies = (0..count).map(|i| blob(label, i, size)).collect();
        batches(first, &relay, &signer, bodies)?
    } else {
        (0..count)
            .map(|i| {
                let mut body = blob(label, if shared_large { 0 } else { i }, size);
                if shared_large {
                    // Make each large blob distinct in its first bytes.
                    body[..8].copy_from_slice(&(i as u64).to_be_bytes());
                }
                let id = BlobId::of(&body);
                // Round robin over the servers (processes of one relay).
                let url = &urls[i % urls.len()];
                match (target, relay) {
                    (Target::Cairn, Some(relay)) => {
                        let t = token(&relay, Method::Put, TokenTarget::Blob(id), unix_now() + 600);
                        Prepared {
                            url: format!("{url}/v1/blobs/{id}"),
                            auth: Some(auth_header(&t, &signer)),
                            body,
                        }
                    }
                    _ => Prepared {
                        url: format!("{url}/dav/{label}-{id}"),
                        auth: None,
                        body,
                    },
                }
            })
            .collect()
    };
    let prepared = Arc::new(std::sync::Mutex::new(prepared.into_iter()));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, prepared, failures) =
            (http.clone(), Arc::clone(&prepared), Arc::clone(&failures));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let next = prepared.lock().ok().and_then(|mut it| it.next());
                let Some(p) = next else { return latencies };
                let mut request = match target {
                    Target::CairnBatch => http.post(&p.url).body(p.body),
                    _ => http.put(&p.url).body(p.body),
                };
                if let Some(auth) = p.auth {
                    request = request.header("authorization", auth);
                }
                let sent = Instant::now();
                let stored = match request.send().await {
                    Ok(r) if r.status().is_success() => target_ok(target, r).await,
                    _ => false,
                };
                if stored {
                    latencies.push(sent.elapsed());
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for w in workers {
        latencies.extend(w.await?);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    Ok((elapsed, failures.load(Ordering::Relaxed), p99))
}

/// Whether a successful answer stored everything: for a batch, every
/// blob's result.
async fn target_ok(target: Target, response: reqwest::Response) -> bool {
    match target {
        Target::CairnBatch => response
            .json::<cairn_proto::wire::BatchStored>()
            .await
            .is_ok_and(|b| b.results.iter().all(|r| r.error.is_none())),
        Target::Cairn | Target::Webdav => true,
    }
}

/// An HTTP client for the servers at `url`. Over `https://` the servers
/// present the suite's self-signed certificate, so it is not checked: the
/// same client measures cairn and its reference, so both sides pay the same.
pub(crate) fn client_for(url: &str) -> reqwest::ClientBuilder {
    cairn_testkit::http_builder().danger_accept_invalid_certs(url.starts_with("https://"))
}

/// Uploads one blob to the relay at `url` with a fresh token.
pub(crate) async fn upload_one(url: &str, body: Vec<u8>) -> anyhow::Result<BlobId> {
    let http = client_for(url).build()?;
    let relay = relay_key(&http, url).await?;
    let id = BlobId::of(&body);
    let t = token(&relay, Method::Put, TokenTarget::Blob(id), unix_now() + 600);
    let r = http
        .put(format!("{url}/v1/blobs/{id}"))
        .header("authorization", auth_header(&t, &key("bench")))
        .body(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("uploading a blob failed: {}", r.status());
    }
    Ok(id)
}

async fn gc_bench(stored: &[usize], expired: usize) -> anyhow::Result<()> {
    println!("GC pass cost: time to delete {expired} expired blobs, by store size");
    println!(
        "{:>10} {:>10} {:>12} {:>14}",
        "stored", "expired", "gc ms", "us/deleted"
    );
    for &stored in stored {
        let elapsed = suite::costs::gc_pass(stored.max(expired), expired).await?;
        println!(
            "{stored:>10} {expired:>10} {:>12.1} {:>14.1}",
            elapsed.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e6 / expired as f64
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Put {
            url,
            target,
            size,
            count,
            concurrency,
            label,
            json,
        } => {
            let (elapsed, failures, _) = put(
                std::slice::from_ref(&url),
                target,
                size,
                count,
                concurrency,
                &label,
            )
            .await?;
            let secs = elapsed.as_secs_f64();
            let rps = count as f64 / secs;
            let mbps = (count * size) as f64 / secs / 1e6;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"requests": count, "failures": failures, "seconds": secs,
                        "requests_per_sec": rps, "mb_per_sec": mbps})
                );
            } else {
                println!(
                    "{count} PUTs of {size} B in {secs:.2} s: {rps:.0} req/s, {mbps:.1} MB/s, {failures} failed"
                );
            }
            if failures > 0 {
                bail!("{failures} uploads failed");
            }
        }
        Command::Seed {
            url,
            size,
            write_to,
        } => {
            let body = blob("seed", size, size);
            let id = upload_one(&url, body.clone()).await?;
            if let Some(path) = write_to {
                std::fs::write(&path, &body)?;
            }
            println!("{id}");
        }
        Command::Gc { stored, expired } => gc_bench(&stored, expired).await?,
        Command::Sync { entries } => sync_bench::sync_bench(entries).await?,
        Command::Audit {
            size,
            chunks,
            rounds,
        } => audit_bench::audit_bench(size, chunks, rounds).await?,
        Command::Repair { size, count } => repair_bench::repair_bench(size, count).await?,
        Command::Reconcile { ids, diff } => federation_bench::reconcile_bench(ids, diff).await?,
        Command::Transfer { size, count } => federation_bench::transfer_bench(size, count).await?,
        Command::Scaleout { small, large } => scaleout_bench::scaleout_bench(small, large).await?,
        Command::Suite { quick, only } => {
            tokio::task::spawn_blocking(move || suite::run(suite::Plan::new(quick), &only))
                .await??;
        }
    }
    Ok(())
}
