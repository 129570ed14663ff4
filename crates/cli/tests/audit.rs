//! `cairn audit`: relays prove with slice proofs that they hold each copy;
//! one that altered a copy, and one that lost it, are told apart from the
//! honest one, and the exit code says something is wrong.

use std::sync::Arc;

use cairn_client::relay::{RelayClient, Role};
use cairn_client::scores::Misbehaviour;
use cairn_client::{
    Client, Clock, Home, InitOptions, KdfCost, Output, Passphrase, Silent, UNANSWERED_WAIT_SECS,
    Unanswered,
};
use cairn_testkit::faulty::{FaultyRelay, InfoLie};

use crate::common::{
    Device, PASSPHRASE, Relay, data_with_marker, laptop_on_relays, laptop_on_three_relays,
    sorted_strings,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tells_an_honest_relay_from_one_that_altered_and_one_that_lost_a_copy() {
    let (relays, laptop) = laptop_on_three_relays().await;
    let data = data_with_marker(300_000, b"an audited file");
    let id = laptop.put_data("audited", &data).await;

    // All honest: every copy passes, for a few kB of proof.
    let clean = laptop.run(&["audit", "--json"]).await;
    let report = clean.json();
    assert_eq!(report["copies"], 3, "{report}");
    for relay in report["relays"].as_array().unwrap() {
        assert_eq!(relay["passed"], 1, "{report}");
    }
    let proof_bytes = report["proof_bytes"].as_u64().unwrap();
    assert!(proof_bytes < 3 * 32 * 1024, "{proof_bytes} bytes of proof");

    // The second relay's copy is altered on its disk (same length), the
    // third's is gone.
    let altered = relays[1].blob_file(&id).expect("a 300 kB blob is a file");
    let mut bytes = std::fs::read(&altered).unwrap();
    for b in &mut bytes {
        *b ^= 0x5a;
    }
    std::fs::write(&altered, bytes).unwrap();
    std::fs::remove_file(relays[2].blob_file(&id).unwrap()).unwrap();

    let run = laptop.run(&["audit", "--json"]).await;
    assert_eq!(run.code, 1, "misbehaviour exits 1: {}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let by_url = |url: String| {
        report["relays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["url"] == url)
            .unwrap()
            .clone()
    };
    let honest = by_url(relays[0].url());
    assert_eq!(
        (&honest["passed"], &honest["failed"]),
        (&1.into(), &0.into())
    );
    let liar = by_url(relays[1].url());
    assert_eq!(liar["failed"], 1, "{report}");
    assert!(
        liar["problems"][0].as_str().unwrap().contains("audit"),
        "{liar}"
    );
    let loser = by_url(relays[2].url());
    assert_eq!(loser["missing"], 1, "{report}");

    // The relays' records keep what they did: the honest one is not
    // flagged, the other two are, each for its own kind of misbehaviour.
    let checks = laptop.run(&["relay", "check", "--json"]).await.json();
    let check = |url: String| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["url"] == url)
            .unwrap()
            .clone()
    };
    assert_eq!(check(relays[0].url())["flagged"], false, "{checks}");
    let corrupt = check(relays[1].url());
    assert_eq!(corrupt["flagged"], true, "{checks}");
    assert_eq!(corrupt["record"]["misbehaviour"]["corrupt"], 1, "{checks}");
    let lost = check(relays[2].url());
    assert_eq!(lost["record"]["misbehaviour"]["missing"], 1, "{checks}");
    let text = laptop.run(&["relay", "check"]).await;
    assert!(text.stdout.contains("FLAGGED: corrupt"), "{}", text.stdout);

    // People get the same verdicts.
    let text = laptop.run(&["audit"]).await;
    assert!(text.stdout.contains("MISBEHAVING"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains(&format!("ok          {}", relays[0].url())),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_honest_relay_of_three_repair_restores_redundancy_on_fresh_relays() {
    let (relays, laptop) = laptop_on_three_relays().await;
    let mut files = Vec::new();
    for i in 0..3 {
        let data = data_with_marker(100_000 + i * 1000, format!("file {i}").as_bytes());
        let name = format!("f{i}");
        let id = laptop.put_data(&name, &data).await;
        files.push((name, id, data));
    }
    // Relay 1 corrupts everything it holds (every chunk, so any audit
    // catches it); relay 2 lost everything.
    for (_, id, _) in &files {
        let path = relays[1].blob_file(id).unwrap();
        let bytes: Vec<u8> = std::fs::read(&path)
            .unwrap()
            .iter()
            .map(|b| b ^ 1)
            .collect();
        std::fs::write(&path, bytes).unwrap();
        std::fs::remove_file(relays[2].blob_file(id).unwrap()).unwrap();
    }
    // Every file is still retrieved intact, from the honest relay.
    for (name, _, data) in &files {
        let out = laptop.dir.path().join(format!("{name}.out"));
        laptop
            .run(&["get", name, "-o", out.to_str().unwrap()])
            .await
            .ok();
        assert!(std::fs::read(&out).unwrap() == *data, "{name} intact");
    }

    // Repair with nowhere to go: every file is short, and says so.
    let run = laptop.run(&["repair", "--json"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["short"].as_array().unwrap().len(), 3, "{report}");

    // Two fresh honest relays join; repair copies every file onto them.
    let fresh = [Relay::start().await, Relay::start().await];
    laptop.add_relays(&[&fresh[0], &fresh[1]]).await;
    let report = laptop.run(&["repair", "--json"]).await.json();
    let restored = report["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 6, "{report}");
    assert!(report["short"].as_array().unwrap().is_empty(), "{report}");
    for r in restored {
        assert!(
            r["to"] == fresh[0].url() || r["to"] == fresh[1].url(),
            "{r}"
        );
        assert!(
            r["from"] == relays[1].url() || r["from"] == relays[2].url(),
            "{r}"
        );
    }
    // Now every copy passes its audit, and the file table shows where.
    let audit = laptop.run(&["audit", "--json"]).await.json();
    for relay in audit["relays"].as_array().unwrap() {
        assert_eq!(relay["failed"], 0, "{audit}");
        assert_eq!(relay["missing"], 0, "{audit}");
    }
    let list = laptop.run(&["ls", "--json"]).await.json();
    let mut expected = vec![relays[0].url(), fresh[0].url(), fresh[1].url()];
    expected.sort_unstable();
    for file in list.as_array().unwrap() {
        assert_eq!(sorted_strings(&file["copies"]), expected, "{list}");
    }
    // A second run finds nothing to do.
    let again = laptop.run(&["repair", "--json"]).await.json();
    assert_eq!(again["healthy"], 3, "{again}");
    assert!(again["restored"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_renews_copies_on_a_relay_with_short_retention() {
    // A relay that keeps blobs 300 s after their last access, on a clock
    // the test moves.
    let clock = cairn_relay::Clock::manual(cairn_testkit::unix_now());
    let relay = Relay::start_with_clock(
        |c| c.retention = std::time::Duration::from_secs(300),
        clock.clone(),
    )
    .await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&relay]).await;
    let data = data_with_marker(50_000, b"kept alive by repair");
    let id = laptop.put_data("kept", &data).await;

    // Repair runs every 250 s: each run's audit is an access, so GC never
    // finds the copy past its retention.
    for _ in 0..3 {
        clock.advance(250);
        let report = laptop.run(&["repair", "--json"]).await.json();
        assert_eq!(report["healthy"], 1, "{report}");
        relay.handle().run_gc().await.unwrap();
        assert!(relay.blob_file(&id).is_some(), "collected while repaired");
    }
    // Without repair, the relay does what it disclosed.
    clock.advance(301);
    relay.handle().run_gc().await.unwrap();
    assert!(relay.blob_file(&id).is_none(), "kept past its retention");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_keeps_what_a_recovery_needs() {
    // The relay's clock starts 250 s behind and ends 250 s ahead, so that
    // the client's tokens (valid 300 s) stay acceptable throughout.
    let clock = cairn_relay::Clock::manual(cairn_testkit::unix_now() - 250);
    let short = Relay::start_with_clock(
        |c| c.retention = std::time::Duration::from_secs(300),
        clock.clone(),
    )
    .await;
    let mut other = Relay::start().await;
    let laptop = Device::new();
    let created = laptop.init("laptop").await;
    let phrase = created["recovery_phrase"].as_str().unwrap().to_owned();
    laptop.add_relays(&[&short, &other]).await;
    laptop.run(&["config", "--replicas", "2"]).await.ok();
    let data = data_with_marker(40_000, b"recovered long after");
    laptop.put_data("kept", &data).await;
    laptop.put_data("second", b"one more operation").await;

    // A relay that lost a metadata blob (here its copy of the identity log,
    // deleted by its owner) gets it back from the next repair.
    let client = Client::open(Home::at(laptop.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    let relay_key = other.handle().key();
    let listing = RelayClient::new(reqwest::Client::new(), &other.url(), relay_key);
    let (heads, _) = listing
        .list_heads(&client.mailbox_name_on(&relay_key).unwrap())
        .await
        .unwrap();
    let copy = heads
        .iter()
        .find(|h| h.role() == Role::Identity)
        .expect("the laptop's identity head")
        .target
        .to_string();
    let key = client.upload_key(&relay_key);
    assert_eq!(other.delete_as(&key, &copy).await, (204, Some("0".into())));
    assert_eq!(other.blob_status(&copy).await, 404);
    let report = laptop.run(&["repair", "--json"]).await.json();
    assert_eq!(report["metadata"]["restored"], 1, "{report}");
    assert_eq!(other.blob_status(&copy).await, 200);
    // The identity log's copy, and an operation per file.
    let blobs = report["metadata"]["blobs"].as_u64().unwrap();
    assert!(blobs >= 3, "{report}");

    // Repairs every 250 s renew the metadata as well as the files: on a
    // relay keeping blobs 300 s after their last access, nothing a recovery
    // needs expires.
    for _ in 0..2 {
        clock.advance(250);
        let report = laptop.run(&["repair", "--json"]).await.json();
        assert_eq!(report["metadata"]["renewed"], blobs, "{report}");
        assert_eq!(report["metadata"]["restored"], 0, "{report}");
        short.handle().run_gc().await.unwrap();
    }
    other.stop().await;
    let desk = Device::new();
    desk.run_with(
        &[
            "init",
            "--recover",
            "--relay",
            &short.url(),
            "--name",
            "desk",
        ],
        &[("CAIRN_RECOVERY_PHRASE", &phrase)],
    )
    .await
    .ok();
    assert_eq!(desk.get_data("kept").await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_relay_out_moves_every_copy_and_loses_nothing() {
    let (mut relays, laptop) = laptop_on_three_relays().await;
    let mut files = Vec::new();
    for i in 0..2 {
        let data = data_with_marker(60_000 + i, format!("rotated {i}").as_bytes());
        let name = format!("r{i}");
        let id = laptop.put_data(&name, &data).await;
        files.push((name, id, data));
    }
    let new = Relay::start().await;
    let old_url = relays[1].url();
    let report = laptop
        .run(&["relay", "rotate", &old_url, &new.url(), "--json"])
        .await
        .json();
    assert_eq!(report["moved"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["removed"], true, "{report}");
    assert_eq!(report["deleted"], 2, "{report}");
    for (_, id, _) in &files {
        assert!(
            relays[1].blob_file(id).is_none(),
            "deleted from the old relay"
        );
        assert!(new.blob_file(id).is_some(), "on the new relay");
    }
    let set = laptop.run(&["relay", "list", "--json"]).await.json();
    let urls: Vec<&str> = set
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap())
        .collect();
    assert!(
        !urls.contains(&old_url.as_str()) && urls.contains(&new.url().as_str()),
        "{set}"
    );

    // The old relay can vanish: everything is read, audited and listed
    // where it is now.
    relays[1].stop().await;
    let audit = laptop.run(&["audit", "--json"]).await.json();
    assert_eq!(audit["copies"], 6, "{audit}");
    for relay in audit["relays"].as_array().unwrap() {
        assert_eq!(relay["passed"], 2, "{audit}");
    }
    for (name, _, data) in &files {
        let out = laptop.dir.path().join(format!("{name}.out"));
        laptop
            .run(&["get", name, "-o", out.to_str().unwrap()])
            .await
            .ok();
        assert!(std::fs::read(&out).unwrap() == *data, "{name} intact");
    }
    // Rotating away from a relay not in the set is a clear error.
    let run = laptop.run(&["relay", "rotate", &old_url, &new.url()]).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(&old_url) || run.stderr.contains("not in"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_onto_a_relay_that_holds_the_copies_lists_them_once() {
    let (relays, laptop) = laptop_on_three_relays().await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let data = data_with_marker(40_000 + i, format!("onto {i}").as_bytes());
        ids.push(laptop.put_data(&format!("o{i}"), &data).await);
    }
    // relays[0] already holds a copy of everything relays[1] holds.
    let (old_url, onto, third) = (relays[1].url(), relays[0].url(), relays[2].url());
    let report = laptop
        .run(&["relay", "rotate", &old_url, &onto, "--json"])
        .await
        .json();
    assert_eq!(report["moved"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["removed"], true, "{report}");
    assert_eq!(report["deleted"], 2, "{report}");
    for id in &ids {
        assert!(
            relays[1].blob_file(id).is_none(),
            "deleted from the old relay"
        );
    }
    // The table no longer lists the copies left behind, and lists the ones
    // they were folded into once: two relays, two copies each.
    let list = laptop.run(&["ls", "--json"]).await.json();
    let mut both = vec![onto.clone(), third.clone()];
    both.sort_unstable();
    for file in list.as_array().unwrap() {
        assert_eq!(sorted_strings(&file["copies"]), both, "{list}");
    }
    let audit = laptop.run(&["audit", "--json"]).await.json();
    assert_eq!(audit["copies"], 4, "{audit}");
    // With two relays left, two copies are all a file can have: repair
    // checks each once and finds nothing to do on the relay left behind.
    let repair = laptop.run(&["repair", "--json"]).await.json();
    assert_eq!(repair["copies_checked"], 4, "{repair}");
    assert_eq!(repair["healthy"], 2, "{repair}");
    // Removing a file deletes its two copies, each reported once, and says
    // nothing of the one that was folded away.
    for relay in [&relays[0], &relays[2]] {
        assert!(relay.blob_file(&ids[0]).is_some(), "kept until now");
    }
    let rm = laptop.run(&["rm", "o0", "--json"]).await.json();
    assert_eq!(sorted_strings(&rm["deleted"]), both, "{rm}");
    assert_eq!(rm["left"].as_array().unwrap().len(), 0, "{rm}");
    for relay in [&relays[0], &relays[2]] {
        assert!(relay.blob_file(&ids[0]).is_none(), "deleted everywhere");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_watch_repairs_as_it_goes() {
    let relays = [Relay::start().await, Relay::start().await];
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&relays[0], &relays[1]]).await;
    let data = data_with_marker(80_000, b"watched");
    let id = laptop.put_data("watched", &data).await;
    std::fs::remove_file(relays[1].blob_file(&id).unwrap()).unwrap();
    let fresh = Relay::start().await;
    laptop.add_relays(&[&fresh]).await;

    let run = laptop
        .run(&["sync", "--watch", "--rounds", "1", "--json"])
        .await;
    let repair = run
        .ok()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v.get("repair").is_some())
        .expect("a repair report line");
    let restored = &repair["repair"]["restored"];
    assert_eq!(restored[0]["from"], relays[1].url(), "{repair}");
    assert_eq!(restored[0]["to"], fresh.url(), "{repair}");
    assert!(fresh.blob_file(&id).is_some());
}

/// Makes this device's record of the relay at `url` say it has gone
/// unanswered since `since` (Unix seconds), as the record of a device
/// failing to reach it since then would: `cairn` runs in its own process,
/// on the system clock, so a test cannot move its time (the in-process
/// test below moves a clock shared with the relays instead). The record
/// must already count a run of failures (from a repair that found the
/// relay down).
fn unanswered_since(device: &Device, url: &str, since: u64) {
    let path = device.home().join("scores.json");
    let mut scores: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let record = scores["relays"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .find(|r| r["url"] == url)
        .unwrap_or_else(|| panic!("no record of {url}"));
    let began = record["unanswered_since"].as_u64();
    let now = cairn_testkit::unix_now();
    assert!(
        began.is_some_and(|at| at <= now && now - at < 600),
        "the failed audit began the count just now: {record}"
    );
    record["unanswered_since"] = since.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&scores).unwrap()).unwrap();
}

/// The repair report in what `cairn ARGS` printed: the document of
/// `repair --json`, or the `repair` line of `sync --watch --json`.
async fn repair_report(device: &Device, args: &[&str]) -> serde_json::Value {
    let run = device.run(args).await;
    if args[0] == "repair" {
        // Exit 1 while a file is short of good copies.
        assert!(run.code == 0 || run.code == 1, "{run:#?}");
        return serde_json::from_str(&run.stdout).unwrap();
    }
    run.ok()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|v| v.get("repair").cloned())
        .unwrap_or_else(|| panic!("no repair report line: {run:#?}"))
}

/// A relay holding a copy vanishes for good, which to a client looks like
/// it being down. `args` repairs (`cairn repair`, or `sync --watch`): the
/// first time, the relay has just stopped answering and its copy is kept
/// (reported unreachable); once this device has had no answer from it
/// for more than 3 days, the copy is replaced on the spare relay of the
/// set, and the file reads with the relay still gone.
async fn a_relay_silent_for_days_loses_its_copies(args: &[&str]) {
    let (mut relays, laptop) = laptop_on_relays::<4>().await;
    let data = data_with_marker(120_000, b"outlives its relay");
    let id = laptop.put_data("kept", &data).await;
    let list = laptop.run(&["ls", "--json"]).await.json();
    let holders = sorted_strings(&list[0]["copies"]);
    assert_eq!(holders.len(), 3, "{list}");
    let gone = relays
        .iter()
        .position(|r| holders.contains(&r.url()))
        .unwrap();
    let spare = relays
        .iter()
        .position(|r| !holders.contains(&r.url()))
        .unwrap();
    let gone_url = relays[gone].url();
    relays[gone].stop().await;

    // The outage has just begun: the copy is reported, not replaced.
    let first = repair_report(&laptop, args).await;
    assert!(first["restored"].as_array().unwrap().is_empty(), "{first}");
    let unreachable = first["unreachable"].as_array().unwrap();
    assert_eq!(unreachable.len(), 1, "{first}");
    assert!(
        unreachable[0].as_str().unwrap().contains(&gone_url),
        "{first}"
    );
    assert!(relays[spare].blob_file(&id).is_none(), "copied too soon");

    // Four days on without an answer, the next repair gives up on it.
    let four_days_ago = cairn_testkit::unix_now() - 4 * 86_400;
    unanswered_since(&laptop, &gone_url, four_days_ago);
    let check = laptop.run(&["relay", "check"]).await;
    assert!(
        check.stdout.contains("not answered since 4 days ago"),
        "{check:#?}"
    );
    let second = repair_report(&laptop, args).await;
    let restored = second["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 1, "{second}");
    assert_eq!(restored[0]["from"], gone_url, "{second}");
    assert_eq!(restored[0]["to"], relays[spare].url(), "{second}");
    let why = restored[0]["why"].as_str().unwrap();
    assert!(why.contains("not answered for 4 days"), "{why}");
    assert!(second["short"].as_array().unwrap().is_empty(), "{second}");
    assert!(relays[spare].blob_file(&id).is_some(), "the new copy");

    let list = laptop.run(&["ls", "--json"]).await.json();
    assert!(
        !sorted_strings(&list[0]["copies"]).contains(&gone_url),
        "{list}"
    );
    assert_eq!(laptop.get_data("kept").await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_replaces_copies_on_a_relay_unanswered_for_three_days() {
    a_relay_silent_for_days_loses_its_copies(&["repair", "--json"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_watch_replaces_copies_on_a_relay_unanswered_for_three_days() {
    a_relay_silent_for_days_loses_its_copies(&["sync", "--watch", "--rounds", "1", "--json"]).await;
}

/// A relay of the set that has not answered this device for a week is
/// named by `cairn status`, with what to do: its copies are already kept
/// elsewhere, but a set whose relays all vanish loses its files, and only
/// the person can add relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_a_relay_silent_for_a_week() {
    let (mut relays, laptop) = laptop_on_relays::<2>().await;
    laptop.put_data("kept", b"a file").await;
    let gone_url = relays[1].url();
    relays[1].stop().await;
    // The repair finds it down and starts this device's count.
    laptop.run(&["repair"]).await;
    let fresh = laptop.run(&["status", "--json"]).await.json();
    assert_eq!(fresh["silent_relays"], serde_json::json!([]), "{fresh}");

    let eight_days_ago = cairn_testkit::unix_now() - 8 * 86_400;
    unanswered_since(&laptop, &gone_url, eight_days_ago);
    let status = laptop.run(&["status"]).await;
    let text = status.ok();
    assert!(
        text.contains(&format!(
            "relay {gone_url} has not answered this device for 8 days"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("cairn relay rotate {gone_url} NEW_URL")),
        "{text}"
    );
    assert!(!text.contains("no problems found"), "{text}");
    let json = laptop.run(&["status", "--json"]).await.json();
    assert_eq!(json["silent_relays"][0]["url"], gone_url.as_str(), "{json}");
    assert!(json["silent_relays"][0]["silent_secs"].as_u64().unwrap() >= 8 * 86_400);
}

/// The same outage, lived through rather than written into `scores.json`:
/// four relays and a client (the library, in this process) share one
/// manual clock, and days pass by moving it. The client's tokens and its
/// checks of info documents follow the shared clock, so relays whose time
/// is days ahead of the system's still take its requests; its record of
/// the silent relay counts from the shared clock too, and only once it
/// says more than 3 days have passed is the copy replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_pass_on_a_shared_clock_before_repair_replaces_a_silent_relays_copy() {
    const DAY: u64 = 86_400;
    let start = cairn_testkit::unix_now();
    let clock = Clock::manual(start);
    let mut relays = Vec::new();
    for _ in 0..4 {
        relays.push(Relay::start_with_clock(|_| {}, clock.clone()).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = relays.iter().map(Relay::url).collect();
    let mut client = client_on(dir.path(), &clock, &urls).await;
    let data = data_with_marker(120_000, b"outlives its relay, in days");
    let source = dir.path().join("kept");
    std::fs::write(&source, &data).unwrap();
    let put = client.put(&source, "kept", Arc::new(Silent)).await.unwrap();
    assert_eq!(put.copies.len(), 3, "{put:?}");
    let id = put.blob.to_string();
    let gone = relays
        .iter()
        .position(|r| put.copies.contains(&r.url()))
        .unwrap();
    let spare = relays
        .iter()
        .position(|r| !put.copies.contains(&r.url()))
        .unwrap();
    let (gone_url, gone_key) = (relays[gone].url(), relays[gone].handle().key());
    relays[gone].stop().await;
    let wait = Unanswered::ReplaceAfter(UNANSWERED_WAIT_SECS);

    // The outage has just begun: the copy is reported, not replaced.
    let first = client.repair(wait).await.unwrap();
    assert!(first.restored.is_empty(), "{first:?}");
    assert_eq!(first.unreachable.len(), 1, "{first:?}");
    assert!(first.unreachable[0].contains(&gone_url), "{first:?}");
    let record = client.scores().get(&gone_key).cloned().unwrap();
    assert_eq!(record.unanswered_since, Some(start), "{record:?}");

    // Two days on (the relays' time, and the client's, two days ahead of
    // the system's), the copy is still kept; the live relays take the
    // client's tokens and it believes their info documents: a new file is
    // stored on all three, dated by the shared clock.
    clock.advance(2 * DAY);
    let second = client.repair(wait).await.unwrap();
    assert!(second.restored.is_empty(), "{second:?}");
    assert_eq!(
        second.short.len(),
        1,
        "kept, but short of a good copy: {second:?}"
    );
    assert_eq!(second.unreachable.len(), 1, "{second:?}");
    // Renewing the metadata (claims, signed with tokens) failed on the
    // silent relay alone.
    assert_eq!(second.metadata.failed.len(), 1, "{second:?}");
    assert!(second.metadata.failed[0].contains(&gone_url), "{second:?}");
    assert!(relays[spare].blob_file(&id).is_none(), "copied too soon");
    let later = dir.path().join("later");
    std::fs::write(&later, b"stored two days in").unwrap();
    let put = client.put(&later, "later", Arc::new(Silent)).await.unwrap();
    assert_eq!(put.copies.len(), 3, "{put:?}");
    assert!(!put.copies.contains(&gone_url), "{put:?}");
    let listing = client.list().await.unwrap();
    let stored_at = |name: &str| {
        listing
            .files
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .stored_at
    };
    assert_eq!(stored_at("kept"), start);
    assert_eq!(stored_at("later"), start + 2 * DAY);
    let record = client.scores().get(&gone_key).cloned().unwrap();
    assert_eq!(record.unanswered_since, Some(start), "{record:?}");

    // Four days without an answer: the next repair gives up on it.
    clock.advance(2 * DAY);
    let third = client.repair(wait).await.unwrap();
    assert_eq!(third.restored.len(), 1, "{third:?}");
    let restored = &third.restored[0];
    assert_eq!(restored.name, "kept", "{third:?}");
    assert_eq!(restored.from, gone_url, "{third:?}");
    assert_eq!(restored.to, relays[spare].url(), "{third:?}");
    assert!(
        restored.why.contains("not answered for 4 days"),
        "{third:?}"
    );
    assert!(third.short.is_empty(), "{third:?}");
    assert!(relays[spare].blob_file(&id).is_some(), "the new copy");

    let listing = client.list().await.unwrap();
    let kept = listing.files.iter().find(|f| f.name == "kept").unwrap();
    assert!(!kept.copies.contains(&gone_url), "{kept:?}");
    assert!(kept.copies.contains(&relays[spare].url()), "{kept:?}");
    let out = dir.path().join("got-kept");
    client
        .get("kept", Output::File(out.clone()), Arc::new(Silent))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

/// A client (one device) whose time is `clock`, in a fresh home under
/// `dir`, with the relays at `urls` in its set.
async fn client_on(dir: &std::path::Path, clock: &Clock, urls: &[String]) -> Client {
    let options = InitOptions {
        device_name: "laptop".into(),
        cost: KdfCost::new(8).unwrap(),
        transport: cairn_client::relay::Transport::Secure,
    };
    let (mut client, _) = Client::init(
        Home::at(dir.join("home")),
        &Passphrase::new(PASSPHRASE),
        &options,
    )
    .unwrap();
    client.set_clock(clock.clone());
    for url in urls {
        client.add_relay(url, false).await.unwrap();
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_keeps_copies_for_less_than_it_discloses_ranks_by_what_it_kept() {
    // The attacker discloses a year's retention and a terabyte free, so
    // clients rank it first and give it a copy of everything, and deletes
    // what it holds after two days. Caught once, it ranks by the two
    // days it kept, below every honest relay whatever room it claims:
    // after its flag has long expired, new files go to honest relays.
    const DAY: u64 = 86_400;
    let clock = Clock::manual(cairn_testkit::unix_now());
    let mut honest = Vec::new();
    for _ in 0..3 {
        honest.push(Relay::start_with_clock(|_| {}, clock.clone()).await);
    }
    let behind = Relay::start_with_clock(|_| {}, clock.clone()).await;
    let liar = FaultyRelay::start(&behind.url(), behind.handle().signing_key().clone()).await;
    let liar_url = liar.url().to_owned();
    let liar_key = behind.handle().key();
    let laptop = Device::new();
    let dir = &laptop.dir;
    let mut urls: Vec<String> = honest.iter().map(Relay::url).collect();
    urls.push(liar_url.clone());
    let mut client = client_on(dir.path(), &clock, &urls).await;

    // A year ranks no higher than the honest relays' 90 days: with less
    // room than they have, the claim alone draws no copy.
    liar.lie_info(InfoLie {
        capacity_free: 1 << 20,
        retention_secs: 365 * DAY,
    });
    let zeroth = dir.path().join("zeroth");
    std::fs::write(&zeroth, b"before the lie pays").unwrap();
    let put = client
        .put(&zeroth, "zeroth", Arc::new(Silent))
        .await
        .unwrap();
    assert!(!put.copies.contains(&liar_url), "{put:?}");
    liar.lie_info(InfoLie {
        capacity_free: 1 << 40,
        retention_secs: 365 * DAY,
    });

    let first = dir.path().join("first");
    std::fs::write(&first, data_with_marker(50_000, b"first")).unwrap();
    let put = client.put(&first, "first", Arc::new(Silent)).await.unwrap();
    assert!(put.copies.contains(&liar_url), "ranked first: {put:?}");

    clock.advance(2 * DAY);
    liar.forget(put.blob);
    let repair = client
        .repair(Unanswered::ReplaceAfter(UNANSWERED_WAIT_SECS))
        .await
        .unwrap();
    assert_eq!(repair.restored.len(), 1, "{repair:?}");
    assert_eq!(repair.restored[0].from, liar_url, "{repair:?}");
    let record = client.scores().get(&liar_key).cloned().unwrap();
    assert_eq!(record.kept_at_most, Some(2 * DAY), "{record:?}");
    let (kind, _, what) = record.last_misbehaviour.clone().unwrap();
    assert_eq!(kind, Misbehaviour::Missing, "{record:?}");
    assert!(what.contains("2 days after it was stored"), "{what}");
    assert!(what.contains("retention of 365 days"), "{what}");

    // A month and more later the flag is over; the relay still claims a
    // year, and the client counts on two days.
    clock.advance(31 * DAY);
    assert!(!client.scores().flagged(&liar_key, clock.now().0));
    let second = dir.path().join("second");
    std::fs::write(&second, data_with_marker(50_000, b"second")).unwrap();
    let put = client
        .put(&second, "second", Arc::new(Silent))
        .await
        .unwrap();
    assert_eq!(put.copies.len(), 3, "{put:?}");
    assert!(!put.copies.contains(&liar_url), "{put:?}");

    // `cairn status` names it, with what it kept and how to replace it.
    drop(client);
    let status = laptop.run(&["status", "--json"]).await.json();
    let short = &status["short_retention_relays"];
    assert_eq!(short[0]["url"], liar_url.as_str(), "{status}");
    assert_eq!(short[0]["kept_secs"], 2 * DAY, "{status}");
    assert_eq!(short.as_array().unwrap().len(), 1, "{status}");
    let status = laptop.run(&["status"]).await;
    let text = status.ok();
    assert!(
        text.contains("lost a copy 2 days after it was stored"),
        "{text}"
    );
    assert!(
        text.contains(&format!("cairn relay rotate {liar_url} NEW_URL")),
        "{text}"
    );
}
