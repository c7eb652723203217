//! The work-directory protocol of an upper [`DirLayer`], as the kernel's:
//! every change is prepared in `workdir/work` and moved into place with one
//! `rename` (or, for a regular file, an `O_TMPFILE` linked in when
//! complete), so a crash leaves the old state or the new one; leftovers are
//! removed when the layer opens; a directory's times are kept across a
//! change of its entries.

use super::*;

/// The writable side of an upper layer: its work directory.
#[derive(Debug)]
pub(super) struct Work {
    /// `workdir/work`.
    pub(super) fd: OwnedFd,
    /// `workdir` itself: no lower layer may be it or lie below it.
    pub(super) root: OwnedFd,
    pub(super) upper_path: Utf8PathBuf,
    pub(super) counter: AtomicU64,
    /// The exclusive `flock`s on the upper and the work directory, held
    /// while the layer lives (see [`lock_dir`]; `None` where the
    /// filesystem has no `flock`).
    pub(super) locks: [Option<OwnedFd>; 2],
}

impl DirLayer {
    pub(super) fn work(&self, path: &LayerPath) -> Result<&Work> {
        self.work.as_ref().ok_or_else(|| {
            Error::new(ErrorKind::ReadOnly, Operation::Layer, path.as_name())
                .with_layer(self.path.as_str())
        })
    }

