//! layerstack (crate docs are written with the view)
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod data;
pub mod error;
pub mod layer;
pub mod meta;
pub mod path;

pub use data::FileData;
pub use error::{Error, ErrorKind, Operation, Result};
pub use layer::mem::MemLayer;
pub use layer::{Content, DirListing, Entry, EntryKind, Layer, LayerMut, Node};
pub use meta::{FileType, Metadata, Timestamp, Xattrs, major, makedev, minor};
pub use path::LayerPath;
