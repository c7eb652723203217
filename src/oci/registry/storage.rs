//! A registry's storage directory as a read-only image source: the tree
//! the reference registry's filesystem driver writes (Debian's
//! `docker-registry` keeps it in `/var/lib/registry`):
//!
//! ```text
//! docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data        every blob, once
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//!                                                           "sha256:<hex>" of the tag's manifest
//! docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
//!                                                           the blobs the repository links
//! ```
//!
//! [`RegistryStorage::export`] puts an image of it into an image layout
//! (hard links to the registry's blob files where the filesystem allows,
//! copies otherwise), so everything that reads layouts reads what the
//! registry stored. Nothing in the storage directory is written.
//!
//! # Security
//!
//! The directory is the registry's, but what it holds is read as
//! untrusted: repository names and tags are checked before they become
//! paths, link files must hold a sha256 digest, files are opened without
//! following a symlink in their last component, and every blob is checked
//! against its digest when the layout reads it.

use std::io::{Read, Seek};
use std::os::unix::fs::OpenOptionsExt;

use camino::{Utf8Path, Utf8PathBuf};
use rustix::fs::{AtFlags, Mode, OFlags};

use super::{valid_repository, valid_tag};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::fs::beneath::{OPENAT2_RESOLVE, proc_path, procfs_is_mounted};
use crate::oci::OciLayout;
use crate::oci::{Descriptor, Index, MAX_DOCUMENT_BYTES, Manifest, media_type};
use crate::oci::{Digest, DigestWriter};

const V2: &str = "docker/registry/v2";
const MAX_DEPTH: usize = 8;

/// A registry's storage directory, read only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryStorage {
    root: Utf8PathBuf,
}

impl RegistryStorage {
    /// Whether `dir` holds a registry's storage (`docker/registry/v2/`).
    #[must_use]
    pub fn is_storage(dir: &Utf8Path) -> bool {
        dir.join(V2).join("repositories").is_dir() || dir.join(V2).join("blobs").is_dir()
    }

    /// Opens the storage directory `dir`.
    ///
    /// # Errors
    /// `ENOENT` if `dir` has no `docker/registry/v2/`.
    pub fn open(dir: impl AsRef<Utf8Path>) -> Result<RegistryStorage> {
        let root = dir.as_ref().to_owned();
        if RegistryStorage::is_storage(&root) {
            Ok(RegistryStorage { root })
        } else {
            Err(Error::new(ErrorKind::NotFound, Operation::OpenImage, &root)
                .with_detail("not a registry's storage directory (no docker/registry/v2)"))
        }
    }

    /// Where the registry keeps the bytes of `digest`.
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> Utf8PathBuf {
        let hex = digest.hex();
        self.root
            .join(V2)
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data")
    }

    /// The manifest digest `reference` (a tag, or a digest) names in
    /// `repository`.
    ///
    /// # Errors
    /// `EINVAL` for a bad name or tag; `ENOENT` for an unknown tag;
    /// `EBADMSG` for a link that holds no digest.
    pub fn resolve(&self, repository: &str, reference: &str) -> Result<Digest> {
        let shown = format!("{}:{repository}:{reference}", self.root);
        if !valid_repository(repository) {
            return Err(
                Error::new(ErrorKind::InvalidInput, Operation::OpenImage, &shown)
                    .with_detail("not a repository name"),
            );
        }
        if let Ok(digest) = Digest::parse(reference) {
            return Ok(digest);
        }
        if !valid_tag(reference) {
            return Err(
                Error::new(ErrorKind::InvalidInput, Operation::OpenImage, &shown)
                    .with_detail("not a tag"),
            );
        }
        let link = self.root.join(V2).join(format!(
            "repositories/{repository}/_manifests/tags/{reference}/current/link"
        ));
        let text = read_small(&link, 256).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::new(ErrorKind::NotFound, Operation::OpenImage, &shown)
                .with_detail("the registry has no such tag"),
            _ => e,
        })?;
        let text = String::from_utf8(text).unwrap_or_default();
        Digest::parse(text.trim()).map_err(|_| {
            Error::new(ErrorKind::InvalidData, Operation::OpenImage, &link)
                .with_detail("the link holds no sha256 digest")
        })
    }

    /// Puts the image `reference` of `repository` into `layout` under the
    /// tag `tag` and returns its descriptor: every blob it names (through
    /// an index too), hard-linked from the registry's files or copied.
    ///
    /// # Errors
    /// Those of [`resolve`](Self::resolve); a missing blob (`ENOENT`); a
    /// manifest whose bytes do not match its digest (`EBADMSG`); errors
    /// writing the layout.
    pub fn export(
        &self,
        repository: &str,
        reference: &str,
        layout: &OciLayout,
        tag: &str,
    ) -> Result<Descriptor> {
        let digest = self.resolve(repository, reference)?;
        let top = self.export_node(layout, digest, 0)?;
        layout.set_tag(tag, top.clone())?;
        Ok(top)
    }

    fn export_node(&self, layout: &OciLayout, digest: Digest, depth: usize) -> Result<Descriptor> {
        let path = self.blob_path(&digest);
        if depth > MAX_DEPTH {
            return Err(
                Error::new(ErrorKind::LimitExceeded, Operation::OpenImage, &path)
                    .with_detail("indexes nest too deep"),
            );
        }
        let bytes = read_small(&path, MAX_DOCUMENT_BYTES)?;
        if Digest::of(&bytes) != digest {
            return Err(
                Error::new(ErrorKind::InvalidData, Operation::OpenImage, &path).with_detail(
                    format!("digest mismatch: the content is {}", Digest::of(&bytes)),
                ),
            );
        }
        let media = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned());
        if media_type::is_index(&media) {
            for child in Index::from_json(&bytes)?.manifests {
                self.export_node(layout, child.digest, depth + 1)?;
            }
        } else {
            let manifest = Manifest::from_json(&bytes)?;
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                self.export_blob(layout, &blob.digest, blob.size)?;
            }
        }
        layout.put_blob_verified(&bytes[..], &digest, bytes.len() as u64)?;
        Ok(Descriptor::new(media, digest, bytes.len() as u64))
    }

    /// A blob of the registry into the layout, checked against its digest
    /// and size first: opened beneath the storage root without following
    /// any symlink, hashed through that descriptor, then hard-linked from
    /// that very inode (or copied, across filesystems or without procfs).
    fn export_blob(&self, layout: &OciLayout, digest: &Digest, size: u64) -> Result<()> {
        if layout.has_blob(digest)? {
            return Ok(());
        }
        let from = self.blob_path(digest);
        let io = |e: rustix::io::Errno| {
            Error::from_io(&std::io::Error::from(e), Operation::OpenImage, &from)
        };
        let root = rustix::fs::open(
            self.root.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let rel = from.strip_prefix(&self.root).unwrap_or(&from);
        let fd = rustix::fs::openat2(
            &root,
            rel.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
            OPENAT2_RESOLVE,
        )
        .map_err(io)?;
        let mut file = std::fs::File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| Error::from_io(&e, Operation::OpenImage, &from))?;
        if !meta.is_file() {
            return Err(
                Error::new(ErrorKind::InvalidData, Operation::OpenImage, &from)
                    .with_detail("not a regular file"),
            );
        }
        let mut hashed = DigestWriter::new(std::io::sink());
        std::io::copy(&mut file, &mut hashed)
            .map_err(|e| Error::from_io(&e, Operation::OpenImage, &from))?;
        let (_, got, length) = hashed.finish();
        if got != *digest || length != size {
            return Err(
                Error::new(ErrorKind::InvalidData, Operation::OpenImage, &from).with_detail(
                    format!(
                        "the registry's file holds {length} bytes of {got}, not {size} of {digest}"
                    ),
                ),
            );
        }
        if procfs_is_mounted()
            && rustix::fs::linkat(
                rustix::fs::CWD,
                proc_path(&file),
                rustix::fs::CWD,
                layout.blob_path(digest).as_str(),
                AtFlags::SYMLINK_FOLLOW,
            )
            .is_ok()
        {
            return Ok(());
        }
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::from_io(&e, Operation::OpenImage, &from))?;
        layout.put_blob_verified(file, digest, size)
    }
}

