//! Misbehaving relays: one relay of three, a [`FaultyRelay`] proxy in front
//! of a real relay, corrupts, drops, forgets, withholds, dawdles, serves
//! stale heads or lies in its info document. Each test checks what a user
//! sees: the data stays readable, audits and the relay record name the
//! culprit for what it did (and only for misbehaviour), and repair moves
//! the copy to a fresh relay.

use std::time::Duration;

use cairn_testkit::faulty::{FaultyRelay, InfoLie};
use serde_json::Value;

use crate::common::{Device, Relay, data_with_marker};
use crate::devices::pair;

/// Two honest relays and one faulty one, in a device's set (replicas 3,
/// the default: every file has a copy on each).
struct Trio {
    honest: [Relay; 2],
    /// The real relay behind the faulty proxy (kept alive for it).
    _behind: Relay,
    faulty: FaultyRelay,
    laptop: Device,
}

impl Trio {
    async fn start() -> Self {
        let honest = [Relay::start().await, Relay::start().await];
        let behind = Relay::start().await;
        let faulty = FaultyRelay::start(&behind.url(), behind.handle().signing_key().clone()).await;
        let laptop = Device::new();
        laptop.init("laptop").await;
        laptop.add_relays(&[&honest[0], &honest[1]]).await;
        laptop.run(&["relay", "add", faulty.url()]).await.ok();
        Self {
            honest,
            _behind: behind,
            faulty,
            laptop,
        }
    }

    fn faulty_url(&self) -> String {
        self.faulty.url().to_owned()
    }

    /// Stores `len` bytes as `name`; returns the blob id and the bytes.
    async fn put(&self, name: &str, len: usize) -> (String, Vec<u8>) {
        let data = data_with_marker(len, name.as_bytes());
        let src = self.laptop.dir.path().join(name);
        std::fs::write(&src, &data).unwrap();
        let put = self
            .laptop
            .run(&["put", src.to_str().unwrap(), "--json"])
            .await
            .json();
        let copies = put["copies"].as_array().unwrap();
        assert_eq!(copies.len(), 3, "a copy on every relay: {put}");
        assert!(copies.contains(&self.faulty_url().into()), "{put}");
        (put["blob"].as_str().unwrap().to_owned(), data)
    }

    /// `cairn get NAME` returns `data`.
    async fn assert_get(&self, name: &str, data: &[u8]) {
        let out = self.laptop.dir.path().join(format!("{name}.out"));
        self.laptop
            .run(&["get", name, "-o", out.to_str().unwrap(), "--json"])
            .await
            .json();
        assert!(std::fs::read(&out).unwrap() == data, "{name} intact");
    }

    /// The `relay check --json` entry of the faulty relay.
    async fn check_faulty(&self) -> Value {
        let checks = self.laptop.run(&["relay", "check", "--json"]).await.json();
        entry(&checks, &self.faulty_url())
    }
}

/// The element of a JSON array whose `url` is `url`.
#[track_caller]
fn entry(list: &Value, url: &str) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("no {url} in {list}"))
        .clone()
}

/// What a faulty relay did to a copy it should hold.
#[derive(Clone, Copy, Debug)]
enum Lost {
    /// Serves other bytes: the audit fails, the record says `corrupt`.
    Corrupt,
    /// Lied that it stored the upload: missing.
    DroppedUpload,
    /// Stored it and lost it later: missing.
    Forgot,
    /// Withholds every blob: missing.
    Withheld,
}

impl Lost {
    /// The audit counter and the misbehaviour kind it shows up under.
    fn verdict(self) -> (&'static str, &'static str) {
        match self {
            Self::Corrupt => ("failed", "corrupt"),
            Self::DroppedUpload | Self::Forgot | Self::Withheld => ("missing", "missing"),
        }
    }
}

