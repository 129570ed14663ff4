//! Identity-log verification: valid chains are accepted and lead to the
//! right state; each way of breaking a chain is refused with its own error,
//! naming the first bad entry.

use cairn_proto::{
    IdentityLogEntry, LogAction, LogError, LogErrorKind, MAX_ACTIVE_DEVICES, RecordKind,
    SignedRecord, SigningKey, VerifyError, WrappedKey, WrappedSecret, verify_identity_log,
};
use cairn_testkit::{IdentityBuilder, key};
use proptest::prelude::*;

use crate::common::{relay_ref, sample_head};

struct Keys {
    root: SigningKey,
    laptop: SigningKey,
    phone: SigningKey,
    server: SigningKey,
}

fn keys() -> Keys {
    Keys {
        root: key("root"),
        laptop: key("laptop"),
        phone: key("phone"),
        server: key("server"),
    }
}

/// A log that exercises every action: enroll, rotate, enroll with the vault
/// key, set relays, revoke (by a device presenting a root revocation), rotate.
fn full_log(k: &Keys) -> IdentityBuilder {
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop")
        .rotate(&k.root, &[&k.laptop])
        .add_device(&k.root, &k.phone, "phone")
        .set_relays(&k.phone, vec![relay_ref("relay a", "https://a.example")])
        .revoke(&k.laptop, &k.phone)
        .rotate(&k.root, &[&k.laptop]);
    log
}

fn verify(log: &IdentityBuilder) -> Result<cairn_proto::IdentityState, LogError> {
    verify_identity_log(&log.root().verifying_key(), log.entries())
}

fn rejected(log: &IdentityBuilder, index: u64, kind: LogErrorKind) {
    assert_eq!(verify(log).unwrap_err(), LogError { index, kind });
}

#[test]
fn a_valid_log_leads_to_the_expected_state() {
    let k = keys();
    let log = full_log(&k);
    let state = verify(&log).unwrap();
    let active: Vec<_> = state.devices().keys().copied().collect();
    assert_eq!(active, vec![k.laptop.verifying_key()]);
    assert!(state.is_revoked(&k.phone.verifying_key()));
    assert!(!state.is_active(&k.phone.verifying_key()));
    assert_eq!(state.vault().unwrap().generation, 2);
    assert!(!state.vault_needs_rotation());
    assert_eq!(state.preferred_relays().len(), 1);
    assert_eq!(state.last_seq(), 5);
    assert_eq!(
        state.head(),
        cairn_proto::BlobId::of(log.entries().last().unwrap())
    );
    let laptop = &state.devices()[&k.laptop.verifying_key()];
    assert_eq!(laptop.name.as_str(), "laptop");
    assert_eq!(laptop.enrolled_at, 0);
}

#[test]
fn a_revocation_marks_the_vault_for_rotation_until_one_follows() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop")
        .rotate(&k.root, &[&k.laptop])
        .add_device(&k.root, &k.phone, "phone")
        .revoke(&k.root, &k.phone);
    assert!(verify(&log).unwrap().vault_needs_rotation());
    log.rotate(&k.root, &[&k.laptop]);
    assert!(!verify(&log).unwrap().vault_needs_rotation());
}

#[test]
fn the_empty_log_is_refused() {
    let root = key("root").verifying_key();
    assert_eq!(
        verify_identity_log(&root, Vec::<Vec<u8>>::new()).unwrap_err(),
        LogError {
            index: 0,
            kind: LogErrorKind::Empty
        }
    );
}

#[test]
fn a_log_for_another_root_is_refused() {
    let k = keys();
    let log = full_log(&k);
    let other = key("other root").verifying_key();
    assert_eq!(
        verify_identity_log(&other, log.entries()).unwrap_err(),
        LogError {
            index: 0,
            kind: LogErrorKind::BadGenesis
        }
    );
}

#[test]
fn bad_signature() {
    let k = keys();
    let mut log = full_log(&k);
    let mut entries = log.entries().to_vec();
    let last = entries[3].len() - 1;
    entries[3][last] ^= 0x01;
    log = rebuilt(&k.root, entries);
    rejected(&log, 3, LogErrorKind::BadSignature);
}

