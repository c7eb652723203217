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
use crate::fs::beneath::{errno_error, errno_kind};
use crate::meta::FileType;
use crate::oci::Compression;
use crate::oci::image::digest::{Digest, DigestWriter, Hasher, PipedHasher};
use crate::oci::image::spec::{
    self, ANNOTATION_REF_NAME, Descriptor, Document, ImageConfig, Index, MAX_DOCUMENT_BYTES,
    Manifest, Platform, media_type,
};
use crate::oci::tar::read::{Limits, TarKind, TarReader};

mod archive;
mod blobs;
mod cache;
mod gc;
mod index;
mod lock;
#[cfg(test)]
pub(crate) mod tests;

pub use blobs::{BlobReader, BlobWriter};
pub use index::{MAX_TAG_LEN, check_tag};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
const BLOBS_DIR: &str = "blobs/sha256";
const TEMP_PREFIX: &str = ".tmp-";

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
/// the DiffID the caller expects. A missing or damaged record is the same
/// as none; garbage collection removes the records of the blobs it
/// removes. Other tools ignore the directory.
///
/// What a record vouches for, and who relies on it:
///
/// - its size is a hint for display (the sizes `inspect` shows): nothing
///   that guards memory or disk relies on it, so a forged size misstates
///   a number and nothing else;
/// - its DiffID, that this blob inflates to a tar of that sha256, lets
///   [`ImageStore::flatten`](crate::oci::ImageStore::flatten) leave out the
///   DiffID check of the layer (one sha256 pass over the uncompressed tar)
///   when the config names that same DiffID. The blob digest is checked
///   all the same, and it alone fixes every byte written, so a forged
///   record changes nothing written: it can only hide that a config's
///   DiffID disagrees with its manifest's blob. A record naming another
///   DiffID than the config's vouches for nothing, and the check is made.
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
}

/// A temporary file in `blobs/sha256/`, removed on drop unless persisted.
#[derive(Debug)]
pub(super) struct TempPath {
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
pub(super) fn is_temp_name(name: &str) -> bool {
    temp_pid(name).is_some()
}

/// The process id in the name of one of [`TempPath`]'s files.
pub(super) fn temp_pid(name: &str) -> Option<u32> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (pid, n) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    if digits(pid) && digits(n) {
        pid.parse().ok()
    } else {
        None
    }
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
    // Room for the whole file up front (`take` hides its size from
    // `read_to_end`, which would otherwise grow the vector step by step,
    // copying and faulting in pages each time: most of the time a warm
    // lazy `cat` spent reading its indexes).
    let size = file.metadata().map_or(0, |m| m.len()).min(limit);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
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
