//! Following transfers against fake relays on loopback.

#![allow(clippy::unwrap_used)]
use super::*;

use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode as AxumStatus, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cairn_proto::audit::ChunkRequest;
use cairn_proto::{FairShareLimits, SoftwareVersion};

use crate::relay::set::RelaySet;
use crate::relay::transport::Transport;

/// What a fake relay answers for blob requests.
#[derive(Clone)]
enum Blobs {
    /// Serves these bytes for their id.
    Hold(Vec<u8>),
    /// `307` with these `Location` and `cairn-relay-key` values.
    Redirect(String, Option<String>),
}

#[derive(Clone)]
struct Fake {
    key: Arc<SigningKey>,
    blobs: Arc<Mutex<Blobs>>,
    peers: Arc<Vec<cairn_proto::RelayRef>>,
}

/// A relay on loopback signing with the key from `seed`, listing no
/// peers.
async fn fake(seed: u8, blobs: Blobs) -> (String, SigningKey, Arc<Mutex<Blobs>>) {
    fake_peered(seed, blobs, &[]).await
}

/// [`fake`], listing `peers` (URL, key) in its signed info document.
async fn fake_peered(
    seed: u8,
    blobs: Blobs,
    peers: &[(&str, VerifyingKey)],
) -> (String, SigningKey, Arc<Mutex<Blobs>>) {
    let key = SigningKey::from_seed(&[seed; 32]);
    let peers = peers
        .iter()
        .map(|(url, key)| cairn_proto::RelayRef {
            url: cairn_proto::RelayUrl::new(*url).unwrap(),
            key: *key,
        })
        .collect();
    let state = Fake {
        key: Arc::new(key.clone()),
        blobs: Arc::new(Mutex::new(blobs)),
        peers: Arc::new(peers),
    };
    let shared = state.blobs.clone();
    let app = axum::Router::new()
        .route("/.well-known/cairn-relay", axum::routing::get(info))
        .route("/v1/blobs/{id}", axum::routing::get(blob))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, key, shared)
}

async fn info(State(fake): State<Fake>) -> Response {
    let info = RelayInfo {
        relay: fake.key.verifying_key(),
        software: SoftwareVersion::new("fake 0").unwrap(),
        issued_at: Clock::system().now(),
        capacity_total: 1 << 30,
        capacity_used: 0,
        capacity_free: 1 << 30,
        max_blob_size: 1 << 20,
        retention_secs: 86_400,
        limits: FairShareLimits::default(),
        peers: fake.peers.to_vec(),
        load_permille: 0,
        uptime_secs: 1,
    };
    let record = SignedRecord::sign(&info, &*fake.key).unwrap();
    axum::Json(serde_json::json!({ "record": record.to_base64url() })).into_response()
}

async fn blob(State(fake): State<Fake>, UrlPath(id): UrlPath<String>) -> Response {
    let blobs = fake.blobs.lock().unwrap().clone();
    match blobs {
        Blobs::Hold(bytes) if BlobId::of(&bytes).to_string() == id => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            (headers, bytes).into_response()
        }
        Blobs::Hold(_) => (
            AxumStatus::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": { "code": cairn_proto::ErrorCode::NotFound.as_str(), "message": "no such blob" }
            })),
        )
            .into_response(),
        Blobs::Redirect(location, key) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, location.parse().unwrap());
            if let Some(key) = key {
                headers.insert("cairn-relay-key", key.parse().unwrap());
            }
            (AxumStatus::TEMPORARY_REDIRECT, headers, "{}").into_response()
        }
    }
}

fn client(url: &str, key: &SigningKey) -> RelayClient {
    RelayClient::new(http_client().unwrap(), url, key.verifying_key())
}

const DATA: &[u8] = b"sealed bytes, as far as a relay can tell";

/// A relay (seed 2) listing the peer at `peer_url` in its signed info and
/// redirecting requests for `id` there, naming the key the peer holds.
async fn redirecting_to_listed_peer(
    peer_url: &str,
    peer_key: &SigningKey,
    id: &BlobId,
) -> (String, SigningKey) {
    let (url, key, _) = fake_peered(
        2,
        Blobs::Redirect(
            format!("{peer_url}/v1/blobs/{id}"),
            Some(peer_key.verifying_key().to_string()),
        ),
        &[(peer_url, peer_key.verifying_key())],
    )
    .await;
    (url, key)
}

