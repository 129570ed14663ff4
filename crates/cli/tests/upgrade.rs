//! An identity made by the previous release (PROTOCOL.md revision 1, §9),
//! whose mailbox holds only legacy heads signed by the mailbox key, keeps
//! working after an upgrade.

use bytes::Bytes;
use cairn_client::proto::{BlobId, Operation, SignedRecord, encode_base64url};
use cairn_client::relay::{HeadWrite, RelayClient, Role};
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
    let desk = Device::new();
    let recover = desk
        .run_with(
            &[
                "init",
                "--recover",
                "--relay",
                &legacy.url(),
                "--name",
                "desk",
            ],
            &[("CAIRN_RECOVERY_PHRASE", &phrase)],
        )
        .await;
    assert_eq!(recover.code, 0, "{recover:?}");
    let sync = desk.run(&["sync", "--json"]).await;
    assert_eq!(sync.code, 0, "{sync:?}");
    assert_eq!(desk.get_data("kept").await, data);

    // Its own writes go to owned slots, beside the legacy ones.
    desk.put_data("new", b"written after the upgrade").await;
    let (after, _) = to.list_heads(&mailbox.verifying_key()).await.unwrap();
    assert!(after.iter().any(|h| h.is_owned()), "{after:?}");
    assert_eq!(after.iter().filter(|h| !h.is_owned()).count(), 2);
}
