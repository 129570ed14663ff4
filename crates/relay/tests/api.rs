//! The HTTP API against a real relay: every success path and every refusal,
//! each with its exact status and error code.

use cairn_proto::{BlobId, Method, RelayInfo, SignedRecord, TokenTarget};
use cairn_testkit::{auth_header, key, token};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{TestRelay, assert_error, bytes, info_document};

#[tokio::test]
async fn upload_download_and_reupload() {
    let relay = TestRelay::start().await;
    let alice = key("alice");
    let data = bytes("blob", 300_000);
    let id = BlobId::of(&data);

    assert_eq!(relay.put(&alice, &data).await.status(), StatusCode::CREATED);
    let got = relay.get(&id).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["etag"], format!("\"{id}\"").as_str());
    assert_eq!(got.headers()["content-length"], "300000");
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());

    let head = relay.http.head(relay.blob_url(&id)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "300000");

    // Same bytes again, even from another key: 200, still one copy.
    assert_eq!(relay.put(&key("bob"), &data).await.status(), StatusCode::OK);
    assert_eq!(relay.files(), (0, 1));

    // A small blob (served from memory) and an empty one.
    for data in [b"tiny".to_vec(), Vec::new()] {
        let id = BlobId::of(&data);
        assert_eq!(relay.put(&alice, &data).await.status(), StatusCode::CREATED);
        assert_eq!(
            relay.get(&id).await.bytes().await.unwrap().as_ref(),
            data.as_slice()
        );
    }
}

#[tokio::test]
async fn ranges() {
    let relay = TestRelay::start().await;
    let data = bytes("ranged", 200_000);
    let id = BlobId::of(&data);
    relay.put(&key("alice"), &data).await;
    for (header, start, end) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=100000-", 100_000, 199_999),
        ("bytes=-5", 199_995, 199_999),
        ("bytes=199990-300000", 199_990, 199_999),
    ] {
        let r = relay
            .http
            .get(relay.blob_url(&id))
            .header("range", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{header}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{end}/200000").as_str()
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[start..=end]);
    }
    for bad in ["bytes=200000-", "bytes=5-1", "bytes=0-1,4-5"] {
        let r = relay
            .http
            .get(relay.blob_url(&id))
            .header("range", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-range"], "bytes */200000");
        assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "bad_range").await;
    }
}

