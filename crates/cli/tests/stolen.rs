//! A stolen device against its own revocation (PROTOCOL.md §4.9, §10.4;
//! THREAT-MODEL.md, "A stolen device").
//!
//! The thief holds everything the phone holds: its device key and the
//! vault key of the current generation, from which the mailbox key on each
//! relay is derived, and with it the phone's own (blinded) writer key
//! there (PROTOCOL.md §10.7). Before the laptop revokes the phone, the thief freezes every
//! head it can write on every relay at `seq = 2^64-1` and tries to write
//! the heads it cannot. The revocation must still reach the desktop.

use cairn_client::keys::VaultKey;
use cairn_client::proto::ErrorCode;
use cairn_client::proto::{
    BlindedSigningKey, BlobId, HeadRecord, OwnedHead, Record as _, RecordKind, SignedRecord,
    Signer, SigningKey, Slot, Timestamp, VerifyingKey, head_grant, owned_slot,
};
use cairn_client::relay::{Head, HeadWrite, RelayClient};
use cairn_client::{Client, Home, Passphrase};

use crate::common::{
    Device, PASSPHRASE, Relay, data_with_marker, laptop_on_three_relays, legacy_head,
};
use crate::devices::pair;

fn open(device: &Device) -> Client {
    Client::open(Home::at(device.home()), &Passphrase::new(PASSPHRASE)).unwrap()
}

/// `device`'s place on the relay with key `relay` in `vault`'s
/// generation: the mailbox key there, and the device's writer key.
fn place(
    vault: &VaultKey,
    device: &SigningKey,
    relay: &VerifyingKey,
) -> (SigningKey, BlindedSigningKey) {
    let mailbox = vault.mailbox_at(relay);
    let factor = vault.writer_factor(&mailbox.verifying_key(), &device.verifying_key());
    (mailbox, device.blind(&factor))
}

/// An owned head for `slot` signed by `writer`, whatever slot it is: the
/// payload is signed raw, so the client's own checks do not stop it.
fn owned_raw(mailbox: &SigningKey, writer: &impl Signer, slot: Slot, seq: u64) -> SignedRecord {
    let head = OwnedHead {
        mailbox: mailbox.verifying_key(),
        slot,
        seq,
        target: BlobId::of(b"whatever the thief likes"),
        timestamp: Timestamp(1),
        grant: head_grant(mailbox, &writer.verifying_key()),
    };
    SignedRecord::sign_raw(RecordKind::OwnedHead, head.to_payload(), writer).unwrap()
}

fn legacy_device_slot(device: &VerifyingKey) -> String {
    format!(
        "d-{}",
        cairn_client::proto::encode_base64url(&device.to_bytes())
    )
}

/// What the thief managed: heads stored, and heads the relays refused.
#[derive(Default, Debug)]
struct Freeze {
    frozen: usize,
    refused_others: usize,
    stored_others: usize,
}

