//! [`DirLayer`]: a directory on disk as a layer, in exactly the format the
//! kernel's overlayfs reads and writes.
//!
//! A directory written by a `DirLayer` can be mounted by the kernel as an
//! `upperdir` or `lowerdir`, and an `upperdir` the kernel wrote can be
//! opened as a `DirLayer`. The format:
//!
//! - **whiteout**: a character device 0/0 (the kernel often hard-links one
//!   whiteout inode to many names; any link count is read), or, inside a
//!   directory marked `overlay.opaque="x"`, a zero-size regular file with the
//!   xattr `overlay.whiteout` (written when `mknod` is not permitted);
//! - **opaque directory**: xattr `overlay.opaque="y"`;
//! - **redirect**: xattr `overlay.redirect` on a directory: a single name
//!   is relative to the parent, a path starting with `/` is from the root;
//! - the xattr namespace is `trusted.overlay.` (needs `CAP_SYS_ADMIN`), or
//!   `user.overlay.` for the kernel's `userxattr` mode
//!   ([`OverlayXattrs::User`]);
//! - **escaped xattrs**: a stored `trusted.overlay.overlay.X` is the user's
//!   `trusted.overlay.X` (likewise in the `user.` namespace);
//! - the kernel's **bookkeeping** xattrs (`origin`, `impure`, `uuid`,
//!   `nlink`, `metacopy`, `upper`, `protattr`, ...) are understood as such
//!   and never shown to users.
//!
//! Every change of an upper layer is prepared in the work directory
//! (`workdir/work`, as the kernel's) and moved into place with one
//! `rename` (`RENAME_EXCHANGE` to put a directory where a whiteout was), so a
//! crash leaves the old state or the new one, never a half-copied file;
//! leftovers in the work directory are removed when the layer is opened.
//! A regular file is made as the kernel copies one up: an anonymous file
//! (`O_TMPFILE`) in the work directory, given its data and metadata through
//! its descriptor, then linked into place; a crash before the link leaves
//! nothing behind.
//! Copied-up files are synced before they become visible unless the layer
//! is [`Durability::Volatile`] (the kernel's `volatile`).
//!
//! Every path is [confined](crate#confinement-on-disk) beneath the
//! layer's root: symlinks in a layer are data, which the merged view
//! resolves in its own root. A file the layer is making has its extended
//! attributes set on its own descriptor.
//!
//! ```no_run
//! use std::sync::Arc;
//! use layerstack::{DirLayer, Layer, MergedView};
//!
//! let base = DirLayer::open("/var/lib/images/base")?;
//! let upper = DirLayer::open_upper("/var/lib/images/upper", "/var/lib/images/work")?;
//! let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], upper)?;
//! view.write("etc/hostname", "box\n")?;
//! // `mount -t overlay overlay -o lowerdir=/var/lib/images/base,\
//! //  upperdir=/var/lib/images/upper,workdir=/var/lib/images/work /mnt`
//! // now shows the same tree.
//! # Ok::<(), layerstack::Error>(())
//! ```

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use camino::{Utf8Path, Utf8PathBuf};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, StatxFlags, XattrFlags};
use rustix::io::Errno;

use crate::data::FileData;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::fs::beneath::{
    self, errno_error, open_o_path, proc_path, procfs_is_mounted, raw_xattrs, raw_xattrs_open,
};
use crate::fs::crash_points::sys;
use crate::fs::node::{self, FdMeta};
use crate::layer::overlay::{Opaque, OverlayAttr, is_whiteout_device};
use crate::layer::{Content, DirListing, Entry, EntryKind, Layer, LayerMut, Node};
use crate::meta::{FileType, MODE_MASK, Metadata, Timestamp, Xattrs, makedev};
use crate::path::LayerPath;

pub use crate::layer::overlay::OverlayXattrs;

/// When changes of an upper layer reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A copied-up or created file is synced before it is moved into place
    /// (the kernel's `fsync=auto`).
    #[default]
    Auto,
    /// Nothing is synced (the kernel's `volatile`): faster, and after a
    /// crash the layer may hold anything. As the kernel does, the session
    /// leaves `workdir/work/incompat/volatile` behind, and both the kernel
    /// and [`DirLayer::open_upper`] then refuse the pair (`EINVAL`) until
    /// the work directory is removed.
    Volatile,
}

