//! libFuzzer entry point; the body is `cairn_fuzz::text::key_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::text::key_text(data));
