//! The relay set: `relay add`, `list`, `remove`, `rotate`, `check`.

use std::process::ExitCode;

use cairn_client::Client;

use crate::RelayCommand;
use crate::output::{ago, bytes, count, duration, emit, note, unix_now};

pub(super) async fn relay(
    mut client: Client,
    json: bool,
    command: RelayCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        RelayCommand::Add {
            url,
            accept_new_key,
        } => {
            let added = client.add_relay(&url, accept_new_key).await?;
            for warning in &added.warnings {
                note(json, &format!("warning: {warning}"));
            }
            emit(json, &added, || {
                let mut text = format!(
                    "{} {} (key {})\n  retention {}, {} free",
                    if added.already_present {
                        "checked"
                    } else {
                        "added"
                    },
                    added.relay.url,
                    added.relay.key,
                    duration(added.retention_secs),
                    bytes(added.capacity_free)
                );
                if let Some(old) = &added.replaced_key {
                    text.push_str(&format!("\n  replaced pinned key {old}"));
                }
                text
            });
        }
        RelayCommand::List => {
            let relays = client.relays().entries();
            emit(json, &relays, || {
                if relays.is_empty() {
                    return "no relays yet: add one with `cairn relay add URL`".into();
                }
                relays
                    .iter()
                    .map(|r| format!("{}  {}", r.url, r.key))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        RelayCommand::Remove { url } => {
            let removed = client.remove_relay(&url)?;
            emit(json, &removed, || {
                format!(
                    "removed {}; copies stored there expire by its retention",
                    removed.url
                )
            });
        }
        RelayCommand::Rotate { from, to } => {
            let report = client.rotate_relay(&from, &to).await?;
            emit(json, &report, || {
                let mut text = format!(
                    "moved {} from {} to {}",
                    count(report.moved.len() as u64, "file", "files"),
                    report.from,
                    report.to
                );
                for failed in &report.failed {
                    text.push_str(&format!("\n  NOT MOVED {failed}"));
                }
                if report.removed {
                    text.push_str(&format!(
                        "\n  deleted {} there; {} left your relay set",
                        count(report.deleted as u64, "copy", "copies"),
                        report.from
                    ));
                } else {
                    text.push_str(&format!(
                        "\n  {} stays in your set until every copy has moved; run again",
                        report.from
                    ));
                }
                for warning in &report.warnings {
                    text.push_str(&format!("\n  warning: {warning}"));
                }
                text
            });
            if !report.removed {
                return Ok(ExitCode::from(1));
            }
        }
        RelayCommand::Check { url } => {
            let checks = client.check_relays(url.as_deref()).await?;
            emit(json, &checks, || {
                checks
                    .iter()
                    .map(|c| {
                        let mut text = match &c.info {
                            Some(info) => format!(
                                "ok    {}  {} ms  {} free of {}  retention {}  max blob {}  \
                                 load {}‰{}",
                                c.url,
                                c.latency_ms,
                                bytes(info.capacity_free),
                                bytes(info.capacity_total),
                                duration(info.retention_secs),
                                bytes(info.max_blob_size),
                                info.load_permille,
                                if info.pow_bits > 0 {
                                    format!("  pow {}", count(info.pow_bits, "bit", "bits"))
                                } else {
                                    String::new()
                                }
                            ),
                            None => format!(
                                "FAIL  {}  {}",
                                c.url,
                                c.error.as_deref().unwrap_or("unknown error")
                            ),
                        };
                        if let Some(copies) = &c.copies {
                            text.push_str(&copies_text(copies));
                        }
                        if let Some(record) = &c.record {
                            text.push_str(&record_text(record, c.flagged));
                        }
                        text
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            if checks.iter().any(|c| !c.ok) {
                note(json, "some relays failed the check");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Transfers shown per relay before the rest is summed up.
const TRANSFERS_SHOWN: usize = 10;

/// The copies part of a relay's check, for people.
fn copies_text(copies: &cairn_client::CopiesCheck) -> String {
    if copies.listed == 0 {
        return String::new();
    }
    let mut text = format!(
        "\n      {} made here",
        count(copies.listed as u64, "blob copy", "blob copies")
    );
    if copies.probed > 0 {
        text.push_str(&format!(
            "; {} newest asked about: {} held, {} transferred, {} missing",
            copies.probed,
            copies.held,
            copies.transfers.iter().filter(|t| t.seen).count(),
            copies.missing
        ));
        if !copies.failed.is_empty() {
            text.push_str(&format!(", {} failed", copies.failed.len()));
        }
    }
    for transfer in copies.transfers.iter().take(TRANSFERS_SHOWN) {
        text.push_str(&format!(
            "\n      transferred {} to {} ({})",
            transfer.names.join(", "),
            transfer.to,
            match (transfer.recorded, transfer.seen) {
                (true, true) => "recorded, redirect checked",
                (true, false) => "recorded",
                _ => "not recorded yet: `cairn get` of it records it",
            }
        ));
    }
    if copies.transfers.len() > TRANSFERS_SHOWN {
        text.push_str(&format!(
            "\n      and {} more (--json lists them all)",
            count(
                (copies.transfers.len() - TRANSFERS_SHOWN) as u64,
                "transfer",
                "transfers"
            )
        ));
    }
    for failure in copies.failed.iter().take(TRANSFERS_SHOWN) {
        text.push_str(&format!("\n      failed {failure}"));
    }
    text
}

/// A relay's record as `relay check` shows it.
fn record_text(record: &cairn_client::scores::RelayScore, flagged: bool) -> String {
    let mut text = format!(
        "\n      record: {} ok, {} unavailable",
        record.successes, record.unavailable
    );
    for (kind, count) in &record.misbehaviour {
        text.push_str(&format!(", {count} {kind:?}").to_lowercase());
    }
    // How long repair has been waiting on it: it replaces the relay's
    // copies once this is UNANSWERED_WAIT_SECS ago.
    if let Some(since) = record.unanswered_since {
        text.push_str(&format!(
            "\n      not answered since {}",
            ago(unix_now().saturating_sub(since))
        ));
    }
    // Placement ranks it by this rather than the retention it discloses.
    if let Some(kept) = record.kept_at_most {
        text.push_str(&format!(
            "\n      lost a copy {} after it was stored: counted on to keep copies that long, \
             not what it discloses",
            cairn_client::text::lasting(kept)
        ));
    }
    if let Some((kind, _, what)) = &record.last_misbehaviour {
        let verdict = if flagged { "FLAGGED" } else { "earlier" };
        text.push_str(&format!(
            "\n      {verdict}: {} ({what})",
            format!("{kind:?}").to_lowercase()
        ));
    }
    text
}
