//! Repair throughput: files stored on three relays, one of which loses
//! every copy; a fresh relay joins the set and `repair` restores every
//! copy onto it (audit every copy, download a good copy verified, upload,
//! audit the new copy, record the move). Compared with storing the same
//! files in the first place.

use std::sync::Arc;
use std::time::Instant;

use cairn_client::{Client, Home, InitOptions, KdfCost, Passphrase, Silent};
use cairn_relay::{RelayConfig, RelayHandle};

async fn relay(dir: &std::path::Path) -> anyhow::Result<RelayHandle> {
    let mut config = RelayConfig::new(dir);
    config.listen = "127.0.0.1:0".parse()?;
    config.limits = cairn_proto::FairShareLimits::default();
    config.federation.replicas = 0;
    Ok(cairn_relay::start(config).await?)
}

pub(crate) async fn repair_bench(size: usize, count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut relays = Vec::new();
    for i in 0..4 {
        relays.push(relay(&dir.path().join(format!("relay{i}"))).await?);
    }
    let passphrase = Passphrase::new("bench");
    let options = InitOptions {
        device_name: "bench".into(),
        cost: KdfCost::new(10)?,
        transport: cairn_client::relay::Transport::Secure,
    };
    let (mut client, _) = Client::init(Home::at(dir.path().join("home")), &passphrase, &options)?;
    for relay in &relays[..3] {
        client.add_relay(&relay.url(), false).await?;
    }
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files)?;
    let mut batch = Vec::new();
    for i in 0..count {
        let path = files.join(format!("f{i}"));
        std::fs::write(&path, crate::blob("repair bench", i, size))?;
        batch.push((path, format!("f{i}")));
    }
    let started = Instant::now();
    let stored = client.put_many(&batch, Arc::new(Silent)).await?;
    let storing = started.elapsed().as_secs_f64();
    let sealed: u64 = stored.iter().map(|r| r.sealed_size).sum();

    // Relay 2 loses everything; relay 3 joins.
    let lost = dir.path().join("relay2").join("blobs");
    for shard in std::fs::read_dir(&lost)? {
        let shard = shard?.path();
        if !shard.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(shard)? {
            std::fs::remove_file(file?.path())?;
        }
    }
    client.add_relay(&relays[3].url(), false).await?;
    let started = Instant::now();
    // The lost copies are missing, not unreachable: no wait applies.
    let report = client.repair(cairn_client::Unanswered::Keep).await?;
    let repairing = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.short.is_empty(),
        "repair left files short: {:?}",
        report.short
    );
    let mb = |secs: f64| sealed as f64 / 1e6 / secs;
    println!("repair, {count} files of {size} bytes on 3 relays, one of which lost them all:");
    println!(
        "  repair     {:>8.1} MB/s restored ({} copies replaced, {} copies audited, {repairing:.2} s)",
        mb(repairing),
        report.restored.len(),
        report.copies_checked
    );
    println!(
        "  first put  {:>8.1} MB/s per copy ({} copies of {sealed} sealed bytes stored, {storing:.2} s)",
        mb(storing) * 3.0,
        stored.len() * 3
    );
    for relay in relays {
        relay.shutdown().await;
    }
    Ok(())
}
