//! Starting and stopping a relay: the accept loop, background tasks, and
//! graceful shutdown.
//!
//! Every task has an owner: connections and background loops run on a
//! [`TaskTracker`] and stop through one [`CancellationToken`]; the store's
//! writer thread is joined last, after everything that could send it work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_proto::{SigningKey, VerifyingKey};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Clock;
use crate::config::{ConfigError, RelayConfig};
use crate::federation::{Federation, Ledger, ReconcileCounts, TransferReport};
use crate::http::{AppState, CLOCK_SKEW_SECS, NonceCache, Shared, router};
use crate::keyfile::{KeyFileError, load_or_create};
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::store::{Store, StoreError};

/// Most blobs one GC transaction deletes; a pass runs as many as it needs.
const GC_BATCH: usize = 4096;
/// Audit proofs computed at once (each costs a hash of the whole blob).
const MAX_CONCURRENT_PROOFS: usize = 2;
/// Most connections served at once.
const MAX_CONNECTIONS: usize = 4096;

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration breaks a rule of [`RelayConfig::validate`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The store could not be opened.
    #[error("opening the store in {dir}")]
    Store {
        /// The data directory.
        dir: String,
        /// Why.
        source: StoreError,
    },
    /// The TLS certificate or key is unusable.
    #[error("setting up TLS")]
    Tls(#[from] crate::tls::TlsError),
    /// The HTTP client for peers could not be set up.
    #[error("setting up the client for peer relays: {0}")]
    PeerClient(String),
    /// The listen address could not be bound.
    #[error("listening on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What one GC pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub deleted_blobs: u64,
    /// Bytes freed.
    pub deleted_bytes: u64,
    /// Mailbox heads deleted.
    pub deleted_heads: u64,
    /// Forwarding records of transferred blobs deleted.
    pub deleted_forwards: u64,
}

/// A running relay. Dropping it without [`RelayHandle::shutdown`] aborts
/// background work at the next await point.
#[derive(Debug)]
pub struct RelayHandle {
    addr: SocketAddr,
    scheme: &'static str,
    app: AppState,
    cancel: CancellationToken,
    tasks: TaskTracker,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// Starts a relay with the system clock.
///
/// # Errors
///
/// As [`start_with_clock`].
pub async fn start(config: RelayConfig) -> Result<RelayHandle, StartError> {
    start_with_clock(config, Clock::system()).await
}

/// Starts a relay whose notion of time is `clock` (tests move a manual
/// clock instead of sleeping).
///
/// # Errors
///
/// [`StartError`] if the configuration is invalid
/// ([`RelayConfig::validate`], checked before anything is created), or the
/// key, the store or the listen address is unusable.
pub async fn start_with_clock(
    config: RelayConfig,
    clock: Clock,
) -> Result<RelayHandle, StartError> {
    config.validate()?;
    let store_err = |source| StartError::Store {
        dir: config.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| store_err(StoreError::io("create data directory", e)))?;
    let (key, created) = load_or_create(&config.data_dir.join("relay.key"))?;
    if created {
        tracing::info!(key = %key.verifying_key(), "created a new relay identity key");
    }
    let limits = crate::store::Limits {
        capacity: config.capacity_bytes,
        key_quota: config.limits.key_quota_bytes,
        max_heads: config.max_heads,
        cache_bytes: config.cache_bytes,
        index_cache_bytes: config.index_cache_bytes,
        disk_reserve: config.disk_reserve_bytes,
    };
    let backend_http = backend_http_client().map_err(|e| StartError::PeerClient(e.to_string()))?;
    let (store, writer, report) =
        Store::open(&config.data_dir, &config.storage, limits, backend_http)
            .await
            .map_err(store_err)?;
    if report.temp_files_removed > 0 || report.pending_unlinks_finished > 0 {
        tracing::info!(
            temp_files_removed = report.temp_files_removed,
            pending_unlinks_finished = report.pending_unlinks_finished,
            "cleaned up after the previous run"
        );
    }
    let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let key_limiter = RateLimiter::new(config.limits.key_requests_per_min);
    let addr_limiter = RateLimiter::new(config.limits.addr_requests_per_min);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (federation, replication_queue) = Federation::new(
        key.verifying_key(),
        &config.peers,
        config.federation.max_learned_peers,
        Ledger::load(&config.data_dir),
    )
    .map_err(|e| StartError::PeerClient(e.to_string()))?;
    let upload_slots = Arc::new(Semaphore::new(config.max_concurrent_uploads.max(1)));
    let node = Arc::new(Node {
        store,
        federation,
        key: key.clone(),
        config,
        clock,
        metrics: Metrics::default(),
        started: Instant::now(),
    });
    let app = AppState(Arc::new(Shared {
        node: node.clone(),
        upload_slots,
        proof_slots: Semaphore::new(MAX_CONCURRENT_PROOFS),
        nonces: NonceCache::default(),
        key_limiter,
        addr_limiter,
        uploads_in_flight: AtomicU64::new(0),
        draining: AtomicBool::new(false),
    }));
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(accept_loop(
        listener,
        tls,
        app.clone(),
        cancel.clone(),
        tasks.clone(),
    ));
    tasks.spawn(background(app.clone(), cancel.clone()));
    tasks.spawn(crate::federation::background(node.clone(), cancel.clone()));
    tasks.spawn(crate::federation::run_replication(
        node,
        replication_queue,
        cancel.clone(),
    ));
    tracing::info!(%addr, scheme, key = %key.verifying_key(), "relay listening");
    Ok(RelayHandle {
        addr,
        scheme,
        app,
        cancel,
        tasks,
        writer,
    })
}

/// The HTTP client the object store's requests go through: rustls on ring
/// (the process-wide provider), no redirects, bounded connects.
pub(crate) fn backend_http_client() -> Result<reqwest::Client, reqwest::Error> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: AppState,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_concurrent_streams(256);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let service = router(app.clone());
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => return,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Without this, small responses wait on delayed ACKs (~40 ms).
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let router = service.clone();
        // The peer address travels with each request, for per-address limits.
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower::Service::call(&mut router.clone(), request)
            },
        );
        let cancel = cancel.clone();
        let tls = tls.clone();
        let handshake_timeout = app.config.header_timeout;
        tasks.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, builder, service, cancel).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, builder, service, cancel).await,
                        // A failed or stalled handshake is the client's problem.
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it closes, or
/// gracefully ends it when the relay shuts down.
async fn serve_connection<I, S>(
    io: I,
    builder: auto::Builder<TokioExecutor>,
    service: S,
    cancel: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Periodic work: flushing access times, forgetting expired nonces and
/// spent tokens, garbage collection.
async fn background(app: AppState, cancel: CancellationToken) {
    let mut flush = tokio::time::interval(app.config.access_flush_interval);
    // The first pass waits a full interval: a pass at start would race
    // whatever the operator (or a test) does first, and blobs expired while
    // the relay was down go one interval later at most.
    let mut gc = tokio::time::interval_at(
        tokio::time::Instant::now() + app.config.gc_interval,
        app.config.gc_interval,
    );
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = flush.tick() => {
                if let Err(e) = app.store.flush_accesses().await {
                    tracing::error!(error = %e, "flushing access times failed");
                }
                app.federation.save_ledger().await;
                app.nonces.prune(app.now());
                app.metrics.history.observe(app.started.elapsed(), app.metrics.traffic());
                let forget_before = app.now().saturating_sub(CLOCK_SKEW_SECS);
                if let Err(e) = app.store.forget_spent_tokens(forget_before).await {
                    tracing::error!(error = %e, "forgetting expired spent tokens failed");
                }
                app.key_limiter.prune(Instant::now());
                app.addr_limiter.prune(Instant::now());
            }
            _ = gc.tick() => {
                // A pass over millions of expired blobs takes a while, and
                // shutdown does not wait for it: the next pass goes on.
                match cancel.run_until_cancelled(run_gc(&app)).await {
                    None => return,
                    Some(Ok(r)) if r.deleted_blobs > 0 || r.deleted_heads > 0 => tracing::info!(
                        deleted_blobs = r.deleted_blobs, deleted_bytes = r.deleted_bytes,
                        deleted_heads = r.deleted_heads, "gc pass"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::error!(error = %e, "gc pass failed"),
                }
            }
        }
    }
}

