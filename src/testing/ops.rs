//! Operations of the merged view as data ([`Op`]), their comparable
//! results ([`Outcome`]), their strategy, and applying them to the model
//! and to a view.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::error::{ErrorKind, Result};
use crate::merged::{HandleId, MergedFs, OpenOptions, RenameMode};
use crate::meta::{FileType, Timestamp};
pub use crate::model::MetadataSummary;
use crate::model::Model;
use crate::path::NameBuf;
use crate::testing::NAMES;
use crate::testing::items::{IDS, RDEVS};
use crate::view::MergedView;

/// One call of the merged view, with its arguments.
///
/// Paths are user paths as a caller writes them: relative or absolute,
/// with `.`, `..` and trailing slashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `metadata(path)`.
    Metadata {
        /// Path.
        path: NameBuf,
    },
    /// `symlink_metadata(path)`.
    SymlinkMetadata {
        /// Path.
        path: NameBuf,
    },
    /// `read(path)`.
    Read {
        /// Path.
        path: NameBuf,
    },
    /// `read_at(path, offset, len)`.
    ReadAt {
        /// Path.
        path: NameBuf,
        /// Offset.
        offset: u64,
        /// Length.
        len: usize,
    },
    /// `read_dir(path)`.
    ReadDir {
        /// Path.
        path: NameBuf,
    },
    /// `read_link(path)`.
    ReadLink {
        /// Path.
        path: NameBuf,
    },
    /// `write(path, data)`.
    Write {
        /// Path.
        path: NameBuf,
        /// Data.
        data: Vec<u8>,
    },
    /// `append(path, data)`.
    Append {
        /// Path.
        path: NameBuf,
        /// Data.
        data: Vec<u8>,
    },
    /// `write_at(path, offset, data)`.
    WriteAt {
        /// Path.
        path: NameBuf,
        /// Offset.
        offset: u64,
        /// Data.
        data: Vec<u8>,
    },
    /// `set_len(path, len)`.
    SetLen {
        /// Path.
        path: NameBuf,
        /// New length.
        len: u64,
    },
    /// `open(path, options)` (the handle is dropped at once).
    Open {
        /// Path.
        path: NameBuf,
        /// Options, valid or not.
        options: OpenOptions,
    },
    /// `create_dir(path)`.
    CreateDir {
        /// Path.
        path: NameBuf,
    },
    /// `create_dir_all(path)`.
    CreateDirAll {
        /// Path.
        path: NameBuf,
    },
    /// `remove_file(path)`.
    RemoveFile {
        /// Path.
        path: NameBuf,
    },
    /// `remove_dir(path)`.
    RemoveDir {
        /// Path.
        path: NameBuf,
    },
    /// `remove_dir_all(path)`.
    RemoveDirAll {
        /// Path.
        path: NameBuf,
    },
    /// `rename_with(from, to, mode)`.
    Rename {
        /// Source.
        from: NameBuf,
        /// Target.
        to: NameBuf,
        /// Replace, no-replace or exchange.
        mode: RenameMode,
    },
    /// `symlink(target, link)`.
    Symlink {
        /// Target, stored verbatim.
        target: NameBuf,
        /// The new name.
        link: NameBuf,
    },
    /// `hard_link(original, link)`.
    HardLink {
        /// The existing name.
        original: NameBuf,
        /// The new name.
        link: NameBuf,
    },
    /// `set_permissions(path, mode)`.
    SetPermissions {
        /// Path.
        path: NameBuf,
        /// Mode (bits above `0o7777` are ignored by the view).
        mode: u32,
    },
    /// `set_owner(path, uid, gid)`.
    SetOwner {
        /// Path.
        path: NameBuf,
        /// New owner, if any.
        uid: Option<u32>,
        /// New group, if any.
        gid: Option<u32>,
    },
    /// `set_times(path, atime, mtime)`.
    SetTimes {
        /// Path.
        path: NameBuf,
        /// New access time, if any.
        atime: Option<Timestamp>,
        /// New modification time, if any.
        mtime: Option<Timestamp>,
    },
    /// `get_xattr(path, name)`.
    GetXattr {
        /// Path.
        path: NameBuf,
        /// Attribute name.
        name: String,
    },
    /// `set_xattr(path, name, value)`.
    SetXattr {
        /// Path.
        path: NameBuf,
        /// Attribute name.
        name: String,
        /// Value.
        value: Vec<u8>,
    },
    /// `remove_xattr(path, name)`.
    RemoveXattr {
        /// Path.
        path: NameBuf,
        /// Attribute name.
        name: String,
    },
    /// `list_xattr(path)`.
    ListXattr {
        /// Path.
        path: NameBuf,
    },
    /// `mknod(path, file_type, mode, rdev)`.
    Mknod {
        /// Path.
        path: NameBuf,
        /// Type (any: non-special ones are refused).
        file_type: FileType,
        /// Mode.
        mode: u32,
        /// Device number.
        rdev: u64,
    },
    /// `commit()`: the upper layer becomes a lower one.
    Commit,
    /// `open_handle(path, options)`: the handle stays open, for the
    /// handle operations below. They name a handle by its place among the
    /// open ones (`slot` modulo their number, in the order they were
    /// opened); with none open, a handle that does not exist (`EBADF`).
    OpenHandle {
        /// Path.
        path: NameBuf,
        /// Options, valid or not.
        options: OpenOptions,
    },
    /// `handle_read_at(handle, offset, len)`.
    HandleReadAt {
        /// Which open handle.
        slot: u8,
        /// Offset.
        offset: u64,
        /// Length.
        len: usize,
    },
    /// `handle_write_at(handle, offset, data)`.
    HandleWriteAt {
        /// Which open handle.
        slot: u8,
        /// Offset.
        offset: u64,
        /// Data.
        data: Vec<u8>,
    },
    /// `handle_set_len(handle, len)`.
    HandleSetLen {
        /// Which open handle.
        slot: u8,
        /// New length.
        len: u64,
    },
    /// `handle_metadata(handle)` (`fstat`).
    HandleMetadata {
        /// Which open handle.
        slot: u8,
    },
    /// `close_handle(handle)`.
    CloseHandle {
        /// Which open handle.
        slot: u8,
    },
}

