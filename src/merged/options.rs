//! Typed options of the merged view and of its operations.

use crate::meta::{FileType, Timestamp};
use crate::path::{Name, NameBuf};

/// What `rename` does with a directory that exists in a lower layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirRename {
    /// Fail with `EXDEV`, as the kernel does by default (`redirect_dir=off`
    /// or `follow`); tools like `mv` then copy the tree.
    #[default]
    CrossDevice,
    /// Copy the directory up alone and record a redirect to its lower path
    /// (the kernel's `redirect_dir=on`).
    Redirect,
}

/// What copy-up does with a lower file that has several names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HardLinkCopyUp {
    /// Copy up only the name used, breaking the link (the kernel's
    /// `index=off`, its default).
    #[default]
    Break,
    /// Copy the file up once and link every name of it that the view shows
    /// (the kernel's `index=on`).
    Keep,
}

/// What the view does with metadata-only copies: files that a kernel
/// mounted with `metacopy=on` copied up without their data when their
/// metadata changed (`overlay.metacopy`, see
/// [`Node::metacopy`](crate::layer::Node::metacopy)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metacopy {
    /// Refuse them: `stat`, `open` and every other use of such a file fail
    /// with `EPERM`, as the kernel's default `metacopy=off` refuses to
    /// follow them. (A view never shows the hole on disk as the data.)
    #[default]
    Refuse,
    /// Follow them, as `metacopy=on`: the metadata is the copy's, the data
    /// the lower file it names (`overlay.redirect`, else the same path);
    /// the first change of its data copies the data up. The view's own
    /// copy-ups still copy data.
    Follow,
}

/// Where the view gets the time for new and changed objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// Always this time (reproducible builds and tests).
    Fixed(Timestamp),
}

impl Clock {
    /// The current time of this clock.
    #[must_use]
    pub fn now(self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Fixed(t) => t,
        }
    }
}

/// Options of a [`MergedView`](crate::MergedView), as the kernel's mount
/// options, plus the identity the view acts as.
///
/// The view does not check permissions: it acts as root (with
/// `CAP_FSETID`), as a container build does.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewOptions {
    /// Renaming lower directories.
    pub dir_rename: DirRename,
    /// Copy-up of hard-linked lower files.
    pub hard_links: HardLinkCopyUp,
    /// Metadata-only copies written by the kernel.
    pub metacopy: Metacopy,
    /// Owner user id of new objects.
    pub uid: u32,
    /// Owner group id of new objects (a directory with setgid passes its
    /// own group on instead, as Linux does).
    pub gid: u32,
    /// Bits cleared from the mode of new objects.
    pub umask: u32,
    /// The clock for timestamps.
    pub clock: Clock,
}

impl Default for ViewOptions {
    fn default() -> ViewOptions {
        ViewOptions {
            dir_rename: DirRename::default(),
            hard_links: HardLinkCopyUp::default(),
            metacopy: Metacopy::default(),
            uid: 0,
            gid: 0,
            umask: 0o022,
            clock: Clock::System,
        }
    }
}

impl ViewOptions {
    /// Sets [`ViewOptions::dir_rename`] (builder style).
    #[must_use]
    pub fn dir_rename(mut self, v: DirRename) -> ViewOptions {
        self.dir_rename = v;
        self
    }

    /// Sets [`ViewOptions::hard_links`] (builder style).
    #[must_use]
    pub fn hard_links(mut self, v: HardLinkCopyUp) -> ViewOptions {
        self.hard_links = v;
        self
    }

    /// Sets [`ViewOptions::metacopy`] (builder style).
    #[must_use]
    pub fn metacopy(mut self, v: Metacopy) -> ViewOptions {
        self.metacopy = v;
        self
    }

    /// Sets the owner of new objects (builder style).
    #[must_use]
    pub fn owner(mut self, uid: u32, gid: u32) -> ViewOptions {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets [`ViewOptions::umask`] (builder style).
    #[must_use]
    pub fn umask(mut self, umask: u32) -> ViewOptions {
        self.umask = umask & 0o777;
        self
    }

    /// Sets [`ViewOptions::clock`] (builder style).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> ViewOptions {
        self.clock = clock;
        self
    }
}

