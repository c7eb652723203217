//! [`MemLayer`]: a layer in memory.
//!
//! The tree is persistent: directories and objects sit behind `Arc`s and
//! are copied only when changed while shared, so cloning a layer (a
//! snapshot) costs O(1) and the first change after it costs the path from
//! the root to the change (each directory on it is copied, names only,
//! never file data). File data is a [`FileData`] rope of shared
//! [`Bytes`], so a copy-up from another `MemLayer` shares the
//! lower layer's buffers and a small write into a large file stores only
//! the new bytes.
//!
//! A layer made with [`MemLayer::with_spill`] keeps file data in memory
//! only up to the [`Spill`]'s budget, and the rest in the spill's file on
//! disk: what bounds the memory of an imported or committed layer.
//!
//! Hard links: an object with several names lives in a table of linked
//! objects, and each of its names refers to it by inode number.
//!
//! Storage is compact, as a layer holds many small objects: an object keeps
//! only the metadata a layer cannot derive (see `Stored`), a file of one
//! chunk keeps it inline, and a directory's names are a sorted list
//! (sorted chunks of a list's size for a directory of thousands) of names
//! kept inline up to 22 bytes and boxed beyond, each with its type. About
//! 140 bytes an entry beyond the file data (`benches/memory.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::data::FileData;
use crate::error::{ErrorKind, Operation, Result};
use crate::layer::{
    Content, DirListing, Entry, EntryKind, Layer, LayerMut, Node, Redirect, layer_error,
    object_error,
};
use crate::meta::{FileType, Metadata, Timestamp, Xattrs};
use crate::path::{LayerPath, Name, NameBuf, PathLike};
use crate::spill::Spill;

/// The metadata a `MemLayer` stores of an object: what it cannot derive.
/// The type is where the object is (a [`MemDir`], or its [`Body`]), the
/// size is its data's, the link count its names', and the device number
/// is kept only by special files (0 for the others on any filesystem). The
/// atime and ctime are kept apart, with the extended attributes, only
/// when they are not the mtime: every entry of a layer tar has one time.
#[derive(Debug, Clone)]
struct Stored {
    /// As [`Metadata::mode`].
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_nsec: u32,
    mtime_sec: i64,
    ino: u64,
    /// `None`: atime and ctime are the mtime, no extended attributes.
    rare: Option<Box<Rare>>,
}

/// What few objects have (see [`Stored`]).
#[derive(Debug, Clone)]
struct Rare {
    atime: Timestamp,
    ctime: Timestamp,
    xattrs: Xattrs,
}

impl Stored {
    fn new(meta: &Metadata, ino: u64) -> Stored {
        let mut stored = Stored {
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_nsec: 0,
            mtime_sec: 0,
            ino,
            rare: None,
        };
        stored.set(meta);
        stored
    }

    /// Takes what [`LayerMut::set_metadata`] sets: the mode, owner, times
    /// and extended attributes.
    fn set(&mut self, meta: &Metadata) {
        self.mode = meta.mode;
        self.uid = meta.uid;
        self.gid = meta.gid;
        self.set_times(meta.atime, meta.mtime, meta.ctime, &meta.xattrs);
    }

    fn set_times(&mut self, atime: Timestamp, mtime: Timestamp, ctime: Timestamp, xattrs: &Xattrs) {
        self.mtime_sec = mtime.sec;
        self.mtime_nsec = mtime.nsec;
        self.rare = (atime != mtime || ctime != mtime || !xattrs.is_empty()).then(|| {
            Box::new(Rare {
                atime,
                ctime,
                xattrs: xattrs.clone(),
            })
        });
    }

    fn mtime(&self) -> Timestamp {
        Timestamp {
            sec: self.mtime_sec,
            nsec: self.mtime_nsec,
        }
    }

    /// The atime, ctime and extended attributes.
    fn rest(&self) -> (Timestamp, Timestamp, Xattrs) {
        match &self.rare {
            Some(r) => (r.atime, r.ctime, r.xattrs.clone()),
            None => (self.mtime(), self.mtime(), Xattrs::new()),
        }
    }

    /// The whole metadata, with what is derived.
    fn metadata(&self, file_type: FileType, size: u64, nlink: u64, rdev: u64) -> Metadata {
        let (atime, ctime, xattrs) = self.rest();
        let mut meta = Metadata::new(file_type);
        meta.mode = self.mode;
        meta.uid = self.uid;
        meta.gid = self.gid;
        meta.size = size;
        meta.nlink = nlink;
        meta.rdev = rdev;
        meta.atime = atime;
        meta.mtime = self.mtime();
        meta.ctime = ctime;
        meta.ino = self.ino;
        meta.xattrs = xattrs;
        meta
    }
}

#[derive(Debug, Clone)]
struct MemDir {
    meta: Stored,
    opaque: bool,
    /// Boxed: nearly every directory has none.
    redirect: Option<Box<Redirect>>,
    /// Number of subdirectories, for `nlink` (2 + this).
    subdirs: u64,
    entries: Entries,
}

/// A name in a directory: up to [`INLINE`] bytes kept in place, longer
/// ones boxed (no room to grow). Most names are short: they cost no
/// allocation of their own, and a listing or a search reads them without
/// following a pointer.
#[derive(Clone)]
enum Key {
    Inline(u8, [u8; INLINE]),
    Boxed(Box<[u8]>),
}

/// The longest name a [`Key`] keeps in place: what fits beside its tag
/// and length in the 24 bytes a boxed name takes with its tag anyway.
const INLINE: usize = 22;

const _: () = assert!(size_of::<Key>() == 24);

impl Key {
    fn new(name: &Name) -> Key {
        let bytes = name.as_bytes();
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                Key::Inline(len, inline)
            }
            _ => Key::Boxed(Box::from(bytes)),
        }
    }

    fn name(&self) -> &Name {
        match self {
            Key::Inline(len, bytes) => Name::new(&bytes[..usize::from(*len)]),
            Key::Boxed(bytes) => Name::new(bytes),
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.name(), f)
    }
}

/// The names of a directory with their kinds, in byte order (see
/// [`MemLayer::names`]).
pub(crate) struct MemNames<'a> {
    /// The chunk being listed (the whole list of a small directory).
    chunk: std::slice::Iter<'a, (Key, MemEntry)>,
    /// The chunks after it.
    rest: std::slice::Iter<'a, Chunk>,
    /// How many names are left.
    left: usize,
}

