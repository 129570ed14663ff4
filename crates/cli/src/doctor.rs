//! `cairn doctor`: checks this device's setup end to end and says, for each
//! thing that is wrong or risky, what to do about it.

use std::path::Path;
use std::process::ExitCode;

use cairn_client::{Client, RelayCheck};
use serde::Serialize;

use crate::output::{ago, count, duration, print_details, unix_now};

/// How far a relay's clock may be from this device's before tokens (valid
/// for 5 minutes, with a minute of slack) start to fail.
const SKEW_WARN_SECS: u64 = 60;

/// Retention below this leaves little room between runs of `cairn repair`.
const SHORT_RETENTION_SECS: u64 = 7 * 86_400;

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

/// One finding: what was checked, how it came out, and what to do.
#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    status: Status,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
    /// On the finding that no relay answered: how old what the other
    /// findings rest on is.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    staleness: Option<Staleness>,
}

/// How old the state is that a doctor run without relays rests on.
#[derive(Debug, Serialize)]
struct Staleness {
    /// Always true: no relay answered.
    stale: bool,
    /// When a relay last answered a sync (Unix seconds), if one ever did.
    as_of: Option<u64>,
}

impl Finding {
    fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Ok,
            message: message.into(),
            fix: None,
            staleness: None,
        }
    }

    fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
            staleness: None,
        }
    }

    fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            ..Self::warn(check, message, fix)
        }
    }
}