    pub(super) fn temp_name(work: &Work) -> String {
        format!(
            "#ls.{}.{}",
            std::process::id(),
            work.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// What is at `name` in `dir`: `None`, a whiteout, a directory (with
    /// whether it has entries), or another object.
    pub(super) fn target_state(&self, dir: &OwnedFd, name: &[u8]) -> rustix::io::Result<Target> {
        let st = match Self::statx_at(dir, name) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(Target::Missing),
            Err(e) => return Err(e),
        };
        let file_type = FileType::from_mode(u32::from(st.stx_mode)).ok_or(Errno::INVAL)?;
        Ok(match file_type {
            FileType::CharDevice if is_whiteout_device(st.stx_rdev_major, st.stx_rdev_minor) => {
                Target::Whiteout
            }
            FileType::Dir => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = without_atime(flags, |flags| {
                    rustix::fs::openat(dir, name, flags, Mode::empty())
                })?;
                let mut d = rustix::fs::Dir::read_from(&fd)?;
                let mut empty = true;
                while let Some(e) = d.read() {
                    let e = e?;
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        empty = false;
                        break;
                    }
                }
                Target::Dir { empty }
            }
            FileType::File if st.stx_size == 0 => {
                let obj = open_o_path(dir, name)?;
                if self.has_xwhiteouts(dir)? && self.is_xwhiteout(&obj)? {
                    Target::Whiteout
                } else {
                    Target::Other
                }
            }
            _ => Target::Other,
        })
    }

    /// Moves `tmp` (in the work directory) to `name` in `dir`, replacing a
    /// whiteout, a non-directory or an empty directory there, atomically.
    pub(super) fn install(
        &self,
        work: &Work,
        tmp: &str,
        dir: &OwnedFd,
        name: &[u8],
    ) -> rustix::io::Result<()> {
        let tmp_is_dir = Self::statx_at(&work.fd, tmp)
            .map(|st| FileType::from_mode(u32::from(st.stx_mode)) == Some(FileType::Dir))?;
        match self.target_state(dir, name)? {
            Target::Missing => sys::renameat_with(&work.fd, tmp, dir, name, RenameFlags::NOREPLACE),
            Target::Dir { empty: false } => Err(Errno::NOTEMPTY),
            Target::Dir { .. } if tmp_is_dir => sys::renameat(&work.fd, tmp, dir, name),
            Target::Dir { .. } => {
                sys::renameat_with(&work.fd, tmp, dir, name, RenameFlags::EXCHANGE)?;
                sys::unlinkat(&work.fd, tmp, AtFlags::REMOVEDIR)
            }
            Target::Whiteout | Target::Other if tmp_is_dir => {
                sys::renameat_with(&work.fd, tmp, dir, name, RenameFlags::EXCHANGE)?;
                sys::unlinkat(&work.fd, tmp, AtFlags::empty())
            }
            Target::Whiteout | Target::Other => sys::renameat(&work.fd, tmp, dir, name),
        }
    }

    /// Creates a temporary object in the work directory, gives it `meta`,
    /// syncs it if it holds data, and moves it to `path`.
    pub(super) fn create_via_work(
        &self,
        path: &LayerPath,
        meta: &Metadata,
        make: impl FnOnce(&Work, &str) -> rustix::io::Result<()>,
    ) -> Result<()> {
        let work = self.work(path)?;
        let (dir, name) = self.parent(path).map_err(|e| self.err(e, path))?;
        if matches!(
            self.target_state(&dir, name)
                .map_err(|e| self.err(e, path))?,
            Target::Other | Target::Dir { .. }
        ) {
            return Err(self.err(Errno::EXIST, path));
        }
        let tmp = Self::temp_name(work);
        let result = (|| {
            make(work, &tmp)?;
            self.apply_meta(&work.fd, tmp.as_bytes(), meta)?;
            self.keeping_times(&[&dir], || self.install(work, &tmp, &dir, name))
        })();
        if result.is_err() {
            let _ = remove_tree_at(&work.fd, &tmp);
        }
        result.map_err(|e| self.err(e, path))
    }

    /// Creates regular file `path` with `meta`, its data written (and
    /// synced, as the layer's durability asks) by `fill`, as the kernel
    /// copies a file up: an anonymous file (`O_TMPFILE`) in the work
    /// directory gets its data and then its metadata through its
    /// descriptor, and is linked into place ([`link_fd`]) only when
    /// complete. No reader sees it half-made,
    /// and a crash before the link leaves nothing in the work directory
    /// (the filesystem frees the unlinked inode). Where the filesystem has
    /// no `O_TMPFILE`, a named file in the work directory and a rename.
    pub(super) fn create_file(
        &self,
        path: &LayerPath,
        meta: &Metadata,
        fill: impl FnOnce(&OwnedFd) -> rustix::io::Result<()>,
    ) -> Result<()> {
        let work = self.work(path)?;
        let mode = Mode::from_raw_mode(meta.mode & MODE_MASK);
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&work.fd, ".", flags, mode) {
            Ok(fd) => fd,
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
                return self.create_via_work(path, meta, |work, tmp| {
                    let fd = rustix::fs::openat(
                        &work.fd,
                        tmp,
                        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )?;
                    fill(&fd)
                });
            }
            Err(e) => return Err(self.err(e, path)),
        };
        let (dir, name) = self.parent(path).map_err(|e| self.err(e, path))?;
        fill(&fd)
            .and_then(|()| self.apply_new_file_meta(&fd, meta))
            .and_then(|()| self.link_into_place(work, &fd, &dir, name))
            .map_err(|e| self.err(e, path))
    }

    /// Links the anonymous file `fd` to `name` in `dir`, the directory's
    /// times kept. A whiteout there is replaced: the file is linked into
    /// the work directory and renamed over it; anything else is `EEXIST`.
    pub(super) fn link_into_place(
        &self,
        work: &Work,
        fd: &OwnedFd,
        dir: &OwnedFd,
        name: &[u8],
    ) -> rustix::io::Result<()> {
        let times = dir_times(dir)?;
        match link_fd(fd, dir, name) {
            // A new name always changes the directory's times: they are put
            // back without looking.
            Ok(()) => return self.restore_times(dir, times),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        if !matches!(self.target_state(dir, name)?, Target::Whiteout) {
            return Err(Errno::EXIST);
        }
        let tmp = Self::temp_name(work);
        link_fd(fd, &work.fd, tmp.as_bytes())?;
        let result = self.keeping_times(&[dir], || self.install(work, &tmp, dir, name));
        if result.is_err() {
            let _ = sys::unlinkat(&work.fd, &tmp, AtFlags::empty());
        }
        result
    }

    /// Runs `change`, which adds, removes or renames entries of the
    /// directories `dirs`, and puts their atime and mtime back as they were
    /// (also when it fails half-way): a layer's times change only when its
    /// metadata is set. The kernel keeps a parent's times across a copy-up
    /// the same way; where a user's change must show, the view sets them.
    pub(super) fn keeping_times<T>(
        &self,
        dirs: &[&OwnedFd],
        change: impl FnOnce() -> rustix::io::Result<T>,
    ) -> rustix::io::Result<T> {
        let mut before = Vec::with_capacity(dirs.len());
        for dir in dirs {
            before.push((*dir, dir_times(dir)?));
        }
        let result = change();
        for (dir, times) in before {
            // A rename between two names of one inode changes nothing, not
            // even a time: only what changed is put back.
            if dir_times(dir)? == times {
                continue;
            }
            let restored = self.restore_times(dir, times);
            if result.is_ok() {
                restored?;
            }
        }
        result
    }

    /// Sets the atime and mtime of directory `dir` (from [`dir_times`]).
    pub(super) fn restore_times(
        &self,
        dir: &OwnedFd,
        (atime, mtime): DirTimes,
    ) -> rustix::io::Result<()> {
        let times = node::times(atime, mtime);
        // By the `O_PATH` descriptor itself (Linux 5.8), else through
        // `/proc/self/fd` (several times dearer: a walk of `/proc`).
        match sys::utimensat(dir, "", &times, AtFlags::EMPTY_PATH) {
            Err(Errno::INVAL) => {
                sys::utimensat(&self.root, proc_path(dir), &times, AtFlags::empty())
            }
            other => other,
        }
    }

    pub(super) fn sync(&self, fd: &OwnedFd) -> rustix::io::Result<()> {
        match self.options.durability {
            Durability::Auto => sys::fsync(fd),
            Durability::Volatile => Ok(()),
        }
    }
}

