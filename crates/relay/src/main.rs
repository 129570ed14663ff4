//! `cairn-relay`: the daemon an operator runs.
//!
//! Parses flags, environment and config file into a [`RelayConfig`] (flag,
//! then `CAIRN_RELAY_*` environment variable, then config file, then
//! default), runs the relay until SIGTERM or Ctrl-C, and exits 0 after a
//! graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_proto::{FairShareLimits, RelayRef, RelayUrl, VerifyingKey};
use cairn_relay::{PostgresConfig, RelayConfig, S3Config, ScaleOutConfig, StorageConfig};
use clap::{Args, Parser, Subcommand};

/// A cairn relay: stores, serves and replicates end-to-end encrypted blobs
/// for clients that choose it. It has no accounts and never sees plaintext.
///
/// With no command, runs `serve` with its defaults (listen on
/// 127.0.0.1:7070, keep data in ./cairn-data), which the `CAIRN_RELAY_*`
/// environment variables change as they change `serve`.
#[derive(Debug, Parser)]
#[command(name = "cairn-relay", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay until SIGTERM or Ctrl-C.
    ///
    /// Every option can also be set by a `CAIRN_RELAY_*` environment
    /// variable or a key in the TOML config file; a flag wins over the
    /// environment, which wins over the file, which wins over the default.
    Serve(Box<ServeArgs>),
    /// Check every blob file against its id and the index against the
    /// files. Run it while the relay is stopped.
    ///
    /// Exits 0 when the store is consistent (or was repaired), 1 when
    /// problems were found and not repaired.
    Fsck {
        /// The relay's data directory.
        #[arg(long, env = "CAIRN_RELAY_DATA", default_value = RelayConfig::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// Make the index agree with the verified files: remove corrupt and
        /// stray files, index valid files it lacks, drop entries without a
        /// file, recompute totals.
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move this relay's data to another storage backend (embedded ↔
    /// PostgreSQL + S3), verified. Stop the relay first.
    ///
    /// Every blob is hashed against its id on the way out and read back
    /// from the destination; owners, sources and access times carry over,
    /// so retention does too; heads, forwarding records and the identity
    /// key follow. The source is only read: if the migration stops, run it
    /// again and it resumes. Then start the relay with the new config.
    ///
    /// Exits 0 when everything was copied, 1 when some blobs in the source
    /// were corrupt (they are listed, and not copied).
    Migrate(MigrateArgs),
}

#[derive(Debug, Default, Args)]
struct MigrateArgs {
    /// Config file of the relay as it is now (the same keys as `serve
    /// --config`; a file with just `data = "cairn-data"` for the default
    /// embedded store).
    #[arg(long)]
    from: PathBuf,
    /// Config file of the relay as it will be: another data directory, or
    /// `postgres` and `s3_*` keys for the scale-out backends.
    #[arg(long)]
    to: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Args)]
