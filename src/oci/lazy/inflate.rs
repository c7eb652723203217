//! Raw deflate with the two things `flate2` does not expose: stopping at
//! each block boundary (`Z_BLOCK`, with the bit position zlib reports in
//! `data_type`) and starting in the middle of a stream (`inflatePrime`
//! for the bits of a partly used byte, `inflateSetDictionary` for the
//! 32 KiB window). They are zran's tools; `libz-rs-sys` (zlib-rs, the
//! same pure-Rust zlib `flate2` uses) has them only through its C ABI.
//!
//! This is the one file of the library with `unsafe` code: every block
//! calls one C-ABI function of `libz-rs-sys` on the `z_stream` this type
//! owns, boxed so that its address never changes while zlib's state
//! points back at it.
#![allow(unsafe_code)]

use std::io;

use libz_rs_sys::{
    Z_BLOCK, Z_NO_FLUSH, Z_OK, Z_STREAM_END, inflate, inflateEnd, inflateInit2_, inflatePrime,
    inflateReset, inflateSetDictionary, z_stream, zlibVersion,
};

/// What one call of [`RawInflate::inflate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Input bytes used (some of the last one's bits may be left: `bits`).
    pub(crate) consumed: usize,
    /// Output bytes made.
    pub(crate) produced: usize,
    /// The final block has ended.
    pub(crate) end: bool,
    /// Stopped right after the end of a block (only asked with
    /// `until_block`).
    pub(crate) at_block_end: bool,
    /// Bits of the consumed input not yet used.
    pub(crate) bits: u32,
}

/// A raw (headerless) inflate stream with zran's tools.
pub(crate) struct RawInflate {
    strm: Box<z_stream>,
}

impl std::fmt::Debug for RawInflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawInflate").finish_non_exhaustive()
    }
}

// SAFETY: the stream owns its state (allocated by zlib-rs for it alone)
// and holds no pointer into anything else between calls (`next_in` and
// `next_out` are set before each call and only read during it).
unsafe impl Send for RawInflate {}

fn zlib_error(what: &str, code: i32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("deflate: {what} failed (zlib code {code})"),
    )
}

impl RawInflate {
    /// A raw inflate stream with a 32 KiB window.
    pub(crate) fn new() -> io::Result<RawInflate> {
        let mut strm = Box::new(z_stream::default());
        let size = i32::try_from(std::mem::size_of::<z_stream>()).unwrap_or(i32::MAX);
        // SAFETY: `strm` is a zeroed `z_stream` (no allocator: zlib-rs
        // picks its own), `zlibVersion` a static C string, and the size
        // is that of the struct both sides agree on.
        let ret = unsafe { inflateInit2_(&mut *strm, -15, zlibVersion(), size) };
        if ret != Z_OK {
            return Err(zlib_error("inflateInit2", ret));
        }
        Ok(RawInflate { strm })
    }

