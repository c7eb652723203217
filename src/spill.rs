//! [`Spill`]: where file data goes once memory holds enough of it.
//!
//! A layer held in memory ([`MemLayer`](crate::MemLayer)) keeps its file
//! data as [`FileData`](crate::FileData). Given a `Spill`, it keeps the
//! first bytes it stores in memory, up to the spill's *budget*, and writes
//! the rest to one anonymous file in the spill's directory, from which
//! they are read back with `pread`. Holes and runs of zeros are never
//! written anywhere (they stay holes), so only real data is spilled.
//!
//! The file has no name: it is opened with `O_TMPFILE` (or, where the
//! filesystem lacks it, created as `.tmp-<pid>-<n>` and unlinked at once),
//! so nothing is left behind whatever happens to the process, and its
//! space is given back when the spill and every piece of data in it are
//! dropped.
//!
//! ```
//! use layerstack::{FileData, Spill};
//!
//! // No memory at all: every byte of data goes to the file.
//! let spill = Spill::new(std::env::temp_dir().to_str().unwrap(), 0);
//! let mut data = FileData::new();
//! data.write_at_spilling(0, b"hello", &spill)?;
//! data.write_at_spilling(5, &[0; 4096], &spill)?; // a hole, not spilled
//! assert_eq!(data.memory_len(), 0);
//! assert_eq!(spill.spilled_bytes(), 5);
//! assert_eq!(&data.read_at(3, 4)?[..], b"lo\0\0");
//! # Ok::<(), layerstack::Error>(())
//! ```

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use camino::{Utf8Path, Utf8PathBuf};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Operation, Result};

/// Where file data goes once memory holds `budget` bytes of it: an
/// anonymous file in a directory (see the [module documentation](self)).
///
/// Cheap to clone: clones share the budget and the file. The budget
/// counts every byte of data ever kept in memory through this spill (it
/// is not given back when the data is dropped), so a spill bounds the
/// memory of one job (an import, a commit, one command of the tool); a
/// long-lived program that keeps one spill for ever ends up spilling all
/// new data.
#[derive(Clone)]
pub struct Spill {
    shared: Arc<Shared>,
}

struct Shared {
    dir: Utf8PathBuf,
    budget: u64,
    /// Bytes kept in memory so far.
    kept: AtomicU64,
    /// The file, made when the first byte is spilled.
    file: Mutex<Option<Arc<SpillFile>>>,
}

impl Spill {
    /// The budget of [`Spill::default`]: 16 MiB.
    pub const DEFAULT_BUDGET: u64 = 16 << 20;

    /// A spill to an anonymous file in directory `dir`, keeping up to
    /// `budget` bytes of data in memory. Nothing is created until the
    /// first byte is spilled.
    #[must_use]
    pub fn new(dir: impl Into<Utf8PathBuf>, budget: u64) -> Spill {
        Spill {
            shared: Arc::new(Shared {
                dir: dir.into(),
                budget,
                kept: AtomicU64::new(0),
                file: Mutex::new(None),
            }),
        }
    }

    /// A spill that never spills: all data stays in memory.
    #[must_use]
    pub fn unbounded() -> Spill {
        Spill::new("", u64::MAX)
    }

    /// The directory the file goes in.
    #[must_use]
    pub fn dir(&self) -> &Utf8Path {
        &self.shared.dir
    }

    /// How many bytes of data may stay in memory.
    #[must_use]
    pub fn budget(&self) -> u64 {
        self.shared.budget
    }

    /// Bytes written to the file so far.
    #[must_use]
    pub fn spilled_bytes(&self) -> u64 {
        self.shared
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |f| f.end.load(Ordering::Relaxed))
    }

    /// Whether `len` more bytes may stay in memory; if so, they are
    /// counted.
    pub(crate) fn keep(&self, len: u64) -> bool {
        let kept = &self.shared.kept;
        let mut now = kept.load(Ordering::Relaxed);
        loop {
            let Some(next) = now.checked_add(len).filter(|&n| n <= self.shared.budget) else {
                return false;
            };
            match kept.compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
    }

    /// Writes `data` at the end of the file (made if need be) and returns
    /// where it is.
    pub(crate) fn append(&self, data: &[u8]) -> Result<Extent> {
        let file = self.file()?;
        let len = data.len() as u64;
        let offset = file.end.fetch_add(len, Ordering::Relaxed);
        let mut done = 0;
        while done < data.len() {
            match rustix::io::pwrite(&file.fd, &data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(file.error(e, Operation::Write)),
            }
        }
        Ok(Extent { file, offset, len })
    }

    fn file(&self) -> Result<Arc<SpillFile>> {
        let mut slot = self
            .shared
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = &*slot {
            return Ok(Arc::clone(file));
        }
        let dir = &self.shared.dir;
        let fd = open_anonymous(dir).map_err(|e| {
            Error::new(
                ErrorKind::from_errno(e.raw_os_error()).unwrap_or(ErrorKind::Io),
                Operation::Open,
                dir.as_str(),
            )
            .with_detail(format!(
                "making a file in `{dir}` to spill file data to: {e}"
            ))
        })?;
        let file = Arc::new(SpillFile {
            fd,
            end: AtomicU64::new(0),
            dir: dir.clone(),
        });
        *slot = Some(Arc::clone(&file));
        Ok(file)
    }
}

