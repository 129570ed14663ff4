//! libFuzzer entry point; the body is `cairn_fuzz::records::identity_log`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::records::identity_log(data));
