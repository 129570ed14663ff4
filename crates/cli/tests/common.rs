//! Relays on loopback and a `cairn` runner.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_relay::{Clock, RelayConfig, RelayHandle};
use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cairn");
pub(crate) const PASSPHRASE: &str = "correct horse battery staple";

/// A relay in this process with its own data directory.
pub(crate) struct Relay {
    handle: Option<RelayHandle>,
    pub(crate) dir: tempfile::TempDir,
    addr: SocketAddr,
    adjust: Adjust,
    clock: Clock,
}

/// Changes a test makes to a relay's configuration, kept for restarts.
type Adjust = std::sync::Arc<dyn Fn(&mut RelayConfig) + Send + Sync>;

impl Relay {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A relay with its configuration adjusted (limits, mostly).
    pub(crate) async fn start_with(
        adjust: impl Fn(&mut RelayConfig) + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_clock(adjust, Clock::system()).await
    }

    /// A relay whose time is `clock` (a manual clock lets a test move
    /// retention along without waiting).
    pub(crate) async fn start_with_clock(
        adjust: impl Fn(&mut RelayConfig) + Send + Sync + 'static,
        clock: Clock,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let adjust: Adjust = std::sync::Arc::new(adjust);
        let handle = start_at(
            &dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
            &adjust,
            &clock,
        )
        .await;
        let addr = handle.addr();
        Self {
            handle: Some(handle),
            dir,
            addr,
            adjust,
            clock,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops serving (the port closes; the data stays).
    pub(crate) async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }

    /// Starts again on the same port from the same data (same key).
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.handle = Some(start_at(&self.data(), self.addr, &self.adjust, &self.clock).await);
    }

    /// The running relay (tests drive federation through it).
    pub(crate) fn handle(&self) -> &RelayHandle {
        self.handle.as_ref().expect("the relay is running")
    }

    /// This relay as another relay's peer.
    pub(crate) fn as_peer(&self) -> cairn_client::proto::RelayRef {
        cairn_client::proto::RelayRef {
            url: cairn_client::proto::RelayUrl::new(self.url()).unwrap(),
            key: self.handle().key(),
        }
    }

    /// Whether it is serving.
    pub(crate) fn is_up(&self) -> bool {
        self.handle.is_some()
    }