/// Deletes every blob and every head whose last access is older than the
/// retention period.
async fn run_gc(app: &AppState) -> Result<GcReport, StoreError> {
    let now = app.now();
    let cutoff = now.saturating_sub(app.config.retention.as_secs());
    let mut report = GcReport::default();
    loop {
        let deleted = app.store.collect(cutoff, GC_BATCH).await?;
        report.deleted_blobs += deleted.len() as u64;
        report.deleted_bytes += deleted.iter().map(|(_, size)| size).sum::<u64>();
        if deleted.len() < GC_BATCH {
            break;
        }
    }
    loop {
        let deleted = app.store.collect_heads(cutoff, GC_BATCH).await?;
        report.deleted_heads += deleted as u64;
        if deleted < GC_BATCH {
            break;
        }
    }
    loop {
        let deleted = app.store.collect_forwards(cutoff, GC_BATCH).await?;
        report.deleted_forwards += deleted as u64;
        if deleted < GC_BATCH {
            break;
        }
    }
    app.metrics.gc_runs.fetch_add(1, Ordering::Relaxed);
    app.metrics.gc_last_at.store(app.now(), Ordering::Relaxed);
    app.metrics
        .gc_last_deleted_blobs
        .store(report.deleted_blobs, Ordering::Relaxed);
    app.metrics
        .gc_deleted_blobs
        .fetch_add(report.deleted_blobs, Ordering::Relaxed);
    app.metrics
        .gc_deleted_bytes
        .fetch_add(report.deleted_bytes, Ordering::Relaxed);
    app.metrics
        .gc_deleted_heads
        .fetch_add(report.deleted_heads, Ordering::Relaxed);
    Ok(report)
}

