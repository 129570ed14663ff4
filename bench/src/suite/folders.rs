//! Synced folders against Syncthing (Debian's `syncthing`), same data,
//! same run: two cairn devices sharing three relays on loopback, and two
//! Syncthing instances connected to each other on loopback. For each
//! change made in the first device's folder:
//! - (a) 10,000 files of 1–64 KiB in 10 directories (`--quick`: 2,000);
//! - (b) one file of `client_size` bytes;
//! - (c) a 1-byte edit in the middle of that file;
//! - (d) a rename of a directory of 1,000 files (`--quick`: 200);
//!
//! the time from the change until the second device holds the same tree,
//! and the bytes moved. cairn runs one `folder sync` on the first device
//! and one on the second (what `folder watch` does on each, without its
//! settle and poll delays); Syncthing is told to scan the folder at once
//! (what its watcher does after its delay) and the second folder is
//! watched until its tree matches. Bytes moved are what the three relays
//! received and sent (each file goes to all three relays and comes back
//! from one) against what Syncthing's connection carried. Every tree
//! is compared byte for byte after the clock stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Plan;
use super::client::{Home, write_input};
use super::servers::{self, sibling};
use super::stats::Row;

/// Longest wait for one change to arrive.
const PATIENCE: Duration = Duration::from_secs(900);

/// Each path's size and modification time (seconds): what the second
/// folder is polled for (its content is compared once it matches).
type Shape = BTreeMap<String, (u64, i64)>;

fn shape(root: &Path) -> anyhow::Result<Shape> {
    let mut out = Shape::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Each system's own files (marker, staging, index, temp files).
            if name.starts_with(".cairn")
                || name.starts_with(".st")
                || name.starts_with(".syncthing")
            {
                continue;
            }
            let meta = entry.metadata()?;
            let rel = entry
                .path()
                .strip_prefix(root)?
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                pending.push(entry.path());
                out.insert(rel, (0, 0));
            } else {
                let mtime = meta
                    .modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
                out.insert(rel, (meta.len(), mtime));
            }
        }
    }
    Ok(out)
}

