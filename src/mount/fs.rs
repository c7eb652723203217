//! The `fuser::Filesystem` over a [`MergedView`]: each request finds its
//! node's path in the node table and asks the view, by path, or by handle
//! for open files.
//!
//! Consistency between the table and the view: every request that changes
//! names (create, mknod, mkdir, symlink, link, unlink, rmdir, rename)
//! holds the namespace lock for writing, from computing its paths until the
//! table is updated; every other request holds it for reading while it
//! uses a path, so it never uses a path a concurrent rename made stale.
//! Reads and writes through open handles take no namespace lock at all.
//!
//! # What the kernel may cache
//!
//! Every change reaches the view through this filesystem, and the kernel
//! drops what a change of its own makes stale (the attributes and names
//! it touches, the pages of a file it writes or truncates, the cached
//! listing of a directory it changes). So the kernel keeps:
//!
//! - names and attributes for [`TTL`];
//! - a file's pages from one open to the next (`FOPEN_KEEP_CACHE`) when
//!   the file's modification time and size are what they were when it was
//!   last opened or closed here: what changes a file other than through
//!   the kernel's own pages (a change made through [`super::Mounted::view`])
//!   changes one of them, and the pages are then dropped;
//! - a directory's listing (`FOPEN_CACHE_DIR`), kept from one `opendir` to
//!   the next (`FOPEN_KEEP_CACHE`) until a change here touches the
//!   directory or its modification time or link count moves. This side
//!   keeps the directory's snapshot for as long, so an `opendir` of an
//!   unchanged directory lists nothing again.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::dir::DirLayer;
use crate::merged::{HandleId, HardLinkCopyUp, OpenOptions, RenameMode};
use crate::meta::{FileType, Metadata, S_ISGID};
use crate::path::{Name, NameBuf};
use crate::view::MergedView;

use super::attr::{decode_dev, errno, file_attr, kind, type_of_mode};
use super::inodes::{Inodes, PER_NAME_BASE, ROOT_ID, node_id};

/// How long the kernel may keep names and attributes: every change goes
/// through this filesystem, and the kernel drops what a change of its own
/// makes stale, so a long time is safe; a minute bounds how long a change
/// made through [`super::Mounted::view`] can go unseen.
const TTL: Duration = Duration::from_secs(60);

/// The longest name of one component (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// A directory's names and types, as listed once (shared by the handles
/// that read it while the directory does not change).
type Entries = Arc<Vec<(NameBuf, FileType)>>;

/// A listing for one directory handle: its cookies index this list. A
/// read from offset 0 (the first, or a `rewinddir`) takes the directory's
/// current listing, so no handle opened before a change can fill the
/// kernel's shared cache of the directory (`FOPEN_CACHE_DIR`) with names
/// as they were.
#[derive(Debug)]
struct DirSnapshot {
    entries: Entries,
}

/// What an entry reply hands the kernel: the attributes (numbered with
/// the node id), the generation, and how long the attributes hold.
struct NodeEntry {
    attr: FileAttr,
    generation: Generation,
    attr_ttl: Duration,
}

/// Whether `id` is a per-name node (see the module docs): its attributes
/// are never cached, so that `stat` shows the view's number, not the id.
fn per_name(id: u64) -> bool {
    id >= PER_NAME_BASE
}

/// How long the kernel may keep the attributes of node `id`.
fn attr_ttl(id: u64) -> Duration {
    if per_name(id) { Duration::ZERO } else { TTL }
}

/// What a file or directory looked like when the kernel last cached it:
/// its modification time and size, and a directory's link count (a
/// file's changes as it is linked and unlinked: not a change of its data).
type Stamp = (crate::meta::Timestamp, u64, u64);

fn stamp(meta: &Metadata) -> Stamp {
    let nlink = if meta.file_type.is_dir() {
        meta.nlink
    } else {
        0
    };
    (meta.mtime, meta.size, nlink)
}

/// What the kernel was last given to cache for a node (see the module
/// docs).
#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    /// For a directory, the snapshot its last `opendir` listed.
    listing: Option<Entries>,
}

