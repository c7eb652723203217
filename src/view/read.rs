//! Reading: metadata, contents, symlinks and canonical paths.

use super::*;

impl MergedView {
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

    pub(super) fn stat(&self, user: &Name, op: Operation, follow: Follow) -> Result<Metadata> {
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

    /// As [`MergedView::symlink_metadata`], and whether the object is
    /// below only (in a lower layer, not copied up), in one look (the
    /// mount gives each name of a lower file with several names a node of
    /// its own).
    ///
    /// # Errors
    /// As [`MergedView::metadata`].
    #[cfg(feature = "mount")]
    pub(crate) fn symlink_metadata_below(&self, path: impl PathLike) -> Result<(Metadata, bool)> {
        let user = Name::new(path.path_bytes());
        let op = Operation::Metadata;
        let st = self.read_state();
        let r = st.resolve(user, op, Follow::OnSlash)?;
        let res = r.existing(op, user)?;
        Ok((meta_of(&st, res)?, !res.in_upper()))
    }

    /// As [`std::fs::exists`]: `Ok(false)` when the path does not exist.
    ///
    /// # Errors
    /// Errors other than `ENOENT` (`ENOTDIR`, `ELOOP`, ...).
    pub fn exists(&self, path: impl PathLike) -> Result<bool> {
        self.exists_inner(Name::new(path.path_bytes()))
    }

    fn exists_inner(&self, user: &Name) -> Result<bool> {
        match self.metadata(user) {
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
        self.read_at_inner(Name::new(path.path_bytes()), 0, usize::MAX)
    }

    /// As [`std::fs::read_to_string`].
    ///
    /// # Errors
    /// As [`MergedView::read`], and `EINVAL` if the contents are not UTF-8.
    pub fn read_to_string(&self, path: impl PathLike) -> Result<String> {
        self.read_to_string_inner(Name::new(path.path_bytes()))
    }

    fn read_to_string_inner(&self, user: &Name) -> Result<String> {
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
        self.read_at_inner(Name::new(path.path_bytes()), offset, len)
    }

    fn read_at_inner(&self, user: &Name, offset: u64, len: usize) -> Result<Bytes> {
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
        self.read_link_inner(Name::new(path.path_bytes()))
    }

    fn read_link_inner(&self, user: &Name) -> Result<NameBuf> {
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
        self.canonicalize_inner(Name::new(path.path_bytes()))
    }

    fn canonicalize_inner(&self, user: &Name) -> Result<LayerPath> {
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
}
