//! OCI images (feature `oci`): layer tarballs in and out, digests, the
//! image layout as a content-addressed blob store, images as stacks of
//! layers, building, flattening and `docker diff`.
//!
//! The contract is the OCI image spec: `layer.md` (the tar changeset and its
//! whiteouts, see [`whiteout`]), `image-layout.md` (`oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`), `manifest.md` and `config.md`.

pub mod analyze;
mod apply;
pub mod changes;
pub mod commit;
pub mod compress;
pub mod digest;
pub mod export;
pub mod flatten;
pub mod image;
pub mod import;
pub mod layout;
#[cfg(feature = "registry")]
pub mod registry;
pub mod rootless;
pub mod spec;
pub mod tar_read;
pub mod whiteout;

#[cfg(any(test, feature = "proptest"))]
pub mod test_tar;

pub use compress::{Compression, Compressor, Decompressor};
pub use digest::{Digest, DigestReader, DigestWriter, Hasher, chain_ids};
pub use export::{ExportOptions, LayerDigests, export_layer};
pub use flatten::{
    FlattenOptions, FlattenSummary, Owners, flatten_layers, flatten_layers_verified,
};
pub use image::{BuildOptions, Image, ImageBuilder, ImageStore, StepOutcome};
pub use import::{ImportOptions, ImportSummary, Policy, import_into, import_layer};
pub use layout::{BlobReader, BlobWriter, Durability, GcMode, GcReport, LayerRecord, OciLayout};
pub use rootless::RootlessMap;
pub use spec::{Descriptor, Document, History, ImageConfig, Index, Manifest, Platform};
pub use tar_read::{Limits, TarEntry, TarKind, TarReader};
