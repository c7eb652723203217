//! Layers: the read trait [`Layer`], the write trait [`LayerMut`], and the
//! first-class whiteouts and opaque directories they carry.
//!
//! A layer is a *changeset*, not a complete tree: besides files,
//! directories, symlinks and special files it holds whiteouts (a name
//! deleted relative to the layers below) and opaque directories (which hide
//! everything below them). Each backend encodes these its own way; through
//! the traits they are plain data:
//!
//! - [`Entry::Whiteout`] at a path: the name is deleted in every layer
//!   below this one.
//! - [`Node::opaque`] on a directory: no layer below contributes entries.
//! - [`Node::redirect`] on a directory: the layers below are looked up at
//!   another path (set by a directory rename with the redirect option), in
//!   the kernel's format: a single name is relative to the parent, a path
//!   starting with `/` is from the root.
//!
//! A layer never follows a symlink: it answers for the exact path it is
//! given, and the merged view resolves symlinks in its own root.
//!
//! Third parties can implement [`Layer`] (a tar, a remote store) and check
//! themselves with the conformance suite in `layerstack::testing` (feature
//! `proptest`).

#[doc(hidden)]
pub use crate::fs::crash_points;
pub mod dir;
pub mod mem;
pub(crate) mod overlay;

pub use overlay::{Redirect, RedirectTarget};

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;

use crate::data::FileData;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::meta::{FileType, Metadata, Timestamp};
use crate::path::{LayerPath, NameBuf};

/// An object in a layer with its layer-level flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its metadata; `ino` and `nlink` are the layer's own.
    pub meta: Metadata,
    /// For a directory: nothing below this layer shows through it.
    pub opaque: bool,
    /// For a directory: where the layers below hold its contents; for a
    /// metadata-only copy: where they hold its data (the kernel's
    /// `overlay.redirect`, parsed by the layer that read it).
    pub redirect: Option<Redirect>,
    /// For a regular file: a metadata-only copy (the kernel's
    /// `overlay.metacopy`, written by a mount with `metacopy=on` when a
    /// lower file's metadata changed). Its metadata is its own; its data
    /// is the lower file at `redirect` (else at the same path), and the
    /// layer itself refuses to read it (`EPERM`) rather than invent bytes.
    pub metacopy: bool,
}

impl Node {
    /// A node with no flags.
    #[must_use]
    pub fn new(meta: Metadata) -> Node {
        Node {
            meta,
            opaque: false,
            redirect: None,
            metacopy: false,
        }
    }
}

/// What a layer holds at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An object.
    Node(Node),
    /// A whiteout: the name is deleted in the layers below.
    Whiteout,
}

impl Entry {
    /// The node, if this is not a whiteout.
    #[must_use]
    pub fn node(&self) -> Option<&Node> {
        match self {
            Entry::Node(n) => Some(n),
            Entry::Whiteout => None,
        }
    }

    /// Whether this is a whiteout.
    #[must_use]
    pub fn is_whiteout(&self) -> bool {
        matches!(self, Entry::Whiteout)
    }
}

/// The kind of one name in a layer's directory listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An object of this type.
    Node(FileType),
    /// A whiteout.
    Whiteout,
}

/// One directory of one layer: its names (sorted, whiteouts included) and
/// whether it is opaque.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirListing {
    /// The directory hides everything below this layer.
    pub opaque: bool,
    /// Names in byte order with their kinds.
    pub entries: Vec<(NameBuf, EntryKind)>,
}

/// Lets callers recover the concrete type behind a `dyn Layer` (a backend
/// can then take a fast path for a layer of its own kind, as `MemLayer`
/// shares file data on copy-up). Implemented for every type.
pub trait AsAny {
    /// `self` as [`Any`].
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A read-only layer.
///
/// Every method answers for the exact path given, in this layer alone: it
/// never follows symlinks and never consults other layers. A path whose
/// parent is missing, a whiteout or not a directory in this layer does not
/// exist here.
pub trait Layer: AsAny + Send + Sync + Debug + 'static {
    /// What this layer holds at `path`, if anything.
    ///
    /// # Errors
    /// Only for failures of the layer's storage; a missing path is `Ok(None)`.
    fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>>;

