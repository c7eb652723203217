//! `FROM`: the base image. Builds are offline: a base is `scratch`, an
//! earlier stage, an image in an OCI layout on this machine (copied into
//! the store's layout blob by blob, each checked), or a tag of the store's
//! own layout.

use std::path::Path;

use camino::{Utf8Path, Utf8PathBuf};

use super::{StageDef, fail};
use crate::error::{ErrorKind, Result};
use crate::oci::image::digest::Digest;
use crate::oci::image::layout::{OciLayout, check_tag};
use crate::oci::image::spec::{Descriptor, media_type};
use crate::oci::image::store::{Image, ImageStore, go_arch};

/// Whether `dir` holds an OCI layout.
fn is_layout(dir: &str) -> bool {
    !dir.is_empty() && Path::new(dir).join("oci-layout").is_file()
}

/// `oci:DIR[:TAG]`, `DIR:TAG` or `DIR` as a layout directory and tag, if
/// it names one (`oci:` always does).
fn layout_ref(word: &str) -> Option<(Utf8PathBuf, Option<String>)> {
    let (explicit, rest) = match word.strip_prefix("oci:") {
        Some(rest) => (true, rest),
        None => (false, word),
    };
    if let Some((dir, tag)) = rest.rsplit_once(':')
        && !tag.contains('/')
        && (is_layout(dir) || (explicit && !is_layout(rest)))
    {
        return Some((dir.into(), Some(tag.to_owned())));
    }
    if explicit || is_layout(rest) {
        return Some((rest.into(), None));
    }
    None
}

/// The base image `word` names (`None` for `scratch`); stages are the
/// caller's.
///
/// # Errors
/// A base that is none of those (builds are offline); errors reading the
/// layout or copying its blobs.
pub(super) fn resolve(
    store: &ImageStore,
    word: &str,
    line: usize,
    path: &Utf8Path,
) -> Result<Option<Image>> {
    if word == "scratch" {
        return Ok(None);
    }
    let framed = |e: crate::Error| fail(path, line, e.kind(), format!("FROM {word}: {e}"));
    if let Some((dir, tag)) = layout_ref(word) {
        return import(store, &dir, tag.as_deref())
            .map(Some)
            .map_err(framed);
    }
    if check_tag(word).is_ok() && store.layout().resolve(Some(word)).is_ok() {
        return store.image(Some(word)).map(Some).map_err(framed);
    }
    let dir = match word.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => dir,
        _ => word,
    };
    Err(fail(
        path,
        line,
        ErrorKind::NotFound,
        format!(
            "FROM {word}: no OCI layout at `{dir}`; builds are offline: pull the image into a layout first"
        ),
    ))
}

/// The image `tag` (or the only one) of the layout at `dir`, its manifest,
/// config and layers copied into the store's layout.
fn import(store: &ImageStore, dir: &Utf8Path, tag: Option<&str>) -> Result<Image> {
    let source = OciLayout::open(dir)?;
    let descriptor = source.resolve(tag)?;
    let manifest = source.read_manifest(&descriptor)?;
    let config = source.read_config(&manifest.config)?;
    let target = store.layout();
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        copy_blob(&source, target, blob)?;
    }
    if media_type::is_manifest(&descriptor.media_type) {
        copy_blob(&source, target, &descriptor)?;
    }
    let image = Image {
        reference: match tag {
            Some(tag) => format!("{dir}:{tag}"),
            None => dir.to_string(),
        },
        descriptor,
        manifest,
        config,
    };
    if image.diff_ids().len() != image.layers().len() {
        return Err(crate::Error::new(
            ErrorKind::InvalidData,
            crate::Operation::OpenImage,
            &image.reference,
        )
        .with_detail(format!(
            "the manifest lists {} layers but the config {} DiffIDs",
            image.layers().len(),
            image.diff_ids().len()
        )));
    }
    Ok(image)
}

/// Copies one blob between layouts unless the target has it; checked
/// against its digest and size.
fn copy_blob(source: &OciLayout, target: &OciLayout, blob: &Descriptor) -> Result<()> {
    if target.has_blob(&blob.digest)? {
        return Ok(());
    }
    let reader = source.open_blob(&blob.digest, Some(blob.size))?;
    target.put_blob_verified(reader, &blob.digest, blob.size)
}

/// The cache key a stage on `base` starts from: its top ChainID (`scratch`
/// and an image without layers: the digest of `scratch`).
pub(super) fn key(base: Option<&Image>) -> Digest {
    match base.and_then(|image| image.chain_ids().last().copied()) {
        Some(chain_id) => chain_id,
        None => Digest::of(b"scratch"),
    }
}

/// `--platform` against the base's config (the host's for `scratch`).
pub(super) fn check_platform(
    base: Option<&Image>,
    def: &StageDef<'_>,
    path: &Utf8Path,
) -> Result<()> {
    let Some(wanted) = &def.platform else {
        return Ok(());
    };
    let mut parts = wanted.split('/');
    let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
    let (Some(os), Some(arch), None) = (os, arch, parts.next()) else {
        return Err(fail(
            path,
            def.from.line,
            ErrorKind::InvalidInput,
            format!("FROM --platform={wanted}: a platform is os/arch[/variant]"),
        ));
    };
    let (have_os, have_arch, have_variant) = match base {
        Some(image) => (
            image.config.os.clone(),
            image.config.architecture.clone(),
            image
                .config
                .extra
                .get("variant")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        ),
        None => ("linux".to_owned(), go_arch().to_owned(), None),
    };
    let variant_ok = match (variant, &have_variant) {
        (Some(want), Some(have)) => want == have,
        _ => true,
    };
    if os != have_os || arch != have_arch || !variant_ok {
        let have = match have_variant {
            Some(v) => format!("{have_os}/{have_arch}/{v}"),
            None => format!("{have_os}/{have_arch}"),
        };
        return Err(fail(
            path,
            def.from.line,
            ErrorKind::InvalidInput,
            format!("FROM --platform={wanted} {}: the image is {have}", def.base),
        ));
    }
    Ok(())
}

/// A base image's own `ONBUILD` triggers: Docker runs them; this builder
/// refuses the base with a clear error rather than build something else.
pub(super) fn refuse_onbuild(image: &Image, def: &StageDef<'_>, path: &Utf8Path) -> Result<()> {
    let triggers: Vec<&str> = image
        .config
        .config
        .get("OnBuild")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default();
    if triggers.is_empty() {
        return Ok(());
    }
    Err(fail(
        path,
        def.from.line,
        ErrorKind::Unsupported,
        format!(
            "FROM {}: the base image has ONBUILD triggers ({}), which this builder does not run",
            def.base,
            triggers
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}
