use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::oci::image::digest::Digest;

/// The largest JSON document (manifest, config, index, `index.json`) that
/// is parsed: 4 MiB, as registries allow for manifests. Image configs of
/// real images are a few KiB.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// The annotation that names a tag in an image layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The media types of the documents (layer media types are in
/// [`Compression::layer_media_type`](crate::oci::Compression::layer_media_type)).
pub mod media_type {
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index (also the type of a layout's `index.json`).
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// A Docker v2 schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// A Docker manifest list (read as an image index).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// A Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    /// Whether `media_type` is an image manifest (OCI or Docker).
    #[must_use]
    pub fn is_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }

    /// Whether `media_type` is an image index or a Docker manifest list.
    #[must_use]
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }

    /// Whether `media_type` is an image config (OCI or Docker).
    #[must_use]
    pub fn is_config(media_type: &str) -> bool {
        media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
    }
}

/// A JSON document of the spec: read strictly, written deterministically.
///
/// [`OciLayout::put_json`](crate::oci::image::layout::OciLayout::put_json) stores any
/// of them.
///
/// The OCI image documents as Rust types: [`Descriptor`], [`Manifest`],
/// [`ImageConfig`] and [`Index`], read from and written to JSON.
///
/// The contract is the image spec's `descriptor.md`, `manifest.md`,
/// `config.md` and `image-index.md`, with Docker's v2 schema 2 manifests,
/// manifest lists and image configs, which have the same shape.
///
/// Reading is strict where the spec says MUST: `schemaVersion` is 2,
/// required fields are present and of the right type, digests are valid
/// sha256 digests, sizes are non-negative integers, annotations map strings
/// to strings, `rootfs.type` is `layers`. It is lenient where the spec says
/// implementations must ignore what they do not know: unknown fields are
/// kept (in the `extra` maps) or ignored, unknown media types of layers and
/// descriptors are accepted, and `null` counts as an absent field (Go
/// writes empty slices and maps as `null`). A document larger than
/// [`MAX_DOCUMENT_BYTES`] is refused before it is parsed.
///
/// Writing is deterministic: compact JSON with the keys of every object
/// sorted, empty optional fields left out, so the same document always
/// gives the same bytes and therefore the same digest.
///
/// ```
/// use layerstack::oci::Digest;
/// use layerstack::oci::{Descriptor, Manifest, media_type};
///
/// let config = Descriptor::new(media_type::OCI_CONFIG, Digest::of(b"{}"), 2);
/// let manifest = Manifest::new(config, vec![]);
/// let json = manifest.to_json();
/// assert!(json.starts_with(br#"{"config":{"digest":"sha256:44136fa3"#));
/// assert_eq!(Manifest::from_json(&json)?, manifest);
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # Limitations
/// - Only sha256 digests are accepted (see [`Digest`]).
/// - A JSON object with a duplicated key is read with the last value winning
///   (what `serde_json` does), not refused.
/// - Unknown fields of [`Platform`] and [`History`] are dropped; those of
///   descriptors, manifests, configs and indexes are kept.
pub trait Document: Sized {
    /// Parses the document.
    ///
    /// # Errors
    /// `EBADMSG` for invalid JSON or a document that breaks the spec (the
    /// message names the field), `EOPNOTSUPP` for a digest algorithm other
    /// than sha256, `EDQUOT` for more than [`MAX_DOCUMENT_BYTES`].
    fn from_json(bytes: &[u8]) -> Result<Self>;

    /// The document as compact JSON with sorted keys.
    fn to_json(&self) -> Vec<u8>;
}

/// A reference to a blob: its media type, digest and size (`descriptor.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    /// What the blob is (`mediaType`).
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Annotations (in an image layout's `index.json`, the tag is
    /// [`ANNOTATION_REF_NAME`]).
    pub annotations: BTreeMap<String, String>,
    /// The platform of the manifest this descriptor points to (in an index).
    pub platform: Option<Platform>,
    /// Other fields (`urls`, `data`, `artifactType`, ...), kept as they are.
    pub extra: BTreeMap<String, Value>,
}

/// The platform an image runs on (a descriptor's `platform`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The CPU architecture, as Go's `GOARCH` (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// The operating system, as Go's `GOOS` (`linux`, `windows`, ...).
    pub os: String,
    /// `os.version`.
    pub os_version: Option<String>,
    /// `os.features`.
    pub os_features: Vec<String>,
    /// The CPU variant (`v8` for `arm64/v8`, ...).
    pub variant: Option<String>,
}

