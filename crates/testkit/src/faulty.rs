//! A relay that misbehaves on demand: a proxy in front of a real relay.
//!
//! [`FaultyRelay`] listens on a loopback port and forwards every request to
//! an upstream relay (method, path and query, headers including
//! `Authorization`, bodies streamed both ways), so it has the upstream's
//! key, data and info document. A test switches [`Faults`] on and off while
//! it runs; each one models a way a relay can fail its users:
//!
//! - `corrupt`: serves other bytes than it was given (one byte flipped in
//!   every blob body and every audit proof). A client must notice by hashing
//!   or by the proof, and fetch elsewhere.
//! - `drop_uploads`: says it stored an upload (`201`) and throws the bytes
//!   away. Only an audit can tell.
//! - `forget`: loses blobs it held ("drop later"): reads and proofs answer
//!   `404 not_found` although the upstream still has them. `Blobs::All`
//!   withholds everything.
//! - `stall`: a download sends its headers and half its bytes, then
//!   nothing more while the connection stays open. A client must give up
//!   (its read timeout: `CAIRN_READ_TIMEOUT_SECS` shortens it in tests) and
//!   fetch elsewhere; stalling is unavailability, not misbehaviour.
//! - `slow`: every answer is late. Slowness is not misbehaviour; a client
//!   should rank the relay last, not flag it.
//! - `stale_heads`: serves old heads forever (the first successful answer
//!   for each head path after the fault is switched on), while head writes
//!   still reach the upstream. A client must trust the newest head of any
//!   relay and notice the stale one.
//! - `lie_info`: its signed info document claims retention and free space
//!   it does not have (re-signed with the upstream's key, so the signature
//!   is valid). Nothing in one document shows the lie.
//!
//! The proxy is not a relay of its own: the upstream keeps enforcing tokens,
//! limits and quotas. Faulted bodies are buffered whole, so keep faulted
//! blobs test-sized.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use cairn_proto::{BlobId, RelayInfo, SignedRecord, SigningKey};
use futures_util::TryStreamExt as _;

/// Largest body the proxy buffers to fault it (blobs, proofs, heads, info).
const MAX_BUFFERED: usize = 64 << 20;

/// Which blobs a fault applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Blobs {
    /// None: the fault is off.
    #[default]
    None,
    /// These blobs only.
    Only(BTreeSet<BlobId>),
    /// Every blob.
    All,
}

impl Blobs {
    /// Whether `id` is affected.
    pub fn contains(&self, id: &BlobId) -> bool {
        match self {
            Self::None => false,
            Self::Only(ids) => ids.contains(id),
            Self::All => true,
        }
    }

    /// Adds `id` (no change when every blob is affected already).
    pub fn add(&mut self, id: BlobId) {
        match self {
            Self::None => *self = Self::Only(BTreeSet::from([id])),
            Self::Only(ids) => {
                ids.insert(id);
            }
            Self::All => {}
        }
    }
}

/// What the info document claims instead of the truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoLie {
    /// Free bytes claimed. The claimed total grows to fit, so the document
    /// stays consistent (free ≤ total − used) and decodes.
    pub capacity_free: u64,
    /// Retention claimed, in seconds.
    pub retention_secs: u64,
}

/// The faults switched on. All off by default: a transparent proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Blob and proof bodies served with one byte flipped.
    pub corrupt: Blobs,
    /// Uploads answered `201 stored` and never forwarded.
    pub drop_uploads: Blobs,
    /// Blobs whose reads, probes and proofs answer `404 not_found`.
    pub forget: Blobs,
    /// Blobs whose downloads stall: the headers and the first half of the
    /// body arrive, then nothing more, ever (the connection stays open).
    pub stall: Blobs,
    /// Delay before every answer.
    pub slow: Option<Duration>,
    /// Head reads answered as they were when first seen with this on.
    pub stale_heads: bool,
    /// Info document figures claimed.
    pub lie_info: Option<InfoLie>,
}