struct ServeArgs {
    /// Directory for the identity key, the index and the blobs
    /// [default: ./cairn-data].
    #[arg(long, env = "CAIRN_RELAY_DATA")]
    data: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "CAIRN_RELAY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this PEM certificate
    /// chain; needs --tls-key. Without it the relay serves plain HTTP, for a
    /// reverse proxy or loopback [default: none].
    #[arg(long, env = "CAIRN_RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CAIRN_RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// State that a TLS-terminating reverse proxy sits in front of this
    /// relay. Without TLS files or this flag, the relay refuses to serve
    /// plain HTTP on an address other than loopback: clients' tokens and
    /// the signed info document their key pins rest on would cross the
    /// network readable and alterable.
    #[arg(long, env = "CAIRN_RELAY_BEHIND_TLS_PROXY")]
    behind_tls_proxy: bool,
    /// TOML file with any of the keys below (data, listen, tls_cert, tls_key,
    /// behind_tls_proxy, capacity,
    /// disk_reserve, max_blob_size, retention, gc_interval, max_uploads, key_quota,
    /// key_rate, addr_rate, pow_bits, pow_bits_under_pressure, max_heads, index_cache,
    /// peers = [{ url = "...", key = "ed25519:..." }], replicas,
    /// reconcile_interval, high_water, low_water, learn_peers, postgres,
    /// postgres_schema, postgres_pool, s3_endpoint, s3_bucket, s3_region,
    /// s3_prefix, s3_access_key, s3_secret_key).
    #[arg(long, env = "CAIRN_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Bytes given to blob storage, e.g. `500G`, `2T` [default: 10G].
    #[arg(long, env = "CAIRN_RELAY_CAPACITY", value_parser = parse_size)]
    capacity: Option<u64>,
    /// Free space to leave on the data directory's disk, e.g. `1G`: uploads
    /// that would leave less get 507, whatever else fills the disk, so the
    /// index can always commit and deletions keep working; 0 for no check
    /// [default: 64M].
    #[arg(long, env = "CAIRN_RELAY_DISK_RESERVE", value_parser = parse_size)]
    disk_reserve: Option<u64>,
    /// Largest blob accepted, e.g. `4G` [default: 4G].
    #[arg(long, env = "CAIRN_RELAY_MAX_BLOB_SIZE", value_parser = parse_size)]
    max_blob_size: Option<u64>,
    /// Minimum time a blob is kept after its last access, e.g. `90d`, `12h`,
    /// `30s`. Disclosed in the signed info document [default: 90d].
    #[arg(long, env = "CAIRN_RELAY_RETENTION", value_parser = parse_duration)]
    retention: Option<Duration>,
    /// How often expired blobs are deleted, e.g. `10m` [default: 10m].
    #[arg(long, env = "CAIRN_RELAY_GC_INTERVAL", value_parser = parse_duration)]
    gc_interval: Option<Duration>,
    /// Uploads accepted at once; more get 429 [default: 64].
    #[arg(long, env = "CAIRN_RELAY_MAX_UPLOADS")]
    max_uploads: Option<usize>,
    /// Most bytes stored per upload key, e.g. `10G`; 0 for no quota.
    /// Disclosed in the info document, like every limit [default: 4G].
    #[arg(long, env = "CAIRN_RELAY_KEY_QUOTA", value_parser = parse_size)]
    key_quota: Option<u64>,
    /// Requests a minute per upload key (bursts up to the same number);
    /// 0 for no limit [default: 600].
    #[arg(long, env = "CAIRN_RELAY_KEY_RATE")]
    key_rate: Option<u32>,
    /// Requests a minute per source address range (IPv4 /24, IPv6 /48);
    /// 0 for no limit [default: 3000].
    #[arg(long, env = "CAIRN_RELAY_ADDR_RATE")]
    addr_rate: Option<u32>,
    /// Proof-of-work bits every upload token must carry; 0 for none
    /// [default: 0].
    #[arg(long, env = "CAIRN_RELAY_POW_BITS", value_parser = clap::value_parser!(u8).range(0..=64))]
    pow_bits: Option<u8>,
    /// Proof-of-work bits required while the relay is under pressure (3/4
    /// of upload slots busy or under 5% free); 0 to never raise [default: 0].
    #[arg(long, env = "CAIRN_RELAY_POW_BITS_UNDER_PRESSURE", value_parser = clap::value_parser!(u8).range(0..=64))]
    pow_bits_under_pressure: Option<u8>,
    /// Most mailbox heads kept in all; a head for a new slot beyond that
    /// gets 507. Heads are small and do not count against --capacity; 0 for
    /// no limit [default: 1000000].
    #[arg(long, env = "CAIRN_RELAY_MAX_HEADS")]
    max_heads: Option<u64>,
    /// Memory for the embedded index's page cache, e.g. `256M`; more keeps
    /// more of a large index in memory [default: 64M].
    #[arg(long, env = "CAIRN_RELAY_INDEX_CACHE", value_parser = parse_size)]
    index_cache: Option<u64>,
    /// A peer relay as `URL=KEY` (repeatable): announced in the info
    /// document, sent replicas, offered blobs when this relay is full, and
    /// trusted to send replicas and transfers here. Get a relay's key with
    /// `curl URL/.well-known/cairn-relay`.
    #[arg(long = "peer", env = "CAIRN_RELAY_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<RelayRef>,
    /// Peers that should hold a copy of each blob clients store here; 0
    /// turns replication off [default: 2].
    #[arg(long, env = "CAIRN_RELAY_REPLICAS")]
    replicas: Option<usize>,
    /// How often replica sets are reconciled with each peer, e.g. `10m`
    /// [default: 10m].
    #[arg(long, env = "CAIRN_RELAY_RECONCILE_INTERVAL", value_parser = parse_duration)]
    reconcile_interval: Option<Duration>,
    /// Share of capacity, in percent, above which the least recently used
    /// blobs are transferred to peers with room [default: 90].
    #[arg(long, env = "CAIRN_RELAY_HIGH_WATER", value_parser = clap::value_parser!(u16).range(1..=100))]
    high_water: Option<u16>,
    /// Share of capacity, in percent, at which transfers stop [default: 80].
    #[arg(long, env = "CAIRN_RELAY_LOW_WATER", value_parser = clap::value_parser!(u16).range(0..=100))]
    low_water: Option<u16>,
    /// Most peers learned from configured peers' info documents (peer
    /// exchange); 0 to work with configured peers only [default: 8].
    #[arg(long, env = "CAIRN_RELAY_LEARN_PEERS")]
    learn_peers: Option<usize>,
    #[command(flatten)]
    storage: StorageArgs,
}

