//! Open handles that follow the inode, not the path: what a process gets
//! from `open(2)` on the kernel's overlayfs, and what a FUSE server keeps
//! for each `open` until `release`.
//!
//! # Design
//!
//! The view keeps a table of open handles, by number ([`HandleId`]); every
//! handle operation names its handle ([`MergedView::handle_read_at`],
//! [`MergedView::handle_write_at`], [`MergedView::handle_metadata`], ...).
//! A number is `Copy`, `Send` and `Sync` and borrows nothing, so a
//! multi-threaded FUSE server holding an `Arc<MergedView>` passes it as its
//! file handle (`fh`) and serves reads and writes from any thread; the
//! view's lock orders them as it orders every other operation. [`File`](super::File)
//! is the Rust-facing handle: a number, a position and a borrow of the
//! view, closed when dropped.
//!
//! What a handle holds, by where its regular file was when opened:
//!
//! - **In the upper layer** (every file opened for writing is, after its
//!   copy-up): the upper layer's open object ([`LayerMut::open_object`](crate::LayerMut::open_object)).
//!   A `MemLayer` keeps the node in its table of objects by inode number;
//!   a `DirLayer` keeps an open descriptor, as the kernel keeps the upper
//!   inode. Renames do not concern the handle; after the last name goes
//!   the file is an orphan (`nlink` 0) that still reads and writes, and
//!   its data is freed when its last handle closes.
//! - **In a lower layer** (opened for reading only): the lower layer and
//!   the file's path there (a lower layer never changes). When the file is
//!   later copied up — by a write through another handle, a rename, a
//!   `chmod` — the handle moves to the copy, as the kernel's overlayfs does
//!   since Linux 4.19 (checked on this machine's kernel by
//!   `tests/it/kernel/handles.rs`): its reads then see what is written
//!   through the other handle. If the lower file is deleted without a
//!   copy-up (a whiteout), the handle still reads it and `fstat` shows the
//!   lower file's link count, as the kernel's does. With hard links broken
//!   by copy-up (the default), only handles opened by the copied name
//!   move; with [`HardLinkCopyUp::Keep`]
//!   every handle on the lower inode does.
//! - **Directories, fifos, devices and sockets** (readable handles only:
//!   they hold no data), and files of an upper layer that keeps no open
//!   objects (a third-party [`LayerMut`](crate::LayerMut)) or that are metadata-only copies:
//!   the path the view resolved at open time, as before this module.
//!
//! [`MergedView::commit`] refuses (`EBUSY`) while any handle is open, as
//! the kernel refuses to unmount a busy overlay (the kernel's commit is an
//! unmount and a new mount with the old upper as the top lower layer).

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::{Entry, Layer};
use crate::merged::{HandleId, HardLinkCopyUp, OpenOptions};
use crate::meta::{FileType, Metadata};
use crate::path::{LayerPath, Name, NameBuf, PathLike};

use super::MergedView;
use super::resolve::{Follow, Res, State, UPPER};

/// One entry of the view's table of handles.
#[derive(Debug)]
pub(crate) struct OpenHandle {
    options: OpenOptions,
    file_type: FileType,
    /// The path it was opened by, as the view resolved it (absolute), for
    /// messages and path-held handles.
    path: NameBuf,
    target: Target,
}

/// What a handle holds (see the module docs).
#[derive(Debug, Clone)]
enum Target {
    /// An open object of the upper layer, by the number it gave.
    Upper(u64),
    /// A regular file of a lower layer, not (yet) copied up.
    Lower(Arc<LowerFile>),
    /// A merged path (absolute), resolved at every use.
    Path(NameBuf),
}

#[derive(Debug)]
struct LowerFile {
    /// The view's number of the layer (kept across commits).
    layer_id: u64,
    layer: Arc<dyn Layer>,
    path: LayerPath,
    ino: u64,
    /// Where its data is: itself, or for a metadata-only copy, the file it
    /// takes its data from.
    data: (Arc<dyn Layer>, LayerPath),
}

fn absolute(path: &LayerPath) -> NameBuf {
    NameBuf::from([b"/".as_slice(), path.as_bytes()].concat())
}

/// Whether a failed `open_object` means "hold this one by its path".
fn by_path_instead(e: &Error) -> bool {
    // `ReadOnly`: an upper opened without a work directory holds no
    // objects; its files are held by path, as before handles followed
    // the inode.
    matches!(
        e.kind(),
        ErrorKind::Unsupported | ErrorKind::NotPermitted | ErrorKind::ReadOnly
    )
}

