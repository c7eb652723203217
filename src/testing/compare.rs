//! Running operations on the model and on a view, and comparing them.

use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::layer::mem::MemLayer;
use crate::layer::{Layer, LayerMut};
use crate::merged::{MergedFs, ViewOptions};
use crate::meta::FileType;
use crate::model::{Model, Snapshot, SnapshotEntry};
use crate::path::{LayerPath, NameBuf};
use crate::testing::codec::shared;
use crate::testing::ops::{MetadataSummary, Op, apply};
use crate::view::MergedView;

/// The tree in a directory on disk (an unpacked root filesystem, a kernel
/// overlay mount), as [`snapshot_view`] gives a view's, so the two compare.
///
/// It never follows a symlink; a directory's size is 0; `rdev` is kept for
/// devices only; the attributes are every one the filesystem lists (a
/// kernel overlay mount already hides its own `trusted.overlay.*`). A name
/// that is listed but that `lstat` does not find is left out: overlayfs
/// lists a whiteout that hides nothing in a directory it passes through
/// from a single lower layer, and a lookup of it gives `ENOENT`.
///
/// Names and symlink targets are bytes, as on disk.
///
/// # Errors
/// The first error reading the tree.
pub fn snapshot_dir(root: &Path) -> std::io::Result<Snapshot> {
    let invalid = |e: crate::Error| std::io::Error::from(e);
    let mut snapshot = Snapshot::new();
    let mut pending = vec![LayerPath::root()];
    while let Some(path) = pending.pop() {
        let at = if path.is_root() {
            root.to_path_buf()
        } else {
            root.join(path.as_name())
        };
        let m = match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.is_root() => continue,
            m => m?,
        };
        let meta = MetadataSummary::of_std(&m, xattrs_of(&at, false)?)?;
        let file_type = meta.file_type;
        let mut entry = SnapshotEntry {
            meta,
            data: Bytes::new(),
            target: NameBuf::new(),
        };
        match file_type {
            FileType::Dir => {
                for child in std::fs::read_dir(&at)? {
                    let name = child?.file_name();
                    let child = path.join(&name).map_err(invalid)?;
                    pending.push(child);
                }
            }
            FileType::File => entry.data = Bytes::from(std::fs::read(&at)?),
            FileType::Symlink => {
                entry.target = NameBuf::from(std::fs::read_link(&at)?.into_os_string().into_vec());
            }
            _ => {}
        }
        snapshot.insert(path, entry);
    }
    Ok(snapshot)
}

/// The extended attributes of `path` (of a symlink's target with
/// `follow`, else of the path itself), sorted by name.
///
/// # Errors
/// Those of `listxattr` and `getxattr`; `EILSEQ` for a name that is not
/// UTF-8.
pub fn xattrs_of(path: &Path, follow: bool) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    const BUF: usize = 1 << 16;
    let mut list = vec![0u8; BUF];
    let n = if follow {
        rustix::fs::listxattr(path, &mut list[..])?
    } else {
        rustix::fs::llistxattr(path, &mut list[..])?
    };
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| std::io::Error::from(rustix::io::Errno::ILSEQ))?;
        let mut value = vec![0u8; BUF];
        let len = if follow {
            rustix::fs::getxattr(path, name.as_str(), &mut value[..])?
        } else {
            rustix::fs::lgetxattr(path, name.as_str(), &mut value[..])?
        };
        value.truncate(len);
        out.push((name, value));
    }
    out.sort();
    Ok(out)
}

/// The whole visible tree of `view`, as [`Model::snapshot`] gives the
/// model's: every path (the root as the empty path) to its type, mode,
/// owner, size, links, device number, contents, symlink target and
/// extended attributes.
///
/// It walks from the root with `read_dir`, `symlink_metadata`, `read` and
/// `read_link`, never following a symlink; attributes come from the
/// metadata (so a symlink's own ones are shown); a directory's size is
/// reported as 0.
///
/// # Errors
/// The first error of the view (a consistent view gives none).
pub fn snapshot_view<F: MergedFs + ?Sized>(view: &F) -> Result<Snapshot> {
    let mut snapshot = Snapshot::new();
    let mut pending = vec![LayerPath::root()];
    while let Some(path) = pending.pop() {
        let user: &[u8] = if path.is_root() {
            b"/"
        } else {
            path.as_bytes()
        };
        let meta = view.symlink_metadata(user)?;
        let mut entry = SnapshotEntry {
            meta: MetadataSummary::from(&meta),
            data: Bytes::new(),
            target: NameBuf::new(),
        };
        match meta.file_type {
            FileType::Dir => {
                entry.meta.size = 0;
                for (name, _) in view.read_dir(user)? {
                    pending.push(path.join(&name)?);
                }
            }
            FileType::File => entry.data = view.read(user)?,
            FileType::Symlink => entry.target = view.read_link(user)?,
            _ => {}
        }
        snapshot.insert(path, entry);
    }
    Ok(snapshot)
}

