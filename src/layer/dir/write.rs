//! The write side of an upper [`DirLayer`]: metadata and xattrs applied
//! to what the work directory makes, and the [`LayerMut`] operations.

use super::*;

impl DirLayer {
    /// Applies owner, mode, xattrs and times of `meta` to `name` in `dir`
    /// (owner first: a change of owner clears setuid), on the object
    /// itself as a flatten does ([`node::set_path_fd_meta`]).
    ///
    /// Only what differs is changed: on an object already in place, a
    /// `chmod` or `chown` of the view is then one system call, so a crash
    /// cannot leave it half-applied (a needless `chown` would clear setuid
    /// until the `chmod` after it restored the bit).
    pub(super) fn apply_meta(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        meta: &Metadata,
    ) -> rustix::io::Result<()> {
        let obj = open_o_path(dir, name)?;
        let stat = |obj: &OwnedFd| {
            rustix::fs::statx(obj, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
        };
        let set = |want: FdMeta<'_>| {
            node::set_path_fd_meta(Steps::Counted, &obj, &want).map_err(|(_, e)| e)
        };
        let mut st = stat(&obj)?;
        let mut changed = false;
        if (st.stx_uid, st.stx_gid) != (meta.uid, meta.gid) {
            changed = true;
            set(FdMeta {
                owner: Some((meta.uid, meta.gid)),
                ..FdMeta::default()
            })?;
            // A change of owner may have cleared setuid: the mode is
            // compared with what it left.
            st = stat(&obj)?;
        }
        if !meta.file_type.is_symlink()
            && u32::from(st.stx_mode) & MODE_MASK != meta.mode & MODE_MASK
        {
            changed = true;
            set(FdMeta {
                mode: Some(meta.mode),
                ..FdMeta::default()
            })?;
        }
        // Read after the `chmod`, which may change an ACL's attribute.
        let (remove_xattrs, set_xattrs) = self.xattr_changes(raw_xattrs(&obj)?, &meta.xattrs);
        changed |= !remove_xattrs.is_empty() || !set_xattrs.is_empty();
        let same =
            |s: rustix::fs::StatxTimestamp, t: Timestamp| s.tv_sec == t.sec && s.tv_nsec == t.nsec;
        let same_times = same(st.stx_atime, meta.atime) && same(st.stx_mtime, meta.mtime);
        set(FdMeta {
            owner: None,
            mode: None,
            remove_xattrs,
            set_xattrs,
            times: (!same_times).then(|| node::timestamps(meta)),
        })?;
        if same_times && !changed && !same(st.stx_ctime, meta.ctime) {
            // A change of metadata that changes nothing (`chown` to the
            // same owner, `chmod` to the same mode) still changes the
            // ctime, as the kernel's `setattr` does; it cannot be set, so
            // it is made to change: a `chmod` to the same mode (a `chown`
            // would clear setuid), for a symlink a `chown`.
            let bump = if meta.file_type.is_symlink() {
                FdMeta {
                    owner: Some((st.stx_uid, st.stx_gid)),
                    ..FdMeta::default()
                }
            } else {
                FdMeta {
                    mode: Some(u32::from(st.stx_mode)),
                    ..FdMeta::default()
                }
            };
            set(bump)?;
        }
        Ok(())
    }

