//! Making and removing names: directories, symlinks, device nodes, hard
//! links, files; whiteouts and opaque directories where a lower layer
//! holds the name.

use super::*;

impl MergedView {
    /// Metadata for a new object in `parent`: the view's owner (or the
    /// group of a setgid parent), `mode` less the umask, times now.
    pub(super) fn new_meta(
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
    pub(super) fn create_entry(
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
            let whiteout = st.lower_positive(parent, name)?;
            self.dropping_name(st, &path, Some(res), |st| {
                if whiteout {
                    st.upper.whiteout(&path)
                } else if res.in_upper() {
                    st.upper.remove(&path)
                } else {
                    Ok(())
                }
            })?;
            self.touch(st, &parent.path, true)?;
            st.refresh(&parent.path, name, res.file_type.is_dir())
        })
    }

    /// Runs `drop`, which takes name `path` (resolving to `res`, if
    /// anything is there) out of the upper: an unlink, or a rename over
    /// it. The file's other names see its ctime change, as a disk upper's
    /// do (the host's inode changes); a layer in memory has no clock, so
    /// the view sets it through an open object.
    pub(super) fn dropping_name(
        &self,
        st: &mut State,
        path: &LayerPath,
        res: Option<&Res>,
        drop: impl FnOnce(&mut State) -> Result<()>,
    ) -> Result<()> {
        let others = match res {
            Some(res) if res.in_upper() && !res.file_type.is_dir() => other_names_of(st, path)?,
            _ => None,
        };
        let dropped = drop(st);
        if let Some((id, mtime)) = others {
            // The ctime is the only thing at stake here: once the name is
            // gone, a failure to set it or to close the object must not
            // turn the unlink or rename into an error (the caller would
            // take the name as still there).
            if dropped.is_ok() {
                let _ = st.upper.object_set_times(id, mtime, self.now());
            }
            let _ = st.upper.close_object(id);
        }
        dropped
    }

    /// As [`std::fs::create_dir`]. A directory created where a deleted
    /// lower directory was is opaque: the old contents never come back.
    ///
    /// # Errors
    /// `EEXIST` if the name exists (even as a dangling symlink), `ENOENT`
    /// if the parent is missing, and the errors of resolution.
    pub fn create_dir(&self, path: impl PathLike) -> Result<()> {
        self.create_dir_inner(Name::new(path.path_bytes()))
    }

    fn create_dir_inner(&self, user: &Name) -> Result<()> {
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
        self.symlink_inner(Name::new(target.path_bytes()), Name::new(link.path_bytes()))
    }

    fn symlink_inner(&self, target: &Name, user: &Name) -> Result<()> {
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
        self.mknod_inner(Name::new(path.path_bytes()), file_type, mode, rdev)
    }

    fn mknod_inner(&self, user: &Name, file_type: FileType, mode: u32, rdev: u64) -> Result<()> {
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
        self.remove_file_inner(Name::new(path.path_bytes()))
    }

    fn remove_file_inner(&self, user: &Name) -> Result<()> {
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
        self.remove_dir_inner(Name::new(path.path_bytes()))
    }

    fn remove_dir_inner(&self, user: &Name) -> Result<()> {
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
        self.remove_dir_all_inner(Name::new(path.path_bytes()))
    }

    fn remove_dir_all_inner(&self, user: &Name) -> Result<()> {
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

/// An open object of upper file `path` and its mtime, if it has other
/// names (`nlink` over 1) and the upper keeps open objects: what
/// [`MergedView::dropping_name`] sets the ctime through once the name is
/// gone.
fn other_names_of(st: &mut State, path: &LayerPath) -> Result<Option<(u64, Timestamp)>> {
    let Some(Entry::Node(node)) = st.upper.lookup(path)? else {
        return Ok(None);
    };
    if node.meta.file_type != FileType::File || node.meta.nlink < 2 {
        return Ok(None);
    }
    // A layer without open objects (or a file it cannot open): nothing to
    // hold it by, and the removal must not fail for a time.
    Ok(st
        .upper
        .open_object(path)
        .ok()
        .map(|id| (id, node.meta.mtime)))
}
