//! Metadata: file type, permission bits, owner, times, size, links, device
//! numbers, extended attributes and inode identity.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Operation, Result};

/// The type of a filesystem object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix domain socket.
    Socket,
}

impl FileType {
    /// Whether this is a directory.
    #[must_use]
    pub fn is_dir(self) -> bool {
        self == FileType::Dir
    }

    /// Whether this is a regular file.
    #[must_use]
    pub fn is_file(self) -> bool {
        self == FileType::File
    }

    /// Whether this is a symbolic link.
    #[must_use]
    pub fn is_symlink(self) -> bool {
        self == FileType::Symlink
    }

    /// Whether this is a fifo, device or socket (an object that is only
    /// metadata).
    #[must_use]
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileType::Fifo | FileType::CharDevice | FileType::BlockDevice | FileType::Socket
        )
    }

    /// The `S_IFMT` bits of `st_mode`.
    #[must_use]
    pub const fn format_bits(self) -> u32 {
        match self {
            FileType::File => 0o100_000,
            FileType::Dir => 0o040_000,
            FileType::Symlink => 0o120_000,
            FileType::Fifo => 0o010_000,
            FileType::CharDevice => 0o020_000,
            FileType::BlockDevice => 0o060_000,
            FileType::Socket => 0o140_000,
        }
    }

    /// The type for `S_IFMT` bits of `st_mode`.
    #[must_use]
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & 0o170_000 {
            0o100_000 => FileType::File,
            0o040_000 => FileType::Dir,
            0o120_000 => FileType::Symlink,
            0o010_000 => FileType::Fifo,
            0o020_000 => FileType::CharDevice,
            0o060_000 => FileType::BlockDevice,
            0o140_000 => FileType::Socket,
            _ => return None,
        })
    }

    /// The letter `ls -l` shows for this type.
    #[must_use]
    pub const fn letter(self) -> char {
        match self {
            FileType::File => '-',
            FileType::Dir => 'd',
            FileType::Symlink => 'l',
            FileType::Fifo => 'p',
            FileType::CharDevice => 'c',
            FileType::BlockDevice => 'b',
            FileType::Socket => 's',
        }
    }
}

/// Permission bits, including setuid, setgid and sticky.
pub const MODE_MASK: u32 = 0o7777;
/// The setuid bit.
pub const S_ISUID: u32 = 0o4000;
/// The setgid bit.
pub const S_ISGID: u32 = 0o2000;
/// The group-execute bit.
pub const S_IXGRP: u32 = 0o010;

/// A point in time with nanoseconds, as in `struct timespec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (negative before it).
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp { sec: 0, nsec: 0 };

    /// A timestamp; `nsec` is reduced into its range.
    #[must_use]
    pub const fn new(sec: i64, nsec: u32) -> Timestamp {
        Timestamp {
            sec: sec + (nsec / 1_000_000_000) as i64,
            nsec: nsec % 1_000_000_000,
        }
    }

    /// The current time of the system clock.
    #[must_use]
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp::new(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    Timestamp::new(-secs, 0)
                } else {
                    Timestamp::new(-secs - 1, 1_000_000_000 - d.subsec_nanos())
                }
            }
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.sec, self.nsec)
    }
}

/// Extended attributes: name to value, sorted by name; cheap to clone
/// (shared until changed).
#[derive(Clone, Default)]
pub struct Xattrs(
    /// `None` for no attributes (nearly every object): cloning it then
    /// writes to no memory at all. (A single shared empty map cost every
    /// `stat` on every thread two atomic writes to one cache line.)
    Option<Arc<BTreeMap<String, Bytes>>>,
);

/// What an object without attributes holds.
static NO_XATTRS: BTreeMap<String, Bytes> = BTreeMap::new();

impl Xattrs {
    /// No attributes.
    #[must_use]
    pub fn new() -> Xattrs {
        Xattrs::default()
    }

    fn map(&self) -> &BTreeMap<String, Bytes> {
        self.0.as_deref().unwrap_or(&NO_XATTRS)
    }

