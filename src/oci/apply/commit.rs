use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;

use camino::Utf8Path;
use rustix::fs::{AtFlags, Mode, OFlags, SeekFrom, StatxFlags};
use rustix::io::Errno;

use crate::data::FileData;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::fs::beneath::{errno_error, open_beneath, proc_path, procfs_is_mounted, raw_xattrs};
use crate::layer::Content;
use crate::layer::LayerMut;
use crate::layer::mem::MemLayer;
use crate::layer::overlay::is_bookkeeping_xattr;
use crate::meta::{FileType, MODE_MASK, Metadata, Timestamp, Xattrs, makedev};
use crate::oci::apply::rootless::{Identity, RootlessMap};
use crate::oci::tar::whiteout::is_reserved;
use crate::path::{LayerPath, NameBuf};
use crate::spill::Spill;
use crate::view::MergedView;

/// Files are compared and read in pieces of this size.
const CHUNK: usize = 1 << 20;

/// The layer that turns what `base` shows into what directory `dir` holds
/// (see the [module documentation](layer_from_dir) for the rules). The layer's root
/// has the attributes of `dir`. File data past [`Spill::DEFAULT_BUDGET`]
/// goes to an anonymous file in `$TMPDIR` ([`Spill::default`]).
///
/// # Errors
/// Errors reading `dir` or `base`, each naming the path on disk;
/// `ENOTDIR` if `dir` is a symlink; `EINVAL` for a name that starts
/// with `.wh.`; `EOPNOTSUPP` for a socket; `EIO` if `/proc`
/// is not a procfs; errors writing the spill file (`ENOSPC`, say).
///
/// A directory compared with an image: the changeset that turns what the
/// image shows into what the directory holds, as one layer — what
/// `umoci repack` writes after `umoci unpack` and an edit.
///
/// [`layer_from_dir`] walks the directory and compares each object with
/// what a [`MergedView`] of the image (the *base*) shows at the same path:
///
/// - An object that is new, or that differs from the base in type, mode,
///   owner, size, contents, symlink target, device number, mtime or
///   extended attributes, goes into the layer, with its parent directories
///   (each with the attributes it has in the directory).
/// - An object of the base that the directory lacks becomes a whiteout; a
///   missing directory is one whiteout, its contents are not listed.
/// - A directory that replaced a non-directory, or a non-directory that
///   replaced a directory, replaces it: a non-directory hides everything
///   the base had under that name, and a directory over what was a file
///   merges with nothing.
/// - Names of one inode in the directory (hard links, by `st_ino`) are one
///   object in the layer; if any of them goes into the layer, all do. Names
///   that are one object in the base but no longer in the directory (or the
///   other way round) go into the layer as the directory has them.
/// - No directory is ever marked opaque: a deletion is always a whiteout.
///
/// ```
/// use std::sync::Arc;
/// use layerstack::{Entry, Layer, LayerPath, MemLayer, MergedView};
/// use layerstack::oci::layer_from_dir;
///
/// # let dir = std::env::temp_dir().join(format!("layerstack-doc-commit-{}", std::process::id()));
/// # let dir = camino::Utf8PathBuf::from_path_buf(dir).unwrap();
/// std::fs::create_dir_all(dir.join("etc"))?;
/// std::fs::write(dir.join("etc/app.conf"), "port = 8080\n")?;
/// // The base has a file the directory lacks: it becomes a whiteout.
/// let mut base = MemLayer::new();
/// base.add_file("etc/motd", "hello\n")?;
/// let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new())?;
///
/// let layer = layer_from_dir(&view, &dir)?;
/// assert_eq!(layer.lookup(&LayerPath::new("etc/motd")?)?, Some(Entry::Whiteout));
/// assert_eq!(layer.read_at(&LayerPath::new("etc/app.conf")?, 0, 64)?, "port = 8080\n");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Security
///
/// The directory is read without following any symlink: its root is opened
/// with `O_DIRECTORY | O_NOFOLLOW`, every name is opened relative to its
/// parent's descriptor with `O_PATH | O_NOFOLLOW`, stated through that
/// descriptor and, for files and directories, reopened through
/// `/proc/self/fd` (so what is read is exactly the object that was
/// stated). Symlinks are read with `readlinkat`, never followed; fifos and
/// devices are never opened. Names and symlink targets are kept as the
/// bytes they are (UTF-8 or not); names starting with `.wh.` (reserved for
/// whiteouts in a layer tar) are refused.
///
/// # Limitations
///
/// - The contents of new and changed files are read into the returned
///   [`MemLayer`]: in memory up to a [`Spill`]'s budget, beyond it in the
///   spill's anonymous file on disk ([`layer_from_dir`] spills to
///   `$TMPDIR` past [`Spill::DEFAULT_BUDGET`]; the tool spills to the
///   layout's `blobs/sha256`), so memory stays bounded however large the
///   files are, and the spill directory needs room for the changed data.
///   Holes and runs of zeros are found with `SEEK_DATA`/`SEEK_HOLE` and
///   stored as holes, never written anywhere. Unchanged files are compared
///   in pieces and not kept.
/// - Extended attributes: `user.*`, `trusted.*` and `security.*` are
///   compared and kept, except overlayfs bookkeeping (`trusted.overlay.*`,
///   `user.overlay.*`) and `security.selinux`, which labels the host's copy
///   rather than the image (`umoci` leaves it out too); `system.*` (ACLs)
///   is not read.
/// - Owners are what the directory has. A directory a rootless unpack
///   wrote (the user's owners, no device nodes, no privileged xattrs) is
///   committed with [`layer_from_rootless_dir`] and the [`RootlessMap`]
///   kept beside it, which maps back what the unpack could not write;
///   [`layer_from_dir`] on such a directory records every owner as changed
///   and every device node as deleted.
/// - Without root, files and directories of the user that the user may not
///   read or enter (mode 000, say) are made readable for the walk with
///   `chmod` and given their modes back afterwards (directories at the end
///   of the walk, also after an error); the layer records the modes they
///   had. Objects of other users stay unreadable (`EACCES`).
/// - Sockets cannot be stored in a layer tar: one in the directory is an
///   error (`EOPNOTSUPP`).
/// - atime, ctime and the link count are not compared.
/// - The directory must not change during the walk; a file that changes
///   while it is read is read as it is then.
pub fn layer_from_dir(base: &MergedView, dir: &Utf8Path) -> Result<MemLayer> {
    layer_from_dir_spilling(base, dir, &Spill::default())
}

