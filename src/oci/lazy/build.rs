//! Building a layer index: one streaming pass over the blob through the
//! crate's one tar reader and its one applier, so that a hostile tar is
//! refused here exactly as import refuses it and every entry means what
//! it means on import. File data is never read into memory: the index
//! keeps where it starts in the uncompressed stream.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::meta::{FileType, Metadata};
use crate::oci::apply::applier::{Answer, ApplyTarget, Ask, Held, apply_entry};
use crate::oci::apply::import::{Counts, ImportOptions, Policy, entry_error};
use crate::oci::image::digest::{Digest, DigestReader};
use crate::oci::tar::compress::Compression;
use crate::oci::tar::read::{TarEntry, TarKind, TarReader};
use crate::path::LayerPath;

use super::index::{Body, IndexNode, Inode, Kind, LayerIndex, MetaSrc, Question, options_key};
use super::stream::{GzipCursor, ZstdCursor, zstd_indexing, zstd_points};

/// What the builder holds at a path while the tar streams.
#[derive(Debug, Clone)]
enum Slot {
    Dir { meta: MetaSrc, opaque: bool },
    Obj(u32),
    Whiteout,
}

struct Builder<'a> {
    options: &'a ImportOptions,
    counts: Counts,
    root_meta: Metadata,
    root_opaque: bool,
    slots: BTreeMap<LayerPath, Slot>,
    inodes: Vec<Inode>,
    questions: Vec<Question>,
    whited: HashSet<LayerPath>,
}

fn reframe(entry: &TarEntry, e: Error) -> Error {
    Error::new(e.kind(), Operation::ImportLayer, &entry.name).with_detail(e.cause())
}

impl Builder<'_> {
    fn ask(&mut self, path: &LayerPath, ask: Ask, entry: &TarEntry) -> u32 {
        self.questions.push(Question {
            path: path.clone(),
            ask,
            entry: entry.name.clone(),
        });
        u32::try_from(self.questions.len() - 1).unwrap_or(u32::MAX)
    }

    fn new_inode(&mut self, meta: MetaSrc, body: Body) -> u32 {
        self.inodes.push(Inode {
            meta,
            body,
            links: 0,
        });
        u32::try_from(self.inodes.len() - 1).unwrap_or(u32::MAX)
    }

    /// Everything at and below `path`.
    fn remove_tree(&mut self, path: &LayerPath) {
        let below: Vec<LayerPath> = self
            .slots
            .range(path.clone()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            self.slots.remove(&p);
        }
    }
}

