//! Conversions between the view's types and FUSE's: metadata to
//! attributes, errors to errnos, times, device numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, INodeNo};

use crate::error::Error;
use crate::meta::{FileType, Metadata, Timestamp, major, makedev, minor};

/// The errno the kernel gets for `e` (the view's kinds are the kernel's
/// errnos).
pub(super) fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

pub(super) fn kind(t: FileType) -> fuser::FileType {
    match t {
        FileType::File => fuser::FileType::RegularFile,
        FileType::Dir => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::CharDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
        FileType::Socket => fuser::FileType::Socket,
    }
}

/// The file type of a `mknod`/`create` mode (its `S_IFMT` bits).
pub(super) fn type_of_mode(mode: u32) -> Option<FileType> {
    FileType::from_mode(mode & 0o170_000)
}

pub(super) fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nsec));
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.sec.unsigned_abs()) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nanos
    }
}

/// The kernel's 32-bit device encoding (`new_encode_dev`) of `rdev`.
pub(super) fn encode_dev(rdev: u64) -> u32 {
    let (ma, mi) = (major(rdev), minor(rdev));
    (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & !0xff) << 12)
}

/// The device number of the kernel's 32-bit encoding (`new_decode_dev`).
pub(super) fn decode_dev(dev: u32) -> u64 {
    makedev((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// The attributes of `meta`, numbered `ino`. fuser sends `ino` as the
/// node id in entry replies, and the kernel shows it as `st_ino`.
pub(super) fn file_attr(meta: &Metadata, ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: meta.size,
        blocks: meta.size.div_ceil(512),
        atime: system_time(meta.atime),
        mtime: system_time(meta.mtime),
        ctime: system_time(meta.ctime),
        crtime: system_time(meta.ctime),
        kind: kind(meta.file_type),
        perm: (meta.mode & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink).unwrap_or(u32::MAX),
        uid: meta.uid,
        gid: meta.gid,
        rdev: encode_dev(meta.rdev),
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip_the_kernel_encoding() {
        for (ma, mi) in [(1, 3), (8, 17), (259, 0), (4095, 1_048_575), (0, 256)] {
            let rdev = makedev(ma, mi);
            assert_eq!(decode_dev(encode_dev(rdev)), rdev, "{ma}:{mi}");
        }
        // What `makedev(8, 1)` is on Linux (`ls -l /dev/sda1`).
        assert_eq!(encode_dev(makedev(8, 1)), 0x801);
    }

    #[test]
    fn times_round_trip_before_and_after_1970() {
        for t in [
            Timestamp::new(0, 0),
            Timestamp::new(1_700_000_000, 123_456_789),
            Timestamp::new(-1, 500_000_000),
            Timestamp::new(-86_400, 0),
        ] {
            assert_eq!(Timestamp::from(system_time(t)), t);
        }
    }
}
