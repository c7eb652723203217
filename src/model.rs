//! The reference model: a plain tree of what a user of a merged view sees.
//!
//! [`Model`] has the operations of [`MergedView`](crate::MergedView) with
//! the same results and the same errors (the same errno kinds, found in the
//! same order), but it keeps no layers: [`Model::from_layers`] flattens a
//! stack of lower layers once into a plain tree, and every operation then
//! acts on that tree. It is a second, independent implementation of the
//! merged-view contract — it shares no lookup, copy-up or whiteout code with
//! the view — so property tests can run random operation sequences on both
//! and compare every result and every error.
//!
//! It is public because it is an oracle for others too: a project that
//! stores layered filesystems its own way (a FUSE daemon, a snapshotter, an
//! image builder) can apply the same operations to its storage and to the
//! model and compare what each one shows ([`Model::snapshot`]).
//!
//! Of layering, the model tracks exactly what a user can observe: whether
//! each object has been copied up (which changes the link count of a
//! directory that merges several layers), how many lower layers each
//! directory merges (which decides `EXDEV` on rename), which names share one
//! object across copy-up ([`HardLinkCopyUp`]), and how [`Model::commit`]
//! turns the upper layer into one more lower layer. It does not track times
//! or inode numbers (see Limitations).
//!
//! ```
//! use std::sync::Arc;
//! use layerstack::model::Model;
//! use layerstack::view::ViewOptions;
//! use layerstack::{ErrorKind, Layer, MemLayer, NameBuf};
//!
//! let mut base = MemLayer::new();
//! base.add_file("etc/hostname", "box\n")?;
//! base.add_file("etc/motd", "hello\n")?;
//! let mut top = MemLayer::new();
//! top.add_whiteout("etc/motd")?;
//! let lowers: Vec<Arc<dyn Layer>> = vec![Arc::new(top), Arc::new(base)];
//!
//! let mut model = Model::from_layers(&lowers, ViewOptions::default())?;
//! assert_eq!(model.read("etc/motd").unwrap_err().kind(), ErrorKind::NotFound);
//! model.write("/etc/hostname", b"web\n")?;
//! assert_eq!(&model.read("etc/hostname")?[..], b"web\n");
//! let names: Vec<NameBuf> = model.read_dir("etc")?.into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["hostname"]);
//! # Ok::<(), layerstack::Error>(())
//! ```
//!
//! # Limitations
//! - Times and inode numbers are not tracked: metadata from the model has
//!   `ino` 0 and every time at the epoch, and `set_times` only copies up.
//! - A regular file grows to at most 16 TiB (`EFBIG` beyond, as
//!   [`MemLayer`]); the check comes after the copy-up that opening the file
//!   for writing does.
//! - It is written to be obviously correct, not fast: it is meant for test
//!   trees, not for images of thousands of files.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::data::FileData;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::mem::MemLayer;
use crate::layer::{Entry, Layer, Node};
use crate::merged::{DirRename, HardLinkCopyUp, OpenOptions, RenameMode, ViewOptions};
use crate::meta::{
    FileType, MODE_MASK, Metadata, S_ISGID, Timestamp, XATTR_NAME_MAX, XATTR_SIZE_MAX, Xattrs,
    check_xattr_name, mode_after_chown, xattr_allowed_on,
};
use crate::path::{
    Component, LastKind, LayerPath, Name, NameBuf, PathLike, UserPath, validate_name,
};

/// What the user sees of one object (times and inode numbers left out:
/// the model does not track them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Type.
    pub file_type: FileType,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (0 for directories).
    pub size: u64,
    /// Number of links.
    pub nlink: u64,
    /// Device number.
    pub rdev: u64,
    /// File contents (empty for non-files).
    pub data: Bytes,
    /// Symlink target (empty for non-symlinks).
    pub target: NameBuf,
    /// Extended attributes, sorted.
    pub xattrs: Vec<(String, Bytes)>,
}

/// The whole visible tree: every path (the root included, as the empty
/// path) to what is seen there.
pub type Snapshot = std::collections::BTreeMap<LayerPath, SnapshotEntry>;

/// At most this many symlinks are followed in one resolution (Linux
/// `MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;

/// The largest regular file (as [`MemLayer`]'s limit, ext4's 16 TiB).
const MAX_FILE_SIZE: u64 = 1 << 44;

/// The key of a directory in [`Model::dirs`] or of an object (an identity)
/// in [`Model::objs`].
type Id = u64;

/// The id of the root directory.
const ROOT: Id = 0;

/// What a name in a directory refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Dir(Id),
    /// An identity: every name of one (hard-linked) object holds the same id.
    Obj(Id),
}

/// The attributes every object has.
#[derive(Debug, Clone)]
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: Xattrs,
}

impl Attrs {
    fn of(meta: &Metadata) -> Attrs {
        Attrs {
            mode: meta.mode & MODE_MASK,
            uid: meta.uid,
            gid: meta.gid,
            xattrs: meta.xattrs.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct DirNode {
    attrs: Attrs,
    entries: BTreeMap<NameBuf, Child>,
    /// How many lower layers contribute to this directory.
    lower_layers: u64,
    /// Whether the directory has been copied up (or created) in the upper.
    in_upper: bool,
}

#[derive(Debug, Clone)]
enum Body {
    File(FileData),
    Symlink(NameBuf),
    /// A fifo, device or socket: only metadata.
    Special,
}

/// One identity: what all its names show.
#[derive(Debug, Clone)]
struct ObjNode {
    file_type: FileType,
    attrs: Attrs,
    /// Device number (0 unless a character or block device).
    rdev: u64,
    body: Body,
    /// How many names in the tree refer to this identity.
    names: u64,
    /// While still in a lower layer: that layer's link count.
    lower_nlink: u64,
    /// Whether the object has been copied up (or created) in the upper.
    in_upper: bool,
}

impl ObjNode {
    fn nlink(&self) -> u64 {
        if self.in_upper {
            self.names
        } else {
            self.lower_nlink
        }
    }

    fn size(&self) -> u64 {
        match &self.body {
            Body::File(data) => data.len(),
            Body::Symlink(target) => target.len() as u64,
            Body::Special => 0,
        }
    }
}

/// Whether a final symlink is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Always (the operations marked FOLLOW).
    Always,
    /// Only when the path has a trailing slash.
    WithSlash,
    /// Never (`create_new`).
    Never,
    /// Never, and a trailing slash is left to the caller (operations that
    /// make or remove a name, as the kernel's `filename_create` and
    /// `do_unlinkat`).
    Create,
    /// Always, for an open that may create (`O_CREAT`): the last name of
    /// the path or of a symlink target, with a trailing slash, is `EISDIR`
    /// before it is looked up (the kernel's `open_last_lookups`).
    Creating,
}

/// Where a path leads: the directories from the root to the one that holds
/// the last name (physical, after symlinks), and that name.
#[derive(Debug, Clone)]
struct Resolved {
    /// Never empty: the root is always first.
    stack: Vec<Id>,
    last: Last,
    /// A trailing slash applies: the object must be a directory.
    must_dir: bool,
}

#[derive(Debug, Clone)]
enum Last {
    /// A name in the last directory of the stack (present or not).
    Name(NameBuf),
    /// The path names the last directory of the stack itself (it is the
    /// root, or ends in `..`): there is no parent and name.
    Itself,
}

impl Resolved {
    fn dir(&self) -> Id {
        top(&self.stack)
    }

    fn name(&self) -> Option<&Name> {
        match &self.last {
            Last::Name(name) => Some(name),
            Last::Itself => None,
        }
    }
}

fn top(stack: &[Id]) -> Id {
    stack.last().copied().unwrap_or(ROOT)
}

/// `..`: the physical parent; the root's parent is the root.
fn pop_to_parent(stack: &mut Vec<Id>) {
    if stack.len() > 1 {
        stack.pop();
    }
}

/// The tree a stack of layers (top first) shows, flattened independently of
/// [`MergedView`](crate::MergedView): what an image's root filesystem holds.
///
/// ```
/// use std::sync::Arc;
/// use layerstack::{Layer, LayerPath, MemLayer};
///
/// let mut base = MemLayer::new();
/// base.add_file("etc/a", "1")?;
/// base.add_file("etc/b", "2")?;
/// let mut top = MemLayer::new();
/// top.add_whiteout("etc/a")?;
/// let tree = layerstack::model::flatten(&[Arc::new(top) as Arc<dyn Layer>, Arc::new(base)])?;
/// let paths: Vec<&str> = tree.keys().map(|p| p.to_str().unwrap()).collect();
/// assert_eq!(paths, ["", "etc", "etc/b"]);
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # Errors
/// As [`Model::from_layers`].
pub fn flatten(lowers: &[Arc<dyn Layer>]) -> Result<Snapshot> {
    Ok(Model::from_layers(lowers, ViewOptions::default())?.snapshot())
}

/// The reference model of a merged view.
///
/// A plain tree built by [`Model::from_layers`]; each method does what the
/// method of the same name of [`MergedView`](crate::MergedView) does, with
/// the same result or the same error kind, and the same effect on what a
/// user can observe of the layering (link counts, `EXDEV`).
///
/// ```
/// use std::sync::Arc;
/// use layerstack::model::Model;
/// use layerstack::view::{DirRename, ViewOptions};
/// use layerstack::{ErrorKind, Layer, MemLayer};
///
/// let mut base = MemLayer::new();
/// base.add_file("src/main.rs", "fn main() {}\n")?;
/// let lowers: Vec<Arc<dyn Layer>> = vec![Arc::new(base)];
///
/// // By default a directory with a lower part cannot be renamed (EXDEV).
/// let mut model = Model::from_layers(&lowers, ViewOptions::default())?;
/// let err = model.rename_with("src", "lib", Default::default()).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::CrossesDevices);
///
/// // With redirects it moves, contents and all.
/// let options = ViewOptions::default().dir_rename(DirRename::Redirect);
/// let mut model = Model::from_layers(&lowers, options)?;
/// model.rename_with("src", "lib", Default::default())?;
/// assert_eq!(&model.read("lib/main.rs")?[..], b"fn main() {}\n");
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    options: ViewOptions,
    dirs: BTreeMap<Id, DirNode>,
    objs: BTreeMap<Id, ObjNode>,
    next_id: Id,
    /// Open handles, by number (see `MergedView::open_handle`).
    handles: BTreeMap<u64, ModelHandle>,
    next_handle: u64,
}

/// An open handle: a regular file by identity (it follows renames, and an
/// identity with no name left lives on while a handle holds it), anything
/// else by the physical path it was opened at, as the view holds them.
#[derive(Debug, Clone)]
struct ModelHandle {
    options: OpenOptions,
    file_type: FileType,
    target: HandleTarget,
}

#[derive(Debug, Clone)]
enum HandleTarget {
    Obj(Id),
    Path(NameBuf),
}

impl Model {
    /// Flattens `lowers` (top first) into the tree a view over them with an
    /// empty upper shows.
    ///
    /// # Errors
    /// Errors of the layers (reframed as a lookup of the merged path, with
    /// the layer's index); `EINVAL` for a name that is not a valid name or a
    /// malformed redirect.
    pub fn from_layers(lowers: &[Arc<dyn Layer>], options: ViewOptions) -> Result<Model> {
        let mut model = Model::empty(options);
        let root_path = LayerPath::root();
        let mut root_stack = Vec::new();
        for (index, layer) in lowers.iter().enumerate() {
            let entry = layer
                .lookup(&root_path)
                .map_err(|e| layer_error(e, index, &root_path))?;
            if let Some(Entry::Node(node)) = entry
                && node.meta.is_dir()
            {
                root_stack.push((index, root_path.clone()));
                if node.opaque {
                    break;
                }
            }
        }
        model.dir_mut(ROOT).lower_layers = root_stack.len() as u64;
        let flatten = Flatten {
            lowers,
            layers: root_stack.iter().map(|(l, _)| *l).collect(),
        };
        let keep = options.hard_links == HardLinkCopyUp::Keep;
        // Lower inodes already seen (layer, ino) -> identity, for `Keep`.
        let mut inodes: BTreeMap<(usize, u64), Id> = BTreeMap::new();
        let mut work = vec![(ROOT, root_stack, root_path)];
        while let Some((dir, stack, merged)) = work.pop() {
            let mut names = BTreeSet::new();
            for (l, p) in &stack {
                let listing = lowers[*l]
                    .read_dir(p)
                    .map_err(|e| layer_error(e, *l, &merged))?;
                names.extend(listing.entries.into_iter().map(|(name, _)| name));
            }
            for name in names {
                validate_name(name.as_bytes())
                    .map_err(|e| e.reframe(Operation::Lookup, merged.as_name()))?;
                let child_path = merged.join_unchecked(&name);
                match flatten.child(&stack, &name, &child_path)? {
                    Found::Nothing => {}
                    Found::Dir { stack, top } => {
                        let id = model.alloc();
                        model.dirs.insert(
                            id,
                            DirNode {
                                attrs: Attrs::of(&top.meta),
                                entries: BTreeMap::new(),
                                lower_layers: stack.len() as u64,
                                in_upper: false,
                            },
                        );
                        model.dir_mut(dir).entries.insert(name, Child::Dir(id));
                        work.push((id, stack, child_path));
                    }
                    Found::Object { layer, path, node } => {
                        let key = (layer, node.meta.ino);
                        let shared = if keep && node.meta.nlink > 1 {
                            inodes.get(&key).copied()
                        } else {
                            None
                        };
                        let id = match shared {
                            Some(id) => {
                                model.obj_mut(id).names += 1;
                                id
                            }
                            None => {
                                let obj = read_object(&*lowers[layer], &path, &node)
                                    .map_err(|e| layer_error(e, layer, &child_path))?;
                                let id = model.alloc();
                                model.objs.insert(id, obj);
                                if keep && node.meta.nlink > 1 {
                                    inodes.insert(key, id);
                                }
                                id
                            }
                        };
                        model.dir_mut(dir).entries.insert(name, Child::Obj(id));
                    }
                }
            }
        }
        Ok(model)
    }

    /// As `MergedView::metadata` (follows symlinks); `ino`, times are 0.
    ///
    /// # Errors
    /// As `MergedView::metadata`.
    pub fn metadata(&self, path: impl PathLike) -> Result<Metadata> {
        let path = Name::new(path.path_bytes());
        let (_, found) = self.object(path, Operation::Metadata, Follow::Always)?;
        Ok(self.metadata_of(found))
    }

    /// As `MergedView::symlink_metadata`.
    ///
    /// # Errors
    /// As `MergedView::symlink_metadata`.
    pub fn symlink_metadata(&self, path: impl PathLike) -> Result<Metadata> {
        let path = Name::new(path.path_bytes());
        let (_, found) = self.object(path, Operation::Metadata, Follow::WithSlash)?;
        Ok(self.metadata_of(found))
    }

    /// As `MergedView::read`.
    ///
    /// # Errors
    /// As `MergedView::read`.
    pub fn read(&self, path: impl PathLike) -> Result<Bytes> {
        let path = Name::new(path.path_bytes());
        self.file_data(path)?
            .to_bytes()
            .map_err(|e| e.reframe(Operation::Read, path))
    }

    /// As `MergedView::read_at`.
    ///
    /// # Errors
    /// As `MergedView::read_at`.
    pub fn read_at(&self, path: impl PathLike, offset: u64, len: usize) -> Result<Bytes> {
        let path = Name::new(path.path_bytes());
        self.file_data(path)?
            .read_at(offset, len)
            .map_err(|e| e.reframe(Operation::Read, path))
    }

    /// As `MergedView::read_dir`: names and types, sorted by name.
    ///
    /// # Errors
    /// As `MergedView::read_dir`.
    pub fn read_dir(&self, path: impl PathLike) -> Result<Vec<(NameBuf, FileType)>> {
        let path = Name::new(path.path_bytes());
        let op = Operation::ReadDir;
        match self.object(path, op, Follow::Always)? {
            (_, Child::Dir(id)) => Ok(self
                .dir(id)
                .entries
                .iter()
                .map(|(name, child)| (name.clone(), self.file_type(*child)))
                .collect()),
            (_, Child::Obj(_)) => Err(Error::new(ErrorKind::NotADirectory, op, path)),
        }
    }

    /// As `MergedView::read_link`.
    ///
    /// # Errors
    /// As `MergedView::read_link`.
    pub fn read_link(&self, path: impl PathLike) -> Result<NameBuf> {
        let path = Name::new(path.path_bytes());
        let op = Operation::ReadLink;
        if let (_, Child::Obj(id)) = self.object(path, op, Follow::WithSlash)?
            && let Body::Symlink(target) = &self.obj(id).body
        {
            return Ok(target.clone());
        }
        Err(Error::new(ErrorKind::InvalidInput, op, path))
    }

    /// As `MergedView::write`.
    ///
    /// # Errors
    /// As `MergedView::write`.
    pub fn write(&mut self, path: impl PathLike, data: &[u8]) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::Write;
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if let Some(id) = self.open_file(path, &options, op)? {
            self.write_data(id, 0, data)
                .map_err(|k| Error::new(k, op, path))?;
        }
        Ok(())
    }

