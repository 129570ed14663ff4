//! A scenario file (TOML): the relays, the clients and how long to run.
//! Every field is required; unknown fields are refused, so a typo cannot
//! silently run a different scenario.

use std::path::Path;

use cairn_policy::repair::Unanswered;

/// The most relays a set may have: a device keeps its set and copies in
/// arrays of this size.
pub(crate) const MAX_SET: usize = 16;

/// The longest run: devices keep times as seconds in 32 bits.
const MAX_DAYS: u32 = 40_000;
use serde::Deserialize;

/// What to simulate.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seeds every random draw: one seed, one result.
    pub seed: u64,
    /// Simulated time, in days.
    pub days: u32,
    /// The relays.
    pub relays: Relays,
    /// The clients (one device each) and their files.
    pub clients: Clients,
    /// Relays that misbehave or fail together; none when left out.
    #[serde(default)]
    pub adversaries: Adversaries,
    /// Capacity transfers between relays; none when left out.
    #[serde(default)]
    pub federation: Federation,
}

/// Relays handing blobs on to peers when full (docs/PROTOCOL.md §7.8,
/// "Transfers"), judged by the reciprocity ledger. Modelled in bytes: a
/// transfer moves one device's files' worth of bytes from a relay to a
/// peer; the copy stays the origin's as far as durability goes (the
/// client reaches it through the origin's redirect, which goes with the
/// origin).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    /// Peers each relay lists, drawn at random; 0 turns transfers off.
    #[serde(default)]
    pub peers: usize,
    /// A relay above this share of its capacity (thousandths) transfers.
    #[serde(default = "high_water")]
    pub high_water_permille: u16,
    /// ... down to this share.
    #[serde(default = "low_water")]
    pub low_water_permille: u16,
    /// The share of relays that transfer out but take nothing in (they
    /// tell peers they have no room).
    #[serde(default)]
    pub free_riders: f64,
    /// How much more a relay stores for a peer than the peer stores for
    /// it before refusing the peer's transfers, in thousandths of the
    /// relay's capacity (`standing::Account::takes`); 1000 takes all
    /// there is room for.
    #[serde(default = "peer_credit")]
    pub peer_credit_permille: u16,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            peers: 0,
            high_water_permille: high_water(),
            low_water_permille: low_water(),
            free_riders: 0.0,
            peer_credit_permille: peer_credit(),
        }
    }
}

/// The relay's default (`federation.high_water_permille`).
fn high_water() -> u16 {
    900
}

/// The relay's default (`federation.peer_credit_permille`).
fn peer_credit() -> u16 {
    1000
}

/// The relay's default (`federation.low_water_permille`).
fn low_water() -> u16 {
    800
}

/// Relays that do worse than fail on their own. Each relay is drawn into
/// these after its own outages and fate, so adding them leaves the rest of
/// the scenario as it was.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Adversaries {
    /// The share of relays that acknowledge every copy and keep none (an
    /// audit finds the copy missing; the device flags the relay).
    #[serde(default)]
    pub droppers: f64,
    /// The share of relays that vanish together on `vanish_together_day`
    /// (one operator, one data centre), if they have not gone before.
    #[serde(default)]
    pub vanish_together: f64,
    /// The day they vanish.
    #[serde(default)]
    pub vanish_together_day: u32,
    /// The share of relays that keep only part of each copy and answer
    /// audits for what they kept (an audit asks for 16 random chunks of
    /// 1 KiB, drawn by the real `ChunkRequest::random`).
    #[serde(default)]
    pub audit_liars: f64,
    /// The share of each copy's chunks a liar keeps.
    #[serde(default = "liars_keep")]
    pub liars_keep: f64,
    /// The share of relays whose info document discloses a longer
    /// retention than they keep: they disclose
    /// `retention_liars_disclose_days` and delete what nobody accessed
    /// for `retention_liars_keep_days`.
    #[serde(default)]
    pub retention_liars: f64,
    /// The retention a retention liar discloses, in days.
    #[serde(default)]
    pub retention_liars_disclose_days: u32,
    /// The retention a retention liar keeps, in days.
    #[serde(default)]
    pub retention_liars_keep_days: u32,
}

impl Default for Adversaries {
    fn default() -> Self {
        Self {
            droppers: 0.0,
            vanish_together: 0.0,
            vanish_together_day: 0,
            audit_liars: 0.0,
            liars_keep: liars_keep(),
            retention_liars: 0.0,
            retention_liars_disclose_days: 0,
            retention_liars_keep_days: 0,
        }
    }
}

/// What an audit liar keeps unless the scenario says: nine chunks in ten.
fn liars_keep() -> f64 {
    0.9
}