    /// The value of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.map().get(name)
    }

    /// Sets `name`; returns the old value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Option<Bytes> {
        Arc::make_mut(self.0.get_or_insert_default()).insert(name.into(), value.into())
    }

    /// Removes `name`; returns the old value.
    pub fn remove(&mut self, name: &str) -> Option<Bytes> {
        let map = self.0.as_mut().filter(|m| m.contains_key(name))?;
        let old = Arc::make_mut(map).remove(name);
        if map.is_empty() {
            self.0 = None;
        }
        old
    }

    /// Whether there are no attributes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// The number of attributes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// The attributes in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.map().iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map().keys().map(String::as_str)
    }

    /// Keeps only the attributes for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Bytes) -> bool) {
        if let Some(map) = self
            .0
            .as_mut()
            .filter(|m| m.iter().any(|(k, v)| !keep(k, v)))
        {
            Arc::make_mut(map).retain(|k, v| keep(k, v));
            if map.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl PartialEq for Xattrs {
    fn eq(&self, other: &Xattrs) -> bool {
        self.map() == other.map()
    }
}

impl Eq for Xattrs {}

impl fmt::Debug for Xattrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.map()
                    .iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

impl<K: Into<String>, V: Into<Bytes>> FromIterator<(K, V)> for Xattrs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Xattrs {
        let map: BTreeMap<String, Bytes> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Xattrs((!map.is_empty()).then(|| Arc::new(map)))
    }
}

/// Everything known about one object, as `stat` reports it plus its
/// extended attributes.
///
/// In a layer, `ino` and `nlink` are the layer's own (two names with the
/// same `ino` in one layer are hard links). Through a
/// [`MergedView`](crate::MergedView), `ino` identifies the merged object and
/// stays the same across copy-up, as the kernel keeps `st_ino`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The type.
    pub file_type: FileType,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes (the target length for a symlink; 0 for others that
    /// hold no data).
    pub size: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Device number of a character or block device (see [`makedev`]).
    pub rdev: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification of the contents.
    pub mtime: Timestamp,
    /// Last change of the metadata.
    pub ctime: Timestamp,
    /// Inode number.
    pub ino: u64,
    /// Extended attributes.
    pub xattrs: Xattrs,
}

impl Metadata {
    /// Metadata of a new object of `file_type`: mode `0o644` for a regular
    /// file or special file, `0o755` for a directory, `0o777` for a symlink,
    /// owner root, times at the epoch, one link.
    #[must_use]
    pub fn new(file_type: FileType) -> Metadata {
        let mode = match file_type {
            FileType::Dir => 0o755,
            FileType::Symlink => 0o777,
            _ => 0o644,
        };
        Metadata {
            file_type,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: if file_type.is_dir() { 2 } else { 1 },
            rdev: 0,
            atime: Timestamp::EPOCH,
            mtime: Timestamp::EPOCH,
            ctime: Timestamp::EPOCH,
            ino: 0,
            xattrs: Xattrs::new(),
        }
    }

    /// Sets the permission bits (builder style).
    #[must_use]
    pub fn with_mode(mut self, mode: u32) -> Metadata {
        self.mode = mode & MODE_MASK;
        self
    }

    /// Sets the owner (builder style).
    #[must_use]
    pub fn with_owner(mut self, uid: u32, gid: u32) -> Metadata {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets atime, mtime and ctime to `t` (builder style).
    #[must_use]
    pub fn with_times(mut self, t: Timestamp) -> Metadata {
        self.atime = t;
        self.mtime = t;
        self.ctime = t;
        self
    }

    /// Sets the device number (builder style).
    #[must_use]
    pub fn with_rdev(mut self, rdev: u64) -> Metadata {
        self.rdev = rdev;
        self
    }

    /// Whether this is a directory.
    #[must_use]
    pub fn is_dir(&self) -> bool {
        self.file_type.is_dir()
    }

    /// Whether this is a regular file.
    #[must_use]
    pub fn is_file(&self) -> bool {
        self.file_type.is_file()
    }

    /// Whether this is a symlink.
    #[must_use]
    pub fn is_symlink(&self) -> bool {
        self.file_type.is_symlink()
    }

    /// The size in bytes (as [`std::fs::Metadata::len`]).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether the size is zero.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The whole `st_mode`: type bits and permission bits.
    #[must_use]
    pub fn st_mode(&self) -> u32 {
        self.file_type.format_bits() | (self.mode & MODE_MASK)
    }
}

/// Encodes a device number as Linux `makedev` does.
///
/// ```
/// let rdev = layerstack::makedev(8, 1);
/// assert_eq!((layerstack::major(rdev), layerstack::minor(rdev)), (8, 1));
/// ```
#[must_use]
pub const fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (major as u64, minor as u64);
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

/// The major number of a device number.
#[must_use]
pub const fn major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)) as u32
}

/// The minor number of a device number.
#[must_use]
pub const fn minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)) as u32
}

