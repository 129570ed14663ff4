//! The cairn relay.
//!
//! A relay stores opaque encrypted blobs for clients that are offline, serves
//! them back, and advertises its capacity and the limits it applies. It holds
//! no accounts and never sees plaintext: everything it stores is addressed by
//! the BLAKE3 hash of its ciphertext ([`cairn_proto::BlobId`]).
//!
//! - [`start`] runs a relay from a [`RelayConfig`] and returns a
//!   [`RelayHandle`] (bound address, identity key, GC trigger, graceful
//!   shutdown).
//! - [`RelayConfig::validate`] says whether a configuration can run;
//!   [`start`] refuses one that cannot with [`StartError::Config`].
//! - [`Settings`] declares each setting of `cairn-relay serve` once (flag,
//!   environment variable, config-file key, parser, help) and resolves flags
//!   over the config file over the defaults into a [`RelayConfig`].
//! - [`fsck`] checks a stopped relay's store and can repair its index.
//!
//! The store's commit protocol and crash behaviour are documented in the
//! `store` module; the HTTP API in docs/PROTOCOL.md §7.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = cairn_relay::RelayConfig::new("/var/lib/cairn");
//! config.listen = "127.0.0.1:0".parse()?;
//! let relay = cairn_relay::start(config).await?;
//! println!("relay {} at {}", relay.key(), relay.url());
//! relay.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod federation;
mod http;
mod keyfile;
mod limits;
mod metrics;
mod migrate;
mod node;
mod rates;
mod server;
mod settings;
mod store;
mod tls;

// The clock lives in cairn-api, shared with the client; relay code and its
// tests keep naming it `cairn_relay::Clock`.
pub use cairn_api::Clock;
pub use config::{
    ConfigError, FederationConfig, PostgresConfig, RelayConfig, S3Config, ScaleOutConfig,
    StorageConfig, TlsFiles,
};
pub use federation::{AuditReport, ReconcileCounts, TransferReport};
pub use http::route_paths;
pub use keyfile::{KeyFileError, load_or_create as load_or_create_key};
pub use migrate::{MigrateError, MigrationReport, migrate};
pub use server::{GcReport, RelayHandle, StartError, start, start_with_clock};
pub use settings::{FileError, Secret, Settings, SettingsError};
pub use store::StoreError;
pub use store::{FsckReport, fsck};

/// The software name and version a relay reports in its info document.
pub const SOFTWARE: &str = concat!("cairn-relay ", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    #[test]
    fn software_version_is_a_valid_protocol_field() {
        assert!(cairn_proto::SoftwareVersion::new(super::SOFTWARE).is_ok());
    }
}
