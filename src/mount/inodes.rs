//! The node table: which FUSE node ids the kernel knows, how many lookups
//! it holds on each, and where each node is in the merged tree (its parent
//! node and name; a file with hard links has several).
//!
//! The view is addressed by path, the kernel by node id: a node's path is
//! found by walking one of its links up to the root. Renames, unlinks and
//! rmdirs move or drop links; a node whose last link is gone is an orphan
//! that lives on while the kernel holds a lookup or a handle is open on
//! it. Lookup counts are exact: every reply that hands the kernel a node
//! (lookup, create, mknod, mkdir, symlink, link, each readdirplus entry but
//! `.` and `..`) adds one, and `forget` takes away what the kernel says.
//!
//! Each link holds its parent directory in the table (a count of the links
//! naming it as parent): the kernel may forget a directory while a file it
//! holds through another name is still known by this one, and the file
//! must keep a path.
//!
//! Per-name nodes (see the mount's module docs): a name of a lower file
//! with several names, under `HardLinkCopyUp::Break`, gets a node of its
//! own, numbered from [`PER_NAME_BASE`] up (the view's numbers stay far
//! below), which serves that name only.

use std::collections::HashMap;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::path::{Name, NameBuf};

/// The kernel's id of the root directory.
pub(super) const ROOT_ID: u64 = 1;

/// The first id of a per-name node. The view numbers objects as `(layer
/// id << 40) | inode`, with layer ids counted from 1 per view: far below.
pub(super) const PER_NAME_BASE: u64 = 1 << 63;

/// The FUSE node id of the object the view numbers `ino`, for a view whose
/// root is `root_ino`: the same number, except that the root is always 1
/// (and an object the view happens to number 1 takes the root's number).
/// The mapping is its own inverse.
pub(super) fn node_id(ino: u64, root_ino: u64) -> u64 {
    if ino == root_ino {
        ROOT_ID
    } else if ino == ROOT_ID {
        root_ino
    } else {
        ino
    }
}

#[derive(Debug, Default)]
struct Node {
    /// Lookups the kernel holds.
    lookups: u64,
    /// Where it is: (parent node id, name); empty for an orphan.
    links: Vec<(u64, NameBuf)>,
    /// Open file handles on it (they keep an orphan readable).
    handles: Vec<u64>,
    /// Links of other nodes that name this one as their parent.
    children: u64,
    /// Bumped when a new object takes the number of a removed one.
    generation: u64,
    /// Its last link was removed: the next lookup that finds the number
    /// finds a new object (filesystems reuse inode numbers).
    dead: bool,
    /// A per-name node (see the module docs).
    per_name: bool,
    /// For a per-name node that `link(2)` gave more names (the file is
    /// then one upper file): the view's number of that file, whose other
    /// names this node serves too.
    alias_of: Option<u64>,
}

/// The table (see the module docs).
#[derive(Debug)]
pub(super) struct Inodes {
    nodes: HashMap<u64, Node>,
    /// (parent, name) -> node id.
    dentries: HashMap<(u64, NameBuf), u64>,
    /// The view's number of a file -> the per-name node serving it.
    aliases: HashMap<u64, u64>,
    next_per_name: u64,
}

impl Default for Inodes {
    fn default() -> Inodes {
        Inodes {
            nodes: HashMap::new(),
            dentries: HashMap::new(),
            aliases: HashMap::new(),
            next_per_name: PER_NAME_BASE,
        }
    }
}

impl Inodes {
    /// A node has been handed to the kernel under `(parent, name)`
    /// (`counted`: the reply takes a lookup). Returns its generation.
    pub(super) fn learn(&mut self, id: u64, parent: u64, name: &Name, counted: bool) -> u64 {
        let key = (parent, name.to_owned());
        if let Some(old) = self.dentries.get(&key).copied()
            && old != id
        {
            self.unlink_from(old, parent, name, false);
        }
        // A per-name node another thread dropped between making it and
        // this count (a readdirplus whose buffer was full forgets what it
        // did not send) comes back as what it was: a per-name node, never
        // reused, so generation 0 is still the one the kernel was told.
        let node = self.nodes.entry(id).or_insert_with(|| Node {
            per_name: id >= PER_NAME_BASE,
            ..Node::default()
        });
        if node.dead {
            node.dead = false;
            node.generation += 1;
        }
        if counted {
            node.lookups += 1;
        }
        let generation = node.generation;
        if !node.links.iter().any(|(p, n)| *p == parent && n == &key.1) {
            node.links.push(key.clone());
            self.hold_parent(parent);
        }
        self.dentries.insert(key, id);
        generation
    }

