//! Disk I/O confined beneath a root directory descriptor: the helpers that
//! [`DirLayer`](crate::DirLayer) and `oci::flatten` share, by the rules of
//! [the crate docs](crate#confinement-on-disk).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Operation};
use crate::path::{LayerPath, Name, PathLike};

pub(crate) const OPENAT2_RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Opens `path` beneath `root` without following any symlink. A symlink on
/// the way is `ENOTDIR`.
pub(crate) fn open_beneath(
    root: &impl AsFd,
    path: &LayerPath,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    let rel: &[u8] = if path.is_root() {
        b"."
    } else {
        path.as_bytes()
    };
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat2(root, rel, flags, Mode::empty(), OPENAT2_RESOLVE) {
        Err(Errno::NOSYS) => walk_open(root, path, flags),
        // A symlink on the way: not a directory, as far as a layer is
        // concerned.
        Err(Errno::LOOP) | Err(Errno::XDEV) => Err(Errno::NOTDIR),
        other => other,
    }
}

/// The fallback without `openat2`: one `O_PATH | O_NOFOLLOW` open per
/// component (names are validated, so none is `..`).
fn walk_open(root: &impl AsFd, path: &LayerPath, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur = rustix::fs::openat(root, ".", dir_flags, Mode::empty())?;
    let names: Vec<&[u8]> = path.names().map(Name::as_bytes).collect();
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let f = if last { flags } else { dir_flags };
        cur = match rustix::fs::openat(&cur, *name, f, Mode::empty()) {
            Err(Errno::LOOP) => return Err(Errno::NOTDIR),
            other => other?,
        };
    }
    if names.is_empty() {
        cur = rustix::fs::openat(root, ".", flags, Mode::empty())?;
    }
    Ok(cur)
}

/// An `O_PATH` descriptor of `name` in `dir` itself (a symlink is not
/// followed): something to stat, or to reach through `/proc/self/fd`.
pub(crate) fn open_o_path<P: rustix::path::Arg>(
    dir: &impl AsFd,
    name: P,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `/proc/self/fd/N` for a descriptor: the way to reach exactly that inode
/// (even a symlink or a device opened with `O_PATH`) by path.
pub(crate) fn proc_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Whether `/proc` is a real procfs, not a directory of look-alike
/// symlinks (in a chroot, say): its magic links are trusted to lead to our
/// descriptors.
pub(crate) fn procfs_is_mounted() -> bool {
    rustix::fs::open(
        "/proc/self/fd",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(|fd| rustix::fs::fstatfs(&fd))
    .is_ok_and(|st| st.f_type == rustix::fs::PROC_SUPER_MAGIC)
}

/// Reads the raw xattrs of the object `fd` (an `O_PATH` descriptor, which
/// has no xattr calls of its own: through `/proc/self/fd`).
pub(crate) fn raw_xattrs(fd: &OwnedFd) -> rustix::io::Result<Vec<(String, Vec<u8>)>> {
    let proc = proc_path(fd);
    read_xattrs(
        |buf| rustix::fs::listxattr(&proc, buf),
        |name, buf| rustix::fs::getxattr(&proc, name, buf),
    )
}

/// Reads the raw xattrs of the open file or directory `fd` through the
/// descriptor itself (no walk of `/proc`, several times cheaper than
/// [`raw_xattrs`]).
pub(crate) fn raw_xattrs_open(fd: &OwnedFd) -> rustix::io::Result<Vec<(String, Vec<u8>)>> {
    read_xattrs(
        |buf| rustix::fs::flistxattr(fd, buf),
        |name, buf| rustix::fs::fgetxattr(fd, name, buf),
    )
}

/// The xattrs that `list` (`listxattr`) names and `get` (`getxattr`) reads.
fn read_xattrs(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&str, &mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match list(&mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::new();
    for raw in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        let mut value = vec![0u8; 256];
        let n = loop {
            match get(name, &mut value[..]) {
                Ok(n) => break Some(n),
                Err(Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e),
            }
        };
        if let Some(n) = n {
            value.truncate(n);
            out.push((name.to_owned(), value));
        }
    }
    Ok(out)
}

pub(crate) fn write_all_at(
    fd: &OwnedFd,
    mut data: &[u8],
    mut offset: u64,
) -> rustix::io::Result<()> {
    while !data.is_empty() {
        let n = rustix::io::pwrite(fd, data, offset)?;
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Copies a whole file: a reflink where the filesystem shares blocks, else
/// `copy_file_range` (in-kernel), else plain reads and writes. A file with
/// holes (fewer blocks than its size) keeps them: only its data regions
/// (`SEEK_DATA` / `SEEK_HOLE`) are copied, and the copy is then given the
/// size, so a 60 GiB sparse file never takes 60 GiB.
pub(crate) fn copy_fd(from: &OwnedFd, to: &OwnedFd) -> rustix::io::Result<()> {
    if rustix::fs::ioctl_ficlone(to, from).is_ok() {
        return Ok(());
    }
    let st = rustix::fs::fstat(from)?;
    let len = u64::try_from(st.st_size).unwrap_or(0);
    let allocated = u64::try_from(st.st_blocks)
        .unwrap_or(u64::MAX)
        .saturating_mul(512);
    if allocated >= len {
        return copy_range(from, to, 0, len);
    }
    let mut at = 0u64;
    while at < len {
        let start = match rustix::fs::seek(from, rustix::fs::SeekFrom::Data(at)) {
            Ok(start) => start,
            // No data after `at`: the rest is a hole.
            Err(Errno::NXIO) => break,
            // No `SEEK_DATA` here: copy it all.
            Err(Errno::INVAL | Errno::OPNOTSUPP) if at == 0 => return copy_range(from, to, 0, len),
            Err(e) => return Err(e),
        };
        let end = rustix::fs::seek(from, rustix::fs::SeekFrom::Hole(start))?.min(len);
        copy_range(from, to, start, end)?;
        at = end;
    }
    rustix::fs::ftruncate(to, len)
}

/// Copies bytes `start..end` of `from` to the same offsets of `to`.
fn copy_range(from: &OwnedFd, to: &OwnedFd, start: u64, end: u64) -> rustix::io::Result<()> {
    let mut in_off = start;
    let mut out_off = start;
    while in_off < end {
        let want = usize::try_from(end - in_off)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut in_off), to, Some(&mut out_off), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                let mut buf = vec![0u8; (1 << 20).min(want)];
                while in_off < end {
                    let cap = usize::try_from(end - in_off)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let n = rustix::io::pread(from, &mut buf[..cap], in_off)?;
                    if n == 0 {
                        return Ok(());
                    }
                    write_all_at(to, &buf[..n], out_off)?;
                    in_off += n as u64;
                    out_off += n as u64;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The error kind of a system call's errno (`EIO` for one without a kind).
pub(crate) fn errno_kind(e: Errno) -> ErrorKind {
    ErrorKind::from_errno(e.raw_os_error()).unwrap_or(ErrorKind::Io)
}

/// An error for `op` on `path` from a system call's errno; the errno's text
/// is the cause only where the kind says less (`EIO`).
pub(crate) fn errno_error(e: Errno, op: Operation, path: impl PathLike) -> Error {
    let kind = errno_kind(e);
    let err = Error::new(kind, op, path);
    if kind == ErrorKind::Io {
        err.with_detail(e.to_string())
    } else {
        err
    }
}
