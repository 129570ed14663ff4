//! The settings of `cairn-relay serve`, each declared once.
//!
//! A field of [`Settings`] is one setting: its flag and help (clap), its
//! `CAIRN_RELAY_*` environment variable (clap), its config-file key (serde,
//! the field's name) and its parser (the same for flag and file) all follow
//! from it. `None` means "not given here". Flags win over the environment
//! (clap merges those two), [`Settings::or`] puts them over the config file,
//! and [`Settings::resolve`] fills the rest from [`RelayConfig::new`]'s
//! defaults. Whether the result can run is [`RelayConfig::validate`]'s
//! question, not this module's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_proto::{RelayRef, RelayUrl, VerifyingKey};
use serde::Deserialize as _;

use crate::config::{
    PostgresConfig, RelayConfig, S3Config, ScaleOutConfig, StorageConfig, TlsFiles,
};

/// Every setting of `cairn-relay serve`: parsed from flags and environment
/// by clap, from the TOML config file by serde (unknown keys refused),
/// merged by [`Settings::or`], turned into a [`RelayConfig`] by
/// [`Settings::resolve`].
#[derive(Clone, Debug, Default, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory for the identity key, the index and the blobs
    /// [default: ./cairn-data].
    #[arg(long, env = "CAIRN_RELAY_DATA")]
    pub data: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "CAIRN_RELAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this PEM certificate
    /// chain; needs --tls-key. Without it the relay serves plain HTTP, for a
    /// reverse proxy or loopback [default: none].
    #[arg(long, env = "CAIRN_RELAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CAIRN_RELAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// State that a TLS-terminating reverse proxy sits in front of this
    /// relay. Without TLS files or this flag, the relay refuses to serve
    /// plain HTTP on an address other than loopback: clients' tokens and
    /// the signed info document their key pins rest on would cross the
    /// network readable and alterable.
    #[arg(long, env = "CAIRN_RELAY_BEHIND_TLS_PROXY")]
    #[serde(default)]
    pub behind_tls_proxy: bool,
    /// TOML file with any of the keys below (data, listen, tls_cert, tls_key,
    /// behind_tls_proxy, capacity,
    /// disk_reserve, max_blob_size, retention, gc_interval, max_uploads, key_quota,
    /// key_rate, addr_rate, pow_bits, pow_bits_under_pressure, max_heads, index_cache,
    /// peers = [{ url = "...", key = "ed25519:..." }], replicas,
    /// reconcile_interval, high_water, low_water, learn_peers, postgres,
    /// postgres_schema, postgres_pool, s3_endpoint, s3_bucket, s3_region,
    /// s3_prefix, s3_access_key, s3_secret_key).
    #[arg(long, env = "CAIRN_RELAY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Bytes given to blob storage, e.g. `500G`, `2T` [default: 10G].
    #[arg(long, env = "CAIRN_RELAY_CAPACITY", value_parser = parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub capacity: Option<u64>,
    /// Free space to leave on the data directory's disk, e.g. `1G`: uploads
    /// that would leave less get 507, whatever else fills the disk, so the
    /// index can always commit and deletions keep working; 0 for no check
    /// [default: 64M].
    #[arg(long, env = "CAIRN_RELAY_DISK_RESERVE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub disk_reserve: Option<u64>,
    /// Largest blob accepted, e.g. `4G` [default: 4G].
    #[arg(long, env = "CAIRN_RELAY_MAX_BLOB_SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_blob_size: Option<u64>,
    /// Minimum time a blob is kept after its last access, e.g. `90d`, `12h`,
    /// `30s`. Disclosed in the signed info document [default: 90d].
    #[arg(long, env = "CAIRN_RELAY_RETENTION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub retention: Option<Duration>,
    /// How often expired blobs are deleted, e.g. `10m` [default: 10m].
    #[arg(long, env = "CAIRN_RELAY_GC_INTERVAL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub gc_interval: Option<Duration>,
    /// Uploads accepted at once; more get 503 unavailable with Retry-After
    /// [default: 64].
    #[arg(long, env = "CAIRN_RELAY_MAX_UPLOADS")]
    pub max_uploads: Option<usize>,
    /// Most bytes stored per upload key, e.g. `10G`; 0 for no quota.
    /// Disclosed in the info document, like every limit [default: 4G].
    #[arg(long, env = "CAIRN_RELAY_KEY_QUOTA", value_parser = parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub key_quota: Option<u64>,
    /// Requests a minute per upload key (bursts up to the same number);
    /// 0 for no limit [default: 3000].
    #[arg(long, env = "CAIRN_RELAY_KEY_RATE")]
    pub key_rate: Option<u32>,
    /// Requests a minute per source address range (IPv4 /24, IPv6 /48);
    /// 0 for no limit [default: 3000].
    #[arg(long, env = "CAIRN_RELAY_ADDR_RATE")]
    pub addr_rate: Option<u32>,
    /// Proof-of-work bits every upload token must carry; 0 for none
    /// [default: 0].
    #[arg(long, env = "CAIRN_RELAY_POW_BITS", value_parser = clap::value_parser!(u8).range(0..=64))]
    pub pow_bits: Option<u8>,
    /// Proof-of-work bits required while the relay is under pressure (3/4
    /// of upload slots busy or under 5% free); 0 to never raise [default: 0].
    #[arg(long, env = "CAIRN_RELAY_POW_BITS_UNDER_PRESSURE", value_parser = clap::value_parser!(u8).range(0..=64))]
    pub pow_bits_under_pressure: Option<u8>,
    /// Most mailbox heads kept in all; a head for a new slot beyond that
    /// gets 507. Heads are small and do not count against --capacity; 0 for
    /// no limit [default: 1000000].
    #[arg(long, env = "CAIRN_RELAY_MAX_HEADS")]
    pub max_heads: Option<u64>,
    /// Memory for the embedded index's page cache, e.g. `256M`; more keeps
    /// more of a large index in memory [default: 64M].
    #[arg(long, env = "CAIRN_RELAY_INDEX_CACHE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub index_cache: Option<u64>,
    /// A peer relay as `URL=KEY` (repeatable): announced in the info
    /// document, sent replicas, offered blobs when this relay is full, and
    /// trusted to send replicas and transfers here. Get a relay's key with
    /// `curl URL/.well-known/cairn-relay`.
    #[arg(long = "peer", env = "CAIRN_RELAY_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    #[serde(default, deserialize_with = "peers")]
    pub peers: Option<Vec<RelayRef>>,
    /// Peers that should hold a copy of each blob clients store here; 0
    /// turns replication off [default: 2].
    #[arg(long, env = "CAIRN_RELAY_REPLICAS")]
    pub replicas: Option<usize>,
    /// How often replica sets are reconciled with each peer, e.g. `10m`
    /// [default: 10m].
    #[arg(long, env = "CAIRN_RELAY_RECONCILE_INTERVAL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub reconcile_interval: Option<Duration>,
    /// Share of capacity, in percent, above which the least recently used
    /// blobs are transferred to peers with room [default: 90].
    #[arg(long, env = "CAIRN_RELAY_HIGH_WATER", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub high_water: Option<u16>,
    /// Share of capacity, in percent, at which transfers stop [default: 80].
    #[arg(long, env = "CAIRN_RELAY_LOW_WATER", value_parser = clap::value_parser!(u16).range(0..=100))]
    pub low_water: Option<u16>,
    /// Most peers learned from configured peers' info documents (peer
    /// exchange); 0 to work with configured peers only [default: 8].
    #[arg(long, env = "CAIRN_RELAY_LEARN_PEERS")]
    pub learn_peers: Option<usize>,
    /// Scale-out: keep the index in this PostgreSQL database
    /// (`postgres://user:password@host:port/db`) instead of the embedded
    /// one. Needs the --s3-* options too; several relay processes with the
    /// same identity key and backends then serve the same data
    /// (docs/OPERATING.md, "Scale-out") [default: embedded index].
    #[arg(long, env = "CAIRN_RELAY_POSTGRES", help_heading = "Scale-out")]
    pub postgres: Option<Secret>,
    /// PostgreSQL schema for the relay's tables, created if missing
    /// [default: public].
    #[arg(long, env = "CAIRN_RELAY_POSTGRES_SCHEMA", help_heading = "Scale-out")]
    pub postgres_schema: Option<String>,
    /// Database connections per relay process [default: 32].
    #[arg(long, env = "CAIRN_RELAY_POSTGRES_POOL", help_heading = "Scale-out")]
    pub postgres_pool: Option<usize>,
    /// Scale-out: keep blob bodies in the S3-compatible service at this URL
    /// (e.g. `https://s3.eu-west-1.amazonaws.com`).
    #[arg(long, env = "CAIRN_RELAY_S3_ENDPOINT", help_heading = "Scale-out")]
    pub s3_endpoint: Option<String>,
    /// The bucket for blob bodies (create it beforehand).
    #[arg(long, env = "CAIRN_RELAY_S3_BUCKET", help_heading = "Scale-out")]
    pub s3_bucket: Option<String>,
    /// The region requests are signed for [default: us-east-1].
    #[arg(long, env = "CAIRN_RELAY_S3_REGION", help_heading = "Scale-out")]
    pub s3_region: Option<String>,
    /// Key prefix for this relay's objects in the bucket [default: none].
    #[arg(long, env = "CAIRN_RELAY_S3_PREFIX", help_heading = "Scale-out")]
    pub s3_prefix: Option<String>,
    /// The S3 access key id.
    #[arg(long, env = "CAIRN_RELAY_S3_ACCESS_KEY", help_heading = "Scale-out")]
    pub s3_access_key: Option<String>,
    /// The S3 secret key; prefer the environment variable or the config
    /// file (mode 0600) to a flag, which other users can see in `ps`.
    #[arg(
        long,
        env = "CAIRN_RELAY_S3_SECRET_KEY",
        hide_env_values = true,
        help_heading = "Scale-out"
    )]
    pub s3_secret_key: Option<Secret>,
}