impl Default for Spill {
    /// A spill to `$TMPDIR` (else `/tmp`) with [`Spill::DEFAULT_BUDGET`].
    fn default() -> Spill {
        let dir = Utf8PathBuf::from_path_buf(std::env::temp_dir())
            .unwrap_or_else(|_| Utf8PathBuf::from("/tmp"));
        Spill::new(dir, Spill::DEFAULT_BUDGET)
    }
}

impl fmt::Debug for Spill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spill")
            .field("dir", &self.shared.dir)
            .field("budget", &self.shared.budget)
            .field("kept", &self.shared.kept.load(Ordering::Relaxed))
            .field("spilled", &self.spilled_bytes())
            .finish()
    }
}

/// An anonymous file in `dir`, open for reading and writing.
fn open_anonymous(dir: &Utf8Path) -> rustix::io::Result<OwnedFd> {
    // The directory itself is not followed if it is a symlink.
    let dir_fd = rustix::fs::open(
        dir.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let flags = OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::openat(
        &dir_fd,
        ".",
        flags | OFlags::TMPFILE,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => return Ok(fd),
        // A filesystem (or kernel) without O_TMPFILE.
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => {}
        Err(e) => return Err(e),
    }
    // Named as the layout's temporary files are (so that its garbage
    // collection removes one a crash left between the two calls), and
    // unlinked at once.
    static NEXT: AtomicU64 = AtomicU64::new(1 << 32);
    let pid = std::process::id();
    loop {
        let name = format!(".tmp-{pid}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        match rustix::fs::openat(
            &dir_fd,
            name.as_str(),
            flags | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                rustix::fs::unlinkat(&dir_fd, name.as_str(), AtFlags::empty())?;
                return Ok(fd);
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The file of a [`Spill`]: written only at its end, never changed.
#[derive(Debug)]
pub(crate) struct SpillFile {
    fd: OwnedFd,
    /// The end of what was written (or is being written).
    end: AtomicU64,
    dir: Utf8PathBuf,
}

impl SpillFile {
    fn error(&self, e: Errno, op: Operation) -> Error {
        let verb = if op == Operation::Write {
            "spilling file data to"
        } else {
            "reading file data spilled to"
        };
        Error::new(
            ErrorKind::from_errno(e.raw_os_error()).unwrap_or(ErrorKind::Io),
            op,
            self.dir.as_str(),
        )
        .with_detail(format!("{verb} a file in `{}`: {e}", self.dir))
    }
}

/// A run of bytes in a spill file.
#[derive(Clone, Debug)]
pub(crate) struct Extent {
    file: Arc<SpillFile>,
    offset: u64,
    len: u64,
}

impl Extent {
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes `from..to` of the extent.
    pub(crate) fn slice(&self, from: u64, to: u64) -> Extent {
        Extent {
            file: Arc::clone(&self.file),
            offset: self.offset + from,
            len: to - from,
        }
    }

    /// The extent of `self` and then `next`, if they are one run of the
    /// same file.
    pub(crate) fn joined(&self, next: &Extent) -> Option<Extent> {
        (Arc::ptr_eq(&self.file, &next.file) && self.offset + self.len == next.offset).then(|| {
            Extent {
                file: Arc::clone(&self.file),
                offset: self.offset,
                len: self.len + next.len,
            }
        })
    }

    /// Reads bytes `from..from + out.len()` of the extent into `out`.
    pub(crate) fn read_into(&self, from: u64, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            let at = self.offset + from + done as u64;
            match rustix::io::pread(&self.file.fd, &mut out[done..], at) {
                // Nothing ever shrinks the file: it was changed behind our
                // back.
                Ok(0) => return Err(self.file.error(Errno::IO, Operation::Read)),
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(self.file.error(e, Operation::Read)),
            }
        }
        Ok(())
    }
}

impl PartialEq for Extent {
    fn eq(&self, other: &Extent) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.offset == other.offset && self.len == other.len
    }
}

impl Eq for Extent {}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> Utf8PathBuf {
        Utf8PathBuf::from_path_buf(std::env::temp_dir()).unwrap()
    }

    #[test]
    fn the_budget_is_counted_once_and_never_exceeded() {
        let spill = Spill::new(temp(), 10);
        assert!(spill.keep(6));
        assert!(!spill.keep(5));
        assert!(spill.keep(4));
        assert!(!spill.keep(1));
        assert!(Spill::unbounded().keep(u64::MAX));
    }

    #[test]
    fn extents_read_back_what_was_written_and_join_when_adjacent() {
        let spill = Spill::new(temp(), 0);
        let a = spill.append(b"hello ").unwrap();
        let b = spill.append(b"world").unwrap();
        let ab = a.joined(&b).expect("adjacent");
        assert!(b.joined(&a).is_none());
        let mut out = vec![0; 7];
        ab.slice(2, 11).read_into(1, &mut out).unwrap();
        assert_eq!(&out, b"lo worl");
        assert_eq!(spill.spilled_bytes(), 11);
        // Reading past what was written is an error, not a short read.
        let past = Extent {
            len: 100,
            ..ab.clone()
        };
        let err = past.read_into(0, &mut [0; 100]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(
            err.to_string().contains("reading file data spilled to"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let spill = Spill::new("/nonexistent-layerstack-spill", 0);
        let err = spill.append(b"x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "failed to open `/nonexistent-layerstack-spill`: making a file in \
             `/nonexistent-layerstack-spill` to spill file data to: No such file or directory \
             (os error 2)"
        );
    }

    #[test]
    fn the_file_has_no_name() {
        let dir = temp().join(format!("layerstack-spill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spill = Spill::new(&dir, 0);
        spill.append(b"data").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
