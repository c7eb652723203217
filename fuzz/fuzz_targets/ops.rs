//! Random layer stacks and operation sequences, run on the reference model
//! and on a `MergedView`: any difference in a result, an error or the
//! visible tree is a crash.
//!
//! The input is decoded by `layerstack::testing::Scenario::from_bytes`;
//! `cargo test` runs the same body over `fuzz/corpus/ops/`
//! (`tests/it/fuzz_corpus.rs`).
//!
//! Run: `cargo fuzz run ops --sanitizer none` (stable toolchain).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(divergence) = layerstack::testing::check_ops_bytes(data) {
        panic!("{divergence}");
    }
});