#[test]
fn broken_chain() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop");
    let entry = IdentityLogEntry {
        seq: 1,
        prev: Some(cairn_proto::BlobId::of(b"not the previous entry")),
        action: LogAction::SetPreferredRelays { relays: vec![] },
    };
    log.push_raw(SignedRecord::sign(&entry, &k.laptop).unwrap().to_bytes());
    rejected(&log, 1, LogErrorKind::BrokenChain);
}

#[test]
fn sequence_gap() {
    let k = keys();
    let log = full_log(&k);
    let mut entries = log.entries().to_vec();
    entries.remove(2);
    rejected(
        &rebuilt(&k.root, entries),
        2,
        LogErrorKind::SequenceGap {
            expected: 2,
            found: 3,
        },
    );
}

#[test]
fn a_revoked_device_can_no_longer_sign() {
    let k = keys();
    let mut log = full_log(&k);
    log.set_relays(&k.phone, vec![]);
    rejected(
        &log,
        6,
        LogErrorKind::RevokedSigner(k.phone.verifying_key()),
    );
}

#[test]
fn a_stranger_cannot_sign() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop")
        .set_relays(&k.server, vec![]);
    rejected(
        &log,
        1,
        LogErrorKind::UnknownSigner(k.server.verifying_key()),
    );
}

#[test]
fn unknown_action_kind() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop");
    // seq (8 bytes) | prev present (1) | prev (32) | action tag | ...
    let mut payload = 1u64.to_be_bytes().to_vec();
    payload.push(1);
    payload.extend_from_slice(log.next_prev().unwrap().as_bytes());
    payload.push(0x7f);
    let envelope =
        SignedRecord::sign_raw(RecordKind::IdentityLogEntry, payload, &k.laptop).unwrap();
    log.push_raw(envelope.to_bytes());
    rejected(&log, 1, LogErrorKind::UnknownKind { tag: 0x7f });
}

#[test]
fn another_record_kind_in_the_log() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop");
    log.push_raw(
        SignedRecord::sign(&sample_head(), &key("mailbox"))
            .unwrap()
            .to_bytes(),
    );
    rejected(
        &log,
        1,
        LogErrorKind::NotALogEntry {
            found: RecordKind::Head,
        },
    );
}

#[test]
fn malformed_bytes() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop")
        .push_raw(vec![1, 3, 0]);
    assert!(matches!(
        verify(&log).unwrap_err(),
        LogError {
            index: 1,
            kind: LogErrorKind::Malformed(_)
        }
    ));
}

#[test]
fn genesis_must_be_an_enrollment_signed_by_the_root() {
    let k = keys();
    let mut by_device = IdentityBuilder::new(k.root.clone());
    by_device.add_device(&k.laptop, &k.laptop, "laptop");
    rejected(&by_device, 0, LogErrorKind::BadGenesis);

    let mut not_an_enrollment = IdentityBuilder::new(k.root.clone());
    not_an_enrollment.set_relays(&k.root, vec![]);
    rejected(&not_an_enrollment, 0, LogErrorKind::BadGenesis);
}

#[test]
fn certificates_must_be_signed_by_the_root() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop");
    // The laptop certifies the phone itself: refused.
    let cert = cairn_proto::DeviceCertificate {
        device: k.phone.verifying_key(),
        x25519: cairn_testkit::x25519_for(&k.phone),
        name: "phone".parse().unwrap(),
        created: cairn_proto::Timestamp(1),
    };
    let certificate = SignedRecord::sign(&cert, &k.laptop).unwrap();
    log.push(
        &k.laptop,
        LogAction::AddDevice {
            certificate,
            vault_key: None,
        },
    );
    rejected(
        &log,
        1,
        LogErrorKind::NotSignedByRoot {
            what: "certificate",
        },
    );
}

#[test]
fn a_forged_certificate_signature_is_refused() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop");
    let good = log.certificate(&k.phone, "phone");
    let mut sig = good.signature().to_bytes();
    sig[0] ^= 1;
    let mut bytes = good.to_bytes();
    let at = bytes.len() - 64;
    bytes[at..].copy_from_slice(&sig);
    let certificate = SignedRecord::from_bytes(&bytes).unwrap();
    log.push(
        &k.laptop,
        LogAction::AddDevice {
            certificate,
            vault_key: None,
        },
    );
    rejected(
        &log,
        1,
        LogErrorKind::BadNestedRecord {
            what: "certificate",
            error: VerifyError::BadSignature,
        },
    );
}