/// The result of an [`Op`], in a form two implementations can be compared
/// by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Success with nothing to show.
    Unit,
    /// File contents or an attribute value.
    Bytes(Vec<u8>),
    /// Metadata.
    Metadata(MetadataSummary),
    /// A directory listing: names and types, in name order.
    Listing(Vec<(NameBuf, FileType)>),
    /// A symlink target.
    Target(NameBuf),
    /// Attribute names, in order.
    Names(Vec<String>),
    /// An offset (where a write through a handle ended).
    Offset(u64),
    /// Failure, by kind.
    Err(ErrorKind),
}

fn outcome<T>(r: Result<T>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(e) => Outcome::Err(e.kind()),
    }
}

fn unit<T>(r: Result<T>) -> Outcome {
    outcome(r, |_| Outcome::Unit)
}

/// Applies `op` to any implementation of the merged-view contract: the
/// one dispatcher from [`Op`] to a call, for the model, a view and anything
/// downstream (a FUSE adapter, a fault-injecting wrapper).
///
/// ```
/// use layerstack::{MemLayer, MergedView};
/// use layerstack::model::Model;
/// use layerstack::testing::{Op, Outcome, apply};
///
/// let op = Op::CreateDirAll { path: "a/b/../c".into() };
/// let view = MergedView::new(vec![], MemLayer::new())?;
/// let mut model = Model::from_layers(&[], Default::default())?;
/// assert_eq!(apply(&mut &view, &op), Outcome::Unit);
/// assert_eq!(apply(&mut model, &op), Outcome::Unit);
/// let op = Op::ReadDir { path: "/a".into() };
/// assert_eq!(apply(&mut &view, &op), apply(&mut model, &op));
/// # Ok::<(), layerstack::Error>(())
/// ```
pub fn apply<F: MergedFs + ?Sized>(fs: &mut F, op: &Op) -> Outcome {
    match op {
        Op::Metadata { path } => outcome(fs.metadata(path), |m| Outcome::Metadata((&m).into())),
        Op::SymlinkMetadata { path } => outcome(fs.symlink_metadata(path), |m| {
            Outcome::Metadata((&m).into())
        }),
        Op::Read { path } => outcome(fs.read(path), |b| Outcome::Bytes(b.to_vec())),
        Op::ReadAt { path, offset, len } => outcome(fs.read_at(path, *offset, *len), |b| {
            Outcome::Bytes(b.to_vec())
        }),
        Op::ReadDir { path } => outcome(fs.read_dir(path), Outcome::Listing),
        Op::ReadLink { path } => outcome(fs.read_link(path), Outcome::Target),
        Op::Write { path, data } => unit(fs.write(path, data)),
        Op::Append { path, data } => unit(fs.append(path, data)),
        Op::WriteAt { path, offset, data } => unit(fs.write_at(path, *offset, data)),
        Op::SetLen { path, len } => unit(fs.set_len(path, *len)),
        Op::Open { path, options } => unit(fs.open(path, options)),
        Op::CreateDir { path } => unit(fs.create_dir(path)),
        Op::CreateDirAll { path } => unit(fs.create_dir_all(path)),
        Op::RemoveFile { path } => unit(fs.remove_file(path)),
        Op::RemoveDir { path } => unit(fs.remove_dir(path)),
        Op::RemoveDirAll { path } => unit(fs.remove_dir_all(path)),
        Op::Rename { from, to, mode } => unit(fs.rename_with(from, to, *mode)),
        Op::Symlink { target, link } => unit(fs.symlink(target, link)),
        Op::HardLink { original, link } => unit(fs.hard_link(original, link)),
        Op::SetPermissions { path, mode } => unit(fs.set_permissions(path, *mode)),
        Op::SetOwner { path, uid, gid } => unit(fs.set_owner(path, *uid, *gid)),
        Op::SetTimes { path, atime, mtime } => unit(fs.set_times(path, *atime, *mtime)),
        Op::GetXattr { path, name } => {
            outcome(fs.get_xattr(path, name), |v| Outcome::Bytes(v.to_vec()))
        }
        Op::SetXattr { path, name, value } => unit(fs.set_xattr(path, name, value)),
        Op::RemoveXattr { path, name } => unit(fs.remove_xattr(path, name)),
        Op::ListXattr { path } => outcome(fs.list_xattr(path), Outcome::Names),
        Op::Mknod {
            path,
            file_type,
            mode,
            rdev,
        } => unit(fs.mknod(path, *file_type, *mode, *rdev)),
        Op::Commit => unit(fs.commit()),
        Op::OpenHandle { path, options } => unit(fs.open_handle(path, options)),
        Op::HandleReadAt { slot, offset, len } => outcome(
            fs.handle_read_at(handle_in(fs, *slot), *offset, *len),
            |b| Outcome::Bytes(b.to_vec()),
        ),
        Op::HandleWriteAt { slot, offset, data } => outcome(
            fs.handle_write_at(handle_in(fs, *slot), *offset, data),
            Outcome::Offset,
        ),
        Op::HandleSetLen { slot, len } => unit(fs.handle_set_len(handle_in(fs, *slot), *len)),
        Op::HandleMetadata { slot } => outcome(fs.handle_metadata(handle_in(fs, *slot)), |m| {
            Outcome::Metadata((&m).into())
        }),
        Op::CloseHandle { slot } => unit(fs.close_handle(handle_in(fs, *slot))),
    }
}