    /// As `MergedView::append`.
    ///
    /// # Errors
    /// As `MergedView::append`.
    pub fn append(&mut self, path: impl PathLike, data: &[u8]) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::Write;
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        if let Some(id) = self.open_file(path, &options, op)? {
            let end = self.obj(id).size();
            self.write_data(id, end, data)
                .map_err(|k| Error::new(k, op, path))?;
        }
        Ok(())
    }

    /// As `MergedView::write_at`.
    ///
    /// # Errors
    /// As `MergedView::write_at`.
    pub fn write_at(&mut self, path: impl PathLike, offset: u64, data: &[u8]) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::Write;
        let mut options = OpenOptions::new();
        options.write(true);
        if let Some(id) = self.open_file(path, &options, op)? {
            self.write_data(id, offset, data)
                .map_err(|k| Error::new(k, op, path))?;
        }
        Ok(())
    }

    /// As `MergedView::set_len`.
    ///
    /// # Errors
    /// As `MergedView::set_len`.
    pub fn set_len(&mut self, path: impl PathLike, len: u64) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::SetLen;
        let err = |kind| Error::new(kind, op, path);
        let (resolved, found) = self.object(path, op, Follow::Always)?;
        let Child::Obj(id) = found else {
            return Err(err(ErrorKind::IsADirectory));
        };
        if self.obj(id).file_type != FileType::File {
            return Err(err(ErrorKind::InvalidInput));
        }
        self.copy_up(&resolved);
        if len > MAX_FILE_SIZE {
            return Err(err(ErrorKind::FileTooLarge));
        }
        if let Body::File(data) = &mut self.obj_mut(id).body {
            data.set_len(len);
        }
        Ok(())
    }

    /// As `MergedView::open` (its side effects: create, truncate, copy-up).
    ///
    /// # Errors
    /// As `MergedView::open`.
    pub fn open(&mut self, path: impl PathLike, options: &OpenOptions) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::Open;
        if !options.is_valid() {
            return Err(Error::new(ErrorKind::InvalidInput, op, path)
                .with_detail("invalid combination of open options"));
        }
        self.open_file(path, options, op).map(|_| ())
    }

    /// As `MergedView::create_dir`.
    ///
    /// # Errors
    /// As `MergedView::create_dir`.
    pub fn create_dir(&mut self, path: impl PathLike) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::CreateDir;
        let resolved = self.resolve(path, op, Follow::Create)?;
        let name = self.new_name(&resolved, op, path, FileType::Dir)?;
        self.add_dir(&resolved.stack, &name);
        Ok(())
    }

    /// As `MergedView::create_dir_all` (`std`'s algorithm, on the model's
    /// own `create_dir` and `metadata`).
    ///
    /// # Errors
    /// As `MergedView::create_dir_all`.
    pub fn create_dir_all(&mut self, path: impl PathLike) -> Result<()> {
        let path = Name::new(path.path_bytes());
        if path.is_empty() {
            return Ok(());
        }
        let op = Operation::CreateDir;
        let is_dir = |m: &Model, p: &Name| m.metadata(p).is_ok_and(|m| m.is_dir());
        match self.create_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(_) if is_dir(self, path) => return Ok(()),
            Err(e) => return Err(e),
        }
        let parent = path.to_path().parent();
        match parent.map(|p| Name::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))) {
            Some(parent) => self
                .create_dir_all(parent)
                .map_err(|e| e.reframe(op, path))?,
            None => return Err(Error::new(ErrorKind::NotFound, op, path)),
        }
        match self.create_dir(path) {
            Ok(()) => Ok(()),
            Err(_) if is_dir(self, path) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// As `MergedView::remove_file`.
    ///
    /// # Errors
    /// As `MergedView::remove_file`.
    pub fn remove_file(&mut self, path: impl PathLike) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::RemoveFile;
        let err = |kind| Error::new(kind, op, path);
        let resolved = self.resolve(path, op, Follow::Create)?;
        let Some(name) = resolved.name() else {
            return Err(err(ErrorKind::IsADirectory));
        };
        match self.child(resolved.dir(), name) {
            None => Err(err(ErrorKind::NotFound)),
            Some(Child::Dir(_)) => Err(err(ErrorKind::IsADirectory)),
            Some(Child::Obj(_)) if resolved.must_dir => Err(err(ErrorKind::NotADirectory)),
            Some(Child::Obj(_)) => {
                self.unlink(&resolved.stack, name);
                Ok(())
            }
        }
    }

    /// As `MergedView::remove_dir`.
    ///
    /// # Errors
    /// As `MergedView::remove_dir`.
    pub fn remove_dir(&mut self, path: impl PathLike) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::RemoveDir;
        let err = |kind| Error::new(kind, op, path);
        let user = UserPath::parse(path.as_bytes(), op)?;
        let resolved = self.resolve_user(&user, path, op, Follow::Create)?;
        let Some(name) = resolved.name() else {
            // The kernel's `do_rmdir`, by the kind of the last component.
            return Err(err(match user.last_kind() {
                LastKind::Dot => ErrorKind::InvalidInput,
                LastKind::DotDot => ErrorKind::DirectoryNotEmpty,
                LastKind::Root | LastKind::Name => ErrorKind::Busy,
            }));
        };
        match self.child(resolved.dir(), name) {
            None => Err(err(ErrorKind::NotFound)),
            Some(Child::Obj(_)) => Err(err(ErrorKind::NotADirectory)),
            Some(Child::Dir(id)) if !self.dir(id).entries.is_empty() => {
                Err(err(ErrorKind::DirectoryNotEmpty))
            }
            Some(Child::Dir(_)) => {
                self.unlink(&resolved.stack, name);
                Ok(())
            }
        }
    }

    /// As `MergedView::remove_dir_all`: a path without one directory's
    /// name is refused first, with `remove_dir`'s error.
    ///
    /// # Errors
    /// As `MergedView::remove_dir_all`.
    pub fn remove_dir_all(&mut self, path: impl PathLike) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::RemoveDir;
        let resolved = self.resolve(path, op, Follow::Create)?;
        let Some(name) = resolved.name() else {
            // Nothing is removed: `remove_dir` refuses a path with no name.
            return self.remove_dir(path);
        };
        match self.child(resolved.dir(), name) {
            None => Err(Error::new(ErrorKind::NotFound, op, path)),
            Some(Child::Obj(id))
                if self.obj(id).file_type == FileType::Symlink && !resolved.must_dir =>
            {
                self.unlink(&resolved.stack, name);
                Ok(())
            }
            Some(Child::Obj(_)) => Err(Error::new(ErrorKind::NotADirectory, op, path)),
            Some(Child::Dir(_)) => {
                self.unlink(&resolved.stack, name);
                Ok(())
            }
        }
    }

    /// As `MergedView::rename_with`.
    ///
    /// # Errors
    /// As `MergedView::rename_with`.
    pub fn rename_with(
        &mut self,
        from: impl PathLike,
        to: impl PathLike,
        mode: RenameMode,
    ) -> Result<()> {
        let from = Name::new(from.path_bytes());
        let to = Name::new(to.path_bytes());
        self.rename_inner(from, to, mode)
            .map_err(|e| e.with_second_path(to))
    }

    fn rename_inner(&mut self, from: &Name, to: &Name, mode: RenameMode) -> Result<()> {
        let op = Operation::Rename;
        let from_err = |kind| Error::new(kind, op, from);
        let to_err = |kind| Error::new(kind, op, to);
        let exchange = mode == RenameMode::Exchange;
        // 1. Parse both, then walk to both parents.
        // A NUL byte cannot reach the kernel (`std` refuses both paths
        // first); otherwise, as the kernel's `do_renameat2`, `to` is parsed
        // after `from`'s parent is walked.
        check_no_nul(from, op)?;
        check_no_nul(to, op)?;
        let from_user = UserPath::parse(from, op)?;
        let from_res = self
            .walk(vec![ROOT], &from_user, false, false, &mut 0)
            .map_err(from_err)?;
        let to_user = UserPath::parse(to, op)?;
        let to_res = self
            .walk(vec![ROOT], &to_user, false, false, &mut 0)
            .map_err(to_err)?;
        // 2. The root and `..` have no name to move.
        let Some(from_name) = from_res.name() else {
            return Err(from_err(ErrorKind::Busy));
        };
        let Some(to_name) = to_res.name() else {
            // As the kernel's `do_renameat2`: no name to replace.
            return Err(to_err(if mode == RenameMode::NoReplace {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::Busy
            }));
        };
        let (from_dir, to_dir) = (from_res.dir(), to_res.dir());
        // 3.
        let Some(source) = self.child(from_dir, from_name) else {
            return Err(from_err(ErrorKind::NotFound));
        };
        let target = self.child(to_dir, to_name);
        // 4.
        if mode == RenameMode::NoReplace && target.is_some() {
            return Err(to_err(ErrorKind::AlreadyExists));
        }
        // 5.
        if exchange && target.is_none() {
            return Err(to_err(ErrorKind::NotFound));
        }
        // 6.
        let source_is_dir = self.is_dir(source);
        let target_is_dir = target.is_some_and(|t| self.is_dir(t));
        if !source_is_dir {
            if from_user.trailing_slash {
                return Err(from_err(ErrorKind::NotADirectory));
            }
            if !exchange && to_user.trailing_slash {
                return Err(to_err(ErrorKind::NotADirectory));
            }
        }
        if exchange && target.is_some() && !target_is_dir && to_user.trailing_slash {
            return Err(to_err(ErrorKind::NotADirectory));
        }
        // 7.
        if let Child::Dir(id) = source
            && to_res.stack.contains(&id)
        {
            return Err(to_err(ErrorKind::InvalidInput));
        }
        if let Some(Child::Dir(id)) = target
            && from_res.stack.contains(&id)
        {
            return Err(to_err(if exchange {
                ErrorKind::InvalidInput
            } else {
                ErrorKind::DirectoryNotEmpty
            }));
        }
        // 8.
        let same_entry = from_dir == to_dir && from_name == to_name;
        let same_object =
            matches!((source, target), (Child::Obj(a), Some(Child::Obj(b))) if a == b);
        if same_entry || same_object {
            return Ok(());
        }
        // 9.
        if !exchange && target.is_some() {
            if source_is_dir && !target_is_dir {
                return Err(to_err(ErrorKind::NotADirectory));
            }
            if !source_is_dir && target_is_dir {
                return Err(to_err(ErrorKind::IsADirectory));
            }
        }
        // 10.
        if self.options.dir_rename == DirRename::CrossDevice {
            if self.has_lower_part(source) {
                return Err(from_err(ErrorKind::CrossesDevices));
            }
            if exchange && target.is_some_and(|t| self.has_lower_part(t)) {
                return Err(to_err(ErrorKind::CrossesDevices));
            }
        }
        // 11. A target with a lower part is checked before anything
        // happens; a pure upper one only by the rename itself, after the
        // kernel copied the source and both parents up.
        if !exchange
            && let Some(Child::Dir(id)) = target
            && !self.dir(id).entries.is_empty()
        {
            if !self.has_lower_part(Child::Dir(id)) {
                self.copy_up_dirs(&from_res.stack);
                self.copy_up_child(source);
                self.copy_up_dirs(&to_res.stack);
            }
            return Err(to_err(ErrorKind::DirectoryNotEmpty));
        }
        // 12.
        self.copy_up_dirs(&from_res.stack);
        self.copy_up_dirs(&to_res.stack);
        self.copy_up_child(source);
        let (from_name, to_name) = (from_name.to_owned(), to_name.to_owned());
        match target {
            Some(target) if exchange => {
                self.copy_up_child(target);
                self.dir_mut(to_dir).entries.insert(to_name, source);
                self.dir_mut(from_dir).entries.insert(from_name, target);
            }
            _ => {
                self.dir_mut(from_dir).entries.remove(&from_name);
                if let Some(old) = self.dir_mut(to_dir).entries.insert(to_name, source) {
                    self.release(old);
                }
            }
        }
        Ok(())
    }

    /// As `MergedView::symlink`.
    ///
    /// # Errors
    /// As `MergedView::symlink`.
    pub fn symlink(&mut self, target: impl PathLike, link: impl PathLike) -> Result<()> {
        let target = Name::new(target.path_bytes());
        let link = Name::new(link.path_bytes());
        let op = Operation::Symlink;
        if target.is_empty() {
            return Err(
                Error::new(ErrorKind::NotFound, op, link).with_detail("empty symlink target")
            );
        }
        let resolved = self.resolve(link, op, Follow::Create)?;
        let name = self.new_name(&resolved, op, link, FileType::Symlink)?;
        let attrs = self.new_attrs(resolved.dir(), 0o777, false);
        self.add_obj(
            &resolved.stack,
            &name,
            FileType::Symlink,
            attrs,
            0,
            Body::Symlink(target.to_owned()),
        );
        Ok(())
    }

    /// As `MergedView::hard_link`.
    ///
    /// # Errors
    /// As `MergedView::hard_link`.
    pub fn hard_link(&mut self, original: impl PathLike, link: impl PathLike) -> Result<()> {
        let original = Name::new(original.path_bytes());
        let link = Name::new(link.path_bytes());
        self.hard_link_inner(original, link)
            .map_err(|e| e.with_second_path(link))
    }

    fn hard_link_inner(&mut self, original: &Name, link: &Name) -> Result<()> {
        let op = Operation::HardLink;
        // As the kernel's `do_linkat`: the original is looked up before
        // `link` is even parsed (a NUL byte, which `std` refuses before the
        // call, excepted).
        check_no_nul(original, op)?;
        check_no_nul(link, op)?;
        let original_user = UserPath::parse(original, op)?;
        let original_res = self.resolve_user(&original_user, original, op, Follow::WithSlash)?;
        let Some(found) = self.found(&original_res) else {
            return Err(Error::new(ErrorKind::NotFound, op, original));
        };
        let link_user = UserPath::parse(link, op)?;
        let link_res = self.resolve_user(&link_user, link, op, Follow::Create)?;
        let name = self.new_name(&link_res, op, link, FileType::File)?;
        let Child::Obj(id) = found else {
            return Err(Error::new(ErrorKind::NotPermitted, op, original)
                .with_detail("cannot hard-link a directory"));
        };
        self.copy_up(&original_res);
        self.copy_up_dirs(&link_res.stack);
        self.obj_mut(id).names += 1;
        self.dir_mut(link_res.dir())
            .entries
            .insert(name, Child::Obj(id));
        Ok(())
    }

    /// As `MergedView::set_permissions`.
    ///
    /// # Errors
    /// As `MergedView::set_permissions`.
    pub fn set_permissions(&mut self, path: impl PathLike, mode: u32) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let (resolved, found) = self.object(path, Operation::SetPermissions, Follow::Always)?;
        self.copy_up(&resolved);
        self.attrs_mut(found).mode = mode & MODE_MASK;
        Ok(())
    }

    /// As `MergedView::set_owner`.
    ///
    /// # Errors
    /// As `MergedView::set_owner`.
    pub fn set_owner(
        &mut self,
        path: impl PathLike,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let (resolved, found) = self.object(path, Operation::SetOwner, Follow::Always)?;
        self.copy_up(&resolved);
        let file_type = self.file_type(found);
        let attrs = self.attrs_mut(found);
        if let Some(uid) = uid {
            attrs.uid = uid;
        }
        if let Some(gid) = gid {
            attrs.gid = gid;
        }
        attrs.mode = mode_after_chown(file_type, attrs.mode);
        Ok(())
    }

    /// As `MergedView::set_times`.
    ///
    /// # Errors
    /// As `MergedView::set_times`.
    pub fn set_times(
        &mut self,
        path: impl PathLike,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        let path = Name::new(path.path_bytes());
        if atime.is_none() && mtime.is_none() {
            // As `utimensat` with both `UTIME_OMIT`: nothing to do, and the
            // path is not even looked up.
            return Ok(());
        }
        // Times are not in the model: only the copy-up is observable.
        let (resolved, _) = self.object(path, Operation::SetTimes, Follow::Always)?;
        self.copy_up(&resolved);
        Ok(())
    }

    /// As `MergedView::get_xattr`.
    ///
    /// # Errors
    /// As `MergedView::get_xattr`.
    pub fn get_xattr(&self, path: impl PathLike, name: &str) -> Result<Bytes> {
        let path = Name::new(path.path_bytes());
        let op = Operation::GetXattr;
        check_xattr_name_length(name, op, path)?;
        let (_, found) = self.object(path, op, Follow::Always)?;
        let no_data = || {
            Error::new(ErrorKind::NoData, op, path)
                .with_detail(format!("no extended attribute `{name}`"))
        };
        // The kernel's `xattr_permission` comes before the name check.
        if !xattr_allowed_on(self.file_type(found), name) {
            return Err(no_data());
        }
        check_xattr_name(name, op, path)?;
        self.attrs(found)
            .xattrs
            .get(name)
            .cloned()
            .ok_or_else(no_data)
    }

    /// As `MergedView::set_xattr`.
    ///
    /// # Errors
    /// As `MergedView::set_xattr`.
    pub fn set_xattr(&mut self, path: impl PathLike, name: &str, value: &[u8]) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::SetXattr;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::new(ErrorKind::ArgumentListTooLong, op, path));
        }
        check_xattr_name_length(name, op, path)?;
        let (resolved, found) = self.object(path, op, Follow::Always)?;
        if !xattr_allowed_on(self.file_type(found), name) {
            return Err(Error::new(ErrorKind::NotPermitted, op, path));
        }
        // The kernel copies up before the upper filesystem checks the name.
        self.copy_up(&resolved);
        check_xattr_name(name, op, path)?;
        self.attrs_mut(found)
            .xattrs
            .insert(name, Bytes::copy_from_slice(value));
        Ok(())
    }

    /// As `MergedView::remove_xattr`.
    ///
    /// # Errors
    /// As `MergedView::remove_xattr`.
    pub fn remove_xattr(&mut self, path: impl PathLike, name: &str) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::RemoveXattr;
        check_xattr_name_length(name, op, path)?;
        let (resolved, found) = self.object(path, op, Follow::Always)?;
        if !xattr_allowed_on(self.file_type(found), name) {
            return Err(Error::new(ErrorKind::NotPermitted, op, path));
        }
        check_xattr_name(name, op, path)?;
        if self.attrs(found).xattrs.get(name).is_none() {
            return Err(Error::new(ErrorKind::NoData, op, path)
                .with_detail(format!("no extended attribute `{name}`")));
        }
        self.copy_up(&resolved);
        self.attrs_mut(found).xattrs.remove(name);
        Ok(())
    }

    /// As `MergedView::list_xattr`.
    ///
    /// # Errors
    /// As `MergedView::list_xattr`.
    pub fn list_xattr(&self, path: impl PathLike) -> Result<Vec<String>> {
        let path = Name::new(path.path_bytes());
        let (_, found) = self.object(path, Operation::ListXattr, Follow::Always)?;
        Ok(self
            .attrs(found)
            .xattrs
            .names()
            .map(str::to_owned)
            .collect())
    }

    /// As `MergedView::mknod`.
    ///
    /// # Errors
    /// As `MergedView::mknod`.
    pub fn mknod(
        &mut self,
        path: impl PathLike,
        file_type: FileType,
        mode: u32,
        rdev: u64,
    ) -> Result<()> {
        let path = Name::new(path.path_bytes());
        let op = Operation::Mknod;
        // As the kernel's `may_mknod`: the type is checked before the path.
        if !file_type.is_special() {
            return Err(Error::new(ErrorKind::InvalidInput, op, path)
                .with_detail("mknod creates only fifos, devices and sockets"));
        }
        let user = UserPath::parse(path.as_bytes(), op)?;
        let resolved = self.resolve_user(&user, path, op, Follow::Create)?;
        let name = self.new_name(&resolved, op, path, file_type)?;
        if matches!(file_type, FileType::CharDevice | FileType::BlockDevice)
            && !crate::meta::rdev_fits_mknod(rdev)
        {
            return Err(Error::new(ErrorKind::InvalidInput, op, path));
        }
        if file_type == FileType::CharDevice && rdev == 0 {
            return Err(Error::new(ErrorKind::NotPermitted, op, path)
                .with_detail("the character device 0/0 is the whiteout marker"));
        }
        let rdev = match file_type {
            FileType::CharDevice | FileType::BlockDevice => rdev,
            _ => 0,
        };
        let attrs = self.new_attrs(
            resolved.dir(),
            mode & MODE_MASK & !self.options.umask,
            false,
        );
        self.add_obj(
            &resolved.stack,
            &name,
            file_type,
            attrs,
            rdev,
            Body::Special,
        );
        Ok(())
    }

    /// As `MergedView::commit`.
    pub fn commit(&mut self) {
        for (id, dir) in &mut self.dirs {
            if dir.in_upper {
                dir.lower_layers += 1;
                dir.in_upper = *id == ROOT;
            }
        }
        for obj in self.objs.values_mut() {
            if obj.in_upper {
                obj.lower_nlink = obj.names;
                obj.in_upper = false;
            }
        }
        if self.options.hard_links == HardLinkCopyUp::Break {
            // Names that shared one upper object now share only a lower
            // inode: each becomes its own identity (the first keeps the id).
            let mut seen = BTreeSet::new();
            let mut split = Vec::new();
            for (dir, node) in &self.dirs {
                for (name, child) in &node.entries {
                    if let Child::Obj(id) = *child
                        && self.obj(id).names > 1
                        && !seen.insert(id)
                    {
                        split.push((*dir, name.clone(), id));
                    }
                }
            }
            for (dir, name, id) in split {
                let mut copy = self.obj(id).clone();
                copy.names = 1;
                self.obj_mut(id).names -= 1;
                let new = self.alloc();
                self.objs.insert(new, copy);
                self.dir_mut(dir).entries.insert(name, Child::Obj(new));
            }
        }
    }

    /// As `MergedView::commit`: `EBUSY` while a handle is open, else
    /// [`Model::commit`].
    ///
    /// # Errors
    /// `EBUSY` as said.
    pub fn try_commit(&mut self) -> Result<()> {
        if !self.handles.is_empty() {
            return Err(Error::new(ErrorKind::Busy, Operation::Commit, "/")
                .with_detail("files of the view are open (close their handles first)"));
        }
        self.commit();
        Ok(())
    }

    /// As `MergedView::open_handle`.
    ///
    /// # Errors
    /// As `MergedView::open_handle`.
    pub fn open_handle(
        &mut self,
        path: impl PathLike,
        options: &OpenOptions,
    ) -> Result<crate::merged::HandleId> {
        let path = Name::new(path.path_bytes());
        let op = Operation::Open;
        if !options.is_valid() {
            return Err(Error::new(ErrorKind::InvalidInput, op, path)
                .with_detail("invalid combination of open options"));
        }
        let (file_type, target) = match self.open_file(path, options, op)? {
            Some(id) => (FileType::File, HandleTarget::Obj(id)),
            None => {
                let (resolved, child) = self.object(path, op, Follow::Always)?;
                let file_type = self.file_type(child);
                match child {
                    Child::Obj(id) if file_type == FileType::File => {
                        (file_type, HandleTarget::Obj(id))
                    }
                    _ => (file_type, HandleTarget::Path(self.physical_path(&resolved))),
                }
            }
        };
        let n = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            n,
            ModelHandle {
                options: *options,
                file_type,
                target,
            },
        );
        Ok(crate::merged::HandleId(n))
    }

    /// As `MergedView::close_handle`.
    ///
    /// # Errors
    /// As `MergedView::close_handle`.
    pub fn close_handle(&mut self, h: crate::merged::HandleId) -> Result<()> {
        let handle = self
            .handles
            .remove(&h.0)
            .ok_or_else(|| bad_handle(h, Operation::Close))?;
        if let HandleTarget::Obj(id) = handle.target
            && self.obj(id).names == 0
            && !self.is_open(id)
        {
            self.objs.remove(&id);
        }
        Ok(())
    }

    /// As `MergedView::open_handles`.
    #[must_use]
    pub fn open_handles(&self) -> Vec<crate::merged::HandleId> {
        self.handles
            .keys()
            .map(|n| crate::merged::HandleId(*n))
            .collect()
    }

    /// As `MergedView::handle_read_at`.
    ///
    /// # Errors
    /// As `MergedView::handle_read_at`.
    pub fn handle_read_at(
        &self,
        h: crate::merged::HandleId,
        offset: u64,
        len: usize,
    ) -> Result<Bytes> {
        let op = Operation::Read;
        let handle = self.handle(h, op)?;
        self.check_handle(handle, op)?;
        match &handle.target {
            HandleTarget::Obj(id) => match &self.obj(*id).body {
                Body::File(data) => data.read_at(offset, len),
                _ => Err(Error::new(ErrorKind::InvalidInput, op, "")),
            },
            HandleTarget::Path(p) => self.read_at(p, offset, len),
        }
    }

    /// As `MergedView::handle_write_at`.
    ///
    /// # Errors
    /// As `MergedView::handle_write_at`.
    pub fn handle_write_at(
        &mut self,
        h: crate::merged::HandleId,
        offset: u64,
        data: &[u8],
    ) -> Result<u64> {
        let op = Operation::Write;
        let handle = self.handle(h, op)?;
        self.check_handle(handle, op)?;
        let (append, target) = (handle.options.append, handle.target.clone());
        let HandleTarget::Obj(id) = target else {
            return Err(Error::new(ErrorKind::BadHandle, op, ""));
        };
        let at = if append { self.obj(id).size() } else { offset };
        self.write_data(id, at, data)
            .map_err(|k| Error::new(k, op, ""))?;
        Ok(at + data.len() as u64)
    }

    /// As `MergedView::handle_set_len`.
    ///
    /// # Errors
    /// As `MergedView::handle_set_len`.
    pub fn handle_set_len(&mut self, h: crate::merged::HandleId, len: u64) -> Result<()> {
        let op = Operation::SetLen;
        let handle = self.handle(h, op)?;
        if !handle.options.writes() {
            return Err(Error::new(ErrorKind::InvalidInput, op, ""));
        }
        let HandleTarget::Obj(id) = handle.target else {
            return Err(Error::new(ErrorKind::InvalidInput, op, ""));
        };
        if len > MAX_FILE_SIZE {
            return Err(Error::new(ErrorKind::FileTooLarge, op, ""));
        }
        if let Body::File(data) = &mut self.obj_mut(id).body {
            data.set_len(len);
        }
        Ok(())
    }

    /// As `MergedView::handle_metadata`.
    ///
    /// # Errors
    /// As `MergedView::handle_metadata`.
    pub fn handle_metadata(&self, h: crate::merged::HandleId) -> Result<Metadata> {
        let handle = self.handle(h, Operation::Metadata)?;
        match &handle.target {
            HandleTarget::Obj(id) => Ok(self.metadata_of(Child::Obj(*id))),
            HandleTarget::Path(p) => self.symlink_metadata(p),
        }
    }

    fn handle(&self, h: crate::merged::HandleId, op: Operation) -> Result<&ModelHandle> {
        self.handles.get(&h.0).ok_or_else(|| bad_handle(h, op))
    }

    /// `EBADF` without the access `op` needs, `EISDIR` for a directory.
    fn check_handle(&self, handle: &ModelHandle, op: Operation) -> Result<()> {
        let allowed = match op {
            Operation::Read => handle.options.read,
            _ => handle.options.writes(),
        };
        if !allowed {
            return Err(Error::new(ErrorKind::BadHandle, op, ""));
        }
        if handle.file_type == FileType::Dir {
            return Err(Error::new(ErrorKind::IsADirectory, op, ""));
        }
        Ok(())
    }

    fn is_open(&self, id: Id) -> bool {
        self.handles
            .values()
            .any(|h| matches!(h.target, HandleTarget::Obj(o) if o == id))
    }

    /// The physical path (absolute, no symlinks) of what `resolved` names.
    fn physical_path(&self, resolved: &Resolved) -> NameBuf {
        let mut path = Vec::new();
        for pair in resolved.stack.windows(2) {
            let name = self
                .dir(pair[0])
                .entries
                .iter()
                .find(|(_, c)| **c == Child::Dir(pair[1]))
                .map(|(n, _)| n.clone())
                .expect("model invariant: a directory on the stack is in its parent");
            path.push(b'/');
            path.extend_from_slice(name.as_bytes());
        }
        if let Last::Name(name) = &resolved.last {
            path.push(b'/');
            path.extend_from_slice(name.as_bytes());
        }
        if path.is_empty() {
            path.push(b'/');
        }
        NameBuf::from(path)
    }

    /// The whole visible tree.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::new();
        let mut work = vec![(LayerPath::root(), Child::Dir(ROOT))];
        while let Some((path, child)) = work.pop() {
            if let Child::Dir(id) = child {
                for (name, grandchild) in &self.dir(id).entries {
                    work.push((path.join_unchecked(name), *grandchild));
                }
            }
            snapshot.insert(path, self.snapshot_entry(child));
        }
        snapshot
    }
}

