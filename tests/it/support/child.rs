//! The child side of the kernel harness: a process chrooted into the
//! overlay mount that applies operations exactly as a program would (with
//! `std::fs` and `rustix`) and prints each [`Outcome`] on one marked line.
//!
//! The parent starts it by re-executing the test binary with only the
//! `kernel_child` test selected and [`CHILD_ENV`] set to the mount point; it
//! then writes one operation per line on the child's stdin (a one-op
//! [`Scenario`] encoded with [`Scenario::to_bytes`], in hex) and reads one
//! [`OUTCOME_MARK`] line back per operation. `Op::Commit` never reaches the
//! child: the parent does it (it remounts).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use layerstack::merged::{OpenOptions, RenameMode};
use layerstack::testing::{MetadataSummary, Op, Outcome, Scenario};
use layerstack::{ErrorKind, FileType, Name, NameBuf, Timestamp};

use crate::support::harness::ESTALE_MARK;
use rustix::fs::{AtFlags, CWD, Mode, RenameFlags, Timespec, Timestamps, UTIME_OMIT};

/// The environment variable that makes `kernel_child` serve: the mount point
/// to chroot into.
pub const CHILD_ENV: &str = "LAYERSTACK_KERNEL_CHILD_ROOT";
/// The prefix of the line that carries an outcome.
pub const OUTCOME_MARK: &str = "LAYERSTACK-OUTCOME ";

/// Extended attribute values and lists are never larger than this here.
const XATTR_BUF: usize = 1 << 16;

/// Chroots into `root` and serves operations from stdin until it closes.
pub fn serve(root: &OsStr) {
    std::os::unix::fs::chroot(root).expect("chroot into the overlay mount");
    std::env::set_current_dir("/").expect("chdir / in the chroot");
    rustix::process::umask(Mode::from_raw_mode(0o022));
    let stdin = io::stdin();
    let mut stdout = io::stdout();
    for line in stdin.lock().lines() {
        let line = line.expect("read an operation from the parent");
        let bytes = decode_hex(line.trim()).expect("the parent sends hex");
        let scenario = Scenario::from_bytes(&bytes);
        let [op] = scenario.ops.as_slice() else {
            panic!("the parent sends exactly one operation, got {scenario:?}");
        };
        let outcome = match std::panic::catch_unwind(|| apply(op)) {
            Ok(outcome) => format!("{outcome:?}"),
            Err(_) if STALE.with(std::cell::Cell::get) => ESTALE_MARK.to_owned(),
            Err(e) => std::panic::resume_unwind(e),
        };
        STALE.with(|s| s.set(false));
        writeln!(stdout, "{OUTCOME_MARK}{outcome}").expect("write the outcome");
        stdout.flush().expect("flush the outcome");
    }
}

/// Hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `path`, just listed by `readdir`, is a whiteout the kernel
/// lists by mistake: in a directory that comes from a single lower layer,
/// overlayfs passes `readdir` through to the real directory, so a whiteout
/// there that hides nothing (nothing below has the name) is listed, as a
/// character device, while a lookup of it gives `ENOENT`. The crate never
/// lists whiteouts; such entries are left out of the comparison.
pub fn is_stray_whiteout(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

thread_local! {
    /// Set when the kernel answered `ESTALE` (see `ESTALE_MARK`).
    static STALE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The open handles (`Op::OpenHandle`), in the order they were opened.
    static HANDLES: std::cell::RefCell<Vec<Held>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An open handle of the child.
enum Held {
    /// A regular file: the open descriptor, as a program holds it.
    File { file: fs::File, append: bool },
    /// A directory or special file, held by the physical path it was
    /// opened at: what the crate documents for those (`view::handle`).
    Path {
        path: std::path::PathBuf,
        dir: bool,
        read: bool,
    },
}

const EBADF: Outcome = Outcome::Err(ErrorKind::BadHandle);

/// `OpenHandle`: as `Op::Open`, but the handle stays.
fn open_handle(path: &Name, options: &OpenOptions) -> Outcome {
    if !options.is_valid() {
        return EINVAL;
    }
    let held = if !options.create_new_flag() && special(path).is_some() {
        if options.writes() {
            return EINVAL;
        }
        match fs::canonicalize(path.to_path()) {
            Ok(path) => Held::Path {
                path,
                dir: false,
                read: options.read_flag(),
            },
            Err(e) => return err(&e),
        }
    } else {
        let file = match std_options(options).open(path.to_path()) {
            Ok(file) => file,
            Err(e) => return err(&e),
        };
        let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            match fs::canonicalize(path.to_path()) {
                Ok(path) => Held::Path {
                    path,
                    dir: true,
                    read: options.read_flag(),
                },
                Err(e) => return err(&e),
            }
        } else {
            Held::File {
                file,
                append: options.append_flag(),
            }
        }
    };
    HANDLES.with(|h| h.borrow_mut().push(held));
    Outcome::Unit
}

/// Runs `f` on the open handle at place `slot` (modulo their number).
fn with_handle(slot: u8, f: impl FnOnce(&Held) -> Outcome) -> Outcome {
    HANDLES.with(|h| {
        let held = h.borrow();
        if held.is_empty() {
            return EBADF;
        }
        f(&held[usize::from(slot) % held.len()])
    })
}

fn fd_metadata(file: &fs::File) -> Outcome {
    let m = match file.metadata() {
        Ok(m) => m,
        Err(e) => return err(&e),
    };
    let mut list = vec![0u8; XATTR_BUF];
    let n = match rustix::fs::flistxattr(file, &mut list[..]) {
        Ok(n) => n,
        Err(e) => return rustix_err(e),
    };
    let mut xattrs = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8(name.to_vec()).expect("UTF-8 attribute names");
        let mut value = vec![0u8; XATTR_BUF];
        match rustix::fs::fgetxattr(file, name.as_str(), &mut value[..]) {
            Ok(len) => value.truncate(len),
            Err(e) => return rustix_err(e),
        }
        xattrs.push((name, value));
    }
    xattrs.sort();
    Outcome::Metadata(MetadataSummary::of_std(&m, xattrs).expect("a known file type"))
}

fn handle_op(op: &Op) -> Outcome {
    match op {
        Op::OpenHandle { path, options } => open_handle(path, options),
        Op::HandleReadAt { slot, offset, len } => with_handle(*slot, |h| match h {
            Held::File { file, .. } => {
                let mut buf = vec![0u8; *len];
                let mut got = 0;
                loop {
                    match file.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(n) => {
                            got += n;
                            if n == 0 || got == *len {
                                break;
                            }
                        }
                        Err(e) => return err(&e),
                    }
                }
                buf.truncate(got);
                Outcome::Bytes(buf)
            }
            Held::Path { read: false, .. } => EBADF,
            Held::Path { dir: true, .. } => Outcome::Err(ErrorKind::IsADirectory),
            Held::Path { path, .. } => {
                let path = Name::new(path.as_os_str().as_bytes());
                if special(path).is_some() {
                    return EINVAL;
                }
                match read_at(path, *offset, *len) {
                    Ok(b) => Outcome::Bytes(b),
                    Err(e) => err(&e),
                }
            }
        }),
        Op::HandleWriteAt { slot, offset, data } => with_handle(*slot, |h| match h {
            Held::File { file, append } => {
                // With `O_APPEND`, Linux's `pwrite` writes at the end. One
                // `pwrite` even of nothing (`write_all_at` would skip it):
                // the kernel checks the descriptor's access first.
                let first = match file.write_at(data, *offset) {
                    Ok(n) => n,
                    Err(e) => return err(&e),
                };
                if let Err(e) = file.write_all_at(&data[first..], offset + first as u64) {
                    return err(&e);
                }
                if *append {
                    match file.metadata() {
                        Ok(m) => Outcome::Offset(m.len()),
                        Err(e) => err(&e),
                    }
                } else {
                    Outcome::Offset(offset + data.len() as u64)
                }
            }
            Held::Path { .. } => EBADF,
        }),
        Op::HandleSetLen { slot, len } => with_handle(*slot, |h| match h {
            Held::File { file, .. } => unit(file.set_len(*len)),
            // ftruncate(2) of a descriptor not open for writing.
            Held::Path { .. } => EINVAL,
        }),
        Op::HandleMetadata { slot } => with_handle(*slot, |h| match h {
            Held::File { file, .. } => fd_metadata(file),
            Held::Path { path, .. } => metadata(Name::new(path.as_os_str().as_bytes()), false),
        }),
        Op::CloseHandle { slot } => HANDLES.with(|h| {
            let mut held = h.borrow_mut();
            if held.is_empty() {
                return EBADF;
            }
            let at = usize::from(*slot) % held.len();
            drop(held.remove(at));
            Outcome::Unit
        }),
        _ => unreachable!("only handle operations come here"),
    }
}