    /// The names in directory `path`, whiteouts included, sorted by name.
    ///
    /// # Errors
    /// `ENOENT` if `path` does not exist in this layer, `ENOTDIR` if it is
    /// not a directory.
    fn read_dir(&self, path: &LayerPath) -> Result<DirListing>;

    /// Up to `len` bytes of regular file `path` from `offset` (fewer at the
    /// end of the file).
    ///
    /// # Errors
    /// `ENOENT` if missing, `EISDIR` for a directory, `EINVAL` for other
    /// non-regular files.
    fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<Bytes>;

    /// The target of symlink `path`, verbatim (any bytes).
    ///
    /// # Errors
    /// `ENOENT` if missing, `EINVAL` if not a symlink.
    fn read_link(&self, path: &LayerPath) -> Result<NameBuf>;

    /// A short name for messages ("memory layer", a directory path).
    fn describe(&self) -> String {
        String::from("layer")
    }
}

/// What a new object holds.
#[derive(Debug, Clone)]
pub enum Content {
    /// A regular file with this data.
    File(FileData),
    /// An empty directory.
    Dir,
    /// A symlink with this target (stored verbatim: any bytes).
    Symlink(NameBuf),
    /// A fifo, device or socket (its device number is in the metadata).
    Special,
}

impl Content {
    /// Whether this content is what an object of `file_type` holds.
    #[must_use]
    pub fn fits(&self, file_type: FileType) -> bool {
        match self {
            Content::File(_) => file_type == FileType::File,
            Content::Dir => file_type == FileType::Dir,
            Content::Symlink(_) => file_type == FileType::Symlink,
            Content::Special => file_type.is_special(),
        }
    }
}

/// A writable layer: the writes the merged view needs.
///
/// The merged view decides *what* to write (copy-up, whiteouts, opaque
/// flags); a `LayerMut` only stores it. Each method acts on this layer
/// alone and on exact paths; the parent of a new name must already be a
/// directory in this layer.
pub trait LayerMut: Layer {
    /// Creates an object at `path`; a whiteout there is replaced.
    /// The type comes from `meta.file_type` and must match `content`.
    ///
    /// # Errors
    /// `EEXIST` if an object exists at `path`; `ENOENT` if the parent is
    /// missing; `ENOTDIR` if it is not a directory; `EINVAL` if `meta` and
    /// `content` disagree.
    fn create(&mut self, path: &LayerPath, meta: &Metadata, content: Content) -> Result<()>;

    /// Creates an opaque directory at `path` (replacing a whiteout there),
    /// opaque from the moment it appears: a directory recreated where a
    /// lower one was deleted must never show the old contents, not even
    /// after a crash. The default creates, then marks; backends that can
    /// do both in one step override it.
    ///
    /// # Errors
    /// As [`LayerMut::create`].
    fn create_opaque_dir(&mut self, path: &LayerPath, meta: &Metadata) -> Result<()> {
        self.create(path, meta, Content::Dir)?;
        self.set_opaque(path, true)
    }

    /// Creates regular file `path` with `meta` and the data of `src_path`
    /// in `src` (a data copy-up). The default streams the data through
    /// [`Layer::read_at`] and [`LayerMut::write_at`]; backends override it
    /// to share or clone data.
    ///
    /// # Errors
    /// As [`LayerMut::create`], and errors reading `src`.
    fn copy_file(
        &mut self,
        path: &LayerPath,
        meta: &Metadata,
        src: &dyn Layer,
        src_path: &LayerPath,
    ) -> Result<()> {
        self.create(path, meta, Content::File(FileData::new()))?;
        let mut offset = 0u64;
        loop {
            let chunk = src.read_at(src_path, offset, 1 << 20)?;
            if chunk.is_empty() {
                break;
            }
            self.write_at(path, offset, &chunk)?;
            offset += chunk.len() as u64;
        }
        Ok(())
    }

    /// Gives the metadata-only copy at `path` (see [`Node::metacopy`]) its
    /// data, the bytes of `src_path` in `src`, and makes it an ordinary
    /// file; its metadata stays as it is (the kernel's data copy-up of a
    /// `metacopy` file, before the first change of its data).
    ///
    /// Only a layer that can hold metadata-only copies needs it: the
    /// default fails with `EOPNOTSUPP`.
    ///
    /// # Errors
    /// `EINVAL` if `path` is not a metadata-only copy, and errors reading
    /// `src`.
    fn fill_metacopy(
        &mut self,
        path: &LayerPath,
        src: &dyn Layer,
        src_path: &LayerPath,
    ) -> Result<()> {
        let _ = (src, src_path);
        Err(
            Error::new(ErrorKind::Unsupported, Operation::CopyUp, path.as_name())
                .with_layer(self.describe())
                .with_detail("this layer holds no metadata-only copies"),
        )
    }

