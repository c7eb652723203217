//! Random access into a compressed layer blob: the restart points an
//! index records in its one pass, and the reads that inflate from the
//! nearest one.
//!
//! - A plain tar needs none: an offset in the tar is an offset in the
//!   blob.
//! - gzip: a point at every member start (nothing to remember but where
//!   its header is), and inside a member zran's checkpoints: a deflate
//!   block boundary (its bit position) with the 32 KiB of output before
//!   it, every [`SPAN`] bytes of output. Our own encoder's chunks are
//!   independent (a fresh compressor per 1 MiB, ended by a sync flush), so
//!   in a stream with our header a boundary at each chunk end is a point
//!   with no window: the pass restarts the inflater there, which proves
//!   the chunk is independent (a back-reference across it is an error,
//!   and the pass is then made again the general way).
//! - zstd: a point at every frame start. Our encoder writes 1 MiB frames;
//!   other writers usually write one frame, and then every read inflates
//!   from the start of the blob.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::inflate::RawInflate;
use crate::oci::tar::compress::{Compression, ZstdFrames};

/// Output between two checkpoints of another writer's gzip.
pub(crate) const SPAN: u64 = 4 << 20;

/// Our encoder's independent chunk (see `tar::compress`).
const OUR_CHUNK: u64 = 1 << 20;

/// The gzip header our encoder writes.
const OUR_GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

const WINDOW: usize = 32 << 10;

/// Most bytes a deflated window takes (a window that does not compress
/// is stored: a few bytes more than itself).
pub(crate) const MAX_PACKED_WINDOW: u64 = 40 << 10;

/// Where inflating can start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Point {
    /// Offset in the uncompressed stream.
    pub(crate) out: u64,
    /// Position in the blob, in bits.
    pub(crate) bit: u64,
    /// What is there.
    pub(crate) kind: PointKind,
}

/// What a restart point is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PointKind {
    /// A gzip member's header or a zstd frame.
    Member,
    /// Inside a deflate stream, with the output before it, deflated as it
    /// is made (empty where no back-reference crosses the point). It is
    /// inflated only when a read starts here; a loaded index's windows are
    /// slices of the index file's bytes.
    Deflate(Bytes),
}

/// Adds `point` to `points`, where a point at the same output offset as
/// the last one replaces it: the stretch between them is empty (an empty
/// gzip member or zstd frame), so the later point is as good a start and
/// a stream of empty members costs no memory.
pub(crate) fn push_point(points: &mut Vec<Point>, point: Point) {
    if points.last().is_some_and(|p| p.out == point.out) {
        points.pop();
    }
    points.push(point);
}

