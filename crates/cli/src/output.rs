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

/// A warning on standard error, with or without --json: what it says
/// (data that may be out of date) matters to scripts too, and standard
/// error is never mixed into the JSON.
pub(crate) fn warn(text: &str) {
    eprintln!("warning: {text}");
}

/// Reports a failure: `{"error": …}` on standard output with --json,
/// `cairn: …` on standard error otherwise.
pub(crate) fn report_error(err: &anyhow::Error, json: bool) {
    let text = chain_text(err);
    if json {
        out_line(&serde_json::json!({ "error": text }).to_string());
    } else {
        eprintln!("cairn: {text}");
    }
}

/// An error and its causes, joined by `: `, each said once: many errors
/// already end with their cause's message (`/x: No such file or
/// directory`), which a plain chain would then repeat.
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
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

/// A count for people, with its noun agreeing: `1 copy`, `3 copies`.
pub(crate) fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    match n.into() {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
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
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3600 => format!("{:.1} hours", s as f64 / 3600.0),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose message ends with its cause's, as thiserror's
    /// `"{path}: {source}"` makes.
    #[derive(Debug)]
    struct AtPath(std::io::Error);

    impl std::fmt::Display for AtPath {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "/nonexistent: {}", self.0)
        }
    }

    impl std::error::Error for AtPath {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let cause = io.to_string();
        let err = anyhow::Error::new(AtPath(io)).context("cannot store the file");
        assert_eq!(
            chain_text(&err),
            format!("cannot store the file: /nonexistent: {cause}")
        );
        // Causes that add something are all kept.
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(chain_text(&err), "outer: middle: inner");
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(0u64, "copy", "copies"), "0 copies");
        assert_eq!(count(1u64, "copy", "copies"), "1 copy");
        assert_eq!(count(2u64, "file", "files"), "2 files");
    }
}
