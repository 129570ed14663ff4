//! Everything an operator can tune, in one place, with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn_proto::{FairShareLimits, RelayRef};

/// A certificate chain and its private key, both PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The relay's configuration. Built by the binary from flags, environment and
/// config file (in that order of precedence), or directly by tests.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Directory holding the identity key, the index and the blobs.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The operator states that a TLS-terminating reverse proxy sits in
    /// front of this relay, so plain HTTP on a non-loopback address never
    /// reaches clients over the network. Without it (or `tls`), the binary
    /// refuses to serve plain HTTP off loopback.
    pub behind_tls_proxy: bool,
    /// Bytes given to blob storage in total.
    pub capacity_bytes: u64,
    /// Largest blob accepted.
    pub max_blob_size: u64,
    /// Minimum time a blob is kept after its last access.
    pub retention: Duration,
    /// How often the garbage collector runs.
    pub gc_interval: Duration,
    /// How often coalesced access times are written to the index.
    pub access_flush_interval: Duration,
    /// Peer relays chosen by the operator: announced in the info document,
    /// replicated to, and trusted to push replicas and take transfers.
    pub peers: Vec<RelayRef>,
    /// How this relay cooperates with its peers.
    pub federation: FederationConfig,
    /// Uploads in progress at once; more are refused with 429.
    pub max_concurrent_uploads: usize,
    /// Longest wait for the next piece of a request body before the upload
    /// is abandoned with 408; protects against slow-drip clients.
    pub body_idle_timeout: Duration,
    /// Slowest average rate, in bytes per second, at which a request body
    /// may arrive once it has been arriving for `body_idle_timeout`; slower
    /// uploads are abandoned with 408. Stops a client from holding an
    /// upload slot by sending a byte just before each idle timeout. 0 turns
    /// the check off.
    pub body_min_rate: u64,
    /// Free space, in bytes, the relay leaves on its data directory's
    /// filesystem: an upload that would leave less is refused with 507
    /// `relay_full`, like one past `capacity_bytes`. Whatever else fills the
    /// disk, the index keeps room to commit and deletions keep working.
    /// 0 turns the check off.
    pub disk_reserve_bytes: u64,
    /// Longest wait for a request's headers.
    pub header_timeout: Duration,
    /// Fair-share limits, disclosed in the info document. `pow_bits` is the
    /// proof of work upload tokens need normally.
    pub limits: FairShareLimits,
    /// Proof-of-work bits required of upload tokens while the relay is
    /// under pressure (three quarters of upload slots busy, or less than 5%
    /// of capacity free). Never below `limits.pow_bits`; 0 to never raise.
    pub pow_bits_under_pressure: u8,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Most mailbox heads kept in all (docs/PROTOCOL.md §7.7); a head for a
    /// new slot beyond that is refused with 507 `relay_full`, while slots
    /// that already have a head can always be updated. Heads are a few
    /// hundred bytes each and do not count against `capacity_bytes`. 0 for
    /// no limit.
    pub max_heads: u64,
    /// Memory for caching small blobs (64 KiB or less) that are read often.
    pub cache_bytes: usize,
    /// Memory for the embedded index's page cache. The index's own default
    /// (1 GiB) would let a busy relay's memory climb for minutes before it
    /// levels off; pages past this are read again from the file, which the
    /// operating system caches anyway.
    pub index_cache_bytes: usize,
    /// Where blob bodies and the index live.
    pub storage: StorageConfig,
}

impl RelayConfig {
    /// Default listen address.
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
    /// Default data directory.
    pub const DEFAULT_DATA_DIR: &str = "cairn-data";
    /// Default capacity: 10 GiB.
    pub const DEFAULT_CAPACITY: u64 = 10 << 30;
    /// Default largest blob: 4 GiB.
    pub const DEFAULT_MAX_BLOB_SIZE: u64 = 4 << 30;
    /// Default retention: 90 days.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
    /// Default GC interval: 10 minutes.
    pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(600);
    /// Default most heads: one million (a few hundred MB of index at most).
    pub const DEFAULT_MAX_HEADS: u64 = 1_000_000;
    /// Default fair-share limits, sized for a small community relay: 4 GiB
    /// per upload key, 600 requests a minute per key, 3000 a minute per
    /// address range, no proof of work.
    pub const DEFAULT_LIMITS: FairShareLimits = FairShareLimits {
        key_quota_bytes: 4 << 30,
        key_requests_per_min: 600,
        addr_requests_per_min: 3000,
        pow_bits: 0,
    };

