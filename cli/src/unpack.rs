//! `unpack`: an image's root filesystem written into a directory.
//!
//! The work is `ImageStore::flatten`: top layer first, so that nothing a
//! higher layer deletes or replaces is ever written, every path confined
//! beneath the target directory (no symlink the image holds is followed),
//! each layer checked against its digest and, unless the layout's layer
//! records say an earlier full read found it, its DiffID (the digest
//! alone fixes every byte written; see `ImageStore::flatten`). The first
//! unpack of a layout writes those records into it (best effort).
//!
//! The tree is written into a staging directory beside the target and
//! renamed into place only when every layer has been read and checked, so
//! a failed unpack leaves nothing behind: no partial tree, no bytes of a
//! tampered layer, no directory the command created.
//!
//! A rootless unpack (`--rootless`, and always without root) writes what
//! an unprivileged user can: files owned by the caller, no device nodes,
//! no `trusted.*` or `security.*` extended attributes. It then records
//! what it could not write in a [`RootlessMap`] beside the tree
//! (`DIR.layerstack-rootless.json`), written before the tree is moved into
//! place and removed again if that fails; `commit` maps it back. An unpack
//! that is not rootless removes a map an earlier one left there.

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::oci::metadata_path;
use layerstack::oci::{
    FlattenOptions, FlattenSummary, Image, ImageStore, ImportOptions, Owners, Policy, RootlessMap,
};
use layerstack::{
    Content, DirLayer, Error, ErrorKind, FileData, FileType, Layer, LayerMut, LayerPath,
    MergedView, Operation, Result,
};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags};

use crate::ls::open_view;

/// How an unpack writes the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Owners, device nodes and privileged extended attributes as the
    /// image has them (needs root).
    Root,
    /// Only what an unprivileged user can write; the rest is kept in a
    /// [`RootlessMap`] beside the tree, as `umoci unpack --rootless` does.
    Rootless,
}

impl Privilege {
    /// Rootless when asked, or when not root.
    pub fn new(rootless: bool) -> Privilege {
        if rootless || !rustix::process::geteuid().is_root() {
            Privilege::Rootless
        } else {
            Privilege::Root
        }
    }
}

/// A rootless unpack's map, and where it is.
type Recorded = Option<(Utf8PathBuf, RootlessMap)>;

/// What an unpack wrote.
pub struct Unpacked {
    pub summary: FlattenSummary,
    /// For a rootless unpack: where its map is, and the map.
    pub rootless: Recorded,
}

/// Writes the root filesystem of `image` into `dir` (see the module
/// documentation for `privilege`).
pub fn unpack_image(
    store: &ImageStore,
    image: &Image,
    dir: &Utf8Path,
    privilege: Privilege,
) -> Result<Unpacked> {
    let map_path = metadata_path(dir);
    let options = match privilege {
        Privilege::Root => FlattenOptions::new(),
        Privilege::Rootless => {
            // Before anything is written: a tree without room for its map
            // beside it is refused.
            map_path.clone()?;
            FlattenOptions::new()
                .owners(Owners::Ignore)
                .import(ImportOptions::new().devices(Policy::Strip))
                .privileged_xattrs(Policy::Strip)
        }
    };
    let record = |tree: &Utf8Path| -> Result<Recorded> {
        if privilege == Privilege::Root {
            return Ok(None);
        }
        let view = open_view(store, image)?;
        let map = RootlessMap::record(&view, tree)?.with_image(image.descriptor.digest.to_string());
        let at = map_path.clone()?;
        map.write(&at)?;
        Ok(Some((at, map)))
    };
    let unpacked = unpack_tree(store, image, dir, &options, record)?;
    if unpacked.rootless.is_none()
        && let Ok(stale) = &map_path
    {
        remove_stale_map(stale)?;
    }
    Ok(unpacked)
}

/// Removes the map an earlier rootless unpack left beside the target: it
/// describes a tree that is gone.
fn remove_stale_map(path: &Utf8Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {
            std::fs::remove_file(path).map_err(|e| Error::from_io(&e, Operation::RemoveFile, path))
        }
        _ => Ok(()),
    }
}

