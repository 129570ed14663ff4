//! What went wrong at each relay in an operation that tried several: a
//! put sends one copy (or one chunk) to each relay, a get asks each in
//! turn, a sync lists every one. The same relay failing for the same
//! reason once per copy or chunk is one failure here, said once.

use std::fmt;

use serde::ser::{Serialize, SerializeSeq as _, Serializer};

use crate::relay_error::{NetFailure, RelayError};
use crate::text::relay_name;

/// One failure: at a relay, or of the operation as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    relay: Option<String>,
    what: String,
    unreachable: Option<NetFailure>,
    detail: Option<String>,
}

impl Failure {
    /// The relay at `url` failed a request with `err`.
    pub fn at(url: &str, err: &RelayError) -> Self {
        Self {
            relay: Some(url.to_owned()),
            what: err.to_string(),
            unreachable: err.net_failure(),
            detail: err.detail().map(str::to_owned),
        }
    }

    /// The relay at `url` could not be used, for a reason that is not a
    /// failed request (it is full, it does not hold the blob).
    pub fn note(url: &str, what: impl Into<String>) -> Self {
        Self {
            relay: Some(url.to_owned()),
            what: what.into(),
            unreachable: None,
            detail: None,
        }
    }

    /// A failure of no one relay ("not enough relays have room for it").
    pub fn general(what: impl Into<String>) -> Self {
        Self {
            relay: None,
            what: what.into(),
            unreachable: None,
            detail: None,
        }
    }

    /// The relay's URL, when one relay failed.
    pub fn relay(&self) -> Option<&str> {
        self.relay.as_deref()
    }

    /// What went wrong, without the relay's name (`unreachable
    /// (connection refused)`, `does not hold it`).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// How the relay could not be reached, when that is what happened.
    pub fn net_failure(&self) -> Option<NetFailure> {
        self.unreachable
    }

    /// The lower-level account of an unreachable relay (the HTTP
    /// library's error chain), for `--verbose`.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The failure as scripts read it: the relay's full URL, then what it
    /// did (`http://127.0.0.1:7070: unreachable (connection refused)`).
    pub fn for_scripts(&self) -> String {
        match &self.relay {
            Some(url) => format!("{url}: {}", self.what),
            None => self.what.clone(),
        }
    }

    /// Whether `other` says the same of the same relay (details aside:
    /// they name the request, which differs from copy to copy).
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.relay == other.relay && self.what == other.what
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.relay, self.unreachable) {
            (Some(url), Some(why)) => {
                write!(f, "relay {} is unreachable ({why})", relay_name(url))
            }
            (Some(url), None) => write!(f, "relay {}: {}", relay_name(url), self.what),
            (None, _) => f.write_str(&self.what),
        }
    }
}

/// The failures of one operation, each said once, in the order first
/// met. Shown for people as `relay A is unreachable (connection refused);
/// relay B: …`; serialized for scripts as a list of
/// [`Failure::for_scripts`] strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failures(Vec<Failure>);

impl Failures {
    /// No failures yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `failure`, unless the same relay already failed the same way.
    pub fn push(&mut self, failure: Failure) {
        if !self.0.iter().any(|known| known.same_as(&failure)) {
            self.0.push(failure);
        }
    }

    /// Adds that the relay at `url` failed a request with `err`.
    pub fn at(&mut self, url: &str, err: &RelayError) {
        self.push(Failure::at(url, err));
    }

    /// Adds every failure of `other` not already here.
    pub fn extend(&mut self, other: Self) {
        for failure in other.0 {
            self.push(failure);
        }
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many different failures there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The failures, in the order first met.
    pub fn iter(&self) -> std::slice::Iter<'_, Failure> {
        self.0.iter()
    }

    /// These failures, or `general` when there are none (an operation
    /// that failed without any relay failing: none could be asked).
    #[must_use]
    pub fn or_else(mut self, general: &str) -> Self {
        if self.0.is_empty() {
            self.0.push(Failure::general(general));
        }
        self
    }

    /// The lower-level account of each unreachable relay, one line each
    /// (`127.0.0.1:7070: error sending request for url (…): …`).
    pub fn details(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|failure| {
                let detail = failure.detail()?;
                Some(match failure.relay() {
                    Some(url) => format!("{}: {detail}", relay_name(url)),
                    None => detail.to_owned(),
                })
            })
            .collect()
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.for_scripts())
    }
}

impl Serialize for Failures {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for failure in &self.0 {
            seq.serialize_element(&failure.for_scripts())?;
        }
        seq.end()
    }
}

impl<'a> IntoIterator for &'a Failures {
    type Item = &'a Failure;
    type IntoIter = std::slice::Iter<'a, Failure>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &str) -> RelayError {
        RelayError::Unreachable {
            why: NetFailure::ConnectionRefused,
            detail: format!("error sending request for url (http://127.0.0.1:9{path})"),
        }
    }

    /// Issue "Messages a person reads": a relay that refuses every copy is
    /// named once, in words, with the HTTP library's account kept for
    /// `--verbose` only.
    #[test]
    fn a_relay_failing_every_copy_the_same_way_is_named_once() {
        let mut failures = Failures::new();
        failures.at("http://127.0.0.1:9", &refused("/v1/blobs/a"));
        failures.at("http://127.0.0.1:9", &refused("/v1/blobs/b"));
        failures.push(Failure::note("http://127.0.0.1:8", "does not hold it"));
        assert_eq!(
            failures.to_string(),
            "relay 127.0.0.1:9 is unreachable (connection refused); \
             relay 127.0.0.1:8: does not hold it"
        );
        assert_eq!(
            failures.details(),
            ["127.0.0.1:9: error sending request for url (http://127.0.0.1:9/v1/blobs/a)"]
        );
        assert_eq!(
            serde_json::to_value(&failures).unwrap(),
            serde_json::json!([
                "http://127.0.0.1:9: unreachable (connection refused)",
                "http://127.0.0.1:8: does not hold it"
            ])
        );
    }

    #[test]
    fn no_failure_says_why_nothing_was_asked() {
        let none = Failures::new().or_else("no relay in your set holds it");
        assert_eq!(none.to_string(), "no relay in your set holds it");
    }
}
