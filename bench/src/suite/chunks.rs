//! What storing files as chunks buys, each figure against its reference in
//! the same run:
//! - `cairn put` of the client file to one relay against `restic backup` of
//!   the same file into a new local repository (Debian's restic);
//! - after a 1-byte edit in the middle, the bytes a second `cairn put`
//!   sends the relay against the bytes a second `restic backup` adds to its
//!   repository;
//! - a `cairn put` killed about half way and run again: bytes the relay
//!   received in both runs against what an uninterrupted put sends;
//! - the client's peak resident memory during a put and a get, against
//!   `age -e` and `age -d` of the same file.
//!
//! Bytes sent are read from the relay's own counter
//! (`cairn_bytes_received_total` on `/metrics`), so they count every blob
//! the put uploaded (chunks, the manifest, the sealed operation), not only
//! what the client reports.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Plan;
use super::client::{Home, recipient, write_input};
use super::servers::{self, sibling};
use super::stats::Row;

/// The relay's count of request body bytes received so far.
fn received(url: &str) -> anyhow::Result<u64> {
    let out = Command::new("curl")
        .args(["-fsS", &format!("{url}/metrics")])
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("cairn_bytes_received_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .context("the relay's /metrics has no cairn_bytes_received_total")
}

/// Runs `restic ARGS` against the repository `repo`: seconds.
fn restic(repo: &Path, args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new("restic")
        .arg("--repo")
        .arg(repo)
        .arg("--quiet")
        .args(args)
        .env("RESTIC_PASSWORD", "bench")
        .output()
        .context("running restic (apt-get install -y restic)")?;
    if !out.status.success() {
        bail!(
            "restic {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            du(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// A copy of `input` with the byte in its middle flipped.
fn edited(input: &Path, out: &Path) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(input)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(out, bytes)?;
    Ok(())
}

/// Runs `child` to its end, sampling its resident memory every 10 ms:
/// the peak, in MiB.
fn peak_rss(mut child: Child, what: &str) -> anyhow::Result<f64> {
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{what} failed");
            }
            break;
        }
        peak = peak.max(cairn_testkit::rss_bytes(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(peak as f64 / f64::from(1 << 20))
}

/// The figures of this section.
pub(crate) fn chunks(plan: &Plan, work: &Path) -> anyhow::Result<Vec<Row>> {
    let size = plan.client_size;
    let mib = size >> 20;
    let dir = work.join("chunks");
    std::fs::create_dir_all(&dir)?;
    let relay = servers::relay(&dir, "relay")?;
    let url = relay.url();
    let bin = sibling("cairn")?;
    let input = dir.join("input");
    write_input(&input, size)?;
    let changed = dir.join("input-edited");
    edited(&input, &changed)?;
    let identity = dir.join("vault.txt");

    let mbps = |secs: f64| size as f64 / secs / 1e6;
    let mut rows = Vec::new();
    let [
        mut put,
        mut backup,
        mut sent_edit,
        mut added_edit,
        mut resumed,
        mut whole,
    ]: [Vec<f64>; 6] = Default::default();
    let [mut put_rss, mut get_rss, mut age_e_rss, mut age_d_rss]: [Vec<f64>; 4] =
        Default::default();
    for round in 0..plan.pairs {
        // A new home and a new repository each round: both start empty.
        let home = Home::new(
            &bin,
            dir.join(format!("home-{round}")),
            std::slice::from_ref(&url),
        )?;
        let repo = dir.join(format!("restic-{round}"));
        restic(&repo, &["init"])?;

        let before = received(&url)?;
        put.push(mbps(home.put(&input, "big", 1)?));
        whole.push((received(&url)? - before) as f64 / 1e6);
        backup.push(mbps(restic(
            &repo,
            &["backup", &cairn_testkit::arg(&input)],
        )?));

        let before = received(&url)?;
        home.put(&changed, "big", 1)?;
        sent_edit.push((received(&url)? - before) as f64 / 1e6);
        let repo_before = du(&repo)?;
        restic(&repo, &["backup", &cairn_testkit::arg(&changed)])?;
        added_edit.push((du(&repo)? - repo_before) as f64 / 1e6);

        // Killed once the relay has about half the file, then run again.
        let killed = Home::new(
            &bin,
            dir.join(format!("killed-{round}")),
            std::slice::from_ref(&url),
        )?;
        let before = received(&url)?;
        let mut child = killed
            .command(&["put", &cairn_testkit::arg(&input), "--name", "big"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        while received(&url)? - before < size as u64 / 2 {
            if child.try_wait()?.is_some() {
                bail!("the put to be killed finished first");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill()?;
        child.wait()?;
        killed.put(&input, "big", 1)?;
        resumed.push((received(&url)? - before) as f64 / 1e6);

        // Memory: a put and a get of the file, and age of the same file.
        let memory = Home::new(
            &bin,
            dir.join(format!("rss-{round}")),
            std::slice::from_ref(&url),
        )?;
        put_rss.push(peak_rss(
            memory
                .command(&["put", &cairn_testkit::arg(&input), "--name", "big"])
                .stdout(Stdio::null())
                .spawn()?,
            "cairn put",
        )?);
        let got = dir.join("got");
        get_rss.push(peak_rss(
            memory
                .command(&["get", "big", "-o", &cairn_testkit::arg(&got)])
                .stdout(Stdio::null())
                .spawn()?,
            "cairn get",
        )?);
        std::fs::remove_file(&got)?;
        memory.run(&["key", "export-vault", &cairn_testkit::arg(&identity)])?;
        let sealed = dir.join("age.enc");
        age_e_rss.push(peak_rss(
            Command::new("age")
                .args(["-e", "-r", &recipient(&identity)?, "-o"])
                .arg(&sealed)
                .arg(&input)
                .spawn()?,
            "age -e",
        )?);
        age_d_rss.push(peak_rss(
            Command::new("age")
                .arg("-d")
                .arg("-i")
                .arg(&identity)
                .arg("-o")
                .arg(&got)
                .arg(&sealed)
                .spawn()?,
            "age -d",
        )?);
        for file in [&sealed, &got, &identity] {
            std::fs::remove_file(file)?;
        }
        for done in [&home.dir, &killed.dir, &memory.dir, &repo] {
            std::fs::remove_dir_all(done)?;
        }
    }
    drop(relay);
    std::fs::remove_dir_all(&dir)?;

    let row = |figure: String, unit, reference: &str, better_high, cairn, against| Row {
        figure,
        unit,
        reference: reference.into(),
        higher_is_better: better_high,
        cairn,
        against,
    };
    rows.push(row(
        format!("cairn put {mib} MiB, 1 relay"),
        "MB/s",
        "restic backup (new repository)",
        true,
        put,
        backup,
    ));
    rows.push(row(
        format!("re-put after a 1-byte edit of {mib} MiB, sent to the relay"),
        "MB",
        "restic backup again, added to its repository",
        false,
        sent_edit,
        added_edit,
    ));
    rows.push(row(
        format!("put of {mib} MiB killed half way, then again: sent in all"),
        "MB",
        "one uninterrupted put",
        false,
        resumed,
        whole,
    ));
    rows.push(row(
        format!("cairn put {mib} MiB, peak RSS"),
        "MiB",
        "age -e",
        false,
        put_rss,
        age_e_rss,
    ));
    rows.push(row(
        format!("cairn get {mib} MiB, peak RSS"),
        "MiB",
        "age -d",
        false,
        get_rss,
        age_d_rss,
    ));
    Ok(rows)
}
