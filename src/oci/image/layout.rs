use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::beneath::{errno_error, errno_kind};
use crate::meta::FileType;
use crate::oci::Compression;
use crate::oci::image::digest::{Digest, DigestWriter, Hasher};
use crate::oci::image::spec::{
    self, ANNOTATION_REF_NAME, Descriptor, Document, ImageConfig, Index, MAX_DOCUMENT_BYTES,
    Manifest, Platform, media_type,
};
use crate::oci::tar::read::{Limits, TarKind, TarReader};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
const BLOBS_DIR: &str = "blobs/sha256";
const TEMP_PREFIX: &str = ".tmp-";
/// The layer cache: `.layerstack/layers/<hex>.json`.
const CACHE_DIR: &str = ".layerstack";
const CACHE_LAYERS: &str = "layers";
const CACHE_SUFFIX: &str = ".json";
/// A layer record is a few hundred bytes; more is not one of ours.
const MAX_RECORD_BYTES: u64 = 4096;

/// How old a temporary file must be before garbage collection removes it:
/// younger ones may belong to a writer that is still running.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// How deep image indexes may nest before a lookup gives up.
const MAX_INDEX_DEPTH: usize = 8;

/// The media type `docker save` gives its uncompressed layers.
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The annotation containerd and Docker put the full image name in.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// The most bytes of JSON files an archive import keeps in memory.
const MAX_ARCHIVE_DOCUMENT_BYTES: u64 = 64 << 20;

/// An OCI image layout on disk: a content-addressed blob store with tags.
///
/// It holds only the directory's path; every method reads the disk, so
/// several values (and processes) can use one layout.
///
/// The OCI image layout (`image-layout.md`): a directory that stores blobs
/// by digest and names images by tag.
///
/// ```text
/// oci-layout            {"imageLayoutVersion":"1.0.0"}
/// index.json            an image index; the `org.opencontainers.image.ref.name`
///                       annotation of a descriptor is its tag
/// blobs/sha256/<hex>    every blob, named by the sha256 of its bytes
/// .layerstack/layers/<hex>.json
///                       what layerstack learnt reading a layer blob (its
///                       DiffID and uncompressed size): a cache, see below
/// ```
///
/// ```
/// use layerstack::oci::OciLayout;
/// use layerstack::oci::{Descriptor, ImageConfig, Manifest, media_type};
/// use layerstack::oci::Compression;
///
/// # let dir = std::env::temp_dir().join(format!("layerstack-doc-layout-{}", std::process::id()));
/// # let dir = camino::Utf8PathBuf::from_path_buf(dir).unwrap();
/// let layout = OciLayout::create(&dir)?;
/// let (digest, size) = layout.put_blob(b"a layer tar")?;
/// let layer = Descriptor::new(Compression::None.layer_media_type(), digest, size);
/// let mut config = ImageConfig::new("linux", "amd64");
/// config.diff_ids.push(digest);
/// let config = layout.put_json(&config, media_type::OCI_CONFIG)?;
/// let manifest = layout.put_json(&Manifest::new(config, vec![layer]), media_type::OCI_MANIFEST)?;
/// layout.set_tag("latest", manifest)?;
///
/// let image = layout.resolve(None)?; // `latest`
/// assert_eq!(layout.read_manifest(&image)?.layers[0].digest, digest);
/// assert_eq!(layout.read_blob(&digest, Some(size), 1 << 20)?, b"a layer tar");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # Atomicity
///
/// A blob is written to a temporary file in `blobs/sha256/` (named
/// `.tmp-<pid>-<n>`), hashed as it is written, synced, renamed to its
/// digest and the directory synced: a crash leaves the blob whole or
/// absent, never partial. A blob that is already stored is stored once.
/// `index.json` is replaced the same way, under an exclusive `flock` of
/// the `oci-layout` file, so concurrent tag changes do not lose each other.
///
/// # Verification
///
/// Reads check what they return: [`OciLayout::open_blob`] refuses a blob
/// whose length differs from the descriptor's size, and its reader fails
/// with [`io::ErrorKind::InvalidData`] when the bytes do not hash to the
/// digest, before it hands out the last of them. A corrupted blob is never
/// silently trusted.
///
/// # Security
///
/// A layout may come from anyone. The only names the store turns into file
/// names are digests, which are 64 validated hex digits, so no name from a
/// document reaches outside `blobs/sha256/`. Every part is opened by one
/// name relative to the descriptor of its parent (the layout's directory,
/// `blobs`, `blobs/sha256`) with `O_NOFOLLOW`: a symlinked `blobs` or
/// `blobs/sha256` is refused (`ELOOP`), so nothing is read or written
/// outside the layout. Files (`oci-layout`, `index.json`, blobs) are opened
/// with `O_NONBLOCK` and must be regular files, so a planted fifo is
/// refused, not waited on. Documents are limited to [`MAX_DOCUMENT_BYTES`].
/// Tags are checked with [`check_tag`] before anything is written.
/// Garbage collection deletes only regular files in `blobs/sha256/` named
/// by a digest, and stale temporary files of ours; anything else in the
/// layout is left alone.
///
/// # Failures
///
/// A tag change either fails with `index.json` as it was, or the new one
/// is in place; [`Durability`] says whether the directory was synced after
/// the rename. Temporary files of runs that ended (killed, or failed
/// before they could remove them) are removed by the next tag change and
/// by garbage collection; [`OciLayout::resume`] finishes a layout whose
/// creation was cut short.
///
/// # The layer cache
///
/// Reading a whole layer to learn its uncompressed size costs as much as
/// reading the layer, so what a full read learnt is kept beside the blobs,
/// outside `blobs/` (the image and its digests never change): one small
/// JSON file per layer blob, `.layerstack/layers/<hex>.json` holding
/// `{"digest", "diff_id", "uncompressed_size"}` ([`LayerRecord`]). It is
/// written, best effort, after a layer was read through and its DiffID
/// checked, or after it was written by us, and read by
/// [`OciLayout::layer_record`], which hands out a record only when it is a
/// regular file within the layout, parses, names the blob asked for and
/// the DiffID the caller expects. The cache is a hint for display (the
/// sizes `inspect` shows): nothing that guards memory or disk relies on
/// it, so a forged size misstates a number and nothing else. A missing or
/// damaged record is the same as none; garbage collection removes the
/// records of the blobs it removes. Other tools ignore the directory.
///
/// # Limitations
///
/// - [`OciLayout::collect_garbage`] must not run while another writer adds
///   an image: a blob written but not yet tagged is unreferenced, and is
///   removed.
/// - Only sha256 blobs are stored; other `blobs/<algorithm>/` directories
///   are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayout {
    root: Utf8PathBuf,
}

/// What [`OciLayout::collect_garbage_with`] removed (or, in a dry run,
/// would remove).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcReport {
    /// The blobs removed, sorted.
    pub removed: Vec<Digest>,
    /// The stale temporary files removed, as paths in the layout
    /// (`blobs/sha256/.tmp-<pid>-<n>`), sorted.
    pub temporaries: Vec<String>,
    /// The blobs whose records in the layer cache were removed with them
    /// (see [the layer cache](OciLayout#the-layer-cache)), sorted.
    pub cache_records: Vec<Digest>,
    /// The bytes of the files removed (the blobs, stale temporary files
    /// and cache records).
    pub bytes_freed: u64,
}

/// What reading a layer blob through taught: kept in the layout's layer
/// cache (see [the module documentation](OciLayout#the-layer-cache)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerRecord {
    /// The layer blob's digest.
    pub digest: Digest,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
}

/// Whether [`OciLayout::collect_garbage_with`] removes what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GcMode {
    /// Remove unreferenced blobs and stale temporary files.
    #[default]
    Remove,
    /// Only report what [`GcMode::Remove`] would remove.
    DryRun,
}

/// How far a change of `index.json` that succeeded got.
///
/// The new `index.json` is in place either way: every later read sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// The rename that put it in place was synced to disk.
    Synced,
    /// Syncing the layout's directory after the rename failed (the error
    /// says how): after a crash or a power loss the old `index.json` may
    /// be back.
    Unconfirmed(Error),
}

impl OciLayout {
    /// Creates a layout in `dir` (and `dir` itself, if needed): `oci-layout`,
    /// an empty `index.json` and `blobs/sha256/`. If `dir` already is a
    /// layout, opens it; files already in `dir` are left as they are.
    ///
    /// # Errors
    /// Errors creating the directories and files; those of
    /// [`open`](OciLayout::open) for an existing layout.
    pub fn create(dir: impl AsRef<Utf8Path>) -> Result<OciLayout> {
        let root = dir.as_ref();
        let marker = root.join(LAYOUT_FILE);
        match fs::symlink_metadata(&marker) {
            Ok(_) => return OciLayout::open(root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::from_io(&e, Operation::CreateDir, root)),
        }
        fs::create_dir_all(root).map_err(|e| Error::from_io(&e, Operation::CreateDir, root))?;
        let layout = OciLayout {
            root: root.to_owned(),
        };
        let root_fd = layout.open_root()?;
        let blobs = layout.open_blobs_in(&root_fd, true)?;
        let made = (|| {
            // `oci-layout` comes last: it marks the layout complete.
            write_file_new(&blobs, &root_fd, INDEX_FILE, &Index::default().to_json())?;
            write_file_new(&blobs, &root_fd, LAYOUT_FILE, LAYOUT_JSON)
        })();
        made.map_err(|e| Error::from_io(&e, Operation::CreateDir, root))?;
        OciLayout::open(root)
    }

    /// Completes a layout that an interrupted [`create`](OciLayout::create)
    /// (or a run killed before it finished one) left in `dir`, or creates a
    /// new one in a missing or empty `dir`; opens `dir` if it is a layout.
    ///
    /// A directory without `oci-layout` is completed only if it holds
    /// nothing but what this module writes: `blobs/sha256/` with files
    /// named by a digest or temporary files of ours, and maybe
    /// `index.json`. Temporary files of runs that ended are removed; blobs
    /// stay (they are whole: a blob is renamed to its digest only once
    /// synced), unreferenced until [`collect_garbage`](OciLayout::collect_garbage).
    ///
    /// # Errors
    /// `ENOTEMPTY` if `dir` holds anything else (the message names the
    /// first such file); those of [`create`](OciLayout::create).
    pub fn resume(dir: impl AsRef<Utf8Path>) -> Result<OciLayout> {
        let root = dir.as_ref();
        let layout = OciLayout {
            root: root.to_owned(),
        };
        let root_fd = match layout.open_root() {
            Ok(fd) => fd,
            Err(e) if e.kind() == ErrorKind::NotFound => return OciLayout::create(root),
            Err(e) => return Err(e),
        };
        let names =
            list_dir(&root_fd).map_err(|e| errno_error(e, Operation::ReadDir, root.as_str()))?;
        if names.iter().any(|n| n == LAYOUT_FILE) {
            return OciLayout::open(root);
        }
        let foreign = |name: String| {
            Error::new(ErrorKind::DirectoryNotEmpty, Operation::CreateDir, root).with_detail(
                format!("`{name}` is not part of an unfinished image layout"),
            )
        };
        for name in names {
            let st = stat_nofollow(&root_fd, &name)
                .map_err(|e| errno_error(e, Operation::ReadDir, root.as_str()))?;
            let kind = FileType::from_mode(st.st_mode);
            let ours = match name.as_str() {
                "blobs" => kind == Some(FileType::Dir),
                INDEX_FILE => {
                    kind == Some(FileType::File)
                        && read_file(
                            &root_fd,
                            INDEX_FILE,
                            &layout.index_path(),
                            MAX_DOCUMENT_BYTES,
                        )
                        .and_then(|b| Index::parse_at(&b, INDEX_FILE))
                        .is_ok()
                }
                _ => false,
            };
            if !ours {
                return Err(foreign(name));
            }
        }
        if let Ok(blobs_top) = open_part(
            &root_fd,
            "blobs",
            OFlags::RDONLY | OFlags::DIRECTORY,
            &root.join("blobs"),
        ) {
            let names = list_dir(&blobs_top)
                .map_err(|e| errno_error(e, Operation::ReadDir, root.join("blobs").as_str()))?;
            if let Some(other) = names.into_iter().find(|n| n != "sha256") {
                return Err(foreign(format!("blobs/{other}")));
            }
            if let Ok(blobs) = layout.open_blobs_in(&root_fd, false) {
                let shown = layout.blobs_dir();
                for name in list_dir(&blobs)
                    .map_err(|e| errno_error(e, Operation::ReadDir, shown.as_str()))?
                {
                    let is_file = stat_nofollow(&blobs, &name)
                        .is_ok_and(|st| FileType::from_mode(st.st_mode) == Some(FileType::File));
                    if !is_file || (Digest::from_hex(&name).is_none() && !is_temp_name(&name)) {
                        return Err(foreign(format!("{BLOBS_DIR}/{name}")));
                    }
                }
                layout.remove_stale_temps(&blobs, GcMode::Remove, &mut GcReport::default());
            }
        }
        OciLayout::create(root)
    }

