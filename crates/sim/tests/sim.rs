//! The simulator against cases whose answer is known.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use cairn_sim::sweep::Plan;
use cairn_sim::{Engine, Scenario, simulate, simulate_with};

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
        replace_unanswered_after_hours = inf
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
    s.clients.replace_unanswered_after_hours = 0.0;
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
    let bad = [
        |s: &mut Scenario| s.clients.audit_chunks = 65,
        |s: &mut Scenario| s.clients.devices = 0,
        |s: &mut Scenario| s.adversaries.audit_liars = 1.5,
        |s: &mut Scenario| s.federation.free_riders = -0.1,
        |s: &mut Scenario| {
            s.adversaries.retention_liars = 0.1;
            s.adversaries.retention_liars_keep_days = 30;
            s.adversaries.retention_liars_disclose_days = 7;
        },
    ];
    for (i, spoil) in bad.into_iter().enumerate() {
        let mut s = scenario();
        spoil(&mut s);
        assert!(s.check().is_err(), "bad scenario {i} passed");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "seed = 1\ndays = 1\nrelay = {}\n").unwrap();
    let err = Scenario::load(&path).unwrap_err().to_string();
    assert!(err.contains("not a valid scenario"), "{err}");
}

#[test]
fn the_number_of_threads_changes_nothing() {
    let mut s = scenario();
    s.relays.vanish_per_year = 0.3;
    s.relays.outages_per_year = 12.0;
    s.relays.outage_hours = 48.0;
    s.clients.replace_unanswered_after_hours = 24.0;
    s.clients.swap_relay_after_days = 7.0;
    s.adversaries.droppers = 0.1;
    s.relays.small_share = 0.5;
    s.relays.small_capacity_gib = 1;
    s.clients.file_mib = 10;
    s.federation.peers = 4;
    s.federation.free_riders = 0.2;
    let one = simulate(&s);
    assert!(one.last().transferred > 0, "{:?}", one.last());
    for threads in [2, 3, 7] {
        // Every hour on threads, however few its sessions.
        let engine = Engine {
            threads,
            parallel_from: 0,
        };
        assert_eq!(simulate_with(&s, engine), one, "{threads} threads");
    }
}

#[test]
fn a_relay_unanswered_for_the_wait_loses_its_copies_and_an_outage_does_not() {
    // Outages of about a day, and relays that vanish: waiting three days
    // moves the copies of vanished relays, and few others.
    let mut s = scenario();
    s.relays.vanish_per_year = 0.3;
    s.relays.count = 40;
    s.relays.retention_days = 10_000;
    s.relays.outages_per_year = 12.0;
    s.relays.outage_hours = 24.0;
    let mut replaced = |hours: f64| {
        s.clients.replace_unanswered_after_hours = hours;
        simulate(&s).last()
    };
    let (at_once, waiting, never) = (replaced(0.0), replaced(72.0), replaced(f64::INFINITY));
    assert_eq!(never.repaired, 0);
    assert!(
        waiting.lost * 4 < never.lost,
        "{waiting:?} against {never:?}"
    );
    assert!(
        waiting.repaired * 3 < at_once.repaired,
        "waiting {waiting:?} against at once {at_once:?}"
    );
}

#[test]
fn a_tended_set_outlives_its_relays() {
    // Relays vanish fast enough that whole sets of five go within the
    // year; a person who swaps a relay silent for a week keeps the files.
    let mut s = scenario();
    s.relays.vanish_per_year = 0.8;
    s.relays.retention_days = 10_000;
    s.clients.replace_unanswered_after_hours = 72.0;
    let untended = simulate(&s).last();
    s.clients.swap_relay_after_days = 7.0;
    let tended = simulate(&s).last();
    assert!(untended.lost > 0, "{untended:?}");
    assert!(
        tended.lost * 10 < untended.lost,
        "{tended:?} against {untended:?}"
    );
}

