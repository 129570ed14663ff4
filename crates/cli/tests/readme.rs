//! Every command in the README is exercised. The ones a newcomer types
//! (running a relay, peering two, the whole "Use it" session, inspecting a
//! record) run here for real, as shell scripts made from the README's own
//! code blocks, against the binaries the tests build, in a temporary
//! directory and on free ports. The others are listed with the test or CI
//! step that runs them. A command added to the README with neither fails
//! this test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{BIN, PASSPHRASE};

/// README commands run elsewhere, by prefix, with where.
const ELSEWHERE: &[(&str, &str)] = &[
    (
        "cargo run --release --bin cairn -- demo",
        "crates/cli/tests/demo.rs::the_demo_walks_through_then_serves_until_ctrl_c_and_cleans_up",
    ),
    ("cargo test --workspace", ".ci/run"),
    // Every script here runs the same binaries, as `cargo test` builds them.
    (
        "cargo build --release",
        "crates/cli/tests/readme.rs::readme_blocks",
    ),
    ("bash scripts/backends.sh start", ".ci/run"),
    ("CAIRN_TEST_BACKEND=scaleout cargo test", ".ci/run"),
    ("bash scripts/backends.sh stop", ".ci/run"),
    (
        "CAIRN_CRASH_ROUNDS=50 cargo test",
        "crates/relay/tests/crash.rs::crash_campaign_loses_nothing_acknowledged",
    ),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The README's `sh` code blocks, line by line, comments dropped.
fn readme_blocks() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), line) => {
                // A comment is `#` after two spaces (none of the commands
                // has one inside quotes).
                let command = line.split("  #").next().unwrap_or("").trim_end();
                if !command.trim().is_empty() {
                    block.push(command.to_owned());
                }
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Where `command` is run, if not here.
fn elsewhere(command: &str) -> Option<&'static str> {
    ELSEWHERE
        .iter()
        .find(|(prefix, _)| command.starts_with(prefix))
        .map(|(_, place)| *place)
}

#[test]
fn every_readme_command_is_run_here_or_by_a_named_test() {
    for (_, place) in ELSEWHERE {
        let (file, function) = place.split_once("::").unwrap_or((place, ""));
        let text =
            std::fs::read_to_string(repo().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            function.is_empty() || text.contains(&format!("fn {function}(")),
            "{place} does not exist"
        );
    }
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    for block in readme_blocks() {
        for command in block {
            match elsewhere(&command) {
                Some(".ci/run") => {
                    let key = command.split(" /tmp").next().unwrap_or(&command);
                    let key = key.split(" -p ").next().unwrap_or(key);
                    assert!(ci.contains(key), ".ci/run does not run {command:?}");
                }
                Some(_) => {}
                None => assert!(
                    runs_here(&command),
                    "README command {command:?} is neither run by readme.rs nor listed in \
                     ELSEWHERE"
                ),
            }
        }
    }
}

