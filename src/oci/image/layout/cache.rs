//! The layer cache: a record per layer blob beside the blobs, what a
//! full read of the blob established (its DiffID and uncompressed size).

use super::*;

/// The layer cache: `.layerstack/layers/<hex>.json`.
pub(super) const CACHE_DIR: &str = ".layerstack";

pub(super) const CACHE_LAYERS: &str = "layers";

pub(super) const CACHE_SUFFIX: &str = ".json";

/// A layer record is a few hundred bytes; more is not one of ours.
pub(super) const MAX_RECORD_BYTES: u64 = 4096;

impl OciLayout {
    /// `.layerstack/layers/`, opened beneath the root without following a
    /// symlink (made first if `create`).
    pub(super) fn open_cache(&self, root: &OwnedFd, create: bool) -> Result<Arc<OwnedFd>> {
        let top = self.root.join(CACHE_DIR);
        let shown = top.join(CACHE_LAYERS);
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
        if create {
            make_dir(root, CACHE_DIR)
                .map_err(|e| errno_error(e, Operation::CreateDir, top.as_str()))?;
        }
        let cache = open_part(root, CACHE_DIR, dir_flags, &top)?;
        if create {
            make_dir(&cache, CACHE_LAYERS)
                .map_err(|e| errno_error(e, Operation::CreateDir, shown.as_str()))?;
        }
        Ok(Arc::new(open_part(
            &cache,
            CACHE_LAYERS,
            dir_flags,
            &shown,
        )?))
    }

    /// The layer cache's record of the layer blob `digest`, if there is one
    /// that names `diff_id`: a record that is missing, damaged, not a
    /// regular file or about another layer is `None` (see [the layer
    /// cache](OciLayout#the-layer-cache), which says what a record vouches
    /// for: never more than the blob digest, still checked, proves).
    #[must_use]
    pub fn layer_record(&self, digest: &Digest, diff_id: &Digest) -> Option<LayerRecord> {
        let root = self.open_root().ok()?;
        let dir = self.open_cache(&root, false).ok()?;
        let name = format!("{}{CACHE_SUFFIX}", digest.hex());
        let shown = self.root.join(CACHE_DIR).join(CACHE_LAYERS).join(&name);
        let bytes = read_file(&dir, &name, &shown, MAX_RECORD_BYTES).ok()?;
        let map = spec::parse_object(&bytes, shown.as_str()).ok()?;
        let field = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Digest>().ok())
        };
        let record = LayerRecord {
            digest: field("digest")?,
            diff_id: field("diff_id")?,
            uncompressed_size: map.get("uncompressed_size").and_then(Value::as_u64)?,
        };
        (record.digest == *digest && record.diff_id == *diff_id).then_some(record)
    }

    /// Keeps `record` in the layer cache, replacing an earlier one (a
    /// record already there as it is is left alone, so reading an image
    /// again writes nothing). Call it only with what a read of the whole
    /// blob established (its digest and DiffID checked, or the DiffID of
    /// a tar this process wrote and compressed itself):
    /// [`ImageStore::flatten`](crate::oci::ImageStore::flatten) relies on
    /// the DiffID. Not synced: a
    /// record lost in a crash is only a cache miss.
    ///
    /// # Errors
    /// I/O errors; `ELOOP` if a part of the cache is a symlink. Callers
    /// that only fill the cache on the way may ignore them.
    pub fn record_layer(&self, record: &LayerRecord) -> Result<()> {
        if self.layer_record(&record.digest, &record.diff_id) == Some(*record) {
            return Ok(());
        }
        let root = self.open_root()?;
        let dir = self.open_cache(&root, true)?;
        let shown = self.root.join(CACHE_DIR).join(CACHE_LAYERS);
        let fail = |e: &io::Error| Error::from_io(e, Operation::Write, shown.as_str());
        let json = serde_json::json!({
            "digest": record.digest.to_string(),
            "diff_id": record.diff_id.to_string(),
            "uncompressed_size": record.uncompressed_size,
        });
        let (mut file, temp) = TempPath::create(&dir).map_err(|e| fail(&e))?;
        file.write_all(json.to_string().as_bytes())
            .map_err(|e| fail(&e))?;
        drop(file);
        let name = format!("{}{CACHE_SUFFIX}", record.digest.hex());
        temp.persist(&dir, &name).map_err(|e| fail(&e))
    }
}

impl OciLayout {
    /// `.layerstack/<parts>` opened beneath the root without following a
    /// symlink at any step (each made first if `create`).
    fn open_cache_path(&self, parts: &[&str], create: bool) -> Result<(Arc<OwnedFd>, Utf8PathBuf)> {
        let root = self.open_root()?;
        let mut shown = self.root.join(CACHE_DIR);
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
        if create {
            make_dir(&root, CACHE_DIR)
                .map_err(|e| errno_error(e, Operation::CreateDir, shown.as_str()))?;
        }
        let mut dir = open_part(&root, CACHE_DIR, dir_flags, &shown)?;
        for part in parts {
            let next = shown.join(part);
            if create {
                make_dir(&dir, part)
                    .map_err(|e| errno_error(e, Operation::CreateDir, next.as_str()))?;
            }
            dir = open_part(&dir, part, dir_flags, &next)?;
            shown = next;
        }
        Ok((Arc::new(dir), shown))
    }

    /// The bytes of cache file `.layerstack/<parts>/<name>` (at most
    /// `limit`), read beneath the root without following a symlink.
    pub(crate) fn read_cache_file(
        &self,
        parts: &[&str],
        name: &str,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let (dir, shown) = self.open_cache_path(parts, false)?;
        read_file(&dir, name, &shown.join(name), limit)
    }

    /// Writes cache file `.layerstack/<parts>/<name>` atomically (a
    /// temporary file renamed into place), beneath the root without
    /// following a symlink. Not synced: a cache file lost in a crash is a
    /// miss.
    pub(crate) fn write_cache_file(&self, parts: &[&str], name: &str, bytes: &[u8]) -> Result<()> {
        let (dir, shown) = self.open_cache_path(parts, true)?;
        let fail = |e: &io::Error| Error::from_io(e, Operation::Write, shown.as_str());
        let (mut file, temp) = TempPath::create(&dir).map_err(|e| fail(&e))?;
        file.write_all(bytes).map_err(|e| fail(&e))?;
        drop(file);
        temp.persist(&dir, name).map_err(|e| fail(&e))
    }
}
