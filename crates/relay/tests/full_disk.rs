//! A relay on a filesystem of its own that fills up: a tmpfs with a size
//! limit, mounted by the test. Mounting needs root; elsewhere the test says
//! why it skipped.

use cairn_proto::{BlobId, Method};
use cairn_testkit::{SmallDisk, key};
use reqwest::StatusCode;

use crate::common::{TestRelay, assert_error, bytes, suite_backend_is_scale_out};

impl TestRelay {
    async fn upload(&self, data: &[u8]) -> reqwest::Response {
        self.put(&key("alice"), data).await
    }

    async fn delete_blob(&self, id: BlobId) -> StatusCode {
        self.http
            .delete(self.blob_url(&id))
            .header(
                "authorization",
                self.auth(&key("alice"), Method::Delete, id),
            )
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test]
async fn a_full_disk_refuses_uploads_keeps_serving_and_recovers() {
    if suite_backend_is_scale_out() {
        eprintln!("skipped: blob bodies are in the object store in the scale-out run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(dir.path(), "48m") {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let data_dir = disk.path().join("data");
    let relay = TestRelay::start_with(|c| {
        c.data_dir = data_dir.clone();
        // The disk, not the configured capacity, is what runs out here.
        c.capacity_bytes = 1 << 40;
        c.disk_reserve_bytes = 8 << 20;
        c.limits.key_quota_bytes = 0;
    })
    .await;

    // Distinct 1 MiB blobs until the relay says it is full.
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 0..100 {
        let data = bytes(&format!("fill {i}"), 1 << 20);
        let response = relay.upload(&data).await;
        if response.status() == StatusCode::CREATED {
            stored.push(data);
        } else {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a 48 MB disk took 100 MB of blobs");
    assert_error(refused, StatusCode::INSUFFICIENT_STORAGE, "relay_full").await;
    assert!(stored.len() >= 20, "only {} blobs fit", stored.len());

    // Something else fills the rest of the disk: even small uploads are
    // refused cleanly, and everything acknowledged still reads back whole.
    let filler = disk.fill("filler");
    let small = bytes("small after full", 2_000);
    assert_error(
        relay.upload(&small).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "relay_full",
    )
    .await;
    for data in &stored {
        let got = relay.get(&BlobId::of(data)).await;
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    // Deleting works on a full disk (it is how space comes back).
    let gone = stored.pop().unwrap();
    assert_eq!(
        relay.delete_blob(BlobId::of(&gone)).await,
        StatusCode::NO_CONTENT
    );

    // Space comes back: uploads resume.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(relay.upload(&small).await.status(), StatusCode::CREATED);
    let again = bytes("large after full", 1 << 20);
    assert_eq!(relay.upload(&again).await.status(), StatusCode::CREATED);
    stored.push(again);

    // Nothing was corrupted: a restart serves everything, and fsck agrees.
    let relay = relay.stop().await.start(&[]).await;
    for data in &stored {
        let got = relay.get(&BlobId::of(data)).await;
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    drop(relay.stop().await);
    let report = cairn_relay::fsck(&data_dir, false, cairn_testkit::unix_now()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.indexed, stored.len() as u64 + 1);
}