/// How an upper `DirLayer` writes whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutFormat {
    /// A character device 0/0, as the kernel writes them (Linux lets any
    /// user make this one device since 5.8); where `mknod` is refused all
    /// the same, the xattr form.
    #[default]
    Device,
    /// A zero-size file with the xattr `overlay.whiteout`, its directory
    /// marked `overlay.opaque="x"` (read by kernels since 6.7), for
    /// filesystems or sandboxes that refuse device nodes.
    ///
    /// The kernel reads this form as the crate does only in a **lower**
    /// layer: mounted as the `upperdir`, such a directory lists every
    /// deleted name (whose `stat` is then `ENOENT`). Commit the layer, or
    /// use the device form, before the kernel mounts it as an upper (see
    /// `docs/semantics.md`).
    ///
    /// Not crash-atomic in one case: a rename that must leave a whiteout at
    /// its source is a rename and then a new whiteout (no system call does
    /// both for this form; `RENAME_WHITEOUT` makes a device). A crash
    /// between the two shows what a lower layer holds at the source again,
    /// beside the moved object. `tests/it/crash.rs` counts these states. The
    /// device form is atomic.
    Xattr,
}

/// Options of a [`DirLayer`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirLayerOptions {
    /// The namespace of overlay xattrs.
    pub xattrs: OverlayXattrs,
    /// When changes reach the disk (upper layers).
    pub durability: Durability,
    /// How whiteouts are written (upper layers; both forms are read).
    pub whiteouts: WhiteoutFormat,
    /// Where [`LayerMut::commit`] moves a committed upper: a directory on the
    /// same filesystem, which gets one numbered subdirectory per commit.
    /// Without it, an upper `DirLayer` cannot commit.
    pub commit_dir: Option<Utf8PathBuf>,
}

impl DirLayerOptions {
    /// Sets [`DirLayerOptions::xattrs`] (builder style).
    #[must_use]
    pub fn xattrs(mut self, v: OverlayXattrs) -> Self {
        self.xattrs = v;
        self
    }

    /// Sets [`DirLayerOptions::durability`] (builder style).
    #[must_use]
    pub fn durability(mut self, v: Durability) -> Self {
        self.durability = v;
        self
    }

    /// Sets [`DirLayerOptions::whiteouts`] (builder style).
    #[must_use]
    pub fn whiteouts(mut self, v: WhiteoutFormat) -> Self {
        self.whiteouts = v;
        self
    }

    /// Sets [`DirLayerOptions::commit_dir`] (builder style).
    #[must_use]
    pub fn commit_dir(mut self, dir: impl Into<Utf8PathBuf>) -> Self {
        self.commit_dir = Some(dir.into());
        self
    }
}

/// The writable side of an upper layer: its work directory.
#[derive(Debug)]
struct Work {
    /// `workdir/work`.
    fd: OwnedFd,
    /// `workdir` itself: no lower layer may be it or lie below it.
    root: OwnedFd,
    upper_path: Utf8PathBuf,
    counter: AtomicU64,
}

/// A directory on disk as a layer, in the kernel's overlayfs format (see
/// the [module documentation](self)).
///
/// Open a `lowerdir` read-only with [`DirLayer::open`], or an `upperdir`
/// with its `workdir` with [`DirLayer::open_upper`].
///
/// A read-only layer remembers what its lookups found (up to about a
/// million paths), as the kernel's dentry cache does: its directory must
/// not change while the layer is in use.
#[derive(Debug)]
pub struct DirLayer {
    root: OwnedFd,
    path: Utf8PathBuf,
    work: Option<Work>,
    options: DirLayerOptions,
    /// Lookups of a read-only layer, remembered: a lower layer does not
    /// change while it is in use (see the crate's `# Security`).
    lookups: Mutex<HashMap<LayerPath, Option<Entry>>>,
}

/// How many lookups a read-only layer remembers before it starts afresh.
const LOOKUP_CACHE_MAX: usize = 1 << 20;

