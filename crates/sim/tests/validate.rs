//! The simulator against the real thing: `scenarios/validate.toml` (5
//! relays, 20 devices, a week of outages and relays vanishing) is run in
//! the simulator, and its record (every relay's fate, every device's set
//! and each session's time) is replayed against real relays on loopback
//! and real clients, all on one manual clock. Each put must store on the
//! same relays, each repair must replace the same copies with the same
//! ones, and the end must agree on where every file is and which are lost.
//!
//! What the replay takes from the simulator is only what the world does
//! (when relays are down or gone, when devices are online); every decision
//! on the real side is the real client's, over HTTP, with real storage.
//! Relays disclose retentions a day apart, so a client ranks them the
//! same way whatever their usage (which differs: real relays also keep
//! each device's metadata). Real files are 4 KiB, stored as one blob, as
//! the simulator's files are.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{
    Client, Clock, Home, InitOptions, KdfCost, Output, Passphrase, Restored, Silent, Unanswered,
};
use cairn_relay::{RelayConfig, RelayHandle};
use cairn_sim::trace::{Fate, Happened, Trace};
use cairn_sim::{Scenario, simulate_traced};

/// The simulator's second 0, in Unix seconds.
const START: u64 = 1_800_000_000;

/// A relay that can be stopped and started again on its port and data.
struct Relay {
    data: PathBuf,
    addr: SocketAddr,
    retention: Duration,
    handle: Option<RelayHandle>,
}

