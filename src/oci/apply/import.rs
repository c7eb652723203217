use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;

use crate::data::FileData;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::mem::MemLayer;
use crate::layer::overlay::is_bookkeeping_xattr;
use crate::layer::{Content, Entry, Layer, LayerMut};
use crate::merged::LayerSource;
use crate::meta::{FileType, Metadata, S_ISGID, S_ISUID, check_xattr_name};
use crate::oci::apply::applier::{Answer, ApplyTarget, Ask, Held, apply_entry};
use crate::oci::image::digest::{Digest, DigestReader};
use crate::oci::tar::compress::{Compression, Decompressor};
use crate::oci::tar::read::{Limits, TarEntry, TarKind, TarReader};
use crate::path::{LayerPath, NameBuf};
use crate::view::MergedView;

/// What to do with a kind of entry that is risky to trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Import it as it is (what Docker does).
    #[default]
    Keep,
    /// Drop it: a device node is skipped, setuid and setgid bits are
    /// cleared. Counted in the [`ImportSummary`].
    Strip,
    /// Refuse the layer with `EPERM`.
    Refuse,
}

/// Options of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Limits on the tar.
    pub limits: Limits,
    /// Character and block devices.
    pub devices: Policy,
    /// Setuid and setgid bits on files that are not directories (setgid on
    /// a directory only passes its group on, and is always kept).
    pub setuid: Policy,
}

impl ImportOptions {
    /// The defaults: default limits, devices and setuid bits kept.
    #[must_use]
    pub fn new() -> ImportOptions {
        ImportOptions::default()
    }

    /// Sets the limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> ImportOptions {
        self.limits = limits;
        self
    }

    /// Sets the device policy.
    #[must_use]
    pub fn devices(mut self, policy: Policy) -> ImportOptions {
        self.devices = policy;
        self
    }

    /// Sets the setuid policy.
    #[must_use]
    pub fn setuid(mut self, policy: Policy) -> ImportOptions {
        self.setuid = policy;
        self
    }
}

/// What an import read and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportSummary {
    /// The compression that was detected.
    pub compression: Compression,
    /// sha256 of the bytes read (the layer digest).
    pub digest: Digest,
    /// Bytes read.
    pub size: u64,
    /// sha256 of the uncompressed tar (the DiffID).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Tar entries read (extended headers not counted).
    pub entries: u64,
    /// Whiteouts read.
    pub whiteouts: u64,
    /// Opaque markers read.
    pub opaque_markers: u64,
    /// Hard links read.
    pub hard_links: u64,
    /// Device nodes skipped by [`Policy::Strip`].
    pub devices_stripped: u64,
    /// Files whose setuid or setgid bits [`Policy::Strip`] cleared.
    pub setuid_stripped: u64,
    /// Overlay bookkeeping xattrs that were not applied.
    pub overlay_xattrs_dropped: u64,
    /// AUFS bookkeeping entries skipped.
    pub aufs_skipped: u64,
}

