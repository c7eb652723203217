use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use crate::data::FileData;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::dir::DirLayer;
use crate::layer::mem::{MemLayer, to_mem_layer};
use crate::layer::{Layer, LayerMut};
use crate::merged::{Clock, ViewOptions};
use crate::meta::{FileType, Timestamp};
use crate::oci::apply::changes::{Change, layer_changes};
use crate::oci::apply::export::{ExportOptions, export_layer};
use crate::oci::apply::flatten::{FlattenOptions, FlattenSummary, flatten_checked};
use crate::oci::apply::import::{ImportOptions, import_into};
use crate::oci::image::digest::{Digest, chain_ids};
use crate::oci::image::layout::{Durability, LayerRecord, OciLayout, check_tag};
use crate::oci::image::spec::{
    ANNOTATION_REF_NAME, Descriptor, History, ImageConfig, Manifest, media_type,
};
use crate::oci::lazy::BlobLayer;
use crate::oci::tar::compress::Compression;
use crate::path::LayerPath;
use crate::spill::Spill;
use crate::view::MergedView;

/// An image: what a tag (or digest) names in a layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The reference it was opened by (a tag, or a digest).
    pub reference: String,
    /// What `index.json` holds for it (a manifest, or an index that led to
    /// the manifest).
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
}

impl Image {
    /// The layers' descriptors, bottom first.
    #[must_use]
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }

    /// The DiffIDs (digests of the uncompressed layers), bottom first.
    #[must_use]
    pub fn diff_ids(&self) -> &[Digest] {
        &self.config.diff_ids
    }

    /// The `created_by` of each layer's history entry, bottom first
    /// (entries marked `empty_layer` made no layer); `None` where the
    /// history says nothing.
    #[must_use]
    pub fn layer_commands(&self) -> Vec<Option<String>> {
        let mut out: Vec<Option<String>> = self
            .config
            .history
            .iter()
            .filter(|h| !h.empty_layer)
            .map(|h| h.created_by.clone())
            .collect();
        out.resize(self.layers().len(), None);
        out
    }

    /// The ChainIDs, bottom first: element `i` names layers `0..=i`.
    #[must_use]
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.config.diff_ids)
    }
}

/// Layer `i` of `image` read as `got`: its DiffID if the config says so.
fn check_diff_id(image: &Image, i: usize, got: Digest) -> Result<Digest> {
    check_diff_id_of(&image.reference, &image.config.diff_ids, i, got)
}

/// Layer `i` of the image `reference` (of DiffIDs `diff_ids`) read as
/// `got`: its DiffID if the config says so.
fn check_diff_id_of(reference: &str, diff_ids: &[Digest], i: usize, got: Digest) -> Result<Digest> {
    let want = diff_ids[i];
    if got != want {
        return Err(
            Error::new(ErrorKind::InvalidData, Operation::OpenImage, reference)
                .with_layer(i.to_string())
                .with_detail(format!(
                    "the layer's DiffID is {got} but the config says {want}"
                )),
        );
    }
    Ok(want)
}

/// A layout with a cache of opened layers.
///
/// Images as stacks of layers: open one by tag as a [`MergedView`], run a
/// container on it, build new images step by step, squash, and list what
/// each layer changes.
///
/// An [`ImageStore`] is an [`OciLayout`] plus a cache of opened layers
/// keyed by ChainID: a layer two images share (same content at the same
/// position over the same base) is opened once, and the two views share
/// it in memory.
///
/// Layers are read lazily ([`BlobLayer`]): an image opens from its blobs
/// and their indexes (kept in the layout beside the blobs), in memory
/// bounded by the indexes, and a read inflates only the part of a blob it
/// needs. [`ImageStore::import_layers`] imports them instead. The file
/// data of imported layers, and of the upper layers of its containers and
/// builds, stays in memory up to a budget (16 MiB by default, shared by
/// everything the store imports); beyond it, data goes to an anonymous
/// file in the layout's `blobs/sha256` directory (see [`Spill`]).
#[derive(Debug)]
pub struct ImageStore {
    layout: OciLayout,
    import: ImportOptions,
    spill: Spill,
    cache: Mutex<HashMap<Digest, Arc<dyn Layer>>>,
}

impl ImageStore {
    /// A store over `layout`, importing with default options.
    #[must_use]
    pub fn new(layout: OciLayout) -> ImageStore {
        ImageStore::with_import_options(layout, ImportOptions::default())
    }

