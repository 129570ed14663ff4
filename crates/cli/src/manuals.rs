//! `cairn completions` and `cairn man`: shell completions and manual pages,
//! generated from the same argument definitions the parser uses, so they
//! cannot fall out of step with it.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::Args;

/// Writes the completion script for `shell` to standard output.
pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = Args::command();
    // Into memory first: the generator panics on a write error (a closed
    // pipe), where this reports it.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "cairn", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completions")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `cairn(1)` to standard output, or, with `dir`, one page per
/// command into it (`cairn.1`, `cairn-put.1`, `cairn-relay-add.1`, …).
pub(crate) fn man(dir: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let command = Args::command();
    let Some(dir) = dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(command)
            .render(&mut out)
            .context("cannot write the manual page")?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let written = write_pages(command, "cairn", dir)?;
    let report = serde_json::json!({ "dir": dir, "pages": written });
    crate::output::emit(json, &report, || {
        format!(
            "wrote {} to {}",
            crate::output::count(written as u64, "manual page", "manual pages"),
            dir.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `command`, named `name`, and those of its
/// subcommands; returns how many were written.
fn write_pages(command: clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let command = command.display_name(name.to_owned());
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .context("cannot render a manual page")?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        written += write_pages(sub.clone(), &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
