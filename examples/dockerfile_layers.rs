//! A Dockerfile's steps as image layers.
//!
//! Builds the image of [`DOCKERFILE`]: its `COPY` line with
//! `oci::build::build`, from a context the example writes, and its two
//! `RUN` lines as steps of `ImageStore::builder` (each step changes a
//! merged view of the image so far, and what it changed becomes one layer
//! tar in an OCI image layout). A real `RUN` needs root and a shell in the
//! image, which this `FROM scratch` image has not; the steps do what the
//! commands do, so the layers are the ones a build as root with a shell
//! would make, and the example runs anywhere. For each layer the example prints
//! what `docker diff` shows, then every entry of the layer's tar as it is
//! stored, with the whiteouts (`.wh.NAME`: NAME is deleted) and opaque
//! markers (`.wh..wh..opq`: nothing below shows through) explained.
//!
//! Run it with `cargo run --features oci --example dockerfile_layers [DIR]` (default: a
//! fresh directory under the system's temporary directory, removed at the
//! end).

use std::error::Error;
use std::io::Write;

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::MergedView;
use layerstack::oci::build::{BuildSpec, build};
use layerstack::oci::{BuildOptions, Decompressor, ImageStore, Limits, OciLayout, TarReader};
use layerstack::oci::{TarName, classify};

/// The Dockerfile of the image.
pub const DOCKERFILE: &str = "\
FROM scratch
COPY app/ /app/
RUN sed -i s/true/false/ /app/app.conf && rm /app/README
RUN rm -r /app/static && mkdir /app/static && echo ... > /app/static/site.css
CMD [\"/app/run\"]
";

/// The lines of [`DOCKERFILE`] `build` runs here: up to the first `RUN`.
const BUILT_LINES: usize = 2;

/// The build context: what `COPY app/ /app/` copies.
const CONTEXT: [(&str, &str); 4] = [
    ("app/app.conf", "debug = true\n"),
    ("app/README", "read me first\n"),
    ("app/static/logo.svg", "<svg/>\n"),
    ("app/static/old.css", "body { color: red }\n"),
];

fn main() -> Result<(), Box<dyn Error>> {
    let (dir, keep) = match std::env::args().nth(1) {
        Some(dir) => (Utf8PathBuf::from(dir), true),
        None => {
            let tmp = Utf8PathBuf::from_path_buf(std::env::temp_dir())
                .map_err(|p| format!("temporary directory {} is not UTF-8", p.display()))?;
            let dir = tmp.join(format!("layerstack-dockerfile-{}", std::process::id()));
            (dir, false)
        }
    };
    let result = run(&dir, &mut std::io::stdout().lock());
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn configure_app(fs: &MergedView) -> layerstack::Result<()> {
    fs.write("app/app.conf", "debug = false\n")?;
    fs.remove_file("app/README")
}

fn replace_static(fs: &MergedView) -> layerstack::Result<()> {
    fs.remove_dir_all("app/static")?;
    fs.create_dir("app/static")?;
    fs.write("app/static/site.css", "body { color: black }\n")
}

/// The example: builds the image into a layout in `dir`, prints to `out`.
pub fn run(dir: &Utf8Path, out: &mut dyn Write) -> Result<(), Box<dyn Error>> {
    let store = ImageStore::new(OciLayout::create(dir)?);
    // The context beside the layout, with the Dockerfile's first lines.
    let context = Utf8PathBuf::from(format!("{dir}-context"));
    for (path, contents) in CONTEXT {
        let at = context.join(path);
        std::fs::create_dir_all(at.parent().unwrap_or(&context))?;
        std::fs::write(at, contents)?;
    }
    let first: String = DOCKERFILE
        .lines()
        .take(BUILT_LINES)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(context.join("Dockerfile"), first)?;
    // Default options: fixed times, so the same steps give the same config.
    let spec = BuildSpec::new(context.join("Dockerfile"), context.clone(), "app-files");
    let copied = build(&store, &spec, &mut |_| {});
    let _ = std::fs::remove_dir_all(&context);
    let copied = copied?.image;
    // The RUN lines, as steps on that image.
    let mut build = store.builder(Some(&copied), BuildOptions::default())?;
    build.step(
        "RUN sed -i s/true/false/ /app/app.conf && rm /app/README",
        configure_app,
    )?;
    build.step(
        "RUN rm -r /app/static && mkdir /app/static && echo ... > /app/static/site.css",
        replace_static,
    )?;
    build.configure("CMD [\"/app/run\"]", |config| {
        config.insert("Cmd".into(), serde_json::json!(["/app/run"]));
    })?;
    let image = build.finish("app")?;
    writeln!(
        out,
        "Built `app` in {dir}: {} history entries, {} layers.",
        image.config.history.len(),
        image.layers().len()
    )?;
    writeln!(
        out,
        "The Dockerfile (its RUN lines done as builder steps, without root):"
    )?;
    for line in DOCKERFILE.lines() {
        writeln!(out, "  {line}")?;
    }

    let changes = store.changes(&image)?;
    let steps: Vec<_> = image
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .collect();
    for (i, layer) in image.layers().iter().enumerate() {
        writeln!(out)?;
        writeln!(
            out,
            "layer {i} ({}): {}",
            layer.digest.short(),
            steps[i].created_by.as_deref().unwrap_or("?")
        )?;
        writeln!(out, "  docker diff:")?;
        for change in &changes[i] {
            writeln!(out, "    {change}")?;
        }
        writeln!(out, "  the tar holds:")?;
        let blob = store.layout().open_blob(&layer.digest, Some(layer.size))?;
        let mut tar = TarReader::new(Decompressor::new(blob)?, Limits::default());
        while let Some(entry) = tar.next_entry()? {
            let name = entry.path.file_name().unwrap_or_default();
            let parent = entry.path.parent().unwrap_or_default();
            let meaning = match classify(name) {
                Ok(TarName::Whiteout(gone)) => {
                    format!("whiteout: deletes /{} below", parent.join(gone)?.as_name())
                }
                Ok(TarName::Opaque) => {
                    format!("opaque marker: /{} hides what is below", parent.as_name())
                }
                _ => format!("{:?}", entry.file_type()),
            };
            writeln!(out, "    {:<24} {meaning}", entry.name)?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "`CMD` changed only the config: its history entry is marked empty_layer, and it made no layer."
    )?;
    let container = store.container(&image)?;
    writeln!(
        out,
        "A container sees /app/app.conf = {:?}, and in /app/static: {:?}.",
        container.read_to_string("app/app.conf")?,
        container
            .read_dir("app/static")?
            .into_iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
    )?;
    Ok(())
}
