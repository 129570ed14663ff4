//! Bad input and failing relays: a clear error, and nothing changed.

use crate::common::{Device, Relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passphrase_changes_nothing() {
    let a = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    let before = device.snapshot();
    for args in [&["ls"][..], &["relay", "list"], &["key", "phrase"]] {
        let run = device
            .run_with(args, &[("CAIRN_PASSPHRASE", "not it")])
            .await;
        assert!(run.err().contains("wrong passphrase"), "{run:?}");
    }
    assert!(
        device.snapshot() == before,
        "a failed unlock changed the home"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_home_says_to_init() {
    let device = Device::new();
    for args in [
        &["ls"][..],
        &["relay", "add", "http://127.0.0.1:9"],
        &["put", "x"],
    ] {
        let run = device.run(args).await;
        assert!(run.err().contains("run `cairn init` first"), "{run:?}");
    }
    assert!(!device.home().exists(), "a failed command created the home");
    // And init twice is refused.
    device.init("one").await;
    let before = device.snapshot();
    let run = device.run(&["init"]).await;
    assert!(
        run.err().contains("already holds a cairn identity"),
        "{run:?}"
    );
    assert!(device.snapshot() == before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_relay_is_a_clear_error() {
    let device = Device::new();
    device.init("laptop").await;
    let before = device.snapshot();
    // Nothing listens on the discard port of loopback.
    let run = device.run(&["relay", "add", "http://127.0.0.1:9"]).await;
    let err = run.err();
    assert!(
        err.contains("relay 127.0.0.1:9 is unreachable (connection refused)"),
        "{err}"
    );
    assert!(device.snapshot() == before);

    let run = device.run(&["relay", "add", "not a url"]).await;
    assert!(run.err().contains("is not a relay URL"), "{run:?}");

    let run = device.run(&["put", "/etc/hostname"]).await;
    assert!(run.err().contains("no relays are configured"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_key_change_is_refused_until_accepted() {
    let mut a = Relay::start().await;
    let b = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b]).await;
    let pinned = device.run(&["relay", "list", "--json"]).await.json()[0]["key"].clone();

    a.replace_with_impostor().await;
    let before = device.snapshot();
    let run = device.run(&["relay", "add", &a.url()]).await;
    let err = run.err();
    assert!(
        err.contains("now presents key") && err.contains("--accept-new-key"),
        "{err}"
    );
    assert!(
        device.snapshot() == before,
        "a refused key change changed the home"
    );

    // `check` names the mismatch and fails; uploads route around it.
    let run = device.run(&["relay", "check", "--json"]).await;
    assert_ne!(run.code, 0);
    let checks: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let bad = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["url"] == a.url())
        .unwrap();
    assert_eq!(bad["ok"], false);
    assert!(
        bad["error"].as_str().unwrap().contains("is pinned"),
        "{bad}"
    );

    let accepted = device
        .run(&["relay", "add", &a.url(), "--accept-new-key", "--json"])
        .await
        .json();
    assert_eq!(accepted["replaced_key"], pinned);
    assert_ne!(accepted["relay"]["key"], pinned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_list_remove_and_check() {
    let a = Relay::start().await;
    let b = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a, &b]).await;
    let checks = device.run(&["relay", "check", "--json"]).await.json();
    assert_eq!(checks.as_array().unwrap().len(), 2);
    assert!(checks.as_array().unwrap().iter().all(|c| c["ok"] == true));
    assert!(checks[0]["info"]["retention_secs"].as_u64().unwrap() > 0);

    device.run(&["relay", "remove", &a.url()]).await.ok();
    let list = device.run(&["relay", "list", "--json"]).await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["url"], b.url());
    let run = device.run(&["relay", "remove", &a.url()]).await;
    assert!(run.err().contains("is not in your relay set"), "{run:?}");
    let run = device.run(&["relay", "check", &a.url()]).await;
    assert!(run.err().contains("is not in your relay set"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_home_fails_a_put_clearly_and_loses_nothing() {
    let a = Relay::start().await;
    let device = Device::new();
    let disk = match cairn_testkit::SmallDisk::mount(&device.home(), "8m") {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    device
        .put_data("before.txt", b"stored before the disk filled")
        .await;

    // Something else fills the home's disk.
    let filler = disk.fill("filler");
    let before = device.snapshot();

    // A put needs room in the home to seal into: a clear error, and the
    // home exactly as it was (no temp file, no half-written state).
    let big = device.dir.path().join("big.bin");
    std::fs::write(&big, vec![9u8; 1 << 20]).unwrap();
    let run = device.run(&["put", big.to_str().unwrap()]).await;
    assert_ne!(run.code, 0, "{run:?}");
    let err = run.err().to_lowercase();
    assert!(
        err.contains("space") || err.contains("full"),
        "the error does not say the disk is full: {run:?}"
    );
    assert!(device.snapshot() == before, "a failed put changed the home");

    // Reading still works: the list, and a get to a file elsewhere.
    assert!(device.run(&["ls"]).await.ok().contains("before.txt"));
    let out = device.dir.path().join("before.out");
    device
        .run(&["get", "before.txt", "-o", out.to_str().unwrap()])
        .await
        .ok();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"stored before the disk filled"
    );

    // Room again: the same put succeeds.
    std::fs::remove_file(&filler).unwrap();
    device
        .run(&["put", big.to_str().unwrap(), "--json"])
        .await
        .json();
    assert!(device.run(&["ls"]).await.ok().contains("big.bin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_what_is_wrong_and_what_to_do() {
    let now = cairn_testkit::unix_now();
    // A relay ten minutes ahead that keeps unread copies for two days, and
    // an honest one.
    let ahead = Relay::start_with_clock(
        |c| c.retention = std::time::Duration::from_secs(2 * 86_400),
        cairn_relay::Clock::manual(now + 600),
    )
    .await;
    let mut honest = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&ahead, &honest]).await;

    let findings = |run: &crate::common::Run| -> Vec<(String, String)> {
        let json: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {run:#?}"));
        json.as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["status"].as_str().unwrap().to_owned(),
                    format!("{}: {} → {}", f["check"], f["message"], f["fix"]),
                )
            })
            .collect()
    };
    let run = device.run(&["doctor", "--json"]).await;
    assert_eq!(run.code, 0, "warnings only: {run:#?}");
    let found = findings(&run);
    let warned = |needle: &str| {
        found
            .iter()
            .any(|(status, text)| status == "warn" && text.contains(needle))
    };
    assert!(
        warned("2 relays: each file gets 2 copies, not the 3 wanted"),
        "{found:#?}"
    );
    assert!(warned("clock and this device's differ"), "{found:#?}");
    assert!(warned("2 days"), "{found:#?}");
    assert!(warned("root key is on this device"), "{found:#?}");
    assert!(
        found.iter().all(|(status, _)| status != "fail"),
        "{found:#?}"
    );

    // A relay down and a file others can read: failures, exit 1, and the
    // text names the fixes.
    honest.stop().await;
    let config = device.home().join("config.json");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let run = device.run(&["doctor"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("FAIL  relay:") && run.stdout.contains("does not answer"));
    assert!(run.stdout.contains("cairn relay rotate"), "{}", run.stdout);
    assert!(
        run.stdout.contains("FAIL  home: others can read"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("chmod -R go-rwx"), "{}", run.stdout);
}

/// Part of issue 1/7: plain http to another machine is refused at once,
/// before any request, and the refusal says what `--insecure` gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_off_this_machine_is_refused_without_insecure() {
    let device = Device::new();
    device.init("laptop").await;
    let before = device.snapshot();
    let started = std::time::Instant::now();
    let run = device.run(&["relay", "add", "http://relay.invalid"]).await;
    let err = run.err();
    for needle in [
        "http://relay.invalid",
        "--insecure",
        "readable and alterable",
        "pinned over a channel that authenticates nothing",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // Refused before any lookup or connection: nothing was tried, so
    // nothing failed to resolve.
    assert!(!err.contains("unreachable"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(device.snapshot() == before);

    // The same for the other ways a URL comes in.
    let run = device
        .run(&[
            "relay",
            "rotate",
            "http://127.0.0.1:9",
            "http://relay.invalid",
        ])
        .await;
    assert!(run.err().contains("--insecure"), "{run:?}");
    let joiner = Device::new();
    let run = joiner
        .run(&[
            "device",
            "join",
            "--relay",
            "http://relay.invalid",
            "--wait",
            "1",
        ])
        .await;
    assert!(run.err().contains("--insecure"), "{run:?}");
    assert!(!joiner.home().exists(), "nothing created");

    // With --insecure the URL passes this check and the relay is tried
    // (`.invalid` never resolves, so it is then unreachable).
    let run = device
        .run(&["--insecure", "relay", "add", "http://relay.invalid"])
        .await;
    let err = run.err();
    assert!(!err.contains("--insecure"), "{err}");
    assert!(
        err.contains("relay relay.invalid is unreachable (DNS lookup failed)"),
        "{err}"
    );
    assert!(device.snapshot() == before);

    // Loopback needs no flag (every other test adds relays that way).
    let help = device.run(&["--help"]).await;
    assert!(help.ok().contains("--insecure"), "{help:?}");
}

/// Output into a closed pipe (`cairn ls --json | head -1`, once `head` has
/// gone) ends the command quietly with 0, as other Unix tools do, instead
/// of a panic. Fails with `println!` (exit 101, "failed printing to
/// stdout").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let laptop = Device::new();
    laptop.init("laptop").await;
    for args in [&["ls", "--json"][..], &["relay", "list", "--json"]] {
        let run = laptop.run_into_closed_pipe(args).await;
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {run:?}");
    }
}

/// An error is said once: a missing file is not reported as "…: No such
/// file or directory (os error 2): No such file or directory (os error 2)",
/// in text or in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_reported_once() {
    let device = Device::new();
    device.init("laptop").await;
    let missing = device.dir.path().join("no-such-file");
    let missing = missing.to_str().unwrap();
    let run = device.run(&["put", missing]).await;
    let err = run.err();
    assert_eq!(
        err,
        format!("cairn: {missing}: No such file or directory (os error 2)\n")
    );
    let run = device.run(&["put", missing, "--json"]).await;
    assert_ne!(run.code, 0);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let text = report["error"].as_str().unwrap();
    assert_eq!(text.matches("os error 2").count(), 1, "{text}");
}
