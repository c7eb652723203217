//! File data as a rope of shared byte chunks.
//!
//! A [`FileData`] is a list of chunks, each a slice of a shared [`Bytes`]
//! buffer, a run of zeros (a hole), or a run of bytes in a [`Spill`]'s
//! file. Cloning it costs one allocation per chunk and never copies file
//! contents, so a copy-up in memory shares the lower layer's buffers; a
//! small write into a large file splits one chunk and stores only the new
//! bytes.
//!
//! Reads return a [`Result`]: data in a spill file is read with `pread`,
//! which can fail. Data written without a spill is in memory, and reads of
//! it fail only when the bytes asked for at once do not fit in memory.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::spill::{Extent, Spill};

/// Writes smaller than this are merged into a neighbouring small chunk, so
/// that many tiny writes do not fragment a file into tiny chunks.
const MERGE_LIMIT: usize = 4096;

#[derive(Clone, PartialEq, Eq)]
enum Chunk {
    Data(Bytes),
    /// Bytes not in memory. A separate enum, so that a chunk stays the
    /// size of a `Bytes` (its one niche tells the two variants apart):
    /// a layer holds one chunk or more per file.
    Off(Off),
}

#[derive(Clone, PartialEq, Eq)]
enum Off {
    Zeros(u64),
    Spilled(Extent),
}

impl Chunk {
    fn len(&self) -> u64 {
        match self {
            Chunk::Data(b) => b.len() as u64,
            Chunk::Off(Off::Zeros(n)) => *n,
            Chunk::Off(Off::Spilled(e)) => e.len(),
        }
    }

    fn slice(&self, from: u64, to: u64) -> Chunk {
        match self {
            Chunk::Data(b) => Chunk::Data(b.slice(from as usize..to as usize)),
            Chunk::Off(Off::Zeros(_)) => Chunk::Off(Off::Zeros(to - from)),
            Chunk::Off(Off::Spilled(e)) => Chunk::Off(Off::Spilled(e.slice(from, to))),
        }
    }

    /// Appends bytes `from..to` of the chunk to `out`.
    fn read_into(&self, from: u64, to: u64, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Chunk::Data(b) => out.extend_from_slice(&b[from as usize..to as usize]),
            Chunk::Off(Off::Zeros(_)) => out.resize(out.len() + (to - from) as usize, 0),
            Chunk::Off(Off::Spilled(e)) => {
                let at = out.len();
                out.resize(at + (to - from) as usize, 0);
                e.read_into(from, &mut out[at..])?;
            }
        }
        Ok(())
    }
}

/// A buffer for `len` bytes, or an error if memory cannot hold them (a
/// read of a whole 50 GB file, say), never an abort.
fn buffer(len: u64) -> Result<Vec<u8>> {
    let too_large = || {
        Error::new(ErrorKind::LimitExceeded, Operation::Read, "").with_detail(format!(
            "{len} bytes asked for at once do not fit in memory; read in pieces"
        ))
    };
    let len = usize::try_from(len).map_err(|_| too_large())?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| too_large())?;
    Ok(out)
}

/// The contents of a regular file: cheap to clone, cheap to change in part.
///
/// ```
/// use layerstack::FileData;
///
/// let mut data = FileData::from(vec![b'a'; 10]);
/// data.write_at(4, b"XY");
/// data.set_len(12);
/// assert_eq!(&data.to_bytes()?[..], b"aaaaXYaaaa\0\0");
/// assert_eq!(&data.read_at(3, 4)?[..], b"aXYa");
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// With a [`Spill`], writes keep data in memory up to the spill's budget
/// and put the rest in the spill's file
/// ([`write_at_spilling`](FileData::write_at_spilling),
/// [`keep_or_spill`](FileData::keep_or_spill)).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileData {
    /// Chunks in order with the offset each starts at.
    chunks: Vec<(u64, Chunk)>,
    len: u64,
}

impl FileData {
    /// Empty data.
    #[must_use]
    pub fn new() -> FileData {
        FileData::default()
    }