    /// What makes the user-visible xattrs of an object that has `raw`
    /// exactly `want`: the stored names to remove, and those to set.
    pub(super) fn xattr_changes<'w>(
        &self,
        raw: Vec<(String, Vec<u8>)>,
        want: &'w Xattrs,
    ) -> (Vec<String>, Vec<(String, &'w [u8])>) {
        let have = self.visible_xattrs(raw);
        let remove = have
            .iter()
            .filter(|(name, _)| want.get(name).is_none())
            .map(|(name, _)| self.stored_name(name))
            .collect();
        let set = want
            .iter()
            .filter(|(name, value)| have.get(name) != Some(*value))
            .map(|(name, value)| (self.stored_name(name), &value[..]))
            .collect();
        (remove, set)
    }

    /// Makes the user-visible xattrs of `obj` (an `O_PATH` descriptor,
    /// reached through `/proc/self/fd`) exactly `want`; whether anything
    /// changed.
    pub(super) fn apply_xattrs(&self, obj: &OwnedFd, want: &Xattrs) -> rustix::io::Result<bool> {
        let (remove, set) = self.xattr_changes(raw_xattrs(obj)?, want);
        let proc = proc_path(obj);
        for name in &remove {
            sys::removexattr(&proc, name.as_str())?;
        }
        for (name, value) in &set {
            sys::setxattr(&proc, name.as_str(), value, XattrFlags::empty())?;
        }
        Ok(!remove.is_empty() || !set.is_empty())
    }

    /// Makes `name` in `dir` an empty directory marked opaque (in the work
    /// directory, before it is moved into place).
    pub(super) fn mkdir_opaque(&self, dir: &OwnedFd, name: &[u8]) -> rustix::io::Result<()> {
        sys::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        self.set_overlay_attr(&fd, OverlayAttr::Opaque, Opaque::Yes.value())
    }

    pub(super) fn set_overlay_attr(
        &self,
        obj: &OwnedFd,
        attr: OverlayAttr,
        value: Option<&[u8]>,
    ) -> rustix::io::Result<()> {
        let proc = proc_path(obj);
        let name = self.options.xattrs.name(attr);
        match value {
            Some(v) => sys::setxattr(&proc, name.as_str(), v, XattrFlags::empty()),
            None => match sys::removexattr(&proc, name.as_str()) {
                Err(Errno::NODATA) => Ok(()),
                other => other,
            },
        }
    }

    /// Gives `fd`, a file just made (open for writing), the owner, mode,
    /// xattrs and times of `meta`, in that order: a change of owner clears
    /// setuid and file capabilities, a change of anything else the times.
    pub(super) fn apply_new_file_meta(
        &self,
        fd: &OwnedFd,
        meta: &Metadata,
    ) -> rustix::io::Result<()> {
        let st = rustix::fs::fstat(fd)?;
        let chown = (st.st_uid, st.st_gid) != (meta.uid, meta.gid);
        // A new file's attributes (inherited ones only) are not changed by
        // the `chown` before them: read once, up front, by the descriptor.
        let (remove_xattrs, set_xattrs) = self.xattr_changes(raw_xattrs_open(fd)?, &meta.xattrs);
        let want = FdMeta {
            owner: chown.then_some((meta.uid, meta.gid)),
            mode: (chown || st.st_mode & MODE_MASK != meta.mode & MODE_MASK).then_some(meta.mode),
            remove_xattrs,
            set_xattrs,
            times: Some(node::timestamps(meta)),
        };
        node::set_fd_meta(Steps::Counted, fd, &want).map_err(|(_, e)| e)
    }
}

impl LayerMut for DirLayer {
    fn create(&mut self, path: &LayerPath, meta: &Metadata, content: Content) -> Result<()> {
        if !content.fits(meta.file_type)
            || (matches!(meta.file_type, FileType::CharDevice | FileType::BlockDevice)
                && !crate::meta::rdev_fits_mknod(meta.rdev))
        {
            // A device number mknod would cut could land on 0/0: a whiteout.
            return Err(self.err(Errno::INVAL, path));
        }
        match content {
            Content::File(data) => {
                let durability = self.options.durability;
                self.create_file(path, meta, |fd| {
                    write_data(fd, &data)?;
                    if durability == Durability::Auto && !data.is_empty() {
                        sys::fsync(fd)?;
                    }
                    Ok(())
                })
            }
            Content::Dir => self.create_via_work(path, meta, |work, tmp| {
                sys::mkdirat(&work.fd, tmp, Mode::from_raw_mode(0o700))
            }),
            Content::Symlink(target) => self.create_via_work(path, meta, |work, tmp| {
                sys::symlinkat(target.as_bytes(), &work.fd, tmp)
            }),
            Content::Special => self.create_via_work(path, meta, |work, tmp| {
                node::make_special(Steps::Counted, &work.fd, tmp, meta)
            }),
        }
    }

    fn create_opaque_dir(&mut self, path: &LayerPath, meta: &Metadata) -> Result<()> {
        // Marked in the work directory, then exchanged with the whiteout.
        self.create_via_work(path, meta, |work, tmp| {
            self.mkdir_opaque(&work.fd, tmp.as_bytes())
        })
    }

    fn copy_file(
        &mut self,
        path: &LayerPath,
        meta: &Metadata,
        src: &dyn Layer,
        src_path: &LayerPath,
    ) -> Result<()> {
        let source = DataSource::open(src, src_path)?;
        self.create_file(path, meta, |fd| {
            source.copy_to(fd)?;
            self.sync(fd)
        })
    }