/// As [`layer_from_dir`], with the file data past `spill`'s budget in
/// `spill`'s file.
///
/// # Errors
/// As [`layer_from_dir`].
pub fn layer_from_dir_spilling(
    base: &MergedView,
    dir: &Utf8Path,
    spill: &Spill,
) -> Result<MemLayer> {
    let (scan, root_meta) = scan_dir(base, dir, None, Compare::Contents, spill)?;
    scan.into_layer(&root_meta)
}

/// As [`layer_from_dir_spilling`], for a directory a rootless unpack wrote: what
/// `map` kept beside it (owners, modes, extended attributes, device nodes
/// the unpack could not write) is mapped back first, so that what the
/// unpack could not write does not count as a change (see
/// [`RootlessMap`](crate::oci::RootlessMap) for the rules).
///
/// # Errors
/// As [`layer_from_dir`]; `EBADMSG` if `map` was recorded for another
/// tree (its root is not the inode `map` names).
pub fn layer_from_rootless_dir(
    base: &MergedView,
    dir: &Utf8Path,
    map: &RootlessMap,
    spill: &Spill,
) -> Result<MemLayer> {
    let (scan, root_meta) = scan_dir(base, dir, Some(map), Compare::Contents, spill)?;
    scan.into_layer(&root_meta)
}

/// An object of a tree a rootless unpack wrote, or of the image that the
/// tree lacks.
pub(super) struct Unpacked {
    pub(super) path: LayerPath,
    /// Its metadata and identity on disk; `None` if the tree lacks it.
    pub(super) disk: Option<(Metadata, Identity)>,
    /// The identity of its parent directory on disk (the root's own for
    /// the root).
    pub(super) parent: Identity,
}

