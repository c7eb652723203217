//! What each entry of a layer tar means, decided once for every back end.
//!
//! The shape is containerd's `pkg/archive` apply loop: one function walks
//! the entries and decides what each one is (the root's attributes, an
//! AUFS bookkeeping file to skip, an opaque marker, a whiteout, a hard
//! link, an object that replaces or merges with what the layer holds, the
//! parent directories it implies), and a back end does only the writing.
//! Two back ends implement [`ApplyTarget`]: import (a
//! [`LayerMut`](crate::LayerMut), usually a [`MemLayer`](crate::MemLayer);
//! whiteouts stay whiteouts) and flatten (a directory on disk, top layer
//! first, whiteouts only hide).
//!
//! The rules, with the whiteout encoding (`.wh.` names, see
//! [`whiteout`](crate::oci::tar::whiteout)) read here and nowhere else:
//! - The root of a layer (`./`) can only be a directory; its entry gives
//!   the root's attributes.
//! - Parent directories an entry implies are made in this layer, never
//!   through a symlink or file: a non-directory of this layer on the way
//!   is refused (`ENOTDIR`); a name this layer whited out becomes a new,
//!   opaque directory with the default attributes (mode `0755`, owner
//!   root, time 0); under a directory this layer made opaque a new one
//!   has the default attributes; elsewhere it takes the attributes of the
//!   directory the layers below show there (as the kernel copies a parent
//!   up), the defaults where they show nothing, and a non-directory there
//!   is refused (`ENOTDIR`).
//! - `DIR/.wh..wh..opq` makes DIR opaque; `.wh.NAME` hides NAME in the
//!   layers *below* only: a directory NAME of this layer (before or after
//!   the whiteout) becomes opaque and keeps its entries, a non-directory
//!   of this layer already hides the name, else a whiteout is recorded.
//! - A directory over a directory of the same layer merges (the later
//!   attributes win); any other entry over something of the same layer
//!   replaces it, with everything below it. An object over a name this
//!   layer whited out is new (a directory is then opaque).
//! - A hard link resolves to a non-directory of this layer, or to one the
//!   layers below show at that path (this layer's own whiteouts and
//!   opaque directories do not hide it: they act below), which is then
//!   copied into this layer first, as `link()` on an overlay mount copies
//!   up. Its target's parents are checked in this layer first, then the
//!   target below, then the parents below: a target under a symlink of a
//!   layer below is not there (`ENOENT`).
//! - Device and setuid policies, and overlay bookkeeping xattrs, are
//!   applied to every object the same way.
//!
//! # What the layers below show
//!
//! Two rules need the layers below this one: an implied directory's
//! attributes and a hard link's target. Import has the layers below when
//! it applies a layer and answers at once. Flatten reads the top layer
//! first, so when it applies a layer the layers below are still to come:
//! it answers with a search ([`Answer::Search`]) that moves down with its
//! writer, and applies the same rule ([`implied_dir_meta`],
//! [`link_target_below`]) when a layer below answers. Flatten starts the
//! search for a hard link's target before those of its parents, so that
//! its refusals come in the order import gives them, without a pass over
//! the layers below before writing.

use crate::error::{Error, ErrorKind, Result};
use crate::meta::{FileType, Metadata};
use crate::oci::apply::import::{Counts, Policy, keep_device, object_meta};
use crate::oci::tar::read::{TarEntry, TarKind};
use crate::oci::tar::whiteout::{TarName, classify};
use crate::path::LayerPath;

/// What a layer being applied holds at a path (from this layer's own
/// entries only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Nothing,
    Whiteout,
    /// A directory (the root too); `opaque`: the layers below do not show
    /// through it.
    Dir {
        opaque: bool,
    },
    /// Anything but a directory, of this type.
    NonDir(FileType),
}

/// Which question a back end is asked about the layers below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// The attributes of a directory this layer implies.
    ImpliedDir,
    /// The object a hard link resolves to.
    LinkTarget,
}

