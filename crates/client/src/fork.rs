//! Choosing between two identity logs that fork (PROTOCOL.md §10.4,
//! "Forks").
//!
//! Any active device may append to the identity log, so two valid logs can
//! share a prefix and then differ: two devices that appended at once, or a
//! stolen device that branched off before (or after) the root key revoked
//! it. The root key's authority decides: a branch that revokes a device
//! which signed entries of the other branch wins, so a thief's branch never
//! outlives the revocation, whatever it claims or however long it is. When
//! neither branch revokes the other's signers, the tie is broken the same
//! way on every device (the lower id of the first entry that differs), so
//! devices converge.

use std::collections::BTreeSet;

use cairn_proto::{BlobId, IdentityLogEntry, LogAction, Revocation, SignedRecord, VerifyingKey};

use crate::identity::IdentityLog;

/// What to do with a log fetched from the relays, given the one this device
/// holds.
#[derive(Debug)]
pub(crate) enum Choice {
    /// It adds nothing: it is this device's log or a part of it.
    Keep,
    /// It extends this device's log.
    Extend(IdentityLog),
    /// The two fork; `adopt` is the log to hold from now on (this device's
    /// or the fetched one), and `losers` the devices that signed the entries
    /// of the branch that lost.
    Fork {
        adopt: Option<IdentityLog>,
        losers: BTreeSet<VerifyingKey>,
        by_authority: bool,
    },
}

/// Decides between `ours` and `theirs` (both verified against one root).
pub(crate) fn choose(ours: &IdentityLog, theirs: IdentityLog) -> Choice {
    let shared = shared_len(ours, &theirs);
    if shared == theirs.entries().len() {
        return Choice::Keep;
    }
    if shared == ours.entries().len() {
        return Choice::Extend(theirs);
    }
    let our_signers = signers(ours, shared);
    let their_signers = signers(&theirs, shared);
    let we_revoke = !revoked(ours, shared).is_disjoint(&their_signers);
    let they_revoke = !revoked(&theirs, shared).is_disjoint(&our_signers);
    let (theirs_wins, by_authority) = match (we_revoke, they_revoke) {
        (true, false) => (false, true),
        (false, true) => (true, true),
        // Neither (two devices appended at once) or both (the root signed
        // both ways): the same answer on every device.
        _ => (first_id(&theirs, shared) < first_id(ours, shared), false),
    };
    if theirs_wins {
        Choice::Fork {
            adopt: Some(theirs),
            losers: our_signers,
            by_authority,
        }
    } else {
        Choice::Fork {
            adopt: None,
            losers: their_signers,
            by_authority,
        }
    }
}

fn shared_len(a: &IdentityLog, b: &IdentityLog) -> usize {
    a.entries()
        .iter()
        .zip(b.entries())
        .take_while(|(x, y)| x == y)
        .count()
}

/// Entries from position `from` on, with their signers.
fn entries_from(
    log: &IdentityLog,
    from: usize,
) -> impl Iterator<Item = (VerifyingKey, IdentityLogEntry)> + '_ {
    log.entries().iter().skip(from).filter_map(|bytes| {
        let record = SignedRecord::from_bytes(bytes).ok()?;
        let signer = *record.signer();
        let entry = record.verify::<IdentityLogEntry>().ok()?.into_record();
        Some((signer, entry))
    })
}

/// Who signed the entries from position `from` on.
fn signers(log: &IdentityLog, from: usize) -> BTreeSet<VerifyingKey> {
    entries_from(log, from).map(|(signer, _)| signer).collect()
}

/// The devices the root key revoked in entries from position `from` on.
fn revoked(log: &IdentityLog, from: usize) -> BTreeSet<VerifyingKey> {
    entries_from(log, from)
        .filter_map(|(_, entry)| match entry.action {
            LogAction::RevokeDevice { revocation } => {
                Some(revocation.verify::<Revocation>().ok()?.device)
            }
            _ => None,
        })
        .collect()
}

fn first_id(log: &IdentityLog, at: usize) -> BlobId {
    log.entries()
        .get(at)
        .map_or(BlobId::of(b""), |entry| BlobId::of(entry))
}

#[cfg(test)]
mod tests {
    use cairn_proto::{DeviceName, RelayRef, RevocationReason, Timestamp};

