//! [`BlobLayer`]: a read-only [`Layer`] over a layer blob and its index.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::{DirListing, Entry, EntryKind, Layer, Node, layer_error};
use crate::meta::{FileType, Metadata};
use crate::oci::apply::applier::{Ask, implied_dir_meta, link_target_below};
use crate::oci::apply::import::BelowView;
use crate::oci::image::digest::Digest;
use crate::path::{LayerPath, NameBuf};
use crate::view::MergedView;

use super::index::{Body, Kind, LayerIndex, MetaSrc};
use super::stream::BlobStream;

/// A read-only layer read straight from a layer blob (plain, gzip or
/// zstd tar) through its index, without importing it.
///
/// [`lookup`](Layer::lookup) and [`read_dir`](Layer::read_dir) answer
/// from the index in memory; [`read_at`](Layer::read_at) inflates only
/// from the restart point nearest the data (see
/// [`BlobLayer::spans_inflated`]). It shows exactly what
/// [`import_layer`](crate::oci::import_layer) of the same blob over the
/// same layers below would hold: the index is built by the same tar
/// reader and the same applier, and the two facts that depend on the
/// layers below (the attributes of a parent directory the tar does not
/// list, a hard link to a file of a lower layer) are answered when the
/// layer is opened over them.
///
/// Open one with [`ImageStore::layers`](crate::oci::ImageStore::layers)
/// (the index is then cached in the layout) or [`BlobLayer::open_file`].
///
/// # Limitations
/// The blob is checked against its digest when its index is built, not
/// on every read: a blob changed on disk afterwards (same size) is read
/// as it now is. Reads of a gzip blob by another writer inflate up to
/// 4 MiB before the data; a zstd blob by another writer (usually one
/// frame) is inflated from its start for every read that cannot go on
/// from the previous one.
#[derive(Debug)]
pub struct BlobLayer {
    pub(super) index: LayerIndex,
    /// The metadata the layers below gave each question.
    answers: Vec<Metadata>,
    /// The targets of symlinks copied up from the layers below, by
    /// question.
    targets: Vec<Option<NameBuf>>,
    below: Option<MergedView>,
    stream: BlobStream,
}

fn below_error(entry: &NameBuf, kind: ErrorKind, detail: String) -> Error {
    Error::new(kind, Operation::ImportLayer, entry).with_detail(detail)
}

impl BlobLayer {
    /// The layer of `index` over `below` (top first), reading `file`.
    pub(crate) fn with_index(
        index: LayerIndex,
        file: File,
        below: &[Arc<dyn Layer>],
    ) -> Result<BlobLayer> {
        let mut answers = Vec::with_capacity(index.questions.len());
        let mut targets = Vec::with_capacity(index.questions.len());
        let mut keep_view = None;
        if !index.questions.is_empty() {
            let view = BelowView::new(below)?;
            let mut needs_data = false;
            for q in &index.questions {
                let found = view.lookup(&q.path)?;
                let meta = match q.ask {
                    Ask::ImpliedDir => implied_dir_meta(&q.path, found),
                    Ask::LinkTarget => link_target_below(&q.path, found),
                }
                .map_err(|r| below_error(&q.entry, r.kind, r.detail))?;
                let target = if q.ask == Ask::LinkTarget && meta.is_symlink() {
                    let v = view.view().ok_or_else(|| {
                        below_error(&q.entry, ErrorKind::NotFound, "no layers below".into())
                    })?;
                    Some(v.read_link(q.path.as_name())?)
                } else {
                    needs_data |= q.ask == Ask::LinkTarget && meta.is_file();
                    None
                };
                answers.push(meta);
                targets.push(target);
            }
            if needs_data {
                keep_view = view.into_view();
            }
        }
        let stream = BlobStream::new(file, index.compression, index.points.clone());
        Ok(BlobLayer {
            index,
            answers,
            targets,
            below: keep_view,
            stream,
        })
    }