/// The relays, all alike.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Relays {
    /// How many.
    pub count: usize,
    /// Each one's capacity, in GiB.
    pub capacity_gib: u64,
    /// The share of relays that are small instead, with
    /// `small_capacity_gib`; none by default.
    #[serde(default)]
    pub small_share: f64,
    /// A small relay's capacity, in GiB.
    #[serde(default)]
    pub small_capacity_gib: u64,
    /// The retention each discloses: a blob nobody accessed for longer is
    /// deleted.
    pub retention_days: u32,
    /// Added to the retention of each relay after the first: relay `i`
    /// keeps `retention_days + i * retention_step_days` days. Clients rank
    /// relays by retention first, so distinct retentions make placement
    /// independent of usage (the validation against real relays needs
    /// that). 0 by default.
    #[serde(default)]
    pub retention_step_days: u32,
    /// The chance that a relay disappears for good within a year.
    pub vanish_per_year: f64,
    /// Outages per relay per year (a relay that is down answers nothing,
    /// then comes back with what it held).
    pub outages_per_year: f64,
    /// The mean length of an outage, in hours.
    pub outage_hours: f64,
}

/// The clients, all alike.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// How many.
    pub count: usize,
    /// Relays in each client's set, drawn at random from all of them.
    pub set_size: usize,
    /// Files each client puts at its first session.
    pub files: usize,
    /// The size of each file, in MiB.
    pub file_mib: u64,
    /// Copies of each file the client wants (the client's `replicas`).
    pub copies: usize,
    /// The mean time between a device's sessions, in hours (sessions come
    /// at random, as a phone that is opened now and then).
    pub online_every_hours: f64,
    /// Devices per identity, all alike (1 unless set). They share the
    /// identity's set, its file table and, in this model, one record of
    /// each relay (a real device keeps its own), so together they act as
    /// one device whose sessions are all of theirs: `online_every_hours /
    /// devices` apart on average.
    #[serde(default = "one")]
    pub devices: usize,
    /// Whether a session runs the repair when it is due (`cairn sync
    /// --watch`); without it nothing renews a copy after the put.
    pub watch: bool,
    /// How long a relay may go unanswered before a repair replaces the
    /// copies it holds, in hours: `0` replaces at once (`cairn repair
    /// --replace-unreachable`), `inf` never.
    pub replace_unanswered_after_hours: f64,
    /// How long a relay of the set may go unanswered before the person
    /// swaps it for another (`cairn relay rm`, `cairn relay add`), in
    /// days; `inf` (the default) when nobody tends the set. A person who
    /// tends the set also swaps a relay seen losing a copy sooner than
    /// it promised (both are what `cairn status` names).
    #[serde(default = "never")]
    pub swap_relay_after_days: f64,
    /// The longest retention that ranks a relay higher, in days: the
    /// client's 90 (`choice::RANKED_RETENTION_SECS`) unless set; `inf`
    /// ranks any retention, as releases before the cap did.
    #[serde(default = "ranked_retention")]
    pub ranked_retention_days: f64,
    /// Chunks an audit asks for per file: the client's 16
    /// (`repair::AUDIT_CHUNKS`) unless set; at most 64, what a relay
    /// answers (`audit::MAX_AUDIT_CHUNKS`).
    #[serde(default = "audit_chunks")]
    pub audit_chunks: usize,
}

/// The client's audit size.
fn audit_chunks() -> usize {
    cairn_policy::repair::AUDIT_CHUNKS
}

/// The client's cap, in days.
fn ranked_retention() -> f64 {
    (cairn_policy::choice::RANKED_RETENTION_SECS / 86_400) as f64
}

fn one() -> usize {
    1
}

fn never() -> f64 {
    f64::INFINITY
}

impl Clients {
    /// [`Self::swap_relay_after_days`] in seconds, `None` for never.
    #[must_use]
    pub fn swap_after_secs(&self) -> Option<u64> {
        let days = self.swap_relay_after_days;
        // Checked to be 0 or more; whole seconds are plenty.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        days.is_finite().then_some((days * 86_400.0) as u64)
    }

    /// [`Self::ranked_retention_days`] in seconds (`u64::MAX` for `inf`).
    #[must_use]
    pub fn ranked_retention_secs(&self) -> u64 {
        let days = self.ranked_retention_days;
        // Checked to be 0 or more; whole seconds are plenty.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        if days.is_finite() {
            (days * 86_400.0) as u64
        } else {
            u64::MAX
        }
    }

    /// What a repair does with copies on relays that do not answer.
    #[must_use]
    pub fn unanswered(&self) -> Unanswered {
        let hours = self.replace_unanswered_after_hours;
        if hours.is_finite() {
            // Checked to be 0 or more; whole seconds are plenty.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Unanswered::ReplaceAfter((hours * 3600.0) as u64)
        } else {
            Unanswered::Keep
        }
    }
}

