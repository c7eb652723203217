//! `push`, `pull` and `copy`: images between layouts and registries.

use std::collections::HashMap;
use std::io::{self, IsTerminal};
use std::sync::Mutex;

use camino::{Utf8Path, Utf8PathBuf};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use layerstack::oci::Digest;
use layerstack::oci::OciLayout;
use layerstack::oci::registry::{
    self, BlobOutcome, Credentials, Progress, Reference, RegistryOptions, RegistryStorage, Tls,
    TransferSummary, Upload,
};
use layerstack::oci::{Index, MAX_DOCUMENT_BYTES, Manifest, media_type};
use layerstack::{Error, ErrorKind, Operation, Result};
use serde_json::json;

use crate::output::{Format, Out, escape_name, thousands};
use crate::{ImageRef, count};

/// How to reach the registry.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// USER:PASSWORD for the registry (for `copy`, the destination's, and
    /// the source's only on the same registry; else from auth.json or
    /// ~/.docker/config.json)
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// Read credentials from this auth file only
    #[arg(long, value_name = "FILE")]
    authfile: Option<Utf8PathBuf>,
    /// Plain HTTP to a registry that is not on a loopback address
    #[arg(long, conflicts_with = "cert")]
    insecure: bool,
    /// Trust only the certificates of this PEM file for HTTPS
    #[arg(long, value_name = "PEM")]
    cert: Option<Utf8PathBuf>,
    /// Upload in chunks of this many bytes (default: one streamed request
    /// per blob)
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<u64>,
    /// How many blobs move at once
    #[arg(long, value_name = "N", default_value_t = 3)]
    parallel: usize,
    /// How often a request is retried after a 5xx answer or a lost
    /// connection
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
}

impl RegistryArgs {
    fn options(&self) -> Result<RegistryOptions> {
        let credentials = self.creds.as_deref().map(Credentials::parse).transpose()?;
        Ok(RegistryOptions {
            tls: match (&self.cert, self.insecure) {
                (_, true) => Tls::Insecure,
                (Some(pem), false) => Tls::Roots(pem.clone()),
                (None, false) => Tls::Verify,
            },
            credentials,
            auth_files: self.authfile.clone().map(|f| vec![f]),
            upload: self.chunk_size.map_or(Upload::Streamed, Upload::Chunked),
            parallel: self.parallel.max(1),
            retries: self.retries,
            ..RegistryOptions::default()
        })
    }
}

/// One side of a copy.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Registry(Reference),
    Layout(ImageRef),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Endpoint, String> {
        if Reference::looks_like(s) {
            s.parse()
                .map(Endpoint::Registry)
                .map_err(|e: Error| e.cause())
        } else {
            s.parse().map(Endpoint::Layout)
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Registry(r) => write!(f, "{r}"),
            Endpoint::Layout(l) => write!(f, "{l}"),
        }
    }
}

/// The temporary layouts registry storage directories were exported to,
/// removed when the command ends ([`remove_temporary_layouts`]).
static TEMPORARY: Mutex<Vec<Utf8PathBuf>> = Mutex::new(Vec::new());

/// `STORAGE:REPO:TAG` (or `STORAGE:REPO:sha256:<hex>`) where `STORAGE` is a
/// registry's storage directory (`/var/lib/registry`) and no layout of
/// that name exists: the image, exported into a temporary layout (hard
/// links to the registry's blob files), and the tag it has there.
pub fn storage_image(image: &ImageRef) -> Result<Option<(OciLayout, String)>> {
    let Some((dir, repository, reference)) = storage_target(image) else {
        return Ok(None);
    };
    let storage = RegistryStorage::open(dir)?;
    let temp = private_temp_dir("layerstack-registry-storage")?;
    if let Ok(mut list) = TEMPORARY.lock() {
        list.push(temp.clone());
    }
    let layout = OciLayout::create(&temp)?;
    let tag = "image";
    storage.export(repository, reference, &layout, tag)?;
    Ok(Some((layout, tag.to_owned())))
}

/// `(STORAGE, REPO, TAG)` when `image` names an image in a registry's
/// storage directory rather than a layout.
pub fn storage_target(image: &ImageRef) -> Option<(&str, &str, &str)> {
    let reference = image.tag.as_deref()?;
    if image.layout.exists() {
        return None;
    }
    let (dir, repository) = image.layout.as_str().rsplit_once(':')?;
    RegistryStorage::is_storage(Utf8Path::new(dir)).then_some((dir, repository, reference))
}

