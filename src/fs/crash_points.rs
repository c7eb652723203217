//! Crash points for the crash-consistency test (`tests/it/crash.rs`, feature
//! `crash-points`; not part of the API).
//!
//! Every system call by which a [`DirLayer`](crate::DirLayer) changes the
//! disk goes through the wrappers in `sys`; each counts one step in
//! `STEPS` after the call returns, and the process kills itself with
//! `SIGKILL` once the count reaches `CRASH_AT`. A SIGKILL can only land
//! between two system calls, so killing after the k-th one, for every k,
//! reaches every state a crash can leave. Without the feature the wrappers
//! are the plain calls and nothing is counted.

#[cfg(feature = "crash-points")]
use std::sync::atomic::{AtomicU64, Ordering};

/// The number of disk-changing system calls made so far.
#[cfg(feature = "crash-points")]
pub static STEPS: AtomicU64 = AtomicU64::new(0);

/// Kill the process after this many steps (0: never).
#[cfg(feature = "crash-points")]
pub static CRASH_AT: AtomicU64 = AtomicU64::new(0);

/// One step done: counts it, and kills the process at [`CRASH_AT`].
#[inline]
pub(crate) fn step() {
    #[cfg(feature = "crash-points")]
    {
        let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
        if CRASH_AT.load(Ordering::SeqCst) == n {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
    }
}

/// The disk-changing calls of `rustix::fs` (and the helpers of
/// `beneath`), each followed by [`step`]. Those on a descriptor
/// (`fchown`, `fchmod`, `fsetxattr`, `futimens`, ...) are counted in
/// `fs::node` (`Steps::Counted`).
pub(crate) mod sys {
    use std::os::fd::{AsFd, OwnedFd};

    use rustix::fs::{AtFlags, Dev, FileType, Gid, Mode, RenameFlags, Timestamps, Uid, XattrFlags};
    use rustix::io::Result;
    use rustix::path::Arg;

    use super::step;

    fn after<T>(r: Result<T>) -> Result<T> {
        step();
        r
    }

    pub(crate) fn chmodat<P: Arg, Fd: AsFd>(d: Fd, p: P, m: Mode, f: AtFlags) -> Result<()> {
        after(rustix::fs::chmodat(d, p, m, f))
    }

    pub(crate) fn chownat<P: Arg, Fd: AsFd>(
        d: Fd,
        p: P,
        u: Option<Uid>,
        g: Option<Gid>,
        f: AtFlags,
    ) -> Result<()> {
        after(rustix::fs::chownat(d, p, u, g, f))
    }

    pub(crate) fn fsync<Fd: AsFd>(fd: Fd) -> Result<()> {
        after(rustix::fs::fsync(fd))
    }

    pub(crate) fn ftruncate<Fd: AsFd>(fd: Fd, len: u64) -> Result<()> {
        after(rustix::fs::ftruncate(fd, len))
    }

    pub(crate) fn linkat<P: Arg, Q: Arg, PFd: AsFd, QFd: AsFd>(
        od: PFd,
        op: P,
        nd: QFd,
        np: Q,
        f: AtFlags,
    ) -> Result<()> {
        after(rustix::fs::linkat(od, op, nd, np, f))
    }

    pub(crate) fn mkdirat<P: Arg, Fd: AsFd>(d: Fd, p: P, m: Mode) -> Result<()> {
        after(rustix::fs::mkdirat(d, p, m))
    }

    pub(crate) fn mknodat<P: Arg, Fd: AsFd>(
        d: Fd,
        p: P,
        t: FileType,
        m: Mode,
        dev: Dev,
    ) -> Result<()> {
        after(rustix::fs::mknodat(d, p, t, m, dev))
    }

    pub(crate) fn removexattr<P: Arg, N: Arg>(p: P, n: N) -> Result<()> {
        after(rustix::fs::removexattr(p, n))
    }

    pub(crate) fn setxattr<P: Arg, N: Arg>(p: P, n: N, v: &[u8], f: XattrFlags) -> Result<()> {
        after(rustix::fs::setxattr(p, n, v, f))
    }

    pub(crate) fn renameat<P: Arg, Q: Arg, PFd: AsFd, QFd: AsFd>(
        od: PFd,
        op: P,
        nd: QFd,
        np: Q,
    ) -> Result<()> {
        after(rustix::fs::renameat(od, op, nd, np))
    }

    pub(crate) fn renameat_with<P: Arg, Q: Arg, PFd: AsFd, QFd: AsFd>(
        od: PFd,
        op: P,
        nd: QFd,
        np: Q,
        f: RenameFlags,
    ) -> Result<()> {
        after(rustix::fs::renameat_with(od, op, nd, np, f))
    }

    pub(crate) fn symlinkat<P: Arg, Q: Arg, Fd: AsFd>(target: P, d: Fd, p: Q) -> Result<()> {
        after(rustix::fs::symlinkat(target, d, p))
    }

    pub(crate) fn unlinkat<P: Arg, Fd: AsFd>(d: Fd, p: P, f: AtFlags) -> Result<()> {
        after(rustix::fs::unlinkat(d, p, f))
    }

    pub(crate) fn utimensat<P: Arg, Fd: AsFd>(
        d: Fd,
        p: P,
        t: &Timestamps,
        f: AtFlags,
    ) -> Result<()> {
        after(rustix::fs::utimensat(d, p, t, f))
    }

    pub(crate) fn write_all_at(fd: &OwnedFd, data: &[u8], offset: u64) -> Result<()> {
        after(crate::fs::beneath::write_all_at(fd, data, offset))
    }

    pub(crate) fn copy_fd(from: &OwnedFd, to: &OwnedFd) -> Result<()> {
        after(crate::fs::beneath::copy_fd(from, to))
    }
}
