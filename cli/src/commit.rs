//! `commit`: a directory compared with an image, the difference appended
//! as a new layer under a new tag (as `umoci repack`).

use camino::Utf8Path;
use layerstack::oci::RootlessMap;
use layerstack::oci::check_tag;
use layerstack::oci::metadata_path;
use layerstack::oci::{BuildOptions, Durability, StepOutcome};
use layerstack::oci::{layer_from_dir_spilling, layer_from_rootless_dir};
use layerstack::{Error, ErrorKind, Operation, Result, Timestamp};

use crate::ImageRef;
use crate::ls::open_view;
use crate::output::{Out, Progress, escape_name, thousands};

/// What the history says made the layer.
const CREATED_BY: &str = "layerstack commit";

/// The image's creation time: `SOURCE_DATE_EPOCH` (for reproducible
/// images), else now.
fn created() -> Timestamp {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or_else(Timestamp::now, |sec| Timestamp::new(sec, 0))
}

/// `layerstack commit`.
///
/// Either it fails and `index.json` is as it was, or the tag is in: once it
/// is, nothing more can fail the command. A tag whose write could not be
/// synced, and a change list that cannot be read, are warnings on stderr.
pub fn run(image: &ImageRef, dir: &Utf8Path, tag: &str, out: &mut Out) -> Result<()> {
    check_tag(tag)?;
    if crate::registry::storage_target(image).is_some() {
        return Err(
            Error::new(ErrorKind::ReadOnly, Operation::Commit, image.to_string()).with_detail(
                "a registry's storage directory is read only: pull the image into a layout first",
            ),
        );
    }
    let (store, base) = image.open()?;
    let view = open_view(&store, &base)?;
    // A tree a rootless unpack wrote has its map beside it (none for `/`).
    let map = match metadata_path(dir) {
        Ok(at) => RootlessMap::read(&at)?.map(|map| (at, map)),
        Err(_) => None,
    };
    let layer = {
        let _progress = Progress::spinner(format!("comparing {dir} with {image}"));
        match &map {
            Some((_, map)) => layer_from_rootless_dir(&view, dir, map, store.spill())?,
            None => layer_from_dir_spilling(&view, dir, store.spill())?,
        }
    };
    let mut builder = store.builder(Some(&base), BuildOptions::default().created(created()))?;
    let outcome = builder.add_layer_from(layer, CREATED_BY)?;
    let (new, durability) = builder.finish_with_durability(tag)?;
    let target = ImageRef {
        layout: image.layout.clone(),
        tag: Some(tag.to_owned()),
    };
    if let Durability::Unconfirmed(e) = durability {
        crate::warn(format_args!(
            "{target} is tagged, but the tag may not survive a crash: {e}"
        ));
    }
    // Nothing below may fail the command: the tag is in.
    let report = |out: &mut Out| -> Result<()> {
        let shown = escape_name(dir.as_str());
        if let Some((at, _)) = &map {
            out.line(format_args!(
                "{shown} was unpacked rootless: owners, modes, extended attributes and device nodes only root can write are mapped back from {}",
                escape_name(at.as_str())
            ))?;
        }
        match outcome {
            StepOutcome::Empty => {
                out.line(format_args!(
                    "{shown} is what {} shows: {} has no new layer, only a history entry",
                    escape_name(image.to_string()),
                    escape_name(target.to_string())
                ))?;
            }
            StepOutcome::Layer(d) => {
                let index = new.layers().len() - 1;
                out.line(format_args!(
                    "{target}: layer {index} {} ({} bytes) on {image}",
                    d.digest.short(),
                    thousands(d.size)
                ))?;
                match store.changes(&new) {
                    Ok(changes) => {
                        for c in changes.last().into_iter().flatten() {
                            out.line(format_args!("  {c}"))?;
                        }
                    }
                    Err(e) => crate::warn(format_args!(
                        "{target} is tagged; listing its changes failed: {e}"
                    )),
                }
            }
        }
        Ok(())
    };
    if let Err(e) = report(out) {
        crate::warn(format_args!(
            "{target} is tagged; printing the result failed: {e}"
        ));
    }
    Ok(())
}
