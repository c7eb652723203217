//! (feature `mount`) A [`MergedView`] as a mounted filesystem, through FUSE:
//! any program uses the merged tree with ordinary system calls, without the
//! kernel's overlayfs.
//!
//! ```no_run
//! use std::sync::Arc;
//! use layerstack::mount::{MountOptions, mount};
//! use layerstack::{Layer, MemLayer, MergedView};
//!
//! let mut base = MemLayer::new();
//! base.add_file("etc/motd", "hello\n")?;
//! let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new())?;
//! let mounted = mount(view, "/mnt/merged", &MountOptions::default())?;
//! std::fs::write("/mnt/merged/etc/motd", "changed\n").unwrap(); // a copy-up
//! let view = mounted.unmount()?;
//! assert_eq!(view.read_to_string("etc/motd")?, "changed\n");
//! # Ok::<(), layerstack::Error>(())
//! ```
//!
//! # Semantics
//!
//! - Node ids are the view's merged inode numbers (stable across copy-up),
//!   the root being FUSE's node 1; `st_ino` is the view's number.
//! - Lookup counts are exact (lookup, create, mknod, mkdir, symlink, link
//!   and each readdirplus entry count one; forget releases), so the node
//!   table holds what the kernel holds, plus the directories above a node
//!   it holds (each known name keeps its directory, so a file the kernel
//!   holds through one hard link keeps a path after the kernel forgot the
//!   directory of another).
//! - Removing a name the node table knows leaves the node the same object
//!   when the file has other names (`nlink` over 1 before): a later lookup
//!   of one finds the same node and generation, and open descriptors go on.
//! - Hard links of a lower file with [`HardLinkCopyUp::Break`] (the
//!   kernel's `index=off`, the default): each name is a node of its own
//!   (ids from 2^63 up, far above the view's numbers), as each name is an
//!   inode of its own on the kernel's overlayfs. A write, `chmod` or any
//!   other change through one name copies up that name only, and the
//!   others keep the lower file. `stat` shows what the kernel shows: the
//!   lower file's number and link count for every name before a copy-up,
//!   the copy's own number and count 1 after it. fuser 0.18 sends an
//!   entry's node id as its `st_ino`, so these nodes' attributes are never
//!   cached: `stat` asks again and gets the view's number. (The other way,
//!   one node for every name and `inval_entry` after a copy-up, cannot be
//!   exact: `open` and `setattr` name only the node, so the mount could
//!   not tell which name to copy up.) A `link(2)` to such a name copies it
//!   up, and its new name is served by the same node (one upper file, one
//!   kernel inode). With [`HardLinkCopyUp::Keep`] (`index=on`) the names
//!   are one file and one node, as the kernel keeps them.
//! - Directory cookies index a listing snapshotted at `opendir` and taken
//!   again by `rewinddir` (a read from the start after the first); names
//!   removed since are left out, names added since are listed after a
//!   `rewinddir`.
//! - `chown(-1, -1)`, which reaches FUSE as a `setattr` of nothing, copies
//!   up and sets the ctime, as on the kernel's overlayfs (a merged
//!   directory then shows `nlink` 1).
//! - `fsync` of a directory syncs the upper's directory
//!   ([`MergedView::sync_dir`]).
//! - The kernel caches what it can, since every change goes through the
//!   mount: names and attributes for 60 s, a file's pages from one open
//!   to the next while its modification time and size stay (so a warm
//!   read asks nothing), a directory's listing while no change touches it
//!   (and the mount keeps the listing as long). A change made meanwhile
//!   through [`Mounted::view`] shows within the 60 s, and in a file's
//!   pages at its next open, not in one open now.
//! - Files are opened as the view's inode-following handles
//!   ([`MergedView::open_handle`]): reads and writes go on after a rename
//!   or an unlink, and `fstat` then shows `nlink` 0, as on the kernel.
//! - Open flags map directly: `O_TRUNC`, `O_APPEND`, `O_TRUNC|O_APPEND`.
//! - New objects belong to the caller (the group of a setgid parent), with
//!   the caller's umask applied.
//! - `RENAME_NOREPLACE` and `RENAME_EXCHANGE` are the view's; as on the
//!   kernel's overlayfs, `RENAME_WHITEOUT` is refused (`EINVAL`).
//! - `ENAMETOOLONG` for a component over 255 bytes.
//! - With `default_permissions` (the default) the kernel checks mode bits
//!   and owners; without it, nothing is checked.
//! - The mount is `nodev,nosuid` (fuser's defaults): device nodes and
//!   setuid bits are kept as metadata, never honoured.
//!
//! # Limitations
//!
//! - The view is addressed by path, so a path deeper than 4095 bytes from
//!   the mount's root fails with `ENAMETOOLONG`, where the kernel's
//!   overlayfs has no such limit.
//! - `chmod`, `chown` and `utimes` of an unlinked open file (`fchmod` of an
//!   orphan) fail with `ENOENT`; `ftruncate`, reads and writes work.
//! - Extended attributes of symlinks can be read, not set (`EPERM`).
//! - `fallocate` only extends a file (mode 0); other modes are
//!   `EOPNOTSUPP`.
//! - In a listing read with readdirplus, `d_ino` of a name of a lower file
//!   with several names (under `Break`) is its node's id: fuser 0.18 sends
//!   one number as both. `stat` of the name shows the kernel's number.
//!
//! [`HardLinkCopyUp::Break`]: crate::merged::HardLinkCopyUp::Break
//! [`HardLinkCopyUp::Keep`]: crate::merged::HardLinkCopyUp::Keep