/// Imports the layer tar read from `reader` (plain, gzip or zstd, detected
/// from its bytes) into a new [`MemLayer`], all its file data in memory
/// (import into [`MemLayer::with_spill`] with [`import_into`] to bound it).
///
/// `below` are the layers under this one, top first (as
/// [`MergedView::new`] takes them); they give implied parent directories
/// their attributes and resolve hard links to files of lower layers.
///
/// ```
/// use std::sync::Arc;
/// use layerstack::oci::{ImportOptions, export_layer, import_layer, ExportOptions};
/// use layerstack::{Entry, Layer, LayerPath, MemLayer};
///
/// let mut layer = MemLayer::new();
/// layer.add_file("etc/app.conf", "port = 80\n")?;
/// layer.add_whiteout("etc/motd")?;
/// let layer: Arc<dyn Layer> = Arc::new(layer);
/// let (tar, _) = export_layer(&layer, &[], Vec::new(), &ExportOptions::default())?;
///
/// let (back, summary) = import_layer(&tar[..], &[], &ImportOptions::default())?;
/// assert_eq!(summary.whiteouts, 1);
/// assert_eq!(back.lookup(&LayerPath::new("etc/motd")?)?, Some(Entry::Whiteout));
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # Errors
/// As [`import_into`].
///
/// Importing a layer tar into a layer: the changeset itself, whiteouts kept
/// as whiteouts, so that a stack of imported layers rebuilds the image
/// exactly.
///
/// Entries are *applied*, never extracted: each becomes a call on a
/// [`LayerMut`], so nothing is ever written outside the layer, whatever the
/// tar says. The rules are the image spec's (`layer.md`) and Docker's,
/// decided by the same applier as [`flatten_layers`](crate::oci::flatten_layers)'s:
///
/// - A directory over a directory of the same layer merges: the later
///   entry's attributes win and the children stay. Anything else replaces
///   what the layer held at that name (a directory with everything in it).
/// - Parent directories the tar does not list are created, with the
///   attributes of the same directory in the layers below (as the kernel
///   copies a parent up), else (nothing below, or below a directory this
///   layer made opaque) mode `0755`, owner root, time 0. A parent
///   that is a symlink or file in this layer or below is refused
///   (`ENOTDIR`): nothing is ever written through a symlink.
/// - Whiteouts (see [`TarName`](crate::oci::TarName)) act on the layers below
///   only: `.wh.NAME` with no `NAME` in this layer becomes a whiteout; with
///   a directory `NAME` in this layer (before or after it in the tar), that
///   directory becomes opaque and keeps its entries; with a non-directory,
///   nothing more is needed (it hides the name below by itself).
/// - A hard link resolves to a non-directory earlier in this layer, or to
///   one the layers below show at that path, looked up without following
///   a symlink (it is then copied into this layer first, as `link()` on an
///   overlay mount copies up; this layer's own whiteouts act below and do
///   not hide it). Any other target is refused (`ENOENT`, or `EPERM` for a
///   directory); the target's parents are checked as an entry's are, in
///   this layer before the target below.
/// - `SCHILY.xattr.*` records become extended attributes, except
///   `trusted.overlay.*` and `user.overlay.*`, which are overlay
///   bookkeeping and are never applied (they are counted in the summary).
/// - Device nodes and setuid/setgid files follow [`ImportOptions`]'s
///   policies. The character device 0/0 is refused: it is overlayfs's
///   whiteout marker, which an OCI layer never holds.
pub fn import_layer<R: Read>(
    reader: R,
    below: &[Arc<dyn Layer>],
    options: &ImportOptions,
) -> Result<(MemLayer, ImportSummary)> {
    let mut layer = MemLayer::new();
    let summary = import_into(reader, &mut layer, below, options)?;
    Ok((layer, summary))
}

/// Imports the layer tar read from `reader` into `layer` (for example a
/// fresh [`DirLayer`](crate::DirLayer) upper), streaming: file data goes
/// straight into the layer, so memory stays bounded whatever the layer's
/// size. `below` as for [`import_layer`].
///
/// On error the layer holds part of the changeset: import into a fresh
/// layer and drop it on failure.
///
/// # Errors
/// `EBADMSG` for a malformed tar or compressed stream, `EDQUOT` past a
/// limit, `EINVAL` for a name with `..` or an invalid whiteout name,
/// `ENOTDIR` for an entry under a symlink or file, `ENOENT` for a hard link
/// to nothing, `EPERM` for a refused device or setuid file, and the
/// layer's own errors. Each names the tar entry.
pub fn import_into<R: Read>(
    reader: R,
    layer: &mut dyn LayerMut,
    below: &[Arc<dyn Layer>],
    options: &ImportOptions,
) -> Result<ImportSummary> {
    let mut raw = DigestReader::new(reader);
    let stream_error = |e: &io::Error| {
        Error::from_io(e, Operation::ImportLayer, "<layer>")
            .with_detail(format!("reading the layer: {e}"))
    };
    let decompressor = Decompressor::new(&mut raw).map_err(|e| stream_error(&e))?;
    let compression = decompressor.compression();
    let mut tar = TarReader::new(DigestReader::new(decompressor), options.limits);
    let mut importer = Importer {
        layer,
        below: BelowView::new(below)?,
        options,
        whited: HashSet::new(),
        dirs: HashMap::new(),
        summary: Counts::default(),
        buf: vec![0u8; CHUNK],
    };
    while let Some(entry) = tar.next_entry()? {
        apply_entry(&mut importer, &entry, &mut tar)?;
    }
    importer.finish_dirs()?;
    let counts = importer.summary;
    let entries = tar.entries_read();
    let uncompressed = tar.finish()?;
    let (decompressor, diff_id, uncompressed_size) = uncompressed.finish();
    drop(decompressor);
    io::copy(&mut raw, &mut io::sink()).map_err(|e| stream_error(&e))?;
    let (_, digest, size) = raw.finish();
    Ok(ImportSummary {
        compression,
        digest,
        size,
        diff_id,
        uncompressed_size,
        entries,
        whiteouts: counts.whiteouts,
        opaque_markers: counts.opaque_markers,
        hard_links: counts.hard_links,
        devices_stripped: counts.devices_stripped,
        setuid_stripped: counts.setuid_stripped,
        overlay_xattrs_dropped: counts.overlay_xattrs_dropped,
        aufs_skipped: counts.aufs_skipped,
    })
}