/// A setting that may hold a password (the S3 secret key, a PostgreSQL URL),
/// redacted in `Debug` output.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why settings could not become a [`RelayConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("reading config file {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value its
    /// key's parser refuses.
    #[error("parsing config file {}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: FileError,
    },
    /// A TLS certificate without its key, or a key without its certificate.
    #[error("TLS needs both a certificate (tls_cert) and its key (tls_key)")]
    TlsIncomplete,
    /// S3 settings without PostgreSQL.
    #[error(
        "S3 storage for blob bodies needs the index in PostgreSQL too (--postgres): the \
         scale-out backends go together, so that several relay processes can share them"
    )]
    S3WithoutPostgres,
    /// PostgreSQL without S3 settings.
    #[error(
        "a PostgreSQL index needs blob bodies in S3-compatible storage too (--s3-endpoint, \
         --s3-bucket, --s3-access-key, --s3-secret-key): the scale-out backends go together"
    )]
    PostgresWithoutS3,
    /// `index_cache` does not fit in this machine's address space.
    #[error("index_cache is larger than this machine's memory")]
    IndexCacheTooLarge,
}

/// What is wrong in a config file, and where (line, column and the
/// offending text).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct FileError(toml::de::Error);

impl Settings {
    /// Reads the config file named by [`Settings::config`], if any, puts
    /// these settings over it, and fills the rest with the defaults.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] if the file cannot be read or parsed, or the
    /// settings contradict each other (half a TLS pair, half the scale-out
    /// backends).
    pub fn resolve(self) -> Result<RelayConfig, SettingsError> {
        let file = match &self.config {
            Some(path) => Self::read(path)?,
            None => Self::default(),
        };
        self.or(file).into_config()
    }

