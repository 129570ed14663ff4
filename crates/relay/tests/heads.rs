//! Mailbox heads (PROTOCOL.md §7.7): compare-and-set on `seq`, refusals,
//! listing, durability, retention, and the bounds on how many are kept.

use std::time::Duration;

use cairn_proto::{
    BlobId, HeadRecord, OwnedHead, Record as _, RecordKind, SignedRecord, SigningKey, Slot,
    Timestamp, VerifyingKey, decode_base64url, head_grant, owned_slot,
};
use cairn_testkit::key;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{TestRelay, assert_error};

/// A head for `slot` of the mailbox `mailbox`, signed by it.
pub(crate) fn head(mailbox: &SigningKey, slot: &str, seq: u64) -> Vec<u8> {
    let record = record(&mailbox.verifying_key(), slot, seq);
    SignedRecord::sign(&record, mailbox).unwrap().to_bytes()
}

fn record(mailbox: &VerifyingKey, slot: &str, seq: u64) -> HeadRecord {
    HeadRecord {
        mailbox: *mailbox,
        slot: Slot::new(slot).unwrap(),
        seq,
        target: BlobId::of(format!("{slot}/{seq}").as_bytes()),
        timestamp: Timestamp(1_790_000_000_u64.saturating_add(seq)),
    }
}

pub(crate) fn seq_of(envelope: &[u8]) -> u64 {
    let envelope = SignedRecord::from_bytes(envelope).unwrap();
    envelope.verify::<HeadRecord>().unwrap().seq
}

impl TestRelay {
    fn head_url(&self, mailbox: &VerifyingKey, slot: &str) -> String {
        self.url(&format!("/v1/heads/{mailbox}/{slot}"))
    }

    async fn put_head_at(&self, url: String, body: Vec<u8>) -> reqwest::Response {
        self.http.put(url).body(body).send().await.unwrap()
    }

    pub(crate) async fn put_head(
        &self,
        mailbox: &SigningKey,
        slot: &str,
        seq: u64,
    ) -> reqwest::Response {
        let url = self.head_url(&mailbox.verifying_key(), slot);
        self.put_head_at(url, head(mailbox, slot, seq)).await
    }

    async fn get_head(&self, mailbox: &VerifyingKey, slot: &str) -> reqwest::Response {
        self.http
            .get(self.head_url(mailbox, slot))
            .send()
            .await
            .unwrap()
    }

