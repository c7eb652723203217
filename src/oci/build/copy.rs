//! `COPY` and `ADD`: sources from the build context (or another stage's
//! view) copied into the [`MergedView`] of the step, with the rules of
//! BuildKit's `COPY` (the default builder of Docker since 23.0).
//! The rules are in the documentation of [`copy_into`].

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;

use camino::Utf8Path;
use rustix::fs::{AtFlags, FileType as RawType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::fs::beneath::open_beneath;
use crate::meta::{FileType, Metadata, Timestamp};
use crate::oci::build::ignore::{Ignore, glob_match};
use crate::oci::image::digest::{Digest, Hasher};
use crate::oci::tar::compress::Decompressor;
use crate::oci::tar::read::{Limits, TarKind, TarReader};
use crate::path::{LayerPath, Name, NameBuf};
use crate::view::MergedView;

#[cfg(test)]
mod tests;

/// Pieces in which file data is read and written: a big file is never
/// held whole in memory.
const CHUNK: usize = 1 << 20;

/// At most this many symlinks are followed in one source path (as the
/// kernel's `ELOOP` limit).
const MAX_LINKS: usize = 40;

/// Where `COPY`/`ADD` sources come from.
#[derive(Debug, Clone, Copy)]
pub enum CopySource<'a> {
    /// The build context directory on the host, with its `.dockerignore`
    /// applied.
    Context {
        /// The context directory.
        root: &'a Utf8Path,
        /// What the `.dockerignore` leaves out.
        ignore: &'a Ignore,
    },
    /// Another stage or image (`COPY --from`): its merged view.
    View(&'a MergedView),
}

/// The flags of a `COPY`/`ADD`.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown`, resolved to ids (see [`resolve_chown`]).
    pub chown: Option<(u32, u32)>,
    /// `--chmod`: the mode bits of every copied file and directory.
    pub chmod: Option<u32>,
    /// `ADD`: a local tar (plain, gzip or zstd) is extracted instead of
    /// copied.
    pub extract_archives: bool,
}

/// Copies `sources` (variable-expanded, as written: globs allowed,
/// relative to the source root) to `dest` (relative to `workdir` unless
/// absolute) in `view`, with BuildKit's rules (below). `progress(done,
/// total)` is called as file data is written, `total` being every byte of
/// file data to copy.
///
/// # Sources
/// Sources are relative to the source root: a leading `/` and `..` never
/// leave it (`COPY ../x .` reads `x` of the context, as BuildKit clamps
/// it). Symlinks are resolved by this module inside the root (an absolute
/// target starts at the root, `..` stops there, at most 40 links), and the
/// context is then opened only beneath its root descriptor with no symlink
/// followed, so nothing outside the context is ever read. A source is
/// followed when it is a symlink itself (BuildKit's `FollowLinks`): `COPY
/// link dst/` copies what `link` points to, under the name `link`. Within
/// a copied directory, symlinks are copied as symlinks.
///
/// Wildcards (`*`, `?`, `[…]`, `\`) are matched per name with
/// [`glob_match`] (Go's `filepath.Match`), names in byte order; a source
/// that matches nothing is an error naming it. Paths the `.dockerignore`
/// leaves out do not exist for `COPY` (the `Dockerfile` and `.dockerignore`
/// themselves included, as Docker sends them only when not ignored); an
/// ignored directory with a kept descendant (an exception pattern) holds
/// only what is kept.
///
/// # Destination
/// `dest` is relative to `workdir` unless absolute. A directory source
/// copies its contents. A file source goes inside `dest` when `dest` ends
/// with `/` (or is `.`, `..`, or ends with `/.` or `/..`) or is an existing
/// directory, else it becomes `dest`. Several sources (or a wildcard that
/// matches several) need a directory `dest` ending with `/`: the error is
/// Docker's text. Missing parents of `dest` are created with mode `0755`,
/// owned by the `--chown` ids (root otherwise), as BuildKit's `MkdirAll`;
/// with a `dest` ending in `/` the directory `dest` itself is one of them,
/// and then keeps those attributes (BuildKit copies a source directory's
/// attributes only onto a directory the copy itself creates).
///
/// Over what the view holds: a non-directory replaces a non-directory (a
/// symlink at the target is replaced, never written through); a
/// directory merges into an existing directory, whose attributes stay;
/// a directory over a non-directory is BuildKit's error "cannot copy to
/// non-directory", and a non-directory over a directory is an error too
/// ("cannot replace directory with a file"): no panic, nothing deleted.
///
/// # Metadata
/// Files, directories and special files keep their mode bits and mtime
/// (atime set to the mtime); `--chmod` replaces the mode bits of every
/// copied file and directory (BuildKit applies it to directories too).
/// Owners: `--chown` ids when given; otherwise `0:0` from the context
/// (BuildKit resets the context's ids) and the source's ids from a view
/// (`COPY --from` keeps them, as BuildKit does). Hard links among the
/// copied names (one inode, several names) stay hard links. Fifos and
/// devices are made again with their type and device number; sockets are
/// skipped (nothing of a socket can be copied; BuildKit's context transfer
/// does not carry them either). Extended attributes are not copied.
///
/// # `ADD` of a local archive
/// With [`CopyOptions::extract_archives`], a source file that is a tar
/// (plain, gzip or zstd, detected from its bytes, as Docker detects it) is
/// extracted into the destination directory through the crate's one
/// hardened tar reader ([`TarReader`]): absolute names and `..` are clamped
/// to the destination as the layer importer clamps them. As Docker's
/// `Untar`: an existing object is replaced unless both are directories,
/// the tar's owners are kept (the `--chown` ids when given), and names
/// starting with `.wh.` are plain names (no whiteout is interpreted).
/// bzip2 and xz archives are refused with an error (the crate reads
/// neither). A file that is not an archive is copied as a file.
///
/// A copied symlink gets the owner and mtime of the link itself (the
/// `--chown` ids when given), as BuildKit's `Lchown` and `Lutimes` give it.
///
/// buildah 1.28 (the peer of the tests) differs from BuildKit in places;
/// this module follows BuildKit. Checked by hand with buildah: the
/// missing parents of `dest` are `0755` and owned by the `--chown` ids,
/// a `dest` ending in `/` is `0755` root, and a symlink source is copied
/// as the file it points to, as here; but `COPY dir /new` gives `/new`
/// mode `0755` in buildah, where BuildKit (and this module) copy the
/// source directory's attributes onto a directory the copy creates.
///
/// # Errors
/// `Operation::BuildImage` errors naming the source or destination: a
/// source that matches nothing (`ENOENT`), several sources to a `dest`
/// without a trailing `/` (`EINVAL`), a directory over a non-directory
/// (`ENOTDIR`) or the reverse (`EISDIR`), an archive compressed with bzip2
/// or xz (`EOPNOTSUPP`), a hostile tar (the reader's errors); errors
/// reading the source or writing the view.
pub fn copy_into(
    view: &MergedView,
    source: &CopySource<'_>,
    sources: &[String],
    dest: &str,
    workdir: &str,
    options: &CopyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let tree = Tree::open(source)?;
    let selected = select(&tree, sources, options)?;
    let dest_path = dest_path(dest, workdir)?;
    let dest_is_dir = dest_names_dir(dest);
    if !dest_is_dir && selected.len() > 1 {
        return Err(build_error(ErrorKind::InvalidInput, dest).with_detail(
            "When using COPY with more than one source file, the destination must be a directory and end with a /",
        ));
    }
    let total = selected.iter().map(Selected::data_bytes).sum();
    let mut writer = Writer {
        view,
        tree: &tree,
        options,
        done: 0,
        total,
        progress,
        dirs: Vec::new(),
    };
    (writer.progress)(0, total);
    let owner = options.chown.unwrap_or((0, 0));
    if dest_is_dir {
        writer.mkdir_all(&dest_path, owner)?;
    } else if let Some(parent) = dest_path.parent() {
        writer.mkdir_all(&parent, owner)?;
    }
    for sel in &selected {
        writer.copy_selected(sel, &dest_path, dest_is_dir)?;
    }
    writer.finish_dirs()
}

