use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use tar::EntryType;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::mem::MemLayer;
use crate::layer::{Entry, EntryKind, Layer, Node};
use crate::merged::LayerSource;
use crate::meta::{FileType, MODE_MASK, Metadata, Timestamp, major, minor};
use crate::oci::image::digest::{Digest, DigestWriter};
use crate::oci::tar::compress::{Compression, Compressor};
use crate::oci::tar::header::{BLOCK, HeaderSpec, build_header, normalised, pax_header};
use crate::oci::tar::whiteout::{OPAQUE_MARKER, WHITEOUT_PREFIX, is_reserved, whiteout_name};
use crate::path::{LayerPath, Name, PathLike};
use crate::view::MergedView;

/// How [`export_layer`] writes a layer.
///
/// ```
/// use layerstack::Timestamp;
/// use layerstack::oci::Compression;
/// use layerstack::oci::ExportOptions;
///
/// let options = ExportOptions::new()
///     .compression(Compression::Zstd)
///     .clamp_mtime(Timestamp::new(1_700_000_000, 0));
/// assert_eq!(options.compression, Compression::Zstd);
/// assert_eq!(ExportOptions::default().compression, Compression::Gzip);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportOptions {
    /// How the tar is compressed (gzip by default).
    pub compression: Compression,
    /// Every mtime later than this is written as this (as
    /// `SOURCE_DATE_EPOCH` does); `None` keeps every mtime.
    pub clamp_mtime: Option<Timestamp>,
}

impl ExportOptions {
    /// The defaults: gzip, mtimes kept.
    #[must_use]
    pub fn new() -> ExportOptions {
        ExportOptions::default()
    }

    /// Sets [`ExportOptions::compression`] (builder style).
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> ExportOptions {
        self.compression = compression;
        self
    }

    /// Sets [`ExportOptions::clamp_mtime`] to `t` (builder style).
    #[must_use]
    pub fn clamp_mtime(mut self, t: Timestamp) -> ExportOptions {
        self.clamp_mtime = Some(t);
        self
    }
}

/// What identifies an exported layer: the values of its descriptor in a
/// manifest and of its DiffID in the image config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerDigests {
    /// The compression of the bytes written.
    pub compression: Compression,
    /// The layer digest: sha256 of the bytes written.
    pub digest: Digest,
    /// The number of bytes written.
    pub size: u64,
    /// The DiffID: sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The size of the uncompressed tar.
    pub uncompressed_size: u64,
}

impl LayerDigests {
    /// The OCI media type of the layer (by its compression).
    #[must_use]
    pub fn media_type(&self) -> &'static str {
        self.compression.layer_media_type()
    }
}

