//! [`File`]: an open file of a merged view, with `Read`, `Write` and `Seek`.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::merged::HandleId;
use crate::meta::Metadata;
use crate::path::{LayerPath, NameBuf};

use super::MergedView;

/// An open file of a [`MergedView`], made by [`MergedView::open`]: a
/// handle of the view's table (see [`crate::view::handle`]) with a
/// position, closed when dropped.
///
/// It follows the file, not its path: after a rename it reads and writes
/// the same file; after its last name is removed it still does, and
/// [`File::metadata`] shows `nlink` 0, as `fstat` on the kernel's
/// overlayfs. Each read or write is one atomic operation on the view.
///
/// ```
/// use std::io::{Read, Seek, SeekFrom, Write};
/// use layerstack::{MemLayer, MergedView, merged::OpenOptions};
///
/// let view = MergedView::new(vec![], MemLayer::new())?;
/// let mut f = view.open("log", OpenOptions::new().append(true).create(true))?;
/// f.write_all(b"one\n")?;
/// view.rename("log", "log.1")?;
/// view.remove_file("log.1")?;
/// f.write_all(b"two\n")?; // an orphan still takes writes
/// assert_eq!(f.metadata()?.nlink, 0);
/// assert_eq!(f.metadata()?.size, 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct File<'a> {
    view: &'a MergedView,
    handle: HandleId,
    /// The path it was opened by, for messages.
    path: NameBuf,
    pos: u64,
}

impl<'a> File<'a> {
    pub(super) fn new(view: &'a MergedView, handle: HandleId, path: &LayerPath) -> File<'a> {
        File {
            view,
            handle,
            path: NameBuf::from([b"/".as_slice(), path.as_bytes()].concat()),
            pos: 0,
        }
    }

    /// The view's number for this open file.
    #[must_use]
    pub fn handle(&self) -> HandleId {
        self.handle
    }

    /// The metadata of the open file, as `fstat`: `nlink` 0 once its last
    /// name is gone.
    ///
    /// # Errors
    /// As [`MergedView::handle_metadata`].
    pub fn metadata(&self) -> Result<Metadata> {
        self.view.handle_metadata(self.handle)
    }

    /// Truncates or extends the file (needs write access), as `ftruncate`.
    ///
    /// # Errors
    /// `EINVAL` without write access (as `ftruncate`), and the errors of
    /// [`MergedView::handle_set_len`].
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.view.handle_set_len(self.handle, len)
    }

    /// Makes the file's data and metadata durable, as `fsync`.
    ///
    /// # Errors
    /// Errors of the upper layer's storage.
    pub fn sync_all(&self) -> Result<()> {
        self.view.handle_sync(self.handle, false)
    }

    /// Makes the file's data durable, as `fdatasync`.
    ///
    /// # Errors
    /// Errors of the upper layer's storage.
    pub fn sync_data(&self) -> Result<()> {
        self.view.handle_sync(self.handle, true)
    }
}

impl Drop for File<'_> {
    fn drop(&mut self) {
        // Closing only fails for a handle already gone: nothing to undo.
        let _ = self.view.close_handle(self.handle);
    }
}

impl Read for File<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.view.handle_read_at(self.handle, self.pos, buf.len())?;
        // A third-party layer may hand back more than was asked for.
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for File<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // In append mode the end is found and written under one lock:
        // concurrent appenders never overwrite each other.
        self.pos = self.view.handle_write_at(self.handle, self.pos, buf)?;
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
            SeekFrom::End(d) => (self.metadata()?.size, i128::from(d)),
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
