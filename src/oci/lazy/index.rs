//! The layer index: what a layer blob holds (every entry with its
//! metadata, whiteouts and opaque directories as the applier decided
//! them, where each file's data lies in the uncompressed stream) and its
//! restart points, in a compact binary form with a version, the digest it
//! names and a checksum over all of it.
//!
//! An index is a cache that anyone who can write the layout can change,
//! so loading one never trusts more than building it afresh would: its
//! header is inside the checksum, every count, offset and length is
//! bounded by the blob it names, the tree must be one tree, each object's
//! body must fit its type, and the import options' policies (device
//! nodes, setuid and setgid bits, overlay bookkeeping and invalid
//! extended attributes) are applied to what it says exactly as import
//! applies them to a tar, as are its name rules (no `.wh.` name, none
//! over 255 bytes) and its limits (entries, mode bits). An index that
//! fails any of these is rebuilt from the blob, which then refuses or
//! strips what the options say.
//!
//! What this does not give: authenticity. The checksum is not keyed, so a
//! writer of the layout who knows the format can plant an index of a
//! different tree (and a different DiffID) that passes every check, just
//! as it can change a blob that lazy reads do not check against its
//! digest again. Lazy reads trust whoever can write the layout, as the
//! kernel's overlayfs trusts whoever can write its layer directories; an
//! image from an untrusted source is checked when it enters the layout
//! (pull, load, import), not at every read.
//!
//! On disk: a fixed header, the table (everything but the windows,
//! deflated), then the restart points' windows (each deflated on its
//! own), which a loaded index keeps as slices of the file's bytes and
//! inflates only when a read starts at their point.
//!
//! Two facts of a layer depend on the layers below it (the attributes of
//! a parent directory the tar does not list, and a hard link to a file of
//! a lower layer): the index keeps them as questions, answered when the
//! layer is opened over its lowers, so one index serves every stack the
//! layer is in.

use std::io::Read;

use bytes::Bytes;

use crate::layer::overlay::is_bookkeeping_xattr;
use crate::meta::{
    FileType, MODE_MASK, Metadata, S_ISGID, S_ISUID, Timestamp, Xattrs, check_xattr_name,
};
use crate::oci::apply::applier::Ask;
use crate::oci::apply::import::{ImportOptions, Policy};
use crate::oci::image::digest::Digest;
use crate::oci::tar::compress::Compression;
use crate::oci::tar::whiteout::is_reserved;
use crate::path::{LayerPath, NameBuf};

use super::stream::{MAX_PACKED_WINDOW, Point, PointKind};

/// The format's version: an index of another version is rebuilt.
pub(crate) const VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"LSTKLIX\0";

/// Largest index read back (a layer of a million entries stays far
/// below).
pub(crate) const MAX_INDEX_BYTES: u64 = 1 << 30;

/// Where an object's metadata comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetaSrc {
    /// From the tar (or the defaults).
    Known(Metadata),
    /// What the layers below show at a question's path.
    Below(u32),
}

/// One name of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory: children are node numbers, sorted by name.
    Dir {
        meta: MetaSrc,
        opaque: bool,
        children: Vec<u32>,
    },
    /// A non-directory: an inode number.
    Obj(u32),
    Whiteout,
}

/// A node of the tree (node 0 is the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexNode {
    pub(crate) name: NameBuf,
    pub(crate) kind: Kind,
}

/// What a non-directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A regular file whose data starts at `start` in the uncompressed
    /// stream: `stored` bytes, placed at the data regions of a sparse
    /// file (`None`: stored whole).
    File {
        start: u64,
        stored: u64,
        sparse: Option<Vec<(u64, u64)>>,
    },
    Symlink(NameBuf),
    Special,
    /// What the layers below hold at the question's path (a hard link's
    /// target copied up).
    Below(u32),
}

/// A non-directory object, shared by its hard links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    pub(crate) meta: MetaSrc,
    pub(crate) body: Body,
    /// Names it has in the layer.
    pub(crate) links: u32,
}

/// A fact about the layers below, asked by the entry `entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Question {
    pub(crate) path: LayerPath,
    pub(crate) ask: Ask,
    pub(crate) entry: NameBuf,
}

