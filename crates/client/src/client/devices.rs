//! Enrolling and revoking devices, entirely between the user's devices: the
//! relays carry the pairing messages and the identity log, and decide
//! nothing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use serde::Serialize;

use cairn_api::Clock;
use cairn_proto::{
    BlobId, DeviceWrappedKey, LogAction, Revocation, RevocationReason, SignedRecord, SigningKey,
    VerifyingKey, WrappedKey,
};

use super::mailbox::{clients, fetch_log, fetch_small, sign_head};
use super::{Client, InitOptions};
use crate::error::{Error, RelayError, Result};
use crate::home::Home;
use crate::identity::IdentityLog;
use crate::keyfile::Passphrase;
use crate::keys::{DeviceKeys, VaultKey, wrap_secret};
use crate::layout::{Layout, Layouts};
use crate::pairing::{Approver, Joiner, MAX_MESSAGE, PairingCode, Step, WelcomeBody, slot};
use crate::relay::{RelayClient, RelayEntry, RelaySet, http_client};

/// How often a waiting side looks for the other's message.
const POLL_EVERY: Duration = Duration::from_millis(300);

/// A device enrolled by `approve`.
#[derive(Clone, Debug, Serialize)]
pub struct Enrolled {
    /// Its name.
    pub name: String,
    /// Its signing key.
    #[serde(with = "crate::text_serde")]
    pub device: VerifyingKey,
    /// Relays that did not take the updated identity log.
    pub warnings: Vec<String>,
}

/// What `rotate_vault_key` did.
#[derive(Clone, Debug, Serialize)]
pub struct Rotated {
    /// The vault key generation new data is now sealed to.
    pub generation: u32,
    /// Relays that did not take the update.
    pub warnings: Vec<String>,
}

/// A device removed by `revoke`.
#[derive(Clone, Debug, Serialize)]
pub struct Revoked {
    /// Its name.
    pub name: String,
    /// Its signing key.
    #[serde(with = "crate::text_serde")]
    pub device: VerifyingKey,
    /// The vault key generation new data is now sealed to.
    pub generation: u32,
    /// Relays that did not take the update.
    pub warnings: Vec<String>,
}

/// The time in milliseconds that orders pairing messages: always the
/// system clock's, whatever clock the client reads. The two devices
/// compare each other's (a message counts when posted after the reader
/// started waiting), and a joining device has no client, so no clock of
/// its own, yet: a device on a manual clock would otherwise miss messages
/// from one on the system clock.
fn millis() -> u64 {
    Clock::system().now_millis()
}

/// Posts one pairing message on every relay given: a blob, and a head
/// whose sequence number is the current time in milliseconds (so a new
/// attempt always supersedes an old one in the same mailbox), stamped
/// with `clock`'s time.
async fn post(
    relays: &[RelayClient],
    clock: &Clock,
    mailbox: &SigningKey,
    step: Step,
    message: Vec<u8>,
    uploader: &SigningKey,
) -> Result<()> {
    let id = BlobId::of(&message);
    let head = sign_head(mailbox, slot(step), millis(), id, clock.now())?;
    let message = Bytes::from(message);
    let results = join_all(relays.iter().map(|relay| {
        let message = message.clone();
        let head = head.clone();
        async move {
            relay.put_bytes(&id, message, uploader, 0).await?;
            relay.put_head(&head).await
        }
    }))
    .await;
    let mut failures = Vec::new();
    for (relay, result) in relays.iter().zip(results) {
        match result {
            Ok(_) => return Ok(()),
            Err(err) => failures.push(format!("{}: {err}", relay.url())),
        }
    }
    Err(Error::Invalid(format!(
        "pairing: no relay took the message: {}",
        failures.join("; ")
    )))
}

