//! The layer index: what a layer blob holds (every entry with its
//! metadata, whiteouts and opaque directories as the applier decided
//! them, where each file's data lies in the uncompressed stream) and its
//! restart points, in a compact binary form with a version, the digest it
//! names and its own checksum.
//!
//! Two facts of a layer depend on the layers below it (the attributes of
//! a parent directory the tar does not list, and a hard link to a file of
//! a lower layer): the index keeps them as questions, answered when the
//! layer is opened over its lowers, so one index serves every stack the
//! layer is in.

use std::io::Read;

use crate::meta::{FileType, Metadata, Timestamp, Xattrs};
use crate::oci::apply::applier::Ask;
use crate::oci::image::digest::Digest;
use crate::oci::tar::compress::Compression;
use crate::path::{LayerPath, NameBuf};

use super::stream::{Point, PointKind};

/// The format's version: an index of another version is rebuilt.
pub(crate) const VERSION: u32 = 1;

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

/// Magic, version, digest, checksum, body length.
const HEADER: usize = 8 + 4 + 32 + 4 + 8;

/// The checksum of an index's packed body: CRC-32 (it guards against
/// damage; the blob the index names is in the header, checked apart).
fn checksum(packed: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(packed);
    crc.sum()
}

/// A window as an index keeps it: deflated.
fn pack(window: &[u8]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(window.len() / 2);
    let mut z = flate2::write::DeflateEncoder::new(&mut packed, flate2::Compression::fast());
    std::io::Write::write_all(&mut z, window).expect("writing to a Vec");
    z.finish().expect("writing to a Vec");
    packed
}

/// Why an index cannot be used (it is then rebuilt).
#[derive(Debug)]
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

    fn usize(&mut self) -> D<usize> {
        usize::try_from(self.u()?).map_err(|_| Damaged("a number is out of range"))
    }

    /// A count of items, each at least one byte long.
    fn count(&mut self) -> D<usize> {
        let n = self.usize()?;
        if n > self.b.len() {
            return Err(Damaged("a count is larger than the index"));
        }
        Ok(n)
    }

    fn i(&mut self) -> D<i64> {
        let v = self.u()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self) -> D<&[u8]> {
        let n = self.count()?;
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
        let n = self.count()?;
        let mut x = Xattrs::new();
        for _ in 0..n {
            let name = std::str::from_utf8(self.bytes()?)
                .map_err(|_| Damaged("an xattr name is not UTF-8"))?
                .to_owned();
            let value = bytes::Bytes::copy_from_slice(self.bytes()?);
            x.insert(name, value);
        }
        m.xattrs = x;
        Ok(m)
    }

    fn meta_src(&mut self, questions: usize) -> D<MetaSrc> {
        match self.u()? {
            0 => Ok(MetaSrc::Known(self.meta()?)),
            1 => {
                let q = self.u32()?;
                if q as usize >= questions {
                    return Err(Damaged("a question out of range"));
                }
                Ok(MetaSrc::Below(q))
            }
            _ => Err(Damaged("unknown metadata source")),
        }
    }
}

impl LayerIndex {
    /// The index as stored: magic, version, digest, body checksum, body
    /// (deflate-compressed).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc(Vec::new());
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
                    e.u(1);
                    e.bytes(&pack(w));
                }
                PointKind::PackedDeflate(w) => {
                    e.u(1);
                    e.bytes(w);
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
        let body = e.0;
        let mut packed = Vec::with_capacity(body.len() / 3 + 64);
        let mut z = flate2::write::DeflateEncoder::new(&mut packed, flate2::Compression::fast());
        std::io::Write::write_all(&mut z, &body).expect("writing to a Vec");
        z.finish().expect("writing to a Vec");
        let mut out = Vec::with_capacity(packed.len() + 96);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(self.digest.as_bytes());
        out.extend_from_slice(&checksum(&packed).to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&packed);
        out
    }

    /// Reads an index back; anything damaged, of another version or about
    /// another blob than `digest` is [`Damaged`].
    pub(crate) fn decode(bytes: &[u8], digest: &Digest) -> D<LayerIndex> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(Damaged("not a layer index"));
        }
        if bytes[8..12] != VERSION.to_le_bytes() {
            return Err(Damaged("another version"));
        }
        if bytes[12..44] != digest.as_bytes()[..] {
            return Err(Damaged("the index of another blob"));
        }
        let packed = &bytes[HEADER..];
        if bytes[44..48] != checksum(packed).to_le_bytes() {
            return Err(Damaged("checksum mismatch"));
        }
        let body_len = u64::from_le_bytes(bytes[48..56].try_into().expect("8 bytes"));
        if body_len > MAX_INDEX_BYTES {
            return Err(Damaged("too large"));
        }
        // Not more than the packed body could plausibly hold up front: a
        // bomb that claims a large body grows the vector as it inflates.
        let mut body = Vec::with_capacity(prealloc(usize::try_from(body_len).unwrap_or(0)));
        flate2::read::DeflateDecoder::new(packed)
            .take(body_len + 1)
            .read_to_end(&mut body)
            .map_err(|_| Damaged("the body does not inflate"))?;
        if body.len() as u64 != body_len {
            return Err(Damaged("the body has another length"));
        }
        decode_body(&body, *digest)
    }
}