/// Freezes every head the thief can write in `mailbox` on `relay` (as the
/// phone's writer key `thief` there) and tries to move every other
/// device's own heads.
async fn freeze(
    relay: &RelayClient,
    mailbox: &SigningKey,
    thief: &BlindedSigningKey,
    devices: &[VerifyingKey],
    out: &mut Freeze,
) {
    let (heads, _) = relay.list_heads(&mailbox.verifying_key()).await.unwrap();
    let me = thief.verifying_key();
    for head in &heads {
        match head.signer {
            // The thief's own slots: re-signed at the highest seq there is,
            // keeping their targets, as the attack did.
            Some(writer) if writer == me => {
                let label = head.slot.as_str().rsplit('-').next().unwrap();
                let record = OwnedHead {
                    mailbox: mailbox.verifying_key(),
                    slot: owned_slot(&mailbox.verifying_key(), &me, label).unwrap(),
                    seq: u64::MAX,
                    target: head.target,
                    timestamp: Timestamp(1),
                    grant: head_grant(mailbox, &me),
                };
                let signed = SignedRecord::sign(&record, thief).unwrap();
                assert!(matches!(
                    relay.put_head(&signed).await.unwrap(),
                    HeadWrite::Stored
                ));
                out.frozen += 1;
            }
            // Another device's own slot: as an owned head signed by the
            // thief, and as a legacy head signed by the mailbox key.
            Some(_) => {
                for record in [
                    owned_raw(mailbox, thief, head.slot.clone(), u64::MAX),
                    legacy_raw(mailbox, &head.slot),
                ] {
                    match put_raw(relay, mailbox, &head.slot, &record).await {
                        400 => out.refused_others += 1,
                        _ => out.stored_others += 1,
                    }
                }
            }
            None => {}
        }
    }
    // Every legacy slot the previous release used, frozen with the mailbox
    // key (relays still take legacy heads outside owned slots).
    let target = heads.first().map_or(BlobId::of(b"x"), |h| h.target);
    let mut slots = vec!["identity".to_owned(), "snapshot".to_owned()];
    slots.extend(devices.iter().map(legacy_device_slot));
    for slot in slots {
        let head = legacy_head(mailbox, &slot, u64::MAX, target);
        assert!(matches!(
            relay.put_head(&head).await.unwrap(),
            HeadWrite::Stored
        ));
        out.frozen += 1;
    }
}

fn legacy_raw(mailbox: &SigningKey, slot: &Slot) -> SignedRecord {
    let head = HeadRecord {
        mailbox: mailbox.verifying_key(),
        slot: slot.clone(),
        seq: u64::MAX,
        target: BlobId::of(b"x"),
        timestamp: Timestamp(1),
    };
    SignedRecord::sign_raw(RecordKind::Head, head.to_payload(), mailbox).unwrap()
}

