//! Durability by killing: a relay process SIGKILLed in the middle of a
//! stream of concurrent uploads loses nothing it acknowledged.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::BlobId;
use cairn_testkit::{RelayProcess, arg, key, run};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{bytes, info_document, relay_key, upload};

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
    for id in &acked {
        let r = http
            .get(format!("{url}/v1/blobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "acknowledged blob {id} lost");
        assert_eq!(
            BlobId::of(&r.bytes().await.unwrap()),
            *id,
            "blob {id} corrupt"
        );
    }
    assert!(
        std::fs::read_dir(data.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "temp files of aborted uploads are cleaned at start"
    );
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
