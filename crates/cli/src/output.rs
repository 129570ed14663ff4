//! Rendering results: text for people, one JSON document for scripts.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "this module is the output"
)]

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_client::Offline;
pub(crate) use cairn_client::text::count;
use serde::Serialize;

/// `--verbose`: whether messages are followed by the detail behind them.
/// Set once, by `main`, before any command runs; read where a message is
/// printed, so that no command has to pass it along.
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Records `--verbose` (called once, first thing).
pub(crate) fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Writes `text` and a newline to standard output. A reader that went away
/// (`cairn ls --json | head -1`) ends the program quietly, as a closed pipe
/// should, where `println!` would panic; any other failure to write says
/// so and exits with 2 (not done).
pub(crate) fn out_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cairn: cannot write the output: {err}");
        std::process::exit(2);
    }
}

/// Prints `value` as JSON, or `text()` for people.
pub(crate) fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        out_line(&serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into()));
    } else {
        let text = text();
        if !text.is_empty() {
            out_line(&text);
        }
    }
}

/// Prints `value` as one compact JSON line, or `text()`: for a result a
/// command shows before it goes on (scripts read it line by line).
pub(crate) fn emit_line<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        out_line(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
    } else {
        out_line(&text());
    }
}

/// A note for people on standard error (never mixed into JSON output).
pub(crate) fn note(json: bool, text: &str) {
    if !json {
        eprintln!("{text}");
    }
}

/// A warning on standard error, with or without --json: what it says
/// (data that may be out of date) matters to scripts too, and standard
/// error is never mixed into the JSON. With `--verbose`, `details` follow
/// it, one a line.
pub(crate) fn warn(text: &str, details: &[String]) {
    eprintln!("warning: {text}");
    print_details(details);
}

/// A failure a command goes on after (it retries, or moves to the next
/// thing), noted for people, with the detail behind it under `--verbose`.
pub(crate) fn note_failure(json: bool, text: &str, err: &cairn_client::Error) {
    note(json, text);
    if !json {
        print_details(&err.details());
    }
}

/// With `--verbose`, the detail behind a message, on standard error.
pub(crate) fn print_details(details: &[String]) {
    if verbose() {
        for detail in details {
            eprintln!("  detail: {detail}");
        }
    }
}

/// The one-line warning for an answer built from this device's own state
/// because no relay answered: why, and how old `what` is.
pub(crate) fn warn_offline(what: &str, offline: &Offline) {
    let age = match offline.synced_at {
        Some(at) => format!(
            "showing {what} as of the last sync, {}",
            ago(unix_now().saturating_sub(at))
        ),
        None => format!("showing {what} as this device has it (it never synced)"),
    };
    warn(
        &format!(
            "no relay could be reached ({}); {age}",
            why_offline(offline)
        ),
        &offline.why.details(),
    );
}

/// Why no relay answered, said once: the cause alone when every relay
/// failed the same way (`connection refused`), each relay's otherwise.
fn why_offline(offline: &Offline) -> String {
    let mut causes = offline.why.iter().map(cairn_client::Failure::net_failure);
    match causes.next() {
        Some(Some(first)) if causes.all(|cause| cause == Some(first)) => first.to_string(),
        _ => offline.why.to_string(),
    }
}

/// Reports a failure: `{"error": …}` on standard output with --json,
/// `cairn: …` on standard error otherwise. With `--verbose`, the detail
/// behind it follows (in JSON, as `"details"`).
pub(crate) fn report_error(err: &anyhow::Error, json: bool) {
    let text = chain_text(err);
    let details = details(err);
    if json {
        let mut report = serde_json::json!({ "error": text });
        if verbose() && !details.is_empty() {
            report["details"] = serde_json::json!(details);
        }
        out_line(&report.to_string());
    } else {
        eprintln!("cairn: {text}");
        print_details(&details);
    }
}

/// An error and its causes, joined by `: `. Each cause says its own words
/// only (cairn-client's errors do not return from `source()` what their
/// message already says), so nothing is said twice.
fn chain_text(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The detail behind a client error anywhere in `err`'s chain.
fn details(err: &anyhow::Error) -> Vec<String> {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<cairn_client::Error>())
        .flat_map(cairn_client::Error::details)
        .collect()
}

/// Bytes for people: `1.5 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds for people: `30 days`.
pub(crate) fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => count(s / 86_400, "day", "days").to_string(),
        s if s >= 3600 => format!("{:.1} hours", s as f64 / 3600.0),
        s => format!("{s} s"),
    }
}

/// How long ago `secs` seconds were, for people, in the largest whole
/// unit: `just now`, `1 minute ago`, `3 hours ago`.
pub(crate) fn ago(secs: u64) -> String {
    if secs < 5 {
        return "just now".into();
    }
    format!("{} ago", cairn_client::text::lasting(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue "Messages a person reads": a client error with a path says
    /// the OS's words once (it said "(os error 2)" twice).
    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let cause = io.to_string();
        let err = anyhow::Error::new(cairn_client::Error::Io {
            path: "/nonexistent".into(),
            error: io,
        })
        .context("cannot store the file");
        assert_eq!(
            chain_text(&err),
            format!("cannot store the file: /nonexistent: {cause}")
        );
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(chain_text(&err), "outer: middle: inner");
    }

    #[test]
    fn ages_are_said_in_whole_units() {
        assert_eq!(ago(2), "just now");
        assert_eq!(ago(59), "59 seconds ago");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(185), "3 minutes ago");
        assert_eq!(ago(3600), "1 hour ago");
        assert_eq!(ago(2 * 86_400 + 5), "2 days ago");
        assert_eq!(duration(86_400), "1 day");
    }
}
