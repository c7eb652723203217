//! `inspect`: an image's documents and layers, and what other tags share.

use std::collections::BTreeMap;

use layerstack::oci::media_type;
use layerstack::oci::{Compression, Digest, Image, ImageStore, index_layer, indexed_sizes};
use layerstack::{Error, ErrorKind, Operation, Result};
use serde_json::json;

use crate::ImageRef;
use crate::output::{Format, Out, Progress, thousands};

/// One layer as `inspect` reports it.
struct LayerReport {
    digest: Digest,
    diff_id: Digest,
    media_type: String,
    size: u64,
    /// `None` when not known without reading the layer.
    uncompressed: Option<u64>,
    created_by: Option<String>,
    /// Other tags whose images hold this layer blob, with its index there.
    shared_with: Vec<(String, usize)>,
}

/// The uncompressed size of layer `index` of `image` when it is known
/// without reading the layer: an uncompressed layer's size, the layout's
/// record of an earlier read, or the layer's cached index. With `read`, a
/// size not known is learnt by building the layer's index (one pass over
/// the blob, kept for next time and for `ls` and `cat`).
fn known_size(store: &ImageStore, image: &Image, index: usize, read: bool) -> Result<Option<u64>> {
    let d = &image.layers()[index];
    let diff_id = image.diff_ids()[index];
    if Compression::from_media_type(&d.media_type) == Some(Compression::None) && d.digest == diff_id
    {
        return Ok(Some(d.size));
    }
    if let Some(record) = store.layout().layer_record(&d.digest, &diff_id) {
        return Ok(Some(record.uncompressed_size));
    }
    if let Some((indexed, size)) = indexed_sizes(store.layout(), d, store.import_options())
        && indexed == diff_id
    {
        return Ok(Some(size));
    }
    if !read {
        return Ok(None);
    }
    uncompressed_size(store, image, index).map(Some)
}

/// The uncompressed size of layer `index` of `image` from its index (built
/// now if there is none); its DiffID is checked on the way.
fn uncompressed_size(store: &ImageStore, image: &Image, index: usize) -> Result<u64> {
    let d = &image.layers()[index];
    let progress = Progress::bytes(d.size, format!("indexing layer {index}"));
    let tell = |done: u64| progress.set_position(done);
    let (diff_id, len, _) = index_layer(store.layout(), d, store.import_options(), Some(&tell))?;
    let want = image.diff_ids()[index];
    if diff_id != want {
        return Err(Error::new(
            ErrorKind::InvalidData,
            Operation::ReadBlob,
            d.digest.to_string(),
        )
        .with_layer(index.to_string())
        .with_detail(format!(
            "the uncompressed layer's digest is {diff_id}, but the config's DiffID is {want}"
        )));
    }
    Ok(len)
}

/// For each layer digest, the other tags (and indexes) holding it.
fn shared_layers(
    store: &ImageStore,
    image: &Image,
) -> Result<BTreeMap<Digest, Vec<(String, usize)>>> {
    let mut out: BTreeMap<Digest, Vec<(String, usize)>> = BTreeMap::new();
    for (tag, _) in store.layout().tags()? {
        if tag == image.reference {
            continue;
        }
        let other = match store.image(Some(&tag)) {
            Ok(other) => other,
            Err(e) => {
                crate::warn(format_args!("tag `{tag}` left out: {e}"));
                continue;
            }
        };
        for (i, d) in other.layers().iter().enumerate() {
            out.entry(d.digest).or_default().push((tag.clone(), i));
        }
    }
    Ok(out)
}

