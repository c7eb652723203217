//! The node table: which FUSE node ids the kernel knows, how many lookups
//! it holds on each, and where each node is in the merged tree (its parent
//! node and name; a file with hard links has several).
//!
//! The view is addressed by path, the kernel by node id: a node's path is
//! found by walking its first link up to the root. Renames, unlinks and
//! rmdirs move or drop links; a node whose last link is gone is an orphan
//! that lives on while the kernel holds a lookup or a handle is open on
//! it. Lookup counts are exact: every reply that hands the kernel a node
//! (lookup, create, mknod, mkdir, symlink, link, each readdirplus entry but
//! `.` and `..`) adds one, and `forget` takes away what the kernel says.

use std::collections::HashMap;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::path::{Name, NameBuf};

/// The kernel's id of the root directory.
pub(super) const ROOT_ID: u64 = 1;

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
    /// Bumped when a new object takes the number of a removed one.
    generation: u64,
    /// Its last link was removed: the next lookup that finds the number
    /// finds a new object (filesystems reuse inode numbers).
    dead: bool,
}

/// The table (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Inodes {
    nodes: HashMap<u64, Node>,
    /// (parent, name) -> node id.
    dentries: HashMap<(u64, NameBuf), u64>,
}

impl Inodes {
    /// A node has been handed to the kernel under `(parent, name)`
    /// (`counted`: the reply takes a lookup). Returns its generation.
    pub(super) fn learn(&mut self, id: u64, parent: u64, name: &Name, counted: bool) -> u64 {
        let key = (parent, name.to_owned());
        if let Some(old) = self.dentries.get(&key).copied()
            && old != id
        {
            self.unlink_from(old, parent, name);
        }
        let node = self.nodes.entry(id).or_default();
        if node.dead {
            node.dead = false;
            node.generation += 1;
            node.links.clear();
        }
        if counted {
            node.lookups += 1;
        }
        if !node.links.iter().any(|(p, n)| *p == parent && n == &key.1) {
            node.links.push(key.clone());
        }
        self.dentries.insert(key, id);
        node.generation
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

    fn drop_if_unused(&mut self, id: u64) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.lookups > 0 || !node.handles.is_empty() || id == ROOT_ID {
            return;
        }
        let node = self.nodes.remove(&id).expect("present");
        for key in node.links {
            if self.dentries.get(&key) == Some(&id) {
                self.dentries.remove(&key);
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

    fn unlink_from(&mut self, id: u64, parent: u64, name: &Name) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.links
                .retain(|(p, n)| !(*p == parent && n.as_name() == name));
            if node.links.is_empty() {
                node.dead = true;
            }
        }
    }

    /// `(parent, name)` was removed (unlink, rmdir, replaced by a rename).
    pub(super) fn remove_name(&mut self, parent: u64, name: &Name) {
        if let Some(id) = self.dentries.remove(&(parent, name.to_owned())) {
            self.unlink_from(id, parent, name);
        }
    }

    /// `(parent, name)` was renamed to `(new_parent, new_name)`, replacing
    /// what was there.
    pub(super) fn rename(&mut self, parent: u64, name: &Name, new_parent: u64, new_name: &Name) {
        self.remove_name(new_parent, new_name);
        if let Some(id) = self.dentries.remove(&(parent, name.to_owned())) {
            if let Some(node) = self.nodes.get_mut(&id) {
                for link in &mut node.links {
                    if link.0 == parent && link.1.as_name() == name {
                        *link = (new_parent, new_name.to_owned());
                    }
                }
                node.dead = false;
            }
            self.dentries.insert((new_parent, new_name.to_owned()), id);
        }
    }

    /// The names `(a_parent, a)` and `(b_parent, b)` were exchanged.
    pub(super) fn exchange(&mut self, a_parent: u64, a: &Name, b_parent: u64, b: &Name) {
        let ka = (a_parent, a.to_owned());
        let kb = (b_parent, b.to_owned());
        let ida = self.dentries.remove(&ka);
        let idb = self.dentries.remove(&kb);
        let mut relink = |id: Option<u64>, from: &(u64, NameBuf), to: &(u64, NameBuf)| {
            if let Some(id) = id {
                if let Some(node) = self.nodes.get_mut(&id) {
                    for link in &mut node.links {
                        if link == from {
                            *link = to.clone();
                        }
                    }
                }
                self.dentries.insert(to.clone(), id);
            }
        };
        relink(ida, &ka, &kb);
        relink(idb, &kb, &ka);
    }

    /// The merged path of node `id` (absolute), from its first link up.
    ///
    /// # Errors
    /// `ENOENT` for an orphan or a node the table does not know.
    pub(super) fn path(&self, id: u64, op: Operation) -> Result<Vec<u8>> {
        let mut names: Vec<&NameBuf> = Vec::new();
        let mut at = id;
        while at != ROOT_ID {
            let Some((parent, name)) = self.nodes.get(&at).and_then(|n| n.links.first()) else {
                return Err(
                    Error::new(ErrorKind::NotFound, op, format!("(node {id})").as_str())
                        .with_detail("the object has no name left in the merged tree"),
                );
            };
            names.push(name);
            at = *parent;
            if names.len() > 4096 {
                return Err(Error::new(
                    ErrorKind::FilesystemLoop,
                    op,
                    format!("(node {id})").as_str(),
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
        t.rename(ROOT_ID, n("a"), ROOT_ID, n("b"));
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
        t.remove_name(ROOT_ID, n("a"));
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
        t.remove_name(ROOT_ID, n("a"));
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/b");
    }

    #[test]
    fn a_reused_number_gets_a_new_generation() {
        let mut t = Inodes::default();
        assert_eq!(t.learn(10, ROOT_ID, n("a"), true), 0);
        t.remove_name(ROOT_ID, n("a"));
        assert_eq!(t.learn(10, ROOT_ID, n("c"), true), 1);
        assert_eq!(t.path(10, Operation::Lookup).unwrap(), b"/c");
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
