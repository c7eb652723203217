//! Layers in and out of tar: the shared applier that gives each tar entry
//! its meaning once, import, flatten, the export walk, the changes between
//! layers, commit of a directory, and the rootless unpack's side file.

pub(crate) mod applier;
pub(crate) mod changes;
pub(crate) mod commit;
pub(crate) mod export;
pub(crate) mod flatten;
pub(crate) mod import;
pub(crate) mod rootless;