/// File data is read and written in pieces of this size; files up to it
/// are created in one step.
const CHUNK: usize = 1 << 20;

/// What an import counts (shared with `flatten`).
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) whiteouts: u64,
    pub(crate) opaque_markers: u64,
    pub(crate) hard_links: u64,
    pub(crate) devices_stripped: u64,
    pub(crate) setuid_stripped: u64,
    pub(crate) overlay_xattrs_dropped: u64,
    pub(crate) aufs_skipped: u64,
}

/// What the layers below show, looked up without following any symlink.
pub(crate) struct BelowView {
    view: Option<MergedView>,
    layers: Vec<Arc<dyn Layer>>,
}

impl BelowView {
    pub(crate) fn new(below: &[Arc<dyn Layer>]) -> Result<BelowView> {
        let view = if below.is_empty() {
            None
        } else {
            Some(MergedView::new(below.to_vec(), MemLayer::new())?)
        };
        Ok(BelowView {
            view,
            layers: below.to_vec(),
        })
    }

    /// The merged view of the layers below (none without layers).
    pub(crate) fn view(&self) -> Option<&MergedView> {
        self.view.as_ref()
    }

    /// The merged view of the layers below, kept.
    pub(crate) fn into_view(self) -> Option<MergedView> {
        self.view
    }

    /// The metadata of `path` below, if every parent is a real directory
    /// there (no symlink on the way) and the path exists.
    pub(crate) fn lookup(&self, path: &LayerPath) -> Result<Option<Metadata>> {
        let Some(view) = &self.view else {
            return Ok(None);
        };
        let mut prefix = LayerPath::root();
        let mut meta = None;
        for name in path.names() {
            if let Some(m) = &meta {
                let m: &Metadata = m;
                if !m.is_dir() {
                    return Ok(None);
                }
            }
            prefix = prefix.join(name)?;
            match view.symlink_metadata(prefix.as_name()) {
                Ok(m) => meta = Some(m),
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(meta)
    }

    /// The names the layers below show in directory `dir` (none if it is
    /// not a directory there).
    pub(crate) fn list(&self, dir: &LayerPath) -> Result<Vec<NameBuf>> {
        let Some(view) = &self.view else {
            return Ok(Vec::new());
        };
        match self.lookup(dir)? {
            Some(m) if m.is_dir() => {}
            _ if !dir.is_root() => return Ok(Vec::new()),
            _ => {}
        }
        Ok(view
            .read_dir(dir.as_name())?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }

    /// The layer below that holds `path` at that same path, if the view
    /// shows it from one.
    fn source(&self, path: &LayerPath) -> Result<Option<Arc<dyn Layer>>> {
        let (Some(view), Some(parent), Some(name)) = (&self.view, path.parent(), path.file_name())
        else {
            return Ok(None);
        };
        // The view's root is `/` (an empty path is ENOENT, as for the kernel).
        let dir: &[u8] = if parent.is_root() {
            b"/"
        } else {
            parent.as_bytes()
        };
        let entries = view.read_dir(dir)?;
        Ok(entries
            .into_iter()
            .find(|e| e.name == name)
            .and_then(|e| match e.source {
                LayerSource::Lower(i) => self.layers.get(i).cloned(),
                LayerSource::Upper => None,
            }))
    }
}

struct Importer<'a> {
    layer: &'a mut dyn LayerMut,
    below: BelowView,
    options: &'a ImportOptions,
    /// Names a whiteout of this layer deleted below.
    whited: HashSet<LayerPath>,
    /// Directories with their attributes, applied at the end (creating
    /// children changes a directory's times on disk); a later entry for the
    /// same directory replaces the attributes.
    dirs: HashMap<LayerPath, Metadata>,
    summary: Counts,
    buf: Vec<u8>,
}

pub(crate) fn entry_error(entry: &TarEntry, kind: ErrorKind, detail: impl Into<String>) -> Error {
    Error::new(kind, Operation::ImportLayer, &entry.name).with_detail(detail)
}

/// A layer's error reframed onto the tar entry, keeping its cause.
fn reframe(entry: &TarEntry) -> impl Fn(Error) -> Error + '_ {
    move |e: Error| Error::new(e.kind(), Operation::ImportLayer, &entry.name).with_detail(e.cause())
}

impl<R: Read> ApplyTarget<TarReader<R>> for Importer<'_> {
    /// Import has the layers below at hand: it never searches.
    type Search = Infallible;

