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
/// config file (in that order of precedence, see
/// [`Settings`](crate::Settings)), or directly by tests and embedders;
/// [`RelayConfig::validate`] says whether it can run.
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
    /// reaches clients over the network. Without it (or `tls`), the relay
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
    /// Uploads in progress at once; more are refused with 503 `unavailable`
    /// and `Retry-After`.
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
    /// per upload key, 3000 requests a minute per key and per address
    /// range, no proof of work. A client sends a large file as one request
    /// per chunk (2 MiB on average): 3000 a minute is a 4 GiB quota's worth
    /// in one burst, then about 100 MiB/s.
    pub const DEFAULT_LIMITS: FairShareLimits = FairShareLimits {
        key_quota_bytes: 4 << 30,
        key_requests_per_min: 3000,
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

    /// Checks the rules a relay needs to run as configured, in the order
    /// below, and returns the first one broken. [`start`](crate::start)
    /// calls it before anything else, so a bad value is refused up front
    /// instead of panicking or misbehaving in a background task later.
    ///
    /// 1. `gc_interval` and `federation.reconcile_interval` (the two an
    ///    operator sets), then `access_flush_interval`,
    ///    `federation.peer_refresh_interval`, `header_timeout` and
    ///    `body_idle_timeout` are above zero.
    /// 2. `limits.pow_bits`, then `pow_bits_under_pressure`, are at most 64.
    /// 3. At most [`cairn_proto::MAX_PEERS`] peers.
    /// 4. `federation.high_water_permille` is within 1–1000 and above
    ///    `federation.low_water_permille`.
    /// 5. Scale-out storage names its S3 endpoint, bucket, access key and
    ///    secret key.
    /// 6. Plain HTTP is not served off loopback
    ///    ([`exposes_plain_http`](Self::exposes_plain_http)). This rule
    ///    concerns serving only and comes last, so a command that serves
    ///    nothing (such as a migration) may pass over it.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of the first rule broken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fed = &self.federation;
        for (setting, value) in [
            ("gc_interval", self.gc_interval),
            ("reconcile_interval", fed.reconcile_interval),
            ("access_flush_interval", self.access_flush_interval),
            ("peer_refresh_interval", fed.peer_refresh_interval),
            ("header_timeout", self.header_timeout),
            ("body_idle_timeout", self.body_idle_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero { setting });
            }
        }
        for (setting, bits) in [
            ("pow_bits", self.limits.pow_bits),
            ("pow_bits_under_pressure", self.pow_bits_under_pressure),
        ] {
            if bits > 64 {
                return Err(ConfigError::PowBits { setting });
            }
        }
        if self.peers.len() > cairn_proto::MAX_PEERS {
            return Err(ConfigError::TooManyPeers {
                count: self.peers.len(),
            });
        }
        let (high, low) = (fed.high_water_permille, fed.low_water_permille);
        if !(1..=1000).contains(&high) || low >= high {
            return Err(ConfigError::WaterMarks {
                high_permille: high,
                low_permille: low,
            });
        }
        if let StorageConfig::ScaleOut(ScaleOutConfig { s3, .. }) = &self.storage {
            for (missing, value) in [
                ("--s3-endpoint", &s3.endpoint),
                ("--s3-bucket", &s3.bucket),
                ("--s3-access-key", &s3.access_key_id),
                ("--s3-secret-key", &s3.secret_access_key),
            ] {
                if value.is_empty() {
                    return Err(ConfigError::ScaleOutIncomplete { missing });
                }
            }
        }
        if self.exposes_plain_http() {
            return Err(ConfigError::PlainHttpExposed {
                listen: self.listen,
            });
        }
        Ok(())
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

/// Why a [`RelayConfig`] cannot run a relay: the rule
/// [`RelayConfig::validate`] found broken. Each message names the setting
/// as its flag or config-file key, which is also the field's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An interval or timeout is zero: a timer with no period panics, and a
    /// zero timeout would refuse every request.
    #[error("{setting} must be above zero")]
    Zero {
        /// The setting, such as `gc_interval`.
        setting: &'static str,
    },
    /// More proof-of-work bits than an upload token can carry.
    #[error("{setting} must be at most 64")]
    PowBits {
        /// `pow_bits` or `pow_bits_under_pressure`.
        setting: &'static str,
    },
    /// More peers than the info document can announce.
    #[error("at most {max} peers can be announced", max = cairn_proto::MAX_PEERS)]
    TooManyPeers {
        /// The peers configured.
        count: usize,
    },
    /// The high-water mark is out of range or not above the low-water
    /// mark, so transfers to peers would never start or never stop.
    #[error(
        "high_water ({}%) must be within 1–100 and above low_water ({}%): \
         transfers start above the first and stop at the second",
        Percent(*high_permille),
        Percent(*low_permille)
    )]
    WaterMarks {
        /// `federation.high_water_permille`.
        high_permille: u16,
        /// `federation.low_water_permille`.
        low_permille: u16,
    },
    /// Scale-out storage without one of its S3 settings.
    #[error("scale-out storage needs {missing}")]
    ScaleOutIncomplete {
        /// The missing setting's flag, such as `--s3-bucket`.
        missing: &'static str,
    },
    /// Plain HTTP on an address other machines can reach, with no TLS and
    /// no word that a TLS-terminating proxy is in front
    /// ([`RelayConfig::exposes_plain_http`]).
    #[error(
        "refusing to serve plain HTTP on {listen}, which other machines can reach: clients' \
         upload tokens and the signed info document their key pins rest on would cross the \
         network readable and alterable. Serve HTTPS (--tls-cert and --tls-key), listen on \
         loopback (127.0.0.1), or, if a TLS-terminating reverse proxy sits in front of this \
         relay, say so with --behind-tls-proxy (behind_tls_proxy = true in the config file)"
    )]
    PlainHttpExposed {
        /// The listen address.
        listen: SocketAddr,
    },
}