impl<R: Read> ApplyTarget<TarReader<R>> for Builder<'_> {
    /// Every question about the layers below is kept for the open.
    type Search = u32;

    fn entry_error(&self, entry: &TarEntry, kind: ErrorKind, detail: &str) -> Error {
        entry_error(entry, kind, detail)
    }

    fn reframe(&self, entry: &TarEntry, e: Error) -> Error {
        reframe(entry, e)
    }

    fn policies(&mut self) -> (Policy, Policy, &mut Counts) {
        (self.options.devices, self.options.setuid, &mut self.counts)
    }

    fn set_root(&mut self, meta: Metadata) -> Result<()> {
        self.root_meta = meta;
        Ok(())
    }

    fn held(&mut self, path: &LayerPath, _entry: &TarEntry) -> Result<Held> {
        if path.is_root() {
            return Ok(Held::Dir {
                opaque: self.root_opaque,
            });
        }
        Ok(match self.slots.get(path) {
            None => Held::Nothing,
            Some(Slot::Whiteout) => Held::Whiteout,
            Some(Slot::Dir { opaque, .. }) => Held::Dir { opaque: *opaque },
            Some(Slot::Obj(i)) => Held::NonDir(match &self.inodes[*i as usize].meta {
                MetaSrc::Known(m) => m.file_type,
                // A copy of a lower object: its type is known at the open.
                MetaSrc::Below(_) => FileType::File,
            }),
        })
    }

    fn below(
        &mut self,
        path: &LayerPath,
        ask: Ask,
        entry: &TarEntry,
    ) -> Result<Answer<Option<Metadata>, u32>> {
        Ok(Answer::Search(self.ask(path, ask, entry)))
    }

    fn implied_dir(
        &mut self,
        dir: &LayerPath,
        meta: Answer<Metadata, u32>,
        opaque: bool,
        _entry: &TarEntry,
    ) -> Result<()> {
        let meta = match meta {
            Answer::Now(m) => MetaSrc::Known(m),
            Answer::Search(q) => MetaSrc::Below(q),
        };
        self.slots.insert(dir.clone(), Slot::Dir { meta, opaque });
        Ok(())
    }

    fn note_whited(&mut self, path: &LayerPath) {
        self.whited.insert(path.clone());
    }

    fn whited(&self, path: &LayerPath) -> bool {
        self.whited.contains(path)
    }

    fn set_opaque(&mut self, dir: &LayerPath, _entry: &TarEntry) -> Result<()> {
        if dir.is_root() {
            self.root_opaque = true;
        } else if let Some(Slot::Dir { opaque, .. }) = self.slots.get_mut(dir) {
            *opaque = true;
        }
        Ok(())
    }

    fn whiteout(&mut self, path: &LayerPath, _entry: &TarEntry) -> Result<()> {
        self.slots.insert(path.clone(), Slot::Whiteout);
        Ok(())
    }

    fn merge_dir(&mut self, path: &LayerPath, meta: Metadata) -> Result<()> {
        if path.is_root() {
            self.root_meta = meta;
        } else if let Some(Slot::Dir { meta: m, .. }) = self.slots.get_mut(path) {
            *m = MetaSrc::Known(meta);
        }
        Ok(())
    }

    fn replace(&mut self, path: &LayerPath, _entry: &TarEntry) -> Result<()> {
        self.remove_tree(path);
        Ok(())
    }

    fn copy_up(
        &mut self,
        link: &LayerPath,
        found: Answer<Metadata, u32>,
        _entry: &TarEntry,
    ) -> Result<()> {
        let i = match found {
            Answer::Now(m) => self.new_inode(MetaSrc::Known(m), Body::Special),
            Answer::Search(q) => self.new_inode(MetaSrc::Below(q), Body::Below(q)),
        };
        self.slots.insert(link.clone(), Slot::Obj(i));
        Ok(())
    }

    fn link(&mut self, entry: &TarEntry, link: &LayerPath) -> Result<()> {
        let Some(Slot::Obj(i)) = self.slots.get(link) else {
            return Err(entry_error(
                entry,
                ErrorKind::NotFound,
                format!("hard link target `{link}` is not a file of this layer"),
            ));
        };
        let i = *i;
        self.slots.insert(entry.path.clone(), Slot::Obj(i));
        Ok(())
    }

    fn create(
        &mut self,
        entry: &TarEntry,
        meta: Metadata,
        whited: bool,
        tar: &mut TarReader<R>,
    ) -> Result<()> {
        let path = entry.path.clone();
        let body = match &entry.kind {
            TarKind::Dir => {
                self.slots.insert(
                    path,
                    Slot::Dir {
                        meta: MetaSrc::Known(meta),
                        opaque: whited,
                    },
                );
                return Ok(());
            }
            TarKind::Symlink(target) => Body::Symlink(target.clone()),
            TarKind::CharDevice(_) | TarKind::BlockDevice(_) | TarKind::Fifo => Body::Special,
            TarKind::File => Body::File {
                start: tar.bytes_read(),
                stored: entry.stored_size(),
                sparse: entry.sparse.clone(),
            },
            TarKind::HardLink(_) => unreachable!("hard links are applied by `link`"),
        };
        let i = self.new_inode(MetaSrc::Known(meta), body);
        self.slots.insert(path, Slot::Obj(i));
        Ok(())
    }
}

impl Builder<'_> {
    /// The tree of what the layer holds, with the inodes still named.
    fn finish(self) -> (Vec<IndexNode>, Vec<Inode>, Vec<Question>) {
        let mut nodes = vec![IndexNode {
            name: crate::path::NameBuf::new(),
            kind: Kind::Dir {
                meta: MetaSrc::Known(self.root_meta),
                opaque: self.root_opaque,
                children: Vec::new(),
            },
        }];
        let mut renumber: Vec<Option<u32>> = vec![None; self.inodes.len()];
        let mut inodes: Vec<Inode> = Vec::new();
        // Parents come before children, children in name order.
        let mut at: BTreeMap<LayerPath, u32> = BTreeMap::new();
        at.insert(LayerPath::root(), 0);
        for (path, slot) in self.slots {
            let parent = path.parent().unwrap_or_else(LayerPath::root);
            let Some(&p) = at.get(&parent) else {
                continue;
            };
            let id = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
            let kind = match slot {
                Slot::Dir { meta, opaque } => {
                    at.insert(path.clone(), id);
                    Kind::Dir {
                        meta,
                        opaque,
                        children: Vec::new(),
                    }
                }
                Slot::Whiteout => Kind::Whiteout,
                Slot::Obj(i) => {
                    let n = *renumber[i as usize].get_or_insert_with(|| {
                        inodes.push(self.inodes[i as usize].clone());
                        u32::try_from(inodes.len() - 1).unwrap_or(u32::MAX)
                    });
                    inodes[n as usize].links += 1;
                    Kind::Obj(n)
                }
            };
            if let Kind::Dir { children, .. } = &mut nodes[p as usize].kind {
                children.push(id);
            }
            nodes.push(IndexNode {
                name: path.file_name().map(|n| n.to_owned()).unwrap_or_default(),
                kind,
            });
        }
        (nodes, inodes, self.questions)
    }
}

