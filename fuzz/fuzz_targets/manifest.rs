//! libFuzzer entry point; the body is `cairn_fuzz::client::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::client::manifest(data));
