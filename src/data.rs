//! File data as a rope of shared byte chunks.
//!
//! A [`FileData`] is a list of chunks, each a slice of a shared [`Bytes`]
//! buffer, a run of zeros (a hole), or a run of bytes in a [`Spill`]'s
//! file. A file of one chunk (nearly every file) keeps it inline, with no
//! list on the heap. Cloning it costs at most the copy of the list (none
//! for one chunk) and never copies file contents, so a copy-up in memory
//! shares the lower layer's buffers; a small write into a large file
//! splits one chunk and stores only the new bytes.
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
#[derive(Clone, PartialEq, Eq)]
pub struct FileData(Rope);

/// The chunks. A file of one chunk (nearly every file a layer holds) keeps
/// it inline, with no list on the heap: a layer holds one per file.
/// Always in its normal form (see [`FileData::settle`]), so that the
/// derived equality is equality of the chunks.
#[derive(Clone, PartialEq, Eq)]
enum Rope {
    /// One chunk, starting at 0, of length > 0.
    One(Chunk),
    /// No chunk (`len` 0, no allocation) or two or more, in order with the
    /// offset each starts at, covering `0..len`.
    Many { chunks: Vec<(u64, Chunk)>, len: u64 },
}

impl Default for FileData {
    fn default() -> FileData {
        FileData(Rope::Many {
            chunks: Vec::new(),
            len: 0,
        })
    }
}