    fn fill_metacopy(
        &mut self,
        path: &LayerPath,
        src: &dyn Layer,
        src_path: &LayerPath,
    ) -> Result<()> {
        self.work(path)?;
        let Some(Entry::Node(node)) = self.lookup(path)? else {
            return Err(self.err(Errno::NOENT, path));
        };
        if !node.metacopy {
            return Err(self.err(Errno::INVAL, path));
        }
        let fd = self.open_regular_as(path, OFlags::WRONLY, true)?;
        // As the kernel: the data is written into the copy itself, and only
        // then is the mark removed, so a crash leaves a metadata-only copy
        // (whose hole is never read), never a file with half its data.
        DataSource::open(src, src_path)?
            .copy_to(&fd)
            .and_then(|()| self.sync(&fd))
            .map_err(|e| self.err(e, path))?;
        let obj = self
            .open_beneath(path, OFlags::PATH)
            .map_err(|e| self.err(e, path))?;
        self.set_overlay_attr(&obj, OverlayAttr::Metacopy, None)
            .map_err(|e| self.err(e, path))?;
        // Writing the data is no change the user made: the times stay.
        let (dir, name) = self.parent(path).map_err(|e| self.err(e, path))?;
        self.apply_meta(&dir, name, &node.meta)
            .map_err(|e| self.err(e, path))
    }

    fn write_at(&mut self, path: &LayerPath, offset: u64, data: &[u8]) -> Result<()> {
        self.work(path)?;
        let fd = self.open_regular(path, OFlags::WRONLY)?;
        sys::write_all_at(&fd, data, offset).map_err(|e| self.err(e, path))
    }

    fn set_len(&mut self, path: &LayerPath, len: u64) -> Result<()> {
        self.work(path)?;
        let fd = self.open_regular(path, OFlags::WRONLY)?;
        sys::ftruncate(&fd, len).map_err(|e| self.err(e, path))
    }

    fn set_metadata(&mut self, path: &LayerPath, meta: &Metadata) -> Result<()> {
        self.work(path)?;
        let current = match self.lookup(path)? {
            Some(Entry::Node(node)) => node.meta,
            _ => return Err(self.err(Errno::NOENT, path)),
        };
        let mut meta = meta.clone();
        meta.file_type = current.file_type;
        if path.is_root() {
            let fd = self
                .open_beneath(path, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|e| self.err(e, path))?;
            return self
                .apply_root_meta(&fd, &meta)
                .map_err(|e| self.err(e, path));
        }
        let (dir, name) = self.parent(path).map_err(|e| self.err(e, path))?;
        self.apply_meta(&dir, name, &meta)
            .map_err(|e| self.err(e, path))
    }

    fn remove(&mut self, path: &LayerPath) -> Result<()> {
        self.work(path)?;
        let (dir, name) = self.parent(path).map_err(|e| self.err(e, path))?;
        let flags = match self
            .target_state(&dir, name)
            .map_err(|e| self.err(e, path))?
        {
            Target::Missing => return Err(self.err(Errno::NOENT, path)),
            Target::Dir { empty: false } => return Err(self.err(Errno::NOTEMPTY, path)),
            Target::Dir { .. } => AtFlags::REMOVEDIR,
            _ => AtFlags::empty(),
        };
        self.keeping_times(&[&dir], || sys::unlinkat(&dir, name, flags))
            .map_err(|e| self.err(e, path))
    }

