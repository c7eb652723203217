//! `ls` and `cat`: the merged tree of an image, each entry with the layer
//! it comes from.

use layerstack::oci::{Image, ImageStore};
use std::cell::RefCell;

use layerstack::merged::LayerSource;
use layerstack::{LayerPath, MemLayer, MergedView, Metadata, Result};
use serde_json::{Value, json};

use crate::ImageRef;
use crate::output::{
    Format, Out, Progress, json_name, mode_string, rooted, size_string, type_name,
};

/// One entry of a listing.
pub struct Listed {
    /// The path from the image's root.
    pub path: LayerPath,
    pub meta: Metadata,
    /// A symlink's target.
    pub target: Option<layerstack::NameBuf>,
    /// The layer the entry comes from: its index, bottom = 0.
    pub layer: usize,
}

/// The image's layers under an empty upper layer: a container's view.
/// The layers are read lazily; a layer's first use builds its index,
/// with a progress bar on a terminal.
pub fn open_view(store: &ImageStore, image: &Image) -> Result<MergedView> {
    let bar: RefCell<Option<(usize, Progress)>> = RefCell::new(None);
    let count = image.layers().len();
    let tell = |layer: usize, done: u64, total: u64| {
        let mut bar = bar.borrow_mut();
        if bar.as_ref().is_none_or(|(l, _)| *l != layer) {
            *bar = Some((
                layer,
                Progress::bytes(
                    total,
                    format!(
                        "indexing layer {} of {count} of {}",
                        layer + 1,
                        image.reference
                    ),
                ),
            ));
        }
        if let Some((_, p)) = bar.as_ref() {
            p.set_position(done);
        }
    };
    let layers = store.layers_with_progress(image, Some(&tell))?;
    drop(bar);
    MergedView::new(layers, MemLayer::with_spill(store.spill().clone()))
}

/// The entries under `path` (or `path` itself, if it is not a directory),
/// sorted by name, depth first with `recursive`.
pub fn list(view: &MergedView, path: &[u8], recursive: bool) -> Result<Vec<Listed>> {
    let layers = view.layers().len();
    let bottom_index = |source: LayerSource| match source {
        // `Lower(i)` counts from the top; the manifest from the bottom.
        LayerSource::Lower(i) => layers - 1 - i,
        LayerSource::Upper => layers,
    };
    let meta = view.symlink_metadata(path)?;
    let mut out = Vec::new();
    if !meta.is_dir() {
        // One entry: its layer is in its parent's listing.
        let end = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
        let trimmed = &path[..end];
        let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        let parent = if parent.is_empty() { b"/" } else { parent };
        let dir = view.canonicalize(parent)?;
        let entry = view
            .read_dir(parent)?
            .into_iter()
            .find(|e| e.name.as_bytes() == name)
            .expect("an entry the view shows is in its directory's listing");
        out.push(listed(view, dir.join(name)?, bottom_index(entry.source))?);
        return Ok(out);
    }
    walk(
        view,
        &view.canonicalize(path)?,
        recursive,
        &bottom_index,
        &mut out,
    )?;
    Ok(out)
}

/// Lists `dir` into `out`, each subdirectory (with `recursive`) right
/// after its own entry.
fn walk(
    view: &MergedView,
    dir: &LayerPath,
    recursive: bool,
    bottom_index: &dyn Fn(LayerSource) -> usize,
    out: &mut Vec<Listed>,
) -> Result<()> {
    for entry in children(view, dir, bottom_index)? {
        let descend = recursive && entry.meta.is_dir();
        let path = entry.path.clone();
        out.push(entry);
        if descend {
            walk(view, &path, recursive, bottom_index, out)?;
        }
    }
    Ok(())
}

fn children(
    view: &MergedView,
    dir: &LayerPath,
    bottom_index: &dyn Fn(LayerSource) -> usize,
) -> Result<Vec<Listed>> {
    let at: &[u8] = if dir.is_root() { b"/" } else { dir.as_bytes() };
    view.read_dir(at)?
        .into_iter()
        .map(|e| listed(view, dir.join(&e.name)?, bottom_index(e.source)))
        .collect()
}

