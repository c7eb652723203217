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
//! use layerstack::merged::ViewOptions;
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
use crate::layer::{Entry, Layer, Node, Redirect, RedirectTarget};
use crate::merged::{DirRename, HardLinkCopyUp, OpenOptions, RenameMode, ViewOptions};
use crate::meta::{
    FileType, MODE_MASK, Metadata, S_ISGID, Timestamp, XATTR_NAME_MAX, XATTR_SIZE_MAX, Xattrs,
    check_xattr_name, mode_after_chown, xattr_allowed_on,
};
use crate::path::{
    Component, LastKind, LayerPath, Name, NameBuf, PathLike, UserPath, validate_name,
};

mod handles;
mod ops;
mod stack;
#[cfg(test)]
mod tests;
mod tree;
mod walk;

use handles::ModelHandle;
use tree::{Attrs, Body, Child, DirNode, Id, ObjNode, ROOT};
use walk::{Follow, Last, Resolved, top};

/// What the user sees of one object (times and inode numbers left out:
/// the model does not track them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Its metadata, as compared (a directory's size is 0).
    pub meta: MetadataSummary,
    /// File contents (empty for non-files).
    pub data: Bytes,
    /// Symlink target (empty for non-symlinks).
    pub target: NameBuf,
}

/// What a user sees of an object's metadata, as compared between the model
/// and a view: no times (the model does not track them), no inode number
/// (views number objects their own way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataSummary {
    /// Type.
    pub file_type: FileType,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: u64,
    /// Number of links.
    pub nlink: u64,
    /// Device number.
    pub rdev: u64,
    /// Extended attributes in name order.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl MetadataSummary {
    /// What `stat` on a real file system (`metadata` reports) shows, as the
    /// model shows it: a directory's size is 0 (the model does not compare
    /// it), `rdev` is kept for devices only. `xattrs` are the object's
    /// attributes, in name order (`layerstack::testing::xattrs_of` reads them).
    ///
    /// # Errors
    /// `EINVAL` for a type the crate does not know.
    pub fn of_std(
        m: &std::fs::Metadata,
        xattrs: Vec<(String, Vec<u8>)>,
    ) -> std::io::Result<MetadataSummary> {
        use std::os::unix::fs::MetadataExt;
        let file_type = FileType::from_mode(m.mode())
            .ok_or_else(|| std::io::Error::from(rustix::io::Errno::INVAL))?;
        Ok(MetadataSummary {
            file_type,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if file_type == FileType::Dir {
                0
            } else {
                m.size()
            },
            nlink: m.nlink(),
            rdev: match file_type {
                FileType::CharDevice | FileType::BlockDevice => m.rdev(),
                _ => 0,
            },
            xattrs,
        })
    }
}

impl From<&Metadata> for MetadataSummary {
    fn from(m: &Metadata) -> MetadataSummary {
        MetadataSummary {
            file_type: m.file_type,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            nlink: m.nlink,
            rdev: m.rdev,
            xattrs: m
                .xattrs
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
        }
    }
}

/// The whole visible tree: every path (the root included, as the empty
/// path) to what is seen there.
pub type Snapshot = std::collections::BTreeMap<LayerPath, SnapshotEntry>;

/// At most this many symlinks are followed in one resolution (Linux
/// `MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;

/// The largest regular file (as [`MemLayer`]'s limit, ext4's 16 TiB).
const MAX_FILE_SIZE: u64 = 1 << 44;

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
/// use layerstack::merged::{DirRename, ViewOptions};
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

impl Model {
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