mod attr;
mod fs;
mod inodes;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::view::MergedView;

/// How a view is mounted.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// The source shown in `/proc/self/mountinfo` (`fsname=`), default
    /// `"layerstack"`.
    pub fs_name: String,
    /// Mount read-only (`ro`): every change fails with `EROFS`.
    pub read_only: bool,
    /// `allow_other`: other users see the mount. It needs root or
    /// `user_allow_other` in `/etc/fuse.conf` (fusermount3 refuses it
    /// otherwise), so the default is true only then
    /// ([`allow_other_permitted`]).
    pub allow_other: bool,
    /// `default_permissions` (default true: the kernel checks mode bits).
    pub default_permissions: bool,
    /// Worker threads serving requests (default: the available
    /// parallelism, at least 2).
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            fs_name: "layerstack".to_owned(),
            read_only: false,
            allow_other: allow_other_permitted(),
            default_permissions: true,
            threads: std::thread::available_parallelism()
                .map_or(2, std::num::NonZeroUsize::get)
                .max(2),
        }
    }
}

/// Whether this process may mount with `allow_other`: as root, or where
/// `/etc/fuse.conf` has a line `user_allow_other` (what fusermount3
/// checks).
#[must_use]
pub fn allow_other_permitted() -> bool {
    rustix::process::geteuid().is_root()
        || std::fs::read_to_string("/etc/fuse.conf").is_ok_and(|conf| fuse_conf_allows_other(&conf))
}

/// Whether `/etc/fuse.conf`'s text `conf` has `user_allow_other` on a line
/// of its own (blanks around it allowed; `#` starts a comment), read as
/// fusermount3 reads it: a line without its newline (the last) or longer
/// than its 255-byte buffer counts for nothing.
fn fuse_conf_allows_other(conf: &str) -> bool {
    conf.split_inclusive('\n')
        .filter(|line| line.ends_with('\n') && line.len() <= 255)
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .any(|line| line == "user_allow_other")
}

/// Mounts `view` at `mountpoint` (an existing directory) and serves it on
/// background threads. Returns once the kernel has the mount: a `stat` of
/// the mount point shows it.
///
/// # Errors
/// `ENOENT`/`ENOTDIR` for the mount point, `EPERM` or `EACCES` without the
/// right to mount (not root and no `fusermount3`), errors of `/dev/fuse`.
pub fn mount(
    view: MergedView,
    mountpoint: impl AsRef<Path>,
    options: &MountOptions,
) -> Result<Mounted> {
    mount_inner(view, mountpoint.as_ref(), options)
}

fn io_error(e: &io::Error, op: Operation, path: &Path) -> Error {
    Error::from_io(e, op, path)
}