/// Every object of `dir` (the root first) and every object of `base` that
/// `dir` lacks, with attributes but not contents compared: what a
/// rootless unpack records.
pub(super) fn unpacked_objects(base: &MergedView, dir: &Utf8Path) -> Result<Vec<Unpacked>> {
    // Attributes only: no file data is read, so nothing is spilled.
    let spill = Spill::default();
    let (scan, root_meta) = scan_dir(base, dir, None, Compare::Attributes, &spill)?;
    let root_id = scan.root_id;
    let mut out = vec![Unpacked {
        path: LayerPath::root(),
        disk: Some((root_meta, root_id)),
        parent: root_id,
    }];
    for (path, f) in &scan.found {
        let parent = match path.parent() {
            Some(p) if !p.is_root() => scan.found.get(&p).map_or(root_id, |f| f.id),
            _ => root_id,
        };
        let disk = match f.what {
            What::Whiteout => None,
            _ => Some((f.meta.clone(), f.id)),
        };
        out.push(Unpacked {
            path: path.clone(),
            disk,
            parent,
        });
    }
    Ok(out)
}

/// What a walk compares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// Everything: a commit.
    Contents,
    /// Everything but file contents (files are never opened).
    Attributes,
}

/// Walks `dir` against `base`; the walk and the root's metadata.
fn scan_dir<'a>(
    base: &'a MergedView,
    dir: &'a Utf8Path,
    map: Option<&'a RootlessMap>,
    compare: Compare,
    spill: &'a Spill,
) -> Result<(Scan<'a>, Metadata)> {
    check_procfs(dir)?;
    let root = rustix::fs::open(
        dir.as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        let err = errno_error(e, Operation::Open, dir.as_str());
        let is_symlink = rustix::fs::lstat(dir.as_str())
            .is_ok_and(|st| FileType::from_mode(st.st_mode) == Some(FileType::Symlink));
        if is_symlink {
            err.with_detail("it is a symlink, and symlinks are not followed")
        } else {
            err
        }
    })?;
    let mut scan = Scan {
        base,
        dir,
        spill,
        found: BTreeMap::new(),
        unlocked: Vec::new(),
        map,
        compare,
        root_id: Identity::default(),
    };
    let (root_disk, root_dev, root_id) = scan.stat(&root, &LayerPath::root())?;
    if let Some(map) = map {
        map.check_root(root_id, dir)?;
    }
    scan.root_id = root_id;
    let root_meta = scan.mapped(&LayerPath::root(), &root_disk, root_id);
    let walked = scan.walk(&root, (root_dev, root_disk.ino));
    // Whatever happened, the modes the walk raised are put back.
    let restored = scan.restore_modes(&root);
    walked?;
    restored?;
    Ok((scan, root_meta))
}

/// One object of the directory (or a whiteout for one it lacks).
struct Found {
    what: What,
    /// The object's metadata in the directory (for a whiteout: unused).
    meta: Metadata,
    /// It differs from the base (or the base lacks it).
    changed: bool,
    /// `(st_dev, st_ino)` in the directory, for a non-directory with more
    /// than one link.
    linked: Option<(u64, u64)>,
    /// The base's inode number, for a non-directory the base shows with
    /// more than one link.
    base_linked: Option<u64>,
    /// Its identity on disk (for a whiteout or an object the rootless map
    /// adds: unused).
    id: Identity,
}

enum What {
    Dir,
    /// A regular file; its contents when they differ from the base's.
    File(Option<FileData>),
    Symlink(NameBuf),
    Special,
    Whiteout,
}

/// A directory still to read: its path, whether the base has a directory
/// there, and its device and inode (checked when it is opened again).
type PendingDir = (LayerPath, bool, (u64, u64));

struct Scan<'a> {
    base: &'a MergedView,
    dir: &'a Utf8Path,
    /// Where file data read past its budget goes.
    spill: &'a Spill,
    found: BTreeMap<LayerPath, Found>,
    /// Directories of ours whose mode the walk raised to read them (as a
    /// user without root cannot otherwise), with their modes, in order.
    unlocked: Vec<(LayerPath, u32)>,
    /// What a rootless unpack kept beside the directory.
    map: Option<&'a RootlessMap>,
    compare: Compare,
    /// The identity of the directory's root.
    root_id: Identity,
}

