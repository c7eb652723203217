use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::thread;

use flate2::read::MultiGzDecoder;

/// How a layer's tar is compressed.
///
/// Layer compression: none, gzip or zstd, detected from the bytes on read.
///
/// Both codecs are pure Rust: gzip through `flate2`'s `zlib-rs` backend
/// (a port of zlib-ng), zstd read through `ruzstd` and written through
/// `ruzstd` (its only level, about zstd's level 1) or, with the feature
/// `zstd-levels`, through `rusty_zstd` at zstd's default level 3. Reading accepts concatenated gzip
/// members and concatenated (and skippable) zstd frames, as `gzip -d` and
/// `zstd -d` do. Writing is deterministic: the same tar gives the same
/// compressed bytes, so the same content gives the same layer digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (the default of Docker and of most registries).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// The compression of a stream that starts with `prefix` (its first four
    /// bytes or all of it if shorter): gzip and zstd by their magic numbers,
    /// anything else is taken as a plain tar (whose parser then judges it).
    ///
    /// ```
    /// use layerstack::oci::Compression;
    /// assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
    /// assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
    /// assert_eq!(Compression::detect(b"etc/"), Compression::None);
    /// ```
    #[must_use]
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if prefix.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI media type of a layer with this compression.
    #[must_use]
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The compression a layer media type declares: the OCI types, their
    /// `nondistributable` variants and Docker's v2 layer types. `None` for
    /// a media type that is not a layer.
    #[must_use]
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The name used on the command line and in messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Compression, String> {
        match s {
            "none" | "tar" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            _ => Err(format!(
                "unknown compression `{s}` (expected none, gzip or zstd)"
            )),
        }
    }
}

/// A reader of the uncompressed bytes of a layer, whatever its compression.
pub struct Decompressor<R: Read> {
    compression: Compression,
    inner: DecoderKind<Prefixed<R>>,
}

type Prefixed<R> = BufReader<io::Chain<io::Cursor<Vec<u8>>, R>>;

enum DecoderKind<R: BufRead> {
    Plain(R),
    Gzip(Box<MultiGzDecoder<R>>),
    Zstd(Box<ZstdFrames<R>>),
}

impl<R: Read> std::fmt::Debug for Decompressor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Decompressor<R> {
    /// Detects the compression of `reader` from its first bytes and decodes
    /// it.
    ///
    /// # Errors
    /// Errors reading the first bytes.
    pub fn new(mut reader: R) -> io::Result<Decompressor<R>> {
        let mut prefix = Vec::with_capacity(4);
        let mut buf = [0u8; 4];
        while prefix.len() < 4 {
            match reader.read(&mut buf[..4 - prefix.len()]) {
                Ok(0) => break,
                Ok(n) => prefix.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let compression = Compression::detect(&prefix);
        let buffered = BufReader::with_capacity(256 * 1024, io::Cursor::new(prefix).chain(reader));
        let inner = match compression {
            Compression::None => DecoderKind::Plain(buffered),
            Compression::Gzip => DecoderKind::Gzip(Box::new(MultiGzDecoder::new(buffered))),
            Compression::Zstd => DecoderKind::Zstd(Box::new(ZstdFrames::new(buffered))),
        };
        Ok(Decompressor { compression, inner })
    }

    /// The compression that was detected.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            DecoderKind::Plain(r) => r.read(buf),
            DecoderKind::Gzip(r) => r.read(buf),
            DecoderKind::Zstd(r) => r.read(buf),
        }
    }
}

/// Counts what a `BufRead` hands out: the stream offset a zstd frame
/// decoder has reached.
pub(crate) struct Counted<R> {
    inner: R,
    pub(crate) pos: u64,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt as u64;
        self.inner.consume(amt);
    }
}

/// Decodes a sequence of zstd frames, skipping skippable frames; can
/// start at any frame (at stream offset `pos`, output offset `out`) and
/// record where each frame starts (stream offset, output offset).
pub(crate) struct ZstdFrames<R: BufRead> {
    source: Counted<R>,
    decoder: ruzstd::decoding::FrameDecoder,
    /// A frame is being decoded.
    in_frame: bool,
    /// Output offset of the next byte read.
    pub(crate) out: u64,
    /// Frame starts, when recorded.
    pub(crate) starts: Option<Vec<(u64, u64)>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> ZstdFrames<R> {
        ZstdFrames::at(source, 0, 0, false)
    }