/// The open handle at place `slot` (modulo their number); with none open,
/// a number never given out.
fn handle_in<F: MergedFs + ?Sized>(fs: &F, slot: u8) -> HandleId {
    let open = fs.open_handles();
    if open.is_empty() {
        HandleId(0)
    } else {
        open[usize::from(slot) % open.len()]
    }
}

/// Applies `op` to the reference model: [`apply`] on a [`Model`].
pub fn apply_to_model(model: &mut Model, op: &Op) -> Outcome {
    apply(model, op)
}

/// Applies `op` to a merged view: [`apply`] on a [`MergedView`].
pub fn apply_to_view(view: &MergedView, op: &Op) -> Outcome {
    apply(&mut &*view, op)
}

/// The components user paths are made of.
pub(crate) const TOKENS: [&[u8]; NAMES.len() + 2] = {
    let mut tokens: [&[u8]; NAMES.len() + 2] = [b".."; NAMES.len() + 2];
    let mut i = 0;
    while i < NAMES.len() {
        tokens[i] = NAMES[i];
        i += 1;
    }
    tokens[NAMES.len() + 1] = b".";
    tokens
};
/// Attribute names operations use: the two layers hold, one they do not,
/// another namespace, and invalid ones (`EOPNOTSUPP`, `ERANGE`).
pub(crate) const XATTR_NAMES: [&str; 7] = [
    "user.x",
    "trusted.y",
    "user.z",
    "security.s",
    "foo.bar",
    "user.",
    "",
];
/// Every file type, for `mknod` (the non-special ones are refused).
pub(crate) const FILE_TYPES: [FileType; 7] = [
    FileType::Fifo,
    FileType::CharDevice,
    FileType::BlockDevice,
    FileType::Socket,
    FileType::File,
    FileType::Dir,
    FileType::Symlink,
];

