//! [`Client`]: one device's view of an identity, and everything it can do.
//!
//! Opening a client unlocks the device's keys with the passphrase and
//! verifies the locally stored identity log; commands that talk to relays
//! first bring the log up to date from them.

mod audit;
mod chains;
mod devices;
mod folders;
mod mailbox;
mod metadata;
mod relays;
mod repair;
mod rotate;
mod storage;
mod sync;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use cairn_api::Clock;
use cairn_proto::{DeviceName, SigningKey, VerifyingKey};

pub use audit::{AuditReport, DEFAULT_CHUNKS as DEFAULT_AUDIT_CHUNKS, RelayAudit};
pub use devices::{Enrolled, Revoked, Rotated};
pub use folders::{FolderInfo, FolderPass, FolderRestored, FolderStatus, FolderVersion};
pub use metadata::MetadataReport;
pub use relays::{CopiesCheck, RelayAdded, RelayCheck, TransferCheck};
pub use repair::{RepairReport, Restored, Unchecked};
pub use rotate::RotateReport;
pub use storage::{
    ByteRange, ExportFailure, ExportReport, Exported, FileInfo, GetReport, Listing, Output,
    PutReport, RangeSpec, RemoveReport, Transfer,
};
pub use sync::{DeviceSync, Finding, Offline, RelaySync, RevokedDevice, StatusReport, SyncReport};

use crate::error::{Error, Result};
use crate::home::{Home, read_required, write_private};
use crate::identity::IdentityLog;
use crate::keyfile::{self, KdfCost, Passphrase};
use crate::keys::{DeviceKeys, VaultKey, X25519Secret};
use crate::layout::Layouts;
use crate::relay::{
    RedirectPolicy, RelayClient, RelaySet, Transport, check_transport, http_client,
};

/// Default number of relays each blob is stored on.
pub const DEFAULT_REPLICAS: usize = 3;

/// Settings and public identity facts, in `HOME/config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Config {
    /// Format version of the home.
    version: u32,
    /// The identity's root public key: the trust anchor for the log.
    #[serde(with = "crate::text_serde")]
    root: VerifyingKey,
    /// This device's name in the identity log.
    device_name: String,
    /// How many relays each blob is stored on.
    replicas: usize,
    /// Which layout (`crate::layout`) each generation uses.
    #[serde(flatten)]
    layouts: Layouts,
}

/// The home format: 2 records which layout each generation uses.
const HOME_VERSION: u32 = 2;

/// This device's secret keys, as sealed in `HOME/keys/device.age`.
#[derive(Serialize, Deserialize)]
struct DeviceFile {
    signing: String,
    x25519: String,
}

/// The root key, as sealed in `HOME/keys/root.age` or an export.
#[derive(Serialize, Deserialize)]
struct RootFile {
    root: String,
}

/// What a new home starts with: the identity as this device knows it.
struct Founding {
    /// The identity's root public key.
    root_key: VerifyingKey,
    /// The root key itself, on the device that made or recovered it.
    root: Option<SigningKey>,
    /// This device's keys.
    device: DeviceKeys,
    /// The verified identity log, enrolling this device.
    log: IdentityLog,
    /// Which layout each generation uses.
    layouts: Layouts,
}

impl Founding {
    /// A home of the device holding `root`.
    fn with_root(root: SigningKey, device: DeviceKeys, log: IdentityLog, layouts: Layouts) -> Self {
        Self {
            root_key: root.verifying_key(),
            root: Some(root),
            device,
            log,
            layouts,
        }
    }
}

/// What `init` needs to know.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// This device's name (1–64 characters).
    pub device_name: String,
    /// How hard the passphrase protects key files.
    pub cost: KdfCost,
    /// Whether plain http may reach relays off this machine (the URL
    /// given to join or recover through, and transfer redirects).
    pub transport: Transport,
}

/// One device's client.
#[derive(Debug)]
pub struct Client {
    home: Home,
    config: Config,
    device: DeviceKeys,
    root: Option<SigningKey>,
    log: IdentityLog,
    relays: RelaySet,
    http: reqwest::Client,
    cost: KdfCost,
    transport: Transport,
    clock: Clock,
}

