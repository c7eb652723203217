//! Push and pull against a real registry: Debian's `docker-registry`,
//! one instance per test on 127.0.0.1, and skopeo and umoci as peers. CI
//! installs them; without them the tests print `SKIP <test>: <reason>` and
//! pass, unless `LAYERSTACK_REQUIRE_TOOLS` (or `LAYERSTACK_REQUIRE_ROOT`) is
//! set.

use crate::tools;

mod example;
mod harness;
mod interop;
#[allow(dead_code)]
#[path = "../../../examples/private_registry.rs"]
mod private_registry;
mod push_pull;
mod storage;
mod token;
