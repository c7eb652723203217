use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Operation, Result};
use crate::layer::mem::MemLayer;
use crate::layer::{Entry, Layer, walk};
use crate::merged::LayerSource;
use crate::meta::{FileType, Metadata, Timestamp};
use crate::oci::image::store::{Image, ImageStore};
use crate::oci::tar::compress::Decompressor;
use crate::oci::tar::read::{TarKind, TarReader};
use crate::oci::tar::whiteout::{TarName, classify};
use crate::path::LayerPath;
use crate::view::MergedView;

/// Why a shipped payload is not in the final tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WasteReason {
    /// A later entry at the same path holds other content (or another kind
    /// of object), or a non-directory replaced one of its parents.
    Overwritten,
    /// A whiteout deleted it or one of its parents.
    Deleted,
    /// An opaque directory above it hid it.
    HiddenByOpaque,
    /// The same content was shipped again with new metadata (mode, owner,
    /// time or xattrs): the `chown -R` layer.
    MetadataOnly,
    /// The same content with the same metadata was shipped again.
    Duplicate,
}

impl WasteReason {
    /// The reason in words, as the tool prints it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WasteReason::Overwritten => "overwritten",
            WasteReason::Deleted => "deleted",
            WasteReason::HiddenByOpaque => "hidden by an opaque directory",
            WasteReason::MetadataOnly => "re-shipped for metadata only",
            WasteReason::Duplicate => "duplicate",
        }
    }
}

/// One regular-file payload of a layer tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Where the entry puts it.
    pub path: LayerPath,
    /// Its bytes in the tar.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
    /// Mode, owner, mtime and xattrs as the entry gives them.
    pub meta: PayloadMeta,
}

/// The metadata of a payload that "re-shipped for metadata only" compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadMeta {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Extended attributes, in name order.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl PayloadMeta {
    fn of(meta: &Metadata) -> PayloadMeta {
        PayloadMeta {
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            xattrs: meta
                .xattrs
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
        }
    }
}

/// What the analysis needs of one layer, bottom first: the imported layer,
/// its payloads in tar order, and its figures from the image.
#[derive(Debug, Clone)]
pub struct LayerInput {
    /// The layer as the merged view reads it.
    pub layer: Arc<dyn Layer>,
    /// Its payloads, in the tar's order.
    pub payloads: Vec<Payload>,
    /// The blob's size (0 when not known).
    pub compressed: u64,
    /// The blob's digest, for output.
    pub digest: Option<String>,
    /// The history's `created_by`, for output.
    pub created_by: Option<String>,
}

impl LayerInput {
    /// The input of a layer held in memory, its payloads as an exporter
    /// writes them (one per inode, at its first name in path order).
    ///
    /// # Errors
    /// Errors reading the layer.
    pub fn from_mem(layer: &MemLayer) -> Result<LayerInput> {
        let mut files: Vec<(LayerPath, Metadata)> = walk(layer)?
            .into_iter()
            .filter_map(|(path, entry)| match entry {
                Entry::Node(node) if node.meta.file_type == FileType::File => {
                    Some((path, node.meta))
                }
                _ => None,
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut payloads = Vec::new();
        let mut seen = HashSet::new();
        for (path, meta) in files {
            if !seen.insert(meta.ino) {
                continue;
            }
            payloads.push(Payload {
                sha256: sha256_of(layer, &path)?,
                size: meta.size,
                meta: PayloadMeta::of(&meta),
                path,
            });
        }
        Ok(LayerInput {
            layer: Arc::new(layer.clone()),
            payloads,
            compressed: 0,
            digest: None,
            created_by: None,
        })
    }
}

/// The figures of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFigures {
    /// Index, bottom = 0.
    pub index: usize,
    /// The blob's digest.
    pub digest: Option<String>,
    /// The history's `created_by`.
    pub created_by: Option<String>,
    /// Payload bytes.
    pub shipped: u64,
    /// The blob's size.
    pub compressed: u64,
    /// Bytes of this layer's payloads that are in the final tree.
    pub adds: u64,
    /// Bytes this layer made wasted (overwrote, deleted, hid, re-shipped),
    /// its own payloads included.
    pub wastes: u64,
}

/// One wasted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WastedCopy {
    /// The layer that shipped it.
    pub layer: usize,
    /// Its bytes.
    pub bytes: u64,
    /// Why it is not in the final tree.
    pub reason: WasteReason,
    /// The layer that caused it.
    pub by: usize,
}