    /// Opens the layout in `dir`.
    ///
    /// # Errors
    /// `ENOENT` if `dir` has no `oci-layout` file; `EOPNOTSUPP` if its
    /// `imageLayoutVersion` is not 1.x; `EBADMSG` if it is not the JSON the
    /// spec says, or not a regular file; `ELOOP` if `oci-layout`, `blobs`
    /// or `blobs/sha256` is a symlink.
    pub fn open(dir: impl AsRef<Utf8Path>) -> Result<OciLayout> {
        let layout = OciLayout {
            root: dir.as_ref().to_owned(),
        };
        let root = &layout.root;
        let not_a_layout = || {
            Error::new(ErrorKind::NotFound, Operation::OpenImage, root)
                .with_detail("not an OCI image layout (no `oci-layout` file)")
        };
        let root_fd = match layout.open_root() {
            Ok(fd) => fd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_a_layout()),
            Err(e) => return Err(e),
        };
        let marker = root.join(LAYOUT_FILE);
        let bytes = match read_file(&root_fd, LAYOUT_FILE, &marker, MAX_DOCUMENT_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_a_layout()),
            Err(e) => return Err(e.reframe(Operation::OpenImage, &marker)),
        };
        check_layout_version(&bytes, marker.as_str())?;
        // A symlinked `blobs` is refused now, not only at the first write.
        match layout.open_blobs_in(&root_fd, false) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(layout)
    }

    /// The layout's directory, opened (the one path that is followed: the
    /// caller names it).
    fn open_root(&self) -> Result<OwnedFd> {
        let path = if self.root.as_str().is_empty() {
            "."
        } else {
            self.root.as_str()
        };
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno_error(e, Operation::Open, self.root.as_str()))
    }

    /// `blobs/sha256/`, opened beneath the root without following a
    /// symlink (made first if `create`).
    fn open_blobs_in(&self, root: &OwnedFd, create: bool) -> Result<Arc<OwnedFd>> {
        let top = self.root.join("blobs");
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
        if create {
            make_dir(root, "blobs")
                .map_err(|e| errno_error(e, Operation::CreateDir, top.as_str()))?;
        }
        let blobs = open_part(root, "blobs", dir_flags, &top)?;
        if create {
            make_dir(&blobs, "sha256")
                .map_err(|e| errno_error(e, Operation::CreateDir, self.blobs_dir().as_str()))?;
        }
        let sha = open_part(&blobs, "sha256", dir_flags, &self.blobs_dir())?;
        if create {
            rustix::fs::fsync(&blobs)
                .map_err(|e| errno_error(e, Operation::CreateDir, top.as_str()))?;
            rustix::fs::fsync(root)
                .map_err(|e| errno_error(e, Operation::CreateDir, self.root.as_str()))?;
        }
        Ok(Arc::new(sha))
    }

    fn open_blobs(&self, create: bool) -> Result<Arc<OwnedFd>> {
        self.open_blobs_in(&self.open_root()?, create)
    }

    /// The layout's directory.
    #[must_use]
    pub fn root(&self) -> &Utf8Path {
        &self.root
    }

    /// Where the blob `digest` is (or would be) stored.
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> Utf8PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub(crate) fn blobs_dir(&self) -> Utf8PathBuf {
        self.root.join(BLOBS_DIR)
    }

    fn index_path(&self) -> Utf8PathBuf {
        self.root.join(INDEX_FILE)
    }

    // ---- writing blobs ------------------------------------------------

    /// A writer for a new blob; [`BlobWriter::commit`] stores it under its
    /// digest.
    ///
    /// # Errors
    /// Errors creating the temporary file.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.open_blobs(true)?;
        let (file, temp) = TempPath::create(&dir)
            .map_err(|e| Error::from_io(&e, Operation::WriteBlob, self.blobs_dir()))?;
        Ok(BlobWriter {
            dir,
            temp,
            out: DigestWriter::new(BufWriter::new(file)),
        })
    }

    /// Stores `bytes` as a blob and returns its digest and size.
    ///
    /// # Errors
    /// Errors writing the blob.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let mut writer = self.blob_writer()?;
        writer
            .write_all(bytes)
            .map_err(|e| Error::from_io(&e, Operation::WriteBlob, self.blobs_dir()))?;
        writer.commit()
    }

    /// Stores what `reader` yields as the blob `expected`, if it is exactly
    /// `expected_size` bytes with that digest; reads at most one byte more
    /// than `expected_size`.
    ///
    /// # Errors
    /// `EBADMSG` when the size or the digest differ (the message names
    /// both); nothing is stored then. Errors reading or writing.
    pub fn put_blob_verified(
        &self,
        reader: impl Read,
        expected: &Digest,
        expected_size: u64,
    ) -> Result<()> {
        self.put_verified(reader, expected, expected_size)
            .map(|_| ())
    }

    fn put_verified(
        &self,
        reader: impl Read,
        expected: &Digest,
        expected_size: u64,
    ) -> Result<Committed> {
        let mut writer = self.blob_writer()?;
        io::copy(
            &mut reader.take(expected_size.saturating_add(1)),
            &mut writer,
        )
        .map_err(|e| Error::from_io(&e, Operation::WriteBlob, expected.to_string()))?;
        writer.finish(Some((expected, expected_size)))
    }

    /// Stores a document as JSON ([`Document::to_json`]) and returns its
    /// descriptor, of `media_type`.
    ///
    /// # Errors
    /// Errors writing the blob.
    pub fn put_json(&self, document: &impl Document, media_type: &str) -> Result<Descriptor> {
        let (digest, size) = self.put_blob(&document.to_json())?;
        Ok(Descriptor::new(media_type, digest, size))
    }

    // ---- reading blobs ------------------------------------------------

    /// Whether the blob `digest` is stored (as a regular file).
    ///
    /// # Errors
    /// I/O errors other than its absence.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        match self.stat_blob(digest) {
            Ok(st) => Ok(FileType::from_mode(st.st_mode) == Some(FileType::File)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `lstat` of the blob `digest`; `ENOENT` (from [`no_such_blob`]) if
    /// it or `blobs/sha256/` is missing.
    fn stat_blob(&self, digest: &Digest) -> Result<rustix::fs::Stat> {
        let blobs = match self.open_blobs(false) {
            Ok(blobs) => blobs,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.no_such_blob(digest)),
            Err(e) => return Err(e),
        };
        match stat_nofollow(&blobs, &digest.hex()) {
            Ok(st) => Ok(st),
            Err(Errno::NOENT) => Err(self.no_such_blob(digest)),
            Err(e) => Err(errno_error(e, Operation::ReadBlob, &digest.to_string())),
        }
    }

    /// The size of the stored blob `digest`.
    ///
    /// # Errors
    /// `ENOENT` if it is not stored; `EBADMSG` if it is not a regular file.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let st = self.stat_blob(digest)?;
        if FileType::from_mode(st.st_mode) == Some(FileType::File) {
            Ok(u64::try_from(st.st_size).unwrap_or(0))
        } else {
            Err(not_a_file(digest))
        }
    }

    /// Opens the blob `digest` for reading; the reader checks the digest as
    /// the bytes pass (see [`BlobReader`]).
    ///
    /// # Errors
    /// `ENOENT` if it is not stored; `EBADMSG` if it is not a regular file
    /// (a symlink is not followed) or its length is not `expected_size`.
    pub fn open_blob(&self, digest: &Digest, expected_size: Option<u64>) -> Result<BlobReader> {
        let blobs = match self.open_blobs(false) {
            Ok(blobs) => blobs,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.no_such_blob(digest)),
            Err(e) => return Err(e),
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&*blobs, digest.hex().as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Err(self.no_such_blob(digest)),
            Err(rustix::io::Errno::LOOP) => return Err(not_a_file(digest)),
            Err(e) => {
                return Err(Error::from_io(
                    &e.into(),
                    Operation::ReadBlob,
                    digest.to_string(),
                ));
            }
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| Error::from_io(&e, Operation::ReadBlob, digest.to_string()))?;
        if !meta.is_file() {
            return Err(not_a_file(digest));
        }
        if let Some(expected) = expected_size
            && expected != meta.len()
        {
            return Err(Error::new(
                ErrorKind::InvalidData,
                Operation::ReadBlob,
                digest.to_string(),
            )
            .with_detail(format!(
                "size mismatch: expected {expected} bytes, the blob has {}",
                meta.len()
            )));
        }
        Ok(BlobReader {
            file,
            hasher: Hasher::new(),
            digest: *digest,
            size: meta.len(),
            state: ReadState::Reading,
        })
    }

    /// Opens the layer blob `descriptor` points to, after checking that its
    /// media type is a layer type this crate reads (the OCI `tar`,
    /// `tar+gzip` and `tar+zstd` types, their `nondistributable`
    /// variants, and Docker's) and that its content is what the type
    /// says: gzip and zstd are known by their magic numbers, and a plain
    /// tar type must hold neither.
    ///
    /// Unknown layer media types are refused, as containerd does: the
    /// image spec lets a reader ignore unknown types only where it says so,
    /// and a layer that is skipped would leave a different tree. A
    /// descriptor that contradicts its content is refused rather than read
    /// by sniffing: its digest names the bytes, not how to read them.
    ///
    /// # Errors
    /// `EOPNOTSUPP` for a media type that is not a known layer type;
    /// `EBADMSG` when the content contradicts it; those of
    /// [`open_blob`](OciLayout::open_blob).
    pub fn open_layer(&self, descriptor: &Descriptor) -> Result<BlobReader> {
        let digest = &descriptor.digest;
        let Some(declared) = Compression::from_media_type(&descriptor.media_type) else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                Operation::ReadBlob,
                digest.to_string(),
            )
            .with_detail(format!(
                "media type `{}` is not a layer media type (tar, tar+gzip or tar+zstd)",
                descriptor.media_type
            )));
        };
        let mut prefix = Vec::with_capacity(4);
        Read::by_ref(&mut self.open_blob(digest, Some(descriptor.size))?.file)
            .take(4)
            .read_to_end(&mut prefix)
            .map_err(|e| Error::from_io(&e, Operation::ReadBlob, digest.to_string()))?;
        let found = Compression::detect(&prefix);
        if found != declared {
            let name = |c: Compression| match c {
                Compression::None => "an uncompressed tar",
                Compression::Gzip => "gzip",
                Compression::Zstd => "zstd",
            };
            return Err(Error::new(
                ErrorKind::InvalidData,
                Operation::ReadBlob,
                digest.to_string(),
            )
            .with_detail(format!(
                "media type `{}` says {}, but the blob is {}",
                descriptor.media_type,
                name(declared),
                name(found)
            )));
        }
        self.open_blob(digest, Some(descriptor.size))
    }

    /// Reads a whole blob of at most `max_bytes`, checked against `digest`
    /// (and `expected_size`) before it is returned.
    ///
    /// # Errors
    /// Those of [`open_blob`](OciLayout::open_blob); `EDQUOT` if the blob
    /// is larger than `max_bytes`; `EBADMSG` if its content does not match
    /// the digest.
    pub fn read_blob(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
        max_bytes: u64,
    ) -> Result<Vec<u8>> {
        let mut reader = self.open_blob(digest, expected_size)?;
        if reader.size > max_bytes {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                Operation::ReadBlob,
                digest.to_string(),
            )
            .with_detail(format!(
                "the blob is {} bytes, more than the limit of {max_bytes}",
                reader.size
            )));
        }
        let mut out = Vec::with_capacity(usize::try_from(reader.size).unwrap_or(0));
        reader
            .read_to_end(&mut out)
            .map_err(|e| error_from_read(&e, digest))?;
        Ok(out)
    }

    fn no_such_blob(&self, digest: &Digest) -> Error {
        Error::new(ErrorKind::NotFound, Operation::ReadBlob, digest.to_string())
            .with_detail(format!("no such blob in `{}`", self.root))
    }

    // ---- documents ----------------------------------------------------

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
    fn read_node(&self, desc: &Descriptor) -> Result<Node> {
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

    // ---- tags -----------------------------------------------------------

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
    fn add_untagged(&self, descriptor: Descriptor) -> Result<()> {
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
    fn update_index<T>(
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

    /// An exclusive `flock` on `oci-layout`, a file that is never replaced,
    /// released when the returned file is dropped.
    fn lock(&self, root: &OwnedFd) -> Result<File> {
        let path = self.root.join(LAYOUT_FILE);
        let file = open_regular(root, LAYOUT_FILE, &path)?;
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| Error::from_io(&e.into(), Operation::Write, &path))?;
        Ok(file)
    }

    // ---- garbage collection -------------------------------------------

    /// Removes the blobs nothing in `index.json` reaches, and temporary
    /// files of runs that ended; the same as
    /// [`collect_garbage_with(GcMode::Remove)`](OciLayout::collect_garbage_with).
    ///
    /// # Errors
    /// Those of [`collect_garbage_with`](OciLayout::collect_garbage_with).
    pub fn collect_garbage(&self) -> Result<GcReport> {
        self.collect_garbage_with(GcMode::Remove)
    }

    /// Finds (and with [`GcMode::Remove`] removes) the blobs nothing in
    /// `index.json` reaches, and temporary files of runs that ended: older
    /// than [`STALE_TEMP_AGE`], or named by a process that no longer runs.
    ///
    /// Reachable are the descriptors of `index.json`, and from an index its
    /// manifests, from a manifest its config and layers. A descriptor of an
    /// unknown media type keeps its blob, and is followed only if it holds
    /// a manifest or an index. A missing blob is skipped. Nothing is removed
    /// but regular files in `blobs/sha256/` named by a digest and temporary
    /// files of this module. It holds the layout's lock, so no tag changes
    /// meanwhile.
    ///
    /// # Errors
    /// When a manifest or index that is reachable cannot be read (corrupt or
    /// invalid), nothing is removed: what it references is unknown. I/O
    /// errors.
    pub fn collect_garbage_with(&self, mode: GcMode) -> Result<GcReport> {
        let root = self.open_root()?;
        let _lock = self.lock(&root)?;
        let mut live: HashSet<Digest> = HashSet::new();
        let mut pending = self.read_index()?.manifests;
        while let Some(desc) = pending.pop() {
            if !live.insert(desc.digest) {
                continue;
            }
            let is_document =
                media_type::is_manifest(&desc.media_type) || media_type::is_index(&desc.media_type);
            match self.read_node(&desc) {
                Ok(Node::Manifest(m)) => {
                    let Manifest { config, layers, .. } = *m;
                    pending.push(config);
                    pending.extend(layers);
                }
                Ok(Node::Index(i)) => pending.extend(i.manifests),
                Ok(Node::Other) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if is_document => return Err(e),
                Err(_) => {}
            }
        }

        let shown = self.blobs_dir();
        let blobs = match self.open_blobs_in(&root, false) {
            Ok(blobs) => blobs,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(GcReport::default()),
            Err(e) => return Err(e),
        };
        let fail = |e: Errno| errno_error(e, Operation::CollectGarbage, shown.as_str());
        let mut report = GcReport::default();
        for name in list_dir(&blobs).map_err(fail)? {
            let Some(digest) = Digest::from_hex(&name) else {
                continue;
            };
            if live.contains(&digest) {
                continue;
            }
            let st = match stat_nofollow(&blobs, &name) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(fail(e)),
            };
            if FileType::from_mode(st.st_mode) != Some(FileType::File) {
                continue;
            }
            if mode == GcMode::Remove {
                match rustix::fs::unlinkat(&*blobs, name.as_str(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(fail(e)),
                }
            }
            report.bytes_freed += u64::try_from(st.st_size).unwrap_or(0);
            report.removed.push(digest);
        }
        self.remove_stale_temps(&blobs, mode, &mut report);
        self.remove_cache_records(&root, &live, mode, &mut report);
        report.removed.sort();
        report.temporaries.sort();
        report.cache_records.sort();
        if mode == GcMode::Remove {
            rustix::fs::fsync(&*blobs).map_err(fail)?;
        }
        Ok(report)
    }

    /// Removes (or, in a dry run, lists) the temporary files in `blobs`
    /// that runs which ended left, adding them to `report`. Best effort:
    /// a file that cannot be removed stays for the next run.
    fn remove_stale_temps(&self, blobs: &OwnedFd, mode: GcMode, report: &mut GcReport) {
        let Ok(names) = list_dir(blobs) else {
            return;
        };
        let now = SystemTime::now();
        for name in names.into_iter().filter(|n| is_temp_name(n)) {
            let Ok(st) = stat_nofollow(blobs, &name) else {
                continue;
            };
            if FileType::from_mode(st.st_mode) != Some(FileType::File) {
                continue;
            }
            let mtime = u64::try_from(st.st_mtime)
                .ok()
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            if !is_stale_temp(&name, mtime, now) {
                continue;
            }
            if mode == GcMode::Remove
                && rustix::fs::unlinkat(blobs, name.as_str(), AtFlags::empty()).is_err()
            {
                continue;
            }
            report.bytes_freed += u64::try_from(st.st_size).unwrap_or(0);
            report.temporaries.push(format!("{BLOBS_DIR}/{name}"));
        }
    }

    /// Removes (or, in a dry run, lists) the layer cache's records of blobs
    /// that are not `live`, and its stale temporary files. Best effort, as
    /// for temporary files: the cache is never worth failing over.
    fn remove_cache_records(
        &self,
        root: &OwnedFd,
        live: &HashSet<Digest>,
        mode: GcMode,
        report: &mut GcReport,
    ) {
        let Ok(dir) = self.open_cache(root, false) else {
            return;
        };
        let Ok(names) = list_dir(&dir) else {
            return;
        };
        let now = SystemTime::now();
        for name in names {
            let digest = name.strip_suffix(CACHE_SUFFIX).and_then(Digest::from_hex);
            let Ok(st) = stat_nofollow(&dir, &name) else {
                continue;
            };
            if FileType::from_mode(st.st_mode) != Some(FileType::File) {
                continue;
            }
            let stale_temp = is_temp_name(&name) && {
                let mtime = u64::try_from(st.st_mtime)
                    .ok()
                    .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
                is_stale_temp(&name, mtime, now)
            };
            let dead = digest.is_some_and(|d| !live.contains(&d));
            if !(dead || stale_temp) {
                continue;
            }
            if mode == GcMode::Remove
                && rustix::fs::unlinkat(&*dir, name.as_str(), AtFlags::empty()).is_err()
            {
                continue;
            }
            report.bytes_freed += u64::try_from(st.st_size).unwrap_or(0);
            match digest {
                Some(d) => report.cache_records.push(d),
                None => report
                    .temporaries
                    .push(format!("{CACHE_DIR}/{CACHE_LAYERS}/{name}")),
            }
        }
    }

    // ---- the layer cache ----------------------------------------------

    /// `.layerstack/layers/`, opened beneath the root without following a
    /// symlink (made first if `create`).
    fn open_cache(&self, root: &OwnedFd, create: bool) -> Result<Arc<OwnedFd>> {
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
    /// cache](OciLayout#the-layer-cache): a hint, never a proof).
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
    /// blob established (its digest and DiffID checked). Not synced: a
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

    /// Removes the blob `digest` if it is a regular file (an unreferenced
    /// blob an import stored on the way).
    fn remove_blob(&self, digest: &Digest) {
        if let Ok(blobs) = self.open_blobs(false) {
            let _ = rustix::fs::unlinkat(&*blobs, digest.hex().as_str(), AtFlags::empty());
        }
    }

    // ---- docker save archives -------------------------------------------

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
        let limits = Limits::new().with_max_bytes(u64::MAX);
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
                links.push((name, target.clone()));
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

/// A blob being written; [`commit`](BlobWriter::commit) stores it,
/// dropping it without a commit removes the temporary file.
#[derive(Debug)]
#[must_use = "a blob writer stores nothing until it is committed"]
pub struct BlobWriter {
    dir: Arc<OwnedFd>,
    temp: TempPath,
    out: DigestWriter<BufWriter<File>>,
}

/// A blob stored by [`BlobWriter::finish`].
struct Committed {
    digest: Digest,
    size: u64,
    /// Whether this call stored it (it was not there before).
    created: bool,
}

impl BlobWriter {
    /// How many bytes were written so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.out.len()
    }

    /// Whether nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Syncs the blob and moves it to its digest's name; if that blob is
    /// already stored (with the same size), keeps the stored one. Returns
    /// the digest and the size.
    ///
    /// # Errors
    /// Errors flushing, syncing or renaming.
    pub fn commit(self) -> Result<(Digest, u64)> {
        self.finish(None).map(|c| (c.digest, c.size))
    }

    fn finish(self, expected: Option<(&Digest, u64)>) -> Result<Committed> {
        let BlobWriter { dir, temp, out } = self;
        let (buffered, digest, size) = out.finish();
        let named = expected.map_or(digest, |(d, _)| *d).to_string();
        let fail = |e: &io::Error| Error::from_io(e, Operation::WriteBlob, &named);
        let file = buffered.into_inner().map_err(|e| fail(e.error()))?;
        if let Some((want, want_size)) = expected {
            let mismatch = if size > want_size {
                Some(format!(
                    "size mismatch: expected {want_size} bytes, got more"
                ))
            } else if size < want_size {
                Some(format!(
                    "size mismatch: expected {want_size} bytes, got {size}"
                ))
            } else if digest != *want {
                Some(format!("digest mismatch: the content is {digest}"))
            } else {
                None
            };
            if let Some(detail) = mismatch {
                return Err(
                    Error::new(ErrorKind::InvalidData, Operation::WriteBlob, &named)
                        .with_detail(detail),
                );
            }
        }
        file.sync_all().map_err(|e| fail(&e))?;
        drop(file);
        let dest = digest.hex();
        if let Ok(st) = stat_nofollow(&dir, &dest)
            && FileType::from_mode(st.st_mode) == Some(FileType::File)
            && u64::try_from(st.st_size) == Ok(size)
        {
            // Stored already; the temporary file goes when `temp` drops.
            return Ok(Committed {
                digest,
                size,
                created: false,
            });
        }
        temp.persist(&dir, &dest).map_err(|e| fail(&e))?;
        rustix::fs::fsync(&*dir).map_err(|e| fail(&e.into()))?;
        Ok(Committed {
            digest,
            size,
            created: true,
        })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A stored blob being read, checked against its digest.
///
/// It reads exactly the blob's size (checked against the descriptor when
/// opened). When the last byte is read, before the read that returns it
/// succeeds, the bytes are hashed against the digest; a mismatch, or a
/// file that ends early, is an [`io::ErrorKind::InvalidData`] error whose
/// inner error is the crate's [`Error`] (`EBADMSG`, naming both digests).
/// A caller that stops before the end has read bytes not yet checked.
#[derive(Debug)]
pub struct BlobReader {
    file: File,
    hasher: Hasher,
    digest: Digest,
    size: u64,
    state: ReadState,
}

#[derive(Debug)]
enum ReadState {
    Reading,
    Verified,
    Failed(Error),
}

impl BlobReader {
    /// The digest the blob is checked against.
    #[must_use]
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    fn fail(&mut self, detail: String) -> io::Error {
        let err = Error::new(
            ErrorKind::InvalidData,
            Operation::ReadBlob,
            self.digest.to_string(),
        )
        .with_detail(detail);
        self.state = ReadState::Failed(err.clone());
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            ReadState::Reading => {}
            ReadState::Verified => return Ok(0),
            ReadState::Failed(err) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, err.clone()));
            }
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let remaining = self.size - self.hasher.len();
        let mut n = 0;
        if remaining > 0 {
            let cap = buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            n = self.file.read(&mut buf[..cap])?;
            if n == 0 {
                let detail = format!(
                    "the blob ended after {} of its {} bytes",
                    self.hasher.len(),
                    self.size
                );
                return Err(self.fail(detail));
            }
            self.hasher.update(&buf[..n]);
        }
        if self.hasher.len() == self.size {
            let actual = std::mem::take(&mut self.hasher).finish();
            if actual != self.digest {
                return Err(self.fail(format!("digest mismatch: the content is {actual}")));
            }
            self.state = ReadState::Verified;
        }
        Ok(n)
    }
}

/// A temporary file in `blobs/sha256/`, removed on drop unless persisted.
#[derive(Debug)]
struct TempPath {
    dir: Arc<OwnedFd>,
    name: String,
    armed: bool,
}

impl TempPath {
    /// Creates `.tmp-<pid>-<n>` in the directory `dir`.
    fn create(dir: &Arc<OwnedFd>) -> io::Result<(File, TempPath)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("{TEMP_PREFIX}{pid}-{n}");
            // O_EXCL: never an existing file, never through a symlink.
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            match rustix::fs::openat(&**dir, name.as_str(), flags, Mode::from_raw_mode(0o666)) {
                Ok(fd) => {
                    let temp = TempPath {
                        dir: Arc::clone(dir),
                        name,
                        armed: true,
                    };
                    return Ok((File::from(fd), temp));
                }
                // Left by an earlier process with our pid.
                Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Renames the file to `name` in `dir`, replacing what is there.
    fn persist(mut self, dir: &OwnedFd, name: &str) -> io::Result<()> {
        rustix::fs::renameat(&*self.dir, self.name.as_str(), dir, name)?;
        self.armed = false;
        Ok(())
    }

    /// Renames the file to `name` in `dir` unless something is there
    /// already.
    fn persist_new(mut self, dir: &OwnedFd, name: &str) -> io::Result<()> {
        match rustix::fs::renameat_with(
            &*self.dir,
            self.name.as_str(),
            dir,
            name,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                self.armed = false;
                Ok(())
            }
            Err(Errno::EXIST) => Ok(()),
            // A filesystem without RENAME_NOREPLACE: check, then rename.
            Err(Errno::INVAL) => match stat_nofollow(dir, name) {
                Ok(_) => Ok(()),
                Err(_) => self.persist(dir, name),
            },
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            let _ = rustix::fs::unlinkat(&*self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// Whether `name` is one of [`TempPath`]'s: `.tmp-<digits>-<digits>`.
fn is_temp_name(name: &str) -> bool {
    temp_pid(name).is_some()
}

/// The process id in the name of one of [`TempPath`]'s files.
fn temp_pid(name: &str) -> Option<u32> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (pid, n) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    if digits(pid) && digits(n) {
        pid.parse().ok()
    } else {
        None
    }
}

/// Whether the temporary file `name`, last modified at `mtime`, is left
/// over from a run that ended: it is older than [`STALE_TEMP_AGE`], or the
/// process its name records is gone (and it is not our own).
fn is_stale_temp(name: &str, mtime: Option<SystemTime>, now: SystemTime) -> bool {
    let Some(pid) = temp_pid(name) else {
        return false;
    };
    let old = mtime
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age >= STALE_TEMP_AGE);
    let gone = pid != std::process::id()
        && rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0))
            .is_none_or(|pid| rustix::process::test_kill_process(pid) == Err(Errno::SRCH));
    old || gone
}

/// The names in the directory `dir` (without `.` and `..`); names that
/// are not UTF-8 are given lossily (they are never ours).
fn list_dir(dir: &OwnedFd) -> rustix::io::Result<Vec<String>> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let raw = entry.file_name().to_bytes();
        if raw != b"." && raw != b".." {
            names.push(String::from_utf8_lossy(raw).into_owned());
        }
    }
    Ok(names)
}

