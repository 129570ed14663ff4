//! Issue "Messages a person reads": what `cairn` says when relays fail,
//! when counts are printed, and when no relay answers at all, word for
//! word.

use crate::common::{Device, Relay};

/// The relay at `url` as messages name it.
fn named(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// How many times `needle` occurs in `haystack`.
fn times(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Sets when the device's last sync was to `ago` seconds back (as if it
/// happened then), and returns that time.
fn last_synced(device: &Device, ago: u64) -> u64 {
    let path = device.home().join("sync.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let at = cairn_testkit::unix_now() - ago;
    state["synced_at"] = at.into();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    at
}

/// A relay that is down is said to be in words, once, and the HTTP
/// library's account only under `--verbose`. It read "unreachable: error
/// sending request for url (http://…): client error (Connect): tcp connect
/// error: Connection refused (os error 111)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_is_down_is_named_once_in_words() {
    let mut relay = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&relay]).await;
    device.put_data("doc", b"kept").await;
    relay.stop().await;
    let said = format!(
        "relay {} is unreachable (connection refused)",
        named(&relay.url())
    );

    let out = device.dir.path().join("out");
    let out = out.to_str().unwrap();
    let run = device.run(&["get", "doc", "-o", out]).await;
    let err = run.err();
    assert_eq!(
        err,
        format!(
            "cairn: no relay answered: {said}; check this machine's network, then `cairn \
             relay check` to see each relay\n"
        )
    );

    // The detail, when asked for: after the message, one line per relay.
    let run = device.run(&["get", "doc", "-o", out, "--verbose"]).await;
    let err = run.err();
    assert_eq!(times(err, &said), 1, "{err}");
    let detail = format!(
        "\n  detail: {}: error sending request for url (",
        named(&relay.url())
    );
    assert_eq!(times(err, &detail), 1, "{err}");
    assert!(err.contains("Connection refused (os error 111)"), "{err}");
    let run = device.run(&["get", "doc", "-o", out, "-v", "--json"]).await;
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["error"].as_str().map(|e| times(e, &said)), Some(1));
    assert!(
        report["details"][0]
            .as_str()
            .unwrap()
            .contains("error sending request"),
        "{report}"
    );

    // `relay add` of a URL where nothing listens.
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let run = device
        .run(&["relay", "add", &format!("http://{closed}")])
        .await;
    assert_eq!(
        run.err(),
        format!("cairn: relay {closed} is unreachable (connection refused)\n")
    );
}

/// Timeouts and names that do not resolve are said in words too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_unknown_names_are_said_in_words() {
    let device = Device::new();
    device.init("laptop").await;
    // Takes the connection (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let run = device
        .run_with(
            &["relay", "add", &format!("http://{addr}")],
            &[("CAIRN_READ_TIMEOUT_SECS", "1")],
        )
        .await;
    assert_eq!(
        run.err(),
        format!("cairn: relay {addr} is unreachable (timed out)\n")
    );
    drop(silent);

    let run = device
        .run(&["--insecure", "relay", "add", "http://relay.invalid"])
        .await;
    assert_eq!(
        run.err(),
        "cairn: relay relay.invalid is unreachable (DNS lookup failed)\n"
    );
}

/// A relay that fails every copy the same way is named once: in a get
/// that goes on without it, in a repair (it read "unreachable: f1 on
/// http://…: …" once per copy) and in an audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_failing_every_copy_is_named_once() {
    let ([mut down, b, c], device) = crate::common::laptop_on_three_relays().await;
    let _running = (b, c);
    for name in ["f1", "f2", "f3"] {
        device.put_data(name, name.as_bytes()).await;
    }
    down.stop().await;
    let said = format!(
        "relay {} is unreachable (connection refused)",
        named(&down.url())
    );

    let out = device.dir.path().join("out");
    let run = device
        .run(&["get", "f1", "-o", out.to_str().unwrap()])
        .await;
    run.ok();
    assert_eq!(
        times(&run.stderr, &format!("skipped: {said}\n")),
        1,
        "{run:#?}"
    );

    let run = device.run(&["repair"]).await;
    assert_eq!(run.code, 1, "short of copies: {run:#?}");
    assert_eq!(
        times(
            &run.stdout,
            &format!("\n  {said}: 3 copies there not checked\n")
        ),
        1,
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("unreachable: f"), "{}", run.stdout);
    assert!(
        run.stdout.contains("f1: 2 good copies of 3 wanted"),
        "{}",
        run.stdout
    );

    let audit = device.run(&["audit", "--json"]).await.json();
    let relay = audit["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"] == down.url())
        .unwrap();
    assert_eq!(relay["unreachable"], 3, "{audit}");
    assert_eq!(
        relay["problems"],
        serde_json::json!(["unreachable (connection refused)"])
    );
}