    /// A store over `layout` that imports layers with `options` (limits,
    /// device and setuid policies).
    #[must_use]
    pub fn with_import_options(layout: OciLayout, options: ImportOptions) -> ImageStore {
        ImageStore {
            spill: Spill::new(layout.blobs_dir(), Spill::DEFAULT_BUDGET),
            layout,
            import: options,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The store with another spill for file data (see the
    /// [module documentation](ImageStore)): another directory or budget.
    #[must_use]
    pub fn with_spill(mut self, spill: Spill) -> ImageStore {
        self.spill = spill;
        self
    }

    /// Where file data goes past the store's memory budget: the spill of
    /// every layer it imports and of the uppers it makes. A commit against
    /// an image of the store shares it
    /// ([`layer_from_dir_spilling`](crate::oci::apply::commit::layer_from_dir_spilling)).
    #[must_use]
    pub fn spill(&self) -> &Spill {
        &self.spill
    }

    /// An empty layer in memory with the store's spill.
    fn new_layer(&self) -> MemLayer {
        MemLayer::with_spill(self.spill.clone())
    }

    /// The layer tar `blob` imported over `below` (top first).
    fn import(
        &self,
        blob: impl std::io::Read,
        below: &[Arc<dyn Layer>],
    ) -> Result<(MemLayer, crate::oci::apply::import::ImportSummary)> {
        let mut layer = self.new_layer();
        let summary = import_into(blob, &mut layer, below, &self.import)?;
        Ok((layer, summary))
    }

    /// The options layers are imported (and indexed) with.
    #[must_use]
    pub fn import_options(&self) -> &ImportOptions {
        &self.import
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> &OciLayout {
        &self.layout
    }

    /// Opens an image by tag, or by manifest digest (`sha256:...`); `None`
    /// is `latest`, or the only image.
    ///
    /// # Errors
    /// `ENOENT` for an unknown tag; `EBADMSG` for a broken manifest or
    /// config, or a config whose DiffIDs do not match its layers.
    pub fn image(&self, reference: Option<&str>) -> Result<Image> {
        let descriptor = match reference {
            Some(r) if r.starts_with("sha256:") => {
                let digest = Digest::parse(r)?;
                let size = self.layout.blob_size(&digest)?;
                Descriptor::new(media_type::OCI_MANIFEST, digest, size)
            }
            other => self.layout.resolve(other)?,
        };
        let manifest = self.layout.read_manifest(&descriptor)?;
        let config = self.layout.read_config(&manifest.config)?;
        let name = reference.map_or_else(
            || descriptor.ref_name().unwrap_or("latest").to_owned(),
            str::to_owned,
        );
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(
                Error::new(ErrorKind::InvalidData, Operation::OpenImage, &name).with_detail(
                    format!(
                        "the manifest lists {} layers but the config {} DiffIDs",
                        manifest.layers.len(),
                        config.diff_ids.len()
                    ),
                ),
            );
        }
        Ok(Image {
            reference: name,
            descriptor,
            manifest,
            config,
        })
    }

    /// The image's layers as read-only layers, top first (as
    /// [`MergedView::new`] takes them), read lazily: each is a
    /// [`BlobLayer`] over its blob and the blob's index, which the first
    /// use builds (one pass over the blob, its digest checked) and keeps in
    /// the layout (see [`BlobLayer::open`]); later uses read only the
    /// index and the data they need. A layer's DiffID is checked against
    /// the config. Layers are cached per store by ChainID.
    ///
    /// # Errors
    /// `EBADMSG` when a blob or a DiffID does not match; the errors import
    /// would give for the layer.
    pub fn layers(&self, image: &Image) -> Result<Vec<Arc<dyn Layer>>> {
        self.layers_with_progress(image, None)
    }

    /// As [`ImageStore::layers`], telling `progress` (layer index from
    /// the bottom, blob bytes read, blob size) how the building of an
    /// index goes.
    ///
    /// # Errors
    /// As [`ImageStore::layers`].
    pub fn layers_with_progress(
        &self,
        image: &Image,
        progress: Option<&dyn Fn(usize, u64, u64)>,
    ) -> Result<Vec<Arc<dyn Layer>>> {
        let chain = image.chain_ids();
        let mut stack: Vec<Arc<dyn Layer>> = Vec::with_capacity(chain.len());
        for (i, (descriptor, chain_id)) in image.layers().iter().zip(&chain).enumerate() {
            if let Some(layer) = self.cached(chain_id) {
                stack.insert(0, layer);
                continue;
            }
            let in_layer = |e: Error| e.with_layer(format!("{i} ({})", descriptor.digest.short()));
            let tell = |done: u64| {
                if let Some(p) = progress {
                    p(i, done, descriptor.size);
                }
            };
            let (layer, _) =
                BlobLayer::open(&self.layout, descriptor, &stack, &self.import, Some(&tell))
                    .map_err(in_layer)?;
            check_diff_id(image, i, *layer.diff_id())?;
            let layer: Arc<dyn Layer> = Arc::new(layer);
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(*chain_id, Arc::clone(&layer));
            stack.insert(0, layer);
        }
        Ok(stack)
    }

    /// The image's layers imported into memory, top first: each blob read
    /// through once into a [`MemLayer`] (file data past the store's
    /// budget goes to its spill). For a caller that needs layers it can
    /// change or that must not read the blobs again; [`ImageStore::layers`]
    /// reads lazily. Not cached.
    ///
    /// # Errors
    /// `EBADMSG` when a blob or a DiffID does not match; import errors.
    pub fn import_layers(&self, image: &Image) -> Result<Vec<MemLayer>> {
        let mut stack: Vec<Arc<dyn Layer>> = Vec::with_capacity(image.layers().len());
        let mut out = Vec::with_capacity(image.layers().len());
        for (i, descriptor) in image.layers().iter().enumerate() {
            let in_layer = |e: Error| e.with_layer(format!("{i} ({})", descriptor.digest.short()));
            let blob = self.layout.open_layer(descriptor).map_err(in_layer)?;
            let (layer, summary) = self.import(blob, &stack).map_err(in_layer)?;
            let want = check_diff_id(image, i, summary.diff_id)?;
            // Read through and checked: what `inspect` shows next time
            // without reading it again. A layout we may not write to
            // just stays without the record.
            let _ = self.layout.record_layer(&LayerRecord {
                digest: descriptor.digest,
                diff_id: want,
                uncompressed_size: summary.uncompressed_size,
            });
            stack.insert(0, Arc::new(layer.clone()));
            out.insert(0, layer);
        }
        Ok(out)
    }

    /// The image's layers as directories in the kernel's format (whiteouts
    /// as 0/0 character devices, opaque directories and metacopy as
    /// `trusted.overlay.*` attributes), top first: what an overlay mount of
    /// the image takes as `lowerdir`, as a `RUN` step of a build does
    /// ([`run_step`](crate::oci::build::run_step)).
    ///
    /// Each layer is imported once into `.layerstack/dirs/<ChainID>` in the
    /// layout and reused by every image that has it at the same place over
    /// the same base; a directory appears only once complete (imported
    /// beside it, then renamed), so one left by a crash is never taken.
    ///
    /// # Errors
    /// `EPERM` without the right to make device nodes (whiteouts and
    /// devices need root, as in the kernel's own format); a layer whose
    /// DiffID is not the config's (`EBADMSG`); the errors of reading the
    /// blobs and of writing the directories.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<Utf8PathBuf>> {
        self.layer_dirs_of(&image.reference, image.layers(), image.diff_ids())
    }

    /// [`ImageStore::layer_dirs`] of the layers `layers` (bottom first) of
    /// DiffIDs `diff_ids`, named `reference` in errors.
    fn layer_dirs_of(
        &self,
        reference: &str,
        layers: &[Descriptor],
        diff_ids: &[Digest],
    ) -> Result<Vec<Utf8PathBuf>> {
        let root = self.layout.root().join(".layerstack").join("dirs");
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::from_io(&e, Operation::OpenImage, &root))?;
        let chain = chain_ids(diff_ids);
        let mut dirs: Vec<Utf8PathBuf> = Vec::with_capacity(chain.len());
        let mut below: Vec<Arc<dyn Layer>> = Vec::with_capacity(chain.len());
        for (i, (descriptor, chain_id)) in layers.iter().zip(&chain).enumerate() {
            let dir = root.join(chain_id.hex());
            let in_layer = |e: Error| e.with_layer(format!("{i} ({})", descriptor.digest.short()));
            if !dir.is_dir() {
                let unique = format!("{}.{}", chain_id.hex(), std::process::id());
                let (tmp, work) = (
                    root.join(format!("{unique}.new")),
                    root.join(format!("{unique}.work")),
                );
                for leftover in [&tmp, &work] {
                    let _ = std::fs::remove_dir_all(leftover);
                }
                let imported = (|| {
                    let mut layer = DirLayer::open_upper(&tmp, &work)?;
                    let blob = self.layout.open_layer(descriptor)?;
                    let summary = import_into(blob, &mut layer, &below, &self.import)?;
                    check_diff_id_of(reference, diff_ids, i, summary.diff_id)?;
                    Ok(())
                })();
                let _ = std::fs::remove_dir_all(&work);
                if let Err(e) = imported {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(in_layer(e));
                }
                if let Err(e) = std::fs::rename(&tmp, &dir) {
                    // Another build made it meanwhile: theirs is as good.
                    let _ = std::fs::remove_dir_all(&tmp);
                    if !dir.is_dir() {
                        return Err(in_layer(Error::from_io(&e, Operation::OpenImage, &dir)));
                    }
                }
            }
            below.insert(0, Arc::new(DirLayer::open(&dir).map_err(in_layer)?));
            dirs.insert(0, dir);
        }
        Ok(dirs)
    }

    fn cached(&self, chain_id: &Digest) -> Option<Arc<dyn Layer>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(chain_id)
            .cloned()
    }

