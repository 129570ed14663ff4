//! Synced folders: `folder add`, `ls`, `sync`, `status`, `versions`,
//! `restore`, `detach`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use cairn_client::folder::civil;
use cairn_client::{Client, FolderPass, Progress};
use serde_json::json;

use super::folder_pass::pass_summary;
use crate::FolderCommand;
use crate::output::{bytes, count, duration, emit, unix_now};
use crate::progress::Bars;

pub(super) async fn folder(
    mut client: Client,
    json: bool,
    command: FolderCommand,
) -> anyhow::Result<ExitCode> {
    let progress: Arc<dyn Progress> = Arc::new(Bars::new(!json));
    match command {
        FolderCommand::Add { dir, name } => {
            let pass = client.folder_add(&dir, name.as_deref(), progress).await?;
            emit(json, &pass, || {
                format!(
                    "folder {:?} attached at {}\n{}",
                    pass.name,
                    std::fs::canonicalize(&dir).unwrap_or(dir.clone()).display(),
                    pass_summary(&pass)
                )
            });
            Ok(exit_for(&pass))
        }
        FolderCommand::Ls => {
            let folders = client.folder_list().await?;
            emit(json, &folders, || {
                if folders.is_empty() {
                    return "no synced folders (`cairn folder add DIR` shares one)".into();
                }
                folders
                    .iter()
                    .map(|f| {
                        format!(
                            "{:<24} {:>8} {:>10}  {}",
                            f.name,
                            count(f.files as u64, "file", "files"),
                            bytes(f.bytes),
                            f.root.as_ref().map_or_else(
                                || "not attached here".to_owned(),
                                |r| r.display().to_string()
                            )
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(ExitCode::SUCCESS)
        }
        FolderCommand::Sync {
            name,
            allow_deletes,
        } => {
            let passes = client
                .folder_sync(name.as_deref(), allow_deletes, progress)
                .await?;
            if passes.is_empty() {
                bail!("no folder is attached here: `cairn folder add DIR` attaches one");
            }
            let mut attention = false;
            let mut docs = Vec::new();
            let mut lines = Vec::new();
            for pass in passes {
                match pass {
                    Ok(pass) => {
                        attention |= exit_for(&pass) != ExitCode::SUCCESS;
                        lines.push(format!("folder {:?}\n{}", pass.name, pass_summary(&pass)));
                        docs.push(serde_json::to_value(&pass).unwrap_or_default());
                    }
                    Err(err) => {
                        attention = true;
                        lines.push(format!("{err}"));
                        docs.push(json!({ "error": err.to_string() }));
                    }
                }
            }
            emit(json, &json!({ "folders": docs }), || lines.join("\n"));
            Ok(if attention {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        FolderCommand::Status { name } => {
            let all = client.folder_status(name.as_deref())?;
            emit(json, &all, || {
                if all.is_empty() {
                    return "no folder is attached here (`cairn folder add DIR`)".into();
                }
                let now = unix_now();
                all.iter()
                    .map(|s| {
                        let mut text = format!("folder {:?} at {}", s.name, s.root.display());
                        if let Some(why) = &s.paused {
                            text.push_str(&format!("\n  PAUSED: {why}"));
                        }
                        text.push_str(&format!(
                            "\n  pending here: {}; pending from other devices (as of the last \
                             sync): {}",
                            s.pending_here, s.pending_there
                        ));
                        text.push_str(&match s.converged_at {
                            Some(at) => format!(
                                "\n  last converged {} ago",
                                duration(now.saturating_sub(at))
                            ),
                            None => "\n  never converged".into(),
                        });
                        if s.held_deletes > 0 {
                            text.push_str(&format!(
                                "\n  {} held back as a mass deletion: `cairn folder sync {:?} \
                                 --allow-deletes` applies them",
                                count(s.held_deletes as u64, "deletion", "deletions"),
                                s.name
                            ));
                        }
                        for conflict in s.conflicts.iter().rev().take(10) {
                            text.push_str(&format!("\n  conflict copy: {conflict}"));
                        }
                        for problem in &s.problems {
                            text.push_str(&format!("\n  problem: {problem}"));
                        }
                        text
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(
                if all.iter().any(|s| s.paused.is_some() || s.held_deletes > 0) {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        FolderCommand::Versions { path, folder } => {
            let (folder, rel) = locate(&client, &path, folder)?;
            let versions = client.folder_versions(&folder, &rel).await?;
            emit(json, &versions, || {
                if versions.is_empty() {
                    return format!("{rel}: no file versions kept");
                }
                let mut lines = vec![format!("{folder}:{rel}")];
                lines.extend(versions.iter().map(|v| {
                    format!(
                        "  {}  {:>10}  by {}{}",
                        utc(v.written_at),
                        bytes(v.size),
                        v.device,
                        match v.replaced_at {
                            None => "  (current)".to_owned(),
                            Some(until) => format!(", replaced {}", utc(until)),
                        }
                    )
                }));
                lines.join("\n")
            });
            Ok(ExitCode::SUCCESS)
        }
        FolderCommand::Restore {
            path,
            folder,
            at,
            output,
        } => {
            let (folder, rel) = locate(&client, &path, folder)?;
            let at = at.as_deref().map(parse_time).transpose()?;
            let restored = client
                .folder_restore(&folder, &rel, at, output.as_deref(), progress)
                .await?;
            emit(json, &restored, || {
                format!(
                    "restored the version of {} written {} by {} to {}",
                    rel,
                    utc(restored.version.written_at),
                    restored.version.device,
                    restored.to.display()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        FolderCommand::Watch {
            settle,
            poll,
            passes,
        } => {
            let pace = super::folder_watch::Pace {
                settle: std::time::Duration::from_secs(settle),
                poll: std::time::Duration::from_secs(poll.max(1)),
                passes,
            };
            super::folder_watch::watch(client, json, pace).await
        }
        FolderCommand::Detach { name } => {
            let root = client.folder_detach(&name)?;
            emit(json, &json!({ "detached": name, "root": root }), || {
                format!(
                    "folder {name:?} detached; its files stay in {} and in the vault",
                    root.display()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The folder and path inside it that a command names.
fn locate(
    client: &Client,
    path: &Path,
    folder: Option<String>,
) -> anyhow::Result<(String, String)> {
    match folder {
        Some(folder) => {
            let rel = path
                .to_str()
                .context("the path is not UTF-8")?
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned();
            Ok((folder, rel))
        }
        None => Ok(client.folder_locate(path)?),
    }
}

/// Exit 1 when a pass needs attention: something not done, deletions held.
fn exit_for(pass: &FolderPass) -> ExitCode {
    if pass.converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for Unix seconds.
fn utc(secs: u64) -> String {
    let ((y, mo, d), (h, mi, s)) = civil::split(i64::try_from(secs).unwrap_or(i64::MAX));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Unix seconds, or `YYYY-MM-DD[THH:MM[:SS]]` in UTC.
fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let bad = || {
        anyhow::anyhow!(
            "{text:?} is not a time: give Unix seconds or YYYY-MM-DD[THH:MM[:SS]] (UTC)"
        )
    };
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00:00"));
    let date: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let time: Vec<i64> = time
        .trim_end_matches('Z')
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let ([y, m, d], [hh, mm, rest @ ..]) = (date.as_slice(), time.as_slice()) else {
        return Err(bad());
    };
    let ss = rest.first().copied().unwrap_or(0);
    if !(1..=12).contains(m) || !(1..=31).contains(d) || *hh > 23 || *mm > 59 || ss > 60 {
        return Err(bad());
    }
    let secs = civil::to_days(*y, *m, *d) * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_parse_as_utc_and_print_back() {
        assert_eq!(parse_time("1796601600").unwrap(), 1_796_601_600);
        assert_eq!(parse_time("2026-12-07").unwrap(), 1_796_601_600);
        assert_eq!(parse_time("2026-12-07T01:02:03Z").unwrap(), 1_796_605_323);
        assert_eq!(utc(1_796_605_323), "2026-12-07 01:02:03 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        for bad in ["yesterday", "2026-13-01", "2026-12-07T25:00", "2026-12"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
