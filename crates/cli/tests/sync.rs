//! Multi-device sync: three devices (separate homes, in this process
//! through the client library) and three relays on loopback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{Client, Home, InitOptions, KdfCost, Passphrase, Silent};
use proptest::prelude::*;

use crate::common::{PASSPHRASE, Relay};

fn options(name: &str) -> InitOptions {
    InitOptions {
        device_name: name.into(),
        cost: KdfCost::new(8).unwrap(),
        transport: cairn_client::relay::Transport::Secure,
    }
}

/// Homes live here; the clients keep paths into it.
pub(crate) struct Devices {
    _dir: tempfile::TempDir,
    pub(crate) clients: Vec<Client>,
}

/// An identity on `count` devices sharing `relays`, storing one copy per
/// file (so puts succeed while some relays are down).
pub(crate) async fn devices(relays: &[&Relay], count: usize) -> Devices {
    let dir = tempfile::tempdir().unwrap();
    let passphrase = Passphrase::new(PASSPHRASE);
    let (mut first, _) =
        Client::init(Home::at(dir.path().join("d0")), &passphrase, &options("d0")).unwrap();
    for relay in relays {
        first.add_relay(&relay.url(), false).await.unwrap();
    }
    first.set_replicas(1).unwrap();
    let mut clients = vec![first];
    for i in 1..count {
        let home = Home::at(dir.path().join(format!("d{i}")));
        let mut joined = join(&mut clients[0], home, &format!("d{i}"), relays[0]).await;
        joined.set_replicas(1).unwrap();
        clients.push(joined);
    }
    Devices { _dir: dir, clients }
}

/// A new device at `home`, paired through `relay` and approved by
/// `approver`.
async fn join(approver: &mut Client, home: Home, name: &str, relay: &Relay) -> Client {
    let url = relay.url();
    let options = options(name);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let joining = tokio::spawn(async move {
        Client::join(
            home,
            &Passphrase::new(PASSPHRASE),
            &options,
            &url,
            Duration::from_secs(30),
            move |code| {
                let _ = tx.send(code.clone());
            },
        )
        .await
    });
    let code = rx.await.unwrap();
    approver
        .approve(&code, Duration::from_secs(30))
        .await
        .unwrap();
    joining.await.unwrap().unwrap()
}

async fn put(client: &mut Client, name: &str, content: &[u8]) -> cairn_client::PutReport {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), content).unwrap();
    client
        .put(file.path(), name, Arc::new(Silent))
        .await
        .unwrap()
}

/// Name → blob id, as a device sees it.
async fn table(client: &mut Client) -> BTreeMap<String, String> {
    client
        .list()
        .await
        .unwrap()
        .files
        .into_iter()
        .map(|f| (f.name, f.blob.to_string()))
        .collect()
}

