//! Counters and histograms, rendered as Prometheus text at `/metrics`.
//!
//! Labels are routes and status codes only, never keys, blob ids or
//! addresses: metrics must not become analytics about users.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::rates::{Counters, RateHistory};

/// Upper bounds of latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

/// Every metric the relay exports.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: RwLock<BTreeMap<(&'static str, u16), AtomicU64>>,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) head_bytes_sent: AtomicU64,
    pub(crate) gc_runs: AtomicU64,
    pub(crate) audit_proofs: AtomicU64,
    pub(crate) gc_deleted_blobs: AtomicU64,
    pub(crate) gc_deleted_bytes: AtomicU64,
    pub(crate) gc_deleted_heads: AtomicU64,
    /// When the last GC pass finished (Unix seconds; 0 before the first),
    /// and the blobs it deleted: the status page's "last expiry pass".
    pub(crate) gc_last_at: AtomicU64,
    pub(crate) gc_last_deleted_blobs: AtomicU64,
    pub(crate) upload_latency: Histogram,
    pub(crate) download_latency: Histogram,
    /// The last hour of [`Metrics::traffic`], for the status page.
    pub(crate) history: RateHistory,
}

/// Gauges read from the store when rendering.
pub(crate) struct Gauges {
    pub(crate) blobs: u64,
    pub(crate) bytes: u64,
    pub(crate) heads: u64,
    pub(crate) capacity: u64,
    pub(crate) free: u64,
    pub(crate) uploads_in_flight: u64,
}

impl Metrics {
    pub(crate) fn count_request(&self, route: &'static str, status: u16) {
        if let Ok(map) = self.requests.read()
            && let Some(counter) = map.get(&(route, status))
        {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut map) = self.requests.write() {
            map.entry((route, status))
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests answered since start, all routes and statuses.
    /// The counters the status page charts.
    pub(crate) fn traffic(&self) -> Counters {
        Counters {
            requests: self.requests_total(),
            bytes_in: self.bytes_received.load(Ordering::Relaxed),
            bytes_out: self.bytes_sent.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn requests_total(&self) -> u64 {
        self.requests.read().map_or(0, |map| {
            map.values().map(|c| c.load(Ordering::Relaxed)).sum()
        })
    }

    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP cairn_http_requests_total HTTP requests answered, by route and status.\n\
             # TYPE cairn_http_requests_total counter\n",
        );
        if let Ok(map) = self.requests.read() {
            for ((route, status), count) in map.iter() {
                let _ = writeln!(
                    out,
                    "cairn_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
        }
        let counters = [
            (
                "cairn_bytes_received_total",
                "Blob bytes received in uploads.",
                &self.bytes_received,
            ),
            (
                "cairn_bytes_sent_total",
                "Blob bytes sent in downloads.",
                &self.bytes_sent,
            ),
            (
                "cairn_head_bytes_sent_total",
                "Bytes of head records and head listings sent.",
                &self.head_bytes_sent,
            ),
            (
                "cairn_audit_proofs_total",
                "Storage-audit proofs served.",
                &self.audit_proofs,
            ),
            (
                "cairn_gc_runs_total",
                "Garbage-collection passes.",
                &self.gc_runs,
            ),
            (
                "cairn_gc_deleted_blobs_total",
                "Blobs deleted by GC after their retention.",
                &self.gc_deleted_blobs,
            ),
            (
                "cairn_gc_deleted_bytes_total",
                "Bytes deleted by GC.",
                &self.gc_deleted_bytes,
            ),
            (
                "cairn_gc_deleted_heads_total",
                "Mailbox heads deleted by GC after their retention.",
                &self.gc_deleted_heads,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            ("cairn_blobs_stored", "Blobs stored.", gauges.blobs),
            ("cairn_bytes_stored", "Bytes of blobs stored.", gauges.bytes),
            ("cairn_heads_stored", "Mailbox heads stored.", gauges.heads),
            (
                "cairn_capacity_bytes",
                "Bytes given to blob storage.",
                gauges.capacity,
            ),
            (
                "cairn_free_bytes",
                "Bytes available for new blobs.",
                gauges.free,
            ),
            (
                "cairn_uploads_in_flight",
                "Uploads in progress.",
                gauges.uploads_in_flight,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        self.upload_latency.render(
            &mut out,
            "cairn_upload_duration_seconds",
            "Time from upload start to durable acknowledgement.",
        );
        self.download_latency.render(
            &mut out,
            "cairn_download_duration_seconds",
            "Time to open a blob and start sending it.",
        );
        out
    }
}