    /// The envelopes `GET /v1/heads/{mailbox}` lists, decoded.
    async fn list_heads(&self, mailbox: &VerifyingKey) -> Vec<Vec<u8>> {
        let r = self
            .http
            .get(self.url(&format!("/v1/heads/{mailbox}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["heads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| decode_base64url(h.as_str().unwrap(), 1 << 16).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn a_newer_head_replaces_and_a_stale_one_gets_the_current() {
    let relay = TestRelay::start().await;
    let mailbox = key("mailbox");
    let mk = mailbox.verifying_key();

    let first = relay.put_head(&mailbox, "laptop", 5).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["mailbox"], mk.to_string());
    assert_eq!(body["slot"], "laptop");
    assert_eq!(body["seq"], 5);

    let newer = relay.put_head(&mailbox, "laptop", 7).await;
    assert_eq!(newer.status(), StatusCode::OK);
    assert_eq!(newer.json::<Value>().await.unwrap()["seq"], 7);

    // Equal and lower seqs are refused, showing the stored record.
    for seq in [7, 6, 0] {
        let body = assert_error(
            relay.put_head(&mailbox, "laptop", seq).await,
            StatusCode::CONFLICT,
            "stale_head",
        )
        .await;
        let current = decode_base64url(body["current"].as_str().unwrap(), 1 << 16).unwrap();
        assert_eq!(current, head(&mailbox, "laptop", 7));
    }

    let got = relay.get_head(&mk, "laptop").await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-type"], "application/octet-stream");
    assert_eq!(got.headers()["cache-control"], "no-store");
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        head(&mailbox, "laptop", 7).as_slice()
    );
}

#[tokio::test]
async fn heads_that_do_not_verify_or_match_the_path_are_refused() {
    let relay = TestRelay::start().await;
    let mailbox = key("mailbox");
    let mk = mailbox.verifying_key();
    let url = relay.head_url(&mk, "laptop");

    // Signed by another key than the mailbox it names.
    let forged = SignedRecord::sign_raw(
        RecordKind::Head,
        record(&mk, "laptop", 1).to_payload(),
        &key("mallory"),
    )
    .unwrap()
    .to_bytes();
    // A valid head of another mailbox, or of another slot.
    let other_mailbox = head(&key("other"), "laptop", 1);
    let other_slot = head(&mailbox, "phone", 1);
    // A tampered signature.
    let mut tampered = head(&mailbox, "laptop", 1);
    *tampered.last_mut().unwrap() ^= 1;
    // Another kind of record, validly signed by the mailbox key.
    let not_a_head = SignedRecord::sign(
        &cairn_testkit::token(
            &relay.key(),
            cairn_proto::Method::Get,
            cairn_proto::TokenTarget::Blob(BlobId::of(b"x")),
            1,
        ),
        &mailbox,
    )
    .unwrap()
    .to_bytes();
    for (what, body) in [
        ("wrong signer", forged),
        ("other mailbox", other_mailbox),
        ("other slot", other_slot),
        ("tampered", tampered),
        ("not a head", not_a_head),
        ("garbage", b"not an envelope".to_vec()),
        ("empty", Vec::new()),
    ] {
        let r = relay.put_head_at(url.clone(), body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
        assert_error(r, StatusCode::BAD_REQUEST, "bad_record").await;
    }

    // Malformed path components are refused before the body is looked at.
    let good = head(&mailbox, "laptop", 1);
    for path in [
        format!("/v1/heads/{mk}/a.b"),
        format!("/v1/heads/{mk}/{}", "s".repeat(65)),
        "/v1/heads/ed25519:AAAA/laptop".to_owned(),
        format!("/v1/heads/{}/laptop", BlobId::of(b"x")),
    ] {
        let r = relay.put_head_at(relay.url(&path), good.clone()).await;
        assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
        let r = relay.http.get(relay.url(&path)).send().await.unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let r = relay
        .http
        .get(relay.url("/v1/heads/not-a-key"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;

    // None of it was stored.
    assert_error(
        relay.get_head(&mk, "laptop").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(relay.list_heads(&mk).await.is_empty());
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_or_without_a_length() {
    let relay = TestRelay::start().await;
    let mk = key("mailbox").verifying_key();
    let url = relay.head_url(&mk, "laptop");
    let big = vec![0u8; 4097];
    let r = relay.put_head_at(url.clone(), big.clone()).await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;

    // Streamed without Content-Length, and far larger than the limit: the
    // relay stops reading once the body passes it.
    let chunks = (0..1024).map(|_| Ok::<_, std::io::Error>(vec![1u8; 1024]));
    let r = relay
        .http
        .put(url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
}

#[tokio::test]
async fn a_mailbox_lists_every_slot_and_only_its_own() {
    let relay = TestRelay::start().await;
    let mailbox = key("mailbox");
    let mk = mailbox.verifying_key();
    let neighbour = key("neighbour");
    // Slots in a scrambled order, using every kind of character allowed.
    let slots = ["phone", "Z", "laptop-2", "_", "0", "a_b-C9", "laptop"];
    for (i, slot) in slots.iter().enumerate() {
        let r = relay.put_head(&mailbox, slot, i as u64 + 1).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{slot}");
        relay.put_head(&neighbour, slot, 99).await;
    }
    relay.put_head(&mailbox, "phone", 50).await;

    let mut sorted: Vec<(&str, u64)> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, if *s == "phone" { 50 } else { i as u64 + 1 }))
        .collect();
    sorted.sort();
    let expected: Vec<Vec<u8>> = sorted
        .iter()
        .map(|(slot, seq)| head(&mailbox, slot, *seq))
        .collect();
    assert_eq!(relay.list_heads(&mk).await, expected);
    for (slot, seq) in sorted {
        let got = relay.get_head(&mk, slot).await;
        assert_eq!(
            got.bytes().await.unwrap().as_ref(),
            head(&mailbox, slot, seq).as_slice()
        );
    }

    // Unknown slots and mailboxes.
    assert_error(
        relay.get_head(&mk, "tablet").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(
        relay
            .list_heads(&key("nobody").verifying_key())
            .await
            .is_empty()
    );
    let r = relay
        .http
        .delete(relay.head_url(&mk, "phone"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_keep_the_highest_seq() {
    let relay = TestRelay::start().await;
    let mailbox = key("mailbox");
    let mk = mailbox.verifying_key();
    let url = relay.head_url(&mk, "laptop");
    // Seqs 1..=40 in a scrambled order, all in flight at once.
    let seqs: Vec<u64> = (0..40u64).map(|i| (i * 17) % 40 + 1).collect();
    let results: Vec<(u64, StatusCode, Value)> =
        futures_util::stream::iter(seqs.iter().map(|&seq| {
            let (http, url, body) = (
                relay.http.clone(),
                url.clone(),
                head(&mailbox, "laptop", seq),
            );
            async move {
                let r = http.put(url).body(body).send().await.unwrap();
                let status = r.status();
                (seq, status, r.json::<Value>().await.unwrap())
            }
        }))
        .buffer_unordered(40)
        .collect()
        .await;

    let created = results
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "exactly one PUT found the slot empty");
    for (seq, status, body) in &results {
        match *status {
            StatusCode::CREATED | StatusCode::OK => assert_eq!(body["seq"], *seq),
            StatusCode::CONFLICT => {
                // Refused only in favour of a head at least as new.
                let current = decode_base64url(body["current"].as_str().unwrap(), 1 << 16).unwrap();
                assert!(seq_of(&current) >= *seq, "{seq} lost to an older head");
            }
            other => panic!("unexpected status {other} for seq {seq}"),
        }
    }
    let accepted = results
        .iter()
        .filter(|(_, s, _)| s.is_success())
        .map(|(seq, _, _)| *seq);
    assert!(accepted.clone().any(|s| s == 40));
    let got = relay.get_head(&mk, "laptop").await;
    assert_eq!(seq_of(&got.bytes().await.unwrap()), 40);
}

#[tokio::test]
async fn acknowledged_heads_survive_a_restart_and_fsck() {
    let relay = TestRelay::start().await;
    let mailbox = key("mailbox");
    let mk = mailbox.verifying_key();
    for (slot, seq) in [("laptop", 3), ("phone", 9)] {
        assert_eq!(
            relay.put_head(&mailbox, slot, seq).await.status(),
            StatusCode::CREATED
        );
    }
    let blob = crate::common::bytes("beside", 100);
    relay.put(&key("alice"), &blob).await;
    let mut config = relay.config().clone();
    let TestRelay {
        handle, dir, clock, ..
    } = relay;
    handle.shutdown().await;

    // fsck checks blobs and leaves heads alone, repairing or not. (It
    // checks the embedded store; a scale-out store's index and bucket are
    // the database's and the object store's to keep.)
    let data = dir.path().join("data");
    if matches!(config.storage, cairn_relay::StorageConfig::Embedded) {
        for repair in [false, true] {
            let report = cairn_relay::fsck(&data, repair, clock.now().0).unwrap();
            assert!(report.is_clean(), "{report:?}");
            assert_eq!(report.indexed, 1);
        }
    }

    config.listen = "127.0.0.1:0".parse().unwrap();
    let handle = cairn_relay::start_with_clock(config, clock).await.unwrap();
    let http = cairn_testkit::http();
    let url = format!("{}/v1/heads/{mk}/laptop", handle.url());
    let got = http.get(url).send().await.unwrap();
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        head(&mailbox, "laptop", 3).as_slice()
    );
    // The stored seq survived too: an older head is still stale.
    let url = format!("{}/v1/heads/{mk}/phone", handle.url());
    let r = http
        .put(url)
        .body(head(&mailbox, "phone", 8))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::CONFLICT, "stale_head").await;
    let metrics = http
        .get(format!("{}/metrics", handle.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("\ncairn_heads_stored 2\n"), "{metrics}");
    // Heads are not blobs: the blob figures count the one blob only.
    assert!(metrics.contains("\ncairn_blobs_stored 1\n"), "{metrics}");
    assert!(metrics.contains("\ncairn_bytes_stored 100\n"), "{metrics}");
    handle.shutdown().await;
}

#[tokio::test]
async fn gc_deletes_heads_nobody_accessed_within_retention() {
    let relay = TestRelay::start_with(|c| c.retention = Duration::from_secs(100)).await;
    let mailbox = key("mailbox");
    let mk = mailbox.verifying_key();
    for slot in ["read", "written", "refused", "ignored"] {
        relay.put_head(&mailbox, slot, 1).await;
    }

    relay.clock.advance(60);
    // A GET, a newer PUT and a refused (stale) PUT each count as an access.
    assert_eq!(relay.get_head(&mk, "read").await.status(), StatusCode::OK);
    assert_eq!(
        relay.put_head(&mailbox, "written", 2).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        relay.put_head(&mailbox, "refused", 1).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(relay.handle.run_gc().await.unwrap().deleted_heads, 0);

    relay.clock.advance(60);
    // 120 s since `ignored` was touched; 60 s since the others.
    let report = relay.handle.run_gc().await.unwrap();
    assert_eq!(report.deleted_heads, 1);
    assert_eq!(report.deleted_blobs, 0);
    assert_error(
        relay.get_head(&mk, "ignored").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // The slot is empty again: a head of any seq is a first one.
    assert_eq!(
        relay.put_head(&mailbox, "ignored", 1).await.status(),
        StatusCode::CREATED
    );

    // Listing the mailbox reads (and so keeps) every head in it.
    relay.clock.advance(99);
    assert_eq!(relay.list_heads(&mk).await.len(), 4);
    relay.clock.advance(99);
    assert_eq!(relay.handle.run_gc().await.unwrap().deleted_heads, 0);
    relay.clock.advance(2);
    assert_eq!(relay.handle.run_gc().await.unwrap().deleted_heads, 4);
    assert!(relay.list_heads(&mk).await.is_empty());
}

#[tokio::test]
async fn new_slots_are_bounded_and_existing_ones_stay_writable() {
    let relay = TestRelay::start_with(|c| c.max_heads = 2).await;
    let (a, b) = (key("a"), key("b"));
    assert_eq!(
        relay.put_head(&a, "one", 1).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        relay.put_head(&b, "one", 1).await.status(),
        StatusCode::CREATED
    );
    assert_error(
        relay.put_head(&a, "two", 1).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "relay_full",
    )
    .await;
    assert_eq!(relay.put_head(&a, "one", 2).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_holds_at_most_1024_slots() {
    let relay = TestRelay::start().await;
    let mailbox = key("busy mailbox");
    let statuses: Vec<StatusCode> = futures_util::stream::iter((0..1024).map(|i| {
        let slot = format!("s{i}");
        let url = relay.head_url(&mailbox.verifying_key(), &slot);
        let (http, body) = (relay.http.clone(), head(&mailbox, &slot, 1));
        async move { http.put(url).body(body).send().await.unwrap().status() }
    }))
    .buffer_unordered(32)
    .collect()
    .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED));
    let body = assert_error(
        relay.put_head(&mailbox, "one-more", 1).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("1024"));
    // Existing slots take newer heads; other mailboxes are unaffected.
    assert_eq!(
        relay.put_head(&mailbox, "s7", 2).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        relay.put_head(&key("other"), "s0", 1).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(relay.list_heads(&mailbox.verifying_key()).await.len(), 1024);
}

#[tokio::test]
async fn head_routes_are_rate_limited_and_counted_by_route() {
    let relay = TestRelay::start_with(|c| c.limits.addr_requests_per_min = 4).await;
    let mailbox = key("mailbox");
    let mk = mailbox.verifying_key();
    assert_eq!(
        relay.put_head(&mailbox, "laptop", 1).await.status(),
        StatusCode::CREATED
    );
    relay.get_head(&mk, "laptop").await;
    relay.list_heads(&mk).await;
    relay.get_head(&mk, "phone").await;
    assert_error(
        relay.put_head(&mailbox, "laptop", 2).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;

    let relay = TestRelay::start().await;
    relay.put_head(&mailbox, "laptop", 1).await;
    relay.get_head(&mk, "laptop").await;
    relay.list_heads(&mk).await;
    let metrics = relay.get_text("/metrics").await;
    for series in [
        "cairn_http_requests_total{route=\"/v1/heads/{mailbox}/{slot}\",status=\"201\"} 1",
        "cairn_http_requests_total{route=\"/v1/heads/{mailbox}/{slot}\",status=\"200\"} 1",
        "cairn_http_requests_total{route=\"/v1/heads/{mailbox}\",status=\"200\"} 1",
        "cairn_heads_stored 1",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    // No label names a mailbox.
    assert!(!metrics.contains(&mk.to_string()));
}

/// An owned head (PROTOCOL.md §4.9) of `writer` for `label`, granted by
/// `grantor` (the mailbox key, unless a test forges it), signed raw so that
/// a test can send what the client's checks would stop.
fn owned(
    mailbox: &VerifyingKey,
    slot: &Slot,
    grantor: &SigningKey,
    writer: &SigningKey,
    seq: u64,
) -> Vec<u8> {
    let record = OwnedHead {
        mailbox: *mailbox,
        slot: slot.clone(),
        seq,
        target: BlobId::of(format!("{slot:?}/{seq}").as_bytes()),
        timestamp: Timestamp(1_790_000_000),
        grant: head_grant(grantor, &writer.verifying_key()),
    };
    SignedRecord::sign_raw(RecordKind::OwnedHead, record.to_payload(), writer)
        .unwrap()
        .to_bytes()
}

/// A writer keeps its own slot; every other holder of the mailbox key, a
/// stolen device included, is refused there, by either head form; a key
/// the mailbox key never granted is refused everywhere.
#[tokio::test]
async fn an_owned_slot_takes_heads_from_its_writer_alone() {
    let relay = TestRelay::start().await;
    let mailbox = key("mailbox");
    let mk = mailbox.verifying_key();
    let (laptop, thief, stranger) = (key("laptop"), key("stolen phone"), key("stranger"));
    let slot = owned_slot(&mk, &laptop.verifying_key(), "id").unwrap();
    let url = relay.head_url(&mk, slot.as_str());

    let first = relay
        .put_head_at(url.clone(), owned(&mk, &slot, &mailbox, &laptop, 3))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);

    // The thief holds the mailbox key, so it can grant itself; the slot is
    // still not its own.
    assert_error(
        relay
            .put_head_at(url.clone(), owned(&mk, &slot, &mailbox, &thief, u64::MAX))
            .await,
        StatusCode::BAD_REQUEST,
        "bad_record",
    )
    .await;
    // Nor can it use the legacy form, signed by the mailbox key.
    let legacy = record(&mk, slot.as_str(), u64::MAX);
    let legacy = SignedRecord::sign_raw(RecordKind::Head, legacy.to_payload(), &mailbox)
        .unwrap()
        .to_bytes();
    assert_error(
        relay.put_head_at(url.clone(), legacy).await,
        StatusCode::BAD_REQUEST,
        "bad_record",
    )
    .await;
    // A key without the mailbox's grant cannot open a slot of its own.
    let own = owned_slot(&mk, &stranger.verifying_key(), "id").unwrap();
    assert_error(
        relay
            .put_head_at(
                relay.head_url(&mk, own.as_str()),
                owned(&mk, &own, &stranger, &stranger, 1),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "bad_record",
    )
    .await;

    // The writer's head is untouched, and it moves on as before.
    let got = relay.get_head(&mk, slot.as_str()).await;
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        owned(&mk, &slot, &mailbox, &laptop, 3).as_slice()
    );
    let newer = relay
        .put_head_at(url.clone(), owned(&mk, &slot, &mailbox, &laptop, 4))
        .await;
    assert_eq!(newer.status(), StatusCode::OK);
    assert_error(
        relay
            .put_head_at(url, owned(&mk, &slot, &mailbox, &laptop, 4))
            .await,
        StatusCode::CONFLICT,
        "stale_head",
    )
    .await;
    assert_eq!(relay.list_heads(&mk).await.len(), 1);
}
