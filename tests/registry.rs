//! Push and pull against a real registry: Debian's `docker-registry`,
//! one instance per test on 127.0.0.1, and skopeo and umoci as peers. CI
//! installs them; without them the tests print `SKIP <test>: <reason>` and
//! pass, unless `LAYERSTACK_REQUIRE_TOOLS` (or `LAYERSTACK_REQUIRE_ROOT`) is
//! set.

mod registry {
    pub mod harness;
    pub mod interop;
    pub mod push_pull;
    pub mod token;
    #[allow(dead_code)]
    #[path = "../oci/tools.rs"]
    pub mod tools;
}