    /// The digest of the blob.
    #[must_use]
    pub fn digest(&self) -> &Digest {
        &self.index.digest
    }

    /// The DiffID: the digest of the uncompressed tar (from the index).
    #[must_use]
    pub fn diff_id(&self) -> &Digest {
        &self.index.diff_id
    }

    /// Bytes of the uncompressed tar (from the index).
    #[must_use]
    pub fn uncompressed_size(&self) -> u64 {
        self.index.uncompressed_size
    }

    /// Tar entries the blob holds (extended headers not counted).
    #[must_use]
    pub fn entries(&self) -> u64 {
        self.index.entries
    }

    /// Restart points the index holds (0 for a plain tar).
    #[must_use]
    pub fn restart_points(&self) -> usize {
        self.index.points.len()
    }

    /// Spans of the compressed stream inflated by the reads so far: one
    /// for each read that starts at a restart point, plus one for each
    /// restart point a read goes past (a read that goes on from where the
    /// previous one stopped starts none). 0 for a plain tar.
    #[must_use]
    pub fn spans_inflated(&self) -> u64 {
        self.stream.spans()
    }

    fn meta(&self, src: &MetaSrc) -> Metadata {
        match src {
            MetaSrc::Known(m) => m.clone(),
            MetaSrc::Below(q) => self.answers[*q as usize].clone(),
        }
    }

    /// The node number at `path`, if the layer holds something there
    /// (parents must be directories).
    fn find(&self, path: &LayerPath) -> Option<u32> {
        let mut at = 0u32;
        for name in path.names() {
            let Kind::Dir { children, .. } = &self.index.nodes[at as usize].kind else {
                return None;
            };
            let i = children
                .binary_search_by(|&c| {
                    self.index.nodes[c as usize]
                        .name
                        .as_bytes()
                        .cmp(name.as_bytes())
                })
                .ok()?;
            at = children[i];
        }
        Some(at)
    }

    fn entry(&self, id: u32) -> Entry {
        let nodes = &self.index.nodes;
        match &nodes[id as usize].kind {
            Kind::Whiteout => Entry::Whiteout,
            Kind::Dir {
                meta,
                opaque,
                children,
            } => {
                let mut m = self.meta(meta);
                m.file_type = FileType::Dir;
                m.nlink = 2 + children
                    .iter()
                    .filter(|&&c| matches!(nodes[c as usize].kind, Kind::Dir { .. }))
                    .count() as u64;
                m.size = 0;
                m.ino = u64::from(id) + 1;
                let mut node = Node::new(m);
                node.opaque = *opaque;
                Entry::Node(node)
            }
            Kind::Obj(i) => {
                let inode = &self.index.inodes[*i as usize];
                let mut m = self.meta(&inode.meta);
                m.nlink = u64::from(inode.links);
                m.ino = nodes.len() as u64 + u64::from(*i) + 1;
                Entry::Node(Node::new(m))
            }
        }
    }

    /// The inode at `path`, or the error a read of it gets.
    fn object(&self, path: &LayerPath, want: FileType) -> Result<(u32, Metadata)> {
        let Some(id) = self.find(path) else {
            return Err(layer_error(ErrorKind::NotFound, path));
        };
        match &self.index.nodes[id as usize].kind {
            Kind::Whiteout => Err(layer_error(ErrorKind::NotFound, path)),
            Kind::Dir { .. } if want == FileType::File => {
                Err(layer_error(ErrorKind::IsADirectory, path))
            }
            Kind::Dir { .. } => Err(layer_error(ErrorKind::InvalidInput, path)),
            Kind::Obj(i) => {
                let m = self.meta(&self.index.inodes[*i as usize].meta);
                if m.file_type == want {
                    Ok((*i, m))
                } else {
                    Err(layer_error(ErrorKind::InvalidInput, path))
                }
            }
        }
    }