    fn whiteout(&mut self, path: &LayerPath) -> Result<()> {
        let work = self.work(path)?;
        let (dir, name) = self.parent(path).map_err(|e| self.err(e, path))?;
        let tmp = Self::temp_name(work);
        let made = match self.options.whiteouts {
            WhiteoutFormat::Device => sys::mknodat(
                &work.fd,
                &tmp,
                rustix::fs::FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            ),
            WhiteoutFormat::Xattr => Err(Errno::PERM),
        };
        let result = match made {
            Ok(()) => self.keeping_times(&[&dir], || self.install(work, &tmp, &dir, name)),
            Err(Errno::PERM) => {
                // Without CAP_MKNOD: the xattr whiteout, which the kernel
                // honours in a directory marked opaque="x".
                (|| {
                    let fd = rustix::fs::openat(
                        &work.fd,
                        &tmp,
                        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    self.set_overlay_attr(&fd, OverlayAttr::Whiteout, Some(b"y"))?;
                    let raw = raw_xattrs(&dir)?;
                    if self.overlay_attr(&raw, OverlayAttr::Opaque).is_none() {
                        self.set_overlay_attr(
                            &dir,
                            OverlayAttr::Opaque,
                            Opaque::XattrWhiteouts.value(),
                        )?;
                    }
                    self.keeping_times(&[&dir], || self.install(work, &tmp, &dir, name))
                })()
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = remove_tree_at(&work.fd, &tmp);
        }
        result.map_err(|e| self.err(e, path))
    }

    fn clear_dir(&mut self, path: &LayerPath) -> Result<()> {
        let work = self.work(path)?;
        let listing = self.read_dir(path)?;
        if listing
            .entries
            .iter()
            .any(|(_, k)| *k != EntryKind::Whiteout)
        {
            return Err(self.err(Errno::NOTEMPTY, path));
        }
        let Some(Entry::Node(node)) = self.lookup(path)? else {
            return Err(self.err(Errno::NOENT, path));
        };
        let (dir, name) = self.parent(path).map_err(|e| self.err(e, path))?;
        let tmp = Self::temp_name(work);
        // An empty opaque twin is made in the work directory and swapped in;
        // the old directory, whiteouts and all, is then removed there.
        let result = (|| {
            self.mkdir_opaque(&work.fd, tmp.as_bytes())?;
            self.apply_meta(&work.fd, tmp.as_bytes(), &node.meta)?;
            self.keeping_times(&[&dir], || {
                sys::renameat_with(&work.fd, &tmp, &dir, name, RenameFlags::EXCHANGE)
            })
        })();
        let _ = remove_tree_at(&work.fd, tmp.as_str());
        result.map_err(|e| self.err(e, path))
    }

    fn set_opaque(&mut self, path: &LayerPath, opaque: bool) -> Result<()> {
        self.work(path)?;
        let fd = self
            .open_beneath(path, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| self.err(e, path))?;
        let value = if opaque { Opaque::Yes } else { Opaque::No }.value();
        self.set_overlay_attr(&fd, OverlayAttr::Opaque, value)
            .map_err(|e| self.err(e, path))
    }

    fn set_redirect(&mut self, path: &LayerPath, redirect: Option<Redirect>) -> Result<()> {
        self.work(path)?;
        let fd = self
            .open_beneath(path, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| self.err(e, path))?;
        self.set_overlay_attr(
            &fd,
            OverlayAttr::Redirect,
            redirect.as_ref().map(Redirect::to_bytes).as_deref(),
        )
        .map_err(|e| self.err(e, path))
    }

    fn hard_link(&mut self, existing: &LayerPath, new: &LayerPath) -> Result<()> {
        let work = self.work(new)?;
        let (sdir, sname) = self.parent(existing).map_err(|e| self.err(e, existing))?;
        match self
            .target_state(&sdir, sname)
            .map_err(|e| self.err(e, existing))?
        {
            Target::Missing | Target::Whiteout => return Err(self.err(Errno::NOENT, existing)),
            Target::Dir { .. } => return Err(self.err(Errno::PERM, existing)),
            Target::Other => {}
        }
        let (ddir, dname) = self.parent(new).map_err(|e| self.err(e, new))?;
        match self
            .target_state(&ddir, dname)
            .map_err(|e| self.err(e, new))?
        {
            Target::Missing => self
                .keeping_times(&[&ddir], || {
                    sys::linkat(&sdir, sname, &ddir, dname, AtFlags::empty())
                })
                .map_err(|e| self.err(e, new)),
            Target::Whiteout => {
                let tmp = Self::temp_name(work);
                let result =
                    sys::linkat(&sdir, sname, &work.fd, &tmp, AtFlags::empty()).and_then(|()| {
                        self.keeping_times(&[&ddir], || sys::renameat(&work.fd, &tmp, &ddir, dname))
                    });
                if result.is_err() {
                    let _ = sys::unlinkat(&work.fd, &tmp, AtFlags::empty());
                }
                result.map_err(|e| self.err(e, new))
            }
            _ => Err(self.err(Errno::EXIST, new)),
        }
    }

    fn rename(&mut self, from: &LayerPath, to: &LayerPath) -> Result<()> {
        let work = self.work(to)?;
        if from == to {
            return match self.lookup(from)? {
                Some(_) => Ok(()),
                None => Err(self.err(Errno::NOENT, from)),
            };
        }
        if to.starts_with(from) {
            return Err(self.err(Errno::INVAL, to));
        }
        let (fdir, fname) = self.parent(from).map_err(|e| self.err(e, from))?;
        let from_is_dir = match self
            .target_state(&fdir, fname)
            .map_err(|e| self.err(e, from))?
        {
            Target::Missing => return Err(self.err(Errno::NOENT, from)),
            Target::Dir { .. } => true,
            _ => false,
        };
        let (tdir, tname) = self.parent(to).map_err(|e| self.err(e, to))?;
        let state = self
            .target_state(&tdir, tname)
            .map_err(|e| self.err(e, to))?;
        let result = self.keeping_times(&[&fdir, &tdir], || match state {
            Target::Missing => {
                sys::renameat_with(&fdir, fname, &tdir, tname, RenameFlags::NOREPLACE)
            }
            Target::Dir { empty: false } => Err(Errno::NOTEMPTY),
            Target::Dir { .. } if from_is_dir => sys::renameat(&fdir, fname, &tdir, tname),
            Target::Whiteout | Target::Other if !from_is_dir => {
                sys::renameat(&fdir, fname, &tdir, tname)
            }
            // The types differ: swap, then drop what was displaced (moved
            // through the work directory so the old name is never seen
            // holding it).
            _ => {
                let tmp = Self::temp_name(work);
                sys::renameat_with(&fdir, fname, &tdir, tname, RenameFlags::EXCHANGE)
                    .and_then(|()| sys::renameat(&fdir, fname, &work.fd, &tmp))
                    .and_then(|()| remove_tree_at(&work.fd, &tmp))
            }
        });
        result.map_err(|e| self.err(e, to))
    }

    fn rename_whiteout(&mut self, from: &LayerPath, to: &LayerPath) -> Result<()> {
        self.work(to)?;
        let (fdir, fname) = self.parent(from).map_err(|e| self.err(e, from))?;
        let (tdir, tname) = self.parent(to).map_err(|e| self.err(e, to))?;
        let from_is_dir = matches!(
            self.target_state(&fdir, fname)
                .map_err(|e| self.err(e, from))?,
            Target::Dir { .. }
        );
        let target = self
            .target_state(&tdir, tname)
            .map_err(|e| self.err(e, to))?;
        let device_whiteout = matches!(target, Target::Whiteout)
            && Self::statx_at(&tdir, tname).is_ok_and(|st| {
                FileType::from_mode(u32::from(st.stx_mode)) == Some(FileType::CharDevice)
            });
        if device_whiteout {
            // Swapping with the whiteout already at `to` moves the object
            // and leaves the whiteout at `from` in one step (files and
            // directories alike).
            return self
                .keeping_times(&[&fdir, &tdir], || {
                    sys::renameat_with(&fdir, fname, &tdir, tname, RenameFlags::EXCHANGE)
                })
                .map_err(|e| self.err(e, to));
        }
        // Where plain rename(2) would do, RENAME_WHITEOUT does it atomically
        // (it makes a device whiteout: not when xattr whiteouts were asked for).
        let atomic = self.options.whiteouts == WhiteoutFormat::Device
            && match target {
                Target::Missing => true,
                Target::Other => !from_is_dir,
                Target::Whiteout | Target::Dir { .. } => false,
            };
        if atomic {
            match self.keeping_times(&[&fdir, &tdir], || {
                sys::renameat_with(&fdir, fname, &tdir, tname, RenameFlags::WHITEOUT)
            }) {
                Ok(()) => return Ok(()),
                // Without the flag (or CAP_MKNOD), the two steps.
                Err(Errno::INVAL | Errno::PERM) => {}
                Err(e) => return Err(self.err(e, to)),
            }
        }
        self.rename(from, to)?;
        self.whiteout(from)
    }

    fn exchange(&mut self, a: &LayerPath, b: &LayerPath) -> Result<()> {
        self.work(a)?;
        if a == b {
            return Ok(());
        }
        if a.starts_with(b) || b.starts_with(a) {
            return Err(self.err(Errno::INVAL, b));
        }
        let (adir, aname) = self.parent(a).map_err(|e| self.err(e, a))?;
        let (bdir, bname) = self.parent(b).map_err(|e| self.err(e, b))?;
        self.keeping_times(&[&adir, &bdir], || {
            sys::renameat_with(&adir, aname, &bdir, bname, RenameFlags::EXCHANGE)
        })
        .map_err(|e| self.err(e, a))
    }

    fn open_object(&mut self, path: &LayerPath) -> Result<u64> {
        self.open_object_fd(path)
    }

    fn close_object(&mut self, id: u64) -> Result<()> {
        self.objects
            .remove(&id)
            .map(drop)
            .ok_or_else(|| object_error(ErrorKind::BadHandle, id))
    }

    fn object_node(&self, id: u64) -> Result<Node> {
        self.object_node_fd(id)
    }

    fn object_read_at(&self, id: u64, offset: u64, len: usize) -> Result<Bytes> {
        self.object_read_fd(id, offset, len)
    }

    fn object_write_at(&mut self, id: u64, offset: u64, data: &[u8]) -> Result<()> {
        let fd = self.object(id)?;
        sys::write_all_at(fd, data, offset).map_err(|e| errno_object(e, id))
    }

    fn object_set_len(&mut self, id: u64, len: u64) -> Result<()> {
        sys::ftruncate(self.object(id)?, len).map_err(|e| errno_object(e, id))
    }

    fn object_set_times(&mut self, id: u64, mtime: Timestamp, ctime: Timestamp) -> Result<()> {
        let _ = ctime;
        self.object_set_mtime(id, mtime)
    }

    fn object_sync(&self, id: u64, data_only: bool) -> Result<()> {
        let fd = self.object(id)?;
        if data_only {
            rustix::fs::fdatasync(fd)
        } else {
            rustix::fs::fsync(fd)
        }
        .map_err(|e| errno_object(e, id))
    }

    fn sync_dir(&self, path: &LayerPath) -> Result<()> {
        let fd = self
            .open_beneath(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC)
            .map_err(|e| self.err(e, path))?;
        self.sync(&fd).map_err(|e| self.err(e, path))
    }

    fn commit(&mut self) -> Result<Arc<dyn Layer>> {
        let root = LayerPath::root();
        let work = self.work(&root)?;
        let Some(commit_dir) = self.options.commit_dir.clone() else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                Operation::Commit,
                self.path.as_str(),
            )
            .with_detail("a DirLayer commits only with DirLayerOptions::commit_dir set"));
        };
        let upper = work.upper_path.clone();
        let io = |p: &Utf8Path, e: std::io::Error| Error::from_io(&e, Operation::Commit, p);
        let inside = |dir: &Utf8Path| {
            Error::new(ErrorKind::InvalidInput, Operation::Commit, dir.as_str())
                .with_detail("the commit directory cannot be inside the upper layer")
        };
        let absolute = match std::env::current_dir() {
            Ok(cwd) if commit_dir.is_relative() => {
                Utf8PathBuf::from_path_buf(cwd.join(&commit_dir))
                    .unwrap_or_else(|_| commit_dir.clone())
            }
            _ => commit_dir.clone(),
        };
        if absolute.starts_with(&upper) {
            return Err(inside(&commit_dir));
        }
        std::fs::create_dir_all(&commit_dir).map_err(|e| io(&commit_dir, e))?;
        let commit_dir = commit_dir
            .canonicalize_utf8()
            .map_err(|e| io(&commit_dir, e))?;
        if commit_dir.starts_with(&upper) {
            return Err(inside(&commit_dir));
        }
        // The directory at the upper's path must still be this layer's
        // (same device and inode): commit moves it by path.
        let here = rustix::fs::stat(upper.as_str()).map_err(|e| self.err(e, &root))?;
        let ours = rustix::fs::fstat(&self.root).map_err(|e| self.err(e, &root))?;
        if (here.st_dev, here.st_ino) != (ours.st_dev, ours.st_ino) {
            return Err(Error::new(ErrorKind::Io, Operation::Commit, upper.as_str())
                .with_detail("the upper directory was moved or replaced while in use"));
        }
        // The committed layer goes to `commit_dir/N`, the first free N. A
        // fresh directory made there, and locked, takes the upper's place in
        // one step (RENAME_EXCHANGE): the upper's path is never missing nor
        // unlocked, so no other opener can make or lock it in between, and
        // a failure leaves this layer as it was.
        let mut n = 0u64;
        let target = loop {
            let candidate = commit_dir.join(n.to_string());
            match sys::mkdirat(
                rustix::fs::CWD,
                candidate.as_str(),
                Mode::from_raw_mode(0o777),
            ) {
                Ok(()) => break candidate,
                Err(Errno::EXIST) => n += 1,
                Err(e) => return Err(errno_error(e, Operation::Commit, candidate.as_str())),
            }
        };
        let swapped = open_dir_path(&target).and_then(|fresh| {
            let lock = lock_dir(&fresh, &upper, "upperdir")?;
            sys::renameat_with(
                rustix::fs::CWD,
                upper.as_str(),
                rustix::fs::CWD,
                target.as_str(),
                RenameFlags::EXCHANGE,
            )
            .map_err(|e| errno_error(e, Operation::Commit, upper.as_str()))?;
            Ok((fresh, lock))
        });
        let (fresh, fresh_lock) = match swapped {
            Ok(swapped) => swapped,
            Err(e) => {
                // Still the fresh, empty directory: the exchange did not
                // happen.
                let _ = rustix::fs::unlinkat(
                    rustix::fs::CWD,
                    target.as_str(),
                    rustix::fs::AtFlags::REMOVEDIR,
                );
                return Err(e);
            }
        };
        // The root descriptor followed the old directory to `target`; the
        // fresh one is this layer's upper now, with its lock.
        if let Some(work) = self.work.as_mut() {
            work.locks[0] = fresh_lock;
        }
        let committed_root = std::mem::replace(&mut self.root, fresh);
        let committed = DirLayer {
            root: committed_root,
            path: target,
            work: None,
            options: self.options.clone(),
            lookups: Mutex::new(HashMap::new()),
            objects: HashMap::new(),
            next_object: 1,
        };
        Ok(Arc::new(committed))
    }
}

