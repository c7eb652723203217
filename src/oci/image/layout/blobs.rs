//! Blobs: written through a temporary file and renamed to their digest,
//! read back with their size and digest checked at the end.

use super::*;

impl OciLayout {
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

    pub(super) fn put_verified(
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
    pub(super) fn stat_blob(&self, digest: &Digest) -> Result<rustix::fs::Stat> {
        let blobs = match self.open_blobs(false) {
            Ok(blobs) => blobs,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.no_such_blob(digest)),
            Err(e) => return Err(e),
        };
        match stat_nofollow(&blobs, &digest.hex()) {
            Ok(st) => Ok(st),
            Err(Errno::NOENT) => Err(self.no_such_blob(digest)),
            Err(e) => Err(errno_error(e, Operation::ReadBlob, digest.to_string())),
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
            hasher: BlobHash::Inline(Hasher::new()),
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

    pub(super) fn no_such_blob(&self, digest: &Digest) -> Error {
        Error::new(ErrorKind::NotFound, Operation::ReadBlob, digest.to_string())
            .with_detail(format!("no such blob in `{}`", self.root))
    }

    /// Removes the blob `digest` if it is a regular file (an unreferenced
    /// blob an import stored on the way).
    pub(super) fn remove_blob(&self, digest: &Digest) {
        if let Ok(blobs) = self.open_blobs(false) {
            let _ = rustix::fs::unlinkat(&*blobs, digest.hex().as_str(), AtFlags::empty());
        }
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
pub(super) struct Committed {
    pub(super) digest: Digest,
    pub(super) size: u64,
    /// Whether this call stored it (it was not there before).
    pub(super) created: bool,
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

    pub(super) fn finish(self, expected: Option<(&Digest, u64)>) -> Result<Committed> {
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
    hasher: BlobHash,
    digest: Digest,
    size: u64,
    state: ReadState,
}

#[derive(Debug)]
pub(super) enum ReadState {
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

    /// The same reader, hashing on a thread of its own (see
    /// [`PipedHasher`]) so that the caller's thread goes on with the bytes
    /// while they are hashed: for a long read whose consumer is busy
    /// (inflating a layer). The check is the same, at the same byte.
    /// Once bytes were read it is left as it is.
    #[must_use]
    pub(crate) fn hash_on_thread(mut self) -> BlobReader {
        if let BlobHash::Inline(h) = &self.hasher
            && h.is_empty()
        {
            self.hasher = BlobHash::Piped(PipedHasher::new());
        }
        self
    }

    /// The open file, for positioned reads (nothing more is checked).
    pub(crate) fn into_file(self) -> File {
        self.file
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
            let Some(actual) = std::mem::take(&mut self.hasher).finish() else {
                let err = Error::new(ErrorKind::Io, Operation::ReadBlob, self.digest.to_string())
                    .with_detail("the thread hashing the blob stopped");
                self.state = ReadState::Failed(err.clone());
                return Err(io::Error::other(err));
            };
            if actual != self.digest {
                return Err(self.fail(format!("digest mismatch: the content is {actual}")));
            }
            self.state = ReadState::Verified;
        }
        Ok(n)
    }
}

/// How a [`BlobReader`] hashes: on the reading thread, or on one of its
/// own.
#[derive(Debug)]
enum BlobHash {
    Inline(Hasher),
    Piped(PipedHasher),
}

impl Default for BlobHash {
    fn default() -> BlobHash {
        BlobHash::Inline(Hasher::new())
    }
}

impl BlobHash {
    fn update(&mut self, data: &[u8]) {
        match self {
            BlobHash::Inline(h) => h.update(data),
            BlobHash::Piped(h) => h.update(data),
        }
    }

    fn len(&self) -> u64 {
        match self {
            BlobHash::Inline(h) => h.len(),
            BlobHash::Piped(h) => h.len(),
        }
    }

    /// `None` if the hashing thread was lost.
    fn finish(self) -> Option<Digest> {
        match self {
            BlobHash::Inline(h) => Some(h.finish()),
            BlobHash::Piped(h) => h.finish(),
        }
    }
}

/// Turns a read error of a [`BlobReader`] back into the crate's error.
pub(super) fn error_from_read(e: &io::Error, digest: &Digest) -> Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .cloned()
        .unwrap_or_else(|| Error::from_io(e, Operation::ReadBlob, digest.to_string()))
}

pub(super) fn not_a_file(digest: &Digest) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        Operation::ReadBlob,
        digest.to_string(),
    )
    .with_detail("the blob is not a regular file")
}
