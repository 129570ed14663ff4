//! `cairn put` / `cairn get` of one large file, to one relay and to three,
//! against the standard `age` tool encrypting and decrypting the same file
//! to the same key (the age format is what cairn seals with).
//!
//! What each side does, so the ratios are read right:
//! - `cairn put` cuts the file into chunks (PROTOCOL.md §10.8), seals each
//!   and sends it to every relay at once while the next is read (each relay
//!   acknowledges only once its copy is on stable storage), then the
//!   manifest, and signs the updated file list. Each put starts with an
//!   empty chunk index, so it is a first put: nothing is deduplicated.
//! - `cairn get` fetches the manifest, then the chunks a few at a time from
//!   the relays, verifying and opening each, writes them next to the
//!   output, fsyncs and renames it.
//! - `age -e` / `age -d` read the file and write the output, without fsync.
//!
//! Key files use a cheap scrypt cost (`CAIRN_INSECURE_KDF_COST=10`), so
//! unlocking them (about 2 s at the default cost) is not what is measured.
//! The input and the relays' copies are in the page cache.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::Plan;
use super::servers::{self, sibling};
use super::stats::Row;

/// A client home with its own relays, driven through the `cairn` binary.
pub(super) struct Home {
    bin: PathBuf,
    pub(super) dir: PathBuf,
}

impl Home {
    pub(super) fn new(bin: &Path, dir: PathBuf, relays: &[String]) -> anyhow::Result<Self> {
        let home = Self {
            bin: bin.to_path_buf(),
            dir,
        };
        home.run(&["init", "--name", "bench"])?;
        for url in relays {
            home.run(&["relay", "add", url])?;
        }
        home.run(&["config", "--replicas", &relays.len().to_string()])?;
        Ok(home)
    }

    /// A second device of `approver`'s identity, paired through the relay
    /// at `url` (it learns the whole relay set).
    pub(super) fn join(
        bin: &Path,
        dir: PathBuf,
        url: &str,
        approver: &Home,
    ) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let home = Self {
            bin: bin.to_path_buf(),
            dir,
        };
        let mut child = home
            .command(&[
                "device", "join", "--relay", url, "--name", "second", "--wait", "60",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("running cairn device join")?;
        let stdout = child.stdout.take().context("no standard output")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let shown: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("join printed {line:?}"))?;
        let code = shown["code"].as_str().context("join showed no code")?;
        approver.run(&["device", "approve", code, "--wait", "30"])?;
        if !child.wait()?.success() {
            bail!("cairn device join failed");
        }
        Ok(home)
    }