/// Everyone syncs twice: the first round sends every relay what it lacks,
/// the second brings everyone everything.
async fn converge(devices: &mut Devices) {
    for _ in 0..2 {
        for client in &mut devices.clients {
            client.sync().await.unwrap();
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Put {
        device: usize,
        name: usize,
    },
    Remove {
        device: usize,
        name: usize,
    },
    Rename {
        device: usize,
        from: usize,
        to: usize,
    },
    Sync {
        device: usize,
    },
    Stop {
        relay: usize,
    },
    Start {
        relay: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..4usize).prop_map(|(device, name)| Step::Put { device, name }),
        2 => (0..3usize, 0..4usize).prop_map(|(device, name)| Step::Remove { device, name }),
        1 => (0..3usize, 0..4usize, 0..4usize)
            .prop_map(|(device, from, to)| Step::Rename { device, from, to }),
        3 => (0..3usize).prop_map(|device| Step::Sync { device }),
        1 => (0..3usize).prop_map(|relay| Step::Stop { relay }),
        1 => (0..3usize).prop_map(|relay| Step::Start { relay }),
    ]
}

/// Runs `steps` and checks that everyone ends up with the model's table:
/// every change that succeeded, applied in the order it happened (hybrid
/// logical clocks follow real time on one machine), last writer wins.
async fn run_schedule(steps: Vec<Step>) {
    let mut relays = vec![
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    ];
    let refs: Vec<&Relay> = relays.iter().collect();
    let mut devices = devices(&refs, 3).await;
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    let name = |i: usize| format!("file-{i}");
    for (n, step) in steps.into_iter().enumerate() {
        match step {
            Step::Put { device, name: i } => {
                let content = format!("step {n} by device {device}");
                let report = put(&mut devices.clients[device], &name(i), content.as_bytes()).await;
                model.insert(name(i), report.blob.to_string());
            }
            Step::Remove { device, name: i } => {
                // Succeeds exactly when the device currently sees the name.
                if devices.clients[device].remove(&name(i)).await.is_ok() {
                    model.remove(&name(i));
                }
            }
            Step::Rename { device, from, to } => {
                let client = &mut devices.clients[device];
                let seen = table(client).await;
                if let Some(blob) = seen.get(&name(from)).cloned() {
                    client.rename(&name(from), &name(to)).await.unwrap();
                    if from != to {
                        model.remove(&name(from));
                        model.insert(name(to), blob);
                    }
                }
            }
            Step::Sync { device } => {
                devices.clients[device].sync().await.unwrap();
            }
            Step::Stop { relay } => {
                // Keep one relay up: with none, nothing can happen.
                if relays.iter().filter(|r| r.is_up()).count() > 1 {
                    relays[relay].stop().await;
                }
            }
            Step::Start { relay } => {
                if !relays[relay].is_up() {
                    relays[relay].restart().await;
                }
            }
        }
    }
    for relay in &mut relays {
        if !relay.is_up() {
            relay.restart().await;
        }
    }
    converge(&mut devices).await;
    for (i, client) in devices.clients.iter_mut().enumerate() {
        assert_eq!(
            table(client).await,
            model,
            "device {i} disagrees with the model"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4,
        max_shrink_iters: 0,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Concurrent puts, removes and renames on three devices, with relays
    /// stopped and restarted between syncs, converge to the model.
    #[test]
    fn random_schedules_converge(steps in proptest::collection::vec(step(), 10..30)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run_schedule(steps));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_on_two_devices_resolves_the_same_everywhere() {
    let (a, b, c) = (
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    );
    let mut devices = devices(&[&a, &b, &c], 3).await;
    // Neither has seen the other's write when making its own.
    let first = put(&mut devices.clients[1], "shared.txt", b"from d1").await;
    let second = put(&mut devices.clients[2], "shared.txt", b"from d2").await;
    converge(&mut devices).await;
    let tables = [
        table(&mut devices.clients[0]).await,
        table(&mut devices.clients[1]).await,
        table(&mut devices.clients[2]).await,
    ];
    assert_eq!(tables[0], tables[1]);
    assert_eq!(tables[1], tables[2]);
    // The later write wins.
    assert_eq!(tables[0]["shared.txt"], second.blob.to_string());
    assert_ne!(first.blob, second.blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serving_a_stale_head_is_reported_and_repaired() {
    let (a, b, mut c) = (
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    );
    let mut devices = devices(&[&a, &b, &c], 2).await;
    put(&mut devices.clients[0], "one", b"1").await;
    converge(&mut devices).await;

    // c misses d0's next change, then comes back serving the old head.
    c.stop().await;
    put(&mut devices.clients[0], "two", b"2").await;
    c.restart().await;

    let report = devices.clients[1].sync().await.unwrap();
    let stale: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == "stale_head")
        .collect();
    assert!(
        stale
            .iter()
            .any(|f| f.relay.as_deref() == Some(c.url().as_str())),
        "{report:#?}"
    );
    assert!(table(&mut devices.clients[1]).await.contains_key("two"));

    // Only d0 can repair c: its head there is signed for c's mailbox alone
    // (PROTOCOL.md §10.7), so no other device can pass it on. d0's next
    // sync does.
    let own = devices.clients[0].sync().await.unwrap();
    let c_report = own.relays.iter().find(|r| r.url == c.url()).unwrap();
    assert!(c_report.republished > 0, "{own:#?}");

    // Repaired: a later sync finds nothing stale, and a device reading
    // only from c sees the change.
    let again = devices.clients[1].sync().await.unwrap();
    assert!(
        again.findings.iter().all(|f| f.kind != "stale_head"),
        "{again:#?}"
    );
    let mut only_c = devices.clients.pop().unwrap();
    only_c.remove_relay(&a.url()).unwrap();
    only_c.remove_relay(&b.url()).unwrap();
    assert!(table(&mut only_c).await.contains_key("two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocation_is_detected_and_not_merged() {
    let (mut a, mut b) = (Relay::start().await, Relay::start().await);
    let mut devices = devices(&[&a, &b], 2).await;
    put(&mut devices.clients[0], "base", b"base").await;
    converge(&mut devices).await;

    // d0's home is backed up; d0 writes "x" while only relay a is up.
    let home = devices.clients[0].home().path().to_path_buf();
    let backup = home.with_extension("backup");
    copy_dir(&home, &backup);
    b.stop().await;
    put(&mut devices.clients[0], "x", b"x").await;
    // The backup is restored and, seeing only relay b, writes "y" at the
    // same position of its log: the same key signed two operations there.
    a.stop().await;
    b.restart().await;
    std::fs::remove_dir_all(&home).unwrap();
    copy_dir(&backup, &home);
    let mut restored = Client::open(Home::at(&home), &Passphrase::new(PASSPHRASE)).unwrap();
    put(&mut restored, "y", b"y").await;
    a.restart().await;

    let report = devices.clients[1].sync().await.unwrap();
    let equivocations: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == "equivocation")
        .collect();
    assert!(!equivocations.is_empty(), "{report:#?}");
    assert_eq!(
        equivocations[0].device.as_deref(),
        Some(devices.clients[0].device_key().to_string().as_str())
    );
    // Neither branch was merged silently.
    let seen = table(&mut devices.clients[1]).await;
    assert!(seen.contains_key("base"));
    assert!(
        !seen.contains_key("x") && !seen.contains_key("y"),
        "{seen:?}"
    );
    // And `status` keeps reporting it.
    let findings = devices.clients[1].findings().unwrap();
    assert!(findings.iter().any(|f| f.kind == "equivocation"));
}

/// Copies the directory `from` to `to`, files and subdirectories.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_syncs_through_a_snapshot() {
    // 1,000 operations in seconds: more than the default fair share of a
    // key and of an address range (3,000 a minute each), which a client
    // would wait out (see below) but a test should not.
    let unlimited = |c: &mut cairn_relay::RelayConfig| {
        c.limits.key_requests_per_min = 0;
        c.limits.addr_requests_per_min = 0;
    };
    let (a, b) = (
        Relay::start_with(unlimited).await,
        Relay::start_with(unlimited).await,
    );
    let mut devices = devices(&[&a, &b], 1).await;
    let client = &mut devices.clients[0];
    put(client, "n-0", b"0").await;
    // 1,000 operations: renames move one file along a chain of names.
    for i in 0..1000 {
        client
            .rename(&format!("n-{i}"), &format!("n-{}", i + 1))
            .await
            .unwrap();
    }
    client.sync().await.unwrap();
    let expected = table(client).await;
    assert_eq!(expected.keys().collect::<Vec<_>>(), ["n-1000"]);

    // A new device joins and syncs: it starts from the newest snapshot and
    // merges only what came after it, not 1,000 operations.
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("late"));
    let mut late = join(&mut devices.clients[0], home, "late", &a).await;
    let report = late.sync().await.unwrap();
    assert!(report.snapshot_applied, "{report:#?}");
    assert!(report.merged < 100, "merged {} operations", report.merged);
    assert_eq!(table(&mut late).await, expected);
}

/// A snapshot names, on each relay, where the operations it covers are
/// there, even a device's that relay never got: a new device that reads
/// that relay alone takes the cover (so it need not walk that device's log
/// from its start, which may have expired), and then follows that device's
/// next operation. Fails when a snapshot leaves out covers a relay's chains
/// do not reach: the new device has no position for d1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_links_every_cover_on_every_relay() {
    let unlimited = |c: &mut cairn_relay::RelayConfig| {
        c.limits.key_requests_per_min = 0;
        c.limits.addr_requests_per_min = 0;
    };
    let (mut a, mut b) = (
        Relay::start_with(unlimited).await,
        Relay::start_with(unlimited).await,
    );
    let mut devices = devices(&[&a, &b], 2).await;
    // d1 writes while b is down, and stays idle: b never gets its chain.
    b.stop().await;
    put(&mut devices.clients[1], "one", b"1").await;
    b.restart().await;
    let d0 = &mut devices.clients[0];
    d0.sync().await.unwrap();
    put(d0, "n-0", b"0").await;
    for i in 0..500 {
        d0.rename(&format!("n-{i}"), &format!("n-{}", i + 1))
            .await
            .unwrap();
    }
    // (The 500th operation since the last snapshot wrote one.)
    d0.sync().await.unwrap();

    // A new device reads b alone.
    a.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let mut late = join(d0, Home::at(dir.path().join("late")), "late", &b).await;
    let report = late.sync().await.unwrap();
    assert!(report.snapshot_applied, "{report:#?}");
    assert!(table(&mut late).await.contains_key("one"));
    // d1's position comes from the cover: b holds no chain of d1's.
    let d1 = devices.clients[1].device_key().to_string();
    assert!(
        report.devices.iter().any(|d| d.device == d1 && d.seq == 1),
        "{:#?}",
        report.devices
    );

    // d1 writes again; only b is up.
    put(&mut devices.clients[1], "two", b"2").await;
    let report = late.sync().await.unwrap();
    assert!(
        table(&mut late).await.contains_key("two"),
        "{:#?}",
        report.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_with_nothing_new_is_one_request_per_relay() {
    let (a, b, c) = (
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    );
    let mut devices = devices(&[&a, &b, &c], 2).await;
    for i in 0..20 {
        put(&mut devices.clients[0], &format!("f{i}"), b"x").await;
    }
    converge(&mut devices).await;

    let before = [
        a.requests_answered().await,
        b.requests_answered().await,
        c.requests_answered().await,
    ];
    let report = devices.clients[1].sync().await.unwrap();
    assert_eq!(report.merged, 0);
    let after = [
        a.requests_answered().await,
        b.requests_answered().await,
        c.requests_answered().await,
    ];
    let per_relay: Vec<u64> = after.iter().zip(before).map(|(x, y)| x - y).collect();
    assert_eq!(
        per_relay,
        [1, 1, 1],
        "requests per relay for a no-change sync"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_device_waits_as_asked_and_loses_nothing() {
    // 20 keyed requests a minute: the bucket empties after about ten puts
    // (each uploads a blob and an operation) and refills one every 3 s.
    let relay = Relay::start_with(|c| c.limits.key_requests_per_min = 20).await;
    let mut devices = devices(&[&relay], 1).await;
    let client = &mut devices.clients[0];
    for i in 0..12 {
        put(client, &format!("f{i}"), format!("{i}").as_bytes()).await;
    }
    assert_eq!(table(client).await.len(), 12);
}

/// A revocation has the new owner claim more copies than one sync's share
/// of claims (256 per relay) before it returns: the revoked device,
/// holding the old owner key, deletes none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_moves_every_copy_to_the_new_owner_before_it_returns() {
    let relay = Relay::start().await;
    let mut devices = devices(&[&relay], 2).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(std::path::PathBuf, String)> = (0..300)
        .map(|i| {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, format!("file {i}")).unwrap();
            (path, format!("f{i}"))
        })
        .collect();
    devices.clients[0]
        .put_many(&files, Arc::new(Silent))
        .await
        .unwrap();
    converge(&mut devices).await;

    let blobs: Vec<String> = table(&mut devices.clients[0]).await.into_values().collect();
    assert_eq!(blobs.len(), 300);
    let thief = devices.clients.pop().unwrap();
    let old_owner = thief.upload_key(&relay.handle().key());
    // Nothing syncs between the revocation and the thief's deletes.
    let revoked = devices.clients[0]
        .revoke(&thief.device_key().to_string())
        .await
        .unwrap();
    assert_eq!(revoked.generation, 2);
    // Where the old owner's claim is not let go of yet (the relay's
    // per-key budget ran out), a delete drops that claim alone.
    let mut gone = Vec::new();
    for blob in &blobs {
        let (status, left) = relay.delete_as(&old_owner, blob).await;
        if status == 204 && left.as_deref() == Some("0") {
            gone.push(blob.clone());
        }
        assert_eq!(relay.blob_status(blob).await, 200, "{blob}");
    }
    assert!(gone.is_empty(), "the revoked device deleted {gone:?}");
}

/// A relay whose disk goes back to before a revocation (restored from an
/// old backup, or lying on purpose) serves the identity log as it was,
/// with the revoked device enrolled, and none of the next generation's
/// mailbox. A device that knew the revocation keeps the log it holds: the
/// revoked device stays revoked. The device that revoked puts its heads
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_rolled_back_to_before_a_revocation_does_not_undo_it() {
    let mut a = Relay::start().await;
    let mut devices = devices(&[&a], 3).await;
    put(&mut devices.clients[0], "one", b"1").await;
    converge(&mut devices).await;
    let backup = tempfile::tempdir().unwrap();
    a.stop().await;
    copy_dir(&a.data(), backup.path());
    a.restart().await;

    let phone = devices.clients[1].device_key();
    let enrolled = |c: &Client| c.identity().state().devices().contains_key(&phone);
    devices.clients[0].revoke(&phone.to_string()).await.unwrap();
    devices.clients[2].sync().await.unwrap();
    let length = devices.clients[2].identity().entries().len();
    assert!(
        !enrolled(&devices.clients[2]),
        "the observer learnt the revocation"
    );

    // The relay rolls back.
    a.stop().await;
    std::fs::remove_dir_all(a.data()).unwrap();
    copy_dir(backup.path(), &a.data());
    a.restart().await;
    devices.clients[2].sync().await.unwrap();
    assert_eq!(devices.clients[2].identity().entries().len(), length);
    assert!(
        !enrolled(&devices.clients[2]),
        "the rollback un-revoked the phone"
    );
    // The device that revoked puts its heads back at its next sync.
    let own = devices.clients[0].sync().await.unwrap();
    assert!(own.relays[0].republished > 0, "{own:#?}");
}
