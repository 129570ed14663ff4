//! One function per command: get secrets, call the client, render. The
//! commands are grouped by what they act on, and [`run`] is the one place
//! that sends each to its function.

mod audit;
mod files;
mod folder_pass;
mod folder_watch;
mod folders;
mod identity;
mod relays;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use cairn_client::relay::Transport;
use cairn_client::{Client, Home, KdfCost};

use crate::secrets;
use crate::{Args, Command, DeviceCommand, Global};

/// For tests only: a cheaper scrypt cost for key files (log2 N). Weakens
/// them; never set it for real keys.
const KDF_COST_ENV: &str = "CAIRN_INSECURE_KDF_COST";

/// Runs one command. Most report failure as an error; `doctor`, `audit`,
/// `repair`, `relay check` and `relay rotate` report their findings either
/// way and exit 1 when something needs attention.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args { global, command } = args;
    let json = global.json;
    match command {
        // These need no home and no runtime.
        Command::Inspect { record } => crate::inspect::inspect(&record, json),
        Command::Completions { shell } => crate::manuals::completions(shell),
        Command::Man { dir } => crate::manuals::man(dir.as_deref(), json),
        Command::Demo { no_wait } => crate::demo::run(!no_wait),
        // A new identity, in a home that must not exist yet.
        Command::Init {
            name,
            recover,
            relay,
        } => with_home(global, |ctx| {
            identity::init(ctx, json, name, recover, relay)
        }),
        Command::Device(DeviceCommand::Join { relay, name, wait }) => {
            with_home(global, |ctx| identity::join(ctx, json, relay, name, wait))
        }
        // Checks its code before it opens the identity.
        Command::Device(DeviceCommand::Approve {
            code,
            wait,
            root_key,
        }) => with_home(global, |ctx| {
            identity::approve(ctx, json, code, wait, root_key)
        }),
        // The rest open this device's identity first.
        Command::Device(DeviceCommand::List) => {
            with_client(global, |client| identity::devices(client, json))
        }
        Command::Device(DeviceCommand::Revoke { device, root_key }) => {
            with_client(global, |client| {
                identity::revoke(client, json, device, root_key)
            })
        }
        Command::Key(command) => with_client(global, |client| identity::key(client, json, command)),
        Command::Relay(command) => {
            with_client(global, |client| relays::relay(client, json, command))
        }
        Command::Doctor => with_client(global, |client| async move {
            crate::doctor::doctor(&client, json).await
        }),
        Command::Put { files: paths, name } => {
            with_client(global, |client| files::put(client, json, paths, name))
        }
        Command::Get {
            what,
            output,
            range,
        } => with_client(global, |client| {
            files::get(client, json, what, output, range)
        }),
        Command::Ls => with_client(global, |client| files::ls(client, json)),
        Command::Export { dir } => with_client(global, |client| files::export(client, json, dir)),
        Command::Mv { from, to } => with_client(global, |client| files::mv(client, json, from, to)),
        Command::Rm { name } => with_client(global, |client| files::rm(client, json, name)),
        Command::Config { replicas } => {
            with_client(global, |client| files::config(client, json, replicas))
        }
        Command::Sync {
            watch: true,
            rounds,
        } => with_client_unheld(global, |client| sync::sync(client, json, true, rounds)),
        Command::Sync { watch, rounds } => {
            with_client(global, |client| sync::sync(client, json, watch, rounds))
        }
        Command::Status => with_client(global, |client| sync::status(client, json)),
        Command::Folder(command @ crate::FolderCommand::Watch { .. }) => {
            with_client_unheld(global, |client| folders::folder(client, json, command))
        }
        Command::Folder(command) => {
            with_client(global, |client| folders::folder(client, json, command))
        }
        Command::Audit { sample, chunks } => with_client(global, |client| {
            audit::audit(client, json, sample, usize::from(chunks))
        }),
        Command::Repair {
            replace_unreachable,
        } => with_client(global, |client| {
            audit::repair(client, json, replace_unreachable)
        }),
    }
}

/// What every command gets besides its own arguments.
struct Ctx {
    home: Home,
    /// Whether plain http may reach relays off this machine (`--insecure`).
    transport: Transport,
}

/// Runs `command` to its end on a new runtime, with the home and transport
/// the global flags name.
fn with_home<F>(global: Global, command: impl FnOnce(Ctx) -> F) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    let home = Home::at(home_dir(global.home)?);
    let transport = if global.insecure {
        Transport::Insecure
    } else {
        Transport::Secure
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(command(Ctx { home, transport }))
}

/// [`with_home`], for a command on this device's identity: it is opened
/// (asking for the passphrase) before `command` starts.
fn with_client<F>(global: Global, command: impl FnOnce(Client) -> F) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    let json = global.json;
    with_home(global, |ctx| async move {
        let client = open(ctx)?;
        let _held = hold(&client, json).await?;
        command(client).await
    })
}

/// [`with_client`] for the commands that run until stopped (`sync
/// --watch`, `folder watch`): they take the home for each round, not for
/// their whole run, so other commands get their turn between.
fn with_client_unheld<F>(
    global: Global,
    command: impl FnOnce(Client) -> F,
) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    with_home(global, |ctx| async move { command(open(ctx)?).await })
}

/// Takes `client`'s home for this process, saying so when another cairn
/// process holds it (a `folder watch` in the middle of a pass, say).
pub(crate) async fn hold(client: &Client, json: bool) -> anyhow::Result<cairn_client::HomeLock> {
    let home = client.home().clone();
    if let Some(held) = home.try_lock()? {
        return Ok(held);
    }
    crate::output::note(
        json,
        &format!(
            "waiting for another cairn command using {} to finish",
            home.path().display()
        ),
    );
    Ok(tokio::task::spawn_blocking(move || home.lock()).await??)
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