    /// Writes `data` into regular file `path` at `offset`, growing it.
    ///
    /// # Errors
    /// `ENOENT` if missing, `EISDIR` for a directory, `EINVAL` for other
    /// non-regular files, `EFBIG` past the largest size.
    fn write_at(&mut self, path: &LayerPath, offset: u64, data: &[u8]) -> Result<()>;

    /// Truncates or extends regular file `path`.
    ///
    /// # Errors
    /// As [`LayerMut::write_at`].
    fn set_len(&mut self, path: &LayerPath, len: u64) -> Result<()>;

    /// Stores mode, owner, times and xattrs of `meta` on `path` (its type,
    /// size, nlink, ino and rdev are ignored).
    ///
    /// # Errors
    /// `ENOENT` if `path` holds no object.
    fn set_metadata(&mut self, path: &LayerPath, meta: &Metadata) -> Result<()>;

    /// Removes what is at `path`: an object (a directory must have no
    /// entries in this layer, whiteouts included) or a whiteout.
    ///
    /// # Errors
    /// `ENOENT` if nothing is there, `ENOTEMPTY` for a directory with
    /// entries.
    fn remove(&mut self, path: &LayerPath) -> Result<()>;

    /// Places a whiteout at `path`, replacing a non-directory or an empty
    /// directory there.
    ///
    /// # Errors
    /// `ENOENT` if the parent is missing, `ENOTEMPTY` for a directory with
    /// entries.
    fn whiteout(&mut self, path: &LayerPath) -> Result<()>;

    /// Replaces directory `path`, which holds only whiteouts, with an empty
    /// opaque directory with the same metadata, in one step (the kernel's
    /// `ovl_clear_empty`): what the view shows does not change, and the
    /// directory can then be removed or replaced without its whiteouts
    /// going one by one, when a crash halfway would let lower entries show
    /// again. The default removes the whiteouts, then marks the directory.
    ///
    /// # Errors
    /// `ENOENT` if missing, `ENOTDIR` if not a directory, `ENOTEMPTY` if it
    /// holds anything but whiteouts.
    fn clear_dir(&mut self, path: &LayerPath) -> Result<()> {
        for (name, kind) in self.read_dir(path)?.entries {
            if kind != EntryKind::Whiteout {
                return Err(layer_error(ErrorKind::DirectoryNotEmpty, path));
            }
            self.remove(&path.join(&name)?)?;
        }
        self.set_opaque(path, true)
    }

    /// Marks directory `path` opaque or not.
    ///
    /// # Errors
    /// `ENOENT` if missing, `ENOTDIR` if not a directory.
    fn set_opaque(&mut self, path: &LayerPath, opaque: bool) -> Result<()>;

    /// Sets or clears the redirect of directory `path`.
    ///
    /// # Errors
    /// `ENOENT` if missing, `ENOTDIR` if not a directory.
    fn set_redirect(&mut self, path: &LayerPath, redirect: Option<Redirect>) -> Result<()>;

    /// Adds the name `new` for the object at `existing` (not a directory).
    ///
    /// # Errors
    /// `ENOENT` if `existing` is missing, `EPERM` for a directory, `EEXIST`
    /// if `new` is an object (a whiteout there is replaced).
    fn hard_link(&mut self, existing: &LayerPath, new: &LayerPath) -> Result<()>;

    /// Moves the entry at `from` (an object or whiteout, with everything
    /// below it) to `to`, replacing what is at `to` (a whiteout, a
    /// non-directory, or a directory with no entries).
    ///
    /// # Errors
    /// `ENOENT` if `from` or the parent of `to` is missing, `ENOTEMPTY` if
    /// `to` is a directory with entries, `EINVAL` if `to` is below `from`.
    fn rename(&mut self, from: &LayerPath, to: &LayerPath) -> Result<()>;

