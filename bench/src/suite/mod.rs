//! `cairn-bench suite`: the side-by-side table of docs/BENCHMARKS.md.
//!
//! Each figure is measured in pairs, cairn then its reference, on the same
//! machine in the same run (absolute figures on shared machines drift;
//! ratios measured pair by pair hold), and reported as cairn's median with
//! its range, the reference's median, and the ratio.
//!
//! Sections (`--only` picks some): GET and PUT against nginx, large PUTs
//! against `dd conv=fsync` and BLAKE3 ([`Servers`]); `cairn put`/`get`
//! against age ([`client`]); what chunked files buy against restic and
//! age: edits, resumes, memory ([`chunks`]); the chunker of the chunked-file format
//! ([`chunking`]); relay memory while streaming ([`stream`]); GC,
//! reconciliation, sync and idle memory against their goals ([`costs`]).

mod chunking;
mod chunks;
mod client;
pub(crate) mod costs;
mod folders;
mod servers;
mod stats;
mod stream;
mod wrk;

use std::time::{Duration, Instant};

use anyhow::bail;

use self::servers::Nginx;
pub(crate) use self::servers::{UNLIMITED, sibling};
use self::stats::{Row, table};
use crate::{Target, put};

const KIB: usize = 1024;
/// Blobs stored through the batch path per measurement (PROTOCOL §7.3).
const BATCH_PUTS: usize = 10_000;
const LARGE: usize = 64 << 20;

/// How long and how often.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// cairn/reference pairs per figure.
    pub(crate) pairs: usize,
    /// Seconds per wrk run.
    pub(crate) wrk_secs: u64,
    /// 1 KiB uploads per PUT run.
    pub(crate) small_puts: usize,
    /// 64 MiB uploads per PUT run.
    pub(crate) large_puts: usize,
    /// Blob ids on each side of the reconciliation.
    pub(crate) reconcile_ids: usize,
    /// Files in the synced vault.
    pub(crate) sync_entries: usize,
    /// Blobs stored in the large store of the GC figure.
    pub(crate) gc_stored: usize,
    /// Bytes of the file `cairn put` and `cairn get` move.
    pub(crate) client_size: usize,
    /// Bytes of each of the concurrent streamed uploads.
    pub(crate) stream_size: usize,
}

impl Plan {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                pairs: 3,
                wrk_secs: 2,
                small_puts: 5_000,
                large_puts: 4,
                reconcile_ids: 50_000,
                sync_entries: 1_000,
                gc_stored: 100_000,
                client_size: 256 << 20,
                stream_size: 64 << 20,
            }
        } else {
            Self {
                pairs: 5,
                wrk_secs: 10,
                small_puts: 20_000,
                large_puts: 16,
                reconcile_ids: 1_000_000,
                sync_entries: 10_000,
                gc_stored: 1_000_000,
                client_size: 1 << 30,
                stream_size: 1 << 30,
            }
        }
    }
}

/// Measures `cairn` and `reference` alternately, `pairs` times each.
fn pairwise(
    pairs: usize,
    mut cairn: impl FnMut() -> anyhow::Result<f64>,
    mut reference: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut a, mut b) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    for _ in 0..pairs {
        a.push(cairn()?);
        b.push(reference()?);
    }
    Ok((a, b))
}

/// Uploads on a runtime of their own (the suite's pairs are sequential).
fn put_blocking(
    url: &str,
    target: Target,
    size: usize,
    count: usize,
    concurrency: usize,
    label: &str,
) -> anyhow::Result<(f64, Duration)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (elapsed, failures, p99) = runtime.block_on(put(
        &[url.to_owned()],
        target,
        size,
        count,
        concurrency,
        label,
    ))?;
    if failures > 0 {
        bail!("{failures} of {count} uploads to {url} failed");
    }
    Ok((count as f64 / elapsed.as_secs_f64(), p99))
}

/// Seeds one blob of `size` bytes into the relay and the same bytes into
/// nginx's root; the blob's URL path on the relay.
fn seed(relay_url: &str, nginx: &Nginx, name: &str, size: usize) -> anyhow::Result<String> {
    let body = crate::blob(name, 0, size);
    std::fs::write(nginx.file(name), &body)?;
    let id = cairn_proto::BlobId::of(&body);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::upload_one(relay_url, body))?;
    Ok(format!("/v1/blobs/{id}"))
}