/// A layer blob's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerIndex {
    /// The blob it describes.
    pub(crate) digest: Digest,
    /// The import options it was built under (see `options_key`).
    pub(crate) options: Vec<u8>,
    pub(crate) compression: Compression,
    pub(crate) blob_size: u64,
    pub(crate) diff_id: Digest,
    pub(crate) uncompressed_size: u64,
    pub(crate) entries: u64,
    pub(crate) points: Vec<Point>,
    pub(crate) nodes: Vec<IndexNode>,
    pub(crate) inodes: Vec<Inode>,
    pub(crate) questions: Vec<Question>,
}

// ----- encoding -----

struct Enc(Vec<u8>);

impl Enc {
    fn u(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }

    fn i(&mut self, v: i64) {
        // zigzag
        self.u(((v << 1) ^ (v >> 63)) as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn time(&mut self, t: Timestamp) {
        self.i(t.sec);
        self.u(u64::from(t.nsec));
    }

    fn meta(&mut self, m: &Metadata) {
        self.u(u64::from(type_code(m.file_type)));
        self.u(u64::from(m.mode));
        self.u(u64::from(m.uid));
        self.u(u64::from(m.gid));
        self.u(m.size);
        self.u(m.rdev);
        self.time(m.mtime);
        // atime and ctime are the mtime for every tar entry; kept apart
        // for the metadata the layers below give.
        let same = m.atime == m.mtime && m.ctime == m.mtime;
        self.u(u64::from(same));
        if !same {
            self.time(m.atime);
            self.time(m.ctime);
        }
        self.u(m.xattrs.len() as u64);
        for (name, value) in m.xattrs.iter() {
            self.bytes(name.as_bytes());
            self.bytes(value);
        }
    }

    fn meta_src(&mut self, m: &MetaSrc) {
        match m {
            MetaSrc::Known(m) => {
                self.u(0);
                self.meta(m);
            }
            MetaSrc::Below(q) => {
                self.u(1);
                self.u(u64::from(*q));
            }
        }
    }
}

fn type_code(t: FileType) -> u8 {
    match t {
        FileType::File => 0,
        FileType::Dir => 1,
        FileType::Symlink => 2,
        FileType::CharDevice => 3,
        FileType::BlockDevice => 4,
        FileType::Fifo => 5,
        FileType::Socket => 6,
    }
}

fn compression_code(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Zstd => 2,
    }
}

/// Magic, version, digest, checksum, table length (inflated), table
/// length (deflated); then the deflated table, then the windows.
const HEADER: usize = 8 + 4 + 32 + 4 + 8 + 8;

/// Where the checksum is in the header.
const CRC_AT: std::ops::Range<usize> = 44..48;

/// The checksum of a whole index but its own four bytes: CRC-32. It
/// catches damage; what a hostile writer can do with a matching one is
/// bounded by the checks after it.
fn checksum(index: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(&index[..CRC_AT.start]);
    crc.update(&index[CRC_AT.end..]);
    crc.sum()
}

/// No uncompressed stream is longer than its blob times this: deflate
/// expands at most 1032 to 1 (a one-bit length 258 with a one-bit
/// distance), zstd less than 2^16 to 1 (a 4-byte RLE block makes at most
/// 128 KiB).
fn max_ratio(c: Compression) -> u64 {
    match c {
        Compression::None => 1,
        Compression::Gzip => 1032,
        Compression::Zstd => 1 << 16,
    }
}

/// Why an index cannot be used (it is then rebuilt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Damaged(pub(crate) &'static str);

struct Dec<'a> {
    b: &'a [u8],
}

type D<T> = std::result::Result<T, Damaged>;