#[test]
fn droppers_are_caught_by_audits_and_routed_around() {
    let mut s = scenario();
    s.clients.replace_unanswered_after_hours = 72.0;
    s.adversaries.droppers = 1.0;
    let all = simulate(&s).last();
    assert_eq!(
        all.lost, all.files,
        "nothing survives relays that keep nothing"
    );
    s.adversaries.droppers = 0.3;
    let some = simulate(&s).last();
    // Files lose copies to droppers at the first audit and get them back
    // from the copies that held; only files with every copy on a dropper
    // (about 0.3³ of them) are lost.
    assert!(some.repaired > 0);
    assert!(some.lost * 10 < some.files, "{some:?}");
    s.clients.watch = false;
    s.relays.retention_days = 10_000;
    let unwatched = simulate(&s).last();
    assert_eq!(unwatched.repaired, 0);
    assert!(unwatched.lost < some.lost.max(1) * 10, "{unwatched:?}");
}

#[test]
fn relays_that_vanish_together_are_gone_from_that_day() {
    let mut s = scenario();
    s.adversaries.vanish_together = 1.0;
    s.adversaries.vanish_together_day = 100;
    let days = simulate(&s).days;
    assert_eq!(days[98].relays_gone, 0);
    assert_eq!(days[99].relays_gone, 20);
    assert_eq!(days[364].lost, days[364].files);
}

#[test]
fn a_sweep_runs_the_base_once_per_value_and_refuses_a_field_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep.toml");
    let file = r#"
        seed = 7
        days = 30
        [sweep]
        field = "clients.copies"
        values = [1, 2, 3]
        [relays]
        count = 10
        capacity_gib = 10
        retention_days = 30
        vanish_per_year = 0.0
        outages_per_year = 0.0
        outage_hours = 0.0
        [clients]
        count = 10
        set_size = 5
        files = 1
        file_mib = 1
        copies = 3
        online_every_hours = 24
        watch = true
        replace_unanswered_after_hours = inf
    "#;
    std::fs::write(&path, file).unwrap();
    let Plan::Sweep(sweep) = Plan::load(&path).unwrap() else {
        panic!("not read as a sweep");
    };
    let copies: Vec<usize> = sweep.runs.iter().map(|(_, s)| s.clients.copies).collect();
    assert_eq!(copies, [1, 2, 3]);
    assert_eq!(sweep.runs[0].0, "1");
    std::fs::write(&path, file.replace("clients.copies", "clients.copy")).unwrap();
    let err = Plan::load(&path).unwrap_err().to_string();
    assert!(err.contains("the base has no `copy`"), "{err}");
    std::fs::write(&path, file.replace("[1, 2, 3]", "[1, 0]")).unwrap();
    let err = Plan::load(&path).unwrap_err().to_string();
    assert!(err.contains("with clients.copies = 0"), "{err}");
}

/// Most relays small, and more data than they hold.
fn crowded() -> Scenario {
    let mut s = scenario();
    s.relays.capacity_gib = 10;
    s.relays.small_share = 0.7;
    s.relays.small_capacity_gib = 1;
    s.clients.file_mib = 10;
    s.days = 120;
    s
}

#[test]
fn transfers_let_small_relays_take_puts_they_could_not_hold() {
    let mut s = crowded();
    let alone = simulate(&s).last();
    assert!(alone.refused_puts > 0 && alone.files < 800, "{alone:?}");
    assert_eq!(alone.transferred, 0);
    s.federation.peers = 6;
    let federated = simulate(&s).last();
    assert_eq!(federated.refused_puts, 0, "{federated:?}");
    assert_eq!(federated.files, 800);
    assert!(federated.transferred > 0);
    // Bytes move about once: a relay hands bytes on only to peers that
    // stay under its low-water mark, which do not hand them back.
    let stored = 800 * s.clients.file_mib * (1 << 20) * s.clients.copies as u64;
    assert!(
        federated.transferred < stored,
        "{} bytes moved for {stored} stored",
        federated.transferred
    );
}

#[test]
fn free_riders_take_no_transfers() {
    let mut s = crowded();
    s.federation.peers = 6;
    s.federation.free_riders = 1.0;
    let last = simulate(&s).last();
    assert_eq!(last.transferred, 0, "{last:?}");
    assert!(last.stuck_hours > 0, "{last:?}");
}

