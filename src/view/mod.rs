//! [`MergedView`]: read-only lower layers under one writable upper layer,
//! seen as one tree, with the semantics of the kernel's overlayfs.
//!
//! Lookups go top-down; a file changes only after it is copied up into the
//! upper layer; a deletion of something that exists below leaves a
//! whiteout; a directory created where a whiteout was is opaque. The API
//! follows `std::fs` (each method says only how layers change it) and
//! reports errors with the errno the kernel returns in the same situation.

mod copy_up;
mod file;
pub mod handle;
mod readdir;
mod readers;
pub(crate) mod resolve;

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

pub use crate::merged::options::*;
pub use file::File;

use crate::data::FileData;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::{Content, Entry, Layer, LayerMut};
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

    // ----- reading -----

    /// As [`std::fs::metadata`]: follows symlinks.
    ///
    /// # Errors
    /// `ENOENT`, `ENOTDIR`, `ELOOP` and the path errors of resolution.
    pub fn metadata(&self, path: impl PathLike) -> Result<Metadata> {
        self.stat(
            Name::new(path.path_bytes()),
            Operation::Metadata,
            Follow::Always,
        )
    }

    /// As [`std::fs::symlink_metadata`]: does not follow a final symlink.
    ///
    /// # Errors
    /// As [`MergedView::metadata`].
    pub fn symlink_metadata(&self, path: impl PathLike) -> Result<Metadata> {
        self.stat(
            Name::new(path.path_bytes()),
            Operation::Metadata,
            Follow::OnSlash,
        )
    }

    fn stat(&self, user: &Name, op: Operation, follow: Follow) -> Result<Metadata> {
        match self.readers.stat(user) {
            Some(Some(meta)) => return Ok(meta),
            Some(None) => return Err(Error::new(ErrorKind::NotFound, op, user)),
            None => {}
        }
        let st = self.read_state();
        if let Some(meta) = st.remembered_meta(user) {
            self.readers.learn(&st, user, Some(&meta));
            return Ok(meta);
        }
        match st.quick_lookup(user) {
            Some(None) => {
                self.readers.learn(&st, user, None);
                return Err(Error::new(ErrorKind::NotFound, op, user));
            }
            Some(Some(res)) if !(res.file_type.is_symlink() && follow == Follow::Always) => {
                let meta = meta_of(&st, &res)?;
                let remembered = st.remember_meta(user, &res, &meta);
                self.readers.learn(&st, user, remembered.then_some(&meta));
                return Ok(meta);
            }
            _ => {}
        }
        let r = st.resolve(user, op, follow);
        self.readers.learn(&st, user, None);
        let r = r?;
        let res = r.existing(op, user)?;
        meta_of(&st, res)
    }

    /// As [`std::fs::exists`]: `Ok(false)` when the path does not exist.
    ///
    /// # Errors
    /// Errors other than `ENOENT` (`ENOTDIR`, `ELOOP`, ...).
    pub fn exists(&self, path: impl PathLike) -> Result<bool> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// As [`std::fs::read`]; the bytes are shared with the layer where it can.
    ///
    /// # Errors
    /// `EISDIR` for a directory, `EINVAL` for a fifo, device or socket, and
    /// the errors of resolution.
    pub fn read(&self, path: impl PathLike) -> Result<Bytes> {
        self.read_at(path, 0, usize::MAX)
    }

    /// As [`std::fs::read_to_string`].
    ///
    /// # Errors
    /// As [`MergedView::read`], and `EINVAL` if the contents are not UTF-8.
    pub fn read_to_string(&self, path: impl PathLike) -> Result<String> {
        let user = Name::new(path.path_bytes());
        let bytes = self.read(user)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::new(ErrorKind::InvalidInput, Operation::Read, user)
                .with_detail("contents are not valid UTF-8")
        })
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file), as
    /// `pread`.
    ///
    /// # Errors
    /// As [`MergedView::read`].
    pub fn read_at(&self, path: impl PathLike, offset: u64, len: usize) -> Result<Bytes> {
        let user = Name::new(path.path_bytes());
        if let Some(read) = self.readers.read_lower(user, offset, len) {
            return read.map_err(|e| e.reframe(Operation::Read, user));
        }
        let st = self.read_state();
        let r = st.resolve(user, Operation::Read, Follow::Always)?;
        self.readers.learn(&st, user, None);
        let res = r.existing(Operation::Read, user)?;
        check_regular(res.file_type, Operation::Read, user)?;
        let (idx, lpath) = res.top();
        let read = |idx: usize, lpath: &LayerPath| {
            st.layer(idx)
                .read_at(lpath, offset, len)
                .map_err(|e| e.reframe(Operation::Read, user))
        };
        match read(idx, lpath) {
            // A layer refuses to read a metadata-only copy: its data is
            // below (asked only then, so that ordinary reads pay nothing).
            Err(e) if e.kind() == ErrorKind::NotPermitted => {
                let node = st.node(res).map_err(|e| e.reframe(Operation::Read, user))?;
                if !node.metacopy {
                    return Err(e);
                }
                let (didx, dpath) = st
                    .metacopy_data(idx, lpath, &node)
                    .map_err(|e| e.reframe(Operation::Read, user))?;
                read(didx, &dpath)
            }
            other => other,
        }
    }

    /// As [`std::fs::read_link`]: the target, verbatim.
    ///
    /// # Errors
    /// `EINVAL` if the object is not a symlink, and the errors of resolution.
    pub fn read_link(&self, path: impl PathLike) -> Result<NameBuf> {
        let user = Name::new(path.path_bytes());
        let st = self.read_state();
        let r = st.resolve(user, Operation::ReadLink, Follow::OnSlash)?;
        let res = r.existing(Operation::ReadLink, user)?;
        if !res.file_type.is_symlink() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                Operation::ReadLink,
                user,
            ));
        }
        let (idx, lpath) = res.top();
        st.layer(idx)
            .read_link(lpath)
            .map_err(|e| e.reframe(Operation::ReadLink, user))
    }

    /// The resolved path of `path` in the view (symlinks followed), as
    /// [`std::fs::canonicalize`]; the root is the empty path.
    ///
    /// # Errors
    /// The errors of resolution; `ENOENT` if the object does not exist.
    pub fn canonicalize(&self, path: impl PathLike) -> Result<LayerPath> {
        let user = Name::new(path.path_bytes());
        let st = self.read_state();
        let r = st.resolve(user, Operation::Lookup, Follow::Always)?;
        r.existing(Operation::Lookup, user)?;
        Ok(r.path)
    }

    /// As [`std::fs::File::open`] with options: opening for writing
    /// (`write`, `append` or `truncate`) copies the file up even if nothing
    /// is written; opening for reading never does. The file is a handle of
    /// the view ([`MergedView::open_handle`]): it follows the file through
    /// renames and unlinks, as an open file of the kernel's overlayfs.
    ///
    /// # Errors
    /// `EINVAL` for invalid options or a fifo, device or socket opened for
    /// writing; `EISDIR` for a directory opened for writing; `EEXIST` with
    /// `create_new` when the name exists; `ENOENT` when it is missing and
    /// not created; the errors of resolution.
    pub fn open(&self, path: impl PathLike, options: &OpenOptions) -> Result<File<'_>> {
        let (handle, path) = self.open_handle_at(Name::new(path.path_bytes()), options)?;
        Ok(File::new(self, handle, &path))
    }

    // ----- writing file contents -----

    /// As [`std::fs::write`]: creates or truncates, then writes. An existing
    /// lower file is copied up first.
    ///
    /// # Errors
    /// As [`MergedView::open`] with write, create and truncate.
    pub fn write(&self, path: impl PathLike, data: impl AsRef<[u8]>) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        let mut st = self.write_state();
        let (path, _) = self.open_for_write(&mut st, user, &opts)?;
        self.write_data(&mut st, &path, user, 0, data.as_ref())
    }

    /// Appends to a file, creating it if missing (as `>>` in a shell).
    ///
    /// # Errors
    /// As [`MergedView::open`] with append and create.
    pub fn append(&self, path: impl PathLike, data: impl AsRef<[u8]>) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let mut opts = OpenOptions::new();
        opts.append(true).create(true);
        let mut st = self.write_state();
        let (path, _) = self.open_for_write(&mut st, user, &opts)?;
        let len = file_len(&st, &path)?;
        self.write_data(&mut st, &path, user, len, data.as_ref())
    }

    /// Appends to an existing file in one step (for [`File`] in append
    /// mode); returns the new length.
    pub(crate) fn append_existing(&self, user: &Name, data: &[u8]) -> Result<u64> {
        let mut opts = OpenOptions::new();
        opts.append(true);
        let mut st = self.write_state();
        let (path, _) = self.open_for_write(&mut st, user, &opts)?;
        let len = file_len(&st, &path)?;
        self.write_data(&mut st, &path, user, len, data)?;
        Ok(len + data.len() as u64)
    }

    /// Writes `data` at `offset` of an existing file (as `pwrite`), growing
    /// it; a gap reads as zeros.
    ///
    /// # Errors
    /// As [`MergedView::open`] with write; `EFBIG` past the largest size.
    pub fn write_at(&self, path: impl PathLike, offset: u64, data: impl AsRef<[u8]>) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let mut opts = OpenOptions::new();
        opts.write(true);
        let mut st = self.write_state();
        let (path, _) = self.open_for_write(&mut st, user, &opts)?;
        self.write_data(&mut st, &path, user, offset, data.as_ref())
    }

    /// Truncates or extends a file (as `truncate(2)`), after a copy-up.
    ///
    /// # Errors
    /// `EISDIR` for a directory, `EINVAL` for other non-regular files, and
    /// the errors of resolution.
    pub fn set_len(&self, path: impl PathLike, len: u64) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let op = Operation::SetLen;
        let mut st = self.write_state();
        let r = st.resolve(user, op, Follow::Always)?;
        let res = r.existing(op, user)?;
        check_regular(res.file_type, op, user)?;
        st.copy_up(&r.path, &self.options)
            .map_err(|e| e.reframe(op, user))?;
        st.changing_data(&r.path, |upper| upper.set_len(&r.path, len))
            .map_err(|e| e.reframe(op, user))?;
        self.touch(&mut st, &r.path, true)
    }

    /// Resolves for writing, creating or copying up as `open(2)` would.
    /// Returns the merged path and the type of the object.
    fn open_for_write(
        &self,
        st: &mut State,
        user: &Name,
        options: &OpenOptions,
    ) -> Result<(LayerPath, FileType)> {
        let op = Operation::Open;
        let parsed = crate::path::UserPath::parse(user.as_bytes(), op)?;
        if options.creates() && parsed.trailing_slash && parsed.last_kind() == LastKind::Name {
            // The kernel refuses to create a name with a trailing slash,
            // whatever is there, once the parent is found (a path ending
            // in `.` or `..` names a directory: EEXIST or EISDIR below).
            st.resolve(user, op, Follow::Create)?;
            return Err(Error::new(ErrorKind::IsADirectory, op, user));
        }
        let follow = if options.create_new {
            Follow::Create
        } else if options.creates() {
            // A symlink target ending in `name/` is EISDIR, unlooked-up.
            Follow::Creating
        } else {
            Follow::Always
        };
        let r = st.resolve(user, op, follow)?;
        match &r.obj {
            Some(_) if options.create_new => Err(Error::new(ErrorKind::AlreadyExists, op, user)),
            Some(res) => {
                match res.file_type {
                    FileType::Dir => return Err(Error::new(ErrorKind::IsADirectory, op, user)),
                    FileType::File => {}
                    _ => {
                        return Err(Error::new(ErrorKind::InvalidInput, op, user)
                            .with_detail("fifos, devices and sockets hold no data here"));
                    }
                }
                st.copy_up(&r.path, &self.options)
                    .map_err(|e| e.reframe(op, user))?;
                if options.truncate {
                    st.changing_data(&r.path, |upper| upper.set_len(&r.path, 0))
                        .map_err(|e| e.reframe(op, user))?;
                    self.touch(st, &r.path, true)?;
                }
                Ok((r.path, FileType::File))
            }
            None if options.creates() => {
                if r.trailing_slash {
                    return Err(Error::new(ErrorKind::IsADirectory, op, user));
                }
                let (parent, name) = r.parent.clone().expect("a missing object has a name");
                let meta = self.new_meta(st, &parent, FileType::File, 0o666)?;
                self.create_entry(st, &parent, &name, &meta, Content::File(FileData::new()))
                    .map_err(|e| e.reframe(op, user))?;
                Ok((r.path, FileType::File))
            }
            None => Err(Error::new(ErrorKind::NotFound, op, user)),
        }
    }

    fn write_data(
        &self,
        st: &mut State,
        path: &LayerPath,
        user: &Name,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        if data.is_empty() {
            // No `write` at all (as `write_all(&[])`), so no time changes;
            // the open for writing has copied the file up.
            return Ok(());
        }
        changing(st, |st| {
            st.changing_data(path, |upper| upper.write_at(path, offset, data))
                .map_err(|e| e.reframe(Operation::Write, user))?;
            self.touch(st, path, true)
        })
    }

    /// Sets ctime (and mtime when `modified`) of an upper object to now.
    fn touch(&self, st: &mut State, path: &LayerPath, modified: bool) -> Result<()> {
        if let Some(Entry::Node(node)) = st.upper.lookup(path)? {
            let mut meta = node.meta;
            let now = self.now();
            meta.ctime = now;
            if modified {
                meta.mtime = now;
            }
            st.upper.set_metadata(path, &meta)?;
        }
        Ok(())
    }

    // ----- creating and removing names -----

    /// Metadata for a new object in `parent`: the view's owner (or the
    /// group of a setgid parent), `mode` less the umask, times now.
    fn new_meta(
        &self,
        st: &State,
        parent: &Cursor,
        file_type: FileType,
        mode: u32,
    ) -> Result<Metadata> {
        let parent_meta = st
            .node(&Res {
                file_type: FileType::Dir,
                stack: parent.stack.clone(),
            })?
            .meta;
        let mut mode = mode & MODE_MASK;
        if file_type != FileType::Symlink {
            mode &= !self.options.umask;
        }
        let mut gid = self.options.gid;
        if parent_meta.mode & S_ISGID != 0 {
            gid = parent_meta.gid;
            if file_type.is_dir() {
                mode |= S_ISGID;
            }
        }
        Ok(Metadata::new(file_type)
            .with_mode(mode)
            .with_owner(self.options.uid, gid)
            .with_times(self.now()))
    }

    /// Creates `name` in merged directory `parent` in the upper: the parent
    /// chain is copied up; a directory created over a whiteout is opaque.
    fn create_entry(
        &self,
        st: &mut State,
        parent: &Cursor,
        name: &Name,
        meta: &Metadata,
        content: Content,
    ) -> Result<()> {
        changing(st, |st| {
            st.copy_up(&parent.path, &self.options)?;
            let path = parent.path.join_unchecked(name);
            let over_whiteout = matches!(st.upper.lookup(&path)?, Some(Entry::Whiteout));
            if over_whiteout && matches!(content, Content::Dir) {
                st.upper.create_opaque_dir(&path, meta)?;
            } else {
                st.upper.create(&path, meta, content)?;
            }
            // A new object is no copy-up, whatever an earlier, removed object
            // with its inode number was (filesystems reuse inode numbers).
            if let Some(Entry::Node(node)) = st.upper.lookup(&path)? {
                let id = st.layer_ids[resolve::UPPER];
                st.origins.remove(&(id, node.meta.ino));
            }
            self.touch(st, &parent.path, true)?;
            st.refresh(&parent.path, name, true)
        })
    }

    /// Removes `name` (resolving to `res`) from merged directory `parent`:
    /// from the upper if it is there, and a whiteout if a lower layer
    /// still shows the name.
    fn remove_entry(&self, st: &mut State, parent: &Cursor, name: &Name, res: &Res) -> Result<()> {
        changing(st, |st| {
            st.copy_up(&parent.path, &self.options)?;
            let path = parent.path.join_unchecked(name);
            if res.in_upper()
                && res.file_type.is_dir()
                && !st.upper.read_dir(&path)?.entries.is_empty()
            {
                // The view lists it empty: what the upper holds are whiteouts,
                // which go in one step.
                st.upper.clear_dir(&path)?;
            }
            if st.lower_positive(parent, name)? {
                st.upper.whiteout(&path)?;
            } else if res.in_upper() {
                st.upper.remove(&path)?;
            }
            self.touch(st, &parent.path, true)?;
            st.refresh(&parent.path, name, res.file_type.is_dir())
        })
    }

    /// As [`std::fs::create_dir`]. A directory created where a deleted
    /// lower directory was is opaque: the old contents never come back.
    ///
    /// # Errors
    /// `EEXIST` if the name exists (even as a dangling symlink), `ENOENT`
    /// if the parent is missing, and the errors of resolution.
    pub fn create_dir(&self, path: impl PathLike) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let op = Operation::CreateDir;
        let mut st = self.write_state();
        let r = st.resolve(user, op, Follow::Create)?;
        self.create_dir_at(&mut st, &r, user)
    }

    fn create_dir_at(&self, st: &mut State, r: &Resolved, user: &Name) -> Result<()> {
        let op = Operation::CreateDir;
        let (Some((parent, name)), None) = (&r.parent, &r.obj) else {
            return Err(Error::new(ErrorKind::AlreadyExists, op, user));
        };
        let meta = self.new_meta(st, parent, FileType::Dir, 0o777)?;
        self.create_entry(st, parent, name, &meta, Content::Dir)
            .map_err(|e| e.reframe(op, user))
    }

    /// As [`std::fs::create_dir_all`], step by step as `std` does it: the
    /// empty path is done; `create_dir(path)`; if that fails with `ENOENT`,
    /// `create_dir_all` of the parent (as [`std::path::Path::parent`], which
    /// drops `.` components) and `create_dir(path)` again; any other
    /// failure is success if `path` is then a directory (following
    /// symlinks). So every missing component is created and symlinks to
    /// directories on the way are followed.
    ///
    /// # Errors
    /// `ENOTDIR` if a component on the way is not a directory, `EEXIST` if
    /// the last one exists and is not a directory (a dangling symlink
    /// too), `ENOENT` for `a/.` where `a` is missing (as `std`: the parent
    /// of `a/.` is `""`).
    pub fn create_dir_all(&self, path: impl PathLike) -> Result<()> {
        let user = Name::new(path.path_bytes());
        self.create_dir_all_std(user)
            .map_err(|e| e.reframe(Operation::CreateDir, user))
    }

    fn create_dir_all_std(&self, path: &Name) -> Result<()> {
        if path.is_empty() {
            return Ok(());
        }
        let is_dir = |p: &Name| self.metadata(p).is_ok_and(|m| m.is_dir());
        match self.create_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(_) if is_dir(path) => return Ok(()),
            Err(e) => return Err(e),
        }
        let parent = path.to_path().parent();
        match parent.map(|p| Name::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))) {
            Some(parent) => self.create_dir_all_std(parent)?,
            None => return Err(Error::new(ErrorKind::NotFound, Operation::CreateDir, path)),
        }
        match self.create_dir(path) {
            Ok(()) => Ok(()),
            Err(_) if is_dir(path) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// As [`std::os::unix::fs::symlink`]: creates `link` pointing at
    /// `target` (stored verbatim, resolved only when used).
    ///
    /// # Errors
    /// `ENOENT` for an empty target or a missing parent, `EEXIST` if `link`
    /// exists.
    pub fn symlink(&self, target: impl PathLike, link: impl PathLike) -> Result<()> {
        let (target, user) = (Name::new(target.path_bytes()), Name::new(link.path_bytes()));
        let op = Operation::Symlink;
        if target.is_empty() {
            return Err(Error::new(ErrorKind::NotFound, op, user)
                .with_detail("a symlink target cannot be empty"));
        }
        if target.as_bytes().contains(&0) {
            return Err(Error::new(ErrorKind::InvalidInput, op, user)
                .with_detail("symlink target contains a NUL byte"));
        }
        let mut st = self.write_state();
        let r = st.resolve(user, op, Follow::Create)?;
        let (parent, name) = new_name(&r, op, user)?;
        let meta = self.new_meta(&st, parent, FileType::Symlink, 0o777)?;
        self.create_entry(
            &mut st,
            parent,
            name,
            &meta,
            Content::Symlink(target.to_owned()),
        )
        .map_err(|e| e.reframe(op, user))
    }

    /// Creates a fifo, character or block device, or socket (metadata only:
    /// nothing is ever opened on it).
    ///
    /// # Errors
    /// `EINVAL` for another file type, `EEXIST` if the name exists, `EPERM`
    /// for the character device 0/0 (the whiteout marker).
    pub fn mknod(
        &self,
        path: impl PathLike,
        file_type: FileType,
        mode: u32,
        rdev: u64,
    ) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let op = Operation::Mknod;
        if !file_type.is_special() {
            return Err(Error::new(ErrorKind::InvalidInput, op, user)
                .with_detail("only fifos, devices and sockets are made with mknod"));
        }
        let mut st = self.write_state();
        let r = st.resolve(user, op, Follow::Create)?;
        let (parent, name) = new_name(&r, op, user)?;
        if matches!(file_type, FileType::CharDevice | FileType::BlockDevice)
            && !crate::meta::rdev_fits_mknod(rdev)
        {
            return Err(
                Error::new(ErrorKind::InvalidInput, op, user).with_detail(format!(
                    "device {}:{} does not fit the kernel's 12-bit major and 20-bit minor",
                    crate::meta::major(rdev),
                    crate::meta::minor(rdev)
                )),
            );
        }
        if file_type == FileType::CharDevice && rdev == 0 {
            return Err(Error::new(ErrorKind::NotPermitted, op, user)
                .with_detail("the character device 0/0 is the whiteout marker"));
        }
        let rdev = if matches!(file_type, FileType::CharDevice | FileType::BlockDevice) {
            rdev
        } else {
            0
        };
        let meta = self.new_meta(&st, parent, file_type, mode)?.with_rdev(rdev);
        self.create_entry(&mut st, parent, name, &meta, Content::Special)
            .map_err(|e| e.reframe(op, user))
    }

    /// As [`std::fs::hard_link`] (a symlink is linked itself). A lower file
    /// is copied up first, then linked in the upper.
    ///
    /// # Errors
    /// `ENOENT` if `original` or the parent of `link` is missing, `EEXIST`
    /// if `link` exists, `EPERM` if `original` is a directory.
    pub fn hard_link(&self, original: impl PathLike, link: impl PathLike) -> Result<()> {
        let link = Name::new(link.path_bytes());
        self.hard_link_inner(Name::new(original.path_bytes()), link)
            .map_err(|e| e.with_second_path(link))
    }

    fn hard_link_inner(&self, user: &Name, user_link: &Name) -> Result<()> {
        let op = Operation::HardLink;
        for p in [user, user_link] {
            if p.as_bytes().contains(&0) {
                // `std` refuses a NUL byte in either path before the call.
                crate::path::UserPath::parse(p.as_bytes(), op)?;
            }
        }
        let mut st = self.write_state();
        // As the kernel's `do_linkat`: the original is looked up before the
        // new path is even parsed.
        let src = st.resolve(user, op, Follow::OnSlash)?;
        let src_res = src.existing(op, user)?.clone();
        let dst = st.resolve(user_link, op, Follow::Create)?;
        let (parent, name) = new_name(&dst, op, user_link)?;
        if src_res.file_type.is_dir() {
            return Err(Error::new(ErrorKind::NotPermitted, op, user)
                .with_detail("cannot hard-link a directory"));
        }
        st.copy_up(&src.path, &self.options)
            .map_err(|e| e.reframe(op, user))?;
        st.copy_up(&parent.path, &self.options)
            .map_err(|e| e.reframe(op, user_link))?;
        st.upper
            .hard_link(&src.path, &dst.path)
            .map_err(|e| e.reframe(op, user_link))?;
        st.refresh(&parent.path, name, false)?;
        self.touch(&mut st, &src.path, false)?;
        self.touch(&mut st, &parent.path, true)
    }

    /// As [`std::fs::remove_file`] (a symlink is removed itself). A name
    /// that a lower layer also holds becomes a whiteout.
    ///
    /// # Errors
    /// `ENOENT` if missing, `EISDIR` for a directory.
    pub fn remove_file(&self, path: impl PathLike) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let op = Operation::RemoveFile;
        let mut st = self.write_state();
        let r = st.resolve(user, op, Follow::Create)?;
        let Some((parent, name)) = &r.parent else {
            return Err(Error::new(ErrorKind::IsADirectory, op, user));
        };
        let res = r.existing(op, user)?;
        if res.file_type.is_dir() {
            return Err(Error::new(ErrorKind::IsADirectory, op, user));
        }
        if r.trailing_slash {
            return Err(Error::new(ErrorKind::NotADirectory, op, user));
        }
        self.remove_entry(&mut st, parent, name, res)
            .map_err(|e| e.reframe(op, user))
    }

    /// As [`std::fs::remove_dir`]: the directory must be empty as the view
    /// lists it (entries of lower layers count).
    ///
    /// # Errors
    /// `ENOENT` if missing, `ENOTDIR` if not a directory, `ENOTEMPTY` if it
    /// lists entries, `EBUSY` for the root.
    pub fn remove_dir(&self, path: impl PathLike) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let op = Operation::RemoveDir;
        let mut st = self.write_state();
        let r = st.resolve(user, op, Follow::Create)?;
        let Some((parent, name)) = &r.parent else {
            return Err(no_name_to_remove(user, op)?);
        };
        let res = r.existing(op, user)?;
        let Some(dir) = r.dir() else {
            return Err(Error::new(ErrorKind::NotADirectory, op, user));
        };
        if !st.index(&dir)?.is_empty() {
            return Err(Error::new(ErrorKind::DirectoryNotEmpty, op, user));
        }
        self.remove_entry(&mut st, parent, name, res)
            .map_err(|e| e.reframe(op, user))
    }

    /// As [`std::fs::remove_dir_all`]: removes a directory and everything
    /// below it, never following symlinks (a symlink is removed itself), in
    /// one step no other operation of the view interleaves with.
    ///
    /// Unlike `std`, a path that does not name one directory by its name
    /// is refused before anything is removed, with the error `remove_dir`
    /// gives it: the root (`EBUSY`), a path ending in `.` (`EINVAL`) or `..`
    /// (`ENOTEMPTY`), a symlink with a trailing slash (`ENOTDIR`). `std`
    /// would empty the directory first and then fail.
    ///
    /// # Errors
    /// `ENOENT` if missing, `ENOTDIR` for a non-directory that is not a
    /// symlink, and the refusals above.
    pub fn remove_dir_all(&self, path: impl PathLike) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let op = Operation::RemoveDir;
        let mut st = self.write_state();
        let r = st.resolve(user, op, Follow::Create)?;
        let Some((parent, name)) = &r.parent else {
            return Err(no_name_to_remove(user, op)?);
        };
        let res = r.existing(op, user)?;
        match res.file_type {
            FileType::Dir => self
                .remove_tree(&mut st, &r.path)
                .map_err(|e| e.reframe(op, user)),
            FileType::Symlink if !r.trailing_slash => self
                .remove_entry(&mut st, parent, name, res)
                .map_err(|e| e.reframe(op, user)),
            _ => Err(Error::new(ErrorKind::NotADirectory, op, user)),
        }
    }

    /// Removes everything below the merged directory at `path`.
    fn remove_children(&self, st: &mut State, path: &LayerPath) -> Result<()> {
        let dir = st.cursor_at(path)?;
        let children: Vec<(NameBuf, Res)> = st
            .index(&dir)?
            .entries()
            .map(|(n, r)| (n.to_owned(), r))
            .collect();
        for (name, res) in children {
            if res.file_type.is_dir() {
                self.remove_tree(st, &path.join_unchecked(&name))?;
            } else {
                let dir = st.cursor_at(path)?;
                self.remove_entry(st, &dir, &name, &res)?;
            }
        }
        Ok(())
    }

    /// Removes the merged directory at `path` and everything below it.
    fn remove_tree(&self, st: &mut State, path: &LayerPath) -> Result<()> {
        changing(st, |st| {
            self.remove_children(st, path)?;
            let (Some(parent_path), Some(name)) = (path.parent(), path.file_name()) else {
                return Ok(());
            };
            let parent = st.cursor_at(&parent_path)?;
            let res = st.child(&parent, name)?.ok_or_else(|| {
                Error::new(ErrorKind::NotFound, Operation::RemoveDir, path.as_name())
            })?;
            self.remove_entry(st, &parent, name, &res)
        })
    }

    /// As [`std::fs::rename`].
    ///
    /// A file is copied up and moved; the old name becomes a whiteout if a
    /// lower layer holds it. A directory that exists in a lower layer fails
    /// with `EXDEV` (as the kernel by default) unless the view was made
    /// with [`DirRename::Redirect`].
    ///
    /// # Errors
    /// See [`MergedView::rename_with`].
    pub fn rename(&self, from: impl PathLike, to: impl PathLike) -> Result<()> {
        self.rename_with(from, to, RenameMode::Replace)
    }

    /// As `renameat2` with its flags: [`RenameMode::NoReplace`] fails with
    /// `EEXIST` if `to` exists; [`RenameMode::Exchange`] swaps the two.
    ///
    /// # Errors
    /// `ENOENT` if `from` (or, to exchange, `to`) is missing; `EEXIST` (no
    /// replace); `EINVAL` to move a directory below itself; `ENOTEMPTY` for
    /// a non-empty target directory (or a target above the source);
    /// `EISDIR`/`ENOTDIR` when the types do not fit; `EXDEV` for a lower
    /// directory without the redirect option; `EBUSY` for the root.
    pub fn rename_with(
        &self,
        from: impl PathLike,
        to: impl PathLike,
        mode: RenameMode,
    ) -> Result<()> {
        let to = Name::new(to.path_bytes());
        self.rename_inner(Name::new(from.path_bytes()), to, mode)
            .map_err(|e| e.with_second_path(to))
    }

    fn rename_inner(&self, user: &Name, user_to: &Name, mode: RenameMode) -> Result<()> {
        let op = Operation::Rename;
        for p in [user, user_to] {
            if p.as_bytes().contains(&0) {
                // `std` refuses a NUL byte in either path before the call.
                crate::path::UserPath::parse(p.as_bytes(), op)?;
            }
        }
        let mut st = self.write_state();
        // As the kernel's `do_renameat2`: the source's parent is walked
        // before the target is even parsed.
        let src = st.resolve(user, op, Follow::Create)?;
        let dst = st.resolve(user_to, op, Follow::Create)?;
        let Some((sparent, sname)) = src.parent.clone() else {
            return Err(Error::new(ErrorKind::Busy, op, user));
        };
        let Some((dparent, dname)) = dst.parent.clone() else {
            // As the kernel's `do_renameat2`: no name to replace.
            let kind = if mode == RenameMode::NoReplace {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::Busy
            };
            return Err(Error::new(kind, op, user_to));
        };
        let sres = src.existing(op, user)?.clone();
        if mode == RenameMode::NoReplace && dst.obj.is_some() {
            return Err(Error::new(ErrorKind::AlreadyExists, op, user_to));
        }
        if mode == RenameMode::Exchange && dst.obj.is_none() {
            return Err(Error::new(ErrorKind::NotFound, op, user_to));
        }
        let exchange = mode == RenameMode::Exchange;
        if !sres.file_type.is_dir() && (src.trailing_slash || (!exchange && dst.trailing_slash)) {
            return Err(Error::new(ErrorKind::NotADirectory, op, user));
        }
        if exchange && dst.trailing_slash && dst.obj.as_ref().is_some_and(|d| !d.file_type.is_dir())
        {
            return Err(Error::new(ErrorKind::NotADirectory, op, user_to));
        }
        if dst.path != src.path && dst.path.starts_with(&src.path) {
            return Err(Error::new(ErrorKind::InvalidInput, op, user_to)
                .with_detail("cannot move a directory below itself"));
        }
        if src.path != dst.path && src.path.starts_with(&dst.path) {
            let kind = if exchange {
                ErrorKind::InvalidInput
            } else {
                ErrorKind::DirectoryNotEmpty
            };
            return Err(Error::new(kind, op, user_to));
        }
        if src.path == dst.path
            || dst
                .obj
                .as_ref()
                .is_some_and(|d| self.same_object(&st, &sres, d))
        {
            return Ok(());
        }
        if !exchange && let Some(dres) = &dst.obj {
            if sres.file_type.is_dir() && !dres.file_type.is_dir() {
                return Err(Error::new(ErrorKind::NotADirectory, op, user_to));
            }
            if !sres.file_type.is_dir() && dres.file_type.is_dir() {
                return Err(Error::new(ErrorKind::IsADirectory, op, user_to));
            }
        }
        let cross = |res: &Res| {
            self.options.dir_rename == DirRename::CrossDevice
                && res.file_type.is_dir()
                && res.has_lower()
        };
        if cross(&sres) || (exchange && dst.obj.as_ref().is_some_and(cross)) {
            return Err(Error::new(ErrorKind::CrossesDevices, op, user));
        }
        if !exchange
            && let Some(ddir) = dst.dir()
            && !st.index(&ddir)?.is_empty()
        {
            if !ddir.stack.iter().any(|(idx, _)| *idx != resolve::UPPER) {
                // The kernel checks only a target with a lower part before
                // it starts; a pure upper one fails in the upper's own
                // rename, after the source was copied up (and given its
                // redirect) and the target's parent too.
                let redirect = self
                    .prepare_moving(&mut st, &src.path, &sres, sparent.path == dparent.path)
                    .map_err(|e| e.reframe(op, user))?;
                if let Some(r) = redirect {
                    st.upper.set_redirect(&src.path, Some(r))?;
                    st.refresh(&sparent.path, &sname, true)?;
                }
                st.copy_up(&dparent.path, &self.options)
                    .map_err(|e| e.reframe(op, user_to))?;
            }
            return Err(Error::new(ErrorKind::DirectoryNotEmpty, op, user_to));
        }
        let r = if exchange {
            let dres = dst.obj.clone().expect("checked above");
            self.exchange_entries(
                &mut st,
                (&sparent, &sname, &sres),
                (&dparent, &dname, &dres),
            )
        } else {
            self.move_entry(
                &mut st,
                (&sparent, &sname, &sres),
                (&dparent, &dname, dst.obj.as_ref()),
            )
        };
        r.map_err(|e| e.reframe(op, user))
    }

    /// Whether two merged objects are one (names of one inode, as the
    /// kernel sees them: upper hard links always, lower hard links only
    /// with [`HardLinkCopyUp::Keep`]). A lower inode of one link that a
    /// redirect the kernel never writes shows at two merged paths is two
    /// independent objects here, as everywhere in the view and the model
    /// (the kernel binds both names to one overlay inode and its answers
    /// then depend on its caches; see `tests/it/kernel.rs`).
    fn same_object(&self, st: &State, a: &Res, b: &Res) -> bool {
        if a.file_type.is_dir() || b.file_type.is_dir() || a.top().0 != b.top().0 {
            return false;
        }
        match (st.node(a), st.node(b)) {
            (Ok(x), Ok(y)) => {
                x.meta.ino == y.meta.ino
                    && (a.in_upper()
                        || (self.options.hard_links == HardLinkCopyUp::Keep && x.meta.nlink > 1))
            }
            _ => false,
        }
    }

    /// Brings the object of a rename into the upper: a non-directory is
    /// copied up; a directory with a lower part is copied up alone and
    /// given a redirect to where its lower part is, as the kernel's
    /// `ovl_set_redirect` writes it: within one directory (`same_dir`) the
    /// old name, relative (or the redirect it already has); across
    /// directories an absolute path (or the absolute redirect it already
    /// has).
    fn prepare_moving(
        &self,
        st: &mut State,
        path: &LayerPath,
        res: &Res,
        same_dir: bool,
    ) -> Result<Option<NameBuf>> {
        st.copy_up(path, &self.options)?;
        if res.file_type == FileType::File && st.metacopy == Metacopy::Follow {
            // A metadata-only copy that finds its data by its path would
            // lose it at the new one.
            st.fill_metacopy(path, false)?;
        }
        if !(res.file_type.is_dir() && res.has_lower()) {
            return Ok(None);
        }
        let existing = match st.upper.lookup(path)? {
            Some(Entry::Node(node)) => node.redirect,
            _ => None,
        };
        match existing {
            Some(r) if same_dir || r.is_absolute() => Ok(Some(r)),
            _ if same_dir => Ok(path.file_name().map(Name::to_owned)),
            _ => Ok(Some(redirect_to(st, path)?)),
        }
    }

    fn move_entry(
        &self,
        st: &mut State,
        (sparent, sname, sres): (&Cursor, &Name, &Res),
        (dparent, dname, dres): (&Cursor, &Name, Option<&Res>),
    ) -> Result<()> {
        changing(st, |st| {
            let spath = sparent.path.join_unchecked(sname);
            let dpath = dparent.path.join_unchecked(dname);
            st.copy_up(&dparent.path, &self.options)?;
            let same_dir = sparent.path == dparent.path;
            let redirect = self.prepare_moving(st, &spath, sres, same_dir)?;
            // The source's lower part (if any) is what a whiteout must hide.
            let sparent = st.cursor_at(&sparent.path)?;
            let dparent = st.cursor_at(&dparent.path)?;
            let source_whiteout = st.lower_positive(&sparent, sname)?;
            let target_lower = st.lower_positive(&dparent, dname)?;
            if sres.file_type.is_dir() {
                // Flags go on before the move, as the kernel sets them, so the
                // directory never shows at its new place without them.
                set_dir_flags(st, &spath, redirect, target_lower)?;
            }
            if let Some(dres) = dres
                && dres.in_upper()
                && dres.file_type.is_dir()
            {
                // An empty merged target: its whiteouts go in one step, so it
                // can be replaced.
                if !st.upper.read_dir(&dpath)?.entries.is_empty() {
                    st.upper.clear_dir(&dpath)?;
                }
            }
            if source_whiteout {
                st.upper.rename_whiteout(&spath, &dpath)?;
            } else {
                st.upper.rename(&spath, &dpath)?;
            }
            self.touch(st, &sparent.path, true)?;
            self.touch(st, &dparent.path, true)?;
            self.touch(st, &dpath, false)?;
            st.forget_subtree(&spath);
            st.forget_subtree(&dpath);
            st.refresh(&sparent.path, sname, true)?;
            st.refresh(&dparent.path, dname, true)
        })
    }

    fn exchange_entries(
        &self,
        st: &mut State,
        (aparent, aname, ares): (&Cursor, &Name, &Res),
        (bparent, bname, bres): (&Cursor, &Name, &Res),
    ) -> Result<()> {
        changing(st, |st| {
            let apath = aparent.path.join_unchecked(aname);
            let bpath = bparent.path.join_unchecked(bname);
            let same_dir = aparent.path == bparent.path;
            let aredirect = self.prepare_moving(st, &apath, ares, same_dir)?;
            let bredirect = self.prepare_moving(st, &bpath, bres, same_dir)?;
            let aparent = st.cursor_at(&aparent.path)?;
            let bparent = st.cursor_at(&bparent.path)?;
            let a_lower = st.lower_positive(&aparent, aname)?;
            let b_lower = st.lower_positive(&bparent, bname)?;
            // What goes to `bpath` gets the flags `bpath` needs, and the other
            // way round, before the swap.
            for (path, res, redirect, lower_there) in [
                (&apath, ares, aredirect, b_lower),
                (&bpath, bres, bredirect, a_lower),
            ] {
                if res.file_type.is_dir() {
                    set_dir_flags(st, path, redirect, lower_there)?;
                }
            }
            st.upper.exchange(&apath, &bpath)?;
            self.touch(st, &aparent.path, true)?;
            self.touch(st, &bparent.path, true)?;
            st.forget_subtree(&apath);
            st.forget_subtree(&bpath);
            st.refresh(&aparent.path, aname, true)?;
            st.refresh(&bparent.path, bname, true)
        })
    }

    // ----- metadata changes -----

    /// Changes an object's metadata after copying it up (follows symlinks).
    fn change_meta(
        &self,
        user: &Name,
        op: Operation,
        f: impl FnOnce(&mut Metadata) -> Result<()>,
    ) -> Result<()> {
        self.change_meta_checked(user, op, Follow::Always, |_, _| Ok(()), f)
    }

    /// As [`MergedView::change_meta`], with `check` run on the resolved
    /// object under the same lock, before the copy-up (so nothing can
    /// change between the check and the change).
    fn change_meta_checked(
        &self,
        user: &Name,
        op: Operation,
        follow: Follow,
        check: impl FnOnce(&State, &Res) -> Result<()>,
        f: impl FnOnce(&mut Metadata) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.write_state();
        let r = st.resolve(user, op, follow)?;
        check(&st, r.existing(op, user)?)?;
        st.copy_up(&r.path, &self.options)
            .map_err(|e| e.reframe(op, user))?;
        let Some(Entry::Node(node)) = st.upper.lookup(&r.path)? else {
            return Err(Error::new(ErrorKind::NotFound, op, user));
        };
        let mut meta = node.meta;
        f(&mut meta)?;
        meta.ctime = self.now();
        st.upper
            .set_metadata(&r.path, &meta)
            .map_err(|e| e.reframe(op, user))
    }

    /// As [`std::fs::set_permissions`] with the mode bits (`0o7777`,
    /// setuid, setgid and sticky included). Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_permissions(&self, path: impl PathLike, mode: u32) -> Result<()> {
        self.change_meta(
            Name::new(path.path_bytes()),
            Operation::SetPermissions,
            |m| {
                m.mode = mode & MODE_MASK;
                Ok(())
            },
        )
    }

    /// As [`std::os::unix::fs::chown`] (`None` keeps the id). Like Linux, it
    /// clears setuid (and setgid with group-execute) on a non-directory.
    /// Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_owner(&self, path: impl PathLike, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.chown(Name::new(path.path_bytes()), Follow::Always, uid, gid)
    }

    /// As [`std::os::unix::fs::lchown`]: [`MergedView::set_owner`] of a
    /// symlink itself, not of what it points to. Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_owner_nofollow(
        &self,
        path: impl PathLike,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        self.chown(Name::new(path.path_bytes()), Follow::OnSlash, uid, gid)
    }

    fn chown(&self, user: &Name, follow: Follow, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let op = Operation::SetOwner;
        self.change_meta_checked(
            user,
            op,
            follow,
            |_, _| Ok(()),
            |m| {
                if let Some(uid) = uid {
                    m.uid = uid;
                }
                if let Some(gid) = gid {
                    m.gid = gid;
                }
                m.mode = mode_after_chown(m.file_type, m.mode);
                Ok(())
            },
        )
    }

    /// Sets the access and modification times (`None` keeps one), as
    /// `utimensat`. Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_times(
        &self,
        path: impl PathLike,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        self.utimens(Name::new(path.path_bytes()), Follow::Always, atime, mtime)
    }

    /// [`MergedView::set_times`] of a symlink itself, not of what it
    /// points to (`utimensat` with `AT_SYMLINK_NOFOLLOW`). Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_times_nofollow(
        &self,
        path: impl PathLike,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        self.utimens(Name::new(path.path_bytes()), Follow::OnSlash, atime, mtime)
    }

    fn utimens(
        &self,
        user: &Name,
        follow: Follow,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        if atime.is_none() && mtime.is_none() {
            // As `utimensat` with both `UTIME_OMIT`: nothing to do, and
            // the path is not even looked up.
            return Ok(());
        }
        let op = Operation::SetTimes;
        self.change_meta_checked(
            user,
            op,
            follow,
            |_, _| Ok(()),
            |m| {
                if let Some(t) = atime {
                    m.atime = t;
                }
                if let Some(t) = mtime {
                    m.mtime = t;
                }
                Ok(())
            },
        )
    }

    // ----- extended attributes -----

    /// The value of extended attribute `name` (follows symlinks).
    ///
    /// # Errors
    /// `ERANGE` for an empty or too long name, `ENODATA` for a `user.`
    /// attribute of anything but a regular file or directory, `EINVAL` for a
    /// bare namespace prefix, `EOPNOTSUPP` for an unknown namespace,
    /// `ENODATA` if absent.
    pub fn get_xattr(&self, path: impl PathLike, name: &str) -> Result<Bytes> {
        let user = Name::new(path.path_bytes());
        let op = Operation::GetXattr;
        check_xattr_len(name, op, user)?;
        let st = self.read_state();
        let r = st.resolve(user, op, Follow::Always)?;
        let res = r.existing(op, user)?;
        let meta = meta_of(&st, res)?;
        let no_data = || {
            Error::new(ErrorKind::NoData, op, user)
                .with_detail(format!("no extended attribute `{name}`"))
        };
        // The kernel's `xattr_permission` comes before the name check.
        if !xattr_allowed_on(meta.file_type, name) {
            return Err(no_data());
        }
        check_xattr_name(name, op, user)?;
        meta.xattrs.get(name).cloned().ok_or_else(no_data)
    }

    /// Sets extended attribute `name` (follows symlinks). Copies up.
    ///
    /// # Errors
    /// `E2BIG` for a value over 64 KiB, `ERANGE` for an empty or too long
    /// name, `EPERM` for a `user.` attribute on anything but a regular file
    /// or directory, then (after the copy-up, as the kernel)
    /// `EINVAL` for a bare namespace prefix (`user.`), `EOPNOTSUPP` for a
    /// namespace other than `user.`, `trusted.`, `security.`, `system.`.
    pub fn set_xattr(
        &self,
        path: impl PathLike,
        name: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let op = Operation::SetXattr;
        let value = value.as_ref();
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::new(ErrorKind::ArgumentListTooLong, op, user));
        }
        check_xattr_len(name, op, user)?;
        let value = Bytes::copy_from_slice(value);
        let allowed = |_: &State, res: &Res| {
            if xattr_allowed_on(res.file_type, name) {
                Ok(())
            } else {
                Err(Error::new(ErrorKind::NotPermitted, op, user).with_detail(
                    "user attributes are only allowed on regular files and directories",
                ))
            }
        };
        // As the kernel: the copy-up comes first, then the upper
        // filesystem refuses a bad name.
        self.change_meta_checked(user, op, Follow::Always, allowed, |m| {
            check_xattr_name(name, op, user)?;
            m.xattrs.insert(name, value);
            Ok(())
        })
    }

    /// Removes extended attribute `name` (follows symlinks). Copies up,
    /// unless the attribute is absent.
    ///
    /// # Errors
    /// As [`MergedView::set_xattr`], and `ENODATA` if absent.
    pub fn remove_xattr(&self, path: impl PathLike, name: &str) -> Result<()> {
        let user = Name::new(path.path_bytes());
        let op = Operation::RemoveXattr;
        check_xattr_len(name, op, user)?;
        let present = |st: &State, res: &Res| {
            if !xattr_allowed_on(res.file_type, name) {
                return Err(Error::new(ErrorKind::NotPermitted, op, user));
            }
            check_xattr_name(name, op, user)?;
            if meta_of(st, res)?.xattrs.get(name).is_none() {
                return Err(Error::new(ErrorKind::NoData, op, user)
                    .with_detail(format!("no extended attribute `{name}`")));
            }
            Ok(())
        };
        self.change_meta_checked(user, op, Follow::Always, present, |m| {
            m.xattrs.remove(name);
            Ok(())
        })
    }

    /// The names of the extended attributes, sorted (follows symlinks).
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn list_xattr(&self, path: impl PathLike) -> Result<Vec<String>> {
        let meta = self.stat(
            Name::new(path.path_bytes()),
            Operation::ListXattr,
            Follow::Always,
        )?;
        Ok(meta.xattrs.names().map(str::to_owned).collect())
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

/// Gives a directory about to move the flag its new place needs: the
/// redirect to its lower part, or, for a pure upper directory going where a
/// lower layer has the name, opaqueness (nothing below may show through).
fn set_dir_flags(
    st: &mut State,
    path: &LayerPath,
    redirect: Option<NameBuf>,
    lower_at_target: bool,
) -> Result<()> {
    match redirect {
        Some(r) => st.upper.set_redirect(path, Some(r)),
        None if lower_at_target => st.upper.set_opaque(path, true),
        None => Ok(()),
    }
}

/// The absolute redirect that makes the layers below find what they hold
/// for the directory now at `path`, computed as the kernel's
/// `ovl_get_redirect`: the path's names from the root, where a name of the
/// upper layer with a redirect stands for that redirect (an absolute one
/// ends the walk). The lower layers are then walked along this path from
/// their roots, so they find it exactly as the lookup of `path` did.
fn redirect_to(st: &State, path: &LayerPath) -> Result<NameBuf> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut at = path.clone();
    while let (Some(parent), Some(name)) = (at.parent(), at.file_name()) {
        let redirect = match st.upper.lookup(&at)? {
            Some(Entry::Node(node)) => node.redirect,
            _ => None,
        };
        match redirect {
            Some(r) if r.is_absolute() => {
                names.push(crate::path::trim_slashes(r.as_bytes()).to_vec());
                break;
            }
            // A relative redirect is one valid name; anything else is
            // ignored, as lookups ignore it.
            Some(r) if crate::path::validate_name(&r).is_ok() => names.push(r.into_bytes()),
            _ => names.push(name.as_bytes().to_vec()),
        }
        at = parent;
    }
    names.reverse();
    Ok(NameBuf::from(
        [b"/".as_slice(), &names.join(&b'/')].concat(),
    ))
}