/// The wasted payloads shipped at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WastedPath {
    /// The path.
    pub path: LayerPath,
    /// `wasted(p)`: the sum of its wasted copies.
    pub bytes: u64,
    /// Each wasted copy, bottom layer first.
    pub copies: Vec<WastedCopy>,
}

/// The analysis of an image (see the [module documentation](Analysis)).
///
/// Where an image's bytes go: what each layer ships, what stays visible in
/// the final tree, and why the rest is wasted.
///
/// The definitions (exact, and the same in the tool's output):
///
/// - A **payload** is the data of one regular-file entry of a layer tar:
///   its `size` bytes. Hard links, directories, symlinks, devices and
///   whiteouts ship no payload. `shipped(i)` is the sum of layer *i*'s
///   payloads; its compressed size is the blob's.
/// - **visible** is the bytes of regular files in the final tree, each
///   inode once (a hard-linked file counts once).
/// - **wasted** `= Σ shipped − visible`; **efficiency** `= visible / Σ
///   shipped` (1 for an image that ships nothing).
/// - A payload is visible when its inode is in the final tree (under any of
///   its names); every other payload is wasted, with one reason and the
///   layer that caused it: [`WasteReason`]. Per path, `wasted(p)` is the sum
///   of the wasted payloads shipped at `p` (`Σ copies − the final copy`, 0
///   if it is gone), and the per-path figures add up to the total exactly.
/// - **User** figures count from a base the user names (its first `base`
///   layers): the bytes the user's layers ship, and the waste whose cause is
///   one of the user's layers (a base file the user deletes counts; waste
///   inside the base does not).
///
/// ```
/// # use layerstack::oci::{Analysis, LayerInput};
/// # use layerstack::MemLayer;
/// let mut base = MemLayer::new();
/// base.add_file("log", vec![0u8; 1024])?;
/// let mut grown = MemLayer::new();
/// grown.add_file("log", vec![1u8; 4096])?;
/// let a = Analysis::of_layers(&[LayerInput::from_mem(&base)?, LayerInput::from_mem(&grown)?], 0)?;
/// assert_eq!((a.shipped, a.visible, a.wasted), (5120, 4096, 1024));
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Per layer, bottom first.
    pub layers: Vec<LayerFigures>,
    /// `Σ shipped`.
    pub shipped: u64,
    /// `Σ compressed`.
    pub compressed: u64,
    /// Bytes of regular files in the final tree, each inode once.
    pub visible: u64,
    /// `shipped − visible`.
    pub wasted: u64,
    /// Paths with wasted bytes, most wasted first (then by path).
    pub paths: Vec<WastedPath>,
    /// Top-level directories (and files) of the final tree by visible
    /// bytes, largest first.
    pub top_level: Vec<(String, u64)>,
    /// How many bottom layers are the base for the user figures.
    pub base: usize,
    /// Bytes the user's layers ship.
    pub user_shipped: u64,
    /// Wasted bytes whose cause is one of the user's layers.
    pub user_wasted: u64,
}

impl Analysis {
    /// `visible / shipped` (1 when nothing is shipped).
    #[must_use]
    pub fn efficiency(&self) -> f64 {
        ratio(self.visible, self.shipped, 1.0)
    }

    /// `user_wasted / user_shipped` (0 when the user ships nothing).
    #[must_use]
    pub fn user_wasted_ratio(&self) -> f64 {
        ratio(self.user_wasted, self.user_shipped, 0.0)
    }

    /// Analyses the layers of `image` in `store`, the first `base` of them
    /// being the base for the user figures. Each layer blob is read twice:
    /// imported for the tree (its digest and DiffID checked), then scanned
    /// for its payloads.
    ///
    /// # Errors
    /// The errors of [`ImageStore::layers`], and of reading a blob.
    pub fn of_image(store: &ImageStore, image: &Image, base: usize) -> Result<Analysis> {
        let top_first = store.layers(image)?;
        let n = top_first.len();
        let history = image.layer_commands();
        let mut inputs = Vec::with_capacity(n);
        for (i, descriptor) in image.layers().iter().enumerate() {
            let blob = store
                .layout()
                .open_blob(&descriptor.digest, Some(descriptor.size))?;
            let payloads = payloads_of(blob, &image.reference, i)?;
            inputs.push(LayerInput {
                layer: Arc::clone(&top_first[n - 1 - i]),
                payloads,
                compressed: descriptor.size,
                digest: Some(descriptor.digest.to_string()),
                created_by: history.get(i).cloned().flatten(),
            });
        }
        Analysis::of_layers(&inputs, base)
    }

