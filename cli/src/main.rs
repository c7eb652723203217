//! `layerstack`: look inside OCI images layer by layer, build a demo image,
//! and commit an edited root filesystem as a new layer.
//!
//! Exit status: 0 on success, 1 when an operation fails (one line on
//! stderr names the operation and the path), 2 for bad usage.
#![forbid(unsafe_code)]

mod analyze;
mod build;
mod commit;
mod demo;
mod diff;
mod gc;
mod inspect;
mod ls;
#[cfg(feature = "mount")]
mod mount;
mod output;
mod registry;
mod unpack;

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;

use camino::Utf8PathBuf;
use clap::{Parser, Subcommand};
use layerstack::oci::{GcMode, Image, ImageStore, OciLayout};
use layerstack::{Error, ErrorKind, Operation, Result};

use output::{Format, Out};

const EXAMPLES: &str = "\
Examples:
  layerstack demo                           build the demo image into ./layerstack-demo
  layerstack ls ./layerstack-demo:demo -R   every file, with the layer it comes from
  layerstack diff ./layerstack-demo:demo    what each layer adds, changes and deletes
  layerstack cat ./layerstack-demo:demo etc/app.conf
  layerstack inspect ./layerstack-demo:demo-web --json
  layerstack build -t ./layerstack-demo:app examples/build
                                            a Dockerfile, one layer per line that changes files

  umoci unpack --image img:v1 bundle        (or: layerstack unpack img:v1 rootfs)
  ... edit bundle/rootfs ...
  layerstack commit img:v1 bundle/rootfs --tag v2
  layerstack gc img --dry-run               what no tag needs (and killed runs left)
  layerstack mount overlay /mnt -o lowerdir=/l/top:/l/base,upperdir=/l/up,workdir=/l/work
                                            a FUSE mount of layers in the kernel's format

LAYOUT[:TAG] names an image in an OCI image layout directory; a registry's
storage directory is read as STORAGE:REPO:TAG (`/var/lib/registry:demo:1.0`). Without a
tag: the one tagged `latest`, or the only image. The tag is what follows
the last `:` unless that holds a `/` (so `dir:with:colons/` is a layout);
`LAYOUT:sha256:<hex>` names a manifest by digest.";

/// Container image layers, from the command line.
#[derive(Debug, Parser)]
#[command(
    name = "layerstack",
    version,
    about = "Look inside OCI images layer by layer: the merged tree, per-layer changes, whiteouts, shared layers",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a small image from a Dockerfile and show its layers, their
    /// whiteouts, the merged tree and a base layer shared through the cache.
    #[command(after_help = "\
Examples:
  layerstack demo               writes ./layerstack-demo
  layerstack demo /tmp/demo     writes /tmp/demo

No input, no network, no root. DIR must be empty, missing, or a layout an
earlier `layerstack demo` wrote.")]
    Demo {
        /// Where to write the image layout [default: ./layerstack-demo]
        dir: Option<Utf8PathBuf>,
    },
    /// Flatten an image into a root filesystem directory.
    #[command(after_help = "\
Without root (or with --rootless) files are owned by the caller, and device
nodes and trusted.*/security.* extended attributes are not written; what the
image has instead is kept in DIR.layerstack-rootless.json beside DIR, and
`layerstack commit` maps it back, so an unchanged tree commits as an empty
layer. The caller's files count as root's (0:0) in the image.

Examples:
  layerstack unpack ./layerstack-demo:demo rootfs
  layerstack unpack --rootless ./layerstack-demo:demo rootfs
  layerstack unpack --path etc ./layerstack-demo:demo out")]
    Unpack {
        /// The image: LAYOUT[:TAG]
        image: ImageRef,
        /// The directory to write the root filesystem into
        dir: Utf8PathBuf,
        /// Write only what an unprivileged user can, and keep the rest
        /// beside DIR (always so without root)
        #[arg(long)]
        rootless: bool,
        /// Write only this path of the image (a file, or a directory with
        /// everything under it) at its place under DIR, reading only what
        /// it needs from the layers
        #[arg(long, conflicts_with = "rootless")]
        path: Option<OsString>,
    },
    /// Import a `docker save` archive into an image layout.
    #[command(after_help = "\
