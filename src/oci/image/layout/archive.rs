//! `docker save` archives, in both formats, imported into a layout.

use super::*;

/// The media type `docker save` gives its uncompressed layers.
pub(super) const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The annotation containerd and Docker put the full image name in.
pub(super) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// The most bytes of JSON files an archive import keeps in memory.
pub(super) const MAX_ARCHIVE_DOCUMENT_BYTES: u64 = 64 << 20;

impl OciLayout {
    /// Imports a `docker save` archive into the layout in `dest_dir`
    /// (created if needed, see [`create`](OciLayout::create)).
    ///
    /// Two formats are read:
    /// - Docker 25 and later: an OCI image layout (with a `manifest.json`
    ///   for older tools, which is then ignored). Every blob is stored with
    ///   its digest and size checked; every descriptor of its `index.json`
    ///   is added, tagged with its `ref.name`, else with the tag of its
    ///   `io.containerd.image.name`, else untagged.
    /// - Before: `manifest.json` lists images as `Config` (the config file),
    ///   `RepoTags` and `Layers` (uncompressed `<id>/layer.tar` files).
    ///   Each image gets an OCI manifest with the config (media type
    ///   [`media_type::DOCKER_CONFIG`]) and its layers (media type
    ///   `application/vnd.docker.image.rootfs.diff.tar`), each checked
    ///   against the config's DiffID; it is tagged with each of its
    ///   `RepoTags`, by the part after the last `:` (`busybox:1.36` is
    ///   tagged `1.36`), or untagged if it has none. Two repositories with
    ///   the same tag leave the last one tagged.
    ///
    /// Only regular files of the archive are read; symlinks and other
    /// entries are skipped. Nothing is extracted: file names of the archive
    /// are only looked up, never used as paths.
    ///
    /// # Errors
    /// `EBADMSG` for an entry name that is absolute or has `..`, a name
    /// twice, a blob whose content is not its name's digest, a layer that
    /// is not its DiffID, or an archive that is neither format; `ENOENT` for
    /// a file `manifest.json` names that the archive does not hold;
    /// `EDQUOT` for JSON files over [`MAX_DOCUMENT_BYTES`] (64 MiB in all);
    /// those of [`create`](OciLayout::create). After an error, the blobs
    /// stored so far stay, unreferenced, until garbage collection.
    pub fn import_docker_archive(
        archive: impl Read,
        dest_dir: impl AsRef<Utf8Path>,
    ) -> Result<OciLayout> {
        let layout = OciLayout::create(dest_dir)?;
        let mut files: BTreeMap<String, ArchiveFile> = BTreeMap::new();
        let mut blob_entries: HashSet<Digest> = HashSet::new();
        let mut stored_other: Vec<Digest> = Vec::new();
        let mut document_bytes = 0u64;

        // Read through the one hardened tar reader, as every layer is.
        let limits = Limits::new().max_bytes(u64::MAX);
        let mut tar = TarReader::new(archive, limits);
        let reframe = |e: Error| {
            let path = e.path().to_string();
            // A name the reader refuses gets the archive's own message.
            if e.kind() == ErrorKind::InvalidInput
                && let Err(named) = archive_name(path.as_bytes())
            {
                return named;
            }
            e.reframe(Operation::OpenImage, path)
        };
        let mut links: Vec<(String, String)> = Vec::new();
        while let Some(entry) = tar.next_entry().map_err(reframe)? {
            let name = match &entry.kind {
                TarKind::File | TarKind::Symlink(_) => archive_name(entry.name.as_bytes())?,
                _ => continue,
            };
            if files.contains_key(&name) || links.iter().any(|(n, _)| *n == name) {
                return Err(
                    Error::new(ErrorKind::InvalidData, Operation::OpenImage, &name)
                        .with_detail("the archive holds this name twice"),
                );
            }
            if let TarKind::Symlink(target) = &entry.kind {
                // `docker save` writes a repeated layer once and links the
                // others to it (`../<id>/layer.tar`).
                let target = target.to_str().ok_or_else(|| {
                    Error::new(ErrorKind::InvalidData, Operation::OpenImage, &name)
                        .with_detail("the link target is not UTF-8")
                })?;
                links.push((name, target.to_owned()));
                continue;
            }
            let size = entry.size;
            let mut data = EntryData(&mut tar);
            let file = if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                let digest = Digest::from_hex(hex).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidData, Operation::OpenImage, &name)
                        .with_detail("a blob's name must be its sha256 digest")
                })?;
                layout.put_verified(&mut data, &digest, size)?;
                blob_entries.insert(digest);
                ArchiveFile::Blob(digest, size)
            } else if is_document_name(&name) {
                document_bytes += size;
                if size > MAX_DOCUMENT_BYTES || document_bytes > MAX_ARCHIVE_DOCUMENT_BYTES {
                    return Err(
                        Error::new(ErrorKind::LimitExceeded, Operation::OpenImage, &name)
                            .with_detail(format!(
                                "JSON files may be {MAX_DOCUMENT_BYTES} bytes each and \
                                 {MAX_ARCHIVE_DOCUMENT_BYTES} in all"
                            )),
                    );
                }
                let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                data.read_to_end(&mut bytes)
                    .map_err(|e| Error::from_io(&e, Operation::OpenImage, &name))?;
                ArchiveFile::Document(bytes)
            } else {
                let mut writer = layout.blob_writer()?;
                io::copy(&mut data, &mut writer)
                    .map_err(|e| Error::from_io(&e, Operation::OpenImage, &name))?;
                let committed = writer.finish(None)?;
                if committed.created {
                    stored_other.push(committed.digest);
                }
                ArchiveFile::Blob(committed.digest, committed.size)
            };
            files.insert(name, file);
        }
        tar.finish().map_err(reframe)?;
        for (name, target) in links {
            if let Some(file) = resolve_archive_link(&files, &name, &target) {
                files.insert(name, file);
            }
        }

        let mut keep = blob_entries;
        // Docker 25 writes both formats; an index whose `manifests` is
        // null lists nothing, and `manifest.json` says what the archive
        // holds (as skopeo reads it).
        if files.contains_key(LAYOUT_FILE)
            && !(files.contains_key("manifest.json") && index_lists_nothing(&files))
        {
            import_oci_layout(&layout, &files)?;
        } else if files.contains_key("manifest.json") {
            keep.extend(import_legacy(&layout, &files)?);
        } else {
            return Err(
                Error::new(ErrorKind::InvalidData, Operation::OpenImage, ARCHIVE).with_detail(
                    "not a `docker save` archive (neither `oci-layout` nor `manifest.json`)",
                ),
            );
        }
        // Files stored on the way that no image uses (`<id>/json`, ...).
        for digest in stored_other.iter().filter(|d| !keep.contains(d)) {
            layout.remove_blob(digest);
        }
        Ok(layout)
    }
}