    use super::*;
    use crate::keys::DeviceKeys;

    struct World {
        root: cairn_proto::SigningKey,
        laptop: DeviceKeys,
        phone: DeviceKeys,
        base: IdentityLog,
    }

    fn world() -> World {
        let root = cairn_proto::SigningKey::from_seed(&[7; 32]);
        let laptop = DeviceKeys::generate().unwrap();
        let phone = DeviceKeys::generate().unwrap();
        let mut base = IdentityLog::genesis(
            &root,
            &laptop,
            &DeviceName::new("laptop").unwrap(),
            Timestamp(1),
        )
        .unwrap();
        let vault = crate::keys::VaultKey::derive(&root, 1);
        let certificate = crate::identity::certify(
            &root,
            &phone,
            &DeviceName::new("phone").unwrap(),
            Timestamp(1),
        )
        .unwrap();
        base.append(
            &root,
            LogAction::AddDevice {
                certificate,
                vault_key: Some(cairn_proto::WrappedKey {
                    generation: 1,
                    secret: vault.wrap_to(&phone.x25519.public()).unwrap(),
                }),
            },
        )
        .unwrap();
        World {
            root,
            laptop,
            phone,
            base,
        }
    }

    fn relays(log: &mut IdentityLog, signer: &cairn_proto::SigningKey, n: usize) {
        for i in 0..n {
            let url = cairn_proto::RelayUrl::new(format!("https://r{i}.example")).unwrap();
            let seed = [u8::try_from(i).unwrap(); 32];
            let key = cairn_proto::SigningKey::from_seed(&seed).verifying_key();
            log.append(
                signer,
                LogAction::SetPreferredRelays {
                    relays: vec![RelayRef { url, key }],
                },
            )
            .unwrap();
        }
    }

    fn revoke(log: &mut IdentityLog, root: &cairn_proto::SigningKey, device: &DeviceKeys) {
        let revocation = SignedRecord::sign(
            &Revocation {
                device: device.signing.verifying_key(),
                revoked_at: Timestamp(1),
                reason: RevocationReason::Compromised,
            },
            root,
        )
        .unwrap();
        log.append(root, LogAction::RevokeDevice { revocation })
            .unwrap();
    }

    /// The stolen phone branches off and makes its branch longer; the
    /// laptop's branch revokes it. The revoking branch wins from either
    /// side, and the phone is named.
    #[test]
    fn the_branch_that_revokes_the_other_branchs_signer_wins() {
        let w = world();
        let mut thief = w.base.clone();
        relays(&mut thief, &w.phone.signing, 5);
        let mut honest = w.base.clone();
        revoke(&mut honest, &w.root, &w.phone);

        match choose(&thief, honest.clone()) {
            Choice::Fork {
                adopt: Some(log),
                losers,
                by_authority: true,
            } => {
                assert_eq!(log.state().head(), honest.state().head());
                assert!(losers.contains(&w.phone.signing.verifying_key()));
            }
            other => panic!("{other:?}"),
        }
        match choose(&honest, thief) {
            Choice::Fork {
                adopt: None,
                losers,
                by_authority: true,
            } => assert!(losers.contains(&w.phone.signing.verifying_key())),
            other => panic!("{other:?}"),
        }
    }

    /// Two honest appends at once: every device picks the same branch.
    #[test]
    fn a_fork_without_authority_is_decided_the_same_everywhere() {
        let w = world();
        let mut a = w.base.clone();
        relays(&mut a, &w.laptop.signing, 1);
        let mut b = w.base.clone();
        relays(&mut b, &w.phone.signing, 2);
        let from_a = matches!(choose(&a, b.clone()), Choice::Fork { adopt: Some(_), .. });
        let from_b = matches!(choose(&b, a.clone()), Choice::Fork { adopt: Some(_), .. });
        assert_ne!(from_a, from_b, "both sides must end on the same branch");
    }

    #[test]
    fn extensions_and_prefixes_are_no_forks() {
        let w = world();
        let mut longer = w.base.clone();
        relays(&mut longer, &w.laptop.signing, 1);
        assert!(matches!(choose(&w.base, longer.clone()), Choice::Extend(_)));
        assert!(matches!(choose(&longer, w.base.clone()), Choice::Keep));
    }
}