fn bad_handle(h: HandleId, op: Operation) -> Error {
    Error::new(
        ErrorKind::BadHandle,
        op,
        format!("(handle {})", h.0).as_str(),
    )
    .with_detail("no such open handle")
}

impl OpenHandle {
    /// `EBADF` without the access `op` needs, `EISDIR` for a directory.
    fn check(&self, op: Operation) -> Result<()> {
        let allowed = match op {
            Operation::Read => self.options.read,
            _ => self.options.writes(),
        };
        if !allowed {
            return Err(Error::new(ErrorKind::BadHandle, op, &self.path));
        }
        if self.file_type.is_dir() {
            return Err(Error::new(ErrorKind::IsADirectory, op, &self.path));
        }
        Ok(())
    }
}

impl State {
    fn handle(&self, h: HandleId, op: Operation) -> Result<&OpenHandle> {
        self.handles.get(&h.0).ok_or_else(|| bad_handle(h, op))
    }

    /// What a new handle on the object `res` at merged `path` holds.
    fn target_for(&mut self, path: &LayerPath, res: &Res) -> Result<Target> {
        if res.file_type != FileType::File {
            return Ok(Target::Path(absolute(path)));
        }
        let (idx, lpath) = res.top();
        if idx == UPPER {
            return match self.upper.open_object(path) {
                Ok(id) => Ok(Target::Upper(id)),
                Err(e) if by_path_instead(&e) => Ok(Target::Path(absolute(path))),
                Err(e) => Err(e),
            };
        }
        let lpath = lpath.clone();
        let layer = self.lowers[idx - 1].clone();
        let Some(Entry::Node(node)) = layer.lookup(&lpath)? else {
            return Ok(Target::Path(absolute(path)));
        };
        let data = if node.metacopy {
            match self.metacopy_data(idx, &lpath, &node) {
                Ok((didx, dpath)) => (self.lowers[didx - 1].clone(), dpath),
                // Not followed, or its data missing: every read says so.
                Err(_) => return Ok(Target::Path(absolute(path))),
            }
        } else {
            (layer.clone(), lpath.clone())
        };
        Ok(Target::Lower(Arc::new(LowerFile {
            layer_id: self.layer_ids[idx],
            layer,
            path: lpath,
            ino: node.meta.ino,
            data,
        })))
    }

    /// After regular file `lpath` of lower layer `idx` (inode `ino`) was
    /// copied up to `path`: the handles on it move to the copy (with
    /// `hard_links` kept, those on every name of the inode).
    pub(crate) fn follow_copy_up(
        &mut self,
        idx: usize,
        lpath: &LayerPath,
        ino: u64,
        hard_links: HardLinkCopyUp,
        path: &LayerPath,
    ) -> Result<()> {
        let layer_id = self.layer_ids[idx];
        let moving: Vec<u64> = self
            .handles
            .iter()
            .filter(|(_, h)| match &h.target {
                Target::Lower(l) => {
                    l.layer_id == layer_id
                        && (l.path == *lpath
                            || (hard_links == HardLinkCopyUp::Keep && l.ino == ino))
                }
                _ => false,
            })
            .map(|(n, _)| *n)
            .collect();
        for n in moving {
            let target = match self.upper.open_object(path) {
                Ok(id) => Target::Upper(id),
                Err(e) if by_path_instead(&e) => Target::Path(absolute(path)),
                Err(e) => return Err(e),
            };
            if let Some(h) = self.handles.get_mut(&n) {
                h.target = target;
            }
        }
        Ok(())
    }
}

impl MergedView {
    /// Opens `path` as [`MergedView::open`] does (same options, same
    /// effects: create, truncate, copy-up) and keeps the open file in the
    /// view's table of handles until [`MergedView::close_handle`]. The
    /// handle follows the file, not the path: see the [module
    /// docs](crate::view::handle).
    ///
    /// # Errors
    /// As [`MergedView::open`].
    pub fn open_handle(&self, path: impl PathLike, options: &OpenOptions) -> Result<HandleId> {
        self.open_handle_at(Name::new(path.path_bytes()), options)
            .map(|(h, _)| h)
    }

