#![no_main]
//! See `deskhand_fuzz::blob_harness::blob_protocol`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| deskhand_fuzz::blob_harness::blob_protocol(data));
