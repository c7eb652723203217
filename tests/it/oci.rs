//! The OCI feature end to end: layers through tar and back, into disk
//! layers, and against umoci and skopeo. CI installs both; without them
//! (or without root) those tests print `SKIP <test>: <reason>` and pass,
//! unless `LAYERSTACK_REQUIRE_TOOLS` (or `LAYERSTACK_REQUIRE_ROOT`) is set.

mod analyze;
mod build;
mod build_peer;
mod dir_layer;
mod docker_save;
mod dockerfile;
mod interop;
mod lazy;
mod names;
mod round_trip;
mod run;
mod tar_diff;