/// Whether `rdev` survives the kernel's `mknod`, which takes a 32-bit
/// device number: a major of at most 12 bits and a minor of at most 20.
/// A larger one would be cut, and could become 0/0, the whiteout marker.
#[must_use]
pub(crate) const fn rdev_fits_mknod(rdev: u64) -> bool {
    major(rdev) <= 0xfff && minor(rdev) <= 0xf_ffff
}

/// The longest extended attribute name, in bytes (Linux `XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// The largest extended attribute value, in bytes (Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;

/// Checks an extended attribute name as the kernel does: at most
/// [`XATTR_NAME_MAX`] bytes, not empty, in one of the namespaces `user.`,
/// `trusted.`, `security.`, `system.` with a non-empty rest.
///
/// The kernel's errors (an overlay mount over tmpfs or ext4): an empty or
/// too long name is `ERANGE`; a namespace prefix alone (`user.`,
/// `trusted.`, `security.`) is `EINVAL` (the filesystem's handler matches
/// the prefix and refuses the empty rest); any other name, `system.` alone
/// included, is `EOPNOTSUPP` (no handler).
///
/// # Errors
/// `ERANGE` for an empty or too long name, `EINVAL` for a bare namespace
/// prefix, `EOPNOTSUPP` for an unknown namespace.
pub(crate) fn check_xattr_name(
    name: &str,
    op: Operation,
    path: impl crate::path::PathLike,
) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Error::new(ErrorKind::OutOfRange, op, path)
            .with_detail(format!("invalid extended attribute name `{name}`")));
    }
    if ["user.", "trusted.", "security."].contains(&name) {
        return Err(Error::new(ErrorKind::InvalidInput, op, path)
            .with_detail(format!("extended attribute `{name}` has an empty name")));
    }
    let known = ["user.", "trusted.", "security.", "system."]
        .iter()
        .any(|ns| name.len() > ns.len() && name.starts_with(ns));
    if !known {
        return Err(Error::new(ErrorKind::Unsupported, op, path).with_detail(format!(
            "extended attribute `{name}` is not in the user, trusted, security or system namespace"
        )));
    }
    Ok(())
}

/// Whether `name` may be set on an object of `file_type`: the kernel allows
/// `user.*` attributes only on regular files and directories (elsewhere a
/// set fails with `EPERM` and a get finds nothing, `ENODATA`).
#[must_use]
pub(crate) fn xattr_allowed_on(file_type: FileType, name: &str) -> bool {
    !name.starts_with("user.") || matches!(file_type, FileType::File | FileType::Dir)
}

/// The permission bits after a change of owner: Linux clears setuid, and
/// setgid where group-execute is set, on every non-directory, even for root.
#[must_use]
pub(crate) fn mode_after_chown(file_type: FileType, mode: u32) -> u32 {
    if file_type.is_dir() {
        return mode;
    }
    let mut mode = mode & !S_ISUID;
    if mode & S_IXGRP != 0 {
        mode &= !S_ISGID;
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip() {
        for (ma, mi) in [
            (0, 0),
            (1, 3),
            (8, 17),
            (4095, 255),
            (4096, 256),
            (0xfffff, 0xfffff),
        ] {
            let d = makedev(ma, mi);
            assert_eq!((major(d), minor(d)), (ma, mi));
        }
        assert_eq!(makedev(1, 3), 0x103);
    }

    #[test]
    fn xattr_name_rules() {
        assert!(check_xattr_name("user.a", Operation::SetXattr, "f").is_ok());
        assert_eq!(
            check_xattr_name("user.", Operation::SetXattr, "f")
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            check_xattr_name("system.", Operation::SetXattr, "f")
                .unwrap_err()
                .kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            check_xattr_name("foo.a", Operation::SetXattr, "f")
                .unwrap_err()
                .kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            check_xattr_name("", Operation::SetXattr, "f")
                .unwrap_err()
                .kind(),
            ErrorKind::OutOfRange
        );
        assert!(!xattr_allowed_on(FileType::Symlink, "user.a"));
        assert!(xattr_allowed_on(FileType::Symlink, "trusted.a"));
    }

    #[test]
    fn chown_clears_setuid_and_setgid_with_group_exec() {
        assert_eq!(mode_after_chown(FileType::File, 0o6755), 0o0755);
        assert_eq!(mode_after_chown(FileType::File, 0o6745), 0o2745);
        assert_eq!(mode_after_chown(FileType::Dir, 0o6755), 0o6755);
    }

    #[test]
    fn timestamps_before_epoch() {
        let t = UNIX_EPOCH - std::time::Duration::new(1, 500);
        assert_eq!(Timestamp::from(t), Timestamp::new(-2, 999_999_500));
    }
}