/// `lstat` of `name` in `dir`.
fn stat_nofollow(dir: &OwnedFd, name: &str) -> rustix::io::Result<rustix::fs::Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// Opens the part `name` of a layout (a single name) in `dir` without
/// following a symlink; `shown` is its path for errors. A symlink is
/// refused with an error that says so.
fn open_part(dir: &OwnedFd, name: &str, flags: OFlags, shown: &Utf8Path) -> Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| {
        let is_symlink = stat_nofollow(dir, name)
            .is_ok_and(|st| FileType::from_mode(st.st_mode) == Some(FileType::Symlink));
        if is_symlink {
            Error::new(ErrorKind::FilesystemLoop, Operation::Open, shown)
                .with_detail("it is a symlink, and no part of an image layout is followed")
        } else {
            errno_error(e, Operation::Open, shown.as_str())
        }
    })
}

/// Opens the file `name` of a layout for reading: only a regular file is
/// ever read (`O_NONBLOCK`, so a fifo does not block the open, and a type
/// check on the descriptor).
fn open_regular(dir: &OwnedFd, name: &str, shown: &Utf8Path) -> Result<File> {
    let fd = open_part(dir, name, OFlags::RDONLY | OFlags::NONBLOCK, shown)?;
    let st = rustix::fs::fstat(&fd).map_err(|e| errno_error(e, Operation::Open, shown.as_str()))?;
    match FileType::from_mode(st.st_mode) {
        Some(FileType::File) => Ok(File::from(fd)),
        other => Err(
            Error::new(ErrorKind::InvalidData, Operation::Open, shown).with_detail(format!(
                "it is {}, not a regular file",
                other.map_or("of an unknown type", file_type_name)
            )),
        ),
    }
}

