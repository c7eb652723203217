use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::layer::mem::{MemLayer, to_mem_layer};
use crate::layer::{Entry, Layer, walk};
use crate::meta::Metadata;
use crate::oci::apply::import::BelowView;
use crate::path::LayerPath;
use crate::view::MergedView;

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// A new path.
    Added,
    /// A path that existed below, with new contents or attributes.
    Changed,
    /// A path that existed below and is gone.
    Deleted,
}

impl ChangeKind {
    /// The letter `docker diff` prints: `A`, `C` or `D`.
    #[must_use]
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Change {
    /// The path.
    pub path: LayerPath,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    /// As `docker diff` prints it: `C /etc`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} /{}", self.kind.letter(), self.path)
    }
}

/// The changes `layer` makes to the layers below it (`below`, top first).
///
/// ```
/// use std::sync::Arc;
/// use layerstack::oci::{ChangeKind, layer_changes};
/// use layerstack::{Layer, MemLayer};
///
/// let mut base = MemLayer::new();
/// base.add_file("etc/motd", "hi")?;
/// base.add_file("etc/hosts", "")?;
/// let mut top = MemLayer::new();
/// top.add_dir("etc")?;
/// top.add_whiteout("etc/motd")?;
/// top.add_file("etc/new", "x")?;
///
/// let changes = layer_changes(&top, &[Arc::new(base) as Arc<dyn Layer>])?;
/// let lines: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
/// assert_eq!(lines, ["C /etc", "D /etc/motd", "A /etc/new"]);
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # Errors
/// Errors of the layers.
///
/// What one layer changes, with the semantics of `docker diff`.
///
/// Each path the layer adds, changes or deletes relative to the layers
/// below it is listed once, sorted by path:
///
/// - **Added**: the layer holds an object where nothing was visible below.
/// - **Changed**: the layer holds an object where one was visible below: a
///   non-directory (new contents or attributes), or a directory whose
///   attributes differ or that is opaque (its old contents are gone). A
///   directory that exists below is also reported as changed when anything
///   under it is added, changed or deleted, as `docker diff` reports a
///   parent of a changed path.
/// - **Deleted**: a whiteout hides an object that was visible below; the
///   visible entries of a directory made opaque that the layer does not
///   replace. A deleted directory is one entry (its children are not
///   listed), as with `docker diff`.
///
/// A directory with a redirect (renamed on an overlay mount with
/// `redirect_dir=on`) is reported as added with its whole contents; its old
/// name is a whiteout in the same layer and is reported as deleted.
pub fn layer_changes(layer: &dyn Layer, below: &[Arc<dyn Layer>]) -> Result<Vec<Change>> {
    let lower = BelowView::new(below)?;
    let mut out: BTreeMap<LayerPath, ChangeKind> = BTreeMap::new();
    let entries = walk(layer)?;
    // Subtrees already reported whole (redirected directories).
    let mut whole: Vec<LayerPath> = Vec::new();
    if let Some(Entry::Node(root)) = layer.lookup(&LayerPath::root())?
        && root.opaque
    {
        report_opaque_deletions(&lower, layer, &LayerPath::root(), &mut out)?;
    }
    for (path, entry) in entries {
        if whole.iter().any(|w| path.starts_with(w)) {
            continue;
        }
        let before = lower.lookup(&path)?;
        let node = match entry {
            Entry::Whiteout => {
                if before.is_some() {
                    out.insert(path, ChangeKind::Deleted);
                }
                continue;
            }
            Entry::Node(node) => node,
        };
        if node.meta.is_dir() && node.redirect.is_some() {
            report_redirected(layer, below, &path, &mut out)?;
            whole.push(path);
            continue;
        }
        let kind = match &before {
            None => ChangeKind::Added,
            Some(old) if old.is_dir() && node.meta.is_dir() => {
                if node.opaque {
                    report_opaque_deletions(&lower, layer, &path, &mut out)?;
                    ChangeKind::Changed
                } else if same_attributes(old, &node.meta) {
                    continue;
                } else {
                    ChangeKind::Changed
                }
            }
            Some(_) => ChangeKind::Changed,
        };
        out.insert(path, kind);
    }
    // Parents of changed paths that existed below are changed.
    let reported: Vec<LayerPath> = out.keys().cloned().collect();
    for path in reported {
        let mut parent = path.parent();
        while let Some(p) = parent {
            if p.is_root() || out.contains_key(&p) {
                break;
            }
            if lower.lookup(&p)?.is_some() {
                out.insert(p.clone(), ChangeKind::Changed);
            } else {
                out.insert(p.clone(), ChangeKind::Added);
            }
            parent = p.parent();
        }
    }
    Ok(out
        .into_iter()
        .map(|(path, kind)| Change { path, kind })
        .collect())
}

