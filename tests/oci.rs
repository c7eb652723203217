//! The OCI feature end to end: layers through tar and back, into disk
//! layers, and against umoci and skopeo (CI installs both; without them
//! those tests print why and pass without checking, unless
//! `LAYERSTACK_REQUIRE_TOOLS` is set).

mod oci {
    pub mod round_trip;
}
