//! [`File`]: an open file of a merged view, with `Read`, `Write` and `Seek`.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::meta::{FileType, Metadata};
use crate::path::{LayerPath, NameBuf};

use super::{MergedView, OpenOptions};

/// An open file of a [`MergedView`], made by [`MergedView::open`].
///
/// It refers to the path the file had when it was opened (a file opened
/// for writing is already in the upper layer). Each read or write is one
/// atomic operation on the view.
///
/// ```
/// use std::io::{Read, Seek, SeekFrom, Write};
/// use layerstack::{MemLayer, MergedView, view::OpenOptions};
///
/// let view = MergedView::new(vec![], MemLayer::new())?;
/// let mut f = view.open("log", OpenOptions::new().append(true).create(true))?;
/// f.write_all(b"one\n")?;
/// f.write_all(b"two\n")?;
/// let mut text = String::new();
/// view.open("log", OpenOptions::new().read(true))?.read_to_string(&mut text)?;
/// assert_eq!(text, "one\ntwo\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct File<'a> {
    view: &'a MergedView,
    /// The path as the view resolves it (absolute, so it is never taken
    /// relative to anything else).
    path: NameBuf,
    file_type: FileType,
    options: OpenOptions,
    pos: u64,
}

impl<'a> File<'a> {
    pub(super) fn new(
        view: &'a MergedView,
        path: LayerPath,
        file_type: FileType,
        options: OpenOptions,
    ) -> File<'a> {
        File {
            view,
            path: NameBuf::from([b"/".as_slice(), path.as_bytes()].concat()),
            file_type,
            options,
            pos: 0,
        }
    }

    /// The metadata of the open file.
    ///
    /// # Errors
    /// `ENOENT` if the file was removed or renamed since it was opened.
    pub fn metadata(&self) -> Result<Metadata> {
        self.view.symlink_metadata(&self.path)
    }

    /// Truncates or extends the file (needs write access).
    ///
    /// # Errors
    /// `EBADF` without write access, and the errors of
    /// [`MergedView::set_len`].
    pub fn set_len(&self, len: u64) -> Result<()> {
        if !self.options.writes() {
            return Err(Error::new(
                ErrorKind::BadHandle,
                Operation::SetLen,
                &self.path,
            ));
        }
        self.view.set_len(&self.path, len)
    }

    fn check(&self, write: bool) -> io::Result<()> {
        let (allowed, op) = if write {
            (self.options.writes(), Operation::Write)
        } else {
            (self.options.read, Operation::Read)
        };
        if !allowed {
            return Err(Error::new(ErrorKind::BadHandle, op, &self.path).into());
        }
        if self.file_type.is_dir() {
            return Err(Error::new(ErrorKind::IsADirectory, op, &self.path).into());
        }
        Ok(())
    }
}

impl Read for File<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check(false)?;
        let data = self.view.read_at(&self.path, self.pos, buf.len())?;
        // A third-party layer may hand back more than was asked for.
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for File<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check(true)?;
        if self.options.append {
            // The end is found and written under one lock: concurrent
            // appenders never overwrite each other.
            self.pos = self.view.append_existing(&self.path, buf)?;
            return Ok(buf.len());
        }
        self.view.write_at(&self.path, self.pos, buf)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for File<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match pos {
            SeekFrom::Start(n) => (0, i128::from(n)),
            SeekFrom::Current(d) => (self.pos, i128::from(d)),
            SeekFrom::End(d) => (self.view.symlink_metadata(&self.path)?.size, i128::from(d)),
        };
        let new = i128::from(base) + delta;
        if new < 0 || new > i128::from(u64::MAX) {
            return Err(
                Error::new(ErrorKind::InvalidInput, Operation::Read, &self.path)
                    .with_detail("seek to a negative or too large offset")
                    .into(),
            );
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}