impl Dec<'_> {
    fn u(&mut self) -> D<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.b.split_first().ok_or(Damaged("truncated"))?;
            self.b = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Damaged("a number is too long"))
    }

    fn u32(&mut self) -> D<u32> {
        u32::try_from(self.u()?).map_err(|_| Damaged("a number is out of range"))
    }

    /// A count of items, each at least one byte long, and at most `most`
    /// (what the blob could hold).
    fn count(&mut self, most: u64) -> D<usize> {
        let n = self.u()?;
        if n > most {
            return Err(Damaged("a count is larger than the blob could hold"));
        }
        match usize::try_from(n) {
            Ok(n) if n <= self.b.len() => Ok(n),
            _ => Err(Damaged("a count is larger than the index")),
        }
    }

    fn i(&mut self) -> D<i64> {
        let v = self.u()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self) -> D<&[u8]> {
        let n = self.count(u64::MAX)?;
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn digest(&mut self) -> D<Digest> {
        let b = self.bytes()?;
        let arr: [u8; 32] = b
            .try_into()
            .map_err(|_| Damaged("a digest is not 32 bytes"))?;
        Ok(Digest::from_bytes(arr))
    }

    fn time(&mut self) -> D<Timestamp> {
        let sec = self.i()?;
        let nsec = self.u32()?;
        if nsec >= 1_000_000_000 {
            return Err(Damaged("nanoseconds out of range"));
        }
        Ok(Timestamp { sec, nsec })
    }

    fn meta(&mut self) -> D<Metadata> {
        let t = match self.u()? {
            0 => FileType::File,
            1 => FileType::Dir,
            2 => FileType::Symlink,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            _ => return Err(Damaged("unknown file type")),
        };
        let mut m = Metadata::new(t);
        m.mode = self.u32()?;
        if m.mode & !MODE_MASK != 0 {
            return Err(Damaged("mode bits past 0o7777"));
        }
        m.uid = self.u32()?;
        m.gid = self.u32()?;
        m.size = self.u()?;
        m.rdev = self.u()?;
        m.mtime = self.time()?;
        if self.u()? == 1 {
            m.atime = m.mtime;
            m.ctime = m.mtime;
        } else {
            m.atime = self.time()?;
            m.ctime = self.time()?;
        }
        let n = self.count(u64::MAX)?;
        if n > 0 {
            let mut x = Xattrs::new();
            for _ in 0..n {
                let name = std::str::from_utf8(self.bytes()?)
                    .map_err(|_| Damaged("an xattr name is not UTF-8"))?
                    .to_owned();
                let value = Bytes::copy_from_slice(self.bytes()?);
                x.insert(name, value);
            }
            m.xattrs = x;
        }
        Ok(m)
    }

    /// Metadata known or asked of the layers below (`ask`: what the
    /// question must be).
    fn meta_src(&mut self, questions: &[Question], ask: Ask) -> D<MetaSrc> {
        match self.u()? {
            0 => Ok(MetaSrc::Known(self.meta()?)),
            1 => Ok(MetaSrc::Below(question(self.u32()?, questions, ask)?)),
            _ => Err(Damaged("unknown metadata source")),
        }
    }
}

/// Question `q`, which must exist and ask `ask`.
fn question(q: u32, questions: &[Question], ask: Ask) -> D<u32> {
    match questions.get(q as usize) {
        Some(found) if found.ask == ask => Ok(q),
        Some(_) => Err(Damaged("a question of the wrong kind")),
        None => Err(Damaged("a question out of range")),
    }
}