impl Scan<'_> {
    /// The path on disk, for messages (its names are any bytes).
    fn disk_path(&self, path: &LayerPath) -> NameBuf {
        let mut disk = self.dir.as_str().as_bytes().to_vec();
        if !path.is_root() {
            disk.push(b'/');
            disk.extend_from_slice(path.as_bytes());
        }
        NameBuf::from(disk)
    }

    fn fail(&self, e: Errno, op: Operation, path: &LayerPath) -> Error {
        errno_error(e, op, self.disk_path(path))
    }

    /// The metadata of the object `fd` (any kind of descriptor), with the
    /// extended attributes that are compared and kept, the device it is
    /// on and its identity.
    fn stat(&self, fd: &OwnedFd, path: &LayerPath) -> Result<(Metadata, u64, Identity)> {
        let st = rustix::fs::statx(
            fd,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )
        .map_err(|e| self.fail(e, Operation::Metadata, path))?;
        let mode = u32::from(st.stx_mode);
        let file_type = FileType::from_mode(mode)
            .ok_or_else(|| self.fail(Errno::INVAL, Operation::Metadata, path))?;
        let ts = |t: rustix::fs::StatxTimestamp| Timestamp::new(t.tv_sec, t.tv_nsec);
        let mut meta = Metadata::new(file_type)
            .with_mode(mode & MODE_MASK)
            .with_owner(st.stx_uid, st.stx_gid);
        meta.size = if file_type.is_dir() { 0 } else { st.stx_size };
        meta.nlink = u64::from(st.stx_nlink);
        meta.ino = st.stx_ino;
        meta.rdev = if matches!(file_type, FileType::CharDevice | FileType::BlockDevice) {
            makedev(st.stx_rdev_major, st.stx_rdev_minor)
        } else {
            0
        };
        meta.atime = ts(st.stx_atime);
        meta.mtime = ts(st.stx_mtime);
        meta.ctime = ts(st.stx_ctime);
        meta.xattrs = read_xattrs(fd).map_err(|e| self.fail(e, Operation::ListXattr, path))?;
        let has_btime = StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::BTIME);
        let id = Identity {
            ino: st.stx_ino,
            btime: has_btime.then(|| ts(st.stx_btime)),
        };
        Ok((meta, makedev(st.stx_dev_major, st.stx_dev_minor), id))
    }

    /// `disk`, the metadata of the object at `path` of identity `id`, with
    /// the rootless map's attributes mapped back (as it is without a map).
    fn mapped(&self, path: &LayerPath, disk: &Metadata, id: Identity) -> Metadata {
        match self.map {
            Some(map) => map.map_back(path, disk, id),
            None => disk.clone(),
        }
    }

    /// Records the objects the rootless map keeps in directory `dir` (of
    /// identity `dir_id`, with `names` on disk): those the unpack could
    /// not write (device nodes) and that are still not on disk. Returns
    /// their names.
    fn add_kept_absent(
        &mut self,
        dir: &LayerPath,
        dir_id: Identity,
        names: &[NameBuf],
        base_is_dir: bool,
    ) -> Result<BTreeSet<NameBuf>> {
        let mut added = BTreeSet::new();
        let Some(map) = self.map else {
            return Ok(added);
        };
        for (name, meta, link) in map.absent_in(dir, dir_id) {
            if names
                .binary_search_by(|n| n.as_bytes().cmp(name.as_bytes()))
                .is_ok()
            {
                continue;
            }
            let path = dir.join(name)?;
            let before = if base_is_dir {
                self.base_meta(&path)?
            } else {
                None
            };
            let base_linked = before
                .as_ref()
                .filter(|b| !b.is_dir() && b.nlink > 1)
                .map(|b| b.ino);
            let changed = !before.as_ref().is_some_and(|b| same_attributes(b, meta));
            self.found.insert(
                path,
                Found {
                    what: What::Special,
                    meta: meta.clone(),
                    changed,
                    // One object in the image: one key no inode on disk has.
                    linked: link.map(|ino| (u64::MAX, ino)),
                    base_linked,
                    id: Identity::default(),
                },
            );
            added.insert(name.to_owned());
        }
        Ok(added)
    }

    /// What the base shows at `path`, if anything (a final symlink is not
    /// followed; its parents are directories of the base).
    fn base_meta(&self, path: &LayerPath) -> Result<Option<Metadata>> {
        match self.base.symlink_metadata(path.as_name()) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts back the modes of the directories the walk opened up, the
    /// last one first (its parents must still be enterable).
    fn restore_modes(&mut self, root: &OwnedFd) -> Result<()> {
        let mut first_error = None;
        while let Some((path, mode)) = self.unlocked.pop() {
            let done = open_beneath(root, &path, OFlags::PATH).and_then(|fd| set_mode(&fd, mode));
            if let Err(e) = done {
                first_error.get_or_insert(self.fail(e, Operation::SetPermissions, &path));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Walks the tree under `root` (of device and inode `root_id`),
    /// recording every object and whiteout.
    ///
    /// Directories still to read are kept as paths, not descriptors, so
    /// the walk holds a bounded number of descriptors (the root, one
    /// directory, one object) however wide the tree is. Each is opened
    /// again beneath the root without following symlinks, and must be the
    /// inode that was stated: a directory swapped meanwhile is an error.
    fn walk(&mut self, root: &OwnedFd, root_id: (u64, u64)) -> Result<()> {
        // Directories to read: path, whether the base has a directory
        // there (else everything below is new), its device and inode.
        let mut todo = vec![(LayerPath::root(), true, root_id)];
        while let Some((path, base_is_dir, id)) = todo.pop() {
            let fd = open_beneath(root, &path, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| self.fail(e, Operation::ReadDir, &path))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| self.fail(e, Operation::ReadDir, &path))?;
            if (st.st_dev, st.st_ino) != id {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    Operation::ReadDir,
                    self.disk_path(&path),
                )
                .with_detail("the directory was replaced during the walk"));
            }
            let names = self.names(&fd, &path)?;
            let dir_id = match self.found.get(&path) {
                Some(f) if !path.is_root() => f.id,
                _ => self.root_id,
            };
            let kept = self.add_kept_absent(&path, dir_id, &names, base_is_dir)?;
            if base_is_dir {
                let at: &[u8] = if path.is_root() {
                    b"/"
                } else {
                    path.as_bytes()
                };
                for entry in self.base.read_dir(at)? {
                    if names.binary_search(&entry.name).is_err() && !kept.contains(&entry.name) {
                        let gone = path.join(&entry.name)?;
                        self.found.insert(
                            gone,
                            Found {
                                what: What::Whiteout,
                                meta: Metadata::new(entry.file_type),
                                changed: true,
                                linked: None,
                                base_linked: None,
                                id: Identity::default(),
                            },
                        );
                    }
                }
            }
            for name in &names {
                let child = path.join(name)?;
                // The prefix is ASCII: the lossy text keeps it exactly.
                if is_reserved(name) {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        Operation::ReadDir,
                        self.disk_path(&child),
                    )
                    .with_detail(
                        "names starting with `.wh.` are reserved for whiteouts in a layer tar",
                    ));
                }
                let before = if base_is_dir {
                    self.base_meta(&child)?
                } else {
                    None
                };
                if let Some(sub) = self.visit(&fd, name.as_bytes(), &child, before)? {
                    todo.push(sub);
                }
            }
        }
        Ok(())
    }

    /// The names in directory `fd`, sorted.
    fn names(&self, fd: &OwnedFd, path: &LayerPath) -> Result<Vec<NameBuf>> {
        let fail = |e| self.fail(e, Operation::ReadDir, path);
        let mut dir = rustix::fs::Dir::read_from(fd).map_err(fail)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(fail)?;
            let raw = entry.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            names.push(NameBuf::from(raw));
        }
        names.sort();
        Ok(names)
    }

    /// Records the object `name` in directory `parent` (at `path`), compared
    /// with `before`, what the base shows there. Returns the directory to
    /// read next, if it is one.
    fn visit(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        path: &LayerPath,
        before: Option<Metadata>,
    ) -> Result<Option<PendingDir>> {
        let obj = rustix::fs::openat(
            parent,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fail(e, Operation::Open, path))?;
        let (disk, dev, id) = self.stat(&obj, path)?;
        // What the walk does on disk follows `disk`; what it compares and
        // records follows `meta`, with what a rootless unpack kept mapped
        // back.
        let meta = self.mapped(path, &disk, id);
        // Two names are one inode when device and inode number both match.
        let linked = (!meta.is_dir() && meta.nlink > 1).then_some((dev, meta.ino));
        let base_linked = before
            .as_ref()
            .filter(|b| !b.is_dir() && b.nlink > 1)
            .map(|b| b.ino);
        let same_attrs = before.as_ref().is_some_and(|b| same_attributes(b, &meta));
        let mut next = None;
        let (what, changed) = match meta.file_type {
            FileType::Dir => {
                // A directory of ours we may not list or enter (mode 000,
                // say): opened up for the walk, put back after it.
                if needs_unlock(&disk, 0o500) {
                    set_mode(&obj, disk.mode | 0o700)
                        .map_err(|e| self.fail(e, Operation::SetPermissions, path))?;
                    self.unlocked.push((path.clone(), disk.mode));
                }
                let base_is_dir = before.as_ref().is_some_and(Metadata::is_dir);
                let st =
                    rustix::fs::fstat(&obj).map_err(|e| self.fail(e, Operation::ReadDir, path))?;
                next = Some((path.clone(), base_is_dir, (st.st_dev, st.st_ino)));
                (What::Dir, !same_attrs)
            }
            FileType::File if self.compare == Compare::Attributes => {
                (What::File(None), !same_attrs)
            }
            FileType::File => {
                let fd = if needs_unlock(&disk, 0o400) {
                    // A file of ours we may not read: readable just long
                    // enough to open it.
                    set_mode(&obj, disk.mode | 0o400)
                        .map_err(|e| self.fail(e, Operation::SetPermissions, path))?;
                    let opened = reopen(&obj, OFlags::RDONLY);
                    set_mode(&obj, disk.mode)
                        .map_err(|e| self.fail(e, Operation::SetPermissions, path))?;
                    opened
                } else {
                    reopen(&obj, OFlags::RDONLY)
                }
                .map_err(|e| self.fail(e, Operation::Read, path))?;
                let base_size = before.as_ref().filter(|b| b.is_file()).map(Metadata::len);
                let data = self.contents_if_changed(File::from(fd), path, base_size)?;
                let changed = data.is_some() || !same_attrs;
                (What::File(data), changed)
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&obj, "", Vec::new())
                    .map_err(|e| self.fail(e, Operation::ReadLink, path))?;
                let target = NameBuf::from(target.into_bytes());
                let same_target = same_attrs && self.base.read_link(path.as_name())? == target;
                (What::Symlink(target), !same_target)
            }
            FileType::Socket => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    Operation::Read,
                    self.disk_path(path),
                )
                .with_detail("a socket cannot be stored in a layer tar"));
            }
            _ => (What::Special, !same_attrs),
        };
        self.found.insert(
            path.clone(),
            Found {
                what,
                meta,
                changed,
                linked,
                base_linked,
                id,
            },
        );
        Ok(next)
    }

    /// The contents of `file` if they differ from the base's file of
    /// `base_size` bytes at `path` (or the base has no file there).
    fn contents_if_changed(
        &self,
        mut file: File,
        path: &LayerPath,
        base_size: Option<u64>,
    ) -> Result<Option<FileData>> {
        let fail = |e: std::io::Error| Error::from_io(&e, Operation::Read, self.disk_path(path));
        let size = file.metadata().map_err(fail)?.len();
        if base_size == Some(size) {
            let mut buf = vec![0u8; CHUNK];
            let mut offset = 0u64;
            let mut same = true;
            loop {
                let n = read_full(&mut file, &mut buf).map_err(fail)?;
                if n == 0 {
                    break;
                }
                let theirs = self.base.read_at(path.as_name(), offset, n)?;
                if theirs[..] != buf[..n] {
                    same = false;
                    break;
                }
                offset += n as u64;
            }
            if same && offset == size {
                return Ok(None);
            }
        }
        read_sparse(&file, size, self.spill)
            .map(Some)
            .map_err(|e| match e {
                Sparse::Read(e) => self.fail(e, Operation::Read, path),
                Sparse::Spill(e) => e.reframe(Operation::Read, self.disk_path(path)),
            })
    }

    /// Marks the names of hard-linked objects that must go into the layer
    /// for the layer to link what the directory links: every name of an
    /// inode when any of them changed or they were not one object in the
    /// base, and names that were one object in the base but are not now.
    fn spread_link_changes(&mut self) {
        let mut groups: HashMap<(u64, u64), Vec<LayerPath>> = HashMap::new();
        let mut base_groups: HashMap<u64, Vec<LayerPath>> = HashMap::new();
        for (path, f) in &self.found {
            if let Some(key) = f.linked {
                groups.entry(key).or_default().push(path.clone());
            }
            if let Some(ino) = f.base_linked {
                base_groups.entry(ino).or_default().push(path.clone());
            }
        }
        let groups: Vec<Vec<LayerPath>> = groups.into_values().filter(|g| g.len() > 1).collect();
        let base_groups: Vec<Vec<LayerPath>> =
            base_groups.into_values().filter(|g| g.len() > 1).collect();
        // A group is unchanged when its names were one object in the base
        // too: same base inode for all (and the other way round).
        for group in &groups {
            let first = self.found[&group[0]].base_linked;
            if first.is_none() || group.iter().any(|p| self.found[p].base_linked != first) {
                self.mark(group);
            }
        }
        // Names that were one object in the base and no longer all are:
        // the largest part that still is one object may stay as it is (the
        // first in path order, if two are as large), the others go in.
        for group in &base_groups {
            let mut parts: Vec<Vec<LayerPath>> = Vec::new();
            for p in group {
                let key = self.found[p].linked;
                match parts
                    .iter_mut()
                    .find(|part| key.is_some() && self.found[&part[0]].linked == key)
                {
                    Some(part) => part.push(p.clone()),
                    None => parts.push(vec![p.clone()]),
                }
            }
            let keep = parts
                .iter()
                .enumerate()
                .max_by_key(|(i, part)| (part.len(), std::cmp::Reverse(*i)))
                .map_or(0, |(i, _)| i);
            for (i, part) in parts.iter().enumerate() {
                if i != keep {
                    self.mark(part);
                }
            }
        }
        // A name that goes in takes the other names of its inode along:
        // in the layer they must be one object again.
        for group in &groups {
            if group.iter().any(|p| self.found[p].changed) {
                self.mark(group);
            }
        }
    }

    fn mark(&mut self, paths: &[LayerPath]) {
        for p in paths {
            if let Some(f) = self.found.get_mut(p) {
                f.changed = true;
            }
        }
    }

    /// The layer: every changed object and whiteout, with its parents.
    fn into_layer(mut self, root_meta: &Metadata) -> Result<MemLayer> {
        self.spread_link_changes();
        let mut include: BTreeSet<LayerPath> = BTreeSet::new();
        for (path, f) in &self.found {
            if !f.changed {
                continue;
            }
            let mut at = Some(path.clone());
            while let Some(p) = at {
                if p.is_root() || !include.insert(p.clone()) {
                    break;
                }
                at = p.parent();
            }
        }
        let mut layer = MemLayer::new();
        layer.set_metadata(&LayerPath::root(), root_meta)?;
        let mut first_name: HashMap<(u64, u64), LayerPath> = HashMap::new();
        for path in include {
            let f = self
                .found
                .get_mut(&path)
                .expect("included paths were found");
            match &mut f.what {
                What::Whiteout => layer.whiteout(&path)?,
                What::Dir => layer.create(&path, &f.meta, Content::Dir)?,
                What::File(data) => {
                    if let Some(first) = f.linked.and_then(|key| first_name.get(&key)) {
                        layer.hard_link(first, &path)?;
                        continue;
                    }
                    let data = match data.take() {
                        Some(data) => data,
                        // Unchanged contents: the base's, copied in pieces.
                        None => FileData::read_from(
                            |offset| self.base.read_at(path.as_name(), offset, CHUNK),
                            self.spill,
                        )?,
                    };
                    layer.create(&path, &f.meta, Content::File(data))?;
                    if let Some(key) = f.linked {
                        first_name.insert(key, path.clone());
                    }
                }
                What::Symlink(target) => {
                    layer.create(&path, &f.meta, Content::Symlink(target.clone()))?;
                }
                What::Special => layer.create(&path, &f.meta, Content::Special)?,
            }
        }
        Ok(layer)
    }
}