impl<'a> Iterator for MemNames<'a> {
    type Item = (&'a Name, EntryKind);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, entry) = loop {
            if let Some(next) = self.chunk.next() {
                break next;
            }
            self.chunk = self.rest.next()?.iter();
        };
        self.left -= 1;
        let kind = match entry {
            MemEntry::Dir(_) => EntryKind::Node(FileType::Dir),
            MemEntry::Obj(t, _) | MemEntry::Linked(t, _) => EntryKind::Node(*t),
            MemEntry::Whiteout => EntryKind::Whiteout,
        };
        Some((key.name(), kind))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for MemNames<'_> {}

impl std::iter::FusedIterator for MemNames<'_> {}

/// A directory of more entries than this keeps them in chunks.
const CHUNKED_FROM: usize = 4096;

/// The most entries a chunk holds: a full chunk splits in two.
const CHUNK: usize = 512;

/// Sorted entries, at least one, of a directory kept in chunks.
type Chunk = Vec<(Key, MemEntry)>;

/// The entries of a directory by name, in byte order. A sorted list for
/// up to [`CHUNKED_FROM`] entries: nearly every directory is small, and it
/// costs one allocation; the list grows by an eighth at a time. Past that,
/// sorted chunks of up to [`CHUNK`] entries, where an insertion in the
/// middle moves at most one chunk's entries. Either way a listing reads
/// memory in order, which the processor fetches ahead (a B-tree's listing
/// waited on a cache miss for every node).
#[derive(Debug, Clone)]
enum Entries {
    List(Vec<(Key, MemEntry)>),
    /// Boxed: a directory pays for one list's size.
    Chunked(Box<Chunks>),
}

/// The entries of a large directory.
#[derive(Debug, Clone)]
struct Chunks {
    /// In order, none empty.
    chunks: Vec<Chunk>,
    /// The first name of each chunk, side by side: a search reads these
    /// rather than one chunk after another.
    firsts: Vec<Key>,
    /// How many entries in all.
    len: usize,
}

impl Chunks {
    /// Half-full chunks of `list`: each has room before it splits.
    fn new(list: Vec<(Key, MemEntry)>) -> Chunks {
        let len = list.len();
        let mut chunks: Vec<Chunk> = Vec::with_capacity(len / (CHUNK / 2) + 1);
        let mut list = list.into_iter();
        while list.len() > 0 {
            chunks.push(list.by_ref().take(CHUNK / 2).collect());
        }
        let firsts = chunks.iter().map(|c| c[0].0.clone()).collect();
        Chunks {
            chunks,
            firsts,
            len,
        }
    }

    /// The chunk that holds `name` or would take it (the last one whose
    /// first name is not after it, or the first), and where in it.
    fn locate(&self, name: &Name) -> (usize, std::result::Result<usize, usize>) {
        let c = self
            .firsts
            .partition_point(|k| k.name() <= name)
            .saturating_sub(1);
        (c, Entries::search(&self.chunks[c], name))
    }

    fn get(&self, name: &Name) -> Option<&MemEntry> {
        let (c, at) = self.locate(name);
        at.ok().map(|i| &self.chunks[c][i].1)
    }

    fn get_mut(&mut self, name: &Name) -> Option<&mut MemEntry> {
        let (c, at) = self.locate(name);
        at.ok().map(|i| &mut self.chunks[c][i].1)
    }

    fn insert(&mut self, name: &Name, entry: MemEntry) -> Option<MemEntry> {
        let (c, at) = self.locate(name);
        let at = match at {
            Ok(at) => return Some(std::mem::replace(&mut self.chunks[c][at].1, entry)),
            Err(at) => at,
        };
        self.len += 1;
        let new = (Key::new(name), entry);
        let last = c + 1 == self.chunks.len();
        let chunk = &mut self.chunks[c];
        if chunk.len() < CHUNK {
            grow_insert(chunk, at, new);
        } else if at == CHUNK && last {
            // Names added in order start a chunk rather than leave half
            // chunks behind them.
            let mut next = Vec::with_capacity(CHUNK / 8);
            next.push(new);
            self.firsts.push(next[0].0.clone());
            self.chunks.push(next);
            return None;
        } else {
            let mut back = chunk.split_off(CHUNK / 2);
            chunk.shrink_to(CHUNK / 2 + CHUNK / 8);
            if at <= CHUNK / 2 {
                grow_insert(chunk, at, new);
            } else {
                grow_insert(&mut back, at - CHUNK / 2, new);
            }
            self.firsts.insert(c + 1, back[0].0.clone());
            self.chunks.insert(c + 1, back);
        }
        if at == 0 {
            // Only into the first chunk, before all the others' names.
            self.firsts[c] = self.chunks[c][0].0.clone();
        }
        None
    }

    fn remove(&mut self, name: &Name) -> Option<MemEntry> {
        let (c, at) = self.locate(name);
        let at = at.ok()?;
        let (_, old) = self.chunks[c].remove(at);
        self.len -= 1;
        if self.chunks[c].is_empty() {
            self.chunks.remove(c);
            self.firsts.remove(c);
        } else {
            shrink(&mut self.chunks[c]);
            if at == 0 {
                self.firsts[c] = self.chunks[c][0].0.clone();
            }
        }
        Some(old)
    }
}

impl Entries {
    /// Where `name` is in a list, or where it would go.
    fn search(list: &[(Key, MemEntry)], name: &Name) -> std::result::Result<usize, usize> {
        list.binary_search_by(|(k, _)| k.name().cmp(name))
    }

    fn get(&self, name: &Name) -> Option<&MemEntry> {
        match self {
            Entries::List(l) => Entries::search(l, name).ok().map(|i| &l[i].1),
            Entries::Chunked(c) => c.get(name),
        }
    }

    fn get_mut(&mut self, name: &Name) -> Option<&mut MemEntry> {
        match self {
            Entries::List(l) => Entries::search(l, name).ok().map(|i| &mut l[i].1),
            Entries::Chunked(c) => c.get_mut(name),
        }
    }

    /// Puts `entry` at `name`; returns the entry it replaces.
    fn insert(&mut self, name: &Name, entry: MemEntry) -> Option<MemEntry> {
        match self {
            Entries::List(l) => match Entries::search(l, name) {
                Ok(at) => Some(std::mem::replace(&mut l[at].1, entry)),
                Err(at) if l.len() < CHUNKED_FROM => {
                    grow_insert(l, at, (Key::new(name), entry));
                    None
                }
                Err(_) => {
                    let mut chunks = Chunks::new(std::mem::take(l));
                    let old = chunks.insert(name, entry);
                    *self = Entries::Chunked(Box::new(chunks));
                    old
                }
            },
            Entries::Chunked(c) => c.insert(name, entry),
        }
    }

    fn remove(&mut self, name: &Name) -> Option<MemEntry> {
        match self {
            Entries::List(l) => {
                let (_, old) = l.remove(Entries::search(l, name).ok()?);
                shrink(l);
                Some(old)
            }
            Entries::Chunked(c) => {
                let old = c.remove(name);
                if c.len == 0 {
                    *self = Entries::List(Vec::new());
                }
                old
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Entries::List(l) => l.is_empty(),
            Entries::Chunked(c) => c.len == 0,
        }
    }

    /// The names with their kinds, in byte order.
    fn names(&self) -> MemNames<'_> {
        match self {
            Entries::List(l) => MemNames {
                chunk: l.iter(),
                rest: [].iter(),
                left: l.len(),
            },
            Entries::Chunked(c) => MemNames {
                chunk: [].iter(),
                rest: c.chunks.iter(),
                left: c.len,
            },
        }
    }
}

/// Inserts `entry` at `at` of a sorted list, growing it by an eighth when
/// it is full.
fn grow_insert(list: &mut Vec<(Key, MemEntry)>, at: usize, entry: (Key, MemEntry)) {
    if list.len() == list.capacity() {
        list.reserve_exact(list.len() / 8 + 1);
    }
    list.insert(at, entry);
}

/// Gives back the room of a list that has lost more than half its entries.
fn shrink(list: &mut Vec<(Key, MemEntry)>) {
    if list.capacity() > 2 * list.len() + 4 {
        list.shrink_to(list.len() + list.len() / 8);
    }
}

impl MemDir {
    fn new(meta: Stored) -> MemDir {
        MemDir {
            meta,
            opaque: false,
            redirect: None,
            subdirs: 0,
            entries: Entries::List(Vec::new()),
        }
    }

    fn insert(&mut self, name: &Name, entry: MemEntry) -> Option<MemEntry> {
        if matches!(entry, MemEntry::Dir(_)) {
            self.subdirs += 1;
        }
        let old = self.entries.insert(name, entry);
        if matches!(old, Some(MemEntry::Dir(_))) {
            self.subdirs -= 1;
        }
        old
    }