/// The path named in errors about the archive as a whole.
pub(super) const ARCHIVE: &str = "<archive>";

/// A regular file of a `docker save` archive, once read.
pub(super) enum ArchiveFile {
    /// A JSON file (or another small one), in memory.
    Document(Vec<u8>),
    /// Anything else, stored as a blob on the way.
    Blob(Digest, u64),
}

/// The files an import keeps in memory: JSON files, and the small files
/// of the legacy format's layer directories.
pub(super) fn is_document_name(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.ends_with(".json") || matches!(file, "json" | "VERSION" | LAYOUT_FILE | "repositories")
}

/// An archive entry's name, normalised (`./a//b` is `a/b`); absolute names
/// and names with `..` are refused.
pub(super) fn archive_name(raw: &[u8]) -> Result<String> {
    let bad = |name: &str, why: &str| {
        Error::new(ErrorKind::InvalidData, Operation::OpenImage, name)
            .with_detail(format!("invalid name in the archive: {why}"))
    };
    let name =
        std::str::from_utf8(raw).map_err(|_| bad(&String::from_utf8_lossy(raw), "not UTF-8"))?;
    if name.starts_with('/') {
        return Err(bad(name, "it is absolute"));
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad(name, "it contains `..`")),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(bad(name, "it is empty"));
    }
    Ok(parts.join("/"))
}