fn decode_body(body: &[u8], digest: Digest) -> D<LayerIndex> {
    let mut d = Dec { b: body };
    let options = d.bytes()?.to_vec();
    let compression = match d.u()? {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Zstd,
        _ => return Err(Damaged("unknown compression")),
    };
    let blob_size = d.u()?;
    let diff_id = d.digest()?;
    let uncompressed_size = d.u()?;
    let entries = d.u()?;
    let nq = d.count()?;
    let mut questions = Vec::with_capacity(prealloc(nq));
    for _ in 0..nq {
        let path = LayerPath::new(d.bytes()?).map_err(|_| Damaged("a bad path"))?;
        let ask = if d.u()? == 1 {
            Ask::LinkTarget
        } else {
            Ask::ImpliedDir
        };
        let entry = NameBuf::from(d.bytes()?.to_vec());
        questions.push(Question { path, ask, entry });
    }
    let np = d.count()?;
    let mut points = Vec::with_capacity(prealloc(np));
    let mut last_out = 0;
    for _ in 0..np {
        let out = d.u()?;
        let bit = d.u()?;
        let kind = match d.u()? {
            0 => PointKind::Member,
            1 => PointKind::PackedDeflate(d.bytes()?.to_vec()),
            _ => return Err(Damaged("unknown restart point")),
        };
        if out < last_out || bit / 8 > blob_size {
            return Err(Damaged("restart points out of order"));
        }
        last_out = out;
        points.push(Point { out, bit, kind });
    }
    let ni = d.count()?;
    let mut inodes = Vec::with_capacity(prealloc(ni));
    for _ in 0..ni {
        let meta = d.meta_src(nq)?;
        let links = d.u32()?;
        let body = match d.u()? {
            0 => {
                let start = d.u()?;
                let stored = d.u()?;
                let sparse = match d.usize()? {
                    0 => None,
                    n => {
                        let n = n - 1;
                        if n > d.b.len() {
                            return Err(Damaged("a count is larger than the index"));
                        }
                        let mut regions = Vec::with_capacity(prealloc(n));
                        for _ in 0..n {
                            regions.push((d.u()?, d.u()?));
                        }
                        Some(regions)
                    }
                };
                if start
                    .checked_add(stored)
                    .is_none_or(|end| end > uncompressed_size)
                {
                    return Err(Damaged("file data outside the stream"));
                }
                Body::File {
                    start,
                    stored,
                    sparse,
                }
            }
            1 => Body::Symlink(NameBuf::from(d.bytes()?.to_vec())),
            2 => Body::Special,
            3 => {
                let q = d.u32()?;
                if q as usize >= nq {
                    return Err(Damaged("a question out of range"));
                }
                Body::Below(q)
            }
            _ => return Err(Damaged("unknown body")),
        };
        inodes.push(Inode { meta, body, links });
    }
    let nn = d.count()?;
    let mut nodes = Vec::with_capacity(prealloc(nn));
    for _ in 0..nn {
        let name = NameBuf::from(d.bytes()?.to_vec());
        let kind = match d.u()? {
            0 => {
                let meta = d.meta_src(nq)?;
                let opaque = d.u()? == 1;
                let nc = d.count()?;
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
    check_tree(&nodes)?;
    Ok(LayerIndex {
        digest,
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
    })
}

/// The nodes form one tree from node 0 (a directory), children after
/// their parent, sorted and named by one component: a lookup never loops
/// and never goes out of range.
fn check_tree(nodes: &[IndexNode]) -> D<()> {
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
    for (i, n) in nodes.iter().enumerate() {
        let Kind::Dir { children, .. } = &n.kind else {
            continue;
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
                || bytes == b"."
                || bytes == b".."
                || bytes.contains(&b'/')
                || bytes.contains(&0)
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
    Ok(())
}

/// The import options an index depends on, as bytes (an index built
/// under other policies or limits is rebuilt).
pub(crate) fn options_key(options: &crate::oci::ImportOptions) -> Vec<u8> {
    use crate::oci::Policy;
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

/// How many items to reserve room for up front when an index says `n`:
/// at most a few thousand, so that a count in a damaged or hostile index
/// (each item of which may take one byte there but a hundred in memory)
/// costs no more than the items actually read.
fn prealloc(n: usize) -> usize {
    n.min(4096)
}