    /// Frames from `source`, which is at stream offset `pos` (a frame
    /// start) and output offset `out`; `record`: keep each frame's start.
    pub(crate) fn at(source: R, pos: u64, out: u64, record: bool) -> ZstdFrames<R> {
        ZstdFrames {
            source: Counted { inner: source, pos },
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
            out,
            starts: record.then(Vec::new),
        }
    }

    /// Starts the next frame; `false` at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            let at = self.source.pos;
            match self.decoder.init(&mut self.source) {
                Ok(()) => {
                    self.in_frame = true;
                    if let Some(starts) = &mut self.starts {
                        // An empty frame before this one is no start of
                        // its own: this one replaces it.
                        if starts.last().is_some_and(|&(_, out)| out == self.out) {
                            starts.pop();
                        }
                        starts.push((at, self.out));
                    }
                    return Ok(true);
                }
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let length = u64::from(length);
                    let skipped = io::copy(&mut (&mut self.source).take(length), &mut io::sink())?;
                    if skipped != length {
                        return Err(invalid("zstd: truncated skippable frame"));
                    }
                }
                Err(e) => return Err(invalid(format!("zstd: {e}"))),
            }
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame && !self.next_frame()? {
                return Ok(0);
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let want = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(want))
                    .map_err(|e| invalid(format!("zstd: {e}")))?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                self.out += n as u64;
                return Ok(n);
            }
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A writer that compresses into `inner`; [`Compressor::finish`] ends the
/// stream and gives `inner` back.
///
/// Compression runs on worker threads, one chunk of 1 MiB each, so it uses
/// every core and overlaps with producing the tar; the output does not
/// depend on the number of threads.
pub struct Compressor<W: Write> {
    kind: EncoderKind<W>,
}

