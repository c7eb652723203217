//! A streaming reader of layer tars, with limits.
//!
//! The `tar` crate parses each 512-byte header ([`tar::Header`]); PAX
//! records (whose values may hold newlines, which `tar::PaxExtensions`
//! cannot read) and the framing around them (extended
//! headers, sizes, padding, the end of the archive) is done here so that
//! every limit is checked *before* anything is read into memory, and so
//! that the size that frames the stream is the size that is used:
//!
//! - A PAX `size` overrides the header's size only when the header's is 0
//!   (as Go's `archive/tar` writes for files of 8 GiB and more); any other
//!   disagreement is refused, since two parsers that frame the stream
//!   differently see two different layers.
//! - PAX extended headers and GNU long names larger than
//!   [`Limits::max_header_bytes`] are refused before they are read.
//! - Every byte of the uncompressed stream counts against
//!   [`Limits::max_bytes`], so a decompression bomb stops at the limit.
//! - Names are normalised into a [`LayerPath`]: a leading `/` and `./` are
//!   dropped (as GNU tar does), empty and `.` components are dropped, and a
//!   `..` component is refused.
//!
//! Not supported, with a clear error: GNU sparse files (type `S` or PAX
//! `GNU.sparse.*`), multi-volume archives, unknown entry types and names
//! that are not UTF-8. PAX global headers (type `g`) are read and ignored.

use std::io::{self, Read};

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::meta::{FileType, Metadata, Timestamp, Xattrs, makedev};
use crate::path::LayerPath;

const BLOCK: u64 = 512;

/// Limits on a layer tar, checked while it streams. The defaults are far
/// above any real image layer and far below what exhausts a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Entries in the tar (extended headers not counted). Default 1,000,000.
    pub max_entries: u64,
    /// Bytes of the uncompressed tar. Default 64 GiB.
    pub max_bytes: u64,
    /// Bytes of one PAX extended header or GNU long name. Default 1 MiB.
    pub max_header_bytes: u64,
    /// Components of one path. Default 256.
    pub max_path_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 1_000_000,
            max_bytes: 64 << 30,
            max_header_bytes: 1 << 20,
            max_path_depth: 256,
        }
    }
}

impl Limits {
    /// The defaults.
    #[must_use]
    pub fn new() -> Limits {
        Limits::default()
    }

    /// Sets [`Limits::max_entries`].
    #[must_use]
    pub fn with_max_entries(mut self, n: u64) -> Limits {
        self.max_entries = n;
        self
    }

    /// Sets [`Limits::max_bytes`].
    #[must_use]
    pub fn with_max_bytes(mut self, n: u64) -> Limits {
        self.max_bytes = n;
        self
    }

    /// Sets [`Limits::max_header_bytes`].
    #[must_use]
    pub fn with_max_header_bytes(mut self, n: u64) -> Limits {
        self.max_header_bytes = n;
        self
    }

    /// Sets [`Limits::max_path_depth`].
    #[must_use]
    pub fn with_max_path_depth(mut self, n: usize) -> Limits {
        self.max_path_depth = n;
        self
    }
}

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarKind {
    /// A regular file; its data follows.
    File,
    /// A directory.
    Dir,
    /// A symlink with this target (verbatim).
    Symlink(String),
    /// A hard link to this earlier name.
    HardLink(LayerPath),
    /// A character device with this device number.
    CharDevice(u64),
    /// A block device with this device number.
    BlockDevice(u64),
    /// A fifo.
    Fifo,
}

/// One entry of a layer tar, with its name normalised and its extended
/// headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The normalised path (the root for `./`).
    pub path: LayerPath,
    /// The name as the archive spells it (for messages).
    pub name: String,
    /// The type, with its link target or device number.
    pub kind: TarKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (PAX gives nanoseconds).
    pub mtime: Timestamp,
    /// Bytes of data that follow (regular files).
    pub size: u64,
    /// `SCHILY.xattr.*` records.
    pub xattrs: Xattrs,
}

impl TarEntry {
    /// The file type.
    #[must_use]
    pub fn file_type(&self) -> FileType {
        match self.kind {
            TarKind::File | TarKind::HardLink(_) => FileType::File,
            TarKind::Dir => FileType::Dir,
            TarKind::Symlink(_) => FileType::Symlink,
            TarKind::CharDevice(_) => FileType::CharDevice,
            TarKind::BlockDevice(_) => FileType::BlockDevice,
            TarKind::Fifo => FileType::Fifo,
        }
    }