    /// How many imported layers the cache holds.
    #[must_use]
    pub fn cached_layers(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A container: the image's layers under a fresh, empty upper layer in
    /// memory. It is gone when dropped; commit it with an
    /// [`ImageBuilder`] to keep it.
    ///
    /// # Errors
    /// As [`ImageStore::layers`].
    pub fn container(&self, image: &Image) -> Result<MergedView> {
        MergedView::new(self.layers(image)?, self.new_layer())
    }

    /// What each layer of `image` changes, bottom first (`docker diff` per
    /// layer).
    ///
    /// # Errors
    /// As [`ImageStore::layers`].
    pub fn changes(&self, image: &Image) -> Result<Vec<Vec<Change>>> {
        let top_first = self.layers(image)?;
        let n = top_first.len();
        (0..n)
            .map(|i| {
                // Layer i (bottom first) is top_first[n - 1 - i].
                let at = n - 1 - i;
                layer_changes(top_first[at].as_ref(), &top_first[at + 1..])
            })
            .collect()
    }

    /// Writes the root filesystem `image` shows into `dir` (which must not
    /// exist or be empty), top layer first so that nothing a higher layer
    /// hides is written; see [`flatten_layers`](crate::oci::flatten_layers).
    /// On error what was written is removed and `dir` is left as it was
    /// found.
    ///
    /// Each layer's blob digest (named by the manifest) is always checked
    /// as the blob is read: it alone fixes every byte of the blob, and so
    /// every entry written. Its DiffID (named by the config) is checked too
    /// ([`flatten_layers_verified`](crate::oci::flatten_layers_verified)),
    /// unless [the layer cache](OciLayout#the-layer-cache) holds a record
    /// that a full read of this blob found that very DiffID: then the
    /// DiffID check would prove nothing the digest check does not, and
    /// costs a second sha256 pass over the uncompressed tar, so it is left
    /// out. After a flatten that checked a layer's DiffID, the layer's
    /// record is written (best effort: a layout that cannot be written to
    /// still flattens, each time with both checks).
    ///
    /// A forged record cannot change what is written: the blob digest is
    /// still checked, and a mismatch fails the flatten as always. What it
    /// can do is hide that the config's DiffID disagrees with the blob the
    /// manifest names, an inconsistency in the image that changes no byte
    /// written (as a forged index in the cache hides it from
    /// [`ImageStore::layers`]).
    ///
    /// The sha256 passes run on threads of their own beside the inflating
    /// ones.
    ///
    /// # Errors
    /// As [`flatten_layers`](crate::oci::flatten_layers); `EBADMSG` for a
    /// blob that does not match its digest or a layer whose DiffID is
    /// checked and does not match.
    pub fn flatten(
        &self,
        image: &Image,
        dir: &Utf8Path,
        options: &FlattenOptions,
    ) -> Result<FlattenSummary> {
        let layout = &self.layout;
        let layers = image.layers();
        let diff_ids = image.diff_ids();
        let openers: Vec<_> = layers
            .iter()
            .map(|d| {
                move || -> Result<Box<dyn std::io::Read + Send>> {
                    Ok(Box::new(layout.open_layer(d)?.hash_on_thread()))
                }
            })
            .collect();
        // A layer whose record says a full read found this blob to be the
        // config's DiffID needs only its blob digest checked (see the doc
        // above); every other layer has both checked.
        let checks: Vec<Option<Digest>> = layers
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| {
                layout
                    .layer_record(&d.digest, diff_id)
                    .is_none()
                    .then_some(*diff_id)
            })
            .collect();
        let (summary, sizes) = flatten_checked(&openers, &checks, dir, options)?;
        // Read through, both checks passed: the next flatten needs only
        // one. A layout we may not write to just stays without the record.
        for ((d, diff_id), size) in layers.iter().zip(diff_ids).zip(sizes) {
            if let Some(uncompressed_size) = size {
                let _ = layout.record_layer(&LayerRecord {
                    digest: d.digest,
                    diff_id: *diff_id,
                    uncompressed_size,
                });
            }
        }
        Ok(summary)
    }