pub(super) enum Target {
    Missing,
    Whiteout,
    Dir { empty: bool },
    Other,
}

/// Gives the anonymous file `fd` (`O_TMPFILE`) the name `name` in `dir`:
/// by the descriptor itself (`AT_EMPTY_PATH`, Linux 6.10 for a file one
/// opened, else `CAP_DAC_READ_SEARCH`), or through `/proc/self/fd`.
pub(super) fn link_fd(fd: &OwnedFd, dir: &OwnedFd, name: &[u8]) -> rustix::io::Result<()> {
    match sys::linkat(fd, "", dir, name, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) => sys::linkat(fd, proc_path(fd), dir, name, AtFlags::SYMLINK_FOLLOW),
        other => other,
    }
}

/// The atime and mtime of a directory.
pub(super) type DirTimes = (Timestamp, Timestamp);

pub(super) fn dir_times(dir: &OwnedFd) -> rustix::io::Result<DirTimes> {
    let st = rustix::fs::statx(
        dir,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::ATIME | StatxFlags::MTIME,
    )?;
    let t = |t: rustix::fs::StatxTimestamp| Timestamp::new(t.tv_sec, t.tv_nsec);
    Ok((t(st.stx_atime), t(st.stx_mtime)))
}

/// Takes an exclusive, non-blocking `flock` on the directory `dir` (an
/// `O_PATH` descriptor of `path`, the layer's `what`: `upperdir` or
/// `workdir`), and gives the descriptor that holds it.
///
/// One upper layer at a time may use an upper or work directory: a second
/// would empty the work directory under the first, and both would write
/// the upper. The kernel refuses a second mount of an upper or work
/// directory in use with `EBUSY` (with `index=on`); so does this. The lock
/// is the open file's, so it holds against a second open in this process
/// as in another, and it goes when the descriptor is closed, also when the
/// process dies.
///
/// The lock is a guard, not a condition of use: where it cannot be taken
/// (a filesystem without `flock`, such as some network filesystems:
/// `ENOLCK`, `EOPNOTSUPP`, `ENOSYS`, or `EBADF` where `flock` is emulated
/// by record locks; a directory this user may not open for reading,
/// which `flock` needs), the layer goes without it (`None`), as it did
/// before it had one.
pub(super) fn lock_dir(dir: &OwnedFd, path: &Utf8Path, what: &str) -> Result<Option<OwnedFd>> {
    let io = |e| errno_error(e, Operation::Layer, path.as_str());
    let unavailable = |e: Errno| {
        matches!(
            e,
            Errno::NOLCK | Errno::OPNOTSUPP | Errno::NOSYS | Errno::BADF | Errno::ACCESS
        )
    };
    // `flock` needs a descriptor opened for reading, not an `O_PATH` one;
    // reopened through `dir`, it is the same directory.
    let fd = match rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if unavailable(e) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(fd)),
        Err(Errno::WOULDBLOCK) => Err(Error::new(ErrorKind::Busy, Operation::Layer, path.as_str())
            .with_detail(format!(
                "resource busy: {what} is in use as the upperdir or workdir of another \
                 open upper layer (a mount, build or unpack)"
            ))),
        Err(e) if unavailable(e) => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Opens (making it if needed) `workdir/work`, the kernel's work