/// Hands the bytes read so far to a progress callback.
struct Tick<'p, R> {
    inner: R,
    read: u64,
    progress: Option<&'p dyn Fn(u64)>,
}

impl<R: Read> Read for Tick<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if let Some(p) = self.progress {
            p(self.read);
        }
        Ok(n)
    }
}

/// Builds the index of the layer blob `digest`, read from what `open`
/// opens (once, or twice for a gzip stream with our header whose chunks
/// turn out not to be independent). `progress` is told the blob bytes read.
///
/// # Errors
/// Those of import (a hostile tar, a limit, a broken stream), and
/// `EBADMSG` when the blob's content is not `digest`.
pub(crate) fn build_index(
    open: &dyn Fn() -> Result<Box<dyn Read>>,
    digest: &Digest,
    options: &ImportOptions,
    progress: Option<&dyn Fn(u64)>,
) -> Result<LayerIndex> {
    let mut seen = Compression::None;
    match pass(open()?, digest, options, progress, true, &mut seen) {
        Err(e) if seen == Compression::Gzip && e.kind() == ErrorKind::InvalidData => {
            pass(open()?, digest, options, progress, false, &mut seen)
        }
        r => r,
    }
}

fn stream_error(e: &io::Error) -> Error {
    Error::from_io(e, Operation::ImportLayer, "<layer>")
        .with_detail(format!("reading the layer: {e}"))
}

enum Uncompressed<'r, R: Read> {
    Plain(&'r mut R),
    Gzip(Box<GzipCursor<&'r mut R>>),
    Zstd(Box<ZstdCursor<&'r mut R>>),
}

impl<R: Read> Read for Uncompressed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Uncompressed::Plain(r) => r.read(buf),
            Uncompressed::Gzip(r) => r.read(buf),
            Uncompressed::Zstd(r) => r.read(buf),
        }
    }
}

fn pass(
    blob: Box<dyn Read>,
    digest: &Digest,
    options: &ImportOptions,
    progress: Option<&dyn Fn(u64)>,
    trust_chunks: bool,
    seen: &mut Compression,
) -> Result<LayerIndex> {
    let mut raw = DigestReader::new(Tick {
        inner: blob,
        read: 0,
        progress,
    });
    let mut prefix = Vec::with_capacity(4);
    (&mut raw)
        .take(4)
        .read_to_end(&mut prefix)
        .map_err(|e| stream_error(&e))?;
    let compression = Compression::detect(&prefix);
    *seen = compression;
    let mut chained = io::Cursor::new(prefix).chain(&mut raw);
    let (index_parts, points, diff_id, uncompressed_size, entries) = {
        let source = match compression {
            Compression::None => Uncompressed::Plain(&mut chained),
            Compression::Gzip => Uncompressed::Gzip(Box::new(
                GzipCursor::indexing(&mut chained, trust_chunks).map_err(|e| stream_error(&e))?,
            )),
            Compression::Zstd => Uncompressed::Zstd(Box::new(zstd_indexing(&mut chained))),
        };
        let mut tar = TarReader::new(DigestReader::new(source), options.limits);
        let mut builder = Builder {
            options,
            counts: Counts::default(),
            root_meta: Metadata::new(FileType::Dir),
            root_opaque: false,
            slots: BTreeMap::new(),
            inodes: Vec::new(),
            questions: Vec::new(),
            whited: HashSet::new(),
        };
        while let Some(entry) = tar.next_entry()? {
            apply_entry(&mut builder, &entry, &mut tar)?;
        }
        let entries = tar.entries_read();
        let (source, diff_id, uncompressed_size) = tar.finish()?.finish();
        let points = match source {
            Uncompressed::Plain(_) => Vec::new(),
            Uncompressed::Gzip(c) => c.into_points(),
            Uncompressed::Zstd(c) => zstd_points(*c),
        };
        (
            builder.finish(),
            points,
            diff_id,
            uncompressed_size,
            entries,
        )
    };
    io::copy(&mut raw, &mut io::sink()).map_err(|e| stream_error(&e))?;
    let (_, actual, blob_size) = raw.finish();
    if actual != *digest {
        return Err(Error::new(
            ErrorKind::InvalidData,
            Operation::ReadBlob,
            digest.to_string(),
        )
        .with_detail(format!("digest mismatch: the content is {actual}")));
    }
    let (nodes, inodes, questions) = index_parts;
    Ok(LayerIndex {
        digest: *digest,
        options: options_key(options),
        compression,
        blob_size,
        diff_id,
        uncompressed_size,
        entries,
        points,
        nodes,
        inodes,
        questions,
    })
}
