//! The operations of the merged-view contract, each as `MergedView`'s
//! method of the same name.

use super::*;

impl Model {
    /// As `MergedView::metadata` (follows symlinks); `ino`, times are 0.
    ///
    /// # Errors
    /// As `MergedView::metadata`.
    pub fn metadata(&self, path: impl PathLike) -> Result<Metadata> {
        self.metadata_inner(Name::new(path.path_bytes()))
    }

    fn metadata_inner(&self, path: &Name) -> Result<Metadata> {
        let (_, found) = self.object(path, Operation::Metadata, Follow::Always)?;
        Ok(self.metadata_of(found))
    }

    /// As `MergedView::symlink_metadata`.
    ///
    /// # Errors
    /// As `MergedView::symlink_metadata`.
    pub fn symlink_metadata(&self, path: impl PathLike) -> Result<Metadata> {
        self.symlink_metadata_inner(Name::new(path.path_bytes()))
    }

    fn symlink_metadata_inner(&self, path: &Name) -> Result<Metadata> {
        let (_, found) = self.object(path, Operation::Metadata, Follow::WithSlash)?;
        Ok(self.metadata_of(found))
    }

    /// As `MergedView::read`.
    ///
    /// # Errors
    /// As `MergedView::read`.
    pub fn read(&self, path: impl PathLike) -> Result<Bytes> {
        self.read_inner(Name::new(path.path_bytes()))
    }

    fn read_inner(&self, path: &Name) -> Result<Bytes> {
        self.file_data(path)?
            .to_bytes()
            .map_err(|e| e.reframe(Operation::Read, path))
    }

    /// As `MergedView::read_at`.
    ///
    /// # Errors
    /// As `MergedView::read_at`.
    pub fn read_at(&self, path: impl PathLike, offset: u64, len: usize) -> Result<Bytes> {
        self.read_at_inner(Name::new(path.path_bytes()), offset, len)
    }

    fn read_at_inner(&self, path: &Name, offset: u64, len: usize) -> Result<Bytes> {
        self.file_data(path)?
            .read_at(offset, len)
            .map_err(|e| e.reframe(Operation::Read, path))
    }

    /// As `MergedView::read_dir`: names and types, sorted by name.
    ///
    /// # Errors
    /// As `MergedView::read_dir`.
    pub fn read_dir(&self, path: impl PathLike) -> Result<Vec<(NameBuf, FileType)>> {
        self.read_dir_inner(Name::new(path.path_bytes()))
    }

    fn read_dir_inner(&self, path: &Name) -> Result<Vec<(NameBuf, FileType)>> {
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
        self.read_link_inner(Name::new(path.path_bytes()))
    }

    fn read_link_inner(&self, path: &Name) -> Result<NameBuf> {
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
        self.write_inner(Name::new(path.path_bytes()), data)
    }

    fn write_inner(&mut self, path: &Name, data: &[u8]) -> Result<()> {
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
        self.append_inner(Name::new(path.path_bytes()), data)
    }

    fn append_inner(&mut self, path: &Name, data: &[u8]) -> Result<()> {
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
        self.write_at_inner(Name::new(path.path_bytes()), offset, data)
    }

    fn write_at_inner(&mut self, path: &Name, offset: u64, data: &[u8]) -> Result<()> {
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
        self.set_len_inner(Name::new(path.path_bytes()), len)
    }

    fn set_len_inner(&mut self, path: &Name, len: u64) -> Result<()> {
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
        self.open_inner(Name::new(path.path_bytes()), options)
    }

    fn open_inner(&mut self, path: &Name, options: &OpenOptions) -> Result<()> {
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
        self.create_dir_inner(Name::new(path.path_bytes()))
    }

    fn create_dir_inner(&mut self, path: &Name) -> Result<()> {
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
        self.create_dir_all_inner(Name::new(path.path_bytes()))
    }

    fn create_dir_all_inner(&mut self, path: &Name) -> Result<()> {
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
        self.remove_file_inner(Name::new(path.path_bytes()))
    }

    fn remove_file_inner(&mut self, path: &Name) -> Result<()> {
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
        self.remove_dir_inner(Name::new(path.path_bytes()))
    }

    fn remove_dir_inner(&mut self, path: &Name) -> Result<()> {
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
        self.remove_dir_all_inner(Name::new(path.path_bytes()))
    }

    fn remove_dir_all_inner(&mut self, path: &Name) -> Result<()> {
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

    pub(super) fn rename_inner(&mut self, from: &Name, to: &Name, mode: RenameMode) -> Result<()> {
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
        self.symlink_inner(Name::new(target.path_bytes()), Name::new(link.path_bytes()))
    }

    fn symlink_inner(&mut self, target: &Name, link: &Name) -> Result<()> {
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

    pub(super) fn hard_link_inner(&mut self, original: &Name, link: &Name) -> Result<()> {
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
        self.set_permissions_inner(Name::new(path.path_bytes()), mode)
    }

    fn set_permissions_inner(&mut self, path: &Name, mode: u32) -> Result<()> {
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
        self.set_owner_inner(Name::new(path.path_bytes()), uid, gid)
    }

    fn set_owner_inner(&mut self, path: &Name, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
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
        self.set_times_inner(Name::new(path.path_bytes()), atime, mtime)
    }

    fn set_times_inner(
        &mut self,
        path: &Name,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
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
        self.get_xattr_inner(Name::new(path.path_bytes()), name)
    }

    fn get_xattr_inner(&self, path: &Name, name: &str) -> Result<Bytes> {
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
        self.set_xattr_inner(Name::new(path.path_bytes()), name, value)
    }

    fn set_xattr_inner(&mut self, path: &Name, name: &str, value: &[u8]) -> Result<()> {
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
        self.remove_xattr_inner(Name::new(path.path_bytes()), name)
    }

    fn remove_xattr_inner(&mut self, path: &Name, name: &str) -> Result<()> {
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
        self.list_xattr_inner(Name::new(path.path_bytes()))
    }

    fn list_xattr_inner(&self, path: &Name) -> Result<Vec<String>> {
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
        self.mknod_inner(Name::new(path.path_bytes()), file_type, mode, rdev)
    }

    fn mknod_inner(
        &mut self,
        path: &Name,
        file_type: FileType,
        mode: u32,
        rdev: u64,
    ) -> Result<()> {
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
