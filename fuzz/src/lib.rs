//! The bodies of cairn's fuzz targets, one function per target.
//!
//! Each binary in `fuzz_targets/` hands libFuzzer's input to the function of
//! the same name. Keeping the bodies here lets the workspace's tests run
//! every target over its committed corpus (`fuzz/corpus/<target>/`) and over
//! mutations of it on every `cargo test`, with no fuzzing toolchain: CI
//! replays what the campaigns found, and a change that breaks a decoder on
//! any of it fails there.
//!
//! A target panics (through an assertion) when it finds a bug; it returns
//! normally for every input that is merely invalid.

pub mod audit;
pub mod client;
pub mod reconcile;
pub mod records;
pub mod relay_http;
pub mod text;

#[cfg(test)]
mod replay;

/// A fuzz target's name and body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[Target] = &[
    ("audit_proof", audit::audit_proof),
    ("auth_token", records::auth_token),
    ("batch_header", records::batch_header),
    ("blob_id_text", text::blob_id_text),
    ("device_certificate", records::device_certificate),
    ("envelope", records::envelope),
    ("envelope_base64url", records::envelope_base64url),
    ("head", records::head),
    ("identity_log", records::identity_log),
    ("identity_log_entry", records::identity_log_entry),
    ("key_text", text::key_text),
    ("log_copy", client::log_copy),
    ("manifest", client::manifest),
    ("operation", records::operation),
    ("owned_head", records::owned_head),
    ("pairing_code", client::pairing_code),
    ("pairing_messages", client::pairing_messages),
    ("reconcile_message", reconcile::reconcile_message),
    ("relay_copy", client::relay_copy),
    ("relay_http", relay_http::relay_http),
    ("relay_info", records::relay_info),
    ("revocation", records::revocation),
    ("sealed_blob", client::sealed_blob),
    ("sync_json", client::sync_json),
    ("transfer_receipt", records::transfer_receipt),
];
