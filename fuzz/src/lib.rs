//! Deskhand's fuzz targets: the functions in [`harness`] and [`blob_harness`], each fed by one
//! libFuzzer target in `fuzz_targets/`. The same files are compiled into deskhand-core's
//! `fuzz_regressions` test and deskhand-sync's `blob_fuzz_regressions` test, which run every
//! kept input (`fuzz/seeds/`, `fuzz/regressions/`) in the normal test suite.

#[path = "harness.rs"]
pub mod harness;

#[cfg(feature = "net")]
#[path = "blob_harness.rs"]
pub mod blob_harness;
