//! The blob-info cache: which repositories of which registry hold each
//! blob, kept beside a layout in `.layerstack/registry-blobs.json`, so a
//! push can mount a blob from another repository instead of uploading it.
//!
//! It is a hint: a wrong entry costs one refused mount. Reading a missing,
//! damaged or oversized file gives an empty cache; writing is best effort.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use serde_json::{Map, Value};

use crate::oci::Digest;
use crate::oci::OciLayout;

const DIR: &str = ".layerstack";
const FILE: &str = "registry-blobs.json";
/// The file is a few hundred KiB at most; more is not ours.
const MAX_BYTES: u64 = 8 << 20;
/// Repositories remembered per blob (the latest).
const REPOS_PER_BLOB: usize = 8;
/// Blobs remembered per registry.
const BLOBS_PER_REGISTRY: usize = 20_000;

/// Registry → blob → repositories, the latest last.
type Known = BTreeMap<String, BTreeMap<Digest, VecDeque<String>>>;

#[derive(Debug)]
pub(crate) struct BlobInfoCache {
    layout: Option<OciLayout>,
    known: Mutex<Known>,
}

impl BlobInfoCache {
    /// The cache beside `layout` (`None`: in memory only).
    pub(crate) fn open(layout: Option<&OciLayout>) -> BlobInfoCache {
        let known = layout.and_then(load).unwrap_or_default();
        BlobInfoCache {
            layout: layout.cloned(),
            known: Mutex::new(known),
        }
    }

    /// The repositories of `registry` other than `except` known to hold
    /// `digest`, the latest first.
    pub(crate) fn repositories(
        &self,
        registry: &str,
        digest: &Digest,
        except: &str,
    ) -> Vec<String> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(registry)
            .and_then(|blobs| blobs.get(digest))
            .map(|repos| {
                repos
                    .iter()
                    .rev()
                    .filter(|r| *r != except)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Remembers that `repository` of `registry` holds `digest`.
    pub(crate) fn record(&self, registry: &str, repository: &str, digest: &Digest) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let blobs = known.entry(registry.to_owned()).or_default();
        if blobs.len() >= BLOBS_PER_REGISTRY && !blobs.contains_key(digest) {
            return;
        }
        let repos = blobs.entry(*digest).or_default();
        repos.retain(|r| r != repository);
        repos.push_back(repository.to_owned());
        while repos.len() > REPOS_PER_BLOB {
            repos.pop_front();
        }
    }

    /// Writes the cache beside the layout (best effort: a failure only
    /// loses hints).
    pub(crate) fn save(&self) {
        let Some(layout) = &self.layout else { return };
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut registries = Map::new();
        for (registry, blobs) in known.iter() {
            let mut map = Map::new();
            for (digest, repos) in blobs {
                map.insert(
                    digest.to_string(),
                    Value::Array(repos.iter().cloned().map(Value::String).collect()),
                );
            }
            registries.insert(registry.clone(), Value::Object(map));
        }
        let bytes = serde_json::to_vec(&Value::Object(registries)).unwrap_or_default();
        let _ = store(layout, &bytes);
    }
}

fn open_dir(layout: &OciLayout, create: bool) -> rustix::io::Result<std::os::fd::OwnedFd> {
    let root = rustix::fs::open(
        layout.root().as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if create {
        match rustix::fs::mkdirat(&root, DIR, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
    }
    // Not through a symlink: the cache stays inside the layout.
    rustix::fs::openat(
        &root,
        DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn load(layout: &OciLayout) -> Option<Known> {
    let dir = open_dir(layout, false).ok()?;
    let fd = rustix::fs::openat(
        &dir,
        FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > MAX_BYTES {
        return None;
    }
    let json: Value = serde_json::from_slice(&bytes).ok()?;
    let mut known = Known::new();
    for (registry, blobs) in json.as_object()? {
        let entry = known.entry(registry.clone()).or_default();
        for (digest, repos) in blobs.as_object()?.iter().take(BLOBS_PER_REGISTRY) {
            let Ok(digest) = Digest::parse(digest) else {
                continue;
            };
            let repos: VecDeque<String> = repos
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                // A name that is not a repository's would reach the token
                // request's scope.
                .filter(|r| super::valid_repository(r))
                .take(REPOS_PER_BLOB)
                .map(str::to_owned)
                .collect();
            entry.insert(digest, repos);
        }
    }
    Some(known)
}

fn store(layout: &OciLayout, bytes: &[u8]) -> rustix::io::Result<()> {
    use std::io::Write;
    let dir = open_dir(layout, true)?;
    let temp = format!(".{FILE}.tmp-{}", std::process::id());
    let fd = rustix::fs::openat(
        &dir,
        &temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    let mut file = std::fs::File::from(fd);
    let written = file.write_all(bytes);
    drop(file);
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(&dir, &temp, rustix::fs::AtFlags::empty());
        return Err(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO));
    }
    rustix::fs::renameat(&dir, &temp, &dir, FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_remembered_latest_first_and_saved() {
        let dir = std::env::temp_dir().join(format!("layerstack-blobcache-{}", std::process::id()));
        let dir = camino::Utf8PathBuf::from_path_buf(dir).unwrap();
        let layout = OciLayout::create(&dir).unwrap();
        let d = Digest::of(b"x");
        let cache = BlobInfoCache::open(Some(&layout));
        cache.record("reg:5000", "a", &d);
        cache.record("reg:5000", "b", &d);
        cache.record("reg:5000", "a", &d);
        cache.record("other:1", "c", &d);
        assert_eq!(cache.repositories("reg:5000", &d, "z"), ["a", "b"]);
        assert_eq!(cache.repositories("reg:5000", &d, "a"), ["b"]);
        cache.save();
        let again = BlobInfoCache::open(Some(&layout));
        assert_eq!(again.repositories("reg:5000", &d, "z"), ["a", "b"]);
        assert_eq!(again.repositories("other:1", &d, "z"), ["c"]);
        assert!(
            again
                .repositories("reg:5000", &Digest::of(b"y"), "z")
                .is_empty()
        );
        std::fs::write(dir.join(".layerstack/registry-blobs.json"), b"{not json").unwrap();
        assert!(
            BlobInfoCache::open(Some(&layout))
                .repositories("reg:5000", &d, "z")
                .is_empty()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
