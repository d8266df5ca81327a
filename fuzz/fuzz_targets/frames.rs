#![no_main]
//! See `deskhand_fuzz::harness::frames`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| deskhand_fuzz::harness::frames(data));