/// PUTs envelope bytes as they are; the status.
async fn put_raw(
    relay: &RelayClient,
    mailbox: &SigningKey,
    slot: &Slot,
    record: &SignedRecord,
) -> u16 {
    reqwest::Client::new()
        .put(format!(
            "{}/v1/heads/{}/{}",
            relay.url(),
            mailbox.verifying_key(),
            slot.as_str()
        ))
        .body(record.to_bytes())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_device_cannot_stop_its_revocation() {
    let (relays, laptop) = laptop_on_three_relays().await;
    let (desktop, phone) = (Device::new(), Device::new());
    for device in [&desktop, &phone] {
        let (approve, join) = pair(&laptop, device, &relays[0], false, "30").await;
        approve.json();
        join.json();
    }
    laptop
        .put_data("before", &data_with_marker(10_000, b"before"))
        .await;
    phone
        .put_data("phone's", &data_with_marker(10_000, b"phone's"))
        .await;
    for device in [&desktop, &phone] {
        device.run(&["sync"]).await.ok();
    }

    // The thief, with the phone in hand, freezes everything it can.
    let stolen = open(&phone);
    let vault = stolen.vault_keys().unwrap().pop().unwrap();
    let thief = stolen.device_signing_key().clone();
    let devices: Vec<VerifyingKey> = stolen
        .identity()
        .state()
        .devices()
        .keys()
        .copied()
        .collect();
    assert_eq!(devices.len(), 3);
    // (The pairing helper names every joiner "phone": the phone is named by
    // its key.)
    let phone_key = stolen.device_key().to_string();
    let http = reqwest::Client::new();
    let mut freeze_report = Freeze::default();
    for relay in &relays {
        let client = RelayClient::new(http.clone(), &relay.url(), relay.handle().key());
        let (mailbox, writer) = place(&vault, &thief, &relay.handle().key());
        freeze(&client, &mailbox, &writer, &devices, &mut freeze_report).await;
    }
    eprintln!("thief: {freeze_report:?}");
    // On each relay: the phone's own operations head and five legacy slots.
    assert!(freeze_report.frozen >= 3 * 6, "{freeze_report:?}");
    assert!(freeze_report.refused_others > 0, "{freeze_report:?}");
    assert_eq!(freeze_report.stored_others, 0, "{freeze_report:?}");

    // Before the revocation, a sync sees the frozen heads, and `doctor`
    // names the phone and fails.
    desktop.run(&["sync"]).await.ok();
    let doctor = desktop.run(&["doctor", "--json"]).await;
    assert_eq!(doctor.code, 1, "{doctor:?}");
    assert!(
        doctor.stdout.contains("signed heads or operations") && doctor.stdout.contains(&phone_key),
        "{doctor:?}"
    );

    // The laptop revokes the phone: no warning, no failure.
    let revoke = laptop
        .run(&["device", "revoke", &phone_key, "--json"])
        .await;
    assert_eq!(revoke.code, 0, "{revoke:?}");
    let revoked = revoke.json();
    assert_eq!(revoked["generation"], 2);
    assert_eq!(
        revoked["warnings"].as_array().map_or(0, Vec::len),
        0,
        "{revoked}"
    );

    // After the revocation, the thief branches the identity log off before
    // it, longer than the laptop's branch, and names its branch in its own
    // slot of the old mailbox, where the desktop still reads.
    let forked = fork_log(&stolen, &relays, &vault, 4).await;
    assert_eq!(forked, 3, "every relay took the thief's branch");

    // The desktop's next sync reports the revocation and the frozen slots,
    // and keeps the branch that revokes the phone.
    let sync = desktop.run(&["sync", "--json"]).await;
    assert_eq!(sync.code, 0, "{sync:?}");
    let report = sync.json();
    assert_eq!(
        report["revoked"][0]["device"],
        phone_key.as_str(),
        "{report}"
    );
    assert_eq!(report["vault_generation"], 2, "{report}");
    let list = desktop.run(&["device", "list", "--json"]).await.json();
    let keys: Vec<&str> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{list}");
    assert!(!keys.contains(&phone_key.as_str()), "{list}");
    assert_eq!(list["revoked"].as_array().unwrap().len(), 1, "{list}");
    let findings = desktop.run(&["status", "--json"]).await.json();
    let kinds: Vec<String> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.iter().any(|k| k == "implausible_head"),
        "the frozen slots are reported: {report} {findings}"
    );
    assert!(
        findings["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "forked_identity" && f["device"] == phone_key.as_str()),
        "the thief's branch is reported, naming the phone: {findings}"
    );
    // Once the phone is revoked, `doctor` no longer counts it as a suspect.
    let doctor = desktop.run(&["doctor", "--json"]).await;
    assert!(
        !doctor.stdout.contains("signed heads or operations"),
        "{doctor:?}"
    );

    // What the desktop stores next is sealed to generation 2, which the
    // phone's keys do not open.
    let id = desktop
        .put_data("after", &data_with_marker(10_000, b"after the revocation"))
        .await;
    let sealed = reqwest::get(format!("{}/v1/blobs/{id}", relays[1].url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let phone_keys: Vec<_> = stolen
        .vault_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.secret)
        .collect();
    assert!(cairn_client::seal::open_bytes(&sealed, &phone_keys).is_err());
    let desktop_keys: Vec<_> = open(&desktop)
        .vault_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.secret)
        .collect();
    assert!(cairn_client::seal::open_bytes(&sealed, &desktop_keys).is_ok());

    // The phone's later writes reach nobody: in the new mailbox the relays
    // refuse it (it has no grant there), and what it writes in the old one
    // no device reads.
    let new_vault = open(&desktop).vault_keys().unwrap().pop().unwrap();
    for relay in &relays {
        let new_mailbox = new_vault.mailbox_at(&relay.handle().key());
        let (mailbox, _) = place(&vault, &thief, &relay.handle().key());
        let forged = OwnedHead {
            mailbox: new_mailbox.verifying_key(),
            slot: owned_slot(&new_mailbox.verifying_key(), &thief.verifying_key(), "ops").unwrap(),
            seq: 1,
            target: BlobId::of(b"forged"),
            timestamp: Timestamp(1),
            grant: head_grant(&mailbox, &thief.verifying_key()),
        };
        let forged =
            SignedRecord::sign_raw(RecordKind::OwnedHead, forged.to_payload(), &thief).unwrap();
        let client = RelayClient::new(http.clone(), &relay.url(), relay.handle().key());
        let slot = Head::from_record(forged.clone()).map(|h| h.slot);
        assert!(slot.is_err(), "the forged grant does not verify");
        let status = put_raw(
            &client,
            &new_mailbox,
            &owned_slot(&new_mailbox.verifying_key(), &thief.verifying_key(), "ops").unwrap(),
            &forged,
        )
        .await;
        assert_eq!(status, 400);
    }
    // Refused as revoked, or stored where nobody reads: either way the
    // desktop does not list it.
    let src = phone.dir.path().join("from-the-thief");
    std::fs::write(&src, b"the thief's").unwrap();
    phone.run(&["put", src.to_str().unwrap()]).await;
    desktop.run(&["sync"]).await.ok();
    let ls = desktop.run(&["ls", "--json"]).await.json();
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != "from-the-thief"),
        "{ls}"
    );
}

