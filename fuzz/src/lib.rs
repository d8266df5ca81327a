//! Deskhand's fuzz targets: the functions in [`harness`], each fed by one libFuzzer target in
//! `fuzz_targets/`. The same file is compiled into deskhand-core's `fuzz_regressions` test, which
//! runs every kept input (`fuzz/seeds/`, `fuzz/regressions/`) in the normal test suite.

#[path = "harness.rs"]
pub mod harness;