/// The content digest of what `sources` select (what the build cache
/// keys `COPY`/`ADD` on): for each source in order, the source as matched,
/// then every object it copies in byte order of its relative name, with
/// its type, mode bits (after `--chmod`), owner (after `--chown`, and the
/// context's `0:0`), device number, symlink target, hard-link partner and
/// file contents; and whether archives are extracted.
///
/// Modification times are not part of it, as in Docker's build cache: a
/// `touch` of a context file reuses the cached layer (which keeps the
/// mtimes of the build that made it).
///
/// # Errors
/// As [`copy_into`] for the sources.
pub fn sources_digest(
    source: &CopySource<'_>,
    sources: &[String],
    options: &CopyOptions,
) -> Result<Digest> {
    let tree = Tree::open(source)?;
    let selected = select(&tree, sources, options)?;
    let mut h = Hasher::new();
    let field = |h: &mut Hasher, bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    h.update(&[u8::from(options.extract_archives)]);
    let mut buf = vec![0u8; CHUNK];
    for sel in &selected {
        field(&mut h, b"source");
        field(&mut h, &sel.written);
        let mut first_of: HashMap<(u64, u64), &[u8]> = HashMap::new();
        for obj in &sel.objects {
            field(&mut h, &obj.rel);
            let m = &obj.meta;
            h.update(&[type_code(m.file_type)]);
            for n in [
                u64::from(m.mode),
                u64::from(m.uid),
                u64::from(m.gid),
                m.rdev,
            ] {
                h.update(&n.to_le_bytes());
            }
            if let Some(target) = &obj.target {
                field(&mut h, target.as_bytes());
            }
            if m.file_type.is_file() {
                if let Some(key) = obj.link_key {
                    if let Some(first) = first_of.get(&key) {
                        field(&mut h, b"link");
                        field(&mut h, first);
                        continue;
                    }
                    first_of.insert(key, &obj.rel);
                }
                h.update(&m.size.to_le_bytes());
                let mut reader = tree.reader(&obj.src)?;
                let mut at = 0;
                while at < m.size {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| read_error(&tree, &obj.src, &e))?;
                    if n == 0 {
                        return Err(tree
                            .error(ErrorKind::InvalidData, &obj.src)
                            .with_detail("the file shrank while it was read"));
                    }
                    let n = n.min(usize::try_from(m.size - at).unwrap_or(n));
                    h.update(&buf[..n]);
                    at += n as u64;
                }
            }
        }
    }
    Ok(h.finish())
}

/// The ids of a `--chown` (or `USER`-like) spec `user[:group]`: numbers,
/// or names looked up in the view's `/etc/passwd` and `/etc/group`. A user
/// alone gets its primary group from `/etc/passwd` when named, and the
/// same number as group when numeric (BuildKit's rule).
///
/// # Errors
/// `EINVAL` for an empty part; `ENOENT` naming the file for a name it
/// does not hold (or when it is missing).
pub fn resolve_chown(view: &MergedView, spec: &str) -> Result<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(build_error(ErrorKind::InvalidInput, spec)
            .with_detail("--chown needs `user`, `user:group` or numeric ids"));
    }
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => {
            let fields = lookup(view, "etc/passwd", user)?;
            let id = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
            match (id(2), id(3)) {
                (Some(uid), Some(gid)) => (uid, gid),
                _ => {
                    return Err(build_error(ErrorKind::InvalidData, "etc/passwd")
                        .with_detail(format!("bad entry for user `{user}`")));
                }
            }
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let fields = lookup(view, "etc/group", g)?;
                fields
                    .get(2)
                    .and_then(|f| f.parse::<u32>().ok())
                    .ok_or_else(|| {
                        build_error(ErrorKind::InvalidData, "etc/group")
                            .with_detail(format!("bad entry for group `{g}`"))
                    })?
            }
        },
    };
    Ok((uid, gid))
}