#[test]
fn revocations_must_be_signed_by_the_root() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop")
        .add_device(&k.root, &k.phone, "phone");
    let revocation = cairn_proto::Revocation {
        device: k.laptop.verifying_key(),
        revoked_at: cairn_proto::Timestamp(1),
        reason: cairn_proto::RevocationReason::Compromised,
    };
    // A stolen phone tries to lock out the laptop.
    let revocation = SignedRecord::sign(&revocation, &k.phone).unwrap();
    log.push(&k.phone, LogAction::RevokeDevice { revocation });
    rejected(
        &log,
        2,
        LogErrorKind::NotSignedByRoot { what: "revocation" },
    );
}

#[test]
fn enrolling_twice_re_enrolling_and_revoking_strangers_are_refused() {
    let k = keys();
    let mut twice = IdentityBuilder::new(k.root.clone());
    twice
        .add_device(&k.root, &k.laptop, "laptop")
        .add_device(&k.root, &k.laptop, "laptop again");
    rejected(
        &twice,
        1,
        LogErrorKind::AlreadyEnrolled(k.laptop.verifying_key()),
    );

    let mut back = IdentityBuilder::new(k.root.clone());
    back.add_device(&k.root, &k.laptop, "laptop")
        .add_device(&k.root, &k.phone, "phone")
        .revoke(&k.root, &k.phone)
        .add_device(&k.root, &k.phone, "phone again");
    rejected(&back, 3, LogErrorKind::WasRevoked(k.phone.verifying_key()));

    let mut stranger = IdentityBuilder::new(k.root.clone());
    stranger
        .add_device(&k.root, &k.laptop, "laptop")
        .revoke(&k.root, &k.server);
    rejected(
        &stranger,
        1,
        LogErrorKind::NotEnrolled(k.server.verifying_key()),
    );

    let mut root = IdentityBuilder::new(k.root.clone());
    root.add_device(&k.root, &k.root, "root");
    rejected(&root, 0, LogErrorKind::RootAsDevice);
}

#[test]
fn vault_generations_must_follow_on() {
    let k = keys();
    // Rotation that skips generation 2.
    let mut skip = IdentityBuilder::new(k.root.clone());
    skip.add_device(&k.root, &k.laptop, "laptop")
        .rotate(&k.root, &[&k.laptop]);
    skip.push(
        &k.root,
        LogAction::RotateVaultKey {
            generation: 3,
            recipient: cairn_proto::X25519PublicKey::from_bytes([3; 32]),
            wrapped: vec![cairn_proto::DeviceWrappedKey {
                device: k.laptop.verifying_key(),
                secret: WrappedSecret::new(vec![1]).unwrap(),
            }],
            previous: Some(WrappedSecret::new(vec![2]).unwrap()),
        },
    );
    rejected(
        &skip,
        2,
        LogErrorKind::VaultGeneration {
            expected: 2,
            found: 3,
        },
    );

    // Enrollment carrying an old generation.
    let mut stale = IdentityBuilder::new(k.root.clone());
    stale
        .add_device(&k.root, &k.laptop, "laptop")
        .rotate(&k.root, &[&k.laptop])
        .rotate(&k.root, &[&k.laptop]);
    let certificate = stale.certificate(&k.phone, "phone");
    stale.push(
        &k.root,
        LogAction::AddDevice {
            certificate,
            vault_key: Some(WrappedKey {
                generation: 1,
                secret: WrappedSecret::new(vec![1]).unwrap(),
            }),
        },
    );
    rejected(
        &stale,
        3,
        LogErrorKind::VaultGeneration {
            expected: 2,
            found: 1,
        },
    );
}

