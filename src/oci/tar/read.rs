use std::collections::BTreeMap;
use std::io::{self, Read};

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::meta::{FileType, Metadata, Timestamp, Xattrs, makedev};
use crate::path::{LayerPath, NameBuf, escape_name};

use super::name;

const BLOCK: u64 = 512;

/// Limits on a layer tar, checked while it streams. The defaults are far
/// above any real image layer and far below what exhausts a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Entries in the tar (extended headers not counted). Default 1,000,000.
    pub max_entries: u64,
    /// Bytes of the uncompressed tar, plus the holes of sparse files (so
    /// the logical size of what the tar holds counts). Default 64 GiB.
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
    pub fn max_entries(mut self, n: u64) -> Limits {
        self.max_entries = n;
        self
    }

    /// Sets [`Limits::max_bytes`].
    #[must_use]
    pub fn max_bytes(mut self, n: u64) -> Limits {
        self.max_bytes = n;
        self
    }

    /// Sets [`Limits::max_header_bytes`].
    #[must_use]
    pub fn max_header_bytes(mut self, n: u64) -> Limits {
        self.max_header_bytes = n;
        self
    }

    /// Sets [`Limits::max_path_depth`].
    #[must_use]
    pub fn max_path_depth(mut self, n: usize) -> Limits {
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
    /// A symlink with this target (its bytes, verbatim).
    Symlink(NameBuf),
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
    /// The name as the archive spells it: its bytes, exactly.
    pub name: NameBuf,
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
    /// The size of a regular file (its logical size when sparse); 0 for
    /// every other type, whatever the header's size field says.
    pub size: u64,
    /// The data regions of a sparse file (offset, length), in order; the
    /// rest of the file is holes. `None` for a file stored whole.
    pub sparse: Option<Vec<(u64, u64)>>,
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

    /// Bytes of data the tar stores for this entry: the size of a regular
    /// file, or the sum of its data regions when it is sparse.
    #[must_use]
    pub fn stored_size(&self) -> u64 {
        match &self.sparse {
            Some(regions) => regions.iter().map(|&(_, len)| len).sum(),
            None => self.size,
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
///
/// A streaming reader of layer tars, with limits, that reads what Go's
/// `archive/tar` reads.
///
/// Docker, containerd, umoci and skopeo read layers with Go's
/// `archive/tar`; two parsers that see two different layers in one tar are
/// a security hole, so this reader follows Go's wherever they could differ
/// (checked by a differential test against a Go lister,
/// `tests/it/oci/tar_diff.rs`):
///
/// - Header formats: the format is told by the magic and version fields as
///   Go tells it. `ustar\0` (any version) joins the prefix field and the
///   name; star (`tar\0` trailer) uses its shorter prefix; GNU (`ustar `,
///   ` \0`) has no prefix, except in headers written by Go before 1.8,
///   whose atime/ctime fields hold a prefix: when those fields are not
///   numbers and the prefix is ASCII, it is joined as Go joins it.
/// - Numbers: octal with leading and trailing spaces and NULs ignored
///   (a field all NUL is 0), or base-256 (GNU); PAX numbers are decimal of
///   any length with an optional sign.
/// - Hard links, symlinks, directories, devices, fifos and old-style
///   `name/` directories never carry data, whatever their size field says,
///   so the entries after them are never hidden as "data".
/// - PAX records: the last of two PAX headers (or GNU long names) before
///   one entry wins, empty values keep the header's field, a GNU long name
///   wins over a PAX `path`; a PAX global header applies to nothing and
///   drops the extended headers before it. A volume label (`V`) is
///   refused, as Docker and containerd refuse it.
/// - Sparse files (old GNU type `S` and the PAX formats 0.0, 0.1 and 1.0)
///   are read with their holes kept: [`TarEntry::sparse`] lists the data
///   regions and [`TarReader::data_offset`] tells where each piece of data
///   goes, so a back end never writes the zeros of a hole.
/// - The end: two zero blocks, one zero block and the end of the stream,
///   or the end of the stream at a header or inside padding. A zero block
///   followed by a header is refused.
///
/// Where this reader is stricter than Go's (all written down in
/// `docs/semantics.md`): a PAX `size` that disagrees with a non-zero header
/// size on a regular file is refused, since two parsers that frame the
/// stream differently see two different layers; extended attribute names
/// must be UTF-8; owners and device numbers must fit in 32 bits; a name
/// with a `..` component, unknown entry types and multi-volume archives
/// are refused. Names, link targets and hard-link targets are bytes, kept
/// exactly as every framing stores them (`name.rs` says how the real
/// tools write and read them).
///
/// Every limit is checked *before* anything is read into memory: PAX
/// extended headers and GNU long names larger than
/// [`Limits::max_header_bytes`] are refused before they are read, and every
/// byte of the uncompressed stream, plus the holes of sparse files, counts
/// against [`Limits::max_bytes`], so neither a decompression bomb nor a
/// sparse file of a huge logical size gets past the limit.
///
/// Names are normalised into a [`LayerPath`]: a leading `/` and `./` are
/// dropped (as GNU tar does), empty and `.` components are dropped, and a
/// `..` component is refused.
pub struct TarReader<R: Read> {
    inner: R,
    limits: Limits,
    /// Bytes read from `inner`.
    consumed: u64,
    /// Bytes of holes of the sparse files so far (counted with `consumed`
    /// against the byte limit).
    holes: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// Where the last header read starts (for messages).
    header_at: u64,
    /// The data regions of the current entry still to read: (logical
    /// offset, length), the first one partly read.
    regions: std::collections::VecDeque<(u64, u64)>,
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

/// PAX records, the last value of a key winning (as Go's map).
type PaxRecords = BTreeMap<Vec<u8>, Vec<u8>>;

const SPARSE_MAP: &[u8] = b"GNU.sparse.map";

/// A sparse file's map as read: the name it gives (PAX formats), its
/// logical size, and its data regions (offset, length), still unchecked.
type SparseInfo = (Option<Vec<u8>>, i64, Vec<(i64, i64)>);

/// The extended headers that apply to the next entry.
#[derive(Default)]
struct Pending {
    pax: Option<PaxRecords>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// The header formats, told apart as Go's `archive/tar` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Star,
    Gnu,
}

/// The fields of one 512-byte header, parsed as Go parses them; an error
/// in any numeric field is kept until the header is used (Go reports it
/// for every header type).
struct Header {
    block: [u8; BLOCK as usize],
    type_byte: u8,
    /// Name with the prefix joined, up to the first NUL.
    name: Vec<u8>,
    link: Vec<u8>,
    size: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    mtime: i64,
    major: i64,
    minor: i64,
    /// The first numeric field that is not a number.
    bad_field: Option<&'static str>,
}

impl Header {
    fn parse(block: [u8; BLOCK as usize], format: Format) -> Header {
        let mut bad_field = None;
        let mut num = |range: std::ops::Range<usize>, what: &'static str| {
            parse_numeric(&block[range]).unwrap_or_else(|| {
                bad_field.get_or_insert(what);
                0
            })
        };
        let size = num(124..136, "size");
        let mode = num(100..108, "mode");
        let uid = num(108..116, "uid");
        let gid = num(116..124, "gid");
        let mtime = num(136..148, "mtime");
        let (major, minor) = if format == Format::V7 {
            (0, 0)
        } else {
            (num(329..337, "devmajor"), num(337..345, "devminor"))
        };
        if format == Format::Star {
            // Go reads star's atime and ctime as numbers like the others.
            num(476..488, "atime");
            num(488..500, "ctime");
        }
        let mut name = cstr(&block[..100]).to_vec();
        let prefix: &[u8] = match format {
            Format::V7 => b"",
            Format::Ustar => cstr(&block[345..500]),
            Format::Star => cstr(&block[345..476]),
            Format::Gnu => {
                // Go before 1.8 wrote a ustar prefix over GNU's atime and
                // ctime; Go reads it back when those are not numbers.
                let time_ok = |r: std::ops::Range<usize>| {
                    block[r.start] == 0 || parse_numeric(&block[r]).is_some()
                };
                let prefix = cstr(&block[345..500]);
                if !(time_ok(345..357) && time_ok(357..369)) && prefix.is_ascii() {
                    prefix
                } else {
                    b""
                }
            }
        };
        if !prefix.is_empty() {
            let mut joined = prefix.to_vec();
            joined.push(b'/');
            joined.extend_from_slice(&name);
            name = joined;
        }
        Header {
            type_byte: block[156],
            link: cstr(&block[157..257]).to_vec(),
            name,
            size,
            mode,
            uid,
            gid,
            mtime,
            major,
            minor,
            bad_field,
            block,
        }
    }
}

/// Types whose size field never frames data (Go's `isHeaderOnlyType`).
fn header_only(type_byte: u8) -> bool {
    matches!(type_byte, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

impl<R: Read> TarReader<R> {
    /// Reads the tar in `inner` under `limits`.
    pub fn new(inner: R, limits: Limits) -> TarReader<R> {
        TarReader {
            inner,
            limits,
            consumed: 0,
            holes: 0,
            remaining: 0,
            padding: 0,
            header_at: 0,
            regions: std::collections::VecDeque::new(),
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

    /// An error about the entry `name` (its bytes as the archive holds
    /// them), or about the header just read when `name` is empty.
    fn error(&self, kind: ErrorKind, name: &[u8], detail: impl Into<String>) -> Error {
        if name.is_empty() {
            let at = format!("<header at byte {}>", self.header_at);
            return Error::new(kind, Operation::ImportLayer, at).with_detail(detail);
        }
        Error::new(kind, Operation::ImportLayer, name).with_detail(detail)
    }

    /// An error about the header just read, named by its position (its
    /// name may be what is wrong).
    fn header_error(&self, detail: impl Into<String>) -> Error {
        self.error(ErrorKind::InvalidData, b"", detail)
    }

    fn io_error(&self, err: &io::Error, name: &[u8]) -> Error {
        let kind = if err.kind() == io::ErrorKind::InvalidData {
            ErrorKind::InvalidData
        } else {
            err.raw_os_error()
                .and_then(ErrorKind::from_errno)
                .unwrap_or(ErrorKind::Io)
        };
        self.error(kind, name, format!("reading the layer: {err}"))
    }

    /// Fills `buf`; the number of bytes read, less only at the end of the
    /// stream.
    fn fill(&mut self, buf: &mut [u8], name: &[u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read_inner(&mut buf[filled..], name)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ends
    /// before the first byte.
    fn read_block(&mut self, buf: &mut [u8], name: &[u8]) -> Result<bool> {
        match self.fill(buf, name)? {
            0 if !buf.is_empty() => Ok(false),
            n if n == buf.len() => Ok(true),
            _ => Err(self.error(
                ErrorKind::InvalidData,
                name,
                "the tar is truncated inside a header",
            )),
        }
    }

    fn read_inner(&mut self, buf: &mut [u8], name: &[u8]) -> Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(&e, name)),
            }
        };
        self.consumed += n as u64;
        self.check_bytes(name)?;
        Ok(n)
    }

    fn check_bytes(&self, name: &[u8]) -> Result<()> {
        if self.consumed.saturating_add(self.holes) > self.limits.max_bytes {
            let holes = if self.holes > 0 {
                " (holes of sparse files included)"
            } else {
                ""
            };
            return Err(self.error(
                ErrorKind::LimitExceeded,
                name,
                format!(
                    "the layer is larger than the limit of {} bytes uncompressed{holes}",
                    self.limits.max_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Reads and drops `n` bytes; the number dropped (less only at the end
    /// of the stream).
    fn skip(&mut self, mut n: u64, name: &[u8]) -> Result<u64> {
        let mut buf = [0u8; 8192];
        let mut dropped = 0;
        while n > 0 {
            let want = usize::try_from(n.min(buf.len() as u64)).unwrap_or(buf.len());
            let got = self.read_inner(&mut buf[..want], name)?;
            if got == 0 {
                break;
            }
            n -= got as u64;
            dropped += got as u64;
        }
        Ok(dropped)
    }

    /// Reads an extended header's data (size checked against the limit
    /// first); its padding is skipped with the next header.
    fn read_extension(&mut self, size: i64, what: &str) -> Result<Vec<u8>> {
        let size = u64::try_from(size)
            .map_err(|_| self.header_error(format!("{what} has a negative size ({size})")))?;
        if size > self.limits.max_header_bytes {
            return Err(self.error(
                ErrorKind::LimitExceeded,
                b"",
                format!(
                    "{what} of {size} bytes is larger than the limit of {} bytes",
                    self.limits.max_header_bytes
                ),
            ));
        }
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let mut data = vec![0u8; len];
        if self.fill(&mut data, b"")? < len {
            return Err(self.header_error(format!("the tar is truncated inside {what}")));
        }
        self.padding = pad(size);
        Ok(data)
    }

    /// Skips what is left of the current entry and its padding; `false`
    /// if the stream ended inside the padding (an end, as for Go).
    fn skip_rest(&mut self) -> Result<bool> {
        let rest = self.remaining;
        if self.skip(rest, b"")? < rest {
            return Err(self.header_error("the tar is truncated inside an entry's data"));
        }
        self.remaining = 0;
        self.regions.clear();
        let padding = std::mem::take(&mut self.padding);
        Ok(self.skip(padding, b"")? == padding)
    }

    /// The next entry, skipping whatever is left of the current one.
    ///
    /// # Errors
    /// `EBADMSG` for a malformed or truncated tar, `EDQUOT` when a limit is
    /// exceeded, `EINVAL` for a name with `..`, `EOPNOTSUPP` for unknown
    /// entry types, and errors of the stream.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        if self.ended {
            return Ok(None);
        }
        let mut pending = Pending::default();
        loop {
            if !self.skip_rest()? {
                self.ended = true;
                return Ok(None);
            }
            let mut block = [0u8; BLOCK as usize];
            self.header_at = self.consumed;
            if !self.read_block(&mut block, b"")? {
                // The end of the stream at a header: the end of the archive
                // (Go and GNU tar accept a tar without end blocks; extended
                // headers left without their entry apply to nothing).
                self.ended = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                let mut second = [0u8; BLOCK as usize];
                if self.read_block(&mut second, b"")? && second.iter().any(|&b| b != 0) {
                    return Err(self.header_error(
                        "a zero block (the end of the archive) is followed by a header",
                    ));
                }
                self.ended = true;
                return Ok(None);
            }
            let format = self.check_header(&block)?;
            let header = Header::parse(block, format);
            if let Some(field) = header.bad_field {
                return Err(self.header_error(format!(
                    "the {field} field is not a number: `{}`",
                    escape_bytes(field_bytes(&header.block, field))
                )));
            }
            match header.type_byte {
                b'x' => {
                    let data = self.read_extension(header.size, "a PAX extended header")?;
                    pending.pax = Some(self.parse_pax(&data)?);
                }
                b'g' => {
                    // Global defaults (git archive writes a comment here):
                    // parsed, applied to nothing, and (as in Go) the end of
                    // the extended headers read so far.
                    let data = self.read_extension(header.size, "a PAX global header")?;
                    self.parse_pax(&data)?;
                    pending = Pending::default();
                }
                b'L' => {
                    let data = self.read_extension(header.size, "a GNU long name")?;
                    pending.long_name = Some(cstr(&data).to_vec());
                }
                b'K' => {
                    let data = self.read_extension(header.size, "a GNU long link name")?;
                    pending.long_link = Some(cstr(&data).to_vec());
                }
                _ => {
                    if let Some(entry) = self.entry(header, format, std::mem::take(&mut pending))? {
                        return Ok(Some(entry));
                    }
                }
            }
        }
    }

    /// Checks the header's checksum and tells its format.
    fn check_header(&self, block: &[u8; BLOCK as usize]) -> Result<Format> {
        let field = &block[148..156];
        let stored = parse_octal(field).ok_or_else(|| {
            self.header_error(format!(
                "the checksum field is not a number: `{}` (not a tar, or a corrupt one)",
                escape_bytes(field)
            ))
        })?;
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, &b) in block.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += i64::from(b);
            // Some old writers summed signed bytes; GNU tar and Go accept
            // both.
            signed += i64::from(b as i8);
        }
        if stored != unsigned && stored != signed {
            return Err(self.header_error("header checksum mismatch (not a tar, or a corrupt one)"));
        }
        let magic = &block[257..263];
        let version = &block[263..265];
        Ok(if magic == b"ustar\0" && &block[508..512] == b"tar\0" {
            Format::Star
        } else if magic == b"ustar\0" {
            Format::Ustar
        } else if magic == b"ustar " && version == b" \0" {
            Format::Gnu
        } else {
            Format::V7
        })
    }

    /// The entry of `header`, with its extended headers applied (`None` is
    /// kept for entries that are no file and are skipped).
    fn entry(
        &mut self,
        header: Header,
        format: Format,
        pending: Pending,
    ) -> Result<Option<TarEntry>> {
        let pax = pending.pax.unwrap_or_default();
        // An empty PAX value keeps the header's field, as in Go.
        let pax_get = |key: &str| {
            pax.get(key.as_bytes())
                .map(Vec::as_slice)
                .filter(|v| !v.is_empty())
        };
        let mut raw_name = header.name.clone();
        if let Some(p) = pax_get("path") {
            raw_name = p.to_vec();
        }
        if let Some(long) = pending.long_name.filter(|l| !l.is_empty()) {
            raw_name = long;
        }
        let mut raw_link = header.link.clone();
        if let Some(p) = pax_get("linkpath") {
            raw_link = p.to_vec();
        }
        if let Some(long) = pending.long_link.filter(|l| !l.is_empty()) {
            raw_link = long;
        }

        let bad_pax = |key: &str| {
            self.header_error(format!(
                "the PAX record `{key}` is not a number: `{}`",
                escape_bytes(pax_get(key).unwrap_or_default())
            ))
        };
        let pax_num = |key: &str, header_value: i64| -> Result<i64> {
            match pax_get(key) {
                Some(v) => parse_go_int(v).ok_or_else(|| bad_pax(key)),
                None => Ok(header_value),
            }
        };
        // Go frames the header's own size before it applies the extended
        // headers or reads a type-NUL name ending in `/` as a directory.
        if !header_only(header.type_byte) && header.size < 0 {
            return Err(self.header_error(format!(
                "the entry `{}` has a negative size ({})",
                escape_bytes(&raw_name),
                header.size
            )));
        }
        let mut type_byte = header.type_byte;
        if type_byte == b'\0' && raw_name.ends_with(b"/") {
            // Old archives mark directories by a trailing slash.
            type_byte = b'5';
        }
        let size = pax_num("size", header.size)?;
        let data_size = if header_only(type_byte) { 0 } else { size };
        let data_size = u64::try_from(data_size).map_err(|_| {
            self.header_error(format!(
                "the entry `{}` has a negative size ({size})",
                escape_bytes(&raw_name)
            ))
        })?;
        if let Some(v) = pax_get("size")
            && !header_only(type_byte)
            && header.size != 0
            && header.size != size
        {
            return Err(self.error(
                ErrorKind::InvalidData,
                &raw_name,
                format!(
                    "PAX size {} disagrees with the header's size {}",
                    escape_bytes(v),
                    header.size
                ),
            ));
        }
        let uid = pax_num("uid", header.uid)?;
        let gid = pax_num("gid", header.gid)?;
        for key in ["atime", "ctime"] {
            if let Some(v) = pax_get(key)
                && parse_pax_time(v).is_none()
            {
                return Err(self.header_error(format!(
                    "the PAX record `{key}` is not a time: `{}`",
                    escape_bytes(v)
                )));
            }
        }
        let mtime = match pax_get("mtime") {
            Some(v) => parse_pax_time(v).ok_or_else(|| {
                self.header_error(format!(
                    "the PAX record `mtime` is not a time: `{}`",
                    escape_bytes(v)
                ))
            })?,
            None => Timestamp::new(header.mtime, 0),
        };

        // From here the framing is settled (the sparse maps below read
        // more): the caller may skip this entry.
        self.remaining = data_size;
        self.padding = pad(data_size);

        let sparse_info = if type_byte == b'S' {
            Some(self.old_gnu_sparse(&header, format)?)
        } else {
            self.pax_sparse(&pax)?
        };
        if let Some((Some(name), _, _)) = &sparse_info {
            raw_name = name.clone();
        }
        if type_byte == b'V' {
            // GNU tar skips a volume label; Docker and containerd refuse
            // the layer ("unhandled tar header type"), and so does this
            // reader, so that no layer applies here that fails there.
            return Err(self.error(
                ErrorKind::Unsupported,
                &raw_name,
                "a volume label (type `V`) is not a file: Docker refuses such a layer too",
            ));
        }

        // Every name below is the archive's bytes, as they are.
        let name = raw_name.clone();
        let name = name.as_slice();

        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.error(
                ErrorKind::LimitExceeded,
                name,
                format!(
                    "the layer has more than {} entries",
                    self.limits.max_entries
                ),
            ));
        }

        let mut logical = data_size;
        let mut sparse = None;
        if let Some((_, logical_size, regions)) = sparse_info {
            if header_only(type_byte) {
                return Err(self.error(
                    ErrorKind::InvalidData,
                    name,
                    "a sparse map on an entry that carries no data",
                ));
            }
            let regions = self.check_sparse(name, logical_size, regions, true)?;
            logical = u64::try_from(logical_size).unwrap_or_default();
            let stored: u64 = regions.iter().map(|&(_, len)| len).sum();
            self.holes += logical - stored;
            self.check_bytes(name)?;
            self.regions = regions.iter().copied().collect();
            sparse = Some(regions);
        } else if data_size > 0 {
            self.regions.push_back((0, data_size));
        }

        let path = self.normalise(&raw_name)?;
        let id = |key: &str, value: i64| -> Result<u32> {
            u32::try_from(value).map_err(|_| {
                self.error(
                    ErrorKind::InvalidData,
                    name,
                    format!("the {key} {value} does not fit in 32 bits"),
                )
            })
        };
        let uid = id("uid", uid)?;
        let gid = id("gid", gid)?;
        // Go keeps all the bits; a mode is the permission bits and the
        // file type is the type flag.
        let mode = (header.mode as u64 & 0o7777) as u32;

        let device = || -> Result<u64> {
            match (u32::try_from(header.major), u32::try_from(header.minor)) {
                (Ok(ma), Ok(mi)) => Ok(makedev(ma, mi)),
                _ => Err(self.error(
                    ErrorKind::InvalidData,
                    name,
                    format!(
                        "device number {}:{} does not fit in 32 bits",
                        header.major, header.minor
                    ),
                )),
            }
        };
        let kind = match type_byte {
            b'0' | b'\0' | b'7' | b'S' => TarKind::File,
            b'5' => TarKind::Dir,
            b'2' => {
                if raw_link.is_empty() {
                    return Err(self.error(ErrorKind::InvalidData, name, "empty symlink target"));
                }
                TarKind::Symlink(NameBuf::from(raw_link))
            }
            b'1' => TarKind::HardLink(self.normalise(&raw_link).map_err(|e| {
                self.error(
                    e.kind(),
                    name,
                    format!(
                        "bad hard link target `{}`: {}",
                        escape_name(&raw_link),
                        e.cause()
                    ),
                )
            })?),
            b'3' => TarKind::CharDevice(device()?),
            b'4' => TarKind::BlockDevice(device()?),
            b'6' => TarKind::Fifo,
            b'M' => {
                return Err(self.error(
                    ErrorKind::Unsupported,
                    name,
                    "multi-volume archives are not supported",
                ));
            }
            other => {
                return Err(self.error(
                    ErrorKind::Unsupported,
                    name,
                    format!(
                        "unknown tar entry type `{}`",
                        char::from(other).escape_default()
                    ),
                ));
            }
        };

        let mut xattrs = Xattrs::new();
        for (key, value) in &pax {
            if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.".as_slice()) {
                let xname = std::str::from_utf8(xname).map_err(|_| {
                    self.error(
                        ErrorKind::InvalidData,
                        name,
                        format!(
                            "extended attribute name `{}` is not UTF-8",
                            escape_bytes(xname)
                        ),
                    )
                })?;
                xattrs.insert(xname.to_owned(), Bytes::copy_from_slice(value));
            }
        }
        Ok(Some(TarEntry {
            path,
            name: NameBuf::from(name),
            size: if kind == TarKind::File { logical } else { 0 },
            sparse: if kind == TarKind::File { sparse } else { None },
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        }))
    }

    /// The sparse map of a PAX sparse file (formats 0.0, 0.1 and 1.0):
    /// the name it gives, the logical size and the data regions; `None`
    /// if the entry is not one.
    fn pax_sparse(&mut self, pax: &PaxRecords) -> Result<Option<SparseInfo>> {
        let get = |key: &str| pax.get(key.as_bytes()).map(Vec::as_slice).unwrap_or(b"");
        let (major, minor) = (get("GNU.sparse.major"), get("GNU.sparse.minor"));
        let v1 = match (major, minor) {
            (b"0", b"0" | b"1") => false,
            (b"1", b"0") => true,
            // Unknown versions are not sparse files (as in Go).
            _ if !major.is_empty() || !minor.is_empty() => return Ok(None),
            _ if !get("GNU.sparse.map").is_empty() => false,
            _ => return Ok(None),
        };
        let bad = |what: &str| self.header_error(format!("bad sparse map: {what}"));
        let name = Some(get("GNU.sparse.name").to_vec()).filter(|n| !n.is_empty());
        let mut size_field = get("GNU.sparse.size");
        if size_field.is_empty() {
            size_field = get("GNU.sparse.realsize");
        }
        let size = if size_field.is_empty() {
            i64::try_from(self.remaining).unwrap_or(i64::MAX)
        } else {
            parse_go_int(size_field).ok_or_else(|| bad("the size is not a number"))?
        };
        let regions = if v1 {
            self.sparse_map_1_0()?
        } else {
            let count = parse_go_int(get("GNU.sparse.numblocks"))
                .filter(|&n| n >= 0)
                .ok_or_else(|| bad("`GNU.sparse.numblocks` is not a count"))?;
            let map = get("GNU.sparse.map");
            let fields: Vec<&[u8]> = if map.is_empty() {
                Vec::new()
            } else {
                map.split(|&b| b == b',').collect()
            };
            if fields.len() as u64 != (count as u64).saturating_mul(2) {
                return Err(bad("the map does not hold `GNU.sparse.numblocks` regions"));
            }
            fields
                .chunks(2)
                .map(
                    |pair| match (parse_go_int(pair[0]), parse_go_int(pair[1])) {
                        (Some(o), Some(l)) => Ok((o, l)),
                        _ => Err(bad("a region is not a number")),
                    },
                )
                .collect::<Result<_>>()?
        };
        Ok(Some((name, size, regions)))
    }

    /// Reads the map of a format 1.0 sparse file from the start of its
    /// data: newline-ended decimal numbers (a count, then offset and length
    /// pairs), in whole blocks.
    fn sparse_map_1_0(&mut self) -> Result<Vec<(i64, i64)>> {
        let mut text = Vec::new();
        let mut lines = 0u64;
        let mut want = 1u64;
        let mut count_read = None;
        loop {
            while lines < want {
                if self.remaining < BLOCK {
                    return Err(self.header_error("the sparse map is truncated"));
                }
                if text.len() as u64 >= self.limits.max_header_bytes {
                    return Err(self.error(
                        ErrorKind::LimitExceeded,
                        b"",
                        format!(
                            "a sparse map is larger than the limit of {} bytes",
                            self.limits.max_header_bytes
                        ),
                    ));
                }
                let mut block = [0u8; BLOCK as usize];
                if self.fill(&mut block, b"")? < block.len() {
                    return Err(self.header_error("the tar is truncated inside a sparse map"));
                }
                self.remaining -= BLOCK;
                lines += block.iter().filter(|&&b| b == b'\n').count() as u64;
                text.extend_from_slice(&block);
            }
            if count_read.is_some() {
                break;
            }
            let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
            let count = parse_go_int(first)
                .filter(|&n| n >= 0)
                .ok_or_else(|| self.header_error("bad sparse map: the count is not a number"))?;
            count_read = Some(count);
            want = 1 + 2 * count as u64;
        }
        let mut tokens = text.split(|&b| b == b'\n').skip(1);
        let mut regions = Vec::new();
        for _ in 0..count_read.unwrap_or(0) {
            let (o, l) = (tokens.next(), tokens.next());
            match (o.and_then(parse_go_int), l.and_then(parse_go_int)) {
                (Some(o), Some(l)) => regions.push((o, l)),
                _ => {
                    return Err(self.header_error("bad sparse map: a region is not a number"));
                }
            }
        }
        Ok(regions)
    }

    /// The sparse map of an old GNU sparse header (type `S`): the real
    /// size and the regions, the header's four and those of the extension
    /// blocks that follow it.
    fn old_gnu_sparse(&mut self, header: &Header, format: Format) -> Result<SparseInfo> {
        if format != Format::Gnu {
            return Err(
                self.header_error("a GNU sparse file (type `S`) in a header that is not GNU")
            );
        }
        let bad = |r: &Self| r.header_error("bad sparse map: a field is not a number");
        let size = parse_numeric(&header.block[483..495]).ok_or_else(|| bad(self))?;
        let mut regions = Vec::new();
        let mut block = header.block;
        let (mut start, mut entries, mut extended_at) = (386, 4, 482);
        loop {
            for i in 0..entries {
                let at = start + i * 24;
                if block[at] == 0 {
                    break;
                }
                let offset = parse_numeric(&block[at..at + 12]).ok_or_else(|| bad(self))?;
                let length = parse_numeric(&block[at + 12..at + 24]).ok_or_else(|| bad(self))?;
                regions.push((offset, length));
                if regions.len() as u64 > self.limits.max_header_bytes / 24 {
                    return Err(self.error(
                        ErrorKind::LimitExceeded,
                        b"",
                        "a sparse map is larger than the limit of the header bytes",
                    ));
                }
            }
            if block[extended_at] == 0 {
                break;
            }
            if self.fill(&mut block, b"")? < block.len() {
                return Err(self.header_error("the tar is truncated inside a sparse map"));
            }
            (start, entries, extended_at) = (0, 21, 504);
        }
        Ok((None, size, regions))
    }

    /// Checks a sparse map as Go does (in order, no overlap, inside the
    /// size) and, with `whole`, that the stored data is exactly its
    /// regions (Go finds that out when it reads the data).
    fn check_sparse(
        &self,
        name: &[u8],
        size: i64,
        regions: Vec<(i64, i64)>,
        whole: bool,
    ) -> Result<Vec<(u64, u64)>> {
        let bad = |what: &str| {
            self.error(
                ErrorKind::InvalidData,
                name,
                format!("bad sparse map: {what}"),
            )
        };
        if size < 0 {
            return Err(bad("the size is negative"));
        }
        let mut end = 0i64;
        let mut out = Vec::with_capacity(regions.len());
        for (offset, length) in regions {
            if offset < 0 || length < 0 {
                return Err(bad("a region is negative"));
            }
            let Some(region_end) = offset.checked_add(length) else {
                return Err(bad("a region overflows"));
            };
            if region_end > size {
                return Err(bad("a region goes past the end of the file"));
            }
            if offset < end {
                return Err(bad("regions overlap or are out of order"));
            }
            end = region_end;
            out.push((offset as u64, length as u64));
        }
        let stored: u64 = out.iter().map(|&(_, len)| len).sum();
        if whole && stored != self.remaining {
            return Err(bad(&format!(
                "its regions hold {stored} bytes but the entry stores {}",
                self.remaining
            )));
        }
        Ok(out)
    }

    /// Parses PAX records, `"%d %s=%s\n"` where the length counts the
    /// whole record, as Go does. The length drives the parse, so values
    /// may hold any byte, newlines included (binary xattrs such as
    /// `security.capability` do). The repeated `GNU.sparse.offset` and
    /// `GNU.sparse.numbytes` records of sparse format 0.0 are gathered into
    /// one `GNU.sparse.map`, as Go gathers them.
    fn parse_pax(&self, data: &[u8]) -> Result<PaxRecords> {
        let bad = |why: &str| self.header_error(format!("malformed PAX record: {why}"));
        let mut out = PaxRecords::new();
        let mut sparse: Vec<&[u8]> = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let space = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| bad("no length"))?;
            let len = parse_go_int(&rest[..space]).ok_or_else(|| bad("bad length"))?;
            let len = usize::try_from(len).map_err(|_| bad("bad length"))?;
            if len < 5 || len > rest.len() || len <= space + 1 || rest[len - 1] != b'\n' {
                return Err(bad("the length does not match the record"));
            }
            let record = &rest[space + 1..len - 1];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| bad("no `=`"))?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            let valid = match key {
                b"" => false,
                b"path" | b"linkpath" | b"uname" | b"gname" => !value.contains(&0),
                _ => !key.contains(&0),
            };
            if !valid {
                return Err(bad(&format!(
                    "`{}={}` is not a valid record",
                    escape_bytes(key),
                    escape_bytes(value)
                )));
            }
            match key {
                b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                    let expect: &[u8] = if sparse.len().is_multiple_of(2) {
                        b"GNU.sparse.offset"
                    } else {
                        b"GNU.sparse.numbytes"
                    };
                    if key != expect || value.contains(&b',') {
                        return Err(bad("sparse map records out of order"));
                    }
                    sparse.push(value);
                }
                _ => {
                    out.insert(key.to_vec(), value.to_vec());
                }
            }
            rest = &rest[len..];
        }
        if !sparse.is_empty() {
            out.insert(SPARSE_MAP.to_vec(), sparse.join(&b","[..]));
        }
        Ok(out)
    }

    /// A tar name (its bytes as the archive holds them) as a layer path:
    /// a leading `/`, empty and `.` components dropped, `..` refused.
    fn normalise(&self, raw: &[u8]) -> Result<LayerPath> {
        let mut components = Vec::new();
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    return Err(self.error(
                        ErrorKind::InvalidInput,
                        raw,
                        "the name contains `..` (it could reach outside the layer)",
                    ));
                }
                n => components.push(n),
            }
        }
        if components.len() > self.limits.max_path_depth {
            return Err(self.error(
                ErrorKind::LimitExceeded,
                raw,
                format!(
                    "the path is deeper than the limit of {} components",
                    self.limits.max_path_depth
                ),
            ));
        }
        name::layer_path(&components).map_err(|(kind, cause)| self.error(kind, raw, cause))
    }

    /// Where in the file the next byte [`TarReader::read_data`] returns
    /// goes: the offset in the data for a file stored whole, the offset
    /// past the holes for a sparse one.
    pub fn data_offset(&self) -> u64 {
        self.regions.front().map_or(0, |&(offset, _)| offset)
    }

    /// Reads data of the current entry; 0 at its end. One call never
    /// returns bytes of two regions of a sparse file: write them at
    /// [`TarReader::data_offset`], asked before the call.
    ///
    /// # Errors
    /// `EBADMSG` if the stream ends early, `EDQUOT` past the byte limit,
    /// and errors of the stream.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        while let Some(&(_, 0)) = self.regions.front() {
            self.regions.pop_front();
        }
        let Some(&(offset, left)) = self.regions.front() else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = self.read_inner(&mut buf[..want], b"")?;
        if n == 0 {
            return Err(self.error(
                ErrorKind::InvalidData,
                b"",
                "the tar is truncated inside the file's data",
            ));
        }
        self.remaining -= n as u64;
        let region = self.regions.front_mut().expect("checked above");
        *region = (offset + n as u64, left - n as u64);
        if region.1 == 0 {
            self.regions.pop_front();
        }
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
        while self.read_inner(&mut buf, b"")? > 0 {}
        Ok(self.inner)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Up to the first NUL (Go's `parseString`).
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// The bytes of a named numeric field of a header (for messages).
fn field_bytes<'b>(block: &'b [u8; BLOCK as usize], field: &str) -> &'b [u8] {
    match field {
        "mode" => &block[100..108],
        "uid" => &block[108..116],
        "gid" => &block[116..124],
        "size" => &block[124..136],
        "mtime" => &block[136..148],
        "devmajor" => &block[329..337],
        "atime" => &block[476..488],
        "ctime" => &block[488..500],
        _ => &block[337..345],
    }
}