/// Whether `base` and `now` agree on everything compared besides contents
/// and symlink targets: type, mode (not of a symlink, whose mode Linux
/// fixes at `0o777`), owner, mtime, device number and kept xattrs.
fn same_attributes(base: &Metadata, now: &Metadata) -> bool {
    base.file_type == now.file_type
        && (now.is_symlink() || base.mode == now.mode)
        && base.uid == now.uid
        && base.gid == now.gid
        && base.mtime == now.mtime
        && base.rdev == now.rdev
        && kept_xattrs(&base.xattrs) == now.xattrs
}

/// Whether an extended attribute of the directory belongs in a layer.
pub(super) fn keep_xattr(name: &str) -> bool {
    let namespace =
        name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security.");
    namespace && !is_bookkeeping_xattr(name) && name != "security.selinux"
}

pub(super) fn kept_xattrs(xattrs: &Xattrs) -> Xattrs {
    let mut out = xattrs.clone();
    out.retain(|name, _| keep_xattr(name));
    out
}

/// The kept extended attributes of the object `fd`, read through
/// `/proc/self/fd` (which reaches even a symlink opened with `O_PATH`).
fn read_xattrs(fd: &OwnedFd) -> rustix::io::Result<Xattrs> {
    Ok(raw_xattrs(fd)?
        .into_iter()
        .filter(|(name, _)| keep_xattr(name))
        .collect())
}