/// Whatever the faulty relay did to the copy, the file stays readable, the
/// audit names the relay for it, the relay is flagged for it, and repair
/// moves the copy to a fresh relay, after which every audit passes.
async fn a_lost_copy_is_noticed_and_replaced(lost: Lost) {
    let trio = Trio::start().await;
    if let Lost::DroppedUpload = lost {
        trio.faulty.drop_uploads();
    }
    let (id, data) = trio.put("kept", 300_000).await;
    match lost {
        Lost::Corrupt => trio.faulty.corrupt_all(),
        Lost::DroppedUpload => {}
        Lost::Forgot => trio.faulty.forget(id.parse().unwrap()),
        Lost::Withheld => trio.faulty.withhold(),
    }
    let (counter, kind) = lost.verdict();

    trio.assert_get("kept", &data).await;

    let run = trio.laptop.run(&["audit", "--json"]).await;
    assert_eq!(run.code, 1, "misbehaviour exits 1: {run:#?}");
    let audit: Value = serde_json::from_str(&run.stdout).unwrap();
    let faulty = entry(&audit["relays"], &trio.faulty_url());
    assert_eq!(faulty[counter], 1, "{lost:?}: {audit}");
    assert_eq!(faulty["passed"], 0, "{lost:?}: {audit}");
    for honest in &trio.honest {
        assert_eq!(
            entry(&audit["relays"], &honest.url())["passed"],
            1,
            "{audit}"
        );
    }

    let check = trio.check_faulty().await;
    assert_eq!(check["flagged"], true, "{lost:?}: {check}");
    let times = check["record"]["misbehaviour"][kind].as_u64().unwrap_or(0);
    assert!(times >= 1, "{lost:?}: flagged for {kind}: {check}");

    // A fresh relay joins; repair moves the copy there.
    let fresh = Relay::start().await;
    trio.laptop.add_relays(&[&fresh]).await;
    let repair = trio.laptop.run(&["repair", "--json"]).await.json();
    let restored = repair["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 1, "{lost:?}: {repair}");
    assert_eq!(restored[0]["name"], "kept", "{repair}");
    assert_eq!(restored[0]["from"], trio.faulty_url(), "{repair}");
    assert_eq!(restored[0]["to"], fresh.url(), "{repair}");
    assert!(repair["short"].as_array().unwrap().is_empty(), "{repair}");
    assert!(
        fresh.blob_file(&id).is_some(),
        "the copy is on the fresh relay"
    );

    // Every copy the table lists now passes (the faulty relay holds none).
    let audit = trio.laptop.run(&["audit", "--json"]).await.json();
    assert_eq!(audit["copies"], 3, "{audit}");
    for relay in audit["relays"].as_array().unwrap() {
        assert_ne!(relay["url"], trio.faulty_url(), "{audit}");
        assert_eq!(relay["passed"], 1, "{audit}");
    }
    trio.assert_get("kept", &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_corrupting_copies_fails_audits_and_is_repaired_away() {
    a_lost_copy_is_noticed_and_replaced(Lost::Corrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_dropping_uploads_it_acknowledged_is_caught_missing_and_repaired_away() {
    a_lost_copy_is_noticed_and_replaced(Lost::DroppedUpload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_forgetting_a_copy_later_is_caught_missing_and_repaired_away() {
    a_lost_copy_is_noticed_and_replaced(Lost::Forgot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_withholding_everything_is_caught_missing_and_repaired_away() {
    a_lost_copy_is_noticed_and_replaced(Lost::Withheld).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_relay_still_serves_and_is_not_flagged() {
    let trio = Trio::start().await;
    let (_, data) = trio.put("slow", 100_000).await;
    trio.faulty.slow(Duration::from_millis(200));

    trio.assert_get("slow", &data).await;
    let audit = trio.laptop.run(&["audit", "--json"]).await.json();
    let faulty = entry(&audit["relays"], &trio.faulty_url());
    assert_eq!(faulty["passed"], 1, "slow is not missing: {audit}");
    assert!(trio.faulty.faulted() > 0, "answers were delayed");

    let check = trio.check_faulty().await;
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(
        check["flagged"], false,
        "slowness is no misbehaviour: {check}"
    );
    let misbehaviour = &check["record"]["misbehaviour"];
    assert_eq!(misbehaviour["corrupt"].as_u64().unwrap_or(0), 0, "{check}");
    assert_eq!(misbehaviour["missing"].as_u64().unwrap_or(0), 0, "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serving_stale_heads_is_outvoted_and_reported() {
    let trio = Trio::start().await;
    trio.put("before", 20_000).await;
    let phone = Device::new();
    let (approve, joined) = pair(&trio.laptop, &phone, &trio.honest[0], false, "30").await;
    approve.json();
    joined.json();
    // The phone publishes a head of its own, and the laptop learns it.
    let src = phone.dir.path().join("first");
    std::fs::write(&src, data_with_marker(10_000, b"first")).unwrap();
    phone.run(&["put", src.to_str().unwrap()]).await.ok();
    trio.laptop.run(&["sync", "--json"]).await.json();

    // From the laptop's next read on, the faulty relay serves those heads
    // forever; then the phone changes the table.
    trio.faulty.stale_heads();
    trio.laptop.run(&["sync", "--json"]).await.json();
    let src = phone.dir.path().join("second");
    std::fs::write(&src, data_with_marker(10_000, b"second")).unwrap();
    phone.run(&["put", src.to_str().unwrap()]).await.ok();

    let report = trio.laptop.run(&["sync", "--json"]).await.json();
    let stale: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "stale_head")
        .collect();
    assert!(
        stale.iter().any(|f| f["relay"] == trio.faulty_url()),
        "{report}"
    );
    assert!(
        stale.iter().all(|f| f["relay"] == trio.faulty_url()),
        "only the faulty relay is stale: {report}"
    );
    // Newest head wins: the laptop has the phone's change all the same.
    let list = trio.laptop.run(&["ls", "--json"]).await.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"second"), "{list}");
    // Serving the phone's old head could be a missed update: no flag.
    assert_eq!(trio.check_faulty().await["flagged"], false);

    // But the laptop's own head: the relay acknowledged a newer one, then
    // serves the old one. That is a rollback, and is recorded as one.
    trio.laptop.run(&["sync", "--json"]).await.json();
    let src = trio.laptop.dir.path().join("third");
    std::fs::write(&src, data_with_marker(10_000, b"third")).unwrap();
    trio.laptop.run(&["put", src.to_str().unwrap()]).await.ok();
    trio.laptop.run(&["sync", "--json"]).await.json();
    let check = trio.check_faulty().await;
    assert_eq!(check["flagged"], true, "{check}");
    assert_eq!(check["record"]["misbehaviour"]["stale_head"], 1, "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lie_in_an_info_document_is_believed_until_the_relay_contradicts_it() {
    let trio = Trio::start().await;
    let honest = trio.laptop.run(&["relay", "check", "--json"]).await.json();
    let truth = entry(&honest, &trio.honest[0].url());
    trio.faulty.lie_info(InfoLie {
        capacity_free: 1 << 40,
        retention_secs: 86_400,
    });

    // The document verifies (signed by the pinned key, figures
    // consistent), so the client shows the claim: nothing in one document
    // betrays the lie. Acting against it does (next test): refusing room
    // it claims, or losing a copy within the retention it claims (which
    // audits record as `missing`).
    let check = trio.check_faulty().await;
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["info"]["capacity_free"], 1u64 << 40, "{check}");
    assert_eq!(check["info"]["retention_secs"], 86_400, "{check}");
    assert_ne!(
        truth["info"]["retention_secs"], 86_400,
        "the lie differs from the truth: {truth}"
    );
    assert_eq!(check["flagged"], false, "{check}");
}

/// A device with nothing cached yet reads the table and every file past a
/// relay that corrupts, withholds, or never stored anything.
async fn a_new_device_reads_past_a_faulty_relay(lost: Lost) {
    let trio = Trio::start().await;
    if let Lost::DroppedUpload = lost {
        trio.faulty.drop_uploads();
    }
    let (_, data) = trio.put("shared", 50_000).await;
    match lost {
        Lost::Corrupt => trio.faulty.corrupt_all(),
        Lost::DroppedUpload | Lost::Forgot => {}
        Lost::Withheld => trio.faulty.withhold(),
    }
    let phone = Device::new();
    let (approve, joined) = pair(&trio.laptop, &phone, &trio.honest[0], false, "30").await;
    approve.json();
    joined.json();
    let out = phone.dir.path().join("shared.out");
    let get = phone
        .run(&["get", "shared", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "{lost:?}: intact");
    assert_ne!(get["relay"], trio.faulty_url(), "{lost:?}: {get}");
    assert!(
        trio.faulty.faulted() > 0,
        "{lost:?}: the fault was exercised"
    );
    let sync = phone.run(&["sync", "--json"]).await.json();
    assert_eq!(sync["files"], 1, "{lost:?}: {sync}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_reads_past_a_corrupting_relay() {
    a_new_device_reads_past_a_faulty_relay(Lost::Corrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_reads_past_a_withholding_relay() {
    a_new_device_reads_past_a_faulty_relay(Lost::Withheld).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_reads_past_a_relay_that_dropped_uploads() {
    a_new_device_reads_past_a_faulty_relay(Lost::DroppedUpload).await;
}

/// Three relays, each behind a proxy; the first two answer a second late,
/// so the third is every download's first choice.
struct FirstChoice {
    _relays: [Relay; 3],
    proxies: [FaultyRelay; 3],
    laptop: Device,
}

impl FirstChoice {
    async fn start() -> Self {
        let relays = [
            Relay::start().await,
            Relay::start().await,
            Relay::start().await,
        ];
        let mut proxies = Vec::new();
        for relay in &relays {
            proxies
                .push(FaultyRelay::start(&relay.url(), relay.handle().signing_key().clone()).await);
        }
        let proxies: [FaultyRelay; 3] = proxies.try_into().unwrap();
        let laptop = Device::new();
        laptop.init("laptop").await;
        for proxy in &proxies {
            laptop.run(&["relay", "add", proxy.url()]).await.ok();
        }
        Self {
            _relays: relays,
            proxies,
            laptop,
        }
    }

    fn slow_down_the_others(&self) {
        for proxy in &self.proxies[..2] {
            proxy.slow(Duration::from_secs(1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_served_corrupt_falls_back_and_flags_the_relay() {
    let set = FirstChoice::start().await;
    let data = data_with_marker(200_000, b"downloaded past a liar");
    let src = set.laptop.dir.path().join("doc");
    std::fs::write(&src, &data).unwrap();
    set.laptop
        .run(&["put", src.to_str().unwrap(), "--json"])
        .await
        .json();
    let faulty = &set.proxies[2];
    faulty.corrupt_all();
    set.slow_down_the_others();

    let out = set.laptop.dir.path().join("doc.out");
    let get = set
        .laptop
        .run(&["get", "doc", "-o", out.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "intact");
    assert!(faulty.faulted() > 0, "the corrupting relay was tried first");
    assert_ne!(get["relay"], faulty.url(), "{get}");
    let skipped = get["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s.as_str().unwrap().starts_with(faulty.url())),
        "{get}"
    );
    // Wrong bytes are misbehaviour, found without an audit.
    let checks = set.laptop.run(&["relay", "check", "--json"]).await.json();
    let check = entry(&checks, faulty.url());
    assert_eq!(check["flagged"], true, "{check}");
    assert!(
        check["record"]["misbehaviour"]["corrupt"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{check}"
    );
}

/// A device fetching operations from a relay that serves them altered
/// falls back to another relay (the data is safe) and records the relay's
/// misbehaviour, as `get` does for files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serving_corrupt_operations_to_a_syncing_device_is_flagged() {
    let trio = Trio::start().await;
    trio.put("an operation", 20_000).await;
    trio.faulty.corrupt_all();

    // A new device has no operation cached: it fetches each, asking the
    // last relay of its set listing the newest head first (the faulty one).
    let phone = Device::new();
    let (approve, joined) = pair(&trio.laptop, &phone, &trio.honest[0], false, "30").await;
    approve.json();
    joined.json();
    let sync = phone.run(&["sync", "--json"]).await.json();
    assert_eq!(sync["files"], 1, "{sync}");
    assert!(
        trio.faulty.faulted() > 0,
        "the corrupting relay served operations"
    );
    let checks = phone.run(&["relay", "check", "--json"]).await.json();
    let check = entry(&checks, &trio.faulty_url());
    assert_eq!(check["flagged"], true, "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_claiming_room_it_refuses_is_flagged_for_lying_in_its_info_document() {
    let honest = Relay::start().await;
    // Behind the proxy: a relay with room for 50 kB only, which claims a TiB.
    let behind = Relay::start_with(|c| c.capacity_bytes = 50_000).await;
    let faulty = FaultyRelay::start(&behind.url(), behind.handle().signing_key().clone()).await;
    faulty.lie_info(InfoLie {
        capacity_free: 1 << 40,
        retention_secs: 90 * 86_400,
    });
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&honest]).await;
    laptop.run(&["relay", "add", faulty.url()]).await.ok();

    // Two copies wanted, one relay refuses: the put fails, and says why.
    let src = laptop.dir.path().join("big");
    std::fs::write(&src, data_with_marker(200_000, b"too big for the liar")).unwrap();
    let run = laptop.run(&["put", src.to_str().unwrap()]).await;
    assert_ne!(run.code, 0, "{}", run.stdout);

    let checks = laptop.run(&["relay", "check", "--json"]).await.json();
    let liar = entry(&checks, faulty.url());
    assert_eq!(liar["flagged"], true, "{checks}");
    assert_eq!(liar["record"]["misbehaviour"]["lying_info"], 1, "{checks}");
    assert_eq!(entry(&checks, &honest.url())["flagged"], false, "{checks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_moves_even_good_copies_off_a_flagged_relay() {
    let trio = Trio::start().await;
    let (spoiled, _) = trio.put("spoiled", 30_000).await;
    let (_, kept) = trio.put("kept", 30_000).await;
    // The relay corrupts one blob only; an audit flags it.
    trio.faulty
        .update(|f| f.corrupt.add(spoiled.parse().unwrap()));
    let audit = trio.laptop.run(&["audit", "--json"]).await;
    assert_eq!(audit.code, 1, "{}", audit.stdout);
    assert_eq!(trio.check_faulty().await["flagged"], true);

    // With a fresh relay to go to, repair moves both copies off it: the
    // corrupted one, and the one it still serves intact.
    let fresh = Relay::start().await;
    trio.laptop.add_relays(&[&fresh]).await;
    let report = trio.laptop.run(&["repair", "--json"]).await.json();
    let restored = report["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 2, "{report}");
    assert!(
        restored
            .iter()
            .all(|r| r["from"] == trio.faulty_url() && r["to"] == fresh.url()),
        "{report}"
    );
    assert!(
        restored
            .iter()
            .any(|r| r["why"].as_str().unwrap().contains("flagged for corrupt")),
        "{report}"
    );
    trio.assert_get("kept", &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_stalls_is_given_up_and_fetched_elsewhere() {
    let set = FirstChoice::start().await;
    let data = data_with_marker(200_000, b"stalled halfway");
    let src = set.laptop.dir.path().join("doc");
    std::fs::write(&src, &data).unwrap();
    let put = set
        .laptop
        .run(&["put", src.to_str().unwrap(), "--json"])
        .await
        .json();
    let faulty = &set.proxies[2];
    faulty.stall(put["blob"].as_str().unwrap().parse().unwrap());
    set.slow_down_the_others();

    // A short read timeout, so the test does not wait out the default.
    let out = set.laptop.dir.path().join("doc.out");
    let get = set
        .laptop
        .run_with(
            &["get", "doc", "-o", out.to_str().unwrap(), "--json"],
            &[("CAIRN_READ_TIMEOUT_SECS", "2")],
        )
        .await
        .json();
    assert!(std::fs::read(&out).unwrap() == data, "intact");
    assert!(faulty.faulted() > 0, "the stalling relay was tried first");
    assert_ne!(get["relay"], faulty.url(), "{get}");
    // Stalling is unavailability, not a lie.
    let checks = set.laptop.run(&["relay", "check", "--json"]).await.json();
    let check = entry(&checks, faulty.url());
    assert_eq!(check["flagged"], false, "{check}");
    assert!(
        check["record"]["unavailable"].as_u64().unwrap() >= 1,
        "{check}"
    );
}
