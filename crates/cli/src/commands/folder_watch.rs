//! `cairn folder watch`: keeps every attached folder in sync, passing when
//! files settle after a change here, and when the relays' heads say
//! another device wrote.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::{Client, Progress, Silent};
use notify::{RecursiveMode, Watcher as _};
use serde_json::json;
use tokio::sync::mpsc;

use crate::output::{emit_line, note, note_failure};

/// How a watch is paced.
pub(super) struct Pace {
    /// Quiet time after the last change here before a pass, so that a file
    /// still being written is not taken half way.
    pub settle: Duration,
    /// How often the relays are asked whether another device wrote (one
    /// request per relay when nothing changed).
    pub poll: Duration,
    /// Stop after this many passes (for scripts and tests).
    pub passes: Option<u64>,
}

/// Whether a file-system event concerns what a folder carries (not its
/// staging directory or marker, which passes write themselves).
fn relevant(event: &notify::Event) -> bool {
    event.paths.iter().any(|path| {
        !path
            .components()
            .any(|c| c.as_os_str() == ".cairn-tmp" || c.as_os_str() == ".cairn-folder")
    })
}

pub(super) async fn watch(mut client: Client, json: bool, pace: Pace) -> anyhow::Result<ExitCode> {
    let roots: Vec<PathBuf> = client
        .folder_status(None)?
        .into_iter()
        .map(|s| s.root)
        .collect();
    if roots.is_empty() {
        anyhow::bail!("no folder is attached here: `cairn folder add DIR` attaches one");
    }
    let (tx, mut changes) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| relevant(&e)) {
            let _ = tx.send(());
        }
    })?;
    for root in &roots {
        if let Err(err) = watcher.watch(root, RecursiveMode::Recursive) {
            // Too many directories for the kernel's watch limit, or the
            // root is gone (a paused folder): polling still finds changes.
            note(
                json,
                &format!(
                    "not watching {} for changes ({err}); it is read every {} s instead",
                    root.display(),
                    pace.poll.as_secs()
                ),
            );
        }
    }
    let progress: Arc<dyn Progress> = Arc::new(Silent);
    let mut passes = 0u64;
    // The first pass runs at once.
    let mut due = Some(Instant::now());
    let mut next_poll = Instant::now() + pace.poll;
    loop {
        let wake = due.map_or(next_poll, |d| d.min(next_poll));
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            Some(()) = changes.recv() => {
                // Another change: the quiet time starts again.
                due = Some(Instant::now() + pace.settle);
                continue;
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let now = Instant::now();
        if due.is_none_or(|d| d > now) {
            if now < next_poll {
                continue;
            }
            next_poll = now + pace.poll;
            if due.is_some() {
                // A pass comes once changes here settle; it takes what
                // other devices wrote too.
                continue;
            }
            // A poll: pass only when another device wrote.
            let held = super::hold(&client, json).await?;
            let polled = client.sync().await;
            drop(held);
            match polled {
                Ok(report) if report.merged > 0 => {}
                Ok(_) => continue,
                Err(err) => {
                    note_failure(
                        json,
                        &format!("sync failed: {err}; retried in {} s", pace.poll.as_secs()),
                        &err,
                    );
                    continue;
                }
            }
        }
        due = None;
        let held = super::hold(&client, json).await?;
        let results = client.folder_sync(None, false, progress.clone()).await;
        drop(held);
        passes += 1;
        // What a pass wrote here shows as events; one more pass after the
        // quiet time settles them (and takes any edit made meanwhile).
        let mut wrote_meanwhile = false;
        while changes.try_recv().is_ok() {
            wrote_meanwhile = true;
        }
        if wrote_meanwhile {
            due = Some(Instant::now() + pace.settle);
        }
        match results {
            Ok(results) => {
                for result in results {
                    report(json, result);
                }
            }
            Err(err) => note_failure(
                json,
                &format!("folder sync failed: {err}; retried on the next change or poll"),
                &err,
            ),
        }
        if pace.passes.is_some_and(|n| passes >= n) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Prints what a pass did, when it did or found something.
fn report(json: bool, result: cairn_client::Result<cairn_client::FolderPass>) {
    match result {
        Ok(pass) => {
            let moved = pass.sent
                + pass.relisted
                + pass.published
                + pass.fetched
                + pass.moved_here
                + pass.deleted_here
                + pass.made;
            if moved > 0 || !pass.converged || !pass.conflicts.is_empty() {
                emit_line(json, &pass, || {
                    format!(
                        "folder {:?}\n{}",
                        pass.name,
                        super::folder_pass::pass_summary(&pass)
                    )
                });
            }
        }
        Err(err) => emit_line(json, &json!({ "error": err.to_string() }), || {
            err.to_string()
        }),
    }
}