/// How [`MergedView::rename_with`](crate::MergedView::rename_with) treats
/// the target (the flags of `renameat2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RenameMode {
    /// Replace the target if it exists (plain `rename`).
    #[default]
    Replace,
    /// Fail with `EEXIST` if the target exists (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swap source and target, which must both exist (`RENAME_EXCHANGE`).
    Exchange,
}

/// Which layer an object of the merged view comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerSource {
    /// The writable upper layer.
    Upper,
    /// A lower layer, by its index in [`MergedView::layers`](crate::MergedView::layers)
    /// (0 is the top lower layer).
    Lower(usize),
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name.
    pub name: NameBuf,
    /// The type.
    pub file_type: FileType,
    /// The topmost layer holding it.
    pub source: LayerSource,
}

/// One entry of a [`Listing`](crate::view::Listing): a
/// [`DirEntry`] whose name is lent by the listing instead of copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntryRef<'a> {
    /// The name.
    pub name: &'a Name,
    /// The type.
    pub file_type: FileType,
    /// The topmost layer holding it.
    pub source: LayerSource,
}

impl From<DirEntryRef<'_>> for DirEntry {
    fn from(e: DirEntryRef<'_>) -> DirEntry {
        DirEntry {
            name: e.name.to_owned(),
            file_type: e.file_type,
            source: e.source,
        }
    }
}

/// Options for [`MergedView::open`](crate::MergedView::open), as
/// [`std::fs::OpenOptions`].
///
/// Opening for writing (`write`, `append`, `truncate`) copies the file up
/// even if nothing is written, as the kernel does; opening for reading
/// never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOptions {
    pub(crate) read: bool,
    pub(crate) write: bool,
    pub(crate) append: bool,
    pub(crate) truncate: bool,
    pub(crate) create: bool,
    pub(crate) create_new: bool,
}

impl OpenOptions {
    /// No access at all (set some).
    #[must_use]
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Read access.
    pub fn read(&mut self, v: bool) -> &mut OpenOptions {
        self.read = v;
        self
    }

    /// Write access.
    pub fn write(&mut self, v: bool) -> &mut OpenOptions {
        self.write = v;
        self
    }

    /// Every write goes to the end (implies write access).
    pub fn append(&mut self, v: bool) -> &mut OpenOptions {
        self.append = v;
        self
    }

    /// Truncate to zero on open (needs write access).
    pub fn truncate(&mut self, v: bool) -> &mut OpenOptions {
        self.truncate = v;
        self
    }

    /// Create the file if missing (needs write access).
    pub fn create(&mut self, v: bool) -> &mut OpenOptions {
        self.create = v;
        self
    }

    /// Create the file, failing with `EEXIST` if the name exists, even as a
    /// dangling symlink (needs write access).
    pub fn create_new(&mut self, v: bool) -> &mut OpenOptions {
        self.create_new = v;
        self
    }

    /// Whether the options ask for write access.
    #[must_use]
    pub fn writes(&self) -> bool {
        self.write || self.append
    }

    /// Whether the options may create the file.
    #[must_use]
    pub fn creates(&self) -> bool {
        self.create || self.create_new
    }

    /// Whether the combination is valid (as std: `truncate`, `create` and
    /// `create_new` need write access, `truncate` excludes `append`, and
    /// some access is asked for).
    #[must_use]
    pub fn is_valid(&self) -> bool {
        let access = self.read || self.writes();
        let needs_write = self.truncate || self.creates();
        access && (!needs_write || self.writes()) && !(self.truncate && self.append)
    }
}

/// An open handle of a merged tree (`MergedView::open_handle`): a number
/// the view keeps in its table, as a FUSE server keeps a file handle.
/// Handle numbers are given out in increasing order from 1 and never reused
/// within one view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HandleId(pub u64);
