//! Where an identity keeps its heads on each relay, and the keys that
//! write them and own its copies there (PROTOCOL.md §10.7).
//!
//! A vault generation uses one of two layouts:
//!
//! - **Shared** (protocol revisions 1 and 2): one mailbox key per
//!   generation, the same on every relay; heads signed by the devices' own
//!   keys; the identity log stored as plain entries; each copy owned by the
//!   (device, relay) upload key of the device that stored it. A relay
//!   learns the root key, the device keys and names, and how many devices
//!   there are; colluding relays see the same names.
//! - **Per relay** (revision 3): a mailbox key per relay; heads signed by
//!   each device's key *blinded* for that mailbox; the identity log sealed
//!   to the generation's vault key, separately for each relay; one owner key
//!   per identity, relay and generation. A relay learns none of the above,
//!   and no two relays share a name.
//!
//! An identity made by an earlier release keeps the shared layout until its
//! next vault-key rotation, which always moves to the per-relay layout.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, SignedRecord, SigningKey, Timestamp, VerifyingKey};

use crate::keys::{DeviceKeys, VaultKey};
use crate::relay::{Role, sign_owned};

/// How a vault generation arranges its mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Revisions 1 and 2: one mailbox on every relay.
    Shared,
    /// Revision 3: a mailbox per relay, blinded writers, a sealed log.
    PerRelay,
}

/// Which layout each of the identity's generations uses, as far as this
/// device knows (kept in `HOME/config.json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Layouts {
    /// The first generation in the per-relay layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) per_relay_from: Option<u32>,
    /// The newest generation in the shared layout (0: none).
    #[serde(default)]
    pub(crate) shared_through: u32,
}

impl Layouts {
    /// An identity that uses the per-relay layout from its first
    /// generation.
    pub(crate) const NEW: Self = Self {
        per_relay_from: Some(1),
        shared_through: 0,
    };

    /// The layout of `generation`, if known.
    pub(crate) fn of(&self, generation: u32) -> Option<Layout> {
        if self.per_relay_from.is_some_and(|first| generation >= first) {
            Some(Layout::PerRelay)
        } else if generation <= self.shared_through {
            Some(Layout::Shared)
        } else {
            None
        }
    }

    /// Records that `generation` uses `layout`.
    pub(crate) fn learn(&mut self, generation: u32, layout: Layout) {
        match layout {
            Layout::PerRelay => {
                self.per_relay_from = Some(
                    self.per_relay_from
                        .map_or(generation, |f| f.min(generation)),
                );
            }
            Layout::Shared => {
                self.shared_through = self.shared_through.max(generation);
            }
        }
    }
}

/// The identity's mailbox on one relay in one vault generation.
#[derive(Clone, Debug)]
pub(crate) struct Mailbox {
    vault: VaultKey,
    relay: VerifyingKey,
    layout: Layout,
    key: SigningKey,
}

impl Mailbox {
    /// The mailbox of `vault`'s generation on the relay with key `relay`.
    pub(crate) fn new(vault: &VaultKey, relay: &VerifyingKey, layout: Layout) -> Self {
        let key = match layout {
            Layout::Shared => vault.mailbox(),
            Layout::PerRelay => vault.mailbox_at(relay),
        };
        Self {
            vault: vault.clone(),
            relay: *relay,
            layout,
            key,
        }
    }

    /// The mailbox's name: its public key.
    pub(crate) fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// The key `device`'s heads in this mailbox are signed with.
    pub(crate) fn writer_of(&self, device: &VerifyingKey) -> VerifyingKey {
        match self.layout {
            Layout::Shared => *device,
            Layout::PerRelay => device.blind(&self.vault.writer_factor(&self.public(), device)),
        }
    }

    /// Maps each writer key of `devices` here back to its device.
    pub(crate) fn writers(
        &self,
        devices: impl IntoIterator<Item = VerifyingKey>,
    ) -> HashMap<VerifyingKey, VerifyingKey> {
        devices
            .into_iter()
            .map(|device| (self.writer_of(&device), device))
            .collect()
    }

    /// `device`'s own head for `role` here, signed with its writer key and
    /// stamped `now`.
    pub(crate) fn sign_head(
        &self,
        device: &DeviceKeys,
        role: Role,
        seq: u64,
        target: BlobId,
        now: Timestamp,
    ) -> Result<SignedRecord, String> {
        let me = device.signing.verifying_key();
        match self.layout {
            Layout::Shared => sign_owned(&self.key, &me, &device.signing, role, seq, target, now),
            Layout::PerRelay => {
                let factor = self.vault.writer_factor(&self.public(), &me);
                let writer = device.signing.blind(&factor);
                sign_owned(&self.key, &me, &writer, role, seq, target, now)
            }
        }
    }

    /// The key that owns, on this relay, what `device` stores there in
    /// this generation.
    pub(crate) fn owner(&self, device: &DeviceKeys) -> SigningKey {
        match self.layout {
            Layout::Shared => device.upload_key(&self.relay),
            Layout::PerRelay => self.vault.owner_at(&self.relay),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::relay::Head;

    fn relay(byte: u8) -> VerifyingKey {
        SigningKey::from_seed(&[byte; 32]).verifying_key()
    }

    #[test]
    fn per_relay_mailboxes_share_no_name_and_hide_the_device() {
        let root = SigningKey::from_seed(&[9; 32]);
        let vault = VaultKey::derive(&root, 1);
        let device = DeviceKeys::generate().unwrap();
        let me = device.signing.verifying_key();
        let (a, b) = (
            Mailbox::new(&vault, &relay(1), Layout::PerRelay),
            Mailbox::new(&vault, &relay(2), Layout::PerRelay),
        );
        assert_ne!(a.public(), b.public());
        assert_ne!(a.writer_of(&me), b.writer_of(&me));
        assert_ne!(a.writer_of(&me), me);
        let owner = |m: &Mailbox| m.owner(&device).verifying_key();
        assert_ne!(owner(&a), owner(&b));
        // Every device of the identity owns under the same key.
        let other = DeviceKeys::generate().unwrap();
        assert_eq!(owner(&a), a.owner(&other).verifying_key());

        let record = a
            .sign_head(&device, Role::Ops(me), 4, BlobId::of(b"op"), Timestamp(1))
            .unwrap();
        let head = Head::from_record(record).unwrap();
        assert_eq!(head.signer, Some(a.writer_of(&me)));
        let writers = a.writers([me, other.signing.verifying_key()]);
        let head = head.resolve(|signer| writers.get(signer).copied());
        assert_eq!(head.writer, Some(me));
        assert_eq!(head.role(), Role::Ops(me));
    }

    #[test]
    fn the_shared_layout_is_the_previous_one() {
        let vault = VaultKey::derive(&SigningKey::from_seed(&[9; 32]), 2);
        let device = DeviceKeys::generate().unwrap();
        let me = device.signing.verifying_key();
        let shared = Mailbox::new(&vault, &relay(1), Layout::Shared);
        assert_eq!(shared.public(), vault.mailbox().verifying_key());
        assert_eq!(shared.writer_of(&me), me);
        assert_eq!(
            shared.owner(&device).verifying_key(),
            device.upload_key(&relay(1)).verifying_key()
        );
        let mut layouts = Layouts {
            per_relay_from: None,
            shared_through: 2,
        };
        assert_eq!(layouts.of(2), Some(Layout::Shared));
        assert_eq!(layouts.of(3), None);
        layouts.learn(3, Layout::PerRelay);
        assert_eq!(layouts.of(4), Some(Layout::PerRelay));
        assert_eq!(Layouts::NEW.of(1), Some(Layout::PerRelay));
    }
}