    fn take(&mut self, name: &Name) -> Option<MemEntry> {
        let old = self.entries.remove(name);
        if matches!(old, Some(MemEntry::Dir(_))) {
            self.subdirs -= 1;
        }
        old
    }

    fn node(&self) -> Node {
        Node {
            meta: self.meta.metadata(FileType::Dir, 0, 2 + self.subdirs, 0),
            opaque: self.opaque,
            redirect: self.redirect.as_deref().cloned(),
            metacopy: false,
        }
    }
}

#[derive(Debug, Clone)]
enum MemEntry {
    Dir(Arc<MemDir>),
    /// An object with one name, and its type (kept beside it, where a
    /// listing finds it without reading the object).
    Obj(FileType, Arc<MemObj>),
    /// A name of a hard-linked object in [`MemLayer::links`], and its type.
    Linked(FileType, u64),
    Whiteout,
}

#[derive(Debug, Clone)]
struct MemObj {
    meta: Stored,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    File(FileData),
    /// The target.
    Symlink(Box<[u8]>),
    /// A fifo, device or socket, with its device number.
    Special(FileType, u64),
}

impl MemObj {
    fn file_type(&self) -> FileType {
        match &self.body {
            Body::File(_) => FileType::File,
            Body::Symlink(_) => FileType::Symlink,
            Body::Special(t, _) => *t,
        }
    }

    /// The node of this object with `nlink` names.
    fn node(&self, nlink: u64) -> Node {
        let (size, rdev) = match &self.body {
            Body::File(d) => (d.len(), 0),
            Body::Symlink(t) => (t.len() as u64, 0),
            Body::Special(_, rdev) => (0, *rdev),
        };
        Node::new(self.meta.metadata(self.file_type(), size, nlink, rdev))
    }
}

/// An object with several names (or open, see [`LayerMut::open_object`]),
/// with the number of its names.
#[derive(Debug, Clone)]
struct Linked {
    obj: Arc<MemObj>,
    nlink: u64,
}

/// A layer held in memory.
///
/// Cheap to clone: a clone is a snapshot that shares everything with the
/// original until either changes. It implements [`Layer`] and
/// [`LayerMut`]; the `add_*` methods build layers conveniently (missing
/// parent directories are created with mode `0o755`).
///
/// ```
/// use layerstack::{Layer, LayerPath, MemLayer};
///
/// let mut base = MemLayer::new();
/// base.add_file("etc/hostname", "box\n")?;
/// base.add_symlink("bin", "usr/bin")?;
/// let mut top = MemLayer::new();
/// top.add_whiteout("etc/hostname")?;
/// assert!(top.lookup(&LayerPath::new("etc/hostname")?)?.unwrap().is_whiteout());
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Clone)]
pub struct MemLayer {
    root: Arc<MemDir>,
    links: Arc<BTreeMap<u64, Linked>>,
    next_ino: u64,
    /// Where file data past the budget goes; `None`: all in memory.
    spill: Option<Spill>,
    /// Open objects (see [`LayerMut::open_object`]): inode number to the
    /// number of opens. An open object lives in `links`, so that it stays
    /// reachable by its number after a rename or its last unlink.
    opens: BTreeMap<u64, u32>,
}

impl std::fmt::Debug for MemLayer {
    /// One line per entry: path, type, mode, owner, flags, size or target.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        let root = self.root.node();
        if root.opaque {
            list.entry(&format_args!("/ opaque"));
        }
        let entries = crate::layer::walk(self).map_err(|_| std::fmt::Error)?;
        for (path, entry) in entries {
            match entry {
                Entry::Whiteout => list.entry(&format_args!("{path} whiteout")),
                Entry::Node(n) => {
                    let m = &n.meta;
                    let extra = match m.file_type {
                        FileType::File => format!(
                            "{:?}",
                            String::from_utf8_lossy(
                                &self.read_at(&path, 0, 64).map_err(|_| std::fmt::Error)?
                            )
                        ),
                        FileType::Symlink => {
                            format!("-> {}", self.read_link(&path).map_err(|_| std::fmt::Error)?)
                        }
                        _ => String::new(),
                    };
                    list.entry(&format_args!(
                        "{path} {}{:o} {}:{} ino={} nlink={}{}{}{} {:?} {extra}",
                        m.file_type.letter(),
                        m.mode,
                        m.uid,
                        m.gid,
                        m.ino,
                        m.nlink,
                        if n.opaque { " opaque" } else { "" },
                        n.redirect
                            .as_ref()
                            .map(|r| format!(" redirect={r}"))
                            .unwrap_or_default(),
                        if m.rdev != 0 {
                            format!(" rdev={}", m.rdev)
                        } else {
                            String::new()
                        },
                        m.xattrs,
                    ))
                }
            };
        }
        list.finish()
    }
}

impl Default for MemLayer {
    fn default() -> MemLayer {
        MemLayer::new()
    }
}

/// The inode number of the root directory of a `MemLayer`.
const ROOT_INO: u64 = 1;

impl MemLayer {
    /// An empty layer: a root directory (mode `0o755`, owner root, times at
    /// the epoch) and nothing else.
    #[must_use]
    pub fn new() -> MemLayer {
        let meta = Stored::new(&Metadata::new(FileType::Dir), ROOT_INO);
        MemLayer {
            root: Arc::new(MemDir::new(meta)),
            links: Arc::new(BTreeMap::new()),
            next_ino: ROOT_INO + 1,
            spill: None,
            opens: BTreeMap::new(),
        }
    }

    /// An empty layer (as [`MemLayer::new`]) whose file data stays in
    /// memory up to `spill`'s budget and goes to its file beyond: data
    /// written, and the data of files created, count against the budget
    /// (holes, and data shared with another `MemLayer` by
    /// [`copy_file`](LayerMut::copy_file), do not). Its snapshots and the
    /// upper that [`commit`](LayerMut::commit) leaves keep the spill.
    ///
    /// ```
    /// use layerstack::{Layer, LayerPath, MemLayer, Spill};
    ///
    /// let spill = Spill::new(std::env::temp_dir().to_str().unwrap(), 4);
    /// let mut layer = MemLayer::with_spill(spill.clone());
    /// layer.add_file("small", "abc")?; // in memory
    /// layer.add_file("large", "more than four bytes")?; // on disk
    /// assert_eq!(spill.spilled_bytes(), 20);
    /// assert_eq!(layer.read_at(&LayerPath::new("large")?, 5, 4)?, "than");
    /// # Ok::<(), layerstack::Error>(())
    /// ```
    #[must_use]
    pub fn with_spill(spill: Spill) -> MemLayer {
        MemLayer {
            spill: Some(spill),
            ..MemLayer::new()
        }
    }

    /// The spill this layer's file data goes to past its budget, if any.
    #[must_use]
    pub fn spill(&self) -> Option<&Spill> {
        self.spill.as_ref()
    }

