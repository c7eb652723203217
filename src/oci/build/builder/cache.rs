//! The build cache: a step's key → its result, one small JSON file per key
//! in the layout's `.layerstack/build-cache/` (never in `blobs/`, so
//! garbage collection leaves it alone; a result whose blob it removed is a
//! miss).

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{Value, json};

use super::LayerReport;
use crate::error::{Error, Operation, Result};
use crate::oci::image::digest::{Digest, Hasher};
use crate::oci::image::layout::OciLayout;
use crate::oci::image::spec::Descriptor;

/// A step's key: the SHA-256 of its parent's key and its parts, each
/// length-prefixed so that no two lists of parts hash alike.
pub(super) fn key(parent: &Digest, parts: &[&str]) -> Digest {
    let mut hasher = Hasher::new();
    hasher.update(b"layerstack build cache v1\n");
    hasher.update(parent.to_string().as_bytes());
    for part in parts {
        hasher.update(format!("\n{}:", part.len()).as_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finish()
}

/// A layer the cache gives back.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StoredLayer {
    media_type: String,
    report: LayerReport,
}

impl StoredLayer {
    pub(super) fn new(media_type: &str, report: LayerReport) -> StoredLayer {
        StoredLayer {
            media_type: media_type.to_owned(),
            report,
        }
    }

    /// The layer's descriptor in a manifest.
    pub(super) fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.report.digest,
            self.report.size,
        )
    }
}

impl std::ops::Deref for StoredLayer {
    type Target = LayerReport;
    fn deref(&self) -> &LayerReport {
        &self.report
    }
}

/// What a step gave.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Entry {
    /// No layer (a config step, or a step that changed nothing).
    NoLayer,
    /// A layer.
    Layer(StoredLayer),
}

impl Entry {
    fn to_json(&self) -> Value {
        match self {
            Entry::NoLayer => json!({ "layer": null }),
            Entry::Layer(l) => json!({ "layer": {
                "mediaType": l.media_type,
                "digest": l.report.digest.to_string(),
                "size": l.report.size,
                "diffID": l.report.diff_id.to_string(),
                "uncompressedSize": l.report.uncompressed_size,
            }}),
        }
    }

    fn from_json(value: &Value) -> Option<Entry> {
        let layer = value.get("layer")?;
        if layer.is_null() {
            return Some(Entry::NoLayer);
        }
        let digest = |field: &str| Digest::parse(layer.get(field)?.as_str()?).ok();
        Some(Entry::Layer(StoredLayer {
            media_type: layer.get("mediaType")?.as_str()?.to_owned(),
            report: LayerReport {
                digest: digest("digest")?,
                diff_id: digest("diffID")?,
                size: layer.get("size")?.as_u64()?,
                uncompressed_size: layer.get("uncompressedSize")?.as_u64()?,
            },
        }))
    }
}

/// The cache of one layout.
#[derive(Debug)]
pub(super) struct BuildCache {
    dir: Utf8PathBuf,
}

impl BuildCache {
    pub(super) fn new(layout_root: &Utf8Path) -> BuildCache {
        BuildCache {
            dir: layout_root.join(".layerstack").join("build-cache"),
        }
    }

    fn file(&self, key: &Digest) -> Utf8PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// `key`'s result, if stored and its blob is still in `layout`; a
    /// file that cannot be read or parsed is a miss.
    pub(super) fn get(&self, layout: &OciLayout, key: &Digest) -> Option<Entry> {
        let bytes = std::fs::read(self.file(key)).ok()?;
        let entry = Entry::from_json(&serde_json::from_slice(&bytes).ok()?)?;
        if let Entry::Layer(layer) = &entry
            && !layout.has_blob(&layer.report.digest).unwrap_or(false)
        {
            return None;
        }
        Some(entry)
    }

    /// Stores `key`'s result: written beside, then renamed, so a reader
    /// never sees half a file.
    pub(super) fn put(&self, key: &Digest, entry: &Entry) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::from_io(&e, Operation::BuildImage, &self.dir))?;
        let file = self.file(key);
        let temp = self
            .dir
            .join(format!(".{}.{}.tmp", key.hex(), std::process::id()));
        let text = entry.to_json().to_string();
        std::fs::write(&temp, text)
            .and_then(|()| std::fs::rename(&temp, &file))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                Error::from_io(&e, Operation::BuildImage, &file)
            })
    }
}
