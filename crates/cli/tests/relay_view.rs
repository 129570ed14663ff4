//! What a relay learns of who you are (PROTOCOL.md §10.7; THREAT-MODEL.md
//! §3): a whole run-through on four relays, each behind a proxy that
//! records every request it is sent, after which everything each relay
//! stored and every request it saw is searched for the root key, every
//! device key (raw and in text form), every device name and both pairing
//! codes. None may appear. Then the names the identity uses on each relay
//! (mailboxes, head writers, identity-log copies) must differ from relay to
//! relay, and each relay must have seen one owner key per vault generation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use cairn_client::proto::{
    BlobId, HeadRecord, OwnedHead, RecordKind, SignedRecord, TokenTarget, VerifyingKey,
    encode_base64url,
};
use cairn_client::{Client, Home, Passphrase};

use crate::common::{Device, PASSPHRASE, Relay, data_with_marker, pass_on};
use crate::devices::pair_named;

/// A request as the relay behind a [`Recorder`] was sent it.
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
}

#[derive(Clone)]
struct Recording {
    upstream: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A proxy in front of a relay that keeps every request.
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    async fn start(relay: &Relay) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recording = Recording {
            upstream: relay.url(),
            http: crate::common::proxy_http(),
            seen: seen.clone(),
        };
        let app = axum::Router::new().fallback(record).with_state(recording);
        let url = crate::common::serve(app).await;
        Self { url, seen }
    }

    /// Every request, as bytes: method, path, headers and body.
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for seen in self.seen.lock().unwrap().iter() {
            out.extend_from_slice(seen.method.as_bytes());
            out.extend_from_slice(seen.path.as_bytes());
            for (name, value) in &seen.headers {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(value);
            }
            out.extend_from_slice(&seen.body);
        }
        out
    }
}

async fn record(State(recording): State<Recording>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    recording.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect(),
        body: body.clone(),
    });
    pass_on(&recording.http, &recording.upstream, parts, body).await
}

/// Everything under `dir`, file by file.
fn stored(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            stored(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A needle found: the relay, where there, and which needle.
type Found = (usize, String, String);

/// What a search looked through on one relay: bytes, and requests.
type Searched = (usize, usize);

/// Where each needle turns up on each relay, stored or sent.
fn search(
    relays: &[Relay],
    recorders: &[Recorder],
    needles: &[(String, Vec<u8>)],
) -> (Vec<Found>, Vec<Searched>) {
    let mut found = Vec::new();
    let mut sizes = Vec::new();
    for (index, (relay, recorder)) in relays.iter().zip(recorders).enumerate() {
        let mut files = Vec::new();
        stored(&relay.data(), &mut files);
        files.push(("requests".into(), recorder.bytes()));
        sizes.push((
            files.iter().map(|(_, b)| b.len()).sum::<usize>(),
            recorder.seen.lock().unwrap().len(),
        ));
        for (place, bytes) in &files {
            for (label, needle) in needles {
                if contains(bytes, needle) {
                    found.push((index, place.clone(), label.clone()));
                }
            }
        }
    }
    (found, sizes)
}

/// A key in every form cairn writes it: raw, base64url, and its text form.
fn key_forms(label: &str, raw: [u8; 32], text: String) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("{label} (raw)"), raw.to_vec()),
        (
            format!("{label} (base64url)"),
            encode_base64url(&raw).into_bytes(),
        ),
        (format!("{label} (text)"), text.into_bytes()),
    ]
}

/// What one relay saw of the identity's names, from the requests it was
/// sent: owned-head mailboxes, their writers, the targets of `id` heads,
/// and the keys that signed blob requests (pairing messages aside).
#[derive(Default, Debug)]
struct Names {
    mailboxes: BTreeSet<VerifyingKey>,
    writers: BTreeSet<VerifyingKey>,
    log_copies: BTreeSet<BlobId>,
    owners: BTreeSet<VerifyingKey>,
    /// Every blob a request named.
    blobs: BTreeSet<BlobId>,
}

