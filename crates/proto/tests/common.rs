//! Fixed sample records (for vectors) and proptest strategies (for
//! properties), shared by the test modules.

use cairn_proto::{
    AuthToken, BlobId, DeviceCertificate, DeviceName, DeviceWrappedKey, FairShareLimits,
    HeadRecord, IdentityLogEntry, LogAction, Method, Nonce, RelayInfo, RelayRef, RelayUrl,
    RequestPath, Revocation, RevocationReason, SignedRecord, SigningKey, Slot, SoftwareVersion,
    Timestamp, TokenTarget, TransferReceipt, VerifyingKey, WrappedKey, WrappedSecret,
    X25519PublicKey,
};
use cairn_testkit::{key, seed};
use proptest::prelude::*;

pub(crate) fn vk(label: &str) -> VerifyingKey {
    key(label).verifying_key()
}

pub(crate) fn x25519(label: &str) -> X25519PublicKey {
    X25519PublicKey::from_bytes(seed(label))
}

pub(crate) fn relay_ref(label: &str, url: &str) -> RelayRef {
    RelayRef {
        url: RelayUrl::new(url).unwrap(),
        key: vk(label),
    }
}

// ---- fixed samples ------------------------------------------------------

pub(crate) fn sample_certificate() -> DeviceCertificate {
    DeviceCertificate {
        device: vk("laptop"),
        x25519: x25519("laptop x25519"),
        name: DeviceName::new("Anna's laptop").unwrap(),
        created: Timestamp(1_790_000_000),
    }
}

pub(crate) fn sample_revocation() -> Revocation {
    Revocation {
        device: vk("phone"),
        revoked_at: Timestamp(1_790_086_400),
        reason: RevocationReason::Compromised,
    }
}

pub(crate) fn sample_log_entry() -> IdentityLogEntry {
    let certificate = SignedRecord::sign(&sample_certificate(), &key("root")).unwrap();
    IdentityLogEntry {
        seq: 3,
        prev: Some(BlobId::of(b"entry 2")),
        action: LogAction::AddDevice {
            certificate,
            vault_key: Some(WrappedKey {
                generation: 2,
                secret: WrappedSecret::new(b"age ciphertext".to_vec()).unwrap(),
            }),
        },
    }
}

pub(crate) fn sample_rotation_entry() -> IdentityLogEntry {
    let mut wrapped = vec![
        DeviceWrappedKey {
            device: vk("laptop"),
            secret: WrappedSecret::new(b"to laptop".to_vec()).unwrap(),
        },
        DeviceWrappedKey {
            device: vk("server"),
            secret: WrappedSecret::new(b"to server".to_vec()).unwrap(),
        },
    ];
    wrapped.sort_by_key(|w| w.device);
    IdentityLogEntry {
        seq: 5,
        prev: Some(BlobId::of(b"entry 4")),
        action: LogAction::RotateVaultKey {
            generation: 3,
            recipient: x25519("vault 3"),
            wrapped,
            previous: Some(WrappedSecret::new(b"generation 2 sealed to 3".to_vec()).unwrap()),
        },
    }
}

pub(crate) fn sample_head() -> HeadRecord {
    HeadRecord {
        mailbox: vk("mailbox"),
        slot: Slot::new("laptop").unwrap(),
        seq: 42,
        target: BlobId::of(b"newest operation"),
        timestamp: Timestamp(1_790_000_123),
    }
}

/// The laptop's own `id` head in the mailbox, granted by the mailbox key.
pub(crate) fn sample_owned_head() -> cairn_proto::OwnedHead {
    let mailbox = key("mailbox");
    cairn_proto::OwnedHead {
        mailbox: mailbox.verifying_key(),
        slot: cairn_proto::owned_slot(&mailbox.verifying_key(), &vk("laptop"), "id").unwrap(),
        seq: 7,
        target: BlobId::of(b"newest identity-log entry"),
        timestamp: Timestamp(1_790_000_123),
        grant: cairn_proto::head_grant(&mailbox, &vk("laptop")),
    }
}

pub(crate) fn sample_operation() -> cairn_proto::Operation {
    cairn_proto::Operation {
        device: vk("laptop"),
        seq: 7,
        prev: Some(BlobId::of(b"operation 6")),
        clock: (1_790_000_123_456 << 16) | 3,
        body: br#"{"put":{"name":"notes.txt"}}"#.to_vec(),
    }
}

pub(crate) fn sample_relay_info() -> RelayInfo {
    RelayInfo {
        relay: vk("relay a"),
        software: SoftwareVersion::new("cairn-relay 0.1.0").unwrap(),
        issued_at: Timestamp(1_790_000_000),
        capacity_total: 1 << 40,
        capacity_used: 1 << 30,
        capacity_free: (1 << 40) - (1 << 30),
        max_blob_size: 1 << 34,
        retention_secs: 90 * 86_400,
        limits: FairShareLimits {
            key_quota_bytes: 10 << 30,
            key_requests_per_min: 600,
            addr_requests_per_min: 1200,
            pow_bits: 0,
        },
        peers: vec![relay_ref("relay b", "https://b.relay.example")],
        load_permille: 125,
        uptime_secs: 3600,
    }
}