/// An answer about the layers below: known now, or found later by a
/// search the back end runs (`S` identifies it).
#[derive(Debug)]
pub(crate) enum Answer<T, S> {
    Now(T),
    Search(S),
}

/// A rule's refusal, framed by the back end that applies the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) kind: ErrorKind,
    pub(crate) detail: String,
}

impl Refusal {
    fn new(kind: ErrorKind, detail: String) -> Refusal {
        Refusal { kind, detail }
    }
}

/// The attributes of the directory a layer implies at `dir`, from what
/// the layers below show there (`found`, looked up without following a
/// symlink): its attributes, the defaults where nothing shows.
///
/// # Errors
/// `ENOTDIR` where they show a non-directory.
pub(crate) fn implied_dir_meta(
    dir: &LayerPath,
    found: Option<Metadata>,
) -> Result<Metadata, Refusal> {
    match found {
        Some(meta) if meta.is_dir() => Ok(meta),
        Some(meta) => Err(Refusal::new(
            ErrorKind::NotADirectory,
            format!(
                "its parent `{dir}` is a {} in a lower layer (the layer must replace it with a directory entry first)",
                type_name(meta.file_type)
            ),
        )),
        None => Ok(Metadata::new(FileType::Dir)),
    }
}

/// The object a hard link to `link` resolves to in the layers below,
/// from what they show there (`found`, looked up without following a
/// symlink).
///
/// # Errors
/// `ENOENT` where nothing shows, `EPERM` for a directory.
pub(crate) fn link_target_below(
    link: &LayerPath,
    found: Option<Metadata>,
) -> Result<Metadata, Refusal> {
    match found {
        None => Err(Refusal::new(
            ErrorKind::NotFound,
            format!("hard link target `{link}` is neither in this layer nor below it"),
        )),
        Some(meta) if meta.is_dir() => Err(link_to_dir(link)),
        Some(meta) => Ok(meta),
    }
}

fn link_to_dir(link: &LayerPath) -> Refusal {
    Refusal::new(
        ErrorKind::NotPermitted,
        format!("hard link target `{link}` is a directory"),
    )
}

/// A back end of the applier: it only writes what [`apply_entry`]
/// decided. `D` is how it receives a regular file's data.
pub(crate) trait ApplyTarget<D> {
    /// How the back end names a search of the layers below it has started
    /// (see [`Answer`]).
    type Search;

