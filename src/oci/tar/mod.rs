//! The tar format of layers: the one hardened reader, the header writer,
//! the whiteout codec and the compression codecs (with the parallel
//! encoder). Nothing here knows about layers or images; `apply` gives the
//! entries their meaning and `image` stores the bytes.

pub(crate) mod compress;
pub(crate) mod header;
pub(crate) mod name;
pub(crate) mod read;
pub(crate) mod whiteout;