    /// Stores a new object: what [`LayerMut::create`] does once file data
    /// is counted against the spill.
    fn insert_new(&mut self, path: &LayerPath, meta: &Metadata, content: Content) -> Result<()> {
        if !content.fits(meta.file_type) {
            return Err(layer_error(ErrorKind::InvalidInput, path));
        }
        let rdev = meta.rdev;
        let file_type = meta.file_type;
        let meta = Stored::new(meta, self.alloc_ino());
        let entry = match content {
            Content::Dir => MemEntry::Dir(Arc::new(MemDir::new(meta))),
            Content::File(d) => MemEntry::Obj(
                FileType::File,
                Arc::new(MemObj {
                    meta,
                    body: Body::File(d),
                }),
            ),
            Content::Symlink(t) => MemEntry::Obj(
                FileType::Symlink,
                Arc::new(MemObj {
                    meta,
                    body: Body::Symlink(t.into_bytes().into_boxed_slice()),
                }),
            ),
            Content::Special => MemEntry::Obj(
                file_type,
                Arc::new(MemObj {
                    meta,
                    body: Body::Special(file_type, rdev),
                }),
            ),
        };
        let (dir, name) = self.parent_mut(path)?;
        match dir.entries.get(name) {
            None | Some(MemEntry::Whiteout) => {
                dir.insert(name, entry);
                Ok(())
            }
            Some(_) => Err(layer_error(ErrorKind::AlreadyExists, path)),
        }
    }

    /// Whether the layer holds nothing but its root (and the root carries
    /// no flags).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.root.entries.is_empty() && !self.root.opaque
    }

    fn alloc_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    fn entry(&self, path: &LayerPath) -> Option<&MemEntry> {
        let mut dir = &self.root;
        let mut names = path.names().peekable();
        while let Some(name) = names.next() {
            let entry = dir.entries.get(name)?;
            if names.peek().is_none() {
                return Some(entry);
            }
            match entry {
                MemEntry::Dir(d) => dir = d,
                _ => return None,
            }
        }
        None
    }

    fn dir(&self, path: &LayerPath) -> Result<&MemDir> {
        if path.is_root() {
            return Ok(&self.root);
        }
        match self.entry(path) {
            Some(MemEntry::Dir(d)) => Ok(d),
            Some(MemEntry::Whiteout) | None => Err(layer_error(ErrorKind::NotFound, path)),
            Some(_) => Err(layer_error(ErrorKind::NotADirectory, path)),
        }
    }

    fn dir_mut(&mut self, path: &LayerPath) -> Result<&mut MemDir> {
        let mut dir = Arc::make_mut(&mut self.root);
        for name in path.names() {
            dir = match dir.entries.get_mut(name) {
                Some(MemEntry::Dir(d)) => Arc::make_mut(d),
                Some(MemEntry::Whiteout) | None => {
                    return Err(layer_error(ErrorKind::NotFound, path));
                }
                Some(_) => return Err(layer_error(ErrorKind::NotADirectory, path)),
            };
        }
        Ok(dir)
    }

    /// The parent directory of `path` (mutable) and the last name.
    fn parent_mut<'a>(&mut self, path: &'a LayerPath) -> Result<(&mut MemDir, &'a Name)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(layer_error(ErrorKind::Busy, path));
        };
        let dir = self.dir_mut(&parent)?;
        Ok((dir, name))
    }

    fn obj(&self, path: &LayerPath) -> Result<&MemObj> {
        if path.is_root() {
            return Err(layer_error(ErrorKind::IsADirectory, path));
        }
        match self.entry(path) {
            Some(MemEntry::Obj(_, o)) => Ok(o),
            Some(MemEntry::Linked(_, ino)) => Ok(&self.linked(*ino).obj),
            Some(MemEntry::Dir(_)) => Err(layer_error(ErrorKind::IsADirectory, path)),
            Some(MemEntry::Whiteout) | None => Err(layer_error(ErrorKind::NotFound, path)),
        }
    }

    fn linked(&self, ino: u64) -> &Linked {
        self.links
            .get(&ino)
            .expect("a linked name always has its object in the table")
    }

    /// The node of linked object `ino`.
    fn linked_node(&self, ino: u64) -> Node {
        let linked = self.linked(ino);
        linked.obj.node(linked.nlink)
    }

    fn obj_mut(&mut self, path: &LayerPath) -> Result<&mut MemObj> {
        let linked = match self.entry(path) {
            Some(MemEntry::Obj(..)) => None,
            Some(MemEntry::Linked(_, ino)) => Some(*ino),
            Some(MemEntry::Dir(_)) => return Err(layer_error(ErrorKind::IsADirectory, path)),
            Some(MemEntry::Whiteout) | None => return Err(layer_error(ErrorKind::NotFound, path)),
        };
        if let Some(ino) = linked {
            let linked = Arc::make_mut(&mut self.links)
                .get_mut(&ino)
                .expect("a linked name always has its object in the table");
            return Ok(Arc::make_mut(&mut linked.obj));
        }
        let (dir, name) = self.parent_mut(path)?;
        match dir.entries.get_mut(name) {
            Some(MemEntry::Obj(_, o)) => Ok(Arc::make_mut(o)),
            _ => unreachable!("checked above"),
        }
    }

    fn file_mut(&mut self, path: &LayerPath) -> Result<&mut FileData> {
        match &mut self.obj_mut(path)?.body {
            Body::File(d) => Ok(d),
            _ => Err(layer_error(ErrorKind::InvalidInput, path)),
        }
    }

    /// The data of open object `ino`.
    fn object_file(&self, ino: u64) -> Result<&FileData> {
        if !self.opens.contains_key(&ino) {
            return Err(object_error(ErrorKind::BadHandle, ino));
        }
        match &self.linked(ino).obj.body {
            Body::File(d) => Ok(d),
            _ => Err(object_error(ErrorKind::InvalidInput, ino)),
        }
    }

    fn object_mut(&mut self, ino: u64) -> Result<&mut MemObj> {
        if !self.opens.contains_key(&ino) {
            return Err(object_error(ErrorKind::BadHandle, ino));
        }
        let linked = Arc::make_mut(&mut self.links)
            .get_mut(&ino)
            .expect("an open object is in the table");
        Ok(Arc::make_mut(&mut linked.obj))
    }

    fn object_file_mut(&mut self, ino: u64) -> Result<&mut FileData> {
        match &mut self.object_mut(ino)?.body {
            Body::File(d) => Ok(d),
            _ => Err(object_error(ErrorKind::InvalidInput, ino)),
        }
    }

    /// Writes `bytes` at `offset` of `data`, into the spill past its budget.
    fn write_into(
        data: &mut FileData,
        spill: Option<&Spill>,
        offset: u64,
        bytes: &[u8],
    ) -> Result<()> {
        match spill {
            Some(spill) => data.write_at_spilling(offset, bytes, spill),
            None => {
                data.write_at(offset, bytes);
                Ok(())
            }
        }
    }

    /// The data of regular file `path`, shared (no bytes are copied).
    ///
    /// # Errors
    /// `ENOENT` if missing, `EISDIR` for a directory, `EINVAL` for other
    /// non-regular files.
    pub fn file_data(&self, path: &LayerPath) -> Result<FileData> {
        match &self.obj(path)?.body {
            Body::File(d) => Ok(d.clone()),
            _ => Err(layer_error(ErrorKind::InvalidInput, path)),
        }
    }

    /// The names of directory `path` with their kinds, in byte order, as
    /// [`Layer::read_dir`] lists them but lent rather than copied (what a
    /// view's index is built from).
    pub(crate) fn names(&self, path: &LayerPath) -> Result<MemNames<'_>> {
        let dir = self.dir(path)?;
        Ok(dir.entries.names())
    }

    /// Drops one name of an entry being removed or replaced.
    fn release(&mut self, entry: &MemEntry) {
        if let MemEntry::Linked(_, ino) = entry {
            let links = Arc::make_mut(&mut self.links);
            let linked = links.get_mut(ino).expect("linked object");
            linked.nlink -= 1;
            // An open orphan lives on until its last close.
            if linked.nlink == 0 && !self.opens.contains_key(ino) {
                links.remove(ino);
            }
        }
    }

    /// Creates the missing ancestors of `path` as directories.
    fn ensure_parents(&mut self, path: &LayerPath) -> Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let mut at = LayerPath::root();
        for name in parent.names() {
            at = at.join_unchecked(name);
            match self.entry(&at) {
                Some(MemEntry::Dir(_)) => {}
                None | Some(MemEntry::Whiteout) => {
                    self.create(&at, &Metadata::new(FileType::Dir), Content::Dir)?;
                }
                Some(_) => return Err(layer_error(ErrorKind::NotADirectory, &at)),
            }
        }
        Ok(())
    }

    /// Adds regular file `path` (mode `0o644`) with `data`, creating parents.
    ///
    /// # Errors
    /// `EINVAL` for an invalid path, `EEXIST` if the name is taken,
    /// `ENOTDIR` if a parent is not a directory.
    pub fn add_file(&mut self, path: impl PathLike, data: impl Into<Bytes>) -> Result<()> {
        self.add_file_with(path, data, Metadata::new(FileType::File))
    }

    /// Adds regular file `path` with `data` and the given metadata.
    ///
    /// # Errors
    /// As [`MemLayer::add_file`].
    pub fn add_file_with(
        &mut self,
        path: impl PathLike,
        data: impl Into<Bytes>,
        meta: Metadata,
    ) -> Result<()> {
        let path = LayerPath::new(path)?;
        self.ensure_parents(&path)?;
        let mut meta = meta;
        meta.file_type = FileType::File;
        self.create(&path, &meta, Content::File(FileData::from(data.into())))
    }

    /// Adds directory `path` (mode `0o755`), creating parents; an existing
    /// directory is left as it is.
    ///
    /// # Errors
    /// As [`MemLayer::add_file`].
    pub fn add_dir(&mut self, path: impl PathLike) -> Result<()> {
        self.add_dir_with(path, Metadata::new(FileType::Dir))
    }

    /// Adds directory `path` with the given metadata, creating parents; an
    /// existing directory gets the metadata.
    ///
    /// # Errors
    /// As [`MemLayer::add_file`].
    pub fn add_dir_with(&mut self, path: impl PathLike, meta: Metadata) -> Result<()> {
        let path = LayerPath::new(path)?;
        let mut meta = meta;
        meta.file_type = FileType::Dir;
        if path.is_root() {
            return self.set_metadata(&path, &meta);
        }
        self.ensure_parents(&path)?;
        match self.entry(&path) {
            Some(MemEntry::Dir(_)) => self.set_metadata(&path, &meta),
            _ => self.create(&path, &meta, Content::Dir),
        }
    }

    /// Adds an opaque directory `path`, creating parents.
    ///
    /// # Errors
    /// As [`MemLayer::add_file`].
    pub fn add_opaque_dir(&mut self, path: impl PathLike) -> Result<()> {
        let path = LayerPath::new(path)?;
        self.add_dir(&path)?;
        self.set_opaque(&path, true)
    }

    /// Adds symlink `path` pointing at `target` (verbatim), creating parents.
    ///
    /// # Errors
    /// As [`MemLayer::add_file`].
    pub fn add_symlink(&mut self, path: impl PathLike, target: impl PathLike) -> Result<()> {
        let path = LayerPath::new(path)?;
        self.ensure_parents(&path)?;
        self.create(
            &path,
            &Metadata::new(FileType::Symlink),
            Content::Symlink(NameBuf::from(target.path_bytes())),
        )
    }

    /// Adds a fifo, device or socket `path` with `meta` (its `file_type`
    /// and `rdev` say which), creating parents.
    ///
    /// # Errors
    /// As [`MemLayer::add_file`], and `EINVAL` if `meta` is not of a
    /// special type.
    pub fn add_special(&mut self, path: impl PathLike, meta: Metadata) -> Result<()> {
        let path = LayerPath::new(path)?;
        self.ensure_parents(&path)?;
        self.create(&path, &meta, Content::Special)
    }

    /// Adds a whiteout at `path`, creating parents.
    ///
    /// # Errors
    /// As [`MemLayer::add_file`].
    pub fn add_whiteout(&mut self, path: impl PathLike) -> Result<()> {
        let path = LayerPath::new(path)?;
        self.ensure_parents(&path)?;
        self.whiteout(&path)
    }

    /// Adds `new` as another name of `existing`, creating parents.
    ///
    /// # Errors
    /// As [`LayerMut::hard_link`].
    pub fn add_hard_link(&mut self, existing: impl PathLike, new: impl PathLike) -> Result<()> {
        let new = LayerPath::new(new)?;
        self.ensure_parents(&new)?;
        self.hard_link(&LayerPath::new(existing)?, &new)
    }
}