impl Client {
    /// Creates a new identity in `home`: root key, this device's keys, vault
    /// generation 1 and the identity log. Returns the client and the
    /// recovery phrase, which the user must write down.
    pub fn init(
        home: Home,
        passphrase: &Passphrase,
        options: &InitOptions,
    ) -> Result<(Self, Zeroizing<String>)> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed)
            .map_err(|err| Error::Invalid(format!("no randomness from the OS: {err}")))?;
        let root = SigningKey::from_seed(&seed);
        let phrase = crate::recovery::phrase_for(&root);
        let device = DeviceKeys::generate()?;
        let name = device_name(&options.device_name)?;
        let log = IdentityLog::genesis(&root, &device, &name, Clock::system().now())?;
        let client = Self::create(
            home,
            passphrase,
            options,
            Founding::with_root(root, device, log, Layouts::NEW),
        )?;
        Ok((client, phrase))
    }

    /// Restores an identity from its recovery phrase: finds the identity log
    /// on the relay at `relay_url`, enrolls a new device for this home with
    /// the root key, and publishes the enrollment.
    pub async fn recover(
        home: Home,
        passphrase: &Passphrase,
        options: &InitOptions,
        phrase: &str,
        relay_url: &str,
    ) -> Result<Self> {
        if home.exists() {
            return Err(Error::HomeExists {
                path: home.path().to_path_buf(),
            });
        }
        check_transport(relay_url, options.transport)?;
        let root = crate::recovery::root_from_phrase(phrase)?;
        let name = device_name(&options.device_name)?;
        let http = http_client()?;
        // The client does not exist yet: recovering reads the system clock
        // (`set_clock` gives the recovered client another).
        let clock = &Clock::system();
        let (entry, _) = relays::pin(&http, clock, relay_url, None, false).await?;
        let mut relays = RelaySet::default();
        relays.upsert(entry);
        let (mut log, layouts) = mailbox::find_log_with_root(&http, clock, &relays, &root).await?;
        let device = DeviceKeys::generate()?;
        let generation = log
            .state()
            .vault()
            .map(|v| v.generation)
            .ok_or_else(|| Error::IdentityNotFound("the identity has no vault key".into()))?;
        let vault = VaultKey::derive(&root, generation);
        let certificate = crate::identity::certify(&root, &device, &name, clock.now())?;
        log.append(
            &root,
            cairn_proto::LogAction::AddDevice {
                certificate,
                vault_key: Some(cairn_proto::WrappedKey {
                    generation,
                    secret: vault.wrap_to(&device.x25519.public())?,
                }),
            },
        )?;
        let mut client = Self::create(
            home,
            passphrase,
            options,
            Founding::with_root(root, device, log, layouts),
        )?;
        client.relays = relays;
        client.relays.save(&client.home)?;
        client.publish_identity().await?;
        Ok(client)
    }

    fn create(
        home: Home,
        passphrase: &Passphrase,
        options: &InitOptions,
        founding: Founding,
    ) -> Result<Self> {
        let Founding {
            root_key,
            root,
            device,
            log,
            layouts,
        } = founding;
        if home.exists() {
            return Err(Error::HomeExists {
                path: home.path().to_path_buf(),
            });
        }
        home.create_dirs()?;
        let config = Config {
            version: HOME_VERSION,
            root: root_key,
            device_name: options.device_name.clone(),
            replicas: DEFAULT_REPLICAS,
            layouts,
        };
        let client = Self {
            home,
            config,
            device,
            root,
            log,
            relays: RelaySet::default(),
            http: http_client()?,
            cost: options.cost,
            transport: options.transport,
            clock: Clock::system(),
        };
        client.save_device_key(passphrase)?;
        client.save_root_key(passphrase)?;
        client.log.save(&client.home)?;
        client.relays.save(&client.home)?;
        // The config goes last: its presence is what marks a complete home.
        client.save_config()?;
        Ok(client)
    }

    /// Opens the identity in `home`, unlocking its keys with `passphrase`.
    pub fn open(home: Home, passphrase: &Passphrase) -> Result<Self> {
        home.require()?;
        let config_path = home.config();
        let config: Config =
            serde_json::from_slice(&read_required(&home, &config_path)?).map_err(|err| {
                Error::Damaged {
                    path: config_path,
                    reason: err.to_string(),
                }
            })?;
        let device = load_device_key(&home, passphrase)?;
        let root = match home.root_key().exists() {
            true => Some(load_root_file(&home.root_key(), passphrase)?),
            false => None,
        };
        let log = IdentityLog::load(&home, &config.root)?;
        let mut config = config;
        let upgraded = config.version < HOME_VERSION;
        if upgraded {
            // A home from before the per-relay layout: every generation it
            // knows uses the shared one.
            config.version = HOME_VERSION;
            config.layouts.shared_through = log.state().vault().map_or(0, |v| v.generation);
        }
        let relays = RelaySet::load(&home)?;
        let http = http_client()?;
        let client = Self {
            home,
            config,
            device,
            root,
            log,
            relays,
            http,
            cost: KdfCost::DEFAULT,
            transport: Transport::Secure,
            clock: Clock::system(),
        };
        if upgraded {
            client.save_config()?;
        }
        Ok(client)
    }

    /// Sets the key-file cost used when this client rewrites key files.
    pub fn set_kdf_cost(&mut self, cost: KdfCost) {
        self.cost = cost;
    }

    /// Sets whether plain http may reach relays off this machine, for
    /// relays added and transfer redirects followed from now on.
    pub fn set_transport(&mut self, transport: Transport) {
        self.transport = transport;
    }

    /// Whether plain http may reach relays off this machine.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Makes this client read the time from `clock` from now on: token
    /// expiry, info documents' age, the relay record (how long a relay
    /// has gone unanswered, which repair waits on), when copies were
    /// stored and chunks held, and the clocks of its operations. Tests and
    /// simulations give it a manual clock shared with their relays, so
    /// days pass without waiting. A client starts with the system clock,
    /// whether opened, created, recovered or joined (the last two talk to
    /// relays on the system clock before it exists).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The clock this client reads the time from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Now, in Unix seconds, by this client's clock.
    pub(super) fn now(&self) -> u64 {
        self.clock.now().0
    }

    /// A client for the relay at `url` with key `key`, over this client's
    /// HTTP connections and reading its clock (transfer redirects are
    /// followed only to listed peers: see [`Client::contained`]).
    pub(super) fn relay_client(&self, url: &str, key: VerifyingKey) -> RelayClient {
        RelayClient::new(self.http.clone(), url, key).with_clock(self.clock.clone())
    }

    /// `relay`, following transfer redirects only into the relay set or the
    /// redirecting relay's signed peer list, over what the transport
    /// allows.
    pub(super) fn contained(&self, relay: RelayClient) -> RelayClient {
        relay.with_redirects(RedirectPolicy::new(&self.relays, self.transport))
    }

    /// The relay set's clients, for blob requests (which may be
    /// redirected): see [`Client::contained`].
    pub(super) fn blob_clients(&self) -> Vec<RelayClient> {
        self.relay_clients()
            .into_iter()
            .map(|relay| self.contained(relay))
            .collect()
    }

    /// The home this client lives in.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The identity's root public key.
    pub fn root_key(&self) -> &VerifyingKey {
        &self.config.root
    }

    /// This device's public signing key.
    pub fn device_key(&self) -> VerifyingKey {
        self.device.signing.verifying_key()
    }

    /// The key this device signs its requests to `relay` with, and owns
    /// its copies there by. For tools that must act as this device outside
    /// the client's rules, such as tests of what a stolen device can do.
    pub fn upload_key(&self, relay: &VerifyingKey) -> cairn_proto::SigningKey {
        self.owner_key(relay)
            .unwrap_or_else(|_| self.device.upload_key(relay))
    }

    /// This device's signing key, as a thief holding the unlocked device
    /// has it. For tools that must act as this device outside the client's
    /// rules, such as tests of what a stolen device can do.
    #[doc(hidden)]
    pub fn device_signing_key(&self) -> &cairn_proto::SigningKey {
        &self.device.signing
    }

    /// The name (public key) of the identity's current mailbox on the
    /// relay with key `relay`, as this device knows it. For tools that
    /// must act as this device outside the client's rules, and for tests
    /// that look at what a relay holds.
    #[doc(hidden)]
    pub fn mailbox_name_on(&self, relay: &VerifyingKey) -> Result<VerifyingKey> {
        Ok(self.mailbox_on(&self.newest_vault()?, relay).public())
    }

    /// This device's own head for `role` in the current mailbox on the
    /// relay with key `relay`, signed as the client would. For tools that
    /// must act as this device outside the client's rules (a stolen
    /// device's tests).
    #[doc(hidden)]
    pub fn sign_head_on(
        &self,
        relay: &VerifyingKey,
        role: crate::relay::Role,
        seq: u64,
        target: cairn_proto::BlobId,
    ) -> Result<cairn_proto::SignedRecord> {
        self.own_head_on(&self.newest_vault()?, relay, role, seq, target)
    }

    /// `log` sealed as the per-relay layout stores a copy of it on the
    /// relay with key `relay`, with the newest vault key this device holds.
    /// For tools that must act as this device outside the client's rules.
    #[doc(hidden)]
    pub fn seal_log_copy(
        &self,
        log: &IdentityLog,
        relay: &VerifyingKey,
    ) -> Result<(cairn_proto::BlobId, Vec<u8>)> {
        log.seal_copy(&self.newest_vault()?.log_copy_key(relay))
    }

    /// The core (a sealed operation or table) inside `bytes`, a metadata
    /// copy the per-relay layout stores on the relay with key `relay`, and
    /// the copy that the link to the previous operation names; `None` when
    /// `bytes` is not such a copy. For tools that must act as this device
    /// outside the client's rules.
    #[doc(hidden)]
    pub fn open_metadata_copy(
        &self,
        relay: &VerifyingKey,
        bytes: &[u8],
    ) -> Option<(Vec<u8>, Option<cairn_proto::BlobId>)> {
        match crate::relay_copy::open(&self.copy_keys(relay), bytes) {
            crate::relay_copy::Opened::Copy { core, links } => Some((core, links.prev)),
            _ => None,
        }
    }

    /// `core` sealed as the per-relay layout's copy of it on the relay with
    /// key `relay`, linking to the copy `prev` there. For tools that must
    /// act as this device outside the client's rules.
    #[doc(hidden)]
    pub fn seal_metadata_copy(
        &self,
        relay: &VerifyingKey,
        core: &[u8],
        prev: Option<cairn_proto::BlobId>,
    ) -> Result<(cairn_proto::BlobId, Vec<u8>)> {
        let links = crate::relay_copy::Links {
            prev,
            ..Default::default()
        };
        self.seal_copy(relay, core, &links)
    }

    /// This device's name.
    pub fn device_name(&self) -> &str {
        &self.config.device_name
    }

    /// Whether this device holds the root key.
    pub fn holds_root(&self) -> bool {
        self.root.is_some()
    }

    /// The verified identity log as this device knows it.
    pub fn identity(&self) -> &IdentityLog {
        &self.log
    }

    /// The relay set.
    pub fn relays(&self) -> &RelaySet {
        &self.relays
    }

    /// How many relays each blob goes to.
    pub fn replicas(&self) -> usize {
        self.config.replicas
    }

    /// Changes how many relays each blob goes to (at least 1).
    pub fn set_replicas(&mut self, replicas: usize) -> Result<()> {
        if replicas == 0 {
            return Err(Error::Invalid("replicas must be at least 1".into()));
        }
        self.config.replicas = replicas;
        self.save_config()
    }

    /// The recovery phrase, when this device holds the root key.
    pub fn recovery_phrase(&self) -> Result<Zeroizing<String>> {
        let root = self.root.as_ref().ok_or(Error::NoRootKey)?;
        Ok(crate::recovery::phrase_for(root))
    }

    /// Every vault key generation this device can reach, oldest first.
    pub fn vault_keys(&self) -> Result<Vec<VaultKey>> {
        self.log.vault_keys(&self.device)
    }

    /// The vault key new data is sealed to.
    fn current_vault(&self) -> Result<VaultKey> {
        let current = self.log.state().vault().map(|v| v.generation);
        self.vault_keys()?
            .into_iter()
            .rev()
            .find(|k| Some(k.generation) == current)
            .ok_or_else(|| {
                Error::Invalid(
                    "this device holds no current vault key; it may have been revoked".into(),
                )
            })
    }

    /// Refuses to act for a device the log no longer lists as active.
    /// How each relay has behaved, as this device has seen it.
    pub fn scores(&self) -> crate::scores::Scores {
        crate::scores::Scores::load(&self.home.scores())
    }

    /// Updates the relay record; a failure to save it is logged, never
    /// fatal (scores are advice).
    pub(super) fn record_scores(&self, update: impl FnOnce(&mut crate::scores::Scores)) {
        let path = self.home.scores();
        let mut scores = crate::scores::Scores::load(&path);
        update(&mut scores);
        if let Err(err) = scores.save(&path) {
            tracing::warn!(error = %err, "saving relay scores failed");
        }
    }

    fn require_active(&self) -> Result<()> {
        if self.log.state().is_active(&self.device_key()) {
            Ok(())
        } else {
            Err(Error::Invalid(
                "this device has been revoked from the identity; it can no longer store or \
                 change anything"
                    .into(),
            ))
        }
    }

    /// Writes every vault key generation as an age identity file, which the
    /// standard `age -d -i FILE` reads. Returns the number of generations.
    pub fn export_vault(&self, path: &std::path::Path) -> Result<usize> {
        let keys = self.vault_keys()?;
        let mut text = Zeroizing::new(String::from(
            "# cairn vault keys: decrypt downloaded blobs with `age -d -i THIS_FILE BLOB`\n",
        ));
        for key in &keys {
            text.push_str(&format!(
                "# generation {}, recipient {}\n",
                key.generation,
                crate::keys::age_recipient_string(&key.secret.public())
            ));
            text.push_str(&key.secret.to_age_string());
            text.push('\n');
        }
        write_private(path, text.as_bytes())?;
        Ok(keys.len())
    }

    /// Writes the root key to `path`, sealed with `passphrase`, for keeping
    /// offline.
    pub fn export_root(&self, path: &std::path::Path, passphrase: &Passphrase) -> Result<()> {
        let root = self.root.as_ref().ok_or(Error::NoRootKey)?;
        write_root_file(path, root, passphrase, self.cost)
    }

    /// Removes the root key from this device. Enrolling and revoking devices
    /// then needs the exported key file or the recovery phrase.
    pub fn forget_root(&mut self) -> Result<()> {
        let path = self.home.root_key();
        if self.root.is_none() {
            return Err(Error::NoRootKey);
        }
        std::fs::remove_file(&path).map_err(crate::error::io_at(&path))?;
        self.root = None;
        Ok(())
    }

    /// Loads a root key from an exported file (or uses the recovery phrase
    /// via [`crate::recovery::root_from_phrase`]) for one command.
    pub fn use_root_file(&mut self, path: &std::path::Path, passphrase: &Passphrase) -> Result<()> {
        let root = load_root_file(path, passphrase)?;
        self.use_root(root)
    }

    /// Uses `root` for this session after checking it is this identity's.
    pub fn use_root(&mut self, root: SigningKey) -> Result<()> {
        if root.verifying_key() != self.config.root {
            return Err(Error::Invalid(
                "that root key belongs to another identity".into(),
            ));
        }
        self.root = Some(root);
        Ok(())
    }

    fn save_config(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.config)
            .map_err(|err| Error::Invalid(err.to_string()))?;
        write_private(&self.home.config(), &json)
    }

    fn save_device_key(&self, passphrase: &Passphrase) -> Result<()> {
        let file = DeviceFile {
            signing: self.device.signing.to_secret_text(),
            x25519: self.device.x25519.to_age_string().to_string(),
        };
        let json = Zeroizing::new(serde_json::to_vec(&file).unwrap_or_default());
        let sealed = keyfile::seal(&json, passphrase, self.cost)?;
        write_private(&self.home.device_key(), &sealed)
    }

    fn save_root_key(&self, passphrase: &Passphrase) -> Result<()> {
        match &self.root {
            Some(root) => write_root_file(&self.home.root_key(), root, passphrase, self.cost),
            None => Ok(()),
        }
    }

    fn save_log(&self) -> Result<()> {
        self.log.save(&self.home)
    }
}