/// Writes `layer` to `out` as an OCI layer tar (see the [module
/// documentation](export_layer) for the format) and returns `out` with the
/// layer's digests, computed while writing.
///
/// `below` are the layers under `layer`, top first (as
/// [`MergedView::new`] takes lowers). They are read only to write the full
/// contents of a redirected directory; pass `&[]` when the layer has none.
/// `layer` is an [`Arc`] because such a directory is read through a
/// [`MergedView`] of `layer` over `below`.
///
/// `out` receives large writes (the tar is buffered); nothing flushes it,
/// so a caller writing to a file flushes or syncs it afterwards.
///
/// ```
/// use std::sync::Arc;
/// use layerstack::{Layer, MemLayer};
/// use layerstack::oci::{Compression, Digest};
/// use layerstack::oci::{ExportOptions, export_layer};
///
/// let mut layer = MemLayer::new();
/// layer.add_file("etc/app.conf", "port = 8080\n")?;
/// layer.add_whiteout("etc/motd")?;
/// let layer: Arc<dyn Layer> = Arc::new(layer);
///
/// let options = ExportOptions::new().compression(Compression::None);
/// let (tar, digests) = export_layer(&layer, &[], Vec::new(), &options)?;
/// assert_eq!(digests.digest, Digest::of(&tar));
/// assert_eq!(digests.diff_id, digests.digest); // not compressed
/// assert_eq!(digests.media_type(), "application/vnd.oci.image.layer.v1.tar");
/// // `etc/`, `etc/.wh.motd`, `etc/app.conf`: one header each, one block of
/// // data, two zero blocks at the end.
/// assert_eq!(tar.len(), 512 * 6);
/// assert_eq!(&tar[..4], b"etc/");
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # Errors
/// `EOPNOTSUPP` for a socket or a device number too large for a tar
/// header; `EINVAL` for a name starting with `.wh.`, a symlink target with
/// a NUL byte or an extended attribute name with `=` or a NUL byte; `EIO`
/// if a file's data does not match its size; errors of the layers'
/// storage and of writing to `out`. The error names the entry's path.
///
/// Exporting a layer as an OCI layer tar, deterministically, with its
/// digests computed in the same pass.
///
/// [`export_layer`] writes any [`Layer`] (typically a committed upper layer)
/// as the changeset tar of the OCI image spec (`layer.md`), compressed or
/// not, and returns the layer digest (sha256 of the bytes written) and the
/// DiffID (sha256 of the uncompressed tar). The bytes flow once:
/// tar → DiffID hasher → compressor → digest hasher → the caller's writer;
/// file data is streamed in chunks through [`Layer::read_at`], never held
/// whole.
///
/// # The tar
///
/// Every header is written by this module (POSIX ustar plus PAX `x`
/// extended headers), so the same layer content always gives the same
/// bytes, whatever its inode numbers, access and change times or the order
/// its entries were created in:
///
/// - Names are relative (no leading `/` or `./`); directories end in `/`.
///   Entries are sorted by their path components, parents before children;
///   a directory's opaque marker comes right after the directory itself.
///   The root directory gets no entry (as Docker writes layers).
/// - Types: directory `5`, regular file `0`, symlink `2` (target verbatim),
///   hard link `1`, fifo `6`, character device `3`, block device `4` (major
///   and minor from [`Metadata::rdev`]). A socket cannot be stored in a tar:
///   exporting one fails with `EOPNOTSUPP`.
/// - Mode: the permission bits with setuid, setgid and sticky; owners are
///   numeric only (user and group names are empty); only the mtime is
///   stored (no atime or ctime).
/// - A PAX extended header (named `././@PaxHeader`, mode `0o644`, mtime 0)
///   precedes an entry only where ustar cannot hold a value: `path` for a
///   name over 100 bytes (the ustar prefix field is never used), `linkpath`
///   for a link target over 100 bytes, `uid`/`gid` over `0o7777777`, `size`
///   of 8 GiB or more, `mtime` before the epoch, past the 11 octal digits
///   of ustar or with nanoseconds (`SEC.NNNNNNNNN`, trailing zeros trimmed),
///   and each extended attribute as `SCHILY.xattr.NAME` (binary values
///   allowed). Where a PAX record holds a value, the ustar field holds 0 (or
///   the seconds of an mtime, or the first 100 bytes of a name).
/// - Extended attributes named `trusted.overlay.*` or `user.overlay.*` are
///   overlayfs bookkeeping and never go into a layer.
/// - [`ExportOptions::clamp_mtime`] lowers every later mtime to it, as
///   `SOURCE_DATE_EPOCH` does for reproducible builds.
/// - The archive ends with two zero blocks.
///
/// # Whiteouts and opaque directories
///
/// An [`Entry::Whiteout`] at `d/x` becomes an empty regular file
/// `d/.wh.x`; an opaque directory `d` is followed by an empty regular file
/// `d/.wh..wh..opq` (an opaque root by `.wh..wh..opq` at the top). These
/// markers have mode 0, owner 0 and mtime 0. A real object (or a whiteout)
/// whose name starts with `.wh.` cannot be told from a marker in a tar, so
/// exporting one fails with `EINVAL`.
///
/// # Hard links
///
/// Names of the layer with the same [`Metadata::ino`] and an `nlink` above
/// 1 are one object (as [`copy_layer`](crate::layer::copy_layer) takes
/// them): the first name in the tar holds the object, later names are
/// hard-link entries (type `1`, no data, no extended attributes) pointing
/// at it.
///
/// # Redirected directories
///
/// A directory renamed in an overlay with the redirect option carries
/// [`Node::redirect`]: its contents below this layer live at another path.
/// An OCI layer cannot express a redirect, so such a directory is written
/// as an opaque directory holding its *full* contents as the merged view of
/// this layer over `below` shows them (every object under it, recursively,
/// symlinks never followed); the layer's own entries under it are part of
/// that view and are not written again. The rename's source already is a
/// whiteout in the layer. This is the one case where an export reads the
/// layers below, and where the tar can grow as large as the renamed tree.
///
/// # Limitations
///
/// - The layer is read as it is while the export runs; nothing freezes it.
///   A file whose data no longer matches its size fails the export (`EIO`)
///   rather than giving a tar whose data differs from its header.
/// - A redirect on the root directory (which overlayfs never writes) is
///   ignored.
/// - Device numbers with a major or minor above `0o7777777` (more than
///   Linux uses) have no portable tar encoding and fail with `EOPNOTSUPP`.
/// - Hard links are recognised by inode number and link count alone, so a
///   [`Layer`] implementation must report both truthfully (or `nlink` 1).
pub fn export_layer<W: Write>(
    layer: &Arc<dyn Layer>,
    below: &[Arc<dyn Layer>],
    out: W,
    options: &ExportOptions,
) -> Result<(W, LayerDigests)> {
    let stored = DigestWriter::new(out);
    let compressor = Compressor::new(stored, options.compression);
    let tar = BufWriter::with_capacity(BUFFER_SIZE, DigestWriter::new(compressor));
    let mut exporter = Exporter {
        layer,
        below,
        clamp: options.clamp_mtime,
        tar,
        links: HashMap::new(),
        view: None,
    };
    exporter.run()?;
    let Exporter { tar, .. } = exporter;

    let end = "/";
    let tar = tar
        .into_inner()
        .map_err(|e| Error::from_io(e.error(), Operation::ExportLayer, end))?;
    let (compressor, diff_id, uncompressed_size) = tar.finish();
    let stored = compressor
        .finish()
        .map_err(|e| Error::from_io(&e, Operation::ExportLayer, end))?;
    let (out, digest, size) = stored.finish();
    Ok((
        out,
        LayerDigests {
            compression: options.compression,
            digest,
            size,
            diff_id,
            uncompressed_size,
        },
    ))
}

/// How much file data is read at once.
const CHUNK: usize = 1 << 20;
/// The buffer between the tar and the hashers and compressor.
const BUFFER_SIZE: usize = 64 * 1024;

/// Identifies one object for hard links: the layer's own inode numbers and
/// the merged view's are separate spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LinkKey {
    Layer(u64),
    View(u64),
}

/// Where an object's data and symlink target are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Layer,
    View,
}

/// One pending step of the walk: an entry of the layer, or an object the
/// merged view shows under a redirected directory.
enum Item {
    Layer(LayerPath),
    Merged(LayerPath, LayerSource),
}

type TarSink<W> = BufWriter<DigestWriter<Compressor<DigestWriter<W>>>>;

struct Exporter<'a, W: Write> {
    layer: &'a Arc<dyn Layer>,
    below: &'a [Arc<dyn Layer>],
    clamp: Option<Timestamp>,
    tar: TarSink<W>,
    /// The first tar name of each hard-linked object, with its type.
    links: HashMap<LinkKey, (Vec<u8>, FileType)>,
    /// The merged view for redirected directories, made when first needed.
    view: Option<MergedView>,
}

