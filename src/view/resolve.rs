//! Lookup across layers: whiteouts, opaque directories, redirects,
//! symlinks, and the per-directory cache that makes a lookup in 64 layers
//! cost about what it costs in one.
//!
//! A merged directory is a *stack*: the layers that contribute to it, top
//! first, each with the path the directory has in that layer (a redirect
//! makes it differ from the merged path). A child is found by asking each
//! layer of its parent's stack in turn, as the kernel's `ovl_lookup` does:
//! a whiteout ends the search, a non-directory is the answer if nothing was
//! found above it (and ends a directory's stack otherwise), a directory is
//! added to the child's stack, an opaque one ends it, a redirect sends the
//! search in the layers below to another path.
//!
//! Every merged directory that has been visited keeps an index of its
//! children (name to where it resolves), built from one listing per layer;
//! writers keep the indexes current, so after the first visit a lookup
//! never consults more than one layer.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use super::handle::OpenHandle;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::dir::DirLayer;
use crate::layer::mem::{MemLayer, MemNames};
use crate::layer::{Entry, EntryKind, Layer, LayerMut, Node, Redirect, RedirectTarget};
use crate::merged::Metacopy;
use crate::meta::{FileType, Metadata};
use crate::path::{
    Component, LayerPath, NAME_MAX, Name, NameBuf, PATH_MAX, UserPath, validate_name,
};

/// The index of the upper layer; lower layer `i` (top first) is `i + 1`.
pub(crate) const UPPER: usize = 0;

/// The most symlinks one resolution follows (Linux `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// The layers that hold one merged object, top first: for a non-directory
/// exactly one, for a directory every contributing layer.
pub(crate) type Stack = Arc<[(usize, LayerPath)]>;

/// Where a merged object resolves.
#[derive(Debug, Clone)]
pub(crate) struct Res {
    pub file_type: FileType,
    pub stack: Stack,
}

impl Res {
    /// The topmost layer holding the object, and its path there.
    pub fn top(&self) -> (usize, &LayerPath) {
        let (idx, path) = &self.stack[0];
        (*idx, path)
    }

    pub fn in_upper(&self) -> bool {
        self.stack[0].0 == UPPER
    }

    /// Whether a lower layer holds (part of) the object.
    pub fn has_lower(&self) -> bool {
        self.stack.iter().any(|(idx, _)| *idx != UPPER)
    }
}

/// A merged directory: its path in the view and its stack.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    pub path: LayerPath,
    pub stack: Stack,
}

/// The children of one merged directory, stored compactly: the names one
/// after another in one string, and for each a slot saying where it
/// resolves. A non-directory (most children) is a type and a position in
/// the directory's stack, its path in that layer derived when asked for,
/// so building an index allocates nothing per name; a directory keeps its
/// own stack. Names the view sets after the index was built go to a small
/// map beside the slots, so a change never moves the slots.
#[derive(Debug, Clone)]
pub(crate) struct DirIndex {
    /// The directory's stack the index was built from.
    stack: Stack,
    /// Every name of `slots`, in order, without separators.
    names: Vec<u8>,
    /// One per name of the built index, sorted by name; slot `i`'s name is
    /// `names[slots[i - 1].end..slots[i].end]`.
    slots: Vec<Slot>,
    /// Where the children that are not plain objects resolve (see
    /// [`Child::Full`]); `None` for a name that resolved to one and no
    /// longer resolves.
    fulls: Vec<Option<Res>>,
    /// Names set since the index was built that `slots` does not hold.
    later: BTreeMap<NameBuf, Res>,
    /// Names that resolve to an object.
    len: usize,
}

/// 8 bytes a name, besides the name: where the name ends in
/// [`DirIndex::names`], and its [`Child`] packed into 32 bits.
#[derive(Debug, Clone, Copy)]
struct Slot {
    end: u32,
    packed: u32,
}

/// The tags of a packed [`Child`] (its top two bits).
const GONE: u32 = 0;
const OBJECT: u32 = 1 << 30;
const FULL: u32 = 2 << 30;
/// What is left for a position in the stack or in `fulls`.
const PAYLOAD: u32 = (1 << 30) - 1;
/// The types of [`Child::Object`], by their number in a packed child
/// (the eighth number is not used: a file, should it ever be read).
const TYPES: [FileType; 8] = [
    FileType::File,
    FileType::Dir,
    FileType::Symlink,
    FileType::Fifo,
    FileType::CharDevice,
    FileType::BlockDevice,
    FileType::Socket,
    FileType::File,
];
/// An object's stack position gets the bits its type leaves.
const POSITION: u32 = PAYLOAD >> 3;

impl Slot {
    #[inline]
    fn child(self) -> Child {
        let payload = self.packed & PAYLOAD;
        match self.packed & !PAYLOAD {
            OBJECT => Child::Object(TYPES[(payload >> 27) as usize], payload & POSITION),
            FULL => Child::Full(payload),
            _ => Child::Gone,
        }
    }

    /// Packs `child`; its numbers are at most [`POSITION`] and
    /// [`PAYLOAD`] (see [`State::build_index`] and [`DirIndex::full`]).
    fn pack(child: Child) -> u32 {
        match child {
            Child::Gone => GONE,
            Child::Object(t, pos) => {
                debug_assert!(pos <= POSITION, "stack position {pos}");
                let ty: u32 = match t {
                    FileType::File => 0,
                    FileType::Dir => 1,
                    FileType::Symlink => 2,
                    FileType::Fifo => 3,
                    FileType::CharDevice => 4,
                    FileType::BlockDevice => 5,
                    FileType::Socket => 6,
                };
                OBJECT | ty << 27 | (pos & POSITION)
            }
            Child::Full(i) => {
                debug_assert!(i <= PAYLOAD, "element {i} of fulls");
                FULL | (i & PAYLOAD)
            }
        }
    }
}

/// What one name of a built index resolves to.
#[derive(Debug, Clone, Copy)]
enum Child {
    /// Nothing (any more).
    Gone,
    /// A non-directory of the layer at this position of the directory's stack.
    Object(FileType, u32),
    /// Anything else (a directory, a name set after the build): this
    /// element of `fulls`.
    Full(u32),
}

/// The children of a [`DirIndex`] that resolve to an object, sorted by
/// name: the built slots merged with the names set later (the two never
/// hold the same name).
#[derive(Debug, Clone)]
pub(crate) struct IndexListing<'a> {
    index: &'a DirIndex,
    /// The next slot to look at.
    slot: usize,
    /// The next name set later, and the rest of them.
    later_head: Option<(&'a NameBuf, &'a Res)>,
    later: std::collections::btree_map::Iter<'a, NameBuf, Res>,
    /// How many are left to give.
    left: usize,
}

impl<'a> Iterator for IndexListing<'a> {
    type Item = Listed<'a>;

