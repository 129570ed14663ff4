//! One function per command: get secrets, call the client, render.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use std::time::Duration;

use cairn_client::relay::{Transport, check_transport};
use cairn_client::{Client, Home, InitOptions, KdfCost, Output, PairingCode, Progress};
use serde_json::json;

use crate::output::{bytes, duration, emit, emit_line, note};
use crate::progress::Bars;
use crate::secrets;
use crate::{Args, Command, DeviceCommand, KeyCommand, RelayCommand};

/// For tests only: a cheaper scrypt cost for key files (log2 N). Weakens
/// them; never set it for real keys.
const KDF_COST_ENV: &str = "CAIRN_INSECURE_KDF_COST";

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.global.json;
    if let Command::Inspect { record } = &args.command {
        return crate::inspect::inspect(record, json);
    }
    if let Command::Completions { shell } = args.command {
        return crate::manuals::completions(shell);
    }
    if let Command::Man { dir } = &args.command {
        return crate::manuals::man(dir.as_deref(), json);
    }
    if let Command::Demo { no_wait } = args.command {
        return crate::demo::run(!no_wait);
    }
    let home = Home::at(home_dir(args.global.home)?);
    let transport = if args.global.insecure {
        Transport::Insecure
    } else {
        Transport::Secure
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(dispatch(args.command, Ctx { home, transport }, json))
}

/// What every command gets besides its own arguments.
struct Ctx {
    home: Home,
    /// Whether plain http may reach relays off this machine (`--insecure`).
    transport: Transport,
}

fn home_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    directories::ProjectDirs::from("", "", "cairn")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .context("cannot find a home directory: pass --home DIR or set CAIRN_HOME")
}

fn kdf_cost() -> anyhow::Result<KdfCost> {
    match std::env::var(KDF_COST_ENV) {
        Ok(text) => {
            let log_n: u8 = text
                .parse()
                .with_context(|| format!("{KDF_COST_ENV} must be a number"))?;
            Ok(KdfCost::new(log_n)?)
        }
        Err(_) => Ok(KdfCost::DEFAULT),
    }
}

fn open(ctx: Ctx) -> anyhow::Result<Client> {
    let Ctx { home, transport } = ctx;
    home.exists()
        .then_some(())
        .ok_or_else(|| cairn_client::Error::NoHome {
            path: home.path().to_path_buf(),
        })?;
    let mut client = Client::open(home, &secrets::passphrase()?)?;
    client.set_kdf_cost(kdf_cost()?);
    client.set_transport(transport);
    Ok(client)
}

/// Runs one command. Most report failure as an error; `relay check`
/// reports its findings either way and exits 1 when a relay failed.
async fn dispatch(command: Command, home: Ctx, json: bool) -> anyhow::Result<ExitCode> {
    if let Command::Relay(command) = command {
        return relay(open(home)?, json, command).await;
    }
    if let Command::Repair {
        replace_unreachable,
    } = command
    {
        return repair(open(home)?, json, replace_unreachable).await;
    }
    if let Command::Doctor = command {
        return crate::doctor::doctor(&open(home)?, json).await;
    }
    if let Command::Audit { sample, chunks } = command {
        return audit(open(home)?, json, sample, usize::from(chunks)).await;
    }
    dispatch_simple(command, home, json)
        .await
        .map(|()| ExitCode::SUCCESS)
}

