//! The bodies of the fuzz targets that need more than the memory view:
//! `tar_import` (any bytes as a layer tar) and `dir_ops` (operation
//! sequences on layers stored in a temporary directory). Each is a plain
//! function so that `cargo test` runs it over the committed corpus
//! (`tests/it/fuzz_corpus.rs`) as the fuzzer runs it over its inputs.
//!
//! Scratch directories live in one directory per process under
//! [`std::env::temp_dir`], each removed when its input is done.

#[cfg(feature = "oci")]
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use camino::{Utf8Path, Utf8PathBuf};

use crate::layer::dir::{DirLayer, DirLayerOptions, OverlayXattrs, WhiteoutFormat};
#[cfg(feature = "oci")]
use crate::layer::{Entry, walk};
use crate::layer::{Layer, copy_layer};
use crate::merged::{DirRename, HardLinkCopyUp, ViewOptions};
use crate::meta::FileType;
#[cfg(feature = "oci")]
use crate::path::LayerPath;
use crate::testing::codec::Scenario;
use crate::testing::compare::{Divergence, check_model_vs_view_over};
use crate::testing::items::{Attrs, LayerItem};
use crate::testing::ops::Op;

/// A directory of its own under the per-process scratch directory,
/// removed (with everything in it) when dropped.
struct Scratch(Utf8PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Scratch, String> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let base = Utf8PathBuf::from_path_buf(std::env::temp_dir())
            .map_err(|p| format!("the temporary directory `{}` is not UTF-8", p.display()))?
            .join(format!("layerstack-fuzz-{}", std::process::id()));
        let dir = base.join(format!("{tag}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the scratch directory `{dir}`: {e}"))?;
        Ok(Scratch(dir))
    }

    fn path(&self, sub: &str) -> Utf8PathBuf {
        self.0.join(sub)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.0).is_err() {
            // A layer may have written directories without `w` or `x` for
            // their owner; open them up and try again.
            let _ = make_removable(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
        if let Some(base) = self.0.parent() {
            // Only succeeds once no other input of this process uses it.
            let _ = std::fs::remove_dir(base);
        }
    }
}

fn make_removable(dir: &Utf8Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && let Ok(path) = Utf8PathBuf::from_path_buf(entry.path())
        {
            let _ = make_removable(&path);
        }
    }
    Ok(())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The limits the `tar_import` target reads a layer with: small, so that
/// no input takes long.
#[cfg(feature = "oci")]
fn fuzz_limits() -> crate::oci::Limits {
    crate::oci::Limits::new()
        .max_bytes(64 << 20)
        .max_entries(10_000)
}

