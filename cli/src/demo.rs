//! `demo`: an image built from a Dockerfile, one layer per line that
//! changes files, and what is inside: each layer's changes, the whiteouts
//! and opaque markers in its tar, the merged tree, the build cache, and a
//! base layer two images share.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;

use camino::Utf8Path;
use layerstack::oci::build::{BuildSpec, build};
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

/// The Dockerfile of `demo`.
const DOCKERFILE: &str = "\
FROM scratch
COPY rootfs/ /
RUN sed -i s/80/8080/ /etc/app.conf && rm /etc/motd && rm -r /var/cache/app
RUN mkdir /var/cache/app && echo 'new index' > /var/cache/app/index.db && rm -r /srv/www && mkdir /srv/www && echo '<h1>v2</h1>' > /srv/www/index.html
";

/// The Dockerfile of `demo-web`: the same first lines, then its own.
const WEB_DOCKERFILE: &str = "\
FROM scratch
COPY rootfs/ /
COPY api/ /srv/api/
";

/// The lines of [`DOCKERFILE`] the build engine builds: up to the first
/// `RUN`.
const BUILT_LINES: usize = 2;

/// The build context: the files the `COPY` lines copy, with their modes
/// (set explicitly, so that the umask does not change the layers).
const CONTEXT: [(&str, &str, u32); 9] = [
    ("rootfs/etc/app.conf", "port = 80\n", 0o644),
    (
        "rootfs/etc/motd",
        "Welcome to the layerstack demo!\n",
        0o644,
    ),
    ("rootfs/usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755),
    ("rootfs/var/cache/app/index.db", "old index\n", 0o644),
    ("rootfs/var/cache/app/thumbs.db", "old thumbnails\n", 0o644),
    ("rootfs/srv/www/index.html", "<h1>v1</h1>\n", 0o644),
    ("rootfs/srv/www/old.html", "<h1>old page</h1>\n", 0o644),
    ("api/health", "ok\n", 0o644),
    ("Dockerfile.web", WEB_DOCKERFILE, 0o644),
];

/// The context's symbolic links: path, target.
const CONTEXT_LINKS: [(&str, &str); 1] = [("rootfs/usr/bin/hi", "hello")];

/// A `RUN` line of [`DOCKERFILE`], as a build step that makes the changes
/// its command makes.
type RunStep = fn(&MergedView) -> Result<()>;

/// `RUN sed -i s/80/8080/ /etc/app.conf && rm /etc/motd && rm -r
/// /var/cache/app`: modify a file, delete a file, delete a directory.
fn edit(fs: &MergedView) -> Result<()> {
    fs.write("etc/app.conf", "port = 8080\n")?;
    fs.remove_file("etc/motd")?;
    fs.remove_dir_all("var/cache/app")
}

/// The second `RUN`: recreate the deleted directory with new contents; and
/// delete and recreate another directory within this one step.
fn recreate(fs: &MergedView) -> Result<()> {
    fs.create_dir("var/cache/app")?;
    fs.write("var/cache/app/index.db", "new index\n")?;
    fs.remove_dir_all("srv/www")?;
    fs.create_dir("srv/www")?;
    fs.write("srv/www/index.html", "<h1>v2</h1>\n")
}

/// The `RUN` lines of [`DOCKERFILE`], each with its step and the history
/// text a build gives it (BuildKit's, as `layerstack build` writes it).
fn run_steps() -> Vec<(&'static str, String, RunStep)> {
    let steps: [RunStep; 2] = [edit, recreate];
    DOCKERFILE
        .lines()
        .skip(BUILT_LINES)
        .zip(steps)
        .map(|(line, step)| {
            let command = line.strip_prefix("RUN ").unwrap_or(line);
            (line, format!("RUN /bin/sh -c {command} # buildkit"), step)
        })
        .collect()
}

/// The demo's build context, in the layout's cache directory
/// (`.layerstack/demo-context`, made afresh: what a killed run left there
/// goes first); removed when dropped.
struct Context {
    dir: camino::Utf8PathBuf,
}

impl Context {
    fn write(layout: &OciLayout) -> Result<Context> {
        let cache = layout.root().join(".layerstack");
        fs::create_dir_all(&cache).map_err(|e| Error::from_io(&e, Operation::CreateDir, &cache))?;
        let is_dir = fs::symlink_metadata(&cache)
            .map_err(|e| Error::from_io(&e, Operation::Metadata, &cache))?
            .is_dir();
        if !is_dir {
            return Err(
                Error::new(ErrorKind::FilesystemLoop, Operation::BuildImage, &cache)
                    .with_detail("the layout's cache directory is a symlink: refused"),
            );
        }
        let dir = cache.join("demo-context");
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::from_io(&e, Operation::RemoveDir, &dir));
            }
            _ => {}
        }
        fs::create_dir(&dir).map_err(|e| Error::from_io(&e, Operation::CreateDir, &dir))?;
        let context = Context { dir };
        let dir = &context.dir;
        for (path, contents, mode) in CONTEXT {
            let at = dir.join(path);
            let mut parent = at.parent().unwrap_or(dir);
            fs::create_dir_all(parent)
                .map_err(|e| Error::from_io(&e, Operation::CreateDir, parent))?;
            fs::write(&at, contents).map_err(|e| Error::from_io(&e, Operation::Write, &at))?;
            chmod(&at, mode)?;
            while parent != dir {
                chmod(parent, 0o755)?;
                parent = parent.parent().unwrap_or(dir);
            }
        }
        for (path, target) in CONTEXT_LINKS {
            let at = dir.join(path);
            std::os::unix::fs::symlink(target, &at)
                .map_err(|e| Error::from_io(&e, Operation::Symlink, &at))?;
        }
        let first: String = DOCKERFILE
            .lines()
            .take(BUILT_LINES)
            .map(|l| format!("{l}\n"))
            .collect();
        let at = dir.join("Dockerfile");
        fs::write(&at, first).map_err(|e| Error::from_io(&e, Operation::Write, &at))?;
        Ok(context)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn chmod(path: &Utf8Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::from_io(&e, Operation::SetPermissions, path))
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
    let context = Context::write(&layout)?;
    let store = ImageStore::new(layout);

    outln!(
        out,
        "layerstack demo: an image built from a Dockerfile, one layer per line that"
    )?;
    outln!(
        out,
        "changes files, written to `{dir}` (an OCI image layout), and what is inside it."
    )?;
    outln!(out)?;
    for line in DOCKERFILE.lines() {
        outln!(out, "  {line}")?;
    }
    outln!(out)?;
    outln!(
        out,
        "`layerstack build`'s engine builds its FROM and COPY lines, from a context the"
    )?;
    outln!(
        out,
        "demo writes. A RUN runs its command inside the image, which takes a shell there"
    )?;
    outln!(
        out,
        "and root; this image has no shell, so the demo makes the changes each command"
    )?;
    outln!(
        out,
        "makes itself, as a build step in memory: nothing is mounted, nothing needs root."
    )?;

    // Fixed times (the defaults): the same steps always give the same bytes.
    let spec = BuildSpec::new(context.dir.join("Dockerfile"), context.dir.clone(), TAG);
    let copied = build(&store, &spec, &mut |_| {})?.image;
    let runs = run_steps();
    let mut builder = store.builder(Some(&copied), BuildOptions::default())?;
    for (_, created_by, step) in &runs {
        builder.step(created_by, *step)?;
    }
    let image = builder.finish(TAG)?;
    // The lines that made the layers, bottom first.
    let layer_lines: Vec<&str> = DOCKERFILE
        .lines()
        .skip(1)
        .take(BUILT_LINES - 1)
        .chain(runs.iter().map(|(line, _, _)| *line))
        .collect();

    let changes = store.changes(&image)?;
    let top_first = store.layers(&image)?;
    let n = top_first.len();
    for (i, layer) in image.layers().iter().enumerate() {
        outln!(out)?;
        outln!(out, "Step {}: {}", i + 1, layer_lines[i])?;
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

    // A second image, whose Dockerfile starts with the same lines.
    let web_spec = BuildSpec::new(
        context.dir.join("Dockerfile.web"),
        context.dir.clone(),
        WEB_TAG,
    );
    let web = build(&store, &web_spec, &mut |_| {})?;
    let web_image = web.image;
    drop(context);
    // Only blobs a tag references stay (an earlier demo's leftovers go).
    store.layout().collect_garbage()?;

    outln!(out)?;
    outln!(
        out,
        "A second image, `{WEB_TAG}`, from a Dockerfile that starts with the same lines:"
    )?;
    let mut layer = 0;
    for step in &web.steps {
        outln!(
            out,
            "  STEP {}/{}: {}",
            step.number,
            web.steps.len(),
            step.text
        )?;
        if let Some(made) = &step.layer {
            let how = match (layer, step.cached) {
                (0, true) => {
                    ": CACHED (`demo`'s build made this step: the build cache gives its layer)"
                }
                (0, false) => ": built again (the build cache did not have it)",
                _ => "",
            };
            outln!(out, "    --> layer {layer} {}{how}", made.digest.short())?;
            layer += 1;
        }
    }
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
