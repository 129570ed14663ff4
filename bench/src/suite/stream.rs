//! The relay's memory while it streams many large uploads at once: the
//! figure that shows a body is never held whole in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use cairn_proto::{BlobId, Method, TokenTarget};
use cairn_testkit::{auth_header, key, token, unix_now};

use super::Plan;
use super::stats::Row;

/// Uploads are streamed in blocks of this size.
const BLOCK: usize = 1 << 20;
/// Uploads in flight at once.
const UPLOADS: usize = 16;

/// Upload `i`'s body: one block of its own, then a block shared by all
/// uploads, repeated. Distinct ids without generating gigabytes of data.
struct Body {
    first: Bytes,
    rest: Bytes,
    blocks: usize,
}

impl Body {
    fn new(i: usize, size: usize, shared: &Bytes) -> Self {
        Self {
            first: Bytes::from(crate::blob("stream-first", i, BLOCK)),
            rest: shared.clone(),
            blocks: size / BLOCK,
        }
    }

    fn blocks(&self) -> impl Iterator<Item = Bytes> + use<> {
        let (first, rest) = (self.first.clone(), self.rest.clone());
        std::iter::once(first).chain(std::iter::repeat_n(rest, self.blocks - 1))
    }

    fn id(&self) -> BlobId {
        let mut hasher = blake3::Hasher::new();
        for block in self.blocks() {
            hasher.update(&block);
        }
        BlobId::from_bytes(*hasher.finalize().as_bytes())
    }

    fn len(&self) -> u64 {
        (self.blocks * BLOCK) as u64
    }
}

/// Peak resident memory of a relay process receiving [`UPLOADS`] streamed
/// uploads of `plan.stream_size` bytes at once, sampled every 20 ms.
pub(crate) fn upload_rss(plan: &Plan, work: &std::path::Path) -> anyhow::Result<Row> {
    let size = plan.stream_size;
    let relay = super::servers::relay(work, "stream")?;
    let url = relay.url();
    let pid = relay.pid();
    let shared = Bytes::from(crate::blob("stream-shared", 0, BLOCK));
    let bodies: Vec<Body> = (0..UPLOADS).map(|i| Body::new(i, size, &shared)).collect();
    let ids: Vec<BlobId> = bodies.iter().map(Body::id).collect();

    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = cairn_testkit::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(upload_all(&url, bodies, &ids));
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    relay.terminate();
    std::fs::remove_dir_all(work.join("stream")).context("removing the relay's data")?;
    result?;
    let mib = peak.load(Ordering::Relaxed) as f64 / f64::from(1u32 << 20);
    Ok(Row {
        figure: format!("relay peak RSS, {UPLOADS} uploads of {} MiB", size >> 20),
        unit: "MiB",
        reference: "goal: 64 MiB".into(),
        higher_is_better: false,
        cairn: vec![mib],
        against: vec![64.0],
    })
}

async fn upload_all(url: &str, bodies: Vec<Body>, ids: &[BlobId]) -> anyhow::Result<()> {
    let http = cairn_testkit::http();
    let relay = crate::relay_key(&http, url).await?;
    let signer = key("bench");
    let mut uploads = tokio::task::JoinSet::new();
    for (body, id) in bodies.into_iter().zip(ids) {
        let t = token(
            &relay,
            Method::Put,
            TokenTarget::Blob(*id),
            unix_now() + 600,
        );
        let request = http
            .put(format!("{url}/v1/blobs/{id}"))
            .header("authorization", auth_header(&t, &signer))
            .header("content-length", body.len())
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                body.blocks().map(Ok::<_, std::io::Error>),
            )));
        uploads.spawn(async move {
            let response = request.send().await?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                bail!("a streamed upload was refused: {status} {text}");
            }
            Ok(())
        });
    }
    while let Some(done) = uploads.join_next().await {
        done??;
    }
    Ok(())
}