/// The `:`-separated fields of the line of `file` (in `view`) whose first
/// field is `name`.
fn lookup(view: &MergedView, file: &str, name: &str) -> Result<Vec<String>> {
    let what = if file.ends_with("passwd") {
        "user"
    } else {
        "group"
    };
    let text = match view.read(file) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(build_error(ErrorKind::NotFound, file)
                .with_detail(format!("no such file, so {what} `{name}` cannot be found")));
        }
        Err(e) => return Err(e.reframe(Operation::BuildImage, file)),
    };
    for line in text.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let fields: Vec<String> = line.split(':').map(str::to_owned).collect();
        if fields.first().is_some_and(|f| f == name) {
            return Ok(fields);
        }
    }
    Err(build_error(ErrorKind::NotFound, file).with_detail(format!("{what} `{name}` not found")))
}

fn build_error(kind: ErrorKind, path: impl crate::path::PathLike) -> Error {
    Error::new(kind, Operation::BuildImage, path)
}

fn type_code(t: FileType) -> u8 {
    match t {
        FileType::File => b'f',
        FileType::Dir => b'd',
        FileType::Symlink => b'l',
        FileType::Fifo => b'p',
        FileType::CharDevice => b'c',
        FileType::BlockDevice => b'b',
        FileType::Socket => b's',
    }
}

// ----- the destination -----

/// Whether `dest` names a directory by its spelling (Docker: a trailing
/// `/`, or `.`/`..` as the last component).
fn dest_names_dir(dest: &str) -> bool {
    dest.is_empty()
        || dest.ends_with('/')
        || dest == "."
        || dest == ".."
        || dest.ends_with("/.")
        || dest.ends_with("/..")
}

/// `dest` made absolute against `workdir` and cleaned (`..` stops at the
/// root), as a path in the view.
fn dest_path(dest: &str, workdir: &str) -> Result<LayerPath> {
    let joined = if dest.starts_with('/') {
        dest.to_owned()
    } else {
        format!("{workdir}/{dest}")
    };
    let names = clean(joined.as_bytes());
    LayerPath::from_names(names.iter().map(|n| n.as_slice()))
        .map_err(|e| build_error(e.kind(), dest).with_detail(e.cause()))
}

/// The names of `path` with `.` dropped and `..` taking one off (never
/// above the root).
fn clean(path: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for name in path.split(|&b| b == b'/') {
        match name {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            n => out.push(n.to_vec()),
        }
    }
    out
}

// ----- the source tree -----

/// A source root: the context on disk (opened beneath its descriptor) or
/// a view.
enum Tree<'a> {
    Context {
        root: &'a Utf8Path,
        fd: OwnedFd,
        ignore: &'a Ignore,
    },
    View(&'a MergedView),
}

