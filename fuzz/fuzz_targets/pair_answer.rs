#![no_main]
//! See `deskhand_fuzz::harness::pair_answer`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| deskhand_fuzz::harness::pair_answer(data));
