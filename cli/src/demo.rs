//! `demo`: an image built in three steps, as a Dockerfile would build it,
//! and what is inside: each layer's changes, the whiteouts and opaque
//! markers in its tar, the merged tree, and a base layer two images share.

use std::collections::BTreeSet;
use std::fs;
use std::io;

use camino::Utf8Path;
use layerstack::oci::{
    BuildOptions, Decompressor, Descriptor, Image, ImageStore, Limits, OciLayout, TarReader,
};
use layerstack::oci::{TarName, classify};
use layerstack::{Error, ErrorKind, MemLayer, MergedView, Operation, Result};

use crate::ls;
use crate::outln;
use crate::output::{Out, thousands};

/// The tags the demo writes (and the only ones it overwrites).
const TAG: &str = "demo";
const WEB_TAG: &str = "demo-web";

const STEP_BASE: &str = "COPY rootfs/ /";
const STEP_EDIT: &str =
    "RUN sed -i s/80/8080/ /etc/app.conf && rm /etc/motd && rm -r /var/cache/app";
const STEP_RECREATE: &str = "RUN mkdir /var/cache/app && echo 'new index' > /var/cache/app/index.db \
     && rm -r /srv/www && mkdir /srv/www && echo '<h1>v2</h1>' > /srv/www/index.html";
const STEP_WEB: &str = "COPY api/ /srv/api/";

/// A build step: what it does to the image so far.
type Step = fn(&MergedView) -> Result<()>;

/// Step 1: the base files.
fn base_files(fs: &MergedView) -> Result<()> {
    fs.create_dir_all("etc")?;
    fs.write("etc/app.conf", "port = 80\n")?;
    fs.write("etc/motd", "Welcome to the layerstack demo!\n")?;
    fs.create_dir_all("usr/bin")?;
    fs.write("usr/bin/hello", "#!/bin/sh\necho hello\n")?;
    fs.set_permissions("usr/bin/hello", 0o755)?;
    fs.symlink("hello", "usr/bin/hi")?;
    fs.create_dir_all("var/cache/app")?;
    fs.write("var/cache/app/index.db", "old index\n")?;
    fs.write("var/cache/app/thumbs.db", "old thumbnails\n")?;
    fs.create_dir_all("srv/www")?;
    fs.write("srv/www/index.html", "<h1>v1</h1>\n")?;
    fs.write("srv/www/old.html", "<h1>old page</h1>\n")
}

/// Step 2: modify a file, delete a file, delete a directory.
fn edit(fs: &MergedView) -> Result<()> {
    fs.write("etc/app.conf", "port = 8080\n")?;
    fs.remove_file("etc/motd")?;
    fs.remove_dir_all("var/cache/app")
}

/// Step 3: recreate the deleted directory with new contents; and delete
/// and recreate another directory within this one step.
fn recreate(fs: &MergedView) -> Result<()> {
    fs.create_dir("var/cache/app")?;
    fs.write("var/cache/app/index.db", "new index\n")?;
    fs.remove_dir_all("srv/www")?;
    fs.create_dir("srv/www")?;
    fs.write("srv/www/index.html", "<h1>v2</h1>\n")
}

/// The second image's own step.
fn web(fs: &MergedView) -> Result<()> {
    fs.create_dir_all("srv/api")?;
    fs.write("srv/api/health", "ok\n")
}

/// The layout in `dir`: a new one, or the one an earlier demo wrote. Any
/// other non-empty directory is refused, so the demo never overwrites
/// something it did not make.
fn demo_layout(dir: &Utf8Path) -> Result<OciLayout> {
    let refuse = |why: &str| {
        Error::new(ErrorKind::DirectoryNotEmpty, Operation::BuildImage, dir).with_detail(format!(
            "{why}; `layerstack demo` writes only into a new or empty directory, or one it wrote before"
        ))
    };
    let names: Vec<String> = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(refuse("it is not a directory"));
        }
        Err(e) => return Err(Error::from_io(&e, Operation::ReadDir, dir)),
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()
            .map_err(|e| Error::from_io(&e, Operation::ReadDir, dir))?,
    };
    if names.is_empty() {
        return OciLayout::create(dir);
    }
    // `.layerstack`: the layout's layer cache.
    let layout_files = ["oci-layout", "index.json", "blobs", ".layerstack"];
    if !names.iter().all(|n| layout_files.contains(&n.as_str())) {
        return Err(refuse(
            "the directory holds other files than an image layout",
        ));
    }
    let layout = if names.iter().any(|n| n == "oci-layout") {
        OciLayout::open(dir).map_err(|_| refuse("it is not an image layout"))?
    } else {
        // An earlier run stopped (killed, or by a full disk) before it
        // finished the layout: finish it, if nothing else is there.
        OciLayout::resume(dir).map_err(|e| {
            if e.kind() == ErrorKind::DirectoryNotEmpty {
                refuse("it is not an image layout, nor one an earlier run left unfinished")
            } else {
                e
            }
        })?
    };
    if let Some((other, _)) = layout
        .tags()?
        .iter()
        .find(|(t, _)| t != TAG && t != WEB_TAG)
    {
        return Err(refuse(&format!(
            "the layout has the tag `{other}`, not one of the demo's"
        )));
    }
    Ok(layout)
}