    /// Starts building an image on `base` (`None`: from scratch).
    ///
    /// # Errors
    /// As [`ImageStore::image`] and [`ImageStore::layers`] for the base.
    pub fn builder(&self, base: Option<&Image>, options: BuildOptions) -> Result<ImageBuilder<'_>> {
        let (lowers, config, layers) = match base {
            Some(image) => (
                self.layers(image)?,
                image.config.clone(),
                image.layers().to_vec(),
            ),
            None => {
                let mut config = ImageConfig::new("linux", go_arch());
                config.config = Value::Object(serde_json::Map::new());
                (Vec::new(), config, Vec::new())
            }
        };
        Ok(ImageBuilder {
            store: self,
            lowers,
            config,
            layers,
            options,
            comment: None,
        })
    }

    /// Writes `image` as a new image of a single layer holding what it
    /// shows, tagged `tag`. Its history keeps the image's entries, marked
    /// as empty layers, and adds one for the squash.
    ///
    /// # Errors
    /// As [`ImageStore::layers`], and errors writing the layout.
    pub fn squash(&self, image: &Image, tag: &str, options: BuildOptions) -> Result<Image> {
        // Imported, not lazy: a squash reads every file of every layer,
        // which a stream does in one checked pass (the digests and DiffIDs
        // verified) and lazy reads would do out of order, restarting the
        // inflater for each file.
        let lowers: Vec<Arc<dyn Layer>> = self
            .import_layers(image)?
            .into_iter()
            .map(|l| Arc::new(l) as Arc<dyn Layer>)
            .collect();
        let view = MergedView::new(lowers, self.new_layer())?;
        let flat = flatten_view(&view, &self.spill)?;
        let mut config = image.config.clone();
        config.diff_ids.clear();
        for h in &mut config.history {
            h.empty_layer = true;
        }
        let mut builder = ImageBuilder {
            store: self,
            lowers: Vec::new(),
            config,
            layers: Vec::new(),
            options,
            comment: None,
        };
        builder.add_layer(Arc::new(flat), "layerstack squash")?;
        builder.finish(tag)
    }
}

