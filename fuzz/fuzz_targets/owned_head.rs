//! libFuzzer entry point; the body is `cairn_fuzz::records::owned_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::records::owned_head(data));
