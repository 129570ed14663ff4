//! The client's record of how each relay behaved: successes, plain
//! unavailability, and misbehaviour by kind. Misbehaviour (wrong bytes, a
//! failed proof, a lost copy, an old head) is kept apart from being down:
//! any relay is sometimes unreachable, but one that lies is routed around.
//! Kept in `HOME/scores.json`; placement puts flagged relays last and
//! repair never copies onto them. How long a relay has gone unanswered is
//! kept too: a relay that vanished looks down, and only the length of its
//! silence tells a repair to give up on its copies.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use cairn_proto::VerifyingKey;

use crate::error::Result;
use crate::home::write_private;

/// How long a misbehaviour keeps a relay flagged.
pub use cairn_policy::repair::FLAG_SECS;

/// Ways a relay can misbehave (as opposed to being unavailable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misbehaviour {
    /// Served bytes that do not hash to the blob id, or a proof that does
    /// not lead to it.
    Corrupt,
    /// Does not have a copy it acknowledged.
    Missing,
    /// Served a head older than one it had been given.
    StaleHead,
    /// Its signed info document contradicts what it does: it refused a
    /// blob for want of room while claiming room for it.
    LyingInfo,
    /// Redirected a blob request to a relay the client may not be sent to:
    /// outside the user's set and its own signed peer list, or plain http
    /// off this machine.
    BadRedirect,
}

/// One relay's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayScore {
    /// The relay's URL when last seen.
    pub url: String,
    /// Requests that went right (audits passed, verified downloads).
    pub successes: u64,
    /// Requests it did not answer (down, timed out, refused).
    pub unavailable: u64,
    /// Misbehaviour, by kind.
    pub misbehaviour: BTreeMap<Misbehaviour, u64>,
    /// The latest misbehaviour: kind, when (Unix seconds), what.
    pub last_misbehaviour: Option<(Misbehaviour, u64, String)>,
    /// Milliseconds the latest successful request took.
    pub last_latency_ms: Option<u64>,
    /// When (Unix seconds) the current run of unanswered requests began:
    /// the first that failed since the relay last answered; `None` while
    /// it answers. Absent from the record of earlier releases, which
    /// reads as answering (its silence is counted from the next failure).
    #[serde(default)]
    pub unanswered_since: Option<u64>,
    /// The shortest time, in seconds, the relay was seen to keep a copy
    /// it had promised to keep longer (it was missing that soon after its
    /// file was stored; `cairn_policy::choice::kept_short`). The client
    /// counts on this retention rather than the disclosed one. Absent from
    /// the record of earlier releases: nothing was seen.
    #[serde(default)]
    pub kept_at_most: Option<u64>,
}

impl RelayScore {
    /// Whether the relay misbehaved within [`FLAG_SECS`] of `now`.
    pub fn flagged(&self, now: u64) -> bool {
        self.last_misbehaviour
            .as_ref()
            .is_some_and(|(_, at, _)| at.saturating_add(FLAG_SECS) > now)
    }

    /// How long, in seconds, the relay has gone unanswered at `now`: 0
    /// when it answered its latest request (or a clock moved back).
    pub fn unanswered_for(&self, now: u64) -> u64 {
        self.unanswered_since
            .map_or(0, |since| now.saturating_sub(since))
    }
}

/// Every relay's record, by key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Scores {
    #[serde(with = "by_key")]
    relays: BTreeMap<VerifyingKey, RelayScore>,
}

impl Scores {
    /// Loads the record from `path`; a missing or unreadable file starts a
    /// fresh one (scores are advice, never a reason to fail).
    pub(crate) fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Writes the record to `path` (atomically, owner-only).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_private(path, &bytes)
    }

    fn entry(&mut self, relay: &VerifyingKey, url: &str) -> &mut RelayScore {
        let score = self.relays.entry(*relay).or_default();
        url.clone_into(&mut score.url);
        score
    }

    /// Notes a success that took `latency_ms`; the relay answers, so any
    /// run of unanswered requests is over.
    pub(crate) fn success(&mut self, relay: &VerifyingKey, url: &str, latency_ms: u64) {
        let score = self.entry(relay, url);
        score.successes += 1;
        score.last_latency_ms = Some(latency_ms);
        score.unanswered_since = None;
    }

    /// Notes that the relay did not answer at `now`. Only the first
    /// failure of a run sets when it began: later ones must not restart
    /// the count, or a relay that is gone would never look gone for long.
    pub(crate) fn unavailable(&mut self, relay: &VerifyingKey, url: &str, now: u64) {
        let score = self.entry(relay, url);
        score.unavailable += 1;
        score.unanswered_since.get_or_insert(now);
    }

    /// Notes misbehaviour of `kind` at `now`.
    pub(crate) fn misbehaved(
        &mut self,
        relay: &VerifyingKey,
        url: &str,
        kind: Misbehaviour,
        now: u64,
        what: String,
    ) {
        let score = self.entry(relay, url);
        *score.misbehaviour.entry(kind).or_default() += 1;
        score.last_misbehaviour = Some((kind, now, what));
        // A relay that misbehaves answered: it is not silent (and its
        // copies move off it as flagged, not as unanswered).
        score.unanswered_since = None;
    }

    /// Notes at `now` that the relay lost a copy after keeping it at most
    /// `kept` seconds, within the retention it discloses: a missing copy,
    /// and from now the retention the client counts on.
    pub(crate) fn deleted_early(
        &mut self,
        relay: &VerifyingKey,
        url: &str,
        kept: u64,
        now: u64,
        what: String,
    ) {
        self.misbehaved(relay, url, Misbehaviour::Missing, now, what);
        let score = self.entry(relay, url);
        score.kept_at_most = Some(score.kept_at_most.map_or(kept, |k| k.min(kept)));
    }

    /// The retention to count on for `relay`, which discloses `disclosed`
    /// ([`cairn_policy::choice::believed_retention`]).
    pub fn believed_retention(&self, relay: &VerifyingKey, disclosed: u64) -> u64 {
        cairn_policy::choice::believed_retention(
            disclosed,
            self.get(relay).and_then(|s| s.kept_at_most),
        )
    }

    /// The record of `relay`, if any.
    pub fn get(&self, relay: &VerifyingKey) -> Option<&RelayScore> {
        self.relays.get(relay)
    }

    /// Whether `relay` is flagged at `now`.
    pub fn flagged(&self, relay: &VerifyingKey, now: u64) -> bool {
        self.get(relay).is_some_and(|s| s.flagged(now))
    }
}