impl Layer for MemLayer {
    fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>> {
        if path.is_root() {
            return Ok(Some(Entry::Node(self.root.node())));
        }
        Ok(self.entry(path).map(|e| match e {
            MemEntry::Dir(d) => Entry::Node(d.node()),
            MemEntry::Obj(_, o) => Entry::Node(o.node(1)),
            MemEntry::Linked(_, ino) => Entry::Node(self.linked_node(*ino)),
            MemEntry::Whiteout => Entry::Whiteout,
        }))
    }

    fn read_dir(&self, path: &LayerPath) -> Result<DirListing> {
        Ok(DirListing {
            opaque: self.dir(path)?.opaque,
            entries: self.names(path)?.map(|(n, k)| (n.to_owned(), k)).collect(),
        })
    }

    fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<Bytes> {
        match &self.obj(path)?.body {
            Body::File(d) => d
                .read_at(offset, len)
                .map_err(|e| e.reframe(Operation::Read, path.as_name())),
            _ => Err(layer_error(ErrorKind::InvalidInput, path)),
        }
    }

    fn read_link(&self, path: &LayerPath) -> Result<NameBuf> {
        match self.obj(path) {
            Ok(MemObj {
                body: Body::Symlink(t),
                ..
            }) => Ok(NameBuf::from(&t[..])),
            Ok(_) => Err(layer_error(ErrorKind::InvalidInput, path)),
            Err(e) if e.kind() == ErrorKind::IsADirectory => {
                Err(layer_error(ErrorKind::InvalidInput, path))
            }
            Err(e) => Err(e),
        }
    }

    fn describe(&self) -> String {
        String::from("memory layer")
    }
}

/// The largest file a `MemLayer` stores (as ext4's 16 TiB).
const MAX_FILE_SIZE: u64 = 1 << 44;

impl LayerMut for MemLayer {
    fn create(&mut self, path: &LayerPath, meta: &Metadata, mut content: Content) -> Result<()> {
        if let (Some(spill), Content::File(data)) = (&self.spill, &mut content) {
            data.keep_or_spill(spill)
                .map_err(|e| e.reframe(Operation::Write, path.as_name()))?;
        }
        self.insert_new(path, meta, content)
    }

    fn copy_file(
        &mut self,
        path: &LayerPath,
        meta: &Metadata,
        src: &dyn Layer,
        src_path: &LayerPath,
    ) -> Result<()> {
        if let Some(mem) = src.as_any().downcast_ref::<MemLayer>() {
            // Shared, not copied: no more memory, nothing to spill.
            let data = mem.file_data(src_path)?;
            return self.insert_new(path, meta, Content::File(data));
        }
        self.create(path, meta, Content::File(FileData::new()))?;
        let mut offset = 0u64;
        loop {
            let chunk = src.read_at(src_path, offset, 1 << 20)?;
            if chunk.is_empty() {
                return Ok(());
            }
            let len = chunk.len() as u64;
            match self.spill.clone() {
                Some(spill) => self
                    .file_mut(path)?
                    .write_at_spilling(offset, &chunk, &spill)
                    .map_err(|e| e.reframe(Operation::CopyUp, path.as_name()))?,
                None => self.file_mut(path)?.write_bytes_at(offset, chunk),
            }
            offset += len;
        }
    }