fn file_type_name(t: FileType) -> &'static str {
    match t {
        FileType::File => "a regular file",
        FileType::Dir => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a fifo",
        FileType::Socket => "a socket",
        FileType::CharDevice => "a character device",
        FileType::BlockDevice => "a block device",
    }
}

/// Makes the directory `name` in `dir` unless it is there.
fn make_dir(dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `name` in `dir` through a temporary file in `temp_dir`, synced
/// and renamed; an existing file is kept.
fn write_file_new(
    temp_dir: &Arc<OwnedFd>,
    dir: &OwnedFd,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let (mut file, temp) = TempPath::create(temp_dir)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    temp.persist_new(dir, name)?;
    rustix::fs::fsync(dir)?;
    Ok(())
}

/// Reads a file of the layout of at most `limit` bytes.
fn read_file(dir: &OwnedFd, name: &str, shown: &Utf8Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_regular(dir, name, shown)?;
    let fail = |e: &io::Error| Error::from_io(e, Operation::ReadBlob, shown);
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() as u64 > limit {
        return Err(
            Error::new(ErrorKind::LimitExceeded, Operation::ReadBlob, shown)
                .with_detail(format!("the file is more than {limit} bytes")),
        );
    }
    Ok(bytes)
}

/// Checks an `oci-layout` file: `imageLayoutVersion` 1.x.
fn check_layout_version(bytes: &[u8], origin: &str) -> Result<()> {
    let map = spec::parse_object(bytes, origin)?;
    let version = map
        .get("imageLayoutVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::new(ErrorKind::InvalidData, Operation::OpenImage, origin)
                .with_detail("`imageLayoutVersion` must be a string")
        })?;
    if version.split('.').next() != Some("1") {
        return Err(
            Error::new(ErrorKind::Unsupported, Operation::OpenImage, origin).with_detail(format!(
                "image layout version `{version}` is not supported (only 1.x)"
            )),
        );
    }
    Ok(())
}

/// Turns a read error of a [`BlobReader`] back into the crate's error.
fn error_from_read(e: &io::Error, digest: &Digest) -> Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .cloned()
        .unwrap_or_else(|| Error::from_io(e, Operation::ReadBlob, digest.to_string()))
}

fn not_a_file(digest: &Digest) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        Operation::ReadBlob,
        digest.to_string(),
    )
    .with_detail("the blob is not a regular file")
}

/// What a descriptor points to.
enum Node {
    Manifest(Box<Manifest>),
    Index(Index),
    /// A config, a layer, or something unknown.
    Other,
}