/// A relay that misbehaves as told; see the [module docs](self).
///
/// The server task stops when this is dropped.
#[derive(Debug)]
pub struct FaultyRelay {
    url: String,
    state: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the faults and the proxy's recorded answers are now.
#[derive(Debug, Default)]
struct Shared {
    faults: Faults,
    /// Answers a fault changed or made up so far.
    faulted: u64,
    /// Head answers pinned by `stale_heads`, by path and query.
    pinned: HashMap<String, Recorded>,
}

/// A buffered answer.
#[derive(Clone, Debug)]
struct Recorded {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Recorded {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

#[derive(Clone, Debug)]
struct Proxy {
    upstream: String,
    key: SigningKey,
    http: reqwest::Client,
    state: Arc<Mutex<Shared>>,
}

impl Proxy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FaultyRelay {
    /// Starts a proxy on `127.0.0.1:0` in front of the relay at `upstream`
    /// (a base URL), whose signing key is `key` (to re-sign lying info
    /// documents). No fault is on.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound (a test failure).
    pub async fn start(upstream: &str, key: SigningKey) -> Self {
        let state = Arc::new(Mutex::new(Shared::default()));
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            key,
            http: crate::http_builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("building an HTTP client"),
            state: state.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// The proxy's base URL: what a device adds to its relay set.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The faults on now.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Changes the faults. Switching `stale_heads` off forgets the pinned
    /// heads, so switching it on again pins fresh ones.
    pub fn update(&self, change: impl FnOnce(&mut Faults)) {
        let mut shared = self.lock();
        change(&mut shared.faults);
        if !shared.faults.stale_heads {
            shared.pinned.clear();
        }
    }

    /// How many answers a fault changed or made up so far (a slow answer
    /// counts): shows a test that its fault was exercised.
    pub fn faulted(&self) -> u64 {
        self.lock().faulted
    }

    /// Switches every fault off.
    pub fn heal(&self) {
        self.update(|f| *f = Faults::default());
    }

    /// Corrupts every blob and proof served.
    pub fn corrupt_all(&self) {
        self.update(|f| f.corrupt = Blobs::All);
    }

    /// Drops every upload after answering that it was stored.
    pub fn drop_uploads(&self) {
        self.update(|f| f.drop_uploads = Blobs::All);
    }

    /// Forgets blob `id` from now on.
    pub fn forget(&self, id: BlobId) {
        self.update(|f| f.forget.add(id));
    }

    /// Stalls downloads of blob `id` halfway, from now on.
    pub fn stall(&self, id: BlobId) {
        self.update(|f| f.stall.add(id));
    }

    /// Answers every blob read, probe and proof with 404.
    pub fn withhold(&self) {
        self.update(|f| f.forget = Blobs::All);
    }

    /// Delays every answer by `delay`.
    pub fn slow(&self, delay: Duration) {
        self.update(|f| f.slow = Some(delay));
    }

    /// Serves the heads it sees next forever.
    pub fn stale_heads(&self) {
        self.update(|f| f.stale_heads = true);
    }

    /// Makes the info document claim `lie`.
    pub fn lie_info(&self, lie: InfoLie) {
        self.update(|f| f.lie_info = Some(lie));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FaultyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a request is about, as far as faults care.
enum Target {
    /// `/v1/blobs/{id}` (`proof: false`) or `/v1/blobs/{id}/proof`.
    Blob {
        id: BlobId,
        proof: bool,
    },
    /// `/v1/heads/{mailbox}` or `/v1/heads/{mailbox}/{slot}`.
    Heads,
    /// `/.well-known/cairn-relay`.
    Info,
    Other,
}

fn target(path: &str) -> Target {
    if let Some(rest) = path.strip_prefix("/v1/blobs/") {
        let (id, proof) = match rest.strip_suffix("/proof") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        return match id.parse() {
            Ok(id) => Target::Blob { id, proof },
            Err(_) => Target::Other,
        };
    }
    if path.starts_with("/v1/heads/") {
        return Target::Heads;
    }
    if path == "/.well-known/cairn-relay" {
        return Target::Info;
    }
    Target::Other
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let faults = proxy.lock().faults.clone();
    if let Some(delay) = faults.slow {
        tokio::time::sleep(delay).await;
    }
    let (response, faulted) = answer(&proxy, &faults, request).await;
    if faulted || faults.slow.is_some() {
        proxy.lock().faulted += 1;
    }
    response
}

/// The answer to `request` under `faults`, and whether a fault changed or
/// made it up.
async fn answer(proxy: &Proxy, faults: &Faults, request: Request) -> (Response, bool) {
    let path = request.uri().path().to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let reads = method == Method::GET || method == Method::HEAD;
    match target(&path) {
        Target::Blob { id, .. } if reads && faults.forget.contains(&id) => (not_found(&id), true),
        Target::Blob { id, proof: false }
            if method == Method::PUT && faults.drop_uploads.contains(&id) =>
        {
            // Read the upload to its end, as a relay storing it would.
            let drained = request
                .into_body()
                .into_data_stream()
                .try_for_each(|_| async { Ok(()) })
                .await;
            let response = match drained {
                Ok(()) => (
                    StatusCode::CREATED,
                    axum::Json(serde_json::json!({"id": id.to_string(), "stored": true})),
                )
                    .into_response(),
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            };
            (response, true)
        }
        Target::Blob { id, .. } if method == Method::GET && faults.corrupt.contains(&id) => {
            match buffered(proxy, request, &path_and_query).await {
                Ok(mut answer) if answer.status.is_success() && !answer.body.is_empty() => {
                    let mut body = answer.body.to_vec();
                    let middle = body.len() / 2;
                    body[middle] ^= 0x01;
                    answer.body = body.into();
                    (answer.into_response(), true)
                }
                Ok(answer) => (answer.into_response(), false),
                Err(response) => (response, false),
            }
        }
        Target::Blob { id, proof: false }
            if method == Method::GET && faults.stall.contains(&id) =>
        {
            match buffered(proxy, request, &path_and_query).await {
                Ok(answer) if answer.status.is_success() && answer.body.len() > 1 => {
                    use futures_util::StreamExt as _;
                    let full = answer.body.len();
                    let half = answer.body.slice(..full / 2);
                    let first =
                        futures_util::stream::once(async move { Ok::<_, std::io::Error>(half) });
                    let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
                    let mut response = Response::new(Body::from_stream(first.chain(never)));
                    *response.status_mut() = answer.status;
                    *response.headers_mut() = answer.headers;
                    // The whole length is promised, so the reader waits.
                    response
                        .headers_mut()
                        .insert(header::CONTENT_LENGTH, full.into());
                    (response, true)
                }
                Ok(answer) => (answer.into_response(), false),
                Err(response) => (response, false),
            }
        }
        Target::Heads if method == Method::GET && faults.stale_heads => {
            stale_head(proxy, request, &path_and_query).await
        }
        Target::Info if method == Method::GET => match faults.lie_info {
            Some(lie) => lying_info(proxy, request, &path_and_query, lie).await,
            None => (streamed(proxy, request, &path_and_query).await, false),
        },
        _ => (streamed(proxy, request, &path_and_query).await, false),
    }
}

/// The answer for a blob the relay pretends not to have.
fn not_found(id: &BlobId) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "error": {"code": cairn_proto::ErrorCode::NotFound.as_str(), "message": format!("blob {id} is not stored here")}
        })),
    )
        .into_response()
}

/// The first successful answer for this head path since `stale_heads` was
/// switched on, recorded from the upstream when there is none yet.
async fn stale_head(proxy: &Proxy, request: Request, path_and_query: &str) -> (Response, bool) {
    let pinned = proxy.lock().pinned.get(path_and_query).cloned();
    if let Some(pinned) = pinned {
        return (pinned.into_response(), true);
    }
    match buffered(proxy, request, path_and_query).await {
        Ok(answer) => {
            if answer.status.is_success() {
                let mut shared = proxy.lock();
                if shared.faults.stale_heads {
                    shared
                        .pinned
                        .entry(path_and_query.to_owned())
                        .or_insert_with(|| answer.clone());
                }
            }
            (answer.into_response(), false)
        }
        Err(response) => (response, false),
    }
}

/// The upstream's info document with `lie` in it, re-signed.
async fn lying_info(
    proxy: &Proxy,
    request: Request,
    path_and_query: &str,
    lie: InfoLie,
) -> (Response, bool) {
    let answer = match buffered(proxy, request, path_and_query).await {
        Ok(answer) if answer.status.is_success() => answer,
        Ok(answer) => return (answer.into_response(), false),
        Err(response) => return (response, false),
    };
    match rewrite_info(&answer.body, &proxy.key, lie) {
        Ok(body) => (axum::Json(body).into_response(), true),
        Err(why) => (
            bad_gateway(&format!("cannot rewrite the info document: {why}")),
            false,
        ),
    }
}

/// Rewrites an info document's JSON: the signed record and the plain
/// figures beside it.
fn rewrite_info(body: &[u8], key: &SigningKey, lie: InfoLie) -> Result<serde_json::Value, String> {
    let mut json: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let text = json["record"].as_str().ok_or("no `record`")?;
    let record = SignedRecord::from_base64url(text).map_err(|e| e.to_string())?;
    let mut info: RelayInfo = record
        .verify::<RelayInfo>()
        .map_err(|e| e.to_string())?
        .into_record();
    info.capacity_free = lie.capacity_free;
    info.capacity_total = info
        .capacity_total
        .max(info.capacity_used.saturating_add(lie.capacity_free));
    info.retention_secs = lie.retention_secs;
    let signed = SignedRecord::sign(&info, key).map_err(|e| e.to_string())?;
    json["record"] = signed.to_base64url().into();
    if let Some(plain) = json.get_mut("info").and_then(|i| i.as_object_mut()) {
        plain.insert("capacity_total".into(), info.capacity_total.into());
        plain.insert("capacity_free".into(), info.capacity_free.into());
        plain.insert("retention_secs".into(), info.retention_secs.into());
    }
    Ok(json)
}

/// The upstream request for `request`, its body streamed.
fn upstream_request(
    proxy: &Proxy,
    request: Request,
    path_and_query: &str,
) -> reqwest::RequestBuilder {
    let (parts, body) = request.into_parts();
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, &[header::HOST]);
    let builder = proxy
        .http
        .request(parts.method, format!("{}{path_and_query}", proxy.upstream))
        .headers(headers);
    if has_body {
        // Content-Length stays, so the upstream sees the declared length.
        builder.body(reqwest::Body::wrap_stream(body.into_data_stream()))
    } else {
        builder
    }
}

