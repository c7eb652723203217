//! Lazy layers: an image read straight from its blobs, in memory bounded
//! by the index, without importing it.
//!
//! A layer's index (see `index.rs`) is built in one streaming pass over
//! the blob and cached in the layout beside the blobs, outside `blobs/`
//! (so the image and its digests never change), at
//! `.layerstack/index/sha256/<hex of the layer digest>`. It is a cache:
//! one that is missing, damaged, of another format version, about
//! another blob, built under other import options, whose blob has
//! another size, that says more than its blob could hold, or that holds
//! what the import options' policies forbid is rebuilt, never trusted
//! further than a fresh build would be; it is written beside its
//! place and renamed into it, so a reader sees the old index or the new
//! one, never half of one.
//!
//! [`BlobLayer`] is the layer over a blob and its index.

mod blob_layer;
mod build;
mod index;
mod inflate;
mod stream;

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};

pub use self::blob_layer::BlobLayer;

use self::index::{Damaged, LayerIndex, MAX_INDEX_BYTES};
use crate::error::{Error, Operation, Result};
use crate::layer::Layer;
use crate::oci::apply::import::ImportOptions;
use crate::oci::image::digest::Digest;
use crate::oci::image::layout::{LayerRecord, OciLayout};
use crate::oci::image::spec::Descriptor;

/// Where the indexes are kept, under the layout's root.
pub(crate) const INDEX_DIR: &str = ".layerstack/index/sha256";

/// How an index was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexSource {
    /// Read from the layout's cache.
    Cached,
    /// Built now, and why: none was cached (`"missing"`), or the cached
    /// one could not be used (damaged, another version, another blob,
    /// other import options, a blob of another size).
    Built(&'static str),
}

/// The path of the index of layer `digest` in `layout`.
#[must_use]
pub fn index_path(layout: &OciLayout, digest: &Digest) -> Utf8PathBuf {
    layout.root().join(INDEX_DIR).join(digest.hex())
}

/// The cache directory of the indexes, below `.layerstack/`.
const INDEX_PARTS: [&str; 2] = ["index", "sha256"];

/// Reads the cached index of `digest`, if one is there and usable for a
/// blob of `blob_size` bytes under `options` (read beneath the layout's
/// root, never through a symlink).
fn load(
    layout: &OciLayout,
    digest: &Digest,
    blob_size: u64,
    options: &ImportOptions,
) -> std::result::Result<LayerIndex, Damaged> {
    let bytes = layout
        .read_cache_file(&INDEX_PARTS, &digest.hex(), MAX_INDEX_BYTES)
        .map_err(|e| match e.kind() {
            crate::error::ErrorKind::NotFound => Damaged("missing"),
            _ => Damaged("unreadable"),
        })?;
    LayerIndex::decode(bytes.into(), digest, blob_size, options)
}

/// Stores `index` in the cache, atomically (a temporary file renamed
/// into place), beneath the layout's root.
fn store(layout: &OciLayout, index: &LayerIndex) -> Result<()> {
    layout.write_cache_file(&INDEX_PARTS, &index.digest.hex(), &index.encode())
}

impl BlobLayer {
    /// Opens the layer blob `descriptor` of `layout` over `below` (the
    /// layers under it, top first) as a lazy layer. Its index comes from
    /// the layout's cache, or is built (one pass over the blob, whose
    /// digest is checked) and stored there; `progress`, when given, is
    /// told the blob bytes read while building. A layout that cannot be
    /// written to keeps no index: the next open builds it again.
    ///
    /// # Errors
    /// As [`import_into`](crate::oci::import_into) of the blob (a broken
    /// or hostile tar, a limit, a digest mismatch), and those of
    /// [`OciLayout::open_layer`].
    pub fn open(
        layout: &OciLayout,
        descriptor: &Descriptor,
        below: &[Arc<dyn Layer>],
        options: &ImportOptions,
        progress: Option<&dyn Fn(u64)>,
    ) -> Result<(BlobLayer, IndexSource)> {
        let digest = &descriptor.digest;
        let (index, source) = index_of(layout, descriptor, options, progress)?;
        let file = layout.open_blob(digest, Some(descriptor.size))?.into_file();
        Ok((BlobLayer::with_index(index, file, below)?, source))
    }

    /// Opens the layer blob in file `path`, whose digest is `digest`, over
    /// `below`, with an index built now and kept in memory only.
    ///
    /// # Errors
    /// As [`BlobLayer::open`]; errors opening the file.
    pub fn open_file(
        path: &Utf8Path,
        digest: &Digest,
        below: &[Arc<dyn Layer>],
        options: &ImportOptions,
    ) -> Result<BlobLayer> {
        let open_err = |e: &std::io::Error| Error::from_io(e, Operation::Open, path);
        let open = || -> Result<Box<dyn Read>> {
            Ok(Box::new(File::open(path).map_err(|e| open_err(&e))?))
        };
        let index = build::build_index(&open, digest, options, None)?;
        let file = File::open(path).map_err(|e| open_err(&e))?;
        BlobLayer::with_index(index, file, below)
    }
}

/// The index of layer `descriptor`: cached, or built and cached.
fn index_of(
    layout: &OciLayout,
    descriptor: &Descriptor,
    options: &ImportOptions,
    progress: Option<&dyn Fn(u64)>,
) -> Result<(LayerIndex, IndexSource)> {
    let digest = &descriptor.digest;
    let why = match load(layout, digest, descriptor.size, options) {
        Ok(index) => return Ok((index, IndexSource::Cached)),
        Err(Damaged(why)) => why,
    };
    let open = || -> Result<Box<dyn Read>> { Ok(Box::new(layout.open_layer(descriptor)?)) };
    let index = build::build_index(&open, digest, options, progress)?;
    // A cache: a layout we may not write to just stays without it.
    let _ = store(layout, &index);
    let _ = layout.record_layer(&LayerRecord {
        digest: *digest,
        diff_id: index.diff_id,
        uncompressed_size: index.uncompressed_size,
    });
    Ok((index, IndexSource::Built(why)))
}

/// The DiffID and uncompressed size of layer `descriptor` from its cached
/// index, if it has a usable one (nothing is inflated).
#[must_use]
pub fn indexed_sizes(
    layout: &OciLayout,
    descriptor: &Descriptor,
    options: &ImportOptions,
) -> Option<(Digest, u64)> {
    load(layout, &descriptor.digest, descriptor.size, options)
        .ok()
        .map(|i| (i.diff_id, i.uncompressed_size))
}

/// The DiffID and uncompressed size of layer `descriptor`, from its index:
/// the cached one, or one built now (and cached), `progress` told the
/// blob bytes read.
///
/// # Errors
/// As [`BlobLayer::open`].
pub fn index_layer(
    layout: &OciLayout,
    descriptor: &Descriptor,
    options: &ImportOptions,
    progress: Option<&dyn Fn(u64)>,
) -> Result<(Digest, u64, IndexSource)> {
    let (index, source) = index_of(layout, descriptor, options, progress)?;
    Ok((index.diff_id, index.uncompressed_size, source))
}

/// Bytes of the cached index of `digest` (for figures), if there is one.
#[must_use]
pub fn index_size(layout: &OciLayout, digest: &Digest) -> Option<u64> {
    std::fs::metadata(index_path(layout, digest))
        .ok()
        .map(|m| m.len())
}
