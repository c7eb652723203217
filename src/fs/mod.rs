//! The disk beneath a root descriptor, as [`DirLayer`](crate::DirLayer)
//! and `oci::flatten` both use it: paths opened by the rules of
//! [confinement on disk](crate#confinement-on-disk) (`beneath`), nodes made
//! and given their metadata through their descriptors (`node`), and the
//! crash points of the crash-consistency test (`crash_points`).

pub(crate) mod beneath;
#[doc(hidden)]
pub mod crash_points;
pub(crate) mod node;