impl LayerIndex {
    /// The index as stored: the header (magic, version, digest,
    /// checksum, table lengths), the deflated table, the windows.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc(Vec::new());
        let mut windows: Vec<&[u8]> = Vec::new();
        e.bytes(&self.options);
        e.u(u64::from(compression_code(self.compression)));
        e.u(self.blob_size);
        e.bytes(self.diff_id.as_bytes());
        e.u(self.uncompressed_size);
        e.u(self.entries);
        e.u(self.questions.len() as u64);
        for q in &self.questions {
            e.bytes(q.path.as_bytes());
            e.u(u64::from(q.ask == Ask::LinkTarget));
            e.bytes(q.entry.as_bytes());
        }
        e.u(self.points.len() as u64);
        for p in &self.points {
            e.u(p.out);
            e.u(p.bit);
            match &p.kind {
                PointKind::Member => e.u(0),
                PointKind::Deflate(w) => {
                    // Its bytes go after the table, one after the other.
                    e.u(1);
                    e.u(w.len() as u64);
                    windows.push(w);
                }
            }
        }
        e.u(self.inodes.len() as u64);
        for ino in &self.inodes {
            e.meta_src(&ino.meta);
            e.u(u64::from(ino.links));
            match &ino.body {
                Body::File {
                    start,
                    stored,
                    sparse,
                } => {
                    e.u(0);
                    e.u(*start);
                    e.u(*stored);
                    match sparse {
                        None => e.u(0),
                        Some(regions) => {
                            e.u(1 + regions.len() as u64);
                            for &(off, len) in regions {
                                e.u(off);
                                e.u(len);
                            }
                        }
                    }
                }
                Body::Symlink(t) => {
                    e.u(1);
                    e.bytes(t.as_bytes());
                }
                Body::Special => e.u(2),
                Body::Below(q) => {
                    e.u(3);
                    e.u(u64::from(*q));
                }
            }
        }
        e.u(self.nodes.len() as u64);
        for n in &self.nodes {
            e.bytes(n.name.as_bytes());
            match &n.kind {
                Kind::Dir {
                    meta,
                    opaque,
                    children,
                } => {
                    e.u(0);
                    e.meta_src(meta);
                    e.u(u64::from(*opaque));
                    e.u(children.len() as u64);
                    for c in children {
                        e.u(u64::from(*c));
                    }
                }
                Kind::Obj(i) => {
                    e.u(1);
                    e.u(u64::from(*i));
                }
                Kind::Whiteout => e.u(2),
            }
        }
        let table = e.0;
        let mut packed = Vec::with_capacity(table.len() / 3 + 64);
        let mut z = flate2::write::DeflateEncoder::new(&mut packed, flate2::Compression::fast());
        std::io::Write::write_all(&mut z, &table).expect("writing to a Vec");
        z.finish().expect("writing to a Vec");
        let all: usize = windows.iter().map(|w| w.len()).sum();
        let mut out = Vec::with_capacity(HEADER + packed.len() + all);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(self.digest.as_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(table.len() as u64).to_le_bytes());
        out.extend_from_slice(&(packed.len() as u64).to_le_bytes());
        out.extend_from_slice(&packed);
        for w in windows {
            out.extend_from_slice(w);
        }
        let crc = checksum(&out);
        out[CRC_AT].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads back the index of blob `digest` of `blob_size` bytes, to be
    /// used under `options`. Anything damaged, of another version, about
    /// another blob, built under other options, saying more than the blob
    /// could hold, or holding what the options' policies forbid is
    /// [`Damaged`] (see the module documentation).
    pub(crate) fn decode(
        bytes: Bytes,
        digest: &Digest,
        blob_size: u64,
        options: &ImportOptions,
    ) -> D<LayerIndex> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(Damaged("not a layer index"));
        }
        if bytes[8..12] != VERSION.to_le_bytes() {
            return Err(Damaged("another version"));
        }
        if bytes[CRC_AT] != checksum(&bytes).to_le_bytes() {
            return Err(Damaged("checksum mismatch"));
        }
        if bytes[12..44] != digest.as_bytes()[..] {
            return Err(Damaged("the index of another blob"));
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (table_len, packed_len) = (word(48), word(56));
        if table_len > MAX_INDEX_BYTES || table_len > max_table_len(blob_size) {
            return Err(Damaged("too large"));
        }
        let Some(table_end) = usize::try_from(packed_len)
            .ok()
            .and_then(|n| HEADER.checked_add(n))
            .filter(|&end| end <= bytes.len())
        else {
            return Err(Damaged("the table goes past the end"));
        };
        // Room for what the packed table could plausibly hold up front: a
        // bomb that claims a large table grows the vector as it inflates.
        let guess = table_len.min(packed_len.saturating_mul(8));
        let mut table = Vec::with_capacity(usize::try_from(guess).unwrap_or(0));
        flate2::read::DeflateDecoder::new(&bytes[HEADER..table_end])
            .take(table_len + 1)
            .read_to_end(&mut table)
            .map_err(|_| Damaged("the table does not inflate"))?;
        if table.len() as u64 != table_len {
            return Err(Damaged("the table has another length"));
        }
        let expect = Expect {
            digest: *digest,
            blob_size,
            options,
        };
        decode_table(&table, bytes.slice(table_end..), &expect)
    }
}

/// What a loaded index must agree with.
struct Expect<'a> {
    digest: Digest,
    blob_size: u64,
    options: &'a ImportOptions,
}

