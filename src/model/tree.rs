//! The tree: directories and identities (hard-linked objects share one),
//! their attributes, and the primitives every operation builds on (add,
//! unlink, copy-up, link counts).

use super::*;

/// in [`Model::objs`].
pub(super) type Id = u64;

/// The id of the root directory.
pub(super) const ROOT: Id = 0;

/// What a name in a directory refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Child {
    Dir(Id),
    /// An identity: every name of one (hard-linked) object holds the same id.
    Obj(Id),
}

/// The attributes every object has.
#[derive(Debug, Clone)]
pub(super) struct Attrs {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) xattrs: Xattrs,
}

impl Attrs {
    pub(super) fn of(meta: &Metadata) -> Attrs {
        Attrs {
            mode: meta.mode & MODE_MASK,
            uid: meta.uid,
            gid: meta.gid,
            xattrs: meta.xattrs.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct DirNode {
    pub(super) attrs: Attrs,
    pub(super) entries: BTreeMap<NameBuf, Child>,
    /// How many lower layers contribute to this directory.
    pub(super) lower_layers: u64,
    /// Whether the directory has been copied up (or created) in the upper.
    pub(super) in_upper: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Body {
    File(FileData),
    Symlink(NameBuf),
    /// A fifo, device or socket: only metadata.
    Special,
}

/// One identity: what all its names show.
#[derive(Debug, Clone)]
pub(super) struct ObjNode {
    pub(super) file_type: FileType,
    pub(super) attrs: Attrs,
    /// Device number (0 unless a character or block device).
    pub(super) rdev: u64,
    pub(super) body: Body,
    /// How many names in the tree refer to this identity.
    pub(super) names: u64,
    /// While still in a lower layer: that layer's link count.
    pub(super) lower_nlink: u64,
    /// Whether the object has been copied up (or created) in the upper.
    pub(super) in_upper: bool,
}

impl ObjNode {
    pub(super) fn nlink(&self) -> u64 {
        if self.in_upper {
            self.names
        } else {
            self.lower_nlink
        }
    }

    pub(super) fn size(&self) -> u64 {
        match &self.body {
            Body::File(data) => data.len(),
            Body::Symlink(target) => target.len() as u64,
            Body::Special => 0,
        }
    }
}

impl Model {
    pub(super) fn empty(options: ViewOptions) -> Model {
        // The root is the upper layer's root: a fresh `MemLayer`'s.
        let root = DirNode {
            attrs: Attrs::of(&Metadata::new(FileType::Dir)),
            entries: BTreeMap::new(),
            lower_layers: 0,
            in_upper: true,
        };
        Model {
            options,
            dirs: BTreeMap::from([(ROOT, root)]),
            objs: BTreeMap::new(),
            next_id: ROOT + 1,
            handles: BTreeMap::new(),
            next_handle: 1,
        }
    }

    pub(super) fn alloc(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(super) fn dir(&self, id: Id) -> &DirNode {
        self.dirs
            .get(&id)
            .expect("model invariant: every directory in the tree is in the table")
    }

    pub(super) fn dir_mut(&mut self, id: Id) -> &mut DirNode {
        self.dirs
            .get_mut(&id)
            .expect("model invariant: every directory in the tree is in the table")
    }

    pub(super) fn obj(&self, id: Id) -> &ObjNode {
        self.objs
            .get(&id)
            .expect("model invariant: every object in the tree is in the table")
    }

    pub(super) fn obj_mut(&mut self, id: Id) -> &mut ObjNode {
        self.objs
            .get_mut(&id)
            .expect("model invariant: every object in the tree is in the table")
    }

    pub(super) fn child(&self, dir: Id, name: &Name) -> Option<Child> {
        self.dir(dir).entries.get(name).copied()
    }

    pub(super) fn is_dir(&self, child: Child) -> bool {
        matches!(child, Child::Dir(_))
    }

    pub(super) fn file_type(&self, child: Child) -> FileType {
        match child {
            Child::Dir(_) => FileType::Dir,
            Child::Obj(id) => self.obj(id).file_type,
        }
    }

    pub(super) fn attrs(&self, child: Child) -> &Attrs {
        match child {
            Child::Dir(id) => &self.dir(id).attrs,
            Child::Obj(id) => &self.obj(id).attrs,
        }
    }

    pub(super) fn attrs_mut(&mut self, child: Child) -> &mut Attrs {
        match child {
            Child::Dir(id) => &mut self.dir_mut(id).attrs,
            Child::Obj(id) => &mut self.obj_mut(id).attrs,
        }
    }

    pub(super) fn has_lower_part(&self, child: Child) -> bool {
        matches!(child, Child::Dir(id) if self.dir(id).lower_layers > 0)
    }

    /// The kernel's rule: a merged directory shows one link; any other
    /// shows 2 plus one per subdirectory.
    pub(super) fn dir_nlink(&self, id: Id) -> u64 {
        let dir = self.dir(id);
        if (dir.in_upper && dir.lower_layers > 0) || dir.lower_layers > 1 {
            1
        } else {
            let subdirs = dir
                .entries
                .values()
                .filter(|c| matches!(c, Child::Dir(_)))
                .count();
            2 + subdirs as u64
        }
    }

    pub(super) fn metadata_of(&self, child: Child) -> Metadata {
        let attrs = self.attrs(child);
        let mut meta = Metadata::new(self.file_type(child));
        meta.mode = attrs.mode;
        meta.uid = attrs.uid;
        meta.gid = attrs.gid;
        meta.xattrs = attrs.xattrs.clone();
        match child {
            Child::Dir(id) => {
                meta.size = 0;
                meta.nlink = self.dir_nlink(id);
            }
            Child::Obj(id) => {
                let obj = self.obj(id);
                meta.size = obj.size();
                meta.nlink = obj.nlink();
                meta.rdev = obj.rdev;
            }
        }
        meta
    }

    pub(super) fn snapshot_entry(&self, child: Child) -> SnapshotEntry {
        let meta = self.metadata_of(child);
        let (data, target) = match child {
            Child::Obj(id) => match &self.obj(id).body {
                // The model's data is in memory (it has no spill); a
                // snapshot holds every file whole, as it always did.
                Body::File(data) => (
                    data.to_bytes().expect("a snapshot's files fit in memory"),
                    NameBuf::new(),
                ),
                Body::Symlink(target) => (Bytes::new(), target.clone()),
                Body::Special => (Bytes::new(), NameBuf::new()),
            },
            Child::Dir(_) => (Bytes::new(), NameBuf::new()),
        };
        SnapshotEntry {
            meta: MetadataSummary::from(&meta),
            data,
            target,
        }
    }

    /// Owner and mode of a new object in directory `parent`: a setgid
    /// parent passes on its group, and its setgid bit to a new directory.
    pub(super) fn new_attrs(&self, parent: Id, mode: u32, is_dir: bool) -> Attrs {
        let parent = &self.dir(parent).attrs;
        let setgid = parent.mode & S_ISGID != 0;
        Attrs {
            mode: if is_dir && setgid {
                mode | S_ISGID
            } else {
                mode
            },
            uid: self.options.uid,
            gid: if setgid { parent.gid } else { self.options.gid },
            xattrs: Xattrs::new(),
        }
    }

    /// Creates directory `name` in the last directory of `stack` (the name
    /// is free), copying up the parent chain.
    pub(super) fn add_dir(&mut self, stack: &[Id], name: &Name) -> Id {
        let parent = top(stack);
        let attrs = self.new_attrs(parent, 0o777 & !self.options.umask & MODE_MASK, true);
        self.copy_up_dirs(stack);
        let id = self.alloc();
        self.dirs.insert(
            id,
            DirNode {
                attrs,
                entries: BTreeMap::new(),
                lower_layers: 0,
                in_upper: true,
            },
        );
        self.dir_mut(parent)
            .entries
            .insert(name.to_owned(), Child::Dir(id));
        id
    }

    /// Creates a non-directory `name` in the last directory of `stack` (the
    /// name is free), copying up the parent chain.
    pub(super) fn add_obj(
        &mut self,
        stack: &[Id],
        name: &Name,
        file_type: FileType,
        attrs: Attrs,
        rdev: u64,
        body: Body,
    ) -> Id {
        self.copy_up_dirs(stack);
        let id = self.alloc();
        self.objs.insert(
            id,
            ObjNode {
                file_type,
                attrs,
                rdev,
                body,
                names: 1,
                lower_nlink: 1,
                in_upper: true,
            },
        );
        self.dir_mut(top(stack))
            .entries
            .insert(name.to_owned(), Child::Obj(id));
        id
    }

    /// Removes `name` (and everything below it) from the last directory of
    /// `stack`, copying up the parent chain.
    pub(super) fn unlink(&mut self, stack: &[Id], name: &Name) {
        self.copy_up_dirs(stack);
        if let Some(child) = self.dir_mut(top(stack)).entries.remove(name) {
            self.release(child);
        }
    }

    /// Drops a name that was taken out of the tree: one name less for an
    /// object, the whole subtree for a directory.
    pub(super) fn release(&mut self, child: Child) {
        let mut work = vec![child];
        while let Some(child) = work.pop() {
            match child {
                Child::Obj(id) => {
                    let obj = self.obj_mut(id);
                    obj.names -= 1;
                    // An open identity lives on, nameless, until closed.
                    if obj.names == 0 && !self.is_open(id) {
                        self.objs.remove(&id);
                    }
                }
                Child::Dir(id) => {
                    if let Some(dir) = self.dirs.remove(&id) {
                        work.extend(dir.entries.into_values());
                    }
                }
            }
        }
    }

    pub(super) fn copy_up_dirs(&mut self, stack: &[Id]) {
        for id in stack {
            self.dir_mut(*id).in_upper = true;
        }
    }

    /// Copies up one object. With `HardLinkCopyUp::Keep` every name of a
    /// lower inode holds the same identity, so all of them are linked in
    /// the upper at once; with `Break` a lower identity has one name.
    pub(super) fn copy_up_child(&mut self, child: Child) {
        match child {
            Child::Dir(id) => self.dir_mut(id).in_upper = true,
            Child::Obj(id) => {
                let was_up = self.obj(id).in_upper;
                self.obj_mut(id).in_upper = true;
                if !was_up && self.options.hard_links == HardLinkCopyUp::Keep {
                    // Every other name is linked in the upper at once, so
                    // the directories holding them are copied up too.
                    for stack in self.stacks_holding(id) {
                        self.copy_up_dirs(&stack);
                    }
                }
            }
        }
    }

    /// The directory chains (root first) of every directory that holds a
    /// name of object `id`.
    pub(super) fn stacks_holding(&self, id: Id) -> Vec<Vec<Id>> {
        let mut found = Vec::new();
        let mut todo = vec![vec![ROOT]];
        while let Some(stack) = todo.pop() {
            let mut holds = false;
            for child in self.dir(top(&stack)).entries.values() {
                match child {
                    Child::Dir(dir) => {
                        let mut deeper = stack.clone();
                        deeper.push(*dir);
                        todo.push(deeper);
                    }
                    Child::Obj(obj) => holds |= *obj == id,
                }
            }
            if holds {
                found.push(stack);
            }
        }
        found
    }

    /// Copies up what `resolved` leads to, parents first.
    pub(super) fn copy_up(&mut self, resolved: &Resolved) {
        self.copy_up_dirs(&resolved.stack);
        if let Some(found) = self.found(resolved) {
            self.copy_up_child(found);
        }
    }

    pub(super) fn write_data(&mut self, id: Id, offset: u64, data: &[u8]) -> Result<(), ErrorKind> {
        if data.is_empty() {
            return Ok(());
        }
        match offset.checked_add(data.len() as u64) {
            Some(end) if end <= MAX_FILE_SIZE => {}
            _ => return Err(ErrorKind::FileTooLarge),
        }
        if let Body::File(file) = &mut self.obj_mut(id).body {
            file.write_at(offset, data);
        }
        Ok(())
    }
}