fn same_attributes(a: &Metadata, b: &Metadata) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.xattrs == b.xattrs
}

/// The entries below `dir` that an opaque `dir` in `layer` hides and that
/// the layer does not hold itself.
fn report_opaque_deletions(
    lower: &BelowView,
    layer: &dyn Layer,
    dir: &LayerPath,
    out: &mut BTreeMap<LayerPath, ChangeKind>,
) -> Result<()> {
    for name in lower.list(dir)? {
        let path = dir.join(&name)?;
        if matches!(layer.lookup(&path)?, None | Some(Entry::Whiteout)) {
            out.insert(path, ChangeKind::Deleted);
        }
    }
    Ok(())
}

/// A redirected directory and everything the merged view shows in it, as
/// added.
fn report_redirected(
    layer: &dyn Layer,
    below: &[Arc<dyn Layer>],
    dir: &LayerPath,
    out: &mut BTreeMap<LayerPath, ChangeKind>,
) -> Result<()> {
    let mut stack: Vec<Arc<dyn Layer>> = Vec::with_capacity(below.len() + 1);
    stack.push(Arc::new(to_mem_layer(layer)?));
    stack.extend(below.iter().cloned());
    let view = MergedView::new(stack, MemLayer::new())?;
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        out.insert(d.clone(), ChangeKind::Added);
        for e in view.read_dir(d.as_name())? {
            let path = d.join(&e.name)?;
            if e.file_type.is_dir() {
                todo.push(path);
            } else {
                out.insert(path, ChangeKind::Added);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merged::{DirRename, ViewOptions};

    fn lines(layer: &dyn Layer, below: &[Arc<dyn Layer>]) -> Vec<String> {
        layer_changes(layer, below)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn base() -> Vec<Arc<dyn Layer>> {
        let mut base = MemLayer::new();
        base.add_file("etc/motd", "hi").unwrap();
        base.add_file("etc/hosts", "").unwrap();
        base.add_file("var/lib/a/one", "1").unwrap();
        base.add_file("var/lib/a/two", "2").unwrap();
        base.add_file("var/lib/keep", "k").unwrap();
        base.add_file("usr/bin/tool", "t").unwrap();
        vec![Arc::new(base)]
    }

    #[test]
    fn a_layer_over_nothing_is_all_added() {
        let mut top = MemLayer::new();
        top.add_file("a/b/c", "x").unwrap();
        top.add_whiteout("gone").unwrap();
        assert_eq!(lines(&top, &[]), ["A /a", "A /a/b", "A /a/b/c"]);
    }

    #[test]
    fn changes_follow_docker_diff() {
        let below = base();
        let view = MergedView::new(below.clone(), MemLayer::new()).unwrap();
        view.write("etc/motd", "changed").unwrap();
        view.remove_dir_all("var/lib/a").unwrap();
        view.create_dir_all("opt/new").unwrap();
        view.write("opt/new/file", "n").unwrap();
        view.set_permissions("usr/bin/tool", 0o700).unwrap();
        let upper = view.with_upper(|u| to_mem_layer(u)).unwrap();
        assert_eq!(
            lines(&upper, &below),
            [
                "C /etc",
                "C /etc/motd",
                "A /opt",
                "A /opt/new",
                "A /opt/new/file",
                "C /usr",
                "C /usr/bin",
                "C /usr/bin/tool",
                "C /var",
                "C /var/lib",
                "D /var/lib/a",
            ]
        );
    }

    #[test]
    fn an_opaque_directory_deletes_what_it_does_not_replace() {
        let below = base();
        let view = MergedView::new(below.clone(), MemLayer::new()).unwrap();
        view.remove_dir_all("var/lib").unwrap();
        view.create_dir("var/lib").unwrap();
        view.write("var/lib/keep", "new keep").unwrap();
        view.write("var/lib/fresh", "f").unwrap();
        let upper = view.with_upper(|u| to_mem_layer(u)).unwrap();
        assert_eq!(
            lines(&upper, &below),
            [
                "C /var",
                "C /var/lib",
                "D /var/lib/a",
                "A /var/lib/fresh",
                "C /var/lib/keep",
            ]
        );
    }

    #[test]
    fn a_redirected_directory_is_added_whole_and_its_old_name_deleted() {
        let below = base();
        let options = ViewOptions::default().dir_rename(DirRename::Redirect);
        let view = MergedView::with_options(below.clone(), MemLayer::new(), options).unwrap();
        view.rename("var/lib/a", "var/moved").unwrap();
        let upper = view.with_upper(|u| to_mem_layer(u)).unwrap();
        assert_eq!(
            lines(&upper, &below),
            [
                "C /var",
                "C /var/lib",
                "D /var/lib/a",
                "A /var/moved",
                "A /var/moved/one",
                "A /var/moved/two",
            ]
        );
    }
}
