//! libFuzzer entry point; the body is `cairn_fuzz::records::auth_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::records::auth_token(data));