impl Relay {
    async fn start(data: PathBuf, addr: SocketAddr, retention: Duration, clock: &Clock) -> Self {
        let mut relay = Self {
            data,
            addr,
            retention,
            handle: None,
        };
        relay.up(clock).await;
        relay.addr = relay.handle.as_ref().unwrap().addr();
        relay
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn up(&mut self, clock: &Clock) {
        if self.handle.is_some() {
            return;
        }
        let mut config = RelayConfig::new(&self.data);
        config.listen = self.addr;
        config.retention = self.retention;
        // Every device is on 127.0.0.1, and the replay is faster than
        // the week it plays: no rate limits.
        config.limits = cairn_client::proto::FairShareLimits::default();
        config.federation.replicas = 0;
        // A freed port can linger briefly.
        for _ in 0..50 {
            match cairn_relay::start_with_clock(config.clone(), clock.clone()).await {
                Ok(handle) => {
                    self.handle = Some(handle);
                    return;
                }
                Err(err) => {
                    eprintln!("relay start: {err}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("relay did not start on {}", self.addr);
    }

    async fn down(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }

    /// Brings it to what `fate` says of `t`.
    async fn settle(&mut self, fate: &Fate, t: u64, clock: &Clock) {
        if fate.up_at(t) {
            self.up(clock).await;
        } else {
            self.down().await;
        }
    }
}

/// What differed between the simulator and the real run.
#[derive(Default)]
struct Differences(Vec<String>);

impl Differences {
    fn check<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, sim: T, real: T) {
        if sim != real {
            self.0
                .push(format!("{what}: simulator {sim:?}, real {real:?}"));
        }
    }
}

async fn device(dir: &Path, i: usize, set: &[u32], relays: &[Relay], clock: &Clock) -> Client {
    let options = InitOptions {
        device_name: format!("device {i}"),
        cost: KdfCost::new(10).unwrap(),
        transport: cairn_client::relay::Transport::Secure,
    };
    let home = Home::at(dir.join(format!("device{i}")));
    let (mut client, _) = Client::init(home, &Passphrase::new("validate"), &options).unwrap();
    client.set_clock(clock.clone());
    for &r in set {
        client
            .add_relay(&relays[r as usize].url(), false)
            .await
            .unwrap();
    }
    client
}

/// The index of the relay at `url` in the world.
fn relay_index(urls: &[String], url: &str) -> u32 {
    let at = urls.iter().position(|u| u == url);
    u32::try_from(at.unwrap_or_else(|| panic!("{url} is not a relay of the world"))).unwrap()
}

/// The relays (by index) holding the file's copies, as the client's table
/// has them.
async fn copies(client: &mut Client, urls: &[String]) -> BTreeSet<u32> {
    let listing = client.list().await.unwrap();
    let Some(file) = listing.files.iter().find(|f| f.name == "file") else {
        return BTreeSet::new();
    };
    file.copies
        .iter()
        .map(|url| relay_index(urls, url))
        .collect()
}

/// What a repair replaced. With no relay of the set answering, the
/// client cannot sync and stops before auditing: nothing.
async fn repaired(client: &mut Client, unanswered: Unanswered) -> Vec<Restored> {
    match client.repair(unanswered).await {
        Ok(report) => report.restored,
        Err(cairn_client::Error::Offline(_)) => Vec::new(),
        Err(err) => panic!("repair: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_and_real_relays_agree_on_a_week() {
    let scenario = Scenario::load(Path::new("../../scenarios/validate.toml")).unwrap();
    let (report, trace) = simulate_traced(&scenario);
    let Trace {
        relays: fates,
        sets,
        events,
        ends,
    } = &trace;
    // The scenario is worth replaying only if the week has the events
    // it is meant to check.
    let repairs = events
        .iter()
        .filter(|e| matches!(&e.what, Happened::Repair { replaced } if !replaced.is_empty()))
        .count();
    assert!(
        repairs > 0 && report.last().lost > 0,
        "a quiet week: {report:?}"
    );
    assert!(fates.iter().any(|f| f.gone_at.is_some()));

    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(START);
    let mut relays = Vec::new();
    for (i, fate) in fates.iter().enumerate() {
        let data = dir.path().join(format!("relay{i}"));
        let retention = Duration::from_secs(fate.retention_secs);
        relays.push(Relay::start(data, "127.0.0.1:0".parse().unwrap(), retention, &clock).await);
    }
    let urls: Vec<String> = relays.iter().map(Relay::url).collect();
    let mut clients = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        clients.push(device(dir.path(), i, set, &relays, &clock).await);
    }
    let file = dir.path().join("file");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();

    let mut now = 0;
    let mut differences = Differences::default();
    for event in events {
        clock.advance(event.t - now);
        now = event.t;
        for (relay, fate) in relays.iter_mut().zip(fates) {
            relay.settle(fate, now, &clock).await;
        }
        let client = &mut clients[event.client as usize];
        let at = format!("device {} at {}s", event.client, event.t);
        match &event.what {
            Happened::Put { stored } => {
                let put = client.put(&file, "file", Arc::new(Silent)).await;
                differences.check(
                    &format!("{at}: put stored"),
                    !stored.is_empty(),
                    put.is_ok(),
                );
                if put.is_ok() {
                    let sim: BTreeSet<u32> = stored.iter().copied().collect();
                    differences.check(&format!("{at}: put on"), sim, copies(client, &urls).await);
                }
            }
            Happened::Repair { replaced } => {
                let restored = repaired(client, scenario.clients.unanswered()).await;
                let real: BTreeSet<(u32, u32)> = restored
                    .iter()
                    .map(|r| (relay_index(&urls, &r.from), relay_index(&urls, &r.to)))
                    .collect();
                let sim: BTreeSet<(u32, u32)> = replaced.iter().copied().collect();
                differences.check(&format!("{at}: repair replaced"), sim, real);
            }
            Happened::Lost => {
                let restored = repaired(client, scenario.clients.unanswered()).await;
                differences.check(&format!("{at}: repair after loss"), 0, restored.len());
            }
        }
    }

    // The end: every relay that still exists answers, and each device's
    // copies are where the simulator left them; a file is readable unless
    // the simulator lost it.
    let end = u64::from(scenario.days) * 86_400;
    clock.advance(end - now);
    for (relay, fate) in relays.iter_mut().zip(fates) {
        if fate.gone_at.is_none() {
            relay.up(&clock).await;
        } else {
            relay.down().await;
        }
    }
    for (i, (client, end)) in clients.iter_mut().zip(ends).enumerate() {
        let sim: BTreeSet<u32> = end.copies.iter().copied().collect();
        differences.check(
            &format!("device {i} at the end: copies on"),
            sim,
            copies(client, &urls).await,
        );
        let out = dir.path().join(format!("got{i}"));
        let got = client
            .get("file", Output::File(out), Arc::new(Silent))
            .await;
        let stored = !end.copies.is_empty();
        differences.check(
            &format!("device {i} at the end: file readable"),
            stored && !end.lost,
            got.is_ok(),
        );
    }
    let count = |f: fn(&Happened) -> bool| events.iter().filter(|e| f(&e.what)).count();
    eprintln!(
        "replayed {} sessions: {} puts stored, {} refused, {} repairs that replaced, {} losses; \
         {} files lost at the end",
        events.len(),
        count(|h| matches!(h, Happened::Put { stored } if !stored.is_empty())),
        count(|h| matches!(h, Happened::Put { stored } if stored.is_empty())),
        count(|h| matches!(h, Happened::Repair { replaced } if !replaced.is_empty())),
        count(|h| matches!(h, Happened::Lost)),
        ends.iter().filter(|e| e.lost).count(),
    );
    assert!(
        differences.0.is_empty(),
        "{} differences:\n{}",
        differences.0.len(),
        differences.0.join("\n")
    );
}