// Resolution.
impl Model {
    /// Parses and resolves `path` for `op`, then applies the trailing-slash
    /// rule: an object that exists there must be a directory.
    fn resolve(&self, path: &Name, op: Operation, follow: Follow) -> Result<Resolved> {
        let user = UserPath::parse(path.as_bytes(), op)?;
        self.resolve_user(&user, path, op, follow)
    }

    fn resolve_user(
        &self,
        user: &UserPath<'_>,
        path: &Name,
        op: Operation,
        follow: Follow,
    ) -> Result<Resolved> {
        let follow_last = match follow {
            Follow::Always | Follow::Creating => true,
            Follow::WithSlash => user.trailing_slash,
            Follow::Never | Follow::Create => false,
        };
        let resolved = self
            .walk(
                vec![ROOT],
                user,
                follow_last,
                follow == Follow::Creating,
                &mut 0,
            )
            .map_err(|kind| Error::new(kind, op, path))?;
        if follow != Follow::Create
            && resolved.must_dir
            && self.found(&resolved).is_some_and(|c| !self.is_dir(c))
        {
            return Err(Error::new(ErrorKind::NotADirectory, op, path));
        }
        Ok(resolved)
    }

    /// Resolves `path` to an existing object (`ENOENT` if missing).
    fn object(&self, path: &Name, op: Operation, follow: Follow) -> Result<(Resolved, Child)> {
        let resolved = self.resolve(path, op, follow)?;
        match self.found(&resolved) {
            Some(found) => Ok((resolved, found)),
            None => Err(Error::new(ErrorKind::NotFound, op, path)),
        }
    }

    /// Walks `path` from the directories `stack`. Every component but the
    /// last must lead to a directory (symlinks followed); the last is
    /// followed if it is a symlink and `follow_last`.
    fn walk(
        &self,
        mut stack: Vec<Id>,
        path: &UserPath<'_>,
        follow_last: bool,
        creating: bool,
        links: &mut u32,
    ) -> Result<Resolved, ErrorKind> {
        if path.ends_in_dot {
            // `a/.`: every name is a directory on the way; the path names
            // the last one itself (the kernel's `LAST_DOT`).
            for component in &path.components {
                match component {
                    Component::Parent => pop_to_parent(&mut stack),
                    Component::Name(name) => stack = self.enter(stack, name, links)?,
                }
            }
            return Ok(Resolved {
                stack,
                last: Last::Itself,
                must_dir: true,
            });
        }
        let Some((last, init)) = path.components.split_last() else {
            return Ok(Resolved {
                stack,
                last: Last::Itself,
                must_dir: path.trailing_slash,
            });
        };
        for component in init {
            match component {
                Component::Parent => pop_to_parent(&mut stack),
                Component::Name(name) => stack = self.enter(stack, name, links)?,
            }
        }
        match last {
            Component::Parent => {
                pop_to_parent(&mut stack);
                Ok(Resolved {
                    stack,
                    last: Last::Itself,
                    must_dir: path.trailing_slash,
                })
            }
            Component::Name(name) => {
                if creating && path.trailing_slash {
                    return Err(ErrorKind::IsADirectory);
                }
                if follow_last
                    && let Some(Child::Obj(id)) = self.child(top(&stack), name)
                    && let Body::Symlink(target) = &self.obj(id).body
                {
                    let mut resolved = self.follow(&stack, target, creating, links)?;
                    resolved.must_dir |= path.trailing_slash;
                    return Ok(resolved);
                }
                Ok(Resolved {
                    stack,
                    last: Last::Name((*name).to_owned()),
                    must_dir: path.trailing_slash,
                })
            }
        }
    }

    /// Follows a symlink with `target` held in the directory `holder` (the
    /// last of the stack), to the end of its chain.
    fn follow(
        &self,
        holder: &[Id],
        target: &Name,
        creating: bool,
        links: &mut u32,
    ) -> Result<Resolved, ErrorKind> {
        *links += 1;
        if *links > MAX_SYMLINKS {
            return Err(ErrorKind::FilesystemLoop);
        }
        let path = UserPath::parse(target.as_bytes(), Operation::Lookup).map_err(|e| e.kind())?;
        let start = if target.is_absolute() {
            vec![ROOT]
        } else {
            holder.to_vec()
        };
        self.walk(start, &path, true, creating, links)
    }

    /// Enters the directory `name` (following a symlink) below the last of
    /// `stack`.
    fn enter(
        &self,
        mut stack: Vec<Id>,
        name: &Name,
        links: &mut u32,
    ) -> Result<Vec<Id>, ErrorKind> {
        match self.child(top(&stack), name) {
            None => Err(ErrorKind::NotFound),
            Some(Child::Dir(id)) => {
                stack.push(id);
                Ok(stack)
            }
            Some(Child::Obj(id)) => {
                let Body::Symlink(target) = &self.obj(id).body else {
                    return Err(ErrorKind::NotADirectory);
                };
                let resolved = self.follow(&stack, target, false, links)?;
                match self.found(&resolved) {
                    None => Err(ErrorKind::NotFound),
                    Some(Child::Obj(_)) => Err(ErrorKind::NotADirectory),
                    Some(Child::Dir(id)) => {
                        let is_name = resolved.name().is_some();
                        let mut stack = resolved.stack;
                        if is_name {
                            stack.push(id);
                        }
                        Ok(stack)
                    }
                }
            }
        }
    }

    /// What is where `resolved` leads, if anything.
    fn found(&self, resolved: &Resolved) -> Option<Child> {
        match &resolved.last {
            Last::Itself => Some(Child::Dir(resolved.dir())),
            Last::Name(name) => self.child(resolved.dir(), name),
        }
    }