enum EncoderKind<W: Write> {
    Plain(W),
    Compressed(ParallelEncoder<W>),
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.kind {
            EncoderKind::Plain(_) => "none",
            EncoderKind::Compressed(e) if e.codec == Codec::Gzip => "gzip",
            EncoderKind::Compressed(_) => "zstd",
        };
        f.debug_struct("Compressor")
            .field("compression", &name)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Compressor<W> {
    /// Compresses with `compression` into `inner`.
    pub fn new(inner: W, compression: Compression) -> Compressor<W> {
        let kind = match compression {
            Compression::None => EncoderKind::Plain(inner),
            Compression::Gzip => EncoderKind::Compressed(ParallelEncoder::new(inner, Codec::Gzip)),
            Compression::Zstd => EncoderKind::Compressed(ParallelEncoder::new(inner, Codec::Zstd)),
        };
        Compressor { kind }
    }

    /// Ends the compressed stream and returns the inner writer.
    ///
    /// # Errors
    /// Errors writing to the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self.kind {
            EncoderKind::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            EncoderKind::Compressed(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.kind {
            EncoderKind::Plain(w) => w.write(buf),
            EncoderKind::Compressed(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.kind {
            EncoderKind::Plain(w) => w.flush(),
            // Compressed output is written as chunks complete, and all of
            // it by finish.
            EncoderKind::Compressed(_) => Ok(()),
        }
    }
}

/// Input is cut into chunks of this many bytes, compressed independently
/// (gzip, and zstd without `zstd-levels`).
const CHUNK: usize = 1 << 20;

/// The chunk size of zstd at level 3: four times [`CHUNK`], so that the
/// chunks cost little against one frame with zstd's 2 MiB window at that
/// level (measured on the corpus: 9% larger than `zstd -3` with 1 MiB
/// chunks).
#[cfg(feature = "zstd-levels")]
const ZSTD_CHUNK: usize = 4 << 20;
#[cfg(not(feature = "zstd-levels"))]
const ZSTD_CHUNK: usize = CHUNK;

impl Codec {
    /// The number of input bytes per chunk.
    fn chunk(self) -> usize {
        match self {
            Codec::Gzip => CHUNK,
            Codec::Zstd => ZSTD_CHUNK,
        }
    }
}

/// The codec of a [`ParallelEncoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Gzip,
    Zstd,
}

/// A compressing writer that uses every core, as `pigz` and `pzstd` do:
/// the input is cut into chunks of [`CHUNK`] bytes ([`ZSTD_CHUNK`] for
/// zstd), each compressed by a
/// fresh compressor on a worker thread, and the results are written in
/// order. The chunk boundaries depend only on the byte count, so the
/// output is the same however the threads are scheduled. Back-references
/// never cross a chunk, which costs a fraction of a percent of the size.
///
/// - gzip: each chunk is raw deflate at level 6 (`gzip`'s default) ended by
///   a sync flush (the last by the final block), so the chunks form one
///   deflate stream in one gzip member: readers that stop after the first
///   member still see everything.
/// - zstd: each chunk is one frame (a zstd stream is a sequence of
///   frames): `ruzstd`'s only level, about zstd's level 1, or with the
///   feature `zstd-levels` level 3 (`zstd`'s default) with a content
///   checksum, as the `zstd` command writes.
struct ParallelEncoder<W: Write> {
    codec: Codec,
    inner: W,
    /// CRC-32 of the input (the gzip trailer).
    crc: flate2::Crc,
    pending: Vec<u8>,
    /// Sequence number of the next chunk handed out, and of the next one to
    /// be written.
    sent: u64,
    written: u64,
    ready: std::collections::BTreeMap<u64, io::Result<Vec<u8>>>,
    /// `None` when no worker could be started: chunks are then compressed
    /// on the caller's thread. Dropping it (with the encoder) ends the
    /// workers.
    jobs: Option<mpsc::SyncSender<Job>>,
    results: mpsc::Receiver<(u64, io::Result<Vec<u8>>)>,
    workers: Vec<thread::JoinHandle<()>>,
    header_written: bool,
}

/// A chunk to compress: its sequence number, its bytes, whether it is the
/// last one.
type Job = (u64, Vec<u8>, bool);

impl<W: Write> ParallelEncoder<W> {
    fn new(inner: W, codec: Codec) -> ParallelEncoder<W> {
        let n = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(n);
        let (out_tx, results) = mpsc::channel();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let workers: Vec<_> = (0..n)
            .filter_map(|_| {
                let (rx, tx) = (job_rx.clone(), out_tx.clone());
                thread::Builder::new()
                    .name("layerstack-compress".into())
                    .spawn(move || {
                        loop {
                            let job = rx.lock().map(|rx| rx.recv());
                            let Ok(Ok((seq, data, last))) = job else {
                                return;
                            };
                            if tx
                                .send((seq, compress_chunk(codec, &data, seq, last)))
                                .is_err()
                            {
                                return;
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        ParallelEncoder {
            codec,
            inner,
            crc: flate2::Crc::new(),
            pending: Vec::with_capacity(codec.chunk()),
            sent: 0,
            written: 0,
            ready: std::collections::BTreeMap::new(),
            jobs: (!workers.is_empty()).then_some(job_tx),
            results,
            workers,
            header_written: false,
        }
    }

    /// Hands the pending input out as the next chunk, then writes what is
    /// done, waiting while too many chunks are in flight (and, for the
    /// last chunk, until all are written).
    fn send_pending(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.pending, Vec::with_capacity(self.codec.chunk()));
        let seq = self.sent;
        self.sent += 1;
        match &self.jobs {
            Some(jobs) => {
                if jobs.send((seq, data, last)).is_err() {
                    return Err(io::Error::other("the compression threads stopped"));
                }
            }
            None => {
                self.ready
                    .insert(seq, compress_chunk(self.codec, &data, seq, last));
            }
        }
        let limit = 2 * self.workers.len().max(1) as u64;
        while self.sent - self.written > limit || (last && self.written < self.sent) {
            self.write_ready()?;
            if self.written < self.sent && !self.ready.contains_key(&self.written) {
                match self.results.recv() {
                    Ok((seq, out)) => {
                        self.ready.insert(seq, out);
                    }
                    Err(_) => return Err(io::Error::other("the compression threads stopped")),
                }
            }
        }
        while let Ok((seq, out)) = self.results.try_recv() {
            self.ready.insert(seq, out);
        }
        self.write_ready()
    }

    /// Writes the chunks that are done, in order.
    fn write_ready(&mut self) -> io::Result<()> {
        if !self.header_written {
            if self.codec == Codec::Gzip {
                // No name, no time, OS "unknown": the same bytes everywhere.
                self.inner
                    .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            }
            self.header_written = true;
        }
        while let Some(out) = self.ready.remove(&self.written) {
            self.inner.write_all(&out?)?;
            self.written += 1;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.send_pending(true)?;
        if self.codec == Codec::Gzip {
            let mut trailer = [0u8; 8];
            trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
            trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
            self.inner.write_all(&trailer)?;
        }
        self.inner.flush()?;
        self.jobs = None;
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (self.codec.chunk() - self.pending.len()).min(buf.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.codec == Codec::Gzip {
            self.crc.update(&buf[..n]);
        }
        if self.pending.len() == self.codec.chunk() {
            self.send_pending(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Chunk `seq` compressed. A panic in a codec becomes an error (the
/// workers must always answer, or the writer would wait forever).
fn compress_chunk(codec: Codec, data: &[u8], seq: u64, last: bool) -> io::Result<Vec<u8>> {
    let run = || match codec {
        Codec::Gzip => deflate_chunk(data, last),
        // An empty last chunk adds no frame, unless it is the only one: a
        // zstd stream needs at least one frame.
        Codec::Zstd if data.is_empty() && seq > 0 => Ok(Vec::new()),
        Codec::Zstd => zstd_chunk(data),
    };
    std::panic::catch_unwind(run).unwrap_or_else(|_| Err(io::Error::other("the compressor failed")))
}

/// The level zstd chunks are written at with `zstd-levels` (the `zstd`
/// command's default).
#[cfg(feature = "zstd-levels")]
const ZSTD_LEVEL: i32 = 3;

/// One chunk as one zstd frame.
#[cfg(feature = "zstd-levels")]
fn zstd_chunk(data: &[u8]) -> io::Result<Vec<u8>> {
    rusty_zstd::compress(data, ZSTD_LEVEL).map_err(|e| io::Error::other(format!("zstd: {e}")))
}

/// One chunk as one zstd frame.
#[cfg(not(feature = "zstd-levels"))]
#[allow(clippy::unnecessary_wraps)] // the same signature as with `zstd-levels`
fn zstd_chunk(data: &[u8]) -> io::Result<Vec<u8>> {
    Ok(ruzstd::encoding::compress_to_vec(
        data,
        ruzstd::encoding::CompressionLevel::Fastest,
    ))
}

/// One chunk as raw deflate blocks: ended by a sync flush (an empty stored
/// block, so the next chunk starts on a byte boundary), or, for the last
/// chunk, by the final block.
fn deflate_chunk(data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
        let status = c
            .compress_vec(&data[consumed.min(data.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = usize::try_from(c.total_in()).is_ok_and(|n| n == data.len());
        match status {
            Status::StreamEnd => return Ok(out),
            _ if !last && all_in && out.len() < out.capacity() => return Ok(out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several chunks deflated on worker threads make one gzip member that
    /// a reader of single members (flate2's `GzDecoder`, like many) reads
    /// whole; the bytes do not depend on scheduling; empty input works.
    #[test]
    fn parallel_gzip_is_one_member_and_deterministic() {
        let mut data = Vec::new();
        let mut x = 1u32;
        while data.len() < 3 * CHUNK + 12_345 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            // Half compressible text, half noise.
            if x.is_multiple_of(2) {
                data.extend_from_slice(b"usr/share/doc/layerstack/copyright ");
            } else {
                data.extend_from_slice(&x.to_le_bytes());
            }
        }
        let pack = |data: &[u8]| {
            let mut c = Compressor::new(Vec::new(), Compression::Gzip);
            for piece in data.chunks(100_003) {
                c.write_all(piece).unwrap();
            }
            c.finish().unwrap()
        };
        let packed = pack(&data);
        assert_eq!(pack(&data), packed);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        assert!(packed.len() < data.len() * 3 / 4, "{} bytes", packed.len());

        let empty = pack(b"");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    fn round_trip(compression: Compression, data: &[u8]) -> Vec<u8> {
        let mut c = Compressor::new(Vec::new(), compression);
        for chunk in data.chunks(7_777) {
            c.write_all(chunk).unwrap();
        }
        let packed = c.finish().unwrap();
        let mut d = Decompressor::new(&packed[..]).unwrap();
        assert_eq!(d.compression(), compression);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(round_trip(c, &data), data, "{c}");
            assert_eq!(round_trip(c, b""), b"", "{c}");
        }
    }

    /// Input of several chunks, and of an exact multiple of a chunk (the
    /// last chunk is then empty): every codec gives the bytes back, and
    /// zstd writes exactly one frame per chunk of data.
    #[test]
    fn chunk_boundaries_round_trip() {
        let data: Vec<u8> = (0..3 * ZSTD_CHUNK as u32 + 5)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x3f)
            .collect();
        for chunk in [CHUNK, ZSTD_CHUNK] {
            for len in [chunk - 1, chunk, chunk + 1, 2 * chunk] {
                for c in [Compression::Gzip, Compression::Zstd] {
                    assert_eq!(round_trip(c, &data[..len]), &data[..len], "{c} {len}");
                }
            }
        }
        assert_eq!(round_trip(Compression::Zstd, &data), data);
        let mut c = Compressor::new(Vec::new(), Compression::Zstd);
        c.write_all(&data[..2 * ZSTD_CHUNK]).unwrap();
        let frames: Vec<u8> = data[..2 * ZSTD_CHUNK]
            .chunks(ZSTD_CHUNK)
            .flat_map(|chunk| zstd_chunk(chunk).unwrap())
            .collect();
        assert_eq!(c.finish().unwrap(), frames);
    }

    /// Runs `zstd args` with `input` on stdin; `None` (with a printed
    /// reason) when it is not installed and CI does not require it.
    fn zstd(args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
        use std::process::{Command, Stdio};
        let child = Command::new("zstd")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var_os("LAYERSTACK_REQUIRE_TOOLS").is_none(),
                    "`zstd` is required (LAYERSTACK_REQUIRE_TOOLS): {e}"
                );
                println!("skipped: `zstd` could not be run ({e})");
                return None;
            }
        };
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "zstd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(out.stdout)
    }

    /// Our zstd output through the `zstd` command (which checks each
    /// frame, and its checksum when there is one), and the command's output
    /// (one frame over several of our chunks, at levels 1, 3 and 19)
    /// through our reader: the same bytes both ways.
    #[test]
    fn the_zstd_command_reads_ours_and_we_read_its() {
        let mut data = Vec::new();
        let mut x = 0x9e37_79b9_u32;
        while data.len() < 3 * ZSTD_CHUNK + 4_321 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x.is_multiple_of(3) {
                data.extend_from_slice(&x.to_le_bytes());
            } else {
                data.extend_from_slice(b"usr/lib/x86_64-linux-gnu/libc.so.6 ");
            }
        }
        for input in [&data[..], &data[..ZSTD_CHUNK], b"", b"x"] {
            let mut c = Compressor::new(Vec::new(), Compression::Zstd);
            c.write_all(input).unwrap();
            let ours = c.finish().unwrap();
            let Some(back) = zstd(&["-d", "-c"], &ours) else {
                return;
            };
            assert_eq!(back, input, "{} bytes through zstd -d", input.len());
            for level in ["-1", "-3", "-19"] {
                let theirs = zstd(&[level, "-c"], input).unwrap();
                let mut out = Vec::new();
                Decompressor::new(&theirs[..])
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(out, input, "zstd {level} of {} bytes", input.len());
            }
        }
    }

    #[test]
    fn compression_is_deterministic() {
        let data = b"the same bytes give the same compressed bytes".repeat(1000);
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut a = Compressor::new(Vec::new(), c);
            a.write_all(&data).unwrap();
            let mut b = Compressor::new(Vec::new(), c);
            b.write_all(&data).unwrap();
            assert_eq!(a.finish().unwrap(), b.finish().unwrap(), "{c}");
        }
    }

    #[test]
    fn concatenated_streams_and_skippable_frames_decode() {
        let mut packed = Vec::new();
        for part in [&b"first "[..], b"second"] {
            let mut c = Compressor::new(Vec::new(), Compression::Zstd);
            c.write_all(part).unwrap();
            packed.extend(c.finish().unwrap());
            // A skippable frame between (magic 0x184D2A50, length 3).
            packed.extend([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        }
        let mut out = String::new();
        Decompressor::new(&packed[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "first second");

        let mut gz = Vec::new();
        for part in [&b"one "[..], b"two"] {
            let mut c = Compressor::new(Vec::new(), Compression::Gzip);
            c.write_all(part).unwrap();
            gz.extend(c.finish().unwrap());
        }
        let mut out = String::new();
        Decompressor::new(&gz[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "one two");
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut c = Compressor::new(Vec::new(), Compression::Zstd);
        c.write_all(&b"abc".repeat(10_000)).unwrap();
        let mut packed = c.finish().unwrap();
        let mid = packed.len() / 2;
        for b in &mut packed[mid..] {
            *b ^= 0x5a;
        }
        let mut out = Vec::new();
        let e = Decompressor::new(&packed[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().starts_with("zstd: "), "{e}");

        let mut c = Compressor::new(Vec::new(), Compression::Gzip);
        c.write_all(&b"abc".repeat(10_000)).unwrap();
        let packed = c.finish().unwrap();
        let truncated = &packed[..packed.len() - 10];
        let mut out = Vec::new();
        let e = Decompressor::new(truncated)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }

    #[test]
    fn media_types_name_their_compression() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::from_media_type(c.layer_media_type()), Some(c));
        }
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_media_type("application/json"), None);
    }
}