    fn write_at(&mut self, path: &LayerPath, offset: u64, data: &[u8]) -> Result<()> {
        if offset.saturating_add(data.len() as u64) > MAX_FILE_SIZE {
            return Err(layer_error(ErrorKind::FileTooLarge, path));
        }
        let spill = self.spill.clone();
        MemLayer::write_into(self.file_mut(path)?, spill.as_ref(), offset, data)
            .map_err(|e| e.reframe(Operation::Write, path.as_name()))
    }

    fn set_len(&mut self, path: &LayerPath, len: u64) -> Result<()> {
        if len > MAX_FILE_SIZE {
            return Err(layer_error(ErrorKind::FileTooLarge, path));
        }
        self.file_mut(path)?.set_len(len);
        Ok(())
    }

    fn set_metadata(&mut self, path: &LayerPath, meta: &Metadata) -> Result<()> {
        let apply = |m: &mut Stored| m.set(meta);
        if path.is_root() {
            apply(&mut Arc::make_mut(&mut self.root).meta);
            return Ok(());
        }
        let (dir, name) = self.parent_mut(path)?;
        if let Some(MemEntry::Dir(d)) = dir.entries.get_mut(name) {
            apply(&mut Arc::make_mut(d).meta);
            return Ok(());
        }
        apply(&mut self.obj_mut(path)?.meta);
        Ok(())
    }

    fn remove(&mut self, path: &LayerPath) -> Result<()> {
        let (dir, name) = self.parent_mut(path)?;
        let old = match dir.entries.get(name) {
            None => return Err(layer_error(ErrorKind::NotFound, path)),
            Some(MemEntry::Dir(d)) if !d.entries.is_empty() => {
                return Err(layer_error(ErrorKind::DirectoryNotEmpty, path));
            }
            Some(_) => dir.take(name).expect("entry exists"),
        };
        self.release(&old);
        Ok(())
    }

    fn whiteout(&mut self, path: &LayerPath) -> Result<()> {
        let (dir, name) = self.parent_mut(path)?;
        if let Some(MemEntry::Dir(d)) = dir.entries.get(name)
            && !d.entries.is_empty()
        {
            return Err(layer_error(ErrorKind::DirectoryNotEmpty, path));
        }
        if let Some(old) = dir.insert(name, MemEntry::Whiteout) {
            self.release(&old);
        }
        Ok(())
    }

    fn set_opaque(&mut self, path: &LayerPath, opaque: bool) -> Result<()> {
        self.dir_mut(path)?.opaque = opaque;
        Ok(())
    }

    fn set_redirect(&mut self, path: &LayerPath, redirect: Option<Redirect>) -> Result<()> {
        self.dir_mut(path)?.redirect = redirect.map(Box::new);
        Ok(())
    }

    fn hard_link(&mut self, existing: &LayerPath, new: &LayerPath) -> Result<()> {
        let ino = match self.entry(existing) {
            None | Some(MemEntry::Whiteout) => {
                return Err(layer_error(ErrorKind::NotFound, existing));
            }
            Some(MemEntry::Dir(_)) => return Err(layer_error(ErrorKind::NotPermitted, existing)),
            Some(MemEntry::Linked(_, ino)) => *ino,
            Some(MemEntry::Obj(_, o)) => o.meta.ino,
        };
        {
            let (dir, name) = self.parent_mut(new)?;
            if matches!(
                dir.entries.get(name),
                Some(MemEntry::Dir(_) | MemEntry::Obj(..) | MemEntry::Linked(..))
            ) {
                return Err(layer_error(ErrorKind::AlreadyExists, new));
            }
        }
        // Move a single-named object into the table of linked objects.
        let (dir, name) = self.parent_mut(existing)?;
        if let Some(&MemEntry::Obj(t, _)) = dir.entries.get(name) {
            let Some(MemEntry::Obj(_, obj)) = dir.insert(name, MemEntry::Linked(t, ino)) else {
                unreachable!("checked above")
            };
            Arc::make_mut(&mut self.links).insert(ino, Linked { obj, nlink: 1 });
        }
        let links = Arc::make_mut(&mut self.links);
        let linked = links.get_mut(&ino).expect("linked object");
        linked.nlink += 1;
        let t = linked.obj.file_type();
        let (dir, name) = self.parent_mut(new)?;
        dir.insert(name, MemEntry::Linked(t, ino));
        Ok(())
    }

    fn rename(&mut self, from: &LayerPath, to: &LayerPath) -> Result<()> {
        if from == to {
            return match self.entry(from) {
                Some(_) => Ok(()),
                None => Err(layer_error(ErrorKind::NotFound, from)),
            };
        }
        if to.starts_with(from) {
            return Err(layer_error(ErrorKind::InvalidInput, to));
        }
        if from.is_root() || to.is_root() {
            return Err(layer_error(ErrorKind::Busy, from));
        }
        if self.entry(from).is_none() {
            return Err(layer_error(ErrorKind::NotFound, from));
        }
        {
            let (dir, name) = self.parent_mut(to)?;
            if let Some(MemEntry::Dir(d)) = dir.entries.get(name)
                && !d.entries.is_empty()
            {
                return Err(layer_error(ErrorKind::DirectoryNotEmpty, to));
            }
        }
        let (dir, name) = self.parent_mut(from)?;
        let moving = dir.take(name).expect("checked above");
        let (dir, name) = self.parent_mut(to)?;
        if let Some(old) = dir.insert(name, moving) {
            self.release(&old);
        }
        Ok(())
    }

    fn exchange(&mut self, a: &LayerPath, b: &LayerPath) -> Result<()> {
        if a == b {
            return Ok(());
        }
        if a.starts_with(b) || b.starts_with(a) {
            return Err(layer_error(ErrorKind::InvalidInput, b));
        }
        if self.entry(a).is_none() {
            return Err(layer_error(ErrorKind::NotFound, a));
        }
        if self.entry(b).is_none() {
            return Err(layer_error(ErrorKind::NotFound, b));
        }
        let (dir, name) = self.parent_mut(a)?;
        let ea = dir.take(name).expect("checked above");
        let (dir, name) = self.parent_mut(b)?;
        let eb = dir.insert(name, ea).expect("checked above");
        let (dir, name) = self.parent_mut(a)?;
        dir.insert(name, eb);
        Ok(())
    }

    fn open_object(&mut self, path: &LayerPath) -> Result<u64> {
        let ino = match self.entry(path) {
            None | Some(MemEntry::Whiteout) => return Err(layer_error(ErrorKind::NotFound, path)),
            Some(MemEntry::Dir(_)) => return Err(layer_error(ErrorKind::IsADirectory, path)),
            Some(MemEntry::Linked(_, ino)) => *ino,
            Some(MemEntry::Obj(_, o)) => o.meta.ino,
        };
        if path.is_root() {
            return Err(layer_error(ErrorKind::IsADirectory, path));
        }
        if !matches!(self.obj(path)?.body, Body::File(_)) {
            return Err(layer_error(ErrorKind::InvalidInput, path));
        }
        // A single-named object moves into the table of linked objects,
        // where its number finds it whatever becomes of its name.
        let (dir, name) = self.parent_mut(path)?;
        if let Some(&MemEntry::Obj(t, _)) = dir.entries.get(name) {
            let Some(MemEntry::Obj(_, obj)) = dir.insert(name, MemEntry::Linked(t, ino)) else {
                unreachable!("checked above")
            };
            Arc::make_mut(&mut self.links).insert(ino, Linked { obj, nlink: 1 });
        }
        *self.opens.entry(ino).or_insert(0) += 1;
        Ok(ino)
    }