/// An operation stamped far in the future does not win a merge: a device
/// (here a stolen one, before its revocation) that removes a file at clock
/// `u64::MAX` would otherwise shadow every later write of that name for
/// ever. The reader holds it and says so; the laptop's later write stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_stamped_far_ahead_does_not_win_a_merge() {
    use cairn_client::crdt::Change;
    use cairn_client::proto::Operation;
    use cairn_client::relay::{Role, sign_owned};

    let relay = Relay::start().await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&relay]).await;
    let phone = Device::new();
    let (approve, join) = pair(&laptop, &phone, &relay, false, "30").await;
    approve.json();
    join.json();
    phone.put_data("phone's", b"so that it has a log").await;

    // The phone's next operation: a removal of "doc", stamped 2^64-1.
    let stolen = open(&phone);
    let me = stolen.device_key();
    let vault = stolen.vault_keys().unwrap().pop().unwrap();
    let (mailbox, writer) = place(&vault, stolen.device_signing_key(), &relay.handle().key());
    let client = RelayClient::new(reqwest::Client::new(), &relay.url(), relay.handle().key());
    let (heads, _) = client.list_heads(&mailbox.verifying_key()).await.unwrap();
    let mine = heads
        .iter()
        .find(|h| h.signer == Some(writer.verifying_key()))
        .unwrap();
    // The relay holds its own copy of the phone's newest operation; the
    // signed link names the operation inside it.
    let bytes = client.fetch_bytes(&mine.target, 1 << 20).await.unwrap();
    let (core, _) = stolen
        .open_metadata_copy(&relay.handle().key(), &bytes)
        .expect("the relay's copy opens");
    let op = Operation {
        device: me,
        seq: mine.seq + 1,
        prev: Some(BlobId::of(&core)),
        clock: u64::MAX,
        body: Change::Remove { name: "doc".into() }.to_body(),
    };
    let signed = SignedRecord::sign(&op, stolen.device_signing_key()).unwrap();
    let (_, sealed) =
        cairn_client::seal::seal_bytes(&signed.to_bytes(), &vault.secret.public()).unwrap();
    let (id, sealed) = stolen
        .seal_metadata_copy(&relay.handle().key(), &sealed, Some(mine.target))
        .unwrap();
    client
        .put_bytes(
            &id,
            sealed.into(),
            &stolen.upload_key(&relay.handle().key()),
            0,
        )
        .await
        .unwrap();
    let head = sign_owned(
        &mailbox,
        &me,
        &writer,
        Role::Ops(me),
        op.seq,
        id,
        Timestamp(1),
    )
    .unwrap();
    assert!(matches!(
        client.put_head(&head).await.unwrap(),
        HeadWrite::Stored
    ));

    // The laptop writes "doc" afterwards, at its own (true) clock.
    laptop.put_data("doc", b"the laptop's document").await;
    let sync = laptop.run(&["sync", "--json"]).await;
    assert_eq!(sync.code, 0, "{sync:?}");
    let report = sync.json();
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "future_clock" && f["device"] == me.to_string()),
        "{report}"
    );
    let ls = laptop.run(&["ls", "--json"]).await.json();
    assert!(
        ls.as_array().unwrap().iter().any(|f| f["name"] == "doc"),
        "the held removal did not win: {ls}"
    );
    assert_eq!(laptop.get_data("doc").await, b"the laptop's document");
}

