//! Keeping up with the other devices: `sync` (and `sync --watch`), `status`.

use std::process::ExitCode;
use std::time::Duration;

use cairn_client::Client;
use cairn_policy::repair::SWAP_RELAY_AFTER_SECS;
use serde_json::json;

use super::audit::repair_summary;
use crate::output::{count, emit, emit_line, note_failure, unix_now, warn_offline};

pub(super) async fn sync(
    mut client: Client,
    json: bool,
    watch: bool,
    rounds: Option<u64>,
) -> anyhow::Result<ExitCode> {
    if !watch {
        let report = client.sync().await?;
        emit(json, &report, || sync_summary(&report));
        return Ok(ExitCode::SUCCESS);
    }
    // Poll with backoff: quick after a change, up to a minute when idle.
    let mut wait = Duration::from_secs(2);
    let mut round = 0;
    // Repair on the first round, then well within the shortest retention.
    let mut next_repair = std::time::Instant::now();
    loop {
        round += 1;
        // The home is this process's for the round only: other commands
        // run between rounds.
        let held = super::hold(&client, json).await?;
        if std::time::Instant::now() >= next_repair {
            watch_repair(&mut client, json).await;
            next_repair = std::time::Instant::now() + repair_interval(&client).await;
        }
        match client.sync().await {
            Ok(report) => {
                let changed = report.merged > 0 || !report.findings.is_empty();
                if changed || round == 1 {
                    emit_line(json, &report, || sync_summary(&report));
                }
                wait = if changed {
                    Duration::from_secs(2)
                } else {
                    (wait * 2).min(Duration::from_secs(60))
                };
            }
            Err(err) => {
                note_failure(
                    json,
                    &format!("sync failed: {err}; retrying in {} s", wait.as_secs()),
                    &err,
                );
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
        drop(held);
        if rounds.is_some_and(|n| round >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// One repair pass inside `sync --watch`: reported when it did or found
/// something, noted when it failed. It waits for a silent relay as
/// `cairn repair` does: a device that only keeps watch must still replace
/// the copies on a relay that vanished, or the file is lost with the last.
async fn watch_repair(client: &mut Client, json: bool) {
    match client.repair(super::audit::unanswered(false)).await {
        Ok(report) if !report.restored.is_empty() || !report.short.is_empty() => {
            emit_line(json, &json!({ "repair": &report }), || {
                repair_summary(&report)
            });
        }
        Ok(_) => {}
        Err(err) => note_failure(
            json,
            &format!("repair failed: {err}; tried again later"),
            &err,
        ),
    }
}

/// How long until the next repair ([`cairn_policy::choice::repair_interval_secs`]:
/// a quarter of the shortest retention the relays disclose).
async fn repair_interval(client: &Client) -> Duration {
    Duration::from_secs(cairn_policy::choice::repair_interval_secs(
        client.shortest_retention().await,
    ))
}

fn sync_summary(report: &cairn_client::SyncReport) -> String {
    let reachable = report.relays.iter().filter(|r| r.reachable).count();
    let mut text = format!(
        "synced: {} merged, {}, {reachable} of {} answered",
        count(report.merged as u64, "operation", "operations"),
        count(report.files as u64, "file", "files"),
        count(report.relays.len() as u64, "relay", "relays"),
    );
    if report.claimed > 0 {
        text.push_str(&format!(
            "\n  claimed {} your other devices stored: they stay until this device \
             deletes them too",
            count(report.claimed as u64, "copy", "copies")
        ));
    }
    if report.claims_pending > 0 {
        text.push_str(&format!(
            "\n  {} more to claim at the next sync",
            count(report.claims_pending as u64, "copy", "copies")
        ));
    }
    for device in &report.revoked {
        text.push_str(&format!(
            "\n  device {} ({}) was revoked: new files are sealed to vault generation {}, \
             which it cannot open",
            device.name, device.device, report.vault_generation
        ));
    }
    for relay in report.relays.iter().filter(|r| !r.reachable) {
        text.push_str(&format!(
            "\n  DOWN {}: {}",
            relay.url,
            relay.error.as_deref().unwrap_or("")
        ));
    }
    for finding in &report.findings {
        text.push_str(&format!(
            "\n  WARNING {}: {}",
            finding.kind,
            finding_text(finding)
        ));
    }
    text
}

fn finding_text(finding: &cairn_client::Finding) -> String {
    let mut parts = Vec::new();
    if let Some(relay) = &finding.relay {
        parts.push(format!("relay {relay}"));
    }
    if let Some(device) = &finding.device {
        parts.push(format!("device {device}"));
    }
    parts.push(finding.detail.clone());
    parts.join(", ")
}

/// The relays of the set whose record (this device's, of audits and
/// downloads) gives a figure by `pick`, with their URLs.
fn relays_where(
    client: &Client,
    pick: impl Fn(&cairn_client::scores::RelayScore) -> Option<u64>,
) -> Vec<(String, u64)> {
    let scores = client.scores();
    client
        .relays()
        .entries()
        .iter()
        .filter_map(|relay| Some((relay.url.clone(), pick(scores.get(&relay.key)?)?)))
        .collect()
}

/// The relays of the set this device has had no answer from for
/// [`SWAP_RELAY_AFTER_SECS`] or more, with for how long.
fn silent_relays(client: &Client) -> Vec<(String, u64)> {
    let now = client.clock().now().0;
    relays_where(client, |score| {
        Some(score.unanswered_for(now)).filter(|&silent| silent >= SWAP_RELAY_AFTER_SECS)
    })
}

/// The relays of the set this device saw lose a copy sooner than the
/// retention they disclose, with the shortest time one kept.
fn short_keepers(client: &Client) -> Vec<(String, u64)> {
    relays_where(client, |score| score.kept_at_most)
}

pub(super) async fn status(mut client: Client, json: bool) -> anyhow::Result<ExitCode> {
    let status = client.status().await?;
    let report = &status.sync;
    let findings = client.findings()?;
    // Without relays, where this device stood at its last sync, said to be
    // that (`stale`, and when: `as_of`).
    let as_of = match &status.offline {
        Some(offline) => {
            warn_offline("this device's last status", offline);
            offline.synced_at
        }
        None => Some(unix_now()),
    };
    let silent = silent_relays(&client);
    let short = short_keepers(&client);
    let value = json!({
        "sync": report,
        "findings": findings,
        "silent_relays": silent
            .iter()
            .map(|(url, secs)| json!({ "url": url, "silent_secs": secs }))
            .collect::<Vec<_>>(),
        "short_retention_relays": short
            .iter()
            .map(|(url, secs)| json!({ "url": url, "kept_secs": secs }))
            .collect::<Vec<_>>(),
        "stale": status.offline.is_some(),
        "as_of": as_of,
    });
    emit(json, &value, || {
        let mut text = String::from("relays:\n");
        for relay in &report.relays {
            text.push_str(&format!(
                "  {} {}  {}{}{}\n",
                if relay.reachable { "ok  " } else { "DOWN" },
                relay.url,
                count(relay.heads as u64, "head", "heads"),
                if relay.republished > 0 {
                    format!(", {} re-sent", relay.republished)
                } else {
                    String::new()
                },
                relay
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        text.push_str("devices:\n");
        for device in &report.devices {
            text.push_str(&format!(
                "  {} {:<16} up to operation {}  {}\n",
                if device.this_device { "*" } else { " " },
                device.name.as_deref().unwrap_or("(not enrolled)"),
                device.seq,
                device.device
            ));
        }
        text.push_str(&format!("files: {}\n", report.files));
        for (url, secs) in &silent {
            text.push_str(&format!(
                "relay {url} has not answered this device for {}: `cairn repair` (and \
                 `sync --watch`) moves its copies to the rest of your set; if it is gone for \
                 good, replace it (`cairn relay rotate {url} NEW_URL`): a set whose relays \
                 all vanish takes its files with it\n",
                cairn_client::text::lasting(*secs)
            ));
        }
        for (url, kept) in &short {
            text.push_str(&format!(
                "relay {url} lost a copy {} after it was stored, sooner than the retention it \
                 discloses: this device counts on it to keep copies that long only, and places \
                 them on the rest of your set first; to stop using it, replace it \
                 (`cairn relay rotate {url} NEW_URL`)\n",
                cairn_client::text::lasting(*kept)
            ));
        }
        if findings.is_empty() && silent.is_empty() && short.is_empty() {
            text.push_str("no problems found");
        } else if findings.is_empty() {
            text.truncate(text.trim_end().len());
        } else {
            text.push_str("findings (newest last):");
            for finding in &findings {
                text.push_str(&format!("\n  {}: {}", finding.kind, finding_text(finding)));
            }
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}