impl DirLayer {
    /// Opens a directory as a read-only layer (a `lowerdir`).
    ///
    /// # Errors
    /// `ENOENT`/`ENOTDIR` if `path` is not a directory; `EIO` if `/proc` is
    /// not mounted (xattrs are read through it).
    pub fn open(path: impl AsRef<Utf8Path>) -> Result<DirLayer> {
        DirLayer::open_with(path, DirLayerOptions::default())
    }

    /// As [`DirLayer::open`], with options.
    ///
    /// # Errors
    /// As [`DirLayer::open`].
    pub fn open_with(path: impl AsRef<Utf8Path>, options: DirLayerOptions) -> Result<DirLayer> {
        let path = path.as_ref().to_owned();
        check_proc(&path)?;
        let root = open_dir_path(&path)?;
        Ok(DirLayer {
            root,
            path,
            work: None,
            options,
            lookups: Mutex::new(HashMap::new()),
        })
    }

    /// Opens an `upperdir` with its `workdir` as a writable layer; both are
    /// created if missing. The pair is checked as the kernel checks it (one
    /// filesystem, neither inside the other), and leftovers of an earlier
    /// crash in the work directory are removed.
    ///
    /// # Errors
    /// `EXDEV` if the two are on different filesystems, `EINVAL` if one
    /// contains the other, and the errors of [`DirLayer::open`].
    pub fn open_upper(
        upperdir: impl AsRef<Utf8Path>,
        workdir: impl AsRef<Utf8Path>,
    ) -> Result<DirLayer> {
        DirLayer::open_upper_with(upperdir, workdir, DirLayerOptions::default())
    }

    /// As [`DirLayer::open_upper`], with options.
    ///
    /// # Errors
    /// As [`DirLayer::open_upper`].
    pub fn open_upper_with(
        upperdir: impl AsRef<Utf8Path>,
        workdir: impl AsRef<Utf8Path>,
        options: DirLayerOptions,
    ) -> Result<DirLayer> {
        let (upper, workdir) = (upperdir.as_ref(), workdir.as_ref());
        for dir in [upper, workdir] {
            std::fs::create_dir_all(dir).map_err(|e| Error::from_io(&e, Operation::Layer, dir))?;
        }
        let canon = |p: &Utf8Path| {
            p.canonicalize_utf8().map_err(|e| {
                Error::new(ErrorKind::InvalidInput, Operation::Layer, p.as_str())
                    .with_detail(format!("cannot resolve the directory: {e}"))
            })
        };
        let (cu, cw) = (canon(upper)?, canon(workdir)?);
        if cu.starts_with(&cw) || cw.starts_with(&cu) {
            return Err(
                Error::new(ErrorKind::InvalidInput, Operation::Layer, upper.as_str()).with_detail(
                    format!("upperdir and workdir `{workdir}` must not contain each other"),
                ),
            );
        }
        let volatile = options.durability == Durability::Volatile;
        let mut layer = DirLayer::open_with(upper, options)?;
        let work_root = open_dir_path(workdir)?;
        let dev = |fd: &OwnedFd, p: &Utf8Path| {
            rustix::fs::fstat(fd)
                .map(|s| s.st_dev)
                .map_err(|e| errno_error(e, Operation::Layer, p.as_str()))
        };
        if dev(&layer.root, upper)? != dev(&work_root, workdir)? {
            return Err(
                Error::new(ErrorKind::CrossesDevices, Operation::Layer, upper.as_str())
                    .with_detail(format!(
                        "upperdir and workdir `{workdir}` must be on the same filesystem"
                    )),
            );
        }
        refuse_inode_index(&work_root, workdir)?;
        let work = open_work_dir(&work_root, workdir)?;
        mark_volatile(&work, volatile)
            .map_err(|e| errno_error(e, Operation::Layer, workdir.as_str()))?;
        layer.work = Some(Work {
            fd: work,
            root: work_root,
            upper_path: cu.clone(),
            counter: AtomicU64::new(0),
        });
        Ok(layer)
    }

