//! A relay per test, in its own temp directory, on port 0.

use cairn_proto::{BlobId, Method, SigningKey, TokenTarget, VerifyingKey};
use cairn_relay::{
    Clock, PostgresConfig, RelayConfig, RelayHandle, S3Config, ScaleOutConfig, StorageConfig,
};
use cairn_testkit::{auth_header, token, unix_now};
use reqwest::StatusCode;
use serde_json::Value;

pub(crate) struct TestRelay {
    pub(crate) handle: RelayHandle,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) clock: Clock,
    pub(crate) http: reqwest::Client,
    config: RelayConfig,
}

impl TestRelay {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(adjust: impl FnOnce(&mut RelayConfig)) -> Self {
        // CAIRN_LOG=debug shows the relays' logs with a failing test's output.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = RelayConfig::new(dir.path().join("data"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        if suite_backend_is_scale_out() {
            config.storage = StorageConfig::ScaleOut(
                scale_out_from_env().expect("CAIRN_TEST_BACKEND=scaleout needs the backends"),
            );
        }
        adjust(&mut config);
        // A manual clock that starts at the real time, so tokens made with
        // the real time are valid, and tests can move it forward.
        let clock = Clock::manual(unix_now());
        let handle = cairn_relay::start_with_clock(config.clone(), clock.clone())
            .await
            .unwrap();
        Self {
            handle,
            dir,
            clock,
            http: cairn_testkit::http(),
            config,
        }
    }

    /// Stops the relay gracefully, keeping its data and address.
    pub(crate) async fn stop(self) -> StoppedRelay {
        let Self {
            handle,
            dir,
            clock,
            http,
            mut config,
        } = self;
        config.listen = handle.addr();
        handle.shutdown().await;
        StoppedRelay {
            dir,
            clock,
            http,
            config,
        }
    }

    /// This relay as a peer entry for others' configuration.
    pub(crate) fn as_peer(&self) -> cairn_proto::RelayRef {
        cairn_proto::RelayRef {
            url: cairn_proto::RelayUrl::new(self.handle.url()).unwrap(),
            key: self.key(),
        }
    }

    pub(crate) fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn key(&self) -> VerifyingKey {
        self.handle.key()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }

    pub(crate) fn blob_url(&self, id: &BlobId) -> String {
        self.url(&format!("/v1/blobs/{id}"))
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now().0
    }

    /// A valid header for `method` on blob `id`, signed by `signer`.
    pub(crate) fn auth(&self, signer: &SigningKey, method: Method, id: BlobId) -> String {
        let t = token(&self.key(), method, TokenTarget::Blob(id), self.now() + 300);
        auth_header(&t, signer)
    }

    pub(crate) async fn put(&self, signer: &SigningKey, data: &[u8]) -> reqwest::Response {
        let id = BlobId::of(data);
        self.http
            .put(self.blob_url(&id))
            .header("authorization", self.auth(signer, Method::Put, id))
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// The body of a GET of `path` (`/metrics`, `/`), as text.
    pub(crate) async fn get_text(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    pub(crate) async fn get(&self, id: &BlobId) -> reqwest::Response {
        self.http.get(self.blob_url(id)).send().await.unwrap()
    }

    pub(crate) async fn delete(&self, signer: &SigningKey, id: BlobId) -> reqwest::Response {
        self.http
            .delete(self.blob_url(&id))
            .header("authorization", self.auth(signer, Method::Delete, id))
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/blobs/{id}`: `signer` claims the blob.
    pub(crate) async fn claim(&self, signer: &SigningKey, id: BlobId) -> reqwest::Response {
        self.http
            .post(self.blob_url(&id))
            .header("authorization", self.auth(signer, Method::Post, id))
            .send()
            .await
            .unwrap()
    }

    /// Files of uploads in progress (`tmp/`) and of blob bodies.
    pub(crate) fn files(&self) -> (usize, usize) {
        let count = |dir: std::path::PathBuf| walk(&dir).len();
        (count(self.data().join("tmp")), count(self.bodies_dir()))
    }

    /// Where blob bodies are kept: the embedded store's `blobs/`, or the
    /// folder the test S3 server (s3s-fs) keeps this relay's objects in.
    pub(crate) fn bodies_dir(&self) -> std::path::PathBuf {
        match &self.config.storage {
            StorageConfig::ScaleOut(backends) => {
                std::path::PathBuf::from(std::env::var("CAIRN_TEST_S3_ROOT").unwrap_or_default())
                    .join(&backends.s3.bucket)
                    .join(&backends.s3.prefix)
                    .join("blobs")
            }
            _ => self.data().join("blobs"),
        }
    }

    /// The file holding blob `id`'s body (if it is not small enough to live
    /// in the index).
    pub(crate) fn body_path(&self, id: &BlobId) -> std::path::PathBuf {
        let hex = id.to_string();
        match &self.config.storage {
            StorageConfig::ScaleOut(_) => self.bodies_dir().join(hex),
            _ => self.bodies_dir().join(&hex[..2]).join(hex),
        }
    }

    /// The configuration it was started with.
    pub(crate) fn config(&self) -> &RelayConfig {
        &self.config
    }
}

/// Files under `dir`, recursively, except the store's shard marker.
pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.file_name().is_none_or(|n| n != ".shards-v1") {
                out.push(p);
            }
        }
    }
    out
}

/// True when the suite runs against the scale-out backends
/// (`CAIRN_TEST_BACKEND=scaleout`; `.ci/run` runs it both ways).
pub(crate) fn suite_backend_is_scale_out() -> bool {
    std::env::var("CAIRN_TEST_BACKEND").is_ok_and(|v| v == "scaleout")
}

/// Scale-out backends for one relay from the test servers `.ci/run`
/// starts (`scripts/backends.sh`): a fresh PostgreSQL schema and S3 prefix
/// each time, so relays never see each other's data. `None` (after saying
/// why) when the servers are not configured.
#[allow(clippy::print_stderr, reason = "the skip reason is the test's report")]
pub(crate) fn scale_out_from_env() -> Option<ScaleOutConfig> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(url) = var("CAIRN_TEST_PG_URL") else {
        eprintln!(
            "skipped: CAIRN_TEST_PG_URL and CAIRN_TEST_S3_* are not set \
             (run `bash scripts/backends.sh start DIR` and source DIR/env)"
        );
        return None;
    };
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).unwrap();
    let name: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    Some(fresh_scale_out(&url, &format!("t{name}")))
}

/// Scale-out backends in schema and prefix `name`.
fn fresh_scale_out(url: &str, name: &str) -> ScaleOutConfig {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    ScaleOutConfig {
        postgres: PostgresConfig {
            url: url.to_owned(),
            schema: Some(name.to_owned()),
            pool_size: 8,
        },
        s3: S3Config {
            endpoint: var("CAIRN_TEST_S3_ENDPOINT"),
            bucket: var("CAIRN_TEST_S3_BUCKET"),
            region: var("CAIRN_TEST_S3_REGION"),
            prefix: name.to_owned(),
            access_key_id: var("CAIRN_TEST_S3_ACCESS_KEY"),
            secret_access_key: var("CAIRN_TEST_S3_SECRET_KEY"),
        },
    }
}

/// A relay stopped by [`TestRelay::stop`].
pub(crate) struct StoppedRelay {
    dir: tempfile::TempDir,
    clock: Clock,
    http: reqwest::Client,
    config: RelayConfig,
}

impl StoppedRelay {
    /// Starts it again on the same address and data, with `peers`.
    pub(crate) async fn start(self, peers: &[cairn_proto::RelayRef]) -> TestRelay {
        let Self {
            dir,
            clock,
            http,
            mut config,
        } = self;
        config.peers = peers.to_vec();
        // A request the stopped relay abandoned at shutdown may still hold
        // its index for a moment in this process (a real relay exits).
        let mut tries = 0;
        let handle = loop {
            match cairn_relay::start_with_clock(config.clone(), clock.clone()).await {
                Ok(handle) => break handle,
                Err(e) if format!("{e:?}").contains("DatabaseAlreadyOpen") && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("restarting the relay: {e:?}"),
            }
        };
        TestRelay {
            handle,
            dir,
            clock,
            http,
            config,
        }
    }
}

/// Asserts the response is an error with `status` and machine code `code`.
pub(crate) async fn assert_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> Value {
    assert_eq!(response.status(), status, "expected {code}");
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body
}

/// Fetches a relay's info document: the verified record and the whole JSON
/// body.
pub(crate) async fn info_document(
    http: &reqwest::Client,
    url: &str,
) -> (cairn_proto::RelayInfo, Value) {
    let body: Value = http
        .get(format!("{url}/.well-known/cairn-relay"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record =
        cairn_proto::SignedRecord::from_base64url(body["record"].as_str().unwrap()).unwrap();
    let verified = record.verify::<cairn_proto::RelayInfo>().unwrap();
    (verified.into_record(), body)
}

/// The key a relay's info document is verifiably signed with.
pub(crate) async fn relay_key(http: &reqwest::Client, url: &str) -> VerifyingKey {
    info_document(http, url).await.0.relay
}

/// `PUT`s `body` as blob `id` to the relay at `url` with a fresh token.
pub(crate) async fn upload(
    http: &reqwest::Client,
    url: &str,
    relay: &VerifyingKey,
    signer: &SigningKey,
    id: BlobId,
    body: impl Into<reqwest::Body>,
) -> reqwest::Result<reqwest::Response> {
    let t = token(relay, Method::Put, TokenTarget::Blob(id), unix_now() + 600);
    http.put(format!("{url}/v1/blobs/{id}"))
        .header("authorization", auth_header(&t, signer))
        .body(body)
        .send()
        .await
}

/// Deterministic pseudo-random bytes.
pub(crate) fn bytes(label: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(label.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A relay process planned before any starts: its data directory, identity
/// key and port are fixed up front, so that relays can name each other as
/// peers and keep their addresses across restarts.
pub(crate) struct PlannedRelay {
    pub(crate) data: std::path::PathBuf,
    pub(crate) key: VerifyingKey,
    pub(crate) port: u16,
}

impl PlannedRelay {
    /// `n` relays under `dir` (`relay0`, `relay1`, …), keys created.
    pub(crate) fn plan(dir: &std::path::Path, n: usize) -> Vec<Self> {
        (0..n)
            .map(|i| {
                let data = dir.join(format!("relay{i}"));
                std::fs::create_dir_all(&data).unwrap();
                let (signing, _) =
                    cairn_relay::load_or_create_key(&data.join("relay.key")).unwrap();
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                Self {
                    data,
                    key: signing.verifying_key(),
                    port,
                }
            })
            .collect()
    }

    /// The address it listens on.
    pub(crate) fn listen(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its `--peer` value.
    pub(crate) fn as_peer_flag(&self) -> String {
        format!("http://127.0.0.1:{}={}", self.port, self.key)
    }
}