/// Polls `root` until its shape is `want`: seconds since `since`.
fn arrived(root: &Path, want: &Shape, since: Instant) -> anyhow::Result<f64> {
    loop {
        if shape(root).is_ok_and(|got| got == *want) {
            return Ok(since.elapsed().as_secs_f64());
        }
        if since.elapsed() > PATIENCE {
            bail!("{} did not catch up within {PATIENCE:?}", root.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fails unless the two trees hold the same bytes.
fn same_trees(a: &Path, b: &Path) -> anyhow::Result<()> {
    let out = Command::new("diff")
        .args(["-r", "-q", "--exclude=.cairn*", "--exclude=.st*"])
        .arg(a)
        .arg(b)
        .output()
        .context("running diff")?;
    if !out.status.success() {
        bail!(
            "{} and {} differ: {}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

/// `curl` to a local HTTP API; the body's JSON (`null` for none).
fn curl(
    method: &str,
    url: &str,
    key: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut command = Command::new("curl");
    command.args([
        "-fsS",
        "-X",
        method,
        "-H",
        &format!("X-API-Key: {key}"),
        url,
    ]);
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
        ]);
    }
    let out = command.output().context("running curl")?;
    if !out.status.success() {
        bail!("{method} {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{method} {url}: not JSON"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One Syncthing instance on loopback: no discovery, relays, NAT or
/// reporting; its GUI (the REST API) and its sync port on free ports.
struct Syncthing {
    child: Child,
    api: String,
    key: String,
    id: String,
    listen: String,
}

impl Syncthing {
    fn start(home: &Path) -> anyhow::Result<Self> {
        let status = Command::new("syncthing")
            .args([
                "generate",
                "--no-default-folder",
                "--skip-port-probing",
                "--home",
            ])
            .arg(home)
            .stdout(Stdio::null())
            .status()
            .context("running syncthing (apt-get install -y syncthing)")?;
        if !status.success() {
            bail!("syncthing generate failed");
        }
        let out = Command::new("syncthing")
            .args(["serve", "--device-id", "--home"])
            .arg(home)
            .output()?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (gui, sync) = (free_port()?, free_port()?);
        let listen = format!("tcp://127.0.0.1:{sync}");
        let config = home.join("config.xml");
        let mut text = std::fs::read_to_string(&config)?;
        for (from, to) in [
            (
                "<listenAddress>default</listenAddress>",
                format!("<listenAddress>{listen}</listenAddress>"),
            ),
            (
                "<globalAnnounceEnabled>true<",
                "<globalAnnounceEnabled>false<".into(),
            ),
            (
                "<localAnnounceEnabled>true<",
                "<localAnnounceEnabled>false<".into(),
            ),
            ("<relaysEnabled>true<", "<relaysEnabled>false<".into()),
            ("<natEnabled>true<", "<natEnabled>false<".into()),
            ("<startBrowser>true<", "<startBrowser>false<".into()),
            ("<urAccepted>0<", "<urAccepted>-1<".into()),
            (
                "<crashReportingEnabled>true<",
                "<crashReportingEnabled>false<".into(),
            ),
            (
                "<autoUpgradeIntervalH>12<",
                "<autoUpgradeIntervalH>0<".into(),
            ),
        ] {
            text = text.replace(from, &to);
        }
        std::fs::write(&config, text)?;
        let key = format!("bench-{gui}");
        let child = Command::new("syncthing")
            .args(["serve", "--no-browser", "--no-restart", "--home"])
            .arg(home)
            .arg(format!("--gui-address=127.0.0.1:{gui}"))
            .arg(format!("--gui-apikey={key}"))
            .env("STNOUPGRADE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let this = Self {
            child,
            api: format!("http://127.0.0.1:{gui}"),
            key,
            id,
            listen,
        };
        let started = Instant::now();
        while this.rest("GET", "/rest/system/ping", None).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("syncthing did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(this)
    }

    fn rest(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        curl(method, &format!("{}{path}", self.api), &self.key, body)
    }

    /// Shares folder `dir` as "bench" with `other`, at once scanned on
    /// demand only (the watcher off, so a change is timed from the scan
    /// this bench asks for).
    fn share(&self, dir: &Path, other: &Syncthing) -> anyhow::Result<()> {
        self.rest(
            "POST",
            "/rest/config/devices",
            Some(&serde_json::json!({
                "deviceID": other.id,
                "addresses": [other.listen],
                "compression": "never",
            })),
        )?;
        self.rest(
            "POST",
            "/rest/config/folders",
            Some(&serde_json::json!({
                "id": "bench",
                "label": "bench",
                "path": dir,
                "devices": [{"deviceID": self.id}, {"deviceID": other.id}],
                "rescanIntervalS": 3600,
                "fsWatcherEnabled": false,
            })),
        )?;
        Ok(())
    }

    fn scan(&self) -> anyhow::Result<()> {
        self.rest("POST", "/rest/db/scan?folder=bench", None)
            .map(drop)
    }

    /// Bytes its connections carried, both ways.
    fn carried(&self) -> anyhow::Result<u64> {
        let total = &self.rest("GET", "/rest/system/connections", None)?["total"];
        Ok(total["inBytesTotal"].as_u64().unwrap_or(0)
            + total["outBytesTotal"].as_u64().unwrap_or(0))
    }

    /// Waits until the two are connected.
    fn connected(&self, other: &Syncthing) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let connections = self.rest("GET", "/rest/system/connections", None)?;
            if connections["connections"][&other.id]["connected"] == serde_json::Value::Bool(true) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the Syncthing instances did not connect");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Syncthing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes the relays at `urls` received and sent so far.
fn relay_bytes(urls: &[String]) -> anyhow::Result<u64> {
    let mut total = 0;
    for url in urls {
        let out = Command::new("curl")
            .args(["-fsS", &format!("{url}/metrics")])
            .output()
            .context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        for name in ["cairn_bytes_received_total ", "cairn_bytes_sent_total "] {
            total += text
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .with_context(|| format!("{url}/metrics has no {name}"))?;
        }
    }
    Ok(total)
}

/// Writes `count` files of 1–64 KiB into 10 directories under `dir`,
/// the same every run.
fn small_files(dir: &Path, count: usize) -> anyhow::Result<()> {
    let mut stream = blake3::Hasher::new()
        .update(b"cairn-bench folder files")
        .finalize_xof();
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..count {
        let sub = dir.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub)?;
        let mut size = [0u8; 2];
        stream.fill(&mut size);
        let len = 1024 + usize::from(u16::from_le_bytes(size)) % (63 << 10);
        stream.fill(&mut buf[..len]);
        std::fs::write(sub.join(format!("f{i:05}.bin")), &buf[..len])?;
    }
    Ok(())
}

/// Copies `from` into `to` (`cp -a`, keeping times).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

/// Flips the middle byte of `path` and sets its modification time to
/// `secs`, keeping its size.
fn edit_one_byte(path: &Path, secs: u64) -> anyhow::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let mut file = std::fs::File::options().read(true).write(true).open(path)?;
    let middle = file.metadata()?.len() / 2;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(middle))?;
    file.read_exact(&mut byte)?;
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(middle))?;
    file.write_all(&byte)?;
    file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))?;
    file.sync_all()?;
    Ok(())
}

/// The four changes, in order, applied to the first device's folder.
#[derive(Clone, Copy)]
enum Change {
    SmallFiles,
    BigFile,
    OneByte,
    RenameDir,
}

impl Change {
    const ALL: [Change; 4] = [
        Self::SmallFiles,
        Self::BigFile,
        Self::OneByte,
        Self::RenameDir,
    ];

    fn apply(self, root: &Path, template: &Path, big: &Path) -> anyhow::Result<()> {
        match self {
            Self::SmallFiles => copy_tree(template, root),
            Self::BigFile => {
                let status = Command::new("cp")
                    .arg("-a")
                    .arg(big)
                    .arg(root.join("big.bin"))
                    .status()?;
                if !status.success() {
                    bail!("copying the big file failed");
                }
                Ok(())
            }
            Self::OneByte => edit_one_byte(&root.join("big.bin"), 1_800_000_000),
            Self::RenameDir => Ok(std::fs::rename(root.join("d0"), root.join("d0-renamed"))?),
        }
    }
}

/// One system's two copies of the folder.
trait Pair {
    /// Brings the change made in the first copy to the second: seconds
    /// from the change until the second copy's shape is `want`.
    fn converge(&mut self, want: &Shape) -> anyhow::Result<f64>;
    /// Bytes moved so far.
    fn moved(&self) -> anyhow::Result<u64>;
    fn roots(&self) -> (&Path, &Path);
}

struct Cairn {
    laptop: Home,
    phone: Home,
    relays: Vec<String>,
    roots: (PathBuf, PathBuf),
    _servers: Vec<cairn_testkit::RelayProcess>,
}

impl Pair for Cairn {
    fn converge(&mut self, want: &Shape) -> anyhow::Result<f64> {
        let started = Instant::now();
        self.laptop.run(&["folder", "sync"])?;
        self.phone.run(&["folder", "sync"])?;
        arrived(&self.roots.1, want, started)
    }

    fn moved(&self) -> anyhow::Result<u64> {
        relay_bytes(&self.relays)
    }

    fn roots(&self) -> (&Path, &Path) {
        (&self.roots.0, &self.roots.1)
    }
}

struct SyncthingPair {
    a: Syncthing,
    /// Kept running (and stopped when dropped).
    _b: Syncthing,
    roots: (PathBuf, PathBuf),
}

impl Pair for SyncthingPair {
    fn converge(&mut self, want: &Shape) -> anyhow::Result<f64> {
        let started = Instant::now();
        self.a.scan()?;
        arrived(&self.roots.1, want, started)
    }

    fn moved(&self) -> anyhow::Result<u64> {
        // Their one connection, both ways, as the first instance counts
        // it (the second counts the same bytes).
        self.a.carried()
    }

    fn roots(&self) -> (&Path, &Path) {
        (&self.roots.0, &self.roots.1)
    }
}

fn cairn_pair(dir: &Path) -> anyhow::Result<Cairn> {
    let bin = sibling("cairn")?;
    let servers: Vec<_> = (0..3)
        .map(|i| servers::relay(dir, &format!("relay-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let relays: Vec<String> = servers
        .iter()
        .map(cairn_testkit::RelayProcess::url)
        .collect();
    let laptop = Home::new(&bin, dir.join("laptop"), &relays)?;
    let phone = Home::join(&bin, dir.join("phone"), &relays[0], &laptop)?;
    phone.run(&["config", "--replicas", "3"])?;
    let roots = (dir.join("laptop-folder"), dir.join("phone-folder"));
    laptop.run(&[
        "folder",
        "add",
        &cairn_testkit::arg(&roots.0),
        "--name",
        "bench",
    ])?;
    phone.run(&[
        "folder",
        "add",
        &cairn_testkit::arg(&roots.1),
        "--name",
        "bench",
    ])?;
    Ok(Cairn {
        laptop,
        phone,
        relays,
        roots,
        _servers: servers,
    })
}

fn syncthing_pair(dir: &Path) -> anyhow::Result<SyncthingPair> {
    let roots = (dir.join("a-folder"), dir.join("b-folder"));
    std::fs::create_dir_all(&roots.0)?;
    std::fs::create_dir_all(&roots.1)?;
    let a = Syncthing::start(&dir.join("a"))?;
    let b = Syncthing::start(&dir.join("b"))?;
    a.share(&roots.0, &b)?;
    b.share(&roots.1, &a)?;
    a.connected(&b)?;
    Ok(SyncthingPair { a, _b: b, roots })
}

/// Runs the four changes on `pair`: per change, seconds and MB moved.
fn run_changes(
    pair: &mut dyn Pair,
    template: &Path,
    big: &Path,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    for change in Change::ALL {
        let (first, second) = pair.roots();
        let (first, second) = (first.to_path_buf(), second.to_path_buf());
        change.apply(&first, template, big)?;
        let want = shape(&first)?;
        let before = pair.moved()?;
        let secs = pair.converge(&want)?;
        let moved = (pair.moved()? - before) as f64 / 1e6;
        same_trees(&first, &second)?;
        out.push((secs, moved));
    }
    Ok(out)
}

/// The figures of this section.
pub(crate) fn folders(plan: &Plan, work: &Path) -> anyhow::Result<Vec<Row>> {
    let dir = work.join("folders");
    std::fs::create_dir_all(&dir)?;
    let (count, renamed) = if plan.client_size < (1 << 30) {
        (2_000, 200)
    } else {
        (10_000, 1_000)
    };
    let template = dir.join("template");
    small_files(&template, count)?;
    let big = dir.join("big.bin");
    write_input(&big, plan.client_size)?;
    let mib = plan.client_size >> 20;
    let rounds = plan.pairs.min(3);
    let mut cairn: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut syncthing: Vec<Vec<(f64, f64)>> = Vec::new();
    for round in 0..rounds {
        let here = dir.join(format!("cairn-{round}"));
        cairn.push(run_changes(&mut cairn_pair(&here)?, &template, &big)?);
        std::fs::remove_dir_all(&here)?;
        let here = dir.join(format!("syncthing-{round}"));
        syncthing.push(run_changes(&mut syncthing_pair(&here)?, &template, &big)?);
        std::fs::remove_dir_all(&here)?;
    }
    std::fs::remove_dir_all(&dir)?;
    let names = [
        format!("{count} files of 1-64 KiB"),
        format!("one {mib} MiB file"),
        format!("a 1-byte edit of the {mib} MiB file"),
        format!("a directory of {renamed} files renamed"),
    ];
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let pick = |runs: &[Vec<(f64, f64)>], secs: bool| -> Vec<f64> {
            runs.iter()
                .map(|r| if secs { r[i].0 } else { r[i].1 })
                .collect()
        };
        rows.push(Row {
            figure: format!("folder: {name}, until the other device holds it"),
            unit: "s",
            reference: "Syncthing".into(),
            higher_is_better: false,
            cairn: pick(&cairn, true),
            against: pick(&syncthing, true),
        });
        rows.push(Row {
            figure: format!("folder: {name}, bytes moved (relays: 3 up, 1 down)"),
            unit: "MB",
            reference: "Syncthing".into(),
            higher_is_better: false,
            cairn: pick(&cairn, false),
            against: pick(&syncthing, false),
        });
    }
    Ok(rows)
}