/// Thousandths shown as a percentage: `900` as `90`, `905` as `90.5`.
struct Percent(u16);

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 % 10 {
            0 => write!(f, "{}", self.0 / 10),
            tenths => write!(f, "{}.{tenths}", self.0 / 10),
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
    /// The newest reconciliation message version (docs/PROTOCOL.md §7.8)
    /// this relay sends first and answers; older ones are always answered.
    /// Lower it to pin a version, or to stand for an older release in a
    /// mixed network.
    pub reconcile_version: u8,
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
            reconcile_version: cairn_proto::reconcile::VERSION,
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

impl S3Config {
    /// Default signing region.
    pub const DEFAULT_REGION: &str = "us-east-1";
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RelayConfig {
        RelayConfig::new("unused")
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn zero_intervals_and_timeouts_are_refused() {
        type Set = fn(&mut RelayConfig);
        let cases: [(&str, Set); 6] = [
            ("gc_interval", |c| c.gc_interval = Duration::ZERO),
            ("reconcile_interval", |c| {
                c.federation.reconcile_interval = Duration::ZERO;
            }),
            ("access_flush_interval", |c| {
                c.access_flush_interval = Duration::ZERO;
            }),
            ("peer_refresh_interval", |c| {
                c.federation.peer_refresh_interval = Duration::ZERO;
            }),
            ("header_timeout", |c| c.header_timeout = Duration::ZERO),
            ("body_idle_timeout", |c| {
                c.body_idle_timeout = Duration::ZERO
            }),
        ];
        for (setting, set) in cases {
            let mut c = config();
            set(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err, ConfigError::Zero { setting });
            assert_eq!(err.to_string(), format!("{setting} must be above zero"));
        }
    }

    #[test]
    fn proof_of_work_is_at_most_64_bits() {
        let mut c = config();
        c.limits.pow_bits = 64;
        c.pow_bits_under_pressure = 64;
        assert_eq!(c.validate(), Ok(()));
        c.pow_bits_under_pressure = 65;
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "pow_bits_under_pressure must be at most 64"
        );
        c.limits.pow_bits = 65;
        let err = c.validate().unwrap_err();
        assert_eq!(err.to_string(), "pow_bits must be at most 64");
    }

    #[test]
    fn too_many_peers_are_refused() {
        let key = cairn_proto::SigningKey::from_seed(&[1; 32]).verifying_key();
        let peer = RelayRef {
            url: cairn_proto::RelayUrl::new("https://b.example").unwrap(),
            key,
        };
        let mut c = config();
        c.peers = vec![peer; cairn_proto::MAX_PEERS + 1];
        assert_eq!(
            c.validate(),
            Err(ConfigError::TooManyPeers {
                count: cairn_proto::MAX_PEERS + 1
            })
        );
    }

    #[test]
    fn high_water_must_be_above_low_water() {
        let mut c = config();
        c.federation.high_water_permille = 500;
        c.federation.low_water_permille = 805;
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("high_water (50%) must be within 1–100 and above low_water (80.5%)"),
            "{err}"
        );
        c.federation.low_water_permille = 500;
        assert!(c.validate().is_err(), "equal marks never stop transfers");
        c.federation.low_water_permille = 0;
        c.federation.high_water_permille = 1001;
        assert!(c.validate().is_err());
        c.federation.high_water_permille = 0;
        assert!(c.validate().is_err());
        c.federation.high_water_permille = 1;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn scale_out_needs_every_s3_setting() {
        let mut s3 = S3Config {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "cairn".into(),
            region: S3Config::DEFAULT_REGION.into(),
            prefix: String::new(),
            access_key_id: "id".into(),
            secret_access_key: String::new(),
        };
        let postgres = PostgresConfig {
            url: "postgres://localhost/cairn".into(),
            schema: None,
            pool_size: PostgresConfig::DEFAULT_POOL_SIZE,
        };
        let mut c = config();
        c.storage = StorageConfig::ScaleOut(ScaleOutConfig {
            postgres: postgres.clone(),
            s3: s3.clone(),
        });
        let err = c.validate().unwrap_err();
        assert_eq!(err.to_string(), "scale-out storage needs --s3-secret-key");
        s3.secret_access_key = "secret".into();
        c.storage = StorageConfig::ScaleOut(ScaleOutConfig { postgres, s3 });
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn plain_http_off_loopback_is_refused_last() {
        let mut c = config();
        c.listen = SocketAddr::from(([0, 0, 0, 0], 7070));
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("--behind-tls-proxy"), "{err}");
        c.gc_interval = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ConfigError::Zero {
                setting: "gc_interval"
            })
        );
        c.gc_interval = RelayConfig::DEFAULT_GC_INTERVAL;
        c.behind_tls_proxy = true;
        assert_eq!(c.validate(), Ok(()));
    }
}
