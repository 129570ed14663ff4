//! `cairn-sim SCENARIO.toml`: runs a scenario, or a sweep of one, and
//! prints what it found.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line report and its errors"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cairn_sim::chart::{self, Panel, Point};
use cairn_sim::sweep::{Plan, Sweep};
use cairn_sim::{Report, Scenario};
use clap::Parser;

/// Simulates files kept on cairn relays over months or years: relays that
/// fail, vanish or drop data, devices that come and go, retention and
/// repair, with the client's own decisions (cairn-policy). Prints the
/// annual loss per file. A scenario with a [sweep] table runs once per
/// value and prints a table, as in docs/DURABILITY.md.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The scenario (TOML; see scenarios/ in the repository).
    scenario: PathBuf,
    /// Write the results into this directory (created if need be): for
    /// one run `daily.csv` and `daily.svg`, for a sweep `sweep.csv` and
    /// `sweep.svg`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Threads to run devices on (the result is the same for any number);
    /// all cores by default.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = match Plan::load(&args.scenario) {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("cairn-sim: {err}");
            return ExitCode::from(2);
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let files = match plan {
        Plan::One(scenario) => one(&scenario, threads),
        Plan::Sweep(sweep) => swept(&sweep, threads),
    };
    let Some(dir) = args.out else {
        return ExitCode::SUCCESS;
    };
    match write_all(&dir, &files) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cairn-sim: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one scenario; returns the files `--out` writes.
fn one(scenario: &Scenario, threads: usize) -> Vec<(&'static str, String)> {
    let started = Instant::now();
    let report = cairn_sim::simulate_on(scenario, threads);
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
        "lost {} files; annual loss per file {}; {} copies made by repairs; {:.1} s",
        last.lost,
        loss(&report),
        last.repaired,
        started.elapsed().as_secs_f64()
    );
    let days: Vec<String> = report.days.iter().map(|d| d.day.to_string()).collect();
    let panel = |title: &str, of: fn(&cairn_sim::Day) -> u64| Panel {
        title: title.to_owned(),
        log: false,
        points: report
            .days
            .iter()
            .map(|d| Point {
                value: of(d) as f64,
                bound: false,
            })
            .collect(),
    };
    let svg = chart::draw(
        "One run, day by day",
        "day",
        &days,
        &[
            panel("files lost so far", |d| d.lost),
            panel("copies made by repairs so far", |d| d.repaired),
            panel("relays gone so far", |d| d.relays_gone),
        ],
    );
    vec![("daily.csv", report.csv()), ("daily.svg", svg)]
}

/// Runs every value of a sweep, printing a row as each ends; returns the
/// files `--out` writes.
fn swept(sweep: &Sweep, threads: usize) -> Vec<(&'static str, String)> {
    println!(
        "| {} | files | file-years | relays gone | files lost | annual loss per file | repair copies per file-year |",
        sweep.field
    );
    println!("|---|---|---|---|---|---|---|");
    let mut csv = format!(
        "{},files,file_years,relays_gone,lost,annual_loss,upper_95,repairs_per_file_year,\
         refused_puts,transferred_bytes,stuck_hours,utilization_p50,utilization_p90,\
         utilization_max,contributors,free_riders\n",
        sweep.field
    );
    let mut reports = Vec::with_capacity(sweep.runs.len());
    let started = Instant::now();
    for (value, scenario) in &sweep.runs {
        let report = cairn_sim::simulate_on(scenario, threads);
        let last = report.last();
        println!(
            "| {value} | {} | {:.0} | {} | {} | {} | {:.3} |",
            last.files,
            report.file_years,
            last.relays_gone,
            last.lost,
            loss(&report),
            report.repairs_per_file_year()
        );
        let [p50, p90, max] = last.utilization;
        let [contributors, free_riders] = last.by_class;
        csv.push_str(&format!(
            "{value},{},{:.1},{},{},{:e},{:e},{:.4},{},{},{},{p50},{p90},{max},{contributors},{free_riders}\n",
            last.files,
            report.file_years,
            last.relays_gone,
            last.lost,
            report.annual_loss(),
            upper_95(&report),
            report.repairs_per_file_year(),
            last.refused_puts,
            last.transferred,
            last.stuck_hours,
        ));
        reports.push(report);
    }
    eprintln!(
        "{} runs in {:.1} s",
        sweep.runs.len(),
        started.elapsed().as_secs_f64()
    );
    let relays_matter = sweep
        .runs
        .iter()
        .any(|(_, s)| s.federation.peers > 0 || s.relays.small_share > 0.0);
    if relays_matter {
        relay_table(sweep, &reports);
    }
    let xs: Vec<String> = sweep.runs.iter().map(|(v, _)| v.clone()).collect();
    let svg = chart::draw(
        &format!("Sweep of {}", sweep.field),
        &sweep.field,
        &xs,
        &[
            Panel {
                title: "annual loss per file (hollow: none seen, 95% bound)".to_owned(),
                log: true,
                points: reports
                    .iter()
                    .map(|r| Point {
                        value: if r.last().lost > 0 {
                            r.annual_loss()
                        } else {
                            upper_95(r)
                        },
                        bound: r.last().lost == 0,
                    })
                    .collect(),
            },
            Panel {
                title: "copies made by repairs per file-year".to_owned(),
                log: false,
                points: reports
                    .iter()
                    .map(|r| Point {
                        value: r.repairs_per_file_year(),
                        bound: false,
                    })
                    .collect(),
            },
        ],
    );
    vec![("sweep.csv", csv), ("sweep.svg", svg)]
}

/// How the relays fared in each run of a sweep, at the end: a second
/// table, for sweeps of capacities and transfers.
fn relay_table(sweep: &Sweep, reports: &[Report]) {
    println!();
    println!(
        "| {} | puts refused | GiB transferred | hours stuck over high water | utilization median / 90th / fullest (‰) | mean, relays taking transfers (‰) | mean, free riders (‰) |",
        sweep.field
    );
    println!("|---|---|---|---|---|---|---|");
    for ((value, _), report) in sweep.runs.iter().zip(reports) {
        let last = report.last();
        let [p50, p90, max] = last.utilization;
        let [contributors, free_riders] = last.by_class;
        println!(
            "| {value} | {} | {} | {} | {p50} / {p90} / {max} | {contributors} | {free_riders} |",
            last.refused_puts,
            last.transferred >> 30,
            last.stuck_hours,
        );
    }
}

/// The annual loss per file as the tables show it: the rate, or when
/// nothing was lost the bound the run sets.
fn loss(report: &Report) -> String {
    if report.last().lost == 0 && report.file_years > 0.0 {
        format!("0 (below {:.1e} at 95%)", upper_95(report))
    } else {
        format!("{:.2e}", report.annual_loss())
    }
}

/// With no loss in N file-years, the rate is below 3/N at 95%
/// confidence (the rule of three).
fn upper_95(report: &Report) -> f64 {
    if report.last().lost == 0 && report.file_years > 0.0 {
        3.0 / report.file_years
    } else {
        report.annual_loss()
    }
}

fn write_all(dir: &Path, files: &[(&str, String)]) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    for (name, body) in files {
        let path = dir.join(name);
        std::fs::write(&path, body)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