async fn dispatch_simple(command: Command, home: Ctx, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Init {
            name,
            recover,
            relay,
        } => init(home, json, name, recover, relay).await,
        Command::Key(command) => key(open(home)?, json, command).await,
        Command::Put { files, name } => put(open(home)?, json, &files, name).await,
        Command::Get { what, output } => get(open(home)?, json, &what, output).await,
        Command::Ls => ls(open(home)?, json).await,
        Command::Mv { from, to } => {
            open(home)?.rename(&from, &to).await?;
            emit(json, &json!({ "from": from, "to": to }), || {
                format!("renamed {from} to {to}")
            });
            Ok(())
        }
        Command::Sync { watch, rounds } => sync(open(home)?, json, watch, rounds).await,
        Command::Status => status(open(home)?, json).await,
        Command::Rm { name } => {
            let report = open(home)?.remove(&name).await?;
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
            Ok(())
        }
        Command::Device(DeviceCommand::List) => devices(open(home)?, json).await,
        Command::Device(DeviceCommand::Join { relay, name, wait }) => {
            join(home, json, &relay, name, wait).await
        }
        Command::Device(DeviceCommand::Approve {
            code,
            wait,
            root_key,
        }) => {
            let code = PairingCode::parse(&code)?;
            let mut client = open(home)?;
            use_root_file(&mut client, root_key.as_deref())?;
            let enrolled = client.approve(&code, Duration::from_secs(wait)).await?;
            for warning in &enrolled.warnings {
                note(json, &format!("warning: {warning}"));
            }
            emit(json, &enrolled, || {
                format!("enrolled {} ({})", enrolled.name, enrolled.device)
            });
            Ok(())
        }
        Command::Device(DeviceCommand::Revoke { device, root_key }) => {
            let mut client = open(home)?;
            use_root_file(&mut client, root_key.as_deref())?;
            let revoked = client.revoke(&device).await?;
            for warning in &revoked.warnings {
                note(json, &format!("warning: {warning}"));
            }
            emit(json, &revoked, || {
                format!(
                    "revoked {} ({}); new data is sealed to vault key generation {}",
                    revoked.name, revoked.device, revoked.generation
                )
            });
            Ok(())
        }
        Command::Config { replicas } => {
            let mut client = open(home)?;
            if let Some(replicas) = replicas {
                client.set_replicas(replicas)?;
            }
            let value = json!({ "replicas": client.replicas(), "home": client.home().path() });
            emit(json, &value, || format!("replicas: {}", client.replicas()));
            Ok(())
        }
        Command::Inspect { .. }
        | Command::Demo { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Doctor
        | Command::Relay(_)
        | Command::Audit { .. }
        | Command::Repair { .. } => Ok(()),
    }
}

/// Refuses to overwrite an identity; the options for a new one.
fn new_home(home: &Home, device_name: String, transport: Transport) -> anyhow::Result<InitOptions> {
    if home.exists() {
        bail!(cairn_client::Error::HomeExists {
            path: home.path().to_path_buf()
        });
    }
    Ok(InitOptions {
        device_name,
        cost: kdf_cost()?,
        transport,
    })
}

fn use_root_file(client: &mut Client, path: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = path {
        client
            .use_root_file(path, &secrets::passphrase()?)
            .with_context(|| format!("opening the root key in {}", path.display()))?;
    }
    Ok(())
}

async fn join(ctx: Ctx, json: bool, relay: &str, name: String, wait: u64) -> anyhow::Result<()> {
    let Ctx { home, transport } = ctx;
    let options = new_home(&home, name, transport)?;
    // Before the passphrase is asked for and anything is sent.
    check_transport(relay, transport)?;
    let passphrase = secrets::new_passphrase()?;
    let show = |code: &PairingCode| {
        // Shown at once, while the command goes on waiting.
        emit_line(json, &json!({ "code": code.to_string() }), || {
            format!(
                "pairing code: {code}\non a device that holds the root key, run:\n  cairn device \
                 approve {code}\nwaiting for approval…"
            )
        });
    };
    let client = Client::join(
        home,
        &passphrase,
        &options,
        relay,
        Duration::from_secs(wait),
        show,
    )
    .await?;
    let value = json!({
        "root": client.root_key().to_string(),
        "device": client.device_key().to_string(),
        "home": client.home().path(),
        "relays": client.relays().entries().len(),
    });
    emit(json, &value, || {
        format!(
            "joined identity {} as {}; {} relay(s) in the set",
            client.root_key(),
            client.device_name(),
            client.relays().entries().len()
        )
    });
    Ok(())
}

async fn init(
    ctx: Ctx,
    json: bool,
    name: String,
    recover: bool,
    relay: Option<String>,
) -> anyhow::Result<()> {
    let Ctx { home, transport } = ctx;
    let options = new_home(&home, name, transport)?;
    if recover {
        let relay = relay.context("--recover needs --relay URL")?;
        // Before the phrase and passphrase are asked for.
        check_transport(&relay, transport)?;
        let phrase = secrets::recovery_phrase()?;
        let passphrase = secrets::new_passphrase()?;
        let client = Client::recover(home, &passphrase, &options, &phrase, &relay).await?;
        let value = json!({
            "root": client.root_key().to_string(),
            "device": client.device_key().to_string(),
            "home": client.home().path(),
            "devices": client.identity().state().devices().len(),
        });
        emit(json, &value, || {
            format!(
                "recovered identity {}\nthis device ({}) is enrolled; {} device(s) in total \
                 (`cairn device list`)",
                client.root_key(),
                client.device_name(),
                client.identity().state().devices().len()
            )
        });
        return Ok(());
    }
    let passphrase = secrets::new_passphrase()?;
    let (client, phrase) = Client::init(home, &passphrase, &options)?;
    let value = json!({
        "root": client.root_key().to_string(),
        "device": client.device_key().to_string(),
        "home": client.home().path(),
        "recovery_phrase": phrase.as_str(),
    });
    emit(json, &value, || {
        let words: Vec<_> = phrase.split(' ').collect();
        let mut grid = String::new();
        for (row, chunk) in words.chunks(6).enumerate() {
            for (col, word) in chunk.iter().enumerate() {
                grid.push_str(&format!("{:>2}. {word:<10}", row * 6 + col + 1));
            }
            grid.push('\n');
        }
        format!(
            "created identity {}\nhome: {}\n\nRecovery phrase: write these 24 words down and \
             keep them offline. They restore\nyour identity and all your data if every device \
             is lost; anyone who has them\ncontrols your identity.\n\n{grid}\nNext: add \
             relays with `cairn relay add URL`.",
            client.root_key(),
            client.home().path().display()
        )
    });
    Ok(())
}

