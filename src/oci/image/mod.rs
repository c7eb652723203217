//! Images: digests, the JSON documents of the image spec, the image layout
//! as a content-addressed blob store, `ImageStore` and its builder, and the
//! analysis of shipped and wasted bytes.

pub(crate) mod analyze;
pub(crate) mod digest;
pub(crate) mod layout;
pub(crate) mod spec;
pub(crate) mod store;
