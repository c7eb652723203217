//! Export then import gives back what the stack showed: for random stacks
//! of random layers (whiteouts, opaque directories, redirects, hard links,
//! specials, xattrs), the imported stack shows exactly the tree the
//! original stack showed, for every compression.

use std::sync::Arc;

use layerstack::NameBuf;
use layerstack::layer::walk;
use layerstack::model;
use layerstack::oci::{Compression, ExportOptions, ImportOptions, export_layer, import_layer};
use layerstack::testing::{LayerItem, build_layer, stack_items_strategy};
use layerstack::{Entry, FileType, Layer};
use proptest::prelude::*;

/// Sockets cannot be stored in a tar (export refuses them, tested in the
/// module); the random stacks use fifos there instead.
pub fn without_sockets(items: &[LayerItem]) -> Vec<LayerItem> {
    items
        .iter()
        .map(|item| match item {
            LayerItem::Special {
                path,
                file_type: FileType::Socket,
                attrs,
                ..
            } => LayerItem::Special {
                path: path.clone(),
                file_type: FileType::Fifo,
                rdev: 0,
                attrs: *attrs,
            },
            other => other.clone(),
        })
        .collect()
}

/// `items` as the layer tar writer takes them today: without sockets, and
/// with every name and symlink target that is not UTF-8 replaced by its
/// escaped text (`caf\351` for a Latin-1 `café`), which keeps distinct
/// names distinct. The writer refuses such names until it writes them as
/// Go and GNU tar do (the tar side of issue 14).
pub fn tar_writable(items: &[LayerItem]) -> Vec<LayerItem> {
    let text = |p: &NameBuf| NameBuf::from(layerstack::escape_name(p.as_bytes()));
    without_sockets(items)
        .into_iter()
        .map(|item| match item {
            LayerItem::File { path, data, attrs } => LayerItem::File {
                path: text(&path),
                data,
                attrs,
            },
            LayerItem::Dir { path, attrs } => LayerItem::Dir {
                path: text(&path),
                attrs,
            },
            LayerItem::OpaqueDir { path } => LayerItem::OpaqueDir { path: text(&path) },
            LayerItem::Symlink { path, target } => LayerItem::Symlink {
                path: text(&path),
                target: text(&target),
            },
            LayerItem::HardLink { existing, new } => LayerItem::HardLink {
                existing: text(&existing),
                new: text(&new),
            },
            LayerItem::Special {
                path,
                file_type,
                rdev,
                attrs,
            } => LayerItem::Special {
                path: text(&path),
                file_type,
                rdev,
                attrs,
            },
            LayerItem::Whiteout { path } => LayerItem::Whiteout { path: text(&path) },
            LayerItem::Redirect { path, redirect } => LayerItem::Redirect {
                path: text(&path),
                redirect: text(&redirect),
            },
            LayerItem::Xattr { path, name, value } => LayerItem::Xattr {
                path: text(&path),
                name,
                value,
            },
        })
        .collect()
}

fn round_trip(
    stack_items: &[Vec<LayerItem>],
    compression: Compression,
) -> Result<(), TestCaseError> {
    // Top first, as MergedView takes them.
    let originals: Vec<Arc<dyn Layer>> = stack_items
        .iter()
        .map(|items| Arc::new(build_layer(&tar_writable(items))) as Arc<dyn Layer>)
        .collect();
    let mut imported: Vec<Arc<dyn Layer>> = Vec::new();
    // Bottom up: each layer is exported with its original layers below and
    // imported over the already imported ones.
    for i in (0..originals.len()).rev() {
        let (tar, digests) = export_layer(
            &originals[i],
            &originals[i + 1..],
            Vec::new(),
            &ExportOptions::new().compression(compression),
        )
        .map_err(|e| TestCaseError::fail(format!("export layer {i}: {e}")))?;
        let (layer, summary) = import_layer(&tar[..], &imported, &ImportOptions::default())
            .map_err(|e| TestCaseError::fail(format!("import layer {i}: {e}")))?;
        prop_assert_eq!(summary.digest, digests.digest);
        prop_assert_eq!(summary.diff_id, digests.diff_id);
        let has_redirect = stack_items[i]
            .iter()
            .any(|it| matches!(it, LayerItem::Redirect { .. }));
        if !has_redirect {
            // The changeset itself comes back: whiteouts as whiteouts,
            // opaque flags, attributes, contents, links.
            prop_assert_eq!(
                changeset(&layer),
                changeset(originals[i].as_ref()),
                "layer {}",
                i
            );
        }
        imported.insert(0, Arc::new(layer));
    }
    // A redirected directory is exported as a copy of what it shows, as a
    // copy-up would make it: a file in it that had another name below is
    // now a file of its own, so link counts differ there.
    let redirects = stack_items
        .iter()
        .flatten()
        .any(|item| matches!(item, LayerItem::Redirect { .. }));
    let want = tree(&originals, redirects)?;
    let got = tree(&imported, redirects)?;
    prop_assert_eq!(got, want);
    Ok(())
}

/// A layer's entries as comparable lines: path, kind, flags, attributes
/// (no inode numbers, link counts, atime or ctime), contents, and which
/// names are one object.
fn changeset(layer: &dyn Layer) -> Vec<String> {
    let mut first_name: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    walk(layer)
        .unwrap()
        .into_iter()
        .map(|(path, entry)| match entry {
            Entry::Whiteout => format!("{path} whiteout"),
            Entry::Node(n) => {
                let m = &n.meta;
                let body = match m.file_type {
                    FileType::File => format!("{:?}", layer.read_at(&path, 0, 1 << 20).unwrap()),
                    FileType::Symlink => layer.read_link(&path).unwrap().to_string(),
                    _ => String::new(),
                };
                let link = if m.file_type.is_dir() {
                    String::new()
                } else {
                    first_name.entry(m.ino).or_insert_with(|| path.to_string()).clone()
                };
                format!(
                    "{path} {:?} opaque={} mode={:o} {}:{} mtime={} rdev={} xattrs={:?} body={body} same-as={link}",
                    m.file_type, n.opaque, m.mode, m.uid, m.gid, m.mtime, m.rdev, m.xattrs
                )
            }
        })
        .collect()
}

/// The tree a stack shows; a directory's link count is left out (the
/// kernel reports 1 for a merged directory, and a layer tar cannot say
/// whether a directory was merged or replaced whole), and every link count
/// with `no_links`.
fn tree(stack: &[Arc<dyn Layer>], no_links: bool) -> Result<model::Snapshot, TestCaseError> {
    let mut snapshot = model::flatten(stack).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for entry in snapshot.values_mut() {
        if entry.meta.file_type == FileType::Dir || no_links {
            entry.meta.nlink = 0;
        }
    }
    Ok(snapshot)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("LAYERSTACK_OCI_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn export_then_import_shows_the_same_tree(stack in stack_items_strategy(4), c in 0..3u8) {
        let compression = [Compression::None, Compression::Gzip, Compression::Zstd][usize::from(c)];
        round_trip(&stack, compression)?;
    }
}
