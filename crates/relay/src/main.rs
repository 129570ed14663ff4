//! `cairn-relay`: the daemon an operator runs.
//!
//! Parses flags, environment and config file into a [`RelayConfig`] (flag,
//! then `CAIRN_RELAY_*` environment variable, then config file, then
//! default; each setting is declared once, in [`Settings`]), runs the relay
//! until SIGTERM or Ctrl-C, and exits 0 after a graceful shutdown.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use cairn_relay::{ConfigError, RelayConfig, Settings};
use clap::{Args, Parser, Subcommand};

/// A cairn relay: stores, serves and replicates end-to-end encrypted blobs
/// for clients that choose it. It has no accounts and never sees plaintext.
///
/// With no command, runs `serve` with its defaults (listen on
/// 127.0.0.1:7070, keep data in ./cairn-data), which the `CAIRN_RELAY_*`
/// environment variables change as they change `serve`.
#[derive(Debug, Parser)]
#[command(name = "cairn-relay", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay until SIGTERM or Ctrl-C.
    ///
    /// Every option can also be set by a `CAIRN_RELAY_*` environment
    /// variable or a key in the TOML config file; a flag wins over the
    /// environment, which wins over the file, which wins over the default.
    Serve(Box<Settings>),
    /// Check every blob file against its id and the index against the
    /// files. Run it while the relay is stopped.
    ///
    /// Exits 0 when the store is consistent (or was repaired), 1 when
    /// problems were found and not repaired.
    Fsck {
        /// The relay's data directory.
        #[arg(long, env = "CAIRN_RELAY_DATA", default_value = RelayConfig::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// Make the index agree with the verified files: remove corrupt and
        /// stray files, index valid files it lacks, drop entries without a
        /// file, recompute totals.
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move this relay's data to another storage backend (embedded ↔
    /// PostgreSQL + S3), verified. Stop the relay first.
    ///
    /// Every blob is hashed against its id on the way out and read back
    /// from the destination; owners, sources and access times carry over,
    /// so retention does too; heads, forwarding records and the identity
    /// key follow. The source is only read: if the migration stops, run it
    /// again and it resumes. Then start the relay with the new config.
    ///
    /// Exits 0 when everything was copied, 1 when some blobs in the source
    /// were corrupt (they are listed, and not copied).
    Migrate(MigrateArgs),
}

#[derive(Debug, Default, Args)]
struct MigrateArgs {
    /// Config file of the relay as it is now (the same keys as `serve
    /// --config`; a file with just `data = "cairn-data"` for the default
    /// embedded store).
    #[arg(long)]
    from: PathBuf,
    /// Config file of the relay as it will be: another data directory, or
    /// `postgres` and `s3_*` keys for the scale-out backends.
    #[arg(long)]
    to: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // No command is `serve` with no flags; parsed as such, so that the
    // CAIRN_RELAY_* variables apply to it too.
    let command = match cli.command {
        Some(command) => command,
        None => Cli::parse_from(["cairn-relay", "serve"])
            .command
            .context("`serve` parses as a command")?,
    };
    match command {
        Command::Serve(settings) => {
            let config = settings.resolve()?;
            config.validate()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck { data, repair, json } => fsck(&data, repair, json),
        Command::Migrate(args) => migrate(&args),
    }
}

/// Prints a command's report on standard output.
#[allow(clippy::print_stdout, reason = "the command's report")]
fn print_out(out: &str) {
    println!("{out}");
}

fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = |path: &Path| -> anyhow::Result<RelayConfig> {
        let config = Settings {
            config: Some(path.to_path_buf()),
            ..Settings::default()
        }
        .resolve()?;
        // A migration serves nothing: the rule about serving plain HTTP,
        // which validate checks last, does not apply.
        match config.validate() {
            Ok(()) | Err(ConfigError::PlainHttpExposed { .. }) => Ok(config),
            Err(e) => Err(e.into()),
        }
    };
    let (from, to) = (config(&args.from)?, config(&args.to)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut progress = |r: &cairn_relay::MigrationReport| {
        tracing::info!(
            copied = r.blobs_copied,
            bytes = r.bytes_copied,
            already_there = r.blobs_present,
            "migrating"
        );
    };
    let report = runtime
        .block_on(cairn_relay::migrate(&from, &to, &mut progress))
        .context("migration stopped (the source is unchanged; run again to resume)")?;
    let out = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut text = format!(
            "copied and verified {} blobs ({} bytes); {} were there already; {} heads, \
             {} forwarding records",
            report.blobs_copied,
            report.bytes_copied,
            report.blobs_present,
            report.heads,
            report.forwards
        );
        for id in &report.corrupt_in_source {
            text.push_str(&format!("\ncorrupt in the source, not copied: {id}"));
        }
        text
    };
    print_out(&out);
    Ok(if report.corrupt_in_source.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(config: RelayConfig) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives while the relay starts must
    // still mean "stop gracefully", not the default "die at once".
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let data = config.data_dir.clone();
    let relay = cairn_relay::start(config)
        .await
        .with_context(|| format!("starting the relay with data in {}", data.display()))?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    relay.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn fsck(data: &Path, repair: bool, json: bool) -> anyhow::Result<ExitCode> {
    if data.join("relay.key").exists()
        && !data.join("index.redb").exists()
        && !data.join("blobs").exists()
    {
        bail!(
            "{} holds no embedded store: a scale-out relay keeps its index in PostgreSQL and its \
             blobs in S3, which keep their own integrity (docs/OPERATING.md, \"Scale-out\"); \
             to check every byte, `cairn-relay migrate` into a fresh data directory and fsck that",
            data.display()
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = cairn_relay::fsck(data, repair, now).with_context(|| {
        format!(
            "checking {} (is the relay still running? stop it first)",
            data.display()
        )
    })?;
    let out = if json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut lines = vec![format!(
            "checked {} files ({} bytes); index lists {} blobs",
            report.files_checked, report.bytes_checked, report.indexed
        )];
        for (label, list) in [
            ("corrupt (bytes do not match id)", &report.corrupt),
            ("stray (not a blob file)", &report.stray),
            ("orphan (valid, not indexed)", &report.orphans),
            ("missing (indexed, no file)", &report.missing),
            ("wrong size in index", &report.wrong_size),
        ] {
            if !list.is_empty() {
                lines.push(format!("{label}: {}", list.len()));
                lines.extend(list.iter().map(|x| format!("  {x}")));
            }
        }
        lines.push(if report.is_clean() {
            "store is consistent".to_owned()
        } else if report.repaired {
            "repaired".to_owned()
        } else {
            "problems found; run again with --repair to fix the index".to_owned()
        });
        lines.join("\n")
    };
    print_out(&out);
    Ok(if report.is_clean() || report.repaired {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