    fn entry_error(&self, entry: &TarEntry, kind: ErrorKind, detail: &str) -> Error {
        entry_error(entry, kind, detail)
    }

    fn reframe(&self, entry: &TarEntry, e: Error) -> Error {
        reframe(entry)(e)
    }

    fn policies(&mut self) -> (Policy, Policy, &mut Counts) {
        (self.options.devices, self.options.setuid, &mut self.summary)
    }

    fn set_root(&mut self, meta: Metadata) -> Result<()> {
        self.dirs.insert(LayerPath::root(), meta);
        Ok(())
    }

    fn held(&mut self, path: &LayerPath, entry: &TarEntry) -> Result<Held> {
        Ok(match self.layer.lookup(path).map_err(reframe(entry))? {
            Some(Entry::Node(node)) if node.meta.is_dir() => Held::Dir {
                opaque: node.opaque,
            },
            Some(Entry::Node(node)) => Held::NonDir(node.meta.file_type),
            Some(Entry::Whiteout) => Held::Whiteout,
            None => Held::Nothing,
        })
    }

    fn below(
        &mut self,
        path: &LayerPath,
        _ask: Ask,
        _entry: &TarEntry,
    ) -> Result<Answer<Option<Metadata>, Infallible>> {
        Ok(Answer::Now(self.below.lookup(path)?))
    }

    fn implied_dir(
        &mut self,
        dir: &LayerPath,
        meta: Answer<Metadata, Infallible>,
        opaque: bool,
        entry: &TarEntry,
    ) -> Result<()> {
        let Answer::Now(meta) = meta;
        self.make_dir(dir, meta, opaque, entry)
    }

    fn note_whited(&mut self, path: &LayerPath) {
        self.whited.insert(path.clone());
    }

    fn whited(&self, path: &LayerPath) -> bool {
        self.whited.contains(path)
    }

    fn set_opaque(&mut self, dir: &LayerPath, entry: &TarEntry) -> Result<()> {
        self.layer.set_opaque(dir, true).map_err(reframe(entry))
    }

    fn whiteout(&mut self, path: &LayerPath, entry: &TarEntry) -> Result<()> {
        self.layer.whiteout(path).map_err(reframe(entry))
    }

    fn merge_dir(&mut self, path: &LayerPath, meta: Metadata) -> Result<()> {
        self.dirs.insert(path.clone(), meta);
        Ok(())
    }

    fn replace(&mut self, _path: &LayerPath, entry: &TarEntry) -> Result<()> {
        Importer::replace(self, entry)
    }

    fn copy_up(
        &mut self,
        link: &LayerPath,
        found: Answer<Metadata, Infallible>,
        entry: &TarEntry,
    ) -> Result<()> {
        let Answer::Now(meta) = found;
        self.copy_up_link_target(entry, link, &meta)
    }

    fn link(&mut self, entry: &TarEntry, link: &LayerPath) -> Result<()> {
        self.layer
            .hard_link(link, &entry.path)
            .map_err(reframe(entry))
    }

