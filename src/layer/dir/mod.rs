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
use crate::fs::node::{self, FdMeta, Steps};
use crate::layer::overlay::{Opaque, OverlayAttr, is_whiteout_device};
use crate::layer::{
    Content, DirListing, Entry, EntryKind, Layer, LayerMut, Node, Redirect, object_error,
};
use crate::meta::{FileType, MODE_MASK, Metadata, Timestamp, Xattrs, makedev};
use crate::path::{LayerPath, NameBuf};

pub use crate::layer::overlay::OverlayXattrs;

mod objects;
mod read;
mod work;
mod write;

use objects::errno_object;
use read::without_atime;
use work::{
    Target, Work, lock_dir, mark_volatile, open_work_dir, refuse_inode_index, remove_tree_at,
};

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
    /// Open objects (see [`LayerMut::open_object`]): a descriptor each,
    /// which keeps the inode alive as the kernel keeps an open file.
    objects: HashMap<u64, OwnedFd>,
    next_object: u64,
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
            objects: HashMap::new(),
            next_object: 1,
        })
    }

    /// Opens an `upperdir` with its `workdir` as a writable layer; both are
    /// created if missing. The pair is checked as the kernel checks it (one
    /// filesystem, neither inside the other), and leftovers of an earlier
    /// crash in the work directory are removed.
    ///
    /// The layer holds an exclusive `flock` on both directories until it is
    /// dropped: while it lives, no other upper layer (of this process or
    /// another) opens either of them, as upper or as work directory, as the
    /// kernel refuses a second overlay mount of an upper or work directory
    /// in use (with `index=on`; with `index=off` it only warns, but a
    /// second layer would empty the work directory under the first). After
    /// [`LayerMut::commit`] the lock is on the fresh upper directory.
    ///
    /// # Errors
    /// `EBUSY` if another upper layer holds the upper or the work
    /// directory, `EXDEV` if the two are on different filesystems,
    /// `EINVAL` if one contains the other, and the errors of
    /// [`DirLayer::open`].
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
        // Before the work directory is emptied of what a session left: not
        // of what a live one is using.
        let locks = [
            lock_dir(&layer.root, upper, "upperdir")?,
            lock_dir(&work_root, workdir, "workdir")?,
        ];
        refuse_inode_index(&work_root, workdir)?;
        let work = open_work_dir(&work_root, workdir)?;
        mark_volatile(&work, volatile)
            .map_err(|e| errno_error(e, Operation::Layer, workdir.as_str()))?;
        layer.work = Some(Work {
            fd: work,
            root: work_root,
            upper_path: cu.clone(),
            counter: AtomicU64::new(0),
            locks,
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
        errno_error(e, Operation::Layer, path.as_name()).with_layer(self.path.as_str())
    }

    /// Opens `path` beneath the root without following any symlink.
    fn open_beneath(&self, path: &LayerPath, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        beneath::open_beneath(&self.root, path, flags)
    }

    /// The parent directory of `path` (an `O_PATH` descriptor) and the name.
    fn parent<'p>(&self, path: &'p LayerPath) -> rustix::io::Result<(OwnedFd, &'p [u8])> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Errno::BUSY);
        };
        let fd = self.open_beneath(&parent, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok((fd, name.as_bytes()))
    }

    fn statx_at(
        dir: &OwnedFd,
        name: impl rustix::path::Arg,
    ) -> rustix::io::Result<rustix::fs::Statx> {
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