impl RelayHandle {
    /// The address the relay listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The relay's identity key.
    pub fn key(&self) -> VerifyingKey {
        self.app.key.verifying_key()
    }

    /// The relay's secret key (tests sign receipts and peer tokens with it).
    pub fn signing_key(&self) -> &SigningKey {
        &self.app.key
    }

    /// Runs one GC pass now, as the periodic task would.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store fails.
    pub async fn run_gc(&self) -> Result<GcReport, StoreError> {
        run_gc(&self.app).await
    }

    /// Replaces the operator-configured peers (learned peers stay).
    pub fn set_peers(&self, peers: &[cairn_proto::RelayRef]) {
        self.app.federation.peers.set_configured(peers);
    }

    /// Fetches every peer's info document now, as the periodic task does;
    /// returns how many peers were learned from them.
    pub async fn refresh_peers(&self) -> usize {
        self.app.federation.refresh_peers().await
    }

    /// Reconciles with every configured peer now and pushes what they
    /// lack, as the periodic task does; one result per peer.
    pub async fn reconcile(&self) -> Vec<(VerifyingKey, Result<ReconcileCounts, String>)> {
        crate::federation::reconcile_all(&self.app)
            .await
            .into_iter()
            .map(|r| (r.peer, r.outcome.map_err(|e| e.to_string())))
            .collect()
    }

    /// Moves blobs to peers now if usage is above the high-water mark, as
    /// the background task does when an upload crosses it.
    pub async fn relieve(&self) -> TransferReport {
        crate::federation::relieve(&self.app).await
    }

    /// Checks up to `max` transferred blobs (a random sample) at the peers
    /// that took them, as the periodic task does with a few.
    pub async fn audit_transfers(&self, max: usize) -> crate::federation::AuditReport {
        crate::federation::audit_transfers(&self.app, max).await
    }

    /// Stores `blobs` directly, as if uploaded by a client (`from_peer:
    /// None`) or replicated by that peer: for tests and benchmarks that need
    /// large stores quickly. Ids are computed here, as an upload verifies
    /// them. Returns how many were newly stored.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store fails.
    #[doc(hidden)]
    pub async fn seed_blobs(
        &self,
        blobs: Vec<Vec<u8>>,
        from_peer: Option<VerifyingKey>,
    ) -> Result<usize, StoreError> {
        let owner = self.key();
        let source = from_peer.map_or(
            crate::store::Source::Client(owner),
            crate::store::Source::Peer,
        );
        self.app.store.seed(blobs, source, self.app.now()).await
    }

    /// Writes pending access times to the index now.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store fails.
    pub async fn flush_accesses(&self) -> Result<usize, StoreError> {
        self.app.store.flush_accesses().await
    }

    /// Stops accepting connections, lets requests in flight finish (up to
    /// the configured grace period; uploads still running then are
    /// abandoned and their temp files removed), writes pending access times,
    /// and stops the store.
    pub async fn shutdown(mut self) {
        self.app.draining.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        self.tasks.close();
        let grace = self.app.config.shutdown_grace;
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "requests still running after the shutdown grace period; abandoning them"
            );
        }
        if let Err(e) = self.app.store.flush_accesses().await {
            tracing::error!(error = %e, "flushing access times at shutdown failed");
        }
        self.app.federation.save_ledger().await;
        // The writer finishes what is queued and exits; an abandoned request
        // that writes later gets an error, and is dropped with the runtime.
        self.app.store.close().await;
        let writer = self.writer.take();
        drop(self);
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}