/// The data of the current entry of a tar, as a reader.
pub(super) struct EntryData<'t, R: Read>(&'t mut TarReader<R>);

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf).map_err(io::Error::from)
    }
}

/// What a symlink of the archive leads to: a regular file of the archive,
/// the target read relative to the link's directory and never outside the
/// archive; links to links are followed a few times.
pub(super) fn resolve_archive_link(
    files: &BTreeMap<String, ArchiveFile>,
    name: &str,
    target: &str,
) -> Option<ArchiveFile> {
    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    match files.get(&parts.join("/"))? {
        ArchiveFile::Document(bytes) => Some(ArchiveFile::Document(bytes.clone())),
        ArchiveFile::Blob(digest, size) => Some(ArchiveFile::Blob(*digest, *size)),
    }
}

/// Whether the archive's `index.json` has no manifests (`null`, missing
/// or empty), as Docker 25 writes it for some images.
pub(super) fn index_lists_nothing(files: &BTreeMap<String, ArchiveFile>) -> bool {
    let Some(ArchiveFile::Document(bytes)) = files.get(INDEX_FILE) else {
        return true;
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => match v.get("manifests") {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        },
        Err(_) => false,
    }
}

pub(super) fn archive_document<'a>(
    files: &'a BTreeMap<String, ArchiveFile>,
    name: &str,
) -> Result<&'a [u8]> {
    match files.get(name) {
        Some(ArchiveFile::Document(bytes)) => Ok(bytes),
        Some(ArchiveFile::Blob(..)) | None => {
            Err(Error::new(ErrorKind::NotFound, Operation::OpenImage, name)
                .with_detail("the archive holds no such JSON file"))
        }
    }
}

/// Docker 25 and later: the archive is an OCI layout, whose blobs are
/// stored already; its `index.json` descriptors become the tags.
pub(super) fn import_oci_layout(
    layout: &OciLayout,
    files: &BTreeMap<String, ArchiveFile>,
) -> Result<()> {
    // Files of the archive, not blobs of a layout: errors say so.
    let in_archive = |e: Error| {
        let path = e.path().to_string();
        e.reframe(Operation::OpenImage, path)
    };
    check_layout_version(archive_document(files, LAYOUT_FILE)?, LAYOUT_FILE).map_err(in_archive)?;
    let index =
        Index::parse_at(archive_document(files, INDEX_FILE)?, INDEX_FILE).map_err(in_archive)?;
    for desc in index.manifests {
        let tag = desc.ref_name().map(str::to_owned).or_else(|| {
            desc.annotations
                .get(ANNOTATION_IMAGE_NAME)
                .map(|name| tag_of(name).to_owned())
        });
        match tag {
            // The durability of a tag is that of the import's last one.
            Some(tag) => {
                let _ = layout.set_tag(&tag, desc)?;
            }
            None => {
                if !layout.has_blob(&desc.digest)? {
                    return Err(layout.no_such_blob(&desc.digest));
                }
                layout.add_untagged(desc)?;
            }
        }
    }
    Ok(())
}