/// Bytes for a message: printable ASCII as it is, everything else escaped
/// (`\0`, `\n`, `\x1b`, ...), so that a message never carries control
/// bytes from a header to a terminal.
pub(crate) fn escape_bytes(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// A numeric header field as Go's `archive/tar` reads it: base-256 when
/// the first byte has its high bit set, else octal with leading and
/// trailing spaces and NULs ignored and the rest cut at a NUL (an empty
/// field is 0). `None` if it is not a number.
fn parse_numeric(b: &[u8]) -> Option<i64> {
    if let Some(&first) = b.first()
        && first & 0x80 != 0
    {
        let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return None;
            }
            x = x << 8 | u64::from(c);
        }
        if x >> 63 > 0 {
            return None;
        }
        let x = x as i64;
        return Some(if inv == 0xff { !x } else { x });
    }
    parse_octal(b)
}

fn parse_octal(b: &[u8]) -> Option<i64> {
    let trim = |c: &u8| *c == b' ' || *c == 0;
    let start = b.iter().position(|c| !trim(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !trim(c)).map_or(start, |i| i + 1);
    let b = &b[start..end];
    if b.is_empty() {
        return Some(0);
    }
    let digits = cstr(b);
    if digits.is_empty() || !digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    let mut x: u64 = 0;
    for &d in digits {
        x = x.checked_mul(8)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(x as i64)
}

/// A decimal number as Go's `strconv.ParseInt(s, 10, 64)` reads it: an
/// optional sign, then digits, any number of them, within 64 bits.
fn parse_go_int(v: &[u8]) -> Option<i64> {
    let (neg, digits) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut x: i128 = 0;
    for &d in digits {
        x = x * 10 + i128::from(d - b'0');
        if x > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    let x = if neg { -x } else { x };
    i64::try_from(x).ok()
}

/// A PAX time: `[-+]SECONDS[.FRACTION]`, as Go reads it (the fraction cut
/// to nanoseconds).
fn parse_pax_time(v: &[u8]) -> Option<Timestamp> {
    let (whole, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    let secs = parse_go_int(whole)?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec: u32 = 0;
    for (i, d) in frac.iter().take(9).enumerate() {
        nsec += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    let neg = whole.first() == Some(&b'-');
    Some(if !neg || nsec == 0 {
        Timestamp::new(secs, nsec)
    } else {
        Timestamp::new(secs - 1, 1_000_000_000 - nsec)
    })
}

#[cfg(test)]
mod tests;