/// A whiteout or opaque marker of a layer tar.
struct Marker {
    /// The entry's name, as the tar spells it.
    name: String,
    /// What it hides: the deleted path, or the opaque directory.
    path: String,
    opaque: bool,
}

/// The whiteouts and opaque markers of a layer blob, read back from the
/// layout in the order of the tar.
fn markers(store: &ImageStore, layer: &Descriptor) -> Result<Vec<Marker>> {
    let blob = store.layout().open_layer(layer)?;
    let tar = Decompressor::new(blob)
        .map_err(|e| Error::from_io(&e, Operation::ReadBlob, layer.digest.to_string()))?;
    let mut reader = TarReader::new(tar, Limits::default());
    let mut out = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        let dir = entry.path.parent().unwrap_or_default();
        let prefix = if dir.is_root() {
            String::new()
        } else {
            format!("{}/", dir.as_name().to_string_lossy())
        };
        let name = entry.path.file_name().unwrap_or_default();
        match classify(name) {
            Ok(TarName::Whiteout(target)) => out.push(Marker {
                name: entry.name.to_string_lossy().into_owned(),
                path: format!("/{prefix}{target}"),
                opaque: false,
            }),
            Ok(TarName::Opaque) => out.push(Marker {
                name: entry.name.to_string_lossy().into_owned(),
                path: format!("/{}", dir.as_name().to_string_lossy()),
                opaque: true,
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// The regular files in `blobs/sha256` of the layout and their bytes, as
/// the directory holds them.
fn stored_blobs(layout: &OciLayout) -> Result<(usize, u64)> {
    let dir = layout.root().join("blobs/sha256");
    let fail = |e: io::Error| Error::from_io(&e, Operation::ReadDir, &dir);
    let (mut count, mut bytes) = (0, 0);
    for entry in fs::read_dir(&dir).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let meta = entry.metadata().map_err(fail)?;
        let name = entry.file_name();
        let is_digest = name.len() == 64
            && name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
        if meta.is_file() && is_digest {
            count += 1;
            bytes += meta.len();
        }
    }
    Ok((count, bytes))
}

/// The blobs an image references: its manifest, its config, its layers.
fn referenced(image: &Image) -> Vec<&Descriptor> {
    let mut out = vec![&image.descriptor, &image.manifest.config];
    out.extend(image.layers());
    out
}

fn short_ids(image: &Image) -> String {
    image
        .layers()
        .iter()
        .map(|d| d.digest.short())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `layerstack demo [DIR]`.
pub fn run(dir: &Utf8Path, out: &mut Out) -> Result<()> {
    let layout = demo_layout(dir)?;
    let store = ImageStore::new(layout);

    outln!(
        out,
        "layerstack demo: an image built in three steps, as a Dockerfile builds one,"
    )?;
    outln!(
        out,
        "written to `{dir}` (an OCI image layout), and what is inside it."
    )?;
    outln!(
        out,
        "Nothing is mounted and nothing needs root: layers are values in memory."
    )?;

    // Fixed times (the defaults): the same steps always give the same bytes.
    let steps: [(&str, Step); 3] = [
        (STEP_BASE, base_files),
        (STEP_EDIT, edit),
        (STEP_RECREATE, recreate),
    ];
    let mut build = store.builder(None, BuildOptions::default())?;
    for (created_by, step) in steps {
        build.step(created_by, step)?;
    }
    let image = build.finish(TAG)?;

    let changes = store.changes(&image)?;
    let top_first = store.layers(&image)?;
    let n = top_first.len();
    for (i, layer) in image.layers().iter().enumerate() {
        outln!(out)?;
        outln!(out, "Step {}: {}", i + 1, steps[i].0)?;
        outln!(
            out,
            "  made layer {i}: {} ({} bytes, gzip)",
            layer.digest.short(),
            thousands(layer.size)
        )?;
        outln!(
            out,
            "  what it changes (as `docker diff` says it: A added, C changed, D deleted):"
        )?;
        for c in &changes[i] {
            outln!(out, "    {c}")?;
        }
        let marks = markers(&store, layer)?;
        if marks.is_empty() {
            outln!(out, "  whiteouts and opaque markers in its tar: none")?;
            continue;
        }
        outln!(out, "  whiteouts and opaque markers in its tar:")?;
        // What the layers below show, to say what each whiteout hides.
        let below = MergedView::new(top_first[n - i..].to_vec(), MemLayer::new())?;
        let width = marks.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in &marks {
            let what = if m.opaque {
                format!(
                    "opaque marker: nothing from the layers below shows in {}",
                    m.path
                )
            } else if below
                .symlink_metadata(&m.path)
                .is_ok_and(|meta| meta.is_dir())
            {
                format!("whiteout: deletes {} and everything in it", m.path)
            } else {
                format!("whiteout: deletes {}", m.path)
            };
            outln!(out, "    {:<width$}  {what}", m.name)?;
        }
    }
    outln!(out)?;
    outln!(
        out,
        "A layer tar can only add files, so a deletion is an empty file named"
    )?;
    outln!(
        out,
        "`.wh.<name>` (a whiteout), and a directory that was deleted and made again"
    )?;
    outln!(
        out,
        "within one step gets `.wh..wh..opq` (it is opaque). /var/cache/app was"
    )?;
    outln!(
        out,
        "deleted in step 2 and made again in step 3: the whiteout of layer 1 still"
    )?;
    outln!(
        out,
        "hides the old contents, so layer 2 needs no opaque marker for it."
    )?;

    outln!(out)?;
    outln!(
        out,
        "The merged tree, as a container started from `{TAG}` sees it"
    )?;
    outln!(out, "(LAYER: the layer each entry comes from, bottom = 0):")?;
    let view = store.container(&image)?;
    for line in ls::text_lines(&ls::list(&view, b"/", true)?, &image) {
        outln!(out, "  {line}")?;
    }

    // A second image whose first step is the same.
    let mut build = store.builder(None, BuildOptions::default())?;
    build.step(STEP_BASE, base_files)?;
    build.step(STEP_WEB, web)?;
    let web_image = build.finish(WEB_TAG)?;
    // Only blobs a tag references stay (an earlier demo's leftovers go).
    store.layout().collect_garbage()?;

    outln!(out)?;
    outln!(
        out,
        "A second image, `{WEB_TAG}`: the same first step, then `{STEP_WEB}`."
    )?;
    outln!(out, "  {TAG:<8}  layers {}", short_ids(&image))?;
    outln!(out, "  {WEB_TAG:<8}  layers {}", short_ids(&web_image))?;
    let shared = &image.layers()[0].digest;
    let same = web_image.layers()[0].digest == *shared;
    outln!(
        out,
        "  layer 0 of both is {}: {}",
        shared.short(),
        if same {
            "the same step gave the same bytes (sorted entries, fixed times), so the same digest"
        } else {
            "NOT the same digest"
        }
    )?;
    let mut all = referenced(&image);
    all.extend(referenced(&web_image));
    let unique: BTreeSet<_> = all.iter().map(|d| d.digest).collect();
    let referenced_bytes: u64 = all.iter().map(|d| d.size).sum();
    let (stored, stored_bytes) = stored_blobs(store.layout())?;
    outln!(
        out,
        "  the two images reference {} blobs (manifests, configs, layers): {} bytes",
        all.len(),
        thousands(referenced_bytes)
    )?;
    outln!(
        out,
        "  {dir}/blobs/sha256 holds {stored} files ({} different digests): {} bytes",
        unique.len(),
        thousands(stored_bytes)
    )?;
    outln!(
        out,
        "  stored once by digest, the shared layer saved {} bytes ({} fewer files)",
        thousands(referenced_bytes.saturating_sub(stored_bytes)),
        all.len().saturating_sub(stored)
    )?;

    outln!(out)?;
    outln!(out, "Look further:")?;
    outln!(out, "  layerstack ls {dir}:{TAG} -R")?;
    outln!(out, "  layerstack diff {dir}:{TAG}")?;
    outln!(out, "  layerstack cat {dir}:{TAG} etc/app.conf")?;
    outln!(out, "  layerstack inspect {dir}:{WEB_TAG}")?;
    outln!(out, "  layerstack unpack {dir}:{TAG} rootfs")?;
    Ok(())
}
