//! `cairn demo`: a whole cairn network on this machine, in a temporary
//! directory, driven by the same `cairn` commands a person would type.
//!
//! Four relays run inside this process (three for the file, one spare to
//! repair onto), each on a free loopback port with its data in the temporary
//! directory. Two devices, a laptop and a phone, are two homes there; every
//! step runs this very binary as a child process with `--home`, and prints
//! the command first, so what the demo shows is exactly what the commands
//! do. Everything is removed on exit, Ctrl-C included.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the demo narrates to the terminal, between its commands' own output"
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use cairn_client::proto::{RelayRef, RelayUrl};
use cairn_relay::{RelayConfig, RelayHandle};

/// Passphrase of the demo's key files; a person types their own.
const PASSPHRASE: &str = "demo passphrase";

/// The relays' names, in start order; the last is the spare.
const NAMES: [&str; 4] = ["A", "B", "C", "D"];

/// What the demo stores.
const FILE_TEXT: &str = "cairn demo: this file was sealed on the laptop, stored on three relays, \
                         and opened on the phone.\n";

pub(crate) fn run(keep_running: bool) -> anyhow::Result<ExitCode> {
    let work = tempfile::Builder::new()
        .prefix("cairn-demo-")
        .tempdir()
        .context("cannot create the demo's temporary directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let exe = std::env::current_exe().context("cannot find the cairn binary to run")?;
    let demo = Demo {
        exe,
        work: work.path().to_path_buf(),
    };
    println!(
        "cairn demo: a network of relays and two devices, all in {}\n\
         Each step below is a command you could type; its output follows it.",
        work.path().display()
    );
    // Ctrl-C in the middle of the walk-through still removes everything
    // (the commands running then get the same signal from the terminal).
    let waiting = Arc::new(AtomicBool::new(false));
    {
        let (dir, waiting) = (work.path().to_path_buf(), Arc::clone(&waiting));
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() && !waiting.load(Ordering::SeqCst) {
                let _ = std::fs::remove_dir_all(&dir);
                eprintln!("\ninterrupted: removed {}", dir.display());
                std::process::exit(130);
            }
        });
    }
    let mut relays = runtime.block_on(start_relays(work.path()))?;
    let outcome = demo.story(&runtime, &mut relays);
    if outcome.is_ok() && keep_running {
        waiting.store(true, Ordering::SeqCst);
        println!(
            "\nThe network keeps running until you press Ctrl-C. Status pages:\n{}",
            relays
                .iter()
                .map(|(name, h)| format!("  relay {name}: {}/", h.url()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let _ = std::io::stdout().flush();
        runtime
            .block_on(tokio::signal::ctrl_c())
            .context("cannot wait for Ctrl-C")?;
        println!();
    }
    runtime.block_on(async {
        for (_, handle) in relays {
            handle.shutdown().await;
        }
    });
    drop(runtime);
    let path = work.path().to_path_buf();
    work.close()
        .with_context(|| format!("cannot remove {}", path.display()))?;
    outcome?;
    println!("Stopped the relays and removed {}.", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Starts the four relays, each the others' peer.
async fn start_relays(work: &Path) -> anyhow::Result<Vec<(&'static str, RelayHandle)>> {
    let mut relays = Vec::new();
    for name in NAMES {
        let mut config = RelayConfig::new(work.join(format!("relay-{name}")));
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let handle = cairn_relay::start(config)
            .await
            .with_context(|| format!("cannot start relay {name}"))?;
        relays.push((name, handle));
    }
    let refs: Vec<RelayRef> = relays
        .iter()
        .map(|(_, h)| {
            Ok(RelayRef {
                url: RelayUrl::new(h.url())?,
                key: h.key(),
            })
        })
        .collect::<Result<_, cairn_client::proto::DecodeError>>()
        .context("a relay's own address is not a valid relay URL")?;
    for (i, (_, handle)) in relays.iter().enumerate() {
        let others: Vec<_> = refs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| r.clone())
            .collect();
        handle.set_peers(&others);
    }
    for (name, handle) in &relays {
        println!(
            "relay {name}: {} (status page {}/)",
            handle.url(),
            handle.url()
        );
    }
    Ok(relays)
}

struct Demo {
    exe: PathBuf,
    work: PathBuf,
}

impl Demo {
    fn home(&self, device: &str) -> PathBuf {
        self.work.join(device)
    }

    /// `cairn ARGS` as `device`, with its output passed through; fails if
    /// the command does.
    fn cairn(&self, device: &str, args: &[&str]) -> anyhow::Result<()> {
        println!("\n{device}$ cairn {}", args.join(" "));
        let _ = std::io::stdout().flush();
        let status = self
            .command(device, args)
            .status()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        if !status.success() {
            bail!(
                "`cairn {}` on the {device} failed ({status})",
                args.join(" ")
            );
        }
        Ok(())
    }

    fn command(&self, device: &str, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .arg("--home")
            .arg(self.home(device))
            .args(args)
            .env("CAIRN_PASSPHRASE", PASSPHRASE)
            .env_remove("CAIRN_HOME")
            .env_remove("CAIRN_RECOVERY_PHRASE")
            .current_dir(&self.work);
        command
    }

    fn step(title: &str) {
        println!("\n== {title}");
    }

    fn story(
        &self,
        runtime: &tokio::runtime::Runtime,
        relays: &mut Vec<(&'static str, RelayHandle)>,
    ) -> anyhow::Result<()> {
        let url = |name: &str| -> anyhow::Result<String> {
            relays
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, h)| h.url())
                .with_context(|| format!("relay {name} is not running"))
        };
        let (a, b, c, d) = (url("A")?, url("B")?, url("C")?, url("D")?);
        let file = self.work.join("hello.txt");
        std::fs::write(&file, FILE_TEXT).context("cannot write the demo file")?;

        Self::step("The laptop creates an identity and chooses three relays");
        println!("(the passphrase comes from CAIRN_PASSPHRASE here; you would type yours)");
        self.cairn("laptop", &["init", "--name", "laptop"])?;
        for relay in [&a, &b, &c] {
            self.cairn("laptop", &["relay", "add", relay])?;
        }

        Self::step("It seals a file and stores it on all three");
        self.cairn("laptop", &["put", "hello.txt"])?;
        self.cairn("laptop", &["ls"])?;

        Self::step("The phone joins: it shows a code, the laptop approves it");
        let code = self.join_phone(&a)?;

        Self::step("The phone syncs and opens the laptop's file");
        self.cairn("phone", &["sync"])?;
        self.cairn("phone", &["get", "hello.txt", "-o", "on-the-phone.txt"])?;
        let got = std::fs::read_to_string(self.work.join("on-the-phone.txt"))
            .context("the phone's copy is missing")?;
        if got != FILE_TEXT {
            bail!("the phone's copy differs from the laptop's file");
        }
        println!("(identical to the laptop's file; pairing code was {code})");

        Self::step("Relay B fails");
        let at = relays
            .iter()
            .position(|(n, _)| *n == "B")
            .context("relay B is not running")?;
        let (_, stopped) = relays.remove(at);
        runtime.block_on(stopped.shutdown());
        println!("(relay B at {b} is stopped)");
        self.cairn("phone", &["get", "hello.txt", "-o", "after-b-failed.txt"])?;
        println!("(still readable: two copies are left)");

        Self::step("The laptop adds a spare relay and repairs: three copies again");
        self.cairn("laptop", &["relay", "add", &d])?;
        self.cairn("laptop", &["repair", "--replace-unreachable"])?;
        self.cairn("laptop", &["ls"])?;
        Ok(())
    }

    /// Runs `device join` on the phone and `device approve` on the laptop;
    /// returns the code.
    fn join_phone(&self, relay: &str) -> anyhow::Result<String> {
        let args = [
            "device", "join", "--relay", relay, "--name", "phone", "--json",
        ];
        println!("\nphone$ cairn {}", args.join(" "));
        let mut child = self
            .command("phone", &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        let stdout = child.stdout.take().context("no output from device join")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .context("device join ended without showing a code")?
            .context("cannot read device join's output")?;
        let shown: serde_json::Value =
            serde_json::from_str(&first).context("device join printed no code")?;
        let code = shown["code"]
            .as_str()
            .context("device join printed no code")?
            .to_owned();
        println!("(the phone shows the pairing code {code})");
        let approved = self.cairn("laptop", &["device", "approve", &code]);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().context("device join did not finish")?;
        approved?;
        if !status.success() {
            bail!("the phone could not join ({status})");
        }
        for line in rest {
            println!("{line}");
        }
        Ok(code)
    }
}
