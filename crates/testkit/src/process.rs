//! A relay running as a separate process, for tests that kill it.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `cairn-relay serve` child process listening on a loopback port.
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    addr: SocketAddr,
}

impl RelayProcess {
    /// Starts `bin serve --data DATA --listen 127.0.0.1:0 ARGS...` and waits
    /// (up to 30 s) for it to log the address it listens on. Its log is
    /// forwarded to this process's stderr, prefixed, so a failing test shows
    /// what the relay said.
    ///
    /// # Panics
    ///
    /// If the relay cannot be started or does not come up: a test failure.
    pub fn spawn(bin: &Path, data: &Path, args: &[&str]) -> Self {
        Self::spawn_at(bin, data, "127.0.0.1:0", args)
    }

    /// [`RelayProcess::spawn`] listening on `listen` (for relays that must
    /// know each other's addresses before they start).
    ///
    /// # Panics
    ///
    /// As [`RelayProcess::spawn`].
    pub fn spawn_at(bin: &Path, data: &Path, listen: &str, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", listen])
            .args(args)
            .env("CAIRN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .filter(|_| line.contains("relay listening"))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    let _ = tx.send(addr);
                }
                // Test output captures stderr, so a failing test shows it.
                #[allow(clippy::print_stderr, reason = "forwarding the child's log")]
                {
                    eprintln!("[relay] {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("relay did not report a listen address within 30 s"));
        Self { child, addr }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up, as in a power cut or OOM kill.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("waiting for the relay to exit")
    }

    /// Resident set size of the relay process in bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid())
    }
}

impl Drop for RelayProcess {
    /// A test that fails before stopping its relay must not leave it
    /// running: kill it (a no-op once it has exited).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of process `pid` in bytes (Linux `/proc`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Runs `bin ARGS...` to completion and returns its status and stdout.
pub fn run(bin: &Path, args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A path as a `&str` for argument lists.
pub fn arg(path: &Path) -> String {
    PathBuf::from(path).display().to_string()
}