#[tokio::test]
async fn a_transfer_is_followed_to_a_listed_peer_holding_the_key_it_claims() {
    let id = BlobId::of(DATA);
    let (peer_url, peer_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
    let (url, key) = redirecting_to_listed_peer(&peer_url, &peer_key, &id).await;
    let origin = client(&url, &key);
    let held = origin.probe(&id).await.unwrap().unwrap();
    assert_eq!(held.size, DATA.len() as u64);
    let at = held.at.unwrap();
    assert_eq!(at.url(), peer_url);
    assert_eq!(at.key(), &peer_key.verifying_key());
    // Fetching without a probe first follows it too, every byte checked.
    assert_eq!(origin.fetch_bytes(&id, 1024).await.unwrap(), DATA);
    let mut got = Vec::new();
    let n = origin
        .fetch_each(&id, |chunk| {
            got.extend_from_slice(&chunk);
            async { Ok(()) }
        })
        .await
        .unwrap();
    assert_eq!((n, got.as_slice()), (DATA.len() as u64, DATA));
    // The relay holding it itself says so with no peer.
    assert!(
        client(&peer_url, &peer_key)
            .probe(&id)
            .await
            .unwrap()
            .unwrap()
            .at
            .is_none()
    );
}

#[tokio::test]
async fn a_redirect_claiming_a_key_the_peer_does_not_hold_is_refused() {
    let id = BlobId::of(DATA);
    let (peer_url, _, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
    let liar = SigningKey::from_seed(&[9; 32]).verifying_key();
    // Listed with the key it does not hold, so that the redirect gets
    // as far as asking the peer.
    let (url, key, _) = fake_peered(
        2,
        Blobs::Redirect(format!("{peer_url}/v1/blobs/{id}"), Some(liar.to_string())),
        &[(&peer_url, liar)],
    )
    .await;
    let origin = client(&url, &key);
    let err = origin.probe(&id).await.unwrap_err();
    assert!(matches!(err, RelayError::Redirect(_)), "{err}");
    assert!(err.to_string().contains("presents"), "{err}");
    let err = origin.fetch_bytes(&id, 1024).await.unwrap_err();
    assert!(err.to_string().contains("presents"), "{err}");
}

#[tokio::test]
async fn malformed_redirects_and_loops_are_refused() {
    let id = BlobId::of(DATA);
    let (peer_url, peer_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
    let peer_key = peer_key.verifying_key().to_string();
    let other = BlobId::of(b"another blob");
    let (url, key, blobs) = fake(2, Blobs::Hold(Vec::new())).await;
    let origin = client(&url, &key);
    let cases = [
        (
            format!("{peer_url}/v1/blobs/{other}"),
            Some(peer_key.clone()),
        ),
        (format!("{peer_url}/elsewhere"), Some(peer_key.clone())),
        (format!("/v1/blobs/{id}"), Some(peer_key.clone())),
        (format!("{peer_url}/v1/blobs/{id}"), None),
        (
            format!("{peer_url}/v1/blobs/{id}"),
            Some("not a key".into()),
        ),
    ];
    for (location, claimed) in cases {
        *blobs.lock().unwrap() = Blobs::Redirect(location.clone(), claimed.clone());
        let err = origin.probe(&id).await.unwrap_err();
        assert!(
            matches!(err, RelayError::Redirect(_)),
            "{location} {claimed:?}: {err}"
        );
    }
    // A relay redirecting to itself (in the user's set, so allowed):
    // followed a few times, then refused.
    *blobs.lock().unwrap() = Blobs::Redirect(
        format!("{url}/v1/blobs/{id}"),
        Some(key.verifying_key().to_string()),
    );
    let origin = origin.with_redirects(policy(&[(&url, &key)], Transport::Secure));
    let err = origin.probe(&id).await.unwrap_err();
    assert!(err.to_string().contains("more than 3"), "{err}");
}

#[tokio::test]
async fn a_peer_that_no_longer_holds_it_reads_as_absent() {
    let id = BlobId::of(DATA);
    let (peer_url, peer_key, _) = fake(1, Blobs::Hold(Vec::new())).await;
    let (url, key) = redirecting_to_listed_peer(&peer_url, &peer_key, &id).await;
    assert!(client(&url, &key).probe(&id).await.unwrap().is_none());
}

/// A policy whose relay set is `set` (URL, key).
fn policy(set: &[(&str, &SigningKey)], transport: Transport) -> RedirectPolicy {
    let mut relays = RelaySet::default();
    for (url, key) in set {
        relays.upsert(crate::relay::RelayEntry {
            url: (*url).to_owned(),
            key: key.verifying_key(),
            added_at: 0,
        });
    }
    RedirectPolicy::new(&relays, transport)
}

#[tokio::test]
async fn a_redirect_outside_the_set_and_the_peer_list_is_refused_without_contacting_it() {
    let id = BlobId::of(DATA);
    // The outside relay holds the blob and its key, and would pass
    // every other check.
    let (outside_url, outside_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
    let (listed_url, listed_key, _) = fake(3, Blobs::Hold(DATA.to_vec())).await;
    let (url, key, _) = fake_peered(
        2,
        Blobs::Redirect(
            format!("{outside_url}/v1/blobs/{id}"),
            Some(outside_key.verifying_key().to_string()),
        ),
        &[(&listed_url, listed_key.verifying_key())],
    )
    .await;
    let origin = client(&url, &key).with_redirects(policy(
        &[(&url, &key), (&listed_url, &listed_key)],
        Transport::Secure,
    ));
    let err = origin.probe(&id).await.unwrap_err();
    assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("neither in your relay set nor"), "{text}");
    // Nothing in the refusal names the target, so nothing about it is
    // kept wherever the error goes.
    assert!(!text.contains(&outside_url), "{text}");
    let err = origin.fetch_bytes(&id, 1024).await.unwrap_err();
    assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");
    let err = origin
        .audit(
            &id,
            &ChunkRequest::random(DATA.len() as u64, 1, || 0).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");

    // Checked before the target is asked anything: a target where
    // nothing listens gives the same refusal, not "unreachable".
    let nowhere = "http://127.0.0.1:9";
    let (url, key, _) = fake(
        4,
        Blobs::Redirect(
            format!("{nowhere}/v1/blobs/{id}"),
            Some(outside_key.verifying_key().to_string()),
        ),
    )
    .await;
    let err = client(&url, &key).probe(&id).await.unwrap_err();
    assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");
}

#[tokio::test]
async fn a_redirect_into_the_users_set_is_followed_without_a_peer_list() {
    let id = BlobId::of(DATA);
    let (peer_url, peer_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
    let (url, key, blobs) = fake(
        2,
        Blobs::Redirect(
            format!("{peer_url}/v1/blobs/{id}"),
            Some(peer_key.verifying_key().to_string()),
        ),
    )
    .await;
    let origin = client(&url, &key);
    // Not listed as the relay's peer, and not in the (empty) set.
    assert!(matches!(
        origin.probe(&id).await.unwrap_err(),
        RelayError::RedirectRefused(_)
    ));
    let origin = origin.with_redirects(policy(
        &[(&url, &key), (&peer_url, &peer_key)],
        Transport::Secure,
    ));
    let held = origin.probe(&id).await.unwrap().unwrap();
    assert_eq!(held.at.unwrap().url(), peer_url);
    assert_eq!(origin.fetch_bytes(&id, 1024).await.unwrap(), DATA);
    // The set entry is a URL and a key together: the same key at
    // another URL is not the relay the user chose.
    let renamed = peer_url.replace("127.0.0.1", "localhost");
    *blobs.lock().unwrap() = Blobs::Redirect(
        format!("{renamed}/v1/blobs/{id}"),
        Some(peer_key.verifying_key().to_string()),
    );
    assert!(matches!(
        origin.probe(&id).await.unwrap_err(),
        RelayError::RedirectRefused(_)
    ));
}

#[tokio::test]
async fn a_redirect_to_plain_http_off_this_machine_is_refused_unless_insecure() {
    let id = BlobId::of(DATA);
    let peer_key = SigningKey::from_seed(&[1; 32]);
    // Listed as a peer and in the set: only the transport is wrong.
    let target = "http://relay.invalid";
    let (url, key, _) = fake_peered(
        2,
        Blobs::Redirect(
            format!("{target}/v1/blobs/{id}"),
            Some(peer_key.verifying_key().to_string()),
        ),
        &[(target, peer_key.verifying_key())],
    )
    .await;
    let origin = client(&url, &key).with_redirects(policy(
        &[(&url, &key), (target, &peer_key)],
        Transport::Secure,
    ));
    let err = origin.probe(&id).await.unwrap_err();
    assert!(matches!(err, RelayError::RedirectRefused(_)), "{err}");
    assert!(err.to_string().contains("plain http"), "{err}");
    assert!(!err.to_string().contains("relay.invalid"), "{err}");
    // With --insecure it passes this check and goes on to the target,
    // which (`.invalid` never resolves) cannot be checked.
    let origin = origin.with_redirects(policy(&[(&url, &key)], Transport::Insecure));
    let err = origin.probe(&id).await.unwrap_err();
    assert!(matches!(err, RelayError::Redirect(_)), "{err}");
    assert!(err.to_string().contains("cannot be checked"), "{err}");
}

/// An old relay: single `PUT`s only, no batch route (`404`); counts them.
async fn old_relay(seed: u8) -> (String, SigningKey, Arc<Mutex<Vec<BlobId>>>) {
    let key = SigningKey::from_seed(&[seed; 32]);
    let state = Fake {
        key: Arc::new(key.clone()),
        blobs: Arc::new(Mutex::new(Blobs::Hold(Vec::new()))),
        peers: Arc::new(Vec::new()),
    };
    let puts = Arc::new(Mutex::new(Vec::new()));
    let seen = puts.clone();
    let put = move |UrlPath(id): UrlPath<String>| {
        let seen = seen.clone();
        async move {
            let id: BlobId = id.parse().unwrap();
            seen.lock().unwrap().push(id);
            (
                AxumStatus::CREATED,
                axum::Json(serde_json::json!({ "id": id.to_string(), "stored": true })),
            )
        }
    };
    let app = axum::Router::new()
        .route("/.well-known/cairn-relay", axum::routing::get(info))
        .route("/v1/blobs/{id}", axum::routing::put(put))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, key, puts)
}

#[tokio::test]
async fn a_relay_without_batch_uploads_gets_one_put_a_blob() {
    let (url, relay_key, puts) = old_relay(31).await;
    let blobs: Vec<(BlobId, Bytes)> = (0..20u8)
        .map(|i| {
            let bytes = Bytes::from(vec![i; 100]);
            (BlobId::of(&bytes), bytes)
        })
        .collect();
    let owner = SigningKey::from_seed(&[32; 32]);
    let results = client(&url, &relay_key)
        .put_many(&blobs, &owner, 0)
        .await
        .unwrap();
    assert_eq!(results.len(), 20);
    assert!(results.iter().all(|r| matches!(r, Ok(true))));
    let mut sent = puts.lock().unwrap().clone();
    sent.sort();
    let mut wanted: Vec<BlobId> = blobs.iter().map(|(id, _)| *id).collect();
    wanted.sort();
    assert_eq!(sent, wanted);
}

#[test]
fn batches_keep_to_the_relays_limits() {
    let blob = |n: usize, i: usize| {
        let bytes = Bytes::from(vec![u8::try_from(i % 251).unwrap(); n]);
        (BlobId::of(&[&bytes[..], &i.to_le_bytes()].concat()), bytes)
    };
    let many: Vec<_> = (0..2_500).map(|i| blob(10, i)).collect();
    let sizes: Vec<usize> = super::blobs::batch_groups(&many)
        .iter()
        .map(|g| g.len())
        .collect();
    assert_eq!(sizes, [1024, 1024, 452]);
    let large: Vec<_> = (0..10).map(|i| blob(1 << 20, i)).collect();
    let groups = super::blobs::batch_groups(&large);
    assert!(
        groups
            .iter()
            .all(|g| g.iter().map(|(_, b)| b.len()).sum::<usize>() < 4 << 20)
    );
    assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 10);
}

/// Info documents are judged fresh by the client's clock, and a relay
/// reached through a transfer redirect is judged by the same one: a fake
/// relay signs with the system's time, which a clock two days ahead
/// refuses as a replay.
#[tokio::test]
async fn info_documents_are_judged_by_the_clients_clock() {
    let id = BlobId::of(DATA);
    let (peer_url, peer_key, _) = fake(1, Blobs::Hold(DATA.to_vec())).await;
    let now = Clock::system().now().0;
    let on_time = client(&peer_url, &peer_key).with_clock(Clock::manual(now));
    assert!(on_time.info().await.is_ok());
    // An hour either way, to within a minute (the fake signs with the
    // system's time as it answers): just inside is believed, just outside
    // refused, an old document (a replay) and one from the future alike.
    for (offset, believed) in [
        (3600 - 60, true),
        (3600 + 60, false),
        (-(3600 - 60), true),
        (-(3600 + 60), false),
    ] {
        let clock = Clock::manual(now.checked_add_signed(offset).unwrap());
        let answer = client(&peer_url, &peer_key).with_clock(clock).info().await;
        assert_eq!(answer.is_ok(), believed, "{offset} s off: {answer:?}");
    }
    let ahead = Clock::manual(now + 2 * 86_400);
    let late = client(&peer_url, &peer_key).with_clock(ahead.clone());
    let err = late.info().await.unwrap_err();
    assert!(err.to_string().contains("a clock far off"), "{err}");

    let (url, key) = redirecting_to_listed_peer(&peer_url, &peer_key, &id).await;
    let err = client(&url, &key)
        .with_clock(ahead)
        .probe(&id)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a clock far off"), "{err}");
}