/// `O_NOFOLLOW`, from rustix (no libc dependency).
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Reads at most `limit` bytes of a regular file, not through a symlink.
fn read_small(path: &Utf8Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow() | rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::from_io(&e, Operation::OpenImage, path))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::from_io(&e, Operation::OpenImage, path))?;
    if !meta.is_file() {
        return Err(
            Error::new(ErrorKind::InvalidData, Operation::OpenImage, path)
                .with_detail("not a regular file"),
        );
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::from_io(&e, Operation::OpenImage, path))?;
    if bytes.len() as u64 > limit {
        return Err(
            Error::new(ErrorKind::LimitExceeded, Operation::OpenImage, path)
                .with_detail(format!("larger than {limit} bytes")),
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storage directory holding `data` as the blob of `digest`, and a
    /// fresh layout, in a scratch directory.
    fn fixture(
        name: &str,
        digest: &Digest,
        data: &[u8],
    ) -> (Utf8PathBuf, RegistryStorage, OciLayout) {
        let dir = Utf8PathBuf::from_path_buf(std::env::temp_dir())
            .unwrap()
            .join(format!("layerstack-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = dir.join("storage");
        std::fs::create_dir_all(storage.join(V2).join("blobs")).unwrap();
        let storage = RegistryStorage::open(&storage).unwrap();
        let blob = storage.blob_path(digest);
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, data).unwrap();
        let layout = OciLayout::create(dir.join("layout")).unwrap();
        (dir, storage, layout)
    }

    #[test]
    fn a_blob_is_checked_before_it_enters_the_layout() {
        let good = b"the layer";
        let digest = Digest::of(good);
        let (dir, storage, layout) = fixture("check", &digest, b"another layer");
        let err = storage
            .export_blob(&layout, &digest, good.len() as u64)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(!layout.has_blob(&digest).unwrap());
        std::fs::write(storage.blob_path(&digest), good).unwrap();
        let err = storage.export_blob(&layout, &digest, 3).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(!layout.has_blob(&digest).unwrap());
        storage
            .export_blob(&layout, &digest, good.len() as u64)
            .unwrap();
        assert_eq!(std::fs::read(layout.blob_path(&digest)).unwrap(), good);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_inside_the_storage_is_not_followed() {
        let good = b"a private file";
        let digest = Digest::of(good);
        let (dir, storage, layout) = fixture("symlink", &digest, good);
        // `blobs` moved away and replaced by a symlink to it: the right
        // bytes, reached through a link a hostile storage could aim anywhere.
        let blobs = dir.join("storage").join(V2).join("blobs");
        let elsewhere = dir.join("elsewhere");
        std::fs::rename(&blobs, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &blobs).unwrap();
        assert!(
            storage
                .export_blob(&layout, &digest, good.len() as u64)
                .is_err()
        );
        assert!(!layout.has_blob(&digest).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
