//! Random layer stacks and operation sequences, as the `ops` target
//! decodes them, with the layers written to disk as `DirLayer`s under a
//! fresh disk upper: any difference from the model in a result, an error
//! or the visible tree is a crash.
//!
//! The body is `layerstack::testing::fuzz::dir_ops`; `cargo test` runs it
//! over `fuzz/corpus/dir_ops/` (`tests/it/fuzz_corpus_disk.rs`).
//!
//! Run: `cargo fuzz run dir_ops --sanitizer none` (stable toolchain).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(divergence) = layerstack::testing::fuzz::dir_ops(data) {
        panic!("{divergence}");
    }
});
