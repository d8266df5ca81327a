#![no_main]
//! See `deskhand_fuzz::harness::sync_message`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| deskhand_fuzz::harness::sync_message(data));