/// The config file: the same keys as the flags.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    behind_tls_proxy: Option<bool>,
    capacity: Option<String>,
    disk_reserve: Option<String>,
    max_blob_size: Option<String>,
    retention: Option<String>,
    gc_interval: Option<String>,
    max_uploads: Option<usize>,
    key_quota: Option<String>,
    key_rate: Option<u32>,
    addr_rate: Option<u32>,
    pow_bits: Option<u8>,
    pow_bits_under_pressure: Option<u8>,
    max_heads: Option<u64>,
    index_cache: Option<String>,
    #[serde(default)]
    peers: Vec<FilePeer>,
    replicas: Option<usize>,
    reconcile_interval: Option<String>,
    high_water: Option<u16>,
    low_water: Option<u16>,
    learn_peers: Option<usize>,
    postgres: Option<String>,
    postgres_schema: Option<String>,
    postgres_pool: Option<usize>,
    s3_endpoint: Option<String>,
    s3_bucket: Option<String>,
    s3_region: Option<String>,
    s3_prefix: Option<String>,
    s3_access_key: Option<String>,
    s3_secret_key: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    url: String,
    key: String,
}

/// Splits `"512M"` into `(512, "M")`; `None` if there is no leading number.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text)
        .ok_or_else(|| format!("{text:?} is not a size (examples: 1048576, 512M, 10G, 2T)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use K, M, G or T)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text)
        .ok_or_else(|| format!("{text:?} is not a duration (examples: 30s, 10m, 12h, 90d)"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h or d)"
            ));
        }
    };
    number
        .checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn parse_peer(text: &str) -> Result<RelayRef, String> {
    let (url, key) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected URL=KEY, e.g. https://b.example=ed25519:..."))?;
    make_peer(url, key)
}

fn make_peer(url: &str, key: &str) -> Result<RelayRef, String> {
    Ok(RelayRef {
        url: RelayUrl::new(url).map_err(|e| format!("peer url {url:?}: {e}"))?,
        key: key
            .parse::<VerifyingKey>()
            .map_err(|e| format!("peer key {key:?}: {e}"))?,
    })
}

