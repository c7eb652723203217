//! Making a node and setting its metadata through its descriptor: the one
//! body [`DirLayer`](crate::DirLayer) and `oci::flatten` share.
//!
//! Metadata goes on in one order: owner first (a change of owner clears
//! setuid and file capabilities), then mode, then extended attributes, then
//! times (a change of anything else changes them). The calls of a
//! `DirLayer` are crash points ([`Steps::Counted`]); those of a flatten are
//! not, so a flatten running beside the crash test does not move its count.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::fs::beneath::proc_path;
use crate::fs::crash_points::step;
use crate::meta::{FileType, MODE_MASK, Metadata, Timestamp, major, minor};

/// Whether the calls of this module are crash points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Steps {
    /// Each disk-changing call is one step of the crash test (a `DirLayer`).
    Counted,
    /// Plain calls (a flatten).
    Uncounted,
}

impl Steps {
    fn after<T>(self, r: rustix::io::Result<T>) -> rustix::io::Result<T> {
        if self == Steps::Counted {
            step();
        }
        r
    }
}

/// The access and modification times of `meta`, as the kernel takes them.
pub(crate) fn timestamps(meta: &Metadata) -> Timestamps {
    times(meta.atime, meta.mtime)
}

/// Access and modification times, as the kernel takes them.
pub(crate) fn times(atime: Timestamp, mtime: Timestamp) -> Timestamps {
    Timestamps {
        last_access: timespec(atime),
        last_modification: timespec(mtime),
    }
}

fn timespec(t: Timestamp) -> Timespec {
    Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec),
    }
}

/// Makes fifo, socket or device `name` in `dir` (mode `0600`, until its
/// metadata is set) with the type and device number of `meta`.
pub(crate) fn make_special(
    steps: Steps,
    dir: &impl AsFd,
    name: impl rustix::path::Arg,
    meta: &Metadata,
) -> rustix::io::Result<()> {
    let kind = match meta.file_type {
        FileType::Fifo => rustix::fs::FileType::Fifo,
        FileType::CharDevice => rustix::fs::FileType::CharacterDevice,
        FileType::BlockDevice => rustix::fs::FileType::BlockDevice,
        _ => rustix::fs::FileType::Socket,
    };
    steps.after(rustix::fs::mknodat(
        dir,
        name,
        kind,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major(meta.rdev), minor(meta.rdev)),
    ))
}

/// What [`set_fd_meta`] changes; `None` leaves it as it is.
#[derive(Default)]
pub(crate) struct FdMeta<'a> {
    /// The owner to give.
    pub(crate) owner: Option<(u32, u32)>,
    /// The mode to give (its permission bits).
    pub(crate) mode: Option<u32>,
    /// Extended attributes to remove, by stored name.
    pub(crate) remove_xattrs: Vec<String>,
    /// Extended attributes to set, by stored name.
    pub(crate) set_xattrs: Vec<(String, &'a [u8])>,
    /// The access and modification times to give.
    pub(crate) times: Option<Timestamps>,
}

/// The step of [`set_fd_meta`] that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetaStep {
    /// `fchown`.
    Owner,
    /// `fchmod`.
    Mode,
    /// Removing or setting this extended attribute.
    Xattr(String),
    /// `futimens`.
    Times,
}

/// Gives the open file or directory `fd` the metadata of `want`, in the
/// order of the module docs; on failure, the step and its errno.
pub(crate) fn set_fd_meta(
    steps: Steps,
    fd: &OwnedFd,
    want: &FdMeta<'_>,
) -> Result<(), (MetaStep, Errno)> {
    set_meta(steps, &Object::Open(fd), want)
}