/// Flattens into a staging directory, `record`s the tree there and moves
/// it into place.
fn unpack_tree(
    store: &ImageStore,
    image: &Image,
    dir: &Utf8Path,
    options: &FlattenOptions,
    record: impl Fn(&Utf8Path) -> Result<Recorded>,
) -> Result<Unpacked> {
    let target_exists = match rustix::fs::statat(CWD, dir.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => true,
        Err(rustix::io::Errno::NOENT) => false,
        Err(e) => {
            return Err(Error::new(ErrorKind::Io, Operation::Flatten, dir)
                .with_detail(format!("cannot look at the target: {e}")));
        }
    };
    let Some(staging) = staging_path(dir) else {
        // No parent to stage in (`/`, `..`): write in place, as flatten
        // checks the target.
        let summary = store.flatten(image, dir, options)?;
        let rootless = record(dir)?;
        return Ok(Unpacked { summary, rootless });
    };
    if target_exists {
        // A symlink, a file or a non-empty directory is refused here, with
        // flatten's own message, before anything is written.
        check_target(dir, "target", "target directory")?;
    }
    let result = store
        .flatten(image, &staging, options)
        .and_then(|summary| Ok((summary, record(&staging)?)))
        .and_then(|(summary, rootless)| {
            // Onto an empty directory rename(2) replaces it; else the name
            // must still be free.
            let flags = if target_exists {
                RenameFlags::empty()
            } else {
                RenameFlags::NOREPLACE
            };
            let moved = rustix::fs::renameat_with(CWD, staging.as_str(), CWD, dir.as_str(), flags)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::from_errno(e.raw_os_error()).unwrap_or(ErrorKind::Io),
                        Operation::Flatten,
                        dir,
                    )
                    .with_detail(format!("cannot move the unpacked tree into place: {e}"))
                });
            if let (Err(_), Some((map, _))) = (&moved, &rootless) {
                let _ = std::fs::remove_file(map);
            }
            moved?;
            Ok(Unpacked { summary, rootless })
        });
    match result {
        Ok(unpacked) => Ok(unpacked),
        Err(e) => {
            // The staging directory is this command's business: name the
            // target the user gave.
            let e = if e.path().as_bytes() == staging.as_str().as_bytes() {
                e.reframe(Operation::Flatten, dir)
            } else {
                e
            };
            let left = match remove_tree(&staging) {
                Ok(()) if target_exists => format!("`{dir}` was left as it was"),
                Ok(()) => format!("nothing was written (`{dir}` was not created)"),
                Err(why) => format!(
                    "the partial tree in `{staging}` could not be removed ({why}); `{dir}` was not touched"
                ),
            };
            Err(e.clone().with_detail(format!("{}; {left}", e.cause())))
        }
    }
}

/// `.NAME.layerstack-unpack-PID` beside `dir`.
fn staging_path(dir: &Utf8Path) -> Option<Utf8PathBuf> {
    let name = dir.file_name()?;
    let parent = match dir.parent() {
        Some(p) if !p.as_str().is_empty() => p.to_owned(),
        _ => Utf8PathBuf::from("."),
    };
    Some(parent.join(format!(".{name}.layerstack-unpack-{}", std::process::id())))
}

/// `lstat` of `dir`, refused unless it is a directory (a symlink is
/// refused, never followed); `what` names it in the message.
fn stat_dir(dir: &Utf8Path, what: &str) -> Result<rustix::fs::Stat> {
    let st = rustix::fs::statat(CWD, dir.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
        Error::new(ErrorKind::Io, Operation::Flatten, dir).with_detail(e.to_string())
    })?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if kind == rustix::fs::FileType::Symlink {
        return Err(
            Error::new(ErrorKind::FilesystemLoop, Operation::Flatten, dir).with_detail(format!(
                "the {what} is a symlink (refused: it could lead anywhere)"
            )),
        );
    }
    if kind != rustix::fs::FileType::Directory {
        return Err(
            Error::new(ErrorKind::NotADirectory, Operation::Flatten, dir)
                .with_detail(format!("the {what} exists and is not a directory")),
        );
    }
    Ok(st)
}