#[test]
fn enrollment_must_carry_the_vault_key_exactly_when_one_exists() {
    let k = keys();
    let mut missing = IdentityBuilder::new(k.root.clone());
    missing
        .add_device(&k.root, &k.laptop, "laptop")
        .rotate(&k.root, &[&k.laptop]);
    let certificate = missing.certificate(&k.phone, "phone");
    missing.push(
        &k.root,
        LogAction::AddDevice {
            certificate,
            vault_key: None,
        },
    );
    rejected(&missing, 2, LogErrorKind::VaultKeyPresence);

    let mut premature = IdentityBuilder::new(k.root.clone());
    let certificate = premature.certificate(&k.laptop, "laptop");
    premature.push(
        &k.root,
        LogAction::AddDevice {
            certificate,
            vault_key: Some(WrappedKey {
                generation: 1,
                secret: WrappedSecret::new(vec![1]).unwrap(),
            }),
        },
    );
    rejected(&premature, 0, LogErrorKind::VaultKeyPresence);
}

#[test]
fn a_rotation_must_wrap_to_exactly_the_active_devices() {
    let k = keys();
    // Still wrapping to the revoked phone: the revoked device would keep
    // reading new data.
    let mut leaky = IdentityBuilder::new(k.root.clone());
    leaky
        .add_device(&k.root, &k.laptop, "laptop")
        .add_device(&k.root, &k.phone, "phone")
        .revoke(&k.root, &k.phone)
        .rotate(&k.root, &[&k.laptop, &k.phone]);
    rejected(&leaky, 3, LogErrorKind::WrappedKeysMismatch);

    // Forgetting an active device: it would be locked out.
    let mut forgetful = IdentityBuilder::new(k.root.clone());
    forgetful
        .add_device(&k.root, &k.laptop, "laptop")
        .add_device(&k.root, &k.phone, "phone")
        .rotate(&k.root, &[&k.laptop]);
    rejected(&forgetful, 2, LogErrorKind::WrappedKeysMismatch);
}

#[test]
fn the_device_limit_holds() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    let devices: Vec<_> = (0..=MAX_ACTIVE_DEVICES)
        .map(|i| key(&format!("device {i}")))
        .collect();
    for (i, device) in devices.iter().enumerate() {
        log.add_device(&k.root, device, &format!("device {i}"));
    }
    rejected(
        &log,
        MAX_ACTIVE_DEVICES as u64,
        LogErrorKind::TooManyDevices,
    );
}

#[test]
fn a_refused_entry_leaves_the_state_unchanged() {
    let k = keys();
    let log = full_log(&k);
    let mut state = verify(&log).unwrap();
    let before = state.clone();
    // The builder is deterministic: the same steps give the same entries, so
    // each variant below appends one bad entry to the same valid log.
    type Append = Box<dyn Fn(&mut IdentityBuilder)>;
    let variants: Vec<(Append, LogErrorKind)> = vec![
        (
            Box::new(|b| {
                b.rotate(&key("root"), &[&key("laptop"), &key("server")]);
            }),
            LogErrorKind::WrappedKeysMismatch,
        ),
        (
            Box::new(|b| {
                b.rotate(&key("laptop"), &[&key("laptop")]);
            }),
            LogErrorKind::RotationNotByRoot,
        ),
        (
            Box::new(|b| {
                b.add_device(&key("root"), &key("laptop"), "again");
            }),
            LogErrorKind::AlreadyEnrolled(k.laptop.verifying_key()),
        ),
        (
            Box::new(|b| {
                b.revoke(&key("root"), &key("server"));
            }),
            LogErrorKind::NotEnrolled(k.server.verifying_key()),
        ),
        (
            Box::new(|b| {
                b.set_relays(&key("phone"), vec![]);
            }),
            LogErrorKind::RevokedSigner(k.phone.verifying_key()),
        ),
    ];
    for (append, expected) in variants {
        let mut bad = full_log(&k);
        append(&mut bad);
        let err = state.apply(bad.entries().last().unwrap()).unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(state, before);
    }
}

fn rebuilt(root: &SigningKey, entries: Vec<Vec<u8>>) -> IdentityBuilder {
    let mut log = IdentityBuilder::new(root.clone());
    for e in entries {
        log.push_raw(e);
    }
    log
}

