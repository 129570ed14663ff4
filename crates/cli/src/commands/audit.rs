//! Checking copies and replacing bad ones: `audit`, `repair`.

use std::process::ExitCode;

use cairn_client::Client;
use cairn_policy::repair::{UNANSWERED_WAIT_SECS, Unanswered};

use crate::output::{bytes, count, duration, emit};

/// `cairn repair`: the report either way; exit 1 when a file is left short
/// of good copies.
pub(super) async fn repair(
    mut client: Client,
    json: bool,
    replace_unreachable: bool,
) -> anyhow::Result<ExitCode> {
    let report = client.repair(unanswered(replace_unreachable)).await?;
    emit(json, &report, || repair_summary(&report));
    Ok(if report.short.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `cairn repair` and `sync --watch` do with copies on relays that do
/// not answer: wait 3 days, as a relay that is down comes back within
/// that, unless the person says the relay is gone (`--replace-unreachable`).
/// A person running repair expects copies on a relay silent for weeks to
/// be replaced, as much as a device keeping watch must replace them.
pub(super) fn unanswered(replace_unreachable: bool) -> Unanswered {
    if replace_unreachable {
        Unanswered::ReplaceAfter(0)
    } else {
        Unanswered::ReplaceAfter(UNANSWERED_WAIT_SECS)
    }
}

/// `cairn audit`: the report either way; exit 1 when a relay failed to
/// produce a copy, so scripts can act.
pub(super) async fn audit(
    mut client: Client,
    json: bool,
    sample: Option<usize>,
    chunks: usize,
) -> anyhow::Result<ExitCode> {
    let report = client.audit(sample, chunks).await?;
    emit(json, &report, || {
        if report.copies == 0 {
            return "nothing stored yet: nothing to audit".into();
        }
        let mut text = format!(
            "audited {} of {} ({} of proofs, {:.1} s)",
            count(report.copies as u64, "copy", "copies"),
            count(report.files as u64, "file", "files"),
            bytes(report.proof_bytes),
            report.elapsed_ms as f64 / 1000.0
        );
        for relay in &report.relays {
            let verdict = if relay.missing + relay.failed > 0 {
                "MISBEHAVING"
            } else if relay.unreachable > 0 {
                "unreachable"
            } else {
                "ok"
            };
            text.push_str(&format!(
                "
  {verdict:<11} {}: {} passed, {} missing, {} failed the proof, {} unreachable",
                relay.url, relay.passed, relay.missing, relay.failed, relay.unreachable
            ));
            for problem in relay.problems.iter().take(10) {
                text.push_str(&format!(
                    "
      {problem}"
                ));
            }
        }
        text
    });
    Ok(if report.found_misbehaviour() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn repair_summary(report: &cairn_client::RepairReport) -> String {
    let mut text = format!(
        "repair: checked {} of {}: {} healthy, {} replaced ({:.1} s)",
        count(report.copies_checked as u64, "copy", "copies"),
        count(report.files as u64, "file", "files"),
        report.healthy,
        count(report.restored.len() as u64, "copy", "copies"),
        report.elapsed_ms as f64 / 1000.0
    );
    for r in &report.restored {
        text.push_str(&format!(
            "\n  {}: copy on {} ({}) replaced by one on {}",
            r.name, r.from, r.why, r.to
        ));
    }
    let metadata = &report.metadata;
    text.push_str(&format!(
        "\nmetadata: {} a new device needs, across the relays (identity log, snapshot, \
         operations): {} renewed, {} restored",
        count(metadata.blobs as u64, "copy", "copies"),
        metadata.renewed,
        metadata.restored
    ));
    for failed in &metadata.failed {
        text.push_str(&format!("\n  NOT KEPT {failed}"));
    }
    for short in &report.short {
        text.push_str(&format!("\n  SHORT {short}"));
    }
    // Each relay that did not answer, once (`--json` lists every copy).
    for relay in &report.unreachable_relays {
        text.push_str(&format!(
            "\n  {}: {} there not checked",
            relay.failure,
            count(relay.copies as u64, "copy", "copies")
        ));
    }
    if !report.unreachable.is_empty() && !report.short.is_empty() {
        text.push_str(&format!(
            "\n  (copies on relays that do not answer are kept until a relay has not answered \
             for {}, in case it comes back; if one is gone for good, `cairn repair \
             --replace-unreachable` makes new copies elsewhere now)",
            duration(UNANSWERED_WAIT_SECS)
        ));
    }
    text
}
