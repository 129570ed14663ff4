//! libFuzzer entry point; the body is `cairn_fuzz::reconcile::reconcile_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::reconcile::reconcile_message(data));