async fn key(mut client: Client, json: bool, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::ExportVault { file } => {
            let generations = client.export_vault(&file)?;
            emit(
                json,
                &json!({ "file": file, "generations": generations }),
                || {
                    format!(
                        "wrote {generations} vault key generation(s) to {}\ndecrypt a blob with: \
                         age -d -i {} BLOB | head -c SIZE",
                        file.display(),
                        file.display()
                    )
                },
            );
        }
        KeyCommand::ExportRoot { file } => {
            client.export_root(&file, &secrets::passphrase()?)?;
            emit(json, &json!({ "file": file }), || {
                format!(
                    "wrote the root key to {} (sealed with your passphrase)",
                    file.display()
                )
            });
        }
        KeyCommand::ForgetRoot { yes } => {
            if !yes {
                bail!(
                    "this deletes the root key from this device; export it first (`cairn key \
                     export-root FILE`) or make sure you have the recovery phrase, then run \
                     again with --yes"
                );
            }
            client.forget_root()?;
            emit(json, &json!({ "forgotten": true }), || {
                "the root key is no longer on this device".into()
            });
        }
        KeyCommand::Rotate { root_key } => {
            use_root_file(&mut client, root_key.as_deref())?;
            let rotated = client.rotate_vault_key().await?;
            for warning in &rotated.warnings {
                note(json, &format!("warning: {warning}"));
            }
            emit(json, &rotated, || {
                format!(
                    "new data is sealed to vault key generation {}, and each relay holds the \
                     identity in a mailbox of its own; your other devices follow at their next \
                     sync",
                    rotated.generation
                )
            });
        }
        KeyCommand::Phrase => {
            let phrase = client.recovery_phrase()?;
            emit(json, &json!({ "recovery_phrase": phrase.as_str() }), || {
                phrase.to_string()
            });
        }
    }
    Ok(())
}

async fn relay(mut client: Client, json: bool, command: RelayCommand) -> anyhow::Result<ExitCode> {
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
                    "moved {} file(s) from {} to {}",
                    report.moved.len(),
                    report.from,
                    report.to
                );
                for failed in &report.failed {
                    text.push_str(&format!("\n  NOT MOVED {failed}"));
                }
                if report.removed {
                    text.push_str(&format!(
                        "\n  deleted {} copies there; {} left your relay set",
                        report.deleted, report.from
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
                                    format!("  pow {} bits", info.pow_bits)
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
    let mut text = format!("\n      copies of {} file(s) made here", copies.listed);
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
            "\n      and {} more transfer(s) (--json lists them all)",
            copies.transfers.len() - TRANSFERS_SHOWN
        ));
    }
    for failure in copies.failed.iter().take(TRANSFERS_SHOWN) {
        text.push_str(&format!("\n      failed {failure}"));
    }
    text
}