    fn close_object(&mut self, id: u64) -> Result<()> {
        let Some(count) = self.opens.get_mut(&id) else {
            return Err(object_error(ErrorKind::BadHandle, id));
        };
        *count -= 1;
        if *count == 0 {
            self.opens.remove(&id);
            if self.linked(id).nlink == 0 {
                // The last close of an orphan: its data goes.
                Arc::make_mut(&mut self.links).remove(&id);
            }
        }
        Ok(())
    }

    fn object_node(&self, id: u64) -> Result<Node> {
        if !self.opens.contains_key(&id) {
            return Err(object_error(ErrorKind::BadHandle, id));
        }
        Ok(self.linked_node(id))
    }

    fn object_read_at(&self, id: u64, offset: u64, len: usize) -> Result<Bytes> {
        self.object_file(id)?.read_at(offset, len)
    }

    fn object_write_at(&mut self, id: u64, offset: u64, data: &[u8]) -> Result<()> {
        if offset.saturating_add(data.len() as u64) > MAX_FILE_SIZE {
            return Err(object_error(ErrorKind::FileTooLarge, id));
        }
        let spill = self.spill.clone();
        MemLayer::write_into(self.object_file_mut(id)?, spill.as_ref(), offset, data)
    }

    fn object_set_len(&mut self, id: u64, len: u64) -> Result<()> {
        if len > MAX_FILE_SIZE {
            return Err(object_error(ErrorKind::FileTooLarge, id));
        }
        self.object_file_mut(id)?.set_len(len);
        Ok(())
    }

    fn object_set_times(&mut self, id: u64, mtime: Timestamp, ctime: Timestamp) -> Result<()> {
        let meta = &mut self.object_mut(id)?.meta;
        let (atime, _, xattrs) = meta.rest();
        meta.set_times(atime, mtime, ctime, &xattrs);
        Ok(())
    }

    fn commit(&mut self) -> Result<Arc<dyn Layer>> {
        let frozen = std::mem::take(self);
        // Keep numbering where the frozen layer stopped, so inode numbers of
        // the new upper never repeat those of the layer it came from.
        self.next_ino = frozen.next_ino;
        self.spill.clone_from(&frozen.spill);
        Ok(Arc::new(frozen))
    }
}