    /// As [`LayerMut::rename`], leaving a whiteout at `from` in the same
    /// step (the kernel's `RENAME_WHITEOUT`): what a lower layer holds at
    /// `from` never shows through, not even after a crash halfway. The
    /// default does the two steps one after the other; backends that can
    /// do it atomically override it.
    ///
    /// # Errors
    /// As [`LayerMut::rename`].
    fn rename_whiteout(&mut self, from: &LayerPath, to: &LayerPath) -> Result<()> {
        self.rename(from, to)?;
        self.whiteout(from)
    }

    /// Swaps the entries at `a` and `b` (both must exist).
    ///
    /// # Errors
    /// `ENOENT` if either is missing, `EINVAL` if one is below the other.
    fn exchange(&mut self, a: &LayerPath, b: &LayerPath) -> Result<()>;

    /// Takes everything this layer holds out as a read-only layer and leaves
    /// this layer empty (one `docker commit`).
    ///
    /// # Errors
    /// Storage failures of the backend.
    fn commit(&mut self) -> Result<Arc<dyn Layer>>;

    // ----- open objects (what the view's handles hold) -----

    /// Opens the regular file at `path` as an object that stays reachable
    /// by the returned id, whatever later happens to its names: renamed,
    /// linked elsewhere, or unlinked (an orphan, with `nlink` 0), until
    /// [`LayerMut::close_object`]. An orphan's data is freed when its last
    /// open ends, as the kernel frees an unlinked inode on its last close.
    /// The merged view's handles (`MergedView::open_handle`) rest on it.
    ///
    /// The default refuses (`EOPNOTSUPP`): the view then falls back to
    /// finding the file by the path it was opened by.
    ///
    /// # Errors
    /// `ENOENT` if nothing is there, `EISDIR` for a directory, `EINVAL`
    /// for another non-regular file, `EOPNOTSUPP` where unsupported.
    fn open_object(&mut self, path: &LayerPath) -> Result<u64> {
        Err(layer_error(ErrorKind::Unsupported, path)
            .with_layer(self.describe())
            .with_detail("this layer keeps no open objects"))
    }

    /// Ends one open of object `id` (made by [`LayerMut::open_object`]).
    ///
    /// # Errors
    /// `EBADF` for an id that is not open.
    fn close_object(&mut self, id: u64) -> Result<()> {
        Err(object_error(ErrorKind::BadHandle, id))
    }

    /// The node of open object `id` (`nlink` 0 for an orphan).
    ///
    /// # Errors
    /// `EBADF` for an id that is not open; storage errors.
    fn object_node(&self, id: u64) -> Result<Node> {
        Err(object_error(ErrorKind::BadHandle, id))
    }

    /// As [`Layer::read_at`], on open object `id`.
    ///
    /// # Errors
    /// `EBADF` for an id that is not open; storage errors.
    fn object_read_at(&self, id: u64, offset: u64, len: usize) -> Result<Bytes> {
        let _ = (offset, len);
        Err(object_error(ErrorKind::BadHandle, id))
    }

    /// As [`LayerMut::write_at`], on open object `id`.
    ///
    /// # Errors
    /// `EBADF` for an id that is not open; `EFBIG` past the largest size;
    /// storage errors.
    fn object_write_at(&mut self, id: u64, offset: u64, data: &[u8]) -> Result<()> {
        let _ = (offset, data);
        Err(object_error(ErrorKind::BadHandle, id))
    }

    /// As [`LayerMut::set_len`], on open object `id`.
    ///
    /// # Errors
    /// As [`LayerMut::object_write_at`].
    fn object_set_len(&mut self, id: u64, len: u64) -> Result<()> {
        let _ = len;
        Err(object_error(ErrorKind::BadHandle, id))
    }

    /// Sets the modification and change times of open object `id` (a
    /// layer that cannot choose a ctime, as a directory on disk, lets the
    /// system set it).
    ///
    /// # Errors
    /// `EBADF` for an id that is not open; storage errors.
    fn object_set_times(&mut self, id: u64, mtime: Timestamp, ctime: Timestamp) -> Result<()> {
        let _ = (mtime, ctime);
        Err(object_error(ErrorKind::BadHandle, id))
    }