fn decode_table(table: &[u8], windows: Bytes, expect: &Expect<'_>) -> D<LayerIndex> {
    let mut d = Dec { b: table };
    let options = d.bytes()?.to_vec();
    if options != options_key(expect.options) {
        return Err(Damaged("built under other import options"));
    }
    let compression = match d.u()? {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Zstd,
        _ => return Err(Damaged("unknown compression")),
    };
    let blob_size = d.u()?;
    if blob_size != expect.blob_size {
        return Err(Damaged("the blob has another size"));
    }
    let diff_id = d.digest()?;
    let uncompressed_size = d.u()?;
    if uncompressed_size > blob_size.saturating_mul(max_ratio(compression)) {
        return Err(Damaged("more data than the blob could hold"));
    }
    let entries = d.u()?;
    // Each entry has a 512-byte header at least.
    if entries > uncompressed_size / 512 {
        return Err(Damaged("more entries than the blob could hold"));
    }
    // Import stops at the limit: so does a build, so no index holds more.
    if entries > expect.options.limits.max_entries {
        return Err(Damaged("more entries than the limits allow"));
    }
    // Every node is the root, an entry, or a directory an entry's path
    // implies; every question is asked by an entry about one of those.
    let depth = u64::try_from(expect.options.limits.max_path_depth).unwrap_or(u64::MAX);
    let max_nodes = entries
        .saturating_mul(depth.saturating_add(1))
        .saturating_add(1);
    let nq = d.count(max_nodes)?;
    let mut questions = Vec::with_capacity(prealloc(nq));
    for _ in 0..nq {
        let path = LayerPath::new(d.bytes()?).map_err(|_| Damaged("a bad path"))?;
        let ask = match d.u()? {
            0 => Ask::ImpliedDir,
            1 => Ask::LinkTarget,
            _ => return Err(Damaged("unknown question")),
        };
        let entry = NameBuf::from(d.bytes()?.to_vec());
        questions.push(Question { path, ask, entry });
    }
    let points = decode_points(&mut d, windows, compression, blob_size, uncompressed_size)?;
    let ni = d.count(entries)?;
    let mut inodes = Vec::with_capacity(prealloc(ni));
    for _ in 0..ni {
        let meta = d.meta_src(&questions, Ask::LinkTarget)?;
        let links = d.u32()?;
        let body = decode_body(&mut d, &meta, &questions, uncompressed_size)?;
        inodes.push(Inode { meta, body, links });
    }
    let nn = d.count(max_nodes)?;
    let mut nodes = Vec::with_capacity(prealloc(nn));
    for _ in 0..nn {
        let name = NameBuf::from(d.bytes()?.to_vec());
        let kind = match d.u()? {
            0 => {
                let meta = d.meta_src(&questions, Ask::ImpliedDir)?;
                if matches!(&meta, MetaSrc::Known(m) if !m.is_dir()) {
                    return Err(Damaged("a directory of another type"));
                }
                let opaque = match d.u()? {
                    0 => false,
                    1 => true,
                    _ => return Err(Damaged("a bad opaque flag")),
                };
                let nc = d.count(max_nodes)?;
                let mut children = Vec::with_capacity(prealloc(nc));
                for _ in 0..nc {
                    children.push(d.u32()?);
                }
                Kind::Dir {
                    meta,
                    opaque,
                    children,
                }
            }
            1 => {
                let i = d.u32()?;
                if i as usize >= ni {
                    return Err(Damaged("an inode out of range"));
                }
                Kind::Obj(i)
            }
            2 => Kind::Whiteout,
            _ => return Err(Damaged("unknown node")),
        };
        nodes.push(IndexNode { name, kind });
    }
    if !d.b.is_empty() {
        return Err(Damaged("bytes after the end"));
    }
    check_tree(&nodes, &inodes)?;
    let index = LayerIndex {
        digest: expect.digest,
        options,
        compression,
        blob_size,
        diff_id,
        uncompressed_size,
        entries,
        points,
        nodes,
        inodes,
        questions,
    };
    index.check_policies(expect.options)?;
    Ok(index)
}