/// Appends `entries` preferred-relay entries, signed by the thief's device
/// key, to the log it held before its revocation, seals the branch to the
/// old vault key (`vault`) as a copy for each relay, and points its own
/// `id` slot of the old mailbox there at it. Returns how many relays took
/// the branch.
async fn fork_log(stolen: &Client, relays: &[Relay; 3], vault: &VaultKey, entries: usize) -> usize {
    use cairn_client::IdentityLog;
    use cairn_client::proto::{IdentityLogEntry, LogAction};
    use cairn_client::relay::{Role, sign_owned};

    let thief = stolen.device_signing_key();
    let mut seq = stolen.identity().state().last_seq();
    let mut prev = stolen.identity().state().head();
    let mut log = stolen.identity().entries().to_vec();
    for _ in 0..entries {
        seq += 1;
        let entry = IdentityLogEntry {
            seq,
            prev: Some(prev),
            action: LogAction::SetPreferredRelays { relays: Vec::new() },
        };
        let bytes = SignedRecord::sign(&entry, thief).unwrap().to_bytes();
        prev = BlobId::of(&bytes);
        log.push(bytes);
    }
    // The first entry is signed by the root key.
    let root = *SignedRecord::from_bytes(&log[0]).unwrap().signer();
    let branch = IdentityLog::verify(&root, log).unwrap();
    let mut stored = 0;
    for relay in relays {
        let key = relay.handle().key();
        let client = RelayClient::new(reqwest::Client::new(), &relay.url(), key);
        let (id, copy) = stolen.seal_log_copy(&branch, &key).unwrap();
        client
            .put_bytes(&id, copy.into(), &vault.owner_at(&key), 0)
            .await
            .unwrap();
        let (mailbox, writer) = place(vault, thief, &key);
        let head = sign_owned(
            &mailbox,
            &thief.verifying_key(),
            &writer,
            Role::Identity,
            seq,
            id,
            Timestamp(1),
        )
        .unwrap();
        assert!(matches!(
            client.put_head(&head).await.unwrap(),
            HeadWrite::Stored
        ));
        stored += 1;
    }
    stored
}

