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
fn repair_replaces_copies_on_vanished_relays() {
    let mut s = scenario();
    s.relays.vanish_per_year = 0.3;
    s.relays.count = 40;
    let watching = simulate(&s).last();
    assert!(watching.relays_gone > 0);
    assert!(watching.repaired > 0);
    // Copies are lost only when a set runs out of relays; with 5 of 40 and
    // 3 copies that is rare against the loss without repair.
    let unrepaired = {
        let mut s = s.clone();
        s.clients.watch = false;
        s.relays.retention_days = 10_000;
        simulate(&s).last()
    };
    assert!(
        watching.lost * 4 < unrepaired.lost.max(1),
        "repairs {watching:?} against none {unrepaired:?}"
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