/// Options of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildOptions {
    /// The time written into the history and config, and the time the
    /// steps' changes get. Default: the Unix epoch, so that the same steps
    /// always give the same image (as with `SOURCE_DATE_EPOCH=0`).
    pub created: Timestamp,
    /// Layer compression. Default gzip.
    pub compression: Compression,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            created: Timestamp::EPOCH,
            compression: Compression::Gzip,
        }
    }
}

impl BuildOptions {
    /// The defaults.
    #[must_use]
    pub fn new() -> BuildOptions {
        BuildOptions::default()
    }

    /// Sets [`BuildOptions::created`].
    #[must_use]
    pub fn created(mut self, t: Timestamp) -> BuildOptions {
        self.created = t;
        self
    }

    /// Sets [`BuildOptions::compression`].
    #[must_use]
    pub fn compression(mut self, c: Compression) -> BuildOptions {
        self.compression = c;
        self
    }
}

/// What one build step did.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// The step changed files: a layer was added.
    Layer(Box<Descriptor>),
    /// The step changed nothing: only a history entry was added, marked
    /// `empty_layer` (as Docker does for `ENV` or `CMD`).
    Empty,
}

/// Builds an image one step at a time, like a Dockerfile: each step is a
/// closure that changes a [`MergedView`] of everything so far; what it
/// changed becomes one layer.
///
/// ```
/// use layerstack::oci::{BuildOptions, ImageStore, OciLayout, StepOutcome};
///
/// # let dir = std::env::temp_dir().join(format!("layerstack-doc-build-{}", std::process::id()));
/// # let dir = camino::Utf8PathBuf::from_path_buf(dir).unwrap();
/// let store = ImageStore::new(OciLayout::create(&dir)?);
/// let mut build = store.builder(None, BuildOptions::default())?;
/// build.step("COPY app.conf /etc/", |fs| fs.create_dir_all("etc").and_then(|()| fs.write("etc/app.conf", "port = 80\n")))?;
/// let outcome = build.configure("ENV PORT=80", |config| {
///     config.insert("Env".into(), serde_json::json!(["PORT=80"]));
/// })?;
/// assert_eq!(outcome, StepOutcome::Empty);
/// let image = build.finish("app-1")?;
/// assert_eq!(image.layers().len(), 1);
/// assert_eq!(image.config.history.len(), 2);
/// assert_eq!(store.container(&image)?.read_to_string("etc/app.conf")?, "port = 80\n");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Debug)]
pub struct ImageBuilder<'s> {
    store: &'s ImageStore,
    /// Layers so far, top first.
    lowers: Vec<Arc<dyn Layer>>,
    config: ImageConfig,
    layers: Vec<Descriptor>,
    options: BuildOptions,
    /// The `comment` of the history entries written from now on.
    comment: Option<String>,
}

