//! The OCI feature end to end: layers through tar and back, into disk
//! layers, and against umoci and skopeo. CI installs both; without them
//! (or without root) those tests print `SKIP <test>: <reason>` and pass,
//! unless `LAYERSTACK_REQUIRE_TOOLS` (or `LAYERSTACK_REQUIRE_ROOT`) is set.

mod oci {
    pub mod analyze;
    pub mod dir_layer;
    pub mod docker_save;
    pub mod interop;
    pub mod round_trip;
    pub mod tar_diff;
    pub mod tools;
}