Both formats `docker save` writes are read (Docker 25 and later: an OCI
layout; before: manifest.json with <id>/layer.tar). Every blob is checked
against its digest and every layer against its DiffID. The images are
tagged with their RepoTags (the part after the last `:`); with TAG, the
archive must hold one image, and it is tagged TAG too.

Examples:
  docker save busybox:1.36 -o busybox.tar
  layerstack import busybox.tar ./images:busybox")]
    Import {
        /// The archive `docker save` wrote
        archive: Utf8PathBuf,
        /// The layout to create: LAYOUT[:TAG]
        layout: ImageRef,
    },
    /// List the merged tree, each entry with the layer it comes from.
    #[command(after_help = "\
Each line: mode, owner, size, the layer the entry comes from (its index,
bottom = 0, as in the manifest, and the first 12 hex digits of its digest),
and the path.

Examples:
  layerstack ls ./layerstack-demo:demo
  layerstack ls ./layerstack-demo:demo /etc -R
  layerstack ls ./layerstack-demo:demo -R --json")]
    Ls {
        /// The image: LAYOUT[:TAG]
        image: ImageRef,
        /// The directory (or file) to list [default: /]
        path: Option<OsString>,
        /// List subdirectories too
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a file of the image (symlinks are followed inside the image).
    #[command(after_help = "\
Examples:
  layerstack cat ./layerstack-demo:demo etc/app.conf")]
    Cat {
        /// The image: LAYOUT[:TAG]
        image: ImageRef,
        /// The file
        path: OsString,
    },
    /// What each layer adds (A), changes (C) and deletes (D), as
    /// `docker diff` shows it.
    #[command(after_help = "\
Examples:
  layerstack diff ./layerstack-demo:demo
  layerstack diff ./layerstack-demo:demo --layer 1 --json
  layerstack diff ./layerstack-demo:demo /etc")]
    Diff {
        /// The image: LAYOUT[:TAG]
        image: ImageRef,
        /// Only changes at this path and below it [default: /]
        path: Option<OsString>,
        /// Only layer N (bottom = 0)
        #[arg(long, value_name = "N")]
        layer: Option<usize>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Digests, DiffIDs, sizes and history of an image's layers, and the
    /// layers other tags of the layout share.
    #[command(after_help = "\
Reads no layer: an uncompressed size is shown when the layout's cache knows it
(layers this tool wrote, read through or indexed), else as not known yet;
--sizes indexes those layers once (the index also serves ls, cat and diff).

Examples:
  layerstack inspect ./layerstack-demo:demo
  layerstack inspect ./layerstack-demo:demo-web --json
  layerstack build -t ./layerstack-demo:app examples/build
                                            a Dockerfile, one layer per line that changes files
  layerstack inspect ./imported:latest --sizes")]
    Inspect {
        /// The image: LAYOUT[:TAG]
        image: ImageRef,
        /// Read the layers whose uncompressed size is not known yet (and
        /// check their DiffIDs); without it, inspect reads no layer
        #[arg(long)]
        sizes: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Compare a directory with an image and append the difference as a
    /// new layer under a new tag (as `umoci repack` does).
    #[command(after_help = "\
The layer's files keep their times; the image's creation time is now, or
SOURCE_DATE_EPOCH when that is set (later file times are then lowered to it).

Examples:
  layerstack unpack ./layerstack-demo:demo rootfs
  echo 'port = 9090' > rootfs/etc/app.conf
  layerstack commit ./layerstack-demo:demo rootfs --tag demo-edited")]
    Commit {
        /// The base image: LAYOUT[:BASE]
        image: ImageRef,
        /// The directory to compare with it
        dir: Utf8PathBuf,
        /// The tag of the new image
        #[arg(long, value_name = "NEW")]
        tag: String,
    },
    /// Where an image's bytes go: what each layer ships, what stays
    /// visible, and what is wasted (overwritten, deleted, hidden, or
    /// re-shipped), with rules for CI.
    #[command(after_help = "\
Wasted bytes are shipped bytes that are not in the final tree: every copy
of a file but the one that stays (a grown file wastes only its old copy),
everything below a deleted or opaque directory, and a file re-shipped for
new metadata (the `chown -R` layer) or unchanged. Efficiency is visible /
shipped. With --ci the command exits 1 naming the first rule the image
breaks (defaults: --min-efficiency 0.9 --max-user-wasted-ratio 0.1).

Examples:
  layerstack analyze ./layerstack-demo:demo
  layerstack analyze ./layerstack-demo:demo-web --base-image ./layerstack-demo:demo
  layerstack analyze img:v2 --svg layers.svg
  layerstack analyze img:v2 --ci --min-efficiency 0.95 --ignore-below 4096")]
    Analyze {
        /// The image: LAYOUT[:TAG]
        image: ImageRef,
        /// The first N layers are the base; user figures count the rest
        #[arg(long, value_name = "N", conflicts_with = "base_image")]
        base: Option<usize>,
        /// The base is the layers this image shares with that one
        #[arg(long, value_name = "LAYOUT[:TAG]")]
        base_image: Option<ImageRef>,
        /// How many wasted paths and top-level names to show
        #[arg(long, value_name = "K", default_value_t = 10)]
        top: usize,
        /// Also draw the layers and the largest wasted paths into FILE (SVG)
        #[arg(long, value_name = "FILE")]
        svg: Option<Utf8PathBuf>,
        /// Exit 1 when a rule is broken
        #[arg(long)]
        ci: bool,
        /// --ci: fail below this efficiency (0 to 1)
        #[arg(long, value_name = "RATIO", requires = "ci")]
        min_efficiency: Option<f64>,
        /// --ci: fail above this many wasted bytes
        #[arg(long, value_name = "BYTES", requires = "ci")]
        max_wasted_bytes: Option<u64>,
        /// --ci: fail when the user layers waste more than this ratio of what they ship
        #[arg(long, value_name = "RATIO", requires = "ci")]
        max_user_wasted_ratio: Option<f64>,
        /// --ci: paths wasting fewer bytes do not count for the rules
        #[arg(long, value_name = "BYTES", requires = "ci", default_value_t = 0)]
        ignore_below: u64,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Push an image of a layout to a registry; blobs the registry has are
    /// not sent, blobs another repository there has are mounted.
    #[command(after_help = "\
Plain HTTP for a registry on a loopback address (or with --insecure), HTTPS
otherwise. Credentials: --creds, else auth.json or ~/.docker/config.json.

Examples:
  layerstack push ./layerstack-demo:demo 127.0.0.1:5000/demo:1.0.0
  layerstack push img:v2 registry.example/team/img:v2 --json")]
    Push {
        /// The image: LAYOUT[:TAG]
        image: ImageRef,
        /// Where to: REGISTRY/REPO:TAG
        #[arg(value_parser = registry::parse_reference)]
        target: layerstack::oci::registry::Reference,
        #[command(flatten)]
        registry: registry::RegistryArgs,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Build an image from a Dockerfile: one layer per line that changes
    /// the filesystem (COPY, ADD, RUN, WORKDIR that creates its directory),
    /// none for the others, with a build cache.
    #[command(after_help = "\
Builds are reproducible by default: the image and its history are dated
SOURCE_DATE_EPOCH (seconds since 1970) when it is set, else 1970-01-01, so
the same Dockerfile and context give the same digests. A step whose parent
layers, instruction and inputs (the contents of COPY sources) are unchanged
reuses its layer (`--> CACHED`); --no-cache builds every step again.

FROM takes LAYOUT:TAG or scratch. RUN runs as root only (in a kernel overlay
mount, in namespaces of its own, without network); builds are offline
(remote ADD sources are refused).

Examples:
  layerstack build -t ./layerstack-demo:app examples/build
  layerstack build -f Dockerfile.dev -t out:dev --build-arg VERSION=2 .
  layerstack build -t out:app --target runtime --json .
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) layerstack build -t out:app .")]
    Build {
        /// The Dockerfile [default: CONTEXT/Dockerfile]
        #[arg(short = 'f', long = "file", value_name = "DOCKERFILE")]
        file: Option<Utf8PathBuf>,
        /// The image to write: LAYOUT:TAG (the layout is created if missing)
        #[arg(short = 't', long = "tag", value_name = "LAYOUT:TAG",
              value_parser = build::parse_target_image)]
        image: ImageRef,
        /// A build argument (a bare K takes its value from the environment)
        #[arg(long = "build-arg", value_name = "K=V", value_parser = build::parse_build_arg)]
        build_args: Vec<(String, Option<String>)>,
        /// Build up to this stage (default: the last)
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Build every step, using no cached layer
        #[arg(long)]
        no_cache: bool,
        /// How new layers are compressed
        #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
        compression: CompressionArg,
        /// Print every step's result as one JSON document (RUN's output
        /// goes to stderr)
        #[arg(long)]
        json: bool,
        /// The build context: the directory COPY and ADD read
        context: Utf8PathBuf,
    },
    /// Pull an image from a registry into a layout (created if needed);
    /// each blob is checked against its digest as it arrives.
    #[command(after_help = "\
Examples:
  layerstack pull 127.0.0.1:5000/demo:1.0.0 ./pulled:demo
  layerstack pull 127.0.0.1:5000/demo@sha256:<hex> ./pulled:pinned")]
    Pull {
        /// What: REGISTRY/REPO[:TAG][@DIGEST]
        #[arg(value_parser = registry::parse_reference)]
        source: layerstack::oci::registry::Reference,
        /// Where to: LAYOUT[:TAG] (default tag: the source's)
        image: ImageRef,
        #[command(flatten)]
        registry: registry::RegistryArgs,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Copy an image; either side is a registry (HOST[:PORT]/REPO:TAG, or
    /// docker://...) or a layout (LAYOUT[:TAG]).
    #[command(after_help = "\
Examples:
  layerstack copy ./layerstack-demo:demo 127.0.0.1:5000/demo:1.0.0
  layerstack copy 127.0.0.1:5000/demo:1.0.0 127.0.0.1:5000/other:1.0.0
  layerstack copy ./a:v1 ./b:v1")]
    Copy {
        /// From: a registry image or LAYOUT[:TAG]
        source: registry::Endpoint,
        /// To: a registry image or LAYOUT[:TAG]
        target: registry::Endpoint,
        #[command(flatten)]
        registry: registry::RegistryArgs,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Mount layers (or an image) as a filesystem through FUSE, with the
    /// semantics of the kernel's overlayfs and its on-disk format.
    #[cfg(feature = "mount")]
    #[command(
        after_help = mount::HELP,
        override_usage = "layerstack mount [-f] overlay MNT -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR][,OPTION...]\n       \
                          layerstack mount [-f] LAYOUT[:TAG] MNT [--upper DIR --work DIR] [-o OPTIONS]\n       \
                          layerstack mount [-f] NAME SOURCE MNT -o OPTIONS"
    )]
    Mount(mount::MountArgs),
    /// Remove the blobs no tag reaches and the temporary files of runs
    /// that ended (killed, or stopped by an error).
    #[command(after_help = "\
Blobs reachable from index.json (its manifests and indexes, their configs
and layers) stay; so do temporary files of writers that still run.

Examples:
  layerstack gc ./layerstack-demo --dry-run
  layerstack gc ./layerstack-demo")]
    Gc {
        /// The image layout directory
        layout: Utf8PathBuf,
        /// Only list what would be removed
        #[arg(long)]
        dry_run: bool,
    },
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

impl From<CompressionArg> for layerstack::oci::Compression {
    fn from(c: CompressionArg) -> layerstack::oci::Compression {
        match c {
            CompressionArg::Gzip => layerstack::oci::Compression::Gzip,
            CompressionArg::Zstd => layerstack::oci::Compression::Zstd,
            CompressionArg::None => layerstack::oci::Compression::None,
        }
    }
}

/// `LAYOUT[:TAG]`: an image layout directory and, maybe, a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The layout directory.
    pub layout: Utf8PathBuf,
    /// The tag or manifest digest; `None`: `latest`, or the only image.
    pub tag: Option<String>,
}

impl FromStr for ImageRef {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ImageRef, String> {
        if s.is_empty() {
            return Err("an image layout directory is needed".to_owned());
        }
        let (layout, tag) = match s.rsplit_once(':') {
            // `LAYOUT:sha256:<hex>`: the digest is one reference.
            Some((rest, hex))
                if hex.len() == 64
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
                    && rest.ends_with(":sha256") =>
            {
                let layout = &rest[..rest.len() - ":sha256".len()];
                (layout, Some(format!("sha256:{hex}")))
            }
            Some((layout, tag)) if !tag.contains('/') => {
                if tag.is_empty() {
                    return Err(format!(
                        "`{s}` has an empty tag after its last `:` (a layout directory whose name ends in `:` is written `{s}/`)"
                    ));
                }
                (layout, Some(tag.to_owned()))
            }
            _ => (s, None),
        };
        if layout.is_empty() {
            return Err(format!("`{s}` names no layout directory before the `:`"));
        }
        Ok(ImageRef {
            layout: Utf8PathBuf::from(layout),
            tag,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(tag) => write!(f, "{}:{tag}", self.layout),
            None => write!(f, "{}", self.layout),
        }
    }
}

impl ImageRef {
    /// Opens the layout and the image.
    pub fn open(&self) -> Result<(ImageStore, Image)> {
        if let Some((layout, tag)) = registry::storage_image(self)? {
            let store = ImageStore::new(layout);
            let image = store.image(Some(&tag))?;
            return Ok((store, image));
        }
        let store = ImageStore::new(OciLayout::open(&self.layout)?);
        let image = store.image(self.tag.as_deref())?;
        Ok((store, image))
    }
}

fn run(command: Command) -> Result<()> {
    let mut out = Out::stdout();
    let format = |json: bool| if json { Format::Json } else { Format::Text };
    match command {
        Command::Demo { dir } => demo::run(
            &dir.unwrap_or_else(|| Utf8PathBuf::from("layerstack-demo")),
            &mut out,
        )?,
        Command::Import { archive, layout } => {
            let file = std::fs::File::open(&archive)
                .map_err(|e| Error::from_io(&e, Operation::Open, &archive))?;
            let oci =
                OciLayout::import_docker_archive(std::io::BufReader::new(file), &layout.layout)?;
            let index = oci.read_index()?;
            if let Some(tag) = &layout.tag {
                let [image] = index.manifests.as_slice() else {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        Operation::OpenImage,
                        &archive,
                    )
                    .with_detail(format!(
                        "the archive holds {} images; tag them by their RepoTags (no `:{tag}`)",
                        index.manifests.len()
                    )));
                };
                oci.set_tag(tag, image.clone())?;
            }
            let tags: Vec<String> = oci.tags()?.into_iter().map(|(t, _)| t).collect();
            out.line(format_args!(
                "imported {archive} into {}: {}, tagged {}",
                layout.layout,
                count(index.manifests.len() as u64, "image", "images"),
                if tags.is_empty() {
                    "nothing".to_owned()
                } else {
                    tags.join(", ")
                }
            ))?;
        }
        Command::Unpack {
            image,
            dir,
            rootless: _,
            path: Some(path),
        } => {
            let (store, img) = image.open()?;
            let s = unpack::unpack_path(&store, &img, &dir, output::image_path(&path))?;
            out.line(format_args!(
                "unpacked {} of {} into {}: {}, {}, {}, {}, {}",
                output::escape_name(path.as_encoded_bytes()),
                output::escape_name(image.to_string()),
                output::escape_name(dir.as_str()),
                count(s.files, "file", "files"),
                count(s.dirs, "directory", "directories"),
                count(s.symlinks, "symlink", "symlinks"),
                count(s.specials, "special file", "special files"),
                count(s.bytes, "byte", "bytes"),
            ))?;
        }
        Command::Unpack {
            image,
            dir,
            rootless,
            path: None,
        } => {
            let (store, img) = image.open()?;
            let privilege = unpack::Privilege::new(rootless);
            let unpacked = unpack::unpack_image(&store, &img, &dir, privilege)?;
            let s = unpacked.summary;
            out.line(format_args!(
                "unpacked {} into {}: {}, {}, {}, {}, {}, {}",
                output::escape_name(image.to_string()),
                output::escape_name(dir.as_str()),
                count(s.files, "file", "files"),
                count(s.dirs, "directory", "directories"),
                count(s.symlinks, "symlink", "symlinks"),
                count(s.hard_links, "hard link", "hard links"),
                count(s.specials, "special file", "special files"),
                count(s.bytes, "byte", "bytes"),
            ))?;
            if s.hidden > 0 {
                out.line(format_args!(
                    "{} of lower layers never written: a higher layer deletes or replaces them",
                    count(s.hidden, "entry", "entries")
                ))?;
            }
            if s.devices_stripped > 0 {
                out.line(format_args!(
                    "{} skipped: making them needs root",
                    count(s.devices_stripped, "device node", "device nodes")
                ))?;
            }
            if let Some((at, map)) = unpacked.rootless {
                out.line(format_args!(
                    "rootless: what only root can write ({} with other owners, modes or extended attributes, {}) is kept in {} for commit",
                    count(map.kept() as u64, "object", "objects"),
                    count(map.absent() as u64, "device node", "device nodes"),
                    output::escape_name(at.as_str()),
                ))?;
            }
        }
        Command::Ls {
            image,
            path,
            recursive,
            json,
        } => ls::ls(
            &image,
            output::image_path(path.as_deref().unwrap_or("/".as_ref())),
            recursive,
            format(json),
            &mut out,
        )?,
        Command::Cat { image, path } => ls::cat(&image, output::image_path(&path), &mut out)?,
        Command::Diff {
            image,
            path,
            layer,
            json,
        } => diff::run(&image, layer, path.as_deref(), format(json), &mut out)?,
        Command::Inspect { image, sizes, json } => {
            inspect::run(&image, sizes, format(json), &mut out)?;
        }
        Command::Commit { image, dir, tag } => {
            commit::run(&image, &dir, &tag, &mut out)?;
            // The tag is in: output that cannot be written is a warning,
            // never a failure over a changed layout.
            if let Err(e) = out.flush() {
                warn(format_args!(
                    "{}:{tag} is tagged; printing the result failed: {e}",
                    image.layout
                ));
            }
            return Ok(());
        }
        Command::Build {
            file,
            image,
            build_args,
            target,
            no_cache,
            compression,
            json,
            context,
        } => {
            let request = build::Request {
                dockerfile: file,
                image,
                build_args: build::resolve_build_args(build_args),
                target,
                no_cache,
                compression: compression.into(),
                context,
            };
            build::run(request, format(json), &mut out)?;
        }
        Command::Push {
            image,
            target,
            registry,
            json,
        } => registry::push(&image, &target, &registry, format(json), &mut out)?,
        Command::Pull {
            source,
            image,
            registry,
            json,
        } => registry::pull(&source, &image, &registry, format(json), &mut out)?,
        Command::Copy {
            source,
            target,
            registry,
            json,
        } => registry::copy(&source, &target, &registry, format(json), &mut out)?,
        Command::Gc { layout, dry_run } => {
            let mode = if dry_run {
                GcMode::DryRun
            } else {
                GcMode::Remove
            };
            gc::run(&layout, mode, &mut out)?;
        }
        // `main` runs it: its exit status is its own.
        #[cfg(feature = "mount")]
        Command::Mount(_) => unreachable!("mount runs from main"),
        Command::Analyze {
            image,
            base,
            base_image,
            top,
            svg,
            ci,
            min_efficiency,
            max_wasted_bytes,
            max_user_wasted_ratio,
            ignore_below,
            json,
        } => {
            let base = match (&base_image, base) {
                (Some(other), _) => Some(analyze::Base::Image(other)),
                (None, Some(n)) => Some(analyze::Base::Layers(n)),
                (None, None) => None,
            };
            let any = min_efficiency.is_some()
                || max_wasted_bytes.is_some()
                || max_user_wasted_ratio.is_some();
            let rules = ci.then_some(analyze::Rules {
                min_efficiency: if any { min_efficiency } else { Some(0.9) },
                max_wasted_bytes,
                max_user_wasted_ratio: if any {
                    max_user_wasted_ratio
                } else {
                    Some(0.1)
                },
                ignore_below,
            });
            // The report is printed also when a rule fails.
            let checked = analyze::run(
                &image,
                base,
                top,
                svg.as_deref(),
                rules,
                format(json),
                &mut out,
            );
            out.flush()?;
            checked?;
        }
    }
    out.flush()
}

fn main() -> ExitCode {
    // Usage errors exit with 2, `--help` and `--version` with 0.
    let cli = Cli::parse_from(arguments());
    raise_open_file_limit();
    #[cfg(feature = "mount")]
    if let Command::Mount(args) = cli.command {
        return mount::main(args);
    }
    let result = run(cli.command);
    registry::remove_temporary_layouts();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e.to_string());
            ExitCode::from(1)
        }
    }
}