    #[inline]
    fn next(&mut self) -> Option<Listed<'a>> {
        let ix = self.index;
        // The next slot that resolves to an object, if any.
        let mut built = None;
        while let Some(slot) = ix.slots.get(self.slot) {
            if let Some((file_type, layer)) = ix.peek_child(slot.child()) {
                built = Some(Listed {
                    name: ix.name_of(self.slot),
                    file_type,
                    layer,
                });
                break;
            }
            self.slot += 1;
        }
        if let Some((name, r)) = self.later_head
            && built.as_ref().is_none_or(|b| name.as_name() < b.name)
        {
            self.later_head = self.later.next();
            self.left = self.left.saturating_sub(1);
            return Some(Listed {
                name,
                file_type: r.file_type,
                layer: r.top().0,
            });
        }
        let built = built?;
        self.slot += 1;
        self.left = self.left.saturating_sub(1);
        Some(built)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// One child of a merged directory as a listing shows it.
pub(crate) struct Listed<'a> {
    pub name: &'a Name,
    pub file_type: FileType,
    /// The topmost layer holding it.
    pub layer: usize,
}

impl DirIndex {
    /// Whether no name resolves to an object.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many names resolve to an object.
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn name_of(&self, i: usize) -> &Name {
        let start = if i == 0 { 0 } else { self.slots[i - 1].end };
        Name::new(&self.names[start as usize..self.slots[i].end as usize])
    }

    /// The slot of `name`, by binary search.
    fn find(&self, name: &Name) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.slots.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.name_of(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The type of child `name` and its topmost layer, without building
    /// its stack.
    pub fn peek(&self, name: &Name) -> Option<(FileType, usize)> {
        match self.find(name) {
            Some(i) => self.peek_child(self.slots[i].child()),
            None => self.later.get(name).map(|r| (r.file_type, r.top().0)),
        }
    }

    #[inline]
    fn peek_child(&self, child: Child) -> Option<(FileType, usize)> {
        match child {
            Child::Gone => None,
            Child::Object(t, pos) => Some((t, self.stack[pos as usize].0)),
            Child::Full(i) => {
                let r = self.fulls[i as usize].as_ref()?;
                Some((r.file_type, r.top().0))
            }
        }
    }

    /// Where child `name` resolves.
    pub fn get(&self, name: &Name) -> Option<Res> {
        match self.find(name) {
            Some(i) => self.res_of(self.slots[i].child(), name),
            None => self.later.get(name).cloned(),
        }
    }

    fn res_of(&self, child: Child, name: &Name) -> Option<Res> {
        match child {
            Child::Gone => None,
            Child::Object(t, pos) => {
                let (idx, dpath) = &self.stack[pos as usize];
                Some(Res {
                    file_type: t,
                    stack: Arc::from([(*idx, dpath.join_unchecked(name))]),
                })
            }
            Child::Full(i) => self.fulls[i as usize].clone(),
        }
    }

    /// A new element of `fulls` (at most one per slot, so no more than
    /// [`PAYLOAD`], as slots), or `at` itself if it is one already.
    fn full(&mut self, at: Child, res: Option<Res>) -> Child {
        if let Child::Full(i) = at {
            self.fulls[i as usize] = res;
            return at;
        }
        self.fulls.push(res);
        Child::Full((self.fulls.len() - 1) as u32)
    }

    /// Makes child `name` resolve to `res` (`None`: to nothing).
    pub fn set(&mut self, name: &Name, res: Option<Res>) {
        let live = res.is_some();
        let was = match self.find(name) {
            Some(i) => {
                let old = self.slots[i].child();
                let was = self.peek_child(old).is_some();
                let new = match (res, old) {
                    (None, Child::Gone | Child::Object(..)) => Child::Gone,
                    (res, old) => self.full(old, res),
                };
                self.slots[i].packed = Slot::pack(new);
                was
            }
            None => match res {
                Some(res) => self.later.insert(name.to_owned(), res).is_some(),
                None => self.later.remove(name).is_some(),
            },
        };
        self.len = self.len + usize::from(live) - usize::from(was);
    }

    /// The children that resolve to an object, sorted by name.
    #[inline]
    pub fn listing(&self) -> IndexListing<'_> {
        let mut later = self.later.iter();
        IndexListing {
            index: self,
            slot: 0,
            later_head: later.next(),
            later,
            left: self.len,
        }
    }

    /// The children that resolve to an object with where they resolve,
    /// sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = (&Name, Res)> {
        self.listing()
            .filter_map(|l| Some((l.name, self.get(l.name)?)))
    }
}

/// The result of resolving a user path.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The directory holding the last name, and the name; `None` when the
    /// path names a directory without a name (the root, or ending in `..`).
    pub parent: Option<(Cursor, NameBuf)>,
    /// The object, `None` if the name is free.
    pub obj: Option<Res>,
    /// The merged path of the object (or of the free name).
    pub path: LayerPath,
    /// The path ended in `/` (or resolved through a target that did).
    pub trailing_slash: bool,
}

impl Resolved {
    /// The object as a directory cursor, if it is a directory.
    pub fn dir(&self) -> Option<Cursor> {
        self.obj
            .as_ref()
            .filter(|r| r.file_type.is_dir())
            .map(|r| Cursor {
                path: self.path.clone(),
                stack: r.stack.clone(),
            })
    }

    /// The object, or `ENOENT`.
    pub fn existing(&self, op: Operation, user: &Name) -> Result<&Res> {
        self.obj
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, op, user))
    }
}

/// What resolution does with the last component of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// A final symlink is followed (`stat`, `open`).
    Always,
    /// Only when the path ends in `/`; then the object must be a
    /// directory (`lstat`, `readlink`).
    OnSlash,
    /// It is not, and a trailing slash is left to the operation (those
    /// that make or remove a name, as the kernel's `filename_create`).
    Create,
    /// As `Always`, for `open` with `O_CREAT`: the last name of the path,
    /// or of a symlink target it ends in, with a trailing slash is `EISDIR`
    /// without being looked up (the kernel's `open_last_lookups`).
    Creating,
}

/// How a lookup continues into the layers below a redirect.
#[derive(Debug, Clone)]
enum Continue {
    /// Look up this name in the parent's stack.
    Name(NameBuf),
    /// Look up this path from the root in every layer below `below`.
    Absolute { path: NameBuf, below: usize },
}

/// What one layer holds at a path, reduced to what lookup needs.
enum Step {
    Missing,
    Whiteout,
    NonDir(FileType),
    Dir(Node),
}

/// The layers of a view and the state lookups need. The view holds it
/// behind a lock; readers share it, writers have it alone.
pub(crate) struct State {
    pub lowers: Vec<Arc<dyn Layer>>,
    pub upper: Box<dyn LayerMut>,
    pub root_stack: Stack,
    /// Keys are merged paths as strings, so that a `&str` finds them (a
    /// `LayerPath` orders by components, unlike its string, so it cannot
    /// lend itself out as a `str` key).
    pub cache: Mutex<HashMap<NameBuf, Arc<DirIndex>>>,
    /// The merged metadata of objects whose top layer is a lower one (so it
    /// cannot change while they stay there), by merged path, for the ones
    /// `stat` has seen. Forgotten with the index entry that resolves them.
    pub metas: Mutex<HashMap<NameBuf, Metadata>>,
    /// A number per layer (by index), unique in this view and kept by a
    /// layer when a commit moves it down: inode numbers are built from it.
    pub layer_ids: Vec<u64>,
    pub next_layer_id: u64,
    /// Copied-up objects: (layer id, inode in that layer) to the inode
    /// number the object had before its copy-up.
    pub origins: HashMap<(u64, u64), u64>,
    /// Whether metadata-only copies are followed (see [`Metacopy`]).
    pub metacopy: Metacopy,
    /// The open handles, by number (see the `handle` module).
    pub handles: BTreeMap<u64, OpenHandle>,
    pub next_handle: u64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("lowers", &self.lowers)
            .field("upper", &self.upper)
            .finish_non_exhaustive()
    }
}

