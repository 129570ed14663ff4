//! `cairn-sim SCENARIO.toml`: runs a scenario and prints what it found.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line report and its errors"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Simulates files kept on cairn relays over months or years: relays that
/// fail or vanish, devices that come and go, retention and repair, with the
/// client's own decisions (cairn-policy). Prints the annual loss per file;
/// with --out, writes the day-by-day counts as CSV.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The scenario (TOML; see scenarios/ in the repository).
    scenario: PathBuf,
    /// Write `daily.csv` into this directory (created if need be).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenario = match cairn_sim::Scenario::load(&args.scenario) {
        Ok(scenario) => scenario,
        Err(err) => {
            eprintln!("cairn-sim: {err}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let report = cairn_sim::simulate(&scenario);
    let last = report.last();
    println!(
        "{} days, {} relays ({} gone), {} clients, {} files, {:.0} file-years",
        scenario.days,
        scenario.relays.count,
        last.relays_gone,
        scenario.clients.count,
        last.files,
        report.file_years
    );
    println!(
        "lost {} files; annual loss per file {:.2e}{}; {} copies made by repairs; {:.1} s",
        last.lost,
        report.annual_loss(),
        if last.lost == 0 && report.file_years > 0.0 {
            format!(" (none seen: below {:.1e} at 95%)", 3.0 / report.file_years)
        } else {
            String::new()
        },
        last.repaired,
        started.elapsed().as_secs_f64()
    );
    if let Some(dir) = args.out {
        let path = dir.join("daily.csv");
        if let Err(err) =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, report.csv()))
        {
            eprintln!("cairn-sim: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
