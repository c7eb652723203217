//! The integration tests: one binary, so a change links once, with one
//! module per area, each built when the features it needs are on. Shared
//! helpers are in `support/`. The crash and kernel tests re-execute this
//! binary to run their child processes (`crash::crash_child`,
//! `kernel::kernel_child`).
//!
//! `cargo test --all-features --release` runs them all;
//! `cargo test --all-features --release --test it kernel::` one area.

mod support;

mod concurrency;
#[cfg(feature = "proptest")]
mod conformance;
#[cfg(all(feature = "proptest", feature = "crash-points"))]
mod crash;
#[cfg(feature = "proptest")]
mod dir_layer;
#[cfg(feature = "oci")]
mod examples;
#[cfg(feature = "proptest")]
mod fuzz_corpus;
#[cfg(all(feature = "proptest", feature = "oci"))]
mod fuzz_corpus_disk;
mod handles;
#[cfg(all(feature = "proptest", feature = "oci"))]
mod hostile;
#[cfg(feature = "proptest")]
mod kernel;
#[cfg(feature = "mount")]
mod mount;
#[cfg(all(feature = "proptest", feature = "oci"))]
mod oci;
mod semantics;
#[cfg(feature = "proptest")]
mod state_machine;