impl<'a> Tree<'a> {
    fn open(source: &CopySource<'a>) -> Result<Tree<'a>> {
        match *source {
            CopySource::Context { root, ignore } => {
                let fd = rustix::fs::open(
                    root.as_std_path(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| {
                    build_error(errno_kind(e), root.as_str())
                        .with_detail("cannot open the build context")
                })?;
                Ok(Tree::Context { root, fd, ignore })
            }
            CopySource::View(view) => Ok(Tree::View(view)),
        }
    }

    /// The path an error names: the file on the host for the context.
    fn shown(&self, path: &LayerPath) -> Vec<u8> {
        match self {
            Tree::Context { root, .. } => {
                let mut p = root.as_str().trim_end_matches('/').as_bytes().to_vec();
                if !path.is_root() {
                    p.push(b'/');
                    p.extend_from_slice(path.as_bytes());
                }
                if p.is_empty() {
                    p.push(b'/');
                }
                p
            }
            Tree::View(_) => {
                let mut p = b"/".to_vec();
                p.extend_from_slice(path.as_bytes());
                p
            }
        }
    }

    fn error(&self, kind: ErrorKind, path: &LayerPath) -> Error {
        build_error(kind, self.shown(path))
    }

    fn errno(&self, e: Errno, path: &LayerPath) -> Error {
        self.error(errno_kind(e), path)
    }

    /// The object at `path` (no symlink followed, none on the way), or
    /// `None` when it does not exist or the `.dockerignore` leaves it out.
    fn lstat(&self, path: &LayerPath) -> Result<Option<Metadata>> {
        match self {
            Tree::Context { fd, ignore, .. } => {
                let meta = match self.disk_stat(fd, path) {
                    Ok(meta) => meta,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
                    Err(e) => return Err(self.errno(e, path)),
                };
                if !path.is_root() && ignore.is_ignored(path.as_bytes()) {
                    let kept_inside = meta.file_type.is_dir()
                        && ignore.has_exceptions()
                        && !self.read_dir(path)?.is_empty();
                    if !kept_inside {
                        return Ok(None);
                    }
                }
                Ok(Some(meta))
            }
            Tree::View(view) => match view.symlink_metadata(abs(path)) {
                Ok(meta) => Ok(Some(meta)),
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    Ok(None)
                }
                Err(e) => Err(e.reframe(Operation::BuildImage, self.shown(path))),
            },
        }
    }

    fn disk_stat(&self, root: &OwnedFd, path: &LayerPath) -> rustix::io::Result<Metadata> {
        let st = match path.parent() {
            None => rustix::fs::fstat(root)?,
            Some(parent) => {
                let dir = open_beneath(root, &parent, OFlags::PATH | OFlags::DIRECTORY)?;
                let name = path.file_name().map_or(&b"."[..], Name::as_bytes);
                rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?
            }
        };
        let file_type = match RawType::from_raw_mode(st.st_mode) {
            RawType::RegularFile => FileType::File,
            RawType::Directory => FileType::Dir,
            RawType::Symlink => FileType::Symlink,
            RawType::Fifo => FileType::Fifo,
            RawType::CharacterDevice => FileType::CharDevice,
            RawType::BlockDevice => FileType::BlockDevice,
            _ => FileType::Socket,
        };
        let mut meta = Metadata::new(file_type)
            .with_mode(st.st_mode & 0o7777)
            .with_owner(st.st_uid, st.st_gid);
        meta.size = u64::try_from(st.st_size).unwrap_or(0);
        meta.nlink = st.st_nlink;
        meta.rdev = st.st_rdev;
        meta.ino = st.st_ino;
        let ts = |sec: i64, nsec: u64| Timestamp {
            sec,
            nsec: u32::try_from(nsec).unwrap_or(0),
        };
        meta.mtime = ts(st.st_mtime, st.st_mtime_nsec);
        meta.atime = meta.mtime;
        meta.ctime = ts(st.st_ctime, st.st_ctime_nsec);
        // Names of one inode are told apart by device too on the host.
        meta.ino ^= st.st_dev.rotate_left(32);
        Ok(meta)
    }

    /// The visible names in directory `path`, in byte order.
    fn read_dir(&self, path: &LayerPath) -> Result<Vec<NameBuf>> {
        match self {
            Tree::Context { fd, ignore, .. } => {
                let dir = open_beneath(fd, path, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| self.errno(e, path))?;
                let mut list = rustix::fs::Dir::read_from(&dir).map_err(|e| self.errno(e, path))?;
                let mut names = Vec::new();
                while let Some(entry) = list.read() {
                    let entry = entry.map_err(|e| self.errno(e, path))?;
                    let raw = entry.file_name().to_bytes();
                    if raw == b"." || raw == b".." {
                        continue;
                    }
                    let child = join(path, raw, self)?;
                    if ignore.is_ignored(child.as_bytes()) {
                        // Kept only if an exception keeps something in it.
                        if !ignore.has_exceptions() || self.lstat(&child)?.is_none() {
                            continue;
                        }
                    }
                    names.push(NameBuf::from(raw));
                }
                names.sort();
                Ok(names)
            }
            Tree::View(view) => {
                let mut names: Vec<NameBuf> = view
                    .read_dir(abs(path))
                    .map_err(|e| e.reframe(Operation::BuildImage, self.shown(path)))?
                    .into_iter()
                    .map(|e| e.name)
                    .collect();
                names.sort();
                Ok(names)
            }
        }
    }

    fn read_link(&self, path: &LayerPath) -> Result<NameBuf> {
        match self {
            Tree::Context { fd, .. } => {
                let parent = path.parent().unwrap_or_else(LayerPath::root);
                let dir = open_beneath(fd, &parent, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| self.errno(e, path))?;
                let name = path.file_name().map_or(&b"."[..], Name::as_bytes);
                let target = rustix::fs::readlinkat(&dir, name, Vec::new())
                    .map_err(|e| self.errno(e, path))?;
                Ok(NameBuf::from(target.into_bytes()))
            }
            Tree::View(view) => view
                .read_link(abs(path))
                .map_err(|e| e.reframe(Operation::BuildImage, self.shown(path))),
        }
    }

    /// Reads file `path` at `offset` into `buf`; 0 at its end.
    fn read_at(&self, path: &LayerPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match self {
            Tree::Context { .. } => {
                let file = self.open_file(path)?;
                read_fd(self, &file, path, offset, buf)
            }
            Tree::View(view) => {
                let data = view
                    .read_at(abs(path), offset, buf.len())
                    .map_err(|e| e.reframe(Operation::BuildImage, self.shown(path)))?;
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
        }
    }

    /// Opens regular file `path` of the context for reading (never a fifo:
    /// `O_NONBLOCK`, and the type checked on the descriptor).
    fn open_file(&self, path: &LayerPath) -> Result<OwnedFd> {
        let Tree::Context { fd, .. } = self else {
            unreachable!("only the context has descriptors")
        };
        let file = open_beneath(fd, path, OFlags::RDONLY | OFlags::NONBLOCK)
            .map_err(|e| self.errno(e, path))?;
        let st = rustix::fs::fstat(&file).map_err(|e| self.errno(e, path))?;
        if RawType::from_raw_mode(st.st_mode) != RawType::RegularFile {
            return Err(self
                .error(ErrorKind::InvalidInput, path)
                .with_detail("changed into something that is not a file while it was read"));
        }
        Ok(file)
    }

    /// A reader of file `path` from its start.
    fn reader(&self, path: &LayerPath) -> Result<TreeReader<'_, 'a>> {
        let fd = match self {
            Tree::Context { .. } => Some(self.open_file(path)?),
            Tree::View(_) => None,
        };
        Ok(TreeReader {
            tree: self,
            path: path.clone(),
            fd,
            offset: 0,
        })
    }

    /// Resolves `names` from the root, following symlinks inside the root
    /// (the last one only with `follow_last`). `None` when something on the
    /// way does not exist or is not a directory.
    fn resolve(
        &self,
        names: &[Vec<u8>],
        follow_last: bool,
    ) -> Result<Option<(LayerPath, Metadata)>> {
        let mut todo: Vec<Vec<u8>> = names.iter().rev().cloned().collect();
        let mut cur = LayerPath::root();
        let mut meta = match self.lstat(&cur)? {
            Some(m) => m,
            None => return Ok(None),
        };
        let mut links = 0;
        while let Some(name) = todo.pop() {
            match name.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur = cur.parent().unwrap_or_else(LayerPath::root);
                    meta = self
                        .lstat(&cur)?
                        .ok_or_else(|| self.error(ErrorKind::NotFound, &cur))?;
                    continue;
                }
                _ => {}
            }
            if !meta.file_type.is_dir() {
                return Ok(None);
            }
            let next = join(&cur, &name, self)?;
            let Some(m) = self.lstat(&next)? else {
                return Ok(None);
            };
            let last = todo.is_empty();
            if m.file_type.is_symlink() && (!last || follow_last) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(self
                        .error(ErrorKind::FilesystemLoop, &next)
                        .with_detail("too many levels of symbolic links"));
                }
                let target = self.read_link(&next)?;
                let t = target.as_bytes();
                if t.starts_with(b"/") {
                    cur = LayerPath::root();
                    meta = self
                        .lstat(&cur)?
                        .ok_or_else(|| self.error(ErrorKind::NotFound, &cur))?;
                }
                todo.extend(t.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                continue;
            }
            cur = next;
            meta = m;
        }
        Ok(Some((cur, meta)))
    }
}