impl ImageBuilder<'_> {
    /// Runs one step: `f` changes a view of the image so far; what it
    /// changed is written as a new layer, with a history entry
    /// `created_by`. A step that changes nothing adds only the history
    /// entry (`empty_layer`). If `f` fails, nothing of the step is kept and
    /// the builder can go on.
    ///
    /// # Errors
    /// `f`'s error, and errors writing the layer.
    pub fn step(
        &mut self,
        created_by: &str,
        f: impl FnOnce(&MergedView) -> Result<()>,
    ) -> Result<StepOutcome> {
        let options = ViewOptions::default().clock(Clock::Fixed(self.options.created));
        let view = MergedView::with_options(self.lowers.clone(), self.store.new_layer(), options)?;
        let root_before = view.symlink_metadata("/")?;
        f(&view)?;
        let root_after = view.symlink_metadata("/")?;
        let root_changed = (
            root_before.mode,
            root_before.uid,
            root_before.gid,
            root_before.mtime,
        ) != (
            root_after.mode,
            root_after.uid,
            root_after.gid,
            root_after.mtime,
        ) || root_before.xattrs != root_after.xattrs;
        if view.changes()?.is_empty() && !root_changed {
            self.config.history.push(self.history(created_by, true));
            return Ok(StepOutcome::Empty);
        }
        let upper = view.with_upper(|u| to_mem_layer(u))?;
        self.add_layer(Arc::new(upper), created_by)
            .map(|d| StepOutcome::Layer(Box::new(d)))
    }

    /// Adds `layer`, a changeset made elsewhere (for example by
    /// [`layer_from_dir`](crate::oci::apply::commit::layer_from_dir) against
    /// [`ImageBuilder::view`]), as one step with the history entry
    /// `created_by`. Like [`ImageBuilder::step`], an empty layer adds only
    /// the history entry (`empty_layer`).
    ///
    /// ```
    /// use layerstack::MemLayer;
    /// use layerstack::oci::{BuildOptions, ImageStore, OciLayout, StepOutcome};
    ///
    /// # let dir = std::env::temp_dir().join(format!("layerstack-doc-add-{}", std::process::id()));
    /// # let dir = camino::Utf8PathBuf::from_path_buf(dir).unwrap();
    /// let store = ImageStore::new(OciLayout::create(&dir)?);
    /// let mut build = store.builder(None, BuildOptions::default())?;
    /// let mut layer = MemLayer::new();
    /// layer.add_file("etc/app.conf", "port = 80\n")?;
    /// assert!(matches!(build.add_layer_from(layer, "prepared")?, StepOutcome::Layer(_)));
    /// assert_eq!(build.add_layer_from(MemLayer::new(), "nothing")?, StepOutcome::Empty);
    /// let image = build.finish("app")?;
    /// assert_eq!(image.layers().len(), 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), layerstack::Error>(())
    /// ```
    ///
    /// # Errors
    /// Errors writing the layer (`EINVAL` for a name starting with `.wh.`,
    /// `EOPNOTSUPP` for a socket).
    pub fn add_layer_from(&mut self, layer: MemLayer, created_by: &str) -> Result<StepOutcome> {
        if layer.is_empty() {
            self.config.history.push(self.history(created_by, true));
            return Ok(StepOutcome::Empty);
        }
        self.add_layer(Arc::new(layer), created_by)
            .map(|d| StepOutcome::Layer(Box::new(d)))
    }

    /// A step that changes only the runtime config (`Env`, `Cmd`,
    /// `Entrypoint`, `WorkingDir`, `Labels`, ...: the `config` object of
    /// the image config): adds a history entry marked `empty_layer`.
    ///
    /// # Errors
    /// None today; `Result` keeps room for validation.
    pub fn configure(
        &mut self,
        created_by: &str,
        f: impl FnOnce(&mut serde_json::Map<String, Value>),
    ) -> Result<StepOutcome> {
        self.update_config(f);
        self.config.history.push(self.history(created_by, true));
        Ok(StepOutcome::Empty)
    }

    /// Changes the runtime config (the `config` object of the image
    /// config) without a history entry: part of a step that has its own
    /// (`WORKDIR` sets `WorkingDir` and may make a layer), or what a build
    /// sets up before its first step (Docker's default `PATH`).
    pub fn update_config(&mut self, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        if !self.config.config.is_object() {
            self.config.config = Value::Object(serde_json::Map::new());
        }
        if let Value::Object(map) = &mut self.config.config {
            f(map);
        }
    }

    fn history(&self, created_by: &str, empty_layer: bool) -> History {
        History {
            created: Some(rfc3339(self.options.created)),
            created_by: Some(created_by.to_owned()),
            author: None,
            comment: self.comment.clone(),
            empty_layer,
        }
    }

    fn add_layer(&mut self, layer: Arc<dyn Layer>, created_by: &str) -> Result<Descriptor> {
        let layout = &self.store.layout;
        let writer = layout.blob_writer()?;
        let export = ExportOptions::new()
            .compression(self.options.compression)
            .clamp_mtime(self.options.created);
        let (writer, digests) = export_layer(&layer, &self.lowers, writer, &export)?;
        // The cache gets the layer as its tar imports (below): the one
        // exported need not be held meanwhile, so a large layer is in
        // memory once, not twice.
        drop(layer);
        let (digest, size) = writer.commit()?;
        debug_assert_eq!(digest, digests.digest);
        let descriptor = Descriptor::new(digests.media_type(), digest, size);
        let _ = layout.record_layer(&LayerRecord {
            digest,
            diff_id: digests.diff_id,
            uncompressed_size: digests.uncompressed_size,
        });
        self.push_layer(descriptor, digests.diff_id, created_by)
    }

    /// Adds a layer already stored in the layout (a build cache's hit: the
    /// blob `descriptor` of DiffID `diff_id`), as one step with the history
    /// entry `created_by`. Its DiffID is checked as it is read (unless the
    /// store has it in memory already under the same ChainID).
    ///
    /// # Errors
    /// `ENOENT` when the blob is gone; `EBADMSG` when it does not match its
    /// digest or `diff_id`; import errors.
    pub fn add_stored_layer(
        &mut self,
        descriptor: Descriptor,
        diff_id: Digest,
        created_by: &str,
    ) -> Result<()> {
        let before = self.layers.len();
        let pushed = self.push_layer(descriptor, diff_id, created_by);
        if pushed.is_err() && self.layers.len() > before {
            // Undo: the step is not kept.
            self.layers.truncate(before);
            self.config.diff_ids.truncate(before);
            self.config.history.pop();
        }
        pushed.map(|_| ())
    }

    /// Appends the stored layer `descriptor` of DiffID `diff_id` and its
    /// history entry, and puts it in memory (from the store's cache or by
    /// importing its blob) on top of the lowers.
    fn push_layer(
        &mut self,
        descriptor: Descriptor,
        diff_id: Digest,
        created_by: &str,
    ) -> Result<Descriptor> {
        let layout = &self.store.layout;
        let (digest, size) = (descriptor.digest, descriptor.size);
        self.config.diff_ids.push(diff_id);
        self.config.history.push(self.history(created_by, false));
        self.layers.push(descriptor.clone());
        // The layer as an import of its tar would give it, under its
        // ChainID, so a container over the new image starts from memory.
        let chain = chain_ids(&self.config.diff_ids);
        let chain_id = chain[chain.len() - 1];
        let stored = match self.store.cached(&chain_id) {
            Some(l) => l,
            None => {
                let blob = layout.open_blob(&digest, Some(size))?;
                let (imported, summary) = self.store.import(blob, &self.lowers)?;
                if summary.diff_id != diff_id {
                    return Err(Error::new(
                        ErrorKind::InvalidData,
                        Operation::OpenImage,
                        digest.to_string(),
                    )
                    .with_detail(format!(
                        "the layer's DiffID is {} but {diff_id} was expected",
                        summary.diff_id
                    )));
                }
                let imported: Arc<dyn Layer> = Arc::new(imported);
                self.store
                    .cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(chain_id, Arc::clone(&imported));
                imported
            }
        };
        self.lowers.insert(0, stored);
        Ok(descriptor)
    }

    /// Adds what `layer` holds (a changeset made elsewhere: the upper
    /// directory of a `RUN` step as a
    /// [`DirLayer`](crate::layer::dir::DirLayer), read in the kernel's
    /// format) as one step, as [`ImageBuilder::add_layer_from`] does; its
    /// file data is copied with the store's spill, so a large layer does
    /// not need to fit in memory.
    ///
    /// # Errors
    /// Errors reading `layer`, and those of [`ImageBuilder::add_layer_from`].
    pub fn add_layer_copied(&mut self, layer: &dyn Layer, created_by: &str) -> Result<StepOutcome> {
        let mut copy = self.store.new_layer();
        crate::layer::copy_layer(layer, &mut copy)?;
        self.add_layer_from(copy, created_by)
    }

    /// The image config so far (its `config` object holds `Env`, `User`,
    /// `WorkingDir`, ...).
    #[must_use]
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// Sets the image's `author` (Docker's `MAINTAINER`).
    pub fn set_author(&mut self, author: Option<String>) {
        self.config.author = author;
    }

    /// Sets the `comment` of the history entries the next steps write
    /// (BuildKit writes `buildkit.dockerfile.v0`).
    pub fn set_history_comment(&mut self, comment: Option<String>) {
        self.comment = comment;
    }

    /// The layers so far as directories in the kernel's format, top first,
    /// as [`ImageStore::layer_dirs`] gives them for an image: what a `RUN`
    /// step mounts.
    ///
    /// # Errors
    /// As [`ImageStore::layer_dirs`].
    pub fn layer_dirs(&self) -> Result<Vec<Utf8PathBuf>> {
        self.store
            .layer_dirs_of("the image being built", &self.layers, &self.config.diff_ids)
    }

    /// The view of the image so far (read it; changes to it are not kept).
    ///
    /// # Errors
    /// Errors of the layers.
    pub fn view(&self) -> Result<MergedView> {
        MergedView::new(self.lowers.clone(), self.store.new_layer())
    }

    /// Writes the config and manifest and tags the image `tag`.
    ///
    /// # Errors
    /// Those of [`finish_with_durability`](ImageBuilder::finish_with_durability).
    pub fn finish(self, tag: &str) -> Result<Image> {
        self.finish_with_durability(tag).map(|(image, _)| image)
    }

    /// Writes the config and manifest and tags the image `tag`; says
    /// whether the tag's write was synced (see [`OciLayout::set_tag`]).
    ///
    /// The tag is checked first ([`check_tag`]), so an invalid one writes
    /// nothing. The tag is the last thing written: after an error
    /// `index.json` is as it was (blobs written on the way stay,
    /// unreferenced, until garbage collection), and after `Ok` nothing is
    /// read back, so nothing can fail once the tag is in.
    ///
    /// # Errors
    /// `EINVAL` for an invalid tag; errors writing the layout.
    pub fn finish_with_durability(self, tag: &str) -> Result<(Image, Durability)> {
        check_tag(tag)?;
        let layout = &self.store.layout;
        let mut image = self.finish_untagged()?;
        let durability = layout.set_tag(tag, image.descriptor.clone())?;
        image
            .descriptor
            .annotations
            .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
        image.reference = tag.to_owned();
        Ok((image, durability))
    }

    /// Writes the config and manifest without tagging them: an image only
    /// its digest names (its [`Image::reference`]), kept until garbage
    /// collection unless something refers to it (an intermediate stage of
    /// a Dockerfile build).
    ///
    /// # Errors
    /// Errors writing the layout.
    pub fn finish_untagged(mut self) -> Result<Image> {
        let layout = &self.store.layout;
        self.config.created = Some(rfc3339(self.options.created));
        if self.config.config.is_null() {
            self.config.config = Value::Object(serde_json::Map::new());
        }
        let config = layout.put_json(&self.config, media_type::OCI_CONFIG)?;
        let manifest = Manifest::new(config, self.layers.clone());
        let mut descriptor = layout.put_json(&manifest, media_type::OCI_MANIFEST)?;
        descriptor.platform = None;
        Ok(Image {
            reference: descriptor.digest.to_string(),
            descriptor,
            manifest,
            config: self.config,
        })
    }
}