    /// Back to the start of a stream, with an empty window.
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        // SAFETY: the stream was initialised by `new`.
        let ret = unsafe { inflateReset(&mut *self.strm) };
        if ret == Z_OK {
            Ok(())
        } else {
            Err(zlib_error("inflateReset", ret))
        }
    }

    /// Puts `bits` (1 to 7) bits of `value` (its low bits) in front of the
    /// input: the unused bits of a byte a restart point falls into.
    pub(crate) fn prime(&mut self, bits: u32, value: u8) -> io::Result<()> {
        let bits = i32::try_from(bits.min(16)).unwrap_or(16);
        // SAFETY: the stream was initialised by `new`.
        let ret = unsafe { inflatePrime(&mut *self.strm, bits, i32::from(value)) };
        if ret == Z_OK {
            Ok(())
        } else {
            Err(zlib_error("inflatePrime", ret))
        }
    }

    /// The output that came before the restart point (at most 32 KiB).
    pub(crate) fn set_dictionary(&mut self, window: &[u8]) -> io::Result<()> {
        let len = u32::try_from(window.len()).unwrap_or(u32::MAX);
        // SAFETY: the pointer and length describe `window`, which zlib
        // copies into its own window before returning.
        let ret = unsafe { inflateSetDictionary(&mut *self.strm, window.as_ptr(), len) };
        if ret == Z_OK {
            Ok(())
        } else {
            Err(zlib_error("inflateSetDictionary", ret))
        }
    }

    /// Inflates from `input` into `output`; with `until_block`, stops at
    /// the end of the next block.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        until_block: bool,
    ) -> io::Result<Step> {
        let avail_in = u32::try_from(input.len()).unwrap_or(u32::MAX);
        let avail_out = u32::try_from(output.len()).unwrap_or(u32::MAX);
        self.strm.next_in = input.as_ptr().cast_mut();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        let flush = if until_block { Z_BLOCK } else { Z_NO_FLUSH };
        // SAFETY: `next_in`/`avail_in` describe `input` (only read) and
        // `next_out`/`avail_out` describe `output` (only written), both
        // alive for the whole call; the pointers are cleared after it.
        let ret = unsafe { inflate(&mut *self.strm, flush) };
        let consumed = (avail_in - self.strm.avail_in) as usize;
        let produced = (avail_out - self.strm.avail_out) as usize;
        self.strm.next_in = std::ptr::null_mut();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        let data_type = self.strm.data_type;
        match ret {
            Z_OK | Z_STREAM_END => Ok(Step {
                consumed,
                produced,
                end: ret == Z_STREAM_END,
                // Not after the last block (bit 64): nothing follows it
                // but the trailer, as zran skips it.
                at_block_end: until_block && data_type & 128 != 0 && data_type & 64 == 0,
                bits: u32::try_from(data_type & 63).unwrap_or(0),
            }),
            // Z_BUF_ERROR: no progress was possible (needs more input).
            libz_rs_sys::Z_BUF_ERROR => Ok(Step {
                consumed,
                produced,
                end: false,
                at_block_end: false,
                bits: u32::try_from(data_type & 63).unwrap_or(0),
            }),
            code => Err(zlib_error("inflate", code)),
        }
    }
}

impl Drop for RawInflate {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by `new` and is ended once.
        unsafe {
            inflateEnd(&mut *self.strm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 1024);
        c.compress_vec(data, &mut out, flate2::FlushCompress::Finish)
            .unwrap();
        out
    }

    fn sample() -> Vec<u8> {
        let mut data = Vec::new();
        let mut x = 7u32;
        for i in 0..400_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            data.extend_from_slice(format!("line {} {}\n", i % 977, x >> 24).as_bytes());
        }
        data
    }

    #[test]
    fn inflates_block_by_block_and_restarts_mid_stream() {
        let data = sample();
        let packed = deflate(&data);
        let mut inf = RawInflate::new().unwrap();
        let mut out = vec![0u8; data.len() + 16];
        let (mut pos, mut made) = (0usize, 0usize);
        let mut boundaries = Vec::new();
        loop {
            let step = inf.inflate(&packed[pos..], &mut out[made..], true).unwrap();
            pos += step.consumed;
            made += step.produced;
            if step.end {
                break;
            }
            if step.at_block_end {
                boundaries.push((pos as u64 * 8 - u64::from(step.bits), made));
            }
        }
        assert_eq!(&out[..made], &data[..]);
        assert!(boundaries.len() > 3, "{boundaries:?}");
        // Restart from a boundary in the middle, with the window.
        let (bit, at) = boundaries[boundaries.len() / 2];
        let mut again = RawInflate::new().unwrap();
        let (byte, off) = ((bit / 8) as usize, (bit % 8) as u32);
        let mut from = byte;
        if off != 0 {
            again.prime(8 - off, packed[byte] >> off).unwrap();
            from += 1;
        }
        again
            .set_dictionary(&data[at.saturating_sub(32768)..at])
            .unwrap();
        let mut rest = vec![0u8; data.len() - at + 16];
        let mut got = 0;
        loop {
            let step = again
                .inflate(&packed[from..], &mut rest[got..], false)
                .unwrap();
            from += step.consumed;
            got += step.produced;
            if step.end || (step.consumed == 0 && step.produced == 0) {
                break;
            }
        }
        assert_eq!(&rest[..got], &data[at..]);
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut inf = RawInflate::new().unwrap();
        let mut out = [0u8; 64];
        assert!(inf.inflate(&[0xff; 32], &mut out, false).is_err());
    }
}