/// The body of the `tar_import` fuzz target: `data` as a layer tar (plain,
/// gzip or zstd).
///
/// - [`import_layer`](crate::oci::import_layer) never panics; when it
///   accepts the layer, exporting it and importing the export gives the
///   same layer again (every entry, its metadata but inode numbers, its
///   flags, file data and symlink targets; hard links as links).
/// - [`flatten_layers`](crate::oci::flatten_layers) of the same bytes into
///   a fresh directory never panics; when both accept the layer, the
///   directory holds exactly the paths of
///   [`model::flatten`](crate::model::flatten) of the imported layer, each
///   with its type, file data and symlink target.
///
/// Devices are kept as root and stripped otherwise (only root makes them);
/// owners are preserved as root and ignored otherwise.
///
/// ```
/// layerstack::testing::fuzz::tar_import(b"not a tar").unwrap();
/// layerstack::testing::fuzz::tar_import(&[0; 1024]).unwrap();
/// ```
///
/// # Errors
/// A description of the first property that does not hold.
#[cfg(feature = "oci")]
pub fn tar_import(data: &[u8]) -> Result<(), String> {
    use crate::oci::{
        Compression, ExportOptions, FlattenOptions, ImportOptions, Owners, Policy, export_layer,
        flatten_layers, import_layer,
    };

    let root = is_root();
    let devices = if root { Policy::Keep } else { Policy::Strip };
    let import_options = ImportOptions::default()
        .limits(fuzz_limits())
        .devices(devices);
    let imported = import_layer(data, &[], &import_options)
        .ok()
        .map(|(l, _)| l);

    let scratch = Scratch::new("tar-import")?;
    let target = scratch.path("root");
    let owned: Arc<[u8]> = Arc::from(data);
    let opener = move || -> crate::Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(Arc::clone(&owned))))
    };
    let flatten_options = FlattenOptions::default()
        .import(import_options)
        .owners(if root {
            Owners::Preserve
        } else {
            Owners::Ignore
        })
        .threads(1);
    let flattened = flatten_layers(&[opener], &target, &flatten_options);

    let Some(imported) = imported else {
        return Ok(());
    };
    let imported: Arc<dyn Layer> = Arc::new(imported);

    let export = ExportOptions::new().compression(Compression::None);
    let (tar, _) = export_layer(&imported, &[], Vec::new(), &export)
        .map_err(|e| format!("an imported layer cannot be exported: {e}"))?;
    let (again, _) = import_layer(&tar[..], &[], &import_options)
        .map_err(|e| format!("an exported layer cannot be imported again: {e}"))?;
    let (first, second) = (layer_contents(&*imported)?, layer_contents(&again)?);
    if first != second {
        let diff = first
            .iter()
            .zip(&second)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("imported {a:?}, after a round trip {b:?}"))
            .unwrap_or_else(|| {
                format!(
                    "{} entries imported, {} after a round trip",
                    first.len(),
                    second.len()
                )
            });
        return Err(format!("export and import again changes the layer: {diff}"));
    }

    if flattened.is_ok() {
        let want = crate::model::flatten(&[imported])
            .map_err(|e| format!("the model cannot flatten an imported layer: {e}"))?;
        let want: Vec<DiskEntry> = want
            .iter()
            .filter(|(path, _)| !path.is_root())
            .map(|(path, e)| DiskEntry {
                // Names and targets as bytes: flatten writes what import
                // read, in any charset.
                path: crate::path::NameBuf::from(path.as_bytes()),
                file_type: e.meta.file_type,
                data: if e.meta.file_type == FileType::File {
                    e.data.to_vec()
                } else {
                    Vec::new()
                },
                target: e.target.clone(),
            })
            .collect();
        let got = disk_entries(target.as_std_path())?;
        if want != got {
            let diff = want
                .iter()
                .zip(&got)
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("the model has {a:?}, the disk {b:?}"))
                .unwrap_or_else(|| {
                    format!(
                        "the model has {} entries, the disk {}",
                        want.len(),
                        got.len()
                    )
                });
            return Err(format!("flatten differs from the model: {diff}"));
        }
    }
    Ok(())
}

/// One entry of a layer as a round trip must keep it: the entry with its
/// inode number replaced by the first path of that inode (so hard links
/// compare as links), and its data or target.
#[cfg(feature = "oci")]
#[derive(Debug, PartialEq, Eq)]
struct LayerContent {
    path: LayerPath,
    entry: Entry,
    link_of: Option<LayerPath>,
    data: Vec<u8>,
    target: crate::NameBuf,
}