    /// Whether this configuration would serve plain HTTP to other
    /// machines: no TLS, a listen address off loopback, and no word from
    /// the operator that a TLS-terminating proxy is in front. Clients'
    /// tokens and the info document their pins rest on would then cross the
    /// network readable and alterable.
    pub fn exposes_plain_http(&self) -> bool {
        self.tls.is_none() && !self.behind_tls_proxy && !self.listen.ip().is_loopback()
    }

    /// The defaults, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            tls: None,
            behind_tls_proxy: false,
            capacity_bytes: Self::DEFAULT_CAPACITY,
            max_blob_size: Self::DEFAULT_MAX_BLOB_SIZE,
            retention: Self::DEFAULT_RETENTION,
            gc_interval: Self::DEFAULT_GC_INTERVAL,
            access_flush_interval: Duration::from_secs(30),
            peers: Vec::new(),
            federation: FederationConfig::default(),
            max_concurrent_uploads: 64,
            body_idle_timeout: Duration::from_secs(30),
            body_min_rate: 4096,
            disk_reserve_bytes: 64 << 20,
            header_timeout: Duration::from_secs(30),
            limits: Self::DEFAULT_LIMITS,
            pow_bits_under_pressure: 0,
            shutdown_grace: Duration::from_secs(30),
            max_heads: Self::DEFAULT_MAX_HEADS,
            cache_bytes: 32 << 20,
            index_cache_bytes: 64 << 20,
            storage: StorageConfig::Embedded,
        }
    }
}

/// Replication, reconciliation and transfer settings (docs/OPERATING.md,
/// "Federation").
#[derive(Clone, Debug)]
pub struct FederationConfig {
    /// Peers that should hold a copy of each blob a client stores here
    /// (at most the number of configured peers). 0 turns replication off.
    pub replicas: usize,
    /// How often replica sets are reconciled with each peer.
    pub reconcile_interval: Duration,
    /// How often peers' info documents are fetched (capacity, peers).
    pub peer_refresh_interval: Duration,
    /// Above this share of capacity (in thousandths) blobs are transferred
    /// to peers with room...
    pub high_water_permille: u16,
    /// ...until usage is below this share.
    pub low_water_permille: u16,
    /// Most peers learned from configured peers' info documents (peer
    /// exchange); 0 to use configured peers only.
    pub max_learned_peers: usize,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            replicas: 2,
            reconcile_interval: Duration::from_secs(600),
            peer_refresh_interval: Duration::from_secs(60),
            high_water_permille: 900,
            low_water_permille: 800,
            max_learned_peers: 8,
        }
    }
}

/// Where the relay keeps blob bodies and its index (docs/OPERATING.md,
/// "Scale-out").
#[derive(Clone, Debug, Default)]
pub enum StorageConfig {
    /// One process: bodies as files and the index in an embedded database,
    /// both under the data directory.
    #[default]
    Embedded,
    /// Any number of processes sharing one identity: bodies in an
    /// S3-compatible bucket, the index in PostgreSQL. The data directory
    /// then holds only the identity key, the peer ledger and uploads in
    /// progress.
    ScaleOut(ScaleOutConfig),
}

/// The shared backends of a scale-out relay.
#[derive(Clone, Debug)]
pub struct ScaleOutConfig {
    /// The index.
    pub postgres: PostgresConfig,
    /// Blob bodies.
    pub s3: S3Config,
}

/// A PostgreSQL database for the index.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// The schema holding the relay's tables (created if missing); `None`
    /// for the connection's default (`public`).
    pub schema: Option<String>,
    /// Connections kept per relay process.
    pub pool_size: usize,
}

impl PostgresConfig {
    /// Default connections per process: an upload of a large blob holds one
    /// while its body goes to the object store.
    pub const DEFAULT_POOL_SIZE: usize = 32;
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_password(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// An S3-compatible bucket for blob bodies.
#[derive(Clone)]
pub struct S3Config {
    /// The service's base URL, such as `https://s3.eu-west-1.amazonaws.com`
    /// or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// The bucket (created by the operator beforehand).
    pub bucket: String,
    /// The region the signatures name.
    pub region: String,
    /// Objects are stored under this prefix (`""` for the bucket's root).
    pub prefix: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// `url` with any password replaced, for logs and errors.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}
