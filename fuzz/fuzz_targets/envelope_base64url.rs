//! libFuzzer entry point; the body is `cairn_fuzz::records::envelope_base64url`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::records::envelope_base64url(data));