#[tokio::test]
async fn only_the_owner_deletes_and_deleted_blobs_are_gone() {
    let relay = TestRelay::start().await;
    let (alice, mallory) = (key("alice"), key("mallory"));
    let data = bytes("mine", 5000);
    let id = BlobId::of(&data);
    relay.put(&alice, &data).await;

    assert_error(
        relay.delete(&mallory, id).await,
        StatusCode::FORBIDDEN,
        "not_owner",
    )
    .await;
    assert_eq!(relay.get(&id).await.status(), StatusCode::OK);

    assert_eq!(
        relay.delete(&alice, id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_error(relay.get(&id).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(relay.files(), (0, 0), "the file is removed, space is freed");
    assert_error(
        relay.delete(&alice, id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

/// The `cairn-owners-left` header of a successful delete.
fn owners_left(response: &reqwest::Response) -> u64 {
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    response.headers()["cairn-owners-left"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn claimed(response: reqwest::Response) -> bool {
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["claimed"]
        .as_bool()
        .unwrap()
}

#[tokio::test]
async fn a_blob_stays_until_its_last_owner_deletes_it() {
    let relay = TestRelay::start().await;
    let (laptop, phone, thief) = (key("laptop"), key("phone"), key("thief"));
    let data = bytes("shared", 30_000);
    let id = BlobId::of(&data);
    assert_error(
        relay.claim(&phone, id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    relay.put(&laptop, &data).await;
    assert!(claimed(relay.claim(&phone, id).await).await);
    assert!(
        !claimed(relay.claim(&phone, id).await).await,
        "once is enough"
    );
    assert!(
        !claimed(relay.claim(&laptop, id).await).await,
        "the uploader owns it"
    );

    // A stolen laptop deletes: its claim goes, the phone's keeps the blob,
    // across a restart too.
    assert_eq!(owners_left(&relay.delete(&laptop, id).await), 1);
    assert_error(
        relay.delete(&laptop, id).await,
        StatusCode::FORBIDDEN,
        "not_owner",
    )
    .await;
    assert_error(
        relay.delete(&thief, id).await,
        StatusCode::FORBIDDEN,
        "not_owner",
    )
    .await;
    let relay = relay.stop().await.start(&[]).await;
    assert_eq!(relay.get(&id).await.bytes().await.unwrap(), data);

    // Uploading the same bytes again claims them as well.
    assert_eq!(relay.put(&laptop, &data).await.status(), StatusCode::OK);
    assert_eq!(owners_left(&relay.delete(&phone, id).await), 1);
    assert_eq!(relay.get(&id).await.status(), StatusCode::OK);
    assert_eq!(owners_left(&relay.delete(&laptop, id).await), 0);
    assert_error(relay.get(&id).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        relay.files(),
        (0, 0),
        "the last owner's delete frees the space"
    );

    // A large upload of a held blob is answered without its body, and
    // claims it all the same.
    let large = bytes("large", 300 << 10);
    let large_id = BlobId::of(&large);
    assert_eq!(
        relay.put(&laptop, &large).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(relay.put(&phone, &large).await.status(), StatusCode::OK);
    assert_eq!(owners_left(&relay.delete(&laptop, large_id).await), 1);
    assert_eq!(relay.get(&large_id).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_blob_has_at_most_64_owners() {
    let relay = TestRelay::start().await;
    let data = bytes("popular", 1000);
    let id = BlobId::of(&data);
    relay.put(&key("owner 0"), &data).await;
    for n in 1..64 {
        assert!(claimed(relay.claim(&key(&format!("owner {n}")), id).await).await);
    }
    let late = key("owner 64");
    let late_claim = relay.auth(&late, Method::Post, id);
    let claim_with_late_token = || {
        relay
            .http
            .post(relay.blob_url(&id))
            .header("authorization", &late_claim)
            .send()
    };
    assert_error(
        claim_with_late_token().await.unwrap(),
        StatusCode::CONFLICT,
        "too_many_owners",
    )
    .await;
    // Uploading the bytes again is still acknowledged, without a claim.
    assert_eq!(relay.put(&late, &data).await.status(), StatusCode::OK);
    assert_error(
        relay.delete(&late, id).await,
        StatusCode::FORBIDDEN,
        "not_owner",
    )
    .await;
    // An owner that lets go makes room.
    assert_eq!(owners_left(&relay.delete(&key("owner 7"), id).await), 63);
    // The refused claim recorded an access, so its token was spent
    // (PROTOCOL §7.2): sent again now that there is room, it is refused.
    assert_error(
        claim_with_late_token().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;
    assert!(claimed(relay.claim(&late, id).await).await);
}

#[tokio::test]
async fn every_owner_pays_for_what_it_claims() {
    let relay = TestRelay::start_with(|c| {
        c.limits.key_quota_bytes = 50_000;
        c.federation.replicas = 0;
    })
    .await;
    let (alice, bob) = (key("alice"), key("bob"));
    let (a, b) = (bytes("a", 30_000), bytes("b", 30_000));
    let (a_id, b_id) = (BlobId::of(&a), BlobId::of(&b));
    assert_eq!(relay.put(&alice, &a).await.status(), StatusCode::CREATED);
    assert_eq!(relay.put(&bob, &b).await.status(), StatusCode::CREATED);
    // Bob's 30,000 bytes and Alice's 30,000 would take him past 50,000,
    // whether he claims or uploads them.
    assert_error(
        relay.claim(&bob, a_id).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    assert_error(
        relay.put(&bob, &a).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    assert_error(
        relay.delete(&bob, a_id).await,
        StatusCode::FORBIDDEN,
        "not_owner",
    )
    .await;
    // Once his own blob is gone, he can.
    assert_eq!(owners_left(&relay.delete(&bob, b_id).await), 0);
    assert!(claimed(relay.claim(&bob, a_id).await).await);
    // Alice's delete refunds her: she has room for 40,000 bytes again.
    assert_eq!(owners_left(&relay.delete(&alice, a_id).await), 1);
    assert_eq!(
        relay.put(&alice, &bytes("a2", 40_000)).await.status(),
        StatusCode::CREATED
    );
    // Bob's claim holds his quota until he lets go.
    assert_error(
        relay.put(&bob, &bytes("b2", 30_000)).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    assert_eq!(owners_left(&relay.delete(&bob, a_id).await), 0);
    assert_eq!(
        relay.put(&bob, &bytes("b2", 30_000)).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn every_token_refusal_has_its_code() {
    let relay = TestRelay::start().await;
    let alice = key("alice");
    let data = bytes("authz", 1000);
    let id = BlobId::of(&data);
    let now = relay.now();
    let put = |header: Option<String>| {
        let mut req = relay.http.put(relay.blob_url(&id)).body(data.clone());
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        req.send()
    };
    let signed = |audience, method, target, expires| {
        auth_header(&token(&audience, method, target, expires), &alice)
    };

    let cases = [
        (None, StatusCode::UNAUTHORIZED, "bad_token"),
        (
            Some("Bearer abc".to_owned()),
            StatusCode::UNAUTHORIZED,
            "bad_token",
        ),
        (
            Some("Cairn !!!".to_owned()),
            StatusCode::UNAUTHORIZED,
            "bad_token",
        ),
        (
            Some(signed(
                relay.key(),
                Method::Put,
                TokenTarget::Blob(id),
                now - 120,
            )),
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
        (
            Some(signed(
                relay.key(),
                Method::Put,
                TokenTarget::Blob(id),
                now + 3600,
            )),
            StatusCode::UNAUTHORIZED,
            "token_lifetime",
        ),
        (
            Some(signed(
                key("other relay").verifying_key(),
                Method::Put,
                TokenTarget::Blob(id),
                now + 60,
            )),
            StatusCode::FORBIDDEN,
            "wrong_audience",
        ),
        (
            Some(signed(
                relay.key(),
                Method::Delete,
                TokenTarget::Blob(id),
                now + 60,
            )),
            StatusCode::FORBIDDEN,
            "wrong_method",
        ),
        (
            Some(signed(
                relay.key(),
                Method::Put,
                TokenTarget::Blob(BlobId::of(b"other")),
                now + 60,
            )),
            StatusCode::FORBIDDEN,
            "wrong_target",
        ),
    ];
    for (header, status, code) in cases {
        assert_error(put(header).await.unwrap(), status, code).await;
    }

    // A token whose signature was tampered with.
    let good = signed(relay.key(), Method::Put, TokenTarget::Blob(id), now + 60);
    let mut raw = SignedRecord::from_base64url(good.trim_start_matches("Cairn "))
        .unwrap()
        .to_bytes();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let forged = format!("Cairn {}", cairn_proto::encode_base64url(&raw));
    assert_error(
        put(Some(forged)).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "bad_token",
    )
    .await;

    // Nothing above stored anything.
    assert_eq!(relay.files(), (0, 0));

    // The good token works once; its replay is refused.
    assert_eq!(
        put(Some(good.clone())).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_error(
        put(Some(good)).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;
}

#[tokio::test]
async fn a_hash_mismatch_keeps_nothing() {
    let relay = TestRelay::start().await;
    let alice = key("alice");
    let claimed = BlobId::of(b"what the client claims");
    let r = relay
        .http
        .put(relay.blob_url(&claimed))
        .header("authorization", relay.auth(&alice, Method::Put, claimed))
        .body(bytes("something else", 100_000))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch").await;
    assert_eq!(relay.files(), (0, 0));
    assert_error(
        relay.get(&claimed).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_keep_nothing_with_or_without_a_length() {
    let relay = TestRelay::start_with(|c| c.max_blob_size = 1024).await;
    let alice = key("alice");
    let data = bytes("big", 4096);
    let id = BlobId::of(&data);
    assert_error(
        relay.put(&alice, &data).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;

    // Streamed without Content-Length: refused once it grows past the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let r = relay
        .http
        .put(relay.blob_url(&id))
        .header("authorization", relay.auth(&alice, Method::Put, id))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    assert_eq!(relay.files(), (0, 0));
}

#[tokio::test]
async fn bad_ids_and_unknown_paths() {
    let relay = TestRelay::start().await;
    for bad in [
        "abc",
        "AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262",
    ] {
        let r = relay
            .http
            .get(relay.url(&format!("/v1/blobs/{bad}")))
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "bad_blob_id").await;
    }
    let r = relay
        .http
        .get(relay.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let id = BlobId::of(b"x");
    let r = relay.http.patch(relay.blob_url(&id)).send().await.unwrap();
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn a_full_relay_refuses_with_its_peers_and_quotas_hold() {
    // One peer with room, one that cannot be reached: only the first is
    // offered to refused clients.
    let roomy = TestRelay::start().await;
    let unreachable = key("unreachable peer").verifying_key();
    let peer = roomy.key();
    let relay = TestRelay::start_with(|c| {
        c.capacity_bytes = 100_000;
        c.limits.key_quota_bytes = 60_000;
        c.federation.replicas = 0;
        c.peers = vec![
            cairn_proto::RelayRef {
                url: cairn_proto::RelayUrl::new("http://127.0.0.1:9").unwrap(),
                key: unreachable,
            },
            roomy.as_peer(),
        ];
    })
    .await;
    relay.handle.refresh_peers().await;
    let (alice, bob) = (key("alice"), key("bob"));
    assert_eq!(
        relay.put(&alice, &bytes("a1", 50_000)).await.status(),
        StatusCode::CREATED
    );
    // Alice's second blob would take her past her quota.
    assert_error(
        relay.put(&alice, &bytes("a2", 20_000)).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    assert_eq!(
        relay.put(&bob, &bytes("b1", 40_000)).await.status(),
        StatusCode::CREATED
    );
    // 9,000 of 10,000 bytes used: no room for 2,000 more.
    let body = assert_error(
        relay.put(&bob, &bytes("b2", 20_000)).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "relay_full",
    )
    .await;
    assert_eq!(body["peers"][0]["key"], peer.to_string());
    assert_eq!(body["peers"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(relay.files(), (0, 2));
}

async fn info(relay: &TestRelay) -> (RelayInfo, Value) {
    let (info, body) = info_document(&relay.http, &relay.url("")).await;
    assert_eq!(info.relay, relay.key());
    (info, body)
}

#[tokio::test]
async fn the_info_document_is_signed_and_tells_the_truth() {
    let relay = TestRelay::start_with(|c| {
        c.capacity_bytes = 1 << 20;
        c.retention = std::time::Duration::from_secs(7 * 86_400);
        c.limits.key_quota_bytes = 1 << 19;
    })
    .await;
    let (before, _) = info(&relay).await;
    assert_eq!(before.relay, relay.key());
    assert_eq!(before.capacity_total, 1 << 20);
    assert_eq!(before.capacity_used, 0);
    assert_eq!(before.retention_secs, 7 * 86_400);
    assert_eq!(before.limits.key_quota_bytes, 1 << 19);

    let alice = key("alice");
    let a = bytes("a", 1000);
    relay.put(&alice, &a).await;
    relay.put(&alice, &bytes("b", 2000)).await;
    let (after, body) = info(&relay).await;
    assert_eq!(after.capacity_used, 3000);
    assert_eq!(after.capacity_free, (1 << 20) - 3000);
    assert_eq!(body["info"]["capacity_used"], 3000);

    relay.delete(&alice, BlobId::of(&a)).await;
    let (deleted, _) = info(&relay).await;
    assert_eq!(deleted.capacity_used, 2000);
}

#[tokio::test]
async fn metrics_parse_and_move() {
    let relay = TestRelay::start().await;
    let scrape = || async { relay.get_text("/metrics").await };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |v| v.parse().unwrap())
    };
    let before = scrape().await;
    // Every non-comment line is `name{labels} value` with a numeric value.
    for line in before.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample line {line:?}"));
    }
    let data = bytes("m", 10_000);
    relay.put(&key("alice"), &data).await;
    relay.get(&BlobId::of(&data)).await.bytes().await.unwrap();
    let after = scrape().await;
    let put = "cairn_http_requests_total{route=\"/v1/blobs/{id}\",status=\"201\"}";
    assert_eq!(value(&before, put), 0.0);
    assert_eq!(value(&after, put), 1.0);
    assert_eq!(value(&after, "cairn_bytes_received_total"), 10_000.0);
    assert_eq!(value(&after, "cairn_bytes_sent_total"), 10_000.0);
    assert_eq!(value(&after, "cairn_blobs_stored"), 1.0);
    assert_eq!(value(&after, "cairn_upload_duration_seconds_count"), 1.0);
    // No label names a key, a blob or an address.
    assert!(!after.contains(&BlobId::of(&data).to_string()));
}

#[tokio::test]
async fn health_and_status_page() {
    let relay = TestRelay::start().await;
    let health: Value = relay
        .http
        .get(relay.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let page = relay.get_text("/").await;
    assert!(page.contains(&relay.key().to_string()));
}

/// A peer that cannot be reached is shown once as such on the status page,
/// not as "unreachable: unreachable: …".
#[tokio::test]
async fn the_status_page_says_once_why_a_peer_is_unreachable() {
    let relay = TestRelay::start_with(|c| {
        c.federation.replicas = 0;
        c.peers = vec![cairn_proto::RelayRef {
            url: cairn_proto::RelayUrl::new("http://127.0.0.1:9").unwrap(),
            key: key("gone").verifying_key(),
        }];
    })
    .await;
    relay.handle.refresh_peers().await;
    let page = relay.get_text("/").await;
    // Once, in words: not the HTTP library's chain of causes.
    assert_eq!(
        page.matches("unreachable (connection refused)").count(),
        1,
        "{page}"
    );
    assert_eq!(page.matches("unreachable").count(), 1, "{page}");
    assert!(!page.contains("error sending request"), "{page}");
}

#[tokio::test]
async fn per_key_rate_limit_refuses_with_retry_after_and_is_disclosed() {
    let relay = TestRelay::start_with(|c| c.limits.key_requests_per_min = 3).await;
    let (info, _) = info(&relay).await;
    assert_eq!(info.limits.key_requests_per_min, 3);
    let alice = key("alice");
    for i in 0..3 {
        assert_eq!(
            relay
                .put(&alice, &bytes(&format!("r{i}"), 10))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let refused = relay.put(&alice, &bytes("r3", 10)).await;
    assert!(refused.headers().contains_key("retry-after"));
    let body = assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key_requests_per_min")
    );
    // Another key is not affected.
    assert_eq!(
        relay.put(&key("bob"), &bytes("b", 10)).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn per_address_rate_limit_refuses_and_spares_health_checks() {
    let relay = TestRelay::start_with(|c| c.limits.addr_requests_per_min = 5).await;
    for _ in 0..4 {
        relay.get(&BlobId::of(b"absent")).await;
    }
    // The info document costs a request too, and discloses the limit.
    let (info, _) = info(&relay).await;
    assert_eq!(info.limits.addr_requests_per_min, 5);
    let body = assert_error(
        relay.get(&BlobId::of(b"absent")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("addr_requests_per_min")
    );
    let health = relay.http.get(relay.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn proof_of_work_is_required_when_disclosed() {
    let relay = TestRelay::start_with(|c| c.limits.pow_bits = 10).await;
    let (info, _) = info(&relay).await;
    assert_eq!(info.limits.pow_bits, 10);
    let alice = key("alice");
    let data = bytes("pow", 100);
    let id = BlobId::of(&data);
    let put = |t: &cairn_proto::AuthToken| {
        relay
            .http
            .put(relay.blob_url(&id))
            .header("authorization", auth_header(t, &alice))
            .body(data.clone())
            .send()
    };
    let mut t = token(
        &relay.key(),
        Method::Put,
        TokenTarget::Blob(id),
        relay.now() + 60,
    );
    // Find a stamp that does *not* carry the work, to show the refusal.
    while t.stamp_bits(&alice.verifying_key()) >= 10 {
        t.stamp += 1;
    }
    assert_error(
        put(&t).await.unwrap(),
        StatusCode::FORBIDDEN,
        "pow_required",
    )
    .await;
    let mut t = token(
        &relay.key(),
        Method::Put,
        TokenTarget::Blob(id),
        relay.now() + 60,
    );
    assert!(t.mint_stamp(&alice.verifying_key(), 10, 1 << 24));
    assert_eq!(put(&t).await.unwrap().status(), StatusCode::CREATED);
    // Reading needs no work.
    assert_eq!(relay.get(&id).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn http2_uploads_and_downloads() {
    let relay = TestRelay::start().await;
    let h2 = cairn_testkit::http_builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let data = bytes("over h2", 3 << 20);
    let id = BlobId::of(&data);
    let r = h2
        .put(relay.blob_url(&id))
        .header("authorization", relay.auth(&key("alice"), Method::Put, id))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = h2.get(relay.blob_url(&id)).send().await.unwrap();
    assert_eq!(got.version(), reqwest::Version::HTTP_2);
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn a_stalled_upload_times_out_and_keeps_nothing() {
    let relay =
        TestRelay::start_with(|c| c.body_idle_timeout = std::time::Duration::from_millis(300))
            .await;
    let data = bytes("slow", 2048);
    let id = BlobId::of(&data);
    // Half the body, then nothing: the client stalls.
    let first: Result<Vec<u8>, std::io::Error> = Ok(data[..1024].to_vec());
    let body = futures_util::StreamExt::chain(
        futures_util::stream::iter([first]),
        futures_util::stream::pending(),
    );
    let response = relay
        .http
        .put(relay.blob_url(&id))
        .header("authorization", relay.auth(&key("alice"), Method::Put, id))
        .header("content-length", "2048")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::REQUEST_TIMEOUT, "timeout").await;
    assert_eq!(relay.files(), (0, 0));
}

#[tokio::test]
async fn concurrent_uploads_of_one_blob_store_it_once() {
    let relay = TestRelay::start().await;
    let data = bytes("raced", 600_000);
    let id = BlobId::of(&data);
    let uploads = (0..8).map(|i| {
        let signer = key(&format!("racer {i}"));
        let (relay, data) = (&relay, data.clone());
        async move { relay.put(&signer, &data).await.status() }
    });
    let statuses = futures_util::future::join_all(uploads).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK)
    );
    assert_eq!(relay.files(), (0, 1));
    let (info, _) = info(&relay).await;
    assert_eq!(info.capacity_used, 600_000);
    assert_eq!(
        relay.get(&id).await.bytes().await.unwrap().as_ref(),
        data.as_slice()
    );
}

#[tokio::test]
async fn proof_of_work_rises_when_the_relay_is_nearly_full() {
    let relay = TestRelay::start_with(|c| {
        c.capacity_bytes = 100_000;
        c.limits.key_quota_bytes = 0;
        c.pow_bits_under_pressure = 12;
    })
    .await;
    assert_eq!(info(&relay).await.0.limits.pow_bits, 0);
    assert_eq!(
        relay
            .put(&key("alice"), &bytes("fill", 96_000))
            .await
            .status(),
        StatusCode::CREATED
    );
    // Under 5% free: uploads now need 12 bits of work, and the info
    // document says so.
    assert_eq!(info(&relay).await.0.limits.pow_bits, 12);
    let small = bytes("one more", 1000);
    let id = BlobId::of(&small);
    let mut t = token(
        &relay.key(),
        Method::Put,
        TokenTarget::Blob(id),
        relay.now() + 60,
    );
    while t.stamp_bits(&key("alice").verifying_key()) >= 12 {
        t.stamp += 1;
    }
    let r = relay
        .http
        .put(relay.blob_url(&id))
        .header("authorization", auth_header(&t, &key("alice")))
        .body(small)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::FORBIDDEN, "pow_required").await;
}

#[tokio::test]
async fn a_blob_file_the_index_does_not_list_is_not_served() {
    // What a crash between rename and commit leaves: a valid file that was
    // never acknowledged (with the scale-out store: an object written
    // before a commit that never happened).
    let relay = TestRelay::start().await;
    let data = bytes("never acknowledged", 50_000);
    let id = BlobId::of(&data);
    let path = relay.body_path(&id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, &data).unwrap();
    assert_error(relay.get(&id).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn wrong_methods_get_the_json_error_everywhere() {
    let relay = TestRelay::start().await;
    for path in ["/health", "/metrics", "/.well-known/cairn-relay", "/"] {
        let r = relay.http.post(relay.url(path)).send().await.unwrap();
        assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    }
}

#[tokio::test]
async fn audit_proofs_verify_against_the_blob_id_and_bad_requests_are_refused() {
    use cairn_proto::audit::{ChunkRequest, verify};
    let relay = TestRelay::start().await;
    let owner = key("audited");
    // One blob stored inline in the index, one as a file.
    for size in [5_000usize, 300_000] {
        let data = bytes(&format!("audited {size}"), size);
        let id = BlobId::of(&data);
        assert_eq!(relay.put(&owner, &data).await.status(), StatusCode::CREATED);
        let request = ChunkRequest::new(size as u64, vec![0, (size as u64 - 1) / 1024]).unwrap();
        let url = format!(
            "{}/proof?chunks={}",
            relay.blob_url(&id),
            request.to_query()
        );
        let response = relay.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let proof = response.bytes().await.unwrap();
        let chunks = verify(&id, &request, &proof).unwrap();
        assert_eq!(chunks[0].1, data[..1024]);
        // The same proof does not pass for another blob id.
        assert!(verify(&BlobId::of(b"other"), &request, &proof).is_err());

        let bad = relay
            .http
            .get(format!("{}/proof?chunks=2,1", relay.blob_url(&id)))
            .send()
            .await
            .unwrap();
        assert_error(bad, StatusCode::BAD_REQUEST, "bad_request").await;
        let beyond = relay
            .http
            .get(format!("{}/proof?chunks=99999", relay.blob_url(&id)))
            .send()
            .await
            .unwrap();
        assert_error(beyond, StatusCode::BAD_REQUEST, "bad_request").await;
        let none = relay
            .http
            .get(format!("{}/proof", relay.blob_url(&id)))
            .send()
            .await
            .unwrap();
        assert_error(none, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let absent = BlobId::of(b"never stored");
    let response = relay
        .http
        .get(format!("{}/proof?chunks=0", relay.blob_url(&absent)))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

/// The operations docs/openapi.yaml lists: path → methods (lowercase). A
/// strict reading of the file's own layout (two-space path keys under
/// `paths:`, four-space method keys), so a reformatted file fails loudly
/// rather than passing with nothing read.
fn openapi_operations(
    spec: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    const METHODS: [&str; 7] = ["get", "head", "put", "post", "delete", "patch", "options"];
    let mut operations = std::collections::BTreeMap::new();
    let mut path: Option<String> = None;
    let mut in_paths = false;
    for line in spec.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && key.starts_with('/')
        {
            path = Some(key.to_owned());
            operations.insert(key.to_owned(), std::collections::BTreeSet::new());
        } else if let Some(method) = line
            .strip_prefix("    ")
            .and_then(|l| l.strip_suffix(':'))
            .filter(|m| METHODS.contains(m))
        {
            let path = path.as_ref().expect("a method key outside a path");
            operations.get_mut(path).unwrap().insert(method.to_owned());
        }
    }
    operations
}

/// Every route the relay serves is in docs/openapi.yaml with exactly the
/// methods it answers, and the file lists nothing the relay does not serve.
/// Methods are found by asking the live relay: 405 means "not this one". (A
/// path that missed its route would answer every method with the
/// fallback's 404 and so list all seven.)
#[tokio::test]
async fn openapi_lists_exactly_the_served_routes_and_methods() {
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.yaml"
    ))
    .unwrap();
    let documented = openapi_operations(&spec);
    assert!(
        documented.len() >= 5,
        "read too little of the file: {documented:?}"
    );

    let relay = TestRelay::start().await;
    let id = BlobId::of(b"openapi");
    let mailbox = key("openapi mailbox").verifying_key();
    let mut served = std::collections::BTreeMap::new();
    for path in cairn_relay::route_paths() {
        let concrete = path
            .replace("{id}", &id.to_string())
            .replace("{mailbox}", &mailbox.to_string())
            .replace("{slot}", "s");
        let mut methods = std::collections::BTreeSet::new();
        for method in ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"] {
            let response = relay
                .http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    relay.url(&concrete),
                )
                .send()
                .await
                .unwrap();
            if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                methods.insert(method.to_lowercase());
            }
        }
        served.insert(path.to_owned(), methods);
    }
    assert_eq!(served, documented);
}

#[tokio::test]
async fn a_spent_delete_token_stays_spent_across_a_restart() {
    let relay = TestRelay::start().await;
    let alice = key("alice");
    let data = bytes("deleted, then stored again", 2_000);
    let id = BlobId::of(&data);
    let absent = BlobId::of(b"not stored yet");
    assert_eq!(relay.put(&alice, &data).await.status(), StatusCode::CREATED);
    let deleted = relay.auth(&alice, Method::Delete, id);
    let missed = relay.auth(&alice, Method::Delete, absent);
    let delete = |relay: &TestRelay, id: BlobId, token: &str| {
        relay
            .http
            .delete(relay.blob_url(&id))
            .header("authorization", token)
            .send()
    };
    assert_eq!(
        delete(&relay, id, &deleted).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    // A token is spent even when its delete found nothing.
    assert_eq!(
        delete(&relay, absent, &missed).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    let relay = relay.stop().await.start(&[]).await;
    assert_eq!(relay.put(&alice, &data).await.status(), StatusCode::CREATED);
    assert_eq!(
        relay.put(&alice, b"not stored yet").await.status(),
        StatusCode::CREATED
    );
    // Both tokens are still valid for minutes; replayed after the restart,
    // neither deletes what the owner stored since.
    for (target, token) in [(id, &deleted), (absent, &missed)] {
        assert_error(
            delete(&relay, target, token).await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "token_replayed",
        )
        .await;
        assert_eq!(relay.get(&target).await.status(), StatusCode::OK);
    }
    // A fresh token still deletes.
    assert_eq!(
        relay.delete(&alice, id).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn spent_upload_and_claim_tokens_stay_spent_across_a_restart() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (key("alice"), key("bob"));
    let put_with = |relay: &TestRelay, data: &[u8], token: &str| {
        relay
            .http
            .put(relay.blob_url(&BlobId::of(data)))
            .header("authorization", token)
            .body(data.to_vec())
            .send()
    };
    let claim_with = |relay: &TestRelay, id: BlobId, token: &str| {
        relay
            .http
            .post(relay.blob_url(&id))
            .header("authorization", token)
            .send()
    };

    // Alice stores a blob and later deletes it.
    let stored = bytes("stored, then deleted by its owner", 2_000);
    let stored_id = BlobId::of(&stored);
    let upload = relay.auth(&alice, Method::Put, stored_id);
    assert_eq!(
        put_with(&relay, &stored, &upload).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        relay.delete(&alice, stored_id).await.status(),
        StatusCode::NO_CONTENT
    );
    // Bob claims Alice's other blob, then drops his claim.
    let shared = bytes("claimed, then released", 2_000);
    let shared_id = BlobId::of(&shared);
    assert_eq!(
        relay.put(&alice, &shared).await.status(),
        StatusCode::CREATED
    );
    let claim = relay.auth(&bob, Method::Post, shared_id);
    assert_eq!(
        claim_with(&relay, shared_id, &claim)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let released = relay.delete(&bob, shared_id).await;
    assert_eq!(released.headers()["cairn-owners-left"], "1");

    // Someone who captured both tokens replays them after a restart, while
    // they are still valid: neither undoes what its signer did since.
    let relay = relay.stop().await.start(&[]).await;
    assert_error(
        put_with(&relay, &stored, &upload).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;
    assert_eq!(relay.get(&stored_id).await.status(), StatusCode::NOT_FOUND);
    assert_error(
        claim_with(&relay, shared_id, &claim).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;
    // Bob owns nothing: his delete finds no claim of his to drop.
    assert_error(
        relay.delete(&bob, shared_id).await,
        StatusCode::FORBIDDEN,
        "not_owner",
    )
    .await;
}

#[tokio::test]
async fn a_token_refused_without_effect_can_be_used_again() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (key("alice"), key("bob"));
    let data = bytes("sent wrong, then right", 3_000);
    let id = BlobId::of(&data);
    let token = relay.auth(&alice, Method::Put, id);
    let put_body = |body: Vec<u8>| {
        relay
            .http
            .put(relay.blob_url(&id))
            .header("authorization", &token)
            .body(body)
            .send()
    };
    // The bytes were damaged on the way: refused, nothing stored, and the
    // same token carries the retry.
    assert_error(
        put_body(bytes("damaged", 3_000)).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "hash_mismatch",
    )
    .await;
    assert_eq!(
        put_body(data.clone()).await.unwrap().status(),
        StatusCode::CREATED
    );
    // Taken once, it is spent.
    assert_error(
        put_body(data.clone()).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;

    // A claim of a blob the relay does not hold yet is refused, unspent.
    let later = bytes("stored after the claim was refused", 1_000);
    let later_id = BlobId::of(&later);
    let claim = relay.auth(&bob, Method::Post, later_id);
    let claim_it = || {
        relay
            .http
            .post(relay.blob_url(&later_id))
            .header("authorization", &claim)
            .send()
    };
    assert_error(
        claim_it().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        relay.put(&alice, &later).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(claim_it().await.unwrap().status(), StatusCode::OK);
    assert_error(
        claim_it().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;
}

#[tokio::test]
async fn the_authorization_scheme_is_matched_without_case() {
    let relay = TestRelay::start().await;
    let alice = key("alice");
    for (i, scheme) in ["cairn ", "CAIRN\t", "Cairn   "].into_iter().enumerate() {
        let data = bytes(&format!("scheme {i}"), 100);
        let id = BlobId::of(&data);
        let token = relay.auth(&alice, Method::Put, id);
        let header = token.replacen("Cairn ", scheme, 1);
        let response = relay
            .http
            .put(relay.blob_url(&id))
            .header("authorization", header)
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{scheme:?}");
    }
}

#[tokio::test]
async fn the_info_document_discloses_the_thresholds_behind_refusals() {
    let relay = TestRelay::start_with(|c| {
        c.max_concurrent_uploads = 7;
        c.max_heads = 1234;
    })
    .await;
    let doc: serde_json::Value = relay
        .http
        .get(relay.url("/.well-known/cairn-relay"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let policy = &doc["policy"];
    assert_eq!(policy["max_uploads"], 7);
    assert_eq!(policy["max_heads"], 1234);
    assert_eq!(policy["clock_skew_secs"], 60);
    assert_eq!(policy["max_token_lifetime_secs"], 600);
    assert_eq!(policy["max_slots_per_mailbox"], 1024);
    assert_eq!(policy["max_head_bytes"], 4096);
    assert_eq!(policy["max_batch_blobs"], 1024);
    assert_eq!(policy["max_batch_bytes"], 4 << 20);
}

/// The repository's `contrib/` directory.
fn contrib(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib")
        .join(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contrib_service_and_config_start_a_relay() {
    // The systemd unit's command line, with the example config for
    // /etc/cairn/relay.toml and a temporary data directory.
    let unit = std::fs::read_to_string(contrib("systemd/cairn-relay.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        words[0].ends_with("/cairn-relay") && words[1] == "serve",
        "{exec}"
    );
    let config = contrib("relay.toml");
    let mut args = Vec::new();
    let mut rest = words[2..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().expect("every flag has a value");
        match *flag {
            "--config" => args.extend(["--config".to_owned(), config.display().to_string()]),
            // RelayProcess passes its own data directory and address.
            "--data" => {}
            _ => args.extend([(*flag).to_owned(), (*value).to_owned()]),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let relay = cairn_testkit::RelayProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_cairn-relay")),
        &dir.path().join("data"),
        &args,
    );
    let http = cairn_testkit::http();
    let (info, _) = info_document(&http, &relay.url()).await;
    // What the example promises is what the relay discloses.
    assert_eq!(info.capacity_total, 500 << 30);
    assert_eq!(info.retention_secs, 90 * 86_400);
    assert_eq!(info.limits.key_quota_bytes, 20 << 30);
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn the_example_alerts_name_only_exported_metrics() {
    let relay = TestRelay::start().await;
    // Request counters appear once a request has been answered.
    relay.http.get(relay.url("/health")).send().await.unwrap();
    let metrics = relay.get_text("/metrics").await;
    let exported: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let rules = std::fs::read_to_string(contrib("prometheus/cairn-relay-rules.yml")).unwrap();
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("cairn_") {
            named += 1;
            assert!(
                exported.contains(word),
                "the example alerts use {word}, which the relay does not export"
            );
        }
    }
    assert!(named >= 8, "only {named} metrics named in the rules");
}
