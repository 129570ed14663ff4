//! `POST /v1/blobs`, the batch upload, against a real relay: per-blob
//! answers, and every refusal of the request as a whole.

use cairn_proto::wire::BatchStored;
use cairn_proto::{BatchHeader, BlobId, Method, SigningKey, TokenTarget};
use cairn_testkit::{auth_header, key, token};
use reqwest::StatusCode;

use crate::common::{TestRelay, assert_error, bytes};

/// A batch body of `blobs` (header, then the bytes in the header's order)
/// and its header.
fn body(blobs: &[Vec<u8>]) -> (Vec<u8>, BatchHeader) {
    let header = BatchHeader::new(
        blobs
            .iter()
            .map(|b| (BlobId::of(b), u32::try_from(b.len()).unwrap()))
            .collect(),
    )
    .unwrap();
    let mut out = header.encode();
    for (id, _) in header.entries() {
        out.extend_from_slice(blobs.iter().find(|b| BlobId::of(b) == *id).unwrap());
    }
    (out, header)
}

/// A token for the batch with `header`, signed by `signer`.
fn batch_token(relay: &TestRelay, signer: &SigningKey, header: &BatchHeader) -> String {
    let t = token(
        &relay.key(),
        Method::Post,
        TokenTarget::Batch(header.digest()),
        relay.now() + 300,
    );
    auth_header(&t, signer)
}

async fn send(relay: &TestRelay, token: &str, body: Vec<u8>) -> reqwest::Response {
    relay
        .http
        .post(relay.url("/v1/blobs"))
        .header("authorization", token)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn results(response: reqwest::Response) -> BatchStored {
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_batch_stores_each_blob_as_a_put_would_and_answers_for_each() {
    let relay = TestRelay::start().await;
    let alice = key("alice");
    let held = bytes("held already", 700);
    assert_eq!(relay.put(&alice, &held).await.status(), StatusCode::CREATED);
    let mut blobs: Vec<Vec<u8>> = (0..40)
        .map(|i| bytes(&format!("batch {i}"), 10 + i * 97))
        .collect();
    blobs.push(Vec::new());
    blobs.push(held.clone());
    let (mut payload, header) = body(&blobs);
    // Damage one blob on the way: only it is refused.
    let damaged = header.entries()[7].0;
    let damaged_at = header.encoded_len()
        + header.entries()[..7]
            .iter()
            .map(|(_, len)| *len as usize)
            .sum::<usize>();
    payload[damaged_at] ^= 1;

    let stored = results(send(&relay, &batch_token(&relay, &alice, &header), payload).await).await;
    assert_eq!(stored.results.len(), blobs.len());
    for (result, (id, _)) in stored.results.iter().zip(header.entries()) {
        assert_eq!(result.id, *id, "results follow the header's order");
        let expected = if *id == damaged {
            422
        } else if *id == BlobId::of(&held) {
            200
        } else {
            201
        };
        assert_eq!(result.status, expected, "{id}");
        assert_eq!(result.stored, expected == 201);
        match expected {
            422 => assert_eq!(result.error.as_ref().unwrap().code, "hash_mismatch"),
            _ => assert!(result.error.is_none()),
        }
    }
    for blob in &blobs {
        let id = BlobId::of(blob);
        let got = relay.get(&id).await;
        if id == damaged {
            assert_eq!(got.status(), StatusCode::NOT_FOUND);
        } else {
            assert_eq!(got.bytes().await.unwrap().as_ref(), blob.as_slice());
        }
    }
    // The uploader owns what it stored: its delete frees it.
    let first = BlobId::of(&blobs[0]);
    assert_eq!(
        relay.delete(&alice, first).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_batch_token_names_its_blobs_and_is_spent_once_across_a_restart() {
    let relay = TestRelay::start().await;
    let (alice, mallory) = (key("alice"), key("mallory"));
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| bytes(&format!("signed {i}"), 500)).collect();
    let (payload, header) = body(&blobs);
    let token = batch_token(&relay, &alice, &header);

    // The same token over another list of blobs: refused before any blob.
    let (other, _) = body(&[bytes("not signed for", 500)]);
    assert_error(
        send(&relay, &token, other).await,
        StatusCode::FORBIDDEN,
        "wrong_target",
    )
    .await;
    // A token for one blob does not carry a batch.
    let single = relay.auth(&alice, Method::Post, BlobId::of(&blobs[0]));
    assert_error(
        send(&relay, &single, payload.clone()).await,
        StatusCode::FORBIDDEN,
        "wrong_target",
    )
    .await;
    for blob in &blobs {
        assert_eq!(
            relay.get(&BlobId::of(blob)).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    let stored = results(send(&relay, &token, payload.clone()).await).await;
    assert!(stored.results.iter().all(|r| r.status == 201));
    // Alice deletes one; the captured token, replayed after a restart,
    // does not bring it back.
    let gone = BlobId::of(&blobs[1]);
    assert_eq!(
        relay.delete(&alice, gone).await.status(),
        StatusCode::NO_CONTENT
    );
    let relay = relay.stop().await.start(&[]).await;
    assert_error(
        send(&relay, &token, payload).await,
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;
    assert_eq!(relay.get(&gone).await.status(), StatusCode::NOT_FOUND);
    // Mallory's own batch of the same blobs makes her an owner, as a PUT
    // would; it does not touch Alice's claims.
    let (payload, header) = body(&blobs);
    let stored =
        results(send(&relay, &batch_token(&relay, &mallory, &header), payload).await).await;
    let statuses: Vec<u16> = stored.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2);
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1);
}

#[tokio::test]
async fn each_blob_pays_from_the_uploaders_quota() {
    let relay = TestRelay::start_with(|c| {
        c.limits.key_quota_bytes = 10_000;
        c.federation.replicas = 0;
    })
    .await;
    let alice = key("alice");
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| bytes(&format!("q{i}"), 4_000)).collect();
    let (payload, header) = body(&blobs);
    let stored = results(send(&relay, &batch_token(&relay, &alice, &header), payload).await).await;
    let codes: Vec<&str> = stored
        .results
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| e.code.as_str()))
        .collect();
    // Two fit in 10,000 bytes; the other two are refused, each on its own.
    assert_eq!(codes, ["quota_exceeded", "quota_exceeded"]);
    assert_eq!(stored.results.iter().filter(|r| r.status == 201).count(), 2);
}

#[tokio::test]
async fn malformed_batches_are_refused_whole_and_store_nothing() {
    let relay = TestRelay::start().await;
    let alice = key("alice");
    let blobs: Vec<Vec<u8>> = (0..2).map(|i| bytes(&format!("m{i}"), 300)).collect();
    let (payload, header) = body(&blobs);
    let token = batch_token(&relay, &alice, &header);
    let mut longer = payload.clone();
    longer.push(0);
    let cases: [(Vec<u8>, StatusCode, &str); 4] = [
        (
            payload[..payload.len() - 1].to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (longer, StatusCode::BAD_REQUEST, "bad_request"),
        (
            payload[..10].to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (vec![0, 0], StatusCode::BAD_REQUEST, "bad_request"),
    ];
    for (body, status, code) in cases {
        assert_error(send(&relay, &token, body).await, status, code).await;
    }
    // Larger than a batch may be: refused before it is read.
    let huge = vec![0u8; (4 << 20) + 1];
    assert_error(
        send(&relay, &token, huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    for blob in &blobs {
        assert_eq!(
            relay.get(&BlobId::of(blob)).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    // None of those spent the token: the well-formed batch goes through.
    let stored = results(send(&relay, &token, payload).await).await;
    assert!(stored.results.iter().all(|r| r.status == 201));
}
