use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, ErrorKind, Operation, Result};

/// A sha256 content digest, written `sha256:<64 lowercase hex digits>`.
///
/// Only sha256 is supported: it is what every registry and runtime writes;
/// a document naming another algorithm is refused with `EOPNOTSUPP`.
///
/// ```
/// use layerstack::oci::Digest;
///
/// let d = Digest::of(b"");
/// assert_eq!(
///     d.to_string(),
///     "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// assert_eq!(d, d.to_string().parse()?);
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// Content digests: the layer digest, the DiffID and the ChainID.
///
/// - A blob's **digest** is the sha256 of its stored bytes (for a layer: the
///   compressed tar).
/// - A layer's **DiffID** is the sha256 of its uncompressed tar.
/// - A stack's **ChainID** names the stack of layers up to and including
///   one layer: `ChainID(L0) = DiffID(L0)` and
///   `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`.
///
/// [`DigestWriter`] and [`DigestReader`] compute a digest while the bytes
/// pass through, so a layer is hashed in the same pass that writes or reads
/// it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `data`.
    #[must_use]
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// A digest from its 32 raw bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The 32 raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits, without the `sha256:` prefix (the blob's file name
    /// in an image layout).
    #[must_use]
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// The first 12 hex digits, as `docker images` shows an id.
    #[must_use]
    pub fn short(&self) -> String {
        self.hex()[..12].to_owned()
    }

    /// Parses `sha256:<hex>`.
    ///
    /// # Errors
    /// `EOPNOTSUPP` for another algorithm; `EINVAL` for anything that is not
    /// 64 lowercase hex digits after `sha256:`.
    pub fn parse(s: &str) -> Result<Digest> {
        let invalid = |why: &str| {
            Error::new(ErrorKind::InvalidInput, Operation::ReadBlob, s)
                .with_detail(format!("not a digest: {why}"))
        };
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(invalid("expected `sha256:<hex>`"));
        };
        if algorithm != "sha256" {
            let valid_name = !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            if !valid_name {
                return Err(invalid("bad algorithm name"));
            }
            return Err(
                Error::new(ErrorKind::Unsupported, Operation::ReadBlob, s).with_detail(format!(
                    "digest algorithm `{algorithm}` is not supported (only sha256)"
                )),
            );
        }
        Digest::from_hex(hex).ok_or_else(|| invalid("expected 64 lowercase hex digits"))
    }

    /// Parses 64 lowercase hex digits.
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(Digest(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

/// The ChainIDs of a stack of layers given by their DiffIDs, bottom first:
/// element `i` names layers `0..=i`.
///
/// ```
/// use layerstack::oci::{Digest, chain_ids};
///
/// let a = Digest::of(b"a");
/// let b = Digest::of(b"b");
/// let chain = chain_ids(&[a, b]);
/// assert_eq!(chain[0], a);
/// assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
/// ```
#[must_use]
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => *diff_id,
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A running sha256 and byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    /// A fresh hasher.
    #[must_use]
    pub fn new() -> Hasher {
        Hasher::default()
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    /// How many bytes went in.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes went in.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything added.
    #[must_use]
    pub fn finish(self) -> Digest {
        Digest(self.sha.finalize().into())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Bytes handed to the hashing thread at a time.
const PIPE_CHUNK: usize = 256 << 10;
/// Chunks queued for the hashing thread: with one being filled and one
/// being hashed, at most `(PIPE_DEPTH + 2) * PIPE_CHUNK` (1.5 MiB) held.
const PIPE_DEPTH: usize = 4;

/// A sha256 and byte count computed on a thread of its own, so that the
/// thread that reads the bytes goes on reading while they are hashed.
///
/// The bytes are copied into owned chunks and sent, in order, through a
/// bounded channel (memory stays bounded; a reader faster than the hash
/// waits for it). The thread is started with the first full chunk, so
/// a short stream is hashed inline and costs no thread; if it cannot be
/// started, hashing goes on inline. [`PipedHasher::finish`] waits for the
/// thread and gives the same digest a [`Hasher`] would.
#[derive(Debug, Default)]
pub(crate) struct PipedHasher {
    /// Hashing inline: before the thread starts, or when it cannot.
    inline: Hasher,
    chunk: Vec<u8>,
    len: u64,
    pipe: Option<Pipe>,
    /// Whether the thread was asked for (once: a hasher that went on
    /// inline stays inline).
    tried: bool,
    /// A chunk could not be handed over (the thread is gone): the digest
    /// is unknown.
    lost: bool,
}

#[derive(Debug)]
struct Pipe {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// Chunks the thread has hashed, to be filled again.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<Hasher>,
}

impl PipedHasher {
    /// A fresh hasher; no thread yet.
    pub(crate) fn new() -> PipedHasher {
        PipedHasher::default()
    }

    /// Adds `data`.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.lost {
            return;
        }
        while !data.is_empty() {
            if self.chunk.capacity() == 0 {
                self.chunk = self.fresh_chunk();
            }
            let room = PIPE_CHUNK - self.chunk.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.chunk.extend_from_slice(now);
            data = rest;
            if self.chunk.len() == PIPE_CHUNK {
                self.hand_over();
            }
        }
    }

    /// How many bytes went in.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The digest of everything added; `None` if the hashing thread was
    /// lost (it panicked), in which case the bytes are unchecked.
    pub(crate) fn finish(mut self) -> Option<Digest> {
        let chunk = std::mem::take(&mut self.chunk);
        // Only a send to a thread can be lost: without one, all is here.
        let Some(pipe) = self.pipe.take() else {
            self.inline.update(&chunk);
            return Some(std::mem::take(&mut self.inline).finish());
        };
        let Pipe { tx, spare, thread } = pipe;
        let sent = chunk.is_empty() || tx.send(chunk).is_ok();
        drop(tx);
        drop(spare);
        let hasher = thread.join().ok()?;
        (sent && !self.lost).then(|| hasher.finish())
    }

    fn fresh_chunk(&mut self) -> Vec<u8> {
        match self.pipe.as_ref().and_then(|p| p.spare.try_recv().ok()) {
            Some(mut chunk) => {
                chunk.clear();
                chunk
            }
            None => Vec::with_capacity(PIPE_CHUNK),
        }
    }

    /// Hands the full chunk to the thread (starting it first if needed);
    /// inline if there is no thread.
    fn hand_over(&mut self) {
        if !self.tried {
            self.tried = true;
            self.pipe = start_pipe();
        }
        let chunk = std::mem::take(&mut self.chunk);
        match &self.pipe {
            Some(pipe) => {
                if pipe.tx.send(chunk).is_err() {
                    self.lost = true;
                }
            }
            None => {
                self.inline.update(&chunk);
                self.chunk = chunk;
                self.chunk.clear();
            }
        }
    }
}

fn start_pipe() -> Option<Pipe> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
    let (give_back, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH + 2);
    let thread = std::thread::Builder::new()
        .name("layerstack-sha256".into())
        .spawn(move || {
            let mut hasher = Hasher::new();
            for chunk in rx {
                hasher.update(&chunk);
                // The reader may have enough spare chunks; then this one goes.
                let _ = give_back.try_send(chunk);
            }
            hasher
        })
        .ok()?;
    Some(Pipe { tx, spare, thread })
}

/// A writer that hashes and counts what passes through to `inner`.
#[derive(Debug)]
pub struct DigestWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> DigestWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> DigestWriter<W> {
        DigestWriter {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what it reads from `inner`.
#[derive(Debug)]
pub struct DigestReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> DigestReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> DigestReader<R> {
        DigestReader {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The inner reader, the digest and the byte count of what was read.
    pub fn finish(self) -> (R, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piped_hasher_gives_the_digest_of_every_byte_in_order() {
        let data: Vec<u8> = (0..5 * PIPE_CHUNK + 17)
            .map(|i| u8::try_from(i * 7 % 251).unwrap())
            .collect();
        for len in [0, 1, PIPE_CHUNK - 1, PIPE_CHUNK, PIPE_CHUNK + 1, data.len()] {
            for piece in [1000, 65_536, PIPE_CHUNK + 3] {
                let mut h = PipedHasher::new();
                for part in data[..len].chunks(piece) {
                    h.update(part);
                }
                assert_eq!(h.len(), len as u64);
                assert_eq!(
                    h.finish(),
                    Some(Digest::of(&data[..len])),
                    "{len} by {piece}"
                );
            }
        }
    }

    #[test]
    fn parse_rejects_bad_digests_with_the_reason() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::parse(&format!("sha256:{hex}")).unwrap().hex(), hex);
        assert_eq!(
            Digest::parse(&format!("sha256:{}", hex.to_uppercase()))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            Digest::parse(&format!("sha512:{hex}"))
                .unwrap_err()
                .to_string(),
            format!(
                "failed to read blob `sha512:{hex}`: digest algorithm `sha512` is not supported (only sha256)"
            )
        );
        assert_eq!(
            Digest::parse(hex).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            Digest::parse("sha256:").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            Digest::parse("sha256:../../etc").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            Digest::parse("SHA256:abc").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn writer_and_reader_hash_what_passes() {
        let mut w = DigestWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (bytes, digest, len) = w.finish();
        assert_eq!(bytes, b"hello world");
        assert_eq!(len, 11);
        assert_eq!(digest, Digest::of(b"hello world"));

        let mut r = DigestReader::new(&b"hello world"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.finish().1, Digest::of(b"hello world"));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        assert!(chain_ids(&[]).is_empty());
        let ids = [Digest::of(b"1"), Digest::of(b"2"), Digest::of(b"3")];
        let chain = chain_ids(&ids);
        let c1 = Digest::of(format!("{} {}", ids[0], ids[1]).as_bytes());
        let c2 = Digest::of(format!("{} {}", c1, ids[2]).as_bytes());
        assert_eq!(chain, vec![ids[0], c1, c2]);
    }
}
