//! Any bytes as a layer tar (plain, gzip or zstd): import never panics; an
//! imported layer survives export and import unchanged; flattening the same
//! bytes into a directory never panics and, when both succeed, writes what
//! the model flattens the imported layer to.
//!
//! The body is `layerstack::testing::fuzz::tar_import`; `cargo test` runs
//! it over `fuzz/corpus/tar_import/` (`tests/it/fuzz_corpus_disk.rs`).
//!
//! Run: `cargo fuzz run tar_import --sanitizer none` (stable toolchain).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = layerstack::testing::fuzz::tar_import(data) {
        panic!("{failure}");
    }
});
