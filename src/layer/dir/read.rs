//! The read side of a [`DirLayer`]: lookups, listings and file reads, with
//! whiteouts, opaque directories and redirects recognised as the kernel
//! writes them.

use super::*;

impl DirLayer {
    /// Whether directory `fd` holds xattr whiteouts (`opaque="x"`).
    pub(super) fn has_xwhiteouts(&self, fd: &OwnedFd) -> rustix::io::Result<bool> {
        let raw = raw_xattrs(fd)?;
        Ok(
            Opaque::parse(self.options.xattrs.find(&raw, OverlayAttr::Opaque))
                == Opaque::XattrWhiteouts,
        )
    }

    pub(super) fn is_xwhiteout(&self, fd: &OwnedFd) -> rustix::io::Result<bool> {
        let raw = raw_xattrs(fd)?;
        Ok(self.overlay_attr(&raw, OverlayAttr::Whiteout).is_some())
    }

    pub(super) fn lookup_raw(&self, path: &LayerPath) -> rustix::io::Result<Option<Entry>> {
        // One `O_PATH` open of the object itself (a symlink is not
        // followed): its stat and xattrs come through it.
        let obj = match self.open_beneath(path, OFlags::PATH) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = rustix::fs::statx(&obj, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
        let mode = u32::from(st.stx_mode);
        let file_type = FileType::from_mode(mode).ok_or(Errno::INVAL)?;
        if file_type == FileType::CharDevice
            && is_whiteout_device(st.stx_rdev_major, st.stx_rdev_minor)
        {
            return Ok(Some(Entry::Whiteout));
        }
        let raw = raw_xattrs(&obj)?;
        if file_type == FileType::File
            && st.stx_size == 0
            && !path.is_root()
            && self.overlay_attr(&raw, OverlayAttr::Whiteout).is_some()
            && self.has_xwhiteouts(&self.parent(path)?.0)?
        {
            return Ok(Some(Entry::Whiteout));
        }
        let opaque = file_type.is_dir()
            && Opaque::parse(self.options.xattrs.find(&raw, OverlayAttr::Opaque)) == Opaque::Yes;
        let metacopy =
            file_type == FileType::File && self.overlay_attr(&raw, OverlayAttr::Metacopy).is_some();
        let redirect = if file_type.is_dir() || metacopy {
            self.overlay_attr(&raw, OverlayAttr::Redirect)
                .map(Redirect::parse)
        } else {
            None
        };
        Ok(Some(Entry::Node(Node {
            meta: self.meta_of(&st, file_type, raw),
            opaque,
            redirect,
            metacopy,
        })))
    }

    /// The metadata of an object from its `statx` and raw xattrs.
    pub(super) fn meta_of(
        &self,
        st: &rustix::fs::Statx,
        file_type: FileType,
        raw: Vec<(String, Vec<u8>)>,
    ) -> Metadata {
        let ts = |t: rustix::fs::StatxTimestamp| Timestamp::new(t.tv_sec, t.tv_nsec);
        Metadata {
            file_type,
            mode: u32::from(st.stx_mode) & MODE_MASK,
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            nlink: u64::from(st.stx_nlink),
            rdev: if matches!(file_type, FileType::CharDevice | FileType::BlockDevice) {
                makedev(st.stx_rdev_major, st.stx_rdev_minor)
            } else {
                0
            },
            atime: ts(st.stx_atime),
            mtime: ts(st.stx_mtime),
            ctime: ts(st.stx_ctime),
            ino: st.stx_ino,
            xattrs: self.visible_xattrs(raw),
        }
    }

    pub(super) fn read_dir_raw(&self, path: &LayerPath) -> rustix::io::Result<DirListing> {
        let fd = without_atime(OFlags::RDONLY | OFlags::DIRECTORY, |flags| {
            self.open_beneath(path, flags)
        })?;
        let dir_raw = raw_xattrs_open(&fd)?;
        let opaque_attr = Opaque::parse(self.options.xattrs.find(&dir_raw, OverlayAttr::Opaque));
        let xwhiteouts = opaque_attr == Opaque::XattrWhiteouts;
        let mut entries = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let raw_name = entry.file_name().to_bytes();
            if raw_name == b"." || raw_name == b".." {
                continue;
            }
            let name = raw_name;
            // The type from the directory entry is enough, except where a
            // whiteout may hide (a character device, an empty file in an
            // opaque=x directory) or the filesystem does not say.
            let from_dirent = match entry.file_type() {
                rustix::fs::FileType::Directory => Some(FileType::Dir),
                rustix::fs::FileType::Symlink => Some(FileType::Symlink),
                rustix::fs::FileType::Fifo => Some(FileType::Fifo),
                rustix::fs::FileType::Socket => Some(FileType::Socket),
                rustix::fs::FileType::BlockDevice => Some(FileType::BlockDevice),
                rustix::fs::FileType::RegularFile if !xwhiteouts => Some(FileType::File),
                _ => None,
            };
            if let Some(file_type) = from_dirent {
                entries.push((NameBuf::from(name), EntryKind::Node(file_type)));
                continue;
            }
            let st = Self::statx_at(&fd, name)?;
            let file_type = FileType::from_mode(u32::from(st.stx_mode)).ok_or(Errno::INVAL)?;
            let whiteout = match file_type {
                FileType::CharDevice => is_whiteout_device(st.stx_rdev_major, st.stx_rdev_minor),
                FileType::File if xwhiteouts && st.stx_size == 0 => {
                    let obj = open_o_path(&fd, name)?;
                    self.is_xwhiteout(&obj)?
                }
                _ => false,
            };
            let kind = if whiteout {
                EntryKind::Whiteout
            } else {
                EntryKind::Node(file_type)
            };
            entries.push((NameBuf::from(name), kind));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(DirListing {
            opaque: opaque_attr == Opaque::Yes,
            entries,
        })
    }

    /// Opens regular file `path` for reading or writing (never a fifo or
    /// device: the type is checked first). A metadata-only copy is refused
    /// (`EPERM`): its bytes on disk are a hole, not its data.
    pub(super) fn open_regular(&self, path: &LayerPath, flags: OFlags) -> Result<OwnedFd> {
        self.open_regular_as(path, flags, false)
    }

    pub(super) fn open_regular_as(
        &self,
        path: &LayerPath,
        flags: OFlags,
        metacopy: bool,
    ) -> Result<OwnedFd> {
        let fd = self
            .open_beneath(path, OFlags::PATH)
            // Only a component on the way can fail to be a directory: the
            // path does not exist in this layer.
            .map_err(|e| match e {
                Errno::NOTDIR => self.err(Errno::NOENT, path),
                e => self.err(e, path),
            })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.err(e, path))?;
        match FileType::from_mode(st.st_mode) {
            Some(FileType::File)
                if st.st_size == 0 && self.lookup(path)? == Some(Entry::Whiteout) =>
            {
                return Err(self.err(Errno::NOENT, path));
            }
            // A metadata-only copy is a hole of its size (no blocks).
            Some(FileType::File)
                if st.st_blocks == 0
                    && st.st_size > 0
                    && self
                        .overlay_attr(
                            &raw_xattrs(&fd).map_err(|e| self.err(e, path))?,
                            OverlayAttr::Metacopy,
                        )
                        .is_some()
                        != metacopy =>
            {
                return Err(if metacopy {
                    self.err(Errno::INVAL, path)
                } else {
                    Error::new(ErrorKind::NotPermitted, Operation::Layer, path.as_name())
                        .with_layer(self.path.as_str())
                        .with_detail(METACOPY_DATA)
                });
            }
            Some(FileType::File) => {}
            Some(FileType::Dir) => return Err(self.err(Errno::ISDIR, path)),
            Some(FileType::CharDevice) if st.st_rdev == 0 => {
                return Err(self.err(Errno::NOENT, path));
            }
            _ => return Err(self.err(Errno::INVAL, path)),
        }
        let proc = proc_path(&fd);
        without_atime(flags | OFlags::CLOEXEC, |flags| {
            rustix::fs::openat(&self.root, proc.as_str(), flags, Mode::empty())
        })
        .map_err(|e| self.err(e, path))
    }
}