/// Counts agree with their nouns ("1 copies" read wrong).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_agree_with_their_nouns() {
    let a = Relay::start().await;
    let b = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    device.put_data("one", b"on one relay").await;
    let ls = device.run(&["ls"]).await;
    assert!(ls.ok().contains("  1 copy  one\n"), "{ls:#?}");
    let doctor = device.run(&["doctor"]).await;
    assert!(
        doctor
            .stdout
            .contains("relays: 1 relay: each file gets 1 copy, not the 3 wanted"),
        "{doctor:#?}"
    );
    let sync = device.run(&["sync"]).await;
    assert!(
        sync.ok().contains(", 1 file, 1 of 1 relay answered"),
        "{sync:#?}"
    );

    device.add_relays(&[&b]).await;
    device.put_data("two", b"on two relays").await;
    let ls = device.run(&["ls"]).await;
    assert!(ls.ok().contains("2 copies  two\n"), "{ls:#?}");
    let doctor = device.run(&["doctor"]).await;
    assert!(
        doctor
            .stdout
            .contains("relays: 2 relays: each file gets 2 copies, not the 3 wanted"),
        "{doctor:#?}"
    );
    let sync = device.run(&["sync"]).await;
    assert!(
        sync.ok().contains(", 2 files, 2 of 2 relays answered"),
        "{sync:#?}"
    );
}

/// With every relay down, `ls` lists the last known table and says, on
/// one line of standard error, why and how old it is; `get` of a name
/// never stored says there is no such file. It failed with "no relay
/// answered", and `get` blamed the relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_without_relays_lists_the_last_known_table() {
    let mut relay = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&relay]).await;
    let blob = device.put_data("doc", b"kept").await;
    let live = device.run(&["ls", "--json"]).await.json();
    assert_eq!(live[0]["stale"], false, "{live}");
    assert!(live[0]["as_of"].as_u64().is_some(), "{live}");
    relay.stop().await;
    let as_of = last_synced(&device, 185);
    let warning = "warning: no relay could be reached (connection refused); showing the file \
                   list as of the last sync, 3 minutes ago\n";

    let run = device.run(&["ls"]).await;
    assert!(run.ok().contains("  1 copy  doc"), "{run:#?}");
    assert_eq!(run.stderr, warning);

    let run = device.run(&["ls", "--json"]).await;
    let files = run.json();
    assert_eq!(run.stderr, warning);
    // Every field as before, and how current the list is.
    assert_eq!(files[0]["name"], "doc", "{files}");
    assert_eq!(files[0]["blob"], blob.as_str(), "{files}");
    assert_eq!(files[0]["copies"][0], relay.url(), "{files}");
    assert_eq!(files[0]["stale"], true, "{files}");
    assert_eq!(files[0]["as_of"], as_of, "{files}");

    let run = device.run(&["get", "never-stored"]).await;
    assert_eq!(
        run.err(),
        "cairn: no such file: never-stored (`cairn ls` lists what is stored)\n"
    );
}

/// `status`, `device list` and `doctor` answer from this device's state
/// when no relay answers, saying how old it is (`stale` and `as_of` in
/// JSON). `status` failed with "no relay answered".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_devices_and_doctor_answer_without_relays() {
    let mut relay = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&relay]).await;
    device.put_data("doc", b"kept").await;
    let live = device.run(&["status", "--json"]).await.json();
    assert_eq!(live["stale"], false, "{live}");
    relay.stop().await;
    let as_of = last_synced(&device, 185);
    let since = "as of the last sync, 3 minutes ago\n";

    let run = device.run(&["status"]).await;
    assert!(
        run.ok()
            .contains(&format!("DOWN {}  0 heads: unreachable", relay.url())),
        "{run:#?}"
    );
    assert!(run.stdout.contains("* laptop"), "{run:#?}");
    assert!(run.stdout.contains("files: 1\n"), "{run:#?}");
    assert_eq!(
        run.stderr,
        format!(
            "warning: no relay could be reached (connection refused); showing this device's \
             last status {since}"
        )
    );
    let status = device.run(&["status", "--json"]).await.json();
    assert_eq!(status["stale"], true, "{status}");
    assert_eq!(status["as_of"], as_of, "{status}");
    assert_eq!(status["sync"]["relays"][0]["reachable"], false, "{status}");
    assert_eq!(status["sync"]["files"], 1, "{status}");

    let run = device.run(&["device", "list"]).await;
    assert!(run.ok().starts_with("* laptop"), "{run:#?}");
    assert_eq!(
        run.stderr,
        format!(
            "warning: no relay could be reached (connection refused); showing the device list \
             {since}"
        )
    );
    let devices = device.run(&["device", "list", "--json"]).await.json();
    assert_eq!(devices["stale"], true, "{devices}");
    assert_eq!(devices["as_of"], as_of, "{devices}");
    assert_eq!(devices["devices"][0]["name"], "laptop", "{devices}");

    let run = device.run(&["doctor"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains(
            "WARN  relays: no relay could be reached: what this device knows of the others is \
             as of the last sync, 3 minutes ago"
        ),
        "{}",
        run.stdout
    );
    let doctor: serde_json::Value =
        serde_json::from_str(&device.run(&["doctor", "--json"]).await.stdout).unwrap();
    let offline = doctor
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["stale"] == true)
        .unwrap_or_else(|| panic!("no stale finding: {doctor}"));
    assert_eq!(offline["as_of"], as_of, "{offline}");
}