/// Merges flags/env (already merged by clap) over the file over defaults.
fn resolve(mut args: ServeArgs) -> anyhow::Result<RelayConfig> {
    let args_storage = std::mem::take(&mut args.storage);
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let file_storage = StorageArgs {
        postgres: file.postgres.clone(),
        postgres_schema: file.postgres_schema.clone(),
        postgres_pool: file.postgres_pool,
        s3_endpoint: file.s3_endpoint.clone(),
        s3_bucket: file.s3_bucket.clone(),
        s3_region: file.s3_region.clone(),
        s3_prefix: file.s3_prefix.clone(),
        s3_access_key: file.s3_access_key.clone(),
        s3_secret_key: file.s3_secret_key.clone(),
    };
    let from_file = |value: Option<String>, parse: fn(&str) -> Result<u64, String>, key: &str| {
        value
            .map(|v| parse(&v).map_err(|e| anyhow::anyhow!("config key {key}: {e}")))
            .transpose()
    };
    let duration_from_file = |value: Option<String>, key: &str| {
        value
            .map(|v| parse_duration(&v).map_err(|e| anyhow::anyhow!("config key {key}: {e}")))
            .transpose()
    };
    let data = args
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from(RelayConfig::DEFAULT_DATA_DIR));
    let mut config = RelayConfig::new(data);
    if let Some(listen) = args.listen.or(file.listen) {
        config.listen = listen;
    }
    config.tls = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some(cairn_relay::TlsFiles { cert, key }),
        (None, None) => None,
        _ => bail!("TLS needs both a certificate (tls_cert) and its key (tls_key)"),
    };
    config.behind_tls_proxy = args.behind_tls_proxy || file.behind_tls_proxy.unwrap_or(false);
    if let Some(v) = args
        .capacity
        .or(from_file(file.capacity, parse_size, "capacity")?)
    {
        config.capacity_bytes = v;
    }
    if let Some(v) = args
        .disk_reserve
        .or(from_file(file.disk_reserve, parse_size, "disk_reserve")?)
    {
        config.disk_reserve_bytes = v;
    }
    if let Some(v) =
        args.max_blob_size
            .or(from_file(file.max_blob_size, parse_size, "max_blob_size")?)
    {
        config.max_blob_size = v;
    }
    if let Some(v) = args
        .retention
        .or(duration_from_file(file.retention, "retention")?)
    {
        config.retention = v;
    }
    if let Some(v) = args
        .gc_interval
        .or(duration_from_file(file.gc_interval, "gc_interval")?)
    {
        if v.is_zero() {
            bail!("gc_interval must be above zero");
        }
        config.gc_interval = v;
    }
    if let Some(v) = args.max_uploads.or(file.max_uploads) {
        config.max_concurrent_uploads = v;
    }
    let defaults = RelayConfig::DEFAULT_LIMITS;
    let pow_bits = args.pow_bits.or(file.pow_bits).unwrap_or(defaults.pow_bits);
    if pow_bits > 64 {
        bail!("pow_bits must be at most 64");
    }
    config.limits = FairShareLimits {
        key_quota_bytes: args
            .key_quota
            .or(from_file(file.key_quota, parse_size, "key_quota")?)
            .unwrap_or(defaults.key_quota_bytes),
        key_requests_per_min: args
            .key_rate
            .or(file.key_rate)
            .unwrap_or(defaults.key_requests_per_min),
        addr_requests_per_min: args
            .addr_rate
            .or(file.addr_rate)
            .unwrap_or(defaults.addr_requests_per_min),
        pow_bits,
    };
    config.pow_bits_under_pressure = args
        .pow_bits_under_pressure
        .or(file.pow_bits_under_pressure)
        .unwrap_or(0)
        .min(64);
    if let Some(v) = args.max_heads.or(file.max_heads) {
        config.max_heads = v;
    }
    if let Some(v) = args
        .index_cache
        .or(from_file(file.index_cache, parse_size, "index_cache")?)
    {
        config.index_cache_bytes =
            usize::try_from(v).context("index_cache is larger than this machine's memory")?;
    }
    config.peers = if args.peers.is_empty() {
        file.peers
            .iter()
            .map(|p| make_peer(&p.url, &p.key).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?
    } else {
        args.peers
    };
    if config.peers.len() > cairn_proto::MAX_PEERS {
        bail!("at most {} peers can be announced", cairn_proto::MAX_PEERS);
    }
    let fed = &mut config.federation;
    if let Some(v) = args.replicas.or(file.replicas) {
        fed.replicas = v;
    }
    if let Some(v) = args.reconcile_interval.or(duration_from_file(
        file.reconcile_interval,
        "reconcile_interval",
    )?) {
        if v.is_zero() {
            bail!("reconcile_interval must be above zero");
        }
        fed.reconcile_interval = v;
    }
    let high = args
        .high_water
        .or(file.high_water)
        .unwrap_or(fed.high_water_permille / 10);
    let low = args
        .low_water
        .or(file.low_water)
        .unwrap_or(fed.low_water_permille / 10);
    if !(1..=100).contains(&high) || low > 100 || low >= high {
        bail!(
            "high_water ({high}%) must be within 1–100 and above low_water ({low}%): \
             transfers start above the first and stop at the second"
        );
    }
    fed.high_water_permille = high * 10;
    fed.low_water_permille = low * 10;
    if let Some(v) = args.learn_peers.or(file.learn_peers) {
        fed.max_learned_peers = v;
    }
    config.storage = storage(args_storage.or(file_storage))?;
    Ok(config)
}