/// `dd conv=fsync` of `count` × 64 MiB to a file under `dir`: MB/s.
fn dd_fsync(dir: &std::path::Path, source: &std::path::Path, count: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for i in 0..count {
        let status = std::process::Command::new("dd")
            .arg(format!("if={}", source.display()))
            .arg(format!("of={}", dir.join(format!("dd-{i}")).display()))
            .args(["bs=1M", "conv=fsync", "status=none"])
            .status()?;
        if !status.success() {
            bail!("dd failed");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for i in 0..count {
        let _ = std::fs::remove_file(dir.join(format!("dd-{i}")));
    }
    Ok((count * LARGE) as f64 / secs / 1e6)
}

/// BLAKE3 over 64 MiB on one core: MB/s.
fn blake3_single_core(data: &[u8]) -> f64 {
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_millis(500) {
        std::hint::black_box(blake3::hash(data));
        rounds += 1;
    }
    (rounds * data.len()) as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// The suite's sections, in the order they run; `--only` picks some.
pub(crate) const SECTIONS: &[&str] = &[
    "get",
    "put",
    "tls",
    "client",
    "chunks",
    "folders",
    "chunking",
    "stream",
    "gc",
    "reconcile",
    "sync",
    "idle",
];

/// Runs the sections named in `only` (all when empty), printing each row
/// as it is measured and the whole table at the end.
pub(crate) fn run(plan: Plan, only: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        bail!(
            "no section {unknown:?}: the sections are {}",
            SECTIONS.join(", ")
        );
    }
    let wanted = |section: &str| only.is_empty() || only.iter().any(|s| s == section);
    let work = tempfile::Builder::new().prefix("cairn-suite").tempdir()?;
    println!(
        "{} against nginx, dd, BLAKE3 and age: {} pairs per figure, wrk runs of {} s, {} cores",
        cairn_relay::SOFTWARE,
        plan.pairs,
        plan.wrk_secs,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut rows = Vec::new();
    let started = Instant::now();
    let mut last = started;
    // Each section's rows as soon as they are measured, with its duration.
    let mut report = |new: Vec<Row>| {
        print!("{}", stats::lines(&new));
        println!("  ({:.0} s)", last.elapsed().as_secs_f64());
        last = Instant::now();
        rows.extend(new);
    };
    if wanted("get") || wanted("put") {
        let servers = Servers::start(work.path())?;
        if wanted("get") {
            report(servers.get(&plan)?);
        }
        if wanted("put") {
            report(servers.put(&plan)?);
        }
    }
    if wanted("tls") {
        let servers = Servers::start_tls(work.path())?;
        report(servers.get(&plan)?);
        report(servers.h2_gets(&plan)?);
        report(servers.put_small(&plan)?);
    }
    if wanted("client") {
        report(client::put_get(&plan, work.path())?);
    }
    if wanted("chunks") {
        report(chunks::chunks(&plan, work.path())?);
    }
    if wanted("folders") {
        report(folders::folders(&plan, work.path())?);
    }
    if wanted("chunking") {
        report(chunking::chunking(&plan)?);
    }
    if wanted("stream") {
        report(vec![stream::upload_rss(&plan, work.path())?]);
    }
    if wanted("gc") {
        report(vec![costs::gc(&plan)?]);
    }
    if wanted("reconcile") {
        report(vec![costs::reconciliation(&plan)?]);
    }
    if wanted("sync") {
        report(costs::sync(&plan)?);
    }
    if wanted("idle") {
        report(vec![costs::idle_rss(work.path())?]);
    }
    println!(
        "\n{}(all sections: {:.0} s)",
        table(&rows),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A relay and an nginx holding the same two files.
struct Servers {
    work: std::path::PathBuf,
    /// Kept for its lifetime: the relay stops when this drops.
    _relay: cairn_testkit::RelayProcess,
    relay_url: String,
    nginx: Nginx,
    /// The relay's URL paths of the 1 KiB and the 64 MiB blob.
    small: String,
    large: String,
    /// Starts each row's name: `""`, or `"TLS "` when both serve HTTPS.
    tag: &'static str,
}

impl Servers {
    fn start(work: &std::path::Path) -> anyhow::Result<Self> {
        let relay = servers::relay(work, "relay")?;
        let url = relay.url();
        Self::with(work, relay, url, Nginx::start(work)?, "")
    }

    /// Both serving HTTPS with one certificate (`servers::Tls`).
    fn start_tls(work: &std::path::Path) -> anyhow::Result<Self> {
        let work = work.join("tls");
        std::fs::create_dir_all(&work)?;
        let tls = servers::Tls::make(&work)?;
        let (relay, url) = servers::relay_tls(&work, "relay", &tls)?;
        let nginx = Nginx::start_with(&work, Some(&tls))?;
        Self::with(&work, relay, url, nginx, "TLS ")
    }

    fn with(
        work: &std::path::Path,
        relay: cairn_testkit::RelayProcess,
        relay_url: String,
        nginx: Nginx,
        tag: &'static str,
    ) -> anyhow::Result<Self> {
        let small = seed(&relay_url, &nginx, "small", KIB)?;
        let large = seed(&relay_url, &nginx, "large", LARGE)?;
        Ok(Self {
            work: work.to_path_buf(),
            _relay: relay,
            relay_url,
            nginx,
            small,
            large,
            tag,
        })
    }

    /// GETs with wrk: 1 KiB (rate and p99) and 64 MiB (throughput).
    fn get(&self, plan: &Plan) -> anyhow::Result<Vec<Row>> {
        let (relay_url, small, large, secs) =
            (&self.relay_url, &self.small, &self.large, plan.wrk_secs);
        let nginx = &self.nginx.url;
        let tag = self.tag;
        let mut p99s = (Vec::new(), Vec::new());
        let (cairn, against) = pairwise(
            plan.pairs,
            || {
                let run = wrk::run(&format!("{relay_url}{small}"), 64, secs)?;
                p99s.0.push(run.p99.as_secs_f64() * 1e3);
                Ok(run.requests_per_sec)
            },
            || {
                let run = wrk::run(&format!("{nginx}/small"), 64, secs)?;
                p99s.1.push(run.p99.as_secs_f64() * 1e3);
                Ok(run.requests_per_sec)
            },
        )?;
        let mut rows = vec![
            row(
                &format!("{tag}GET 1 KiB, 64 conns"),
                "req/s",
                "nginx",
                true,
                cairn,
                against,
            ),
            row(
                &format!("{tag}GET 1 KiB, 64 conns, p99"),
                "ms",
                "nginx",
                false,
                p99s.0,
                p99s.1,
            ),
        ];
        let (cairn, against) = pairwise(
            plan.pairs,
            || Ok(wrk::run(&format!("{relay_url}{large}"), 4, secs)?.bytes_per_sec / 1e6),
            || Ok(wrk::run(&format!("{nginx}/large"), 4, secs)?.bytes_per_sec / 1e6),
        )?;
        rows.push(row(
            &format!("{tag}GET 64 MiB, 4 conns"),
            "MB/s",
            "nginx",
            true,
            cairn,
            against,
        ));
        Ok(rows)
    }

    /// Many small GETs over one HTTP/2 connection (h2load, 64 streams at
    /// once), when h2load is installed.
    fn h2_gets(&self, plan: &Plan) -> anyhow::Result<Vec<Row>> {
        if !wrk::h2load_installed() {
            println!(
                "  (HTTP/2 row skipped: h2load is not installed; apt-get install nghttp2-client)"
            );
            return Ok(Vec::new());
        }
        let requests = 20_000 * plan.wrk_secs;
        let (cairn, against) = pairwise(
            plan.pairs,
            || wrk::h2load(&format!("{}{}", self.relay_url, self.small), requests, 64),
            || wrk::h2load(&format!("{}/small", self.nginx.url), requests, 64),
        )?;
        Ok(vec![row(
            &format!("{}GET 1 KiB over HTTP/2, 1 conn, 64 streams", self.tag),
            "req/s",
            "nginx HTTP/2",
            true,
            cairn,
            against,
        )])
    }

    /// Durable 1 KiB PUTs against nginx's WebDAV: rate and p99.
    fn put_small(&self, plan: &Plan) -> anyhow::Result<Vec<Row>> {
        let relay_url = self.relay_url.clone();
        let tag = self.tag;
        let p99s = std::cell::RefCell::new((Vec::new(), Vec::new()));
        let round = std::cell::Cell::new(0);
        let (cairn, against) = pairwise(
            plan.pairs,
            || {
                round.set(round.get() + 1);
                let label = format!("small-{}", round.get());
                let (rate, p99) =
                    put_blocking(&relay_url, Target::Cairn, KIB, plan.small_puts, 64, &label)?;
                p99s.borrow_mut().0.push(p99.as_secs_f64() * 1e3);
                Ok(rate)
            },
            || {
                let label = format!("small-{}", round.get());
                let (rate, p99) = put_blocking(
                    &self.nginx.url,
                    Target::Webdav,
                    KIB,
                    plan.small_puts,
                    64,
                    &label,
                )?;
                p99s.borrow_mut().1.push(p99.as_secs_f64() * 1e3);
                Ok(rate)
            },
        )?;
        let p99s = p99s.into_inner();
        let rows = vec![
            row(
                &format!("{tag}PUT 1 KiB durable, 64 in flight"),
                "blobs/s",
                "nginx WebDAV (no fsync)",
                true,
                cairn,
                against,
            ),
            row(
                &format!("{tag}PUT 1 KiB durable, p99"),
                "ms",
                "nginx WebDAV (no fsync)",
                false,
                p99s.0,
                p99s.1,
            ),
        ];
        Ok(rows)
    }

    /// Durable 1 KiB PUTs against nginx's WebDAV, the batch path, and 64
    /// MiB PUTs against `dd conv=fsync` and BLAKE3.
    fn put(&self, plan: &Plan) -> anyhow::Result<Vec<Row>> {
        let relay_url = self.relay_url.clone();
        let mut rows = self.put_small(plan)?;

        // The batch path against the same single PUTs of nginx: 10,000
        // blobs, 256 a request, 8 requests in flight.
        let round = std::cell::Cell::new(0);
        let (cairn, against) = pairwise(
            plan.pairs,
            || {
                round.set(round.get() + 1);
                let label = format!("batch-{}", round.get());
                let (rate, _) =
                    put_blocking(&relay_url, Target::CairnBatch, KIB, BATCH_PUTS, 8, &label)?;
                Ok(rate)
            },
            || {
                let label = format!("batch-{}", round.get());
                let (rate, _) =
                    put_blocking(&self.nginx.url, Target::Webdav, KIB, BATCH_PUTS, 64, &label)?;
                Ok(rate)
            },
        )?;
        rows.push(row(
            "PUT 1 KiB durable, batches of 256, 8 in flight",
            "blobs/s",
            "nginx WebDAV (no fsync), 64 in flight",
            true,
            cairn,
            against,
        ));

        let source = self.nginx.file("large");
        let mut round = 0;
        let mut cairn_large = Vec::new();
        let (_, dd) = pairwise(
            plan.pairs,
            || {
                round += 1;
                let (rate, _) = put_blocking(
                    &relay_url,
                    Target::Cairn,
                    LARGE,
                    plan.large_puts,
                    2,
                    &format!("large-{round}"),
                )?;
                let mbps = rate * LARGE as f64 / 1e6;
                cairn_large.push(mbps);
                Ok(mbps)
            },
            || dd_fsync(&self.work, &source, plan.large_puts),
        )?;
        let data = crate::blob("blake3", 0, LARGE);
        let hashing: Vec<f64> = (0..plan.pairs).map(|_| blake3_single_core(&data)).collect();
        rows.push(row(
            "PUT 64 MiB, 2 in flight",
            "MB/s",
            "dd conv=fsync",
            true,
            cairn_large.clone(),
            dd,
        ));
        rows.push(row(
            "PUT 64 MiB, 2 in flight",
            "MB/s",
            "BLAKE3, one core",
            true,
            cairn_large,
            hashing,
        ));
        Ok(rows)
    }
}

fn row(
    figure: &str,
    unit: &'static str,
    reference: &str,
    higher_is_better: bool,
    cairn: Vec<f64>,
    against: Vec<f64>,
) -> Row {
    Row {
        figure: figure.into(),
        unit,
        reference: reference.into(),
        higher_is_better,
        cairn,
        against,
    }
}