    /// The live per-name node that serves `(parent, name)`, if any.
    pub(super) fn per_name_at(&self, parent: u64, name: &Name) -> Option<u64> {
        if self.next_per_name == PER_NAME_BASE {
            // None ever made (the common case): no key to build.
            return None;
        }
        let id = *self.dentries.get(&(parent, name.to_owned()))?;
        self.nodes
            .get(&id)
            .is_some_and(|n| n.per_name && !n.dead)
            .then_some(id)
    }

    /// The per-name node for `(parent, name)`: the one that serves it
    /// already, else a new one (holding no lookup yet).
    pub(super) fn per_name(&mut self, parent: u64, name: &Name) -> u64 {
        if let Some(id) = self.per_name_at(parent, name) {
            return id;
        }
        let id = self.next_per_name;
        self.next_per_name += 1;
        self.nodes.insert(
            id,
            Node {
                per_name: true,
                ..Node::default()
            },
        );
        self.learn(id, parent, name, false);
        id
    }

    /// The per-name node that serves the file the view numbers `ino`, if
    /// `link(2)` of one gave that file more names.
    pub(super) fn alias(&self, ino: u64) -> Option<u64> {
        self.aliases.get(&ino).copied()
    }

    /// Per-name node `id` now also serves the file the view numbers `ino`
    /// (a `link(2)` of it made one upper file of several names).
    pub(super) fn set_alias(&mut self, id: u64, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&id)
            && node.per_name
        {
            if let Some(old) = node.alias_of.replace(ino) {
                self.aliases.remove(&old);
            }
            self.aliases.insert(ino, id);
        }
    }

    /// The kernel forgets `count` lookups of node `id`.
    pub(super) fn forget(&mut self, id: u64, count: u64) {
        if id == ROOT_ID {
            return;
        }
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(count);
        self.drop_if_unused(id);
    }

    /// One more link names directory node `parent` as its parent.
    fn hold_parent(&mut self, parent: u64) {
        if parent != ROOT_ID {
            self.nodes.entry(parent).or_default().children += 1;
        }
    }

    /// One link less names `parent` as its parent.
    fn release_parent(&mut self, parent: u64) {
        if let Some(node) = self.nodes.get_mut(&parent) {
            node.children = node.children.saturating_sub(1);
            self.drop_if_unused(parent);
        }
    }

    /// Drops node `id` if nothing holds it (no lookup, handle or known
    /// child), and then the parents only it held.
    fn drop_if_unused(&mut self, id: u64) {
        let mut todo = vec![id];
        while let Some(id) = todo.pop() {
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            if node.lookups > 0 || !node.handles.is_empty() || node.children > 0 || id == ROOT_ID {
                continue;
            }
            let node = self.nodes.remove(&id).expect("present");
            if let Some(ino) = node.alias_of {
                self.aliases.remove(&ino);
            }
            for key in node.links {
                if self.dentries.get(&key) == Some(&id) {
                    self.dentries.remove(&key);
                }
                if let Some(parent) = self.nodes.get_mut(&key.0) {
                    parent.children = parent.children.saturating_sub(1);
                    todo.push(key.0);
                }
            }
        }
    }

    /// Handle `fh` was opened on node `id`.
    pub(super) fn opened(&mut self, id: u64, fh: u64) {
        self.nodes.entry(id).or_default().handles.push(fh);
    }

    /// Handle `fh` of node `id` was closed.
    pub(super) fn closed(&mut self, id: u64, fh: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.handles.retain(|h| *h != fh);
        }
        self.drop_if_unused(id);
    }

    /// An open handle on node `id`, if any.
    pub(super) fn any_handle(&self, id: u64) -> Option<u64> {
        self.nodes.get(&id).and_then(|n| n.handles.first().copied())
    }

    /// Drops link `(parent, name)` of node `id`. With no link left the node
    /// is gone (dead), unless `still_linked`: the file has other names
    /// the table has not learned (a later lookup finds the same file).
    fn unlink_from(&mut self, id: u64, parent: u64, name: &Name, still_linked: bool) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let before = node.links.len();
        node.links
            .retain(|(p, n)| !(*p == parent && n.as_name() == name));
        let removed = before != node.links.len();
        if node.links.is_empty() && (!still_linked || node.per_name) {
            node.dead = true;
            // Its file is gone: a new file may take the number.
            if let Some(ino) = node.alias_of.take() {
                self.aliases.remove(&ino);
            }
        }
        if removed {
            self.release_parent(parent);
        }
    }

    /// `(parent, name)` was removed (unlink, rmdir, replaced by a rename);
    /// `still_linked`: the object had other names (a file with `nlink`
    /// over 1 before).
    pub(super) fn remove_name(&mut self, parent: u64, name: &Name, still_linked: bool) {
        if let Some(id) = self.dentries.remove(&(parent, name.to_owned())) {
            self.unlink_from(id, parent, name, still_linked);
        }
    }

    /// `(parent, name)` was renamed to `(new_parent, new_name)`, replacing
    /// what was there (`still_linked` as for [`Inodes::remove_name`]).
    pub(super) fn rename(
        &mut self,
        parent: u64,
        name: &Name,
        new_parent: u64,
        new_name: &Name,
        still_linked: bool,
    ) {
        self.remove_name(new_parent, new_name, still_linked);
        if let Some(id) = self.dentries.remove(&(parent, name.to_owned())) {
            self.relink(
                id,
                &(parent, name.to_owned()),
                &(new_parent, new_name.to_owned()),
            );
            if let Some(node) = self.nodes.get_mut(&id) {
                node.dead = false;
            }
        }
    }

    /// Moves link `from` of node `id` to `to`, holding the new parent
    /// before releasing the old.
    fn relink(&mut self, id: u64, from: &(u64, NameBuf), to: &(u64, NameBuf)) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let mut moved = 0;
        for link in &mut node.links {
            if link == from {
                *link = to.clone();
                moved += 1;
            }
        }
        self.dentries.insert(to.clone(), id);
        for _ in 0..moved {
            self.hold_parent(to.0);
            self.release_parent(from.0);
        }
    }

    /// The names `(a_parent, a)` and `(b_parent, b)` were exchanged.
    pub(super) fn exchange(&mut self, a_parent: u64, a: &Name, b_parent: u64, b: &Name) {
        let ka = (a_parent, a.to_owned());
        let kb = (b_parent, b.to_owned());
        let ida = self.dentries.remove(&ka);
        let idb = self.dentries.remove(&kb);
        // Both moves first hold their new parents: neither parent can be
        // dropped in between.
        if let Some(id) = ida {
            self.hold_parent(kb.0);
            self.relink_in_place(id, &ka, &kb);
        }
        if let Some(id) = idb {
            self.hold_parent(ka.0);
            self.relink_in_place(id, &kb, &ka);
        }
        if ida.is_some() {
            self.release_parent(ka.0);
        }
        if idb.is_some() {
            self.release_parent(kb.0);
        }
    }

    /// Renames link `from` of node `id` to `to` (parents counted by the
    /// caller) and records the dentry.
    fn relink_in_place(&mut self, id: u64, from: &(u64, NameBuf), to: &(u64, NameBuf)) {
        if let Some(node) = self.nodes.get_mut(&id) {
            for link in &mut node.links {
                if link == from {
                    *link = to.clone();
                }
            }
        }
        self.dentries.insert(to.clone(), id);
    }

    /// The merged path of node `id` (absolute), through the first of its
    /// links whose directories lead up to the root.
    ///
    /// # Errors
    /// `ENOENT` for an orphan or a node the table does not know.
    pub(super) fn path(&self, id: u64, op: Operation) -> Result<Vec<u8>> {
        if id == ROOT_ID {
            return Ok(b"/".to_vec());
        }
        let links = self.nodes.get(&id).map_or(&[][..], |n| n.links.as_slice());
        let mut last = None;
        for (parent, name) in links {
            match self.dir_path(*parent, id, op) {
                Ok(mut path) => {
                    if path != b"/" {
                        path.push(b'/');
                    }
                    path.extend_from_slice(name.as_name().as_bytes());
                    return Ok(path);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(ErrorKind::NotFound, op, format!("(node {id})").as_str())
                .with_detail("the object has no name left in the merged tree")
        }))
    }

    /// The path of directory node `dir` (its one link up to the root), for
    /// the path of node `of`.
    fn dir_path(&self, dir: u64, of: u64, op: Operation) -> Result<Vec<u8>> {
        let mut names: Vec<&NameBuf> = Vec::new();
        let mut at = dir;
        while at != ROOT_ID {
            let Some((parent, name)) = self.nodes.get(&at).and_then(|n| n.links.first()) else {
                return Err(
                    Error::new(ErrorKind::NotFound, op, format!("(node {of})").as_str())
                        .with_detail("a directory above the object has no name left"),
                );
            };
            names.push(name);
            at = *parent;
            if names.len() > 4096 {
                return Err(Error::new(
                    ErrorKind::FilesystemLoop,
                    op,
                    format!("(node {of})").as_str(),
                ));
            }
        }
        let mut path = Vec::new();
        for name in names.iter().rev() {
            path.push(b'/');
            path.extend_from_slice(name.as_name().as_bytes());
        }
        if path.is_empty() {
            path.push(b'/');
        }
        Ok(path)
    }

    /// The path of `name` in directory node `parent`.
    ///
    /// # Errors
    /// As [`Inodes::path`].
    pub(super) fn child_path(&self, parent: u64, name: &Name, op: Operation) -> Result<Vec<u8>> {
        let mut path = self.path(parent, op)?;
        if path != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        Ok(path)
    }

    /// The parent node of directory node `id` (the root for the root).
    pub(super) fn parent(&self, id: u64) -> u64 {
        self.nodes
            .get(&id)
            .and_then(|n| n.links.first())
            .map_or(ROOT_ID, |(p, _)| *p)
    }

    /// How many nodes the table holds.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the table holds node `id`.
    pub(super) fn knows(&self, id: u64) -> bool {
        self.nodes.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> &Name {
        Name::new(s)
    }

    #[test]
    fn root_and_one_swap_numbers() {
        assert_eq!(node_id(77, 77), 1);
        assert_eq!(node_id(1, 77), 77);
        assert_eq!(node_id(5, 77), 5);
        for ino in [1, 5, 77] {
            assert_eq!(node_id(node_id(ino, 77), 77), ino);
        }
    }

    #[test]
    fn paths_follow_renames_of_parents() {
        let mut t = Inodes::default();
        t.learn(10, ROOT_ID, n("a"), true);
        t.learn(11, 10, n("f"), true);
        assert_eq!(t.path(11, Operation::Lookup).unwrap(), b"/a/f");
        t.rename(ROOT_ID, n("a"), ROOT_ID, n("b"), false);
        assert_eq!(t.path(11, Operation::Lookup).unwrap(), b"/b/f");
        assert_eq!(
            t.child_path(10, n("g"), Operation::Lookup).unwrap(),
            b"/b/g"
        );
    }

    #[test]
    fn lookups_are_counted_and_forgotten_exactly() {
        let mut t = Inodes::default();
        t.learn(10, ROOT_ID, n("a"), true);
        t.learn(10, ROOT_ID, n("a"), true);
        t.forget(10, 1);
        assert_eq!(t.len(), 1);
        t.forget(10, 1);
        assert_eq!(t.len(), 0);
        assert!(t.path(10, Operation::Lookup).is_err());
    }

    #[test]
    fn an_open_orphan_stays_until_closed() {
        let mut t = Inodes::default();
        t.learn(10, ROOT_ID, n("a"), true);
        t.opened(10, 3);
        t.remove_name(ROOT_ID, n("a"), false);
        t.forget(10, 1);
        assert_eq!(t.any_handle(10), Some(3));
        assert_eq!(
            t.path(10, Operation::Lookup).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        t.closed(10, 3);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn hard_links_keep_the_other_name() {
        let mut t = Inodes::default();
        t.learn(10, ROOT_ID, n("a"), true);
        t.learn(10, ROOT_ID, n("b"), true);
        t.remove_name(ROOT_ID, n("a"), false);
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/b");
    }

    #[test]
    fn a_reused_number_gets_a_new_generation() {
        let mut t = Inodes::default();
        assert_eq!(t.learn(10, ROOT_ID, n("a"), true), 0);
        t.remove_name(ROOT_ID, n("a"), false);
        assert_eq!(t.learn(10, ROOT_ID, n("c"), true), 1);
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/c");
    }

    #[test]
    fn a_file_with_names_the_table_never_learned_stays_the_same_object() {
        let mut t = Inodes::default();
        t.learn(10, ROOT_ID, n("a"), true);
        t.remove_name(ROOT_ID, n("a"), true);
        // Another name of the same file: the same object, no new generation.
        assert_eq!(t.learn(10, ROOT_ID, n("b"), true), 0);
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/b");
        // Its last name goes: a new object may take the number.
        t.remove_name(ROOT_ID, n("b"), false);
        assert_eq!(t.learn(10, ROOT_ID, n("c"), true), 1);
    }

    #[test]
    fn a_directory_stays_while_a_child_of_it_is_known() {
        let mut t = Inodes::default();
        t.learn(20, ROOT_ID, n("d"), true);
        t.learn(21, ROOT_ID, n("e"), true);
        t.learn(10, 20, n("f"), true);
        t.learn(10, 21, n("g"), true);
        // The kernel forgets both directories (and keeps the file through
        // its dentry in `e`): `d` stays, as the file's first link needs it.
        t.forget(20, 1);
        t.forget(21, 1);
        assert_eq!(t.len(), 3);
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/d/f");
        // `d/f` goes: `d` goes with it, the file keeps `e/g`.
        t.remove_name(20, n("f"), true);
        assert_eq!(t.len(), 2);
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/e/g");
        t.forget(10, 2);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_renamed_directory_moves_its_hold() {
        let mut t = Inodes::default();
        t.learn(20, ROOT_ID, n("d"), true);
        t.learn(21, ROOT_ID, n("e"), true);
        t.learn(10, 20, n("f"), true);
        t.rename(20, n("f"), 21, n("f"), false);
        t.forget(20, 1);
        assert_eq!(t.len(), 2, "d is held by nothing now");
        t.forget(21, 1);
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/e/f");
        t.exchange(ROOT_ID, n("e"), ROOT_ID, n("x"));
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/x/f");
        t.forget(10, 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn per_name_nodes_serve_one_name_each() {
        let mut t = Inodes::default();
        let a = t.per_name(ROOT_ID, n("a"));
        let b = t.per_name(ROOT_ID, n("b"));
        assert!(a >= PER_NAME_BASE && b >= PER_NAME_BASE && a != b);
        assert_eq!(t.per_name(ROOT_ID, n("a")), a);
        t.learn(a, ROOT_ID, n("a"), true);
        assert_eq!(t.path(a, Operation::Lookup).unwrap(), b"/a");
        // Not handed out (a full readdirplus buffer): gone again.
        t.forget(b, 0);
        assert_eq!(t.len(), 1);
        t.set_alias(a, 77);
        assert_eq!(t.alias(77), Some(a));
        t.forget(a, 1);
        assert_eq!((t.len(), t.alias(77)), (0, None));
    }

    #[test]
    fn exchange_swaps_names() {
        let mut t = Inodes::default();
        t.learn(10, ROOT_ID, n("a"), true);
        t.learn(11, ROOT_ID, n("b"), true);
        t.exchange(ROOT_ID, n("a"), ROOT_ID, n("b"));
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/b");
        assert_eq!(t.path(11, Operation::Lookup).unwrap(), b"/a");
    }
}