pub(crate) fn sample_token() -> AuthToken {
    AuthToken {
        audience: vk("relay a"),
        method: Method::Put,
        target: TokenTarget::Blob(BlobId::of(b"ciphertext")),
        expires_at: Timestamp(1_790_000_300),
        nonce: Nonce(*b"0123456789abcdef"),
        stamp: 0,
    }
}

/// A batch of two blobs of 100 and 200 bytes.
pub(crate) fn sample_batch_header() -> cairn_proto::BatchHeader {
    cairn_proto::BatchHeader::new(vec![
        (BlobId::of(b"chunk a"), 100),
        (BlobId::of(b"chunk b"), 200),
    ])
    .unwrap()
}

pub(crate) fn sample_batch_token(header: &cairn_proto::BatchHeader) -> AuthToken {
    AuthToken {
        method: Method::Post,
        target: TokenTarget::Batch(header.digest()),
        ..sample_token()
    }
}

pub(crate) fn sample_path_token() -> AuthToken {
    AuthToken {
        method: Method::Get,
        target: TokenTarget::Path(RequestPath::new("/v1/heads/mailbox/laptop").unwrap()),
        ..sample_token()
    }
}

pub(crate) fn sample_receipt() -> TransferReceipt {
    TransferReceipt {
        receiver: vk("relay b"),
        sender: vk("relay a"),
        blob: BlobId::of(b"ciphertext"),
        size: 10,
        received_at: Timestamp(1_790_000_400),
    }
}

// ---- strategies -----------------------------------------------------------

pub(crate) fn arb_signing_key() -> impl Strategy<Value = SigningKey> {
    any::<[u8; 32]>().prop_map(|s| SigningKey::from_seed(&s))
}

pub(crate) fn arb_vk() -> impl Strategy<Value = VerifyingKey> {
    arb_signing_key().prop_map(|k| k.verifying_key())
}

pub(crate) fn arb_blob_id() -> impl Strategy<Value = BlobId> {
    any::<[u8; 32]>().prop_map(BlobId::from_bytes)
}

pub(crate) fn arb_x25519() -> impl Strategy<Value = X25519PublicKey> {
    any::<[u8; 32]>().prop_map(X25519PublicKey::from_bytes)
}

pub(crate) fn arb_time() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp)
}

fn arb_secret() -> impl Strategy<Value = WrappedSecret> {
    proptest::collection::vec(any::<u8>(), 1..=WrappedSecret::MAX_LEN)
        .prop_map(|b| WrappedSecret::new(b).unwrap())
}

pub(crate) fn arb_relay_ref() -> impl Strategy<Value = RelayRef> {
    (
        "https?://[a-z0-9.-]{1,40}(:[0-9]{1,5})?(/[!-~]{0,20})?",
        arb_vk(),
    )
        .prop_map(|(url, key)| RelayRef {
            url: RelayUrl::new(url).unwrap(),
            key,
        })
}

fn arb_relays(max: usize) -> impl Strategy<Value = Vec<RelayRef>> {
    proptest::collection::vec(arb_relay_ref(), 0..=max).prop_map(|mut v| {
        v.sort_by_key(|r| r.key);
        v.dedup_by_key(|r| r.key);
        v
    })
}

pub(crate) fn arb_certificate() -> impl Strategy<Value = DeviceCertificate> {
    (
        arb_vk(),
        arb_x25519(),
        "[^\\s\\p{Cc}]([^\\p{Cc}]{0,14}[^\\s\\p{Cc}])?",
        arb_time(),
    )
        .prop_filter_map(
            "device name out of bounds",
            |(device, x25519, name, created)| {
                Some(DeviceCertificate {
                    device,
                    x25519,
                    name: DeviceName::new(name).ok()?,
                    created,
                })
            },
        )
}

pub(crate) fn arb_revocation() -> impl Strategy<Value = Revocation> {
    (arb_vk(), arb_time(), 0u8..3).prop_map(|(device, revoked_at, reason)| Revocation {
        device,
        revoked_at,
        reason: match reason {
            0 => RevocationReason::Unspecified,
            1 => RevocationReason::Compromised,
            _ => RevocationReason::Retired,
        },
    })
}

fn arb_action() -> impl Strategy<Value = LogAction> {
    let add = (
        arb_certificate(),
        arb_signing_key(),
        proptest::option::of((any::<u32>(), arb_secret())),
    )
        .prop_map(|(cert, signer, vault)| LogAction::AddDevice {
            certificate: SignedRecord::sign(&cert, &signer).unwrap(),
            vault_key: vault.map(|(generation, secret)| WrappedKey { generation, secret }),
        });
    let revoke =
        (arb_revocation(), arb_signing_key()).prop_map(|(rev, signer)| LogAction::RevokeDevice {
            revocation: SignedRecord::sign(&rev, &signer).unwrap(),
        });
    let rotate = (
        1u32..,
        arb_x25519(),
        proptest::collection::vec((arb_vk(), arb_secret()), 1..4),
        arb_secret(),
    )
        .prop_map(|(generation, recipient, keys, prev)| {
            let mut wrapped: Vec<_> = keys
                .into_iter()
                .map(|(device, secret)| DeviceWrappedKey { device, secret })
                .collect();
            wrapped.sort_by_key(|w| w.device);
            wrapped.dedup_by_key(|w| w.device);
            LogAction::RotateVaultKey {
                generation,
                recipient,
                wrapped,
                previous: (generation > 1).then_some(prev),
            }
        });
    let relays = arb_relays(8).prop_map(|relays| LogAction::SetPreferredRelays { relays });
    prop_oneof![add, revoke, rotate, relays]
}