/// A stolen device fills the mailbox to its 1,024 slots on the relay
/// before the revocation. A root holder with no slot there is refused
/// before anything is committed; the laptop's own `id` slot exists already
/// (it wrote there when it created the identity), so its revocation, an
/// update of that slot, gets through, and the desktop learns of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_does_not_stop_the_revocation() {
    let relay = Relay::start().await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&relay]).await;
    let (desktop, phone) = (Device::new(), Device::new());
    for device in [&desktop, &phone] {
        let (approve, join) = pair(&laptop, device, &relay, false, "30").await;
        approve.json();
        join.json();
    }
    desktop.run(&["sync"]).await.ok();

    let stolen = open(&phone);
    let mailbox = stolen
        .vault_keys()
        .unwrap()
        .pop()
        .unwrap()
        .mailbox_at(&relay.handle().key());
    let client = RelayClient::new(reqwest::Client::new(), &relay.url(), relay.handle().key());
    let mut filled = 0;
    for i in 0.. {
        let head = legacy_head(&mailbox, &format!("junk-{i}"), 1, BlobId::of(b"junk"));
        match client.put_head(&head).await {
            Ok(HeadWrite::Stored) => filled += 1,
            Err(err) if err.code() == Some(ErrorCode::QuotaExceeded) => break,
            other => panic!("{other:?}"),
        }
    }
    eprintln!("thief filled {filled} slots");
    let (heads, _) = client.list_heads(&mailbox.verifying_key()).await.unwrap();
    assert_eq!(heads.len(), 1024);

    // The desktop, given the root key, never wrote a slot in this mailbox:
    // its revocation could not be announced there, so it is refused before
    // anything is committed, saying why.
    let phone_key = stolen.device_key().to_string();
    let root_file = laptop.dir.path().join("root.key");
    laptop
        .run(&["key", "export-root", root_file.to_str().unwrap()])
        .await
        .ok();
    let refused = desktop
        .run(&[
            "device",
            "revoke",
            &phone_key,
            "--root-key",
            root_file.to_str().unwrap(),
        ])
        .await;
    assert!(refused.err().contains("nothing was revoked"), "{refused:?}");
    let list = desktop.run(&["device", "list", "--json"]).await.json();
    assert!(list["revoked"].as_array().unwrap().is_empty(), "{list}");

    // The laptop has its slot there (it wrote it creating the identity).
    let revoke = laptop
        .run(&["device", "revoke", &phone_key, "--json"])
        .await;
    assert_eq!(revoke.code, 0, "{revoke:?}");
    let report = desktop.run(&["sync", "--json"]).await.json();
    assert_eq!(
        report["revoked"][0]["device"],
        phone_key.as_str(),
        "{report}"
    );
    assert_eq!(report["vault_generation"], 2, "{report}");
}

/// A stolen device points its own `id` slot at bytes that are no log copy
/// (it holds the vault key, so it can write there). The desktop reports
/// the slot, keeps its identity, and does not fetch the bytes again: its
/// next sync with nothing new is one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_log_copy_is_reported_once_and_not_fetched_again() {
    use cairn_client::relay::{Role, sign_owned};

    let relay = Relay::start().await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&relay]).await;
    let (desktop, phone) = (Device::new(), Device::new());
    for device in [&desktop, &phone] {
        let (approve, join) = pair(&laptop, device, &relay, false, "30").await;
        approve.json();
        join.json();
    }
    desktop.run(&["sync"]).await.ok();
    desktop.run(&["sync"]).await.ok();

    let stolen = open(&phone);
    let thief = stolen.device_signing_key();
    let vault = stolen.vault_keys().unwrap().pop().unwrap();
    let key = relay.handle().key();
    let (mailbox, writer) = place(&vault, thief, &key);
    let junk = data_with_marker(3_000, b"no log copy at all");
    let id = BlobId::of(&junk);
    let client = RelayClient::new(reqwest::Client::new(), &relay.url(), key);
    client
        .put_bytes(&id, junk.into(), &vault.owner_at(&key), 0)
        .await
        .unwrap();
    let head = sign_owned(
        &mailbox,
        &thief.verifying_key(),
        &writer,
        Role::Identity,
        9,
        id,
        Timestamp(1),
    )
    .unwrap();
    assert!(matches!(
        client.put_head(&head).await.unwrap(),
        HeadWrite::Stored
    ));

    let sync = desktop.run(&["sync", "--json"]).await;
    assert_eq!(sync.code, 0, "{sync:?}");
    let report = sync.json();
    assert!(
        report["findings"].as_array().unwrap().iter().any(|f| {
            f["kind"] == "implausible_head"
                && f["detail"].as_str().unwrap().contains(&id.to_string())
        }),
        "{report}"
    );
    let list = desktop.run(&["device", "list", "--json"]).await.json();
    assert_eq!(list["devices"].as_array().unwrap().len(), 3, "{list}");

    let before = relay.requests_answered().await;
    let again = desktop.run(&["sync", "--json"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        relay.requests_answered().await - before,
        1,
        "the forged copy is not fetched again"
    );
}
