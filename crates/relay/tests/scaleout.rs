//! Several relay processes over one PostgreSQL index and one S3 bucket
//! (docs/OPERATING.md, "Scale-out"). Needs the test servers of
//! `scripts/backends.sh` (`.ci/run` starts them); each test says so and
//! passes without doing anything when they are absent.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::{BlobId, Method, TokenTarget};
use cairn_relay::{ScaleOutConfig, StorageConfig};
use cairn_testkit::{RelayProcess, auth_header, key, token, unix_now};
use reqwest::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::common::{TestRelay, assert_error, bytes, info_document, relay_key, upload};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-relay");

/// Fresh backends for one test, or `None` (with the reason printed).
fn backends() -> Option<ScaleOutConfig> {
    crate::common::scale_out_from_env()
}

/// The `serve` flags that put a relay process on `backends`.
fn backend_args(backends: &ScaleOutConfig) -> Vec<String> {
    let pg = &backends.postgres;
    let s3 = &backends.s3;
    vec![
        "--postgres".into(),
        pg.url.clone(),
        "--postgres-schema".into(),
        pg.schema.clone().unwrap_or_default(),
        "--postgres-pool".into(),
        "8".into(),
        "--s3-endpoint".into(),
        s3.endpoint.clone(),
        "--s3-bucket".into(),
        s3.bucket.clone(),
        "--s3-region".into(),
        s3.region.clone(),
        "--s3-prefix".into(),
        s3.prefix.clone(),
        "--s3-access-key".into(),
        s3.access_key_id.clone(),
        "--s3-secret-key".into(),
        s3.secret_access_key.clone(),
    ]
}

/// Two relay processes with one identity (B gets a copy of A's key file)
/// on the same backends.
fn two_processes(
    dir: &Path,
    backends: &ScaleOutConfig,
    extra: &[&str],
) -> (RelayProcess, RelayProcess) {
    let args = backend_args(backends);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let a = RelayProcess::spawn(Path::new(BIN), &dir.join("a"), &args);
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::copy(dir.join("a/relay.key"), dir.join("b/relay.key")).unwrap();
    let b = RelayProcess::spawn(Path::new(BIN), &dir.join("b"), &args);
    (a, b)
}