    /// As [`MergedView::open_handle`]; also returns the path opened.
    pub(super) fn open_handle_at(
        &self,
        user: &Name,
        options: &OpenOptions,
    ) -> Result<(HandleId, LayerPath)> {
        let op = Operation::Open;
        if !options.is_valid() {
            return Err(Error::new(ErrorKind::InvalidInput, op, user)
                .with_detail("invalid combination of open options"));
        }
        // An open for reading changes nothing anyone sees: the readers'
        // memos stay.
        let mut st = if options.writes() {
            self.write_state()
        } else {
            self.table_state()
        };
        let (path, file_type) = if options.writes() {
            self.open_for_write(&mut st, user, options)?
        } else {
            let r = st.resolve(user, op, Follow::Always)?;
            let file_type = r.existing(op, user)?.file_type;
            (r.path, file_type)
        };
        let res = st
            .res_at(&path)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, op, user))?;
        let target = st
            .target_for(&path, &res)
            .map_err(|e| e.reframe(op, user))?;
        let n = st.next_handle;
        st.next_handle += 1;
        st.handles.insert(
            n,
            OpenHandle {
                options: *options,
                file_type,
                path: absolute(&path),
                target,
            },
        );
        Ok((HandleId(n), path))
    }

    /// Closes handle `h`; the last close of an orphan frees its data.
    ///
    /// # Errors
    /// `EBADF` if `h` is not open; errors of the upper layer's storage.
    pub fn close_handle(&self, h: HandleId) -> Result<()> {
        let mut st = self.table_state();
        let handle = st
            .handles
            .remove(&h.0)
            .ok_or_else(|| bad_handle(h, Operation::Close))?;
        if let Target::Upper(id) = handle.target {
            st.upper
                .close_object(id)
                .map_err(|e| e.reframe(Operation::Close, &handle.path))?;
        }
        Ok(())
    }

    /// The open handles, in the order they were opened.
    #[must_use]
    pub fn open_handles(&self) -> Vec<HandleId> {
        self.read_state()
            .handles
            .keys()
            .map(|n| HandleId(*n))
            .collect()
    }

    /// Up to `len` bytes from `offset` of the file of handle `h` (fewer at
    /// its end), as `pread`.
    ///
    /// # Errors
    /// `EBADF` if `h` is not open or not open for reading, `EISDIR` for a
    /// directory, `EINVAL` for a fifo, device or socket.
    pub fn handle_read_at(&self, h: HandleId, offset: u64, len: usize) -> Result<Bytes> {
        let op = Operation::Read;
        let st = self.read_state();
        let handle = st.handle(h, op)?;
        handle.check(op)?;
        let read = match &handle.target {
            Target::Upper(id) => st.upper.object_read_at(*id, offset, len),
            Target::Lower(l) => l.data.0.read_at(&l.data.1, offset, len),
            Target::Path(p) => {
                let p = p.clone();
                drop(st);
                return self.read_at(&p, offset, len);
            }
        };
        read.map_err(|e| e.reframe(op, &handle.path))
    }

    /// Writes `data` at `offset` of the file of handle `h` (at its end for
    /// a handle opened to append), as `pwrite`; returns the offset just
    /// past what was written.
    ///
    /// # Errors
    /// `EBADF` if `h` is not open or not open for writing; `EFBIG` past
    /// the largest size; errors of the upper layer's storage.
    pub fn handle_write_at(&self, h: HandleId, offset: u64, data: &[u8]) -> Result<u64> {
        let op = Operation::Write;
        let mut st = self.write_state();
        let handle = st.handle(h, op)?;
        handle.check(op)?;
        let (target, append, path) = (
            handle.target.clone(),
            handle.options.append,
            handle.path.clone(),
        );
        match target {
            Target::Upper(id) => {
                let r = (|| {
                    let at = if append {
                        st.upper.object_node(id)?.meta.size
                    } else {
                        offset
                    };
                    if !data.is_empty() {
                        st.upper.object_write_at(id, at, data)?;
                        let now = self.now();
                        st.upper.object_set_times(id, now, now)?;
                    }
                    Ok(at + data.len() as u64)
                })();
                r.map_err(|e: Error| e.reframe(op, &path))
            }
            Target::Path(p) => {
                drop(st);
                if append {
                    self.append_existing(&p, data)
                } else {
                    self.write_at(&p, offset, data)?;
                    Ok(offset + data.len() as u64)
                }
            }
            // A handle for writing holds a copied-up file.
            Target::Lower(_) => Err(Error::new(ErrorKind::BadHandle, op, &path)),
        }
    }

    /// Truncates or extends the file of handle `h`, as `ftruncate`.
    ///
    /// # Errors
    /// `EBADF` if `h` is not open; `EINVAL` if it is not open for writing
    /// (as `ftruncate`); `EFBIG` past the largest size.
    pub fn handle_set_len(&self, h: HandleId, len: u64) -> Result<()> {
        let op = Operation::SetLen;
        let mut st = self.write_state();
        let handle = st.handle(h, op)?;
        if !handle.options.writes() {
            return Err(Error::new(ErrorKind::InvalidInput, op, &handle.path)
                .with_detail("the file is not open for writing"));
        }
        let (target, path) = (handle.target.clone(), handle.path.clone());
        match target {
            Target::Upper(id) => {
                let now = self.now();
                st.upper
                    .object_set_len(id, len)
                    .and_then(|()| st.upper.object_set_times(id, now, now))
                    .map_err(|e| e.reframe(op, &path))
            }
            Target::Path(p) => {
                drop(st);
                self.set_len(&p, len)
            }
            Target::Lower(_) => Err(Error::new(ErrorKind::BadHandle, op, &path)),
        }
    }

    /// The metadata of the file of handle `h`, as `fstat`: `nlink` 0 once
    /// the last name of an upper file is gone.
    ///
    /// # Errors
    /// `EBADF` if `h` is not open; for a handle held by its path (see the
    /// module docs), the errors of [`MergedView::symlink_metadata`].
    pub fn handle_metadata(&self, h: HandleId) -> Result<Metadata> {
        let op = Operation::Metadata;
        let st = self.read_state();
        let handle = st.handle(h, op)?;
        let node = match &handle.target {
            Target::Upper(id) => st.upper.object_node(*id).map(|n| (UPPER, n)),
            Target::Lower(l) => match l.layer.lookup(&l.path) {
                Ok(Some(Entry::Node(n))) => {
                    let idx = st
                        .layer_ids
                        .iter()
                        .position(|id| *id == l.layer_id)
                        .expect("a lower layer stays in the view");
                    Ok((idx, n))
                }
                Ok(_) => Err(Error::new(ErrorKind::Io, op, &handle.path)
                    .with_detail("a lower layer changed while the view was using it")),
                Err(e) => Err(e),
            },
            Target::Path(p) => {
                let p = p.clone();
                drop(st);
                return self.symlink_metadata(&p);
            }
        };
        let (idx, node) = node.map_err(|e| e.reframe(op, &handle.path))?;
        let mut meta = node.meta;
        meta.ino = st.merged_ino(idx, meta.ino);
        Ok(meta)
    }

    /// Makes what was written through handle `h` durable (with
    /// `data_only`, its data and size only), as `fsync`/`fdatasync`; only a
    /// layer on disk has anything to do.
    ///
    /// # Errors
    /// `EBADF` if `h` is not open; errors of the upper layer's storage.
    pub fn handle_sync(&self, h: HandleId, data_only: bool) -> Result<()> {
        let op = Operation::Sync;
        let st = self.read_state();
        let handle = st.handle(h, op)?;
        match &handle.target {
            Target::Upper(id) => st
                .upper
                .object_sync(*id, data_only)
                .map_err(|e| e.reframe(op, &handle.path)),
            Target::Lower(_) | Target::Path(_) => Ok(()),
        }
    }

    /// Makes the entries of directory `path` durable, as `fsync` of a
    /// directory on the kernel's overlayfs: the upper's directory is
    /// synced; a directory only below has nothing to sync.
    ///
    /// # Errors
    /// `ENOENT`, `ENOTDIR` and the errors of resolution; errors of the
    /// upper layer's storage.
    pub fn sync_dir(&self, path: impl PathLike) -> Result<()> {
        self.sync_dir_inner(Name::new(path.path_bytes()))
    }

    fn sync_dir_inner(&self, user: &Name) -> Result<()> {
        let op = Operation::Sync;
        let st = self.read_state();
        let r = st.resolve(user, op, Follow::Always)?;
        let res = r.existing(op, user)?;
        if !res.file_type.is_dir() {
            return Err(Error::new(ErrorKind::NotADirectory, op, user));
        }
        if !res.in_upper() {
            return Ok(());
        }
        st.upper.sync_dir(&r.path).map_err(|e| e.reframe(op, user))
    }
}