/// Joins user path components: a leading `/` if `absolute`, a trailing
/// one if `trailing` (and there is a component).
pub(crate) fn join_user_path(absolute: bool, tokens: &[&[u8]], trailing: bool) -> NameBuf {
    let mut s = Vec::new();
    if absolute {
        s.push(b'/');
    }
    s.extend_from_slice(&tokens.join(&b'/'));
    if trailing && !tokens.is_empty() {
        s.push(b'/');
    }
    NameBuf::from(s)
}

/// A user path: up to 3 components over [`NAMES`](crate::testing::NAMES)
/// (UTF-8 and not), `..` and `.`,
/// sometimes absolute, sometimes with a trailing slash; rarely empty or
/// the root.
pub(crate) fn user_path() -> impl Strategy<Value = NameBuf> {
    let token = prop_oneof![
        8 => proptest::sample::select(&NAMES[..]),
        1 => Just(b"..".as_slice()),
        1 => Just(b".".as_slice()),
    ];
    let len = prop_oneof![1 => Just(0usize), 6 => Just(1), 4 => Just(2), 2 => Just(3)];
    (
        proptest::bool::weighted(0.2),
        len.prop_flat_map(move |n| vec(token.clone(), n)),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(absolute, tokens, trailing)| join_user_path(absolute, &tokens, trailing))
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    vec(proptest::sample::select(&b"pqr"[..]), 0..=8)
}

fn xattr_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(&XATTR_NAMES[..3]),
        1 => proptest::sample::select(&XATTR_NAMES[3..]),
    ]
    .prop_map(String::from)
}

fn mode() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => proptest::sample::select(&crate::testing::items::MODES[..]),
        1 => 0u32..0x1_0000,
    ]
}

fn id() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(proptest::sample::select(&IDS[..]))
}

fn time() -> impl Strategy<Value = Option<Timestamp>> {
    proptest::option::of((0i64..255).prop_map(|s| Timestamp::new(s, 0)))
}

fn open_options() -> impl Strategy<Value = OpenOptions> {
    any::<[bool; 6]>().prop_map(open_options_from_bits)
}

/// Open options from six flags: read, write, append, truncate, create,
/// create_new.
pub(crate) fn open_options_from_bits(b: [bool; 6]) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(b[0])
        .write(b[1])
        .append(b[2])
        .truncate(b[3])
        .create(b[4])
        .create_new(b[5]);
    o
}

/// The six flags of open options (the inverse of `open_options_from_bits`).
pub(crate) fn open_options_bits(o: &OpenOptions) -> [bool; 6] {
    [
        o.read,
        o.write,
        o.append,
        o.truncate,
        o.create,
        o.create_new,
    ]
}

/// Rename modes in codec order.
pub(crate) const RENAME_MODES: [RenameMode; 3] = [
    RenameMode::Replace,
    RenameMode::NoReplace,
    RenameMode::Exchange,
];