/// The commands `run_blocks` turns into scripts.
fn runs_here(command: &str) -> bool {
    [
        "cargo run --release --bin cairn-relay",
        "cargo run -q -p cairn-cli -- ",
        "curl ",
        "cairn ",
        "cairn-relay ",
        "key() ",
        "A=",
        "KA=",
    ]
    .iter()
    .any(|p| command.starts_with(p))
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `block` as a bash script: the binaries from this build on PATH, the
/// README's fixed ports swapped for free ones, background relays waited for
/// and stopped at the end.
fn script(block: &[String], bin: &Path, ports: (u16, u16)) -> String {
    let mut out = format!(
        "set -euo pipefail\nexport PATH={}:$PATH\n\
         up() {{ for _ in $(seq 100); do curl -fs \"$1/health\" >/dev/null && return; sleep 0.1; done; \
         echo \"$1 did not come up\" >&2; return 1; }}\n\
         trap 'rc=$?; for j in $(jobs -p); do kill $j 2>/dev/null || true; done; wait; exit $rc' \
         EXIT\n",
        bin.display()
    );
    for command in block {
        let mut line = command
            .replace("127.0.0.1:7070", &format!("127.0.0.1:{}", ports.0))
            .replace("127.0.0.1:7071", &format!("127.0.0.1:{}", ports.1))
            .replace("cargo run -q -p cairn-cli -- ", "cairn ");
        if line.starts_with("cargo build --release") {
            // The binaries are already on PATH.
            continue;
        }
        if let Some(rest) = line.strip_prefix("cargo run --release --bin cairn-relay") {
            // It serves in the foreground; here it must not block the
            // script. The README's default address is 127.0.0.1:7070.
            line = format!(
                "CAIRN_RELAY_LISTEN=127.0.0.1:{} cairn-relay{rest} &",
                ports.0
            );
        }
        out.push_str(&line);
        out.push('\n');
        if line.trim_end().ends_with('&') {
            let port = if line.contains(&format!("127.0.0.1:{}", ports.1)) {
                ports.1
            } else {
                ports.0
            };
            out.push_str(&format!("up http://127.0.0.1:{port}\n"));
        }
    }
    out
}

/// Runs `script` in `dir`; its standard output.
fn run_script(script: &str, dir: &Path, home: &Path) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("CAIRN_HOME", home)
        .env("CAIRN_PASSPHRASE", PASSPHRASE)
        .env("CAIRN_INSECURE_KDF_COST", "8")
        .env_remove("CAIRN_RELAY_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "README block failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
#[allow(clippy::print_stderr, reason = "a skipped test says why")]
fn the_readme_blocks_run_as_written() {
    let bin = Path::new(BIN).parent().unwrap().to_path_buf();
    if !bin.join("cairn-relay").exists() {
        // `cargo test --workspace` (and so CI) builds it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must build cairn-relay"
        );
        eprintln!(
            "SKIP the_readme_blocks_run_as_written: no cairn-relay next to {BIN} (run `cargo test \
             --workspace`)"
        );
        return;
    }
    let mut ran = 0;
    for block in readme_blocks() {
        if !block.iter().any(|c| runs_here(c)) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let ports = (free_port(), free_port());
        let mut script = script(&block, &bin, ports);
        let inspects = block.iter().any(|c| c.contains("inspect"));
        let uses = block.iter().any(|c| c.starts_with("cairn put notes.txt"));
        let folder = block
            .iter()
            .any(|c| c.starts_with("cairn folder add ./Documents"));
        let peers = block.iter().any(|c| c.contains("--peer"));
        if uses {
            std::fs::write(dir.path().join("notes.txt"), "notes from the README\n").unwrap();
        }
        if folder {
            std::fs::create_dir(dir.path().join("Documents")).unwrap();
            std::fs::write(dir.path().join("Documents/notes.txt"), "in a folder\n").unwrap();
        }
        if peers {
            // What the block is for: each relay now names the other.
            script.push_str(
                "up $A && up $B\n\
                 curl -fs $A/.well-known/cairn-relay | grep -q \"$KB\"\n\
                 curl -fs $B/.well-known/cairn-relay | grep -q \"$KA\"\n\
                 echo peered\n",
            );
        }
        // The inspect example reads a test vector by its repository path.
        let cwd = if inspects {
            repo()
        } else {
            dir.path().to_path_buf()
        };
        let stdout = run_script(&script, &cwd, &home);
        if uses {
            assert!(stdout.contains("stored notes.txt"), "{stdout}");
            assert_eq!(
                std::fs::read(dir.path().join("notes-copy.txt")).unwrap(),
                b"notes from the README\n"
            );
        }
        if peers {
            assert!(stdout.ends_with("peered\n"), "{stdout}");
        }
        if folder {
            assert!(stdout.contains("folder \"Documents\" attached"), "{stdout}");
            assert!(stdout.contains("sent 1 file"), "{stdout}");
            assert!(stdout.contains("Documents:notes.txt"), "{stdout}");
            assert!(stdout.contains("(current)"), "{stdout}");
        }
        if inspects {
            assert!(stdout.contains("head"), "{stdout}");
        }
        ran += 1;
    }
    assert!(ran >= 5, "only {ran} README blocks ran");
}