    /// `len` zero bytes, stored as a hole.
    #[must_use]
    pub fn zeros(len: u64) -> FileData {
        let mut d = FileData::new();
        d.set_len(len);
        d
    }

    /// The length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the length is zero.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of chunks (a measure of fragmentation).
    #[must_use]
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Index of the chunk that holds byte `offset` (`offset < len`).
    fn chunk_index(&self, offset: u64) -> usize {
        self.chunks.partition_point(|(start, _)| *start <= offset) - 1
    }

    /// Up to `len` bytes from `offset` (fewer at the end, none past it).
    /// A read inside one chunk in memory shares its buffer.
    ///
    /// # Errors
    /// Errors reading a spill file (naming its directory); `EDQUOT` if
    /// the bytes asked for do not fit in memory.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        if offset >= self.len || len == 0 {
            return Ok(Bytes::new());
        }
        let end = self.len.min(offset.saturating_add(len as u64));
        let first = self.chunk_index(offset);
        let (start, chunk) = &self.chunks[first];
        if end <= start + chunk.len()
            && let Chunk::Data(b) = chunk.slice(offset - start, end - start)
        {
            return Ok(b);
        }
        let mut out = buffer(end - offset)?;
        for (start, chunk) in &self.chunks[first..] {
            if *start >= end {
                break;
            }
            let from = offset.max(*start) - start;
            let to = end.min(start + chunk.len()) - start;
            chunk.read_into(from, to, &mut out)?;
        }
        Ok(Bytes::from(out))
    }

    /// All the bytes in one buffer (shared when there is one chunk in
    /// memory).
    ///
    /// # Errors
    /// As [`FileData::read_at`].
    pub fn to_bytes(&self) -> Result<Bytes> {
        self.read_at(0, usize::try_from(self.len).unwrap_or(usize::MAX))
    }

    /// Bytes of data held in memory (holes and spilled data excluded).
    #[must_use]
    pub fn memory_len(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|(_, c)| matches!(c, Chunk::Data(_)))
            .map(|(_, c)| c.len())
            .sum()
    }

    /// As [`write_at`](Self::write_at), but the bytes stay in memory only
    /// if `spill`'s budget has room for them; else they are written to its
    /// file. Zeros are a hole either way.
    ///
    /// # Errors
    /// Errors making or writing the spill file (naming its directory),
    /// `ENOSPC` among them; the data is then unchanged.
    pub fn write_at_spilling(&mut self, offset: u64, data: &[u8], spill: &Spill) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if data.iter().all(|&b| b == 0) {
            self.write_zeros(offset, data.len() as u64);
        } else if spill.keep(data.len() as u64) {
            self.write_chunk(offset, Bytes::copy_from_slice(data));
        } else {
            let extent = spill.append(data)?;
            self.put_chunk(offset, Chunk::Off(Off::Spilled(extent)));
        }
        Ok(())
    }

    /// The data `read` gives piece by piece (`read(offset)` returns the
    /// bytes from `offset`, none at the end), stored as
    /// [`write_at_spilling`](Self::write_at_spilling) stores it: a file
    /// copied from elsewhere without ever being whole in memory.
    #[cfg(feature = "oci")]
    pub(crate) fn read_from(
        mut read: impl FnMut(u64) -> Result<Bytes>,
        spill: &Spill,
    ) -> Result<FileData> {
        let mut data = FileData::new();
        loop {
            let piece = read(data.len)?;
            if piece.is_empty() {
                return Ok(data);
            }
            data.write_at_spilling(data.len, &piece, spill)?;
        }
    }

    /// Counts the data this holds in memory against `spill`'s budget and,
    /// if it does not fit, moves it to the spill's file: data made
    /// elsewhere (a file read whole) enters a layer with a spill this way.
    ///
    /// # Errors
    /// As [`write_at_spilling`](Self::write_at_spilling).
    pub fn keep_or_spill(&mut self, spill: &Spill) -> Result<()> {
        let in_memory = self.memory_len();
        if in_memory == 0 || spill.keep(in_memory) {
            return Ok(());
        }
        let mut spilled = Vec::with_capacity(self.chunks.len());
        for (start, chunk) in &self.chunks {
            let chunk = match chunk {
                Chunk::Data(b) => Chunk::Off(Off::Spilled(spill.append(b)?)),
                other => other.clone(),
            };
            spilled.push((*start, chunk));
        }
        self.chunks = spilled;
        Ok(())
    }

    /// Replaces the bytes at `offset..offset + data.len()`, growing the file
    /// (with a hole if `offset` is past the end). Zeros are stored as a
    /// hole, not copied: a file of zeros written piece by piece (a layer
    /// tar's large empty file) costs no memory for its data.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if data.iter().all(|&b| b == 0) {
            self.write_zeros(offset, data.len() as u64);
            return;
        }
        self.write_chunk(offset, Bytes::copy_from_slice(data));
    }

    /// Replaces `len` bytes at `offset` with zeros, stored as a hole,
    /// growing the file if needed.
    pub fn write_zeros(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.put_chunk(offset, Chunk::Off(Off::Zeros(len)));
    }

    /// As [`write_at`](Self::write_at), sharing `data` instead of copying it.
    pub fn write_bytes_at(&mut self, offset: u64, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.write_chunk(offset, data);
    }

    fn write_chunk(&mut self, offset: u64, data: Bytes) {
        self.put_chunk(offset, Chunk::Data(data));
    }

    fn put_chunk(&mut self, offset: u64, chunk: Chunk) {
        if offset > self.len {
            self.set_len(offset);
        }
        let end = offset + chunk.len();
        // Split so that chunks start exactly at `offset` and `end`.
        self.split_at(offset);
        self.split_at(end);
        let first = self.chunks.partition_point(|(s, _)| *s < offset);
        let last = self.chunks.partition_point(|(s, _)| *s < end);
        self.chunks.splice(first..last, [(offset, chunk)]);
        self.len = self.len.max(end);
        self.merge_small_around(first);
    }

    /// Splits the chunk that contains `at` so that a chunk starts at `at`.
    fn split_at(&mut self, at: u64) {
        if at == 0 || at >= self.len {
            return;
        }
        let i = self.chunk_index(at);
        let (start, chunk) = &self.chunks[i];
        if *start == at {
            return;
        }
        let start = *start;
        let (left, right) = (
            chunk.slice(0, at - start),
            chunk.slice(at - start, chunk.len()),
        );
        self.chunks[i] = (start, left);
        self.chunks.insert(i + 1, (at, right));
    }

    /// Merges chunk `i` with small data neighbours.
    fn merge_small_around(&mut self, mut i: usize) {
        if i > 0 && self.mergeable(i - 1, i) {
            self.merge(i - 1);
            i -= 1;
        }
        if i + 1 < self.chunks.len() && self.mergeable(i, i + 1) {
            self.merge(i);
        }
    }

    fn mergeable(&self, a: usize, b: usize) -> bool {
        match (&self.chunks[a].1, &self.chunks[b].1) {
            (Chunk::Data(x), Chunk::Data(y)) => x.len() + y.len() <= MERGE_LIMIT,
            (Chunk::Off(Off::Zeros(_)), Chunk::Off(Off::Zeros(_))) => true,
            // One run of a spill file (a file spilled piece by piece).
            (Chunk::Off(Off::Spilled(x)), Chunk::Off(Off::Spilled(y))) => x.joined(y).is_some(),
            _ => false,
        }
    }

    fn merge(&mut self, a: usize) {
        let (_, right) = self.chunks.remove(a + 1);
        let left = &mut self.chunks[a].1;
        *left = match (&*left, right) {
            (Chunk::Data(x), Chunk::Data(y)) => {
                let mut m = BytesMut::with_capacity(x.len() + y.len());
                m.extend_from_slice(x);
                m.extend_from_slice(&y);
                Chunk::Data(m.freeze())
            }
            (Chunk::Off(Off::Zeros(x)), Chunk::Off(Off::Zeros(y))) => Chunk::Off(Off::Zeros(x + y)),
            (Chunk::Off(Off::Spilled(x)), Chunk::Off(Off::Spilled(y))) => Chunk::Off(Off::Spilled(
                x.joined(&y).expect("only adjacent extents are merged"),
            )),
            _ => unreachable!("only like chunks are merged"),
        };
    }

    /// Truncates or extends (with zeros) to `len` bytes.
    pub fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.split_at(len);
            let keep = self.chunks.partition_point(|(s, _)| *s < len);
            self.chunks.truncate(keep);
        } else if len > self.len {
            match self.chunks.last_mut() {
                Some((_, Chunk::Off(Off::Zeros(n)))) => *n += len - self.len,
                _ => self
                    .chunks
                    .push((self.len, Chunk::Off(Off::Zeros(len - self.len)))),
            }
        }
        self.len = len;
    }

    /// Appends bytes at the end.
    pub fn append(&mut self, data: &[u8]) {
        self.write_at(self.len, data);
    }
}