    /// The settings in the TOML file at `path`.
    ///
    /// # Errors
    ///
    /// [`SettingsError::ReadFile`] or [`SettingsError::ParseFile`].
    pub fn read(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SettingsError::ParseFile {
            path: path.to_path_buf(),
            source: FileError(e),
        })
    }

    /// These settings over `below`: each one given here wins, the others
    /// come from `below`. A flag that is on stays on.
    #[must_use]
    pub fn or(self, below: Self) -> Self {
        Self {
            data: self.data.or(below.data),
            listen: self.listen.or(below.listen),
            tls_cert: self.tls_cert.or(below.tls_cert),
            tls_key: self.tls_key.or(below.tls_key),
            behind_tls_proxy: self.behind_tls_proxy || below.behind_tls_proxy,
            config: self.config.or(below.config),
            capacity: self.capacity.or(below.capacity),
            disk_reserve: self.disk_reserve.or(below.disk_reserve),
            max_blob_size: self.max_blob_size.or(below.max_blob_size),
            retention: self.retention.or(below.retention),
            gc_interval: self.gc_interval.or(below.gc_interval),
            max_uploads: self.max_uploads.or(below.max_uploads),
            key_quota: self.key_quota.or(below.key_quota),
            key_rate: self.key_rate.or(below.key_rate),
            addr_rate: self.addr_rate.or(below.addr_rate),
            pow_bits: self.pow_bits.or(below.pow_bits),
            pow_bits_under_pressure: self
                .pow_bits_under_pressure
                .or(below.pow_bits_under_pressure),
            max_heads: self.max_heads.or(below.max_heads),
            index_cache: self.index_cache.or(below.index_cache),
            peers: self.peers.or(below.peers),
            replicas: self.replicas.or(below.replicas),
            reconcile_interval: self.reconcile_interval.or(below.reconcile_interval),
            high_water: self.high_water.or(below.high_water),
            low_water: self.low_water.or(below.low_water),
            learn_peers: self.learn_peers.or(below.learn_peers),
            postgres: self.postgres.or(below.postgres),
            postgres_schema: self.postgres_schema.or(below.postgres_schema),
            postgres_pool: self.postgres_pool.or(below.postgres_pool),
            s3_endpoint: self.s3_endpoint.or(below.s3_endpoint),
            s3_bucket: self.s3_bucket.or(below.s3_bucket),
            s3_region: self.s3_region.or(below.s3_region),
            s3_prefix: self.s3_prefix.or(below.s3_prefix),
            s3_access_key: self.s3_access_key.or(below.s3_access_key),
            s3_secret_key: self.s3_secret_key.or(below.s3_secret_key),
        }
    }

    /// The defaults with every setting given here put in its place.
    fn into_config(self) -> Result<RelayConfig, SettingsError> {
        let Self {
            data,
            listen,
            tls_cert,
            tls_key,
            behind_tls_proxy,
            config: _,
            capacity,
            disk_reserve,
            max_blob_size,
            retention,
            gc_interval,
            max_uploads,
            key_quota,
            key_rate,
            addr_rate,
            pow_bits,
            pow_bits_under_pressure,
            max_heads,
            index_cache,
            peers,
            replicas,
            reconcile_interval,
            high_water,
            low_water,
            learn_peers,
            postgres,
            postgres_schema,
            postgres_pool,
            s3_endpoint,
            s3_bucket,
            s3_region,
            s3_prefix,
            s3_access_key,
            s3_secret_key,
        } = self;
        let mut c =
            RelayConfig::new(data.unwrap_or_else(|| PathBuf::from(RelayConfig::DEFAULT_DATA_DIR)));
        set(&mut c.listen, listen);
        c.tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(SettingsError::TlsIncomplete),
        };
        c.behind_tls_proxy = behind_tls_proxy;
        set(&mut c.capacity_bytes, capacity);
        set(&mut c.disk_reserve_bytes, disk_reserve);
        set(&mut c.max_blob_size, max_blob_size);
        set(&mut c.retention, retention);
        set(&mut c.gc_interval, gc_interval);
        set(&mut c.max_concurrent_uploads, max_uploads);
        set(&mut c.limits.key_quota_bytes, key_quota);
        set(&mut c.limits.key_requests_per_min, key_rate);
        set(&mut c.limits.addr_requests_per_min, addr_rate);
        set(&mut c.limits.pow_bits, pow_bits);
        set(&mut c.pow_bits_under_pressure, pow_bits_under_pressure);
        set(&mut c.max_heads, max_heads);
        let index_cache = index_cache.map(usize::try_from).transpose();
        set(
            &mut c.index_cache_bytes,
            index_cache.map_err(|_| SettingsError::IndexCacheTooLarge)?,
        );
        set(&mut c.peers, peers);
        let fed = &mut c.federation;
        set(&mut fed.replicas, replicas);
        set(&mut fed.reconcile_interval, reconcile_interval);
        // Percent to thousandths; a value past 100% stays past it for
        // `validate` to refuse.
        let permille = |percent: u16| percent.saturating_mul(10);
        set(&mut fed.high_water_permille, high_water.map(permille));
        set(&mut fed.low_water_permille, low_water.map(permille));
        set(&mut fed.max_learned_peers, learn_peers);
        // Embedded unless the scale-out backends are configured, and then
        // both.
        let any_s3 = s3_endpoint.is_some() || s3_bucket.is_some();
        c.storage = match (postgres, any_s3) {
            (None, false) => StorageConfig::Embedded,
            (None, true) => return Err(SettingsError::S3WithoutPostgres),
            (Some(_), false) => return Err(SettingsError::PostgresWithoutS3),
            (Some(Secret(url)), true) => StorageConfig::ScaleOut(ScaleOutConfig {
                postgres: PostgresConfig {
                    url,
                    schema: postgres_schema,
                    pool_size: postgres_pool.unwrap_or(PostgresConfig::DEFAULT_POOL_SIZE),
                },
                // Missing values stay empty for `validate` to name.
                s3: S3Config {
                    endpoint: s3_endpoint.unwrap_or_default(),
                    bucket: s3_bucket.unwrap_or_default(),
                    region: s3_region.unwrap_or_else(|| S3Config::DEFAULT_REGION.into()),
                    prefix: s3_prefix.unwrap_or_default(),
                    access_key_id: s3_access_key.unwrap_or_default(),
                    secret_access_key: s3_secret_key.map(|s| s.0).unwrap_or_default(),
                },
            }),
        };
        Ok(c)
    }
}