    /// Makes the data (and with `data_only` false, the metadata) of open
    /// object `id` durable, as `fdatasync`/`fsync`. Memory has nothing to
    /// do: the default does nothing.
    ///
    /// # Errors
    /// `EBADF` for an id that is not open; storage errors.
    fn object_sync(&self, id: u64, data_only: bool) -> Result<()> {
        let _ = (id, data_only);
        Ok(())
    }

    /// Makes the entries of directory `path` durable, as `fsync` of a
    /// directory. Memory has nothing to do: the default does nothing.
    ///
    /// # Errors
    /// `ENOENT`, `ENOTDIR`; storage errors.
    fn sync_dir(&self, path: &LayerPath) -> Result<()> {
        let _ = path;
        Ok(())
    }
}

/// An error about open object `id` of a layer (the view reframes it with
/// the handle's path and operation).
pub(crate) fn object_error(kind: ErrorKind, id: u64) -> Error {
    Error::new(
        kind,
        Operation::Layer,
        format!("(open object {id})").as_str(),
    )
}

/// An error for `path` in a layer (the view reframes it with its own
/// operation and the user's path).
pub(crate) fn layer_error(kind: ErrorKind, path: &LayerPath) -> Error {
    Error::new(kind, Operation::Layer, path.as_name())
}

/// Every entry of a layer, parents before children, in name order: objects
/// (with their flags) and whiteouts. The root itself is left out; a
/// changeset's root flags are on [`Layer::lookup`] of the root.
///
/// # Errors
/// Errors of the layer's storage.
pub fn walk(layer: &dyn Layer) -> Result<Vec<(LayerPath, Entry)>> {
    let mut out = Vec::new();
    let mut todo = vec![LayerPath::root()];
    while let Some(dir) = todo.pop() {
        let listing = layer.read_dir(&dir)?;
        let mut subdirs = Vec::new();
        for (name, _) in listing.entries {
            let path = dir.join(&name)?;
            let Some(entry) = layer.lookup(&path)? else {
                continue;
            };
            if entry.node().is_some_and(|n| n.meta.is_dir()) {
                subdirs.push(path.clone());
            }
            out.push((path, entry));
        }
        todo.extend(subdirs.into_iter().rev());
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Copies every entry of `src` into `dst` (empty, or at least holding none
/// of `src`'s names): objects with their metadata, whiteouts, opaque and
/// redirect flags, hard links as links. Directories get their metadata
/// after their contents, so their times survive. This is how a layer moves
/// between backends, for example a `MemLayer` onto disk as a `DirLayer`.
///
/// # Errors
/// The first error of either layer.
pub fn copy_layer(src: &dyn Layer, dst: &mut dyn LayerMut) -> Result<()> {
    let mut linked: std::collections::HashMap<u64, LayerPath> = std::collections::HashMap::new();
    let mut dirs = Vec::new();
    let root = LayerPath::root();
    if let Some(Entry::Node(node)) = src.lookup(&root)? {
        if node.opaque {
            dst.set_opaque(&root, true)?;
        }
        dirs.push((root, node.meta));
    }
    for (path, entry) in walk(src)? {
        let node = match entry {
            Entry::Whiteout => {
                dst.whiteout(&path)?;
                continue;
            }
            Entry::Node(node) => node,
        };
        let meta = &node.meta;
        match meta.file_type {
            FileType::Dir => {
                dst.create(&path, meta, Content::Dir)?;
                if node.opaque {
                    dst.set_opaque(&path, true)?;
                }
                if node.redirect.is_some() {
                    dst.set_redirect(&path, node.redirect)?;
                }
                dirs.push((path, node.meta));
            }
            _ if meta.nlink > 1 && linked.contains_key(&meta.ino) => {
                dst.hard_link(&linked[&meta.ino], &path)?;
            }
            t => {
                if meta.nlink > 1 {
                    linked.insert(meta.ino, path.clone());
                }
                match t {
                    FileType::File => dst.copy_file(&path, meta, src, &path)?,
                    FileType::Symlink => {
                        dst.create(&path, meta, Content::Symlink(src.read_link(&path)?))?;
                    }
                    _ => dst.create(&path, meta, Content::Special)?,
                }
            }
        }
    }
    for (path, meta) in dirs.into_iter().rev() {
        dst.set_metadata(&path, &meta)?;
    }
    Ok(())
}