    /// Requests it has answered so far, from its Prometheus metrics.
    pub(crate) async fn requests_answered(&self) -> u64 {
        let text = cairn_testkit::http()
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("cairn_http_requests_total{"))
            .filter(|l| !l.contains("route=\"/metrics\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Replaces this relay with a different one (new data, new key) on the
    /// same address: what an impostor at a known URL looks like.
    pub(crate) async fn replace_with_impostor(&mut self) {
        self.stop().await;
        let other = self.dir.path().join("impostor");
        self.handle = Some(start_at(&other, self.addr, &self.adjust, &self.clock).await);
    }

    /// The file holding blob `id` on this relay's disk, if it is a file
    /// (blobs of 16 KiB or less live inside the index).
    /// The status a `GET` of blob `id` gets.
    pub(crate) async fn blob_status(&self, id: &str) -> u16 {
        cairn_testkit::http()
            .get(format!("{}/v1/blobs/{id}", self.url()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A raw `PUT` of `bytes` signed by `signer` (a stranger's upload, or a
    /// copy made outside the client): the status.
    pub(crate) async fn upload_as(
        &self,
        signer: &cairn_client::proto::SigningKey,
        bytes: Vec<u8>,
    ) -> u16 {
        let blob = cairn_client::proto::BlobId::of(&bytes);
        let token = cairn_testkit::token(
            &self.handle().key(),
            cairn_client::proto::Method::Put,
            cairn_client::proto::TokenTarget::Blob(blob),
            cairn_testkit::unix_now() + 300,
        );
        cairn_testkit::http()
            .put(format!("{}/v1/blobs/{blob}", self.url()))
            .header("authorization", cairn_testkit::auth_header(&token, signer))
            .body(bytes)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A raw `DELETE` of blob `id` signed by `signer`, as a device acting
    /// outside the client's rules would send it: the status, and how many
    /// owners keep the blob.
    pub(crate) async fn delete_as(
        &self,
        signer: &cairn_client::proto::SigningKey,
        id: &str,
    ) -> (u16, Option<String>) {
        let blob: cairn_client::proto::BlobId = id.parse().unwrap();
        let token = cairn_testkit::token(
            &self.handle().key(),
            cairn_client::proto::Method::Delete,
            cairn_client::proto::TokenTarget::Blob(blob),
            cairn_testkit::unix_now() + 300,
        );
        let response = cairn_testkit::http()
            .delete(format!("{}/v1/blobs/{blob}", self.url()))
            .header("authorization", cairn_testkit::auth_header(&token, signer))
            .send()
            .await
            .unwrap();
        let left = response
            .headers()
            .get("cairn-owners-left")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), left)
    }

    pub(crate) fn blob_file(&self, id: &str) -> Option<PathBuf> {
        let path = self.data().join("blobs").join(&id[..2]).join(id);
        path.exists().then_some(path)
    }
}

async fn start_at(data: &Path, listen: SocketAddr, adjust: &Adjust, clock: &Clock) -> RelayHandle {
    let mut config = RelayConfig::new(data);
    config.listen = listen;
    adjust(&mut config);
    // A freed port can linger briefly; retry binding for a moment.
    for _ in 0..50 {
        match cairn_relay::start_with_clock(config.clone(), clock.clone()).await {
            Ok(handle) => return handle,
            Err(err) => {
                eprintln!("relay start: {err}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    panic!("relay did not start on {listen}");
}

/// What one `cairn` run produced.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "cairn failed: {self:#?}");
        &self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub(crate) fn err(&self) -> &str {
        assert_ne!(self.code, 0, "cairn should have failed: {self:#?}");
        &self.stderr
    }
}

/// One device: a cairn home directory.
pub(crate) struct Device {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) env: Vec<(String, String)>,
}

impl Device {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: vec![
                ("CAIRN_PASSPHRASE".into(), PASSPHRASE.into()),
                // Key files with a cheap KDF: tests unlock them hundreds of times.
                ("CAIRN_INSECURE_KDF_COST".into(), "8".into()),
            ],
        }
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Makes a freshly initialised home look as the release before the
    /// per-relay layout left it (home format 1, no layout recorded): the
    /// client then keeps the identity in the shared layout, exactly as
    /// that release wrote it, until its next rotation. Call it before the
    /// first relay is added, so nothing was published yet.
    pub(crate) fn make_previous_release(&self) {
        let path = self.home().join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let fields = config.as_object_mut().unwrap();
        fields.insert("version".into(), 1.into());
        fields.remove("per_relay_from");
        fields.remove("shared_through");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    /// Runs `cairn --home HOME ARGS...` off the async runtime.
    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[]).await
    }

    /// `cairn --home HOME ARGS...` with this device's environment.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--home")
            .arg(self.home())
            .args(args)
            .env_remove("CAIRN_HOME")
            .env_remove("CAIRN_RECOVERY_PHRASE");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    pub(crate) async fn run_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        finished(command).await
    }

    /// Runs `cairn --home HOME ARGS...` with standard output a pipe whose
    /// reading end is closed already: `cairn ls | head -1` once `head` is
    /// gone.
    pub(crate) async fn run_into_closed_pipe(&self, args: &[&str]) -> Run {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut command = self.command(args);
        command.stdout(writer);
        finished(command).await
    }

    /// Starts `cairn --home HOME ARGS...` without waiting for it.
    pub(crate) fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `cairn` like [`Device::run`] while sampling its resident memory;
    /// returns the run and the largest resident set seen, in bytes.
    pub(crate) async fn run_sampling_memory(&self, args: &[&str]) -> (Run, u64) {
        let mut child = self.spawn(args);
        tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut stdout = child.stdout.take().unwrap();
            let mut stderr = child.stderr.take().unwrap();
            let out = std::thread::spawn(move || {
                let mut text = String::new();
                stdout.read_to_string(&mut text).unwrap();
                text
            });
            let err = std::thread::spawn(move || {
                let mut text = String::new();
                stderr.read_to_string(&mut text).unwrap();
                text
            });
            let mut peak = 0;
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                peak = peak.max(cairn_testkit::rss_bytes(child.id()).unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let run = Run {
                code: status.code().unwrap_or(-1),
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
            };
            (run, peak)
        })
        .await
        .unwrap()
    }

    /// `cairn init`, returning its JSON (with the recovery phrase).
    pub(crate) async fn init(&self, name: &str) -> Value {
        self.run(&["init", "--name", name, "--json"]).await.json()
    }

    /// Writes `data` to a file called `name` in this device's directory,
    /// `cairn put`s it, and returns its blob id.
    pub(crate) async fn put_data(&self, name: &str, data: &[u8]) -> String {
        let put = self.put_report(name, data).await;
        put["blob"].as_str().unwrap().to_owned()
    }

    /// [`Device::put_data`], returning the whole `put --json` report.
    pub(crate) async fn put_report(&self, name: &str, data: &[u8]) -> Value {
        let src = self.dir.path().join(name);
        std::fs::write(&src, data).unwrap();
        self.run(&["put", src.to_str().unwrap(), "--json"])
            .await
            .json()
    }

    /// `cairn get`s the stored file `name` into this device's directory
    /// and returns its bytes.
    pub(crate) async fn get_data(&self, name: &str) -> Vec<u8> {
        let out = self.dir.path().join(format!("got-{name}"));
        self.run(&["get", name, "-o", out.to_str().unwrap()])
            .await
            .ok();
        std::fs::read(&out).unwrap()
    }

    /// Adds every relay.
    pub(crate) async fn add_relays(&self, relays: &[&Relay]) {
        for relay in relays {
            self.run(&["relay", "add", &relay.url()]).await.ok();
        }
    }

    /// A snapshot of every file in the home, to show a failure changed nothing.
    pub(crate) fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        walk(&self.home(), &mut files);
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    }
}

pub(crate) fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Whether any file under `dir` contains `needle`.
pub(crate) fn disk_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.into_iter().find(|path| {
        std::fs::read(path)
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

/// `len` bytes that contain `marker` at many places and are otherwise
/// pseudo-random (so nothing compresses or dedups it away).
pub(crate) fn data_with_marker(len: usize, marker: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(len as u64).to_le_bytes());
    let mut reader = hasher.finalize_xof();
    let mut block = [0u8; 4096];
    while out.len() < len {
        reader.fill(&mut block);
        out.extend_from_slice(&block);
        out.extend_from_slice(marker);
    }
    out.truncate(len);
    if len >= marker.len() {
        out[..marker.len()].copy_from_slice(marker);
    }
    out
}

/// A JSON list of strings (relay URLs, say), sorted, for comparing as sets.
pub(crate) fn sorted_strings(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string: {v}"))
                .to_owned()
        })
        .collect();
    out.sort_unstable();
    out
}

/// `N` fresh relays and a device named "laptop" using all of them.
pub(crate) async fn laptop_on_relays<const N: usize>() -> ([Relay; N], Device) {
    let mut started = Vec::with_capacity(N);
    for _ in 0..N {
        started.push(Relay::start().await);
    }
    let Ok(relays) = <[Relay; N]>::try_from(started) else {
        unreachable!("{N} relays were started");
    };
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&relays.each_ref()).await;
    (relays, laptop)
}

