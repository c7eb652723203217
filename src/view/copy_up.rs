//! Copy-up: bringing an object from a lower layer into the upper before it
//! changes, parents first, with its metadata.
//!
//! A copied-up object keeps its mode (setuid included), owner, times and
//! extended attributes; a directory is copied alone (its children stay
//! below and keep showing through); a regular file takes its data along
//! (the backend decides how: `MemLayer` shares the buffers). The object
//! keeps the inode number it had below, as the kernel keeps `st_ino`,
//! unless copying it up broke a hard link.
//!
//! With [`HardLinkCopyUp::Keep`](super::HardLinkCopyUp::Keep) every other
//! name the view shows for the same lower inode is linked to the copy.

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::{Content, Entry, LayerMut, Redirect};
use crate::meta::FileType;
use crate::path::LayerPath;

use super::resolve::{Cursor, Res, State, UPPER};
use crate::merged::{HardLinkCopyUp, ViewOptions};

impl State {
    /// Copies up every directory from the root down to `path`, and `path`.
    pub fn copy_up(&mut self, path: &LayerPath, options: &ViewOptions) -> Result<()> {
        let r = self.copy_up_chain(path, options);
        if r.is_err() {
            // Some of the chain may be up already: drop the indexes rather
            // than trust them.
            self.clear_cache();
        }
        r
    }

    fn copy_up_chain(&mut self, path: &LayerPath, options: &ViewOptions) -> Result<()> {
        let mut at = LayerPath::root();
        for name in path.names() {
            at = at.join_unchecked(name);
            let res = self
                .res_at(&at)?
                .ok_or_else(|| Error::new(ErrorKind::NotFound, Operation::CopyUp, at.as_name()))?;
            if !res.in_upper() {
                self.copy_up_one(&at, &res, options)?;
            }
        }
        Ok(())
    }

    /// Runs `change` on the data of upper file `path`; if the upper refuses
    /// it as a metadata-only copy (`EPERM`), gives the copy its data from
    /// below first (the kernel's data copy-up) and runs it again.
    pub fn changing_data<T>(
        &mut self,
        path: &LayerPath,
        mut change: impl FnMut(&mut dyn LayerMut) -> Result<T>,
    ) -> Result<T> {
        match change(&mut *self.upper) {
            Err(e) if e.kind() == ErrorKind::NotPermitted => {
                if self.fill_metacopy(path, true)? {
                    change(&mut *self.upper)
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    /// Gives upper file `path` its data if it is a metadata-only copy (all
    /// of them, or only those that find their data by path: a rename
    /// would lose it); whether it did.
    pub fn fill_metacopy(&mut self, path: &LayerPath, even_redirected: bool) -> Result<bool> {
        let Some(Entry::Node(node)) = self.upper.lookup(path)? else {
            return Ok(false);
        };
        let redirected = node.redirect.as_ref().is_some_and(Redirect::is_absolute);
        if !node.metacopy || (redirected && !even_redirected) {
            return Ok(false);
        }
        let (idx, dpath) = self.metacopy_data(UPPER, path, &node)?;
        let src = self.lowers[idx - 1].clone();
        self.upper.fill_metacopy(path, &*src, &dpath)?;
        Ok(true)
    }

    /// Copies up one object whose parent is already in the upper.
    fn copy_up_one(&mut self, path: &LayerPath, res: &Res, options: &ViewOptions) -> Result<()> {
        let (idx, lpath) = res.top();
        let lpath = lpath.clone();
        let node = self.node(res)?;
        let meta = node.meta.clone();
        let reframe = |e: Error| e.reframe(Operation::CopyUp, path.as_name());
        match meta.file_type {
            FileType::Dir => self.upper.create(path, &meta, Content::Dir),
            FileType::File => {
                // A metadata-only copy below: the data comes from where it
                // points.
                let (didx, dpath) = if node.metacopy {
                    self.metacopy_data(idx, &lpath, &node)?
                } else {
                    (idx, lpath.clone())
                };
                let src = self.lowers[didx - 1].clone();
                self.upper.copy_file(path, &meta, &*src, &dpath)
            }
            FileType::Symlink => {
                let target = self.layer(idx).read_link(&lpath)?;
                self.upper.create(path, &meta, Content::Symlink(target))
            }
            _ => self.upper.create(path, &meta, Content::Special),
        }
        .map_err(reframe)?;
        let upper_ino = match self.upper.lookup(path)? {
            Some(entry) => entry.node().map_or(0, |n| n.meta.ino),
            None => 0,
        };
        // The copy shows the inode number it had below, as the kernel's
        // does, except for a non-directory whose lower inode has other
        // names that stay behind (hard links broken by the copy-up): two
        // different files then share no number, as for the kernel with
        // `index=off` (tar, `rsync -H` and `cp -a` find links by inode).
        let linked_elsewhere = !meta.is_dir() && meta.nlink > 1;
        if !linked_elsewhere || options.hard_links == HardLinkCopyUp::Keep {
            let origin = self.merged_ino(idx, meta.ino);
            self.origins
                .insert((self.layer_ids[UPPER], upper_ino), origin);
        }
        if meta.file_type == FileType::File {
            self.follow_copy_up(idx, &lpath, meta.ino, options.hard_links, path)?;
        }
        let parent = path.parent().unwrap_or_default();
        let name = path.file_name().unwrap_or_default().to_owned();
        self.refresh(&parent, &name, false)?;
        if options.hard_links == HardLinkCopyUp::Keep && !meta.is_dir() && meta.nlink > 1 {
            self.link_other_names(idx, meta.ino, path, options)?;
        }
        Ok(())
    }

    /// After `copied` (lower inode `ino` of layer `idx`) was copied up,
    /// links every other name the view shows for that inode to the copy.
    fn link_other_names(
        &mut self,
        idx: usize,
        ino: u64,
        copied: &LayerPath,
        options: &ViewOptions,
    ) -> Result<()> {
        let mut names = Vec::new();
        let mut dirs = vec![self.root()];
        while let Some(dir) = dirs.pop() {
            for (name, res) in self.index(&dir)?.entries() {
                let path = dir.path.join_unchecked(name);
                if res.file_type.is_dir() {
                    dirs.push(Cursor {
                        path,
                        stack: res.stack.clone(),
                    });
                } else if res.top().0 == idx && self.node(&res)?.meta.ino == ino {
                    names.push(path);
                }
            }
        }
        for name in names {
            if &name == copied {
                continue;
            }
            let parent = name.parent().unwrap_or_default();
            self.copy_up(&parent, options)?;
            self.upper.hard_link(copied, &name)?;
            self.refresh(&parent, name.file_name().unwrap_or_default(), false)?;
        }
        Ok(())
    }
}
