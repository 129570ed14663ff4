//! The simulator against cases whose answer is known.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use cairn_sim::{Scenario, simulate};

fn scenario() -> Scenario {
    toml::from_str(
        r#"
        seed = 7
        days = 365
        [relays]
        count = 20
        capacity_gib = 1000
        retention_days = 30
        vanish_per_year = 0.0
        outages_per_year = 0.0
        outage_hours = 0.0
        [clients]
        count = 200
        set_size = 5
        files = 4
        file_mib = 1
        copies = 3
        online_every_hours = 24
        watch = true
        replace_unreachable = false
        "#,
    )
    .unwrap()
}

#[test]
fn one_seed_gives_one_result() {
    let mut s = scenario();
    s.relays.vanish_per_year = 0.5;
    s.relays.outages_per_year = 12.0;
    s.relays.outage_hours = 24.0;
    let a = simulate(&s);
    assert_eq!(a.csv(), simulate(&s).csv());
    s.seed += 1;
    assert_ne!(a.csv(), simulate(&s).csv(), "the seed changes nothing");
}

#[test]
fn with_relays_that_never_fail_a_watching_device_loses_nothing() {
    let report = simulate(&scenario());
    let last = report.last();
    assert_eq!(last.files, 800);
    assert_eq!(last.lost, 0);
    assert_eq!(last.repaired, 0);
    assert_eq!(report.days.len(), 365);
}

#[test]
fn staying_away_longer_than_retention_loses_every_file() {
    // Nothing renews a copy when the device does not keep watch; after 30
    // days unaccessed every relay deletes it.
    let mut s = scenario();
    s.clients.watch = false;
    let last = simulate(&s).last();
    assert_eq!(last.lost, last.files);
}

#[test]
fn copies_on_vanished_relays_are_replaced_only_when_unreachable_ones_are() {
    // A vanished relay does not answer, as a relay that is down does not:
    // a watching device (which does not replace unreachable copies) keeps
    // counting on it.
    let mut s = scenario();
    s.relays.vanish_per_year = 0.3;
    s.relays.count = 40;
    s.relays.retention_days = 10_000;
    let watching = simulate(&s).last();
    assert!(watching.relays_gone > 0);
    assert_eq!(watching.repaired, 0, "{watching:?}");
    s.clients.replace_unreachable = true;
    let replacing = simulate(&s).last();
    assert!(replacing.repaired > 0);
    assert!(
        replacing.lost * 4 < watching.lost.max(1),
        "replacing {replacing:?} against not {watching:?}"
    );
}

#[test]
fn a_bad_scenario_is_refused_with_its_reason() {
    let mut s = scenario();
    s.clients.set_size = 30;
    assert!(s.check().unwrap_err().to_string().contains("set_size"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "seed = 1\ndays = 1\nrelay = {}\n").unwrap();
    let err = Scenario::load(&path).unwrap_err().to_string();
    assert!(err.contains("not a valid scenario"), "{err}");
}