fn names(recorder: &Recorder) -> Names {
    let seen = recorder.seen.lock().unwrap();
    let mut names = Names::default();
    // Pairing messages are blobs named by legacy heads in a rendezvous.
    let mut pairing = BTreeSet::new();
    for request in seen.iter().filter(|s| s.path.starts_with("/v1/heads/")) {
        let Ok(record) = SignedRecord::from_bytes(&request.body) else {
            continue;
        };
        match record.kind() {
            RecordKind::OwnedHead => {
                let head = record.verify::<OwnedHead>().unwrap();
                names.mailboxes.insert(head.mailbox);
                names.writers.insert(*record.signer());
                if head.slot.as_str().ends_with("-id") {
                    names.log_copies.insert(head.target);
                }
            }
            RecordKind::Head => {
                pairing.insert(record.verify::<HeadRecord>().unwrap().target);
            }
            _ => {}
        }
    }
    for request in seen.iter() {
        if let Some(id) = request
            .path
            .strip_prefix("/v1/blobs/")
            .and_then(|rest| rest.split(['/', '?']).next())
            .and_then(|id| id.parse().ok())
        {
            names.blobs.insert(id);
        }
    }
    for request in seen.iter() {
        let Some((_, value)) = request.headers.iter().find(|(n, _)| n == "authorization") else {
            continue;
        };
        let text = std::str::from_utf8(value).unwrap();
        let token = SignedRecord::from_base64url(text.strip_prefix("Cairn ").unwrap()).unwrap();
        let target = token
            .verify::<cairn_client::proto::AuthToken>()
            .unwrap()
            .target
            .clone();
        if let TokenTarget::Blob(blob) = target
            && !pairing.contains(&blob)
        {
            names.owners.insert(*token.signer());
        }
    }
    names
}