    /// Refuses `lower` as a lower layer under this upper when it is the
    /// upper or work directory or lies below one of them (`ELOOP`, as the
    /// kernel refuses such a mount): a "read-only" layer would change under
    /// the view.
    pub(crate) fn check_lower(&self, lower: &DirLayer) -> Result<()> {
        let Some(work) = &self.work else {
            return Ok(());
        };
        let id = |fd: &OwnedFd| rustix::fs::fstat(fd).map(|st| (st.st_dev, st.st_ino));
        let io = |e| errno_error(e, Operation::Layer, lower.path.as_str());
        let traps = [
            (id(&self.root).map_err(io)?, "upper"),
            (id(&work.root).map_err(io)?, "work"),
        ];
        let mut at = rustix::fs::openat(
            &lower.root,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        loop {
            let here = id(&at).map_err(io)?;
            if let Some((_, what)) = traps.iter().find(|(trap, _)| *trap == here) {
                return Err(Error::new(
                    ErrorKind::FilesystemLoop,
                    Operation::Layer,
                    lower.path.as_str(),
                )
                .with_detail(format!(
                    "a lower layer cannot be the {what} directory or lie inside it \
                     (upper `{}`)",
                    self.path
                )));
            }
            let up = rustix::fs::openat(
                &at,
                "..",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io)?;
            if id(&up).map_err(io)? == here {
                return Ok(());
            }
            at = up;
        }
    }

    /// The directory of this layer.
    #[must_use]
    pub fn path(&self) -> &Utf8Path {
        &self.path
    }

    /// Whether this layer can be written (it was opened as an upper).
    #[must_use]
    pub fn is_writable(&self) -> bool {
        self.work.is_some()
    }

    fn err(&self, e: Errno, path: &LayerPath) -> Error {
        errno_error(e, Operation::Layer, path.as_str()).with_layer(self.path.as_str())
    }

    /// Opens `path` beneath the root without following any symlink.
    fn open_beneath(&self, path: &LayerPath, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        beneath::open_beneath(&self.root, path, flags)
    }

    /// The parent directory of `path` (an `O_PATH` descriptor) and the name.
    fn parent<'p>(&self, path: &'p LayerPath) -> rustix::io::Result<(OwnedFd, &'p str)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Errno::BUSY);
        };
        let fd = self.open_beneath(&parent, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok((fd, name))
    }

    fn statx_at(dir: &OwnedFd, name: &str) -> rustix::io::Result<rustix::fs::Statx> {
        rustix::fs::statx(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        )
    }

    /// The overlay attribute `attr`, if set.
    fn overlay_attr(&self, raw: &[(String, Vec<u8>)], attr: OverlayAttr) -> Option<Vec<u8>> {
        self.options.xattrs.find(raw, attr).map(<[u8]>::to_vec)
    }

    /// The attributes a user sees: overlay bookkeeping left out, escaped
    /// names unescaped.
    fn visible_xattrs(&self, raw: Vec<(String, Vec<u8>)>) -> Xattrs {
        let ns = self.options.xattrs;
        raw.into_iter()
            .filter_map(|(name, value)| {
                let visible = ns.visible_name(&name)?.into_owned();
                Some((visible, Bytes::from(value)))
            })
            .collect()
    }

    /// How a user-visible attribute name is stored.
    fn stored_name(&self, name: &str) -> String {
        self.options.xattrs.stored_name(name)
    }

    /// Whether directory `fd` holds xattr whiteouts (`opaque="x"`).
    fn has_xwhiteouts(&self, fd: &OwnedFd) -> rustix::io::Result<bool> {
        let raw = raw_xattrs(fd)?;
        Ok(
            Opaque::parse(self.options.xattrs.find(&raw, OverlayAttr::Opaque))
                == Opaque::XattrWhiteouts,
        )
    }

    fn is_xwhiteout(&self, fd: &OwnedFd) -> rustix::io::Result<bool> {
        let raw = raw_xattrs(fd)?;
        Ok(self.overlay_attr(&raw, OverlayAttr::Whiteout).is_some())
    }