impl State {
    pub fn new(lowers: Vec<Arc<dyn Layer>>, upper: Box<dyn LayerMut>) -> Result<State> {
        // (Through `&dyn`: `as_any` of the `Box` or `Arc` itself would
        // name the pointer's type.)
        if let Some(upper) = (*upper).as_any().downcast_ref::<DirLayer>() {
            for lower in &lowers {
                if let Some(lower) = (**lower).as_any().downcast_ref::<DirLayer>() {
                    upper.check_lower(lower)?;
                }
            }
        }
        let mut state = State {
            lowers,
            upper,
            root_stack: Arc::from(Vec::new()),
            cache: Mutex::new(HashMap::new()),
            metas: Mutex::new(HashMap::new()),
            layer_ids: Vec::new(),
            next_layer_id: 0,
            origins: HashMap::new(),
            metacopy: Metacopy::default(),
            handles: BTreeMap::new(),
            next_handle: 1,
        };
        // The upper gets the highest number, so a commit only appends.
        let n = state.lowers.len() as u64;
        state.layer_ids = std::iter::once(n + 1).chain((1..=n).rev()).collect();
        state.next_layer_id = n + 2;
        state.root_stack = state.compute_root_stack()?;
        Ok(state)
    }

    /// The root's stack: the upper root, then every lower root down to the
    /// first opaque one.
    pub fn compute_root_stack(&self) -> Result<Stack> {
        match self.upper.lookup(&LayerPath::root())? {
            Some(Entry::Node(node)) if node.meta.is_dir() => {}
            _ => {
                return Err(Error::new(ErrorKind::NotADirectory, Operation::Lookup, "/")
                    .with_layer(self.upper.describe())
                    .with_layer_index(UPPER)
                    .with_detail("the upper layer's root is not a directory"));
            }
        }
        let mut stack = Vec::new();
        for idx in 0..=self.lowers.len() {
            let root = LayerPath::root();
            match self.layer(idx).lookup(&root)? {
                Some(Entry::Node(node)) if node.meta.is_dir() => {
                    stack.push((idx, root));
                    if node.opaque {
                        break;
                    }
                }
                _ => break,
            }
        }
        Ok(Arc::from(stack))
    }

    pub fn layer(&self, idx: usize) -> &dyn Layer {
        if idx == UPPER {
            &*self.upper
        } else {
            &*self.lowers[idx - 1]
        }
    }

    /// The inode number the view shows for inode `ino` of layer `idx`.
    pub fn merged_ino(&self, idx: usize, ino: u64) -> u64 {
        let id = self.layer_ids[idx];
        match self.origins.get(&(id, ino)) {
            Some(origin) => *origin,
            None => (id << 40) | (ino & ((1 << 40) - 1)),
        }
    }

    pub fn layer_count(&self) -> usize {
        self.lowers.len() + 1
    }

    pub fn root(&self) -> Cursor {
        Cursor {
            path: LayerPath::root(),
            stack: self.root_stack.clone(),
        }
    }

    /// The node behind a resolved object (from its topmost layer). A
    /// metadata-only copy is refused (`EPERM`) unless the view follows
    /// them, and then only with its data found below (else `EIO`).
    pub fn node(&self, res: &Res) -> Result<Node> {
        let (idx, path) = res.top();
        match self.layer(idx).lookup(path)? {
            Some(Entry::Node(node)) => {
                if node.metacopy {
                    self.metacopy_data(idx, path, &node)?;
                }
                Ok(node)
            }
            _ => Err(Error::new(ErrorKind::Io, Operation::Lookup, path.as_name())
                .with_layer(self.layer(idx).describe())
                .with_layer_index(idx)
                .with_detail("a layer changed while the view was using it")),
        }
    }

    /// Where the data of metadata-only copy `node` (at `path` of layer
    /// `idx`) is: the first ordinary regular file below it at its
    /// redirect, else at the same path, as the kernel's lookup continues
    /// (a metadata-only copy on the way passes its own redirect on).
    pub fn metacopy_data(
        &self,
        idx: usize,
        path: &LayerPath,
        node: &Node,
    ) -> Result<(usize, LayerPath)> {
        let refused = |kind: ErrorKind, detail: &str| {
            Error::new(kind, Operation::Lookup, path.as_name())
                .with_layer(self.layer(idx).describe())
                .with_layer_index(idx)
                .with_detail(detail.to_owned())
        };
        if self.metacopy == Metacopy::Refuse {
            return Err(refused(
                ErrorKind::NotPermitted,
                "a metadata-only copy (overlay.metacopy), which the view follows only \
                 with Metacopy::Follow (the kernel's metacopy=on)",
            ));
        }
        let redirected = |r: &Redirect, at: &LayerPath| {
            match r.target() {
                RedirectTarget::Absolute(path) => Some(path.clone()),
                RedirectTarget::Name(name) => at.parent().unwrap_or_default().join(name).ok(),
                RedirectTarget::Ignored | RedirectTarget::Invalid => None,
            }
            .ok_or_else(|| refused(ErrorKind::InvalidData, "its redirect is not a valid path"))
        };
        // Where the layers below look: a redirect's path; else its name in
        // each layer of its merged parent (which may itself be redirected),
        // when that parent holds this layer's directory; else the same path.
        let mut fixed = match &node.redirect {
            Some(r) => Some(redirected(r, path)?),
            None => None,
        };
        let parent = match (&fixed, path.parent(), path.file_name()) {
            (None, Some(parent), Some(name)) => match self.cursor_at(&parent) {
                Ok(dir) if dir.stack.iter().any(|(l, p)| *l == idx && *p == parent) => {
                    Some((dir, name))
                }
                _ => None,
            },
            _ => None,
        };
        if fixed.is_none() && parent.is_none() {
            fixed = Some(path.clone());
        }
        for below in idx + 1..self.layer_count() {
            let at = match (&fixed, &parent) {
                (Some(p), _) => p.clone(),
                (None, Some((dir, name))) => match dir.stack.iter().find(|(l, _)| *l == below) {
                    Some((_, dpath)) => dpath.join(name)?,
                    None => continue,
                },
                (None, None) => break,
            };
            match self.layer(below).lookup(&at)? {
                None => {}
                Some(Entry::Node(n)) if n.meta.file_type == FileType::File && n.metacopy => {
                    if let Some(r) = &n.redirect {
                        fixed = Some(redirected(r, &at)?);
                    }
                }
                Some(Entry::Node(n)) if n.meta.file_type == FileType::File => {
                    return Ok((below, at));
                }
                Some(_) => break,
            }
        }
        Err(refused(
            ErrorKind::Io,
            "a metadata-only copy (overlay.metacopy) whose data no lower layer holds",
        ))
    }

