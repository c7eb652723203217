//! `index.json`: documents read through it, tags set and removed under
//! the lock, manifests selected by platform.

use super::*;

/// How deep image indexes may nest before a lookup gives up.
pub(super) const MAX_INDEX_DEPTH: usize = 8;

impl OciLayout {
    /// Reads `index.json`.
    ///
    /// # Errors
    /// I/O errors; `EBADMSG` if it is not a valid image index; `EDQUOT` if
    /// it is larger than [`MAX_DOCUMENT_BYTES`].
    pub fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let bytes = read_file(&self.open_root()?, INDEX_FILE, &path, MAX_DOCUMENT_BYTES)?;
        Index::parse_at(&bytes, path.as_str())
    }

    /// Reads the manifest `descriptor` points to; for an image index, the
    /// manifest for linux/amd64 in it, or its only manifest (see
    /// [`read_manifest_for`](OciLayout::read_manifest_for)).
    ///
    /// # Errors
    /// Those of [`read_manifest_for`](OciLayout::read_manifest_for).
    pub fn read_manifest(&self, descriptor: &Descriptor) -> Result<Manifest> {
        self.read_manifest_for(descriptor, &Platform::new("linux", "amd64"))
    }

    /// Reads the manifest `descriptor` points to, following image indexes
    /// (and Docker manifest lists) to the manifest for `platform` (its
    /// variant too, if it names one). An index without a manifest for
    /// `platform` but with only one manifest gives that one, whatever its
    /// platform (attestation manifests, of platform `unknown/unknown`, do
    /// not count). A descriptor of an unknown media type is read if it
    /// holds a manifest or an index.
    ///
    /// # Errors
    /// `ENOENT` if a blob is missing or an index has no manifest for
    /// `platform` (the message lists the platforms it has); `EBADMSG` for
    /// a corrupt blob or an invalid document; `EOPNOTSUPP` if `descriptor`
    /// is neither a manifest nor an index; `EDQUOT` for indexes nested more
    /// than 8 deep.
    pub fn read_manifest_for(
        &self,
        descriptor: &Descriptor,
        platform: &Platform,
    ) -> Result<Manifest> {
        let mut desc = descriptor.clone();
        for _ in 0..=MAX_INDEX_DEPTH {
            let next = match self.read_node(&desc)? {
                Node::Manifest(manifest) => return Ok(*manifest),
                Node::Index(index) => match select_manifest(&index, platform) {
                    Some(next) => next.clone(),
                    None => return Err(no_manifest_for(&desc, &index, platform)),
                },
                Node::Other => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        Operation::OpenImage,
                        desc.digest.to_string(),
                    )
                    .with_detail(format!(
                        "media type `{}` is neither an image manifest nor an image index",
                        desc.media_type
                    )));
                }
            };
            desc = next;
        }
        Err(Error::new(
            ErrorKind::LimitExceeded,
            Operation::OpenImage,
            descriptor.digest.to_string(),
        )
        .with_detail(format!(
            "image indexes nest more than {MAX_INDEX_DEPTH} deep"
        )))
    }

    /// Reads the image config of the image `descriptor` points to: a
    /// config itself, or a manifest or index (followed as
    /// [`read_manifest`](OciLayout::read_manifest) does).
    ///
    /// # Errors
    /// Those of [`read_manifest`](OciLayout::read_manifest); `EOPNOTSUPP`
    /// if the manifest's config is not an image config (an artifact).
    pub fn read_config(&self, descriptor: &Descriptor) -> Result<ImageConfig> {
        let config = if media_type::is_config(&descriptor.media_type) {
            descriptor.clone()
        } else {
            self.read_manifest(descriptor)?.config
        };
        if !media_type::is_config(&config.media_type) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                Operation::OpenImage,
                config.digest.to_string(),
            )
            .with_detail(format!(
                "media type `{}` is not an image config",
                config.media_type
            )));
        }
        let bytes = self.read_blob(&config.digest, Some(config.size), MAX_DOCUMENT_BYTES)?;
        ImageConfig::parse_at(&bytes, &config.digest.to_string())
    }

    /// The document a descriptor points to, by its media type; an unknown
    /// media type is read and parsed as a manifest or an index if it looks
    /// like one.
    pub(super) fn read_node(&self, desc: &Descriptor) -> Result<Node> {
        let mt = desc.media_type.as_str();
        let origin = desc.digest.to_string();
        let read = || self.read_blob(&desc.digest, Some(desc.size), MAX_DOCUMENT_BYTES);
        if media_type::is_manifest(mt) {
            return Manifest::parse_at(&read()?, &origin).map(|m| Node::Manifest(Box::new(m)));
        }
        if media_type::is_index(mt) {
            return Index::parse_at(&read()?, &origin).map(Node::Index);
        }
        if media_type::is_config(mt)
            || Compression::from_media_type(mt).is_some()
            || desc.size > MAX_DOCUMENT_BYTES
        {
            return Ok(Node::Other);
        }
        let bytes = read()?;
        let Ok(map) = spec::parse_object(&bytes, &origin) else {
            return Ok(Node::Other);
        };
        let node = if map.contains_key("manifests") {
            Index::parse_at(&bytes, &origin).map(Node::Index)
        } else if map.contains_key("config") && map.contains_key("layers") {
            Manifest::parse_at(&bytes, &origin).map(|m| Node::Manifest(Box::new(m)))
        } else {
            Ok(Node::Other)
        };
        Ok(node.unwrap_or(Node::Other))
    }

    /// The tags of `index.json` (the [`ANNOTATION_REF_NAME`] annotations of
    /// its descriptors), sorted by tag.
    ///
    /// # Errors
    /// Those of [`read_index`](OciLayout::read_index).
    pub fn tags(&self) -> Result<Vec<(String, Descriptor)>> {
        tags_of(self.read_index()?, &self.index_path())
    }

    /// The descriptor of an image: the one tagged `tag`, or, without a tag,
    /// the one tagged `latest`, else the only tagged one, else the only
    /// descriptor of an `index.json` without tags. A `tag` that is no tag
    /// but the digest of a descriptor of `index.json` names that one.
    ///
    /// # Errors
    /// `ENOENT` for an unknown tag (the message lists the tags) or a layout
    /// without images; `EINVAL` without a tag when that is ambiguous
    /// (several tags and none is `latest`, or several untagged images).
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor> {
        let index = self.read_index()?;
        let untagged = index.manifests.clone();
        let tags = tags_of(index, &self.index_path())?;
        let names = || {
            if tags.is_empty() {
                "none".to_owned()
            } else {
                tags.iter()
                    .map(|(t, _)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let find = |name: &str| tags.iter().find(|(t, _)| t == name).map(|(_, d)| d.clone());
        match tag {
            Some(tag) => {
                find(tag)
                    .or_else(|| {
                        let digest = Digest::parse(tag).ok()?;
                        untagged.iter().find(|d| d.digest == digest).cloned()
                    })
                    .ok_or_else(|| {
                        Error::new(ErrorKind::NotFound, Operation::OpenImage, tag).with_detail(
                            format!("no such tag in `{}` (tags: {})", self.root, names()),
                        )
                    })
            }
            None => {
                if let Some(latest) = find("latest") {
                    return Ok(latest);
                }
                match (tags.len(), untagged.len()) {
                    (1, _) => Ok(tags[0].1.clone()),
                    (0, 1) => Ok(untagged[0].clone()),
                    (0, 0) => {
                        Err(
                            Error::new(ErrorKind::NotFound, Operation::OpenImage, &self.root)
                                .with_detail("the layout has no images"),
                        )
                    }
                    (0, n) => {
                        Err(
                            Error::new(ErrorKind::InvalidInput, Operation::OpenImage, &self.root)
                                .with_detail(format!(
                                    "no tag given and the layout has {n} untagged images"
                                )),
                        )
                    }
                    _ => Err(
                        Error::new(ErrorKind::InvalidInput, Operation::OpenImage, &self.root)
                            .with_detail(format!(
                                "no tag given, no `latest` tag, and several tags: {}",
                                names()
                            )),
                    ),
                }
            }
        }
    }

    /// Tags `descriptor` as `tag` in `index.json`, replacing the descriptor
    /// (or descriptors) that had that tag; other descriptors (whatever
    /// their media type or fields) are kept as they are.
    ///
    /// A tag must be a tag of the OCI distribution spec and of Docker,
    /// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, so that `LAYOUT:TAG` names it
    /// again (see [`check_tag`]).
    ///
    /// `Ok` means the tag is in `index.json`; [`Durability::Unconfirmed`]
    /// says that syncing the directory after the rename failed.
    ///
    /// # Errors
    /// `EINVAL` for an invalid tag; `ENOENT` if the blob is not stored;
    /// `EBADMSG` if its size is not the descriptor's; errors reading or
    /// writing `index.json`. After an error `index.json` is unchanged.
    pub fn set_tag(&self, tag: &str, mut descriptor: Descriptor) -> Result<Durability> {
        let index_path = self.index_path();
        check_tag(tag)?;
        let digest = descriptor.digest;
        match self.blob_size(&digest) {
            Ok(size) if size == descriptor.size => {}
            Ok(size) => {
                return Err(
                    Error::new(ErrorKind::InvalidData, Operation::Write, &index_path).with_detail(
                        format!(
                            "cannot tag `{tag}`: the descriptor says {} bytes, blob {digest} has {size}",
                            descriptor.size
                        ),
                    ),
                );
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(
                    Error::new(ErrorKind::NotFound, Operation::Write, &index_path).with_detail(
                        format!("cannot tag `{tag}`: blob {digest} is not in the layout"),
                    ),
                );
            }
            Err(e) => return Err(e),
        }
        descriptor
            .annotations
            .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
        self.update_index(|index| {
            let at = index
                .manifests
                .iter()
                .position(|d| d.ref_name() == Some(tag));
            index.manifests.retain(|d| d.ref_name() != Some(tag));
            let at = at.unwrap_or(index.manifests.len());
            index.manifests.insert(at, descriptor);
            Ok(())
        })
        .map(|((), durability)| durability)
    }

    /// Removes the tag `tag` (its descriptor) from `index.json` and returns
    /// the descriptor. Its blobs stay until
    /// [`collect_garbage`](OciLayout::collect_garbage). As for
    /// [`set_tag`](OciLayout::set_tag), an error means `index.json` is
    /// unchanged; a failed sync of the directory after the change is not
    /// reported.
    ///
    /// # Errors
    /// `ENOENT` if there is no such tag; errors reading or writing
    /// `index.json`.
    pub fn remove_tag(&self, tag: &str) -> Result<Descriptor> {
        let index_path = self.index_path();
        self.update_index(|index| {
            let Some(at) = index
                .manifests
                .iter()
                .position(|d| d.ref_name() == Some(tag))
            else {
                return Err(
                    Error::new(ErrorKind::NotFound, Operation::Write, &index_path)
                        .with_detail(format!("no tag `{tag}`")),
                );
            };
            let removed = index.manifests[at].clone();
            index.manifests.retain(|d| d.ref_name() != Some(tag));
            Ok(removed)
        })
        .map(|(removed, _)| removed)
    }

    /// Adds an untagged descriptor to `index.json`, unless an untagged one
    /// with its digest is there.
    pub(super) fn add_untagged(&self, descriptor: Descriptor) -> Result<()> {
        self.update_index(|index| {
            let present = index
                .manifests
                .iter()
                .any(|d| d.digest == descriptor.digest && d.ref_name().is_none());
            if !present {
                index.manifests.push(descriptor);
            }
            Ok(())
        })
        .map(|((), _)| ())
    }

    /// Reads, changes and atomically replaces `index.json`, holding the
    /// layout's lock.
    ///
    /// An error means `index.json` is as it was: every step that can fail
    /// (reading it, writing and syncing the new one beside it) comes
    /// before the `rename` that puts the new one in place, and the rename
    /// either happens or not. Only the `fsync` of the directory comes
    /// after; its failure is [`Durability::Unconfirmed`], not an error.
    pub(super) fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T>,
    ) -> Result<(T, Durability)> {
        let root = self.open_root()?;
        let _lock = self.lock(&root)?;
        let blobs = self.open_blobs_in(&root, true)?;
        // Temporary files of runs that ended go; under the lock, so two
        // cleaners do not race (a failure here changes nothing).
        self.remove_stale_temps(&blobs, GcMode::Remove, &mut GcReport::default());
        let path = self.index_path();
        let bytes = read_file(&root, INDEX_FILE, &path, MAX_DOCUMENT_BYTES)?;
        let mut index = Index::parse_at(&bytes, path.as_str())?;
        let out = change(&mut index)?;
        let fail = |e: &io::Error| Error::from_io(e, Operation::Write, &path);
        let (mut file, temp) = TempPath::create(&blobs).map_err(|e| fail(&e))?;
        file.write_all(&index.to_json()).map_err(|e| fail(&e))?;
        file.sync_all().map_err(|e| fail(&e))?;
        drop(file);
        temp.persist(&root, INDEX_FILE).map_err(|e| fail(&e))?;
        // The new index is in place: whatever happens now, it is what
        // every later read sees.
        let durability = match rustix::fs::fsync(&root) {
            Ok(()) => Durability::Synced,
            Err(e) => Durability::Unconfirmed(
                Error::new(errno_kind(e), Operation::Write, &path).with_detail(format!(
                    "written, but syncing `{}` failed ({e}): after a crash the old `index.json` may be back",
                    self.root
                )),
            ),
        };
        Ok((out, durability))
    }
}

/// What a descriptor points to.
pub(super) enum Node {
    Manifest(Box<Manifest>),
    Index(Index),
    /// A config, a layer, or something unknown.
    Other,
}

/// The tags of an index, sorted; a tag held by two descriptors is an
/// error (which one it names is unknown).
pub(super) fn tags_of(index: Index, index_path: &Utf8Path) -> Result<Vec<(String, Descriptor)>> {
    let mut tags: Vec<(String, Descriptor)> = index
        .manifests
        .into_iter()
        .filter_map(|d| Some((d.ref_name()?.to_owned(), d)))
        .collect();
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = tags.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(
            Error::new(ErrorKind::InvalidData, Operation::OpenImage, index_path).with_detail(
                format!(
                    "the tag {:?} names more than one image; tag it again (or remove it) to repair",
                    pair[0].0
                ),
            ),
        );
    }
    Ok(tags)
}

