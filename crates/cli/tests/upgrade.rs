//! Identities made by earlier releases keep working after an upgrade
//! (PROTOCOL.md §9): one of revision 1, whose mailbox holds only legacy
//! heads signed by the mailbox key, and one of revision 2 (the shared
//! layout), which its next rotation moves to the per-relay layout.

use bytes::Bytes;
use cairn_client::proto::{BlobId, Operation, SignedRecord, encode_base64url};
use cairn_client::relay::{Head, HeadWrite, RelayClient, Role};
use cairn_client::{Client, Home, Passphrase};

use crate::common::{Device, PASSPHRASE, Relay, data_with_marker, legacy_head};

/// The laptop's identity and file, laid out on a fresh relay exactly as the
/// previous release left them: the same blobs, and legacy `identity` and
/// `d-<device>` heads only. A device recovered from the 24 words through
/// that relay finds the identity, merges the file table and reads the
/// file; its own first write is an owned head beside the legacy ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_of_the_previous_release_upgrades_without_loss() {
    let current = Relay::start().await;
    let laptop = Device::new();
    let created = laptop.init("laptop").await;
    let phrase = created["recovery_phrase"].as_str().unwrap().to_owned();
    laptop.make_previous_release();
    laptop.add_relays(&[&current]).await;
    let data = data_with_marker(30_000, b"stored by the previous release");
    let file = laptop.put_data("kept", &data).await;

    // What the laptop stored: its log, its operations, the file.
    let client = Client::open(Home::at(laptop.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    let vault = client.vault_keys().unwrap().pop().unwrap();
    let mailbox = vault.mailbox();
    let me = client.device_key();
    let http = reqwest::Client::new();
    let from = RelayClient::new(http.clone(), &current.url(), current.handle().key());
    let (heads, _) = from.list_heads(&mailbox.verifying_key()).await.unwrap();
    let ops = heads
        .iter()
        .find(|h| h.role() == Role::Ops(me))
        .expect("the laptop's operations head");
    let mut blobs: Vec<BlobId> = client
        .identity()
        .entries()
        .iter()
        .map(|e| BlobId::of(e))
        .collect();
    blobs.push(file.parse().unwrap());
    let mut next = Some(ops.target);
    while let Some(id) = next {
        blobs.push(id);
        let sealed = from.fetch_bytes(&id, 1 << 20).await.unwrap();
        let plain =
            cairn_client::seal::open_bytes(&sealed, std::slice::from_ref(&vault.secret)).unwrap();
        let op = SignedRecord::from_bytes(&plain)
            .unwrap()
            .verify::<Operation>()
            .unwrap();
        next = op.prev;
    }

    let legacy = Relay::start().await;
    let to = RelayClient::new(http, &legacy.url(), legacy.handle().key());
    let uploader = client.upload_key(&legacy.handle().key());
    for id in &blobs {
        let bytes = from.fetch_bytes(id, 1 << 20).await.unwrap();
        to.put_bytes(id, Bytes::from(bytes), &uploader, 0)
            .await
            .unwrap();
    }
    let device_slot = format!("d-{}", encode_base64url(&me.to_bytes()));
    for head in [
        legacy_head(
            &mailbox,
            "identity",
            client.identity().state().last_seq(),
            client.identity().state().head(),
        ),
        legacy_head(&mailbox, &device_slot, ops.seq, ops.target),
    ] {
        assert!(matches!(
            to.put_head(&head).await.unwrap(),
            HeadWrite::Stored
        ));
    }

    // A device recovered through that relay alone finds everything.
    let desk = recovered_through(&legacy.url(), &phrase).await;
    assert_eq!(desk.get_data("kept").await, data);

    // Its own writes go to owned slots, beside the legacy ones.
    desk.put_data("new", b"written after the upgrade").await;
    let (after, _) = to.list_heads(&mailbox.verifying_key()).await.unwrap();
    assert!(after.iter().any(|h| h.is_owned()), "{after:?}");
    assert_eq!(after.iter().filter(|h| !h.is_owned()).count(), 2);
}

/// An identity of revision 2 (the shared layout: one mailbox on every
/// relay, plain identity-log entries naming its devices) keeps working
/// after the upgrade, and the next rotation moves it to the per-relay
/// layout: the new mailboxes differ per relay, and what the relays hold
/// there names no device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_moves_an_identity_of_the_previous_release_to_per_relay_mailboxes() {
    let (a, b) = (Relay::start().await, Relay::start().await);
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.make_previous_release();
    laptop.add_relays(&[&a, &b]).await;
    laptop.run(&["config", "--replicas", "2"]).await.ok();
    let data = data_with_marker(20_000, b"kept across the move");
    laptop.put_data("kept", &data).await;
    let (desktop, phone) = (Device::new(), Device::new());
    for device in [&desktop, &phone] {
        let (approve, join) = crate::devices::pair(&laptop, device, &a, false, "30").await;
        approve.json();
        join.json();
    }
    desktop.run(&["sync"]).await.ok();
    assert_eq!(desktop.get_data("kept").await, data);

    // Before the rotation the relays hold the log in plain: the device
    // name is there for anyone to read, as the previous release left it.
    let client = Client::open(Home::at(laptop.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    let vault = client.vault_keys().unwrap().pop().unwrap();
    assert_eq!(
        client.mailbox_name_on(&a.handle().key()).unwrap(),
        vault.mailbox().verifying_key(),
        "still the shared mailbox"
    );
    let genesis = BlobId::of(&client.identity().entries()[0]);
    let plain = a.blob_status(&genesis.to_string()).await;
    assert_eq!(plain, 200);

    // The rotation.
    let phone_key = Client::open(Home::at(phone.home()), &Passphrase::new(PASSPHRASE))
        .unwrap()
        .device_key()
        .to_string();
    let revoke = laptop
        .run(&["device", "revoke", &phone_key, "--json"])
        .await;
    assert_eq!(revoke.code, 0, "{revoke:?}");
    assert_eq!(revoke.json()["generation"], 2);
    // The laptop let go of the plain entries it stored: with no other
    // owner, they are gone.
    for relay in [&a, &b] {
        assert_eq!(relay.blob_status(&genesis.to_string()).await, 404);
    }

    // The desktop follows it from the old shared mailbox into mailboxes
    // of its own on each relay.
    let sync = desktop.run(&["sync", "--json"]).await;
    assert_eq!(sync.code, 0, "{sync:?}");
    assert_eq!(sync.json()["vault_generation"], 2, "{sync:?}");
    let desk = Client::open(Home::at(desktop.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    let (on_a, on_b) = (
        desk.mailbox_name_on(&a.handle().key()).unwrap(),
        desk.mailbox_name_on(&b.handle().key()).unwrap(),
    );
    assert_ne!(on_a, on_b, "one mailbox per relay");
    let new_vault = desk.vault_keys().unwrap().pop().unwrap();
    assert_ne!(on_a, new_vault.mailbox().verifying_key());

    // Data flows both ways in the new layout.
    assert_eq!(desktop.get_data("kept").await, data);
    desktop
        .put_data("after", b"written in the per-relay layout")
        .await;
    laptop.run(&["sync"]).await.ok();
    assert_eq!(
        laptop.get_data("after").await,
        b"written in the per-relay layout"
    );

    // What the new mailbox on a holds names no device: every head there
    // is signed by a key no device has, and the log's copy is sealed.
    let relay = RelayClient::new(reqwest::Client::new(), &a.url(), a.handle().key());
    let (heads, _) = relay.list_heads(&on_a).await.unwrap();
    assert!(!heads.is_empty());
    let devices: Vec<_> = desk.identity().state().devices().keys().copied().collect();
    for head in &heads {
        assert!(!devices.contains(&head.signer.unwrap()), "{head:?}");
        let target = relay.fetch_bytes(&head.target, 1 << 20).await.unwrap();
        assert!(
            !contains(&target, b"laptop") && !contains(&target, b"phone"),
            "{head:?}"
        );
    }
}

/// An identity of the previous release need not wait for a revocation:
/// `cairn doctor` says the relays can read it, and `cairn key rotate`
/// moves it to the per-relay layout with every device still enrolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotate_moves_an_identity_of_the_previous_release_without_revoking() {
    let relay = Relay::start().await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.make_previous_release();
    laptop.add_relays(&[&relay]).await;
    laptop.put_data("kept", b"from the shared layout").await;
    let desktop = Device::new();
    let (approve, join) = crate::devices::pair(&laptop, &desktop, &relay, false, "30").await;
    approve.json();
    join.json();
    desktop.run(&["sync"]).await.ok();

    let layout = |run: &crate::common::Run| -> serde_json::Value {
        let findings = serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap();
        findings
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == "identity layout")
            .cloned()
            .unwrap_or_else(|| panic!("no layout finding: {run:?}"))
    };
    let before = laptop.run(&["doctor", "--json"]).await;
    let finding = layout(&before);
    assert_eq!(finding["status"], "warn", "{before:?}");
    assert!(
        finding["fix"]
            .as_str()
            .unwrap()
            .contains("cairn key rotate"),
        "{finding}"
    );
    let client = Client::open(Home::at(laptop.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    let genesis = BlobId::of(&client.identity().entries()[0]).to_string();
    assert_eq!(relay.blob_status(&genesis).await, 200);

    let rotate = laptop.run(&["key", "rotate", "--json"]).await;
    assert_eq!(rotate.json()["generation"], 2, "{rotate:?}");
    assert_eq!(
        layout(&laptop.run(&["doctor", "--json"]).await)["status"],
        "ok"
    );
    assert_eq!(
        relay.blob_status(&genesis).await,
        404,
        "the plain log is let go of"
    );

    // Both devices stay enrolled, and the desktop follows into the new
    // mailbox and reads what was stored before.
    let sync = desktop.run(&["sync", "--json"]).await;
    assert_eq!(sync.json()["vault_generation"], 2, "{sync:?}");
    assert_eq!(desktop.get_data("kept").await, b"from the shared layout");
    let desk = Client::open(Home::at(desktop.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    assert_eq!(desk.identity().state().devices().len(), 2);
    assert!(!desk.in_shared_layout());
}

/// An identity of the release before per-relay copies (revision 3 as it
/// first shipped: per-relay mailboxes, but operations stored as they are,
/// one id on every relay) keeps working: a device recovered through a
/// relay laid out that way merges the file table, and the upgraded laptop's
/// next operation there is that relay's own copy, linking back to the
/// plain operation before it, which the recovered device follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_stored_as_they_are_stay_readable_and_are_followed_by_copies() {
    let current = Relay::start().await;
    let laptop = Device::new();
    let created = laptop.init("laptop").await;
    let phrase = created["recovery_phrase"].as_str().unwrap().to_owned();
    laptop.add_relays(&[&current]).await;
    let data = data_with_marker(30_000, b"stored before copies");
    let file = laptop.put_data("kept", &data).await;
    let more = laptop.put_data("more", b"a second operation").await;

    // The relay `last` gets what the earlier release stored: the log's
    // copy, the file, and every operation's core as it is, the laptop's
    // head naming the newest core.
    let client = Client::open(Home::at(laptop.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    let me = client.device_key();
    let vault = client.vault_keys().unwrap().pop().unwrap();
    let http = reqwest::Client::new();
    let (a_key, last) = (current.handle().key(), Relay::start().await);
    let last_key = last.handle().key();
    let from = RelayClient::new(http.clone(), &current.url(), a_key);
    let to = RelayClient::new(http, &last.url(), last_key);
    let owner = vault.owner_at(&last_key);
    let (heads, _) = from
        .list_heads(&client.mailbox_name_on(&a_key).unwrap())
        .await
        .unwrap();
    // The laptop is the only writer there: its slots by their labels.
    let slot = |heads: &[Head], label: &str| -> Head {
        heads
            .iter()
            .find(|h| h.slot.as_str().ends_with(label))
            .cloned()
            .unwrap_or_else(|| panic!("no {label} head in {heads:?}"))
    };
    let ops = slot(&heads, "-ops");
    let id_head = slot(&heads, "-id");
    let (log_copy, bytes) = client.seal_log_copy(client.identity(), &last_key).unwrap();
    to.put_bytes(&log_copy, Bytes::from(bytes), &owner, 0)
        .await
        .unwrap();
    for file in [file, more] {
        let file: BlobId = file.parse().unwrap();
        let sealed_file = from.fetch_bytes(&file, 1 << 20).await.unwrap();
        to.put_bytes(&file, Bytes::from(sealed_file), &owner, 0)
            .await
            .unwrap();
    }
    let mut cores = Vec::new();
    let mut next = Some(ops.target);
    while let Some(at) = next {
        let copy = from.fetch_bytes(&at, 1 << 20).await.unwrap();
        let (core, prev) = client.open_metadata_copy(&a_key, &copy).expect("a copy");
        let id = BlobId::of(&core);
        to.put_bytes(&id, Bytes::from(core), &owner, 0)
            .await
            .unwrap();
        cores.push(id);
        next = prev;
    }
    assert_eq!(cores.len(), 2);
    for head in [
        client
            .sign_head_on(&last_key, Role::Identity, id_head.seq, log_copy)
            .unwrap(),
        client
            .sign_head_on(&last_key, Role::Ops(me), ops.seq, cores[0])
            .unwrap(),
    ] {
        assert!(matches!(
            to.put_head(&head).await.unwrap(),
            HeadWrite::Stored
        ));
    }

    // A device recovered through that relay alone reads it all.
    let desk = recovered_through(&last.url(), &phrase).await;
    assert_eq!(desk.get_data("kept").await, data);
    assert_eq!(desk.get_data("more").await, b"a second operation");

    // The upgraded laptop writes there: a copy of its own, linking to the
    // plain core before it.
    laptop.add_relays(&[&last]).await;
    laptop.put_data("third", b"written after the upgrade").await;
    let mailbox = client.mailbox_name_on(&last_key).unwrap();
    let (after, _) = to.list_heads(&mailbox).await.unwrap();
    let head = slot(&after, "-ops");
    assert_eq!(head.seq, 3);
    let newest = to.fetch_bytes(&head.target, 1 << 20).await.unwrap();
    let (_, prev) = client
        .open_metadata_copy(&last_key, &newest)
        .expect("the new operation is the relay's own copy");
    assert_eq!(prev, Some(cores[0]));
    let sync = desk.run(&["sync", "--json"]).await;
    assert_eq!(sync.code, 0, "{sync:?}");
    assert_eq!(desk.get_data("third").await, b"written after the upgrade");
}

/// A new device "desk" recovered from `phrase` through the relay at `url`
/// alone, and synced.
async fn recovered_through(url: &str, phrase: &str) -> Device {
    let desk = Device::new();
    let recover = desk
        .run_with(
            &["init", "--recover", "--relay", url, "--name", "desk"],
            &[("CAIRN_RECOVERY_PHRASE", phrase)],
        )
        .await;
    assert_eq!(recover.code, 0, "{recover:?}");
    let sync = desk.run(&["sync", "--json"]).await;
    assert_eq!(sync.code, 0, "{sync:?}");
    desk
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