fn listed(view: &MergedView, path: LayerPath, layer: usize) -> Result<Listed> {
    let meta = view.symlink_metadata(path.as_name())?;
    let target = if meta.is_symlink() {
        Some(view.read_link(path.as_name())?)
    } else {
        None
    };
    Ok(Listed {
        path,
        meta,
        target,
        layer,
    })
}

/// The lines of a listing, as `ls` prints them (with a header).
pub fn text_lines(entries: &[Listed], image: &Image) -> Vec<String> {
    let owner = |l: &Listed| format!("{}:{}", l.meta.uid, l.meta.gid);
    let w_owner = entries
        .iter()
        .map(|l| owner(l).len())
        .max()
        .unwrap_or(0)
        .max(5);
    let w_size = entries
        .iter()
        .map(|l| size_string(&l.meta).len())
        .max()
        .unwrap_or(0)
        .max(4);
    let w_layer = entries
        .iter()
        .map(|l| l.layer.to_string().len())
        .max()
        .unwrap_or(1);
    let mut lines = vec![format!(
        "{:<10}  {:<w_owner$}  {:>w_size$}  {:<w$}  PATH",
        "MODE",
        "OWNER",
        "SIZE",
        "LAYER",
        w = w_layer + 13
    )];
    for l in entries {
        let digest = image
            .layers()
            .get(l.layer)
            .map_or_else(|| "-".repeat(12), |d| d.digest.short());
        let mut line = format!(
            "{}  {:<w_owner$}  {:>w_size$}  {:>w_layer$} {digest}  /{}",
            mode_string(&l.meta),
            owner(l),
            size_string(&l.meta),
            l.layer,
            layerstack::escape_name(l.path.as_bytes())
        );
        if let Some(target) = &l.target {
            line.push_str(" -> ");
            line.push_str(&layerstack::escape_name(target.as_bytes()));
        }
        lines.push(line);
    }
    lines
}

fn json_of(entries: &[Listed], image: &Image) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|l| {
                let mut v = json!({
                    "path": null,
                    "type": type_name(l.meta.file_type),
                    "mode": format!("{:04o}", l.meta.mode),
                    "uid": l.meta.uid,
                    "gid": l.meta.gid,
                    "size": l.meta.size,
                    "layer": l.layer,
                    "layer_digest": image.layers().get(l.layer).map(|d| d.digest.to_string()),
                });
                json_name(&mut v, "path", &rooted(&l.path));
                if let Some(target) = &l.target {
                    json_name(&mut v, "target", target.as_bytes());
                }
                if matches!(
                    l.meta.file_type,
                    layerstack::FileType::CharDevice | layerstack::FileType::BlockDevice
                ) {
                    v["rdev"] = json!([
                        layerstack::major(l.meta.rdev),
                        layerstack::minor(l.meta.rdev)
                    ]);
                }
                v
            })
            .collect(),
    )
}

/// `layerstack ls`.
pub fn ls(
    image: &ImageRef,
    path: &[u8],
    recursive: bool,
    format: Format,
    out: &mut Out,
) -> Result<()> {
    let (store, img) = image.open()?;
    let view = open_view(&store, &img)?;
    let entries = list(&view, path, recursive)?;
    match format {
        Format::Json => out.json(&json_of(&entries, &img)),
        Format::Text => {
            for line in text_lines(&entries, &img) {
                out.line(format_args!("{line}"))?;
            }
            Ok(())
        }
    }
}

/// `layerstack cat`.
pub fn cat(image: &ImageRef, path: &[u8], out: &mut Out) -> Result<()> {
    let (store, img) = image.open()?;
    let view = open_view(&store, &img)?;
    // In pieces: a file may be larger than memory (a layer can hold a
    // 50 GB file of zeros in a few MB).
    const PIECE: usize = 1 << 20;
    let mut offset = 0u64;
    loop {
        let piece = view.read_at(path, offset, PIECE)?;
        if piece.is_empty() {
            return Ok(());
        }
        out.bytes(&piece)?;
        offset += piece.len() as u64;
    }
}
