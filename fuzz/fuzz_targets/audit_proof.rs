//! libFuzzer entry point; the body is `cairn_fuzz::audit::audit_proof`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::audit::audit_proof(data));
