#![no_main]
//! See `deskhand_fuzz::harness::catalog`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| deskhand_fuzz::harness::catalog(data));
