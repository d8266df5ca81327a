#![no_main]
//! See `deskhand_fuzz::harness::qr_payload`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| deskhand_fuzz::harness::qr_payload(data));
