//! The identity and its devices: `init`, `key`, `device`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_client::relay::{Transport, check_transport};
use cairn_client::{Client, Home, InitOptions, PairingCode};
use serde_json::json;

use super::{Ctx, kdf_cost, open};
use crate::KeyCommand;
use crate::output::{count, emit, emit_line, note, unix_now, warn, warn_offline};
use crate::secrets;

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

pub(super) async fn init(
    ctx: Ctx,
    json: bool,
    name: String,
    recover: bool,
    relay: Option<String>,
) -> anyhow::Result<ExitCode> {
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
                "recovered identity {}\nthis device ({}) is enrolled; {} in total (`cairn \
                 device list`)",
                client.root_key(),
                client.device_name(),
                count(
                    client.identity().state().devices().len() as u64,
                    "device",
                    "devices"
                )
            )
        });
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn join(
    ctx: Ctx,
    json: bool,
    relay: String,
    name: String,
    wait: u64,
) -> anyhow::Result<ExitCode> {
    let Ctx { home, transport } = ctx;
    let options = new_home(&home, name, transport)?;
    // Before the passphrase is asked for and anything is sent.
    check_transport(&relay, transport)?;
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
        &relay,
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
            "joined identity {} as {}; {} in the set",
            client.root_key(),
            client.device_name(),
            count(client.relays().entries().len() as u64, "relay", "relays")
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn key(
    mut client: Client,
    json: bool,
    command: KeyCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::ExportVault { file } => {
            let generations = client.export_vault(&file)?;
            emit(
                json,
                &json!({ "file": file, "generations": generations }),
                || {
                    format!(
                        "wrote {} to {}\ndecrypt a blob with: age -d -i {} BLOB | head -c SIZE",
                        count(
                            generations as u64,
                            "vault key generation",
                            "vault key generations"
                        ),
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
    Ok(ExitCode::SUCCESS)
}

/// Checks the code before the identity is opened (and the passphrase asked
/// for).
pub(super) async fn approve(
    ctx: Ctx,
    json: bool,
    code: String,
    wait: u64,
    root_key: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let code = PairingCode::parse(&code)?;
    let mut client = open(ctx)?;
    use_root_file(&mut client, root_key.as_deref())?;
    let enrolled = client.approve(&code, Duration::from_secs(wait)).await?;
    for warning in &enrolled.warnings {
        note(json, &format!("warning: {warning}"));
    }
    emit(json, &enrolled, || {
        format!("enrolled {} ({})", enrolled.name, enrolled.device)
    });
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn revoke(
    mut client: Client,
    json: bool,
    device: String,
    root_key: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn devices(mut client: Client, json: bool) -> anyhow::Result<ExitCode> {
    // The list is this device's copy of the identity log, brought up to
    // date when a relay answers; without one it is shown anyway, said to
    // be as old as it is.
    let (stale, as_of) = match client.update_identity().await {
        Ok(None) => (false, Some(unix_now())),
        Ok(Some(offline)) => {
            warn_offline("the device list", &offline);
            (true, offline.synced_at)
        }
        Err(err) => {
            warn(
                &format!("the device list may be out of date: {err}"),
                &err.details(),
            );
            (true, client.synced_at()?)
        }
    };
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
        "stale": stale,
        "as_of": as_of,
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
            "vault key generation {}, {} revoked",
            state.vault().map_or(0, |v| v.generation),
            count(state.revoked().len() as u64, "device", "devices")
        ));
        text
    });
    Ok(ExitCode::SUCCESS)
}
