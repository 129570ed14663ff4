//! libFuzzer entry point; the body is `cairn_fuzz::records::batch_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::records::batch_header(data));