/// Before Docker 25: builds an OCI manifest for each image of
/// `manifest.json`. Returns the digests of the layers it used.
pub(super) fn import_legacy(
    layout: &OciLayout,
    files: &BTreeMap<String, ArchiveFile>,
) -> Result<HashSet<Digest>> {
    const MANIFEST: &str = "manifest.json";
    let invalid = |detail: String| {
        Error::new(ErrorKind::InvalidData, Operation::OpenImage, MANIFEST).with_detail(detail)
    };
    let value: Value = serde_json::from_slice(archive_document(files, MANIFEST)?)
        .map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    let kind = match &value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
    };
    let images = value
        .as_array()
        .ok_or_else(|| invalid(format!("it must be a JSON array of images, not {kind}")))?;
    if images.is_empty() {
        return Err(invalid(
            "it lists no images (`[]`): the archive holds nothing to import".to_owned(),
        ));
    }
    let mut used = HashSet::new();
    for (i, image) in images.iter().enumerate() {
        let field = |key: &str| image.get(key).filter(|v| !v.is_null());
        fn string<'v>(v: &'v Value, i: usize, what: &str) -> Result<&'v str> {
            v.as_str().ok_or_else(|| {
                Error::new(ErrorKind::InvalidData, Operation::OpenImage, MANIFEST)
                    .with_detail(format!("`[{i}].{what}` must be a string"))
            })
        }
        let strings = |key: &str| -> Result<Vec<&str>> {
            match field(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(j, v)| string(v, i, &format!("{key}[{j}]")))
                    .collect(),
                Some(_) => Err(invalid(format!("`[{i}].{key}` must be an array"))),
            }
        };
        let config_name = field("Config")
            .ok_or_else(|| invalid(format!("`[{i}].Config` is missing")))
            .and_then(|v| string(v, i, "Config"))?;
        let config_name = archive_name(config_name.as_bytes())?;
        if field("Layers").is_none() {
            return Err(invalid(format!("`[{i}].Layers` is missing")));
        }
        let layer_names = strings("Layers")?;
        let repo_tags = strings("RepoTags")?;

        let config_bytes = match files.get(&config_name) {
            Some(ArchiveFile::Document(bytes)) => bytes.clone(),
            Some(ArchiveFile::Blob(digest, size)) => {
                layout.read_blob(digest, Some(*size), MAX_DOCUMENT_BYTES)?
            }
            None => return Err(missing_file(&config_name)),
        };
        let config = ImageConfig::parse_at(&config_bytes, &config_name)?;
        if config.diff_ids.len() != layer_names.len() {
            return Err(invalid(format!(
                "image {i} has {} layers, but its config has {} DiffIDs",
                layer_names.len(),
                config.diff_ids.len()
            )));
        }
        let mut layers = Vec::with_capacity(layer_names.len());
        for (name, diff_id) in layer_names.iter().zip(&config.diff_ids) {
            let name = archive_name(name.as_bytes())?;
            let (digest, size) = match files.get(&name) {
                Some(ArchiveFile::Blob(digest, size)) => (*digest, *size),
                Some(ArchiveFile::Document(bytes)) => layout.put_blob(bytes)?,
                None => return Err(missing_file(&name)),
            };
            if digest != *diff_id {
                return Err(
                    Error::new(ErrorKind::InvalidData, Operation::OpenImage, &name).with_detail(
                        format!("the layer is {digest}, but the config's DiffID is {diff_id}"),
                    ),
                );
            }
            used.insert(digest);
            layers.push(Descriptor::new(DOCKER_LAYER_TAR, digest, size));
        }
        let (config_digest, config_size) = layout.put_blob(&config_bytes)?;
        let config = Descriptor::new(media_type::DOCKER_CONFIG, config_digest, config_size);
        let manifest = layout.put_json(&Manifest::new(config, layers), media_type::OCI_MANIFEST)?;
        if repo_tags.is_empty() {
            layout.add_untagged(manifest.clone())?;
        }
        for repo_tag in repo_tags {
            let mut desc = manifest.clone();
            desc.annotations
                .insert(ANNOTATION_IMAGE_NAME.to_owned(), repo_tag.to_owned());
            let _ = layout.set_tag(tag_of(repo_tag), desc)?;
        }
    }
    Ok(used)
}

pub(super) fn missing_file(name: &str) -> Error {
    Error::new(ErrorKind::NotFound, Operation::OpenImage, name)
        .with_detail("`manifest.json` names this file, but the archive does not hold it")
}

/// The tag of an image name: after the last `:`, unless that `:` is a
/// registry's port (`localhost:5000/app` has no tag, so it is `latest`).
pub(super) fn tag_of(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() && !tag.contains('/') => tag,
        // A repository without a tag means its `latest`, as in Docker.
        _ => "latest",
    }
}