#[cfg(feature = "oci")]
fn layer_contents(layer: &dyn Layer) -> Result<Vec<LayerContent>, String> {
    let fail = |e: crate::Error| format!("an imported layer cannot be read: {e}");
    let mut out = Vec::new();
    let mut first_of: HashMap<u64, LayerPath> = HashMap::new();
    let root = LayerPath::root();
    let mut entries = Vec::new();
    if let Some(mut entry) = layer.lookup(&root).map_err(fail)? {
        // An exported layer has no root entry (as Docker writes layers), so
        // the root's own attributes (a `./` entry's) are not kept; its
        // opaque flag is.
        if let Entry::Node(node) = &mut entry {
            node.meta = crate::meta::Metadata::new(FileType::Dir);
        }
        entries.push((root, entry));
    }
    entries.extend(walk(layer).map_err(fail)?);
    for (path, mut entry) in entries {
        let (mut link_of, mut data, mut target) = (None, Vec::new(), crate::NameBuf::new());
        if let Entry::Node(node) = &mut entry {
            match node.meta.file_type {
                FileType::File => {
                    let len = usize::try_from(node.meta.size).map_err(|e| e.to_string())?;
                    data = layer.read_at(&path, 0, len).map_err(fail)?.to_vec();
                }
                FileType::Symlink => target = layer.read_link(&path).map_err(fail)?,
                _ => {}
            }
            if node.meta.file_type != FileType::Dir {
                let first = first_of
                    .entry(node.meta.ino)
                    .or_insert_with(|| path.clone());
                if *first != path {
                    link_of = Some(first.clone());
                }
            }
            node.meta.ino = 0;
        }
        out.push(LayerContent {
            path,
            entry,
            link_of,
            data,
            target,
        });
    }
    Ok(out)
}

/// What `tar_import` compares between a flattened directory and the model.
#[cfg(feature = "oci")]
#[derive(Debug, PartialEq, Eq)]
struct DiskEntry {
    path: crate::path::NameBuf,
    file_type: FileType,
    data: Vec<u8>,
    target: crate::path::NameBuf,
}

