//! The relay's HTTP API (docs/PROTOCOL.md §7): routing, shared state, and
//! the middleware that counts every response.

mod auth;
mod batch;
mod blobs;
mod body;
mod chart;
pub(crate) mod error;
mod extract;
mod federation;
mod heads;
mod info;
mod ops;
mod proof;
mod range;
mod status;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodRouter, get, post};
use cairn_proto::VerifyingKey;
use cairn_proto::wire::route;
use tokio::sync::Semaphore;

pub(crate) use self::auth::{CLOCK_SKEW_SECS, NonceCache};
use self::error::ApiError;
use crate::limits::{RateLimiter, address_range};
use crate::metrics::Gauges;
use crate::node::Node;

/// Everything handlers share. Cloning is cheap (one `Arc`).
#[derive(Clone, Debug)]
pub(crate) struct AppState(pub(crate) Arc<Shared>);

/// What only the HTTP edge needs, beside the [`Node`] it serves.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) node: Arc<Node>,
    pub(crate) nonces: NonceCache,
    pub(crate) key_limiter: RateLimiter<VerifyingKey>,
    pub(crate) addr_limiter: RateLimiter<IpAddr>,
    pub(crate) upload_slots: Arc<Semaphore>,
    /// Audit proofs being computed (each hashes a whole blob).
    pub(crate) proof_slots: Semaphore,
    pub(crate) uploads_in_flight: AtomicU64,
    pub(crate) draining: AtomicBool,
}

/// Handlers read the node's state (`app.store`, `app.config`) as their own.
impl std::ops::Deref for Shared {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// Proof-of-work bits upload tokens need right now: raised while the
    /// relay is under pressure, and disclosed in the info document.
    pub(crate) fn pow_bits(&self) -> u8 {
        let base = self.config.limits.pow_bits;
        let slots = self.config.max_concurrent_uploads.max(1) as u64;
        let busy = self.uploads_in_flight.load(Ordering::Relaxed) * 4 >= slots * 3;
        let capacity = self.store.capacity();
        let tight = self.store.free().saturating_mul(20) < capacity;
        if busy || tight {
            base.max(self.config.pow_bits_under_pressure)
        } else {
            base
        }
    }

    pub(crate) fn gauges(&self) -> Gauges {
        let (bytes, blobs) = self.store.usage();
        Gauges {
            blobs,
            bytes,
            heads: self.store.heads_stored(),
            capacity: self.store.capacity(),
            free: self.store.free(),
            uploads_in_flight: self.uploads_in_flight.load(Ordering::Relaxed),
        }
    }
}

/// The route label for metrics: the matched route pattern, from a fixed set.
fn route_label(path: Option<&MatchedPath>) -> &'static str {
    match path.map(MatchedPath::as_str) {
        Some(route::BLOBS) => route::BLOBS,
        Some(route::BLOB) => route::BLOB,
        Some(route::BLOB_PROOF) => route::BLOB_PROOF,
        Some(route::HEAD) => route::HEAD,
        Some(route::HEADS) => route::HEADS,
        Some(route::RECONCILE) => route::RECONCILE,
        Some(route::INFO) => route::INFO,
        Some("/metrics") => "/metrics",
        Some("/health") => "/health",
        Some("/") => "/",
        _ => "other",
    }
}

async fn count_responses(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    app.metrics.count_request(route, response.status().as_u16());
    response
}

/// Per-address-range request limit. Health checks are exempt so that a
/// load balancer's probes never take a relay out of rotation.
async fn fair_share(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let exempt = request.uri().path() == "/health";
    if !exempt
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Err(wait) = app
            .addr_limiter
            .check(address_range(peer.ip()), Instant::now())
    {
        return ApiError::rate_limited(
            format!(
                "this address range exceeded {} requests a minute (addr_requests_per_min)",
                app.config.limits.addr_requests_per_min
            ),
            wait,
        )
        .into_response();
    }
    next.run(request).await
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint; the API is described in docs/PROTOCOL.md §7")
}

/// Every route: its path and the methods it answers (any other method gets
/// 405). docs/openapi.yaml describes exactly these; a test holds the two
/// together.
fn routes() -> [(&'static str, MethodRouter<AppState>); 10] {
    [
        (route::BLOBS, post(batch::put_batch)),
        (
            route::BLOB,
            get(blobs::get_blob)
                .head(blobs::get_blob)
                .put(blobs::put_blob)
                .post(blobs::claim_blob)
                .delete(blobs::delete_blob),
        ),
        (route::BLOB_PROOF, get(proof::get_proof)),
        (route::HEAD, get(heads::get_head).put(heads::put_head)),
        (route::HEADS, get(heads::list_heads)),
        (route::RECONCILE, post(federation::reconcile)),
        (route::INFO, get(info::well_known)),
        ("/metrics", get(ops::metrics)),
        ("/health", get(ops::health)),
        ("/", get(status::status_page)),
    ]
}

/// The paths the relay serves, with `{name}` for each path parameter.
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// Builds the router over `app`.
pub(crate) fn router(app: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods.fallback(method_not_allowed))
        })
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(app.clone(), fair_share))
        .layer(middleware::from_fn_with_state(app.clone(), count_responses))
        .with_state(app)
}