/// File data is copied in pieces of this size.
const PIECE: usize = 1 << 20;

/// Everything `view` shows, as one layer (its file data past `spill`'s
/// budget in the spill's file).
fn flatten_view(view: &MergedView, spill: &Spill) -> Result<MemLayer> {
    let mut out = MemLayer::with_spill(spill.clone());
    let root_meta = view.symlink_metadata("/")?;
    out.set_metadata(&LayerPath::root(), &root_meta)?;
    let mut seen: HashMap<u64, LayerPath> = HashMap::new();
    let mut dirs = Vec::new();
    let mut todo = vec![LayerPath::root()];
    while let Some(dir) = todo.pop() {
        let dir_name: &[u8] = if dir.is_root() { b"/" } else { dir.as_bytes() };
        for entry in view.read_dir(dir_name)? {
            let path = dir.join(&entry.name)?;
            let meta = view.symlink_metadata(path.as_name())?;
            if meta.file_type != FileType::Dir && meta.nlink > 1 {
                if let Some(first) = seen.get(&meta.ino) {
                    out.hard_link(first, &path)?;
                    continue;
                }
                seen.insert(meta.ino, path.clone());
            }
            let content = match meta.file_type {
                FileType::Dir => {
                    todo.push(path.clone());
                    dirs.push((path.clone(), meta.clone()));
                    crate::Content::Dir
                }
                FileType::File => crate::Content::File(FileData::read_from(
                    |offset| view.read_at(path.as_name(), offset, PIECE),
                    spill,
                )?),
                FileType::Symlink => crate::Content::Symlink(view.read_link(path.as_name())?),
                _ => crate::Content::Special,
            };
            out.create(&path, &meta, content)?;
        }
    }
    Ok(out)
}

/// The architecture as Go (and so OCI) names it.
pub(crate) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "arm" => "arm",
        other => other,
    }
}

/// A timestamp as RFC 3339 in UTC (`1970-01-01T00:00:00Z`), as image
/// configs write it.
#[must_use]
pub(crate) fn rfc3339(t: Timestamp) -> String {
    let days = t.sec.div_euclid(86_400);
    let secs = t.sec.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if t.nsec != 0 {
        let frac = format!("{:09}", t.nsec);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests;
