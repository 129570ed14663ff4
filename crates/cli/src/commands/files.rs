//! Stored files: `put`, `get`, `ls`, `export`, `mv`, `rm`, and `config`
//! (how many copies each gets).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use cairn_client::{Client, FileInfo, Output, Progress, RangeSpec};
use serde::Serialize;
use serde_json::json;

use crate::output::{bytes, count, emit, note, print_details, unix_now, warn_offline};
use crate::progress::Bars;

pub(super) async fn put(
    mut client: Client,
    json: bool,
    files: Vec<PathBuf>,
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let progress: Arc<dyn Progress> = Arc::new(Bars::new(!json));
    let reports = match files.as_slice() {
        [file] if file == Path::new("-") => {
            let name = name.context("storing standard input needs --name NAME")?;
            vec![
                client
                    .put_reader(Box::new(std::io::stdin()), 0, &name, progress)
                    .await?,
            ]
        }
        [file] => {
            let name = match name {
                Some(name) => name,
                None => file_name(file)?,
            };
            vec![client.put(file, &name, progress).await?]
        }
        _ => {
            if name.is_some() {
                bail!("--name needs exactly one file");
            }
            let mut named = Vec::with_capacity(files.len());
            for file in &files {
                if file == Path::new("-") {
                    bail!("`-` (standard input) cannot be stored with other files");
                }
                named.push((file.clone(), file_name(file)?));
            }
            client.put_many(&named, progress).await?
        }
    };
    for report in &reports {
        for warning in &report.warnings {
            note(json, &format!("warning: {}: {warning}", report.name));
        }
    }
    let text = || {
        reports
            .iter()
            .map(|report| {
                let chunks = match (report.chunks, report.reused) {
                    (0, _) => String::new(),
                    (n, 0) => format!(" in {}", count(n as u64, "chunk", "chunks")),
                    (n, reused) => format!(
                        " in {}, {reused} of them already stored ({} sent in all)",
                        count(n as u64, "chunk", "chunks"),
                        bytes(report.sent)
                    ),
                };
                format!(
                    "stored {} ({}){chunks} as {} on {}:\n  {}",
                    report.name,
                    bytes(report.size),
                    report.blob,
                    count(report.copies.len() as u64, "relay", "relays"),
                    report.copies.join("\n  ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // One report for one file (as before), a list for several.
    match reports.as_slice() {
        [one] => emit(json, one, text),
        many => emit(json, &many, text),
    }
    Ok(ExitCode::SUCCESS)
}

fn file_name(file: &Path) -> anyhow::Result<String> {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name; pass --name NAME", file.display()))
}

pub(super) async fn get(
    mut client: Client,
    json: bool,
    what: String,
    output: Option<PathBuf>,
    range: Option<RangeSpec>,
) -> anyhow::Result<ExitCode> {
    // `-o -` is standard output, as for most tools.
    let output = output.filter(|path| path != Path::new("-"));
    if json && output.is_none() {
        bail!("--json needs -o FILE: standard output is for the JSON report");
    }
    let progress: Arc<dyn Progress> = Arc::new(Bars::new(!json));
    let target = match &output {
        Some(path) => Output::File(path.clone()),
        None => Output::Stdout,
    };
    let report = client.get_range(&what, target, range, progress).await?;
    for skipped in &report.skipped {
        note(json, &format!("skipped: {skipped}"));
    }
    if !json {
        print_details(&report.skipped.details());
    }
    for warning in &report.warnings {
        note(json, &format!("warning: {warning}"));
    }
    let transfers: Vec<_> = report
        .moved
        .iter()
        .map(|t| {
            format!(
                "{} transferred its copy to {}{}",
                t.from,
                t.to,
                if t.recorded {
                    "; the file list records it"
                } else {
                    ""
                }
            )
        })
        .collect();
    if output.is_some() || json {
        emit(json, &report, || {
            let mut text = format!(
                "got {} ({}) from {}",
                report.blob,
                bytes(report.size),
                report.relay
            );
            for transfer in &transfers {
                text.push_str(&format!("\n  {transfer}"));
            }
            text
        });
    } else {
        // The data went to standard output: the rest goes beside it.
        for transfer in &transfers {
            note(json, transfer);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A file as `ls --json` lists it: the client's entry, and how current it
/// is (fields added, none changed, so scripts reading the list go on).
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    file: &'a FileInfo,
    /// Whether the list is this device's own, no relay having answered.
    stale: bool,
    /// When the list was last current with the relays (Unix seconds):
    /// now, or the last sync when stale; null if it never synced.
    as_of: Option<u64>,
}

pub(super) async fn ls(mut client: Client, json: bool) -> anyhow::Result<ExitCode> {
    let listing = client.list().await?;
    let as_of = match &listing.offline {
        Some(offline) => {
            warn_offline("the file list", offline);
            offline.synced_at
        }
        None => Some(unix_now()),
    };
    let files = &listing.files;
    let rows: Vec<Listed<'_>> = files
        .iter()
        .map(|file| Listed {
            file,
            stale: listing.offline.is_some(),
            as_of,
        })
        .collect();
    emit(json, &rows, || {
        if files.is_empty() {
            return "nothing stored yet: `cairn put FILE`".into();
        }
        files
            .iter()
            .map(|f| {
                format!(
                    "{:>10}  {:>8}  {}{}",
                    bytes(f.size),
                    count(f.copies.len() as u64, "copy", "copies"),
                    f.name,
                    if f.transferred.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "  ({} moved since stored: transferred or repaired)",
                            count(f.transferred.len() as u64, "copy", "copies")
                        )
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn export(
    mut client: Client,
    json: bool,
    dir: PathBuf,
) -> anyhow::Result<ExitCode> {
    let progress: Arc<dyn Progress> = Arc::new(Bars::new(!json));
    let report = client.export(&dir, progress).await?;
    emit(json, &report, || {
        let mut text = format!(
            "exported {} ({}) into {}",
            count(report.files.len() as u64, "file", "files"),
            bytes(report.bytes),
            report.dir.display()
        );
        for file in report.files.iter().filter(|f| f.escaped) {
            text.push_str(&format!(
                "\n  {:?} is not a safe path: written as {}",
                file.name,
                file.path.display()
            ));
        }
        for failure in &report.failed {
            text.push_str(&format!(
                "\n  not exported: {}: {}",
                failure.name, failure.error
            ));
        }
        text
    });
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) async fn mv(
    mut client: Client,
    json: bool,
    from: String,
    to: String,
) -> anyhow::Result<ExitCode> {
    client.rename(&from, &to).await?;
    emit(json, &json!({ "from": from, "to": to }), || {
        format!("renamed {from} to {to}")
    });
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn rm(mut client: Client, json: bool, name: String) -> anyhow::Result<ExitCode> {
    let report = client.remove(&name).await?;
    emit(json, &report, || {
        let mut text = format!("removed {}", report.name);
        for url in &report.deleted {
            text.push_str(&format!("\n  deleted copy on {url}"));
        }
        for why in &report.left {
            text.push_str(&format!("\n  left copy on {why}"));
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

/// `cairn config`: shows the settings, after changing those given.
pub(super) async fn config(
    mut client: Client,
    json: bool,
    replicas: Option<usize>,
) -> anyhow::Result<ExitCode> {
    if let Some(replicas) = replicas {
        client.set_replicas(replicas)?;
    }
    let value = json!({ "replicas": client.replicas(), "home": client.home().path() });
    emit(json, &value, || format!("replicas: {}", client.replicas()));
    Ok(ExitCode::SUCCESS)
}
