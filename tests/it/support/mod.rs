//! Helpers several test modules share, compiled once. Each is used by only
//! some modules, and which of those are built depends on the features, so
//! what a build leaves unused is not an error.
#![allow(dead_code)]

#[cfg(feature = "proptest")]
pub mod child;
#[cfg(feature = "proptest")]
pub mod harness;
#[cfg(feature = "proptest")]
pub mod legacy_names;
#[cfg(feature = "proptest")]
pub mod tools;
