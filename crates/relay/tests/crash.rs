//! Durability by killing: a relay process SIGKILLed in the middle of a
//! stream of concurrent uploads loses nothing it acknowledged.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::BlobId;
use cairn_testkit::{RelayProcess, arg, key, run};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{PlannedRelay, bytes, info_document, relay_key, upload};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-relay");

fn fsck(data: &Path, repair: bool) -> (bool, Value) {
    let data = arg(data);
    let mut args = vec!["fsck", "--data", &data, "--json"];
    if repair {
        args.push("--repair");
    }
    let (status, out) = run(Path::new(BIN), &args);
    (status.success(), serde_json::from_str(&out).unwrap())
}

/// Every blob in `ids` is served by the relay at `url`, whole and intact.
async fn assert_served_intact(http: &reqwest::Client, url: &str, ids: &[BlobId], context: &str) {
    for id in ids {
        let r = http
            .get(format!("{url}/v1/blobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{context}: acknowledged {id} lost"
        );
        let body = r.bytes().await.unwrap();
        assert_eq!(BlobId::of(&body), *id, "{context}: {id} corrupt");
    }
}

/// A restarted relay has cleaned the temp files of aborted uploads.
fn assert_no_temp_files(data: &Path, context: &str) {
    assert!(
        std::fs::read_dir(data.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "{context}: temp files of aborted uploads are left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relay = RelayProcess::spawn(Path::new(BIN), &data, &[]);
    let http = cairn_testkit::http();
    let url = relay.url();
    let relay_key = relay_key(&http, &url).await;

    // Eight writers upload blobs of varied sizes until the relay dies.
    let acked: Arc<Mutex<Vec<BlobId>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, url, acked) = (http.clone(), url.clone(), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            let signer = key(&format!("writer {w}"));
            for i in 0.. {
                let size = [1_000, 20_000, 150_000, 700_000][i % 4] + w;
                let data = bytes(&format!("{w}/{i}"), size);
                let id = BlobId::of(&data);
                let sent = upload(&http, &url, &relay_key, &signer, id, data).await;
                match sent {
                    Ok(r) if r.status() == StatusCode::CREATED => acked.lock().unwrap().push(id),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    // The relay is gone.
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a good number of uploads were acknowledged, while the
    // writers are still going.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 200 {
        assert!(
            Instant::now() < deadline,
            "relay acknowledged too few uploads"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Restarted on the same data: every acknowledged blob is there, intact.
    let relay = RelayProcess::spawn(Path::new(BIN), &data, &[]);
    let url = relay.url();
    assert_served_intact(&http, &url, &acked, "after the kill").await;
    assert_no_temp_files(&data, "after the kill");
    // SIGTERM: graceful stop, exit 0.
    assert!(relay.terminate().success());

    // fsck explains everything: no corrupt, stray or missing files. Uploads
    // renamed into place but not yet committed when the relay died may show
    // as orphans (valid blobs never acknowledged); --repair indexes them.
    let (_, report) = fsck(&data, false);
    for kind in ["corrupt", "stray", "missing", "wrong_size"] {
        assert_eq!(report[kind], serde_json::json!([]), "{kind}: {report}");
    }
    assert!(report["indexed"].as_u64().unwrap() >= acked.len() as u64);
    let (ok, _) = fsck(&data, true);
    assert!(ok);
    let (clean, report) = fsck(&data, false);
    assert!(clean, "{report}");
}

#[tokio::test]
async fn fsck_finds_and_repairs_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relay = RelayProcess::spawn(Path::new(BIN), &data, &[]);
    let http = cairn_testkit::http();
    let url = relay.url();
    let relay_key = relay_key(&http, &url).await;
    let signer = key("alice");
    let mut ids = Vec::new();
    for i in 0..3 {
        // Large enough to be stored as files.
        let body = bytes(&format!("fsck {i}"), 20_000);
        let id = BlobId::of(&body);
        let r = upload(&http, &url, &relay_key, &signer, id, body)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(id);
    }
    assert!(relay.terminate().success());
    let (clean, _) = fsck(&data, false);
    assert!(clean);

    // Flip a byte in one blob, delete another's file.
    let files = crate::common::walk(&data.join("blobs"));
    let path = |id: &BlobId| {
        let name = id.to_string();
        files
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n.to_str() == Some(&name)))
            .unwrap()
            .clone()
    };
    let mut corrupted = std::fs::read(path(&ids[0])).unwrap();
    corrupted[15_000] ^= 0x40;
    std::fs::write(path(&ids[0]), corrupted).unwrap();
    std::fs::remove_file(path(&ids[1])).unwrap();

    let (clean, report) = fsck(&data, false);
    assert!(!clean);
    assert_eq!(report["corrupt"], serde_json::json!([ids[0].to_string()]));
    assert_eq!(report["missing"], serde_json::json!([ids[1].to_string()]));
    let (ok, _) = fsck(&data, true);
    assert!(ok);
    let (clean, report) = fsck(&data, false);
    assert!(clean, "{report}");
    assert_eq!(report["indexed"], 1);

    // The relay serves the survivor and no longer claims the others.
    let relay = RelayProcess::spawn(Path::new(BIN), &data, &[]);
    let url = relay.url();
    let status = |id: BlobId| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.get(format!("{url}/v1/blobs/{id}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(ids[0]).await, StatusCode::NOT_FOUND);
    assert_eq!(status(ids[1]).await, StatusCode::NOT_FOUND);
    assert_eq!(status(ids[2]).await, StatusCode::OK);
    let (info, _) = info_document(&http, &url).await;
    assert_eq!(info.capacity_used, 20_000);
    assert!(relay.terminate().success());
}

/// What the relay acknowledged during one round of the campaign.
#[derive(Default)]
struct Acknowledged {
    /// Blobs stored (201) and not deleted since.
    blobs: Vec<BlobId>,
    /// Blobs whose deletion was acknowledged (204).
    deleted: Vec<BlobId>,
    /// The highest head `seq` acknowledged per slot.
    heads: std::collections::BTreeMap<String, u64>,
}

/// Writer `writer`'s `i`th blob in `round`, of a size on one side or the
/// other of every threshold (inline, in memory, synced while streaming).
fn campaign_blob(round: usize, writer: usize, i: usize) -> Vec<u8> {
    let size = [900, 17_000, 300_000, 1_500_000][(i / 8 + writer) % 4];
    bytes(&format!("campaign {round}/{writer}/{i}"), size)
}

/// A mixed workload against the relay at `url` until it dies: uploads of
/// varied sizes, downloads (each verified: nothing partial or wrong may be
/// served), deletions, and head updates. Returns what was acknowledged.
async fn workload(
    url: String,
    relay: cairn_proto::VerifyingKey,
    writer: usize,
    round: usize,
    acked: Arc<Mutex<Acknowledged>>,
) {
    let http = cairn_testkit::http();
    let signer = key(&format!("campaign writer {writer}"));
    let mailbox = key(&format!("campaign mailbox {writer}"));
    let slot = format!("w{writer}");
    let mut seq = acked.lock().unwrap().heads.get(&slot).copied().unwrap_or(0);
    for i in 0.. {
        let step = i % 8;
        let outcome: reqwest::Result<()> = async {
            match step {
                // Mostly uploads, of sizes on both sides of every threshold.
                0..=3 => {
                    let data = campaign_blob(round, writer, i);
                    let id = BlobId::of(&data);
                    let r = upload(&http, &url, &relay, &signer, id, data).await?;
                    match r.status() {
                        StatusCode::CREATED | StatusCode::OK => {
                            acked.lock().unwrap().blobs.push(id);
                        }
                        // A full relay refuses; nothing was acknowledged.
                        StatusCode::INSUFFICIENT_STORAGE => {}
                        other => panic!("upload: {other}"),
                    }
                }
                // Read back something acknowledged: all of it, or an error.
                4 | 5 => {
                    let pick = {
                        let a = acked.lock().unwrap();
                        a.blobs
                            .get((i * 7 + writer) % a.blobs.len().max(1))
                            .copied()
                    };
                    if let Some(id) = pick {
                        let r = http.get(format!("{url}/v1/blobs/{id}")).send().await?;
                        if r.status() == StatusCode::OK {
                            let body = r.bytes().await?;
                            assert_eq!(BlobId::of(&body), id, "served wrong or partial bytes");
                        }
                    }
                }
                // Delete the blob this writer uploaded first in this cycle.
                6 => {
                    let id = BlobId::of(&campaign_blob(round, writer, i - 6));
                    let t = cairn_testkit::token(
                        &relay,
                        cairn_proto::Method::Delete,
                        cairn_proto::TokenTarget::Blob(id),
                        cairn_testkit::unix_now() + 600,
                    );
                    // While the deletion is in flight the blob may or may not
                    // be there; if the relay dies now, both are right.
                    let held = {
                        let mut a = acked.lock().unwrap();
                        let before = a.blobs.len();
                        a.blobs.retain(|b| *b != id);
                        a.blobs.len() < before
                    };
                    let r = http
                        .delete(format!("{url}/v1/blobs/{id}"))
                        .header("authorization", cairn_testkit::auth_header(&t, &signer))
                        .send()
                        .await?;
                    let mut a = acked.lock().unwrap();
                    if r.status() == StatusCode::NO_CONTENT {
                        a.deleted.push(id);
                    } else if held {
                        a.blobs.push(id);
                    }
                }
                // Move this writer's head forward.
                _ => {
                    seq += 1;
                    let r = http
                        .put(format!("{url}/v1/heads/{}/{slot}", mailbox.verifying_key()))
                        .body(crate::heads::head(&mailbox, &slot, seq))
                        .send()
                        .await?;
                    if r.status().is_success() {
                        acked.lock().unwrap().heads.insert(slot.clone(), seq);
                    }
                }
            }
            Ok(())
        }
        .await;
        // An error means the relay is gone: the round is over.
        if outcome.is_err() {
            return;
        }
    }
}

/// fsck of a killed relay's data finds nothing corrupt, stray, missing or
/// of the wrong size.
fn assert_fsck_clean(data: &Path, context: &str) {
    let (_, report) = fsck(data, false);
    for kind in ["corrupt", "stray", "missing", "wrong_size"] {
        assert_eq!(
            report[kind],
            serde_json::json!([]),
            "{context}, {kind}: {report}"
        );
    }
}

/// The relay at `url` still holds everything `acked` says it acknowledged:
/// every blob intact (at the relay, or at the peer it transferred the blob
/// to, through the redirect), no blob whose deletion was acknowledged, and
/// no head older than acknowledged.
async fn assert_acknowledged_kept(
    http: &reqwest::Client,
    url: &str,
    acked: &Mutex<Acknowledged>,
    context: &str,
) {
    let (blobs, deleted, heads) = {
        let a = acked.lock().unwrap();
        (a.blobs.clone(), a.deleted.clone(), a.heads.clone())
    };
    assert_served_intact(http, url, &blobs, context).await;
    for id in &deleted {
        let r = http
            .get(format!("{url}/v1/blobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{context}: deleted {id} is back"
        );
    }
    for (slot, seq) in &heads {
        let writer: usize = slot[1..].parse().unwrap();
        let mailbox = key(&format!("campaign mailbox {writer}")).verifying_key();
        let r = http
            .get(format!("{url}/v1/heads/{mailbox}/{slot}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{context}: head {slot} lost");
        let got = crate::heads::seq_of(&r.bytes().await.unwrap());
        assert!(
            got >= *seq,
            "{context}: head {slot} went back from {seq} to {got}"
        );
    }
}

/// Rounds of a crash campaign: `CAIRN_CRASH_ROUNDS`, 5 unless set (the
/// full campaign in docs/BENCHMARKS.md is 50).
fn crash_rounds() -> usize {
    std::env::var("CAIRN_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// A pseudo-random moment, 0.2–1.5 s into `round` of the campaign `name`.
fn kill_after(name: &str, round: usize) -> Duration {
    let seed = blake3::hash(format!("{name} round {round}").as_bytes());
    let [a, b, ..] = *seed.as_bytes();
    Duration::from_millis(200 + u64::from(u16::from_le_bytes([a, b])) % 1300)
}

/// A crash campaign: rounds of a mixed workload against a
/// relay process that is SIGKILLed at a pseudo-random moment, 0.2–1.5 s
/// in. After every kill: fsck finds nothing corrupt, stray, missing or of
/// the wrong size; the restarted relay serves every acknowledged blob
/// intact, none whose deletion was acknowledged, and no head older than
/// acknowledged; and its temp files are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_campaign_loses_nothing_acknowledged() {
    let rounds = crash_rounds();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A GC pass every second: it runs (and is killed) along with the rest.
    let args = ["--gc-interval", "1s", "--key-rate", "0", "--addr-rate", "0"];
    let acked: Arc<Mutex<Acknowledged>> = Arc::default();
    let http = cairn_testkit::http();
    for round in 0..rounds {
        let relay = RelayProcess::spawn(Path::new(BIN), &data, &args);
        let url = relay.url();
        let relay_pub = relay_key(&http, &url).await;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                tokio::spawn(workload(
                    url.clone(),
                    relay_pub,
                    w,
                    round,
                    Arc::clone(&acked),
                ))
            })
            .collect();
        let wait = kill_after("crash", round);
        tokio::time::sleep(wait).await;
        relay.kill9();
        for w in writers {
            w.await.unwrap();
        }

        let context = format!("round {round}");
        assert_fsck_clean(&data, &context);
        let relay = RelayProcess::spawn(Path::new(BIN), &data, &args);
        let url = relay.url();
        let (blobs, deleted, heads) = {
            let a = acked.lock().unwrap();
            (a.blobs.len(), a.deleted.len(), a.heads.len())
        };
        assert_acknowledged_kept(&http, &url, &acked, &context).await;
        assert_no_temp_files(&data, &context);
        eprintln!(
            "crash round {round}: killed after {} ms; {} blobs, {} deletions, {} heads acknowledged so far, all intact",
            wait.as_millis(),
            blobs,
            deleted,
            heads
        );
        assert!(relay.terminate().success());
    }
}

/// The crash campaign across federation: relay A replicates every client
/// upload to relay B and, being small (24 MB, transfers above 50% down to
/// 30%), keeps handing its least recently used blobs over to B, while
/// writers load both. Each round SIGKILLs A or B in turn, mid-replication
/// and mid-transfer. After every kill: the victim's fsck is clean and, once
/// it is back, each relay still holds (itself, or through its redirect to
/// the peer it transferred to) every blob it acknowledged, none whose
/// deletion it acknowledged, and no older head. At the end, replication
/// has caught up with every kill: B serves every blob A still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_crash_campaign_loses_nothing_acknowledged() {
    let rounds = crash_rounds();
    let dir = tempfile::tempdir().unwrap();
    let planned = PlannedRelay::plan(dir.path(), 2);
    let shared = [
        "--gc-interval",
        "1s",
        "--key-rate",
        "0",
        "--addr-rate",
        "0",
        "--reconcile-interval",
        "2s",
    ];
    let (peer_of_a, peer_of_b) = (planned[1].as_peer_flag(), planned[0].as_peer_flag());
    let args: [Vec<&str>; 2] = [
        [
            &shared[..],
            &[
                "--peer",
                &peer_of_a,
                "--replicas",
                "1",
                "--capacity",
                "24M",
                "--high-water",
                "50",
                "--low-water",
                "30",
            ],
        ]
        .concat(),
        // B takes A's replicas and transfers, and sends none back.
        [&shared[..], &["--peer", &peer_of_b, "--replicas", "0"]].concat(),
    ];
    let spawn = |i: usize| {
        RelayProcess::spawn_at(
            Path::new(BIN),
            &planned[i].data,
            &planned[i].listen(),
            &args[i],
        )
    };
    // B first: A learns at start whether its peer has room.
    let b = spawn(1);
    let mut relays = [Some(spawn(0)), Some(b)];
    let acked: [Arc<Mutex<Acknowledged>>; 2] = Default::default();
    let http = cairn_testkit::http();
    // Writers 0-2 load A, writer 3 loads B.
    let home = |writer: usize| usize::from(writer == 3);
    for round in 0..rounds {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let i = home(w);
                let url = relays[i].as_ref().unwrap().url();
                tokio::spawn(workload(
                    url,
                    planned[i].key,
                    w,
                    round,
                    Arc::clone(&acked[i]),
                ))
            })
            .collect();
        let wait = kill_after("federated crash", round);
        tokio::time::sleep(wait).await;
        let victim = round % 2;
        relays[victim].take().unwrap().kill9();
        // The survivor's writers would go on for ever; what they had in
        // flight is simply not acknowledged.
        for w in writers {
            w.abort();
            let _ = w.await;
        }

        let context = format!("round {round}, relay {} killed", ["A", "B"][victim]);
        assert_fsck_clean(&planned[victim].data, &context);
        relays[victim] = Some(spawn(victim));
        assert_no_temp_files(&planned[victim].data, &context);
        for i in 0..2 {
            let url = relays[i].as_ref().unwrap().url();
            assert_acknowledged_kept(&http, &url, &acked[i], &context).await;
        }
        let a = acked[0].lock().unwrap();
        eprintln!(
            "{context} after {} ms: A acknowledged {} blobs and {} deletions so far, all intact",
            wait.as_millis(),
            a.blobs.len(),
            a.deleted.len()
        );
    }

    // Replication lost its queue at every kill of A; reconciliation (every
    // 2 s) must have put every blob A holds on B too.
    let blobs = acked[0].lock().unwrap().blobs.clone();
    let b_url = relays[1].as_ref().unwrap().url();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut missing = blobs.clone();
    while !missing.is_empty() {
        let mut still = Vec::new();
        for id in missing {
            let r = http
                .get(format!("{b_url}/v1/blobs/{id}"))
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                assert_eq!(
                    BlobId::of(&r.bytes().await.unwrap()),
                    id,
                    "B serves {id} corrupt"
                );
            } else {
                still.push(id);
            }
        }
        missing = still;
        assert!(
            Instant::now() < deadline || missing.is_empty(),
            "after 120 s, B still lacks {} of A's {} blobs",
            missing.len(),
            blobs.len()
        );
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // Transfers happened too (or the campaign did not test them): A
    // answers for some of its blobs with a redirect to B.
    let a_url = relays[0].as_ref().unwrap().url();
    let direct = cairn_testkit::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut transferred = 0;
    for id in &blobs {
        let r = direct
            .head(format!("{a_url}/v1/blobs/{id}"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TEMPORARY_REDIRECT {
            transferred += 1;
        }
    }
    assert!(transferred > 0, "A transferred nothing to B");
    eprintln!(
        "replication caught up: B serves all {} of A's blobs; A had transferred {transferred} of them",
        blobs.len()
    );
    for relay in relays.into_iter().flatten() {
        assert!(relay.terminate().success());
    }
}