pub(crate) fn arb_log_entry() -> impl Strategy<Value = IdentityLogEntry> {
    (any::<u64>(), arb_blob_id(), arb_action()).prop_map(|(seq, prev, action)| IdentityLogEntry {
        seq,
        prev: (seq > 0).then_some(prev),
        action,
    })
}

pub(crate) fn arb_operation() -> impl Strategy<Value = cairn_proto::Operation> {
    (
        arb_vk(),
        1u64..u64::MAX,
        arb_blob_id(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(device, seq, prev, clock, body)| cairn_proto::Operation {
            device,
            seq,
            prev: (seq > 1).then_some(prev),
            clock,
            body,
        })
}

/// Owned heads with any label, seq, target and time; the slot and grant
/// are made for the signer by the property's adjustment.
pub(crate) fn arb_owned_head() -> impl Strategy<Value = cairn_proto::OwnedHead> {
    (
        "[A-Za-z0-9_-]{1,41}",
        any::<u64>(),
        arb_blob_id(),
        arb_time(),
    )
        .prop_map(|(label, seq, target, timestamp)| {
            let mailbox = key("property mailbox");
            let writer = vk("property writer");
            cairn_proto::OwnedHead {
                mailbox: mailbox.verifying_key(),
                slot: cairn_proto::owned_slot(&mailbox.verifying_key(), &writer, &label).unwrap(),
                seq,
                target,
                timestamp,
                grant: cairn_proto::head_grant(&mailbox, &writer),
            }
        })
}

pub(crate) fn arb_head() -> impl Strategy<Value = HeadRecord> {
    (
        arb_vk(),
        "[A-Za-z0-9_-]{1,64}",
        any::<u64>(),
        arb_blob_id(),
        arb_time(),
    )
        .prop_map(|(mailbox, slot, seq, target, timestamp)| HeadRecord {
            mailbox,
            slot: Slot::new(slot).unwrap(),
            seq,
            target,
            timestamp,
        })
}

pub(crate) fn arb_relay_info() -> impl Strategy<Value = RelayInfo> {
    (
        (arb_vk(), "[ -~]{1,64}", arb_time()),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u32>(), any::<u32>(), 0u8..=64),
        arb_relays(6),
        (0u16..=1000, any::<u64>()),
    )
        .prop_map(
            |(
                (relay, software, issued_at),
                (total, used, free),
                (max_blob_size, retention_secs),
                (quota, key_rate, addr_rate, pow_bits),
                peers,
                (load_permille, uptime_secs),
            )| {
                let used = used % total.saturating_add(1);
                let free = free % (total - used).saturating_add(1);
                RelayInfo {
                    relay,
                    software: SoftwareVersion::new(software).unwrap(),
                    issued_at,
                    capacity_total: total,
                    capacity_used: used,
                    capacity_free: free,
                    max_blob_size,
                    retention_secs,
                    limits: FairShareLimits {
                        key_quota_bytes: quota,
                        key_requests_per_min: key_rate,
                        addr_requests_per_min: addr_rate,
                        pow_bits,
                    },
                    peers: peers.into_iter().filter(|p| p.key != relay).collect(),
                    load_permille,
                    uptime_secs,
                }
            },
        )
}

pub(crate) fn arb_token() -> impl Strategy<Value = AuthToken> {
    let target = prop_oneof![
        arb_blob_id().prop_map(TokenTarget::Blob),
        "/[!-~]{0,200}".prop_map(|p| TokenTarget::Path(RequestPath::new(p).unwrap())),
    ];
    (
        arb_vk(),
        0u8..5,
        target,
        arb_time(),
        any::<[u8; 16]>(),
        any::<u64>(),
    )
        .prop_map(
            |(audience, m, target, expires_at, nonce, stamp)| AuthToken {
                audience,
                method: [
                    Method::Get,
                    Method::Head,
                    Method::Put,
                    Method::Delete,
                    Method::Post,
                ][usize::from(m)],
                target,
                expires_at,
                nonce: Nonce(nonce),
                stamp,
            },
        )
}

pub(crate) fn arb_receipt() -> impl Strategy<Value = TransferReceipt> {
    (arb_vk(), arb_vk(), arb_blob_id(), any::<u64>(), arb_time())
        .prop_filter("sender equals receiver", |(r, s, ..)| r != s)
        .prop_map(
            |(receiver, sender, blob, size, received_at)| TransferReceipt {
                receiver,
                sender,
                blob,
                size,
                received_at,
            },
        )
}
