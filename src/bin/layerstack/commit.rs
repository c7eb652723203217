//! `commit`: a directory compared with an image, the difference appended
//! as a new layer under a new tag (as `umoci repack`).

use camino::Utf8Path;
use layerstack::oci::commit::layer_from_dir;
use layerstack::oci::{BuildOptions, StepOutcome};
use layerstack::{Result, Timestamp};

use crate::ImageRef;
use crate::ls::open_view;
use crate::output::{Out, Progress, thousands};

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
pub fn run(image: &ImageRef, dir: &Utf8Path, tag: &str, out: &mut Out) -> Result<()> {
    let (store, base) = image.open()?;
    let view = open_view(&store, &base)?;
    let layer = {
        let _progress = Progress::spinner(format!("comparing {dir} with {image}"));
        layer_from_dir(&view, dir)?
    };
    let mut builder = store.builder(Some(&base), BuildOptions::default().created(created()))?;
    let outcome = builder.add_layer_from(layer, CREATED_BY)?;
    let new = builder.finish(tag)?;
    let target = ImageRef {
        layout: image.layout.clone(),
        tag: Some(tag.to_owned()),
    };
    match outcome {
        StepOutcome::Empty => {
            out.line(format_args!(
                "{dir} is what {image} shows: {target} has no new layer, only a history entry"
            ))?;
        }
        StepOutcome::Layer(d) => {
            let index = new.layers().len() - 1;
            out.line(format_args!(
                "{target}: layer {index} {} ({} bytes) on {image}",
                d.digest.short(),
                thousands(d.size)
            ))?;
            let changes = store.changes(&new)?;
            for c in changes.last().into_iter().flatten() {
                out.line(format_args!("  {c}"))?;
            }
        }
    }
    Ok(())
}
