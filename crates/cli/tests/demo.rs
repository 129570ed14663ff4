//! `cairn demo`, as a newcomer runs it: the whole walk-through succeeds,
//! the network stays up with working status pages until Ctrl-C, and Ctrl-C
//! stops it and removes everything.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::BIN;

/// The steps the walk-through must show, in order.
const STEPS: [&str; 9] = [
    "laptop$ cairn init --name laptop",
    "laptop$ cairn put hello.txt",
    "phone$ cairn device join --relay",
    "laptop$ cairn device approve",
    "phone$ cairn get hello.txt -o on-the-phone.txt",
    "== Relay B fails",
    "phone$ cairn get hello.txt -o after-b-failed.txt",
    "laptop$ cairn repair --replace-unreachable",
    "1 copy replaced",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_walks_through_then_serves_until_ctrl_c_and_cleans_up() {
    let mut child = Command::new(BIN)
        .arg("demo")
        .env_remove("CAIRN_HOME")
        .env_remove("CAIRN_PASSPHRASE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Everything up to the line that says the network keeps running.
    let (shown, mut reader) = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut shown = String::new();
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "the demo ended early:\n{shown}"
            );
            shown.push_str(&line);
            if line.contains("until you press Ctrl-C") {
                return (shown, reader);
            }
        }
    })
    .await
    .unwrap();

    let mut from = 0;
    for step in STEPS {
        let at = shown[from..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{shown}"));
        from += at + step.len();
    }
    let work = shown
        .split("all in ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .map(std::path::PathBuf::from)
        .expect("the demo names its directory");
    assert!(work.is_dir(), "{}", work.display());

    // The status pages of the three relays still running answer while it
    // waits (relay B was stopped in the walk-through).
    let (mut reader, status_lines) = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            lines.push(line);
        }
        (reader, lines)
    })
    .await
    .unwrap();
    let http = cairn_testkit::http();
    for (line, name) in status_lines.iter().zip(["relay A", "relay C", "relay D"]) {
        assert!(line.contains(name), "{line}");
        let url = line.split_whitespace().last().unwrap();
        let r = http.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        assert!(r.text().await.unwrap().contains("cairn relay"));
    }

    // Ctrl-C: stops, removes everything, exits 0.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (tail, out) = tokio::task::spawn_blocking(move || {
        let mut tail = String::new();
        std::io::Read::read_to_string(&mut reader, &mut tail).unwrap();
        (tail, child.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tail.contains("Stopped the relays and removed"), "{tail}");
    // The directory goes just before the exit.
    for _ in 0..50 {
        if !work.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!work.exists(), "{} is left behind", work.display());
}