fn device_name(name: &str) -> Result<DeviceName> {
    DeviceName::new(name).map_err(|_| {
        Error::Invalid(format!(
            "{name:?} is not a device name: use 1–64 characters, no control characters, no \
             leading or trailing spaces"
        ))
    })
}

fn load_device_key(home: &Home, passphrase: &Passphrase) -> Result<DeviceKeys> {
    let path = home.device_key();
    let plain = keyfile::open(&path, passphrase)?;
    let damaged = |reason: String| Error::Damaged {
        path: path.clone(),
        reason,
    };
    let file: DeviceFile = serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))?;
    let signing = Zeroizing::new(file.signing);
    let x25519 = Zeroizing::new(file.x25519);
    Ok(DeviceKeys {
        signing: SigningKey::from_secret_text(&signing).map_err(|e| damaged(e.to_string()))?,
        x25519: X25519Secret::from_age_string(&x25519).map_err(|e| damaged(e.to_string()))?,
    })
}

fn write_root_file(
    path: &std::path::Path,
    root: &SigningKey,
    passphrase: &Passphrase,
    cost: KdfCost,
) -> Result<()> {
    let file = RootFile {
        root: root.to_secret_text(),
    };
    let json = Zeroizing::new(serde_json::to_vec(&file).unwrap_or_default());
    let sealed = keyfile::seal(&json, passphrase, cost)?;
    write_private(path, &sealed)
}

fn load_root_file(path: &std::path::Path, passphrase: &Passphrase) -> Result<SigningKey> {
    let plain = keyfile::open(path, passphrase)?;
    let damaged = |reason: String| Error::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let file: RootFile = serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))?;
    let file = Zeroizing::new(file.root);
    SigningKey::from_secret_text(&file).map_err(|e| damaged(e.to_string()))
}