/// A window as an index keeps it: deflated.
pub(crate) fn pack_window(window: &[u8]) -> Bytes {
    let mut packed = Vec::with_capacity(window.len() / 2);
    let mut z = flate2::write::DeflateEncoder::new(&mut packed, flate2::Compression::fast());
    io::Write::write_all(&mut z, window).expect("writing to a Vec");
    z.finish().expect("writing to a Vec");
    Bytes::from(packed)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A reader of a blob file from an offset (positioned reads: readers of
/// one file never disturb each other).
#[derive(Debug)]
pub(crate) struct FileAt {
    file: Arc<File>,
    pos: u64,
}

impl Read for FileAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// What the indexing pass records while a gzip stream goes through.
#[derive(Debug, Default)]
struct Recorder {
    points: Vec<Point>,
    /// The last output (up to [`WINDOW`] bytes are kept).
    history: Vec<u8>,
    /// Chunk ends of a stream with our header are taken as independent.
    trust_chunks: bool,
    in_ours: bool,
    last_out: u64,
}

impl Recorder {
    fn keep(&mut self, data: &[u8]) {
        if data.len() >= WINDOW {
            self.history.clear();
            self.history.extend_from_slice(&data[data.len() - WINDOW..]);
            return;
        }
        self.history.extend_from_slice(data);
        if self.history.len() > 4 * WINDOW {
            self.history.drain(..self.history.len() - WINDOW);
        }
    }

    /// The last [`WINDOW`] bytes of output, deflated.
    fn window(&self) -> Bytes {
        pack_window(&self.history[self.history.len().saturating_sub(WINDOW)..])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GzState {
    Header,
    Deflate,
    Done,
}

/// A gzip stream (members one after the other) read from any restart
/// point; with a recorder, the indexing pass from the start, checking
/// each member's CRC and length.
pub(crate) struct GzipCursor<R: Read> {
    src: R,
    buf: Box<[u8]>,
    lo: usize,
    hi: usize,
    /// Blob offset of `buf[0]`.
    base: u64,
    eof: bool,
    inf: RawInflate,
    state: GzState,
    /// Uncompressed offset of the next byte out.
    out: u64,
    /// Output of the current member so far, and its CRC (known only from
    /// the member's start).
    member_out: u64,
    crc: Option<flate2::Crc>,
    record: Option<Recorder>,
    members: u64,
}

impl<R: Read> std::fmt::Debug for GzipCursor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipCursor")
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

impl<R: Read> GzipCursor<R> {
    fn with(src: R, base: u64, out: u64) -> io::Result<GzipCursor<R>> {
        Ok(GzipCursor {
            src,
            buf: vec![0u8; 128 << 10].into_boxed_slice(),
            lo: 0,
            hi: 0,
            base,
            eof: false,
            inf: RawInflate::new()?,
            state: GzState::Header,
            out,
            member_out: 0,
            crc: None,
            record: None,
            members: 0,
        })
    }

    /// The indexing pass over a whole stream (`trust_chunks`: see the
    /// module documentation).
    pub(crate) fn indexing(src: R, trust_chunks: bool) -> io::Result<GzipCursor<R>> {
        let mut c = GzipCursor::with(src, 0, 0)?;
        c.record = Some(Recorder {
            trust_chunks,
            ..Recorder::default()
        });
        Ok(c)
    }

    /// The points recorded.
    pub(crate) fn into_points(self) -> Vec<Point> {
        self.record.map(|r| r.points).unwrap_or_default()
    }

    /// Blob offset of the next unused input byte.
    fn pos(&self) -> u64 {
        self.base + self.lo as u64
    }

    /// Makes at least `n` bytes available (fewer only at the end).
    fn fill(&mut self, n: usize) -> io::Result<()> {
        if self.hi - self.lo >= n || self.eof {
            return Ok(());
        }
        if self.lo > 0 {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.base += self.lo as u64;
            self.hi -= self.lo;
            self.lo = 0;
        }
        while self.hi - self.lo < n && self.hi < self.buf.len() {
            let got = loop {
                match self.src.read(&mut self.buf[self.hi..]) {
                    Ok(g) => break g,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if got == 0 {
                self.eof = true;
                break;
            }
            self.hi += got;
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.fill(n)?;
        if self.hi - self.lo < n {
            return Err(invalid("gzip: the stream is truncated"));
        }
        let v = self.buf[self.lo..self.lo + n].to_vec();
        self.lo += n;
        Ok(v)
    }

    fn skip_zero_terminated(&mut self) -> io::Result<()> {
        loop {
            if self.take(1)?[0] == 0 {
                return Ok(());
            }
        }
    }

    /// Reads a member header; `false` at the end of the stream.
    fn header(&mut self) -> io::Result<bool> {
        self.fill(10)?;
        if self.lo == self.hi {
            if self.members == 0 {
                return Err(invalid("gzip: the stream is empty"));
            }
            return Ok(false);
        }
        let at = self.pos();
        let head = self.take(10)?;
        if head[..3] != [0x1f, 0x8b, 8] {
            return Err(invalid("gzip: invalid gzip header"));
        }
        let flags = head[3];
        if flags & 0xe0 != 0 {
            return Err(invalid("gzip: reserved header flags are set"));
        }
        if flags & 4 != 0 {
            let len = self.take(2)?;
            let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
            self.take(len)?;
        }
        if flags & 8 != 0 {
            self.skip_zero_terminated()?;
        }
        if flags & 16 != 0 {
            self.skip_zero_terminated()?;
        }
        if flags & 2 != 0 {
            self.take(2)?;
        }
        self.inf.reset()?;
        self.members += 1;
        self.member_out = 0;
        self.crc = Some(flate2::Crc::new());
        let out = self.out;
        if let Some(rec) = &mut self.record {
            rec.in_ours = rec.trust_chunks && head[..] == OUR_GZIP_HEADER;
            push_point(
                &mut rec.points,
                Point {
                    out,
                    bit: at * 8,
                    kind: PointKind::Member,
                },
            );
            rec.last_out = out;
        }
        Ok(true)
    }

    fn trailer(&mut self) -> io::Result<()> {
        let t = self.take(8)?;
        if let Some(crc) = &self.crc {
            let want_crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
            let want_len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
            if crc.sum() != want_crc {
                return Err(invalid("gzip: corrupt deflate stream (CRC mismatch)"));
            }
            // ISIZE is the length modulo 2^32.
            if (self.member_out & 0xffff_ffff) as u32 != want_len {
                return Err(invalid(
                    "gzip: the member's length does not match its trailer",
                ));
            }
        }
        Ok(())
    }

    /// At a block end in the indexing pass: maybe a restart point here.
    fn block_end(&mut self, bits: u32) -> io::Result<()> {
        let Some(rec) = &mut self.record else {
            return Ok(());
        };
        let bit = self.base * 8 + self.lo as u64 * 8 - u64::from(bits);
        if rec.in_ours
            && self.member_out > 0
            && self.member_out.is_multiple_of(OUR_CHUNK)
            && bit.is_multiple_of(8)
        {
            if rec.last_out != self.out {
                rec.points.push(Point {
                    out: self.out,
                    bit,
                    kind: PointKind::Deflate(Bytes::new()),
                });
                rec.last_out = self.out;
            }
            // From here on the chunk must stand alone: a back-reference
            // into the chunk before is an error.
            self.inf.reset()?;
        } else if self.out - rec.last_out >= SPAN {
            // Every SPAN of output without a chunk end: a checkpoint with
            // its window. Our own blobs end a chunk every MiB and never get
            // here; other writers with the same header (Go's
            // compress/gzip, flate2's GzEncoder at their default level)
            // do, and would otherwise have no restart point at all.
            rec.points.push(Point {
                out: self.out,
                bit,
                kind: PointKind::Deflate(rec.window()),
            });
            rec.last_out = self.out;
        }
        Ok(())
    }

    /// A cursor at `point` of the gzip blob `file`.
    pub(crate) fn at(file: Arc<File>, point: &Point) -> io::Result<GzipCursor<FileAt>> {
        let byte = point.bit / 8;
        let off = u32::try_from(point.bit % 8).unwrap_or(0);
        let mut c = GzipCursor::with(FileAt { file, pos: byte }, byte, point.out)?;
        let window = match &point.kind {
            PointKind::Member => None,
            // No back-reference crosses the point: no window.
            PointKind::Deflate(packed) if packed.is_empty() => Some(Vec::new()),
            PointKind::Deflate(packed) => {
                let mut w = Vec::with_capacity(WINDOW);
                flate2::read::DeflateDecoder::new(&packed[..])
                    .take(WINDOW as u64)
                    .read_to_end(&mut w)?;
                Some(w)
            }
        };
        if let Some(window) = window {
            c.state = GzState::Deflate;
            c.members = 1;
            if off != 0 {
                let b = GzipCursor::take(&mut c, 1)?[0];
                c.inf.prime(8 - off, b >> off)?;
            }
            if !window.is_empty() {
                c.inf.set_dictionary(&window)?;
            }
        }
        Ok(c)
    }
}

impl<R: Read> Read for GzipCursor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                GzState::Done => return Ok(0),
                GzState::Header => {
                    self.state = if self.header()? {
                        GzState::Deflate
                    } else {
                        GzState::Done
                    };
                }
                GzState::Deflate => {
                    self.fill(1)?;
                    if self.lo == self.hi {
                        return Err(invalid("gzip: the stream is truncated"));
                    }
                    let until_block = self.record.is_some();
                    let step = self
                        .inf
                        .inflate(&self.buf[self.lo..self.hi], out, until_block)
                        .map_err(|e| invalid(format!("gzip: corrupt deflate stream ({e})")))?;
                    self.lo += step.consumed;
                    let made = &out[..step.produced];
                    if let Some(crc) = &mut self.crc {
                        crc.update(made);
                    }
                    if let Some(rec) = &mut self.record {
                        rec.keep(made);
                    }
                    self.out += step.produced as u64;
                    self.member_out += step.produced as u64;
                    if step.end {
                        self.trailer()?;
                        self.state = GzState::Header;
                    } else if step.at_block_end {
                        self.block_end(step.bits)?;
                    } else if step.consumed == 0 && step.produced == 0 {
                        // The inflater needs more input than is buffered.
                        let before = self.hi - self.lo;
                        self.fill(before + 1)?;
                        if self.hi - self.lo == before {
                            return Err(invalid("gzip: the stream is truncated"));
                        }
                    }
                    if step.produced > 0 {
                        return Ok(step.produced);
                    }
                }
            }
        }
    }
}

/// A zstd stream read frame by frame from a frame start, recording each
/// frame's start in the indexing pass.
pub(crate) type ZstdCursor<R> = ZstdFrames<BufReader<R>>;

/// The indexing pass over a whole zstd stream.
pub(crate) fn zstd_indexing<R: Read>(src: R) -> ZstdCursor<R> {
    ZstdFrames::at(BufReader::with_capacity(128 << 10, src), 0, 0, true)
}

/// The frame starts a zstd indexing pass recorded.
pub(crate) fn zstd_points<R: Read>(c: ZstdCursor<R>) -> Vec<Point> {
    // (`ZstdFrames` keeps no start for an empty frame.)
    c.starts
        .unwrap_or_default()
        .into_iter()
        .map(|(at, out)| Point {
            out,
            bit: at * 8,
            kind: PointKind::Member,
        })
        .collect()
}

/// A cursor at frame start `point` of the zstd blob `file`.
fn zstd_at(file: Arc<File>, point: &Point) -> ZstdCursor<FileAt> {
    let pos = point.bit / 8;
    ZstdFrames::at(
        BufReader::with_capacity(128 << 10, FileAt { file, pos }),
        pos,
        point.out,
        false,
    )
}

/// A decoder positioned in the uncompressed stream of a blob.
enum Cursor {
    Gzip(Box<GzipCursor<FileAt>>),
    Zstd(Box<ZstdCursor<FileAt>>),
}

impl Cursor {
    fn out(&self) -> u64 {
        match self {
            Cursor::Gzip(c) => c.out,
            Cursor::Zstd(c) => c.out,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Cursor::Gzip(c) => c.read(buf),
            Cursor::Zstd(c) => c.read(buf),
        }
    }
}

/// Random reads of a blob's uncompressed stream through its restart
/// points, keeping the last decoder for a read that goes on where the
/// previous one stopped.
pub(crate) struct BlobStream {
    file: Arc<File>,
    compression: Compression,
    points: Vec<Point>,
    last: std::sync::Mutex<Option<Cursor>>,
    spans: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("compression", &self.compression)
            .field("points", &self.points.len())
            .finish_non_exhaustive()
    }
}

impl BlobStream {
    pub(crate) fn new(file: File, compression: Compression, points: Vec<Point>) -> BlobStream {
        BlobStream {
            file: Arc::new(file),
            compression,
            points,
            last: std::sync::Mutex::new(None),
            spans: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Spans (stretches between restart points) inflated so far.
    pub(crate) fn spans(&self) -> u64 {
        self.spans.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many points start at or before `out`.
    fn points_upto(&self, out: u64) -> usize {
        self.points.partition_point(|p| p.out <= out)
    }

    /// Fills `buf` from uncompressed offset `offset`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.compression == Compression::None {
            return self.file.read_exact_at(buf, offset);
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let nearest = self.points_upto(offset);
        let Some(point) = nearest.checked_sub(1).map(|i| &self.points[i]) else {
            return Err(invalid("no restart point before the offset"));
        };
        let mut cursor = match last.take() {
            // Going on from the last read is no worse than the point.
            Some(c) if c.out() <= offset && c.out() >= point.out => c,
            _ => {
                self.spans
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.compression {
                    Compression::Gzip => Cursor::Gzip(Box::new(GzipCursor::<FileAt>::at(
                        self.file.clone(),
                        point,
                    )?)),
                    _ => Cursor::Zstd(Box::new(zstd_at(self.file.clone(), point))),
                }
            }
        };
        let started = cursor.out();
        let mut scratch = vec![0u8; 64 << 10];
        while cursor.out() < offset {
            let want = usize::try_from(offset - cursor.out())
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            if cursor.read(&mut scratch[..want])? == 0 {
                return Err(invalid("the stream ends before the offset"));
            }
        }
        let mut filled = 0;
        while filled < buf.len() {
            let n = cursor.read(&mut buf[filled..])?;
            if n == 0 {
                return Err(invalid("the stream ends inside the file's data"));
            }
            filled += n;
        }
        let crossed = self.points_upto(cursor.out().saturating_sub(1)) - self.points_upto(started);
        self.spans
            .fetch_add(crossed as u64, std::sync::atomic::Ordering::Relaxed);
        *last = Some(cursor);
        Ok(())
    }
}