/// The filesystem (see the module docs).
#[derive(Debug)]
pub(super) struct LayerFs {
    view: Arc<MergedView>,
    /// The view's number of its root directory.
    root_ino: u64,
    namespace: RwLock<()>,
    /// Shared with [`super::Mounted`], which reports its size.
    inodes: Arc<Mutex<Inodes>>,
    dirs: Mutex<HashMap<u64, Arc<DirSnapshot>>>,
    next_dir: AtomicU64,
    /// By node id, while the table knows the node.
    cached: Mutex<HashMap<u64, Cached>>,
    /// Bumped by each change made under the namespace lock for reading
    /// that can change a listing (a per-name node's copy-up gives it a new
    /// number): a listing taken across one is not kept.
    listing_epoch: AtomicU64,
    /// Directory nodes known to be in the upper layer already: a change
    /// below any other copies it up, which changes its attributes (a
    /// lower directory becomes a merged one, `nlink` 1), and the kernel is
    /// told to drop the ones it holds.
    upper_dirs: Mutex<std::collections::HashSet<u64>>,
    /// Set once the session exists (see `super::mount_inner`).
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `ENAMETOOLONG` for a component over 255 bytes, as the kernel's
/// filesystems answer (the VFS leaves the check to them).
fn check_name(name: &OsStr, op: Operation) -> Result<&Name> {
    let name = Name::new(name.as_bytes());
    if name.len() > NAME_MAX {
        return Err(Error::new(ErrorKind::NameTooLong, op, name));
    }
    Ok(name)
}

fn xattr_name(name: &OsStr, op: Operation) -> Result<&str> {
    name.to_str().ok_or_else(|| {
        Error::new(ErrorKind::Unsupported, op, name.as_bytes())
            .with_detail("extended attribute names must be UTF-8 here")
    })
}

fn reply_entry(reply: ReplyEntry, r: Result<NodeEntry>) {
    match r {
        Ok(e) => reply.entry_with_ttls(&e.attr_ttl, &TTL, &e.attr, e.generation),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// The options of an `open(2)` with `flags`, and whether it truncates
/// separately (`O_TRUNC` with `O_APPEND` or read-only, which the view's
/// options do not combine).
fn open_options(flags: i32) -> (OpenOptions, bool) {
    let (read, write) = match OpenFlags(flags).acc_mode() {
        OpenAccMode::O_RDONLY => (true, false),
        OpenAccMode::O_WRONLY => (false, true),
        OpenAccMode::O_RDWR => (true, true),
    };
    let append = flags & libc_flags::O_APPEND != 0;
    let truncate = flags & libc_flags::O_TRUNC != 0;
    let mut o = OpenOptions::new();
    o.read(read).write(write).append(append);
    let separate = truncate && (append || !write);
    if truncate && !separate {
        o.truncate(true);
    }
    (o, separate)
}

/// The open flags this module reads (Linux's values on every architecture
/// fuser supports).
mod libc_flags {
    pub const O_APPEND: i32 = 0o2000;
    pub const O_TRUNC: i32 = 0o1000;
    pub const O_EXCL: i32 = 0o200;
    pub const XATTR_CREATE: i32 = 1;
    pub const XATTR_REPLACE: i32 = 2;
}

impl LayerFs {
    pub(super) fn new(
        view: Arc<MergedView>,
        inodes: Arc<Mutex<Inodes>>,
        notifier: Arc<OnceLock<fuser::Notifier>>,
    ) -> Result<LayerFs> {
        let root_ino = view.symlink_metadata("/")?.ino;
        Ok(LayerFs {
            view,
            root_ino,
            namespace: RwLock::new(()),
            inodes,
            dirs: Mutex::new(HashMap::new()),
            next_dir: AtomicU64::new(1),
            cached: Mutex::new(HashMap::new()),
            listing_epoch: AtomicU64::new(0),
            upper_dirs: Mutex::new(std::collections::HashSet::new()),
            notifier,
        })
    }

    fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn renaming(&self) -> RwLockWriteGuard<'_, ()> {
        self.namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, id: u64, op: Operation) -> Result<Vec<u8>> {
        lock(&self.inodes).path(id, op)
    }

    fn child_path(&self, parent: u64, name: &Name, op: Operation) -> Result<Vec<u8>> {
        lock(&self.inodes).child_path(parent, name, op)
    }

    /// The number the kernel shows as `st_ino` for node `id`, whose
    /// object the view numbers `ino`.
    fn shown_ino(&self, id: u64, ino: u64) -> u64 {
        if id == ROOT_ID {
            self.root_ino
        } else if per_name(id) {
            node_id(ino, self.root_ino)
        } else {
            id
        }
    }

    /// Whether the kernel may keep the pages it cached of file node `id`,
    /// which is `meta` now (see the module docs); remembers `meta`.
    fn keep_cache(&self, id: u64, meta: &Metadata) -> bool {
        let now = stamp(meta);
        let mut cached = lock(&self.cached);
        let keep = cached.get(&id).is_some_and(|c| c.stamp == now);
        if !keep {
            cached.insert(
                id,
                Cached {
                    stamp: now,
                    listing: None,
                },
            );
        }
        keep
    }

    /// The kernel's pages of file node `id` are `meta` (what was written
    /// through them is in).
    fn cached_as(&self, id: u64, meta: &Metadata) {
        let mut cached = lock(&self.cached);
        let c = cached.entry(id).or_insert(Cached {
            stamp: stamp(meta),
            listing: None,
        });
        c.stamp = stamp(meta);
    }

    /// A change made here touched directory node `id` (an entry added,
    /// removed or renamed; for a directory moved, its `..`): its listing is
    /// read again, and the kernel's dropped, at the next `opendir`.
    fn dir_changed(&self, id: u64) {
        lock(&self.cached).remove(&id);
    }

    /// A change may have copied node `id` up: for a per-name node (a name
    /// of a lower file with several, see `node_for`) that gives it a new
    /// number, so the listing of its directory is read again.
    fn maybe_copied_up(&self, id: u64) {
        if per_name(id) {
            self.listing_epoch.fetch_add(1, Ordering::SeqCst);
            let parent = lock(&self.inodes).parent(id);
            self.dir_changed(parent);
        }
    }

    /// After a change of node `id` that may copy it up: `done` if it
    /// succeeded. One that failed may have copied up all the same (the
    /// view copies up first and the upper layer then refuses, a bad
    /// attribute name say, as the kernel's overlayfs does): then too the
    /// directories above it are in the upper layer.
    fn after_change(&self, id: u64, done: bool) {
        self.maybe_copied_up(id);
        if done || self.in_upper(id) {
            self.copied_up_from(id);
        }
    }

    /// Whether node `id`'s path names something in the upper layer.
    fn in_upper(&self, id: u64) -> bool {
        let _ns = self.reading();
        let Ok(path) = self.path(id, Operation::Lookup) else {
            return false;
        };
        // The upper holds each object at its merged path.
        let relative: &[u8] = &path[path.iter().take_while(|&&b| b == b'/').count()..];
        let Ok(path) = crate::LayerPath::new(relative) else {
            return false;
        };
        self.view.with_upper(
            |upper| matches!(upper.lookup(&path), Ok(Some(node)) if !node.is_whiteout()),
        )
    }

    /// A change below directory node `dir` (or of `dir` itself) succeeded:
    /// every directory from it up to the root is in the upper layer now.
    /// Those that were not may show other attributes (a lower directory
    /// become merged has `nlink` 1): the kernel drops what it holds of
    /// them, which its listings cached here would no longer refresh.
    fn copied_up_from(&self, dir: u64) {
        let mut chain = Vec::new();
        {
            let inodes = lock(&self.inodes);
            let upper = lock(&self.upper_dirs);
            let mut at = dir;
            while !upper.contains(&at) && chain.len() <= 4096 {
                chain.push(at);
                if at == ROOT_ID {
                    break;
                }
                at = inodes.parent(at);
            }
        }
        if chain.is_empty() {
            return;
        }
        if let Some(notifier) = self.notifier.get() {
            for id in &chain {
                // Attributes only (a negative offset): no pages to drop.
                let _ = notifier.inval_inode(INodeNo(*id), -1, 0);
            }
        }
        lock(&self.upper_dirs).extend(chain);
    }

    /// Node `id` may have left the table: what is remembered of its cache
    /// goes with it.
    fn maybe_gone(&self, id: u64) {
        if !lock(&self.inodes).knows(id) {
            lock(&self.cached).remove(&id);
            lock(&self.upper_dirs).remove(&id);
        }
    }

    /// The snapshot of directory node `id` for a new `opendir`, and whether
    /// it is the one the last `opendir` listed (the kernel may keep the
    /// listing it cached). Under the namespace lock: no change is made in
    /// between.
    fn dir_snapshot(&self, id: u64) -> Result<(Entries, bool)> {
        let _ns = self.reading();
        let path = self.path(id, Operation::ReadDir)?;
        let now = stamp(&self.view.symlink_metadata(path.as_slice())?);
        let kept = lock(&self.cached)
            .get(&id)
            .filter(|c| c.stamp == now)
            .and_then(|c| c.listing.clone());
        if let Some(entries) = kept {
            return Ok((entries, true));
        }
        let epoch = self.listing_epoch.load(Ordering::SeqCst);
        let list = self.view.read_dir(path.as_slice())?;
        let entries: Entries = Arc::new(list.into_iter().map(|e| (e.name, e.file_type)).collect());
        if self.listing_epoch.load(Ordering::SeqCst) != epoch {
            // A copy-up ran meanwhile: this listing is not kept.
            return Ok((entries, false));
        }
        lock(&self.cached).insert(
            id,
            Cached {
                stamp: now,
                listing: Some(Arc::clone(&entries)),
            },
        );
        Ok((entries, false))
    }

    /// The metadata of node `id`: by its path, or for an orphan, through
    /// an open handle (`fstat` of an unlinked file).
    fn node_meta(&self, id: u64, op: Operation) -> Result<Metadata> {
        let by_path = self
            .path(id, op)
            .and_then(|p| self.view.symlink_metadata(p.as_slice()));
        match by_path {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let handle = lock(&self.inodes).any_handle(id);
                match handle {
                    Some(h) => self.view.handle_metadata(HandleId(h)),
                    None => Err(e),
                }
            }
            r => r,
        }
    }

    /// Hands the kernel the object at `path`, named `name` in `parent`
    /// (one lookup more).
    fn entry(&self, parent: u64, name: &Name, path: &[u8]) -> Result<NodeEntry> {
        let meta = self.view.symlink_metadata(path)?;
        let (id, fresh) = self.node_for(parent, name, path, &meta)?;
        let meta = fresh.unwrap_or(meta);
        let generation = lock(&self.inodes).learn(id, parent, name, true);
        Ok(NodeEntry {
            attr: file_attr(&meta, id),
            generation: Generation(generation),
            attr_ttl: attr_ttl(id),
        })
    }

    /// The node that serves `name` in `parent`, whose object (at `path`)
    /// has `meta`: a per-name node for a name of a lower file with several
    /// names under `HardLinkCopyUp::Break` (or the one already serving the
    /// name), else the view's number (or the per-name node a `link(2)` of
    /// it made the file's). With the metadata if it was read again.
    fn node_for(
        &self,
        parent: u64,
        name: &Name,
        path: &[u8],
        meta: &Metadata,
    ) -> Result<(u64, Option<Metadata>)> {
        let maybe_below = self.view.options().hard_links == HardLinkCopyUp::Break
            && !meta.is_dir()
            && meta.nlink > 1;
        {
            let inodes = lock(&self.inodes);
            if let Some(id) = inodes.per_name_at(parent, name) {
                return Ok((id, None));
            }
            if !maybe_below {
                let id = inodes
                    .alias(meta.ino)
                    .unwrap_or_else(|| node_id(meta.ino, self.root_ino));
                return Ok((id, None));
            }
        }
        let (fresh, below) = self.view.symlink_metadata_below(path)?;
        let mut inodes = lock(&self.inodes);
        let id = if below && !fresh.is_dir() && fresh.nlink > 1 {
            inodes.per_name(parent, name)
        } else {
            inodes
                .alias(fresh.ino)
                .unwrap_or_else(|| node_id(fresh.ino, self.root_ino))
        };
        Ok((id, Some(fresh)))
    }

    /// Gives a new object at `path` in `parent` the caller's owner (the
    /// group of a setgid parent) and `mode` less `umask` (with a setgid
    /// parent's bit for a directory), as the kernel's `inode_init_owner`.
    fn init_owner(
        &self,
        req: &Request,
        parent_path: &[u8],
        path: &[u8],
        mode: u32,
        umask: u32,
    ) -> Result<()> {
        let parent = self.view.symlink_metadata(parent_path)?;
        let meta = self.view.symlink_metadata(path)?;
        let gid = if parent.mode & S_ISGID != 0 {
            parent.gid
        } else {
            req.gid()
        };
        let mut want = mode & 0o7777 & !umask;
        if meta.file_type.is_dir() && parent.mode & S_ISGID != 0 {
            want |= S_ISGID;
        }
        let chown = meta.uid != req.uid() || meta.gid != gid;
        if chown {
            self.view
                .set_owner_nofollow(path, Some(req.uid()), Some(gid))?;
        }
        if !meta.file_type.is_symlink() && (chown || meta.mode & 0o7777 != want) {
            self.view.set_permissions(path, want)?;
        }
        Ok(())
    }

    fn lookup_inner(&self, parent: u64, name: &OsStr) -> Result<NodeEntry> {
        let name = check_name(name, Operation::Lookup)?;
        let _ns = self.reading();
        let path = self.child_path(parent, name, Operation::Lookup)?;
        self.entry(parent, name, &path)
    }

    fn setattr_inner(
        &self,
        id: u64,
        changes: &AttrChanges,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr> {
        let _ns = self.reading();
        let path = || self.path(id, Operation::Metadata);
        if let Some(size) = changes.size {
            match fh {
                Some(fh) => self.view.handle_set_len(HandleId(fh.0), size)?,
                None => self.view.set_len(path()?.as_slice(), size)?,
            }
        }
        if let Some(mode) = changes.mode {
            let path = path()?;
            if self.view.symlink_metadata(path.as_slice())?.is_symlink() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    Operation::SetPermissions,
                    path.as_slice(),
                ));
            }
            self.view.set_permissions(path.as_slice(), mode)?;
        }
        if changes.uid.is_some() || changes.gid.is_some() {
            self.view
                .set_owner_nofollow(path()?.as_slice(), changes.uid, changes.gid)?;
        }
        if changes.is_empty() {
            // `chown(-1, -1)`: a change of nothing, which the kernel's
            // overlayfs copies up (and gives a new ctime). An unlinked
            // file, open, has no name to copy up: the kernel lets the call
            // succeed for an upper one, and so do we.
            match path() {
                Ok(p) => self.view.set_owner_nofollow(p.as_slice(), None, None)?,
                Err(e) if e.kind() == ErrorKind::NotFound && fh.is_some() => {}
                Err(e) => return Err(e),
            }
        }
        if changes.atime.is_some() || changes.mtime.is_some() {
            let now = self.view.options().clock.now();
            let t = |t: Option<TimeOrNow>| {
                t.map(|t| match t {
                    TimeOrNow::Now => now,
                    TimeOrNow::SpecificTime(t) => t.into(),
                })
            };
            self.view
                .set_times_nofollow(path()?.as_slice(), t(changes.atime), t(changes.mtime))?;
        }
        let meta = match fh {
            Some(fh) => self.view.handle_metadata(HandleId(fh.0))?,
            None => self.node_meta(id, Operation::Metadata)?,
        };
        Ok(file_attr(&meta, self.shown_ino(id, meta.ino)))
    }

    fn create_node(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        make: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<NodeEntry> {
        let name = check_name(name, Operation::Lookup)?;
        let _ns = self.renaming();
        let parent_path = self.path(parent, Operation::Lookup)?;
        let path = self.child_path(parent, name, Operation::Lookup)?;
        make(&path)?;
        self.dir_changed(parent);
        self.copied_up_from(parent);
        self.init_owner(req, &parent_path, &path, mode, umask)?;
        self.entry(parent, name, &path)
    }

    /// Opens `path` (node `id`) with `flags` and registers the handle.
    fn open_path(&self, id: u64, path: &[u8], flags: i32) -> Result<u64> {
        let (options, truncate_separately) = open_options(flags);
        if truncate_separately && !options.writes() {
            self.view.set_len(path, 0)?;
        }
        let h = self.view.open_handle(path, &options);
        if options.writes() || truncate_separately {
            self.maybe_copied_up(id);
        }
        let h = h?;
        if options.writes() || truncate_separately {
            self.copied_up_from(id);
        }
        if truncate_separately
            && options.writes()
            && let Err(e) = self.view.handle_set_len(h, 0)
        {
            let _ = self.view.close_handle(h);
            return Err(e);
        }
        lock(&self.inodes).opened(id, h.0);
        Ok(h.0)
    }

    fn create_inner(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(NodeEntry, u64)> {
        let name = check_name(name, Operation::Open)?;
        let _ns = self.renaming();
        let parent_path = self.path(parent, Operation::Open)?;
        let path = self.child_path(parent, name, Operation::Open)?;
        let exists = match self.view.symlink_metadata(path.as_slice()) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if exists && flags & libc_flags::O_EXCL != 0 {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                Operation::Open,
                path.as_slice(),
            ));
        }
        if !exists {
            let h = self.view.open_handle(
                path.as_slice(),
                OpenOptions::new().write(true).create_new(true),
            )?;
            self.view.close_handle(h)?;
            self.dir_changed(parent);
            self.copied_up_from(parent);
            self.init_owner(req, &parent_path, &path, mode, umask)?;
        }
        let entry = self.entry(parent, name, &path)?;
        let id = entry.attr.ino.0;
        // A new file is empty: no truncation to do (and none to refuse).
        let flags = if exists {
            flags
        } else {
            flags & !libc_flags::O_TRUNC
        };
        match self.open_path(id, &path, flags) {
            Ok(fh) => Ok((entry, fh)),
            Err(e) => {
                lock(&self.inodes).forget(id, 1);
                Err(e)
            }
        }
    }

    fn rename_inner(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        let op = Operation::Rename;
        let name = check_name(name, op)?;
        let new_name = check_name(new_name, op)?;
        let mode = if flags.is_empty() {
            RenameMode::Replace
        } else if flags == RenameFlags::RENAME_NOREPLACE {
            RenameMode::NoReplace
        } else if flags == RenameFlags::RENAME_EXCHANGE {
            RenameMode::Exchange
        } else {
            // As the kernel's overlayfs: RENAME_WHITEOUT and combinations
            // are refused.
            return Err(Error::new(ErrorKind::InvalidInput, op, name)
                .with_detail("only RENAME_NOREPLACE or RENAME_EXCHANGE are supported"));
        };
        let _ns = self.renaming();
        let from = self.child_path(parent, name, op)?;
        let to = self.child_path(new_parent, new_name, op)?;
        let replaced_linked = mode != RenameMode::Exchange && self.linked_elsewhere(&to);
        // A directory moved has a new `..`: the ids of what moves.
        let moved = [from.as_slice(), to.as_slice()]
            .map(|p| self.view.symlink_metadata(p).ok().map(|m| m.ino));
        self.view
            .rename_with(from.as_slice(), to.as_slice(), mode)?;
        self.copied_up_from(parent);
        self.copied_up_from(new_parent);
        for id in [parent, new_parent].into_iter().chain(
            moved
                .into_iter()
                .flatten()
                .map(|ino| node_id(ino, self.root_ino)),
        ) {
            self.dir_changed(id);
        }
        let mut inodes = lock(&self.inodes);
        if mode == RenameMode::Exchange {
            inodes.exchange(parent, name, new_parent, new_name);
        } else {
            inodes.rename(parent, name, new_parent, new_name, replaced_linked);
        }
        Ok(())
    }

    fn remove_inner(&self, parent: u64, name: &OsStr, dir: bool) -> Result<()> {
        let op = if dir {
            Operation::RemoveDir
        } else {
            Operation::RemoveFile
        };
        let name = check_name(name, op)?;
        let _ns = self.renaming();
        let path = self.child_path(parent, name, op)?;
        let linked = !dir && self.linked_elsewhere(&path);
        if dir {
            self.view.remove_dir(path.as_slice())?;
        } else {
            self.view.remove_file(path.as_slice())?;
        }
        self.dir_changed(parent);
        self.copied_up_from(parent);
        lock(&self.inodes).remove_name(parent, name, linked);
        Ok(())
    }

    /// Whether the object at `path` is a non-directory with other names
    /// (removing this one leaves the file, which a lookup of another name
    /// finds again as the same node).
    fn linked_elsewhere(&self, path: &[u8]) -> bool {
        self.view
            .symlink_metadata(path)
            .is_ok_and(|m| !m.is_dir() && m.nlink > 1)
    }

    /// The entries of directory node `id` from cookie `offset`: `(cookie
    /// of the next, name, node id, metadata)`; `.` and `..` first, then the
    /// snapshot, skipping names removed since.
    fn dir_entries(
        &self,
        id: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &Name, u64, Option<(&Metadata, &[u8])>) -> bool,
    ) -> Result<()> {
        if offset == 0 {
            // The directory's listing now: what opendir took may be stale
            // (see `DirSnapshot`). Taken before the read lock below, which
            // `dir_snapshot` takes itself.
            let (entries, _) = self.dir_snapshot(id)?;
            let mut dirs = lock(&self.dirs);
            let Some(slot) = dirs.get_mut(&fh) else {
                return Err(Error::new(
                    ErrorKind::BadHandle,
                    Operation::ReadDir,
                    "(directory)",
                ));
            };
            *slot = Arc::new(DirSnapshot { entries });
        }
        let snapshot = lock(&self.dirs)
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::BadHandle, Operation::ReadDir, "(directory)"))?;
        let _ns = self.reading();
        let dir_path = self.path(id, Operation::ReadDir)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for i in start..snapshot.entries.len().saturating_add(2) {
            let next = i as u64 + 1;
            let full = match i {
                0 => add(next, Name::new("."), id, None),
                1 => {
                    let parent = lock(&self.inodes).parent(id);
                    add(next, Name::new(".."), parent, None)
                }
                _ => {
                    let (name, _) = &snapshot.entries[i - 2];
                    let mut path = dir_path.clone();
                    if path != b"/" {
                        path.push(b'/');
                    }
                    path.extend_from_slice(name.as_name().as_bytes());
                    match self.view.symlink_metadata(path.as_slice()) {
                        Ok(meta) => add(
                            next,
                            name.as_name(),
                            node_id(meta.ino, self.root_ino),
                            Some((&meta, &path)),
                        ),
                        // Removed since opendir: POSIX lets it be left out.
                        Err(e) if e.kind() == ErrorKind::NotFound => false,
                        Err(e) => return Err(e),
                    }
                }
            };
            if full {
                break;
            }
        }
        Ok(())
    }

    fn statfs_inner(&self) -> (u64, u64, u64, u64, u64, u32, u32, u32) {
        let on_disk = self.view.with_upper(|upper| {
            upper
                .as_any()
                .downcast_ref::<DirLayer>()
                .map(|d| d.path().to_owned())
        });
        if let Some(dir) = on_disk
            && let Ok(s) = rustix::fs::statvfs(dir.as_std_path())
        {
            return (
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                u32::try_from(s.f_bsize).unwrap_or(4096),
                NAME_MAX as u32,
                u32::try_from(s.f_frsize).unwrap_or(4096),
            );
        }
        // In memory: no blocks to count.
        (0, 0, 0, 0, 0, 4096, NAME_MAX as u32, 4096)
    }

    fn getxattr_inner(&self, id: u64, name: &OsStr) -> Result<bytes::Bytes> {
        let op = Operation::GetXattr;
        let name = xattr_name(name, op)?;
        let _ns = self.reading();
        let path = self.path(id, op)?;
        let meta = self.view.symlink_metadata(path.as_slice())?;
        if meta.is_symlink() {
            // The view's getter follows symlinks; the kernel asks about
            // the link itself.
            return meta
                .xattrs
                .get(name)
                .cloned()
                .ok_or_else(|| Error::new(ErrorKind::NoData, op, path.as_slice()));
        }
        self.view.get_xattr(path.as_slice(), name)
    }

    fn setxattr_inner(&self, id: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let op = Operation::SetXattr;
        let name = xattr_name(name, op)?;
        let _ns = self.reading();
        let path = self.path(id, op)?;
        let meta = self.view.symlink_metadata(path.as_slice())?;
        if meta.is_symlink() {
            return Err(Error::new(ErrorKind::NotPermitted, op, path.as_slice())
                .with_detail("extended attributes of symlinks are not supported"));
        }
        let present = meta.xattrs.get(name).is_some();
        if flags & libc_flags::XATTR_CREATE != 0 && present {
            return Err(Error::new(ErrorKind::AlreadyExists, op, path.as_slice()));
        }
        if flags & libc_flags::XATTR_REPLACE != 0 && !present {
            return Err(Error::new(ErrorKind::NoData, op, path.as_slice()));
        }
        self.view.set_xattr(path.as_slice(), name, value)
    }

    fn listxattr_inner(&self, id: u64) -> Result<Vec<u8>> {
        let _ns = self.reading();
        let meta = self.node_meta(id, Operation::ListXattr)?;
        let mut list = Vec::new();
        for name in meta.xattrs.names() {
            list.extend_from_slice(name.as_bytes());
            list.push(0);
        }
        Ok(list)
    }

    fn removexattr_inner(&self, id: u64, name: &OsStr) -> Result<()> {
        let op = Operation::RemoveXattr;
        let name = xattr_name(name, op)?;
        let _ns = self.reading();
        let path = self.path(id, op)?;
        if self.view.symlink_metadata(path.as_slice())?.is_symlink() {
            return Err(Error::new(ErrorKind::NotPermitted, op, path.as_slice())
                .with_detail("extended attributes of symlinks are not supported"));
        }
        self.view.remove_xattr(path.as_slice(), name)
    }
}

