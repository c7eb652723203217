//! Making a node and setting its metadata through its descriptor: the one
//! body [`DirLayer`](crate::DirLayer) and `oci::flatten` share.
//!
//! Metadata goes on in one order: owner first (a change of owner clears
//! setuid and file capabilities), then mode, then extended attributes, then
//! times (a change of anything else changes them). The calls of a
//! `DirLayer` are crash points ([`Steps::Counted`]); those of a flatten are
//! not, so a flatten running beside the crash test does not move its count.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

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
    if let Some((uid, gid)) = want.owner {
        steps
            .after(rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            ))
            .map_err(|e| (MetaStep::Owner, e))?;
    }
    if let Some(mode) = want.mode {
        steps
            .after(rustix::fs::fchmod(
                fd,
                Mode::from_raw_mode(mode & MODE_MASK),
            ))
            .map_err(|e| (MetaStep::Mode, e))?;
    }
    for name in &want.remove_xattrs {
        steps
            .after(rustix::fs::fremovexattr(fd, name.as_str()))
            .map_err(|e| (MetaStep::Xattr(name.clone()), e))?;
    }
    for (name, value) in &want.set_xattrs {
        steps
            .after(rustix::fs::fsetxattr(
                fd,
                name.as_str(),
                value,
                XattrFlags::empty(),
            ))
            .map_err(|e| (MetaStep::Xattr(name.clone()), e))?;
    }
    match &want.times {
        Some(times) => steps
            .after(rustix::fs::futimens(fd, times))
            .map_err(|e| (MetaStep::Times, e)),
        None => Ok(()),
    }
}