    /// Analyses `layers` (bottom first); the first `base` are the base.
    ///
    /// # Errors
    /// Errors reading the layers.
    pub fn of_layers(layers: &[LayerInput], base: usize) -> Result<Analysis> {
        let n = layers.len();
        let base = base.min(n);
        let top_first: Vec<Arc<dyn Layer>> =
            layers.iter().rev().map(|l| Arc::clone(&l.layer)).collect();
        let view = MergedView::new(top_first, MemLayer::new())?;
        // (layer, inode in that layer) of every regular file in the final
        // tree, with its size; and visible bytes per top-level name.
        let mut visible_inodes: HashMap<(usize, u64), u64> = HashMap::new();
        let mut top_level: BTreeMap<String, u64> = BTreeMap::new();
        let mut todo = vec![LayerPath::root()];
        while let Some(dir) = todo.pop() {
            for entry in view.read_dir([b"/".as_slice(), dir.as_bytes()].concat())? {
                let path = dir.join(&entry.name)?;
                match entry.file_type {
                    FileType::Dir => todo.push(path),
                    FileType::File => {
                        let LayerSource::Lower(k) = entry.source else {
                            continue;
                        };
                        let i = n - 1 - k;
                        let Some(Entry::Node(node)) = layers[i].layer.lookup(&path)? else {
                            continue;
                        };
                        if visible_inodes
                            .insert((i, node.meta.ino), node.meta.size)
                            .is_none()
                        {
                            let top = path
                                .names()
                                .next()
                                .unwrap_or_default()
                                .to_string_lossy()
                                .into_owned();
                            *top_level.entry(top).or_default() += node.meta.size;
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut figures: Vec<LayerFigures> = layers
            .iter()
            .enumerate()
            .map(|(index, l)| LayerFigures {
                index,
                digest: l.digest.clone(),
                created_by: l.created_by.clone(),
                shipped: l.payloads.iter().map(|p| p.size).sum(),
                compressed: l.compressed,
                adds: 0,
                wastes: 0,
            })
            .collect();
        let mut by_path: BTreeMap<LayerPath, Vec<WastedCopy>> = BTreeMap::new();
        for (i, input) in layers.iter().enumerate() {
            for (pos, payload) in input.payloads.iter().enumerate() {
                let last_here = !input.payloads[pos + 1..]
                    .iter()
                    .any(|p| p.path == payload.path);
                let inode = if last_here {
                    match input.layer.lookup(&payload.path)? {
                        Some(Entry::Node(node)) if node.meta.file_type == FileType::File => {
                            Some(node.meta.ino)
                        }
                        _ => None,
                    }
                } else {
                    None
                };
                if inode.is_some_and(|ino| visible_inodes.contains_key(&(i, ino))) {
                    figures[i].adds += payload.size;
                    continue;
                }
                let (reason, by) = why_wasted(layers, i, pos, payload)?;
                figures[by].wastes += payload.size;
                by_path
                    .entry(payload.path.clone())
                    .or_default()
                    .push(WastedCopy {
                        layer: i,
                        bytes: payload.size,
                        reason,
                        by,
                    });
            }
        }
        let shipped: u64 = figures.iter().map(|f| f.shipped).sum();
        let visible: u64 = visible_inodes.values().sum();
        let mut paths: Vec<WastedPath> = by_path
            .into_iter()
            .map(|(path, copies)| WastedPath {
                bytes: copies.iter().map(|c| c.bytes).sum(),
                path,
                copies,
            })
            .filter(|p| p.bytes > 0)
            .collect();
        paths.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
        let mut top_level: Vec<(String, u64)> = top_level.into_iter().collect();
        top_level.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let user_wasted = paths
            .iter()
            .flat_map(|p| &p.copies)
            .filter(|c| c.by >= base)
            .map(|c| c.bytes)
            .sum();
        Ok(Analysis {
            user_shipped: figures[base..].iter().map(|f| f.shipped).sum(),
            compressed: figures.iter().map(|f| f.compressed).sum(),
            layers: figures,
            shipped,
            visible,
            wasted: shipped - visible,
            paths,
            top_level,
            base,
            user_wasted,
        })
    }
}

fn ratio(a: u64, b: u64, empty: f64) -> f64 {
    if b == 0 {
        empty
    } else {
        // Byte counts below 2^53 convert exactly.
        #[allow(clippy::cast_precision_loss)]
        let r = a as f64 / b as f64;
        r
    }
}

/// Why payload `pos` of layer `i` is not in the final tree, and which layer
/// caused it: the first entry after it, in its own layer or above, that
/// replaces, deletes or hides its path.
fn why_wasted(
    layers: &[LayerInput],
    i: usize,
    pos: usize,
    payload: &Payload,
) -> Result<(WasteReason, usize)> {
    let path = &payload.path;
    // A later payload at the same path in the same tar replaced it.
    if let Some(later) = layers[i].payloads[pos + 1..]
        .iter()
        .find(|p| p.path == *path)
    {
        return Ok((compare(payload, later), i));
    }
    // Replaced within its own layer by an entry that is no payload (a
    // later entry of another kind at the same name).
    if let Some(Entry::Node(node)) = layers[i].layer.lookup(path)?
        && node.meta.file_type != FileType::File
    {
        return Ok((WasteReason::Overwritten, i));
    }
    let names: Vec<&crate::path::Name> = path.names().collect();
    for (j, above) in layers.iter().enumerate().skip(i + 1) {
        let mut at = LayerPath::root();
        for name in &names[..names.len().saturating_sub(1)] {
            at = at.join(name)?;
            match above.layer.lookup(&at)? {
                Some(Entry::Whiteout) => return Ok((WasteReason::Deleted, j)),
                Some(Entry::Node(node)) if !node.meta.is_dir() => {
                    return Ok((WasteReason::Overwritten, j));
                }
                Some(Entry::Node(node)) if node.opaque => {
                    return Ok((WasteReason::HiddenByOpaque, j));
                }
                _ => {}
            }
        }
        match above.layer.lookup(path)? {
            Some(Entry::Whiteout) => return Ok((WasteReason::Deleted, j)),
            Some(Entry::Node(node)) if node.meta.file_type == FileType::File => {
                let later = Payload {
                    path: path.clone(),
                    size: node.meta.size,
                    sha256: sha256_of(above.layer.as_ref(), path)?,
                    meta: PayloadMeta::of(&node.meta),
                };
                return Ok((compare(payload, &later), j));
            }
            Some(Entry::Node(_)) => return Ok((WasteReason::Overwritten, j)),
            None => {}
        }
    }
    // Nothing above explains it: its layer no longer holds it.
    Ok((WasteReason::Overwritten, i))
}

fn compare(old: &Payload, new: &Payload) -> WasteReason {
    if old.sha256 != new.sha256 || old.size != new.size {
        WasteReason::Overwritten
    } else if old.meta != new.meta {
        WasteReason::MetadataOnly
    } else {
        WasteReason::Duplicate
    }
}

fn sha256_of(layer: &dyn Layer, path: &LayerPath) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    loop {
        let chunk = layer.read_at(path, offset, 1 << 20)?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(&chunk);
        offset += chunk.len() as u64;
    }
    Ok(hasher.finalize().into())
}

/// The payloads of a layer blob, in tar order.
fn payloads_of(blob: impl Read, image: &str, index: usize) -> Result<Vec<Payload>> {
    let reading = |e: &std::io::Error| {
        Error::from_io(e, Operation::ReadBlob, image)
            .with_layer(index.to_string())
            .with_detail(format!("reading the layer: {e}"))
    };
    let decompressor = Decompressor::new(blob).map_err(|e| reading(&e))?;
    let mut tar = TarReader::new(decompressor, crate::oci::tar::read::Limits::default());
    let mut payloads = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Some(entry) = tar.next_entry()? {
        let name = entry.path.file_name().unwrap_or_default();
        if !matches!(entry.kind, TarKind::File) || !matches!(classify(name), Ok(TarName::Plain(_)))
        {
            continue;
        }
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let n = tar.read_data(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        payloads.push(Payload {
            path: entry.path,
            size,
            sha256: hasher.finalize().into(),
            meta: PayloadMeta {
                mode: entry.mode,
                uid: entry.uid,
                gid: entry.gid,
                mtime: entry.mtime,
                xattrs: entry
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_vec()))
                    .collect(),
            },
        });
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;

    fn layer(build: impl FnOnce(&mut MemLayer) -> Result<()>) -> LayerInput {
        let mut l = MemLayer::new();
        build(&mut l).expect("build a test layer");
        LayerInput::from_mem(&l).expect("read a test layer")
    }

    fn bytes(n: u64, fill: u8) -> Vec<u8> {
        vec![fill; usize::try_from(n).expect("small")]
    }

    fn reasons(a: &Analysis) -> Vec<(String, WasteReason, usize, usize)> {
        a.paths
            .iter()
            .flat_map(|p| {
                p.copies
                    .iter()
                    .map(move |c| (p.path.to_string(), c.reason, c.layer, c.by))
            })
            .collect()
    }

    /// A file that grows: only the old copy is waste (dive counts the
    /// smallest copy as the kept one, so almost all of it as waste).
    #[test]
    fn a_grown_file_wastes_only_its_old_copy() {
        let a = Analysis::of_layers(
            &[
                layer(|l| l.add_file("log", bytes(KIB, 1))),
                layer(|l| l.add_file("log", bytes(MIB, 2))),
            ],
            0,
        )
        .unwrap();
        assert_eq!((a.wasted, a.visible), (KIB, MIB));
        assert!((a.efficiency() - 0.999).abs() < 0.001, "{}", a.efficiency());
        assert_eq!(
            reasons(&a),
            [("log".into(), WasteReason::Overwritten, 0, 1)]
        );
    }

    #[test]
    fn a_deleted_file_is_all_waste() {
        let a = Analysis::of_layers(
            &[
                layer(|l| l.add_file("big", bytes(100 * MIB, 1))),
                layer(|l| l.add_whiteout("big")),
            ],
            0,
        )
        .unwrap();
        assert_eq!((a.wasted, a.visible, a.efficiency()), (100 * MIB, 0, 0.0));
        assert_eq!(reasons(&a), [("big".into(), WasteReason::Deleted, 0, 1)]);
        assert_eq!((a.layers[1].wastes, a.layers[0].adds), (100 * MIB, 0));
    }

    /// dive counts a deleted directory as no waste.
    #[test]
    fn a_deleted_directory_wastes_everything_below_it() {
        let a = Analysis::of_layers(
            &[
                layer(|l| {
                    l.add_file("d/a", bytes(5 * MIB, 1))?;
                    l.add_file("d/b", bytes(3 * MIB, 2))
                }),
                layer(|l| l.add_whiteout("d")),
            ],
            0,
        )
        .unwrap();
        assert_eq!((a.wasted, a.efficiency()), (8 * MIB, 0.0));
        assert_eq!(
            reasons(&a),
            [
                ("d/a".into(), WasteReason::Deleted, 0, 1),
                ("d/b".into(), WasteReason::Deleted, 0, 1)
            ]
        );
    }

    /// dive ignores opaque directories.
    #[test]
    fn an_opaque_directory_wastes_what_it_hides() {
        let a = Analysis::of_layers(
            &[
                layer(|l| l.add_file("d/a", bytes(8 * MIB, 1))),
                layer(|l| l.add_opaque_dir("d")),
            ],
            0,
        )
        .unwrap();
        assert_eq!((a.wasted, a.efficiency()), (8 * MIB, 0.0));
        assert_eq!(
            reasons(&a),
            [("d/a".into(), WasteReason::HiddenByOpaque, 0, 1)]
        );
    }

    #[test]
    fn a_chmod_layer_reships_for_metadata_only() {
        let a = Analysis::of_layers(
            &[
                layer(|l| l.add_file("f", bytes(10 * MIB, 7))),
                layer(|l| {
                    l.add_file_with(
                        "f",
                        bytes(10 * MIB, 7),
                        Metadata::new(FileType::File).with_mode(0o600),
                    )
                }),
            ],
            0,
        )
        .unwrap();
        assert_eq!((a.wasted, a.efficiency()), (10 * MIB, 0.5));
        assert_eq!(reasons(&a), [("f".into(), WasteReason::MetadataOnly, 0, 1)]);
    }

    #[test]
    fn the_same_file_shipped_twice_is_a_duplicate_and_a_hard_link_ships_once() {
        let a = Analysis::of_layers(
            &[
                layer(|l| {
                    l.add_file("f", bytes(KIB, 3))?;
                    l.add_hard_link("f", "g")
                }),
                layer(|l| l.add_file("f", bytes(KIB, 3))),
            ],
            1,
        )
        .unwrap();
        // Layer 0 ships f once (g is a link); layer 1 ships it again. The
        // final tree holds layer 1's f and layer 0's inode (through g).
        assert_eq!((a.shipped, a.visible, a.wasted), (2 * KIB, 2 * KIB, 0));
        let a = Analysis::of_layers(
            &[
                layer(|l| l.add_file("f", bytes(KIB, 3))),
                layer(|l| l.add_file("f", bytes(KIB, 3))),
            ],
            1,
        )
        .unwrap();
        assert_eq!(reasons(&a), [("f".into(), WasteReason::Duplicate, 0, 1)]);
        // The user's layer (1) caused it; the base shipped it.
        assert_eq!((a.user_shipped, a.user_wasted), (KIB, KIB));
    }
}