/// The storage options, from flags/environment (or the file).
#[derive(Debug, Default, Args)]
struct StorageArgs {
    /// Scale-out: keep the index in this PostgreSQL database
    /// (`postgres://user:password@host:port/db`) instead of the embedded
    /// one. Needs the --s3-* options too; several relay processes with the
    /// same identity key and backends then serve the same data
    /// (docs/OPERATING.md, "Scale-out") [default: embedded index].
    #[arg(long, env = "CAIRN_RELAY_POSTGRES", help_heading = "Scale-out")]
    postgres: Option<String>,
    /// PostgreSQL schema for the relay's tables, created if missing
    /// [default: public].
    #[arg(long, env = "CAIRN_RELAY_POSTGRES_SCHEMA", help_heading = "Scale-out")]
    postgres_schema: Option<String>,
    /// Database connections per relay process [default: 32].
    #[arg(long, env = "CAIRN_RELAY_POSTGRES_POOL", help_heading = "Scale-out")]
    postgres_pool: Option<usize>,
    /// Scale-out: keep blob bodies in the S3-compatible service at this URL
    /// (e.g. `https://s3.eu-west-1.amazonaws.com`).
    #[arg(long, env = "CAIRN_RELAY_S3_ENDPOINT", help_heading = "Scale-out")]
    s3_endpoint: Option<String>,
    /// The bucket for blob bodies (create it beforehand).
    #[arg(long, env = "CAIRN_RELAY_S3_BUCKET", help_heading = "Scale-out")]
    s3_bucket: Option<String>,
    /// The region requests are signed for [default: us-east-1].
    #[arg(long, env = "CAIRN_RELAY_S3_REGION", help_heading = "Scale-out")]
    s3_region: Option<String>,
    /// Key prefix for this relay's objects in the bucket [default: none].
    #[arg(long, env = "CAIRN_RELAY_S3_PREFIX", help_heading = "Scale-out")]
    s3_prefix: Option<String>,
    /// The S3 access key id.
    #[arg(long, env = "CAIRN_RELAY_S3_ACCESS_KEY", help_heading = "Scale-out")]
    s3_access_key: Option<String>,
    /// The S3 secret key; prefer the environment variable or the config
    /// file (mode 0600) to a flag, which other users can see in `ps`.
    #[arg(
        long,
        env = "CAIRN_RELAY_S3_SECRET_KEY",
        hide_env_values = true,
        help_heading = "Scale-out"
    )]
    s3_secret_key: Option<String>,
}