    /// `cairn --home DIR --json ARGS`, to run.
    pub(super) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("--home")
            .arg(&self.dir)
            .arg("--json")
            .args(args)
            .env("CAIRN_PASSPHRASE", "bench-passphrase")
            .env("CAIRN_INSECURE_KDF_COST", "10");
        command
    }

    /// Runs `cairn --home DIR --json ARGS`: its JSON output.
    pub(super) fn run(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.command(args).output().context("running cairn")?;
        if !out.status.success() {
            bail!(
                "cairn {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("cairn {} printed no JSON document", args.join(" ")))
    }

    /// Forgets which chunks are stored, so the next put sends every one.
    fn forget_chunks(&self) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(self.dir.join("chunks")) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    /// `cairn put`, checking that it stored `copies` copies: seconds.
    pub(super) fn put(&self, input: &Path, name: &str, copies: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        let out = self.run(&["put", &cairn_testkit::arg(input), "--name", name])?;
        let secs = started.elapsed().as_secs_f64();
        let stored = out["copies"].as_array().map_or(0, Vec::len);
        if stored != copies {
            bail!("cairn put stored {stored} copies instead of {copies}: {out}");
        }
        Ok(secs)
    }

    /// `cairn get` into `output`, checked against `input` off the clock,
    /// then the stored file removed from the relays: seconds.
    fn get(&self, name: &str, output: &Path, input: &Path) -> anyhow::Result<f64> {
        let started = Instant::now();
        self.run(&["get", name, "-o", &cairn_testkit::arg(output)])?;
        let secs = started.elapsed().as_secs_f64();
        same(input, output)?;
        self.run(&["rm", name])?;
        Ok(secs)
    }
}

/// Fails unless `output` holds the same bytes as `input`; removes it.
fn same(input: &Path, output: &Path) -> anyhow::Result<()> {
    let status = Command::new("cmp")
        .arg("-s")
        .arg(input)
        .arg(output)
        .status()?;
    if !status.success() {
        bail!("{} differs from the input", output.display());
    }
    std::fs::remove_file(output)?;
    Ok(())
}

/// Runs `age ARGS`: seconds.
fn age(args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new("age")
        .args(args)
        .status()
        .context("running age (apt-get install -y age)")?;
    if !status.success() {
        bail!("age {} failed", args.join(" "));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Writes `size` bytes of incompressible data to `path` and syncs it, so
/// its writeback does not land in the first measurement. The bytes are one
/// BLAKE3 output stream: no block repeats, so nothing in the file
/// deduplicates against the rest of it (as a photo or a video would not).
pub(super) fn write_input(path: &Path, size: usize) -> anyhow::Result<()> {
    const BLOCK: usize = 1 << 20;
    let mut file = std::fs::File::create(path)?;
    let mut stream = blake3::Hasher::new()
        .update(b"cairn-bench client input")
        .finalize_xof();
    let mut block = vec![0u8; BLOCK];
    for i in 0..size.div_ceil(BLOCK) {
        let len = BLOCK.min(size - i * BLOCK);
        stream.fill(&mut block[..len]);
        file.write_all(&block[..len])?;
    }
    file.sync_all()?;
    Ok(())
}

/// The age recipient in the header of an exported vault identity file.
pub(super) fn recipient(identity: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(identity)?
        .lines()
        .filter_map(|l| l.split_once("recipient ").map(|(_, r)| r.trim()))
        .rfind(|r| r.starts_with("age1"))
        .map(str::to_owned)
        .context("no recipient in the exported vault file")
}

/// Put and get of `plan.client_size` bytes to one and to three relays,
/// each run paired with `age -e` or `age -d` of the same file: MB/s.
pub(crate) fn put_get(plan: &Plan, work: &Path) -> anyhow::Result<Vec<Row>> {
    let size = plan.client_size;
    let dir = work.join("client");
    std::fs::create_dir_all(&dir)?;
    let relays = (0..3)
        .map(|i| servers::relay(&dir, &format!("relay{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let urls: Vec<String> = relays.iter().map(|r| r.url()).collect();
    let bin = sibling("cairn")?;
    let one = Home::new(&bin, dir.join("h1"), &urls[..1])?;
    let three = Home::new(&bin, dir.join("h3"), &urls)?;
    let identity = dir.join("vault.txt");
    one.run(&["key", "export-vault", &cairn_testkit::arg(&identity)])?;
    let recipient = recipient(&identity)?;
    let input = dir.join("input");
    write_input(&input, size)?;
    let (input_s, identity_s) = (cairn_testkit::arg(&input), cairn_testkit::arg(&identity));
    let (sealed, opened, got) = (dir.join("age.enc"), dir.join("age.dec"), dir.join("got"));
    let (sealed_s, opened_s) = (cairn_testkit::arg(&sealed), cairn_testkit::arg(&opened));

    let mbps = |secs: f64| size as f64 / secs / 1e6;
    let [mut put1, mut put3, mut get1, mut get3, mut age_e, mut age_d]: [Vec<f64>; 6] =
        Default::default();
    for round in 0..plan.pairs {
        let name = format!("bench-{round}");
        age_e.push(mbps(age(&[
            "-e", "-r", &recipient, "-o", &sealed_s, &input_s,
        ])?));
        one.forget_chunks()?;
        put1.push(mbps(one.put(&input, &name, 1)?));
        three.forget_chunks()?;
        put3.push(mbps(three.put(&input, &name, 3)?));
        age_d.push(mbps(age(&[
            "-d",
            "-i",
            &identity_s,
            "-o",
            &opened_s,
            &sealed_s,
        ])?));
        same(&input, &opened)?;
        std::fs::remove_file(&sealed)?;
        get1.push(mbps(one.get(&name, &got, &input)?));
        get3.push(mbps(three.get(&name, &got, &input)?));
    }
    drop(relays);
    std::fs::remove_dir_all(&dir)?;

    let label = |op: &str, relays: &str| format!("cairn {op} {} MiB, {relays}", size >> 20);
    let row = |figure: String, reference: &str, cairn: Vec<f64>, against: &[f64]| Row {
        figure,
        unit: "MB/s",
        reference: reference.into(),
        higher_is_better: true,
        cairn,
        against: against.to_vec(),
    };
    Ok(vec![
        row(label("put", "1 relay"), "age -e", put1, &age_e),
        row(label("put", "3 relays"), "age -e", put3, &age_e),
        row(label("get", "1 relay"), "age -d", get1, &age_d),
        row(label("get", "3 relays"), "age -d", get3, &age_d),
    ])
}
