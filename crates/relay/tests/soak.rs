//! Soak: 256 clients at once against three federated relay processes, for
//! `CAIRN_SOAK_SECS` seconds (60 unless set; 600 for the full soak). Run
//! explicitly: `cargo test -p cairn-relay --test relay soak -- --ignored
//! --nocapture`. CI runs the one-minute version.
//!
//! Each client uploads blobs of 1–64 KiB to one relay, reads them back from
//! it and, replicated, from another, updates its head and deletes some of
//! its blobs. Any transport error, 5xx, wrong byte or unexpected status is
//! an error, and there must be none. A read of a replica that has not
//! arrived yet (404 from the other relay) is expected and counted apart.
//! Prints the relays' memory every 5 s and the latency percentiles.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_proto::{BlobId, Method, TokenTarget, VerifyingKey};
use cairn_testkit::{RelayProcess, auth_header, key, token, unix_now};
use reqwest::StatusCode;

use crate::common::{PlannedRelay, bytes, upload};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-relay");
const CLIENTS: usize = 256;

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    replica_not_yet: AtomicU64,
}

struct Target {
    url: String,
    key: VerifyingKey,
}

/// One client's loop until `deadline`: its request latencies, in µs.
#[allow(clippy::print_stderr, reason = "each error is printed as it happens")]
async fn client(
    n: usize,
    relays: Arc<Vec<Target>>,
    deadline: Instant,
    tally: Arc<Tally>,
) -> Vec<u32> {
    let http = cairn_testkit::http();
    let signer = key(&format!("soak client {n}"));
    let mailbox = key(&format!("soak mailbox {n}"));
    let home = &relays[n % relays.len()];
    let other = &relays[(n + 1) % relays.len()];
    let mut latencies = Vec::new();
    let mut stored: Vec<BlobId> = Vec::new();
    let mut seq = 0;
    let error = |what: String| {
        tally.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("soak client {n}: {what}");
    };
    for i in 0.. {
        if Instant::now() >= deadline {
            break;
        }
        let started = Instant::now();
        let outcome: Result<(), String> = async {
            match i % 6 {
                0 | 1 => {
                    let data = bytes(&format!("soak {n}/{i}"), 1024 << (i % 7));
                    let id = BlobId::of(&data);
                    let r = upload(&http, &home.url, &home.key, &signer, id, data)
                        .await
                        .map_err(|e| format!("upload: {e}"))?;
                    if r.status() != StatusCode::CREATED && r.status() != StatusCode::OK {
                        return Err(format!("upload: {}", r.status()));
                    }
                    stored.push(id);
                }
                2 | 3 => {
                    let Some(id) = stored.last().copied() else {
                        return Ok(());
                    };
                    // Every other read goes to the relay the blob was
                    // replicated to.
                    let (relay, replica) = if i % 6 == 3 {
                        (other, true)
                    } else {
                        (home, false)
                    };
                    let r = http
                        .get(format!("{}/v1/blobs/{id}", relay.url))
                        .send()
                        .await
                        .map_err(|e| format!("get: {e}"))?;
                    if replica && r.status() == StatusCode::NOT_FOUND {
                        tally.replica_not_yet.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    if r.status() != StatusCode::OK {
                        return Err(format!("get: {}", r.status()));
                    }
                    let body = r.bytes().await.map_err(|e| format!("get body: {e}"))?;
                    if BlobId::of(&body) != id {
                        return Err(format!("get {id}: wrong bytes"));
                    }
                }
                4 => {
                    seq += 1;
                    let r = http
                        .put(format!(
                            "{}/v1/heads/{}/s",
                            home.url,
                            mailbox.verifying_key()
                        ))
                        .body(crate::heads::head(&mailbox, "s", seq))
                        .send()
                        .await
                        .map_err(|e| format!("head: {e}"))?;
                    if !r.status().is_success() {
                        return Err(format!("head: {}", r.status()));
                    }
                }
                _ => {
                    if stored.len() < 4 {
                        return Ok(());
                    }
                    let id = stored.remove(0);
                    let t = token(
                        &home.key,
                        Method::Delete,
                        TokenTarget::Blob(id),
                        unix_now() + 600,
                    );
                    let r = http
                        .delete(format!("{}/v1/blobs/{id}", home.url))
                        .header("authorization", auth_header(&t, &signer))
                        .send()
                        .await
                        .map_err(|e| format!("delete: {e}"))?;
                    if r.status() != StatusCode::NO_CONTENT {
                        return Err(format!("delete: {}", r.status()));
                    }
                }
            }
            Ok(())
        }
        .await;
        tally.requests.fetch_add(1, Ordering::Relaxed);
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        if let Err(what) = outcome {
            error(what);
        }
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of a minute or more: run it by name (CI does)"]
async fn soak_256_clients_on_three_federated_relays() {
    let secs: u64 = std::env::var("CAIRN_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    // Keys and ports first: each relay names the other two as peers.
    let planned = PlannedRelay::plan(dir.path(), 3);
    let mut processes = Vec::new();
    for (i, relay) in planned.iter().enumerate() {
        let peers: Vec<String> = planned
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, peer)| peer.as_peer_flag())
            .collect();
        let mut args = vec![
            "--key-rate",
            "0",
            "--addr-rate",
            "0",
            "--max-uploads",
            "512",
        ];
        for peer in &peers {
            args.extend(["--peer", peer.as_str()]);
        }
        processes.push(RelayProcess::spawn_at(
            Path::new(BIN),
            &relay.data,
            &relay.listen(),
            &args,
        ));
    }
    let relays: Arc<Vec<Target>> = Arc::new(
        processes
            .iter()
            .zip(&planned)
            .map(|(p, planned)| Target {
                url: p.url(),
                key: planned.key,
            })
            .collect(),
    );

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(n, Arc::clone(&relays), deadline, Arc::clone(&tally))))
        .collect();
    // The relays' memory over the run.
    let pids: Vec<u32> = processes.iter().map(RelayProcess::pid).collect();
    let mut curve = Vec::new();
    while Instant::now() < deadline {
        let rss: Vec<u64> = pids
            .iter()
            .map(|pid| cairn_testkit::rss_bytes(*pid).unwrap_or(0) >> 20)
            .collect();
        curve.push((started.elapsed().as_secs(), rss));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await.unwrap());
    }
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get(latencies.len() * p / 100)
            .copied()
            .unwrap_or(0)
    };
    eprintln!("soak: {CLIENTS} clients, 3 relays, {secs} s");
    eprintln!("relay RSS (MiB) by second:");
    for (at, rss) in &curve {
        eprintln!("  {at:>4} s  {rss:?}");
    }
    let requests = tally.requests.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    eprintln!(
        "requests {requests}, errors {errors}, replica reads before the replica arrived {}, p50 {} ms, p99 {} ms",
        tally.replica_not_yet.load(Ordering::Relaxed),
        f64::from(pct(50)) / 1e3,
        f64::from(pct(99)) / 1e3
    );
    assert!(
        requests > CLIENTS as u64,
        "the clients made almost no requests"
    );
    assert_eq!(errors, 0, "errors under load (each is printed above)");
    for p in processes {
        assert!(p.terminate().success());
    }
}