/// What a `setattr` changes.
struct AttrChanges {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

impl AttrChanges {
    fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.size.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, r: Result<Vec<u8>>) {
    match r {
        Ok(data) if size == 0 => reply.size(u32::try_from(data.len()).unwrap_or(u32::MAX)),
        Ok(data) if data.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for LayerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC reaches `open` (one step, as the view's open truncates);
        // readdirplus answers listings and lookups at once; lookups and
        // listings in one directory may run in parallel (the namespace
        // lock orders them against changes); a symlink's target never
        // changes, so the kernel keeps it.
        for flag in [
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.lookup_inner(parent.0, name));
    }

    // `batch_forget` is fuser's default: one `forget` per node (fuser 0.18
    // does not export the type of its argument).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.inodes).forget(ino.0, nlookup);
        self.maybe_gone(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh {
            Some(fh) => self.view.handle_metadata(HandleId(fh.0)),
            None => {
                let _ns = self.reading();
                self.node_meta(ino.0, Operation::Metadata)
            }
        };
        match r {
            Ok(meta) => reply.attr(
                &attr_ttl(ino.0),
                &file_attr(&meta, self.shown_ino(ino.0, meta.ino)),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = AttrChanges {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let r = self.setattr_inner(ino.0, &changes, fh);
        self.after_change(ino.0, r.is_ok());
        match r {
            Ok(attr) => reply.attr(&attr_ttl(ino.0), &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = {
            let _ns = self.reading();
            self.path(ino.0, Operation::ReadLink)
                .and_then(|p| self.view.read_link(p.as_slice()))
        };
        match r {
            Ok(target) => reply.data(target.as_name().as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.create_node(req, parent.0, name, mode, umask, |path| {
            let Some(file_type) = type_of_mode(mode) else {
                return Err(Error::new(ErrorKind::InvalidInput, Operation::Mknod, path));
            };
            if file_type == FileType::File {
                let h = self
                    .view
                    .open_handle(path, OpenOptions::new().write(true).create_new(true))?;
                return self.view.close_handle(h);
            }
            self.view
                .mknod(path, file_type, mode & 0o7777 & !umask, decode_dev(rdev))
        });
        reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.create_node(req, parent.0, name, mode, umask, |path| {
            self.view.create_dir(path)
        });
        reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_inner(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_inner(parent.0, name, true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.create_node(req, parent.0, link_name, 0o777, 0, |path| {
            self.view.symlink(target, path)
        });
        reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.rename_inner(parent.0, name, newparent.0, newname, flags),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let op = Operation::HardLink;
            let name = check_name(newname, op)?;
            let _ns = self.renaming();
            let from = self.path(ino.0, op)?;
            let to = self.child_path(newparent.0, name, op)?;
            self.view.hard_link(from.as_slice(), to.as_slice())?;
            self.dir_changed(newparent.0);
            self.copied_up_from(newparent.0);
            self.copied_up_from(ino.0);
            self.maybe_copied_up(ino.0);
            if per_name(ino.0) {
                // The link copied the file up: one upper file now, whose
                // names this node serves (one kernel inode, as the
                // kernel's overlayfs has one).
                let ino_now = self.view.symlink_metadata(to.as_slice())?.ino;
                lock(&self.inodes).set_alias(ino.0, ino_now);
            }
            self.entry(newparent.0, name, &to)
        })();
        reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = {
            let _ns = self.reading();
            self.path(ino.0, Operation::Open)
                .and_then(|p| self.open_path(ino.0, &p, flags.0))
        };
        match r {
            Ok(fh) => {
                // `flush` does nothing here, so a read-only open need not
                // ask for it. A writable one must: without the flush, the
                // kernel would keep a shared mapping's dirty pages past
                // `close`, which then reports none of their write errors.
                let mut flags = if flags.acc_mode() == OpenAccMode::O_RDONLY {
                    FopenFlags::FOPEN_NOFLUSH
                } else {
                    FopenFlags::empty()
                };
                if let Ok(meta) = self.view.handle_metadata(HandleId(fh))
                    && self.keep_cache(ino.0, &meta)
                {
                    flags |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(FileHandle(fh), flags);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self
            .view
            .handle_read_at(HandleId(fh.0), offset, size as usize)
        {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.view.handle_write_at(HandleId(fh.0), offset, data) {
            Ok(_) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered here: every write reached the view.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // What was written through it is in the kernel's pages.
        if flags.acc_mode() != OpenAccMode::O_RDONLY
            && let Ok(meta) = self.view.handle_metadata(HandleId(fh.0))
        {
            self.cached_as(ino.0, &meta);
        }
        let r = self.view.close_handle(HandleId(fh.0));
        lock(&self.inodes).closed(ino.0, fh.0);
        self.maybe_gone(ino.0);
        reply_empty(reply, r);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.view.handle_sync(HandleId(fh.0), datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.dir_snapshot(ino.0) {
            Ok((entries, unchanged)) => {
                let fh = self.next_dir.fetch_add(1, Ordering::Relaxed);
                lock(&self.dirs).insert(fh, Arc::new(DirSnapshot { entries }));
                let mut flags = FopenFlags::FOPEN_CACHE_DIR;
                if unchanged {
                    flags |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(FileHandle(fh), flags);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.dir_entries(ino.0, fh.0, offset, |next, name, id, meta| {
            let t = meta.map_or(fuser::FileType::Directory, |(m, _)| kind(m.file_type));
            let ino = self.shown_ino(id, meta.map_or(id, |(m, _)| m.ino));
            reply.add(INodeNo(ino), next, t, name.to_path())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.dir_entries(ino.0, fh.0, offset, |next, name, id, meta| {
            let Some((meta, path)) = meta else {
                // `.` and `..`: the kernel takes no lookup on them (and
                // reads no attributes).
                let mut attr = file_attr(&Metadata::new(FileType::Dir), id);
                attr.ino = INodeNo(id);
                return reply.add(
                    INodeNo(id),
                    next,
                    name.to_path(),
                    &TTL,
                    &attr,
                    Generation(0),
                );
            };
            // A name that needs a node of its own (see `node_for`).
            let (id, fresh) = self.node_for(ino.0, name, path, meta).unwrap_or((id, None));
            let meta = fresh.as_ref().unwrap_or(meta);
            // Counted before the reply is built, so that a concurrent
            // forget cannot drop the node in between; given back below if
            // the entry did not fit.
            let generation = lock(&self.inodes).learn(id, ino.0, name, true);
            let full = reply.add(
                INodeNo(id),
                next,
                name.to_path(),
                &attr_ttl(id),
                &file_attr(meta, id),
                Generation(generation),
            );
            if full {
                // Not sent: the lookup taken above is given back (dropping
                // a node only this made).
                lock(&self.inodes).forget(id, 1);
            }
            full
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = {
            let _ns = self.reading();
            self.path(ino.0, Operation::Sync)
                .and_then(|p| self.view.sync_dir(p.as_slice()))
        };
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, bfree, bavail, files, ffree, bsize, namelen, frsize) = self.statfs_inner();
        reply.statfs(blocks, bfree, bavail, files, ffree, bsize, namelen, frsize);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.setxattr_inner(ino.0, name, value, flags);
        self.after_change(ino.0, r.is_ok());
        reply_empty(reply, r);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(
            reply,
            size,
            self.getxattr_inner(ino.0, name).map(|v| v.to_vec()),
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.listxattr_inner(ino.0));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.removexattr_inner(ino.0, name);
        self.after_change(ino.0, r.is_ok());
        reply_empty(reply, r);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Only asked without `default_permissions`: no checks then (as
        // every FUSE filesystem that leaves permissions to the kernel).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_inner(req, parent.0, name, mode, umask, flags) {
            Ok((e, fh)) => reply.created(
                &e.attr_ttl,
                &e.attr,
                e.generation,
                FileHandle(fh),
                // Created files are writable: flushed at close (see `open`).
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            // Punching holes, collapsing and zeroing ranges: not in the view.
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let h = HandleId(fh.0);
        let r = (|| {
            let end = offset.checked_add(length).ok_or_else(|| {
                Error::new(ErrorKind::FileTooLarge, Operation::SetLen, "(fallocate)")
            })?;
            if end > self.view.handle_metadata(h)?.size {
                self.view.handle_set_len(h, end)?;
            }
            Ok(())
        })();
        reply_empty(reply, r);
    }
}