/// `layerstack inspect`.
pub fn run(image: &ImageRef, sizes: bool, format: Format, out: &mut Out) -> Result<()> {
    let (store, img) = image.open()?;
    let shared = shared_layers(&store, &img)?;
    let commands = img.layer_commands();
    let mut layers = Vec::new();
    for (i, d) in img.layers().iter().enumerate() {
        layers.push(LayerReport {
            digest: d.digest,
            diff_id: img.diff_ids()[i],
            media_type: d.media_type.clone(),
            size: d.size,
            uncompressed: known_size(&store, &img, i, sizes)?,
            created_by: commands[i].clone(),
            shared_with: shared.get(&d.digest).cloned().unwrap_or_default(),
        });
    }
    let kind = if media_type::is_index(&img.descriptor.media_type) {
        "index"
    } else {
        "manifest"
    };
    let platform = format!("{}/{}", img.config.os, img.config.architecture);
    // History entries, each with the layer it made.
    let mut next_layer = 0;
    let history: Vec<(Option<usize>, &layerstack::oci::History)> = img
        .config
        .history
        .iter()
        .map(|h| {
            if h.empty_layer {
                (None, h)
            } else {
                next_layer += 1;
                (Some(next_layer - 1), h)
            }
        })
        .collect();
    match format {
        Format::Json => {
            let mut v = json!({
                "image": image.to_string(),
                "reference": img.reference,
                "config": {
                    "digest": img.manifest.config.digest.to_string(),
                    "size": img.manifest.config.size,
                },
                "platform": platform,
                "created": img.config.created,
                "layers": layers.iter().enumerate().map(|(i, l)| json!({
                    "index": i,
                    "digest": l.digest.to_string(),
                    "diff_id": l.diff_id.to_string(),
                    "media_type": l.media_type,
                    "size": l.size,
                    "uncompressed_size": l.uncompressed,
                    "created_by": l.created_by,
                    "shared_with": l.shared_with.iter().map(|(tag, at)| json!({
                        "tag": tag,
                        "layer": at,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "history": history.iter().map(|(layer, h)| json!({
                    "created": h.created,
                    "created_by": h.created_by,
                    "empty_layer": h.empty_layer,
                    "layer": layer,
                })).collect::<Vec<_>>(),
            });
            v[kind] = json!({
                "digest": img.descriptor.digest.to_string(),
                "media_type": img.descriptor.media_type,
                "size": img.descriptor.size,
            });
            out.json(&v)
        }
        Format::Text => {
            out.line(format_args!("image       {image}"))?;
            out.line(format_args!(
                "{kind:<10}  {} ({} bytes)",
                img.descriptor.digest,
                thousands(img.descriptor.size)
            ))?;
            out.line(format_args!(
                "config      {} ({} bytes)",
                img.manifest.config.digest,
                thousands(img.manifest.config.size)
            ))?;
            out.line(format_args!("platform    {platform}"))?;
            if let Some(created) = &img.config.created {
                out.line(format_args!("created     {created}"))?;
            }
            for (i, l) in layers.iter().enumerate() {
                out.line(format_args!(""))?;
                out.line(format_args!("layer {i}     {}", l.digest))?;
                out.line(format_args!("  DiffID      {}", l.diff_id))?;
                out.line(format_args!("  media type  {}", l.media_type))?;
                let uncompressed = match l.uncompressed {
                    Some(n) => format!("{} uncompressed", thousands(n)),
                    None => "uncompressed not known yet (--sizes reads the layer)".to_owned(),
                };
                out.line(format_args!(
                    "  size        {} bytes compressed, {uncompressed}",
                    thousands(l.size)
                ))?;
                if let Some(by) = &l.created_by {
                    out.line(format_args!("  created by  {by}"))?;
                }
                let shared = if l.shared_with.is_empty() {
                    "no other tag".to_owned()
                } else {
                    l.shared_with
                        .iter()
                        .map(|(tag, at)| format!("{tag} (layer {at})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                out.line(format_args!("  shared by   {shared}"))?;
            }
            if !history.is_empty() {
                out.line(format_args!(""))?;
                out.line(format_args!("history (bottom first)"))?;
                for (layer, h) in &history {
                    let what = match layer {
                        Some(i) => format!("layer {i}"),
                        None => "no layer".to_owned(),
                    };
                    out.line(format_args!(
                        "  {}  {what:<8}  {}",
                        h.created.as_deref().unwrap_or("-"),
                        h.created_by.as_deref().unwrap_or("-")
                    ))?;
                }
            }
            Ok(())
        }
    }
}
