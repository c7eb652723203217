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

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use camino::{Utf8Path, Utf8PathBuf};

use super::{valid_repository, valid_tag};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::oci::Digest;
use crate::oci::OciLayout;
use crate::oci::{Descriptor, Index, MAX_DOCUMENT_BYTES, Manifest, media_type};

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

    /// A hard link into the layout (checked when read, as every blob is),
    /// or a verified copy across filesystems.
    fn export_blob(&self, layout: &OciLayout, digest: &Digest, size: u64) -> Result<()> {
        if layout.has_blob(digest)? {
            return Ok(());
        }
        let from = self.blob_path(digest);
        let meta = std::fs::symlink_metadata(&from)
            .map_err(|e| Error::from_io(&e, Operation::OpenImage, &from))?;
        if !meta.is_file() {
            return Err(
                Error::new(ErrorKind::InvalidData, Operation::OpenImage, &from)
                    .with_detail("not a regular file"),
            );
        }
        // `link` does not follow a symlink; the check above refused one.
        if std::fs::hard_link(&from, layout.blob_path(digest)).is_ok() {
            return Ok(());
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_nofollow())
            .open(&from)
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