/// Reads `file` at `offset` into `buf`, retrying on `EINTR`.
fn read_fd(
    tree: &Tree<'_>,
    file: &OwnedFd,
    path: &LayerPath,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    loop {
        match rustix::io::pread(file, &mut *buf, offset) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => {}
            Err(e) => return Err(tree.errno(e, path)),
        }
    }
}

/// `std::io::Read` over a file of a tree.
struct TreeReader<'t, 'a> {
    tree: &'t Tree<'a>,
    path: LayerPath,
    fd: Option<OwnedFd>,
    offset: u64,
}

impl Read for TreeReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match &self.fd {
            Some(fd) => read_fd(self.tree, fd, &self.path, self.offset, buf),
            None => self.tree.read_at(&self.path, self.offset, buf),
        }
        .map_err(std::io::Error::from)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// `path` as the view takes it: from its root (the view reads the empty
/// path as `std` does, as missing).
fn abs(path: &LayerPath) -> Vec<u8> {
    let mut p = Vec::with_capacity(path.as_bytes().len() + 1);
    p.push(b'/');
    p.extend_from_slice(path.as_bytes());
    p
}

/// `base` joined with the `/`-separated names of `rel`.
fn join_rel(base: &LayerPath, rel: &[u8]) -> Result<LayerPath> {
    let mut path = base.clone();
    for name in rel.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
        path = path.join(Name::new(name))?;
    }
    Ok(path)
}

fn join(dir: &LayerPath, name: &[u8], tree: &Tree<'_>) -> Result<LayerPath> {
    dir.join(Name::new(name))
        .map_err(|e| tree.error(e.kind(), dir).with_detail(e.cause()))
}

/// An error reading file `path` of `tree` through a [`TreeReader`].
fn read_error(tree: &Tree<'_>, path: &LayerPath, e: &std::io::Error) -> Error {
    let kind = e
        .raw_os_error()
        .and_then(ErrorKind::from_errno)
        .unwrap_or(ErrorKind::Io);
    tree.error(kind, path).with_detail(e.to_string())
}

fn errno_kind(e: Errno) -> ErrorKind {
    crate::fs::beneath::errno_kind(e)
}

// ----- selecting what to copy -----

/// One object to copy.
#[derive(Debug)]
struct Object {
    /// Its name relative to the source (empty for the source itself).
    rel: Vec<u8>,
    /// Where it is in the tree.
    src: LayerPath,
    /// Its metadata with the owner and mode it gets.
    meta: Metadata,
    /// A symlink's target.
    target: Option<NameBuf>,
    /// The inode it shares with other names, if several.
    link_key: Option<(u64, u64)>,
}

/// One matched source: what it copies.
#[derive(Debug)]
struct Selected {
    /// The source path as matched (before symlinks): its last name is the
    /// name a file gets inside a directory `dest`.
    written: Vec<u8>,
    /// The source itself first, then (for a directory) its contents,
    /// parents before children, in byte order.
    objects: Vec<Object>,
    /// A source file to extract as an archive.
    archive: bool,
}

impl Selected {
    fn data_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.objects
            .iter()
            .filter(|o| o.meta.file_type.is_file())
            .filter(|o| o.link_key.is_none_or(|k| seen.insert(k)))
            .map(|o| o.meta.size)
            .sum()
    }
}

/// Expands and resolves every source, and lists what each copies.
fn select(tree: &Tree<'_>, sources: &[String], options: &CopyOptions) -> Result<Vec<Selected>> {
    let mut out = Vec::new();
    for source in sources {
        let names = clean(source.as_bytes());
        let matches = expand(tree, &names)?;
        let place = match tree {
            Tree::Context { .. } => "in the build context",
            Tree::View(_) => "in the `--from` image",
        };
        if matches.is_empty() {
            let kind = ErrorKind::NotFound;
            let detail = if has_meta(source.as_bytes()) {
                format!("no source files were specified: `{source}` matches nothing {place}")
            } else {
                format!("source `{source}` not found {place}")
            };
            return Err(tree.error(kind, &LayerPath::root()).with_detail(detail));
        }
        for written in matches {
            let Some((src, meta)) = tree.resolve(&written, true)? else {
                return Err(tree
                    .error(ErrorKind::NotFound, &LayerPath::root())
                    .with_detail(format!(
                        "source `{source}` not found {place} (a dangling symlink?)"
                    )));
            };
            let mut objects = Vec::new();
            list(tree, &src, Vec::new(), meta, options, &mut objects)?;
            let archive = options.extract_archives
                && objects.len() == 1
                && objects[0].meta.file_type.is_file()
                && is_archive(tree, &src)?;
            let written = written.join(&b'/');
            out.push(Selected {
                written,
                objects,
                archive,
            });
        }
    }
    Ok(out)
}

fn has_meta(name: &[u8]) -> bool {
    name.iter().any(|b| b"*?[\\".contains(b))
}

