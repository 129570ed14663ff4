//! Copies a relay transferred to a peer (PROTOCOL.md §7.3): `get` follows
//! the redirect, verifies it, and records where the copy went; `ls`, other
//! devices and `relay check` see the new placement.
//!
//! The transferring relay is a proxy in front of a real relay that answers
//! `307` for one blob, as a relay does once it has transferred that blob:
//! the test chooses which blob moves, where, and what key the redirect
//! claims (a real transfer picks its blobs by itself).

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_client::Clock;
use cairn_client::proto::BlobId;
use cairn_client::relay::{RelayClient, fetch_info};

use crate::common::{Device, Relay, data_with_marker, sorted_strings};
use crate::devices::pair;

/// What the proxy says about the one blob it pretends to have transferred.
#[derive(Clone)]
enum Moved {
    /// Nothing: every request goes to the relay behind.
    No,
    /// `307` to `url` (a relay's base URL), claiming `key`.
    To {
        id: String,
        url: String,
        key: String,
    },
    /// `404`: the relay forgot where it sent the blob.
    Forgotten { id: String },
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    moved: Arc<Mutex<Moved>>,
}

/// A relay that is `upstream` (same key, same data) except for the blob
/// `moved` names.
struct Origin {
    url: String,
    moved: Arc<Mutex<Moved>>,
}

impl Origin {
    async fn start(upstream: &Relay) -> Self {
        let moved = Arc::new(Mutex::new(Moved::No));
        let proxy = Proxy {
            upstream: upstream.url(),
            http: crate::common::proxy_http(),
            moved: moved.clone(),
        };
        let url =
            crate::common::serve(axum::Router::new().fallback(forward).with_state(proxy)).await;
        Self { url, moved }
    }

    fn set(&self, moved: Moved) {
        *self.moved.lock().unwrap() = moved;
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let blob = path.strip_prefix("/v1/blobs/").map(str::to_owned);
    let reads = matches!(request.method().as_str(), "GET" | "HEAD");
    let moved = proxy.moved.lock().unwrap().clone();
    match moved {
        Moved::To { id, url, key } if reads && blob.as_deref() == Some(id.as_str()) => {
            let mut response = (
                StatusCode::TEMPORARY_REDIRECT,
                axum::Json(serde_json::json!({
                    "id": id, "transferred_to": { "url": url, "key": key }
                })),
            )
                .into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::LOCATION,
                HeaderValue::from_str(&format!("{url}/v1/blobs/{id}")).unwrap(),
            );
            headers.insert("cairn-relay-key", HeaderValue::from_str(&key).unwrap());
            return response;
        }
        Moved::Forgotten { id } if reads && blob.as_deref() == Some(id.as_str()) => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({
                    "error": { "code": "not_found", "message": "no such blob" }
                })),
            )
                .into_response();
        }
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    crate::common::pass_on(&proxy.http, &proxy.upstream, parts, body).await
}

/// Copies blob `id` from `from` to `to` as some other uploader (a peer
/// taking a transfer owns the copy it receives, not the user's device).
async fn copy_blob(id: &str, from: &Relay, to: &Relay) {
    let id: BlobId = id.parse().unwrap();
    let http = cairn_testkit::http();
    let client = |url: String| {
        let http = http.clone();
        async move {
            let key = *fetch_info(&http, &url, &Clock::system())
                .await
                .unwrap()
                .signer();
            RelayClient::new(http, &url, key)
        }
    };
    let bytes = client(from.url())
        .await
        .fetch_bytes(&id, 64 << 20)
        .await
        .unwrap();
    let uploader = cairn_testkit::key("the transferring relay");
    client(to.url())
        .await
        .put_bytes(&id, bytes.into(), &uploader, 0)
        .await
        .unwrap();
}