/// Forwards `request` and streams the answer back as it comes.
async fn streamed(proxy: &Proxy, request: Request, path_and_query: &str) -> Response {
    let answer = match upstream_request(proxy, request, path_and_query)
        .send()
        .await
    {
        Ok(answer) => answer,
        Err(err) => return bad_gateway(&err.to_string()),
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    strip_hop_by_hop(&mut headers, &[]);
    let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Forwards `request` and reads the whole answer (to change it).
async fn buffered(
    proxy: &Proxy,
    request: Request,
    path_and_query: &str,
) -> Result<Recorded, Response> {
    let answer = upstream_request(proxy, request, path_and_query)
        .send()
        .await
        .map_err(|err| bad_gateway(&err.to_string()))?;
    let status = answer.status();
    let mut headers = answer.headers().clone();
    // The body is sent whole again; its length is set from it.
    strip_hop_by_hop(&mut headers, &[header::CONTENT_LENGTH]);
    if answer
        .content_length()
        .is_some_and(|len| len > MAX_BUFFERED as u64)
    {
        return Err(bad_gateway("the answer is too large to fault"));
    }
    let body = answer
        .bytes()
        .await
        .map_err(|err| bad_gateway(&err.to_string()))?;
    Ok(Recorded {
        status,
        headers,
        body,
    })
}

/// Removes headers that describe one connection, not the message, and
/// `also`.
fn strip_hop_by_hop(headers: &mut HeaderMap, also: &[HeaderName]) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ]
    .iter()
    .chain(also)
    {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

fn bad_gateway(why: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(serde_json::json!({
            "error": {"code": "bad_gateway", "message": format!("faulty relay proxy: {why}")}
        })),
    )
        .into_response()
}