/// Refuses what flatten would refuse as a target, with its message;
/// `what` names it and `as_dir` names it as a directory.
fn check_target(dir: &Utf8Path, what: &str, as_dir: &str) -> Result<()> {
    stat_dir(dir, what)?;
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| Error::from_io(&e, Operation::Flatten, dir))?;
    if entries.next().is_some() {
        return Err(
            Error::new(ErrorKind::DirectoryNotEmpty, Operation::Flatten, dir)
                .with_detail(format!("the {as_dir} is not empty")),
        );
    }
    Ok(())
}

/// Removes a tree this command wrote, never following a symlink; makes
/// directories writable first (an image may hold directories of mode 0).
fn remove_tree(path: &Utf8Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let child = Utf8PathBuf::from_path_buf(entry.path()).map_err(|p| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}", p.display()))
            });
            match child {
                Ok(child) => remove_tree(&child)?,
                // A name that is not UTF-8: remove it through std alone.
                Err(_) => {
                    let p = entry.path();
                    if entry.file_type()?.is_dir() {
                        std::fs::remove_dir_all(&p)?;
                    } else {
                        std::fs::remove_file(&p)?;
                    }
                }
            }
        }
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// What `unpack --path` wrote.
#[derive(Debug, Default)]
pub struct PathSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub bytes: u64,
}

/// Writes one path of `image` (a file, or a directory with everything
/// under it) into `dir` at the same place, with the directories above it,
/// read lazily: only the layers' indexes and the data of what is written
/// are read. Symlinks on the way are resolved inside the image; hard links
/// are written as separate files; owners are kept (so it needs root for
/// other owners, as unpack does).
pub fn unpack_path(
    store: &ImageStore,
    image: &Image,
    dir: &Utf8Path,
    path: &[u8],
) -> Result<PathSummary> {
    let view = open_view(store, image)?;
    // `etc/` (as a shell completes it) is `etc`.
    let mut trimmed: Vec<u8> = path.iter().copied().skip_while(|&b| b == b'/').collect();
    while trimmed.last() == Some(&b'/') {
        trimmed.pop();
    }
    let target = match LayerPath::new(&trimmed[..])? {
        p if p.is_root() => p,
        p => {
            let parent = p.parent().unwrap_or_else(LayerPath::root);
            let name = p.file_name().expect("not the root").to_owned();
            view_path_canonical(&view, &parent)?.join(&name)?
        }
    };
    view.symlink_metadata(at(&target))?;
    let (work, made) = work_dir(dir)?;
    // Removed after, if it is ours: made here, or locked by our layer. One
    // found there whose layer failed to open (busy: another process with
    // this id, in another pid namespace, is using it) is left alone.
    let mut ours = made;
    let copied = (|| {
        let mut upper = DirLayer::open_upper(dir, &work)?;
        ours = true;
        let mut summary = PathSummary::default();
        let mut ancestors = Vec::new();
        let mut cur = target.parent();
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            cur = p.parent();
            ancestors.push(p);
        }
        for p in ancestors.into_iter().rev() {
            if upper.lookup(&p)?.is_none() {
                upper.create(&p, &view.symlink_metadata(at(&p))?, Content::Dir)?;
                summary.dirs += 1;
            }
        }
        copy_tree(&view, &mut upper, &target, &mut summary)?;
        Ok(summary)
    })();
    if ours {
        let _ = std::fs::remove_dir_all(&work);
    }
    copied
}