/// The TOML document in `path`.
///
/// # Errors
///
/// [`ScenarioError`] if it cannot be read or is not TOML.
pub fn read_table(path: &Path) -> Result<toml::Table, ScenarioError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: shown.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ScenarioError::Parse {
        path: shown,
        source,
    })
}

/// Why a scenario cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a scenario.
    #[error("{path} is not a valid scenario: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Scenario {
    /// Reads and checks the scenario in `path`.
    ///
    /// # Errors
    ///
    /// [`ScenarioError`] if it cannot be read, parsed or run.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        Self::from_table(read_table(path)?, path)
    }

    /// The scenario a parsed file (from `path`) describes, checked.
    ///
    /// # Errors
    ///
    /// [`ScenarioError`] if it is not a scenario or cannot be run.
    pub fn from_table(table: toml::Table, path: &Path) -> Result<Self, ScenarioError> {
        let scenario: Self = table.try_into().map_err(|source| ScenarioError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Checks the values a run needs.
    ///
    /// # Errors
    ///
    /// [`ScenarioError::Invalid`] naming the first value out of range.
    pub fn check(&self) -> Result<(), ScenarioError> {
        let invalid = |what: &str| Err(ScenarioError::Invalid(what.to_owned()));
        let (r, c) = (&self.relays, &self.clients);
        if r.count == 0 || c.set_size == 0 || c.set_size > r.count.min(MAX_SET) {
            return invalid(&format!(
                "clients.set_size must be between 1 and relays.count (and at most {MAX_SET})"
            ));
        }
        if r.count > u32::MAX as usize {
            return invalid("relays.count must fit in 32 bits");
        }
        if self.days > MAX_DAYS {
            return invalid(&format!(
                "days must be at most {MAX_DAYS} (times are kept in 32 bits)"
            ));
        }
        if c.copies == 0 {
            return invalid("clients.copies must be at least 1");
        }
        for (name, value) in [
            ("relays.vanish_per_year", r.vanish_per_year),
            ("relays.small_share", r.small_share),
            ("adversaries.droppers", self.adversaries.droppers),
            (
                "adversaries.vanish_together",
                self.adversaries.vanish_together,
            ),
            ("adversaries.audit_liars", self.adversaries.audit_liars),
            ("adversaries.liars_keep", self.adversaries.liars_keep),
            (
                "adversaries.retention_liars",
                self.adversaries.retention_liars,
            ),
            ("federation.free_riders", self.federation.free_riders),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return invalid(&format!("{name} is a share, between 0 and 1"));
            }
        }
        for (name, value) in [
            ("relays.outages_per_year", r.outages_per_year),
            ("relays.outage_hours", r.outage_hours),
        ] {
            if !value.is_finite() || value < 0.0 {
                return invalid(&format!("{name} must be 0 or more"));
            }
        }
        if c.replace_unanswered_after_hours.is_nan() || c.replace_unanswered_after_hours < 0.0 {
            return invalid("clients.replace_unanswered_after_hours must be 0 or more (or inf)");
        }
        if c.ranked_retention_days.is_nan() || c.ranked_retention_days < 0.0 {
            return invalid("clients.ranked_retention_days must be 0 or more (or inf)");
        }
        if c.swap_relay_after_days.is_nan() || c.swap_relay_after_days < 0.0 {
            return invalid("clients.swap_relay_after_days must be 0 or more (or inf)");
        }
        if !c.online_every_hours.is_finite() || c.online_every_hours <= 0.0 {
            return invalid("clients.online_every_hours must be above 0");
        }
        if c.audit_chunks == 0 || c.audit_chunks > cairn_proto::audit::MAX_AUDIT_CHUNKS {
            return invalid(&format!(
                "clients.audit_chunks must be between 1 and {}",
                cairn_proto::audit::MAX_AUDIT_CHUNKS
            ));
        }
        if c.devices == 0 {
            return invalid("clients.devices must be at least 1");
        }
        let a = &self.adversaries;
        if a.retention_liars > 0.0 && a.retention_liars_keep_days >= a.retention_liars_disclose_days
        {
            return invalid(
                "a retention liar keeps fewer days than it discloses: \
                 adversaries.retention_liars_keep_days must be below \
                 retention_liars_disclose_days",
            );
        }
        let f = &self.federation;
        if f.peers >= r.count && f.peers > 0 {
            return invalid("federation.peers must be fewer than relays.count");
        }
        if f.low_water_permille > f.high_water_permille || f.high_water_permille > 1000 {
            return invalid(
                "federation water marks: low_water_permille <= high_water_permille <= 1000",
            );
        }
        if r.retention_days == 0 {
            return invalid("relays.retention_days must be at least 1");
        }
        Ok(())
    }
}