impl Layer for DirLayer {
    fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>> {
        if self.work.is_some() {
            return self.lookup_raw(path).map_err(|e| self.err(e, path));
        }
        let cache = || self.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hit) = cache().get(path) {
            return Ok(hit.clone());
        }
        let entry = self.lookup_raw(path).map_err(|e| self.err(e, path))?;
        let mut cache = cache();
        if cache.len() >= LOOKUP_CACHE_MAX {
            cache.clear();
        }
        cache.insert(path.clone(), entry.clone());
        Ok(entry)
    }

    fn read_dir(&self, path: &LayerPath) -> Result<DirListing> {
        self.read_dir_raw(path).map_err(|e| match e {
            // Below a non-directory nothing exists; a whiteout is no
            // directory either.
            Errno::NOTDIR => match self.lookup_raw(path) {
                Ok(Some(Entry::Node(_))) => self.err(Errno::NOTDIR, path),
                _ => self.err(Errno::NOENT, path),
            },
            e => self.err(e, path),
        })
    }

    fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<Bytes> {
        let fd = self.open_regular(path, OFlags::RDONLY)?;
        super::objects::read_fd_at(&fd, offset, len).map_err(|e| self.err(e, path))
    }

    fn read_link(&self, path: &LayerPath) -> Result<NameBuf> {
        if path.is_root() {
            return Err(self.err(Errno::INVAL, path));
        }
        let (dir, name) = self.parent(path).map_err(|e| match e {
            Errno::NOTDIR => self.err(Errno::NOENT, path),
            e => self.err(e, path),
        })?;
        let target = rustix::fs::readlinkat(&dir, name, Vec::new()).map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => self.err(Errno::NOENT, path),
            Errno::INVAL if matches!(self.lookup_raw(path), Ok(Some(Entry::Whiteout))) => {
                self.err(Errno::NOENT, path)
            }
            _ => self.err(Errno::INVAL, path),
        })?;
        Ok(NameBuf::from(target.into_bytes()))
    }

    fn describe(&self) -> String {
        self.path.to_string()
    }
}

/// Why a metadata-only copy's bytes are not read from its own layer.
pub(super) const METACOPY_DATA: &str =
    "a metadata-only copy (overlay.metacopy): its data is in a lower layer";

/// Opens with `open(flags | O_NOATIME)`, or with `open(flags)` where the
/// caller may not use `O_NOATIME` (neither the owner nor `CAP_FOWNER`).
///
/// Reading a layer never changes an atime: the kernel opens the files of
/// its layers `O_NOATIME` too, and the view behaves as a `noatime` mount.
/// A symlink is the exception: no system call reads its target without
/// touching its atime (the filesystem's own `relatime` rules then apply).
pub(super) fn without_atime(
    flags: OFlags,
    open: impl Fn(OFlags) -> rustix::io::Result<OwnedFd>,
) -> rustix::io::Result<OwnedFd> {
    match open(flags | OFlags::NOATIME) {
        Err(Errno::PERM) => open(flags),
        other => other,
    }
}