    fn step(&self, idx: usize, path: &LayerPath) -> Result<Step> {
        Ok(match self.layer(idx).lookup(path)? {
            None => Step::Missing,
            Some(Entry::Whiteout) => Step::Whiteout,
            Some(Entry::Node(node)) if node.meta.is_dir() => Step::Dir(node),
            Some(Entry::Node(node)) => Step::NonDir(node.meta.file_type),
        })
    }

    /// Resolves child `name` of a merged directory with `parent` as stack,
    /// asking the layers one by one.
    pub fn resolve_child(&self, parent: &[(usize, LayerPath)], name: &Name) -> Result<Option<Res>> {
        let mut found: Vec<(usize, LayerPath)> = Vec::new();
        let mut how = Continue::Name(name.to_owned());
        let mut pos = 0;
        loop {
            match how {
                Continue::Name(ref n) => {
                    let Some((idx, dpath)) = parent.get(pos) else {
                        break;
                    };
                    pos += 1;
                    let path = dpath.join(n)?;
                    match self.step(*idx, &path)? {
                        Step::Missing => {}
                        Step::Whiteout => break,
                        Step::NonDir(t) => {
                            if found.is_empty() {
                                return Ok(Some(Res {
                                    file_type: t,
                                    stack: Arc::from([(*idx, path)]),
                                }));
                            }
                            break;
                        }
                        Step::Dir(node) => {
                            found.push((*idx, path));
                            if node.opaque {
                                break;
                            }
                            if let Some(r) = node.redirect {
                                how = redirect_continuation(&r, n, *idx);
                            }
                        }
                    }
                }
                Continue::Absolute { ref path, below } => {
                    self.continue_absolute(path.clone(), below, &mut found)?;
                    break;
                }
            }
        }
        Ok(dir_res(found))
    }