/// Keys as their text form in JSON object keys.
mod by_key {
    use std::collections::BTreeMap;

    use cairn_proto::VerifyingKey;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::RelayScore;

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<VerifyingKey, RelayScore>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<VerifyingKey, RelayScore>, D::Error> {
        let text = BTreeMap::<String, RelayScore>::deserialize(d)?;
        text.into_iter()
            .map(|(k, v)| k.parse().map(|k| (k, v)).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misbehaviour_flags_for_a_while_and_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.json");
        let key = cairn_proto::SigningKey::from_seed(&[1; 32]).verifying_key();
        let mut scores = Scores::load(&path);
        scores.unavailable(&key, "http://a", 1000);
        assert!(!scores.flagged(&key, 1000), "being down is not lying");
        scores.misbehaved(&key, "http://a", Misbehaviour::Corrupt, 1000, "bad".into());
        assert!(scores.flagged(&key, 1000 + FLAG_SECS - 1));
        assert!(!scores.flagged(&key, 1000 + FLAG_SECS));
        scores.save(&path).unwrap();
        let again = Scores::load(&path);
        assert_eq!(again.get(&key), scores.get(&key));
        std::fs::write(&path, b"{broken").unwrap();
        assert!(Scores::load(&path).get(&key).is_none());
    }

    #[test]
    fn silence_is_counted_from_the_first_unanswered_request_until_an_answer() {
        let key = cairn_proto::SigningKey::from_seed(&[2; 32]).verifying_key();
        let mut scores = Scores::default();
        let silent_for = |s: &Scores, now| s.get(&key).map(|r| r.unanswered_for(now));
        scores.success(&key, "http://a", 5);
        assert_eq!(silent_for(&scores, 1000), Some(0));
        scores.unavailable(&key, "http://a", 1000);
        assert_eq!(
            silent_for(&scores, 1000),
            Some(0),
            "failing for the first time"
        );
        scores.unavailable(&key, "http://a", 5000);
        assert_eq!(
            silent_for(&scores, 9000),
            Some(8000),
            "a later failure keeps the start"
        );
        assert_eq!(
            silent_for(&scores, 10),
            Some(0),
            "a clock set back counts nothing"
        );
        scores.success(&key, "http://a", 5);
        assert_eq!(silent_for(&scores, 9000), Some(0));
        scores.unavailable(&key, "http://a", 9000);
        scores.misbehaved(&key, "http://a", Misbehaviour::Missing, 9500, "gone".into());
        assert_eq!(
            silent_for(&scores, 20_000),
            Some(0),
            "a relay that lies answered"
        );
    }

    #[test]
    fn a_record_from_before_silence_was_kept_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.json");
        let key = cairn_proto::SigningKey::from_seed(&[3; 32]).verifying_key();
        // scores.json as an earlier release wrote it: no
        // `unanswered_since`, no `kept_at_most`.
        let old = format!(
            r#"{{
  "relays": {{
    "{key}": {{
      "url": "http://a",
      "successes": 4,
      "unavailable": 2,
      "misbehaviour": {{ "missing": 1 }},
      "last_misbehaviour": ["missing", 1000, "http://a: copy missing"],
      "last_latency_ms": 12
    }}
  }}
}}"#
        );
        std::fs::write(&path, old).unwrap();
        let scores = Scores::load(&path);
        let score = scores.get(&key).unwrap();
        assert_eq!((score.successes, score.unavailable), (4, 2));
        assert_eq!(score.last_latency_ms, Some(12));
        assert!(scores.flagged(&key, 1000));
        assert_eq!(score.unanswered_since, None);
        assert_eq!(score.unanswered_for(1_000_000), 0);
        assert_eq!(score.kept_at_most, None);
        assert_eq!(scores.believed_retention(&key, 7_776_000), 7_776_000);
    }

    #[test]
    fn a_relay_caught_deleting_early_is_believed_to_keep_what_it_kept() {
        let key = cairn_proto::SigningKey::from_seed(&[4; 32]).verifying_key();
        let mut scores = Scores::default();
        scores.deleted_early(&key, "http://a", 5 * 86_400, 100, "lost".into());
        scores.deleted_early(&key, "http://a", 9 * 86_400, 200, "lost".into());
        let score = scores.get(&key).unwrap();
        assert_eq!(score.kept_at_most, Some(5 * 86_400), "the shortest seen");
        assert_eq!(score.misbehaviour[&Misbehaviour::Missing], 2);
        assert!(scores.flagged(&key, 200));
        assert_eq!(scores.believed_retention(&key, 365 * 86_400), 5 * 86_400);
    }
}