/// The work directory of `unpack --path` into `dir`: beside it (`out/`
/// is `out`), this process's own, and made here, mode 0700, so that no
/// other user can read what passes through it or plant anything in it
/// (the layer moves every file into place through it). It is removed when
/// the unpack ends.
///
/// One already there is taken only if it is one this command made (a
/// leftover of an earlier process that had this id and was killed): a
/// directory of this user, of mode 0700, holding nothing but the layer's
/// `work`. Anything else is refused, before anything is written: a
/// symlink, a file, a directory of another owner or mode, or one that
/// holds something else.
fn work_dir(dir: &Utf8Path) -> Result<(Utf8PathBuf, bool)> {
    let base = match dir.as_str().trim_end_matches('/') {
        "" => dir.as_str(),
        b => b,
    };
    let work = Utf8PathBuf::from(format!("{base}.layerstack-work.{}", std::process::id()));
    let io = |e: rustix::io::Errno| {
        Error::new(
            ErrorKind::from_errno(e.raw_os_error()).unwrap_or(ErrorKind::Io),
            Operation::Flatten,
            work.as_str(),
        )
        .with_detail(format!("cannot make the work directory: {e}"))
    };
    match rustix::fs::mkdirat(CWD, work.as_str(), Mode::from_raw_mode(0o700)) {
        Ok(()) => {
            // The umask may have taken bits away; set on the directory
            // just made (never through a symlink).
            let chmod = rustix::fs::openat(
                CWD,
                work.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .and_then(|fd| rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)));
            if let Err(e) = chmod {
                let _ = rustix::fs::unlinkat(CWD, work.as_str(), AtFlags::REMOVEDIR);
                return Err(io(e));
            }
            Ok((work, true))
        }
        Err(rustix::io::Errno::EXIST) => {
            check_own_work_dir(&work)?;
            Ok((work, false))
        }
        Err(e) => Err(io(e)),
    }
}

/// Refuses `work`, found already there, unless this command made it: a
/// directory (not a symlink) of this user, of mode 0700, with nothing in it
/// but the layer's `work`.
fn check_own_work_dir(work: &Utf8Path) -> Result<()> {
    let refused = |kind: ErrorKind, detail: String| {
        Error::new(kind, Operation::Flatten, work).with_detail(detail)
    };
    let st = stat_dir(work, "work directory")?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(refused(
            ErrorKind::AlreadyExists,
            format!(
                "the work directory exists and is owned by uid {}, not by this user (uid {me}): \
                 refused, its owner could read or plant files in it",
                st.st_uid
            ),
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode != 0o700 {
        return Err(refused(
            ErrorKind::AlreadyExists,
            format!(
                "the work directory exists with mode {mode:04o}, not 0700 as unpack makes it: \
                 refused, another user could read or plant files in it"
            ),
        ));
    }
    let entries =
        std::fs::read_dir(work).map_err(|e| Error::from_io(&e, Operation::Flatten, work))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::from_io(&e, Operation::Flatten, work))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if entry.file_name() != "work" || !is_dir {
            return Err(refused(
                ErrorKind::DirectoryNotEmpty,
                "the work directory is not empty".to_owned(),
            ));
        }
    }
    Ok(())
}

fn view_path_canonical(view: &MergedView, dir: &LayerPath) -> Result<LayerPath> {
    view.canonicalize(at(dir))
}

/// How the view names `p` (its root is `/`).
fn at(p: &LayerPath) -> &[u8] {
    if p.is_root() { b"/" } else { p.as_bytes() }
}