/// Up to `end - offset` bytes from `offset` out of `chunks` (the chunks
/// from the one holding `offset` on, with their starts).
fn read_chunks<'a>(
    mut chunks: impl Iterator<Item = (u64, &'a Chunk)>,
    offset: u64,
    end: u64,
) -> Result<Bytes> {
    let Some((start, chunk)) = chunks.next() else {
        return Ok(Bytes::new());
    };
    if end <= start + chunk.len()
        && let Chunk::Data(b) = chunk.slice(offset - start, end - start)
    {
        return Ok(b);
    }
    let mut out = buffer(end - offset)?;
    for (start, chunk) in std::iter::once((start, chunk)).chain(chunks) {
        if start >= end {
            break;
        }
        let from = offset.max(start) - start;
        let to = end.min(start + chunk.len()) - start;
        chunk.read_into(from, to, &mut out)?;
    }
    Ok(Bytes::from(out))
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
        match &self.0 {
            Rope::One(c) => c.len(),
            Rope::Many { len, .. } => *len,
        }
    }

    /// Whether the length is zero.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of chunks (a measure of fragmentation).
    #[must_use]
    pub fn chunk_count(&self) -> usize {
        match &self.0 {
            Rope::One(_) => 1,
            Rope::Many { chunks, .. } => chunks.len(),
        }
    }

    /// The chunks in order with their starts.
    fn iter(&self) -> impl Iterator<Item = (u64, &Chunk)> {
        let (one, many) = match &self.0 {
            Rope::One(c) => (Some((0, c)), &[][..]),
            Rope::Many { chunks, .. } => (None, &chunks[..]),
        };
        one.into_iter().chain(many.iter().map(|(s, c)| (*s, c)))
    }

    /// The chunks as a list to change, with the length; [`settle`]
    /// (Self::settle) puts them back in normal form.
    fn many(&mut self) -> (&mut Vec<(u64, Chunk)>, &mut u64) {
        if let Rope::One(_) = self.0 {
            let Rope::One(chunk) = std::mem::take(self).0 else {
                unreachable!("matched above")
            };
            let len = chunk.len();
            let mut chunks = Vec::with_capacity(3);
            chunks.push((0, chunk));
            self.0 = Rope::Many { chunks, len };
        }
        match &mut self.0 {
            Rope::Many { chunks, len } => (chunks, len),
            Rope::One(_) => unreachable!("made a list above"),
        }
    }

    /// Back to the normal form after a change: one chunk inline, no
    /// chunk without an allocation.
    fn settle(&mut self) {
        if let Rope::Many { chunks, .. } = &mut self.0 {
            match chunks.len() {
                0 => *self = FileData::new(),
                1 => self.0 = Rope::One(chunks.pop().expect("one chunk").1),
                _ => {}
            }
        }
    }

    /// Index of the chunk that holds byte `offset` (`offset < len`) in
    /// `chunks`.
    fn chunk_index(chunks: &[(u64, Chunk)], offset: u64) -> usize {
        chunks.partition_point(|(start, _)| *start <= offset) - 1
    }

    /// Up to `len` bytes from `offset` (fewer at the end, none past it).
    /// A read inside one chunk in memory shares its buffer.
    ///
    /// # Errors
    /// Errors reading a spill file (naming its directory); `EDQUOT` if
    /// the bytes asked for do not fit in memory.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        if offset >= self.len() || len == 0 {
            return Ok(Bytes::new());
        }
        let end = self.len().min(offset.saturating_add(len as u64));
        match &self.0 {
            Rope::One(c) => read_chunks(std::iter::once((0, c)), offset, end),
            Rope::Many { chunks, .. } => {
                let first = FileData::chunk_index(chunks, offset);
                read_chunks(chunks[first..].iter().map(|(s, c)| (*s, c)), offset, end)
            }
        }
    }

    /// All the bytes in one buffer (shared when there is one chunk in
    /// memory).
    ///
    /// # Errors
    /// As [`FileData::read_at`].
    pub fn to_bytes(&self) -> Result<Bytes> {
        self.read_at(0, usize::try_from(self.len()).unwrap_or(usize::MAX))
    }

    /// Bytes of data held in memory (holes and spilled data excluded).
    #[must_use]
    pub fn memory_len(&self) -> u64 {
        self.iter()
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
            let piece = read(data.len())?;
            if piece.is_empty() {
                return Ok(data);
            }
            data.write_at_spilling(data.len(), &piece, spill)?;
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
        let spilled = |chunk: &Chunk| -> Result<Chunk> {
            Ok(match chunk {
                Chunk::Data(b) => Chunk::Off(Off::Spilled(spill.append(b)?)),
                other => other.clone(),
            })
        };
        match &mut self.0 {
            Rope::One(c) => *c = spilled(c)?,
            Rope::Many { chunks, .. } => {
                let mut out = Vec::with_capacity(chunks.len());
                for (start, chunk) in chunks.iter() {
                    out.push((*start, spilled(chunk)?));
                }
                *chunks = out;
            }
        }
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

    /// Puts `chunk` (not empty) at `offset`.
    fn put_chunk(&mut self, offset: u64, chunk: Chunk) {
        let len = self.len();
        if offset == 0 && chunk.len() >= len {
            // The whole file replaced (the first write into a new file).
            self.0 = Rope::One(chunk);
            return;
        }
        if offset > len {
            self.set_len(offset);
        }
        let end = offset + chunk.len();
        let (chunks, len) = self.many();
        // Split so that chunks start exactly at `offset` and `end`.
        split_at(chunks, *len, offset);
        split_at(chunks, *len, end);
        let first = chunks.partition_point(|(s, _)| *s < offset);
        let last = chunks.partition_point(|(s, _)| *s < end);
        chunks.splice(first..last, [(offset, chunk)]);
        *len = (*len).max(end);
        merge_small_around(chunks, first);
        self.settle();
    }

    /// Truncates or extends (with zeros) to `len` bytes.
    pub fn set_len(&mut self, new_len: u64) {
        let len = self.len();
        if new_len == len {
            return;
        }
        if len == 0 {
            self.0 = Rope::One(Chunk::Off(Off::Zeros(new_len)));
            return;
        }
        if let Rope::One(Chunk::Off(Off::Zeros(n))) = &mut self.0
            && new_len > 0
        {
            *n = new_len;
            return;
        }
        let (chunks, len) = self.many();
        if new_len < *len {
            split_at(chunks, *len, new_len);
            let keep = chunks.partition_point(|(s, _)| *s < new_len);
            chunks.truncate(keep);
        } else {
            match chunks.last_mut() {
                Some((_, Chunk::Off(Off::Zeros(n)))) => *n += new_len - *len,
                _ => chunks.push((*len, Chunk::Off(Off::Zeros(new_len - *len)))),
            }
        }
        *len = new_len;
        self.settle();
    }

    /// Appends bytes at the end.
    pub fn append(&mut self, data: &[u8]) {
        self.write_at(self.len(), data);
    }
}