/// A difference between the model and a view, as
/// [`check_model_vs_view`] reports it.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// The options of the view and the model.
    pub options: ViewOptions,
    /// The operations applied, the last one being where they diverged
    /// (none: the initial trees differ).
    pub ops: Vec<Op>,
    /// What differs.
    pub detail: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ops.last() {
            None => write!(f, "model and view differ before any operation")?,
            Some(op) => write!(
                f,
                "model and view differ at step {} ({op:?})",
                self.ops.len() - 1
            )?,
        }
        writeln!(f, ": {}", self.detail)?;
        writeln!(f, "options: {:?}", self.options)?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i}: {op:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Divergence {}

/// Runs `ops` on the reference model and on a view over `layers` (top
/// first, with an empty upper), both with `options`, and compares the
/// [`Outcome`](crate::testing::Outcome) of every operation and the whole visible tree before the
/// first and after every operation.
///
/// ```
/// use layerstack::MemLayer;
/// use layerstack::testing::{Op, check_model_vs_view};
///
/// let mut lower = MemLayer::new();
/// lower.add_file("a/f", "x")?;
/// let ops = [
///     Op::RemoveFile { path: "a/f".into() },
///     Op::CreateDir { path: "a/f".into() },
/// ];
/// check_model_vs_view(&[lower], &ops, Default::default()).unwrap();
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # Errors
/// The first difference.
pub fn check_model_vs_view(
    layers: &[MemLayer],
    ops: &[Op],
    options: ViewOptions,
) -> Result<(), Divergence> {
    let lowers = shared(layers);
    check_model_vs_view_over(&lowers, lowers.clone(), MemLayer::new(), ops, options)
}

/// As [`check_model_vs_view`], with the model built from `model_lowers` and
/// the view from `view_lowers` and `upper` (the same content stored
/// elsewhere, for example on disk).
pub(crate) fn check_model_vs_view_over(
    model_lowers: &[Arc<dyn Layer>],
    view_lowers: Vec<Arc<dyn Layer>>,
    upper: impl LayerMut,
    ops: &[Op],
    options: ViewOptions,
) -> Result<(), Divergence> {
    let diverged = |done: usize, detail: String| Divergence {
        options,
        ops: ops[..done].to_vec(),
        detail,
    };
    let mut model = Model::from_layers(model_lowers, options)
        .map_err(|e| diverged(0, format!("the model cannot flatten the layers: {e}")))?;
    let view = MergedView::with_options(view_lowers, upper, options)
        .map_err(|e| diverged(0, format!("the view cannot be opened: {e}")))?;
    compare_trees(&model, &view).map_err(|d| diverged(0, d))?;
    for (i, op) in ops.iter().enumerate() {
        let want = apply(&mut model, op);
        let got = apply(&mut &view, op);
        if want != got {
            return Err(diverged(
                i + 1,
                format!("model gives {want:?}, view gives {got:?}"),
            ));
        }
        compare_trees(&model, &view).map_err(|d| diverged(i + 1, d))?;
    }
    Ok(())
}

/// The first difference between the model's tree and the view's.
fn compare_trees(model: &Model, view: &MergedView) -> Result<(), String> {
    let want = model.snapshot();
    let got = snapshot_view(view).map_err(|e| format!("the view cannot be walked: {e}"))?;
    if want == got {
        return Ok(());
    }
    let mut paths: Vec<&LayerPath> = want.keys().chain(got.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (w, g) = (want.get(path), got.get(path));
        if w != g {
            return Err(format!(
                "trees differ at `{path}`: model has {}, view has {}",
                show(w),
                show(g)
            ));
        }
    }
    unreachable!("different maps differ at some key")
}

fn show(entry: Option<&SnapshotEntry>) -> String {
    match entry {
        None => String::from("nothing"),
        Some(e) => format!("{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::codec::shared;

    #[test]
    fn snapshot_of_a_view_never_follows_symlinks() {
        let mut lower = MemLayer::new();
        lower.add_file("d/f", "data").unwrap();
        lower.add_symlink("l", "d").unwrap();
        lower.add_whiteout("gone").unwrap();
        let view = MergedView::new(shared(&[lower]), MemLayer::new()).unwrap();
        view.write("d/g", "new").unwrap();
        let snapshot = snapshot_view(&view).unwrap();
        let paths: Vec<&str> = snapshot.keys().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(paths, ["", "d", "d/f", "d/g", "l"]);
        let l = &snapshot[&LayerPath::new("l").unwrap()];
        assert_eq!(
            (l.meta.file_type, l.target.to_str().unwrap(), l.meta.size),
            (FileType::Symlink, "d", 1)
        );
        let d = &snapshot[&LayerPath::new("d").unwrap()];
        assert_eq!((d.meta.file_type, d.meta.size), (FileType::Dir, 0));
        assert_eq!(&snapshot[&LayerPath::new("d/g").unwrap()].data[..], b"new");
    }

    #[test]
    fn divergences_name_the_step_and_the_operation() {
        let d = Divergence {
            options: ViewOptions::default(),
            ops: vec![Op::Commit, Op::ReadDir { path: "a".into() }],
            detail: "model gives Unit, view gives Err(NotFound)".into(),
        };
        let text = d.to_string();
        assert!(
            text.starts_with(
                "model and view differ at step 1 (ReadDir { path: \"a\" }): model gives Unit, view gives Err(NotFound)\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("  0: Commit\n  1: ReadDir { path: \"a\" }\n"),
            "{text}"
        );
    }
}