/// A new directory of ours under the temporary directory (mode 0700,
/// created by this call: never one that another user made in advance).
fn private_temp_dir(prefix: &str) -> Result<Utf8PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = Utf8PathBuf::from_path_buf(std::env::temp_dir())
        .unwrap_or_else(|_| Utf8PathBuf::from("/tmp"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for attempt in 0..64u32 {
        let dir = base.join(format!(
            "{prefix}-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(dir),
            Err(e) => return Err(Error::from_io(&e, Operation::CreateDir, &dir)),
        }
    }
    let dir = last.unwrap_or(base);
    Err(
        Error::new(ErrorKind::AlreadyExists, Operation::CreateDir, &dir)
            .with_detail("no free name for a temporary directory"),
    )
}

/// Removes the temporary layouts of [`storage_image`].
pub fn remove_temporary_layouts() {
    if let Ok(mut list) = TEMPORARY.lock() {
        for dir in list.drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Parses a registry reference for clap.
pub fn parse_reference(s: &str) -> std::result::Result<Reference, String> {
    s.parse::<Reference>().map_err(|e| e.cause())
}

pub fn push(
    image: &ImageRef,
    target: &Reference,
    args: &RegistryArgs,
    format: Format,
    out: &mut Out,
) -> Result<()> {
    let layout = OciLayout::open(&image.layout)?;
    let bars = Bars::new();
    let summary = registry::push(
        &layout,
        image.tag.as_deref(),
        target,
        &args.options()?,
        &bars,
    )?;
    drop(bars);
    report(
        "pushed",
        &image.to_string(),
        &target.to_string(),
        &summary,
        format,
        out,
    )
}

pub fn pull(
    source: &Reference,
    image: &ImageRef,
    args: &RegistryArgs,
    format: Format,
    out: &mut Out,
) -> Result<()> {
    let bars = Bars::new();
    let summary = registry::pull(
        source,
        &image.layout,
        image.tag.as_deref(),
        &args.options()?,
        &bars,
    )?;
    drop(bars);
    // The tag the image got: the one given, else the source's.
    let tagged = ImageRef {
        layout: image.layout.clone(),
        tag: Some(
            image
                .tag
                .clone()
                .or_else(|| source.tag.clone())
                .unwrap_or_else(|| "latest".to_owned()),
        ),
    };
    report(
        "pulled",
        &source.to_string(),
        &tagged.to_string(),
        &summary,
        format,
        out,
    )
}

pub fn copy(
    src: &Endpoint,
    dst: &Endpoint,
    args: &RegistryArgs,
    format: Format,
    out: &mut Out,
) -> Result<()> {
    match (src, dst) {
        (Endpoint::Layout(image), Endpoint::Registry(target)) => {
            push(image, target, args, format, out)
        }
        (Endpoint::Registry(source), Endpoint::Layout(image)) => {
            pull(source, image, args, format, out)
        }
        (Endpoint::Registry(source), Endpoint::Registry(target)) => {
            // Through a temporary layout: each blob is fetched once,
            // verified, and sent once (or skipped, or mounted).
            let temp = private_temp_dir("layerstack-copy")?;
            let result = (|| {
                let options = args.options()?;
                // `--creds` are the destination's: a source on another
                // registry gets only what the auth files hold for its host.
                let source_options = RegistryOptions {
                    credentials: options
                        .credentials
                        .clone()
                        .filter(|_| source.registry.eq_ignore_ascii_case(&target.registry)),
                    ..options.clone()
                };
                let bars = Bars::new();
                let pulled = registry::pull(source, &temp, Some("copy"), &source_options, &bars)?;
                let layout = OciLayout::open(&temp)?;
                let mut pushed = registry::push(&layout, Some("copy"), target, &options, &bars)?;
                drop(bars);
                pushed.resumed += pulled.resumed;
                report(
                    "copied",
                    &source.to_string(),
                    &target.to_string(),
                    &pushed,
                    format,
                    out,
                )
            })();
            let _ = std::fs::remove_dir_all(&temp);
            result
        }
        (Endpoint::Layout(from), Endpoint::Layout(to)) => {
            let summary = copy_layouts(from, to)?;
            report(
                "copied",
                &from.to_string(),
                &to.to_string(),
                &summary,
                format,
                out,
            )
        }
    }
}

/// Copies the image `from` into the layout `to`, blobs it lacks only,
/// each verified; the tag last.
fn copy_layouts(from: &ImageRef, to: &ImageRef) -> Result<TransferSummary> {
    let source = OciLayout::open(&from.layout)?;
    let target = OciLayout::create(&to.layout)?;
    let top = source.resolve(from.tag.as_deref())?;
    let mut summary = TransferSummary {
        digest: top.digest,
        manifests: 0,
        blobs_transferred: 0,
        bytes_transferred: 0,
        blobs_skipped: 0,
        bytes_skipped: 0,
        blobs_mounted: 0,
        bytes_mounted: 0,
        resumed: 0,
        requests: registry::RequestCounts::default(),
    };
    let copy_blob =
        |digest: &Digest, size: u64, document: bool, summary: &mut TransferSummary| -> Result<()> {
            if target.has_blob(digest)? {
                if !document {
                    summary.blobs_skipped += 1;
                    summary.bytes_skipped += size;
                }
                return Ok(());
            }
            let reader = source.open_blob(digest, Some(size))?;
            target.put_blob_verified(reader, digest, size)?;
            if document {
                summary.manifests += 1;
            } else {
                summary.blobs_transferred += 1;
                summary.bytes_transferred += size;
            }
            Ok(())
        };
    let mut stack = vec![(top.clone(), 0usize)];
    let mut documents = Vec::new();
    while let Some((desc, depth)) = stack.pop() {
        if depth > 8 {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                Operation::OpenImage,
                from.to_string(),
            )
            .with_detail("indexes nest too deep"));
        }
        let bytes = source.read_blob(&desc.digest, Some(desc.size), MAX_DOCUMENT_BYTES)?;
        if media_type::is_index(&desc.media_type) {
            for child in Index::from_json(&bytes)?.manifests {
                stack.push((child, depth + 1));
            }
        } else {
            let manifest = Manifest::from_json(&bytes)?;
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                copy_blob(&blob.digest, blob.size, false, &mut summary)?;
            }
        }
        documents.push(desc);
    }
    // Children before the documents that name them.
    for desc in documents.iter().rev() {
        copy_blob(&desc.digest, desc.size, true, &mut summary)?;
    }
    let tag = to
        .tag
        .clone()
        .or_else(|| from.tag.clone())
        .unwrap_or_else(|| "latest".to_owned());
    target.set_tag(&tag, top)?;
    Ok(summary)
}

fn report(
    verb: &str,
    from: &str,
    to: &str,
    s: &TransferSummary,
    format: Format,
    out: &mut Out,
) -> Result<()> {
    let r = &s.requests;
    match format {
        Format::Json => out.json(&json!({
            "from": from,
            "to": to,
            "digest": s.digest.to_string(),
            "manifests": s.manifests,
            "transferred": {"blobs": s.blobs_transferred, "bytes": s.bytes_transferred},
            "skipped": {"blobs": s.blobs_skipped, "bytes": s.bytes_skipped},
            "mounted": {"blobs": s.blobs_mounted, "bytes": s.bytes_mounted},
            "resumed": s.resumed,
            "requests": {
                "total": r.total(), "head": r.head, "get": r.get, "put": r.put,
                "post": r.post, "patch": r.patch, "delete": r.delete,
            },
        })),
        Format::Text => {
            let moved = if verb == "pulled" { "received" } else { "sent" };
            let had = if verb == "pulled" {
                "the layout"
            } else {
                "the registry"
            };
            out.line(format_args!(
                "{verb} {} to {} ({})",
                escape_name(from),
                escape_name(to),
                s.digest
            ))?;
            out.line(format_args!(
                "  {} {moved} ({} bytes), {} skipped because {had} had them ({} bytes), {} mounted from another repository ({} bytes)",
                count(s.blobs_transferred, "blob", "blobs"),
                thousands(s.bytes_transferred),
                count(s.blobs_skipped, "blob", "blobs"),
                thousands(s.bytes_skipped),
                count(s.blobs_mounted, "blob", "blobs"),
                thousands(s.bytes_mounted),
            ))?;
            out.line(format_args!(
                "  {}, {} ({} HEAD){}",
                count(s.manifests, "manifest stored", "manifests stored"),
                count(r.total(), "request", "requests"),
                r.head,
                if s.resumed > 0 {
                    format!(", {} resumed", count(s.resumed, "download", "downloads"))
                } else {
                    String::new()
                }
            ))
        }
    }
}

/// A progress bar per blob on stderr, when it is a terminal.
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        let multi = io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, digest: &Digest) -> Option<ProgressBar> {
        self.bars.lock().ok()?.get(digest).cloned()
    }
}

impl Progress for Bars {
    fn started(&self, digest: &Digest, size: u64) {
        let Some(multi) = &self.multi else { return };
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = multi.add(
            ProgressBar::new(size)
                .with_style(style)
                .with_message(digest.short()),
        );
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(*digest, bar);
        }
    }

    fn advanced(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self.bar(digest) {
            bar.inc(bytes);
        }
    }

    fn finished(&self, digest: &Digest, outcome: BlobOutcome) {
        if let Some(bar) = self.bar(digest) {
            let word = match outcome {
                BlobOutcome::Transferred => "done",
                BlobOutcome::Skipped => "skipped: already there",
                BlobOutcome::Mounted => "mounted",
            };
            bar.finish_with_message(format!("{} {word}", digest.short()));
        }
    }
}