/// `layer` as a `MemLayer`: the layer itself if it is one (an O(1)
/// clone), else a copy in memory.
#[cfg(feature = "oci")]
pub(crate) fn to_mem_layer(layer: &dyn Layer) -> Result<MemLayer> {
    if let Some(mem) = layer.as_any().downcast_ref::<MemLayer>() {
        return Ok(mem.clone());
    }
    let mut copy = MemLayer::new();
    crate::layer::copy_layer(layer, &mut copy)?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> LayerPath {
        LayerPath::new(s).unwrap()
    }

    #[test]
    fn names_kept_inline_and_boxed_sort_and_find_as_bytes() {
        // Around the inline limit, with shared prefixes, a byte above 0x7f,
        // and past `CHUNKED_FROM` so that chunks hold them too.
        let mut names: Vec<Vec<u8>> = Vec::new();
        for len in [1, 7, 21, 22, 23, 24, 200, 255] {
            names.push(vec![b'a'; len]);
            let mut other = vec![b'a'; len];
            other[len - 1] = 0xe9;
            names.push(other);
        }
        for many in [false, true] {
            let mut layer = MemLayer::new();
            layer.add_dir("d").unwrap();
            let mut all = names.clone();
            if many {
                all.extend((0..CHUNKED_FROM).map(|i| format!("f{i}").into_bytes()));
            }
            for (i, n) in all.iter().enumerate().rev() {
                let path = p("d").join(Name::new(n)).unwrap();
                layer
                    .create(
                        &path,
                        &Metadata::new(FileType::File),
                        Content::File(FileData::from(vec![i as u8])),
                    )
                    .unwrap();
            }
            all.sort();
            let listed: Vec<Vec<u8>> = layer
                .read_dir(&p("d"))
                .unwrap()
                .entries
                .into_iter()
                .map(|(n, _)| n.into_bytes())
                .collect();
            assert_eq!(listed, all, "many: {many}");
            for (i, n) in names.iter().enumerate() {
                let path = p("d").join(Name::new(n)).unwrap();
                assert!(matches!(layer.lookup(&path).unwrap(), Some(Entry::Node(_))));
                assert_eq!(layer.read_at(&path, 0, 1).unwrap()[..], [i as u8]);
            }
            let absent = p("d").join(Name::new(&[b'a'; 25])).unwrap();
            assert!(layer.lookup(&absent).unwrap().is_none());
        }
    }

    #[test]
    fn clone_is_a_snapshot() {
        let mut a = MemLayer::new();
        a.add_file("d/f", "one").unwrap();
        let snap = a.clone();
        a.write_at(&p("d/f"), 0, b"two").unwrap();
        a.add_file("d/g", "new").unwrap();
        assert_eq!(&snap.read_at(&p("d/f"), 0, 10).unwrap()[..], b"one");
        assert_eq!(snap.lookup(&p("d/g")).unwrap(), None);
        assert_eq!(&a.read_at(&p("d/f"), 0, 10).unwrap()[..], b"two");
    }

    #[test]
    fn hard_links_share_data_and_count_names() {
        let mut l = MemLayer::new();
        l.add_file("a", "x").unwrap();
        l.add_hard_link("a", "d/b").unwrap();
        l.add_hard_link("d/b", "c").unwrap();
        l.write_at(&p("c"), 1, b"y").unwrap();
        for name in ["a", "d/b", "c"] {
            let node = l.lookup(&p(name)).unwrap().unwrap();
            let node = node.node().unwrap();
            assert_eq!(node.meta.nlink, 3, "{name}");
            assert_eq!(&l.read_at(&p(name), 0, 9).unwrap()[..], b"xy");
        }
        l.remove(&p("a")).unwrap();
        l.rename(&p("c"), &p("e")).unwrap();
        let node = l.lookup(&p("e")).unwrap().unwrap();
        assert_eq!(node.node().unwrap().meta.nlink, 2);
        assert_eq!(
            l.hard_link(&p("d"), &p("z")).unwrap_err().kind(),
            ErrorKind::NotPermitted
        );
    }

    #[test]
    fn directory_nlink_counts_subdirectories() {
        let mut l = MemLayer::new();
        l.add_dir("a/b").unwrap();
        l.add_dir("a/c").unwrap();
        l.add_file("a/f", "").unwrap();
        let a = l.lookup(&p("a")).unwrap().unwrap();
        assert_eq!(a.node().unwrap().meta.nlink, 4);
        l.remove(&p("a/b")).unwrap();
        let a = l.lookup(&p("a")).unwrap().unwrap();
        assert_eq!(a.node().unwrap().meta.nlink, 3);
    }

    #[test]
    fn whiteouts_and_lookups_below_non_directories() {
        let mut l = MemLayer::new();
        l.add_file("f", "").unwrap();
        l.add_whiteout("d/w").unwrap();
        assert_eq!(l.lookup(&p("f/x")).unwrap(), None);
        assert_eq!(l.lookup(&p("d/w")).unwrap(), Some(Entry::Whiteout));
        assert_eq!(l.lookup(&p("d/w/x")).unwrap(), None);
        let listing = l.read_dir(&p("d")).unwrap();
        assert_eq!(
            listing.entries,
            vec![(NameBuf::from("w"), EntryKind::Whiteout)]
        );
        assert_eq!(
            l.remove(&p("d")).unwrap_err().kind(),
            ErrorKind::DirectoryNotEmpty
        );
        l.create(&p("d/w"), &Metadata::new(FileType::Dir), Content::Dir)
            .unwrap();
        assert!(l.lookup(&p("d/w")).unwrap().unwrap().node().is_some());
    }

    #[test]
    fn rename_and_exchange() {
        let mut l = MemLayer::new();
        l.add_file("a/f", "1").unwrap();
        l.add_dir("b").unwrap();
        assert_eq!(
            l.rename(&p("a"), &p("a/x")).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        l.rename(&p("a"), &p("b")).unwrap();
        assert_eq!(&l.read_at(&p("b/f"), 0, 1).unwrap()[..], b"1");
        l.add_file("c", "2").unwrap();
        l.exchange(&p("b"), &p("c")).unwrap();
        assert_eq!(&l.read_at(&p("b"), 0, 1).unwrap()[..], b"2");
        assert_eq!(&l.read_at(&p("c/f"), 0, 1).unwrap()[..], b"1");
    }

    #[test]
    fn metadata_round_trips_whether_kept_apart_or_not() {
        let mut l = MemLayer::new();
        let mut meta = Metadata::new(FileType::File)
            .with_mode(0o4755)
            .with_owner(1000, 50)
            .with_times(Timestamp::new(1_700_000_000, 5));
        l.add_file_with("same", "ab", meta.clone()).unwrap();
        let mut apart = meta.clone();
        apart.atime = Timestamp::new(1, 2);
        apart.ctime = Timestamp::new(-3, 4);
        l.add_file_with("times", "ab", apart.clone()).unwrap();
        meta.xattrs.insert("user.a", "v");
        l.add_file_with("xattr", "ab", meta.clone()).unwrap();
        let dev = Metadata::new(FileType::CharDevice).with_rdev(crate::makedev(1, 3));
        l.add_special("null", dev.clone()).unwrap();
        for (name, mut want, size, rare) in [
            ("same", meta.clone(), 2, false),
            ("times", apart, 2, true),
            ("xattr", meta.clone(), 2, true),
            ("null", dev, 0, false),
        ] {
            if name == "same" {
                want.xattrs = Xattrs::new();
            }
            let Some(MemEntry::Obj(_, o)) = l.entry(&p(name)) else {
                panic!("{name} is an object")
            };
            assert_eq!(o.meta.rare.is_some(), rare, "{name}");
            let got = l
                .lookup(&p(name))
                .unwrap()
                .unwrap()
                .node()
                .unwrap()
                .meta
                .clone();
            want.ino = got.ino;
            want.size = size;
            assert_eq!(got, want, "{name}");
        }
        // New times keep the atime and the attributes.
        let id = l.open_object(&p("xattr")).unwrap();
        l.object_set_times(id, Timestamp::new(7, 0), Timestamp::new(8, 0))
            .unwrap();
        let got = l.object_node(id).unwrap().meta;
        assert_eq!(
            (got.atime, got.mtime, got.ctime),
            (meta.atime, Timestamp::new(7, 0), Timestamp::new(8, 0))
        );
        assert_eq!(got.xattrs, meta.xattrs);
    }

    #[test]
    fn a_small_directory_is_a_list_of_its_size() {
        let mut l = MemLayer::new();
        l.add_file("d/f", "").unwrap();
        let Entries::List(list) = &l.dir(&p("d")).unwrap().entries else {
            panic!("a list")
        };
        assert_eq!(list.capacity(), 1);
    }

    #[test]
    fn a_large_directory_moves_to_chunks_and_keeps_its_order() {
        // Past the list's limit and several chunks' splits, with names
        // added forwards, backwards and scattered.
        let n = CHUNKED_FROM + 3 * CHUNK + 5;
        let forwards: Vec<usize> = (0..n).collect();
        let backwards: Vec<usize> = (0..n).rev().collect();
        let scattered: Vec<usize> = (0..n).map(|i| i * 7919 % n).collect();
        let name = |i: usize| format!("{i:05}");
        for order in [forwards, backwards, scattered] {
            let mut l = MemLayer::new();
            for &i in &order {
                l.add_file(format!("d/{}", name(i)), "").unwrap();
            }
            let check = |l: &MemLayer, want: &[usize]| {
                let dir = l.dir(&p("d")).unwrap();
                if let Entries::Chunked(c) = &dir.entries {
                    assert!(c.chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
                    assert_eq!(c.chunks.iter().map(Vec::len).sum::<usize>(), c.len);
                    let firsts: Vec<&Name> = c.chunks.iter().map(|c| c[0].0.name()).collect();
                    assert!(firsts.iter().copied().eq(c.firsts.iter().map(Key::name)));
                }
                let names = dir.entries.names();
                assert_eq!(names.len(), want.len());
                let names: Vec<String> = names.map(|(n, _)| n.to_string()).collect();
                let first_wrong = (0..want.len()).find(|&i| names[i] != name(want[i]));
                assert_eq!(first_wrong, None);
                for &i in want.iter().step_by(97) {
                    assert!(l.lookup(&p(&format!("d/{}", name(i)))).unwrap().is_some());
                }
            };
            assert!(matches!(
                l.dir(&p("d")).unwrap().entries,
                Entries::Chunked(..)
            ));
            check(&l, &(0..n).collect::<Vec<_>>());
            // Out to a name past the last chunk, and back.
            l.rename(&p("d/00008"), &p("d/zz")).unwrap();
            assert_eq!(l.lookup(&p("d/00008")).unwrap(), None);
            l.rename(&p("d/zz"), &p("d/00008")).unwrap();
            assert_eq!(l.lookup(&p("d/zz")).unwrap(), None);
            // A directory in the middle of the chunks, written through.
            l.add_file("d/03000x/f", "in").unwrap();
            assert_eq!(l.file_data(&p("d/03000x/f")).unwrap().len(), 2);
            l.remove(&p("d/03000x/f")).unwrap();
            l.remove(&p("d/03000x")).unwrap();
            assert_eq!(l.lookup(&p("d/03000x")).unwrap(), None);
            // Every other name, then all of them, in the order added.
            for &i in order.iter().filter(|&&i| i % 2 == 1) {
                l.remove(&p(&format!("d/{}", name(i)))).unwrap();
            }
            let even: Vec<usize> = (0..n).filter(|i| i % 2 == 0).collect();
            check(&l, &even);
            for &i in order.iter().filter(|&&i| i % 2 == 0) {
                l.remove(&p(&format!("d/{}", name(i)))).unwrap();
                assert_eq!(l.lookup(&p(&format!("d/{}", name(i)))).unwrap(), None);
            }
            check(&l, &[]);
            l.add_file("d/again", "").unwrap();
            assert_eq!(l.dir(&p("d")).unwrap().entries.names().len(), 1);
        }
    }

    #[test]
    fn copy_file_shares_data_between_memory_layers() {
        let mut lower = MemLayer::new();
        lower.add_file("big", vec![1u8; 1 << 20]).unwrap();
        let mut upper = MemLayer::new();
        upper
            .copy_file(&p("big"), &Metadata::new(FileType::File), &lower, &p("big"))
            .unwrap();
        let a = lower.file_data(&p("big")).unwrap().to_bytes().unwrap();
        let b = upper.file_data(&p("big")).unwrap().to_bytes().unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr());
    }
}