/// The outcome of a failed call, by errno.
fn err(e: &io::Error) -> Outcome {
    let errno = e
        .raw_os_error()
        .unwrap_or_else(|| panic!("an error without an errno from the kernel: {e}"));
    if errno == 116 {
        STALE.with(|s| s.set(true));
        panic!("ESTALE: the kernel refuses this layer stack");
    }
    let kind = ErrorKind::from_errno(errno)
        .unwrap_or_else(|| panic!("errno {errno} ({e}) has no ErrorKind: add it"));
    Outcome::Err(kind)
}

fn rustix_err(e: rustix::io::Errno) -> Outcome {
    err(&io::Error::from(e))
}

fn unit(r: io::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Unit,
        Err(e) => err(&e),
    }
}

fn file_type(t: fs::FileType) -> FileType {
    if t.is_dir() {
        FileType::Dir
    } else if t.is_file() {
        FileType::File
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_fifo() {
        FileType::Fifo
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else if t.is_socket() {
        FileType::Socket
    } else {
        panic!("unknown file type {t:?}")
    }
}

fn metadata(path: &Name, follow: bool) -> Outcome {
    let path = path.to_path();
    let m = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    let m = match m {
        Ok(m) => m,
        Err(e) => return err(&e),
    };
    match layerstack::testing::xattrs_of(Path::new(path), follow) {
        Ok(x) => Outcome::Metadata(MetadataSummary::of_std(&m, x).expect("a known file type")),
        Err(e) => err(&e),
    }
}

/// The API check of the view before opening: `read`, `write` and `open`
/// of a fifo, device or socket are `EINVAL` in the crate (`File` reads and
/// writes only regular files), where the syscall would block on a fifo,
/// fail with `ENXIO` on a socket or reach a host device. So, as the crate
/// does, a special file found (following symlinks) is refused before any
/// syscall that opens it. `None`: go on with the syscall.
fn special(path: &Name) -> Option<()> {
    let path = path.to_path();
    match fs::metadata(path) {
        Ok(m) if file_type(m.file_type()).is_special() => Some(()),
        _ => None,
    }
}

const EINVAL: Outcome = Outcome::Err(ErrorKind::InvalidInput);

fn read_at(path: &Name, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let path = path.to_path();
    let file = fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    // At least one read, even of nothing: a directory gives EISDIR then.
    loop {
        let n = file.read_at(&mut buf[got..], offset + got as u64)?;
        got += n;
        if n == 0 || got == len {
            break;
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The `std` options equal to the crate's `options` (found by trying every
/// combination of the six flags: the crate's fields are private).
fn std_options(options: &OpenOptions) -> fs::OpenOptions {
    let bits = (0u8..64)
        .map(|b| [0, 1, 2, 3, 4, 5].map(|i| b & (1 << i) != 0))
        .find(|b| {
            let mut o = OpenOptions::new();
            o.read(b[0])
                .write(b[1])
                .append(b[2])
                .truncate(b[3])
                .create(b[4])
                .create_new(b[5]);
            o == *options
        })
        .expect("six flags describe every OpenOptions");
    let mut o = fs::OpenOptions::new();
    o.read(bits[0])
        .write(bits[1])
        .append(bits[2])
        .truncate(bits[3])
        .create(bits[4])
        .create_new(bits[5]);
    o
}

fn timespec(t: Option<Timestamp>) -> Timespec {
    match t {
        Some(t) => Timespec {
            tv_sec: t.sec,
            tv_nsec: i64::from(t.nsec),
        },
        None => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
    }
}

pub fn rustix_file_type(t: FileType) -> rustix::fs::FileType {
    match t {
        FileType::Fifo => rustix::fs::FileType::Fifo,
        FileType::CharDevice => rustix::fs::FileType::CharacterDevice,
        FileType::BlockDevice => rustix::fs::FileType::BlockDevice,
        FileType::Socket => rustix::fs::FileType::Socket,
        FileType::File => rustix::fs::FileType::RegularFile,
        FileType::Dir => rustix::fs::FileType::Directory,
        FileType::Symlink => rustix::fs::FileType::Symlink,
    }
}

/// Applies `op` in the current root (the chroot), as a program would.
pub fn apply(op: &Op) -> Outcome {
    match op {
        Op::Metadata { path } => metadata(path, true),
        Op::SymlinkMetadata { path } => metadata(path, false),
        Op::Read { path } => {
            if special(path).is_some() {
                return EINVAL;
            }
            match fs::read(path) {
                Ok(data) => Outcome::Bytes(data),
                Err(e) => err(&e),
            }
        }
        Op::ReadAt { path, offset, len } => {
            if special(path).is_some() {
                return EINVAL;
            }
            match read_at(path, *offset, *len) {
                Ok(data) => Outcome::Bytes(data),
                Err(e) => err(&e),
            }
        }
        Op::ReadDir { path } => {
            let entries = fs::read_dir(path).and_then(|dir| {
                let mut out = Vec::new();
                for e in dir {
                    let e = e?;
                    if is_stray_whiteout(&e.path())? {
                        continue;
                    }
                    let name = NameBuf::from(e.file_name().as_bytes());
                    out.push((name, file_type(e.file_type()?)));
                }
                Ok(out)
            });
            match entries {
                Ok(mut entries) => {
                    entries.sort();
                    Outcome::Listing(entries)
                }
                Err(e) => err(&e),
            }
        }
        Op::ReadLink { path } => match fs::read_link(path) {
            Ok(t) => Outcome::Target(NameBuf::from(t.into_os_string().into_vec())),
            Err(e) => err(&e),
        },
        Op::Write { path, data } => {
            if special(path).is_some() {
                return EINVAL;
            }
            unit(fs::write(path, data))
        }
        Op::Append { path, data } => {
            if special(path).is_some() {
                return EINVAL;
            }
            unit(
                fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(data)),
            )
        }
        Op::WriteAt { path, offset, data } => {
            if special(path).is_some() {
                return EINVAL;
            }
            unit(
                fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.write_all_at(data, *offset)),
            )
        }
        Op::SetLen { path, len } => {
            // truncate(2) of a fifo or device is EINVAL without opening it;
            // the crate's `set_len` says the same. A program opens the file
            // for writing and calls `File::set_len`, which would block on a
            // fifo: refuse special files first, as the crate does.
            if special(path).is_some() {
                return EINVAL;
            }
            unit(
                fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(*len)),
            )
        }
        Op::Open { path, options } => {
            // The crate's documented check: `std` accepts
            // `append + truncate + create_new`, the crate refuses every
            // `truncate + append` (EINVAL) before touching the path.
            if !options.is_valid() {
                return EINVAL;
            }
            if !options.create_new_flag() && special(path).is_some() {
                // See `special`: write access is EINVAL, a read-only open
                // succeeds and does nothing.
                return if options.writes() {
                    EINVAL
                } else {
                    Outcome::Unit
                };
            }
            unit(std_options(options).open(path).map(drop))
        }
        Op::CreateDir { path } => unit(fs::create_dir(path)),
        Op::CreateDirAll { path } => unit(fs::create_dir_all(path)),
        Op::RemoveFile { path } => unit(fs::remove_file(path)),
        Op::RemoveDir { path } => unit(fs::remove_dir(path)),
        Op::RemoveDirAll { path } => remove_dir_all(path),
        Op::Rename { from, to, mode } => {
            let flags = match mode {
                RenameMode::Replace => RenameFlags::empty(),
                RenameMode::NoReplace => RenameFlags::NOREPLACE,
                RenameMode::Exchange => RenameFlags::EXCHANGE,
            };
            match rustix::fs::renameat_with(CWD, from.as_bytes(), CWD, to.as_bytes(), flags) {
                Ok(()) => Outcome::Unit,
                Err(e) => rustix_err(e),
            }
        }
        Op::Symlink { target, link } => unit(std::os::unix::fs::symlink(target, link)),
        Op::HardLink { original, link } => unit(fs::hard_link(original, link)),
        Op::SetPermissions { path, mode } => {
            unit(fs::set_permissions(path, fs::Permissions::from_mode(*mode)))
        }
        Op::SetOwner { path, uid, gid } => unit(std::os::unix::fs::chown(path, *uid, *gid)),
        Op::SetTimes { path, atime, mtime } => {
            let times = Timestamps {
                last_access: timespec(*atime),
                last_modification: timespec(*mtime),
            };
            match rustix::fs::utimensat(CWD, path.as_bytes(), &times, AtFlags::empty()) {
                Ok(()) => Outcome::Unit,
                Err(e) => rustix_err(e),
            }
        }
        Op::GetXattr { path, name } => {
            let mut value = vec![0u8; XATTR_BUF];
            match rustix::fs::getxattr(path.as_bytes(), name.as_str(), &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    Outcome::Bytes(value)
                }
                Err(e) => rustix_err(e),
            }
        }
        Op::SetXattr { path, name, value } => {
            match rustix::fs::setxattr(
                path.as_bytes(),
                name.as_str(),
                value,
                rustix::fs::XattrFlags::empty(),
            ) {
                Ok(()) => Outcome::Unit,
                Err(e) => rustix_err(e),
            }
        }
        Op::RemoveXattr { path, name } => {
            match rustix::fs::removexattr(path.as_bytes(), name.as_str()) {
                Ok(()) => Outcome::Unit,
                Err(e) => rustix_err(e),
            }
        }
        Op::ListXattr { path } => {
            let mut list = vec![0u8; XATTR_BUF];
            match rustix::fs::listxattr(path.as_bytes(), &mut list[..]) {
                Ok(n) => {
                    let mut names: Vec<String> = list[..n]
                        .split(|b| *b == 0)
                        .filter(|n| !n.is_empty())
                        .map(|n| String::from_utf8(n.to_vec()).expect("UTF-8 attribute names"))
                        .collect();
                    names.sort();
                    Outcome::Names(names)
                }
                Err(e) => rustix_err(e),
            }
        }
        Op::Mknod {
            path,
            file_type,
            mode,
            rdev,
        } => {
            // The crate's `mknod` takes the type apart from the mode and
            // creates only fifos, devices and sockets (EINVAL otherwise,
            // checked first as the kernel's `may_mknod` checks the type);
            // the syscall would also make a regular file (S_IFREG) or give
            // EPERM for S_IFDIR.
            if !file_type.is_special() {
                return EINVAL;
            }
            match rustix::fs::mknodat(
                CWD,
                path.as_bytes(),
                rustix_file_type(*file_type),
                Mode::from_raw_mode(mode & 0o7777),
                *rdev,
            ) {
                Ok(()) => Outcome::Unit,
                Err(e) => rustix_err(e),
            }
        }
        Op::Commit => panic!("commit is done by the parent"),
        Op::OpenHandle { .. }
        | Op::HandleReadAt { .. }
        | Op::HandleWriteAt { .. }
        | Op::HandleSetLen { .. }
        | Op::HandleMetadata { .. }
        | Op::CloseHandle { .. } => handle_op(op),
    }
}

/// What `create_new` the options hold (the field is private to the crate).
trait CreateNew {
    fn create_new_flag(&self) -> bool;
    fn read_flag(&self) -> bool;
    fn append_flag(&self) -> bool;
}

impl CreateNew for OpenOptions {
    fn create_new_flag(&self) -> bool {
        // `create_new` is the only way to create without `create`.
        self.creates() && {
            let mut without = *self;
            without.create_new(false);
            without != *self
        }
    }

    fn read_flag(&self) -> bool {
        let mut without = *self;
        without.read(false);
        without != *self
    }

    fn append_flag(&self) -> bool {
        let mut without = *self;
        without.append(false);
        without != *self
    }
}

/// The crate's `remove_dir_all`: `std`'s, except that a path naming no
/// directory by its name (the root, `.`, `..`, a symlink with a trailing
/// slash) is refused with `rmdir`'s error before anything is removed (`std`
/// would empty the directory first).
fn remove_dir_all(path: &Name) -> Outcome {
    let shape = match layerstack::testing::path_shape(path, layerstack::Operation::RemoveDir) {
        Ok(shape) => shape,
        Err(e) => return Outcome::Err(e.kind()),
    };
    if !shape.last_is_name {
        return unit(fs::remove_dir(path));
    }
    let trimmed = path.as_bytes();
    let trimmed = &trimmed[..trimmed
        .iter()
        .rposition(|&b| b != b'/')
        .map_or(0, |i| i + 1)];
    if shape.trailing_slash
        && fs::symlink_metadata(Name::new(trimmed).to_path()).is_ok_and(|m| m.is_symlink())
    {
        return Outcome::Err(ErrorKind::NotADirectory);
    }
    // The crate resolves the path once and removes that directory; `std`
    // walks the path again for its final `rmdir`, which a symlink on the
    // way (removed with the tree) can send elsewhere. So: resolve the
    // parent first, then remove by the resolved path.
    let path = path.to_path();
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return unit(fs::remove_dir_all(path));
    };
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    match fs::canonicalize(parent) {
        Ok(real) => unit(fs::remove_dir_all(real.join(name))),
        Err(e) => err(&e),
    }
}
