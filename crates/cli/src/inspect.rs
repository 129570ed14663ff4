//! `cairn inspect`: decode a signed record, verify it, show its fields.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use cairn_client::proto::{
    AuthToken, DeviceCertificate, HeadRecord, IdentityLogEntry, RecordKind, RelayInfo, Revocation,
    SignedRecord, TransferReceipt, VerifyError,
};

pub(crate) fn inspect(source: &str, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = read_source(source)?;
    let record = parse_record(&bytes)
        .context("not a cairn signed record (expected base64url text or raw envelope bytes)")?;
    let outcome = describe(&record);
    let out = if json {
        serde_json::json!({
            "kind": record.kind().name(),
            "signer": record.signer().to_string(),
            "payload_len": record.payload().len(),
            "valid": outcome.is_ok(),
            "record": outcome.as_ref().ok(),
            "error": outcome.as_ref().err().map(ToString::to_string),
        })
        .to_string()
    } else {
        let verdict = match &outcome {
            Ok(fields) => format!("signature valid\n{fields}"),
            Err(err) => format!("INVALID: {err}"),
        };
        format!(
            "kind:    {}\nsigner:  {}\npayload: {}\n{verdict}",
            record.kind(),
            record.signer(),
            crate::output::count(record.payload().len() as u64, "byte", "bytes")
        )
    };
    crate::output::out_line(&out);
    Ok(if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_source(source: &str) -> anyhow::Result<Vec<u8>> {
    if source == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        Ok(buf)
    } else if let Some(path) = source.strip_prefix('@') {
        std::fs::read(path).with_context(|| format!("reading {path}"))
    } else {
        Ok(source.as_bytes().to_vec())
    }
}

/// Accepts base64url text (surrounding whitespace ignored) or raw bytes.
fn parse_record(bytes: &[u8]) -> anyhow::Result<SignedRecord> {
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(record) = SignedRecord::from_base64url(text.trim())
    {
        return Ok(record);
    }
    Ok(SignedRecord::from_bytes(bytes)?)
}

/// Verifies the record as its claimed kind and renders its fields.
fn describe(record: &SignedRecord) -> Result<String, VerifyError> {
    fn show<R: cairn_client::proto::Record + std::fmt::Debug>(
        record: &SignedRecord,
    ) -> Result<String, VerifyError> {
        Ok(format!("{:#?}", record.verify::<R>()?.record()))
    }
    match record.kind() {
        RecordKind::DeviceCertificate => show::<DeviceCertificate>(record),
        RecordKind::Revocation => show::<Revocation>(record),
        RecordKind::IdentityLogEntry => show::<IdentityLogEntry>(record),
        RecordKind::Head => show::<HeadRecord>(record),
        RecordKind::RelayInfo => show::<RelayInfo>(record),
        RecordKind::AuthToken => show::<AuthToken>(record),
        RecordKind::TransferReceipt => show::<TransferReceipt>(record),
        RecordKind::Operation => show::<cairn_client::proto::Operation>(record),
        _ => Ok(String::from("(a record kind this build cannot display)")),
    }
}