fn mount_inner(view: MergedView, mountpoint: &Path, options: &MountOptions) -> Result<Mounted> {
    let op = Operation::Mount;
    let canonical = mountpoint
        .canonicalize()
        .map_err(|e| io_error(&e, op, mountpoint))?;
    let view = Arc::new(view);
    let inodes = Arc::new(Mutex::new(inodes::Inodes::default()));
    let notifier = Arc::new(std::sync::OnceLock::new());
    let fs = fs::LayerFs::new(
        Arc::clone(&view),
        Arc::clone(&inodes),
        Arc::clone(&notifier),
    )
    .map_err(|e| e.reframe(op, mountpoint))?;

    let mut mount_options = vec![
        fuser::MountOption::FSName(options.fs_name.clone()),
        // The type shows as `fuse.layerstack`: the kernel takes `subtype=`
        // as one of its own options (fuser passes its `Subtype` only to
        // fusermount3, which takes this form too).
        fuser::MountOption::CUSTOM("subtype=layerstack".to_owned()),
    ];
    if options.default_permissions {
        mount_options.push(fuser::MountOption::DefaultPermissions);
    }
    mount_options.push(if options.read_only {
        fuser::MountOption::RO
    } else {
        fuser::MountOption::RW
    });
    let mut config = fuser::Config::default();
    config.mount_options = mount_options;
    config.acl = if options.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    // Each worker reads its own clone of the device (no contention on one
    // descriptor).
    config.clone_fd = true;

    let session =
        fuser::Session::new(fs, &canonical, &config).map_err(|e| io_error(&e, op, mountpoint))?;
    // Before any request is served: the filesystem tells the kernel what
    // a change made stale elsewhere through it.
    let _ = notifier.set(session.notifier());
    let thread = std::thread::Builder::new()
        .name("layerstack-mount".to_owned())
        .spawn(move || session.run())
        .map_err(|e| io_error(&e, op, mountpoint))?;
    // Served from here on: the stat is answered by the workers.
    let dev = match rustix::fs::stat(&canonical) {
        Ok(st) => st.st_dev,
        Err(e) => {
            // The mount answers nothing useful: take it down (lazily: no
            // one can have a file of it open yet) rather than leave it.
            let _ = rustix::mount::unmount(&canonical, rustix::mount::UnmountFlags::DETACH);
            let _ = thread.join();
            return Err(io_error(&e.into(), op, mountpoint)
                .with_detail("the new mount did not answer a stat; unmounted"));
        }
    };
    Ok(Mounted {
        view: Some(view),
        inodes,
        thread: Some(thread),
        unmounter: Unmounter {
            mountpoint: canonical,
            dev,
        },
    })
}

/// A live mount. Dropping it unmounts; while the mount is in use (`EBUSY`)
/// it is detached instead (a lazy unmount: gone from the tree at once,
/// served until the last file open in it is closed), so that no dead mount
/// outlives the process. [`Mounted::unmount`] reports the error instead.
#[derive(Debug)]
#[must_use = "dropping a mount unmounts it"]
pub struct Mounted {
    view: Option<Arc<MergedView>>,
    inodes: Arc<Mutex<inodes::Inodes>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    unmounter: Unmounter,
}

impl Mounted {
    /// The mount point (canonical).
    #[must_use]
    pub fn mountpoint(&self) -> &Path {
        &self.unmounter.mountpoint
    }

    /// The view being served. Its own changes show through the mount as
    /// they are made; changes made through it directly show once the
    /// kernel's caches expire (see the module docs).
    #[must_use]
    pub fn view(&self) -> &MergedView {
        self.view.as_ref().expect("a live mount has its view")
    }

    /// How many nodes besides the root the kernel holds now (looked up and
    /// not yet forgotten, or open): what the node table keeps. After the
    /// kernel drops its caches (`echo 2 > /proc/sys/vm/drop_caches`) with
    /// nothing open, 0.
    #[must_use]
    pub fn known_nodes(&self) -> usize {
        fs::lock(&self.inodes).len()
    }

    /// Unmounts (not lazily: `EBUSY` while a file of the mount is in use,
    /// and the mount then goes on) and gives the view back, so the caller
    /// can commit it.
    ///
    /// # Errors
    /// `EBUSY` while the mount is in use; the errors of `umount2`.
    pub fn unmount(mut self) -> Result<MergedView> {
        self.unmounter.unmount()?;
        self.finish()
    }

    /// Blocks until the mount is unmounted from outside (`umount`,
    /// `fusermount3 -u`, or an [`Unmounter`]) and gives the view back.
    ///
    /// # Errors
    /// `EIO` if the serving threads failed.
    pub fn wait(mut self) -> Result<MergedView> {
        self.finish()
    }

    /// A handle another thread (a signal handler's) can use to unmount this
    /// mount, making [`Mounted::wait`] return.
    #[must_use]
    pub fn unmounter(&self) -> Unmounter {
        self.unmounter.clone()
    }

    fn finish(&mut self) -> Result<MergedView> {
        let op = Operation::Unmount;
        let path = self.unmounter.mountpoint.clone();
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(io_error(&e, op, &path)),
                Err(_) => {
                    return Err(Error::new(ErrorKind::Io, op, &path)
                        .with_detail("a thread serving the mount panicked"));
                }
            }
        }
        let view = self.view.take().expect("a live mount has its view");
        let view = Arc::try_unwrap(view).map_err(|_| {
            Error::new(ErrorKind::Busy, op, &path)
                .with_detail("the filesystem still holds the view")
        })?;
        // What the kernel did not release (a lazy unmount with files
        // open): closed here, so the view can be committed.
        for h in view.open_handles() {
            let _ = view.close_handle(h);
        }
        Ok(view)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        if self.unmounter.unmount().is_ok() {
            let _ = self.finish();
        } else if self.unmounter.detach().is_ok() {
            // The serving thread is left to end by itself once the kernel
            // lets the connection go: joining it here could wait for a
            // file this very thread holds open.
            self.thread.take();
        }
    }
}