    /// Metadata for the object this entry creates (atime and ctime are the
    /// mtime; a tar from `docker save` or a registry carries neither).
    #[must_use]
    pub fn metadata(&self) -> Metadata {
        let mut meta = Metadata::new(self.file_type())
            .with_mode(self.mode)
            .with_owner(self.uid, self.gid)
            .with_times(self.mtime);
        meta.rdev = match self.kind {
            TarKind::CharDevice(rdev) | TarKind::BlockDevice(rdev) => rdev,
            _ => 0,
        };
        meta.size = match &self.kind {
            TarKind::File => self.size,
            TarKind::Symlink(target) => target.len() as u64,
            _ => 0,
        };
        meta.xattrs = self.xattrs.clone();
        meta
    }
}

/// Reads the entries of an uncompressed tar stream one at a time; file data
/// is read with [`TarReader::read_data`] and never buffered whole.
pub struct TarReader<R: Read> {
    inner: R,
    limits: Limits,
    /// Bytes read from `inner`.
    consumed: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    entries: u64,
    ended: bool,
}

impl<R: Read> std::fmt::Debug for TarReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarReader")
            .field("consumed", &self.consumed)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// The extended headers that apply to the next entry.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl<R: Read> TarReader<R> {
    /// Reads the tar in `inner` under `limits`.
    pub fn new(inner: R, limits: Limits) -> TarReader<R> {
        TarReader {
            inner,
            limits,
            consumed: 0,
            remaining: 0,
            padding: 0,
            entries: 0,
            ended: false,
        }
    }

    /// Bytes of the stream read so far.
    pub fn bytes_read(&self) -> u64 {
        self.consumed
    }

    /// Entries returned so far.
    pub fn entries_read(&self) -> u64 {
        self.entries
    }

    fn error(&self, kind: ErrorKind, name: &str, detail: impl Into<String>) -> Error {
        let name = if name.is_empty() {
            format!("<header at byte {}>", self.consumed.saturating_sub(BLOCK))
        } else {
            name.to_owned()
        };
        Error::new(kind, Operation::ImportLayer, name).with_detail(detail)
    }

    fn io_error(&self, err: &io::Error, name: &str) -> Error {
        let kind = if err.kind() == io::ErrorKind::InvalidData {
            ErrorKind::InvalidData
        } else {
            err.raw_os_error()
                .and_then(ErrorKind::from_errno)
                .unwrap_or(ErrorKind::Io)
        };
        self.error(kind, name, format!("reading the layer: {err}"))
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ends
    /// before the first byte.
    fn read_block(&mut self, buf: &mut [u8], name: &str) -> Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read_inner(&mut buf[filled..], name)?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(self.error(
                    ErrorKind::InvalidData,
                    name,
                    "the tar is truncated inside a header",
                ));
            }
            filled += n;
        }
        Ok(true)
    }

    fn read_inner(&mut self, buf: &mut [u8], name: &str) -> Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(&e, name)),
            }
        };
        self.consumed += n as u64;
        if self.consumed > self.limits.max_bytes {
            return Err(self.error(
                ErrorKind::LimitExceeded,
                name,
                format!(
                    "the layer is larger than the limit of {} bytes uncompressed",
                    self.limits.max_bytes
                ),
            ));
        }
        Ok(n)
    }

    /// Reads and drops `n` bytes.
    fn skip(&mut self, mut n: u64, name: &str) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = usize::try_from(n.min(buf.len() as u64)).unwrap_or(buf.len());
            let got = self.read_inner(&mut buf[..want], name)?;
            if got == 0 {
                return Err(self.error(ErrorKind::InvalidData, name, "the tar is truncated"));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads an extended header's data (size checked against the limit
    /// first) and its padding.
    fn read_extension(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > self.limits.max_header_bytes {
            return Err(self.error(
                ErrorKind::LimitExceeded,
                "",
                format!(
                    "{what} of {size} bytes is larger than the limit of {} bytes",
                    self.limits.max_header_bytes
                ),
            ));
        }
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let mut data = vec![0u8; len];
        if !self.read_block(&mut data, "")? && len > 0 {
            return Err(self.error(ErrorKind::InvalidData, "", "the tar is truncated"));
        }
        self.skip(pad(size), "")?;
        Ok(data)
    }

    /// The next entry, skipping whatever is left of the current one.
    ///
    /// # Errors
    /// `EBADMSG` for a malformed or truncated tar, `EDQUOT` when a limit is
    /// exceeded, `EINVAL` for a name with `..`, `EOPNOTSUPP` for sparse
    /// files and unknown entry types, and errors of the stream.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        if self.ended {
            return Ok(None);
        }
        let rest = self.remaining + self.padding;
        self.skip(rest, "")?;
        self.remaining = 0;
        self.padding = 0;
        let mut pending = Pending::default();
        loop {
            let mut block = [0u8; BLOCK as usize];
            if !self.read_block(&mut block, "")? {
                if pending.pax.is_some()
                    || pending.long_name.is_some()
                    || pending.long_link.is_some()
                {
                    return Err(self.error(
                        ErrorKind::InvalidData,
                        "",
                        "the tar ends after an extended header, without its entry",
                    ));
                }
                // No end-of-archive blocks: accepted, as GNU tar and Go do.
                self.ended = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                self.ended = true;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            self.check_checksum(header)?;
            let size = header.entry_size().map_err(|e| {
                self.error(ErrorKind::InvalidData, "", format!("bad size field: {e}"))
            })?;
            let type_byte = block[156];
            match type_byte {
                b'x' => {
                    if pending.pax.is_some() {
                        return Err(self.error(
                            ErrorKind::InvalidData,
                            "",
                            "two PAX extended headers for one entry",
                        ));
                    }
                    pending.pax = Some(self.read_extension(size, "a PAX extended header")?);
                }
                b'g' => {
                    // Global defaults (git archive writes a comment here):
                    // read under the limit and ignored.
                    self.read_extension(size, "a PAX global header")?;
                }
                b'L' => {
                    if pending.long_name.is_some() {
                        return Err(self.error(
                            ErrorKind::InvalidData,
                            "",
                            "two GNU long names for one entry",
                        ));
                    }
                    pending.long_name =
                        Some(trim_nul(self.read_extension(size, "a GNU long name")?));
                }
                b'K' => {
                    if pending.long_link.is_some() {
                        return Err(self.error(
                            ErrorKind::InvalidData,
                            "",
                            "two GNU long link names for one entry",
                        ));
                    }
                    pending.long_link =
                        Some(trim_nul(self.read_extension(size, "a GNU long link name")?));
                }
                b'V' => {
                    // A volume label: not a file.
                    self.skip(size + pad(size), "")?;
                }
                _ => return self.entry(header, type_byte, size, pending).map(Some),
            }
        }
    }

    fn check_checksum(&self, header: &tar::Header) -> Result<()> {
        let bytes = header.as_bytes();
        let stored = header.cksum().map_err(|e| {
            self.error(
                ErrorKind::InvalidData,
                "",
                format!("bad checksum field: {e}"),
            )
        })?;
        let unsigned: u32 = bytes[..148]
            .iter()
            .chain(&bytes[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        // Some old writers summed signed bytes; GNU tar and Go accept both.
        let signed: i64 = bytes[..148]
            .iter()
            .chain(&bytes[156..])
            .map(|&b| i64::from(b as i8))
            .sum::<i64>()
            + 8 * 32;
        if stored != unsigned && i64::from(stored) != signed {
            return Err(self.error(
                ErrorKind::InvalidData,
                "",
                "header checksum mismatch (not a tar, or a corrupt one)",
            ));
        }
        Ok(())
    }

    fn entry(
        &mut self,
        header: &tar::Header,
        type_byte: u8,
        header_size: u64,
        pending: Pending,
    ) -> Result<TarEntry> {
        let pax: Vec<(String, Vec<u8>)> = match &pending.pax {
            Some(data) => self.parse_pax(data)?,
            None => Vec::new(),
        };
        let pax_get = |key: &str| {
            pax.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_slice())
        };

        let raw_name: Vec<u8> = match (pax_get("path"), &pending.long_name) {
            (Some(p), _) => p.to_vec(),
            (None, Some(long)) => long.clone(),
            (None, None) => header.path_bytes().into_owned(),
        };
        let name = String::from_utf8(raw_name).map_err(|e| {
            self.error(
                ErrorKind::InvalidData,
                &String::from_utf8_lossy(e.as_bytes()),
                "the name is not UTF-8",
            )
        })?;

        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.error(
                ErrorKind::LimitExceeded,
                &name,
                format!(
                    "the layer has more than {} entries",
                    self.limits.max_entries
                ),
            ));
        }
        if pax.iter().any(|(k, _)| k.starts_with("GNU.sparse.")) || type_byte == b'S' {
            return Err(self.error(
                ErrorKind::Unsupported,
                &name,
                "GNU sparse files are not supported",
            ));
        }

        let size = match pax_get("size") {
            Some(v) => {
                let pax_size = parse_decimal(v)
                    .ok_or_else(|| self.error(ErrorKind::InvalidData, &name, "bad PAX size"))?;
                if header_size != 0 && header_size != pax_size {
                    return Err(self.error(
                        ErrorKind::InvalidData,
                        &name,
                        format!(
                            "PAX size {pax_size} disagrees with the header's size {header_size}"
                        ),
                    ));
                }
                pax_size
            }
            None => header_size,
        };
        // From here the framing is settled: the caller may skip this entry.
        self.remaining = size;
        self.padding = pad(size);

        let path = self.normalise(&name)?;
        let id = |key: &str, from_header: io::Result<u64>| -> Result<u32> {
            let value = match pax_get(key) {
                Some(v) => parse_decimal(v),
                None => from_header.ok(),
            };
            value
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| self.error(ErrorKind::InvalidData, &name, format!("bad {key}")))
        };
        let uid = id("uid", header.uid())?;
        let gid = id("gid", header.gid())?;
        let mtime = match pax_get("mtime") {
            Some(v) => parse_pax_time(v)
                .ok_or_else(|| self.error(ErrorKind::InvalidData, &name, "bad PAX mtime"))?,
            None => {
                let secs = header
                    .mtime()
                    .map_err(|_| self.error(ErrorKind::InvalidData, &name, "bad mtime field"))?;
                Timestamp::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)
            }
        };
        let mode = header
            .mode()
            .map_err(|_| self.error(ErrorKind::InvalidData, &name, "bad mode field"))?
            & 0o7777;

        let link_target = || -> Result<String> {
            let raw: Vec<u8> = match (pax_get("linkpath"), &pending.long_link) {
                (Some(p), _) => p.to_vec(),
                (None, Some(long)) => long.clone(),
                (None, None) => header
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default(),
            };
            String::from_utf8(raw).map_err(|_| {
                self.error(
                    ErrorKind::InvalidData,
                    &name,
                    "the link target is not UTF-8",
                )
            })
        };
        let device = || -> Result<u64> {
            let major = header.device_major().ok().flatten();
            let minor = header.device_minor().ok().flatten();
            match (major, minor) {
                (Some(ma), Some(mi)) => Ok(makedev(ma, mi)),
                _ => Err(self.error(ErrorKind::InvalidData, &name, "bad device number fields")),
            }
        };
        let kind = match type_byte {
            b'0' | b'\0' | b'7' if name.ends_with('/') => TarKind::Dir,
            b'0' | b'\0' | b'7' => TarKind::File,
            b'5' => TarKind::Dir,
            b'2' => {
                let target = link_target()?;
                if target.is_empty() || target.contains('\0') {
                    return Err(self.error(ErrorKind::InvalidData, &name, "empty symlink target"));
                }
                TarKind::Symlink(target)
            }
            b'1' => {
                let target = link_target()?;
                TarKind::HardLink(self.normalise(&target).map_err(|e| {
                    self.error(
                        e.kind(),
                        &name,
                        format!("bad hard link target `{target}`: {}", detail_of(&e)),
                    )
                })?)
            }
            b'3' => TarKind::CharDevice(device()?),
            b'4' => TarKind::BlockDevice(device()?),
            b'6' => TarKind::Fifo,
            b'M' => {
                return Err(self.error(
                    ErrorKind::Unsupported,
                    &name,
                    "multi-volume archives are not supported",
                ));
            }
            other => {
                return Err(self.error(
                    ErrorKind::Unsupported,
                    &name,
                    format!(
                        "unknown tar entry type `{}`",
                        char::from(other).escape_default()
                    ),
                ));
            }
        };
        // Data on a directory, link or device means nothing; it is skipped
        // (the framing already follows it).

        let mut xattrs = Xattrs::new();
        for (key, value) in &pax {
            if let Some(xname) = key.strip_prefix("SCHILY.xattr.") {
                // A Linux xattr name is a C string: a NUL in it names
                // another attribute than the one recorded (found by the
                // tar_import fuzz target: export then refused the layer).
                if xname.contains('\0') {
                    return Err(self.error(
                        ErrorKind::InvalidData,
                        &name,
                        format!(
                            "extended attribute name `{}` contains a NUL byte",
                            xname.escape_default()
                        ),
                    ));
                }
                xattrs.insert(xname.to_owned(), Bytes::copy_from_slice(value));
            }
        }
        Ok(TarEntry {
            path,
            name,
            size: if kind == TarKind::File { size } else { 0 },
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// Parses PAX records, `"%d %s=%s\n"` where the length counts the
    /// whole record. The length drives the parse, so values may hold any
    /// byte, newlines included (binary xattrs such as
    /// `security.capability` do); `tar::PaxExtensions` splits on newlines
    /// and would misread them.
    fn parse_pax(&self, data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        let bad = |why: &str| {
            self.error(
                ErrorKind::InvalidData,
                "",
                format!("malformed PAX record: {why}"),
            )
        };
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            // Some writers pad the data with NULs.
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let space = rest
                .iter()
                .take(20)
                .position(|&b| b == b' ')
                .ok_or_else(|| bad("no length"))?;
            let len = parse_decimal(&rest[..space]).ok_or_else(|| bad("bad length"))?;
            let len = usize::try_from(len).map_err(|_| bad("bad length"))?;
            if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(bad("length does not match the record"));
            }
            let record = &rest[space + 1..len - 1];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| bad("no `=`"))?;
            let key = std::str::from_utf8(&record[..eq]).map_err(|_| bad("a key is not UTF-8"))?;
            if key.is_empty() {
                return Err(bad("empty key"));
            }
            out.push((key.to_owned(), record[eq + 1..].to_vec()));
            rest = &rest[len..];
        }
        Ok(out)
    }

    /// A tar name as a layer path.
    fn normalise(&self, name: &str) -> Result<LayerPath> {
        let mut names = Vec::new();
        for part in name.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(self.error(
                        ErrorKind::InvalidInput,
                        name,
                        "the name contains `..` (it could reach outside the layer)",
                    ));
                }
                n => names.push(n),
            }
        }
        if names.len() > self.limits.max_path_depth {
            return Err(self.error(
                ErrorKind::LimitExceeded,
                name,
                format!(
                    "the path is deeper than the limit of {} components",
                    self.limits.max_path_depth
                ),
            ));
        }
        LayerPath::from_names(names.iter().copied())
            .map_err(|e| self.error(e.kind(), name, detail_of(&e)))
    }

    /// Reads data of the current entry; 0 at its end.
    ///
    /// # Errors
    /// `EBADMSG` if the stream ends early, `EDQUOT` past the byte limit,
    /// and errors of the stream.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = self.read_inner(&mut buf[..want], "")?;
        if n == 0 {
            return Err(self.error(
                ErrorKind::InvalidData,
                "",
                "the tar is truncated inside the file's data",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads the rest of the stream after the end of the archive (so that
    /// a digest over it covers every byte), then returns the inner reader.
    ///
    /// # Errors
    /// Errors of the stream, and `EDQUOT` past the byte limit.
    pub fn finish(mut self) -> Result<R> {
        while !self.ended {
            self.next_entry()?;
        }
        let mut buf = [0u8; 8192];
        while self.read_inner(&mut buf, "")? > 0 {}
        Ok(self.inner)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn detail_of(e: &Error) -> String {
    let s = e.to_string();
    match s.split_once("`: ") {
        Some((_, d)) => d.to_owned(),
        None => s,
    }
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time: `[-]SECONDS[.FRACTION]`.
fn parse_pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut nsec: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nsec += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(if !neg {
        Timestamp::new(secs, nsec)
    } else if nsec == 0 {
        Timestamp::new(-secs, 0)
    } else {
        Timestamp::new(-secs - 1, 1_000_000_000 - nsec)
    })
}