    /// Checks that `resolved` names a free name for a new object of
    /// `file_type`, and returns the name.
    fn new_name(
        &self,
        resolved: &Resolved,
        op: Operation,
        path: &Name,
        file_type: FileType,
    ) -> Result<NameBuf> {
        let err = |kind| Error::new(kind, op, path);
        let Some(name) = resolved.name() else {
            return Err(err(ErrorKind::AlreadyExists));
        };
        if self.child(resolved.dir(), name).is_some() {
            return Err(err(ErrorKind::AlreadyExists));
        }
        if resolved.must_dir && !file_type.is_dir() {
            // The kernel's `filename_create`: a trailing slash asks for a
            // directory that does not exist.
            return Err(err(ErrorKind::NotFound));
        }
        Ok(name.to_owned())
    }

    /// Opens `path` as `MergedView::open` does, after the options were
    /// checked; returns the file opened for writing, if any.
    fn open_file(
        &mut self,
        path: &Name,
        options: &OpenOptions,
        op: Operation,
    ) -> Result<Option<Id>> {
        let err = |kind| Error::new(kind, op, path);
        let user = UserPath::parse(path.as_bytes(), op)?;
        if options.creates() && user.trailing_slash && user.last_kind() == LastKind::Name {
            // The kernel refuses to create a name with a trailing slash,
            // whatever is there, once the parent is found (a path ending in
            // `.` or `..` names a directory: EEXIST or EISDIR below).
            self.resolve_user(&user, path, op, Follow::Create)?;
            return Err(err(ErrorKind::IsADirectory));
        }
        let follow = if options.create_new {
            Follow::Never
        } else if options.creates() {
            Follow::Creating
        } else {
            Follow::Always
        };
        let resolved = self.resolve_user(&user, path, op, follow)?;
        let writes = options.writes();
        match self.found(&resolved) {
            Some(_) if options.create_new => Err(err(ErrorKind::AlreadyExists)),
            Some(Child::Dir(_)) if writes => Err(err(ErrorKind::IsADirectory)),
            Some(Child::Obj(id)) if writes => {
                if self.obj(id).file_type != FileType::File {
                    return Err(err(ErrorKind::InvalidInput));
                }
                self.copy_up(&resolved);
                if options.truncate
                    && let Body::File(data) = &mut self.obj_mut(id).body
                {
                    data.set_len(0);
                }
                Ok(Some(id))
            }
            // Read-only: no effect.
            Some(_) => Ok(None),
            None if !options.creates() => Err(err(ErrorKind::NotFound)),
            // A dangling symlink whose target ends in a slash.
            None if resolved.must_dir => Err(err(ErrorKind::IsADirectory)),
            None => {
                let name = self.new_name(&resolved, op, path, FileType::File)?;
                let attrs = self.new_attrs(resolved.dir(), 0o666 & !self.options.umask, false);
                let id = self.add_obj(
                    &resolved.stack,
                    &name,
                    FileType::File,
                    attrs,
                    0,
                    Body::File(FileData::new()),
                );
                Ok(Some(id))
            }
        }
    }

    /// The data of the regular file at `path` (following symlinks).
    fn file_data(&self, path: &Name) -> Result<&FileData> {
        let op = Operation::Read;
        match self.object(path, op, Follow::Always)? {
            (_, Child::Dir(_)) => Err(Error::new(ErrorKind::IsADirectory, op, path)),
            (_, Child::Obj(id)) => match &self.obj(id).body {
                Body::File(data) => Ok(data),
                _ => Err(Error::new(ErrorKind::InvalidInput, op, path)),
            },
        }
    }
}

// The tree.
impl Model {
    fn empty(options: ViewOptions) -> Model {
        // The root is the upper layer's root: a fresh `MemLayer`'s.
        let root = DirNode {
            attrs: Attrs::of(&Metadata::new(FileType::Dir)),
            entries: BTreeMap::new(),
            lower_layers: 0,
            in_upper: true,
        };
        Model {
            options,
            dirs: BTreeMap::from([(ROOT, root)]),
            objs: BTreeMap::new(),
            next_id: ROOT + 1,
            handles: BTreeMap::new(),
            next_handle: 1,
        }
    }

    fn alloc(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn dir(&self, id: Id) -> &DirNode {
        self.dirs
            .get(&id)
            .expect("model invariant: every directory in the tree is in the table")
    }

    fn dir_mut(&mut self, id: Id) -> &mut DirNode {
        self.dirs
            .get_mut(&id)
            .expect("model invariant: every directory in the tree is in the table")
    }

    fn obj(&self, id: Id) -> &ObjNode {
        self.objs
            .get(&id)
            .expect("model invariant: every object in the tree is in the table")
    }

    fn obj_mut(&mut self, id: Id) -> &mut ObjNode {
        self.objs
            .get_mut(&id)
            .expect("model invariant: every object in the tree is in the table")
    }

    fn child(&self, dir: Id, name: &Name) -> Option<Child> {
        self.dir(dir).entries.get(name).copied()
    }

    fn is_dir(&self, child: Child) -> bool {
        matches!(child, Child::Dir(_))
    }

    fn file_type(&self, child: Child) -> FileType {
        match child {
            Child::Dir(_) => FileType::Dir,
            Child::Obj(id) => self.obj(id).file_type,
        }
    }

    fn attrs(&self, child: Child) -> &Attrs {
        match child {
            Child::Dir(id) => &self.dir(id).attrs,
            Child::Obj(id) => &self.obj(id).attrs,
        }
    }

    fn attrs_mut(&mut self, child: Child) -> &mut Attrs {
        match child {
            Child::Dir(id) => &mut self.dir_mut(id).attrs,
            Child::Obj(id) => &mut self.obj_mut(id).attrs,
        }
    }

    fn has_lower_part(&self, child: Child) -> bool {
        matches!(child, Child::Dir(id) if self.dir(id).lower_layers > 0)
    }

    /// The kernel's rule: a merged directory shows one link; any other
    /// shows 2 plus one per subdirectory.
    fn dir_nlink(&self, id: Id) -> u64 {
        let dir = self.dir(id);
        if (dir.in_upper && dir.lower_layers > 0) || dir.lower_layers > 1 {
            1
        } else {
            let subdirs = dir
                .entries
                .values()
                .filter(|c| matches!(c, Child::Dir(_)))
                .count();
            2 + subdirs as u64
        }
    }

    fn metadata_of(&self, child: Child) -> Metadata {
        let attrs = self.attrs(child);
        let mut meta = Metadata::new(self.file_type(child));
        meta.mode = attrs.mode;
        meta.uid = attrs.uid;
        meta.gid = attrs.gid;
        meta.xattrs = attrs.xattrs.clone();
        match child {
            Child::Dir(id) => {
                meta.size = 0;
                meta.nlink = self.dir_nlink(id);
            }
            Child::Obj(id) => {
                let obj = self.obj(id);
                meta.size = obj.size();
                meta.nlink = obj.nlink();
                meta.rdev = obj.rdev;
            }
        }
        meta
    }

    fn snapshot_entry(&self, child: Child) -> SnapshotEntry {
        let meta = self.metadata_of(child);
        let (data, target) = match child {
            Child::Obj(id) => match &self.obj(id).body {
                // The model's data is in memory (it has no spill); a
                // snapshot holds every file whole, as it always did.
                Body::File(data) => (
                    data.to_bytes().expect("a snapshot's files fit in memory"),
                    NameBuf::new(),
                ),
                Body::Symlink(target) => (Bytes::new(), target.clone()),
                Body::Special => (Bytes::new(), NameBuf::new()),
            },
            Child::Dir(_) => (Bytes::new(), NameBuf::new()),
        };
        SnapshotEntry {
            file_type: meta.file_type,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            size: meta.size,
            nlink: meta.nlink,
            rdev: meta.rdev,
            data,
            target,
            xattrs: meta
                .xattrs
                .iter()
                .map(|(name, value)| (name.to_owned(), value.clone()))
                .collect(),
        }
    }

    /// Owner and mode of a new object in directory `parent`: a setgid
    /// parent passes on its group, and its setgid bit to a new directory.
    fn new_attrs(&self, parent: Id, mode: u32, is_dir: bool) -> Attrs {
        let parent = &self.dir(parent).attrs;
        let setgid = parent.mode & S_ISGID != 0;
        Attrs {
            mode: if is_dir && setgid {
                mode | S_ISGID
            } else {
                mode
            },
            uid: self.options.uid,
            gid: if setgid { parent.gid } else { self.options.gid },
            xattrs: Xattrs::new(),
        }
    }

    /// Creates directory `name` in the last directory of `stack` (the name
    /// is free), copying up the parent chain.
    fn add_dir(&mut self, stack: &[Id], name: &Name) -> Id {
        let parent = top(stack);
        let attrs = self.new_attrs(parent, 0o777 & !self.options.umask & MODE_MASK, true);
        self.copy_up_dirs(stack);
        let id = self.alloc();
        self.dirs.insert(
            id,
            DirNode {
                attrs,
                entries: BTreeMap::new(),
                lower_layers: 0,
                in_upper: true,
            },
        );
        self.dir_mut(parent)
            .entries
            .insert(name.to_owned(), Child::Dir(id));
        id
    }

    /// Creates a non-directory `name` in the last directory of `stack` (the
    /// name is free), copying up the parent chain.
    fn add_obj(
        &mut self,
        stack: &[Id],
        name: &Name,
        file_type: FileType,
        attrs: Attrs,
        rdev: u64,
        body: Body,
    ) -> Id {
        self.copy_up_dirs(stack);
        let id = self.alloc();
        self.objs.insert(
            id,
            ObjNode {
                file_type,
                attrs,
                rdev,
                body,
                names: 1,
                lower_nlink: 1,
                in_upper: true,
            },
        );
        self.dir_mut(top(stack))
            .entries
            .insert(name.to_owned(), Child::Obj(id));
        id
    }

    /// Removes `name` (and everything below it) from the last directory of
    /// `stack`, copying up the parent chain.
    fn unlink(&mut self, stack: &[Id], name: &Name) {
        self.copy_up_dirs(stack);
        if let Some(child) = self.dir_mut(top(stack)).entries.remove(name) {
            self.release(child);
        }
    }

    /// Drops a name that was taken out of the tree: one name less for an
    /// object, the whole subtree for a directory.
    fn release(&mut self, child: Child) {
        let mut work = vec![child];
        while let Some(child) = work.pop() {
            match child {
                Child::Obj(id) => {
                    let obj = self.obj_mut(id);
                    obj.names -= 1;
                    // An open identity lives on, nameless, until closed.
                    if obj.names == 0 && !self.is_open(id) {
                        self.objs.remove(&id);
                    }
                }
                Child::Dir(id) => {
                    if let Some(dir) = self.dirs.remove(&id) {
                        work.extend(dir.entries.into_values());
                    }
                }
            }
        }
    }

    fn copy_up_dirs(&mut self, stack: &[Id]) {
        for id in stack {
            self.dir_mut(*id).in_upper = true;
        }
    }

    /// Copies up one object. With `HardLinkCopyUp::Keep` every name of a
    /// lower inode holds the same identity, so all of them are linked in
    /// the upper at once; with `Break` a lower identity has one name.
    fn copy_up_child(&mut self, child: Child) {
        match child {
            Child::Dir(id) => self.dir_mut(id).in_upper = true,
            Child::Obj(id) => {
                let was_up = self.obj(id).in_upper;
                self.obj_mut(id).in_upper = true;
                if !was_up && self.options.hard_links == HardLinkCopyUp::Keep {
                    // Every other name is linked in the upper at once, so
                    // the directories holding them are copied up too.
                    for stack in self.stacks_holding(id) {
                        self.copy_up_dirs(&stack);
                    }
                }
            }
        }
    }

    /// The directory chains (root first) of every directory that holds a
    /// name of object `id`.
    fn stacks_holding(&self, id: Id) -> Vec<Vec<Id>> {
        let mut found = Vec::new();
        let mut todo = vec![vec![ROOT]];
        while let Some(stack) = todo.pop() {
            let mut holds = false;
            for child in self.dir(top(&stack)).entries.values() {
                match child {
                    Child::Dir(dir) => {
                        let mut deeper = stack.clone();
                        deeper.push(*dir);
                        todo.push(deeper);
                    }
                    Child::Obj(obj) => holds |= *obj == id,
                }
            }
            if holds {
                found.push(stack);
            }
        }
        found
    }

    /// Copies up what `resolved` leads to, parents first.
    fn copy_up(&mut self, resolved: &Resolved) {
        self.copy_up_dirs(&resolved.stack);
        if let Some(found) = self.found(resolved) {
            self.copy_up_child(found);
        }
    }

    fn write_data(&mut self, id: Id, offset: u64, data: &[u8]) -> Result<(), ErrorKind> {
        if data.is_empty() {
            return Ok(());
        }
        match offset.checked_add(data.len() as u64) {
            Some(end) if end <= MAX_FILE_SIZE => {}
            _ => return Err(ErrorKind::FileTooLarge),
        }
        if let Body::File(file) = &mut self.obj_mut(id).body {
            file.write_at(offset, data);
        }
        Ok(())
    }
}

fn bad_handle(h: crate::merged::HandleId, op: Operation) -> Error {
    Error::new(
        ErrorKind::BadHandle,
        op,
        format!("(handle {})", h.0).as_str(),
    )
    .with_detail("no such open handle")
}

/// `EINVAL` for a path with a NUL byte (checked for both paths of a
/// two-path call before anything else, as `std` does before the syscall).
fn check_no_nul(path: &Name, op: Operation) -> Result<()> {
    if path.as_bytes().contains(&0) {
        // Gives EINVAL with its message.
        UserPath::parse(path.as_bytes(), op)?;
    }
    Ok(())
}

/// `ERANGE` for an empty or too long attribute name, checked before the
/// path is resolved.
fn check_xattr_name_length(name: &str, op: Operation, path: &Name) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        // Gives ERANGE with its message.
        check_xattr_name(name, op, path)?;
    }
    Ok(())
}

/// A layer's error while flattening, reframed as a lookup of the merged path.
fn layer_error(err: Error, layer: usize, merged: &LayerPath) -> Error {
    err.reframe(Operation::Lookup, merged.as_name())
        .with_layer_index(layer)
}

/// The flatten of a lower stack (the "Flatten" rules of the contract).
struct Flatten<'a> {
    lowers: &'a [Arc<dyn Layer>],
    /// The layers of the root's stack, top first: no other layer shows.
    layers: Vec<usize>,
}

/// Where the next layers look for a child.
enum Target {
    /// This name in each layer's path of the parent.
    Relative(NameBuf),
    /// This exact path from each layer's root (after an absolute redirect).
    Absolute(LayerPath),
}

/// What a merged directory shows at one name.
enum Found {
    Nothing,
    /// A directory: its stack (layer, path in that layer), top first, and
    /// the topmost node (its metadata is the merged directory's).
    Dir {
        stack: Vec<(usize, LayerPath)>,
        top: Node,
    },
    /// A non-directory, from this layer and path.
    Object {
        layer: usize,
        path: LayerPath,
        node: Node,
    },
}

impl Flatten<'_> {
    /// Looks up `name` in the merged directory whose stack is `parent`.
    fn child(
        &self,
        parent: &[(usize, LayerPath)],
        name: &Name,
        merged: &LayerPath,
    ) -> Result<Found> {
        let mut target = Target::Relative(name.to_owned());
        let mut stack = Vec::new();
        let mut top: Option<Node> = None;
        for &layer in &self.layers {
            // After an absolute redirect the kernel walks each layer from its
            // root: a whiteout or non-directory on the way ends the search,
            // an opaque directory on the way ends it after this layer, a
            // redirect on the way rewrites the path for the layers below.
            let mut opaque_on_way = false;
            let mut next = None;
            let (path, entry) = match &target {
                Target::Relative(name) => match parent.iter().find(|(l, _)| *l == layer) {
                    Some((_, p)) => {
                        let path = p.join_unchecked(name);
                        let entry = self.lowers[layer]
                            .lookup(&path)
                            .map_err(|e| layer_error(e, layer, merged))?;
                        (path, entry)
                    }
                    None => continue,
                },
                Target::Absolute(path) => {
                    let walked = walk_absolute(&*self.lowers[layer], path)
                        .map_err(|e| layer_error(e, layer, merged))?;
                    let Some(entry) = walked.entry else {
                        if walked.stop {
                            break;
                        }
                        if walked.opaque_on_way {
                            break;
                        }
                        target = Target::Absolute(walked.next);
                        continue;
                    };
                    opaque_on_way = walked.opaque_on_way;
                    next = Some(walked.next);
                    (walked.at, Some(entry))
                }
            };
            if let Some(next) = next.take() {
                target = Target::Absolute(next);
            }
            match entry {
                None => {}
                Some(Entry::Whiteout) => break,
                Some(Entry::Node(node)) if !node.meta.is_dir() => {
                    if top.is_none() {
                        return Ok(Found::Object { layer, path, node });
                    }
                    break;
                }
                Some(Entry::Node(node)) => {
                    let opaque = node.opaque;
                    let redirect = node.redirect.clone();
                    stack.push((layer, path.clone()));
                    top.get_or_insert(node);
                    if opaque {
                        break;
                    }
                    if let Some(redirect) = redirect {
                        let base = match &target {
                            Target::Absolute(p) => p.clone(),
                            Target::Relative(_) => path.clone(),
                        };
                        target = parse_redirect(&redirect, &target, &base).ok_or_else(|| {
                            Error::new(ErrorKind::InvalidInput, Operation::Lookup, merged.as_name())
                                .with_layer_index(layer)
                                .with_detail(format!("invalid redirect `{redirect}`"))
                        })?;
                    }
                    if opaque_on_way {
                        break;
                    }
                }
            }
        }
        Ok(match top {
            Some(top) => Found::Dir { stack, top },
            None => Found::Nothing,
        })
    }
}

