//! Open objects of an upper [`DirLayer`]: one descriptor per open, as the
//! kernel's overlayfs holds the upper file of an open file. Reads, writes,
//! `fstat` and `fsync` go through the descriptor, so they follow the inode
//! through renames, and an unlinked file (an orphan) lives until the
//! descriptor closes: then the filesystem frees it, and nothing of it is
//! left in the upper or work directory.

use super::*;

impl DirLayer {
    pub(super) fn object(&self, id: u64) -> Result<&OwnedFd> {
        self.objects
            .get(&id)
            .ok_or_else(|| object_error(ErrorKind::BadHandle, id))
    }

    pub(super) fn open_object_fd(&mut self, path: &LayerPath) -> Result<u64> {
        self.work(path)?;
        // Read and write: one descriptor serves every handle on the file.
        // A file that cannot be opened for writing (its owner may not
        // write it without `CAP_DAC_OVERRIDE`, a read-only mount, a
        // program running: `ETXTBSY`) is held read-only; a write through
        // it then fails `EBADF`, as a write would have failed anyway.
        let fd = match self.open_regular(path, OFlags::RDWR) {
            Ok(fd) => fd,
            Err(_) => self.open_regular(path, OFlags::RDONLY)?,
        };
        let id = self.next_object;
        self.next_object += 1;
        self.objects.insert(id, fd);
        Ok(id)
    }

    pub(super) fn object_node_fd(&self, id: u64) -> Result<Node> {
        let fd = self.object(id)?;
        let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
            .map_err(|e| errno_object(e, id))?;
        let raw = raw_xattrs_open(fd).map_err(|e| errno_object(e, id))?;
        let metacopy = self.overlay_attr(&raw, OverlayAttr::Metacopy).is_some();
        Ok(Node {
            meta: self.meta_of(&st, FileType::File, raw),
            opaque: false,
            redirect: None,
            metacopy,
        })
    }

    pub(super) fn object_read_fd(&self, id: u64, offset: u64, len: usize) -> Result<Bytes> {
        let fd = self.object(id)?;
        read_fd_at(fd, offset, len).map_err(|e| errno_object(e, id))
    }

    pub(super) fn object_set_mtime(&self, id: u64, mtime: Timestamp) -> Result<()> {
        let fd = self.object(id)?;
        let mut times = node::times(mtime, mtime);
        // The atime stays; the system sets the ctime.
        times.last_access.tv_nsec = rustix::fs::UTIME_OMIT;
        rustix::fs::futimens(fd, &times).map_err(|e| errno_object(e, id))
    }
}

/// Up to `len` bytes of open file `fd` from `offset` (fewer at its end).
pub(super) fn read_fd_at(fd: &OwnedFd, offset: u64, len: usize) -> rustix::io::Result<Bytes> {
    let size = u64::try_from(rustix::fs::fstat(fd)?.st_size).unwrap_or(0);
    let want = usize::try_from(size.saturating_sub(offset))
        .unwrap_or(usize::MAX)
        .min(len);
    let mut buf = BytesMut::zeroed(want);
    let mut done = 0;
    while done < want {
        let n = rustix::io::pread(fd, &mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf.freeze())
}

/// An error of a system call on open object `id`.
pub(super) fn errno_object(e: Errno, id: u64) -> Error {
    errno_error(e, Operation::Layer, format!("(open object {id})").as_str())
}
