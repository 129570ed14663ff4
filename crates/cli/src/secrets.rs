//! Asking for passphrases and recovery phrases: from the environment for
//! scripts, from the terminal (without echo) for people.

use anyhow::{Context as _, bail};
use cairn_client::Passphrase;

/// Variable scripts set instead of typing the passphrase.
pub(crate) const PASSPHRASE_ENV: &str = "CAIRN_PASSPHRASE";
/// Variable scripts set instead of typing the recovery phrase.
pub(crate) const PHRASE_ENV: &str = "CAIRN_RECOVERY_PHRASE";

/// The passphrase that unlocks this home's key files.
pub(crate) fn passphrase() -> anyhow::Result<Passphrase> {
    if let Ok(text) = std::env::var(PASSPHRASE_ENV) {
        return Ok(Passphrase::new(text));
    }
    let text = rpassword::prompt_password("cairn passphrase: ").with_context(|| {
        format!("cannot read a passphrase: no terminal (set {PASSPHRASE_ENV} for scripts)")
    })?;
    Ok(Passphrase::new(text))
}

/// A new passphrase, typed twice.
pub(crate) fn new_passphrase() -> anyhow::Result<Passphrase> {
    if let Ok(text) = std::env::var(PASSPHRASE_ENV) {
        if text.is_empty() {
            bail!("{PASSPHRASE_ENV} is empty: key files need a passphrase");
        }
        return Ok(Passphrase::new(text));
    }
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).with_context(|| {
            format!("cannot read a passphrase: no terminal (set {PASSPHRASE_ENV} for scripts)")
        })
    };
    let first = read("new passphrase for your key files: ")?;
    if first.is_empty() {
        bail!("key files need a passphrase");
    }
    if read("again: ")? != first {
        bail!("the two passphrases differ; nothing was changed");
    }
    Ok(Passphrase::new(first))
}

/// The 24-word recovery phrase.
pub(crate) fn recovery_phrase() -> anyhow::Result<String> {
    if let Ok(text) = std::env::var(PHRASE_ENV) {
        return Ok(text);
    }
    rpassword::prompt_password("recovery phrase (24 words): ").with_context(|| {
        format!("cannot read the recovery phrase: no terminal (set {PHRASE_ENV} for scripts)")
    })
}