/// The restart points: within the blob and the stream, in order, each at
/// a new output offset and a new blob byte, the first at the stream's
/// start; windows (gzip only) each a slice of `windows`, which they use
/// up exactly.
fn decode_points(
    d: &mut Dec<'_>,
    windows: Bytes,
    compression: Compression,
    blob_size: u64,
    uncompressed_size: u64,
) -> D<Vec<Point>> {
    let most = if compression == Compression::None {
        0
    } else {
        blob_size
    };
    let np = d.count(most)?;
    let mut points: Vec<Point> = Vec::with_capacity(prealloc(np));
    let mut used = 0usize;
    for _ in 0..np {
        let out = d.u()?;
        let bit = d.u()?;
        let kind = match d.u()? {
            0 => PointKind::Member,
            1 if compression == Compression::Gzip => {
                let len = d.u()?;
                let end = usize::try_from(len)
                    .ok()
                    .filter(|&n| n as u64 <= MAX_PACKED_WINDOW)
                    .and_then(|n| used.checked_add(n))
                    .filter(|&end| end <= windows.len())
                    .ok_or(Damaged("a window past the end"))?;
                let w = windows.slice(used..end);
                used = end;
                PointKind::Deflate(w)
            }
            _ => return Err(Damaged("unknown restart point")),
        };
        let in_order = match points.last() {
            None => out == 0,
            Some(p) => out > p.out && bit / 8 > p.bit / 8,
        };
        if !in_order || bit / 8 >= blob_size || out > uncompressed_size {
            return Err(Damaged("restart points out of order or out of the blob"));
        }
        points.push(Point { out, bit, kind });
    }
    if compression != Compression::None && points.is_empty() {
        return Err(Damaged("no restart point"));
    }
    if used != windows.len() {
        return Err(Damaged("bytes after the windows"));
    }
    Ok(points)
}

/// What an object with metadata `meta` holds: it must fit its type, and
/// its data must lie in the stream.
fn decode_body(
    d: &mut Dec<'_>,
    meta: &MetaSrc,
    questions: &[Question],
    uncompressed_size: u64,
) -> D<Body> {
    let known = match meta {
        MetaSrc::Known(m) => Some(m),
        MetaSrc::Below(_) => None,
    };
    let fits = |t: &[FileType]| known.is_some_and(|m| t.contains(&m.file_type));
    let body = match d.u()? {
        0 if fits(&[FileType::File]) => {
            let size = known.map_or(0, |m| m.size);
            let start = d.u()?;
            let stored = d.u()?;
            if start
                .checked_add(stored)
                .is_none_or(|end| end > uncompressed_size)
            {
                return Err(Damaged("file data outside the stream"));
            }
            let sparse = match d.count(u64::MAX)? {
                0 if size <= stored => None,
                0 => return Err(Damaged("a file larger than its data")),
                n => {
                    // (Each region is two numbers: at least two bytes.)
                    let n = n - 1;
                    let mut regions = Vec::with_capacity(prealloc(n));
                    let mut sum = 0u64;
                    for _ in 0..n {
                        let (off, len) = (d.u()?, d.u()?);
                        sum = sum.saturating_add(len);
                        if off.checked_add(len).is_none_or(|end| end > size) || sum > stored {
                            return Err(Damaged("a sparse region outside the file"));
                        }
                        regions.push((off, len));
                    }
                    Some(regions)
                }
            };
            Body::File {
                start,
                stored,
                sparse,
            }
        }
        1 if fits(&[FileType::Symlink]) => Body::Symlink(NameBuf::from(d.bytes()?.to_vec())),
        2 if fits(&[
            FileType::CharDevice,
            FileType::BlockDevice,
            FileType::Fifo,
            FileType::Socket,
        ]) =>
        {
            Body::Special
        }
        3 => {
            let q = question(d.u32()?, questions, Ask::LinkTarget)?;
            if *meta != MetaSrc::Below(q) {
                return Err(Damaged("an object of two sources"));
            }
            Body::Below(q)
        }
        0..=2 => return Err(Damaged("an object whose body does not fit its type")),
        _ => return Err(Damaged("unknown body")),
    };
    Ok(body)
}