impl DirLayer {
    fn apply_root_meta(&self, fd: &OwnedFd, meta: &Metadata) -> rustix::io::Result<()> {
        let proc = proc_path(fd);
        sys::chownat(
            &self.root,
            proc.as_str(),
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::empty(),
        )?;
        sys::chmodat(
            &self.root,
            proc.as_str(),
            Mode::from_raw_mode(meta.mode & MODE_MASK),
            AtFlags::empty(),
        )?;
        self.apply_xattrs(fd, &meta.xattrs)?;
        sys::utimensat(
            &self.root,
            proc.as_str(),
            &node::timestamps(meta),
            AtFlags::empty(),
        )
    }
}

/// Where the data of a copy comes from: a file of another `DirLayer`
/// (copied inside the kernel), or the bytes any layer reads.
enum DataSource<'a> {
    File(OwnedFd),
    Layer(&'a dyn Layer, &'a LayerPath),
}

impl<'a> DataSource<'a> {
    fn open(src: &'a dyn Layer, src_path: &'a LayerPath) -> Result<DataSource<'a>> {
        Ok(match src.as_any().downcast_ref::<DirLayer>() {
            Some(dir) => DataSource::File(dir.open_regular(src_path, OFlags::RDONLY)?),
            None => DataSource::Layer(src, src_path),
        })
    }

    /// Writes the data into `fd` from its start.
    fn copy_to(&self, fd: &OwnedFd) -> rustix::io::Result<()> {
        match self {
            DataSource::File(from) => sys::copy_fd(from, fd),
            DataSource::Layer(src, src_path) => {
                let mut offset = 0u64;
                loop {
                    let chunk = src
                        .read_at(src_path, offset, 1 << 20)
                        .map_err(|e| Errno::from_raw_os_error(e.errno()))?;
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    sys::write_all_at(fd, &chunk, offset)?;
                    offset += chunk.len() as u64;
                }
            }
        }
    }
}

pub(super) fn write_data(fd: &OwnedFd, data: &FileData) -> rustix::io::Result<()> {
    let mut offset = 0u64;
    while offset < data.len() {
        let chunk = data
            .read_at(offset, 1 << 20)
            .map_err(|e| rustix::io::Errno::from_raw_os_error(e.errno()))?;
        sys::write_all_at(fd, &chunk, offset)?;
        offset += chunk.len() as u64;
    }
    Ok(())
}