/// Every entry under `root`, in path order, never following a symlink;
/// names and targets as their bytes.
#[cfg(feature = "oci")]
fn disk_entries(root: &std::path::Path) -> Result<Vec<DiskEntry>, String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut todo = vec![(root.to_owned(), Vec::<u8>::new())];
    while let Some((dir, rel)) = todo.pop() {
        let list_error =
            |e: std::io::Error| format!("cannot list `{}` on disk: {e}", dir.display());
        for entry in std::fs::read_dir(&dir).map_err(list_error)? {
            let entry = entry.map_err(list_error)?;
            let name = entry.file_name();
            let path = dir.join(&name);
            let rel = if rel.is_empty() {
                name.as_bytes().to_vec()
            } else {
                [rel.as_slice(), b"/", name.as_bytes()].concat()
            };
            let ft = entry
                .file_type()
                .map_err(|e| format!("cannot stat `{}`: {e}", path.display()))?;
            let file_type = if ft.is_dir() {
                todo.push((path.clone(), rel.clone()));
                FileType::Dir
            } else if ft.is_symlink() {
                FileType::Symlink
            } else if ft.is_file() {
                FileType::File
            } else if ft.is_char_device() {
                FileType::CharDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else if ft.is_fifo() {
                FileType::Fifo
            } else {
                FileType::Socket
            };
            let (mut data, mut target) = (Vec::new(), Vec::new());
            match file_type {
                FileType::File => {
                    data = std::fs::read(&path)
                        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                }
                FileType::Symlink => {
                    target = std::fs::read_link(&path)
                        .map_err(|e| format!("cannot read the link `{}`: {e}", path.display()))?
                        .into_os_string()
                        .as_bytes()
                        .to_vec();
                }
                _ => {}
            }
            out.push(DiskEntry {
                path: rel.into(),
                file_type,
                data,
                target: target.into(),
            });
        }
    }
    out.sort_by(|a, b| {
        LayerPath::new(&a.path)
            .ok()
            .cmp(&LayerPath::new(&b.path).ok())
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(out)
}

/// The body of the `dir_ops` fuzz target: decodes `data` as the `ops`
/// target does ([`Scenario::from_bytes`]), writes the lower layers to disk
/// as [`DirLayer`]s (read-only, over a fresh disk upper), and runs the
/// operations on a view over them and on the model, comparing every
/// result and the whole tree after each step; once with the default
/// [`ViewOptions`] and once with directory redirects and kept hard links.
///
/// As root the layers use the kernel's default format (whiteouts as
/// character devices 0/0, `trusted.overlay.*`). As another user they use
/// xattr whiteouts and `user.overlay.*`, and what only root can do is left
/// out of the scenario first: device nodes, `trusted.*` xattrs, owners
/// other than the caller's, `set_owner`.
///
/// ```
/// layerstack::testing::fuzz::dir_ops(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 6, 1, 1, 0, 12, 1, 0]).unwrap();
/// ```
///
/// # Errors
/// The first difference between the model and the view over disk layers,
/// or a scenario that cannot be written to disk.
pub fn dir_ops(data: &[u8]) -> Result<(), Divergence> {
    let mut scenario = Scenario::from_bytes(data);
    let root = is_root();
    let options = if root {
        DirLayerOptions::default()
    } else {
        unprivileged(&mut scenario);
        DirLayerOptions::default()
            .whiteouts(WhiteoutFormat::Xattr)
            .xattrs(OverlayXattrs::User)
    };
    let mem = scenario.build_layers();
    for view_options in [
        ViewOptions::default(),
        ViewOptions::default()
            .dir_rename(DirRename::Redirect)
            .hard_links(HardLinkCopyUp::Keep),
    ] {
        let setup = |detail: String| Divergence {
            options: view_options,
            ops: Vec::new(),
            detail,
        };
        let scratch = Scratch::new("dir-ops").map_err(setup)?;
        let mut disk: Vec<Arc<dyn Layer>> = Vec::new();
        for (i, layer) in mem.iter().enumerate() {
            let (upper, work) = (
                scratch.path(&format!("l{i}")),
                scratch.path(&format!("w{i}")),
            );
            let mut dir = DirLayer::open_upper_with(&upper, &work, options.clone())
                .map_err(|e| setup(format!("cannot open an upper for layer {i}: {e}")))?;
            copy_layer(layer, &mut dir)
                .map_err(|e| setup(format!("cannot write layer {i} to disk: {e}")))?;
            drop(dir);
            let dir = DirLayer::open_with(&upper, options.clone())
                .map_err(|e| setup(format!("cannot reopen layer {i}: {e}")))?;
            disk.push(Arc::new(dir));
        }
        let upper = DirLayer::open_upper_with(
            scratch.path("upper"),
            scratch.path("work"),
            options.clone().commit_dir(scratch.path("committed")),
        )
        .map_err(|e| setup(format!("cannot open the upper: {e}")))?;
        let model: Vec<Arc<dyn Layer>> = mem
            .iter()
            .map(|l| Arc::new(l.clone()) as Arc<dyn Layer>)
            .collect();
        check_model_vs_view_over(&model, disk, upper, &scenario.ops, view_options)?;
    }
    Ok(())
}

/// Leaves out of `scenario` what only root can write to disk.
fn unprivileged(scenario: &mut Scenario) {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let own = |attrs: &mut Attrs| {
        attrs.uid = uid;
        attrs.gid = gid;
    };
    for layer in &mut scenario.layers {
        layer.retain(|item| match item {
            LayerItem::Special { file_type, .. } => *file_type == FileType::Fifo,
            LayerItem::Xattr { name, .. } => !name.starts_with("trusted."),
            _ => true,
        });
        for item in layer.iter_mut() {
            match item {
                LayerItem::File { attrs, .. }
                | LayerItem::Dir { attrs, .. }
                | LayerItem::Special { attrs, .. } => own(attrs),
                _ => {}
            }
        }
    }
    scenario.ops.retain(|op| match op {
        Op::SetOwner { .. } => false,
        Op::Mknod { file_type, .. } => {
            !matches!(file_type, FileType::CharDevice | FileType::BlockDevice)
        }
        Op::SetXattr { name, .. } | Op::RemoveXattr { name, .. } => !name.starts_with("trusted."),
        _ => true,
    });
}
