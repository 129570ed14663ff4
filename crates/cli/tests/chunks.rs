//! Large files as chunks (PROTOCOL.md §10.8): an edit re-sends only the
//! chunks around it, a second copy of a file sends nothing, an interrupted
//! put resumes, a range costs only its chunks, and a chunk a relay lost or
//! altered is routed around and repaired.

use std::io::Write as _;
use std::time::Duration;

use crate::common::{Device, Relay, data_with_marker, disk_contains, laptop_on_three_relays, walk};

const MARKER: &[u8] = b"chunked plaintext marker";

/// Chunks the device's chunk index records (72 bytes each) as acknowledged
/// by every relay of a put.
fn recorded_chunks(device: &Device) -> u64 {
    std::fs::read_dir(device.home().join("chunks"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".chunks"))
        .map(|e| e.metadata().unwrap().len() / 72)
        .sum()
}

/// Starts `cairn put - --name big` with the first half of `data` on its
/// standard input, and returns once the index records `at_least` chunks:
/// the running put (its output piped) and its standard input.
async fn put_half_of(
    device: &Device,
    data: &[u8],
    at_least: u64,
) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = device
        .command(&["put", "-", "--name", "big"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data[..data.len() / 2]).unwrap();
    for _ in 0..3000 {
        if recorded_chunks(device) >= at_least {
            return (child, stdin);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no {at_least} chunks acknowledged in 30 s");
}

/// Bytes a put sent to relays, as its report says.
fn sent(put: &serde_json::Value) -> u64 {
    put["sent"].as_u64().unwrap()
}

async fn put(device: &Device, data: &[u8], name: &str) -> serde_json::Value {
    let src = device.dir.path().join(format!("src-{name}"));
    std::fs::write(&src, data).unwrap();
    device
        .run(&["put", src.to_str().unwrap(), "--name", name, "--json"])
        .await
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_resends_only_its_chunks_and_a_copy_sends_none() {
    let (a, b) = (Relay::start().await, Relay::start().await);
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b]).await;
    let mut data = data_with_marker(24 << 20, MARKER);

    let first = put(&device, &data, "big").await;
    let chunks = first["chunks"].as_u64().unwrap();
    assert!(chunks >= 4, "24 MiB in {chunks} chunks: {first}");
    assert_eq!(first["reused"], 0);
    // Every chunk went to both relays, once.
    let full = sent(&first);
    assert!(full > 2 * data.len() as u64, "{first}");
    assert_eq!(device.get_data("big").await, data);

    // The same bytes under another name: every chunk is claimed, none sent.
    let copy = put(&device, &data, "copy").await;
    assert_eq!(copy["reused"].as_u64().unwrap(), chunks, "{copy}");
    assert!(sent(&copy) < 64 << 10, "a copy sent {} bytes", sent(&copy));

    // One byte changed in the middle: only the chunks around it travel.
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    let edited = put(&device, &data, "big").await;
    let resent = sent(&edited);
    eprintln!(
        "1-byte edit of 24 MiB: {resent} bytes sent to 2 relays ({} of {chunks} chunks reused)",
        edited["reused"]
    );
    assert!(edited["reused"].as_u64().unwrap() >= chunks - 2, "{edited}");
    assert!(
        resent * 4 < full,
        "an edit re-sent {resent} of {full} bytes"
    );
    assert_eq!(device.get_data("big").await, data);
    assert_ne!(device.get_data("copy").await, data);

    // `ls` still speaks in files.
    let list = device.run(&["ls", "--json"]).await.json();
    let big = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "big")
        .unwrap();
    assert_eq!(big["size"].as_u64().unwrap(), data.len() as u64);
    assert!(big["chunks"].as_u64().unwrap() >= 4);
    for relay in [&a, &b] {
        assert_eq!(
            disk_contains(&relay.data(), MARKER),
            None,
            "plaintext on disk"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_fetches_only_the_chunks_it_meets() {
    let a = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    let data = data_with_marker(20 << 20, MARKER);
    let stored = put(&device, &data, "big").await;
    let chunks = stored["chunks"].as_u64().unwrap();

    let out = device.dir.path().join("part");
    let (start, last) = (9_000_000usize, 9_100_000usize);
    let got = device
        .run(&[
            "get",
            "big",
            "--range",
            &format!("{start}-{last}"),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ])
        .await
        .json();
    assert_eq!(std::fs::read(&out).unwrap(), &data[start..=last]);
    let fetched = got["chunks"].as_u64().unwrap();
    assert!(
        (1..=2).contains(&fetched),
        "{fetched} of {chunks} chunks for 100 kB"
    );
    assert_eq!(got["range"]["start"], start);
    assert_eq!(got["range"]["end"], last + 1);

    // `-o -` is standard output.
    let first = format!("0-{}", MARKER.len() - 1);
    let dash = device
        .run(&["get", "big", "--range", &first, "-o", "-"])
        .await;
    assert_eq!(dash.code, 0, "{}", dash.stderr);
    assert_eq!(dash.stdout.as_bytes(), MARKER);
    assert!(!std::path::Path::new("-").exists(), "a file named `-`");

    // To standard output (a stretch that is text, to compare as text).
    let at = data
        .windows(MARKER.len())
        .rposition(|w| w == MARKER)
        .unwrap();
    let tail = device
        .run(&[
            "get",
            "big",
            "--range",
            &format!("{at}-{}", at + MARKER.len() - 1),
        ])
        .await;
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    assert_eq!(tail.stdout.as_bytes(), MARKER);

    // A one-blob file takes ranges too, to the end of the file.
    let small = b"0123456789".repeat(500);
    put(&device, &small, "small").await;
    let part = device.run(&["get", "small", "--range", "4990-"]).await;
    assert_eq!(part.stdout.as_bytes(), &small[4990..]);

    // Ranges that cannot be served say why and write nothing.
    let nothing = device.dir.path().join("nothing");
    for (range, why) in [("30-20", "ends before it starts"), ("x-1", "not a range")] {
        let run = device
            .run(&[
                "get",
                "big",
                "--range",
                range,
                "-o",
                nothing.to_str().unwrap(),
            ])
            .await;
        assert!(run.err().contains(why), "{range}: {}", run.stderr);
    }
    let past = format!("{}-", data.len());
    for name in ["big", "small"] {
        let run = device
            .run(&[
                "get",
                name,
                "--range",
                &past,
                "-o",
                nothing.to_str().unwrap(),
            ])
            .await;
        assert!(
            run.err().contains("the range starts at byte"),
            "{}",
            run.stderr
        );
    }
    assert!(!nothing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_put_run_again_sends_only_what_is_missing() {
    let (a, b) = (Relay::start().await, Relay::start().await);
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b]).await;
    let data = data_with_marker(40 << 20, MARKER);

    // The put reads standard input; it gets the first half, and is killed
    // once the relays acknowledged chunks of it.
    let (mut child, stdin) = put_half_of(&device, &data, 4).await;
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let done_before = recorded_chunks(&device);
    assert_eq!(
        device.run(&["ls", "--json"]).await.json(),
        serde_json::json!([])
    );

    let again = put(&device, &data, "big").await;
    let reused = again["reused"].as_u64().unwrap();
    let chunks = again["chunks"].as_u64().unwrap();
    eprintln!(
        "resumed: {reused} of {chunks} chunks reused, {} bytes sent",
        sent(&again)
    );
    assert!(
        reused >= done_before,
        "{done_before} chunks were acknowledged: {again}"
    );
    let full = 2 * data.len() as u64;
    assert!(
        sent(&again) < full - done_before * (512 << 10) * 2,
        "the resumed put sent {} bytes",
        sent(&again)
    );
    assert_eq!(device.get_data("big").await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_chunks_are_routed_around_and_repaired_one_by_one() {
    let ([a, b, c], device) = laptop_on_three_relays().await;
    let data = data_with_marker(12 << 20, MARKER);
    let stored = put(&device, &data, "big").await;
    let chunks = stored["chunks"].as_u64().unwrap();
    assert!(chunks >= 3, "{stored}");
    let blobs = device.run(&["ls", "--json"]).await.json()[0]["chunks"]
        .as_u64()
        .unwrap()
        + 1;

    // Relays a and b serve every chunk with a flipped bit.
    for relay in [&a, &b] {
        let mut files = Vec::new();
        walk(&relay.data().join("blobs"), &mut files);
        let mut altered = 0;
        for path in files {
            if path.file_name().unwrap().len() == 64
                && std::fs::metadata(&path).unwrap().len() > 400 << 10
            {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[777] ^= 0x01;
                std::fs::write(&path, bytes).unwrap();
                altered += 1;
            }
        }
        assert!(altered >= 3, "{altered} chunk files on {}", relay.url());
    }

    // Every chunk still arrives intact: each one that came wrong was
    // fetched again from another relay.
    let out = device.dir.path().join("out");
    let got = device
        .run(&["get", "big", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data);
    let skipped = got["skipped"].as_array().unwrap();
    assert!(!skipped.is_empty(), "{got}");
    for why in skipped {
        assert!(why.as_str().unwrap().contains("do not match"), "{why}");
    }

    // Repair audits every blob's copies and replaces the altered ones (and
    // every other copy on the two relays now flagged) from c's, onto two
    // new relays.
    let (d, e) = (Relay::start().await, Relay::start().await);
    for relay in [&d, &e] {
        device.run(&["relay", "add", &relay.url()]).await.ok();
    }
    let repaired = device.run(&["repair", "--json"]).await.json();
    let restored = repaired["restored"].as_array().unwrap();
    assert_eq!(restored.len() as u64, 2 * blobs, "{repaired}");
    assert!(
        restored
            .iter()
            .any(|r| r["name"].as_str().unwrap().starts_with("big (chunk blob")),
        "{repaired}"
    );
    // The next repair finds the file whole, and it reads from the new
    // copies alone.
    let again = device.run(&["repair", "--json"]).await.json();
    assert_eq!(again["restored"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["healthy"], 1, "{again}");
    drop(c);
    assert_eq!(device.get_data("big").await, data);
}

/// Every blob of a chunked file on the relay at `url`'s data directory.
fn blob_files(relay: &Relay) -> Vec<String> {
    let mut files = Vec::new();
    walk(&relay.data().join("blobs"), &mut files);
    files
        .into_iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .filter(|n| n.len() == 64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_relay_out_moves_every_chunk_and_audits_count_them() {
    let ([a, mut b, c], device) = laptop_on_three_relays().await;
    let data = data_with_marker(10 << 20, MARKER);
    put(&device, &data, "big").await;
    let listed = device.run(&["ls", "--json"]).await.json();
    let blobs = listed[0]["chunks"].as_u64().unwrap() + 1;
    let on_b = blob_files(&b);

    let new = Relay::start().await;
    let report = device
        .run(&["relay", "rotate", &b.url(), &new.url(), "--json"])
        .await
        .json();
    assert_eq!(report["moved"], serde_json::json!(["big"]), "{report}");
    assert_eq!(report["removed"], true, "{report}");
    // Every chunk went, and every one was deleted where it was.
    for id in &on_b {
        assert!(new.blob_file(id).is_some(), "{id} is not on the new relay");
        assert!(b.blob_file(id).is_none(), "{id} is still on the old relay");
    }
    b.stop().await;
    let audit = device.run(&["audit", "--json"]).await.json();
    assert_eq!(audit["copies"].as_u64().unwrap(), 3 * blobs, "{audit}");
    for relay in audit["relays"].as_array().unwrap() {
        assert_eq!(relay["passed"].as_u64().unwrap(), blobs, "{audit}");
    }
    assert_eq!(device.get_data("big").await, data);
    drop((a, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_device_reuses_every_chunk_and_removals_free_them_after_a_hold() {
    let a = Relay::start().await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&a]).await;
    let data = data_with_marker(10 << 20, MARKER);
    put(&laptop, &data, "big").await;
    let stored = blob_files(&a);

    // A second device syncs, reads the file, and stores the same bytes
    // under another name: it reads the laptop's manifest and sends no chunk.
    let desk = Device::new();
    let (approved, joined) = crate::devices::pair(&laptop, &desk, &a, false, "30").await;
    approved.ok();
    joined.ok();
    desk.run(&["sync"]).await.ok();
    assert_eq!(desk.get_data("big").await, data);
    let copy = put(&desk, &data, "copy").await;
    assert_eq!(copy["reused"], copy["chunks"], "{copy}");

    // `cairn export` writes both, whole.
    let out = desk.dir.path().join("export");
    desk.run(&["export", out.to_str().unwrap()]).await.ok();
    assert!(std::fs::read(out.join("big")).unwrap() == data);
    assert!(std::fs::read(out.join("copy")).unwrap() == data);

    // Removing one name keeps the chunks the other still names.
    laptop.run(&["rm", "big"]).await.ok();
    desk.run(&["sync"]).await.ok();
    assert_eq!(desk.get_data("copy").await, data);

    // Removing both holds the chunks (another device may be storing a file
    // that reuses them, and this one would not know yet): a put of the
    // same bytes now still finds and claims every one.
    desk.run(&["rm", "copy"]).await.ok();
    laptop.run(&["sync"]).await.ok();
    desk.run(&["sync"]).await.ok();
    let held = stored.iter().filter(|id| a.blob_file(id).is_some()).count();
    assert_eq!(held, stored.len(), "chunks were let go of at once");
    let again = put(&desk, &data, "again").await;
    assert_eq!(again["reused"], again["chunks"], "{again}");

    // Once the hold is over, every blob goes when both devices synced.
    let at_once = [("CAIRN_CHUNK_HOLD_SECS", "0")];
    desk.run_with(&["rm", "again"], &at_once).await.ok();
    laptop.run_with(&["sync"], &at_once).await.ok();
    desk.run_with(&["sync"], &at_once).await.ok();
    let left: Vec<_> = stored
        .iter()
        .filter(|id| a.blob_file(id).is_some())
        .collect();
    assert!(
        left.is_empty(),
        "{} of {} blobs left: {left:?}",
        left.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_cut_off_by_its_relay_says_to_run_it_again_and_then_resumes() {
    let mut a = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    let data = data_with_marker(40 << 20, MARKER);

    let (child, mut stdin) = put_half_of(&device, &data, 3).await;
    // The relay goes away mid-file; the rest of the input follows.
    a.stop().await;
    let rest = data[data.len() / 2..].to_vec();
    let writer = std::thread::spawn(move || {
        // The put may stop reading once it fails.
        let _ = stdin.write_all(&rest);
    });
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    writer.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("before stopping; nothing was recorded"),
        "{err}"
    );
    assert!(err.contains("Run the same `cairn put` again"), "{err}");

    a.restart().await;
    let again = put(&device, &data, "big").await;
    assert!(again["reused"].as_u64().unwrap() >= 3, "{again}");
    assert_eq!(device.get_data("big").await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_held_only_by_a_relay_without_the_manifest_is_still_read() {
    let (a, b, c) = (
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    );
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b, &c]).await;
    device.run(&["config", "--replicas", "2"]).await.ok();
    let data = data_with_marker(10 << 20, MARKER);
    put(&device, &data, "big").await;

    // One chunk leaves the file's two relays and is found on the third
    // alone (as a transfer or a repair can leave it).
    let relays = [&a, &b, &c];
    let holders: Vec<&Relay> = relays
        .iter()
        .copied()
        .filter(|r| !blob_files(r).is_empty())
        .collect();
    assert_eq!(holders.len(), 2);
    let other = relays
        .iter()
        .copied()
        .find(|r| blob_files(r).is_empty())
        .unwrap();
    let chunk = blob_files(holders[0])[0].clone();
    let bytes = std::fs::read(holders[0].blob_file(&chunk).unwrap()).unwrap();
    assert_eq!(
        other.upload_as(&cairn_testkit::key("someone"), bytes).await,
        201
    );
    for relay in &holders {
        std::fs::remove_file(relay.blob_file(&chunk).unwrap()).unwrap();
    }
    let out = device.dir.path().join("out");
    let got = device
        .run(&["get", "big", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data);
    assert!(got["skipped"].to_string().contains(&chunk), "{got}");
}