/// Runs every check on an opened client (opening it already showed that
/// the home exists and the key files unlock). Exit 1 when any check failed.
pub(crate) async fn doctor(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let mut findings = vec![Finding::ok(
        "keys",
        format!("this device ({}) unlocked its keys", client.device_name()),
    )];
    findings.extend(home_permissions(client.home().path()));
    if client.holds_root() {
        findings.push(Finding::warn(
            "root key",
            "the root key is on this device: whoever takes it controls your identity",
            "keep it elsewhere: `cairn key export-root FILE` (to a USB stick), then \
             `cairn key forget-root`; you will need it only to add or revoke devices",
        ));
    } else {
        findings.push(Finding::ok(
            "root key",
            "the root key is not on this device",
        ));
    }
    findings.push(layout_finding(client));
    findings.extend(device_findings(client)?);
    let checks = client.check_relays(None).await?;
    findings.extend(relay_findings(client, &checks));
    if !checks.is_empty() && checks.iter().all(|check| !check.ok) {
        findings.push(offline_finding(client.synced_at()?));
    }
    print_details(
        &checks
            .iter()
            .filter_map(|check| {
                let detail = check.detail.as_deref()?;
                Some(format!(
                    "{}: {detail}",
                    cairn_client::text::relay_name(&check.url)
                ))
            })
            .collect::<Vec<_>>(),
    );
    let failed = findings.iter().any(|f| f.status == Status::Fail);
    crate::output::emit(json, &findings, || render(&findings));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// That no relay answered, so what the device findings rest on (this
/// device's syncs) is as old as its last sync.
fn offline_finding(synced_at: Option<u64>) -> Finding {
    let age = match synced_at {
        Some(at) => format!(
            "as of the last sync, {}",
            ago(unix_now().saturating_sub(at))
        ),
        None => "from before any sync".into(),
    };
    Finding {
        staleness: Some(Staleness {
            stale: true,
            as_of: synced_at,
        }),
        ..Finding::warn(
            "relays",
            format!("no relay could be reached: what this device knows of the others is {age}"),
            "check this machine's network; `cairn relay check` shows each relay",
        )
    }
}

fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            let label = match f.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let mut line = format!("{label}  {}: {}", f.check, f.message);
            if let Some(fix) = &f.fix {
                line.push_str(&format!("\n      → {fix}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether relays hold the identity sealed, one mailbox per relay, or in
/// the shared layout an earlier release left, which every relay can read.
fn layout_finding(client: &Client) -> Finding {
    if client.in_shared_layout() {
        Finding::warn(
            "identity layout",
            "relays hold this identity as an earlier release left it: each can read your \
             device keys and names, and all of them name the same mailbox",
            "run `cairn key rotate` where the root key is (`--root-key FILE` if exported); \
             your other devices follow at their next sync",
        )
    } else {
        Finding::ok(
            "identity layout",
            "each relay holds the identity sealed, in a mailbox of its own",
        )
    }
}

/// What syncs found of devices that signed what no honest device signs: a
/// frozen or forged head in its own slot, two histories, or an identity
/// log that forks. A device still enrolled after that is most likely in
/// someone else's hands.
fn device_findings(client: &Client) -> anyhow::Result<Vec<Finding>> {
    const MISBEHAVIOUR: [&str; 4] = [
        "implausible_head",
        "forked_identity",
        "equivocation",
        "unknown_writer",
    ];
    let state = client.identity().state();
    let devices = state.devices();
    let mut suspects: Vec<String> = Vec::new();
    let mut anonymous = 0;
    for finding in client.findings()? {
        if !MISBEHAVIOUR.contains(&finding.kind.as_str()) {
            continue;
        }
        let key = finding
            .device
            .as_deref()
            .and_then(|key| key.parse::<cairn_client::proto::VerifyingKey>().ok());
        match key.map(|key| (key, devices.get(&key))) {
            Some((_, Some(device))) => {
                let name = format!("{} ({})", device.name.as_str(), device.key);
                if !suspects.contains(&name) {
                    suspects.push(name);
                }
            }
            // Revoked since: dealt with.
            Some((key, None)) if state.revoked().contains(&key) => {}
            // Nobody, or a key the identity never enrolled: someone holding
            // the mailbox key, whoever that is.
            _ => anonymous += 1,
        }
    }
    let mut out = Vec::new();
    if !suspects.is_empty() {
        out.push(Finding::fail(
            "devices",
            format!(
                "{} signed heads or operations no honest device signs (see `cairn status`)",
                suspects.join(", ")
            ),
            "if one of them was lost or stolen, revoke it from a device holding the root key: \
             `cairn device revoke NAME`; if it was restored from a backup, let it sync first",
        ));
    }
    if anonymous > 0 {
        out.push(Finding::fail(
            "devices",
            format!(
                "{} in your mailbox {} frozen, forged or planted by someone holding the mailbox \
                 key, under no device's name (see `cairn status`)",
                count(anonymous as u64, "head", "heads"),
                if anonymous == 1 { "was" } else { "were" }
            ),
            "if a device was lost or stolen, revoke it: the next vault key moves every \
             device to a mailbox it cannot write",
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "devices",
            "no device signed anything suspicious in the syncs so far",
        ));
    }
    Ok(out)
}

/// The home directory and everything in it must be private to its owner.
fn home_permissions(home: &Path) -> Vec<Finding> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut exposed = Vec::new();
    let mut dirs = vec![home.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        if let Ok(meta) = std::fs::metadata(&dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            exposed.push(dir.clone());
        }
        for entry in entries.flatten() {
            let path = entry.path();
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => dirs.push(path),
                Ok(meta) if meta.permissions().mode() & 0o077 != 0 => exposed.push(path),
                _ => {}
            }
        }
    }
    if exposed.is_empty() {
        return vec![Finding::ok(
            "home",
            format!("{} is private to you", home.display()),
        )];
    }
    let names: Vec<String> = exposed.iter().map(|p| p.display().to_string()).collect();
    vec![Finding::fail(
        "home",
        format!("others can read {}", names.join(", ")),
        format!("chmod -R go-rwx {}", home.display()),
    )]
}

fn relay_findings(client: &Client, checks: &[RelayCheck]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let wanted = client.replicas();
    let now = crate::output::unix_now();
    match checks.len() {
        0 => findings.push(Finding::fail(
            "relays",
            "no relays: nothing can be stored",
            "`cairn relay add URL` for three relays you trust to stay up",
        )),
        n if n < wanted => findings.push(Finding::warn(
            "relays",
            format!(
                "{}: each file gets {}, not the {wanted} wanted",
                count(n as u64, "relay", "relays"),
                count(n as u64, "copy", "copies")
            ),
            "add relays with `cairn relay add URL`; any one of them is enough to read a file",
        )),
        n => findings.push(Finding::ok(
            "relays",
            format!(
                "{}; each file gets {}",
                count(n as u64, "relay", "relays"),
                count(wanted as u64, "copy", "copies")
            ),
        )),
    }
    let mut shortest: Option<(u64, &str)> = None;
    for check in checks {
        let url = check.url.as_str();
        let Some(info) = &check.info else {
            findings.push(Finding::fail(
                "relay",
                format!(
                    "{url} does not answer: {}",
                    check.error.as_deref().unwrap_or("unknown error")
                ),
                format!(
                    "if it is down for a while, reads use the other relays (and `cairn repair` \
                     replaces its copies once it has not answered for {}); if it is gone \
                     for good: `cairn relay rotate {url} NEW_URL`, or `cairn repair \
                     --replace-unreachable` now",
                    duration(cairn_policy::repair::UNANSWERED_WAIT_SECS)
                ),
            ));
            continue;
        };
        findings.push(Finding::ok(
            "relay",
            format!(
                "{url} answers in {} ms, signed by its pinned key",
                check.latency_ms
            ),
        ));
        let skew = info.issued_at.abs_diff(now);
        if skew > SKEW_WARN_SECS {
            findings.push(Finding::warn(
                "clock",
                format!(
                    "{url}'s clock and this device's differ by {skew} s; relays refuse tokens \
                     that look expired or too long-lived"
                ),
                "set this device's clock from the network (e.g. `timedatectl set-ntp true`); \
                 if only this relay is off, tell its operator",
            ));
        }
        if shortest.is_none_or(|(secs, _)| info.retention_secs < secs) {
            shortest = Some((info.retention_secs, url));
        }
        if check.flagged {
            findings.push(Finding::warn(
                "relay",
                format!("{url} misbehaved recently (see `cairn relay check {url}`)"),
                "`cairn repair` moves copies off it; remove it with `cairn relay rotate` if it \
                 keeps happening",
            ));
        }
        if let Some(copies) = &check.copies
            && copies.missing > 0
        {
            findings.push(Finding::warn(
                "copies",
                format!(
                    "{url} lacks {} of the {} asked about",
                    copies.missing,
                    count(copies.probed as u64, "copy", "copies")
                ),
                "`cairn repair` makes new copies from good ones",
            ));
        }
    }
    if let Some((secs, url)) = shortest {
        let days = secs / 86_400;
        if secs < SHORT_RETENTION_SECS {
            findings.push(Finding::warn(
                "retention",
                format!(
                    "{url} deletes copies nobody read for {}; unread files go with them",
                    if days > 0 {
                        count(days, "day", "days").to_string()
                    } else {
                        count(secs / 3600, "hour", "hours").to_string()
                    }
                ),
                "run `cairn repair` (or keep `cairn sync --watch` running) well within that: \
                 each audit renews the copies it checks",
            ));
        } else {
            findings.push(Finding::ok(
                "retention",
                format!(
                    "the shortest retention is {} ({url}); run `cairn repair` at least that \
                     often",
                    count(days, "day", "days")
                ),
            ));
        }
    }
    findings
}