    fn create(
        &mut self,
        entry: &TarEntry,
        meta: Metadata,
        whited: bool,
        tar: &mut TarReader<R>,
    ) -> Result<()> {
        let path = &entry.path;
        match &entry.kind {
            TarKind::Dir => self.make_dir(path, meta, whited, entry),
            TarKind::Symlink(target) => self
                .layer
                .create(path, &meta, Content::Symlink(target.clone()))
                .map_err(reframe(entry)),
            TarKind::CharDevice(_) | TarKind::BlockDevice(_) | TarKind::Fifo => self
                .layer
                .create(path, &meta, Content::Special)
                .map_err(reframe(entry)),
            TarKind::File => self.write_file(entry, &meta, tar),
            TarKind::HardLink(_) => unreachable!("hard links are applied by `link`"),
        }
    }
}

impl Importer<'_> {
    /// Creates directory `dir`, opaque or not; its attributes are set at
    /// the end.
    fn make_dir(
        &mut self,
        dir: &LayerPath,
        meta: Metadata,
        opaque: bool,
        entry: &TarEntry,
    ) -> Result<()> {
        if opaque {
            self.layer.create_opaque_dir(dir, &meta)
        } else {
            self.layer.create(dir, &meta, Content::Dir)
        }
        .map_err(reframe(entry))?;
        self.dirs.insert(dir.clone(), meta);
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &TarEntry,
        meta: &Metadata,
        tar: &mut TarReader<R>,
    ) -> Result<()> {
        let path = &entry.path;
        if entry.sparse.is_none() && entry.size <= CHUNK as u64 {
            let len = usize::try_from(entry.size).unwrap_or(CHUNK);
            let mut data = vec![0u8; len];
            read_full(tar, &mut data, entry)?;
            let content = Content::File(FileData::from(Bytes::from(data)));
            return self
                .layer
                .create(path, meta, content)
                .map_err(reframe(entry));
        }
        self.layer
            .create(path, meta, Content::File(FileData::new()))
            .map_err(reframe(entry))?;
        loop {
            // A sparse file's data goes at its regions; the holes between
            // them are never written (a layer keeps them as holes).
            let offset = tar.data_offset();
            let n = read_some(tar, &mut self.buf, entry)?;
            if n == 0 {
                break;
            }
            self.layer
                .write_at(path, offset, &self.buf[..n])
                .map_err(reframe(entry))?;
        }
        if entry.sparse.is_some() {
            self.layer
                .set_len(path, entry.size)
                .map_err(reframe(entry))?;
        }
        // Writing may have changed the times (on disk).
        self.layer.set_metadata(path, meta).map_err(reframe(entry))
    }

    /// Brings a hard link's target from the layers below into this one:
    /// `meta`, what they show at `target`.
    fn copy_up_link_target(
        &mut self,
        entry: &TarEntry,
        target: &LayerPath,
        meta: &Metadata,
    ) -> Result<()> {
        // `meta` came from the view: there is one.
        let Some(view) = self.below.view.as_ref() else {
            return Err(entry_error(entry, ErrorKind::NotFound, "no layers below"));
        };
        match meta.file_type {
            FileType::File => {
                if let Some(src) = self.below.source(target)?
                    && self
                        .layer
                        .copy_file(target, meta, src.as_ref(), target)
                        .is_ok()
                {
                    return Ok(());
                }
                // Not at the same path below (a redirect): copy what the
                // view reads, after whatever a failed attempt left.
                if self.layer.lookup(target).map_err(reframe(entry))?.is_some() {
                    self.layer.remove(target).map_err(reframe(entry))?;
                }
                let data = view.read(target.as_name())?;
                self.layer
                    .create(target, meta, Content::File(FileData::from(data)))
                    .map_err(reframe(entry))
            }
            FileType::Symlink => {
                let link = view.read_link(target.as_name())?;
                self.layer
                    .create(target, meta, Content::Symlink(link))
                    .map_err(reframe(entry))
            }
            _ => self
                .layer
                .create(target, meta, Content::Special)
                .map_err(reframe(entry)),
        }
    }

    /// Removes what this layer holds at the entry's path, with everything
    /// below it, and forgets the attributes of the directories removed (a
    /// file that replaces a directory must not get its attributes, and a
    /// removed subdirectory has nothing left to set them on).
    fn replace(&mut self, entry: &TarEntry) -> Result<()> {
        let path = &entry.path;
        remove_all(self.layer, path).map_err(reframe(entry))?;
        self.dirs.retain(|dir, _| !dir.starts_with(path));
        Ok(())
    }

    /// Applies directory attributes, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by(|a, b| b.0.depth().cmp(&a.0.depth()).then_with(|| a.0.cmp(&b.0)));
        for (path, meta) in &dirs {
            self.layer.set_metadata(path, meta)?;
        }
        Ok(())
    }
}

