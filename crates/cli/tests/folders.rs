//! Synced folders (PROTOCOL.md §10.9) between two devices of one identity,
//! each a `cairn` process with its own home and its own copy of the
//! folder, through real relays: files, directories, links, renames and
//! deletions carry over; concurrent edits keep both; an edit beats a
//! deletion; a vanished root pauses; a mass deletion waits; versions come
//! back.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Device, Relay, data_with_marker, disk_contains};
use crate::devices::pair;

/// What a folder holds, as a person would compare two copies: each path's
/// kind and content (a link's target; a file's as its length and hash),
/// modification time (seconds) and execute bit. cairn's own marker and
/// staging directory are left out, and what the tests' `.cairnignore`
/// and the default rules leave out (`*.log`, `*.swp`).
pub(crate) fn tree(root: &Path) -> BTreeMap<String, (String, String, i64, bool)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            if rel == ".cairn-folder"
                || rel == ".cairn-tmp"
                || rel.ends_with(".log")
                || rel.ends_with(".swp")
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mtime = meta.modified().map_or(0, |t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap())
            });
            let value = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ("link".into(), target.to_str().unwrap().to_owned(), 0, false)
            } else if meta.is_dir() {
                pending.push(path.clone());
                ("dir".into(), String::new(), 0, false)
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                let data = std::fs::read(&path).unwrap();
                let digest = blake3::hash(&data).to_hex()[..16].to_owned();
                (
                    "file".into(),
                    format!("{} bytes {digest}", data.len()),
                    mtime,
                    exec,
                )
            };
            out.insert(rel, value);
        }
    }
    out
}

/// Two relays; a laptop and a phone of one identity, each storing every
/// file on both.
pub(crate) async fn laptop_and_phone() -> (Relay, Relay, Device, Device) {
    let (a, b) = (Relay::start().await, Relay::start().await);
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&a, &b]).await;
    laptop.run(&["config", "--replicas", "2"]).await.ok();
    let phone = Device::new();
    let (approve, join) = pair(&laptop, &phone, &b, false, "30").await;
    approve.ok();
    join.ok();
    phone.run(&["config", "--replicas", "2"]).await.ok();
    (a, b, laptop, phone)
}

/// Where a device keeps its copy of the folder.
pub(crate) fn folder_dir(device: &Device) -> PathBuf {
    device.dir.path().join("Documents")
}

/// Runs `folder sync --json` (allowing deletions when asked) and returns
/// the one folder's pass.
pub(crate) async fn sync(device: &Device, extra: &[&str]) -> Value {
    let mut args = vec!["folder", "sync", "--json"];
    args.extend_from_slice(extra);
    let run = device.run(&args).await;
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("folder sync printed no JSON ({e}): {run:#?}"));
    doc["folders"][0].clone()
}

fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// Sets a file's modification time (seconds since the epoch), as an edit
/// a second later would.
fn touch(path: &Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// Shares the laptop's folder and attaches it on the phone; both hold the
/// same tree afterwards.
pub(crate) async fn share(laptop: &Device, phone: &Device) {
    let added = laptop
        .run(&[
            "folder",
            "add",
            folder_dir(laptop).to_str().unwrap(),
            "--json",
        ])
        .await
        .json();
    assert_eq!(added["converged"], true, "{added}");
    let attached = phone
        .run(&[
            "folder",
            "add",
            folder_dir(phone).to_str().unwrap(),
            "--name",
            "Documents",
            "--json",
        ])
        .await
        .json();
    assert_eq!(attached["converged"], true, "{attached}");
    assert_eq!(tree(&folder_dir(laptop)), tree(&folder_dir(phone)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_carries_files_dirs_links_renames_and_deletions() {
    let (a, b, laptop, phone) = laptop_and_phone().await;
    let root = folder_dir(&laptop);
    let secret = b"folder plaintext marker, never on a relay";
    let big = data_with_marker(12 << 20, secret);
    write(&root.join("notes/today.txt"), secret);
    write(&root.join("notes/big.bin"), &big);
    write(&root.join("photos/2026/a.jpg"), b"jpeg bytes");
    write(&root.join("run.sh"), b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    touch(&root.join("photos/2026/a.jpg"), 1_500_000_000);
    std::fs::create_dir_all(root.join("empty/inner")).unwrap();
    std::os::unix::fs::symlink("../notes/today.txt", root.join("photos/latest")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).unwrap();
    write(&root.join("notes/.today.txt.swp"), b"editor swap file");
    write(&root.join(".cairnignore"), b"*.log\n");
    write(&root.join("debug.log"), b"ignored");

    share(&laptop, &phone).await;
    let phone_root = folder_dir(&phone);
    assert!(!phone_root.join("debug.log").exists(), "ignored paths stay");
    assert!(!phone_root.join("notes/.today.txt.swp").exists());
    assert_eq!(
        std::fs::read_link(phone_root.join("outside")).unwrap(),
        Path::new("/etc/passwd"),
        "a link is stored as a link, never followed"
    );
    for relay in [&a, &b] {
        assert_eq!(
            disk_contains(&relay.data(), secret),
            None,
            "plaintext on a relay"
        );
    }

    // A rename of a directory, an edit, a deletion, a new empty directory.
    std::fs::rename(root.join("photos"), root.join("pictures")).unwrap();
    write(&root.join("notes/today.txt"), b"edited on the laptop");
    std::fs::remove_file(root.join("run.sh")).unwrap();
    std::fs::create_dir(root.join("new-empty")).unwrap();
    let pass = sync(&laptop, &[]).await;
    assert_eq!(pass["converged"], true, "{pass}");
    assert_eq!(pass["sent"], 1, "only the edit is uploaded: {pass}");
    assert!(pass["relisted"].as_u64().unwrap() >= 1, "{pass}");
    let pass = sync(&phone, &[]).await;
    assert_eq!(pass["converged"], true, "{pass}");
    assert_eq!(pass["fetched"], 1, "only the edit is downloaded: {pass}");
    assert!(pass["moved_here"].as_u64().unwrap() >= 1, "{pass}");
    assert_eq!(tree(&root), tree(&phone_root));

    // And back: the phone deletes a directory; the laptop follows.
    std::fs::remove_dir_all(phone_root.join("empty")).unwrap();
    sync(&phone, &[]).await;
    let pass = sync(&laptop, &[]).await;
    assert_eq!(pass["converged"], true, "{pass}");
    assert!(!root.join("empty").exists());
    assert_eq!(tree(&root), tree(&phone_root));

    // A pass with nothing to do does nothing.
    let pass = sync(&laptop, &[]).await;
    assert_eq!(
        (pass["sent"].as_u64(), pass["fetched"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_keep_both_files_on_every_device() {
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    write(&folder_dir(&laptop).join("plan.txt"), b"first draft");
    share(&laptop, &phone).await;

    // Both edit before either syncs; the laptop's reaches the relays first.
    write(&folder_dir(&laptop).join("plan.txt"), b"the laptop's edit");
    write(
        &folder_dir(&phone).join("plan.txt"),
        b"the phone's edit, longer",
    );
    sync(&laptop, &[]).await;
    let pass = sync(&phone, &[]).await;
    let conflicts = pass["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{pass}");
    let copy = conflicts[0].as_str().unwrap();
    assert!(
        copy.starts_with("plan.conflict-phone-") && copy.ends_with(".txt"),
        "{copy}"
    );
    sync(&laptop, &[]).await;
    for device in [&laptop, &phone] {
        let root = folder_dir(device);
        assert_eq!(
            std::fs::read(root.join("plan.txt")).unwrap(),
            b"the laptop's edit"
        );
        assert_eq!(
            std::fs::read(root.join(copy)).unwrap(),
            b"the phone's edit, longer"
        );
    }
    assert_eq!(tree(&folder_dir(&laptop)), tree(&folder_dir(&phone)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_wins_over_a_deletion_either_way() {
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    write(&folder_dir(&laptop).join("kept-here.txt"), b"v1");
    write(&folder_dir(&laptop).join("kept-there.txt"), b"v1");
    share(&laptop, &phone).await;

    // Laptop deletes one and edits the other; the phone does the reverse.
    std::fs::remove_file(folder_dir(&laptop).join("kept-here.txt")).unwrap();
    write(
        &folder_dir(&laptop).join("kept-there.txt"),
        b"edited on the laptop",
    );
    write(
        &folder_dir(&phone).join("kept-here.txt"),
        b"edited on the phone",
    );
    std::fs::remove_file(folder_dir(&phone).join("kept-there.txt")).unwrap();
    sync(&laptop, &[]).await;
    sync(&phone, &[]).await;
    sync(&laptop, &[]).await;
    for device in [&laptop, &phone] {
        let root = folder_dir(device);
        assert_eq!(
            std::fs::read(root.join("kept-here.txt")).unwrap(),
            b"edited on the phone"
        );
        assert_eq!(
            std::fs::read(root.join("kept-there.txt")).unwrap(),
            b"edited on the laptop"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_root_pauses_the_folder_and_deletes_nothing() {
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    for i in 0..5 {
        write(&folder_dir(&laptop).join(format!("f{i}")), b"data");
    }
    share(&laptop, &phone).await;

    // The disk is "unmounted": the mount point is an empty directory.
    let root = folder_dir(&laptop);
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::create_dir(&root).unwrap();
    let run = laptop.run(&["folder", "sync"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("paused"), "{run:#?}");
    let status = laptop.run(&["folder", "status", "--json"]).await;
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(status[0]["paused"].is_string(), "{status}");
    // Gone entirely: paused too.
    std::fs::remove_dir(&root).unwrap();
    assert_eq!(laptop.run(&["folder", "sync"]).await.code, 1);
    sync(&phone, &[]).await;
    assert_eq!(tree(&folder_dir(&phone)).len(), 5, "nothing was deleted");

    // Attached again: the files come back, and still nothing is deleted.
    laptop
        .run(&[
            "folder",
            "add",
            root.to_str().unwrap(),
            "--name",
            "Documents",
        ])
        .await
        .ok();
    assert_eq!(tree(&root), tree(&folder_dir(&phone)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_deletion_is_held_until_allowed() {
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    for i in 0..20 {
        write(&folder_dir(&laptop).join(format!("f{i:02}")), b"data");
    }
    share(&laptop, &phone).await;
    for i in 0..15 {
        std::fs::remove_file(folder_dir(&laptop).join(format!("f{i:02}"))).unwrap();
    }
    write(&folder_dir(&laptop).join("new"), b"still sent");
    let pass = sync(&laptop, &[]).await;
    assert_eq!(pass["held_deletes"], 15, "{pass}");
    assert_eq!(pass["converged"], false);
    sync(&phone, &[]).await;
    assert_eq!(
        tree(&folder_dir(&phone)).len(),
        21,
        "held, and the rest sent"
    );

    let pass = sync(&laptop, &["--allow-deletes"]).await;
    assert_eq!(pass["held_deletes"], 0, "{pass}");
    sync(&phone, &[]).await;
    assert_eq!(tree(&folder_dir(&phone)).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_bring_back_overwritten_and_deleted_files() {
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    let root = folder_dir(&laptop);
    write(&root.join("essay.txt"), b"version one");
    share(&laptop, &phone).await;
    // Versions are chosen by the second they were written in.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    write(&root.join("essay.txt"), b"version two, longer");
    sync(&laptop, &[]).await;
    std::fs::remove_file(root.join("essay.txt")).unwrap();
    sync(&laptop, &[]).await;
    sync(&phone, &[]).await;
    assert!(!folder_dir(&phone).join("essay.txt").exists());

    let path = root.join("essay.txt");
    let versions = laptop
        .run(&["folder", "versions", path.to_str().unwrap(), "--json"])
        .await
        .json();
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    // The first version, to a file.
    let out = laptop.dir.path().join("first.txt");
    let at = versions[0]["written_at"].as_u64().unwrap().to_string();
    laptop
        .run(&[
            "folder",
            "restore",
            "--folder",
            "Documents",
            "essay.txt",
            "--at",
            &at,
            "-o",
            out.to_str().unwrap(),
        ])
        .await
        .ok();
    assert_eq!(std::fs::read(&out).unwrap(), b"version one");
    // The deleted file, in place, for every device.
    laptop
        .run(&["folder", "restore", path.to_str().unwrap()])
        .await
        .ok();
    assert_eq!(std::fs::read(&path).unwrap(), b"version two, longer");
    sync(&phone, &[]).await;
    assert_eq!(
        std::fs::read(folder_dir(&phone).join("essay.txt")).unwrap(),
        b"version two, longer"
    );
}

/// Waits up to 30 s for `check`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not within 30 s: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_passes_on_changes_here_and_on_other_devices_writes() {
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    write(&folder_dir(&laptop).join("start.txt"), b"start");
    share(&laptop, &phone).await;
    let mut watcher = phone.spawn(&["folder", "watch", "--settle", "1", "--poll", "1", "--json"]);

    // Written on the laptop: the phone's watch learns it from the relays.
    write(
        &folder_dir(&laptop).join("from-laptop.txt"),
        b"sent by the laptop",
    );
    sync(&laptop, &[]).await;
    let arrived = folder_dir(&phone).join("from-laptop.txt");
    eventually("the laptop's file reaches the phone", || arrived.exists()).await;

    // Written on the phone: its watch sends it once it settles.
    write(
        &folder_dir(&phone).join("from-phone.txt"),
        b"sent by the phone",
    );
    let mut seen = false;
    for _ in 0..60 {
        sync(&laptop, &[]).await;
        if folder_dir(&laptop).join("from-phone.txt").exists() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(seen, "the phone's watch did not send its new file");
    assert_eq!(tree(&folder_dir(&laptop)), tree(&folder_dir(&phone)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contrib_user_service_runs_a_watch() {
    // The unit's command line, as systemd would run it, for one pass.
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd/cairn-folder.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/cairn"), "{exec}");
    assert!(
        unit.contains("CAIRN_PASSPHRASE"),
        "the unit says how the key is unlocked"
    );
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    write(&folder_dir(&laptop).join("x"), b"x");
    share(&laptop, &phone).await;
    let mut args = words[1..].to_vec();
    args.extend(["--passes", "1", "--json"]);
    let run = phone.run(&args).await;
    assert_eq!(run.code, 0, "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_to_a_large_file_moves_only_its_changed_chunks_both_ways() {
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    let size: u64 = 24 << 20;
    let path = folder_dir(&laptop).join("video.bin");
    write(&path, &data_with_marker(24 << 20, b"a large file"));
    share(&laptop, &phone).await;

    // One byte in the middle, on the laptop.
    let mut data = std::fs::read(&path).unwrap();
    data[12 << 20] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let sent = sync(&laptop, &[]).await;
    let fetched = sync(&phone, &[]).await;
    assert_eq!(
        std::fs::read(folder_dir(&phone).join("video.bin")).unwrap(),
        data
    );
    // A chunk is 2 MiB on average and 8 MiB at most; the edit touches one
    // or two, each stored on both relays.
    let uploaded = sent["uploaded_bytes"].as_u64().unwrap();
    let downloaded = fetched["fetched_bytes"].as_u64().unwrap();
    assert!(uploaded < size / 2, "sent {uploaded} of {size}: {sent}");
    assert!(
        downloaded < size / 3,
        "fetched {downloaded} of {size}: {fetched}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_with_nothing_to_do_asks_each_relay_once() {
    let (a, b, laptop, phone) = laptop_and_phone().await;
    for i in 0..50 {
        write(&folder_dir(&laptop).join(format!("d{}/f{i}", i % 5)), b"x");
    }
    share(&laptop, &phone).await;
    // The phone claims the laptop's copies once; after that, nothing.
    sync(&phone, &[]).await;
    let before = (a.requests_answered().await, b.requests_answered().await);
    let pass = sync(&phone, &[]).await;
    let after = (a.requests_answered().await, b.requests_answered().await);
    assert_eq!(pass["converged"], true, "{pass}");
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "a pass over an unchanged folder lists the mailbox on each relay, nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_go_to_each_relay_in_a_few_batches() {
    let (a, b, laptop, phone) = laptop_and_phone().await;
    write(&folder_dir(&laptop).join("start"), b"start");
    share(&laptop, &phone).await;
    for i in 0..300 {
        let body = format!("small file {i} ").repeat(1 + i % 40);
        write(
            &folder_dir(&laptop).join(format!("d{}/f{i}", i % 7)),
            body.as_bytes(),
        );
    }
    let before = (a.requests_answered().await, b.requests_answered().await);
    let pass = sync(&laptop, &[]).await;
    let after = (a.requests_answered().await, b.requests_answered().await);
    assert_eq!(pass["sent"], 300, "{pass}");
    // One PUT a file would be 300 requests a relay; batches are a few, with
    // the pass's operations and head beside them.
    for (relay, used) in [("a", after.0 - before.0), ("b", after.1 - before.1)] {
        assert!(
            used < 30,
            "relay {relay} answered {used} requests for 300 files"
        );
    }
    sync(&phone, &[]).await;
    for i in [0, 151, 299] {
        let rel = format!("d{}/f{i}", i % 7);
        assert_eq!(
            std::fs::read(folder_dir(&phone).join(&rel)).unwrap(),
            std::fs::read(folder_dir(&laptop).join(&rel)).unwrap(),
            "{rel}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_one_home_take_turns_and_never_fork_its_log() {
    let (_a, _b, laptop, phone) = laptop_and_phone().await;
    write(&folder_dir(&laptop).join("start"), b"start");
    share(&laptop, &phone).await;
    // A watch on the laptop, and passes and puts by hand beside it, each
    // with changes to write: every one appends to the laptop's log.
    let mut watcher = laptop.spawn(&["folder", "watch", "--settle", "0", "--poll", "1"]);
    let mut children = Vec::new();
    for round in 0..4 {
        write(&folder_dir(&laptop).join(format!("f{round}")), b"changed");
        children.push(laptop.spawn(&["folder", "sync"]));
        let src = laptop.dir.path().join(format!("put-{round}"));
        std::fs::write(&src, b"put").unwrap();
        children.push(laptop.spawn(&["put", src.to_str().unwrap()]));
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    let report = phone.run(&["sync", "--json"]).await.json();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        !findings.iter().any(|f| f["kind"] == "equivocation"),
        "the laptop's log forked: {findings:?}"
    );
    assert_eq!(report["files"], 4, "{report}");
}
