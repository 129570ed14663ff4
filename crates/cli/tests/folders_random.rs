//! A randomized run of one synced folder on two devices (through the client
//! library, in this process) and three relays: edits, deletions, renames,
//! conflicting edits on both sides, passes cut off part-way (as a killed
//! process leaves them) and a relay stopped mid-pass.
//!
//! Checked against what the devices were shown: every file content a
//! completed pass read on either device is, at the end, in the folder or
//! among its versions (nothing a pass saw is lost); and once every relay
//! is back and both devices pass again, both hold the same tree.
//!
//! `CAIRN_FOLDER_STEPS` sets the number of steps (500 by default; run
//! 10,000 by hand), `CAIRN_FOLDER_SEED` the seed (printed on failure).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{Client, Output, Silent};

use crate::common::Relay;
use crate::folders::tree;
use crate::sync::devices;

/// Files the steps write, in directories that deletions empty.
const PATHS: &[&str] = &["a", "b", "d/c", "d/e", "f/g/h", "f/i"];

/// A small, seedable generator (xorshift64*): the run replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Every file's content under `root`, cairn's own files left out.
fn contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            if rel.starts_with(".cairn") {
                continue;
            }
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Runs one pass on `client`; `Some(true)` when it completed with nothing
/// left undone, `Some(false)` when it completed with something left for a
/// later pass (deletions held back among them, unless `allow_deletes`),
/// `None` when it failed or was cut off.
async fn pass(
    client: &mut Client,
    cut_after: Option<Duration>,
    allow_deletes: bool,
) -> Option<bool> {
    let trace = std::env::var_os("CAIRN_FOLDER_TRACE").is_some();
    let run = client.folder_sync(Some("F"), allow_deletes, Arc::new(Silent));
    let result = match cut_after {
        Some(after) => tokio::time::timeout(after, run).await,
        None => Ok(run.await),
    };
    if trace {
        eprintln!("  pass: {result:?}");
    }
    let mut passes = result.ok()?.ok()?;
    let pass = passes.pop()?.ok()?;
    Some(pass.problems.is_empty() && pass.held_deletes == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_two_device_run_loses_nothing_and_converges() {
    let steps: usize = std::env::var("CAIRN_FOLDER_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seed: u64 = std::env::var("CAIRN_FOLDER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| -> u64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                .into()
        });
    eprintln!("folder random run: {steps} steps, CAIRN_FOLDER_SEED={seed}");
    // xorshift stays at 0 from 0.
    let mut rng = Rng(seed | 1);
    let mut relays = [
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    ];
    let mut group = {
        let [a, b, c] = &relays;
        devices(&[a, b, c], 2).await
    };
    let dirs = tempfile::tempdir().unwrap();
    let roots: Vec<PathBuf> = (0..2)
        .map(|i| dirs.path().join(format!("dev{i}")))
        .collect();
    for (client, root) in group.clients.iter_mut().zip(&roots) {
        std::fs::create_dir_all(root).unwrap();
        client
            .folder_add(root, Some("F"), Arc::new(Silent))
            .await
            .unwrap();
    }

    // Every content a completed pass read; it must survive the run.
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for step in 0..steps {
        let d = rng.below(2);
        let root = &roots[d];
        let action = match rng.below(20) {
            0..=5 => "edit",
            6..=7 => "delete",
            8..=9 => "rename",
            10 => "delete_dir",
            11..=16 => "pass",
            17 => "cut_pass",
            18 => "relay_down_mid_pass",
            _ => "relays_up",
        };
        *counts.entry(action).or_default() += 1;
        if std::env::var_os("CAIRN_FOLDER_TRACE").is_some() {
            eprintln!(
                "step {step}: device {d} {action}; before: {:?}",
                contents(root)
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect::<Vec<_>>()
            );
        }
        match action {
            "edit" => {
                let path = root.join(rng.pick(PATHS));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, format!("device {d} step {step} {}", rng.next())).unwrap();
            }
            "delete" => {
                let _ = std::fs::remove_file(root.join(rng.pick(PATHS)));
            }
            "rename" => {
                let (from, to) = (root.join(rng.pick(PATHS)), root.join(rng.pick(PATHS)));
                if from.is_file() && !to.exists() {
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::rename(from, to).unwrap();
                }
            }
            "delete_dir" => {
                let _ = std::fs::remove_dir_all(root.join(rng.pick(&["d", "f", "f/g"])));
            }
            "pass" | "cut_pass" => {
                let before = contents(root);
                let cut =
                    (action == "cut_pass").then(|| Duration::from_millis(1 + rng.next() % 40));
                if pass(&mut group.clients[d], cut, false).await == Some(true) {
                    seen.extend(before.into_values());
                }
            }
            "relay_down_mid_pass" => {
                // One relay at most is down: each file has one copy, and a
                // pass needs a relay to answer.
                let up: Vec<usize> = (0..3).filter(|&i| relays[i].is_up()).collect();
                if up.len() == 3 {
                    let victim = up[rng.below(3)];
                    let delay = Duration::from_millis(rng.next() % 30);
                    let client = &mut group.clients[d];
                    let relay = &mut relays[victim];
                    let (_, ()) = tokio::join!(pass(client, None, false), async move {
                        tokio::time::sleep(delay).await;
                        relay.stop().await;
                    });
                }
            }
            _ => {
                for relay in &mut relays {
                    if !relay.is_up() {
                        relay.restart().await;
                    }
                }
            }
        }
    }

    // Quiet: every relay back, then passes until both agree.
    for relay in &mut relays {
        if !relay.is_up() {
            relay.restart().await;
        }
    }
    // A run of conflicts fills a directory with conflict copies; deleting
    // it then deletes more than a quarter of the folder, which a pass holds
    // back until a person confirms. The run's deletions were meant, so the
    // quiet passes confirm them, as that person would.
    let mut converged = false;
    for _ in 0..6 {
        let mut clean = true;
        for client in &mut group.clients {
            clean &= pass(client, None, true).await == Some(true);
        }
        if clean && tree(&roots[0]) == tree(&roots[1]) {
            converged = true;
            break;
        }
    }
    assert!(
        converged,
        "seed {seed}: the devices did not converge:\n{:#?}\n{:#?}",
        tree(&roots[0]),
        tree(&roots[1])
    );

    // Nothing a pass saw is lost: it is in the folder, or a version.
    let final_files = contents(&roots[0]);
    let mut kept: BTreeSet<Vec<u8>> = final_files.values().cloned().collect();
    let client = &mut group.clients[0];
    let fetched = dirs.path().join("version");
    let mut paths: BTreeSet<String> = PATHS.iter().map(|p| (*p).to_owned()).collect();
    paths.extend(final_files.keys().cloned());
    paths.extend(conflict_paths(client).await);
    for path in &paths {
        let Ok(versions) = client.folder_versions("F", path).await else {
            continue;
        };
        for version in versions.iter().filter(|v| !v.current) {
            client
                .get(
                    &version.blob.to_string(),
                    Output::File(fetched.clone()),
                    Arc::new(Silent),
                )
                .await
                .unwrap();
            kept.insert(std::fs::read(&fetched).unwrap());
        }
    }
    let lost: Vec<String> = seen
        .difference(&kept)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(lost.is_empty(), "seed {seed}: lost {lost:?}");
    eprintln!(
        "folder random run: {counts:?}; {} contents seen, {} kept, {} files at the end",
        seen.len(),
        kept.len(),
        final_files.len()
    );
}

/// Every conflict copy's path the folder ever held (they may have been
/// deleted or renamed since).
async fn conflict_paths(client: &mut Client) -> Vec<String> {
    client
        .folder_paths("F")
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.contains(".conflict-"))
        .collect()
}
