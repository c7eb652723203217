//! OCI images (feature `oci`): layer tarballs in and out, digests, the
//! image layout as a content-addressed blob store, images as stacks of
//! layers, building, flattening and `docker diff`.
//!
//! The contract is the OCI image spec: `layer.md` (the tar changeset and its
//! whiteouts, see [`TarName`]), `image-layout.md` (`oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`), `manifest.md` and `config.md`.

mod apply;
pub mod build;
mod image;
mod lazy;
#[cfg(feature = "registry")]
pub mod registry;
mod tar;

pub use self::apply::changes::{Change, ChangeKind, layer_changes};
pub use self::apply::commit::{layer_from_dir, layer_from_dir_spilling, layer_from_rootless_dir};
pub use self::apply::export::{ExportOptions, LayerDigests, export_layer};
pub use self::apply::flatten::{
    FlattenOptions, FlattenSummary, Owners, flatten_layers, flatten_layers_verified,
};
pub use self::apply::import::{ImportOptions, ImportSummary, Policy, import_into, import_layer};
pub use self::apply::rootless::{METADATA_SUFFIX, RootlessMap, metadata_path};
pub use self::image::analyze::{
    Analysis, LayerFigures, LayerInput, Payload, PayloadMeta, WasteReason, WastedCopy, WastedPath,
};
pub use self::image::digest::{Digest, DigestReader, DigestWriter, Hasher, chain_ids};
pub use self::image::layout::{
    BlobReader, BlobWriter, Durability, GcMode, GcReport, LayerRecord, MAX_TAG_LEN, OciLayout,
    check_tag,
};
pub use self::image::spec::{
    ANNOTATION_REF_NAME, Descriptor, Document, History, ImageConfig, Index, MAX_DOCUMENT_BYTES,
    Manifest, Platform, media_type,
};
pub use self::image::store::{BuildOptions, Image, ImageBuilder, ImageStore, StepOutcome};
pub use self::lazy::{BlobLayer, IndexSource, index_layer, index_path, index_size, indexed_sizes};
pub use self::tar::compress::{Compression, Compressor, Decompressor};
pub use self::tar::read::{Limits, TarEntry, TarKind, TarReader};
pub use self::tar::whiteout::{
    AUFS_META_PREFIX, OPAQUE_MARKER, TarName, WHITEOUT_PREFIX, classify, is_reserved, whiteout_name,
};
