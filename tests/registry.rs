//! Push and pull against a real registry: Debian's `docker-registry`,
//! one instance per test on 127.0.0.1, and skopeo and umoci as peers. CI
//! installs them; without them the tests print `SKIP <test>: <reason>` and
//! pass, unless `LAYERSTACK_REQUIRE_TOOLS` (or `LAYERSTACK_REQUIRE_ROOT`) is
//! set.

mod registry {
    pub mod example;
    pub mod harness;
    pub mod interop;
    #[allow(dead_code)]
    #[path = "../../examples/private_registry.rs"]
    pub mod private_registry;
    pub mod push_pull;
    pub mod storage;
    pub mod token;
    #[allow(dead_code)]
    #[path = "../oci/tools.rs"]
    pub mod tools;
}
