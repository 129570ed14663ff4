//! libFuzzer entry point; the body is `cairn_fuzz::text::blob_id_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::text::blob_id_text(data));