/// The parent and name for a new non-directory: `EEXIST` if the name is
/// taken (or there is none: the root, `..`), `ENOENT` for a free name with
/// a trailing slash (the kernel's `filename_create`).
fn new_name<'r>(r: &'r Resolved, op: Operation, user: &Name) -> Result<(&'r Cursor, &'r Name)> {
    match (&r.parent, &r.obj) {
        (Some((parent, name)), None) if !r.trailing_slash => Ok((parent, name)),
        (Some(_), None) => Err(Error::new(ErrorKind::NotFound, op, user)),
        _ => Err(Error::new(ErrorKind::AlreadyExists, op, user)),
    }
}

/// The error of `rmdir` on a path that names a directory without a name,
/// by the kind of its last component (as the kernel's `do_rmdir`).
fn no_name_to_remove(user: &Name, op: Operation) -> Result<Error> {
    let kind = match crate::path::UserPath::parse(user.as_bytes(), op)?.last_kind() {
        LastKind::Dot => ErrorKind::InvalidInput,
        LastKind::DotDot => ErrorKind::DirectoryNotEmpty,
        LastKind::Root | LastKind::Name => ErrorKind::Busy,
    };
    Ok(Error::new(kind, op, user))
}

fn check_xattr_len(name: &str, op: Operation, user: &Name) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Error::new(ErrorKind::OutOfRange, op, user)
            .with_detail(format!("invalid extended attribute name `{name}`")));
    }
    Ok(())
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

fn file_len(st: &State, path: &LayerPath) -> Result<u64> {
    match st.upper.lookup(path)? {
        Some(Entry::Node(node)) => Ok(node.meta.size),
        _ => Ok(0),
    }
}