/// An image manifest (`manifest.md`, or Docker's v2 schema 2).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The `mediaType` field: [`media_type::OCI_MANIFEST`],
    /// [`media_type::DOCKER_MANIFEST`], or absent (OCI allows that).
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Other fields (`subject`, `artifactType`, ...), kept as they are.
    pub extra: BTreeMap<String, Value>,
}

/// An image config (`config.md`, or Docker's image JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    /// When the image was created (RFC 3339, not checked).
    pub created: Option<String>,
    /// Who created it.
    pub author: Option<String>,
    /// The CPU architecture.
    pub architecture: String,
    /// The operating system.
    pub os: String,
    /// The runtime config (`Env`, `Entrypoint`, `Cmd`, ...), kept as it is:
    /// an object, or `Value::Null` when absent.
    pub config: Value,
    /// `rootfs.diff_ids`: the DiffIDs of the layers, base first.
    pub diff_ids: Vec<Digest>,
    /// The history, one entry per build step.
    pub history: Vec<History>,
    /// Other top-level fields (`variant`, `os.version`, Docker's
    /// `container_config`, ...), kept as they are.
    pub extra: BTreeMap<String, Value>,
}

/// One build step of an image config's history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// When the step ran.
    pub created: Option<String>,
    /// The command of the step.
    pub created_by: Option<String>,
    /// Who ran it.
    pub author: Option<String>,
    /// A comment.
    pub comment: Option<String>,
    /// Whether the step made no layer.
    pub empty_layer: bool,
}

/// An image index (`image-index.md`; also an image layout's `index.json`,
/// and Docker's manifest list when read).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Index {
    /// The manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Other fields, kept as they are.
    pub extra: BTreeMap<String, Value>,
}