/// The longest tag the OCI distribution spec and Docker accept.
pub const MAX_TAG_LEN: usize = 128;

/// Checks a tag against the tag grammar of the OCI distribution spec and
/// of Docker, `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`: the tags that
/// `LAYOUT:TAG` can name, and that no registry or tool refuses.
///
/// ```
/// use layerstack::oci::check_tag;
///
/// assert!(check_tag("v1.2_rc-3").is_ok());
/// let err = check_tag("a/b").unwrap_err();
/// assert_eq!(err.to_string(), "failed to write `a/b`: invalid tag: `/` is not allowed \
///     (a tag is 1 to 128 of A-Z a-z 0-9 _ . -, and does not start with . or -)");
/// ```
///
/// # Errors
/// `EINVAL`, naming the first character that is not allowed (escaped if
/// it is not printable) and the characters that are.
pub fn check_tag(tag: &str) -> Result<()> {
    const ALLOWED: &str = "a tag is 1 to 128 of A-Z a-z 0-9 _ . -, and does not start with . or -";
    // The message escapes the tag where it is not printable.
    let bad = |why: String| {
        Err(Error::new(ErrorKind::InvalidInput, Operation::Write, tag)
            .with_detail(format!("invalid tag: {why} ({ALLOWED})")))
    };
    let is_tag_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    match tag.chars().next() {
        None => return bad("it is empty".to_owned()),
        Some(c @ ('.' | '-')) => return bad(format!("it starts with `{c}`")),
        Some(_) => {}
    }
    if let Some(c) = tag.chars().find(|&c| !is_tag_char(c)) {
        return bad(format!("`{}` is not allowed", c.escape_debug()));
    }
    if tag.len() > MAX_TAG_LEN {
        return bad(format!("it is {} characters long", tag.len()));
    }
    Ok(())
}

/// The manifest of an index for `want` (see
/// [`OciLayout::read_manifest_for`]).
pub(super) fn select_manifest<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let matches = |p: &Platform| {
        p.os == want.os
            && p.architecture == want.architecture
            && (want.variant.is_none() || p.variant == want.variant)
    };
    if let Some(d) = index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(matches))
    {
        return Some(d);
    }
    let mut images = index.manifests.iter().filter(|d| !is_attestation(d));
    match (images.next(), images.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// BuildKit's attestation manifests sit in an index with the platform
/// `unknown/unknown`.
pub(super) fn is_attestation(d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

pub(super) fn no_manifest_for(desc: &Descriptor, index: &Index, want: &Platform) -> Error {
    let have: Vec<String> = index
        .manifests
        .iter()
        .map(|d| {
            d.platform
                .as_ref()
                .map_or_else(|| "no platform".to_owned(), Platform::to_string)
        })
        .collect();
    let have = if have.is_empty() {
        "no manifests".to_owned()
    } else {
        have.join(", ")
    };
    Error::new(
        ErrorKind::NotFound,
        Operation::OpenImage,
        desc.digest.to_string(),
    )
    .with_detail(format!(
        "the image index has no manifest for {want} (it has: {have})"
    ))
}