/// Waits until any relay holds message `step` posted after `since` (ms),
/// and returns it with that relay.
async fn wait_for(
    relays: &[RelayClient],
    mailbox: &VerifyingKey,
    step: Step,
    since: u64,
    deadline: Instant,
) -> Result<(Vec<u8>, RelayClient)> {
    let slot = slot(step);
    loop {
        let heads = join_all(relays.iter().map(|relay| relay.get_head(mailbox, &slot))).await;
        for (relay, head) in relays
            .iter()
            .zip(heads)
            .filter_map(|(relay, h)| Some((relay, h.ok().flatten()?)))
        {
            if head.seq >= since
                && let Ok(bytes) =
                    fetch_small(std::slice::from_ref(relay), &head.target, MAX_MESSAGE).await
            {
                return Ok((bytes, relay.clone()));
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "pairing timed out waiting for the other device ({}); run both commands again",
                match step {
                    Step::Hello => "has `cairn device join` been started, with the same relays?",
                    Step::Reply =>
                        "has `cairn device approve CODE` been run on a device with the root key?",
                    Step::Confirm | Step::Welcome => "it stopped answering",
                }
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The welcome is authenticated by the pairing code; the key the relay
/// joined through showed when first asked is not. Where the welcome names
/// that relay's URL with another key, someone sits between this device and
/// the relay (or the relay changed its key): refused, naming both.
fn check_first_use_pin(welcome: &[RelayEntry], first_use: &RelayEntry) -> Result<()> {
    match welcome
        .iter()
        .find(|r| r.url == first_use.url && r.key != first_use.key)
    {
        Some(named) => Err(Error::KeyChanged {
            url: first_use.url.clone(),
            pinned: named.key,
            presented: first_use.key,
        }),
        None => Ok(()),
    }
}

fn ephemeral_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|err| Error::Invalid(format!("no randomness from the OS: {err}")))?;
    Ok(SigningKey::from_seed(&seed))
}

impl Client {
    /// Joins an existing identity as a new device. Posts a pairing request
    /// on the relay at `relay_url`, hands the code to `show_code` (the user
    /// types it on a device holding the root key: `cairn device approve`),
    /// then waits up to `wait` for the approval and creates `home`.
    pub async fn join(
        home: Home,
        passphrase: &Passphrase,
        options: &InitOptions,
        relay_url: &str,
        wait: Duration,
        show_code: impl FnOnce(&PairingCode),
    ) -> Result<Self> {
        if home.exists() {
            return Err(Error::HomeExists {
                path: home.path().to_path_buf(),
            });
        }
        let name = super::device_name(&options.device_name)?;
        crate::relay::check_transport(relay_url, options.transport)?;
        let http = http_client()?;
        // The client does not exist yet: joining reads the system clock
        // (`set_clock` gives the joined client another).
        let clock = &Clock::system();
        let (entry, _) = super::relays::pin(&http, clock, relay_url, None, false).await?;
        let relay =
            vec![RelayClient::new(http.clone(), &entry.url, entry.key).with_clock(clock.clone())];

        let device = DeviceKeys::generate()?;
        let code = PairingCode::generate()?;
        let mailbox = code.mailbox();
        let uploader = ephemeral_key()?;
        let deadline = Instant::now() + wait;
        let (joiner, hello) = Joiner::start(code, &device, name.as_str());
        let since = millis();
        post(&relay, clock, &mailbox, Step::Hello, hello, &uploader).await?;
        show_code(joiner.code());

        let (reply, _) = wait_for(
            &relay,
            &mailbox.verifying_key(),
            Step::Reply,
            since,
            deadline,
        )
        .await?;
        let (confirm, welcome_key) = match joiner.on_reply(&reply) {
            Ok(next) => next,
            Err(err) => {
                // Tell the approver, so it does not wait for its timeout.
                let abort = crate::pairing::abort_message();
                let _ = post(&relay, clock, &mailbox, Step::Confirm, abort, &uploader).await;
                return Err(err);
            }
        };
        post(&relay, clock, &mailbox, Step::Confirm, confirm, &uploader).await?;
        let (welcome, _) = wait_for(
            &relay,
            &mailbox.verifying_key(),
            Step::Welcome,
            since,
            deadline,
        )
        .await?;
        let body: WelcomeBody = welcome_key.open(&welcome)?;
        check_first_use_pin(&body.relays, &entry)?;

        let mut set = RelaySet::default();
        for relay in body.relays {
            set.upsert(relay);
        }
        // The relay joined through may be one of the set under another URL
        // (same key): one relay, one entry, or it would count twice.
        if !set.entries().iter().any(|r| r.key == entry.key) {
            set.upsert(entry);
        }
        let (log, layouts) = if body.log.is_empty() {
            // An approver of an earlier release: the relays hold the log in
            // plain entries, in the shared layout.
            let log = fetch_log(
                &clients(&http, clock, &set),
                &body.root,
                None,
                body.head,
                &[],
            )
            .await
            .map_err(Error::from)?;
            let layouts = Layouts {
                per_relay_from: None,
                shared_through: log.state().vault().map_or(0, |v| v.generation),
            };
            (log, layouts)
        } else {
            let entries = body
                .log
                .iter()
                .map(|text| cairn_proto::decode_base64url(text, cairn_proto::MAX_ENVELOPE_LEN))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| {
                    Error::Invalid("pairing: the welcome's identity log is not base64url".into())
                })?;
            let log = IdentityLog::verify(&body.root, entries)?;
            let layouts = Layouts {
                per_relay_from: body.per_relay_from,
                shared_through: match body.per_relay_from {
                    Some(first) => first.saturating_sub(1),
                    None => log.state().vault().map_or(0, |v| v.generation),
                },
            };
            (log, layouts)
        };
        let me = device.signing.verifying_key();
        match log.state().devices().get(&me) {
            Some(enrolled) if enrolled.x25519 == device.x25519.public() => {}
            _ => {
                return Err(Error::Invalid(
                    "pairing: the identity log does not enroll this device".into(),
                ));
            }
        }
        log.vault_keys(&device)?;
        let mut client = Self::create(
            home,
            passphrase,
            options,
            super::Founding {
                root_key: body.root,
                root: None,
                device,
                log,
                layouts,
            },
        )?;
        client.relays = set;
        client.relays.save(&client.home)?;
        Ok(client)
    }

    /// Approves a device waiting in `cairn device join` with `code`: checks
    /// it knows the code, enrolls it with the root key, gives it every vault
    /// key, and publishes the identity log. Waits up to `wait` for it.
    pub async fn approve(&mut self, code: &PairingCode, wait: Duration) -> Result<Enrolled> {
        let root = self.root.clone().ok_or(Error::NoRootKey)?;
        if self.relays.entries().is_empty() {
            return Err(Error::NoRelays);
        }
        self.refresh_identity().await?;
        self.require_active()?;
        let relays = self.relay_clients();
        let mailbox = code.mailbox();
        let deadline = Instant::now() + wait;
        // A join request is posted before its code is shown, so anything
        // older than the wait window is a stale attempt.
        let since = millis().saturating_sub(u64::try_from(wait.as_millis()).unwrap_or(0));
        let (hello, met) = wait_for(
            &relays,
            &mailbox.verifying_key(),
            Step::Hello,
            since,
            deadline,
        )
        .await?;
        // The rest of the pairing happens on the relay the joining device
        // used alone: the same messages on several relays would let them
        // tell that they serve one identity.
        let relays = [met];
        let (approver, reply) = Approver::on_hello(code, &hello)?;
        let uploader = self.device.upload_key(&mailbox.verifying_key());
        let replied = millis();
        post(
            &relays,
            &self.clock,
            &mailbox,
            Step::Reply,
            reply,
            &uploader,
        )
        .await?;
        let (confirm, _) = wait_for(
            &relays,
            &mailbox.verifying_key(),
            Step::Confirm,
            replied,
            deadline,
        )
        .await?;
        let joiner = approver.on_confirm(&confirm)?;

        let vault = self.current_vault()?;
        let name = super::device_name(&joiner.name)?;
        let certificate = SignedRecord::sign(
            &cairn_proto::DeviceCertificate {
                device: joiner.device,
                x25519: joiner.x25519,
                name: name.clone(),
                created: self.clock.now(),
            },
            &root,
        )
        .map_err(|err| Error::Invalid(format!("certificate: {err}")))?;
        let mut log = self.log.clone();
        log.append(
            &root,
            LogAction::AddDevice {
                certificate,
                vault_key: Some(WrappedKey {
                    generation: vault.generation,
                    secret: vault.wrap_to(&joiner.x25519)?,
                }),
            },
        )?;
        self.log = log;
        self.save_log()?;
        let warnings = self
            .publish_identity()
            .await?
            .into_iter()
            .map(|(url, err)| format!("{url}: {err}"))
            .collect();
        let mut state = self.load_sync()?;
        let mut warnings: Vec<String> = warnings;
        warnings.extend(self.announce_identity(&mut state).await);
        self.store_sync(&state)?;
        let welcome = approver.welcome(&WelcomeBody {
            root: root.verifying_key(),
            head: self.log.state().head(),
            relays: self.relays.entries().to_vec(),
            log: self
                .log
                .entries()
                .iter()
                .map(|entry| cairn_proto::encode_base64url(entry))
                .collect(),
            per_relay_from: self.layouts().per_relay_from,
        })?;
        post(
            &relays,
            &self.clock,
            &mailbox,
            Step::Welcome,
            welcome,
            &uploader,
        )
        .await?;
        Ok(Enrolled {
            name: joiner.name,
            device: joiner.device,
            warnings,
        })
    }

    /// Revokes the device named `which` (its name or key), rotates the vault
    /// key so new data is sealed where it cannot read, moves the mailbox,
    /// and publishes everything.
    pub async fn revoke(&mut self, which: &str) -> Result<Revoked> {
        let root = self.root.clone().ok_or(Error::NoRootKey)?;
        if self.relays.entries().is_empty() {
            return Err(Error::NoRelays);
        }
        let state = self.synced().await?;
        self.require_active()?;
        let target = self.find_device(which)?;
        if target.key == self.device_key() {
            return Err(Error::Invalid(
                "a device cannot revoke itself; revoke it from another device".into(),
            ));
        }
        let revocation = SignedRecord::sign(
            &Revocation {
                device: target.key,
                revoked_at: self.clock.now(),
                reason: RevocationReason::Unspecified,
            },
            &root,
        )
        .map_err(|err| Error::Invalid(format!("revocation: {err}")))?;
        let rotated = self
            .rotate(&root, state, Some(LogAction::RevokeDevice { revocation }))
            .await?;
        Ok(Revoked {
            name: target.name.as_str().to_owned(),
            device: target.key,
            generation: rotated.generation,
            warnings: rotated.warnings,
        })
    }

    /// Rotates the vault key without revoking anyone: new data is sealed to
    /// the next generation, and the mailbox moves, into the per-relay
    /// layout (an identity of an earlier release leaves the shared one this
    /// way).
    pub async fn rotate_vault_key(&mut self) -> Result<Rotated> {
        let root = self.root.clone().ok_or(Error::NoRootKey)?;
        if self.relays.entries().is_empty() {
            return Err(Error::NoRelays);
        }
        let state = self.synced().await?;
        self.require_active()?;
        self.rotate(&root, state, None).await
    }

    /// Appends `first` (a revocation) if any and a vault-key rotation to
    /// the log, and publishes them: the announcement in the old mailbox,
    /// the new mailbox with a snapshot, and the copies claimed by the new
    /// owner.
    async fn rotate(
        &mut self,
        root: &SigningKey,
        mut state: super::sync::SyncState,
        first: Option<LogAction>,
    ) -> Result<Rotated> {
        let old_vault = self.current_vault()?;
        // The rotation is announced in the old mailbox through this device's
        // own `id` slot. Make sure that slot exists now, while nothing is
        // committed: a mailbox filled to its slot limit (a stolen device can
        // do that) takes updates of existing slots but no new ones.
        let failures = self.publish_identity().await?;
        if failures.len() == self.relays.entries().len() {
            let what = if first.is_some() {
                "revoked"
            } else {
                "rotated"
            };
            return Err(Error::Invalid(format!(
                "no relay took this device's identity head in the current mailbox, so the \
                 rotation could not be announced there; nothing was {what} (see which relays \
                 fail with `cairn relay check`, then try again): {}",
                failures
                    .iter()
                    .map(|(url, err)| format!("{url}: {err}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }

        let mut log = self.log.clone();
        if let Some(action) = first {
            log.append(root, action)?;
        }
        let generation = old_vault.generation + 1;
        let vault = VaultKey::derive(root, generation);
        let mut wrapped = Vec::new();
        for device in log.state().devices().values() {
            wrapped.push(DeviceWrappedKey {
                device: device.key,
                secret: vault.wrap_to(&device.x25519)?,
            });
        }
        wrapped.sort_by_key(|w| w.device);
        log.append(
            root,
            LogAction::RotateVaultKey {
                generation,
                recipient: vault.secret.public(),
                wrapped,
                previous: Some(wrap_secret(&old_vault.secret, &vault.secret.public())?),
            },
        )?;
        self.log = log;
        self.save_log()?;
        // Every rotation moves the identity to the per-relay layout (an
        // identity of an earlier release moves here).
        self.learn_layout(generation, Layout::PerRelay)?;

        let mut warnings: Vec<String> = self
            .publish_identity()
            .await?
            .into_iter()
            .map(|(url, err)| format!("{url}: {err}"))
            .collect();
        // The new mailbox starts with a snapshot of everything merged so far
        // (a revoked device's earlier changes included) and this device's
        // head; other devices move there when they see the rotation.
        let relays = self.relay_clients();
        if let Err(err) = self.write_snapshot(&mut state, &relays).await {
            warnings.push(format!("snapshot in the new mailbox: {err}"));
        }
        warnings.extend(self.announce_identity(&mut state).await);
        // A revoked device knows the old owner key: the copies move to the
        // new one now, not at the next sync.
        self.move_claims(&mut state).await;
        self.store_sync(&state)?;
        warnings.extend(self.announce_in_old_mailbox(&old_vault).await?);
        Ok(Rotated {
            generation,
            warnings,
        })
    }

    /// Records the current relay set in the identity log (signed by this
    /// device), so other devices, and new ones, learn it from the log.
    pub async fn set_preferred_relays(&mut self) -> Result<()> {
        self.refresh_identity().await?;
        let mut relays = Vec::new();
        for entry in self
            .relays
            .entries()
            .iter()
            .take(cairn_proto::MAX_PREFERRED_RELAYS)
        {
            relays.push(cairn_proto::RelayRef {
                url: cairn_proto::RelayUrl::new(entry.url.as_str())
                    .map_err(|err| Error::Invalid(format!("{}: {err}", entry.url)))?,
                key: entry.key,
            });
        }
        let mut log = self.log.clone();
        log.append(
            &self.device.signing,
            LogAction::SetPreferredRelays { relays },
        )?;
        self.log = log;
        self.save_log()?;
        self.publish_identity().await?;
        let mut state = self.load_sync()?;
        self.announce_identity(&mut state).await;
        self.store_sync(&state)
    }

    fn find_device(&self, which: &str) -> Result<cairn_proto::Device> {
        let devices = self.log.state().devices();
        if let Ok(key) = which.parse::<VerifyingKey>()
            && let Some(device) = devices.get(&key)
        {
            return Ok(device.clone());
        }
        let named: Vec<_> = devices
            .values()
            .filter(|d| d.name.as_str() == which)
            .collect();
        match named.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::Invalid(format!(
                "no active device is named {which:?} (see `cairn device list`)"
            ))),
            _ => Err(Error::Invalid(format!(
                "several devices are named {which:?}; give its key instead (see `cairn device list`)"
            ))),
        }
    }

    /// Writes this device's own `id` head into the old mailbox, pointing at
    /// the log that announces the rotation: devices still reading it find
    /// their way. The slot is this device's alone, so no other device (the
    /// revoked one included) can move or freeze it. Fails unless at least
    /// one relay took it, or when a relay holds a newer head in this
    /// device's own slot (its key signed elsewhere).
    async fn announce_in_old_mailbox(&self, old: &VaultKey) -> Result<Vec<String>> {
        let relays = self.relay_clients();
        let results = join_all(relays.iter().map(|relay| self.publish_log_to(relay, old))).await;
        let mut warnings = Vec::new();
        let mut stored = 0;
        for (relay, result) in relays.iter().zip(results) {
            match result {
                Ok(_) => stored += 1,
                Err(error @ RelayError::OwnSlotAhead { .. }) => {
                    return Err(Error::Relay {
                        url: relay.url().to_owned(),
                        error,
                    });
                }
                Err(err) => {
                    warnings.push(format!("{}: announcing the rotation: {err}", relay.url()))
                }
            }
        }
        if stored == 0 {
            return Err(Error::Invalid(format!(
                "no relay took the rotation's announcement in the old mailbox, so the other \
                 devices cannot learn of the revocation yet: {}; run `cairn device revoke` \
                 again once a relay is reachable",
                warnings.join("; ")
            )));
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, seed: u8) -> RelayEntry {
        RelayEntry {
            url: url.into(),
            key: SigningKey::from_seed(&[seed; 32]).verifying_key(),
            added_at: 0,
        }
    }

    /// The key an authenticated welcome names wins over the one a relay
    /// showed on first use; another URL, or the same key, is no conflict.
    #[test]
    fn a_welcome_pin_overrides_a_first_use_pin() {
        let welcome = [entry("https://a.example", 1), entry("https://b.example", 2)];
        let err = check_first_use_pin(&welcome, &entry("https://a.example", 9)).unwrap_err();
        assert!(
            matches!(&err, Error::KeyChanged { pinned, .. } if *pinned == welcome[0].key),
            "{err}"
        );
        assert!(check_first_use_pin(&welcome, &entry("https://a.example", 1)).is_ok());
        assert!(check_first_use_pin(&welcome, &entry("https://c.example", 9)).is_ok());
    }
}