impl Descriptor {
    /// A descriptor without annotations or platform.
    #[must_use]
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
            extra: BTreeMap::new(),
        }
    }

    /// The tag ([`ANNOTATION_REF_NAME`]), if there is one.
    #[must_use]
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }

    /// Parses a descriptor.
    ///
    /// # Errors
    /// As [`Document::from_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Descriptor> {
        let map = parse_object(bytes, "descriptor")?;
        Descriptor::from_object(&Obj::root(&map, "descriptor"))
    }

    /// The descriptor as compact JSON with sorted keys.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        canonical(&self.to_value())
    }

    fn from_object(o: &Obj<'_>) -> Result<Descriptor> {
        Ok(Descriptor {
            media_type: o.required_str("mediaType")?.to_owned(),
            digest: o.digest("digest")?,
            size: o.required_u64("size")?,
            annotations: o.annotations("annotations")?,
            platform: match o.optional_object("platform")? {
                Some(p) => Some(Platform::from_object(&p)?),
                None => None,
            },
            extra: o.extra(&["mediaType", "digest", "size", "annotations", "platform"]),
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Fields::new(&self.extra);
        m.set("mediaType", self.media_type.as_str());
        m.set("digest", self.digest.to_string());
        m.set("size", self.size);
        m.set_map("annotations", &self.annotations);
        if let Some(p) = &self.platform {
            m.set("platform", p.to_value());
        }
        m.into_value()
    }
}

impl Platform {
    /// The platform `os`/`architecture`, without variant or OS version.
    #[must_use]
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Platform {
        Platform {
            architecture: architecture.into(),
            os: os.into(),
            os_version: None,
            os_features: Vec::new(),
            variant: None,
        }
    }

    fn from_object(o: &Obj<'_>) -> Result<Platform> {
        Ok(Platform {
            architecture: o.required_str("architecture")?.to_owned(),
            os: o.required_str("os")?.to_owned(),
            os_version: o.optional_str("os.version")?,
            os_features: o.strings("os.features")?,
            variant: o.optional_str("variant")?,
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Fields::default();
        m.set("architecture", self.architecture.as_str());
        m.set("os", self.os.as_str());
        m.set_opt("os.version", &self.os_version);
        if !self.os_features.is_empty() {
            m.set("os.features", self.os_features.clone());
        }
        m.set_opt("variant", &self.variant);
        m.into_value()
    }
}

impl fmt::Display for Platform {
    /// `os/architecture[/variant]`, as `docker --platform` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Manifest {
    /// An OCI manifest of `config` and `layers`.
    #[must_use]
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config,
            layers,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Parses a manifest (OCI or Docker v2 schema 2).
    ///
    /// # Errors
    /// As [`Document::from_json`]; also `EBADMSG` when `mediaType` names
    /// another document.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest> {
        Manifest::parse_at(bytes, "manifest")
    }

    /// The manifest as compact JSON with sorted keys.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = Fields::new(&self.extra);
        m.set("schemaVersion", 2);
        m.set_opt("mediaType", &self.media_type);
        m.set("config", self.config.to_value());
        m.set("layers", array(&self.layers, Descriptor::to_value));
        m.set_map("annotations", &self.annotations);
        canonical(&m.into_value())
    }

    /// Parses a manifest read from `origin` (named in errors).
    pub(crate) fn parse_at(bytes: &[u8], origin: &str) -> Result<Manifest> {
        let map = parse_object(bytes, origin)?;
        let o = Obj::root(&map, origin);
        o.schema_version_2()?;
        let media_type = o.optional_str("mediaType")?;
        if let Some(mt) = &media_type
            && !media_type::is_manifest(mt)
        {
            return Err(o.invalid(format!("`mediaType` is `{mt}`, not an image manifest")));
        }
        let config = Descriptor::from_object(&o.required_object("config")?)?;
        let layers = o
            .required_array("layers")?
            .iter()
            .enumerate()
            .map(|(i, v)| Descriptor::from_object(&o.element("layers", i, v)?))
            .collect::<Result<_>>()?;
        Ok(Manifest {
            media_type,
            config,
            layers,
            annotations: o.annotations("annotations")?,
            extra: o.extra(&[
                "schemaVersion",
                "mediaType",
                "config",
                "layers",
                "annotations",
            ]),
        })
    }
}

impl ImageConfig {
    /// A config for `os`/`architecture`, with no layers and nothing else.
    #[must_use]
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> ImageConfig {
        ImageConfig {
            created: None,
            author: None,
            architecture: architecture.into(),
            os: os.into(),
            config: Value::Null,
            diff_ids: Vec::new(),
            history: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Parses an image config (OCI or Docker).
    ///
    /// # Errors
    /// As [`Document::from_json`].
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig> {
        ImageConfig::parse_at(bytes, "config")
    }

    /// The config as compact JSON with sorted keys.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = Fields::new(&self.extra);
        m.set_opt("created", &self.created);
        m.set_opt("author", &self.author);
        m.set("architecture", self.architecture.as_str());
        m.set("os", self.os.as_str());
        if !self.config.is_null() {
            m.set("config", self.config.clone());
        }
        let mut rootfs = Fields::default();
        rootfs.set("type", "layers");
        rootfs.set(
            "diff_ids",
            array(&self.diff_ids, |d| Value::from(d.to_string())),
        );
        m.set("rootfs", rootfs.into_value());
        if !self.history.is_empty() {
            m.set("history", array(&self.history, History::to_value));
        }
        canonical(&m.into_value())
    }

    /// Parses a config read from `origin` (named in errors).
    pub(crate) fn parse_at(bytes: &[u8], origin: &str) -> Result<ImageConfig> {
        let map = parse_object(bytes, origin)?;
        let o = Obj::root(&map, origin);
        let config = match o.get("config") {
            None => Value::Null,
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return Err(o.invalid("`config` must be an object")),
        };
        let rootfs = o.required_object("rootfs")?;
        let rootfs_type = rootfs.required_str("type")?;
        if rootfs_type != "layers" {
            return Err(o.invalid(format!(
                "`rootfs.type` must be `layers`, found `{rootfs_type}`"
            )));
        }
        // Required by the spec, but Go writes an empty list as `null`.
        if !rootfs.map.contains_key("diff_ids") {
            return Err(o.invalid("`rootfs.diff_ids` is missing"));
        }
        let diff_ids = rootfs
            .optional_array("diff_ids")?
            .iter()
            .enumerate()
            .map(|(i, v)| rootfs.digest_value(&format!("diff_ids[{i}]"), v))
            .collect::<Result<_>>()?;
        let history = o
            .optional_array("history")?
            .iter()
            .enumerate()
            .map(|(i, v)| History::from_object(&o.element("history", i, v)?))
            .collect::<Result<_>>()?;
        Ok(ImageConfig {
            created: o.optional_str("created")?,
            author: o.optional_str("author")?,
            architecture: o.required_str("architecture")?.to_owned(),
            os: o.required_str("os")?.to_owned(),
            config,
            diff_ids,
            history,
            extra: o.extra(&[
                "created",
                "author",
                "architecture",
                "os",
                "config",
                "rootfs",
                "history",
            ]),
        })
    }
}

impl History {
    fn from_object(o: &Obj<'_>) -> Result<History> {
        Ok(History {
            created: o.optional_str("created")?,
            created_by: o.optional_str("created_by")?,
            author: o.optional_str("author")?,
            comment: o.optional_str("comment")?,
            empty_layer: o.optional_bool("empty_layer")?.unwrap_or(false),
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Fields::default();
        m.set_opt("created", &self.created);
        m.set_opt("created_by", &self.created_by);
        m.set_opt("author", &self.author);
        m.set_opt("comment", &self.comment);
        if self.empty_layer {
            m.set("empty_layer", true);
        }
        m.into_value()
    }
}

impl Index {
    /// Parses an image index or a Docker manifest list.
    ///
    /// # Errors
    /// As [`Document::from_json`]; also `EBADMSG` when `mediaType` names
    /// another document.
    pub fn from_json(bytes: &[u8]) -> Result<Index> {
        Index::parse_at(bytes, "index")
    }

    /// The index as compact JSON with sorted keys; its `mediaType` is
    /// [`media_type::OCI_INDEX`].
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = Fields::new(&self.extra);
        m.set("schemaVersion", 2);
        m.set("mediaType", media_type::OCI_INDEX);
        m.set("manifests", array(&self.manifests, Descriptor::to_value));
        m.set_map("annotations", &self.annotations);
        canonical(&m.into_value())
    }

    /// Parses an index read from `origin` (named in errors).
    pub(crate) fn parse_at(bytes: &[u8], origin: &str) -> Result<Index> {
        let map = parse_object(bytes, origin)?;
        let o = Obj::root(&map, origin);
        o.schema_version_2()?;
        if let Some(mt) = o.optional_str("mediaType")?
            && !media_type::is_index(&mt)
        {
            return Err(o.invalid(format!("`mediaType` is `{mt}`, not an image index")));
        }
        let manifests = o
            .required_array("manifests")?
            .iter()
            .enumerate()
            .map(|(i, v)| Descriptor::from_object(&o.element("manifests", i, v)?))
            .collect::<Result<_>>()?;
        Ok(Index {
            manifests,
            annotations: o.annotations("annotations")?,
            extra: o.extra(&["schemaVersion", "mediaType", "manifests", "annotations"]),
        })
    }
}

macro_rules! document {
    ($($t:ty),*) => {$(
        impl Document for $t {
            fn from_json(bytes: &[u8]) -> Result<Self> {
                <$t>::from_json(bytes)
            }

            fn to_json(&self) -> Vec<u8> {
                <$t>::to_json(self)
            }
        }
    )*};
}

document!(Descriptor, Manifest, ImageConfig, Index);

fn invalid(origin: &str, detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidData, Operation::ReadBlob, origin).with_detail(detail)
}

/// Checks the size limit, parses JSON and requires an object.
pub(crate) fn parse_object(bytes: &[u8], origin: &str) -> Result<Map<String, Value>> {
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(
            Error::new(ErrorKind::LimitExceeded, Operation::ReadBlob, origin).with_detail(format!(
                "the document is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES}",
                bytes.len()
            )),
        );
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(origin, "the document is not a JSON object")),
        Err(e) => Err(invalid(origin, format!("invalid JSON: {e}"))),
    }
}