/// The paths `names` matches (wildcards per name, in byte order), each
/// as its names from the root; without wildcards, the path itself when it
/// exists.
fn expand(tree: &Tree<'_>, names: &[Vec<u8>]) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut partial: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let mut next = Vec::new();
        for prefix in partial {
            if has_meta(name) {
                let Some((dir, meta)) = tree.resolve(&prefix, true)? else {
                    continue;
                };
                if !meta.file_type.is_dir() {
                    continue;
                }
                let pattern = String::from_utf8_lossy(name);
                for child in tree.read_dir(&dir)? {
                    let matched = glob_match(&pattern, child.as_bytes()).map_err(|e| {
                        tree.error(ErrorKind::InvalidInput, &LayerPath::root())
                            .with_detail(e.to_string())
                    })?;
                    if matched {
                        let mut p = prefix.clone();
                        p.push(child.into_bytes());
                        next.push(p);
                    }
                }
            } else {
                let mut p = prefix;
                p.push(name.clone());
                next.push(p);
            }
        }
        partial = next;
        if last {
            break;
        }
    }
    let mut found = Vec::new();
    for p in partial {
        if tree.resolve(&p, true)?.is_some() {
            found.push(p);
        }
    }
    Ok(found)
}

/// Lists `src` (at `rel`) and, for a directory, everything in it into
/// `out`, parents first, with the owner and mode each gets.
fn list(
    tree: &Tree<'_>,
    src: &LayerPath,
    rel: Vec<u8>,
    mut meta: Metadata,
    options: &CopyOptions,
    out: &mut Vec<Object>,
) -> Result<()> {
    let file_type = meta.file_type;
    if file_type == FileType::Socket {
        return Ok(());
    }
    let (uid, gid) = match (options.chown, tree) {
        (Some(ids), _) => ids,
        (None, Tree::Context { .. }) => (0, 0),
        (None, Tree::View(_)) => (meta.uid, meta.gid),
    };
    meta.uid = uid;
    meta.gid = gid;
    if let Some(mode) = options.chmod
        && !file_type.is_symlink()
    {
        meta.mode = mode & 0o7777;
    }
    let target = if file_type.is_symlink() {
        Some(tree.read_link(src)?)
    } else {
        None
    };
    let link_key = (!file_type.is_dir() && meta.nlink > 1).then_some((meta.ino, 0));
    out.push(Object {
        rel: rel.clone(),
        src: src.clone(),
        meta,
        target,
        link_key,
    });
    if file_type.is_dir() {
        for name in tree.read_dir(src)? {
            let child = join(src, name.as_bytes(), tree)?;
            let Some(child_meta) = tree.lstat(&child)? else {
                continue;
            };
            let mut child_rel = rel.clone();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(name.as_bytes());
            list(tree, &child, child_rel, child_meta, options, out)?;
        }
    }
    Ok(())
}

/// Whether file `path` is a tar (plain, gzip or zstd) as Docker's `ADD`
/// tells one: its first header decodes. bzip2 and xz archives are an
/// error.
fn is_archive(tree: &Tree<'_>, path: &LayerPath) -> Result<bool> {
    let mut head = [0u8; 6];
    let n = tree.read_at(path, 0, &mut head)?;
    let head = &head[..n];
    if head.starts_with(b"BZh") || head.starts_with(b"\xfd7zXZ\0") {
        let which = if head.starts_with(b"BZh") {
            "bzip2"
        } else {
            "xz"
        };
        return Err(tree
            .error(ErrorKind::Unsupported, path)
            .with_detail(format!(
                "ADD cannot extract a {which} archive (only plain, gzip and zstd tars)"
            )));
    }
    let Ok(mut decoded) = Decompressor::new(tree.reader(path)?) else {
        return Ok(false);
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match decoded.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(false),
        }
    }
    Ok(got == block.len() && header_checksum_ok(&block))
}

/// Whether a 512-byte block is a tar header: its checksum field matches
/// (the test Go's `archive/tar` applies first).
fn header_checksum_ok(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| char::from(b))
        .collect();
    let Ok(want) = u64::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    sum == want
}

// ----- writing into the view -----

struct Writer<'w, 't, 'a> {
    view: &'w MergedView,
    tree: &'t Tree<'a>,
    options: &'w CopyOptions,
    done: u64,
    total: u64,
    progress: &'w mut dyn FnMut(u64, u64),
    /// Directories whose times are set last (writing into a directory
    /// changes its mtime), with the mtime they get.
    dirs: Vec<(LayerPath, Timestamp)>,
}

