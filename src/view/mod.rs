//! [`MergedView`]: read-only lower layers under one writable upper layer,
//! seen as one tree, with the semantics of the kernel's overlayfs.
//!
//! Lookups go top-down; a file changes only after it is copied up into the
//! upper layer; a deletion of something that exists below leaves a
//! whiteout; a directory created where a whiteout was is opaque. The API
//! follows `std::fs` (each method says only how layers change it) and
//! reports errors with the errno the kernel returns in the same situation.

mod attrs;
mod copy_up;
mod file;
pub mod handle;
mod names;
mod read;
mod readdir;
mod readers;
mod rename;
pub(crate) mod resolve;
mod write;

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

pub use file::File;
pub use readdir::{Listing, ListingIter};

use crate::data::FileData;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::{Content, Entry, Layer, LayerMut};
use crate::merged::{
    DirEntry, DirRename, HardLinkCopyUp, LayerSource, Metacopy, OpenOptions, RenameMode,
    ViewOptions,
};
use crate::meta::{
    FileType, MODE_MASK, Metadata, S_ISGID, Timestamp, XATTR_NAME_MAX, XATTR_SIZE_MAX,
    check_xattr_name, mode_after_chown, xattr_allowed_on,
};
use crate::path::{LastKind, LayerPath, Name, NameBuf, PathLike};

use readers::Readers;
use resolve::{Cursor, Follow, Res, Resolved, State};

/// Lower layers (read-only, top first) under one writable upper layer, seen
/// as one filesystem tree.
///
/// `MergedView` is `Send + Sync` and every method takes `&self`: readers run
/// concurrently, writers take turns, and no reader ever sees a half-done
/// change (a copy-up, a rename) because each operation is atomic with
/// respect to the others. Lower layers are never modified. Warm reads
/// (`metadata` of a visited path, `read` of a file a lower layer holds)
/// take no lock that another thread takes, so readers on several cores do
/// not slow each other down; the first visit of a directory, and objects
/// in the upper layer, are read under a lock readers share.
///
/// Paths may be absolute or relative; both start at the view's root, and
/// `..` never leaves it. Symlinks resolve inside the view (an absolute
/// target starts at the view's root), at most 40 per path (`ELOOP`).
///
/// ```
/// use std::sync::Arc;
/// use layerstack::{Layer, MemLayer, MergedView, NameBuf};
///
/// let mut base = MemLayer::new();
/// base.add_file("etc/app.conf", "port = 80\n")?;
/// base.add_file("etc/old.conf", "legacy\n")?;
/// let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new())?;
///
/// view.write("etc/app.conf", "port = 8080\n")?; // copy-up, then write
/// view.remove_file("etc/old.conf")?; // leaves a whiteout in the upper
///
/// assert_eq!(view.read_to_string("/etc/app.conf")?, "port = 8080\n");
/// let names: Vec<NameBuf> = view.read_dir("etc")?.into_iter().map(|e| e.name).collect();
/// assert_eq!(names, ["app.conf"]);
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Debug)]
pub struct MergedView {
    options: ViewOptions,
    state: RwLock<State>,
    /// Per-thread memos that answer warm reads without the lock.
    readers: Readers,
}

impl MergedView {
    /// A view of `lowers` (top first) under `upper`, with default options.
    ///
    /// # Errors
    /// Errors of the layers' storage while reading their roots.
    pub fn new(lowers: Vec<Arc<dyn Layer>>, upper: impl LayerMut) -> Result<MergedView> {
        MergedView::with_options(lowers, upper, ViewOptions::default())
    }

    /// A view with the given options.
    ///
    /// # Errors
    /// As [`MergedView::new`].
    pub fn with_options(
        lowers: Vec<Arc<dyn Layer>>,
        upper: impl LayerMut,
        options: ViewOptions,
    ) -> Result<MergedView> {
        let mut state = State::new(lowers, Box::new(upper))?;
        state.metacopy = options.metacopy;
        Ok(MergedView {
            options,
            state: RwLock::new(state),
            readers: Readers::default(),
        })
    }