impl<W: Write> Exporter<'_, W> {
    fn run(&mut self) -> Result<()> {
        let root = LayerPath::root();
        let root_entry = self
            .layer
            .lookup(&root)
            .map_err(|e| e.reframe(Operation::ExportLayer, "/"))?;
        // A root redirect cannot happen in overlayfs; it is ignored.
        if let Some(Entry::Node(Node { opaque: true, .. })) = root_entry {
            self.write_marker(OPAQUE_MARKER, &root)?;
        }
        // Depth first with an explicit stack (paths can be 2000 levels
        // deep); each directory's children are pushed in reverse order.
        let mut todo: Vec<Item> = Vec::new();
        self.push_layer_children(&root, &mut todo)?;
        while let Some(item) = todo.pop() {
            match item {
                Item::Layer(path) => self.export_layer_entry(&path, &mut todo)?,
                Item::Merged(path, source) => self.export_merged(&path, source, &mut todo)?,
            }
        }
        self.write_all(&[0; 2 * BLOCK], &root)
    }

    /// Pushes the children of layer directory `dir`, ordered by their tar
    /// names (`.wh.NAME` for a whiteout).
    fn push_layer_children(&self, dir: &LayerPath, todo: &mut Vec<Item>) -> Result<()> {
        let listing = self
            .layer
            .read_dir(dir)
            .map_err(|e| e.reframe(Operation::ExportLayer, dir.as_name()))?;
        let mut children: Vec<(Vec<u8>, LayerPath)> = Vec::with_capacity(listing.entries.len());
        for (name, kind) in listing.entries {
            let path = dir
                .join(&name)
                .map_err(|e| e.reframe(Operation::ExportLayer, dir.as_name()))?;
            let key = match kind {
                EntryKind::Whiteout => [WHITEOUT_PREFIX.as_bytes(), name.as_bytes()].concat(),
                EntryKind::Node(_) => name.into_bytes(),
            };
            children.push((key, path));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        todo.extend(children.into_iter().rev().map(|(_, p)| Item::Layer(p)));
        Ok(())
    }

    fn export_layer_entry(&mut self, path: &LayerPath, todo: &mut Vec<Item>) -> Result<()> {
        let entry = self
            .layer
            .lookup(path)
            .map_err(|e| e.reframe(Operation::ExportLayer, path.as_name()))?;
        check_name(path)?;
        match entry {
            // Listed but gone: the layer changed while listed.
            None => Ok(()),
            Some(Entry::Whiteout) => {
                let marker = whiteout_name(path.file_name().unwrap_or_default());
                self.write_marker(&marker, &path.parent().unwrap_or_default())
            }
            Some(Entry::Node(node)) if node.meta.is_dir() => {
                self.write_object(
                    path,
                    &node.meta,
                    LinkKey::Layer(node.meta.ino),
                    Source::Layer,
                )?;
                if node.redirect.is_some() {
                    self.write_marker(OPAQUE_MARKER, path)?;
                    self.push_merged_children(path, todo)
                } else {
                    if node.opaque {
                        self.write_marker(OPAQUE_MARKER, path)?;
                    }
                    self.push_layer_children(path, todo)
                }
            }
            Some(Entry::Node(node)) => self.write_object(
                path,
                &node.meta,
                LinkKey::Layer(node.meta.ino),
                Source::Layer,
            ),
        }
    }

    fn view(&mut self, path: &LayerPath) -> Result<&MergedView> {
        let view = match self.view.take() {
            Some(view) => view,
            None => {
                let mut lowers = Vec::with_capacity(self.below.len() + 1);
                lowers.push(Arc::clone(self.layer));
                lowers.extend(self.below.iter().cloned());
                MergedView::new(lowers, MemLayer::new())
                    .map_err(|e| e.reframe(Operation::ExportLayer, path.as_name()))?
            }
        };
        Ok(self.view.insert(view))
    }

    /// Pushes the children of `dir` as the merged view shows them.
    fn push_merged_children(&mut self, dir: &LayerPath, todo: &mut Vec<Item>) -> Result<()> {
        let reframe = |e: Error| e.reframe(Operation::ExportLayer, dir.as_name());
        let mut entries = self.view(dir)?.read_dir(dir.as_name()).map_err(reframe)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut children = Vec::with_capacity(entries.len());
        for entry in entries {
            children.push(Item::Merged(
                dir.join(&entry.name).map_err(reframe)?,
                entry.source,
            ));
        }
        todo.extend(children.into_iter().rev());
        Ok(())
    }

    fn export_merged(
        &mut self,
        path: &LayerPath,
        source: LayerSource,
        todo: &mut Vec<Item>,
    ) -> Result<()> {
        check_name(path)?;
        let reframe = |e: Error| e.reframe(Operation::ExportLayer, path.as_name());
        let meta = self
            .view(path)?
            .symlink_metadata(path.as_name())
            .map_err(reframe)?;
        // An object of `layer` itself is keyed by its inode number in the
        // layer, so that it links with its names outside the directory.
        let key = match source {
            LayerSource::Lower(0) => match self.layer.lookup(path).map_err(reframe)? {
                Some(Entry::Node(node)) => LinkKey::Layer(node.meta.ino),
                _ => LinkKey::View(meta.ino),
            },
            _ => LinkKey::View(meta.ino),
        };
        self.write_object(path, &meta, key, Source::View)?;
        if meta.is_dir() {
            self.push_merged_children(path, todo)?;
        }
        Ok(())
    }

    fn clamped(&self, t: Timestamp) -> Timestamp {
        let t = normalised(t);
        match self.clamp.map(normalised) {
            Some(max) if t > max => max,
            _ => t,
        }
    }

    /// Writes an empty whiteout or opaque marker named `name` in `dir`.
    fn write_marker(&mut self, name: impl PathLike, dir: &LayerPath) -> Result<()> {
        let name = name.path_bytes();
        let mut tar_name = tar_name(dir, false);
        if !dir.is_root() {
            tar_name.push(b'/');
        }
        tar_name.extend_from_slice(name);
        let spec = HeaderSpec {
            name: &tar_name,
            entry_type: EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: self.clamped(Timestamp::EPOCH),
            link: None,
            device: None,
            xattrs: None,
        };
        // The error names the deleted path (or the opaque directory).
        let error_path = if name == OPAQUE_MARKER.as_bytes() {
            dir.clone()
        } else {
            dir.join_unchecked(Name::new(
                name.strip_prefix(WHITEOUT_PREFIX.as_bytes())
                    .unwrap_or(name),
            ))
        };
        self.write_header(&spec, &error_path)
    }

    /// Writes one object: its header (or a hard-link entry for a later
    /// name of a linked object), then its data.
    fn write_object(
        &mut self,
        path: &LayerPath,
        meta: &Metadata,
        key: LinkKey,
        source: Source,
    ) -> Result<()> {
        let reframe = |e: Error| e.reframe(Operation::ExportLayer, path.as_name());
        let file_type = meta.file_type;
        let tar_name = tar_name(path, file_type.is_dir());
        let mtime = self.clamped(meta.mtime);
        let mut spec = HeaderSpec {
            name: &tar_name,
            entry_type: EntryType::Regular,
            mode: meta.mode & MODE_MASK,
            uid: meta.uid,
            gid: meta.gid,
            size: 0,
            mtime,
            link: None,
            device: None,
            xattrs: Some(&meta.xattrs),
        };

        if !file_type.is_dir() && meta.nlink > 1 {
            match self.links.get(&key) {
                Some((first, first_type)) if *first_type == file_type => {
                    let first = first.clone();
                    spec.entry_type = EntryType::Link;
                    spec.link = Some(&first);
                    // The attributes belong to the object, written with
                    // its first name.
                    spec.xattrs = None;
                    return self.write_header(&spec, path);
                }
                Some(_) => {}
                None => {
                    self.links.insert(key, (tar_name.clone(), file_type));
                }
            }
        }

        match file_type {
            FileType::Dir => {
                spec.entry_type = EntryType::Directory;
                self.write_header(&spec, path)
            }
            FileType::File => {
                spec.size = meta.size;
                self.write_header(&spec, path)?;
                self.write_data(path, meta.size, source)
            }
            FileType::Symlink => {
                let target = match source {
                    Source::Layer => self.layer.read_link(path).map_err(reframe)?,
                    Source::View => self
                        .view(path)?
                        .read_link(path.as_name())
                        .map_err(reframe)?,
                };
                spec.entry_type = EntryType::Symlink;
                spec.link = Some(target.as_bytes());
                self.write_header(&spec, path)
            }
            FileType::Fifo => {
                spec.entry_type = EntryType::Fifo;
                self.write_header(&spec, path)
            }
            FileType::CharDevice | FileType::BlockDevice => {
                spec.entry_type = if file_type == FileType::CharDevice {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                spec.device = Some((major(meta.rdev), minor(meta.rdev)));
                self.write_header(&spec, path)
            }
            FileType::Socket => Err(Error::new(
                ErrorKind::Unsupported,
                Operation::ExportLayer,
                path.as_name(),
            )
            .with_detail("a socket cannot be stored in a tar")),
        }
    }

    /// Streams `size` bytes of regular file `path`, then the padding.
    ///
    /// The last read asks for one byte more than the header promised, so a
    /// file whose data no longer matches its size (it changed while being
    /// exported) is an error instead of a tar entry with other data,
    /// without a read more per file. A read that returns fewer bytes than
    /// asked is the end of the file, as [`Layer::read_at`] promises.
    fn write_data(&mut self, path: &LayerPath, size: u64, source: Source) -> Result<()> {
        let reframe = |e: Error| e.reframe(Operation::ExportLayer, path.as_name());
        let mut offset = 0u64;
        loop {
            let left = size - offset;
            let ask = usize::try_from(left)
                .ok()
                .filter(|&left| left < CHUNK)
                .map_or(CHUNK, |left| left + 1);
            let chunk = match source {
                Source::Layer => self.layer.read_at(path, offset, ask).map_err(reframe)?,
                Source::View => self
                    .view(path)?
                    .read_at(path.as_name(), offset, ask)
                    .map_err(reframe)?,
            };
            let len = chunk.len() as u64;
            if len > left {
                return Err(changed_size(path, size));
            }
            self.write_all(&chunk, path)?;
            offset += len;
            if chunk.len() < ask {
                if offset != size {
                    return Err(changed_size(path, size));
                }
                return self.write_padding(size, path);
            }
        }
    }

    fn write_header(&mut self, spec: &HeaderSpec<'_>, path: &LayerPath) -> Result<()> {
        let (header, pax) = build_header(spec, path)?;
        if !pax.is_empty() {
            let pax_header = pax_header(pax.len() as u64);
            self.write_all(pax_header.as_bytes(), path)?;
            self.write_all(&pax, path)?;
            self.write_padding(pax.len() as u64, path)?;
        }
        self.write_all(header.as_bytes(), path)
    }

    fn write_padding(&mut self, len: u64, path: &LayerPath) -> Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem == 0 {
            return Ok(());
        }
        self.write_all(&[0; BLOCK][rem..], path)
    }

    fn write_all(&mut self, bytes: &[u8], path: &LayerPath) -> Result<()> {
        let shown: &[u8] = if path.is_root() {
            b"/"
        } else {
            path.as_bytes()
        };
        self.tar
            .write_all(bytes)
            .map_err(|e| Error::from_io(&e, Operation::ExportLayer, shown))
    }
}