    fn read_error(&self, path: &LayerPath, e: &std::io::Error) -> Error {
        Error::from_io(e, Operation::Read, path)
            .with_detail(format!("reading the layer blob: {e}"))
            .with_layer(self.describe())
    }
}

impl Layer for BlobLayer {
    fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>> {
        Ok(self.find(path).map(|id| self.entry(id)))
    }

    fn read_dir(&self, path: &LayerPath) -> Result<DirListing> {
        let Some(id) = self.find(path) else {
            return Err(layer_error(ErrorKind::NotFound, path));
        };
        let nodes = &self.index.nodes;
        match &nodes[id as usize].kind {
            Kind::Whiteout => Err(layer_error(ErrorKind::NotFound, path)),
            Kind::Obj(_) => Err(layer_error(ErrorKind::NotADirectory, path)),
            Kind::Dir {
                opaque, children, ..
            } => Ok(DirListing {
                opaque: *opaque,
                entries: children
                    .iter()
                    .map(|&c| {
                        let n = &nodes[c as usize];
                        let kind = match &n.kind {
                            Kind::Whiteout => EntryKind::Whiteout,
                            Kind::Dir { .. } => EntryKind::Node(FileType::Dir),
                            Kind::Obj(i) => EntryKind::Node(
                                self.meta(&self.index.inodes[*i as usize].meta).file_type,
                            ),
                        };
                        (n.name.clone(), kind)
                    })
                    .collect(),
            }),
        }
    }

    fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<Bytes> {
        let (i, meta) = self.object(path, FileType::File)?;
        let size = meta.size;
        if offset >= size || len == 0 {
            return Ok(Bytes::new());
        }
        let n = usize::try_from((size - offset).min(len as u64)).unwrap_or(len);
        match &self.index.inodes[i as usize].body {
            Body::File { start, sparse, .. } => {
                // The index was checked when it was loaded: the file's
                // size and regions lie within the data the blob stored
                // for it, so this allocation is bounded by the blob.
                let mut buf = vec![0u8; n];
                match sparse {
                    None => {
                        self.stream
                            .read_exact_at(&mut buf, start + offset)
                            .map_err(|e| self.read_error(path, &e))?;
                    }
                    Some(regions) => {
                        let (lo, hi) = (offset, offset + n as u64);
                        let mut at = *start;
                        for &(roff, rlen) in regions {
                            let (a, b) = (lo.max(roff), hi.min(roff + rlen));
                            if a < b {
                                let into = usize::try_from(a - lo).unwrap_or(0);
                                let count = usize::try_from(b - a).unwrap_or(0);
                                self.stream
                                    .read_exact_at(&mut buf[into..into + count], at + (a - roff))
                                    .map_err(|e| self.read_error(path, &e))?;
                            }
                            at += rlen;
                        }
                    }
                }
                Ok(Bytes::from(buf))
            }
            Body::Below(q) => {
                let Some(view) = &self.below else {
                    return Err(layer_error(ErrorKind::NotFound, path));
                };
                // Only the piece asked for: a read of a hard link to a big
                // lower file must not read all of it each time.
                view.read_at(self.index.questions[*q as usize].path.as_name(), offset, n)
            }
            _ => Err(layer_error(ErrorKind::InvalidInput, path)),
        }
    }

    fn read_link(&self, path: &LayerPath) -> Result<NameBuf> {
        let (i, _) = self.object(path, FileType::Symlink)?;
        match &self.index.inodes[i as usize].body {
            Body::Symlink(t) => Ok(t.clone()),
            Body::Below(q) => self.targets[*q as usize]
                .clone()
                .ok_or_else(|| layer_error(ErrorKind::InvalidInput, path)),
            _ => Err(layer_error(ErrorKind::InvalidInput, path)),
        }
    }

    fn describe(&self) -> String {
        format!("layer blob {}", self.index.digest.short())
    }
}
