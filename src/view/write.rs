//! Writing file contents: open for writing (with the copy-up it needs),
//! write, append, truncate.

use super::*;

impl MergedView {
    /// As [`std::fs::write`]: creates or truncates, then writes. An existing
    /// lower file is copied up first.
    ///
    /// # Errors
    /// As [`MergedView::open`] with write, create and truncate.
    pub fn write(&self, path: impl PathLike, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_inner(Name::new(path.path_bytes()), data.as_ref())
    }

    fn write_inner(&self, user: &Name, data: &[u8]) -> Result<()> {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        let mut st = self.write_state();
        let (path, _) = self.open_for_write(&mut st, user, &opts)?;
        self.write_data(&mut st, &path, user, 0, data)
    }

    /// Appends to a file, creating it if missing (as `>>` in a shell).
    ///
    /// # Errors
    /// As [`MergedView::open`] with append and create.
    pub fn append(&self, path: impl PathLike, data: impl AsRef<[u8]>) -> Result<()> {
        self.append_inner(Name::new(path.path_bytes()), data.as_ref())
    }

    fn append_inner(&self, user: &Name, data: &[u8]) -> Result<()> {
        let mut opts = OpenOptions::new();
        opts.append(true).create(true);
        let mut st = self.write_state();
        let (path, _) = self.open_for_write(&mut st, user, &opts)?;
        let len = file_len(&st, &path)?;
        self.write_data(&mut st, &path, user, len, data)
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
        self.write_at_inner(Name::new(path.path_bytes()), offset, data.as_ref())
    }

    fn write_at_inner(&self, user: &Name, offset: u64, data: &[u8]) -> Result<()> {
        let mut opts = OpenOptions::new();
        opts.write(true);
        let mut st = self.write_state();
        let (path, _) = self.open_for_write(&mut st, user, &opts)?;
        self.write_data(&mut st, &path, user, offset, data)
    }

    /// Truncates or extends a file (as `truncate(2)`), after a copy-up.
    ///
    /// # Errors
    /// `EISDIR` for a directory, `EINVAL` for other non-regular files, and
    /// the errors of resolution.
    pub fn set_len(&self, path: impl PathLike, len: u64) -> Result<()> {
        self.set_len_inner(Name::new(path.path_bytes()), len)
    }

    fn set_len_inner(&self, user: &Name, len: u64) -> Result<()> {
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
    pub(super) fn open_for_write(
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
    pub(super) fn touch(&self, st: &mut State, path: &LayerPath, modified: bool) -> Result<()> {
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
}

fn file_len(st: &State, path: &LayerPath) -> Result<u64> {
    match st.upper.lookup(path)? {
        Some(Entry::Node(node)) => Ok(node.meta.size),
        _ => Ok(0),
    }
}
