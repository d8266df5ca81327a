#![no_main]
//! See `deskhand_fuzz::harness::pair_request`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| deskhand_fuzz::harness::pair_request(data));