/// A JSON object being read: its fields are named in errors by their path
/// from the document's root (`layers[0].digest`).
struct Obj<'a> {
    map: &'a Map<String, Value>,
    at: String,
    origin: &'a str,
}

impl<'a> Obj<'a> {
    fn root(map: &'a Map<String, Value>, origin: &'a str) -> Obj<'a> {
        Obj {
            map,
            at: String::new(),
            origin,
        }
    }

    fn path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    fn invalid(&self, detail: impl Into<String>) -> Error {
        invalid(self.origin, detail)
    }

    fn wrong_type(&self, key: &str, expected: &str) -> Error {
        self.invalid(format!("`{}` must be {expected}", self.path(key)))
    }

    fn missing(&self, key: &str) -> Error {
        let how = if self.map.get(key).is_some_and(Value::is_null) {
            "null"
        } else {
            "missing"
        };
        self.invalid(format!("`{}` is {how}", self.path(key)))
    }

    /// A field; `null` is the same as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn nested(&self, path: String, v: &'a Value) -> Option<Obj<'a>> {
        v.as_object().map(|map| Obj {
            map,
            at: path,
            origin: self.origin,
        })
    }

    fn required_str(&self, key: &str) -> Result<&'a str> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(v) => v.as_str().ok_or_else(|| self.wrong_type(key, "a string")),
        }
    }

    fn optional_str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong_type(key, "a string")),
        }
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(key, "true or false")),
        }
    }

    fn required_u64(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| self.wrong_type(key, "a non-negative integer")),
        }
    }

    fn schema_version_2(&self) -> Result<()> {
        match self.get("schemaVersion") {
            None => Err(self.missing("schemaVersion")),
            Some(v) if v.as_u64() == Some(2) => Ok(()),
            Some(v) => Err(self.invalid(format!("`schemaVersion` must be 2, found {v}"))),
        }
    }

    fn digest(&self, key: &str) -> Result<Digest> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(v) => self.digest_value(key, v),
        }
    }

    /// `v`, found at `key` of this object, as a digest.
    fn digest_value(&self, key: &str, v: &Value) -> Result<Digest> {
        let s = v
            .as_str()
            .ok_or_else(|| self.wrong_type(key, "a digest string"))?;
        Digest::parse(s).map_err(|e| {
            let path = self.path(key);
            if e.kind() == ErrorKind::Unsupported {
                let algorithm = s.split_once(':').map_or(s, |(a, _)| a);
                Error::new(ErrorKind::Unsupported, Operation::ReadBlob, self.origin).with_detail(
                    format!(
                        "`{path}`: digest algorithm `{algorithm}` is not supported (only sha256)"
                    ),
                )
            } else {
                self.invalid(format!("`{path}` is not a sha256 digest: {v}"))
            }
        })
    }

    fn required_object(&self, key: &str) -> Result<Obj<'a>> {
        self.optional_object(key)?.ok_or_else(|| self.missing(key))
    }

    fn optional_object(&self, key: &str) -> Result<Option<Obj<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => self
                .nested(self.path(key), v)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "an object")),
        }
    }

    fn required_array(&self, key: &str) -> Result<&'a [Value]> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(_) => self.optional_array(key),
        }
    }

    fn optional_array(&self, key: &str) -> Result<&'a [Value]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.wrong_type(key, "an array")),
        }
    }

    /// Element `i` of the array at `key`, which must be an object.
    fn element(&self, key: &str, i: usize, v: &'a Value) -> Result<Obj<'a>> {
        let path = format!("{}[{i}]", self.path(key));
        self.nested(path.clone(), v)
            .ok_or_else(|| self.invalid(format!("`{path}` must be an object")))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.optional_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    self.invalid(format!("`{}[{i}]` must be a string", self.path(key)))
                })
            })
            .collect()
    }

    fn annotations(&self, key: &str) -> Result<BTreeMap<String, String>> {
        let Some(o) = self.optional_object(key)? else {
            return Ok(BTreeMap::new());
        };
        o.map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(o.wrong_type(k, "a string")),
            })
            .collect()
    }

    /// The fields not in `known`, as they are.
    fn extra(&self, known: &[&str]) -> BTreeMap<String, Value> {
        self.map
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// An object being written: starts from the kept unknown fields, which the
/// known ones override.
#[derive(Default)]
struct Fields(BTreeMap<String, Value>);

impl Fields {
    fn new(extra: &BTreeMap<String, Value>) -> Fields {
        Fields(extra.clone())
    }

    fn set(&mut self, key: &str, v: impl Into<Value>) {
        self.0.insert(key.to_owned(), v.into());
    }

    fn set_opt(&mut self, key: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.set(key, v.as_str());
        }
    }

    fn set_map(&mut self, key: &str, map: &BTreeMap<String, String>) {
        if !map.is_empty() {
            let obj: Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            self.set(key, obj);
        }
    }

    fn into_value(self) -> Value {
        Value::Object(self.0.into_iter().collect())
    }
}