/// Splits the chunk of `chunks` (covering `0..len`) that contains `at` so
/// that a chunk starts at `at`.
fn split_at(chunks: &mut Vec<(u64, Chunk)>, len: u64, at: u64) {
    if at == 0 || at >= len {
        return;
    }
    let i = FileData::chunk_index(chunks, at);
    let (start, chunk) = &chunks[i];
    if *start == at {
        return;
    }
    let start = *start;
    let (left, right) = (
        chunk.slice(0, at - start),
        chunk.slice(at - start, chunk.len()),
    );
    chunks[i] = (start, left);
    chunks.insert(i + 1, (at, right));
}

/// Merges chunk `i` of `chunks` with small data neighbours.
fn merge_small_around(chunks: &mut Vec<(u64, Chunk)>, mut i: usize) {
    if i > 0 && mergeable(&chunks[i - 1].1, &chunks[i].1) {
        merge(chunks, i - 1);
        i -= 1;
    }
    if i + 1 < chunks.len() && mergeable(&chunks[i].1, &chunks[i + 1].1) {
        merge(chunks, i);
    }
}

fn mergeable(a: &Chunk, b: &Chunk) -> bool {
    match (a, b) {
        (Chunk::Data(x), Chunk::Data(y)) => x.len() + y.len() <= MERGE_LIMIT,
        (Chunk::Off(Off::Zeros(_)), Chunk::Off(Off::Zeros(_))) => true,
        // One run of a spill file (a file spilled piece by piece).
        (Chunk::Off(Off::Spilled(x)), Chunk::Off(Off::Spilled(y))) => x.joined(y).is_some(),
        _ => false,
    }
}

/// Merges chunks `a` and `a + 1` (alike, see [`mergeable`]).
fn merge(chunks: &mut Vec<(u64, Chunk)>, a: usize) {
    let (_, right) = chunks.remove(a + 1);
    let left = &mut chunks[a].1;
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

impl From<Bytes> for FileData {
    fn from(b: Bytes) -> FileData {
        let len = b.len() as u64;
        if len == 0 {
            return FileData::new();
        }
        FileData(Rope::One(Chunk::Data(b)))
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
            self.len(),
            self.chunk_count()
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
                for (s, c) in rope.iter() {
                    prop_assert_eq!(s, pos);
                    prop_assert!(c.len() > 0);
                    pos += c.len();
                }
                // The normal form: one chunk inline, no empty list with a
                // length.
                match &rope.0 {
                    Rope::One(_) => {}
                    Rope::Many { chunks, len } => {
                        prop_assert_ne!(chunks.len(), 1);
                        prop_assert_eq!(chunks.is_empty(), *len == 0);
                    }
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
        assert!(d.0 == Rope::One(Chunk::Off(Off::Zeros(1 << 30))));
        // Zeros over data replace it; data over the hole splits it.
        d.write_at(10, b"ab");
        d.write_at(10, &[0, 0]);
        assert!(d.0 == Rope::One(Chunk::Off(Off::Zeros(1 << 30))));
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
        let Some((_, Chunk::Data(tail))) = d.iter().nth(1) else {
            panic!("tail should be data")
        };
        // The tail is a view of the original buffer, not a copy.
        assert_eq!(tail.as_ptr(), big[1001..].as_ptr());
    }

    #[test]
    fn one_chunk_is_kept_inline() {
        // A layer holds a `FileData` per file: a file of one chunk (nearly
        // all) needs no list on the heap, and the whole is a chunk and a tag.
        assert!(size_of::<FileData>() <= size_of::<Chunk>() + 8);
        let mut d = FileData::from("abc");
        assert!(matches!(d.0, Rope::One(Chunk::Data(_))));
        d.write_at(1, b"X");
        // Small writes merge back into one chunk, which goes inline again.
        assert!(matches!(d.0, Rope::One(Chunk::Data(_))));
        assert_eq!(&d.to_bytes().unwrap()[..], b"aXc");
        d.set_len(10);
        assert_eq!(d.chunk_count(), 2);
        d.set_len(2);
        assert!(matches!(d.0, Rope::One(Chunk::Data(_))));
        assert_eq!(&d.to_bytes().unwrap()[..], b"aX");
        d.set_len(0);
        assert_eq!(d, FileData::new());
        assert_eq!(d.chunk_count(), 0);
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
