//! libFuzzer entry point; the body is `cairn_fuzz::relay_http::relay_http`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::relay_http::relay_http(data));