impl Writer<'_, '_, '_> {
    fn fail(&self, e: Error, path: &LayerPath) -> Error {
        let mut shown = b"/".to_vec();
        shown.extend_from_slice(path.as_bytes());
        e.reframe(Operation::BuildImage, shown)
    }

    fn dest_error(&self, kind: ErrorKind, path: &LayerPath) -> Error {
        let mut shown = b"/".to_vec();
        shown.extend_from_slice(path.as_bytes());
        build_error(kind, shown)
    }

    /// Creates `path` and its missing parents (mode `0755`, owned by
    /// `owner`), following symlinks in the view, as BuildKit's `MkdirAll`.
    fn mkdir_all(&mut self, path: &LayerPath, owner: (u32, u32)) -> Result<()> {
        match self.view.metadata(abs(path)) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(self
                    .dest_error(ErrorKind::NotADirectory, path)
                    .with_detail("cannot copy to non-directory"));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(self.fail(e, path)),
        }
        if let Some(parent) = path.parent() {
            self.mkdir_all(&parent, owner)?;
        }
        self.view
            .create_dir_all(abs(path))
            .map_err(|e| self.fail(e, path))?;
        self.view
            .set_owner(abs(path), Some(owner.0), Some(owner.1))
            .map_err(|e| self.fail(e, path))?;
        self.view
            .set_permissions(abs(path), 0o755)
            .map_err(|e| self.fail(e, path))
    }

    fn copy_selected(&mut self, sel: &Selected, dest: &LayerPath, dest_is_dir: bool) -> Result<()> {
        let Some(root) = sel.objects.first() else {
            // A socket source: skipped, as inside a directory.
            return Ok(());
        };
        let into_dir = dest_is_dir || self.view.metadata(abs(dest)).is_ok_and(|m| m.is_dir());
        let base = if root.meta.file_type.is_dir() || sel.archive {
            dest.clone()
        } else if into_dir {
            let name = sel
                .written
                .rsplit(|&b| b == b'/')
                .next()
                .unwrap_or_default();
            if name.is_empty() {
                dest.clone()
            } else {
                dest.join(Name::new(name)).map_err(|e| self.fail(e, dest))?
            }
        } else {
            dest.clone()
        };
        if sel.archive {
            self.mkdir_all(&base, self.options.chown.unwrap_or((0, 0)))?;
            self.extract(&root.src, &base)?;
            // The archive's bytes count as read once it is extracted.
            self.done += root.meta.size;
            (self.progress)(self.done, self.total);
            return Ok(());
        }
        let mut first_of: HashMap<(u64, u64), LayerPath> = HashMap::new();
        for obj in &sel.objects {
            let to = if obj.rel.is_empty() {
                base.clone()
            } else {
                join_rel(&base, &obj.rel).map_err(|e| self.fail(e, &base))?
            };
            if let Some(key) = obj.link_key {
                if let Some(first) = first_of.get(&key) {
                    self.clear_for(&to, FileType::File)?;
                    self.view
                        .hard_link(abs(first), abs(&to))
                        .map_err(|e| self.fail(e, &to))?;
                    continue;
                }
                first_of.insert(key, to.clone());
            }
            self.write_object(obj, &to)?;
        }
        Ok(())
    }

    /// Makes room at `to` for an object of type `new`: a non-directory
    /// there is removed; a directory stays for a directory (`Ok(true)`:
    /// it exists) and is an error for anything else.
    fn clear_for(&mut self, to: &LayerPath, new: FileType) -> Result<bool> {
        let existing = match self.view.symlink_metadata(abs(to)) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.fail(e, to)),
        };
        match (existing.is_dir(), new.is_dir()) {
            (true, true) => Ok(true),
            (true, false) => Err(self
                .dest_error(ErrorKind::IsADirectory, to)
                .with_detail("cannot replace directory with a file")),
            (false, true) => {
                // A symlink to a directory takes a directory's contents
                // (as MkdirAll follows it: `/lib -> usr/lib` of a
                // merged-/usr image).
                let to_dir = existing.file_type.is_symlink()
                    && self.view.metadata(abs(to)).is_ok_and(|m| m.is_dir());
                if to.is_root() || to_dir {
                    return Ok(true);
                }
                Err(self
                    .dest_error(ErrorKind::NotADirectory, to)
                    .with_detail("cannot copy to non-directory"))
            }
            (false, false) => {
                self.view
                    .remove_file(abs(to))
                    .map_err(|e| self.fail(e, to))?;
                Ok(false)
            }
        }
    }

    fn write_object(&mut self, obj: &Object, to: &LayerPath) -> Result<()> {
        let m = &obj.meta;
        let existed = self.clear_for(to, m.file_type)?;
        match m.file_type {
            FileType::Dir => {
                if existed {
                    return Ok(());
                }
                self.view
                    .create_dir(abs(to))
                    .map_err(|e| self.fail(e, to))?;
                self.set_meta(to, m)?;
                self.dirs.push((to.clone(), m.mtime));
                return Ok(());
            }
            FileType::File => {
                self.view
                    .write(abs(to), b"")
                    .map_err(|e| self.fail(e, to))?;
                let mut buf = vec![0u8; CHUNK.min(usize::try_from(m.size).unwrap_or(CHUNK)).max(1)];
                let mut reader = self.tree.reader(&obj.src)?;
                let mut at = 0u64;
                while at < m.size {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| read_error(self.tree, &obj.src, &e))?;
                    if n == 0 {
                        break;
                    }
                    let n = n.min(usize::try_from(m.size - at).unwrap_or(n));
                    self.view
                        .write_at(abs(to), at, &buf[..n])
                        .map_err(|e| self.fail(e, to))?;
                    at += n as u64;
                    self.done += n as u64;
                    (self.progress)(self.done, self.total);
                }
            }
            FileType::Symlink => {
                let target = obj.target.as_ref().expect("listed with its target");
                self.view
                    .symlink(target, abs(to))
                    .map_err(|e| self.fail(e, to))?;
                return self.set_link_meta(to, m);
            }
            FileType::Fifo | FileType::CharDevice | FileType::BlockDevice => {
                self.view
                    .mknod(abs(to), m.file_type, m.mode, m.rdev)
                    .map_err(|e| self.fail(e, to))?;
            }
            FileType::Socket => return Ok(()),
        }
        self.set_meta(to, m)
    }

    /// Owner first (it clears setuid), then mode, then times.
    fn set_meta(&self, to: &LayerPath, m: &Metadata) -> Result<()> {
        self.view
            .set_owner(abs(to), Some(m.uid), Some(m.gid))
            .map_err(|e| self.fail(e, to))?;
        self.view
            .set_permissions(abs(to), m.mode)
            .map_err(|e| self.fail(e, to))?;
        self.view
            .set_times(abs(to), Some(m.mtime), Some(m.mtime))
            .map_err(|e| self.fail(e, to))
    }

    /// A symlink's owner and mtime, set on the link itself (as BuildKit's
    /// `Lchown` and `Lutimes`).
    fn set_link_meta(&self, to: &LayerPath, m: &Metadata) -> Result<()> {
        self.view
            .set_owner_nofollow(abs(to), Some(m.uid), Some(m.gid))
            .map_err(|e| self.fail(e, to))?;
        self.view
            .set_times_nofollow(abs(to), Some(m.mtime), Some(m.mtime))
            .map_err(|e| self.fail(e, to))
    }

    /// Gives the copied directories their mtimes, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, mtime) in dirs.iter().rev() {
            self.view
                .set_times(abs(path), Some(*mtime), Some(*mtime))
                .map_err(|e| self.fail(e, path))?;
        }
        Ok(())
    }

    /// Where an archive's entry `rel` goes under `dest`: its parent
    /// directories resolved with `dest` as the root, as BuildKit's untar
    /// resolves names (`fs.RootPath`). A symlink on the way (one the
    /// archive made, or one the image had) is followed, but an absolute
    /// target starts at `dest` and `..` stops there, so no entry is
    /// written or linked outside `dest`. The last name is not followed:
    /// the entry replaces whatever is there.
    fn confined(&self, dest: &LayerPath, rel: &[u8]) -> Result<LayerPath> {
        let names: Vec<&[u8]> = rel
            .split(|&b| b == b'/')
            .filter(|n| !n.is_empty())
            .collect();
        let Some((last, parents)) = names.split_last() else {
            return Ok(dest.clone());
        };
        let mut todo: std::collections::VecDeque<Vec<u8>> =
            parents.iter().map(|n| n.to_vec()).collect();
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            match name.as_slice() {
                b"." => continue,
                b".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let mut parts = resolved.clone();
            parts.push(name.clone());
            let at = join_rel(dest, &parts.join(&b'/')).map_err(|e| self.fail(e, dest))?;
            match self.view.symlink_metadata(abs(&at)) {
                Ok(m) if m.file_type.is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(self
                            .dest_error(ErrorKind::FilesystemLoop, &at)
                            .with_detail("too many levels of symbolic links"));
                    }
                    let target = self
                        .view
                        .read_link(abs(&at))
                        .map_err(|e| self.fail(e, &at))?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        resolved.clear();
                    }
                    for n in target.split(|&b| b == b'/').rev().filter(|n| !n.is_empty()) {
                        todo.push_front(n.to_vec());
                    }
                }
                _ => resolved.push(name),
            }
        }
        resolved.push(last.to_vec());
        join_rel(dest, &resolved.join(&b'/')).map_err(|e| self.fail(e, dest))
    }

    /// Extracts the archive at `src` into directory `dest`.
    fn extract(&mut self, src: &LayerPath, dest: &LayerPath) -> Result<()> {
        let shown = self.tree.shown(src);
        let decoded = Decompressor::new(self.tree.reader(src)?)
            .map_err(|e| Error::from_io(&e, Operation::BuildImage, shown.as_slice()))?;
        let mut tar = TarReader::new(decoded, Limits::new());
        let mut buf = vec![0u8; CHUNK];
        let reframe = |e: Error| {
            let detail = e.to_string();
            build_error(e.kind(), shown.as_slice()).with_detail(detail)
        };
        while let Some(entry) = tar.next_entry().map_err(reframe)? {
            let to = if entry.path.is_root() {
                dest.clone()
            } else {
                self.confined(dest, entry.path.as_bytes())?
            };
            let mut meta = entry.metadata();
            if let Some((uid, gid)) = self.options.chown {
                meta.uid = uid;
                meta.gid = gid;
            }
            if let Some(mode) = self.options.chmod {
                meta.mode = mode & 0o7777;
            }
            // As Docker's `Untar`: whatever is there goes, unless both
            // are directories.
            let existing = self.view.symlink_metadata(abs(&to)).ok();
            let both_dirs = existing.as_ref().is_some_and(Metadata::is_dir) && meta.is_dir();
            if existing.is_some() && !both_dirs && !to.is_root() {
                if existing.as_ref().is_some_and(Metadata::is_dir) {
                    self.view
                        .remove_dir_all(abs(&to))
                        .map_err(|e| self.fail(e, &to))?;
                } else {
                    self.view
                        .remove_file(abs(&to))
                        .map_err(|e| self.fail(e, &to))?;
                }
            }
            if let Some(parent) = to.parent() {
                self.mkdir_all(&parent, self.options.chown.unwrap_or((0, 0)))?;
            }
            match &entry.kind {
                TarKind::Dir => {
                    if !both_dirs {
                        self.view
                            .create_dir(abs(&to))
                            .map_err(|e| self.fail(e, &to))?;
                    }
                    self.set_meta(&to, &meta)?;
                    self.dirs.push((to, meta.mtime));
                    continue;
                }
                TarKind::File => {
                    self.view
                        .write(abs(&to), b"")
                        .map_err(|e| self.fail(e, &to))?;
                    loop {
                        let at = tar.data_offset();
                        let n = tar.read_data(&mut buf).map_err(reframe)?;
                        if n == 0 {
                            break;
                        }
                        self.view
                            .write_at(abs(&to), at, &buf[..n])
                            .map_err(|e| self.fail(e, &to))?;
                    }
                    self.view
                        .set_len(abs(&to), entry.size)
                        .map_err(|e| self.fail(e, &to))?;
                }
                TarKind::Symlink(target) => {
                    self.view
                        .symlink(target, abs(&to))
                        .map_err(|e| self.fail(e, &to))?;
                    self.set_link_meta(&to, &meta)?;
                    continue;
                }
                TarKind::HardLink(target) => {
                    let original = self.confined(dest, target.as_bytes())?;
                    self.view
                        .hard_link(abs(&original), abs(&to))
                        .map_err(|e| self.fail(e, &to))?;
                    continue;
                }
                TarKind::CharDevice(rdev) | TarKind::BlockDevice(rdev) => {
                    self.view
                        .mknod(abs(&to), meta.file_type, meta.mode, *rdev)
                        .map_err(|e| self.fail(e, &to))?;
                }
                TarKind::Fifo => {
                    self.view
                        .mknod(abs(&to), FileType::Fifo, meta.mode, 0)
                        .map_err(|e| self.fail(e, &to))?;
                }
            }
            self.set_meta(&to, &meta)?;
        }
        Ok(())
    }
}