/// Whether the walk must raise the mode of an object to read it: it is
/// ours, we are not root (root reads anything), and the owner lacks
/// `bits`.
fn needs_unlock(meta: &Metadata, bits: u32) -> bool {
    let euid = rustix::process::geteuid();
    !euid.is_root() && meta.uid == euid.as_raw() && meta.mode & bits != bits
}

/// `chmod` of the object of the `O_PATH` descriptor `fd` (a file or a
/// directory; `fchmod` does not take `O_PATH` descriptors).
fn set_mode(fd: &OwnedFd, mode: u32) -> rustix::io::Result<()> {
    rustix::fs::chmod(
        proc_path(fd).as_str(),
        Mode::from_raw_mode(mode & MODE_MASK),
    )
}

/// Opens the object of the `O_PATH` descriptor `fd` for reading: exactly
/// that inode, whatever its name now points at.
fn reopen(fd: &OwnedFd, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let st = rustix::fs::fstat(fd)?;
    let want_dir = flags.contains(OFlags::DIRECTORY);
    let is = FileType::from_mode(st.st_mode);
    if want_dir && is != Some(FileType::Dir) {
        return Err(Errno::NOTDIR);
    }
    if !want_dir && is != Some(FileType::File) {
        return Err(Errno::INVAL);
    }
    rustix::fs::open(
        proc_path(fd).as_str(),
        flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
}

/// `/proc` must be a real procfs: its links are trusted to lead to our
/// descriptors.
fn check_procfs(dir: &Utf8Path) -> Result<()> {
    if procfs_is_mounted() {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Io, Operation::ReadDir, dir)
            .with_detail("no procfs at /proc; the directory is read through /proc/self/fd"))
    }
}