/// Puts `value`, if given, in `slot`.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// Splits `"512M"` into `(512, "M")`; `None` if there is no leading number.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

/// Bytes, as `1048576`, `512M`, `10G` or `2TiB`.
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

/// A span of time, as `30s` (or `30`), `10m`, `12h` or `90d`.
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

/// A peer flag, `URL=KEY`.
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

/// A size key in the file: a string `parse_size` takes.
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_size(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A duration key in the file: a string `parse_duration` takes.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The file's `peers = [{ url = "...", key = "ed25519:..." }]`.
fn peers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<RelayRef>>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FilePeer {
        url: String,
        key: String,
    }
    Vec::<FilePeer>::deserialize(d)?
        .iter()
        .map(|p| make_peer(&p.url, &p.key).map_err(serde::de::Error::custom))
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;

    /// `Settings` as a command line of its own.
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        settings: Settings,
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

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
        let (_dir, path) =
            file("capacity = \"1G\"\nretention = \"7d\"\nlisten = \"127.0.0.1:9000\"\n");
        let settings = Settings {
            config: Some(path),
            capacity: Some(5),
            ..Settings::default()
        };
        let config = settings.resolve().unwrap();
        assert_eq!(config.capacity_bytes, 5);
        assert_eq!(config.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(config.listen.port(), 9000);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        for text in ["capacty = \"1G\"\n", "config = \"other.toml\"\n"] {
            let (_dir, path) = file(text);
            let err = Settings::read(&path).unwrap_err();
            assert!(matches!(err, SettingsError::ParseFile { .. }), "{err}");
        }
    }

    #[test]
    fn a_file_value_goes_through_the_flags_parser() {
        let (_dir, path) = file("peers = [{ url = \"https://b.example\", key = \"nope\" }]\n");
        let err = Settings::read(&path).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("peer key \"nope\""), "{chain}");

        let (_dir, path) = file("capacity = \"10X\"\n");
        let err = Settings::read(&path).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("unknown unit \"X\""), "{chain}");
        assert!(
            chain.contains("capacity = \"10X\""),
            "names the line: {chain}"
        );
    }

    /// `args` parsed as flags, with the environment left out so that the
    /// developer's own `CAIRN_RELAY_*` variables cannot change the result.
    fn flags(args: &[&str]) -> Settings {
        let command = Flags::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap();
        Flags::from_arg_matches(&matches).unwrap().settings
    }

    #[test]
    fn a_flag_and_its_file_key_give_the_same_setting() {
        let key = cairn_proto::SigningKey::from_seed(&[1; 32]).verifying_key();
        let peer = format!("https://b.example={key}");
        let from_flags = flags(&[
            "--capacity",
            "2G",
            "--gc-interval",
            "5m",
            "--peer",
            &peer,
            "--high-water",
            "70",
            "--behind-tls-proxy",
            "--s3-region",
            "eu-west-1",
        ]);
        let (_dir, path) = file(&format!(
            "capacity = \"2G\"\ngc_interval = \"5m\"\nhigh_water = 70\n\
             behind_tls_proxy = true\ns3_region = \"eu-west-1\"\n\
             peers = [{{ url = \"https://b.example\", key = \"{key}\" }}]\n",
        ));
        let from_file = Settings::read(&path).unwrap();
        assert_eq!(format!("{from_flags:?}"), format!("{from_file:?}"));
    }

    #[test]
    fn the_config_help_lists_every_file_key() {
        let command = Flags::command();
        let help = command
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .and_then(|a| a.get_long_help().or(a.get_help()))
            .unwrap()
            .to_string();
        for arg in command.get_arguments() {
            let key = arg.get_id().as_str();
            if key != "config" && key != "help" {
                assert!(help.contains(key), "--config's help lacks {key}");
            }
        }
    }

    #[test]
    fn half_a_tls_pair_or_half_the_backends_is_refused() {
        let resolve = |s: Settings| s.resolve().unwrap_err().to_string();
        let cert_only = Settings {
            tls_cert: Some("cert.pem".into()),
            ..Settings::default()
        };
        assert!(resolve(cert_only).starts_with("TLS needs both"));
        let s3_only = Settings {
            s3_bucket: Some("cairn".into()),
            ..Settings::default()
        };
        assert!(resolve(s3_only).starts_with("S3 storage for blob bodies needs"));
        let postgres_only = Settings {
            postgres: Some("postgres://localhost/cairn".into()),
            ..Settings::default()
        };
        assert!(resolve(postgres_only).starts_with("a PostgreSQL index needs"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let settings = flags(&[
            "--postgres",
            "postgres://cairn:hunter2@db/cairn",
            "--s3-secret-key",
            "s3cr3t",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
        ]);
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert_eq!(settings.s3_secret_key, Some("s3cr3t".into()));
    }

    #[test]
    fn out_of_range_file_values_reach_validate() {
        let (_dir, path) = file("high_water = 7000\npow_bits_under_pressure = 65\n");
        let config = Settings {
            config: Some(path),
            ..Settings::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            config.validate(),
            Err(crate::ConfigError::PowBits {
                setting: "pow_bits_under_pressure"
            })
        );
    }
}