/// directory, emptied of what an earlier session left. Something else than
/// a directory at that name is replaced, as the kernel replaces it. A
/// directory left by a `volatile` session (the kernel's
/// `work/incompat/volatile`) is refused, as the kernel refuses to mount it:
/// after such a session the upper may hold anything.
pub(super) fn open_work_dir(work_root: &OwnedFd, workdir: &Utf8Path) -> Result<OwnedFd> {
    let io = |e| errno_error(e, Operation::Layer, workdir.as_str());
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match sys::mkdirat(work_root, "work", Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(Errno::EXIST) => match rustix::fs::openat(work_root, "work", flags, Mode::empty()) {
            Err(Errno::NOTDIR | Errno::LOOP) => {
                sys::unlinkat(work_root, "work", AtFlags::empty()).map_err(io)?;
                sys::mkdirat(work_root, "work", Mode::from_raw_mode(0o700)).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
            Ok(work) => {
                if rustix::fs::statx(
                    &work,
                    VOLATILE_MARKER,
                    AtFlags::SYMLINK_NOFOLLOW,
                    StatxFlags::TYPE,
                )
                .is_ok()
                {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        Operation::Layer,
                        workdir.as_str(),
                    )
                    .with_detail(
                        "the work directory was used by a `volatile` session \
                         (work/incompat/volatile), after which the upper may hold anything; \
                         the kernel refuses it too: remove the work directory to accept the \
                         upper as it is",
                    ));
                }
            }
        },
        Err(e) => return Err(io(e)),
    }
    let work = rustix::fs::openat(work_root, "work", flags, Mode::empty()).map_err(io)?;
    clean_dir(&work).map_err(io)?;
    Ok(work)
}

/// Refuses a work directory whose `index` (the kernel's `index=on`) holds
/// entries: each is a hard-linked lower file the kernel copied up once,
/// whose other names still in the lower layers show the copy. The kernel
/// finds the copy from a lower name by the lower inode's file handle
/// (`name_to_handle_at`), which this crate has no safe way to compute;
/// reading the upper without it would show those names with their old
/// contents. An empty index (no hard link was copied up) is fine.
pub(super) fn refuse_inode_index(work_root: &OwnedFd, workdir: &Utf8Path) -> Result<()> {
    let io = |e| errno_error(e, Operation::Layer, workdir.as_str());
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let index = match without_atime(flags, |flags| {
        rustix::fs::openat(work_root, "index", flags, Mode::empty())
    }) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut entries = 0usize;
    let mut dir = rustix::fs::Dir::read_from(&index).map_err(io)?;
    while let Some(entry) = dir.read() {
        let name = entry.map_err(io)?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            entries += 1;
        }
    }
    if entries == 0 {
        return Ok(());
    }
    Err(
        Error::new(ErrorKind::Unsupported, Operation::Layer, workdir.as_str()).with_detail(
            format!(
                "the work directory holds the kernel's inode index (index=on) with {entries} \
                 entr{}: hard-linked lower files the kernel copied up once, whose other names \
                 it finds by file handle; without file handles those names would read stale, \
                 so mount this upper with the kernel (index=on) instead",
                if entries == 1 { "y" } else { "ies" }
            ),
        ),
    )
}

/// Where a `volatile` session leaves its mark in `workdir/work`, as the
/// kernel's: the directory `incompat/volatile` holding a file `dirty`.
pub(super) const VOLATILE_MARKER: &str = "incompat/volatile";

/// Leaves the kernel's `volatile` mark in `work` (an emptied
/// `workdir/work`) when the session is volatile: the kernel, and this
/// crate, then refuse to use the pair again, since a crash may have lost
/// any of its writes.
pub(super) fn mark_volatile(work: &OwnedFd, volatile: bool) -> rustix::io::Result<()> {
    if !volatile {
        return Ok(());
    }
    sys::mkdirat(work, "incompat", Mode::from_raw_mode(0o700))?;
    sys::mkdirat(work, VOLATILE_MARKER, Mode::from_raw_mode(0o700))?;
    let dirty = rustix::fs::openat(
        work,
        "incompat/volatile/dirty",
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    drop(dirty);
    Ok(())
}

/// Removes everything in directory `dir` (an `O_PATH` descriptor), never
/// following symlinks.
pub(super) fn clean_dir(dir: &OwnedFd) -> rustix::io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    let mut d = rustix::fs::Dir::read_from(&fd)?;
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for name in names {
        remove_tree_at(&fd, std::ffi::OsStr::from_bytes(&name))?;
    }
    Ok(())
}

/// Removes `name` in `dir` and, for a directory, everything below it,
/// never following symlinks.
pub(super) fn remove_tree_at<P: rustix::path::Arg + Copy>(
    dir: &impl AsFd,
    name: P,
) -> rustix::io::Result<()> {
    match sys::unlinkat(dir, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => {}
        other => return other,
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    clean_dir(&sub)?;
    sys::unlinkat(dir, name, AtFlags::REMOVEDIR)
}