impl StorageArgs {
    fn or(self, other: Self) -> Self {
        Self {
            postgres: self.postgres.or(other.postgres),
            postgres_schema: self.postgres_schema.or(other.postgres_schema),
            postgres_pool: self.postgres_pool.or(other.postgres_pool),
            s3_endpoint: self.s3_endpoint.or(other.s3_endpoint),
            s3_bucket: self.s3_bucket.or(other.s3_bucket),
            s3_region: self.s3_region.or(other.s3_region),
            s3_prefix: self.s3_prefix.or(other.s3_prefix),
            s3_access_key: self.s3_access_key.or(other.s3_access_key),
            s3_secret_key: self.s3_secret_key.or(other.s3_secret_key),
        }
    }
}

/// Embedded unless the scale-out backends are configured, and then both.
fn storage(s: StorageArgs) -> anyhow::Result<StorageConfig> {
    let any_s3 = s.s3_endpoint.is_some() || s.s3_bucket.is_some();
    match (s.postgres, any_s3) {
        (None, false) => Ok(StorageConfig::Embedded),
        (None, true) => bail!(
            "S3 storage for blob bodies needs the index in PostgreSQL too (--postgres): the \
             scale-out backends go together, so that several relay processes can share them"
        ),
        (Some(_), false) => bail!(
            "a PostgreSQL index needs blob bodies in S3-compatible storage too (--s3-endpoint, \
             --s3-bucket, --s3-access-key, --s3-secret-key): the scale-out backends go together"
        ),
        (Some(url), true) => {
            let need = |v: Option<String>, what: &str| {
                v.filter(|v| !v.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("scale-out storage needs {what}"))
            };
            Ok(StorageConfig::ScaleOut(ScaleOutConfig {
                postgres: PostgresConfig {
                    url,
                    schema: s.postgres_schema,
                    pool_size: s.postgres_pool.unwrap_or(PostgresConfig::DEFAULT_POOL_SIZE),
                },
                s3: S3Config {
                    endpoint: need(s.s3_endpoint, "--s3-endpoint")?,
                    bucket: need(s.s3_bucket, "--s3-bucket")?,
                    region: s.s3_region.unwrap_or_else(|| "us-east-1".into()),
                    prefix: s.s3_prefix.unwrap_or_default(),
                    access_key_id: need(s.s3_access_key, "--s3-access-key")?,
                    secret_access_key: need(s.s3_secret_key, "--s3-secret-key")?,
                },
            }))
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // No command is `serve` with no flags; parsed as such, so that the
    // CAIRN_RELAY_* variables apply to it too.
    let command = match cli.command {
        Some(command) => command,
        None => Cli::parse_from(["cairn-relay", "serve"])
            .command
            .context("`serve` parses as a command")?,
    };
    match command {
        Command::Serve(args) => {
            let config = resolve(*args)?;
            if config.exposes_plain_http() {
                bail!(
                    "refusing to serve plain HTTP on {}, which other machines can reach: clients' \
                     upload tokens and the signed info document their key pins rest on would \
                     cross the network readable and alterable. Serve HTTPS (--tls-cert and \
                     --tls-key), listen on loopback (127.0.0.1), or, if a TLS-terminating \
                     reverse proxy sits in front of this relay, say so with --behind-tls-proxy \
                     (behind_tls_proxy = true in the config file)",
                    config.listen
                );
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck { data, repair, json } => fsck(&data, repair, json),
        Command::Migrate(args) => migrate(&args),
    }
}

/// Prints a command's report on standard output.
#[allow(clippy::print_stdout, reason = "the command's report")]
fn print_out(out: &str) {
    println!("{out}");
}

fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = |path: &Path| {
        resolve(ServeArgs {
            config: Some(path.to_path_buf()),
            ..ServeArgs::default()
        })
    };
    let (from, to) = (config(&args.from)?, config(&args.to)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut progress = |r: &cairn_relay::MigrationReport| {
        tracing::info!(
            copied = r.blobs_copied,
            bytes = r.bytes_copied,
            already_there = r.blobs_present,
            "migrating"
        );
    };
    let report = runtime
        .block_on(cairn_relay::migrate(&from, &to, &mut progress))
        .context("migration stopped (the source is unchanged; run again to resume)")?;
    let out = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut text = format!(
            "copied and verified {} blobs ({} bytes); {} were there already; {} heads, \
             {} forwarding records",
            report.blobs_copied,
            report.bytes_copied,
            report.blobs_present,
            report.heads,
            report.forwards
        );
        for id in &report.corrupt_in_source {
            text.push_str(&format!("\ncorrupt in the source, not copied: {id}"));
        }
        text
    };
    print_out(&out);
    Ok(if report.corrupt_in_source.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(config: RelayConfig) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives while the relay starts must
    // still mean "stop gracefully", not the default "die at once".
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let data = config.data_dir.clone();
    let relay = cairn_relay::start(config)
        .await
        .with_context(|| format!("starting the relay with data in {}", data.display()))?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    relay.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn fsck(data: &Path, repair: bool, json: bool) -> anyhow::Result<ExitCode> {
    if data.join("relay.key").exists()
        && !data.join("index.redb").exists()
        && !data.join("blobs").exists()
    {
        bail!(
            "{} holds no embedded store: a scale-out relay keeps its index in PostgreSQL and its \
             blobs in S3, which keep their own integrity (docs/OPERATING.md, \"Scale-out\"); \
             to check every byte, `cairn-relay migrate` into a fresh data directory and fsck that",
            data.display()
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = cairn_relay::fsck(data, repair, now).with_context(|| {
        format!(
            "checking {} (is the relay still running? stop it first)",
            data.display()
        )
    })?;
    let out = if json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut lines = vec![format!(
            "checked {} files ({} bytes); index lists {} blobs",
            report.files_checked, report.bytes_checked, report.indexed
        )];
        for (label, list) in [
            ("corrupt (bytes do not match id)", &report.corrupt),
            ("stray (not a blob file)", &report.stray),
            ("orphan (valid, not indexed)", &report.orphans),
            ("missing (indexed, no file)", &report.missing),
            ("wrong size in index", &report.wrong_size),
        ] {
            if !list.is_empty() {
                lines.push(format!("{label}: {}", list.len()));
                lines.extend(list.iter().map(|x| format!("  {x}")));
            }
        }
        lines.push(if report.is_clean() {
            "store is consistent".to_owned()
        } else if report.repaired {
            "repaired".to_owned()
        } else {
            "problems found; run again with --repair to fix the index".to_owned()
        });
        lines.join("\n")
    };
    print_out(&out);
    Ok(if report.is_clean() || report.repaired {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn peers() {
        let key = cairn_proto::SigningKey::from_seed(&[1; 32]).verifying_key();
        let peer = parse_peer(&format!("https://b.example={key}")).unwrap();
        assert_eq!(peer.key, key);
        assert!(parse_peer("https://b.example").is_err());
        assert!(parse_peer(&format!("ftp://b={key}")).is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "capacity = \"1G\"\nretention = \"7d\"\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            capacity: Some(5),
            ..ServeArgs::default()
        };
        let config = resolve(args).unwrap();
        assert_eq!(config.capacity_bytes, 5);
        assert_eq!(config.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(config.listen.port(), 9000);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "capacty = \"1G\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert!(resolve(args).is_err());
    }
}