async fn put(
    mut client: Client,
    json: bool,
    files: &[PathBuf],
    name: Option<String>,
) -> anyhow::Result<()> {
    let progress: Arc<dyn Progress> = Arc::new(Bars::new(!json));
    let reports = match files {
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
            for file in files {
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
                format!(
                    "stored {} ({}) as {} on {} relay(s):\n  {}",
                    report.name,
                    bytes(report.size),
                    report.blob,
                    report.copies.len(),
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
    Ok(())
}

fn file_name(file: &Path) -> anyhow::Result<String> {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name; pass --name NAME", file.display()))
}

async fn get(
    mut client: Client,
    json: bool,
    what: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    if json && output.is_none() {
        bail!("--json needs -o FILE: standard output is for the JSON report");
    }
    let progress: Arc<dyn Progress> = Arc::new(Bars::new(!json));
    let target = match &output {
        Some(path) => Output::File(path.clone()),
        None => Output::Stdout,
    };
    let report = client.get(what, target, progress).await?;
    for skipped in &report.skipped {
        note(json, &format!("skipped {skipped}"));
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
    Ok(())
}

async fn sync(
    mut client: Client,
    json: bool,
    watch: bool,
    rounds: Option<u64>,
) -> anyhow::Result<()> {
    if !watch {
        let report = client.sync().await?;
        emit(json, &report, || sync_summary(&report));
        return Ok(());
    }
    // Poll with backoff: quick after a change, up to a minute when idle.
    let mut wait = Duration::from_secs(2);
    let mut round = 0;
    // Repair on the first round, then well within the shortest retention.
    let mut next_repair = std::time::Instant::now();
    loop {
        round += 1;
        if std::time::Instant::now() >= next_repair {
            watch_repair(&mut client, json).await;
            next_repair = std::time::Instant::now() + repair_interval(&client).await;
        }
        match client.sync().await {
            Ok(report) => {
                let changed = report.merged > 0 || !report.findings.is_empty();
                if changed || round == 1 {
                    emit_line(json, &report, || sync_summary(&report));
                }
                wait = if changed {
                    Duration::from_secs(2)
                } else {
                    (wait * 2).min(Duration::from_secs(60))
                };
            }
            Err(err) => {
                note(
                    json,
                    &format!("sync failed: {err}; retrying in {} s", wait.as_secs()),
                );
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
        if rounds.is_some_and(|n| round >= n) {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One repair pass inside `sync --watch`: reported when it did or found
/// something, noted when it failed.
async fn watch_repair(client: &mut Client, json: bool) {
    match client.repair(false).await {
        Ok(report) if !report.restored.is_empty() || !report.short.is_empty() => {
            emit_line(json, &serde_json::json!({ "repair": &report }), || {
                repair_summary(&report)
            });
        }
        Ok(_) => {}
        Err(err) => note(json, &format!("repair failed: {err}; tried again later")),
    }
}

/// How long until the next repair: a quarter of the shortest retention the
/// relays disclose (so every copy's retention is renewed three times over),
/// between a minute and six hours.
async fn repair_interval(client: &Client) -> Duration {
    let quarter = client
        .shortest_retention()
        .await
        .map_or(6 * 3600, |r| r / 4);
    Duration::from_secs(quarter.clamp(60, 6 * 3600))
}

fn sync_summary(report: &cairn_client::SyncReport) -> String {
    let reachable = report.relays.iter().filter(|r| r.reachable).count();
    let mut text = format!(
        "synced: {} operation(s) merged, {} file(s), {} of {} relay(s) answered",
        report.merged,
        report.files,
        reachable,
        report.relays.len()
    );
    if report.claimed > 0 {
        text.push_str(&format!(
            "\n  claimed {} copies your other devices stored: they stay until this device \
             deletes them too",
            report.claimed
        ));
    }
    if report.claims_pending > 0 {
        text.push_str(&format!(
            "\n  {} more to claim at the next sync",
            report.claims_pending
        ));
    }
    for device in &report.revoked {
        text.push_str(&format!(
            "\n  device {} ({}) was revoked: new files are sealed to vault generation {}, \
             which it cannot open",
            device.name, device.device, report.vault_generation
        ));
    }
    for relay in report.relays.iter().filter(|r| !r.reachable) {
        text.push_str(&format!(
            "\n  unreachable {}: {}",
            relay.url,
            relay.error.as_deref().unwrap_or("")
        ));
    }
    for finding in &report.findings {
        text.push_str(&format!(
            "\n  WARNING {}: {}",
            finding.kind,
            finding_text(finding)
        ));
    }
    text
}

fn finding_text(finding: &cairn_client::Finding) -> String {
    let mut parts = Vec::new();
    if let Some(relay) = &finding.relay {
        parts.push(format!("relay {relay}"));
    }
    if let Some(device) = &finding.device {
        parts.push(format!("device {device}"));
    }
    parts.push(finding.detail.clone());
    parts.join(", ")
}

async fn status(mut client: Client, json: bool) -> anyhow::Result<()> {
    let report = client.sync().await?;
    let findings = client.findings()?;
    let value = json!({ "sync": report, "findings": findings });
    emit(json, &value, || {
        let mut text = String::from("relays:\n");
        for relay in &report.relays {
            text.push_str(&format!(
                "  {} {}  {} head(s){}{}\n",
                if relay.reachable { "ok  " } else { "DOWN" },
                relay.url,
                relay.heads,
                if relay.republished > 0 {
                    format!(", {} re-sent", relay.republished)
                } else {
                    String::new()
                },
                relay
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        text.push_str("devices:\n");
        for device in &report.devices {
            text.push_str(&format!(
                "  {} {:<16} up to operation {}  {}\n",
                if device.this_device { "*" } else { " " },
                device.name.as_deref().unwrap_or("(not enrolled)"),
                device.seq,
                device.device
            ));
        }
        text.push_str(&format!("files: {}\n", report.files));
        if findings.is_empty() {
            text.push_str("no problems found");
        } else {
            text.push_str("findings (newest last):");
            for finding in &findings {
                text.push_str(&format!("\n  {}: {}", finding.kind, finding_text(finding)));
            }
        }
        text
    });
    Ok(())
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
    if let Some((kind, _, what)) = &record.last_misbehaviour {
        let verdict = if flagged { "FLAGGED" } else { "earlier" };
        text.push_str(&format!(
            "\n      {verdict}: {} ({what})",
            format!("{kind:?}").to_lowercase()
        ));
    }
    text
}

fn repair_summary(report: &cairn_client::RepairReport) -> String {
    let mut text = format!(
        "repair: checked {} copies of {} files: {} healthy, {} copies replaced ({:.1} s)",
        report.copies_checked,
        report.files,
        report.healthy,
        report.restored.len(),
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
        "\nmetadata: {} copies a new device needs, across the relays (identity log, snapshot, \
         operations): {} renewed, {} restored",
        metadata.blobs, metadata.renewed, metadata.restored
    ));
    for failed in &metadata.failed {
        text.push_str(&format!("\n  NOT KEPT {failed}"));
    }
    for short in &report.short {
        text.push_str(&format!("\n  SHORT {short}"));
    }
    for u in &report.unreachable {
        text.push_str(&format!("\n  unreachable: {u}"));
    }
    if !report.unreachable.is_empty() && !report.short.is_empty() {
        text.push_str(
            "\n  (copies on relays that do not answer are kept, in case they come back; if one \
             is gone for good, `cairn repair --replace-unreachable` makes new copies elsewhere)",
        );
    }
    text
}

/// `cairn repair`: the report either way; exit 1 when a file is left short
/// of good copies.
async fn repair(
    mut client: Client,
    json: bool,
    replace_unreachable: bool,
) -> anyhow::Result<ExitCode> {
    let report = client.repair(replace_unreachable).await?;
    emit(json, &report, || repair_summary(&report));
    Ok(if report.short.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cairn audit`: the report either way; exit 1 when a relay failed to
/// produce a copy, so scripts can act.
async fn audit(
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
            "audited {} copies of {} files ({} of proofs, {:.1} s)",
            report.copies,
            report.files,
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

async fn ls(mut client: Client, json: bool) -> anyhow::Result<()> {
    let files = client.list().await?;
    emit(json, &files, || {
        if files.is_empty() {
            return "nothing stored yet: `cairn put FILE`".into();
        }
        files
            .iter()
            .map(|f| {
                format!(
                    "{:>10}  {} copies  {}{}",
                    bytes(f.size),
                    f.copies.len(),
                    f.name,
                    if f.transferred.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "  ({} moved since stored: transferred or repaired)",
                            f.transferred.len()
                        )
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

async fn devices(mut client: Client, json: bool) -> anyhow::Result<()> {
    let _ = client.refresh_identity().await;
    let me = client.device_key();
    let state = client.identity().state();
    let devices: Vec<_> = state
        .devices()
        .values()
        .map(|d| {
            json!({
                "name": d.name.as_str(),
                "key": d.key.to_string(),
                "enrolled": d.created.0,
                "this_device": d.key == me,
            })
        })
        .collect();
    let value = json!({
        "root": state.root().to_string(),
        "devices": devices,
        "revoked": state.revoked().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "vault_generation": state.vault().map(|v| v.generation),
    });
    emit(json, &value, || {
        let mut text = String::new();
        for d in state.devices().values() {
            text.push_str(&format!(
                "{} {}  {}\n",
                if d.key == me { "*" } else { " " },
                d.name.as_str(),
                d.key
            ));
        }
        text.push_str(&format!(
            "vault key generation {}, {} revoked device(s)",
            state.vault().map_or(0, |v| v.generation),
            state.revoked().len()
        ));
        text
    });
    Ok(())
}