    /// An error about `entry`, in the back end's framing.
    fn entry_error(&self, entry: &TarEntry, kind: ErrorKind, detail: &str) -> Error;
    /// An error of a shared helper (import's framing) in the back end's.
    fn reframe(&self, entry: &TarEntry, e: Error) -> Error;
    /// The device and setuid policies, and the counters.
    fn policies(&mut self) -> (Policy, Policy, &mut Counts);
    /// The root's attributes (a `./` entry).
    fn set_root(&mut self, meta: Metadata) -> Result<()>;
    /// What this layer holds at `path` (the root too).
    fn held(&mut self, path: &LayerPath, entry: &TarEntry) -> Result<Held>;
    /// What the layers below show at `path`, looked up without following
    /// any symlink: now, or a search that will find it. The rule for the
    /// answer is `ask`'s ([`implied_dir_meta`], [`link_target_below`]).
    fn below(
        &mut self,
        path: &LayerPath,
        ask: Ask,
        entry: &TarEntry,
    ) -> Result<Answer<Option<Metadata>, Self::Search>>;
    /// Makes `dir` (whose parent this layer holds as a directory) a
    /// directory of this layer that no entry lists, with the attributes
    /// `meta` (or those its search finds); `opaque`: the layers below do
    /// not show through it.
    fn implied_dir(
        &mut self,
        dir: &LayerPath,
        meta: Answer<Metadata, Self::Search>,
        opaque: bool,
        entry: &TarEntry,
    ) -> Result<()>;
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
    /// Brings the non-directory the layers below show at `link` into this
    /// layer (its parents are there): `found` its attributes, or the
    /// search that finds it.
    fn copy_up(
        &mut self,
        link: &LayerPath,
        found: Answer<Metadata, Self::Search>,
        entry: &TarEntry,
    ) -> Result<()>;
    /// Gives the non-directory this layer holds at `link` the entry's name
    /// too (where this layer now holds nothing).
    fn link(&mut self, entry: &TarEntry, link: &LayerPath) -> Result<()>;
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
    let Some(name) = name.to_str() else {
        return Err(target.entry_error(entry, ErrorKind::InvalidInput, "the name is not UTF-8"));
    };
    match classify(name) {
        Err(why) => Err(target.entry_error(entry, ErrorKind::InvalidInput, why)),
        Ok(TarName::AufsMeta) => {
            target.policies().2.aufs_skipped += 1;
            Ok(())
        }
        Ok(TarName::Opaque) => {
            target.policies().2.opaque_markers += 1;
            ensure_dir(target, &parent, entry)?;
            target.set_opaque(&parent, entry)
        }
        Ok(TarName::Whiteout(name)) => {
            target.policies().2.whiteouts += 1;
            ensure_dir(target, &parent, entry)?;
            let path = parent.join(name).map_err(|e| target.reframe(entry, e))?;
            target.note_whited(&path);
            match target.held(&path, entry)? {
                Held::Dir { .. } => target.set_opaque(&path, entry),
                // A non-directory of this layer hides the name below by
                // itself; a second whiteout changes nothing.
                Held::NonDir(_) | Held::Whiteout => Ok(()),
                Held::Nothing => target.whiteout(&path, entry),
            }
        }
        Ok(TarName::Plain(_)) => {
            ensure_dir(target, &parent, entry)?;
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
        return apply_hard_link(target, entry, link);
    }
    let counts = target.policies().2;
    let meta = object_meta(entry, setuid, counts).map_err(|e| target.reframe(entry, e))?;
    let path = &entry.path;
    let held = target.held(path, entry)?;
    let whited = target.whited(path) || held == Held::Whiteout;
    match held {
        Held::Dir { .. } if entry.kind == TarKind::Dir => return target.merge_dir(path, meta),
        Held::Dir { .. } | Held::NonDir(_) => target.replace(path, entry)?,
        Held::Whiteout | Held::Nothing => {}
    }
    target.create(entry, meta, whited, data)
}

fn refuse<D, T: ApplyTarget<D> + ?Sized>(target: &T, entry: &TarEntry, r: Refusal) -> Error {
    target.entry_error(entry, r.kind, &r.detail)
}

fn apply_hard_link<D, T: ApplyTarget<D> + ?Sized>(
    target: &mut T,
    entry: &TarEntry,
    link: &LayerPath,
) -> Result<()> {
    let path = &entry.path;
    if link == path {
        return Err(target.entry_error(entry, ErrorKind::InvalidInput, "a hard link to itself"));
    }
    match target.held(link, entry)? {
        Held::Dir { .. } => return Err(refuse(target, entry, link_to_dir(link))),
        Held::Whiteout => {
            return Err(target.entry_error(
                entry,
                ErrorKind::NotFound,
                &format!("hard link target `{link}` is deleted by this layer"),
            ));
        }
        Held::NonDir(_) => {}
        Held::Nothing => {
            let parents = plan_parents(target, &link.parent().unwrap_or_default(), entry)?;
            let found = match target.below(link, Ask::LinkTarget, entry)? {
                Answer::Now(found) => Answer::Now(
                    link_target_below(link, found).map_err(|r| refuse(target, entry, r))?,
                ),
                Answer::Search(search) => Answer::Search(search),
            };
            make_parents(target, parents, entry)?;
            target.copy_up(link, found, entry)?;
        }
    }
    if let Held::Dir { .. } | Held::NonDir(_) = target.held(path, entry)? {
        target.replace(path, entry)?;
    }
    // Replacing this entry's path may have removed the target with it.
    if !matches!(target.held(link, entry)?, Held::NonDir(_)) {
        return Err(refuse(target, entry, link_gone(link)));
    }
    target.link(entry, link)
}

fn link_gone(link: &LayerPath) -> Refusal {
    Refusal::new(
        ErrorKind::NotFound,
        format!("hard link target `{link}` is removed by this entry"),
    )
}

/// The parent directories an entry implies, as this layer answers them.
struct Parents {
    /// A name this layer whited out, to become a new, opaque directory.
    reused: Option<LayerPath>,
    /// Directories this layer does not hold, top first.
    missing: Vec<LayerPath>,
    /// Whether the layers below are hidden there (an opaque directory of
    /// this layer above them).
    closed: bool,
}

/// Makes `dir` a directory of this layer, with its implied parents.
fn ensure_dir<D, T: ApplyTarget<D> + ?Sized>(
    target: &mut T,
    dir: &LayerPath,
    entry: &TarEntry,
) -> Result<()> {
    let parents = plan_parents(target, dir, entry)?;
    make_parents(target, parents, entry)
}

/// What this layer says about the directories `dir` needs (nothing is
/// made yet).
fn plan_parents<D, T: ApplyTarget<D> + ?Sized>(
    target: &mut T,
    dir: &LayerPath,
    entry: &TarEntry,
) -> Result<Parents> {
    let mut missing = Vec::new();
    let mut reused = None;
    let mut cur = dir.clone();
    while !cur.is_root() {
        match target.held(&cur, entry)? {
            Held::Dir { .. } => break,
            Held::NonDir(t) => {
                return Err(target.entry_error(
                    entry,
                    ErrorKind::NotADirectory,
                    &format!("its parent `{cur}` is a {} in this layer", type_name(t)),
                ));
            }
            Held::Whiteout => {
                // Deleted below and used again by this layer.
                reused = Some(cur.clone());
                break;
            }
            Held::Nothing => {
                let parent = cur.parent().unwrap_or_default();
                missing.push(std::mem::replace(&mut cur, parent));
            }
        }
    }
    missing.reverse();
    let closed =
        !missing.is_empty() && (reused.is_some() || opaque_at_or_above(target, &cur, entry)?);
    Ok(Parents {
        reused,
        missing,
        closed,
    })
}

/// Whether `dir` or a directory above it (the root too) is opaque in
/// this layer.
fn opaque_at_or_above<D, T: ApplyTarget<D> + ?Sized>(
    target: &mut T,
    dir: &LayerPath,
    entry: &TarEntry,
) -> Result<bool> {
    let mut cur = Some(dir.clone());
    while let Some(d) = cur {
        if target.held(&d, entry)? == (Held::Dir { opaque: true }) {
            return Ok(true);
        }
        cur = d.parent();
    }
    Ok(false)
}

fn make_parents<D, T: ApplyTarget<D> + ?Sized>(
    target: &mut T,
    parents: Parents,
    entry: &TarEntry,
) -> Result<()> {
    if let Some(dir) = &parents.reused {
        let meta = Answer::Now(Metadata::new(FileType::Dir));
        target.implied_dir(dir, meta, true, entry)?;
    }
    for dir in &parents.missing {
        // Under a directory this layer made opaque nothing below shows:
        // the implied directory is a new one.
        let meta = if parents.closed {
            Answer::Now(Metadata::new(FileType::Dir))
        } else {
            match target.below(dir, Ask::ImpliedDir, entry)? {
                Answer::Now(found) => {
                    Answer::Now(implied_dir_meta(dir, found).map_err(|r| refuse(target, entry, r))?)
                }
                Answer::Search(search) => Answer::Search(search),
            }
        };
        target.implied_dir(dir, meta, false, entry)?;
    }
    Ok(())
}

/// How a message names a type of object.
pub(crate) fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Dir => "directory",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
    }
}
