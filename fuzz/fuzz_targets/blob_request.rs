#![no_main]
//! See `deskhand_fuzz::harness::blob_request`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| deskhand_fuzz::harness::blob_request(data));