/// The bytes of `path` as a tar name (a directory's ends in `/`).
fn tar_name(path: &LayerPath, dir: bool) -> Vec<u8> {
    let mut name = path.as_bytes().to_vec();
    if dir {
        name.push(b'/');
    }
    name
}

fn changed_size(path: &LayerPath, size: u64) -> Error {
    Error::new(ErrorKind::Io, Operation::ExportLayer, path.as_name()).with_detail(format!(
        "the file's data does not match its size of {size} bytes (changed while exported?)"
    ))
}

/// Refuses a name the whiteout encoding reserves.
fn check_name(path: &LayerPath) -> Result<()> {
    match path.file_name() {
        Some(name) if is_reserved(name) => Err(Error::new(
            ErrorKind::InvalidInput,
            Operation::ExportLayer,
            path.as_name(),
        )
        .with_detail("name is reserved by the OCI whiteout encoding")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write as _};
    use std::process::{Command, Stdio};

    use tar::Header;

    use super::*;
    use crate::layer::LayerMut;
    use crate::merged::{Clock, DirRename, ViewOptions};
    use crate::meta::makedev;
    use crate::oci::tar::compress::Decompressor;
    use crate::oci::tar::header::{NAME_FIELD, PAX_HEADER_NAME};

    /// One tar entry as a reader sees it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Got {
        name: String,
        kind: char,
        mode: u32,
        uid: u64,
        gid: u64,
        size: u64,
        /// The PAX `mtime` if there is one, else the header's.
        mtime: String,
        link: Option<String>,
        device: Option<(u32, u32)>,
        content: Vec<u8>,
        xattrs: Vec<(String, Vec<u8>)>,
        /// The keys of the entry's PAX records, in order.
        pax: Vec<String>,
    }

    fn got(name: &str, kind: char, mode: u32) -> Got {
        Got {
            name: name.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: "0".to_owned(),
            link: None,
            device: None,
            content: Vec::new(),
            xattrs: Vec::new(),
            pax: Vec::new(),
        }
    }

    fn dir(name: &str) -> Got {
        got(name, '5', 0o755)
    }

    fn file(name: &str, content: &[u8]) -> Got {
        got(name, '0', 0o644).content(content)
    }

    fn marker(name: &str) -> Got {
        got(name, '0', 0)
    }

    fn symlink(name: &str, target: &str) -> Got {
        got(name, '2', 0o777).link(target)
    }

    impl Got {
        fn content(mut self, content: &[u8]) -> Got {
            self.size = content.len() as u64;
            self.content = content.to_vec();
            self
        }
        fn mode(mut self, mode: u32) -> Got {
            self.mode = mode;
            self
        }
        fn owner(mut self, uid: u64, gid: u64) -> Got {
            self.uid = uid;
            self.gid = gid;
            self
        }
        fn mtime(mut self, mtime: &str) -> Got {
            self.mtime = mtime.to_owned();
            self
        }
        fn link(mut self, target: &str) -> Got {
            self.link = Some(target.to_owned());
            self
        }
        fn device(mut self, major: u32, minor: u32) -> Got {
            self.device = Some((major, minor));
            self
        }
        fn xattr(mut self, name: &str, value: &[u8]) -> Got {
            self.xattrs.push((name.to_owned(), value.to_vec()));
            self
        }
        fn pax(mut self, keys: &[&str]) -> Got {
            self.pax = keys.iter().map(|k| (*k).to_owned()).collect();
            self
        }
    }

    /// Reads a tar with the `tar` crate (entries, never unpack).
    fn read_tar(tar: &[u8]) -> Vec<Got> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut pax = Vec::new();
            let mut xattrs = Vec::new();
            let mut pax_mtime = None;
            if let Some(records) = entry.pax_extensions().unwrap() {
                for record in records {
                    let record = record.unwrap();
                    let key = record.key().unwrap().to_owned();
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_owned(), record.value_bytes().to_vec()));
                    }
                    if key == "mtime" {
                        pax_mtime = Some(record.value().unwrap().to_owned());
                    }
                    pax.push(key);
                }
            }
            let header = entry.header().clone();
            let kind = char::from(header.entry_type().as_byte());
            let device = matches!(kind, '3' | '4').then(|| {
                (
                    header.device_major().unwrap().unwrap(),
                    header.device_minor().unwrap().unwrap(),
                )
            });
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap());
            let size = entry.size();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            out.push(Got {
                name,
                kind,
                mode: header.mode().unwrap(),
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                size,
                mtime: pax_mtime.unwrap_or_else(|| header.mtime().unwrap().to_string()),
                link,
                device,
                content,
                xattrs,
                pax,
            });
        }
        out
    }

    fn export(layer: MemLayer, options: &ExportOptions) -> Result<(Vec<u8>, LayerDigests)> {
        let layer: Arc<dyn Layer> = Arc::new(layer);
        export_layer(&layer, &[], Vec::new(), options)
    }

    fn plain() -> ExportOptions {
        ExportOptions::new().compression(Compression::None)
    }

    fn decompress(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Decompressor::new(bytes)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn at(sec: i64, nsec: u32) -> Timestamp {
        Timestamp::new(sec, nsec)
    }

    fn with_mtime(mut meta: Metadata, t: Timestamp) -> Metadata {
        meta.mtime = t;
        meta
    }

    const LONG_NAME_DIR: &str = "long/";
    const CAPABILITY: &[u8] = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00";

    fn long_file() -> String {
        format!("{LONG_NAME_DIR}{}", "n".repeat(145))
    }

    fn long_target() -> String {
        format!("/{}", "t".repeat(149))
    }

    /// A layer with one of everything the format has a rule for.
    fn every_rule() -> MemLayer {
        let mut l = MemLayer::new();
        l.set_opaque(&LayerPath::root(), true).unwrap();
        l.add_file_with(
            "etc/app.conf",
            "port = 80\n",
            with_mtime(
                Metadata::new(FileType::File)
                    .with_mode(0o640)
                    .with_owner(1000, 1000),
                at(1_600_000_000, 0),
            ),
        )
        .unwrap();
        l.add_whiteout("etc/motd").unwrap();

        l.add_opaque_dir("usr").unwrap();
        let mut usr = Metadata::new(FileType::Dir);
        usr.xattrs.insert("trusted.overlay.opaque", "y");
        usr.xattrs.insert("user.comment", "kept");
        l.add_dir_with("usr", usr).unwrap();
        let mut tool = Metadata::new(FileType::File).with_mode(0o4755);
        tool.xattrs.insert("security.capability", CAPABILITY);
        tool.xattrs.insert("user.overlay.origin", "bookkeeping");
        l.add_file_with("usr/bin/tool", "#!tool", tool).unwrap();
        l.add_file("usr/lib/libx.so.1", "ELF").unwrap();
        l.add_symlink("usr/lib/libx.so", "libx.so.1").unwrap();

        l.add_file_with(
            "bin/busybox",
            "bb",
            Metadata::new(FileType::File).with_mode(0o755),
        )
        .unwrap();
        l.add_hard_link("bin/busybox", "sbin/init").unwrap();
        l.add_hard_link("bin/busybox", "bin/sh").unwrap();

        l.add_special(
            "dev/null",
            Metadata::new(FileType::CharDevice)
                .with_mode(0o666)
                .with_rdev(makedev(1, 3)),
        )
        .unwrap();
        l.add_special(
            "dev/sda",
            Metadata::new(FileType::BlockDevice)
                .with_mode(0o660)
                .with_owner(0, 6)
                .with_rdev(makedev(8, 0)),
        )
        .unwrap();
        l.add_special("run/fifo", Metadata::new(FileType::Fifo).with_mode(0o600))
            .unwrap();

        l.add_file(long_file(), "long").unwrap();
        l.add_symlink("link-long", long_target()).unwrap();
        l.add_file_with(
            "owned",
            "",
            Metadata::new(FileType::File).with_owner(3_000_000_000, 3_000_000_001),
        )
        .unwrap();
        l.add_file_with(
            "stamp",
            "",
            with_mtime(
                Metadata::new(FileType::File),
                at(1_700_000_000, 500_000_000),
            ),
        )
        .unwrap();
        l.add_file_with(
            "old",
            "",
            with_mtime(Metadata::new(FileType::File), at(-1, 0)),
        )
        .unwrap();
        l.add_file_with(
            "older",
            "",
            with_mtime(Metadata::new(FileType::File), at(-2, 500_000_000)),
        )
        .unwrap();
        l.add_file_with(
            "future",
            "",
            with_mtime(Metadata::new(FileType::File), at(2_000_000_000, 250)),
        )
        .unwrap();
        l
    }

    #[test]
    fn every_rule_gives_the_exact_entries() {
        let options = plain().clamp_mtime(at(1_800_000_000, 0));
        let (tar, _) = export(every_rule(), &options).unwrap();
        let expected = vec![
            marker(".wh..wh..opq"),
            dir("bin/"),
            file("bin/busybox", b"bb").mode(0o755),
            got("bin/sh", '1', 0o755).link("bin/busybox"),
            dir("dev/"),
            got("dev/null", '3', 0o666).device(1, 3),
            got("dev/sda", '4', 0o660).owner(0, 6).device(8, 0),
            dir("etc/"),
            marker("etc/.wh.motd"),
            file("etc/app.conf", b"port = 80\n")
                .mode(0o640)
                .owner(1000, 1000)
                .mtime("1600000000"),
            file("future", b"").mtime("1800000000"),
            symlink("link-long", &long_target()).pax(&["linkpath"]),
            dir("long/"),
            file(&long_file(), b"long").pax(&["path"]),
            file("old", b"").mtime("-1").pax(&["mtime"]),
            file("older", b"").mtime("-1.5").pax(&["mtime"]),
            file("owned", b"")
                .owner(3_000_000_000, 3_000_000_001)
                .pax(&["uid", "gid"]),
            dir("run/"),
            got("run/fifo", '6', 0o600),
            dir("sbin/"),
            got("sbin/init", '1', 0o755).link("bin/busybox"),
            file("stamp", b"").mtime("1700000000.5").pax(&["mtime"]),
            dir("usr/")
                .xattr("user.comment", b"kept")
                .pax(&["SCHILY.xattr.user.comment"]),
            marker("usr/.wh..wh..opq"),
            dir("usr/bin/"),
            file("usr/bin/tool", b"#!tool")
                .mode(0o4755)
                .xattr("security.capability", CAPABILITY)
                .pax(&["SCHILY.xattr.security.capability"]),
            dir("usr/lib/"),
            symlink("usr/lib/libx.so", "libx.so.1"),
            file("usr/lib/libx.so.1", b"ELF"),
        ];
        let entries = read_tar(&tar);
        for (i, (g, e)) in entries.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "entry {i}");
        }
        assert_eq!(entries.len(), expected.len());
    }

    #[test]
    fn raw_headers_are_normalised() {
        let (tar, _) = export(every_rule(), &plain()).unwrap();
        assert_eq!(tar.len() % BLOCK, 0);
        assert!(tar[tar.len() - 2 * BLOCK..].iter().all(|&b| b == 0));
        let mut archive = tar::Archive::new(&tar[..]);
        let mut pax_headers = 0;
        for entry in archive.entries().unwrap().raw(true) {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let ustar = header.as_ustar().expect("every header is ustar");
            assert_eq!(ustar.magic, *b"ustar\0");
            assert_eq!(ustar.version, *b"00");
            assert_eq!(ustar.prefix, [0; 155], "the prefix field is never used");
            assert_eq!(header.username_bytes(), Some(&b""[..]));
            assert_eq!(header.groupname_bytes(), Some(&b""[..]));
            let name = header.path_bytes().into_owned();
            assert!(
                !name.starts_with(b"/") && !name.starts_with(b"./") || name == b"././@PaxHeader"
            );
            if header.entry_type() == EntryType::XHeader {
                pax_headers += 1;
                assert_eq!(name, PAX_HEADER_NAME.as_bytes());
                assert_eq!(header.mode().unwrap(), 0o644);
                assert_eq!(header.mtime().unwrap(), 0);
                let mut records = Vec::new();
                entry.read_to_end(&mut records).unwrap();
                // Each record's length counts the whole record.
                let mut rest = &records[..];
                while !rest.is_empty() {
                    let space = rest.iter().position(|&b| b == b' ').unwrap();
                    let len: usize = std::str::from_utf8(&rest[..space])
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert_eq!(rest[len - 1], b'\n');
                    let key_end = rest.iter().position(|&b| b == b'=').unwrap();
                    let key = std::str::from_utf8(&rest[space + 1..key_end]).unwrap();
                    assert!(!["atime", "ctime"].contains(&key), "{key}");
                    rest = &rest[len..];
                }
            }
        }
        // link-long, long/n…, old, older, owned, stamp, future, usr/, usr/bin/tool
        assert_eq!(pax_headers, 9);

        // The fields that PAX records override hold 0 (or the seconds).
        let owned = find_header(&tar, b"owned");
        assert_eq!(&owned.as_old().uid, b"0000000\0");
        let stamp = find_header(&tar, b"stamp");
        assert_eq!(stamp.mtime().unwrap(), 1_700_000_000);
        let old = find_header(&tar, b"old");
        assert_eq!(old.mtime().unwrap(), 0);
        let long = find_header(&tar, &long_file().as_bytes()[..NAME_FIELD]);
        assert_eq!(long.entry_type(), EntryType::Regular);
    }

    /// The header whose own name field is `name`.
    fn find_header(tar: &[u8], name: &[u8]) -> Header {
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().unwrap().raw(true) {
            let entry = entry.unwrap();
            if entry.header().path_bytes().as_ref() == name {
                return entry.header().clone();
            }
        }
        panic!("no header named {}", String::from_utf8_lossy(name));
    }

    #[test]
    fn redirected_directory_is_written_opaque_with_its_full_contents() {
        let mut base = MemLayer::new();
        base.add_file_with(
            "a/x",
            "x\n",
            with_mtime(Metadata::new(FileType::File).with_mode(0o600), at(100, 0)),
        )
        .unwrap();
        base.add_file("a/sub/y", "y\n").unwrap();
        base.add_file("a/gone", "bye").unwrap();
        base.add_symlink("a/sub/up", "../x").unwrap();
        base.add_file("keep", "k").unwrap();
        let view = MergedView::with_options(
            vec![Arc::new(base) as Arc<dyn Layer>],
            MemLayer::new(),
            ViewOptions::default()
                .dir_rename(DirRename::Redirect)
                .clock(Clock::Fixed(at(500, 0))),
        )
        .unwrap();
        view.rename("a", "b").unwrap();
        view.write("b/new", "new").unwrap();
        view.remove_file("b/gone").unwrap();
        // A name outside links to an object inside: one object in the tar.
        view.hard_link("b/new", "hl").unwrap();
        view.commit().unwrap();
        let layers = view.layers();
        let b = LayerPath::new("b").unwrap();
        let Some(Entry::Node(node)) = layers[0].lookup(&b).unwrap() else {
            panic!("b is a directory in the committed layer");
        };
        assert!(node.redirect.is_some());

        let (tar, _) = export_layer(&layers[0], &layers[1..], Vec::new(), &plain()).unwrap();
        assert_eq!(
            read_tar(&tar),
            vec![
                marker(".wh.a"),
                dir("b/").mtime("500"),
                marker("b/.wh..wh..opq"),
                file("b/new", b"new").mtime("500"),
                dir("b/sub/"),
                symlink("b/sub/up", "../x"),
                file("b/sub/y", b"y\n"),
                file("b/x", b"x\n").mode(0o600).mtime("100"),
                got("hl", '1', 0o644).mtime("500").link("b/new"),
            ]
        );
    }

    #[test]
    fn insertion_order_and_inode_numbers_do_not_change_the_bytes() {
        let mut first = MemLayer::new();
        first.add_file("a/one", "1").unwrap();
        first.add_file("a/two", "2").unwrap();
        first.add_hard_link("a/one", "b/link").unwrap();
        first.add_whiteout("a/gone").unwrap();
        first.add_opaque_dir("c").unwrap();
        let mut meta = Metadata::new(FileType::File);
        meta.atime = at(1, 0);
        meta.ctime = at(2, 0);
        meta.xattrs.insert("user.b", "2");
        meta.xattrs.insert("user.a", "1");
        first
            .add_file_with("c/f", "data".repeat(1000), meta)
            .unwrap();

        let mut second = MemLayer::new();
        // Something created and removed first shifts every inode number.
        second.add_file("tmp", "").unwrap();
        second.add_opaque_dir("c").unwrap();
        let mut meta = Metadata::new(FileType::File);
        meta.atime = at(3, 0);
        meta.ctime = at(4, 0);
        meta.xattrs.insert("user.a", "1");
        meta.xattrs.insert("user.b", "2");
        second
            .add_file_with("c/f", "data".repeat(1000), meta)
            .unwrap();
        second.add_whiteout("a/gone").unwrap();
        second.add_file("a/two", "2").unwrap();
        second.add_file("b/link", "1").unwrap();
        second.add_hard_link("b/link", "a/one").unwrap();
        second.remove(&LayerPath::new("tmp").unwrap()).unwrap();

        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let options = ExportOptions::new().compression(compression);
            let (a, da) = export(first.clone(), &options).unwrap();
            let (b, db) = export(second.clone(), &options).unwrap();
            assert_eq!(da, db, "{compression}");
            assert!(a == b, "{compression}: the bytes differ");
        }
        // The first name in tar order holds the data, whichever was created first.
        let (tar, _) = export(second, &plain()).unwrap();
        let entries = read_tar(&tar);
        assert_eq!(entries[2], file("a/one", b"1"));
        assert_eq!(entries[5], got("b/link", '1', 0o644).link("a/one"));
    }

    #[test]
    fn digests_are_those_of_the_bytes_and_of_the_tar() {
        let (reference, plain_digests) = export(every_rule(), &plain()).unwrap();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let options = ExportOptions::new().compression(compression);
            let (bytes, d) = export(every_rule(), &options).unwrap();
            assert_eq!(d.compression, compression);
            assert_eq!(d.media_type(), compression.layer_media_type());
            assert_eq!(d.digest, Digest::of(&bytes), "{compression}");
            assert_eq!(d.size, bytes.len() as u64, "{compression}");
            let tar = decompress(&bytes);
            assert!(tar == reference, "{compression}: another tar inside");
            assert_eq!(d.diff_id, Digest::of(&tar), "{compression}");
            assert_eq!(d.uncompressed_size, tar.len() as u64, "{compression}");
            assert_eq!(d.diff_id, plain_digests.diff_id);
        }
        assert_eq!(ExportOptions::default().compression, Compression::Gzip);
    }

    /// A layer that records the reads of file data.
    #[derive(Debug)]
    struct Recording {
        layer: MemLayer,
        reads: std::sync::Mutex<Vec<(u64, usize)>>,
    }

    impl Layer for Recording {
        fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>> {
            self.layer.lookup(path)
        }
        fn read_dir(&self, path: &LayerPath) -> Result<crate::layer::DirListing> {
            self.layer.read_dir(path)
        }
        fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<bytes::Bytes> {
            self.reads.lock().unwrap().push((offset, len));
            self.layer.read_at(path, offset, len)
        }
        fn read_link(&self, path: &LayerPath) -> Result<crate::NameBuf> {
            self.layer.read_link(path)
        }
    }

    #[test]
    fn large_files_stream_in_chunks() {
        let data: Vec<u8> = (0..3 * CHUNK + 123).map(|i| (i % 251) as u8).collect();
        let mut l = MemLayer::new();
        l.add_file("big", data.clone()).unwrap();
        l.add_file("empty", "").unwrap();
        let recording = Arc::new(Recording {
            layer: l,
            reads: std::sync::Mutex::new(Vec::new()),
        });
        let layer: Arc<dyn Layer> = recording.clone();
        let (tar, d) = export_layer(&layer, &[], Vec::new(), &ExportOptions::new()).unwrap();
        let entries = read_tar(&decompress(&tar));
        assert_eq!(entries, vec![file("big", &data), file("empty", b"")]);
        assert_eq!(
            d.uncompressed_size,
            (BLOCK + data.len().div_ceil(BLOCK) * BLOCK + BLOCK + 2 * BLOCK) as u64
        );
        // One read per chunk; the last asks one byte more to see the end.
        let chunk = CHUNK as u64;
        assert_eq!(
            *recording.reads.lock().unwrap(),
            [
                (0, CHUNK),
                (chunk, CHUNK),
                (2 * chunk, CHUNK),
                (3 * chunk, 124),
                (0, 1)
            ]
        );
    }

    #[test]
    fn empty_layer_is_two_zero_blocks() {
        let (tar, d) = export(MemLayer::new(), &plain()).unwrap();
        assert_eq!(tar, vec![0; 2 * BLOCK]);
        assert_eq!(d.digest, Digest::of(&[0; 2 * BLOCK]));
    }

    fn export_error(layer: MemLayer) -> String {
        export(layer, &plain()).unwrap_err().to_string()
    }

    #[test]
    fn what_a_tar_cannot_hold_is_an_exact_error() {
        let mut l = MemLayer::new();
        l.add_file("d/.wh.x", "").unwrap();
        let err = export(l, &plain()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.operation(), Operation::ExportLayer);
        assert_eq!(
            err.to_string(),
            "failed to export layer entry `d/.wh.x`: name is reserved by the OCI whiteout encoding"
        );

        let mut l = MemLayer::new();
        l.add_whiteout("d/.wh..opq").unwrap();
        assert_eq!(
            export_error(l),
            "failed to export layer entry `d/.wh..opq`: name is reserved by the OCI whiteout encoding"
        );

        let mut l = MemLayer::new();
        l.add_special("run/sock", Metadata::new(FileType::Socket))
            .unwrap();
        let err = export(l, &plain()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert_eq!(
            err.to_string(),
            "failed to export layer entry `run/sock`: a socket cannot be stored in a tar"
        );

        let mut l = MemLayer::new();
        l.add_special(
            "dev/huge",
            Metadata::new(FileType::CharDevice).with_rdev(makedev(3_000_000, 1)),
        )
        .unwrap();
        let err = export(l, &plain()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert_eq!(
            err.to_string(),
            "failed to export layer entry `dev/huge`: device number 3000000:1 does not fit a tar header"
        );

        let mut l = MemLayer::new();
        let mut meta = Metadata::new(FileType::File);
        meta.xattrs.insert("user.a=b", "v");
        l.add_file_with("f", "", meta).unwrap();
        let err = export(l, &plain()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            "failed to export layer entry `f`: extended attribute name `user.a=b` cannot be stored in a PAX record"
        );

        let mut l = MemLayer::new();
        l.add_symlink("l", "a\0b").unwrap();
        assert_eq!(
            export_error(l),
            "failed to export layer entry `l`: the link target contains a NUL byte"
        );
    }

    /// A layer whose files claim a size other than what they hold (as if
    /// they changed between the lookup and the read).
    #[derive(Debug)]
    struct WrongSize {
        layer: MemLayer,
        claimed: u64,
    }

    impl Layer for WrongSize {
        fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>> {
            Ok(self.layer.lookup(path)?.map(|entry| match entry {
                Entry::Node(mut node) if node.meta.is_file() => {
                    node.meta.size = self.claimed;
                    Entry::Node(node)
                }
                other => other,
            }))
        }
        fn read_dir(&self, path: &LayerPath) -> Result<crate::layer::DirListing> {
            self.layer.read_dir(path)
        }
        fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<bytes::Bytes> {
            self.layer.read_at(path, offset, len)
        }
        fn read_link(&self, path: &LayerPath) -> Result<crate::NameBuf> {
            self.layer.read_link(path)
        }
    }

    #[test]
    fn data_that_does_not_match_its_size_is_an_error() {
        let data = vec![5u8; CHUNK + 10];
        let mut l = MemLayer::new();
        l.add_file("f", data.clone()).unwrap();
        for claimed in [0, 9, CHUNK as u64, CHUNK as u64 + 9, CHUNK as u64 + 11] {
            let layer: Arc<dyn Layer> = Arc::new(WrongSize {
                layer: l.clone(),
                claimed,
            });
            let err = export_layer(&layer, &[], Vec::new(), &plain()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io);
            assert_eq!(
                err.to_string(),
                format!(
                    "failed to export layer entry `f`: the file's data does not match its size \
                     of {claimed} bytes (changed while exported?)"
                )
            );
        }
        let layer: Arc<dyn Layer> = Arc::new(WrongSize {
            layer: l,
            claimed: data.len() as u64,
        });
        let (tar, _) = export_layer(&layer, &[], Vec::new(), &plain()).unwrap();
        assert_eq!(read_tar(&tar), vec![file("f", &data)]);
    }

    /// A writer that fails once it has taken `room` bytes.
    #[derive(Debug)]
    struct Full {
        room: usize,
    }

    impl std::io::Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_reported() {
        let mut l = MemLayer::new();
        l.add_file("big", vec![7u8; 200_000]).unwrap();
        let layer: Arc<dyn Layer> = Arc::new(l);
        let err = export_layer(&layer, &[], Full { room: 1000 }, &plain()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(
            err.to_string(),
            "failed to export layer entry `big`: disk full"
        );
    }

    /// Runs `program args` with `input` on stdin; `None` if it is not
    /// installed.
    fn run(program: &str, args: &[&str], input: &[u8]) -> Option<(bool, Vec<u8>, String)> {
        let mut child = match Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                println!("skipped: `{program}` could not be run ({e})");
                return None;
            }
        };
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        Some((
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    #[test]
    fn system_tools_accept_the_output() {
        for (compression, program) in [(Compression::Gzip, "gzip"), (Compression::Zstd, "zstd")] {
            let (bytes, _) =
                export(every_rule(), &ExportOptions::new().compression(compression)).unwrap();
            if let Some((ok, _, stderr)) = run(program, &["-t"], &bytes) {
                assert!(ok, "{program} -t: {stderr}");
            }
        }
        let (tar, _) = export(every_rule(), &plain()).unwrap();
        if let Some((ok, stdout, stderr)) = run("tar", &["-tf", "-"], &tar) {
            assert!(ok, "tar -t: {stderr}");
            let names: Vec<String> = read_tar(&tar).into_iter().map(|g| g.name).collect();
            let listed: Vec<String> = String::from_utf8(stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            assert_eq!(listed, names);
        }
    }
}