/// Why [`read_sparse`] failed.
enum Sparse {
    Read(Errno),
    Spill(Error),
}

impl From<Errno> for Sparse {
    fn from(e: Errno) -> Sparse {
        Sparse::Read(e)
    }
}

/// The first `size` bytes of `file`, read region by region with
/// `SEEK_DATA` / `SEEK_HOLE`: holes, and runs of zeros in the data, are
/// stored as holes ([`FileData::write_zeros`]), never as bytes; data past
/// `spill`'s budget goes to its file.
fn read_sparse(file: &File, size: u64, spill: &Spill) -> std::result::Result<FileData, Sparse> {
    let mut data = FileData::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            // Nothing but a hole up to the end.
            Err(Errno::NXIO) => break,
            // A filesystem without SEEK_DATA: everything is data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => pos,
            Err(e) => return Err(e.into()),
        };
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(end) => end.min(size),
            Err(Errno::INVAL | Errno::OPNOTSUPP) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        let mut at = start;
        while at < end {
            let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
            let n = rustix::io::pread(file, &mut buf[..want], at)?;
            if n == 0 {
                // The file shrank while it was read: it ends here.
                data.set_len(at);
                return Ok(data);
            }
            data.write_at_spilling(at, &buf[..n], spill)
                .map_err(Sparse::Spill)?;
            at += n as u64;
        }
        pos = end;
    }
    data.set_len(size);
    Ok(data)
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
