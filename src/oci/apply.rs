//! What each entry of a layer tar means, decided once for every back end.
//!
//! The shape is containerd's `pkg/archive` apply loop: one function walks
//! the entries and decides what each one is (the root's attributes, an
//! AUFS bookkeeping file to skip, an opaque marker, a whiteout, a hard
//! link, an object that replaces or merges with what the layer holds),
//! and a back end does only the writing. Two back ends implement
//! [`ApplyTarget`]: import (a [`LayerMut`](crate::LayerMut), usually a
//! [`MemLayer`](crate::MemLayer); whiteouts stay whiteouts) and flatten (a
//! directory on disk, top layer first, whiteouts only hide).
//!
//! The rules, with the whiteout encoding (`.wh.` names, see
//! [`whiteout`](super::whiteout)) read here and nowhere else:
//! - The root of a layer (`./`) can only be a directory; its entry gives
//!   the root's attributes.
//! - Parent directories an entry implies are made by the back end
//!   ([`ApplyTarget::ensure_dir`]), never through a symlink or a file of
//!   this layer or below.
//! - `DIR/.wh..wh..opq` makes DIR opaque; `.wh.NAME` hides NAME in the
//!   layers *below* only: a directory NAME of this layer (before or after
//!   the whiteout) becomes opaque and keeps its entries, a non-directory
//!   of this layer already hides the name, else a whiteout is recorded.
//! - A directory over a directory of the same layer merges (the later
//!   attributes win); any other entry over something of the same layer
//!   replaces it, with everything below it. An object over a name this
//!   layer whited out is new (a directory is then opaque).
//! - Hard links resolve in this layer or below (the back end's job).
//! - Device and setuid policies, and overlay bookkeeping xattrs, are
//!   applied to every object the same way.

use super::import::{Counts, Policy, keep_device, object_meta};
use super::tar_read::{TarEntry, TarKind};
use super::whiteout::{TarName, classify};
use crate::error::{Error, ErrorKind, Result};
use crate::meta::Metadata;
use crate::path::LayerPath;

/// What a layer being applied holds at a path (from this layer's own
/// entries only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Nothing,
    Whiteout,
    Dir,
    NonDir,
}

/// A back end of the applier: it only writes what [`apply_entry`]
/// decided. `D` is how it receives a regular file's data.
pub(crate) trait ApplyTarget<D> {
    /// An error about `entry`, in the back end's framing.
    fn entry_error(&self, entry: &TarEntry, kind: ErrorKind, detail: &str) -> Error;
    /// An error of a shared helper (import's framing) in the back end's.
    fn reframe(&self, entry: &TarEntry, e: Error) -> Error;
    /// The device and setuid policies, and the counters.
    fn policies(&mut self) -> (Policy, Policy, &mut Counts);
    /// The root's attributes (a `./` entry).
    fn set_root(&mut self, meta: Metadata) -> Result<()>;
    /// Makes `dir` a directory of this layer, with its implied parents.
    fn ensure_dir(&mut self, dir: &LayerPath, entry: &TarEntry) -> Result<()>;
    /// What this layer holds at `path`.
    fn held(&mut self, path: &LayerPath, entry: &TarEntry) -> Result<Held>;
    /// Remembers that a whiteout of this layer named `path`.
    fn note_whited(&mut self, path: &LayerPath);
    /// Whether a whiteout of this layer named `path`.
    fn whited(&self, path: &LayerPath) -> bool;
    /// Makes directory `dir` of this layer (the root too) opaque.
    fn set_opaque(&mut self, dir: &LayerPath, entry: &TarEntry) -> Result<()>;
    /// Records a whiteout at `path`, where this layer holds nothing.
    fn whiteout(&mut self, path: &LayerPath, entry: &TarEntry) -> Result<()>;
    /// A directory entry over a directory of this layer: new attributes.
    fn merge_dir(&mut self, path: &LayerPath, meta: Metadata) -> Result<()>;
    /// Removes what this layer holds at `path`, with everything below it.
    fn replace(&mut self, path: &LayerPath, entry: &TarEntry) -> Result<()>;
    /// A hard link entry to `target`.
    fn hard_link(&mut self, entry: &TarEntry, target: &LayerPath) -> Result<()>;
    /// Creates the object of `entry` (not a hard link) where nothing of
    /// this layer is; `whited`: this layer deleted the name below first.
    fn create(
        &mut self,
        entry: &TarEntry,
        meta: Metadata,
        whited: bool,
        data: &mut D,
    ) -> Result<()>;
}

/// Applies one entry through `target`.
pub(crate) fn apply_entry<D, T: ApplyTarget<D> + ?Sized>(
    target: &mut T,
    entry: &TarEntry,
    data: &mut D,
) -> Result<()> {
    let Some(name) = entry.path.file_name() else {
        if entry.kind != TarKind::Dir {
            return Err(target.entry_error(
                entry,
                ErrorKind::InvalidInput,
                "the root of a layer can only be a directory",
            ));
        }
        let (_, setuid, counts) = target.policies();
        let meta = object_meta(entry, setuid, counts).map_err(|e| target.reframe(entry, e))?;
        return target.set_root(meta);
    };
    let parent = entry.path.parent().unwrap_or_else(LayerPath::root);
    match classify(name) {
        Err(why) => Err(target.entry_error(entry, ErrorKind::InvalidInput, why)),
        Ok(TarName::AufsMeta) => {
            target.policies().2.aufs_skipped += 1;
            Ok(())
        }
        Ok(TarName::Opaque) => {
            target.policies().2.opaque_markers += 1;
            target.ensure_dir(&parent, entry)?;
            target.set_opaque(&parent, entry)
        }
        Ok(TarName::Whiteout(name)) => {
            target.policies().2.whiteouts += 1;
            target.ensure_dir(&parent, entry)?;
            let path = parent.join(name).map_err(|e| target.reframe(entry, e))?;
            target.note_whited(&path);
            match target.held(&path, entry)? {
                Held::Dir => target.set_opaque(&path, entry),
                // A non-directory of this layer hides the name below by
                // itself; a second whiteout changes nothing.
                Held::NonDir | Held::Whiteout => Ok(()),
                Held::Nothing => target.whiteout(&path, entry),
            }
        }
        Ok(TarName::Plain(_)) => {
            target.ensure_dir(&parent, entry)?;
            apply_object(target, entry, data)
        }
    }
}

fn apply_object<D, T: ApplyTarget<D> + ?Sized>(
    target: &mut T,
    entry: &TarEntry,
    data: &mut D,
) -> Result<()> {
    let (devices, setuid, counts) = target.policies();
    let keep = keep_device(entry, devices, counts);
    if !keep.map_err(|e| target.reframe(entry, e))? {
        return Ok(());
    }
    if let TarKind::HardLink(link) = &entry.kind {
        target.policies().2.hard_links += 1;
        return target.hard_link(entry, link);
    }
    let counts = target.policies().2;
    let meta = object_meta(entry, setuid, counts).map_err(|e| target.reframe(entry, e))?;
    let path = &entry.path;
    let held = target.held(path, entry)?;
    let whited = target.whited(path) || held == Held::Whiteout;
    match held {
        Held::Dir if entry.kind == TarKind::Dir => return target.merge_dir(path, meta),
        Held::Dir | Held::NonDir => target.replace(path, entry)?,
        Held::Whiteout | Held::Nothing => {}
    }
    target.create(entry, meta, whited, data)
}