/// A `DELETE` of blob `id` at `url`, signed by `signer` for the relay
/// `relay`, with a fresh token.
async fn delete_signed(
    http: &reqwest::Client,
    url: &str,
    relay: &cairn_proto::VerifyingKey,
    signer: &cairn_proto::SigningKey,
    id: BlobId,
) -> reqwest::Response {
    let t = token(
        relay,
        Method::Delete,
        TokenTarget::Blob(id),
        unix_now() + 300,
    );
    http.delete(format!("{url}/v1/blobs/{id}"))
        .header("authorization", auth_header(&t, signer))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_uploaded_through_one_process_is_served_by_the_other() {
    let Some(backends) = backends() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_processes(dir.path(), &backends, &[]);
    let http = cairn_testkit::http();
    let key_a = relay_key(&http, &a.url()).await;
    assert_eq!(key_a, relay_key(&http, &b.url()).await, "one identity");

    let alice = key("alice");
    // Inline (index), one-request object, multipart object (> 8 MiB).
    let blobs: Vec<Vec<u8>> = [0, 900, 16_384, 16_385, 300_000, 20 << 20]
        .iter()
        .map(|&n| bytes(&format!("shared {n}"), n))
        .collect();
    for data in &blobs {
        let id = BlobId::of(data);
        let r = upload(&http, &a.url(), &key_a, &alice, id, data.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    for data in &blobs {
        let id = BlobId::of(data);
        let got = http
            .get(format!("{}/v1/blobs/{id}", b.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
        // A range through the other process, from the object store.
        if data.len() > 1000 {
            let got = http
                .get(format!("{}/v1/blobs/{id}", b.url()))
                .header("range", "bytes=100-999")
                .send()
                .await
                .unwrap();
            assert_eq!(got.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(got.bytes().await.unwrap().as_ref(), &data[100..1000]);
        }
    }
    // Re-uploading through B: already held, one copy, and Bob owns it too.
    let id = BlobId::of(&blobs[4]);
    let bob = key("bob");
    let r = upload(&http, &b.url(), &key_a, &bob, id, blobs[4].clone())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Both processes report the shared totals.
    let total: u64 = blobs.iter().map(|b| b.len() as u64).sum();
    for url in [a.url(), b.url()] {
        // The totals a process shows refresh at its next access flush; the
        // signed figures come from the shared index.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Fetched by hand: a poll may race the server closing an idle
            // keep-alive connection, which is not what this test is about.
            let used = match http
                .get(format!("{url}/.well-known/cairn-relay"))
                .send()
                .await
            {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            }
            .and_then(|doc| doc["info"]["capacity_used"].as_u64());
            if used == Some(total) {
                break;
            }
            assert!(Instant::now() < deadline, "{url} shows {used:?} used");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Alice deletes through A: Bob's claim keeps the blob. Bob deletes
    // through B: A no longer serves it.
    let t = token(
        &key_a,
        Method::Delete,
        TokenTarget::Blob(id),
        unix_now() + 300,
    );
    let delete = |url: String| {
        http.delete(format!("{url}/v1/blobs/{id}"))
            .header("authorization", auth_header(&t, &alice))
            .send()
    };
    let deleted = delete(a.url()).await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(deleted.headers()["cairn-owners-left"], "1");
    let deleted = delete_signed(&http, &b.url(), &key_a, &bob, id).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(deleted.headers()["cairn-owners-left"], "0");
    let gone = http
        .get(format!("{}/v1/blobs/{id}", a.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    // Stored again through B. The delete token, replayed to B (which never
    // saw it in memory), is refused: the index records it as spent.
    let r = upload(&http, &b.url(), &key_a, &alice, id, blobs[4].clone())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_error(
        delete(b.url()).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;
    let kept = http
        .get(format!("{}/v1/blobs/{id}", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), StatusCode::OK);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_token_spent_at_one_process_is_refused_by_the_other() {
    let Some(backends) = backends() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_processes(dir.path(), &backends, &[]);
    let http = cairn_testkit::http();
    let relay = relay_key(&http, &a.url()).await;
    let alice = key("alice");
    // One inline blob (index) and one in the object store.
    for data in [
        bytes("replayed small", 900),
        bytes("replayed large", 300_000),
    ] {
        let id = BlobId::of(&data);
        let t = token(&relay, Method::Put, TokenTarget::Blob(id), unix_now() + 300);
        let put = |url: String| {
            http.put(format!("{url}/v1/blobs/{id}"))
                .header("authorization", auth_header(&t, &alice))
                .body(data.clone())
                .send()
        };
        assert_eq!(put(a.url()).await.unwrap().status(), StatusCode::CREATED);
        let deleted = delete_signed(&http, &a.url(), &relay, &alice, id).await;
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        // Captured and replayed to the other process, which never saw the
        // token: refused, and the blob its owner deleted stays deleted.
        assert_error(
            put(b.url()).await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "token_replayed",
        )
        .await;
        let gone = http
            .get(format!("{}/v1/blobs/{id}", b.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

#[tokio::test]
async fn concurrent_gc_in_two_relays_deletes_each_blob_exactly_once() {
    let Some(backends) = backends() else { return };
    let storage = StorageConfig::ScaleOut(backends);
    let start = |storage: StorageConfig| {
        TestRelay::start_with(move |c| {
            c.storage = storage;
            c.retention = Duration::from_secs(100);
        })
    };
    let a = start(storage.clone()).await;
    let b = start(storage).await;
    // Small blobs seeded in bulk, and blobs with objects uploaded through
    // either relay.
    const SEEDED: usize = 4000;
    let seeded: Vec<Vec<u8>> = (0..SEEDED)
        .map(|i| format!("expiring {i}").into_bytes())
        .collect();
    assert_eq!(a.handle.seed_blobs(seeded, None).await.unwrap(), SEEDED);
    let mut objects = Vec::new();
    for i in 0..40 {
        let data = bytes(&format!("expiring object {i}"), 20_000 + i);
        let relay = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            relay.put(&key("alice"), &data).await.status(),
            StatusCode::CREATED
        );
        objects.push(BlobId::of(&data));
    }
    assert_eq!(a.files().1, 40);
    a.clock.advance(101);
    b.clock.advance(101);
    let (ra, rb) = tokio::join!(a.handle.run_gc(), b.handle.run_gc());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.deleted_blobs + rb.deleted_blobs,
        (SEEDED + objects.len()) as u64,
        "a: {ra:?}, b: {rb:?}"
    );
    // Nothing is left: not in the index, not in the bucket.
    for id in &objects {
        assert_eq!(b.get(id).await.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(a.files().1, 0, "every object was removed");
    assert_eq!(a.handle.run_gc().await.unwrap().deleted_blobs, 0);
    a.handle.flush_accesses().await.unwrap();
    let (info, _) = info_document(&a.http, &a.handle.url()).await;
    assert_eq!(info.capacity_used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_process_during_uploads_loses_nothing_acknowledged() {
    let Some(backends) = backends() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_processes(dir.path(), &backends, &[]);
    let http = cairn_testkit::http();
    let url = a.url();
    let relay = relay_key(&http, &url).await;
    let acked: Arc<Mutex<Vec<BlobId>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..6 {
        let (http, url, acked) = (http.clone(), url.clone(), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            let signer = key(&format!("writer {w}"));
            for i in 0.. {
                let size = [1_000, 40_000, 300_000, 9 << 20][i % 4] + w;
                let data = bytes(&format!("{w}/{i}"), size);
                let id = BlobId::of(&data);
                match upload(&http, &url, &relay, &signer, id, data).await {
                    Ok(r) if r.status() == StatusCode::CREATED => acked.lock().unwrap().push(id),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while acked.lock().unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "too few uploads acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    for id in &acked {
        let r = http
            .get(format!("{}/v1/blobs/{id}", b.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "acknowledged blob {id} lost");
        assert_eq!(BlobId::of(&r.bytes().await.unwrap()), *id, "{id} corrupt");
    }
    // A restarted A serves them too, and cleans its own temp files.
    let args = backend_args(&backends);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = RelayProcess::spawn(Path::new(BIN), &dir.path().join("a"), &args);
    assert!(
        std::fs::read_dir(dir.path().join("a/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    let last = acked.last().unwrap();
    let r = http
        .get(format!("{}/v1/blobs/{last}", a.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// A TCP forwarder the test can cut and restore: a backend that goes away
/// and comes back, for real, from the relay's point of view.
struct Outage {
    addr: String,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Outage {
    async fn in_front_of(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let (d, c) = (Arc::clone(&down), Arc::clone(&connections));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: connection reset
                }
                let upstream = upstream.clone();
                c.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            addr,
            down,
            connections,
        }
    }

    /// Refuses new connections and cuts the open ones.
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.connections.lock().unwrap().abort_all();
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// `host:port` of a URL like `scheme://[user@]host:port/...`.
fn host_port(url: &str) -> (String, String) {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    let prefix = &url[..url.find(host_port).unwrap()];
    let suffix = &url[url.find(host_port).unwrap() + host_port.len()..];
    (host_port.to_owned(), format!("{prefix}{{}}{suffix}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_gets_503_and_the_relay_recovers_when_it_returns() {
    let Some(mut backends) = backends() else {
        return;
    };
    let (pg_addr, pg_url) = host_port(&backends.postgres.url);
    let (s3_addr, s3_url) = host_port(&backends.s3.endpoint);
    let pg = Outage::in_front_of(pg_addr).await;
    let s3 = Outage::in_front_of(s3_addr).await;
    backends.postgres.url = pg_url.replace("{}", &pg.addr);
    backends.s3.endpoint = s3_url.replace("{}", &s3.addr);
    let relay = TestRelay::start_with(|c| c.storage = StorageConfig::ScaleOut(backends)).await;
    let alice = key("alice");
    let small = bytes("before the outage", 500);
    let large = bytes("large before the outage", 200_000);
    for data in [&small, &large] {
        assert_eq!(relay.put(&alice, data).await.status(), StatusCode::CREATED);
    }

    // The database goes away: nothing can be stored or found; the relay
    // says so, and that retrying makes sense.
    pg.cut();
    let new = bytes("during the outage", 700);
    let r = relay.put(&alice, &new).await;
    assert_eq!(r.headers()["retry-after"], "5");
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable").await;
    assert_error(
        relay.get(&BlobId::of(&small)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
    )
    .await;
    pg.restore();
    assert_eq!(relay.put(&alice, &new).await.status(), StatusCode::CREATED);
    for data in [&small, &large, &new] {
        let got = relay.get(&BlobId::of(data)).await;
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    }

    // The object store goes away: large bodies can be neither stored nor
    // served; small ones (in the index) still can.
    s3.cut();
    let large_new = bytes("large during the outage", 300_000);
    assert_error(
        relay.put(&alice, &large_new).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
    )
    .await;
    assert_error(
        relay.get(&BlobId::of(&large)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
    )
    .await;
    assert_eq!(
        relay.get(&BlobId::of(&small)).await.status(),
        StatusCode::OK
    );
    s3.restore();
    assert_eq!(
        relay.put(&alice, &large_new).await.status(),
        StatusCode::CREATED
    );
    for data in [&small, &large, &new, &large_new] {
        let got = relay.get(&BlobId::of(data)).await;
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    // The refused upload left nothing behind.
    assert_eq!(relay.files(), (0, 2));
}

#[test]
fn host_port_splits_urls() {
    assert_eq!(
        host_port("postgres://u:p@127.0.0.1:5432/db"),
        (
            "127.0.0.1:5432".to_owned(),
            "postgres://u:p@{}/db".to_owned()
        )
    );
    assert_eq!(
        host_port("http://127.0.0.1:9000"),
        ("127.0.0.1:9000".to_owned(), "http://{}".to_owned())
    );
}

/// A config file for `migrate` and `serve --config`.
fn config_file(path: &Path, data: &Path, backends: Option<&ScaleOutConfig>) {
    let mut text = format!("data = {:?}\n", data.display().to_string());
    if let Some(b) = backends {
        text.push_str(&format!(
            "postgres = {:?}\npostgres_schema = {:?}\ns3_endpoint = {:?}\ns3_bucket = {:?}\n\
             s3_region = {:?}\ns3_prefix = {:?}\ns3_access_key = {:?}\ns3_secret_key = {:?}\n",
            b.postgres.url,
            b.postgres.schema.clone().unwrap_or_default(),
            b.s3.endpoint,
            b.s3.bucket,
            b.s3.region,
            b.s3.prefix,
            b.s3.access_key_id,
            b.s3.secret_access_key,
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn run_migrate(from: &Path, to: &Path) -> (bool, serde_json::Value) {
    let (status, out) = cairn_testkit::run(
        Path::new(BIN),
        &[
            "migrate",
            "--from",
            &cairn_testkit::arg(from),
            "--to",
            &cairn_testkit::arg(to),
            "--json",
        ],
    );
    (status.success(), serde_json::from_str(&out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_a_relay_to_postgres_and_s3_and_back_verified() {
    let Some(backends) = backends() else { return };
    let relay = TestRelay::start_with(|c| c.storage = StorageConfig::Embedded).await;
    let alice = key("alice");
    let blobs: Vec<Vec<u8>> = [10, 5_000, 100_000, 3 << 20]
        .iter()
        .map(|&n| bytes(&format!("migrating {n}"), n))
        .collect();
    for data in &blobs {
        assert_eq!(relay.put(&alice, data).await.status(), StatusCode::CREATED);
    }
    // Bob claims one of them: he is its co-owner wherever it moves.
    let bob = key("bob");
    let shared = BlobId::of(&blobs[1]);
    assert_eq!(relay.claim(&bob, shared).await.status(), StatusCode::OK);
    let mailbox = key("mailbox");
    assert_eq!(
        relay.put_head(&mailbox, "laptop", 7).await.status(),
        StatusCode::CREATED
    );
    let identity = relay.key();
    let dir = relay.dir.path().to_path_buf();
    let stopped = relay.stop().await;

    let (embedded, scaled, back) = (dir.join("a.toml"), dir.join("b.toml"), dir.join("c.toml"));
    config_file(&embedded, &dir.join("data"), None);
    config_file(&scaled, &dir.join("data-b"), Some(&backends));
    config_file(&back, &dir.join("data-c"), None);
    let (ok, report) = run_migrate(&embedded, &scaled);
    assert!(ok, "{report}");
    assert_eq!(report["blobs_copied"], 4, "{report}");
    assert_eq!(report["heads"], 1, "{report}");
    // Again: everything is there already; nothing is copied twice.
    let (ok, report) = run_migrate(&embedded, &scaled);
    assert!(ok);
    assert_eq!(
        (
            report["blobs_copied"].as_u64(),
            report["blobs_present"].as_u64()
        ),
        (Some(0), Some(4)),
        "{report}"
    );

    // The migrated relay is the same relay, serving the same data.
    let http = cairn_testkit::http();
    let served = RelayProcess::spawn(
        Path::new(BIN),
        &dir.join("data-b"),
        &["--config", &cairn_testkit::arg(&scaled)],
    );
    assert_eq!(relay_key(&http, &served.url()).await, identity);
    for data in &blobs {
        let got = http
            .get(format!("{}/v1/blobs/{}", served.url(), BlobId::of(data)))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    let got = http
        .get(format!(
            "{}/v1/heads/{}/laptop",
            served.url(),
            mailbox.verifying_key()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    // Bob's claim came along: his delete leaves Alice's copy.
    let deleted = delete_signed(&http, &served.url(), &identity, &bob, shared).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(deleted.headers()["cairn-owners-left"], "1");
    assert!(served.terminate().success());

    // And back into an embedded store, which fsck finds consistent.
    let (ok, report) = run_migrate(&scaled, &back);
    assert!(ok, "{report}");
    assert_eq!(report["blobs_copied"], 4);
    let fsck = cairn_relay::fsck(&dir.join("data-c"), false, unix_now()).unwrap();
    assert!(fsck.is_clean(), "{fsck:?}");
    assert_eq!(fsck.indexed, 4);

    // A corrupt blob in the source is reported and not copied.
    let hex = BlobId::of(&blobs[2]).to_string();
    let file = dir.join("data/blobs").join(&hex[..2]).join(&hex);
    let mut damaged = std::fs::read(&file).unwrap();
    damaged[77] ^= 1;
    std::fs::write(&file, damaged).unwrap();
    let fresh = dir.join("d.toml");
    config_file(&fresh, &dir.join("data-d"), None);
    let (ok, report) = run_migrate(&embedded, &fresh);
    assert!(!ok);
    assert_eq!(report["corrupt_in_source"], serde_json::json!([hex]));
    assert_eq!(report["blobs_copied"], 3);

    // The same store on both sides is refused, as is another relay's
    // data directory.
    let (status, _) = cairn_testkit::run(
        Path::new(BIN),
        &[
            "migrate",
            "--from",
            &cairn_testkit::arg(&embedded),
            "--to",
            &cairn_testkit::arg(&embedded),
        ],
    );
    assert!(!status.success());
    drop(stopped);
}