/// Cloneable and `Send`: [`Unmounter::unmount`] unmounts the mount it came
/// from.
#[derive(Clone, Debug)]
pub struct Unmounter {
    mountpoint: PathBuf,
    /// The device of the mount, to tell it from what is under it.
    dev: u64,
}

impl Unmounter {
    /// Unmounts the mount (not lazily). Nothing to do if it is already
    /// gone.
    ///
    /// # Errors
    /// `EBUSY` while the mount is in use; the errors of `umount2` and of
    /// `fusermount3 -u` (without root).
    pub fn unmount(&self) -> Result<()> {
        let op = Operation::Unmount;
        let path = &self.mountpoint;
        match rustix::fs::stat(path) {
            // Already unmounted: what is there now is not ours to unmount.
            Ok(st) if st.st_dev != self.dev => return Ok(()),
            Ok(_) => {}
            // A dead connection (ENOTCONN) still needs its unmount.
            Err(rustix::io::Errno::NOTCONN) => {}
            Err(e) => return Err(io_error(&e.into(), op, path)),
        }
        match rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
            Err(rustix::io::Errno::PERM) => fusermount_unmount(path),
            Err(e) => Err(io_error(&e.into(), op, path)),
        }
    }
}

impl Unmounter {
    /// Detaches the mount (`umount2(MNT_DETACH)`, `fusermount3 -u -z`
    /// without root): it leaves the tree at once and is served until the
    /// last file open in it is closed.
    fn detach(&self) -> Result<()> {
        let path = &self.mountpoint;
        match rustix::fs::stat(path) {
            Ok(st) if st.st_dev != self.dev => return Ok(()),
            Ok(_) | Err(rustix::io::Errno::NOTCONN) => {}
            Err(e) => return Err(io_error(&e.into(), Operation::Unmount, path)),
        }
        match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
            Err(rustix::io::Errno::PERM) => fusermount(path, true),
            Err(e) => Err(io_error(&e.into(), Operation::Unmount, path)),
        }
    }
}

/// `fusermount3 -u` (else `fusermount -u`): how a user who mounted
/// through the setuid helper unmounts.
fn fusermount_unmount(path: &Path) -> Result<()> {
    fusermount(path, false)
}

/// `fusermount3 -u`, with `-z` (lazily) if `lazy`; else `fusermount`.
fn fusermount(path: &Path, lazy: bool) -> Result<()> {
    let op = Operation::Unmount;
    let mut last = None;
    for tool in ["fusermount3", "fusermount"] {
        let mut command = Command::new(tool);
        command.arg("-u");
        if lazy {
            command.arg("-z");
        }
        match command.arg("--").arg(path).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let msg = String::from_utf8_lossy(&out.stderr);
                let msg = crate::path::escape_message(msg.trim().as_bytes());
                let kind = if msg.contains("busy") {
                    ErrorKind::Busy
                } else {
                    ErrorKind::NotPermitted
                };
                return Err(Error::new(kind, op, path).with_detail(format!("{tool}: {msg}")));
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("a tool was tried");
    Err(io_error(&e, op, path).with_detail("neither fusermount3 nor fusermount could be run"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_allow_other_is_read_as_fusermount3_reads_it() {
        assert!(fuse_conf_allows_other("user_allow_other\n"));
        assert!(fuse_conf_allows_other(
            "# mount_max = 1000\n  user_allow_other  # for everyone\n"
        ));
        assert!(!fuse_conf_allows_other("#user_allow_other\n"));
        assert!(!fuse_conf_allows_other("mount_max = 10\n"));
        assert!(!fuse_conf_allows_other("user_allow_other_not\n"));
        assert!(!fuse_conf_allows_other(""));
        // fusermount3 skips a last line without its newline, and a line
        // too long for its buffer.
        assert!(!fuse_conf_allows_other("user_allow_other"));
        assert!(!fuse_conf_allows_other("# x\nuser_allow_other"));
        let long = format!("user_allow_other{}\n", " ".repeat(240));
        assert!(!fuse_conf_allows_other(&long));
        assert!(fuse_conf_allows_other(&format!(
            "user_allow_other{}\n",
            " ".repeat(200)
        )));
    }
}