/// Three fresh relays and a device named "laptop" using all of them.
pub(crate) async fn laptop_on_three_relays() -> ([Relay; 3], Device) {
    laptop_on_relays().await
}

/// A head as revision 1 of the protocol wrote it (PROTOCOL.md §4.4):
/// signed by the mailbox key, in a slot any holder of that key can write.
pub(crate) fn legacy_head(
    mailbox: &cairn_client::proto::SigningKey,
    slot: &str,
    seq: u64,
    target: cairn_client::proto::BlobId,
) -> cairn_client::proto::SignedRecord {
    let head = cairn_client::proto::HeadRecord {
        mailbox: mailbox.verifying_key(),
        slot: cairn_client::proto::Slot::new(slot).unwrap(),
        seq,
        target,
        timestamp: cairn_client::proto::Timestamp(1_790_000_000),
    };
    cairn_client::proto::SignedRecord::sign(&head, mailbox).unwrap()
}

/// Serves `app` on a fresh loopback port; its base URL.
pub(crate) async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The HTTP client a proxy passes requests on with: redirects are the
/// client's to follow, not the proxy's.
pub(crate) fn proxy_http() -> reqwest::Client {
    cairn_testkit::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends a request a proxy received (its head `parts` and whole `body`) to
/// the relay at `upstream` unchanged, and answers what the relay answered.
pub(crate) async fn pass_on(
    http: &reqwest::Client,
    upstream: &str,
    parts: axum::http::request::Parts,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::http::header;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut headers = parts.headers.clone();
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    let answer = http
        .request(parts.method, format!("{upstream}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let mut response = axum::response::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    response
        .body(axum::body::Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

/// Runs `command` to its end off the async runtime, with what it printed
/// (standard output is empty when it went elsewhere).
async fn finished(mut command: Command) -> Run {
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