    /// Continues a directory's stack below layer `below` at absolute path
    /// `path`, walking each layer from its root as the kernel does: a
    /// whiteout or non-directory on the way ends the search, an opaque
    /// directory on the way ends it after this layer, a redirect on the way
    /// rewrites the path for the layers below.
    fn continue_absolute(
        &self,
        path: NameBuf,
        below: usize,
        found: &mut Vec<(usize, LayerPath)>,
    ) -> Result<()> {
        let mut path = path.into_bytes();
        let split = |p: &[u8]| -> Vec<Vec<u8>> {
            p.split(|&b| b == b'/')
                .filter(|s| !s.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        };
        for idx in below + 1..self.layer_count() {
            let names = split(&path);
            let mut at = LayerPath::root();
            let mut stop_after = false;
            let mut next_path = path.clone();
            let mut outcome = None;
            for (i, name) in names.iter().enumerate() {
                let last = i + 1 == names.len();
                at = at.join(name)?;
                match self.step(idx, &at)? {
                    Step::Missing => {
                        outcome = Some(false);
                        break;
                    }
                    Step::Whiteout | Step::NonDir(_) => return Ok(()),
                    Step::Dir(node) => {
                        if node.opaque {
                            // The kernel checks no redirect on an opaque one.
                            stop_after = true;
                        } else if let Some(redirect) = &node.redirect {
                            // The kernel's lookup name is rewritten with
                            // the stored bytes, followed or not.
                            let r = redirect.to_bytes();
                            if redirect.is_absolute() {
                                // An absolute redirect below an opaque
                                // directory goes on below (as the kernel).
                                stop_after = false;
                            }
                            let rest = names[i + 1..].join(&b'/');
                            let mut base = if redirect.is_absolute() {
                                let end = r.iter().rposition(|&b| b != b'/').map_or(0, |e| e + 1);
                                r[..end].to_vec()
                            } else {
                                let mut parent = split(&next_path);
                                let keep = parent.len().saturating_sub(names.len() - i);
                                parent.truncate(keep);
                                parent.push(r.to_vec());
                                let mut base = b"/".to_vec();
                                base.extend_from_slice(&parent.join(&b'/'));
                                base
                            };
                            if !rest.is_empty() {
                                base.push(b'/');
                                base.extend_from_slice(&rest);
                            }
                            next_path = base;
                        }
                        if last {
                            outcome = Some(true);
                        }
                    }
                }
            }
            if outcome == Some(true) {
                found.push((idx, at));
            }
            if stop_after {
                return Ok(());
            }
            path = next_path;
        }
        Ok(())
    }

    /// Builds the index of a merged directory from one listing per layer,
    /// merging the sorted listings (a k-way merge), so each name is decided
    /// once, from its occurrences top layer first. A `MemLayer` lends its
    /// names rather than copying them into a listing.
    ///
    /// The merge keeps the listing that gave the last name out of its
    /// heap while that listing's next name is still smaller than every
    /// other listing's: a directory's names come mostly in runs from one
    /// layer, and a name of a run then costs one comparison.
    pub fn build_index(&self, stack: &Stack) -> Result<DirIndex> {
        if stack.len() > POSITION as usize {
            return Err(too_large(stack));
        }
        // Each layer's names: lent by a `MemLayer`, else listed here and
        // kept while the merge borrows them (an empty list beside a lent
        // one).
        let mut lent: Vec<Option<MemNames<'_>>> = Vec::with_capacity(stack.len());
        let mut owned: Vec<Vec<(NameBuf, EntryKind)>> = Vec::with_capacity(stack.len());
        for (idx, dpath) in stack.iter() {
            let layer = self.layer(*idx);
            if let Some(mem) = layer.as_any().downcast_ref::<MemLayer>() {
                lent.push(Some(mem.names(dpath)?));
                owned.push(Vec::new());
                continue;
            }
            let mut entries = layer.read_dir(dpath)?.entries;
            if !entries.is_sorted_by(|a, b| a.0 < b.0) {
                // The trait asks for sorted listings of distinct names; do
                // not rely on it (a name listed twice counts once, as
                // first listed: the merge takes one name per layer).
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                entries.dedup_by(|later, first| later.0 == first.0);
            }
            lent.push(None);
            owned.push(entries);
        }
        let mut listings: Vec<Names<'_>> = lent
            .into_iter()
            .zip(&owned)
            .map(|(lent, owned)| lent.map_or_else(|| Names::Owned(owned.iter()), Names::Lent))
            .collect();
        // Room for every name listed (at most one slot each), so the slots
        // never grow while they are built.
        let listed: usize = listings.iter().map(Names::len).sum();
        // A `MemLayer` holds only names that make valid paths: the others'
        // are checked.
        let checked: Vec<bool> = listings
            .iter()
            .map(|l| matches!(l, Names::Owned(_)))
            .collect();
        // The next name of each listing but `run`'s, smallest first (ties:
        // top layer first); `kinds[pos]` is the kind of listing `pos`'s
        // next name.
        let mut heads: BinaryHeap<Reverse<(Head<'_>, usize)>> = BinaryHeap::new();
        let mut kinds: Vec<EntryKind> = vec![EntryKind::Whiteout; stack.len()];
        for (pos, listing) in listings.iter_mut().enumerate() {
            if let Some((name, kind)) = listing.next() {
                kinds[pos] = kind;
                heads.push(Reverse((Head::new(name), pos)));
            }
        }
        // Takes listing `pos`'s next name: its kind, and the name after it.
        let mut advance = |pos: usize| {
            let kind = kinds[pos];
            let next = listings[pos].next().map(|(name, k)| {
                kinds[pos] = k;
                (Head::new(name), pos)
            });
            (kind, next)
        };
        let mut index = DirIndex {
            stack: stack.clone(),
            // Short names are the rule; the vector grows if they are not.
            names: Vec::with_capacity(listed.saturating_mul(12)),
            slots: Vec::with_capacity(listed),
            fulls: Vec::new(),
            later: BTreeMap::new(),
            len: 0,
        };
        let mut occurrences: Vec<(usize, EntryKind)> = Vec::new();
        // The listing whose name came first last time, with its next name.
        let mut run: Option<(Head<'_>, usize)> = None;
        loop {
            occurrences.clear();
            // The smallest name, from `run` while it stays smaller than
            // every other listing's next name (then no other layer holds
            // it), else from the heap.
            let (Head(key, name), pos, alone) = match run.take() {
                Some((head, pos)) if heads.peek().is_none_or(|Reverse((top, _))| head < *top) => {
                    (head, pos, true)
                }
                held => {
                    if let Some(held) = held {
                        heads.push(Reverse(held));
                    }
                    let Some(Reverse((head, pos))) = heads.pop() else {
                        break;
                    };
                    (head, pos, false)
                }
            };
            let (kind, next) = advance(pos);
            occurrences.push((pos, kind));
            run = next;
            // The layers below that hold it too, top first.
            while !alone
                && heads
                    .peek()
                    .is_some_and(|Reverse((Head(k, n), _))| *k == key && *n == name)
            {
                let Some(Reverse((_, pos))) = heads.pop() else {
                    break;
                };
                let (kind, next) = advance(pos);
                occurrences.push((pos, kind));
                if let Some(next) = next {
                    heads.push(Reverse(next));
                }
            }
            let child = match occurrences[0] {
                (_, EntryKind::Whiteout) => continue,
                // The common case, decided without asking the layer: a
                // non-directory on top hides whatever is below it.
                (pos, EntryKind::Node(t)) if !t.is_dir() => {
                    if checked[pos] {
                        check_child(&stack[pos].1, name)?;
                    }
                    Child::Object(t, pos as u32)
                }
                _ => match self.decide(stack, name, &occurrences)? {
                    Some(res) => index.full(Child::Gone, Some(res)),
                    None => continue,
                },
            };
            index.names.extend_from_slice(name.as_bytes());
            let end = u32::try_from(index.names.len())
                .ok()
                .filter(|_| index.slots.len() < PAYLOAD as usize);
            let Some(end) = end else {
                return Err(too_large(stack));
            };
            index.slots.push(Slot {
                end,
                packed: Slot::pack(child),
            });
        }
        // What the estimates left over (allocators shrink in place).
        index.names.shrink_to_fit();
        index.slots.shrink_to_fit();
        index.len = index.slots.len();
        Ok(index)
    }

    /// What child `name` of a merged directory resolves to, given where
    /// the layers of its stack list it (positions in `stack`, top first).
    fn decide(
        &self,
        stack: &[(usize, LayerPath)],
        name: &Name,
        occurrences: &[(usize, EntryKind)],
    ) -> Result<Option<Res>> {
        let mut found: Vec<(usize, LayerPath)> = Vec::new();
        for (pos, kind) in occurrences {
            let (idx, dpath) = &stack[*pos];
            match kind {
                EntryKind::Whiteout => break,
                EntryKind::Node(FileType::Dir) => {
                    let path = dpath.join(name)?;
                    let Step::Dir(node) = self.step(*idx, &path)? else {
                        return Err(changed_under_us(&path));
                    };
                    found.push((*idx, path));
                    if node.opaque {
                        break;
                    }
                    if let Some(r) = node.redirect {
                        let how = redirect_continuation(&r, name, *idx);
                        self.continue_redirect(stack, pos + 1, how, &mut found)?;
                        break;
                    }
                }
                EntryKind::Node(t) => {
                    if found.is_empty() {
                        return Ok(Some(Res {
                            file_type: *t,
                            stack: Arc::from([(*idx, dpath.join(name)?)]),
                        }));
                    }
                    break;
                }
            }
        }
        Ok(dir_res(found))
    }

    /// Continues a redirected directory's stack from position `pos` of its
    /// parent's stack.
    fn continue_redirect(
        &self,
        parent: &[(usize, LayerPath)],
        mut pos: usize,
        mut how: Continue,
        found: &mut Vec<(usize, LayerPath)>,
    ) -> Result<()> {
        loop {
            match how {
                Continue::Absolute { path, below } => {
                    return self.continue_absolute(path, below, found);
                }
                Continue::Name(ref n) => {
                    let Some((idx, dpath)) = parent.get(pos) else {
                        return Ok(());
                    };
                    pos += 1;
                    let path = dpath.join(n)?;
                    match self.step(*idx, &path)? {
                        Step::Missing => {}
                        Step::Whiteout | Step::NonDir(_) => return Ok(()),
                        Step::Dir(node) => {
                            found.push((*idx, path));
                            if node.opaque {
                                return Ok(());
                            }
                            if let Some(r) = node.redirect {
                                how = redirect_continuation(&r, n, *idx);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The index of a merged directory, from the cache or built now.
    pub fn index(&self, dir: &Cursor) -> Result<Arc<DirIndex>> {
        let cache = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ix) = cache().get(dir.path.as_name()) {
            return Ok(ix.clone());
        }
        let ix = Arc::new(self.build_index(&dir.stack)?);
        cache().insert(dir.path.as_name().to_owned(), ix.clone());
        Ok(ix)
    }

    /// What a plain path resolves to when its parent directory's index is
    /// cached: one map lookup for the directory and one for the name,
    /// instead of one of each per component. `None` when the path is not
    /// plain (see [`plain_split`]) or its parent is not cached;
    /// [`State::resolve`] then walks it.
    ///
    /// Both give the same answer because an index is only cached for a
    /// merged directory reached by its own path with no symlink, and
    /// writers forget the indexes at and below a name whose object they
    /// remove, replace or move (`refresh` with `subtree`,
    /// `forget_subtree`). The last name is returned as found: following a
    /// final symlink is the caller's business.
    pub fn quick_lookup(&self, user: &Name) -> Option<Option<Res>> {
        let (parent, name) = plain_split(user)?;
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let index = cache.get(parent)?;
        Some(index.get(name))
    }

    /// The cached index of the merged directory at `path`, if any.
    pub fn cached_index(&self, path: &Name) -> Option<Arc<DirIndex>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(path).cloned()
    }

    /// Child `name` of a merged directory.
    pub fn child(&self, dir: &Cursor, name: &Name) -> Result<Option<Res>> {
        Ok(self.index(dir)?.get(name))
    }

    /// The merged directory at a merged path (physical: no symlinks).
    pub fn cursor_at(&self, path: &LayerPath) -> Result<Cursor> {
        let mut cur = self.root();
        for name in path.names() {
            let res = self.child(&cur, name)?;
            match res {
                Some(res) if res.file_type.is_dir() => {
                    cur = Cursor {
                        path: cur.path.join_unchecked(name),
                        stack: res.stack,
                    };
                }
                Some(_) => {
                    return Err(Error::new(
                        ErrorKind::NotADirectory,
                        Operation::Lookup,
                        path.as_name(),
                    ));
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        Operation::Lookup,
                        path.as_name(),
                    ));
                }
            }
        }
        Ok(cur)
    }

    /// The object at a merged path (physical), if any.
    pub fn res_at(&self, path: &LayerPath) -> Result<Option<Res>> {
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => {
                let dir = self.cursor_at(&parent)?;
                self.child(&dir, name)
            }
            _ => Ok(Some(Res {
                file_type: FileType::Dir,
                stack: self.root_stack.clone(),
            })),
        }
    }

    /// Resolves a user path in the merged root (chroot semantics).
    ///
    /// `follow` says whether a symlink in the last component is followed.
    pub fn resolve(&self, user: &Name, op: Operation, follow: Follow) -> Result<Resolved> {
        let parsed = UserPath::parse(user.as_bytes(), op)?;
        let err = |kind| Error::new(kind, op, user);
        // Components still to walk, in reverse order, each with the
        // trailing-slash flag it carries when it ends up last.
        let mut todo: Vec<(Cow<'_, Name>, bool)> = components(&parsed)
            .map(|(c, slash)| (Cow::Borrowed(c), slash))
            .collect();
        let mut ancestors: Vec<Cursor> = Vec::new();
        let mut cur = self.root();
        let mut links = 0usize;
        let mut trailing = parsed.trailing_slash;
        while let Some((comp, slash)) = todo.pop() {
            let last = todo.is_empty();
            if last {
                trailing = slash;
            }
            if comp.as_bytes() == b".." {
                if let Some(up) = ancestors.pop() {
                    cur = up;
                }
                if last {
                    return Ok(self.dir_resolved(cur, trailing));
                }
                continue;
            }
            if comp.as_bytes() == b"." {
                // A path (or a symlink target) ending in `.`: the directory
                // the components before it lead to.
                if last {
                    return Ok(self.dir_resolved(cur, true));
                }
                continue;
            }
            if last && trailing && follow == Follow::Creating {
                return Err(err(ErrorKind::IsADirectory));
            }
            let res = self.child(&cur, &comp)?;
            let follow_this = !last
                || matches!(follow, Follow::Always | Follow::Creating)
                || (follow == Follow::OnSlash && trailing);
            match res {
                Some(res) if res.file_type.is_symlink() && follow_this => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(err(ErrorKind::FilesystemLoop));
                    }
                    let (idx, lpath) = res.top();
                    let target = self.layer(idx).read_link(lpath)?;
                    if target.is_empty() {
                        return Err(err(ErrorKind::NotFound));
                    }
                    let parsed_target = UserPath::parse(target.as_bytes(), op).map_err(|e| {
                        // A stored target may be longer than a user path may be.
                        err(e.kind())
                    })?;
                    if target.is_absolute() {
                        cur = self.root();
                        ancestors.clear();
                    }
                    let carry = slash || parsed_target.trailing_slash;
                    let mut more: Vec<(Cow<'_, Name>, bool)> = components(&parsed_target)
                        .map(|(c, slash)| (Cow::Owned(c.to_owned()), slash))
                        .collect();
                    if let Some(first) = more.first_mut() {
                        first.1 = carry;
                    } else if last {
                        // The target names a directory without a name ("/" or "..").
                        if target.is_absolute() {
                            return Ok(self.dir_resolved(self.root(), true));
                        }
                        return Ok(self.dir_resolved(cur, true));
                    }
                    todo.extend(more);
                }
                Some(res) if res.file_type.is_dir() => {
                    let path = cur.path.join_unchecked(&comp);
                    if last {
                        return Ok(Resolved {
                            parent: Some((cur, comp.into_owned())),
                            obj: Some(res),
                            path,
                            trailing_slash: trailing,
                        });
                    }
                    let next = Cursor {
                        path,
                        stack: res.stack,
                    };
                    ancestors.push(std::mem::replace(&mut cur, next));
                }
                Some(res) => {
                    if !last {
                        return Err(err(ErrorKind::NotADirectory));
                    }
                    let path = cur.path.join_unchecked(&comp);
                    if trailing && follow != Follow::Create {
                        return Err(err(ErrorKind::NotADirectory));
                    }
                    return Ok(Resolved {
                        parent: Some((cur, comp.into_owned())),
                        obj: Some(res),
                        path,
                        trailing_slash: trailing,
                    });
                }
                None => {
                    if !last {
                        return Err(err(ErrorKind::NotFound));
                    }
                    let path = cur.path.join_unchecked(&comp);
                    return Ok(Resolved {
                        parent: Some((cur, comp.into_owned())),
                        obj: None,
                        path,
                        trailing_slash: trailing,
                    });
                }
            }
        }
        // No components at all: the root.
        Ok(self.dir_resolved(cur, trailing))
    }

    fn dir_resolved(&self, cur: Cursor, trailing_slash: bool) -> Resolved {
        Resolved {
            parent: None,
            obj: Some(Res {
                file_type: FileType::Dir,
                stack: cur.stack,
            }),
            path: cur.path,
            trailing_slash,
        }
    }

    /// Whether a layer below the upper shows `name` in `dir` (so removing
    /// it from the upper must leave a whiteout).
    pub fn lower_positive(&self, dir: &Cursor, name: &Name) -> Result<bool> {
        let lowers: Vec<(usize, LayerPath)> = dir
            .stack
            .iter()
            .filter(|(idx, _)| *idx != UPPER)
            .cloned()
            .collect();
        Ok(self.resolve_child(&lowers, name)?.is_some())
    }

    /// Drops every cached index (after a commit renumbers the layers).
    pub fn clear_cache(&mut self) {
        self.cache
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.metas
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The metadata `stat` remembered for the object at `user`, if `user`
    /// is exactly its merged path (with at most one leading `/`).
    pub fn remembered_meta(&self, user: &Name) -> Option<Metadata> {
        let path = user.strip_root();
        let metas = self.metas.lock().unwrap_or_else(PoisonError::into_inner);
        metas.get(path).cloned()
    }

    /// Remembers `meta` for the object `res` at the plain path `user` (one
    /// [`State::quick_lookup`] accepted) if its top layer is a lower one
    /// and it is no symlink (which `stat` may have to follow).
    /// Returns whether it did.
    pub fn remember_meta(&self, user: &Name, res: &Res, meta: &Metadata) -> bool {
        if res.top().0 == UPPER || res.file_type.is_symlink() {
            return false;
        }
        let Ok(path) = LayerPath::new(user.strip_root()) else {
            return false;
        };
        let mut metas = self.metas.lock().unwrap_or_else(PoisonError::into_inner);
        metas.insert(path.as_name().to_owned(), meta.clone());
        true
    }

    /// Brings the cached index of `dir` up to date for `name` (after a
    /// change of what `name` resolves to), and forgets cached indexes at
    /// and below `dir/name` when `subtree` (its stack changed).
    pub fn refresh(&mut self, dir: &LayerPath, name: &Name, subtree: bool) -> Result<()> {
        self.metas
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(dir.join_unchecked(name).as_name());
        let cached = self
            .cache
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(dir.as_name());
        if cached {
            let res = match self.cursor_at(dir) {
                Ok(cursor) => Some(self.resolve_child(&cursor.stack, name)?),
                Err(_) => None,
            };
            let cache = self.cache.get_mut().unwrap_or_else(PoisonError::into_inner);
            match res {
                Some(res) => {
                    if let Some(ix) = cache.get_mut(dir.as_name()) {
                        Arc::make_mut(ix).set(name, res);
                    }
                }
                None => {
                    cache.remove(dir.as_name());
                }
            }
        }
        if subtree {
            self.forget_subtree(&dir.join_unchecked(name));
        }
        Ok(())
    }

    /// Forgets cached indexes at and below `path`.
    pub fn forget_subtree(&mut self, path: &LayerPath) {
        self.cache
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| !at_or_under(k, path));
        self.metas
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| !at_or_under(k, path));
    }
}

/// A plain path split into its parent's merged path and its last name.
/// A plain path has no empty, `.` or `..` component, no trailing slash and
/// no overlong name; one leading `/` is allowed (the view is its own root).
/// `None` for any other path.
pub(crate) fn plain_split(user: &Name) -> Option<(&Name, &Name)> {
    let user = user.as_bytes();
    let path = user.strip_prefix(b"/").unwrap_or(user);
    if user.len() > PATH_MAX || path.contains(&0) {
        return None;
    }
    let plain = |c: &[u8]| !c.is_empty() && c != b"." && c != b".." && c.len() <= NAME_MAX;
    if !path.split(|&b| b == b'/').all(plain) {
        return None;
    }
    Some(match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (Name::new(&path[..i]), Name::new(&path[i + 1..])),
        None => (Name::new(""), Name::new(path)),
    })
}

/// Whether the merged path `key` is `path` or below it.
fn at_or_under(key: &Name, path: &LayerPath) -> bool {
    let p = path.as_name();
    path.is_root()
        || key == p
        || (key.as_bytes().starts_with(p.as_bytes()) && key.as_bytes().get(p.len()) == Some(&b'/'))
}

fn changed_under_us(path: &LayerPath) -> Error {
    Error::new(ErrorKind::Io, Operation::Lookup, path.as_name())
        .with_detail("a layer changed while the view was reading it")
}

fn dir_res(found: Vec<(usize, LayerPath)>) -> Option<Res> {
    if found.is_empty() {
        None
    } else {
        Some(Res {
            file_type: FileType::Dir,
            stack: Arc::from(found),
        })
    }
}

/// Where the layers below a directory with redirect `r` (found under the
/// name `name` in layer `idx`) hold its contents.
fn redirect_continuation(r: &Redirect, name: &Name, idx: usize) -> Continue {
    match r.target() {
        RedirectTarget::Absolute(_) | RedirectTarget::Invalid => Continue::Absolute {
            path: NameBuf::from(r.to_bytes().as_ref()),
            below: idx,
        },
        // Not a valid relative redirect: the kernel ignores it.
        RedirectTarget::Ignored => Continue::Name(name.to_owned()),
        RedirectTarget::Name(r) => Continue::Name(r.to_owned()),
    }
}

/// The components of a parsed path in reverse order (the next to walk
/// last), each with the trailing-slash flag it carries if it ends the path.
///
/// A path ending in `.` gets a final `.` component: every name before it
/// is then walked as a directory on the way (it must exist), and the `.`
/// names that directory itself, as the kernel's `LAST_DOT`.
fn components<'a>(parsed: &UserPath<'a>) -> impl Iterator<Item = (&'a Name, bool)> + use<'a> {
    let slash = parsed.trailing_slash;
    let mut comps: Vec<&'a Name> = parsed
        .components
        .iter()
        .map(|c| match c {
            Component::Parent => Name::new(".."),
            Component::Name(name) => *name,
        })
        .collect();
    if parsed.ends_in_dot {
        comps.push(Name::new("."));
    }
    let n = comps.len();
    comps
        .into_iter()
        .enumerate()
        .rev()
        .map(move |(i, name)| (name, i + 1 == n && slash))
}

/// The names of one layer's directory, sorted, for [`State::build_index`].
enum Names<'a> {
    /// Borrowed from the layer.
    Lent(MemNames<'a>),
    /// From a listing.
    Owned(std::slice::Iter<'a, (NameBuf, EntryKind)>),
}

impl<'a> Names<'a> {
    fn len(&self) -> usize {
        match self {
            Names::Lent(it) => it.len(),
            Names::Owned(it) => it.len(),
        }
    }
}

impl<'a> Iterator for Names<'a> {
    type Item = (&'a Name, EntryKind);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Names::Lent(it) => it.next(),
            Names::Owned(it) => it.next().map(|(n, k)| (n.as_name(), *k)),
        }
    }
}

/// A directory whose index would not fit its packed numbers: more than
/// 4 GiB of names, 2^30 names or 2^27 layers.
fn too_large(stack: &[(usize, LayerPath)]) -> Error {
    Error::new(
        ErrorKind::LimitExceeded,
        Operation::ReadDir,
        stack[0].1.as_name(),
    )
    .with_detail("the directory is too large to index (4 GiB of names, 2^30 names or 2^27 layers)")
}

/// Checks that `name` makes a valid path below `dir` (what
/// [`LayerPath::join`] checks) without building the path.
fn check_child(dir: &LayerPath, name: &Name) -> Result<()> {
    validate_name(name.as_bytes())?;
    if dir.as_name().len() + usize::from(!dir.is_root()) + name.len() > PATH_MAX {
        dir.join(name)?;
    }
    Ok(())
}

/// A name in the merge of [`State::build_index`], ordered as its bytes,
/// with its first sixteen bytes as a number in front: most comparisons of
/// (short) names are then one comparison of two numbers, even of names
/// that share a long prefix.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Head<'a>(u128, &'a Name);

impl<'a> Head<'a> {
    fn new(name: &'a Name) -> Head<'a> {
        // Zero-padded: a name holds no NUL, so a shorter name that is a
        // prefix of another still orders first.
        let bytes = name.as_bytes();
        let key = if let Some(first) = bytes.first_chunk::<16>() {
            u128::from_be_bytes(*first)
        } else if let (Some(first), Some(last)) =
            (bytes.first_chunk::<8>(), bytes.last_chunk::<8>())
        {
            // Eight to fifteen bytes: the last eight overlap the first;
            // shifted, the bytes past the eighth lead the low half.
            let first = u64::from_be_bytes(*first);
            let rest = u64::from_be_bytes(*last)
                .checked_shl(8 * (16 - bytes.len() as u32))
                .unwrap_or(0);
            u128::from(first) << 64 | u128::from(rest)
        } else {
            // Byte by byte for a short name: a copy of a length known
            // only at run time would be a call to `memcpy` per name.
            let first = bytes
                .iter()
                .enumerate()
                .fold(0, |n, (i, &b)| n | u64::from(b) << (56 - 8 * i));
            u128::from(first) << 64
        };
        Head(key, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ix: &DirIndex) -> Vec<(NameBuf, usize)> {
        ix.listing().map(|l| (l.name.to_owned(), l.layer)).collect()
    }

    /// A layer whose listings name everything twice, out of order.
    #[derive(Debug)]
    struct Twice(MemLayer);

    impl Layer for Twice {
        fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>> {
            self.0.lookup(path)
        }

        fn read_dir(&self, path: &LayerPath) -> Result<crate::layer::DirListing> {
            let mut listing = self.0.read_dir(path)?;
            let again = listing.entries.clone();
            listing.entries.extend(again);
            listing.entries.reverse();
            Ok(listing)
        }

        fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<bytes::Bytes> {
            self.0.read_at(path, offset, len)
        }

        fn read_link(&self, path: &LayerPath) -> Result<NameBuf> {
            self.0.read_link(path)
        }
    }

    #[test]
    fn a_name_a_layer_lists_twice_is_listed_once() {
        let mut lower = MemLayer::new();
        for name in ["d/a", "d/b", "d/c"] {
            lower.add_file(name, "x").unwrap();
        }
        let mut top = MemLayer::new();
        top.add_file("d/b", "y").unwrap();
        let layers: Vec<Arc<dyn Layer>> = vec![Arc::new(Twice(top)), Arc::new(Twice(lower))];
        let view = crate::MergedView::new(layers, MemLayer::new()).unwrap();
        let listed = |view: &crate::MergedView| -> Vec<String> {
            let listing = view.list_dir("d").unwrap();
            assert_eq!(listing.iter().len(), listing.len());
            listing.iter().map(|e| e.name.to_string()).collect()
        };
        assert_eq!(listed(&view), ["a", "b", "c"]);
        assert_eq!(view.read("d/b").unwrap()[..], b"y"[..]);
        view.remove_file("d/a").unwrap();
        assert_eq!(listed(&view), ["b", "c"]);
        view.remove_file("d/b").unwrap();
        assert_eq!(listed(&view), ["c"]);
        assert_eq!(view.read_dir("d").unwrap().len(), 1);
    }

    #[test]
    fn a_merge_head_orders_as_its_name_at_every_length() {
        // Every length from 1 to 20 bytes, with prefixes shared up to the
        // whole shorter name, and the byte 0xff that a sign would upset.
        let mut names: Vec<Vec<u8>> = Vec::new();
        for len in 1..=20 {
            for last in [b'a', b'b', 0xff] {
                let mut n = vec![b'x'; len];
                n[len - 1] = last;
                names.push(n.clone());
                n[0] = 1;
                names.push(n);
            }
        }
        fn head(n: &[u8]) -> Head<'_> {
            Head::new(Name::new(n))
        }
        for a in &names {
            for b in &names {
                let (ha, hb) = (head(a), head(b));
                assert_eq!(ha.cmp(&hb), a.cmp(b), "{a:?} against {b:?}");
                // Up to sixteen bytes the number alone decides.
                if a.len() <= 16 && b.len() <= 16 {
                    assert_eq!(ha.0.cmp(&hb.0), a.cmp(b), "{a:?} against {b:?}");
                }
            }
        }
    }

    #[test]
    fn a_packed_slot_gives_back_every_child_it_can_hold() {
        let mut children = vec![Child::Gone, Child::Full(0), Child::Full(PAYLOAD)];
        for t in TYPES {
            children.extend([
                Child::Object(t, 0),
                Child::Object(t, 1),
                Child::Object(t, POSITION),
            ]);
        }
        for child in children {
            let back = Slot {
                end: 0,
                packed: Slot::pack(child),
            }
            .child();
            let same = match (child, back) {
                (Child::Gone, Child::Gone) => true,
                (Child::Full(a), Child::Full(b)) => a == b,
                (Child::Object(t, p), Child::Object(u, q)) => t == u && p == q,
                _ => false,
            };
            assert!(same, "{child:?} came back as {back:?}");
        }
        assert_eq!(POSITION, (1 << 27) - 1);
    }

    #[test]
    fn an_index_changed_after_its_build_stays_sorted_and_counted() {
        let mut lower = MemLayer::new();
        for name in ["d/b", "d/d", "d/f"] {
            lower.add_file(name, "x").unwrap();
        }
        lower.add_dir("d/sub").unwrap();
        let st = State::new(vec![Arc::new(lower)], Box::new(MemLayer::new())).unwrap();
        let d = st.child(&st.root(), Name::new("d")).unwrap().unwrap();
        let mut ix = st.build_index(&d.stack).unwrap();
        assert_eq!(
            names(&ix),
            [("b", 1), ("d", 1), ("f", 1), ("sub", 1)].map(|(n, l)| (NameBuf::from(n), l))
        );
        // A plain object's path in its layer is derived from the stack.
        let b = ix.get(Name::new("b")).unwrap();
        assert_eq!(
            (b.file_type, b.top().0, b.top().1.as_bytes()),
            (FileType::File, 1, b"d/b".as_slice())
        );
        assert_eq!(ix.peek(Name::new("sub")), Some((FileType::Dir, 1)));

        let upper_file = |name: &str| Res {
            file_type: FileType::File,
            stack: Arc::from([(UPPER, LayerPath::new(name).unwrap())]),
        };
        ix.set(Name::new("a"), Some(upper_file("d/a")));
        ix.set(Name::new("e"), Some(upper_file("d/e")));
        ix.set(Name::new("z"), Some(upper_file("d/z")));
        ix.set(Name::new("d"), None);
        ix.set(Name::new("b"), Some(upper_file("d/b")));
        // Gone and back, twice: one element of `fulls` serves each time.
        ix.set(Name::new("f"), None);
        ix.set(Name::new("f"), Some(upper_file("d/f")));
        ix.set(Name::new("f"), None);
        ix.set(Name::new("f"), Some(upper_file("d/f")));
        ix.set(Name::new("nothing"), None);
        // `sub` (a directory) since the build, then `b` and `f`.
        assert_eq!(ix.fulls.len(), 3);
        assert_eq!(
            names(&ix),
            [("a", 0), ("b", 0), ("e", 0), ("f", 0), ("sub", 1), ("z", 0)]
                .map(|(n, l)| (NameBuf::from(n), l))
        );
        assert_eq!(ix.get(Name::new("d")).map(|r| r.file_type), None);
        assert_eq!(ix.peek(Name::new("e")), Some((FileType::File, 0)));
        for name in ["a", "b", "e", "f", "sub", "z"] {
            assert!(!ix.is_empty());
            ix.set(Name::new(name), None);
        }
        assert!(ix.is_empty());
        assert_eq!(names(&ix), []);
    }
}