/// One random operation of the merged view, over the names `a`, `b`, `c`
/// with paths at most 3 deep that sometimes hold `..` and `.`, start with
/// `/` or end with `/`, and (through the symlinks the layers hold) go
/// through symlinks. Arguments are chosen to reach both success and every
/// error: invalid open options, invalid attribute names, `mknod` of
/// non-special types and of the whiteout device.
pub fn op_strategy() -> impl Strategy<Value = Op> {
    let read_ops = prop_oneof![
        user_path().prop_map(|path| Op::Metadata { path }),
        user_path().prop_map(|path| Op::SymlinkMetadata { path }),
        user_path().prop_map(|path| Op::Read { path }),
        (user_path(), 0u64..12, 0usize..8).prop_map(|(path, offset, len)| Op::ReadAt {
            path,
            offset,
            len
        }),
        user_path().prop_map(|path| Op::ReadDir { path }),
        user_path().prop_map(|path| Op::ReadLink { path }),
        (user_path(), xattr_name()).prop_map(|(path, name)| Op::GetXattr { path, name }),
        user_path().prop_map(|path| Op::ListXattr { path }),
    ];
    let data_ops = prop_oneof![
        (user_path(), data()).prop_map(|(path, data)| Op::Write { path, data }),
        (user_path(), data()).prop_map(|(path, data)| Op::Append { path, data }),
        (user_path(), 0u64..12, data()).prop_map(|(path, offset, data)| Op::WriteAt {
            path,
            offset,
            data
        }),
        (user_path(), 0u64..12).prop_map(|(path, len)| Op::SetLen { path, len }),
        (user_path(), open_options()).prop_map(|(path, options)| Op::Open { path, options }),
    ];
    let tree_ops = prop_oneof![
        user_path().prop_map(|path| Op::CreateDir { path }),
        user_path().prop_map(|path| Op::CreateDirAll { path }),
        user_path().prop_map(|path| Op::RemoveFile { path }),
        user_path().prop_map(|path| Op::RemoveDir { path }),
        user_path().prop_map(|path| Op::RemoveDirAll { path }),
        (
            user_path(),
            user_path(),
            proptest::sample::select(&RENAME_MODES[..])
        )
            .prop_map(|(from, to, mode)| Op::Rename { from, to, mode }),
        (user_path(), user_path()).prop_map(|(target, link)| Op::Symlink { target, link }),
        (user_path(), user_path()).prop_map(|(original, link)| Op::HardLink { original, link }),
        (
            user_path(),
            proptest::sample::select(&FILE_TYPES[..]),
            mode(),
            proptest::sample::select(&MKNOD_RDEVS[..])
        )
            .prop_map(|(path, file_type, mode, rdev)| Op::Mknod {
                path,
                file_type,
                mode,
                rdev
            }),
    ];
    let attr_ops = prop_oneof![
        (user_path(), mode()).prop_map(|(path, mode)| Op::SetPermissions { path, mode }),
        (user_path(), id(), id()).prop_map(|(path, uid, gid)| Op::SetOwner { path, uid, gid }),
        (user_path(), time(), time()).prop_map(|(path, atime, mtime)| Op::SetTimes {
            path,
            atime,
            mtime
        }),
        (
            user_path(),
            xattr_name(),
            vec(proptest::sample::select(&b"uv"[..]), 0..=3)
        )
            .prop_map(|(path, name, value)| Op::SetXattr { path, name, value }),
        (user_path(), xattr_name()).prop_map(|(path, name)| Op::RemoveXattr { path, name }),
    ];
    let slot = || 0u8..4;
    let handle_ops = prop_oneof![
        3 => (user_path(), open_options()).prop_map(|(path, options)| Op::OpenHandle { path, options }),
        2 => (slot(), 0u64..12, 0usize..8).prop_map(|(slot, offset, len)| Op::HandleReadAt {
            slot,
            offset,
            len
        }),
        2 => (slot(), 0u64..12, data()).prop_map(|(slot, offset, data)| Op::HandleWriteAt {
            slot,
            offset,
            data
        }),
        1 => (slot(), 0u64..12).prop_map(|(slot, len)| Op::HandleSetLen { slot, len }),
        2 => slot().prop_map(|slot| Op::HandleMetadata { slot }),
        1 => slot().prop_map(|slot| Op::CloseHandle { slot }),
    ];
    prop_oneof![
        8 => read_ops,
        5 => data_ops,
        8 => tree_ops,
        4 => attr_ops,
        1 => Just(Op::Commit),
        4 => handle_ops,
    ]
}

/// Device numbers `mknod` is given: the whiteout marker 0/0 and real ones.
pub(crate) const MKNOD_RDEVS: [u64; 4] = [0, RDEVS[0], RDEVS[1], RDEVS[2]];

/// Up to `max_len` random operations.
pub fn ops_strategy(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    vec(op_strategy(), 0..=max_len)
}
