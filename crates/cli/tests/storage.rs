//! Storing and fetching through three relays.

use crate::common::{Device, Relay, data_with_marker, disk_contains};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a9c";

async fn three_relays() -> (Relay, Relay, Relay) {
    (
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    )
}

/// Stores `data` as `name` and reads it back; returns the put report.
async fn round_trip(device: &Device, name: &str, data: &[u8]) -> serde_json::Value {
    let src = device.dir.path().join("src");
    std::fs::write(&src, data).unwrap();
    let put = device
        .run(&["put", src.to_str().unwrap(), "--name", name, "--json"])
        .await
        .json();
    assert_eq!(put["copies"].as_array().unwrap().len(), 3, "{put}");
    assert_eq!(put["size"], data.len() as u64);
    let out = device.dir.path().join("out");
    let got = device
        .run(&["get", name, "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert_eq!(got["blob"], put["blob"]);
    assert!(std::fs::read(&out).unwrap() == data, "{name}: bytes differ");
    put
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_three_relays_and_no_plaintext_on_disk() {
    let (a, b, c) = three_relays().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b, &c]).await;

    let sizes = [0usize, 1, 1 << 20];
    for (i, size) in sizes.iter().enumerate() {
        round_trip(
            &device,
            &format!("file-{i}"),
            &data_with_marker(*size, MARKER),
        )
        .await;
    }
    // Standard output works too.
    let run = device.run(&["get", "file-1"]).await;
    assert_eq!(run.ok().as_bytes(), &data_with_marker(1, MARKER)[..]);

    let list = device.run(&["ls", "--json"]).await.json();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["file-0", "file-1", "file-2"]);

    for relay in [&a, &b, &c] {
        assert_eq!(
            disk_contains(&relay.data(), MARKER),
            None,
            "plaintext on a relay's disk"
        );
        assert_eq!(
            disk_contains(&relay.data(), b"file-2"),
            None,
            "a name leaked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_streams_through_in_bounded_memory() {
    let (a, b, c) = three_relays().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b, &c]).await;
    let data = data_with_marker(300 << 20, MARKER);
    let src = device.dir.path().join("big");
    std::fs::write(&src, &data).unwrap();

    // The whole file never sits in the client's memory: it goes as chunks,
    // a few at a time, each way.
    const BOUND: u64 = 64 << 20;
    let (put, peak) = device
        .run_sampling_memory(&["put", src.to_str().unwrap(), "--json"])
        .await;
    let put = put.json();
    assert_eq!(put["copies"].as_array().unwrap().len(), 3);
    eprintln!("put of 300 MiB: peak RSS {} MiB", peak >> 20);
    assert!(peak < BOUND, "put of 300 MiB peaked at {} MiB", peak >> 20);
    let out = device.dir.path().join("out");
    let (get, peak) = device
        .run_sampling_memory(&["get", "big", "-o", out.to_str().unwrap(), "--json"])
        .await;
    get.json();
    eprintln!("get of 300 MiB: peak RSS {} MiB", peak >> 20);
    assert!(peak < BOUND, "get of 300 MiB peaked at {} MiB", peak >> 20);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_works_with_two_of_three_relays_stopped() {
    let (mut a, mut b, c) = three_relays().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b, &c]).await;
    let data = data_with_marker(100_000, MARKER);
    round_trip(&device, "doc", &data).await;

    a.stop().await;
    b.stop().await;
    let out = device.dir.path().join("after");
    let got = device
        .run(&["get", "doc", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert_eq!(got["relay"], c.url());
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // `ls` reads the file list from the one relay left.
    let list = device.run(&["ls", "--json"]).await.json();
    assert_eq!(list[0]["name"], "doc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_are_detected_and_skipped() {
    let (a, b, c) = three_relays().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b, &c]).await;
    let data = data_with_marker(200_000, MARKER);
    let put = round_trip(&device, "doc", &data).await;
    let id = put["blob"].as_str().unwrap();

    // Two relays now serve corrupted bytes (one flipped bit each).
    for relay in [&a, &b] {
        let path = relay.blob_file(id).expect("a 200 kB blob is a file");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    }
    let out = device.dir.path().join("out");
    let got = device
        .run(&["get", "doc", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert_eq!(got["relay"], c.url());
    assert_eq!(std::fs::read(&out).unwrap(), data);
    for skipped in got["skipped"].as_array().unwrap() {
        assert!(skipped.as_str().unwrap().contains("do not match"), "{got}");
    }

    // With every copy corrupted, get fails, says why, and writes nothing.
    let path = c.blob_file(id).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5] ^= 0x80;
    std::fs::write(&path, bytes).unwrap();
    let out2 = device.dir.path().join("out2");
    let run = device
        .run(&["get", "doc", "-o", out2.to_str().unwrap()])
        .await;
    let err = run.err();
    assert!(err.contains("do not match"), "{err}");
    assert!(!out2.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_needs_every_copy_and_leaves_nothing_when_short() {
    let (a, b, mut c) = three_relays().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b, &c]).await;
    c.stop().await;

    let src = device.dir.path().join("src");
    std::fs::write(&src, data_with_marker(50_000, MARKER)).unwrap();
    let run = device.run(&["put", src.to_str().unwrap()]).await;
    let err = run.err();
    assert!(err.contains("stored 2 of the 3 copies required"), "{err}");
    let named = format!(
        "relay {} is unreachable (connection refused)",
        c.url().trim_start_matches("http://")
    );
    assert!(err.contains(&named), "the failing relay is named: {err}");
    // Nothing recorded, and the two copies made were removed again.
    let list = device.run(&["ls", "--json"]).await.json();
    assert_eq!(list.as_array().unwrap().len(), 0);
    for relay in [&a, &b] {
        let mut files = Vec::new();
        crate::common::walk(&relay.data().join("blobs"), &mut files);
        assert!(
            files
                .iter()
                .all(|f| std::fs::metadata(f).unwrap().len() < 16 << 10),
            "an orphan copy stayed on {}: {files:?}",
            relay.url()
        );
    }

    // Asking for fewer copies makes it succeed.
    device.run(&["config", "--replicas", "2"]).await.ok();
    let put = device
        .run(&["put", src.to_str().unwrap(), "--json"])
        .await
        .json();
    assert_eq!(put["copies"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_set_warns_and_rm_deletes_copies() {
    let a = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    let src = device.dir.path().join("notes.txt");
    std::fs::write(&src, data_with_marker(40_000, MARKER)).unwrap();
    let put = device.run(&["put", src.to_str().unwrap(), "--json"]).await;
    let report = put.json();
    assert_eq!(report["name"], "notes.txt");
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("redundancy is below target")),
        "{report}"
    );
    let id = report["blob"].as_str().unwrap();
    assert!(a.blob_file(id).is_some());

    let rm = device.run(&["rm", "notes.txt", "--json"]).await.json();
    assert_eq!(rm["deleted"][0], a.url());
    assert!(a.blob_file(id).is_none());
    let run = device.run(&["get", "notes.txt"]).await;
    assert!(run.err().contains("no such file: notes.txt"), "{run:?}");
    let run = device.run(&["rm", "notes.txt"]).await;
    assert!(run.err().contains("no such file: notes.txt"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_files_in_one_put() {
    let a = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    let dir = device.dir.path();
    let paths: Vec<_> = (0..3)
        .map(|i| {
            let path = dir.join(format!("part-{i}"));
            std::fs::write(&path, data_with_marker(1000 + i, MARKER)).unwrap();
            path
        })
        .collect();
    let args: Vec<&str> = std::iter::once("put")
        .chain(paths.iter().map(|p| p.to_str().unwrap()))
        .chain(["--json"])
        .collect();
    let reports = device.run(&args).await.json();
    assert_eq!(reports.as_array().unwrap().len(), 3);
    let list = device.run(&["ls", "--json"]).await.json();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["part-0", "part-1", "part-2"]);
    let run = device.run(&["put", "x", "y", "--name", "z"]).await;
    assert!(
        run.err().contains("--name needs exactly one file"),
        "{run:?}"
    );
}

/// `cairn export` writes every file, verified and decrypted, into a new
/// directory; a stored name is never trusted as a path (a name from any
/// device of the identity could try to climb out); a file no relay can
/// serve is reported and the rest are written; a directory with anything
/// in it is refused untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_every_file_and_no_name_leaves_the_directory() {
    let relay = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&relay]).await;
    let names = [
        "a.txt",
        "notes/2026/june.txt",
        "../climb-out",
        "/etc/cairn-export-test",
        "a.txt/inside-a-file",
        "gone",
    ];
    let mut blobs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let put = round_trip_one(&device, name, &data_with_marker(20_000 + i, MARKER)).await;
        blobs.push(put["blob"].as_str().unwrap().to_owned());
    }
    // One file's only copy is lost.
    std::fs::remove_file(relay.blob_file(&blobs[5]).unwrap()).unwrap();

    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("export");
    let run = device
        .run(&["export", out.to_str().unwrap(), "--json"])
        .await;
    assert_eq!(run.code, 1, "a lost file makes the export fail: {run:#?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], "gone");
    let expected = [
        ("a.txt", "a.txt", false),
        ("notes/2026/june.txt", "notes/2026/june.txt", false),
        ("../climb-out", "%2E.%2Fclimb-out", true),
        ("/etc/cairn-export-test", "%2Fetc%2Fcairn-export-test", true),
        ("a.txt/inside-a-file", "a.txt%2Finside-a-file", true),
    ];
    for (name, path, escaped) in expected {
        let i = names.iter().position(|n| *n == name).unwrap();
        let written = std::fs::read(out.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(written == data_with_marker(20_000 + i, MARKER), "{name}");
        let entry = report["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap();
        assert_eq!(entry["escaped"], escaped, "{entry}");
    }
    // Nothing was written beside the export directory, nor a trace of the
    // lost file.
    let beside: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert_eq!(beside.len(), 1);
    assert!(!out.join("gone").exists());

    // Into a directory that holds anything: refused, nothing changed.
    let before = std::fs::read(out.join("a.txt")).unwrap();
    let err = device.run(&["export", out.to_str().unwrap()]).await;
    assert!(err.err().contains("is not empty"), "{err:#?}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), before);
}

/// Stores `data` as `name` on the device's one relay.
async fn round_trip_one(device: &Device, name: &str, data: &[u8]) -> serde_json::Value {
    let src = device.dir.path().join("src");
    std::fs::write(&src, data).unwrap();
    device
        .run(&["put", src.to_str().unwrap(), "--name", name, "--json"])
        .await
        .json()
}

/// A relay that takes part in a put and refuses its copy (here its quota
/// for this device is too small, which its info document's free space
/// does not show) is replaced by the next relay of the set: the put
/// stores all its copies, and names the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refusing_its_copy_during_a_put_is_replaced_by_a_spare() {
    let (a, b, c) = three_relays().await;
    // The most room of the four: ranked first, so tried in the first
    // batch of three.
    let stingy = Relay::start_with(|config| {
        config.capacity_bytes = 20 << 30;
        config.limits.key_quota_bytes = 64 << 10;
    })
    .await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b, &c, &stingy]).await;

    let data = data_with_marker(200_000, MARKER);
    let put = device.put_report("src", &data).await;
    let copies = put["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 3, "{put}");
    assert!(!copies.contains(&stingy.url().into()), "{put}");
    let warning = put["warnings"][0].as_str().unwrap();
    assert!(warning.contains("replaced a failing relay"), "{put}");
    assert!(
        warning.contains(stingy.url().trim_start_matches("http://")),
        "{put}"
    );
    assert!(warning.contains("quota_exceeded"), "{put}");
    assert_eq!(device.get_data("src").await, data);
}