/// One step of a random but valid history.
#[derive(Clone, Debug)]
enum Step {
    Add,
    Revoke(usize),
    Rotate,
    Relays,
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            3 => Just(Step::Add),
            2 => any::<usize>().prop_map(Step::Revoke),
            2 => Just(Step::Rotate),
            1 => Just(Step::Relays),
        ],
        0..20,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A random valid history verifies, whole or entry by entry, and the
    /// state matches a simple model of it.
    #[test]
    fn random_valid_histories_verify(steps in arb_steps()) {
        let root = key("root");
        let first = key("device 0");
        let mut log = IdentityBuilder::new(root.clone());
        log.add_device(&root, &first, "device 0");
        let mut active = vec![first];
        let mut revoked = Vec::new();
        // Model of the stale-vault flag: a vault exists and a device was
        // revoked since the last rotation.
        let mut stale = false;
        let mut minted = 1;
        for step in steps {
            // Any active device may sign; the root signs when none is left.
            let signer = active.first().cloned().unwrap_or_else(|| root.clone());
            match step {
                Step::Add => {
                    let device = key(&format!("device {minted}"));
                    log.add_device(&signer, &device, &format!("device {minted}"));
                    minted += 1;
                    active.push(device);
                }
                Step::Revoke(i) if !active.is_empty() => {
                    let device = active.remove(i % active.len());
                    log.revoke(&signer, &device);
                    revoked.push(device);
                    stale = log.generation() > 0;
                }
                Step::Rotate if !active.is_empty() => {
                    // Only the root rotates the vault key (revision 2).
                    let refs: Vec<_> = active.iter().collect();
                    log.rotate(&root, &refs);
                    stale = false;
                }
                _ => {
                    log.set_relays(&signer, vec![]);
                }
            }
        }
        let state = verify(&log).unwrap();
        let mut expected: Vec<_> = active.iter().map(SigningKey::verifying_key).collect();
        expected.sort();
        prop_assert_eq!(state.devices().keys().copied().collect::<Vec<_>>(), expected);
        for device in &revoked {
            prop_assert!(state.is_revoked(&device.verifying_key()));
        }
        prop_assert_eq!(state.vault().map_or(0, |v| v.generation), log.generation());
        prop_assert_eq!(state.vault_needs_rotation(), stale);
        prop_assert_eq!(state.revoked().len(), revoked.len());
        prop_assert_eq!(state.last_seq() + 1, log.entries().len() as u64);

        // Entry by entry gives the same state.
        let mut incremental = verify_identity_log(
            &root.verifying_key(),
            &log.entries()[..1],
        ).unwrap();
        for entry in &log.entries()[1..] {
            incremental.apply(entry).unwrap();
        }
        prop_assert_eq!(incremental, state);
    }

    /// Dropping, duplicating or swapping entries is always caught.
    #[test]
    fn reordering_a_valid_log_is_refused(steps in arb_steps(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let root = key("root");
        let first = key("device 0");
        let mut log = IdentityBuilder::new(root.clone());
        log.add_device(&root, &first, "device 0");
        for _ in steps {
            log.set_relays(&first, vec![]);
        }
        let entries = log.entries().to_vec();
        prop_assume!(entries.len() >= 2);
        let (i, j) = (a.index(entries.len()), b.index(entries.len()));
        let mut swapped = entries.clone();
        swapped.swap(i, j);
        if i != j {
            prop_assert!(verify_identity_log(&root.verifying_key(), &swapped).is_err());
        }
        let mut duplicated = entries.clone();
        duplicated.insert(i, entries[i].clone());
        prop_assert!(verify_identity_log(&root.verifying_key(), &duplicated).is_err());
        // Dropping any entry but the last (which leaves a valid prefix).
        let mut dropped = entries.clone();
        dropped.remove(a.index(entries.len() - 1));
        prop_assert!(verify_identity_log(&root.verifying_key(), &dropped).is_err());
    }
}

/// A device cannot rotate the vault key (revision 2): a stolen one could
/// otherwise wrap keys that do not open for every other device, or hand
/// them a vault key it chose.
#[test]
fn only_the_root_rotates_the_vault_key() {
    let k = keys();
    let mut log = IdentityBuilder::new(k.root.clone());
    log.add_device(&k.root, &k.laptop, "laptop")
        .add_device(&k.root, &k.phone, "phone")
        .rotate(&k.phone, &[&k.laptop, &k.phone]);
    rejected(&log, 2, LogErrorKind::RotationNotByRoot);
}