/// Whether a device entry is kept under `policy` (`false`: skip it); the
/// character device 0/0 is always refused. Other entries are kept.
pub(super) fn keep_device(entry: &TarEntry, policy: Policy, counts: &mut Counts) -> Result<bool> {
    let (TarKind::CharDevice(rdev) | TarKind::BlockDevice(rdev)) = entry.kind else {
        return Ok(true);
    };
    if rdev == 0 && matches!(entry.kind, TarKind::CharDevice(_)) {
        return Err(entry_error(
            entry,
            ErrorKind::NotPermitted,
            "character device 0/0 is the overlayfs whiteout marker; an OCI layer deletes with `.wh.` names",
        ));
    }
    match policy {
        Policy::Keep => Ok(true),
        Policy::Strip => {
            counts.devices_stripped += 1;
            Ok(false)
        }
        Policy::Refuse => Err(entry_error(
            entry,
            ErrorKind::NotPermitted,
            "device node refused by policy",
        )),
    }
}

/// The metadata an entry gives its object, after the setuid policy, with
/// overlay bookkeeping xattrs dropped and the other xattr names checked.
pub(super) fn object_meta(
    entry: &TarEntry,
    setuid: Policy,
    counts: &mut Counts,
) -> Result<Metadata> {
    let mut meta = entry.metadata();
    let dropped = meta
        .xattrs
        .names()
        .filter(|n| is_bookkeeping_xattr(n))
        .count();
    if dropped > 0 {
        meta.xattrs.retain(|name, _| !is_bookkeeping_xattr(name));
        counts.overlay_xattrs_dropped += dropped as u64;
    }
    for (name, _) in meta.xattrs.iter() {
        check_xattr_name(name, Operation::ImportLayer, &entry.name)?;
    }
    if !meta.is_dir() && meta.mode & (S_ISUID | S_ISGID) != 0 {
        match setuid {
            Policy::Keep => {}
            Policy::Strip => {
                meta.mode &= !(S_ISUID | S_ISGID);
                counts.setuid_stripped += 1;
            }
            Policy::Refuse => {
                return Err(entry_error(
                    entry,
                    ErrorKind::NotPermitted,
                    format!(
                        "setuid/setgid file (mode {:04o}) refused by policy",
                        meta.mode
                    ),
                ));
            }
        }
    }
    Ok(meta)
}

fn read_some<R: Read>(tar: &mut TarReader<R>, buf: &mut [u8], entry: &TarEntry) -> Result<usize> {
    tar.read_data(buf)
        .map_err(|e| e.reframe(Operation::ImportLayer, &entry.name))
}

fn read_full<R: Read>(tar: &mut TarReader<R>, buf: &mut [u8], entry: &TarEntry) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = read_some(tar, &mut buf[filled..], entry)?;
        if n == 0 {
            return Err(entry_error(
                entry,
                ErrorKind::InvalidData,
                "the tar is truncated inside the file's data",
            ));
        }
        filled += n;
    }
    Ok(())
}

/// Removes what `layer` holds at `path`, with everything below it.
fn remove_all(layer: &mut dyn LayerMut, path: &LayerPath) -> Result<()> {
    if let Some(Entry::Node(node)) = layer.lookup(path)?
        && node.meta.is_dir()
    {
        for (name, _) in layer.read_dir(path)?.entries {
            remove_all(layer, &path.join(&name)?)?;
        }
    }
    layer.remove(path)
}

#[cfg(test)]
mod tests;