/// The nodes form one tree from node 0 (a directory), children after
/// their parent, sorted and named by one component, and each inode has
/// exactly as many names as it says: a lookup never loops and never goes
/// out of range.
fn check_tree(nodes: &[IndexNode], inodes: &[Inode]) -> D<()> {
    if !matches!(
        nodes.first(),
        Some(IndexNode {
            kind: Kind::Dir { .. },
            ..
        })
    ) {
        return Err(Damaged("no root directory"));
    }
    let mut seen = vec![false; nodes.len()];
    seen[0] = true;
    let mut names = vec![0u32; inodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let children = match &n.kind {
            Kind::Dir { children, .. } => children,
            Kind::Obj(ino) => {
                names[*ino as usize] += 1;
                continue;
            }
            Kind::Whiteout => continue,
        };
        let mut prev: Option<&NameBuf> = None;
        for &c in children {
            let c = c as usize;
            if c <= i || c >= nodes.len() || seen[c] {
                return Err(Damaged("a broken tree"));
            }
            seen[c] = true;
            let name = &nodes[c].name;
            let bytes = name.as_bytes();
            if bytes.is_empty()
                || bytes.len() > NAME_MAX
                || bytes == b"."
                || bytes == b".."
                || bytes.contains(&b'/')
                || bytes.contains(&0)
                || is_reserved(name.as_name())
            {
                return Err(Damaged("a bad name"));
            }
            if prev.is_some_and(|p| p >= name) {
                return Err(Damaged("children out of order"));
            }
            prev = Some(name);
        }
    }
    if seen.iter().any(|s| !s) {
        return Err(Damaged("a node outside the tree"));
    }
    if inodes.iter().zip(&names).any(|(i, &n)| i.links != n) {
        return Err(Damaged("a link count that is not the names'"));
    }
    Ok(())
}

impl LayerIndex {
    /// Import's policies, applied to every object the index describes:
    /// what import of the blob under `options` would have refused,
    /// stripped or dropped is not there (else the index is rebuilt, and
    /// the build refuses or strips it as import does).
    fn check_policies(&self, options: &ImportOptions) -> D<()> {
        let dirs = self.nodes.iter().filter_map(|n| match &n.kind {
            Kind::Dir {
                meta: MetaSrc::Known(m),
                ..
            } => Some(m),
            _ => None,
        });
        let objects = self.inodes.iter().filter_map(|i| match &i.meta {
            MetaSrc::Known(m) => Some(m),
            MetaSrc::Below(_) => None,
        });
        dirs.chain(objects).try_for_each(|m| allowed(m, options))
    }
}

/// Whether import under `options` lets an object with metadata `m`
/// through as it is (see `import::object_meta` and `keep_device`).
fn allowed(m: &Metadata, options: &ImportOptions) -> D<()> {
    for (name, _) in m.xattrs.iter() {
        if is_bookkeeping_xattr(name) {
            return Err(Damaged("an overlay bookkeeping extended attribute"));
        }
        if check_xattr_name(name, crate::error::Operation::ImportLayer, "").is_err() {
            return Err(Damaged("an invalid extended attribute name"));
        }
    }
    if matches!(m.file_type, FileType::CharDevice | FileType::BlockDevice) {
        if m.file_type == FileType::CharDevice && m.rdev == 0 {
            return Err(Damaged("a whiteout device"));
        }
        if options.devices != Policy::Keep {
            return Err(Damaged("a device node the options forbid"));
        }
    }
    if !m.is_dir() && m.mode & (S_ISUID | S_ISGID) != 0 && options.setuid != Policy::Keep {
        return Err(Damaged("a setuid or setgid file the options forbid"));
    }
    Ok(())
}

/// The import options an index depends on, as bytes (an index built
/// under other policies or limits is rebuilt).
pub(crate) fn options_key(options: &ImportOptions) -> Vec<u8> {
    let code = |p: Policy| match p {
        Policy::Keep => 0,
        Policy::Strip => 1,
        Policy::Refuse => 2,
    };
    let l = &options.limits;
    let mut key = vec![code(options.devices), code(options.setuid)];
    for n in [
        l.max_entries,
        l.max_bytes,
        l.max_header_bytes,
        l.max_path_depth as u64,
    ] {
        key.extend_from_slice(&n.to_le_bytes());
    }
    key
}

/// The longest name of one component import lets through (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// The largest table an index of a blob of `blob_size` bytes may have.
/// A real table holds some tens of bytes per tar entry, and a tar entry
/// takes some tens of compressed bytes at least: a table sixteen times
/// the blob (and a mebibyte for the smallest) is far beyond any real one,
/// and bounds what a forged index can make a reader decode and allocate
/// (an index past it is rebuilt, which only costs time).
fn max_table_len(blob_size: u64) -> u64 {
    blob_size.saturating_mul(16).saturating_add(1 << 20)
}

/// How many items to reserve room for up front when an index says `n`:
/// at most a few thousand, so that a count in a damaged or hostile index
/// (each item of which may take one byte there but a hundred in memory)
/// costs no more than the items actually read.
fn prealloc(n: usize) -> usize {
    n.min(4096)
}

#[cfg(test)]
mod tests;
