//! The tool's tests: one binary, with the tool end to end (`cli`) and
//! under injected faults (`faults`), and against a real registry
//! (`registry`). They run the built `layerstack`.

// The library's test helpers, shared by path; the tool uses some of them.
#[allow(dead_code)]
#[path = "../../../tests/it/support/tools.rs"]
mod tools;

#[allow(dead_code)]
#[path = "../../../tests/it/support/legacy_names.rs"]
mod legacy_names;

mod cli;
mod faults;
mod registry;
