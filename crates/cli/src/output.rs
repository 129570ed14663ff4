//! Rendering results: text for people, one JSON document for scripts.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "this module is the output"
)]

use std::io::Write as _;

use serde::Serialize;

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

/// Reports a failure: `{"error": …}` on standard output with --json,
/// `cairn: …` on standard error otherwise.
pub(crate) fn report_error(err: &anyhow::Error, json: bool) {
    if json {
        out_line(&serde_json::json!({ "error": format!("{err:#}") }).to_string());
    } else {
        eprintln!("cairn: {err:#}");
    }
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

/// Seconds for people: `30 days`.
pub(crate) fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3600 => format!("{:.1} hours", s as f64 / 3600.0),
        s => format!("{s} s"),
    }
}