impl From<Bytes> for FileData {
    fn from(b: Bytes) -> FileData {
        let len = b.len() as u64;
        if len == 0 {
            return FileData::new();
        }
        FileData {
            chunks: vec![(0, Chunk::Data(b))],
            len,
        }
    }
}

impl From<Vec<u8>> for FileData {
    fn from(v: Vec<u8>) -> FileData {
        FileData::from(Bytes::from(v))
    }
}

impl From<&[u8]> for FileData {
    fn from(v: &[u8]) -> FileData {
        FileData::from(Bytes::copy_from_slice(v))
    }
}

impl From<&str> for FileData {
    fn from(v: &str) -> FileData {
        FileData::from(v.as_bytes())
    }
}

impl fmt::Debug for FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FileData({} bytes in {} chunks)",
            self.len,
            self.chunks.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum DataOp {
        Write(u64, Vec<u8>),
        /// A write through a spill whose budget is almost spent.
        WriteSpilling(u64, Vec<u8>),
        SetLen(u64),
        /// Everything in memory moves to the spill file.
        Spill,
    }

    fn data_op() -> impl Strategy<Value = DataOp> {
        let write = || (0u64..9000, proptest::collection::vec(any::<u8>(), 0..5000));
        prop_oneof![
            write().prop_map(|(o, d)| DataOp::Write(o, d)),
            write().prop_map(|(o, d)| DataOp::WriteSpilling(o, d)),
            (0u64..12000).prop_map(DataOp::SetLen),
            Just(DataOp::Spill),
        ]
    }

    fn temp_dir() -> camino::Utf8PathBuf {
        camino::Utf8PathBuf::from_path_buf(std::env::temp_dir()).unwrap()
    }

    proptest! {
        #[test]
        fn rope_matches_a_plain_vector(ops in proptest::collection::vec(data_op(), 0..40)) {
            let mut rope = FileData::new();
            let mut plain: Vec<u8> = Vec::new();
            let spill = Spill::new(temp_dir(), 6000);
            for op in ops {
                let spilling = matches!(op, DataOp::WriteSpilling(..));
                match op {
                    DataOp::Spill => rope.keep_or_spill(&Spill::new(temp_dir(), 0)).unwrap(),
                    DataOp::Write(o, d) | DataOp::WriteSpilling(o, d) => {
                        if spilling {
                            rope.write_at_spilling(o, &d, &spill).unwrap();
                        } else {
                            rope.write_at(o, &d);
                        }
                        if d.is_empty() { continue; }
                        let end = o as usize + d.len();
                        if plain.len() < end { plain.resize(end, 0); }
                        plain[o as usize..end].copy_from_slice(&d);
                    }
                    DataOp::SetLen(n) => {
                        rope.set_len(n);
                        plain.resize(n as usize, 0);
                    }
                }
                prop_assert_eq!(rope.len(), plain.len() as u64);
                prop_assert_eq!(&rope.to_bytes().unwrap()[..], &plain[..]);
                let mut pos = 0;
                for (s, c) in &rope.chunks {
                    prop_assert_eq!(*s, pos);
                    prop_assert!(c.len() > 0);
                    pos += c.len();
                }
            }
            for (o, l) in [(0u64, 1usize), (3, 700), (4000, 9000), (20000, 5)] {
                let want: &[u8] = plain.get(o as usize..).map_or(&[], |s| &s[..l.min(s.len())]);
                prop_assert_eq!(&rope.read_at(o, l).unwrap()[..], want);
            }
        }
    }

    #[test]
    fn zeros_written_piece_by_piece_are_one_hole() {
        let mut d = FileData::new();
        let block = vec![0u8; 1 << 20];
        for i in 0..1024u64 {
            d.write_at(i << 20, &block);
        }
        assert_eq!(d.len(), 1 << 30);
        assert!(d.chunks == vec![(0, Chunk::Off(Off::Zeros(1 << 30)))]);
        // Zeros over data replace it; data over the hole splits it.
        d.write_at(10, b"ab");
        d.write_at(10, &[0, 0]);
        assert!(d.chunks == vec![(0, Chunk::Off(Off::Zeros(1 << 30)))]);
        d.write_at(5, b"x");
        assert_eq!(&d.read_at(4, 3).unwrap()[..], b"\0x\0");
        assert_eq!(d.chunk_count(), 3);
    }

    #[test]
    fn small_write_into_large_file_shares_the_rest() {
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let mut d = FileData::from(big.clone());
        d.write_at(1000, b"x");
        // The 1000-byte head and the new byte merge; the tail stays shared.
        assert_eq!(d.chunk_count(), 2);
        let Chunk::Data(tail) = &d.chunks[1].1 else {
            panic!("tail should be data")
        };
        // The tail is a view of the original buffer, not a copy.
        assert_eq!(tail.as_ptr(), big[1001..].as_ptr());
    }

    #[test]
    fn a_chunk_is_no_larger_than_a_bytes() {
        // A layer holds a chunk per file at least: spilling must not make
        // every file larger.
        assert_eq!(size_of::<Chunk>(), size_of::<Bytes>());
    }

    #[test]
    fn holes_cost_no_memory() {
        let d = FileData::zeros(1 << 40);
        assert_eq!(d.len(), 1 << 40);
        assert_eq!(d.chunk_count(), 1);
        assert_eq!(&d.read_at((1 << 40) - 2, 10).unwrap()[..], &[0, 0]);
        // Reading all of it at once is an error, not an abort.
        let err = d.to_bytes().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LimitExceeded);
        assert!(err.to_string().contains("read in pieces"), "{err}");
    }

    #[test]
    fn data_past_the_budget_is_spilled_in_one_run_and_read_back() {
        let spill = Spill::new(temp_dir(), 3 << 20);
        let mut d = FileData::new();
        let piece: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
        for i in 0..8u64 {
            d.write_at_spilling(i << 20, &piece, &spill).unwrap();
        }
        // Three pieces in memory (merged into fewer chunks only when
        // small), five in one run of the spill file.
        assert_eq!(d.memory_len(), 3 << 20);
        assert_eq!(spill.spilled_bytes(), 5 << 20);
        assert_eq!(d.chunk_count(), 4);
        let across = d.read_at((3 << 20) - 2, 4).unwrap();
        assert_eq!(
            &across[..],
            &[
                piece[(1 << 20) - 2],
                piece[(1 << 20) - 1],
                piece[0],
                piece[1]
            ]
        );
        assert_eq!(&d.read_at(7 << 20, 1 << 20).unwrap()[..], &piece[..]);
        // A clone shares the spilled run; writing into it changes only it.
        let mut copy = d.clone();
        copy.write_at(5 << 20, b"x");
        assert_eq!(&d.read_at(5 << 20, 1).unwrap()[..], &piece[..1]);
        assert_eq!(&copy.read_at(5 << 20, 2).unwrap()[..], &[b'x', piece[1]]);
    }
}