async fn key_of(relay: &Relay) -> String {
    fetch_info(&cairn_testkit::http(), &relay.url(), &Clock::system())
        .await
        .unwrap()
        .signer()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_follows_a_transfer_and_every_device_sees_where_the_copy_went() {
    let (a, peer) = (Relay::start().await, Relay::start().await);
    let origin = Origin::start(&a).await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.run(&["relay", "add", &origin.url]).await.ok();
    let data = data_with_marker(70_000, b"a transferred file");
    let src = laptop.dir.path().join("doc");
    std::fs::write(&src, &data).unwrap();
    let put = laptop
        .run(&["put", src.to_str().unwrap(), "--json"])
        .await
        .json();
    let id = put["blob"].as_str().unwrap().to_owned();
    assert_eq!(put["copies"], serde_json::json!([origin.url]));
    let phone = Device::new();
    let (approve, joined) = pair(&laptop, &phone, &a, false, "30").await;
    approve.json();
    joined.json();

    // The origin hands the blob to its peer (which is in nobody's set, but
    // in the origin's signed peer list, as the peers a relay transfers to
    // are).
    copy_blob(&id, &a, &peer).await;
    a.handle().set_peers(&[peer.as_peer()]);
    let peer_key = key_of(&peer).await;
    origin.set(Moved::To {
        id: id.clone(),
        url: peer.url(),
        key: peer_key.clone(),
    });

    let out = laptop.dir.path().join("out");
    let got = laptop
        .run(&["get", "doc", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    assert_eq!(got["relay"], peer.url(), "{got}");
    let moved = got["moved"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{got}");
    assert_eq!(moved[0]["from"], origin.url);
    assert_eq!(moved[0]["to"], peer.url());
    assert_eq!(moved[0]["to_key"], peer_key);
    assert_eq!(moved[0]["recorded"], true, "{got}");
    assert!(got["warnings"].as_array().unwrap().is_empty(), "{got}");
    // People are told too.
    let text = laptop
        .run(&["get", "doc", "-o", out.to_str().unwrap()])
        .await;
    assert!(text.ok().contains("transferred its copy to"), "{text:?}");

    // Both devices list the copy where it is now.
    for device in [&laptop, &phone] {
        let list = device.run(&["ls", "--json"]).await.json();
        let file = &list[0];
        assert_eq!(file["copies"], serde_json::json!([peer.url()]), "{list}");
        let transferred = file["transferred"].as_array().unwrap();
        assert_eq!(transferred.len(), 1, "{list}");
        assert_eq!(transferred[0]["from"], origin.url);
        assert_eq!(transferred[0]["to"], peer.url());
    }

    // Once the origin forgets the transfer, the recorded placement still
    // leads the phone (which never saw the redirect) to the copy.
    origin.set(Moved::Forgotten { id: id.clone() });
    let out = phone.dir.path().join("out");
    let got = phone
        .run(&["get", "doc", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    assert_eq!(got["relay"], peer.url(), "{got}");
    assert_eq!(got["moved"], serde_json::json!([]), "{got}");

    // `relay check` shows the transfer: recorded, and (while the origin
    // still redirects) seen.
    let checks = laptop.run(&["relay", "check", "--json"]).await.json();
    let copies = &checks[0]["copies"];
    assert_eq!(copies["listed"], 1, "{checks}");
    assert_eq!(copies["missing"], 0, "a recorded transfer is not missing");
    let transfer = &copies["transfers"][0];
    assert_eq!(transfer["blob"], id);
    assert_eq!(transfer["names"], serde_json::json!(["doc"]));
    assert_eq!(transfer["to"], peer.url());
    assert_eq!(
        (&transfer["recorded"], &transfer["seen"]),
        (&true.into(), &false.into())
    );
    origin.set(Moved::To {
        id: id.clone(),
        url: peer.url(),
        key: peer_key.clone(),
    });
    let checks = laptop.run(&["relay", "check", "--json"]).await.json();
    let transfer = &checks[0]["copies"]["transfers"][0];
    assert_eq!(
        (&transfer["recorded"], &transfer["seen"]),
        (&true.into(), &true.into())
    );
    let text = laptop.run(&["relay", "check"]).await;
    assert!(
        text.ok()
            .contains(&format!("transferred doc to {}", peer.url())),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_claiming_the_wrong_key_is_not_followed() {
    let (a, b, peer) = (
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    );
    let (origin, laptop, data, id) = laptop_behind(&a, &b, b"not moved after all").await;

    // The origin names the peer, but with another relay's key: following it
    // would have the client trust a key the peer does not hold. (It lists
    // the peer so, too, so that the redirect is not refused before the
    // peer is asked.)
    copy_blob(&id, &a, &peer).await;
    a.handle().set_peers(&[cairn_client::proto::RelayRef {
        url: peer.as_peer().url,
        key: b.handle().key(),
    }]);
    origin.set(Moved::To {
        id: id.clone(),
        url: peer.url(),
        key: key_of(&b).await,
    });
    let out = laptop.dir.path().join("out");
    let got = laptop
        .run(&["get", "doc", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    assert_eq!(got["relay"], b.url(), "the other copy served: {got}");
    assert_eq!(got["moved"], serde_json::json!([]));
    let skipped = got["skipped"].to_string();
    assert!(
        skipped.contains(&origin.url) && skipped.contains("presents"),
        "{got}"
    );
    let list = laptop.run(&["ls", "--json"]).await.json();
    assert!(
        list[0]["transferred"].as_array().unwrap().is_empty(),
        "{list}"
    );

    // With no other copy, the get fails and says why.
    laptop.run(&["relay", "remove", &b.url()]).await.ok();
    let run = laptop
        .run(&["get", "doc", "-o", out.to_str().unwrap()])
        .await;
    assert!(run.err().contains("presents"), "{run:?}");
    let checks = laptop.run(&["relay", "check", "--json"]).await.json();
    let copies = &checks[0]["copies"];
    assert!(
        copies["transfers"].as_array().unwrap().is_empty(),
        "{checks}"
    );
    assert!(
        copies["failed"][0].as_str().unwrap().contains("presents"),
        "{checks}"
    );

    // Once the redirect is honest, the transfer is recorded whichever copy
    // serves the data.
    a.handle().set_peers(&[peer.as_peer()]);
    origin.set(Moved::To {
        id: id.clone(),
        url: peer.url(),
        key: key_of(&peer).await,
    });
    laptop.add_relays(&[&b]).await;
    let got = laptop
        .run(&["get", "doc", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    assert_eq!(got["moved"][0]["to"], peer.url(), "{got}");
    assert_eq!(got["moved"][0]["recorded"], true, "{got}");
    let list = laptop.run(&["ls", "--json"]).await.json();
    let mut copies: Vec<_> = list[0]["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    copies.sort();
    let mut expected = vec![peer.url(), b.url()];
    expected.sort();
    assert_eq!(copies, expected, "{list}");
}

/// The whole path with real relays: a relay fills past its high-water mark
/// and hands its blobs to its peer; the client, whose set holds only the
/// first relay, still gets its file (and its identity's own blobs), and
/// records and shows where the copy went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_transfer_between_relays_is_followed_and_recorded() {
    let a = Relay::start_with(|c| {
        c.capacity_bytes = 1_000_000;
        c.federation.replicas = 0;
        c.federation.high_water_permille = 300;
        c.federation.low_water_permille = 50;
    })
    .await;
    let b = Relay::start().await;
    a.handle().set_peers(&[b.as_peer()]);
    b.handle().set_peers(&[a.as_peer()]);
    a.handle().refresh_peers().await;

    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&a]).await;
    let data = data_with_marker(400_000, b"a file that moves");
    let src = laptop.dir.path().join("big");
    std::fs::write(&src, &data).unwrap();
    laptop.run(&["put", src.to_str().unwrap()]).await.ok();
    // The upload crossed the high-water mark; this pass waits for the one
    // it started, or does the work itself.
    a.handle().relieve().await;
    let moved_off = a.handle().relieve().await;
    assert_eq!(moved_off.moved, 0, "already below the low-water mark");

    let out = laptop.dir.path().join("out");
    let got = laptop
        .run(&["get", "big", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    assert_eq!(got["relay"], b.url(), "{got}");
    assert_eq!(got["moved"][0]["from"], a.url(), "{got}");
    assert_eq!(got["moved"][0]["recorded"], true, "{got}");

    // Everything else the identity keeps on A moved too, and still works:
    // a sync reads its logs through the redirects.
    laptop.run(&["sync"]).await.ok();
    let list = laptop.run(&["ls", "--json"]).await.json();
    assert_eq!(list[0]["copies"], serde_json::json!([b.url()]), "{list}");
    let checks = laptop.run(&["relay", "check", "--json"]).await.json();
    let transfer = &checks[0]["copies"]["transfers"][0];
    assert_eq!(transfer["to"], b.url(), "{checks}");
    assert_eq!(
        (&transfer["recorded"], &transfer["seen"]),
        (&true.into(), &true.into()),
        "{checks}"
    );
}

/// Part of issue 1/7: a relay may send a blob request on only into the
/// user's relay set or its own signed peer list. A redirect anywhere else
/// is not followed (the target is not even asked), counts as misbehaviour
/// of the relay that redirected, and leaves nothing about the target in
/// the device's home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_outside_the_set_and_the_peer_list_is_refused_and_leaves_no_trace() {
    let (a, b, outside) = (
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    );
    let (origin, laptop, data, id) = laptop_behind(&a, &b, b"kept where it was put").await;

    // The outside relay really holds the blob and the key the redirect
    // claims: only the containment rule stands in the way.
    copy_blob(&id, &a, &outside).await;
    let key = key_of(&outside).await;
    let answered = outside.requests_answered().await;
    origin.set(Moved::To {
        id: id.clone(),
        url: outside.url(),
        key,
    });
    let out = laptop.dir.path().join("out");
    let got = laptop
        .run(&["get", "doc", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    assert_eq!(got["relay"], b.url(), "the other copy served: {got}");
    assert_eq!(got["moved"], serde_json::json!([]), "{got}");
    let skipped = got["skipped"].to_string();
    assert!(
        skipped.contains(&origin.url) && skipped.contains("neither in your relay set"),
        "{got}"
    );
    // Its own doing: the origin's record shows it.
    let checks = laptop.run(&["relay", "check", "--json"]).await.json();
    let record = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["url"] == origin.url.as_str())
        .unwrap();
    assert!(
        record["record"]["misbehaviour"]["bad_redirect"].as_u64() >= Some(1),
        "{checks}"
    );
    assert_eq!(record["flagged"], true, "{checks}");
    // The outside relay was never asked anything by the device.
    assert_eq!(outside.requests_answered().await, answered);
    // Nothing about it is in the home.
    let host = outside.url().trim_start_matches("http://").to_owned();
    assert_eq!(
        crate::common::disk_contains(&laptop.home(), host.as_bytes()),
        None,
        "the home names the outside relay"
    );
}

/// A laptop whose set is relay `a` (through an [`Origin`] in front of it)
/// and relay `b`, with two copies of a 50,000-byte file "doc" whose data
/// carries `marker`: the origin, the laptop, the data and its blob id.
async fn laptop_behind(a: &Relay, b: &Relay, marker: &[u8]) -> (Origin, Device, Vec<u8>, String) {
    let origin = Origin::start(a).await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.run(&["relay", "add", &origin.url]).await.ok();
    laptop.add_relays(&[b]).await;
    laptop.run(&["config", "--replicas", "2"]).await.ok();
    let data = data_with_marker(50_000, marker);
    let id = laptop.put_data("doc", &data).await;
    (origin, laptop, data, id)
}

/// Every copy the file table lists is on a relay that is gone, but another
/// relay of the set holds the blob (a replica a listed relay pushed to its
/// peer, or any copy): repair adopts it in place of a lost copy, without
/// moving a byte, and makes the rest from it. It used to give up ("no good
/// copy left to repair from") while `cairn get` still found the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_adopts_a_copy_on_a_relay_of_the_set_when_every_listed_copy_is_gone() {
    let mut relays = Vec::new();
    for _ in 0..4 {
        relays.push(Relay::start().await);
    }
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&relays.iter().collect::<Vec<_>>()).await;
    laptop.run(&["config", "--replicas", "2"]).await.ok();
    let data = data_with_marker(200_000, b"outlives both its copies");
    let put = laptop.put_report("kept", &data).await;
    let id = put["blob"].as_str().unwrap().to_owned();
    let listed: Vec<usize> = (0..4)
        .filter(|&i| {
            put["copies"]
                .as_array()
                .unwrap()
                .contains(&relays[i].url().into())
        })
        .collect();
    let unlisted: Vec<usize> = (0..4).filter(|i| !listed.contains(i)).collect();
    assert_eq!((listed.len(), unlisted.len()), (2, 2), "{put}");
    copy_blob(&id, &relays[listed[0]], &relays[unlisted[0]]).await;
    for &i in &listed {
        relays[i].stop().await;
    }

    let repair = laptop
        .run(&["repair", "--replace-unreachable", "--json"])
        .await
        .json();
    let restored = repair["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 2, "{repair}");
    let adopted = restored
        .iter()
        .find(|r| r["to"] == relays[unlisted[0]].url())
        .unwrap_or_else(|| panic!("the held copy is adopted: {repair}"));
    assert!(
        adopted["why"]
            .as_str()
            .unwrap()
            .contains("already held the blob"),
        "{repair}"
    );
    assert!(
        restored
            .iter()
            .any(|r| r["to"] == relays[unlisted[1]].url()),
        "the second copy is made from it: {repair}"
    );
    let list = laptop.run(&["ls", "--json"]).await.json();
    let mut expected = vec![relays[unlisted[0]].url(), relays[unlisted[1]].url()];
    expected.sort_unstable();
    assert_eq!(sorted_strings(&list[0]["copies"]), expected);
    assert!(laptop.get_data("kept").await == data, "intact");
}