    fn lookup_raw(&self, path: &LayerPath) -> rustix::io::Result<Option<Entry>> {
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
                .and_then(|r| String::from_utf8(r).ok())
        } else {
            None
        };
        let ts = |t: rustix::fs::StatxTimestamp| Timestamp::new(t.tv_sec, t.tv_nsec);
        let meta = Metadata {
            file_type,
            mode: mode & MODE_MASK,
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
        };
        Ok(Some(Entry::Node(Node {
            meta,
            opaque,
            redirect,
            metacopy,
        })))
    }

    fn read_dir_raw(&self, path: &LayerPath) -> rustix::io::Result<DirListing> {
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
            let Ok(name) = std::str::from_utf8(raw_name) else {
                return Err(Errno::ILSEQ);
            };
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
                entries.push((name.to_owned(), EntryKind::Node(file_type)));
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
            entries.push((name.to_owned(), kind));
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
    fn open_regular(&self, path: &LayerPath, flags: OFlags) -> Result<OwnedFd> {
        self.open_regular_as(path, flags, false)
    }

    fn open_regular_as(&self, path: &LayerPath, flags: OFlags, metacopy: bool) -> Result<OwnedFd> {
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
                    Error::new(ErrorKind::NotPermitted, Operation::Layer, path.as_str())
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

    fn work(&self, path: &LayerPath) -> Result<&Work> {
        self.work.as_ref().ok_or_else(|| {
            Error::new(ErrorKind::ReadOnly, Operation::Layer, path.as_str())
                .with_layer(self.path.as_str())
        })
    }

    fn temp_name(work: &Work) -> String {
        format!(
            "#ls.{}.{}",
            std::process::id(),
            work.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Applies owner, mode, xattrs and times of `meta` to `name` in `dir`
    /// (owner first: a change of owner clears setuid).
    ///
    /// Only what differs is changed: on an object already in place, a
    /// `chmod` or `chown` of the view is then one system call, so a crash
    /// cannot leave it half-applied (a needless `chown` would clear setuid
    /// until the `chmod` after it restored the bit).
    fn apply_meta(&self, dir: &OwnedFd, name: &str, meta: &Metadata) -> rustix::io::Result<()> {
        let obj = open_o_path(dir, name)?;
        let stat = |obj: &OwnedFd| {
            rustix::fs::statx(obj, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
        };
        let mut st = stat(&obj)?;
        let mut changed = false;
        if (st.stx_uid, st.stx_gid) != (meta.uid, meta.gid) {
            changed = true;
            sys::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            st = stat(&obj)?;
        }
        if !meta.file_type.is_symlink()
            && u32::from(st.stx_mode) & MODE_MASK != meta.mode & MODE_MASK
        {
            changed = true;
            sys::chmodat(
                &self.root,
                proc_path(&obj),
                Mode::from_raw_mode(meta.mode & MODE_MASK),
                AtFlags::empty(),
            )?;
        }
        changed |= self.apply_xattrs(&obj, &meta.xattrs)?;
        let same =
            |s: rustix::fs::StatxTimestamp, t: Timestamp| s.tv_sec == t.sec && s.tv_nsec == t.nsec;
        if same(st.stx_atime, meta.atime) && same(st.stx_mtime, meta.mtime) {
            if !changed && !same(st.stx_ctime, meta.ctime) {
                // A change of metadata that changes nothing (`chown` to the
                // same owner, `chmod` to the same mode) still changes the
                // ctime, as the kernel's `setattr` does; it cannot be set,
                // so it is made to change: a `chmod` to the same mode (a
                // `chown` would clear setuid), for a symlink a `chown`.
                return if meta.file_type.is_symlink() {
                    sys::chownat(
                        dir,
                        name,
                        Some(rustix::fs::Uid::from_raw(st.stx_uid)),
                        Some(rustix::fs::Gid::from_raw(st.stx_gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                } else {
                    sys::chmodat(
                        &self.root,
                        proc_path(&obj),
                        Mode::from_raw_mode(u32::from(st.stx_mode) & MODE_MASK),
                        AtFlags::empty(),
                    )
                };
            }
            return Ok(());
        }
        sys::utimensat(
            dir,
            name,
            &node::timestamps(meta),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }

    /// What makes the user-visible xattrs of an object that has `raw`
    /// exactly `want`: the stored names to remove, and those to set.
    fn xattr_changes<'w>(
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
    fn apply_xattrs(&self, obj: &OwnedFd, want: &Xattrs) -> rustix::io::Result<bool> {
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
    fn mkdir_opaque(&self, dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
        sys::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        self.set_overlay_attr(&fd, OverlayAttr::Opaque, Opaque::Yes.value())
    }

    fn set_overlay_attr(
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

    /// What is at `name` in `dir`: `None`, a whiteout, a directory (with
    /// whether it has entries), or another object.
    fn target_state(&self, dir: &OwnedFd, name: &str) -> rustix::io::Result<Target> {
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
    fn install(&self, work: &Work, tmp: &str, dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
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
    fn create_via_work(
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
            self.apply_meta(&work.fd, &tmp, meta)?;
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
    fn create_file(
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

    /// Gives `fd`, a file just made (open for writing), the owner, mode,
    /// xattrs and times of `meta`, in that order: a change of owner clears
    /// setuid and file capabilities, a change of anything else the times.
    fn apply_new_file_meta(&self, fd: &OwnedFd, meta: &Metadata) -> rustix::io::Result<()> {
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
        node::set_fd_meta(fd, &want).map_err(|(_, e)| e)
    }

    /// Links the anonymous file `fd` to `name` in `dir`, the directory's
    /// times kept. A whiteout there is replaced: the file is linked into
    /// the work directory and renamed over it; anything else is `EEXIST`.
    fn link_into_place(
        &self,
        work: &Work,
        fd: &OwnedFd,
        dir: &OwnedFd,
        name: &str,
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
        link_fd(fd, &work.fd, &tmp)?;
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
    fn keeping_times<T>(
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
    fn restore_times(&self, dir: &OwnedFd, (atime, mtime): DirTimes) -> rustix::io::Result<()> {
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

    fn sync(&self, fd: &OwnedFd) -> rustix::io::Result<()> {
        match self.options.durability {
            Durability::Auto => sys::fsync(fd),
            Durability::Volatile => Ok(()),
        }
    }
}

enum Target {
    Missing,
    Whiteout,
    Dir { empty: bool },
    Other,
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
            Errno::ILSEQ => Error::new(ErrorKind::InvalidInput, Operation::Layer, path.as_str())
                .with_layer(self.path.as_str())
                .with_detail("the directory holds a name that is not UTF-8"),
            e => self.err(e, path),
        })
    }

    fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<Bytes> {
        let fd = self.open_regular(path, OFlags::RDONLY)?;
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| self.err(e, path))?
            .st_size;
        let size = u64::try_from(size).unwrap_or(0);
        let want = usize::try_from(size.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(len);
        let mut buf = BytesMut::zeroed(want);
        let mut done = 0;
        while done < want {
            let n = rustix::io::pread(&fd, &mut buf[done..], offset + done as u64)
                .map_err(|e| self.err(e, path))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf.freeze())
    }

    fn read_link(&self, path: &LayerPath) -> Result<String> {
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
        target.into_string().map_err(|_| {
            Error::new(ErrorKind::InvalidInput, Operation::Layer, path.as_str())
                .with_layer(self.path.as_str())
                .with_detail("the symlink target is not UTF-8")
        })
    }

    fn describe(&self) -> String {
        self.path.to_string()
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
                sys::symlinkat(target.as_str(), &work.fd, tmp)
            }),
            Content::Special => self.create_via_work(path, meta, |work, tmp| {
                node::make_special(&work.fd, tmp, meta)
            }),
        }
    }

    fn create_opaque_dir(&mut self, path: &LayerPath, meta: &Metadata) -> Result<()> {
        // Marked in the work directory, then exchanged with the whiteout.
        self.create_via_work(path, meta, |work, tmp| self.mkdir_opaque(&work.fd, tmp))
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
            self.mkdir_opaque(&work.fd, &tmp)?;
            self.apply_meta(&work.fd, &tmp, &node.meta)?;
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

    fn set_redirect(&mut self, path: &LayerPath, redirect: Option<String>) -> Result<()> {
        self.work(path)?;
        let fd = self
            .open_beneath(path, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| self.err(e, path))?;
        self.set_overlay_attr(
            &fd,
            OverlayAttr::Redirect,
            redirect.as_deref().map(str::as_bytes),
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
        let mut n = 0u64;
        let target = loop {
            let candidate = commit_dir.join(n.to_string());
            match sys::renameat_with(
                rustix::fs::CWD,
                upper.as_str(),
                rustix::fs::CWD,
                candidate.as_str(),
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => break candidate,
                Err(Errno::EXIST | Errno::NOTEMPTY) => n += 1,
                Err(e) => return Err(errno_error(e, Operation::Commit, upper.as_str())),
            }
        };
        std::fs::create_dir(&upper).map_err(|e| io(&upper, e))?;
        // The root descriptor follows the directory to its new place.
        let fresh = open_dir_path(&upper)?;
        let committed_root = std::mem::replace(&mut self.root, fresh);
        let committed = DirLayer {
            root: committed_root,
            path: target,
            work: None,
            options: self.options.clone(),
            lookups: Mutex::new(HashMap::new()),
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

/// Gives the anonymous file `fd` (`O_TMPFILE`) the name `name` in `dir`:
/// by the descriptor itself (`AT_EMPTY_PATH`, Linux 6.10 for a file one
/// opened, else `CAP_DAC_READ_SEARCH`), or through `/proc/self/fd`.
fn link_fd(fd: &OwnedFd, dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    match sys::linkat(fd, "", dir, name, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) => sys::linkat(fd, proc_path(fd), dir, name, AtFlags::SYMLINK_FOLLOW),
        other => other,
    }
}

/// The atime and mtime of a directory.
type DirTimes = (Timestamp, Timestamp);

fn dir_times(dir: &OwnedFd) -> rustix::io::Result<DirTimes> {
    let st = rustix::fs::statx(
        dir,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::ATIME | StatxFlags::MTIME,
    )?;
    let t = |t: rustix::fs::StatxTimestamp| Timestamp::new(t.tv_sec, t.tv_nsec);
    Ok((t(st.stx_atime), t(st.stx_mtime)))
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

/// Why a metadata-only copy's bytes are not read from its own layer.
const METACOPY_DATA: &str = "a metadata-only copy (overlay.metacopy): its data is in a lower layer";

/// Opens with `open(flags | O_NOATIME)`, or with `open(flags)` where the
/// caller may not use `O_NOATIME` (neither the owner nor `CAP_FOWNER`).
///
/// Reading a layer never changes an atime: the kernel opens the files of
/// its layers `O_NOATIME` too, and the view behaves as a `noatime` mount.
/// A symlink is the exception: no system call reads its target without
/// touching its atime (the filesystem's own `relatime` rules then apply).
fn without_atime(
    flags: OFlags,
    open: impl Fn(OFlags) -> rustix::io::Result<OwnedFd>,
) -> rustix::io::Result<OwnedFd> {
    match open(flags | OFlags::NOATIME) {
        Err(Errno::PERM) => open(flags),
        other => other,
    }
}

/// Opens (making it if needed) `workdir/work`, the kernel's work
/// directory, emptied of what an earlier session left. Something else than
/// a directory at that name is replaced, as the kernel replaces it. A
/// directory left by a `volatile` session (the kernel's
/// `work/incompat/volatile`) is refused, as the kernel refuses to mount it:
/// after such a session the upper may hold anything.
fn open_work_dir(work_root: &OwnedFd, workdir: &Utf8Path) -> Result<OwnedFd> {
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
fn refuse_inode_index(work_root: &OwnedFd, workdir: &Utf8Path) -> Result<()> {
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
const VOLATILE_MARKER: &str = "incompat/volatile";

/// Leaves the kernel's `volatile` mark in `work` (an emptied
/// `workdir/work`) when the session is volatile: the kernel, and this
/// crate, then refuse to use the pair again, since a crash may have lost
/// any of its writes.
fn mark_volatile(work: &OwnedFd, volatile: bool) -> rustix::io::Result<()> {
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

fn check_proc(path: &Utf8Path) -> Result<()> {
    if procfs_is_mounted() {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Io, Operation::Layer, path.as_str())
            .with_detail("no procfs at /proc; a DirLayer reaches xattrs through /proc/self/fd"))
    }
}

fn open_dir_path(path: &Utf8Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno_error(e, Operation::Layer, path.as_str()))
}

fn write_data(fd: &OwnedFd, data: &FileData) -> rustix::io::Result<()> {
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

/// Removes everything in directory `dir` (an `O_PATH` descriptor), never
/// following symlinks.
fn clean_dir(dir: &OwnedFd) -> rustix::io::Result<()> {
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
fn remove_tree_at<P: rustix::path::Arg + Copy>(dir: &impl AsFd, name: P) -> rustix::io::Result<()> {
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