/// Gives the object `obj`, an `O_PATH | O_NOFOLLOW` descriptor (of a
/// symlink, fifo, socket or device, or of anything else), the metadata in
/// `want`, in the order of the module docs. Every call names the object
/// itself: the owner and the times go on the descriptor (`AT_EMPTY_PATH`),
/// the mode and the extended attributes through `/proc/self/fd` (which
/// leads to the object, never on through a symlink). Nothing is looked up
/// by name, so a symlink swapped in under the object's name cannot
/// redirect a call. `want.mode` is `None` for a symlink (Linux keeps a
/// symlink's mode), and extended attributes only where Linux allows them
/// on the object (no `user.*` on a symlink or special file).
pub(crate) fn set_path_fd_meta(
    steps: Steps,
    obj: &OwnedFd,
    want: &FdMeta<'_>,
) -> Result<(), (MetaStep, Errno)> {
    set_meta(steps, &Object::Path(obj, proc_path(obj)), want)
}

/// An object whose metadata is set, and how it is reached.
enum Object<'a> {
    /// An open file or directory: the `f*` calls.
    Open(&'a OwnedFd),
    /// An `O_PATH` descriptor, and its `/proc/self/fd` path.
    Path(&'a OwnedFd, String),
}

impl Object<'_> {
    fn chown(&self, uid: u32, gid: u32) -> rustix::io::Result<()> {
        let (uid, gid) = (
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        );
        match self {
            Object::Open(fd) => rustix::fs::fchown(fd, uid, gid),
            Object::Path(fd, _) => rustix::fs::chownat(fd, "", uid, gid, AtFlags::EMPTY_PATH),
        }
    }

    fn chmod(&self, mode: u32) -> rustix::io::Result<()> {
        let mode = Mode::from_raw_mode(mode & MODE_MASK);
        match self {
            Object::Open(fd) => rustix::fs::fchmod(fd, mode),
            Object::Path(_, proc) => {
                rustix::fs::chmodat(rustix::fs::CWD, proc.as_str(), mode, AtFlags::empty())
            }
        }
    }

    fn remove_xattr(&self, name: &str) -> rustix::io::Result<()> {
        match self {
            Object::Open(fd) => rustix::fs::fremovexattr(fd, name),
            Object::Path(_, proc) => rustix::fs::removexattr(proc.as_str(), name),
        }
    }

    fn set_xattr(&self, name: &str, value: &[u8]) -> rustix::io::Result<()> {
        match self {
            Object::Open(fd) => rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()),
            Object::Path(_, proc) => {
                rustix::fs::setxattr(proc.as_str(), name, value, XattrFlags::empty())
            }
        }
    }

    fn set_times(&self, times: &Timestamps) -> rustix::io::Result<()> {
        match self {
            Object::Open(fd) => rustix::fs::futimens(fd, times),
            // On the descriptor itself (Linux 5.8), else through
            // `/proc/self/fd` (several times dearer: a walk of `/proc`).
            Object::Path(fd, proc) => {
                match rustix::fs::utimensat(fd, "", times, AtFlags::EMPTY_PATH) {
                    Err(Errno::INVAL) => rustix::fs::utimensat(
                        rustix::fs::CWD,
                        proc.as_str(),
                        times,
                        AtFlags::empty(),
                    ),
                    other => other,
                }
            }
        }
    }
}

/// The one body of [`set_fd_meta`] and [`set_path_fd_meta`].
fn set_meta(steps: Steps, obj: &Object<'_>, want: &FdMeta<'_>) -> Result<(), (MetaStep, Errno)> {
    if let Some((uid, gid)) = want.owner {
        steps
            .after(obj.chown(uid, gid))
            .map_err(|e| (MetaStep::Owner, e))?;
    }
    if let Some(mode) = want.mode {
        steps
            .after(obj.chmod(mode))
            .map_err(|e| (MetaStep::Mode, e))?;
    }
    for name in &want.remove_xattrs {
        steps
            .after(obj.remove_xattr(name))
            .map_err(|e| (MetaStep::Xattr(name.clone()), e))?;
    }
    for (name, value) in &want.set_xattrs {
        steps
            .after(obj.set_xattr(name, value))
            .map_err(|e| (MetaStep::Xattr(name.clone()), e))?;
    }
    match &want.times {
        Some(times) => steps
            .after(obj.set_times(times))
            .map_err(|e| (MetaStep::Times, e)),
        None => Ok(()),
    }
}