/// What an absolute lookup finds in one layer.
struct AbsoluteWalk {
    /// The path walked to (the last component's path in this layer).
    at: LayerPath,
    /// What the layer holds there; `None` if the walk did not get there.
    entry: Option<Entry>,
    /// A whiteout or non-directory on the way: no layer below shows it.
    stop: bool,
    /// An opaque directory on the way: no layer below this one shows it.
    opaque_on_way: bool,
    /// The path for the layers below (rewritten by redirects on the way).
    next: LayerPath,
}

/// Walks `path` in one layer from its root, as the kernel's
/// `ovl_lookup_layer` does for an absolute redirect.
fn walk_absolute(layer: &dyn Layer, path: &LayerPath) -> Result<AbsoluteWalk> {
    let names: Vec<&Name> = path.names().collect();
    let mut at = LayerPath::root();
    let mut next: Vec<NameBuf> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut opaque_on_way = false;
    let result = |at, entry, stop, opaque_on_way, next: &[NameBuf]| {
        Ok(AbsoluteWalk {
            at,
            entry,
            stop,
            opaque_on_way,
            next: LayerPath::from_names(next.iter())?,
        })
    };
    for (i, name) in names.iter().enumerate() {
        at = at.join_unchecked(name);
        let entry = layer.lookup(&at)?;
        if i + 1 == names.len() {
            return result(at, entry, false, opaque_on_way, &next);
        }
        match entry {
            None => return result(at, None, false, opaque_on_way, &next),
            Some(Entry::Whiteout) => return result(at, None, true, opaque_on_way, &next),
            Some(Entry::Node(node)) if !node.meta.is_dir() => {
                return result(at, None, true, opaque_on_way, &next);
            }
            Some(Entry::Node(node)) => {
                if node.opaque {
                    opaque_on_way = true;
                } else if let Some(r) = &node.redirect {
                    // The rest of the path follows the redirected one.
                    let keep = next.len() - (names.len() - i);
                    let rest: Vec<NameBuf> = next[keep + 1..].to_vec();
                    let mut rewritten: Vec<NameBuf> = if r.is_absolute() {
                        opaque_on_way = false;
                        r.as_bytes()
                            .split(|&b| b == b'/')
                            .filter(|s| !s.is_empty())
                            .map(NameBuf::from)
                            .collect()
                    } else {
                        let mut p = next[..keep].to_vec();
                        p.push(r.clone());
                        p
                    };
                    rewritten.extend(rest);
                    next = rewritten;
                }
            }
        }
    }
    result(at, None, false, opaque_on_way, &next)
}

/// Parses a redirect in the kernel's format: `/a/b` from the root, a single
/// name relative to the parent (after an absolute redirect, the parent is
/// that of `path`). `None` if malformed.
fn parse_redirect(redirect: &Name, current: &Target, path: &LayerPath) -> Option<Target> {
    if let Some(absolute) = redirect.as_bytes().strip_prefix(b"/") {
        let absolute = LayerPath::new(absolute).ok()?;
        if absolute.is_root() {
            return None;
        }
        return Some(Target::Absolute(absolute));
    }
    validate_name(redirect).ok()?;
    Some(match current {
        Target::Relative(_) => Target::Relative(redirect.to_owned()),
        Target::Absolute(_) => Target::Absolute(path.parent()?.join_unchecked(redirect)),
    })
}

/// Reads a lower non-directory into a fresh identity (still in the lower).
fn read_object(layer: &dyn Layer, path: &LayerPath, node: &Node) -> Result<ObjNode> {
    let file_type = node.meta.file_type;
    let body = match file_type {
        FileType::File => Body::File(read_file(layer, path)?),
        FileType::Symlink => Body::Symlink(layer.read_link(path)?),
        _ => Body::Special,
    };
    let rdev = match file_type {
        FileType::CharDevice | FileType::BlockDevice => node.meta.rdev,
        _ => 0,
    };
    Ok(ObjNode {
        file_type,
        attrs: Attrs::of(&node.meta),
        rdev,
        body,
        names: 1,
        lower_nlink: node.meta.nlink,
        in_upper: false,
    })
}