fn open(device: &Device) -> Client {
    Client::open(Home::at(device.home()), &Passphrase::new(PASSPHRASE)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_learns_nothing_of_who_you_are() {
    let relays = [
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    ];
    let mut recorders = Vec::new();
    for relay in &relays {
        recorders.push(Recorder::start(relay).await);
    }
    let url = |i: usize| recorders[i].url.clone();

    // The run-through: init, three relays, a file; a desktop pairs and
    // syncs; a phone pairs, stores, and is revoked; repair; the third
    // relay is rotated out for the fourth.
    let (laptop, desktop, phone) = (Device::new(), Device::new(), Device::new());
    laptop.init("ada-laptop-7Q").await;
    for i in 0..3 {
        let add = laptop.run(&["relay", "add", &url(i)]).await;
        assert_eq!(add.code, 0, "{add:?}");
    }
    laptop.run(&["config", "--replicas", "3"]).await.ok();
    let data = data_with_marker(20_000, b"the laptop's file");
    laptop.put_data("notes", &data).await;

    let (approve, join, desktop_code) =
        pair_named(&laptop, &desktop, &url(0), "ada-desktop-7Q").await;
    approve.json();
    join.json();
    desktop.run(&["sync"]).await.ok();
    assert_eq!(desktop.get_data("notes").await, data);

    let (approve, join, phone_code) = pair_named(&laptop, &phone, &url(1), "ada-phone-7Q").await;
    approve.json();
    join.json();
    phone.run(&["config", "--replicas", "3"]).await.ok();
    phone
        .put_data("photo", &data_with_marker(30_000, b"the phone's file"))
        .await;
    laptop.run(&["sync"]).await.ok();
    desktop.run(&["sync"]).await.ok();

    // Every device and key, while all three are enrolled.
    let client = open(&laptop);
    let state = client.identity().state().clone();
    let root = *SignedRecord::from_bytes(&client.identity().entries()[0])
        .unwrap()
        .signer();
    let phone_key = open(&phone).device_key();
    assert_eq!(state.devices().len(), 3);

    let revoke = laptop
        .run(&["device", "revoke", &phone_key.to_string(), "--json"])
        .await;
    assert_eq!(revoke.code, 0, "{revoke:?}");
    desktop.run(&["sync"]).await.ok();
    laptop.run(&["sync"]).await.ok();
    let repair = laptop.run(&["repair", "--json"]).await;
    assert_eq!(repair.code, 0, "{repair:?}");
    let rotate = laptop.run(&["relay", "rotate", &url(2), &url(3)]).await;
    assert_eq!(rotate.code, 0, "{rotate:?}");
    desktop.run(&["sync"]).await.ok();
    assert_eq!(desktop.get_data("notes").await, data);
    assert_eq!(
        desktop.get_data("photo").await,
        data_with_marker(30_000, b"the phone's file")
    );

    // What must never reach a relay.
    let mut needles = key_forms("root key", root.to_bytes(), root.to_string());
    for device in state.devices().values() {
        let name = device.name.as_str();
        needles.extend(key_forms(
            &format!("{name}'s key"),
            device.key.to_bytes(),
            device.key.to_string(),
        ));
        needles.extend(key_forms(
            &format!("{name}'s X25519 key"),
            device.x25519.to_bytes(),
            device.x25519.to_string(),
        ));
        needles.push((
            format!("{name}'s age recipient"),
            cairn_client::keys::age_recipient_string(&device.x25519).into_bytes(),
        ));
        needles.push((format!("the name {name}"), name.as_bytes().to_vec()));
    }
    for code in [&desktop_code, &phone_code] {
        needles.push((format!("pairing code {code}"), code.clone().into_bytes()));
        needles.push((
            format!("pairing code {code} without dashes"),
            code.replace('-', "").into_bytes(),
        ));
    }
    let (found, sizes) = search(&relays, &recorders, &needles);
    for (i, (bytes, requests)) in sizes.iter().enumerate() {
        eprintln!(
            "relay {i}: {bytes} bytes stored or sent, {requests} requests, searched for {} needles",
            needles.len()
        );
    }
    assert!(found.is_empty(), "found on the relays: {found:#?}");

    // No name the identity uses on one relay appears on another, and no
    // blob but the files' (which relays replicate to each other): the
    // operations, snapshots and identity-log copies of each relay are its
    // own.
    let seen: Vec<Names> = recorders.iter().map(names).collect();
    let files: BTreeSet<BlobId> = desktop
        .run(&["ls", "--json"])
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["blob"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(files.len(), 2);
    for (i, a) in seen.iter().enumerate() {
        assert!(
            !a.mailboxes.is_empty() && !a.log_copies.is_empty(),
            "{i}: {a:?}"
        );
        for b in &seen[i + 1..] {
            assert!(a.mailboxes.is_disjoint(&b.mailboxes), "{a:?} {b:?}");
            assert!(a.writers.is_disjoint(&b.writers), "{a:?} {b:?}");
            assert!(a.log_copies.is_disjoint(&b.log_copies), "{a:?} {b:?}");
            assert!(a.owners.is_disjoint(&b.owners), "{a:?} {b:?}");
            let common: BTreeSet<&BlobId> = a.blobs.intersection(&b.blobs).collect();
            assert!(
                common.iter().all(|id| files.contains(id)),
                "metadata blobs named on two relays: {common:?}"
            );
        }
    }
    let metadata: Vec<usize> = seen
        .iter()
        .map(|n| n.blobs.difference(&files).count())
        .collect();
    // Each relay holds the log's copies, operations and snapshots.
    assert!(metadata.iter().all(|count| *count >= 6), "{metadata:?}");
    eprintln!("metadata blobs named per relay, none shared: {metadata:?}");
    // One owner key per vault generation: the first three relays served
    // both generations, the fourth only the second.
    let vaults = open(&laptop).vault_keys().unwrap();
    assert_eq!(vaults.len(), 2);
    for (i, (relay, names)) in relays.iter().zip(&seen).enumerate() {
        let expected: BTreeSet<VerifyingKey> = vaults
            .iter()
            .filter(|v| i < 3 || v.generation == 2)
            .map(|v| v.owner_at(&relay.handle().key()).verifying_key())
            .collect();
        assert_eq!(names.owners, expected, "relay {i}");
    }
    let per_relay: BTreeMap<usize, usize> = seen
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n.writers.len()))
        .collect();
    eprintln!("head writers per relay: {per_relay:?}");

    // The search finds what is there: a device name planted on a relay.
    let planted = b"planted: ada-desktop-7Q".to_vec();
    let stranger = cairn_testkit::key("stranger");
    let blob = BlobId::of(&planted);
    let token = cairn_testkit::token(
        &relays[1].handle().key(),
        cairn_client::proto::Method::Put,
        TokenTarget::Blob(blob),
        cairn_testkit::unix_now() + 300,
    );
    let put = cairn_testkit::http()
        .put(format!("{}/v1/blobs/{blob}", url(1)))
        .header(
            "authorization",
            cairn_testkit::auth_header(&token, &stranger),
        )
        .body(planted)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");
    let (found, _) = search(&relays, &recorders, &needles);
    assert!(
        found
            .iter()
            .any(|(i, _, label)| *i == 1 && label == "the name ada-desktop-7Q"),
        "{found:?}"
    );
}