#[test]
fn a_sparse_mesh_near_its_low_water_mark_does_not_bounce_bytes() {
    // Relays of one size, 88% full on average, 2 peers each: a relay over
    // its high-water mark finds no peer that would stay under 80% with
    // more, so it keeps what it has rather than push a peer over its own
    // mark (which would push the bytes back: terabytes a week, before).
    let mut s = scenario();
    s.relays.capacity_gib = 2;
    s.clients.file_mib = 15;
    s.days = 120;
    s.federation.peers = 2;
    let last = simulate(&s).last();
    let stored = last.files * s.clients.file_mib * (1 << 20) * s.clients.copies as u64;
    assert!(
        last.transferred < stored,
        "{} bytes moved for {stored} stored",
        last.transferred
    );
}

#[test]
fn audit_liars_are_caught_by_the_real_chunk_draw() {
    // Nine chunks in ten kept: 16 random chunks per file, 4 files, pass
    // with a chance of 0.9^64, so the first audit catches the liar and
    // its copies are made again from whole ones.
    let mut s = scenario();
    s.clients.replace_unanswered_after_hours = 72.0;
    s.adversaries.audit_liars = 0.3;
    let some = simulate(&s).last();
    assert!(some.repaired > 0, "{some:?}");
    assert!(some.lost * 10 < some.files, "{some:?}");
    // With every relay a liar no copy is whole: everything is lost.
    s.adversaries.audit_liars = 1.0;
    let all = simulate(&s).last();
    assert_eq!(all.lost, all.files, "{all:?}");
}

#[test]
fn a_peer_credit_bounds_what_free_riders_hand_on() {
    // Half the relays free ride; a contributor that
    // takes a peer's transfers only within a credit of 2% of its capacity
    // takes less than one that takes all it has room for, and the free
    // riders keep the rest (hours over their high-water mark).
    let mut s = crowded();
    s.federation.peers = 6;
    s.federation.free_riders = 0.5;
    let open = simulate(&s).last();
    s.federation.peer_credit_permille = 20;
    let bounded = simulate(&s).last();
    assert!(open.transferred > 0, "{open:?}");
    assert!(
        bounded.transferred < open.transferred,
        "{} bytes moved with the credit, {} without",
        bounded.transferred,
        open.transferred
    );
    assert!(
        bounded.stuck_hours > open.stuck_hours,
        "{bounded:?} {open:?}"
    );
}

#[test]
fn relays_that_claim_a_year_and_keep_a_week_draw_fewer_copies_under_the_cap() {
    // Phones online weekly; three relays in ten disclose a year and
    // delete what nobody read for a week. Ranked by any retention, they
    // take every copy they can and lose whole files at the first long
    // absence; ranked up to the client's 90 days, they take a copy only
    // as their room and load earn it.
    let mut s = scenario();
    s.relays.retention_days = 90;
    s.clients.online_every_hours = 168.0;
    s.adversaries.retention_liars = 0.3;
    s.adversaries.retention_liars_disclose_days = 365;
    s.adversaries.retention_liars_keep_days = 7;
    let capped = simulate(&s).last();
    s.clients.ranked_retention_days = f64::INFINITY;
    let uncapped = simulate(&s).last();
    assert!(uncapped.lost > 0, "{uncapped:?}");
    assert!(capped.lost < uncapped.lost, "{capped:?} {uncapped:?}");
    // With nobody lying, the cap changes nothing.
    s.adversaries.retention_liars = 0.0;
    let honest = simulate(&s).last();
    s.clients.ranked_retention_days = 90.0;
    assert_eq!(simulate(&s).last(), honest);
}

#[test]
fn devices_of_an_identity_act_as_one_online_whenever_any_is() {
    // Three phones online every three days renew copies as one online
    // daily; one phone online every three days loses more.
    let mut s = scenario();
    s.relays.retention_days = 10;
    s.clients.online_every_hours = 24.0;
    let daily = simulate(&s);
    s.clients.online_every_hours = 72.0;
    let alone = simulate(&s).last();
    s.clients.devices = 3;
    let three = simulate(&s);
    assert_eq!(three, daily);
    assert!(
        alone.lost > three.last().lost,
        "{alone:?} {:?}",
        three.last()
    );
}