fn array<T>(items: &[T], f: impl Fn(&T) -> Value) -> Value {
    Value::Array(items.iter().map(f).collect())
}

/// Compact JSON with the keys of every object sorted by their bytes.
///
/// `serde_json`'s map is sorted unless some crate in the build turns on its
/// `preserve_order` feature; sorting here keeps digests stable either way.
fn canonical(v: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(k.as_str()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            // Display of a scalar is its compact JSON.
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn err_text(r: Result<impl fmt::Debug>) -> (ErrorKind, String) {
        let e = r.unwrap_err();
        (e.kind(), e.to_string())
    }

    #[test]
    fn descriptor_writes_sorted_compact_json_without_empty_fields() {
        let mut desc = Descriptor::new("application/x", d("a"), 7);
        assert_eq!(
            String::from_utf8(desc.to_json()).unwrap(),
            format!(
                r#"{{"digest":"{}","mediaType":"application/x","size":7}}"#,
                d("a")
            )
        );
        desc.annotations.insert("z".into(), "1".into());
        desc.annotations.insert("a".into(), "2".into());
        desc.platform = Some(Platform::new("linux", "arm64"));
        desc.platform.as_mut().unwrap().variant = Some("v8".into());
        desc.extra
            .insert("urls".into(), serde_json::json!(["https://x"]));
        assert_eq!(
            String::from_utf8(desc.to_json()).unwrap(),
            format!(
                concat!(
                    r#"{{"annotations":{{"a":"2","z":"1"}},"digest":"{}","mediaType":"application/x","#,
                    r#""platform":{{"architecture":"arm64","os":"linux","variant":"v8"}},"size":7,"urls":["https://x"]}}"#
                ),
                d("a")
            )
        );
        assert_eq!(Descriptor::from_json(&desc.to_json()).unwrap(), desc);
    }

    #[test]
    fn every_document_round_trips() {
        let mut layer = Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            d("layer"),
            1234,
        );
        layer
            .annotations
            .insert("org.example".into(), "value".into());
        let mut manifest = Manifest::new(
            Descriptor::new(media_type::OCI_CONFIG, d("cfg"), 99),
            vec![layer.clone(), layer],
        );
        manifest
            .extra
            .insert("artifactType".into(), Value::from("application/x"));
        let json = manifest.to_json();
        assert_eq!(Manifest::from_json(&json).unwrap(), manifest);
        assert_eq!(Manifest::from_json(&json).unwrap().to_json(), json);

        let mut config = ImageConfig::new("linux", "amd64");
        config.created = Some("2024-01-01T00:00:00Z".into());
        config.config = serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]});
        config.diff_ids = vec![d("1"), d("2")];
        config.history = vec![
            History {
                created_by: Some("ADD rootfs.tar /".into()),
                ..History::default()
            },
            History {
                created_by: Some("ENV A=1".into()),
                empty_layer: true,
                ..History::default()
            },
        ];
        config.extra.insert("variant".into(), Value::from("v2"));
        let json = config.to_json();
        assert_eq!(ImageConfig::from_json(&json).unwrap(), config);
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains(r#""history":[{"created_by":"ADD rootfs.tar /"},{"created_by":"ENV A=1","empty_layer":true}]"#), "{text}");

        let mut index = Index::default();
        index
            .manifests
            .push(Descriptor::new(media_type::OCI_MANIFEST, d("m"), 5));
        index.annotations.insert("k".into(), "v".into());
        let json = index.to_json();
        assert_eq!(Index::from_json(&json).unwrap(), index);
        assert_eq!(
            String::from_utf8(Index::default().to_json()).unwrap(),
            r#"{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#
        );
    }

    #[test]
    fn a_document_written_twice_gives_the_same_bytes() {
        // Insertion order of extra fields does not matter.
        let mut a = Index::default();
        a.extra
            .insert("b".into(), serde_json::json!({"y": 1, "x": 2}));
        a.extra.insert("a".into(), Value::from(1));
        let b = Index::from_json(&a.to_json()).unwrap();
        assert_eq!(a.to_json(), b.to_json());
        assert_eq!(
            String::from_utf8(a.to_json()).unwrap(),
            r#"{"a":1,"b":{"x":2,"y":1},"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#
        );
    }

    #[test]
    fn schema_version_must_be_two() {
        let doc = br#"{"schemaVersion":1,"config":{},"layers":[]}"#;
        assert_eq!(
            err_text(Manifest::from_json(doc)),
            (
                ErrorKind::InvalidData,
                "failed to read blob `manifest`: `schemaVersion` must be 2, found 1".into()
            )
        );
        assert_eq!(
            err_text(Index::from_json(br#"{"manifests":[]}"#)),
            (
                ErrorKind::InvalidData,
                "failed to read blob `index`: `schemaVersion` is missing".into()
            )
        );
        assert_eq!(
            err_text(Index::from_json(br#"{"schemaVersion":"2","manifests":[]}"#)).1,
            r#"failed to read blob `index`: `schemaVersion` must be 2, found "2""#
        );
    }

    #[test]
    fn required_fields_and_types_are_checked_with_the_field_named() {
        let digest = d("x");
        let cases: Vec<(String, &str)> = vec![
            (
                r#"{"schemaVersion":2,"layers":[]}"#.into(),
                "`config` is missing",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{digest}"}},"layers":[]}}"#
                ),
                "`config.size` is missing",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{digest}","size":-1}},"layers":[]}}"#
                ),
                "`config.size` must be a non-negative integer",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{digest}","size":1.5}},"layers":[]}}"#
                ),
                "`config.size` must be a non-negative integer",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{digest}","size":1}}}}"#
                ),
                "`layers` is missing",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{digest}","size":1}},"layers":[{{"mediaType":"a","digest":"sha256:../../etc/passwd","size":1}}]}}"#
                ),
                r#"`layers[0].digest` is not a sha256 digest: "sha256:../../etc/passwd""#,
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{digest}","size":1}},"layers":[7]}}"#
                ),
                "`layers[0]` must be an object",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":7,"digest":"{digest}","size":1}},"layers":[]}}"#
                ),
                "`config.mediaType` must be a string",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{digest}","size":1}},"layers":[],"annotations":{{"k":1}}}}"#
                ),
                "`annotations.k` must be a string",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a","digest":"{digest}","size":1}},"layers":[]}}"#,
                    media_type::OCI_INDEX
                ),
                "`mediaType` is `application/vnd.oci.image.index.v1+json`, not an image manifest",
            ),
            ("[1,2]".into(), "the document is not a JSON object"),
            (
                "{".into(),
                "invalid JSON: EOF while parsing an object at line 1 column 1",
            ),
        ];
        for (doc, detail) in cases {
            assert_eq!(
                err_text(Manifest::from_json(doc.as_bytes())),
                (
                    ErrorKind::InvalidData,
                    format!("failed to read blob `manifest`: {detail}")
                ),
                "{doc}"
            );
        }
    }

    #[test]
    fn other_digest_algorithms_are_unsupported() {
        let doc = format!(
            r#"{{"mediaType":"a","digest":"sha512:{}","size":1}}"#,
            "ab".repeat(64)
        );
        assert_eq!(
            err_text(Descriptor::from_json(doc.as_bytes())),
            (
                ErrorKind::Unsupported,
                "failed to read blob `descriptor`: `digest`: digest algorithm `sha512` is not supported (only sha256)".into()
            )
        );
    }

    #[test]
    fn config_rootfs_is_checked() {
        let doc = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"zfs","diff_ids":[]}}"#;
        assert_eq!(
            err_text(ImageConfig::from_json(doc)).1,
            "failed to read blob `config`: `rootfs.type` must be `layers`, found `zfs`"
        );
        let doc = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}"#;
        assert_eq!(
            err_text(ImageConfig::from_json(doc)).1,
            "failed to read blob `config`: `rootfs.diff_ids` is missing"
        );
        let doc =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["x"]}}"#;
        assert_eq!(
            err_text(ImageConfig::from_json(doc)).1,
            r#"failed to read blob `config`: `rootfs.diff_ids[0]` is not a sha256 digest: "x""#
        );
        let doc = br#"{"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert_eq!(
            err_text(ImageConfig::from_json(doc)).1,
            "failed to read blob `config`: `architecture` is missing"
        );
        let doc = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":null},"history":[{"empty_layer":"yes"}]}"#;
        assert_eq!(
            err_text(ImageConfig::from_json(doc)).1,
            "failed to read blob `config`: `history[0].empty_layer` must be true or false"
        );
        // Go's null for an empty list is an empty list.
        let doc = br#"{"architecture":"amd64","os":"linux","config":null,"rootfs":{"type":"layers","diff_ids":null},"history":null}"#;
        let config = ImageConfig::from_json(doc).unwrap();
        assert_eq!(config.diff_ids, vec![]);
        assert_eq!(config.config, Value::Null);
    }

    #[test]
    fn documents_over_the_limit_are_refused_before_parsing() {
        let big = vec![b' '; MAX_DOCUMENT_BYTES as usize + 1];
        assert_eq!(
            err_text(Index::from_json(&big)),
            (
                ErrorKind::LimitExceeded,
                format!(
                    "failed to read blob `index`: the document is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES}",
                    MAX_DOCUMENT_BYTES + 1
                )
            )
        );
    }

    #[test]
    fn unknown_fields_and_media_types_are_accepted() {
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.example.unknown","digest":"{}","size":3,"platform":{{"os":"linux","architecture":"amd64","features":["x"]}},"newField":{{"a":[1]}}}}],"futureField":true}}"#,
            d("u")
        );
        let index = Index::from_json(doc.as_bytes()).unwrap();
        assert_eq!(
            index.manifests[0].media_type,
            "application/vnd.example.unknown"
        );
        assert_eq!(
            index.manifests[0].platform,
            Some(Platform::new("linux", "amd64"))
        );
        assert_eq!(
            index.manifests[0].extra.get("newField"),
            Some(&serde_json::json!({"a": [1]}))
        );
        assert_eq!(index.extra.get("futureField"), Some(&Value::Bool(true)));
        // Docker's manifest list is read as an index.
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media_type::DOCKER_MANIFEST_LIST
        );
        assert_eq!(Index::from_json(list.as_bytes()).unwrap(), Index::default());
    }

    /// The shape `docker manifest inspect` prints for `busybox:1.36`.
    #[test]
    fn a_docker_v2_manifest_parses() {
        let doc = r#"{
           "schemaVersion": 2,
           "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": {
              "mediaType": "application/vnd.docker.container.image.v1+json",
              "size": 1457,
              "digest": "sha256:a416a98b71e224a31ee99cff8e16063554498227d2b696152a9c3e0aa65e5824"
           },
           "layers": [
              {
                 "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "size": 2591575,
                 "digest": "sha256:3f4d90098f5b5a6f6a76e9d217da85aa39b2081e30fa1f7d287138d6e7bf0ad7"
              }
           ]
        }"#;
        let m = Manifest::from_json(doc.as_bytes()).unwrap();
        assert_eq!(m.media_type.as_deref(), Some(media_type::DOCKER_MANIFEST));
        assert_eq!(m.config.media_type, media_type::DOCKER_CONFIG);
        assert_eq!(m.config.size, 1457);
        assert_eq!(
            m.config.digest.hex(),
            "a416a98b71e224a31ee99cff8e16063554498227d2b696152a9c3e0aa65e5824"
        );
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 2_591_575);
        assert_eq!(
            crate::oci::Compression::from_media_type(&m.layers[0].media_type),
            Some(crate::oci::Compression::Gzip)
        );
        assert!(m.annotations.is_empty() && m.extra.is_empty());
    }

    #[test]
    fn an_oci_config_with_history_parses() {
        let doc = r#"{
          "created": "2023-05-19T20:19:21.165911007Z",
          "architecture": "amd64",
          "os": "linux",
          "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"]
          },
          "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:9547b4c33213e630a0ca602a989ecc094e042146ae8afa502e1e65af6473db03"]
          },
          "history": [
            {
              "created": "2023-05-19T20:19:20.958463346Z",
              "created_by": "/bin/sh -c #(nop) ADD file:f6b1c26d2e0fe5f4b5a3e4dbd84cf52da1d6ee4ab3a4fd05f4eaf1e3cf3e3b8d in / "
            },
            {
              "created": "2023-05-19T20:19:21.165911007Z",
              "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]",
              "empty_layer": true
            }
          ],
          "container_config": {"Hostname": ""}
        }"#;
        let c = ImageConfig::from_json(doc.as_bytes()).unwrap();
        assert_eq!(c.architecture, "amd64");
        assert_eq!(c.os, "linux");
        assert_eq!(c.created.as_deref(), Some("2023-05-19T20:19:21.165911007Z"));
        assert_eq!(c.config["Cmd"], serde_json::json!(["sh"]));
        assert_eq!(
            c.diff_ids,
            vec![
                Digest::parse(
                    "sha256:9547b4c33213e630a0ca602a989ecc094e042146ae8afa502e1e65af6473db03"
                )
                .unwrap()
            ]
        );
        assert_eq!(c.history.len(), 2);
        assert!(!c.history[0].empty_layer);
        assert!(c.history[1].empty_layer);
        assert_eq!(
            c.history[1].created_by.as_deref(),
            Some("/bin/sh -c #(nop)  CMD [\"sh\"]")
        );
        assert_eq!(c.extra.keys().collect::<Vec<_>>(), vec!["container_config"]);
        assert_eq!(ImageConfig::from_json(&c.to_json()).unwrap(), c);
    }
}