/// The tags of an index, sorted; a tag held by two descriptors is an
/// error (which one it names is unknown).
fn tags_of(index: Index, index_path: &Utf8Path) -> Result<Vec<(String, Descriptor)>> {
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
    let shown = tag.escape_debug().to_string();
    let bad = |why: String| {
        Err(
            Error::new(ErrorKind::InvalidInput, Operation::Write, &shown)
                .with_detail(format!("invalid tag: {why} ({ALLOWED})")),
        )
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
fn select_manifest<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
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
fn is_attestation(d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

fn no_manifest_for(desc: &Descriptor, index: &Index, want: &Platform) -> Error {
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

// ---- docker save ------------------------------------------------------

/// The path named in errors about the archive as a whole.
const ARCHIVE: &str = "<archive>";

/// A regular file of a `docker save` archive, once read.
enum ArchiveFile {
    /// A JSON file (or another small one), in memory.
    Document(Vec<u8>),
    /// Anything else, stored as a blob on the way.
    Blob(Digest, u64),
}

/// The files an import keeps in memory: JSON files, and the small files
/// of the legacy format's layer directories.
fn is_document_name(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.ends_with(".json") || matches!(file, "json" | "VERSION" | LAYOUT_FILE | "repositories")
}

/// An archive entry's name, normalised (`./a//b` is `a/b`); absolute names
/// and names with `..` are refused.
fn archive_name(raw: &[u8]) -> Result<String> {
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
struct EntryData<'t, R: Read>(&'t mut TarReader<R>);

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf).map_err(io::Error::from)
    }
}

/// What a symlink of the archive leads to: a regular file of the archive,
/// the target read relative to the link's directory and never outside the
/// archive; links to links are followed a few times.
fn resolve_archive_link(
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
fn index_lists_nothing(files: &BTreeMap<String, ArchiveFile>) -> bool {
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

fn archive_document<'a>(files: &'a BTreeMap<String, ArchiveFile>, name: &str) -> Result<&'a [u8]> {
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
fn import_oci_layout(layout: &OciLayout, files: &BTreeMap<String, ArchiveFile>) -> Result<()> {
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
fn import_legacy(
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

fn missing_file(name: &str) -> Error {
    Error::new(ErrorKind::NotFound, Operation::OpenImage, name)
        .with_detail("`manifest.json` names this file, but the archive does not hold it")
}

/// The tag of an image name: after the last `:`, unless that `:` is a
/// registry's port (`localhost:5000/app` has no tag, so it is `latest`).
fn tag_of(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() && !tag.contains('/') => tag,
        // A repository without a tag means its `latest`, as in Docker.
        _ => "latest",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system's temp dir, removed on drop.
    struct Scratch(Utf8PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let base = Utf8PathBuf::from_path_buf(std::env::temp_dir()).expect("UTF-8 temp dir");
            let dir = base.join(format!(
                "layerstack-layout-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn blob_files(layout: &OciLayout) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(layout.blobs_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn sorted_hex(digests: &[Digest]) -> Vec<String> {
        let mut hex: Vec<String> = digests.iter().map(Digest::hex).collect();
        hex.sort();
        hex.dedup();
        hex
    }

    struct Image {
        manifest: Descriptor,
        config: Descriptor,
        layers: Vec<Descriptor>,
    }

    impl Image {
        fn blobs(&self) -> Vec<Digest> {
            let mut all = vec![self.manifest.digest, self.config.digest];
            all.extend(self.layers.iter().map(|l| l.digest));
            all
        }
    }

    fn put_image(layout: &OciLayout, arch: &str, layers: &[&[u8]]) -> Image {
        let layers: Vec<Descriptor> = layers
            .iter()
            .map(|bytes| {
                let (d, s) = layout.put_blob(bytes).unwrap();
                Descriptor::new(Compression::None.layer_media_type(), d, s)
            })
            .collect();
        let mut config = ImageConfig::new("linux", arch);
        config.diff_ids = layers.iter().map(|l| l.digest).collect();
        let config = layout.put_json(&config, media_type::OCI_CONFIG).unwrap();
        let manifest = layout
            .put_json(
                &Manifest::new(config.clone(), layers.clone()),
                media_type::OCI_MANIFEST,
            )
            .unwrap();
        Image {
            manifest,
            config,
            layers,
        }
    }

    /// A fifo at `path` (where nothing is).
    fn make_fifo(path: &Utf8Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path.as_str(),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> (ErrorKind, String) {
        let e = r.unwrap_err();
        (e.kind(), e.to_string())
    }

    #[test]
    fn create_writes_the_layout_and_open_checks_it() {
        let dir = Scratch::new("create");
        let layout = OciLayout::create(&dir.0).unwrap();
        assert_eq!(
            fs::read_to_string(dir.0.join("oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        assert_eq!(
            fs::read(dir.0.join("index.json")).unwrap(),
            Index::default().to_json()
        );
        assert!(blob_files(&layout).is_empty());
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 3);

        // Creating again opens, keeping the tags.
        let image = put_image(&layout, "amd64", &[b"l"]);
        layout.set_tag("v1", image.manifest.clone()).unwrap();
        let again = OciLayout::create(&dir.0).unwrap();
        assert_eq!(again.tags().unwrap().len(), 1);

        let empty = Scratch::new("not-a-layout");
        fs::create_dir_all(&empty.0).unwrap();
        assert_eq!(
            err_of(OciLayout::open(&empty.0)),
            (
                ErrorKind::NotFound,
                format!(
                    "failed to open image `{}`: not an OCI image layout (no `oci-layout` file)",
                    empty.0
                )
            )
        );
        fs::write(
            empty.0.join("oci-layout"),
            r#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        assert_eq!(
            err_of(OciLayout::open(&empty.0)),
            (
                ErrorKind::Unsupported,
                format!(
                    "failed to open image `{}/oci-layout`: image layout version `2.0.0` is not supported (only 1.x)",
                    empty.0
                )
            )
        );
        fs::write(empty.0.join("oci-layout"), r#"{"imageLayoutVersion":1}"#).unwrap();
        assert_eq!(err_of(OciLayout::open(&empty.0)).0, ErrorKind::InvalidData);
    }

    #[test]
    fn writes_are_atomic_and_leave_no_temp_file() {
        let dir = Scratch::new("atomic");
        let layout = OciLayout::create(&dir.0).unwrap();
        let (digest, size) = layout.put_blob(b"hello").unwrap();
        assert_eq!((digest, size), (Digest::of(b"hello"), 5));
        assert_eq!(blob_files(&layout), vec![digest.hex()]);
        assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), b"hello");

        // A writer dropped without a commit leaves nothing.
        let mut writer = layout.blob_writer().unwrap();
        writer.write_all(b"half a blob").unwrap();
        assert_eq!(blob_files(&layout).len(), 2);
        drop(writer);
        assert_eq!(blob_files(&layout), vec![digest.hex()]);

        // Streaming through a writer gives the digest of all it was given.
        let mut writer = layout.blob_writer().unwrap();
        writer.write_all(b"hel").unwrap();
        writer.write_all(b"lo, world").unwrap();
        assert_eq!(writer.len(), 12);
        let (d2, s2) = writer.commit().unwrap();
        assert_eq!((d2, s2), (Digest::of(b"hello, world"), 12));
        assert_eq!(blob_files(&layout), sorted_hex(&[digest, d2]));
    }

    #[test]
    fn the_same_blob_is_stored_once() {
        let dir = Scratch::new("dedup");
        let layout = OciLayout::create(&dir.0).unwrap();
        let first = layout.put_blob(b"same").unwrap();
        let inode =
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(layout.blob_path(&first.0)).unwrap());
        let second = layout.put_blob(b"same").unwrap();
        assert_eq!(first, second);
        assert_eq!(blob_files(&layout), vec![first.0.hex()]);
        // The stored file was kept, not replaced.
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(layout.blob_path(&first.0)).unwrap()),
            inode
        );
        // A truncated copy on disk is replaced by the whole blob.
        fs::write(layout.blob_path(&first.0), b"sa").unwrap();
        layout.put_blob(b"same").unwrap();
        assert_eq!(fs::read(layout.blob_path(&first.0)).unwrap(), b"same");
    }

    #[test]
    fn a_corrupted_blob_fails_on_read() {
        let dir = Scratch::new("corrupt");
        let layout = OciLayout::create(&dir.0).unwrap();
        let data = b"some layer bytes".repeat(1000);
        let (digest, size) = layout.put_blob(&data).unwrap();
        assert_eq!(
            layout.read_blob(&digest, Some(size), u64::MAX).unwrap(),
            data
        );

        let mut on_disk = fs::read(layout.blob_path(&digest)).unwrap();
        on_disk[7000] ^= 0x01;
        fs::write(layout.blob_path(&digest), &on_disk).unwrap();
        let actual = Digest::of(&on_disk);
        let expected_message =
            format!("failed to read blob `{digest}`: digest mismatch: the content is {actual}");
        assert_eq!(
            err_of(layout.read_blob(&digest, Some(size), u64::MAX)),
            (ErrorKind::InvalidData, expected_message.clone())
        );

        // Streaming: the error comes before the last bytes are handed out.
        let mut reader = layout.open_blob(&digest, Some(size)).unwrap();
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), expected_message);
        assert!(out.len() < data.len());
        // It stays failed.
        assert_eq!(
            reader.read(&mut [0; 8]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );

        // read_exact of the whole size checks too.
        let mut reader = layout.open_blob(&digest, None).unwrap();
        let mut all = vec![0; data.len()];
        assert_eq!(
            reader.read_exact(&mut all).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_blob_of_the_wrong_size_fails() {
        let dir = Scratch::new("size");
        let layout = OciLayout::create(&dir.0).unwrap();
        let (digest, _) = layout.put_blob(b"0123456789").unwrap();
        assert_eq!(
            err_of(layout.open_blob(&digest, Some(11))),
            (
                ErrorKind::InvalidData,
                format!(
                    "failed to read blob `{digest}`: size mismatch: expected 11 bytes, the blob has 10"
                )
            )
        );
        // A longer file on disk than the descriptor says.
        fs::write(layout.blob_path(&digest), b"0123456789!").unwrap();
        assert_eq!(
            err_of(layout.read_blob(&digest, Some(10), 100)).1,
            format!(
                "failed to read blob `{digest}`: size mismatch: expected 10 bytes, the blob has 11"
            )
        );
        // Over the caller's limit.
        assert_eq!(
            err_of(layout.read_blob(&digest, None, 5)),
            (
                ErrorKind::LimitExceeded,
                format!(
                    "failed to read blob `{digest}`: the blob is 11 bytes, more than the limit of 5"
                )
            )
        );
        assert_eq!(layout.blob_size(&digest).unwrap(), 11);
        // A file that shrinks after it was opened.
        let mut reader = layout.open_blob(&digest, Some(11)).unwrap();
        fs::write(layout.blob_path(&digest), b"0123").unwrap();
        assert_eq!(
            error_from_read(&reader.read_to_end(&mut Vec::new()).unwrap_err(), &digest).to_string(),
            format!("failed to read blob `{digest}`: the blob ended after 4 of its 11 bytes")
        );
        let absent = Digest::of(b"absent");
        assert!(!layout.has_blob(&absent).unwrap());
        assert_eq!(
            err_of(layout.open_blob(&absent, None)),
            (
                ErrorKind::NotFound,
                format!(
                    "failed to read blob `{absent}`: no such blob in `{}`",
                    dir.0
                )
            )
        );
    }

    #[test]
    fn a_symlinked_blob_is_not_followed() {
        let dir = Scratch::new("symlink");
        let layout = OciLayout::create(&dir.0).unwrap();
        fs::write(dir.0.join("outside"), b"secret").unwrap();
        let digest = Digest::of(b"secret");
        std::os::unix::fs::symlink(dir.0.join("outside"), layout.blob_path(&digest)).unwrap();
        assert_eq!(
            err_of(layout.open_blob(&digest, None)),
            (
                ErrorKind::InvalidData,
                format!("failed to read blob `{digest}`: the blob is not a regular file")
            )
        );
        assert!(!layout.has_blob(&digest).unwrap());
    }

    #[test]
    fn put_blob_verified_refuses_the_wrong_content() {
        let dir = Scratch::new("verified");
        let layout = OciLayout::create(&dir.0).unwrap();
        let want = Digest::of(b"expected");
        let got = Digest::of(b"EXPECTED");
        assert_eq!(
            err_of(layout.put_blob_verified(&b"EXPECTED"[..], &want, 8)),
            (
                ErrorKind::InvalidData,
                format!("failed to write blob `{want}`: digest mismatch: the content is {got}")
            )
        );
        assert_eq!(
            err_of(layout.put_blob_verified(&b"expected!"[..], &want, 8)).1,
            format!("failed to write blob `{want}`: size mismatch: expected 8 bytes, got more")
        );
        assert_eq!(
            err_of(layout.put_blob_verified(&b"expect"[..], &want, 8)).1,
            format!("failed to write blob `{want}`: size mismatch: expected 8 bytes, got 6")
        );
        assert!(blob_files(&layout).is_empty());
        layout
            .put_blob_verified(&b"expected"[..], &want, 8)
            .unwrap();
        assert_eq!(blob_files(&layout), vec![want.hex()]);
    }

    #[test]
    fn a_digest_with_dot_dot_never_becomes_a_path() {
        let dir = Scratch::new("dotdot");
        let layout = OciLayout::create(&dir.0).unwrap();
        assert_eq!(
            Digest::parse("sha256:../../../etc/passwd")
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        // An index.json naming one is refused as a whole.
        fs::write(
            dir.0.join("index.json"),
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../../etc/passwd","size":1}]}"#,
        )
        .unwrap();
        assert_eq!(
            err_of(layout.resolve(None)),
            (
                ErrorKind::InvalidData,
                format!(
                    r#"failed to read blob `{}/index.json`: `manifests[0].digest` is not a sha256 digest: "sha256:../../../../etc/passwd""#,
                    dir.0
                )
            )
        );
    }

    #[test]
    fn tags_round_trip_and_keep_other_entries() {
        let dir = Scratch::new("tags");
        let layout = OciLayout::create(&dir.0).unwrap();
        let a = put_image(&layout, "amd64", &[b"a"]);
        let b = put_image(&layout, "amd64", &[b"b"]);
        let (odd, odd_size) = layout.put_blob(b"something else").unwrap();
        // An untagged entry of an unknown media type, and an unknown field.
        let mut index = layout.read_index().unwrap();
        let mut unknown = Descriptor::new("application/vnd.example.thing", odd, odd_size);
        unknown
            .extra
            .insert("artifactType".into(), Value::from("x"));
        index.manifests.push(unknown.clone());
        index.extra.insert("future".into(), Value::from(1));
        fs::write(dir.0.join("index.json"), index.to_json()).unwrap();

        layout.set_tag("v2", b.manifest.clone()).unwrap();
        layout.set_tag("v1", a.manifest.clone()).unwrap();
        let tagged = |d: &Descriptor, tag: &str| {
            let mut d = d.clone();
            d.annotations.insert(ANNOTATION_REF_NAME.into(), tag.into());
            d
        };
        assert_eq!(
            layout.tags().unwrap(),
            vec![
                ("v1".to_owned(), tagged(&a.manifest, "v1")),
                ("v2".to_owned(), tagged(&b.manifest, "v2")),
            ]
        );
        // Moving a tag replaces its descriptor in place.
        layout.set_tag("v2", a.manifest.clone()).unwrap();
        let index = layout.read_index().unwrap();
        assert_eq!(
            index.manifests,
            vec![
                unknown.clone(),
                tagged(&a.manifest, "v2"),
                tagged(&a.manifest, "v1")
            ]
        );
        assert_eq!(index.extra.get("future"), Some(&Value::from(1)));

        assert_eq!(layout.remove_tag("v2").unwrap(), tagged(&a.manifest, "v2"));
        assert_eq!(
            layout.read_index().unwrap().manifests,
            vec![unknown, tagged(&a.manifest, "v1")]
        );
        assert_eq!(
            err_of(layout.remove_tag("v2")),
            (
                ErrorKind::NotFound,
                format!("failed to write `{}/index.json`: no tag `v2`", dir.0)
            )
        );
        // No temporary file is left behind by the index rewrites.
        assert!(
            blob_files(&layout)
                .iter()
                .all(|n| !n.starts_with(TEMP_PREFIX))
        );
    }

    #[test]
    fn invalid_tags_and_missing_blobs_are_refused() {
        let dir = Scratch::new("bad-tags");
        let layout = OciLayout::create(&dir.0).unwrap();
        let image = put_image(&layout, "amd64", &[b"x"]);
        let long = "a".repeat(129);
        for (tag, shown, why) in [
            ("", "", "it is empty"),
            ("/abs", "/abs", "`/` is not allowed"),
            ("a/b", "a/b", "`/` is not allowed"),
            ("x:y", "x:y", "`:` is not allowed"),
            ("../../escape", "../../escape", "it starts with `.`"),
            ("-x", "-x", "it starts with `-`"),
            ("a\nb", "a\\nb", "`\\n` is not allowed"),
            ("a b", "a b", "` ` is not allowed"),
            ("caf\u{e9}", "caf\u{e9}", "`\u{e9}` is not allowed"),
            (long.as_str(), long.as_str(), "it is 129 characters long"),
        ] {
            assert_eq!(
                err_of(layout.set_tag(tag, image.manifest.clone())),
                (
                    ErrorKind::InvalidInput,
                    format!(
                        "failed to write `{shown}`: invalid tag: {why} (a tag is 1 to 128 of \
                         A-Z a-z 0-9 _ . -, and does not start with . or -)"
                    )
                )
            );
        }
        let digest_tag = format!("sha256:{}", image.manifest.digest.hex());
        assert_eq!(
            err_of(layout.set_tag(&digest_tag, image.manifest.clone())).0,
            ErrorKind::InvalidInput
        );
        // Nothing was written: no temporary file, no tag.
        assert_eq!(
            fs::read(dir.0.join("index.json")).unwrap(),
            Index::default().to_json()
        );
        for tag in ["_", "0", "A.b-c_d", "a".repeat(128).as_str()] {
            check_tag(tag).unwrap();
        }
        let ghost = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b"ghost"), 5);
        assert_eq!(
            err_of(layout.set_tag("ghost", ghost.clone())),
            (
                ErrorKind::NotFound,
                format!(
                    "failed to write `{}/index.json`: cannot tag `ghost`: blob {} is not in the layout",
                    dir.0, ghost.digest
                )
            )
        );
        let mut wrong_size = image.manifest.clone();
        wrong_size.size += 1;
        assert_eq!(
            err_of(layout.set_tag("x", wrong_size)).0,
            ErrorKind::InvalidData
        );
        assert!(layout.tags().unwrap().is_empty());
        layout.set_tag("v1.0", image.manifest).unwrap();
    }

    #[test]
    fn layer_media_types_must_be_known_and_match_the_content() {
        let dir = Scratch::new("media-types");
        let layout = OciLayout::create(&dir.0).unwrap();
        let tar = b"plain tar bytes".to_vec();
        let pack = |c: Compression| {
            let mut w = crate::oci::Compressor::new(Vec::new(), c);
            w.write_all(&tar).unwrap();
            w.finish().unwrap()
        };
        let zstd_type = Compression::Zstd.layer_media_type();
        for (bytes, media_type, want) in [
            (tar.clone(), Compression::None.layer_media_type(), None),
            (
                pack(Compression::Gzip),
                Compression::Gzip.layer_media_type(),
                None,
            ),
            (pack(Compression::Zstd), zstd_type, None),
            (
                pack(Compression::Gzip),
                DOCKER_LAYER_TAR,
                Some("says an uncompressed tar, but the blob is gzip"),
            ),
            (
                pack(Compression::Gzip),
                zstd_type,
                Some("says zstd, but the blob is gzip"),
            ),
            (
                tar.clone(),
                Compression::Gzip.layer_media_type(),
                Some("says gzip, but the blob is an uncompressed tar"),
            ),
            (
                Vec::new(),
                zstd_type,
                Some("says zstd, but the blob is an uncompressed tar"),
            ),
        ] {
            let (digest, size) = layout.put_blob(&bytes).unwrap();
            let desc = Descriptor::new(media_type, digest, size);
            match want {
                None => {
                    let mut read = Vec::new();
                    layout
                        .open_layer(&desc)
                        .unwrap()
                        .read_to_end(&mut read)
                        .unwrap();
                    assert_eq!(read, bytes);
                }
                Some(why) => assert_eq!(
                    err_of(layout.open_layer(&desc)),
                    (
                        ErrorKind::InvalidData,
                        format!("failed to read blob `{digest}`: media type `{media_type}` {why}")
                    )
                ),
            }
        }
        let (digest, size) = layout.put_blob(&tar).unwrap();
        for unknown in [
            "application/vnd.oci.image.layer.v1.tar+lz4",
            "application/octet-stream",
        ] {
            assert_eq!(
                err_of(layout.open_layer(&Descriptor::new(unknown, digest, size))),
                (
                    ErrorKind::Unsupported,
                    format!(
                        "failed to read blob `{digest}`: media type `{unknown}` is not a layer media \
                         type (tar, tar+gzip or tar+zstd)"
                    )
                )
            );
        }
    }

    #[test]
    fn a_tag_held_twice_is_an_error_and_tagging_again_repairs_it() {
        let dir = Scratch::new("dup-tag");
        let layout = OciLayout::create(&dir.0).unwrap();
        let a = put_image(&layout, "amd64", &[b"a"]);
        let b = put_image(&layout, "amd64", &[b"b"]);
        let mut index = Index::default();
        for image in [&a, &b] {
            let mut d = image.manifest.clone();
            d.annotations
                .insert(ANNOTATION_REF_NAME.to_owned(), "v1".to_owned());
            index.manifests.push(d);
        }
        fs::write(dir.0.join("index.json"), index.to_json()).unwrap();
        let want = (
            ErrorKind::InvalidData,
            format!(
                "failed to open image `{}/index.json`: the tag \"v1\" names more than one image; \
                 tag it again (or remove it) to repair",
                dir.0
            ),
        );
        assert_eq!(err_of(layout.resolve(Some("v1"))), want);
        assert_eq!(err_of(layout.resolve(None)), want);
        assert_eq!(err_of(layout.tags()), want);
        layout.set_tag("v1", b.manifest.clone()).unwrap();
        assert_eq!(
            layout.resolve(Some("v1")).unwrap().digest,
            b.manifest.digest
        );
    }

    #[test]
    fn symlinked_blobs_are_refused_and_nothing_is_written_through_them() {
        for link in ["blobs", "blobs/sha256"] {
            let dir = Scratch::new("blobs-link");
            let layout = OciLayout::create(&dir.0).unwrap();
            let image = put_image(&layout, "amd64", &[b"l"]);
            layout.set_tag("v1", image.manifest.clone()).unwrap();
            let outside = dir
                .0
                .with_file_name(format!("{}-outside", dir.0.file_name().unwrap()));
            let _cleanup = Scratch(outside.clone());
            fs::rename(dir.0.join(link), &outside).unwrap();
            std::os::unix::fs::symlink(&outside, dir.0.join(link)).unwrap();
            let before = fs::read_dir(&outside).unwrap().count();
            let want = (
                ErrorKind::FilesystemLoop,
                format!(
                    "failed to open `{}/{link}`: it is a symlink, and no part of an image layout is followed",
                    dir.0
                ),
            );
            assert_eq!(err_of(OciLayout::open(&dir.0)), want);
            assert_eq!(err_of(layout.put_blob(b"new")), want);
            assert_eq!(err_of(layout.set_tag("v2", image.manifest.clone())), want);
            assert_eq!(err_of(layout.open_blob(&image.manifest.digest, None)), want);
            assert_eq!(err_of(layout.collect_garbage()), want);
            assert_eq!(fs::read_dir(&outside).unwrap().count(), before);
            assert_eq!(
                layout.resolve(Some("v1")).unwrap().digest,
                image.manifest.digest
            );
        }
    }

    #[test]
    fn fifos_and_directories_in_a_layout_are_refused_without_blocking() {
        let dir = Scratch::new("fifo");
        let layout = OciLayout::create(&dir.0).unwrap();
        let image = put_image(&layout, "amd64", &[b"l"]);
        layout.set_tag("v1", image.manifest.clone()).unwrap();
        let fifo = |path: &Utf8Path| {
            fs::remove_file(path).unwrap();
            make_fifo(path);
        };
        fifo(&dir.0.join("index.json"));
        let want = (
            ErrorKind::InvalidData,
            format!(
                "failed to open `{}/index.json`: it is a fifo, not a regular file",
                dir.0
            ),
        );
        assert_eq!(err_of(layout.read_index()), want);
        assert_eq!(err_of(layout.set_tag("v2", image.manifest.clone())), want);
        fifo(&dir.0.join("oci-layout"));
        assert_eq!(
            err_of(OciLayout::open(&dir.0)),
            (
                ErrorKind::InvalidData,
                format!(
                    "failed to open image `{}/oci-layout`: it is a fifo, not a regular file",
                    dir.0
                )
            )
        );
        fifo(&layout.blob_path(&image.config.digest));
        assert_eq!(
            err_of(layout.read_config(&image.manifest)).1,
            format!(
                "failed to read blob `{}`: the blob is not a regular file",
                image.config.digest
            )
        );
    }

    #[test]
    fn resume_finishes_what_an_interrupted_create_left_and_nothing_else() {
        // What a run killed before `oci-layout` was written leaves: blobs,
        // a temporary file of a process that is gone, maybe `index.json`.
        let dir = Scratch::new("resume");
        let layout = OciLayout::create(&dir.0).unwrap();
        let (blob, _) = layout.put_blob(b"whole").unwrap();
        fs::write(layout.blobs_dir().join(".tmp-999999-7"), b"part").unwrap();
        fs::remove_file(dir.0.join("oci-layout")).unwrap();
        assert_eq!(err_of(OciLayout::open(&dir.0)).0, ErrorKind::NotFound);
        let resumed = OciLayout::resume(&dir.0).unwrap();
        assert_eq!(blob_files(&resumed), vec![blob.hex()]);
        assert!(resumed.tags().unwrap().is_empty());
        // Resuming a layout opens it.
        assert_eq!(OciLayout::resume(&dir.0).unwrap(), resumed);

        // Without `index.json`, and without `blobs/sha256`.
        let bare = Scratch::new("resume-bare");
        fs::create_dir_all(bare.0.join("blobs")).unwrap();
        OciLayout::resume(&bare.0).unwrap();
        assert_eq!(
            fs::read(bare.0.join("index.json")).unwrap(),
            Index::default().to_json()
        );

        // Anything that is not ours is left alone.
        for (name, what) in [
            ("etc", "etc"),
            ("blobs/sha256/notes.txt", "blobs/sha256/notes.txt"),
            ("blobs/other", "blobs/other"),
            ("index.json", "index.json"),
        ] {
            let foreign = Scratch::new("resume-foreign");
            fs::create_dir_all(foreign.0.join("blobs/sha256")).unwrap();
            fs::write(foreign.0.join(name), b"not ours").unwrap();
            assert_eq!(
                err_of(OciLayout::resume(&foreign.0)),
                (
                    ErrorKind::DirectoryNotEmpty,
                    format!(
                        "failed to create directory `{}`: `{what}` is not part of an unfinished image layout",
                        foreign.0
                    )
                )
            );
            assert!(!foreign.0.join("oci-layout").exists());
        }
    }

    #[test]
    fn resolve_defaults_to_latest_or_the_only_image() {
        let dir = Scratch::new("resolve");
        let layout = OciLayout::create(&dir.0).unwrap();
        assert_eq!(
            err_of(layout.resolve(None)),
            (
                ErrorKind::NotFound,
                format!("failed to open image `{}`: the layout has no images", dir.0)
            )
        );
        let a = put_image(&layout, "amd64", &[b"a"]);
        let b = put_image(&layout, "amd64", &[b"b"]);
        // One untagged image: that one; two: ambiguous.
        layout.add_untagged(a.manifest.clone()).unwrap();
        assert_eq!(layout.resolve(None).unwrap(), a.manifest);
        layout.add_untagged(b.manifest.clone()).unwrap();
        assert_eq!(
            err_of(layout.resolve(None)),
            (
                ErrorKind::InvalidInput,
                format!(
                    "failed to open image `{}`: no tag given and the layout has 2 untagged images",
                    dir.0
                )
            )
        );
        // By digest.
        assert_eq!(
            layout
                .resolve(Some(&a.manifest.digest.to_string()))
                .unwrap(),
            a.manifest
        );
        // The only tag.
        layout.set_tag("v1", b.manifest.clone()).unwrap();
        assert_eq!(layout.resolve(None).unwrap().digest, b.manifest.digest);
        // Two tags and no latest: ambiguous.
        layout.set_tag("v2", a.manifest.clone()).unwrap();
        assert_eq!(
            err_of(layout.resolve(None)),
            (
                ErrorKind::InvalidInput,
                format!(
                    "failed to open image `{}`: no tag given, no `latest` tag, and several tags: v1, v2",
                    dir.0
                )
            )
        );
        layout.set_tag("latest", a.manifest.clone()).unwrap();
        assert_eq!(layout.resolve(None).unwrap().digest, a.manifest.digest);
        assert_eq!(
            layout.resolve(Some("v1")).unwrap().digest,
            b.manifest.digest
        );
        assert_eq!(
            err_of(layout.resolve(Some("v3"))),
            (
                ErrorKind::NotFound,
                format!(
                    "failed to open image `v3`: no such tag in `{}` (tags: latest, v1, v2)",
                    dir.0
                )
            )
        );
    }

    #[test]
    fn manifests_and_configs_are_found_through_indexes() {
        let dir = Scratch::new("read");
        let layout = OciLayout::create(&dir.0).unwrap();
        let amd = put_image(&layout, "amd64", &[b"amd"]);
        let arm = put_image(&layout, "arm64", &[b"arm"]);
        let with_platform = |d: &Descriptor, p: Platform| {
            let mut d = d.clone();
            d.platform = Some(p);
            d
        };
        let mut attestation = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b"att"), 3);
        attestation.platform = Some(Platform::new("unknown", "unknown"));
        let index = Index {
            manifests: vec![
                with_platform(&arm.manifest, Platform::new("linux", "arm64")),
                with_platform(&amd.manifest, Platform::new("linux", "amd64")),
            ],
            ..Index::default()
        };
        let index = layout.put_json(&index, media_type::OCI_INDEX).unwrap();
        // An index of the index.
        let outer = Index {
            manifests: vec![index.clone()],
            ..Index::default()
        };
        let outer = layout.put_json(&outer, media_type::OCI_INDEX).unwrap();

        let m = layout.read_manifest(&outer).unwrap();
        assert_eq!(m.config, amd.config);
        assert_eq!(m.layers, amd.layers);
        let m = layout
            .read_manifest_for(&index, &Platform::new("linux", "arm64"))
            .unwrap();
        assert_eq!(m.config, arm.config);
        assert_eq!(layout.read_config(&outer).unwrap().architecture, "amd64");
        assert_eq!(
            layout.read_config(&amd.config).unwrap().architecture,
            "amd64"
        );

        // Only one image (and an attestation): that one, whatever its platform.
        let single = Index {
            manifests: vec![
                with_platform(&arm.manifest, Platform::new("linux", "arm64")),
                attestation.clone(),
            ],
            ..Index::default()
        };
        let single = layout.put_json(&single, media_type::OCI_INDEX).unwrap();
        assert_eq!(layout.read_manifest(&single).unwrap().config, arm.config);

        let none = Index {
            manifests: vec![
                with_platform(&arm.manifest, Platform::new("linux", "arm64")),
                with_platform(&arm.manifest, Platform::new("linux", "s390x")),
                attestation,
            ],
            ..Index::default()
        };
        let none = layout.put_json(&none, media_type::OCI_INDEX).unwrap();
        assert_eq!(
            err_of(layout.read_manifest(&none)),
            (
                ErrorKind::NotFound,
                format!(
                    "failed to open image `{}`: the image index has no manifest for linux/amd64 (it has: linux/arm64, linux/s390x, unknown/unknown)",
                    none.digest
                )
            )
        );

        // Docker media types, and a manifest under an unknown media type.
        let mut docker = Manifest::new(
            Descriptor::new(
                media_type::DOCKER_CONFIG,
                amd.config.digest,
                amd.config.size,
            ),
            amd.layers.clone(),
        );
        docker.media_type = Some(media_type::DOCKER_MANIFEST.into());
        let docker_desc = layout
            .put_json(&docker, media_type::DOCKER_MANIFEST)
            .unwrap();
        assert_eq!(layout.read_manifest(&docker_desc).unwrap(), docker);
        assert_eq!(layout.read_config(&docker_desc).unwrap().os, "linux");
        let mut unknown = docker_desc.clone();
        unknown.media_type = "application/octet-stream".into();
        assert_eq!(layout.read_manifest(&unknown).unwrap(), docker);

        // A layer is not a manifest.
        assert_eq!(
            err_of(layout.read_manifest(&amd.layers[0])),
            (
                ErrorKind::Unsupported,
                format!(
                    "failed to open image `{}`: media type `application/vnd.oci.image.layer.v1.tar` is neither an image manifest nor an image index",
                    amd.layers[0].digest
                )
            )
        );
        // A descriptor of the wrong kind of document.
        let mut wrong = index.clone();
        wrong.media_type = media_type::OCI_MANIFEST.into();
        assert_eq!(
            err_of(layout.read_manifest(&wrong)),
            (
                ErrorKind::InvalidData,
                format!(
                    "failed to read blob `{}`: `mediaType` is `{}`, not an image manifest",
                    index.digest,
                    media_type::OCI_INDEX
                )
            )
        );
    }

    #[test]
    fn gc_removes_exactly_the_unreferenced_blobs() {
        let dir = Scratch::new("gc");
        let layout = OciLayout::create(&dir.0).unwrap();
        let tagged = put_image(&layout, "amd64", &[b"base", b"app"]);
        layout.set_tag("app", tagged.manifest.clone()).unwrap();
        // Reached through a nested index.
        let nested = put_image(&layout, "arm64", &[b"base", b"arm"]);
        let index = Index {
            manifests: vec![nested.manifest.clone()],
            ..Index::default()
        };
        let index = layout.put_json(&index, media_type::OCI_INDEX).unwrap();
        layout.set_tag("multi", index.clone()).unwrap();
        // A root of an unknown media type: kept, not followed.
        let (thing, thing_size) = layout.put_blob(b"not json").unwrap();
        layout
            .set_tag(
                "thing",
                Descriptor::new("application/x-thing", thing, thing_size),
            )
            .unwrap();
        // Garbage: an image nothing tags (sharing the base layer), a stray blob.
        let orphan = put_image(&layout, "amd64", &[b"base", b"orphan layer"]);
        let (stray, _) = layout.put_blob(b"stray").unwrap();
        // A stale and a fresh temporary file; files that are not ours.
        let stale = layout.blobs_dir().join(".tmp-999999-1");
        fs::write(&stale, b"12345").unwrap();
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(1))
            .unwrap();
        // Fresh, but its process is gone: left by a run that ended.
        let dead = layout.blobs_dir().join(".tmp-999999-2");
        fs::write(&dead, b"123").unwrap();
        // Fresh, of a process that runs (ours): a writer at work.
        let live_temp = format!(".tmp-{}-999999", std::process::id());
        fs::write(layout.blobs_dir().join(&live_temp), b"1").unwrap();
        fs::write(layout.blobs_dir().join("README"), b"keep").unwrap();
        fs::create_dir(layout.blobs_dir().join("f".repeat(64))).unwrap();
        fs::create_dir_all(dir.0.join("blobs/sha512")).unwrap();
        fs::write(dir.0.join("blobs/sha512").join("ab".repeat(64)), b"x").unwrap();

        let mut live = tagged.blobs();
        live.extend(nested.blobs());
        live.extend([index.digest, thing]);
        let removed = [
            orphan.manifest.digest,
            orphan.config.digest,
            orphan.layers[1].digest,
            stray,
        ];
        let bytes: u64 = removed
            .iter()
            .map(|d| layout.blob_size(d).unwrap())
            .sum::<u64>()
            + 5
            + 3;

        let mut want = removed.to_vec();
        want.sort();
        let want = GcReport {
            removed: want,
            temporaries: vec![
                "blobs/sha256/.tmp-999999-1".to_owned(),
                "blobs/sha256/.tmp-999999-2".to_owned(),
            ],
            cache_records: vec![],
            bytes_freed: bytes,
        };
        // A dry run finds the same and removes nothing.
        let before = blob_files(&layout);
        assert_eq!(layout.collect_garbage_with(GcMode::DryRun).unwrap(), want);
        assert_eq!(blob_files(&layout), before);
        assert_eq!(layout.collect_garbage().unwrap(), want);
        let mut left = sorted_hex(&live);
        left.extend([live_temp, "README".to_owned(), "f".repeat(64)]);
        left.sort();
        assert_eq!(blob_files(&layout), left);
        assert!(dir.0.join("blobs/sha512").join("ab".repeat(64)).exists());
        // Nothing left to collect.
        assert_eq!(layout.collect_garbage().unwrap(), GcReport::default());
        assert_eq!(layout.read_config(&index).unwrap().architecture, "arm64");
    }

    #[test]
    fn the_layer_cache_gives_a_record_back_only_for_its_blob_and_diff_id() {
        let dir = Scratch::new("cache");
        let layout = OciLayout::create(&dir.0).unwrap();
        let (blob, diff_id, other) = (Digest::of(b"gz"), Digest::of(b"tar"), Digest::of(b"x"));
        assert_eq!(layout.layer_record(&blob, &diff_id), None);
        let record = LayerRecord {
            digest: blob,
            diff_id,
            uncompressed_size: 10_240,
        };
        layout.record_layer(&record).unwrap();
        assert_eq!(layout.layer_record(&blob, &diff_id), Some(record));
        assert_eq!(layout.layer_record(&blob, &other), None);
        assert_eq!(layout.layer_record(&other, &diff_id), None);
        // A newer record replaces the old one.
        let newer = LayerRecord {
            uncompressed_size: 7,
            ..record
        };
        layout.record_layer(&newer).unwrap();
        assert_eq!(layout.layer_record(&blob, &diff_id), Some(newer));
        let path = dir
            .0
            .join(format!(".layerstack/layers/{}.json", blob.hex()));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!(r#"{{"diff_id":"{diff_id}","digest":"{blob}","uncompressed_size":7}}"#)
        );
        // The same record again writes nothing: the file is the same inode.
        let ino = |p: &Utf8Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = ino(&path);
        layout.record_layer(&newer).unwrap();
        assert_eq!(ino(&path), before);
        // Damaged, renamed, oversized or not a file: no record, no hang.
        for bad in [
            "{".to_owned(),
            fs::read_to_string(&path)
                .unwrap()
                .replace(&blob.to_string(), &other.to_string()),
            format!("{:4097}", ""),
            r#"{"digest":1,"diff_id":2,"uncompressed_size":"3"}"#.to_owned(),
        ] {
            fs::write(&path, bad).unwrap();
            assert_eq!(layout.layer_record(&blob, &diff_id), None);
        }
        fs::remove_file(&path).unwrap();
        make_fifo(&path);
        assert_eq!(layout.layer_record(&blob, &diff_id), None);
        // A symlinked cache directory is refused both ways.
        let outside = Scratch::new("cache-outside");
        fs::create_dir_all(&outside.0).unwrap();
        fs::remove_dir_all(dir.0.join(".layerstack")).unwrap();
        std::os::unix::fs::symlink(&outside.0, dir.0.join(".layerstack")).unwrap();
        assert_eq!(
            err_of(layout.record_layer(&record)).0,
            ErrorKind::FilesystemLoop
        );
        assert_eq!(fs::read_dir(&outside.0).unwrap().count(), 0);
    }

    #[test]
    fn gc_removes_the_cache_records_of_the_blobs_it_removes() {
        let dir = Scratch::new("gc-cache");
        let layout = OciLayout::create(&dir.0).unwrap();
        let kept = put_image(&layout, "amd64", &[b"kept"]);
        let gone = put_image(&layout, "arm64", &[b"gone"]);
        layout.set_tag("v1", kept.manifest.clone()).unwrap();
        for image in [&kept, &gone] {
            let d = image.layers[0].digest;
            layout
                .record_layer(&LayerRecord {
                    digest: d,
                    diff_id: d,
                    uncompressed_size: 4,
                })
                .unwrap();
        }
        let cache = dir.0.join(".layerstack/layers");
        fs::write(cache.join(".tmp-999999-5"), "x").unwrap();
        let record_len = fs::metadata(cache.join(format!("{}.json", gone.layers[0].digest.hex())))
            .unwrap()
            .len();
        let blobs: u64 = gone
            .blobs()
            .iter()
            .map(|d| layout.blob_size(d).unwrap())
            .sum();
        let want = GcReport {
            removed: sorted_digests(&gone.blobs()),
            temporaries: vec![".layerstack/layers/.tmp-999999-5".to_owned()],
            cache_records: vec![gone.layers[0].digest],
            bytes_freed: blobs + record_len + 1,
        };
        assert_eq!(layout.collect_garbage_with(GcMode::DryRun).unwrap(), want);
        assert!(
            layout
                .layer_record(&gone.layers[0].digest, &gone.layers[0].digest)
                .is_some()
        );
        assert_eq!(layout.collect_garbage().unwrap(), want);
        assert_eq!(
            layout.layer_record(&gone.layers[0].digest, &gone.layers[0].digest),
            None
        );
        let d = kept.layers[0].digest;
        assert_eq!(
            layout.layer_record(&d, &d).map(|r| r.uncompressed_size),
            Some(4)
        );
        assert_eq!(layout.collect_garbage().unwrap(), GcReport::default());
    }

    #[test]
    fn gc_removes_nothing_when_a_manifest_is_corrupt() {
        let dir = Scratch::new("gc-corrupt");
        let layout = OciLayout::create(&dir.0).unwrap();
        let image = put_image(&layout, "amd64", &[b"layer"]);
        layout.set_tag("v1", image.manifest.clone()).unwrap();
        let (stray, _) = layout.put_blob(b"stray").unwrap();
        let path = layout.blob_path(&image.manifest.digest);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] = b' ';
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            err_of(layout.collect_garbage()),
            (
                ErrorKind::InvalidData,
                format!(
                    "failed to read blob `{}`: digest mismatch: the content is {}",
                    image.manifest.digest,
                    Digest::of(&bytes)
                )
            )
        );
        assert!(layout.has_blob(&stray).unwrap());
        assert!(layout.has_blob(&image.layers[0].digest).unwrap());
        // A missing manifest is skipped: there is nothing to follow.
        fs::remove_file(&path).unwrap();
        assert_eq!(
            layout.collect_garbage().unwrap().removed,
            sorted_digests(&[stray, image.config.digest, image.layers[0].digest])
        );
    }

    fn sorted_digests(digests: &[Digest]) -> Vec<Digest> {
        let mut v = digests.to_vec();
        v.sort();
        v
    }

    // ---- docker save ----

    fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, data).unwrap();
    }

    fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, file, content);
        b.into_inner().unwrap()
    }

    /// A `docker save` archive as Docker before 25 wrote it.
    fn legacy_archive(layers: &[Vec<u8>], repo_tags: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let mut config = ImageConfig::new("linux", "amd64");
        config.diff_ids = layers.iter().map(|l| Digest::of(l)).collect();
        config.config = serde_json::json!({"Cmd": ["sh"]});
        let config = config.to_json();
        let config_name = format!("{}.json", Digest::of(&config).hex());
        let mut b = tar::Builder::new(Vec::new());
        let mut layer_names = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let id = Digest::of(format!("layer id {i}").as_bytes()).hex();
            append(&mut b, &format!("{id}/VERSION"), b"1.0");
            append(&mut b, &format!("{id}/json"), br#"{"id":"x"}"#);
            append(&mut b, &format!("{id}/layer.tar"), layer);
            layer_names.push(format!("{id}/layer.tar"));
        }
        append(&mut b, &config_name, &config);
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": layer_names,
        }]);
        append(&mut b, "manifest.json", manifest.to_string().as_bytes());
        append(&mut b, "repositories", b"{}");
        (b.into_inner().unwrap(), config)
    }

    #[test]
    fn import_reads_the_legacy_docker_save_format() {
        let layers = vec![
            layer_tar("etc/os-release", b"ID=test\n"),
            layer_tar("bin/sh", b"#!"),
        ];
        let (archive, config) = legacy_archive(&layers, &["busybox:1.36", "localhost:5000/app"]);
        // A repository without a tag is Docker's `latest`.
        let dir = Scratch::new("import-legacy");
        let layout = OciLayout::import_docker_archive(&archive[..], &dir.0).unwrap();

        let tags = layout.tags().unwrap();
        assert_eq!(
            tags.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            vec!["1.36", "latest"]
        );
        assert_eq!(
            tags[0]
                .1
                .annotations
                .get(ANNOTATION_IMAGE_NAME)
                .map(String::as_str),
            Some("busybox:1.36")
        );
        let manifest = layout.read_manifest(&tags[0].1).unwrap();
        assert_eq!(
            manifest.media_type.as_deref(),
            Some(media_type::OCI_MANIFEST)
        );
        assert_eq!(
            manifest.config,
            Descriptor::new(
                media_type::DOCKER_CONFIG,
                Digest::of(&config),
                config.len() as u64
            )
        );
        assert_eq!(
            manifest.layers,
            layers
                .iter()
                .map(|l| Descriptor::new(DOCKER_LAYER_TAR, Digest::of(l), l.len() as u64))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            Compression::from_media_type(DOCKER_LAYER_TAR),
            Some(Compression::None)
        );
        for (layer, desc) in layers.iter().zip(&manifest.layers) {
            assert_eq!(
                &layout
                    .read_blob(&desc.digest, Some(desc.size), u64::MAX)
                    .unwrap(),
                layer
            );
        }
        let cfg = layout.read_config(&tags[0].1).unwrap();
        assert_eq!(cfg.config, serde_json::json!({"Cmd": ["sh"]}));
        // Only the image's blobs are stored: no `json`, `VERSION` or the like.
        let mut want = vec![tags[0].1.digest, Digest::of(&config)];
        want.extend(layers.iter().map(|l| Digest::of(l)));
        assert_eq!(blob_files(&layout), sorted_hex(&want));
        assert_eq!(layout.collect_garbage().unwrap(), GcReport::default());
    }

    #[test]
    fn import_checks_legacy_layers_against_the_config() {
        let layers = vec![layer_tar("a", b"1")];
        let (archive, _) = legacy_archive(&layers, &["x:1"]);
        // Swap the layer's bytes for others of the same length.
        let tampered = {
            let other = layer_tar("b", b"1");
            assert_eq!(other.len(), layers[0].len());
            let mut a = archive.clone();
            let at = a
                .windows(layers[0].len())
                .position(|w| w == &layers[0][..])
                .unwrap();
            a[at..at + other.len()].copy_from_slice(&other);
            // Keep the outer tar's header checksum valid: only data changed.
            (a, Digest::of(&other))
        };
        let dir = Scratch::new("import-tampered");
        let (kind, message) = err_of(OciLayout::import_docker_archive(&tampered.0[..], &dir.0));
        assert_eq!(kind, ErrorKind::InvalidData);
        assert!(
            message.ends_with(&format!(
                "the layer is {}, but the config's DiffID is {}",
                tampered.1,
                Digest::of(&layers[0])
            )),
            "{message}"
        );
        assert!(OciLayout::open(&dir.0).unwrap().tags().unwrap().is_empty());
    }

    #[test]
    fn import_reads_the_oci_docker_save_format() {
        let src_dir = Scratch::new("import-oci-src");
        let src = OciLayout::create(&src_dir.0).unwrap();
        let image = put_image(&src, "amd64", &[b"layer one", b"layer two"]);
        src.set_tag("latest", image.manifest.clone()).unwrap();
        let mut named = image.manifest.clone();
        named.annotations.insert(
            ANNOTATION_IMAGE_NAME.into(),
            "docker.io/library/app:2.0".into(),
        );
        // Docker 25 also writes the legacy manifest.json, and symlinks.
        let mut b = tar::Builder::new(Vec::new());
        let mut index = src.read_index().unwrap();
        index.manifests.push(named);
        append(&mut b, "./oci-layout", LAYOUT_JSON);
        append(&mut b, "index.json", &index.to_json());
        for name in blob_files(&src) {
            let bytes = fs::read(src.blobs_dir().join(&name)).unwrap();
            append(&mut b, &format!("blobs/sha256/{name}"), &bytes);
        }
        append(&mut b, "manifest.json", b"[]");
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        b.append_link(&mut link, "abc/layer.tar", "../blobs/sha256/x")
            .unwrap();
        let archive = b.into_inner().unwrap();

        let dir = Scratch::new("import-oci");
        let layout = OciLayout::import_docker_archive(&archive[..], &dir.0).unwrap();
        assert_eq!(
            layout
                .tags()
                .unwrap()
                .iter()
                .map(|(t, d)| (t.as_str(), d.digest))
                .collect::<Vec<_>>(),
            vec![
                ("2.0", image.manifest.digest),
                ("latest", image.manifest.digest)
            ]
        );
        assert_eq!(blob_files(&layout), sorted_hex(&image.blobs()));
        let manifest = layout
            .read_manifest(&layout.resolve(None).unwrap())
            .unwrap();
        assert_eq!(manifest.layers, image.layers);

        // A blob whose content is not its name's digest is refused.
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "oci-layout", LAYOUT_JSON);
        let claimed = Digest::of(b"claimed");
        append(
            &mut b,
            &format!("blobs/sha256/{}", claimed.hex()),
            b"CLAIMED",
        );
        let bad = Scratch::new("import-oci-bad");
        assert_eq!(
            err_of(OciLayout::import_docker_archive(
                &b.into_inner().unwrap()[..],
                &bad.0
            )),
            (
                ErrorKind::InvalidData,
                format!(
                    "failed to write blob `{claimed}`: digest mismatch: the content is {}",
                    Digest::of(b"CLAIMED")
                )
            )
        );
        assert!(blob_files(&OciLayout::open(&bad.0).unwrap()).is_empty());
    }

    #[test]
    fn import_refuses_names_that_leave_the_archive() {
        for name in ["../evil", "a/../../evil", "/etc/passwd"] {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_size(1);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            let mut b = tar::Builder::new(Vec::new());
            b.append(&header, &b"x"[..]).unwrap();
            let dir = Scratch::new("import-evil");
            let why = if name.starts_with('/') {
                "it is absolute"
            } else {
                "it contains `..`"
            };
            assert_eq!(
                err_of(OciLayout::import_docker_archive(
                    &b.into_inner().unwrap()[..],
                    &dir.0
                )),
                (
                    ErrorKind::InvalidData,
                    format!("failed to open image `{name}`: invalid name in the archive: {why}")
                )
            );
        }
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "something.txt", b"x");
        let dir = Scratch::new("import-neither");
        assert_eq!(
            err_of(OciLayout::import_docker_archive(&b.into_inner().unwrap()[..], &dir.0)),
            (
                ErrorKind::InvalidData,
                "failed to open image `<archive>`: not a `docker save` archive (neither `oci-layout` nor `manifest.json`)".to_owned()
            )
        );
    }

    #[test]
    fn tag_of_takes_the_part_after_the_last_colon() {
        assert_eq!(tag_of("busybox:latest"), "latest");
        assert_eq!(tag_of("registry:5000/app:1.0"), "1.0");
        assert_eq!(tag_of("registry:5000/app"), "latest");
        assert_eq!(tag_of("app"), "latest");
        assert!(is_temp_name(".tmp-12-3"));
        assert!(!is_temp_name(".tmp-12-"));
        assert!(!is_temp_name(".tmp-a-3"));
        assert!(!is_temp_name("tmp-1-2"));
    }
}
