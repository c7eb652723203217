//! `diff`: what each layer adds, changes and deletes, as `docker diff`.

use layerstack::oci::{Change, ChangeKind};
use std::ffi::OsStr;

use layerstack::{Error, ErrorKind, LayerPath, Operation, Result};
use serde_json::{Value, json};

use crate::ImageRef;
use crate::output::{Format, Out, Progress, image_path, json_name, rooted};

/// A path of the command line (`/etc`, `etc/`, `./etc`) as a path of the
/// image.
fn layer_path(path: &[u8]) -> Result<LayerPath> {
    LayerPath::from_names(
        path.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b"."),
    )
}

pub fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "added",
        ChangeKind::Changed => "changed",
        ChangeKind::Deleted => "deleted",
    }
}

/// `layerstack diff`: every change, or (with `under`) those at that path
/// and below it.
pub fn run(
    image: &ImageRef,
    only: Option<usize>,
    under: Option<&OsStr>,
    format: Format,
    out: &mut Out,
) -> Result<()> {
    let under = under.map(image_path).map(layer_path).transpose()?;
    let within = |c: &Change| under.as_ref().is_none_or(|p| c.path.starts_with(p));
    let (store, img) = image.open()?;
    let count = img.layers().len();
    if let Some(n) = only
        && n >= count
    {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            Operation::OpenImage,
            &img.reference,
        )
        .with_detail(format!(
            "the image has no layer {n}: its {count} layers are numbered from 0, bottom first"
        )));
    }
    let changes = {
        let _progress = Progress::spinner(format!("reading {count} layers of {}", img.reference));
        store.changes(&img)?
    };
    let commands = img.layer_commands();
    let shown: Vec<usize> = match only {
        Some(n) => vec![n],
        None => (0..count).collect(),
    };
    match format {
        Format::Json => {
            let layers: Vec<Value> = shown
                .iter()
                .map(|&i| {
                    json!({
                        "index": i,
                        "digest": img.layers()[i].digest.to_string(),
                        "created_by": commands[i],
                        "changes": changes[i].iter().filter(|c| within(c)).map(|c: &Change| {
                            let mut change = json!({"kind": kind_name(c.kind), "path": null});
                            json_name(&mut change, "path", &rooted(&c.path));
                            change
                        }).collect::<Vec<_>>(),
                    })
                })
                .collect();
            out.json(&Value::Array(layers))
        }
        Format::Text => {
            for (n, &i) in shown.iter().enumerate() {
                if n > 0 {
                    out.line(format_args!(""))?;
                }
                let by = commands[i]
                    .as_deref()
                    .map(|c| format!("  {c}"))
                    .unwrap_or_default();
                out.line(format_args!(
                    "layer {i} {}{by}",
                    img.layers()[i].digest.short()
                ))?;
                let layer: Vec<&Change> = changes[i].iter().filter(|c| within(c)).collect();
                if layer.is_empty() {
                    out.line(format_args!("  (no changes)"))?;
                }
                for c in layer {
                    out.line(format_args!(
                        "  {} /{}",
                        c.kind.letter(),
                        layerstack::escape_name(c.path.as_bytes())
                    ))?;
                }
            }
            Ok(())
        }
    }
}