fn read_file(layer: &dyn Layer, path: &LayerPath) -> Result<FileData> {
    // A memory layer hands its data over shared (holes stay holes).
    if let Some(mem) = layer.as_any().downcast_ref::<MemLayer>() {
        return mem.file_data(path);
    }
    let mut data = FileData::new();
    let mut offset = 0u64;
    loop {
        let chunk = layer.read_at(path, offset, 1 << 20)?;
        if chunk.is_empty() {
            return Ok(data);
        }
        let len = chunk.len() as u64;
        data.write_bytes_at(offset, chunk);
        offset += len;
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use proptest::prelude::*;

    use super::*;
    use crate::layer::LayerMut;
    use crate::meta::makedev;

    fn stack(layers: Vec<MemLayer>) -> Vec<Arc<dyn Layer>> {
        layers
            .into_iter()
            .map(|l| Arc::new(l) as Arc<dyn Layer>)
            .collect()
    }

    fn model_with(layers: Vec<MemLayer>, options: ViewOptions) -> Model {
        let model = Model::from_layers(&stack(layers), options).unwrap();
        check_invariants(&model);
        model
    }

    fn model(layers: Vec<MemLayer>) -> Model {
        model_with(layers, ViewOptions::default())
    }

    fn layer(build: impl FnOnce(&mut MemLayer) -> Result<()>) -> MemLayer {
        let mut l = MemLayer::new();
        build(&mut l).unwrap();
        l
    }

    fn kind<T: Debug>(result: Result<T>) -> ErrorKind {
        result.unwrap_err().kind()
    }

    fn names(m: &Model, path: &str) -> Vec<NameBuf> {
        m.read_dir(path)
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    fn text(m: &Model, path: &str) -> String {
        String::from_utf8(m.read(path).unwrap().to_vec()).unwrap()
    }

    fn nlink(m: &Model, path: &str) -> u64 {
        m.symlink_metadata(path).unwrap().nlink
    }

    fn p(s: &str) -> LayerPath {
        LayerPath::new(s).unwrap()
    }

    fn redirect() -> ViewOptions {
        ViewOptions::default().dir_rename(DirRename::Redirect)
    }

    fn keep() -> ViewOptions {
        ViewOptions::default().hard_links(HardLinkCopyUp::Keep)
    }

    /// Every directory is reachable exactly once, each identity counts its
    /// names, nothing unreachable is kept, and the root is in the upper.
    fn check_invariants(m: &Model) {
        let mut dirs = BTreeSet::new();
        let mut refs: BTreeMap<Id, u64> = BTreeMap::new();
        let mut work = vec![ROOT];
        while let Some(id) = work.pop() {
            assert!(dirs.insert(id), "directory {id} reachable twice");
            for child in m.dir(id).entries.values() {
                match child {
                    Child::Dir(d) => work.push(*d),
                    Child::Obj(o) => *refs.entry(*o).or_default() += 1,
                }
            }
        }
        assert_eq!(dirs, m.dirs.keys().copied().collect::<BTreeSet<_>>());
        assert_eq!(
            refs.keys().copied().collect::<BTreeSet<_>>(),
            m.objs.keys().copied().collect::<BTreeSet<_>>()
        );
        for (id, count) in refs {
            let obj = m.obj(id);
            assert_eq!(obj.names, count, "names of identity {id}");
            if m.options.hard_links == HardLinkCopyUp::Break && !obj.in_upper {
                assert_eq!(obj.names, 1, "a lower identity has one name with Break");
            }
        }
        assert!(m.dir(ROOT).in_upper);
    }

    // ---- Flatten ----

    #[test]
    fn whiteouts_hide_only_lower_layers() {
        let top = layer(|l| {
            l.add_whiteout("x")?;
            l.add_file("y", "top-y")?;
            l.add_whiteout("nothing-below")
        });
        let mid = layer(|l| {
            l.add_file("x", "mid-x")?;
            l.add_whiteout("z")?;
            l.add_file("y", "mid-y")
        });
        let bottom = layer(|l| {
            l.add_file("x", "bottom-x")?;
            l.add_file("z", "bottom-z")?;
            l.add_file("w", "bottom-w")?;
            l.add_file("sub/x", "deep")
        });
        let m = model(vec![top, mid, bottom]);
        assert_eq!(names(&m, "/"), ["sub", "w", "y"]);
        assert_eq!(text(&m, "y"), "top-y");
        assert_eq!(text(&m, "w"), "bottom-w");
        assert_eq!(kind(m.metadata("x")), ErrorKind::NotFound);
        assert_eq!(kind(m.metadata("z")), ErrorKind::NotFound);
        // A whiteout `x` at the root does not hide `sub/x`.
        assert_eq!(text(&m, "sub/x"), "deep");
        // The mid layer's whiteout of `z` does not hide its own layer's
        // entries, only the ones below.
        let mid = layer(|l| l.add_whiteout("z"));
        let m = model(vec![layer(|l| l.add_file("z", "top-z")), mid]);
        assert_eq!(text(&m, "z"), "top-z");
    }

    #[test]
    fn opaque_dir_in_a_middle_layer_hides_only_below() {
        let top = layer(|l| l.add_file("d/a", "top-a"));
        let mid = layer(|l| {
            l.add_opaque_dir("d")?;
            l.add_file("d/b", "mid-b")
        });
        let bottom = layer(|l| {
            l.add_file("d/b", "bottom-b")?;
            l.add_file("d/c", "bottom-c")?;
            l.add_file("e", "bottom-e")
        });
        let m = model(vec![top, mid, bottom]);
        assert_eq!(names(&m, "d"), ["a", "b"]);
        assert_eq!(text(&m, "d/b"), "mid-b");
        assert_eq!(kind(m.metadata("d/c")), ErrorKind::NotFound);
        // Only `d` is opaque: the rest of the bottom layer shows.
        assert_eq!(names(&m, "/"), ["d", "e"]);
        // `d` merges two layers: one link.
        assert_eq!(nlink(&m, "d"), 1);
    }

    #[test]
    fn non_directories_hide_what_is_below_and_directories_hide_files_below() {
        let top = layer(|l| {
            l.add_file_with("f", "file", Metadata::new(FileType::File).with_mode(0o600))?;
            l.add_file("d/x", "x")
        });
        let bottom = layer(|l| {
            l.add_file("f/inner", "hidden")?;
            l.add_file("d", "hidden file")?;
            l.add_file("d2", "")
        });
        let m = model(vec![top, bottom]);
        let f = m.metadata("f").unwrap();
        assert_eq!((f.file_type, f.mode, f.size), (FileType::File, 0o600, 4));
        assert_eq!(kind(m.metadata("f/inner")), ErrorKind::NotADirectory);
        assert_eq!(names(&m, "d"), ["x"]);
        // Only the top layer contributes to `d`: 2 + no subdirectories.
        assert_eq!(nlink(&m, "d"), 2);
    }

    #[test]
    fn merged_directory_metadata_is_the_topmost_layers() {
        let top = layer(|l| {
            l.add_dir_with(
                "d",
                Metadata::new(FileType::Dir)
                    .with_mode(0o750)
                    .with_owner(3, 4),
            )
        });
        let mut bottom = layer(|l| {
            l.add_dir_with("d", Metadata::new(FileType::Dir).with_mode(0o700))?;
            l.add_file("d/f", "")
        });
        let mut meta = Metadata::new(FileType::Dir);
        meta.xattrs.insert("user.lower", "1");
        bottom.set_metadata(&p("d"), &meta).unwrap();
        let m = model(vec![top, bottom]);
        let d = m.metadata("d").unwrap();
        assert_eq!((d.mode, d.uid, d.gid), (0o750, 3, 4));
        assert!(d.xattrs.is_empty());
        assert_eq!(names(&m, "d"), ["f"]);
    }

    #[test]
    fn relative_redirect_looks_up_the_old_name_below() {
        let mut top = layer(|l| {
            l.add_file("new/g", "g")?;
            l.add_whiteout("old")
        });
        top.set_redirect(&p("new"), Some("old".into())).unwrap();
        let bottom = layer(|l| {
            l.add_file("old/f", "f")?;
            l.add_file("new/hidden", "not looked up")
        });
        let m = model(vec![top, bottom]);
        assert_eq!(names(&m, "/"), ["new"]);
        assert_eq!(names(&m, "new"), ["f", "g"]);
        assert_eq!(text(&m, "new/f"), "f");
        assert_eq!(nlink(&m, "new"), 1);
    }

    #[test]
    fn absolute_redirect_looks_up_from_the_root_below() {
        let mut top = layer(|l| l.add_dir("x/moved"));
        top.set_redirect(&p("x/moved"), Some("/a/old".into()))
            .unwrap();
        let bottom = layer(|l| {
            l.add_file("a/old/f", "f")?;
            l.add_file("x/moved/h", "not looked up")
        });
        let m = model(vec![top, bottom]);
        assert_eq!(names(&m, "x/moved"), ["f"]);
        // The old place still shows (the top layer has no whiteout there).
        assert_eq!(names(&m, "a/old"), ["f"]);
    }

    #[test]
    fn relative_redirect_below_an_absolute_one_replaces_the_last_name() {
        let mut top = layer(|l| l.add_dir("m"));
        top.set_redirect(&p("m"), Some("/p/q".into())).unwrap();
        let mut mid = layer(|l| l.add_dir("p/q"));
        mid.set_redirect(&p("p/q"), Some("r".into())).unwrap();
        let bottom = layer(|l| l.add_file("p/r/file", "deep"));
        let m = model(vec![top, mid, bottom]);
        assert_eq!(names(&m, "m"), ["file"]);
        assert_eq!(text(&m, "m/file"), "deep");
        assert_eq!(names(&m, "p/q"), ["file"]);
        assert_eq!(nlink(&m, "m"), 1);
    }

    #[test]
    fn malformed_redirects_are_invalid() {
        for bad in ["a/b", "/", "//a", "/a/", "..", "/a/../b"] {
            let mut top = layer(|l| l.add_dir("d"));
            top.set_redirect(&p("d"), Some(bad.into())).unwrap();
            let bottom = layer(|l| l.add_dir("d"));
            let err =
                Model::from_layers(&stack(vec![top, bottom]), ViewOptions::default()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn root_is_the_uppers_and_an_opaque_root_stops_the_stack() {
        let top = layer(|l| {
            l.add_dir_with(
                "",
                Metadata::new(FileType::Dir)
                    .with_mode(0o700)
                    .with_owner(9, 9),
            )?;
            l.add_file("a", "a")
        });
        let mid = layer(|l| {
            l.add_opaque_dir("")?;
            l.add_file("b", "b")
        });
        let bottom = layer(|l| l.add_file("c", "c"));
        let m = model(vec![top, mid, bottom]);
        let root = m.metadata("/").unwrap();
        assert_eq!((root.mode, root.uid, root.gid), (0o755, 0, 0));
        assert_eq!(names(&m, "/"), ["a", "b"]);
        assert_eq!(m.dir(ROOT).lower_layers, 2);
        assert_eq!(root.nlink, 1);
        // No lowers: a plain directory.
        let mut m = model(vec![]);
        assert_eq!(nlink(&m, "."), 2);
        m.create_dir("d").unwrap();
        m.write("f", b"").unwrap();
        assert_eq!(nlink(&m, "."), 3);
    }

    #[test]
    fn flatten_reads_every_type() {
        let bottom = layer(|l| {
            l.add_file("f", "data")?;
            l.add_symlink("s", "f")?;
            l.add_special(
                "c",
                Metadata::new(FileType::CharDevice).with_rdev(makedev(1, 3)),
            )?;
            l.add_special("p", Metadata::new(FileType::Fifo).with_rdev(7))
        });
        let m = model(vec![bottom]);
        let snap = m.snapshot();
        assert_eq!(
            snap.keys().map(|p| p.to_str().unwrap()).collect::<Vec<_>>(),
            ["", "c", "f", "p", "s"]
        );
        assert_eq!(snap[&p("c")].rdev, makedev(1, 3));
        assert_eq!(snap[&p("p")].rdev, 0);
        assert_eq!(&snap[&p("f")].data[..], b"data");
        assert_eq!(snap[&p("s")].target, "f");
        assert_eq!(snap[&p("s")].size, 1);
        assert_eq!(m.read_link("s").unwrap(), "f");
    }

    // ---- Symlinks ----

    fn symlink_tree() -> Model {
        let bottom = layer(|l| {
            l.add_file("etc/conf", "conf")?;
            l.add_symlink("sub/abs", "/etc/conf")?;
            l.add_symlink("sub/up", "../../../../etc/conf")?;
            l.add_file("sub/x", "sub-x")?;
            l.add_symlink("sub/rel", "x")?;
            l.add_file("a/f", "a-f")?;
            l.add_dir("a/b")?;
            l.add_symlink("ab", "a/b")?;
            l.add_symlink("etclink", "etc")?;
            l.add_symlink("filelink", "etc/conf")?;
            l.add_symlink("slashlink", "etc/conf/")?;
            l.add_symlink("dangling", "new.txt")?;
            l.add_symlink("dangling-dir", "nodir/f")?;
            l.add_symlink("loop", "loop")?;
            l.add_symlink("empty", "")
        });
        model(vec![bottom])
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let m = symlink_tree();
        assert_eq!(text(&m, "sub/abs"), "conf");
        // `..` stops at the root.
        assert_eq!(text(&m, "sub/up"), "conf");
        assert_eq!(text(&m, "/../../sub/up"), "conf");
        // A relative target starts at the directory holding the symlink.
        assert_eq!(text(&m, "sub/rel"), "sub-x");
        // `..` after a symlink goes to the physical parent.
        assert_eq!(text(&m, "ab/../f"), "a-f");
        assert_eq!(names(&m, "etclink"), ["conf"]);
        assert_eq!(text(&m, "etclink/conf"), "conf");
        let link = m.symlink_metadata("etclink").unwrap();
        assert_eq!(
            (link.file_type, link.size, link.mode),
            (FileType::Symlink, 3, 0o777)
        );
        assert_eq!(m.read_link("sub/up").unwrap(), "../../../../etc/conf");
    }

    #[test]
    fn the_41st_symlink_is_a_loop() {
        let bottom = layer(|l| {
            l.add_file("target", "end")?;
            for i in 0..41 {
                let next = if i == 40 {
                    "target".to_owned()
                } else {
                    format!("l{}", i + 1)
                };
                l.add_symlink(format!("l{i}"), &next)?;
            }
            Ok(())
        });
        let m = model(vec![bottom]);
        // l1 .. l40: 40 symlinks.
        assert_eq!(text(&m, "l1"), "end");
        // l0 .. l40: 41.
        assert_eq!(kind(m.read("l0")), ErrorKind::FilesystemLoop);
        assert_eq!(kind(m.metadata("l0")), ErrorKind::FilesystemLoop);
        assert_eq!(
            m.symlink_metadata("l0").unwrap().file_type,
            FileType::Symlink
        );
        // Symlinks in different components share the budget: 20 + 21.
        let bottom = layer(|l| {
            l.add_dir("d")?;
            for i in 0..20 {
                l.add_symlink(format!("a{i}"), format!("a{}", i + 1))?;
            }
            l.add_symlink("a20", "d")?;
            for i in 0..20 {
                l.add_symlink(format!("d/b{i}"), format!("b{}", i + 1))?;
            }
            l.add_file("d/b20", "b")
        });
        let m = model(vec![bottom]);
        assert_eq!(text(&m, "a1/b1"), "b");
        assert_eq!(kind(m.read("a0/b0")), ErrorKind::FilesystemLoop);
        // 21 + 19 and 20 + 20: exactly 40.
        assert_eq!(text(&m, "a0/b1"), "b");
        assert_eq!(text(&m, "a1/b0"), "b");
    }

    #[test]
    fn loops_dangling_and_empty_symlinks() {
        let mut m = symlink_tree();
        assert_eq!(kind(m.metadata("loop")), ErrorKind::FilesystemLoop);
        assert_eq!(kind(m.metadata("loop/x")), ErrorKind::FilesystemLoop);
        assert_eq!(kind(m.metadata("dangling")), ErrorKind::NotFound);
        assert_eq!(kind(m.metadata("empty")), ErrorKind::NotFound);
        assert_eq!(kind(m.metadata("filelink/x")), ErrorKind::NotADirectory);
        // A target with a trailing slash must be a directory.
        assert_eq!(kind(m.metadata("slashlink")), ErrorKind::NotADirectory);
        assert_eq!(
            m.symlink_metadata("slashlink").unwrap().file_type,
            FileType::Symlink
        );
        // Writing through a dangling symlink creates its target.
        m.write("dangling", b"hi").unwrap();
        assert_eq!(text(&m, "new.txt"), "hi");
        assert_eq!(
            m.symlink_metadata("dangling").unwrap().file_type,
            FileType::Symlink
        );
        // ... but not a missing directory on the way.
        assert_eq!(kind(m.write("dangling-dir", b"x")), ErrorKind::NotFound);
        // A symlink is removed itself.
        m.remove_file("loop").unwrap();
        assert_eq!(kind(m.symlink_metadata("loop")), ErrorKind::NotFound);
        check_invariants(&m);
    }

    #[test]
    fn trailing_slash_rules() {
        let mut m = symlink_tree();
        assert_eq!(kind(m.metadata("etc/conf/")), ErrorKind::NotADirectory);
        assert_eq!(kind(m.metadata("etc/conf/.")), ErrorKind::NotADirectory);
        assert_eq!(m.metadata("etc/").unwrap().file_type, FileType::Dir);
        // The final symlink is followed with a trailing slash.
        assert_eq!(
            m.symlink_metadata("etclink/").unwrap().file_type,
            FileType::Dir
        );
        assert_eq!(kind(m.read_link("etclink/")), ErrorKind::InvalidInput);
        assert_eq!(kind(m.write("newfile/", b"")), ErrorKind::IsADirectory);
        assert_eq!(kind(m.remove_file("etc/conf/")), ErrorKind::NotADirectory);
        // Removing and making names never follow the last component (the
        // kernel's `do_unlinkat` and `filename_create`).
        assert_eq!(kind(m.remove_file("etclink/")), ErrorKind::NotADirectory);
        assert_eq!(kind(m.remove_dir("etclink/")), ErrorKind::NotADirectory);
        m.create_dir("newdir/").unwrap();
        assert_eq!(m.metadata("newdir").unwrap().file_type, FileType::Dir);
        assert_eq!(kind(m.create_dir("etclink/")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.symlink("t", "newlink/")), ErrorKind::NotFound);
        assert_eq!(
            kind(m.mknod("newfifo/", FileType::Fifo, 0o644, 0)),
            ErrorKind::NotFound
        );
        assert_eq!(kind(m.hard_link("etc/conf", "newhl/")), ErrorKind::NotFound);
        assert_eq!(
            kind(m.hard_link("etc/conf/", "newhl")),
            ErrorKind::NotADirectory
        );
        // Creating with a trailing slash is EISDIR, whatever is there.
        let mut create_new = OpenOptions::new();
        create_new.write(true).create_new(true);
        assert_eq!(kind(m.open("etc/", &create_new)), ErrorKind::IsADirectory);
        assert_eq!(kind(m.open("new/", &create_new)), ErrorKind::IsADirectory);
        check_invariants(&m);
    }

    // ---- Paths ----

    #[test]
    fn path_parse_errors() {
        let mut m = model(vec![]);
        assert_eq!(kind(m.metadata("")), ErrorKind::NotFound);
        assert_eq!(kind(m.metadata("a\0b")), ErrorKind::InvalidInput);
        assert_eq!(kind(m.write("x".repeat(256), b"")), ErrorKind::NameTooLong);
        assert_eq!(
            kind(m.create_dir("ab/".repeat(2048))),
            ErrorKind::NameTooLong
        );
        let err = m.remove_file("missing").unwrap_err();
        assert_eq!(err.operation(), Operation::RemoveFile);
        assert_eq!(err.path(), "missing");
        // Absolute and relative paths are the same; `..` stops at the root.
        m.write("/a", b"1").unwrap();
        assert_eq!(text(&m, "../../a"), "1");
        assert_eq!(text(&m, "./a"), "1");
    }

    // ---- Reading ----

    #[test]
    fn read_errors_and_ranges() {
        let bottom = layer(|l| {
            l.add_file("f", "0123456789")?;
            l.add_dir("d")?;
            l.add_special("p", Metadata::new(FileType::Fifo))
        });
        let m = model(vec![bottom]);
        assert_eq!(kind(m.read("d")), ErrorKind::IsADirectory);
        assert_eq!(kind(m.read("p")), ErrorKind::InvalidInput);
        assert_eq!(kind(m.read("missing")), ErrorKind::NotFound);
        assert_eq!(&m.read_at("f", 8, 10).unwrap()[..], b"89");
        assert_eq!(&m.read_at("f", 3, 2).unwrap()[..], b"34");
        assert!(m.read_at("f", 100, 10).unwrap().is_empty());
        assert_eq!(kind(m.read_dir("f")), ErrorKind::NotADirectory);
        assert_eq!(kind(m.read_dir("missing")), ErrorKind::NotFound);
        assert_eq!(
            m.read_dir("/").unwrap(),
            [
                (NameBuf::from("d"), FileType::Dir),
                (NameBuf::from("f"), FileType::File),
                (NameBuf::from("p"), FileType::Fifo)
            ]
        );
        assert_eq!(kind(m.read_link("f")), ErrorKind::InvalidInput);
        assert_eq!(kind(m.read_link("missing")), ErrorKind::NotFound);
    }

    // ---- Writing ----

    #[test]
    fn write_append_write_at_and_set_len() {
        let bottom = layer(|l| {
            l.add_file("d/f", "lower")?;
            l.add_special("p", Metadata::new(FileType::Fifo))
        });
        let mut m = model(vec![bottom]);
        assert_eq!(nlink(&m, "d"), 2);
        m.append("d/f", b"+").unwrap();
        assert_eq!(text(&m, "d/f"), "lower+");
        // The parent was copied up: it now merges the upper and a lower.
        assert_eq!(nlink(&m, "d"), 1);
        m.write_at("d/f", 8, b"X").unwrap();
        assert_eq!(&m.read("d/f").unwrap()[..], b"lower+\0\0X");
        m.set_len("d/f", 3).unwrap();
        assert_eq!(text(&m, "d/f"), "low");
        m.set_len("d/f", 5).unwrap();
        assert_eq!(&m.read("d/f").unwrap()[..], b"low\0\0");
        m.write("d/f", b"new").unwrap();
        assert_eq!(text(&m, "d/f"), "new");
        m.write("d/g", b"g").unwrap();
        assert_eq!(m.metadata("d/g").unwrap().mode, 0o644);
        m.append("d/h", b"h").unwrap();
        assert_eq!(text(&m, "d/h"), "h");

        assert_eq!(kind(m.write_at("missing", 0, b"x")), ErrorKind::NotFound);
        assert_eq!(kind(m.write("nodir/f", b"x")), ErrorKind::NotFound);
        assert_eq!(kind(m.write("d", b"x")), ErrorKind::IsADirectory);
        assert_eq!(kind(m.write("p", b"x")), ErrorKind::InvalidInput);
        assert_eq!(kind(m.set_len("missing", 1)), ErrorKind::NotFound);
        assert_eq!(kind(m.set_len("d", 1)), ErrorKind::IsADirectory);
        assert_eq!(kind(m.set_len("p", 1)), ErrorKind::InvalidInput);
        assert_eq!(
            kind(m.write_at("d/f", MAX_FILE_SIZE, b"x")),
            ErrorKind::FileTooLarge
        );
        assert_eq!(
            kind(m.write_at("d/f", u64::MAX, b"x")),
            ErrorKind::FileTooLarge
        );
        assert_eq!(
            kind(m.set_len("d/f", MAX_FILE_SIZE + 1)),
            ErrorKind::FileTooLarge
        );
        // An empty write never fails and never grows the file.
        m.write_at("d/f", u64::MAX, b"").unwrap();
        assert_eq!(m.metadata("d/f").unwrap().size, 3);
        check_invariants(&m);
    }

    #[test]
    fn open_effects_and_errors() {
        let bottom = layer(|l| {
            l.add_file("d/f", "lower")?;
            l.add_dir("e")?;
            l.add_special("p", Metadata::new(FileType::Fifo))?;
            l.add_symlink("dangling", "d/new")
        });
        let mut m = model(vec![bottom]);
        let mut read = OpenOptions::new();
        read.read(true);
        let mut write = OpenOptions::new();
        write.write(true);
        let mut truncate = OpenOptions::new();
        truncate.write(true).truncate(true);
        let mut create = OpenOptions::new();
        create.write(true).create(true);
        let mut create_new = OpenOptions::new();
        create_new.write(true).create_new(true);
        let mut invalid = OpenOptions::new();
        invalid.read(true).truncate(true);

        // Options are checked before the path.
        assert_eq!(kind(m.open("", &invalid)), ErrorKind::InvalidInput);
        assert_eq!(
            kind(m.open("d/f", &OpenOptions::new())),
            ErrorKind::InvalidInput
        );
        // Read-only opens never copy up.
        m.open("d/f", &read).unwrap();
        m.open("e", &read).unwrap();
        m.open("p", &read).unwrap();
        assert_eq!(nlink(&m, "d"), 2);
        assert_eq!(kind(m.open("missing", &read)), ErrorKind::NotFound);
        assert_eq!(kind(m.open("e", &write)), ErrorKind::IsADirectory);
        assert_eq!(kind(m.open("p", &write)), ErrorKind::InvalidInput);
        // Opening for writing copies up, even without a write.
        m.open("d/f", &write).unwrap();
        assert_eq!(nlink(&m, "d"), 1);
        assert_eq!(text(&m, "d/f"), "lower");
        m.open("d/f", &truncate).unwrap();
        assert!(m.read("d/f").unwrap().is_empty());
        assert_eq!(kind(m.open("d/f", &create_new)), ErrorKind::AlreadyExists);
        assert_eq!(
            kind(m.open("dangling", &create_new)),
            ErrorKind::AlreadyExists
        );
        assert_eq!(kind(m.open("nodir/x", &create)), ErrorKind::NotFound);
        // Creating through a dangling symlink creates its target.
        m.open("dangling", &create).unwrap();
        assert_eq!(m.metadata("d/new").unwrap().size, 0);
        m.open("e/n", &create_new).unwrap();
        assert_eq!(m.metadata("e/n").unwrap().mode, 0o644);
        check_invariants(&m);
    }

    // ---- Creating ----

    #[test]
    fn create_dir_errors() {
        let bottom = layer(|l| {
            l.add_file("f", "")?;
            l.add_symlink("dangling", "nowhere")
        });
        let mut m = model(vec![bottom]);
        assert_eq!(kind(m.create_dir("/")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir("x/..")), ErrorKind::NotFound);
        m.create_dir("x").unwrap();
        assert_eq!(kind(m.create_dir("x/..")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir("x")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir("f")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir("dangling")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir("f/y")), ErrorKind::NotADirectory);
        assert_eq!(kind(m.create_dir("nodir/y")), ErrorKind::NotFound);
        let x = m.metadata("x").unwrap();
        assert_eq!((x.mode, x.nlink, x.uid, x.gid), (0o755, 2, 0, 0));
        check_invariants(&m);
    }

    #[test]
    fn create_dir_all_walks_and_creates() {
        let bottom = layer(|l| {
            l.add_file("f", "")?;
            l.add_dir("d")?;
            l.add_symlink("dl", "d")?;
            l.add_symlink("fl", "f")?;
            l.add_symlink("dangling", "nowhere")?;
            l.add_symlink("loop", "loop")
        });
        let mut m = model(vec![bottom]);
        m.create_dir_all("/").unwrap();
        m.create_dir_all("a/b/../c").unwrap();
        assert_eq!(names(&m, "a"), ["b", "c"]);
        m.create_dir_all("dl/x/y").unwrap();
        assert_eq!(names(&m, "d/x"), ["y"]);
        m.create_dir_all("dl").unwrap();
        m.create_dir_all("d/x").unwrap();
        assert_eq!(kind(m.create_dir_all("f")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir_all("f/x")), ErrorKind::NotADirectory);
        assert_eq!(kind(m.create_dir_all("fl")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir_all("fl/x")), ErrorKind::NotADirectory);
        assert_eq!(kind(m.create_dir_all("dangling")), ErrorKind::AlreadyExists);
        assert_eq!(
            kind(m.create_dir_all("dangling/x")),
            ErrorKind::AlreadyExists
        );
        assert_eq!(kind(m.create_dir_all("loop")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir_all("loop/x")), ErrorKind::FilesystemLoop);
        assert_eq!(kind(m.metadata("nowhere")), ErrorKind::NotFound);
        check_invariants(&m);
    }

    #[test]
    fn symlink_errors_in_order() {
        let mut m = model(vec![layer(|l| l.add_file("f", ""))]);
        // The empty target is refused first.
        assert_eq!(kind(m.symlink("", "nodir/x")), ErrorKind::NotFound);
        assert_eq!(kind(m.symlink("t", "nodir/x")), ErrorKind::NotFound);
        assert_eq!(kind(m.symlink("t", "/")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.symlink("t", "f/..")), ErrorKind::NotADirectory);
        assert_eq!(kind(m.symlink("t", "f")), ErrorKind::AlreadyExists);
        m.symlink("t", "s").unwrap();
        assert_eq!(kind(m.symlink("u", "s")), ErrorKind::AlreadyExists);
        let s = m.symlink_metadata("s").unwrap();
        assert_eq!((s.mode, s.size), (0o777, 1));
        assert_eq!(m.read_link("s").unwrap(), "t");
    }

    #[test]
    fn hard_link_errors_in_order() {
        let bottom = layer(|l| {
            l.add_file("f", "f")?;
            l.add_dir("d")?;
            l.add_symlink("s", "nowhere")
        });
        let mut m = model(vec![bottom]);
        assert_eq!(kind(m.hard_link("missing", "nodir/x")), ErrorKind::NotFound);
        let err = m.hard_link("f", "nodir/x").unwrap_err();
        assert_eq!(
            (err.kind(), err.path().to_str().unwrap()),
            (ErrorKind::NotFound, "nodir/x")
        );
        // The link's name is checked before the original's type.
        assert_eq!(kind(m.hard_link("d", "f")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.hard_link("d", "/")), ErrorKind::AlreadyExists);
        assert_eq!(kind(m.hard_link("d", "x")), ErrorKind::NotPermitted);
        assert_eq!(kind(m.hard_link("/", "x")), ErrorKind::NotPermitted);
        // A symlink is linked itself.
        m.hard_link("s", "s2").unwrap();
        assert_eq!(m.read_link("s2").unwrap(), "nowhere");
        assert_eq!(nlink(&m, "s"), 2);
        m.hard_link("f", "d/g").unwrap();
        assert_eq!(nlink(&m, "f"), 2);
        m.write("d/g", b"changed").unwrap();
        assert_eq!(text(&m, "f"), "changed");
        m.remove_file("f").unwrap();
        assert_eq!(nlink(&m, "d/g"), 1);
        check_invariants(&m);
    }

    #[test]
    fn mknod_errors_and_results() {
        let mut m = model(vec![layer(|l| l.add_file("f", ""))]);
        // The type is checked before the path is walked.
        assert_eq!(
            kind(m.mknod("nodir/x", FileType::File, 0o644, 0)),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(m.mknod("nodir/x", FileType::Fifo, 0o644, 0)),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(m.mknod("/", FileType::Fifo, 0o644, 0)),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(m.mknod("f", FileType::CharDevice, 0o644, 0)),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(m.mknod("c", FileType::CharDevice, 0o644, 0)),
            ErrorKind::NotPermitted
        );
        m.mknod("c", FileType::CharDevice, 0o4777, makedev(1, 3))
            .unwrap();
        m.mknod("b", FileType::BlockDevice, 0o600, makedev(8, 1))
            .unwrap();
        m.mknod("p", FileType::Fifo, 0o644, 5).unwrap();
        m.mknod("s", FileType::Socket, 0o644, 5).unwrap();
        let c = m.metadata("c").unwrap();
        assert_eq!(
            (c.file_type, c.mode, c.rdev),
            (FileType::CharDevice, 0o4755, makedev(1, 3))
        );
        assert_eq!(m.metadata("b").unwrap().rdev, makedev(8, 1));
        assert_eq!(m.metadata("p").unwrap().rdev, 0);
        assert_eq!(m.metadata("s").unwrap().file_type, FileType::Socket);
    }

    #[test]
    fn owner_mode_umask_and_setgid_of_new_objects() {
        let options = ViewOptions::default().owner(7, 8).umask(0o077);
        let mut m = model_with(vec![], options);
        m.write("f", b"").unwrap();
        m.create_dir("d").unwrap();
        m.symlink("t", "s").unwrap();
        m.mknod("p", FileType::Fifo, 0o666, 0).unwrap();
        let mode_owner = |m: &Model, path: &str| {
            let meta = m.symlink_metadata(path).unwrap();
            (meta.mode, meta.uid, meta.gid)
        };
        assert_eq!(mode_owner(&m, "f"), (0o600, 7, 8));
        assert_eq!(mode_owner(&m, "d"), (0o700, 7, 8));
        assert_eq!(mode_owner(&m, "s"), (0o777, 7, 8));
        assert_eq!(mode_owner(&m, "p"), (0o600, 7, 8));
        m.set_permissions("d", 0o2770).unwrap();
        m.set_owner("d", None, Some(50)).unwrap();
        m.write("d/f", b"").unwrap();
        m.create_dir("d/sub").unwrap();
        m.symlink("t", "d/s").unwrap();
        assert_eq!(mode_owner(&m, "d/f"), (0o600, 7, 50));
        assert_eq!(mode_owner(&m, "d/sub"), (0o2700, 7, 50));
        assert_eq!(mode_owner(&m, "d/s"), (0o777, 7, 50));
    }

    #[test]
    fn set_permissions_owner_and_times() {
        let bottom = layer(|l| {
            l.add_file_with("d/f", "", Metadata::new(FileType::File).with_mode(0o6755))?;
            l.add_file_with("d/g", "", Metadata::new(FileType::File).with_mode(0o6745))?;
            l.add_dir_with("d/sub", Metadata::new(FileType::Dir).with_mode(0o6755))?;
            l.add_dir("d/t")?;
            l.add_symlink("link", "d/f")
        });
        let mut m = model(vec![bottom]);
        assert_eq!(
            kind(m.set_permissions("missing", 0o644)),
            ErrorKind::NotFound
        );
        m.set_owner("link", None, None).unwrap();
        // Follows the symlink; setuid is cleared, and setgid with group exec.
        assert_eq!(m.metadata("d/f").unwrap().mode, 0o0755);
        m.set_owner("d/g", Some(1), Some(2)).unwrap();
        let g = m.metadata("d/g").unwrap();
        assert_eq!((g.mode, g.uid, g.gid), (0o2745, 1, 2));
        m.set_owner("d/sub", Some(1), None).unwrap();
        assert_eq!(m.metadata("d/sub").unwrap().mode, 0o6755);
        m.set_permissions("link", 0o104_640).unwrap();
        assert_eq!(m.metadata("d/f").unwrap().mode, 0o4640);
        assert_eq!(m.symlink_metadata("link").unwrap().mode, 0o777);
        // set_times only copies up: `d/t` (single lower layer) then merges
        // the upper and a lower.
        assert_eq!(nlink(&m, "d/t"), 2);
        m.set_times("d/t", None, Some(Timestamp::new(5, 0)))
            .unwrap();
        assert_eq!(nlink(&m, "d/t"), 1);
        assert_eq!(
            kind(m.set_times("missing", Some(Timestamp::new(1, 0)), None)),
            ErrorKind::NotFound
        );
        // As `utimensat` with two `UTIME_OMIT`: the path is not looked up.
        m.set_times("missing", None, None).unwrap();
    }

    // ---- Removing ----

    #[test]
    fn remove_file_errors() {
        let bottom = layer(|l| {
            l.add_file("d/f", "")?;
            l.add_symlink("dl", "d")
        });
        let mut m = model(vec![bottom]);
        assert_eq!(kind(m.remove_file("/")), ErrorKind::IsADirectory);
        assert_eq!(kind(m.remove_file("d/..")), ErrorKind::IsADirectory);
        assert_eq!(kind(m.remove_file("missing")), ErrorKind::NotFound);
        assert_eq!(kind(m.remove_file("d")), ErrorKind::IsADirectory);
        assert_eq!(kind(m.remove_file("d/f/")), ErrorKind::NotADirectory);
        m.remove_file("dl").unwrap();
        assert_eq!(names(&m, "/"), ["d"]);
        m.remove_file("d/f").unwrap();
        assert!(names(&m, "d").is_empty());
        check_invariants(&m);
    }

    #[test]
    fn remove_dir_errors() {
        let bottom = layer(|l| {
            l.add_file("d/f", "")?;
            l.add_dir("e")?;
            l.add_symlink("el", "e")
        });
        let mut m = model(vec![bottom]);
        // The kernel's `do_rmdir`: by the kind of the last component.
        assert_eq!(kind(m.remove_dir("/")), ErrorKind::Busy);
        assert_eq!(kind(m.remove_dir("..")), ErrorKind::DirectoryNotEmpty);
        assert_eq!(kind(m.remove_dir("e/..")), ErrorKind::DirectoryNotEmpty);
        assert_eq!(kind(m.remove_dir("e/.")), ErrorKind::InvalidInput);
        assert_eq!(kind(m.remove_dir(".")), ErrorKind::InvalidInput);
        assert_eq!(kind(m.remove_dir("missing/.")), ErrorKind::NotFound);
        assert_eq!(kind(m.remove_dir("missing")), ErrorKind::NotFound);
        assert_eq!(kind(m.remove_dir("d/f")), ErrorKind::NotADirectory);
        assert_eq!(kind(m.remove_dir("el")), ErrorKind::NotADirectory);
        // Not empty as the merged view lists it (the entry is lower only).
        assert_eq!(kind(m.remove_dir("d")), ErrorKind::DirectoryNotEmpty);
        m.remove_file("d/f").unwrap();
        m.remove_dir("d").unwrap();
        m.remove_dir("e").unwrap();
        assert_eq!(names(&m, "/"), ["el"]);
        check_invariants(&m);
    }

    #[test]
    fn remove_dir_all_never_follows_symlinks() {
        let bottom = layer(|l| {
            l.add_file("keep/f", "kept")?;
            l.add_file("d/a/b", "")?;
            l.add_symlink("d/link", "/keep")?;
            l.add_hard_link("d/a/b", "outside")?;
            l.add_symlink("kl", "keep")?;
            l.add_file("f", "")
        });
        let mut m = model_with(vec![bottom.clone()], keep());
        assert_eq!(kind(m.remove_dir_all("missing")), ErrorKind::NotFound);
        assert_eq!(kind(m.remove_dir_all("f")), ErrorKind::NotADirectory);
        m.remove_dir_all("kl").unwrap();
        assert_eq!(text(&m, "keep/f"), "kept");
        m.remove_dir_all("d").unwrap();
        assert_eq!(names(&m, "/"), ["f", "keep", "outside"]);
        assert_eq!(text(&m, "keep/f"), "kept");
        // Still the lower inode: its link count does not change.
        assert_eq!(nlink(&m, "outside"), 2);
        check_invariants(&m);
        // Unlike `std`, a path that names no directory by its name is
        // refused before anything goes.
        assert_eq!(kind(m.remove_dir_all("/")), ErrorKind::Busy);
        assert_eq!(names(&m, "/"), ["f", "keep", "outside"]);
        let mut m = model_with(vec![bottom.clone()], keep());
        assert_eq!(kind(m.remove_dir_all("keep/.")), ErrorKind::InvalidInput);
        assert_eq!(names(&m, "keep"), ["f"]);
        assert_eq!(kind(m.remove_dir_all("d/..")), ErrorKind::DirectoryNotEmpty);
        assert_eq!(kind(m.remove_dir_all("kl/")), ErrorKind::NotADirectory);
        assert_eq!(names(&m, "/"), ["d", "f", "keep", "kl", "outside"]);
        check_invariants(&m);
    }

    // ---- Rename ----

    fn rename_tree(options: ViewOptions) -> Model {
        let bottom = layer(|l| {
            l.add_file("d/f", "d-f")?;
            l.add_file("d/sub/x", "x")?;
            l.add_file("file", "file")?;
            l.add_dir("e")?;
            l.add_symlink("link", "e")
        });
        let mut m = model_with(vec![bottom], options);
        m.create_dir("u").unwrap();
        m.write("u/y", b"y").unwrap();
        m.create_dir("empty").unwrap();
        m
    }

    fn rename(m: &mut Model, from: &str, to: &str) -> Result<()> {
        m.rename_with(from, to, RenameMode::Replace)
    }

    #[test]
    fn rename_checks_in_order() {
        let mut m = rename_tree(ViewOptions::default());
        use ErrorKind::*;
        use RenameMode::*;
        let cases: &[(&str, &str, RenameMode, ErrorKind)] = &[
            // 1. `from` parsed and its parent walked, then `to` (a NUL
            // byte in either comes first).
            ("nodir/x", "a\0", Replace, InvalidInput),
            ("nodir/x", "nodir2/y", Replace, NotFound),
            ("file", "file/x", Replace, NotADirectory),
            // 2.
            ("/", "x", Replace, Busy),
            ("missing", "/", Replace, Busy),
            ("d/..", "x", Replace, Busy),
            ("file", "e/..", Replace, Busy),
            // 3.
            ("missing", "x", Replace, NotFound),
            // 4. before the type checks of 9.
            ("file", "d", NoReplace, AlreadyExists),
            ("file", "file", NoReplace, AlreadyExists),
            // 5.
            ("file", "missing", Exchange, NotFound),
            // 6.
            ("file/", "x", Replace, NotADirectory),
            ("file", "x/", Replace, NotADirectory),
            ("file/", "file", Replace, NotADirectory),
            ("empty", "file/", Exchange, NotADirectory),
            // 7.
            ("u", "u/z", Replace, InvalidInput),
            ("u", "u/y", Exchange, InvalidInput),
            ("d/sub", "d", Replace, DirectoryNotEmpty),
            ("d/sub", "d", Exchange, InvalidInput),
            // 9.
            ("empty", "file", Replace, NotADirectory),
            ("file", "empty", Replace, IsADirectory),
            // 10.
            ("d", "newname", Replace, CrossesDevices),
            ("e", "empty", Replace, CrossesDevices),
            ("u", "e", Exchange, CrossesDevices),
            // 11.
            ("empty", "u", Replace, DirectoryNotEmpty),
        ];
        let before = m.snapshot();
        for (from, to, mode, want) in cases {
            assert_eq!(
                kind(m.rename_with(from, to, *mode)),
                *want,
                "rename {from:?} -> {to:?} ({mode:?})"
            );
        }
        assert_eq!(m.snapshot(), before);
        let err = rename(&mut m, "nodir/x", "nodir2/y").unwrap_err();
        assert_eq!(err.path(), "nodir/x");
        let err = rename(&mut m, "file", "d/sub/x/y").unwrap_err();
        assert_eq!(
            (err.kind(), err.path().to_str().unwrap()),
            (NotADirectory, "d/sub/x/y")
        );
    }

    #[test]
    fn rename_of_the_same_object_does_nothing() {
        let mut m = rename_tree(ViewOptions::default());
        let before = m.snapshot();
        rename(&mut m, "file", "file").unwrap();
        rename(&mut m, "file", "./e/../file").unwrap();
        // Same entry comes before EXDEV.
        rename(&mut m, "d", "d").unwrap();
        m.rename_with("d", "d/", RenameMode::Exchange).unwrap();
        assert_eq!(m.snapshot(), before);
        // Two names of one lower inode (Keep): nothing changes, no copy-up.
        let bottom = layer(|l| {
            l.add_file("d/h1", "h")?;
            l.add_hard_link("d/h1", "d/h2")?;
            l.add_dir("d/sub")
        });
        let mut m = model_with(vec![bottom.clone()], keep());
        let before = m.snapshot();
        rename(&mut m, "d/h1", "d/h2").unwrap();
        assert_eq!(m.snapshot(), before);
        assert_eq!(nlink(&m, "d"), 3);
        // With Break they are different identities: the rename happens.
        let mut m = model(vec![bottom]);
        rename(&mut m, "d/h1", "d/h2").unwrap();
        assert_eq!(names(&m, "d"), ["h2", "sub"]);
        assert_eq!(nlink(&m, "d/h2"), 1);
        assert_eq!(nlink(&m, "d"), 1);
        check_invariants(&m);
    }

    #[test]
    fn rename_moves_and_replaces() {
        let mut m = rename_tree(ViewOptions::default());
        // A lower file: copied up and moved.
        rename(&mut m, "d/f", "u/f").unwrap();
        assert_eq!(text(&m, "u/f"), "d-f");
        assert_eq!(kind(m.metadata("d/f")), ErrorKind::NotFound);
        assert_eq!(nlink(&m, "d"), 1);
        // A pure-upper directory moves freely, over an empty directory.
        m.create_dir("target").unwrap();
        rename(&mut m, "u", "target").unwrap();
        assert_eq!(names(&m, "target"), ["f", "y"]);
        // A file replaces a file; a symlink moves itself.
        rename(&mut m, "file", "target/y").unwrap();
        assert_eq!(text(&m, "target/y"), "file");
        rename(&mut m, "link", "target/link").unwrap();
        assert_eq!(m.read_link("target/link").unwrap(), "e");
        // NoReplace to a free name.
        m.rename_with("target/f", "f2", RenameMode::NoReplace)
            .unwrap();
        assert_eq!(names(&m, "/"), ["d", "e", "empty", "f2", "target"]);
        check_invariants(&m);
    }

    #[test]
    fn rename_exchange_swaps() {
        let mut m = rename_tree(ViewOptions::default());
        m.rename_with("file", "u", RenameMode::Exchange).unwrap();
        assert_eq!(text(&m, "u"), "file");
        assert_eq!(names(&m, "file"), ["y"]);
        m.rename_with("u", "empty/", RenameMode::Exchange).unwrap();
        assert_eq!(text(&m, "empty"), "file");
        assert!(names(&m, "u").is_empty());
        check_invariants(&m);
    }

    #[test]
    fn directory_rename_exdev_versus_redirect() {
        let mut m = rename_tree(ViewOptions::default());
        assert_eq!(
            kind(rename(&mut m, "d", "moved")),
            ErrorKind::CrossesDevices
        );
        assert_eq!(
            kind(rename(&mut m, "e", "moved")),
            ErrorKind::CrossesDevices
        );
        rename(&mut m, "u", "moved").unwrap();

        let mut m = rename_tree(redirect());
        rename(&mut m, "d", "u/moved").unwrap();
        assert_eq!(names(&m, "u/moved"), ["f", "sub"]);
        assert_eq!(text(&m, "u/moved/sub/x"), "x");
        assert_eq!(kind(m.metadata("d")), ErrorKind::NotFound);
        // Copied up alone, keeping its lower part: a merged directory.
        assert_eq!(nlink(&m, "u/moved"), 1);
        // Its children stay in the lower layer.
        assert_eq!(nlink(&m, "u/moved/sub"), 2);
        m.rename_with("u/moved", "e", RenameMode::Exchange).unwrap();
        assert_eq!(names(&m, "e"), ["f", "sub"]);
        assert!(names(&m, "u/moved").is_empty());
        assert_eq!(nlink(&m, "u/moved"), 1);
        check_invariants(&m);
    }

    // ---- Extended attributes ----

    #[test]
    fn xattr_errors_in_order() {
        let bottom = layer(|l| {
            l.add_dir("d")?;
            l.add_file("d/f", "")?;
            l.add_symlink("s", "d/f")?;
            l.add_special("p", Metadata::new(FileType::Fifo))
        });
        let mut m = model(vec![bottom]);
        let long = format!("user.{}", "n".repeat(251));
        // The name's length comes before the path.
        assert_eq!(kind(m.get_xattr("missing", "")), ErrorKind::OutOfRange);
        assert_eq!(kind(m.get_xattr("missing", &long)), ErrorKind::OutOfRange);
        assert_eq!(
            kind(m.set_xattr("missing", &long, b"")),
            ErrorKind::OutOfRange
        );
        assert_eq!(kind(m.remove_xattr("missing", "")), ErrorKind::OutOfRange);
        // The value's size before the name.
        let big = vec![0u8; XATTR_SIZE_MAX + 1];
        assert_eq!(
            kind(m.set_xattr("missing", "", &big)),
            ErrorKind::ArgumentListTooLong
        );
        m.set_xattr("d/f", "user.max", &big[1..]).unwrap();
        // The namespace after the path.
        assert_eq!(kind(m.get_xattr("missing", "foo.x")), ErrorKind::NotFound);
        assert_eq!(kind(m.get_xattr("d", "foo.x")), ErrorKind::Unsupported);
        assert_eq!(
            kind(m.set_xattr("d", "user.", b"")),
            ErrorKind::InvalidInput
        );
        assert_eq!(kind(m.remove_xattr("d", "x")), ErrorKind::Unsupported);
        // `user.` only on files and directories.
        assert_eq!(kind(m.get_xattr("p", "user.a")), ErrorKind::NoData);
        assert_eq!(
            kind(m.set_xattr("p", "user.a", b"1")),
            ErrorKind::NotPermitted
        );
        assert_eq!(kind(m.remove_xattr("p", "user.a")), ErrorKind::NotPermitted);
        m.set_xattr("p", "trusted.a", b"1").unwrap();
        assert_eq!(&m.get_xattr("p", "trusted.a").unwrap()[..], b"1");
        // Symlinks are followed.
        m.set_xattr("s", "user.b", b"2").unwrap();
        m.set_xattr("d/f", "security.a", b"3").unwrap();
        assert_eq!(
            m.list_xattr("s").unwrap(),
            ["security.a", "user.b", "user.max"]
        );
        assert_eq!(kind(m.get_xattr("d/f", "user.none")), ErrorKind::NoData);
        m.set_xattr("d/f", "user.b", b"22").unwrap();
        assert_eq!(&m.get_xattr("d/f", "user.b").unwrap()[..], b"22");
        m.remove_xattr("d/f", "user.b").unwrap();
        assert_eq!(kind(m.remove_xattr("d/f", "user.b")), ErrorKind::NoData);
        assert_eq!(kind(m.list_xattr("missing")), ErrorKind::NotFound);
    }

    #[test]
    fn removing_an_absent_xattr_does_not_copy_up() {
        let mut m = model(vec![layer(|l| l.add_dir("d/sub"))]);
        assert_eq!(nlink(&m, "d"), 3);
        assert_eq!(kind(m.remove_xattr("d", "user.x")), ErrorKind::NoData);
        assert_eq!(nlink(&m, "d"), 3);
        m.set_xattr("d", "user.x", b"").unwrap();
        assert_eq!(nlink(&m, "d"), 1);
        assert_eq!(
            m.metadata("d").unwrap().xattrs.get("user.x").unwrap().len(),
            0
        );
    }

    // ---- Link counts, hard links, commit ----

    #[test]
    fn directory_link_counts() {
        let top = layer(|l| l.add_dir("merged/a"));
        let bottom = layer(|l| {
            l.add_dir("merged/b")?;
            l.add_dir("single/x")?;
            l.add_dir("single/y")
        });
        let mut m = model(vec![top, bottom]);
        assert_eq!(nlink(&m, "merged"), 1);
        assert_eq!(nlink(&m, "single"), 4);
        m.create_dir("new").unwrap();
        m.create_dir("new/sub").unwrap();
        assert_eq!(nlink(&m, "new"), 3);
        // Creating in a single-layer lower directory copies it up.
        m.create_dir("single/z").unwrap();
        assert_eq!(nlink(&m, "single"), 1);
        // A directory created where a lower one was deleted has no lower part.
        m.remove_dir("merged/a").unwrap();
        m.remove_dir("merged/b").unwrap();
        m.remove_dir("merged").unwrap();
        m.create_dir("merged").unwrap();
        assert_eq!(nlink(&m, "merged"), 2);
        assert_eq!(
            m.dir(
                m.child(ROOT, Name::new("merged"))
                    .map_or(ROOT, |c| match c {
                        Child::Dir(id) => id,
                        Child::Obj(_) => ROOT,
                    })
            )
            .lower_layers,
            0
        );
    }

    fn linked_lower() -> MemLayer {
        layer(|l| {
            l.add_file("a", "x")?;
            l.add_hard_link("a", "b")?;
            l.add_hard_link("a", "hidden")
        })
    }

    #[test]
    fn hard_links_break_on_copy_up_by_default() {
        let top = layer(|l| l.add_whiteout("hidden"));
        let mut m = model(vec![top, linked_lower()]);
        // The lower layer's count, whatever the view hides.
        assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (3, 3));
        m.write("a", b"new").unwrap();
        assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (1, 3));
        assert_eq!(text(&m, "b"), "x");
        m.hard_link("b", "c").unwrap();
        assert_eq!((nlink(&m, "b"), nlink(&m, "c")), (2, 2));
        m.remove_file("c").unwrap();
        assert_eq!(nlink(&m, "b"), 1);
        check_invariants(&m);
    }

    #[test]
    fn hard_links_keep_links_every_visible_name() {
        let top = layer(|l| l.add_whiteout("hidden"));
        let mut m = model_with(vec![top, linked_lower()], keep());
        assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (3, 3));
        m.set_permissions("a", 0o600).unwrap();
        // Both visible names are linked in the upper.
        assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (2, 2));
        assert_eq!(m.metadata("b").unwrap().mode, 0o600);
        m.write("b", b"both").unwrap();
        assert_eq!(text(&m, "a"), "both");
        m.hard_link("a", "c").unwrap();
        assert_eq!(nlink(&m, "b"), 3);
        m.write("c", b"one").unwrap();
        m.remove_file("a").unwrap();
        assert_eq!((nlink(&m, "b"), nlink(&m, "c")), (2, 2));
        // Replacing one name drops it too.
        m.write("other", b"o").unwrap();
        rename(&mut m, "other", "b").unwrap();
        assert_eq!(nlink(&m, "c"), 1);
        check_invariants(&m);
    }

    #[test]
    fn keep_removing_one_lower_name_keeps_the_lower_count() {
        let mut m = model_with(vec![linked_lower()], keep());
        m.remove_file("a").unwrap();
        assert_eq!(nlink(&m, "b"), 3);
        m.write_at("b", 0, b"y").unwrap();
        assert_eq!((nlink(&m, "b"), nlink(&m, "hidden")), (2, 2));
        assert_eq!(text(&m, "hidden"), "y");
    }

    #[test]
    fn commit_changes_only_bookkeeping() {
        let bottom = layer(|l| l.add_dir("lower/sub"));
        let mut m = model(vec![bottom]);
        m.create_dir("d").unwrap();
        m.create_dir("d/sub").unwrap();
        m.write("lower/f", b"f").unwrap();
        assert_eq!(
            (nlink(&m, "d"), nlink(&m, "lower"), nlink(&m, "/")),
            (3, 1, 1)
        );
        let before = m.snapshot();
        m.commit();
        check_invariants(&m);
        assert_eq!(m.snapshot(), before);
        assert_eq!(m.dir(ROOT).lower_layers, 2);
        // `d` now has a lower part: EXDEV, and one link once copied up.
        assert_eq!(kind(rename(&mut m, "d", "e")), ErrorKind::CrossesDevices);
        m.write("d/f", b"").unwrap();
        assert_eq!(nlink(&m, "d"), 1);
        // `lower` merges two lower layers now.
        assert_eq!(nlink(&m, "lower"), 1);
        // Lower-only directories are unchanged.
        assert_eq!(nlink(&m, "lower/sub"), 2);
    }

    #[test]
    fn commit_with_break_splits_upper_links() {
        let mut m = model(vec![]);
        m.write("a", b"x").unwrap();
        m.hard_link("a", "b").unwrap();
        m.commit();
        check_invariants(&m);
        assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (2, 2));
        // Different identities now: rename replaces, copy-up breaks.
        m.write("c", b"c").unwrap();
        m.hard_link("c", "c2").unwrap();
        m.write("a", b"new").unwrap();
        assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (1, 2));
        assert_eq!(text(&m, "b"), "x");
        rename(&mut m, "b", "c").unwrap();
        assert_eq!(nlink(&m, "c"), 1);
        assert_eq!(nlink(&m, "c2"), 1);
        check_invariants(&m);
    }

    #[test]
    fn commit_with_keep_keeps_one_identity() {
        let mut m = model_with(vec![], keep());
        m.write("a", b"x").unwrap();
        m.hard_link("a", "b").unwrap();
        m.hard_link("a", "c").unwrap();
        m.commit();
        check_invariants(&m);
        let before = m.snapshot();
        rename(&mut m, "a", "b").unwrap();
        assert_eq!(m.snapshot(), before);
        m.remove_file("c").unwrap();
        assert_eq!(nlink(&m, "a"), 3);
        m.write("a", b"y").unwrap();
        assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (2, 2));
        assert_eq!(text(&m, "b"), "y");
    }

    #[test]
    fn snapshot_shows_everything_but_times_and_inodes() {
        let bottom = layer(|l| {
            l.add_file_with(
                "d/f",
                "data",
                Metadata::new(FileType::File)
                    .with_mode(0o640)
                    .with_owner(1, 2),
            )?;
            l.add_symlink("s", "d/f")
        });
        let mut m = model(vec![bottom]);
        m.set_xattr("d/f", "user.b", b"2").unwrap();
        m.set_xattr("d/f", "user.a", b"1").unwrap();
        let snap = m.snapshot();
        assert_eq!(
            snap.keys().map(|p| p.to_str().unwrap()).collect::<Vec<_>>(),
            ["", "d", "d/f", "s"]
        );
        assert_eq!(
            snap[&p("d/f")],
            SnapshotEntry {
                file_type: FileType::File,
                mode: 0o640,
                uid: 1,
                gid: 2,
                size: 4,
                nlink: 1,
                rdev: 0,
                data: Bytes::from_static(b"data"),
                target: NameBuf::new(),
                xattrs: vec![
                    ("user.a".to_owned(), Bytes::from_static(b"1")),
                    ("user.b".to_owned(), Bytes::from_static(b"2")),
                ],
            }
        );
        assert_eq!(
            snap[&p("")],
            SnapshotEntry {
                file_type: FileType::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                nlink: 1,
                rdev: 0,
                data: Bytes::new(),
                target: NameBuf::new(),
                xattrs: vec![],
            }
        );
        let meta = m.metadata("s").unwrap();
        assert_eq!((meta.ino, meta.mtime), (0, Timestamp::EPOCH));
    }

    // ---- Random sequences: no panic, invariants hold ----

    #[derive(Debug, Clone)]
    enum Op {
        Write(usize, Vec<u8>),
        WriteAt(usize, u64),
        SetLen(usize, u64),
        CreateDir(usize),
        CreateDirAll(usize),
        RemoveFile(usize),
        RemoveDir(usize),
        RemoveDirAll(usize),
        Rename(usize, usize, u8),
        Symlink(usize, usize),
        HardLink(usize, usize),
        SetXattr(usize),
        Mknod(usize),
        Open(usize, u8),
        Commit,
    }

    const PATHS: &[&str] = &[
        "a", "a/b", "b", "l", "l/x", "a/../b", "/", "..", "a/", "b/c/d", "lf", "x",
    ];

    fn op() -> impl Strategy<Value = Op> {
        let i = || 0..PATHS.len();
        prop_oneof![
            (i(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(p, d)| Op::Write(p, d)),
            (i(), 0u64..10).prop_map(|(p, o)| Op::WriteAt(p, o)),
            (i(), 0u64..10).prop_map(|(p, n)| Op::SetLen(p, n)),
            i().prop_map(Op::CreateDir),
            i().prop_map(Op::CreateDirAll),
            i().prop_map(Op::RemoveFile),
            i().prop_map(Op::RemoveDir),
            i().prop_map(Op::RemoveDirAll),
            (i(), i(), 0u8..3).prop_map(|(a, b, m)| Op::Rename(a, b, m)),
            (i(), i()).prop_map(|(a, b)| Op::Symlink(a, b)),
            (i(), i()).prop_map(|(a, b)| Op::HardLink(a, b)),
            i().prop_map(Op::SetXattr),
            i().prop_map(Op::Mknod),
            (i(), 0u8..6).prop_map(|(p, o)| Op::Open(p, o)),
            Just(Op::Commit),
        ]
    }

    fn apply(m: &mut Model, op: &Op) {
        let _ = match op {
            Op::Write(p, d) => m.write(PATHS[*p], d),
            Op::WriteAt(p, o) => m.write_at(PATHS[*p], *o, b"w"),
            Op::SetLen(p, n) => m.set_len(PATHS[*p], *n),
            Op::CreateDir(p) => m.create_dir(PATHS[*p]),
            Op::CreateDirAll(p) => m.create_dir_all(PATHS[*p]),
            Op::RemoveFile(p) => m.remove_file(PATHS[*p]),
            Op::RemoveDir(p) => m.remove_dir(PATHS[*p]),
            Op::RemoveDirAll(p) => m.remove_dir_all(PATHS[*p]),
            Op::Rename(a, b, mode) => {
                let mode = [
                    RenameMode::Replace,
                    RenameMode::NoReplace,
                    RenameMode::Exchange,
                ][usize::from(*mode)];
                m.rename_with(PATHS[*a], PATHS[*b], mode)
            }
            Op::Symlink(t, l) => m.symlink(PATHS[*t], PATHS[*l]),
            Op::HardLink(a, b) => m.hard_link(PATHS[*a], PATHS[*b]),
            Op::SetXattr(p) => m.set_xattr(PATHS[*p], "user.k", b"v"),
            Op::Mknod(p) => m.mknod(PATHS[*p], FileType::Fifo, 0o644, 0),
            Op::Open(p, o) => {
                let mut options = OpenOptions::new();
                options
                    .read(o & 1 != 0)
                    .write(o & 2 != 0)
                    .create(o & 4 != 0);
                m.open(PATHS[*p], &options)
            }
            Op::Commit => {
                m.commit();
                Ok(())
            }
        };
    }

    proptest! {
        #[test]
        fn random_sequences_keep_the_invariants(
            ops in proptest::collection::vec(op(), 0..40),
            keep_links in any::<bool>(),
            redirect_dirs in any::<bool>(),
        ) {
            let bottom = layer(|l| {
                l.add_file("a/b", "ab")?;
                l.add_hard_link("a/b", "x")?;
                l.add_symlink("l", "a")?;
                l.add_symlink("lf", "x")
            });
            let mut options = ViewOptions::default();
            if keep_links {
                options = options.hard_links(HardLinkCopyUp::Keep);
            }
            if redirect_dirs {
                options = options.dir_rename(DirRename::Redirect);
            }
            let mut m = model_with(vec![bottom], options);
            for op in &ops {
                apply(&mut m, op);
                check_invariants(&m);
                let snapshot = m.snapshot();
                // Every identity shows the same link count under each name,
                // and the count is at least the number of visible names
                // once it is in the upper.
                for (path, entry) in &snapshot {
                    let meta = m.symlink_metadata(if path.is_root() { b"/".as_slice() } else { path.as_bytes() }).unwrap();
                    prop_assert_eq!(meta.nlink, entry.nlink);
                    prop_assert_eq!(meta.size, entry.size);
                }
            }
        }
    }
}