/// The command line; a mount helper's (mount(8), mount.fuse3) is read as
/// `layerstack mount ...`.
fn arguments() -> Vec<OsString> {
    let args = std::env::args_os().collect();
    #[cfg(feature = "mount")]
    let args = {
        use clap::CommandFactory;
        let cli = Cli::command();
        let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
        mount::helper_arguments(args, &names)
    };
    args
}

/// Prints an error line on stderr: one line, whatever a cause holds, and
/// no control bytes from a layer or a header reach the terminal.
pub fn print_error(message: &str) {
    let message = output::escape_message(message);
    // Not `eprintln!`, which panics when stderr cannot be written.
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

/// Prints a warning line on stderr: something went wrong after the
/// command did what it was asked (a tag is written), so it still succeeds.
pub fn warn(args: fmt::Arguments<'_>) {
    // A warning can quote a tag, a path or a cause from outside: no raw
    // control bytes reach the terminal.
    let message = crate::output::escape_message(&args.to_string());
    let _ = writeln!(std::io::stderr(), "warning: {message}");
}

/// Raises the soft limit of open files to the hard one, as many tools do:
/// a soft limit of 1,024 is a historical default, not a choice. The walks
/// hold a bounded number of descriptors anyway; this is headroom. Failure
/// changes nothing.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit (`None`) cannot be the soft one for files.
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        let raised = rustix::process::Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

/// `1 file`, `2 files`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<(String, Option<String>), String> {
        s.parse::<ImageRef>()
            .map(|r| (r.layout.into_string(), r.tag))
    }

    #[test]
    fn image_refs_split_at_the_last_colon_without_a_slash_after_it() {
        let some = |l: &str, t: &str| Ok((l.to_owned(), Some(t.to_owned())));
        assert_eq!(parse("img"), Ok(("img".to_owned(), None)));
        assert_eq!(parse("img:v1"), some("img", "v1"));
        assert_eq!(parse("./a:b:v1"), some("./a:b", "v1"));
        assert_eq!(parse("/tmp/a:b/img"), Ok(("/tmp/a:b/img".to_owned(), None)));
        assert_eq!(
            parse("dir:with:colons/"),
            Ok(("dir:with:colons/".to_owned(), None))
        );
        let hex = "ab".repeat(32);
        assert_eq!(
            parse(&format!("img:sha256:{hex}")),
            some("img", &format!("sha256:{hex}"))
        );
        assert!(parse("img:").unwrap_err().contains("empty tag"));
        assert!(parse(":v1").unwrap_err().contains("no layout directory"));
        assert!(parse("").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