fn copy_tree(
    view: &MergedView,
    upper: &mut DirLayer,
    p: &LayerPath,
    summary: &mut PathSummary,
) -> Result<()> {
    let meta = view.symlink_metadata(at(p))?;
    match meta.file_type {
        FileType::Dir => {
            if !p.is_root() && upper.lookup(p)?.is_none() {
                upper.create(p, &meta, Content::Dir)?;
            }
            summary.dirs += 1;
            for e in view.read_dir(at(p))? {
                copy_tree(view, upper, &p.join(&e.name)?, summary)?;
            }
            upper.set_metadata(p, &meta)?;
        }
        FileType::File => {
            upper.create(p, &meta, Content::File(FileData::new()))?;
            let mut offset = 0u64;
            loop {
                let piece = view.read_at(at(p), offset, 1 << 20)?;
                if piece.is_empty() {
                    break;
                }
                upper.write_at(p, offset, &piece)?;
                offset += piece.len() as u64;
            }
            upper.set_metadata(p, &meta)?;
            summary.files += 1;
            summary.bytes += offset;
        }
        FileType::Symlink => {
            upper.create(p, &meta, Content::Symlink(view.read_link(at(p))?))?;
            summary.symlinks += 1;
        }
        _ => {
            upper.create(p, &meta, Content::Special)?;
            summary.specials += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_directory_is_this_process_s_own_made_0700_and_checked() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let base = Utf8PathBuf::from_path_buf(std::env::temp_dir()).expect("UTF-8 temp dir");
        let s = base.join(format!("layerstack-cli-work-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&s);
        std::fs::create_dir(&s).unwrap();
        let out = s.join("out");
        let want = s.join(format!("out.layerstack-work.{}", std::process::id()));
        let mode = |p: &Utf8Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        let chmod = |p: &Utf8Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        // Beside the target, with or without its trailing slash; made here,
        // mode 0700 whatever the umask leaves.
        assert_eq!(work_dir(&out).unwrap(), (want.clone(), true));
        assert_eq!(mode(&want), 0o700);
        std::fs::remove_dir(&want).unwrap();
        assert_eq!(work_dir(&s.join("out/")).unwrap(), (want.clone(), true));
        // One it made before (a killed run of a process with this id),
        // with the layer's `work` in it, is taken again.
        std::fs::create_dir(want.join("work")).unwrap();
        std::fs::write(want.join("work/leftover"), "x").unwrap();
        assert_eq!(work_dir(&out).unwrap(), (want.clone(), false));
        std::fs::remove_dir_all(&want).unwrap();
        let refused = |detail: &str| format!("failed to flatten into `{want}`: {detail}");
        // An empty directory of another mode is not one it made: another
        // user could have planted files in it, or read them.
        for m in [0o777, 0o755, 0o1777] {
            std::fs::create_dir(&want).unwrap();
            chmod(&want, m);
            let err = work_dir(&out).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists);
            assert_eq!(
                err.to_string(),
                refused(&format!(
                    "the work directory exists with mode {m:04o}, not 0700 as unpack makes it: \
                     refused, another user could read or plant files in it"
                ))
            );
            assert_eq!(mode(&want), m, "left as it was");
            std::fs::remove_dir(&want).unwrap();
        }
        // Nor one of another owner, even of mode 0700 (as root, handed to
        // uid 65534).
        if rustix::process::geteuid().is_root() {
            std::fs::create_dir(&want).unwrap();
            chmod(&want, 0o700);
            std::os::unix::fs::chown(&want, Some(65534), Some(65534)).unwrap();
            let err = work_dir(&out).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists);
            assert_eq!(
                err.to_string(),
                refused(
                    "the work directory exists and is owned by uid 65534, not by this user (uid 0): \
                     refused, its owner could read or plant files in it"
                )
            );
            assert_eq!(std::fs::metadata(&want).unwrap().uid(), 65534);
            std::fs::remove_dir(&want).unwrap();
        } else {
            eprintln!(
                "SKIP the work directory of another owner: needs root to hand a directory to uid 65534"
            );
        }
        // Not one with anything else in it, a file or a symlink: each is
        // refused, and left as it was.
        std::fs::create_dir(&want).unwrap();
        chmod(&want, 0o700);
        std::fs::write(want.join("keep"), "x").unwrap();
        assert_eq!(
            work_dir(&out).unwrap_err().to_string(),
            refused("the work directory is not empty")
        );
        assert_eq!(std::fs::read_to_string(want.join("keep")).unwrap(), "x");
        std::fs::remove_dir_all(&want).unwrap();
        std::fs::write(&want, "x").unwrap();
        assert_eq!(
            work_dir(&out).unwrap_err().to_string(),
            refused("the work directory exists and is not a directory")
        );
        std::fs::remove_file(&want).unwrap();
        std::os::unix::fs::symlink("/", &want).unwrap();
        assert_eq!(
            work_dir(&out).unwrap_err().to_string(),
            refused("the work directory is a symlink (refused: it could lead anywhere)")
        );
        assert_eq!(std::fs::read_link(&want).unwrap().to_str(), Some("/"));
        std::fs::remove_dir_all(&s).unwrap();
    }
}
