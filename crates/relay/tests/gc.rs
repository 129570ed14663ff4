//! Retention: blobs accessed within the retention period stay; the rest go.
//! Time is a manual clock, so nothing here sleeps.

use cairn_proto::BlobId;
use cairn_testkit::key;
use reqwest::StatusCode;

use crate::common::{TestRelay, bytes};

#[tokio::test]
async fn gc_deletes_exactly_what_nobody_accessed_within_retention() {
    let relay = TestRelay::start_with(|c| c.retention = std::time::Duration::from_secs(100)).await;
    let alice = key("alice");
    // Large enough to be files, so the test can watch them go.
    let (read, written, ignored) = (
        bytes("read", 30_000),
        bytes("written", 30_000),
        bytes("ignored", 30_000),
    );
    for data in [&read, &written, &ignored] {
        assert_eq!(relay.put(&alice, data).await.status(), StatusCode::CREATED);
    }

    relay.clock.advance(60);
    // A GET, and a re-upload, each count as an access.
    assert_eq!(relay.get(&BlobId::of(&read)).await.status(), StatusCode::OK);
    assert_eq!(relay.put(&alice, &written).await.status(), StatusCode::OK);
    assert_eq!(relay.handle.run_gc().await.unwrap().deleted_blobs, 0);

    relay.clock.advance(60);
    // 120 s since `ignored` was touched; 60 s since the others.
    let report = relay.handle.run_gc().await.unwrap();
    assert_eq!(report.deleted_blobs, 1);
    assert_eq!(report.deleted_bytes, 30_000);
    assert_eq!(
        relay.get(&BlobId::of(&ignored)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(relay.get(&BlobId::of(&read)).await.status(), StatusCode::OK);
    assert_eq!(
        relay.get(&BlobId::of(&written)).await.status(),
        StatusCode::OK
    );
    assert_eq!(relay.files(), (0, 2), "the deleted blob's file is gone");

    // The reads just now were accesses too: nothing more is due for 100 s.
    relay.clock.advance(99);
    assert_eq!(relay.handle.run_gc().await.unwrap().deleted_blobs, 0);
    relay.clock.advance(2);
    assert_eq!(relay.handle.run_gc().await.unwrap().deleted_blobs, 2);
    assert_eq!(relay.files(), (0, 0));
    // `read` was served (and so cached in memory) a moment ago; once
    // collected it is not served from anywhere.
    assert_eq!(
        relay.get(&BlobId::of(&read)).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn access_times_survive_a_restart() {
    let dir_relay =
        TestRelay::start_with(|c| c.retention = std::time::Duration::from_secs(100)).await;
    let data = bytes("persist", 100);
    dir_relay.put(&key("alice"), &data).await;
    dir_relay.clock.advance(90);
    dir_relay.get(&BlobId::of(&data)).await;
    let mut config = dir_relay.config().clone();
    let TestRelay {
        handle,
        dir: _dir,
        clock,
        ..
    } = dir_relay;
    handle.shutdown().await;

    // Same data (directory or backends), same clock, a new
    // process-equivalent.
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.retention = std::time::Duration::from_secs(100);
    let handle = cairn_relay::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    clock.advance(50);
    // Created 140 s ago but read 50 s ago (flushed at shutdown): kept.
    assert_eq!(handle.run_gc().await.unwrap().deleted_blobs, 0);
    clock.advance(51);
    let report = handle.run_gc().await.unwrap();
    assert_eq!(report.deleted_blobs, 1, "{report:?}");
    handle.shutdown().await;
}

#[tokio::test]
async fn small_blobs_live_in_the_index_and_are_collected_too() {
    let relay = TestRelay::start_with(|c| c.retention = std::time::Duration::from_secs(100)).await;
    let small = bytes("small", 1000);
    let id = BlobId::of(&small);
    assert_eq!(
        relay.put(&key("alice"), &small).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(relay.files(), (0, 0), "a small blob makes no file");
    let got = relay.get(&id).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), small.as_slice());
    let ranged = relay
        .http
        .get(relay.blob_url(&id))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &small[10..20]);
    relay.clock.advance(101);
    assert_eq!(relay.handle.run_gc().await.unwrap().deleted_bytes, 1000);
    assert_eq!(relay.get(&id).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expiry_refunds_every_owner_of_a_blob() {
    let relay = TestRelay::start_with(|c| {
        c.retention = std::time::Duration::from_secs(100);
        c.limits.key_quota_bytes = 50_000;
        c.federation.replicas = 0;
    })
    .await;
    let (alice, bob) = (key("alice"), key("bob"));
    let shared = bytes("shared", 30_000);
    assert_eq!(
        relay.put(&alice, &shared).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        relay.claim(&bob, BlobId::of(&shared)).await.status(),
        StatusCode::OK
    );
    // Each has 20,000 bytes of quota left, not 30,000.
    for who in [&alice, &bob] {
        assert_eq!(
            relay.put(who, &bytes("too big", 30_000)).await.status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
    }
    relay.clock.advance(101);
    assert_eq!(relay.handle.run_gc().await.unwrap().deleted_blobs, 1);
    // Nobody owns the expired blob any more, and both have room again.
    for (who, name) in [(&alice, "alice"), (&bob, "bob")] {
        assert_eq!(
            relay.put(who, &bytes(name, 50_000)).await.status(),
            StatusCode::CREATED,
            "{name}"
        );
    }
}
