//! Words for people: counts that agree with their noun, and relays named
//! the way a person reads them. Every message this crate and the `cairn`
//! command write goes through these, so that "1 copies" cannot creep back
//! in one format string at a time.

use std::fmt;

/// `n` and the noun that agrees with it: `count(1, "copy", "copies")`
/// shows `1 copy`, `count(3, "copy", "copies")` shows `3 copies`.
///
/// Both forms are given, not derived: English plurals are irregular
/// ("copy", "copies"), and a rule would get some of ours wrong.
pub fn count<'a>(n: impl Into<u64>, one: &'a str, many: &'a str) -> Count<'a> {
    Count {
        n: n.into(),
        one,
        many,
    }
}

/// A count with its noun, shown by [`count`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count<'a> {
    n: u64,
    one: &'a str,
    many: &'a str,
}

impl fmt::Display for Count<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.n == 1 { self.one } else { self.many };
        write!(f, "{} {noun}", self.n)
    }
}

/// A relay as a person names it: its URL without the scheme and a
/// trailing slash (`127.0.0.1:7070`, `relay.example/cairn`). The full URL
/// stays in `--json` output and wherever it is to be typed back.
pub fn relay_name(url: &str) -> &str {
    let bare = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    bare.strip_suffix('/').unwrap_or(bare)
}

/// A span of time in its largest whole unit: `1 second`, `5 hours`,
/// `4 days`.
pub fn lasting(secs: u64) -> String {
    let (n, one, many) = match secs {
        s if s < 60 => (s, "second", "seconds"),
        s if s < 3600 => (s / 60, "minute", "minutes"),
        s if s < 86_400 => (s / 3600, "hour", "hours"),
        s => (s / 86_400, "day", "days"),
    };
    count(n, one, many).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(0u64, "copy", "copies").to_string(), "0 copies");
        assert_eq!(count(1u64, "copy", "copies").to_string(), "1 copy");
        assert_eq!(count(2u32, "file", "files").to_string(), "2 files");
    }

    #[test]
    fn relays_are_named_without_their_scheme() {
        assert_eq!(relay_name("http://127.0.0.1:40325"), "127.0.0.1:40325");
        assert_eq!(relay_name("https://relay.example/"), "relay.example");
        assert_eq!(
            relay_name("https://relay.example/cairn"),
            "relay.example/cairn"
        );
        assert_eq!(relay_name("relay.example"), "relay.example");
    }

    #[test]
    fn a_silence_is_said_in_its_largest_whole_unit() {
        assert_eq!(lasting(1), "1 second");
        assert_eq!(lasting(59), "59 seconds");
        assert_eq!(lasting(3599), "59 minutes");
        assert_eq!(lasting(7200), "2 hours");
        assert_eq!(lasting(4 * 86_400 + 3600), "4 days");
    }
}
