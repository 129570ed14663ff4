//! Runs wrk and reads its report.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct WrkRun {
    pub(crate) requests_per_sec: f64,
    /// Bytes a second, body and headers.
    pub(crate) bytes_per_sec: f64,
    pub(crate) p99: Duration,
}

/// `wrk -t2 -cCONNS -dSECS --latency URL`.
pub(crate) fn run(url: &str, conns: usize, secs: u64) -> anyhow::Result<WrkRun> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// A wrk quantity with its unit (`1.23MB`, `512.00KB`, `850`) in bytes.
fn bytes(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit {
        "" | "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * scale)
}

/// A wrk latency (`812.00us`, `1.23ms`, `2.00s`).
fn latency(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Reads requests/s, transfer/s and the 99th percentile from wrk's report.
/// A run with socket errors or non-2xx answers is refused: its figures
/// would not be of the server serving.
pub(crate) fn parse(report: &str) -> anyhow::Result<WrkRun> {
    let field = |prefix: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
    };
    if let Some(errors) = field("Non-2xx or 3xx responses:") {
        bail!("wrk saw {errors} error answers:\n{report}");
    }
    if let Some(errors) = field("Socket errors:") {
        bail!("wrk saw socket errors ({errors}):\n{report}");
    }
    let requests_per_sec = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's report:\n{report}"))?;
    let bytes_per_sec = field("Transfer/sec:")
        .and_then(bytes)
        .with_context(|| format!("no Transfer/sec in wrk's report:\n{report}"))?;
    let p99 = field("99%")
        .and_then(latency)
        .with_context(|| format!("no 99th percentile in wrk's report:\n{report}"))?;
    Ok(WrkRun {
        requests_per_sec,
        bytes_per_sec,
        p99,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 2s test @ http://127.0.0.1:17071/small
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  30.00ms   90.00%
    Req/Sec    10.50k     1.00k   12.00k    70.00%
  Latency Distribution
     50%    2.90ms
     75%    3.50ms
     90%    4.20ms
     99%    7.85ms
  42000 requests in 2.00s, 52.10MB read
Requests/sec:  20999.50
Transfer/sec:     26.05MB
";

    #[test]
    fn reads_a_report() {
        let run = parse(REPORT).unwrap();
        assert_eq!(run.requests_per_sec, 20999.5);
        assert_eq!(run.bytes_per_sec, 26.05 * 1024.0 * 1024.0);
        assert_eq!(run.p99, Duration::from_micros(7850));
    }

    #[test]
    fn refuses_runs_with_errors() {
        let bad = REPORT.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 12\nRequests/sec",
        );
        assert!(parse(&bad).is_err());
        let bad = REPORT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse(&bad).is_err());
        assert!(parse("garbage").is_err());
    }
}

/// Whether h2load (Debian `nghttp2-client`) is on the path.
pub(crate) fn h2load_installed() -> bool {
    Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `h2load -n REQUESTS -c 1 -m STREAMS URL`: requests a second over one
/// HTTP/2 connection, refusing a run in which any request failed.
pub(crate) fn h2load(url: &str, requests: u64, streams: usize) -> anyhow::Result<f64> {
    let out = Command::new("h2load")
        .args([
            "-n",
            &requests.to_string(),
            "-c",
            "1",
            "-m",
            &streams.to_string(),
            url,
        ])
        .output()
        .context("running h2load (apt-get install -y nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("h2load failed: {text}");
    }
    parse_h2load(&text)
}

/// The rate from h2load's report, if every request succeeded.
fn parse_h2load(text: &str) -> anyhow::Result<f64> {
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .context("no requests line in h2load's report")?;
    if !requests.contains(" 0 failed") || !requests.contains(" 0 errored") {
        bail!("h2load saw failed requests: {requests}");
    }
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("finished in ")?;
            let rate = rest.split(", ").nth(1)?.strip_suffix(" req/s")?;
            rate.parse::<f64>().ok()
        })
        .context("no rate in h2load's report")
}

#[cfg(test)]
mod h2load_tests {
    use super::parse_h2load;

    #[test]
    fn reads_the_rate_and_refuses_failures() {
        let ok = "finished in 1.23s, 8130.08 req/s, 1.05MB/s\n\
                  requests: 10000 total, 10000 started, 10000 done, 10000 succeeded, 0 failed, 0 errored, 0 timeout\n";
        assert!((parse_h2load(ok).unwrap() - 8130.08).abs() < 1e-9);
        let failed = ok.replace(" 0 failed", " 3 failed");
        assert!(parse_h2load(&failed).is_err());
    }
}