    /// The options of this view.
    #[must_use]
    pub fn options(&self) -> &ViewOptions {
        &self.options
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state for a change: every reader's memo is emptied before the
    /// caller can change anything (see the `readers` module).
    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        let st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        self.readers.forget();
        st
    }

    /// The state for a change of the table of handles alone: nothing a
    /// reader memoised changes.
    fn table_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Timestamp {
        self.options.clock.now()
    }

    /// The lower layers, top first.
    #[must_use]
    pub fn layers(&self) -> Vec<Arc<dyn Layer>> {
        self.read_state().lowers.clone()
    }

    /// Runs `f` with the upper layer (for example to walk its changeset with
    /// [`crate::layer::walk`]).
    pub fn with_upper<T>(&self, f: impl FnOnce(&dyn LayerMut) -> T) -> T {
        f(&*self.read_state().upper)
    }

    /// What the upper layer holds: every changed path with its entry
    /// (objects, whiteouts, opaque and redirect flags), parents first.
    ///
    /// # Errors
    /// Errors of the upper layer's storage.
    pub fn changes(&self) -> Result<Vec<(LayerPath, Entry)>> {
        crate::layer::walk(&*self.read_state().upper)
    }

    /// Freezes the upper layer into a new read-only layer on top of the
    /// lowers and continues with an empty upper (one Dockerfile step). What
    /// the view shows does not change.
    ///
    /// # Errors
    /// `EBUSY` while a handle is open (see [`handle`]), as the kernel
    /// refuses to unmount a busy overlay; errors of the upper layer's
    /// storage.
    pub fn commit(&self) -> Result<()> {
        let mut st = self.write_state();
        if !st.handles.is_empty() {
            return Err(Error::new(ErrorKind::Busy, Operation::Commit, "/")
                .with_detail("files of the view are open (close their handles first)"));
        }
        let root_meta = match st.upper.lookup(&LayerPath::root())? {
            Some(Entry::Node(node)) => node.meta,
            _ => Metadata::new(FileType::Dir),
        };
        let frozen = st.upper.commit()?;
        // The committed layer joins the stack before anything else can
        // fail, so no change is ever lost.
        st.lowers.insert(0, frozen);
        let id = st.next_layer_id;
        st.next_layer_id += 1;
        st.layer_ids.insert(0, id);
        st.clear_cache();
        // The new upper root shows what the old one showed.
        let kept = st
            .upper
            .set_metadata(&LayerPath::root(), &root_meta)
            .map_err(|e| e.reframe(Operation::Commit, "/"));
        st.root_stack = st.compute_root_stack()?;
        kept?;
        st.clear_cache();
        Ok(())
    }
}

/// Runs a change of the upper layer. If it fails halfway, the cached
/// directory indexes may no longer match the upper, so they are dropped
/// (they are rebuilt from the layers on the next lookup).
fn changing<T>(st: &mut State, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
    let r = f(st);
    if r.is_err() {
        st.clear_cache();
    }
    r
}

fn check_regular(file_type: FileType, op: Operation, user: &Name) -> Result<()> {
    match file_type {
        FileType::File => Ok(()),
        FileType::Dir => Err(Error::new(ErrorKind::IsADirectory, op, user)),
        _ => Err(Error::new(ErrorKind::InvalidInput, op, user)
            .with_detail("fifos, devices and sockets hold no data here")),
    }
}

/// The metadata the view shows for a resolved object.
fn meta_of(st: &State, res: &Res) -> Result<Metadata> {
    let node = st.node(res)?;
    let mut meta = node.meta;
    let (idx, _) = res.top();
    meta.ino = st.merged_ino(idx, meta.ino);
    if res.file_type.is_dir() {
        meta.size = 0;
        if res.stack.len() > 1 {
            // The kernel's choice for merged directories: counting
            // subdirectories across layers is not worth it, and 1 tells
            // `find` not to rely on the count.
            meta.nlink = 1;
        }
    }
    Ok(meta)
}
